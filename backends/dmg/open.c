// SPDX-License-Identifier: GPL-2.0
/*
 * The DMG backend (Apple UDIF, read-only): probe, open and close. Open reads the "koly" trailer in
 * the last 512 bytes, finds the "blkx" resources in the XML property list it points to (a bounded,
 * strict scan for <key>blkx</key> and the base64 <data> elements of its array, decoded here), and
 * turns their "mish" tables into one sorted chunk list covering the disk from sector 0 without
 * gaps or overlaps. Every offset and count is checked against the file before use. The master
 * checksum (CRC-32 over the tables' checksums) is verified when present (a mismatch only warns
 * when opened with VDIMG_OPEN_FORCE_CSUM). Images without a property list give their tables in
 * the binary resource fork instead (a run of length-prefixed resources, the mish ones taken).
 * Unknown chunk types and encrypted images are refused by name. The whole disk (with the
 * partition map the image carries) is the device. Kernel-shared; mapping and decoding are in
 * map.c, adc.c, bzip2.c, lzfse.c and lzma.c, info and check in tools/lib/formats/dmg.c.
 */
#include "dmg.h"

static const struct {
	u32 type;
	const char *name;
} dmg_chunk_names[] = {
	{ DMG_CHUNK_ZERO, "zero" },
	{ DMG_CHUNK_RAW, "raw" },
	{ DMG_CHUNK_IGNORE, "ignore" },
	{ DMG_CHUNK_ADC, "ADC (UDCO)" },
	{ DMG_CHUNK_ZLIB, "zlib (UDZO)" },
	{ DMG_CHUNK_BZIP2, "bzip2 (UDBZ)" },
	{ DMG_CHUNK_LZFSE, "LZFSE (ULFO)" },
	{ DMG_CHUNK_LZMA, "LZMA (ULMO)" },
	{ DMG_CHUNK_COMMENT, "comment" },
	{ DMG_CHUNK_END, "terminator" },
};

const char *dmg_chunk_type_name(u32 type)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(dmg_chunk_names); i++)
		if (dmg_chunk_names[i].type == type)
			return dmg_chunk_names[i].name;
	return NULL;
}

static bool dmg_compressed(u32 type)
{
	return type == DMG_CHUNK_ADC || type == DMG_CHUNK_ZLIB || type == DMG_CHUNK_BZIP2 ||
	       type == DMG_CHUNK_LZFSE || type == DMG_CHUNK_LZMA;
}

static bool dmg_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return file_size >= 512 && !memcmp(tail, "koly", 4);
}

/* ---- base64 and the property list ---- */

static int dmg_b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Decode the base64 text [@s, @s + @len) (whitespace allowed between characters, '=' only as
 * padding at the end) into @out (at most @cap bytes). Returns the decoded length or -1.
 */
static long dmg_b64_decode(const char *s, size_t len, u8 *out, size_t cap)
{
	u32 acc = 0;
	size_t i, n = 0;
	int bits = 0, pad = 0;

	for (i = 0; i < len; i++) {
		char c = s[i];
		int v;

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		v = dmg_b64_value(c);
		if (v < 0 || pad)
			return -1;
		acc = (acc << 6) | v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == cap)
				return -1;
			out[n++] = (u8)(acc >> bits);
		}
	}
	if (pad > 2 || bits >= 6)
		return -1;
	return n;
}

/* The first occurrence of @needle in [@p, @end), or NULL. */
static const char *dmg_find(const char *p, const char *end, const char *needle)
{
	size_t n = strlen(needle);

	for (; p && (size_t)(end - p) >= n; p++)
		if (*p == *needle && !memcmp(p, needle, n))
			return p;
	return NULL;
}

/* ---- mish tables ---- */

