#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# test_pkg: what `make install` and the packages add around vdimgctl, without a kernel: the
# vdimgtab generator's units for a sample /etc/vdimgtab (and systemd-analyze verify on them), the
# vdimgtab helper's option parsing, mount.vdimg's option parsing and its attach/pick/mount/detach
# sequence against a mock vdimgctl, mount and sysfs, the udev helper vdimg-id, the bash
# completion, and the bash and zsh completions against what `vdimgctl CMD --help` prints. The real attach, mount and umount are tested in the VM (330-mount-helper).
set -u
. "$(dirname "$0")/cli_lib.sh"
S=$ROOT/tools/system
echo "KTAP version 1"

# ---- vdimg-generator
cat >"$T/tab" <<'EOT'
# NAME IMAGE OPTIONS
data     /srv/images/data.vhdx     partscan
sys-img  /var/lib/x.qcow2          ro,chain=/a/b.vhd:/c/d.vhd,nofail
manual   /srv/m.img                noauto

bad/name /srv/x.img
rel      x.img
EOT
VDIMGTAB=$T/tab VDIMG_RUN=$T/no-run VDIMG_GENERATOR_STDERR=1 "$S/vdimg-generator" "$T/gen" "$T/early" "$T/late" \
	>"$T/out" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && grep -q "tab:6: 'bad/name' is not a valid name" "$T/err" &&
	grep -q "tab:7: rel: the image must be an absolute path" "$T/err"
ok $? "generator: invalid names and relative paths are reported with their line, the status is 1"
(cd "$T/gen" && find . | sort) >"$T/out"
cat >"$T/want" <<'EOT'
.
./local-fs.target.requires
./local-fs.target.requires/vdimg@data.service
./local-fs.target.wants
./local-fs.target.wants/vdimg@sys-img.service
./vdimg@data.service.d
./vdimg@data.service.d/50-vdimgtab.conf
./vdimg@manual.service.d
./vdimg@manual.service.d/50-vdimgtab.conf
./vdimg@sys-img.service.d
./vdimg@sys-img.service.d/50-vdimgtab.conf
EOT
diff -u "$T/want" "$T/out" >"$T/diff"
ok $? "generator: required by local-fs.target, only wanted with nofail, not pulled in with noauto"
rm -f "$T/diff"
[ "$(readlink "$T/gen/local-fs.target.requires/vdimg@data.service")" = \
	/usr/lib/systemd/system/vdimg@.service ]
ok $? "generator: the instances link to the installed template"
grep -qx "RequiresMountsFor=/var/lib/x.qcow2 /a/b.vhd /c/d.vhd" "$T/gen/vdimg@sys-img.service.d/50-vdimgtab.conf"
ok $? "generator: the unit waits for the file systems of the image and of every chain file"
bd='blockdev@dev-disk-by\x2dvdimg-sys\x2dimg.target'
if command -v systemd-escape >/dev/null; then
	bd="blockdev@$(systemd-escape --path /dev/disk/by-vdimg/sys-img).target"
fi
grep -qxF "Before=$bd" "$T/gen/vdimg@sys-img.service.d/50-vdimgtab.conf" &&
	grep -qxF "Wants=$bd" "$T/gen/vdimg@sys-img.service.d/50-vdimgtab.conf"
ok $? "generator: ordered before $bd (systemd's escaping), so a mount of the link stops first"
VDIMGTAB=$T/none VDIMG_RUN=$T/no-run "$S/vdimg-generator" "$T/gen2" && [ ! -e "$T/gen2" ]
ok $? "generator: no /etc/vdimgtab, nothing generated, status 0"
if command -v systemd-escape >/dev/null; then
	mkdir -p "$T/run"
	printf '%s\n' '/dev/vda /run/vdimg/host' '/dev/sdb1 /run/vdimg/host-2' >"$T/run/hosts"
	VDIMGTAB=$T/none VDIMG_RUN=$T/run "$S/vdimg-generator" "$T/gen3" &&
		(cd "$T/gen3" && find . -type f | sort) >"$T/out" &&
		printf '%s\n' './run-vdimg-host.mount.d/50-vdimg-host.conf' \
			'./run-vdimg-host\x2d2.mount.d/50-vdimg-host.conf' >"$T/want" &&
		diff -u "$T/want" "$T/out" >"$T/diff" &&
		grep -qxF 'DefaultDependencies=no' "$T/gen3/run-vdimg-host.mount.d/50-vdimg-host.conf"
	ok $? "generator: the boot host mounts (/run/vdimg/hosts) are left to the shutdown hook (DefaultDependencies=no)"
	rm -f "$T/diff"
