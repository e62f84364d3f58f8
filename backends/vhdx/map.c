// SPDX-License-Identifier: GPL-2.0
/*
 * VHDX mapping and writes: the cached sector bitmaps of differencing images, ->map(), block
 * reservation, ->commit() through the metadata log, ->abort(), ->flush() and ->discard().
 * Kernel-shared: compiled into the module and the userspace library; only include/vdimg/platform.h
 * services here.
 *
 * Writes: a block is reserved at the end of the file (1 MiB aligned; the file is extended first so
 * the new block reads zeros, and a differencing image also gets a sector bitmap block when its
 * chunk has none), the driver writes the data, and ->commit() syncs the file and then records the
 * BAT entries and sector bitmap bits through one log entry (synced), applying it in place
 * afterwards. A crash at any point leaves an image that reads old or new data: the log replays on
 * the next writable open (by vdimg, qemu or Hyper-V), and at worst a reserved block leaks.
 * ->flush() marks the log empty again (log GUID zero) once everything it carried is applied and
 * durable.
 */
#include "vhdx.h"

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
		u32 run = vdimg_sbm_run(bits, s, send, VDIMG_SBM_LSB_FIRST, &set);

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
	if (v->fixed_file && end > v->dev_size)
		return vdimg_device_full(img, v->dev_size, "block");
	/*
	 * grow the file: the new space is a hole that reads zeros; a block device cannot grow and
	 * holds old bytes past the image's end, which are zeroed instead
	 */
	if (v->fixed_file)
		ret = vdimg_file_zero(img->file, start, end - start);
	else
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

int vhdx_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
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
	if (!vdimg_mutex_lock_nowait(&v->lock, flags & VDIMG_MAP_NOWAIT))
		return -EAGAIN;
	ret = vhdx_map_cached(img, v, offset, length, write, ext);
	vdimg_mutex_unlock(&v->lock);
	if (ret != VHDX_SLOW)
		return ret;
	if (flags & VDIMG_MAP_NOWAIT)
		return -EAGAIN;
	return vhdx_map_slow(img, v, offset, length, write, ext);
}

/* ---- committing metadata through the log ---- */

/* The 4 KiB page at @off, read from the file the first time. */
u8 *vhdx_page(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps, u64 off)
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

void vhdx_pageset_free(struct vhdx_pageset *ps)
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
		p[in] |= vdimg_sbm_mask(s, VDIMG_SBM_LSB_FIRST);
		s++;
	}
	return 0;
}

/*
 * Log the page set (data already synced by the caller), sync, then write the pages in place.
 * Holds io_lock.
 */
int vhdx_log_commit(struct vdimg_image *img, struct vhdx *v, struct vhdx_pageset *ps)
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

int vhdx_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
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
void vhdx_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
}

/* Everything logged is applied: make it durable and mark the log empty. */
int vhdx_flush(struct vdimg_image *img)
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
int vhdx_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
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

/* ---- resizing in place (online grow, and the tool's offline resize) ---- */

/* BAT entries a disk of @size uses */
u64 vhdx_entries_for(const struct vhdx *v, u64 size)
{
	u64 blocks = DIV_ROUND_UP(size, (u64)v->block_size);
	u64 chunks = DIV_ROUND_UP(blocks, (u64)v->chunk_ratio);

	return v->diff ? chunks * (v->chunk_ratio + 1) : blocks + (blocks - 1) / v->chunk_ratio;
}

/* file offset of the virtual disk size item, from the metadata table */
static int vhdx_vsize_item(struct vdimg_image *img, struct vhdx *v, u64 *off)
{
	u8 *table = vdimg_zalloc(VHDX_META_TABLE_SIZE);
	u32 i, n;
	int ret;

	if (!table)
		return -ENOMEM;
	ret = vdimg_vhdx_meta_read(img, &v->log, table, VHDX_META_TABLE_SIZE, v->meta_off);
	if (ret)
		goto out;
	n = le16_to_cpu(((struct vhdx_meta_hdr *)table)->entry_count);
	ret = -ENOENT;
	for (i = 0; i < n && i < VHDX_META_MAX; i++) {
		struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
						     i * sizeof(*m));

		if (!memcmp(m->item_id, vhdx_guid_vsize, 16) &&
		    !(le32_to_cpu(m->flags) & VHDX_META_IS_USER) && le32_to_cpu(m->length) >= 8 &&
		    le32_to_cpu(m->offset) <= v->meta_len - 8) {
			*off = v->meta_off + le32_to_cpu(m->offset);
			ret = 0;
		}
	}
	if (ret)
		ret = vdimg_corrupt(img, "no virtual disk size item in the metadata table");
out:
	vdimg_free(table);
	return ret;
}

