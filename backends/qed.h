/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QED on-disk layout (qemu's docs/interop/qed_spec): the header and the meaning of table entries.
 * Everything on disk is little-endian. Only backends/qed.c includes this file.
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

#define QED_F_BACKING_FILE		(1ULL << 0)
#define QED_F_NEED_CHECK		(1ULL << 1)
#define QED_F_BACKING_FORMAT_NO_PROBE	(1ULL << 2)
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

#endif /* _VDIMG_QED_H */
