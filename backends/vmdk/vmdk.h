/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The private header of the VMDK backend (backends/vmdk/): the on-disk layout of hosted sparse
 * extents (VMware "Virtual Disk Format 1.1": the KDMV header, grain directory and grain tables, the
 * stream markers of streamOptimized files), the parsed text descriptor, the backend's state and the
 * vmdk_ functions its files share. Kernel-shared: only include/vdimg/platform.h services here. The
 * userspace tool operations (tools/lib/formats/vmdk.c) include it too.
 *
 * A hosted sparse extent: sector 0 holds the header; the descriptor (text) sits at descriptorOffset
 * for descriptorSize sectors; the grain directory (GD) at gdOffset is an array of little-endian u32
 * sector numbers of grain tables (GT), each numGTEsPerGT little-endian u32 grain table entries
 * (GTE). A GTE is 0 (the grain is not in this extent: the parent's, or zeros), 1 (a zeroed grain,
 * when the header has VMDK_FLAG_ZERO_GRAIN) or the sector of the grain. When VMDK_FLAG_RGD is set
 * the redundant GD at rgdOffset links a second copy of every GT, kept equal to the first.
 */
#ifndef _VDIMG_VMDK_H
#define _VDIMG_VMDK_H

#include <vdimg/backend.h>

#define VMDK_SECTOR		512U
#define VMDK_MAGIC		0x564d444bU	/* "KDMV" read as a little-endian u32 */

/* struct vmdk_header.flags */
#define VMDK_FLAG_NL_TEST	BIT(0)		/* the end-of-line bytes below are valid */
#define VMDK_FLAG_RGD		BIT(1)		/* a redundant grain directory is kept */
#define VMDK_FLAG_ZERO_GRAIN	BIT(2)		/* GTE 1 means a zeroed grain (qemu, ESX) */
#define VMDK_FLAG_COMPRESSED	BIT(16)		/* grains are compressed (streamOptimized) */
#define VMDK_FLAG_MARKERS	BIT(17)		/* the file has stream markers */

#define VMDK_COMPRESS_NONE	0
#define VMDK_COMPRESS_DEFLATE	1

#define VMDK_GD_AT_END		(~0ULL)		/* gdOffset: the footer holds the real header */

/* GTE values that are not sectors */
#define VMDK_GTE_UNALLOC	0U
#define VMDK_GTE_ZERO		1U

/* stream marker types (the u32 after a zero size) */
#define VMDK_MARKER_EOS		0
#define VMDK_MARKER_GT		1
#define VMDK_MARKER_GD		2
#define VMDK_MARKER_FOOTER	3

/* the hosted sparse extent header, sector 0 of the file (and the footer of a stream) */
struct vmdk_header {
	__le32 magic;
	__le32 version;
	__le32 flags;
	__le64 capacity;		/* sectors */
	__le64 grain_size;		/* sectors */
	__le64 desc_offset;		/* sectors; 0 for none */
	__le64 desc_size;		/* sectors */
	__le32 num_gtes_per_gt;
	__le64 rgd_offset;		/* sectors */
	__le64 gd_offset;		/* sectors, or VMDK_GD_AT_END */
	__le64 overhead;		/* sectors before the first grain */
	u8 unclean_shutdown;
	u8 nl_single;			/* '\n' */
	u8 nl_non;			/* ' ' */
	u8 nl_double1;			/* '\r' */
	u8 nl_double2;			/* '\n' */
	__le16 compress_algorithm;
	u8 pad[433];
} __packed;

/* a grain marker (compressed grain): lba, size, then the deflate stream */
struct vmdk_grain_marker {
	__le64 lba;			/* the grain's first virtual sector */
	__le32 size;			/* bytes of compressed data that follow */
} __packed;

/* any other marker: one sector, size 0 */
struct vmdk_marker {
	__le64 num_sectors;		/* sectors of metadata that follow */
	__le32 size;			/* 0 */
	__le32 type;			/* VMDK_MARKER_* */
	u8 pad[496];
} __packed;

/*
 * The header of a COWD (vmfsSparse) extent, ESX's older sparse format: the fields this backend
 * uses (the rest of its 2048 bytes hold geometry, names and the parent's generation). One GD of
 * @gd_entries u32 sectors of GTs, each COWD_GTES u32 sectors of grains; 0 is unallocated.
 */
struct vmdk_cowd_header {
	u8 magic[4];			/* "COWD" */
	__le32 version;
	__le32 flags;
	__le32 capacity;		/* sectors */
	__le32 grain_size;		/* sectors */
	__le32 gd_offset;		/* sectors */
	__le32 gd_entries;
	__le32 next_free;		/* sectors */
} __packed;

