#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# bench.sh (`make bench`): fio in one VM boot on the same raw file through several block devices,
# and a table of IOPS/bandwidth with the ratios vdimg/loop and vdimg/qemu-nbd. Ratios, because the
# emulated machine is slow and noisy: only numbers from one run compare.
#
#   bench.sh [--kernel RELEASE|debug|PATH] [--suite steady|first|chain|attach] [--runtime S]
#            [--size MIB] [--contenders "LIST"] [--chain-format FMT] [--repeat N]
#            [--from-console LOG]
#
# Suites: steady (the default, below); first: first writes into empty targets, each job on a
# fresh sparse raw file under loop and a fresh empty image of each format (vdimg_FMT, every
# writable format by default), ratios over loop; chain: a FMT (qcow2) base filled with data under
# empty differencing images, contenders dN = the chain of depth N read-only (d1 d8 d64), random
# and sequential reads and the attach time, ratios over d1; attach: the attach time (read-write,
# fastest of five interleaved rounds of attach + detach) of a 2 TiB empty target, a sparse raw
# file under loop and an empty dynamic image of each writable format made by vdimgctl create
# (vdimg_FMT; VHD and VMDK at their 2040 GiB maximum), ratios over loop, and the userspace share
# (attach --dry-run). --repeat N runs every job N times on each contender (the rounds interleave
# too) and reports the median. --from-console LOG prints the table of an earlier run's console log
# (build/vm/RELEASE/bench-console.log) again, without a VM.
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
	REPEAT=${BENCH_REPEAT:-1}
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

	SUITE=${BENCH_SUITE:-steady}
	# rounds LIST...: the list REPEAT times over (each job runs on every contender, round by round)
	rounds() {
		local r=0
		while [ $r -lt "$REPEAT" ]; do
			echo "$@"
			r=$((r + 1))
		done
	}
	# uptime_cs: /proc/uptime in hundredths of a second (busybox date has no sub-second format)
	uptime_cs() { awk '{ split($1, t, "."); print t[1] * 100 + t[2] }' /proc/uptime; }
	# fio_line NAME DEV RW BS QD ARGS...: one fio run, prints "IOPS BW(KiB/s)" ("0 0" on failure)
	fio_line() {
		local name=$1 dev=$2 rw=$3 bs=$4 qd=$5 line iops bw
		shift 5
		line=$("$FIO" --name="$name" --filename="$dev" --rw="$rw" --bs="$bs" --iodepth="$qd" \
			--direct=1 --ioengine=libaio --output-format=terse "$@" 2>/tmp/fio.err | tail -n1)
		case $rw in
		*read) iops=$(echo "$line" | cut -d';' -f8); bw=$(echo "$line" | cut -d';' -f7) ;;
		*) iops=$(echo "$line" | cut -d';' -f49); bw=$(echo "$line" | cut -d';' -f48) ;;
		esac
		[ -n "$iops" ] || { iops=0; bw=0; echo "# $name on $dev: $(head -n 2 /tmp/fio.err)" >&2; }
		echo "$iops $bw"
	}

	if [ "$SUITE" = first ]; then
		# First writes: for every job each contender gets a fresh, empty target (a sparse raw
		# file under loop, an empty dynamic image under vdimg), written once with an fsync at
		# the end: 1M sequential over the whole size, 4k random over an eighth of it (no block
		# twice). Contenders: loop and vdimg_FMT.
		echo "==== VMTEST-BENCH-BEGIN ===="
		echo "# kernel $(uname -r), first writes into empty targets of ${SIZE_MIB} MiB on ext4 (virtio), median of $REPEAT"
		[ -e /dev/vdimg-control ] || modprobe vdimg
		t=$dir/first.img
		for j in write-1m-qd8:write:1M:8:$SIZE_MIB randwrite-4k-qd32:randwrite:4k:32:$((SIZE_MIB / 8)); do
			IFS=: read -r name rw bs qd mib <<EOT
