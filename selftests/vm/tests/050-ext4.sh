#!/bin/sh
# mkfs.ext4, mount, write files, umount, e2fsck -fn clean, re-attach, read back
. /vmtest/lib.sh
require_vdimg
require_cmd "$MKFS_EXT4" "$E2FSCK"

img=$TEST_WORK/fs.img
mnt=$TEST_WORK/mnt
truncate -s 256M "$img"
dev=$(vd_attach -t raw "$img") || die "attach failed"
check "mkfs.ext4" "$MKFS_EXT4" -q -F "$dev"
mount_dev "$dev" "$mnt" || die "mount failed"
mkrandom "$TEST_WORK/big" $(scaled 24)
mkdir -p "$mnt/dir/sub"
cp "$TEST_WORK/big" "$mnt/big"
i=0
nfiles=$(scaled 200)
while [ $i -lt "$nfiles" ]; do
	echo "file $i $(head -c 600 /dev/urandom | base64)" >"$mnt/dir/sub/f$i"
	i=$((i + 1))
done
(cd "$mnt" && find dir -type f | sort | xargs sha256sum) >"$TEST_WORK/sums"
check "write $(scaled 24) MiB and $nfiles small files" test -s "$TEST_WORK/sums"
check "umount" umount_dev "$mnt"
check "e2fsck -fn is clean" "$E2FSCK" -fn "$dev"
check "detach" vd_detach "$dev"

dev=$(vd_attach -t raw "$img") || die "re-attach failed"
mount_dev "$dev" "$mnt" || die "mount after re-attach failed"
check_eq "big file reads back" "$(sha_of "$mnt/big")" "$(sha_of "$TEST_WORK/big")"
check "small files read back" sh -c "cd '$mnt' && sha256sum -c -s '$TEST_WORK/sums'"
check "remove and rewrite under the mount" sh -c "rm -f '$mnt/big' && cp '$TEST_WORK/big' '$mnt/big2' && sync"
check "umount" umount_dev "$mnt"
check "detach" vd_detach "$dev"
check "e2fsck -fn on the image file is clean" "$E2FSCK" -fn "$img"
done_testing
