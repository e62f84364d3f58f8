# SPDX-License-Identifier: GPL-2.0
#
# Shared helpers of the VM tests (sourced by /init and by every tests/NNN-name.sh, busybox ash).
#
# A test sources this file, calls require_* (which skip with a reason), reports sub-results with
# check/check_fail/ok/fail, and ends with `done_testing`. Devices it attaches with vd_attach and
# filesystems it mounts with mount_dev are released by an EXIT trap, so a failing test does not leave
# them to the next one. The runner (init.sh) checks the kernel log after each test.

# Debian's busybox ash runs its applets before anything on PATH: the real tools by absolute path.
VDIMGCTL=/usr/sbin/vdimgctl
FIO=/usr/bin/fio
QEMU_IMG=/usr/bin/qemu-img
QEMU_NBD=/usr/bin/qemu-nbd
MKFS_EXT4=/usr/sbin/mkfs.ext4
E2FSCK=/usr/sbin/e2fsck
RESIZE2FS=/usr/sbin/resize2fs
SFDISK=/usr/sbin/sfdisk
BLKID=/usr/sbin/blkid
LOSETUP=/usr/sbin/losetup
BLKDISCARD=/usr/sbin/blkdiscard
MODPROBE=/sbin/modprobe
SAMPLES=/scratch/samples
SCRATCH=/scratch

# util-linux and coreutils behaviour where a test depends on it
losetup() { "$LOSETUP" "$@"; }
blkdiscard() { "$BLKDISCARD" "$@"; }
modprobe() { "$MODPROBE" "$@"; }
stat() { /usr/bin/stat "$@"; }
du() { /usr/bin/du "$@"; }
dd() { /usr/bin/dd "$@"; }
cmp() { /usr/bin/cmp "$@"; }
truncate() { /usr/bin/truncate "$@"; }
fallocate() { /usr/bin/fallocate "$@"; }

# Kernel log lines that fail a test: BUG/Oops/WARNING, KASAN/UBSAN/KFENCE reports, lockdep splats,
# hung tasks and RCU stalls ("INFO: " opening the message, or after "rcu: "; not inside one, as
# ext4's benign "EXT4-fs (dev): INFO: recovery required on readonly filesystem"), kmemleak
# reports, and a direct write that met buffered I/O in a backing file's page cache (the stale page
# may later overwrite it; the file's next fsync fails).
KERNEL_BAD_RE='Page cache invalidation failure|(^|[^A-Za-z_])BUG([: ]|$)|WARNING:|Oops|KASAN|UBSAN:|KFENCE:|general protection fault|possible circular locking|possible recursive locking|(^|\] |rcu: )INFO: |suspected memory leak|unreferenced object|Kernel panic|list_(add|del) corruption|refcount_t: '

# kernel_log_bad < LOG: prints the offending lines with some context; true when there are any
kernel_log_bad() {
	grep -E -A 25 "$KERNEL_BAD_RE" && return 0
	return 1
}

# scaled N: N on a normal kernel, N/3 (at least 1) on a sanitizer kernel (VMTEST_SLOW=1, set by
# /init): for data sizes and durations, never for what a test checks
scaled() {
	if [ "${VMTEST_SLOW:-0}" = 1 ]; then
		echo $((($1 + 2) / 3))
	else
		echo "$1"
	fi
}

# tier FULL-LIST SHORT-LIST: the variants a test loops over, all of them in the full tier and the
# representative few in the short tier (VMTEST_TIER=short: the 6.1 and debug-kernel stages of
# run-all.sh, whose job is catching what differs by kernel, not by variant; 6.12 runs everything)
tier() {
	if [ "${VMTEST_TIER:-full}" = short ]; then
		echo "$2"
	else
		echo "$1"
	fi
}

# --- KTAP sub-results
T_N=0
T_FAILS=0

