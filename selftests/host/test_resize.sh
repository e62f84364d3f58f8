#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host tests of `vdimgctl resize`: for images qemu-img creates and for images vdimgctl creates,
# filled by qemu-io, grow and shrink them and check, against a raw shadow resized the same way,
# that `qemu-img info` gives the new size, `qemu-img check` (vdimgctl check where qemu has none)
# finds nothing, `qemu-img compare` finds the data kept and the new range zero, and, where qemu
# can resize the format, that `qemu-img resize` gives the same disk. Shrinking is refused without
# --shrink and while data lies past the new end without --force. Interrupted resizes (every write
# after the first N failing, VDIMGCTL_TEST_WRITE_CUT) leave the old or the new size, a clean check
# and the data. VMDK: a monolithicSparse image grows past its grain directory's room, and
# twoGbMaxExtentSparse/Flat images past their last file's 2 GiB with new extent files (named
# NAME-s003.vmdk / NAME-f003.vmdk...; a stray file of that name is refused). KTAP on stdout; skips
# (exit 4) without qemu-img.
#
# VDIMGCTL=path (default: build/host/vdimgctl, the sanitizer build). RESIZE_FULL=1 runs every
# format in both creators and every write cut (a few minutes); by default (CI) a subset that still
# covers each format once, each table relocation and the write cuts of the relocating paths.
set -u
. "$(dirname "$0")/cli_lib.sh"

ktap_begin_qemu

M=$((1 << 20))
vsize() { "$V" info --json "$1" | sed -n 's/^  "virtual-size": \([0-9]*\),$/\1/p'; }
# qemu's format names; qemu has no check for vpc and checks nothing of flat VMDK: vdimgctl checks
qfmt() { case $1 in vhd) echo vpc ;; *) echo "$1" ;; esac; }
clean() {
	if [ "$1" = vhd ] || [ "$1" = raw ] || [ "$1" = vmdk ]; then
		"$V" check "$2" >"$T/out" 2>"$T/err"
	else
		qemu-img check -q -f "$(qfmt "$1")" "$2" >"$T/out" 2>"$T/err"
	fi
}
# same FMT IMG: the image has the size of the shadow $T/s.raw and reads as it
same() {
	[ "$(vsize "$2")" = "$(stat -c %s "$T/s.raw")" ] &&
		qemu-img compare -q -f "$(qfmt "$1")" -F raw "$2" "$T/s.raw" >"$T/diff" 2>&1
}
resize_shadow() { truncate -s "$1" "$T/s.raw"; }
# pattern BYTE MIB: what qemu-io's write -P BYTE writes, MIB MiB of it
pattern() { head -c $(($2 << 20)) /dev/zero | tr '\0' "\\$(printf %03o "$1")"; }

