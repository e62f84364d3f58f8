#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# build-module.sh KDIR OUTDIR: build vdimg.ko against the kernel tree or headers at KDIR in a build
# directory of its own (OUTDIR), so builds for several kernels never share object files. Copies the
# module sources (Kbuild, drivers/, backends/, include/) into OUTDIR, runs kbuild with W=1 there and
# fails on any compiler warning. The log is OUTDIR/build.log; the module is OUTDIR/vdimg.ko.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 KDIR OUTDIR" >&2
	exit 2
fi
kdir=$1
out=$2
top=$(cd "$(dirname "$0")/../.." && pwd)

if [ ! -f "$kdir/Makefile" ]; then
	echo "build-module.sh: $kdir: not a kernel build directory (no Makefile)" >&2
	exit 1
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
# Mirror the sources into OUTDIR: copy what changed (kbuild then rebuilds only that) and delete
# sources that are gone from the tree, so the build sees exactly the tree's files.
stage=$out/.src
rm -rf "$stage"
mkdir -p "$stage"
for p in Kbuild drivers backends include; do
	if [ -e "$top/$p" ]; then
		cp -a "$top/$p" "$stage/"
	fi
done
(cd "$stage" && find . -type f) | while read -r f; do
	if ! cmp -s "$stage/$f" "$out/$f"; then
		mkdir -p "$(dirname "$out/$f")"
		cp "$stage/$f" "$out/$f"
	fi
done
(cd "$out" && find Kbuild drivers backends include -type f \( -name '*.[ch]' -o -name Kbuild \) \
	2>/dev/null) | while read -r f; do
	[ -e "$stage/$f" ] || rm -f "$out/$f"
done
rm -rf "$stage"

log=$out/build.log
rc=0
make -C "$kdir" M="$out" W=1 modules >"$log" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then
	cat "$log" >&2
	echo "build-module.sh: build against $kdir failed (exit $rc)" >&2
	exit 1
fi
if grep -q 'warning:' "$log"; then
	grep -B2 -A6 'warning:' "$log" >&2
	echo "build-module.sh: build against $kdir has compiler warnings" >&2
	exit 1
fi
if [ ! -f "$out/vdimg.ko" ]; then
	echo "build-module.sh: $out/vdimg.ko was not produced" >&2
	exit 1
fi
echo "$out/vdimg.ko"
