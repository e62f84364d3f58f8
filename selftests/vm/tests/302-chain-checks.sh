#!/bin/sh
# Chain checks at attach: one file twice in a chain is refused (ELOOP, a message naming both positions), a VHD child over a VHD parent of another size is refused (EINVAL, both sizes named), and a QCOW2 child over a smaller raw or QCOW2 parent reads the parent's data, then zeros past its end, exactly as qemu reads the same chain (also after a write into the cluster that straddles the parent's end)
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" "$QEMU_IO" /vmtest/abi_test

W=$TEST_WORK
ABI=/vmtest/abi_test

# kmsg_has TEXT: the kernel log of this test holds TEXT
kmsg_has() {
	dmesg | tail -n 40 | grep -q -- "$1"
}

# --- the same file twice
raw=$W/same.raw
mkrandom "$raw" 1
check_eq "raw file twice: ELOOP" "$($ABI chain "$raw" "$raw")" "errno ELOOP"
if kmsg_has "a chain cannot contain the same file twice" && kmsg_has "(layer 0) and"; then
	ok "raw file twice: the message names both positions"
else
	fail "raw file twice: the message names both positions" "$(dmesg | tail -n 5)"
fi
vbase=$W/loop.vhd vchild=$W/loop-child.vhd
"$VDIMGCTL" create -t vhd -s 16M "$vbase" && "$VDIMGCTL" create -t vhd --parent "$vbase" "$vchild" ||
	die "cannot create VHD images"
check_eq "VHD chain base, child, base: ELOOP" "$($ABI chain "$vbase" "$vchild" "$vbase")" "errno ELOOP"
check_eq "VHD chain child over itself: ELOOP" "$($ABI chain "$vbase" "$vchild" "$vchild")" "errno ELOOP"
check_eq "the VHD chain itself attaches" "$($ABI chain "$vbase" "$vchild")" "attached 2"
check_fail "vdimgctl attach --chain with the top also below it" \
	"$VDIMGCTL" attach -r --chain "$vbase,$vchild" "$vchild"

# --- VHD child over a VHD parent of another size
other=$W/other.vhd
"$VDIMGCTL" create -t vhd -s 32M "$other" || die "cannot create $other"
check_eq "VHD child over a VHD parent of another size: EINVAL" "$($ABI chain "$other" "$vchild")" \
	"errno EINVAL"
if kmsg_has "must have its parent's size: it has 16777216 bytes" && kmsg_has "has 33554432"; then
	ok "size mismatch: the message gives both sizes"
else
	fail "size mismatch: the message gives both sizes" "$(dmesg | tail -n 5)"
fi
check_fail "vdimgctl attach --force of the VHD child over the larger parent" \
	"$VDIMGCTL" attach -r --force --chain "$other" "$vchild"
rm -f "$vbase" "$vchild" "$other"

# --- QCOW2 child over a smaller parent (qemu semantics: zeros past the parent's end)
# the parent ends 4 KiB into a 64 KiB cluster of the child
psize=$((8 * 1048576 + 4096))
for pf in raw qcow2; do
	t="qcow2 over a smaller $pf"
	parent=$W/small.$pf child=$W/big.qcow2 exp=$W/exp.raw
	rm -f "$parent" "$child" "$exp"
	if [ "$pf" = raw ]; then
		head -c "$psize" /dev/urandom >"$parent"
	else
		"$QEMU_IMG" create -q -f qcow2 "$parent" "$psize" &&
			"$QEMU_IO" -f qcow2 -c "write -P 0x5a 0 $psize" "$parent" >/dev/null
	fi || { fail "$t: parent"; continue; }
	"$QEMU_IMG" create -q -f qcow2 -b "$parent" -F "$pf" "$child" 16M || { fail "$t: child"; continue; }
	"$QEMU_IO" -f qcow2 -c "write -P 0xa1 1048576 65536" "$child" >/dev/null || fail "$t: qemu-io write"
	"$QEMU_IMG" convert -f qcow2 -O raw "$child" "$exp" || { fail "$t: qemu-img convert"; continue; }
	check_eq "$t: qemu reads zeros past the parent's end" \
		"$(tail -c +$((psize + 1)) "$exp" | sha256sum | cut -d' ' -f1)" \
		"$(pattern_sha 0 $((16 * 1048576 - psize)))"
	dev=$(vd_attach "$child") || { fail "$t: attach"; continue; }
	check_eq "$t: depth" "$(vd_attr "$dev" depth)" 2
	check "$t: device = qemu's view of the chain" cmp "$dev" "$exp"
	# one write into the cluster the parent's end cuts: the fill takes the parent's 4 KiB, then zeros
	dd if=/dev/urandom of="$W/w" bs=512 count=8 status=none
	dd if="$W/w" of="$dev" bs=512 seek=$(((psize + 32768) / 512)) oflag=direct conv=notrunc status=none &&
		dd if="$W/w" of="$exp" bs=512 seek=$(((psize + 32768) / 512)) conv=notrunc status=none ||
		fail "$t: write across the parent's end"
	check "$t: device = expected after the write" cmp "$dev" "$exp"
	check "$t: detach" vd_detach "$dev"
	check "$t: qemu-img check of the child" "$QEMU_IMG" check -q -f qcow2 "$child"
	check_eq "$t: qemu reads the written chain as the device did" "$(raw_sha "$child" qcow2)" \
		"$(sha_of "$exp")"
	rm -f "$parent" "$child" "$exp"
done
done_testing
