#!/bin/sh
# VMDK in the kernel: monolithicSparse made by vdimgctl (64 KiB and 1 MiB zeroed grains) and by qemu-img (zeroed_grain off/on): fio verify=crc32c, detach, re-attach verify_only, qemu-img check clean and qemu-img's raw view equals the device; streamOptimized read-only (writable attach refused by name); a 3-deep qemu-img chain read and written through the device; a VMDK child over a VDI base; a qcow2 overlay over a VMDK base; streamOptimized written by vdimgctl convert; a seSparse child (host-built fixture) read, and seSparse and vmfsSparse (COWD) children made by vdimgctl create written through the device (fio verify, discard, re-attach, qemu-img's raw view); a vmfsRawDeviceMap descriptor naming a loop device (attach --allow-device-extents only, reads and writes reach it); monolithicFlat, twoGbMaxExtentSparse and twoGbMaxExtentFlat (extent files passed to the kernel) with fio verify across an extent boundary, qemu-img check and qemu's view of the written range; the iotest-version3 sample's pattern
# timeout: 900
. /vmtest/lib.sh
require_vdimg
require_cmd "$FIO" "$QEMU_IMG" "$QEMU_IO"

W=$TEST_WORK
size=64M
# 24 MiB .. 40 MiB crosses the 32 MiB span of a 512-entry grain table of 64 KiB grains
job="--name=verify --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bsrange=512-128k
 --size=16M --offset=24M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=2718"
fio_run() {
	"$FIO" "$@" --output="$W/fio.out" && return 0
	tail -n 30 "$W/fio.out"
	return 1
}

# the short tier (6.1, the debug kernel): qemu-img's default 64 KiB grains only
for by in $(tier "vdimgctl vdimgctl-1m qemu-img qemu-img-zg" qemu-img-zg); do
	t="vmdk by $by"
	img=$W/fio-$by.vmdk
	rm -f "$img"
	case $by in
	vdimgctl) "$VDIMGCTL" create -t vmdk -s "$size" "$img" ;;
	vdimgctl-1m) "$VDIMGCTL" create -t vmdk -o block_size=1M,zeroed_grain=on -s "$size" "$img" ;;
	qemu-img) "$QEMU_IMG" create -q -f vmdk "$img" "$size" ;;
	qemu-img-zg) "$QEMU_IMG" create -q -f vmdk -o zeroed_grain=on "$img" "$size" ;;
	esac || { fail "$t: create"; continue; }
	dev=$(vd_attach "$img") || { fail "$t: attach read-write"; continue; }
	check_eq "$t: sysfs format" "$(vd_attr "$dev" format)" vmdk
	check_eq "$t: device size" "$(blockdev --getsize64 "$dev")" $((64 << 20))
	check "$t: fio random writes 512..128k, verified" fio_run $job --filename="$dev" --do_verify=1
	# outside fio's range: data, then a discard that must read back as zeros
	check "$t: write 1 MiB at 44 MiB" dd if=/dev/urandom of="$dev" bs=1M seek=44 count=1 \
		oflag=direct conv=fsync status=none
	check "$t: blkdiscard 1 MiB at 44 MiB" blkdiscard -o $((44 << 20)) -l $((1 << 20)) "$dev"
	check_eq "$t: the discarded range reads zeros" \
		"$(dd if="$dev" bs=1M skip=44 count=1 status=none | sha256sum | cut -d' ' -f1)" \
		"$(pattern_sha 0 1048576)"
	check "$t: detach" vd_detach "$dev"
	dev=$(vd_attach "$img") || { fail "$t: re-attach"; continue; }
	check "$t: fio verify_only after re-attach" fio_run $job --filename="$dev" --verify_only=1
	check_eq "$t: the discarded range still reads zeros" \
		"$(dd if="$dev" bs=1M skip=44 count=1 status=none | sha256sum | cut -d' ' -f1)" \
		"$(pattern_sha 0 1048576)"
	check "$t: detach after verify" vd_detach "$dev"
	check "$t: qemu-img check clean" "$QEMU_IMG" check -q -f vmdk "$img"
	rm -f "$W/qemu.raw"
	"$QEMU_IMG" convert -f vmdk -O raw "$img" "$W/qemu.raw" || fail "$t: qemu-img convert -O raw"
	dev=$(vd_attach -r "$img") || { fail "$t: read-only attach"; continue; }
	check "$t: device = qemu-img convert -O raw" cmp "$dev" "$W/qemu.raw"
	vd_detach "$dev" || fail "$t: detach"
	rm -f "$img" "$W/qemu.raw"
