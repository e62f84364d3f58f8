# SPDX-License-Identifier: GPL-2.0
#
# Host side of the VM harness, sourced by run.sh, bench.sh and demo.sh: finds the kernels, builds
# the module, the tool, the ABI test and the initramfs for one kernel, makes the scratch disk and
# boots qemu (TCG only: -enable-kvm hangs on these hosts).

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_TOP=$(cd "$VM_DIR/../.." && pwd)
VM_BUILD=${VM_BUILD:-$VM_TOP/build/vm}
# the sample images (selftests/samples.sh: fetched into a cache, or ../shared/samples beside the tree)
VM_SAMPLES_SRC=${VM_SAMPLES_SRC:-$("$VM_TOP/selftests/samples.sh" --dir)}
VM_MEM=${VM_MEM:-2048}
VM_SMP=${VM_SMP:-2}
VM_SCRATCH_SIZE=${VM_SCRATCH_SIZE:-8G}

vm_log() { echo "vm: $*" >&2; }

# vm_debug_dir: the debug kernel's output directory (bzImage, lib/modules/RELEASE, build/ as
# KDIR), or nothing when it has not been built. VDIMG_DEBUG_KERNEL_DIR overrides; otherwise
# debug-kernel.sh says where its cache for the current configuration is (--check, --print-dir).
vm_debug_dir() {
	local d=${VDIMG_DEBUG_KERNEL_DIR:-}
	if [ -z "$d" ] && [ -x "$VM_DIR/debug-kernel.sh" ] &&
	   "$VM_DIR/debug-kernel.sh" --check >/dev/null 2>&1; then
		d=$("$VM_DIR/debug-kernel.sh" --print-dir 2>/dev/null | tail -n1)
	fi
	if [ -n "$d" ] && [ -f "$d/bzImage" ] && [ -d "$d/lib/modules" ]; then
		echo "$d"
		return 0
	fi
	return 1
}

# vm_default_kernels: the newest Debian 6.1 and 6.12 kernels in /boot, then "debug" when built
vm_default_kernels() {
	local series img
	for series in 6.1 6.12; do
		img=$(ls /boot/vmlinuz-"$series".*-amd64 /boot/vmlinuz-"$series".*+deb*-amd64 2>/dev/null |
		      sort -uV | tail -n1)
		[ -n "$img" ] && echo "${img#/boot/vmlinuz-}"
	done
	vm_debug_dir >/dev/null && echo debug
	return 0
}

# vm_image_release BZIMAGE: the release string a bzImage carries (setup header field
# kernel_version at 0x20e: offset of the version string minus 0x200)
vm_image_release() {
	local off
	off=$(od -An -tu2 -j 526 -N 2 "$1" 2>/dev/null | tr -d ' ')
	[ -n "$off" ] && [ "$off" -gt 0 ] || return 0
	dd if="$1" bs=1 skip=$((off + 512)) count=128 status=none 2>/dev/null | tr '\0' '\n' |
		head -n1 | cut -d' ' -f1
}

# vm_resolve_kernel SPEC: SPEC is a release, "debug", a kernel image path or a debug output dir.
# Sets K_IMAGE, K_RELEASE, K_KDIR (may be empty), K_MODBASE (holds lib/modules/K_RELEASE).
vm_resolve_kernel() {
	local spec=$1 d
	K_IMAGE= K_RELEASE= K_KDIR= K_MODBASE=/
	if [ "$spec" = debug ] || { [ -d "$spec" ] && [ -f "$spec/bzImage" ]; }; then
		if [ "$spec" = debug ]; then
			d=$(vm_debug_dir) || { vm_log "the debug kernel has not been built"; return 1; }
		else
			d=$(cd "$spec" && pwd)
		fi
		K_IMAGE=$d/bzImage
		K_MODBASE=$d
		K_RELEASE=$(ls "$d/lib/modules" | head -n1)
		for k in "$d/kdir" "$d/build" "$d/lib/modules/$K_RELEASE/build" "$d/linux"; do
			if [ -f "$k/Makefile" ] && [ -f "$k/Module.symvers" ]; then
				K_KDIR=$k
				break
			fi
		done
	elif [ -f "$spec" ]; then
		K_IMAGE=$spec
		K_RELEASE=$(vm_image_release "$spec")
	else
		K_IMAGE=/boot/vmlinuz-$spec
		K_RELEASE=$spec
	fi
	[ -f "$K_IMAGE" ] || { vm_log "$K_IMAGE: no such kernel image"; return 1; }
	[ -n "$K_RELEASE" ] || { vm_log "$K_IMAGE: cannot tell its release"; return 1; }
	if [ -z "$K_KDIR" ]; then
		for k in "/usr/src/linux-headers-$K_RELEASE" "/lib/modules/$K_RELEASE/build"; do
			if [ -f "$k/Makefile" ]; then
				K_KDIR=$k
				break
			fi
		done
	fi
	[ -d "$K_MODBASE/lib/modules/$K_RELEASE" ] ||
		{ vm_log "$K_MODBASE/lib/modules/$K_RELEASE: no modules for $K_RELEASE"; return 1; }
}

