// SPDX-License-Identifier: GPL-2.0
/*
 * The data path. queue_rq hands every request to a worker (as loop does: the submitter may hold
 * locks of an upper file system, and the backing file's own locks must not nest under them). The
 * worker asks the backends where the data is: when one DATA extent covers the whole request it
 * submits one asynchronous kiocb on that layer's file (direct I/O when possible) and completes the
 * request from the callback; anything else (chains that reach a lower layer, zeros, allocation with
 * fill, encoded extents, FUA) is done synchronously in the worker, extent by extent. Allocation
 * commits happen only after the data is written. No format knowledge here.
 */
#include "vdimg.h"
#include <linux/sched/mm.h>
#include <linux/uio.h>

#define VDIMG_MAX_FILL	(64U << 20)	/* largest fill (allocation unit) the driver accepts */

/* ---- allocation range locks ---- */

static bool vdimg_range_busy(struct vdimg_device *dev, u64 start, u64 end)
{
	struct vdimg_range *r;

	lockdep_assert_held(&dev->range_lock);
	list_for_each_entry(r, &dev->ranges, node)
		if (r->start < end && start < r->end)
			return true;
	return false;
}

/* Take [r->start, r->end) if nothing overlapping is held. */
static bool vdimg_range_try_lock(struct vdimg_device *dev, struct vdimg_range *r)
{
	bool busy;

	spin_lock(&dev->range_lock);
	busy = vdimg_range_busy(dev, r->start, r->end);
	if (!busy)
		list_add(&r->node, &dev->ranges);
	spin_unlock(&dev->range_lock);
	return !busy;
}

static void vdimg_range_lock(struct vdimg_device *dev, struct vdimg_range *r, u64 start, u64 end)
{
	r->start = start;
	r->end = end;
	wait_event(dev->range_wait, vdimg_range_try_lock(dev, r));
}

static void vdimg_range_unlock(struct vdimg_device *dev, struct vdimg_range *r)
{
	spin_lock(&dev->range_lock);
	list_del(&r->node);
	spin_unlock(&dev->range_lock);
	wake_up_all(&dev->range_wait);
}

/*
 * Lock the allocation units [pos, pos + len) touches on the top layer; false if it never allocates.
 */
static bool vdimg_lock_units(struct vdimg_device *dev, struct vdimg_range *r, u64 pos, u64 len)
{
	u32 unit = vdimg_top(dev)->img.alloc_unit;

	if (!unit)
		return false;
	vdimg_range_lock(dev, r, pos - (pos % unit), roundup(pos + len, (u64)unit));
	return true;
}

/* ---- synchronous helpers ---- */

/* One synchronous direct read or write of @iter at @pos of @file. */
static ssize_t vdimg_file_direct(struct file *file, struct iov_iter *iter, loff_t pos, bool write)
{
	struct kiocb kiocb;
	ssize_t n;

	init_sync_kiocb(&kiocb, file);
	kiocb.ki_pos = pos;
	kiocb.ki_flags |= IOCB_DIRECT;
	if (!write)
		return file->f_op->read_iter(&kiocb, iter);
	file_start_write(file);
	n = file->f_op->write_iter(&kiocb, iter);
	file_end_write(file);
	return n;
}

/*
 * Read or write @len bytes of @iter at @pos of @vf, advancing @iter: directly when the data path
 * uses direct I/O on the file and the request's pages allow it (see struct vdimg_file), else
 * through the page cache.
 */
static int vdimg_file_iter(struct vdimg_file *vf, struct iov_iter *iter, u64 len, loff_t pos,
			   bool write, bool shared)
{
	size_t rest = iov_iter_count(iter) - len;
	unsigned int mask = vf->dio_align - 1;
	struct file *file = vf->filp;
	bool locked = false;
	ssize_t n;
	int ret = 0;

	iov_iter_truncate(iter, len);
	if (write)
		locked = vdimg_file_write_begin(vf, pos + len);
	if (vf->dio_align && !shared && !((pos | len) & mask) && iov_iter_is_bvec(iter) &&
	    iov_iter_is_aligned(iter, mask, mask))
		n = vdimg_file_direct(file, iter, pos, write);
	else if (write)
		n = vfs_iter_write(file, iter, &pos, 0);
	else
		n = vfs_iter_read(file, iter, &pos, 0);
	if (n < 0)
		ret = n;
	else if (n < len && write)
		ret = -EIO;
	else if (n < len)
		iov_iter_zero(len - n, iter);	/* past the end of the backing file */
	vdimg_file_write_end(vf, locked);
	iov_iter_reexpand(iter, iov_iter_count(iter) + rest);
	return ret;
}

static int vdimg_check_extent(struct vdimg_layer_k *l, const struct vdimg_extent *ext, u64 len)
{
	if (WARN_ON_ONCE(!ext->length || ext->length > len))
		return -EIO;
	if (ext->type == VDIMG_EXT_DATA && WARN_ON_ONCE(!ext->file))
		return -EIO;
	return 0;
}

static int vdimg_read_encoded(struct vdimg_layer_k *l, const struct vdimg_extent *ext,
			      struct iov_iter *iter)
{
	void *buf;
	int ret;

