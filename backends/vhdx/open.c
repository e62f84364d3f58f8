// SPDX-License-Identifier: GPL-2.0
/*
 * VHDX open and close: Hyper-V's Virtual Hard Disk v2 images, fixed, dynamic and differencing
 * (MS-VHDX). Open validates the file identifier, the two headers, the region table, the metadata
 * items (with the parent locator) and the BAT against the file and each other, and replays a
 * pending metadata log (into the file when writable, into memory when read-only; log.c). Also the
 * parent check, probe and the struct vdimg_format of vhdx. Kernel-shared: compiled into the module
 * and the userspace library; only include/vdimg/platform.h services here, no blk-mq, no libc.
 * Create, check, describe and set_parent are userspace-only, in tools/lib/formats/vhdx/.
 */
#include "vhdx.h"

const u8 vhdx_guid_bat[16] = VHDX_GUID_BAT;
const u8 vhdx_guid_meta[16] = VHDX_GUID_METADATA;
const u8 vhdx_guid_params[16] = VHDX_GUID_FILE_PARAMS;
const u8 vhdx_guid_vsize[16] = VHDX_GUID_VDISK_SIZE;
const u8 vhdx_guid_page83[16] = VHDX_GUID_PAGE83;
const u8 vhdx_guid_lss[16] = VHDX_GUID_LOGICAL_SS;
const u8 vhdx_guid_pss[16] = VHDX_GUID_PHYSICAL_SS;
const u8 vhdx_guid_parent[16] = VHDX_GUID_PARENT_LOC;
const u8 vhdx_guid_loctype[16] = VHDX_GUID_LOC_TYPE;
const u8 vhdx_zero_guid[16];

void vhdx_guid_fmt(char *out, const u8 *g)
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

