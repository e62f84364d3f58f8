#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# intree.sh [KERNEL_SRC KERNEL_OBJ]: build the sources inside a kernel tree as drivers/block/vdimg/
# (a CI stage of selftests/run-all.sh when the debug kernel is built; about 2 minutes of CPU):
#
#  1. CONFIG_BLK_DEV_VDIMG=y with both decompressors, the kernel's own flags: built-in.a, and what
#     linking it into vmlinux would check, against the tree's vmlinux (System.map): every symbol
#     vdimg uses is a global of vmlinux or its own (not a module's: an undefined reference at the
#     link), no global of vdimg's is also one of vmlinux (a clash), and its .modinfo names the
#     module vdimg (what modules.builtin lists). INTREE_LINK=1 links vmlinux itself instead (5-7
#     more minutes: kallsyms and BTF of a debug kernel; the check above is the part that fails);
#  2. CONFIG_BLK_DEV_VDIMG=m without them (the EOPNOTSUPP stubs), W=1: vdimg.o and vdimg.ko
#     (modpost: undefined symbols, section mismatches);
#  3. checkpatch --strict on the copied sources and the Kconfig, and no kernel version test left in
#     the copied compat.h.
#
# Any compiler or modpost warning fails. W=1 only for the module: with it, make would rebuild the
# whole kernel before linking vmlinux (every object's command line changes); the out-of-tree
# builds (the top Makefile, W=1 by default) check the code the =y configuration adds.
#
# Default tree: the cached debug kernel (selftests/vm/debug-kernel.sh: src/ and its O= build/).
# Any other: a source tree and its configured O= tree built with "make all" (System.map is the
# reference of step 1; INTREE_LINK=1 relinks vmlinux). The trees are
# never written: in a private mount namespace each is covered, at its own path, by an overlay whose
# upper layer is a scratch directory, so every command line stays what the tree was built with and
# make rebuilds only what the vdimg configuration changes (a copy elsewhere would change every
# path and rebuild the kernel's tools and the prepare stage at least). Needs root, or user
# namespaces that allow mounting overlays; otherwise it skips and says so. KTAP output, last line
# "N passed, N failed, N skipped".
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ge 2 ]; then
	ksrc=$1 kobj=$2
else
	. "$top/selftests/vm/common.sh"
	d=$(vm_debug_dir) || { echo "the debug kernel is not built (selftests/vm/debug-kernel.sh)" >&2; exit 4; }
	ksrc=$d/src kobj=$d/build
fi
[ -f "$ksrc/Makefile" ] && [ -f "$kobj/.config" ] || { echo "no configured kernel tree at $ksrc, $kobj" >&2; exit 4; }
ksrc=$(cd "$ksrc" && pwd -P) kobj=$(cd "$kobj" && pwd -P)

skip_all() {
	[ -n "${VDIMG_INTREE_NS:-}" ] || echo "TAP version 13"
	printf 'ok 1 - in-tree build # SKIP %s\n1..1\n0 passed, 0 failed, 1 skipped\n' "$*"
	exit 0
}
# once, outside: into a private mount namespace (as a mapped root when not root)
if [ -z "${VDIMG_INTREE_NS:-}" ]; then
	ns=(unshare --mount --propagation private)
	[ "$(id -u)" -eq 0 ] || ns+=(--user --map-root-user)
	if "${ns[@]}" true 2>/dev/null; then
		VDIMG_INTREE_NS=1 exec "${ns[@]}" bash "$0" "$ksrc" "$kobj"
	fi
	skip_all "no private mount namespace (needs root or user namespaces)"
fi

echo "TAP version 13"
t_start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-intree.XXXXXX")
mounted=()
cleanup() {
	local m
	for m in "${mounted[@]}"; do umount "$m"; done
	rm -rf "$work"
}
trap cleanup EXIT
# cover DIR NAME: an overlay on DIR, at DIR, that takes every write into $work/NAME
cover() {
	mkdir -p "$work/$2" "$work/$2.work" &&
		mount -t overlay vdimg-intree -o "lowerdir=$1,upperdir=$work/$2,workdir=$work/$2.work" "$1" &&
		mounted=("$1" "${mounted[@]}")
}
if ! cover "$ksrc" src || ! cover "$kobj" obj; then
	skip_all "no overlay could be mounted on $ksrc and $kobj"
