/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The backend contract: what a format (raw, vhd, vdi, qcow2, ...) provides to the driver and to the
 * userspace library. A backend maps virtual ranges to extents; it never moves guest data itself
 * (except decoding ENCODED extents). See DESIGN.md section 2 and
 * Documentation/admin-guide/vdimg.rst.
 *
 * Life of an image: the registry probes the first bytes (and the last sector) of the file and picks
 * a format; ->open() reads and validates the metadata and fills struct vdimg_image; ->map() answers
 * "what is at this offset"; writes to unallocated space get a DATA extent marked VDIMG_EXT_NEW
 * which the driver fills and then hands back to ->commit(); ->flush() makes committed metadata
 * durable in a safe order (the caller syncs the file after it); ->close() frees everything.
 *
 * Locking: the driver calls ->map() with VDIMG_MAP_NOWAIT from its submission path (the backend
 * must not sleep then and answers -EAGAIN when it would), and without it from a worker that may
 * sleep. Concurrent ->map() calls on one image are allowed; the backend protects its own tables.
 * The driver guarantees that two writes never hold VDIMG_EXT_NEW extents that overlap the same
 * allocation unit (image->alloc_unit) at the same time.
 */
#ifndef _VDIMG_BACKEND_H
#define _VDIMG_BACKEND_H

#include <vdimg/platform.h>
#include <uapi/linux/vdimg.h>

/* struct vdimg_image.flags */
#define VDIMG_IMG_READ_ONLY	BIT(0)	/* opened read-only: map(WRITE), commit, discard refused */
#define VDIMG_IMG_HAS_UUID	BIT(1)	/* uuid[] is valid */
#define VDIMG_IMG_HAS_PARENT	BIT(2)	/* a differencing image: needs a parent layer */
#define VDIMG_IMG_HAS_PARENT_UUID BIT(3)	/* parent_uuid[] is valid */
#define VDIMG_IMG_DIRTY		BIT(4)	/* metadata written since open (set by the backend) */

#define VDIMG_NAME_MAX		16

struct vdimg_format;

/**
 * struct vdimg_image - one open image file (one layer of a chain)
 *
 * Filled by ->open(), read-only for everyone else afterwards except where noted.
 */
struct vdimg_image {
	const struct vdimg_format *fmt;	/* set by the caller of ->open() */
	struct vdimg_file *file;	/* set by the caller of ->open() */
	const char *name;		/* for messages; set by the caller */
	u64 size;			/* virtual size in bytes, a multiple of 512 */
	u32 lbs;			/* logical sector size the format declares (512 or 4096) */
	u32 pbs;			/* physical sector size hint (>= lbs) */
	u32 flags;			/* VDIMG_IMG_* */
	/*
	 * Allocation unit in bytes: the granularity at which ->map(WRITE) can return NEW extents
	 * (cluster or block size); 0 for formats that never allocate (raw, fixed variants).
	 */
	u32 alloc_unit;
	/* UUIDs in the order they are printed (RFC 4122), converted from the on-disk order */
	u8 uuid[16];			/* image identity where the format has one */
	u8 parent_uuid[16];		/* parent identity a differencing image records */
	char variant[VDIMG_NAME_MAX];	/* "fixed", "dynamic", "differencing", ... */
	/*
	 * Set by the caller before ->open(), only for backends with the matching VDIMG_CAP_*:
	 * the external data file (NULL if none was given), and the internal snapshot to open
	 * (1-based index in the image's snapshot table, read-only; 0 for the current state).
	 */
	struct vdimg_file *data_file;
	u32 snapshot;
	/*
	 * Set by the caller before ->open(), only for backends with VDIMG_CAP_EXTENT_FILES: the
	 * extra files of a layer whose image file is only a descriptor (VMDK extent files), in the
	 * order the descriptor names them; NULL and 0 for none.
	 */
	struct vdimg_file **extents;
	u32 nr_extents;
	void *priv;			/* the backend's state */
};

