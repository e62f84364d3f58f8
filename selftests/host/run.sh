#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Run host test programs (KTAP producers) and merge them into one KTAP document: each program is a
# subtest whose own lines are indented by four spaces. Ends with "N passed, N failed" counting the
# individual test cases; exits 1 if any case or program failed. Usage: run.sh PROGRAM...
set -u
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
pass=0 fail=0 skipped=0 n=0 bad=0
echo "KTAP version 1"
echo "1..$#"
for prog in "$@"; do
	n=$((n + 1))
	name=$(basename "$prog")
	out=$(mktemp)
	start=$SECONDS
	if [ ! -x "$prog" ]; then
		[ -n "${BUILD_LOG:-}" ] && grep -E "$name\.c.*(error|undefined)" "$BUILD_LOG" |
			head -n 10 | sed 's/^/    # build: /'
		echo "not ok $n - $name # not built (see ${BUILD_LOG:-the build log})"
		fail=$((fail + 1)) bad=1
		rm -f "$out"
		continue
	fi
	"$prog" >"$out" 2>&1
	rc=$?
	sed 's/^/    /' "$out"
	p=$(grep -cE '^ok [0-9]+' "$out" | head -n1)
	s=$(grep -cE '^ok [0-9]+.*# SKIP' "$out" | head -n1)
	f=$(grep -cE '^not ok [0-9]+' "$out" | head -n1)
	pass=$((pass + p - s)) skipped=$((skipped + s)) fail=$((fail + f))
	if [ "$rc" -eq 0 ] && [ "$f" -eq 0 ]; then
		echo "ok $n - $name # $((SECONDS - start))s"
	elif [ "$rc" -eq 4 ] && [ "$f" -eq 0 ]; then
		echo "ok $n - $name # SKIP"
	else
		# a crash or sanitizer report after the last case still fails the run
		[ "$f" -eq 0 ] && fail=$((fail + 1))
		echo "not ok $n - $name # exit status $rc"
		bad=1
	fi
	rm -f "$out"
done
[ "$skipped" -gt 0 ] && echo "# $skipped skipped"
echo "$pass passed, $fail failed"
[ "$bad" -eq 0 ] && [ "$fail" -eq 0 ]
