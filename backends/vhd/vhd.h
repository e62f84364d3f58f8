/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The on-disk layout of Microsoft Virtual Hard Disk (VHD) images, as the "Virtual Hard Disk Image
 * Format Specification" (version 1.0, 2006) describes it (every field is big-endian); then the
 * backend's private state and the functions its files share. The private header of backends/vhd/
 * (kernel-shared) and of its userspace half, tools/lib/formats/vhd/; the tests include it too.
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

extern const struct vdimg_format vdimg_vhd_format;

/* ---- the backend's private state, shared by backends/vhd/ and tools/lib/formats/vhd/ ---- */

#include "../vhd_common.h"

#define VHD_BM_CACHE_BYTES	(256U << 10)	/* memory for cached block bitmaps */
#define VHD_BAT_MAX_BYTES	(64U << 20)	/* largest BAT held in memory (32 TiB at 2 MiB) */
#define VHD_BLOCK_MIN		512U
#define VHD_BLOCK_MAX		(256U << 20)
#define VHD_NO_BLOCK		0xffffffffU
#define VHD_SLOW		1		/* internal: the answer needs I/O */

/* per-block state bits (vhd.state[]) */
#define VHD_BLK_PENDING		0x1	/* reserved: BAT entry in memory, not yet on disk */
#define VHD_BLK_BAD		0x2	/* the BAT entry is invalid: requests fail */
#define VHD_BLK_STALE		0x4	/* the entry on disk points past the end: read as free */

/*
 * BAT entries whose block lies past the end of the file (a crash of a writer that does not sync
 * before its BAT write) that a writable open frees; more look like a truncated file, not a crash.
 */
#define VHD_STALE_MAX		8

/* damage found by open (vhd.damage) */
#define VHD_DMG_FOOTER_CSUM	0x01	/* the footer's checksum is wrong */
#define VHD_DMG_FOOTER_MISSING	0x02	/* no footer at the end: using the copy at offset 0 */
#define VHD_DMG_FOOTER_SHORT	0x04	/* a 511-byte footer at the end */
#define VHD_DMG_COPY		0x08	/* the footer copy at offset 0 is missing or bad */
#define VHD_DMG_HDR_CSUM	0x10	/* the dynamic header's checksum is wrong */
#define VHD_DMG_BAT		0x20	/* BAT entries past the end of the file or overlapping */

/* extent cookie[1]: what ->commit() must do */
#define VHD_COMMIT_BLOCK	1	/* a reserved block: bits, then the BAT entry */
#define VHD_COMMIT_BITS		2	/* clear bits of an allocated block: set them */

struct vhd {
	struct vhd_footer footer;	/* the footer in use (checksum fixed on writes) */
	struct vhd_dyn_header *hdr;	/* dynamic and differencing images only */
	u32 type;			/* enum vhd_disk_type */
	unsigned int damage;		/* VHD_DMG_* (cleared by a repairing check) */
	bool repair_mode;		/* opened with VDIMG_OPEN_REPAIR */
	u64 hdr_off;			/* dynamic header offset */
	u64 footer_off;			/* where the footer is (or goes) */
	u64 file_size;			/* the file's size at open */
	/*
	 * the file cannot grow (a block device, vdimg_file_fixed_size()): the footer lives in its
	 * last sector and new blocks go after the end of the data the metadata references
	 */
	bool fixed_file;
	u32 nr_stale;			/* entries with VHD_BLK_STALE */
	u64 data_end;			/* where the next block goes; protected by io_lock */
	u32 block_size;
	u32 block_shift;
	u32 bitmap_size;		/* bytes before each block's data, a multiple of 512 */
	u32 nr_blocks;			/* BAT entries that the virtual size uses */
	u32 max_entries;		/* max_table_entries */
	u64 bat_off;
	__be32 *bat;			/* the BAT sectors covering nr_blocks, as on disk */
	u32 bat_len;			/* bytes in bat[], a multiple of 512 */
	u8 *state;			/* VHD_BLK_* per block */
	u32 nr_pending;			/* blocks with VHD_BLK_PENDING */
	u32 bm_slots;			/* bitmap cache: direct-mapped by block number */
	u32 *bm_blk;			/* block held by each slot, or VHD_NO_BLOCK */
	u8 *bm_data;			/* bm_slots * bitmap_size bytes */
	/*
	 * lock: protects bat[], state[], nr_pending and the bitmap cache; never held across I/O.
	 * io_lock: serializes metadata writes (reservations, bitmaps, BAT sectors), bitmap loads
	 * into the cache and data_end; taken before lock.
	 */
	vdimg_mutex_t lock;
	vdimg_mutex_t io_lock;
	/* filled only in the library, at open (tools/lib/formats/vhd/locator.c) */
	char *paths[VHD_NR_LOCATORS + 1];	/* parent path candidates, best first */
	char *path_kind[VHD_NR_LOCATORS + 1];	/* "W2ru", ... for describe */
	u32 nr_paths;
	char parent_name[VHD_PARENT_NAME_BYTES * 2];
};

static inline u32 vhd_bat_get(const struct vhd *v, u32 blk)
{
	return be32_to_cpu(v->bat[blk]);
}

/* ---- functions shared between the files of the backend ---- */

/* open.c */
u32 vhd_footer_csum(const struct vhd_footer *f);
u32 vhd_hdr_csum(const struct vhd_dyn_header *h);
u64 vhd_virtual_size(const struct vhd_footer *f, bool *chs);
bool vhd_overlaps(u64 s1, u64 e1, u64 s2, u64 e2);
u64 vhd_block_used(const struct vdimg_image *img, const struct vhd *v, u32 blk);
/* the geometry the VHD specification derives from a sector count */
void vhd_geometry(u64 sectors, u16 *cyl, u8 *heads, u8 *spt);
/* @f's current size and geometry for @size (checksum not updated) */
void vhd_footer_set_size(struct vhd_footer *f, u64 size);

/* map.c */
int vhd_write_bat_sector(struct vdimg_image *img, struct vhd *v, u32 blk);
int vhd_write_footer(struct vdimg_image *img, struct vhd *v, u64 off);
int vhd_footer_to_device_end(struct vdimg_image *img, struct vhd *v);
int vhd_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	    struct vdimg_extent *ext);
int vhd_commit(struct vdimg_image *img, const struct vdimg_extent *ext);
void vhd_abort(struct vdimg_image *img, const struct vdimg_extent *ext);
int vhd_flush(struct vdimg_image *img);
int vhd_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags);

/* ---- userspace only (tools/lib/formats/vhd/locator.c) ---- */

/*
 * The @idx-th candidate path of a differencing image's parent, best first (relative locators
 * first, then absolute ones, then the parent's bare file name), or NULL past the last one. A
 * relative path is relative to the directory holding the child image. Proposed for the contract
 * as vdimg_format.parent_path.
 */
const char *vdimg_vhd_parent_path(struct vdimg_image *img, unsigned int idx);
/* at open and close, in the library only (open.c tests VDIMG_LIBRARY) */
void vhd_parse_locators(struct vdimg_image *img, struct vhd *v);
void vhd_free_locators(struct vhd *v);

#endif /* _VDIMG_VHD_H */
