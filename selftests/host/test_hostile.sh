#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Host tests of hand-made malformed images (selftests/host/mkhostile.py: table entries past the
# end of the file, at the header or at other metadata, shared clusters, huge or zero sizes; issue
# 16) through the sanitizer build of vdimgctl: `info`, `check` and `convert` of each either work
# or fail with a vdimgctl message (exit 1, or 2/3 for check's findings), never with a sanitizer
# report or a signal; what `convert` writes is as large as the image says. The same images go
# through the kernel in selftests/vm/tests/360-hostile-images.sh. KTAP on stdout; skips (exit 4)
# without qemu-img.
#
# VDIMGCTL=path (default: build/host/vdimgctl, the sanitizer build).
set -u
. "$(dirname "$0")/cli_lib.sh"

ktap_begin_qemu
H=$T/hostile
if ! python3 "$ROOT/selftests/host/mkhostile.py" "$H" >"$T/err" 2>&1; then
	ok 1 "mkhostile.py makes the images"
	ktap_end
	exit
fi
# clean: STATUS [ALLOWED...]: the last run exited with one of ALLOWED, had no sanitizer report,
# and an exit other than 0 came with a vdimgctl message
clean() {
	local want
	grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' "$T/err" && return 1
	for want in "$@"; do
		if [ "$rc" -eq "$want" ]; then
			[ "$rc" -eq 0 ] || grep -q '^vdimgctl: ' "$T/err" || [ -s "$T/out" ]
			return
		fi
	done
	return 1
}
opened=0 refused=0
for img in "$H"/*/*; do
	fmt=$(basename "$(dirname "$img")") name=$fmt/$(basename "$img")
	run info -t "$fmt" "$img"
	clean 0 1; s=$?
	if [ "$rc" -eq 0 ]; then opened=$((opened + 1)); else refused=$((refused + 1)); fi
	run check -t "$fmt" "$img"
	[ $s -eq 0 ] && clean 0 1 2 3; s=$?
	rm -f "$T/out.raw"
	run convert -t "$fmt" "$img" "$T/out.raw"
	[ $s -eq 0 ] && clean 0 1 && { [ "$rc" -ne 0 ] || [ "$(stat -c %s "$T/out.raw")" -gt 0 ]; }
	ok $? "$name: info, check and convert work or fail with a message (info exit $rc)"
done
echo "# $opened images opened, $refused refused at open"
# a BAT entry near 2^64 made off + len wrap in the bounds check: it passed, and reads went there
run info -t vhdx "$H/vhdx/bat-huge-offset"
[ "$rc" -eq 1 ] && grep -q 'BAT entry 0 points at .*outside the file' "$T/err"
ok $? "vhdx: a BAT entry at 2^64 - 1 MiB is refused at open (no wrap in the bounds check)"
ktap_end
