/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Userspace only: the functions the files of tools/lib/formats/vhdx/ (the VHDX tool operations)
 * share with each other. The backend's own state and functions are in backends/vhdx/vhdx.h.
 */
#ifndef _VDIMG_VHDX_TOOL_H
#define _VDIMG_VHDX_TOOL_H

#include "tool-ops.h"

/* check.c */
int vhdx_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res);

/* create.c */
int vhdx_create(struct vdimg_file *f, const struct vdimg_create_opts *opts);

/* locator.c */
int vhdx_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref);
int vhdx_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent);

/* resize.c */
int vhdx_resize(struct vdimg_image *img, u64 size, unsigned int flags);

#endif /* _VDIMG_VHDX_TOOL_H */
