#!/bin/sh
# QCOW2 internal snapshots and external data files in the kernel: snapshots attached read-only by name and ID read as qemu-img convert -l shows them; fio verify writes on an image with snapshots (copy on write) leave qemu-img check clean and the snapshots unchanged; data-file images (data_file_raw off and on) attached read-write pass fio verify, verify_only after re-attach and qemu-img check
# timeout: 900
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG" "$QEMU_IO"

W=$TEST_WORK
size=32M
job="--name=q2fio --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=4k-96k
 --size=16M --offset=4M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=280"

if ! "$VDIMGCTL" attach --help 2>&1 | grep -q -- --snapshot; then
	fail "vdimgctl attach has --snapshot" "vdimgctl attach --snapshot NAME|ID is missing (H3 wires it)"
	done_testing
fi

# snap_sha IMAGE NAME: sha256 of snapshot NAME as qemu-img convert -l reads it
snap_sha() {
	local out=$W/.snap.raw
	rm -f "$out"
	"$QEMU_IMG" convert -l "snapshot.name=$2" -O raw "$1" "$out" >&2 || return 1
	sha_of "$out"
	rm -f "$out"
}

fio_out() {
	tail -n 30 "$W/fio.out"
}

img=$W/snap.qcow2
rm -f "$img"
"$QEMU_IMG" create -q -f qcow2 -o cluster_size=16384 "$img" "$size" &&
	"$QEMU_IO" -f qcow2 -c 'write -P 0x11 0 8m' -c 'write -P 0x12 20m 1m' -c 'write -z 9m 1m' "$img" >/dev/null &&
	"$QEMU_IMG" snapshot -c s1 "$img" &&
	"$QEMU_IO" -f qcow2 -c 'write -P 0x21 1m 3m' -c 'discard 20m 512k' -c 'write -P 0x22 30m 64k' "$img" >/dev/null &&
	"$QEMU_IMG" snapshot -c s2 "$img" &&
	"$QEMU_IO" -f qcow2 -c 'write -P 0x31 2m 1m' -c 'write -z 30m 16k' "$img" >/dev/null ||
	die "qemu could not make the image with snapshots"
s1=$(snap_sha "$img" s1)
s2=$(snap_sha "$img" s2)
cur=$(raw_sha "$img" qcow2)

# read-only snapshots, by name and by ID
for spec in s1:$s1 s2:$s2 1:$s1 2:$s2; do
	name=${spec%%:*}
	want=${spec#*:}
	if dev=$(vd_attach -r --snapshot "$name" "$img"); then
		ok "attach -r --snapshot $name"
		check_eq "snapshot $name reads as qemu-img convert -l shows it" "$(sha_of "$dev")" "$want"
		check_fail "snapshot $name: the device is read-only" dd if=/dev/zero of="$dev" bs=4k count=1 oflag=direct
		check "detach snapshot $name" vd_detach "$dev"
	else
		fail "attach -r --snapshot $name"
	fi
done
check_fail "an unknown snapshot is refused" "$VDIMGCTL" attach -r --snapshot nosuch "$img"
if dev=$(vd_attach "$img"); then
	check_eq "the current state reads as qemu-img convert" "$(sha_of "$dev")" "$cur"
	check "detach the current state" vd_detach "$dev"
else
	fail "attach the image with snapshots"
fi

# writes on an image with snapshots: copy on write in the kernel
if dev=$(vd_attach "$img"); then
	if "$FIO" $job --filename="$dev" --do_verify=1 --output="$W/fio.out"; then
		ok "fio verify=crc32c on an image with two snapshots"
	else
		fail "fio verify=crc32c on an image with two snapshots" "$(fio_out)"
	fi
	check "blkdiscard 24M+2M on the image with snapshots" blkdiscard -o $((24 << 20)) -l $((2 << 20)) "$dev"
	sync
	sha=$(sha_of "$dev")
	check "detach after writing" vd_detach "$dev"
	check "qemu-img check after writing over snapshots" "$QEMU_IMG" check -q "$img"
	check_eq "snapshot s1 unchanged" "$(snap_sha "$img" s1)" "$s1"
	check_eq "snapshot s2 unchanged" "$(snap_sha "$img" s2)" "$s2"
	check_eq "qemu-img reads the current state as the device did" "$(raw_sha "$img" qcow2)" "$sha"
	if dev=$(vd_attach -r "$img"); then
		if "$FIO" $job --filename="$dev" --verify_only=1 --output="$W/fio.out"; then
			ok "fio verify_only after re-attach"
		else
			fail "fio verify_only after re-attach" "$(fio_out)"
		fi
		check "detach after verify_only" vd_detach "$dev"
	else
		fail "re-attach the image with snapshots"
	fi
else
	fail "attach the image with snapshots read-write"
fi

# external data files
for raw in off on; do
	t="data_file_raw=$raw"
	d=$W/df-$raw.qcow2 data=$W/df-$raw.data
	rm -f "$d" "$data"
	if ! "$QEMU_IMG" create -q -f qcow2 -o "data_file=$data,data_file_raw=$raw" "$d" 48M ||
		! "$QEMU_IO" -f qcow2 -c 'write -P 0x41 0 1m' "$d" >/dev/null; then
		fail "$t: qemu-img create"
		continue
	fi
	dev=$(vd_attach "$d") || { fail "$t: attach read-write"; continue; }
	if "$FIO" $job --filename="$dev" --do_verify=1 --output="$W/fio.out"; then
		ok "$t: fio verify=crc32c"
	else
		fail "$t: fio verify=crc32c" "$(fio_out)"
	fi
	sync
	sha=$(sha_of "$dev")
	check "$t: detach" vd_detach "$dev"
	check "$t: qemu-img check" "$QEMU_IMG" check -q "$d"
	check_eq "$t: qemu-img reads what the device held" "$(raw_sha "$d" qcow2)" "$sha"
	[ "$raw" = on ] && check_eq "$t: the data file alone reads as the disk" "$(sha_of "$data")" "$sha"
	if dev=$(vd_attach -r "$d"); then
		if "$FIO" $job --filename="$dev" --verify_only=1 --output="$W/fio.out"; then
			ok "$t: fio verify_only after re-attach"
		else
			fail "$t: fio verify_only after re-attach" "$(fio_out)"
		fi
		check "$t: detach after verify_only" vd_detach "$dev"
	else
		fail "$t: re-attach read-only"
	fi
	mv "$data" "$data.moved"
	check_fail "$t: attach without its data file fails" "$VDIMGCTL" attach -r "$d"
	mv "$data.moved" "$data"
	rm -f "$d" "$data"
done
rm -f "$img"
done_testing
