#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# bench.sh (`make bench`): fio in one VM boot on the same raw file through several block devices,
# and a table of IOPS/bandwidth with the ratios vdimg/loop and vdimg/qemu-nbd. Ratios, because the
# emulated machine is slow and noisy: only numbers from one run compare.
#
#   bench.sh [--kernel RELEASE|debug|PATH] [--runtime S] [--size MIB] [--contenders "LIST"]
#
# Contenders (default "loop vdimg nbd"): loop = losetup --direct-io=on, vdimg = vdimgctl attach
# -t raw --direct-io=on, nbd = qemu-nbd -c /dev/nbd0 --cache=none -f raw; all over one file on the
# ext4 scratch disk. vdimg_vhd, vdimg_vdi, vdimg_vhdx, vdimg_qcow2, vdimg_qed: a dynamic image of
# that format, fully written through vdimg first; nbd_qcow2, nbd_qed: qemu-nbd serving that same
# fully written image (a copy: made the same way when its vdimg contender did not run first). All
# contenders are set up first and the jobs interleave (each job on every contender in turn). A new
# contender is a pair of functions setup_NAME/teardown_NAME below plus its name in the list; every
# contender whose name starts with "vdimg" gets ratios over the baselines (loop, nbd), and
# vdimg_FMT also over nbd_FMT when that ran.
#
# The same file runs in the guest as `bench.sh --guest` (busybox ash, started by the VM's /init).

if [ "${1:-}" = --guest ]; then
	# ------------------------------------------------------------------ guest side (ash)
	. /vmtest/lib.sh
	RUNTIME=${BENCH_RUNTIME:-10}
	SIZE_MIB=${BENCH_SIZE_MIB:-512}
	CONTENDERS=${BENCH_CONTENDERS:-loop vdimg nbd}
	# name:rw:bs:iodepth
	JOBS="randread-4k-qd1:randread:4k:1 randread-4k-qd32:randread:4k:32
	      randwrite-4k-qd1:randwrite:4k:1 randwrite-4k-qd32:randwrite:4k:32
	      read-1m-qd8:read:1M:8 write-1m-qd8:write:1M:8"
	dir=/scratch/bench
	file=$dir/raw.img
	mkdir -p "$dir"

	setup_loop() { DEV=$(losetup -f --show --direct-io=on "$file"); }
	teardown_loop() { losetup -d "$DEV"; }
	setup_vdimg() {
		[ -e /dev/vdimg-control ] || modprobe vdimg || return 1
		# --no-lock: loop and qemu-nbd share the file by design here (vdimgctl refuses a file a
		# writable loop device uses, and qemu-nbd one that vdimgctl has locked)
		DEV=$("$VDIMGCTL" attach -f --show -t raw --direct-io=on --no-lock "$file")
	}
	teardown_vdimg() { "$VDIMGCTL" detach "$DEV"; }
	# nbd_connect FMT FILE: qemu-nbd on the first free /dev/nbdN (contenders are all set up at once)
	nbd_connect() {
		local i=0 n=0
		while [ $n -lt 16 ] && [ "$(cat /sys/block/nbd$n/size 2>/dev/null)" != 0 ]; do
			n=$((n + 1))
		done
		DEV=/dev/nbd$n
		"$QEMU_NBD" -c "$DEV" --cache=none --aio=native -f "$1" "$2" || return 1
		while [ "$(blockdev --getsize64 "$DEV" 2>/dev/null || echo 0)" = 0 ] && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
	}
	setup_nbd() { nbd_connect raw "$file"; }
	teardown_nbd() { "$QEMU_NBD" -d "$DEV" >/dev/null; }
	# vdimg_vhd, vdimg_vdi, vdimg_vhdx, vdimg_qcow2: a dynamic image made by vdimgctl and fully
	# allocated through the device before the jobs (so the jobs measure mapped I/O, not allocation),
	# then flushed (end_fsync) so the file is a complete image for nbd_FMT's copy
	setup_fmt() {
		[ -e /dev/vdimg-control ] || modprobe vdimg || return 1
		rm -f "$dir/bench.$1"
		"$VDIMGCTL" create -t "$1" -s "${SIZE_MIB}M" "$dir/bench.$1" || return 1
		DEV=$("$VDIMGCTL" attach -f --show --direct-io=on "$dir/bench.$1") || return 1
		"$FIO" --name=alloc --filename="$DEV" --size="${SIZE_MIB}M" --rw=write --bs=1M \
			--direct=1 --ioengine=libaio --iodepth=8 --refill_buffers --end_fsync=1 \
			--output-format=terse >/dev/null
	}
	teardown_fmt() { "$VDIMGCTL" detach "$DEV"; }
	# nbd_FMT: qemu-nbd on a byte-identical copy of the image vdimg_FMT filled (same layout; a
	# copy, because both are attached for the whole run), or of one made and filled the same way
	setup_nbd_fmt() {
		if [ ! -e "$dir/bench.$1" ]; then
			setup_fmt "$1" || return 1
			teardown_fmt "$1" || return 1
		fi
		cp "$dir/bench.$1" "$dir/nbd.$1" || return 1
		nbd_connect "$1" "$dir/nbd.$1"
	}
	setup_vdimg_vhd() { setup_fmt vhd; }
	teardown_vdimg_vhd() { teardown_fmt vhd; }
	setup_vdimg_vdi() { setup_fmt vdi; }
	teardown_vdimg_vdi() { teardown_fmt vdi; }
	setup_vdimg_vhdx() { setup_fmt vhdx; }
	teardown_vdimg_vhdx() { teardown_fmt vhdx; }
	setup_vdimg_qcow2() { setup_fmt qcow2; }
	teardown_vdimg_qcow2() { teardown_fmt qcow2; }
	setup_vdimg_qed() { setup_fmt qed; }
	teardown_vdimg_qed() { teardown_fmt qed; }
	setup_nbd_qcow2() { setup_nbd_fmt qcow2; }
	teardown_nbd_qcow2() { teardown_nbd; }
	setup_nbd_qed() { setup_nbd_fmt qed; }
	teardown_nbd_qed() { teardown_nbd; }

	echo "bench: filling $SIZE_MIB MiB at $file"
	"$FIO" --name=fill --filename="$file" --size="${SIZE_MIB}M" --rw=write --bs=1M --direct=1 \
		--ioengine=libaio --iodepth=8 --refill_buffers --output-format=terse >/dev/null ||
		echo "bench: fill failed"
	sync
	echo "==== VMTEST-BENCH-BEGIN ===="
	echo "# kernel $(uname -r), runtime ${RUNTIME}s, file ${SIZE_MIB} MiB on ext4 (virtio)"
	# every contender is set up first and the jobs interleave (job by job, each contender in
	# turn), so that a slow phase of the host (other VMs) hits every contender alike
	ready=
	for c in $CONTENDERS; do
		if ! setup_$c >/tmp/setup.log 2>&1 || [ ! -b "$DEV" ]; then
			echo "# $c: setup failed: $(tail -n 3 /tmp/setup.log | tr '\n' ' ')"
			continue
		fi
		eval "DEV_$c=\$DEV"
		ready="$ready $c"
	done
	for j in $JOBS; do
		IFS=: read -r name rw bs qd <<EOT
