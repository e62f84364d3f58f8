// SPDX-License-Identifier: GPL-2.0
/*
 * The VHD backend: Microsoft Virtual Hard Disk images, fixed (data then a footer), dynamic (footer
 * copy, dynamic header, block allocation table, blocks of a sector bitmap and data, footer) and
 * differencing (a dynamic image whose clear bitmap bits fall through to a parent). Shared by the
 * module and the userspace library: only include/vdimg/platform.h services here, no blk-mq, no libc
 * outside the userspace-only section at the end (create, check, describe, parent locators).
 *
 * Writes: a block is reserved at the end of the file (footer first moved past it, then the bitmap
 * written, then a sync), the driver writes the data, and ->commit() sets the bitmap bits of exactly
 * the written sectors (after a sync, in differencing images) and then writes the BAT entry. A crash
 * at any point leaves a valid image that reads old or new data, at worst with a leaked block.
 * Blocks reserved in a dynamic (base) image get an all-ones bitmap over zeroed data, as qemu does,
 * so later writes to them need no metadata at all.
 */
#include <vdimg/backend.h>
#include "vhd.h"
#ifndef __KERNEL__
#include "tool-ops.h"
#endif

#define VHD_BM_CACHE_BYTES	(256U << 10)	/* memory for cached block bitmaps */
#define VHD_BAT_MAX_BYTES	(64U << 20)	/* largest BAT held in memory (32 TiB at 2 MiB) */
#define VHD_BLOCK_MIN		512U
#define VHD_BLOCK_MAX		(256U << 20)
#define VHD_NO_BLOCK		0xffffffffU
#define VHD_SLOW		1		/* internal: the answer needs I/O */

/* per-block state bits (vhd.state[]) */
#define VHD_BLK_PENDING		0x1	/* reserved: BAT entry in memory, not yet on disk */
#define VHD_BLK_BAD		0x2	/* the BAT entry is invalid: requests fail */

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
#ifndef __KERNEL__
	char *paths[VHD_NR_LOCATORS + 1];	/* parent path candidates, best first */
	char *path_kind[VHD_NR_LOCATORS + 1];	/* "W2ru", ... for describe */
	u32 nr_paths;
	char parent_name[VHD_PARENT_NAME_BYTES * 2];
#endif
};

static u32 vhd_checksum(const void *buf, size_t len, size_t csum_off)
{
	const u8 *b = buf;
	u32 sum = 0;
	size_t i;

	for (i = 0; i < len; i++)
		if (i < csum_off || i >= csum_off + 4)
			sum += b[i];
	return ~sum;
}

static u32 vhd_footer_csum(const struct vhd_footer *f)
{
	return vhd_checksum(f, sizeof(*f), offsetof(struct vhd_footer, checksum));
}

static u32 vhd_hdr_csum(const struct vhd_dyn_header *h)
{
	return vhd_checksum(h, sizeof(*h), offsetof(struct vhd_dyn_header, checksum));
}

static inline u32 vhd_bat_get(const struct vhd *v, u32 blk)
{
	return be32_to_cpu(v->bat[blk]);
}

static inline bool vhd_bit(const u8 *bits, u32 s)
{
	return bits[s >> 3] & (0x80 >> (s & 7));
}

/* Sectors from @s (< @end) that have the same bit as sector @s; that bit in *@set. */
static u32 vhd_run(const u8 *bits, u32 s, u32 end, bool *set)
{
	bool v = vhd_bit(bits, s);
	u8 full = v ? 0xff : 0;
	u32 i = s + 1;

	*set = v;
	while (i < end) {
		if (!(i & 7) && i + 8 <= end && bits[i >> 3] == full) {
			i += 8;
			continue;
		}
		if (vhd_bit(bits, i) != v)
			break;
		i++;
	}
	return i - s;
}

static void vhd_set_bits(u8 *bits, u32 s, u32 end)
{
	for (; s < end; s++)
		bits[s >> 3] |= 0x80 >> (s & 7);
}

static void vhd_fmt_uuid(char *out, const u8 *u)
{
	static const char hex[] = "0123456789abcdef";
	int i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[u[i] >> 4];
		out[o++] = hex[u[i] & 15];
	}
	out[o] = 0;
}

/*
 * The virtual size. Virtual PC ("vpc ") and Virtual Server ("vs  ") size a disk by its CHS geometry
 * and write a larger current size; every other creator (Hyper-V "win ", Disk2VHD "d2v ", qemu,
 * VirtualBox, XenServer) means the footer's current size, which is also the only usable value when
 * the geometry is the maximum (65535/16/255) or zero.
 */
static u64 vhd_virtual_size(const struct vhd_footer *f, bool *chs)
{
	u64 cyl = be16_to_cpu(f->cylinders), heads = f->heads, secs = f->sectors;
	u64 chs_sectors = cyl * heads * secs;

	*chs = (!memcmp(f->creator_app, "vpc ", 4) || !memcmp(f->creator_app, "vs  ", 4)) &&
	       chs_sectors && chs_sectors < VHD_CHS_MAX_SECTORS;
	if (*chs)
		return chs_sectors * VHD_SECTOR;
	return be64_to_cpu(f->current_size);
}

static bool vhd_footer_sane(const struct vhd_footer *f)
{
	u32 type = be32_to_cpu(f->disk_type);

	return !memcmp(f->cookie, VHD_FOOTER_COOKIE, 8) &&
	       (be32_to_cpu(f->version) >> 16) == 1 &&
	       type >= VHD_TYPE_FIXED && type <= VHD_TYPE_DIFF;
}

/* Find the footer: at the end (512 or 511 bytes), else the copy at offset 0 of a dynamic image. */
static int vhd_read_footer(struct vdimg_image *img, struct vhd *v, u64 fsize)
{
	struct vhd_footer end, copy;
	bool end_ok = false, copy_ok = false;
	int ret;

	if (fsize < VHD_SECTOR)
		return vdimg_corrupt(img, "file of %llu bytes is too small for a VHD footer",
				     (unsigned long long)fsize);
	ret = vdimg_file_read(img->file, &end, sizeof(end), fsize - VHD_SECTOR);
	if (ret)
		return ret;
	if (vhd_footer_sane(&end)) {
		end_ok = true;
		v->footer_off = fsize - VHD_SECTOR;
	} else {
		/* old Virtual PC versions wrote a 511-byte footer */
		memset(&end, 0, sizeof(end));
		ret = vdimg_file_read(img->file, &end, VHD_SECTOR - 1, fsize - (VHD_SECTOR - 1));
		if (ret)
			return ret;
		if (vhd_footer_sane(&end)) {
			end_ok = true;
			v->footer_off = fsize - (VHD_SECTOR - 1);
			v->damage |= VHD_DMG_FOOTER_SHORT;
		}
	}
	ret = vdimg_file_read(img->file, &copy, sizeof(copy), 0);
	if (ret)
		return ret;
	copy_ok = vhd_footer_sane(&copy) && be32_to_cpu(copy.disk_type) != VHD_TYPE_FIXED;

	if (end_ok) {
		v->footer = end;
		if (be32_to_cpu(end.checksum) != vhd_footer_csum(&end)) {
			v->damage |= VHD_DMG_FOOTER_CSUM;
			if (copy_ok && be32_to_cpu(copy.checksum) == vhd_footer_csum(&copy) &&
			    copy.disk_type == end.disk_type)
				v->footer = copy;
		}
	} else if (copy_ok) {
		v->footer = copy;
		v->footer_off = fsize;	/* no footer: blocks may reach the end of the file */
		v->damage |= VHD_DMG_FOOTER_MISSING;
		if (be32_to_cpu(copy.checksum) != vhd_footer_csum(&copy))
			v->damage |= VHD_DMG_FOOTER_CSUM;
	} else {
		return vdimg_corrupt(img, "no valid VHD footer at the end of the file or at offset 0");
	}
	v->type = be32_to_cpu(v->footer.disk_type);
	if (v->type != VHD_TYPE_FIXED && end_ok &&
	    (!copy_ok || be32_to_cpu(copy.checksum) != vhd_footer_csum(&copy)))
		v->damage |= VHD_DMG_COPY;
	return 0;
}

/* In-place heap sort of u64 keys (no recursion, no allocation). */
static void vhd_sort_u64(u64 *a, u32 n)
{
	u32 start = n / 2, end = n, root, child;
	u64 t;

	while (end > 1) {
		if (start > 0) {
			start--;
		} else {
			end--;
			t = a[end];
			a[end] = a[0];
			a[0] = t;
		}
		root = start;
		while ((child = 2 * root + 1) < end) {
			if (child + 1 < end && a[child] < a[child + 1])
				child++;
			if (a[root] >= a[child])
				break;
			t = a[root];
			a[root] = a[child];
			a[child] = t;
			root = child;
		}
	}
}