	if (!l->img.fmt->read_encoded)
		return -EIO;
	buf = kvmalloc(ext->length, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	ret = l->img.fmt->read_encoded(&l->img, ext, buf);
	if (!ret && copy_to_iter(buf, ext->length, iter) != ext->length)
		ret = -EFAULT;
	kvfree(buf);
	return ret;
}

/*
 * Read [pos, pos + len) as the chain made of layers 0..top sees it, into @iter. Walks down the
 * chain without recursion: each layer either has the bytes, or says UNALLOCATED for a prefix, which
 * is then asked of the layer below; below the base (top < 0) is zeros.
 */
static int vdimg_read_chain(struct vdimg_device *dev, int top, struct iov_iter *iter, u64 pos,
			    u64 len)
{
	while (len) {
		u64 chunk = len;
		int l = top;
		int ret;

		for (;;) {
			struct vdimg_layer_k *layer;
			struct vdimg_extent ext;

			if (l < 0) {
				if (iov_iter_zero(chunk, iter) != chunk)
					return -EFAULT;
				break;
			}
			layer = dev->layers[l];
			if (pos >= layer->img.size) {	/* a shorter parent: zeros past its end */
				l = -1;
				continue;
			}
			chunk = min(chunk, layer->img.size - pos);
			ret = layer->img.fmt->map(&layer->img, pos, chunk, 0, &ext);
			if (!ret)
				ret = vdimg_check_extent(layer, &ext, chunk);
			if (ret)
				return ret;
			chunk = ext.length;
			if (ext.type == VDIMG_EXT_UNALLOCATED) {
				l--;
				continue;
			}
			if (ext.type == VDIMG_EXT_DATA)
				ret = vdimg_file_iter(ext.file, iter, chunk, ext.file_offset,
						      false, ext.flags & VDIMG_EXT_PAGE_SHARED);
			else if (ext.type == VDIMG_EXT_ZERO)
				ret = iov_iter_zero(chunk, iter) == chunk ? 0 : -EFAULT;
			else if (ext.type == VDIMG_EXT_ENCODED)
				ret = vdimg_read_encoded(layer, &ext, iter);
			else
				ret = -EIO;
			if (ret)
				return ret;
			break;
		}
		pos += chunk;
		len -= chunk;
	}
	return 0;
}

/*
 * Read [pos, pos + len) of the layers below the top into @iter. The top clips them as every layer
 * clips the ones below it: fill past the top's own end (a last, partial cluster over a larger
 * parent) is zeros.
 */
static int vdimg_read_below(struct vdimg_device *dev, struct iov_iter *iter, u64 pos, u64 len)
{
	u64 size = vdimg_top(dev)->img.size;
	u64 n = pos < size ? min(len, size - pos) : 0;
	int ret = vdimg_read_chain(dev, (int)dev->nr_layers - 2, iter, pos, n);

	if (!ret && iov_iter_zero(len - n, iter) != len - n)
		ret = -EFAULT;
	return ret;
}

/*
 * A NEW unit past the end of the file (VDIMG_EXT_FILL_HOLE) whose fill would be zeros: allocate it
 * with fallocate(), which extends the file over the whole unit without writing (the unit reads as
 * zeros, and later writes into it do not extend the file) and never shrinks the file or touches
 * data written meanwhile, as a truncate could. Return: 0 (only the caller's data needs writing),
 * 1 (the fill must be written after all: the file system cannot), or an error (ENOSPC...).
 */
static int vdimg_alloc_hole(struct vdimg_file *vf, u64 start, u64 len)
{
	bool locked;
	int ret;

	if (!READ_ONCE(vf->holes))
		return 1;
	locked = vdimg_file_write_begin(vf, start + len);
	ret = vfs_fallocate(vf->filp, 0, start, len);
	vdimg_file_write_end(vf, locked);
	if (ret != -EOPNOTSUPP)
		return ret;
	WRITE_ONCE(vf->holes, false);
	return 1;
}

/*
 * Sparse tails. File systems take a write past the end of a file one at a time (ext4: the inode
 * lock held exclusively, the write waited for), so writing new units at an image's end, each past
 * the end of the file, would go at the speed of one synchronous write at a time, and a fallocate()
 * per unit waits for every direct I/O in flight on the file. Instead the file is extended ahead
 * of its data, by a truncate, in steps of an eighth of its size (1 to 16 MiB): the tail is a hole,
 * reads as zeros, takes no space, and new units in it are written as into any hole of a file (as
 * loop writes a sparse file), the rest of a unit left a hole. vf->end is then the file's size for
 * the image (vdimg_file_size()); detach trims the tail (vdimg_file_trim_tail()). After a crash
 * the file can keep up to one step of sparse tail past the image's end.
 *
 * The truncate sets a size computed from the one it read, so nothing else may change the size
 * meanwhile: a unit that is not new to the file (a slot given back and reused) can still lie past
 * its end, and its write would extend the file and then be cut off by a truncate to a size below
 * it. Every write that ends past the end of the file therefore takes vf->size_lock as the truncate
 * does (vdimg_file_write_begin()).
 */
#define VDIMG_AHEAD_MIN		SZ_1M
#define VDIMG_AHEAD_MAX		SZ_16M

/*
 * Make [.., @end) of @vf, a NEW unit past the image's end (VDIMG_EXT_FILL_HOLE), part of the
 * file. Return: true when it is (a hole where not written), false when the file cannot be
 * extended ahead (no holes, or a truncate failed).
 */
static bool vdimg_file_ahead(struct vdimg_file *vf, u64 end)
{
	struct inode *inode = file_inode(vf->filp);
	u64 size, step, target;
	bool ok = true;
	int ret;

	if (!READ_ONCE(vf->holes) || READ_ONCE(vf->no_ahead))
		return false;
	vdimg_file_written(vf, end);
	if (end <= i_size_read(inode))
		return true;
	mutex_lock(&vf->size_lock);
	size = i_size_read(inode);
	if (end > size) {
		/* the image's end: what is in the file, and what writes in flight will add */
		vdimg_file_written(vf, size);
		/* pairs with vdimg_file_size(): @end is set before readers switch to it */
		smp_store_release(&vf->ahead, true);
		step = clamp_t(u64, size / 8, VDIMG_AHEAD_MIN, VDIMG_AHEAD_MAX);
		target = ALIGN(end, (u64)VDIMG_AHEAD_MIN) + step;
		ret = target <= (u64)inode->i_sb->s_maxbytes ?
		      vfs_truncate(&vf->filp->f_path, target) : -EFBIG;
		if (ret) {
			/* root squashed on NFS, a size limit: fallocate() or the fill, as before */
			WRITE_ONCE(vf->no_ahead, true);
			ok = false;
		}
	}
	mutex_unlock(&vf->size_lock);
	return ok;
}

/*
 * A whole fill as one list of segments, written with one call (direct I/O when the file and the
 * segments allow it, like the data it surrounds): ZERO_PAGE for zeros, pages allocated here for
 * data from the layers below, and the caller's own segments for its data, which are not copied.
 */
struct vdimg_fill {
	struct bio_vec *bv;
	unsigned int nr;
	struct page **pages;		/* allocated here, freed by vdimg_fill_free() */
	unsigned int nr_pages;
};

/* Append [pos, pos + len) of the fill: zeros, or what the layers below hold there. */
static int vdimg_fill_add(struct vdimg_device *dev, struct vdimg_fill *f, u64 pos, u64 len,
			  bool zero)
{
	unsigned int first = f->nr;
	struct iov_iter it;
	u64 left = len;

	while (left) {
		unsigned int n = min_t(u64, left, PAGE_SIZE);
		struct page *pg = ZERO_PAGE(0);

		if (!zero) {
			pg = alloc_page(GFP_KERNEL);
			if (!pg)
				return -ENOMEM;
			f->pages[f->nr_pages++] = pg;
		}
		f->bv[f->nr++] = (struct bio_vec){ .bv_page = pg, .bv_len = n, .bv_offset = 0 };
		left -= n;
	}
	if (zero || !len)
		return 0;
	iov_iter_bvec(&it, ITER_DEST, &f->bv[first], f->nr - first, len);
	return vdimg_read_below(dev, &it, pos, len);
}

/* Append the next @len bytes of the caller's @iter (a bio_vec iterator) without copying them. */
static void vdimg_fill_data(struct vdimg_fill *f, const struct iov_iter *iter, u64 len)
{
	const struct bio_vec *src = iter->bvec;
	size_t skip = iter->iov_offset;

	while (len) {
		struct bio_vec b = *src++;

		if (skip >= b.bv_len) {
			skip -= b.bv_len;
			continue;
		}
		b.bv_offset += skip;
		b.bv_len = min_t(u64, b.bv_len - skip, len);
		skip = 0;
		f->bv[f->nr++] = b;
		len -= b.bv_len;
	}
}

static void vdimg_fill_free(struct vdimg_fill *f)
{
	while (f->nr_pages)
		__free_page(f->pages[--f->nr_pages]);
	kvfree(f->pages);
	kvfree(f->bv);
}

/*
 * Write a NEW extent: the caller's bytes plus the fill around them (from the layers below, or
 * zeros), then let the backend commit the allocation. The allocation unit is range-locked by the
 * caller. @iter is a bio_vec iterator (requests, and write-zeroes' zero pages).
 */
static int vdimg_write_new(struct vdimg_device *dev, const struct vdimg_extent *ext,
			   struct iov_iter *iter)
{
	struct vdimg_layer_k *top = vdimg_top(dev);
	bool zero = ext->flags & VDIMG_EXT_FILL_ZERO || dev->nr_layers < 2;
	bool shared = ext->flags & VDIMG_EXT_PAGE_SHARED;
	struct vdimg_fill f = {};
	unsigned int npages;
	struct iov_iter it;
	u64 head, tail, fill_end;
	bool hole;
	int ret;

