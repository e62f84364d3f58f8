// SPDX-License-Identifier: GPL-2.0
/*
 * The VHDX backend: Hyper-V's Virtual Hard Disk v2 images, fixed, dynamic and differencing
 * (MS-VHDX). Open validates the file identifier, the two headers, the region table, the metadata
 * items and the BAT against the file and each other, and replays a pending metadata log (into the
 * file when writable, into memory when read-only; vhdx_log.c). Shared by the module and the
 * userspace library: only include/vdimg/platform.h services here, no blk-mq, no libc outside the
 * userspace-only section at the end (create, check, describe, parent locators).
 *
 * Writes: a block is reserved at the end of the file (1 MiB aligned; the file is extended first so
 * the new block reads zeros, and a differencing image also gets a sector bitmap block when its chunk
 * has none), the driver writes the data, and ->commit() syncs the file and then records the BAT
 * entries and sector bitmap bits through one log entry (synced), applying it in place afterwards.
 * A crash at any point leaves an image that reads old or new data: the log replays on the next
 * writable open (by vdimg, qemu or Hyper-V), and at worst a reserved block leaks. ->flush() marks
 * the log empty again (log GUID zero) once everything it carried is applied and durable.
 */
#include <vdimg/backend.h>
#include "vhdx.h"
#ifndef __KERNEL__
#include "tool-ops.h"
#endif

#define VHDX_BAT_MAX_BYTES	(64U << 20)	/* largest BAT held in memory */
#define VHDX_BM_CACHE_BYTES	(1U << 20)	/* memory for cached per-block sector bitmaps */
#define VHDX_SLOW		1		/* internal: the answer needs I/O */
#define VHDX_NO_BLOCK		(~0ULL)
#define VHDX_MAX_PAGES		24		/* 4 KiB pages one commit logs, at most */

/* extent cookie[1] low bits: what ->commit() records (the rest is the block's file offset) */
#define VHDX_COMMIT_FULL	1	/* a new block: FULLY_PRESENT */
#define VHDX_COMMIT_PARTIAL	2	/* a new block: PARTIALLY_PRESENT plus its sector bits */
#define VHDX_COMMIT_BITS	3	/* sector bits of a PARTIALLY_PRESENT block */

static const u8 vhdx_guid_bat[16] = VHDX_GUID_BAT;
static const u8 vhdx_guid_meta[16] = VHDX_GUID_METADATA;
static const u8 vhdx_guid_params[16] = VHDX_GUID_FILE_PARAMS;
static const u8 vhdx_guid_vsize[16] = VHDX_GUID_VDISK_SIZE;
static const u8 vhdx_guid_page83[16] = VHDX_GUID_PAGE83;
static const u8 vhdx_guid_lss[16] = VHDX_GUID_LOGICAL_SS;
static const u8 vhdx_guid_pss[16] = VHDX_GUID_PHYSICAL_SS;
static const u8 vhdx_guid_parent[16] = VHDX_GUID_PARENT_LOC;
static const u8 vhdx_guid_loctype[16] = VHDX_GUID_LOC_TYPE;
static const u8 vhdx_zero_guid[16];

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
	u64 file_size;			/* as we know it (grows with reservations); io_lock */
	u64 data_end;			/* next reservation; io_lock */
	u64 *sb_pend;			/* per chunk: reserved sector bitmap block not yet in the BAT */
	bool data_guid_done;		/* data write GUID renewed since open; lock */
	bool file_guid_pending;		/* writable open: renew the file write GUID with the next header */
	bool log_open;			/* the header carries our log GUID; io_lock */
	u32 log_state;			/* VHDX_LOGST_* for describe */
	__le64 *bat;			/* nr_entries, as on disk; lock */
	/* per-block sector bitmap cache, direct-mapped by block number; lock */
	u32 bm_slots;
	u64 *bm_blk;
	u8 *bm_data;
	/*
	 * lock: protects bat[], the bitmap cache, sb_pend[] and data_guid_done; never held across I/O.
	 * io_lock: serializes metadata writes (headers, the log, reservations) and bitmap loads; taken
	 * before lock.
	 */
	vdimg_mutex_t lock;
	vdimg_mutex_t io_lock;
#ifndef __KERNEL__
	char **loc_keys;		/* parent locator entries, UTF-8 */
	char **loc_vals;
	u32 nr_loc;
#endif
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

static inline bool vhdx_bit(const u8 *bits, u32 s)
{
	return bits[s >> 3] & (1U << (s & 7));
}

/* Sectors from @s (< @end) that have the same bit as sector @s; that bit in *@set. */
static u32 vhdx_run(const u8 *bits, u32 s, u32 end, bool *set)
{
	bool b = vhdx_bit(bits, s);
	u8 full = b ? 0xff : 0;
	u32 i = s + 1;

	*set = b;
	while (i < end) {
		if (!(i & 7) && i + 8 <= end && bits[i >> 3] == full) {
			i += 8;
			continue;
		}
		if (vhdx_bit(bits, i) != b)
			break;
		i++;
	}
	return i - s;
}

static void vhdx_guid_fmt(char *out, const u8 *g)
{
	static const char hex[] = "0123456789abcdef";
	static const u8 order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
	int i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[g[order[i]] >> 4];
		out[o++] = hex[g[order[i]] & 15];
	}
	out[o] = 0;
}

static int vhdx_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parse "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (braces optional) into on-disk bytes. */
static bool vhdx_guid_parse(const char *s, size_t len, u8 *g)
{
	static const u8 order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
	size_t i = 0;
	int n = 0;

	if (len && s[0] == '{') {
		if (len < 2 || s[len - 1] != '}')
			return false;
		s++;
		len -= 2;
	}
	if (len != 36)
		return false;
	while (i < len && n < 16) {
		int hi, lo;

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
			i++;
			continue;
		}
		hi = vhdx_hexval(s[i]);
		lo = vhdx_hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		g[order[n++]] = hi << 4 | lo;
		i += 2;
	}
	return n == 16 && i == len;
}

static void vhdx_new_guid(u8 *g)
{
	vdimg_random_bytes(g, 16);
	g[7] = (g[7] & 0x0f) | 0x40;	/* version 4 (Data3 is little-endian) */
	g[8] = (g[8] & 0x3f) | 0x80;
}

/* ---- headers ---- */

static bool vhdx_header_ok(const struct vhdx_header *h)
{
	return !memcmp(h->signature, "head", 4) &&
	       vdimg_vhdx_crc(h, sizeof(*h), offsetof(struct vhdx_header, checksum)) ==
	       le32_to_cpu(h->checksum);
}

static int vhdx_read_headers(struct vdimg_image *img, struct vhdx *v)
{
	struct vhdx_header *h;
	bool ok1, ok2;
	int ret;

	h = vdimg_zalloc(2 * sizeof(*h));
	if (!h)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, &h[0], sizeof(*h), VHDX_HEADER1_OFF);
	if (!ret)
		ret = vdimg_file_read(img->file, &h[1], sizeof(*h), VHDX_HEADER2_OFF);
	if (ret)
		goto out;
	ok1 = vhdx_header_ok(&h[0]);
	ok2 = vhdx_header_ok(&h[1]);
	if (!ok1 && !ok2) {
		ret = vdimg_corrupt(img, "neither header is valid (signature or CRC-32C)");
		goto out;
	}
	if (ok1 && ok2 && le64_to_cpu(h[0].seq) == le64_to_cpu(h[1].seq) &&
	    memcmp(&h[0], &h[1], sizeof(*h))) {
		ret = vdimg_corrupt(img, "both headers have sequence number %llu but differ",
				    (unsigned long long)le64_to_cpu(h[0].seq));
		goto out;
	}
	/* the valid one with the higher sequence number (identical copies: the first; Disk2VHD) */
	if (ok1 && (!ok2 || le64_to_cpu(h[0].seq) >= le64_to_cpu(h[1].seq))) {
		v->hdr = h[0];
		v->hdr_off = VHDX_HEADER1_OFF;
	} else {
		v->hdr = h[1];
		v->hdr_off = VHDX_HEADER2_OFF;
	}
	if (le16_to_cpu(v->hdr.version) != 1) {
		vdimg_err(img, "header version %u is not supported (only 1)",
			  le16_to_cpu(v->hdr.version));
		ret = -EOPNOTSUPP;
	}
out:
	vdimg_free(h);
	return ret;
}

/*
 * Write a new current header into the other slot: sequence + 1, @log_guid, a new data write GUID
 * with @new_data, a new file write GUID with @new_file; then sync. Caller holds io_lock or is
 * single-threaded (open).
 */
static int vhdx_update_header(struct vdimg_image *img, struct vhdx *v, const u8 *log_guid,
			      bool new_data, bool new_file)
{
	struct vhdx_header *h = vdimg_zalloc(sizeof(*h));
	u64 off = v->hdr_off == VHDX_HEADER1_OFF ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF;
	int ret;

	if (!h)
		return -ENOMEM;
	*h = v->hdr;
	h->seq = cpu_to_le64(le64_to_cpu(v->hdr.seq) + 1);
	memcpy(h->log_guid, log_guid, 16);
	if (new_data)
		vhdx_new_guid(h->data_write_guid);
	if (new_file || v->file_guid_pending)
		vhdx_new_guid(h->file_write_guid);
	h->checksum = 0;
	h->checksum = cpu_to_le32(vdimg_vhdx_crc(h, sizeof(*h), offsetof(struct vhdx_header, checksum)));
	img->flags |= VDIMG_IMG_DIRTY;
	ret = vdimg_file_write(img->file, h, sizeof(*h), off);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret) {
		v->hdr = *h;
		v->hdr_off = off;
		v->file_guid_pending = false;
		memcpy(v->log.guid, log_guid, 16);
		memcpy(img->uuid, v->hdr.data_write_guid, 16);
	}
	vdimg_free(h);
	return ret;
}

/* ---- region table and metadata ---- */

static bool vhdx_overlaps(u64 s1, u64 e1, u64 s2, u64 e2)
{
	return s1 < e2 && s2 < e1;
}

