#!/bin/sh
# Crash replay with dm-log-writes: the host ext4 holding an image sits on a log-writes device while a workload runs through /dev/vdimgN (first writes that allocate, random writes + fsync, O_DIRECT|O_DSYNC (FUA) writes, discards and zero-outs, an inner ext4 with create/rename/fsync/unlink, marks between phases); the log is replayed flush by flush onto a fresh disk with replay-log and at the checked points the image passes qemu-img check, opens read-only in vdimg, every acknowledged block reads back (lw-work's journal), and the inner ext4 passes e2fsck -fn after its journal replay. CI checks a subset of points (qcow2 and vhdx: every 200th point, the mark m4 and the end; the short tier qcow2 at m4 and the end); selftests/vm/extra-logwrites/341 and 342 check every point or every 8th point of every format
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$MKFS_EXT4" "$E2FSCK" "$QEMU_IMG" /usr/sbin/dmsetup /vmtest/replay-log /vmtest/lw-work
require_module dm-log-writes
DMSETUP=/usr/sbin/dmsetup
RLOG=/vmtest/replay-log
LWW=/vmtest/lw-work

# Which points are checked (the replay stops at every one): every EVERY-th FLUSH/FUA point, the
# marks in MARKS, and the end of the log. A point costs about 5 s under TCG, so CI checks a few:
# 2 formats on 6.12, 1 in the short tier. LW_FULL=1 (341-log-writes-full): every point of every
# format; LW_FULL=1 LW_EVERY=N (342-log-writes-formats): every format, every N-th point;
# LW_FORMATS narrows the formats of a full run.
if [ "${LW_FULL:-0}" = 1 ]; then
	FORMATS=${LW_FORMATS:-raw vhd vdi vhdx qcow2 qed vmdk parallels}
	EVERY=${LW_EVERY:-1}
	MARKS="m0 m1 m2 m3 m4 m5 m6"
else
	FORMATS=$(tier "qcow2 vhdx" "qcow2")
	EVERY=$(tier 200 1000)
	MARKS=m4
fi
# the image: 32 MiB, an inner ext4 in its first 16 MiB (4 KiB blocks 0..4095), lw-work's blocks
# in the second half
FIRST=4096
COUNT=4096
# tmpfs: the log-writes data and log devices, the replay target and its per-point copy
W=/tmp/lw.$$
mkdir -p "$W" || die "mkdir $W"
HOSTMB=64
DM=
cleanup_lw() {
	[ -n "$DM" ] && "$DMSETUP" remove --noudevsync "$DM" 2>/dev/null
	rm -rf "$W"
}
trap 'lib_cleanup; cleanup_lw' EXIT

# workload F: a log-writes device over two loop devices on tmpfs, the host ext4 on it, the image
# and the workload through vdimg with marks m0..m6 (journal $W/journal); leaves $W/log.img
workload() {
	local f=$1 data log dm sectors dev img k
	rm -f "$W/data.img" "$W/log.img" "$W/journal"
	truncate -s ${HOSTMB}M "$W/data.img" && truncate -s 512M "$W/log.img" || return 1
	data=$(loop_attach "$W/data.img") && log=$(loop_attach "$W/log.img") || return 1
	sectors=$((HOSTMB * 2048))
	DM=lw$$
	"$DMSETUP" create --noudevsync "$DM" --table "0 $sectors log-writes $data $log" || return 1
	"$DMSETUP" mknodes "$DM" 2>/dev/null
	dm=/dev/mapper/$DM
	wait_for_dev "$dm" || return 1
	"$MKFS_EXT4" -q -F -E nodiscard "$dm" || return 1
	mount_dev "$dm" "$W/host" || return 1
	img=$W/host/img.$f
	mark() { # mark NAME: in the log and in the journal
		"$DMSETUP" message "$DM" 0 mark "$1" || return 1
		echo "M $1" >>"$W/journal"
	}
	if [ "$f" = raw ]; then
		truncate -s 32M "$img" || return 1
	else
		"$VDIMGCTL" create -t "$f" -s 32M "$img" || return 1
	fi
	sync
	mark m0 || return 1
	dev=$(vd_attach -t "$f" "$img") || return 1
	"$MKFS_EXT4" -q -F -b 4096 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$dev" 4096 ||
		return 1
	# lw-work's discards and zero-outs need the device unclaimed: its phases run with the
	# inner ext4 unmounted
	"$LWW" write "$dev" "$W/journal" $FIRST $COUNT 48 1 || return 1
	mark m1 || return 1
	mount_dev "$dev" "$W/inner" || return 1
	k=0
	while [ $k -lt 12 ]; do
		head -c $((k * 3000 + 100)) /dev/urandom >"$W/inner/tmp$k"
		dd if=/dev/zero of="$W/inner/tmp$k" bs=1 count=0 conv=notrunc,fsync status=none
		mv "$W/inner/tmp$k" "$W/inner/f$k"
		k=$((k + 1))
	done
	rm -f "$W/inner/f3" "$W/inner/f7"
	dd if=/dev/urandom of="$W/inner/keep" bs=1000 count=300 conv=fsync status=none
	(cd "$W/inner" && sha256sum keep >"$W/keep.sha")
	mkdir "$W/inner/d" && mv "$W/inner/f1" "$W/inner/d/g1" && rm -f "$W/inner/f2"
	dd if=/dev/urandom of="$W/inner/d/new" bs=1000 count=70 conv=fsync status=none
	mark m2 || return 1
	umount_dev "$W/inner" || return 1
	"$LWW" write "$dev" "$W/journal" $FIRST $COUNT 48 2 mix || return 1
	mark m3 || return 1
	"$LWW" write "$dev" "$W/journal" $FIRST $COUNT 24 3 fua || return 1
	mark m4 || return 1
	mount_dev "$dev" "$W/inner" || return 1
	rm -f "$W/inner/f5" && mv "$W/inner/f6" "$W/inner/d/g6" || return 1
	dd if=/dev/urandom of="$W/inner/d/last" bs=1000 count=90 conv=fsync status=none
	umount_dev "$W/inner" || return 1
	"$LWW" write "$dev" "$W/journal" $FIRST $COUNT 48 4 mix || return 1
	mark m5 || return 1
	vd_detach "$dev" || return 1
	sync
	mark m6 || return 1
	umount_dev "$W/host" || return 1
	"$DMSETUP" remove --noudevsync "$DM" || return 1
	DM=
	losetup -d "$data" && losetup -d "$log"
	LOOPS=$(list_remove "$data" $LOOPS)
	LOOPS=$(list_remove "$log" $LOOPS)
}

