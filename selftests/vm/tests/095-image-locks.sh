#!/bin/sh
# One writer per image: a second writable or read-only attach of an image a device writes is refused by vdimgctl's qemu-compatible locks and, without them (--no-lock), by the module (EBUSY); qemu refuses an image vdimg writes and vdimg one that qemu has open; two overlays may share a read-only base; a device's writable top cannot be another chain's base; after detach everything opens again; a loop device on the file (no locks) is found: a writable one refuses every attach, a read-only one a writable attach
# timeout: 120
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" "$QEMU_IO"

W=$TEST_WORK
img=$W/one.qcow2
"$QEMU_IMG" create -q -f qcow2 "$img" 32M || die "qemu-img create"
dev=$(vd_attach "$img") || die "attach"
out=$("$VDIMGCTL" attach --show "$img" 2>&1) && vd_detach "$out"
case $out in
*"in use by another process"*) ok "a second writable attach is refused by the image lock" ;;
*) fail "a second writable attach is refused by the image lock" "$out" ;;
esac
check_fail "a read-only attach of the written image is refused" "$VDIMGCTL" attach -r "$img"
out=$("$VDIMGCTL" attach --no-lock --show "$img" 2>&1) && vd_detach "$out"
case $out in
*"in use"*) ok "without the locks the module refuses the second writer (EBUSY)" ;;
*) fail "without the locks the module refuses the second writer (EBUSY)" "$out" ;;
esac
check "the module says which device writes it" sh -c "dmesg | grep -q 'is written by vdimg'"
out=$("$QEMU_IMG" info "$img" 2>&1)
case $out in
*"lock"*) ok "qemu-img refuses the image vdimg writes" ;;
*) fail "qemu-img refuses the image vdimg writes" "$out" ;;
esac
check "qemu-img info -U still reads it" "$QEMU_IMG" info -U "$img"
check "detach" vd_detach "$dev"
check "qemu-img opens it after the detach" "$QEMU_IMG" check -q "$img"

# qemu first: vdimg must not write under it
"$QEMU_IO" -f qcow2 -c "sleep 6000" "$img" >/dev/null 2>&1 &
qpid=$!
sleep 2
check_fail "a writable attach is refused while qemu-io writes the image" "$VDIMGCTL" attach "$img"
check_fail "a read-only attach is refused while qemu-io writes the image" "$VDIMGCTL" attach -r "$img"
wait "$qpid"
"$QEMU_IO" -r -f qcow2 -c "sleep 6000" "$img" >/dev/null 2>&1 &
qpid=$!
sleep 2
check_fail "a writable attach is refused while qemu-io reads the image" "$VDIMGCTL" attach "$img"
dev=$(vd_attach -r "$img") && ok "a read-only attach shares the image with a qemu reader" ||
	fail "a read-only attach shares the image with a qemu reader"
[ -n "$dev" ] && vd_detach "$dev"
wait "$qpid"

# a golden base under two overlays; a written top is nobody's base
base=$W/base.qcow2
"$QEMU_IMG" create -q -f qcow2 "$base" 32M || die "create base"
for c in a b; do
	"$QEMU_IMG" create -q -f qcow2 -b "$base" -F qcow2 "$W/$c.qcow2" || die "create $c"
done
da=$(vd_attach "$W/a.qcow2") || fail "overlay a over the base"
db=$(vd_attach "$W/b.qcow2") || fail "overlay b over the same base"
[ -n "$da" ] && [ -n "$db" ] && ok "two devices share a read-only base"
check_fail "a writable attach of the shared base is refused" "$VDIMGCTL" attach --no-lock "$base"
[ -n "$da" ] && vd_detach "$da"
[ -n "$db" ] && vd_detach "$db"
dev=$(vd_attach "$base") || die "attach the base writable"
check_fail "a chain whose base another device writes is refused (locks)" "$VDIMGCTL" attach "$W/a.qcow2"
check_fail "... and by the module" "$VDIMGCTL" attach --no-lock "$W/a.qcow2"
check "detach" vd_detach "$dev"
dev=$(vd_attach "$W/a.qcow2") && ok "the chain attaches once the base is free" ||
	fail "the chain attaches once the base is free"
[ -n "$dev" ] && vd_detach "$dev"

# loop devices take no locks: vdimgctl looks for one on the file (by device and inode, as
# losetup -j does); a writable loop device excludes every attach, a read-only one a writable attach
raw=$W/loop.raw
truncate -s 16M "$raw"
# expect_refused NAME TEXT ARGS...: vdimgctl attach ARGS fails saying TEXT
expect_refused() {
	local name=$1 text=$2 out
	shift 2
	out=$("$VDIMGCTL" attach --show "$@" 2>&1) && vd_detach "$out"
	case $out in
	*"$text"*) ok "$name" ;;
	*) fail "$name" "$out" ;;
	esac
}
if ld=$(losetup -f --show "$raw"); then
	expect_refused "a read-only attach is refused while a writable loop device uses the file" \
		"$ld, a writable loop device" -r "$raw"
	expect_refused "a writable attach too" "$ld, a writable loop device" -t raw "$raw"
	dev=$("$VDIMGCTL" attach --no-lock --show -r "$raw" 2>&1) &&
		ok "--no-lock skips the check" || fail "--no-lock skips the check" "$dev"
	[ -b "$dev" ] && vd_detach "$dev"
	losetup -d "$ld"
else
	fail "losetup of the file"
fi
if ld=$(losetup -r -f --show "$raw"); then
	expect_refused "a writable attach is refused while a read-only loop device reads the file" \
		"$ld, a read-only loop device" -t raw "$raw"
	dev=$(vd_attach -r "$raw") && ok "a read-only attach shares the file with a read-only loop device" ||
		fail "a read-only attach shares the file with a read-only loop device"
	[ -n "$dev" ] && vd_detach "$dev"
	losetup -d "$ld"
else
	fail "losetup -r of the file"
fi
dev=$(vd_attach -t raw "$raw") && ok "a writable attach once the loop devices are gone" ||
	fail "a writable attach once the loop devices are gone"
[ -n "$dev" ] && vd_detach "$dev"
done_testing
