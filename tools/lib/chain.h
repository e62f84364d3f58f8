/* SPDX-License-Identifier: GPL-2.0 */
/*
 * libvdimg's userspace "driver": a chain of open images (base first, top last) and the read, write,
 * discard and flush paths over the backend contract, following the same algorithm as the kernel
 * driver (drivers/io.c): reads walk the layers top-down without recursion, writes map the top layer
 * with VDIMG_MAP_WRITE, fill new allocation units from the layers below, write, then commit. Used by
 * vdimgctl (commit, convert, check) and by the host tests to exercise every backend without the
 * module. Reads, writes and discards may run from several threads; writes and discards serialise on
 * the top layer's allocation units only (the driver's range lock). Open, flush and close may not
 * run concurrently with anything else on the same chain.
 */
#ifndef _VDIMG_CHAIN_H
#define _VDIMG_CHAIN_H

#include <vdimg/backend.h>
#include "vdimg-user.h"

/* flags for vdimg_chain_open*() */
#define VDIMG_CHAIN_READ_ONLY	(1U << 0)	/* open every layer read-only */
#define VDIMG_CHAIN_ALLOW_RAW	(1U << 1)	/* an unrecognised file (format auto) opens as raw */
#define VDIMG_CHAIN_FORCE_LINK	(1U << 2)	/* do not refuse a failed ->verify_parent() */
#define VDIMG_CHAIN_ORPHAN_OK	(1U << 3)	/* the base may be a differencing image (reads zeros) */
#define VDIMG_CHAIN_FORCE_CSUM	(1U << 4)	/* checksum mismatches are warnings (VDIMG_OPEN_FORCE_CSUM) */
#define VDIMG_CHAIN_DEVICE_EXTENTS (1U << 5)	/* absolute extent paths naming block devices */
/*
 * The writable layer's file is not synced (no ordering between data and metadata) until
 * vdimg_chain_flush(), which syncs everything and ends this: for filling a new image that is of
 * no use until it is complete (convert), as qemu-img convert's cache=unsafe
 */
#define VDIMG_CHAIN_UNSAFE	(1U << 6)
#define VDIMG_CHAIN_FLAGS_ALL	((1U << 7) - 1)

/* Largest fill range (allocation unit) the write path accepts from a backend (as the driver). */
#define VDIMG_CHAIN_MAX_FILL	(64ULL << 20)

struct vdimg_chain_layer {
	struct vdimg_image img;		/* img.name points at @path */
	struct vdimg_file *file;
	int fd;				/* closed by vdimg_chain_close() only if @own_fd */
	bool own_fd;
	char *path;
	/* the external data file (qcow2 data_file) the chain opened for it, or NULL and -1 */
	struct vdimg_file *data_file;
	int data_fd;
};

struct vdimg_chain {
	int nr;				/* layers, >= 1 */
	unsigned int flags;		/* VDIMG_CHAIN_* it was opened with */
	/*
	 * The writable layer: nr - 1 (the top) normally, a lower one after vdimg_chain_open_at()
	 * (commit), -1 when the chain is read-only. Writes, discards and flushes go to it.
	 */
	int rw;
	u64 size;			/* virtual size of the chain: the top layer's */
	struct vdimg_chain_layer *layer; /* [nr], base first */
	/* what @layer points into when it is not the start of its allocation, else NULL */
	struct vdimg_chain_layer *layer_mem;
	struct vdimg_image **layers;	/* [nr], &layer[i].img, base first, top = layers[nr - 1] */
	/*
	 * Writes and discards lock the allocation units they touch (as the driver does), so callers
	 * may write from several threads; @range_mutex protects @ranges (struct chain_range list).
	 */
	pthread_mutex_t range_mutex;
	pthread_cond_t range_cond;
	void *ranges;
};

static inline struct vdimg_image *vdimg_chain_top(struct vdimg_chain *c)
{
	return c->layers[c->nr - 1];
}

/**
 * vdimg_chain_open() - open image files as a chain
 * @out: the chain on success
 * @paths: @n paths, base first
 * @formats: @n format ids (VDIMG_FMT_AUTO to probe), or NULL to probe every layer
 * @flags: VDIMG_CHAIN_*
 *
 * The top layer is opened O_RDWR unless VDIMG_CHAIN_READ_ONLY; lower layers O_RDONLY and with
 * VDIMG_OPEN_HAS_CHILD | VDIMG_OPEN_READ_ONLY. Each child's ->verify_parent() (when the backend has
 * one) is asked about the layer below it.
 *
 * Return: 0, or a negative errno after a message (through the message hook) naming the file.
 */
