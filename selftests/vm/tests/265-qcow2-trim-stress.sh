#!/bin/sh
# QCOW2 freed-cluster reuse under load: fio trims, rewrites and flushes one half of the disk (randtrim, randtrimwrite, randwrite with fsync) while another job allocates and verifies the other half (crc32c); a late write into a cluster freed and handed to the other half would fail that verify. Then the device equals qemu's view and qemu-img check is clean (no leaks after detach)
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG"

W=$TEST_WORK
rt=$(scaled 20)
# fio_run ARGS: fio with its report in a file, shown only when it fails
fio_run() {
	"$FIO" "$@" --output="$W/fio.out" && return 0
	tail -n 40 "$W/fio.out"
	return 1
}

for cs in 65536 4096; do
	t="qcow2 cluster_size=$cs"
	img=$W/trim-$cs.qcow2
	rm -f "$img"
	"$QEMU_IMG" create -q -f qcow2 -o cluster_size=$cs "$img" 96M || { fail "$t: create"; continue; }
	dev=$(vd_attach "$img") || { fail "$t: attach"; continue; }
	# the churn half full first, so its trims free clusters from the start
	check "$t: fill 48..96 MiB" fio_run --name=fill --filename="$dev" --direct=1 \
		--ioengine=libaio --iodepth=8 --rw=write --bs=1M --offset=48M --size=48M
	# keep: allocates 0..40 MiB while the churn frees and reallocates; verified twice
	check "$t: fio keep (verify) against trim/write/flush churn" fio_run \
		--ioengine=libaio --direct=1 --filename="$dev" \
		--name=keep --offset=0 --size=40M --rw=randwrite --bsrange=4k-512k --iodepth=16 \
		--loops=2 --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=4242 \
		--name=trimwrite --offset=48M --size=48M --rw=randtrimwrite --bsrange=4k-1M \
		--iodepth=16 --time_based --runtime="$rt" --fsync=4 \
		--name=trim --offset=48M --size=48M --rw=randtrim --bsrange=64k-2M --iodepth=8 \
		--time_based --runtime="$rt" \
		--name=write --offset=48M --size=48M --rw=randwrite --bsrange=4k-1M --iodepth=16 \
		--time_based --runtime="$rt" --fsync=8
	check "$t: detach" vd_detach "$dev"
	check "$t: qemu-img check clean (no errors, no leaks)" "$QEMU_IMG" check -f qcow2 "$img"
	rm -f "$W/qemu.raw"
	if "$QEMU_IMG" convert -f qcow2 -O raw "$img" "$W/qemu.raw"; then
		dev=$(vd_attach -r "$img") || { fail "$t: re-attach read-only"; continue; }
		check "$t: device = qemu-img convert -O raw" cmp "$dev" "$W/qemu.raw"
		vd_detach "$dev" || fail "$t: detach after cmp"
	else
		fail "$t: qemu-img convert -O raw"
	fi
	rm -f "$img" "$W/qemu.raw"
done
done_testing
