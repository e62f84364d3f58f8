// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: offline resize of a VHDX image (a differencing one keeps its parent's size).
 * Everything goes through the metadata log, as every other metadata write of the backend does:
 * first the BAT entries the new size brings in are made NOT_PRESENT where an earlier shrink left
 * something, then the virtual disk size item changes in a log entry of its own; a crash replays
 * to the old or the new size (vhdx_resize_bat() and vhdx_write_vsize() in backends/vhdx/map.c,
 * which the online grow shares). The BAT grows inside its region only: a region too small for the
 * new size is refused (moving the region means rewriting the region tables).
 */
#include "backends/vhdx/vhdx.h"
#include "tool.h"

int vhdx_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct vhdx *v = img->priv;
	u64 entries;
	int ret;

	if (v->read_only)
		return -EROFS;
	/* growing is the online grow's job, in the same order (backends/vhdx/open.c) */
	if (size > img->size)
		return img->fmt->grow(img, size);
	if (v->diff) {
		vdimg_err(img, "a differencing VHDX keeps its parent's size");
		return -EOPNOTSUPP;
	}
	if (v->params & VHDX_PARAM_LEAVE_ALLOCATED) {
		vdimg_err(img, "fixed VHDX images are not resized (their blocks stay allocated): convert to dynamic first");
		return -EOPNOTSUPP;
	}
	if (size % v->lss || size > VHDX_MAX_SIZE) {
		vdimg_err(img, "the size must be a multiple of the %u-byte sector, at most 64 TiB",
			  v->lss);
		return -EINVAL;
	}
	entries = vhdx_entries_for(v, size);
	if (entries * 8 > v->bat_len || entries * 8 > VHDX_BAT_MAX_BYTES) {
		vdimg_err(img, "the BAT region (%u bytes) has no room for the %llu entries of the new size",
			  v->bat_len, (unsigned long long)entries);
		return -ENOSPC;
	}
	ret = vhdx_flush(img);
	if (!ret)
		ret = vhdx_resize_bat(img, size);
	if (!ret)
		ret = vhdx_write_vsize(img, size);
	if (ret)
		return ret;
	img->size = size;
	return 0;
}