#define VMDK_COWD_GTES		4096U
#define VMDK_COWD_HEADER_SIZE	2048U
#define VMDK_COWD_UNCLEAN_OFF	1648U	/* u32 uncleanShutdown in the 2048-byte header */

#define VMDK_HEADER_SIZE	512
#define VMDK_MARKER_SIZE	512

/* ---- the text descriptor (descriptor.c) ---- */

#define VMDK_MAX_CAPACITY	BIT_ULL(44)	/* sectors (8 PiB) of a disk or an extent */
#define VMDK_SPLIT_BYTES	BIT_ULL(31)	/* the most a twoGbMaxExtent* file holds */
#define VMDK_CID_NONE		0xffffffffU	/* parentCID of an image without a parent */
#define VMDK_DESC_MAX		BIT(20)	/* bytes of descriptor text accepted */
#define VMDK_MAX_EXTENTS	4096U
#define VMDK_PATH_MAX		1024U
#define VMDK_TYPE_MAX		32U

enum vmdk_access {
	VMDK_ACCESS_RW = 1,
	VMDK_ACCESS_RDONLY,
	VMDK_ACCESS_NOACCESS,
};

enum vmdk_extent_type {
	VMDK_EXT_SPARSE = 1,		/* hosted sparse (KDMV) */
	VMDK_EXT_FLAT,			/* raw bytes in a file, from an offset */
	VMDK_EXT_ZERO,			/* reads zeros, no file */
	VMDK_EXT_VMFS,			/* flat on VMFS */
	VMDK_EXT_VMFSSPARSE,		/* COWD */
	VMDK_EXT_VMFSRAW,
	VMDK_EXT_VMFSRDM,
	VMDK_EXT_VMFSRDMP,
	VMDK_EXT_SESPARSE,
};

/* one "ACCESS SECTORS TYPE "FILE" [OFFSET]" line */
struct vmdk_desc_extent {
	u32 access;			/* enum vmdk_access */
	u32 type;			/* enum vmdk_extent_type */
	u64 sectors;
	u64 offset;			/* FLAT: sectors into the file */
	char file[VMDK_PATH_MAX];	/* "" for ZERO */
};

struct vmdk_desc {
	u32 version;
	u32 cid;
	u32 parent_cid;			/* VMDK_CID_NONE for none */
	bool has_cid;
	char create_type[VMDK_TYPE_MAX];
	char parent_hint[VMDK_PATH_MAX];	/* parentFileNameHint, "" for none */
	u32 nr_extents;
	struct vmdk_desc_extent *extents;	/* [nr_extents] */
	/* where the CID value is in the text (for rewriting it in place); cid_len 0: no CID line */
	u32 cid_pos, cid_len;
	u32 text_len;			/* bytes of text before the first NUL */
};

/**
 * vmdk_desc_parse() - parse descriptor text
 * @img: for messages
 * @text: the descriptor bytes (need not be NUL-terminated)
 * @len: their number (at most VMDK_DESC_MAX)
 * @d: out: zeroed by the caller; free with vmdk_desc_free()
 *
 * The text ends at the first NUL or at @len. Every token is bounds-checked: lines that are too
 * long, numbers that overflow, unknown extent types or access modes, unterminated quotes fail.
 *
 * Return: 0, -EFSCORRUPTED (after a message) for bad text, -ENOMEM.
 */
int vmdk_desc_parse(struct vdimg_image *img, const char *text, size_t len, struct vmdk_desc *d);
void vmdk_desc_free(struct vmdk_desc *d);
/* the value of @key ("ddb.adapterType") copied into @val (unquoted); false if absent */
bool vmdk_desc_value(const char *text, size_t len, const char *key, char *val, size_t valsz);
/* "SPARSE", "FLAT", ... of an enum vmdk_extent_type */
const char *vmdk_extent_type_name(u32 type);
/* "%08x" into @buf[9] */
void vmdk_hex32(char *buf, u32 v);
struct vmdk;

/*
 * vmdk_line_fn: appends to @t (through vmdk_put()) what replaces the descriptor line [@l, @l + @n)
 * (its ending included): the line itself, other lines, or nothing. @crlf says whether the line
 * ended in CR LF, so that added lines can match it.
 */
typedef int (*vmdk_line_fn)(void *ctx, const char *l, size_t n, bool crlf, char *t, size_t cap,
			    size_t *len);

/* is the line [@s, @s + @n) a "@key = value" line (blanks around the key allowed)? */
bool vmdk_line_is(const char *s, size_t n, const char *key);
/* append @n bytes of @s to @t (@cap bytes, @len used); -ENOSPC when they do not fit */
int vmdk_put(char *t, size_t cap, size_t *len, const char *s, size_t n);
int vmdk_desc_edit(struct vmdk *v, char *t, size_t cap, size_t *len, vmdk_line_fn fn,
		   void *ctx);
