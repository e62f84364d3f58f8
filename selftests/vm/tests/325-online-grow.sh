#!/bin/sh
# Online grow (vdimgctl resize --online, VDIMG_CTL_RESIZE) of raw and qcow2 devices under a mounted ext4 while fio verify=crc32c writes a file in it: 64 -> 128 MiB, resize2fs online, fio verifies, df/blockdev/sysfs follow, qemu-img info/check agree, e2fsck clean after re-attach; qed, vdi, dynamic vhd, vhdx, parallels and vmdk (monolithicSparse, monolithicFlat) devices made by qemu-img grown and written across the old end, checked by qemu (and vdimgctl check for vhd, which qemu cannot check), compared with what was written; a monolithicSparse vmdk grown 64 MiB -> 8 GiB, past its grain directory's room (the directories move), reads back what was written before, across the old end and at the new end, through the device and qemu; a qcow2 overlay grown over a smaller raw base reads zeros past the base; refusals: read-only device, shrink, a fixed vhdx, a vhdx past its BAT region's room, a twoGbMaxExtentSparse vmdk past its last file's 2 GiB (pointing to the offline resize), a lower layer larger than the device
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG" "$MKFS_EXT4" "$E2FSCK" "$RESIZE2FS"

W=$TEST_WORK
mnt=$W/mnt
old=$((64 * 1024 * 1024))
new=$((128 * 1024 * 1024))
job="--name=growfio --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bsrange=4k-64k
 --size=$(scaled 12)M --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=1 --randseed=325"

fs_kib() { # fs_kib DIR: the file system's size in KiB as df says
	df -k "$1" | awk 'NR == 2 { print $2 }'
}

vsize_of() { # vsize_of FILE: qemu-img's virtual size in bytes
	"$QEMU_IMG" info --output=json "$1" | sed -n 's/.*"virtual-size": *\([0-9]*\).*/\1/p' | head -n1
}

