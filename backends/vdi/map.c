// SPDX-License-Identifier: GPL-2.0
/*
 * VDI mapping, allocation and commit, read-write. Kernel-shared: compiled into the module and the
 * userspace library; only include/vdimg/platform.h services here, no blk-mq, no libc.
 *
 * The block map is kept in memory; map() answers from it without I/O. A write to a FREE or ZERO
 * block reserves a slot (a hole left by a discard or a crash, else the next one at the end of the
 * data area) and returns a NEW extent covering the whole block (filled with zeros for a ZERO block,
 * from the layers below for a FREE one); commit() only records the slot in the in-memory map and
 * marks its entry dirty. flush() makes them durable in an order a host crash cannot break: until
 * an fsync completes the host file system may persist writes in any order (ext4 can write an
 * in-place map update before the commit that extends the file), so it writes the header's
 * allocated count (when a new slot is beyond it), syncs the file (the blocks' data and the count
 * are then on disk), and only then writes the dirty entries (the caller syncs again). An entry on
 * disk therefore never references a slot whose data or whose place in the allocated count is not
 * durable; a crash before it leaves unreferenced slots (a leak that `check --repair` or `compact`
 * reclaims). Online, a slot is never freed (discard deallocates its data and keeps it), so no slot
 * is reused while an entry on disk may still reference it; compact frees slots offline and syncs
 * before reusing one. The first write after open gives the image a new modification UUID, as
 * VirtualBox does.
 *
 * Locking: @map_lock protects the in-memory map, the slot bitmap and the allocation cursor and is
 * never held across I/O (map() with VDIMG_MAP_NOWAIT only try-locks it); @meta_lock serializes
 * every metadata write (header fields, map entries) and is held across that I/O. commit() takes
 * only @map_lock, so allocating writes do not wait for a flush's sync.
 */
#include "vdi.h"

/* ---- metadata writes ---- */

int vdi_write_le32(struct vdi *v, u64 off, u32 val)
{
	__le32 le = cpu_to_le32(val);

	lockdep_assert_held(&v->meta_lock);
	return vdimg_file_write(v->img->file, &le, sizeof(le), off);
}

/*
 * Give the image a new modification UUID before its first change after open (VirtualBox does the
 * same, so that differencing children can tell their parent was modified). Sleeps: with @nowait it
 * answers -EAGAIN instead when the UUID is still to be written.
 */
int vdi_touch(struct vdi *v, bool nowait)
{
	bool done;
	u8 uuid[16];
	int ret = 0;

	if (!vdimg_mutex_lock_nowait(&v->map_lock, nowait))
		return -EAGAIN;
	done = v->modified;
	vdimg_mutex_unlock(&v->map_lock);
	if (done)
		return 0;
	if (nowait)
		return -EAGAIN;

	vdimg_mutex_lock(&v->meta_lock);
	if (!v->modified) {
		vdi_new_uuid(uuid);
		ret = vdimg_file_write(v->img->file, uuid, sizeof(uuid), v->modify_field);
		if (!ret) {
			vdimg_mutex_lock(&v->map_lock);
			memcpy(v->uuid_modify, uuid, sizeof(uuid));
			v->modified = true;
			vdimg_mutex_unlock(&v->map_lock);
			v->img->flags |= VDIMG_IMG_DIRTY;
		}
	}
	vdimg_mutex_unlock(&v->meta_lock);
	return ret;
}

