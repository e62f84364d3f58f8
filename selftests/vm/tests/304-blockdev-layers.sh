#!/bin/sh
# Images on block devices (a loop device stands in for an LVM LV, as oVirt keeps qcow2 images): a qcow2 of 6 MiB of data on a 32 MiB device attached read-write, written past its data: the new clusters go right after the image's data (the refcounts' end, not the device's), qemu-img check of the device is clean and it reads as expected; a qcow2 overlay file over a base on a device (--chain); a VDI (made by qemu-img) on a 32 MiB device attached read-write: a new block goes right after the blocks its header counts, qemu-img check of the device clean, the device filled until a write fails with ENOSPC and the kernel log says the device is full, still clean; VHD (dynamic), VHDX, QED, monolithicSparse VMDK and Parallels made by qemu-img, copied onto a 16 MiB device of old bytes, attached read-write and written into a new block: it goes right after the image's data (not the device's end), the device reads as the image and the write with none of the old bytes, the check (qemu-img, vdimgctl for VHD) finds no error, qemu-img reads it; VHD's footer is in the device's last sector, and a VHD fills the device until ENOSPC with a kernel message, still clean (the short tier: VHD and QED); a live snapshot whose new top is a qcow2 written on a loop device (vdimgctl snapshot DEV /dev/loopN): writes after it go there, qemu-img checks and reads the chain from the device, the base holds only the earlier write; a qcow2 made on the device by vdimgctl convert, attached read-write and written
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG"

W=$TEST_WORK
mkrandom "$W/rnd" 2 || die "cannot write $W/rnd"
rm -f "$W/img.qcow2" "$W/lv" "$W/exp.raw"
"$QEMU_IMG" create -q -f qcow2 "$W/img.qcow2" 64M || die "qemu-img create"
truncate -s 64M "$W/exp.raw"
for s in 0 3 6; do
	dd if="$W/rnd" of="$W/exp.raw" bs=1M seek=$s count=2 conv=notrunc status=none
done
"$QEMU_IMG" convert -n -f raw -O qcow2 "$W/exp.raw" "$W/img.qcow2" || die "qemu-img convert"
end=$(stat -c %s "$W/img.qcow2")
truncate -s 32M "$W/lv"
dd if="$W/img.qcow2" of="$W/lv" conv=notrunc status=none
lv=$(loop_attach "$W/lv") || die "losetup"

t="qcow2 on a block device"
dev=$(vd_attach "$lv") || die "$t: attach read-write"
check_eq "$t: the device is the layer" "$(vd_attr "$dev" backing_file)" "$lv"
check "$t: reads like the image" cmp "$dev" "$W/exp.raw"
# 1 MiB at 40 MiB of the disk: new clusters
dd if="$W/rnd" of="$W/exp.raw" bs=1M skip=1 seek=40 count=1 conv=notrunc status=none
check "$t: write into new clusters" dd if="$W/rnd" of="$dev" bs=1M skip=1 seek=40 count=1 \
	oflag=direct conv=notrunc status=none
check "$t: reads the write back" cmp "$dev" "$W/exp.raw"
check "$t: detach" vd_detach "$dev"
check "$t: qemu-img check of the device" "$QEMU_IMG" check -q -f qcow2 "$lv"
off=$("$VDIMGCTL" map "$lv" | awk '$1 == "0x2800000" { print $3 }')
[ -n "$off" ] && [ $((off)) -lt $((end + (2 << 20))) ]
check_eq "$t: the new clusters follow the image's data (${off:-none} < $end + 2 MiB)" $? 0
rm -f "$W/q.raw"
"$QEMU_IMG" convert -f qcow2 -O raw "$lv" "$W/q.raw" &&
	check "$t: qemu-img reads the device like the expectation" cmp "$W/q.raw" "$W/exp.raw" ||
	fail "$t: qemu-img convert of the device"

t="overlay file over a base on a block device"
rm -f "$W/top.qcow2"
"$QEMU_IMG" create -q -f qcow2 -b "$lv" -F qcow2 "$W/top.qcow2" || fail "$t: create"
check_fail "$t: a parent an image names as a block device is refused" \
	"$VDIMGCTL" attach -f "$W/top.qcow2"