# vm_build_userspace: vdimgctl (make tools) and the static ABI test; sets VM_VDIMGCTL, VM_ABI_TEST
# (empty when they do not build: the tests that need them skip, and the errors are in
# $VM_BUILD/tools.log and $VM_BUILD/abi_test.log)
vm_build_userspace() {
	mkdir -p "$VM_BUILD"
	VM_VDIMGCTL= VM_ABI_TEST=
	# several runs may share the tree: one build at a time
	exec 8>"$VM_BUILD/.userspace.lock"
	flock 8
	if make -C "$VM_TOP" tools >"$VM_BUILD/tools.log" 2>&1 && [ -x "$VM_TOP/tools/vdimgctl/vdimgctl" ]; then
		VM_VDIMGCTL=$VM_TOP/tools/vdimgctl/vdimgctl
	else
		vm_log "vdimgctl does not build (see $VM_BUILD/tools.log)"
	fi
	if gcc -static -O2 -Wall -Wextra -Werror -I"$VM_TOP/include" -o "$VM_BUILD/abi_test.tmp" \
		"$VM_DIR/abi_test.c" >"$VM_BUILD/abi_test.log" 2>&1; then
		mv "$VM_BUILD/abi_test.tmp" "$VM_BUILD/abi_test"
		VM_ABI_TEST=$VM_BUILD/abi_test
	else
		vm_log "abi_test does not build (see $VM_BUILD/abi_test.log)"
	fi
	# the test helpers (tests/340-log-writes.sh); a missing one makes its test skip
	VM_PROGS=()
	local p
	for p in replay-log lw-work; do
		if gcc -static -O2 -Wall -Wextra -Werror -o "$VM_BUILD/$p.tmp" "$VM_DIR/$p.c" \
			>"$VM_BUILD/$p.log" 2>&1; then
			mv "$VM_BUILD/$p.tmp" "$VM_BUILD/$p"
			VM_PROGS+=(-x "$VM_BUILD/$p")
		else
			vm_log "$p does not build (see $VM_BUILD/$p.log)"
		fi
	done
	flock -u 8
}

# vm_build_kernel_side: vdimg.ko and the initramfs for the resolved kernel. Sets K_OUT (shared
# build products), K_RUN (this run's directory: initramfs copy, scratch disk, console log; the
# caller removes it), K_INITRD, K_MODULE (empty when the module did not build; then K_MODULE_LOG
# holds the reason).
vm_build_kernel_side() {
	local rc=0
	K_OUT=$VM_BUILD/$K_RELEASE
	K_MODULE= K_MODULE_LOG=$K_OUT/module.log
	mkdir -p "$K_OUT"
	exec 9>"$K_OUT/.lock"
	flock 9
	if [ -z "$K_KDIR" ]; then
		echo "no kernel headers found for $K_RELEASE" >"$K_MODULE_LOG"
	elif "$VM_DIR/build-module.sh" "$K_KDIR" "$K_OUT/module" >"$K_MODULE_LOG" 2>&1; then
		K_MODULE=$K_OUT/module/vdimg.ko
	fi
	K_INITRD=$K_OUT/initramfs.cpio.gz
	"$VM_DIR/mkinitramfs.sh" -r "$K_RELEASE" -b "$K_MODBASE" -o "$K_INITRD" \
		${K_MODULE:+-k "$K_MODULE"} ${VM_VDIMGCTL:+-t "$VM_VDIMGCTL"} \
		${VM_ABI_TEST:+-a "$VM_ABI_TEST"} "${VM_PROGS[@]}" >"$K_OUT/initramfs.log" 2>&1 || rc=1
	if [ $rc -eq 0 ]; then
		# this run's private copy: another run may rebuild the shared one while this VM boots
		K_RUN=$(mktemp -d "$K_OUT/run.XXXXXX")
		cp "$K_INITRD" "$K_RUN/initramfs.cpio.gz"
		K_INITRD=$K_RUN/initramfs.cpio.gz
	else
		cat "$K_OUT/initramfs.log" >&2
	fi
	flock -u 9
	return $rc
}