for f in raw qcow2; do
	t=$f
	img=$W/grow.$f
	rm -f "$img"
	case $f in
	raw) truncate -s "$old" "$img" ;;
	*) "$VDIMGCTL" create -t "$f" -s "$old" "$img" ;;
	esac || { fail "$t: create"; continue; }
	dev=$(vd_attach -t "$f" "$img") || { fail "$t: attach"; continue; }
	check "$t: mkfs.ext4" "$MKFS_EXT4" -q -F "$dev"
	mount_dev "$dev" "$mnt" || { fail "$t: mount"; continue; }
	kib0=$(fs_kib "$mnt")

	"$FIO" $job --filename="$mnt/fio.dat" --output="$W/fio-$f.out" &
	pid=$!
	wait_open "$mnt/fio.dat" || fail "$t: fio did not open its file"
	running=0
	kill -0 "$pid" 2>/dev/null && running=1
	out=$("$VDIMGCTL" resize --online "$dev" 128M 2>&1)
	check_eq "$t: resize --online prints the new size" "$out" "$dev: $new bytes (128 MiB)"
	check "$t: resize2fs grows the mounted ext4" "$RESIZE2FS" "$dev"
	if wait "$pid"; then
		ok "$t: fio verify=crc32c across the grow"
	else
		fail "$t: fio verify=crc32c across the grow" "$(tail -n 30 "$W/fio-$f.out")"
	fi
	if [ "$running" -eq 1 ]; then
		ok "$t: the grow happened while fio was running"
	else
		ok_skip "$t: the grow happened while fio was running" "fio had already ended"
	fi
	kib1=$(fs_kib "$mnt")
	check "$t: df shows the bigger file system ($kib0 -> $kib1 KiB)" \
		test "$kib1" -gt $((kib0 + 60000))
	check_eq "$t: blockdev --getsize64" "$(blockdev --getsize64 "$dev")" "$new"
	check_eq "$t: sysfs size (sectors)" "$(cat "/sys/block/${dev##*/}/size")" $((new / 512))
	check_eq "$t: sysfs virtual_size" "$(vd_attr "$dev" virtual_size)" "$new"
	check "$t: umount" umount_dev "$mnt"
	check "$t: detach" vd_detach "$dev"
	check_eq "$t: qemu-img info says the new size" "$(vsize_of "$img")" "$new"
	[ "$f" = raw ] || check "$t: qemu-img check" "$QEMU_IMG" check -q -f "$f" "$img"
	dev=$(vd_attach -t "$f" "$img") || { fail "$t: re-attach"; continue; }
	check_eq "$t: re-attached with the new size" "$(blockdev --getsize64 "$dev")" "$new"
	check "$t: e2fsck -fn clean after re-attach" "$E2FSCK" -fn "$dev"
	check "$t: detach after e2fsck" vd_detach "$dev"
done

# qed, vdi, dynamic vhd, vhdx, parallels and vmdk (qemu-made), without the file system: data
# across the old end, qemu's view (qemu calls vhd "vpc"; force_size keeps the size exact; a
# monolithicFlat vmdk is a descriptor and a -flat extent file, which attach opens)
mkrandom "$W/qtail" 2 || die "cannot write $W/qtail"
for t in $(tier "qed vdi vhd vhdx parallels vmdk vmdkflat" "vhdx vmdk"); do
	f=$t opt=
	case $t in
	vhd) f=vpc opt="-o force_size=on" ;;
	vmdkflat) f=vmdk opt="-o subformat=monolithicFlat" ;;
	esac
	img=$W/grow.$t
	rm -f "$img" "$W/grow-flat.$t"
	"$QEMU_IMG" create -q -f "$f" $opt "$img" 64M || { fail "$t: qemu-img create"; continue; }
	dev=$(vd_attach "$img") || { fail "$t: attach"; continue; }
	check "$t: resize --online" "$VDIMGCTL" resize --online "$dev" 128M
	check_eq "$t: blockdev --getsize64" "$(blockdev --getsize64 "$dev")" "$new"
	check "$t: the new range reads zeros (its first 16 MiB)" \
		sh -c "/usr/bin/dd if='$dev' bs=1M skip=64 count=16 iflag=direct status=none | /usr/bin/cmp -n $((16 << 20)) - /dev/zero"
	check "$t: write 2 MiB across the old end" \
		dd if="$W/qtail" of="$dev" bs=1M seek=63 count=2 oflag=direct conv=notrunc status=none
	check "$t: detach" vd_detach "$dev"
	check_eq "$t: qemu-img info says the new size" "$(vsize_of "$img")" "$new"
	if [ "$t" = vhd ]; then
		check "$t: vdimgctl check (qemu has no vhd check)" "$VDIMGCTL" check "$img"
	else
		check "$t: qemu-img check" "$QEMU_IMG" check -q -f "$f" "$img"
	fi
	[ "$t" = vhd ] || check "$t: vdimgctl check" "$VDIMGCTL" check "$img"
	check "$t: qemu reads what the device wrote" \
		sh -c "'$QEMU_IMG' convert -f $f -O raw '$img' '$W/q.raw' && /usr/bin/dd if='$W/q.raw' bs=1M skip=63 count=2 status=none | /usr/bin/cmp - '$W/qtail'"
	rm -f "$W/q.raw"
done

# a monolithicSparse vmdk past its grain directory's room (qemu's 64 KiB grains: 128 entries in
# its one sector, 4 GiB): 64 MiB -> 8 GiB moves both directories to the end of the file while the
# device is attached; what was written before the grow, across the old end and at the new end
# reads back after re-attach and through qemu
img=$W/movegd.vmdk big=$((8 << 30))
rm -f "$img" "$W/q.raw"
mkrandom "$W/mg1" 2 && mkrandom "$W/mg2" 2 && mkrandom "$W/mg3" 2 || die "cannot write $W/mg*"
"$QEMU_IMG" create -q -f vmdk "$img" 64M || die "qemu-img create $img"
dev=$(vd_attach "$img") || die "attach $img"
check "vmdk past its GD's room: write 2 MiB at 32 MiB" \
	dd if="$W/mg1" of="$dev" bs=1M seek=32 oflag=direct conv=notrunc status=none
check "vmdk past its GD's room: resize --online 8G" "$VDIMGCTL" resize --online "$dev" 8G
check_eq "vmdk past its GD's room: blockdev --getsize64" "$(blockdev --getsize64 "$dev")" "$big"
check "vmdk past its GD's room: write 2 MiB across the old end" \
	dd if="$W/mg2" of="$dev" bs=1M seek=63 oflag=direct conv=notrunc status=none