else
	skip "generator: the boot host mounts" "no systemd-escape"
fi

if command -v systemd-analyze >/dev/null; then
	mkdir -p "$T/units"
	# the helper's installed path does not exist here: verify checks that ExecStart= is executable
	sed "s|/usr/lib/vdimg/vdimgtab|$S/vdimgtab|" "$S/vdimg@.service" >"$T/units/vdimg@.service"
	cp -r "$T/gen/vdimg@sys-img.service.d" "$T/units/"
	SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$T/units/vdimg@sys-img.service" \
		>"$T/out" 2>"$T/err"
	[ $? -eq 0 ] && [ ! -s "$T/err" ] && [ ! -s "$T/out" ]
	ok $? "systemd-analyze verify: vdimg@sys-img.service with its generated drop-in, no complaint"
else
	skip "systemd-analyze verify" "systemd-analyze is not installed"
fi

# ---- vdimgtab
VDIMGTAB=$T/tab "$S/vdimgtab" args sys-img >"$T/out" 2>"$T/err"
[ "$(cat "$T/out")" = " -r --chain /a/b.vhd,/c/d.vhd" ]
ok $? "vdimgtab: ro and chain= become vdimgctl attach -r --chain A,B"
VDIMGTAB=$T/tab "$S/vdimgtab" args data >"$T/out" 2>"$T/err"
[ "$(cat "$T/out")" = " -P" ]
ok $? "vdimgtab: partscan becomes -P"
printf 'x /srv/x.img ro,bogus\n' >"$T/tab2"
VDIMGTAB=$T/tab2 "$S/vdimgtab" args x >"$T/out" 2>"$T/err"
[ $? -ne 0 ] && grep -q "unknown option 'bogus'" "$T/err"
ok $? "vdimgtab: an unknown option is an error"
VDIMGTAB=$T/tab "$S/vdimgtab" attach nosuch >"$T/out" 2>"$T/err"
[ $? -ne 0 ] && grep -q "nosuch: not in" "$T/err"
ok $? "vdimgtab: a name that is not in the file is an error"
VDIMGTAB=$T/tab "$S/vdimgtab" attach ../x >"$T/out" 2>"$T/err"
[ $? -ne 0 ] && grep -q "not a valid name" "$T/err"
ok $? "vdimgtab: a name with a slash is refused"

# ---- mount.vdimg: option parsing
m() { "$S/mount.vdimg" "$@" >"$T/out" 2>"$T/err"; rc=$?; }
m --print-args /srv/d.vhdx /mnt -o ro,partition=2,fmt=vhdx,noatime,nofail,defaults,chain=/a:/b -t vdimg.ext4
cat >"$T/want" <<'EOT'
attach: -P -t vhdx --chain /a,/b -r /srv/d.vhdx
partition: 2
mount: -t ext4 -o ro,noatime DIR
EOT
diff -u "$T/want" "$T/out" >"$T/diff"
ok $? "mount.vdimg: ro, partition=, fmt=, chain= are the helper's; noatime goes on; nofail/defaults are dropped; -t vdimg.ext4"
rm -f "$T/diff"
m --print-args -o overlay=/srv/ov.qcow2,ro,fstype=xfs,errors=remount-ro -s rel.img /mnt
[ $rc -eq 0 ] && grep -qx "attach: -P --overlay=/srv/ov.qcow2 $PWD/rel.img" "$T/out" &&
	grep -qx "mount: -t xfs -o ro,errors=remount-ro -s DIR" "$T/out" &&
	grep -qx "partition: auto" "$T/out"
ok $? "mount.vdimg: overlay keeps the device writable, a relative IMAGE is made absolute, -s passes on"
m -o partition=0 a b
[ $rc -eq 1 ] && grep -q "not a partition number" "$T/err"
ok $? "mount.vdimg: partition=0 is a usage error (1)"
m -x a b
[ $rc -eq 1 ] && grep -q "unknown option -x" "$T/err"
ok $? "mount.vdimg: an unknown flag is a usage error"
m onlyone
[ $rc -eq 1 ] && grep -q usage "$T/err"
ok $? "mount.vdimg: one argument is a usage error"
m -N 1 a b
[ $rc -eq 32 ]
ok $? "mount.vdimg: -N (namespaces) is refused with 32"