# vm_samples: the sample images, decompressed once into $VM_BUILD/samples (sparse). What is
# missing is said in $VM_BUILD/samples/MISSING, which the tests quote when they skip.
vm_samples() {
	local f out want
	mkdir -p "$VM_BUILD/samples"
	rm -f "$VM_BUILD/samples/MISSING"
	if ! (cd "$VM_SAMPLES_SRC" 2>/dev/null && sha256sum --quiet -c "$VM_TOP/selftests/samples.sha256" \
		>/dev/null 2>&1); then
		if [ -s "$VM_SAMPLES_SRC/MISSING" ]; then
			cp "$VM_SAMPLES_SRC/MISSING" "$VM_BUILD/samples/MISSING"
		else
			echo "not all in $VM_SAMPLES_SRC: run 'make samples'" >"$VM_BUILD/samples/MISSING"
		fi
		vm_log "sample images: $(cat "$VM_BUILD/samples/MISSING") (the tests that need them skip)"
	fi
	[ -d "$VM_SAMPLES_SRC" ] || return 0
	for f in "$VM_SAMPLES_SRC"/*.bz2; do
		[ -e "$f" ] || continue
		# only files whose sha256 is the listed one
		want=$(awk -v n="$(basename "$f")" '$2 == n { print $1 }' "$VM_TOP/selftests/samples.sha256")
		[ -n "$want" ] && [ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$want" ] || continue
		out=$VM_BUILD/samples/$(basename "$f" .bz2)
		if [ ! -f "$out" ] || [ "$f" -nt "$out" ]; then
			bzcat "$f" | cp --sparse=always /dev/stdin "$out.tmp" && mv "$out.tmp" "$out"
		fi
	done
}

# vm_fixtures: test images only the host can build (no python3 in the guest), made once into
# $VM_BUILD/fixtures, which goes to /scratch/fixtures through VM_SCRATCH_EXTRA: DMG images of a
# partitioned source disk (106-dmg), raw CD track files of an ISO 9660 image (105-cue), malformed
# images and the fuzz corpora (360-hostile-images). A failure leaves the directory out; the tests
# that need it skip.
vm_fixtures() {
	local d=$VM_BUILD/fixtures
	[ -n "${VM_SCRATCH_EXTRA:-}" ] && return 0
	if [ ! -f "$d/dmg/done" ] || [ "$VM_TOP/selftests/host/mkdmg.py" -nt "$d/dmg/done" ] ||
	   [ "$VM_TOP/selftests/vm/common.sh" -nt "$d/dmg/done" ]; then
		rm -rf "$d/dmg"
		mkdir -p "$d/dmg"
		if ! (set -e
		      cd "$d/dmg"
		      head -c $((3 << 20)) /dev/urandom >src.raw
		      dd if=/dev/zero of=src.raw bs=64k seek=8 count=8 conv=notrunc status=none
		      yes 'some compressible text' | head -c $((512 << 10)) |
			dd of=src.raw bs=64k seek=24 conv=notrunc status=none
		      printf 'label: dos\n2048,2048,83\n4096,,83\n' | sfdisk -q src.raw >/dev/null
		      python3 "$VM_TOP/selftests/host/mkdmg.py" --types zlib,adc,raw --ignore src.raw mixed.dmg
		      python3 "$VM_TOP/selftests/host/mkdmg.py" --types adc --chunk 2048 src.raw adc.dmg
		      python3 "$VM_TOP/selftests/host/mkdmg.py" --types bzip2,raw --chunk 2048 \
			      --bz-level 1 src.raw bzip2.dmg
		      python3 "$VM_TOP/selftests/host/mkdmg.py" --types lzma,raw --chunk 2048 \
			      src.raw lzma.dmg
		      python3 "$VM_TOP/selftests/host/mkdmg.py" --types zlib --corrupt master \
			      src.raw master.dmg
		      python3 "$VM_TOP/selftests/host/data/lzfse-src.py" lzfse-src.raw
		      cp "$VM_TOP/selftests/host/data/lzfse-fse.dmg" \
			 "$VM_TOP/selftests/host/data/lzfse-lzvn.dmg" .
		      touch done); then
			vm_log "fixtures: building the DMG images failed (106-dmg skips)"
			rm -rf "$d/dmg"
		fi
	fi
	if [ ! -f "$d/cue/done" ] || [ "$VM_TOP/selftests/host/mkbin.py" -nt "$d/cue/done" ]; then
		rm -rf "$d/cue"
		mkdir -p "$d/cue/tree/sub"
		if ! (set -e
		      cd "$d/cue"
		      seq 1 20000 >tree/numbers.txt
		      head -c 300000 /dev/urandom >tree/sub/random.bin
		      genisoimage -quiet -R -o src.iso tree
		      python3 "$VM_TOP/selftests/host/mkbin.py" MODE1/2352 src.iso m1.bin
		      python3 "$VM_TOP/selftests/host/mkbin.py" MODE2/2352 src.iso m2.bin
		      touch done); then
			vm_log "fixtures: building the CUE/BIN tracks failed (105-cue skips)"
			rm -rf "$d/cue"
		fi
	fi
	# seSparse VMDK (205-vmdk): a child over a monolithicSparse base, and qemu-img's raw view
	if [ ! -f "$d/sesparse/done" ] || [ "$VM_TOP/selftests/host/mksesparse.py" -nt "$d/sesparse/done" ]; then
		rm -rf "$d/sesparse"
		mkdir -p "$d/sesparse"
		if ! (set -e
		      cd "$d/sesparse"
		      qemu-img create -q -f vmdk base.vmdk 24M
		      qemu-io -f vmdk -c 'write -P 0x5e 0 24m' base.vmdk >/dev/null
		      cid=$(head -c 4096 base.vmdk | tr -d '\0' | sed -n 's/^CID=//p')
		      python3 "$VM_TOP/selftests/host/mksesparse.py" se.vmdk $((24 << 20)) --seed 7 \
			      --parent base.vmdk --parent-cid "$cid"
		      qemu-img convert -O raw se.vmdk se.raw
		      touch done); then
			vm_log "fixtures: building the seSparse images failed (205-vmdk skips that part)"
			rm -rf "$d/sesparse"
		fi
	fi
	# hostile images (360-hostile-images): hand-made malformed ones and the fuzzers' corpora
	if [ ! -f "$d/hostile/done" ] || [ "$VM_TOP/selftests/host/mkhostile.py" -nt "$d/hostile/done" ] ||
	   [ -n "$(find "$VM_TOP/selftests/fuzz/corpus" -newer "$d/hostile/done" -print -quit)" ]; then
		rm -rf "$d/hostile"
		mkdir -p "$d/hostile/corpus"
		if ! (set -e
		      python3 "$VM_TOP/selftests/host/mkhostile.py" "$d/hostile/made"
		      for f in qcow1 qcow2 qed vdi vhd vhdx vmdk parallels dmg; do
			      cp -r "$VM_TOP/selftests/fuzz/corpus/$f" "$d/hostile/corpus/"
		      done
		      touch "$d/hostile/done"); then
			vm_log "fixtures: building the hostile images failed (360-hostile-images skips)"
			rm -rf "$d/hostile"
		fi
	fi
	[ -d "$d" ] && export VM_SCRATCH_EXTRA=$d
	return 0
}

# vm_make_scratch IMG CONF...: a sparse ext4 disk holding the samples, vmtest.conf (one
# assignment per argument) and, when VM_SCRATCH_EXTRA names a directory, a copy of it at the top
vm_make_scratch() {
	local img=$1 stage
	shift
	stage=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-scratch.XXXXXX")
	if [ -d "$VM_BUILD/samples" ]; then
		mkdir -p "$stage/samples"
		cp -a --sparse=always "$VM_BUILD/samples/." "$stage/samples/"
	fi
	if [ -n "${VM_SCRATCH_EXTRA:-}" ]; then
		cp -a --sparse=always "$VM_SCRATCH_EXTRA" "$stage/"
	fi
	printf '%s\n' "$@" >"$stage/vmtest.conf"
	rm -f "$img"
	truncate -s "$VM_SCRATCH_SIZE" "$img"
	mkfs.ext4 -q -F -L scratch -d "$stage" "$img" >/dev/null
	local rc=$?
	rm -rf "$stage"
	return $rc
}

# vm_boot CONSOLE_LOG TIMEOUT_S [--live]: boots K_IMAGE with K_INITRD and the scratch disk
# $K_RUN/scratch.img; the console goes to CONSOLE_LOG (and to stdout with --live). Returns qemu's
# status, 124 when the whole-VM timeout killed it.
vm_boot() {
	local log=$1 tmo=$2 live=${3:-} rc
	local cmd=(qemu-system-x86_64 -accel tcg -cpu max -smp "$VM_SMP" -m "$VM_MEM"
		-nographic -no-reboot -kernel "$K_IMAGE" -initrd "$K_INITRD"
		-drive "file=$K_RUN/scratch.img,if=virtio,format=raw,cache=unsafe,discard=unmap"
		-append "console=ttyS0 quiet panic=-1 ${VM_APPEND:-}")
	if [ "$live" = --live ]; then
		timeout -k 10 "$tmo" "${cmd[@]}" </dev/null 2>&1 | tee "$log"
		rc=${PIPESTATUS[0]}
	else
		timeout -k 10 "$tmo" "${cmd[@]}" </dev/null >"$log" 2>&1
		rc=$?
	fi
	return $rc
}
