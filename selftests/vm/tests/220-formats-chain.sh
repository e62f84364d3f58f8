#!/bin/sh
# Differencing chains in the kernel: VHD/VDI/VHDX/QED children made by vdimgctl, QCOW2 children made by qemu-img -b, QED children (qemu-img -b) over a raw and a VDI base, and a mixed VDI <- VHD <- QCOW2 chain; attach resolves the parents, writes never reach them, the device equals a raw copy that received the same writes, before and after re-attach (full-block zero writes stay zero: VirtualBox gh-850)
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" "$QEMU_IO"

W=$TEST_WORK
size=40M
mkrandom "$W/rnd" 1 || die "cannot write $W/rnd"

# fill_base FILE QEMU_FMT: data in some blocks, the rest unallocated
fill_base() {
	"$QEMU_IO" -f "$2" \
		-c "write -P 0x11 0 3145728" \
		-c "write -P 0x96 16776704 70144" \
		-c "write -P 0xc3 32505856 3145728" \
		"$1" >/dev/null
}

# writes SET DEV EXPECT: the same writes to the device and to the raw expectation
wr() { # wr DEV EXPECT dd-args...: one write, to both
	local dev=$1 exp=$2
	shift 2
	dd of="$dev" "$@" oflag=direct conv=notrunc,fsync status=none &&
		dd of="$exp" "$@" conv=notrunc status=none
}
writes() {
	case $1 in
	a)  # 1 MiB across the 2 MiB block boundary; 5 KiB at sector 7 (partial block over the parent's
	    # data); 64 KiB across 32 MiB; zeros over the parent's 0x96; a full zero 1 MiB block over 0xc3
		wr "$2" "$3" if="$W/rnd" bs=512 seek=3072 count=2048 &&
		wr "$2" "$3" if="$W/rnd" bs=512 seek=7 count=10 &&
		wr "$2" "$3" if="$W/rnd" bs=512 seek=65472 count=128 &&
		wr "$2" "$3" if=/dev/zero bs=512 seek=32768 count=64 &&
		wr "$2" "$3" if=/dev/zero bs=1M seek=32 count=1 ;;
	b)  # a second layer's writes: over the first layer's data, and fresh ranges
		wr "$2" "$3" if="$W/rnd" bs=4096 skip=17 seek=400 count=100 &&
		wr "$2" "$3" if="$W/rnd" bs=512 skip=3 seek=20 count=3 &&
		wr "$2" "$3" if="$W/rnd" bs=1M seek=38 count=1 ;;
	esac
}

# chain_check T TOP DEPTH EXPECT: attach TOP alone (vdimgctl resolves the parents), checks
chain_check() {
	local t=$1 dev
	dev=$(vd_attach "$2") || { fail "$t: attach after re-open"; return 1; }
	check_eq "$t: depth after re-attach" "$(vd_attr "$dev" depth)" "$3"
	check "$t: device = expected after re-attach" cmp "$dev" "$4"
	vd_detach "$dev" || fail "$t: detach"
}

for f in vhd vdi vhdx qcow2 qed; do
	t="$f chain"
	qf=$(qemu_fmt "$f")
	base=$W/base.$f child=$W/child.$f exp=$W/expect.raw
	rm -f "$base" "$child" "$exp"
	case $f in
	qcow2) "$QEMU_IMG" create -q -f qcow2 "$base" "$size" ;;
	*) "$VDIMGCTL" create -t "$f" -s "$size" "$base" ;;
	esac || { fail "$t: create base"; continue; }
	fill_base "$base" "$qf" || { fail "$t: qemu-io fills the base"; continue; }
	"$QEMU_IMG" convert -f "$qf" -O raw "$base" "$exp" || { fail "$t: raw copy of the base"; continue; }
	case $f in
	qcow2) "$QEMU_IMG" create -q -f qcow2 -b "$base" -F qcow2 "$child" ;;
	*) "$VDIMGCTL" create -t "$f" --parent "$base" "$child" ;;
	esac || { fail "$t: create child"; continue; }
	basesha=$(sha_of "$base")

	dev=$(vd_attach "$child") || { fail "$t: vdimgctl attach CHILD resolves the parent"; continue; }
	ok "$t: vdimgctl attach CHILD resolves the parent"
	check_eq "$t: depth" "$(vd_attr "$dev" depth)" 2
	check_eq "$t: chain (base first)" "$(vd_attr "$dev" chain | tr '\n' ' ')" "$base $child "
	check "$t: device reads the base through the empty child" cmp "$dev" "$exp"
	check "$t: writes through the device" writes a "$dev" "$exp"
	check "$t: device = raw copy with the same writes" cmp "$dev" "$exp"
	vd_detach "$dev" || fail "$t: detach"
	check_eq "$t: base file unchanged" "$(sha_of "$base")" "$basesha"
	chain_check "$t" "$child" 2 "$exp"
	if [ "$f" = qcow2 ] || [ "$f" = qed ]; then
		check "$t: qemu-img check of the child clean" "$QEMU_IMG" check -f "$f" "$child"
		check_eq "$t: qemu-img reads the chain as the device did" "$(raw_sha "$child" "$f")" \
			"$(sha_of "$exp")"
	fi
	rm -f "$base" "$child"