# ---- mount.vdimg: the sequence, against mocks
mkdir -p "$T/sys/block/vdimg7/vdimg7p1" "$T/sys/block/vdimg7/vdimg7p2" "$T/sys/block/vdimg7/vdimg7p5" "$T/mnt"
echo 2048 >"$T/sys/block/vdimg7/vdimg7p1/size"
echo 81920 >"$T/sys/block/vdimg7/vdimg7p2/size"
echo 2 >"$T/sys/block/vdimg7/vdimg7p5/size"
cat >"$T/vdimgctl" <<EOT
#!/bin/sh
echo "vdimgctl \$*" >>"$T/log"
[ "\$1" = attach ] && [ -n "\${MOCK_ATTACH_FAIL:-}" ] && exit 1
[ "\$1" = attach ] && echo /dev/vdimg7
exit 0
EOT
cat >"$T/mount" <<EOT
#!/bin/sh
echo "mount \$*" >>"$T/log"
[ -z "\${MOCK_MOUNT_FAIL:-}" ]
EOT
chmod +x "$T/vdimgctl" "$T/mount"
mm() {
	rm -f "$T/log"
	VDIMGCTL=$T/vdimgctl MOUNT=$T/mount SYSFS=$T/sys VDIMG_WAIT_TENTHS=0 m "$@"
}
mm /srv/d.vhdx "$T/mnt" -o noatime
cat >"$T/want" <<EOT
vdimgctl attach --show -P /srv/d.vhdx
mount -o noatime /dev/vdimg7p2 $T/mnt
vdimgctl detach /dev/vdimg7
EOT
diff -u "$T/want" "$T/log" >"$T/diff"
[ $? -eq 0 ] && [ $rc -eq 0 ]
ok $? "mount.vdimg: attach, mount the largest partition, then detach (deferred to the unmount)"
rm -f "$T/diff"
mm /srv/d.vhdx "$T/mnt" -o partition=5
grep -qx "mount /dev/vdimg7p5 $T/mnt" "$T/log"
ok $? "mount.vdimg: partition=5 mounts that one"
mm /srv/d.vhdx "$T/mnt" -o partition=3
[ $rc -eq 32 ] && grep -qx "vdimgctl detach /dev/vdimg7" "$T/log" && ! grep -q "^mount" "$T/log"
ok $? "mount.vdimg: a missing partition detaches and fails with 32"
MOCK_MOUNT_FAIL=1 mm /srv/d.vhdx "$T/mnt"
[ $rc -eq 32 ] && [ "$(tail -n1 "$T/log")" = "vdimgctl detach /dev/vdimg7" ]
ok $? "mount.vdimg: a failed mount detaches and fails with 32"
MOCK_ATTACH_FAIL=1 mm /srv/d.vhdx "$T/mnt"
[ $rc -eq 32 ] && [ "$(wc -l <"$T/log")" -eq 1 ]
ok $? "mount.vdimg: a failed attach fails with 32 and runs nothing else"
rm -rf "$T/sys/block/vdimg7/vdimg7p"*
mm /srv/d.vhdx "$T/mnt" -t vdimg.ext4
grep -qx "mount -t ext4 /dev/vdimg7 $T/mnt" "$T/log"
ok $? "mount.vdimg: no partitions, the whole disk"
mm -f /srv/d.vhdx "$T/mnt"
[ $rc -eq 0 ] && [ ! -e "$T/log" ]
ok $? "mount.vdimg: -f (fake) attaches nothing"

# ---- vdimg-id
mkdir -p "$T/sys/block/vdimg3/vdimg" "$T/run/names"
printf '/srv/a-b/c d.img\n' >"$T/sys/block/vdimg3/vdimg/backing_file"
printf '/srv/base.vhd\n/srv/a-b/c d.img\n' >"$T/sys/block/vdimg3/vdimg/chain"
echo "vdimg3 /srv/base.vhd" >"$T/run/names/data"
echo "vdimg3 /srv/other.vhd" >"$T/run/names/stale"
SYSFS=$T/sys VDIMG_RUN=$T/run "$S/vdimg-id" vdimg3 >"$T/out" 2>"$T/err"
printf 'ID_VDIMG_NAME=data\nID_VDIMG_PATH_ENC=srv-a\\x2db-c\\x20d.img\n' >"$T/want"
diff -u "$T/want" "$T/out" >"$T/diff"
ok $? "vdimg-id: the recorded name whose image is in the chain (not a stale one), the escaped path"
rm -f "$T/diff"
if command -v systemd-escape >/dev/null; then
	p=$'/.h/x\xc3\xa9 y:z_1.img'
	printf '%s\n' "$p" >"$T/sys/block/vdimg3/vdimg/backing_file"
	SYSFS=$T/sys VDIMG_RUN=$T/run "$S/vdimg-id" vdimg3 >"$T/out" 2>"$T/err"
	grep -qxF "ID_VDIMG_PATH_ENC=$(systemd-escape --path "$p")" "$T/out"
	ok $? "vdimg-id: the path escaping is systemd-escape --path's (dot, UTF-8, blank, colon)"