fi

n=0 fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
# check DESCRIPTION CMD...: ok when CMD succeeds
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}

"$top/tools/intree/add-to-kernel.sh" "$ksrc" >/dev/null || exit 1
vd=$ksrc/drivers/block/vdimg
bo=$kobj/drivers/block/vdimg

# checkpatch runs beside the builds (one process; the links leave a core idle): the copied
# sources, where it finds nothing but what the kernel does itself (zlib's CamelCase API, a GUID
# initializer reusing its arguments as GUID_INIT does, the mutex type of the kernel/userspace
# platform layer), and the Kconfig (--terse prints nothing for a clean file)
(cd "$vd" && find drivers backends include -name '*.[ch]' | sort |
	nice -n 10 xargs perl "$ksrc/scripts/checkpatch.pl" --strict --no-tree --terse -f \
	>"$work/checkpatch.out" 2>&1
	echo $? >"$work/checkpatch.rc"
	nice -n 10 perl "$ksrc/scripts/checkpatch.pl" --strict --no-tree --terse -f Kconfig \
	>"$work/checkpatch-kconfig.out" 2>&1) &
cp_pid=$!

kmake() { nice -n 10 make -C "$ksrc" O="$kobj" -j"$(nproc)" "$@"; }
# build WHAT LOG MAKE-ARGS...: ok when make succeeds with no warning in its output
build() {
	local what=$1 log=$work/$2 t0=$SECONDS
	shift 2
	if kmake "$@" >"$log" 2>&1; then
		if grep -qi 'warning' "$log"; then
			grep -i -A3 'warning' "$log" | head -n 30 | sed 's/^/# /'
			not_ok "$what: warnings"
		else
			ok "$what ($((SECONDS - t0)) s)"
		fi
	else
		tail -n 30 "$log" | sed 's/^/# /'
		not_ok "$what"
		return 1
	fi
}
# configure WANT SCRIPTS-CONFIG-ARGS...: set the options and syncconfig (stdin closed: a question
# would fail, not wait); WANT, the auto.conf's vdimg lines as they must be (sorted, one space
# between). No olddefconfig before it: each Kconfig run costs seconds of compiler probes, and the
# options set are the only new symbols
configure() {
	local want=$1 got
	shift
	"$ksrc/scripts/config" --file "$kobj/.config" "$@" &&
		kmake -s syncconfig </dev/null >"$work/config.log" 2>&1 ||
		{ sed 's/^/# /' "$work/config.log"; not_ok "syncconfig ($*)"; return 1; }
	got=$(grep '^CONFIG_BLK_DEV_VDIMG' "$kobj/include/config/auto.conf" | LC_ALL=C sort | tr '\n' ' ')
	[ "$got" = "$want " ] || { not_ok "configure $want (auto.conf: $got)"; return 1; }
}

# builtin_syms: what linking built-in.a into vmlinux would find wrong, from nm of its objects
# and the tree's System.map (the kernel without vdimg); prints the problems, fails if any
builtin_syms() {
	local map=$kobj/System.map a=$bo/built-in.a bad=0 missing clash
	[ -s "$map" ] || { echo "# no $map: the tree is not built"; return 1; }
	[ "$(ar t "$a" | grep -c .)" -gt 0 ] || { echo "# built-in.a lists no object"; return 1; }
	# (a thin archive: nm and readelf read its members where they lie)
	nm -P -g --defined-only "$a" | awk 'NF >= 2 && $1 !~ /:$/ {print $1}' |
		LC_ALL=C sort -u >"$work/own"
	nm -P -u "$a" | awk 'NF >= 2 && $1 !~ /:$/ {print $1}' | LC_ALL=C sort -u |
		LC_ALL=C comm -23 - "$work/own" >"$work/used"
	awk '$2 ~ /^[A-Z]$/ {print $3}' "$map" | LC_ALL=C sort -u >"$work/kernel"
	missing=$(LC_ALL=C comm -23 "$work/used" "$work/kernel")
	clash=$(LC_ALL=C comm -12 "$work/own" "$work/kernel")
	if [ -n "$missing" ]; then
		echo "$missing" | head -n 20 | sed 's/^/# undefined reference: /'
		bad=1
	fi
	if [ -n "$clash" ]; then
		echo "$clash" | head -n 20 | sed 's/^/# defined twice (vmlinux has it): /'
		bad=1
	fi
	readelf -p .modinfo "$a" 2>/dev/null |
		sed -n 's/^ *\[ *[0-9a-f]*\] *//p' >"$work/modinfo"
	if ! grep -qx 'vdimg\.license=GPL' "$work/modinfo" ||
			grep -v '^vdimg\.' "$work/modinfo" | grep -q .; then
		sed 's/^/# modinfo: /' "$work/modinfo" | head -n 10
		bad=1
	fi
	echo "# $(wc -l <"$work/used") symbols used from vmlinux, $(wc -l <"$work/own") defined, $(grep -c . "$work/modinfo") modinfo strings"
	[ "$bad" -eq 0 ]
}

