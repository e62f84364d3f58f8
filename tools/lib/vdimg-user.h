/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The userspace library's own interface (libvdimg): files over descriptors, opening an image by
 * path (tools/lib/open.c), the message hook and the write-cut hook of tools/lib/platform.c. Not part
 * of the kernel build.
 */
#ifndef _VDIMG_USER_H
#define _VDIMG_USER_H

#include <sys/stat.h>
#include <vdimg/backend.h>
#include "tool-ops.h"

struct vdimg_file {
	int fd;
	/*
	 * vdimg_file_sync() does nothing: a new image being filled (convert), whose writes need
	 * no ordering until the one sync at the end (VDIMG_CHAIN_UNSAFE)
	 */
	bool no_sync;
};

struct vdimg_file *vdimg_file_from_fd(int fd);
void vdimg_file_free(struct vdimg_file *f);	/* does not close the descriptor */
/* the directory of an open file, absolute (malloc'd); NULL with errno set */
char *vdimg_file_dir(const struct vdimg_file *f);
/* @path, absolute or relative to @dir, as a canonical absolute path (malloc'd); NULL with errno */
char *vdimg_path_in_dir(const char *dir, const char *path);
/*
 * @path (absolute, canonical) relative to the canonical directory @dir, "./x" or "../../x", with
 * @sep between components: the relative parent paths VHD ('/') and VHDX ('\\') locators record.
 * malloc'd; NULL on ENOMEM.
 */
char *vdimg_relpath(const char *path, const char *dir, char sep);
/*
 * Take qemu-compatible OFD locks on an image file open at @fd, for writing or for reading (io.c):
 * -EBUSY with *@why naming the permission when another process (qemu, another vdimg device) holds
 * a conflicting one; 0 also where the file system has no OFD locks.
 */
int vdimg_lock_image(int fd, bool write, const char **why);
/*
 * A loop device on the file open at @fd that an attach (writable when @write) would conflict with:
 * a writable one, or any when @write (io.c). Its name in @name, *@loop_writable says which.
 */
bool vdimg_loop_conflict(int fd, bool write, char *name, size_t len, bool *loop_writable);
/* a file name from an image's descriptor that stays inside its directory (io.c) */
bool vdimg_inner_name_ok(const char *name);
/* a new parent's absolute path and its path relative to @img's directory (@sep-separated) */
int vdimg_parent_paths(struct vdimg_image *img, const char *path, char sep, char **abs, char **rel);
/* UTF-16 <-> UTF-8 for the names and locators of VHD and VHDX (tools/lib/platform.c) */
char *vdimg_utf16_to_utf8(const u8 *p, size_t bytes, bool be, bool nul_ends);
size_t vdimg_utf8_to_utf16(const char *s, u8 *out, size_t max, bool be);
/*
 * A Parallels bundle named by @path (its directory, or its DiskDescriptor.xml): the first file of
 * its top snapshot, absolute (malloc'd) in *@top. -ENOENT when @path is not a bundle, another
 * negative errno (after a message) when its descriptor is refused.
 */
int vdimg_parallels_bundle_top(const char *path, char **top);

/* an image opened from a path by vdimg_open_path() (tools/lib/open.c) */
struct vdimg_path_image {
	struct vdimg_image img;
	int fd;
	struct stat st;			/* with VDIMG_PATH_REGULAR: what fstat() said */
	/* after a failure, what failed (the caller words its message after it) */
	enum {
		VDIMG_PATH_OK,
		VDIMG_PATH_NO_FILE,		/* open(2) */
		VDIMG_PATH_NOT_REGULAR,		/* VDIMG_PATH_REGULAR refused the file */
		VDIMG_PATH_NO_IMAGE,		/* probing or opening the image in it */
		VDIMG_PATH_DEVICE_RO,		/* a writable open of a device, refused for its format */
	} failed;
};

/* flags of vdimg_open_path() besides the VDIMG_OPEN_* ones (which go on to ->open()) */
#define VDIMG_PATH_REGULAR	(1U << 16)	/* refuse anything but a regular file */
/* probe first, open only a built-in format (no messages about others): for candidate files */
#define VDIMG_PATH_BUILT_IN	(1U << 17)
/* absolute extent paths naming block devices are opened (VDIMG_CHAIN_DEVICE_EXTENTS) */
#define VDIMG_PATH_DEVICE_EXTENTS (1U << 18)
/*
 * with VDIMG_PATH_REGULAR: a block device (an image on an LV, a LUN) is accepted too; writable
 * only in a format vdimg_format_device_writable() names (else VDIMG_PATH_DEVICE_RO, -EROFS)
 */
#define VDIMG_PATH_BLOCK_OK	(1U << 19)

