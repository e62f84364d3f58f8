// SPDX-License-Identifier: GPL-2.0
/*
 * /sys/block/vdimgN/vdimg/: what a device is made of. Registered with the disk so the attributes
 * exist before the uevent; documented in Documentation/ABI/testing/sysfs-block-vdimg. The layers
 * stay open until after del_gendisk() has removed these files; a live snapshot may replace the
 * layer array meanwhile, so what reads the layers holds dev->lock.
 */
#include "vdimg.h"

static struct vdimg_device *vdimg_from_dev(struct device *d)
{
	return dev_to_disk(d)->private_data;
}

/* The path of @file in @tmp (PATH_MAX bytes), "?" if it has none. */
static const char *vdimg_path(struct file *file, char *tmp)
{
	char *p = file_path(file, tmp, PATH_MAX);

	return IS_ERR(p) ? "?" : p;
}

/* @fn(top layer) under dev->lock */
#define VDIMG_TOP_SHOW(name, fn)							\
static ssize_t name##_show(struct device *d, struct device_attribute *attr, char *buf)	\
{											\
	struct vdimg_device *dev = vdimg_from_dev(d);					\
	ssize_t ret;									\
											\
	mutex_lock(&dev->lock);								\
	ret = fn(vdimg_top(dev), buf);							\
	mutex_unlock(&dev->lock);							\
	return ret;									\
}											\
static DEVICE_ATTR_RO(name)

static ssize_t vdimg_format(struct vdimg_layer_k *top, char *buf)
{
	return sysfs_emit(buf, "%s\n", top->img.fmt->name);
}

VDIMG_TOP_SHOW(format, vdimg_format);

static ssize_t vdimg_variant(struct vdimg_layer_k *top, char *buf)
{
	return sysfs_emit(buf, "%s\n", top->img.variant);
}

VDIMG_TOP_SHOW(variant, vdimg_variant);

static ssize_t vdimg_backing_file(struct vdimg_layer_k *top, char *buf)
{
	char *tmp = kmalloc(PATH_MAX, GFP_KERNEL);
	ssize_t n;

	if (!tmp)
		return -ENOMEM;
	n = sysfs_emit(buf, "%s\n", vdimg_path(top->vf.filp, tmp));
	kfree(tmp);
	return n;
}

VDIMG_TOP_SHOW(backing_file, vdimg_backing_file);

static ssize_t vdimg_dio(struct vdimg_layer_k *top, char *buf)
{
	return sysfs_emit(buf, "%d\n", top->dio);
}

VDIMG_TOP_SHOW(dio, vdimg_dio);

static ssize_t vdimg_uuid(struct vdimg_layer_k *top, char *buf)
{
	if (!(top->img.flags & VDIMG_IMG_HAS_UUID))
		return sysfs_emit(buf, "\n");
	return sysfs_emit(buf, "%pUb\n", top->img.uuid);
}

VDIMG_TOP_SHOW(uuid, vdimg_uuid);

/* One path per line, base first; whole lines only, as many as fit in the page. */
static ssize_t chain_show(struct device *d, struct device_attribute *attr, char *buf)
{
	struct vdimg_device *dev = vdimg_from_dev(d);
	char *tmp = kmalloc(PATH_MAX, GFP_KERNEL);
	size_t len = 0;
	unsigned int i;

	if (!tmp)
		return -ENOMEM;
	mutex_lock(&dev->lock);
	for (i = 0; i < dev->nr_layers; i++) {
		const char *p = vdimg_path(dev->layers[i]->vf.filp, tmp);
		size_t n = strlen(p) + 1;

		if (n >= PAGE_SIZE - len)
			break;
		memcpy(buf + len, p, n - 1);
		buf[len + n - 1] = '\n';
		len += n;
	}
	mutex_unlock(&dev->lock);
	kfree(tmp);
	return len;
}
static DEVICE_ATTR_RO(chain);

static ssize_t depth_show(struct device *d, struct device_attribute *attr, char *buf)
{
	struct vdimg_device *dev = vdimg_from_dev(d);
	unsigned int n;

	mutex_lock(&dev->lock);
	n = dev->nr_layers;
	mutex_unlock(&dev->lock);
	return sysfs_emit(buf, "%u\n", n);
}
static DEVICE_ATTR_RO(depth);

static ssize_t read_only_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n",
			  !!(vdimg_from_dev(d)->attach_flags & VDIMG_ATTACH_READ_ONLY));
}
static DEVICE_ATTR_RO(read_only);

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

/* What the layers' backends hold in memory for their metadata (->metadata_bytes), summed. */
static ssize_t metadata_bytes_show(struct device *d, struct device_attribute *attr, char *buf)
{
	struct vdimg_device *dev = vdimg_from_dev(d);
	unsigned int i;
	u64 n = 0;

	mutex_lock(&dev->lock);
	for (i = 0; i < dev->nr_layers; i++) {
		struct vdimg_image *img = &dev->layers[i]->img;

		if (img->fmt->metadata_bytes)
			n += img->fmt->metadata_bytes(img);
	}
	mutex_unlock(&dev->lock);
	return sysfs_emit(buf, "%llu\n", (unsigned long long)n);
}
static DEVICE_ATTR_RO(metadata_bytes);

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
	&dev_attr_metadata_bytes.attr,
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