/* flags for ->open() */
#define VDIMG_OPEN_READ_ONLY	BIT(0)
#define VDIMG_OPEN_HAS_CHILD	BIT(1)	/* a lower layer of a chain (opened read-only) */
/* userspace check --repair: open a damaged image writable so ->check() can fix it */
#define VDIMG_OPEN_REPAIR	BIT(2)
/* a checksum mismatch is a warning, not an error (structural corruption still is one) */
#define VDIMG_OPEN_FORCE_CSUM	BIT(3)

/* extent types */
enum vdimg_ext_type {
	VDIMG_EXT_DATA = 1,		/* bytes at file/file_offset */
	VDIMG_EXT_ZERO,			/* reads as zeros, hides the parent */
	VDIMG_EXT_UNALLOCATED,		/* not in this image: the parent's, or zeros at the base */
	VDIMG_EXT_ENCODED,		/* compressed or otherwise transformed: ->read_encoded() */
};

/* struct vdimg_extent.flags */
#define VDIMG_EXT_NEW		BIT(0)	/* DATA reserved by map(WRITE): fill, then ->commit() */
#define VDIMG_EXT_FILL_ZERO	BIT(1)	/* NEW: fill with zeros, not from the parent */
/*
 * DATA: a page of the host's page cache under this extent also holds bytes that are not this data
 * (metadata, or another allocation unit that may be written or filled through the page cache), so
 * the kernel must not write it with direct I/O: a direct write racing with a buffered write of the
 * same page leaves a stale dirty page that later overwrites it (and fails the file's next fsync).
 * Set it with vdimg_ext_page_check().
 */
#define VDIMG_EXT_PAGE_SHARED	BIT(2)
/*
 * NEW: the file range of the fill (in the allocation unit) was reserved at or past the end of the
 * file, so nothing was ever written there. A zero fill may then be skipped: the kernel allocates
 * the range with fallocate(), so it reads as zeros, and writes only the caller's data. Set it with
 * vdimg_ext_hole_check(), under the lock that serializes the format's allocations.
 */
#define VDIMG_EXT_FILL_HOLE	BIT(3)

/**
 * struct vdimg_extent - the answer of ->map()
 *
 * Describes the longest prefix [@offset, @offset + @length) of the asked range that has one kind.
 * For a NEW extent, [@fill_offset, @fill_offset + @fill_length) is the virtual range (containing
 * the whole extent) the driver must write completely before ->commit(): the parts outside the
 * caller's data come from the layers below (or zeros). @fill_length == 0 means no fill is needed
 * (sector-bitmap formats, or the backend already zeroed the new space).
 */
struct vdimg_extent {
	u64 offset;			/* virtual offset (as asked) */
	u64 length;			/* bytes, > 0, <= asked length */
	u32 type;			/* enum vdimg_ext_type */
	u32 flags;			/* VDIMG_EXT_* */
	struct vdimg_file *file;	/* DATA: the file holding the bytes */
	u64 file_offset;		/* DATA: file offset of @offset */
	u64 fill_offset;		/* NEW: virtual start of the range to fill */
	u64 fill_length;		/* NEW: its length, 0 for none */
	u64 cookie[2];			/* backend's own, carried from map to commit/abort */
};

/*
 * vdimg_ext_page_split - mark a DATA extent whose pages are not the data's alone
 * @unit_start, @unit_len: the file range holding nothing but this extent's data unit (a cluster, or
 *	a block's data area, or a run of them contiguous in the file)
 * @cut_new: NEW extents are cut too (the backend's ->commit() records exactly the extent's range)
 *
 * In the kernel the extent is also cut at a page boundary so that the flag covers only shared
 * pages: an extent starting in a shared page ends with that page, one reaching into a shared last
 * page stops before it. Otherwise the buffered write of a large extent would also cache pages the
 * unit holds alone, which direct writes of other extents reach at the same time: the page cache
 * cannot be invalidated under them, and a stale page overwrites their data later.
 */