static bool vhd_overlaps(u64 s1, u64 e1, u64 s2, u64 e2)
{
	return s1 < e2 && s2 < e1;
}

/* bytes of block @blk that the virtual size uses (the last block may be partial) */
static u64 vhd_block_used(const struct vdimg_image *img, const struct vhd *v, u32 blk)
{
	u64 start = (u64)blk << v->block_shift;

	return min_t(u64, v->block_size, img->size - start);
}

/*
 * Check every used BAT entry: its block must lie inside the file before the footer, outside the
 * metadata, and not overlap another block. Bad entries get VHD_BLK_BAD. Sets data_end.
 */
static int vhd_check_bat(struct vdimg_image *img, struct vhd *v)
{
	u64 meta[3][2] = {
		{ 0, VHD_SECTOR },
		{ v->hdr_off, v->hdr_off + sizeof(struct vhd_dyn_header) },
		{ v->bat_off, v->bat_off + ALIGN((u64)v->max_entries * 4, VHD_SECTOR) },
	};
	u64 *keys, end, prev_end = 0, data_end = v->footer_off;
	u32 i, n = 0, bad = 0, blk;
	int m;

	for (m = 0; m < 3; m++)
		data_end = max(data_end, meta[m][1]);
	keys = vdimg_zalloc(max_t(size_t, (size_t)v->nr_blocks * sizeof(u64), 8));
	if (!keys)
		return -ENOMEM;
	for (i = 0; i < v->nr_blocks; i++) {
		u32 e = vhd_bat_get(v, i);
		u64 start = (u64)e * VHD_SECTOR;

		if (e == VHD_BAT_FREE)
			continue;
		end = start + v->bitmap_size + vhd_block_used(img, v, i);
		for (m = 0; m < 3; m++)
			if (vhd_overlaps(start, end, meta[m][0], meta[m][1]))
				break;
		if (m < 3 || end > v->footer_off) {
			v->state[i] |= VHD_BLK_BAD;
			bad++;
			continue;
		}
		keys[n++] = ((u64)e << 32) | i;
	}
	vhd_sort_u64(keys, n);
	for (i = 0; i < n; i++) {
		u64 start = (keys[i] >> 32) * VHD_SECTOR;

		blk = (u32)keys[i];
		end = start + v->bitmap_size + vhd_block_used(img, v, blk);
		if (i && start < prev_end) {
			v->state[blk] |= VHD_BLK_BAD;	/* the first block keeps the space */
			bad++;
			continue;
		}
		prev_end = end;
		/* a full block's space is the block's, even past the virtual size */
		data_end = max(data_end, start + v->bitmap_size + v->block_size);
	}
	vdimg_free(keys);
	v->data_end = ALIGN(data_end, VHD_SECTOR);
	if (bad) {
		v->damage |= VHD_DMG_BAT;
		vdimg_err(img, "%u BAT entries point past the end of the file, into metadata or into another block",
			  bad);
	}
	return 0;
}

static int vhd_open_dynamic(struct vdimg_image *img, struct vhd *v)
{
	struct vhd_dyn_header *h;
	u64 limit = v->footer_off, bat_full, need;
	u32 bs, mte;
	int ret;

	v->hdr_off = be64_to_cpu(v->footer.data_offset);
	if (v->hdr_off < VHD_SECTOR || v->hdr_off >= limit)
		return vdimg_corrupt(img, "dynamic header offset %llu is outside the file",
				     (unsigned long long)v->hdr_off);
	h = vdimg_zalloc(sizeof(*h));
	if (!h)
		return -ENOMEM;
	v->hdr = h;
	/* a truncated header is refused below, after its fields say what else is wrong */
	ret = vdimg_file_read(img->file, h, min_t(u64, sizeof(*h), limit - v->hdr_off),
			      v->hdr_off);
	if (ret)
		return ret;
	if (memcmp(h->cookie, VHD_DYN_COOKIE, 8))
		return vdimg_corrupt(img, "no dynamic header (cookie \"cxsparse\") at offset %llu",
				     (unsigned long long)v->hdr_off);
	if ((be32_to_cpu(h->version) >> 16) != 1)
		return vdimg_corrupt(img, "dynamic header version %#x is not 1.x",
				     be32_to_cpu(h->version));
	if (be32_to_cpu(h->checksum) != vhd_hdr_csum(h))
		v->damage |= VHD_DMG_HDR_CSUM;

	bs = be32_to_cpu(h->block_size);
	if (!is_power_of_2(bs) || bs < VHD_BLOCK_MIN || bs > VHD_BLOCK_MAX)
		return vdimg_corrupt(img, "block size %u is not a power of two in [512 B, 256 MiB]",
				     bs);
	v->block_size = bs;
	v->block_shift = ilog2(bs);
	v->bitmap_size = ALIGN(bs / VHD_SECTOR / 8, VHD_SECTOR);

	mte = be32_to_cpu(h->max_table_entries);
	v->max_entries = mte;
	v->bat_off = be64_to_cpu(h->table_offset);
	bat_full = ALIGN((u64)mte * 4, VHD_SECTOR);
	if (v->bat_off > limit || bat_full > limit - v->bat_off)
		return vdimg_corrupt(img, "BAT of %u entries at offset %llu does not fit in the file (max table entries too large?)",
				     mte, (unsigned long long)v->bat_off);
	if (vhd_overlaps(v->bat_off, v->bat_off + bat_full, 0, VHD_SECTOR) ||
	    vhd_overlaps(v->bat_off, v->bat_off + bat_full, v->hdr_off,
			 v->hdr_off + sizeof(*h)))
		return vdimg_corrupt(img, "BAT at offset %llu overlaps the header",
				     (unsigned long long)v->bat_off);
	if (limit - v->hdr_off < sizeof(*h))
		return vdimg_corrupt(img, "the dynamic header at offset %llu is truncated",
				     (unsigned long long)v->hdr_off);
	need = (img->size + bs - 1) >> v->block_shift;
	if (need > mte)
		return vdimg_corrupt(img, "virtual size %llu needs %llu blocks of %u bytes, the BAT has %u",
				     (unsigned long long)img->size, (unsigned long long)need, bs, mte);
	v->nr_blocks = need;
	v->bat_len = ALIGN(need * 4, VHD_SECTOR);
	if (v->bat_len > VHD_BAT_MAX_BYTES) {
		vdimg_err(img, "a BAT of %u entries is larger than vdimg supports", v->nr_blocks);
		return -EOPNOTSUPP;
	}
	v->bat = vdimg_zalloc(v->bat_len);
	v->state = vdimg_zalloc(max_t(u32, v->nr_blocks, 1));
	if (!v->bat || !v->state)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, v->bat, v->bat_len, v->bat_off);
	if (ret)
		return ret;

	v->bm_slots = min_t(u32, max_t(u32, VHD_BM_CACHE_BYTES / v->bitmap_size, 4), 1024);
	v->bm_slots = min(v->bm_slots, max_t(u32, v->nr_blocks, 1));
	v->bm_blk = vdimg_zalloc(v->bm_slots * sizeof(u32));
	v->bm_data = vdimg_zalloc((size_t)v->bm_slots * v->bitmap_size);
	if (!v->bm_blk || !v->bm_data)
		return -ENOMEM;
	memset(v->bm_blk, 0xff, v->bm_slots * sizeof(u32));

	if (v->type == VHD_TYPE_DIFF) {
		memcpy(img->parent_uuid, h->parent_uuid, 16);
		img->flags |= VDIMG_IMG_HAS_PARENT | VDIMG_IMG_HAS_PARENT_UUID;
	}
	img->alloc_unit = bs;
	return vhd_check_bat(img, v);
}

#ifndef __KERNEL__
static void vhd_parse_locators(struct vdimg_image *img, struct vhd *v);
static void vhd_free_locators(struct vhd *v);
#endif

static void vhd_free(struct vhd *v)
{
#ifndef __KERNEL__
	vhd_free_locators(v);
#endif
	vdimg_free(v->bm_data);
	vdimg_free(v->bm_blk);
	vdimg_free(v->state);
	vdimg_free(v->bat);
	vdimg_free(v->hdr);
	vdimg_mutex_destroy(&v->io_lock);
	vdimg_mutex_destroy(&v->lock);
	vdimg_free(v);
}

static void vhd_report_damage(struct vdimg_image *img, struct vhd *v)
{
	if (v->damage & VHD_DMG_FOOTER_CSUM)
		vdimg_warn(img, "the footer checksum is wrong");
	if (v->damage & VHD_DMG_FOOTER_MISSING)
		vdimg_warn(img, "no footer at the end of the file; using the copy at offset 0");
	if (v->damage & VHD_DMG_FOOTER_SHORT)
		vdimg_warn(img, "the footer at the end is 511 bytes long");
	if (v->damage & VHD_DMG_COPY)
		vdimg_warn(img, "the footer copy at offset 0 is missing or its checksum is wrong");
	if (v->damage & VHD_DMG_HDR_CSUM)
		vdimg_warn(img, "the dynamic header checksum is wrong");
}