$j
EOT
		for c in $ready; do
			eval "DEV=\$DEV_$c"
			line=$("$FIO" --name="$name" --filename="$DEV" --rw="$rw" --bs="$bs" \
				--iodepth="$qd" --direct=1 --ioengine=libaio --time_based \
				--runtime="$RUNTIME" --ramp_time=1 --size="${SIZE_MIB}M" --norandommap \
				--randrepeat=0 --output-format=terse 2>/tmp/fio.err | tail -n1)
			case $rw in
			*read) iops=$(echo "$line" | cut -d';' -f8); bw=$(echo "$line" | cut -d';' -f7) ;;
			*) iops=$(echo "$line" | cut -d';' -f49); bw=$(echo "$line" | cut -d';' -f48) ;;
			esac
			[ -n "$iops" ] || { iops=0; bw=0; echo "# $c $name: $(head -n 2 /tmp/fio.err)"; }
			echo "BENCH $c $name $iops $bw"
		done
	done
	for c in $ready; do
		eval "DEV=\$DEV_$c"
		teardown_$c >/dev/null 2>&1
	done
	rm -f "$dir"/bench.* "$dir"/nbd.*
	echo "==== VMTEST-BENCH-END ===="
	exit 0
fi

# ------------------------------------------------------------------ host side (bash)
set -uo pipefail
. "$(dirname "$0")/common.sh"

kernel= runtime=10 size=512 contenders="loop vdimg nbd"
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=$2; shift ;;
	--runtime) runtime=$2; shift ;;
	--size) size=$2; shift ;;
	--contenders) contenders=$2; shift ;;
	-h|--help) sed -n '4,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
