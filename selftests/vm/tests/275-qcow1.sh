#!/bin/sh
# QCOW version 1 (qemu-img convert -O qcow: plain, compressed -c, and a child with a backing file) attaches read-only and reads byte-identical to qemu-img convert -O raw; a writable attach is refused with a message saying why
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" "$QEMU_IO"

W=$TEST_WORK
size=40M
# data across 512 B sectors, 4/64 KiB clusters and L2 spans, a zeroed range, the last 4 KiB
"$QEMU_IMG" create -q -f qcow2 "$W/src.qcow2" "$size" &&
	"$QEMU_IO" -f qcow2 \
		-c "write -P 0x5a 0 5120" \
		-c "write -P 0xa5 1047552 2099200" \
		-c "write -P 0x96 16776704 70144" \
		-c "write -P 0xc3 32505856 3145728" \
		-c "write -z 33488896 69632" \
		-c "write -P 0x77 41938944 4096" \
		"$W/src.qcow2" >/dev/null || die "cannot make the source image"

# one T IMAGE DEPTH: read-only attach = qemu's raw view; a writable attach fails and says why
one() {
	local t=$1 img=$2 depth=$3 dev out
	rm -f "$W/qemu.raw"
	"$QEMU_IMG" convert -f qcow -O raw "$img" "$W/qemu.raw" ||
		{ fail "$t: qemu-img convert -O raw"; return; }
	dev=$(vd_attach -r "$img") || { fail "$t: attach read-only"; return; }
	check_eq "$t: sysfs format" "$(vd_attr "$dev" format)" qcow
	check_eq "$t: depth" "$(vd_attr "$dev" depth)" "$depth"
	check_eq "$t: device size" "$(blockdev --getsize64 "$dev")" $((40 << 20))
	check "$t: device = qemu-img convert -O raw" cmp "$dev" "$W/qemu.raw"
	vd_detach "$dev" || fail "$t: detach"
	if out=$("$VDIMGCTL" attach -f --show "$img" 2>&1); then
		fail "$t: writable attach refused" "it attached as $out"
		vd_detach "$out"
	else
		echo "$out" | sed 's/^/  | /'
		case $out in
		*read-only*) ok "$t: writable attach refused, saying it attaches read-only" ;;
		*) fail "$t: writable attach refused, saying it attaches read-only" "message: $out" ;;
		esac
	fi
	rm -f "$W/qemu.raw"
}

if "$QEMU_IMG" convert -f qcow2 -O qcow "$W/src.qcow2" "$W/plain.qcow"; then
	one "qcow plain" "$W/plain.qcow" 1
else
	fail "qcow plain: qemu-img convert -O qcow"
fi
# qemu-img 7.2's `convert -c -O qcow` exits 1 without a message after writing every cluster (its
# final empty compressed write is refused by the qcow driver): the image counts when qemu reads
# it back as the source and it holds compressed clusters (qemu-img map refuses those)
"$QEMU_IMG" convert -c -f qcow2 -O qcow "$W/src.qcow2" "$W/z.qcow" 2>/dev/null
if [ "$(raw_sha "$W/z.qcow" qcow)" = "$(raw_sha "$W/src.qcow2" qcow2)" ] &&
	! "$QEMU_IMG" map -f qcow "$W/z.qcow" >/dev/null 2>&1; then
	one "qcow compressed" "$W/z.qcow" 1
else
	fail "qcow compressed: qemu-img convert -c -O qcow made a compressed copy"
fi
# a child over the plain image with its own writes over and beside the parent's data
if "$QEMU_IMG" create -q -f qcow -b "$W/plain.qcow" -F qcow "$W/child.qcow" "$size" &&
	"$QEMU_IO" -f qcow -c "write -P 0xe7 1048576 131072" -c "write -P 0x3e 20971520 65536" \
		"$W/child.qcow" >/dev/null; then
	one "qcow child with a backing file" "$W/child.qcow" 2
	check_eq "qcow child: chain (base first)" \
		"$(dev=$(vd_attach -r "$W/child.qcow") && vd_attr "$dev" chain | tr '\n' ' ' && vd_detach "$dev")" \
		"$W/plain.qcow $W/child.qcow "
else
	fail "qcow child with a backing file: setup"
fi
done_testing
