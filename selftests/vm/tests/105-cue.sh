#!/bin/sh
# CUE/BIN in the kernel: an ISO 9660 image (genisoimage in the guest) written by the test as MODE1/2352 and MODE2/2352 raw sectors (sync, header, subheader, zero EDC/ECC) and as a cooked MODE1/2048 track after an audio track in another file; each cue sheet attaches read-only with 2048-byte sectors, reads back as the ISO and mounts as iso9660 with the files intact; --track picks the data track, an audio track is refused
# timeout: 200
. /vmtest/lib.sh
require_vdimg
require_cmd /usr/bin/genisoimage
require_module isofs

W=$TEST_WORK
mkdir -p "$W/tree/sub"
seq 1 3000 >"$W/tree/numbers.txt"
head -c 30000 /dev/urandom >"$W/tree/sub/random.bin"
/usr/bin/genisoimage -quiet -R -o "$W/src.iso" "$W/tree" || die "genisoimage failed"
iso_sha=$(sha_of "$W/src.iso")
nsec=$(($(stat -c %s "$W/src.iso") / 2048))

# the ISO split into its 2048-byte sectors once; below, one cat per sector and builtins only
mkdir -p "$W/sec"
(cd "$W/sec" && split -b 2048 -a 4 "$W/src.iso" s) || die "split failed"
z8='\000\000\000\000\000\000\000\000'
z280=
i=0
while [ $i -lt 35 ]; do z280="$z280$z8"; i=$((i + 1)); done
# raw_track MODE OUT: the ISO as 2352-byte sectors of MODE (1 or 2, form 1), zero EDC/ECC; the
# header's address in BCD minutes, seconds, frames (octal escapes for printf, no subshells)
raw_track() {
	local a f hdr tail m s fr
	a=150
	tail=$z280
	[ "$1" = 1 ] && tail="$z280$z8"
	for f in "$W"/sec/s*; do
		m=$((a / 4500 / 10 * 16 + a / 4500 % 10))
		s=$((a / 75 % 60 / 10 * 16 + a / 75 % 60 % 10))
		fr=$((a % 75 / 10 * 16 + a % 75 % 10))
		hdr='\000\377\377\377\377\377\377\377\377\377\377\000'
		hdr="$hdr\\$((m / 64))$((m / 8 % 8))$((m % 8))\\$((s / 64))$((s / 8 % 8))$((s % 8))"
		hdr="$hdr\\$((fr / 64))$((fr / 8 % 8))$((fr % 8))\\00$1"
		[ "$1" = 2 ] && hdr="$hdr"'\000\000\010\000\000\000\010\000'
		printf "$hdr"
		cat "$f"
		printf "$tail"
		a=$((a + 1))
	done >"$2"
	[ "$(stat -c %s "$2")" = $((nsec * 2352)) ] || die "raw_track $1: wrong size"
}

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
		check "$tag: numbers.txt intact" cmp "$W/tree/numbers.txt" "$mnt/numbers.txt"
		check "$tag: sub/random.bin intact" cmp "$W/tree/sub/random.bin" "$mnt/sub/random.bin"
		check "$tag: umount" umount "$mnt"
	fi
	check "$tag: detach" vd_detach "$dev"
}

raw_track 1 "$W/m1.bin"
printf 'REM test\nFILE "m1.bin" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n' >"$W/m1.cue"
t "MODE1/2352" "$W/m1.cue"

raw_track 2 "$W/m2.bin"
printf 'FILE "m2.bin" BINARY\r\n  TRACK 01 MODE2/2352\r\n    INDEX 01 00:00:00\r\n' >"$W/m2.cue"
t "MODE2/2352" "$W/m2.cue"

head -c $((2352 * 30)) /dev/zero >"$W/audio.bin"
cp "$W/src.iso" "$W/data.iso"
printf 'FILE "audio.bin" BINARY\n TRACK 01 AUDIO\n  INDEX 01 00:00:00\nFILE "data.iso" BINARY\n TRACK 02 MODE1/2048\n  INDEX 01 00:00:00\n' >"$W/two.cue"
t "MODE1/2048 after audio" "$W/two.cue"
t "--track 2" "$W/two.cue" --track 2
check_fail "--track 1 (audio) is refused" "$VDIMGCTL" attach -f --show --track 1 "$W/two.cue"
check_fail "--track 3 (absent) is refused" "$VDIMGCTL" attach -f --show --track 3 "$W/two.cue"
done_testing
