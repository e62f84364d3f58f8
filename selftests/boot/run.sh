#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# run.sh: boot tests. A qemu VM (TCG) boots a Debian kernel with an initramfs built by the REAL
# mkinitramfs (initramfs-tools) with this tree's hook, boot script, vdimg.ko and vdimgctl, and a
# command line carrying only root=UUID=<fs inside the image> and vdimg.image=UUID=<host fs>:/<image>.
# The one virtio disk is a host file system (ext4, or NTFS) holding the image; the image's root is
# a tiny busybox system whose /sbin/init reports what it sees, writes a marker file, remounts /
# read-only, runs the shutdown hook (boot/vdimg.shutdown) and powers off. Afterwards the host disk
# is checked offline: the marker is inside the image (qemu-img convert + debugfs), qemu-img check
# is clean, the host fs and the root fs are fsck-clean.
#
# The images are made without the module on the host: the root is built as a raw partitioned disk
# (sfdisk + mkfs.ext4 -d on the partition), then converted with qemu-img convert -O vhdx (dynamic);
# the host file system is made with mkfs.ext4 -d (or mkntfs + ntfscp).
#
#   selftests/boot/run.sh [--kernel RELEASE]... [--filter REGEX] [--keep]
#
# Default kernels: the newest Debian 6.12 in /boot (every case), the newest 6.1 (case "vhdx-ext4"
# only; VDIMG_BOOT_LTS_FILTER overrides). KTAP output, "ok N name"; the last line is
# "N passed, N failed, N skipped". Exit status 0 when nothing failed.
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
BOOT_BUILD=${BOOT_BUILD:-$top/build/boot}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-240}
lts_filter=${VDIMG_BOOT_LTS_FILTER:-'^vhdx-ext4$'}
kernels=()
filter=
keep=
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernels+=("$2"); shift 2 ;;
	--filter) filter=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	-h | --help) sed -n '3,24p' "$0"; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	esac
done

N=0 P=0 F=0 S=0
ok() { N=$((N + 1)); P=$((P + 1)); echo "ok $N $1"; }
notok() { N=$((N + 1)); F=$((F + 1)); echo "not ok $N $1"; shift; for l in "$@"; do echo "# $l"; done; }
skip() { N=$((N + 1)); S=$((S + 1)); echo "ok $N $1 # SKIP $2"; }
note() { echo "# $*"; }

