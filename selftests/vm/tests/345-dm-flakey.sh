#!/bin/sh
# Faults under the host file system: the ext4 holding an image sits on dm-flakey; 4 MiB are written through vdimg and fsynced, then the table is switched to error_writes (and, on a second pass, drop_writes): a synced write through vdimg fails with EIO within 60 s (error_writes), nothing hangs, detach works; with the fault cleared and the host ext4 remounted, qemu-img check is clean and the data flushed before the fault reads back through a re-attach
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$MKFS_EXT4" "$QEMU_IMG" /usr/sbin/dmsetup
require_module dm-flakey
DMSETUP=/usr/sbin/dmsetup
# CI time: one format in CI (about 15 s); LW_FULL=1 (selftests/vm/extra-logwrites/346-dm-flakey-formats)
# every writable format
FORMATS=qcow2
[ "${LW_FULL:-0}" = 1 ] && FORMATS="raw vhd vdi vhdx qcow2 qed vmdk parallels"
W=/tmp/fl.$$
mkdir -p "$W" || die "mkdir $W"
DM=
trap 'lib_cleanup; [ -n "$DM" ] && "$DMSETUP" remove --noudevsync "$DM"; rm -rf "$W"' EXIT
truncate -s 128M "$W/data.img" || die "truncate"
loop=$(loop_attach "$W/data.img") || die "losetup"
sectors=$((128 * 2048))
DM=fl$$
table() { # table [FEATURE]: all up, or all down with FEATURE (error_writes or drop_writes)
	local t="0 $sectors flakey $loop 0 3600 0"
	[ -n "${1:-}" ] && t="0 $sectors flakey $loop 0 0 3600 1 $1"
	"$DMSETUP" suspend --noudevsync "$DM" && "$DMSETUP" reload "$DM" --table "$t" &&
		"$DMSETUP" resume --noudevsync "$DM"
}
"$DMSETUP" create --noudevsync "$DM" --table "0 $sectors flakey $loop 0 3600 0" || die "dmsetup create"
"$DMSETUP" mknodes "$DM" 2>/dev/null
dm=/dev/mapper/$DM
wait_for_dev "$dm" || die "$dm did not appear"
"$MKFS_EXT4" -q -F -E nodiscard "$dm" || die "mkfs"
mkrandom "$W/pat" 4 || die "pattern"
want=$(sha_of "$W/pat")

for feature in error_writes drop_writes; do
	for f in $FORMATS; do
		t="$f, $feature"
		mount_dev "$dm" "$W/host" || { fail "$t: mount the host ext4"; continue; }
		img=$W/host/img.$f
		rm -f "$img"
		if [ "$f" = raw ]; then
			truncate -s 32M "$img"
		else
			"$VDIMGCTL" create -t "$f" -s 32M "$img" >/dev/null
		fi || { fail "$t: create"; umount_dev "$W/host"; continue; }
		dev=$(vd_attach -t "$f" "$img") || { fail "$t: attach"; umount_dev "$W/host"; continue; }
		check "$t: 4 MiB written and fsynced before the fault" \
			dd if="$W/pat" of="$dev" bs=1M conv=fsync status=none
		check "$t: fault on ($feature)" table "$feature"
		t0=$(date +%s)
		if [ "$feature" = error_writes ]; then
			check_fail "$t: a synced write at 8 MiB fails" \
				timeout 60 /usr/bin/dd if="$W/pat" of="$dev" bs=1M seek=8 conv=fsync oflag=direct \
				status=none
			check "$t: ... within 60 s" test $(($(date +%s) - t0)) -lt 60
		else
			# dropped writes look like success to everyone: only that nothing hangs
			check "$t: a synced write at 8 MiB returns (dropped below)" \
				timeout 60 /usr/bin/dd if="$W/pat" of="$dev" bs=1M seek=8 conv=fsync oflag=direct \
				status=none
		fi
		if [ "$feature" = error_writes ]; then
			# the final flush fails: detach says so, and the device goes all the same
			check_fail "$t: detach under the fault reports the failed flush" \
				timeout 60 "$VDIMGCTL" detach "$dev"
		else
			check "$t: detach under the fault" timeout 60 "$VDIMGCTL" detach "$dev"
		fi
		VD_DEVS=$(list_remove "$dev" $VD_DEVS)
		check "$t: the device is gone after detach" wait_gone "$dev"
		check "$t: umount the host ext4 under the fault" timeout 60 umount "$W/host"
		MOUNTS=$(list_remove "$W/host" $MOUNTS)
		check "$t: fault off" table
		mount_dev "$dm" "$W/host" || { fail "$t: remount the host ext4"; continue; }
		case $f in
		raw|vhd) check "$t: qemu-img info opens the image" "$QEMU_IMG" info -f "$(qemu_fmt "$f")" "$img" ;;
		*) check "$t: qemu-img check clean" "$QEMU_IMG" check -f "$f" "$img" ;;
		esac
		if dev=$(vd_attach -r -t "$f" "$img"); then
			check_eq "$t: the data flushed before the fault reads back" \
				"$(dd if="$dev" bs=1M count=4 iflag=direct status=none | sha256sum | cut -d' ' -f1)" \
				"$want"
			vd_detach "$dev" || fail "$t: detach"
		else
			fail "$t: re-attach read-only"
		fi
		rm -f "$img"
		umount_dev "$W/host" || fail "$t: umount"
	done
done
done_testing