static inline void vdimg_ext_page_split(struct vdimg_extent *ext, u64 unit_start, u64 unit_len,
					bool cut_new)
{
	u64 first = ALIGN_DOWN(ext->file_offset, (u64)PAGE_SIZE);
	u64 end = ALIGN(ext->file_offset + ext->length, (u64)PAGE_SIZE);

	if (first >= unit_start && end - unit_start <= unit_len)
		return;
	ext->flags |= VDIMG_EXT_PAGE_SHARED;
	if (VDIMG_LIBRARY || ((ext->flags & VDIMG_EXT_NEW) && (!cut_new || ext->fill_length)))
		return;
	if (first < unit_start) {
		/* the first page is shared: the extent ends with it */
		if (end - first > PAGE_SIZE)
			ext->length = first + PAGE_SIZE - ext->file_offset;
	} else if (end - first > PAGE_SIZE) {
		/* only the last page is shared: stop before it, with nothing shared */
		ext->length = end - PAGE_SIZE - ext->file_offset;
		ext->flags &= ~VDIMG_EXT_PAGE_SHARED;
	}
}

/*
 * vdimg_ext_hole_check - mark a NEW extent VDIMG_EXT_FILL_HOLE when its allocation unit, at file
 * offset @unit_start, lies wholly at or past the end of the file. Call it right after reserving
 * the unit, with the allocation lock still held: every place reserved earlier was past the end
 * when reserved, so whatever extended the file since then wrote only into units reserved before
 * this one, and a place that was ever written (a unit given back after a failed write, space a
 * discard freed) lies below the end.
 */
static inline void vdimg_ext_hole_check(struct vdimg_extent *ext, u64 unit_start)
{
	if (unit_start >= vdimg_file_size(ext->file))
		ext->flags |= VDIMG_EXT_FILL_HOLE;
}

/*
 * vdimg_ext_page_check - vdimg_ext_page_split() for formats whose NEW extents stay whole (their
 * ->commit() maps whole units: a NEW extent is written with the unit range-locked, so no direct
 * write reaches its pages meanwhile)
 *
 * Formats whose units are not page-aligned in the file (a VHD block's data follows its 512-byte
 * bitmap, qcow2 clusters smaller than a page...) call this or vdimg_ext_page_split() for every DATA
 * extent they return.
 */
static inline void vdimg_ext_page_check(struct vdimg_extent *ext, u64 unit_start, u64 unit_len)
{
	vdimg_ext_page_split(ext, unit_start, unit_len, false);
}

/* the same for formats whose units are @unit bytes at multiples of @unit in the file */
static inline void vdimg_ext_unit_check(struct vdimg_extent *ext, u64 unit)
{
	u64 start = ALIGN_DOWN(ext->file_offset, unit);

	if (unit < PAGE_SIZE)
		vdimg_ext_page_check(ext, start,
				     ALIGN(ext->file_offset + ext->length, unit) - start);
}

/* flags for ->map() */
#define VDIMG_MAP_WRITE		BIT(0)	/* the caller will write: allocate if needed */
#define VDIMG_MAP_NOWAIT	BIT(1)	/* do not sleep: -EAGAIN if it would */

/* flags for ->discard() */
#define VDIMG_DISCARD_ZEROES	BIT(0)	/* the range must read as zeros afterwards */
/* with ZEROES: keep the space allocated (REQ_NOUNMAP); -EOPNOTSUPP if the backend cannot */
#define VDIMG_DISCARD_NOUNMAP	BIT(1)

/**
 * struct vdimg_format - a format backend
 */
/* struct vdimg_format.caps */
#define VDIMG_CAP_DATA_FILE	BIT(0)	/* ->open() uses img->data_file (qcow2 data_file) */
#define VDIMG_CAP_SNAPSHOTS	BIT(1)	/* ->open() honours img->snapshot */
/* a child must have exactly its parent's virtual size (else the parent's size may differ) */
#define VDIMG_CAP_SAME_SIZE_PARENT BIT(2)
#define VDIMG_CAP_EXTENT_FILES	BIT(3)	/* ->open() uses img->extents (VMDK descriptors) */
/*
 * the image itself records no parent link (a Parallels snapshot: its bundle's descriptor does, and
 * userspace reads it): the image may be layered over a parent without VDIMG_IMG_HAS_PARENT
 */