static int vhd_open(struct vdimg_image *img, unsigned int flags)
{
	u64 fsize = vdimg_file_size(img->file);
	bool ro = flags & VDIMG_OPEN_READ_ONLY;
	struct vhd *v;
	bool chs;
	int ret;

	BUILD_BUG_ON(sizeof(struct vhd_footer) != 512);
	BUILD_BUG_ON(sizeof(struct vhd_dyn_header) != 1024);
	BUILD_BUG_ON(sizeof(struct vhd_locator) != 24);

	v = vdimg_zalloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	vdimg_mutex_init(&v->lock);
	vdimg_mutex_init(&v->io_lock);
	v->repair_mode = !ro && (flags & VDIMG_OPEN_REPAIR);
	if (ro)
		img->flags |= VDIMG_IMG_READ_ONLY;

	ret = vhd_read_footer(img, v, fsize);
	if (ret)
		goto fail;
	img->size = ALIGN_DOWN(vhd_virtual_size(&v->footer, &chs), VHD_SECTOR);
	if (!img->size || img->size > (1ULL << 50)) {
		ret = vdimg_corrupt(img, "virtual size %llu is zero or absurd",
				    (unsigned long long)img->size);
		goto fail;
	}
	img->lbs = VHD_SECTOR;
	img->pbs = VHD_SECTOR;
	memcpy(img->uuid, v->footer.uuid, 16);
	img->flags |= VDIMG_IMG_HAS_UUID;

	switch (v->type) {
	case VHD_TYPE_FIXED:
		vdimg_strscpy(img->variant, "fixed", sizeof(img->variant));
		if (img->size > v->footer_off) {
			ret = vdimg_corrupt(img, "fixed image of %llu bytes is truncated to %llu",
					    (unsigned long long)img->size,
					    (unsigned long long)v->footer_off);
			goto fail;
		}
		v->data_end = v->footer_off;
		break;
	case VHD_TYPE_DYNAMIC:
	case VHD_TYPE_DIFF:
		vdimg_strscpy(img->variant, v->type == VHD_TYPE_DIFF ? "differencing" : "dynamic",
			      sizeof(img->variant));
		ret = vhd_open_dynamic(img, v);
		if (ret)
			goto fail;
		break;
	}

	vhd_report_damage(img, v);
	if (v->damage && !ro && !v->repair_mode) {
		vdimg_err(img, "refusing a writable open of a damaged image: run vdimgctl check --repair");
		ret = -EUCLEAN;
		goto fail;
	}
	if (v->damage & VHD_DMG_BAT)
		vdimg_warn(img, "requests to the blocks with bad BAT entries will fail");
	img->priv = v;
#ifndef __KERNEL__
	if (v->type == VHD_TYPE_DIFF)
		vhd_parse_locators(img, v);
#endif
	return 0;
fail:
	vhd_free(v);
	return ret;
}

/* Write the BAT sector that holds entry @blk. Caller holds io_lock. */
static int vhd_write_bat_sector(struct vdimg_image *img, struct vhd *v, u32 blk)
{
	u32 sec = blk / (VHD_SECTOR / 4);
	__be32 buf[VHD_SECTOR / 4];

	lockdep_assert_held(&v->io_lock);

	vdimg_mutex_lock(&v->lock);
	memcpy(buf, v->bat + sec * (VHD_SECTOR / 4), VHD_SECTOR);
	vdimg_mutex_unlock(&v->lock);
	img->flags |= VDIMG_IMG_DIRTY;
	return vdimg_file_write(img->file, buf, VHD_SECTOR, v->bat_off + (u64)sec * VHD_SECTOR);
}

/* Write the footer at @off with a fresh checksum. Caller holds io_lock (or is single-threaded). */
static int vhd_write_footer(struct vdimg_image *img, struct vhd *v, u64 off)
{
	v->footer.checksum = 0;
	v->footer.checksum = cpu_to_be32(vhd_footer_csum(&v->footer));
	img->flags |= VDIMG_IMG_DIRTY;
	return vdimg_file_write(img->file, &v->footer, sizeof(v->footer), off);
}

/* The cached bitmap of @blk or NULL. Caller holds lock. */
static u8 *vhd_bm_lookup(struct vhd *v, u32 blk)
{
	u32 slot = blk % v->bm_slots;

	return v->bm_blk[slot] == blk ? v->bm_data + (size_t)slot * v->bitmap_size : NULL;
}

/* Cache @bits as the bitmap of @blk. Caller holds lock. */
static u8 *vhd_bm_insert(struct vhd *v, u32 blk, const u8 *bits)
{
	u32 slot = blk % v->bm_slots;
	u8 *p = v->bm_data + (size_t)slot * v->bitmap_size;

	lockdep_assert_held(&v->lock);
	v->bm_blk[slot] = blk;
	memcpy(p, bits, v->bitmap_size);
	return p;
}

/*
 * Reserve a block for @blk at the end of the file: write the footer past it (the file grows, the
 * new data area is a hole that reads zeros), its bitmap (all ones in a dynamic image, whose
 * unwritten sectors are then zeros; all zeros in a differencing one), and sync, so a BAT entry
 * written later never points at garbage. The BAT entry is set in memory only (PENDING).
 * Caller holds io_lock.
 */
static int vhd_alloc_block(struct vdimg_image *img, struct vhd *v, u32 blk)
{
	u64 off = v->data_end, new_end = off + v->bitmap_size + v->block_size;
	u8 *bits;
	int ret;

	lockdep_assert_held(&v->io_lock);

	if (new_end / VHD_SECTOR > 0xfffffffeULL) {
		vdimg_err(img, "the file cannot grow past 2 TiB (32-bit BAT entries)");
		return -ENOSPC;
	}
	bits = vdimg_zalloc(v->bitmap_size);
	if (!bits)
		return -ENOMEM;
	if (v->type == VHD_TYPE_DYNAMIC)
		memset(bits, 0xff, v->bitmap_size);
	ret = vhd_write_footer(img, v, new_end);
	if (!ret)
		ret = vdimg_file_write(img->file, bits, v->bitmap_size, off);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret) {
		vdimg_free(bits);
		return ret;
	}
	v->data_end = new_end;
	v->footer_off = new_end;
	vdimg_mutex_lock(&v->lock);
	v->bat[blk] = cpu_to_be32((u32)(off / VHD_SECTOR));
	v->state[blk] |= VHD_BLK_PENDING;
	v->nr_pending++;
	vhd_bm_insert(v, blk, bits);
	vdimg_mutex_unlock(&v->lock);
	vdimg_free(bits);
	return 0;
}

/* Answer from a block's bitmap. Caller holds lock. */
static void vhd_map_bits(struct vdimg_image *img, struct vhd *v, u32 blk, u32 e, u64 offset,
			 u64 len, bool write, const u8 *bits, struct vdimg_extent *ext)
{
	u64 within = offset & (v->block_size - 1);
	u32 s = within / VHD_SECTOR, send = (within + len + VHD_SECTOR - 1) / VHD_SECTOR;
	bool set, pending = v->state[blk] & VHD_BLK_PENDING;
	u32 run = vhd_run(bits, s, send, &set);

	ext->length = min_t(u64, (u64)(s + run) * VHD_SECTOR, within + len) - within;
	ext->file = img->file;
	ext->file_offset = (u64)e * VHD_SECTOR + v->bitmap_size + within;
	ext->type = VDIMG_EXT_DATA;
	if (!write) {
		if (!set)
			ext->type = VDIMG_EXT_UNALLOCATED;
		return;
	}
	if (pending || !set) {
		if (pending)
			ext->length = len;
		ext->flags = VDIMG_EXT_NEW;
		ext->fill_offset = offset;
		ext->fill_length = 0;
		ext->cookie[0] = blk;
		ext->cookie[1] = pending ? VHD_COMMIT_BLOCK : VHD_COMMIT_BITS;
	}
}

/* Map from memory; VHD_SLOW when the answer needs a bitmap load or an allocation. Holds lock. */
static int vhd_map_cached(struct vdimg_image *img, struct vhd *v, u64 offset, u64 length,
			  bool write, struct vdimg_extent *ext)
{
	u32 blk = offset >> v->block_shift, e, b;
	u64 len = min_t(u64, length, v->block_size - (offset & (v->block_size - 1)));
	const u8 *bits;

	if (v->state[blk] & VHD_BLK_BAD) {
		vdimg_err(img, "block %u has a bad BAT entry: run vdimgctl check --repair", blk);
		return -EFSCORRUPTED;
	}
	e = vhd_bat_get(v, blk);
	if (e == VHD_BAT_FREE) {
		if (write)
			return VHD_SLOW;
		for (b = blk + 1; len < length && b < v->nr_blocks; b++) {
			if (vhd_bat_get(v, b) != VHD_BAT_FREE || (v->state[b] & VHD_BLK_BAD))
				break;
			len += min_t(u64, v->block_size, length - len);
		}
		ext->type = VDIMG_EXT_UNALLOCATED;
		ext->length = len;
		return 0;
	}
	bits = vhd_bm_lookup(v, blk);
	if (!bits)
		return VHD_SLOW;
	vhd_map_bits(img, v, blk, e, offset, len, write, bits, ext);
	return 0;
}