dev=$(vd_attach --chain "$lv,$W/top.qcow2") || fail "$t: attach --chain"
if [ -n "$dev" ]; then
	check_eq "$t: depth 2" "$(vd_attr "$dev" depth)" 2
	dd if="$W/rnd" of="$W/exp.raw" bs=64K count=4 seek=7 conv=notrunc status=none
	check "$t: write" dd if="$W/rnd" of="$dev" bs=64K count=4 seek=7 oflag=direct \
		conv=notrunc status=none
	check "$t: reads base + write" cmp "$dev" "$W/exp.raw"
	check "$t: detach" vd_detach "$dev"
fi

t="vdi on a block device"
rm -f "$W/img.vdi"
"$QEMU_IMG" convert -f raw -O vdi "$W/exp.raw" "$W/img.vdi" || fail "$t: qemu-img convert"
end=$(stat -c %s "$W/img.vdi")
dd if=/dev/zero of="$lv" bs=1M count=32 status=none
dd if="$W/img.vdi" of="$lv" conv=notrunc status=none
dev=$(vd_attach "$lv") || fail "$t: attach read-write"
if [ -n "$dev" ]; then
	check "$t: reads like the image" cmp "$dev" "$W/exp.raw"
	dd if="$W/rnd" of="$W/exp.raw" bs=1M seek=20 count=1 conv=notrunc status=none
	check "$t: write into a new block" dd if="$W/rnd" of="$dev" bs=1M seek=20 count=1 \
		oflag=direct conv=notrunc status=none
	check "$t: reads the write back" cmp "$dev" "$W/exp.raw"
	check "$t: detach" vd_detach "$dev"
fi
check "$t: qemu-img check of the device" "$QEMU_IMG" check -q -f vdi "$lv"
off=$("$VDIMGCTL" map "$lv" | awk '$1 == "0x1400000" { print $3 }')
[ -n "$off" ] && [ $((off)) -lt $((end + (1 << 20))) ]
check_eq "$t: the new block follows the image's data (${off:-none} < $end + 1 MiB)" $? 0
rm -f "$W/q.raw"
"$QEMU_IMG" convert -f vdi -O raw "$lv" "$W/q.raw" &&
	check "$t: qemu-img reads the device like the expectation" cmp "$W/q.raw" "$W/exp.raw" ||
	fail "$t: qemu-img convert of the device"
# about 22 MiB of the device are left: 2 MiB writes from 22 MiB up fill it
dev=$(vd_attach "$lv") || fail "$t: attach read-write again"
if [ -n "$dev" ]; then
	full=0
	for s in $(seq 22 2 62); do
		dd if="$W/rnd" of="$dev" bs=1M seek="$s" count=2 oflag=direct conv=notrunc \
			status=none 2>"$W/dd.err" || { full=$s; break; }
	done
	check "$t: a write fails once the device is full (at ${full} MiB)" test "$full" -gt 22
	check "$t: with ENOSPC" grep -q "No space left on device" "$W/dd.err"
	check "$t: the kernel log says the device is full" \
		sh -c "dmesg | grep -q 'the block device is full (33554432 bytes)'"
	check "$t: detach after ENOSPC" vd_detach "$dev"
fi
check "$t: qemu-img check of the full device" "$QEMU_IMG" check -q -f vdi "$lv"
check "$t: the first write still reads back" \
	sh -c "'$QEMU_IMG' convert -f vdi -O raw '$lv' '$W/q.raw' && cmp -n $((21 << 20)) '$W/q.raw' '$W/exp.raw'"