static int vhdx_read_regions(struct vdimg_image *img, struct vhdx *v, u64 fsize)
{
	u8 *buf = vdimg_zalloc(VHDX_REGION_SIZE);
	const struct vhdx_region_hdr *rh = (const void *)buf;
	u32 i, n, copy;
	bool have_bat = false, have_meta = false;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (copy = 0; copy < 2; copy++) {
		ret = vdimg_vhdx_meta_read(img, &v->log, buf, VHDX_REGION_SIZE,
				     copy ? VHDX_REGION2_OFF : VHDX_REGION1_OFF);
		if (ret)
			goto out;
		if (!memcmp(rh->signature, "regi", 4) &&
		    vdimg_vhdx_crc(buf, VHDX_REGION_SIZE, offsetof(struct vhdx_region_hdr, checksum)) ==
		    le32_to_cpu(rh->checksum))
			break;
	}
	if (copy == 2) {
		ret = vdimg_corrupt(img, "neither region table is valid (signature or CRC-32C)");
		goto out;
	}
	if (copy)
		vdimg_warn(img, "the first region table is damaged, using the second");
	n = le32_to_cpu(rh->entry_count);
	if (n > VHDX_REGION_MAX) {
		ret = vdimg_corrupt(img, "region table has %u entries (at most %u)", n,
				    VHDX_REGION_MAX);
		goto out;
	}
	for (i = 0; i < n; i++) {
		const struct vhdx_region_entry *r = (const void *)(buf + sizeof(*rh) + i * sizeof(*r));
		u64 off = le64_to_cpu(r->file_offset), len = le32_to_cpu(r->length), end;
		bool req = le32_to_cpu(r->flags) & VHDX_REGION_REQUIRED;
		bool is_bat = !memcmp(r->guid, vhdx_guid_bat, 16);
		bool is_meta = !memcmp(r->guid, vhdx_guid_meta, 16);
		char g[40];
		u32 j;

		if (!is_bat && !is_meta) {
			vhdx_guid_fmt(g, r->guid);
			if (req) {
				vdimg_err(img, "unknown required region %s is not supported", g);
				ret = -EOPNOTSUPP;
				goto out;
			}
			continue;
		}
		if (off < VHDX_HEADER_SECTION || off % VHDX_MiB || !len || len % VHDX_MiB ||
		    check_add_overflow(off, len, &end) || end > fsize) {
			ret = vdimg_corrupt(img, "%s region [%llu, +%llu) is misaligned or outside the file (%llu bytes)",
					    is_bat ? "BAT" : "metadata", (unsigned long long)off,
					    (unsigned long long)len, (unsigned long long)fsize);
			goto out;
		}
		if ((is_bat && have_bat) || (is_meta && have_meta)) {
			ret = vdimg_corrupt(img, "region table lists the %s region twice",
					    is_bat ? "BAT" : "metadata");
			goto out;
		}
		if (v->log.length && vhdx_overlaps(off, end, v->log.offset,
						   v->log.offset + v->log.length)) {
			ret = vdimg_corrupt(img, "a region overlaps the log");
			goto out;
		}
		for (j = 0; j < i; j++) {
			const struct vhdx_region_entry *o = (const void *)(buf + sizeof(*rh) +
									   j * sizeof(*o));
			u64 oo = le64_to_cpu(o->file_offset);

			if (vhdx_overlaps(off, end, oo, oo + le32_to_cpu(o->length))) {
				ret = vdimg_corrupt(img, "regions overlap");
				goto out;
			}
		}
		if (is_bat) {
			have_bat = true;
			v->bat_off = off;
			v->bat_len = len;
		} else {
			have_meta = true;
			v->meta_off = off;
			v->meta_len = len;
		}
	}
	if (!have_bat || !have_meta)
		ret = vdimg_corrupt(img, "the region table has no %s region",
				    have_bat ? "metadata" : "BAT");
out:
	vdimg_free(buf);
	return ret;
}

/* UTF-16LE @p (@bytes) equals the ASCII string @s? */
static bool vhdx_u16_eq(const u8 *p, u32 bytes, const char *s)
{
	u32 i, n = strlen(s);

	if (bytes != 2 * n)
		return false;
	for (i = 0; i < n; i++)
		if (p[2 * i] != (u8)s[i] || p[2 * i + 1])
			return false;
	return true;
}

#ifndef __KERNEL__
static void vhdx_keep_locator(struct vhdx *v, const u8 *k, u32 kl, const u8 *val, u32 vl);
#endif

/* Parse the parent locator item @p (@len bytes). */
static int vhdx_parse_locator(struct vdimg_image *img, struct vhdx *v, const u8 *p, u32 len)
{
	const struct vhdx_locator_hdr *lh = (const void *)p;
	u32 i, n;

	if (len < sizeof(*lh))
		return vdimg_corrupt(img, "parent locator of %u bytes is too short", len);
	if (memcmp(lh->locator_type, vhdx_guid_loctype, 16)) {
		vdimg_err(img, "unknown parent locator type: not a VHDX parent locator");
		return -EOPNOTSUPP;
	}
	n = le16_to_cpu(lh->count);
	if ((u64)n * sizeof(struct vhdx_locator_entry) > len - sizeof(*lh))
		return vdimg_corrupt(img, "parent locator has %u entries in %u bytes", n, len);
	for (i = 0; i < n; i++) {
		const struct vhdx_locator_entry *le = (const void *)(p + sizeof(*lh) +
								     i * sizeof(*le));
		u64 ko = le32_to_cpu(le->key_offset), vo = le32_to_cpu(le->value_offset);
		u32 kl = le16_to_cpu(le->key_length), vl = le16_to_cpu(le->value_length);

		if (!kl || !vl || ko + kl > len || vo + vl > len || (kl | vl) & 1)
			return vdimg_corrupt(img, "parent locator entry %u is outside the item", i);
		if (vhdx_u16_eq(p + ko, kl, "parent_linkage")) {
			char s[40];
			u32 j;

			if (vl / 2 >= sizeof(s))
				return vdimg_corrupt(img, "parent_linkage is too long");
			for (j = 0; j < vl / 2; j++)
				s[j] = p[vo + 2 * j + 1] ? '?' : (char)p[vo + 2 * j];
			s[j] = 0;
			if (!vhdx_guid_parse(s, j, v->parent_linkage))
				return vdimg_corrupt(img, "parent_linkage \"%s\" is not a GUID", s);
			v->has_linkage = true;
		}
#ifndef __KERNEL__
		vhdx_keep_locator(v, p + ko, kl, p + vo, vl);
#endif
	}
	return 0;
}

static int vhdx_read_metadata(struct vdimg_image *img, struct vhdx *v)
{
	u8 *buf = vdimg_zalloc(VHDX_META_TABLE_SIZE), *item = NULL;
	const struct vhdx_meta_hdr *mh = (const void *)buf;
	u32 i, j, n, seen = 0;
	u64 vsize = 0;
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = vdimg_vhdx_meta_read(img, &v->log, buf, VHDX_META_TABLE_SIZE, v->meta_off);
	if (ret)
		goto out;
	if (memcmp(mh->signature, "metadata", 8)) {
		ret = vdimg_corrupt(img, "the metadata table has no \"metadata\" signature");
		goto out;
	}
	n = le16_to_cpu(mh->entry_count);
	if (n > VHDX_META_MAX) {
		ret = vdimg_corrupt(img, "metadata table has %u entries (at most %u)", n,
				    VHDX_META_MAX);
		goto out;
	}
	for (i = 0; i < n; i++) {
		const struct vhdx_meta_entry *m = (const void *)(buf + sizeof(*mh) + i * sizeof(*m));
		u32 off = le32_to_cpu(m->offset), len = le32_to_cpu(m->length);
		u32 flags = le32_to_cpu(m->flags);
		int kind = -1;
		char g[40];

		if (!memcmp(m->item_id, vhdx_guid_params, 16))
			kind = 0;
		else if (!memcmp(m->item_id, vhdx_guid_vsize, 16))
			kind = 1;
		else if (!memcmp(m->item_id, vhdx_guid_page83, 16))
			kind = 2;
		else if (!memcmp(m->item_id, vhdx_guid_lss, 16))
			kind = 3;
		else if (!memcmp(m->item_id, vhdx_guid_pss, 16))
			kind = 4;
		else if (!memcmp(m->item_id, vhdx_guid_parent, 16))
			kind = 5;
		for (j = 0; j < i; j++) {
			const struct vhdx_meta_entry *o = (const void *)(buf + sizeof(*mh) +
									 j * sizeof(*o));

			if (!memcmp(o->item_id, m->item_id, 16) &&
			    !(le32_to_cpu(o->flags) & VHDX_META_IS_USER) == !(flags & VHDX_META_IS_USER)) {
				ret = vdimg_corrupt(img, "metadata item listed twice");
				goto out;
			}
		}
		if (len && (off < VHDX_META_TABLE_SIZE || len > VHDX_MiB ||
			    (u64)off + len > v->meta_len)) {
			ret = vdimg_corrupt(img, "metadata item %u [%u, +%u) is outside the metadata region",
					    i, off, len);
			goto out;
		}
		if (kind < 0 || (flags & VHDX_META_IS_USER)) {
			if (flags & VHDX_META_IS_REQUIRED) {
				vhdx_guid_fmt(g, m->item_id);
				vdimg_err(img, "unknown required metadata item %s is not supported", g);
				ret = -EOPNOTSUPP;
				goto out;
			}
			continue;
		}
		{
			static const u32 want[6] = { 8, 8, 16, 4, 4, 0 };

			if ((want[kind] && len != want[kind]) || (!want[kind] && !len)) {
				ret = vdimg_corrupt(img, "metadata item %u has a bad length %u", i, len);
				goto out;
			}
		}
		item = vdimg_zalloc(len);
		if (!item) {
			ret = -ENOMEM;
			goto out;
		}
		ret = vdimg_vhdx_meta_read(img, &v->log, item, len, v->meta_off + off);
		if (ret)
			goto out;
		switch (kind) {
		case 0: {
			const struct vhdx_file_params *fp = (const void *)item;

			v->block_size = le32_to_cpu(fp->block_size);
			v->params = le32_to_cpu(fp->flags);
			break;
		}
		case 1:
			memcpy(&vsize, item, 8);
			vsize = le64_to_cpu(vsize);
			break;
		case 2:
			memcpy(v->page83, item, 16);
			break;
		case 3:
		case 4: {
			__le32 x;

			memcpy(&x, item, 4);
			if (kind == 3)
				v->lss = le32_to_cpu(x);
			else
				v->pss = le32_to_cpu(x);
			break;
		}
		case 5:
			seen |= 1U << 6;	/* parsed after the parameters */
			ret = vhdx_parse_locator(img, v, item, len);
			if (ret)
				goto out;
			break;
		}
		seen |= 1U << kind;
		vdimg_free(item);
		item = NULL;
	}
	if ((seen & 0x1f) != 0x1f) {
		ret = vdimg_corrupt(img, "a required metadata item is missing (%s)",
				    !(seen & 1) ? "file parameters" : !(seen & 2) ? "virtual disk size" :
				    !(seen & 4) ? "page 83 data" : !(seen & 8) ?
				    "logical sector size" : "physical sector size");
		goto out;
	}
	if (v->block_size < VHDX_BLOCK_MIN || v->block_size > VHDX_BLOCK_MAX ||
	    !is_power_of_2(v->block_size)) {
		ret = vdimg_corrupt(img, "block size %u is not a power of two in [1 MiB, 256 MiB]",
				    v->block_size);
		goto out;
	}
	if ((v->lss != 512 && v->lss != 4096) || (v->pss != 512 && v->pss != 4096)) {
		ret = vdimg_corrupt(img, "sector sizes %u/%u are not 512 or 4096", v->lss, v->pss);
		goto out;
	}
	if (!vsize || vsize % v->lss || vsize > VHDX_MAX_SIZE) {
		ret = vdimg_corrupt(img, "virtual disk size %llu is zero, not a multiple of %u or over 64 TiB",
				    (unsigned long long)vsize, v->lss);
		goto out;
	}
	img->size = vsize;
	v->diff = v->params & VHDX_PARAM_HAS_PARENT;
	if (v->diff && !(seen & (1U << 6))) {
		ret = vdimg_corrupt(img, "a differencing image without a parent locator");
		goto out;
	}
	if (v->diff && !v->has_linkage) {
		ret = vdimg_corrupt(img, "the parent locator has no parent_linkage");
		goto out;
	}
out:
	vdimg_free(item);
	vdimg_free(buf);
	return ret;
}

