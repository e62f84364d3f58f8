// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: vdimg_open_path(), the library's one way to open an image file by its path for a
 * look or an offline operation (tools/lib/vdimg-user.h), with the extent files its descriptor names. It prints nothing itself: callers (the
 * tool's verbs, the chain walk in io.c) word their own errors; the backend's messages go through
 * the message hook as always.
 */
#include <fcntl.h>
#include <unistd.h>
#include "vdimg-user.h"

bool vdimg_format_device_writable(u32 format)
{
	switch (format) {
	case VDIMG_FMT_RAW:		/* nothing to allocate */
	case VDIMG_FMT_QCOW2:		/* by its refcounts */
	case VDIMG_FMT_VDI:		/* after the blocks its header counts */
	case VDIMG_FMT_VHD:		/* after the last block (the footer in the device's last sector) */
	case VDIMG_FMT_VHDX:		/* after the last block its BAT references */
	case VDIMG_FMT_QED:		/* after the last cluster its tables reference */
	case VDIMG_FMT_VMDK:		/* sparse extents: after the last grain table or grain */
	case VDIMG_FMT_PARALLELS:	/* after the last cluster its BAT references */
		return true;
	default:
		return false;
	}
}

int vdimg_device_write_ok(struct vdimg_file *f, u32 *format)
{
	const char *why;
	int ret = 0;

	if (*format == VDIMG_FMT_AUTO) {
		ret = vdimg_probe(f, format, &why);
		if (ret == -ENOENT) {
			*format = VDIMG_FMT_RAW;
			ret = 0;
		}
	}
	return ret ? ret : vdimg_format_device_writable(*format) ? 0 : -EROFS;
}

int vdimg_open_path(struct vdimg_path_image *o, const char *path, u32 format, unsigned int flags)
{
	bool writable = !(flags & VDIMG_OPEN_READ_ONLY), devices;
	int ret;

	memset(o, 0, sizeof(*o));
	o->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (o->fd < 0) {
		o->failed = VDIMG_PATH_NO_FILE;
		return -errno;
	}
	if ((flags & VDIMG_PATH_REGULAR) &&
	    (fstat(o->fd, &o->st) || !(S_ISREG(o->st.st_mode) ||
					((flags & VDIMG_PATH_BLOCK_OK) && S_ISBLK(o->st.st_mode))))) {
		ret = S_ISDIR(o->st.st_mode) ? -EISDIR : -EINVAL;
		o->failed = VDIMG_PATH_NOT_REGULAR;
		goto close_fd;
	}
	o->img.name = path;
	o->img.file = vdimg_file_from_fd(o->fd);
	if (!o->img.file) {
		o->failed = VDIMG_PATH_NO_IMAGE;
		ret = -ENOMEM;
		goto close_fd;
	}
	/*
	 * A writable image on a block device: only in a format that finds its end from its own
	 * metadata. Decided before the open, which may already write (a footer put back, a log
	 * replayed).
	 */
	if (writable && (flags & VDIMG_PATH_BLOCK_OK) && S_ISBLK(o->st.st_mode)) {
		u32 id = format;

		ret = vdimg_device_write_ok(o->img.file, &id);
		if (ret) {
			vdimg_file_free(o->img.file);
			o->img.file = NULL;
			o->failed = ret == -EROFS ? VDIMG_PATH_DEVICE_RO : VDIMG_PATH_NO_IMAGE;
			goto close_fd;
		}
	}
	if (flags & VDIMG_PATH_BUILT_IN) {
		/* probing candidates: only formats built in, no messages about the others */
		const char *why;
		u32 id;

		ret = vdimg_probe(o->img.file, &id, &why);
		if (ret || !vdimg_format_by_id(id)) {
			ret = ret ? ret : -EOPNOTSUPP;
			goto free_file;
		}
		format = id;
	}
	devices = flags & VDIMG_PATH_DEVICE_EXTENTS;
	flags &= ~(VDIMG_PATH_REGULAR | VDIMG_PATH_BUILT_IN | VDIMG_PATH_DEVICE_EXTENTS |
		   VDIMG_PATH_BLOCK_OK);
	if (format == VDIMG_FMT_AUTO)
		flags |= VDIMG_OPEN_ALLOW_RAW;
	/* the extent files a descriptor names (VMDK), opened in the image's mode */
	ret = vdimg_image_open_extents_dev(&o->img, format, writable, devices);
	if (ret)
		goto free_file;
	ret = vdimg_image_open(&o->img, format, flags);
	if (ret)
		goto close_extents;
	return 0;

close_extents:
	vdimg_image_close_extents(&o->img);
free_file:
	o->failed = VDIMG_PATH_NO_IMAGE;
	vdimg_file_free(o->img.file);
	o->img.file = NULL;
close_fd:
	close(o->fd);
	o->fd = -1;
	return ret;
}

void vdimg_close_path(struct vdimg_path_image *o)
{
	vdimg_image_close(&o->img);
	vdimg_image_close_extents(&o->img);
	vdimg_file_free(o->img.file);
	close(o->fd);
}