$j
EOT
			for c in $(rounds $CONTENDERS); do
				rm -f "$t"
				case $c in
				loop) truncate -s "${SIZE_MIB}M" "$t" && DEV=$(losetup -f --show --direct-io=on "$t") ;;
				vdimg_*) "$VDIMGCTL" create -t "${c#vdimg_}" -s "${SIZE_MIB}M" "$t" >/dev/null &&
					DEV=$("$VDIMGCTL" attach -f --show --direct-io=on "$t") ;;
				*) false ;;
				esac || { echo "# $c: setup failed"; continue; }
				set -- $(fio_line "$name" "$DEV" "$rw" "$bs" "$qd" --size="${SIZE_MIB}M" \
					--io_size="${mib}M" --end_fsync=1)
				echo "BENCH $c $name $1 $2"
				case $c in loop) losetup -d "$DEV" ;; *) "$VDIMGCTL" detach "$DEV" ;; esac
			done
		done
		rm -f "$t"
		echo "==== VMTEST-BENCH-END ===="
		exit 0
	fi

	# now_us: microseconds since boot, from /proc/timer_list ("now at N nsecs"), or /proc/uptime's
	# hundredths when that is missing (attach times of a few milliseconds need the finer clock)
	now_us() {
		if [ -r /proc/timer_list ]; then
			awk '/^now at [0-9]+ nsecs/ { printf "%.0f\n", $3 / 1000; exit }' /proc/timer_list
		else
			awk '{ printf "%.0f\n", $1 * 1000000 }' /proc/uptime
		fi
	}

	if [ "$SUITE" = attach ]; then
		# Attach time of large empty targets: 2 TiB (2040 GiB for VHD and VMDK, their largest),
		# read-write with direct I/O as the other suites attach, each attach then detached. All
		# targets are made first, then five rounds run every contender in turn (so a slow phase
		# of the host hits all alike); the fastest of the five counts. For vdimg_FMT also
		# attach --dry-run, the userspace share. Contenders: loop and vdimg_FMT.
		rounds=5
		echo "==== VMTEST-BENCH-BEGIN ===="
		echo "# kernel $(uname -r), attach time of 2 TiB empty targets on ext4 (virtio), fastest of $rounds interleaved"
		[ -e /dev/vdimg-control ] || modprobe vdimg
		# what reading the clock twice costs (fork, exec, awk): taken off every time
		zero=
		for k in 1 2 3; do
			t0=$(now_us)
			t1=$(now_us)
			[ -z "$zero" ] || [ $((t1 - t0)) -lt "$zero" ] && zero=$((t1 - t0))
		done
		echo "# clock overhead ${zero} us, subtracted"
		ready=
		for c in $CONTENDERS; do
			t=$dir/attach.$c
			rm -f "$t"
			case $c in
			vdimg_vhd|vdimg_vmdk) sz=2040G ;;
			*) sz=2T ;;
			esac
			case $c in
			loop) truncate -s "$sz" "$t" ;;
			vdimg_*) "$VDIMGCTL" create -t "${c#vdimg_}" -s "$sz" "$t" >/dev/null ;;
			*) false ;;
			esac || { echo "# $c: the $sz target could not be made"; continue; }
			ready="$ready $c"
			eval "att_$c= dry_$c="
		done
		sync
		k=0
		while [ $k -lt $rounds ]; do
			k=$((k + 1))
			for c in $ready; do
				t=$dir/attach.$c
				t0=$(now_us)
				case $c in
				loop) DEV=$(losetup -f --show --direct-io=on "$t") ;;
				*) DEV=$("$VDIMGCTL" attach -f --show --direct-io=on "$t") ;;
				esac || { echo "# $c: attach failed"; continue; }
				t1=$(now_us)
				case $c in loop) losetup -d "$DEV" ;; *) "$VDIMGCTL" detach "$DEV" ;; esac
				eval "best=\$att_$c"
				[ -z "$best" ] || [ $((t1 - t0)) -lt "$best" ] && eval "att_$c=$((t1 - t0))"
				[ "$c" = loop ] && continue
				t0=$(now_us)
				"$VDIMGCTL" attach --dry-run "$t" >/dev/null || continue
				t1=$(now_us)
				eval "best=\$dry_$c"
				[ -z "$best" ] || [ $((t1 - t0)) -lt "$best" ] && eval "dry_$c=$((t1 - t0))"
			done
		done
		for c in $ready; do
			eval "a=\$att_$c d=\$dry_$c"
			[ -n "$a" ] && echo "ATTACH_US $c $((a - zero))"
			[ -n "$d" ] && echo "DRYRUN_US $c $((d - zero))"
			rm -f "$dir/attach.$c"
		done
		echo "==== VMTEST-BENCH-END ===="
		exit 0
	fi

	if [ "$SUITE" = chain ]; then
		# Chains: data in a base image of format BENCH_CHAIN_FORMAT (default qcow2) under empty
		# differencing images made by vdimgctl create --parent; contenders dN are the chain of
		# depth N attached read-only (default d1 d8 d64). Also the attach time of each (the
		# fastest of three attach + detach).
		fmt=${BENCH_CHAIN_FORMAT:-qcow2}
		[ -e /dev/vdimg-control ] || modprobe vdimg
		max=1
		for c in $CONTENDERS; do [ "${c#d}" -gt "$max" ] && max=${c#d}; done
		rm -f "$dir"/chain.*
		"$VDIMGCTL" create -t "$fmt" -s "${SIZE_MIB}M" "$dir/chain.0.$fmt" >/dev/null &&
			DEV=$("$VDIMGCTL" attach -f --show --direct-io=on "$dir/chain.0.$fmt") &&
			"$FIO" --name=fill --filename="$DEV" --size="${SIZE_MIB}M" --rw=write --bs=1M \
				--direct=1 --ioengine=libaio --iodepth=8 --refill_buffers --end_fsync=1 \
				--output-format=terse >/dev/null &&
			"$VDIMGCTL" detach "$DEV" || echo "# the base could not be made and filled"
		i=1
		while [ $i -lt "$max" ]; do
			"$VDIMGCTL" create -t "$fmt" --parent "$dir/chain.$((i - 1)).$fmt" \
				"$dir/chain.$i.$fmt" >/dev/null || { echo "# overlay $i failed"; break; }
			i=$((i + 1))
		done
		echo "==== VMTEST-BENCH-BEGIN ===="
		echo "# kernel $(uname -r), runtime ${RUNTIME}s, $fmt chains over a ${SIZE_MIB} MiB base on ext4 (virtio), median of $REPEAT"
		ready=
		for c in $CONTENDERS; do
			top=$dir/chain.$((${c#d} - 1)).$fmt
			best=
			for k in 1 2 3; do
				t0=$(uptime_cs)
				DEV=$("$VDIMGCTL" attach -f --show -r --direct-io=on "$top") || break
				t1=$(uptime_cs)
				[ -z "$best" ] || [ $((t1 - t0)) -lt "$best" ] && best=$((t1 - t0))
				[ $k -eq 3 ] || "$VDIMGCTL" detach "$DEV"
			done
			[ -b "$DEV" ] && [ -n "$best" ] || { echo "# $c: attach failed"; continue; }
			echo "ATTACH $c $best"
			eval "DEV_$c=\$DEV"
			ready="$ready $c"
		done
		for j in randread-4k-qd32:randread:4k:32 read-1m-qd8:read:1M:8; do
			IFS=: read -r name rw bs qd <<EOT
$j
EOT
			for c in $(rounds $ready); do
				eval "DEV=\$DEV_$c"
				set -- $(fio_line "$name" "$DEV" "$rw" "$bs" "$qd" --time_based \
					--runtime="$RUNTIME" --ramp_time=1 --size="${SIZE_MIB}M" --norandommap \
					--randrepeat=0)
				echo "BENCH $c $name $1 $2"
			done
		done
		for c in $ready; do
			eval "DEV=\$DEV_$c"
			"$VDIMGCTL" detach "$DEV"
		done
		rm -f "$dir"/chain.*
		echo "==== VMTEST-BENCH-END ===="
		exit 0
	fi

	echo "bench: filling $SIZE_MIB MiB at $file"
	"$FIO" --name=fill --filename="$file" --size="${SIZE_MIB}M" --rw=write --bs=1M --direct=1 \
		--ioengine=libaio --iodepth=8 --refill_buffers --output-format=terse >/dev/null ||
		echo "bench: fill failed"
	sync
	echo "==== VMTEST-BENCH-BEGIN ===="
	echo "# kernel $(uname -r), runtime ${RUNTIME}s, file ${SIZE_MIB} MiB on ext4 (virtio), median of $REPEAT"
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
		for c in $(rounds $ready); do
			eval "DEV=\$DEV_$c"
			set -- $(fio_line "$name" "$DEV" "$rw" "$bs" "$qd" --time_based \
				--runtime="$RUNTIME" --ramp_time=1 --size="${SIZE_MIB}M" --norandommap \
				--randrepeat=0)
			echo "BENCH $c $name $1 $2"
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

kernel= runtime=10 size=512 contenders= suite=steady chain_format=qcow2 repeat=1 console=
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=$2; shift ;;
	--suite) suite=$2; shift ;;
	--chain-format) chain_format=$2; shift ;;
	--runtime) runtime=$2; shift ;;
	--size) size=$2; shift ;;
	--contenders) contenders=$2; shift ;;
	--repeat) repeat=$2; shift ;;
	--from-console) console=$2; shift ;;
	-h|--help) sed -n '4,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
