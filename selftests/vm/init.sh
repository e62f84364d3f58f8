#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the VM test initramfs (busybox ash). Mounts the pseudo filesystems and the scratch disk
# (/dev/vda, ext4, made by the host), reads /scratch/vmtest.conf (VMTEST_MODE, VMTEST_FILTER,
# VMTEST_TIMEOUT), then runs the tests (or the benchmark, the demo, a shell), and powers off.
#
# Test protocol: each /vmtest/tests/NNN-name.sh runs in a session of its own, in /scratch/work/NAME,
# with a watchdog; it prints KTAP sub-results (`ok N - what`) or nothing, and exits 0 (pass), 1 (fail)
# or 4 (skip; its last "SKIP: reason" line says why). After each test the kernel log it produced is
# checked for splats. The results go to /scratch/vmtest/ktap, which is printed at the end between
# VMTEST-KTAP markers, followed by the whole kernel log between VMTEST-DMESG markers. Progress lines
# "# vmtest-begin/end" go to the console as tests run, so the host can name a test that took the VM
# down with it.

/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
dmesg -n 1
hostname vmtest

# kernel log lines that fail a test (see lib.sh for the same list)
. /vmtest/lib.sh

die_early() {
	echo "vmtest: $*"
	echo "==== VMTEST-DMESG-BEGIN ===="
	dmesg
	echo "==== VMTEST-DMESG-END ===="
	poweroff -f
}

for m in virtio_pci virtio_blk ext4 loop nbd; do
	/sbin/modprobe -q "$m" 2>/dev/null
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
mount -t ext4 /dev/vda /scratch || die_early "cannot mount the scratch disk /dev/vda"
VMTEST_MODE=tests
VMTEST_FILTER=
VMTEST_SKIP=		# tests not to run although they match (those a first boot finished: run.sh)
VMTEST_TIMEOUT=300
VMTEST_TIER=full
[ -f /scratch/vmtest.conf ] && . /scratch/vmtest.conf
# A sanitizer kernel (KASAN, lockdep) runs everything several times slower: tests shrink their
# data sizes (never their checks) when VMTEST_SLOW=1.
if [ -z "${VMTEST_SLOW:-}" ]; then
	VMTEST_SLOW=0
	grep -q ' kasan_report$' /proc/kallsyms 2>/dev/null && VMTEST_SLOW=1
fi
export VMTEST_SLOW
# VMTEST_TIER=short (run.sh --tier short): tests that repeat one check over many variants keep a
# representative few; see short_tier in lib.sh
export VMTEST_TIER
export VMTEST_SKIP	# the harness's own test of a second boot reads it
RES=/scratch/vmtest
mkdir -p "$RES" /scratch/work

finish() {
	sync
	umount /scratch 2>/dev/null
	poweroff -f
}

# proc_state PID: the state letter of a process, empty when it is gone
proc_state() {
	local _st
	[ -r "/proc/$1/stat" ] || return 0
	_st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
	echo "${_st%% *}"
}

# group_alive PGID: does any process of the group still exist (not a zombie)?
group_alive() {
	local f st
	for f in /proc/[0-9]*/stat; do
		st=$(sed 's/^.*) //' "$f" 2>/dev/null) || continue
		set -- $st
		[ "$3" = "$PGID_Q" ] && [ "$1" != Z ] && return 0
	done
	return 1
}

# cleanup_between_tests WORK OUT: what a test left behind must not break the next one; fails
# when a vdimg device cannot be detached
cleanup_between_tests() {
	local work=$1 out=$2 m left rc=0
	for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null
	done
	left=$(ls /sys/block | grep '^vdimg')
	if [ -n "$left" ]; then
		echo "LEFTOVER: the test left $(echo $left) attached; detaching" >>"$out"
		/usr/sbin/vdimgctl detach -a >>"$out" 2>&1
		sleep 2
		left=$(ls /sys/block | grep '^vdimg')
		if [ -n "$left" ]; then
			echo "LEFTOVER: $(echo $left) cannot be detached" >>"$out"
			rc=1
		fi
	fi
	/usr/sbin/losetup -D 2>/dev/null
	for m in /sys/block/nbd*; do
		[ -e "$m/pid" ] && /usr/sbin/qemu-nbd -d "/dev/${m##*/}" >/dev/null 2>&1
	done
	rm -rf "$work"
	return $rc
}