int vmdk_desc_commit(struct vdimg_image *img, char *t, size_t len);
int vmdk_desc_resized(struct vmdk *v, u64 size, u64 sectors, const char *more, char **out,
		      size_t *len);

/* ---- the backend's state ---- */

/* one cached grain table (both copies hold the same entries) */
struct vmdk_gt_slot {
	u32 gd_index;			/* which GT; U32_MAX: empty */
	bool dirty;
	u64 used;			/* LRU tick */
	__le32 *gte;			/* [num_gtes], as on disk */
};

struct vmdk;

/* a hosted sparse extent (KDMV): the whole image, or one extent file of a descriptor */
struct vmdk_sparse {
	struct vmdk *vm;		/* the image it belongs to */
	struct vdimg_image *img;	/* for messages and the dirty flag */
	struct vdimg_file *file;
	/* fixed after open */
	u64 size;			/* bytes: capacity * 512 */
	u32 version;
	u32 hflags;
	u64 capacity;			/* sectors */
	u32 grain_bytes;
	u32 grain_shift;
	u32 num_gtes;
	u32 gt_bytes;			/* num_gtes * 4 */
	u64 overhead;			/* bytes */
	bool compressed;		/* streamOptimized: GTEs point at grain markers */
	bool markers;
	bool zero_grain;		/* GTE 1 may be written */
	bool writable;			/* opened writable and the extent is RW */
	/*
	 * a COWD (vmfsSparse) extent: its header's freeSector follows every allocation (writable
	 * only behind a descriptor)
	 */
	bool cowd;
	u64 file_end;			/* file size at open, in whole sectors */
	/*
	 * the file cannot grow (a block device, vdimg_file_fixed_size()): a writable extent
	 * allocates from the end of what its tables reference up to file_end
	 */
	bool fixed_file;

	/* protects everything below; held across metadata I/O (NOWAIT callers only try it) */
	vdimg_mutex_t lock;
	/* a grow adds entries, and past their last sector moves both directories (sparse.c) */
	u64 gd_off, rgd_off;		/* bytes; rgd_off 0: no redundant GD */
	u32 nr_gts;			/* GD entries */
	u32 *gd;			/* [nr_gts], cpu order, GT sectors */
	u32 *rgd;			/* [nr_gts] or NULL */
	u32 *slot_of;			/* [nr_gts]: slot index + 1 of a cached GT, 0 if none */
	struct vmdk_gt_slot *slots;
	u32 nr_slots;
	u64 tick;
	u32 gd_dirty_lo, gd_dirty_hi;	/* GD (and RGD) entries to write, [lo, hi) */
	u64 next_alloc;			/* bytes: where the next grain or GT goes */
	bool touched;			/* uncleanShutdown set since open */
	bool unclean_on_disk;
	u8 *zbuf;			/* zeros to pad a last grain */
};

/* an seSparse extent (sesparse.c) */
struct vmdk_se {
	struct vmdk *vm;		/* the image it belongs to (CID renewal) */
	struct vdimg_image *img;
	struct vdimg_file *file;
	u64 capacity;			/* sectors */
	u64 size;			/* bytes */
	u32 nr_gts;			/* GD entries */
	u64 gts_off, gts_size;		/* sectors: the grain-table area */
	u64 grains_off, grains_size;	/* sectors: the grain area */
	u64 volatile_off;		/* sectors: the volatile header */
	u64 gd_off;			/* sectors: the grain directory */
	bool writable;			/* opened writable and the extent is RW */
	/* protects everything below; held across metadata I/O (NOWAIT callers only try it) */
	vdimg_mutex_t lock;
	u64 file_sec;			/* file size at open or written since, in sectors */
	__le64 *gd;			/* [nr_gts], as on disk */
	u32 cached;			/* the GD index of @gt; U32_MAX: none */
	bool gt_dirty;			/* @gt differs from the disk */
	__le64 *gt;			/* one grain table, as on disk */
	u32 gd_dirty_lo, gd_dirty_hi;	/* GD entries to write, [lo, hi) */
	u64 next_gt;			/* index of the next free grain table */
	u64 next_grain;			/* index of the next free grain */
	bool touched;			/* the CID was renewed for a change */
	u8 *zbuf;			/* zeros: a new table, the pad of a last grain */
};

/* one extent of the virtual disk */
struct vmdk_ext {
	u64 start;			/* virtual byte offset */
	u64 len;			/* bytes */
	u32 type;			/* enum vmdk_extent_type */
	u32 access;			/* enum vmdk_access */
	struct vdimg_file *file;	/* NULL for ZERO */
	u64 file_off;			/* FLAT, VMFS: byte offset of the extent in @file */
	struct vmdk_sparse *sp;		/* SPARSE */
	struct vmdk_se *se;		/* SESPARSE */
};

