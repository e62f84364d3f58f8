#!/bin/sh
# Images made by qemu-img (VHD/VDI/VHDX/QCOW2 variants: fixed, dynamic, block and cluster sizes, qcow2 compat/refcount/extended L2/compressed/snapshot, QED cluster and table sizes) filled with qemu-io patterns across block boundaries read through /dev/vdimgN byte-identical to qemu-img convert -O raw
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" "$QEMU_IO"

size=40M
# offsets straddling 512 B sectors, 4/64 KiB clusters, 1/2/8/32 MiB blocks; a zeroed range inside
# data; the last 4 KiB of the disk
fill() { # fill FILE QEMU_FMT
	"$QEMU_IO" -f "$2" \
		-c "write -P 0x5a 0 5120" \
		-c "write -P 0xa5 1047552 2099200" \
		-c "write -P 0x3c 8388096 1024" \
		-c "write -P 0x96 16776704 70144" \
		-c "write -P 0xc3 32505856 3145728" \
		-c "write -z 33488896 69632" \
		-c "write -P 0x77 41938944 4096" \
		"$1" >/dev/null
}

# one IMAGE QEMU_FMT DESC: attach read-only, the device reads what qemu reads
one() {
	local img=$1 qf=$2 t=$3 dev f
	f=$qf
	[ "$qf" = vpc ] && f=vhd
	rm -f "$TEST_WORK/qemu.raw"
	"$QEMU_IMG" convert -f "$qf" -O raw "$img" "$TEST_WORK/qemu.raw" ||
		{ fail "$t: qemu-img convert -O raw"; return; }
	dev=$(vd_attach -r "$img") || { fail "$t: attach read-only"; return; }
	check_eq "$t: sysfs format" "$(vd_attr "$dev" format)" "$f"
	# cmp: byte for byte, as strong as equal sha256 and much cheaper under TCG
	check "$t: device = qemu-img convert -O raw" cmp "$dev" "$TEST_WORK/qemu.raw"
	vd_detach "$dev" || fail "$t: detach"
	rm -f "$img" "$TEST_WORK/qemu.raw"
}

# made IMAGE QEMU_FMT DESC CREATE-OPTIONS [SIZE]: qemu-img create, fill, compare
made() {
	local img=$TEST_WORK/$1 qf=$2 t=$3
	if ! "$QEMU_IMG" create -q -f "$qf" ${4:+-o "$4"} "$img" "${5:-$size}"; then
		fail "$t: qemu-img create -o $4"
		return
	fi
	fill "$img" "$qf" || { fail "$t: qemu-io writes"; return; }
	one "$img" "$qf" "$t"
}

made a.vhd vpc "vpc dynamic, force_size" subformat=dynamic,force_size=on
# without force_size qemu rounds the size down to a CHS product: 44M leaves room for the writes
made b.vhd vpc "vpc dynamic, CHS size" subformat=dynamic 44M
made c.vhd vpc "vpc fixed" subformat=fixed,force_size=on
made a.vdi vdi "vdi dynamic" static=off
made b.vdi vdi "vdi static" static=on
made a.vhdx vhdx "vhdx dynamic, default block size" subformat=dynamic
made b.vhdx vhdx "vhdx dynamic, 1 MiB blocks" subformat=dynamic,block_size=1M
made c.vhdx vhdx "vhdx dynamic, 8 MiB blocks, zero-state blocks" \
	subformat=dynamic,block_size=8M,block_state_zero=on
made d.vhdx vhdx "vhdx fixed" subformat=fixed
made a.qcow2 qcow2 "qcow2 compat 1.1, 64 KiB clusters" compat=1.1
made b.qcow2 qcow2 "qcow2 compat 0.10" compat=0.10
made c.qcow2 qcow2 "qcow2 4 KiB clusters, refcount_bits=1" cluster_size=4096,refcount_bits=1
made d.qcow2 qcow2 "qcow2 2 MiB clusters, refcount_bits=64" cluster_size=2M,refcount_bits=64
made e.qcow2 qcow2 "qcow2 extended L2 (subclusters)" extended_l2=on,cluster_size=128k
made f.qcow2 qcow2 "qcow2 lazy refcounts" lazy_refcounts=on
made a.qed qed "qed 64 KiB clusters" cluster_size=65536
made b.qed qed "qed 4 KiB clusters, 2-cluster tables" cluster_size=4096,table_size=2
made c.qed qed "qed 1 MiB clusters, 16-cluster tables" cluster_size=1048576,table_size=16

# compressed clusters (zlib and zstd) from a filled image
src=$TEST_WORK/src.qcow2
"$QEMU_IMG" create -q -f qcow2 "$src" "$size" && fill "$src" qcow2 || fail "qcow2 compressed: source"
for c in zlib zstd; do
	if "$QEMU_IMG" convert -c -O qcow2 -o compression_type=$c "$src" "$TEST_WORK/z-$c.qcow2"; then
		one "$TEST_WORK/z-$c.qcow2" qcow2 "qcow2 compressed ($c)"
	else
		fail "qcow2 compressed ($c): qemu-img convert -c"
	fi
done

# an internal snapshot, then more writes: the device shows the current state
if "$QEMU_IMG" snapshot -c snap1 "$src" &&
	"$QEMU_IO" -f qcow2 -c "write -P 0xe1 1048576 131072" "$src" >/dev/null; then
	one "$src" qcow2 "qcow2 with an internal snapshot"
else
	fail "qcow2 with an internal snapshot: setup"
fi
done_testing
