#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# What the shell tests of vdimgctl (selftests/host/test_*.sh) share: sourced after `set -u`, it
# sets ROOT (the tree), V (the vdimgctl under test: $VDIMGCTL, default the sanitizer build) and T
# (a scratch directory removed at exit), and defines the KTAP helpers:
#   ok STATUS NAME   a case passed when STATUS is 0; on failure shows stderr/stdout of the last run
#   skip NAME WHY    a skipped case
#   run ARGS...      runs vdimgctl: stdout in $T/out, stderr in $T/err, exit status in $rc
#   ktap_end         the plan and the totals line; its status is 0 only when nothing failed
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
V=${VDIMGCTL:-$ROOT/build/host/vdimgctl}
T=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-$(basename "$0" .sh).XXXXXX")
trap 'rm -rf "$T"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=99}

n=0 failed=0
ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=$((failed + 1))
		[ -s "$T/err" ] && sed 's/^/# stderr: /' "$T/err" | head -n 5
		[ -s "$T/out" ] && sed 's/^/# stdout: /' "$T/out" | head -n 5
		[ -s "$T/diff" ] && sed 's/^/# diff: /' "$T/diff" | head -n 8
	fi
	return 0
}
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
# ktap_begin_qemu: the KTAP header of a test that compares against qemu-img and qemu-io; the whole
# program is skipped (exit 4) without them or without vdimgctl
ktap_begin_qemu() {
	echo "KTAP version 1"
	if [ ! -x "$V" ] || ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
		echo "1..0 # SKIP vdimgctl not built or qemu-img/qemu-io missing"
		exit 4
	fi
}
run() { "$V" "$@" >"$T/out" 2>"$T/err"; rc=$?; }
ktap_end() {
	echo "1..$n"
	echo "# $((n - failed)) passed, $failed failed"
	[ "$failed" -eq 0 ]
}