# VHD, VHDX, QED and sparse VMDK made by qemu-img (32 MiB, 2 MiB of data at 0 and at 8 MiB),
# copied onto a 16 MiB device whose old bytes are 0xa5: written into a new block at 16 MiB
dd if="$W/rnd" of="$W/b.raw" bs=1M count=2 status=none
dd if="$W/rnd" of="$W/b.raw" bs=1M seek=8 count=2 conv=notrunc status=none
truncate -s 32M "$W/b.raw"
head -c $((16 << 20)) /dev/zero | tr '\0' '\245' >"$W/junk"
truncate -s 16M "$W/lv2"
lv2=$(loop_attach "$W/lv2") || die "losetup"
for f in $(tier "vhd vhdx qed vmdk parallels" "vhd qed"); do
	t="$f on a block device"
	q=$(qemu_fmt "$f")
	case $f in
	vhd) o="-o subformat=dynamic,force_size=on" ;;
	vhdx) o="-o block_size=1M" ;;
	vmdk) o="-o subformat=monolithicSparse" ;;
	*) o= ;;
	esac
	rm -f "$W/img.$f"
	# shellcheck disable=SC2086 # $o: options, split on purpose
	"$QEMU_IMG" convert -f raw -O "$q" $o "$W/b.raw" "$W/img.$f" ||
		{ fail "$t: convert"; continue; }
	end=$(stat -c %s "$W/img.$f")
	dd if="$W/junk" of="$lv2" bs=1M status=none
	dd if="$W/img.$f" of="$lv2" conv=notrunc status=none
	cp "$W/b.raw" "$W/e.raw"
	dev=$(vd_attach "$lv2") || { fail "$t: attach read-write"; continue; }
	dd if="$W/rnd" of="$W/e.raw" bs=1M seek=16 count=1 conv=notrunc status=none
	check "$t: write into a new block" dd if="$W/rnd" of="$dev" bs=1M seek=16 count=1 \
		oflag=direct conv=notrunc status=none
	check "$t: reads the image and the write, none of the device's old bytes" \
		cmp "$dev" "$W/e.raw"
	check "$t: detach" vd_detach "$dev"
	if [ "$f" = vhd ]; then
		# qemu has no VHD check
		check "$t: vdimgctl check of the device" "$VDIMGCTL" check "$lv2"
		check_eq "$t: the footer is in the device's last sector" \
			"$(dd if="$lv2" bs=512 skip=32767 count=1 status=none | head -c 8)" conectix
	else
		# QED and Parallels count the device's space past the image as leaked (status 3;
		# qemu's Parallels check words it "ERROR space leaked")
		qemu_check "$f" "$lv2" >"$W/chk.out"
		rc=$?
		[ $rc = 0 ] || { { [ "$f" = qed ] || [ "$f" = parallels ]; } && [ $rc = 3 ] &&
			! grep -i error "$W/chk.out" | grep -qvi leaked; }
		check_eq "$t: qemu-img check of the device finds no error (status $rc)" $? 0
	fi
	off=$("$VDIMGCTL" map "$lv2" | awk '$1 == "0x1000000" { print $3 }')
	[ -n "$off" ] && [ $((off)) -lt $((end + (1 << 20))) ]
	check_eq "$t: the new block follows the image's data (${off:-none} < $end + 1 MiB)" $? 0
	rm -f "$W/q.raw"
	"$QEMU_IMG" convert -f "$q" -O raw "$lv2" "$W/q.raw" &&
		check "$t: qemu-img reads the device like the expectation" \
			cmp "$W/q.raw" "$W/e.raw" ||
		fail "$t: qemu-img convert of the device"
	[ "$f" = vhd ] || continue
	# about 10 MiB of the device are left: 2 MiB writes (one block each) from 18 MiB up fill it
	dev=$(vd_attach "$lv2") || { fail "$t: attach read-write again"; continue; }
	full=0
	for s in $(seq 18 2 30); do
		dd if="$W/rnd" of="$dev" bs=1M seek="$s" count=2 oflag=direct conv=notrunc \
			status=none 2>"$W/dd.err" || { full=$s; break; }
		dd if="$W/rnd" of="$W/e.raw" bs=1M seek="$s" count=2 conv=notrunc status=none
	done
	check "$t: a write fails once the device is full (at ${full} MiB)" test "$full" -gt 18
	check "$t: with ENOSPC" grep -q "No space left on device" "$W/dd.err"
	check "$t: the kernel log says the device is full" \
		sh -c "dmesg | grep -q 'the block device is full (16777216 bytes)'"
	check "$t: detach after ENOSPC" vd_detach "$dev"
	check "$t: vdimgctl check of the full device" "$VDIMGCTL" check "$lv2"
	check "$t: qemu-img reads every write before the full one, nothing of the failed one" \
		sh -c "'$QEMU_IMG' convert -f vpc -O raw '$lv2' '$W/q.raw' &&
			cmp '$W/q.raw' '$W/e.raw'"