done

# QED children made by qemu-img over a raw base (backing format raw: never probed) and a VDI base
for bf in raw vdi; do
	t="qed over $bf"
	base=$W/qbase.$bf child=$W/qchild.qed exp=$W/expect.raw
	rm -f "$base" "$child" "$exp"
	"$QEMU_IMG" create -q -f "$bf" "$base" "$size" || { fail "$t: create base"; continue; }
	fill_base "$base" "$bf" || { fail "$t: qemu-io fills the base"; continue; }
	"$QEMU_IMG" convert -f "$bf" -O raw "$base" "$exp" || { fail "$t: raw copy of the base"; continue; }
	"$QEMU_IMG" create -q -f qed -b "$base" -F "$bf" "$child" || { fail "$t: create child"; continue; }
	basesha=$(sha_of "$base")
	dev=$(vd_attach "$child") || { fail "$t: vdimgctl attach CHILD resolves the parent"; continue; }
	check_eq "$t: depth" "$(vd_attr "$dev" depth)" 2
	check "$t: device reads the base through the empty child" cmp "$dev" "$exp"
	check "$t: writes through the device" writes a "$dev" "$exp"
	check "$t: device = raw copy with the same writes" cmp "$dev" "$exp"
	vd_detach "$dev" || fail "$t: detach"
	check_eq "$t: base file unchanged" "$(sha_of "$base")" "$basesha"
	chain_check "$t" "$child" 2 "$exp"
	check "$t: qemu-img check of the child clean" "$QEMU_IMG" check -f qed "$child"
	check_eq "$t: qemu-img reads the chain as the device did" "$(raw_sha "$child" qed)" \
		"$(sha_of "$exp")"
	rm -f "$base" "$child"
done

# mixed: VDI base (qemu-img) <- VHD (vdimgctl) <- QCOW2 (vdimgctl)
t="mixed chain"
base=$W/mbase.vdi mid=$W/mmid.vhd top=$W/mtop.qcow2 exp=$W/mexpect.raw
if "$QEMU_IMG" create -q -f vdi "$base" "$size" && fill_base "$base" vdi &&
	"$QEMU_IMG" convert -f vdi -O raw "$base" "$exp" &&
	"$VDIMGCTL" create -t vhd --parent "$base" "$mid"; then
	basesha=$(sha_of "$base")
	dev=$(vd_attach "$mid") || fail "$t: attach VHD child of a VDI"
	if [ -n "$dev" ]; then
		check_eq "$t: VDI <- VHD depth" "$(vd_attr "$dev" depth)" 2
		check "$t: VDI <- VHD reads the base" cmp "$dev" "$exp"
		check "$t: writes to the VHD layer" writes a "$dev" "$exp"
		check "$t: VDI <- VHD = expected" cmp "$dev" "$exp"
		vd_detach "$dev" || fail "$t: detach"
	fi
	check_eq "$t: VDI base unchanged" "$(sha_of "$base")" "$basesha"
	midsha=$(sha_of "$mid")
	if "$VDIMGCTL" create -t qcow2 --parent "$mid" "$top"; then
		dev=$(vd_attach "$top") || fail "$t: attach QCOW2 child of the VHD"
		if [ -n "$dev" ]; then
			check_eq "$t: VDI <- VHD <- QCOW2 depth" "$(vd_attr "$dev" depth)" 3
			check_eq "$t: formats" "$(vd_attr "$dev" format)" qcow2
			check "$t: three layers read as the two" cmp "$dev" "$exp"
			check "$t: writes to the QCOW2 layer (COW fill from VHD and VDI)" writes b "$dev" "$exp"
			check "$t: three layers = expected" cmp "$dev" "$exp"
			vd_detach "$dev" || fail "$t: detach"
		fi
		check_eq "$t: VDI base unchanged" "$(sha_of "$base")" "$basesha"
		check_eq "$t: VHD middle unchanged" "$(sha_of "$mid")" "$midsha"
		chain_check "$t" "$top" 3 "$exp"
	else
		fail "$t: vdimgctl create -t qcow2 --parent VHD"
	fi
else
	fail "$t: setup of the VDI base and the VHD child"
fi
done_testing