/* ---- BAT ---- */

static void vhdx_sort_u64(u64 *a, u64 n)
{
	u64 start, end, root, child, t;

	if (n < 2)
		return;
	for (start = n / 2; start-- > 0;) {
		for (root = start; (child = 2 * root + 1) < n; root = child) {
			if (child + 1 < n && a[child] < a[child + 1])
				child++;
			if (a[root] >= a[child])
				break;
			t = a[root]; a[root] = a[child]; a[child] = t;
		}
	}
	for (end = n - 1; end > 0; end--) {
		t = a[0]; a[0] = a[end]; a[end] = t;
		for (root = 0; (child = 2 * root + 1) < end; root = child) {
			if (child + 1 < end && a[child] < a[child + 1])
				child++;
			if (a[root] >= a[child])
				break;
			t = a[root]; a[root] = a[child]; a[child] = t;
		}
	}
}

/* Is [off, off + len) clear of the header section, the log, the regions? */
static bool vhdx_space_ok(const struct vhdx *v, u64 off, u64 len, u64 fsize)
{
	u64 end = off + len;

	if (off < VHDX_HEADER_SECTION || end > fsize || off % VHDX_MiB)
		return false;
	if (v->log.length && vhdx_overlaps(off, end, v->log.offset, v->log.offset + v->log.length))
		return false;
	return !vhdx_overlaps(off, end, v->bat_off, v->bat_off + v->bat_len) &&
	       !vhdx_overlaps(off, end, v->meta_off, v->meta_off + v->meta_len);
}

static int vhdx_load_bat(struct vdimg_image *img, struct vhdx *v, u64 fsize)
{
	u64 i, n = 0, *used, max_end = 0;
	u64 bytes;
	int ret;

	v->chunk_ratio = (u32)((VHDX_SB_SECTORS * v->lss) / v->block_size);
	v->block_shift = ilog2(v->block_size);
	v->nr_blocks = DIV_ROUND_UP(img->size, (u64)v->block_size);
	v->nr_chunks = DIV_ROUND_UP(v->nr_blocks, (u64)v->chunk_ratio);
	v->bm_bytes = v->block_size / v->lss / 8;
	if (v->diff)
		v->nr_entries = v->nr_chunks * (v->chunk_ratio + 1);
	else
		v->nr_entries = v->nr_blocks + (v->nr_blocks - 1) / v->chunk_ratio;
	bytes = v->nr_entries * 8;
	if (bytes > v->bat_len)
		return vdimg_corrupt(img, "the BAT region (%u bytes) is too small for %llu entries",
				     v->bat_len, (unsigned long long)v->nr_entries);
	if (bytes > VHDX_BAT_MAX_BYTES) {
		vdimg_err(img, "a BAT of %llu bytes is larger than vdimg supports (%u)",
			  (unsigned long long)bytes, VHDX_BAT_MAX_BYTES);
		return -EOPNOTSUPP;
	}
	v->bat = vdimg_zalloc(bytes);
	v->sb_pend = vdimg_zalloc(v->nr_chunks * sizeof(u64));
	used = vdimg_zalloc((v->nr_blocks + v->nr_chunks) * sizeof(u64));
	if (!v->bat || !v->sb_pend || !used) {
		vdimg_free(used);
		return -ENOMEM;
	}
	ret = vdimg_vhdx_meta_read(img, &v->log, v->bat, bytes, v->bat_off);
	if (ret)
		goto out;
	for (i = 0; i < v->nr_entries; i++) {
		u64 e = vhdx_bat(v, i), off = vhdx_off(e), len;
		u32 st = vhdx_state(e);
		bool sb = (i % (v->chunk_ratio + 1)) == v->chunk_ratio;

		if (sb) {
			if (st == VHDX_SB_NOT_PRESENT)
				continue;
			if (st != VHDX_SB_PRESENT) {
				ret = vdimg_corrupt(img, "BAT entry %llu: bad sector bitmap state %u",
						    (unsigned long long)i, st);
				goto out;
			}
			if (!v->diff)
				continue;	/* reserved in non-differencing images: ignored */
			len = VHDX_SB_BLOCK;
		} else {
			u64 blk = i - i / (v->chunk_ratio + 1);

			if (blk >= v->nr_blocks) {
				if (st) {	/* past the disk end in a differencing BAT */
					ret = vdimg_corrupt(img, "BAT entry %llu past the disk end is in use",
							    (unsigned long long)i);
					goto out;
				}
				continue;
			}
			switch (st) {
			case VHDX_PAYLOAD_NOT_PRESENT:
			case VHDX_PAYLOAD_UNDEFINED:
			case VHDX_PAYLOAD_ZERO:
			case VHDX_PAYLOAD_UNMAPPED:
				continue;
			case VHDX_PAYLOAD_FULLY_PRESENT:
				break;
			case VHDX_PAYLOAD_PARTIALLY_PRESENT:
				if (!v->diff) {
					ret = vdimg_corrupt(img, "block %llu is partially present in an image without a parent",
							    (unsigned long long)blk);
					goto out;
				}
				if (vhdx_state(vhdx_bat(v, vhdx_sbe(v, blk / v->chunk_ratio))) !=
				    VHDX_SB_PRESENT) {
					ret = vdimg_corrupt(img, "block %llu is partially present but its chunk has no sector bitmap",
							    (unsigned long long)blk);
					goto out;
				}
				break;
			default:
				ret = vdimg_corrupt(img, "BAT entry %llu: bad payload state %u",
						    (unsigned long long)i, st);
				goto out;
			}
			len = v->block_size;
		}
		if (!vhdx_space_ok(v, off, len, ALIGN(fsize, VHDX_MiB))) {
			ret = vdimg_corrupt(img, "BAT entry %llu points at [%llu, +%llu): outside the file or into metadata",
					    (unsigned long long)i, (unsigned long long)off,
					    (unsigned long long)len);
			goto out;
		}
		used[n++] = off | (len == VHDX_SB_BLOCK ? 0 : 1);
		max_end = max(max_end, off + len);
	}
	vhdx_sort_u64(used, n);
	for (i = 1; i < n; i++) {
		u64 prev = used[i - 1] & VHDX_BAT_OFF_MASK;
		u64 plen = (used[i - 1] & 1) ? v->block_size : VHDX_SB_BLOCK;

		if (prev + plen > (used[i] & VHDX_BAT_OFF_MASK)) {
			ret = vdimg_corrupt(img, "two BAT entries share file space at %llu",
					    (unsigned long long)(used[i] & VHDX_BAT_OFF_MASK));
			goto out;
		}
	}
	v->file_size = fsize;
	v->data_end = ALIGN(max(max(fsize, max_end), (u64)VHDX_HEADER_SECTION), VHDX_MiB);
	v->data_end = max(v->data_end, ALIGN(v->bat_off + v->bat_len, VHDX_MiB));
	v->data_end = max(v->data_end, ALIGN(v->meta_off + v->meta_len, VHDX_MiB));
	v->data_end = max(v->data_end, ALIGN(v->log.offset + v->log.length, VHDX_MiB));
out:
	vdimg_free(used);
	return ret;
}

/* ---- open and close ---- */

#ifndef __KERNEL__
static void vhdx_free_locator(struct vhdx *v);
#endif

static void vhdx_free(struct vhdx *v)
{
	vdimg_vhdx_log_free_overlay(&v->log);
	vdimg_free(v->bat);
	vdimg_free(v->sb_pend);
	vdimg_free(v->bm_blk);
	vdimg_free(v->bm_data);
#ifndef __KERNEL__
	vhdx_free_locator(v);
#endif
	vdimg_mutex_destroy(&v->lock);
	vdimg_mutex_destroy(&v->io_lock);
	vdimg_free(v);
}