check "vmdk past its GD's room: write 2 MiB at the new end" \
	dd if="$W/mg3" of="$dev" bs=1M seek=8190 oflag=direct conv=notrunc status=none
check "vmdk past its GD's room: detach" vd_detach "$dev"
check_eq "vmdk past its GD's room: qemu-img info says 8 GiB" "$(vsize_of "$img")" "$big"
check "vmdk past its GD's room: qemu-img check" "$QEMU_IMG" check -q -f vmdk "$img"
check "vmdk past its GD's room: vdimgctl check" "$VDIMGCTL" check "$img"
dev=$(vd_attach "$img") || die "re-attach $img"
for w in "mg1 32" "mg2 63" "mg3 8190"; do
	set -- $w
	check "vmdk past its GD's room: re-attached, $1 reads back at $2 MiB" \
		sh -c "/usr/bin/dd if='$dev' bs=1M skip=$2 count=2 iflag=direct status=none | /usr/bin/cmp - '$W/$1'"
done
check "vmdk past its GD's room: detach after reading" vd_detach "$dev"
check "vmdk past its GD's room: qemu reads what the device wrote" \
	sh -c "'$QEMU_IMG' convert -f vmdk -O raw '$img' '$W/q.raw' && /usr/bin/dd if='$W/q.raw' bs=1M skip=63 count=2 status=none | /usr/bin/cmp - '$W/mg2' && /usr/bin/dd if='$W/q.raw' bs=1M skip=8190 count=2 status=none | /usr/bin/cmp - '$W/mg3'"
rm -f "$W/q.raw" "$img"

# a qcow2 overlay over a 64 MiB raw base: past the base's end the grown device reads zeros
base=$W/base.raw ov=$W/ov.qcow2
rm -f "$base" "$ov" "$W/ov.raw"
mkrandom "$base" 64 || die "cannot write $base"
"$QEMU_IMG" create -q -f qcow2 -F raw -b "$base" "$ov" || die "qemu-img create overlay"
dev=$(vd_attach "$ov") || die "attach overlay"
check "overlay: resize --online" "$VDIMGCTL" resize --online "$dev" +64M
check_eq "overlay: blockdev --getsize64" "$(blockdev --getsize64 "$dev")" "$new"
check "overlay: the base's range still reads the base" \
	cmp -n "$old" "$dev" "$base"
check "overlay: the new range reads zeros (its first 16 MiB)" \
	sh -c "/usr/bin/dd if='$dev' bs=1M skip=64 count=16 iflag=direct status=none | /usr/bin/cmp -n $((16 << 20)) - /dev/zero"
mkrandom "$W/tail" 2 || die "cannot write $W/tail"
check "overlay: write 2 MiB across the base's end" \
	dd if="$W/tail" of="$dev" bs=1M seek=63 count=2 oflag=direct conv=notrunc status=none
echo 3 >/proc/sys/vm/drop_caches
check "overlay: it reads back" sh -c "/usr/bin/dd if='$dev' bs=1M skip=63 count=2 iflag=direct status=none | /usr/bin/cmp - '$W/tail'"
check "overlay: detach" vd_detach "$dev"
check_eq "overlay: the base kept its size" "$(stat -c %s "$base")" "$old"
check "overlay: qemu-img check" "$QEMU_IMG" check -q -f qcow2 "$ov"
check "overlay: qemu reads what the device wrote" \
	sh -c "'$QEMU_IMG' convert -f qcow2 -O raw '$ov' '$W/ov.raw' && /usr/bin/dd if='$W/ov.raw' bs=1M skip=63 count=2 status=none | /usr/bin/cmp - '$W/tail'"
rm -f "$W/ov.raw"

# refused T DEV SIZE TEXT: resize --online DEV SIZE exits 1 saying TEXT, and the device keeps
# its size ($old)
refused() {
	local out rc
	out=$("$VDIMGCTL" resize --online "$2" "$3" 2>&1)
	rc=$?
	check_eq "$1: refused" "$rc" 1
	case $out in
	*"$4"*) ok "$1: the message says why" ;;
	*) fail "$1: the message says why" "got: $out" ;;
	esac
	check_eq "$1: size unchanged" "$(blockdev --getsize64 "$2")" "$old"
}

