#!/bin/sh
# DMG (UDIF) in the kernel: images the host built with selftests/host/mkdmg.py (zlib, ADC, raw, zero-fill and ignore chunks; ADC chunks of 1 MiB; bzip2 chunks of 1 MiB in 100k blocks; LZMA chunks of 1 MiB as .xz streams) from an MBR-partitioned source disk attach read-only, read back as the source, and -P shows the two partitions with their data; writes fail; a master checksum mismatch is refused, and attaches with --force; the committed LZFSE images (LZFSE and LZVN blocks, selftests/host/data) read as their source; the sample simple-dmg.dmg reads as qemu-img reads it
# timeout: 120
. /vmtest/lib.sh
require_vdimg
F=$SCRATCH/fixtures/dmg
[ -f "$F/done" ] || skip "the DMG fixtures were not built on the host (python3 missing?)"
W=$TEST_WORK

src_sha=$(sha_of "$F/src.raw")
p1_sha=$(dd if="$F/src.raw" bs=512 skip=2048 count=2048 status=none | sha256sum | cut -d' ' -f1)
p2_sha=$(dd if="$F/src.raw" bs=512 skip=4096 status=none | sha256sum | cut -d' ' -f1)
for img in mixed adc bzip2 lzma; do
	t="dmg $img"
	dev=$(vd_attach -P "$F/$img.dmg") || { fail "$t: attach"; continue; }
	check_eq "$t: sysfs format" "$(vd_attr "$dev" format)" dmg
	check_eq "$t: read-only" "$(vd_attr "$dev" read_only)" 1
	check_eq "$t: reads as the source" "$(sha_of "$dev")" "$src_sha"
	wait_for_dev "${dev}p2" 30
	check_eq "$t: partition 1" "$(sha_of "${dev}p1" 2>/dev/null)" "$p1_sha"
	check_eq "$t: partition 2" "$(sha_of "${dev}p2" 2>/dev/null)" "$p2_sha"
	check_fail "$t: writes fail" dd if=/dev/zero of="$dev" bs=512 count=1 oflag=direct status=none
	check "$t: detach" vd_detach "$dev"
done
lz_sha=$(sha_of "$F/lzfse-src.raw")
for img in lzfse-fse lzfse-lzvn; do
	dev=$(vd_attach "$F/$img.dmg") || { fail "$img: attach"; continue; }
	check_eq "$img: reads as the source" "$(sha_of "$dev")" "$lz_sha"
	check "$img: detach" vd_detach "$dev"
done
[ -f "$F/master.dmg" ] || fail "fixture master.dmg missing"
if out=$("$VDIMGCTL" attach -f --show "$F/master.dmg" 2>&1); then
	fail "a master checksum mismatch is refused"
	vd_detach "$out"
else
	case $out in
	*"master checksum mismatch"*) ok "a master checksum mismatch is refused, named" ;;
	*) fail "a master checksum mismatch is refused, named (\"$out\")" ;;
	esac
fi
if dev=$(vd_attach --force "$F/master.dmg"); then
	check "master checksum mismatch, --force: a warning in the kernel log" \
		sh -c "dmesg | tail -n 20 | grep -q 'master checksum mismatch.*opened anyway (force)'"
	check_eq "master checksum mismatch, --force: reads as the source" "$(sha_of "$dev")" "$src_sha"
	check "master checksum mismatch, --force: detach" vd_detach "$dev"
else
	fail "a master checksum mismatch with --force: attach"
fi
check_fail "a writable attach with -t dmg --rw is refused" "$VDIMGCTL" attach -f --show --rw -t dmg "$F/mixed.dmg"

need_sample simple-dmg.dmg
s=$(sample simple-dmg.dmg)
"$QEMU_IMG" convert -f dmg -O raw "$s" "$W/simple.raw" 2>/dev/null || fail "qemu-img convert of simple-dmg"
dev=$(vd_attach "$s") || die "attach simple-dmg"
check_eq "simple-dmg: reads as qemu-img reads it" "$(sha_of "$dev")" "$(sha_of "$W/simple.raw")"
check "simple-dmg: detach" vd_detach "$dev"
done_testing