static int dmg_add_table(struct dmg *d, const u8 *buf, size_t len, u32 *cap)
{
	struct vdimg_image *img = d->img;
	const struct dmg_mish *m = (const void *)buf;
	u64 first, nsec, data_off, base;
	u32 n, i;
	struct dmg_table *t;

	if (len < sizeof(*m) || memcmp(m->magic, "mish", 4))
		return vdimg_corrupt(img, "blkx resource %u is not a mish table", d->nr_tables);
	if (be32_to_cpu(m->version) != 1)
		return vdimg_corrupt(img, "mish table %u has version %u", d->nr_tables,
				     be32_to_cpu(m->version));
	n = be32_to_cpu(m->nr_chunks);
	if (n > (len - sizeof(*m)) / sizeof(struct dmg_chunk_disk))
		return vdimg_corrupt(img, "mish table %u: %u chunks do not fit in %zu bytes",
				     d->nr_tables, n, len);
	first = be64_to_cpu(m->first_sector);
	nsec = be64_to_cpu(m->sector_count);
	data_off = be64_to_cpu(m->data_offset);
	if (check_add_overflow(be64_to_cpu(d->koly.data_fork_offset), data_off, &base) ||
	    base > d->koly_off || first > U64_MAX / DMG_SECTOR || nsec > U64_MAX / DMG_SECTOR ||
	    first + nsec > U64_MAX / DMG_SECTOR)
		return vdimg_corrupt(img, "mish table %u: bad sectors or data offset",
				     d->nr_tables);
	/* room doubles at 16, 32, 64...: linear time whatever the number of tables */
	if (d->nr_tables >= 16 ? is_power_of_2(d->nr_tables) : !d->nr_tables) {
		u32 room = d->nr_tables ? d->nr_tables * 2 : 16;
		struct dmg_table *nt = vdimg_zalloc((size_t)room * sizeof(*nt));

		if (!nt)
			return -ENOMEM;
		if (d->tables)
			memcpy(nt, d->tables, d->nr_tables * sizeof(*nt));
		vdimg_free(d->tables);
		d->tables = nt;
	}
	t = &d->tables[d->nr_tables];
	t->first_sector = first;
	t->sector_count = nsec;
	t->csum_type = be32_to_cpu(m->checksum.type);
	t->csum_bits = be32_to_cpu(m->checksum.bits);
	t->csum = be32_to_cpu(m->checksum.data[0]);

	for (i = 0; i < n; i++) {
		const struct dmg_chunk_disk *c = (const void *)(buf + sizeof(*m) + i * sizeof(*c));
		u32 type = be32_to_cpu(c->type);
		u64 s = be64_to_cpu(c->sector), cnt = be64_to_cpu(c->sector_count);
		u64 off = be64_to_cpu(c->offset), clen = be64_to_cpu(c->length), end;
		struct dmg_chunk *k;

		if (type == DMG_CHUNK_END)
			break;
		if (type == DMG_CHUNK_COMMENT)
			continue;
		if (type != DMG_CHUNK_ZERO && type != DMG_CHUNK_RAW && type != DMG_CHUNK_IGNORE &&
		    !dmg_compressed(type)) {
			const char *name = dmg_chunk_type_name(type);

			if (name)
				vdimg_err(img, "%s chunks are not supported", name);
			else
				vdimg_err(img, "chunk type 0x%08x is not supported", type);
			return -EOPNOTSUPP;
		}
		if (!cnt)
			continue;
		if (s > nsec || cnt > nsec - s)
			return vdimg_corrupt(img,
					     "mish table %u chunk %u: sectors %llu+%llu outside the table's %llu",
					     d->nr_tables, i, (unsigned long long)s,
					     (unsigned long long)cnt, (unsigned long long)nsec);
		if (type == DMG_CHUNK_RAW || dmg_compressed(type)) {
			if (check_add_overflow(base, off, &off) ||
			    check_add_overflow(off, clen, &end) || end > d->koly_off || !clen)
				return vdimg_corrupt(img,
						     "mish table %u chunk %u: data at %llu+%llu is not inside the file",
						     d->nr_tables, i, (unsigned long long)off,
						     (unsigned long long)clen);
			if (type == DMG_CHUNK_RAW && clen < cnt * DMG_SECTOR)
				return vdimg_corrupt(img,
						     "mish table %u chunk %u: %llu raw sectors in %llu bytes",
						     d->nr_tables, i, (unsigned long long)cnt,
						     (unsigned long long)clen);
			if (dmg_compressed(type) && (cnt > DMG_MAX_CHUNK_SECTORS ||
						     clen > cnt * DMG_SECTOR * 2 + 4096))
				return vdimg_corrupt(img,
						     "mish table %u chunk %u: compressed chunk of %llu sectors in %llu bytes is out of bounds",
						     d->nr_tables, i, (unsigned long long)cnt,
						     (unsigned long long)clen);
		}
		if (d->nr_chunks == DMG_MAX_CHUNKS)
			return vdimg_corrupt(img, "more than %lu chunks", DMG_MAX_CHUNKS);
		if (d->nr_chunks == *cap) {
			u32 ncap = *cap ? min(*cap * 2, DMG_MAX_CHUNKS) : 256;
			struct dmg_chunk *nc = vdimg_zalloc((size_t)ncap * sizeof(*nc));

			if (!nc)
				return -ENOMEM;
			if (d->chunks)
				memcpy(nc, d->chunks, (size_t)d->nr_chunks * sizeof(*nc));
			vdimg_free(d->chunks);
			d->chunks = nc;
			*cap = ncap;
		}
		k = &d->chunks[d->nr_chunks++];
		k->sector = first + s;
		k->count = cnt;
		k->offset = off;
		k->length = clen;
		k->type = type;
		k->table = d->nr_tables;
		if (type == DMG_CHUNK_BZIP2)
			d->has_bzip2 = true;
		if (type == DMG_CHUNK_LZFSE)
			d->has_lzfse = true;
		if (type == DMG_CHUNK_LZMA)
			d->has_lzma = true;
		if (dmg_compressed(type)) {
			d->max_chunk_bytes = max_t(u32, d->max_chunk_bytes, cnt * DMG_SECTOR);
			d->max_stored = max_t(u32, d->max_stored, clen);
		}
	}
	d->nr_tables++;
	return 0;
}

