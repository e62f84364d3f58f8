#!/bin/sh
# fio verify=crc32c random writes with 512..128k blocks, detach, re-attach, verify_only
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO"

img=$TEST_WORK/fio.img
truncate -s 256M "$img"
job="--name=verify --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=512-128k
 --size=$(scaled 96)M --offset=8M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=4242
 --output-format=terse"

dev=$(vd_attach -t raw "$img") || die "attach failed"
check "fio: random writes, mixed block sizes, verified in the same run" "$FIO" $job \
	--filename="$dev" --do_verify=1
check "vdimgctl detach" vd_detach "$dev"
dev=$(vd_attach -t raw "$img") || die "re-attach failed"
check "fio: verify_only after detach and re-attach" "$FIO" $job --filename="$dev" --verify_only=1
check "vdimgctl detach" vd_detach "$dev"

# the same through the page cache (buffered I/O, writeback from the device's own page cache)
dev=$(vd_attach -t raw "$img") || die "attach failed"
check "fio: buffered random writes verified after fsync" "$FIO" --name=buffered --direct=0 \
	--ioengine=psync --rw=randwrite --bsrange=4k-64k --size=$(scaled 32)M --offset=128M --verify=crc32c \
	--verify_fatal=1 --fsync_on_close=1 --randrepeat=1 --randseed=7 --output-format=terse \
	--filename="$dev"
check "vdimgctl detach" vd_detach "$dev"
done_testing