/* A free slot for a new block: the lowest hole, else the next one at the end. */
static int vdi_reserve_slot(struct vdi *v, u32 *slot)
{
	u32 s;

	lockdep_assert_held(&v->map_lock);
	if (v->nr_holes) {
		for (s = v->hole_hint; s < v->next_slot; s++) {
			if (s % 64 == 0 && v->slot_used[s / 64] == ~0ULL) {
				s += 63;
				continue;
			}
			if (!vdi_test_slot(v, s)) {
				vdi_set_slot(v, s);
				v->nr_holes--;
				v->hole_hint = s + 1;
				*slot = s;
				return 0;
			}
		}
		if (WARN_ON_ONCE(v->nr_holes))	/* the hole count lied */
			v->nr_holes = 0;
	}
	if (v->next_slot >= v->nr_blocks)
		return -ENOSPC;		/* cannot happen: one slot per block at most */
	s = v->next_slot++;
	vdi_set_slot(v, s);
	*slot = s;
	return 0;
}

static void vdi_release_slot(struct vdi *v, u32 s)
{
	lockdep_assert_held(&v->map_lock);
	if (WARN_ON_ONCE(s >= v->next_slot || !vdi_test_slot(v, s)))
		return;
	vdi_clear_slot(v, s);
	v->nr_holes++;
	v->hole_hint = min(v->hole_hint, s);
}

/* ---- map, commit, abort ---- */

int vdi_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	    struct vdimg_extent *ext)
{
	struct vdi *v = img->priv;
	u64 in, avail;
	u32 blk, e, i, slot;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	length = min(length, img->size - offset);
	if (flags & VDIMG_MAP_WRITE) {
		if (v->read_only)
			return -EROFS;
		if (v->repairs)
			return -EUCLEAN;	/* opened for repair: check --repair first */
		ret = vdi_touch(v, flags & VDIMG_MAP_NOWAIT);
		if (ret)
			return ret;
	}
	if (!vdimg_mutex_lock_nowait(&v->map_lock, flags & VDIMG_MAP_NOWAIT))
		return -EAGAIN;

	blk = offset >> v->block_shift;
	in = offset & (v->block_size - 1);
	avail = v->block_size - in;
	e = v->map[blk];
	ext->offset = offset;
	ext->flags = 0;
	ext->file = NULL;
	ext->file_offset = 0;
	ext->fill_offset = 0;
	ext->fill_length = 0;
	ext->cookie[0] = 0;
	ext->cookie[1] = 0;
	ret = 0;
	if (vdi_allocated(e)) {
		/* slots that follow each other in the file make one extent */
		if (!v->block_extra)
			for (i = blk + 1; avail < length && i < v->nr_blocks &&
			     v->map[i] == e + (i - blk); i++)
				avail += v->block_size;
		ext->type = VDIMG_EXT_DATA;
		ext->file = img->file;
		ext->file_offset = vdi_slot_offset(v, e) + in;
	} else if (!(flags & VDIMG_MAP_WRITE)) {
		for (i = blk + 1; avail < length && i < v->nr_blocks && v->map[i] == e; i++)
			avail += v->block_size;
		ext->type = e == VDI_BLOCK_ZERO ? VDIMG_EXT_ZERO : VDIMG_EXT_UNALLOCATED;
	} else if (flags & VDIMG_MAP_NOWAIT) {
		/*
		 * allocation belongs to the worker, which holds the block's unit: a slot reserved
		 * here and given back would only leave a hole for a later block to reuse
		 */
		ret = -EAGAIN;
		goto out;
	} else {
		ret = vdi_reserve_slot(v, &slot);
		if (ret)
			goto out;
		/* on a block device the slot must fit in it: the device cannot grow */
		if (vdimg_file_fixed_size(img->file) &&
		    vdi_slot_offset(v, slot) + v->block_size > vdimg_file_size(img->file)) {
			if (slot + 1 == v->next_slot) {	/* the end, not a hole */
				vdi_clear_slot(v, slot);
				v->next_slot--;
			} else {
				vdi_release_slot(v, slot);
			}
			ret = vdimg_device_full(img, vdimg_file_size(img->file), "block");
			goto out;
		}
		ext->type = VDIMG_EXT_DATA;
		ext->flags = VDIMG_EXT_NEW;
		/* a ZERO block must stay zero around the write; FREE takes what is below */
		if (e == VDI_BLOCK_ZERO)
			ext->flags |= VDIMG_EXT_FILL_ZERO;
		ext->file = img->file;
		ext->file_offset = vdi_slot_offset(v, slot) + in;
		ext->fill_offset = (u64)blk << v->block_shift;
		ext->fill_length = min_t(u64, v->block_size, img->size - ext->fill_offset);
		ext->cookie[0] = blk;
		ext->cookie[1] = slot;
		vdimg_ext_hole_check(ext, vdi_slot_offset(v, slot));
	}
	ext->length = min(length, avail);
	/*
	 * the run of slots from the one holding @offset (its start is page-aligned in VirtualBox's)
	 */
	if (ext->type == VDIMG_EXT_DATA)
		vdimg_ext_page_check(ext, ext->file_offset - in, in + avail);
out:
	vdimg_mutex_unlock(&v->map_lock);
	return ret;
}

