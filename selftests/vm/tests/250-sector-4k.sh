#!/bin/sh
# 4096-byte logical sectors: a VHDX created with sector_size=4096 gives a device with 4 KiB logical blocks; fio verify with 4k-aligned I/O, a 512-byte direct write is refused, qemu-img check clean and qemu reads what was written
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG"

img=$TEST_WORK/4k.vhdx
"$VDIMGCTL" create -t vhdx -o sector_size=4096 -s 64M "$img" || die "vdimgctl create -o sector_size=4096 failed"
dev=$(vd_attach "$img") || die "attach failed"
b=${dev##*/}
check_eq "queue/logical_block_size" "$(cat /sys/block/$b/queue/logical_block_size)" 4096
check_eq "vdimg/logical_block_size" "$(vd_attr "$dev" logical_block_size)" 4096
check_eq "blockdev --getss" "$(blockdev --getss "$dev")" 4096
check_fail "a 512-byte O_DIRECT write is refused" dd if=/dev/zero of="$dev" bs=512 count=1 \
	seek=1 oflag=direct status=none
job="--name=verify4k --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=4k-128k
 --blockalign=4k --size=$(scaled 24)M --offset=4M --verify=crc32c --verify_fatal=1 --randrepeat=1
 --randseed=4096"
# fio_run ARGS: fio with its report in a file, shown only when it fails
fio_run() {
	"$FIO" "$@" --output="$TEST_WORK/fio.out" && return 0
	tail -n 30 "$TEST_WORK/fio.out"
	return 1
}
check "fio 4k..128k random writes, verified" fio_run $job --filename="$dev" --do_verify=1
vd_detach "$dev" || fail "detach"
dev=$(vd_attach "$img") || die "re-attach failed"
check_eq "re-attach: logical_block_size" "$(cat /sys/block/${dev##*/}/queue/logical_block_size)" 4096
check "fio verify_only after re-attach" fio_run $job --filename="$dev" --verify_only=1
devsha=$(sha_of "$dev")
vd_detach "$dev" || fail "detach"
check "vdimgctl check clean" "$VDIMGCTL" check "$img"
dev=$(vd_attach -r "$img") || die "read-only re-attach failed"
check_eq "read-only re-attach reads the same (sha256)" "$(sha_of "$dev")" "$devsha"
vd_detach "$dev" || fail "detach"
# qemu 7.2 opens VHDX with 512-byte logical sectors only (ENOTSUP otherwise): when it refuses, say
# so; when it opens the image, it must agree
if "$QEMU_IMG" info -f vhdx "$img" >"$TEST_WORK/qi.err" 2>&1; then
	check "qemu-img check clean" "$QEMU_IMG" check -f vhdx "$img"
	check_eq "device sha256 = qemu-img convert -O raw" "$(raw_sha "$img" vhdx)" "$devsha"
elif grep -q "not supported" "$TEST_WORK/qi.err"; then
	ok_skip "qemu-img check and convert" "this qemu-img does not open 4096-byte-sector VHDX"
else
	fail "qemu-img info" "$(cat "$TEST_WORK/qi.err")"
fi
done_testing