void vhdx_new_guid(u8 *g)
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
int vhdx_update_header(struct vdimg_image *img, struct vhdx *v, const u8 *log_guid,
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
	h->checksum = cpu_to_le32(vdimg_vhdx_crc(h, sizeof(*h),
						 offsetof(struct vhdx_header, checksum)));
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
		    vdimg_vhdx_crc(buf, VHDX_REGION_SIZE,
				   offsetof(struct vhdx_region_hdr, checksum)) ==
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
		const struct vhdx_region_entry *r =
			(const void *)(buf + sizeof(*rh) + i * sizeof(*r));
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
			ret = vdimg_corrupt(img,
					    "%s region [%llu, +%llu) is misaligned or outside the file (%llu bytes)",
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

/* Parse the parent locator item @p (@len bytes). */
int vhdx_parse_locator(struct vdimg_image *img, struct vhdx *v, const u8 *p, u32 len)
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
		if (VDIMG_LIBRARY)
			vhdx_keep_locator(v, p + ko, kl, p + vo, vl);
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
		const struct vhdx_meta_entry *m =
			(const void *)(buf + sizeof(*mh) + i * sizeof(*m));
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
			    !(le32_to_cpu(o->flags) & VHDX_META_IS_USER) ==
			    !(flags & VHDX_META_IS_USER)) {
				ret = vdimg_corrupt(img, "metadata item listed twice");
				goto out;
			}
		}
		if (len && (off < VHDX_META_TABLE_SIZE || len > VHDX_MiB ||
			    (u64)off + len > v->meta_len)) {
			ret = vdimg_corrupt(img,
					    "metadata item %u [%u, +%u) is outside the metadata region",
					    i, off, len);
			goto out;
		}
		if (kind < 0 || (flags & VHDX_META_IS_USER)) {
			if (flags & VHDX_META_IS_REQUIRED) {
				vhdx_guid_fmt(g, m->item_id);
				vdimg_err(img, "unknown required metadata item %s is not supported",
					  g);
				ret = -EOPNOTSUPP;
				goto out;
			}
			continue;
		}
		{
			static const u32 want[6] = { 8, 8, 16, 4, 4, 0 };

			if ((want[kind] && len != want[kind]) || (!want[kind] && !len)) {
				ret = vdimg_corrupt(img, "metadata item %u has a bad length %u", i,
						    len);
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
				    !(seen & 1) ? "file parameters" :
				    !(seen & 2) ? "virtual disk size" :
				    !(seen & 4) ? "page 83 data" :
				    !(seen & 8) ? "logical sector size" : "physical sector size");
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
		ret = vdimg_corrupt(img,
				    "virtual disk size %llu is zero, not a multiple of %u or over 64 TiB",
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
	u64 end;

	/* off + len could wrap for an entry near 2^64 (the BAT holds 44 bits of megabytes) */
	if (off < VHDX_HEADER_SECTION || off > fsize || len > fsize - off || off % VHDX_MiB)
		return false;
	end = off + len;
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
				ret = vdimg_corrupt(img,
						    "BAT entry %llu: bad sector bitmap state %u",
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
					ret = vdimg_corrupt(img,
							    "BAT entry %llu past the disk end is in use",
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
					ret = vdimg_corrupt(img,
							    "block %llu is partially present in an image without a parent",
							    (unsigned long long)blk);
					goto out;
				}
				if (vhdx_state(vhdx_bat(v, vhdx_sbe(v, blk / v->chunk_ratio))) !=
				    VHDX_SB_PRESENT) {
					ret = vdimg_corrupt(img,
							    "block %llu is partially present but its chunk has no sector bitmap",
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
			ret = vdimg_corrupt(img,
					    "BAT entry %llu points at [%llu, +%llu): outside the file or into metadata",
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
	/*
	 * The spec lets the file be larger than what its regions and BAT reference: on a block
	 * device (larger than the image) the image ends where they do, the device's size is not
	 * the place for new blocks.
	 */
	if (v->fixed_file)
		fsize = 0;
	v->data_end = ALIGN(max_t(u64, max(fsize, max_end), VHDX_HEADER_SECTION), VHDX_MiB);
	v->data_end = max(v->data_end, ALIGN(v->bat_off + v->bat_len, VHDX_MiB));
	v->data_end = max(v->data_end, ALIGN(v->meta_off + v->meta_len, VHDX_MiB));
	v->data_end = max(v->data_end, ALIGN(v->log.offset + v->log.length, VHDX_MiB));
	v->file_size = v->fixed_file ? v->data_end : fsize;
out:
	vdimg_free(used);
	return ret;
}

/* ---- open and close ---- */

static void vhdx_free(struct vhdx *v)
{
	vdimg_vhdx_log_free_overlay(&v->log);
	vdimg_free(v->bat);
	vdimg_free(v->sb_pend);
	vdimg_free(v->bm_blk);
	vdimg_free(v->bm_data);
	if (VDIMG_LIBRARY)
		vhdx_free_locator(v);
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
	v->fixed_file = vdimg_file_fixed_size(img->file);
	v->dev_size = fsize;
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
			bool meta = (o->off >= v->bat_off &&
				     o->off + o->len <= v->bat_off + v->bat_len) ||
				    (o->off >= v->meta_off &&
				     o->off + o->len <= v->meta_off + v->meta_len) ||
				    (o->off >= VHDX_REGION1_OFF &&
				     o->off + o->len <= VHDX_HEADER_SECTION);

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
			fixed = vhdx_state(vhdx_bat(v, vhdx_pe(v, i))) ==
				VHDX_PAYLOAD_FULLY_PRESENT;
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
		 * GUID left in the header (a replayed log) is cleared now, with a new file write
		 * GUID; otherwise nothing is written until the first change (every change starts
		 * with a header update, which then takes the new file write GUID), so an open that
		 * a chain check refuses, or a writable open that never writes, leaves the file
		 * untouched.
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

static u64 vhdx_metadata_bytes(struct vdimg_image *img)
{
	struct vhdx *v = img->priv;
	u64 n;

	/* the BAT, the per-chunk pending sector bitmaps, the bitmap cache (differencing) */
	vdimg_mutex_lock(&v->lock);
	n = v->nr_entries * 8 + v->nr_chunks * sizeof(u64) +
	    (v->bm_data ? (u64)v->bm_slots * (sizeof(u64) + v->bm_bytes) : 0);
	vdimg_mutex_unlock(&v->lock);
	return n;
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

/*
 * Online grow of a dynamic image (and the offline resize's grow): the BAT grows inside its region
 * (sized at creation: vdimgctl, qemu and Hyper-V round it up to 1 MiB, 131072 entries, which maps 4
 * TiB of 32 MiB blocks). Three steps, each durable before the next: the BAT entries the new size
 * brings in are made NOT_PRESENT through the log (where something was left there), the stale bytes
 * of the old last block past the old end are zeroed in place, then the virtual disk size item
 * changes in a log entry of its own; a flush then marks the log empty. A crash replays the log to
 * the old or the new size (the extra free entries of the first step are valid either way).
 */
static int vhdx_grow(struct vdimg_image *img, u64 new_size)
{
	struct vhdx *v = img->priv;
	u64 old = img->size, entries, room;
	int ret;

	if (v->read_only || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (new_size <= old || new_size % v->lss)
		return -EINVAL;
	if (v->diff) {
		vdimg_err(img, "cannot grow a differencing VHDX: it keeps its parent's size");
		return -EOPNOTSUPP;
	}
	if (v->params & VHDX_PARAM_LEAVE_ALLOCATED) {
		vdimg_err(img, "cannot grow a fixed VHDX (every block stays allocated): convert it to dynamic first");
		return -EOPNOTSUPP;
	}
	if (new_size > VHDX_MAX_SIZE) {
		vdimg_err(img, "cannot grow past %llu bytes, the VHDX limit (64 TiB)",
			  (unsigned long long)VHDX_MAX_SIZE);
		return -EFBIG;
	}
	entries = vhdx_entries_for(v, new_size);
	if (entries * 8 > min_t(u64, v->bat_len, VHDX_BAT_MAX_BYTES)) {
		/* payload blocks the region addresses, less its interleaved bitmap entries */
		room = min_t(u64, v->bat_len, VHDX_BAT_MAX_BYTES) / 8;
		room -= room / (v->chunk_ratio + 1);
		vdimg_err(img, "cannot grow past %llu bytes: the BAT region at %llu (%u bytes) has room for %llu blocks of %u bytes, %llu entries are needed (it cannot move, offline resize neither: convert to a new image)",
			  (unsigned long long)min_t(u64, room * v->block_size, VHDX_MAX_SIZE),
			  (unsigned long long)v->bat_off, v->bat_len, (unsigned long long)room,
			  v->block_size, (unsigned long long)entries);
		return -EFBIG;
	}
	ret = vhdx_resize_bat(img, new_size);
	if (ret)
		return ret;
	img->size = new_size;
	ret = vdimg_grow_zero_new(img, old);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = vhdx_write_vsize(img, new_size);
	if (!ret)
		ret = vhdx_flush(img);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret) {
		/* the longer BAT in memory holds only free entries past the old end */
		img->size = old;
	}
	return ret;
}

static bool vhdx_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return head_len >= 8 && !memcmp(head, "vhdxfile", 8);
}

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
	.grow = vhdx_grow,
	.metadata_bytes = vhdx_metadata_bytes,
};