static int vhd_map_slow(struct vdimg_image *img, struct vhd *v, u64 offset, u64 length,
			bool write, struct vdimg_extent *ext)
{
	u32 blk = offset >> v->block_shift, e;
	u8 *buf = NULL;
	int ret;

	vdimg_mutex_lock(&v->io_lock);
	vdimg_mutex_lock(&v->lock);
	e = vhd_bat_get(v, blk);
	vdimg_mutex_unlock(&v->lock);
	if (e == VHD_BAT_FREE && write && !(v->state[blk] & VHD_BLK_BAD)) {
		ret = vhd_alloc_block(img, v, blk);
		if (ret)
			goto out;
	} else if (e != VHD_BAT_FREE) {
		vdimg_mutex_lock(&v->lock);
		ret = vhd_bm_lookup(v, blk) != NULL;
		vdimg_mutex_unlock(&v->lock);
		if (!ret) {
			buf = vdimg_zalloc(v->bitmap_size);
			if (!buf) {
				ret = -ENOMEM;
				goto out;
			}
			ret = vdimg_file_read(img->file, buf, v->bitmap_size,
					      (u64)e * VHD_SECTOR);
			if (ret)
				goto out;
			vdimg_mutex_lock(&v->lock);
			vhd_bm_insert(v, blk, buf);
			vdimg_mutex_unlock(&v->lock);
		}
	}
	/* io_lock keeps the bitmap in the cache: only holders of io_lock insert */
	vdimg_mutex_lock(&v->lock);
	ret = vhd_map_cached(img, v, offset, length, write, ext);
	vdimg_mutex_unlock(&v->lock);
	if (WARN_ON_ONCE(ret == VHD_SLOW))
		ret = -EIO;
out:
	vdimg_mutex_unlock(&v->io_lock);
	vdimg_free(buf);
	return ret;
}

static int vhd_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		   struct vdimg_extent *ext)
{
	struct vhd *v = img->priv;
	bool write = flags & VDIMG_MAP_WRITE;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	length = min(length, img->size - offset);
	if (write) {
		if (img->flags & VDIMG_IMG_READ_ONLY)
			return -EROFS;
		if (v->damage)
			return -EUCLEAN;
		if ((offset | length) & (VHD_SECTOR - 1))
			return -EINVAL;
	}
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	if (v->type == VHD_TYPE_FIXED) {
		ext->length = length;
		ext->type = VDIMG_EXT_DATA;
		ext->file = img->file;
		ext->file_offset = offset;
		return 0;
	}
	if (flags & VDIMG_MAP_NOWAIT) {
		if (!vdimg_mutex_trylock(&v->lock))
			return -EAGAIN;
	} else {
		vdimg_mutex_lock(&v->lock);
	}
	ret = vhd_map_cached(img, v, offset, length, write, ext);
	vdimg_mutex_unlock(&v->lock);
	if (ret != VHD_SLOW)
		return ret;
	if (flags & VDIMG_MAP_NOWAIT)
		return -EAGAIN;
	return vhd_map_slow(img, v, offset, length, write, ext);
}

/*
 * Set the bits of sectors [@s, @send) of block @blk (allocated) on disk and in the cache. With
 * @sync, sync the file first so the data those bits expose is durable before them. Holds io_lock.
 */
static int vhd_set_bits_locked(struct vdimg_image *img, struct vhd *v, u32 blk, u32 s, u32 send,
			       bool sync)
{
	u32 e, first, last;
	u8 *bits, *cached;
	bool set;
	int ret = 0;

	bits = vdimg_zalloc(v->bitmap_size);
	if (!bits)
		return -ENOMEM;
	vdimg_mutex_lock(&v->lock);
	e = vhd_bat_get(v, blk);
	cached = vhd_bm_lookup(v, blk);
	if (cached)
		memcpy(bits, cached, v->bitmap_size);
	vdimg_mutex_unlock(&v->lock);
	if (!cached)
		ret = vdimg_file_read(img->file, bits, v->bitmap_size, (u64)e * VHD_SECTOR);
	if (ret)
		goto out;
	if (vhd_run(bits, s, send, &set) == send - s && set)
		goto out;	/* already set */
	vhd_set_bits(bits, s, send);
	if (sync) {
		ret = vdimg_file_sync(img->file);
		if (ret)
			goto out;
	}
	first = s / (VHD_SECTOR * 8);
	last = (send - 1) / (VHD_SECTOR * 8);
	img->flags |= VDIMG_IMG_DIRTY;
	ret = vdimg_file_write(img->file, bits + first * VHD_SECTOR,
			       (last - first + 1) * VHD_SECTOR,
			       (u64)e * VHD_SECTOR + first * VHD_SECTOR);
	if (ret)
		goto out;
	vdimg_mutex_lock(&v->lock);
	vhd_bm_insert(v, blk, bits);
	vdimg_mutex_unlock(&v->lock);
out:
	vdimg_free(bits);
	return ret;
}

/* Write the BAT entry of a reserved block. Holds io_lock. */
static int vhd_commit_bat_locked(struct vdimg_image *img, struct vhd *v, u32 blk)
{
	int ret;

	lockdep_assert_held(&v->io_lock);

	if (!(v->state[blk] & VHD_BLK_PENDING))
		return 0;
	ret = vhd_write_bat_sector(img, v, blk);
	if (ret)
		return ret;
	vdimg_mutex_lock(&v->lock);
	v->state[blk] &= ~VHD_BLK_PENDING;
	v->nr_pending--;
	vdimg_mutex_unlock(&v->lock);
	return 0;
}

static int vhd_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct vhd *v = img->priv;
	u64 blk = ext->cookie[0], within, start;
	int ret = 0;

	if (v->type == VHD_TYPE_FIXED || !(ext->flags & VDIMG_EXT_NEW))
		return 0;
	start = blk << v->block_shift;
	if (WARN_ON_ONCE(blk >= v->nr_blocks || ext->offset < start ||
			 ext->offset + ext->length > start + v->block_size))
		return -EINVAL;
	within = ext->offset - start;
	vdimg_mutex_lock(&v->io_lock);
	if (WARN_ON_ONCE(vhd_bat_get(v, blk) == VHD_BAT_FREE)) {
		ret = -EINVAL;
		goto out;
	}
	/* blocks reserved in a dynamic image already have every bit set */
	if (v->type == VHD_TYPE_DIFF || ext->cookie[1] == VHD_COMMIT_BITS)
		ret = vhd_set_bits_locked(img, v, blk, within / VHD_SECTOR,
					  (within + ext->length) / VHD_SECTOR, true);
	if (!ret)
		ret = vhd_commit_bat_locked(img, v, blk);
out:
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

/*
 * A NEW extent was not written. A reserved block stays reserved (its bitmap and the space are on
 * disk and valid); the next write to it gets a NEW extent again, and ->flush() records it.
 */
static void vhd_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
}

