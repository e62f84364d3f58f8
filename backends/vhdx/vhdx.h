/* SPDX-License-Identifier: GPL-2.0 */
/*
 * On-disk structures of the VHDX format (Microsoft MS-VHDX, version 1): the file identifier, the
 * two headers, the region table, the metadata table and items, BAT entries and the metadata log.
 * Every field is little-endian; GUIDs are kept as the 16 bytes found on disk (the first three
 * fields of a Microsoft GUID are little-endian, so text forms are converted with vhdx_guid_fmt()).
 * Then the log's interface, the backend's private state and the functions its files share. The
 * private header of backends/vhdx/ (kernel-shared) and of its userspace half,
 * tools/lib/formats/vhdx/; the tests include it too. No code that touches files here.
 */
#ifndef _VDIMG_VHDX_H
#define _VDIMG_VHDX_H

#include <vdimg/platform.h>

#define VHDX_KiB		1024ULL
#define VHDX_MiB		(1024ULL * 1024)

/* fixed layout of the header section (the first MiB) */
#define VHDX_FILE_ID_OFF	0
#define VHDX_HEADER1_OFF	(64 * VHDX_KiB)
#define VHDX_HEADER2_OFF	(128 * VHDX_KiB)
#define VHDX_REGION1_OFF	(192 * VHDX_KiB)
#define VHDX_REGION2_OFF	(256 * VHDX_KiB)
#define VHDX_HEADER_SECTION	VHDX_MiB

#define VHDX_HEADER_SIZE	4096U		/* bytes covered by the header checksum */
#define VHDX_REGION_SIZE	(64U * 1024)	/* bytes covered by the region table checksum */
#define VHDX_REGION_MAX		2047U
#define VHDX_META_TABLE_SIZE	(64U * 1024)	/* the metadata table at the start of the region */
#define VHDX_META_MAX		2047U
#define VHDX_LOG_SECTOR		4096U
#define VHDX_SB_BLOCK		VHDX_MiB	/* a sector bitmap block */
#define VHDX_SB_SECTORS		BIT_ULL(23)	/* sectors one sector bitmap block describes */

#define VHDX_BLOCK_MIN		VHDX_MiB
#define VHDX_BLOCK_MAX		(256 * VHDX_MiB)
#define VHDX_MAX_SIZE		(64ULL << 40)	/* 64 TiB */

struct vhdx_file_id {
	u8 signature[8];		/* "vhdxfile" */
	__le16 creator[256];		/* UTF-16LE, informational */
} __packed;

struct vhdx_header {
	u8 signature[4];		/* "head" */
	__le32 checksum;		/* CRC-32C over 4 KiB, this field zero */
	__le64 seq;
	u8 file_write_guid[16];
	u8 data_write_guid[16];
	u8 log_guid[16];
	__le16 log_version;		/* 0 */
	__le16 version;			/* 1 */
	__le32 log_length;		/* multiple of 1 MiB */
	__le64 log_offset;		/* multiple of 1 MiB, >= 1 MiB */
	u8 reserved[4016];
} __packed;

struct vhdx_region_hdr {
	u8 signature[4];		/* "regi" */
	__le32 checksum;		/* CRC-32C over 64 KiB */
	__le32 entry_count;		/* <= 2047 */
	__le32 reserved;
} __packed;

struct vhdx_region_entry {
	u8 guid[16];
	__le64 file_offset;		/* multiple of 1 MiB */
	__le32 length;			/* multiple of 1 MiB */
	__le32 flags;			/* bit 0: required */
} __packed;

#define VHDX_REGION_REQUIRED	1U

struct vhdx_meta_hdr {
	u8 signature[8];		/* "metadata" */
	__le16 reserved;
	__le16 entry_count;		/* <= 2047 */
	__le32 reserved2[5];
} __packed;

struct vhdx_meta_entry {
	u8 item_id[16];
	__le32 offset;			/* from the region start, >= 64 KiB (0 when length is 0) */
	__le32 length;			/* <= 1 MiB */
	__le32 flags;			/* VHDX_META_* */
	__le32 reserved;
} __packed;