/* The blkx array of the property list: each <data> element is a base64 mish table. */
static int dmg_read_plist(struct dmg *d)
{
	struct vdimg_image *img = d->img;
	u64 off = be64_to_cpu(d->koly.xml_offset), len = be64_to_cpu(d->koly.xml_length);
	const char *p, *end, *arr_end;
	u32 cap = 0;
	char *text;
	u8 *mish;
	int ret;

	if (!len || len > DMG_PLIST_MAX || off > d->koly_off || len > d->koly_off - off)
		return vdimg_corrupt(img,
				     "the property list (%llu bytes at %llu) is not inside the file or too large",
				     (unsigned long long)len, (unsigned long long)off);
	text = vdimg_zalloc(len);
	mish = vdimg_zalloc(DMG_MAX_MISH);
	if (!text || !mish) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_read(img->file, text, len, off);
	if (ret)
		goto out;
	end = text + len;
	p = dmg_find(text, end, "<key>blkx</key>");
	p = p ? dmg_find(p, end, "<array>") : NULL;
	arr_end = p ? dmg_find(p, end, "</array>") : NULL;
	if (!arr_end) {
		ret = vdimg_corrupt(img, "the property list has no blkx array");
		goto out;
	}
	for (;;) {
		const char *q;
		long n;

		p = dmg_find(p, arr_end, "<data>");
		if (!p)
			break;
		p += 6;
		q = dmg_find(p, arr_end, "</data>");
		if (!q) {
			ret = vdimg_corrupt(img,
					    "an unterminated <data> element in the blkx array");
			goto out;
		}
		n = dmg_b64_decode(p, q - p, mish, DMG_MAX_MISH);
		if (n < 0) {
			ret = vdimg_corrupt(img,
					    "blkx resource %u: bad base64 (or more than %u bytes)",
					    d->nr_tables, DMG_MAX_MISH);
			goto out;
		}
		ret = dmg_add_table(d, mish, n, &cap);
		if (ret)
			goto out;
		p = q + 7;
	}
	if (!d->nr_tables)
		ret = vdimg_corrupt(img, "the blkx array is empty");
out:
	vdimg_free(mish);
	vdimg_free(text);
	return ret;
}

/* a big-endian u32 at any byte offset: resources in the fork are not aligned */
static u32 dmg_get_be32(const u8 *p)
{
	return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3];
}

/*
 * No property list: the blkx resources from the binary resource fork, whose data area is a run
 * of (big-endian u32 length, bytes) resources; those that are not mish tables are skipped.
 */
