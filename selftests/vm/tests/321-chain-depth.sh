#!/bin/sh
# A 300-layer QCOW2 chain (and a 300-layer VHD chain) made with vdimgctl create --parent: vdimgctl attach resolves and attaches it, data written to the base before the children existed and data written through the top read back; fio randread 4k on a range resident in the top for 10 s at depth 1 and at depth 300 (the IOPS and their ratio are printed, only correctness is asserted)
# timeout: 900
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IO"

W=$TEST_WORK
depth=300
secs=$(scaled 10)

iops() { # iops DEV: read IOPS of 4k random reads in [8, 9) MiB for $secs s
	"$FIO" --name=depth --filename="$1" --direct=1 --ioengine=psync --rw=randread --bs=4k \
		--offset=8M --size=1M --time_based --runtime="$secs" --verify=pattern \
		--verify_pattern=0x22 --verify_fatal=1 --output-format=terse --terse-version=3 |
		awk -F';' '{ print $8 }'
}

t0=$(date +%s)
for f in qcow2 vhd; do
	t="$f x$depth"
	if [ "$f" = vhd ] && [ $(($(date +%s) - t0)) -gt 240 ]; then
		ok_skip "$t" "the QCOW2 chain took $(($(date +%s) - t0)) s already"
		continue
	fi
	d=$W/$f
	rm -rf "$d"
	mkdir -p "$d"
	"$VDIMGCTL" create -t "$f" -s 16M "$d/l0.$f" || { fail "$t: create the base"; continue; }
	"$QEMU_IO" -f "$(qemu_fmt "$f")" -c "write -P 0x11 0 1M" "$d/l0.$f" >/dev/null ||
		{ fail "$t: data in the base"; continue; }
	i=1
	while [ $i -lt $depth ]; do
		"$VDIMGCTL" create -t "$f" --parent "$d/l$((i - 1)).$f" "$d/l$i.$f" || break
		i=$((i + 1))
	done
	check_eq "$t: $depth layers made with vdimgctl create --parent" $i $depth
	[ $i -eq $depth ] || continue
	top=$d/l$((depth - 1)).$f
	free -m | sed 's/^/# /'
	dev=$(vd_attach "$top" 2>"$W/attach.err") || {
		fail "$t: vdimgctl attach resolves $depth layers" "$(tail -n 3 "$W/attach.err")"
		free -m | sed 's/^/# /'
		continue
	}
	free -m | sed 's/^/# /' 
	ok "$t: vdimgctl attach resolves $depth layers"
	check_eq "$t: depth" "$(vd_attr "$dev" depth)" $depth
	check_eq "$t: base data found through $depth layers" "$(sha_of "$dev" 1048576)" \
		"$(pattern_sha 021 1048576)"
	check "$t: write 1 MiB at 8 MiB through the top" \
		sh -c "head -c 1048576 /dev/zero | tr '\\0' '\\042' | dd of=$dev bs=64k seek=128 oflag=direct conv=notrunc status=none"
	check_eq "$t: top data reads back" \
		"$(dd if="$dev" bs=1M skip=8 count=1 status=none | sha256sum | cut -d' ' -f1)" \
		"$(pattern_sha 042 1048576)"
	check_eq "$t: a range nobody wrote reads zeros" \
		"$(dd if="$dev" bs=1M skip=12 count=1 status=none | sha256sum | cut -d' ' -f1)" \
		"$(pattern_sha 000 1048576)"
	if [ "$f" = qcow2 ]; then
		# the same top-resident data in a single image: depth 1
		one=$W/one.qcow2
		rm -f "$one"
		"$VDIMGCTL" create -t qcow2 -s 16M "$one" &&
			"$QEMU_IO" -f qcow2 -c "write -P 0x22 8M 1M" "$one" >/dev/null ||
			{ fail "$t: depth-1 image"; continue; }
		dev1=$(vd_attach -r "$one") || { fail "$t: attach the depth-1 image"; continue; }
		i1=$(iops "$dev1")
		check "$t: fio randread 4k at depth 1 ($secs s) verified" test -n "$i1"
		vd_detach "$dev1"
		sync
		echo 3 >/proc/sys/vm/drop_caches
		iN=$(iops "$dev")
		check "$t: fio randread 4k at depth $depth ($secs s) verified" test -n "$iN"
		echo "# depth1: $i1 IOPS, depth$depth: $iN IOPS"
		[ -n "$i1" ] && [ -n "$iN" ] && [ "$iN" -gt 0 ] &&
			echo "# depth$depth/depth1 iops ratio: $(awk "BEGIN { printf \"%.2f\", $iN / $i1 }") (depth1/depth$depth slowdown $(awk "BEGIN { printf \"%.2f\", $i1 / $iN }"))"
		rm -f "$one"
	fi
	vd_detach "$dev" || fail "$t: detach"
	rm -rf "$d"
done
done_testing
