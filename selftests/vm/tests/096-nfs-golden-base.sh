#!/bin/sh
# A read-only golden base on NFS under local overlays (issue 18): kernel nfsd exports a QCOW2 base (NFSv4 only, loopback); two client mounts (4.2 read-write, 4.1 read-only: two NFS clients) stand in for two hosts, each attaches its own local overlay over the base; each device reads the base and its own writes, the base's bytes and mtime never change; vdimgctl's OFD locks reach the server: a writable attach or a qemu writer on one client is refused while the other client reads the base, a reader while the other writes, read-only opens are shared; the module's own EBUSY check sees one client's inode only; a base renamed over on the server goes on being read, an export withdrawn under a device fails its reads with EIO without a hang
# timeout: 150
. /vmtest/lib.sh
require_vdimg
NFSD=/usr/sbin/rpc.nfsd
MOUNTD=/usr/sbin/rpc.mountd
EXPORTFS=/usr/sbin/exportfs
MOUNT_NFS4=/sbin/mount.nfs4
require_cmd "$QEMU_IMG" "$QEMU_IO" "$NFSD" "$MOUNTD" "$EXPORTFS" "$MOUNT_NFS4"
require_module nfsd
require_module nfsv4

W=$TEST_WORK
EXP=$W/export		# the server's directory (local ext4)
HA=$W/hostA		# client mount A: NFS 4.2, read-write (the host that maintains the base)
HB=$W/hostB		# client mount B: NFS 4.1, read-only (a host that only uses it)
LOC=$W/local		# each "host"'s local disk: the overlays
MIB=1048576
mkdir -p "$EXP" "$HA" "$HB" "$LOC" /var/lib/nfs/v4recovery

mountd_pid=
nfs_cleanup() {
	lib_cleanup	# the devices first: they hold files on the mounts
	umount "$HA" 2>/dev/null || umount -l "$HA" 2>/dev/null
	umount "$HB" 2>/dev/null || umount -l "$HB" 2>/dev/null
	"$NFSD" 0 2>/dev/null
	"$EXPORTFS" -ua 2>/dev/null
	[ -n "$mountd_pid" ] && kill "$mountd_pid" 2>/dev/null
	: >/etc/exports
}
trap nfs_cleanup EXIT

# --- the server: NFSv4 only on 127.0.0.1, so neither rpcbind nor lockd/statd is needed
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || die "loopback interface"
grep -q ' /proc/fs/nfsd ' /proc/mounts || mount -t nfsd nfsd /proc/fs/nfsd ||
	die "mount the nfsd filesystem"
echo "$EXP 127.0.0.1(rw,sync,no_subtree_check,no_root_squash,fsid=96)" >/etc/exports
"$EXPORTFS" -r || die "exportfs -r"
"$MOUNTD" -F -N 2 -N 3 -u >"$W/mountd.log" 2>&1 &
mountd_pid=$!
"$NFSD" -N 3 -V 4.1 -V 4.2 -U -H 127.0.0.1 -p 2049 2 || die "rpc.nfsd"
# no client has state to reclaim: end the grace period (10 s at least), in which opens and
# locks wait
echo Y >/proc/fs/nfsd/v4_end_grace || die "end the NFSv4 grace period"

# --- the golden base, written on the server with known content: 2 MiB of 0x5a, 2 MiB of 0xc3,
# 4 MiB never written (zeros)
base=$EXP/base.qcow2
"$QEMU_IMG" create -q -f qcow2 "$base" 8M || die "create the base"
"$QEMU_IO" -f qcow2 -c "write -P 0x5a 0 2M" -c "write -P 0xc3 2M 2M" "$base" >/dev/null ||
	die "write the base"
{
	head -c $((2 * MIB)) /dev/zero | tr '\0' '\132'
	head -c $((2 * MIB)) /dev/zero | tr '\0' '\303'
	head -c $((4 * MIB)) /dev/zero
} >"$LOC/base.expect"
touch -d '2001-02-03 04:05:06' "$base"	# an mtime any write would change
base_sha=$(sha_of "$base")
base_mtime=$(stat -c %y "$base")

# --- two "hosts": different minor versions make two NFS clients, each with its own client ID,
# lease and lock owners at the server, and its own superblock and inodes, as two hosts would have
# (two mounts with the same options would share one superblock and its locks on this client)
"$MOUNT_NFS4" "127.0.0.1:$EXP" "$HA" -o vers=4.2,sec=sys || die "mount the export at $HA (NFS 4.2)"
"$MOUNT_NFS4" "127.0.0.1:$EXP" "$HB" -o ro,vers=4.1,sec=sys ||
	die "mount the export at $HB (NFS 4.1, read-only)"
