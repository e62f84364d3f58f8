#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host tests of `vdimgctl map`: for images qemu-img makes and qemu-io fills (data, zeroed ranges,
# compressed clusters, holes, a three-layer qcow2 chain), `vdimgctl map --json` prints exactly what
# `qemu-img map --output=json` prints, and the table form lists the same data ranges as `qemu-img
# map`; the JSON is valid and covers the disk without gaps; errors have the vdimgctl message shape.
# Images whose map qemu-img gives differently (VHDX: qemu has no block status for it; fixed VHD and
# static VDI: qemu reports the host file's holes; extended-L2 qcow2: qemu gives host offsets of
# unallocated subclusters) are checked for coverage and their data ranges against the written
# pattern instead. KTAP on stdout; skips (exit 4) without qemu-img.
#
# VDIMGCTL=path (default: build/host/vdimgctl, the sanitizer build).
set -u
. "$(dirname "$0")/cli_lib.sh"
# covers SIZE FILE: the JSON list is contiguous from 0 to SIZE
covers() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
size, m = int(sys.argv[1]), json.load(open(sys.argv[2]))
pos = 0
for e in m:
    assert e["start"] == pos and e["length"] > 0, e
    pos += e["length"]
assert pos == size, (pos, size)
EOF
}

ktap_begin_qemu

# data at cluster starts, inside clusters, across block ends, a zeroed range, the last MiB
fill="-c 'write -P 1 0 64k' -c 'write -P 2 5M 3M' -c 'write -z 20M 1M' -c 'write -P 3 40M 4k'"
fill="$fill -c 'write -P 4 63M 1M'"
for spec in qcow2 qcow2:cluster_size=4096 qcow qed vmdk \
	vmdk:subformat=twoGbMaxExtentSparse vmdk:subformat=streamOptimized vpc:subformat=dynamic \
	vdi raw; do
	fmt=${spec%%:*} o=${spec#"$fmt"} o=${o#:} img=$T/img.$fmt
	rm -f "$T"/img.*
	f=$fill
	# a stream is only appended to: ascending whole grains, no zeroing
	[ "$o" = subformat=streamOptimized ] &&
		f="-c 'write -P 1 0 64k' -c 'write -P 2 5M 3M' -c 'write -P 3 40M 64k' -c 'write -P 4 63M 1M'"
	eval qemu-img create -q -f "$fmt" ${o:+-o "$o"} "$img" 64M >/dev/null &&
		eval qemu-io -f "$fmt" "$f" "$img" >/dev/null 2>&1
	ok $? "$spec: qemu made and filled the image"
	qemu-img map --output=json "$img" >"$T/want" 2>/dev/null
	run map --json "$img"
	diff "$T/want" "$T/out" >"$T/diff"
	ok $? "$spec: map --json is what qemu-img map --output=json says"
	qemu-img map "$img" >"$T/want" 2>/dev/null
	run map "$img"
	# qemu-img adds its own note on images with compressed clusters; the ranges must agree
	diff <(grep -v '^qemu-img' "$T/want" | sed "s|$T/||") <(sed "s|$T/||" "$T/out") >"$T/diff"
	ok $? "$spec: the table lists the data ranges qemu-img map lists"
done

# compressed clusters: data, no offset
img=$T/c.qcow2
qemu-img create -q -f qcow2 "$img" 4M && qemu-io -f qcow2 -c 'write -c -P 7 1M 64k' "$img" >/dev/null
qemu-img map --output=json "$img" >"$T/want"
run map --json "$img"
diff "$T/want" "$T/out" >"$T/diff" && grep -q '"start": 1048576, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true}' "$T/out"
ok $? "compressed cluster: data without an offset, as qemu-img says"

# a three-layer chain: depth says which layer holds each range
b=$T/b.qcow2 m=$T/m.qcow2 t=$T/t.qcow2
qemu-img create -q -f qcow2 "$b" 8M &&
	qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -z 4M 64k' "$b" >/dev/null &&
	qemu-img create -q -f qcow2 -b "$b" -F qcow2 "$m" &&
	qemu-io -f qcow2 -c 'write -P 2 512k 1M' "$m" >/dev/null &&
	qemu-img create -q -f qcow2 -b "$m" -F qcow2 "$t" &&
	qemu-io -f qcow2 -c 'write -P 3 1M 64k' -c 'write -z 256k 64k' "$t" >/dev/null
ok $? "qemu made a base <- middle <- top qcow2 chain"
qemu-img map --output=json "$t" >"$T/want"
run map --json "$t"
diff "$T/want" "$T/out" >"$T/diff" && grep -q '"depth": 2' "$T/out" && grep -q '"depth": 1' "$T/out"
ok $? "chain: map --json is what qemu-img says, with depths 0, 1 and 2"
qemu-img map "$t" >"$T/want"
run map "$t"
diff "$T/want" "$T/out" >"$T/diff"
ok $? "chain: the table names the file each range is in, as qemu-img does"

# Where qemu-img's map differs: coverage, and data where the pattern was written. (qemu gives
# the host offset of unallocated subclusters of extended-L2 qcow2 clusters; vdimg says only that
# they are not in the image.)
for spec in vhdx vpc:subformat=fixed vdi:static=on qcow2:extended_l2=on; do
	fmt=${spec%%:*} o=${spec#"$fmt"} o=${o#:} img=$T/img.$fmt
	rm -f "$T"/img.*
	eval qemu-img create -q -f "$fmt" ${o:+-o "$o"} "$img" 64M >/dev/null &&
		qemu-io -f "$fmt" -c 'write -P 5 32M 1M' "$img" >/dev/null 2>&1
	size=$("$V" info --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
	run map --json "$img"
	json_rc=$rc
	covers "$size" "$T/out" 2>"$T/err" &&
		python3 - "$T/out" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
hit = [e for e in m if e["start"] <= 32 << 20 < e["start"] + e["length"]]
assert len(hit) == 1 and hit[0]["data"] and hit[0]["present"], hit
EOF
	ok $(( json_rc | $? )) "$spec: map --json covers the disk once and shows the written range as data"
done

# a vdimg-made dynamic VHDX: unwritten blocks are zeros, written ones data at a block offset
img=$T/v.vhdx
"$V" create -t vhdx -s 64M "$img" >/dev/null 2>&1 && qemu-io -f vhdx -c 'write -P 6 8M 4k' "$img" >/dev/null
run map --json "$img"
covers $((64 << 20)) "$T/out" 2>"$T/err" && python3 - "$T/out" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
data = [e for e in m if e["data"]]
assert len(data) == 1 and data[0]["start"] <= 8 << 20 < data[0]["start"] + data[0]["length"], m
assert "offset" in data[0] and all(e["zero"] for e in m if not e["data"]), m
EOF
ok $? "dynamic VHDX: one data block where qemu-io wrote, zeros elsewhere"

# errors
run map "$T/missing.qcow2"
[ $rc -eq 1 ] && grep -qE "^vdimgctl: .*missing.qcow2: cannot map: " "$T/err"
ok $? "map of a missing file: exit 1, one message naming it"
run map
[ $rc -eq 1 ] && grep -q 'expected one IMAGE' "$T/err"
ok $? "map without IMAGE: usage error"
run map --help
[ $rc -eq 0 ] && grep -q 'Usage: vdimgctl map' "$T/out"
ok $? "map --help"

ktap_end
