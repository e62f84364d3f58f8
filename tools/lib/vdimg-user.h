/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The userspace library's own interface (libvdimg): files over descriptors, the message hook and the
 * write-cut hook of tools/lib/platform.c. Not part of the kernel build.
 */
#ifndef _VDIMG_USER_H
#define _VDIMG_USER_H

#include <vdimg/backend.h>
#include "tool-ops.h"

struct vdimg_file {
	int fd;
};

struct vdimg_file *vdimg_file_from_fd(int fd);
void vdimg_file_free(struct vdimg_file *f);	/* does not close the descriptor */
/* the directory of an open file, absolute (malloc'd); NULL with errno set */
char *vdimg_file_dir(const struct vdimg_file *f);
/* @path, absolute or relative to @dir, as a canonical absolute path (malloc'd); NULL with errno */
char *vdimg_path_in_dir(const char *dir, const char *path);

/*
 * The extent files an image of @format (VDIMG_FMT_AUTO: probed) names (VMDK descriptor files):
 * opened relative to the image's directory, O_RDWR when @writable and the extent is writable,
 * and set in img->extents / img->nr_extents before vdimg_image_open(). Nothing for other formats.
 * 0, or a negative errno after a message naming the file. vdimg_image_close_extents() closes
 * them (after vdimg_image_close()).
 */
int vdimg_image_open_extents(struct vdimg_image *img, u32 format, bool writable);
void vdimg_image_close_extents(struct vdimg_image *img);

typedef void (*vdimg_msg_fn)(int level, const char *image_name, const char *text);
void vdimg_set_msg_hook(vdimg_msg_fn fn);	/* NULL restores "name: text" on stderr */
extern int vdimg_msg_level;			/* print messages at this level or below */

/*
 * Crash simulation: when >= 0, the number of metadata/data writes (and truncates, punches) that
 * still succeed; every later one fails with -EIO and syncs fail too. -1 (default): no cut.
 */
extern long long vdimg_write_budget;

#endif /* _VDIMG_USER_H */