# ok DESC / fail DESC [DETAIL...]: one sub-result
ok() {
	T_N=$((T_N + 1))
	echo "ok $T_N - $*"
}
fail() {
	local d=$1
	shift
	T_N=$((T_N + 1))
	T_FAILS=$((T_FAILS + 1))
	[ $# -gt 0 ] && echo "  $*"
	echo "not ok $T_N - $d"
}
# ok_skip DESC REASON: a sub-test that could not run
ok_skip() {
	T_N=$((T_N + 1))
	echo "ok $T_N - $1 # SKIP $2"
}

# check DESC CMD...: passes when CMD exits 0 (its output is kept for the log)
check() {
	local d=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	[ -n "$out" ] && echo "$out" | sed 's/^/  | /'
	if [ $rc -eq 0 ]; then
		ok "$d"
	else
		fail "$d" "command failed (exit $rc): $*"
	fi
	return $rc
}

# check_fail DESC CMD...: passes when CMD fails (exit != 0)
check_fail() {
	local d=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	[ -n "$out" ] && echo "$out" | sed 's/^/  | /'
	if [ $rc -ne 0 ]; then
		ok "$d"
		return 0
	fi
	fail "$d" "command unexpectedly succeeded: $*"
	return 1
}

# check_eq DESC GOT WANT
check_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		fail "$1" "got '$2', want '$3'"
	fi
}

# skip REASON: the whole test cannot run here
skip() {
	echo "SKIP: $*"
	exit 4
}

# die MSG: a broken precondition inside a test (counts as a failure)
die() {
	echo "FATAL: $*"
	exit 1
}

done_testing() {
	[ "$T_FAILS" -eq 0 ] && exit 0
	exit 1
}

# --- prerequisites
require_cmd() {
	local c
	for c in "$@"; do
		[ -x "$c" ] || skip "$c is not in the initramfs"
	done
}

require_module() { # require_module NAME: loaded or built in, else skip
	[ -d "/sys/module/$1" ] && return 0
	modprobe "$1" 2>/dev/null || skip "kernel module $1 is not available"
}

# require_vdimg: the module is loaded (or loads) and vdimgctl is there
require_vdimg() {
	local rel
	rel=$(uname -r)
	if [ ! -e /dev/vdimg-control ]; then
		[ -f "/lib/modules/$rel/extra/vdimg.ko" ] || skip "vdimg.ko was not built for $rel"
		modprobe vdimg || die "modprobe vdimg failed"
		local i=0
		while [ ! -e /dev/vdimg-control ] && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		[ -e /dev/vdimg-control ] || die "vdimg loaded but /dev/vdimg-control did not appear"
	fi
	[ -x "$VDIMGCTL" ] || skip "vdimgctl was not built"
}

# need_sample NAME...: skip the test (with the reason the host recorded) unless every named sample
# image is on the scratch disk. Call it from the test's top level: a skip inside $(...) would only
# end the subshell.
need_sample() {
	local s why
	for s in "$@"; do
		[ -f "$SAMPLES/$s" ] && continue
		why="not fetched on the host: run 'make samples' (Debian's qemu source package)"
		[ -s "$SAMPLES/MISSING" ] && why=$(head -n1 "$SAMPLES/MISSING")
		skip "sample image $s is missing ($why)"
	done
}

# sample NAME: path of a decompressed sample image (the host puts them on the scratch disk); the
# test has called need_sample NAME first
sample() {
	echo "$SAMPLES/$1"
}

# --- devices
VD_DEVS=
MOUNTS=
LOOPS=

# vd_attach [vdimgctl attach options] IMAGE: prints the device; detached at exit
vd_attach() {
	local dev
	dev=$("$VDIMGCTL" attach -f --show "$@") || return 1
	[ -b "$dev" ] || wait_for_dev "$dev" || { echo "vd_attach: $dev did not appear" >&2; return 1; }
	VD_DEVS="$VD_DEVS $dev"
	echo "$dev"
}

# vd_detach DEV: detach now (not deferred: the caller closed everything)
vd_detach() {
	"$VDIMGCTL" detach "$1" || return 1
	VD_DEVS=$(list_remove "$1" $VD_DEVS)
	wait_gone "$1"
}

# vd_attr DEV ATTR: a sysfs attribute of /dev/vdimgN
vd_attr() {
	cat "/sys/block/${1##*/}/vdimg/$2"
}

# loop_attach [losetup options] FILE: prints the loop device; detached at exit
loop_attach() {
	local dev
	dev=$(losetup -f --show "$@") || return 1
	LOOPS="$LOOPS $dev"
	echo "$dev"
}

