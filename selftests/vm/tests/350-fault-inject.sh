#!/bin/sh
# Allocation failures inside the kernel (debug kernel: CONFIG_FAULT_INJECTION): the attach ioctl and the detach ioctl (final flush, backend close, disk teardown) are run with their N-th fault-injection point failing (fail-nth: slab and page allocations, including the page cache reads of the image's metadata), walking N over every point (FI_EVERY=1) or a stride of them, for each writable format; then slab allocations made from vdimg's own code in the I/O workers (failslab with a stack filter on the module's text) fail once at the K-th call during first writes, reads and a flush. Every time: a clean error or success, never a wrong answer (a failed attach leaves nothing behind, a successful one reads back what it wrote, a failed detach leaves a device that detaches, data written before a detach is in the image), no oops/WARN/KASAN/lockdep (the harness checks the log), kmemleak clean at the end of the run; after the I/O faults the device still works, re-attaches with its synced data and qemu-img check finds no corruption
# timeout: 900
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" /vmtest/abi_test
ABI=/vmtest/abi_test
DBG=/sys/kernel/debug
[ -e /proc/thread-self/fail-nth ] || skip "the kernel has no fault injection (CONFIG_FAULT_INJECTION: the debug kernel has it)"
[ -d $DBG/failslab ] && [ -d $DBG/fail_page_alloc ] ||
	skip "failslab or fail_page_alloc is not in debugfs (CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC, CONFIG_FAULT_INJECTION_DEBUG_FS)"

# CI: a stride over the points of each ioctl (about 24 points each); FI_EVERY=1 walks every point
# and every format (selftests/vm/extra-*/ or VM_EXTRA_TESTS, minutes)
FORMATS=$(tier "qcow2 vhdx vdi vhd qed vmdk parallels" "qcow2 vhdx vdi vhd")
WALK=$(tier 24 12)
KS=$(tier "1 2 3 5 8 13" "1 3 8")
if [ "${FI_EVERY:-0}" = 1 ]; then
	FORMATS="raw qcow2 vhdx vdi vhd qed vmdk parallels"
	WALK=0
	KS="1 2 3 4 5 6 7 8 9 10 12 14 16 20 24 32"
fi
W=$TEST_WORK/fi
mkdir -p "$W" || die "mkdir $W"

# the sleeping allocations are the ones a driver must handle (the defaults skip them), order 0
# pages too; quiet, the harness counts failures from the tool's own answers
fi_setup() {
	for d in failslab fail_page_alloc; do
		echo 0 >$DBG/$d/probability
		echo N >$DBG/$d/ignore-gfp-wait
		echo 0 >$DBG/$d/verbose
		echo N >$DBG/$d/task-filter
	done
	echo 0 >$DBG/fail_page_alloc/min-order
	echo N >$DBG/fail_page_alloc/ignore-gfp-highmem
}
# fi_off: no more random failures, and the stack filter back to "anywhere" (fail-nth obeys it too)
fi_off() {
	echo 0 >$DBG/failslab/probability
	echo 0 >$DBG/failslab/require-start 2>/dev/null
	echo 0xffffffffffffffff >$DBG/failslab/require-end 2>/dev/null
}
trap 'fi_off; lib_cleanup; rm -rf "$W"' EXIT
fi_setup && fi_off || die "cannot configure failslab/fail_page_alloc"

# qcheck DESC FMT FILE: qemu-img check finds no corruption (leaks, status 3, are allowed: an
# allocation that failed half-way may leave an unreferenced cluster); vdimgctl check for VHD,
# which qemu-img cannot check
qcheck() {
	local out rc
	if [ "$2" = vhd ]; then
		out=$("$VDIMGCTL" check "$3" 2>&1)
	else
		out=$(qemu_check "$2" "$3")	# a pending VHDX log replayed on a copy
	fi
	rc=$?
	if [ $rc -eq 0 ] || [ $rc -eq 3 ]; then
		ok "$1"
	else
		echo "$out" | head -n 20 | sed 's/^/  | /'
		fail "$1" "check exit $rc"
	fi
}

mkimg() { # mkimg FMT FILE
	rm -f "$2"
	if [ "$1" = raw ]; then
		truncate -s 32M "$2"
	else
		"$VDIMGCTL" create -t "$1" -s 32M "$2" >/dev/null
	fi
}

