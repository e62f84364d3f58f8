#!/bin/sh
# Parallels in the kernel: an expanding image made by vdimgctl and one made by qemu-img (64 KiB clusters): the header's in-use flag set while attached read-write and cleared by the detach, fio verify=crc32c, detach, re-attach verify_only, qemu-img check clean and qemu-img's raw view equals the device; ext4 on a vdimgctl image across a re-attach; an image left in use refused read-write and readable read-only; a hand-made bundle (split storage, two snapshots) attached by its directory, written across the part boundary, the base untouched, and attached again renamed by its descriptor; a plain (raw) root under a snapshot; the parallels-v1 and parallels-v2 samples read as qemu-img reads them; discard (blkdiscard, -z) on an expanding image and on a bundle's snapshot, qemu-img check and compare after
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

# discard: whole clusters unmapped and punched, a partial one zeroed, write-zeroes kept
# allocated, the last cluster trimmed off the file at the detach
t="parallels discard"
img=$W/d.hds
rm -f "$img" "$W/dexp.raw"
if "$VDIMGCTL" create -t parallels -s 8M "$img" && mkrandom "$W/dexp.raw" 8 &&
	dev=$(vd_attach "$img"); then
	check "$t: the device advertises discard" \
		test "$(cat /sys/block/${dev##*/}/queue/discard_max_bytes)" -gt 0
	dd if="$W/dexp.raw" of="$dev" bs=1M oflag=direct conv=fsync status=none
	check_eq "$t: 8 MiB written" $? 0
	size0=$(stat -c %s "$img")
	blocks0=$(blocks_of "$img")
	check "$t: blkdiscard of clusters 2..4" blkdiscard -o $((2 << 20)) -l $((3 << 20)) "$dev"
	check "$t: blkdiscard of 8 KiB inside cluster 5" blkdiscard -o $(((5 << 20) + 4096)) -l 8192 "$dev"
	check "$t: blkdiscard -z (write-zeroes, no unmap) of cluster 6" \
		blkdiscard -z -o $((6 << 20)) -l $((1 << 20)) "$dev"
	check "$t: blkdiscard of the last cluster" blkdiscard -o $((7 << 20)) -l $((1 << 20)) "$dev"
	dd if=/dev/zero of="$W/dexp.raw" bs=1M seek=2 count=3 conv=notrunc status=none
	dd if=/dev/zero of="$W/dexp.raw" bs=4k seek=$((5 * 256 + 1)) count=2 conv=notrunc status=none
	dd if=/dev/zero of="$W/dexp.raw" bs=1M seek=6 count=2 conv=notrunc status=none
	check "$t: device = expected after the discards" cmp "$dev" "$W/dexp.raw"
	sync
	blocks1=$(blocks_of "$img")
	echo "# allocated 512-byte blocks: before $blocks0, after $blocks1"
	# 4 MiB punched; a split extent may cost the file system some metadata
	check "$t: at least 3.5 MiB given back to the file system" test $((blocks0 - blocks1)) -ge 7168
	check "$t: detach" vd_detach "$dev"
	check_eq "$t: the last cluster is trimmed off the file" $((size0 - $(stat -c %s "$img"))) $((1 << 20))
	check "$t: qemu-img check clean" "$QEMU_IMG" check -q -f parallels "$img"
	check "$t: qemu-img compare with the expected raw" \
		"$QEMU_IMG" compare -q -f parallels -F raw "$img" "$W/dexp.raw"
else
	fail "$t: create and attach"
fi
rm -f "$img" "$W/dexp.raw"

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

# a bundle made by hand: a split storage (two 8 MiB parts) and two snapshots, the top written
t="parallels bundle"
B=$W/disk.hdd
A='{a1b2c3d4-0000-4000-8000-000000000001}'
T='{5fbaabe3-6958-40ff-92a7-860e329aab41}'
rm -rf "$B" "$W/bexp.raw"
mkdir -p "$B"
ok_made=yes
for g in "$A" "$T"; do
	for k in 0 1; do
		"$VDIMGCTL" create -t parallels -s 8M "$B/hd.$k.$g.hds" || ok_made=
	done
done
"$QEMU_IO" -f parallels -c "write -P 0x11 0 8M" "$B/hd.0.$A.hds" >/dev/null &&
	"$QEMU_IO" -f parallels -c "write -P 0x22 0 8M" "$B/hd.1.$A.hds" >/dev/null &&
	"$QEMU_IO" -f parallels -c "write -P 0x33 1M 1M" "$B/hd.0.$T.hds" >/dev/null &&
	"$QEMU_IO" -f parallels -c "write -P 0x44 6M 2M" "$B/hd.1.$T.hds" >/dev/null &&
	"$QEMU_IMG" create -q -f raw "$W/bexp.raw" 16M &&
	"$QEMU_IO" -f raw -c "write -P 0x11 0 8M" -c "write -P 0x22 8M 8M" -c "write -P 0x33 1M 1M" \
		-c "write -P 0x44 14M 2M" "$W/bexp.raw" >/dev/null || ok_made=
