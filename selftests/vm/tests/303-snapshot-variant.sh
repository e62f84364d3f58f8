#!/bin/sh
# vdimgctl snapshot --variant: a live snapshot whose child is a monolithicSparse VMDK (over a VMDK top, which otherwise gets a qcow2 child) and an explicit differencing VHD; the device reads A+B, the old top keeps A, qemu-img checks the VMDK child and reads the chain as A+B, the chain re-attaches from the child; seSparse (extent file) is refused and the device is unchanged
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG"

W=$TEST_WORK
size=16M
mkrandom "$W/rndA" 2 || die "cannot write $W/rndA"
mkrandom "$W/rndB" 1 || die "cannot write $W/rndB"

wr() { # wr DEV EXPECT dd-args...: one write to the device and to the raw expectation
	local dev=$1 exp=$2
	shift 2
	dd of="$dev" "$@" oflag=direct conv=notrunc status=none &&
		dd of="$exp" "$@" conv=notrunc status=none
}

for c in "vmdk monolithicSparse vmdk" "vhd differencing vhd"; do
	set -- $c
	f=$1 v=$2 cf=$3 t="$1 --variant $2"
	base=$W/base.$f snap=$W/snap.$cf exp=$W/expect.raw astate=$W/astate.raw
	rm -f "$base" "$snap" "$exp" "$astate"
	"$VDIMGCTL" create -t "$f" -s "$size" "$base" || { fail "$t: create base"; continue; }
	truncate -s "$size" "$exp"
	dev=$(vd_attach "$base") || { fail "$t: attach"; continue; }
	check "$t: pattern A" wr "$dev" "$exp" if="$W/rndA" bs=1M count=2 seek=3
	cp "$exp" "$astate"
	if [ "$f" = vmdk ]; then
		check_fail "$t: a seSparse child is refused" \
			"$VDIMGCTL" snapshot --variant seSparse "$dev" "$W/se.vmdk"
		check_eq "$t: depth unchanged after the refusal" "$(vd_attr "$dev" depth)" 1
		check "$t: no seSparse file left" test ! -e "$W/se.vmdk"
	fi
	check "$t: vdimgctl snapshot" "$VDIMGCTL" snapshot --variant "$v" "$dev" "$snap"
	check_eq "$t: depth 2" "$(vd_attr "$dev" depth)" 2
	check_eq "$t: format of the new top" "$(vd_attr "$dev" format)" "$cf"
	check "$t: pattern B" wr "$dev" "$exp" if="$W/rndB" bs=64K count=8 seek=40
	check "$t: device reads A+B" cmp "$dev" "$exp"
	check "$t: detach" vd_detach "$dev"
	check_eq "$t: the old top holds A" "$(raw_sha "$base" "$f")" "$(sha_of "$astate")"
	if [ "$f" = vmdk ]; then
		check "$t: qemu-img check of the child" "$QEMU_IMG" check -q -f vmdk "$snap"
		check "$t: qemu-img info: child of the base" sh -c \
			"'$QEMU_IMG' info '$snap' | grep -q 'create type: monolithicSparse'"
		check_eq "$t: qemu-img reads the chain as A+B" "$(raw_sha "$snap" vmdk)" \
			"$(sha_of "$exp")"
	fi
	dev=$(vd_attach "$snap") || { fail "$t: re-attach the chain"; continue; }
	check_eq "$t: re-attached depth" "$(vd_attr "$dev" depth)" 2
	check "$t: re-attached chain reads A+B" cmp "$dev" "$exp"
	check "$t: detach the chain" vd_detach "$dev"
	rm -f "$base" "$snap" "$exp" "$astate"
done
done_testing