check_eq "both mounts are NFSv4 with different minor versions" \
	"$(awk -v a="$HA" -v b="$HB" '$2 == a || $2 == b {print $3, $4}' /proc/mounts |
		grep -o '^nfs4 .*vers=4\.[12]' | sed 's/ .*vers=/ /' | sort | tr '\n' ' ')" \
	"nfs4 4.1 nfs4 4.2 "
check "the two mounts are two file systems (two clients' inodes)" \
	[ "$(stat -c %d "$HA/base.qcow2")" != "$(stat -c %d "$HB/base.qcow2")" ]
check "the base reads the same through both mounts" cmp "$HA/base.qcow2" "$HB/base.qcow2"

# --- each host's own overlay on its local disk, over the base through its own mount
"$QEMU_IMG" create -q -f qcow2 -b "$HA/base.qcow2" -F qcow2 "$LOC/a.qcow2" ||
	die "qemu-img create -b (overlay A)"
"$VDIMGCTL" create -t qcow2 --parent "$HB/base.qcow2" "$LOC/b.qcow2" ||
	die "vdimgctl create --parent (overlay B)"
da=$(vd_attach "$LOC/a.qcow2") || die "attach overlay A"
db=$(vd_attach "$LOC/b.qcow2") || die "attach overlay B"
ok "two devices share the NFS base read-only from two clients"
check_eq "device A's base is the file on mount A" \
	"$("$VDIMGCTL" list -n -O CHAIN "$da" | tr -d ' ' | cut -d, -f1)" "$HA/base.qcow2"
check_eq "device B's base is the file on mount B" \
	"$("$VDIMGCTL" list -n -O CHAIN "$db" | tr -d ' ' | cut -d, -f1)" "$HB/base.qcow2"
check "device A reads the base" cmp "$da" "$LOC/base.expect"
check "device B reads the base" cmp "$db" "$LOC/base.expect"

# writes: A over the 0x5a/0xc3 boundary, B over the 0xc3/zero boundary
cp "$LOC/base.expect" "$LOC/a.expect"
cp "$LOC/base.expect" "$LOC/b.expect"
head -c $MIB /dev/zero | tr '\0' '\241' >"$LOC/pa"
head -c $((3 * MIB / 2)) /dev/zero | tr '\0' '\262' >"$LOC/pb"
check "write 1 MiB at 1.5 MiB to device A" \
	dd if="$LOC/pa" of="$da" bs=512k seek=3 oflag=direct status=none
check "write 1.5 MiB at 3.5 MiB to device B" \
	dd if="$LOC/pb" of="$db" bs=512k seek=7 oflag=direct status=none
dd if="$LOC/pa" of="$LOC/a.expect" bs=512k seek=3 conv=notrunc status=none
dd if="$LOC/pb" of="$LOC/b.expect" bs=512k seek=7 conv=notrunc status=none
check "device A reads its writes over the base" cmp "$da" "$LOC/a.expect"
check "device B reads its writes, not A's" cmp "$db" "$LOC/b.expect"
check_eq "the base file is unchanged while both devices run" "$(sha_of "$base")" "$base_sha"

# --- the locks while both devices read the base
expect_busy() { # expect_busy NAME ARGS...: vdimgctl attach ARGS is refused by the image lock
	local name=$1 out
	shift
	out=$("$VDIMGCTL" attach --show "$@" 2>&1) && vd_detach "$out"
	case $out in
	*"in use by another process"*) ok "$name" ;;
	*) fail "$name" "$out" ;;
	esac
}
qemu_refused() { # qemu_refused NAME QEMU-IO-ARGS...: qemu-io fails to get its lock
	local name=$1 out
	shift
	out=$("$QEMU_IO" "$@" 2>&1)
	case $out in
	*"Failed to get"*"lock"*) ok "$name" ;;
	*) fail "$name" "$out" ;;
	esac
}
expect_busy "a writable attach of the base through mount A is refused (lock)" \
	-t qcow2 "$HA/base.qcow2"
qemu_refused "qemu-io refuses to open the base for writing (qemu's lock)" \
	-f qcow2 -c "read 0 512" "$HA/base.qcow2"
out=$("$VDIMGCTL" attach --show -t qcow2 "$HB/base.qcow2" 2>&1) && vd_detach "$out"
case $out in
*"Read-only file system"*) ok "a writable attach through the read-only mount B fails (EROFS)" ;;
*) fail "a writable attach through the read-only mount B fails (EROFS)" "$out" ;;
esac
check "qemu-io reads the base read-only meanwhile" \
	"$QEMU_IO" -r -f qcow2 -c "read -P 0xc3 2M 64k" "$HA/base.qcow2"