/* Is @ext a NEW extent this image handed out? Sets the block and slot. */
static bool vdi_new_extent(struct vdi *v, const struct vdimg_extent *ext, u32 *blk, u32 *slot)
{
	if (!(ext->flags & VDIMG_EXT_NEW) || ext->cookie[0] >= v->nr_blocks ||
	    ext->cookie[1] >= v->nr_blocks)
		return false;
	*blk = ext->cookie[0];
	*slot = ext->cookie[1];
	return true;
}

int vdi_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	static const u8 zeros[4096];
	struct vdi *v = img->priv;
	u32 blk, slot;
	u64 valid;
	bool ok;
	int ret;

	if (WARN_ON_ONCE(!vdi_new_extent(v, ext, &blk, &slot)))
		return -EINVAL;
	vdimg_mutex_lock(&v->map_lock);
	ok = slot < v->next_slot && vdi_test_slot(v, slot) && !vdi_allocated(v->map[blk]);
	vdimg_mutex_unlock(&v->map_lock);
	if (WARN_ON_ONCE(!ok))
		return -EINVAL;

	/*
	 * the last block may be longer than the disk: the fill stopped at its end, pad the slot
	 * (reserved for this extent alone: no lock needed)
	 */
	valid = img->size - ((u64)blk << v->block_shift);
	while (valid < v->block_size) {
		u32 n = min_t(u64, sizeof(zeros), v->block_size - valid);

		ret = vdimg_file_write(img->file, zeros, n, vdi_slot_offset(v, slot) + valid);
		if (ret)
			return ret;
		valid += n;
	}
	/* the entry reaches the disk at the next flush, after the data */
	vdimg_mutex_lock(&v->map_lock);
	v->map[blk] = slot;
	if (!(v->dirty[blk / 64] & (1ULL << (blk % 64)))) {
		v->dirty[blk / 64] |= 1ULL << (blk % 64);
		v->nr_dirty++;
	}
	vdimg_mutex_unlock(&v->map_lock);
	img->flags |= VDIMG_IMG_DIRTY;
	return 0;
}

/* Mark again the entries of @v->flushing from block @from on (a flush could not write them). */
static void vdi_redirty(struct vdi *v, u32 from)
{
	u32 blk;

	vdimg_mutex_lock(&v->map_lock);
	for (blk = from; blk < v->nr_blocks; blk++) {
		u64 bit = 1ULL << (blk % 64);

		if ((v->flushing[blk / 64] & bit) && !(v->dirty[blk / 64] & bit)) {
			v->dirty[blk / 64] |= bit;
			v->nr_dirty++;
		}
	}
	vdimg_mutex_unlock(&v->map_lock);
}

#define VDI_FLUSH_RUN	64	/* entries written by one write */

/*
 * Write the entries committed since the last flush, after their data: the allocated count first
 * when they go beyond it, then a sync (data and count durable), then the entries. The caller
 * syncs the file afterwards. Entries committed while this runs wait for the next flush.
 */
