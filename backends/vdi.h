/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The on-disk layout of VirtualBox Disk Images (VDI), as backends/vdi.c reads and writes it. A file
 * starts with a 72-byte pre-header (a text line, the signature, the version), followed by the header
 * (version 0, or version 1.1 whose first field is its own size). The block map is an array of
 * little-endian u32, one per block of the virtual disk: the index of the block's slot in the data
 * area, or FREE (not in this image) or ZERO (reads zeros). Slot s holds its block at
 * data_offset + s * (block_size + block_extra) + block_extra. All fields are little-endian; UUIDs are
 * stored in the Microsoft GUID layout (first three fields little-endian).
 */
#ifndef _VDIMG_VDI_H
#define _VDIMG_VDI_H

#include <vdimg/platform.h>

#define VDI_SIGNATURE		0xbeda107fU
#define VDI_VERSION(maj, min)	(((u32)(maj) << 16) | (min))
#define VDI_VERSION_1_1		VDI_VERSION(1, 1)
#define VDI_TEXT		"<<< Oracle VM VirtualBox Disk Image >>>\n"

/* header.type */
enum vdi_image_type {
	VDI_TYPE_NORMAL = 1,	/* dynamic base image */
	VDI_TYPE_FIXED = 2,	/* preallocated base image */
	VDI_TYPE_UNDO = 3,	/* legacy undo image: a differencing image */
	VDI_TYPE_DIFF = 4,	/* differencing image (uuid_linkage names the parent) */
};

/* block map entries that are not slot indexes */
#define VDI_BLOCK_FREE		0xffffffffU	/* not allocated here: the parent's, or zeros */
#define VDI_BLOCK_ZERO		0xfffffffeU	/* reads as zeros, hides the parent */

struct vdi_geometry {
	__le32 cylinders;
	__le32 heads;
	__le32 sectors;
	__le32 sector_size;
} __packed;

struct vdi_preheader {
	char text[64];
	__le32 signature;
	__le32 version;		/* major << 16 | minor */
} __packed;

/* version 0 (VirtualBox 1.x); the map follows the header, the data follows the map */
struct vdi_header0 {
	__le32 type;
	__le32 flags;
	char comment[256];
	struct vdi_geometry geometry;
	__le64 disk_size;
	__le32 block_size;
	__le32 blocks;
	__le32 blocks_allocated;
	u8 uuid_create[16];
	u8 uuid_modify[16];
	u8 uuid_linkage[16];
} __packed;

/* version 1.1; header_size 384 (qemu, old VirtualBox) or 400 (with the LCHS geometry) */
struct vdi_header1 {
	__le32 header_size;
	__le32 type;
	__le32 flags;
	char comment[256];
	__le32 blocks_offset;
	__le32 data_offset;
	struct vdi_geometry geometry;	/* legacy (physical) CHS */
	__le32 unused;			/* was the BIOS translation mode */
	__le64 disk_size;
	__le32 block_size;
	__le32 block_extra;		/* bytes before each block's data in its slot */
	__le32 blocks;
	__le32 blocks_allocated;
	u8 uuid_create[16];
	u8 uuid_modify[16];
	u8 uuid_linkage[16];
	u8 uuid_parent_modify[16];
	struct vdi_geometry lchs;	/* present when header_size >= 400 */
} __packed;

#define VDI_PREHEADER_SIZE	72
#define VDI_HEADER0_SIZE	348
#define VDI_HEADER1_MIN		384	/* without the LCHS geometry */
#define VDI_HEADER1_SIZE	400

#endif /* _VDIMG_VDI_H */
