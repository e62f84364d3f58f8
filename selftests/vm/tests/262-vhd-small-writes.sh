#!/bin/sh
# Small concurrent writes on dynamic VHD, whose block data follows a 512-byte bitmap and so is not page-aligned in the file: an ext4 with 1 KiB blocks under fio verify=crc32c (bsrange 1k-64k, depth 16) and fio on the device itself (512 B-16 KiB, depth 32); and two jobs writing different bytes of one page at every block start; no I/O error, no page-cache invalidation failure in the kernel log, e2fsck clean, vdimgctl check clean
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$MKFS_EXT4" "$E2FSCK"

W=$TEST_WORK
mnt=$W/mnt
mkdir -p "$mnt"
bad='Page cache invalidation failure|I/O error|failed: -'

for round in 1 2; do
	t="ext4 1k round $round"
	img=$W/small$round.vhd
	rm -f "$img"
	"$VDIMGCTL" create -t vhd -s 64M "$img" || { fail "$t: create"; continue; }
	dev=$(vd_attach "$img") || { fail "$t: attach"; continue; }
	check "$t: mkfs.ext4 -b 1024" "$MKFS_EXT4" -q -F -b 1024 "$dev"
	mount_dev "$dev" "$mnt" || { fail "$t: mount"; continue; }
	before=$(dmesg | grep -cE "$bad")
	check "$t: fio verify=crc32c in the file system" "$FIO" --name=small --direct=1 \
		--ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=1k-64k --size=$(scaled 24)M \
		--verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=1 --randseed=262 \
		--filename="$mnt/fio.dat" --output="$W/fio-fs$round.out"
	check "$t: umount" umount_dev "$mnt"
	check_eq "$t: no I/O error or invalidation failure in the kernel log" \
		"$(dmesg | grep -cE "$bad")" "$before"
	check "$t: e2fsck -fn clean" "$E2FSCK" -fn "$dev"
	check "$t: detach" vd_detach "$dev"
	check "$t: vdimgctl check" "$VDIMGCTL" check "$img"
done

t="device"
img=$W/dev.vhd
rm -f "$img"
"$VDIMGCTL" create -t vhd -s 32M "$img" || die "create $img"
dev=$(vd_attach "$img") || die "attach $img"
before=$(dmesg | grep -cE "$bad")
check "$t: fio verify=crc32c on the device (512 B-16 KiB, depth 32)" "$FIO" --name=dev \
	--direct=1 --ioengine=libaio --iodepth=32 --rw=randwrite --bsrange=512-16k \
	--size=$(scaled 16)M --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=1 \
	--randseed=2620 --filename="$dev" --output="$W/fio-dev.out"
check_eq "$t: no I/O error or invalidation failure in the kernel log" \
	"$(dmesg | grep -cE "$bad")" "$before"
check "$t: detach" vd_detach "$dev"
check "$t: vdimgctl check" "$VDIMGCTL" check "$img"

# two jobs writing different bytes of the same host page of every block, concurrently: 4 KiB at
# the block's start (its first 3.5 KiB share a page with the block's bitmap, the last 512 bytes
# are in the next page) and 512 bytes right after them, in that next page. The jobs rewrite their
# zones over and over (fio's verify cannot check overwritten zones); what is checked is that no
# direct write met a page the page cache held (the kernel warns then: the data on disk may be
# overwritten later by the stale page), which happened before extents were cut at the shared page
t="shared page"
img=$W/page.vhd
rm -f "$img"
"$VDIMGCTL" create -t vhd -s 32M "$img" || die "create $img"
dev=$(vd_attach "$img") || die "attach $img"
before=$(dmesg | grep -cE "$bad")
common="--filename=$dev --direct=1 --ioengine=libaio --iodepth=8 --rw=write --size=30M
 --zonemode=strided --io_size=$(scaled 8)M"
check "$t: 4 KiB at each block start and 512 B after it, at once" "$FIO" $common \
	--name=head --offset=0 --bs=4k --zonesize=4k --zoneskip=2044k \
	--name=next --offset=4k --bs=512 --zonesize=512 --zoneskip=2096640 \
	--output="$W/fio-page.out"
check_eq "$t: no I/O error or invalidation failure in the kernel log" \
	"$(dmesg | grep -cE "$bad")" "$before"
check "$t: detach" vd_detach "$dev"
check "$t: vdimgctl check" "$VDIMGCTL" check "$img"
done_testing
