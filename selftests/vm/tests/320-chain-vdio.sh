#!/bin/sh
# tstVDIo through /dev/vdimgN: base + 2 differencing layers for VHD, VDI, VHDX, QCOW2, QED and a mixed VDI <- VHD <- QED chain; each level k in turn is the writable top (the chain up to k attached), fio randrw 50% writes with bs=64k and with bsrange=512-128k (any 512 multiple) verifies crc32c; the device keeps its contents across re-attach, the files of the lower levels never change, and every lower sub-chain still reads what it read as the top
# timeout: 600
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG"

W=$TEST_WORK
size=16M

# fio_level DEV T: the two fio runs on DEV (64 KiB in the first 4 MiB, 512-128 KiB in [8, 12) MiB)
fio_level() {
	"$FIO" --name=bs64k --filename="$1" --direct=1 --ioengine=psync --rw=randrw \
		--rwmixwrite=50 --bs=64k --offset=0 --size=4M --verify=crc32c --verify_fatal=1 \
		--do_verify=1 --randseed="$2" --output-format=terse >/dev/null &&
		"$FIO" --name=bsrange --filename="$1" --direct=1 --ioengine=psync --rw=randrw \
			--rwmixwrite=50 --bsrange=512-128k --offset=8M --size=4M \
			--verify=crc32c --verify_fatal=1 --do_verify=1 --randseed="$(($2 + 7))" \
			--output-format=terse >/dev/null
}

mkbase() { # mkbase F FILE
	case $1 in
	vhdx) "$VDIMGCTL" create -t vhdx -o block_size=1048576 -s "$size" "$2" ;;
	*) "$VDIMGCTL" create -t "$1" -s "$size" "$2" ;;
	esac
}

n=0
for spec in "vhd vhd vhd" "vdi vdi vdi" "vhdx vhdx vhdx" "qcow2 qcow2 qcow2" "qed qed qed" "vdi vhd qed"; do
	n=$((n + 1))
	t="chain $n ($(echo $spec | tr ' ' '<'))"
	k=0 files= shas= views= prev=
	for f in $spec; do
		img=$W/c$n-l$k.$f
		rm -f "$img"
		if [ $k -eq 0 ]; then
			mkbase "$f" "$img" || { fail "$t: create the base"; break; }
		else
			"$VDIMGCTL" create -t "$f" --parent "$prev" "$img" ||
				{ fail "$t: create level $k ($f over $prev)"; break; }
		fi
		lowers=$(for x in $files; do sha_of "$x"; done | tr '\n' ' ')
		dev=$(vd_attach "$img") || { fail "$t: level $k: attach"; break; }
		check_eq "$t: level $k: depth" "$(vd_attr "$dev" depth)" $((k + 1))
		check "$t: level $k: fio randrw 50% bs=64k and bsrange=512-128k, verify crc32c" \
			fio_level "$dev" $((n * 10 + k))
		view=$(sha_of "$dev")
		vd_detach "$dev" || fail "$t: level $k: detach"
		check_eq "$t: level $k: lower image files unchanged" \
			"$(for x in $files; do sha_of "$x"; done | tr '\n' ' ')" "$lowers"
		dev=$(vd_attach -r "$img") || { fail "$t: level $k: re-attach"; break; }
		check_eq "$t: level $k: same contents after re-attach" "$(sha_of "$dev")" "$view"
		vd_detach "$dev" || fail "$t: level $k: detach"
		files="$files $img" views="$views $view" prev=$img
		k=$((k + 1))
	done
	[ $k -eq 3 ] || continue
	# every sub-chain [0..k] still reads what it read when it was the top
	set -- $views
	k=0 below=
	for img in $files; do
		dev=$(vd_attach -r ${below:+--chain "$below"} "$img") ||
			{ fail "$t: attach [0..$k]"; break; }
		below=${below:+$below,}$img
		check_eq "$t: sub-chain [0..$k] reads its level-$k contents" "$(sha_of "$dev")" "$1"
		vd_detach "$dev"
		shift
		k=$((k + 1))
	done
	if [ "$spec" = "qcow2 qcow2 qcow2" ] || [ "$spec" = "qed qed qed" ]; then
		check_eq "$t: qemu-img reads the chain as the device did" \
			"$(raw_sha "$img" "${spec%% *}")" "$view"
	fi
	rm -f $files
done
done_testing
