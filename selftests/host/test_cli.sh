#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host tests of the vdimgctl command line, without the module: --help/--version, info/create/check
# on raw images and on the third-party sample images (selftests/samples.sh says where they are),
# unsupported formats refused by name, fuzzed images refused cleanly (no sanitizer report), attach
# refusing before it reaches the kernel, list/detach against a fake sysfs tree and control device,
# the man page, snapshot --variant refusals, images on block devices (a loop device, when root can
# make one), check/compact progress. KTAP on stdout. Never loads a module: modprobe is replaced
# by a stub.
#
# VDIMGCTL=path (default: build/host/vdimgctl, the sanitizer build), VDIMG_SAMPLES=dir.
set -u
. "$(dirname "$0")/cli_lib.sh"
SAMPLES=${VDIMG_SAMPLES:-$("$ROOT/selftests/samples.sh" --dir)}
# never the real control device, modprobe or /dev during host tests
export VDIMG_CONTROL=$T/no-control VDIMG_MODPROBE=$T/modprobe-stub VDIMG_SYSFS=$T/sys VDIMG_DEV=/dev
cat >"$T/modprobe-stub" <<EOF
#!/bin/sh
echo "\$@" >> "$T/modprobe.log"
exit 1
EOF
chmod +x "$T/modprobe-stub"
mkdir -p "$T/sys"

# every stderr line has the vdimgctl message shape (plus the losetup-style hint line)
shape() { ! grep -vqE '^(vdimgctl: .+|Try .vdimgctl --help. for more information\.)$' "$T/err"; }
json_ok() { python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }

echo "KTAP version 1"
if [ ! -x "$V" ]; then
	echo "1..0 # SKIP vdimgctl not built ($V)"
	exit 4
fi

# ---- --help / --version / usage errors ----
run --version
ver=$(sed -n '1s/^vdimg (\([^)]*\)).*/\1/p' "$ROOT/debian/changelog")
[ $rc -eq 0 ] && [ -n "$ver" ] && [ "$(cat "$T/out")" = "vdimgctl $ver" ]
ok $? "--version prints 'vdimgctl $ver' (debian/changelog's version)"
run --help
[ $rc -eq 0 ] && [ "$(tail -n1 "$T/out")" = "For more details see vdimgctl(8)." ] && [ ! -s "$T/err" ]
ok $? "--help exits 0 and ends pointing at vdimgctl(8)"
grep -q 'attach' "$T/out" && grep -q -- '--show' "$T/out" && grep -q 'BACK-FILE' "$T/out"
ok $? "--help lists the verbs, options and columns"
for c in attach detach list info create check commit rebase map convert; do
	run $c --help
	[ $rc -eq 0 ] && grep -q "Usage: vdimgctl $c" "$T/out"
	ok $? "$c --help"
done
run
[ $rc -eq 1 ] && shape; ok $? "no command: exit 1, message shape"
run frobnicate
[ $rc -eq 1 ] && grep -q "unknown command 'frobnicate'" "$T/err" && shape
ok $? "unknown command: exit 1 naming it"
run info --bogus x
[ $rc -eq 1 ]; ok $? "unknown option: exit 1"

# ---- create / info / check on raw ----
run create -t raw -s 1G "$T/a.raw"
[ $rc -eq 0 ] && [ "$(stat -c %s "$T/a.raw")" = 1073741824 ] && [ ! -s "$T/out" ]
ok $? "create -t raw -s 1G makes a 1 GiB file, quietly"
for s in 64K:65536 3M:3145728 2MiB:2097152 1t:1099511627776 4096:4096; do
	rm -f "$T/s.raw"
	run create -t raw -s "${s%%:*}" "$T/s.raw"
	[ $rc -eq 0 ] && [ "$(stat -c %s "$T/s.raw")" = "${s##*:}" ]
	ok $? "create: size ${s%%:*} is ${s##*:} bytes"
done
run create -t raw -s 1G "$T/a.raw"
[ $rc -eq 1 ] && grep -q "a.raw: cannot create: File exists" "$T/err" && shape
ok $? "create: an existing file is refused"
run create -t raw -s 1000 "$T/b.raw"
[ $rc -eq 1 ] && grep -q "multiple of 512" "$T/err" && [ ! -e "$T/b.raw" ]
ok $? "create: a size that is not a multiple of 512 is refused, nothing left behind"
run create -t raw -s 12Q "$T/b.raw"
[ $rc -eq 1 ] && grep -q "bad size" "$T/err"; ok $? "create: a bad size suffix is refused"
run create -t nosuch -s 1M "$T/b.raw"
[ $rc -eq 1 ] && grep -q "unknown format 'nosuch'" "$T/err"; ok $? "create: an unknown format is refused"
run create -s 1M "$T/b.raw"
[ $rc -eq 1 ] && grep -q "format is required" "$T/err"; ok $? "create: -t is required"
run create -t raw "$T/b.raw"
[ $rc -eq 1 ] && grep -q "size is required" "$T/err"; ok $? "create: -s is required without --parent"
run create -t raw --parent "$T/a.raw" "$T/b.raw"
[ $rc -eq 1 ] && [ ! -e "$T/b.raw" ] && shape; ok $? "create: raw with a parent is refused"

run info "$T/a.raw"
[ $rc -eq 0 ] && grep -qx "format: raw" "$T/out" && grep -qx "virtual size: 1 GiB (1073741824 bytes)" "$T/out" &&
	grep -qx "logical sector size: 512" "$T/out" && grep -qx "variant: fixed" "$T/out"
ok $? "info: raw format, size, sector size, variant"
run info --json "$T/a.raw"
[ $rc -eq 0 ] && json_ok "$T/out" &&
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["format"]=="raw" and d["virtual-size"]==1<<30 and d["logical-sector-size"]==512' "$T/out"
ok $? "info --json: valid JSON with format, virtual-size, sector size"
run info -t raw "$T/a.raw"
[ $rc -eq 0 ]; ok $? "info -t raw"
run check "$T/a.raw"
[ $rc -eq 0 ] && grep -qx "No errors were found on the image." "$T/out"; ok $? "check: raw has no errors"
run check --json "$T/a.raw"
[ $rc -eq 0 ] && json_ok "$T/out" && grep -q '"check-errors": 0' "$T/out"; ok $? "check --json"
run check --repair "$T/a.raw"
[ $rc -eq 0 ]; ok $? "check --repair on raw"
head -c 1000 /dev/zero >"$T/odd.raw"
run info "$T/odd.raw"
[ $rc -eq 1 ] && grep -q "odd.raw: cannot open: size 1000 is not a multiple of 512" "$T/err" && shape
ok $? "info: a 1000-byte file is refused with the backend's reason, in the vdimgctl shape"
: >"$T/empty.raw"
run info "$T/empty.raw"
[ $rc -eq 1 ] && grep -q "empty.raw: cannot open: the file is empty" "$T/err"; ok $? "info: an empty file is refused"
run info "$T/missing.img"
[ $rc -eq 1 ] && grep -q "missing.img: cannot open: No such file or directory" "$T/err"
ok $? "info: a missing file"
run info "$T"
[ $rc -eq 1 ] && grep -q "cannot open: Is a directory" "$T/err"; ok $? "info: a directory"
run check "$T/missing.img"
[ $rc -eq 1 ] && shape; ok $? "check: a missing file: exit 1"

