#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# intree.sh [KERNEL_SRC KERNEL_OBJ]: build the sources inside a kernel tree as drivers/block/vdimg/,
# with CONFIG_BLK_DEV_VDIMG=m (both decompressors) and =y (without them: the EOPNOTSUPP stubs),
# each with the kernel's own flags and W=1, and checkpatch --strict the copied sources and the
# Kconfig. Default tree: the cached debug kernel (selftests/vm/debug-kernel.sh: src/ and its O=
# build/). Any other: a source tree and its configured O= tree, e.g. linux-source-6.12 unpacked,
# "make O=../build defconfig modules_prepare" (the checks set BLK_DEV_VDIMG themselves). The cache is never
# written: the source tree is linked (cp -al; add-to-kernel.sh rewrites the two files it edits),
# the object tree copied, both into a scratch directory. About 3 minutes a configuration on 2 cores,
# so it runs outside CI. KTAP output.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ge 2 ]; then
	ksrc=$1 kobj=$2
else
	d=$(ls -d /var/cache/vdimg/debug-kernel-*/ 2>/dev/null | head -n1)
	ksrc=${d}src kobj=${d}build
fi
[ -f "$ksrc/Makefile" ] && [ -f "$kobj/.config" ] || { echo "no configured kernel tree (run selftests/vm/debug-kernel.sh)" >&2; exit 4; }
work=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-intree.XXXXXX")
trap 'rm -rf "$work"' EXIT
n=0 fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
echo "TAP version 13"
cp -al "$ksrc" "$work/src" && cp -a "$kobj" "$work/build" || exit 1
"$top/tools/intree/add-to-kernel.sh" "$work/src" >/dev/null || exit 1
kmake() { nice -n 10 make -C "$work/src" O="$work/build" -j2 "$@"; }

# build MODE CONFIG-ARGS...: configure, then build drivers/block/vdimg/
build() {
	local mode=$1 t0 log=$work/build-$1.log
	shift
	"$work/src/scripts/config" --file "$work/build/.config" "$@"
	t0=$(date +%s)
	if kmake -s olddefconfig >"$log" 2>&1 && kmake W=1 drivers/block/vdimg/ >>"$log" 2>&1; then
		if grep -q 'warning:' "$log"; then
			grep -A3 'warning:' "$log" | head -n 30 | sed 's/^/# /'
			not_ok "in-tree build, $mode: compiler warnings"
		else
			ok "in-tree build, $mode ($(( $(date +%s) - t0 )) s)"
		fi
	else
		tail -n 30 "$log" | sed 's/^/# /'
		not_ok "in-tree build, $mode"
	fi
}
build "BLK_DEV_VDIMG=m" -m BLK_DEV_VDIMG -e BLK_DEV_VDIMG_ZLIB -e BLK_DEV_VDIMG_ZSTD
if [ -f "$work/build/drivers/block/vdimg/vdimg.o" ]; then ok "vdimg.o (the module's objects) is built"; else not_ok "vdimg.o is built"; fi
build "BLK_DEV_VDIMG=y without ZLIB and ZSTD" -e BLK_DEV_VDIMG -d BLK_DEV_VDIMG_ZLIB -d BLK_DEV_VDIMG_ZSTD
if [ -f "$work/build/drivers/block/vdimg/built-in.a" ] && grep -qx 'CONFIG_BLK_DEV_VDIMG=y' "$work/build/.config"; then
	ok "built-in.a is built"
else
	not_ok "built-in.a is built"
fi
# the copied sources: compat.h holds no version test, and checkpatch --strict finds nothing but
# what the kernel does itself (zlib's CamelCase API, a GUID initializer reusing its arguments as
# GUID_INIT does, the mutex type of the kernel/userspace platform layer)
vd=$work/src/drivers/block/vdimg
if ! grep -q 'LINUX_VERSION_CODE\|KERNEL_VERSION' "$vd/include/vdimg/compat.h"; then
	ok "the in-tree compat.h has no kernel version tests"
else
	not_ok "the in-tree compat.h has no kernel version tests"
fi
out=$(cd "$vd" && find drivers backends include -name '*.[ch]' | sort |
	xargs perl "$work/src/scripts/checkpatch.pl" --strict --no-tree --terse -f 2>&1 |
	grep -E '(ERROR|WARNING|CHECK):')
left=$(echo "$out" | grep -v -e 'CamelCase: <zlib_' -e "vhdx.h:[0-9]*: CHECK: Macro argument reuse '[abc]'" \
	-e 'platform.h:[0-9]*: WARNING: do not add new typedefs' | grep . )
if [ -z "$left" ]; then
	ok "checkpatch --strict: the in-tree sources ($(echo "$out" | grep -c .) known exceptions)"
else
	echo "$left" | sed 's/^/# /'
	not_ok "checkpatch --strict: the in-tree sources"
fi
# --terse prints nothing for a clean file
if out=$(perl "$work/src/scripts/checkpatch.pl" --strict --no-tree --terse -f "$top/Kconfig" 2>&1) &&
	! echo "$out" | grep -qE '(ERROR|WARNING|CHECK):'; then
	ok "checkpatch --strict: Kconfig"
else
	echo "$out" | sed 's/^/# /'
	not_ok "checkpatch --strict: Kconfig"
fi
echo "1..$n"
[ "$fails" -eq 0 ]
