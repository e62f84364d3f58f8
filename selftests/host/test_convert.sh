#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host tests of `vdimgctl convert`: images qemu-img makes and qemu-io fills (a qcow2 chain with
# compressed and zero clusters, streamOptimized VMDK, dynamic VHD, VDI, QED, a sparse raw file)
# are converted to every format vdimg creates; each result reads like its source (`qemu-img
# compare`), passes `qemu-img check` where qemu checks that format, has no parent (a chain is
# flattened), and allocates little more than the data (zeros are not written). A DST that exists
# is refused and left alone; bad formats and a missing SRC fail with the vdimgctl message shape.
# --compress: qcow2 (zlib, zstd, small and large clusters, 1-bit refcounts, extended L2) reads like
# the source, qemu-img check counts compressed clusters, incompressible clusters stay plain, a
# commit writes into compressed clusters; streamOptimized VMDK accepts -c, other targets refuse it.
# KTAP on stdout; skips (exit 4) without qemu-img.
#
# VDIMGCTL=path (default: build/host/vdimgctl, the sanitizer build).
set -u
. "$(dirname "$0")/cli_lib.sh"

ktap_begin_qemu

# sources: 40 MiB disks holding about 3.3 MiB of data
S=$T/src
mkdir -p "$S"
fill="-c 'write -P 1 0 64k' -c 'write -P 2 5M 3M' -c 'write -P 3 20M 4k' -c 'write -P 4 39M 1M'"
{
	qemu-img create -q -f qcow2 "$S/base.qcow2" 40M &&
	eval qemu-io -f qcow2 "$fill" "$S/base.qcow2" &&
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$S/chain.qcow2" &&
	qemu-io -f qcow2 -c 'write -c -P 5 6M 64k' -c 'write -z 5M 128k' -c 'write -P 6 30M 8k' \
		"$S/chain.qcow2" &&
	qemu-img create -q -f vmdk -o subformat=streamOptimized "$S/stream.vmdk" 40M &&
	qemu-io -f vmdk -c 'write -P 1 0 64k' -c 'write -P 2 5M 3M' -c 'write -P 4 39M 1M' \
		"$S/stream.vmdk" &&
	for f in vpc vdi qed raw; do
		qemu-img create -q -f $f "$S/src.$f" 40M && eval qemu-io -f $f "$fill" "$S/src.$f" || exit 1
	done
} >/dev/null 2>&1
ok $? "qemu made the sources"

for src in chain.qcow2 stream.vmdk src.vpc src.vdi src.qed src.raw; do
	for out in raw qcow2 vhd vhdx vdi qed vmdk; do
		d=$T/out.$out
		rm -f "$T"/out.*
		run convert -O $out "$S/$src" "$d"
		if [ $rc -ne 0 ]; then
			ok 1 "$src -> $out: convert"
			continue
		fi
		qemu-img compare -q "$S/$src" "$d" >"$T/err" 2>&1
		ok $? "$src -> $out: reads like the source (qemu-img compare)"
		case $out in qcow2|qed|vdi|vhdx|vmdk)
			qemu-img check -q "$d" >"$T/err" 2>&1
			ok $? "$src -> $out: qemu-img check is clean";;
		esac
		# a chain comes out flat
		! qemu-img info "$d" 2>/dev/null | grep -q '^backing file'
		ok $? "$src -> $out: no parent"
		# 3.3 MiB of data: the new image may add its metadata and whole blocks (VDI, VHDX:
		# 1-2 MiB blocks), not the 40 MiB of zeros
		k=$(du -k "$d" | cut -f1)
		[ "$k" -lt 16384 ]
		ok $? "$src -> $out: sparse (${k} KiB allocated for a 40 MiB disk)"
	done
done

# streamOptimized VMDK out: written in one pass (VMware's OVF layout), read by qemu and libvmdk
for src in chain.qcow2 stream.vmdk src.raw; do
	d=$T/out.stream.vmdk
	rm -f "$d"
	run convert -O vmdk --variant streamOptimized "$S/$src" "$d"
	[ $rc -eq 0 ] && qemu-img compare -q "$S/$src" "$d" >"$T/err" 2>&1 &&
		qemu-img check -q "$d" >>"$T/err" 2>&1 &&
		qemu-img info "$d" | grep -q 'create type: streamOptimized'
	ok $? "$src -> streamOptimized vmdk: reads like the source, qemu-img check clean"
	if command -v vmdkinfo >/dev/null; then
		vmdkinfo "$d" 2>/dev/null | grep -q 'Stream optimized'
		ok $? "$src -> streamOptimized vmdk: vmdkinfo reads it"
	fi
	k=$(du -k "$d" | cut -f1)
	[ "$k" -lt 4096 ]
	ok $? "$src -> streamOptimized vmdk: compressed, zeros left out (${k} KiB)"