#define VHDX_META_IS_USER	BIT(0)
#define VHDX_META_IS_VIRTUAL	BIT(1)
#define VHDX_META_IS_REQUIRED	BIT(2)

struct vhdx_file_params {
	__le32 block_size;
	__le32 flags;			/* VHDX_PARAM_* */
} __packed;

#define VHDX_PARAM_LEAVE_ALLOCATED	BIT(0)
#define VHDX_PARAM_HAS_PARENT		BIT(1)

struct vhdx_locator_hdr {
	u8 locator_type[16];
	__le16 reserved;
	__le16 count;			/* key/value entries that follow */
} __packed;

struct vhdx_locator_entry {
	__le32 key_offset;		/* from the start of the locator item */
	__le32 value_offset;
	__le16 key_length;		/* bytes of UTF-16LE */
	__le16 value_length;
} __packed;

/* BAT entries: bits 0-2 state, 20-63 file offset in MiB */
#define VHDX_BAT_STATE_MASK	7ULL
#define VHDX_BAT_OFF_SHIFT	20
#define VHDX_BAT_OFF_MASK	(~((1ULL << VHDX_BAT_OFF_SHIFT) - 1))

enum vhdx_payload_state {
	VHDX_PAYLOAD_NOT_PRESENT = 0,
	VHDX_PAYLOAD_UNDEFINED = 1,
	VHDX_PAYLOAD_ZERO = 2,
	VHDX_PAYLOAD_UNMAPPED = 3,
	VHDX_PAYLOAD_FULLY_PRESENT = 6,
	VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
};

#define VHDX_SB_NOT_PRESENT	0
#define VHDX_SB_PRESENT		6

/* ---- the log ---- */

struct vhdx_log_entry_hdr {
	u8 signature[4];		/* "loge" */
	__le32 checksum;		/* CRC-32C over entry_length bytes, this field zero */
	__le32 entry_length;		/* multiple of 4 KiB */
	__le32 tail;			/* log offset of the oldest entry still needed */
	__le64 seq;			/* > 0 */
	__le32 descriptor_count;
	__le32 reserved;
	u8 log_guid[16];		/* must match the header's */
	__le64 flushed_file_offset;	/* the file was at least this long when written */
	__le64 last_file_offset;	/* the file must be extended to at least this */
} __packed;

/* "desc" (data) and "zero" descriptors share this shape */
struct vhdx_log_desc {
	u8 signature[4];
	__le32 trailing_or_reserved;	/* desc: last 4 bytes of the sector */
	__le64 leading_or_length;	/* desc: first 8 bytes; zero: bytes to zero */
	__le64 file_offset;		/* multiple of 4 KiB */
	__le64 seq;			/* the entry's */
} __packed;

struct vhdx_log_data {
	u8 signature[4];		/* "data" */
	__le32 seq_high;
	u8 data[4084];
	__le32 seq_low;
} __packed;

#define VHDX_DESC_FIRST		((VHDX_LOG_SECTOR - sizeof(struct vhdx_log_entry_hdr)) / \
				 sizeof(struct vhdx_log_desc))	/* descriptors in sector 0: 126 */
#define VHDX_DESC_PER_SECTOR	(VHDX_LOG_SECTOR / sizeof(struct vhdx_log_desc))

/* ---- well-known GUIDs, in on-disk byte order ---- */

#define VHDX_GUID(a, b, c, d0, d1, d2, d3, d4, d5, d6, d7) {				\
	(a) & 0xff, ((a) >> 8) & 0xff, ((a) >> 16) & 0xff, ((a) >> 24) & 0xff,		\
	(b) & 0xff, ((b) >> 8) & 0xff, (c) & 0xff, ((c) >> 8) & 0xff,			\
	d0, d1, d2, d3, d4, d5, d6, d7 }

#define VHDX_GUID_BAT		VHDX_GUID(0x2DC27766, 0xF623, 0x4200, 0x9D, 0x64, 0x11, 0x5E, \
					  0x9B, 0xFD, 0x4A, 0x08)
