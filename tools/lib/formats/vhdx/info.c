// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the "vdimgctl info" details of a VHDX image and the format's struct
 * vdimg_tool_ops. The kernel-shared backend is backends/vhdx/.
 */
#include <stdio.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhdx/vhdx.h"
#include "tool.h"

static void vhdx_describe(struct vdimg_image *img,
			  void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	static const char *const st_names[8] = { "not-present", "undefined", "zero", "unmapped",
						 "?4", "?5", "fully-present", "partially-present" };
	struct vhdx *v = img->priv;
	char buf[600], g[40];
	u64 counts[8] = { 0 }, i, sbs = 0;
	int n = 0;

	/* variant, sizes and sector sizes are in vdimgctl info's common part */
	snprintf(buf, sizeof(buf), "%u", v->block_size);
	emit(ctx, "block-size", buf);
	emit(ctx, "leave-blocks-allocated", v->params & VHDX_PARAM_LEAVE_ALLOCATED ? "yes" : "no");
	vhdx_guid_fmt(g, v->page83);
	emit(ctx, "page83-id", g);
	snprintf(buf, sizeof(buf), "%llu (at %llu)", (unsigned long long)le64_to_cpu(v->hdr.seq),
		 (unsigned long long)v->hdr_off);
	emit(ctx, "header-sequence", buf);
	vhdx_guid_fmt(g, v->hdr.file_write_guid);
	emit(ctx, "file-write-guid", g);
	vhdx_guid_fmt(g, v->hdr.data_write_guid);
	emit(ctx, "data-write-guid", g);
	vhdx_guid_fmt(g, v->hdr.log_guid);
	emit(ctx, "log-guid", g);
	snprintf(buf, sizeof(buf), "[%llu, +%u)", (unsigned long long)v->log.offset, v->log.length);
	emit(ctx, "log", buf);
	switch (v->log_state) {
	case VHDX_LOGST_REPLAYED:
		snprintf(buf, sizeof(buf), "replayed %u entries into the file at open",
			 v->log.replayed_entries);
		break;
	case VHDX_LOGST_MEMORY:
		snprintf(buf, sizeof(buf), "pending: %u entries, replayed in memory only (a writable open replays them)",
			 v->log.replayed_entries);
		break;
	case VHDX_LOGST_STALE:
		snprintf(buf, sizeof(buf), "log GUID set but no valid entries (nothing to replay)");
		break;
	default:
		snprintf(buf, sizeof(buf), "empty");
	}
	emit(ctx, "log-state", buf);
	snprintf(buf, sizeof(buf), "[%llu, +%u)", (unsigned long long)v->bat_off, v->bat_len);
	emit(ctx, "bat-region", buf);
	snprintf(buf, sizeof(buf), "[%llu, +%u)", (unsigned long long)v->meta_off, v->meta_len);
	emit(ctx, "metadata-region", buf);
	snprintf(buf, sizeof(buf), "%u", v->chunk_ratio);
	emit(ctx, "chunk-ratio", buf);
	for (i = 0; i < v->nr_blocks; i++)
		counts[vhdx_state(vhdx_bat(v, vhdx_pe(v, i)))]++;
	for (i = 0; i < v->nr_chunks && v->diff; i++)
		sbs += vhdx_state(vhdx_bat(v, vhdx_sbe(v, i))) == VHDX_SB_PRESENT;
	buf[0] = 0;
	for (i = 0; i < 8; i++)
		if (counts[i])
			n += snprintf(buf + n, sizeof(buf) - n, "%s%s=%llu", n ? " " : "",
				      st_names[i], (unsigned long long)counts[i]);
	emit(ctx, "blocks", buf);
	if (v->diff) {
		snprintf(buf, sizeof(buf), "%llu/%llu", (unsigned long long)sbs,
			 (unsigned long long)v->nr_chunks);
		emit(ctx, "sector-bitmap-blocks", buf);
		vhdx_guid_fmt(g, v->parent_linkage);
		emit(ctx, "parent-linkage", g);
		for (i = 0; i < v->nr_loc; i++) {
			snprintf(buf, sizeof(buf), "%s=%s", v->loc_keys[i], v->loc_vals[i]);
			emit(ctx, "parent-locator", buf);
		}
	}
}

const struct vdimg_tool_ops vdimg_vhdx_tool_ops = {
	.id = VDIMG_FMT_VHDX,
	.create = vhdx_create,
	.check = vhdx_check,
	.parent_ref = vhdx_parent_ref,
	.set_parent = vhdx_set_parent,
	.describe = vhdx_describe,
	.resize = vhdx_resize,
};