int vdi_flush(struct vdimg_image *img)
{
	struct vdi *v = img->priv;
	__le32 run[VDI_FLUSH_RUN];
	u32 blk, words, w, top = 0, n;
	int ret = 0;

	if (v->read_only)
		return 0;
	vdimg_mutex_lock(&v->meta_lock);
	vdimg_mutex_lock(&v->map_lock);
	if (!v->nr_dirty) {
		vdimg_mutex_unlock(&v->map_lock);
		goto out;
	}
	words = DIV_ROUND_UP(v->nr_blocks, 64);
	for (w = 0; w < words; w++) {
		u64 bits = v->dirty[w];

		v->flushing[w] = bits;
		v->dirty[w] = 0;
		for (blk = w * 64; bits; blk++, bits >>= 1)
			if ((bits & 1) && vdi_allocated(v->map[blk]))
				top = max(top, v->map[blk] + 1);
	}
	v->nr_dirty = 0;
	vdimg_mutex_unlock(&v->map_lock);

	if (top > v->disk_alloc) {
		ret = vdi_write_le32(v, v->alloc_field, top);
		if (ret)
			goto fail;
		v->disk_alloc = top;
	}
	/* the data the entries reference (and the count) on disk before any entry */
	ret = vdimg_file_sync(img->file);
	if (ret)
		goto fail;
	for (blk = 0; blk < v->nr_blocks; blk += n) {
		u64 rest = v->flushing[blk / 64] >> (blk % 64);

		if (!(rest & 1)) {
			/* an empty rest of a word is skipped whole: few words are dirty */
			n = rest ? 1 : 64 - blk % 64;
			continue;
		}
		vdimg_mutex_lock(&v->map_lock);
		for (n = 0; n < VDI_FLUSH_RUN && blk + n < v->nr_blocks &&
		     (v->flushing[(blk + n) / 64] & (1ULL << ((blk + n) % 64))); n++)
			run[n] = cpu_to_le32(v->map[blk + n]);
		vdimg_mutex_unlock(&v->map_lock);
		ret = vdimg_file_write(img->file, run, n * 4, v->blocks_off + (u64)blk * 4);
		if (ret) {
			vdi_redirty(v, blk);
			goto out;
		}
	}
	goto out;
fail:
	vdi_redirty(v, 0);
out:
	vdimg_mutex_unlock(&v->meta_lock);
	return ret;
}

void vdi_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct vdi *v = img->priv;
	u32 blk, slot;

	if (!vdi_new_extent(v, ext, &blk, &slot))
		return;
	vdimg_mutex_lock(&v->map_lock);
	if (slot < v->next_slot && vdi_test_slot(v, slot) && v->map[blk] != slot)
		vdi_release_slot(v, slot);
	vdimg_mutex_unlock(&v->map_lock);
}

/* ---- discard ---- */

static u32 vdi_entry(struct vdi *v, u32 blk)
{
	u32 e;

	vdimg_mutex_lock(&v->map_lock);
	e = v->map[blk];
	vdimg_mutex_unlock(&v->map_lock);
	return e;
}

/* Unmap one whole block: ZERO in a differencing image (hides the parent), FREE in a base. */
/*
 * Make a whole block read as zeros. Online (@release false) an allocated block keeps its slot and
 * only has its data deallocated in the file: freeing the slot would leave the header's allocated
 * count wrong for qemu-img check until a compact, and a reused slot could receive a write while a
 * read of the old block is still in flight. Offline (compact, @release true) the slot is given
 * back.
 */
