#!/bin/sh
# Bad blocks under the host file system: the ext4 holding a QCOW2 and a VDI image sits on dm-dust (4 KiB blocks); 4 MiB are written through vdimg to each and fsynced, then three host blocks under the image's data for the disk's second MiB (found with qemu-img map and FIEMAP) are made bad and enabled, the page cache dropped: a direct read of each of those 4 KiB and of that MiB through /dev/vdimgN gets EIO within 10 s, the rest (the first 1020 KiB, the 4 KiB at KiB 1528, the last 2 MiB) reads back right, detach works under the fault; with the fault disabled a read-only re-attach reads all 4 MiB back and qemu-img check is clean. dm-dust is in the debug kernel only (CONFIG_DM_DUST is not set in Debian's 6.1 and 6.12 kernels: skipped there with that reason); run-all.sh runs it in the debug-kernel stage
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$MKFS_EXT4" "$QEMU_IMG" /usr/sbin/dmsetup /usr/sbin/filefrag
DMSETUP=/usr/sbin/dmsetup
FILEFRAG=/usr/sbin/filefrag
modprobe dm-dust 2>/dev/null
"$DMSETUP" targets 2>/dev/null | grep -q '^dust ' ||
	skip "no dm-dust target in $(uname -r) (CONFIG_DM_DUST; Debian's kernels do not set it)"
W=/tmp/dust.$$
mkdir -p "$W" || die "mkdir $W"
DM=
trap 'lib_cleanup; [ -n "$DM" ] && "$DMSETUP" remove --noudevsync "$DM"; rm -rf "$W"' EXIT
truncate -s 32M "$W/data.img" || die "truncate"
loop=$(loop_attach "$W/data.img") || die "losetup"
DM=du$$
# dust DEV OFFSET BLKSZ: blocks of 4 KiB, the host ext4's blocks, so FIEMAP's numbers are dust's
"$DMSETUP" create --noudevsync "$DM" --table "0 $((32 * 2048)) dust $loop 0 4096" ||
	die "dmsetup create"
"$DMSETUP" mknodes "$DM" 2>/dev/null
dm=/dev/mapper/$DM
wait_for_dev "$dm" || die "$dm did not appear"
"$MKFS_EXT4" -q -F -b 4096 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$dm" ||
	die "mkfs"
H=$W/host
mount_dev "$dm" "$H" || die "mount the host ext4"
# 4 MiB of random data, cut where the reads that must succeed begin and end: KiB 0, 1020 (the
# first is clear of the bad block under KiB 1024), 1528 (4 KiB clear of the one under 1536), 1532,
# 2048 (the last 2 MiB)
for p in 0:1020 1:508 2:4 3:516 4:2048; do
	head -c $((${p#*:} * 1024)) /dev/urandom >"$W/p${p%:*}" || die "pattern"
done
cat "$W/p0" "$W/p1" "$W/p2" "$W/p3" "$W/p4" >"$W/pat" || die "pattern"

msg() {
	"$DMSETUP" message "$DM" 0 "$@"
}

# same_as DEV SKIP COUNT FILE: COUNT KiB at SKIP KiB of DEV, read directly in one request, are FILE
same_as() {
	dd if="$1" bs="$3"k skip=$(($2 * 1024)) count=1 iflag=skip_bytes,direct status=none |
		cmp -s - "$4"
}

# host_blocks F IMAGE KIB...: the host fs block (= dust block) under each KiB of the disk
host_blocks() {
	local f=$1 img=$2 k
	shift 2
	# the image's data extents: disk start, length, file offset (-U: vdimg has it attached)
	"$QEMU_IMG" map -U -f "$(qemu_fmt "$f")" --output=json "$img" |
		sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"data": true.*"offset": \([0-9]*\).*/\1 \2 \3/p' \
		>"$W/map" || return 1
	# the file's extents: logical start, end, physical start (FIEMAP, in 4 KiB blocks)
	"$FILEFRAG" -v -b4096 "$img" | sed -n 's/\.\./ /g; s/://gp' |
		awk '$1 ~ /^[0-9]+$/ { print $2, $3, $4 }' >"$W/frag" || return 1
	awk -v kib="$*" -v frag="$W/frag" '
		{ s[NR] = $1; l[NR] = $2; o[NR] = $3 }
		END {
			while ((getline x < frag) > 0) {
				nf++
				split(x, e, " ")
				fs[nf] = e[1]; fe[nf] = e[2]; fp[nf] = e[3]
			}
			n = split(kib, k, " ")
			for (i = 1; i <= n; i++) {
				v = k[i] * 1024
				fo = -1
				for (j = 1; j <= NR; j++)
					if (v >= s[j] && v < s[j] + l[j])
						fo = o[j] + v - s[j]
				if (fo < 0)
					exit 1
				b = int(fo / 4096)
				hb = -1
				for (j = 1; j <= nf; j++)
					if (b >= fs[j] && b <= fe[j])
						hb = fp[j] + b - fs[j]
				if (hb < 0)
					exit 1
				print hb
			}
		}' "$W/map"
}

# eio T DEV SKIP COUNT: a direct read of COUNT KiB at SKIP KiB, in one request, fails with EIO
# within 10 s
eio() {
	local out rc
	out=$(timeout 10 dd if="$2" of=/dev/null bs="$4"k skip=$(($3 * 1024)) count=1 \
		iflag=skip_bytes,direct 2>&1)
	rc=$?
	case $rc:$out in
	124:*) fail "$1: EIO within 10 s" "no answer after 10 s" ;;
	0:*) fail "$1: EIO within 10 s" "the read succeeded" ;;
	*"Input/output error"*) ok "$1: EIO within 10 s" ;;
	*) fail "$1: EIO within 10 s" "exit $rc: $out" ;;
	esac
}