struct vmdk {
	struct vdimg_image *img;
	struct vmdk_desc desc;
	char *desc_text;		/* [desc_area + 1] */
	u64 desc_off;			/* bytes into img->file */
	u32 desc_area;			/* bytes reserved for it (0: no descriptor) */
	bool desc_file;			/* img->file is a text descriptor (separate extent files) */
	bool writable;
	bool has_parent;
	u32 nr_ext;
	struct vmdk_ext *ext;		/* [nr_ext], in virtual order */

	/* serializes the CID renewal; held across its write */
	vdimg_mutex_t cid_lock;
	bool cid_renewed;		/* read without the lock once true */
	u32 cid;			/* current CID (renewed on the first write) */
};

/* sparse.c: offsets are relative to the extent */
int vmdk_sparse_open(struct vmdk_sparse *v, const struct vmdk_header *h, u64 fsize);
void vmdk_sparse_free(struct vmdk_sparse *v);
/* memory its grain directories and grain table cache hold (->metadata_bytes); takes its lock */
u64 vmdk_sparse_bytes(struct vmdk_sparse *v);
int vmdk_sparse_map(struct vmdk_sparse *v, u64 offset, u64 length, unsigned int flags,
		    struct vdimg_extent *ext);
int vmdk_sparse_commit(struct vmdk_sparse *v, const struct vdimg_extent *ext);
int vmdk_sparse_discard(struct vmdk_sparse *v, u64 offset, u64 length, unsigned int flags);
int vmdk_sparse_flush(struct vmdk_sparse *v);
int vmdk_flush_locked(struct vmdk_sparse *v);
int vmdk_set_unclean(struct vmdk_sparse *v, bool unclean);
/* grow: room for @cap sectors (tables appended, the directories moved), then the capacity */
int vmdk_sparse_grow(struct vmdk_sparse *v, u64 cap);
int vmdk_sparse_set_capacity(struct vmdk_sparse *v, u64 cap);
/* the GT @gd_index, cached (read when @load, else -EAGAIN on a miss); lock held */
int vmdk_gt_get(struct vmdk_sparse *v, u32 gd_index, bool load, struct vmdk_gt_slot **out);
/* is GTE @e (not 0 or 1) a valid grain sector? */
bool vmdk_grain_ok(const struct vmdk_sparse *v, u32 e);
/* check the header of a sparse extent and fill the geometry of @v (sparse.c) */
int vmdk_check_header(struct vmdk_sparse *v, const struct vmdk_header *h, u64 fsize);
int vmdk_check_cowd_header(struct vmdk_sparse *v, const struct vmdk_cowd_header *h, u64 fsize);

/* stream.c */
int vmdk_stream_footer(struct vmdk_sparse *v, struct vmdk_header *h, u64 fsize);
int vmdk_sparse_read_encoded(struct vmdk_sparse *v, const struct vdimg_extent *ext, void *buf);

/*
 * sesparse.c: the extent's header and grain directory checked and loaded (@writable: its tables
 * scanned for the allocation cursors); offsets per extent
 */
int vmdk_se_open(struct vmdk_se *se, struct vmdk *vm, struct vdimg_file *file, bool writable);
void vmdk_se_free(struct vmdk_se *se);
/* memory its grain directory and grain table hold (->metadata_bytes); takes its lock */
u64 vmdk_se_bytes(struct vmdk_se *se);
int vmdk_se_map(struct vmdk_se *se, u64 offset, u64 length, unsigned int flags,
		struct vdimg_extent *ext);
int vmdk_se_commit(struct vmdk_se *se, const struct vdimg_extent *ext);
int vmdk_se_discard(struct vmdk_se *se, u64 offset, u64 length, unsigned int flags);
int vmdk_se_flush(struct vmdk_se *se);
/* a new, empty extent's header and volatile header (512 bytes each), the file's sectors */
int vmdk_se_new(u64 cap, void *hdr, void *vol, u64 *file_sec);

/* vmdk.c */
/* a new CID before the first change (-EAGAIN with @nowait while still to be written) */
int vmdk_renew_cid(struct vmdk *vm, bool nowait);
int vmdk_write_desc(struct vmdk *vm, const char *text, u32 len);
int vmdk_flush(struct vdimg_image *img);
/* ->grow; without @desc the descriptor is left to the caller (a resize that adds extent files) */
int vmdk_grow_last(struct vdimg_image *img, u64 new_size, bool desc);

static inline struct vmdk *VMDK(struct vdimg_image *img)
{
	return img->priv;
}

#endif /* _VDIMG_VMDK_H */