#define VHDX_GUID_METADATA	VHDX_GUID(0x8B7CA206, 0x4790, 0x4B9A, 0xB8, 0xFE, 0x57, 0x5F, \
					  0x05, 0x0F, 0x88, 0x6E)
#define VHDX_GUID_FILE_PARAMS	VHDX_GUID(0xCAA16737, 0xFA36, 0x4D43, 0xB3, 0xB6, 0x33, 0xF0, \
					  0xAA, 0x44, 0xE7, 0x6B)
#define VHDX_GUID_VDISK_SIZE	VHDX_GUID(0x2FA54224, 0xCD1B, 0x4876, 0xB2, 0x11, 0x5D, 0xBE, \
					  0xD8, 0x3B, 0xF4, 0xB8)
#define VHDX_GUID_PAGE83	VHDX_GUID(0xBECA12AB, 0xB2E6, 0x4523, 0x93, 0xEF, 0xC3, 0x09, \
					  0xE0, 0x00, 0xC7, 0x46)
#define VHDX_GUID_LOGICAL_SS	VHDX_GUID(0x8141BF1D, 0xA96F, 0x4709, 0xBA, 0x47, 0xF2, 0x33, \
					  0xA8, 0xFA, 0xAB, 0x5F)
#define VHDX_GUID_PHYSICAL_SS	VHDX_GUID(0xCDA348C7, 0x445D, 0x4471, 0x9C, 0xC9, 0xE9, 0x88, \
					  0x52, 0x51, 0xC5, 0x56)
#define VHDX_GUID_PARENT_LOC	VHDX_GUID(0xA8D35F2D, 0xB30B, 0x454D, 0xAB, 0xF7, 0xD3, 0xD8, \
					  0x48, 0x34, 0xAB, 0x0C)
#define VHDX_GUID_LOC_TYPE	VHDX_GUID(0xB04AEFB7, 0xD19E, 0x4A81, 0xB7, 0x89, 0x25, 0xB8, \
					  0xE9, 0x44, 0x59, 0x13)

static inline void vhdx_check_layout(void)
{
	BUILD_BUG_ON(sizeof(struct vhdx_file_id) != 520);
	BUILD_BUG_ON(sizeof(struct vhdx_header) != 4096);
	BUILD_BUG_ON(sizeof(struct vhdx_region_hdr) != 16);
	BUILD_BUG_ON(sizeof(struct vhdx_region_entry) != 32);
	BUILD_BUG_ON(sizeof(struct vhdx_meta_hdr) != 32);
	BUILD_BUG_ON(sizeof(struct vhdx_meta_entry) != 32);
	BUILD_BUG_ON(sizeof(struct vhdx_file_params) != 8);
	BUILD_BUG_ON(sizeof(struct vhdx_locator_hdr) != 20);
	BUILD_BUG_ON(sizeof(struct vhdx_locator_entry) != 12);
	BUILD_BUG_ON(sizeof(struct vhdx_log_entry_hdr) != 64);
	BUILD_BUG_ON(sizeof(struct vhdx_log_desc) != 32);
	BUILD_BUG_ON(sizeof(struct vhdx_log_data) != 4096);
}

/* ---- the metadata log (log.c), shared with open.c and map.c ---- */

struct vdimg_image;

/* A page the log rewrote, kept in memory for a read-only open (replay into memory). */
struct vhdx_overlay {
	u64 off;			/* file offset, multiple of 4 KiB */
	u64 len;			/* bytes */
	u8 *data;			/* @len bytes, or NULL for zeros */
};

struct vhdx_log {
	u64 offset;			/* file offset of the log region */
	u32 length;			/* bytes */
	u8 guid[16];			/* the header's log GUID (zero: empty log) */
	/* writer state */
	u32 pos;			/* where the next entry goes */
	u64 seq;			/* its sequence number */
	/* replay into memory (read-only open of an image with a pending log) */
	struct vhdx_overlay *ov;
	u32 nr_ov;
	u64 last_file_offset;		/* the file size the log asks for */
	u32 replayed_entries;		/* entries in the active sequence found at open */
};