	if (!ext->fill_length) {
		if (ext->flags & VDIMG_EXT_FILL_HOLE)
			vdimg_file_ahead(ext->file, ext->file_offset + ext->length);
		goto data_only;
	}
	fill_end = ext->fill_offset + ext->fill_length;
	if (WARN_ON_ONCE(ext->fill_offset > ext->offset ||
			 ext->offset + ext->length > fill_end ||
			 ext->fill_length > VDIMG_MAX_FILL ||
			 ext->file_offset < ext->offset - ext->fill_offset ||
			 !iov_iter_is_bvec(iter))) {
		ret = -EIO;
		goto commit;
	}
	head = ext->offset - ext->fill_offset;
	tail = fill_end - (ext->offset + ext->length);
	hole = (ext->flags & VDIMG_EXT_FILL_HOLE) &&
	       vdimg_file_ahead(ext->file, ext->file_offset - head + ext->fill_length);
	if (!head && !tail)
		goto data_only;		/* the caller writes the whole unit */
	if (hole && zero)
		goto data_only;		/* the rest of the unit is a hole of the file */
	if ((ext->flags & VDIMG_EXT_FILL_HOLE) && zero) {
		ret = vdimg_alloc_hole(ext->file, ext->file_offset - head, ext->fill_length);
		if (ret < 0)
			goto commit;
		if (!ret)
			goto data_only;
	}
	npages = DIV_ROUND_UP(head, PAGE_SIZE) + DIV_ROUND_UP(tail, PAGE_SIZE);
	f.bv = kvmalloc_array(npages + iter->nr_segs, sizeof(*f.bv), GFP_KERNEL);
	if (!zero)
		f.pages = kvmalloc_array(npages, sizeof(*f.pages), GFP_KERNEL);
	if (!f.bv || (!zero && !f.pages)) {
		ret = -ENOMEM;
		goto commit;
	}
	ret = vdimg_fill_add(dev, &f, ext->fill_offset, head, zero);
	if (ret)
		goto commit;
	vdimg_fill_data(&f, iter, ext->length);
	ret = vdimg_fill_add(dev, &f, ext->offset + ext->length, tail, zero);
	if (ret)
		goto commit;
	iov_iter_bvec(&it, ITER_SOURCE, f.bv, f.nr, ext->fill_length);
	ret = vdimg_file_iter(ext->file, &it, ext->fill_length, ext->file_offset - head, true,
			      shared);
	if (!ret)
		iov_iter_advance(iter, ext->length);
	goto commit;
data_only:
	ret = vdimg_file_iter(ext->file, iter, ext->length, ext->file_offset, true, shared);
commit:
	vdimg_fill_free(&f);
	if (!ret)
		ret = top->img.fmt->commit(&top->img, ext);
	if (ret && top->img.fmt->abort)
		top->img.fmt->abort(&top->img, ext);
	return ret;
}

/*
 * NEW extents that the caller's data fills completely and that follow each other in the file (a
 * large write over several small units, VMDK grains say) are written with one I/O, then committed
 * one by one.
 */
#define VDIMG_BATCH	8

struct vdimg_batch {
	struct vdimg_extent ext[VDIMG_BATCH];
	unsigned int nr;
	u64 len;
};

static bool vdimg_batch_takes(const struct vdimg_batch *b, const struct vdimg_extent *ext)
{
	if (!(ext->flags & VDIMG_EXT_NEW) || (ext->flags & VDIMG_EXT_PAGE_SHARED) ||
	    (ext->fill_length && (ext->fill_offset != ext->offset ||
				  ext->fill_length != ext->length)))
		return false;
	return !b->nr || (b->nr < VDIMG_BATCH && ext->file == b->ext[0].file &&
			  ext->file_offset == b->ext[0].file_offset + b->len);
}

/* Write the batch's data, then commit its extents (or give them all back if that failed). */
static int vdimg_batch_write(struct vdimg_device *dev, struct vdimg_batch *b,
			     struct iov_iter *iter, int ret)
{
	struct vdimg_image *img = &vdimg_top(dev)->img;
	unsigned int i;

