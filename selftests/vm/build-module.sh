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
# Start from a clean copy so a file deleted from the tree cannot linger in the build.
rm -rf "$out/src"
mkdir -p "$out/src"
for p in Kbuild drivers backends include; do
	if [ -e "$top/$p" ]; then
		cp -a "$top/$p" "$out/src/"
	fi
done
# Objects from an earlier build of a since-removed source would otherwise stay; kbuild only
# rebuilds what changed, which keeps repeated runs quick.
rsync_like() {
	# copy src/ over the build root, newer files only, keeping kbuild's outputs
	(cd "$out/src" && find . -type f) | while read -r f; do
		if ! cmp -s "$out/src/$f" "$out/$f"; then
			mkdir -p "$(dirname "$out/$f")"
			cp -p "$out/src/$f" "$out/$f"
		fi
	done
}
rsync_like
rm -rf "$out/src"

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
