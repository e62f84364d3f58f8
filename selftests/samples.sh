#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# samples.sh: the third-party sample images the tests read (Hyper-V, Virtual PC, Disk2VHD, VMware,
# Parallels, DMG, cloop, bochs and fuzzer-mutated images). They are QEMU's iotest sample images,
# which ship in Debian's `qemu` source package (tests/qemu-iotests/sample_images/). This script
# fetches that package's upstream tarball (about 23 MiB) with apt's source mechanism, using a deb-src
# entry and package lists of its own (the system's apt configuration is left as it is), extracts only
# that directory, and keeps the files whose sha256 matches selftests/samples.sha256 in a cache.
#
#   samples.sh           fetch into the cache unless it already holds every listed file (verified)
#   samples.sh --dir     print the directory the tests should read: the cache when it holds every
#                        listed file, else ../shared/samples beside the tree when that does, else
#                        the cache (possibly incomplete: the tests then skip what is missing)
#   samples.sh --check   exit 0 when --dir names a directory with every listed file verified
#
# Cache: $VDIMG_SAMPLES_CACHE, else /var/cache/vdimg/samples when it is (or can be made) writable,
# else ~/.cache/vdimg/samples. Suite: $VDIMG_SAMPLES_SUITE (default bookworm). A fetch that fails
# (no network, no deb-src for the suite) says why, writes the reason to the cache's MISSING file
# for the tests to quote, and exits 0: the tests skip what they cannot read, they never fail on it.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
list=$top/selftests/samples.sha256
suite=${VDIMG_SAMPLES_SUITE:-bookworm}
mirror=${VDIMG_SAMPLES_MIRROR:-http://deb.debian.org/debian}

cache_dir() {
	if [ -n "${VDIMG_SAMPLES_CACHE:-}" ]; then
		echo "$VDIMG_SAMPLES_CACHE"
	elif mkdir -p /var/cache/vdimg/samples 2>/dev/null && [ -w /var/cache/vdimg/samples ]; then
		echo /var/cache/vdimg/samples
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/vdimg/samples"
	fi
}

# complete DIR: every file of the list is in DIR with its checksum
complete() {
	[ -d "$1" ] && (cd "$1" && sha256sum --quiet -c "$list" >/dev/null 2>&1)
}

cache=$(cache_dir)
case ${1:-} in
--dir)
	if complete "$cache"; then
		echo "$cache"
	elif complete "$top/../shared/samples"; then
		(cd "$top/../shared/samples" && pwd)
	else
		echo "$cache"
	fi
	exit 0
	;;
--check)
	complete "$("$0" --dir)"
	exit
	;;
"") ;;
*)
	sed -n '4,18s/^# \{0,1\}//p' "$0"
	exit 2
	;;
esac

if complete "$cache"; then
	echo "samples: $cache holds all $(wc -l <"$list") sample images (sha256 verified)"
	exit 0
fi
mkdir -p "$cache" || { echo "samples: cannot create $cache" >&2; exit 1; }

missing() { # missing REASON: record why the cache is incomplete, for the tests' skip messages
	echo "samples: $1" >&2
	echo "$1" >"$cache/MISSING"
	exit 0
}

work=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-samples.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/src"
cat >"$work/src.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(-q -o "Dir::Etc::SourceList=$work/src.sources" -o Dir::Etc::SourceParts=/nonexistent
	-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
[ "$(id -u)" -eq 0 ] || apt_opts+=(-o Debug::NoLocking=1)

echo "samples: fetching Debian's qemu source package ($suite) for QEMU's iotest sample images"
if ! apt-get "${apt_opts[@]}" update >"$work/apt.log" 2>&1 ||
	! ls "$work/lists/"*_Sources* >/dev/null 2>&1; then
	grep -E '^(E|W|Err):' "$work/apt.log" | head -n 5 >&2
	missing "could not fetch the $suite deb-src index from $mirror (no network?)"
fi
# only the upstream tarball holds the images; the Debian diff is not needed
uri=$(apt-get "${apt_opts[@]}" --print-uris source qemu 2>"$work/apt.log" |
	sed -n "s/^'\([^']*\.orig\.tar\.[a-z0-9]*\)' \([^ ]*\) \([0-9]*\) SHA256:\([0-9a-f]*\).*/\1 \2 \3 \4/p" |
	head -n1)
[ -n "$uri" ] || missing "no qemu source package in $suite (apt-get source --print-uris qemu)"
read -r url file size sum <<<"$uri"
echo "samples: downloading $file ($((size / 1048576)) MiB)"
if ! (cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only --tar-only qemu \
	>"$work/apt.log" 2>&1) || [ ! -f "$work/src/$file" ]; then
	# older apt has no --tar-only: fetch the tarball itself
	curl -fsSL -o "$work/src/$file" "$url" 2>>"$work/apt.log" ||
		wget -q -O "$work/src/$file" "$url" 2>>"$work/apt.log" ||
		missing "download of $url failed"
fi
echo "$sum  $work/src/$file" | sha256sum --quiet -c - >/dev/null 2>&1 ||
	missing "$file does not match the sha256 of the $suite Sources index"
tar -xf "$work/src/$file" -C "$work/src" --wildcards --no-anchored \
	'tests/qemu-iotests/sample_images/*' 2>>"$work/apt.log" ||
	missing "$file has no tests/qemu-iotests/sample_images/"
dir=$(find "$work/src" -type d -path '*/tests/qemu-iotests/sample_images' | head -n1)
[ -n "$dir" ] || missing "$file has no tests/qemu-iotests/sample_images/"

# keep exactly the listed files whose checksum matches
bad=0
while read -r want name; do
	if [ -f "$dir/$name" ] && [ "$(sha256sum <"$dir/$name" | cut -d' ' -f1)" = "$want" ]; then
		cp "$dir/$name" "$cache/$name.tmp" && mv "$cache/$name.tmp" "$cache/$name"
	else
		echo "samples: $name: missing from $file or its sha256 differs: not used" >&2
		rm -f "$cache/$name"
		bad=$((bad + 1))
	fi
done <"$list"
if [ "$bad" -gt 0 ]; then
	missing "$bad of $(wc -l <"$list") sample images missing or not matching selftests/samples.sha256 in $file"
fi
rm -f "$cache/MISSING"
echo "samples: $cache holds all $(wc -l <"$list") sample images (sha256 verified, from $file)"