else
	skip "vdimg-id: escaping as systemd-escape" "systemd-escape is not installed"
fi
SYSFS=$T/sys VDIMG_RUN=$T/run "$S/vdimg-id" vdimg9 >"$T/out" 2>"$T/err"
[ $? -eq 0 ] && [ ! -s "$T/out" ]
ok $? "vdimg-id: a device without vdimg attributes gets no properties"

# ---- bash completion
if [ -r /usr/share/bash-completion/bash_completion ]; then
	cat >"$T/comp.sh" <<'EOT'
. /usr/share/bash-completion/bash_completion
. "$1"
c() {
	local f=$1
	shift
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	"$f"
	echo "${COMPREPLY[*]}"
}
c _vdimgctl vdimgctl at
c _vdimgctl vdimgctl attach --over
c _vdimgctl vdimgctl attach -t q
c _vdimgctl vdimgctl create -t vh
c _vdimgctl vdimgctl list -O D
c _vdimgctl vdimgctl attach --direct-io=
c _mount_vdimg mount.vdimg a b -o ro,parti
complete -p vdimgctl mount.vdimg
EOT
	bash "$T/comp.sh" "$ROOT/tools/completion/vdimgctl" >"$T/out" 2>"$T/err"
	cat >"$T/want" <<'EOT'
attach
--overlay --overlay= --overlay-format
qcow2 qcow qed
vhd vhdx
DIO DEPTH
on off
ro,partition=
complete -F _vdimgctl vdimgctl
complete -F _mount_vdimg mount.vdimg
EOT
	diff -u "$T/want" "$T/out" >"$T/diff"
	[ $? -eq 0 ] && [ ! -s "$T/err" ]
	ok $? "bash completion: subcommands, options, formats, columns, --direct-io values, mount -o"
	rm -f "$T/diff"
else
	skip "bash completion" "bash-completion is not installed"
fi

# ---- completion drift: every subcommand `vdimgctl --help` lists and every long option
# `vdimgctl CMD --help` prints (outside `quotes`, which cite other tools) is offered by the bash
# completion (its COMPREPLY after "vdimgctl CMD --") and by the zsh one (what its per-command
# function hands _arguments, with the completion system's functions stubbed)
if [ -x "$V" ]; then
	"$V" --help | sed -n 's/^ vdimgctl \([a-z][a-z]*\).*/\1/p' | sort -u >"$T/cmds"
	: >"$T/want"
	while read -r c; do
		"$V" "$c" --help 2>&1 | sed 's/`[^`]*`//g' |
			grep -o -- '--[a-z][a-z-]*[a-z]' | sort -u | sed "s/^/$c /" >>"$T/want"
	done <"$T/cmds"
	if [ "$(wc -l <"$T/cmds")" -ge 14 ] && grep -q '^attach --overlay-format$' "$T/want"; then
		ok 0 "vdimgctl --help lists $(wc -l <"$T/cmds") subcommands, $(wc -l <"$T/want") long options"
	else
		ok 1 "vdimgctl --help lists the subcommands and their options"
	fi
	if [ -r /usr/share/bash-completion/bash_completion ]; then
		cat >"$T/drift.sh" <<'EOT'
. /usr/share/bash-completion/bash_completion
. "$1"
c() {
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_vdimgctl
	printf '%s\n' "${COMPREPLY[@]}"
}
c vdimgctl '' | sed 's/^/- /'
while read -r cmd; do
	c vdimgctl "$cmd" -- | sed "s/=\$//; s/^/$cmd /"
