/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The userspace-only half of a format backend: the operations only the tool and the library run
 * (create, check and repair, describe, parent references, compact, set_parent, data files, internal
 * snapshots). The kernel-shared half is struct vdimg_format (include/vdimg/backend.h); the module
 * never sees this header. Each format defines one struct vdimg_tool_ops, found by format id with
 * vdimg_tool_ops() (tools/lib/tool-ops.c).
 */
#ifndef _VDIMG_TOOL_OPS_H
#define _VDIMG_TOOL_OPS_H

#include <vdimg/backend.h>

/* creation parameters */
struct vdimg_create_opts {
	u64 size;			/* virtual size in bytes */
	const char *variant;		/* NULL for the format's default */
	u32 block_size;			/* 0 for the format's default */
	u32 lbs;			/* 0 for 512 */
	const char *parent;		/* path of the parent image, NULL for none */
	struct vdimg_image *parent_img;	/* the parent, opened, when @parent is set */
	const char *options;		/* format-specific "key=value,..." or NULL */
	/*
	 * convert: the contents of the new image, for a create that writes them itself (a
	 * variant written once, in order: VMDK streamOptimized). @source_read fills @buf with
	 * [@off, @off + @len) of the source, or only sets *@zero when that range reads as zeros;
	 * 0 or a negative errno. Such a create sets *@source_copied; otherwise the caller writes
	 * the data through the new image. NULL for an empty image.
	 */
	int (*source_read)(void *ctx, void *buf, size_t len, u64 off, bool *zero);
	void *source_ctx;
	bool *source_copied;
};

/* where a differencing image's parent is, as the image records it */
struct vdimg_parent_ref {
	char path[4096];		/* as recorded; relative paths are relative to the child's directory */
	char alt_path[4096];		/* a second candidate (e.g. absolute vs relative locator), or "" */
	u32 format;			/* VDIMG_FMT_* when the image records it (qcow2 backing format) */
	bool by_uuid;			/* no path: find the parent by @img->parent_uuid (VDI) */
};

/* check results */
struct vdimg_check_result {
	u64 errors;			/* corruptions found (left, or fixed when repairing) */
	u64 leaks;			/* allocated but unused space, in allocation units */
	u64 fixed;			/* problems repaired */
	/*
	 * states an interrupted write leaves that lose no data and that this library reads past,
	 * but that other tools may refuse (e.g. a stale redundant copy of a table); a repair fixes
	 * them (and counts them in @fixed). Not errors.
	 */
	u64 warnings;
};

#define VDIMG_CHECK_REPAIR	(1U << 0)

/**
 * struct vdimg_tool_ops - the userspace-only operations of a format backend
 *
 * Every member may be NULL (the format cannot do it).
 */
