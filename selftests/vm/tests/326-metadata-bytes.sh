#!/bin/sh
# /sys/block/vdimgN/vdimg/metadata_bytes: for an empty dynamic image of each format that keeps tables, the attribute is there, above zero, and larger for a 256 GiB image than for a 1 GiB one (the tables grow with the size); a raw device counts 0; a qcow2 device's count grows when a write loads an L2 table into its cache; a two-layer chain counts both layers
. /vmtest/lib.sh
require_vdimg

W=$TEST_WORK
mb() { # mb DEV: metadata_bytes of DEV, or "none"
	vd_attr "$1" metadata_bytes 2>/dev/null || echo none
}
# bytes_of FMT SIZE: metadata_bytes of an empty FMT image of SIZE attached read-write
bytes_of() {
	local img=$W/m.$1 dev n
	rm -f "$img"
	"$VDIMGCTL" create -t "$1" -s "$2" "$img" >/dev/null || { echo "create"; return; }
	dev=$(vd_attach "$img") || { echo "attach"; return; }
	n=$(mb "$dev")
	vd_detach "$dev" >/dev/null || n="detach"
	rm -f "$img"
	echo "$n"
}
isnum() { case $1 in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }

for f in qcow2 qed vdi vhd vhdx vmdk parallels; do
	small=$(bytes_of "$f" 1G)
	big=$(bytes_of "$f" 256G)
	echo "# $f: 1 GiB image $small bytes, 256 GiB image $big bytes"
	if isnum "$small" && isnum "$big" && [ "$small" -gt 0 ] && [ "$big" -gt "$small" ]; then
		ok "$f: metadata_bytes is above 0 and grows with the image ($small -> $big)"
	else
		fail "$f: metadata_bytes is above 0 and grows with the image" "1 GiB: $small, 256 GiB: $big"
	fi
done

truncate -s 64M "$W/r.raw"
dev=$(vd_attach -t raw "$W/r.raw") || die "attach raw"
check_eq "raw: metadata_bytes is 0" "$(mb "$dev")" 0
check "detach raw" vd_detach "$dev"

"$VDIMGCTL" create -t qcow2 -s 1G "$W/c.qcow2" >/dev/null || die "create qcow2"
dev=$(vd_attach "$W/c.qcow2") || die "attach qcow2"
before=$(mb "$dev")
dd if=/dev/zero of="$dev" bs=64k count=1 seek=100 oflag=direct status=none ||
	fail "a write into the qcow2 device"
after=$(mb "$dev")
echo "# qcow2: $before bytes before a write, $after after"
check "qcow2: a write that loads an L2 table grows metadata_bytes ($before -> $after)" \
	test "$after" -gt "$before"
check "detach qcow2" vd_detach "$dev"

"$VDIMGCTL" create -t qcow2 --parent "$W/c.qcow2" "$W/c1.qcow2" >/dev/null ||
	die "create the overlay"
dev=$(vd_attach "$W/c1.qcow2") || die "attach the chain"
check_eq "the chain has two layers" "$(vd_attr "$dev" depth)" 2
both=$(mb "$dev")
echo "# qcow2 chain: $both bytes"
check "a two-layer chain counts more than one of its layers ($both > $before)" \
	test "$both" -gt "$before"
check "detach the chain" vd_detach "$dev"
done_testing
