#!/bin/sh
# Bad blocks under the host file system: the ext4 holding a QCOW2 and a VDI image sits on dm-dust (4 KiB blocks); 4 MiB are written through vdimg and fsynced, the page cache dropped, then three host blocks under the image's data for the disk's second MiB (found with qemu-img map and FIEMAP) are made bad: a direct read of each of those 4 KiB and of that MiB through /dev/vdimgN gets EIO within 10 s, the rest (the first 1020 KiB, the 4 KiB 8 KiB before the middle bad block, the last 2 MiB) reads back right, detach works; with the fault disabled a re-attach reads all 4 MiB back and qemu-img check is clean. dm-dust is in the debug kernel only (CONFIG_DM_DUST is not set in Debian's 6.1 and 6.12 kernels: skipped there with that reason); run-all.sh runs it in the debug-kernel stage
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
truncate -s 64M "$W/data.img" || die "truncate"
loop=$(loop_attach "$W/data.img") || die "losetup"
DM=du$$
# dust DEV OFFSET BLKSZ: blocks of 4 KiB, the host ext4's blocks, so FIEMAP's numbers are dust's
"$DMSETUP" create --noudevsync "$DM" --table "0 $((64 * 2048)) dust $loop 0 4096" ||
	die "dmsetup create"
"$DMSETUP" mknodes "$DM" 2>/dev/null
dm=/dev/mapper/$DM
wait_for_dev "$dm" || die "$dm did not appear"
"$MKFS_EXT4" -q -F -b 4096 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$dm" ||
	die "mkfs"
H=$W/host
mount_dev "$dm" "$H" || die "mount the host ext4"
mkrandom "$W/pat" 4 || die "pattern"
want=$(sha_of "$W/pat")

msg() {
	"$DMSETUP" message "$DM" 0 "$@"
}

# part_sha FILE-OR-DEV SKIP COUNT [iflag]: sha256 of COUNT KiB at SKIP KiB (multiples of 4)
part_sha() {
	dd if="$1" bs=4k skip=$(($2 / 4)) count=$(($3 / 4)) ${4:+iflag=$4} status=none |
		sha256sum | cut -d' ' -f1
}

# host_block F IMAGE OFFSET: the host fs block (= dust block) holding the byte at virtual OFFSET
host_block() {
	local fo
	# the image's extent holding OFFSET, and where in the file it is (-U: vdimg has it attached)
	fo=$("$QEMU_IMG" map -U -f "$(qemu_fmt "$1")" --output=json "$2" |
		sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"data": true.*"offset": \([0-9]*\).*/\1 \2 \3/p' |
		while read -r s l o; do
			[ "$3" -ge "$s" ] && [ "$3" -lt $((s + l)) ] && echo $((o + $3 - s))
		done)
	[ -n "$fo" ] || return 1
	# its file block in FIEMAP's extents (ext, logical start, end, physical start, end, length)
	"$FILEFRAG" -v -b4096 "$2" | sed -n 's/\.\./ /g; s/://gp' |
		awk -v b=$((fo / 4096)) '$1 ~ /^[0-9]+$/ && b >= $2 && b <= $3 { print $4 + b - $2; f = 1 }
			END { exit !f }'
}

# eio T DEV SKIP COUNT: a direct read of COUNT KiB at SKIP KiB (a multiple of COUNT), in one
# request, fails with EIO within 10 s
eio() {
	local out rc t0 n
	t0=$(date +%s)
	out=$(timeout 60 dd if="$2" of=/dev/null bs="$4"k skip=$(($3 / $4)) count=1 iflag=direct 2>&1)
	rc=$?
	n=$(($(date +%s) - t0))
	if [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "Input/output error" &&
		[ $n -lt 10 ]; then
		ok "$1: EIO ($n s)"
	else
		fail "$1: EIO within 10 s" "exit $rc after $n s: $out"
	fi
}

for f in qcow2 vdi; do
	t="dm-dust $f"
	img=$H/img.$f
	"$VDIMGCTL" create -t "$f" -s 32M "$img" >/dev/null || { fail "$t: create"; continue; }
	dev=$(vd_attach -t "$f" "$img") || { fail "$t: attach"; continue; }
	check "$t: 4 MiB written and fsynced" \
		dd if="$W/pat" of="$dev" bs=1M oflag=direct conv=fsync status=none || continue
	# the disk's second MiB: bad blocks under its first, middle and last 4 KiB
	bad=
	for k in 1024 1536 2044; do
		b=$(host_block "$f" "$img" $((k * 1024))) || { fail "$t: host block of KiB $k"; continue; }
		echo "# $t: KiB $k of the disk is in host block $b"
		check "$t: host block $b made bad" msg addbadblock "$b"
		bad="$bad $k"
	done
	sync
	echo 3 >/proc/sys/vm/drop_caches
	check "$t: bad blocks enabled" msg enable
	for k in $bad; do
		eio "$t: the 4 KiB at KiB $k" "$dev" "$k" 4
	done
	eio "$t: the second MiB" "$dev" 1024 1024
	# (clear of the bad host blocks even were the image's data not 4 KiB aligned in its file)
	check_eq "$t: the first 1020 KiB read right" "$(part_sha "$dev" 0 1020 direct)" \
		"$(part_sha "$W/pat" 0 1020)"
	check_eq "$t: the 4 KiB at KiB 1528 (two blocks before a bad one) read right" \
		"$(part_sha "$dev" 1528 4 direct)" "$(part_sha "$W/pat" 1528 4)"
	check_eq "$t: the last 2 MiB read right" "$(part_sha "$dev" 2048 2048 direct)" \
		"$(part_sha "$W/pat" 2048 2048)"
	check "$t: detach under the fault" timeout 60 "$VDIMGCTL" detach "$dev"
	VD_DEVS=$(list_remove "$dev" $VD_DEVS)
	check "$t: the device is gone after detach" wait_gone "$dev"
	check "$t: bad blocks disabled" msg disable
	echo 3 >/proc/sys/vm/drop_caches
	if dev=$(vd_attach -r -t "$f" "$img"); then
		check_eq "$t: after the fault the 4 MiB read back" \
			"$(part_sha "$dev" 0 4096 direct)" "$want"
		check "$t: detach" vd_detach "$dev"
	else
		fail "$t: re-attach read-only"
	fi
	out=$(qemu_check "$f" "$img")
	rc=$?
	echo "$out" | sed 's/^/  | /'
	check_eq "$t: qemu-img check clean" "$rc" 0
	check "$t: vdimgctl check" "$VDIMGCTL" check -t "$f" "$img"
	check "$t: bad blocks cleared" msg clearbadblocks
	rm -f "$img"
done
umount_dev "$H" || fail "umount the host ext4"
done_testing