int vdi_unmap_block(struct vdi *v, u32 blk, bool release)
{
	u32 want = v->diff ? VDI_BLOCK_ZERO : VDI_BLOCK_FREE;
	u32 e = vdi_entry(v, blk);
	int ret;

	lockdep_assert_held(&v->meta_lock);
	if (vdi_allocated(e) && !release) {
		v->img->flags |= VDIMG_IMG_DIRTY;
		return vdimg_file_zero(v->img->file, vdi_slot_offset(v, e), v->block_size);
	}
	if (e == want || (!v->diff && e == VDI_BLOCK_ZERO))
		return 0;
	ret = vdi_write_le32(v, v->blocks_off + (u64)blk * 4, want);
	if (ret)
		return ret;
	vdimg_mutex_lock(&v->map_lock);
	v->map[blk] = want;
	if (v->dirty[blk / 64] & (1ULL << (blk % 64))) {	/* written now */
		v->dirty[blk / 64] &= ~(1ULL << (blk % 64));
		v->nr_dirty--;
	}
	vdimg_mutex_unlock(&v->map_lock);
	v->img->flags |= VDIMG_IMG_DIRTY;
	if (!vdi_allocated(e))
		return 0;
	/* the entry no longer referencing the slot is durable before the slot can be reused */
	ret = vdimg_file_sync(v->img->file);
	if (ret)
		return ret;
	/* unreferenced now: give the space back to the file system, then reuse the slot */
	ret = vdimg_file_punch(v->img->file, vdi_slot_offset(v, e) - v->block_extra, v->stride);
	if (ret && ret != -EOPNOTSUPP)
		vdimg_warn(v->img, "cannot deallocate slot %u of the file (error %d)", e, ret);
	vdimg_mutex_lock(&v->map_lock);
	vdi_release_slot(v, e);
	vdimg_mutex_unlock(&v->map_lock);
	return 0;
}

int vdi_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	struct vdi *v = img->priv;
	u64 off, end;
	int ret;

	if (v->read_only)
		return -EROFS;
	if (v->repairs)
		return -EUCLEAN;
	if (flags & VDIMG_DISCARD_NOUNMAP)
		return -EOPNOTSUPP;	/* the driver writes the zeros */
	if (flags & ~VDIMG_DISCARD_ZEROES)
		return -EINVAL;
	if (offset > img->size || length > img->size - offset)
		return -EINVAL;
	if (!length)
		return 0;
	end = offset + length;

	/*
	 * A partial block that is FREE in a differencing image shows the parent: making it read
	 * zeros needs a copy from the parent, which only the write path can do.
	 */
	if (v->diff && (flags & VDIMG_DISCARD_ZEROES)) {
		u64 bs = v->block_size, first = offset & ~(bs - 1);
		u64 last = (end - 1) & ~(bs - 1);

		if (offset != first && vdi_entry(v, first >> v->block_shift) == VDI_BLOCK_FREE)
			return -EOPNOTSUPP;
		if (end != min(last + bs, img->size) &&
		    vdi_entry(v, last >> v->block_shift) == VDI_BLOCK_FREE)
			return -EOPNOTSUPP;
	}
	ret = vdi_touch(v, false);
	if (ret)
		return ret;

	vdimg_mutex_lock(&v->meta_lock);
	for (off = offset; off < end; ) {
		u32 blk = off >> v->block_shift;
		u64 bstart = (u64)blk << v->block_shift;
		u64 bend = min(bstart + v->block_size, img->size);
		u64 n = min(end, bend) - off;
		u32 e = vdi_entry(v, blk);

		if (off == bstart && n == bend - bstart && v->type != VDI_TYPE_FIXED) {
			ret = vdi_unmap_block(v, blk, false);
		} else if (vdi_allocated(e)) {
			/*
			 * partial block, or a fixed image (which stays preallocated): zero in place
			 */
			u64 where = vdi_slot_offset(v, e) + (off - bstart);

			if (v->type == VDI_TYPE_FIXED)
				ret = vdimg_file_zero_range(img->file, where, n);
			else
				ret = vdimg_file_zero(img->file, where, n);
			img->flags |= VDIMG_IMG_DIRTY;
		}
		if (ret)
			break;
		off += n;
	}
	vdimg_mutex_unlock(&v->meta_lock);
	return ret;
}