if [ -z "$kernel" ]; then
	kernel=$(vm_default_kernels | grep '^6\.12\.' | tail -n1)
	[ -n "$kernel" ] || { echo "bench.sh: no 6.12 kernel in /boot" >&2; exit 1; }
fi
vm_resolve_kernel "$kernel" || exit 1
vm_build_userspace
vm_build_kernel_side || exit 1
[ -n "$K_MODULE" ] || { cat "$K_MODULE_LOG" >&2; echo "bench.sh: vdimg.ko does not build" >&2; exit 1; }
[ -n "$VM_VDIMGCTL" ] || { echo "bench.sh: vdimgctl does not build" >&2; exit 1; }
vm_make_scratch "$K_RUN/scratch.img" VMTEST_MODE=bench BENCH_RUNTIME="$runtime" \
	BENCH_SIZE_MIB="$size" "BENCH_CONTENDERS='$contenders'" || exit 1
njobs=6
ncont=$(echo $contenders | wc -w)
tmo=$((ncont * njobs * (runtime + 15) + 600))
vm_log "$K_RELEASE: benchmark, about $((ncont * njobs * (runtime + 2) / 60 + 1)) min (console: $K_RUN/bench-console.log)"
vm_boot "$K_RUN/bench-console.log" "$tmo"
rc=$?
cp "$K_RUN/bench-console.log" "$K_OUT/bench-console.log"
rm -rf "$K_RUN"
if ! grep -q 'VMTEST-BENCH-END' "$K_OUT/bench-console.log"; then
	tail -n 40 "$K_OUT/bench-console.log" >&2
	echo "bench.sh: the benchmark did not finish (qemu status $rc)" >&2
	exit 1
fi

sed -n '/VMTEST-BENCH-BEGIN/,/VMTEST-BENCH-END/p' "$K_OUT/bench-console.log" | tr -d '\r' |
awk -v contenders="$contenders" '
	/^# / { print; next }
	$1 == "BENCH" {
		c = $2; j = $3; iops[c, j] = $4; bw[c, j] = $5
		if (!(j in seen)) { seen[j] = 1; jobs[++nj] = j }
	}
	END {
		nc = split(contenders, cs, " ")
		nb = 0
		for (i = 1; i <= nc; i++) if (cs[i] == "loop" || cs[i] == "nbd") bases[++nb] = cs[i]
		hdr = sprintf("%-18s %-6s", "job", "unit")
		for (i = 1; i <= nc; i++) hdr = hdr sprintf(" %10s", cs[i])
		for (i = 1; i <= nc; i++) if (cs[i] ~ /^vdimg/) {
			for (b = 1; b <= nb; b++) hdr = hdr sprintf(" %12s", cs[i] "/" bases[b])
			peer[cs[i]] = ""
			p = cs[i]; sub(/^vdimg_/, "nbd_", p)
			for (k = 1; k <= nc; k++) if (cs[k] == p && p != cs[i]) peer[cs[i]] = p
			if (peer[cs[i]] != "") hdr = hdr sprintf(" %12s", cs[i] "/" p)
		}
		print hdr
		for (k = 1; k <= nj; k++) {
			j = jobs[k]
			seq = (j ~ /-1m-/)
			line = sprintf("%-18s %-6s", j, seq ? "MiB/s" : "IOPS")
			for (i = 1; i <= nc; i++) {
				have[cs[i]] = ((cs[i], j) in iops)
				val[cs[i]] = !have[cs[i]] ? 0 : seq ? bw[cs[i], j] / 1024 : iops[cs[i], j]
				line = line sprintf(" %10s", have[cs[i]] ? sprintf("%.0f", val[cs[i]]) : "-")
			}
			for (i = 1; i <= nc; i++) if (cs[i] ~ /^vdimg/) {
				for (b = 1; b <= nb; b++) {
					r = "-"
					if (have[cs[i]] && have[bases[b]] && val[bases[b]] > 0)
						r = sprintf("%.2f", val[cs[i]] / val[bases[b]])
					line = line sprintf(" %12s", r)
				}
				p = peer[cs[i]]
				if (p != "") {
					r = "-"
					if (have[cs[i]] && have[p] && val[p] > 0)
						r = sprintf("%.2f", val[cs[i]] / val[p])
					line = line sprintf(" %12s", r)
				}
			}
			print line
		}
	}'
