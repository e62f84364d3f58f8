#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# smoke.sh SECONDS FUZZER...: run each libFuzzer target (selftests/fuzz/fuzz_<fmt>.c, built by
# `make fuzz-smoke`) for SECONDS over its committed corpus (selftests/fuzz/corpus/<fmt>), writing
# new inputs to a scratch directory, never to the corpus. KTAP output, then "N passed, N failed".
# A crash, a sanitizer report or a timeout is a failure; the reproducer is kept under build/fuzz.
set -u
secs=$1
shift
top=$(cd "$(dirname "$0")/../.." && pwd)
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "TAP version 13"
echo "1..$#"
# one N BIN: run target N, its TAP line (and diagnostics) into $work/N
one() {
	local n=$1 bin=$2 name fmt corpus scratch art log runs
	name=$(basename "$bin")
	fmt=${name#fuzz_}
	corpus=$top/selftests/fuzz/corpus/$fmt
	art=$top/build/fuzz/artifacts-$fmt/
	log=$top/build/fuzz/$name.log
	mkdir -p "$art"
	if [ ! -d "$corpus" ]; then
		echo "not ok $n - $name: no corpus at selftests/fuzz/corpus/$fmt"
		return
	fi
	scratch=$(mktemp -d)
	# a fixed seed: the gate replays the corpus and the same mutations every run (FUZZ_SEED=0 for
	# a random one), so a red run means this tree, not a new lucky draw; explore with longer runs
	if "$bin" -seed="${FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
		-max_len=262144 \
		-artifact_prefix="$art" -print_final_stats=1 "$scratch" "$corpus" >"$log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
		echo "ok $n - $name: ${runs:-?} runs in ${secs}s, no findings"
	else
		grep -E 'ERROR|SUMMARY|deadly|timeout' "$log" | head -n 10 | sed 's/^/# /'
		echo "not ok $n - $name (log: $log, reproducer in $art)"
	fi
	rm -rf "$scratch"
}
# FUZZ_JOBS targets at once (default: the CPUs; each target is one process)
n=0
for bin in "$@"; do
	n=$((n + 1))
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
		wait -n
	done
	one "$n" "$bin" >"$work/$n" &
done
wait
pass=0 fail=0
for ((i = 1; i <= n; i++)); do
	cat "$work/$i"
	if grep -q '^ok ' "$work/$i"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
