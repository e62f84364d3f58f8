#!/bin/sh
# Samples empty.bochs and simple-pattern.cloop are refused as unsupported, naming the format
. /vmtest/lib.sh
require_vdimg
need_sample empty.bochs simple-pattern.cloop

ndev=$(ls /sys/block | grep -c '^vdimg')
for s in empty.bochs:bochs simple-pattern.cloop:cloop; do
	name=${s%%:*}
	fmt=${s##*:}
	img=$TEST_WORK/$name
	cp "$(sample "$name")" "$img"
	for opts in "" "-r"; do
		out=$("$VDIMGCTL" attach -f --show $opts "$img" 2>&1)
		rc=$?
		echo "vdimgctl attach $opts $name: rc $rc: $out"
		[ $rc -eq 0 ] && "$VDIMGCTL" detach "$out"
		check "$name: attach ${opts:+$opts }is refused" test $rc -ne 0
		check "$name: attach ${opts:+$opts }names the format ($fmt ... not supported)" \
			sh -c "echo '$out' | grep -qi '$fmt.*not supported'"
	done
	check_eq "$name: no device was left" "$(ls /sys/block | grep -c '^vdimg')" "$ndev"
	check_eq "$name: the kernel answers EOPNOTSUPP" "$(/vmtest/abi_test probe "$img" ro)" \
		"errno EOPNOTSUPP"
	check "$name: the kernel log names the format" sh -c "dmesg | grep -q 'vdimg.*$fmt.*not supported'"
done
done_testing
