#!/bin/bash
# Install everything the build and the tests need on Debian 12: both target kernels (6.1 from
# bookworm, 6.12 from bookworm-backports) with headers, the VM tooling and the oracles.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
src=/etc/apt/sources.list.d/vdimg-backports.sources
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
	cat > "$src" <<'EOT'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
fi
apt-get update -qq
# resolve the backports metapackages to their versioned packages so the 6.1 ones stay installed too
dep() { apt-cache show "$1=$2" | sed -n 's/^Depends: \([^ ,]*\).*/\1/p' | head -n1; }
bpo=$(apt-cache policy linux-image-amd64 | awk '/bpo/ {print $1; exit}')
img612=$(dep linux-image-amd64 "$bpo")
hdr612=$(dep linux-headers-amd64 "$bpo")
apt-get install -y -qq --no-install-recommends \
	build-essential make gcc pkg-config bc kmod cpio busybox-static xz-utils zstd bzip2 \
	linux-image-amd64 linux-headers-amd64 "$img612" "$hdr612" \
	qemu-system-x86 qemu-utils fio e2fsprogs fdisk util-linux \
	libsmartcols-dev zlib1g-dev libzstd-dev \
	libvhdi-utils libqcow-utils libvmdk-utils python3 python3-docutils sparse \
	clang libclang-rt-14-dev >/dev/null
# boot tests (selftests/boot/run.sh): initramfs-tools and dracut side by side, NTFS, xfs, btrfs and vfat host disks,
# mmdebstrap for the boot tests' Debian root with systemd (made once, cached in /var/cache/vdimg)
apt-get install -y -qq --no-install-recommends initramfs-tools dracut-core ntfs-3g mmdebstrap \
	xfsprogs btrfs-progs dosfstools mtools >/dev/null
# debug kernel (selftests/vm/debug-kernel.sh): kernel build tools and Debian's 6.12 source tarball
apt-get install -y -qq --no-install-recommends \
	flex bison bc libelf-dev libssl-dev rsync cpio kmod xz-utils linux-source-6.12 >/dev/null
# the third-party sample images (QEMU's iotest images, from Debian's qemu source package, about
# 23 MiB, cached under /var/cache/vdimg/samples); a failed fetch is reported, the tests then skip
bash "$(dirname "$0")/../selftests/samples.sh"
# CUE/BIN and DMG tests: ISO 9660 images to wrap in cue sheets, and a second DMG reader
apt-get install -y -qq --no-install-recommends genisoimage dmg2img >/dev/null
# packaging host test (selftests/host/test_pkg.sh): bash completion, and zsh for the zsh one
apt-get install -y -qq --no-install-recommends bash-completion zsh >/dev/null
# Debian packages stage (selftests/pkg/debs.sh): dpkg-buildpackage, lintian, and DKMS building the
# module for both kernels at install (openssl makes DKMS's module signing key)
apt-get install -y -qq --no-install-recommends dpkg-dev debhelper dh-dkms dkms lintian fakeroot \
	openssl >/dev/null
# crash replay and fault tests (selftests/vm/tests/340-log-writes.sh, 345-dm-flakey.sh): dmsetup in the guest
apt-get install -y -qq --no-install-recommends dmsetup >/dev/null
# NFS golden-base test (selftests/vm/tests/096-nfs-golden-base.sh): the NFSv4 server (rpc.nfsd,
# rpc.mountd, exportfs) and client (mount.nfs4) are copied into the guest; the host needs no NFS
# server of its own, so a systemd host does not keep the one the package enables
apt-get install -y -qq --no-install-recommends nfs-kernel-server nfs-common >/dev/null
if [ -d /run/systemd/system ]; then
	systemctl disable --now nfs-server.service >/dev/null 2>&1 || true
fi
