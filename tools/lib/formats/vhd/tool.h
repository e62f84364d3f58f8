/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Userspace only: the functions the files of tools/lib/formats/vhd/ (the VHD tool operations)
 * share with each other. The backend's own state and functions are in backends/vhd/vhd.h.
 */
#ifndef _VDIMG_VHD_TOOL_H
#define _VDIMG_VHD_TOOL_H

#include "tool-ops.h"

/* check.c */
int vhd_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res);

/* create.c */
int vhd_create(struct vdimg_file *f, const struct vdimg_create_opts *opts);

/* locator.c */
int vhd_put_locator(struct vdimg_file *f, struct vhd_dyn_header *h, int idx, u32 code,
		    const char *path, bool win_sep, u64 *off);
int vhd_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref);
int vhd_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent);

/* resize.c */
int vhd_resize(struct vdimg_image *img, u64 size, unsigned int flags);

#endif /* _VDIMG_VHD_TOOL_H */
