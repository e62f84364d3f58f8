/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QCOW version 1 on-disk layout (qemu's block/qcow.c is the reference): the header and the bit
 * layout of L2 entries (everything on disk is big-endian), and the backend's private state. Only
 * backends/qcow.c and its userspace half tools/lib/formats/qcow.c include this file.
 */
#ifndef _VDIMG_QCOW_H
#define _VDIMG_QCOW_H

#include <vdimg/platform.h>

#define QCOW_MAGIC		0x514649fbU	/* "QFI\xfb" */
#define QCOW_VERSION		1

struct qcow_header {
	__be32 magic;
	__be32 version;			/* 1 */
	__be64 backing_file_offset;	/* 0: no backing file */
	__be32 backing_file_size;	/* <= 1023, not NUL-terminated */
	__be32 mtime;
	__be64 size;			/* virtual size in bytes */
	u8 cluster_bits;		/* 9..16 */
	u8 l2_bits;			/* log2 of entries per L2 table, 6..13 */
	__be16 padding;
	__be32 crypt_method;		/* 0 none, 1 AES */
	__be64 l1_table_offset;
} __packed;

#define QCOW_HEADER_LEN		48

#define QCOW_CRYPT_NONE		0
#define QCOW_CRYPT_AES		1

/*
 * L2 entries: a data cluster's file offset, 0 for unallocated, or with bit 63 a compressed cluster:
 * bits 0..(62 - cluster_bits) the file offset, the next cluster_bits bits its size in bytes.
 */
#define QCOW_OFLAG_COMPRESSED	BIT_ULL(63)

static inline void qcow_check_layout(void)
{
	BUILD_BUG_ON(sizeof(struct qcow_header) != QCOW_HEADER_LEN);
}

/* ---- the backend's private state (backends/qcow.c) ---- */

#include <vdimg/backend.h>
#include "cluster_table.h"

#define QCOW_MIN_CLUSTER_BITS	9
#define QCOW_MAX_CLUSTER_BITS	16
#define QCOW_MIN_L2_BITS	6
#define QCOW_MAX_L2_BITS	13
#define QCOW_MAX_L1_BYTES	(32U << 20)
#define QCOW_L2_CACHE_BYTES	(2U << 20)
#define QCOW_MAX_SLOTS		64U

struct qcow {
	/* fixed after open */
	u32 cluster_bits;
	u32 cluster_size;
	u32 l2_bits;
	u32 l2_bytes;
	u64 coff_mask;			/* compressed entry: offset bits */
	u64 vsize;
	u64 fsize;
	u32 mtime;
	u64 backing_off;
	u32 backing_len;
	u64 l1_offset;
	u64 l1_size;
	u64 *l1;			/* cpu order */

	vdimg_mutex_t lock;		/* protects everything below */
	struct vdimg_ct l2c;		/* L2 tables (l2_bytes); never dirty (read-only) */
	u8 *cbuf;			/* compressed input (one cluster) */
	u8 *dbuf;			/* the last decoded cluster */
	u64 dbuf_entry;			/* the L2 entry decoded in dbuf, 0: none */
};

static inline struct qcow *QO(struct vdimg_image *img)
{
	return img->priv;
}

/* entry @i of the cached L2 table @s, cpu order */
static inline u64 qcow_l2_entry(const struct vdimg_ct_slot *s, u32 i)
{
	return be64_to_cpu(((const __be64 *)s->data)[i]);
}

/* backends/qcow.c, for tools/lib/formats/qcow.c */
/* The cached L2 table at @off (read on a miss unless @nowait). Lock held. */
int qcow_l2_get(struct vdimg_image *img, u64 off, bool nowait, struct vdimg_ct_slot **out);
/* Is entry @e usable? 0 or a corruption error naming it. */
int qcow_check_entry(struct vdimg_image *img, u64 e);

#endif /* _VDIMG_QCOW_H */
