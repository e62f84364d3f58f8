// SPDX-License-Identifier: GPL-2.0
/*
 * VHD mapping and writes: the sector bitmaps of blocks (cached), ->map(), block allocation,
 * ->commit(), ->abort(), ->flush() and ->discard(). Kernel-shared: compiled into the module and the
 * userspace library; only include/vdimg/platform.h services here.
 *
 * Writes: a block is reserved at the end of the file, its data on a 4 KiB boundary (the footer
 * moved past it, then its bitmap written, no sync; on a block device after the data the metadata
 * references, the footer in the device's last sector), the driver writes the data, ->commit() sets
 * the bitmap bits of exactly the written sectors, and the BAT entry stays in memory (PENDING) until
 * ->flush(), which syncs the file (data, bitmaps, footer) and only then writes the BAT sectors (the
 * driver syncs after). So no BAT entry on disk ever points at a block that is not durable, in
 * whatever order the host file system persists the writes between syncs; the only crash state left
 * between syncs is a file whose end is not a footer (the copy at offset 0 is used, and a writable
 * open rewrites the footer at the end, open.c; on a device the footer stays at its end). Bits set
 * in a block whose BAT entry is on disk expose data written into it: they wait for a sync first.
 * Space is never reused while open (data_end only grows). Blocks reserved in a dynamic (base) image
 * get an all-ones bitmap over zeroed data, as qemu does, so later writes to them need no metadata
 * at all.
 */
#include "vhd.h"

/* Write the BAT sector that holds entry @blk. Caller holds io_lock. */
int vhd_write_bat_sector(struct vdimg_image *img, struct vhd *v, u32 blk)
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
int vhd_write_footer(struct vdimg_image *img, struct vhd *v, u64 off)
{
	v->footer.checksum = 0;
	v->footer.checksum = cpu_to_be32(vhd_footer_csum(&v->footer));
	img->flags |= VDIMG_IMG_DIRTY;
	return vdimg_file_write(img->file, &v->footer, sizeof(v->footer), off);
}

/*
 * On a block device, which cannot grow, the footer lives in its last sector, as XenServer keeps
 * VHDs on LVs (it grows the LV and writes the footer at the LV's end, then appends blocks before
 * it). An image copied onto the device has its footer right after its data, where a new block or
 * BAT goes: move it to the end first. The spec puts the footer in the last 512 bytes of the
 * "file"; the copy at offset 0, which qemu reads, is unchanged. Caller as vhd_write_footer().
 */
int vhd_footer_to_device_end(struct vdimg_image *img, struct vhd *v)
{
	u64 end = v->file_size - VHD_SECTOR;
	int ret;

	if (v->footer_off == end)
		return 0;
	ret = vhd_write_footer(img, v, end);
	if (!ret)
		v->footer_off = end;
	return ret;
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
 * new data area is a hole that reads zeros) and its bitmap (all ones in a dynamic image, whose
 * unwritten sectors are then zeros; all zeros in a differencing one). No sync: the BAT entry is
 * set in memory only (PENDING), and ->flush() syncs before it writes it.
 * Caller holds io_lock.
 */