want() { [ -z "$filter" ] || [[ $1 =~ $filter ]]; }
newest() { ls /boot/vmlinuz-"$1".*-amd64 2>/dev/null | sort -V | tail -n1 | sed 's|^/boot/vmlinuz-||'; }
if [ ${#kernels[@]} -eq 0 ]; then
	k=$(newest 6.12); [ -n "$k" ] && kernels+=("$k")
	k=$(newest 6.1); [ -n "$k" ] && kernels+=("$k")
fi

for t in mkinitramfs qemu-system-x86_64 qemu-img sfdisk mkfs.ext4 debugfs e2fsck busybox; do
	if ! command -v "$t" >/dev/null; then
		echo "TAP version 13"
		skip boot "$t is not installed (.ci/deps.sh)"
		echo "$P passed, $F failed, $S skipped"
		exit 0
	fi
done
busybox_bin=$(command -v busybox)
if ! file -L "$busybox_bin" 2>/dev/null | grep -q 'statically linked'; then
	busybox_bin=/bin/busybox
fi

mkdir -p "$BOOT_BUILD"
work=$(mktemp -d "$BOOT_BUILD/run.XXXXXX")
cleanup() { [ -n "$keep" ] || rm -rf "$work"; }
trap cleanup EXIT

echo "TAP version 13"

# ---- userspace: vdimgctl (nothing here needs the module on the host)
if ! nice -n 10 make -C "$top" tools >"$work/tools.log" 2>&1; then
	notok "build-tools" "make tools failed: see below"
	tail -n 20 "$work/tools.log" | sed 's/^/# /'
	echo "$P passed, $F failed, $S skipped"
	exit 1
fi
vdimgctl=$top/tools/vdimgctl/vdimgctl

# ---- vdimg-boot's command line parsing and its one-line errors, under every shell it must run
# under (no VM: the errors come before anything is mounted)
parse_case() { # SHELL NAME CMDLINE EXPECTED-STATUS EXPECTED-OUTPUT
	local sh=$1 name=$2 out rc label
	label=$(basename "${sh%% *}")
	printf '%s\n' "$3" >"$work/cmdline"
	rm -rf "$work/vbrun"
	out=$(VDIMG_RUN=$work/vbrun VDIMG_CMDLINE=$work/cmdline $sh "$top/boot/vdimg-boot" 2>&1)
	rc=$?
	if [ "$rc" = "$4" ] && [ "$out" = "$5" ]; then
		ok "sh-$name-$label"
	else
		notok "sh-$name-$label" "status $rc (want $4), output:" "$out" "want:" "$5"
	fi
}
shells=(dash bash "$busybox_bin sh")
if want sh-parse; then
	for sh in "${shells[@]}"; do
		command -v "${sh%% *}" >/dev/null || { skip "sh-parse-${sh%% *}" "no ${sh%% *}"; continue; }
		parse_case "$sh" none "console=ttyS0 root=/dev/vda" 0 ""
		parse_case "$sh" bad-option "quiet vdimg.image=UUID=1234:/a.vhdx,ro,bogus=1" 1 \
			"vdimg: vdimg.image=UUID=1234:/a.vhdx,ro,bogus=1: unknown option 'bogus=1'"
		parse_case "$sh" no-path "vdimg.image=sda1" 1 \
			"vdimg: vdimg.image=sda1: expected <host>:/<path>[,<option>...]"
		parse_case "$sh" ro-overlay "vdimg.image=LABEL=win:/x.vhdx,overlay,ro" 1 \
			"vdimg: vdimg.image=LABEL=win:/x.vhdx,overlay,ro: 'ro' and 'overlay' exclude each other"
		parse_case "$sh" no-host "vdimg.timeout=1 vdimg.image=/dev/vdimg-test-nonexistent:/r.vhdx,overlay" 1 \
			"vdimg: /dev/vdimg-test-nonexistent (holding /r.vhdx) did not appear within 1 s"
	done
fi

# ---- the root file system inside the images: busybox and an init that reports and shuts down
mkroot() { # DIR
	local d=$1 a
	mkdir -p "$d"/{bin,sbin,proc,sys,dev,run,tmp,etc,usr/lib/systemd/system-shutdown}
	cp "$busybox_bin" "$d/bin/busybox"
	for a in sh mount umount sync cat echo grep sleep fsfreeze poweroff ls readlink head sed md5sum cut; do
		ln -s busybox "$d/bin/$a"
	done
	cp "$top/boot/vdimg.shutdown" "$d/usr/lib/systemd/system-shutdown/vdimg.shutdown"
	# vdimgctl and its libraries, for "vdimgctl list" after switch_root
	mkdir -p "$d/usr/sbin"
	cp "$vdimgctl" "$d/usr/sbin/vdimgctl"
	for a in $(ldd "$vdimgctl" | grep -o '/[^ ]*'); do
		mkdir -p "$d$(dirname "$a")"
		cp -L "$a" "$d$a"
	done
	cat >"$d/sbin/init" <<'EOF'
#!/bin/sh
# boot test root: report, write the marker, shut down as a sysvinit-style system would
export PATH=/bin:/sbin:/usr/sbin
mountpoint() { grep -q " $1 " /proc/mounts; }
[ -e /proc/mounts ] || mount -t proc proc /proc
[ -d /sys/class ] || mount -t sysfs sysfs /sys
echo "BOOTTEST: init started"
src=$(grep ' / ' /proc/mounts | grep -v rootfs | tail -n1 | cut -d' ' -f1)
echo "BOOTTEST: root on $src"
host=$(grep ' /run/vdimg/host ' /proc/mounts | cut -d' ' -f1-3)
echo "BOOTTEST: host $host"
ls /sys/block | grep -q '^vdimg' && echo "BOOTTEST: vdimg devices $(ls /sys/block | grep vdimg)"
/usr/sbin/vdimgctl list -n -O NAME,BACK-FILE 2>&1 | sed 's/^/BOOTTEST: list /'
for b in /sys/block/vdimg*; do
	[ -b "/dev/${b##*/}" ] && [ "${b##*/}" != vdimg0 ] &&
		echo "BOOTTEST: md5 ${b##*/} $(head -c 1048576 "/dev/${b##*/}" | md5sum | cut -d' ' -f1)"
done
mount -o remount,rw / || echo "BOOTTEST: remount rw failed"
[ -f /marker ] && echo "BOOTTEST: previous marker: $(head -n 1 /marker)"
{ echo "marker written by the boot test"; echo "root=$src"; echo "host=$host"; } >/marker
sync
echo "BOOTTEST: marker written"
mount -o remount,ro / || echo "BOOTTEST: remount ro failed"
/usr/lib/systemd/system-shutdown/vdimg.shutdown poweroff
echo "BOOTTEST: shutdown hook status $?"
poweroff -f
EOF
	chmod +x "$d/sbin/init"
}

ROOT_UUID=5a1e0b00-7e57-4b0e-9a00-00000000b007
HOST_UUID=5a1e0b00-7e57-4b0e-9a00-0000000010c7
# mkrawdisk OUT ROOTDIR: a 64 MiB raw disk, GPT, one 62 MiB partition at 1 MiB holding an ext4 of ROOTDIR
mkrawdisk() {
	local out=$1 dir=$2
	rm -f "$out" "$out.part"
	truncate -s 64M "$out"
	echo 'label: gpt
start=2048, size=126976, type=L' | sfdisk -q "$out" >/dev/null || return 1
	truncate -s 62M "$out.part"
	mkfs.ext4 -q -F -U "$ROOT_UUID" -L vdimgroot -d "$dir" "$out.part" >/dev/null || return 1
	dd if="$out.part" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none ||
		return 1
	rm -f "$out.part"
}

# root_fs_of RAWDISK OUT: the partition's file system as a file
root_fs_of() {
	dd if="$1" of="$2" bs=1M skip=1 count=62 conv=sparse status=none
}

mkroot "$work/root"
mkrawdisk "$work/root.raw" "$work/root" || { notok "make-images" "could not make the root disk"; exit 1; }
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M "$work/root.raw" \
	"$work/root.vhdx" || { notok "make-images" "qemu-img convert to vhdx failed"; exit 1; }
qemu-img convert -f raw -O vpc -o subformat=dynamic "$work/root.raw" "$work/base.vhd" ||
	{ notok "make-images" "qemu-img convert to vhd failed"; exit 1; }

# mkhost OUT FILE...: a 256 MiB ext4 host file system holding FILEs at its top
mkhost() {
	local out=$1 d=$work/hostdir
	shift
	rm -rf "$d" "$out"
	mkdir -p "$d"
	cp --sparse=always "$@" "$d/"
	truncate -s 256M "$out"
	mkfs.ext4 -q -F -U "$HOST_UUID" -L vdimghost -d "$d" "$out" >/dev/null
	rm -rf "$d"
}

# host_get HOSTDISK NAME OUT: copy /NAME out of an ext4 host disk
host_get() {
	rm -f "$3"
	debugfs -R "dump /$2 $3" "$1" >/dev/null 2>&1 && [ -f "$3" ]
}

# check_host [HOSTDISK]: the host ext4 (default $work/host.ext4) passes e2fsck -fn; a reason in
# the caller's why[] otherwise
check_host() {
	e2fsck -fn "${1:-$work/host.ext4}" >"$work/hostfsck.log" 2>&1 ||
		why+=("the host ext4 is not clean: $(tail -n 3 "$work/hostfsck.log" | tr '\n' ' ')")
}

# check_qemu IMAGE [FMT]: qemu-img check -q of IMAGE is clean; a reason in the caller's why[]
# otherwise
check_qemu() {
	qemu-img check -q ${2:+-f "$2"} "$1" >"$work/check.log" 2>&1 ||
		why+=("qemu-img check ${1##*/}: $(head -n 3 "$work/check.log" | tr '\n' ' ')")
}

# image_marker IMAGE FMT: print /marker from the root fs inside IMAGE (empty when absent)
image_marker() {
	local raw=$work/check.raw
	rm -f "$raw" "$raw.fs"
	qemu-img convert -f "$2" -O raw "$1" "$raw" || return 1
	root_fs_of "$raw" "$raw.fs"
	debugfs -R 'cat /marker' "$raw.fs" 2>/dev/null
	e2fsck -fn "$raw.fs" >"$work/rootfsck.log" 2>&1 || echo "ROOTFSCK-FAILED"
	rm -f "$raw" "$raw.fs"
}

# boot_once KERNEL INITRD DISK FMT APPEND LOG [EXPECT]: one boot; without EXPECT wait for the VM
# to power off (BOOT_TIMEOUT); with EXPECT (an ERE) kill the VM as soon as the console matches it
# or after BOOT_TIMEOUT. Returns qemu's status (124 on timeout) or 0 when EXPECT matched (125
# when the VM ended without it, or the kernel panicked).
# A kernel panic on the console ends the VM at once (status 125) instead of waiting for the
# timeout (panic=-1 cannot be used for that everywhere: initramfs-tools then reboots instead of
# opening its emergency shell).
boot_once() {
	local kernel=$1 initrd=$2 disk=$3 fmt=$4 append=$5 log=$6 expect=${7:-} pid n rc
	rm -f "$log"
	nice -n 10 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 -display none \
		-monitor none -serial "file:$log" -no-reboot -kernel "$kernel" -initrd "$initrd" \
		-drive "file=$disk,if=virtio,format=$fmt,cache=writeback" \
		-append "console=ttyS0 $append" </dev/null >"$log.qemu" 2>&1 &
	pid=$!
	n=$((BOOT_TIMEOUT * 2))
	while kill -0 "$pid" 2>/dev/null; do
		if [ -n "$expect" ] && grep -Eq "$expect" "$log" 2>/dev/null; then
			sleep 1
			kill "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			return 0
		fi
		if [ "$n" -le 0 ] || grep -q 'end Kernel panic' "$log" 2>/dev/null; then
			kill "$pid" 2>/dev/null
			sleep 1
			kill -9 "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			[ "$n" -le 0 ] && return 124
			return 125
		fi
		n=$((n - 1))
		sleep 0.5
	done
	wait "$pid"
	rc=$?
	# the VM ended by itself (a panic with panic=-1, a power-off) before EXPECT showed
	[ -n "$expect" ] && ! grep -Eq "$expect" "$log" && return 125
	return "$rc"
}

# boot_status RC: what boot_once's status RC means
boot_status() {
	case $1 in
	0) echo "the expected prompt" ;;
	124) echo "timeout" ;;
	125) echo "the VM stopped or the kernel panicked before the expected prompt" ;;
	*) echo "qemu failed" ;;
	esac
}

# splat LOG: the console from the first oops/panic line on (empty when the kernel did not die)
splat() {
	sed -n '/BUG:\|Oops\|general protection\|invalid opcode\|Kernel panic/,$p' "$1" 2>/dev/null
}

# boot_vm (arguments as boot_once): one boot, repeated once when the kernel died with a trace
# that does not involve vdimg at all (no vdimg symbol, vdimg not among the loaded modules). Under
# TCG on a loaded 2-core machine the stock kernel has died that way early in boot (a fault on a
# patched NOP in an interrupt, before the initramfs ran; once in some 300 boots), which says
# nothing about vdimg. The first console is kept as LOG.first and the retry is reported.
boot_vm() {
	local log=$6 rc s
	boot_once "$@"
	rc=$?
	s=$(splat "$log")
	if [ -n "$s" ] && ! grep -q vdimg <<<"$s"; then
		note "$(basename "$log" .console): the kernel died outside vdimg; console kept as" \
			"$log.first; booting once more. The trace:"
		grep -a -m 12 -E 'BUG:|Oops|RIP:|Kernel panic|Modules linked in|Comm:' <<<"$s" |
			sed 's/^/#   /'
		mv "$log" "$log.first"
		boot_once "$@"
		rc=$?
	fi
	return "$rc"
}

