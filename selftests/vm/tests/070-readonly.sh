#!/bin/sh
# A read-only device refuses writes (EROFS/EPERM) and the backing file stays untouched
. /vmtest/lib.sh
require_vdimg
require_cmd "$MKFS_EXT4"

img=$TEST_WORK/ro.img
mkdir -p "$TEST_WORK/content"
mkrandom "$TEST_WORK/content/data" 2
"$MKFS_EXT4" -q -F -d "$TEST_WORK/content" "$img" 16M || die "mkfs.ext4 -d failed"
want=$(sha_of "$img")
mtime=$(stat -c %Y "$img")
dev=$(vd_attach -r "$img") || die "attach -r failed"
check_eq "blockdev --getro" "$(blockdev --getro "$dev")" 1
out=$(dd if=/dev/zero of="$dev" bs=4k count=1 oflag=direct status=none 2>&1)
rc=$?
echo "dd: $out"
check "O_DIRECT write to the device fails" test $rc -ne 0
check "the error is EROFS or EPERM" sh -c "echo '$out' | grep -qE 'Read-only file system|Operation not permitted'"
out=$(dd if=/dev/zero of="$dev" bs=4k count=1 conv=fsync status=none 2>&1)
rc=$?
echo "dd: $out"
check "buffered write to the device fails" test $rc -ne 0
check_fail "BLKROSET 0 does not make it writable" sh -c \
	"blockdev --setrw '$dev' && dd if=/dev/zero of='$dev' bs=4k count=1 oflag=direct status=none"
mount_dev "$dev" "$TEST_WORK/mnt" ro || die "read-only mount failed"
check_eq "a read-only ext4 mount reads the data" "$(sha_of "$TEST_WORK/mnt/data")" \
	"$(sha_of "$TEST_WORK/content/data")"
check_fail "writing under the read-only mount fails" touch "$TEST_WORK/mnt/new"
check "umount" umount_dev "$TEST_WORK/mnt"
check "detach" vd_detach "$dev"
check_eq "the file is unchanged" "$(sha_of "$img")" "$want"
check_eq "the file's mtime is unchanged" "$(stat -c %Y "$img")" "$mtime"
done_testing
