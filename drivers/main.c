// SPDX-License-Identifier: GPL-2.0
/*
 * vdimg: block devices backed by virtual-disk image files (VHD, VHDX, VDI, VMDK, QCOW2, QED,
 * Parallels, raw, DMG, ISO). Module parameters, init and exit. See
 * Documentation/admin-guide/vdimg.rst.
 */
#include "vdimg.h"
#include <linux/module.h>

unsigned int vdimg_max_devices = 256;
module_param_named(max_devices, vdimg_max_devices, uint, 0444);
MODULE_PARM_DESC(max_devices, "Most vdimg devices attached at once (default: 256)");

unsigned int vdimg_max_part = 15;
module_param_named(max_part, vdimg_max_part, uint, 0444);
MODULE_PARM_DESC(max_part, "Partitions per device, rounded up to 2^n - 1 (default: 15)");

/*
 * vdimg.image= and vdimg.timeout= on the kernel command line are read by the initramfs scripts that
 * attach a root image at boot (admin-guide/vdimg.rst); the module takes them and does nothing, so
 * that loading it does not log an unknown parameter.
 */
static int vdimg_param_boot_only(const char *val, const struct kernel_param *kp)
{
	return 0;
}

static const struct kernel_param_ops vdimg_boot_only_ops = {
	.set = vdimg_param_boot_only,
};

module_param_cb(image, &vdimg_boot_only_ops, NULL, 0);
MODULE_PARM_DESC(image, "Read by the initramfs (an image to attach at boot); the module ignores it");
module_param_cb(timeout, &vdimg_boot_only_ops, NULL, 0);
MODULE_PARM_DESC(timeout, "Read by the initramfs (seconds to wait for the host); the module ignores it");

static int __init vdimg_init(void)
{
	int ret;

	if (vdimg_max_part > 255)
		vdimg_max_part = 255;
	if (!vdimg_max_devices)
		vdimg_max_devices = 1;
	ret = vdimg_dev_init();
	if (ret)
		return ret;
	ret = vdimg_ctl_init();
	if (ret)
		goto out_dev_exit;
	pr_info("ready (formats: 0x%llx)\n", (unsigned long long)vdimg_formats_built_in());
	return 0;

out_dev_exit:
	vdimg_dev_exit();
	return ret;
}

static void __exit vdimg_exit(void)
{
	vdimg_ctl_exit();
	vdimg_dev_exit();
}

module_init(vdimg_init);
module_exit(vdimg_exit);

MODULE_DESCRIPTION("Block devices backed by virtual-disk image files");
MODULE_AUTHOR("The vdimg developers");
MODULE_LICENSE("GPL");