# teardown: whatever a failed workload left (devices, mounts, the dm device, loops)
teardown() {
	local m d
	for m in $MOUNTS; do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	MOUNTS=
	for d in $VD_DEVS; do
		"$VDIMGCTL" detach "$d"
	done
	VD_DEVS=
	[ -n "$DM" ] && "$DMSETUP" remove --noudevsync "$DM"
	DM=
	for d in $LOOPS; do
		losetup -d "$d"
	done
	LOOPS=
}

# check_point F WHAT AFTER UPTO: the replayed host fs (a copy) at this point; AFTER/UPTO are the
# journal marks around it (equal at a mark). Returns 1 on a failed check (reasons on stderr).
check_point() {
	local f=$1 what=$2 after=$3 upto=$4 cl dev img rc=0 out q
	cp "$W/replay.img" "$W/copy.img" || return 1
	cl=$(loop_attach "$W/copy.img") || return 1
	if ! mount_dev "$cl" "$W/cmnt"; then
		echo "$what: the host ext4 does not mount" >&2
		losetup -d "$cl"
		LOOPS=$(list_remove "$cl" $LOOPS)
		return 1
	fi
	img=$W/cmnt/img.$f
	if [ "$after" != - ] && [ ! -f "$img" ]; then
		echo "$what: the image is missing" >&2
		rc=1
	fi
	if [ $rc -eq 0 ] && [ -f "$img" ] && [ "$after" != - ]; then
		q=$(qemu_fmt "$f")
		case $f in
		raw|vhd)	# qemu cannot check these: it must open them
			out=$("$QEMU_IMG" info -f "$q" "$img" 2>&1) ||
				{ echo "$what: qemu-img info: $out" >&2; rc=1; } ;;
		*)
			# (a VHDX log left to replay is checked on a copy: qemu_check in lib.sh)
			out=$(qemu_check "$f" "$img")
			q=$?
			# a Parallels image open for writing has its inuse field set (header bytes 44-47):
			# after a crash qemu reports that alone as an error. Clear it on a copy and check
			# everything else
			if [ "$f" = parallels ] && echo "$out" | grep -q 'image was not closed correctly'; then
				cp "$img" "$W/qcheck.hds" || return 1
				printf '\0\0\0\0' | dd of="$W/qcheck.hds" bs=1 seek=44 conv=notrunc status=none
				out=$("$QEMU_IMG" check -f parallels "$W/qcheck.hds" 2>&1)
				q=$?
				rm -f "$W/qcheck.hds"
			fi
			# VDI: qemu calls a header count above the blocks in use a mismatch; it is slots
			# no entry references (a leak): vdimg writes the count, syncs, then the entries
			if [ "$f" = vdi ] && [ $q = 2 ] && ! echo "$out" | grep ERROR |
			   grep -vq 'allocated blocks mismatch' && echo "$out" | tr -d , |
			   awk '/allocated blocks mismatch/ { if ($6 + 0 > $9 + 0) exit 1 }'; then
				q=3
			fi
			case $q in
			0) ;;
			# leaked clusters after a crash: allowed by these formats (Parallels: the sparse
			# tail past the image a crash can leave, drivers/io.c vdimg_file_ahead())
			3) case $f in
			   qcow2|qed|vdi|parallels) echo "$what: $(echo "$out" | grep -iE 'leak|mismatch' | head -n1)" ;;
			   *) echo "$what: qemu-img check: $out" >&2; rc=1 ;;
			   esac ;;
			*) echo "$what: qemu-img check: $out" >&2; rc=1 ;;
			esac ;;
		esac
		if dev=$(vd_attach -r -t "$f" "$img"); then
			"$LWW" verify "$dev" "$W/journal" $FIRST $COUNT "$after" "$upto" || {
				echo "$what: acknowledged data lost" >&2; rc=1; }
			vd_detach "$dev" || rc=1
		else
			echo "$what: vdimg does not attach the image read-only" >&2
			rc=1
		fi
		# the inner ext4 exists once m1 is passed (mkfs fsyncs before it); a mount replays its
		# journal on this copy, then it must be clean and hold what was synced before m2
		if [ "$after" = m0 ]; then
			:
		elif ! dev=$(vd_attach -t "$f" "$img"); then
			echo "$what: vdimg does not attach the image read-write" >&2
			rc=1
		else
			if mount_dev "$dev" "$W/imnt"; then
				case $after in
				m2|m3|m4|m5|m6)
					(cd "$W/imnt" && sha256sum -c -s "$W/keep.sha") || {
						echo "$what: inner file keep (synced before m2) differs" >&2
						rc=1; } ;;
				esac
				umount_dev "$W/imnt" || rc=1
			else
				echo "$what: the inner ext4 does not mount" >&2
				rc=1
			fi
			out=$("$E2FSCK" -fn "$dev" 2>&1) || { echo "$what: e2fsck -fn: $out" >&2; rc=1; }
			vd_detach "$dev" || rc=1
		fi
	fi
	umount_dev "$W/cmnt" || rc=1
	losetup -d "$cl"
	LOOPS=$(list_remove "$cl" $LOOPS)
	return $rc
}

