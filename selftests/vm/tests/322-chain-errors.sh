#!/bin/sh
# Chain errors through vdimgctl attach and the kernel: a VHD/VDI/VHDX child over the wrong base of the same size (--chain, and a renamed file the tool finds instead) is refused with a message on stderr and in the kernel log, --force attaches it; a missing parent is named with the child; qcow2 parent loops (x -> y -> x, x -> x) fail clearly without hanging; a VDI/VHDX child whose size differs from its parent is refused; no image file changes in any of these
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG"

W=$TEST_WORK
ERR=$W/stderr

# attach_fails DESC RE ARGS...: vdimgctl attach fails, stderr matches the extended regex RE
attach_fails() {
	local d=$1 re=$2 dev
	shift 2
	if dev=$("$VDIMGCTL" attach -f --show "$@" 2>"$ERR"); then
		fail "$d" "attached as $dev"
		"$VDIMGCTL" detach "$dev"
		return 1
	fi
	sed 's/^/  | /' "$ERR"
	if grep -Eq -- "$re" "$ERR"; then
		ok "$d"
	else
		fail "$d" "stderr does not match /$re/"
	fi
}
# klog RE: the kernel log since the last klog_mark has a line matching RE
klog_mark() { KLOG_MARK=$(dmesg | wc -l); }
klog() { dmesg | tail -n +$((KLOG_MARK + 1)) | grep -Eq -- "$1"; }
shas() { for x in "$@"; do sha_of "$x"; done | tr '\n' ' '; }

for f in vhd vdi vhdx; do
	t="$f"
	d=$W/$f
	rm -rf "$d"
	mkdir -p "$d/elsewhere"
	a=$d/a.$f b=$d/b.$f c=$d/child.$f
	"$VDIMGCTL" create -t "$f" -s 32M "$a" && "$VDIMGCTL" create -t "$f" -s 32M "$b" &&
		"$VDIMGCTL" create -t "$f" --parent "$a" "$c" || { fail "$t: create A, B, child of A"; continue; }
	before=$(shas "$a" "$b" "$c")

	klog_mark
	attach_fails "$t: child of A attached over B (--chain B) is refused" \
		'match|mismatch|parent' --chain "$b" "$c"
	if klog "child\.$f.*(does not match|mismatch)|b\.$f"; then
		ok "$t: the kernel log says why"
	elif grep -q "cannot attach: .*\(match\|mismatch\)" "$ERR"; then
		# vdimgctl checks the link itself before VDIMG_CTL_ATTACH: the kernel never saw it
		ok_skip "$t: the kernel log says why" "vdimgctl refused the link before the ioctl"
	else
		fail "$t: the kernel log says why" "$(dmesg | tail -n 5 | tr '\n' '|')"
	fi
	dev=$(vd_attach -r --force --chain "$b" "$c") && ok "$t: --force attaches it" ||
		fail "$t: --force attaches it" "$(cat "$ERR")"
	[ -n "$dev" ] && vd_detach "$dev"

	# B under A's name: the tool follows the child's parent reference and finds the wrong image
	mv "$a" "$d/elsewhere/a.$f" && mv "$b" "$a"
	attach_fails "$t: another image under the parent's name is refused" \
		'match|mismatch|parent|UUID' "$c"
	mv "$a" "$b" && mv "$d/elsewhere/a.$f" "$a"

	mv "$a" "$d/elsewhere/a.$f"
	if [ "$f" = vdi ]; then
		# VDI children find their parent by UUID in their own directory
		attach_fails "$t: missing parent: the message names the child and the parent UUID" \
			"child\.$f.*([0-9a-f]{8}-[0-9a-f]{4}-)" "$c"
	else
		attach_fails "$t: missing parent: the message names the child and the missing file" \
			"child\.$f.*a\.$f|a\.$f.*child\.$f" "$c"
	fi
	mv "$d/elsewhere/a.$f" "$a"
	dev=$(vd_attach -r "$c") && ok "$t: with the parent back it attaches" ||
		fail "$t: with the parent back it attaches"
	[ -n "$dev" ] && vd_detach "$dev"
	check_eq "$t: no image changed" "$(shas "$a" "$b" "$c")" "$before"

	if [ "$f" != vhd ]; then
		# a child of another size than its parent (vdimgctl create lets VDI/VHDX choose it)
		big=$d/big.$f
		if "$VDIMGCTL" create -t "$f" --parent "$a" -s 64M "$big"; then
			bb=$(shas "$a" "$big")
			klog_mark
			attach_fails "$t: a 64 MiB child over a 32 MiB parent is refused" 'size|parent' "$big"
			klog "size" && ok "$t: the kernel log gives the sizes" ||
				fail "$t: the kernel log gives the sizes" "$(dmesg | tail -n 5 | tr '\n' '|')"
			check_eq "$t: size mismatch: no image changed" "$(shas "$a" "$big")" "$bb"
		else
			ok_skip "$t: size mismatch" "vdimgctl create refuses another size"
		fi
	fi
	rm -rf "$d"
done

# qcow2 loops made by qemu-img rebase -u
x=$W/x.qcow2 y=$W/y.qcow2
rm -f "$x" "$y"
if "$QEMU_IMG" create -q -f qcow2 "$x" 16M && "$QEMU_IMG" create -q -f qcow2 "$y" 16M &&
	"$QEMU_IMG" rebase -u -f qcow2 -b "$y" -F qcow2 "$x" &&
	"$QEMU_IMG" rebase -u -f qcow2 -b "$x" -F qcow2 "$y"; then
	before=$(shas "$x" "$y")
	attach_fails "loop x -> y -> x: a clear error, no hang" 'loop' "$x"
	check_eq "loop: images unchanged" "$(shas "$x" "$y")" "$before"
	"$QEMU_IMG" rebase -u -f qcow2 -b "$x" -F qcow2 "$x"
	before=$(shas "$x")
	attach_fails "self-loop x -> x: a clear error, no hang" 'loop' "$x"
	check_eq "self-loop: image unchanged" "$(shas "$x")" "$before"
else
	fail "qemu-img makes the loops"
fi
done_testing