static int vhdx_open(struct vdimg_image *img, unsigned int flags)
{
	bool ro = flags & VDIMG_OPEN_READ_ONLY;
	u64 fsize = vdimg_file_size(img->file);
	struct vhdx *v;
	u8 sig[8];
	u64 i;
	int ret;

	vhdx_check_layout();
	if (fsize < VHDX_HEADER_SECTION)
		return vdimg_corrupt(img, "file of %llu bytes is too small for VHDX",
				     (unsigned long long)fsize);
	ret = vdimg_file_read(img->file, sig, 8, VHDX_FILE_ID_OFF);
	if (ret)
		return ret;
	if (memcmp(sig, "vhdxfile", 8))
		return vdimg_corrupt(img, "no \"vhdxfile\" file identifier");
	v = vdimg_zalloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	vdimg_mutex_init(&v->lock);
	vdimg_mutex_init(&v->io_lock);
	v->read_only = ro;
	ret = vhdx_read_headers(img, v);
	if (ret)
		goto fail;

	/* the log: where it is, and replay it before reading anything else */
	v->log.offset = le64_to_cpu(v->hdr.log_offset);
	v->log.length = le32_to_cpu(v->hdr.log_length);
	memcpy(v->log.guid, v->hdr.log_guid, 16);
	if (le16_to_cpu(v->hdr.log_version) != 0) {
		vdimg_err(img, "log version %u is not supported", le16_to_cpu(v->hdr.log_version));
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (v->log.length && (v->log.offset < VHDX_HEADER_SECTION || v->log.offset % VHDX_MiB ||
			      v->log.length % VHDX_MiB ||
			      v->log.offset + v->log.length > fsize)) {
		ret = vdimg_corrupt(img, "the log [%llu, +%u) is misaligned or outside the file",
				    (unsigned long long)v->log.offset, v->log.length);
		goto fail;
	}
	if (v->log.length && memcmp(v->log.guid, vhdx_zero_guid, 16)) {
		ret = vdimg_vhdx_log_replay(img, &v->log, fsize, !ro);
		if (ret)
			goto fail;
		if (v->log.replayed_entries) {
			v->log_state = ro ? VHDX_LOGST_MEMORY : VHDX_LOGST_REPLAYED;
			if (ro)
				vdimg_info(img, "the log has %u pending entries: replayed in memory (a writable open replays them into the file)",
					   v->log.replayed_entries);
			else
				vdimg_info(img, "replayed %u log entries", v->log.replayed_entries);
		} else {
			v->log_state = VHDX_LOGST_STALE;
		}
		if (!ro) {
			ret = vdimg_file_sync(img->file);
			if (ret)
				goto fail;
			fsize = vdimg_file_size(img->file);
		} else if (v->log.last_file_offset > fsize) {
			fsize = v->log.last_file_offset;	/* reads past the end see zeros */
		}
	}

	ret = vhdx_read_regions(img, v, fsize);
	if (ret)
		goto fail;
	ret = vhdx_read_metadata(img, v);
	if (ret)
		goto fail;
	ret = vhdx_load_bat(img, v, fsize);
	if (ret)
		goto fail;
	if (v->log.nr_ov) {
		/* replayed in memory: only metadata may have changed, or reads would go stale */
		for (i = 0; i < v->log.nr_ov; i++) {
			const struct vhdx_overlay *o = &v->log.ov[i];
			u64 c;
			bool meta = (o->off >= v->bat_off && o->off + o->len <= v->bat_off + v->bat_len) ||
				    (o->off >= v->meta_off &&
				     o->off + o->len <= v->meta_off + v->meta_len) ||
				    (o->off >= VHDX_REGION1_OFF && o->off + o->len <= VHDX_HEADER_SECTION);

			for (c = 0; !meta && v->diff && c < v->nr_chunks; c++) {
				u64 e = vhdx_bat(v, vhdx_sbe(v, c));

				meta = vhdx_state(e) == VHDX_SB_PRESENT && o->off >= vhdx_off(e) &&
				       o->off + o->len <= vhdx_off(e) + VHDX_SB_BLOCK;
			}
			if (!meta) {
				vdimg_err(img, "the pending log changes data at %llu: it cannot be replayed in memory; attach writable (or run vdimgctl check --repair) to replay it into the file",
					  (unsigned long long)o->off);
				ret = -EROFS;
				goto fail;
			}
		}
	}

	v->bm_slots = max_t(u32, 4, VHDX_BM_CACHE_BYTES / v->bm_bytes);
	if (v->diff) {
		v->bm_blk = vdimg_zalloc(sizeof(u64) * v->bm_slots);
		v->bm_data = vdimg_zalloc((size_t)v->bm_slots * v->bm_bytes);
		if (!v->bm_blk || !v->bm_data) {
			ret = -ENOMEM;
			goto fail;
		}
		for (i = 0; i < v->bm_slots; i++)
			v->bm_blk[i] = VHDX_NO_BLOCK;
	}

	img->lbs = v->lss;
	img->pbs = max(v->pss, v->lss);
	img->alloc_unit = v->block_size;
	memcpy(img->uuid, v->hdr.data_write_guid, 16);
	img->flags |= VDIMG_IMG_HAS_UUID;
	if (v->diff) {
		img->flags |= VDIMG_IMG_HAS_PARENT | VDIMG_IMG_HAS_PARENT_UUID;
		memcpy(img->parent_uuid, v->parent_linkage, 16);
		vdimg_strscpy(img->variant, "differencing", sizeof(img->variant));
	} else {
		bool fixed = v->params & VHDX_PARAM_LEAVE_ALLOCATED;

		for (i = 0; fixed && i < v->nr_blocks; i++)
			fixed = vhdx_state(vhdx_bat(v, vhdx_pe(v, i))) == VHDX_PAYLOAD_FULLY_PRESENT;
		if (fixed)
			img->alloc_unit = 0;
		vdimg_strscpy(img->variant, fixed ? "fixed" : "dynamic", sizeof(img->variant));
	}
	img->priv = v;

	if (!ro) {
		if (!v->log.length) {
			vdimg_err(img, "the image has no log: vdimg cannot update its metadata safely");
			ret = -EOPNOTSUPP;
			goto fail_priv;
		}
		/*
		 * The file write GUID must change before the first modification of the file. A log
		 * GUID left in the header (a replayed log) is cleared now, with a new file write GUID;
		 * otherwise nothing is written until the first change (every change starts with a
		 * header update, which then takes the new file write GUID), so an open that a chain
		 * check refuses, or a writable open that never writes, leaves the file untouched.
		 */
		if (memcmp(v->hdr.log_guid, vhdx_zero_guid, 16)) {
			ret = vhdx_update_header(img, v, vhdx_zero_guid, false, true);
			if (ret)
				goto fail_priv;
		} else {
			v->file_guid_pending = true;
		}
	}
	return 0;
fail_priv:
	img->priv = NULL;
fail:
	vhdx_free(v);
	return ret;
}

/* ---- mapping ---- */

static u8 *vhdx_bm_lookup(struct vhdx *v, u64 blk)
{
	u32 slot = blk % v->bm_slots;

	return v->bm_blk[slot] == blk ? v->bm_data + (size_t)slot * v->bm_bytes : NULL;
}

static void vhdx_bm_insert(struct vhdx *v, u64 blk, const u8 *bits)
{
	u32 slot = blk % v->bm_slots;

	v->bm_blk[slot] = blk;
	memcpy(v->bm_data + (size_t)slot * v->bm_bytes, bits, v->bm_bytes);
}

/* File offset of block @blk's sector bits, or 0 when its chunk has no sector bitmap block. */
static u64 vhdx_bm_off(const struct vhdx *v, u64 blk)
{
	u64 c = blk / v->chunk_ratio, e = vhdx_bat(v, vhdx_sbe(v, c));
	u64 sb = vhdx_state(e) == VHDX_SB_PRESENT ? vhdx_off(e) : v->sb_pend[c];

	if (!sb)
		return 0;
	return sb + (blk % v->chunk_ratio) * (u64)v->bm_bytes;
}

/* The kind of block @e is for a read: an extent type. */
static u32 vhdx_read_kind(const struct vhdx *v, u64 e)
{
	switch (vhdx_state(e)) {
	case VHDX_PAYLOAD_FULLY_PRESENT:
		return VDIMG_EXT_DATA;
	case VHDX_PAYLOAD_NOT_PRESENT:
	case VHDX_PAYLOAD_UNDEFINED:
		return v->diff ? VDIMG_EXT_UNALLOCATED : VDIMG_EXT_ZERO;
	case VHDX_PAYLOAD_PARTIALLY_PRESENT:
		return 0;	/* per sector */
	default:
		return VDIMG_EXT_ZERO;	/* ZERO, UNMAPPED */
	}
}

/* Map from memory; VHDX_SLOW when the answer needs I/O. Caller holds lock. */
static int vhdx_map_cached(struct vdimg_image *img, struct vhdx *v, u64 offset, u64 length,
			   bool write, struct vdimg_extent *ext)
{
	u64 blk = offset >> v->block_shift, within = offset & (v->block_size - 1);
	u64 len = min_t(u64, length, v->block_size - within), e = vhdx_bat(v, vhdx_pe(v, blk));
	u32 kind = vhdx_read_kind(v, e);
	const u8 *bits;

	if (write && !v->data_guid_done)
		return VHDX_SLOW;
	if (kind == VDIMG_EXT_DATA) {
		u64 b = blk + 1, fo = vhdx_off(e);

		ext->type = VDIMG_EXT_DATA;
		ext->file = img->file;
		ext->file_offset = fo + within;
		/* merge following blocks that are present and contiguous in the file */
		while (len < length && b < v->nr_blocks) {
			u64 n = vhdx_bat(v, vhdx_pe(v, b));

			if (vhdx_state(n) != VHDX_PAYLOAD_FULLY_PRESENT ||
			    vhdx_off(n) != fo + ((b - blk) << v->block_shift))
				break;
			len += min_t(u64, v->block_size, length - len);
			b++;
		}
		ext->length = len;
		return 0;
	}
	if (kind) {
		u64 b = blk + 1;

		if (write)
			return VHDX_SLOW;
		while (len < length && b < v->nr_blocks &&
		       vhdx_read_kind(v, vhdx_bat(v, vhdx_pe(v, b))) == kind) {
			len += min_t(u64, v->block_size, length - len);
			b++;
		}
		ext->type = kind;
		ext->length = len;
		return 0;
	}
	/* partially present: the sector bitmap decides */
	bits = vhdx_bm_lookup(v, blk);
	if (!bits)
		return VHDX_SLOW;
	{
		u32 s = within / v->lss, send = DIV_ROUND_UP(within + len, v->lss);
		bool set;
		u32 run = vhdx_run(bits, s, send, &set);

		ext->file = img->file;
		ext->file_offset = vhdx_off(e) + within;
		ext->type = VDIMG_EXT_DATA;
		if (!write) {
			ext->length = min_t(u64, (u64)(s + run) * v->lss, within + len) - within;
			if (!set)
				ext->type = VDIMG_EXT_UNALLOCATED;
			return 0;
		}
		if (set && run == send - s) {
			ext->length = len;
			return 0;
		}
		if ((offset | len) & (v->lss - 1))
			return -EINVAL;	/* bits cover whole logical sectors */
		ext->length = len;
		ext->flags = VDIMG_EXT_NEW;
		ext->fill_offset = offset;
		ext->fill_length = 0;
		ext->cookie[0] = blk;
		ext->cookie[1] = vhdx_off(e) | VHDX_COMMIT_BITS;
	}
	return 0;
}

/* Reserve a new block for @blk at the end of the file. Holds io_lock. */
static int vhdx_reserve(struct vdimg_image *img, struct vhdx *v, u64 blk, u64 *off, bool *partial)
{
	u64 c = blk / v->chunk_ratio, start = v->data_end, end, e;
	bool need_sb;
	int ret;

	vdimg_mutex_lock(&v->lock);
	e = vhdx_bat(v, vhdx_pe(v, blk));
	*partial = v->diff && (vhdx_state(e) == VHDX_PAYLOAD_NOT_PRESENT ||
			       vhdx_state(e) == VHDX_PAYLOAD_UNDEFINED);
	need_sb = *partial && vhdx_state(vhdx_bat(v, vhdx_sbe(v, c))) != VHDX_SB_PRESENT &&
		  !v->sb_pend[c];
	vdimg_mutex_unlock(&v->lock);
	end = start + v->block_size + (need_sb ? VHDX_SB_BLOCK : 0);
	if (end >> VHDX_BAT_OFF_SHIFT >= (1ULL << 44)) {
		vdimg_err(img, "the file cannot grow further");
		return -ENOSPC;
	}
	/* grow the file: the new space is a hole that reads zeros */
	ret = vdimg_file_truncate(img->file, end);
	if (ret)
		return ret;
	img->flags |= VDIMG_IMG_DIRTY;
	v->data_end = end;
	v->file_size = end;
	*off = start;
	if (need_sb) {
		vdimg_mutex_lock(&v->lock);
		v->sb_pend[c] = start + v->block_size;
		vdimg_mutex_unlock(&v->lock);
	}
	return 0;
}

static int vhdx_map_slow(struct vdimg_image *img, struct vhdx *v, u64 offset, u64 length,
			 bool write, struct vdimg_extent *ext)
{
	u64 blk = offset >> v->block_shift, e, bmoff;
	u8 *buf = NULL;
	int ret = 0;

	vdimg_mutex_lock(&v->io_lock);
	if (write && !v->data_guid_done) {
		/* the first write after open: a new data write GUID, durable before any data */
		ret = vhdx_update_header(img, v, v->log.guid, true, false);
		if (ret)
			goto out;
		vdimg_mutex_lock(&v->lock);
		v->data_guid_done = true;
		vdimg_mutex_unlock(&v->lock);
	}
	vdimg_mutex_lock(&v->lock);
	e = vhdx_bat(v, vhdx_pe(v, blk));
	ret = vhdx_map_cached(img, v, offset, length, write, ext);
	vdimg_mutex_unlock(&v->lock);
	if (ret != VHDX_SLOW)
		goto out;
	if (vhdx_state(e) == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
		vdimg_mutex_lock(&v->lock);
		bmoff = vhdx_bm_off(v, blk);
		vdimg_mutex_unlock(&v->lock);
		buf = vdimg_zalloc(v->bm_bytes);
		if (!buf) {
			ret = -ENOMEM;
			goto out;
		}
		ret = vdimg_vhdx_meta_read(img, &v->log, buf, v->bm_bytes, bmoff);
		if (ret)
			goto out;
		vdimg_mutex_lock(&v->lock);
		vhdx_bm_insert(v, blk, buf);
		ret = vhdx_map_cached(img, v, offset, length, write, ext);
		vdimg_mutex_unlock(&v->lock);
		if (WARN_ON_ONCE(ret == VHDX_SLOW))
			ret = -EIO;
		goto out;
	}
	if (write) {
		u64 within = offset & (v->block_size - 1), off;
		u64 len = min_t(u64, length, v->block_size - within);
		bool partial;

		ret = vhdx_reserve(img, v, blk, &off, &partial);
		if (ret)
			goto out;
		if (partial && ((offset | len) & (v->lss - 1))) {
			ret = -EINVAL;
			goto out;
		}
		ext->type = VDIMG_EXT_DATA;
		ext->flags = VDIMG_EXT_NEW;
		ext->file = img->file;
		ext->file_offset = off + within;
		ext->length = len;
		ext->fill_offset = offset;
		ext->fill_length = 0;	/* the rest of the block is a hole: zeros */
		ext->cookie[0] = blk;
		ext->cookie[1] = off | (partial ? VHDX_COMMIT_PARTIAL : VHDX_COMMIT_FULL);
		ret = 0;
		goto out;
	}
	ret = -EIO;	/* a read never needs more than a bitmap */
out:
	vdimg_mutex_unlock(&v->io_lock);
	vdimg_free(buf);
	return ret;
}

static int vhdx_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		    struct vdimg_extent *ext)
{
	struct vhdx *v = img->priv;
	bool write = flags & VDIMG_MAP_WRITE;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	length = min(length, img->size - offset);
	if (write) {
		if (img->flags & VDIMG_IMG_READ_ONLY || v->read_only)
			return -EROFS;
		if ((offset | length) & 511)
			return -EINVAL;
	}
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	if (flags & VDIMG_MAP_NOWAIT) {
		if (!vdimg_mutex_trylock(&v->lock))
			return -EAGAIN;
	} else {
		vdimg_mutex_lock(&v->lock);
	}
	ret = vhdx_map_cached(img, v, offset, length, write, ext);
	vdimg_mutex_unlock(&v->lock);
	if (ret != VHDX_SLOW)
		return ret;
	if (flags & VDIMG_MAP_NOWAIT)
		return -EAGAIN;
	return vhdx_map_slow(img, v, offset, length, write, ext);
}

