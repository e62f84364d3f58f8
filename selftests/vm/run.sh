#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# run.sh: the VM tests of the vdimg module.
#
#   run.sh [--kernel RELEASE|debug|PATH]... [--filter REGEX] [--tier full|short] [--timeout S]
#          [--live] [--keep] [--shell]
#
# For each kernel (default: the newest Debian 6.1 and 6.12 kernels in /boot, and the debug kernel
# when it has been built), builds vdimg.ko against its headers (warnings fail), the initramfs and a
# scratch disk, boots qemu (TCG) once and runs selftests/vm/tests/*.sh whose name matches REGEX
# (grep -E). Prints KTAP (one subtree per kernel) and ends with "N passed, N failed, N skipped".
# Exit status 0 when nothing failed.
#
#   --live    show the console while the VM runs
#   --keep    keep this run's directory (build/vm/RELEASE/run.*: scratch disk with the test logs
#             in /vmtest, console log); the last console log is always build/vm/RELEASE/console.log
#   --shell   boot into an interactive shell instead of running the tests (one kernel)
#   --timeout whole-VM timeout in seconds (default 1800); per-test timeouts live in the guest
#   --tier    short: the tests that loop over many variants keep a representative few (VMTEST_TIER
#             in the guest; run-all.sh uses it for the 6.1 and debug-kernel stages); default full
set -uo pipefail

. "$(dirname "$0")/common.sh"

kernels=()
filter=
tier=full
vm_timeout=1800
test_timeout=300
live=
keep=
shell=
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernels+=("$2"); shift ;;
	--kernel=*) kernels+=("${1#*=}") ;;
	--filter) filter=$2; shift ;;
	--filter=*) filter=${1#*=} ;;
	--tier) tier=$2; shift ;;
	--tier=*) tier=${1#*=} ;;
	--timeout) vm_timeout=$2; shift ;;
	--test-timeout) test_timeout=$2; shift ;;
	--live) live=--live ;;
	--keep) keep=1 ;;
	--shell) shell=1 ;;
	-h|--help) sed -n '4,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
