#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# run-all.sh: every test of the project. Host tests (`make check-host`), then the VM tests: all of
# them on the Debian 6.12 kernel, a representative set on the Debian 6.1 kernel and on the debug
# kernel (selftests/vm/debug-kernel.sh; skipped, and said so, when it has not been built), with a
# short fuzz run of every libFuzzer target (`make fuzz-smoke`) and the package and in-tree builds
# in the two queues of VM stages. Ends with the list of skips and the grand total "N passed,
# N failed, N skipped"; exit status 0 only when nothing failed.
#
#   selftests/run-all.sh [run.sh options, e.g. --filter REGEX]
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
mkdir -p build
rm -f build/check-host.log build/fuzz-smoke.log build/check-vm*.log build/check-vm*.log.rc
rm -f build/check-pkg.log build/check-intree.log
P=0 F=0 S=0

# totals LOG: the last "N passed, N failed[, N skipped]" line of a log, as "P F S"
totals() {
	sed -n 's/^\([A-Za-z-]*: \)\{0,1\}\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed\(, \([0-9][0-9]*\) skipped\)\{0,1\}$/\2 \3 \5/p' "$1" |
		tail -n1 | awk '{print $1, $2, ($3 == "" ? 0 : $3)}'
}

add() { # add "P F S" RC WHAT
	local p f s
	read -r p f s <<<"$1"
	if [ -z "$p" ]; then
		echo "# $3: no totals line"
		p=0 f=0 s=0
	fi
	if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "# $3: exit status $2 with no failed test counted: one failure"
		f=1
	fi
	P=$((P + p)) F=$((F + f)) S=$((S + s))
}

echo "# ==== host tests (make check-host)"
if make -n check-host 2>&1 | grep -qE "No rule to make target|Nothing to be done"; then
	echo "# make check-host does not exist yet: host tests skipped"
	S=$((S + 1))
else
	make check-host 2>&1 | tee build/check-host.log
	rc=${PIPESTATUS[0]}
	add "$(totals build/check-host.log)" "$rc" "make check-host"
fi

. selftests/vm/common.sh

# The VM stages. Each is one command whose output goes to build/LOG; with VM_PARALLEL=2 (the
# default) two queues of stages run at once, since one TCG guest keeps about one core busy (its
# tests are mostly one process at a time). Their logs are printed whole, in this order, as each
# queue finishes. VM_PARALLEL=1 runs them one by one with live output. 096 (NFS) runs on 6.12 only.
lts_filter=${VM_LTS_FILTER:-'^(0[0-8][0-9]|09[0-5]|1[0-9][0-9]|200|205|206|220|240|250|260|270|285|300|302|310|322|325|345)-'}
debug_filter=${VM_DEBUG_FILTER:-'^(0[0-8][0-9]|09[0-5]|1[0-9][0-9]|200|205|206|300|325|345|349|350|360)-'}
parallel=${VM_PARALLEL:-2}
# two guests at once run slower each: more room under the whole-VM timeout (run.sh's default 1800 s)
vm_timeout=${VM_TIMEOUT:-2700}
t0=$SECONDS
declare -A stage_desc stage_cmd
stages_a=() stages_b=()

# stage QUEUE LOG DESCRIPTION CMD...: a VM stage in queue a or b
stage() {
	local q=$1 log=$2
	stage_desc[$log]=$3
	shift 3
	stage_cmd[$log]=$(printf '%q ' "$@")
	if [ "$q" = a ]; then stages_a+=("$log"); else stages_b+=("$log"); fi
}

# series_kernel SERIES: the newest Debian kernel of that series in /boot
series_kernel() {
	local k
	k=$(ls /boot/vmlinuz-"$1".*-amd64 2>/dev/null | sort -V | tail -n1)
	[ -n "$k" ] && echo "${k#/boot/vmlinuz-}"
}

