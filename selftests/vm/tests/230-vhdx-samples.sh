#!/bin/sh
# VHDX samples (Hyper-V, Disk2VHD, a pending log) through the kernel: contents by sha256, a write of 0xc3 across 32 MiB blocks, and log replay (a read-only attach refuses or reads the replayed data, never the stale blocks)
# timeout: 600
. /vmtest/lib.sh
require_vdimg
need_sample test-disk2vhd.vhdx iotest-dynamic-1G.vhdx iotest-dirtylog-10G-4M.vhdx
W=$TEST_WORK
M=1048576

# ro_sha NAME WANT: read-only attach of the sample reads WANT
ro_sha() {
	local s dev
	s=$(sample "$1")
	dev=$(vd_attach -r "$s") || { fail "$1: attach read-only"; return; }
	check_eq "$1: format" "$(vd_attr "$dev" format)" vhdx
	check_eq "$1: sha256 through the device" "$(sha_of "$dev")" "$2"
	vd_detach "$dev" || fail "$1: detach"
}
ro_sha test-disk2vhd.vhdx 96d964042be9b58dda1725567abfb0cf9fd8380e2118754afa979c2ad445938a

# iotest-dynamic-1G.vhdx: d3d112d8... is exactly 0xa5 in [0, 33 MiB), 0x96 in [33, 66 MiB) and zeros
# to 1 GiB (checked on the host); the sha256 of [0, 96 MiB) and cmp with zeros after it say the same
# at a fraction of the cost under TCG
s=$(sample iotest-dynamic-1G.vhdx)
dev=$(vd_attach -r "$s") || die "iotest-dynamic-1G.vhdx: attach read-only failed"
check_eq "iotest-dynamic-1G.vhdx: format" "$(vd_attr "$dev" format)" vhdx
check_eq "iotest-dynamic-1G.vhdx: size" "$(blockdev --getsize64 "$dev")" 1073741824
check_eq "iotest-dynamic-1G.vhdx: [0, 96 MiB) = 0xa5 x 33 MiB, 0x96 x 33 MiB, zeros" \
	"$(sha_of "$dev" $((96 * M)))" 4e0262da8b0b32152c6d5eb2df9ef03e56a5a27b76bf269bb256dd58da59d7d7
t0=$(date +%s)
check "iotest-dynamic-1G.vhdx: [96 MiB, 1 GiB) zeros" cmp -n $((928 * M)) "$dev" /dev/zero \
	$((96 * M)) 0
echo "# read 928 MiB of NOT_PRESENT blocks in $(($(date +%s) - t0)) s"
vd_detach "$dev" || fail "iotest-dynamic-1G.vhdx: detach"

# 0xc3 over [99, 157) MiB of a copy of the 1 GiB sample: 0xa5 [0,33), 0x96 [33,66), zeros, 0xc3,
# zeros. Checked as the sha256 of [0, 192) MiB (computed on the host from that layout) and zeros
# after it: cmp is much cheaper than sha256 under TCG.
pre=4459efb918e343ccd8b99a76a79ac15d8d71329e137a4dfbe2465fd1fc7acb47
s=$(sample iotest-dynamic-1G.vhdx)
dd if="$s" of="$W/dyn.vhdx" bs=1M conv=sparse status=none || die "cannot copy $s"
dev=$(vd_attach "$W/dyn.vhdx") || die "attach of the copy failed"
check "write 58 MiB of 0xc3 at 99 MiB" sh -c "head -c $((58 * M)) /dev/zero | tr '\\0' '\\303' |
	/usr/bin/dd of=$dev bs=1M seek=99 oflag=direct conv=fsync status=none"
check_eq "0xc3 write reads back, [0, 192 MiB) as expected" "$(sha_of "$dev" $((192 * M)))" "$pre"
check "[192, 256 MiB) and the last 64 MiB still zeros" sh -c \
	"/usr/bin/cmp -n $((64 * M)) $dev /dev/zero $((192 * M)) 0 &&
	 /usr/bin/cmp -n $((64 * M)) $dev /dev/zero $((960 * M)) 0"
