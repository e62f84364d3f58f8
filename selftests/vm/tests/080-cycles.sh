#!/bin/sh
# 200 attach/detach cycles (alternating read-only, partscan, reads in between) leave nothing behind
# timeout: 600
. /vmtest/lib.sh
require_vdimg

img=$TEST_WORK/cycle.img
mkrandom "$img" 4
printf 'label: dos\n,1MiB,L\n' | "$SFDISK" -q "$img" >/dev/null 2>&1
want=$(sha_of "$img" 65536)
i=0 bad=0
t0=$(date +%s)
while [ $i -lt 200 ]; do
	case $((i % 4)) in
	0) opts="-t raw" ;;
	1) opts=-r ;;
	2) opts="-t raw -P" ;;
	3) opts="-r -P" ;;
	esac
	dev=$("$VDIMGCTL" attach -f --show $opts "$img") || { echo "cycle $i: attach $opts failed"; bad=$((bad + 1)); break; }
	if [ $((i % 10)) = 0 ] && [ "$(sha_of "$dev" 65536)" != "$want" ]; then
		echo "cycle $i: $dev reads wrong data"
		bad=$((bad + 1))
	fi
	"$VDIMGCTL" detach "$dev" || { echo "cycle $i: detach $dev failed"; bad=$((bad + 1)); break; }
	i=$((i + 1))
done
echo "$i cycles in $(($(date +%s) - t0)) s"
check_eq "200 cycles without an error" "$i/$bad" "200/0"
wait_gone "$dev"
check_eq "no vdimg disk is left" "$(ls /sys/block | grep -c '^vdimg')" 0
check_eq "vdimgctl list is empty" "$("$VDIMGCTL" list -n 2>&1)" ""
done_testing
