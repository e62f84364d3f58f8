#!/bin/sh
# Fixed VHD/VDI/VHDX attach read-write, write, re-attach, read back
# timeout: 300
. /vmtest/lib.sh
require_vdimg
mkrandom "$TEST_WORK/data" 4
for f in vhd vdi vhdx; do
	img=$TEST_WORK/fixed.$f
	check "$f: create fixed (vdimgctl)" "$VDIMGCTL" create -t $f --variant fixed -s 32M "$img"
	dev=$(vd_attach "$img") || { fail "$f: attach rw"; continue; }
	check_eq "$f: variant" "$(vd_attr $dev variant)" fixed
	check "$f: write" dd if="$TEST_WORK/data" of="$dev" bs=1M seek=3 conv=fsync status=none
	check "$f: detach" vd_detach "$dev"
	dev=$(vd_attach -r "$img") || { fail "$f: re-attach"; continue; }
	check_eq "$f: data back" "$(dd if=$dev bs=1M skip=3 count=4 status=none | sha256sum | cut -d' ' -f1)" "$(sha_of $TEST_WORK/data)"
	check "$f: detach 2" vd_detach "$dev"
	[ $f = vhd ] || check "$f: qemu-img check" "$QEMU_IMG" check -q -f $(qemu_fmt $f) "$img"
	rm -f "$img"
done
done_testing