# the Debian packages (build, lintian, install with DKMS for both kernels, purge): no VM, but a
# few minutes of compiling that fit beside a guest better than before the VM stages
[ $# -gt 0 ] || stage b check-pkg.log "Debian packages (selftests/pkg/debs.sh)" selftests/pkg/debs.sh
if [ $# -gt 0 ]; then
	runs=("a 6.12 check-vm-6.12.log" "b 6.1 check-vm-6.1.log")
else
	# queue, series, log, tier, filter; the 6.12 halves split where the two queues come out even
	runs=("a 6.12 check-vm-6.12.log full ^([01][0-9][0-9]|2[0-5][0-9]|360)-"
	      "b 6.12 check-vm-6.12-2.log full ^(2[6-9][0-9]|3[0-5][0-9]|36[1-9]|3[7-9][0-9]|[4-9][0-9][0-9])-"
	      "a 6.1 check-vm-6.1.log short $lts_filter")
fi
for r in "${runs[@]}"; do
	read -r q series log tier filter <<<"$r"
	k=$(series_kernel "$series")
	if [ -z "$k" ]; then
		echo "# no Debian $series kernel in /boot"
		F=$((F + 1))
		continue
	fi
	if [ $# -gt 0 ]; then
		stage "$q" "$log" "VM tests on $series (selftests/vm/run.sh $*)" \
			selftests/vm/run.sh --kernel "$k" "$@"
	else
		stage "$q" "$log" "VM tests on $series (selftests/vm/run.sh --tier $tier --filter $filter)" \
			selftests/vm/run.sh --kernel "$k" --timeout "$vm_timeout" --tier "$tier" \
			--filter "$filter"
	fi
done
stage a check-vm-boot.log "boot tests (selftests/boot/run.sh)" selftests/boot/run.sh
if vm_debug_dir >/dev/null; then
	stage b check-vm-debug.log "VM tests on the debug kernel (--tier short, filter: $debug_filter)" \
		selftests/vm/run.sh --kernel debug --timeout "$vm_timeout" --tier short \
		--filter "$debug_filter"
	# the sources built as drivers/block/vdimg/ in the debug kernel's tree, =y (vmlinux linked)
	# and =m, and checkpatched: no VM, about 2 minutes of CPU beside queue b's last guest
	[ $# -gt 0 ] || stage a check-intree.log "in-tree build (selftests/pkg/intree.sh)" \
		selftests/pkg/intree.sh
else
	echo "# the debug kernel is not built (selftests/vm/debug-kernel.sh): its VM tests skipped"
	S=$((S + 1))
fi

# the fuzz smoke run (every libFuzzer target over its corpus, one at a time): no VM, one core for
# about 5 minutes, last in queue a, which ends minutes before queue b (the debug kernel's guest)
if command -v clang >/dev/null; then
	stage a fuzz-smoke.log "fuzz smoke (make fuzz-smoke, one target at a time)" \
		env FUZZ_JOBS=1 make fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
else
	echo "# clang is not installed: fuzz smoke run failed to start"
	F=$((F + 1))
fi

# run_queue LOG...: the stages one after the other, each into build/LOG, its status in LOG.rc
run_queue() {
	local log
	for log in "$@"; do
		eval "${stage_cmd[$log]}" >"build/$log" 2>&1
		echo $? >"build/$log.rc"
		echo "# [$((SECONDS - t0)) s] done: ${stage_desc[$log]}: $(tail -n1 "build/$log")"
	done
}

if [ "$parallel" -ge 2 ]; then
	echo "# ==== VM stages, two at a time: [${stages_a[*]}] and [${stages_b[*]}]"
	run_queue "${stages_a[@]}" &
	run_queue "${stages_b[@]}"
	wait
	for log in "${stages_a[@]}" "${stages_b[@]}"; do
		echo "# ==== ${stage_desc[$log]}"
		cat "build/$log"
		add "$(totals "build/$log")" "$(cat "build/$log.rc" 2>/dev/null || echo 1)" \
			"${stage_desc[$log]}"
	done
else
	for log in "${stages_a[@]}" "${stages_b[@]}"; do
		echo "# ==== ${stage_desc[$log]}"
		eval "${stage_cmd[$log]}" 2>&1 | tee "build/$log"
		add "$(totals "build/$log")" "${PIPESTATUS[0]}" "${stage_desc[$log]}"
	done
fi

if [ "$S" -gt 0 ]; then
	echo "# skipped ($S):"
	cat build/check-host.log build/fuzz-smoke.log build/check-pkg.log build/check-intree.log \
		build/check-vm*.log 2>/dev/null |
		grep -E '^ *ok [0-9]+ .*# SKIP' | sed -E 's/^ *ok [0-9]+ (- )?//' | sort | uniq -c |
		sed -E 's/^ *([0-9]+) /#   [x\1] /' | head -n 60
fi
echo "$P passed, $F failed, $S skipped"
[ "$F" -eq 0 ]