/*
 * Find the active sequence of @log and replay it: into the file when @to_file (the caller syncs),
 * else into @log->ov. Return: 0 (also when nothing was found), or a negative errno after a message.
 */
int vdimg_vhdx_log_replay(struct vdimg_image *img, struct vhdx_log *log, u64 file_size,
			  bool to_file);

/* Read metadata at @off through the in-memory overlay (if any). */
int vdimg_vhdx_meta_read(struct vdimg_image *img, const struct vhdx_log *log, void *buf,
			 size_t len, u64 off);

/* One 4 KiB page a log entry will carry. */
struct vhdx_log_page {
	u64 off;			/* file offset, multiple of 4 KiB */
	const u8 *data;			/* 4096 bytes */
};

/*
 * Write one entry carrying @n pages to the log (at log->pos, wrapping to the start when it does not
 * fit), with @file_size as its flushed/last file offsets. The caller syncs before (data) and after.
 */
int vdimg_vhdx_log_write(struct vdimg_image *img, struct vhdx_log *log,
			 const struct vhdx_log_page *pages, u32 n, u64 file_size);

void vdimg_vhdx_log_free_overlay(struct vhdx_log *log);

/* standard CRC-32C (with the usual inversions) over @len bytes, with @csum (4 bytes) taken as 0 */
u32 vdimg_vhdx_crc(const void *buf, size_t len, size_t csum_off);

/* ---- the backend's private state, shared by backends/vhdx/ and tools/lib/formats/vhdx/ ---- */

#include <vdimg/backend.h>
#include "../vhd_common.h"

#define VHDX_BAT_MAX_BYTES	(64U << 20)	/* largest BAT held in memory */
#define VHDX_BM_CACHE_BYTES	SZ_1M		/* memory for cached per-block sector bitmaps */
#define VHDX_SLOW		1		/* internal: the answer needs I/O */
#define VHDX_NO_BLOCK		(~0ULL)
#define VHDX_MAX_PAGES		24		/* 4 KiB pages one commit logs, at most */

/* extent cookie[1] low bits: what ->commit() records (the rest is the block's file offset) */
#define VHDX_COMMIT_FULL	1	/* a new block: FULLY_PRESENT */
#define VHDX_COMMIT_PARTIAL	2	/* a new block: PARTIALLY_PRESENT plus its sector bits */
#define VHDX_COMMIT_BITS	3	/* sector bits of a PARTIALLY_PRESENT block */

/* the GUIDs the backend looks for, as on disk (open.c) */
extern const u8 vhdx_guid_bat[16];
extern const u8 vhdx_guid_meta[16];
extern const u8 vhdx_guid_params[16];
extern const u8 vhdx_guid_vsize[16];
extern const u8 vhdx_guid_page83[16];
extern const u8 vhdx_guid_lss[16];
extern const u8 vhdx_guid_pss[16];
extern const u8 vhdx_guid_parent[16];
extern const u8 vhdx_guid_loctype[16];
extern const u8 vhdx_zero_guid[16];

