// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: VHDX check. The kernel-shared backend is backends/vhdx/.
 */
#include <stdio.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhdx/vhdx.h"
#include "tool.h"

int vhdx_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct vhdx *v = img->priv;
	u64 i, used_end = 0, fsize = vdimg_file_size(img->file);

	/* open already validated (and rejected) every BAT entry; report what is left */
	memset(res, 0, sizeof(*res));
	for (i = 0; i < v->nr_entries; i++) {
		u64 e = vhdx_bat(v, i);
		bool sb = (i % (v->chunk_ratio + 1)) == v->chunk_ratio;

		if (!(i % 512))		/* 4 KiB of the BAT */
			vdimg_tool_progress("check", 0, 1, i, v->nr_entries);

		if (sb && vhdx_state(e) == VHDX_SB_PRESENT && v->diff)
			used_end = max(used_end, vhdx_off(e) + VHDX_SB_BLOCK);
		if (!sb && (vhdx_state(e) == VHDX_PAYLOAD_FULLY_PRESENT ||
			    vhdx_state(e) == VHDX_PAYLOAD_PARTIALLY_PRESENT))
			used_end = max(used_end, vhdx_off(e) + v->block_size);
	}
	used_end = max(used_end, v->bat_off + v->bat_len);
	used_end = max(used_end, v->meta_off + v->meta_len);
	used_end = max(used_end, v->log.offset + v->log.length);
	/* the space of a block device past the image's end is the device's, not a leak */
	if (fsize > ALIGN(used_end, VHDX_MiB) && !v->fixed_file) {
		res->leaks = (fsize - ALIGN(used_end, VHDX_MiB) + v->block_size - 1) / v->block_size;
		if ((flags & VDIMG_CHECK_REPAIR) && !v->read_only) {
			int ret;

			vdimg_mutex_lock(&v->io_lock);
			ret = 0;
			if (v->file_guid_pending)	/* the first change since open */
				ret = vhdx_update_header(img, v, v->log.guid, false, true);
			if (!ret)
				ret = vdimg_file_truncate(img->file, ALIGN(used_end, VHDX_MiB));
			if (!ret) {
				v->file_size = v->data_end = ALIGN(used_end, VHDX_MiB);
				res->fixed += res->leaks;
			}
			vdimg_mutex_unlock(&v->io_lock);
			if (ret)
				return ret;
		}
	}
	return 0;
}