# both images at once (CI time: under TCG every program started costs)
FMTS="qcow2 vdi"
DEVS=
for f in $FMTS; do
	t="dm-dust $f"
	img=$H/img.$f
	"$VDIMGCTL" create -t "$f" -s 32M "$img" >/dev/null || { fail "$t: create"; continue; }
	dev=$(vd_attach -t "$f" "$img") || { fail "$t: attach"; continue; }
	check "$t: 4 MiB written and fsynced" \
		dd if="$W/pat" of="$dev" bs=1M oflag=direct conv=fsync status=none || continue
	# the disk's second MiB: bad blocks under its first, middle and last 4 KiB
	if blocks=$(host_blocks "$f" "$img" 1024 1536 2044); then
		ok "$t: KiB 1024, 1536, 2044 of the disk are host blocks" $blocks
	else
		fail "$t: host blocks under the data (qemu-img map, filefrag)"
		continue
	fi
	for b in $blocks; do
		check "$t: host block $b made bad" msg addbadblock "$b"
	done
	DEVS="$DEVS $f:$dev"
done
sync
echo 3 >/proc/sys/vm/drop_caches
check "bad blocks enabled" msg enable
for fd in $DEVS; do
	f=${fd%%:*} dev=${fd#*:}
	t="dm-dust $f"
	for k in 1024 1536 2044; do
		eio "$t: the 4 KiB at KiB $k" "$dev" "$k" 4
	done
	eio "$t: the second MiB" "$dev" 1024 1024
	check "$t: the first 1020 KiB read right" same_as "$dev" 0 1020 "$W/p0"
	check "$t: the 4 KiB at KiB 1528 (two blocks before a bad one) read right" \
		same_as "$dev" 1528 4 "$W/p2"
	check "$t: the last 2 MiB read right" same_as "$dev" 2048 2048 "$W/p4"
	check "$t: detach under the fault" timeout 60 "$VDIMGCTL" detach "$dev"
	VD_DEVS=$(list_remove "$dev" $VD_DEVS)
	check "$t: the device is gone after detach" wait_gone "$dev"
done
check "bad blocks disabled" msg disable
echo 3 >/proc/sys/vm/drop_caches
for fd in $DEVS; do
	f=${fd%%:*}
	t="dm-dust $f"
	img=$H/img.$f
	if dev=$(vd_attach -r -t "$f" "$img"); then
		check "$t: after the fault the 4 MiB read back" same_as "$dev" 0 4096 "$W/pat"
		check "$t: detach" vd_detach "$dev"
	else
		fail "$t: re-attach read-only"
	fi
	out=$(qemu_check "$f" "$img")
	rc=$?
	echo "$out" | sed 's/^/  | /'
	check_eq "$t: qemu-img check clean" "$rc" 0
done
umount_dev "$H" || fail "umount the host ext4"
done_testing
