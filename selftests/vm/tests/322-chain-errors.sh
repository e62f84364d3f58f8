#!/bin/sh
# Chain errors through vdimgctl attach and the kernel: a VHD/VDI/VHDX child over the wrong base of the same size (--chain, and a renamed file the tool finds instead) is refused with a message on stderr, and by the kernel itself (raw VDIMG_CTL_ATTACH, ESTALE and a kernel log line), --force attaches it; a missing parent is named with the child; qcow2 parent loops (x -> y -> x, x -> x) fail clearly without hanging; a child over a parent of another size is refused (vdimgctl create refuses to make one, the kernel answers EINVAL and logs the sizes); no image file changes in any of these
# timeout: 300
. /vmtest/lib.sh
require_vdimg
require_cmd "$QEMU_IMG" /vmtest/abi_test
ABI=/vmtest/abi_test

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

	attach_fails "$t: child of A attached over B (--chain B) is refused" \
		'match|mismatch|parent' --chain "$b" "$c"
	# vdimgctl checks the link before the ioctl; the kernel must refuse it on its own too
	klog_mark
	check_eq "$t: the kernel refuses the child over B (raw attach)" "$($ABI chain "$b" "$c")" \
		"errno ESTALE"
	if klog "child\.$f.*(does not match|mismatch)|b\.$f"; then
		ok "$t: the kernel log says why"
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

	# a child over a parent of another size: vdimgctl create will not make one, and a parent of
	# the same format but another size is refused by the kernel with both sizes in its log
	big=$d/big.$f
	if "$VDIMGCTL" create -t "$f" --parent "$a" -s 64M "$big" 2>"$ERR"; then
		fail "$t: create refuses a 64 MiB child of a 32 MiB parent"
	else
		grep -q "size" "$ERR" && ok "$t: create refuses a 64 MiB child of a 32 MiB parent" ||
			fail "$t: create refuses a 64 MiB child of a 32 MiB parent" "$(cat "$ERR")"
	fi
	"$VDIMGCTL" create -t "$f" -s 64M "$big" || fail "$t: create a 64 MiB image"
	bb=$(shas "$big" "$c")
	klog_mark
	check_eq "$t: the kernel refuses a 32 MiB child over a 64 MiB parent" \
		"$($ABI chain "$big" "$c")" "errno EINVAL"
	klog "size" && ok "$t: the kernel log gives the sizes" ||
		fail "$t: the kernel log gives the sizes" "$(dmesg | tail -n 5 | tr '\n' '|')"
	check_eq "$t: size mismatch: no image changed" "$(shas "$big" "$c")" "$bb"
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
