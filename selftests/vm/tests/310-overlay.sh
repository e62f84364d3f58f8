#!/bin/sh
# vdimgctl attach --overlay: VHD, VDI, VHDX and QCOW2 images attached under a temporary qcow2 overlay take fio verify writes while the image stays byte-identical (sha256) and no overlay file is left in TMPDIR; --overlay=FILE keeps FILE, and re-attaching FILE (its chain resolved) reads the writes back; list shows the chain
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" "$QEMU_IO" "$FIO"

W=$TEST_WORK
size=40M
job="--name=ov --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bsrange=512-64k
 --size=8M --offset=4M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=310"
fio_run() {
	"$FIO" "$@" --output="$W/fio.out" && return 0
	tail -n 30 "$W/fio.out"
	return 1
}
export TMPDIR=$W/tmp
mkdir -p "$TMPDIR"
# the first MiB the images hold (0x5a), to see it through the overlay
dd if=/dev/zero bs=1M count=1 status=none | tr '\000' '\132' >"$W/pat"

for f in vhd vdi vhdx qcow2; do
	t="$f --overlay"
	img=$W/img.$f
	rm -f "$img"
	case $f in
	qcow2) "$QEMU_IMG" create -q -f qcow2 "$img" "$size" ;;
	*) "$VDIMGCTL" create -t "$f" -s "$size" "$img" ;;
	esac || { fail "$t: create"; continue; }
	"$QEMU_IO" -f "$(qemu_fmt "$f")" -c "write -P 0x5a 0 6M" "$img" >/dev/null ||
		{ fail "$t: qemu-io fills the image"; continue; }
	sha=$(sha_of "$img")

	dev=$(vd_attach --overlay "$img") || { fail "$t: attach with a temporary overlay"; continue; }
	ok "$t: attach with a temporary overlay"
	check_eq "$t: depth 2 (image + overlay)" "$(vd_attr "$dev" depth)" 2
	check_eq "$t: the overlay is qcow2" "$(vd_attr "$dev" format)" qcow2
	check_eq "$t: read-write" "$(vd_attr "$dev" read_only)" 0
	check_eq "$t: the temporary overlay is already unlinked" "$(ls -A "$TMPDIR")" ""
	check_eq "$t: list shows the depth" "$("$VDIMGCTL" list -n -O DEPTH "$dev" | tr -d ' ')" 2
	check "$t: list --chain shows the image under the device" \
		sh -c "\"$VDIMGCTL\" list --chain -n -O NAME '$dev' | grep -q '$img'"
	check "$t: fio random writes, verified" fio_run $job --filename="$dev" --do_verify=1
	check "$t: detach" vd_detach "$dev"
	check_eq "$t: the image is byte-identical" "$(sha_of "$img")" "$sha"
	check_eq "$t: nothing left in TMPDIR" "$(ls -A "$TMPDIR")" ""

	# --overlay=FILE: kept, and a chain of its own afterwards
	ov=$W/ov-$f.qcow2
	rm -f "$ov"
	dev=$(vd_attach --overlay="$ov" "$img") || { fail "$t=FILE: attach"; continue; }
	check "$t=FILE: fio random writes, verified" fio_run $job --filename="$dev" --do_verify=1
	check "$t=FILE: detach" vd_detach "$dev"
	check "$t=FILE: FILE kept" test -s "$ov"
	check_eq "$t=FILE: the image is byte-identical" "$(sha_of "$img")" "$sha"
	dev=$(vd_attach "$ov") || { fail "$t=FILE: re-attach FILE alone"; continue; }
	check_eq "$t=FILE: its chain resolved (depth 2)" "$(vd_attr "$dev" depth)" 2
	check "$t=FILE: the writes read back (fio verify_only)" fio_run $job --filename="$dev" \
		--verify_only=1
	check "$t=FILE: the image's own data shows below" \
		sh -c "dd if='$dev' bs=1M count=1 status=none | cmp -s - '$W/pat'"
	check "$t=FILE: detach again" vd_detach "$dev"
	check_eq "$t=FILE: the image is still byte-identical" "$(sha_of "$img")" "$sha"
	rm -f "$img" "$ov"
done
done_testing