check "qemu-img info opens it too" "$QEMU_IMG" info "$HB/base.qcow2"
dr=$(vd_attach -r "$HB/base.qcow2") && ok "a third, read-only device on the base is allowed" ||
	fail "a third, read-only device on the base is allowed"
[ -n "$dr" ] && check "it reads the base" cmp "$dr" "$LOC/base.expect" && vd_detach "$dr"

# only client B reads the base now: its lock, taken through a read-only mount, is on the server
check "detach device A" vd_detach "$da"
expect_busy "with only client B reading the base, client A's writable attach is refused" \
	-t qcow2 "$HA/base.qcow2"
qemu_refused "... and so is qemu-io writing it on client A" -f raw -c "read 0 512" "$HA/base.qcow2"

# --- an image written through client A: client B's attach is refused by the lock; the module's
# own check compares inodes and so sees only attaches through the same mount
"$QEMU_IMG" create -q -f qcow2 "$EXP/shared.qcow2" 4M || die "create shared.qcow2"
dw=$(vd_attach "$HA/shared.qcow2") || die "attach shared.qcow2 writable through mount A"
expect_busy "a read-only attach through mount B is refused while client A writes the image" \
	-r "$HB/shared.qcow2"
qemu_refused "qemu-io on client B refuses the image client A writes" \
	-r -f qcow2 -c "read 0 512" "$HB/shared.qcow2"
out=$("$VDIMGCTL" attach --no-lock --show "$HA/shared.qcow2" 2>&1) && vd_detach "$out"
case $out in
*"in use"*) ok "without the locks, the module refuses a second writer through the same mount" ;;
*) fail "without the locks, the module refuses a second writer through the same mount" "$out" ;;
esac
out=$("$VDIMGCTL" attach --no-lock -r --show "$HB/shared.qcow2" 2>&1)
what="... but not a reader through the other client's mount (another inode): only the locks reach across hosts"
if [ -b "$out" ]; then
	ok "$what"
	vd_detach "$out"
else
	fail "$what" "$out"
fi
check "detach the writer" vd_detach "$dw"
dw=$(vd_attach -r "$HB/shared.qcow2") && ok "client B attaches it once client A let go" ||
	fail "client B attaches it once client A let go"
[ -n "$dw" ] && vd_detach "$dw"

# --- after the detach: nobody holds the base, each overlay keeps its own writes
check "detach device B" vd_detach "$db"
check "the base opens for writing again (locks released on the server)" \
	"$QEMU_IO" -f raw -c "read 0 512" "$HA/base.qcow2"
check_eq "overlay A holds A's writes" "$(raw_sha "$LOC/a.qcow2" qcow2)" "$(sha_of "$LOC/a.expect")"
check_eq "overlay B holds B's writes" "$(raw_sha "$LOC/b.qcow2" qcow2)" "$(sha_of "$LOC/b.expect")"
check_eq "the base's bytes are unchanged" "$(sha_of "$base")" "$base_sha"
check_eq "the base's mtime is unchanged" "$(stat -c %y "$base")" "$base_mtime"

# --- a new base moved over the old one on the server: the device keeps the file it opened
da=$(vd_attach "$LOC/a.qcow2") || die "attach overlay A again"
cp "$base" "$EXP/base.new" || die "copy the base"
"$QEMU_IO" -f qcow2 -c "write -P 0x11 0 4M" "$EXP/base.new" >/dev/null || die "write base.new"
mv "$EXP/base.new" "$base" || die "rename base.new over the base"
echo 3 >/proc/sys/vm/drop_caches
check "after a rename replaced the base on the server, device A still reads the one it opened" \
	sh -c "/usr/bin/dd if=$da bs=1M iflag=direct status=none | /usr/bin/cmp - $LOC/a.expect"

# --- the export withdrawn under the device (as a server that no longer serves the file would
# answer): reads that reach the base fail with EIO, nothing hangs, the overlay's own data still
# reads and the device detaches
"$EXPORTFS" -ua || die "exportfs -ua"
echo 3 >/proc/sys/vm/drop_caches
check_fail "with the export withdrawn, a read of base data through device A fails" \
	dd if="$da" of=/dev/null bs=64k count=1 iflag=direct status=none
check "the kernel log names the device and the failed read" \
	sh -c "dmesg | grep -i '${da#/dev/}: read of .* failed'"
check "the overlay's own data still reads" sh -c \
	"/usr/bin/dd if=$da bs=512k skip=3 count=2 iflag=direct status=none | /usr/bin/cmp - $LOC/pa"
check "device A detaches" vd_detach "$da"
done_testing