done
run create -t vmdk --variant streamOptimized -s 64M "$T/empty.stream.vmdk"
[ $rc -eq 0 ] && qemu-img check -q "$T/empty.stream.vmdk" &&
	[ "$(qemu-img map --output=json "$T/empty.stream.vmdk" | grep -c '"data": true')" = 0 ]
ok $? "create --variant streamOptimized: an empty stream qemu checks, no data"

# a chain read through vdimg's own differencing VHD: base and child made by vdimgctl
"$V" convert -O vhd "$S/src.vpc" "$T/b.vhd" >/dev/null 2>&1 &&
	"$V" create -t vhd --parent "$T/b.vhd" "$T/c.vhd" >/dev/null 2>&1
run convert -O qcow2 "$T/c.vhd" "$T/flat.qcow2"
[ $rc -eq 0 ] && qemu-img compare -q "$S/src.vpc" "$T/flat.qcow2"
ok $? "differencing VHD (which qemu cannot read) -> qcow2 reads like its base"

# --compress: qcow2 clusters stored compressed (as qemu-img convert -c), zlib and zstd
C=$T/comp
mkdir -p "$C"
# 12 MiB + 7 KiB (the last cluster is partial and holds data): 6 MiB of compressible text in
# 1 MiB pieces with holes between, 1 MiB of random bytes, and a partial last cluster
python3 - "$C/text.raw" <<'PY' &&
import random, sys
random.seed(7)
words = [b'alpha', b'beta', b'gamma', b'delta', b'lorem', b'ipsum', b'vdimg', b'qcow2']
with open(sys.argv[1], 'wb') as f:
    f.truncate((12 << 20) + 7 * 1024)
    for mb in range(8):
        if mb % 4 != 3:
            f.seek(mb << 20)
            f.write(b' '.join(random.choice(words) for _ in range(200000))[:1 << 20])
    f.seek(9 << 20)
    f.write(random.randbytes(1 << 20))
    f.seek((12 << 20) + 2048)
    f.write(b'end of the disk ' * 128)
PY
	head -c $((2 << 20)) /dev/urandom >"$C/rand.raw"
ok $? "compression sources made"
qsize() { stat -c %s "$1"; }
for ct in zlib zstd; do
	d=$C/c.$ct.qcow2
	run convert -O qcow2 -c -o compression_type=$ct "$C/text.raw" "$d"
	[ $rc -eq 0 ] && qemu-img compare -q "$C/text.raw" "$d" >"$T/err" 2>&1 &&
		qemu-img check "$d" >"$T/check" 2>&1
	ok $? "-c $ct: reads like the source, qemu-img check clean"
	# qemu counts the compressed clusters: all but the random ones (which do not shrink)
	pct=$(sed -n 's/.*fragmented, \([0-9.]*\)% compressed clusters/\1/p' "$T/check")
	awk -v p="${pct:-0}" 'BEGIN { exit !(p > 80 && p < 100) }'
	ok $? "-c $ct: qemu-img check sees compressed clusters (${pct:-none}%)"
	qemu-img info "$d" 2>/dev/null | grep -q "compression type: $ct"
	ok $? "-c $ct: compression type $ct in the header"
	# uncompressed: 6 MiB text + 1 MiB random + the last cluster
	run convert -O qcow2 -o compression_type=$ct "$C/text.raw" "$C/p.$ct.qcow2"
	a=$(qsize "$d") b=$(qsize "$C/p.$ct.qcow2")
	[ $rc -eq 0 ] && [ "$a" -lt $((b / 3)) ]
	ok $? "-c $ct: a compressible source comes out much smaller ($a vs $b bytes)"