# case LABEL FMT: $T/img is the image (64 MiB, data written), the shadow made from it
case_one() {
	local label=$1 fmt=$2 img=$T/img s
	s=$(vsize "$img")
	rm -f "$T/s.raw"
	"$V" convert -O raw "$img" "$T/s.raw" >/dev/null 2>&1
	ok $? "$label: shadow copy"

	run resize "$img" +100M
	ok $((rc != 0)) "$label: grow by 100 MiB"
	resize_shadow $((s + 100 * M))
	[ "$(vsize "$img")" = $((s + 100 * M)) ]
	ok $? "$label: vdimgctl info gives the new size"
	if [ "$fmt" != vhd ]; then
		qemu-img info --output=json -f "$(qfmt "$fmt")" "$img" | grep -q "\"virtual-size\": $((s + 100 * M)),"
		ok $? "$label: qemu-img info gives the new size"
	fi
	clean "$fmt" "$img"
	ok $? "$label: check is clean after growing"
	same "$fmt" "$img"
	ok $? "$label: data kept, the new range reads zeros"
	if [ -n "${3:-}" ]; then
		qemu-img resize -q -f "$(qfmt "$fmt")" "$T/qemu.img" +100M >/dev/null 2>&1
		qemu-img compare -q "$img" "$T/qemu.img" >"$T/diff" 2>&1
		ok $? "$label: qemu-img resize gives the same disk"
	fi

	run resize "$img" 32M
	ok $((rc == 0)) "$label: shrinking without --shrink is refused"
	if [ "$fmt" = qed ]; then
		run resize --shrink --force "$img" 61M
		ok $((rc == 0)) "$label: shrinking is refused (as qemu does)"
		return
	fi
	run resize --shrink "$img" 32M
	ok $((rc == 0)) "$label: shrinking over data is refused without --force"
	grep -q "allocated past" "$T/err"
	ok $? "$label: ... saying why"
	run resize --shrink "$img" $((s + 64 * M))
	if [ -n "${4:-}" ]; then
		ok $((rc == 0)) "$label: shrinking is refused (every block of a fixed image holds data)"
		run resize --shrink --force "$img" $((s + 64 * M))
	fi
	ok $((rc != 0)) "$label: shrinking over nothing allocated works"
	resize_shadow $((s + 64 * M))
	run resize --shrink --force "$img" $((61 * M + 512))
	ok $((rc != 0)) "$label: shrink --force over data"
	resize_shadow $((61 * M + 512))
	[ "$(vsize "$img")" = $((61 * M + 512)) ] && clean "$fmt" "$img" && same "$fmt" "$img"
	ok $? "$label: new size, clean, data before the end kept"
	run resize "$img" 128M
	resize_shadow $((128 * M))
	[ "$rc" = 0 ] && clean "$fmt" "$img" && same "$fmt" "$img"
	ok $? "$label: growing again reads zeros past the old end (not the dropped data)"
}

fill="-c 'write -P 1 0 64k' -c 'write -P 2 60M 2M' -c 'write -P 3 63M 1M'"

# images qemu-img makes (qemu can resize qcow2, qed and raw: its result is compared too)
qemu_specs="qcow2 vdi vpc:subformat=dynamic vhdx vmdk:subformat=monolithicFlat"
ours_specs="qed vhd:fixed parallels raw"
cut_specs='"qcow2:cluster_size=4096 1M 2G" "vdi 4M 1G" "vmdk 64M 256M"'
if [ -n "${RESIZE_FULL:-}" ]; then
	qemu_specs="$qemu_specs qcow2:cluster_size=4096 qcow2:compat=0.10 qed vpc:subformat=fixed"
	qemu_specs="$qemu_specs parallels raw"
	ours_specs="qcow2 qed vdi vhd vhd:fixed vhdx parallels raw"
	cut_specs="$cut_specs \"vpc 4M 1G\" \"qcow2 64M 1G\" \"qed 64M 1G\" \"vhdx 64M 1G\""
	cut_specs="$cut_specs \"parallels 64M 1G\""
fi

for spec in $qemu_specs; do
	qf=${spec%%:*} o=${spec#"$qf"} o=${o#:} fmt=$qf
	[ "$qf" = vpc ] && fmt=vhd
	rm -f "$T"/img* "$T"/qemu.img
	eval qemu-img create -q -f "$qf" ${o:+-o "$o"} "$T/img" 64M >/dev/null &&
		eval qemu-io -f "$qf" "$fill" "$T/img" >/dev/null 2>&1
	ok $? "qemu $spec: made and filled"
	qemu_too= full=
	case $qf in qcow2|qed|raw) cp "$T/img" "$T/qemu.img"; qemu_too=1 ;; esac
	case $spec in raw|*fixed|*Flat) full=1 ;; esac
	case_one "qemu $spec" "$fmt" "$qemu_too" "$full"
done