static int dmg_read_rsrc(struct dmg *d)
{
	struct vdimg_image *img = d->img;
	u64 off = be64_to_cpu(d->koly.rsrc_fork_offset);
	u64 len = be64_to_cpu(d->koly.rsrc_fork_length);
	u32 cap = 0, data_off, data_len, pos;
	u8 *fork;
	int ret;

	if (len < 16 || len > DMG_PLIST_MAX || off > d->koly_off || len > d->koly_off - off)
		return vdimg_corrupt(img,
				     "the resource fork (%llu bytes at %llu) is not inside the file or too large",
				     (unsigned long long)len, (unsigned long long)off);
	fork = vdimg_zalloc(len);
	if (!fork)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, fork, len, off);
	if (ret)
		goto out;
	data_off = dmg_get_be32(fork);
	data_len = dmg_get_be32(fork + 8);
	if (data_off > len || data_len > len - data_off) {
		ret = vdimg_corrupt(img,
				    "the resource fork's data area (%u bytes at %u) is not inside it",
				    data_len, data_off);
		goto out;
	}
	for (pos = 0; pos < data_len;) {
		u32 n;

		if (data_len - pos < 4) {
			ret = vdimg_corrupt(img, "a truncated resource in the resource fork");
			goto out;
		}
		n = dmg_get_be32(fork + data_off + pos);
		pos += 4;
		if (n > data_len - pos) {
			ret = vdimg_corrupt(img,
					    "a resource of %u bytes runs past the resource fork",
					    n);
			goto out;
		}
		if (n >= 4 && !memcmp(fork + data_off + pos, "mish", 4)) {
			ret = dmg_add_table(d, fork + data_off + pos, n, &cap);
			if (ret)
				goto out;
		}
		pos += n;
	}
	if (!d->nr_tables)
		ret = vdimg_corrupt(img, "the resource fork has no mish tables");
out:
	vdimg_free(fork);
	return ret;
}

/* sort the chunks by sector: heapsort, bounded time whatever order a hostile image uses */
static void dmg_sift(struct dmg_chunk *c, u32 root, u32 n)
{
	for (;;) {
		u32 child = 2 * root + 1;
		struct dmg_chunk t;

		if (child >= n)
			return;
		if (child + 1 < n && c[child + 1].sector > c[child].sector)
			child++;
		if (c[root].sector >= c[child].sector)
			return;
		t = c[root];
		c[root] = c[child];
		c[child] = t;
		root = child;
	}
}

static void dmg_sort_chunks(struct dmg *d)
{
	struct dmg_chunk *c = d->chunks, t;
	u32 n = d->nr_chunks, i;

	for (i = n / 2; i-- > 0;)
		dmg_sift(c, i, n);
	for (i = n; i-- > 1;) {
		t = c[0];
		c[0] = c[i];
		c[i] = t;
		dmg_sift(c, 0, i);
	}
}

/* CRC-32 over the big-endian first checksum word of every table, as the master checksum is */
static int dmg_check_master(struct dmg *d)
{
	const struct dmg_checksum *m = &d->koly.master_checksum;
	u32 i, crc = 0;

	if (be32_to_cpu(m->type) != DMG_CSUM_CRC32)
		return 0;	/* none, or a kind vdimg does not compute */
	for (i = 0; i < d->nr_tables; i++) {
		__be32 v;

		if (d->tables[i].csum_type != DMG_CSUM_CRC32)
			return 0;
		v = cpu_to_be32(d->tables[i].csum);
		crc = vdimg_crc32(crc, &v, sizeof(v));
	}
	if (crc != be32_to_cpu(m->data[0]) && d->force_csum) {
		vdimg_warn(d->img, "master checksum mismatch: the image says %08x, the tables give %08x; opened anyway (force)",
			   be32_to_cpu(m->data[0]), crc);
		return 0;
	}
	if (crc != be32_to_cpu(m->data[0]))
		return vdimg_corrupt(d->img,
				     "master checksum mismatch: the image says %08x, the tables give %08x (force to open anyway)",
				     be32_to_cpu(m->data[0]), crc);
	d->master_verified = true;
	return 0;
}

static void dmg_free(struct dmg *d)
{
	vdimg_free(d->chunks);
	vdimg_free(d->tables);
	vdimg_free(d->cache);
	vdimg_free(d->stored);
	vdimg_free(d->bzip2);
	vdimg_free(d->lzfse);
	vdimg_free(d->lzma);
	vdimg_free(d);
}

