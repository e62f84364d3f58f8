#!/bin/sh
# tstVDSnap through the device: 15 rounds (STRESS_ROUNDS, 30 as VirtualBox's test does) of random writes and zeroing (dd, blkdiscard -z) to the device with a raw shadow file, a live snapshot (vdimgctl snapshot) in half of them, and every fifth round a detach, an offline merge of the layers above a random one into it (vdimgctl commit -b LAYER -d TOP) and a re-attach of the shorter chain; the device equals the shadow after every step, for a QCOW2, a VHD and a VDI chain
# timeout: 900
. /vmtest/lib.sh
require_vdimg
require_cmd "$BLKDISCARD"

W=$TEST_WORK
size=16M
sectors=32768
mkrandom "$W/rnd" 1 || die "cannot write $W/rnd"

"$VDIMGCTL" --help 2>&1 | grep -q "snapshot" || { fail "vdimgctl snapshot missing"; done_testing; }
"$VDIMGCTL" --help 2>&1 | grep -q "commit" || { fail "vdimgctl commit missing"; done_testing; }

rand() { # rand N: 0..N-1
	echo $(( (RANDOM * 32768 + RANDOM) % $1 ))
}

# round_io DEV SHADOW: 6 writes of 512 B..128 KiB at any sector, one zeroing of up to 64 KiB
round_io() {
	local i=0 off len src
	while [ $i -lt 6 ]; do
		len=$(($(rand 256) + 1))
		off=$(rand $((sectors - len)))
		src=$(rand $((2048 - len)))
		dd if="$W/rnd" of="$1" bs=512 skip="$src" seek="$off" count="$len" oflag=direct \
			conv=notrunc status=none || return 1
		dd if="$W/rnd" of="$2" bs=512 skip="$src" seek="$off" count="$len" conv=notrunc \
			status=none || return 1
		i=$((i + 1))
	done
	len=$(($(rand 128) + 1))
	off=$(rand $((sectors - len)))
	blkdiscard -z -o $((off * 512)) -l $((len * 512)) "$1" || return 1
	dd if=/dev/zero of="$2" bs=512 seek="$off" count="$len" conv=notrunc status=none
}

# CI runs 15 rounds (three commits and about seven snapshots per format); STRESS_ROUNDS=30 is
# tstVDSnap's count, 9-10 minutes on a loaded machine
rounds=${STRESS_ROUNDS:-15}
for f in qcow2 vhd vdi; do
	t=$f
	d=$W/$f
	rm -rf "$d"
	mkdir -p "$d"
	RANDOM=$(($(printf '%d' "'$f") * 7))
	layers="$d/l0.$f"	# base first
	nl=1 next=1 snaps=0 commits=0 bad=
	"$VDIMGCTL" create -t "$f" -s "$size" "$d/l0.$f" || { fail "$t: create the base"; continue; }
	truncate -s "$size" "$d/shadow"
	dev=$(vd_attach "$d/l0.$f") || { fail "$t: attach"; continue; }
	round=0
	while [ $round -lt "$rounds" ]; do
		round_io "$dev" "$d/shadow" || { bad="round $round: I/O failed"; break; }
		cmp "$dev" "$d/shadow" >/dev/null || { bad="round $round: device != shadow after writes"; break; }
		if [ $(rand 2) -eq 1 ]; then
			new=$d/l$next.$f
			next=$((next + 1))
			"$VDIMGCTL" snapshot "$dev" "$new" || { bad="round $round: snapshot $new failed"; break; }
			layers="$layers $new" nl=$((nl + 1)) snaps=$((snaps + 1))
			[ "$(vd_attr "$dev" depth)" = $nl ] || { bad="round $round: depth $(vd_attr "$dev" depth), want $nl"; break; }
			cmp "$dev" "$d/shadow" >/dev/null || { bad="round $round: device != shadow after the snapshot"; break; }
		fi
		if [ $((round % 5)) -eq 4 ] && [ $nl -ge 2 ]; then
			# merge the layers above a random layer i into it, drop them, re-attach [0..i]
			i=$(rand $((nl - 1)))
			set -- $layers
			top=$(eval echo "\${$nl}")
			keep= k=0
			for x in $layers; do
				[ $k -le $i ] && keep="$keep $x"
				k=$((k + 1))
			done
			base=$(echo $keep | awk '{ print $NF }')
			vd_detach "$dev" || { bad="round $round: detach"; break; }
			dev=
			"$VDIMGCTL" commit -b "$base" -d "$top" ||
				{ bad="round $round: vdimgctl commit -b $base -d $top failed"; break; }
			layers=$keep nl=$((i + 1)) commits=$((commits + 1))
			dev=$(vd_attach "$base") || { bad="round $round: re-attach $base after commit"; break; }
			[ "$(vd_attr "$dev" depth)" = $nl ] || { bad="round $round: depth after commit $(vd_attr "$dev" depth), want $nl"; break; }
			cmp "$dev" "$d/shadow" >/dev/null || { bad="round $round: device != shadow after commit into layer $i"; break; }
		fi
		round=$((round + 1))
	done
	if [ -z "$bad" ]; then
		ok "$t: $rounds rounds, $snaps snapshots, $commits commits: device = shadow after every step"
	else
		fail "$t: $rounds rounds of writes, snapshots and commits: device = shadow after every step" "$bad"
	fi
	if [ -n "$dev" ]; then
		vd_detach "$dev"
		set -- $layers
		dev=$(vd_attach -r "$(eval echo "\${$nl}")") && check "$t: re-attached read-only = shadow" cmp "$dev" "$d/shadow"
	fi
	rm -rf "$d"
done
done_testing
