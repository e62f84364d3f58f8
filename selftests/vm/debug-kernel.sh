#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build, once, the small Linux 6.12 debug kernel that the VM tests also run on: KASAN (generic,
# inline), PROVE_LOCKING, DEBUG_ATOMIC_SLEEP, DEBUG_KMEMLEAK and KUNIT, configured by
# `make allnoconfig` plus the fragment debug-kernel.config beside this script, from Debian's
# linux-source-6.12 package. The result is cached outside the repository in
#
#   $VDIMG_CACHE/debug-kernel-<key>/      (VDIMG_CACHE defaults to /var/cache/vdimg)
#       bzImage                 the kernel, for qemu -kernel
#       release                 its `make kernelrelease`
#       lib/modules/<release>/  modules_install output (stripped, depmod'ed, with modules.builtin)
#       build/                  the O= object tree: use it as KDIR for `make -C build M=... modules`
#       src/                    the unpacked source that build/ refers to (keep it)
#       build.log               the full make output
#
# where <key> is a hash of the fragment, this script, the source package version and the
# compiler version, so editing any of them builds a fresh kernel in a new directory. A complete
# directory is reused as it is; an interrupted build is resumed. The last line on stdout is
# always the cache directory; progress and errors go to stderr.
#
# Exit status: 0 ready, 1 build failed, 2 a prerequisite is missing (see .ci/deps.sh),
# 3 (--check only) not built yet.

set -euo pipefail

me=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$me")
frag=$here/debug-kernel.config
pkg=linux-source-6.12
tarball=/usr/src/$pkg.tar.xz
cache=${VDIMG_CACHE:-/var/cache/vdimg}
jobs=${VDIMG_JOBS:-$(nproc)}

usage() {
	cat <<EOT
usage: ${0##*/} [--check | --print-dir | --prune]

Builds (or reuses) the vdimg debug kernel and prints its cache directory as the last stdout line.
  --check      exit 0 if the kernel for this configuration is already built, 3 if not; build nothing
  --print-dir  print the cache directory this configuration maps to; build nothing
  --prune      after making sure this kernel is built, delete other debug-kernel-* directories
Environment: VDIMG_CACHE (default /var/cache/vdimg), VDIMG_JOBS (default: number of CPUs).
EOT
}

msg() { echo "debug-kernel: $*" >&2; }
die() { local rc=$1; shift; msg "$*"; exit "$rc"; }

mode=build
prune=0
for arg in "$@"; do
	case $arg in
	--check) mode=check ;;
	--print-dir) mode=print ;;
	--prune) prune=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

[ -r "$frag" ] || die 2 "$frag: config fragment missing"
pkgver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) ||
	die 2 "$pkg: package not installed (apt-get install $pkg; see .ci/deps.sh)"
[ -r "$tarball" ] || die 2 "$tarball: missing although $pkg is installed"
command -v gcc >/dev/null || die 2 "gcc: not found"
ccver=$(gcc -dumpfullversion)

key=$({ cat "$frag" "$me"; echo "$pkg $pkgver"; echo "gcc $ccver"; } | sha256sum | cut -c1-16)
dir=$cache/debug-kernel-$key
src=$dir/src
obj=$dir/build
log=$dir/build.log

is_complete() {
	local rel
	[ -f "$dir/.complete" ] && [ -s "$dir/bzImage" ] && [ -s "$dir/release" ] || return 1
	rel=$(cat "$dir/release")
	[ -f "$obj/Module.symvers" ] && [ -f "$obj/Makefile" ] &&
		[ -f "$dir/lib/modules/$rel/modules.dep" ]
}

# Every CONFIG_ line of the fragment must hold in the final .config: Kconfig drops a symbol
# whose dependencies are unmet without a word, and a debug kernel that quietly lost KASAN
# would pass everything.
check_config() {
	local line sym want got bad=0
	while IFS= read -r line; do
		case $line in
		"# CONFIG_"*" is not set")
			sym=${line#\# }; sym=${sym%% *}; want=n ;;
		CONFIG_*=*)
			sym=${line%%=*}; want=${line#*=} ;;
		*) continue ;;
		esac
		got=$(sed -n "s/^$sym=//p" "$obj/.config")
		[ -n "$got" ] || got=n
		if [ "$got" != "$want" ]; then
			msg "config: $sym wanted $want, got $got"
			bad=1
		fi
	done < "$frag"
	return $bad
}

run_make() {
	local rc=0
	echo "+ make $*" >> "$log"
	nice -n 10 make -C "$src" O="$obj" -j"$jobs" "$@" >> "$log" 2>&1 || rc=$?
	if [ $rc -ne 0 ]; then
		msg "make $* failed (exit $rc); last lines of $log:"
		tail -n 40 "$log" >&2
		exit 1
	fi
}

prune_others() {
	local d
	for d in "$cache"/debug-kernel-*/; do
		d=${d%/}
		[ -d "$d" ] && [ "$d" != "$dir" ] || continue
		# skip a directory whose build is running right now
		if exec 8>>"$d.lock" && flock -n 8; then
			msg "pruning $d"
			rm -rf "$d"
			rm -f "$d.lock"
			flock -u 8
		fi
		exec 8>&-
	done
}

# The whole run is one function, read in full before it starts, so a checkout or an edit of
# this file while a build is running cannot change what the running shell executes.
main() {
	local rel start tool

	case $mode in
	print)
		echo "$dir"
		exit 0 ;;
	check)
		if is_complete; then echo "$dir"; exit 0; fi
		exit 3 ;;
	esac

	if ! is_complete; then
		mkdir -p "$cache"
		exec 9>>"$dir.lock"
		if ! flock -n 9; then
			msg "another build of $dir is running; waiting for it"
			flock 9
		fi
	fi

	if ! is_complete; then
		for tool in make gcc flex bison bc depmod xz; do
			command -v "$tool" >/dev/null || die 2 "$tool: not found (see .ci/deps.sh)"
		done
		[ -e /usr/include/libelf.h ] || die 2 "/usr/include/libelf.h: missing (libelf-dev, for objtool)"
		start=$SECONDS
		mkdir -p "$dir"
		rm -f "$dir/.complete"
		if [ ! -f "$src/.vdimg-unpacked" ]; then
			msg "unpacking $tarball ($pkg $pkgver)"
			rm -rf "$src"
			mkdir -p "$src"
			tar -xf "$tarball" -C "$src" --strip-components=1
			touch "$src/.vdimg-unpacked"
		fi
		mkdir -p "$obj"
		if [ ! -f "$obj/.config" ]; then
			: > "$log"
			run_make KCONFIG_ALLCONFIG="$frag" allnoconfig
		fi
		check_config || die 1 "$frag: the lines above did not survive into $obj/.config"
		msg "building into $dir (log: $log)"
		run_make all
		rel=$(make -s -C "$src" O="$obj" kernelrelease 2>>"$log")
		[ -n "$rel" ] || die 1 "make kernelrelease printed nothing"
		rm -rf "$dir/lib"
		run_make INSTALL_MOD_PATH="$dir" INSTALL_MOD_STRIP=1 modules_install
		cp "$obj/arch/x86/boot/bzImage" "$dir/bzImage"
		echo "$rel" > "$dir/release"
		touch "$dir/.complete"
		is_complete || die 1 "$dir: build finished but the result is incomplete"
		msg "built $rel in $((SECONDS - start)) s"
	fi

	[ $prune -eq 0 ] || prune_others
	echo "$dir"
}

main
