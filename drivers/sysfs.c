// SPDX-License-Identifier: GPL-2.0
/*
 * /sys/block/vdimgN/vdimg/: what a device is made of. Registered with the disk so the attributes
 * exist before the uevent; documented in Documentation/ABI/testing/sysfs-block-vdimg. The layers
 * stay open until after del_gendisk() has removed these files, so no locking is needed to read them.
 */
#include "vdimg.h"

static struct vdimg_device *vdimg_from_dev(struct device *d)
{
	return dev_to_disk(d)->private_data;
}

static ssize_t vdimg_emit_path(struct file *file, char *buf, int at)
{
	char *tmp = kmalloc(PATH_MAX, GFP_KERNEL);
	char *p;
	int n;

	if (!tmp)
		return -ENOMEM;
	p = file_path(file, tmp, PATH_MAX);
	if (IS_ERR(p))
		n = sysfs_emit_at(buf, at, "?\n");
	else
		n = sysfs_emit_at(buf, at, "%s\n", p);
	kfree(tmp);
	return n;
}

static ssize_t format_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", vdimg_top(vdimg_from_dev(d))->img.fmt->name);
}
static DEVICE_ATTR_RO(format);

static ssize_t variant_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", vdimg_top(vdimg_from_dev(d))->img.variant);
}
static DEVICE_ATTR_RO(variant);

static ssize_t backing_file_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return vdimg_emit_path(vdimg_top(vdimg_from_dev(d))->vf.filp, buf, 0);
}
static DEVICE_ATTR_RO(backing_file);

static ssize_t chain_show(struct device *d, struct device_attribute *attr, char *buf)
{
	struct vdimg_device *dev = vdimg_from_dev(d);
	unsigned int i;
	int len = 0;

	for (i = 0; i < dev->nr_layers; i++) {
		ssize_t n = vdimg_emit_path(dev->layers[i]->vf.filp, buf, len);

		if (n <= 0)
			break;
		len += n;
	}
	return len;
}
static DEVICE_ATTR_RO(chain);

static ssize_t depth_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", vdimg_from_dev(d)->nr_layers);
}
static DEVICE_ATTR_RO(depth);

static ssize_t read_only_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n",
			  !!(vdimg_from_dev(d)->attach_flags & VDIMG_ATTACH_READ_ONLY));
}
static DEVICE_ATTR_RO(read_only);

static ssize_t dio_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", vdimg_top(vdimg_from_dev(d))->dio);
}
static DEVICE_ATTR_RO(dio);

static ssize_t autoclear_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(vdimg_from_dev(d)->autoclear));
}
static DEVICE_ATTR_RO(autoclear);

static ssize_t partscan_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n",
			  !!(vdimg_from_dev(d)->attach_flags & VDIMG_ATTACH_PARTSCAN));
}
static DEVICE_ATTR_RO(partscan);

static ssize_t virtual_size_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", (unsigned long long)vdimg_from_dev(d)->size);
}
static DEVICE_ATTR_RO(virtual_size);

static ssize_t logical_block_size_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", vdimg_from_dev(d)->lbs);
}
static DEVICE_ATTR_RO(logical_block_size);

static ssize_t state_show(struct device *d, struct device_attribute *attr, char *buf)
{
	static const char *const names[] = {
		[VDIMG_STATE_UNBOUND] = "unbound",
		[VDIMG_STATE_BOUND] = "bound",
		[VDIMG_STATE_RUNDOWN] = "rundown",
		[VDIMG_STATE_DELETING] = "deleting",
	};
	enum vdimg_dev_state s = READ_ONCE(vdimg_from_dev(d)->state);

	return sysfs_emit(buf, "%s\n", s < ARRAY_SIZE(names) ? names[s] : "?");
}
static DEVICE_ATTR_RO(state);

static ssize_t uuid_show(struct device *d, struct device_attribute *attr, char *buf)
{
	const struct vdimg_image *img = &vdimg_top(vdimg_from_dev(d))->img;

	if (!(img->flags & VDIMG_IMG_HAS_UUID))
		return sysfs_emit(buf, "\n");
	return sysfs_emit(buf, "%pUb\n", img->uuid);
}
static DEVICE_ATTR_RO(uuid);

static struct attribute *vdimg_attrs[] = {
	&dev_attr_uuid.attr,
	&dev_attr_format.attr,
	&dev_attr_variant.attr,
	&dev_attr_backing_file.attr,
	&dev_attr_chain.attr,
	&dev_attr_depth.attr,
	&dev_attr_read_only.attr,
	&dev_attr_dio.attr,
	&dev_attr_autoclear.attr,
	&dev_attr_partscan.attr,
	&dev_attr_virtual_size.attr,
	&dev_attr_logical_block_size.attr,
	&dev_attr_state.attr,
	NULL,
};

static const struct attribute_group vdimg_attr_group = {
	.name = "vdimg",
	.attrs = vdimg_attrs,
};

const struct attribute_group *vdimg_disk_groups[] = {
	&vdimg_attr_group,
	NULL,
};
