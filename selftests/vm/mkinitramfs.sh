#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# mkinitramfs.sh: build the busybox initramfs that the VM tests boot, for one kernel release.
#
#   mkinitramfs.sh -r RELEASE [-b MODBASE] [-k vdimg.ko] [-t vdimgctl] [-a abi_test] [-x PROG]...
#                  -o OUT.cpio.gz
#
# RELEASE    the kernel release the modules are for (lib/modules/RELEASE)
# MODBASE    the directory that holds lib/modules/RELEASE (default /, a debug kernel's output dir)
# vdimg.ko   the module to ship (optional: without it the vdimg tests skip)
# vdimgctl, abi_test  the tool and the ABI test program (optional likewise)
# PROG       a test helper program, shipped as /vmtest/NAME (replay-log, lw-work; optional)
#
# Contents: busybox (applets installed by /init), the kernel modules the tests use with their
# dependencies (decompressed, then depmod), the userspace tools with their shared libraries, the
# guest side of the harness (/init, /vmtest/lib.sh, /vmtest/tests, bench.sh, demo.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
release= modbase=/ vdimg_ko= vdimgctl= abi_test= out= extra_progs=
while getopts r:b:k:t:a:x:o: opt; do
	case $opt in
	r) release=$OPTARG ;;
	b) modbase=$OPTARG ;;
	k) vdimg_ko=$OPTARG ;;
	t) vdimgctl=$OPTARG ;;
	a) abi_test=$OPTARG ;;
	x) extra_progs="$extra_progs $OPTARG" ;;
	o) out=$OPTARG ;;
	*) echo "usage: $0 -r RELEASE [-b MODBASE] [-k vdimg.ko] [-t vdimgctl] [-a abi_test] -o OUT" >&2
	   exit 2 ;;
	esac
done
if [ -z "$release" ] || [ -z "$out" ]; then
	echo "mkinitramfs.sh: -r RELEASE and -o OUT are required" >&2
	exit 2
fi
moddir=$modbase/lib/modules/$release
if [ ! -d "$moddir" ]; then
	echo "mkinitramfs.sh: $moddir: no such directory" >&2
	exit 1
fi

# Kernel modules the tests load (or that the vdimg module needs); missing ones are reported and
# the tests that need them skip. Built-in ones need nothing.
MODULES="virtio_pci virtio_blk ext4 crc32c_generic loop nbd"
MODULES="$MODULES isofs"	# 105-cue: ISO 9660 on a CUE data track
MODULES="$MODULES dm-log-writes dm-flakey"	# 340-log-writes (dm-mod comes as their dependency)
MODULES="$MODULES dm-dust"	# 349-dm-dust: the debug kernel's only (Debian's do not build it)
MODULES="$MODULES nfsd nfsv4"	# 096-nfs-golden-base: NFSv4 server and client over loopback
# Userspace tools (absolute paths in the guest are the host's paths).
TOOLS="/usr/bin/fio /usr/bin/qemu-img /usr/bin/qemu-nbd /usr/sbin/mkfs.ext4 /usr/sbin/mke2fs
/usr/sbin/e2fsck /usr/sbin/sfdisk /usr/sbin/blkid /usr/sbin/losetup /usr/sbin/blkdiscard
/usr/bin/lsblk /usr/bin/sha256sum /usr/bin/stat /usr/bin/du /usr/bin/dd /usr/bin/cmp /usr/bin/kmod
/usr/sbin/debugfs /usr/bin/truncate /usr/bin/fallocate /usr/bin/qemu-io"
TOOLS="$TOOLS /usr/bin/mount /usr/bin/umount"	# 330-mount-helper: util-linux mount runs mount.vdimg
TOOLS="$TOOLS /usr/sbin/resize2fs"	# 325-online-grow: grows the mounted ext4
TOOLS="$TOOLS /usr/sbin/dmsetup"	# 340-log-writes: dm-log-writes under the host fs
TOOLS="$TOOLS /usr/sbin/filefrag"	# 349-dm-dust: where an image's data lies on the host fs
# 096-nfs-golden-base: the NFSv4 server (nfs-kernel-server) and client (nfs-common)
TOOLS="$TOOLS /usr/sbin/rpc.nfsd /usr/sbin/rpc.mountd /usr/sbin/exportfs /sbin/mount.nfs4"