struct vdimg_tool_ops {
	u32 id;				/* enum vdimg_format_id of the format these belong to */
	/* create an empty image in the (empty, writable) file */
	int (*create)(struct vdimg_file *f, const struct vdimg_create_opts *opts);
	/* check (and with VDIMG_CHECK_REPAIR fix) an image opened writable when repairing */
	int (*check)(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res);
	/* where the parent is (only for VDIMG_IMG_HAS_PARENT images): 0, or -ENOENT. May be NULL */
	int (*parent_ref)(struct vdimg_image *img, struct vdimg_parent_ref *ref);
	/* print format-specific details for "vdimgctl info" as "key: value" lines; may be NULL */
	void (*describe)(struct vdimg_image *img, void (*emit)(void *ctx, const char *key,
							       const char *value), void *ctx);
	/*
	 * offline (image opened writable, nothing else using it): give back unused space, e.g. move
	 * the last blocks into holes and truncate the file. 0 or a negative errno; may be NULL
	 */
	int (*compact)(struct vdimg_image *img);
	/*
	 * rebase: make @img (opened writable) record @path as its parent and, when @parent is not
	 * NULL, that image's identity (UUID, timestamp, format, as the format keeps them). Only the
	 * link changes, never data. 0, -EOPNOTSUPP (e.g. the format cannot drop its parent when
	 * @parent is NULL), -ENOSPC (no room for the path), or another negative errno. May be NULL
	 */
	int (*set_parent)(struct vdimg_image *img, const char *path, struct vdimg_image *parent);
	/*
	 * the external data file the image names (VDIMG_CAP_DATA_FILE backends): copies it into
	 * @path (relative names are relative to the image's directory); -ENOENT if the image has
	 * none. May be NULL
	 */
	int (*data_file_ref)(struct vdimg_image *img, char *path, size_t len);
	/*
	 * the internal snapshot @name_or_id names (VDIMG_CAP_SNAPSHOTS backends): an ID string
	 * match first, then a name match (as qemu-img snapshot -l lists them); 0 with its 1-based
	 * index (for img->snapshot) in *@index, or -ENOENT. May be NULL
	 */
	int (*find_snapshot)(struct vdimg_image *img, const char *name_or_id, u32 *index);
	/*
	 * the extent files of an image file that is only a descriptor (VMDK), read from @f before
	 * the image can be opened: 0 with *@n files, @paths[i] as recorded (relative to the image's
	 * directory, or absolute; malloc'd, as is the array) and @ro[i] set for extents the image
	 * only reads; 0 with *@n = 0 for an image that has none. May be NULL
	 */
	int (*extent_refs)(struct vdimg_file *f, char ***paths, bool **ro, u32 *n);
	/*
	 * offline (image opened writable, nothing else using it): make the virtual size @size (a
	 * multiple of 512, != img->size). Growing: the new range reads as zeros. Shrinking (only
	 * with VDIMG_RESIZE_SHRINK): the caller has already checked or discarded what lies past
	 * the new end; the backend drops (frees) whatever allocation is left there. The backend
	 * writes in an order that leaves the old or the new size after a crash, and updates
	 * img->size and its own state so that ->flush() and ->close() stay correct. 0,
	 * -EOPNOTSUPP or -ENOSPC after a message saying why, or another negative errno. May be NULL
	 */
	int (*resize)(struct vdimg_image *img, u64 size, unsigned int flags);
	/*
	 * convert --compress: store the allocation unit at @off (a multiple of img->alloc_unit,
	 * below img->size) compressed, where the image has nothing yet; @buf holds the whole unit,
	 * zero-padded past img->size. May run in several threads at once (the compression runs
	 * outside the image's lock). 1 when written compressed, 0 when it does not shrink (nothing
	 * written: the caller writes it as plain data), -EEXIST when the image has something
	 * there, or another negative errno. May be NULL
	 */
	int (*write_compressed)(struct vdimg_image *img, u64 off, const void *buf);
};

/**
 * vdimg_tool_progress() - report how far a long tool operation (check, compact) is
 * @what: "check" or "compact", as the progress line shows it
 * @part: the operation is @parts equal shares (phases, extents): this is share @part (0-based)
 * @parts: >= 1
 * @done: how far share @part is, out of @total (done < total; 0 with total 0 is fine)
 * @total: units of share @part
 *
 * Calls vdimg_chain_progress (tools/lib/chain.h) when set; never with the whole job done: the
 * caller of ->check() or ->compact() (vdimgctl) shows the start and the end, so a backend calls
 * this at a cheap point of each unit (an L2 table, a block of the BAT) before working on it.
 */
void vdimg_tool_progress(const char *what, u32 part, u32 parts, u64 done, u64 total);

/* flags of ->resize() */
#define VDIMG_RESIZE_SHRINK	(1U << 0)

/* The userspace operations of each format that has them */
extern const struct vdimg_tool_ops vdimg_raw_tool_ops;
extern const struct vdimg_tool_ops vdimg_iso_tool_ops;
extern const struct vdimg_tool_ops vdimg_vdi_tool_ops;
extern const struct vdimg_tool_ops vdimg_vhd_tool_ops;
extern const struct vdimg_tool_ops vdimg_vhdx_tool_ops;
extern const struct vdimg_tool_ops vdimg_qcow2_tool_ops;
extern const struct vdimg_tool_ops vdimg_qed_tool_ops;
extern const struct vdimg_tool_ops vdimg_qcow_tool_ops;
extern const struct vdimg_tool_ops vdimg_vmdk_tool_ops;
extern const struct vdimg_tool_ops vdimg_cue_tool_ops;
extern const struct vdimg_tool_ops vdimg_dmg_tool_ops;
extern const struct vdimg_tool_ops vdimg_parallels_tool_ops;

/**
 * vdimg_tool_ops() - the userspace operations of a format
 * @fmt: a backend (may be NULL)
 *
 * Return: the format's operations; a table with every member NULL for a format that has none
 * (or a NULL @fmt), never NULL.
 */
const struct vdimg_tool_ops *vdimg_tool_ops(const struct vdimg_format *fmt);

#endif /* _VDIMG_TOOL_OPS_H */
