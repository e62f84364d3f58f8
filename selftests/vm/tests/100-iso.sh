#!/bin/sh
# ISO images: -b 2048 gives 2048-byte logical blocks; an .iso attaches read-only by default
. /vmtest/lib.sh
require_vdimg

# a minimal ISO 9660 shape: primary volume descriptor at 32 KiB, terminator after it
iso=$TEST_WORK/disc.iso
mkrandom "$iso" 4
printf '\001CD001\001' | dd of="$iso" bs=1 seek=32768 conv=notrunc status=none
printf '\377CD001\001' | dd of="$iso" bs=1 seek=34816 conv=notrunc status=none
want=$(sha_of "$iso")

dev=$(vd_attach -b 2048 "$iso") || die "attach -b 2048 of an .iso failed"
check_eq ".iso: read-only by default" "$(vd_attr "$dev" read_only)" 1
check_eq ".iso: logical_block_size 2048 (queue)" \
	"$(cat /sys/block/${dev##*/}/queue/logical_block_size)" 2048
check_eq ".iso: logical_block_size 2048 (vdimg sysfs)" "$(vd_attr "$dev" logical_block_size)" 2048
check_eq ".iso: BLKSSZGET" "$(blockdev --getss "$dev")" 2048
check_eq ".iso: reads as the file" "$(sha_of "$dev")" "$want"
check_fail ".iso: writes fail" dd if=/dev/zero of="$dev" bs=2048 count=1 oflag=direct status=none
echo "format: $(vd_attr "$dev" format)"
check "detach" vd_detach "$dev"

dev=$(vd_attach "$iso") || die "attach of an .iso failed"
check_eq ".iso without -b: read-only" "$(vd_attr "$dev" read_only)" 1
check "detach" vd_detach "$dev"

dev=$(vd_attach --rw -t raw "$iso") || die "attach --rw -t raw of an .iso failed"
check_eq ".iso with --rw -t raw: writable" "$(vd_attr "$dev" read_only)" 0
check "detach" vd_detach "$dev"

# 4096-byte sectors on a plain raw file
img=$TEST_WORK/4k.img
mkrandom "$img" 4
dev=$(vd_attach -t raw -b 4096 "$img") || die "attach -b 4096 failed"
check_eq "raw -b 4096: logical_block_size" "$(cat /sys/block/${dev##*/}/queue/logical_block_size)" 4096
check_fail "raw -b 4096: a 512-byte O_DIRECT read is refused" \
	dd if="$dev" of=/dev/null bs=512 count=1 iflag=direct status=none
check_eq "raw -b 4096: reads as the file" "$(sha_of "$dev")" "$(sha_of "$img")"
check "detach" vd_detach "$dev"
check_fail "-b 1024 is refused" "$VDIMGCTL" attach -f --show -t raw -b 1024 "$img"
done_testing