/* ---- committing metadata through the log ---- */

struct vhdx_pageset {
	u32 n;
	u64 off[VHDX_MAX_PAGES];
	u8 *buf[VHDX_MAX_PAGES];
};

/* The 4 KiB page at @off, read from the file the first time. */
static u8 *vhdx_page(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps, u64 off)
{
	u32 i;

	for (i = 0; i < ps->n; i++)
		if (ps->off[i] == off)
			return ps->buf[i];
	if (ps->n == VHDX_MAX_PAGES)
		return NULL;
	ps->buf[ps->n] = vdimg_zalloc(VHDX_LOG_SECTOR);
	if (!ps->buf[ps->n])
		return NULL;
	if (off + VHDX_LOG_SECTOR <= v->file_size &&
	    vdimg_file_read(img->file, ps->buf[ps->n], VHDX_LOG_SECTOR, off)) {
		vdimg_free(ps->buf[ps->n]);
		return NULL;
	}
	ps->off[ps->n] = off;
	return ps->buf[ps->n++];
}

static void vhdx_pageset_free(struct vhdx_pageset *ps)
{
	u32 i;

	for (i = 0; i < ps->n; i++)
		vdimg_free(ps->buf[i]);
	ps->n = 0;
}

/* Put BAT entry @idx = @val into the page set. */
static int vhdx_ps_bat(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps, u64 idx,
		       u64 val)
{
	u64 byte = idx * 8;
	u8 *p = vhdx_page(img, v, ps, v->bat_off + ALIGN_DOWN(byte, (u64)VHDX_LOG_SECTOR));
	__le64 x = cpu_to_le64(val);

	if (!p)
		return -ENOMEM;
	memcpy(p + byte % VHDX_LOG_SECTOR, &x, 8);
	return 0;
}

/* Set the bits of sectors [s, send) of the bitmap at file offset @bm into the page set. */
static int vhdx_ps_bits(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps, u64 bm,
			u32 s, u32 send)
{
	while (s < send) {
		u64 byte = bm + s / 8;
		u8 *p = vhdx_page(img, v, ps, ALIGN_DOWN(byte, (u64)VHDX_LOG_SECTOR));
		u32 in = byte % VHDX_LOG_SECTOR;

		if (!p)
			return -ENOMEM;
		/* whole bytes where possible */
		if (!(s & 7) && s + 8 <= send) {
			p[in] = 0xff;
			s += 8;
			continue;
		}
		p[in] |= 1U << (s & 7);
		s++;
	}
	return 0;
}

/*
 * Log the page set (data already synced by the caller), sync, then write the pages in place.
 * Holds io_lock.
 */
static int vhdx_log_commit(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps)
{
	struct vhdx_log_page pages[VHDX_MAX_PAGES];
	u32 i;
	int ret;

	if (!v->log_open) {
		u8 g[16];

		vhdx_new_guid(g);
		ret = vhdx_update_header(img, v, g, false, false);
		if (ret)
			return ret;
		v->log_open = true;
		v->log.pos = 0;
		v->log.seq = 1;
	}
	for (i = 0; i < ps->n; i++) {
		pages[i].off = ps->off[i];
		pages[i].data = ps->buf[i];
	}
	img->flags |= VDIMG_IMG_DIRTY;
	ret = vdimg_vhdx_log_write(img, &v->log, pages, ps->n, v->file_size);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	for (i = 0; !ret && i < ps->n; i++)
		ret = vdimg_file_write(img->file, ps->buf[i], VHDX_LOG_SECTOR, ps->off[i]);
	return ret;
}

static int vhdx_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct vhdx *v = img->priv;
	u64 blk = ext->cookie[0], kind = ext->cookie[1] & 0xff, boff = ext->cookie[1] & ~0xffULL;
	u64 start, within, c, sbpend = 0, bm;
	struct vhdx_pageset ps;
	int ret;

	if (!(ext->flags & VDIMG_EXT_NEW))
		return 0;
	start = blk << v->block_shift;
	if (WARN_ON_ONCE(blk >= v->nr_blocks || ext->offset < start ||
			 ext->offset + ext->length > start + v->block_size ||
			 !kind || kind > VHDX_COMMIT_BITS))
		return -EINVAL;
	within = ext->offset - start;
	c = blk / v->chunk_ratio;
	memset(&ps, 0, sizeof(ps));
	vdimg_mutex_lock(&v->io_lock);
	/* the data (and the grown file) must be durable before metadata points at it */
	ret = vdimg_file_sync(img->file);
	if (ret)
		goto out;
	if (kind != VHDX_COMMIT_FULL) {
		vdimg_mutex_lock(&v->lock);
		bm = vhdx_bm_off(v, blk);
		if (vhdx_state(vhdx_bat(v, vhdx_sbe(v, c))) != VHDX_SB_PRESENT)
			sbpend = v->sb_pend[c];
		vdimg_mutex_unlock(&v->lock);
		if (WARN_ON_ONCE(!bm)) {
			ret = -EIO;
			goto out;
		}
		ret = vhdx_ps_bits(img, v, &ps, bm, within / v->lss,
				   DIV_ROUND_UP(within + ext->length, v->lss));
		if (!ret && sbpend)
			ret = vhdx_ps_bat(img, v, &ps, vhdx_sbe(v, c), sbpend | VHDX_SB_PRESENT);
		if (ret)
			goto out;
	}
	if (kind != VHDX_COMMIT_BITS) {
		ret = vhdx_ps_bat(img, v, &ps, vhdx_pe(v, blk),
				  boff | (kind == VHDX_COMMIT_FULL ? VHDX_PAYLOAD_FULLY_PRESENT :
					  VHDX_PAYLOAD_PARTIALLY_PRESENT));
		if (ret)
			goto out;
	}
	ret = vhdx_log_commit(img, v, &ps);
	if (ret)
		goto out;
	vdimg_mutex_lock(&v->lock);
	if (sbpend) {
		v->bat[vhdx_sbe(v, c)] = cpu_to_le64(sbpend | VHDX_SB_PRESENT);
		v->sb_pend[c] = 0;
	}
	if (kind != VHDX_COMMIT_BITS)
		v->bat[vhdx_pe(v, blk)] = cpu_to_le64(boff | (kind == VHDX_COMMIT_FULL ?
				VHDX_PAYLOAD_FULLY_PRESENT : VHDX_PAYLOAD_PARTIALLY_PRESENT));
	if (kind != VHDX_COMMIT_FULL) {
		/* refresh the cached bits from the pages just written */
		u8 *cached = vhdx_bm_lookup(v, blk);

		if (kind == VHDX_COMMIT_PARTIAL && !cached) {
			u32 slot = blk % v->bm_slots;

			v->bm_blk[slot] = blk;
			cached = v->bm_data + (size_t)slot * v->bm_bytes;
			memset(cached, 0, v->bm_bytes);
		}
		if (cached) {
			u32 s = within / v->lss, send = DIV_ROUND_UP(within + ext->length, v->lss);

			for (; s < send; s++)
				cached[s >> 3] |= 1U << (s & 7);
		}
	}
	vdimg_mutex_unlock(&v->lock);
out:
	vdimg_mutex_unlock(&v->io_lock);
	vhdx_pageset_free(&ps);
	return ret;
}

/* A NEW extent was not written: its reserved space stays leaked, nothing points at it. */
static void vhdx_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
}

