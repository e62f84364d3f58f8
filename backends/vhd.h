/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The on-disk layout of Microsoft Virtual Hard Disk (VHD) images, as the "Virtual Hard Disk Image
 * Format Specification" (version 1.0, 2006) describes it. Every field is big-endian. Only
 * backends/vhd.c and its tests include this file.
 *
 *   fixed:         [ data ............................ ][ footer ]
 *   dynamic/diff:  [ footer copy ][ dynamic header ][ BAT ][ block: bitmap | data ]...[ footer ]
 */
#ifndef _VDIMG_VHD_H
#define _VDIMG_VHD_H

#include <vdimg/backend.h>

#define VHD_SECTOR		512
#define VHD_FOOTER_COOKIE	"conectix"
#define VHD_DYN_COOKIE		"cxsparse"
#define VHD_VERSION		0x00010000U
#define VHD_NO_OFFSET		0xffffffffffffffffULL	/* footer data_offset of a fixed image */
#define VHD_BAT_FREE		0xffffffffU		/* BAT entry of an unallocated block */

enum vhd_disk_type {
	VHD_TYPE_FIXED = 2,
	VHD_TYPE_DYNAMIC = 3,
	VHD_TYPE_DIFF = 4,
};

/* footer.features */
#define VHD_FEAT_TEMPORARY	0x1
#define VHD_FEAT_RESERVED	0x2	/* always set */

/* seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC) */
#define VHD_EPOCH_OFFSET	946684800ULL

/* the largest geometry: 65535 cylinders, 16 heads, 255 sectors per track */
#define VHD_CHS_MAX_SECTORS	(65535ULL * 16 * 255)

struct vhd_footer {
	char cookie[8];			/* "conectix" */
	__be32 features;		/* VHD_FEAT_* */
	__be32 version;			/* VHD_VERSION */
	__be64 data_offset;		/* dynamic header offset, VHD_NO_OFFSET for fixed */
	__be32 timestamp;		/* seconds since 2000-01-01 UTC */
	char creator_app[4];		/* "vpc ", "win ", "qemu", "d2v ", ... */
	__be32 creator_version;
	char creator_os[4];		/* "Wi2k", "Mac " */
	__be64 original_size;		/* bytes at creation */
	__be64 current_size;		/* bytes */
	__be16 cylinders;
	u8 heads;
	u8 sectors;
	__be32 disk_type;		/* enum vhd_disk_type */
	__be32 checksum;		/* one's complement of the byte sum, this field as zero */
	u8 uuid[16];
	u8 saved_state;
	u8 reserved[427];
} __packed;

/* a parent locator entry of the dynamic header */
struct vhd_locator {
	__be32 code;			/* VHD_PLAT_* */
	__be32 space;			/* room reserved: sectors per the spec, bytes per Windows */
	__be32 length;			/* bytes of locator data */
	__be32 reserved;
	__be64 offset;			/* file offset of the data */
} __packed;

#define VHD_PLAT_NONE		0x00000000U
#define VHD_PLAT_WI2R		0x57693272U	/* "Wi2r": relative path (deprecated) */
#define VHD_PLAT_WI2K		0x5769326bU	/* "Wi2k": absolute path (deprecated) */
#define VHD_PLAT_W2RU		0x57327275U	/* "W2ru": relative path, UTF-16LE */
#define VHD_PLAT_W2KU		0x57326b75U	/* "W2ku": absolute path, UTF-16LE */
#define VHD_PLAT_MAC		0x4d616320U	/* "Mac ": a Mac OS alias (not a path) */
#define VHD_PLAT_MACX		0x4d616358U	/* "MacX": file URL, UTF-8 */

#define VHD_NR_LOCATORS		8
#define VHD_PARENT_NAME_BYTES	512

struct vhd_dyn_header {
	char cookie[8];			/* "cxsparse" */
	__be64 data_offset;		/* unused, VHD_NO_OFFSET */
	__be64 table_offset;		/* BAT */
	__be32 version;			/* VHD_VERSION */
	__be32 max_table_entries;	/* BAT entries */
	__be32 block_size;		/* bytes of data per block, a power of two */
	__be32 checksum;
	u8 parent_uuid[16];
	__be32 parent_timestamp;
	__be32 reserved1;
	__be16 parent_name[VHD_PARENT_NAME_BYTES / 2];	/* UTF-16BE */
	struct vhd_locator loc[VHD_NR_LOCATORS];
	u8 reserved2[256];
} __packed;

#ifndef VDIMG_OPEN_REPAIR
/*
 * Proposed open flag (not in backend.h yet): open a damaged image writable only so that ->check()
 * can repair it; map(WRITE) and discard stay refused until the damage is repaired.
 */
#define VDIMG_OPEN_REPAIR	(1U << 2)
#endif

extern const struct vdimg_format vdimg_vhd_format;

#ifndef __KERNEL__
/*
 * Userspace only: the @idx-th candidate path of a differencing image's parent, best first (relative
 * locators first, then absolute ones, then the parent's bare file name), or NULL past the last one.
 * A relative path is relative to the directory holding the child image. Proposed for the contract
 * as vdimg_format.parent_path.
 */
const char *vdimg_vhd_parent_path(struct vdimg_image *img, unsigned int idx);
#endif

#endif /* _VDIMG_VHD_H */
