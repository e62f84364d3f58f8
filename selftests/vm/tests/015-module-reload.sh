#!/bin/sh
# Module unload and reload: rmmod with nothing attached; rmmod refused while a device is open; rmmod with an attached, closed QCOW2 device detaches it with its writes and metadata in the file (qemu-img check clean, same content); the boot-only parameters image= and timeout= load without an "unknown parameter" notice
# timeout: 180
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG"

W=$TEST_WORK

control_back() { # control_back: wait until /dev/vdimg-control exists again
	local i=0
	while [ ! -e /dev/vdimg-control ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e /dev/vdimg-control ]
}

unknown_notices() {
	dmesg | grep -c "vdimg: unknown parameter"
}

# nothing attached: the module goes and comes back
"$VDIMGCTL" detach -a >/dev/null 2>&1
check "rmmod with nothing attached" modprobe -r vdimg
check "the control device is gone" test ! -e /dev/vdimg-control
before=$(unknown_notices)
check "modprobe vdimg with the boot parameters image= and timeout=" \
	modprobe vdimg "image=UUID=0bad0bad-0000-4000-8000-000000000000:/root.vhdx" timeout=5
check "the control device is back" control_back
check_eq "no unknown-parameter notice" "$(unknown_notices)" "$before"

# an attached, closed device does not pin the module: unloading detaches it and writes what the
# backend still holds
img=$W/reload.qcow2
"$VDIMGCTL" create -t qcow2 -s 16M "$img" || die "cannot create $img"
mkrandom "$W/data" 1 || die "cannot write $W/data"
dev=$(vd_attach "$img") || die "attach $img failed"
check "write 1 MiB at 3 MiB (direct I/O, no flush)" dd if="$W/data" of="$dev" bs=64k seek=48 \
	oflag=direct status=none

# an open device pins it
exec 3<"$dev"
check_fail "rmmod refused while $dev is open" modprobe -r vdimg
check "the device is still there" test -b "$dev"
exec 3<&-

check "rmmod with $dev attached and closed" modprobe -r vdimg
VD_DEVS=$(list_remove "$dev" $VD_DEVS)
check "the device is gone" test ! -e "/sys/block/${dev##*/}"
check "qemu-img check: the image is clean" "$QEMU_IMG" check -q -f qcow2 "$img"
"$QEMU_IMG" convert -f qcow2 -O raw "$img" "$W/out.raw" || fail "qemu-img convert"
check "the 1 MiB write is in the image" cmp -n 1048576 "$W/data" "$W/out.raw" 0 3145728
check "zeros before it" cmp -n 3145728 "$W/out.raw" /dev/zero
check "zeros after it" cmp -n 12582912 "$W/out.raw" /dev/zero 4194304 0

check "modprobe vdimg again" modprobe vdimg
check "the control device is back again" control_back
done_testing