# console_tail LOG [N]: the last N (15) console lines, or the kernel's trace when it died
console_tail() {
	if [ -n "$(splat "$1")" ]; then
		splat "$1" | grep -a -v '^$' | head -n 40
	else
		grep -a -v '^$' "$1" 2>/dev/null | tail -n "${2:-15}"
	fi
}

# ---- initramfs-tools: a private CONFDIR (copy of /etc/initramfs-tools + the hook and script)
build_initramfs_tools() { # RELEASE MODULE OUT
	local rel=$1 ko=$2 out=$3 conf=$work/itconf-$1
	rm -rf "$conf"
	cp -a /etc/initramfs-tools "$conf"
	sed -i -e 's/^MODULES=.*/MODULES=list/' -e 's/^COMPRESS=.*/COMPRESS=gzip/' \
		"$conf/initramfs.conf"
	printf '%s\n' virtio_pci virtio_blk ext4 >>"$conf/modules"
	mkdir -p "$conf/hooks" "$conf/scripts/local-top"
	cp "$top/boot/initramfs-tools/hooks/vdimg" "$conf/hooks/vdimg"
	cp "$top/boot/initramfs-tools/scripts/local-top/vdimg" "$conf/scripts/local-top/vdimg"
	VDIMG_KO=$ko VDIMGCTL=$vdimgctl VDIMG_BOOT=$top/boot/vdimg-boot \
		VDIMG_RULES=$top/udev/60-vdimg.rules \
		nice -n 10 mkinitramfs -d "$conf" -o "$out" "$rel" >"$out.log" 2>&1
}

# ---- dracut: a private copy of /usr/lib/dracut with dracut/90vdimg added (dracutbasedir)
build_dracut() { # RELEASE MODULE OUT
	local rel=$1 ko=$2 out=$3 b=$work/dracut
	if [ ! -d "$b/base" ]; then
		mkdir -p "$b/conf.d"
		cp -a /usr/lib/dracut "$b/base"
		cp -a "$top/dracut/90vdimg" "$b/base/modules.d/90vdimg"
	fi
	dracutbasedir=$b/base VDIMG_KO=$ko VDIMGCTL=$vdimgctl VDIMG_BOOT=$top/boot/vdimg-boot \
		VDIMG_RULES=$top/udev/60-vdimg.rules \
		nice -n 10 dracut --force --no-hostonly --no-hostonly-cmdline --no-early-microcode \
		--conf /dev/null --confdir "$b/conf.d" \
		--modules "bash base udev-rules rootfs-block fs-lib vdimg" \
		--add-drivers "virtio_pci virtio_blk ext4" --gzip "$out" "$rel" >"$out.log" 2>&1
}


# ---- the cases
# case_boot NAME HOSTDISK HOSTFMT APPEND: a boot that must reach the root's init and power off
# cleanly. Sets BOOT_LOG, BOOT_RC.
case_boot() {
	local name=$1 disk=$2 hfmt=$3 append=$4 t0
	BOOT_LOG=$work/$KREL-$name.console
	t0=$(date +%s)
	boot_vm "/boot/vmlinuz-$KREL" "$INITRD" "$disk" "$hfmt" "$append" "$BOOT_LOG"
	BOOT_RC=$?
	note "$name: boot took $(($(date +%s) - t0)) s (qemu status $BOOT_RC)"
}