case $tier in
full|short) ;;
*) echo "run.sh: --tier is full or short" >&2; exit 2 ;;
esac
[ ${#kernels[@]} -gt 0 ] || mapfile -t kernels < <(vm_default_kernels)
if [ ${#kernels[@]} -eq 0 ]; then
	echo "run.sh: no kernels found in /boot" >&2
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
fi

vm_build_userspace
# one run at a time prepares the shared sample and fixture directories (run-all.sh runs VMs in parallel)
exec 7>"$VM_BUILD/.prepare.lock"
flock 7
vm_samples
vm_fixtures
flock -u 7

if [ -n "$shell" ]; then
	vm_resolve_kernel "${kernels[0]}" || exit 1
	vm_build_kernel_side || exit 1
	vm_make_scratch "$K_RUN/scratch.img" VMTEST_MODE=shell || exit 1
	exec qemu-system-x86_64 -accel tcg -cpu max -smp "$VM_SMP" -m "$VM_MEM" -nographic \
		-no-reboot -kernel "$K_IMAGE" -initrd "$K_INITRD" \
		-drive "file=$K_RUN/scratch.img,if=virtio,format=raw,cache=unsafe,discard=unmap" \
		-append "console=ttyS0 quiet panic=-1 ${VM_APPEND:-}"
fi

total_p=0 total_f=0 total_s=0
echo "KTAP version 1"
echo "1..${#kernels[@]}"
n=0
for spec in "${kernels[@]}"; do
	n=$((n + 1))
	results=()
	if ! vm_resolve_kernel "$spec" 2>"$VM_BUILD/resolve.log"; then
		echo "    # $(cat "$VM_BUILD/resolve.log")"
		echo "not ok $n - $spec # cannot find this kernel"
		total_f=$((total_f + 1))
		continue
	fi
	t0=$(date +%s)
	vm_log "$K_RELEASE: building the module and the initramfs"
	if ! vm_build_kernel_side; then
		echo "not ok $n - $K_RELEASE # initramfs build failed"
		total_f=$((total_f + 1))
		continue
	fi
	if [ -n "$K_MODULE" ]; then
		results+=(--result ok "build vdimg.ko")
	else
		results+=(--result fail "build vdimg.ko" "$K_MODULE_LOG")
	fi
	[ -n "$VM_VDIMGCTL" ] || results+=(--result fail "build vdimgctl" "$VM_BUILD/tools.log")
	[ -n "$VM_ABI_TEST" ] || results+=(--result fail "build abi_test" "$VM_BUILD/abi_test.log")

	# A guest that dies before its test runner starts (no "# vmtest-plan" line: nothing of vdimg
	# has run, the module is loaded by the tests) is booted once more: under TCG on a loaded host
	# the stock kernel sometimes panics early ("IO-APIC + timer doesn't work", a fault on a
	# patched NOP), which says nothing about vdimg. One that dies of the emulator's double
	# fault during a test (ktap.py --emulator-fault: the CPU state itself is garbage) is booted
	# once more for that test and the ones after it; ktap.py --died-console puts the first
	# boot's finished tests first, checks its kernel log up to the fault, and says so.
	scratch=ok
	skip=
	died=()
	for attempt in 1 2; do
		vm_make_scratch "$K_RUN/scratch.img" VMTEST_MODE=tests "VMTEST_FILTER='$filter'" \
			"VMTEST_SKIP='$skip'" VMTEST_TIER="$tier" VMTEST_TIMEOUT="$test_timeout" ||
			{ scratch=; break; }
		vm_log "$K_RELEASE: booting the VM (console: $K_RUN/console.log)"
		vm_boot "$K_RUN/console.log" "$vm_timeout" $live
		vm_rc=$?
		[ "$attempt" -eq 1 ] || break
		if grep -aq '# vmtest-plan [0-9]' "$K_RUN/console.log"; then
			grep -aq 'VMTEST-KTAP-END' "$K_RUN/console.log" && break
			skip=$(python3 "$VM_DIR/ktap.py" --emulator-fault "$K_RUN/console.log") || break
			cp "$K_RUN/console.log" "$K_RUN/console-died.log"
			died=(--died-console "$K_RUN/console-died.log")
			vm_log "$K_RELEASE: the guest died of a double fault (the emulator's; its first lines head the results); booting once more for the test it died in and the ones after it"
			continue
		fi
		vm_log "$K_RELEASE: the guest died before its tests started (qemu status $vm_rc); console tail:"
		tail -n 15 "$K_RUN/console.log" | sed 's/^/    # /'
		cp "$K_RUN/console.log" "$K_RUN/console-first-boot.log"
		vm_log "$K_RELEASE: booting once more"
	done
	[ -n "$scratch" ] || { echo "not ok $n - $K_RELEASE # scratch disk"; continue; }
	t1=$(date +%s)
	name="$K_RELEASE ($spec, $((t1 - t0)) s)"
	[ "$spec" = "$K_RELEASE" ] && name="$K_RELEASE ($((t1 - t0)) s)"
	python3 "$VM_DIR/ktap.py" --number "$n" --name "$name" "${results[@]}" "${died[@]}" \
		--vm-status "$vm_rc" --vm-timeout "$vm_timeout" --counts "$K_RUN/counts" \
		"$K_RUN/console.log"
	read -r p f s <"$K_RUN/counts"
	total_p=$((total_p + p)) total_f=$((total_f + f)) total_s=$((total_s + s))
	vm_log "$K_RELEASE: $p passed, $f failed, $s skipped"
	cp "$K_RUN/console.log" "$K_OUT/console.log"
	[ ${#died[@]} -eq 0 ] || cp "$K_RUN/console-died.log" "$K_OUT/console-died.log"
	if [ -n "$keep" ]; then
		vm_log "$K_RELEASE: kept $K_RUN (scratch.img: debugfs -R 'ls -l /vmtest' to read the logs)"
	else
		rm -rf "$K_RUN"
	fi
done
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ]