	if (!b->nr)
		return ret;
	if (!ret && (b->ext[b->nr - 1].flags & VDIMG_EXT_FILL_HOLE))
		vdimg_file_ahead(b->ext[0].file, b->ext[0].file_offset + b->len);
	if (!ret)
		ret = vdimg_file_iter(b->ext[0].file, iter, b->len, b->ext[0].file_offset, true,
				      false);
	for (i = 0; i < b->nr; i++) {
		if (!ret)
			ret = img->fmt->commit(img, &b->ext[i]);
		if (ret && img->fmt->abort)
			img->fmt->abort(img, &b->ext[i]);
	}
	b->nr = 0;
	b->len = 0;
	return ret;
}

/* Write [pos, pos + len) from @iter to the top layer, allocating as needed. */
static int vdimg_write_top(struct vdimg_device *dev, struct iov_iter *iter, u64 pos, u64 len)
{
	struct vdimg_layer_k *top = vdimg_top(dev);
	struct vdimg_range range;
	bool locked = vdimg_lock_units(dev, &range, pos, len);
	struct vdimg_batch batch;
	int ret = 0;

	batch.nr = 0;
	batch.len = 0;
	while (len) {
		struct vdimg_extent ext;

		ret = top->img.fmt->map(&top->img, pos, len, VDIMG_MAP_WRITE, &ext);
		if (!ret)
			ret = vdimg_check_extent(top, &ext, len);
		if (!ret && ext.type != VDIMG_EXT_DATA)
			ret = -EIO;	/* a write map must give DATA */
		if (ret)
			break;
		if (!vdimg_batch_takes(&batch, &ext))
			ret = vdimg_batch_write(dev, &batch, iter, 0);
		if (!ret && vdimg_batch_takes(&batch, &ext)) {
			batch.ext[batch.nr++] = ext;
			batch.len += ext.length;
		} else if (!ret && (ext.flags & VDIMG_EXT_NEW)) {
			ret = vdimg_write_new(dev, &ext, iter);
		} else if (!ret) {
			ret = vdimg_file_iter(ext.file, iter, ext.length, ext.file_offset, true,
					      ext.flags & VDIMG_EXT_PAGE_SHARED);
		} else if (ext.flags & VDIMG_EXT_NEW && top->img.fmt->abort) {
			top->img.fmt->abort(&top->img, &ext);
		}
		if (ret)
			break;
		pos += ext.length;
		len -= ext.length;
	}
	ret = vdimg_batch_write(dev, &batch, iter, ret);
	if (locked)
		vdimg_range_unlock(dev, &range);
	return ret;
}

/* Write zeros through the normal write path, from ZERO_PAGE (one bio_vec per page). */
static int vdimg_write_zeroes(struct vdimg_device *dev, u64 pos, u64 len)
{
	struct bio_vec bv[16];
	unsigned int i;
	int ret = 0;

	for (i = 0; i < ARRAY_SIZE(bv); i++)
		bv[i] = (struct bio_vec){ .bv_page = ZERO_PAGE(0), .bv_len = PAGE_SIZE };
	while (len && !ret) {
		u64 n = min_t(u64, len, ARRAY_SIZE(bv) * PAGE_SIZE);
		struct iov_iter it;

		iov_iter_bvec(&it, ITER_SOURCE, bv, DIV_ROUND_UP(n, PAGE_SIZE), n);
		ret = vdimg_write_top(dev, &it, pos, n);
		pos += n;
		len -= n;
	}
	return ret;
}

static int vdimg_discard(struct vdimg_device *dev, u64 pos, u64 len, bool zeroes)
{
	struct vdimg_layer_k *top = vdimg_top(dev);
	unsigned int flags = 0;
	struct vdimg_range range;
	bool locked;
	int ret = -EOPNOTSUPP;

	/* in a differencing layer a discarded range must not show the parent again */
	if (zeroes || dev->nr_layers > 1)
		flags |= VDIMG_DISCARD_ZEROES;
	if (top->img.fmt->discard) {
		locked = vdimg_lock_units(dev, &range, pos, len);
		ret = top->img.fmt->discard(&top->img, pos, len, flags);
		if (locked)
			vdimg_range_unlock(dev, &range);
	}
	if (ret != -EOPNOTSUPP)
		return ret;
	if (flags & VDIMG_DISCARD_ZEROES)
		return vdimg_write_zeroes(dev, pos, len);
	return 0;	/* discard is a hint */
}

/*
 * Write-zeroes that must keep the space allocated (REQ_NOUNMAP): the backend may zero it in place
 * (VDIMG_DISCARD_NOUNMAP), else zeros are written through the normal write path.
 */
static int vdimg_zero_keep(struct vdimg_device *dev, u64 pos, u64 len)
{
	struct vdimg_layer_k *top = vdimg_top(dev);
	struct vdimg_range range;
	int ret = -EOPNOTSUPP;
	bool locked;

	if (top->img.fmt->discard) {
		locked = vdimg_lock_units(dev, &range, pos, len);
		ret = top->img.fmt->discard(&top->img, pos, len,
					    VDIMG_DISCARD_ZEROES | VDIMG_DISCARD_NOUNMAP);
		if (locked)
			vdimg_range_unlock(dev, &range);
	}
	if (ret == -EOPNOTSUPP)
		ret = vdimg_write_zeroes(dev, pos, len);
	return ret;
}

/*
 * ---- freed-space drain ----
 *
 * A backend may give file space back at ->flush() (qcow2: clusters discarded since the last flush)
 * and hand it out again to another virtual offset. A write that mapped the old place before the
 * discard and is still in flight (an async kiocb) would then land in someone else's data. So every
 * request but a flush counts itself in dev->inflight[epoch] from before its first map until it
 * completes, and a flush whose backend has such frees pending (->frees_pending(), which also fixes
 * which frees this flush may do) flips the epoch and waits until the old epoch's counter drains.
 *
 * Ordering: vdimg_epoch_enter() increments, then (full barrier) re-reads the epoch and maps only
 * after that; vdimg_drain() flips the epoch, then (full barrier) reads the old counter. The frees
 * this flush may do were fixed by ->frees_pending() before the flip, so their discards updated the
 * tables before it (under the backend's lock). Either the drain sees a request's increment and
 * waits for it, or that request's re-read sees the new epoch: it then counts in the new epoch and
 * maps after the flip, i.e. sees the updated tables and cannot use a place being freed. A request
 * that sees the old epoch again after its increment is therefore always waited for, also by a
 * later drain of the same counter (the re-read makes a stale epoch impossible to count in).
 */
static void vdimg_epoch_enter(struct vdimg_device *dev, struct vdimg_cmd *cmd)
{
	unsigned int e;

	for (;;) {
		e = READ_ONCE(dev->epoch) & 1;
		atomic_inc(&dev->inflight[e]);
		/* order the count before the epoch re-read; pairs with the drain's flip and read */
		smp_mb__after_atomic();
		if ((READ_ONCE(dev->epoch) & 1) == e)
			break;
		if (atomic_dec_and_test(&dev->inflight[e]))	/* a drain flipped meanwhile */
			wake_up_var(&dev->inflight[e]);
	}
	cmd->epoch = e + 1;
}

/* The request's I/O is over (any context): stop counting it. */
static void vdimg_epoch_exit(struct vdimg_device *dev, struct vdimg_cmd *cmd)
{
	unsigned int e = cmd->epoch;

	if (!e)
		return;
	cmd->epoch = 0;
	if (atomic_dec_and_test(&dev->inflight[e - 1]))
		wake_up_var(&dev->inflight[e - 1]);
}

/* Wait for every request counted before now. Called with drain_busy held. */
static void vdimg_drain(struct vdimg_device *dev)
{
	unsigned int old = dev->epoch & 1;

	WRITE_ONCE(dev->epoch, old ^ 1);
	smp_mb();	/* the flip before reading the counter; pairs with vdimg_epoch_enter() */
	wait_var_event(&dev->inflight[old], !atomic_read(&dev->inflight[old]));
}

/*
 * ->flush() of the top layer; first, if it frees space, the drain (serialized with other flushes)
 */
static int vdimg_flush_top(struct vdimg_device *dev, struct vdimg_layer_k *top)
{
	int ret;

	if (!top->img.fmt->frees_pending)
		return top->img.fmt->flush(&top->img);
	wait_var_event(&dev->drain_busy, !atomic_cmpxchg_acquire(&dev->drain_busy, 0, 1));
	if (top->img.fmt->frees_pending(&top->img))
		vdimg_drain(dev);
	ret = top->img.fmt->flush(&top->img);
	atomic_set_release(&dev->drain_busy, 0);
	wake_up_var(&dev->drain_busy);
	return ret;
}

int vdimg_flush_layers(struct vdimg_device *dev)
{
	struct vdimg_layer_k *top = vdimg_top(dev);
	int ret = 0;

	if (top->img.flags & VDIMG_IMG_READ_ONLY)
		return 0;
	/* guest data in an external data file must be durable before the tables that point at it */
	if (top->data_vf.filp) {
		ret = vfs_fsync(top->data_vf.filp, 0);
		if (ret)
			return ret;
	}
	if (top->img.fmt->flush)
		ret = vdimg_flush_top(dev, top);
	if (!ret)
		ret = vfs_fsync(top->vf.filp, 0);
	return ret;
}

/* ---- requests ---- */

static void vdimg_rq_iter(struct vdimg_cmd *cmd, struct iov_iter *iter, unsigned int dir)
{
	struct request *rq = cmd->rq;
	struct bio *bio = rq->bio;
	struct req_iterator rq_iter;
	struct bio_vec tmp, *bvec;
	unsigned int nr_bvec = 0, offset = 0;

	rq_for_each_bvec(tmp, rq, rq_iter)
		nr_bvec++;
	if (cmd->bvec) {
		bvec = cmd->bvec;
		rq_for_each_bvec(tmp, rq, rq_iter) {
			*bvec = tmp;
			bvec++;
		}
		bvec = cmd->bvec;
	} else {
		offset = bio->bi_iter.bi_bvec_done;
		bvec = __bvec_iter_bvec(bio->bi_io_vec, bio->bi_iter);
	}
	iov_iter_bvec(iter, dir, bvec, nr_bvec, blk_rq_bytes(rq));
	iter->iov_offset = offset;
}

/* The request spans several bios: the iterator needs one array of their segments. */
static int vdimg_rq_prepare(struct vdimg_cmd *cmd)
{
	struct request *rq = cmd->rq;
	struct req_iterator rq_iter;
	struct bio_vec tmp;
	unsigned int nr_bvec = 0;

	cmd->bvec = NULL;
	if (!rq->bio || rq->bio == rq->biotail)
		return 0;
	rq_for_each_bvec(tmp, rq, rq_iter)
		nr_bvec++;
	cmd->bvec = kmalloc_array(nr_bvec, sizeof(*cmd->bvec), GFP_NOIO);
	return cmd->bvec ? 0 : -ENOMEM;
}

static void vdimg_aio_done(struct vdimg_cmd *cmd)
{
	if (atomic_dec_and_test(&cmd->ref))
		blk_mq_complete_request(cmd->rq);
}

/*
 * A read ended early at the end of the backing file: the rest reads as zeros (as in the sync path).
 */
static void vdimg_zero_tail(struct request *rq, unsigned int done)
{
	struct req_iterator it;
	struct bio_vec bv;
	unsigned int pos = 0;

	rq_for_each_segment(bv, rq, it) {
		if (pos + bv.bv_len > done) {
			unsigned int skip = done > pos ? done - pos : 0;

			memzero_page(bv.bv_page, bv.bv_offset + skip, bv.bv_len - skip);
		}
		pos += bv.bv_len;
	}
}

/* the kernel log line of a failed request, from the worker and from a kiocb's completion */
static void vdimg_log_failure(struct vdimg_device *dev, struct request *rq, int ret)
{
	pr_err_ratelimited("vdimg%d: %s of %u bytes at sector %llu (%s) failed: %d\n",
			   dev->index, blk_op_str(req_op(rq)), blk_rq_bytes(rq),
			   (unsigned long long)blk_rq_pos(rq), vdimg_top(dev)->name, ret);
}

static void vdimg_aio_complete(struct kiocb *iocb, long ret)
{
	struct vdimg_cmd *cmd = container_of(iocb, struct vdimg_cmd, iocb);
	struct request *rq = cmd->rq;

	if (req_op(rq) == REQ_OP_WRITE)
		kiocb_end_write(iocb);
	if (ret >= 0 && ret < blk_rq_bytes(rq)) {
		if (req_op(rq) == REQ_OP_READ)
			vdimg_zero_tail(rq, ret);
		else
			ret = -EIO;
	}
	if (ret < 0)
		vdimg_log_failure(rq->q->queuedata, rq, ret);
	cmd->ret = ret < 0 ? ret : 0;
	vdimg_aio_done(cmd);
}

/*
 * One asynchronous kiocb for the whole request on @layer's file at @file_pos.
 * Return: -EIOCBQUEUED (the callback completes the request).
 */
static int vdimg_submit_aio(struct vdimg_cmd *cmd, struct vdimg_layer_k *layer, bool data_file,
			    u64 file_pos, bool write, bool shared)
{
	struct file *file = data_file ? layer->data_vf.filp : layer->vf.filp;
	unsigned int align = data_file ? layer->data_dio_align : layer->dio_align;
	bool dio = data_file ? layer->data_dio : layer->dio;
	struct iov_iter iter;
	ssize_t ret;

	vdimg_rq_iter(cmd, &iter, write ? ITER_SOURCE : ITER_DEST);
	if (write)
		vdimg_file_written(data_file ? &layer->data_vf : &layer->vf,
				   file_pos + blk_rq_bytes(cmd->rq));
	atomic_set(&cmd->ref, 2);
	cmd->iocb.ki_pos = file_pos;
	cmd->iocb.ki_filp = file;
	cmd->iocb.ki_complete = vdimg_aio_complete;
	cmd->iocb.ki_flags = 0;
	cmd->iocb.ki_ioprio = IOPRIO_PRIO_VALUE(IOPRIO_CLASS_NONE, 0);
	if (dio && !shared && !((file_pos | blk_rq_bytes(cmd->rq)) & (align - 1)))
		cmd->iocb.ki_flags |= IOCB_DIRECT;
	if (write) {
		kiocb_start_write(&cmd->iocb);
		ret = file->f_op->write_iter(&cmd->iocb, &iter);
	} else {
		ret = file->f_op->read_iter(&cmd->iocb, &iter);
	}
	if (ret != -EIOCBQUEUED)
		vdimg_aio_complete(&cmd->iocb, ret);
	vdimg_aio_done(cmd);
	return -EIOCBQUEUED;
}

/*
 * Find the layer whose single DATA extent (in the layer's file or its external data file) covers
 * the whole request, for one asynchronous kiocb.
 * Writes look only at the top and only at data that may be written in place: only the write map
 * knows that (a qcow2 cluster shared with a snapshot reads as DATA but must be copied first), so
 * writes ask map(WRITE | NOWAIT), which answers without allocating or sleeping, or -EAGAIN; a
 * NEW extent it still returns is given back and the request takes the worker path.
 */
static struct vdimg_layer_k *vdimg_fast_layer(struct vdimg_device *dev, u64 pos, u64 len,
					      bool write, u64 *file_pos, bool *data_file,
					      bool *shared)
{
	unsigned int mflags = write ? VDIMG_MAP_WRITE | VDIMG_MAP_NOWAIT : 0;
	int l = dev->nr_layers - 1;

	for (; l >= 0; l--) {
		struct vdimg_layer_k *layer = dev->layers[l];
		struct vdimg_extent ext;

		if (pos >= layer->img.size || len > layer->img.size - pos)
			return NULL;
		if (layer->img.fmt->map(&layer->img, pos, len, mflags, &ext))
			return NULL;
		if (ext.flags & VDIMG_EXT_NEW) {
			if (layer->img.fmt->abort)
				layer->img.fmt->abort(&layer->img, &ext);
			return NULL;
		}
		if (ext.length != len)
			return NULL;
		/* a write past the end of the file takes the worker's path and vf->size_lock */
		if (write && ext.type == VDIMG_EXT_DATA &&
		    ext.file_offset + len > i_size_read(file_inode(ext.file->filp)))
			return NULL;
		if (ext.type == VDIMG_EXT_DATA &&
		    (ext.file == &layer->vf ||
		     (layer->data_vf.filp && ext.file == &layer->data_vf))) {
			*file_pos = ext.file_offset;
			*data_file = ext.file == &layer->data_vf;
			*shared = ext.flags & VDIMG_EXT_PAGE_SHARED;
			return layer;
		}
		if (ext.type != VDIMG_EXT_UNALLOCATED || write)
			return NULL;
	}
	return NULL;
}

static int vdimg_do_rw(struct vdimg_device *dev, struct vdimg_cmd *cmd, bool write)
{
	struct request *rq = cmd->rq;
	u64 pos = (u64)blk_rq_pos(rq) << SECTOR_SHIFT;
	u64 len = blk_rq_bytes(rq);
	struct vdimg_layer_k *layer;
	struct iov_iter iter;
	bool data_file, shared;
	u64 file_pos;
	int ret;

	if (pos >= dev->size || len > dev->size - pos)
		return -EIO;
	ret = vdimg_rq_prepare(cmd);
	if (ret)
		return ret;
	if (!(rq->cmd_flags & REQ_FUA)) {
		layer = vdimg_fast_layer(dev, pos, len, write, &file_pos, &data_file, &shared);
		if (layer)
			return vdimg_submit_aio(cmd, layer, data_file, file_pos, write, shared);
	}
	vdimg_rq_iter(cmd, &iter, write ? ITER_SOURCE : ITER_DEST);
	if (!write)
		return vdimg_read_chain(dev, dev->nr_layers - 1, &iter, pos, len);
	ret = vdimg_write_top(dev, &iter, pos, len);
	/* the data is written: a drain in the flush must not wait for this request */
	vdimg_epoch_exit(dev, cmd);
	if (!ret && (rq->cmd_flags & REQ_FUA))
		ret = vdimg_flush_layers(dev);
	return ret;
}

static int vdimg_handle(struct vdimg_device *dev, struct vdimg_cmd *cmd)
{
	struct request *rq = cmd->rq;
	u64 pos = (u64)blk_rq_pos(rq) << SECTOR_SHIFT;
	u64 len = blk_rq_bytes(rq);

	/* the block layer only warns about writes to a read-only disk (BLKROSET can clear it) */
	if (op_is_write(req_op(rq)) && req_op(rq) != REQ_OP_FLUSH &&
	    (vdimg_top(dev)->img.flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	switch (req_op(rq)) {
	case REQ_OP_READ:
		return vdimg_do_rw(dev, cmd, false);
	case REQ_OP_WRITE:
		return vdimg_do_rw(dev, cmd, true);
	case REQ_OP_FLUSH:
		return vdimg_flush_layers(dev);
	case REQ_OP_DISCARD:
	case REQ_OP_WRITE_ZEROES:
		if (pos >= dev->size || len > dev->size - pos)
			return -EIO;
		if (req_op(rq) == REQ_OP_WRITE_ZEROES && (rq->cmd_flags & REQ_NOUNMAP))
			return vdimg_zero_keep(dev, pos, len);
		return vdimg_discard(dev, pos, len, req_op(rq) == REQ_OP_WRITE_ZEROES);
	default:
		return -EOPNOTSUPP;
	}
}

static void vdimg_cmd_work(struct work_struct *work)
{
	struct vdimg_cmd *cmd = container_of(work, struct vdimg_cmd, work);
	struct vdimg_device *dev = cmd->rq->q->queuedata;
	unsigned int noio = memalloc_noio_save();
	int ret;

	if (req_op(cmd->rq) != REQ_OP_FLUSH)
		vdimg_epoch_enter(dev, cmd);
	ret = vdimg_handle(dev, cmd);
	memalloc_noio_restore(noio);
	if (ret == -EIOCBQUEUED)
		return;
	if (ret)
		vdimg_log_failure(dev, cmd->rq, ret);
	cmd->ret = ret;
	blk_mq_complete_request(cmd->rq);
}

static blk_status_t vdimg_queue_rq(struct blk_mq_hw_ctx *hctx, const struct blk_mq_queue_data *bd)
{
	struct request *rq = bd->rq;
	struct vdimg_cmd *cmd = blk_mq_rq_to_pdu(rq);
	struct vdimg_device *dev = rq->q->queuedata;

	blk_mq_start_request(rq);
	if (READ_ONCE(dev->state) != VDIMG_STATE_BOUND &&
	    READ_ONCE(dev->state) != VDIMG_STATE_RUNDOWN)
		return BLK_STS_IOERR;
	cmd->ret = 0;
	queue_work(dev->wq, &cmd->work);
	return BLK_STS_OK;
}

static void vdimg_complete_rq(struct request *rq)
{
	struct vdimg_cmd *cmd = blk_mq_rq_to_pdu(rq);

	vdimg_epoch_exit(rq->q->queuedata, cmd);
	kfree(cmd->bvec);
	cmd->bvec = NULL;
	blk_mq_end_request(rq, errno_to_blk_status(cmd->ret));
}

static int vdimg_init_request(struct blk_mq_tag_set *set, struct request *rq,
			      unsigned int hctx_idx, unsigned int numa_node)
{
	struct vdimg_cmd *cmd = blk_mq_rq_to_pdu(rq);

	cmd->rq = rq;
	cmd->bvec = NULL;
	cmd->epoch = 0;
	INIT_WORK(&cmd->work, vdimg_cmd_work);
	return 0;
}

const struct blk_mq_ops vdimg_mq_ops = {
	.queue_rq = vdimg_queue_rq,
	.complete = vdimg_complete_rq,
	.init_request = vdimg_init_request,
};