# check_booted NAME [BACK-FILE-ERE]: the console shows the root's init on a vdimg device,
# "vdimgctl list" naming the image (default /run/vdimg/host/root.vhdx), the host mount and a clean
# shutdown
check_booted() {
	local name=$1 why=()
	grep -aq 'BOOTTEST: marker written' "$BOOT_LOG" || why+=("the root's init did not write its marker")
	grep -aqE 'BOOTTEST: root on /dev/vdimg[0-9]+p1' "$BOOT_LOG" ||
		why+=("the root is not a vdimg partition")
	grep -aq "BOOTTEST: host /dev/vda /run/vdimg/host" "$BOOT_LOG" ||
		why+=("the host fs is not mounted at /run/vdimg/host after switch_root")
	grep -aq 'BOOTTEST: shutdown hook status 0' "$BOOT_LOG" || why+=("the shutdown hook failed")
	local back=${2:-/run/vdimg/host/root\.vhdx}
	grep -aqE "BOOTTEST: list /dev/vdimg0 +$back" "$BOOT_LOG" ||
		why+=("vdimgctl list after switch_root does not show /dev/vdimg0 on $back")
	grep -aqE 'BUG:|Oops|WARNING:|Kernel panic|Call Trace' "$BOOT_LOG" && why+=("kernel splat on the console")
	grep -aq "vdimg: unknown parameter" "$BOOT_LOG" &&
		why+=("the module logged a vdimg.* boot parameter as unknown")
	[ "$BOOT_RC" -eq 0 ] || why+=("qemu status $BOOT_RC (124: timeout)")
	if [ ${#why[@]} -gt 0 ]; then
		notok "$name" "${why[@]}" "console tail:"
		console_tail "$BOOT_LOG" | sed 's/^/#   /'
		return 1
	fi
	return 0
}

# case_error NAME APPEND EXPECTED-LINE-ERE: the boot must stop in the initramfs emergency shell
# with the one-line message
case_error() {
	local name=$1 append=$2 line=$3 log=$work/$KREL-$1.console t0 rc why=()
	t0=$(date +%s)
	boot_vm "/boot/vmlinuz-$KREL" "$INITRD" "$work/host.ext4" raw "$append" "$log" \
		'\(initramfs\)'
	rc=$?
	note "$name: boot ended in $(($(date +%s) - t0)) s (status $rc; $(boot_status "$rc"))"
	[ "$rc" -eq 0 ] || why+=("no emergency shell prompt on the console (status $rc)")
	grep -aEq "^$line" "$log" || why+=("no line matching '$line' on the console")
	[ "$(grep -ac '^vdimg: ' "$log")" -eq 1 ] || why+=("not exactly one 'vdimg: ' line")
	grep -aq 'BOOTTEST' "$log" && why+=("the root's init ran")
	if [ ${#why[@]} -gt 0 ]; then
		notok "$name" "${why[@]}" "console tail:"
		console_tail "$log" | sed 's/^/#   /'
		return
	fi
	note "$name: $(grep -a '^vdimg: ' "$log" | tr -d '\r')"
	ok "$name"
}

# case_debian NAME: the mmdebstrap root (cached), with /etc/fstab, vdimgctl, the shutdown hook
# and a oneshot service that reports, writes the marker and powers off
DEBIAN_TAR=${VDIMG_BOOT_DEBIAN_TAR:-/var/cache/vdimg/boot-debian-bookworm.tar}
case_debian() {
	local name=$1 r=$work/debroot raw=$work/deb.raw why=() a
	if [ ! -s "$DEBIAN_TAR" ]; then
		if ! command -v mmdebstrap >/dev/null; then
			skip "$name" "mmdebstrap is not installed"
			return
		fi
		mkdir -p "$(dirname "$DEBIAN_TAR")"
		note "$name: building $DEBIAN_TAR with mmdebstrap (once)"
		if ! nice -n 10 mmdebstrap --variant=apt --include=systemd-sysv,udev,e2fsprogs bookworm \
			"$DEBIAN_TAR.tmp.tar" >"$work/mmdebstrap.log" 2>&1; then
			notok "$name" "mmdebstrap failed: $(tail -n 2 "$work/mmdebstrap.log" | tr '\n' ' ')"
			rm -f "$DEBIAN_TAR.tmp.tar"
			return
		fi
		mv "$DEBIAN_TAR.tmp.tar" "$DEBIAN_TAR"
	fi
	rm -rf "$r"
	mkdir -p "$r"
	tar -C "$r" -xf "$DEBIAN_TAR" || { notok "$name" "cannot unpack $DEBIAN_TAR"; return; }
	# the userspace installed as the package installs it (vdimgctl, udev rules, vdimgtab generator
	# and vdimg@.service, mount helper, shutdown hook): what a system booted from an image runs.
	# /etc/vdimgtab attaches data.vhdx (on the host fs beside the root image) at boot, fstab
	# mounts its partition through the by-vdimg link and data2.qcow2 through mount.vdimg
	if ! make -s -C "$top" install DESTDIR="$r" PREFIX=/usr >"$work/install.log" 2>&1; then
		notok "$name" "make install into the root failed: $(tail -n 2 "$work/install.log" | tr '\n' ' ')"
		return
	fi
	for a in $(ldd "$vdimgctl" | grep -o '/[^ ]*'); do
		[ -e "$r$a" ] || { mkdir -p "$r$(dirname "$a")"; cp -L "$a" "$r$a"; }
	done
	printf '%s\n' '# NAME IMAGE OPTIONS' 'data /run/vdimg/host/data.vhdx partscan' >"$r/etc/vdimgtab"
	printf '%s\n' "UUID=$ROOT_UUID / ext4 defaults 0 1" \
		"/dev/disk/by-vdimg/data-part1 /data ext4 defaults,x-systemd.requires=vdimg@data.service 0 2" \
		"/run/vdimg/host/data2.qcow2 /data2 vdimg defaults 0 0" >"$r/etc/fstab"
	mkdir -p "$r/data" "$r/data2" "$r/usr/local/sbin" "$r/etc/systemd/system/multi-user.target.wants" \
		"$r/etc/systemd/system/emergency.service.d"
	# emergency mode (a failed fstab line, say) says why on the console and powers off, instead of
	# waiting for a root password until the boot times out
	printf '%s\n' '[Service]' 'ExecStart=' \
		"ExecStart=-/bin/sh -c 'echo \"BOOTTEST: emergency mode\"; systemctl --failed --no-pager; for u in \$\$(systemctl --failed --no-legend --plain | cut -d\" \" -f1); do systemctl status --no-pager -l \"\$\$u\"; done; systemctl --no-block poweroff'" \
		>"$r/etc/systemd/system/emergency.service.d/boottest.conf"
	printf '%s\n' '#!/bin/sh' '{' \
		'echo "BOOTTEST: init started (systemd)"' \
		'echo "BOOTTEST: root on $(findmnt -n -o SOURCE /)"' \
		'echo "BOOTTEST: host $(grep " /run/vdimg/host " /proc/mounts | cut -d" " -f1-3)"' \
		'vdimgctl list -n -O NAME,BACK-FILE 2>&1 | sed "s/^/BOOTTEST: list /"' \
		'echo "BOOTTEST: data $(findmnt -n -o SOURCE,FSTYPE /data)"' \
		'echo "BOOTTEST: data2 $(findmnt -n -o SOURCE,FSTYPE /data2)"' \
		'echo "BOOTTEST: vdimg@data $(systemctl is-active vdimg@data.service)"' \
		'echo "BOOTTEST: by-vdimg $(readlink -f /dev/disk/by-vdimg/data) $(readlink -f /dev/disk/by-vdimg/data-part1)"' \
		'for l in /dev/disk/by-vdimg-uuid/*; do echo "BOOTTEST: by-vdimg-uuid ${l##*/} $(readlink -f "$l")"; done' \
		'echo "BOOTTEST: failed units [$(systemctl --failed --no-legend --plain | cut -d" " -f1 | tr "\n" " ")]"' \
		'echo "data marker" >/data/marker; echo "data2 marker" >/data2/marker' \
		'{ echo "marker written by the boot test"; echo "init=systemd"; } >/marker' \
		'sync' 'echo "BOOTTEST: marker written"' \
		'echo "BOOTTEST: shutdown hook status 0"' \
		'} >/dev/console 2>&1' 'systemctl --no-block poweroff' >"$r/usr/local/sbin/boottest"
	chmod +x "$r/usr/local/sbin/boottest"
	printf '%s\n' '[Unit]' 'Description=vdimg boot test' 'After=multi-user.target' '' \
		'[Service]' 'Type=oneshot' 'ExecStart=/usr/local/sbin/boottest' '' \
		'[Install]' 'WantedBy=multi-user.target' >"$r/etc/systemd/system/boottest.service"
	ln -sf /etc/systemd/system/boottest.service "$r/etc/systemd/system/multi-user.target.wants/"
	rm -f "$raw" "$raw.part"
	truncate -s 1G "$raw"
	printf 'label: gpt\nstart=2048, size=2048000, type=L\n' | sfdisk -q "$raw" >/dev/null
	truncate -s 1000M "$raw.part"
	if ! mkfs.ext4 -q -F -U "$ROOT_UUID" -d "$r" "$raw.part" >/dev/null ||
		! dd if="$raw.part" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none ||
		! qemu-img convert -f raw -O vhdx -o subformat=dynamic "$raw" "$work/deb.vhdx"; then
		notok "$name" "could not make the Debian VHDX"
		return
	fi
	rm -rf "$r" "$raw" "$raw.part" "$work/hostdir" "$work/host.ext4"
	mkdir -p "$work/hostdir"
	mv "$work/deb.vhdx" "$work/hostdir/root.vhdx"
	# data.vhdx: GPT, one ext4 partition; data2.qcow2: an ext4 on the whole disk
	rm -f "$work/data.raw" "$work/data.part"
	truncate -s 64M "$work/data.raw"
	truncate -s 62M "$work/data.part"
	if ! printf 'label: gpt\nstart=2048, size=126976, type=L\n' | sfdisk -q "$work/data.raw" >/dev/null ||
		! mkfs.ext4 -q -F -L vdimgdata "$work/data.part" >/dev/null ||
		! dd if="$work/data.part" of="$work/data.raw" bs=1M seek=1 conv=notrunc,sparse status=none ||
		! qemu-img convert -f raw -O vhdx "$work/data.raw" "$work/hostdir/data.vhdx" ||
		! mkfs.ext4 -q -F -L vdimgdata2 "$work/data.part" >/dev/null ||
		! qemu-img convert -f raw -O qcow2 "$work/data.part" "$work/hostdir/data2.qcow2"; then
		notok "$name" "could not make the data images"
		return
	fi
	rm -f "$work/data.raw" "$work/data.part"
	local duuid
	duuid=$("$vdimgctl" info "$work/hostdir/data.vhdx" 2>/dev/null | sed -n 's/^uuid: *//p' | head -n1)
	truncate -s 2G "$work/host.ext4"
	mkfs.ext4 -q -F -U "$HOST_UUID" -d "$work/hostdir" "$work/host.ext4" >/dev/null
	rm -rf "$work/hostdir"
	case_boot "$name" "$work/host.ext4" raw \
		"console=ttyS0 root=UUID=$ROOT_UUID panic=-1 vdimg.image=UUID=$HOST_UUID:/root.vhdx"
	grep -aq 'vdimg: /run/vdimg/host synced and frozen' "$BOOT_LOG" ||
		why+=("systemd-shutdown did not run the hook (no 'synced and frozen' line)")
	if check_booted "$name"; then
		host_get "$work/host.ext4" root.vhdx "$work/out.vhdx" || why+=("root.vhdx is gone")
		check_host
		check_qemu "$work/out.vhdx"
		rm -f "$work/check.raw" "$work/check.raw.fs"
		qemu-img convert -f vhdx -O raw "$work/out.vhdx" "$work/check.raw" &&
			dd if="$work/check.raw" of="$work/check.raw.fs" bs=1M skip=1 count=1000 status=none
		debugfs -R 'cat /marker' "$work/check.raw.fs" 2>/dev/null | grep -q 'init=systemd' ||
			why+=("the marker is not inside the VHDX")
		e2fsck -fn "$work/check.raw.fs" >/dev/null 2>&1 || why+=("the root fs is not fsck-clean")
		rm -f "$work/check.raw" "$work/check.raw.fs" "$work/out.vhdx"
		# vdimgtab, udev and the mount helper: attached and linked at boot, mounted from fstab,
		# unmounted and detached at shutdown with the data in the images
		grep -aqE 'BOOTTEST: data /dev/vdimg[0-9]+p1 ext4' "$BOOT_LOG" ||
			why+=("/data is not the vdimgtab device's partition")
		grep -aqE 'BOOTTEST: data2 /dev/vdimg[0-9]+ ext4' "$BOOT_LOG" ||
			why+=("/data2 is not mounted through mount.vdimg")
		grep -aq 'BOOTTEST: vdimg@data active' "$BOOT_LOG" || why+=("vdimg@data.service is not active")
		grep -aqE 'BOOTTEST: by-vdimg (/dev/vdimg[0-9]+) \1p1' "$BOOT_LOG" ||
			why+=("no /dev/disk/by-vdimg/data and data-part1 links to the device and its partition")
		[ -n "$duuid" ] && grep -aqE "BOOTTEST: by-vdimg-uuid $duuid /dev/vdimg[0-9]+([^p0-9]|\$)" "$BOOT_LOG" ||
			why+=("no /dev/disk/by-vdimg-uuid/${duuid:-?} link")
		grep -aq 'BOOTTEST: emergency mode' "$BOOT_LOG" && why+=("systemd went to emergency mode")
		grep -aq 'BOOTTEST: failed units \[\]' "$BOOT_LOG" ||
			why+=("failed units: $(grep -a 'BOOTTEST: failed units' "$BOOT_LOG" | tr -d '\r')")
		grep -aqiE 'failed (to stop|to start|unmounting).*(vdimg|data)' "$BOOT_LOG" &&
			why+=("systemd failed a vdimg or data unit: $(grep -aiE 'failed (to stop|to start|unmounting).*(vdimg|data)' "$BOOT_LOG" | head -n 2 | sed 's/\x1b\[[0-9;]*m//g' | tr -d '\r' | tr '\n' ' ')")
		for a in data.vhdx:vhdx:1 data2.qcow2:qcow2:0; do
			IFS=: read -r f q skip <<<"$a"
			host_get "$work/host.ext4" "$f" "$work/out.$q" || { why+=("$f is gone"); continue; }
			qemu-img check -q "$work/out.$q" >"$work/check.log" 2>&1 ||
				why+=("qemu-img check $f: $(head -n 3 "$work/check.log" | tr '\n' ' ')")
			rm -f "$work/check.raw" "$work/check.raw.fs"
			qemu-img convert -f "$q" -O raw "$work/out.$q" "$work/check.raw" &&
				dd if="$work/check.raw" of="$work/check.raw.fs" bs=1M skip="$skip" status=none
			debugfs -R 'cat /marker' "$work/check.raw.fs" 2>/dev/null | grep -q 'data' ||
				why+=("the marker is not inside $f")
			e2fsck -fn "$work/check.raw.fs" >/dev/null 2>&1 || why+=("the file system in $f is not clean")
			rm -f "$work/check.raw" "$work/check.raw.fs" "$work/out.$q"
		done
		if [ ${#why[@]} -eq 0 ]; then
			ok "$name"
		else
			notok "$name" "${why[@]}"
		fi
	fi
}

for KREL in "${kernels[@]}"; do
	if [ ! -f "/boot/vmlinuz-$KREL" ]; then
		notok "$KREL" "/boot/vmlinuz-$KREL: no such kernel"
		continue
	fi
	note "==== kernel $KREL"
	kfilter=$filter
	case $KREL in
	6.1.*) [ -n "$filter" ] || kfilter=$lts_filter ;;
	esac
	wantk() { [ -z "$kfilter" ] || [[ $1 =~ $kfilter ]]; }
	any=
	for c in vhdx-ext4 vdi vmdk-split missing-file missing-host overlay vhd-diff qcow2-powercut multi vhdx-ntfs \
		vhdx-xfs vhdx-btrfs vhdx-vfat dracut-vhdx-ext4 dracut-missing-file debian-systemd; do
		wantk "$c" && any=1
	done
	[ -n "$any" ] || continue

	kdir=/usr/src/linux-headers-$KREL
	t0=$(date +%s)
	if ! ko=$(nice -n 10 "$top/selftests/vm/build-module.sh" "$kdir" "$BOOT_BUILD/$KREL/module" \
		2>"$work/module.log" | tail -n1) || [ ! -f "$ko" ]; then
		notok "$KREL-build" "vdimg.ko does not build for $KREL"
		tail -n 20 "$work/module.log" | sed 's/^/# /'
		continue
	fi
	INITRD=$work/initrd-$KREL
	if ! build_initramfs_tools "$KREL" "$ko" "$INITRD" || ! [ -s "$INITRD" ]; then
		notok "$KREL-mkinitramfs" "mkinitramfs failed"
		tail -n 20 "$INITRD.log" | sed 's/^/# /'
		continue
	fi
	if grep -q '^W: vdimg' "$INITRD.log"; then
		notok "$KREL-mkinitramfs" "the hook warned: $(grep '^W: vdimg' "$INITRD.log" | head -n1)"
		continue
	fi
	note "module + initramfs for $KREL in $(($(date +%s) - t0)) s, initrd $(($(stat -c %s "$INITRD") / 1024)) KiB"
	base="console=ttyS0 root=UUID=$ROOT_UUID panic=-1 quiet"

	# (a) a dynamic VHDX, partitioned, ext4 root, on an ext4 host
	name=$KREL-vhdx-ext4
	if wantk vhdx-ext4; then
		mkhost "$work/host.ext4" "$work/root.vhdx"
		case_boot "$name" "$work/host.ext4" raw "$base vdimg.image=UUID=$HOST_UUID:/root.vhdx"
		if check_booted "$name"; then
			why=()
			host_get "$work/host.ext4" root.vhdx "$work/out.vhdx" || why+=("root.vhdx is gone from the host")
			check_host
			check_qemu "$work/out.vhdx"
			m=$(image_marker "$work/out.vhdx" vhdx)
			grep -q 'marker written by the boot test' <<<"$m" || why+=("the marker is not inside the VHDX")
			grep -q 'ROOTFSCK-FAILED' <<<"$m" && why+=("the root fs in the VHDX is not fsck-clean")
			if [ ${#why[@]} -eq 0 ]; then
				ok "$name"
			else
				notok "$name" "${why[@]}"
			fi
		fi
	fi

	# (a2) the other dynamic root formats: a VDI, and a VMDK split into sparse extents of at most
	# 2 GB (a descriptor naming its extent files: vdimgctl opens each one and passes it with the
	# layer, so the initramfs path must carry multi-file images too)
	for c in vdi:vdi:root.vdi vmdk-split:vmdk:root.vmdk; do
		IFS=: read -r what qfmt img <<<"$c"
		name=$KREL-$what
		wantk "$what" || continue
		why=()
		d=$work/fmt-$what
		rm -rf "$d"
		mkdir -p "$d"
		case $what in
		vdi) qemu-img convert -f raw -O vdi "$work/root.raw" "$d/$img" ;;
		vmdk-split) qemu-img convert -f raw -O vmdk -o subformat=twoGbMaxExtentSparse \
			"$work/root.raw" "$d/$img" ;;
		esac || { notok "$name" "qemu-img convert to $qfmt failed"; continue; }
		files=("$d"/*)
		mkhost "$work/host.ext4" "${files[@]}"
		case_boot "$name" "$work/host.ext4" raw "$base vdimg.image=UUID=$HOST_UUID:/$img"
		check_booted "$name" "/run/vdimg/host/${img//./\\.}" || continue
		rm -rf "$d"
		mkdir -p "$d"
		for f in "${files[@]}"; do
			host_get "$work/host.ext4" "${f##*/}" "$f" || why+=("${f##*/} is gone from the host")
		done
		check_host
		check_qemu "$d/$img" "$qfmt"
		m=$(image_marker "$d/$img" "$qfmt")
		grep -q 'marker written by the boot test' <<<"$m" || why+=("the marker is not inside $img")
		grep -q 'ROOTFSCK-FAILED' <<<"$m" && why+=("the root fs in $img is not fsck-clean")
		rm -rf "$d"
		if [ ${#why[@]} -eq 0 ]; then
			ok "$name"
		else
			notok "$name" "${why[@]}"
		fi
	done

	# (b) errors: the emergency shell with one line, no hang
	if wantk missing-file; then
		mkhost "$work/host.ext4" "$work/root.vhdx"
		case_error "$KREL-missing-file" \
			"console=ttyS0 root=UUID=$ROOT_UUID quiet vdimg.image=UUID=$HOST_UUID:/nope.vhdx" \
			"vdimg: /nope\\.vhdx: no such file on UUID=$HOST_UUID"
	fi
	if wantk missing-host; then
		mkhost "$work/host.ext4" "$work/root.vhdx"
		case_error "$KREL-missing-host" \
			"console=ttyS0 root=UUID=$ROOT_UUID quiet vdimg.timeout=3 vdimg.image=UUID=0bad0bad-0000-4000-8000-000000000000:/root.vhdx" \
			"vdimg: UUID=0bad0bad-0000-4000-8000-000000000000 \\(holding /root\\.vhdx\\) did not appear within 3 s"
	fi

	# (c) overlay: the image is unchanged, the root was writable
	name=$KREL-overlay
	if wantk overlay; then
		mkhost "$work/host.ext4" "$work/root.vhdx"
		sum0=$(sha256sum <"$work/root.vhdx")
		case_boot "$name" "$work/host.ext4" raw "$base vdimg.image=UUID=$HOST_UUID:/root.vhdx,overlay"
		if check_booted "$name" /run/vdimg/tmp/; then
			why=()
			host_get "$work/host.ext4" root.vhdx "$work/out.vhdx" || why+=("root.vhdx is gone from the host")
			[ "$(sha256sum <"$work/out.vhdx")" = "$sum0" ] || why+=("root.vhdx changed (sha256)")
			m=$(image_marker "$work/out.vhdx" vhdx)
			grep -q 'marker written' <<<"$m" && why+=("the marker reached the image through the overlay")
			check_host
			if [ ${#why[@]} -eq 0 ]; then
				ok "$name"
			else
				notok "$name" "${why[@]}"
			fi
		fi
	fi

	# (d) a differencing VHD child over a dynamic VHD base, given with chain=
	name=$KREL-vhd-diff
	if wantk vhd-diff; then
		d=$work/diff
		rm -rf "$d"
		mkdir -p "$d"
		cp --sparse=always "$work/base.vhd" "$d/base.vhd"
		if ! "$vdimgctl" create -t vhd --parent "$d/base.vhd" "$d/child.vhd" >"$work/create.log" 2>&1; then
			notok "$name" "vdimgctl create --parent failed: $(head -n1 "$work/create.log")"
		else
			mkhost "$work/host.ext4" "$d/base.vhd" "$d/child.vhd"
			sum0=$(sha256sum <"$d/base.vhd")
			case_boot "$name" "$work/host.ext4" raw \
				"$base vdimg.image=UUID=$HOST_UUID:/child.vhd,chain=/base.vhd"
			if check_booted "$name" '/run/vdimg/host/child\.vhd'; then
				why=()
				host_get "$work/host.ext4" base.vhd "$d/out-base.vhd" || why+=("base.vhd is gone")
				[ "$(sha256sum <"$d/out-base.vhd")" = "$sum0" ] || why+=("base.vhd changed (sha256)")
				check_host
				# the booted child, put back beside the base it was made over, committed
				# into that base offline: the marker must then be in the base
				host_get "$work/host.ext4" child.vhd "$d/child.vhd" || why+=("child.vhd is gone")
				"$vdimgctl" check "$d/child.vhd" >"$work/check.log" 2>&1 ||
					why+=("vdimgctl check child.vhd: $(head -n 2 "$work/check.log" | tr '\n' ' ')")
				if ! "$vdimgctl" commit "$d/child.vhd" >"$work/commit.log" 2>&1; then
					why+=("vdimgctl commit failed: $(head -n1 "$work/commit.log")")
				else
					m=$(image_marker "$d/base.vhd" vpc)
					grep -q 'marker written by the boot test' <<<"$m" ||
						why+=("the marker is not in the chain")
					grep -q 'ROOTFSCK-FAILED' <<<"$m" && why+=("the root fs in the chain is not fsck-clean")
				fi
				if [ ${#why[@]} -eq 0 ]; then
					ok "$name"
				else
					notok "$name" "${why[@]}"
				fi
			fi
		fi
	fi

	# (e) NTFS host (the kernel's ntfs3 driver): mkntfs + ntfscp, checked with ntfscat/ntfsinfo
	name=$KREL-vhdx-ntfs
	if wantk vhdx-ntfs; then
		if ! command -v mkntfs >/dev/null || ! command -v ntfscp >/dev/null; then
			skip "$name" "ntfs-3g is not installed (.ci/deps.sh)"
		elif ! find "/lib/modules/$KREL" -name 'ntfs3.ko*' | grep -q .; then
			skip "$name" "$KREL has no ntfs3 module"
		else
			rm -f "$work/host.ntfs"
			truncate -s 256M "$work/host.ntfs"
			mkntfs -F -f -q -L vdimghost "$work/host.ntfs" >/dev/null 2>&1 &&
				ntfscp -f "$work/host.ntfs" "$work/root.vhdx" root.vhdx >/dev/null 2>&1 ||
				notok "$name" "could not make the NTFS host (mkntfs, ntfscp)"
			ntfs_uuid=$(blkid -o value -s UUID "$work/host.ntfs")
			case_boot "$name" "$work/host.ntfs" raw \
				"$base vdimg.image=UUID=$ntfs_uuid:/root.vhdx"
			if check_booted "$name"; then
				why=()
				grep -aq 'BOOTTEST: host /dev/vda /run/vdimg/host ntfs3' "$BOOT_LOG" ||
					why+=("the host was not mounted with ntfs3")
				ntfscat "$work/host.ntfs" root.vhdx >"$work/out.vhdx" 2>/dev/null ||
					why+=("root.vhdx cannot be read back with ntfscat")
				check_qemu "$work/out.vhdx"
				m=$(image_marker "$work/out.vhdx" vhdx)
				grep -q 'marker written by the boot test' <<<"$m" || why+=("the marker is not inside the VHDX")
				grep -q 'ROOTFSCK-FAILED' <<<"$m" && why+=("the root fs in the VHDX is not fsck-clean")
				flags=$(ntfsinfo -m "$work/host.ntfs" 2>/dev/null | sed -n 's/.*Volume Flags: *//p')
				note "$name: NTFS volume flags after shutdown: ${flags:-?}"
				[ "$flags" = 0x0000 ] || why+=("the NTFS volume is left dirty (flags ${flags:-?})")
				if [ ${#why[@]} -eq 0 ]; then
					ok "$name"
				else
					notok "$name" "${why[@]}"
				fi
			fi
		fi
	fi

	# (g) a qcow2 root, and a power cut: the VM is killed as soon as the root's init has written
	# the marker and synced. What was synced must be in the image, the image must have no
	# corruption (qcow2's refcounts are checked; leaks are allowed after a crash), and both file
	# systems must recover (their journals replayed) without errors.
	name=$KREL-qcow2-powercut
	if wantk qcow2-powercut; then
		why=()
		rm -f "$work/root.qcow2"
		qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/root.qcow2" ||
			why+=("qemu-img convert to qcow2 failed")
		mkhost "$work/host.ext4" "$work/root.qcow2"
		log=$work/$name.console
		boot_vm "/boot/vmlinuz-$KREL" "$INITRD" "$work/host.ext4" raw \
			"$base vdimg.image=UUID=$HOST_UUID:/root.qcow2" "$log" 'BOOTTEST: marker written'
		rc=$?
		[ "$rc" -eq 0 ] || why+=("the root's init never wrote the marker (status $rc)")
		grep -aqE 'BOOTTEST: root on /dev/vdimg[0-9]+p1' "$log" || why+=("the root was not on a vdimg partition")
		# the host ext4 was cut off mid-flight: replay the journal of a copy (e2fsck -p), then
		# read it; the cut original is booted again below
		cp --sparse=always "$work/host.ext4" "$work/host-cut.ext4"
		e2fsck -fp "$work/host-cut.ext4" >"$work/hostfsck.log" 2>&1
		[ $? -le 1 ] || why+=("the host ext4 does not recover: $(tail -n 2 "$work/hostfsck.log" | tr '\n' ' ')")
		if host_get "$work/host-cut.ext4" root.qcow2 "$work/out.qcow2"; then
			qemu-img check -q "$work/out.qcow2" >"$work/check.log" 2>&1
			c=$?
			[ "$c" -eq 0 ] || [ "$c" -eq 3 ] ||
				why+=("qemu-img check (status $c): $(head -n 3 "$work/check.log" | tr '\n' ' ')")
			rm -f "$work/check.raw" "$work/check.raw.fs"
			if qemu-img convert -f qcow2 -O raw "$work/out.qcow2" "$work/check.raw"; then
				root_fs_of "$work/check.raw" "$work/check.raw.fs"
				e2fsck -fp "$work/check.raw.fs" >"$work/rootfsck.log" 2>&1
				[ $? -le 1 ] || why+=("the root fs does not recover: $(tail -n 2 "$work/rootfsck.log" | tr '\n' ' ')")
				debugfs -R 'cat /marker' "$work/check.raw.fs" 2>/dev/null |
					grep -q 'marker written by the boot test' ||
					why+=("the synced marker is not in the image")
			else
				why+=("qemu-img cannot read the image back")
			fi
			rm -f "$work/check.raw" "$work/check.raw.fs" "$work/out.qcow2"
		else
			why+=("root.qcow2 is gone from the host")
		fi
		rm -f "$work/host-cut.ext4"
		if [ ${#why[@]} -eq 0 ]; then
			ok "$name"
		else
			notok "$name" "${why[@]}" "console tail:"
			console_tail "$log" | sed 's/^/#   /'
		fi
		# the initramfs finds the host dirty (its journal not replayed) and the image's root
		# fs too: both recover on mount, the boot finds the synced marker and ends clean
		name=$KREL-qcow2-powercut-again
		case_boot "$name" "$work/host.ext4" raw "$base vdimg.image=UUID=$HOST_UUID:/root.qcow2"
		if check_booted "$name" '/run/vdimg/host/root\.qcow2'; then
			why=()
			grep -aq 'BOOTTEST: previous marker: marker written by the boot test' "$BOOT_LOG" ||
				why+=("the boot after the power cut does not find the synced marker")
			check_host
			if host_get "$work/host.ext4" root.qcow2 "$work/out.qcow2"; then
				qemu-img check -q "$work/out.qcow2" >"$work/check.log" 2>&1
				c=$?
				[ "$c" -eq 0 ] || [ "$c" -eq 3 ] ||
					why+=("qemu-img check (status $c): $(head -n 3 "$work/check.log" | tr '\n' ' ')")
				m=$(image_marker "$work/out.qcow2" qcow2)
				grep -q 'ROOTFSCK-FAILED' <<<"$m" && why+=("the root fs is not fsck-clean")
				rm -f "$work/out.qcow2"
			else
				why+=("root.qcow2 is gone from the host")
			fi
			if [ ${#why[@]} -eq 0 ]; then
				ok "$name"
			else
				notok "$name" "${why[@]}"
			fi
		fi
	fi

	# (i) two images at once: the root through an overlay kept on the host
	# (overlay=/root-ovl.qcow2), and a qcow2 data disk attached at its internal snapshot s1
	# (read-only), whose current state differs; the root's init prints the data disk's md5
	name=$KREL-multi
	if wantk multi; then
		why=()
		d=$work/multi
		rm -rf "$d"
		mkdir -p "$d"
		cp --sparse=always "$work/root.vhdx" "$d/root.vhdx"
		if ! { qemu-img create -q -f qcow2 "$d/data.qcow2" 1M &&
			qemu-io -f qcow2 -c 'write -q -P 0xa1 0 1M' "$d/data.qcow2" >/dev/null &&
			qemu-img snapshot -c s1 "$d/data.qcow2" &&
			qemu-io -f qcow2 -c 'write -q -P 0xb2 0 1M' "$d/data.qcow2" >/dev/null; }; then
			notok "$name" "could not make data.qcow2"
		else
			want=$(head -c 1048576 /dev/zero | tr '\0' '\241' | md5sum | cut -d' ' -f1)
			sum0=$(cat "$d/root.vhdx" "$d/data.qcow2" | sha256sum)
			mkhost "$work/host.ext4" "$d/root.vhdx" "$d/data.qcow2"
			case_boot "$name" "$work/host.ext4" raw "$base vdimg.image=UUID=$HOST_UUID:/root.vhdx,overlay=/root-ovl.qcow2 vdimg.image=UUID=$HOST_UUID:/data.qcow2,snapshot=s1"
			if check_booted "$name" '/run/vdimg/host/root-ovl\.qcow2'; then
				grep -aqE 'BOOTTEST: list /dev/vdimg1 +/run/vdimg/host/data\.qcow2' "$BOOT_LOG" ||
					why+=("vdimgctl list does not show data.qcow2 on /dev/vdimg1")
				grep -aq "BOOTTEST: md5 vdimg1 $want" "$BOOT_LOG" ||
					why+=("/dev/vdimg1 does not read as snapshot s1 ($(grep -a 'BOOTTEST: md5 vdimg1' "$BOOT_LOG" | tr -d '\r'))")
				check_host
				for f in root.vhdx data.qcow2 root-ovl.qcow2; do
					host_get "$work/host.ext4" "$f" "$d/$f" || why+=("$f is not on the host")
				done
				[ "$(cat "$d/root.vhdx" "$d/data.qcow2" | sha256sum)" = "$sum0" ] ||
					why+=("root.vhdx or data.qcow2 changed (sha256)")
				# the overlay names its parent by its path in the booted system
				if qemu-img rebase -u -f qcow2 -b root.vhdx -F vhdx "$d/root-ovl.qcow2"; then
					check_qemu "$d/root-ovl.qcow2"
					m=$(image_marker "$d/root-ovl.qcow2" qcow2)
					grep -q 'marker written by the boot test' <<<"$m" ||
						why+=("the marker is not in the overlay")
					grep -q 'ROOTFSCK-FAILED' <<<"$m" && why+=("the root fs is not fsck-clean")
				else
					why+=("qemu-img rebase -u of the overlay failed")
				fi
				if [ ${#why[@]} -eq 0 ]; then
					ok "$name"
				else
					notok "$name" "${why[@]}"
				fi
			fi
		fi
		rm -rf "$d"
	fi

	# (h) the other host file systems the hook supports: xfs, btrfs, vfat, each made and filled
	# offline (mkfs.xfs -p, mkfs.btrfs --rootdir, mkfs.vfat + mcopy); the image is read back with
	# the file system's own offline tool where it has one (btrfs restore, mcopy; xfs has none,
	# and its log, kept by the freeze at shutdown, needs a mount to replay: there a second boot
	# must find the first one's marker)
	for hfs in xfs btrfs vfat; do
		name=$KREL-vhdx-$hfs
		wantk "vhdx-$hfs" || continue
		why=()
		hd=$work/host.$hfs
		huuid=$HOST_UUID
		rm -f "$hd" "$work/out.vhdx"
		truncate -s 320M "$hd"
		case $hfs in
		xfs)
			printf '%s\n' /dev/null '0 0' 'd--755 0 0' \
				"root.vhdx ---644 0 0 $work/root.vhdx" '$' '$' >"$work/xfs.proto"
			mkfs.xfs -q -f -m uuid="$huuid" -L vdimghost -p "$work/xfs.proto" "$hd" \
				>"$work/mkfs.log" 2>&1 ;;
		btrfs)
			rm -rf "$work/hostdir" && mkdir -p "$work/hostdir" &&
				cp --sparse=always "$work/root.vhdx" "$work/hostdir/" &&
				mkfs.btrfs -q -f -U "$huuid" -L vdimghost --rootdir "$work/hostdir" "$hd" \
					>"$work/mkfs.log" 2>&1 ;;
		vfat)
			huuid=5A1E-B007
			rm -f "$hd"
			mkfs.vfat -i 5A1EB007 -n VDIMGHOST -C "$hd" $((320 * 1024)) >"$work/mkfs.log" 2>&1 &&
				mcopy -i "$hd" "$work/root.vhdx" ::/root.vhdx >>"$work/mkfs.log" 2>&1 ;;
		esac
		if [ $? -ne 0 ] || ! command -v "mkfs.$hfs" >/dev/null; then
			notok "$name" "could not make the $hfs host: $(tail -n 2 "$work/mkfs.log" | tr '\n' ' ')"
			continue
		fi
		case_boot "$name" "$hd" raw "$base vdimg.image=UUID=$huuid:/root.vhdx"
		check_booted "$name" || continue
		grep -aq "BOOTTEST: host /dev/vda /run/vdimg/host $hfs" "$BOOT_LOG" ||
			why+=("the host was not mounted as $hfs")
		case $hfs in
		xfs)
			# a frozen XFS keeps its log for the next mount to replay (xfs_repair cannot
			# check it before that): boot again; the replayed host must give the image
			# back with the first boot's marker in it
			log1=$BOOT_LOG
			case_boot "$name-again" "$hd" raw "$base vdimg.image=UUID=$huuid:/root.vhdx"
			check_booted "$name-again" || continue
			grep -aq 'BOOTTEST: previous marker: marker written by the boot test' "$BOOT_LOG" ||
				why+=("the second boot does not find the first boot's marker")
			BOOT_LOG=$log1 ;;
		btrfs)
			btrfs check --readonly "$hd" >"$work/hostfsck.log" 2>&1 ||
				why+=("btrfs check: $(tail -n 2 "$work/hostfsck.log" | tr '\n' ' ')")
			rm -rf "$work/restore" && mkdir -p "$work/restore" &&
				btrfs restore -i "$hd" "$work/restore" >/dev/null 2>&1 &&
				mv "$work/restore/root.vhdx" "$work/out.vhdx" ;;
		vfat)
			mcopy -i "$hd" ::/root.vhdx "$work/out.vhdx" 2>/dev/null ;;
		esac
		if [ "$hfs" != xfs ]; then
			if [ ! -s "$work/out.vhdx" ]; then
				why+=("root.vhdx cannot be read back from the $hfs host")
			else
				check_qemu "$work/out.vhdx"
				m=$(image_marker "$work/out.vhdx" vhdx)
				grep -q 'marker written by the boot test' <<<"$m" ||
					why+=("the marker is not inside the VHDX")
				grep -q 'ROOTFSCK-FAILED' <<<"$m" && why+=("the root fs in the VHDX is not fsck-clean")
			fi
		fi
		rm -f "$hd" "$work/out.vhdx"
		if [ ${#why[@]} -eq 0 ]; then
			ok "$name"
		else
			notok "$name" "${why[@]}"
		fi
	done

	# (f) dracut: the same boot as (a), and a missing file ending in dracut's emergency shell
	if wantk dracut-vhdx-ext4 || wantk dracut-missing-file; then
		if ! command -v dracut >/dev/null; then
			skip "$KREL-dracut" "dracut is not installed (dracut-core, .ci/deps.sh)"
		elif ! build_dracut "$KREL" "$ko" "$work/dracut-$KREL" || ! [ -s "$work/dracut-$KREL" ]; then
			notok "$KREL-dracut" "dracut failed"
			tail -n 20 "$work/dracut-$KREL.log" | sed 's/^/# /'
		else
			saved=$INITRD
			INITRD=$work/dracut-$KREL
			name=$KREL-dracut-vhdx-ext4
			if wantk dracut-vhdx-ext4; then
				mkhost "$work/host.ext4" "$work/root.vhdx"
				case_boot "$name" "$work/host.ext4" raw "$base vdimg.image=UUID=$HOST_UUID:/root.vhdx"
				if check_booted "$name"; then
					why=()
					host_get "$work/host.ext4" root.vhdx "$work/out.vhdx" || why+=("root.vhdx is gone")
					check_host
					check_qemu "$work/out.vhdx"
					m=$(image_marker "$work/out.vhdx" vhdx)
					grep -q 'marker written by the boot test' <<<"$m" || why+=("the marker is not inside the VHDX")
					if [ ${#why[@]} -eq 0 ]; then
						ok "$name"
					else
						notok "$name" "${why[@]}"
					fi
				fi
			fi
			name=$KREL-dracut-missing-file
			if wantk dracut-missing-file; then
				mkhost "$work/host.ext4" "$work/root.vhdx"
				log=$work/$name.console
				t0=$(date +%s)
				boot_vm "/boot/vmlinuz-$KREL" "$INITRD" "$work/host.ext4" raw \
					"console=ttyS0 root=UUID=$ROOT_UUID quiet rd.shell vdimg.image=UUID=$HOST_UUID:/nope.vhdx" \
					"$log" 'dracut:/#'
				rc=$?
				note "$name: boot ended in $(($(date +%s) - t0)) s (status $rc; $(boot_status "$rc"))"
				why=()
				[ "$rc" -eq 0 ] || why+=("no emergency shell prompt (status $rc)")
				grep -aq "FATAL: vdimg: /nope.vhdx: no such file on UUID=$HOST_UUID" "$log" ||
					why+=("no 'FATAL: vdimg: /nope.vhdx: no such file' line")
				grep -aq 'BOOTTEST' "$log" && why+=("the root's init ran")
				if [ ${#why[@]} -eq 0 ]; then
					note "$name: $(grep -a 'FATAL: vdimg' "$log" | head -n1 | tr -d '\r')"
					ok "$name"
				else
					notok "$name" "${why[@]}" "console tail:"
					console_tail "$log" | sed 's/^/#   /'
				fi
			fi
			INITRD=$saved
		fi
	fi

	# (h) a minimal Debian root (mmdebstrap, systemd as init) in a VHDX: the real systemd shutdown
	# path with the system-shutdown hook, and the installed udev rules, vdimgtab units and mount
	# helper at work. The root tarball is made once (a few minutes, from the apt archive) and
	# cached in /var/cache/vdimg/; VDIMG_BOOT_DEBIAN=0 leaves the case out.
	name=$KREL-debian-systemd
	if [ "${VDIMG_BOOT_DEBIAN:-1}" != 0 ] && wantk debian-systemd; then
		case_debian "$name"
	elif [ "${VDIMG_BOOT_DEBIAN:-1}" = 0 ] && [ -z "$kfilter" ]; then
		skip "$name" "VDIMG_BOOT_DEBIAN=0"
	fi
done

echo "1..$N"
echo "$P passed, $F failed, $S skipped"
[ "$F" -eq 0 ]