vd_detach "$dev" || fail "detach"
check "qemu-img check of the written sample clean" "$QEMU_IMG" check -f vhdx "$W/dyn.vhdx"
"$QEMU_IMG" convert -f vhdx -O raw "$W/dyn.vhdx" "$W/dyn.raw" || fail "qemu-img convert"
check_eq "qemu-img reads the write: [0, 192 MiB)" "$(sha_of "$W/dyn.raw" $((192 * M)))" "$pre"
check "qemu-img reads the write: zeros after 192 MiB" cmp -n $((832 * M)) "$W/dyn.raw" /dev/zero \
	$((192 * M)) 0
rm -f "$W/dyn.vhdx" "$W/dyn.raw"

# the pending log: 10 GiB, 0xa5 in [0, 18 MiB) and zeros elsewhere once replayed
# (replayed sha256: 179cefe8b0587f123393eedf2aa7aa8d25798591178e6bc3950a09762f38f96f)
pat18=29eaf2f32ca6d5557b1cc3a6b3962df6161b3c8d816465104ace03dfcc1c90db # 18 MiB of 0xa5
# log_content T DEV: the replayed content. 179cefe8... is the sha256 of exactly 0xa5 in [0, 18 MiB)
# and zeros to 10 GiB (checked on the host); reading 10 GiB under TCG takes minutes, so: the
# written range, the zeros around it and after, and samples of the rest.
log_content() {
	check_eq "$1: [0, 18 MiB) is 0xa5" "$(sha_of "$2" $((18 * M)))" "$pat18"
	check "$1: [18, 96 MiB) is zeros" cmp -n $((78 * M)) "$2" /dev/zero $((18 * M)) 0
	check "$1: 16 MiB at 5 GiB and the last 16 MiB are zeros" sh -c \
		"/usr/bin/cmp -n $((16 * M)) $2 /dev/zero $((5120 * M)) 0 &&
		 /usr/bin/cmp -n $((16 * M)) $2 /dev/zero $((10224 * M)) 0"
}
s=$(sample iotest-dirtylog-10G-4M.vhdx)
ssha=$(sha_of "$s")
t="dirty log, read-only"
if dev=$("$VDIMGCTL" attach -f --show -r "$s" 2>"$W/ro.err"); then
	VD_DEVS="$VD_DEVS $dev"
	ok "$t: attach replays into memory"
	check_eq "$t: size" "$(blockdev --getsize64 "$dev")" 10737418240
	log_content "$t" "$dev"
	vd_detach "$dev" || fail "$t: detach"
else
	sed 's/^/  | /' "$W/ro.err"
	if grep -qi log "$W/ro.err"; then
		ok "$t: attach refused, naming the log"
	else
		fail "$t: attach refused without saying why (the log)"
	fi
fi
check_eq "$t: the sample file is unchanged" "$(sha_of "$s")" "$ssha"

t="dirty log, writable"
dd if="$s" of="$W/dirty.vhdx" bs=1M conv=sparse status=none || die "cannot copy $s"
dev=$(vd_attach "$W/dirty.vhdx") || die "writable attach of the dirty-log copy failed"
check_eq "$t: size" "$(blockdev --getsize64 "$dev")" 10737418240
log_content "$t" "$dev"
vd_detach "$dev" || fail "$t: detach"
check "$t: qemu-img check after the replay clean" "$QEMU_IMG" check -f vhdx "$W/dirty.vhdx"
dev=$(vd_attach -r "$W/dirty.vhdx") || die "read-only attach after the replay failed"
check_eq "$t: read-only attach after the replay: [0, 18 MiB) is 0xa5" \
	"$(sha_of "$dev" $((18 * M)))" "$pat18"
vd_detach "$dev" || fail "$t: detach"
check "$t: the replayed copy is still sparse (< 64 MiB allocated)" \
	test "$(blocks_of "$W/dirty.vhdx")" -lt 131072
rm -f "$W/dirty.vhdx"
done_testing