# refusals (a qemu-made vdi has room in its map for 128 MiB, not more)
img=$W/full.vdi
rm -f "$img"
"$QEMU_IMG" create -q -f vdi "$img" 64M || die "qemu-img create vdi"
dev=$(vd_attach "$img") || die "attach vdi"
refused "vdi past its map's room" "$dev" 256M "tables cannot address that size"
check "vdi past its map's room: detach" vd_detach "$dev"

img=$W/ro.qcow2
rm -f "$img"
"$VDIMGCTL" create -t qcow2 -s "$old" "$img" || die "create $img"
dev=$(vd_attach -r "$img") || die "attach read-only"
check_fail "read-only device: resize --online refused" "$VDIMGCTL" resize --online "$dev" 128M
check_eq "read-only device: size unchanged" "$(blockdev --getsize64 "$dev")" "$old"
check "read-only: detach" vd_detach "$dev"
dev=$(vd_attach "$img") || die "attach writable"
refused "shrink" "$dev" 32M "online shrink is not supported"
check "shrink: detach" vd_detach "$dev"

# a twoGbMaxExtentSparse image stops at its last file's 2 GiB online (the kernel opens no paths
# to make another): the kernel log points to the offline resize
img=$W/two.vmdk
rm -f "$W"/two*.vmdk
"$QEMU_IMG" create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$img" 64M ||
	die "qemu-img create $img"
dev=$(vd_attach "$img") || die "attach $img"
refused "twoGbMaxExtentSparse past 2 GiB" "$dev" 3G "detach, then vdimgctl resize"
check "twoGbMaxExtentSparse past 2 GiB: the kernel log points to the offline resize" \
	sh -c "dmesg | grep -q 'detach it: vdimgctl resize adds extent files'"
check "twoGbMaxExtentSparse past 2 GiB: detach" vd_detach "$dev"
rm -f "$W"/two*.vmdk

# a fixed vhdx keeps every block allocated: not grown online
img=$W/nogrow.vhdx
rm -f "$img"
"$QEMU_IMG" create -q -f vhdx -o subformat=fixed "$img" 64M || die "qemu-img create fixed vhdx"
dev=$(vd_attach "$img") || die "attach fixed vhdx"
refused "fixed vhdx" "$dev" 128M "this vhdx image cannot grow online"
check "fixed vhdx: the kernel log says why" \
	sh -c "dmesg | grep -q 'cannot grow a fixed VHDX'"
check "fixed vhdx: detach" vd_detach "$dev"

# 1 MiB blocks: qemu's 1 MiB BAT region holds 131041 of them, no more
img=$W/full.vhdx
rm -f "$img"
"$QEMU_IMG" create -q -f vhdx -o block_size=1M "$img" 64M || die "qemu-img create vhdx"
dev=$(vd_attach "$img") || die "attach vhdx"
refused "vhdx past its BAT region" "$dev" 131042M "tables cannot address that size"
check "vhdx past its BAT region: the kernel log names the region" \
	sh -c "dmesg | grep -q 'the BAT region at 2097152 (1048576 bytes) has room for 131041 blocks'"
check "vhdx past its BAT region: detach" vd_detach "$dev"
check "vhdx past its BAT region: qemu-img check" "$QEMU_IMG" check -q -f vhdx "$img"

# a 128 MiB raw base under a 64 MiB qcow2 child: growing the child would show the base's bytes
big=$W/bigbase.raw ch=$W/small.qcow2
rm -f "$big" "$ch"
truncate -s "$new" "$big"
"$QEMU_IMG" create -q -f qcow2 -F raw -b "$big" "$ch" 64M || die "qemu-img create child"
dev=$(vd_attach "$ch") || die "attach child over a larger base"
check_fail "larger lower layer: resize --online refused" "$VDIMGCTL" resize --online "$dev" 128M
check_eq "larger lower layer: size unchanged" "$(blockdev --getsize64 "$dev")" "$old"
check "larger lower layer: detach" vd_detach "$dev"
done_testing
