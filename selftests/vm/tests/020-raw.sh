#!/bin/sh
# Raw attach read-only and read-write: the device reads as the file (sha256), writes land in the file
. /vmtest/lib.sh
require_vdimg

img=$TEST_WORK/raw.img
mkrandom "$img" $(scaled 32) || die "cannot write $img"
want=$(sha_of "$img")
size=$(stat -c %s "$img")

# read-only
dev=$(vd_attach -r "$img") || die "vdimgctl attach -r failed"
check_eq "read-only attach: device reads as the file" "$(sha_of "$dev")" "$want"
check_eq "read-only attach: sysfs read_only" "$(vd_attr "$dev" read_only)" 1
check_eq "read-only attach: blockdev --getro" "$(blockdev --getro "$dev")" 1
check_eq "sysfs format" "$(vd_attr "$dev" format)" raw
check_eq "sysfs backing_file" "$(vd_attr "$dev" backing_file)" "$img"
check_eq "sysfs virtual_size" "$(vd_attr "$dev" virtual_size)" "$size"
check_eq "sysfs depth" "$(vd_attr "$dev" depth)" 1
check_eq "device size" "$(blockdev --getsize64 "$dev")" "$size"
check "vdimgctl list names the device and the file" sh -c \
	"$VDIMGCTL list | grep '${dev##*/}' | grep -q '$img'"
check "vdimgctl detach" vd_detach "$dev"
check "the device is gone after detach" test ! -e "/sys/block/${dev##*/}"

# read-write (-t raw: explicit format)
dev=$(vd_attach -t raw "$img") || die "vdimgctl attach -t raw failed"
check_eq "read-write attach: sysfs read_only" "$(vd_attr "$dev" read_only)" 0
check_eq "read-write attach: device reads as the file" "$(sha_of "$dev")" "$want"
mkrandom "$TEST_WORK/patch" 1
# the expected file: the same writes applied to a copy
cp "$img" "$TEST_WORK/expect"
dd if="$TEST_WORK/patch" of="$TEST_WORK/expect" bs=64k seek=80 conv=notrunc status=none
dd if="$TEST_WORK/patch" of="$TEST_WORK/expect" bs=512 count=6 seek=15 conv=notrunc status=none
check "write 1 MiB at 5 MiB (O_DIRECT)" dd if="$TEST_WORK/patch" of="$dev" bs=64k seek=80 \
	oflag=direct conv=fsync status=none
check "write 3 KiB at byte 7680 (buffered, unaligned to 4k)" dd if="$TEST_WORK/patch" of="$dev" \
	bs=512 count=6 seek=15 conv=fsync status=none
check "vdimgctl detach" vd_detach "$dev"
check "the file has the 1 MiB write" cmp -n 1048576 "$TEST_WORK/patch" "$img" 0 5242880
check "the file has the 3 KiB write" cmp -n 3072 "$TEST_WORK/patch" "$img" 0 7680
check_eq "the file is the original plus the writes, nothing else" "$(sha_of "$img")" \
	"$(sha_of "$TEST_WORK/expect")"
check_eq "the file did not change size" "$(stat -c %s "$img")" "$size"
done_testing
