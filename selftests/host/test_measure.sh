#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host tests of `vdimgctl measure`: for virtual sizes alone and for source images qemu-io filled
# (data, a zeroed range, compressed clusters, a two-layer chain, a sparse raw file), the output is
# exactly what `qemu-img measure` prints, in text and JSON, for qcow2 (several cluster sizes and
# refcount widths) and raw; unsupported formats and bad options are refused. KTAP on stdout;
# skips (exit 4) without qemu-img.
#
# VDIMGCTL=path (default: build/host/vdimgctl, the sanitizer build).
set -u
. "$(dirname "$0")/cli_lib.sh"

ktap_begin_qemu

same() {	# ARGS...: vdimgctl measure ARGS prints what qemu-img measure ARGS prints
	local q=("$@")

	[ "${q[0]}" = --json ] && q[0]=--output=json
	qemu-img measure "${q[@]}" >"$T/want" 2>&1
	local qrc=$?

	run measure "$@"
	if [ "$qrc" != 0 ]; then	# qemu refuses (too large an L1 table): so must vdimgctl
		[ "$rc" != 0 ] && grep -q "too large" "$T/err"
		return
	fi
	diff "$T/want" "$T/out" >"$T/diff"
}

for o in "" cluster_size=4096 cluster_size=512 cluster_size=2M refcount_bits=1 refcount_bits=64; do
	for s in 1M 64M 10G 1T; do
		same -O qcow2 ${o:+-o "$o"} --size "$s"
		ok $? "qcow2 ${o:-defaults}, --size $s"
	done
done
same --json -O qcow2 --size 5G
ok $? "qcow2 --size 5G, JSON"
same -O raw --size 5G
ok $? "raw --size 5G"

qemu-img create -q -f qcow2 "$T/base.qcow2" 256M
qemu-io -c 'write -P 1 0 64k' -c 'write -P 2 100M 3M' -c 'write -z 200M 1M' \
	-c 'write -P 3 255M 100k' "$T/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$T/top.qcow2"
qemu-io -c 'write -P 4 50M 1M' -c 'write -P 5 100M 512' "$T/top.qcow2" >/dev/null
qemu-img convert -c -O qcow2 "$T/base.qcow2" "$T/comp.qcow2"
qemu-img create -q -f raw "$T/sparse.raw" 100M
qemu-io -f raw -c 'write -P 6 10M 1M' "$T/sparse.raw" >/dev/null
for src in base.qcow2 top.qcow2 comp.qcow2 sparse.raw; do
	for o in "" cluster_size=4096 cluster_size=2M; do
		same -O qcow2 ${o:+-o "$o"} "$T/$src"
		ok $? "$src into qcow2 ${o:-defaults}"
	done
	same --json -O qcow2 "$T/$src"
	ok $? "$src into qcow2, JSON"
	same -O raw "$T/$src"
	ok $? "$src into raw"
done

run measure -O vhdx --size 1G
ok $((rc == 0)) "an unsupported output format is refused"
run measure -O qcow2 -o cluster_size=3000 --size 1G
ok $((rc == 0)) "a bad cluster size is refused"
run measure -O qcow2 --size 1G "$T/base.qcow2"
ok $((rc == 0)) "--size and SRC together are refused"

ktap_end
