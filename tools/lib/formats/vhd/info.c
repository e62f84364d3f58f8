// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the "vdimgctl info" details of a VHD image and the format's struct
 * vdimg_tool_ops. The kernel-shared backend is backends/vhd/.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhd/vhd.h"
#include "tool.h"

static void vhd_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct vhd *v = img->priv;
	const struct vhd_footer *f = &v->footer;
	char buf[600];
	time_t t;
	struct tm tm;
	bool chs;
	u32 i, alloc = 0;

	snprintf(buf, sizeof(buf), "\"%.4s\" %u.%u (%.4s)", f->creator_app,
		 be32_to_cpu(f->creator_version) >> 16, be32_to_cpu(f->creator_version) & 0xffff,
		 f->creator_os);
	emit(ctx, "creator", buf);
	snprintf(buf, sizeof(buf), "%u/%u/%u", be16_to_cpu(f->cylinders), f->heads, f->sectors);
	emit(ctx, "geometry (c/h/s)", buf);
	vhd_virtual_size(f, &chs);
	snprintf(buf, sizeof(buf), "%llu (%s)", (unsigned long long)be64_to_cpu(f->current_size),
		 chs ? "not used: this creator sizes disks by geometry" : "the virtual size");
	emit(ctx, "current size", buf);
	t = (time_t)(be32_to_cpu(f->timestamp) + VHD_EPOCH_OFFSET);
	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	emit(ctx, "timestamp", buf);
	if (f->saved_state)
		emit(ctx, "saved state", "yes");
	if (v->type != VHD_TYPE_FIXED) {
		snprintf(buf, sizeof(buf), "%u", v->block_size);
		emit(ctx, "block size", buf);
		for (i = 0; i < v->nr_blocks; i++)
			alloc += vhd_bat_get(v, i) != VHD_BAT_FREE;
		snprintf(buf, sizeof(buf), "%u/%u", alloc, v->nr_blocks);
		emit(ctx, "allocated blocks", buf);
	}
	if (v->type == VHD_TYPE_DIFF) {
		t = (time_t)(be32_to_cpu(v->hdr->parent_timestamp) + VHD_EPOCH_OFFSET);
		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
		emit(ctx, "parent timestamp", buf);
		emit(ctx, "parent name", v->parent_name);
		for (i = 0; i < v->nr_paths; i++) {
			snprintf(buf, sizeof(buf), "%s %s", v->path_kind[i], v->paths[i]);
			emit(ctx, "parent locator", buf);
		}
	}
	if (v->damage)
		emit(ctx, "damage", "yes: run vdimgctl check --repair");
}

const struct vdimg_tool_ops vdimg_vhd_tool_ops = {
	.id = VDIMG_FMT_VHD,
	.create = vhd_create,
	.check = vhd_check,
	.parent_ref = vhd_parent_ref,
	.set_parent = vhd_set_parent,
	.describe = vhd_describe,
	.resize = vhd_resize,
};