# ---- the sample images ----
declare -A want_fmt=(
	[afl5.img]=vhd [afl9.vmdk]=vmdk [d2v-zerofilled.vhd]=vhd [empty.bochs]=bochs
	[grub_mbr.raw]=raw [hyperv2012r2-dynamic.vhd]=vhd [iotest-dirtylog-10G-4M.vhdx]=vhdx
	[iotest-dynamic-1G.vhdx]=vhdx [iotest-version3.vmdk]=vmdk [parallels-v1]=parallels
	[parallels-v2]=parallels [parallels-with-bitmap]=parallels [simple-dmg.dmg]=dmg
	[simple-pattern.cloop]=cloop [test-disk2vhd.vhdx]=vhdx [virtualpc-dynamic.vhd]=vhd
)
declare -A want_size=(
	[d2v-zerofilled.vhd]=263454720 [grub_mbr.raw]=512 [hyperv2012r2-dynamic.vhd]=136365211648
	[iotest-dirtylog-10G-4M.vhdx]=10737418240 [iotest-dynamic-1G.vhdx]=1073741824
	[iotest-version3.vmdk]=17179869184 [parallels-v1]=2097152 [parallels-v2]=2097152
	[parallels-with-bitmap]=68719476736 [simple-dmg.dmg]=1799168 [test-disk2vhd.vhdx]=268435456
	[virtualpc-dynamic.vhd]=136363130880
)
why="not fetched: run 'make samples'"
[ -s "$SAMPLES/MISSING" ] && why=$(head -n1 "$SAMPLES/MISSING")
if [ ! -d "$SAMPLES" ]; then
	skip "sample images" "no $SAMPLES ($why)"