/* Everything logged is applied: make it durable and mark the log empty. */
static int vhdx_flush(struct vdimg_image *img)
{
	struct vhdx *v = img->priv;
	int ret = 0;

	if (v->read_only || (img->flags & VDIMG_IMG_READ_ONLY))
		return 0;
	vdimg_mutex_lock(&v->io_lock);
	if (v->log_open) {
		ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = vhdx_update_header(img, v, vhdx_zero_guid, false, false);
		if (!ret)
			v->log_open = false;
	}
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

/*
 * Discard / write-zeroes: whole blocks of a dynamic image become ZERO (or UNMAPPED) through the
 * log; partial ranges of present blocks are zeroed in place; differencing images zero in place and
 * otherwise refuse (the chain layer then writes zeros).
 */
static int vhdx_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	struct vhdx *v = img->priv;
	int ret = 0;

	if (v->read_only || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (offset >= img->size || length > img->size - offset || (offset | length) & 511)
		return -EINVAL;
	if (v->diff)
		return -EOPNOTSUPP;
	while (length && !ret) {
		u64 blk = offset >> v->block_shift, within = offset & (v->block_size - 1);
		u64 len = min_t(u64, length, v->block_size - within), e;
		bool whole = !within && (len == v->block_size || offset + len == img->size);
		struct vhdx_pageset ps;

		vdimg_mutex_lock(&v->lock);
		e = vhdx_bat(v, vhdx_pe(v, blk));
		vdimg_mutex_unlock(&v->lock);
		if (vhdx_read_kind(v, e) == VDIMG_EXT_ZERO)
			goto next;
		if (!whole || (v->params & VHDX_PARAM_LEAVE_ALLOCATED)) {
			if (vhdx_state(e) == VHDX_PAYLOAD_FULLY_PRESENT) {
				struct vdimg_extent ext;

				/* the first write after open renews the data write GUID */
				ret = vhdx_map(img, offset, len, VDIMG_MAP_WRITE, &ext);
				if (!ret)
					ret = vdimg_file_zero(img->file, vhdx_off(e) + within, len);
			}
			goto next;
		}
		memset(&ps, 0, sizeof(ps));
		vdimg_mutex_lock(&v->io_lock);
		if (!v->data_guid_done) {
			ret = vhdx_update_header(img, v, v->log.guid, true, false);
			if (!ret) {
				vdimg_mutex_lock(&v->lock);
				v->data_guid_done = true;
				vdimg_mutex_unlock(&v->lock);
			}
		}
		if (!ret)
			ret = vhdx_ps_bat(img, v, &ps, vhdx_pe(v, blk),
					  (flags & VDIMG_DISCARD_ZEROES) ? VHDX_PAYLOAD_ZERO :
					  VHDX_PAYLOAD_UNMAPPED);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = vhdx_log_commit(img, v, &ps);
		if (!ret) {
			vdimg_mutex_lock(&v->lock);
			v->bat[vhdx_pe(v, blk)] = cpu_to_le64((flags & VDIMG_DISCARD_ZEROES) ?
						VHDX_PAYLOAD_ZERO : VHDX_PAYLOAD_UNMAPPED);
			vdimg_mutex_unlock(&v->lock);
			/* the old space is now unused: give it back to the file system */
			if (vhdx_state(e) == VHDX_PAYLOAD_FULLY_PRESENT) {
				int err = vdimg_file_punch(img->file, vhdx_off(e), v->block_size);

				if (err && err != -EOPNOTSUPP)
					ret = err;
			}
		}
		vdimg_mutex_unlock(&v->io_lock);
		vhdx_pageset_free(&ps);
next:
		offset += len;
		length -= len;
	}
	return ret;
}

static int vhdx_verify_parent(struct vdimg_image *child, struct vdimg_image *parent)
{
	struct vhdx *v = child->priv;
	char want[40], got[40];

	if (!v->diff)
		return 0;
	vhdx_guid_fmt(want, v->parent_linkage);
	if (parent->fmt != child->fmt) {
		vdimg_err(child, "the parent %s is not a VHDX image; this image wants data write GUID %s",
			  parent->name ? parent->name : "", want);
		return -ESTALE;
	}
	if (memcmp(((struct vhdx *)parent->priv)->hdr.data_write_guid, v->parent_linkage, 16)) {
		vhdx_guid_fmt(got, ((struct vhdx *)parent->priv)->hdr.data_write_guid);
		vdimg_err(child, "parent linkage mismatch: the image wants data write GUID %s, %s has %s (the parent changed since this image was made)",
			  want, parent->name ? parent->name : "the parent", got);
		return -ESTALE;
	}
	if (parent->size < child->size)
		vdimg_warn(child, "the parent is smaller (%llu bytes) than this image (%llu)",
			   (unsigned long long)parent->size, (unsigned long long)child->size);
	return 0;
}

static void vhdx_close(struct vdimg_image *img)
{
	struct vhdx *v = img->priv;

	if (!v)
		return;
	if (!v->read_only && !(img->flags & VDIMG_IMG_READ_ONLY))
		vhdx_flush(img);
	vhdx_free(v);
	img->priv = NULL;
}

static bool vhdx_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return head_len >= 8 && !memcmp(head, "vhdxfile", 8);
}

#ifndef __KERNEL__
/* ---- userspace only: parent locators, create, check, describe ---- */
#include <stdio.h>
#include <unistd.h>
#include "vdimg-user.h"

static char *vhdx_u16_to_utf8(const u8 *p, size_t bytes)
{
	char *out = malloc(bytes / 2 * 3 + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 1 < bytes; i += 2) {
		u32 c = p[i] | p[i + 1] << 8;

		if (c >= 0xd800 && c < 0xdc00 && i + 3 < bytes) {
			u32 lo = p[i + 2] | p[i + 3] << 8;

			if (lo >= 0xdc00 && lo < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				i += 2;
			}
		}
		if ((c >= 0xd800 && c < 0xe000) || !c)
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
			*o++ = 0xf0 | c >> 18;
			*o++ = 0x80 | ((c >> 12) & 0x3f);
			*o++ = 0x80 | ((c >> 6) & 0x3f);
			*o++ = 0x80 | (c & 0x3f);
		}
	}
	*o = 0;
	return out;
}

/* UTF-8 (ASCII and 2/3-byte sequences) to UTF-16LE; returns bytes written. */
static size_t vhdx_utf8_to_u16(const char *s, u8 *out, size_t max)
{
	const u8 *p = (const u8 *)s;
	size_t n = 0;

	while (*p && n + 2 <= max) {
		u32 c = *p++;

		if (c >= 0xe0 && p[0] && p[1]) {
			c = (c & 0x0f) << 12 | (p[0] & 0x3f) << 6 | (p[1] & 0x3f);
			p += 2;
		} else if (c >= 0xc0 && p[0]) {
			c = (c & 0x1f) << 6 | (p[0] & 0x3f);
			p++;
		}
		out[n++] = c & 0xff;
		out[n++] = c >> 8;
	}
	return n;
}

static void vhdx_keep_locator(struct vhdx *v, const u8 *k, u32 kl, const u8 *val, u32 vl)
{
	char **nk, **nv;

	if (v->nr_loc >= 64)
		return;
	nk = realloc(v->loc_keys, sizeof(char *) * (v->nr_loc + 1));
	if (!nk)
		return;
	v->loc_keys = nk;
	nv = realloc(v->loc_vals, sizeof(char *) * (v->nr_loc + 1));
	if (!nv)
		return;
	v->loc_vals = nv;
	nk[v->nr_loc] = vhdx_u16_to_utf8(k, kl);
	nv[v->nr_loc] = vhdx_u16_to_utf8(val, vl);
	if (!nk[v->nr_loc] || !nv[v->nr_loc]) {
		free(nk[v->nr_loc]);
		free(nv[v->nr_loc]);
		return;
	}
	v->nr_loc++;
}

static void vhdx_free_locator(struct vhdx *v)
{
	u32 i;

	for (i = 0; i < v->nr_loc; i++) {
		free(v->loc_keys[i]);
		free(v->loc_vals[i]);
	}
	free(v->loc_keys);
	free(v->loc_vals);
	v->loc_keys = v->loc_vals = NULL;
	v->nr_loc = 0;
}

static const char *vhdx_loc_get(const struct vhdx *v, const char *key)
{
	u32 i;

	for (i = 0; i < v->nr_loc; i++)
		if (!strcmp(v->loc_keys[i], key))
			return v->loc_vals[i];
	return NULL;
}

/* A Windows path as a local one: backslashes become slashes, a leading ".\" goes. */
static void vhdx_local_path(char *d, const char *s, size_t n)
{
	size_t i;

	if (s[0] == '.' && (s[1] == '\\' || s[1] == '/'))
		s += 2;
	vdimg_strscpy(d, s, n);
	for (i = 0; d[i]; i++)
		if (d[i] == '\\')
			d[i] = '/';
}

static int vhdx_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct vhdx *v = img->priv;
	const char *rel = vhdx_loc_get(v, "relative_path");
	const char *abs = vhdx_loc_get(v, "absolute_win32_path");

	if (!v->diff)
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	ref->format = VDIMG_FMT_VHDX;
	if (rel) {
		vhdx_local_path(ref->path, rel, sizeof(ref->path));
		if (abs)
			vhdx_local_path(ref->alt_path, abs, sizeof(ref->alt_path));
	} else if (abs) {
		vhdx_local_path(ref->path, abs, sizeof(ref->path));
	} else {
		vdimg_err(img, "the parent locator has neither relative_path nor absolute_win32_path");
		return -ENOENT;
	}
	return 0;
}

/* @path relative to directory @dir (both absolute). */
static char *vhdx_relpath(const char *path, const char *dir)
{
	size_t common = 0, i, up = 0;
	char *out, *o;
	const char *rest;

	for (i = 0; path[i] && path[i] == dir[i]; i++)
		if (path[i] == '/')
			common = i + 1;
	if (!dir[i] && path[i] == '/')
		common = i + 1;
	rest = path + common;
	i = min(common, strlen(dir));
	if (dir[i])
		up++;
	for (; dir[i]; i++)
		if (dir[i] == '/' && dir[i + 1])
			up++;
	out = malloc(3 * up + strlen(rest) + 3);
	if (!out)
		return NULL;
	o = out;
	if (!up) {
		*o++ = '.';
		*o++ = '\\';
	}
	while (up--) {
		memcpy(o, "..\\", 3);
		o += 3;
	}
	strcpy(o, rest);
	for (; *o; o++)
		if (*o == '/')
			*o = '\\';
	return out;
}

static int vhdx_put_meta(u8 *table, u8 *region, u32 *next, int idx, const u8 *guid,
			 const void *data, u32 len, u32 flags)
{
	struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
					     idx * sizeof(*m));

	memcpy(m->item_id, guid, 16);
	m->offset = cpu_to_le32(*next);
	m->length = cpu_to_le32(len);
	m->flags = cpu_to_le32(flags);
	memcpy(region + *next, data, len);
	*next += ALIGN(len, 4096U);
	return 0;
}

