#!/bin/sh
# CUE/BIN in the kernel: an ISO 9660 image and its MODE1/2352 and MODE2/2352 track files (sync, header, subheader, zero EDC/ECC; built on the host by selftests/host/mkbin.py) and the ISO itself as a MODE1/2048 track after an audio track in another file; each cue sheet attaches read-only with 2048-byte sectors, reads back as the ISO and mounts as iso9660 with its files intact; --track picks the data track, an audio or absent track is refused; a mixed-mode sheet (audio in a WAVE and an MP3 file) attaches and mounts with and without its .wav, info lists the audio tracks; a data track in a WAVE file is refused
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

# mixed mode: the data track in a BINARY file, audio in a WAVE file (one second of CD audio, made
# here) and an MP3 file that is not there; then without the .wav too: audio files are never read
printf 'RIFF\064\261\002\000WAVEfmt \020\000\000\000\001\000\002\000\104\254\000\000\020\261\002\000\004\000\020\000data\020\261\002\000' >"$W/mixed2.wav"
head -c 176400 /dev/zero >>"$W/mixed2.wav"
mixed() {
	printf 'FILE "m1.bin" BINARY\n TRACK 01 MODE1/2352\n  INDEX 01 00:00:00\nFILE "%s" WAVE\n TRACK 02 AUDIO\n  INDEX 00 00:00:00\n  INDEX 01 00:00:30\nFILE "mixed3.mp3" MP3\n TRACK 03 AUDIO\n  INDEX 01 00:00:00\n' "$1"
}
mixed mixed2.wav >"$W/mixed.cue"
t "mixed mode (WAVE, MP3)" "$W/mixed.cue"
"$VDIMGCTL" info "$W/mixed.cue" >"$W/info" 2>&1
check "info lists the WAVE track and its length" grep -qF 'track 02: AUDIO start 70560 length 105840 (45 sectors of 2352) file "mixed2.wav" WAVE' "$W/info"
check "info lists the MP3 track" grep -q 'track 03: AUDIO start 0 length unknown (.*) file "mixed3.mp3" MP3' "$W/info" ||
	sed 's/^/  | /' "$W/info"
mixed gone.wav >"$W/nowav.cue"
t "mixed mode, no .wav" "$W/nowav.cue"
"$VDIMGCTL" info "$W/nowav.cue" >"$W/info" 2>&1
check "info: the .wav is missing" grep -q 'track 02: AUDIO .*length unknown (the file is missing) file "gone.wav"' "$W/info" ||
	sed 's/^/  | /' "$W/info"
printf 'FILE "m1.bin" WAVE\n TRACK 01 MODE1/2352\n  INDEX 01 00:00:00\n' >"$W/wavedata.cue"
check_fail "a data track in a WAVE file is refused" "$VDIMGCTL" attach -f --show "$W/wavedata.cue"
done_testing
