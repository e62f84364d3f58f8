#!/bin/sh
# Discard (blkdiscard) punches holes in the raw backing file; discarded ranges read as zeros
. /vmtest/lib.sh
require_vdimg

img=$TEST_WORK/discard.img
mkrandom "$img" 32 || die "cannot write $img"
sync
before=$(blocks_of "$img")
dev=$(vd_attach -t raw "$img") || die "attach failed"
check "the device advertises discard" test "$(cat /sys/block/${dev##*/}/queue/discard_max_bytes)" -gt 0
tail_sha=$(dd if="$img" bs=1M skip=24 count=8 status=none | sha256sum | cut -d' ' -f1)
check "blkdiscard 16 MiB at 4 MiB" blkdiscard -o 4194304 -l 16777216 "$dev"
check "sync" sync
after=$(blocks_of "$img")
echo "allocated 512-byte blocks: before $before, after $after"
check "the backing file lost at least 15 MiB of blocks" test $((before - after)) -ge 30720
check_eq "the discarded range reads as zeros" \
	"$(dd if="$dev" bs=1M skip=4 count=16 iflag=direct status=none | tr -d '\000' | wc -c)" 0
check_eq "data after the range is intact" \
	"$(dd if="$dev" bs=1M skip=24 count=8 iflag=direct status=none | sha256sum | cut -d' ' -f1)" \
	"$tail_sha"
check "detach" vd_detach "$dev"
check_eq "the file keeps its size" "$(stat -c %s "$img")" 33554432
done_testing