static int vhd_flush(struct vdimg_image *img)
{
	struct vhd *v = img->priv;
	u32 blk;
	int ret = 0, err;

	if (v->type == VHD_TYPE_FIXED || (img->flags & VDIMG_IMG_READ_ONLY))
		return 0;
	vdimg_mutex_lock(&v->io_lock);
	for (blk = 0; v->nr_pending && blk < v->nr_blocks; blk++) {
		if (!(v->state[blk] & VHD_BLK_PENDING))
			continue;
		err = vhd_commit_bat_locked(img, v, blk);
		if (err && !ret)
			ret = err;
		if (err)
			break;
	}
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

static int vhd_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	struct vhd *v = img->priv;
	int ret = 0;

	if (img->flags & VDIMG_IMG_READ_ONLY)
		return -EROFS;
	if (v->damage)
		return -EUCLEAN;
	if (offset >= img->size || length > img->size - offset ||
	    (offset | length) & (VHD_SECTOR - 1))
		return -EINVAL;
	if (v->type == VHD_TYPE_FIXED)
		return vdimg_file_zero(img->file, offset, length);

	vdimg_mutex_lock(&v->io_lock);
	while (length && !ret) {
		u32 blk = offset >> v->block_shift, e;
		u64 within = offset & (v->block_size - 1);
		u64 len = min_t(u64, length, v->block_size - within);
		bool whole = !within && len == vhd_block_used(img, v, blk);
		u64 data;

		if (v->state[blk] & VHD_BLK_BAD) {
			ret = -EFSCORRUPTED;
			break;
		}
		e = vhd_bat_get(v, blk);
		if (e == VHD_BAT_FREE && v->type == VHD_TYPE_DYNAMIC)
			goto next;
		if (e != VHD_BAT_FREE && v->type == VHD_TYPE_DYNAMIC && whole) {
			/* free the block: unlink it first, then drop its space */
			u64 start = (u64)e * VHD_SECTOR;

			vdimg_mutex_lock(&v->lock);
			v->bat[blk] = cpu_to_be32(VHD_BAT_FREE);
			if (v->state[blk] & VHD_BLK_PENDING)
				v->nr_pending--;
			v->state[blk] &= ~VHD_BLK_PENDING;
			if (vhd_bm_lookup(v, blk))
				v->bm_blk[blk % v->bm_slots] = VHD_NO_BLOCK;
			vdimg_mutex_unlock(&v->lock);
			ret = vhd_write_bat_sector(img, v, blk);
			if (!ret) {
				int err = vdimg_file_punch(img->file, start,
							   v->bitmap_size + v->block_size);

				if (err && err != -EOPNOTSUPP)
					ret = err;
			}
			goto next;
		}
		/*
		 * Zero the data, then set the bits: a dynamic image reads zeros either way, a
		 * differencing one must not fall through to the parent afterwards.
		 */
		if (e == VHD_BAT_FREE) {
			ret = vhd_alloc_block(img, v, blk);
			if (ret)
				break;
			e = vhd_bat_get(v, blk);
		}
		data = (u64)e * VHD_SECTOR + v->bitmap_size + within;
		ret = vdimg_file_zero(img->file, data, len);
		if (!ret && v->type == VHD_TYPE_DIFF)
			ret = vhd_set_bits_locked(img, v, blk, within / VHD_SECTOR,
						  (within + len) / VHD_SECTOR, true);
		if (!ret)
			ret = vhd_commit_bat_locked(img, v, blk);
next:
		offset += len;
		length -= len;
	}
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

static int vhd_verify_parent(struct vdimg_image *child, struct vdimg_image *parent)
{
	char want[40], got[40];

	if (!(child->flags & VDIMG_IMG_HAS_PARENT_UUID))
		return 0;
	vhd_fmt_uuid(want, child->parent_uuid);
	if (!(parent->flags & VDIMG_IMG_HAS_UUID)) {
		vdimg_err(child, "the parent %s has no UUID; this image wants parent %s",
			  parent->name ? parent->name : "", want);
		return -ESTALE;
	}
	if (memcmp(child->parent_uuid, parent->uuid, 16)) {
		vhd_fmt_uuid(got, parent->uuid);
		vdimg_err(child, "parent UUID mismatch: the image wants %s, %s is %s", want,
			  parent->name ? parent->name : "the parent", got);
		return -ESTALE;
	}
	if (parent->size < child->size)
		vdimg_warn(child, "the parent is smaller (%llu bytes) than this image (%llu)",
			   (unsigned long long)parent->size, (unsigned long long)child->size);
	return 0;
}

static void vhd_close(struct vdimg_image *img)
{
	struct vhd *v = img->priv;

	if (!v)
		return;
	if (v->nr_pending && !(img->flags & VDIMG_IMG_READ_ONLY))
		vhd_flush(img);
	vhd_free(v);
	img->priv = NULL;
}

static bool vhd_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return (head_len >= 8 && !memcmp(head, VHD_FOOTER_COOKIE, 8)) ||
	       (file_size >= 512 && !memcmp(tail, VHD_FOOTER_COOKIE, 8)) ||
	       (file_size >= 511 && !memcmp(tail + 1, VHD_FOOTER_COOKIE, 8));
}

#ifndef __KERNEL__
/* ---- userspace only: parent locators, create, check, describe ---- */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "vdimg-user.h"

/* UTF-16 (@be: big-endian) to UTF-8, stopping at NUL; invalid units become '?'. */
static char *vhd_utf16_to_utf8(const u8 *p, size_t bytes, bool be)
{
	char *out = malloc(bytes / 2 * 3 + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 1 < bytes; i += 2) {
		u32 c = be ? (p[i] << 8 | p[i + 1]) : (p[i + 1] << 8 | p[i]);

		if (!c)
			break;
		if (c >= 0xd800 && c < 0xdc00 && i + 3 < bytes) {
			u32 lo = be ? (p[i + 2] << 8 | p[i + 3]) : (p[i + 3] << 8 | p[i + 2]);

			if (lo >= 0xdc00 && lo < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				i += 2;
			}
		}
		if (c >= 0xd800 && c < 0xe000)
			c = '?';
		if (c < 0x80) {
			*o++ = c;
		} else if (c < 0x800) {
			*o++ = 0xc0 | c >> 6;
			*o++ = 0x80 | (c & 0x3f);
		} else if (c < 0x10000) {
			*o++ = 0xe0 | c >> 12;
			*o++ = 0x80 | ((c >> 6) & 0x3f);
			*o++ = 0x80 | (c & 0x3f);
		} else {
			/* 4 bytes from 2 units: fits in the 6 bytes those units were given */
			*o++ = 0xf0 | c >> 18;
			*o++ = 0x80 | ((c >> 12) & 0x3f);
			*o++ = 0x80 | ((c >> 6) & 0x3f);
			*o++ = 0x80 | (c & 0x3f);
		}
	}
	*o = 0;
	return out;
}

/* UTF-8 to UTF-16 (@be or little-endian) into @out (@max bytes); returns the bytes used. */
static size_t vhd_utf8_to_utf16(const char *s, u8 *out, size_t max, bool be)
{
	const u8 *p = (const u8 *)s;
	size_t n = 0;

	while (*p) {
		u32 c = *p++, units[2], k, nu = 1;

		if (c >= 0xf0 && p[0] && p[1] && p[2]) {
			c = (c & 7) << 18 | (p[0] & 0x3f) << 12 | (p[1] & 0x3f) << 6 | (p[2] & 0x3f);
			p += 3;
		} else if (c >= 0xe0 && p[0] && p[1]) {
			c = (c & 15) << 12 | (p[0] & 0x3f) << 6 | (p[1] & 0x3f);
			p += 2;
		} else if (c >= 0xc0 && p[0]) {
			c = (c & 31) << 6 | (p[0] & 0x3f);
			p += 1;
		} else if (c >= 0x80) {
			c = '?';
		}
		units[0] = c;
		if (c >= 0x10000) {
			units[0] = 0xd800 + ((c - 0x10000) >> 10);
			units[1] = 0xdc00 + ((c - 0x10000) & 0x3ff);
			nu = 2;
		}
		if (n + nu * 2 > max)
			break;
		for (k = 0; k < nu; k++, n += 2) {
			out[n] = be ? units[k] >> 8 : units[k] & 0xff;
			out[n + 1] = be ? units[k] & 0xff : units[k] >> 8;
		}
	}
	return n;
}

static void vhd_free_locators(struct vhd *v)
{
	u32 i;

	for (i = 0; i < v->nr_paths; i++)
		free(v->paths[i]);
	v->nr_paths = 0;
}

static int vhd_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Turn a locator's bytes into a path (or NULL). */
static char *vhd_locator_path(u32 code, const u8 *data, u32 len)
{
	char *s = NULL, *p;
	size_t i;

	switch (code) {
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
		s = vhd_utf16_to_utf8(data, len, false);
		break;
	case VHD_PLAT_WI2R:
	case VHD_PLAT_WI2K:
	case VHD_PLAT_MACX:
		s = strndup((const char *)data, len);
		break;
	default:
		return NULL;
	}
	if (!s)
		return NULL;
	if (code == VHD_PLAT_MACX) {
		/* file://localhost/path or file:///path, %-escaped */
		const char *q = s;
		char *o;

		if (!strncmp(q, "file://", 7))
			q += 7;
		if (!strncmp(q, "localhost/", 10))
			q += 9;
		p = strdup(q);
		free(s);
		if (!p)
			return NULL;
		for (o = s = p; *p; p++) {
			if (*p == '%' && vhd_hexval(p[1]) >= 0 && vhd_hexval(p[2]) >= 0) {
				*o++ = vhd_hexval(p[1]) << 4 | vhd_hexval(p[2]);
				p += 2;
			} else {
				*o++ = *p;
			}
		}
		*o = 0;
	} else {
		for (i = 0; s[i]; i++)
			if (s[i] == '\\')
				s[i] = '/';
	}
	if (!s[0]) {
		free(s);
		return NULL;
	}
	return s;
}

