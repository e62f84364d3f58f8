#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# dracut module "vdimg": boot with the root file system inside an image file. Adds vdimg.ko,
# vdimgctl, the udev rule for /dev/disk/by-* links of vdimg devices, /usr/lib/vdimg/vdimg-boot and
# the host file system modules; vdimg-cmdline.sh queues the attach for the vdimg.image= the
# command line names. Installed as /usr/lib/dracut/modules.d/90vdimg/. Not included unless asked
# for: add_dracutmodules+=" vdimg " in /etc/dracut.conf.d/vdimg.conf, or dracut --add vdimg.
#
# For builds from the source tree the environment may name the files instead of their installed
# places: VDIMG_KO, VDIMGCTL, VDIMG_BOOT, VDIMG_RULES (as for the initramfs-tools hook).

# called by dracut
check() {
    return 255
}

# called by dracut
depends() {
    echo udev-rules rootfs-block
    return 0
}

# called by dracut
installkernel() {
    if [[ -n ${VDIMG_KO-} ]]; then
        inst_simple "$VDIMG_KO" "/lib/modules/$kernel/updates/vdimg/vdimg.ko"
    else
        hostonly='' instmods vdimg
    fi
    hostonly='' instmods ext4 xfs btrfs vfat exfat ntfs3 nls_utf8 nls_ascii nls_cp437 nls_iso8859-1
    return 0
}

# called by dracut
install() {
    local tool=${VDIMGCTL-} boot=${VDIMG_BOOT:-/usr/lib/vdimg/vdimg-boot} rules=${VDIMG_RULES-}

    [[ -n $tool ]] || tool=$(find_binary vdimgctl)
    if [[ -z $tool ]]; then
        dfatal "vdimg: vdimgctl not found"
        return 1
    fi
    inst "$tool" /usr/sbin/vdimgctl
    inst_simple "$boot" /usr/lib/vdimg/vdimg-boot
    if [[ -n $rules ]]; then
        inst_simple "$rules" /usr/lib/udev/rules.d/60-vdimg.rules
    else
        inst_rules 60-vdimg.rules
    fi
    inst_multiple blkid udevadm modprobe mount readlink grep sed cut head tr sleep mkdir
    inst_hook cmdline 90 "$moddir/vdimg-cmdline.sh"
    dracut_need_initqueue
}
