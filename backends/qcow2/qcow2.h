/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QCOW2 on-disk layout (qemu's docs/interop/qcow2.txt): the header, header extensions, feature
 * name table entries, snapshot table entries, and the bit layout of L1, L2 and refcount table
 * entries (everything on disk is big-endian); then the backend's private state and the functions
 * its files share. The private header of backends/qcow2/ (kernel-shared) and of its userspace half,
 * tools/lib/formats/qcow2/; nothing else includes it.
 */
#ifndef _VDIMG_QCOW2_H
#define _VDIMG_QCOW2_H

#include <vdimg/platform.h>

#define QCOW2_MAGIC		0x514649fbU	/* "QFI\xfb" */

struct qcow2_header {
	__be32 magic;
	__be32 version;			/* 2 or 3 */
	__be64 backing_file_offset;	/* 0: no backing file */
	__be32 backing_file_size;	/* <= 1023, not NUL-terminated */
	__be32 cluster_bits;		/* 9..21 */
	__be64 size;			/* virtual size in bytes */
	__be32 crypt_method;		/* 0 none, 1 AES, 2 LUKS */
	__be32 l1_size;			/* entries */
	__be64 l1_table_offset;
	__be64 refcount_table_offset;
	__be32 refcount_table_clusters;
	__be32 nb_snapshots;
	__be64 snapshots_offset;
	/* version 3 */
	__be64 incompatible_features;
	__be64 compatible_features;
	__be64 autoclear_features;
	__be32 refcount_order;		/* refcount_bits = 1 << order, order <= 6 */
	__be32 header_length;		/* >= 104, multiple of 8 */
	/* optional fields (present when header_length says so) */
	u8 compression_type;		/* 0 zlib, 1 zstd */
	u8 padding[7];
} __packed;

#define QCOW2_V2_HEADER_LEN	72
#define QCOW2_V3_HEADER_LEN	104
#define QCOW2_HEADER_LEN	112	/* what we write for v3: up to compression_type + padding */

/* incompatible feature bits */
#define QCOW2_INCOMPAT_DIRTY		BIT_ULL(0)
#define QCOW2_INCOMPAT_CORRUPT		BIT_ULL(1)
#define QCOW2_INCOMPAT_DATA_FILE	BIT_ULL(2)
#define QCOW2_INCOMPAT_COMPRESSION	BIT_ULL(3)
#define QCOW2_INCOMPAT_EXTL2		BIT_ULL(4)
#define QCOW2_INCOMPAT_KNOWN		((1ULL << 5) - 1)
/* compatible feature bits */
#define QCOW2_COMPAT_LAZY_REFCOUNTS	BIT_ULL(0)
/* autoclear feature bits */
#define QCOW2_AUTOCLEAR_BITMAPS		BIT_ULL(0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW	BIT_ULL(1)

#define QCOW2_COMPRESSION_ZLIB		0
#define QCOW2_COMPRESSION_ZSTD		1

#define QCOW2_CRYPT_NONE		0
#define QCOW2_CRYPT_AES			1
#define QCOW2_CRYPT_LUKS		2

/* header extensions: u32 type, u32 length, data padded to 8 bytes */
struct qcow2_ext_hdr {
	__be32 type;
	__be32 len;
} __packed;

#define QCOW2_EXT_END			0x00000000U
#define QCOW2_EXT_BACKING_FORMAT	0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE		0x6803f857U
#define QCOW2_EXT_BITMAPS		0x23852875U
#define QCOW2_EXT_CRYPTO		0x0537be77U
#define QCOW2_EXT_DATA_FILE		0x44415441U

struct qcow2_feature_name {
	u8 type;			/* 0 incompatible, 1 compatible, 2 autoclear */
	u8 bit;
	char name[46];			/* zero padded, not always NUL-terminated */
} __packed;

struct qcow2_bitmaps_ext {
	__be32 nb_bitmaps;
	__be32 reserved;
	__be64 bitmap_directory_size;
	__be64 bitmap_directory_offset;
} __packed;

/* snapshot table entry (followed by extra data, id string, name, padding to 8) */
struct qcow2_snapshot_hdr {
	__be64 l1_table_offset;
	__be32 l1_size;
	__be16 id_str_size;
	__be16 name_size;
	__be32 date_sec;
	__be32 date_nsec;
	__be64 vm_clock_nsec;
	__be32 vm_state_size;
	__be32 extra_data_size;
} __packed;

/* bitmap directory entry (followed by extra data, name, padding to 8) */
struct qcow2_bitmap_dir_entry {
	__be64 bitmap_table_offset;
	__be32 bitmap_table_size;
	__be32 flags;
	u8 type;
	u8 granularity_bits;
	__be16 name_size;
	__be32 extra_data_size;
} __packed;

/* L1 entries, L2 entries, refcount table entries */
#define QCOW2_OFFSET_MASK	0x00fffffffffffe00ULL	/* bits 9-55 */
#define QCOW2_L1_RESERVED	0x7f000000000001ffULL
#define QCOW2_OFLAG_COPIED	BIT_ULL(63)
#define QCOW2_OFLAG_COMPRESSED	BIT_ULL(62)
#define QCOW2_OFLAG_ZERO	BIT_ULL(0)
#define QCOW2_L2_STD_RESERVED	0x3f000000000001feULL	/* bits 1-8, 56-61 */
#define QCOW2_RT_RESERVED	0x00000000000001ffULL

/* extended L2: the second 64-bit word */
#define QCOW2_SUBCLUSTERS	32
#define QCOW2_SC_ALLOC(bm)	((u32)(bm))
#define QCOW2_SC_ZERO(bm)	((u32)((bm) >> 32))

static inline void qcow2_check_layout(void)
{
	BUILD_BUG_ON(sizeof(struct qcow2_header) != QCOW2_HEADER_LEN);
	BUILD_BUG_ON(sizeof(struct qcow2_ext_hdr) != 8);
	BUILD_BUG_ON(sizeof(struct qcow2_feature_name) != 48);
	BUILD_BUG_ON(sizeof(struct qcow2_bitmaps_ext) != 24);
	BUILD_BUG_ON(sizeof(struct qcow2_snapshot_hdr) != 40);
	BUILD_BUG_ON(sizeof(struct qcow2_bitmap_dir_entry) != 24);
}

/* ---- the backend's private state, shared by backends/qcow2/ and tools/lib/formats/qcow2/ ---- */

#include <vdimg/backend.h>
#include "../cluster_table.h"

#define QCOW2_MIN_CLUSTER_BITS	9
#define QCOW2_MAX_CLUSTER_BITS	21
#define QCOW2_MAX_L1_BYTES	(32U << 20)	/* qemu's limit */
#define QCOW2_MAX_RT_BYTES	(8U << 20)	/* qemu's limit */
#define QCOW2_L2_CACHE_BYTES	(4U << 20)
#define QCOW2_RB_CACHE_BYTES	SZ_1M
#define QCOW2_MAX_PENDING	65536		/* deferred frees kept (1 MiB); beyond, they leak */
/* largest run of clusters one NEW extent reserves */
#define QCOW2_MAX_RUN_BYTES	(4U << 20)

/* cookie[1] of a NEW extent */
#define QCOW2_NEW_ALLOCATED	BIT_ULL(0)	/* cookie[0] is a cluster reserved by map */
#define QCOW2_NEW_WAS_COMPRESSED BIT_ULL(1)	/* the old descriptor was a compressed one */
/* a copy of a shared cluster (internal snapshots) */
#define QCOW2_NEW_WAS_SHARED	BIT_ULL(2)
#define QCOW2_NEW_DATA_FILE	BIT_ULL(3)	/* cookie[0] is a data file offset (may be 0) */

#define QCOW2_MAX_SNAPSHOTS	65536		/* qemu's limits on the snapshot table */
#define QCOW2_MAX_SNAP_EXTRA	1024
#define QCOW2_MAX_SNAP_TABLE	(64U << 20)
#define QCOW2_MAX_DATA_NAME	1023

struct qcow2_range {
	u64 off;
	u64 len;
};

struct qcow2 {
	/* fixed after open */
	u32 version;
	u32 cluster_bits;
	u32 cluster_size;
	u32 l2_bits;			/* log2 of entries per L2 table */
	u32 l2_entry_size;		/* 8, or 16 with extended L2 */
	/* log2 of the subcluster size (== cluster_bits without ext L2) */
	u32 sc_bits;
	u32 refcount_order;
	u32 rb_bits;			/* log2 of entries per refcount block */
	u32 hdr_len;
	u32 csize_shift;		/* compressed descriptor: where the sector count starts */
	u64 csize_mask;
	u64 coff_mask;
	u64 vsize;			/* virtual size from the header */
	u64 incompat, compat, autoclear;
	u8 compression_type;
	bool ext_l2;
	bool has_bitmaps;
	u64 backing_off;
	u32 backing_len;
	char backing_fmt[32];
	u32 nb_snapshots;
	u64 snapshots_offset;
	u32 nb_bitmaps;
	bool writable;
	/* external data file: DATA clusters live there, at their guest offset, not refcounted */
	bool has_data_file;
	/* autoclear "raw external data": keep it a valid raw image */
	bool data_raw;
	struct vdimg_file *dfile;	/* where DATA extents point: img->data_file or img->file */
	char dfname[QCOW2_MAX_DATA_NAME + 1];

	vdimg_mutex_t lock;		/* protects everything below */
	u32 l1_size;
	u64 l1_offset;
	u64 *l1;			/* cpu order */
	u32 l1_dirty_lo, l1_dirty_hi;	/* dirty entries [lo, hi), lo == hi: clean */
	u64 rt_offset;
	u32 rt_clusters;
	u64 rt_entries;
	u64 *rt;			/* refcount table, cpu order */
	struct vdimg_ct l2c;
	struct vdimg_ct rbc;
	u64 free_hint;			/* lowest cluster index that may be free */
	/*
	 * Frees waiting for the next flush (grown on demand). After ->frees_pending() (the driver
	 * drains writes mapped before it), that flush frees only the first free_mark entries.
	 */
	u32 nr_pending, pending_cap;
	struct qcow2_range *pending;
	bool pending_marked;
	u32 free_mark;
	/* scratch buffers, NULL until first needed (qcow2_scratch() in map.c) */
	u8 *cbuf;			/* compressed input buffer (2 clusters) */
	u8 *dbuf;			/* decompressed cluster */
	/*
	 * Userspace only (tools/lib/formats/qcow2/compress.c): the next free byte of the host
	 * cluster compressed clusters are being packed into, 0 for none
	 */
	u64 cfree;
};

static inline struct qcow2 *QC(struct vdimg_image *img)
{
	return img->priv;
}

/* What one subcluster (or cluster, without extended L2) holds. */
enum qcow2_kind {
	QK_UNALLOC,
	QK_ZERO,
	QK_DATA,
	QK_COMPRESSED,
};

struct qcow2_l2e {
	u64 e;				/* the descriptor word */
	u64 bm;				/* extended L2: the subcluster bitmap */
};

/* One entry of the snapshot table, as far as we use it. */
struct qcow2_snap {
	u64 l1_offset;
	u32 l1_size;
	/* from the extra data; 0 when the entry does not record it */
	u64 disk_size;
	u64 vm_state;
	u32 date_sec;
	u32 id_len, name_len;
	u64 id_off, name_off;		/* file offsets of the (not NUL-terminated) strings */
};

/* ---- functions shared between the files of the backend ---- */

/* open.c */
const char *qcow2_feature_name(const u8 *tbl, u32 len, u32 bit, char *buf, size_t bufsz);
int qcow2_write_header_field(struct vdimg_image *img, size_t off, u64 v, size_t len);

/* map.c */
void qcow2_l2_read(const struct qcow2 *q, const u8 *t, u32 i, struct qcow2_l2e *out);
void qcow2_l2_write(const struct qcow2 *q, u8 *t, u32 i, const struct qcow2_l2e *in);
int qcow2_kind(struct vdimg_image *img, const struct qcow2_l2e *l, u32 sc,
	       enum qcow2_kind *kind);
void qcow2_compressed_range(const struct qcow2 *q, u64 e, u64 *off, u64 *len);
int qcow2_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf);
int qcow2_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	      struct vdimg_extent *ext);
int qcow2_commit(struct vdimg_image *img, const struct vdimg_extent *ext);
void qcow2_abort(struct vdimg_image *img, const struct vdimg_extent *ext);
int qcow2_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags);
int qcow2_l2_writable(struct vdimg_image *img, u64 offset, struct vdimg_ct_slot **out);

