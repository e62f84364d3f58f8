#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Run host test programs (KTAP producers) and merge them into one KTAP document: each program is a
# subtest whose own lines are indented by four spaces. Ends with "N passed, N failed" counting the
# individual test cases; exits 1 if any case or program failed. Usage: run.sh PROGRAM...
#
# HOST_JOBS programs run at once (default: the number of CPUs; each program is one process, so
# two cores take the suite in about half the time). The document lists them in the order given,
# each as it ends in that order; every program has its own scratch directory (ktap.h, cli_lib.sh).
# HOST_FIRST, a list of program names, starts those first (the slow ones, so that the last to end
# is not a slow one started late).
set -u
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
jobs=${HOST_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
pass=0 fail=0 skipped=0 bad=0
work=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
progs=("$@")

# the start order: HOST_FIRST's names, then the rest as given
order=()
for f in ${HOST_FIRST:-}; do
	for i in "${!progs[@]}"; do
		[ "$(basename "${progs[$i]}")" = "$f" ] && order+=("$i")
	done
done
for i in "${!progs[@]}"; do
	case " ${order[*]} " in *" $i "*) ;; *) order+=("$i") ;; esac
done

# start I: program I in the background, its output in $work/I.out, its status in $work/I.rc
start() {
	local i=$1 prog=${progs[$1]} t0=$SECONDS
	[ -x "$prog" ] || return 0
	("$prog" >"$work/$i.out" 2>&1; echo "$? $((SECONDS - t0))" >"$work/$i.rc.tmp" &&
		mv "$work/$i.rc.tmp" "$work/$i.rc") &
}

echo "KTAP version 1"
echo "1..$#"
running=0 next=0 shown=0
while [ "$shown" -lt "${#progs[@]}" ]; do
	# keep $jobs programs running
	while [ "$running" -lt "$jobs" ] && [ "$next" -lt "${#order[@]}" ]; do
		start "${order[$next]}"
		next=$((next + 1)) running=$((running + 1))
	done
	# print, in the given order, every program that has ended
	while [ "$shown" -lt "${#progs[@]}" ]; do
		i=$shown prog=${progs[$shown]}
		name=$(basename "$prog") n=$((i + 1))
		if [ ! -x "$prog" ]; then
			[ -n "${BUILD_LOG:-}" ] && grep -E "$name\.c.*(error|undefined)" "$BUILD_LOG" |
				head -n 10 | sed 's/^/    # build: /'
			echo "not ok $n - $name # not built (see ${BUILD_LOG:-the build log})"
			fail=$((fail + 1)) bad=1
		elif [ -f "$work/$i.rc" ]; then
			read -r rc secs <"$work/$i.rc"
			out=$work/$i.out
			sed 's/^/    /' "$out"
			p=$(grep -cE '^ok [0-9]+' "$out")
			s=$(grep -cE '^ok [0-9]+.*# SKIP' "$out")
			f=$(grep -cE '^not ok [0-9]+' "$out")
			pass=$((pass + p - s)) skipped=$((skipped + s)) fail=$((fail + f))
			if [ "$rc" -eq 0 ] && [ "$f" -eq 0 ]; then
				echo "ok $n - $name # ${secs}s"
			elif [ "$rc" -eq 4 ] && [ "$f" -eq 0 ]; then
				echo "ok $n - $name # SKIP"
			else
				# a crash or sanitizer report after the last case still fails the run
				[ "$f" -eq 0 ] && fail=$((fail + 1))
				echo "not ok $n - $name # exit status $rc"
				bad=1
			fi
		else
			break
		fi
		shown=$((shown + 1))
	done
	# count what is still running (ended programs leave an rc file)
	running=0
	for ((k = 0; k < next; k++)); do
		j=${order[$k]}
		[ -x "${progs[$j]}" ] && [ ! -f "$work/$j.rc" ] && running=$((running + 1))
	done
	[ "$shown" -lt "${#progs[@]}" ] && sleep 0.2
done
wait
[ "$skipped" -gt 0 ] && echo "# $skipped skipped"
echo "$pass passed, $fail failed"
[ "$bad" -eq 0 ] && [ "$fail" -eq 0 ]
