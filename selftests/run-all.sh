#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# run-all.sh: every test of the project. Host tests (`make check-host`), a short fuzz run of every
# libFuzzer target (`make fuzz-smoke`), then the VM tests: all of them on the Debian 6.12 kernel, a
# representative set on the Debian 6.1 kernel and on the debug kernel (selftests/vm/debug-kernel.sh;
# skipped, and said so, when it has not been built). Ends with the list of skips and the grand
# total "N passed, N failed, N skipped"; exit status 0 only when nothing failed.
#
#   selftests/run-all.sh [run.sh options, e.g. --filter REGEX]
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
mkdir -p build
rm -f build/check-host.log build/fuzz-smoke.log build/check-vm*.log
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

echo "# ==== fuzz smoke (make fuzz-smoke: every libFuzzer target over its corpus)"
if command -v clang >/dev/null; then
	make fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-15}" 2>&1 | tee build/fuzz-smoke.log
	rc=${PIPESTATUS[0]}
	add "$(totals build/fuzz-smoke.log)" "$rc" "make fuzz-smoke"
else
	echo "# clang is not installed: fuzz smoke run failed to start"
	F=$((F + 1))
fi

. selftests/vm/common.sh
# Tiers, for CI time: the newest 6.12 kernel runs every VM test; the newest 6.1 kernel runs the
# driver's own tests and one workflow per area (the format code is the same C on both kernels; what
# differs is the block layer and compat.h underneath): VM_LTS_FILTER.
lts_filter=${VM_LTS_FILTER:-'^(0[0-9][0-9]|1[0-9][0-9]|200|205|206|220|230|240|250|260|270|285|300|302|310|322)-'}
# The 6.12 run is split in two VMs (tests 0xx-2xx, then 3xx and up), so that each stays well inside
# run.sh's whole-VM timeout on a loaded machine and a VM that dies takes only half the tests along.
# Options given to run-all.sh replace the filters: then one VM per kernel.
runs=("6.12 ^[0-2][0-9][0-9]- check-vm-6.12.log" "6.12 ^[3-9][0-9][0-9]- check-vm-6.12-2.log"
      "6.1 $lts_filter check-vm-6.1.log")
[ $# -gt 0 ] && runs=("6.12 - check-vm-6.12.log" "6.1 - check-vm-6.1.log")
for r in "${runs[@]}"; do
	read -r series filter log <<<"$r"
	k=$(ls /boot/vmlinuz-"$series".*-amd64 2>/dev/null | sort -V | tail -n1)
	if [ -z "$k" ]; then
		echo "# no Debian $series kernel in /boot"
		F=$((F + 1))
		continue
	fi
	opts=(--filter "$filter")
	[ $# -gt 0 ] && opts=("$@")
	echo "# ==== VM tests on $series (selftests/vm/run.sh ${opts[*]})"
	selftests/vm/run.sh --kernel "${k#/boot/vmlinuz-}" "${opts[@]}" 2>&1 | tee "build/$log"
	rc=${PIPESTATUS[0]}
	add "$(totals "build/$log")" "$rc" "selftests/vm/run.sh ($series ${opts[*]})"
done

# Boot tests (selftests/boot/run.sh): the real mkinitramfs and dracut build an initramfs, a VM boots
# a root inside a VHDX/VHD on an ext4 or NTFS host; every case on 6.12, the VHDX one on 6.1.
echo "# ==== boot tests (selftests/boot/run.sh)"
selftests/boot/run.sh 2>&1 | tee build/check-vm-boot.log
rc=${PIPESTATUS[0]}
add "$(totals build/check-vm-boot.log)" "$rc" "selftests/boot/run.sh"

# The debug kernel (KASAN, lockdep, kmemleak) runs 3-5x slower under TCG: it gets the driver's own
# tests (0xx, 1xx), the per-format fio test, which drives every backend's allocation path, and VMDK.
debug_filter=${VM_DEBUG_FILTER:-'^(0[0-9][0-9]|1[0-9][0-9]|200|205)-'}
if vm_debug_dir >/dev/null; then
	echo "# ==== VM tests on the debug kernel (filter: $debug_filter)"
	selftests/vm/run.sh --kernel debug --filter "$debug_filter" 2>&1 | tee build/check-vm-debug.log
	rc=${PIPESTATUS[0]}
	add "$(totals build/check-vm-debug.log)" "$rc" "selftests/vm/run.sh --kernel debug"
else
	echo "# the debug kernel is not built (selftests/vm/debug-kernel.sh): its VM tests skipped"
	S=$((S + 1))
fi

# every skip with its reason (identical ones counted once per kernel), so that a sudden rise in
# the count is visible and explained
if [ "$S" -gt 0 ]; then
	echo "# skipped ($S):"
	cat build/check-host.log build/fuzz-smoke.log build/check-vm*.log 2>/dev/null |
		grep -E '^ *ok [0-9]+ .*# SKIP' | sed -E 's/^ *ok [0-9]+ (- )?//' | sort | uniq -c |
		sed -E 's/^ *([0-9]+) /#   [x\1] /' | head -n 60
fi
echo "$P passed, $F failed, $S skipped"
[ "$F" -eq 0 ]
