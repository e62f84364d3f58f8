#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# debs.sh [--no-install]: the Debian packages, built, installed and purged for real (a CI stage of
# selftests/run-all.sh, about 3 minutes on 2 cores).
#
#  1. build them from a copy of the committed tree (dpkg-buildpackage -us -uc -b; the tree itself
#     is not touched), check what they hold (dpkg-deb -c), run lintian (an error fails, warnings
#     are printed as a note);
#  2. as root: apt-get install both; DKMS must have built, installed and (when it signs) signed
#     vdimg.ko for the newest Debian 6.1 and 6.12 kernels in /boot, with their vermagic;
#     vdimgctl --version must be the package version, the files dpkg -L lists must be there;
#  3. apt-get purge both, and nothing may be left: no file of either package, no module under
#     /lib/modules/*/updates, no /usr/src/vdimg-*, no /var/lib/dkms/vdimg, no vdimg in dkms
#     status or in modules.dep.
#
# The purge also runs from an exit trap, so a failure leaves the machine as it found it; the DKMS
# signing key (/var/lib/dkms/mok.{key,pub}, which DKMS makes on first use) is removed again only
# when it did not exist before. Steps 2-3 are skipped, with the reason, when not root or with
# --no-install, and when vdimg is already installed on the machine (packages, or a hand-made
# DKMS registration) since purging would break it. Needs dpkg-dev, debhelper, dh-dkms, dkms,
# lintian (.ci/deps.sh installs them). KTAP output, last line "N passed, N failed, N skipped".
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
want_install=1
[ "${1:-}" = --no-install ] && want_install=
export DEBIAN_FRONTEND=noninteractive
work=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-debs.XXXXXX")
chmod 755 "$work"	# apt reads the .debs as its unprivileged _apt user
n=0 pass=0 fails=0 skips=0
installed=		# set once apt-get install has been started: the trap purges then
tried=			# set then too, for good: the trap removes a DKMS key this run made
mok_before=
[ -e /var/lib/dkms/mok.key ] && mok_before=1