list_remove() { # list_remove WORD LIST...: LIST without WORD
	local w=$1 x out=
	shift
	for x in "$@"; do
		[ "$x" = "$w" ] || out="$out $x"
	done
	echo "$out"
}

wait_for_dev() { # wait_for_dev PATH [TENTHS]: until the block device node exists
	local i=0 max=${2:-50}
	while [ ! -b "$1" ]; do
		[ $i -ge "$max" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

wait_open() { # wait_open /dev/X: until some process has it open (programs start slowly on debug kernels)
	local i=0 p
	while [ $i -lt 600 ]; do
		for p in /proc/[0-9]*/fd/*; do
			[ "$(readlink "$p" 2>/dev/null)" = "$1" ] && return 0
		done
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

wait_gone() { # wait_gone /dev/X: until the sysfs entry of the disk is gone
	local i=0
	while [ -e "/sys/block/${1##*/}" ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ ! -e "/sys/block/${1##*/}" ]
}

# mount_dev DEV DIR [options]: mounted ext4, unmounted at exit
mount_dev() {
	mkdir -p "$2"
	mount -t ext4 ${3:+-o "$3"} "$1" "$2" || return 1
	MOUNTS="$2 $MOUNTS"
}

umount_dev() {
	umount "$1" || return 1
	MOUNTS=$(list_remove "$1" $MOUNTS)
}

lib_cleanup() {
	local m d
	for m in $MOUNTS; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	for d in $VD_DEVS; do
		"$VDIMGCTL" detach "$d" 2>/dev/null
	done
	for d in $LOOPS; do
		losetup -d "$d" 2>/dev/null
	done
}
trap lib_cleanup EXIT

# --- data
# sha_of FILE [BYTES]: sha256 of the file or device (of its first BYTES when given)
sha_of() {
	if [ -n "$2" ]; then
		head -c "$2" "$1" | sha256sum | cut -d' ' -f1
	else
		sha256sum <"$1" | cut -d' ' -f1
	fi
}

# mkrandom FILE MIB: a file of random data
mkrandom() {
	head -c $(($2 * 1048576)) /dev/urandom >"$1"
}

# blocks_of FILE: allocated 512-byte blocks
blocks_of() {
	stat -c %b "$1"
}

# --- image formats (tests 2NN)
QEMU_IO=/usr/bin/qemu-io

# qemu_fmt F: qemu's driver name for vdimg format F (VHD is "vpc" in qemu)
qemu_fmt() {
	case $1 in
	vhd) echo vpc ;;
	*) echo "$1" ;;
	esac
}

# qemu_check F IMAGE: `qemu-img check` of IMAGE (vdimg format F), its output on stdout and its
# status returned. A VHDX log a crash or a fault left to replay is a state qemu opens only to
# repair: the check then runs on a copy with -r leaks, which replays the log and repairs nothing
# else, so corruption still fails.
qemu_check() {
	local out rc copy=$TEST_WORK/.qemu_check.$$.vhdx
	out=$("$QEMU_IMG" check -f "$(qemu_fmt "$1")" "$2" 2>&1)
	rc=$?
	if [ "$1" = vhdx ] && echo "$out" | grep -q 'log that needs to be replayed'; then
		if cp "$2" "$copy"; then
			out=$("$QEMU_IMG" check -r leaks -f vhdx "$copy" 2>&1)
			rc=$?
		else
			rc=1
		fi
		rm -f "$copy"
	fi
	echo "$out"
	return $rc
}

# raw_sha IMAGE F: sha256 of IMAGE's virtual disk as `qemu-img convert -O raw` reads it
raw_sha() {
	local out=$TEST_WORK/.raw_sha.$$
	rm -f "$out"
	"$QEMU_IMG" convert -f "$(qemu_fmt "$2")" -O raw "$1" "$out" >&2 || return 1
	sha_of "$out"
	rm -f "$out"
}

# pattern_sha BYTE LEN: sha256 of LEN bytes of the octal BYTE (e.g. 245 for 0xa5)
pattern_sha() {
	head -c "$2" /dev/zero | tr '\0' "\\$1" | sha256sum | cut -d' ' -f1
}
