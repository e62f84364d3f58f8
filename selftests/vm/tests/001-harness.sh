#!/bin/sh
# Harness self-test with the kernel's loop driver: O_DIRECT on the scratch disk, fio verify, sha256
. /vmtest/lib.sh
require_cmd "$FIO" "$LOSETUP"
require_module loop

img=$TEST_WORK/loop.img
mkrandom "$img" 16 || die "cannot write $img"
want=$(sha_of "$img")

check "O_DIRECT works on the scratch disk" dd if="$img" of=/dev/null bs=1M iflag=direct
dev=$(loop_attach --direct-io=on "$img") || die "losetup failed"
check_eq "loop device reads back the file (sha256)" "$(sha_of "$dev")" "$want"
check "loop uses direct I/O" test "$(cat /sys/block/${dev##*/}/loop/dio)" = 1
check "fio verify=crc32c on loop" "$FIO" --name=v --filename="$dev" --direct=1 --ioengine=libaio \
	--iodepth=8 --rw=randwrite --bsrange=512-64k --size=16M --verify=crc32c --verify_fatal=1 \
	--do_verify=1 --randrepeat=0 --output-format=terse
check "losetup -d" losetup -d "$dev"
LOOPS=
check "a command that fails is reported as failing" sh -c '! false'
done_testing
