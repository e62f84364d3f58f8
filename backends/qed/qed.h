/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QED on-disk layout (qemu's docs/interop/qed_spec): the header and the meaning of table entries
 * (everything on disk is little-endian); then the backend's private state and the functions its
 * files share. The private header of backends/qed/ (kernel-shared) and of its userspace half,
 * tools/lib/formats/qed.c; nothing else includes it.
 */
#ifndef _VDIMG_QED_H
#define _VDIMG_QED_H

#include <vdimg/platform.h>

#define QED_MAGIC		0x00444551U	/* "QED\0" read as little-endian */

struct qed_header {
	__le32 magic;
	__le32 cluster_size;		/* bytes, power of two, 4 KiB..64 MiB */
	__le32 table_size;		/* clusters per L1/L2 table, power of two, 1..16 */
	__le32 header_size;		/* clusters before the first regular cluster */
	__le64 features;		/* unknown bits: refuse */
	__le64 compat_features;		/* unknown bits: ignore */
	__le64 autoclear_features;	/* unknown bits: clear on a writable open */
	__le64 l1_table_offset;		/* bytes, cluster aligned */
	__le64 image_size;		/* virtual size, multiple of 512 */
	/* used only with QED_F_BACKING_FILE, but always present */
	__le32 backing_filename_offset;	/* bytes from the start of the file */
	__le32 backing_filename_size;	/* bytes, not NUL-terminated */
} __packed;

#define QED_HEADER_LEN		64

#define QED_F_BACKING_FILE		BIT_ULL(0)
#define QED_F_NEED_CHECK		BIT_ULL(1)
#define QED_F_BACKING_FORMAT_NO_PROBE	BIT_ULL(2)
#define QED_F_KNOWN			(QED_F_BACKING_FILE | QED_F_NEED_CHECK | \
					 QED_F_BACKING_FORMAT_NO_PROBE)

#define QED_MIN_CLUSTER_SIZE	(4U << 10)
#define QED_MAX_CLUSTER_SIZE	(64U << 20)
#define QED_MAX_TABLE_SIZE	16U
#define QED_DEFAULT_CLUSTER	(64U << 10)
#define QED_DEFAULT_TABLE_SIZE	4U

/* data cluster (L2) entries */
#define QED_ENTRY_UNALLOC	0ULL
#define QED_ENTRY_ZERO		1ULL	/* reads as zeros, hides the backing file */

static inline void qed_check_layout(void)
{
	BUILD_BUG_ON(sizeof(struct qed_header) != QED_HEADER_LEN);
}

/* ---- the backend's private state, shared by backends/qed/ and tools/lib/formats/qed.c ---- */

#include <vdimg/backend.h>
#include "../cluster_table.h"

#define QED_MAX_L1_BYTES	(32U << 20)	/* L1 entries kept in memory */
#define QED_PAGE_MAX		(64U << 10)	/* cache unit: a page of an L2 table */
#define QED_CACHE_BYTES		(4U << 20)
#define QED_MAX_SLOTS		128U
#define QED_MAX_VSIZE		BIT_ULL(62)
/* largest run of clusters one NEW extent reserves */
#define QED_MAX_RUN_BYTES	(4U << 20)

/* cookie[1] of a NEW extent: the entry it replaces (unallocated or zero) */
#define QED_NEW_MAGIC		0x5145440000000000ULL

struct qed {
	/* fixed after open */
	u32 cluster_size;
	u32 cluster_bits;
	u32 table_size;			/* clusters per table */
	u32 header_size;		/* clusters */
	u64 tbytes;			/* bytes per table */
	u32 tbits;			/* log2 of entries per table */
	u32 psize;			/* cache page size: min(tbytes, QED_PAGE_MAX) */
	u64 features, compat, autoclear;
	u64 l1_offset;
	u64 vsize;
	u32 backing_off, backing_len;
	bool writable;
	/*
	 * the file cannot grow (a block device, vdimg_file_fixed_size()): next_alloc starts at the
	 * end of what the tables reference and stops at dev_size; new space holds old bytes
	 */
	bool fixed_file;
	u64 dev_size;
	/* read-only NEED_CHECK image: bad entries read as unallocated */
	bool lenient;

	vdimg_mutex_t lock;		/* protects everything below */
	bool need_check_on_disk;	/* the header on disk has NEED_CHECK */
	u64 l1_entries;			/* entries the virtual size needs (all that is kept) */
	u64 *l1;			/* cpu order */
	u64 l1_dirty_lo, l1_dirty_hi;	/* dirty entries [lo, hi), lo == hi: clean */
	u64 next_alloc;			/* end of the allocated file space, cluster aligned */
	struct vdimg_ct l2c;		/* L2 table pages (psize bytes), little-endian */
	u8 *zpage;			/* psize zeros */
};

static inline struct qed *QD(struct vdimg_image *img)
{
	return img->priv;
}

static inline u64 qed_get(const struct vdimg_ct_slot *s, u32 i)
{
	return le64_to_cpu(((const __le64 *)s->data)[i]);
}

static inline void qed_set(struct vdimg_ct_slot *s, u32 i, u64 e)
{
	((__le64 *)s->data)[i] = cpu_to_le64(e);
	s->dirty = true;
}

struct qed_scan {
	u64 errors;			/* bad entries and double references */
	u64 fixed;			/* bad entries cleared */
	/* userspace check: one bit per cluster of the file, or NULL */
	u8 *used;
	u64 nclusters;
	/* userspace check: called per L1 entry with (index, entries), or NULL */
	void (*progress)(u64 done, u64 total);
	u64 end;			/* the end of the last table or cluster referenced */
	bool quiet;			/* count bad entries without messages */
};

/* ---- functions shared between the files of the backend ---- */

/* open.c */
bool qed_mark(const struct qed *q, struct qed_scan *sc, u64 off, u64 len);
int qed_scan_tables(struct vdimg_image *img, bool fix, struct qed_scan *sc);
int qed_clear_need_check(struct vdimg_image *img);

/* map.c */
int qed_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	    struct vdimg_extent *ext);
int qed_commit(struct vdimg_image *img, const struct vdimg_extent *ext);
void qed_abort(struct vdimg_image *img, const struct vdimg_extent *ext);
int qed_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags);

/* cache.c */
bool qed_table_ok(const struct qed *q, u64 off);
bool qed_data_ok(const struct qed *q, u64 e);
int qed_write_features(struct vdimg_image *img, u64 features);
int qed_cache_get(struct vdimg_image *img, u64 off, bool fresh, struct vdimg_ct_slot **out);
void qed_l1_set(struct qed *q, u64 i, u64 v);
int qed_flush_locked(struct vdimg_image *img);
int qed_flush(struct vdimg_image *img);

#endif /* _VDIMG_QED_H */
