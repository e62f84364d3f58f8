#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# demo.sh (`make demo`): boots the VM (6.12 kernel unless --kernel). Part 1 attaches an ext4 image
# made on the host with `mkfs.ext4 -d`, shows lsblk and `vdimgctl list`, mounts it, lists and reads
# its files, writes one, detaches, and shows the write survived a re-attach. Part 2 takes a dynamic
# VHDX that vdimgctl created on the host (empty, a few KiB), partitions it inside the VM, makes an
# ext4 on its first partition and mounts it; then puts a differencing VHDX on top, attaches the
# two-layer chain, shows it with `vdimgctl list --chain`, writes through it, and shows that the
# base did not change. The console is shown live.
#
#   demo.sh [--kernel RELEASE|debug|PATH]
#
# The same file runs in the guest as `demo.sh --guest` (busybox ash, started by the VM's /init).

if [ "${1:-}" = --guest ]; then
	# ------------------------------------------------------------------ guest side (ash)
	. /vmtest/lib.sh
	img=/scratch/demo/demo.img
	run() {
		echo "# $*"
		"$@"
	}
	echo "==== vdimg demo on $(uname -r) ===="
	modprobe vdimg || { echo "demo: modprobe vdimg failed"; exit 1; }
	run "$VDIMGCTL" --version
	run "$VDIMGCTL" info "$img"
	dev=$(run "$VDIMGCTL" attach -f --show -t raw "$img" | tail -n1) || exit 1
	echo "$dev"
	run /usr/bin/lsblk -o NAME,SIZE,RO,TYPE,FSTYPE "$dev"
	run "$VDIMGCTL" list
	run "$VDIMGCTL" list -l -O NAME,FORMAT,VSIZE,RO,DIO,LOG-SEC,DEPTH,BACK-FILE
	for a in format backing_file virtual_size read_only dio state; do
		echo "/sys/block/${dev##*/}/vdimg/$a: $(cat /sys/block/${dev##*/}/vdimg/$a)"
	done
	mkdir -p /mnt/demo
	run mount -t ext4 "$dev" /mnt/demo || exit 1
	run ls -la /mnt/demo /mnt/demo/docs
	run cat /mnt/demo/hello.txt
	run sh -c "echo 'written inside the VM on $(date -u +%F)' >/mnt/demo/from-vm.txt"
	run df -h /mnt/demo
	run umount /mnt/demo
	run "$VDIMGCTL" detach "$dev"
	run "$VDIMGCTL" list
	dev=$("$VDIMGCTL" attach -f --show -r "$img") || exit 1
	echo "re-attached read-only as $dev"
	run mount -t ext4 -o ro "$dev" /mnt/demo || exit 1
	run cat /mnt/demo/from-vm.txt
	run umount /mnt/demo
	run "$VDIMGCTL" detach "$dev"
	run "$E2FSCK" -fn "$img"

	echo "==== part 2: a dynamic VHDX with a partition table, and a differencing child ===="
	base=/scratch/demo/base.vhdx
	child=/scratch/demo/child.vhdx
	run "$VDIMGCTL" info "$base"
	run ls -ls "$base"
	dev=$(run "$VDIMGCTL" attach -f --show -P "$base" | tail -n1) || exit 1
	echo "$dev"
	run sh -c "echo 'label: gpt
size=96MiB, type=linux, name=data
type=linux, name=spare' | $SFDISK -q $dev"
	i=0
	while [ ! -b "${dev}p1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	run /usr/bin/lsblk -o NAME,SIZE,TYPE "$dev"
	run "$MKFS_EXT4" -q -L vhdx-data "${dev}p1" || exit 1
	run mount -t ext4 "${dev}p1" /mnt/demo || exit 1
	run sh -c "echo 'written into a partition of a dynamic VHDX' >/mnt/demo/base.txt"
	run dd if=/dev/urandom of=/mnt/demo/random.bin bs=1M count=8
	run df -h /mnt/demo
	run umount /mnt/demo
	run "$VDIMGCTL" detach "$dev"
	echo "# the VHDX file grew only by what was written:"
	run ls -ls "$base"
	run "$VDIMGCTL" create -t vhdx --parent "$base" "$child" || exit 1
	basesum=$(sha256sum "$base" | cut -d' ' -f1)
	dev=$(run "$VDIMGCTL" attach -f --show -P "$child" | tail -n1) || exit 1
	echo "$dev"
	i=0
	while [ ! -b "${dev}p1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	run "$VDIMGCTL" list
	run "$VDIMGCTL" list --chain
	run mount -t ext4 "${dev}p1" /mnt/demo || exit 1
	run cat /mnt/demo/base.txt
	run sh -c "echo 'written through the chain: lands in the child' >/mnt/demo/child.txt"
	run ls -la /mnt/demo
	run umount /mnt/demo
	run "$VDIMGCTL" detach "$dev"
	run "$VDIMGCTL" info --chain "$child"
	run ls -ls "$base" "$child"
	if [ "$(sha256sum "$base" | cut -d' ' -f1)" = "$basesum" ]; then
		echo "the base image is byte for byte unchanged: the write went to the child"
	else
		echo "demo: the base image changed"
		exit 1
	fi
	run "$QEMU_IMG" check -q "$base" && echo "qemu-img check: $base is clean"
	echo "==== demo done ===="
	exit 0
fi

# ------------------------------------------------------------------ host side (bash)
set -uo pipefail
. "$(dirname "$0")/common.sh"

kernel=
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=$2; shift ;;
	-h|--help) sed -n '4,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
if [ -z "$kernel" ]; then
	kernel=$(vm_default_kernels | grep '^6\.12\.' | tail -n1)
	[ -n "$kernel" ] || { echo "demo.sh: no 6.12 kernel in /boot" >&2; exit 1; }
fi
vm_resolve_kernel "$kernel" || exit 1
vm_build_userspace
vm_build_kernel_side || exit 1
[ -n "$K_MODULE" ] || { cat "$K_MODULE_LOG" >&2; echo "demo.sh: vdimg.ko does not build" >&2; exit 1; }
[ -n "$VM_VDIMGCTL" ] || { echo "demo.sh: vdimgctl does not build" >&2; exit 1; }

# the image: an ext4 filesystem made from a directory, no mount needed
content=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-demo.XXXXXX")
trap 'rm -rf "$content"' EXIT
mkdir -p "$content/docs" "$K_RUN/demo"
echo "Hello from an image file attached with vdimg." >"$content/hello.txt"
cp "$VM_TOP/Makefile" "$content/docs/Makefile.txt"
[ -f "$VM_TOP/README.md" ] && cp "$VM_TOP/README.md" "$content/docs/"
head -c 4194304 /dev/urandom >"$content/random.bin"
mkfs.ext4 -q -F -L vdimg-demo -d "$content" "$K_RUN/demo/demo.img" 64M >/dev/null || exit 1
# part 2: an empty dynamic VHDX (partitioned and formatted inside the VM)
"$VM_VDIMGCTL" create -t vhdx -s 128M "$K_RUN/demo/base.vhdx" || exit 1
VM_SCRATCH_EXTRA=$K_RUN/demo vm_make_scratch "$K_RUN/scratch.img" VMTEST_MODE=demo || exit 1
vm_boot "$K_RUN/demo-console.log" 600 --live
rc=$?
cp "$K_RUN/demo-console.log" "$K_OUT/demo-console.log"
rm -rf "$K_RUN"
grep -q '==== demo done ====' "$K_OUT/demo-console.log" || { echo "demo.sh: the demo did not finish" >&2; exit 1; }
exit $rc