static int dmg_open(struct vdimg_image *img, unsigned int flags)
{
	u64 fsize = vdimg_file_size(img->file), next = 0, dsize;
	struct dmg_koly *k;
	struct dmg *d;
	u32 i;
	int ret;

	BUILD_BUG_ON(sizeof(struct dmg_koly) != 512);
	BUILD_BUG_ON(sizeof(struct dmg_mish) != 204);
	BUILD_BUG_ON(sizeof(struct dmg_chunk_disk) != 40);
	if (!(flags & VDIMG_OPEN_READ_ONLY)) {
		vdimg_err(img, "DMG images are read-only: attach read-only");
		return -EROFS;
	}
	if (fsize < 512)
		return vdimg_corrupt(img, "the file is shorter than the trailer");
	d = vdimg_zalloc(sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->img = img;
	d->force_csum = flags & VDIMG_OPEN_FORCE_CSUM;
	d->cache_chunk = U32_MAX;
	vdimg_mutex_init(&d->cache_lock);
	k = &d->koly;
	d->koly_off = fsize - 512;
	ret = vdimg_file_read(img->file, k, sizeof(*k), d->koly_off);
	if (ret)
		goto fail;
	if (memcmp(k->magic, "koly", 4)) {
		ret = vdimg_corrupt(img, "no koly trailer");
		goto fail;
	}
	if (be32_to_cpu(k->version) != DMG_KOLY_VERSION || be32_to_cpu(k->header_size) != 512) {
		vdimg_err(img, "koly version %u (header size %u) is not supported",
			  be32_to_cpu(k->version), be32_to_cpu(k->header_size));
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (be32_to_cpu(k->segment_count) > 1) {
		vdimg_err(img, "segmented images (%u segments) are not supported",
			  be32_to_cpu(k->segment_count));
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (be64_to_cpu(k->data_fork_offset) > d->koly_off ||
	    be64_to_cpu(k->data_fork_length) > d->koly_off - be64_to_cpu(k->data_fork_offset)) {
		ret = vdimg_corrupt(img, "the data fork is not inside the file");
		goto fail;
	}
	if (be64_to_cpu(k->xml_length))
		ret = dmg_read_plist(d);
	else if (be64_to_cpu(k->rsrc_fork_length))
		ret = dmg_read_rsrc(d);
	else
		ret = vdimg_corrupt(img, "neither a property list nor a resource fork");
	if (ret)
		goto fail;
	dmg_sort_chunks(d);
	for (i = 0; i < d->nr_chunks; i++) {
		if (d->chunks[i].sector != next) {
			ret = vdimg_corrupt(img, "sectors %llu..%llu are %s",
					    (unsigned long long)min(next, d->chunks[i].sector),
					    (unsigned long long)max(next, d->chunks[i].sector),
					    d->chunks[i].sector > next ? "in no chunk" :
					    "in two chunks");
			goto fail;
		}
		next += d->chunks[i].count;
	}
	if (!next) {
		ret = vdimg_corrupt(img, "the image has no sectors");
		goto fail;
	}
	dsize = be64_to_cpu(k->sector_count);
	if (dsize && dsize != next) {
		ret = vdimg_corrupt(img, "the trailer says %llu sectors, the chunks cover %llu",
				    (unsigned long long)dsize, (unsigned long long)next);
		goto fail;
	}
	ret = dmg_check_master(d);
	if (ret)
		goto fail;
	if (d->max_chunk_bytes) {
		d->cache = vdimg_zalloc(d->max_chunk_bytes);
		d->stored = vdimg_zalloc(d->max_stored);
		if (!d->cache || !d->stored) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	if (d->has_bzip2) {
		d->bzip2 = vdimg_zalloc(dmg_bzip2_workspace_size());
		if (!d->bzip2) {
			ret = -ENOMEM;
			goto fail;
		}
		dmg_bzip2_init(d->bzip2);
	}
	if (d->has_lzfse) {
		d->lzfse = vdimg_zalloc(dmg_lzfse_workspace_size());
		if (!d->lzfse) {
			ret = -ENOMEM;
			goto fail;
		}
		dmg_lzfse_init(d->lzfse);
	}
	if (d->has_lzma) {
		d->lzma = vdimg_zalloc(dmg_lzma_workspace_size());
		if (!d->lzma) {
			ret = -ENOMEM;
			goto fail;
		}
		dmg_lzma_init(d->lzma);
	}
	img->size = next * DMG_SECTOR;
	img->lbs = DMG_SECTOR;
	img->pbs = DMG_SECTOR;
	img->alloc_unit = 0;
	vdimg_strscpy(img->variant, "udif", sizeof(img->variant));
	img->priv = d;
	return 0;

fail:
	vdimg_mutex_destroy(&d->cache_lock);
	dmg_free(d);
	return ret;
}

static void dmg_close(struct vdimg_image *img)
{
	struct dmg *d = DMG(img);

	if (!d)
		return;
	vdimg_mutex_destroy(&d->cache_lock);
	dmg_free(d);
	img->priv = NULL;
}

const struct vdimg_format vdimg_dmg_format = {
	.name = "dmg",
	.id = VDIMG_FMT_DMG,
	.probe = dmg_probe,
	.open = dmg_open,
	.close = dmg_close,
	.map = dmg_map,
	.read_encoded = dmg_read_encoded,
};
