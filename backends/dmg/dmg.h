/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Apple UDIF disk images (.dmg), read-only: the on-disk layout (the "koly" trailer in the last 512
 * bytes, the "mish" block tables of the "blkx" resources, their chunk types; every field
 * big-endian) and the backend's private state. Included by the files of backends/dmg/
 * (kernel-shared) and tools/lib/formats/dmg.c (userspace: info and check), and by tests that build
 * images.
 */
#ifndef _VDIMG_DMG_H
#define _VDIMG_DMG_H

#include <vdimg/backend.h>

#define DMG_SECTOR		512
#define DMG_KOLY_VERSION	4
#define DMG_PLIST_MAX		(16U << 20)	/* bytes of property list or resource fork */
#define DMG_MAX_CHUNKS		BIT(20)		/* chunks of all blkx tables together */
#define DMG_MAX_MISH		SZ_1M		/* bytes of one decoded mish block */
/* sectors one compressed chunk may decode to (hdiutil writes at most 2048) */
#define DMG_MAX_CHUNK_SECTORS	32768
#define DMG_CSUM_CRC32		2		/* checksum type: CRC-32 (zlib's), 32 bits */

/* chunk types (struct dmg_chunk_disk.type) */
#define DMG_CHUNK_ZERO		0x00000000u	/* zero fill */
#define DMG_CHUNK_RAW		0x00000001u	/* stored */
#define DMG_CHUNK_IGNORE	0x00000002u	/* free space, reads as zeros */
#define DMG_CHUNK_ADC		0x80000004u	/* UDCO: Apple Data Compression */
#define DMG_CHUNK_ZLIB		0x80000005u	/* UDZO */
#define DMG_CHUNK_BZIP2		0x80000006u	/* UDBZ */
#define DMG_CHUNK_LZFSE		0x80000007u	/* ULFO */
#define DMG_CHUNK_LZMA		0x80000008u	/* ULMO */
#define DMG_CHUNK_COMMENT	0x7ffffffeu
#define DMG_CHUNK_END		0xffffffffu	/* terminator */

struct dmg_checksum {
	__be32 type;
	__be32 bits;
	__be32 data[32];
} __packed;

struct dmg_koly {
	char magic[4];			/* "koly" */
	__be32 version;			/* 4 */
	__be32 header_size;		/* 512 */
	__be32 flags;
	__be64 running_data_fork_offset;
	__be64 data_fork_offset;
	__be64 data_fork_length;
	__be64 rsrc_fork_offset;
	__be64 rsrc_fork_length;
	__be32 segment_number;
	__be32 segment_count;
	u8 segment_id[16];
	struct dmg_checksum data_checksum;
	__be64 xml_offset;
	__be64 xml_length;
	u8 reserved1[120];
	struct dmg_checksum master_checksum;
	__be32 image_variant;
	__be64 sector_count;
	u8 reserved2[12];
} __packed;

struct dmg_mish {
	char magic[4];			/* "mish" */
	__be32 version;			/* 1 */
	__be64 first_sector;		/* chunk sectors are relative to this */
	__be64 sector_count;
	__be64 data_offset;		/* added to chunk offsets (after the data fork offset) */
	__be32 buffers_needed;
	__be32 block_descriptors;
	u8 reserved[24];
	struct dmg_checksum checksum;	/* of the decoded data of this table's chunks */
	__be32 nr_chunks;
} __packed;

struct dmg_chunk_disk {
	__be32 type;
	__be32 comment;
	__be64 sector;			/* relative to the table's first sector */
	__be64 sector_count;
	__be64 offset;			/* in the data fork, relative to the table's data offset */
	__be64 length;			/* bytes stored */
} __packed;

/* one chunk as the backend keeps it: sorted by @sector, contiguous from 0 to the disk size */
struct dmg_chunk {
	u64 sector;			/* first virtual sector */
	u64 count;			/* sectors */
	u64 offset;			/* absolute file offset of the stored bytes */
	u64 length;			/* bytes stored */
	u32 type;			/* DMG_CHUNK_* */
	u32 table;			/* index of its blkx table */
};

struct dmg_table {
	u64 first_sector;
	u64 sector_count;
	u32 csum_type;
	u32 csum_bits;
	u32 csum;			/* data[0] of the table's checksum */
};

