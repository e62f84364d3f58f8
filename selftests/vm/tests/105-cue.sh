#!/bin/sh
# CUE/BIN in the kernel: an ISO 9660 image and its MODE1/2352 and MODE2/2352 track files (sync, header, subheader, zero EDC/ECC; built on the host by selftests/host/mkbin.py) and the ISO itself as a MODE1/2048 track after an audio track in another file; each cue sheet attaches read-only with 2048-byte sectors, reads back as the ISO and mounts as iso9660 with its files intact; --track picks the data track, an audio or absent track is refused
# timeout: 120
. /vmtest/lib.sh
require_vdimg
require_module isofs
F=$SCRATCH/fixtures/cue
[ -f "$F/done" ] || skip "the CUE/BIN fixtures were not built on the host (genisoimage or python3 missing?)"
W=$TEST_WORK
iso_sha=$(sha_of "$F/src.iso")

# t TAG CUE [attach options]: attach, compare, mount, compare files
t() {
	local tag=$1 cue=$2 dev mnt=$W/mnt
	shift 2
	dev=$(vd_attach "$@" "$cue") || { fail "$tag: attach"; return; }
	check_eq "$tag: sysfs format" "$(vd_attr "$dev" format)" cue
	check_eq "$tag: read-only" "$(vd_attr "$dev" read_only)" 1
	check_eq "$tag: 2048-byte sectors" "$(blockdev --getss "$dev")" 2048
	check_eq "$tag: reads as the ISO" "$(sha_of "$dev")" "$iso_sha"
	check_fail "$tag: writes fail" dd if=/dev/zero of="$dev" bs=2048 count=1 oflag=direct status=none
	mkdir -p "$mnt"
	if check "$tag: mount -t iso9660" mount -t iso9660 -o ro "$dev" "$mnt"; then
		check "$tag: numbers.txt intact" cmp "$F/tree/numbers.txt" "$mnt/numbers.txt"
		check "$tag: sub/random.bin intact" cmp "$F/tree/sub/random.bin" "$mnt/sub/random.bin"
		check "$tag: umount" umount "$mnt"
	fi
	check "$tag: detach" vd_detach "$dev"
}

# the sheets sit beside the track files (a copy: the scratch fixtures are shared)
cp "$F/m1.bin" "$F/m2.bin" "$F/src.iso" "$W/"
printf 'REM test\nFILE "m1.bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n' >"$W/m1.cue"
t "MODE1/2352" "$W/m1.cue"
printf 'FILE "m2.bin" BINARY\r\n  TRACK 01 MODE2/2352\r\n    INDEX 01 00:00:00\r\n' >"$W/m2.cue"
t "MODE2/2352" "$W/m2.cue"

head -c $((2352 * 30)) /dev/zero >"$W/audio.bin"
printf 'FILE "audio.bin" BINARY\n TRACK 01 AUDIO\n  INDEX 01 00:00:00\nFILE "src.iso" BINARY\n TRACK 02 MODE1/2048\n  INDEX 01 00:00:00\n' >"$W/two.cue"
t "MODE1/2048 after audio" "$W/two.cue"
t "--track 2" "$W/two.cue" --track 2
check_fail "--track 1 (audio) is refused" "$VDIMGCTL" attach -f --show --track 1 "$W/two.cue"
check_fail "--track 3 (absent) is refused" "$VDIMGCTL" attach -f --show --track 3 "$W/two.cue"
done_testing
