#!/bin/sh
# Sample grub_mbr.raw (a bare MBR) is not taken for a format: only read-only or -t raw attaches it
. /vmtest/lib.sh
require_vdimg
need_sample grub_mbr.raw

src=$(sample grub_mbr.raw)
img=$TEST_WORK/grub_mbr.raw
cp "$src" "$img"
want=$(sha_of "$img")

out=$("$VDIMGCTL" attach -f --show "$img" 2>&1)
rc=$?
echo "vdimgctl attach (writable, auto): rc $rc: $out"
check "writable auto attach is refused" test $rc -ne 0
[ $rc -eq 0 ] && "$VDIMGCTL" detach "$out"
check_eq "the kernel answers EMEDIUMTYPE to a writable AUTO attach" \
	"$(/vmtest/abi_test probe "$img")" "errno EMEDIUMTYPE"
check_eq "the kernel attaches it as raw when read-only" \
	"$(/vmtest/abi_test probe "$img" ro)" "attached raw"

dev=$(vd_attach -r "$img") || die "attach -r failed"
check_eq "-r: format raw" "$(vd_attr "$dev" format)" raw
check_eq "-r: size 512" "$(blockdev --getsize64 "$dev")" 512
check_eq "-r: reads as the file" "$(sha_of "$dev")" "$want"
check "detach" vd_detach "$dev"

dev=$(vd_attach -t raw "$img") || die "attach -t raw failed"
check_eq "-t raw: writable" "$(vd_attr "$dev" read_only)" 0
check_eq "-t raw: format raw" "$(vd_attr "$dev" format)" raw
check "detach" vd_detach "$dev"
check_eq "the file is unchanged" "$(sha_of "$img")" "$want"
done_testing