# walk MODE FMT FILE: the ioctl with its N-th point failing, N over all its points or a stride
walk() {
	local mode=$1 f=$2 img=$3 out total n step bad=0 inj=0 errs=0 runs=0
	out=$(timeout 60 $ABI failnth "$mode" 100000000 "$img")
	total=$(echo "$out" | sed -n 's/.*(\([0-9]*\) points).*/\1/p')
	case $out in
	"clean $mode ok"*) ;;
	*) fail "$f: $mode with no fault" "$out"; return ;;
	esac
	[ -n "$total" ] && [ "$total" -gt 0 ] || { fail "$f: $mode counts its fault-injection points" "$out"; return; }
	step=1
	[ "$WALK" -gt 0 ] && [ "$total" -gt "$WALK" ] && step=$((total / WALK))
	n=1
	while [ "$n" -le "$total" ]; do
		out=$(timeout 60 $ABI failnth "$mode" "$n" "$img")
		rc=$?
		runs=$((runs + 1))
		case $out in injected*) inj=$((inj + 1)) ;; esac
		case $out in injected*errno*) errs=$((errs + 1)) ;; esac
		if [ $rc -ne 0 ]; then
			bad=$((bad + 1))
			[ $bad -le 5 ] && echo "  | point $n of $total: $out (exit $rc)"
		fi
		n=$((n + step))
	done
	if [ $bad -eq 0 ]; then
		ok "$f: $mode with one of its $total fault-injection points failing, $runs points: clean errors ($errs) or success"
	else
		fail "$f: $mode with one of its $total fault-injection points failing: $bad of $runs points went wrong"
	fi
	# the walk must have reached faults, and for an attach faults that failed it (no walk
	# made a detach fail: the failures of its allocations do not reach the caller; the data
	# check above is what matters there)
	if [ "$mode" = attach ]; then
		check "$f: $mode: the faults were injected ($inj of $runs) and some failed the ioctl ($errs)" \
			test "$inj" -gt 0 -a "$errs" -gt 0
	else
		check "$f: $mode: the faults were injected ($inj of $runs)" test "$inj" -gt 0
	fi
}

for f in $FORMATS; do
	img=$W/img.$f
	mkimg "$f" "$img" || { fail "$f: create"; continue; }
	walk attach "$f" "$img"
	walk detach "$f" "$img"
	check_eq "$f: no device is left behind by the walks" "$(ls /sys/block | grep -c '^vdimg')" 0
	qcheck "$f: the image checks clean after the walks" "$f" "$img"
done

# ---- faults in the I/O path: slab allocations whose call stack passes through vdimg's text
# (the module's own allocations, and those it makes the host file system do for it), failing once
# at the K-th such call while first writes, reads and a flush run
# (addresses are 16 hex digits: compared as strings; the end is the next symbol of the kernel
# after the module's last function)
text=$(awk '$4 == "[vdimg]" && ($2 == "t" || $2 == "T") { print $1 }' /proc/kallsyms | sort)
lo=$(echo "$text" | head -n1)
last=$(echo "$text" | tail -n1)
hi=$(awk -v l="$last" '$1 > l { print $1 }' /proc/kallsyms | sort | head -n1)
if [ -z "$lo" ] || [ -z "$hi" ] || [ ! -e $DBG/failslab/require-start ]; then
	ok_skip "I/O path faults" "no vdimg symbols in /proc/kallsyms or no stack filter (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER)"
	done_testing
fi
mkrandom "$W/pat" 1 || die "pattern"
mkrandom "$W/pat2" 1 || die "pattern"
for f in $FORMATS; do
	[ "$f" = raw ] && continue
	img=$W/io.$f
	mkimg "$f" "$img" || { fail "$f: create"; continue; }
	dev=$(vd_attach "$img") || { fail "$f: attach"; continue; }
	# synced before any fault: must survive everything below
	dd if="$W/pat" of="$dev" bs=1M seek=30 conv=fsync status=none || fail "$f: write before the faults"
	bad=0
	for k in $KS; do
		echo "0x$lo" >$DBG/failslab/require-start
		echo "0x$hi" >$DBG/failslab/require-end
		echo $k >$DBG/failslab/interval
		echo 1 >$DBG/failslab/times
		echo 100 >$DBG/failslab/probability
		# first writes (allocation), reads, a flush: errors are allowed, hangs are not
		timeout 60 dd if="$W/pat2" of="$dev" bs=64k seek=$((k * 16)) count=16 oflag=direct \
			conv=fsync status=none 2>/dev/null
		rc=$?
		timeout 60 dd if="$dev" of=/dev/null bs=64k skip=$((k * 16)) count=16 iflag=direct \
			status=none 2>/dev/null
		[ $rc -eq 124 ] && { bad=$((bad + 1)); echo "  | K=$k: the write hung"; }
		fi_off
		# the device still works: the same range written and synced again reads back
		if ! dd if="$W/pat2" of="$dev" bs=64k seek=$((k * 16)) count=16 oflag=direct conv=fsync \
			status=none || [ "$(dd if="$dev" bs=64k skip=$((k * 16)) count=16 iflag=direct status=none |
			sha256sum | cut -d' ' -f1)" != "$(sha_of "$W/pat2")" ]; then
			bad=$((bad + 1))
			echo "  | K=$k: the device does not take a write after the fault"
		fi
	done
	check_eq "$f: one slab failure in the I/O path at each K in {$KS}: no hang, the device works after it" "$bad" 0
	check "$f: detach after the I/O faults" vd_detach "$dev"
	dev=$(vd_attach -r "$img") || { fail "$f: re-attach"; continue; }
	got=$(dd if="$dev" bs=1M skip=30 count=1 status=none | sha256sum | cut -d' ' -f1)
	check_eq "$f: data synced before the faults reads back" "$got" "$(sha_of "$W/pat")"
	for k in $KS; do
		got=$(dd if="$dev" bs=64k skip=$((k * 16)) count=16 status=none | sha256sum | cut -d' ' -f1)
		[ "$got" = "$(sha_of "$W/pat2")" ] || { fail "$f: data synced after the fault K=$k reads back"; break; }
	done
	vd_detach "$dev"
	qcheck "$f: the image checks clean after the I/O faults" "$f" "$img"
done
done_testing
