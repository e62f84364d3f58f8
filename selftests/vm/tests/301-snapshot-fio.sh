#!/bin/sh
# Live snapshots under load: fio verify=crc32c random writes run while vdimgctl snapshot pushes two new tops (VHD, VDI, VHDX, QCOW2, QED); fio finishes without a verify error, the re-attached three-layer chain passes fio verify_only, qemu-img check and qemu's view of the chain agree where qemu can read it
# timeout: 900
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG"

W=$TEST_WORK
size=48M
job="--name=snapfio --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=4k-64k
 --size=24M --offset=8M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=4242"

fio_out() { # fio_out NAME: the report of a background fio run, shown on failure
	tail -n 30 "$W/fio-$1.out"
}

mkimg() {
	case $1 in
	qed) "$QEMU_IMG" create -q -f qed "$2" "$size" ;;
	*) "$VDIMGCTL" create -t "$1" -s "$size" "$2" ;;
	esac
}

# SNAPFIO_ROUNDS repeats each format (selftests/vm/extra-stress/305-snapshot-fio-rounds.sh), and
# SNAPFIO_FORMATS narrows them: the races it finds (a truncate cutting a write, a fill reading a
# half-written unit) need many tries
rounds=${SNAPFIO_ROUNDS:-1}
formats=
for f in ${SNAPFIO_FORMATS:-vhd vdi vhdx qcow2 qed}; do
	r=0
	while [ "$r" -lt "$rounds" ]; do
		formats="$formats $f"
		r=$((r + 1))
	done
done

for f in $formats; do
	t="$f"
	qf=$(qemu_fmt "$f")
	base=$W/fbase.$f s1=$W/fs1.$f s2=$W/fs2.$f
	rm -f "$base" "$s1" "$s2"
	mkimg "$f" "$base" || { fail "$t: create"; continue; }
	dev=$(vd_attach "$base") || { fail "$t: attach"; continue; }

	"$FIO" $job --filename="$dev" --do_verify=1 --output="$W/fio-$f.out" &
	pid=$!
	wait_open "$dev" || fail "$t: fio did not open the device"
	sleep 0.5
	running=0
	kill -0 "$pid" 2>/dev/null && running=1
	check "$t: snapshot 1 while fio writes" "$VDIMGCTL" snapshot "$dev" "$s1"
	sleep 0.5
	kill -0 "$pid" 2>/dev/null && running=$((running + 1))
	check "$t: snapshot 2 while fio writes" "$VDIMGCTL" snapshot "$dev" "$s2"
	if wait "$pid"; then
		ok "$t: fio verify=crc32c across two snapshots"
	else
		fail "$t: fio verify=crc32c across two snapshots" "$(fio_out "$f")"
	fi
	if [ "$running" -eq 2 ]; then
		ok "$t: both snapshots were taken while fio was running"
	else
		ok_skip "$t: both snapshots were taken while fio was running" "fio ran only through $running of them"
	fi
	check_eq "$t: depth 3" "$(vd_attr "$dev" depth)" 3
	check_eq "$t: chain" "$(vd_attr "$dev" chain | tr '\n' ' ')" "$base $s1 $s2 "
	sync
	sha=$(sha_of "$dev")
	check "$t: detach" vd_detach "$dev"

	dev=$(vd_attach "$s2") || { fail "$t: re-attach the chain"; continue; }
	check_eq "$t: re-attached depth" "$(vd_attr "$dev" depth)" 3
	check_eq "$t: re-attached chain reads what the device held" "$(sha_of "$dev")" "$sha"
	if "$FIO" $job --filename="$dev" --verify_only=1 --output="$W/fio-$f.out"; then
		ok "$t: fio verify_only after re-attach"
	else
		fail "$t: fio verify_only after re-attach" "$(fio_out "$f")"
	fi
	check "$t: detach after verify" vd_detach "$dev"
	case $f in
	qcow2|qed)
		for x in "$base" "$s1" "$s2"; do
			check "$t: qemu-img check ${x##*/}" "$QEMU_IMG" check -q -f "$qf" "$x"
		done
		check_eq "$t: qemu-img reads the chain as the device did" "$(raw_sha "$s2" "$f")" "$sha" ;;
	vdi|vhdx)
		check "$t: qemu-img check of the base" "$QEMU_IMG" check -q -f "$qf" "$base" ;;
	esac
	rm -f "$base" "$s1" "$s2"
done
done_testing
