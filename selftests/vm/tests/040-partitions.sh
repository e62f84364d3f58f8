#!/bin/sh
# Partition scan (-P) on images with an MBR and with a GPT: vdimgNp1 and vdimgNp2 appear
. /vmtest/lib.sh
require_vdimg
require_cmd "$SFDISK" "$BLKID"

for label in dos gpt; do
	img=$TEST_WORK/$label.img
	truncate -s 64M "$img"
	printf 'label: %s\n,16MiB,L\n,,L\n' "$label" | "$SFDISK" -q "$img" >/dev/null ||
		die "sfdisk $label failed"
	dev=$(vd_attach -t raw -P "$img") || die "attach -P failed"
	wait_for_dev "${dev}p2"
	check "$label: ${dev##*/}p1 appears" test -b "${dev}p1"
	check "$label: ${dev##*/}p2 appears" test -b "${dev}p2"
	check "$label: no ${dev##*/}p3" test ! -e "${dev}p3"
	check_eq "$label: sysfs partscan" "$(vd_attr "$dev" partscan)" 1
	check_eq "$label: p1 is 16 MiB" "$(blockdev --getsize64 "${dev}p1" 2>/dev/null)" 16777216
	check_eq "$label: partition table type (blkid)" \
		"$("$BLKID" -p -o value -s PTTYPE "$dev" 2>/dev/null)" "$label"
	check "$label: mkfs.ext4 on p2" "$MKFS_EXT4" -q -F "${dev}p2"
	check "$label: detach" vd_detach "$dev"
	check "$label: partitions are gone" test ! -e "${dev}p1"

	dev=$(vd_attach -t raw "$img") || die "attach failed"
	check_eq "$label: without -P no partitions" "$(ls /sys/block/${dev##*/} | grep -c "${dev##*/}p")" 0
	check "$label: detach" vd_detach "$dev"
done
done_testing
