#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# bench-convert.sh (`make bench-convert`): vdimgctl convert against qemu-img convert on this host
# (no VM, no module), for a large mostly-allocated image, as issue 18 asks. A benchmark, not a
# test: it prints a table of seconds and the ratio qemu-img / vdimgctl (above 1: vdimgctl is
# faster), and checks only that both outputs read the same as the source (qemu-img compare).
#
#   bench-convert.sh [--size GIB] [--fill PERCENT] [--formats "LIST"] [--repeat N] [--dir DIR]
#
# The source is a qcow2 image of --size GiB (default 4) whose first --fill percent (default 90)
# hold random data in 1 MiB pieces, every tenth piece left unallocated and every twentieth
# written as zeros (a mostly-allocated image as a guest leaves it). Each target format (default
# "raw qcow2 vdi vhd vhdx qed vmdk") is made by both tools in turn, --repeat times (default 3),
# interleaved (the order alternating); the table shows the best (shortest) and the median wall time
# of each, and the ratio of each. The best run is the headline: on a virtual machine whose free
# memory goes back to the host (free page reporting), every page the output takes may first be
# faulted in by the host, which adds seconds of system time to some runs of either tool and
# little else varies between runs (see Documentation/admin-guide/performance.rst). qemu-img runs with its defaults
# (-m 8 coroutines, no -W), vdimgctl with its own (worker threads, one per CPU). Everything lives
# in --dir (default: a new directory under /var/tmp; give a tmpfs to leave the disk out), which
# is removed at the end.
set -euo pipefail

SIZE=4 FILL=90 REPEAT=3 DIR= FORMATS="raw qcow2 vdi vhd vhdx qed vmdk"
while [ $# -gt 0 ]; do
	case $1 in
	--size) SIZE=$2; shift 2 ;;
	--fill) FILL=$2; shift 2 ;;
	--formats) FORMATS=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--dir) DIR=$2; shift 2 ;;
	*) echo "usage: $0 [--size GIB] [--fill PERCENT] [--formats LIST] [--repeat N] [--dir DIR]" >&2
	   exit 2 ;;
	esac
done
HERE=$(cd "$(dirname "$0")/.." && pwd)
V=${VDIMGCTL:-$HERE/tools/vdimgctl/vdimgctl}
command -v qemu-img >/dev/null || { echo "bench-convert: qemu-img is missing" >&2; exit 2; }
[ -x "$V" ] || { echo "bench-convert: $V is missing (make)" >&2; exit 2; }
W=$(mktemp -d "${DIR:-/var/tmp}/vdimg-bench-convert.XXXXXX")
trap 'rm -rf "$W"' EXIT

# the source: written by qemu-io in one run of commands (a script, not one process per piece)
qemu-img create -q -f qcow2 "$W/src.qcow2" "${SIZE}G"
pieces=$((SIZE * 1024 * FILL / 100))
head -c $((1 << 20)) /dev/urandom >"$W/piece"
python3 - "$pieces" >"$W/cmds" <<'EOF'
import sys
for i in range(int(sys.argv[1])):
    if i % 10 == 9:
        continue
    if i % 20 == 4:
        print(f"write -z {i}M 1M")
    else:
        print(f"write -P {(i * 7) % 251 + 1} {i}M 1M")
EOF
qemu-io -f qcow2 "$W/src.qcow2" <"$W/cmds" >/dev/null
echo "# source: ${SIZE} GiB qcow2, $(du -k "$W/src.qcow2" | cut -f1) KiB allocated; $(nproc) CPUs, $(uname -r)"

qfmt() { [ "$1" = vhd ] && echo vpc || echo "$1"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
best() { sort -n | head -n1; }
ratio() { awk -v q="$1" -v v="$2" 'BEGIN { printf "%.2fx", q / v }'; }
now() { date +%s.%N; }

printf '%-8s %10s %10s %7s   %10s %10s %7s\n' format "qemu best" "vdimg best" ratio \
	"qemu med" "vdimg med" ratio
for f in $FORMATS; do
	: >"$W/q.t"
	: >"$W/v.t"
	for r in $(seq "$REPEAT"); do
		# the order alternates: the first run after the last round's files went may pay for it
		for tool in $([ $((r % 2)) -eq 1 ] && echo "q v" || echo "v q"); do
			rm -f "$W/$tool.out"
			sync
			t0=$(now)
			if [ "$tool" = q ]; then
				qemu-img convert -f qcow2 -O "$(qfmt "$f")" "$W/src.qcow2" "$W/q.out"
			else
				"$V" convert -O "$f" "$W/src.qcow2" "$W/v.out" >/dev/null
			fi
			sync
			t1=$(now)
			awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }' >>"$W/$tool.t"
		done
	done
	qemu-img compare -q -f qcow2 -F "$(qfmt "$f")" "$W/src.qcow2" "$W/v.out" ||
		{ echo "bench-convert: vdimgctl's $f output differs from the source" >&2; exit 1; }
	qemu-img compare -q -f qcow2 -F "$(qfmt "$f")" "$W/src.qcow2" "$W/q.out" ||
		{ echo "bench-convert: qemu-img's $f output differs from the source" >&2; exit 1; }
	qb=$(best <"$W/q.t") vb=$(best <"$W/v.t")
	qm=$(median <"$W/q.t") vm=$(median <"$W/v.t")
	printf '%-8s %10.2f %10.2f %7s   %10.2f %10.2f %7s\n' "$f" "$qb" "$vb" "$(ratio "$qb" "$vb")" \
		"$qm" "$vm" "$(ratio "$qm" "$vm")"
done