static int vhdx_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	const char *variant = opts->variant ? opts->variant : (opts->parent ? "differencing" :
							       "dynamic");
	bool fixed = !strcmp(variant, "fixed"), diff = opts->parent != NULL;
	u32 bs = opts->block_size, lss = opts->lbs ? opts->lbs : 512, cr, nent;
	u64 size = opts->size, nblocks, nchunks, bat_len, log_off = VHDX_MiB, log_len = VHDX_MiB;
	u64 meta_off, bat_off, data_off, i;
	struct vhdx_header *h = NULL;
	u8 *meta = NULL, *buf = NULL, *bat = NULL;
	u8 parent_dwg[16];
	u32 next = VHDX_META_TABLE_SIZE, nmeta = 0, pflags;
	struct vdimg_image tmp = { .name = "create" };
	int ret = -ENOMEM;

	if (diff && opts->variant && strcmp(opts->variant, "differencing")) {
		vdimg_err(&tmp, "a VHDX with a parent is always differencing");
		return -EINVAL;
	}
	if (!diff && !fixed && strcmp(variant, "dynamic")) {
		vdimg_err(&tmp, "unknown VHDX variant \"%s\" (fixed, dynamic)", variant);
		return -EINVAL;
	}
	if (diff) {
		struct vdimg_image *p = opts->parent_img;

		if (!p || !p->fmt || p->fmt->id != VDIMG_FMT_VHDX) {
			vdimg_err(&tmp, "the parent of a VHDX differencing image must be a VHDX image");
			return -EINVAL;
		}
		memcpy(parent_dwg, ((struct vhdx *)p->priv)->hdr.data_write_guid, 16);
		if (!size)
			size = p->size;
		if (!opts->lbs)
			lss = p->lbs;
		if (!bs)
			bs = ((struct vhdx *)p->priv)->block_size;
	}
	if (!bs)
		bs = diff ? 2 * VHDX_MiB : 32 * VHDX_MiB;
	if (lss != 512 && lss != 4096) {
		vdimg_err(&tmp, "logical sector size %u: VHDX has 512 or 4096", lss);
		return -EINVAL;
	}
	if (bs < VHDX_BLOCK_MIN || bs > VHDX_BLOCK_MAX || !is_power_of_2(bs)) {
		vdimg_err(&tmp, "block size %u: VHDX needs a power of two from 1 MiB to 256 MiB", bs);
		return -EINVAL;
	}
	if (!size || size % lss || size > VHDX_MAX_SIZE) {
		vdimg_err(&tmp, "size %llu: must be a multiple of %u up to 64 TiB",
			  (unsigned long long)size, lss);
		return -EINVAL;
	}
	cr = (u32)((VHDX_SB_SECTORS * lss) / bs);
	nblocks = DIV_ROUND_UP(size, (u64)bs);
	nchunks = DIV_ROUND_UP(nblocks, (u64)cr);
	nent = diff ? nchunks * (cr + 1) : nblocks + (nblocks - 1) / cr;
	bat_len = ALIGN((u64)nent * 8, VHDX_MiB);
	meta_off = log_off + log_len;
	bat_off = meta_off + VHDX_MiB;
	data_off = bat_off + bat_len;

	h = calloc(1, sizeof(*h));
	meta = calloc(1, VHDX_MiB);
	buf = calloc(1, VHDX_REGION_SIZE);
	bat = calloc(1, bat_len);
	if (!h || !meta || !buf || !bat)
		goto out;

	/* file identifier */
	memcpy(buf, "vhdxfile", 8);
	vhdx_utf8_to_u16("vdimg", buf + 8, 512);
	ret = vdimg_file_write(f, buf, 520, 0);
	if (ret)
		goto out;

	/* metadata */
	{
		struct vhdx_meta_hdr *mh = (void *)meta;
		struct vhdx_file_params fp;
		__le64 vs = cpu_to_le64(size);
		__le32 l = cpu_to_le32(lss), ph = cpu_to_le32(lss);
		u8 p83[16];
		const u32 vreq = VHDX_META_IS_VIRTUAL | VHDX_META_IS_REQUIRED;

		memcpy(mh->signature, "metadata", 8);
		pflags = (fixed ? VHDX_PARAM_LEAVE_ALLOCATED : 0) | (diff ? VHDX_PARAM_HAS_PARENT : 0);
		fp.block_size = cpu_to_le32(bs);
		fp.flags = cpu_to_le32(pflags);
		vhdx_new_guid(p83);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_params, &fp, sizeof(fp),
			      VHDX_META_IS_REQUIRED);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_vsize, &vs, 8, vreq);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_page83, p83, 16, vreq);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_lss, &l, 4, vreq);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_pss, &ph, 4, vreq);
		if (diff) {
			u8 loc[4096];
			struct vhdx_locator_hdr *lh = (void *)loc;
			const char *keys[3] = { "parent_linkage", "relative_path",
						"absolute_win32_path" };
			char *vals[3] = { NULL, NULL, NULL }, *dir = vdimg_file_dir(f);
			char g[40], *absparent = realpath(opts->parent, NULL);
			u32 pos, k, nk = 0;

			vhdx_guid_fmt(g, parent_dwg);
			vals[0] = malloc(64);
			if (vals[0])
				snprintf(vals[0], 64, "{%s}", g);
			if (absparent && dir)
				vals[1] = vhdx_relpath(absparent, dir);
			if (absparent)
				vals[2] = strdup(absparent);
			free(dir);
			free(absparent);
			memset(loc, 0, sizeof(loc));
			memcpy(lh->locator_type, vhdx_guid_loctype, 16);
			pos = sizeof(*lh) + 3 * sizeof(struct vhdx_locator_entry);
			ret = 0;
			for (k = 0; k < 3; k++) {
				struct vhdx_locator_entry *le = (void *)(loc + sizeof(*lh) +
									 nk * sizeof(*le));
				size_t kl, vl;

				if (!vals[k]) {
					if (!k)
						ret = -ENOMEM;
					continue;
				}
				kl = vhdx_utf8_to_u16(keys[k], loc + pos, sizeof(loc) - pos);
				le->key_offset = cpu_to_le32(pos);
				le->key_length = cpu_to_le16(kl);
				pos += kl;
				vl = vhdx_utf8_to_u16(vals[k], loc + pos, sizeof(loc) - pos);
				le->value_offset = cpu_to_le32(pos);
				le->value_length = cpu_to_le16(vl);
				pos += vl;
				if (!kl || !vl || pos >= sizeof(loc) - 2)
					ret = -ENAMETOOLONG;
				nk++;
			}
			lh->count = cpu_to_le16(nk);
			for (k = 0; k < 3; k++)
				free(vals[k]);
			if (ret) {
				vdimg_err(&tmp, "cannot build the parent locator");
				goto out;
			}
			vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_parent, loc, pos,
				      VHDX_META_IS_REQUIRED);
		}
		mh->entry_count = cpu_to_le16(nmeta);
	}
	ret = vdimg_file_write(f, meta, VHDX_MiB, meta_off);
	if (ret)
		goto out;

	/* BAT (fixed: every block present, laid out in order after the BAT) */
	if (fixed) {
		for (i = 0; i < nblocks; i++) {
			__le64 e = cpu_to_le64((data_off + i * bs) | VHDX_PAYLOAD_FULLY_PRESENT);

			memcpy(bat + (i + i / cr) * 8, &e, 8);
		}
	}
	ret = vdimg_file_write(f, bat, bat_len, bat_off);
	if (ret)
		goto out;
	ret = vdimg_file_truncate(f, fixed ? data_off + nblocks * bs : data_off);
	if (ret)
		goto out;

	/* region tables */
	memset(buf, 0, VHDX_REGION_SIZE);
	{
		struct vhdx_region_hdr *rh = (void *)buf;
		struct vhdx_region_entry *r = (void *)(buf + sizeof(*rh));

		memcpy(rh->signature, "regi", 4);
		rh->entry_count = cpu_to_le32(2);
		memcpy(r[0].guid, vhdx_guid_bat, 16);
		r[0].file_offset = cpu_to_le64(bat_off);
		r[0].length = cpu_to_le32(bat_len);
		r[0].flags = cpu_to_le32(VHDX_REGION_REQUIRED);
		memcpy(r[1].guid, vhdx_guid_meta, 16);
		r[1].file_offset = cpu_to_le64(meta_off);
		r[1].length = cpu_to_le32(VHDX_MiB);
		r[1].flags = cpu_to_le32(VHDX_REGION_REQUIRED);
		rh->checksum = cpu_to_le32(vdimg_vhdx_crc(buf, VHDX_REGION_SIZE,
						    offsetof(struct vhdx_region_hdr, checksum)));
	}
	ret = vdimg_file_write(f, buf, VHDX_REGION_SIZE, VHDX_REGION1_OFF);
	if (!ret)
		ret = vdimg_file_write(f, buf, VHDX_REGION_SIZE, VHDX_REGION2_OFF);
	if (ret)
		goto out;

	/* headers last: sequence 0 and 1, the second current */
	memcpy(h->signature, "head", 4);
	vhdx_new_guid(h->file_write_guid);
	vhdx_new_guid(h->data_write_guid);
	h->version = cpu_to_le16(1);
	h->log_length = cpu_to_le32(log_len);
	h->log_offset = cpu_to_le64(log_off);
	for (i = 0; i < 2; i++) {
		h->seq = cpu_to_le64(i);
		h->checksum = 0;
		h->checksum = cpu_to_le32(vdimg_vhdx_crc(h, sizeof(*h),
						   offsetof(struct vhdx_header, checksum)));
		ret = vdimg_file_write(f, h, sizeof(*h), i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
		if (ret)
			goto out;
	}
	ret = vdimg_file_sync(f);
out:
	free(h);
	free(meta);
	free(buf);
	free(bat);
	return ret;
}

