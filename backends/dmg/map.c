// SPDX-License-Identifier: GPL-2.0
/*
 * The DMG backend's data path: ->map() finds the chunk holding an offset (binary search in the
 * sorted chunk list) and answers DATA for stored chunks, ZERO for zero-fill and ignored ones, and
 * ENCODED for compressed ones, which ->read_encoded() decodes (zlib through vdimg_decompress(),
 * ADC, bzip2, LZFSE and LZMA through adc.c, bzip2.c, lzfse.c and lzma.c) into a one-chunk cache,
 * so that reading a chunk in small pieces decodes it once. Kernel-shared.
 */
#include "dmg.h"

/* the chunk holding @sector (the chunks cover the disk without gaps) */
static u32 dmg_find_chunk(const struct dmg *d, u64 sector)
{
	u32 lo = 0, hi = d->nr_chunks;

	while (hi - lo > 1) {
		u32 mid = lo + (hi - lo) / 2;

		if (d->chunks[mid].sector <= sector)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

int dmg_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	    struct vdimg_extent *ext)
{
	struct dmg *d = DMG(img);
	const struct dmg_chunk *c;
	u64 cstart, cend;
	u32 i;

	if (flags & VDIMG_MAP_WRITE)
		return -EROFS;
	if (offset >= img->size || !length)
		return -EINVAL;
	i = dmg_find_chunk(d, offset / DMG_SECTOR);
	c = &d->chunks[i];
	cstart = c->sector * DMG_SECTOR;
	cend = cstart + c->count * DMG_SECTOR;
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ext->length = min(length, cend - offset);
	switch (c->type) {
	case DMG_CHUNK_RAW:
		ext->type = VDIMG_EXT_DATA;
		ext->file = img->file;
		ext->file_offset = c->offset + (offset - cstart);
		break;
	case DMG_CHUNK_ZERO:
	case DMG_CHUNK_IGNORE:
		ext->type = VDIMG_EXT_ZERO;
		break;
	default:
		ext->type = VDIMG_EXT_ENCODED;
		ext->cookie[0] = i;
		break;
	}
	return 0;
}

int dmg_decode_chunk(struct dmg *d, u32 i, u8 *dst)
{
	const struct dmg_chunk *c = &d->chunks[i];
	size_t out = c->count * DMG_SECTOR;
	int ret;

	if (c->length > d->max_stored || out > d->max_chunk_bytes)
		return -EINVAL;
	ret = vdimg_file_read(d->img->file, d->stored, c->length, c->offset);
	if (ret)
		return ret;
	if (c->type == DMG_CHUNK_ZLIB)
		ret = vdimg_decompress(VDIMG_DECOMP_ZLIB, d->stored, c->length, dst, out);
	else if (c->type == DMG_CHUNK_ADC)
		ret = dmg_adc_decode(d->stored, c->length, dst, out);
	else if (c->type == DMG_CHUNK_BZIP2 && d->bzip2)
		ret = dmg_bzip2_decode(d->bzip2, d->stored, c->length, dst, out);
	else if (c->type == DMG_CHUNK_LZFSE && d->lzfse)
		ret = dmg_lzfse_decode(d->lzfse, d->stored, c->length, dst, out);
	else if (c->type == DMG_CHUNK_LZMA && d->lzma)
		ret = dmg_lzma_decode(d->lzma, d->stored, c->length, dst, out);
	else
		ret = -EINVAL;
	if (ret == -EFSCORRUPTED)
		vdimg_err(d->img, "chunk %u (%s, sectors %llu+%llu): the compressed data is invalid",
			  i, dmg_chunk_type_name(c->type), (unsigned long long)c->sector,
			  (unsigned long long)c->count);
	if (ret == -EOPNOTSUPP && c->type == DMG_CHUNK_LZMA) {
		u64 val;
		const char *what = dmg_lzma_unsupported(d->lzma, &val);

		vdimg_err(d->img, "chunk %u (%s): %s (0x%llx) is not supported", i,
			  dmg_chunk_type_name(c->type), what ? what : "a feature",
			  (unsigned long long)val);
	}
	return ret;
}

int dmg_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf)
{
	struct dmg *d = DMG(img);
	const struct dmg_chunk *c;
	u64 cstart;
	u32 i = ext->cookie[0];
	int ret = 0;

	if (ext->type != VDIMG_EXT_ENCODED || i >= d->nr_chunks)
		return -EINVAL;
	c = &d->chunks[i];
	cstart = c->sector * DMG_SECTOR;
	if (ext->offset < cstart || ext->length > c->count * DMG_SECTOR ||
	    ext->offset - cstart > c->count * DMG_SECTOR - ext->length)
		return -EINVAL;
	vdimg_mutex_lock(&d->cache_lock);
	if (d->cache_chunk != i) {
		d->cache_chunk = U32_MAX;
		ret = dmg_decode_chunk(d, i, d->cache);
		if (!ret)
			d->cache_chunk = i;
	}
	if (!ret)
		memcpy(buf, d->cache + (ext->offset - cstart), ext->length);
	vdimg_mutex_unlock(&d->cache_lock);
	return ret;
}
