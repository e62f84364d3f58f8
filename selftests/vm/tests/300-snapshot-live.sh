#!/bin/sh
# Live snapshots (vdimgctl snapshot, VDIMG_CTL_SNAPSHOT) on VHD, VDI, VHDX, QCOW2 and QED: pattern A, snapshot, pattern B; the device reads A+B, sysfs depth/chain follow, the old top keeps exactly the A state (qemu-img and a read-only attach of it alone), the re-attached chain reads A+B, qemu-img check is clean where qemu can check; a wrong-parent file is refused with ESTALE and the device is unchanged
# timeout: 900
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG"

W=$TEST_WORK
size=32M
mkrandom "$W/rndA" 4 || die "cannot write $W/rndA"
mkrandom "$W/rndB" 2 || die "cannot write $W/rndB"

# wr DEV EXPECT dd-args...: one write to the device and to the raw expectation
wr() {
	local dev=$1 exp=$2
	shift 2
	dd of="$dev" "$@" oflag=direct conv=notrunc status=none &&
		dd of="$exp" "$@" conv=notrunc status=none
}
pattern_a() { # 4 MiB at 0, 3 MiB across 16 MiB, 512 bytes at the last sector
	wr "$1" "$2" if="$W/rndA" bs=1M count=4 &&
		wr "$1" "$2" if="$W/rndA" bs=1M skip=1 seek=15 count=3 &&
		wr "$1" "$2" if="$W/rndA" bs=512 skip=9 seek=65535 count=1
}
pattern_b() { # over A (partly), into fresh space, a small unaligned run inside A's second range
	wr "$1" "$2" if="$W/rndB" bs=1M seek=2 count=1 &&
		wr "$1" "$2" if="$W/rndB" bs=64K skip=5 seek=150 count=8 &&
		wr "$1" "$2" if="$W/rndB" bs=512 skip=77 seek=32771 count=9
}

mkimg() { # mkimg F FILE: an empty dynamic image of $size
	case $1 in
	qed) "$QEMU_IMG" create -q -f qed "$2" "$size" ;;
	*) "$VDIMGCTL" create -t "$1" -s "$size" "$2" ;;
	esac
}

for f in vhd vdi vhdx qcow2 qed; do
	t="$f"
	qf=$(qemu_fmt "$f")
	base=$W/base.$f snap=$W/snap.$f exp=$W/expect.raw astate=$W/astate.raw
	rm -f "$base" "$snap" "$exp" "$astate"
	mkimg "$f" "$base" || { fail "$t: create base"; continue; }
	truncate -s "$size" "$exp"
	dev=$(vd_attach "$base") || { fail "$t: attach"; continue; }
	check "$t: pattern A" pattern_a "$dev" "$exp"
	cp "$exp" "$astate"
	check "$t: vdimgctl snapshot" "$VDIMGCTL" snapshot "$dev" "$snap"
	check_eq "$t: depth 2 after the snapshot" "$(vd_attr "$dev" depth)" 2
	check_eq "$t: chain base, snapshot" "$(vd_attr "$dev" chain | tr '\n' ' ')" "$base $snap "
	check_eq "$t: backing_file is the snapshot" "$(vd_attr "$dev" backing_file)" "$snap"
	check_eq "$t: format of the new top" "$(vd_attr "$dev" format)" "$f"
	check "$t: device reads A after the switch" cmp "$dev" "$astate"
	check "$t: pattern B" pattern_b "$dev" "$exp"
	check "$t: device reads A+B" cmp "$dev" "$exp"
	sync
	basesha=$(sha_of "$base")
	check "$t: more writes leave the old top alone" \
		wr "$dev" "$exp" if="$W/rndB" bs=4K skip=3 seek=100 count=16
	check_eq "$t: old top file unchanged by writes after the snapshot" "$(sha_of "$base")" "$basesha"
	check "$t: detach" vd_detach "$dev"

	# the old top alone holds exactly the A state
	rm -f "$W/q.raw"
	if "$QEMU_IMG" convert -f "$qf" -O raw "$base" "$W/q.raw"; then
		check "$t: qemu-img reads the old top as A" cmp "$W/q.raw" "$astate"
	else
		fail "$t: qemu-img convert of the old top"
	fi
	dev=$(vd_attach -r "$base") || fail "$t: attach the old top alone read-only"
	if [ -n "$dev" ]; then
		check "$t: the old top alone reads A" cmp "$dev" "$astate"
		vd_detach "$dev" || fail "$t: detach the old top"
	fi
	case $f in
	vhd) ;;
	*) check "$t: qemu-img check of the old top" "$QEMU_IMG" check -q -f "$qf" "$base" ;;
	esac
	case $f in
	qcow2|qed)
		check "$t: qemu-img check of the snapshot" "$QEMU_IMG" check -q -f "$qf" "$snap"
		rm -f "$W/q.raw"
		"$QEMU_IMG" convert -f "$qf" -O raw "$snap" "$W/q.raw" &&
			check "$t: qemu-img reads the chain as A+B" cmp "$W/q.raw" "$exp" ||
			fail "$t: qemu-img convert of the chain" ;;
	esac

	# the chain re-attached from the snapshot file (vdimgctl resolves the parent)
	dev=$(vd_attach "$snap") || { fail "$t: re-attach the chain"; continue; }
	check_eq "$t: re-attached depth" "$(vd_attr "$dev" depth)" 2
	check "$t: re-attached chain reads A+B" cmp "$dev" "$exp"

	# a snapshot file made for another image: ESTALE, and the device is unchanged
	case $f in
	vhd|vdi|vhdx)
		other=$W/other.$f wrong=$W/wrong.$f
		rm -f "$other" "$wrong"
		mkimg "$f" "$other" && "$VDIMGCTL" create -t "$f" --parent "$other" "$wrong" ||
			fail "$t: create a child of another image"
		out=$(/vmtest/abi_test snapshot "$dev" "$wrong" 2>&1)
		check_eq "$t: a child of another image is refused" "$out" "errno ESTALE"
		check_eq "$t: depth unchanged after the refusal" "$(vd_attr "$dev" depth)" 2
		check "$t: device unchanged after the refusal" cmp "$dev" "$exp"
		rm -f "$other" "$wrong" ;;
	esac
	check "$t: detach the chain" vd_detach "$dev"
	rm -f "$base" "$snap" "$W/q.raw"
done

# a raw top cannot have a parent: the snapshot defaults to qcow2 (backing format raw)
t="raw"
base=$W/base.raw snap=$W/snap-of-raw.qcow2 exp=$W/expect.raw
rm -f "$base" "$snap" "$exp"
truncate -s "$size" "$base" "$exp"
dev=$(vd_attach -t raw "$base") || die "cannot attach a raw file"
check "$t: pattern A" pattern_a "$dev" "$exp"
cp "$exp" "$W/astate.raw"
check "$t: vdimgctl snapshot of a raw top" "$VDIMGCTL" snapshot "$dev" "$snap"
check_eq "$t: the snapshot is qcow2" "$(vd_attr "$dev" format)" qcow2
check "$t: pattern B" pattern_b "$dev" "$exp"
check "$t: device reads A+B" cmp "$dev" "$exp"
check "$t: detach" vd_detach "$dev"
check "$t: the raw file holds A" cmp "$base" "$W/astate.raw"
check "$t: qemu-img check of the snapshot" "$QEMU_IMG" check -q -f qcow2 "$snap"
check_eq "$t: qemu-img reads the chain as A+B" "$(raw_sha "$snap" qcow2)" "$(sha_of "$exp")"
rm -f "$base" "$snap" "$W/astate.raw"
done_testing