/* make BAT entries [@from, @to) NOT_PRESENT on disk where they are not, through the log */
static int vhdx_clear_bat(struct vdimg_image *img, struct vhdx *v, u64 from, u64 to)
{
	struct vhdx_pageset ps = { 0 };
	u64 pos = v->bat_off + from * 8, end = v->bat_off + to * 8;
	u8 *buf = vdimg_zalloc(VHDX_LOG_SECTOR), *p;
	int ret = buf ? 0 : -ENOMEM;

	while (pos < end && !ret) {
		u64 page = ALIGN_DOWN(pos, (u64)VHDX_LOG_SECTOR);
		u64 stop = min(end, page + VHDX_LOG_SECTOR);
		bool dirty = false;
		u64 i;

		ret = vdimg_file_read(img->file, buf, VHDX_LOG_SECTOR, page);
		for (i = pos - page; !ret && i < stop - page; i++)
			dirty |= buf[i];
		if (!ret && dirty) {
			p = vhdx_page(img, v, &ps, page);
			if (!p)
				ret = -ENOMEM;
			else
				memset(p + (pos - page), 0, stop - pos);
		}
		if (!ret && (ps.n == VHDX_MAX_PAGES || (stop == end && ps.n))) {
			ret = vhdx_log_commit(img, v, &ps);
			vhdx_pageset_free(&ps);
		}
		pos = stop;
	}
	vhdx_pageset_free(&ps);
	vdimg_free(buf);
	return ret;
}

/*
 * First step of a resize to @size (the BAT region has room, the caller checked): the BAT entries
 * it brings in are made NOT_PRESENT on disk where an earlier shrink or another tool left
 * something, through the log; then the BAT in memory takes the new entry count. The disk size
 * item is not touched (vhdx_write_vsize()), nor img->size. Nothing may be in flight.
 */
int vhdx_resize_bat(struct vdimg_image *img, u64 size)
{
	struct vhdx *v = img->priv;
	u64 entries = vhdx_entries_for(v, size), i, chunks;
	__le64 *bat;
	u64 *sb;
	int ret = 0;

	if (entries > v->nr_entries) {
		vdimg_mutex_lock(&v->io_lock);
		ret = vhdx_clear_bat(img, v, v->nr_entries, entries);
		vdimg_mutex_unlock(&v->io_lock);
		if (ret)
			return ret;
	}
	chunks = DIV_ROUND_UP(DIV_ROUND_UP(size, (u64)v->block_size), (u64)v->chunk_ratio);
	bat = vdimg_zalloc(max_t(u64, entries, 1) * 8);
	sb = vdimg_zalloc(max_t(u64, chunks, v->nr_chunks) * sizeof(u64));
	if (!bat || !sb) {
		vdimg_free(bat);
		vdimg_free(sb);
		return -ENOMEM;
	}
	vdimg_mutex_lock(&v->lock);
	memcpy(sb, v->sb_pend, v->nr_chunks * sizeof(u64));
	swap(v->sb_pend, sb);
	for (i = 0; i < min(entries, v->nr_entries); i++)
		bat[i] = v->bat[i];
	swap(v->bat, bat);
	v->nr_entries = entries;
	v->nr_blocks = DIV_ROUND_UP(size, (u64)v->block_size);
	v->nr_chunks = DIV_ROUND_UP(v->nr_blocks, (u64)v->chunk_ratio);
	vdimg_mutex_unlock(&v->lock);
	vdimg_free(bat);
	vdimg_free(sb);
	return 0;
}

/*
 * Second step: the virtual disk size item becomes @size in a log entry of its own (the 8 bytes
 * lie within one 4 KiB page: a crash replays to the old or the new size), and the file is synced.
 */
int vhdx_write_vsize(struct vdimg_image *img, u64 size)
{
	struct vhdx *v = img->priv;
	struct vhdx_pageset ps = { 0 };
	__le64 le = cpu_to_le64(size);
	u64 item, page;
	u8 *p;
	int ret;

	ret = vhdx_vsize_item(img, v, &item);
	if (ret)
		return ret;
	page = ALIGN_DOWN(item, (u64)VHDX_LOG_SECTOR);
	if (item + 8 > page + VHDX_LOG_SECTOR)
		return vdimg_corrupt(img, "the virtual disk size item straddles a 4 KiB page");
	vdimg_mutex_lock(&v->io_lock);
	p = vhdx_page(img, v, &ps, page);
	if (p) {
		memcpy(p + (item - page), &le, 8);
		ret = vhdx_log_commit(img, v, &ps);
	} else {
		ret = -ENOMEM;
	}
	if (!ret)
		ret = vdimg_file_sync(img->file);
	vdimg_mutex_unlock(&v->io_lock);
	vhdx_pageset_free(&ps);
	return ret;
}