static void vhd_parse_locators(struct vdimg_image *img, struct vhd *v)
{
	static const struct { u32 code; const char *name; } order[] = {
		{ VHD_PLAT_W2RU, "W2ru" }, { VHD_PLAT_WI2R, "Wi2r" }, { VHD_PLAT_W2KU, "W2ku" },
		{ VHD_PLAT_WI2K, "Wi2k" }, { VHD_PLAT_MACX, "MacX" },
	};
	u64 fsize = vdimg_file_size(img->file);
	u32 o, i;
	char *name;

	name = vhd_utf16_to_utf8((const u8 *)v->hdr->parent_name, VHD_PARENT_NAME_BYTES, true);
	if (name) {
		vdimg_strscpy(v->parent_name, name, sizeof(v->parent_name));
		free(name);
	}
	for (o = 0; o < ARRAY_SIZE(order); o++) {
		for (i = 0; i < VHD_NR_LOCATORS && v->nr_paths < VHD_NR_LOCATORS; i++) {
			const struct vhd_locator *l = &v->hdr->loc[i];
			u32 len = be32_to_cpu(l->length);
			u64 off = be64_to_cpu(l->offset);
			u8 *data;
			char *path;

			if (be32_to_cpu(l->code) != order[o].code || !len || len > 65536 ||
			    off > fsize || len > fsize - off)
				continue;
			data = malloc(len);
			if (!data)
				return;
			if (vdimg_file_read(img->file, data, len, off)) {
				free(data);
				continue;
			}
			path = vhd_locator_path(order[o].code, data, len);
			free(data);
			if (!path)
				continue;
			v->path_kind[v->nr_paths] = (char *)order[o].name;
			v->paths[v->nr_paths++] = path;
		}
	}
	if (v->parent_name[0] && v->nr_paths <= VHD_NR_LOCATORS) {
		const char *base = strrchr(v->parent_name, '\\');

		base = base ? base + 1 : v->parent_name;
		if (strrchr(base, '/'))
			base = strrchr(base, '/') + 1;
		v->paths[v->nr_paths] = strdup(base);
		if (v->paths[v->nr_paths])
			v->path_kind[v->nr_paths++] = (char *)"name";
	}
}

const char *vdimg_vhd_parent_path(struct vdimg_image *img, unsigned int idx)
{
	struct vhd *v = img->priv;

	if (!v || img->fmt != &vdimg_vhd_format || idx >= v->nr_paths)
		return NULL;
	return v->paths[idx];
}

/* The geometry the VHD specification derives from a sector count. */
static void vhd_geometry(u64 sectors, u16 *cyl, u8 *heads, u8 *spt)
{
	u64 cth;
	u32 h, s;

	if (sectors > VHD_CHS_MAX_SECTORS)
		sectors = VHD_CHS_MAX_SECTORS;
	if (sectors >= 65535ULL * 16 * 63) {
		s = 255;
		h = 16;
		cth = sectors / s;
	} else {
		s = 17;
		cth = sectors / s;
		h = (cth + 1023) / 1024;
		if (h < 4)
			h = 4;
		if (cth >= h * 1024ULL || h > 16) {
			s = 31;
			h = 16;
			cth = sectors / s;
		}
		if (cth >= h * 1024ULL) {
			s = 63;
			h = 16;
			cth = sectors / s;
		}
	}
	*cyl = cth / h;
	*heads = h;
	*spt = s;
}

static void vhd_new_footer(struct vhd_footer *f, u32 type, u64 size, u64 data_offset)
{
	u16 cyl;
	u8 heads, spt;
	time_t now = time(NULL);

	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, VHD_FOOTER_COOKIE, 8);
	f->features = cpu_to_be32(VHD_FEAT_RESERVED);
	f->version = cpu_to_be32(VHD_VERSION);
	f->data_offset = cpu_to_be64(data_offset);
	f->timestamp = cpu_to_be32((u32)((u64)now - VHD_EPOCH_OFFSET));
	memcpy(f->creator_app, "vdmg", 4);
	f->creator_version = cpu_to_be32(0x00010000);
	memcpy(f->creator_os, "Wi2k", 4);
	f->original_size = cpu_to_be64(size);
	f->current_size = cpu_to_be64(size);
	vhd_geometry(size / VHD_SECTOR, &cyl, &heads, &spt);
	/*
	 * A size the geometry cannot express: readers that size unknown creators by CHS (qemu) would
	 * cut the disk short; the maximum geometry tells them to use the current size, as qemu's own
	 * force_size images do.
	 */
	if ((u64)cyl * heads * spt != size / VHD_SECTOR) {
		cyl = 65535;
		heads = 16;
		spt = 255;
	}
	f->cylinders = cpu_to_be16(cyl);
	f->heads = heads;
	f->sectors = spt;
	f->disk_type = cpu_to_be32(type);
	vdimg_random_bytes(f->uuid, 16);
	f->uuid[6] = (f->uuid[6] & 0x0f) | 0x40;	/* version 4 */
	f->uuid[8] = (f->uuid[8] & 0x3f) | 0x80;
	f->checksum = cpu_to_be32(vhd_footer_csum(f));
}

/* @path relative to directory @dir (both absolute and normalized, as realpath() gives them). */
static char *vhd_relpath(const char *path, const char *dir)
{
	size_t dl = strlen(dir), common = 0, i, up = 0;
	const char *rest;
	char *out, *o;

	if (dl == 1 || (!strncmp(path, dir, dl) && path[dl] == '/')) {
		rest = path + (dl == 1 ? 1 : dl + 1);	/* inside @dir */
	} else {
		for (i = 0; path[i] && dir[i] && path[i] == dir[i]; i++)
			if (path[i] == '/')
				common = i + 1;
		rest = path + common;
		for (i = common; dir[i]; i++)
			if (dir[i] != '/' && (i == common || dir[i - 1] == '/'))
				up++;
	}
	out = malloc(3 * up + strlen(rest) + 3);
	if (!out)
		return NULL;
	o = out;
	if (!up) {
		*o++ = '.';
		*o++ = '/';
	}
	while (up--) {
		memcpy(o, "../", 3);
		o += 3;
	}
	memcpy(o, rest, strlen(rest) + 1);
	return out;
}

/* Store @path as locator @idx (UTF-16LE, @win_sep: '/' becomes '\') at *@off. */
static int vhd_put_locator(struct vdimg_file *f, struct vhd_dyn_header *h, int idx, u32 code,
			   const char *path, bool win_sep, u64 *off)
{
	size_t max = strlen(path) * 4 + 4, n, i;
	u8 *buf = calloc(1, ALIGN(max, VHD_SECTOR));
	char *tmp = strdup(path);
	int ret;

	if (!buf || !tmp) {
		free(buf);
		free(tmp);
		return -ENOMEM;
	}
	if (win_sep)
		for (i = 0; tmp[i]; i++)
			if (tmp[i] == '/')
				tmp[i] = '\\';
	n = vhd_utf8_to_utf16(tmp, buf, max, false);
	free(tmp);
	h->loc[idx].code = cpu_to_be32(code);
	h->loc[idx].space = cpu_to_be32(ALIGN(n, VHD_SECTOR));
	h->loc[idx].length = cpu_to_be32(n);
	h->loc[idx].offset = cpu_to_be64(*off);
	ret = vdimg_file_write(f, buf, ALIGN(n, VHD_SECTOR), *off);
	*off += ALIGN(n, VHD_SECTOR);
	free(buf);
	return ret;
}

