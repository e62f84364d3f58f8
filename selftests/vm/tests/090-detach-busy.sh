#!/bin/sh
# Detach while fio is running: deferred, no oops or hang; data flushed before survives re-attach
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO"

img=$TEST_WORK/busy.img
truncate -s 128M "$img"
mkrandom "$TEST_WORK/before" 8
dev=$(vd_attach -t raw "$img") || die "attach failed"
check "write 8 MiB and flush (fsync)" dd if="$TEST_WORK/before" of="$dev" bs=1M conv=fsync status=none

"$FIO" --name=busy --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --rw=randrw \
	--bs=4k --offset=16M --size=96M --time_based --runtime=15 --output-format=terse \
	--allow_file_create=0 >"$TEST_WORK/fio.out" 2>&1 &
fio=$!
# detach only once fio holds the device (a slow start would make this an idle detach)
check "fio has the device open" wait_open "$dev"
sleep 2
check "vdimgctl detach of the busy device succeeds (deferred)" "$VDIMGCTL" detach "$dev"
VD_DEVS=
check "the device is still there while fio runs" test -e "/sys/block/${dev##*/}"
check_eq "sysfs autoclear" "$(vd_attr "$dev" autoclear 2>/dev/null)" 1
wait $fio
rc=$?
cat "$TEST_WORK/fio.out" | tail -n 3
check_eq "fio finished without an I/O error" "$rc" 0
check "the device goes away when fio closes it" wait_gone "$dev"

# a second round: kill fio in the middle of its I/O, then detach
dev=$(vd_attach -t raw "$img") || die "re-attach failed"
# --thread: the job runs in the process that is killed (fio forks a process per job otherwise)
"$FIO" --thread --name=killed --filename="$dev" --direct=1 --ioengine=libaio --iodepth=32 --rw=randwrite \
	--bs=64k --offset=16M --size=96M --time_based --runtime=60 --output-format=terse \
	--allow_file_create=0 >/dev/null 2>&1 &
fio=$!
check "fio has the device open (second round)" wait_open "$dev"
sleep 2
kill -KILL $fio
wait $fio
out=$("$VDIMGCTL" detach "$dev" 2>&1)
rc=$?
echo "vdimgctl detach after kill: rc $rc $out; state $(vd_attr "$dev" state 2>&1)"
check_eq "detach after fio was killed mid-I/O" "$rc" 0
VD_DEVS=
if ! wait_gone "$dev"; then
	sleep 10
	echo "after 15 s: state $(vd_attr "$dev" state 2>&1), autoclear $(vd_attr "$dev" autoclear 2>&1)"
	for p in /proc/[0-9]*; do
		ls -l "$p/fd" 2>/dev/null | grep -q "${dev##*/}" && echo "open by ${p#/proc/}: $(tr '\0' ' ' <"$p/cmdline")"
	done
fi
check "the device is gone" test ! -e "/sys/block/${dev##*/}"
check "sync" sync

dev=$(vd_attach -t raw "$img") || die "re-attach failed"
check_eq "data flushed before the detach reads back" "$(sha_of "$dev" 8388608)" \
	"$(sha_of "$TEST_WORK/before")"
check "detach" vd_detach "$dev"
done_testing