done

# streamOptimized: read-only
t="streamOptimized"
rm -f "$W/s.raw" "$W/s.vmdk"
if "$QEMU_IMG" create -q -f raw "$W/s.raw" 40M &&
	"$QEMU_IO" -f raw -c "write -P 0x11 0 3m" -c "write -P 0x22 20m 65k" -c "write -P 0x33 39m 1m" \
		"$W/s.raw" >/dev/null &&
	"$QEMU_IMG" convert -f raw -O vmdk -o subformat=streamOptimized "$W/s.raw" "$W/s.vmdk"; then
	dev=$(vd_attach -r "$W/s.vmdk") || fail "$t: read-only attach"
	if [ -n "$dev" ]; then
		check "$t: device = the raw source" cmp "$dev" "$W/s.raw"
		vd_detach "$dev" || fail "$t: detach"
	fi
	check_fail "$t: a writable attach is refused" "$VDIMGCTL" attach -f --show "$W/s.vmdk"
	# the kernel says why in its log
	dmesg | tail -n 20 | grep -q "streamOptimized VMDK images are read-only"
	check_eq "$t: the kernel's refusal names the variant" $? 0
else
	fail "$t: qemu-img made a streamOptimized image"
fi
rm -f "$W/s.raw" "$W/s.vmdk"

# chain_write T DEV EXP DEPTH BS SEEK COUNT WHAT: on an attached chain, the depth is DEPTH and the
# device reads as EXP (a raw file), then COUNT random blocks of BS bytes written at block SEEK of
# both (WHAT names the write) leave the device reading as EXP
chain_write() {
	local t=$1 dev=$2 exp=$3
	check_eq "$t: depth" "$(vd_attr "$dev" depth)" "$4"
	check "$t: device = qemu-img convert of the chain" cmp "$dev" "$exp"
	mkrandom "$W/rnd" 1
	dd if="$W/rnd" of="$dev" bs="$5" seek="$6" count="$7" oflag=direct conv=fsync status=none &&
		dd if="$W/rnd" of="$exp" bs="$5" seek="$6" count="$7" conv=notrunc status=none
	check_eq "$t: $8" $? 0
	check "$t: device = expected after the write" cmp "$dev" "$exp"
}

# a 3-deep chain made by qemu-img, written through the device
t="vmdk chain"
c0=$W/c0.vmdk c1=$W/c1.vmdk c2=$W/c2.vmdk exp=$W/cexp.raw
rm -f "$c0" "$c1" "$c2" "$exp"
if "$QEMU_IMG" create -q -f vmdk "$c0" 40M &&
	"$QEMU_IO" -f vmdk -c "write -P 0xa0 0 40m" "$c0" >/dev/null &&
	"$QEMU_IMG" create -q -f vmdk -b c0.vmdk -F vmdk "$c1" &&
	"$QEMU_IO" -f vmdk -c "write -P 0xa1 1m 3m" -c "write -z 10m 1m" "$c1" >/dev/null &&
	"$QEMU_IMG" create -q -f vmdk -o zeroed_grain=on -b c1.vmdk -F vmdk "$c2" &&
	"$QEMU_IO" -f vmdk -c "write -P 0xa2 2m 65k" -c "write -z 20m 128k" "$c2" >/dev/null &&
	"$QEMU_IMG" convert -f vmdk -O raw "$c2" "$exp"; then
	s0=$(sha_of "$c0")
	s1=$(sha_of "$c1")
	dev=$(vd_attach "$c2") || fail "$t: attach the top resolves two parents"
	if [ -n "$dev" ]; then
		chain_write "$t" "$dev" "$exp" 3 4096 250 200 "a write across grains"
		vd_detach "$dev" || fail "$t: detach"
	fi
	check_eq "$t: the base is unchanged" "$(sha_of "$c0")" "$s0"
	check_eq "$t: the middle layer is unchanged" "$(sha_of "$c1")" "$s1"
	check "$t: qemu-img check of the top clean" "$QEMU_IMG" check -q -f vmdk "$c2"
	check_eq "$t: qemu-img reads the chain as the device did" "$(raw_sha "$c2" vmdk)" \
		"$(sha_of "$exp")"
	# the middle layer changes: the top's parentCID no longer matches
	"$QEMU_IO" -f vmdk -c "write -P 0x55 0 4k" "$c1" >/dev/null
	check_fail "$t: a parent whose CID changed is refused" "$VDIMGCTL" attach -f --show -r "$c2"
