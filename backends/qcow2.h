/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QCOW2 on-disk layout (qemu's docs/interop/qcow2.txt): the header, header extensions, feature
 * name table entries, snapshot table entries, and the bit layout of L1, L2 and refcount table
 * entries. Everything on disk is big-endian. Only backends/qcow2.c includes this file.
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
#define QCOW2_INCOMPAT_DIRTY		(1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT		(1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE	(1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION	(1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2		(1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN		((1ULL << 5) - 1)
/* compatible feature bits */
#define QCOW2_COMPAT_LAZY_REFCOUNTS	(1ULL << 0)
/* autoclear feature bits */
#define QCOW2_AUTOCLEAR_BITMAPS		(1ULL << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW	(1ULL << 1)

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
#define QCOW2_OFLAG_COPIED	(1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED	(1ULL << 62)
#define QCOW2_OFLAG_ZERO	(1ULL << 0)
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

#endif /* _VDIMG_QCOW2_H */
