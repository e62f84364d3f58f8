/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Userspace only: the functions the files of tools/lib/formats/qcow2/ (the QCOW2 tool operations)
 * share with each other. The backend's own state and functions are in backends/qcow2/qcow2.h.
 */
#ifndef _VDIMG_QCOW2_TOOL_H
#define _VDIMG_QCOW2_TOOL_H

#include "tool-ops.h"

/* check.c */
int qcow2_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res);

/* compress.c */
int qcow2_write_compressed(struct vdimg_image *img, u64 off, const void *buf);

/* create.c */
int qcow2_create(struct vdimg_file *f, const struct vdimg_create_opts *opts);
int qcow2_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent);

/* resize.c */
int qcow2_resize(struct vdimg_image *img, u64 size, unsigned int flags);

#endif /* _VDIMG_QCOW2_TOOL_H */