static int vhdx_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct vhdx *v = img->priv;
	u64 i, used_end = 0, fsize = vdimg_file_size(img->file);

	/* open already validated (and rejected) every BAT entry; report what is left */
	memset(res, 0, sizeof(*res));
	for (i = 0; i < v->nr_entries; i++) {
		u64 e = vhdx_bat(v, i);
		bool sb = (i % (v->chunk_ratio + 1)) == v->chunk_ratio;

		if (sb && vhdx_state(e) == VHDX_SB_PRESENT && v->diff)
			used_end = max(used_end, vhdx_off(e) + VHDX_SB_BLOCK);
		if (!sb && (vhdx_state(e) == VHDX_PAYLOAD_FULLY_PRESENT ||
			    vhdx_state(e) == VHDX_PAYLOAD_PARTIALLY_PRESENT))
			used_end = max(used_end, vhdx_off(e) + v->block_size);
	}
	used_end = max(used_end, v->bat_off + v->bat_len);
	used_end = max(used_end, v->meta_off + v->meta_len);
	used_end = max(used_end, v->log.offset + v->log.length);
	if (fsize > ALIGN(used_end, VHDX_MiB)) {
		res->leaks = (fsize - ALIGN(used_end, VHDX_MiB) + v->block_size - 1) / v->block_size;
		if ((flags & VDIMG_CHECK_REPAIR) && !v->read_only) {
			int ret;

			vdimg_mutex_lock(&v->io_lock);
			ret = 0;
			if (v->file_guid_pending)	/* the first change since open */
				ret = vhdx_update_header(img, v, v->log.guid, false, true);
			if (!ret)
				ret = vdimg_file_truncate(img->file, ALIGN(used_end, VHDX_MiB));
			if (!ret) {
				v->file_size = v->data_end = ALIGN(used_end, VHDX_MiB);
				res->fixed += res->leaks;
			}
			vdimg_mutex_unlock(&v->io_lock);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/* Append key @k = value @val (UTF-8) as a locator entry; @pos grows. -ENAMETOOLONG when full. */
static int vhdx_loc_put(u8 *loc, u32 cap, u32 idx, u32 *pos, const char *k, const char *val)
{
	struct vhdx_locator_entry *le = (void *)(loc + sizeof(struct vhdx_locator_hdr) +
						 idx * sizeof(*le));
	size_t kl, vl;

	kl = vhdx_utf8_to_u16(k, loc + *pos, cap - *pos);
	vl = kl ? vhdx_utf8_to_u16(val, loc + *pos + kl, cap - *pos - kl) : 0;
	if (!kl || !vl || *pos + kl + vl >= cap - 2 || kl > 0xffff || vl > 0xffff)
		return -ENAMETOOLONG;
	le->key_offset = cpu_to_le32(*pos);
	le->key_length = cpu_to_le16(kl);
	le->value_offset = cpu_to_le32(*pos + kl);
	le->value_length = cpu_to_le16(vl);
	*pos += kl + vl;
	return 0;
}

/*
 * Rebase: a new parent locator item (parent_linkage = the new parent's data write GUID,
 * relative_path and absolute_win32_path for @path; volume_path and parent_linkage2 dropped, other
 * entries kept), written through the log over the old item in the room the metadata region has
 * for it (-ENOSPC otherwise), with the table entry's new length.
 */
static int vhdx_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct vhdx *v = img->priv;
	const u32 cap = 60 * 1024;
	char g[40], lk[64], *dir = NULL, *pabs = NULL;
	char *rel = NULL;
	u8 *loc = NULL, *table = NULL;
	struct vhdx_meta_entry *me = NULL;
	struct vhdx_pageset ps;
	u32 pos, nk = 0, i, room, moff;
	ssize_t n;
	int ret;

	memset(&ps, 0, sizeof(ps));
	if (!parent) {
		vdimg_err(img, "a differencing VHDX cannot drop its parent");
		return -EOPNOTSUPP;
	}
	if (!v->diff) {
		vdimg_err(img, "is not a differencing image: it has no parent to change");
		return -EINVAL;
	}
	if (v->read_only || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (parent->fmt != img->fmt) {
		vdimg_err(img, "the parent of a VHDX differencing image must be a VHDX image, %s is %s",
			  parent->name ? parent->name : "the new parent", parent->fmt->name);
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
	rel = vhdx_relpath(pabs, dir);
	loc = calloc(1, cap);
	table = malloc(VHDX_META_TABLE_SIZE);
	if (!rel || !loc || !table)
		goto out;

	/* the new item */
	memcpy(((struct vhdx_locator_hdr *)loc)->locator_type, vhdx_guid_loctype, 16);
	pos = sizeof(struct vhdx_locator_hdr) + (3 + v->nr_loc) * sizeof(struct vhdx_locator_entry);
	vhdx_guid_fmt(g, ((struct vhdx *)parent->priv)->hdr.data_write_guid);
	snprintf(lk, sizeof(lk), "{%s}", g);
	ret = vhdx_loc_put(loc, cap, nk++, &pos, "parent_linkage", lk);
	if (!ret)
		ret = vhdx_loc_put(loc, cap, nk++, &pos, "relative_path", rel);
	if (!ret)
		ret = vhdx_loc_put(loc, cap, nk++, &pos, "absolute_win32_path", pabs);
	for (i = 0; !ret && i < v->nr_loc; i++) {
		const char *k = v->loc_keys[i];

		if (!strcmp(k, "parent_linkage") || !strcmp(k, "relative_path") ||
		    !strcmp(k, "absolute_win32_path") ||
		    !strcmp(k, "volume_path") || !strcmp(k, "parent_linkage2"))
			continue;
		ret = vhdx_loc_put(loc, cap, nk++, &pos, k, v->loc_vals[i]);
	}
	if (ret) {
		vdimg_err(img, "the new parent locator does not fit in an item");
		ret = -ENOSPC;
		goto out;
	}
	((struct vhdx_locator_hdr *)loc)->count = cpu_to_le16(nk);
	/* the entries' strings follow the entries actually used */
	if (nk < 3 + v->nr_loc) {
		u32 gap = (3 + v->nr_loc - nk) * sizeof(struct vhdx_locator_entry);
		u32 first = sizeof(struct vhdx_locator_hdr) + (3 + v->nr_loc) *
			    sizeof(struct vhdx_locator_entry);

		memmove(loc + first - gap, loc + first, pos - first);
		for (i = 0; i < nk; i++) {
			struct vhdx_locator_entry *le = (void *)(loc + sizeof(struct vhdx_locator_hdr) +
								 i * sizeof(*le));

			le->key_offset = cpu_to_le32(le32_to_cpu(le->key_offset) - gap);
			le->value_offset = cpu_to_le32(le32_to_cpu(le->value_offset) - gap);
		}
		pos -= gap;
		memset(loc + pos, 0, gap);
	}

	/* where the old item is, and how much room it has before the next item */
	ret = vdimg_vhdx_meta_read(img, &v->log, table, VHDX_META_TABLE_SIZE, v->meta_off);
	if (ret)
		goto out;
	n = le16_to_cpu(((struct vhdx_meta_hdr *)table)->entry_count);
	for (i = 0; i < n && i < VHDX_META_MAX; i++) {
		struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
						     i * sizeof(*m));

		if (!memcmp(m->item_id, vhdx_guid_parent, 16) &&
		    !(le32_to_cpu(m->flags) & VHDX_META_IS_USER))
			me = m;
	}
	if (!me) {
		ret = vdimg_corrupt(img, "the parent locator is not in the metadata table");
		goto out;
	}
	moff = le32_to_cpu(me->offset);
	room = v->meta_len - moff;
	for (i = 0; i < n && i < VHDX_META_MAX; i++) {
		struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
						     i * sizeof(*m));
		u32 o = le32_to_cpu(m->offset);

		if (m != me && le32_to_cpu(m->length) && o >= moff)
			room = min(room, o - moff);
		else if (m != me && le32_to_cpu(m->length) && o + le32_to_cpu(m->length) > moff)
			room = 0;
	}
	if (pos > room || pos > (VHDX_MAX_PAGES - 2) * VHDX_LOG_SECTOR) {
		vdimg_err(img, "the parent locator needs %u bytes, the metadata region has room for %u",
			  pos, room);
		ret = -ENOSPC;
		goto out;
	}

	/* through the log: the item's pages and the table entry's page */
	vdimg_mutex_lock(&v->io_lock);
	for (i = 0; i < pos && !ret; ) {
		u64 at = v->meta_off + moff + i, page = ALIGN_DOWN(at, (u64)VHDX_LOG_SECTOR);
		u32 k = min_t(u32, pos - i, page + VHDX_LOG_SECTOR - at);
		u8 *p = vhdx_page(img, v, &ps, page);

		if (!p) {
			ret = -ENOMEM;
			break;
		}
		memcpy(p + (at - page), loc + i, k);
		i += k;
	}
	if (!ret) {
		u64 at = v->meta_off + ((u8 *)&me->length - table);
		u64 page = ALIGN_DOWN(at, (u64)VHDX_LOG_SECTOR);
		u8 *p = vhdx_page(img, v, &ps, page);
		__le32 len = cpu_to_le32(pos);

		if (p)
			memcpy(p + (at - page), &len, 4);
		else
			ret = -ENOMEM;
	}
	if (!ret)
		ret = vhdx_log_commit(img, v, &ps);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret) {
		vhdx_free_locator(v);
		v->has_linkage = false;
		ret = vhdx_parse_locator(img, v, loc, pos);
		memcpy(img->parent_uuid, v->parent_linkage, 16);
	}
	vdimg_mutex_unlock(&v->io_lock);
out:
	vhdx_pageset_free(&ps);
	free(table);
	free(loc);
	free(rel);
	free(pabs);
	free(dir);
	return ret;
}

static void vhdx_describe(struct vdimg_image *img,
			  void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	static const char *const st_names[8] = { "not-present", "undefined", "zero", "unmapped",
						 "?4", "?5", "fully-present", "partially-present" };
	struct vhdx *v = img->priv;
	char buf[600], g[40];
	u64 counts[8] = { 0 }, i, sbs = 0;
	int n = 0;

	emit(ctx, "variant", img->variant);
	snprintf(buf, sizeof(buf), "%u", v->block_size);
	emit(ctx, "block-size", buf);
	snprintf(buf, sizeof(buf), "%u", v->lss);
	emit(ctx, "logical-sector-size", buf);
	snprintf(buf, sizeof(buf), "%u", v->pss);
	emit(ctx, "physical-sector-size", buf);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)img->size);
	emit(ctx, "virtual-size", buf);
	emit(ctx, "leave-blocks-allocated", v->params & VHDX_PARAM_LEAVE_ALLOCATED ? "yes" : "no");
	vhdx_guid_fmt(g, v->page83);
	emit(ctx, "page83-id", g);
	snprintf(buf, sizeof(buf), "%llu (at %llu)", (unsigned long long)le64_to_cpu(v->hdr.seq),
		 (unsigned long long)v->hdr_off);
	emit(ctx, "header-sequence", buf);
	vhdx_guid_fmt(g, v->hdr.file_write_guid);
	emit(ctx, "file-write-guid", g);
	vhdx_guid_fmt(g, v->hdr.data_write_guid);
	emit(ctx, "data-write-guid", g);
	vhdx_guid_fmt(g, v->hdr.log_guid);
	emit(ctx, "log-guid", g);
	snprintf(buf, sizeof(buf), "[%llu, +%u)", (unsigned long long)v->log.offset, v->log.length);
	emit(ctx, "log", buf);
	switch (v->log_state) {
	case VHDX_LOGST_REPLAYED:
		snprintf(buf, sizeof(buf), "replayed %u entries into the file at open",
			 v->log.replayed_entries);
		break;
	case VHDX_LOGST_MEMORY:
		snprintf(buf, sizeof(buf), "pending: %u entries, replayed in memory only (a writable open replays them)",
			 v->log.replayed_entries);
		break;
	case VHDX_LOGST_STALE:
		snprintf(buf, sizeof(buf), "log GUID set but no valid entries (nothing to replay)");
		break;
	default:
		snprintf(buf, sizeof(buf), "empty");
	}
	emit(ctx, "log-state", buf);
	snprintf(buf, sizeof(buf), "[%llu, +%u)", (unsigned long long)v->bat_off, v->bat_len);
	emit(ctx, "bat-region", buf);
	snprintf(buf, sizeof(buf), "[%llu, +%u)", (unsigned long long)v->meta_off, v->meta_len);
	emit(ctx, "metadata-region", buf);
	snprintf(buf, sizeof(buf), "%u", v->chunk_ratio);
	emit(ctx, "chunk-ratio", buf);
	for (i = 0; i < v->nr_blocks; i++)
		counts[vhdx_state(vhdx_bat(v, vhdx_pe(v, i)))]++;
	for (i = 0; i < v->nr_chunks && v->diff; i++)
		sbs += vhdx_state(vhdx_bat(v, vhdx_sbe(v, i))) == VHDX_SB_PRESENT;
	buf[0] = 0;
	for (i = 0; i < 8; i++)
		if (counts[i])
			n += snprintf(buf + n, sizeof(buf) - n, "%s%s=%llu", n ? " " : "",
				      st_names[i], (unsigned long long)counts[i]);
	emit(ctx, "blocks", buf);
	if (v->diff) {
		snprintf(buf, sizeof(buf), "%llu/%llu", (unsigned long long)sbs,
			 (unsigned long long)v->nr_chunks);
		emit(ctx, "sector-bitmap-blocks", buf);
		vhdx_guid_fmt(g, v->parent_linkage);
		emit(ctx, "parent-linkage", g);
		for (i = 0; i < v->nr_loc; i++) {
			snprintf(buf, sizeof(buf), "%s=%s", v->loc_keys[i], v->loc_vals[i]);
			emit(ctx, "parent-locator", buf);
		}
	}
}
#endif /* !__KERNEL__ */

const struct vdimg_format vdimg_vhdx_format = {
	.name = "vhdx",
	.id = VDIMG_FMT_VHDX,
	.caps = VDIMG_CAP_SAME_SIZE_PARENT,
	.probe = vhdx_probe,
	.open = vhdx_open,
	.close = vhdx_close,
	.map = vhdx_map,
	.commit = vhdx_commit,
	.abort = vhdx_abort,
	.discard = vhdx_discard,
	.flush = vhdx_flush,
	.verify_parent = vhdx_verify_parent,
};

#ifndef __KERNEL__
const struct vdimg_tool_ops vdimg_vhdx_tool_ops = {
	.id = VDIMG_FMT_VHDX,
	.create = vhdx_create,
	.check = vhdx_check,
	.parent_ref = vhdx_parent_ref,
	.set_parent = vhdx_set_parent,
	.describe = vhdx_describe,
};
#endif
