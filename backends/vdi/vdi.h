/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The on-disk layout of VirtualBox Disk Images (VDI), as backends/vdi/ reads and writes it. A file
 * starts with a 72-byte pre-header (a text line, the signature, the version), followed by the
 * header (version 0, or version 1.1 whose first field is its own size). The block map is an array
 * of little-endian u32, one per block of the virtual disk: the index of the block's slot in the
 * data area, or FREE (not in this image) or ZERO (reads zeros). Slot s holds its block at
 * data_offset + s * (block_size + block_extra) + block_extra. All fields are little-endian; UUIDs
 * are stored in the Microsoft GUID layout (first three fields little-endian). After the layout: the
 * backend's private state and the functions its files share. The private header of backends/vdi/
 * (kernel-shared) and of its userspace half, tools/lib/formats/vdi.c; the host tests read the
 * layout from it too.
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

/* ---- the backend's private state, shared by backends/vdi/ and tools/lib/formats/vdi.c ---- */

#include <vdimg/backend.h>

#define VDI_MIN_BLOCK		512U
#define VDI_MAX_BLOCK		(64U << 20)	/* bounds the fill the driver must do */
#define VDI_MAX_EXTRA		(64U << 20)
#define VDI_MAX_BLOCKS		BIT(26)		/* 256 MiB of map in memory at most */
#define VDI_DEFAULT_BLOCK	SZ_1M
#define VDI_ALIGN		SZ_1M		/* data area alignment of images we create */

struct vdi {
	struct vdimg_image *img;
	u32 version;			/* pre-header version, major << 16 | minor */
	u32 type;			/* enum vdi_image_type */
	u32 hflags;			/* header flags, kept as found */
	u32 header_size;		/* version 1: header.header_size */
	u64 disk_size;			/* header value (img->size is it rounded up to 512) */
	u64 blocks_off;			/* file offset of the map */
	u64 data_off;			/* file offset of slot 0 */
	u32 block_size;
	u32 block_shift;
	u32 block_extra;
	u64 stride;			/* block_size + block_extra */
	u32 nr_blocks;			/* map entries */
	u64 alloc_field;		/* file offset of header.blocks_allocated */
	u64 modify_field;		/* file offset of header.uuid_modify */
	bool read_only;
	bool diff;			/* has a parent (differencing or undo) */
	char comment[257];
	struct vdi_geometry legacy;
	struct vdi_geometry lchs;
	bool has_lchs;
	u8 uuid_create[16];		/* as on disk (GUID layout) */
	u8 uuid_linkage[16];
	u8 uuid_parent_modify[16];

	/* serializes metadata writes; held across their I/O. Protects @disk_alloc. */
	vdimg_mutex_t meta_lock;
	u32 disk_alloc;			/* header.blocks_allocated as on disk */
	u32 repairs;			/* problems a repair open found, not yet written */
	u32 lost;			/* entries past the end of the file, read as FREE */

	/* protects everything below; never held across I/O */
	vdimg_mutex_t map_lock;
	u32 *map;			/* [nr_blocks], cpu order */
	u64 *slot_used;			/* bitmap [nr_blocks]: slot referenced or reserved */
	u64 *dirty;			/* bitmap [nr_blocks]: entry not yet written (flush does) */
	u64 *flushing;			/* bitmap [nr_blocks]: the entries a flush writes */
	u32 nr_dirty;			/* bits set in @dirty */
	u32 next_slot;			/* slots >= this are unused and past the allocated area */
	u32 nr_holes;			/* unused slots below @next_slot */
	u32 hole_hint;			/* no hole below this index */
	/* uuid_modify was renewed since open (also under meta_lock) */
	bool modified;
	u8 uuid_modify[16];
};

static inline bool vdi_allocated(u32 e)
{
	return e < VDI_BLOCK_ZERO;
}

static inline bool vdi_test_slot(const struct vdi *v, u32 s)
{
	return v->slot_used[s / 64] & (1ULL << (s % 64));
}

static inline void vdi_set_slot(struct vdi *v, u32 s)
{
	v->slot_used[s / 64] |= 1ULL << (s % 64);
}

static inline void vdi_clear_slot(struct vdi *v, u32 s)
{
	v->slot_used[s / 64] &= ~(1ULL << (s % 64));
}

/* file offset of the data of slot @s */
static inline u64 vdi_slot_offset(const struct vdi *v, u32 s)
{
	return v->data_off + (u64)s * v->stride + v->block_extra;
}

/* ---- functions shared between the files of the backend ---- */

/* open.c */
void vdi_uuid_swap(u8 *dst, const u8 *src);
void vdi_uuid_str(char *buf, const u8 *rfc);
void vdi_new_uuid(u8 *disk);
const char *vdi_type_name(u32 type);

/* map.c */
int vdi_write_le32(struct vdi *v, u64 off, u32 val);
int vdi_touch(struct vdi *v, bool nowait);
int vdi_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	    struct vdimg_extent *ext);
int vdi_commit(struct vdimg_image *img, const struct vdimg_extent *ext);
int vdi_flush(struct vdimg_image *img);
void vdi_abort(struct vdimg_image *img, const struct vdimg_extent *ext);
int vdi_unmap_block(struct vdi *v, u32 blk, bool release);
int vdi_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags);

#endif /* _VDIMG_VDI_H */
