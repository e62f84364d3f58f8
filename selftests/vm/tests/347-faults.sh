#!/bin/sh
# Faults under the host file system, switched on mid-workload, for the writable formats: the ext4 holding the images goes to dm-error while fio writes and reads (EIO reaches the user within 30 s, detach ends, host fsck + re-attach: qemu-img check clean, flushed data intact); dm-flakey error_reads (reads EIO, writes unaffected, all right afterwards; 6.12's dm-flakey only); ENOSPC on a 48 MiB host fs under four 256 MiB images written at once (every writer gets ENOSPC or EIO within 60 s, writes work again once space is freed, no metadata past the end of the file); the backing file truncated to half while attached (every MiB reads whole without an error: the data up to a sector boundary, zeros after it; detach works); the host fs turned read-only by an ext4 error (no new file, writes through vdimg fail, detach ends, fsck + re-attach clean); dm-dust bad blocks are 349-dm-dust's
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$MKFS_EXT4" "$E2FSCK" "$QEMU_IMG" "$FIO" /usr/sbin/dmsetup
require_module dm-flakey
DMSETUP=/usr/sbin/dmsetup
# CI time: every case runs on these four; dm-error adds Parallels (its in-use flag after a crash),
# and FAULTS_FULL=1 (selftests/vm/extra-logwrites/348-faults-formats) runs every writable format
# where it fits (dm-error, truncation) and raw in the ENOSPC case
F4="qcow2 vhdx vdi vhd"
FERR="$F4 parallels"
FTRUNC=$F4
FNOSPC=$F4
if [ "${FAULTS_FULL:-0}" = 1 ]; then
	FERR="raw vhd vdi vhdx qcow2 qed vmdk parallels"
	FTRUNC="$FERR"
	FNOSPC="$F4 raw"
fi
W=/tmp/faults.$$
mkdir -p "$W" || die "mkdir $W"
DM=
trap 'lib_cleanup; [ -n "$DM" ] && "$DMSETUP" remove --noudevsync "$DM"; rm -rf "$W"' EXIT
truncate -s 160M "$W/data.img" || die "truncate"
loop=$(loop_attach "$W/data.img") || die "losetup"
sectors=$((160 * 2048))
DM=fa$$
# table linear|error|error_reads: what the host ext4's device does
table() {
	local t
	case $1 in
	linear) t="0 $sectors linear $loop 0" ;;
	error) t="0 $sectors error" ;;
	error_reads) t="0 $sectors flakey $loop 0 0 3600 1 error_reads" ;;
	esac
	"$DMSETUP" suspend --noudevsync "$DM" && "$DMSETUP" reload "$DM" --table "$t" &&
		"$DMSETUP" resume --noudevsync "$DM"
}
"$DMSETUP" create --noudevsync "$DM" --table "0 $sectors linear $loop 0" || die "dmsetup create"
"$DMSETUP" mknodes "$DM" 2>/dev/null
dm=/dev/mapper/$DM
wait_for_dev "$dm" || die "$dm did not appear"
# no lazy init: its thread reading bitmaps under error_reads would mark the fs as failed
"$MKFS_EXT4" -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$dm" || die "mkfs"
H=$W/host
mkrandom "$W/pat" 4 || die "pattern"
want=$(sha_of "$W/pat")
mkrandom "$W/pat1" 1 || die "pattern"

# mkimg F IMAGE SIZE: a dynamic image (VHDX with 1 MiB blocks, so ENOSPC comes per MiB)
mkimg() {
	case $1 in
	raw) truncate -s "$3" "$2" ;;
	vhdx) "$VDIMGCTL" create -t vhdx -o block_size=1M -s "$3" "$2" >/dev/null ;;
	*) "$VDIMGCTL" create -t "$1" -s "$3" "$2" >/dev/null ;;
	esac
}

