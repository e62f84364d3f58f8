// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of the raw and ISO formats (create a raw file of a size, and
 * the check that has nothing left to find). The kernel-shared half is backends/raw.c.
 */
#include "tool-ops.h"

static int raw_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	if (!opts->size || opts->size % 512)
		return -EINVAL;
	if (opts->parent)
		return -EOPNOTSUPP;
	return vdimg_file_truncate(f, opts->size);
}

static int raw_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	/* open() already refused what can be wrong with a raw file */
	return 0;
}

/* the file is the disk: a new tail is a hole (zeros), a shorter file drops the old one */
static int raw_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	int ret = vdimg_file_truncate(img->file, size);

	if (!ret)
		img->size = size;
	return ret;
}

const struct vdimg_tool_ops vdimg_raw_tool_ops = {
	.id = VDIMG_FMT_RAW,
	.create = raw_create,
	.check = raw_check,
	.resize = raw_resize,
};

const struct vdimg_tool_ops vdimg_iso_tool_ops = {
	.id = VDIMG_FMT_ISO,
	.check = raw_check,
};