/*
 * Whether an image of @format can be written on a block device: its format finds the end of its
 * data from its own metadata, not from the size of what holds it (tools/lib/open.c).
 */
bool vdimg_format_device_writable(u32 format);
/* the formats vdimg_format_device_writable() names, for messages */
#define VDIMG_DEVICE_FORMATS "qcow2, vdi, vhd, vhdx, qed, vmdk, parallels and raw"
/*
 * Whether the image in @f, of *@format (VDIMG_FMT_AUTO: probed first, a file with no signature
 * counting as raw, as an open allowing raw takes it), may be written on a block device: 0, or
 * -EROFS with *@format the format found, or the probe's error.
 */
int vdimg_device_write_ok(struct vdimg_file *f, u32 *format);

/**
 * vdimg_open_path() - open the image in the file at @path, quietly
 * @o: filled; close with vdimg_close_path() after a success
 * @path: the file; also the image's name in messages
 * @format: the format, or VDIMG_FMT_AUTO to probe (an unrecognised file then opens as raw)
 * @flags: VDIMG_OPEN_* (the file opens O_RDWR unless VDIMG_OPEN_READ_ONLY) and VDIMG_PATH_*
 *
 * Prints nothing itself; the backend's own messages go through the message hook.
 *
 * Return: 0, or a negative errno: open(2)'s, -EISDIR or -EINVAL for a directory or another file
 * that is not regular (VDIMG_PATH_REGULAR), -EROFS for a writable open of a block device in a
 * format that cannot be written there, -ENOMEM, the probe's or -EOPNOTSUPP (VDIMG_PATH_BUILT_IN),
 * or vdimg_image_open()'s; @o->failed says which step failed.
 */
int vdimg_open_path(struct vdimg_path_image *o, const char *path, u32 format, unsigned int flags);
void vdimg_close_path(struct vdimg_path_image *o);

/*
 * The extent files an image of @format (VDIMG_FMT_AUTO: probed) names (VMDK descriptor files):
 * opened relative to the image's directory, O_RDWR when @writable and the extent is writable,
 * and set in img->extents / img->nr_extents before vdimg_image_open(). Nothing for other formats.
 * 0, or a negative errno after a message naming the file. vdimg_image_close_extents() closes
 * them (after vdimg_image_close()).
 */
int vdimg_image_open_extents(struct vdimg_image *img, u32 format, bool writable);
/* the same; with @devices, absolute paths naming block devices are opened too */
int vdimg_image_open_extents_dev(struct vdimg_image *img, u32 format, bool writable,
				 bool devices);
void vdimg_image_close_extents(struct vdimg_image *img);

typedef void (*vdimg_msg_fn)(int level, const char *image_name, const char *text);
void vdimg_set_msg_hook(vdimg_msg_fn fn);	/* NULL restores "name: text" on stderr */
extern int vdimg_msg_level;			/* print messages at this level or below */

/*
 * Crash simulation: when >= 0, the number of metadata/data writes (and truncates, punches) that
 * still succeed; every later one fails with -EIO and syncs fail too. -1 (default): no cut.
 */
extern long long vdimg_write_budget;

/*
 * Tests: when true, every image file counts as fixed-size (vdimg_file_fixed_size()), as a block
 * device does, so a host test reaches the allocation limits of images on LVs and LUNs with a
 * regular file whose size stands for the device's.
 */
extern bool vdimg_fixed_size_test;

/*
 * Crash simulation that reorders: while vdimg_wlog.on, every successful write (its data copied),
 * truncate, hole punch or zero range (both recorded as ZERO, within the file size) and completed
 * sync of an image file is appended to vdimg_wlog, with the test's own marks in between. A test
 * then rebuilds the file as a crash could have left it: everything before the last completed sync,
 * any subset of what came after. vdimg_wlog_reset() frees the log and turns it off.
 */
enum { VDIMG_WLOG_WRITE, VDIMG_WLOG_ZERO, VDIMG_WLOG_TRUNCATE, VDIMG_WLOG_SYNC,
       VDIMG_WLOG_MARK, VDIMG_WLOG_ACK };
struct vdimg_wlog_rec {
	int kind;		/* VDIMG_WLOG_* */
	int fd;			/* -1 for a mark */
	u64 off, len;		/* TRUNCATE: off is the size; marks: off is the test's value */
	u8 *data;		/* WRITE: len bytes */
};
struct vdimg_wlog {
	bool on;
	size_t nr, cap;
	struct vdimg_wlog_rec *rec;
};
extern struct vdimg_wlog vdimg_wlog;
void vdimg_wlog_mark(int kind, u64 value);
void vdimg_wlog_reset(void);

#endif /* _VDIMG_USER_H */