case $suite in
steady) bases="loop nbd"; : "${contenders:=loop vdimg nbd}" ;;
first) bases=loop; : "${contenders:=loop vdimg_qcow2 vdimg_qed vdimg_vdi vdimg_vhd vdimg_vhdx vdimg_vmdk vdimg_parallels}" ;;
chain) bases=d1; : "${contenders:=d1 d8 d64}" ;;
attach) bases=loop; : "${contenders:=loop vdimg_qcow2 vdimg_qed vdimg_vdi vdimg_vhd vdimg_vhdx vdimg_vmdk vdimg_parallels}" ;;
*) echo "bench.sh: unknown suite $suite (steady, first, chain, attach)" >&2; exit 2 ;;
esac
if [ -z "$console" ]; then
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
		BENCH_SIZE_MIB="$size" "BENCH_CONTENDERS='$contenders'" BENCH_SUITE="$suite" \
		BENCH_CHAIN_FORMAT="$chain_format" BENCH_REPEAT="$repeat" || exit 1
	njobs=$((6 * repeat))
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
	console=$K_OUT/bench-console.log
fi

sed -n '/VMTEST-BENCH-BEGIN/,/VMTEST-BENCH-END/p' "$console" | tr -d '\r' |
awk -v contenders="$contenders" -v baselist="$bases" -v suite="$suite" '
	/^# / { print; next }
	$1 == "ATTACH" { att[$2] = $3 / 100; natt++; next }
	$1 == "ATTACH_US" { att[$2] = $3 / 1000000; natt++; next }
	$1 == "DRYRUN_US" { dry[$2] = $3 / 1000000; ndry++; next }
	$1 == "BENCH" {
		c = $2; j = $3; n = ++nrun[c, j]; iops_r[c, j, n] = $4; bw_r[c, j, n] = $5
		if (!(j in seen)) { seen[j] = 1; jobs[++nj] = j }
	}
	# median of the rounds (the lower middle one of an even count)
	function median(a, c, j, n,    i, k, t, v) {
		for (i = 1; i <= n; i++) v[i] = a[c, j, i]
		for (i = 2; i <= n; i++) for (k = i; k > 1 && v[k - 1] > v[k]; k--) { t = v[k]; v[k] = v[k - 1]; v[k - 1] = t }
		return v[int((n + 1) / 2)]
	}
	END {
		for (cj in nrun) { split(cj, cjs, SUBSEP); iops[cjs[1], cjs[2]] = median(iops_r, cjs[1], cjs[2], nrun[cj]); bw[cjs[1], cjs[2]] = median(bw_r, cjs[1], cjs[2], nrun[cj]) }
		nc = split(contenders, cs, " ")
		nb = 0
		split(baselist, bl, " ")
		for (i = 1; i <= nc; i++) for (k in bl) if (cs[i] == bl[k]) { isbase[cs[i]] = 1; bases[++nb] = cs[i] }
		hdr = sprintf("%-18s %-6s", "job", "unit")
		for (i = 1; i <= nc; i++) hdr = hdr sprintf(" %10s", cs[i])
		for (i = 1; i <= nc; i++) if (!(cs[i] in isbase)) {
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
			for (i = 1; i <= nc; i++) if (!(cs[i] in isbase)) {
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
		if (natt) {	# attach times (seconds) in the same shape
			line = sprintf("%-18s %-6s", suite == "attach" ? "attach-rw" : "attach-ro", "s")
			for (i = 1; i <= nc; i++)
				line = line sprintf(" %10s", (cs[i] in att) ? sprintf("%.3f", att[cs[i]]) : "-")
			for (i = 1; i <= nc; i++) if (!(cs[i] in isbase)) for (b = 1; b <= nb; b++) {
				r = "-"
				if ((cs[i] in att) && att[bases[b]] > 0)
					r = sprintf("%.2f", att[cs[i]] / att[bases[b]])
				line = line sprintf(" %12s", r)
			}
			print line
		}
		if (ndry) {	# attach --dry-run: the userspace share of each attach time
			line = sprintf("%-18s %-6s", "dry-run", "s")
			for (i = 1; i <= nc; i++)
				line = line sprintf(" %10s", (cs[i] in dry) ? sprintf("%.3f", dry[cs[i]]) : "-")
			print line
		}
	}'