if configure "CONFIG_BLK_DEV_VDIMG=y CONFIG_BLK_DEV_VDIMG_ZLIB=y CONFIG_BLK_DEV_VDIMG_ZSTD=y" \
		-e BLK_DEV_VDIMG -e BLK_DEV_VDIMG_ZLIB -e BLK_DEV_VDIMG_ZSTD; then
	if [ "${INTREE_LINK:-0}" = 1 ]; then
		build "BLK_DEV_VDIMG=y with ZLIB and ZSTD: vmlinux" build-y.log vmlinux &&
		check "vdimg is built in: built-in.a, modules.builtin" eval \
			'[ -s "$bo/built-in.a" ] && grep -qx "kernel/drivers/block/vdimg/vdimg.ko" "$kobj/modules.builtin"' &&
		check "vmlinux holds vdimg's code (System.map: vdimg_init, vdimg_decompress)" eval \
			'grep -q " vdimg_init$" "$kobj/System.map" && grep -q " vdimg_decompress$" "$kobj/System.map"'
	elif build "BLK_DEV_VDIMG=y with ZLIB and ZSTD: drivers/block/vdimg/built-in.a" build-y.log \
			drivers/block/vdimg/; then
		check "built-in.a links into vmlinux: its symbols resolve, none clashes, modinfo names vdimg" \
			builtin_syms
	fi
fi
if configure CONFIG_BLK_DEV_VDIMG=m -m BLK_DEV_VDIMG -d BLK_DEV_VDIMG_ZLIB -d BLK_DEV_VDIMG_ZSTD &&
	build "BLK_DEV_VDIMG=m without ZLIB and ZSTD, W=1: vdimg.ko" build-m.log W=1 \
		drivers/block/vdimg/vdimg.ko; then
	check "vdimg.o and vdimg.ko are built" test -s "$bo/vdimg.o" -a -s "$bo/vdimg.ko"
fi

check "the in-tree compat.h has no kernel version tests" \
	eval '! grep -q "LINUX_VERSION_CODE\|KERNEL_VERSION" "$vd/include/vdimg/compat.h"'
wait "$cp_pid"
out=$(grep -E '(ERROR|WARNING|CHECK):' "$work/checkpatch.out")
left=$(echo "$out" | grep -v -e 'CamelCase: <zlib_' -e "vhdx.h:[0-9]*: CHECK: Macro argument reuse '[abc]'" \
	-e 'platform.h:[0-9]*: WARNING: do not add new typedefs' | grep .)
# xargs: 0 when every run was clean, 123 when one found something; anything else, a failure to run
rc=$(cat "$work/checkpatch.rc")
if [ "$rc" != 0 ] && [ "$rc" != 123 ]; then
	tail -n 5 "$work/checkpatch.out" | sed 's/^/# /'
	not_ok "checkpatch --strict: the in-tree sources (checkpatch exit $rc)"
elif [ -z "$left" ]; then
	ok "checkpatch --strict: the in-tree sources ($(echo "$out" | grep -c .) known exceptions)"
else
	echo "$left" | sed 's/^/# /'
	not_ok "checkpatch --strict: the in-tree sources"
fi
if [ -s "$work/checkpatch-kconfig.out" ]; then
	sed 's/^/# /' "$work/checkpatch-kconfig.out"
	not_ok "checkpatch --strict: Kconfig"
else
	ok "checkpatch --strict: Kconfig"
fi
echo "# $((SECONDS - t_start)) s in all"
echo "1..$n"
echo "$((n - fails)) passed, $fails failed, 0 skipped"
[ "$fails" -eq 0 ]
