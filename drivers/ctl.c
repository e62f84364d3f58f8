// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/vdimg-control: the ioctls of include/uapi/linux/vdimg.h. Validates what userspace passes
 * (sizes, flags, reserved fields) and hands the work to dev.c. Structs are versioned by their @size
 * field, so commands are matched without the size bits of the ioctl number.
 */
#include "vdimg.h"
#include <linux/miscdevice.h>
#include <linux/capability.h>
#include <linux/uaccess.h>

#define VDIMG_CMD(c)	((c) & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT))

/* Copy a versioned struct in: at least @ver0 bytes, a longer tail must be zero (-E2BIG). */
static int vdimg_copy_in(void *k, size_t ksize, size_t ver0, const void __user *u, u32 *usize)
{
	if (get_user(*usize, (const u32 __user *)u))
		return -EFAULT;
	if (*usize < ver0)
		return -EINVAL;
	return copy_struct_from_user(k, ksize, u, *usize);
}

static int vdimg_copy_out(void __user *u, const void *k, size_t ksize, u32 usize)
{
	return copy_to_user(u, k, min_t(size_t, ksize, usize)) ? -EFAULT : 0;
}

/*
 * Copy in @n elements of @esize bytes each (the caller's struct size) as @ksize-byte kernel
 * structs: a longer element must have a zero tail (-E2BIG), as for the top-level structs.
 */
static void *vdimg_copy_array_in(u64 uptr, u32 n, size_t ksize, u32 esize)
{
	void *p;
	u32 i;
	int ret;

	p = kvcalloc(n, ksize, GFP_KERNEL);
	if (!p)
		return ERR_PTR(-ENOMEM);
	for (i = 0; i < n; i++) {
		ret = copy_struct_from_user(p + (size_t)i * ksize, ksize,
					    u64_to_user_ptr(uptr + (u64)i * esize), esize);
		if (ret) {
			kvfree(p);
			return ERR_PTR(ret);
		}
	}
	return p;
}

/* An array element size from userspace: 0 means the first version's. */
static int vdimg_elem_size(u32 *size, u32 ver0)
{
	if (!*size)
		*size = ver0;
	if (*size < ver0 || *size > PAGE_SIZE)
		return -EINVAL;
	return 0;
}

#define vdimg_nonzero(field)	memchr_inv(&(field), 0, sizeof(field))

static long vdimg_ctl_attach(void __user *argp)
{
	struct vdimg_layer *layers;
	struct vdimg_attach a;
	u32 usize, i;
	int ret;

	ret = vdimg_copy_in(&a, sizeof(a), VDIMG_ATTACH_SIZE_VER0, argp, &usize);
	if (ret)
		return ret;
	if ((a.flags & ~VDIMG_ATTACH_FLAGS_ALL) || vdimg_nonzero(a.__reserved) ||
	    vdimg_elem_size(&a.layer_size, VDIMG_LAYER_SIZE_VER0))
		return -EINVAL;
	if ((a.flags & VDIMG_ATTACH_DIRECT_IO) && (a.flags & VDIMG_ATTACH_BUFFERED))
		return -EINVAL;
	if (!a.nr_layers || a.nr_layers > VDIMG_MAX_LAYERS)
		return -EINVAL;
	switch (a.logical_block_size) {
	case 0: case 512: case 2048: case 4096:
		break;
	default:
		return -EINVAL;
	}
	layers = vdimg_copy_array_in(a.layers, a.nr_layers, sizeof(*layers), a.layer_size);
	if (IS_ERR(layers))
		return PTR_ERR(layers);
	for (i = 0; i < a.nr_layers; i++) {
		const struct vdimg_layer *l = &layers[i];

		if (l->flags & ~VDIMG_LAYER_FLAGS_ALL || l->__pad || vdimg_nonzero(l->__reserved) ||
		    l->format >= VDIMG_FMT_COUNT ||
		    (!(l->flags & VDIMG_LAYER_DATA_FILE) && l->data_fd) ||
		    (!(l->flags & VDIMG_LAYER_SNAPSHOT) && l->snapshot) ||
		    ((l->flags & VDIMG_LAYER_SNAPSHOT) && !l->snapshot) || l->__pad2 ||
		    (!(l->flags & VDIMG_LAYER_EXTENTS) && (l->extent_fds || l->nr_extents)) ||
		    ((l->flags & VDIMG_LAYER_EXTENTS) &&
		     (!l->nr_extents || l->nr_extents > VDIMG_MAX_EXTENTS))) {
			ret = -EINVAL;
			goto out;
		}
	}
	ret = vdimg_dev_attach(&a, layers);
	if (ret < 0)
		goto out;
	a.index = ret;
	ret = vdimg_copy_out(argp, &a, sizeof(a), usize);
	/* the device exists now; a failed copy-out only hides its number */
out:
	kvfree(layers);
	return ret;
}

