#!/bin/sh
# Direct and buffered I/O do not meet in a backing file's page cache: two fio jobs write 1 KiB blocks into the same 4 KiB pages of the device, one with plain direct writes (vdimg's direct fast path) and one with O_DSYNC (FUA, the worker's synchronous path), where the data is allocated and where every write allocates or sets bitmap bits, on formats whose data shares pages with metadata or other units (qemu's VHD and VDI, 1 KiB qcow2 clusters) and on aligned ones; both jobs verify, the device fsyncs, and the kernel logs no page cache invalidation failure
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG"

W=$TEST_WORK
# fio_run ARGS: fio with its report in a file, shown only when it fails
fio_run() {
	"$FIO" "$@" --output="$W/fio.out" && return 0
	tail -n 40 "$W/fio.out"
	return 1
}

# mix T OFFSET: the two jobs over 256 KiB at OFFSET of $dev
mix() {
	check "$1: direct and O_DSYNC 1 KiB writes into shared pages, verified" fio_run \
		--filename="$dev" --ioengine=libaio --direct=1 --bs=1k --ba=2k --offset_align=2k \
		--size=256k --io_size="$(scaled 1)m" --serialize_overlap=1 --verify=crc32c \
		--verify_fatal=1 --rw=randwrite --randrepeat=1 \
		--name=plain --offset="$2" --iodepth=16 \
		--name=dsync --offset="$(($2 + 1024))" --iodepth=16 --sync=dsync
}

# format[:create options]
for spec in raw vpc qcow2:cluster_size=1024 vdi parallels vhdx; do
	fmt=${spec%%:*}
	t=$spec
	img=$W/mix.$fmt
	rm -f "$img"
	opts=
	[ "$fmt" != "$spec" ] && opts="-o ${spec#*:}"
	# shellcheck disable=SC2086
	"$QEMU_IMG" create -q -f "$fmt" $opts "$img" 16M || { fail "$t: create"; continue; }
	vfmt=$fmt
	[ "$fmt" = vpc ] && vfmt=vhd
	dev=$(vd_attach -t "$vfmt" "$img") || { fail "$t: attach"; continue; }
	seen=$(dmesg | wc -l)
	# allocated first, so that the jobs mostly take the direct fast path
	check "$t: fill 0..4 MiB" fio_run --name=fill --filename="$dev" --direct=1 --rw=write \
		--bs=1M --size=4M
	mix "$t: allocated" 0
	# and where every write allocates or sets bitmap bits (metadata written beside the data)
	mix "$t: first writes" $((8 << 20))
	check "$t: fsync of the device after the mix" sh -c "$FIO --name=f --filename=$dev --rw=write --bs=4k --size=4k --offset=12M --direct=1 --fsync=1 --output=$W/fio.out"
	if dmesg | tail -n +"$((seen + 1))" | grep -q "Page cache invalidation failure"; then
		fail "$t: the kernel logs a page cache invalidation failure"
	else
		ok "$t: no page cache invalidation failure in the kernel log"
	fi
	check "$t: detach" vd_detach "$dev"
	case $fmt in
	raw | vpc) ;; # qemu-img checks neither
	*) check "$t: qemu-img check clean" "$QEMU_IMG" check -q -f "$fmt" "$img" ;;
	esac
	rm -f "$img"
done
done_testing
