#!/bin/sh
# ext4 on a dynamic VHDX, on QCOW2 (vdimgctl- and qemu-img-made) and on QED: mkfs, files, unmount, detach, re-attach, e2fsck -fn clean, files read back; qemu-img check clean afterwards
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$MKFS_EXT4" "$E2FSCK" "$QEMU_IMG"
W=$TEST_WORK
mkrandom "$W/big" $(scaled 12) || die "cannot write $W/big"

# fs_cycle T FMT IMAGE
fs_cycle() {
	local t=$1 f=$2 img=$3 dev i want got
	dev=$(vd_attach "$img") || { fail "$t: attach"; return; }
	check "$t: mkfs.ext4" "$MKFS_EXT4" -q -F -E nodiscard "$dev"
	if ! mount_dev "$dev" "$W/mnt"; then
		fail "$t: mount"
		vd_detach "$dev"
		return
	fi
	cp "$W/big" "$W/mnt/big"
	mkdir -p "$W/mnt/d"
	i=0
	while [ $i -lt 100 ]; do
		echo "file $i of $t" >"$W/mnt/d/f$i"
		i=$((i + 1))
	done
	want=$(cd "$W/mnt" && find . -type f | sort | xargs sha256sum | sha256sum)
	umount_dev "$W/mnt" || fail "$t: umount"
	vd_detach "$dev" || fail "$t: detach"
	dev=$(vd_attach "$img") || { fail "$t: re-attach"; return; }
	check "$t: e2fsck -fn clean after re-attach" "$E2FSCK" -fn "$dev"
	if mount_dev "$dev" "$W/mnt" ro; then
		got=$(cd "$W/mnt" && find . -type f | sort | xargs sha256sum | sha256sum)
		check_eq "$t: files read back after re-attach" "$got" "$want"
		umount_dev "$W/mnt" || fail "$t: umount"
	else
		fail "$t: mount after re-attach"
	fi
	vd_detach "$dev" || fail "$t: detach"
	check "$t: qemu-img check clean" "$QEMU_IMG" check -f "$f" "$img"
	rm -f "$img"
}

"$VDIMGCTL" create -t vhdx -s 128M "$W/fs.vhdx" && fs_cycle "vhdx dynamic (vdimgctl)" vhdx "$W/fs.vhdx" ||
	fail "vhdx dynamic (vdimgctl): create"
"$VDIMGCTL" create -t qcow2 -s 128M "$W/fs.qcow2" && fs_cycle "qcow2 (vdimgctl)" qcow2 "$W/fs.qcow2" ||
	fail "qcow2 (vdimgctl): create"
"$QEMU_IMG" create -q -f qcow2 "$W/fs2.qcow2" 128M && fs_cycle "qcow2 (qemu-img)" qcow2 "$W/fs2.qcow2" ||
	fail "qcow2 (qemu-img): create"
"$VDIMGCTL" create -t qed -s 128M "$W/fs.qed" && fs_cycle "qed (vdimgctl)" qed "$W/fs.qed" ||
	fail "qed (vdimgctl): create"
done_testing
