// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: finds the struct vdimg_tool_ops of a format (tools/lib/tool-ops.h).
 */
#include <stddef.h>
#include "tool-ops.h"
#include "chain.h"

static const struct vdimg_tool_ops *const vdimg_all_tool_ops[] = {
	&vdimg_raw_tool_ops,
	&vdimg_iso_tool_ops,
	&vdimg_vdi_tool_ops,
	&vdimg_vhd_tool_ops,
	&vdimg_vhdx_tool_ops,
	&vdimg_qcow2_tool_ops,
	&vdimg_qed_tool_ops,
	&vdimg_qcow_tool_ops,
	&vdimg_vmdk_tool_ops,
	&vdimg_cue_tool_ops,
	&vdimg_dmg_tool_ops,
	&vdimg_parallels_tool_ops,
};

static const struct vdimg_tool_ops vdimg_no_tool_ops;

void vdimg_tool_progress(const char *what, u32 part, u32 parts, u64 done, u64 total)
{
	u64 scale = 10000, d;

	if (!vdimg_chain_progress || !parts || part >= parts)
		return;
	d = (u64)part * scale + (total && done < total ? done * scale / total : 0);
	if (d < (u64)parts * scale)
		vdimg_chain_progress(what, d, (u64)parts * scale);
}

const struct vdimg_tool_ops *vdimg_tool_ops(const struct vdimg_format *fmt)
{
	size_t i;

	if (!fmt)
		return &vdimg_no_tool_ops;
	for (i = 0; i < sizeof(vdimg_all_tool_ops) / sizeof(vdimg_all_tool_ops[0]); i++)
		if (vdimg_all_tool_ops[i]->id == fmt->id)
			return vdimg_all_tool_ops[i];
	return &vdimg_no_tool_ops;
}