# imgcheck T F IMAGE: qemu-img check (0, or 3: leaks only) where qemu checks the format, and
# vdimgctl check (leaks are not errors there)
imgcheck() {
	local rc out
	case $2 in
	raw) check "$1: qemu-img info opens the image" "$QEMU_IMG" info -f raw "$3"; return ;;
	vhd) check "$1: qemu-img info opens the image" "$QEMU_IMG" info -f vpc "$3" ;;
	*)
		# (a VHDX log the fault left to replay is checked on a copy: qemu_check in lib.sh)
		out=$(qemu_check "$2" "$3")
		rc=$?
		echo "$out" | sed 's/^/  | /'
		# a Parallels image a crash left in use: qemu counts the flag as a corruption (vdimgctl
		# warns); nothing else may be wrong (qemu says ERROR of the leaked tail too)
		if [ $rc = 2 ] && [ "$2" = parallels ] &&
			echo "$out" | grep -q "ERROR image was not closed correctly" &&
			echo "$out" | grep -q "^1 errors were found" &&
			! echo "$out" | grep ERROR | grep -v -e "not closed correctly" \
				-e "space leaked at the end" | grep -q .; then
			rc=3
		fi
		case $rc in
		0) ok "$1: qemu-img check clean" ;;
		3) ok "$1: qemu-img check: leaks (or a Parallels in-use flag) only" ;;
		*) fail "$1: qemu-img check clean (or leaks only)" "exit $rc" ;;
		esac
		;;
	esac
	check "$1: vdimgctl check" "$VDIMGCTL" check -t "$2" "$3"
}

# detach_ends T DEV: a detach under a failed host fs must end within 60 s and the device go. The
# final flush fails when the backend still holds metadata (a failed allocation leaves some); with
# nothing to write it is down to the host's fsync on the failed or read-only ext4 (VHDX's
# succeeded on 6.1, failed on 6.12), so the exit status is only reported
detach_ends() {
	local t0 rc
	t0=$(date +%s)
	timeout 60 "$VDIMGCTL" detach "$2" >/dev/null 2>&1
	rc=$?
	echo "# $1: detach exits $rc"
	check "$1: detach ends (exit $rc) within 60 s" test $rc -ne 124 -a $(elapsed "$t0") -lt 60
	VD_DEVS=$(list_remove "$2" $VD_DEVS)
	check "$1: the device is gone after detach" wait_gone "$2"
}

# reads_back T F IMAGE SHA: the first 4 MiB through a read-only re-attach
reads_back() {
	local dev
	if dev=$(vd_attach -r -t "$2" "$3"); then
		check_eq "$1: the data flushed before the fault reads back" \
			"$(dd if="$dev" bs=1M count=4 iflag=direct status=none | sha256sum | cut -d' ' -f1)" "$4"
		vd_detach "$dev" || fail "$1: detach"
	else
		fail "$1: re-attach read-only"
	fi
}

# host_repair T: the host ext4 unmounted (under the fault), the table restored, e2fsck -fy
# (exit 0-2: clean or repaired), mounted again
host_repair() {
	check "$1: umount the host ext4 under the fault" timeout 60 umount "$H"
	MOUNTS=$(list_remove "$H" $MOUNTS)
	check "$1: fault off" table linear
	local rc
	"$E2FSCK" -fy "$dm" >"$W/fsck.out" 2>&1
	rc=$?
	if [ $rc -le 2 ]; then
		ok "$1: host e2fsck -fy (exit $rc)"
	else
		fail "$1: host e2fsck -fy" "exit $rc: $(tail -n 5 "$W/fsck.out")"
	fi
	mount_dev "$dm" "$H"
}

# attach_all T FORMATS: create IMAGE.F for each, attach, write the 4 MiB pattern and fsync;
# sets DEVS ("F:DEV ...")
attach_all() {
	local f dev
	DEVS=
	for f in $2; do
		mkimg "$f" "$H/img.$f" 64M || { fail "$1 $f: create"; continue; }
		dev=$(vd_attach -t "$f" "$H/img.$f") || { fail "$1 $f: attach"; continue; }
		check "$1 $f: 4 MiB written and fsynced before the fault" \
			dd if="$W/pat" of="$dev" bs=1M conv=fsync oflag=direct status=none
		DEVS="$DEVS $f:$dev"
	done
}