static int vhd_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	struct vdimg_image *parent = opts->parent_img;
	u32 type = VHD_TYPE_DYNAMIC, bs = opts->block_size ? opts->block_size : 2U << 20;
	struct vhd_footer foot;
	struct vhd_dyn_header *h;
	u64 size = opts->size, bat_len, off, end;
	u32 mte;
	u8 *bat = NULL;
	int ret;

	if (opts->variant && !strcmp(opts->variant, "fixed"))
		type = VHD_TYPE_FIXED;
	else if (opts->variant && !strcmp(opts->variant, "differencing"))
		type = VHD_TYPE_DIFF;
	else if (opts->variant && strcmp(opts->variant, "dynamic"))
		return -EINVAL;
	if (opts->parent || parent) {
		if (type == VHD_TYPE_FIXED || !parent || !opts->parent)
			return -EINVAL;
		if (!(parent->flags & VDIMG_IMG_HAS_UUID))
			return -EINVAL;
		type = VHD_TYPE_DIFF;
		if (!size)
			size = parent->size;
		if (size != parent->size)
			return -EINVAL;
	} else if (type == VHD_TYPE_DIFF) {
		return -EINVAL;
	}
	if (opts->lbs && opts->lbs != VHD_SECTOR)
		return -EINVAL;
	if (!size || size % VHD_SECTOR || size > 2040ULL << 30)
		return size > 2040ULL << 30 ? -EFBIG : -EINVAL;
	if (!is_power_of_2(bs) || bs < VHD_BLOCK_MIN || bs > VHD_BLOCK_MAX)
		return -EINVAL;

	if (type == VHD_TYPE_FIXED) {
		vhd_new_footer(&foot, type, size, VHD_NO_OFFSET);
		ret = vdimg_file_truncate(f, size);
		return ret ? ret : vdimg_file_write(f, &foot, sizeof(foot), size);
	}

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	mte = (size + bs - 1) / bs;
	bat_len = ALIGN((u64)mte * 4, VHD_SECTOR);
	memcpy(h->cookie, VHD_DYN_COOKIE, 8);
	h->data_offset = cpu_to_be64(VHD_NO_OFFSET);
	h->table_offset = cpu_to_be64(VHD_SECTOR + sizeof(*h));
	h->version = cpu_to_be32(VHD_VERSION);
	h->max_table_entries = cpu_to_be32(mte);
	h->block_size = cpu_to_be32(bs);
	off = VHD_SECTOR + sizeof(*h) + bat_len;

	ret = -ENOMEM;
	bat = malloc(bat_len);
	if (!bat)
		goto out;
	memset(bat, 0xff, bat_len);
	ret = vdimg_file_write(f, bat, bat_len, VHD_SECTOR + sizeof(*h));
	if (ret)
		goto out;

	if (type == VHD_TYPE_DIFF) {
		char *pabs, *rel = NULL, *dir;

		memcpy(h->parent_uuid, parent->uuid, 16);
		if (parent->fmt == &vdimg_vhd_format)
			h->parent_timestamp = ((struct vhd *)parent->priv)->footer.timestamp;
		else
			h->parent_timestamp = cpu_to_be32((u32)((u64)time(NULL) -
								 VHD_EPOCH_OFFSET));
		pabs = realpath(opts->parent, NULL);
		if (!pabs) {
			ret = -errno;
			goto out;
		}
		vhd_utf8_to_utf16(strrchr(pabs, '/') + 1, (u8 *)h->parent_name,
				  VHD_PARENT_NAME_BYTES - 2, true);
		dir = vdimg_file_dir(f);
		if (dir)
			rel = vhd_relpath(pabs, dir);
		free(dir);
		ret = 0;
		if (rel)
			ret = vhd_put_locator(f, h, 0, VHD_PLAT_W2RU, rel, true, &off);
		if (!ret)
			ret = vhd_put_locator(f, h, rel ? 1 : 0, VHD_PLAT_W2KU, pabs, false, &off);
		free(rel);
		free(pabs);
		if (ret)
			goto out;
	}
	h->checksum = cpu_to_be32(vhd_hdr_csum(h));
	ret = vdimg_file_write(f, h, sizeof(*h), VHD_SECTOR);
	if (ret)
		goto out;
	/* the first block's data 4 KiB-aligned, as Hyper-V lays it out */
	end = ALIGN(off + VHD_SECTOR, 4096) - VHD_SECTOR;
	vhd_new_footer(&foot, type, size, VHD_SECTOR);
	ret = vdimg_file_write(f, &foot, sizeof(foot), 0);
	if (!ret)
		ret = vdimg_file_write(f, &foot, sizeof(foot), end);
out:
	free(bat);
	free(h);
	return ret;
}

static int vhd_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct vhd *v = img->priv;
	bool repair = flags & VDIMG_CHECK_REPAIR;
	u32 blk, bad = 0;
	int ret = 0;

	if (repair && ((img->flags & VDIMG_IMG_READ_ONLY) || !v->repair_mode) && v->damage) {
		vdimg_err(img, "repairing needs the image opened writable for repair");
		return -EROFS;
	}
	vdimg_mutex_lock(&v->io_lock);
	if (v->damage & (VHD_DMG_FOOTER_CSUM | VHD_DMG_FOOTER_MISSING | VHD_DMG_FOOTER_SHORT)) {
		res->errors++;
		vdimg_warn(img, "check: the footer at the end is %s",
			   v->damage & VHD_DMG_FOOTER_MISSING ? "missing" :
			   v->damage & VHD_DMG_FOOTER_SHORT ? "511 bytes long" :
			   "damaged (checksum)");
		if (repair) {
			u64 at = v->type == VHD_TYPE_FIXED ? v->footer_off : v->data_end;

			ret = vhd_write_footer(img, v, at);
			if (!ret && v->type != VHD_TYPE_FIXED)
				ret = vdimg_file_truncate(img->file, at + VHD_SECTOR);
			if (ret)
				goto out;
			v->footer_off = at;
			res->fixed++;
		}
	}
	if (v->damage & VHD_DMG_COPY) {
		res->errors++;
		vdimg_warn(img, "check: the footer copy at offset 0 is missing or damaged");
		if (repair) {
			ret = vhd_write_footer(img, v, 0);
			if (ret)
				goto out;
			res->fixed++;
		}
	}
	if (v->damage & VHD_DMG_HDR_CSUM) {
		res->errors++;
		vdimg_warn(img, "check: the dynamic header checksum is wrong");
		if (repair) {
			v->hdr->checksum = cpu_to_be32(vhd_hdr_csum(v->hdr));
			ret = vdimg_file_write(img->file, v->hdr, sizeof(*v->hdr), v->hdr_off);
			if (ret)
				goto out;
			res->fixed++;
		}
	}
	for (blk = 0; v->type != VHD_TYPE_FIXED && blk < v->nr_blocks; blk++) {
		if (!(v->state[blk] & VHD_BLK_BAD))
			continue;
		bad++;
		res->errors++;
		vdimg_warn(img, "check: BAT entry %u (sector %u) is past the end of the file or overlaps",
			   blk, vhd_bat_get(v, blk));
		if (!repair)
			continue;
		v->bat[blk] = cpu_to_be32(VHD_BAT_FREE);
		ret = vhd_write_bat_sector(img, v, blk);
		if (ret)
			goto out;
		v->state[blk] &= ~VHD_BLK_BAD;
		res->fixed++;
	}
	if (repair) {
		ret = vdimg_file_sync(img->file);
		if (!ret)
			v->damage = 0;
	}
out:
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

static int vhd_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct vhd *v = img->priv;
	u32 i;

	if (v->type != VHD_TYPE_DIFF || !v->nr_paths)
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	vdimg_strscpy(ref->path, v->paths[0], sizeof(ref->path));
	for (i = 1; i < v->nr_paths; i++) {
		if (strcmp(v->paths[i], v->paths[0])) {
			vdimg_strscpy(ref->alt_path, v->paths[i], sizeof(ref->alt_path));
			break;
		}
	}
	return 0;
}

/* Bytes locator @l may hold at its offset without reaching other metadata or block data. */
static u64 vhd_locator_room(struct vdimg_image *img, struct vhd *v, const struct vhd_locator *l)
{
	u64 off = be64_to_cpu(l->offset), space = be32_to_cpu(l->space), end, lim = v->footer_off;
	u64 bat_end = v->bat_off + ALIGN((u64)v->max_entries * 4, VHD_SECTOR);
	u32 blk;

	/* the specification says sectors, Hyper-V and vdimg write bytes: take the smaller reading */
	space = space >= VHD_SECTOR ? space : space * VHD_SECTOR;
	if (!off || check_add_overflow(off, space, &end))
		return 0;
	if (vhd_overlaps(off, end, 0, VHD_SECTOR) ||
	    vhd_overlaps(off, end, v->hdr_off, v->hdr_off + sizeof(*v->hdr)) ||
	    vhd_overlaps(off, end, v->bat_off, bat_end))
		return 0;
	for (blk = 0; blk < v->nr_blocks; blk++) {
		u32 e = vhd_bat_get(v, blk);
		u64 at = (u64)e * VHD_SECTOR;

		if (e != VHD_BAT_FREE && at >= off)
			lim = min(lim, at);
		else if (e != VHD_BAT_FREE && at + v->bitmap_size + v->block_size > off)
			return 0;	/* the locator starts inside a block */
	}
	return end <= lim ? space : lim > off ? lim - off : 0;
}

/* @path for a locator of kind @code, encoded as the kind wants; *@len bytes. NULL if unknown. */
static u8 *vhd_locator_bytes(u32 code, const char *rel, const char *abs, size_t *len)
{
	const char *src = code == VHD_PLAT_W2RU || code == VHD_PLAT_WI2R ? rel : abs;
	size_t max = strlen(src) * 4 + 16, i;
	char *tmp;
	u8 *out;

	out = calloc(1, max * 3 + 16);
	tmp = strdup(src);
	if (!out || !tmp)
		goto fail;
	if (code == VHD_PLAT_W2RU || code == VHD_PLAT_WI2R)
		for (i = 0; tmp[i]; i++)
			if (tmp[i] == '/')
				tmp[i] = '\\';
	switch (code) {
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
		*len = vhd_utf8_to_utf16(tmp, out, max, false);
		break;
	case VHD_PLAT_WI2R:
	case VHD_PLAT_WI2K:
		*len = strlen(tmp);
		memcpy(out, tmp, *len);
		break;
	case VHD_PLAT_MACX: {
		static const char hex[] = "0123456789ABCDEF";
		char *o = (char *)out + 7;

		memcpy(out, "file://", 7);
		for (i = 0; tmp[i]; i++) {
			u8 ch = tmp[i];

			if (ch <= ' ' || ch == '%' || ch >= 0x7f) {
				*o++ = '%';
				*o++ = hex[ch >> 4];
				*o++ = hex[ch & 15];
			} else {
				*o++ = ch;
			}
		}
		*len = o - (char *)out;
		break;
	}
	default:
		goto fail;
	}
	free(tmp);
	return out;
fail:
	free(tmp);
	free(out);
	return NULL;
}

