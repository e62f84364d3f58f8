/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QCOW version 1 on-disk layout (qemu's block/qcow.c is the reference): the header and the bit
 * layout of L2 entries. Everything on disk is big-endian. Only backends/qcow.c includes this file.
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
#define QCOW_OFLAG_COMPRESSED	(1ULL << 63)

static inline void qcow_check_layout(void)
{
	BUILD_BUG_ON(sizeof(struct qcow_header) != QCOW_HEADER_LEN);
}

#endif /* _VDIMG_QCOW_H */
