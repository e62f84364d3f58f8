#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# debs.sh [--dkms]: build the Debian packages from a clean copy of the committed tree
# (dpkg-buildpackage -us -uc -b), check what they hold (dpkg-deb -c), run lintian (errors fail,
# warnings are counted), and with --dkms build the module with DKMS from the vdimg-dkms package
# for every kernel whose headers are installed, in private DKMS trees (nothing on the system
# changes: no dkms.conf in /usr/src, nothing in /lib/modules; dkms does create its MOK signing key
# /var/lib/dkms/mok.{key,pub} on first use, as any DKMS package would). KTAP output; takes a minute or two
# (plus about a minute a kernel with --dkms), so it runs outside CI. Needs debhelper, dh-dkms,
# lintian, dkms (.ci/deps.sh installs the build dependencies only).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
want_dkms=
[ "${1:-}" = --dkms ] && want_dkms=1
work=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-debs.XXXXXX")
trap 'rm -rf "$work"' EXIT
n=0 fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
check() { local d=$1; shift; if "$@" >"$work/out" 2>&1; then ok "$d"; else sed 's/^/# /' "$work/out" | tail -n 30; not_ok "$d"; fi; }
echo "TAP version 13"

mkdir -p "$work/src"
git -C "$top" archive HEAD | tar -x -C "$work/src"
ver=$(dpkg-parsechangelog -l "$work/src/debian/changelog" -S Version)
t0=$(date +%s)
check "dpkg-buildpackage -us -uc -b" sh -c "cd '$work/src' && dpkg-buildpackage -us -uc -b -j2"
echo "# dpkg-buildpackage: $(( $(date +%s) - t0 )) s"
utils=$work/vdimg-utils_${ver}_$(dpkg --print-architecture).deb
dkmsdeb=$work/vdimg-dkms_${ver}_all.deb

# has DEB PATH...: every PATH is in the package
has() {
	local deb=$1 p
	shift
	dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' >"$work/list"
	for p in "$@"; do
		grep -qx "$p" "$work/list" || { echo "missing: $p"; return 1; }
	done
}
check "vdimg-utils holds the tool, mount helper, vdimgtab, units, udev, boot hooks, completion, man pages" \
	has "$utils" /usr/sbin/vdimgctl /sbin/mount.vdimg /usr/lib/vdimg/vdimgtab /usr/lib/vdimg/vdimg-id \
	/usr/lib/systemd/system-generators/vdimg-generator /usr/lib/systemd/system/vdimg@.service \
	/usr/lib/udev/rules.d/60-vdimg.rules /usr/share/initramfs-tools/hooks/vdimg \
	/usr/share/initramfs-tools/scripts/local-top/vdimg /usr/lib/dracut/modules.d/90vdimg/module-setup.sh \
	/usr/lib/systemd/system-shutdown/vdimg.shutdown /usr/share/bash-completion/completions/vdimgctl \
	/usr/share/man/man8/vdimgctl.8.gz /usr/share/man/man8/mount.vdimg.8.gz /usr/share/man/man5/vdimgtab.5.gz
check "vdimg-dkms holds the module sources and dkms.conf" \
	has "$dkmsdeb" "/usr/src/vdimg-$ver/dkms.conf" "/usr/src/vdimg-$ver/Kbuild" "/usr/src/vdimg-$ver/Makefile" \
	"/usr/src/vdimg-$ver/drivers/dev.c" "/usr/src/vdimg-$ver/backends/registry.c" \
	"/usr/src/vdimg-$ver/include/uapi/linux/vdimg.h"
check "vdimg-dkms registers with DKMS in postinst and removes itself in prerm" \
	sh -c "dpkg-deb -I '$dkmsdeb' postinst | grep -q common.postinst && dpkg-deb -I '$dkmsdeb' prerm | grep -q 'dkms remove'"
check "vdimg-utils updates the initramfs (trigger)" sh -c "dpkg-deb -I '$utils' triggers | grep -q update-initramfs"

lintian --pedantic -I "$work"/vdimg_*.changes >"$work/lintian" 2>&1
grep -v 'root privileges' "$work/lintian" | sed 's/^/# /'
e=$(grep -c '^E: ' "$work/lintian")
w=$(grep -c '^W: ' "$work/lintian")
echo "# lintian: $e errors, $w warnings"
if [ "$e" -eq 0 ]; then ok "lintian: no errors ($w warnings)"; else not_ok "lintian: $e errors"; fi

if [ -n "$want_dkms" ]; then
	dpkg-deb -x "$dkmsdeb" "$work/root"
	mkdir -p "$work/dkms"
	for hdr in /usr/src/linux-headers-*-amd64; do
		[ -d "$hdr" ] || continue
		rel=${hdr#/usr/src/linux-headers-}
		t0=$(date +%s)
		check "dkms build vdimg/$ver for $rel" \
			dkms build -m vdimg -v "$ver" -k "$rel" --kernelsourcedir "$hdr" \
			--sourcetree "$work/root/usr/src" --dkmstree "$work/dkms"
		echo "# dkms build $rel: $(( $(date +%s) - t0 )) s"
		check "vdimg.ko for $rel is $rel's" sh -c "modinfo -F vermagic '$work/dkms/vdimg/$ver/$rel/x86_64/module/vdimg.ko'* | grep -q '^$rel '"
	done
fi
echo "1..$n"
[ "$fails" -eq 0 ]
