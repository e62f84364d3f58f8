#!/bin/sh
# VHD samples through the kernel: virtual size by creator (Hyper-V "win " footer size, Virtual PC "vpc " CHS product) and the Disk2VHD zero-filled image's content
. /vmtest/lib.sh
require_vdimg
need_sample hyperv2012r2-dynamic.vhd virtualpc-dynamic.vhd d2v-zerofilled.vhd
M=1048576

# vsize NAME SIZE: read-only attach, device size, the first MiB is zeros
vsize() {
	local s dev
	s=$(sample "$1")
	dev=$(vd_attach -r "$s") || { fail "$1: attach read-only"; return; }
	check_eq "$1: format" "$(vd_attr "$dev" format)" vhd
	check_eq "$1: blockdev --getsize64" "$(blockdev --getsize64 "$dev")" "$2"
	check_eq "$1: sysfs virtual_size" "$(vd_attr "$dev" virtual_size)" "$2"
	check "$1: first and last MiB read as zeros" sh -c \
		"/usr/bin/cmp -n $M $dev /dev/zero && /usr/bin/cmp -n $M $dev /dev/zero $(($2 - M)) 0"
	vd_detach "$dev" || fail "$1: detach"
}
vsize hyperv2012r2-dynamic.vhd 136365211648
vsize virtualpc-dynamic.vhd 136363130880

s=$(sample d2v-zerofilled.vhd)
dev=$(vd_attach -r "$s") || die "d2v-zerofilled.vhd: attach failed"
check_eq "d2v-zerofilled.vhd: size from the footer, not CHS" "$(blockdev --getsize64 "$dev")" 263454720
check_eq "d2v-zerofilled.vhd: sha256" "$(sha_of "$dev")" \
	1ba076be94a8a64541c25aae8d5a5f8b0da758c3797af597e03acb431ff8d143
vd_detach "$dev" || fail "d2v-zerofilled.vhd: detach"
done_testing