else
	mkdir -p "$T/s"
	for f in "$SAMPLES"/*.bz2; do
		[ -e "$f" ] || continue
		bzcat "$f" | cp --sparse=always /dev/stdin "$T/s/$(basename "$f" .bz2)"
	done
	for name in $(printf '%s\n' "${!want_fmt[@]}" | sort); do
		img=$T/s/$name
		fmt=${want_fmt[$name]}
		if [ ! -e "$img" ]; then
			skip "sample $name" "not in $SAMPLES ($why)"
			continue
		fi
		run info --json "$img"
		case $name in
		empty.bochs | simple-pattern.cloop)
			[ $rc -eq 1 ] && grep -qx "vdimgctl: $img: cannot open: $fmt images are not supported" "$T/err"
			ok $? "sample $name: info refuses it as '$fmt images are not supported'"
			run attach "$img"
			[ $rc -eq 1 ] && grep -qx "vdimgctl: $img: cannot attach: $fmt images are not supported" "$T/err" &&
				[ ! -e "$T/modprobe.log" ]
			ok $? "sample $name: attach refuses it by name before touching the module"
			;;
		afl5.img | afl9.vmdk)
			if grep -q "not supported by this build" "$T/err"; then
				skip "sample $name: fuzzed $fmt refused cleanly" "no $fmt backend in this build"
			else
				[ $rc -eq 1 ] && [ -s "$T/err" ] && shape
				ok $? "sample $name: fuzzed $fmt image refused cleanly (exit 1, a message, no crash)"
			fi
			;;
		iotest-dirtylog-10G-4M.vhdx)
			# read-only, a pending log may be refused or replayed privately; never wrong data
			if [ $rc -eq 1 ] && grep -qx "vdimgctl: $img: cannot open: $fmt images are not supported by this build" "$T/err"; then
				skip "sample $name: info says $fmt or refuses the pending log" "no $fmt backend in this build"
			elif [ $rc -eq 1 ]; then
				grep -qi "log" "$T/err" && shape
				ok $? "sample $name: info (read-only) refuses it, naming the pending log"
			else
				grep -q '"virtual-size": 10737418240' "$T/out"
				ok $? "sample $name: info says $fmt, 10737418240 bytes"
			fi
			;;
		*)
			if [ $rc -eq 1 ] && grep -qx "vdimgctl: $img: cannot open: $fmt images are not supported by this build" "$T/err"; then
				skip "sample $name: info says $fmt, ${want_size[$name]} bytes" "no $fmt backend in this build"
				continue
			fi
			[ $rc -eq 0 ] && json_ok "$T/out" &&
				python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["format"]==sys.argv[2], d["format"]; assert d["virtual-size"]==int(sys.argv[3]), d["virtual-size"]' \
					"$T/out" "$fmt" "${want_size[$name]}" 2>>"$T/err"
			ok $? "sample $name: info says $fmt, ${want_size[$name]} bytes"
			;;
		esac
	done
	# grub_mbr.raw has no signature: never mistaken for a format, attached writable only as raw
	run attach "$T/s/grub_mbr.raw"
	[ $rc -eq 1 ] && grep -q "grub_mbr.raw: cannot attach: unrecognised image format" "$T/err" &&
		[ ! -e "$T/modprobe.log" ]
	ok $? "attach: an MBR without -t raw or -r is refused before the module"
fi

# ---- attach without a module: refusals, modprobe, the ioctl ----
# an MBR-like boot sector of our own (the samples may be missing)
dd if=/dev/zero of="$T/mbr.raw" bs=512 count=1 status=none
printf '\x55\xaa' | dd of="$T/mbr.raw" bs=1 seek=510 conv=notrunc status=none
run attach -b 1000 "$T/a.raw"
[ $rc -eq 1 ] && grep -q "sector size must be 512, 2048 or 4096" "$T/err"; ok $? "attach: -b 1000 refused"
run attach --direct-io=maybe "$T/a.raw"
[ $rc -eq 1 ]; ok $? "attach: --direct-io=maybe refused"
run attach "$T/missing.img"
[ $rc -eq 1 ] && grep -qx "vdimgctl: $T/missing.img: cannot attach: No such file or directory" "$T/err"
ok $? "attach: a missing image"
run attach -t raw "$T/odd.raw"
[ $rc -eq 1 ] && grep -q "odd.raw: cannot attach: size 1000 is not a multiple of 512" "$T/err" &&
	[ ! -e "$T/modprobe.log" ]
ok $? "attach: the userspace open explains a bad raw file before the module is loaded"
run attach -t raw "$T/a.raw"
[ $rc -eq 1 ] && grep -qx "vdimg" "$T/modprobe.log" &&
	grep -q "cannot open: No such file or directory (is the vdimg module available?)" "$T/err" && shape
ok $? "attach: a missing control device runs 'modprobe vdimg', then fails clearly"
rm -f "$T/modprobe.log"
: >"$T/fake-control"
VDIMG_CONTROL=$T/fake-control run attach -r --show "$T/a.raw"
[ $rc -eq 1 ] && grep -q "a.raw: cannot attach: " "$T/err" && [ ! -s "$T/out" ] && [ ! -e "$T/modprobe.log" ]
ok $? "attach: an ioctl failure is reported against the image, nothing on stdout"
VDIMG_CONTROL=$T/fake-control run attach --chain "$T/mbr.raw" "$T/a.raw"
[ $rc -eq 1 ] && grep -q "a.raw: cannot attach: " "$T/err" && ! grep -q "grub_mbr" "$T/err"
ok $? "attach --chain: an unrecognised lower layer is fine as raw (reaches the ioctl)"
printf 'Bochs Virtual HD Image' | dd of="$T/b.bochs" bs=4096 conv=sync status=none
run attach --chain "$T/b.bochs" "$T/a.raw"
[ $rc -eq 1 ] && grep -qx "vdimgctl: $T/b.bochs: cannot attach: bochs images are not supported" "$T/err"
ok $? "attach --chain: an unsupported lower layer is refused by name"
# a DMG whose master checksum does not match: refused, named; --force attaches it (a warning)
head -c 65536 /dev/urandom >"$T/dmgsrc.raw"
if python3 "$ROOT/selftests/host/mkdmg.py" --types zlib --corrupt master "$T/dmgsrc.raw" \
	"$T/master.dmg" 2>/dev/null; then
	run attach --dry-run "$T/master.dmg"
	[ $rc -eq 1 ] && grep -q "cannot attach: .*master checksum mismatch" "$T/err"
	ok $? "attach: a DMG master checksum mismatch is refused, named"
	run attach --dry-run --force "$T/master.dmg"
	[ $rc -eq 0 ] && grep -qx "flags: read-only force-link force-csum" "$T/out" &&
		grep -q "warning: master checksum mismatch.*opened anyway (force)" "$T/err"
	ok $? "attach --force: a DMG master checksum mismatch attaches with a warning (force-csum)"
else
	skip "attach: DMG master checksum mismatch" "mkdmg.py (python3) failed"
fi
cp --sparse=always "$T/a.raw" "$T/disc.iso"
run attach --dry-run "$T/disc.iso"
[ $rc -eq 0 ] && grep -qx "layer 0: $T/disc.iso (format raw, read-only)" "$T/out" && grep -qx "flags: read-only" "$T/out"
ok $? "attach: an image named .iso is read-only by default"
run attach --dry-run --rw -t raw "$T/disc.iso"
[ $rc -eq 0 ] && grep -qx "layer 0: $T/disc.iso (format raw, read-write)" "$T/out" && grep -qx "flags:" "$T/out"
ok $? "attach --rw: ... unless --rw"
dd if=/dev/zero of="$T/cd.img" bs=1M count=1 status=none
printf '\001CD001' | dd of="$T/cd.img" bs=1 seek=32768 conv=notrunc status=none
run attach --dry-run "$T/cd.img"
[ $rc -eq 0 ] && grep -qx "layer 0: $T/cd.img (format auto, read-only)" "$T/out" && grep -qx "flags: read-only" "$T/out"
ok $? "attach: an ISO 9660 image (by signature) is read-only by default"
run attach --dry-run --rw "$T/cd.img"
[ $rc -eq 0 ] && grep -qx "layer 0: $T/cd.img (format raw, read-write)" "$T/out"
ok $? "attach --rw: an ISO 9660 image is attached writable as raw"
run attach --dry-run -P --direct-io --autoclear --force -b 4096 --chain "$T/mbr.raw,$T/odd-ok.raw" -t raw vdimg7 "$T/a.raw"
[ $rc -eq 1 ] && grep -q "odd-ok.raw: cannot attach: No such file" "$T/err"
ok $? "attach --chain: a missing middle layer is named"
cp --sparse=always "$T/a.raw" "$T/mid.raw"
run attach --dry-run -P --direct-io --autoclear --force -b 4096 --chain "$T/mbr.raw,$T/mid.raw" -t raw /dev/vdimg7 "$T/a.raw"
[ $rc -eq 0 ] && [ "$(cat "$T/out")" = "layer 0: $T/mbr.raw (format raw, read-only)
layer 1: $T/mid.raw (format raw, read-only)
layer 2: $T/a.raw (format raw, read-write)
flags: partscan direct-io autoclear force-link force-csum
logical block size: 4096
device: /dev/vdimg7" ]
ok $? "attach --dry-run: chain base first, top writable, flags, sector size, chosen device"
run attach --dry-run -r --direct-io=off "$T/mbr.raw"
[ $rc -eq 0 ] && grep -qx "flags: read-only buffered" "$T/out" && grep -qx "device: first free" "$T/out"
ok $? "attach --dry-run -r --direct-io=off: an unrecognised image read-only is raw, buffered"

# ---- chains: parents found the way the image records them (VDI: by UUID in its directory) ----
mkdir -p "$T/chain" "$T/lone"
if ! "$V" create -t vdi -s 64M "$T/chain/base.vdi" 2>/dev/null; then
	skip "chain resolution through VDI parents" "no vdi backend in this build"
else
	run create -t vdi --parent "$T/chain/base.vdi" "$T/chain/mid.vdi"
	[ $rc -eq 0 ]; ok $? "create -t vdi --parent: a differencing image, size from the parent"
	run create -t vdi --parent "$T/chain/mid.vdi" "$T/chain/top.vdi"
	run info "$T/chain/top.vdi"
	[ $rc -eq 0 ] && grep -qx "differencing: yes" "$T/out" && grep -qx "virtual size: 64 MiB (67108864 bytes)" "$T/out" &&
		grep -q "^parent uuid: " "$T/out"
	ok $? "info: a differencing VDI says so, with its parent's UUID"
	run check "$T/chain/top.vdi"
	[ $rc -eq 0 ] && grep -qx "No errors were found on the image." "$T/out"; ok $? "check: a new VDI has no errors"
	run attach --dry-run "$T/chain/top.vdi"
	[ $rc -eq 0 ] && [ "$(grep '^layer' "$T/out")" = "layer 0: $T/chain/base.vdi (format auto, read-only)
layer 1: $T/chain/mid.vdi (format auto, read-only)
layer 2: $T/chain/top.vdi (format auto, read-write)" ]
	ok $? "attach: the parents of a differencing image are found and passed base first"
	cp "$T/chain/top.vdi" "$T/lone/"
	run attach --dry-run "$T/lone/top.vdi"
	[ $rc -eq 1 ] && grep -q "^vdimgctl: $T/lone/top.vdi: cannot attach: no image with its parent's UUID" "$T/err"
	ok $? "attach: a differencing image whose parent cannot be found is refused, naming it"
	run attach --dry-run --chain "$T/chain/base.vdi" "$T/chain/mid.vdi"
	[ $rc -eq 0 ] && [ "$(grep -c '^layer' "$T/out")" = 2 ]; ok $? "attach --chain: an explicit chain is used as given"
	run attach --dry-run --chain "$T/chain/base.vdi" "$T/lone/top.vdi"
	[ $rc -eq 1 ] && shape; ok $? "attach --chain: a wrong parent is refused (UUID mismatch)"
	run attach --dry-run --force --chain "$T/chain/base.vdi" "$T/lone/top.vdi"
	[ $rc -eq 0 ]; ok $? "attach --chain --force: ... unless forced"
fi

# ---- detach / list against a fake sysfs and control device ----
run detach
[ $rc -eq 1 ] && grep -q "no device given" "$T/err"; ok $? "detach: no device is a usage error"
run detach /dev/sda
[ $rc -eq 1 ] && grep -q "'/dev/sda' is not a vdimg device" "$T/err"; ok $? "detach: not a vdimg device"
run detach vdimg0
[ $rc -eq 1 ] && grep -q "no-control: cannot open" "$T/err" && [ ! -e "$T/modprobe.log" ]
ok $? "detach: no control device: exit 1, no modprobe"
VDIMG_CONTROL=$T/fake-control run detach /dev/vdimg3 4 vdimg5
[ $rc -eq 1 ] && [ "$(grep -c 'cannot detach' "$T/err")" = 3 ] && grep -q "^vdimgctl: /dev/vdimg3: cannot detach" "$T/err"
ok $? "detach: each device that fails is named, exit 1"

run list
[ $rc -eq 0 ] && [ ! -s "$T/out" ]; ok $? "list: no devices prints nothing"
mk() { # mk INDEX attr=value...
	local d=$T/sys/vdimg$1/vdimg
	mkdir -p "$d"
	shift
	for kv in "$@"; do printf '%b\n' "${kv#*=}" >"$d/${kv%%=*}"; done
}
mk 0 format=vhd backing_file=/img/a.vhd chain=/img/a.vhd depth=1 read_only=0 dio=1 autoclear=0 \
	partscan=1 virtual_size=10737418240 logical_block_size=512 state=bound
mk 12 format=qcow2 "backing_file=/img/x y.qcow2" 'chain=/img/base.raw\n/img/x y.qcow2' depth=2 \
	read_only=1 dio=0 autoclear=1 partscan=0 virtual_size=1610612736 logical_block_size=4096 state=bound
mk 3 state=rundown
mkdir -p "$T/sys/vdimg12p1" "$T/sys/loop0"
run list
[ $rc -eq 0 ] && [ "$(head -n1 "$T/out" | tr -s ' ')" = "NAME FORMAT VSIZE RO DIO DEPTH BACK-FILE" ] &&
	[ "$(wc -l <"$T/out")" = 3 ] && grep -qE '^/dev/vdimg0 +vhd +10G +0 +1 +1 /img/a.vhd$' "$T/out" &&
	grep -qE '^/dev/vdimg12 +qcow2 +1.5G +1 +0 +2 /img/x y.qcow2$' "$T/out"
ok $? "list: default columns, sorted, partitions and devices being torn down left out"
run list -n --raw --bytes -O NAME,VSIZE,LOG-SEC,DEPTH,CHAIN
[ $rc -eq 0 ] && grep -qx '/dev/vdimg0 10737418240 512 1 /img/a.vhd' "$T/out" &&
	grep -qx '/dev/vdimg12 1610612736 4096 2 /img/base.raw,/img/x\\x20y.qcow2' "$T/out"
ok $? "list -n --raw --bytes -O: chosen columns, no header, raw escaping"
run list -J --output-all /dev/vdimg12
[ $rc -eq 0 ] && json_ok "$T/out" && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["vdimgdevices"]
assert len(d) == 1, d
d = d[0]
assert d["name"] == "/dev/vdimg12" and d["format"] == "qcow2" and d["ro"] is True
assert d["dio"] is False and d["autoclear"] is True and d["log-sec"] == 4096 and d["depth"] == 2
assert d["chain"] == ["/img/base.raw", "/img/x y.qcow2"], d["chain"]
assert d["back-file"] == "/img/x y.qcow2"' "$T/out" 2>>"$T/err"
ok $? "list -J --output-all DEV: JSON with booleans, numbers and the chain as an array"
run list --chain -O NAME,DEPTH
[ $rc -eq 0 ] && [ "$(wc -l <"$T/out")" = 6 ] && grep -qE '^/dev/vdimg12 +2$' "$T/out" &&
	[ "$(grep -n 'x y.qcow2' "$T/out" | cut -d: -f1)" -lt "$(grep -n 'base.raw' "$T/out" | cut -d: -f1)" ] &&
	grep -qE '^[^/]*/img/base.raw +1$' "$T/out"