# elapsed T0: seconds since T0
elapsed() {
	echo $(($(date +%s) - $1))
}

# ---- 1. dm-error under fio: the whole device fails at once
c="dm-error"
mount_dev "$dm" "$H" || die "$c: mount the host ext4"
attach_all "$c" "$FERR"
pids=
for fd in $DEVS; do
	f=${fd%%:*} dev=${fd#*:}
	timeout 120 "$FIO" --name="$f" --filename="$dev" --direct=1 --ioengine=psync --rw=randrw \
		--bs=4k-128k --offset=8M --size=24M --time_based --runtime=100 \
		--output="$W/fio.$f" >/dev/null 2>"$W/fio.$f.err" &
	pids="$pids $f:$!"
done
sleep 3
check "$c: table switched to error under fio" table error
t0=$(date +%s)
for fp in $pids; do
	f=${fp%%:*}
	wait "${fp#*:}"
	rc=$?
	t="$c $f"
	if [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
		grep -q "Input/output error" "$W/fio.$f" "$W/fio.$f.err"; then
		ok "$t: fio stopped with EIO (exit $rc)"
	else
		fail "$t: fio stopped with EIO" "exit $rc; $(cat "$W/fio.$f.err" | head -n 3)"
	fi
done
n=$(elapsed "$t0")
echo "# $c: every fio ended $n s after the fault"
check "$c: ... within 30 s" test "$n" -lt 30
for fd in $DEVS; do
	f=${fd%%:*} dev=${fd#*:}
	t="$c $f"
	check_fail "$t: a direct read of flushed data fails" \
		timeout 30 dd if="$dev" of=/dev/null bs=64k count=1 iflag=direct status=none
	detach_ends "$t" "$dev"
done
host_repair "$c"
for f in $FERR; do
	[ -f "$H/img.$f" ] || { fail "$c $f: the image survived"; continue; }
	imgcheck "$c $f" "$f" "$H/img.$f"
	reads_back "$c $f" "$f" "$H/img.$f" "$want"
	rm -f "$H/img.$f"
done
umount_dev "$H" || fail "$c: umount"

# ---- 2. dm-flakey error_reads: reads fail, writes go through
c="error_reads"
if ! grep -q error_reads "/lib/modules/$(uname -r)/kernel/drivers/md/dm-flakey.ko" 2>/dev/null; then
	ok_skip "$c" "dm-flakey of $(uname -r) has no error_reads (added in Linux 6.7)"
else
	mount_dev "$dm" "$H" || die "$c: mount the host ext4"
	cp "$W/pat" "$W/pat.new"
	dd if="$W/pat1" of="$W/pat.new" bs=1M seek=1 conv=notrunc status=none
	want2=$(sha_of "$W/pat.new")
	attach_all "$c" "$F4"
	check "$c: table switched to error_reads" table error_reads
	for fd in $DEVS; do
		f=${fd%%:*} dev=${fd#*:}
		t="$c $f"
		out=$(timeout 30 dd if="$dev" of=/dev/null bs=1M count=4 iflag=direct 2>&1)
		rc=$?
		if [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "Input/output error"; then
			ok "$t: a direct read of flushed data gets EIO"
		else
			fail "$t: a direct read of flushed data gets EIO" "exit $rc: $out"
		fi
		check "$t: an overwrite (no allocation) with fsync succeeds" \
			timeout 30 dd if="$W/pat1" of="$dev" bs=1M seek=1 oflag=direct conv=fsync,notrunc \
			status=none
	done
	check "$c: fault off" table linear
	for fd in $DEVS; do
		f=${fd%%:*} dev=${fd#*:}
		t="$c $f"
		check_eq "$t: after the fault everything reads right" \
			"$(dd if="$dev" bs=1M count=4 iflag=direct status=none | sha256sum | cut -d' ' -f1)" \
			"$want2"
		check "$t: detach" vd_detach "$dev"
		imgcheck "$t" "$f" "$H/img.$f"
		rm -f "$H/img.$f"
	done
	umount_dev "$H" || fail "$c: umount"
	check "$c: host e2fsck -fn clean (writes went through)" "$E2FSCK" -fn "$dm"
fi

# ---- 3. the host fs turned read-only by an ext4 error (errors=remount-ro)
c="fs error, read-only"
mount_dev "$dm" "$H" errors=remount-ro || die "$c: mount the host ext4"
attach_all "$c" "$F4"
mm=$(stat -L -c '%t %T' "$dm")
set -- $mm
sysname=$(basename "$(readlink "/sys/dev/block/$((0x$1)):$((0x$2))")")
if [ -w "/sys/fs/ext4/$sysname/trigger_fs_error" ]; then
	check "$c: ext4 error triggered" sh -c "echo 1 >/sys/fs/ext4/$sysname/trigger_fs_error"
	check_fail "$c: the host fs is read-only now (no new file)" touch "$H/probe"
	for fd in $DEVS; do
		f=${fd%%:*} dev=${fd#*:}
		t="$c $f"
		check_fail "$t: an allocating write with fsync fails" \
			timeout 30 dd if="$W/pat1" of="$dev" bs=1M seek=16 oflag=direct conv=fsync status=none
		# what the detach leaves is checked after the host fsck
		detach_ends "$t" "$dev"
	done
	check "$c: umount the read-only host ext4" umount "$H"
	MOUNTS=$(list_remove "$H" $MOUNTS)
	"$E2FSCK" -fy "$dm" >/dev/null 2>&1
	[ $? -le 2 ] && ok "$c: host e2fsck -fy" || fail "$c: host e2fsck -fy"
	mount_dev "$dm" "$H" || die "$c: remount"
	for f in $F4; do
		imgcheck "$c $f" "$f" "$H/img.$f"
		reads_back "$c $f" "$f" "$H/img.$f" "$want"
		rm -f "$H/img.$f"
	done
else
	ok_skip "$c" "no /sys/fs/ext4/$sysname/trigger_fs_error"
fi
umount_dev "$H" || fail "$c: umount"

# ---- 4. the backing file truncated to half while attached: the data was written in order, so
# it lies in the file in order; what is lost is a tail of it, which reads as zeros (data reads
# past the end of a backing file are zero-filled), never as an error or as other data
c="truncated"
mount_dev "$dm" "$H" || die "$c: mount the host ext4"
mkrandom "$W/pat8" 8 || die "pattern"
for f in $FTRUNC; do
	t="$c $f"
	sz=32M
	[ "$f" = raw ] && sz=8M
	mkimg "$f" "$H/img.$f" $sz || { fail "$t: create"; continue; }
	dev=$(vd_attach -t "$f" "$H/img.$f") || { fail "$t: attach"; continue; }
	check "$t: 8 MiB written in order and fsynced" \
		dd if="$W/pat8" of="$dev" bs=1M oflag=direct conv=fsync status=none
	len=$(stat -c %s "$H/img.$f")
	check "$t: truncated from $len to $((len / 2)) bytes" truncate -s $((len / 2)) "$H/img.$f"
	# GNU dd with fullblock: a short read or an error anywhere shows as an error or a short file
	rm -f "$W/got"
	check "$t: the 8 MiB read whole, without an error" \
		timeout 60 /usr/bin/dd if="$dev" of="$W/got" bs=1M count=8 iflag=direct,fullblock \
		status=none
	check_eq "$t: ... all of it" "$(stat -c %s "$W/got" 2>/dev/null)" 8388608
	# the first differing byte starts the lost tail, on a sector boundary, and all of it is zeros
	k=$(/usr/bin/cmp "$W/got" "$W/pat8" 2>&1 | sed -n 's/.* differ: [a-z]* \([0-9]*\).*/\1/p')
	if [ -z "$k" ]; then
		fail "$t: some data is lost" "cmp: $(/usr/bin/cmp "$W/got" "$W/pat8" 2>&1)"
	else
		k=$(((k - 1) / 512 * 512))
		echo "# $t: $k bytes read back, $((8388608 - k)) read as zeros"
		check "$t: some data is kept" test "$k" -gt 0
		check "$t: the rest reads as zeros" sh -c \
			"tail -c +$((k + 1)) '$W/got' | /usr/bin/cmp -s -n $((8388608 - k)) - /dev/zero"
	fi
	check "$t: detach" timeout 60 "$VDIMGCTL" detach "$dev"
	VD_DEVS=$(list_remove "$dev" $VD_DEVS)
	check "$t: the device is gone after detach" wait_gone "$dev"
	rm -f "$H/img.$f"
done
umount_dev "$H" || fail "$c: umount"

# ---- 5. ENOSPC: a 48 MiB host fs under four 256 MiB images, written at once until it is full
c="ENOSPC"
truncate -s 48M "$W/small.img" || die "truncate"
sloop=$(loop_attach "$W/small.img") || die "losetup"
"$MKFS_EXT4" -q -F -E nodiscard "$sloop" || die "mkfs small"
S=$W/small
mount_dev "$sloop" "$S" || die "$c: mount"
fallocate -l 8M "$S/ballast" || die "$c: ballast"
DEVS=
for f in $FNOSPC; do
	mkimg "$f" "$S/img.$f" 256M || { fail "$c $f: create"; continue; }
	dev=$(vd_attach -t "$f" "$S/img.$f") || { fail "$c $f: attach"; continue; }
	check "$c $f: 4 MiB written and fsynced" \
		dd if="$W/pat" of="$dev" bs=1M oflag=direct conv=fsync status=none
	DEVS="$DEVS $f:$dev"
done
t0=$(date +%s)
pids=
for fd in $DEVS; do
	f=${fd%%:*} dev=${fd#*:}
	timeout 120 dd if=/dev/urandom of="$dev" bs=1M seek=8 count=64 oflag=direct conv=fsync \
		>"$W/dd.$f" 2>&1 &
	pids="$pids $f:$!"
done
for fp in $pids; do
	f=${fp%%:*}
	wait "${fp#*:}"
	rc=$?
	w=$(grep -Eo 'No space left|Input/output error' "$W/dd.$f" | head -n1)
	if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ -n "$w" ]; then
		ok "$c $f: 64 MiB of new clusters fail ($w)"
	else
		fail "$c $f: 64 MiB of new clusters fail with ENOSPC/EIO" "exit $rc: $(cat "$W/dd.$f")"
	fi
done
n=$(elapsed "$t0")
echo "# $c: every writer failed within $n s"
check "$c: ... within 60 s" test "$n" -lt 60
rm -f "$S/ballast"
for fd in $DEVS; do
	f=${fd%%:*} dev=${fd#*:}
	t="$c $f"
	check "$t: after freeing space, an allocating write with fsync works" \
		timeout 60 dd if="$W/pat1" of="$dev" bs=1M seek=200 oflag=direct conv=fsync status=none
	check_eq "$t: ... and reads back" \
		"$(dd if="$dev" bs=1M skip=200 count=1 iflag=direct status=none | sha256sum | cut -d' ' -f1)" \
		"$(sha_of "$W/pat1")"
	check "$t: detach" vd_detach "$dev"
	imgcheck "$t" "$f" "$S/img.$f"
	if [ "$f" != raw ]; then
		# every mapped extent lies inside the file
		end=$(stat -c %s "$S/img.$f")
		"$QEMU_IMG" map -f "$(qemu_fmt "$f")" --output=json "$S/img.$f" >"$W/map" 2>&1
		past=$(sed -n 's/.*"length": \([0-9]*\).*"offset": \([0-9]*\).*/\1 \2/p' "$W/map" |
			while read -r l o; do [ $((o + l)) -gt "$end" ] && echo "$o+$l"; done)
		check_eq "$t: no mapping past the end of the file ($end bytes)" "$past" ""
	fi
	reads_back "$t" "$f" "$S/img.$f" "$want"
done
umount_dev "$S" || fail "$c: umount"

# dm-dust bad blocks: 349-dm-dust (the debug kernel has dm-dust, Debian's kernels do not)
done_testing