done
# oVirt's live snapshot on block storage: the new top is a qcow2 written on an LV (ABI 5), over a
# base file; then a qcow2 made on an LV by convert, attached read-write
t="live snapshot onto a block device"
rm -f "$W/sbase.qcow2" "$W/lv3" "$W/s.raw"
"$QEMU_IMG" create -q -f qcow2 "$W/sbase.qcow2" 16M || fail "$t: create the base"
dd if=/dev/urandom of="$W/lv3" bs=1M count=8 status=none
lv3=$(loop_attach "$W/lv3") || die "losetup"
truncate -s 16M "$W/s.raw"
dev=$(vd_attach "$W/sbase.qcow2") || fail "$t: attach the base"
if [ -n "$dev" ]; then
	dd if="$W/rnd" of="$W/s.raw" bs=1M count=2 conv=notrunc status=none
	check "$t: write before" dd if="$W/rnd" of="$dev" bs=1M count=2 oflag=direct \
		conv=notrunc status=none
	check "$t: vdimgctl snapshot DEV /dev/loopN" "$VDIMGCTL" snapshot "$dev" "$lv3"
	check_eq "$t: depth 2" "$(vd_attr "$dev" depth)" 2
	check_eq "$t: the device is the new top" "$(vd_attr "$dev" backing_file)" "$lv3"
	dd if="$W/rnd" of="$W/s.raw" bs=512K skip=1 seek=3 count=4 conv=notrunc status=none
	check "$t: write after" dd if="$W/rnd" of="$dev" bs=512K skip=1 seek=3 count=4 \
		oflag=direct conv=notrunc status=none
	check "$t: reads base + new top" cmp "$dev" "$W/s.raw"
	check "$t: detach" vd_detach "$dev"
	check "$t: qemu-img check of the new top on the device" "$QEMU_IMG" check -q -f qcow2 "$lv3"
	check "$t: qemu-img reads the chain from the device" \
		sh -c "'$QEMU_IMG' convert -f qcow2 -O raw '$lv3' '$W/q.raw' && cmp '$W/q.raw' '$W/s.raw'"
	dd if="$W/rnd" of="$W/s.raw" bs=1M count=2 conv=notrunc status=none
	truncate -s 0 "$W/q.raw"
	dd if="$W/rnd" of="$W/q.raw" bs=1M count=2 conv=notrunc status=none
	truncate -s 16M "$W/q.raw"
	check "$t: the base holds only what was written before" \
		"$QEMU_IMG" compare -q -f qcow2 -F raw "$W/sbase.qcow2" "$W/q.raw"
fi
t="convert onto a block device, attached read-write"
check "$t: convert" "$VDIMGCTL" convert -O qcow2 "$W/s.raw" "$lv3"
dev=$(vd_attach "$lv3") || fail "$t: attach"
if [ -n "$dev" ]; then
	check "$t: reads the source" cmp "$dev" "$W/s.raw"
	dd if="$W/rnd" of="$W/s.raw" bs=1M seek=12 count=1 conv=notrunc status=none
	check "$t: write into new clusters" dd if="$W/rnd" of="$dev" bs=1M seek=12 count=1 \
		oflag=direct conv=notrunc status=none
	check "$t: detach" vd_detach "$dev"
	check "$t: qemu-img check" "$QEMU_IMG" check -q -f qcow2 "$lv3"
	check "$t: qemu-img reads it" \
		sh -c "'$QEMU_IMG' convert -f qcow2 -O raw '$lv3' '$W/q.raw' && cmp '$W/q.raw' '$W/s.raw'"
fi
rm -f "$W/lv" "$W/lv2" "$W/lv3" "$W/sbase.qcow2" "$W/s.raw" "$W/img.qcow2" "$W/img.vdi" "$W/dd.err" "$W/top.qcow2" "$W/exp.raw" \
	"$W/q.raw" "$W/b.raw" "$W/e.raw" "$W/chk.out" "$W/junk" "$W"/img.vhd "$W"/img.vhdx \
	"$W"/img.qed "$W"/img.vmdk "$W"/img.parallels
done_testing