done
run convert -O qcow2 -c "$C/rand.raw" "$C/r.c.qcow2"
rc1=$rc
run convert -O qcow2 "$C/rand.raw" "$C/r.p.qcow2"
a=$(qsize "$C/r.c.qcow2") b=$(qsize "$C/r.p.qcow2")
[ $rc1 -eq 0 ] && [ $rc -eq 0 ] && [ "$a" -le $((b + 65536)) ] &&
	qemu-img compare -q "$C/rand.raw" "$C/r.c.qcow2" && qemu-img check -q "$C/r.c.qcow2" &&
	qemu-img check "$C/r.c.qcow2" | grep -q ' 0.00% compressed clusters'
ok $? "-c: incompressible clusters are stored plain, no bigger ($a vs $b bytes)"
# packing edge cases: small clusters, 1-bit refcounts (one compressed cluster per host cluster),
# extended L2, 2 MiB clusters
for o in cluster_size=512 refcount_bits=1 extended_l2=on,cluster_size=128k cluster_size=2M; do
	d=$C/o.qcow2
	rm -f "$d"
	run convert -O qcow2 -c -o $o "$C/text.raw" "$d"
	[ $rc -eq 0 ] && qemu-img compare -q "$C/text.raw" "$d" >"$T/err" 2>&1 &&
		qemu-img check "$d" >"$T/check" 2>&1 && grep -q 'No errors' "$T/check" &&
		! grep -q ' 0.00% compressed clusters' "$T/check"
	ok $? "-c -o $o: reads like the source, qemu-img check clean"
done
# writing into compressed clusters through the library: commit an overlay over them (each
# partly rewritten cluster is copied out of its compressed form and the old bytes freed)
cp "$C/text.raw" "$C/ref.raw"
w="-c 'write -P 0x77 1000k 8k' -c 'write -P 0x78 2100k 100k' -c 'write -z 5M 64k' -c 'write -P 0x79 11M 4k'"
{
	qemu-img create -q -f qcow2 -b c.zlib.qcow2 -F qcow2 "$C/ov.qcow2" &&
	eval qemu-io -f qcow2 "$w" "$C/ov.qcow2" && eval qemu-io -f raw "$w" "$C/ref.raw"
} >/dev/null 2>&1
run commit "$C/ov.qcow2"
[ $rc -eq 0 ] && qemu-img compare -q "$C/ref.raw" "$C/c.zlib.qcow2" >"$T/err" 2>&1 &&
	qemu-img check -q "$C/c.zlib.qcow2" >>"$T/err" 2>&1
ok $? "-c: writes into compressed clusters (commit through the library) read back, check clean"
# streamOptimized VMDK is compressed anyway; other targets refuse -c
run convert -O vmdk --variant streamOptimized -c "$C/text.raw" "$C/s.vmdk"
[ $rc -eq 0 ] && qemu-img compare -q "$C/text.raw" "$C/s.vmdk"
ok $? "-c with a streamOptimized VMDK: accepted"
for out in vhdx vdi raw vmdk; do
	run convert -O $out -c "$C/text.raw" "$C/x.$out"
	[ $rc -eq 1 ] && [ ! -e "$C/x.$out" ] && grep -qE "^vdimgctl: .*cannot convert: .*compress" "$T/err"
	ok $? "-c -O $out: refused with a message, no DST"
done

# errors
echo keep >"$T/exists.qcow2"
run convert -O qcow2 "$S/src.raw" "$T/exists.qcow2"
[ $rc -eq 1 ] && [ "$(cat "$T/exists.qcow2")" = keep ] && grep -q '^vdimgctl: ' "$T/err"
ok $? "an existing DST is refused and left as it was"
run convert -O nosuch "$S/src.raw" "$T/x.img"
[ $rc -eq 1 ] && [ ! -e "$T/x.img" ] && grep -q "unknown format 'nosuch'" "$T/err"
ok $? "an unknown output format is a usage error"
run convert -O qcow2 "$T/missing.vhd" "$T/x.qcow2"
[ $rc -eq 1 ] && [ ! -e "$T/x.qcow2" ] && grep -qE '^vdimgctl: .*missing.vhd: cannot convert: ' "$T/err"
ok $? "a missing SRC: exit 1, one message naming it, no DST"
run convert "$S/src.raw"
[ $rc -eq 1 ] && grep -q 'expected SRC and DST' "$T/err"
ok $? "convert without DST: usage error"
run convert --help
[ $rc -eq 0 ] && grep -q 'Usage: vdimgctl convert' "$T/out"
ok $? "convert --help"

ktap_end