else
	fail "$t: qemu-img made the chain"
fi
rm -f "$c0" "$c1" "$c2" "$exp" "$W/rnd"

# a VMDK child (vdimgctl) over a VDI base (qemu-img)
t="vdi <- vmdk"
base=$W/vb.vdi child=$W/vc.vmdk exp=$W/vexp.raw
rm -f "$base" "$child" "$exp"
if "$QEMU_IMG" create -q -f vdi "$base" 40M &&
	"$QEMU_IO" -f vdi -c "write -P 0x6b 0 8m" -c "write -P 0x6c 32m 8m" "$base" >/dev/null &&
	"$QEMU_IMG" convert -f vdi -O raw "$base" "$exp" &&
	"$VDIMGCTL" create -t vmdk --parent "$base" "$child"; then
	bs=$(sha_of "$base")
	dev=$(vd_attach "$child") || fail "$t: attach resolves the VDI parent"
	if [ -n "$dev" ]; then
		chain_write "$t" "$dev" "$exp" 2 512 16300 300 "a partial-grain write over the base's data"
		vd_detach "$dev" || fail "$t: detach"
		dev=$(vd_attach -r "$child") || fail "$t: re-attach"
		[ -n "$dev" ] && check "$t: device = expected after re-attach" cmp "$dev" "$exp"
		[ -n "$dev" ] && vd_detach "$dev"
	fi
	check_eq "$t: the base is unchanged" "$(sha_of "$base")" "$bs"
else
	fail "$t: create"
fi
rm -f "$base" "$child" "$exp" "$W/rnd"

# a qcow2 overlay (qemu-img) over a VMDK base, written through the device
t="vmdk <- qcow2"
base=$W/qb.vmdk top=$W/qt.qcow2 exp=$W/qexp.raw
rm -f "$base" "$top" "$exp"
if "$QEMU_IMG" create -q -f vmdk "$base" 32M &&
	"$QEMU_IO" -f vmdk -c "write -P 0x3a 0 32m" "$base" >/dev/null &&
	"$QEMU_IMG" create -q -f qcow2 -b qb.vmdk -F vmdk "$top" &&
	"$QEMU_IO" -f qcow2 -c "write -P 0x3b 4m 1m" -c "write -z 8m 64k" "$top" >/dev/null &&
	"$QEMU_IMG" convert -f qcow2 -O raw "$top" "$exp"; then
	bs=$(sha_of "$base")
	dev=$(vd_attach "$top") || fail "$t: attach resolves the VMDK parent"
	if [ -n "$dev" ]; then
		chain_write "$t" "$dev" "$exp" 2 4096 2000 300 "a write over the base's data"
		vd_detach "$dev" || fail "$t: detach"
	fi
	check_eq "$t: the VMDK base is unchanged" "$(sha_of "$base")" "$bs"
	check "$t: qemu-img check of the overlay clean" "$QEMU_IMG" check -q -f qcow2 "$top"
	check_eq "$t: qemu-img reads the chain as the device did" "$(raw_sha "$top" qcow2)" \
		"$(sha_of "$exp")"
else
	fail "$t: qemu-img made the chain"
fi
rm -f "$base" "$top" "$exp" "$W/rnd"

# streamOptimized written by vdimgctl convert, attached read-only
t="stream by vdimgctl"
rm -f "$W/v.raw" "$W/v.vmdk"
if "$QEMU_IMG" create -q -f raw "$W/v.raw" 40M &&
	"$QEMU_IO" -f raw -c "write -P 0x44 0 2m" -c "write -P 0x45 33m 65k" "$W/v.raw" >/dev/null &&
	"$VDIMGCTL" convert -O vmdk --variant streamOptimized "$W/v.raw" "$W/v.vmdk"; then
	dev=$(vd_attach -r "$W/v.vmdk") || fail "$t: read-only attach"
	if [ -n "$dev" ]; then
		check "$t: device = the raw source" cmp "$dev" "$W/v.raw"
		vd_detach "$dev" || fail "$t: detach"
	fi
	check "$t: qemu-img check clean" "$QEMU_IMG" check -q -f vmdk "$W/v.vmdk"
else
	fail "$t: vdimgctl convert made it"
fi
rm -f "$W/v.raw" "$W/v.vmdk"