img() { # img GUID: one Image element per part
	echo "<Image><GUID>$1</GUID><Type>Compressed</Type><File>hd.$2.$1.hds</File></Image>"
}
cat >"$B/DiskDescriptor.xml" <<XML
<?xml version='1.0' encoding='UTF-8'?>
<Parallels_disk_image Version="1.0">
 <Disk_Parameters>
  <Disk_size>32768</Disk_size><Cylinders>64</Cylinders><Heads>16</Heads><Sectors>32</Sectors>
  <Padding>0</Padding><Name>disk</Name>
 </Disk_Parameters>
 <StorageData>
  <Storage><Start>0</Start><End>16384</End><Blocksize>2048</Blocksize>
   $(img "$A" 0)
   $(img "$T" 0)
  </Storage>
  <Storage><Start>16384</Start><End>32768</End><Blocksize>2048</Blocksize>
   $(img "$A" 1)
   $(img "$T" 1)
  </Storage>
 </StorageData>
 <Snapshots>
  <Shot><GUID>$A</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>
  <Shot><GUID>$T</GUID><ParentGUID>$A</ParentGUID></Shot>
 </Snapshots>
</Parallels_disk_image>
XML
if [ -n "$ok_made" ] && dev=$(vd_attach "$B"); then
	sa0=$(sha_of "$B/hd.0.$A.hds")
	sa1=$(sha_of "$B/hd.1.$A.hds")
	check_eq "$t: depth" "$(vd_attr "$dev" depth)" 2
	check "$t: device = the chain's expected content" cmp "$dev" "$W/bexp.raw"
	check_eq "$t: both top parts in use" "$(inuse "$B/hd.0.$T.hds")$(inuse "$B/hd.1.$T.hds")" YnotYnot
	mkrandom "$W/rnd" 1
	dd if="$W/rnd" of="$dev" bs=64k seek=120 count=16 oflag=direct conv=fsync status=none &&
		dd if="$W/rnd" of="$W/bexp.raw" bs=64k seek=120 count=16 conv=notrunc status=none
	check_eq "$t: a write across the part boundary" $? 0
	check "$t: device = expected after the write" cmp "$dev" "$W/bexp.raw"
	# the top holds nothing at 2..4 MiB: the discard must not show the base there
	check "$t: blkdiscard where only the base holds data" blkdiscard -o $((2 << 20)) -l $((2 << 20)) "$dev"
	dd if=/dev/zero of="$W/bexp.raw" bs=1M seek=2 count=2 conv=notrunc status=none
	check "$t: device = expected after the discard" cmp "$dev" "$W/bexp.raw"
	check "$t: detach" vd_detach "$dev"
	check_eq "$t: top parts closed" "$(inuse "$B/hd.0.$T.hds")$(inuse "$B/hd.1.$T.hds")" v2.1v2.1
	check_eq "$t: base parts unchanged" "$(sha_of "$B/hd.0.$A.hds")$(sha_of "$B/hd.1.$A.hds")" "$sa0$sa1"
	check "$t: qemu-img check of the top's parts" "$QEMU_IMG" check -q -f parallels "$B/hd.0.$T.hds"
	check "$t: qemu-img check of the top's second part" "$QEMU_IMG" check -q -f parallels "$B/hd.1.$T.hds"
	mv "$B" "$W/renamed"
	dev=$(vd_attach -r "$W/renamed/DiskDescriptor.xml") || fail "$t: renamed, attach by descriptor"
	if [ -n "$dev" ]; then
		check "$t: renamed, reads the same" cmp "$dev" "$W/bexp.raw"
		vd_detach "$dev" || fail "$t: detach"
	fi
else
	fail "$t: made and attached"
fi
rm -rf "$B" "$W/renamed" "$W/bexp.raw" "$W/rnd"

# a plain (raw) root under an expanding snapshot: a raw base layer
t="parallels bundle, plain root"
B=$W/plain.hdd
rm -rf "$B" "$W/pexp.raw"
mkdir -p "$B"
if mkrandom "$B/hd.raw" 4 && cp "$B/hd.raw" "$W/pexp.raw" &&
	"$VDIMGCTL" create -t parallels -s 4M "$B/hd.top.hds" &&
	dd if=/dev/zero of="$W/pexp.raw" bs=1M seek=1 count=1 conv=notrunc status=none &&
	"$QEMU_IO" -f parallels -c "write -P 0x5e 1M 64k" "$B/hd.top.hds" >/dev/null &&
	"$QEMU_IO" -f raw -c "write -P 0x5e 1M 64k" "$W/pexp.raw" >/dev/null; then
	cat >"$B/DiskDescriptor.xml" <<XML
<Parallels_disk_image Version="1.0"><Disk_Parameters><Disk_size>8192</Disk_size></Disk_Parameters>
<StorageData><Storage><Start>0</Start><End>8192</End>
<Image><GUID>$A</GUID><Type>Plain</Type><File>hd.raw</File></Image>
<Image><GUID>$T</GUID><Type>Compressed</Type><File>hd.top.hds</File></Image>
</Storage></StorageData><Snapshots>
<Shot><GUID>$A</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>
<Shot><GUID>$T</GUID><ParentGUID>$A</ParentGUID></Shot></Snapshots></Parallels_disk_image>
XML
	dev=$(vd_attach -r "$B") || fail "$t: attach"
	if [ -n "$dev" ]; then
		check_eq "$t: depth" "$(vd_attr "$dev" depth)" 2
		check "$t: device = the raw base under the snapshot" cmp "$dev" "$W/pexp.raw"
		vd_detach "$dev" || fail "$t: detach"
	fi
else
	fail "$t: made"
fi
rm -rf "$B" "$W/pexp.raw"

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