int vdimg_chain_open(struct vdimg_chain **out, const char *const *paths, int n, const u32 *formats,
		     unsigned int flags);

/*
 * Same, but layer @rw (0 <= @rw < @n) is the writable one (O_RDWR, opened without
 * VDIMG_OPEN_READ_ONLY) instead of the top; the layers above it are read-only. Writes, discards and
 * flushes then go to layer @rw, filled from the layers below it, while reads still see the whole
 * chain. For commit, which merges upper layers into a lower one. VDIMG_CHAIN_READ_ONLY in @flags
 * makes every layer read-only as usual.
 */
int vdimg_chain_open_at(struct vdimg_chain **out, const char *const *paths, int n,
			const u32 *formats, unsigned int flags, int rw);

/* Same, over descriptors the caller keeps (not closed by vdimg_chain_close()); @names for messages. */
int vdimg_chain_open_fds(struct vdimg_chain **out, const int *fds, const char *const *names, int n,
			 const u32 *formats, unsigned int flags);

/*
 * Same over descriptors, with backend ops given per layer instead of the registry's (NULL entries
 * use the registry with format auto): for tests and for backends not yet in the registry.
 */
int vdimg_chain_open_ops(struct vdimg_chain **out, const int *fds, const char *const *names, int n,
			 const struct vdimg_format *const *ops, unsigned int flags);

/* Read [off, off + len) of the chain. 0 or a negative errno; -EINVAL past the end. */
int vdimg_chain_pread(struct vdimg_chain *c, void *buf, size_t len, u64 off);

/*
 * Read [off, off + len) as the sub-chain layers[0..level] reads it (level -1: zeros). The fill
 * source of the write path (level nr - 2, unless the extent says VDIMG_EXT_FILL_ZERO); also handy
 * for tests.
 */
int vdimg_chain_read_level(struct vdimg_chain *c, int level, void *buf, size_t len, u64 off);

/*
 * Write [off, off + len) into the writable layer (the top unless opened with vdimg_chain_open_at()).
 * 0 or a negative errno: -EROFS read-only, -EINVAL past the end of that layer.
 */
int vdimg_chain_pwrite(struct vdimg_chain *c, const void *buf, size_t len, u64 off);

/*
 * Discard [off, off + len) in the top layer through ->discard(), as the driver does: with
 * VDIMG_DISCARD_ZEROES (implied when the chain has more than one layer, so a discard never shows
 * the parent again) the range reads as zeros afterwards, and when the backend cannot (no ->discard()
 * or -EOPNOTSUPP) zeros are written through the write path. A plain discard the backend cannot do
 * is a successful no-op (discard is a hint).
 */
int vdimg_chain_discard(struct vdimg_chain *c, u64 off, u64 len, unsigned int flags);

/* ->flush() then vdimg_file_sync() on the writable layer; 0 when read-only. */
int vdimg_chain_flush(struct vdimg_chain *c);

/* Flush (if writable), close every layer, free @c. Returns the flush result. NULL is allowed. */
int vdimg_chain_close(struct vdimg_chain *c);

/**
 * vdimg_chain_resolve() - find the layers under a differencing image
 * @top: path of the top image
 * @top_format: its format, or VDIMG_FMT_AUTO
 * @paths: out: @n paths, base first, the last one @top (free with vdimg_chain_resolve_free())
 * @formats: out: the format id of each
 * @n: out: the number of layers (1 for an image without a parent)
 *
 * Follows each image's ->parent_ref(): a recorded path (relative to the child's directory) or its
 * alternative, or (VDI) an image with the parent's UUID in the child's directory. Stops at a loop or
 * after VDIMG_MAX_LAYERS. Every image is opened read-only and closed again.
 *
 * Return: 0, or a negative errno after a message naming the image whose parent was not found.
 */
int vdimg_chain_resolve(const char *top, u32 top_format, char ***paths, u32 **formats, int *n);
/* the same; @flags: VDIMG_CHAIN_FORCE_CSUM opens the images past checksum mismatches */
int vdimg_chain_resolve_flags(const char *top, u32 top_format, char ***paths, u32 **formats,
			      int *n, unsigned int flags);