#define VDIMG_CAP_EXTERNAL_PARENT BIT(4)

struct vdimg_format {
	const char *name;		/* "raw", "vhd", ... as the tool and sysfs spell it */
	u32 id;				/* enum vdimg_format_id */
	u32 caps;			/* VDIMG_CAP_* */
	/*
	 * Is this the format? @head holds the first @head_len bytes of the file (fewer only if the
	 * file is shorter), @tail the last 512 bytes (zeros if the file is shorter than 512 bytes).
	 * Returns true on a signature match; must not trust anything beyond the magic.
	 */
	bool (*probe)(const u8 *head, size_t head_len, const u8 *tail, u64 file_size);
	int (*open)(struct vdimg_image *img, unsigned int flags);
	void (*close)(struct vdimg_image *img);
	int (*map)(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		   struct vdimg_extent *ext);
	/* a NEW extent was written (data and fill): record it in the metadata */
	int (*commit)(struct vdimg_image *img, const struct vdimg_extent *ext);
	/*
	 * a NEW extent will not be recorded (writing it or ->commit() failed): release the
	 * reservation; may be NULL
	 */
	void (*abort)(struct vdimg_image *img, const struct vdimg_extent *ext);
	/* decode an ENCODED extent into @buf (@ext->length bytes); may sleep */
	int (*read_encoded)(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf);
	/* deallocate or zero [offset, offset + length); NULL if the format cannot */
	int (*discard)(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags);
	/*
	 * write dirty metadata in a safe order; the caller syncs the file afterwards. May be NULL
	 */
	int (*flush)(struct vdimg_image *img);
	/*
	 * Will the next ->flush() give back file space (e.g. clusters discarded since the last
	 * flush) that allocation may hand out again? May be NULL (never). A write mapped before
	 * such a discard may still be in flight to the old place; so the driver calls this right
	 * before ->flush() (serialized with it) and, when it returns true, waits until every data
	 * request that may have mapped before this call has completed. The backend then frees in
	 * that ->flush() only what was pending at this call; later frees wait for the next flush.
	 * A ->flush() not preceded by this call (the single-threaded userspace library at flush,
	 * close) frees everything pending. Never free such space anywhere else.
	 */
	bool (*frees_pending)(struct vdimg_image *img);
	/*
	 * does @parent match the identity @child records? 0, or -ESTALE with a message. May be NULL
	 */
	int (*verify_parent)(struct vdimg_image *child, struct vdimg_image *parent);
	/*
	 * Online grow (VDIMG_CTL_RESIZE): make the virtual size @new_size, which the caller has
	 * checked is larger than img->size and a multiple of img->lbs. Called on a writable top
	 * layer with no I/O in flight (the device suspended) and its dirty metadata already flushed
	 * and synced. The range [old size, @new_size) must read as zeros afterwards through this
	 * layer (the caller refuses when a lower layer reaches past the old size). The new size is
	 * durable (header written, file synced) before it returns 0, and img->size is then
	 * @new_size. It never moves data or tables: when the format's tables cannot address
	 * @new_size where they are, it fails with -EFBIG (or -EOPNOTSUPP) after a message naming
	 * the limit, and leaves the image as it was (offline `vdimgctl resize` can relocate them).
	 * May be NULL (the format cannot grow online).
	 */
	int (*grow)(struct vdimg_image *img, u64 new_size);
	/*
	 * Bytes of memory the open image holds for its metadata now: its tables, table caches
	 * (what is loaded), bitmaps and scratch buffers, not its small fixed state. Summed over a
	 * device's layers in /sys/block/vdimgN/vdimg/metadata_bytes. May sleep (takes the
	 * backend's own locks). May be NULL (a format that keeps no tables: raw, ISO, CUE).
	 */
	u64 (*metadata_bytes)(struct vdimg_image *img);
};