struct dmg {
	struct vdimg_image *img;
	struct dmg_koly koly;
	struct dmg_chunk *chunks;
	u32 nr_chunks;
	struct dmg_table *tables;
	u32 nr_tables;
	u64 koly_off;			/* file offset of the trailer: the end of everything else */
	u32 max_chunk_bytes;		/* largest decoded compressed chunk */
	u32 max_stored;			/* largest stored length of a compressed chunk */
	bool master_verified;		/* the koly master checksum matched */
	bool force_csum;		/* opened with VDIMG_OPEN_FORCE_CSUM: mismatches warn */
	bool has_bzip2;			/* a bzip2 chunk: @bzip2 is allocated */
	bool has_lzfse;			/* an LZFSE chunk: @lzfse is allocated */
	bool has_lzma;			/* an LZMA chunk: @lzma is allocated */
	/* the last decoded chunk: @cache_lock protects @cache_chunk and @cache */
	vdimg_mutex_t cache_lock;
	u32 cache_chunk;		/* index, or U32_MAX for none */
	u8 *cache;			/* max_chunk_bytes */
	u8 *stored;			/* max_stored: the compressed bytes, under @cache_lock */
	struct dmg_bzip2 *bzip2;	/* workspace of bzip2 chunks, under @cache_lock */
	struct dmg_lzfse *lzfse;	/* workspace of LZFSE chunks, under @cache_lock */
	struct dmg_lzma *lzma;		/* workspace of LZMA chunks, under @cache_lock */
};

#define DMG(img) ((struct dmg *)(img)->priv)

/* open.c */
const char *dmg_chunk_type_name(u32 type);
/* map.c */
int dmg_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	    struct vdimg_extent *ext);
int dmg_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf);
/* decode chunk @i into @dst (its count * 512 bytes); -EUCLEAN for bad data */
int dmg_decode_chunk(struct dmg *d, u32 i, u8 *dst);
/* adc.c */
/**
 * dmg_adc_decode() - decode Apple Data Compression
 * Return: 0 when exactly @dst_len bytes were produced, -EFSCORRUPTED otherwise.
 */
int dmg_adc_decode(const u8 *src, size_t src_len, u8 *dst, size_t dst_len);

/* bzip2.c */
struct dmg_bzip2;
/* bytes of one workspace; dmg_bzip2_init() prepares it once */
size_t dmg_bzip2_workspace_size(void);
void dmg_bzip2_init(struct dmg_bzip2 *ws);
/**
 * dmg_bzip2_decode() - decode one or more bzip2 streams
 * Return: 0 when exactly @dst_len bytes were produced with every CRC matching,
 * -EFSCORRUPTED otherwise.
 */
int dmg_bzip2_decode(struct dmg_bzip2 *ws, const u8 *src, size_t src_len, u8 *dst,
		     size_t dst_len);
/* lzfse.c */
struct dmg_lzfse;
/* bytes of one workspace; dmg_lzfse_init() prepares it once */
size_t dmg_lzfse_workspace_size(void);
void dmg_lzfse_init(struct dmg_lzfse *ws);
/**
 * dmg_lzfse_decode() - decode an LZFSE stream (LZFSE, LZVN and stored blocks)
 * Return: 0 when exactly @dst_len bytes were produced, -EFSCORRUPTED otherwise.
 */
int dmg_lzfse_decode(struct dmg_lzfse *ws, const u8 *src, size_t src_len, u8 *dst,
		     size_t dst_len);
/* lzma.c */
struct dmg_lzma;
/* bytes of one workspace; dmg_lzma_init() prepares it once */
size_t dmg_lzma_workspace_size(void);
void dmg_lzma_init(struct dmg_lzma *ws);
/**
 * dmg_lzma_decode() - decode an LZMA chunk: an .xz stream (LZMA2) or an .lzma (alone) one
 * Return: 0 when exactly @dst_len bytes were produced with every check matching,
 * -EOPNOTSUPP for properties or filters it does not decode (dmg_lzma_unsupported() says
 * which), -EFSCORRUPTED otherwise.
 */
int dmg_lzma_decode(struct dmg_lzma *ws, const u8 *src, size_t src_len, u8 *dst,
		    size_t dst_len);
/* after -EOPNOTSUPP from dmg_lzma_decode(): what was not supported, and its value */
const char *dmg_lzma_unsupported(const struct dmg_lzma *ws, u64 *val);

#endif /* _VDIMG_DMG_H */