ok() { n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
skip() { n=$((n + 1)); skips=$((skips + 1)); echo "ok $n - $1 # SKIP $2"; }
note() { echo "# $*"; }
# check DESCRIPTION CMD...: ok when CMD succeeds; otherwise its output's tail and not ok
check() {
	local d=$1
	shift
	if "$@" >"$work/out" 2>&1; then
		ok "$d"
	else
		tail -n 30 "$work/out" | sed 's/^/# /'
		not_ok "$d"
	fi
}
# apt_get ARGS...: apt-get -y, where the initramfs-tools trigger the packages fire runs but does
# not rewrite /boot/initrd.img-* (twice a few minutes; the hook itself is tested by
# selftests/boot/run.sh): in a private mount namespace, update-initramfs.conf is a copy with
# update_initramfs=no over it. Nothing on disk changes, and the mount ends with the process.
uic=/etc/initramfs-tools/update-initramfs.conf
apt_get() {
	if [ -f "$uic" ] && [ -f "$work/uic" ]; then
		nice -n 10 unshare -m --propagation private sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' \
			sh "$work/uic" "$uic" apt-get -y -q -o DPkg::Lock::Timeout=300 "$@"
	else
		nice -n 10 apt-get -y -q -o DPkg::Lock::Timeout=300 "$@"
	fi
}

# purge: remove both packages, and what a failed removal may have left of the DKMS registration
purge() {
	local p
	for p in vdimg-dkms vdimg-utils; do
		if dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qv '^not-installed$'; then
			apt_get purge vdimg-dkms vdimg-utils >"$work/purge.log" 2>&1 ||
				dpkg --purge --force-remove-reinstreq vdimg-dkms vdimg-utils >>"$work/purge.log" 2>&1
			break
		fi
	done
	if [ -d /var/lib/dkms/vdimg ]; then
		dkms remove "vdimg/$ver" --all >>"$work/purge.log" 2>&1
		rm -rf /var/lib/dkms/vdimg
	fi
}

finish() {
	if [ -n "$installed" ]; then
		purge
		installed=
	fi
	# the key DKMS made for this run: gone again (one that was there before stays)
	if [ -n "$tried" ] && [ -z "$mok_before" ]; then
		rm -f /var/lib/dkms/mok.key /var/lib/dkms/mok.pub
	fi
	rm -rf "$work"
}
trap finish EXIT
trap 'exit 130' INT TERM

# series_kernel SERIES: the newest Debian kernel of that series in /boot (as run-all.sh finds it)
series_kernel() {
	local k
	k=$(ls /boot/vmlinuz-"$1".*-amd64 2>/dev/null | sort -V | tail -n1)
	[ -n "$k" ] && echo "${k#/boot/vmlinuz-}"
}

echo "KTAP version 1"
t_start=$(date +%s)

# ---- 1. build, contents, lintian
missing=
for c in dpkg-buildpackage dh dh_dkms lintian; do
	command -v "$c" >/dev/null || missing="$missing $c"
done
if [ -n "$missing" ]; then
	not_ok "build tools installed (missing:$missing; .ci/deps.sh installs them)"
	echo "$pass passed, $fails failed, $skips skipped"
	exit 1
fi

mkdir -p "$work/src"
git -C "$top" archive HEAD | tar -x -C "$work/src"
ver=$(dpkg-parsechangelog -l "$work/src/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
t0=$(date +%s)
check "dpkg-buildpackage -us -uc -b" sh -c "cd '$work/src' && nice -n 10 dpkg-buildpackage -us -uc -b -j2"
note "dpkg-buildpackage: $(($(date +%s) - t0)) s"
utils=$work/vdimg-utils_${ver}_$arch.deb
dkmsdeb=$work/vdimg-dkms_${ver}_all.deb
if [ ! -f "$utils" ] || [ ! -f "$dkmsdeb" ]; then
	not_ok "vdimg-utils_${ver}_$arch.deb and vdimg-dkms_${ver}_all.deb built"
	echo "$pass passed, $fails failed, $skips skipped"
	exit 1
fi

# has DEB PATH...: every PATH is in the package
has() {
	local deb=$1 p
	shift
	dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' >"$work/list"
	for p in "$@"; do
		grep -qx "$p" "$work/list" || { echo "missing: $p"; return 1; }
	done
}
utils_files=(/usr/sbin/vdimgctl /sbin/mount.vdimg /usr/lib/vdimg/vdimgtab /usr/lib/vdimg/vdimg-id
	/usr/lib/systemd/system-generators/vdimg-generator /usr/lib/systemd/system/vdimg@.service
	/usr/lib/udev/rules.d/60-vdimg.rules /usr/share/initramfs-tools/hooks/vdimg
	/usr/share/initramfs-tools/scripts/local-top/vdimg /usr/lib/dracut/modules.d/90vdimg/module-setup.sh
	/usr/lib/systemd/system-shutdown/vdimg.shutdown /usr/share/bash-completion/completions/vdimgctl
	/usr/share/zsh/vendor-completions/_vdimgctl
	/usr/share/man/man8/vdimgctl.8.gz /usr/share/man/man8/mount.vdimg.8.gz /usr/share/man/man5/vdimgtab.5.gz)
dkms_files=("/usr/src/vdimg-$ver/dkms.conf" "/usr/src/vdimg-$ver/Kbuild" "/usr/src/vdimg-$ver/Makefile"
	"/usr/src/vdimg-$ver/drivers/dev.c" "/usr/src/vdimg-$ver/backends/registry.c"
	"/usr/src/vdimg-$ver/include/uapi/linux/vdimg.h")
check "vdimg-utils holds the tool, mount helper, vdimgtab, units, udev, boot hooks, completion, man pages" \
	has "$utils" "${utils_files[@]}"
check "vdimg-dkms holds the module sources and dkms.conf" has "$dkmsdeb" "${dkms_files[@]}"
check "vdimg-dkms's dkms.conf is for vdimg $ver" \
	sh -c "dpkg-deb --fsys-tarfile '$dkmsdeb' | tar -xO './usr/src/vdimg-$ver/dkms.conf' | grep -qx 'PACKAGE_VERSION=\"$ver\"'"
check "vdimg-dkms registers with DKMS in postinst and removes itself in prerm" \
	sh -c "dpkg-deb -I '$dkmsdeb' postinst | grep -q common.postinst && dpkg-deb -I '$dkmsdeb' prerm | grep -q 'dkms remove'"
check "vdimg-utils updates the initramfs (trigger)" sh -c "dpkg-deb -I '$utils' triggers | grep -q update-initramfs"

t0=$(date +%s)
nice -n 10 lintian --pedantic -I "$work"/vdimg_*.changes >"$work/lintian" 2>&1
e=$(grep -c '^E: ' "$work/lintian")
w=$(grep -c '^W: ' "$work/lintian")
grep -E '^[EW]: ' "$work/lintian" | sed 's/^/# lintian: /'
note "lintian: $e errors, $w warnings, $(grep -c '^[IP]: ' "$work/lintian") info/pedantic tags, $(($(date +%s) - t0)) s"
if [ "$e" -eq 0 ]; then ok "lintian: no errors ($w warnings)"; else not_ok "lintian: $e errors"; fi

# ---- 2. install
why=
if [ -z "$want_install" ]; then
	why="--no-install"
elif [ "$(id -u)" -ne 0 ]; then
	why="not root"
elif ! command -v dkms >/dev/null; then
	not_ok "dkms installed (.ci/deps.sh installs it)"
	want_install=
elif dpkg-query -W -f '${Package} ${db:Status-Status}\n' vdimg-dkms vdimg-utils 2>/dev/null |
	grep -v ' not-installed$' | grep -q .; then
	why="vdimg packages are installed on this machine ($(dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}, ' vdimg-dkms vdimg-utils 2>/dev/null)); purging them would break it"
elif [ -e /var/lib/dkms/vdimg ] || compgen -G '/usr/src/vdimg-*' >/dev/null ||
	compgen -G '/lib/modules/*/updates/*vdimg.ko*' >/dev/null || compgen -G '/lib/modules/*/updates/*/vdimg.ko*' >/dev/null; then
	why="vdimg is installed by hand on this machine (/var/lib/dkms/vdimg, /usr/src/vdimg-* or a vdimg.ko under /lib/modules/*/updates); installing and purging the packages would break it"
fi
kernels=()
if [ -n "$want_install" ] && [ -z "$why" ]; then
	for series in 6.1 6.12; do
		k=$(series_kernel "$series")
		if [ -z "$k" ]; then
			not_ok "a Debian $series kernel in /boot"
		elif [ ! -e "/lib/modules/$k/build/Makefile" ]; then
			not_ok "headers for $k (/lib/modules/$k/build)"
		else
			kernels+=("$k")
		fi
	done
fi

if [ -n "$why" ] || [ -z "$want_install" ]; then
	[ -n "$why" ] && skip "install, check and purge the packages" "$why"
elif [ "${#kernels[@]}" -gt 0 ]; then
	note "kernels: ${kernels[*]}; DKMS signing key before: $([ -n "$mok_before" ] && echo present || echo none)"
	if [ -f "$uic" ]; then
		{ cat "$uic"; echo update_initramfs=no; } >"$work/uic"
		if ! unshare -m --propagation private sh -c 'mount --bind "$1" "$2" && . "$2" && [ "$update_initramfs" = no ]' \
			sh "$work/uic" "$uic" 2>"$work/out"; then
			sed 's/^/# /' "$work/out"
			note "no private mount namespace here: the initramfs trigger will rewrite /boot/initrd.img-* twice"
			rm -f "$work/uic"
		fi
	fi
	boot_before=$(stat -c '%n %Y %s' /boot/initrd.img-* 2>/dev/null)
	t0=$(date +%s)
	installed=1 tried=1
	check "apt-get install ./vdimg-dkms_${ver}_all.deb ./vdimg-utils_${ver}_$arch.deb" \
		apt_get --no-install-recommends install "$dkmsdeb" "$utils"
	cp "$work/out" "$work/install.log"
	note "apt-get install (DKMS builds, initramfs trigger): $(($(date +%s) - t0)) s"

	dkms status vdimg >"$work/status" 2>&1
	sed 's/^/# dkms status: /' "$work/status"
	signed_any=
	for k in "${kernels[@]}"; do
		# "vdimg/0.1.0, 6.12.95+deb12-amd64, x86_64: installed" (a warning may follow)
		if grep -F "vdimg/$ver, $k, " "$work/status" | grep -q '^vdimg/[^,]*, [^,]*, [^:]*: installed'; then
			ok "dkms status: vdimg/$ver installed for $k"
		else
			not_ok "dkms status: vdimg/$ver installed for $k"
		fi
		ko=$(modinfo -k "$k" -n vdimg 2>/dev/null)
		if [ -n "$ko" ] && [ -f "$ko" ] && [[ "$ko" == /lib/modules/"$k"/updates/* ]]; then
			ok "vdimg.ko for $k is in /lib/modules/$k/updates and modules.dep (${ko#/lib/modules/"$k"/})"
		else
			not_ok "vdimg.ko for $k in /lib/modules/$k/updates and modules.dep (modinfo -k: '${ko:-none}')"
			continue
		fi
		vm=$(modinfo -F vermagic "$ko")
		if [[ "$vm" == "$k "* ]]; then
			ok "vdimg.ko for $k has vermagic '$vm'"
		else
			not_ok "vdimg.ko for $k has vermagic '$vm', not $k's"
		fi
		signer=$(modinfo -F signer "$ko")
		if [ -f /var/lib/dkms/mok.pub ]; then
			# DKMS signs with /var/lib/dkms/mok.key whenever the kernel's sign-file is there; the
			# signature (PKCS#7, naming its certificate by issuer and serial number) must name
			# the certificate mok.pub: its common name as signer, its serial number as key
			cn=$(openssl x509 -inform DER -in /var/lib/dkms/mok.pub -noout -subject -nameopt multiline |
				sed -n 's/^ *commonName *= *//p')
			serial=$(openssl x509 -inform DER -in /var/lib/dkms/mok.pub -noout -serial |
				sed -n 's/^serial=0*//p' | tr a-f A-F)
			sigkey=$(modinfo -F sig_key "$ko" | tr -d ': \t\n' | tr a-f A-F | sed 's/^0*//')
			if [ -n "$signer" ] && [ "$signer" = "$cn" ] && [ -n "$serial" ] &&
				[ "$sigkey" = "$serial" ]; then
				ok "vdimg.ko for $k is signed with the DKMS MOK key ('$signer', $(modinfo -F sig_hashalgo "$ko"))"
				signed_any=1
			else
				not_ok "vdimg.ko for $k signed with the DKMS MOK key (signer '$signer', key $sigkey; mok.pub: '$cn', serial $serial)"
			fi
		else
			note "vdimg.ko for $k: no /var/lib/dkms/mok.pub, so not signed by DKMS (signer: '${signer:-none}')"
		fi
	done
	[ -n "$signed_any" ] && note "Secure Boot: enroll /var/lib/dkms/mok.pub with mokutil --import (README)"

	out=$(/usr/sbin/vdimgctl --version 2>&1)
	if [ "$out" = "vdimgctl $ver" ] && [ "$(command -v vdimgctl)" = /usr/sbin/vdimgctl ]; then
		ok "/usr/sbin/vdimgctl --version prints 'vdimgctl $ver'"
	else
		not_ok "/usr/sbin/vdimgctl --version prints 'vdimgctl $ver' (got '$out', PATH finds '$(command -v vdimgctl)')"
	fi
	# every file the two packages list is on disk, and the ones named above are among them
	dpkg -L vdimg-utils vdimg-dkms >"$work/listed" 2>&1
	while read -r f; do
		[ -d "$f" ] || echo "$f"
	done <"$work/listed" | sort -u >"$work/files"
	note "the packages list $(wc -l <"$work/files") files"
	lost=$(while read -r f; do [ -e "$f" ] || [ -L "$f" ] || echo "$f"; done <"$work/files")
	absent=$(for f in "${utils_files[@]}" "${dkms_files[@]}"; do grep -qx "$f" "$work/files" || echo "$f"; done)
	if [ -n "$(cat "$work/files")" ] && [ -z "$lost" ] && [ -z "$absent" ]; then
		ok "dpkg -L: every listed file is installed, man pages, udev rules, mount helper, units, completion, initramfs hook and dracut module among them"
	else
		note "listed but not on disk: $(echo $lost)"
		note "not listed: $(echo $absent)"
		not_ok "dpkg -L: every listed file installed, the expected ones listed"
	fi
	check "mount finds the helper: /sbin/mount.vdimg is executable" test -x /sbin/mount.vdimg
	check "man finds vdimgctl(8), mount.vdimg(8) and vdimgtab(5)" \
		sh -c 'man -w vdimgctl && man -w 8 mount.vdimg && man -w 5 vdimgtab'
	check "bash completion for vdimgctl loads and registers" \
		bash -c '. /usr/share/bash-completion/completions/vdimgctl && complete -p vdimgctl'
	if command -v zsh >/dev/null; then
		# Debian's zsh has vendor-completions in its default fpath; compinit reads #compdef
		check "zsh completion: in zsh's fpath, parses, compinit binds vdimgctl and mount.vdimg" \
			zsh -f -c 'f=/usr/share/zsh/vendor-completions/_vdimgctl; zsh -n $f &&
				(( ${fpath[(Ie)${f:h}]} )) && autoload -U compinit && compinit -u -D &&
				[[ $_comps[vdimgctl] == _vdimgctl && $_comps[mount.vdimg] == _vdimgctl ]]'
	fi
	if [ -f "$uic" ]; then
		check "the install fired the initramfs-tools trigger (update-initramfs)" \
			grep -q '^Processing triggers for initramfs-tools' "$work/install.log"
	fi

	# ---- 3. purge
	t0=$(date +%s)
	check "apt-get purge vdimg-dkms vdimg-utils" \
		apt_get purge vdimg-dkms vdimg-utils
	note "apt-get purge: $(($(date +%s) - t0)) s"
	cp "$work/out" "$work/purge.log"
	installed=
	left=$(while read -r f; do [ -e "$f" ] || [ -L "$f" ] && echo "$f"; done <"$work/files")
	left="$left $(ls -d /usr/src/vdimg-* /var/lib/dkms/vdimg /lib/modules/*/updates/vdimg.ko* \
		/lib/modules/*/updates/*/vdimg.ko* /etc/vdimgtab 2>/dev/null)"
	left=$(echo $left)
	if [ -z "$left" ]; then
		ok "purge: no file of either package, no vdimg.ko under /lib/modules/*/updates, no /usr/src/vdimg-*, no /var/lib/dkms/vdimg"
	else
		not_ok "purge leaves nothing behind (left: $left)"
	fi
	if [ -f "$uic" ]; then
		check "the purge fired the initramfs-tools trigger again" \
			grep -q '^Processing triggers for initramfs-tools' "$work/purge.log"
	fi
	if dkms status 2>&1 | grep -q vdimg; then
		dkms status 2>&1 | sed 's/^/# dkms status: /'
		not_ok "purge: dkms status has no vdimg"
	else
		ok "purge: dkms status has no vdimg"
	fi
	left=$(grep -l vdimg /lib/modules/*/modules.dep 2>/dev/null)
	if [ -z "$left" ]; then ok "purge: no modules.dep names vdimg"; else not_ok "purge: modules.dep names vdimg ($left)"; fi
	if [ -f "$work/uic" ]; then
		if [ "$(stat -c '%n %Y %s' /boot/initrd.img-* 2>/dev/null)" = "$boot_before" ]; then
			ok "the initrd images in /boot are untouched"
		else
			not_ok "the initrd images in /boot are untouched"
		fi
	fi
	st=$(dpkg-query -W -f '${db:Status-Status} ' vdimg-dkms vdimg-utils 2>/dev/null)
	if [ -z "$(echo $st | tr ' ' '\n' | grep -vx not-installed)" ]; then
		ok "purge: dpkg knows neither package any more"
	else
		not_ok "purge: dpkg still has vdimg-dkms/vdimg-utils ($st)"
	fi
fi

note "debs.sh: $(($(date +%s) - t_start)) s"
echo "$pass passed, $fails failed, $skips skipped"
[ "$fails" -eq 0 ]