# images vdimgctl makes
for spec in $ours_specs; do
	fmt=${spec%%:*} var=${spec#"$fmt"} var=${var#:}
	rm -f "$T"/img "$T"/qemu.img
	"$V" create -t "$fmt" -s 64M ${var:+--variant "$var"} "$T/img" >/dev/null 2>&1 &&
		eval qemu-io -f "$(qfmt "$fmt")" "$fill" "$T/img" >/dev/null 2>&1
	ok $? "vdimgctl $spec: made and filled"
	full=
	case $spec in raw|*fixed) full=1 ;; esac
	case_one "vdimgctl $spec" "$fmt" "" "$full"
done

# growing past what the metadata has room for in place (VDI map, qcow2 L1, VHD BAT)
for spec in "vdi 4M 1G" "qcow2:cluster_size=4096 1M 2G" "vpc 4M 1G"; do
	set -- $spec
	q=${1%%:*} o=${1#"${1%%:*}"} o=${o#:} fmt=$q
	[ "$q" = vpc ] && fmt=vhd
	rm -f "$T/img" "$T/s.raw"
	qemu-img create -q -f "$q" ${o:+-o "$o"} "$T/img" "$2" &&
		qemu-io -f "$q" -c "write -P 7 0 1M" "$T/img" >/dev/null 2>&1
	"$V" convert -O raw "$T/img" "$T/s.raw" >/dev/null 2>&1
	run resize "$T/img" "$3"
	resize_shadow "$(vsize "$T/img")"
	[ "$rc" = 0 ] && clean "$fmt" "$T/img" && same "$fmt" "$T/img"
	ok $? "$1 $2 -> $3: the table moves, clean, data kept"
done

# a monolithicSparse VMDK past its grain directory's room (qemu's 64 KiB grains: 128 entries in
# its one sector, 4 GiB): both directories move to the end of the file
rm -f "$T/img" "$T/s.raw"
qemu-img create -q -f vmdk "$T/img" 64M && eval qemu-io -f vmdk "$fill" "$T/img" >/dev/null 2>&1
"$V" convert -O raw "$T/img" "$T/s.raw" >/dev/null 2>&1
run resize "$T/img" 8G
resize_shadow $((8 << 30))
[ "$rc" = 0 ] && [ "$(vsize "$T/img")" = $((8 << 30)) ] && clean vmdk "$T/img" &&
	qemu-img check -q -f vmdk "$T/img" && same vmdk "$T/img"
ok $? "vmdk monolithicSparse 64M -> 8G: the grain directory moves, clean, data kept"
qemu-io -f vmdk -c 'write -P 9 8190M 2M' -c 'read -P 3 63M 1M' "$T/img" >"$T/out" 2>&1 &&
	! grep -q "verification failed" "$T/out" &&
	pattern 9 2 | dd of="$T/s.raw" bs=1M seek=8190 conv=notrunc iflag=fullblock status=none &&
	clean vmdk "$T/img" && same vmdk "$T/img"
ok $? "... qemu writes at its new end and reads the old data; vdimgctl reads what qemu wrote"

# twoGbMaxExtent images past their last file's 2 GiB: new extent files, named as qemu and VMware
# name them, then the descriptor (replaced atomically) names them
for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
	c=s kind=SPARSE off=
	[ "$sub" = twoGbMaxExtentFlat ] && c=f kind=FLAT off=" 0"
	d=$T/two
	rm -rf "$d" "$T/s.raw" && mkdir "$d"
	qemu-img create -q -f vmdk -o subformat=$sub "$d/t.vmdk" 3G &&
		qemu-io -f vmdk -c 'write -P 7 0 1M' -c 'write -P 8 2047M 2M' -c 'write -P 9 3071M 1M' \
			"$d/t.vmdk" >/dev/null 2>&1
	ok $? "$sub 3 GiB: made and filled"
	"$V" convert -O raw "$d/t.vmdk" "$T/s.raw" >/dev/null 2>&1
	cp -a "$d" "$T/two.pristine"
	# a file in the way (what a crash before the descriptor leaves) is not overwritten
	echo stray >"$d/t-${c}004.vmdk"
	run resize "$d/t.vmdk" 7G
	[ "$rc" != 0 ] && grep -q "t-${c}004.vmdk.*interrupted resize" "$T/err" &&
		[ "$(cat "$d/t-${c}004.vmdk")" = stray ] && [ ! -e "$d/t-${c}003.vmdk" ] &&
		[ "$(vsize "$d/t.vmdk")" = $((3 << 30)) ] && same vmdk "$d/t.vmdk"
	ok $? "$sub: a stray t-${c}004.vmdk is refused, named, kept; the image keeps its size"
	rm -f "$d/t-${c}004.vmdk"
	run resize "$d/t.vmdk" 7G
	ok $((rc != 0)) "$sub: 3 GiB -> 7 GiB"
	resize_shadow $((7 << 30))
	[ "$(LC_ALL=C ls "$d" | tr '\n' ' ')" = "t-${c}001.vmdk t-${c}002.vmdk t-${c}003.vmdk t-${c}004.vmdk t.vmdk " ]
	ok $? "$sub: t-${c}003.vmdk and t-${c}004.vmdk were made, nothing else is left"
	grep -q "^RW 4194304 $kind \"t-${c}002.vmdk\"$off\$" "$d/t.vmdk" &&
		grep -q "^RW 4194304 $kind \"t-${c}003.vmdk\"$off\$" "$d/t.vmdk" &&
		grep -q "^RW 2097152 $kind \"t-${c}004.vmdk\"$off\$" "$d/t.vmdk" &&
		[ "$(grep -c '^RW ' "$d/t.vmdk")" = 4 ] &&
		grep -q '^ddb.geometry.cylinders = "14563"$' "$d/t.vmdk" &&
		[ "$(stat -c %a "$d/t.vmdk")" = "$(stat -c %a "$T/two.pristine/t.vmdk")" ]
	ok $? "$sub: the descriptor names the 4 files (the 2nd now 2 GiB), the cylinders follow, its mode kept"
	if [ $c = f ]; then
		[ "$(stat -c %s "$d/t-f003.vmdk")" = $((2 << 30)) ] &&
			[ "$(stat -c %s "$d/t-f004.vmdk")" = $((1 << 30)) ] &&
			[ "$(du -k "$d/t-f003.vmdk" | cut -f1)" -lt 1024 ]
		ok $? "$sub: the new flat files are 2 GiB and 1 GiB, sparse"
	else
		rm -f "$T"/c*.vmdk
		"$V" create -t vmdk --variant twoGbMaxExtentSparse -s 3G "$T/c.vmdk" >/dev/null 2>&1 &&
			cmp -s "$T/c-s001.vmdk" "$d/t-s003.vmdk" && cmp -s "$T/c-s002.vmdk" "$d/t-s004.vmdk"
		ok $? "$sub: the new sparse extents (2 GiB, 1 GiB) are what vdimgctl create makes"
		rm -f "$T"/c*.vmdk
	fi
	qemu-img info --output=json -f vmdk "$d/t.vmdk" | grep -q "\"virtual-size\": $((7 << 30)),"
	ok $? "$sub: qemu-img info gives 7 GiB"
	clean vmdk "$d/t.vmdk" && qemu-img check -q -f vmdk "$d/t.vmdk" && same vmdk "$d/t.vmdk"
	ok $? "$sub: checks clean (ours, qemu-img), compares equal to the grown raw shadow"
	qemu-io -f vmdk -c 'write -P 10 7167M 1M' -c 'write -P 11 4095M 2M' "$d/t.vmdk" >/dev/null 2>&1 &&
		pattern 10 1 | dd of="$T/s.raw" bs=1M seek=7167 conv=notrunc iflag=fullblock status=none &&
		pattern 11 2 | dd of="$T/s.raw" bs=1M seek=4095 conv=notrunc iflag=fullblock status=none &&
		clean vmdk "$d/t.vmdk" && same vmdk "$d/t.vmdk"
	ok $? "$sub: qemu writes into the new files (across two), vdimgctl reads it"

	# write cuts (a last file of 1984 MiB: two tables to add in place) leave the old size with
	# the old data or the new one (the stray files of a crash are allowed)
	rm -rf "$d" "$T/two.pristine" "$T/s0.raw" && mkdir "$d" &&
		qemu-img create -q -f vmdk -o subformat=$sub "$d/t.vmdk" 4032M &&
		qemu-io -f vmdk -c 'write -P 7 0 1M' -c 'write -P 8 4031M 1M' "$d/t.vmdk" >/dev/null 2>&1 &&
		"$V" convert -O raw "$d/t.vmdk" "$T/s0.raw" >/dev/null 2>&1 && mv "$d" "$T/two.pristine"
	bad=0 cuts=0
	for cut in $(seq 0 40); do
		rm -rf "$d" && cp -a "$T/two.pristine" "$d"
		VDIMGCTL_TEST_WRITE_CUT=$cut "$V" resize "$d/t.vmdk" 5G >/dev/null 2>&1
		done_rc=$?
		cuts=$((cuts + 1))
		got=$(vsize "$d/t.vmdk" 2>/dev/null)
		cp --sparse=always "$T/s0.raw" "$T/s.raw"
		resize_shadow "${got:-0}"
		if { [ "$got" != $((4032 << 20)) ] && [ "$got" != $((5 << 30)) ]; } ||
		   ! "$V" check "$d/t.vmdk" >/dev/null 2>&1 || ! same vmdk "$d/t.vmdk"; then
			echo "# $sub: cut after $cut writes: size ${got:-none}, not clean or data lost"
			bad=$((bad + 1))
		fi
		[ "$done_rc" = 0 ] && break
	done
	[ "$bad" = 0 ] && [ "$done_rc" = 0 ] && [ "$cuts" -gt 3 ]
	ok $? "$sub 4032 MiB -> 5 GiB: cut after each of $cuts writes: old or new size, clean, data kept"
	rm -rf "$d" "$T/two.pristine" "$T/s0.raw"
done

# children: VHD, VHDX and VDI keep their parent's size; a QCOW2 child grows over its parent
rm -f "$T"/base.* "$T"/child.*
qemu-img create -q -f vpc "$T/base.vhd" 64M && "$V" create -t vhd --parent "$T/base.vhd" "$T/child.vhd" >/dev/null 2>&1
run resize "$T/child.vhd" 128M
ok $((rc == 0)) "a differencing VHD is refused"
grep -q "parent's size" "$T/err"
ok $? "... saying why"
qemu-img create -q -f qcow2 "$T/base.qcow2" 64M && qemu-io -c 'write -P 5 0 64M' "$T/base.qcow2" >/dev/null &&
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$T/child.qcow2" 32M &&
	qemu-io -c 'write -P 6 1M 1M' "$T/child.qcow2" >/dev/null && cp "$T/child.qcow2" "$T/child.q.qcow2"
run resize "$T/child.qcow2" 96M
[ "$rc" = 0 ] && [ "$(vsize "$T/child.qcow2")" = $((96 * M)) ] && qemu-img check -q "$T/child.qcow2" &&
	qemu-io -c 'read -P 6 1M 1M' -c 'read -P 5 2M 30M' -c 'read -P 0 32M 64M' "$T/child.qcow2" \
		>"$T/out" 2>&1 && ! grep -q "verification failed" "$T/out"
ok $? "a QCOW2 child grows: its data, its parent's below the old end, zeros (not the parent's) past it"
qemu-img resize -q "$T/child.q.qcow2" 96M && qemu-img compare -q "$T/child.qcow2" "$T/child.q.qcow2"
ok $? "... as qemu-img resize makes it"

# a flat VMDK descriptor with CR LF endings, blank lines, comments and a key vdimg does not know:
# resize changes the extent's sector count and the cylinder count, and keeps every other byte
rm -f "$T"/flat*
qemu-img create -q -f vmdk -o subformat=monolithicFlat "$T/flat.vmdk" 64M &&
	{ sed 's/$/\r/' "$T/flat.vmdk"; printf '\r\nx.vendor.note = "keep me"\r\n'; } >"$T/flat.new" &&
	mv "$T/flat.new" "$T/flat.vmdk" &&
	sed -e 's/^RW 131072 FLAT/RW 262144 FLAT/' \
		-e 's/^ddb.geometry.cylinders = "[0-9]*"/ddb.geometry.cylinders = "260"/' \
		"$T/flat.vmdk" >"$T/flat.want"
ok $? "flat VMDK with CR LF endings, blank lines and an unknown key: made"
run resize "$T/flat.vmdk" 128M
[ "$rc" = 0 ] && cmp -s "$T/flat.vmdk" "$T/flat.want" && [ "$(vsize "$T/flat.vmdk")" = $((128 * M)) ] &&
	[ "$(stat -c %s "$T/flat-flat.vmdk")" = $((128 * M)) ]
ok $? "... resized: only the sector count and the cylinders changed, the extent file grew"

# interrupted resizes: every write after the first N fails (as if the machine stopped there)
eval "set -- $cut_specs"
for spec in "$@"; do
	set -- $spec
	q=${1%%:*} o=${1#"${1%%:*}"} o=${o#:} fmt=$q
	[ "$q" = vpc ] && fmt=vhd
	rm -f "$T/pristine" "$T/s0.raw"
	qemu-img create -q -f "$q" ${o:+-o "$o"} "$T/pristine" "$2" &&
		qemu-io -f "$q" -c "write -P 7 0 512k" "$T/pristine" >/dev/null 2>&1
	"$V" convert -O raw "$T/pristine" "$T/s0.raw" >/dev/null 2>&1
	old=$(vsize "$T/pristine") new=$(($(echo "$3" | sed -e 's/G$/ << 30/' -e 's/M$/ << 20/'))) bad=0 cuts=0
	for cut in $(seq 0 40); do
		cp "$T/pristine" "$T/img"
		VDIMGCTL_TEST_WRITE_CUT=$cut "$V" resize "$T/img" "$3" >/dev/null 2>&1
		done_rc=$?
		cuts=$((cuts + 1))
		got=$(vsize "$T/img" 2>/dev/null)
		cp "$T/s0.raw" "$T/s.raw"
		resize_shadow "${got:-0}"
		if [ "$got" != "$old" ] && [ "$got" != "$new" ]; then
			echo "# $1 $2 -> $3: cut after $cut writes: size ${got:-none}"
			bad=$((bad + 1))
		fi
		# a Parallels image written to and not closed keeps its in-use flag: check --repair
		# clears it (the format's crash state); a VHDX log left pending is replayed by vdimgctl
		if [ "$fmt" = parallels ] && "$V" info "$T/img" 2>/dev/null | grep -q "not closed"; then
			"$V" check --repair "$T/img" >/dev/null 2>&1
		fi
		rm -f "$T/got.raw"
		if [ -z "$got" ] || ! "$V" check "$T/img" >/dev/null 2>&1 ||
		   ! "$V" convert -O raw "$T/img" "$T/got.raw" >/dev/null 2>&1 ||
		   ! cmp -s "$T/got.raw" "$T/s.raw"; then
			echo "# $1 $2 -> $3: cut after $cut writes: size ${got:-none}, not clean or data lost"
			bad=$((bad + 1))
		fi
		[ "$done_rc" = 0 ] && break
	done
	[ "$bad" = 0 ] && [ "$done_rc" = 0 ]
	ok $? "$1 $2 -> $3: cut after each of $cuts writes: old or new size, clean, data kept"
done

ktap_end