static int vhd_alloc_block(struct vdimg_image *img, struct vhd *v, u32 blk)
{
	/*
	 * the block's data starts on a 4 KiB boundary of the file (its bitmap just before it), so
	 * that guest writes aligned to pages are aligned in the file too: the host file system then
	 * takes them as direct I/O without serializing them, and no page holds two blocks' data
	 */
	u64 off = ALIGN(v->data_end + v->bitmap_size, (u64)SZ_4K) - v->bitmap_size;
	u64 new_end = off + v->bitmap_size + v->block_size;
	u8 *bits;
	int ret;

	lockdep_assert_held(&v->io_lock);

	if (new_end / VHD_SECTOR > 0xfffffffeULL) {
		vdimg_err(img, "the file cannot grow past 2 TiB (32-bit BAT entries)");
		return -ENOSPC;
	}
	if (v->fixed_file && new_end > v->file_size - VHD_SECTOR)
		return vdimg_device_full(img, v->file_size, "block");
	bits = vdimg_zalloc(v->bitmap_size);
	if (!bits)
		return -ENOMEM;
	if (v->type == VHD_TYPE_DYNAMIC)
		memset(bits, 0xff, v->bitmap_size);
	if (!v->fixed_file) {
		ret = vhd_write_footer(img, v, new_end);
	} else {
		/*
		 * A block device: the footer stays in its last sector. The block's space is not
		 * a hole: a dynamic block's data is zeroed, its bitmap saying every sector is set.
		 */
		ret = vhd_footer_to_device_end(img, v);
		if (!ret && v->type == VHD_TYPE_DYNAMIC)
			ret = vdimg_file_zero(img->file, off + v->bitmap_size, v->block_size);
	}
	if (!ret)
		ret = vdimg_file_write(img->file, bits, v->bitmap_size, off);
	if (ret) {
		vdimg_free(bits);
		return ret;
	}
	v->data_end = new_end;
	if (!v->fixed_file)
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
	u32 run = vdimg_sbm_run(bits, s, send, VDIMG_SBM_MSB_FIRST, &set);

	ext->length = min_t(u64, (u64)(s + run) * VHD_SECTOR, within + len) - within;
	ext->file = img->file;
	ext->file_offset = (u64)e * VHD_SECTOR + v->bitmap_size + within;
	ext->type = VDIMG_EXT_DATA;
	if (!write) {
		if (!set)
			ext->type = VDIMG_EXT_UNALLOCATED;
	} else if (!set) {
		/*
		 * only clear bits need a commit: a reserved block's BAT entry is written by
		 * ->flush() whatever is written into it, so its set sectors map as plain data
		 */
		if (pending)
			ext->length = len;
		ext->flags = VDIMG_EXT_NEW;
		ext->fill_offset = offset;
		ext->fill_length = 0;
		ext->cookie[0] = blk;
		ext->cookie[1] = pending ? VHD_COMMIT_BLOCK : VHD_COMMIT_BITS;
	}
	/*
	 * the block's first data page also holds its bitmap, unless the creator padded it; a NEW
	 * extent is cut too (vhd_commit() sets the bits of its range only), because direct writes
	 * of sectors already written in the block do not wait for it
	 */
	vdimg_ext_page_split(ext, (u64)e * VHD_SECTOR + v->bitmap_size, v->block_size, true);
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
		ret = !!vhd_bm_lookup(v, blk);
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

int vhd_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
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
	if (!vdimg_mutex_lock_nowait(&v->lock, flags & VDIMG_MAP_NOWAIT))
		return -EAGAIN;
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
	if (vdimg_sbm_run(bits, s, send, VDIMG_SBM_MSB_FIRST, &set) == send - s && set)
		goto out;	/* already set */
	vdimg_sbm_set(bits, s, send, VDIMG_SBM_MSB_FIRST);
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

int vhd_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
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
	/*
	 * Blocks reserved in a dynamic image already have every bit set. The bits of a block whose
	 * BAT entry is still in memory need no sync before them: ->flush() syncs before the entry.
	 */
	if (v->type == VHD_TYPE_DIFF || ext->cookie[1] == VHD_COMMIT_BITS)
		ret = vhd_set_bits_locked(img, v, blk, within / VHD_SECTOR,
					  (within + ext->length) / VHD_SECTOR,
					  !(v->state[blk] & VHD_BLK_PENDING));
out:
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

/*
 * A NEW extent was not written. A reserved block stays reserved (its bitmap and the space are
 * written); the next write to it gets a NEW extent again, and ->flush() records it.
 */
void vhd_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
}

int vhd_flush(struct vdimg_image *img)
{
	struct vhd *v = img->priv;
	u32 blk;
	int ret = 0, err;

	if (v->type == VHD_TYPE_FIXED || (img->flags & VDIMG_IMG_READ_ONLY))
		return 0;
	vdimg_mutex_lock(&v->io_lock);
	/* the reserved blocks' data, bitmaps and the footer first, then the entries */
	if (v->nr_pending)
		ret = vdimg_file_sync(img->file);
	for (blk = 0; !ret && v->nr_pending && blk < v->nr_blocks; blk++) {
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

int vhd_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
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
		 * differencing one must not read the parent there afterwards.
		 */
		if (e == VHD_BAT_FREE) {
			ret = vhd_alloc_block(img, v, blk);
			if (ret)
				break;
			e = vhd_bat_get(v, blk);
		}
		data = (u64)e * VHD_SECTOR + v->bitmap_size + within;
		ret = vdimg_file_zero(img->file, data, len);
		/* a reserved block's entry is written by ->flush(), after a sync */
		if (!ret && v->type == VHD_TYPE_DIFF)
			ret = vhd_set_bits_locked(img, v, blk, within / VHD_SECTOR,
						  (within + len) / VHD_SECTOR,
						  !(v->state[blk] & VHD_BLK_PENDING));
next:
		offset += len;
		length -= len;
	}
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}
