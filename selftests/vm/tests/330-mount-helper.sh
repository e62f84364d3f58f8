#!/bin/sh
# mount -t vdimg (util-linux mount running /sbin/mount.vdimg): the largest partition by default, partition=N, a whole-disk file system, ro, overlay, an fstab line; umount detaches the device (autoclear); a failed mount leaves no device; vdimgtab attach/detach record and drop the name
# timeout: 300
. /vmtest/lib.sh
require_vdimg
UMOUNT=/usr/bin/umount
MOUNT=/usr/bin/mount
require_cmd "$MOUNT" "$UMOUNT" "$MKFS_EXT4" "$SFDISK" /sbin/mount.vdimg /usr/lib/vdimg/vdimgtab

W=$TEST_WORK
mnt=$W/mnt
mkdir -p "$mnt"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# the temporary overlay goes to TMPDIR (the initramfs has no /var/tmp)
export TMPDIR=$W/tmp
mkdir -p "$TMPDIR"

ndevs() { ls -d /sys/block/vdimg[0-9]* 2>/dev/null | wc -l; }
# src DIR: the device mounted on DIR
src() { awk -v m="$1" '$2 == m {print $1}' /proc/mounts; }
# umount_gone DIR DEV: unmount, then the autoclear detach removes DEV
umount_gone() {
	"$UMOUNT" "$1" || return 1
	wait_gone "$2"
}

# a VHDX with an MBR: partition 1 (8 MiB) and partition 2 (about 40 MiB), ext4 each with a marker
img=$W/parts.vhdx
"$VDIMGCTL" create -t vhdx -s 64M "$img" || die "create vhdx"
dev=$(vd_attach -P "$img") || die "attach"
printf 'start=2048, size=16384, type=83\nstart=18432, type=83\n' | "$SFDISK" -q "$dev" >/dev/null ||
	die "sfdisk"
wait_for_dev "${dev}p2" || die "${dev}p2 did not appear"
for p in 1 2; do
	"$MKFS_EXT4" -q -F -L "part$p" "${dev}p$p" || die "mkfs p$p"
	mount_dev "${dev}p$p" "$mnt" || die "mount p$p"
	echo "p$p" >"$mnt/marker"
	umount_dev "$mnt" || die "umount p$p"
done
vd_detach "$dev" || die "detach"
base=$(ndevs)

# the default: the largest partition
check "mount -t vdimg IMAGE DIR" "$MOUNT" -t vdimg "$img" "$mnt"
d=$(src "$mnt")
check_eq "the largest partition is mounted" "$(cat "$mnt/marker" 2>/dev/null)" p2
case $d in
/dev/vdimg[0-9]*p2) ok "the source is a vdimg partition ($d)" ;;
*) fail "the source is a vdimg partition" "got '$d'" ;;
esac
disk=${d%p2}
check_eq "the device detaches at the last close (autoclear)" "$(vd_attr "$disk" autoclear)" 1
check_eq "read-write by default" "$(vd_attr "$disk" read_only)" 0
check "umount detaches the device" umount_gone "$mnt" "$disk"
check_eq "no device left" "$(ndevs)" "$base"

# partition=N and ro (the device is read-only too)
check "mount -t vdimg -o ro,partition=1" "$MOUNT" -t vdimg -o ro,partition=1 "$img" "$mnt"
d=$(src "$mnt")
disk=${d%p1}
check_eq "partition 1 is mounted" "$(cat "$mnt/marker" 2>/dev/null)" p1
check_eq "the device is read-only" "$(vd_attr "$disk" read_only)" 1
check_fail "the file system is read-only" sh -c "echo x >'$mnt/new'"
check "umount detaches the device" umount_gone "$mnt" "$disk"

# a partition that is not there: exit 32, nothing left attached
"$MOUNT" -t vdimg -o partition=7 "$img" "$mnt" 2>/dev/null
check_eq "partition=7 fails with mount's status 32" "$?" 32
check_eq "no device left after the failure" "$(ndevs)" "$base"
check_fail "nothing mounted" grep -q " $mnt " /proc/mounts

# overlay: writes go to a temporary overlay, the image stays byte-identical
sha=$(sha_of "$img")
check "mount -t vdimg -o overlay" "$MOUNT" -t vdimg -o overlay,partition=2 "$img" "$mnt"
d=$(src "$mnt")
disk=${d%p2}
check_eq "two layers (image + overlay)" "$(vd_attr "$disk" depth)" 2
check "write through the overlay" sh -c "echo changed >'$mnt/marker' && sync"
check "umount detaches the device" umount_gone "$mnt" "$disk"
check_eq "the image is unchanged" "$(sha_of "$img")" "$sha"
check_eq "the temporary overlay is gone" "$(ls -A "$TMPDIR")" ""

# a file system on the whole disk (no partition table), from an fstab line with -t vdimg.ext4
whole=$W/whole.qcow2
"$VDIMGCTL" create -t qcow2 -s 32M "$whole" || die "create qcow2"
dev=$(vd_attach "$whole") || die "attach qcow2"
"$MKFS_EXT4" -q -F "$dev" || die "mkfs whole"
mount_dev "$dev" "$mnt" || die "mount whole"
echo whole >"$mnt/marker"
umount_dev "$mnt" || die "umount whole"
vd_detach "$dev" || die "detach qcow2"
cp /etc/fstab "$W/fstab.saved" 2>/dev/null || : >"$W/fstab.saved"
echo "$whole $mnt vdimg.ext4 noatime,nofail 0 0" >>/etc/fstab
check "mount DIR from an fstab line" "$MOUNT" "$mnt"
cp "$W/fstab.saved" /etc/fstab
d=$(src "$mnt")
check_eq "the whole disk is mounted" "$(cat "$mnt/marker" 2>/dev/null)" whole
case $d in
/dev/vdimg[0-9]*p*|'') fail "the source is the whole disk" "got '$d'" ;;
/dev/vdimg[0-9]*) ok "the source is the whole disk ($d)" ;;
*) fail "the source is the whole disk" "got '$d'" ;;
esac
check "noatime reached the file system" grep -q " $mnt ext4 [^ ]*noatime" /proc/mounts
check "umount detaches the device" umount_gone "$mnt" "$d"
check_eq "no device left" "$(ndevs)" "$base"

# vdimgtab: attach by name records the device, detach drops it
tab=$W/vdimgtab
printf '# test\nparts %s ro,partscan\n' "$img" >"$tab"
export VDIMGTAB=$tab
dev=$(/usr/lib/vdimg/vdimgtab attach parts)
check "vdimgtab attach parts" test -b "$dev"
check_eq "the name is recorded" "$(cat /run/vdimg/names/parts 2>/dev/null)" "${dev##*/} $img"
check_eq "vdimgtab device parts" "$(/usr/lib/vdimg/vdimgtab device parts)" "$dev"
check_eq "ro from the line" "$(vd_attr "$dev" read_only)" 1
check_eq "partscan from the line" "$(vd_attr "$dev" partscan)" 1
check "vdimgtab attach again is a no-op" /usr/lib/vdimg/vdimgtab attach parts
check_eq "still one device" "$(ndevs)" "$((base + 1))"
check "vdimgtab detach parts" /usr/lib/vdimg/vdimgtab detach parts
check "the device is gone" wait_gone "$dev"
check_fail "the record is gone" test -e /run/vdimg/names/parts
check_fail "vdimgtab attach of a name not in the file fails" /usr/lib/vdimg/vdimgtab attach nosuch
done_testing