done <"$2"
EOT
		bash "$T/drift.sh" "$ROOT/tools/completion/vdimgctl" "$T/cmds" >"$T/bash" 2>"$T/err"
		{
			sed 's/^/- /' "$T/cmds"
			cat "$T/want"
		} | grep -vxFf "$T/bash" >"$T/diff"
		[ ! -s "$T/diff" ] && [ ! -s "$T/err" ]
		ok $? "bash completion offers every subcommand and every long option of --help"
	else
		skip "bash completion drift" "bash-completion is not installed"
	fi
	if command -v zsh >/dev/null; then
		zsh -n "$ROOT/tools/completion/_vdimgctl" 2>"$T/err"
		ok $? "zsh completion: zsh -n"
		# the completion system's functions print what they are given
		zsh -f -c '
			# the top level (-C) goes to its command state; the others print their specs
			_arguments() {
				if [[ $1 == -C ]]; then state=cmd; return 0; fi
				printf "%s\n" "$@"
			}
			_describe() { local -a a; a=("${(@P)4}"); printf -- "- %s\n" "${a[@]%%:*}"; }
			_values() { :; }
			_files() { :; }
			service=vdimgctl words=()
			source "$1"
			while read -r c; do
				words=($c)
				_vdimgctl_cmd | grep -o -- "--[a-z][a-z-]*[a-z]" | sort -u | sed "s/^/$c /"
			done <"$2"
		' zsh "$ROOT/tools/completion/_vdimgctl" "$T/cmds" >"$T/zsh" 2>"$T/err"
		{
			sed 's/^/- /' "$T/cmds"
			cat "$T/want"
		} | grep -vxFf "$T/zsh" >"$T/diff"
		[ ! -s "$T/diff" ]
		ok $? "zsh completion offers every subcommand and every long option of --help"
		# the file is the body of _vdimgctl: it must not define a function of that name (a
		# second completion would skip its dispatch on the command)
		zsh -f -c '_arguments() { :; }; service=mount.vdimg; source "$1"
			whence -w _vdimgctl _vdimgctl_main _mount_vdimg' zsh \
			"$ROOT/tools/completion/_vdimgctl" >"$T/out" 2>"$T/err"
		head -n 1 "$ROOT/tools/completion/_vdimgctl" | grep -qx '#compdef vdimgctl mount.vdimg' &&
			grep -qx '_vdimgctl: none' "$T/out" && grep -qx '_vdimgctl_main: function' "$T/out" &&
			grep -qx '_mount_vdimg: function' "$T/out" && [ ! -s "$T/err" ]
		ok $? "zsh completion: #compdef vdimgctl mount.vdimg, a dispatching body, both functions"
	else
		skip "zsh completion" "zsh is not installed"
	fi
	rm -f "$T/diff"
else
	skip "completion drift" "vdimgctl is not built"
fi

# ---- one version: debian/changelog's first entry; every other place that writes it agrees
ver=$(sed -n '1s/^vdimg (\([^)]*\)).*/\1/p' "$ROOT/debian/changelog")
: >"$T/diff"
[ -n "$ver" ] || echo "debian/changelog: no 'vdimg (VERSION)' first line" >>"$T/diff"
if command -v dpkg-parsechangelog >/dev/null; then
	v=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
	[ "$v" = "$ver" ] || echo "dpkg-parsechangelog: $v" >>"$T/diff"
fi
grep -qx "PACKAGE_VERSION=\"$ver\"" "$ROOT/dkms.conf" || echo "dkms.conf: $(grep PACKAGE_VERSION "$ROOT/dkms.conf")" >>"$T/diff"
v=$(make -s -C "$ROOT" -f Makefile -f - print-version <<<'print-version: ; @echo $(VERSION)' 2>&1)
[ "$v" = "$ver" ] || echo "Makefile VERSION: $v" >>"$T/diff"
for f in tools/vdimgctl/vdimgctl.rst tools/system/mount.vdimg.rst tools/system/vdimgtab.rst; do
	grep -qx ":Version: $ver" "$ROOT/$f" || echo "$f: $(grep '^:Version:' "$ROOT/$f")" >>"$T/diff"
done
# the docs' examples: vdimg-X.Y.Z, vdimg/X.Y.Z, vdimg-dkms_X.Y.Z_all.deb, vdimg-utils_X.Y.Z_amd64.deb
grep -noE '(vdimg[-/]|vdimg-(dkms|utils)_)[0-9]+\.[0-9]+[0-9.~+a-z-]*' "$ROOT/README.md" \
	"$ROOT/Documentation/admin-guide/vdimg.rst" "$ROOT/dkms.conf" |
	grep -vE "(vdimg[-/]|_)$(sed 's/[.+~]/\\&/g' <<<"$ver")\$" >>"$T/diff"
"$V" --version >"$T/out" 2>"$T/err"
[ "$(cat "$T/out")" = "vdimgctl $ver" ] || echo "vdimgctl --version: $(cat "$T/out")" >>"$T/diff"
[ ! -s "$T/diff" ]
ok $? "version $ver (debian/changelog) everywhere: Makefile, vdimgctl --version, dkms.conf, man pages, docs"
rm -f "$T/diff"
ktap_end