# run_one I NAME FILE: runs a test, appends its KTAP to $KTAP; returns 2 when it hung
run_one() {
	local i=$1 name=$2 file=$3 work=/scratch/work/$2 out=$RES/$2.out
	local timeout rc= st t0 t1 elapsed subs fails reason dm hung=0 leftover=0 verdict

	timeout=$(sed -n 's/^# timeout: *\([0-9][0-9]*\).*/\1/p' "$file" | head -n1)
	[ -n "$timeout" ] || timeout=$VMTEST_TIMEOUT
	rm -rf "$work"
	mkdir -p "$work"
	dmesg -c >>"$RES/dmesg.log"
	echo "# vmtest-begin $i $name"
	t0=$(date +%s)
	(cd "$work" && TEST_NAME=$name TEST_WORK=$work exec setsid sh "$file") >"$out" 2>&1 </dev/null &
	PGID_Q=$!
	elapsed=0
	while [ -n "$(proc_state $PGID_Q)" ] && [ "$(proc_state $PGID_Q)" != Z ]; do
		sleep 1
		elapsed=$((elapsed + 1))
		[ $elapsed -ge "$timeout" ] && break
	done
	if [ $elapsed -ge "$timeout" ]; then
		echo "TIMEOUT: still running after ${timeout}s, killed" >>"$out"
		kill -KILL -"$PGID_Q" 2>/dev/null
		rc=124
	fi
	# a killed test that does not go away is stuck in the kernel: never wait for it
	elapsed=0
	while [ -n "$(proc_state $PGID_Q)" ] && [ "$(proc_state $PGID_Q)" != Z ] && [ $elapsed -lt 30 ]; do
		sleep 1
		elapsed=$((elapsed + 1))
	done
	if [ -n "$(proc_state $PGID_Q)" ] && [ "$(proc_state $PGID_Q)" != Z ]; then
		hung=1
	else
		wait "$PGID_Q"
		st=$?
		[ -z "$rc" ] && rc=$st
	fi
	# leftovers of the test's session (background fio, daemons) die with it
	kill -KILL -"$PGID_Q" 2>/dev/null
	elapsed=0
	while group_alive && [ $elapsed -lt 30 ]; do
		sleep 1
		elapsed=$((elapsed + 1))
	done
	group_alive && hung=1
	if [ "$hung" = 1 ]; then
		echo "HUNG: processes of the test stay alive (D state?) after SIGKILL" >>"$out"
		ps -o pid,pgid,stat,args >>"$out" 2>&1
		echo w >/proc/sysrq-trigger 2>/dev/null
	elif ! cleanup_between_tests "$work" "$out"; then
		leftover=1
	fi
	t1=$(date +%s)

	dm=$RES/$name.dmesg
	dmesg -c >"$dm"
	cat "$dm" >>"$RES/dmesg.log"

	subs=$(grep -cE '^(not )?ok [0-9]+' "$out")
	fails=$(grep -cE '^not ok [0-9]+' "$out")
	verdict=ok
	reason=
	if [ "$hung" = 1 ]; then
		verdict="not ok"; reason="hung"
	elif [ "$rc" = 124 ]; then
		verdict="not ok"; reason="timed out after ${timeout}s"
	elif [ "$rc" = 4 ]; then
		reason=$(sed -n 's/^SKIP: *//p' "$out" | tail -n1)
		[ -n "$reason" ] || reason="skipped"
	elif [ "$rc" != 0 ]; then
		verdict="not ok"; reason="exit status $rc"
	elif [ "$fails" != 0 ]; then
		verdict="not ok"; reason="$fails sub-test(s) failed"
	fi
	if [ "$leftover" = 1 ]; then
		verdict="not ok"; reason="${reason:+$reason; }left a device that cannot be detached"
	fi
	if kernel_log_bad <"$dm" >"$RES/$name.splat"; then
		verdict="not ok"; reason="${reason:+$reason; }kernel log has errors"
	fi

	{
		echo "# $name: $(sed -n '2s/^# *//p' "$file")"
		if [ "$subs" != 0 ]; then
			echo "    KTAP version 1"
			echo "    1..$subs"
			grep -E '^(not )?ok [0-9]+' "$out" | sed 's/^/    /'
		fi
		if [ "$verdict" != ok ]; then
			echo "# --- last output lines of $name:"
			grep -vE '^(not )?ok [0-9]+' "$out" | tail -n 60 | sed 's/^/# /'
			if [ -s "$RES/$name.splat" ]; then
				echo "# --- kernel log:"
				head -n 80 "$RES/$name.splat" | sed 's/^/# /'
			fi
		fi
		# the time each took (as the host runner's lines): where the CI queues are balanced
		if [ "$rc" = 4 ] && [ "$verdict" = ok ]; then
			echo "ok $i - $name # SKIP $reason"
		elif [ "$verdict" = ok ]; then
			echo "ok $i - $name # $((t1 - t0))s"
		else
			echo "not ok $i - $name # $reason ($((t1 - t0))s)"
		fi
	} >>"$KTAP"
	echo "# vmtest-end $i $name $verdict ($((t1 - t0))s)${reason:+ $reason}"
	[ "$hung" = 1 ] && return 2
	return 0
}

