#!/bin/sh
# Parallels in the kernel: an expanding image made by vdimgctl and one made by qemu-img (64 KiB clusters): the header's in-use flag set while attached read-write and cleared by the detach, fio verify=crc32c, detach, re-attach verify_only, qemu-img check clean and qemu-img's raw view equals the device; ext4 on a vdimgctl image across a re-attach; an image left in use refused read-write and readable read-only; the parallels-v1 and parallels-v2 samples read as qemu-img reads them
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG" "$MKFS_EXT4" "$E2FSCK"

W=$TEST_WORK
# 8 MiB .. 24 MiB: several 1 MiB clusters, allocated by the writes themselves
job="--name=verify --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=512-128k
 --size=16M --offset=8M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=2719"
fio_run() {
	"$FIO" "$@" --output="$W/fio.out" && return 0
	tail -n 30 "$W/fio.out"
	return 1
}
# inuse IMAGE: the header's in-use field (offset 44) as text ("Ynot" open, "v2.1" closed)
inuse() {
	dd if="$1" bs=1 skip=44 count=4 status=none
}

for by in vdimgctl qemu-img; do
	t="parallels by $by"
	img=$W/fio-$by.hds
	rm -f "$img"
	case $by in
	vdimgctl) "$VDIMGCTL" create -t parallels -s 32M "$img" ;;
	qemu-img) "$QEMU_IMG" create -q -f parallels -o cluster_size=64k "$img" 32M ;;
	esac || { fail "$t: create"; continue; }
	dev=$(vd_attach "$img") || { fail "$t: attach read-write"; continue; }
	check_eq "$t: sysfs format" "$(vd_attr "$dev" format)" parallels
	check_eq "$t: device size" "$(blockdev --getsize64 "$dev")" $((32 << 20))
	check_eq "$t: in use while attached read-write" "$(inuse "$img")" Ynot
	check "$t: fio random writes 512..128k, verified" fio_run $job --filename="$dev" --do_verify=1
	check "$t: detach" vd_detach "$dev"
	check_eq "$t: not in use after the detach" "$(inuse "$img")" v2.1
	dev=$(vd_attach "$img") || { fail "$t: re-attach"; continue; }
	check "$t: fio verify_only after re-attach" fio_run $job --filename="$dev" --verify_only=1
	check "$t: detach after verify" vd_detach "$dev"
	check "$t: qemu-img check clean" "$QEMU_IMG" check -q -f parallels "$img"
	rm -f "$W/qemu.raw"
	"$QEMU_IMG" convert -f parallels -O raw "$img" "$W/qemu.raw" || fail "$t: qemu-img convert"
	dev=$(vd_attach -r "$img") || { fail "$t: read-only attach"; continue; }
	check_eq "$t: a read-only attach leaves the flag alone" "$(inuse "$img")" v2.1
	check "$t: device = qemu-img convert -O raw" cmp "$dev" "$W/qemu.raw"
	vd_detach "$dev" || fail "$t: detach"
	rm -f "$W/qemu.raw"
done

# ext4 across a re-attach
t="parallels ext4"
img=$W/fs.hds
rm -f "$img"
if "$VDIMGCTL" create -t parallels -s 64M "$img" && dev=$(vd_attach "$img"); then
	check "$t: mkfs.ext4" "$MKFS_EXT4" -q -F -E nodiscard "$dev"
	if mount_dev "$dev" "$W/mnt"; then
		mkrandom "$W/mnt/big" 6
		i=0
		while [ $i -lt 50 ]; do
			echo "file $i" >"$W/mnt/f$i"
			i=$((i + 1))
		done
		want=$(cd "$W/mnt" && find . -type f | sort | xargs sha256sum | sha256sum)
		umount_dev "$W/mnt" || fail "$t: umount"
	else
		fail "$t: mount"
	fi
	vd_detach "$dev" || fail "$t: detach"
	dev=$(vd_attach "$img") || fail "$t: re-attach"
	check "$t: e2fsck -fn clean after re-attach" "$E2FSCK" -fn "$dev"
	if mount_dev "$dev" "$W/mnt" ro; then
		got=$(cd "$W/mnt" && find . -type f | sort | xargs sha256sum | sha256sum)
		check_eq "$t: files read back after re-attach" "$got" "$want"
		umount_dev "$W/mnt" || fail "$t: umount"
	else
		fail "$t: mount after re-attach"
	fi
	vd_detach "$dev" || fail "$t: detach"
	check "$t: qemu-img check clean" "$QEMU_IMG" check -q -f parallels "$img"
else
	fail "$t: create and attach"
fi
rm -f "$img"

# an image a crashed writer left in use: read-only only, until check --repair
t="parallels in use"
img=$W/u.hds
rm -f "$img"
"$VDIMGCTL" create -t parallels -s 8M "$img" && printf 'Ynot' | dd of="$img" bs=1 seek=44 conv=notrunc status=none
check_fail "$t: a read-write attach is refused" "$VDIMGCTL" attach -f --show "$img"
dev=$(vd_attach -r "$img") && { vd_detach "$dev" || fail "$t: detach"; }
check_eq "$t: a read-only attach works" "${dev:+yes}" yes
check "$t: check --repair" "$VDIMGCTL" check --repair "$img"
dev=$(vd_attach "$img") && { vd_detach "$dev" || fail "$t: detach"; }
check_eq "$t: read-write after the repair" "${dev:+yes}" yes
rm -f "$img"

for s in parallels-v1 parallels-v2; do
	t="sample $s"
	if [ ! -f "$SAMPLES/$s" ]; then
		ok_skip "$t" "sample image missing: $(head -n1 "$SAMPLES/MISSING" 2>/dev/null)"
		continue
	fi
	dev=$(vd_attach -r "$(sample $s)") || { fail "$t: attach"; continue; }
	check_eq "$t: device = qemu-img convert -O raw" \
		"$(dd if="$dev" bs=64k status=none | sha256sum | cut -d' ' -f1)" \
		"$(raw_sha "$(sample $s)" parallels)"
	vd_detach "$dev" || fail "$t: detach"
done
done_testing