/* alloc.c */
bool qcow2_owned(const struct qcow2 *q, u64 e);
int qcow2_cache_get(struct vdimg_image *img, struct vdimg_ct *c, u64 off, bool fresh,
		    struct vdimg_ct_slot **out);
void qcow2_rc_set_raw(const struct qcow2 *q, u8 *blk, u64 i, u64 v);
u64 qcow2_rc_max(const struct qcow2 *q);
int qcow2_check_meta_off(struct vdimg_image *img, u64 off, const char *what);
int qcow2_rc_get(struct vdimg_image *img, u64 idx, u64 *rc);
int qcow2_rc_add(struct vdimg_image *img, u64 idx, s64 delta);
int qcow2_alloc(struct vdimg_image *img, u64 n, u64 *out);
int qcow2_flush_locked(struct vdimg_image *img);
int qcow2_defer_free(struct vdimg_image *img, u64 off, u64 len);
bool qcow2_frees_pending(struct vdimg_image *img);
int qcow2_flush(struct vdimg_image *img);

/* snapshot.c */
int qcow2_snapshot(struct vdimg_image *img, u32 idx, struct qcow2_snap *out);
int qcow2_open_snapshot(struct vdimg_image *img, u32 n);

/*
 * Userspace only (tools/lib/formats/qcow2/check.c): a writable open of a dirty image in the library
 * rebuilds the refcounts; open.c calls it only when VDIMG_LIBRARY.
 */
int qcow2_repair(struct vdimg_image *img);

#endif /* _VDIMG_QCOW2_H */