/**
 * vdimg_chain_resolve_open() - find the layers under @top and open them as a read-only chain
 * @out: the chain on success (close with vdimg_chain_close()); layer[i].path are the layers'
 *	 paths, base first, the top's as given
 * @top: path of the top image
 * @top_format: its format, or VDIMG_FMT_AUTO
 * @flags: VDIMG_CHAIN_FORCE_CSUM, VDIMG_CHAIN_FORCE_LINK, VDIMG_CHAIN_DEVICE_EXTENTS
 *
 * What vdimg_chain_resolve() then vdimg_chain_open() do, with each image opened once (an image
 * with an external data file twice): the images opened to find their parents stay open as the
 * chain's layers, with their data files and extent files, and the links are checked as
 * vdimg_chain_open() checks them. vdimgctl attach resolves and validates a chain this way.
 *
 * Return: 0, or a negative errno after a message naming the image.
 */
int vdimg_chain_resolve_open(struct vdimg_chain **out, const char *top, u32 top_format,
			     unsigned int flags);

/**
 * vdimg_data_file_path() - the external data file an image names (qcow2 data_file)
 * @img: the image, open (read-only and without its data file is enough)
 * @image_path: the path @img was opened by: a relative name is relative to its directory
 * @path: out: malloc'd path of the data file, NULL when the image has none
 *
 * Return: 0 (with *@path set or NULL), or a negative errno.
 */
int vdimg_data_file_path(struct vdimg_image *img, const char *image_path, char **path);

/**
 * vdimg_image_data_file() - same, for an image file not opened yet
 * @image_path: the image
 * @format: its format id, or VDIMG_FMT_AUTO
 * @path: out: malloc'd path of its data file, NULL when it has none
 *
 * What vdimgctl attach calls per layer: when *@path is set, open it with the layer's mode and
 * pass it as the layer's data_fd (VDIMG_LAYER_DATA_FILE). vdimg_chain_open*() do this themselves.
 * Return: 0, or a negative errno after a message.
 */
int vdimg_image_data_file(const char *image_path, u32 format, char **path);
void vdimg_chain_resolve_free(char **paths, u32 *formats, int n);

/* ---- offline chain operations (chainops.c) ---- */

/*
 * Progress of a long operation ("commit", "rebase"): @done of @total bytes. NULL (the default)
 * for none; vdimgctl sets it when stderr is a terminal.
 */
extern void (*vdimg_chain_progress)(const char *what, u64 done, u64 total);

/**
 * vdimg_chain_commit() - merge the layers above @base into it (qemu-img commit)
 * @c: the chain, opened with vdimg_chain_open_at(..., @base) so that layer @base is writable
 * @base: the layer that receives the data, below the top
 * @flags: 0
 *
 * Every range that one of the layers (@base, top] holds is read as the whole chain reads it and
 * written into @base (new allocation units of @base are filled from @base's own parents); a range
 * the highest of them says is ZERO is made to read as zeros in @base. Then @base is flushed. The
 * layers above @base are not changed: they still read the same, and their data is now also in
 * @base. Relinking or deleting them is the caller's business.
 *
 * Return: 0, or a negative errno after a message naming the image.
 */
int vdimg_chain_commit(struct vdimg_chain *c, int base, unsigned int flags);

#define VDIMG_REBASE_UNSAFE	(1U << 0)	/* change the link only, copy nothing (-u) */

/**
 * vdimg_chain_rebase() - give the top of @c another parent (qemu-img rebase)
 * @c: the top's current chain, top writable; may be the top alone with VDIMG_REBASE_UNSAFE
 * @newp: the new parent's chain (read-only), or NULL for no parent
 * @path: the path the top is to record for its new parent (relative to the top's directory, or
 *	  absolute)
 * @flags: VDIMG_REBASE_*
 *
 * Safe mode: every range the top does not hold itself and that the old parents and the new ones
 * read differently is copied from the old parents into the top (and flushed); then the top's link
 * changes through ->set_parent(). The top reads the same before and after.
 *
 * Return: 0; -EOPNOTSUPP when the format cannot change (or drop) its parent, -ENOSPC when the path
 * does not fit, or another negative errno, after a message.
 */
int vdimg_chain_rebase(struct vdimg_chain *c, struct vdimg_chain *newp, const char *path,
		       unsigned int flags);

#endif /* _VDIMG_CHAIN_H */