ok $? "list --chain: every layer under its device, top first, with its depth"
run list -J
[ $rc -eq 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["vdimgdevices"]
assert [x["chain"] for x in d] == [["/img/a.vhd"], ["/img/base.raw", "/img/x y.qcow2"]], d
assert [x["depth"] for x in d] == [1, 2], d' "$T/out" 2>>"$T/err"
ok $? "list -J: default JSON has each device's layers as an array, and its depth"
run list -l 12
[ $rc -eq 0 ] && [ "$(wc -l <"$T/out")" = 2 ]; ok $? "list -l N: one device by number"
run list vdimg7
[ $rc -eq 1 ] && grep -q "/dev/vdimg7: cannot list: no such device attached" "$T/err"
ok $? "list: a device that is not attached: exit 1"
run list -O NAME,NOPE
[ $rc -eq 1 ] && grep -q "unknown column 'NOPE'" "$T/err"; ok $? "list: unknown column"

# ---- chains: overlays, info --chain, commit, rebase (issue 4) ----
mkdir -p "$T/c" "$T/ctmp"
sha() { sha256sum "$1" | cut -d' ' -f1; }
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
	skip "chain verbs" "qemu-img/qemu-io not installed"
else
	cd "$T/c"
	qemu-img create -q -f qcow2 base.qcow2 64M && qemu-io -c "write -P 0x11 0 4M" -c "write -P 0x12 40M 3M" base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && qemu-io -c "write -P 0x22 1M 1M" -c "write -z 3M 512k" -c "write -P 0x23 41M 64k" mid.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && qemu-io -c "write -P 0x33 1536k 1M" -c "write -P 0x34 63M 1M" top.qcow2 >/dev/null
	qemu-img convert -O raw top.qcow2 expect.raw
	qemu-img convert -O raw base.qcow2 base.raw
	cp base.qcow2 base0.qcow2; cp mid.qcow2 mid0.qcow2; cp top.qcow2 top0.qcow2
	restore() { cp base0.qcow2 base.qcow2; cp mid0.qcow2 mid.qcow2; cp top0.qcow2 top.qcow2; }

	# attach --overlay: the overlay is made in TMPDIR, and gone again after the (dry) attach
	base_sha=$(sha top.qcow2)
	TMPDIR=$T/ctmp run attach --dry-run --overlay top.qcow2
	[ $rc -eq 0 ] && grep -qE "^layer 3: $T/ctmp/vdimg-overlay-.{6} \(format qcow2, read-write\)$" "$T/out" &&
		grep -qx "layer 2: top.qcow2 (format auto, read-only)" "$T/out" && [ -z "$(ls -A "$T/ctmp")" ]
	ok $? "attach --overlay: a temporary qcow2 overlay in TMPDIR on top, IMAGE read-only, nothing left behind"
	run attach --dry-run --overlay=ov.qcow2 top.qcow2
	[ $rc -eq 0 ] && grep -qx "layer 3: ov.qcow2 (format qcow2, read-write)" "$T/out" && [ ! -e ov.qcow2 ]
	ok $? "attach --overlay=FILE --dry-run: FILE on top, removed again by the dry run"
	: >exists.qcow2
	run attach --overlay=exists.qcow2 top.qcow2
	[ $rc -eq 1 ] && grep -q "exists.qcow2: cannot create the overlay: File exists" "$T/err" && [ ! -s exists.qcow2 ]
	ok $? "attach --overlay=FILE: an existing FILE is refused and left alone"
	run attach -r --overlay top.qcow2
	[ $rc -eq 1 ] && grep -q "pointless" "$T/err" && grep -q "Try 'vdimgctl --help'" "$T/err"
	ok $? "attach -r --overlay: a usage error"
	# what the overlay is: qcow2 over IMAGE by absolute path, writes never reach IMAGE
	run create -t qcow2 --parent "$T/c/top.qcow2" ov.qcow2
	qemu-io -c "write -P 0x44 0 8M" -c "write -z 40M 2M" ov.qcow2 >/dev/null 2>&1
	[ $rc -eq 0 ] && [ "$(sha top.qcow2)" = "$base_sha" ] && [ "$(qemu-img info --output=json ov.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["full-backing-filename"])')" = "$T/c/top.qcow2" ]
	ok $? "overlay: writes through a qcow2 overlay leave IMAGE byte-identical (sha256)"
	rm -f ov.qcow2
	if "$V" create -t vhd -s 64M b.vhd 2>/dev/null; then
		vsha=$(sha b.vhd)
		TMPDIR=$T/ctmp run attach --dry-run --overlay --overlay-format vhd b.vhd
		[ $rc -eq 0 ] && grep -q "(format vhd, read-write)" "$T/out" && [ "$(sha b.vhd)" = "$vsha" ] && [ -z "$(ls -A "$T/ctmp")" ]
		ok $? "attach --overlay --overlay-format vhd: a differencing VHD overlay"
		TMPDIR=$T/ctmp run attach --dry-run --overlay --overlay-format vhdx b.vhd
		[ $rc -eq 1 ] && grep -q "must be a VHDX image" "$T/err" && [ -z "$(ls -A "$T/ctmp")" ]
		ok $? "attach --overlay-format vhdx over a VHD is refused, nothing left behind"
	fi
	qemu-img snapshot -c snap1 base0.qcow2
	run attach --dry-run --snapshot snap1 base0.qcow2
	[ $rc -eq 0 ] && grep -qx "layer 0: base0.qcow2 (format auto, read-only, snapshot 1)" "$T/out" && grep -qx "flags: read-only" "$T/out"
	ok $? "attach --snapshot NAME: the snapshot's index on the layer, read-only"
	run attach --dry-run --snapshot nope base0.qcow2
	[ $rc -eq 1 ] && grep -qx "vdimgctl: base0.qcow2: cannot attach: no snapshot 'nope'" "$T/err"
	ok $? "attach --snapshot: an unknown snapshot is named"
	TMPDIR=$T/ctmp run attach --dry-run --snapshot 1 --overlay base0.qcow2
	[ $rc -eq 0 ] && grep -qx "layer 0: base0.qcow2 (format auto, read-only, snapshot 1)" "$T/out" && grep -q "^layer 1: .*(format qcow2, read-write)" "$T/out"
	ok $? "attach --snapshot ID --overlay: a temporary overlay over the snapshot"
	qemu-img snapshot -d snap1 base0.qcow2
	qemu-img create -q -f qcow2 -o data_file=ext.raw df.qcow2 16M
	run attach --dry-run df.qcow2
	[ $rc -eq 0 ] && grep -qx "layer 0: df.qcow2 (format auto, read-write, data file)" "$T/out"
	ok $? "attach: a qcow2 external data file is opened and passed with the layer"
	rm ext.raw
	run attach --dry-run df.qcow2
	[ $rc -eq 1 ] && grep -qx "vdimgctl: df.qcow2: cannot attach: cannot open its external data file ext.raw: No such file or directory" "$T/err"
	ok $? "attach: a missing data file is named"

	# info --chain
	run info --chain top.qcow2
	[ $rc -eq 0 ] && grep -qx "chain: top.qcow2, 3 layers, top first" "$T/out" && grep -qx "\[0\] top.qcow2 (top)" "$T/out" &&
		grep -qx "\[2\] base.qcow2 (base)" "$T/out" && [ "$(grep -c '^    format: qcow2$' "$T/out")" = 3 ] &&
		grep -qx "    parent: mid.qcow2" "$T/out"
	ok $? "info --chain: every layer, top first, with format and parent"
	run info --chain --json top.qcow2
	[ $rc -eq 0 ] && python3 -m json.tool "$T/out" >/dev/null && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["order"] == "top-first" and d["depth"] == 3
assert [l["filename"] for l in d["chain"]] == ["top.qcow2", "mid.qcow2", "base.qcow2"]
assert all(l["virtual-size"] == 64 << 20 and l["format"] == "qcow2" for l in d["chain"])
assert d["chain"][2]["link"] == "none" and d["chain"][0]["link"] == "unchecked"' "$T/out" 2>>"$T/err"
	ok $? "info --chain --json: parses (python3 -m json.tool), layers top first"
	if [ -e b.vhd ]; then
		"$V" create -t vhd --parent b.vhd d1.vhd && "$V" create -t vhd -s 64M other.vhd
		run info --chain --json d1.vhd
		python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["chain"][0]["link"]=="ok" and "parent-uuid" in d["chain"][0]' "$T/out" 2>>"$T/err"
		ok $? "info --chain: a VHD link is checked (ok)"
		cp other.vhd b.vhd
		run info --chain d1.vhd
		[ $rc -eq 0 ] && grep -q "^    link: mismatch: parent UUID mismatch" "$T/out"
		ok $? "info --chain: a VHD link to the wrong parent says mismatch and why"
	fi

	# errors: a missing parent, a loop
	mv mid.qcow2 gone.qcow2
	run info --chain top.qcow2
	[ $rc -eq 1 ] && grep -qx "vdimgctl: top.qcow2: cannot open: its parent mid.qcow2 was not found" "$T/err"
	ok $? "info --chain: a missing parent names the file and the child that refers to it"
	run commit top.qcow2
	[ $rc -eq 1 ] && grep -q "top.qcow2: cannot commit: its parent mid.qcow2 was not found" "$T/err"
	ok $? "commit: a missing parent is named"
	mv gone.qcow2 mid.qcow2
	qemu-img create -q -f qcow2 loopA.qcow2 16M && qemu-img create -q -f qcow2 -b loopA.qcow2 -F qcow2 loopB.qcow2 &&
		qemu-img rebase -u -f qcow2 -b loopB.qcow2 -F qcow2 loopA.qcow2
	run info --chain loopA.qcow2
	[ $rc -eq 1 ] && grep -q "chain of parents loops back to loopA.qcow2" "$T/err"
	ok $? "info --chain: a cycle (A over B over A) is an error naming A, not a hang"
	timeout 20 "$V" attach --dry-run loopA.qcow2 >"$T/out" 2>"$T/err"; rc=$?
	[ $rc -eq 1 ] && grep -q "loops back to" "$T/err"
	ok $? "attach: the same cycle is refused"
	run rebase -b top.qcow2 base.qcow2
	[ $rc -eq 1 ] && grep -q "loops back to base.qcow2" "$T/err"
	ok $? "rebase: a new parent whose chain holds IMAGE is refused (it would loop)"

	# commit
	run commit top.qcow2
	[ $rc -eq 0 ] && qemu-img compare -q -f raw expect.raw top.qcow2 && qemu-img compare -q -f raw -F qcow2 expect.raw mid.qcow2 &&
		qemu-img compare -q -f raw -F qcow2 base.raw base.qcow2 && qemu-img check -q mid.qcow2
	ok $? "commit: mid now reads as top did, top still does, base untouched, qemu-img check clean"
	restore
	run commit -b base.qcow2 top.qcow2
	[ $rc -eq 0 ] && qemu-img compare -q -f raw -F qcow2 expect.raw base.qcow2 && qemu-img compare -q -f raw expect.raw top.qcow2 &&
		qemu-img check -q base.qcow2
	ok $? "commit -b BASE: two layers merged into the base (zeroed range included)"
	restore
	run commit -b top.qcow2 top.qcow2
	[ $rc -eq 1 ] && grep -q "top.qcow2 is not below it in its chain" "$T/err"
	ok $? "commit -b: a BASE outside the chain is refused"
	run commit -d top.qcow2
	[ $rc -eq 0 ] && [ ! -e top.qcow2 ] && qemu-img compare -q -f raw -F qcow2 expect.raw mid.qcow2
	ok $? "commit -d: IMAGE deleted after its data went into its parent"
	restore
	run commit base.qcow2
	[ $rc -eq 1 ] && grep -q "base.qcow2: cannot commit: it has no parent" "$T/err"
	ok $? "commit: an image without a parent is refused"

	# rebase
	run rebase -b base.qcow2 top.qcow2
	[ $rc -eq 0 ] && qemu-img compare -q -f raw expect.raw top.qcow2 &&
		[ "$(qemu-img info --output=json top.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" = base.qcow2 ]
	ok $? "rebase (safe): top over base reads as it did over mid"
	restore
	run rebase -u -b base.qcow2 top.qcow2
	qemu-img convert -O raw top.qcow2 got.raw 2>/dev/null
	[ $rc -eq 0 ] && ! cmp -s got.raw expect.raw && cmp -s <(head -c 1M got.raw) <(head -c 1M base.raw) &&
		cmp -s <(dd if=got.raw bs=1M skip=63 count=1 status=none) <(dd if=expect.raw bs=1M skip=63 count=1 status=none)
	ok $? "rebase -u: only the link changes (mid's data no longer shows, top's does)"
	restore
	if [ -e b.vhd ]; then
		"$V" create -t vhd -s 64M p1.vhd && "$V" create -t vhd -s 64M p2.vhd && "$V" create -t vhd --parent p1.vhd c1.vhd
		run rebase -u -b p2.vhd c1.vhd
		[ $rc -eq 0 ] && "$V" info --chain --json c1.vhd >"$T/out" &&
			python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["chain"][1]["filename"].endswith("p2.vhd") and d["chain"][0]["link"]=="ok", d' "$T/out" 2>>"$T/err"
		ok $? "rebase -u on a VHD: the locators and UUID now name the new parent (link ok)"
	fi
	cd "$ROOT"
fi

# ---- the man page ----
RST=$ROOT/tools/vdimgctl/vdimgctl.rst
if [ ! -f "$RST" ]; then
	ok 1 "man page tools/vdimgctl/vdimgctl.rst exists"
elif ! python3 -c 'import docutils' 2>/dev/null; then
	skip "man page builds with rst2man" "python3-docutils not installed"
else
	python3 - "$RST" "$T/vdimgctl.8" <<'EOF' >"$T/out" 2>"$T/err"
import sys
from docutils.core import publish_file
publish_file(source_path=sys.argv[1], destination_path=sys.argv[2], writer_name="manpage",
             settings_overrides={"halt_level": 2, "report_level": 2})
EOF
	ok $? "man page builds with rst2man without warnings"
	if [ -s "$T/vdimgctl.8" ]; then
		for s in NAME SYNOPSIS DESCRIPTION OPTIONS "OUTPUT COLUMNS" "EXIT STATUS" EXAMPLES "SEE ALSO"; do
			grep -q "^\.SH \"\?$s" "$T/vdimgctl.8"; ok $? "man page has $s"
		done
	fi
fi

# resize --online: argument errors before the module is asked, and no module at all
run resize --online notadev 1G
[ $rc -eq 1 ] && grep -q "'notadev' is not a vdimg device" "$T/err"
ok $? "resize --online: DEV must be a vdimg device"
run resize --online --shrink /dev/vdimg0 1G
[ $rc -eq 1 ] && grep -q "online goes with neither --shrink nor -t" "$T/err"
ok $? "resize --online: --shrink refused"
run resize --online /dev/vdimg0 -1G
[ $rc -eq 1 ] && grep -q "online shrink is not supported" "$T/err"
ok $? "resize --online: a -SIZE is refused"
run resize --online /dev/vdimg0 2G
[ $rc -eq 1 ] && grep -q "no-control: cannot open" "$T/err"
ok $? "resize --online: no control device is reported"

# snapshot --variant (fake sysfs above: vdimg0 has a vhd top, vdimg12 a qcow2 one): variants that
# cannot be a one-file child are refused before the control device is opened
run snapshot --variant fixed /dev/vdimg0 "$T/s.vhd"
[ $rc -eq 1 ] && grep -qx "vdimgctl: $T/s.vhd: cannot create: a fixed vhd image cannot be a child (differencing can)" "$T/err" && [ ! -e "$T/s.vhd" ]
ok $? "snapshot --variant fixed: refused, a fixed image cannot be a child"
run snapshot --variant seSparse /dev/vdimg12 "$T/s.vmdk"
[ $rc -eq 1 ] && grep -q "a seSparse VMDK keeps its grains in a separate extent file" "$T/err" && [ ! -e "$T/s.vmdk" ]
ok $? "snapshot --variant seSparse: refused, its extent file cannot go to the kernel"
run snapshot -t vmdk --variant streamOptimized /dev/vdimg12 "$T/s.vmdk"
[ $rc -eq 1 ] && grep -q "a streamOptimized VMDK cannot be a child (monolithicSparse can)" "$T/err"
ok $? "snapshot -t vmdk --variant streamOptimized: refused"
for v in "--variant monolithicSparse" "-t vmdk" "--variant differencing"; do
	run snapshot $v /dev/vdimg12 "$T/s.img"
	[ $rc -eq 1 ] && grep -q "no-control: cannot open" "$T/err" && [ ! -e "$T/s.img" ]
	ok $? "snapshot $v: accepted (up to the missing control device)"
done

# images on block devices (a qcow2 on an LV, as oVirt keeps them): a loop device stands in for
# the LV; info, check, check --repair, map, convert, resize, rebase and attach take it as the named
# image; compact, commit -d of it, writes in a read-only format and parents that an image names
# as a block device are refused
B=$T/blk
mkdir -p "$B"
if command -v qemu-img >/dev/null && qemu-img create -q -f qcow2 "$B/img.qcow2" 256M &&
	qemu-io -f qcow2 -c 'write -P 9 0 4M' -c 'write -P 8 100M 1M' "$B/img.qcow2" >/dev/null &&
	truncate -s 64M "$B/lv" && dd if="$B/img.qcow2" of="$B/lv" conv=notrunc status=none &&
	LV=$(losetup -f --show "$B/lv" 2>/dev/null) && [ -b "$LV" ]; then
	run info "$LV"
	[ $rc -eq 0 ] && grep -qx 'format: qcow2' "$T/out" && grep -q '^virtual size: 256 MiB' "$T/out"
	ok $? "a qcow2 on a block device: info"
	run check "$LV"
	[ $rc -eq 0 ] && grep -q 'No errors' "$T/out"
	ok $? "a qcow2 on a block device: check (the device's size is not the image's end)"
	run map "$LV"
	[ $rc -eq 0 ] && grep -qE "^0x6400000 +0x100000 +0x[0-9a-f]+ +$LV\$" "$T/out"
	ok $? "a qcow2 on a block device: map names the device"
	run convert "$LV" "$B/out.raw"
	[ $rc -eq 0 ] && qemu-img compare -q "$B/img.qcow2" "$B/out.raw"
	ok $? "a qcow2 on a block device: convert reads it like the file"
	run attach --dry-run "$LV"
	[ $rc -eq 0 ] && grep -qx "layer 0: $LV (format auto, read-write)" "$T/out"
	ok $? "a qcow2 on a block device: attach takes it (the kernel reads and writes it)"
	run check --repair "$LV"
	[ $rc -eq 0 ] && grep -q 'No errors' "$T/out" && [ "$(blockdev --getsize64 "$LV")" = 67108864 ]
	ok $? "a qcow2 on a block device: check --repair (nothing to fix, the device keeps its size)"
	run compact "$LV"
	[ $rc -eq 1 ] && grep -qx "vdimgctl: $LV: cannot compact: a block device keeps its size, so compacting gives nothing back (convert the image into a smaller device instead)" "$T/err"
	ok $? "a qcow2 on a block device: compact refused with a message"
	run resize "$LV" 512M
	[ $rc -eq 0 ] && qemu-io -f qcow2 -c 'write -P 7 500M 1M' "$LV" >/dev/null &&
		qemu-io -f qcow2 -c 'read -P 9 0 4M' -c 'read -P 8 100M 1M' -c 'read -P 0 256M 1M' \
			-c 'read -P 7 500M 1M' "$LV" | grep -c '^read' | grep -qx 4 &&
		qemu-img check -q -f qcow2 "$LV" && [ "$(blockdev --getsize64 "$LV")" = 67108864 ]
	ok $? "a qcow2 on a block device: resize grows it in place (qemu writes the new range, check clean)"
	qemu-img create -q -f qcow2 "$B/ro.qcow2" 16M && qemu-img create -q -f qcow2 -b "$B/ro.qcow2" -F qcow2 "$B/lv-child.qcow2" &&
		dd if="$B/lv-child.qcow2" of="$LV" conv=notrunc status=none
	run rebase -u -b "$B/img.qcow2" "$LV"
	[ $rc -eq 0 ] && qemu-img info -f qcow2 "$LV" | grep -q "^backing file: $B/img.qcow2"
	ok $? "a qcow2 on a block device: rebase -u writes its new parent"
	run commit -d "$LV"
	[ $rc -eq 1 ] && grep -q "$LV is a block device, which -d would not delete: commit without -d" "$T/err" && [ -b "$LV" ]
	ok $? "commit -d of an image on a block device is refused (the device node stays)"
	dd if="$B/img.qcow2" of="$LV" conv=notrunc status=none
	qemu-img create -q -f qcow2 -b "$LV" -F qcow2 "$B/child.qcow2"
	run info --chain "$B/child.qcow2"
	[ $rc -eq 1 ] && grep -q "$LV: cannot open: is a block device, which is a layer only when named by the user" "$T/err"
	ok $? "a parent an image names as a block device is refused with a message"
	run attach --dry-run --chain "$LV,$B/child.qcow2"
	[ $rc -eq 0 ] && grep -qx "layer 0: $LV (format auto, read-only)" "$T/out"
	ok $? "attach --chain: a block device the user names is a parent"
	"$V" convert -O vhd "$B/img.qcow2" "$B/img.vhd" >/dev/null 2>&1 &&
		dd if="$B/img.vhd" of="$LV" conv=notrunc status=none
	run attach --dry-run "$LV"
	[ $rc -eq 0 ] && grep -qx "layer 0: $LV (format auto, read-write)" "$T/out"
	ok $? "a VHD on a block device: a writable attach is accepted (its footer goes to the device's end)"
	"$V" convert -O parallels "$B/img.qcow2" "$B/img.hds" >/dev/null 2>&1 &&
		dd if="$B/img.hds" of="$LV" conv=notrunc status=none
	run attach --dry-run "$LV"
	[ $rc -eq 0 ] && grep -qx "layer 0: $LV (format auto, read-write)" "$T/out"
	ok $? "a Parallels image on a block device: a writable attach is accepted (it allocates after its BAT's last cluster)"
	qemu-img convert -O qcow "$B/img.qcow2" "$B/img.qcow" >/dev/null 2>&1 &&
		dd if="$B/img.qcow" of="$LV" conv=notrunc status=none
	run attach --dry-run "$LV"
	[ $rc -eq 1 ] && grep -q "a qcow image on a block device is attached only read-only" "$T/err"
	ok $? "a QCOW (v1) image on a block device: a writable attach is refused"
	run attach --dry-run -r "$LV"
	[ $rc -eq 0 ] && grep -qx "layer 0: $LV (format auto, read-only)" "$T/out"
	ok $? "a QCOW (v1) image on a block device: a read-only attach is accepted"
	run check --repair "$LV"
	[ $rc -eq 1 ] && grep -qx "vdimgctl: $LV: cannot check: on a block device, this format is only read; qcow2, vdi, vhd, vhdx, qed, vmdk, parallels and raw are written there" "$T/err"
	ok $? "a QCOW (v1) image on a block device: check --repair refused before any write"
	truncate -s 64M "$B/raw" && dd if="$B/raw" of="$LV" conv=notrunc status=none
	run resize -t raw "$LV" 128M
	[ $rc -eq 1 ] && grep -q "a raw image on a block device is the whole device: resize the device instead" "$T/err"
	ok $? "a raw image on a block device: resize refused with a message"
	# new images made on the device, as oVirt makes qcow2 images on LVs: the device's old bytes
	# (0xa5, a VHD footer of the last image in its last sector) must not show through
	python3 -c 'import sys; open(sys.argv[1], "r+b").write(b"\xa5" * (64 << 20))' "$LV" &&
		dd if="$B/img.vhd" of="$LV" bs=512 skip=$(($(stat -c %s "$B/img.vhd") / 512 - 1)) \
			seek=$((64 * 2048 - 1)) conv=notrunc status=none
	for f in qcow2 vdi vhd vhdx qed vmdk parallels; do
		qf=$f; [ $f = vhd ] && qf=vpc
		o=; [ $f = vhdx ] && o="-o block_size=1M"	# two 32 MiB blocks would not fit
		run convert -O $f $o "$B/img.qcow2" "$LV"
		[ $rc -eq 0 ] && qemu-img compare -q -f qcow2 -F $qf "$B/img.qcow2" "$LV" &&
			"$V" check "$LV" >"$T/out" && grep -q 'No errors' "$T/out" &&
			[ "$(blockdev --getsize64 "$LV")" = 67108864 ]
		ok $? "convert -O $f onto a block device with old bytes: qemu reads the source, our check is clean"
	done
	run create -t qcow2 -s 1G --parent "$B/img.qcow2" "$LV"
	[ $rc -eq 0 ] && qemu-img compare -q "$B/img.qcow2" "$LV" &&
		qemu-img info -f qcow2 "$LV" | grep -qx 'virtual size: 1 GiB (1073741824 bytes)'
	ok $? "create on a block device: a qcow2 child of a file reads its parent"
	for c in "-t vhd --variant fixed:a VHD on a block device is dynamic" \
		"-t vmdk --variant twoGbMaxExtentSparse:a VMDK on a block device is monolithicSparse" \
		"-t qcow2 --parent img.qcow2:give the parent by an absolute path"; do
		cd "$B" && run create ${c%%:*} -s 16M "$LV"
		cd - >/dev/null
		[ $rc -eq 1 ] && grep -q "$LV: cannot create: ${c#*:}" "$T/err"
		ok $? "create ${c%%:*} on a block device is refused: ${c#*:}"
	done
	python3 -c 'import os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_EXCL); open(sys.argv[2], "w").close(); time.sleep(30)' "$LV" "$T/held" &
	HOLDER=$!
	for i in $(seq 50); do [ -e "$T/held" ] && break; sleep 0.1; done
	run create -t qcow2 -s 16M "$LV"
	kill $HOLDER 2>/dev/null; wait $HOLDER 2>/dev/null
	[ $rc -eq 1 ] && grep -q "$LV: cannot create: the block device is in use" "$T/err" && [ -b "$LV" ]
	ok $? "create on a block device in use (held open exclusively) is refused, the node stays"
	losetup -d "$LV"
else
	for d in info check map convert attach "check --repair" compact resize "rebase -u" "commit -d" \
		parent "attach --chain" "vhd read-write" "parallels read-write" "qcow read-write" \
		"qcow read-only" "qcow check --repair" "raw resize" "convert -O qcow2" "convert -O vdi" \
		"convert -O vhd" "convert -O vhdx" "convert -O qed" "convert -O vmdk" \
		"convert -O parallels" "create --parent" "create vhd fixed" "create vmdk twoGb" \
		"create relative parent" "create qcow" "create in use"; do
		skip "a qcow2 on a block device: $d" "no qemu-img or no loop device (root, loop driver)"
	done
fi
# the qcow2 allocator takes the end of the image from its refcounts, not from the size of what
# holds it: a 1 GiB file holding 10 MiB (an LV bigger than its image) gets new clusters at ~10 MiB
if command -v qemu-img >/dev/null; then
	{
		qemu-img create -q -f qcow2 "$B/lvsized.qcow2" 2G &&
		qemu-io -f qcow2 -c 'write -P 9 0 10M' "$B/lvsized.qcow2" &&
		truncate -s 1G "$B/lvsized.qcow2" &&
		qemu-img create -q -f qcow2 -b lvsized.qcow2 -F qcow2 "$B/top.qcow2" &&
		qemu-io -f qcow2 -c 'write -P 7 1G 1M' "$B/top.qcow2"
	} >/dev/null 2>&1
	run commit "$B/top.qcow2"
	off=$("$V" map "$B/lvsized.qcow2" 2>/dev/null | awk '$1 == "0x40000000" { print $3 }')
	[ $rc -eq 0 ] && [ -n "$off" ] && [ $((off)) -lt $((12 << 20)) ] &&
		qemu-img check -q "$B/lvsized.qcow2"
	ok $? "qcow2 in a 1 GiB container holding 10 MiB: a new cluster lands at ${off:-?}, not past 1 GiB"
else
	skip "qcow2 allocation ignores the container's size" "no qemu-img"
fi

# check and compact -p: a progress line on stderr that only grows and ends at 100%; nothing extra
# off a terminal without -p; on a terminal (script's pty) without -p too
{
	head -c $((1 << 20)) /dev/urandom >"$T/p.raw" &&
	truncate -s 3G "$T/p.raw" &&
	head -c $((1 << 20)) /dev/urandom | dd of="$T/p.raw" bs=1M seek=2048 conv=notrunc
} 2>/dev/null
# the percentages of the progress lines in $T/err, in order
pcts() { tr '\r' '\n' <"$T/err" | sed -n 's|^    (\([0-9]*\)\.00/100%) '"$1"'$|\1|p'; }
progress_ok() {
	local p
	p=$(pcts "$1")
	[ "$(echo "$p" | head -1)" = 0 ] && [ "$(echo "$p" | tail -1)" = 100 ] &&
		[ "$p" = "$(echo "$p" | sort -n)" ] &&
		[ -z "$(tr '\r' '\n' <"$T/err" | grep -v '^$' | grep -v '^    ([0-9]*\.00/100%) ')" ]
}
for f in qcow2 vhdx vhd vdi vmdk qed; do
	"$V" convert -O $f "$T/p.raw" "$T/p.$f" >/dev/null 2>&1
	run check -p "$T/p.$f"
	[ $rc -eq 0 ] && grep -q 'No errors' "$T/out" && progress_ok check
	ok $? "check -p $f: progress from 0% up to 100% ($(pcts check | wc -l) lines)"
	run check "$T/p.$f"
	[ $rc -eq 0 ] && [ ! -s "$T/err" ]
	ok $? "check $f off a terminal: no progress"
done
for f in vdi vmdk; do
	run compact -p "$T/p.$f"
	[ $rc -eq 0 ] && progress_ok compact
	ok $? "compact -p $f: progress from 0% up to 100% ($(pcts compact | wc -l) lines)"
	run compact "$T/p.$f"
	[ $rc -eq 0 ] && ! grep -q '/100%' "$T/err"
	ok $? "compact $f off a terminal: no progress"
done
run convert -p -O qcow2 "$T/p.raw" "$T/pc.qcow2"
[ $rc -eq 0 ] && progress_ok converting
ok $? "convert -p off a terminal: progress from 0% up to 100% ($(pcts converting | wc -l) lines)"
rm -f "$T/pc.qcow2"
run convert -O qcow2 "$T/p.raw" "$T/pc.qcow2"
[ $rc -eq 0 ] && ! grep -q '/100%' "$T/err"
ok $? "convert off a terminal: no progress"
rm -f "$T/pc.qcow2"
script -qec "'$V' check '$T/p.qcow2'" /dev/null >"$T/tty" 2>&1
grep -q '(100.00/100%) check' "$T/tty" && grep -q 'No errors' "$T/tty"
ok $? "check on a terminal shows progress without -p"
ktap_end