for f in $FORMATS; do
	t0=$(date +%s)
	if ! workload "$f" >"$W/wl.out" 2>&1; then
		cat "$W/wl.out"
		fail "$f: workload under dm-log-writes"
		teardown
		continue
	fi
	ok "$f: workload under dm-log-writes ($(($(date +%s) - t0)) s)"
	lg=$(loop_attach -r "$W/log.img") || die "loop for the log"
	"$RLOG" --log "$lg" --marks >"$W/marks" || { fail "$f: replay-log --marks"; continue; }
	check_eq "$f: the log holds the marks m0..m6 and the end" "$(awk '$7 == "MARK" {printf "%s ", $8}' "$W/marks")" \
		"m0 m1 m2 m3 m4 m5 m6 dm-log-writes-end "
	rm -f "$W/replay.img" "$W/state"
	truncate -s ${HOSTMB}M "$W/replay.img"
	# the points to check, from the list of FLUSH/FUA/MARK entries: "POINT ENTRIES AFTER UPTO"
	# (ENTRIES: the entries applied at that point; AFTER/UPTO: the journal marks around it)
	awk -v every="$EVERY" -v marks=" $MARKS " '
		{ n++ }
		$7 == "MARK" && $8 == "dm-log-writes-end" { last = "m6"; next }
		$7 == "MARK" { last = $8; if (index(marks, " " $8 " ")) print n, $1 + 1, $8, $8; next }
		n % every == 0 {
			if (last == "") up = "m0"; else up = "m" (substr(last, 2) + 1)
			print n, $1 + 1, (last == "" ? "-" : last), (up == "m7" ? "-" : up)
		}
		END { print n > "/dev/stderr" }' "$W/marks" >"$W/points" 2>"$W/npoints"
	n=$(cat "$W/npoints")
	checked=0 bad=0
	while read -r pt entries after upto; do
		out=$("$RLOG" --log "$lg" --replay "$W/replay.img" --state "$W/state" \
			--until-entry "$entries") || { fail "$f: replay to point $pt"; break; }
		checked=$((checked + 1))
		check_point "$f" "$f point $pt ($out)" "$after" "$upto" </dev/null || bad=$((bad + 1))
	done <"$W/points"
	out=$("$RLOG" --log "$lg" --replay "$W/replay.img" --state "$W/state")
	rc=$?
	echo "$out"
	case $out in *flags=END*) rc=3 ;; esac
	check_eq "$f: replay-log reached the end of the log" "$rc" 3
	# and the end of the log: everything acknowledged, the image detached
	checked=$((checked + 1))
	check_point "$f" "$f end of log" m6 m6 || bad=$((bad + 1))
	check_eq "$f: $checked of $((n + 1)) points checked ($(($(date +%s) - t0)) s), failures" "$bad" 0
	losetup -d "$lg"
	LOOPS=$(list_remove "$lg" $LOOPS)
done
done_testing
