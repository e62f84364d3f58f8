#!/bin/sh
# Hostile images through the kernel (issue 16): the hand-made malformed images of selftests/host/mkhostile.py (table entries past the end of the file, at the header or at other metadata, shared clusters, huge, zero or odd sizes; qcow2, VHD, VDI, QED, VHDX, VMDK, Parallels) and a sample of the libFuzzer corpora (selftests/fuzz/corpus: qcow, qcow2, qed, vdi, vhd, vhdx, vmdk, parallels, dmg; one entry in HOSTILE_EVERY, default 20 in the full tier and none in the short one, whose job is the debug kernel's KASAN over the hand-made ones; HOSTILE_EVERY=1 replays them all, outside CI) are each attached read-only (the first 4 MiB and the last MiB read) and read-write on a copy (64 KiB written at the start, the middle and the end, then read): an attach either fails with a vdimgctl message or gives a device whose I/O works or fails with an error, no read, write or detach hangs (60 s each), every detach succeeds, and the kernel log has no oops, WARN, KASAN or lockdep report after any image
# timeout: 1500
. /vmtest/lib.sh
require_vdimg
H=/scratch/fixtures/hostile
[ -d "$H/made" ] || skip "no hostile fixtures (mkhostile.py failed on the host)"
W=$TEST_WORK
EVERY=${HOSTILE_EVERY:-$(tier 20 0)}
head -c 65536 /dev/urandom >"$W/pat"
MiB=1048576

# io DEV: reads (and with rw, writes) that must not hang; prints what went wrong
io() {
	local dev=$1 rw=$2 size last o
	size=$(blockdev --getsize64 "$dev" 2>/dev/null) || { echo "no size;"; return; }
	last=$((size / MiB - 1))
	[ "$last" -lt 0 ] && last=0
	timeout 60 dd if="$dev" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
	[ $? -eq 124 ] && echo "a read of the start hung;"
	timeout 60 dd if="$dev" of=/dev/null bs=1M skip="$last" count=1 iflag=direct 2>/dev/null
	[ $? -eq 124 ] && echo "a read of the end hung;"
	[ "$rw" = rw ] || return 0
	for o in 0 $((size / 2 / 65536)) $((size / 65536 - 1)); do
		[ "$o" -lt 0 ] && continue
		timeout 60 dd if="$W/pat" of="$dev" bs=64k seek="$o" count=1 oflag=direct \
			conv=notrunc 2>/dev/null
		[ $? -eq 124 ] && echo "a write at $o x 64 KiB hung;"
		timeout 60 dd if="$dev" of=/dev/null bs=64k skip="$o" count=1 iflag=direct 2>/dev/null
		[ $? -eq 124 ] && echo "a read after the write at $o x 64 KiB hung;"
	done
	timeout 60 sync
}

# one FMT FILE NAME: both attaches of one image; a sub-result
one() {
	local fmt=$1 f=$2 name=$3 dev mode why="" n0 flags
	n0=$(dmesg | wc -l)
	for mode in ro rw; do
		cp "$f" "$W/h.img" || { why="cannot copy"; break; }
		flags=-r
		[ "$mode" = rw ] && flags=
		if dev=$(timeout 60 "$VDIMGCTL" attach -f --show $flags -t "$fmt" "$W/h.img" \
			 2>"$W/err"); then
			if wait_for_dev "$dev"; then
				why="$why$(io "$dev" "$mode")"
			else
				why="$why $mode: $dev did not appear;"
			fi
			# a final flush that finds the metadata corrupt fails the detach, which
			# still removes the device: a clear error, as long as the device is gone
			timeout 60 "$VDIMGCTL" detach "$dev" 2>"$W/err" ||
				grep -q ': detached, but its last metadata write failed: ' "$W/err" ||
				why="$why $mode: detach failed: $(head -n1 "$W/err");"
			wait_gone "$dev" || why="$why $mode: $dev is still there after the detach;"
		elif [ $? -eq 124 ]; then
			why="$why $mode: the attach hung;"
		elif ! grep -q '^vdimgctl: ' "$W/err"; then
			why="$why $mode: the attach failed without a message;"
		fi
	done
	if dmesg | tail -n +$((n0 + 1)) | kernel_log_bad >"$W/bad"; then
		why="$why the kernel log: $(head -n 3 "$W/bad" | tr '\n' ' ')"
	fi
	if [ -z "$why" ]; then
		ok "$name"
	else
		fail "$name" "$why"
	fi
}

fmt_of() { [ "$1" = qcow1 ] && echo qcow || echo "$1"; }

made=0 fuzz=0
for f in "$H"/made/*/*; do
	d=$(basename "$(dirname "$f")")
	one "$(fmt_of "$d")" "$f" "made/$d/$(basename "$f")"
	made=$((made + 1))
done
# corpus entries whose final flush finds corrupt refcounts (a detach that fails with EUCLEAN and
# removes the device; 361 found them): always, whatever the sample
for f in 46217ebcafe7f88adbf682e8bc4526a4f33bf86e 91854db2df2764d6f692c89b9d1ed26ab360dfc7; do
	one qcow2 "$H/corpus/qcow2/$f" "corpus/qcow2/$f (the final flush fails)"
	fuzz=$((fuzz + 1))
done
for d in "$H"/corpus/*; do
	[ "$EVERY" -gt 0 ] || break
	i=0
	for f in "$d"/*; do
		i=$((i + 1))
		[ $(((i - 1) % EVERY)) -eq 0 ] || continue
		one "$(fmt_of "$(basename "$d")")" "$f" "corpus/$(basename "$d")/$(basename "$f")"
		fuzz=$((fuzz + 1))
	done
done
echo "# $made hand-made images and $fuzz corpus entries (one in ${EVERY}; 0: none), each attached read-only and read-write"
rm -f "$W/h.img" "$W/pat" "$W/err" "$W/bad"
done_testing