# a seSparse child (built on the host by mksesparse.py) over a monolithicSparse base
t="seSparse"
F=$SCRATCH/fixtures/sesparse
if [ -f "$F/done" ]; then
	cp "$F/base.vmdk" "$F/se.vmdk" "$F/se-sesparse.vmdk" "$W/"
	dev=$(vd_attach -r "$W/se.vmdk") || fail "$t: read-only attach resolves the parent"
	if [ -n "$dev" ]; then
		check_eq "$t: depth" "$(vd_attr "$dev" depth)" 2
		check "$t: device = qemu-img convert of the chain" cmp "$dev" "$F/se.raw"
		vd_detach "$dev" || fail "$t: detach"
	fi
	rm -f "$W/se.vmdk" "$W/se-sesparse.vmdk"
	# written through the device: children made by vdimgctl create --variant seSparse / vmfsSparse
	sjob="--name=verify --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite
 --bsrange=512-64k --size=8M --offset=4M --verify=crc32c --verify_fatal=1 --randrepeat=1
 --randseed=31"
	for v in seSparse vmfsSparse; do
		t="$v write"
		t0=$(date +%s)
		rm -f "$W"/sw*.vmdk "$W/sw.raw"
		if ! "$VDIMGCTL" create -t vmdk --variant $v --parent "$W/base.vmdk" "$W/sw.vmdk" ||
			! dev=$(vd_attach "$W/sw.vmdk"); then
			fail "$t: create and attach read-write"
			continue
		fi
		check_eq "$t: depth" "$(vd_attr "$dev" depth)" 2
		check "$t: fio random writes 512..64k, verified" fio_run $sjob --filename="$dev" \
			--do_verify=1
		check "$t: blkdiscard 1 MiB at 20 MiB" blkdiscard -o $((20 << 20)) -l $((1 << 20)) "$dev"
		check_eq "$t: the discarded range reads zeros (not the parent)" \
			"$(dd if="$dev" bs=1M skip=20 count=1 status=none | sha256sum | cut -d' ' -f1)" \
			"$(pattern_sha 0 1048576)"
		check "$t: detach" vd_detach "$dev"
		dev=$(vd_attach "$W/sw.vmdk") || fail "$t: re-attach"
		if [ -n "$dev" ]; then
			check "$t: fio verify_only after re-attach" fio_run $sjob --filename="$dev" \
				--verify_only=1
			check "$t: detach after verify" vd_detach "$dev"
		fi
		"$QEMU_IMG" convert -O raw "$W/sw.vmdk" "$W/sw.raw" || fail "$t: qemu-img convert -O raw"
		dev=$(vd_attach -r "$W/sw.vmdk") || fail "$t: read-only attach"
		if [ -n "$dev" ]; then
			check "$t: device = qemu-img convert -O raw" cmp "$dev" "$W/sw.raw"
			vd_detach "$dev" || fail "$t: detach read-only"
		fi
		echo "# $t: $(($(date +%s) - t0)) s"
	done
	rm -f "$W/base.vmdk" "$W"/sw*.vmdk "$W/sw.raw"
else
	fail "$t: the seSparse fixtures were not built on the host (python3 missing?)"
fi

# a raw-device extent: a descriptor naming a loop device by absolute path, attached only with
# --allow-device-extents; reads as the device, writes reach it
t="device extent"
t0=$(date +%s)
rm -f "$W/dx.raw" "$W/dx.vmdk"
if "$QEMU_IMG" create -q -f raw "$W/dx.raw" 8M &&
	"$QEMU_IO" -f raw -c "write -P 0x3d 0 8m" "$W/dx.raw" >/dev/null &&
	ld=$(losetup -f --show "$W/dx.raw"); then
	printf '# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType="vmfsRawDeviceMap"\n\nRW 16384 VMFSRDM "%s"\n' \
		"$ld" >"$W/dx.vmdk"
	check_fail "$t: refused without --allow-device-extents" "$VDIMGCTL" attach -f --show "$W/dx.vmdk"
	dev=$(vd_attach --allow-device-extents "$W/dx.vmdk") || fail "$t: attach with the opt-in"
	if [ -n "$dev" ]; then
		check "$t: the device reads as the loop device" cmp "$dev" "$ld"
		check "$t: write 1 MiB at 3 MiB" dd if=/dev/urandom of="$W/dx.chunk" bs=1M count=1 status=none
		check "$t: written through vdimg" dd if="$W/dx.chunk" of="$dev" bs=1M seek=3 oflag=direct \
			conv=fsync status=none
		check "$t: detach" vd_detach "$dev"
		check "$t: the loop device holds the write" cmp -n 1048576 -i 0:$((3 << 20)) \
			"$W/dx.chunk" "$ld"
	fi
	losetup -d "$ld"