struct vhdx {
	struct vhdx_header hdr;		/* the current header */
	u64 hdr_off;			/* where the current header is */
	struct vhdx_log log;
	u64 bat_off;
	u32 bat_len;
	u64 meta_off;
	u32 meta_len;
	u32 block_size;
	u32 block_shift;
	u32 lss;			/* logical sector size */
	u32 pss;			/* physical sector size */
	u32 params;			/* VHDX_PARAM_* */
	bool diff;			/* has a parent */
	u32 chunk_ratio;		/* payload blocks per sector bitmap block */
	u64 nr_blocks;			/* payload blocks */
	u64 nr_chunks;			/* sector bitmap blocks */
	u64 nr_entries;			/* BAT entries in use */
	u32 bm_bytes;			/* sector bitmap bytes of one payload block */
	u8 page83[16];
	u8 parent_linkage[16];
	bool has_linkage;
	bool read_only;
	/*
	 * the file cannot grow (a block device, vdimg_file_fixed_size()): file_size and data_end
	 * are where the metadata says the image ends, new blocks stop at the device's end
	 */
	bool fixed_file;
	u64 dev_size;			/* the device's size when fixed_file */
	u64 file_size;			/* as we know it (grows with reservations); io_lock */
	u64 data_end;			/* next reservation; io_lock */
	/* per chunk: reserved sector bitmap block not yet in the BAT */
	u64 *sb_pend;
	bool data_guid_done;		/* data write GUID renewed since open; lock */
	/* writable open: renew the file write GUID with the next header */
	bool file_guid_pending;
	bool log_open;			/* the header carries our log GUID; io_lock */
	u32 log_state;			/* VHDX_LOGST_* for describe */
	__le64 *bat;			/* nr_entries, as on disk; lock */
	/* per-block sector bitmap cache, direct-mapped by block number; lock */
	u32 bm_slots;
	u64 *bm_blk;
	u8 *bm_data;
	/*
	 * lock: protects bat[], the bitmap cache, sb_pend[] and data_guid_done; never held across
	 * I/O. io_lock: serializes metadata writes (headers, the log, reservations) and bitmap
	 * loads; taken before lock.
	 */
	vdimg_mutex_t lock;
	vdimg_mutex_t io_lock;
	/* filled only in the library, at open (tools/lib/formats/vhdx/locator.c) */
	char **loc_keys;		/* parent locator entries, UTF-8 */
	char **loc_vals;
	u32 nr_loc;
};

#define VHDX_LOGST_EMPTY	0
#define VHDX_LOGST_REPLAYED	1	/* replayed into the file at open */
#define VHDX_LOGST_MEMORY	2	/* pending, replayed into memory (read-only open) */
#define VHDX_LOGST_STALE	3	/* log GUID set but no valid entries */

static inline u64 vhdx_pe(const struct vhdx *v, u64 blk)
{
	return blk + blk / v->chunk_ratio;
}

static inline u64 vhdx_sbe(const struct vhdx *v, u64 chunk)
{
	return chunk * (v->chunk_ratio + 1) + v->chunk_ratio;
}

static inline u64 vhdx_bat(const struct vhdx *v, u64 idx)
{
	return le64_to_cpu(v->bat[idx]);
}

static inline u32 vhdx_state(u64 e)
{
	return e & VHDX_BAT_STATE_MASK;
}

static inline u64 vhdx_off(u64 e)
{
	return e & VHDX_BAT_OFF_MASK;
}

/* the metadata pages one ->commit() (or set_parent) rewrites, logged together (map.c) */
struct vhdx_pageset {
	u32 n;
	u64 off[VHDX_MAX_PAGES];
	u8 *buf[VHDX_MAX_PAGES];
};

/* ---- functions shared between the files of the backend ---- */

/* open.c */
void vhdx_guid_fmt(char *out, const u8 *g);
void vhdx_new_guid(u8 *g);
int vhdx_update_header(struct vdimg_image *img, struct vhdx *v, const u8 *log_guid,
		       bool new_data, bool new_file);
int vhdx_parse_locator(struct vdimg_image *img, struct vhdx *v, const u8 *p, u32 len);

/* map.c */
int vhdx_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	     struct vdimg_extent *ext);
u8 *vhdx_page(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps, u64 off);
void vhdx_pageset_free(struct vhdx_pageset *ps);
int vhdx_log_commit(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps);
int vhdx_commit(struct vdimg_image *img, const struct vdimg_extent *ext);
void vhdx_abort(struct vdimg_image *img, const struct vdimg_extent *ext);
int vhdx_flush(struct vdimg_image *img);
int vhdx_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags);
u64 vhdx_entries_for(const struct vhdx *v, u64 size);
int vhdx_resize_bat(struct vdimg_image *img, u64 size);
int vhdx_write_vsize(struct vdimg_image *img, u64 size);

/* ---- userspace only (tools/lib/formats/vhdx/locator.c), at open and close (VDIMG_LIBRARY) ---- */

void vhdx_keep_locator(struct vhdx *v, const u8 *k, u32 kl, const u8 *val, u32 vl);
void vhdx_free_locator(struct vhdx *v);

#endif /* _VDIMG_VHDX_H */