run_tests() {
	local tests t n i=0 name leaks hung=0

	KTAP=$RES/ktap
	tests=
	for t in /vmtest/tests/[0-9]*.sh; do
		name=$(basename "$t" .sh)
		if [ -n "$VMTEST_FILTER" ] && ! echo "$name" | grep -qE -- "$VMTEST_FILTER"; then
			continue
		fi
		if [ -n "$VMTEST_SKIP" ] && echo "$name" | grep -qE -- "$VMTEST_SKIP"; then
			continue
		fi
		tests="$tests $t"
	done
	n=$(echo $tests | wc -w)
	# +1: the boot log check; +1: the kmemleak scan where the kernel has it
	n=$((n + 1))
	[ -w /sys/kernel/debug/kmemleak ] && n=$((n + 1))
	echo "KTAP version 1" >"$KTAP"
	echo "# kernel $(uname -r)" >>"$KTAP"
	echo "1..$n" >>"$KTAP"
	echo "# vmtest-plan $n"

	i=$((i + 1))
	dmesg -c >"$RES/dmesg-boot.log"
	cat "$RES/dmesg-boot.log" >>"$RES/dmesg.log"
	if kernel_log_bad <"$RES/dmesg-boot.log" >"$RES/boot.splat"; then
		{ echo "# kernel log during boot:"; head -n 80 "$RES/boot.splat" | sed 's/^/# /'
		  echo "not ok $i - boot # kernel log has errors"; } >>"$KTAP"
	else
		echo "ok $i - boot" >>"$KTAP"
	fi

	for t in $tests; do
		i=$((i + 1))
		name=$(basename "$t" .sh)
		if [ "$hung" = 1 ]; then
			echo "ok $i - $name # SKIP not run: an earlier test hung" >>"$KTAP"
			continue
		fi
		run_one "$i" "$name" "$t" || hung=1
		sync
	done

	if [ -w /sys/kernel/debug/kmemleak ]; then
		i=$((i + 1))
		# objects must be older than a few seconds to be reported; scan twice as the docs advise
		if echo scan >/sys/kernel/debug/kmemleak 2>/dev/null; then
			sleep 6
			echo scan >/sys/kernel/debug/kmemleak
			leaks=$(cat /sys/kernel/debug/kmemleak)
			if [ -n "$leaks" ]; then
				{ echo "# kmemleak:"; echo "$leaks" | head -n 200 | sed 's/^/# /'
				  echo "not ok $i - kmemleak # unreferenced objects"; } >>"$KTAP"
			else
				echo "ok $i - kmemleak" >>"$KTAP"
			fi
		else
			echo "ok $i - kmemleak # SKIP kmemleak is disabled" >>"$KTAP"
		fi
	fi
	dmesg -c >>"$RES/dmesg.log"

	echo "==== VMTEST-KTAP-BEGIN ===="
	cat "$KTAP"
	echo "==== VMTEST-KTAP-END ===="
	echo "==== VMTEST-DMESG-BEGIN ===="
	cat "$RES/dmesg.log"
	echo "==== VMTEST-DMESG-END ===="
}

case $VMTEST_MODE in
tests) run_tests ;;
bench) BENCH_RUNTIME=$BENCH_RUNTIME BENCH_SIZE_MIB=$BENCH_SIZE_MIB BENCH_CONTENDERS=$BENCH_CONTENDERS \
	BENCH_SUITE=${BENCH_SUITE:-steady} BENCH_CHAIN_FORMAT=${BENCH_CHAIN_FORMAT:-qcow2} BENCH_REPEAT=${BENCH_REPEAT:-1} \
	sh /vmtest/bench.sh --guest ;;
demo) sh /vmtest/demo.sh --guest ;;
shell)
	echo "vmtest: shell; 'poweroff -f' to leave"
	setsid cttyhack sh
	;;
*) echo "vmtest: unknown mode $VMTEST_MODE" ;;
esac
finish