/*
 * Rebase: record @parent (found at @path, relative to this image's directory or absolute) in the
 * dynamic header: parent UUID, timestamp and name, and every platform locator that exists,
 * rewritten in place in the space it already has (-ENOSPC when a path does not fit; nothing is
 * written then). The locators' kinds are kept: relative ones get the path relative to this
 * image's directory, absolute ones the absolute path.
 */
static int vhd_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct vhd *v = img->priv;
	struct vhd_dyn_header *nh = NULL;
	u8 *data[VHD_NR_LOCATORS] = {};
	size_t dlen[VHD_NR_LOCATORS] = {};
	char *dir = NULL, *pabs = NULL, *rel = NULL;
	const char *base;
	int i, used = 0, ret;

	if (!parent) {
		vdimg_err(img, "a differencing VHD cannot drop its parent");
		return -EOPNOTSUPP;
	}
	if (v->type != VHD_TYPE_DIFF) {
		vdimg_err(img, "is not a differencing image: it has no parent to change");
		return -EINVAL;
	}
	if (img->flags & VDIMG_IMG_READ_ONLY)
		return -EROFS;
	if (!(parent->flags & VDIMG_IMG_HAS_UUID)) {
		vdimg_err(img, "the new parent %s has no UUID, which a VHD parent link needs",
			  parent->name ? parent->name : "");
		return -EOPNOTSUPP;
	}
	dir = vdimg_file_dir(img->file);
	if (!dir) {
		vdimg_err(img, "cannot tell which directory the image is in");
		return -EINVAL;
	}
	ret = -ENOMEM;
	pabs = vdimg_path_in_dir(dir, path);
	if (!pabs) {
		ret = -errno;
		vdimg_err(img, "the new parent %s: %s", path, strerror(-ret));
		goto out;
	}
	rel = vhd_relpath(pabs, dir);
	nh = malloc(sizeof(*nh));
	if (!rel || !nh)
		goto out;
	memcpy(nh, v->hdr, sizeof(*nh));
	for (i = 0; i < VHD_NR_LOCATORS; i++) {
		struct vhd_locator *l = &nh->loc[i];
		u32 code = be32_to_cpu(l->code);
		u64 room;

		if (code == VHD_PLAT_NONE || code == VHD_PLAT_MAC)
			continue;
		data[i] = vhd_locator_bytes(code, rel, pabs, &dlen[i]);
		if (!data[i])
			continue;	/* a kind we do not write: left as it is */
		room = vhd_locator_room(img, v, &v->hdr->loc[i]);
		if (dlen[i] > room) {
			vdimg_err(img, "parent locator %d has room for %llu bytes, the new path needs %zu",
				  i, (unsigned long long)room, dlen[i]);
			ret = -ENOSPC;
			goto out;
		}
		l->length = cpu_to_be32(dlen[i]);
		used++;
	}
	if (!used) {
		vdimg_err(img, "has no parent locator to hold the new parent's path");
		ret = -ENOSPC;
		goto out;
	}
	memcpy(nh->parent_uuid, parent->uuid, 16);
	if (parent->fmt == &vdimg_vhd_format)
		nh->parent_timestamp = ((struct vhd *)parent->priv)->footer.timestamp;
	else
		nh->parent_timestamp = cpu_to_be32((u32)((u64)time(NULL) - VHD_EPOCH_OFFSET));
	memset(nh->parent_name, 0, sizeof(nh->parent_name));
	base = strrchr(pabs, '/') + 1;
	vhd_utf8_to_utf16(base, (u8 *)nh->parent_name, VHD_PARENT_NAME_BYTES - 2, true);
	nh->checksum = 0;
	nh->checksum = cpu_to_be32(vhd_hdr_csum(nh));

	vdimg_mutex_lock(&v->io_lock);
	ret = 0;
	for (i = 0; i < VHD_NR_LOCATORS && !ret; i++) {
		u64 room, wlen;
		u8 *pad;

		if (!data[i])
			continue;
		/* the locator's data padded with zeros to a sector, within its room */
		room = vhd_locator_room(img, v, &v->hdr->loc[i]);
		wlen = min_t(u64, ALIGN(dlen[i], VHD_SECTOR), room);
		pad = calloc(1, wlen);
		if (!pad) {
			ret = -ENOMEM;
			break;
		}
		memcpy(pad, data[i], dlen[i]);
		ret = vdimg_file_write(img->file, pad, wlen, be64_to_cpu(nh->loc[i].offset));
		free(pad);
	}
	/* the locators' data first, then the header that gives their lengths */
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = vdimg_file_write(img->file, nh, sizeof(*nh), v->hdr_off);
	if (!ret) {
		memcpy(v->hdr, nh, sizeof(*nh));
		memcpy(img->parent_uuid, parent->uuid, 16);
		img->flags |= VDIMG_IMG_DIRTY;
		vhd_free_locators(v);
		v->parent_name[0] = 0;
		vhd_parse_locators(img, v);
	}
	vdimg_mutex_unlock(&v->io_lock);
out:
	for (i = 0; i < VHD_NR_LOCATORS; i++)
		free(data[i]);
	free(nh);
	free(rel);
	free(pabs);
	free(dir);
	return ret;
}

static void vhd_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct vhd *v = img->priv;
	const struct vhd_footer *f = &v->footer;
	char buf[600];
	time_t t;
	struct tm tm;
	bool chs;
	u32 i, alloc = 0;

	snprintf(buf, sizeof(buf), "\"%.4s\" %u.%u (%.4s)", f->creator_app,
		 be32_to_cpu(f->creator_version) >> 16, be32_to_cpu(f->creator_version) & 0xffff,
		 f->creator_os);
	emit(ctx, "creator", buf);
	snprintf(buf, sizeof(buf), "%u/%u/%u", be16_to_cpu(f->cylinders), f->heads, f->sectors);
	emit(ctx, "geometry (c/h/s)", buf);
	vhd_virtual_size(f, &chs);
	snprintf(buf, sizeof(buf), "%llu (%s)", (unsigned long long)be64_to_cpu(f->current_size),
		 chs ? "not used: this creator sizes disks by geometry" : "the virtual size");
	emit(ctx, "current size", buf);
	t = (time_t)(be32_to_cpu(f->timestamp) + VHD_EPOCH_OFFSET);
	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	emit(ctx, "timestamp", buf);
	if (f->saved_state)
		emit(ctx, "saved state", "yes");
	if (v->type != VHD_TYPE_FIXED) {
		snprintf(buf, sizeof(buf), "%u", v->block_size);
		emit(ctx, "block size", buf);
		for (i = 0; i < v->nr_blocks; i++)
			alloc += vhd_bat_get(v, i) != VHD_BAT_FREE;
		snprintf(buf, sizeof(buf), "%u/%u", alloc, v->nr_blocks);
		emit(ctx, "allocated blocks", buf);
	}
	if (v->type == VHD_TYPE_DIFF) {
		t = (time_t)(be32_to_cpu(v->hdr->parent_timestamp) + VHD_EPOCH_OFFSET);
		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
		emit(ctx, "parent timestamp", buf);
		emit(ctx, "parent name", v->parent_name);
		for (i = 0; i < v->nr_paths; i++) {
			snprintf(buf, sizeof(buf), "%s %s", v->path_kind[i], v->paths[i]);
			emit(ctx, "parent locator", buf);
		}
	}
	if (v->damage)
		emit(ctx, "damage", "yes: run vdimgctl check --repair");
}
#endif /* !__KERNEL__ */

const struct vdimg_format vdimg_vhd_format = {
	.name = "vhd",
	.id = VDIMG_FMT_VHD,
	.caps = VDIMG_CAP_SAME_SIZE_PARENT,
	.probe = vhd_probe,
	.open = vhd_open,
	.close = vhd_close,
	.map = vhd_map,
	.commit = vhd_commit,
	.abort = vhd_abort,
	.discard = vhd_discard,
	.flush = vhd_flush,
	.verify_parent = vhd_verify_parent,
};

#ifndef __KERNEL__
const struct vdimg_tool_ops vdimg_vhd_tool_ops = {
	.id = VDIMG_FMT_VHD,
	.create = vhd_create,
	.check = vhd_check,
	.parent_ref = vhd_parent_ref,
	.set_parent = vhd_set_parent,
	.describe = vhd_describe,
};
#endif