/* ---- the registry (backends/registry.c) ---- */

#define VDIMG_PROBE_HEAD	65536		/* bytes of the file start a probe looks at */

/* Backends built in, in probe order. */
extern const struct vdimg_format vdimg_raw_format;
extern const struct vdimg_format vdimg_iso_format;
extern const struct vdimg_format vdimg_vdi_format;
extern const struct vdimg_format vdimg_vhd_format;
extern const struct vdimg_format vdimg_qcow2_format;
extern const struct vdimg_format vdimg_qed_format;
extern const struct vdimg_format vdimg_qcow_format;
extern const struct vdimg_format vdimg_vhdx_format;
extern const struct vdimg_format vdimg_vmdk_format;
extern const struct vdimg_format vdimg_cue_format;
extern const struct vdimg_format vdimg_dmg_format;
extern const struct vdimg_format vdimg_parallels_format;

/**
 * vdimg_format_by_id() - the built-in backend for a format id
 * Return: the backend, or NULL if the format is unknown or not built in.
 */
const struct vdimg_format *vdimg_format_by_id(u32 id);
const struct vdimg_format *vdimg_format_by_name(const char *name);
/* The name of a format id, built in or not ("vhd"), or NULL. */
const char *vdimg_format_name(u32 id);
/*
 * The name qemu gives a format ("vpc" for vhd), as qcow2 records a backing file's format, and
 * back (qemu's names and ours accepted); VDIMG_FMT_AUTO for an unknown name.
 */
const char *vdimg_format_qemu_name(u32 id);
u32 vdimg_format_by_qemu_name(const char *name);
/* Bitmask (1 << id) of the formats built in. */
u64 vdimg_formats_built_in(void);

/**
 * vdimg_probe() - identify the format of an image file
 * @f: the file
 * @name: for messages
 * @id: out: the format id found
 * @why: out: on -EOPNOTSUPP, the name of the unsupported format ("bochs")
 *
 * Reads the head and the last sector of the file and tries every known signature in the fixed order
 * documented in Documentation/admin-guide/vdimg.rst. Raw is never returned: a file no signature
 * matches gives -ENOENT, and the caller decides whether raw is allowed.
 *
 * Return: 0 with *@id set (the format may still be one that is not built in: check
 * vdimg_format_by_id()), -EOPNOTSUPP for a known signature of a format vdimg does not support,
 * -EMEDIUMTYPE when a head signature (*@why names it) sits over a fixed-VHD footer,
 * -ENOENT if nothing matched, or an I/O error.
 */
int vdimg_probe(struct vdimg_file *f, u32 *id, const char **why);

/**
 * vdimg_image_open() - probe (if @format is VDIMG_FMT_AUTO) and open an image
 * @img: zeroed by the caller, with @img->file and @img->name set
 * @format: the format to use, or VDIMG_FMT_AUTO
 * @flags: VDIMG_OPEN_*; VDIMG_OPEN_ALLOW_RAW lets an unrecognised file open as raw
 *
 * Return: 0, or a negative errno after a message saying why.
 */
int vdimg_image_open(struct vdimg_image *img, u32 format, unsigned int flags);
#define VDIMG_OPEN_ALLOW_RAW	BIT(8)
void vdimg_image_close(struct vdimg_image *img);

/*
 * vdimg_grow_zero_new() - for ->grow(): make the range a grow brings in read as zeros
 * @img: with img->size already the new size (restore it on failure), nothing written yet
 * @old: the old size
 *
 * Zeroes the stale bytes of the old last allocation unit past @old; refuses (-EOPNOTSUPP, with a
 * message) data allocated wholly past @old and a compressed last unit.
 */
int vdimg_grow_zero_new(struct vdimg_image *img, u64 old);

#endif /* _VDIMG_BACKEND_H */