static long vdimg_ctl_detach(void __user *argp)
{
	struct vdimg_detach d;
	u32 usize;
	int ret;

	ret = vdimg_copy_in(&d, sizeof(d), VDIMG_DETACH_SIZE_VER0, argp, &usize);
	if (ret)
		return ret;
	if ((d.flags & ~VDIMG_DETACH_FLAGS_ALL) || d.__pad || vdimg_nonzero(d.__reserved))
		return -EINVAL;
	return vdimg_dev_detach(d.index, d.flags);
}

static long vdimg_ctl_info(void __user *argp)
{
	struct vdimg_dev_info info;
	u32 usize;
	int ret;

	ret = vdimg_copy_in(&info, sizeof(info), VDIMG_DEV_INFO_SIZE_VER0, argp, &usize);
	if (ret)
		return ret;
	if (info.flags || vdimg_nonzero(info.__reserved) ||
	    vdimg_elem_size(&info.layer_info_size, VDIMG_LAYER_INFO_SIZE_VER0))
		return -EINVAL;
	ret = vdimg_dev_info(&info, info.layers ? u64_to_user_ptr(info.layers) : NULL);
	if (ret)
		return ret;
	return vdimg_copy_out(argp, &info, sizeof(info), usize);
}

static long vdimg_ctl_features(void __user *argp)
{
	struct vdimg_features f;
	u32 usize;
	int ret;

	ret = vdimg_copy_in(&f, sizeof(f), VDIMG_FEATURES_SIZE_VER0, argp, &usize);
	if (ret)
		return ret;
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.version = VDIMG_ABI_VERSION;
	f.attach_flags = VDIMG_ATTACH_FLAGS_ALL;
	f.formats = vdimg_formats_built_in();
	f.max_layers = VDIMG_MAX_LAYERS;
	f.max_devices = vdimg_max_devices;
	f.layer_flags = VDIMG_LAYER_FLAGS_ALL;
	return vdimg_copy_out(argp, &f, sizeof(f), usize);
}

static long vdimg_ctl_snapshot(void __user *argp)
{
	struct vdimg_snapshot s;
	u32 usize;
	int ret;

	ret = vdimg_copy_in(&s, sizeof(s), VDIMG_SNAPSHOT_SIZE_VER0, argp, &usize);
	if (ret)
		return ret;
	if ((s.flags & ~VDIMG_SNAPSHOT_FLAGS_ALL) || s.__pad || vdimg_nonzero(s.__reserved) ||
	    s.format >= VDIMG_FMT_COUNT || (s.layer_flags & ~VDIMG_LAYER_DATA_FILE) ||
	    (!(s.layer_flags & VDIMG_LAYER_DATA_FILE) && s.data_fd))
		return -EINVAL;
	return vdimg_dev_snapshot(&s);
}

static long vdimg_ctl_resize(void __user *argp)
{
	struct vdimg_resize r;
	u32 usize;
	int ret;

	ret = vdimg_copy_in(&r, sizeof(r), VDIMG_RESIZE_SIZE_VER0, argp, &usize);
	if (ret)
		return ret;
	if (r.flags || r.__pad || vdimg_nonzero(r.__reserved))
		return -EINVAL;
	return vdimg_dev_resize(r.index, r.new_size);
}

static long vdimg_ctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *argp = (void __user *)arg;

	switch (VDIMG_CMD(cmd)) {
	case VDIMG_CMD(VDIMG_CTL_ATTACH):
		if (!capable(CAP_SYS_ADMIN))
			return -EPERM;
		return vdimg_ctl_attach(argp);
	case VDIMG_CMD(VDIMG_CTL_DETACH):
		if (!capable(CAP_SYS_ADMIN))
			return -EPERM;
		return vdimg_ctl_detach(argp);
	case VDIMG_CMD(VDIMG_CTL_SNAPSHOT):
		if (!capable(CAP_SYS_ADMIN))
			return -EPERM;
		return vdimg_ctl_snapshot(argp);
	case VDIMG_CMD(VDIMG_CTL_RESIZE):
		if (!capable(CAP_SYS_ADMIN))
			return -EPERM;
		return vdimg_ctl_resize(argp);
	case VDIMG_CMD(VDIMG_CTL_GET_INFO):
		return vdimg_ctl_info(argp);
	case VDIMG_CMD(VDIMG_CTL_GET_FEATURES):
		return vdimg_ctl_features(argp);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations vdimg_ctl_fops = {
	.owner = THIS_MODULE,
	.open = nonseekable_open,
	.unlocked_ioctl = vdimg_ctl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice vdimg_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = VDIMG_CONTROL_NAME,
	.fops = &vdimg_ctl_fops,
	.mode = 0600,
};

int vdimg_ctl_init(void)
{
	return misc_register(&vdimg_misc);
}

void vdimg_ctl_exit(void)
{
	misc_deregister(&vdimg_misc);
}