else
	fail "$t: a loop device over a raw file"
fi
rm -f "$W/dx.raw" "$W/dx.vmdk" "$W/dx.chunk"
echo "# $t: $(($(date +%s) - t0)) s"

# descriptor files with separate extent files (vdimgctl passes them to the kernel): qemu's data
# reads back, fio verify across an extent boundary, re-attach verify_only, qemu checks the result
for sub in $(tier "monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat" twoGbMaxExtentSparse); do
	t=$sub
	rm -f "$W"/x*.vmdk
	case $sub in
	monolithicFlat) vsize=40M edge=$((20 << 20)) ;;
	*) vsize=3G edge=$((2048 << 20)) ;;
	esac
	if ! "$QEMU_IMG" create -q -f vmdk -o subformat=$sub "$W/x.vmdk" $vsize ||
		! "$QEMU_IO" -f vmdk -c "write -P 0x5a $((edge - (1 << 20))) 2m" "$W/x.vmdk" >/dev/null; then
		fail "$t: qemu-img made and filled it"
		continue
	fi
	dev=$(vd_attach "$W/x.vmdk") || { fail "$t: attach with its extent files"; continue; }
	check_eq "$t: qemu's write across the extent boundary reads back" \
		"$(dd if="$dev" bs=1M skip=$((edge / 1048576 - 1)) count=2 status=none | sha256sum | cut -d' ' -f1)" \
		"$(pattern_sha 132 2097152)"
	xjob="--name=split --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bsrange=512-128k
	 --size=8M --offset=$((edge - (4 << 20))) --verify=crc32c --verify_fatal=1 --randrepeat=1
	 --randseed=31"
	check "$t: fio random writes across the extent boundary, verified" fio_run $xjob \
		--filename="$dev" --do_verify=1
	check "$t: detach" vd_detach "$dev"
	dev=$(vd_attach -r "$W/x.vmdk") || { fail "$t: re-attach"; continue; }
	check "$t: fio verify_only after re-attach" fio_run $xjob --filename="$dev" --verify_only=1
	rm -f "$W/dev.part" "$W/q.part"
	dd if="$dev" of="$W/dev.part" bs=1M skip=$((edge / 1048576 - 4)) count=8 status=none
	check "$t: detach after verify" vd_detach "$dev"
	case $sub in
	*Sparse) check "$t: qemu-img check clean" "$QEMU_IMG" check -q -f vmdk "$W/x.vmdk" ;;
	esac
	# qemu reads fio's 8 MiB across the boundary as the device did (a sparse raw copy)
	rm -f "$W/q.raw"
	"$QEMU_IMG" convert -f vmdk -O raw "$W/x.vmdk" "$W/q.raw" &&
		dd if="$W/q.raw" of="$W/q.part" bs=1M skip=$((edge / 1048576 - 4)) count=8 status=none ||
		fail "$t: qemu-img convert"
	rm -f "$W/q.raw"
	check "$t: qemu-img reads the written range as the device did" cmp "$W/dev.part" "$W/q.part"
done
rm -f "$W"/x*.vmdk "$W/dev.part" "$W/q.part"

# the sample: 16 GiB streamOptimized, version 3
if [ -f "$SAMPLES/iotest-version3.vmdk" ]; then
	img=$SAMPLES/iotest-version3.vmdk
	dev=$(vd_attach -r "$img") || fail "iotest-version3.vmdk: read-only attach"
	if [ -n "$dev" ]; then
		check_eq "iotest-version3.vmdk: 16 GiB" "$(blockdev --getsize64 "$dev")" 17179869184
		bad=0
		i=0
		while [ $i -lt 100 ]; do
			want=$(pattern_sha "$(printf '%o' $((48 + i % 10)))" 512)
			got=$(dd if="$dev" bs=512 skip=$((i * 1280 + i)) count=1 status=none |
				sha256sum | cut -d' ' -f1)
			[ "$got" = "$want" ] || bad=$((bad + 1))
			i=$((i + 1))
		done
		check_eq "iotest-version3.vmdk: the 100 pattern sectors" "$bad" 0
		vd_detach "$dev" || fail "iotest-version3.vmdk: detach"
	fi
else
	why="not fetched on the host: run 'make samples'"
	[ -s "$SAMPLES/MISSING" ] && why=$(head -n1 "$SAMPLES/MISSING")
	ok_skip "iotest-version3.vmdk" "sample image missing ($why)"
fi
done_testing