root=$(mktemp -d "${TMPDIR:-/tmp}/vdimg-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc,proc,sys,dev,tmp,run}
mkdir -p "$root"/{scratch,vmtest/tests,lib/modules/"$release",var/lock,var/run}

# busybox: /init runs `busybox --install -s` to create the applet links.
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

# --- userspace tools and their libraries
copy_libs() {
	# every library ldd names, at the same path (ld.so finds them through ld.so.cache below)
	{ ldd "$1" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\// {print $1}' | while read -r lib; do
		if [ ! -e "$root$lib" ]; then
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		fi
	done
}
copy_bin() { # copy_bin SRC DEST
	mkdir -p "$root$(dirname "$2")"
	cp -L "$1" "$root$2"
	copy_libs "$1"
}
for t in $TOOLS; do
	if [ -x "$t" ]; then
		copy_bin "$t" "$t"
	else
		echo "mkinitramfs.sh: warning: $t not installed; tests that need it will skip" >&2
	fi
done
ln -sf /usr/bin/kmod "$root/sbin/modprobe"
ln -sf /usr/bin/kmod "$root/sbin/insmod"
ln -sf /usr/bin/kmod "$root/sbin/rmmod"
ln -sf /usr/bin/kmod "$root/sbin/lsmod"
if [ -n "$vdimgctl" ]; then
	copy_bin "$vdimgctl" /usr/sbin/vdimgctl
fi
# the mount helper and the vdimgtab helper (tests/330-mount-helper.sh)
install -D -m 0755 "$here/../../tools/system/mount.vdimg" "$root/sbin/mount.vdimg"
install -D -m 0755 "$here/../../tools/system/vdimgtab" "$root/usr/lib/vdimg/vdimgtab"
if [ -n "$abi_test" ]; then
	copy_bin "$abi_test" /vmtest/abi_test
fi
for p in $extra_progs; do
	copy_bin "$p" "/vmtest/$(basename "$p")"
done
echo /lib/x86_64-linux-gnu >"$root/etc/ld.so.conf"
echo /usr/lib/x86_64-linux-gnu >>"$root/etc/ld.so.conf"
ldconfig -r "$root"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "nobody:x:65534:65534:nobody:/nonexistent:/bin/false" >>"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
ln -s /proc/mounts "$root/etc/mtab"
if [ -f /etc/mke2fs.conf ]; then
	cp /etc/mke2fs.conf "$root/etc/"
fi
# the NFS server's state (exportfs writes etab; nfsd keeps v4 client records) and libtirpc's
# transport list (rpc.mountd)
mkdir -p "$root/var/lib/nfs/v4recovery"
: >"$root/var/lib/nfs/etab"
: >"$root/var/lib/nfs/rmtab"
if [ -f /etc/netconfig ]; then
	cp /etc/netconfig "$root/etc/"
fi

# --- kernel modules
install_ko() { # install_ko /path/to/x.ko[.xz|.zst]: copy below lib/modules/RELEASE, decompressed
	local src=$1 rel dst
	rel=${src#"$moddir"/}
	if [ "$rel" = "$src" ]; then
		rel=kernel/other/$(basename "$src")
	fi
	dst=$root/lib/modules/$release/$rel
	mkdir -p "$(dirname "$dst")"
	case $src in
	*.ko.xz) xz -dc "$src" >"${dst%.xz}" ;;
	*.ko.zst) zstd -q -dc "$src" >"${dst%.zst}" ;;
	*.ko.gz) gzip -dc "$src" >"${dst%.gz}" ;;
	*) cp "$src" "$dst" ;;
	esac
}
want_module() { # want_module NAME: the module and everything it depends on
	local deps
	if ! deps=$(modprobe -d "$modbase" -S "$release" --show-depends "$1" 2>/dev/null); then
		echo "mkinitramfs.sh: warning: module $1 not available for $release" >&2
		return 0
	fi
	echo "$deps" | awk '$1 == "insmod" {print $2}' | while read -r ko; do
		install_ko "$ko"
	done
}
for m in $MODULES; do
	want_module "$m"
done
if [ -n "$vdimg_ko" ]; then
	mkdir -p "$root/lib/modules/$release/extra"
	cp "$vdimg_ko" "$root/lib/modules/$release/extra/vdimg.ko"
	for d in $(modinfo -F depends "$vdimg_ko" | tr ',' ' '); do
		want_module "$d"
	done
fi
for f in modules.order modules.builtin modules.builtin.modinfo; do
	if [ -f "$moddir/$f" ]; then
		cp "$moddir/$f" "$root/lib/modules/$release/"
	fi
done
depmod -b "$root" "$release"

# --- the guest side of the harness
cp "$here/init.sh" "$root/init"
chmod 755 "$root/init"
cp "$here/lib.sh" "$here/bench.sh" "$here/demo.sh" "$root/vmtest/"
cp "$here"/tests/*.sh "$root/vmtest/tests/"
# VM_EXTRA_TESTS: a directory of more tests (the harness's own checks of itself, local experiments)
if [ -n "${VM_EXTRA_TESTS:-}" ]; then
	cp "$VM_EXTRA_TESTS"/*.sh "$root/vmtest/tests/"
fi
echo "$release" >"$root/vmtest/release"

mkdir -p "$(dirname "$out")"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
