#!/bin/sh
# VHD, VDI, VHDX, QCOW2, QED (made by vdimgctl and by qemu-img): fio verify=crc32c random writes of 512 B..128 KiB straddling blocks, detach, re-attach, verify_only; qemu-img check clean and qemu-img's raw view equals the device
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG"

size=64M
# 24 MiB .. 40 MiB: crosses the 32 MiB block of vdimgctl's VHDX and many 1-2 MiB VHD/VDI blocks
job="--name=verify --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=512-128k
 --size=16M --offset=24M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=2718"
# fio_run ARGS: fio with its report in a file, shown only when it fails
fio_run() {
	"$FIO" "$@" --output="$TEST_WORK/fio.out" && return 0
	tail -n 30 "$TEST_WORK/fio.out"
	return 1
}

# mkimg F CREATOR FILE: an empty dynamic image of $size
mkimg() {
	case $2 in
	vdimgctl) "$VDIMGCTL" create -t "$1" -s "$size" "$3" ;;
	qemu-img)
		case $1 in
		vhd) "$QEMU_IMG" create -q -f vpc -o subformat=dynamic,force_size=on "$3" "$size" ;;
		vhdx) "$QEMU_IMG" create -q -f vhdx -o subformat=dynamic,block_size=1M "$3" "$size" ;;
		*) "$QEMU_IMG" create -q -f "$1" "$3" "$size" ;;
		esac ;;
	esac
}

# the short tier takes one creator per format: qemu-img's vhd and qcow2, vdimgctl's vdi, vhdx, qed
for f in vhd vdi vhdx qcow2 qed; do
	case $f in vhd|qcow2) one=qemu-img ;; *) one=vdimgctl ;; esac
	for by in $(tier "vdimgctl qemu-img" "$one"); do
		t="$f by $by"
		img=$TEST_WORK/fio-$by.$f
		if ! mkimg "$f" "$by" "$img"; then
			fail "$t: create"
			continue
		fi
		dev=$(vd_attach "$img") || { fail "$t: attach read-write"; continue; }
		check_eq "$t: sysfs format" "$(vd_attr "$dev" format)" "$f"
		check_eq "$t: device size" "$(blockdev --getsize64 "$dev")" $((64 << 20))
		check "$t: fio random writes 512..128k, verified" fio_run $job --filename="$dev" \
			--do_verify=1
		check "$t: detach" vd_detach "$dev"
		dev=$(vd_attach "$img") || { fail "$t: re-attach"; continue; }
		check "$t: fio verify_only after re-attach" fio_run $job --filename="$dev" \
			--verify_only=1
		check "$t: detach after verify" vd_detach "$dev"
		if [ "$f" != vhd ]; then # qemu has no checker for vpc
			check "$t: qemu-img check clean" "$QEMU_IMG" check -f "$(qemu_fmt "$f")" "$img"
		fi
		# qemu's raw view against the device (cmp: as strong as comparing sha256, cheaper)
		rm -f "$TEST_WORK/qemu.raw"
		"$QEMU_IMG" convert -f "$(qemu_fmt "$f")" -O raw "$img" "$TEST_WORK/qemu.raw" ||
			fail "$t: qemu-img convert -O raw"
		dev=$(vd_attach -r "$img") || { fail "$t: read-only attach"; continue; }
		check "$t: device = qemu-img convert -O raw" cmp "$dev" "$TEST_WORK/qemu.raw"
		vd_detach "$dev" || fail "$t: detach"
		rm -f "$img" "$TEST_WORK/qemu.raw"
	done
done
done_testing
