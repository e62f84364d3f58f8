// SPDX-License-Identifier: GPL-2.0
/*
 * QED mapping and allocation: L2 lookups, ->map() for reads and writes (new clusters allocated at
 * the end of the file, new L2 tables linked on flush), ->commit(), ->abort() and ->discard() (zero
 * markers, write-zeroes). Kernel-shared: compiled into the module and the userspace library; only
 * include/vdimg/platform.h services here.
 */
#include "qed.h"

/* ---- mapping ---- */

/*
 * The cached page holding the L2 entry of virtual offset @off: *@out NULL when no L2 table is
 * linked (or, lenient, the link is bad). *@idx is the entry's index in the page.
 */
static int qed_l2_lookup(struct vdimg_image *img, u64 off, bool nowait, struct vdimg_ct_slot **out,
			 u32 *idx)
{
	struct qed *q = QD(img);
	u64 l1i = off >> (q->cluster_bits + q->tbits), l2off, byte;
	u64 i = (off >> q->cluster_bits) & ((1ULL << q->tbits) - 1);

	*out = NULL;
	*idx = 0;
	if (l1i >= q->l1_entries)
		return 0;
	l2off = q->l1[l1i];
	if (!l2off)
		return 0;
	if (!qed_table_ok(q, l2off)) {
		if (q->lenient)
			return 0;
		return vdimg_corrupt(img, "L1 entry %llu points at a bad L2 table offset %#llx",
				     (unsigned long long)l1i, (unsigned long long)l2off);
	}
	byte = i * 8;
	*idx = (byte & (q->psize - 1)) / 8;
	l2off += ALIGN_DOWN(byte, (u64)q->psize);
	if (nowait) {
		*out = vdimg_ct_find(&q->l2c, l2off);
		return *out ? 0 : -EAGAIN;
	}
	return qed_cache_get(img, l2off, false, out);
}

/* An L2 entry as the reader sees it: checked, or (lenient) a bad one as unallocated. */
static int qed_entry(struct vdimg_image *img, const struct vdimg_ct_slot *s, u32 i, u64 *e)
{
	struct qed *q = QD(img);

	*e = qed_get(s, i);
	if (qed_data_ok(q, *e))
		return 0;
	if (q->lenient) {
		*e = QED_ENTRY_UNALLOC;
		return 0;
	}
	return vdimg_corrupt(img,
			     "L2 entry %#llx (table page %llu, index %u) is not a valid cluster offset",
			     (unsigned long long)*e, (unsigned long long)s->off, i);
}

/* Read-side mapping, lock held: the longest run of one kind within one cached page. */
static int qed_map_read(struct vdimg_image *img, u64 offset, u64 length, bool nowait,
			struct vdimg_extent *ext)
{
	struct qed *q = QD(img);
	u64 span = (u64)(q->psize / 8) << q->cluster_bits;
	u64 tspan = 1ULL << (q->cluster_bits + q->tbits);
	u64 end = offset + length, pos = offset, e0 = 0, host0 = 0;
	struct vdimg_ct_slot *s;
	u32 i;
	int ret;

	ret = qed_l2_lookup(img, offset, nowait, &s, &i);
	if (ret)
		return ret;
	ext->offset = offset;
	ext->file = img->file;
	if (!s) {
		ext->type = VDIMG_EXT_UNALLOCATED;
		ext->length = min(end, ALIGN_DOWN(offset, tspan) + tspan) - offset;
		return 0;
	}
	end = min(end, ALIGN_DOWN(offset, span) + span);
	while (pos < end) {
		u64 cstart = ALIGN_DOWN(pos, (u64)q->cluster_size), e, host;

		ret = qed_entry(img, s, i, &e);
		if (ret)
			return ret;
		host = e > QED_ENTRY_ZERO ? e + (pos - cstart) : 0;
		if (pos == offset) {
			e0 = e;
			host0 = host;
		} else if (min(e, 2ULL) != min(e0, 2ULL) ||
			   (e > QED_ENTRY_ZERO && host != host0 + (pos - offset))) {
			break;
		}
		pos = min(cstart + q->cluster_size, end);
		i++;
	}
	ext->length = pos - offset;
	if (e0 == QED_ENTRY_UNALLOC) {
		ext->type = VDIMG_EXT_UNALLOCATED;
	} else if (e0 == QED_ENTRY_ZERO) {
		ext->type = VDIMG_EXT_ZERO;
	} else {
		ext->type = VDIMG_EXT_DATA;
		ext->file_offset = host0;
	}
	return 0;
}

static int qed_need_writable(struct vdimg_image *img)
{
	if (!QD(img)->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	return 0;
}

/* Reserve @len bytes at the end of the file (never handed out twice, never given back). */
static int qed_alloc(struct vdimg_image *img, u64 len, u64 *out)
{
	struct qed *q = QD(img);
	u64 end;

	if (check_add_overflow(q->next_alloc, len, &end) || end > QED_MAX_VSIZE) {
		vdimg_err(img, "the image file cannot grow any further");
		return -ENOSPC;
	}
	if (q->fixed_file && end > q->dev_size)
		return vdimg_device_full(img, q->dev_size, "cluster");
	*out = q->next_alloc;
	q->next_alloc = end;
	return 0;
}

/*
 * Link a new, empty L2 table for @offset in the in-memory L1. Its space is past everything ever
 * written (reads as zeros); writing its last page now makes the file cover all of it.
 */
static int qed_new_l2(struct vdimg_image *img, u64 offset)
{
	struct qed *q = QD(img);
	u64 l1i = offset >> (q->cluster_bits + q->tbits), off;
	int ret;
	u64 p;

	if (l1i >= q->l1_entries)
		return -EINVAL;
	ret = qed_alloc(img, q->tbytes, &off);
	if (ret)
		return ret;
	/* on a block device the space holds old bytes: the whole table is written */
	for (p = q->fixed_file ? 0 : q->tbytes - q->psize; !ret && p < q->tbytes; p += q->psize)
		ret = vdimg_file_write(img->file, q->zpage, q->psize, off + p);
	if (ret)
		return ret;
	qed_l1_set(q, l1i, off);
	return 0;
}

/* The page for @offset's entry, creating the L2 table when there is none. */
static int qed_l2_for_write(struct vdimg_image *img, u64 offset, struct vdimg_ct_slot **s, u32 *i)
{
	int ret = qed_l2_lookup(img, offset, false, s, i);

	if (ret || *s)
		return ret;
	ret = qed_new_l2(img, offset);
	if (ret)
		return ret;
	ret = qed_l2_lookup(img, offset, false, s, i);
	if (!ret && !*s)
		ret = -EIO;
	return ret;
}

/*
 * How many clusters from entry @i of page @s (entry @e, at virtual offset @cstart) up to virtual
 * offset @end one NEW extent reserves together: a run of entries equal to @e (unallocated or zero)
 * within the cached page, at most QED_MAX_RUN_BYTES. Contiguous space for a multi-cluster write
 * keeps it one extent on disk even when several writers allocate at once. Lock held.
 */
static u32 qed_new_run(struct vdimg_image *img, const struct vdimg_ct_slot *s, u32 i, u64 e,
		       u64 cstart, u64 end)
{
	struct qed *q = QD(img);
	u32 per_page = q->psize / 8, max = max(QED_MAX_RUN_BYTES >> q->cluster_bits, 1U), n = 1;

	while (n < max && i + n < per_page && cstart + ((u64)n << q->cluster_bits) < end &&
	       qed_get(s, i + n) == e)
		n++;
	return n;
}

/*
 * Write-side mapping, lock held: allocated data as is, else a NEW run of clusters (qed_new_run())
 * to fill and commit.
 */
static int qed_map_write(struct vdimg_image *img, u64 offset, u64 length, struct vdimg_extent *ext)
{
	struct qed *q = QD(img);
	u64 cstart = ALIGN_DOWN(offset, (u64)q->cluster_size), e, host;
	struct vdimg_ct_slot *s;
	u32 i, n;
	int ret;

	ret = qed_map_read(img, offset, length, false, ext);
	if (ret || ext->type == VDIMG_EXT_DATA)
		return ret;
	ret = qed_l2_for_write(img, offset, &s, &i);
	if (ret)
		return ret;
	ret = qed_entry(img, s, i, &e);
	if (ret)
		return ret;
	if (e > QED_ENTRY_ZERO)
		return -EIO;	/* map_read said otherwise under the same lock */
	n = qed_new_run(img, s, i, e, cstart, offset + length);
	/* a device: a shorter run when the longer one would not fit (none: ENOSPC below) */
	if (q->fixed_file && q->dev_size > q->next_alloc)
		n = max_t(u64, min_t(u64, n, (q->dev_size - q->next_alloc) >> q->cluster_bits), 1);
	ret = qed_alloc(img, (u64)n << q->cluster_bits, &host);
	if (ret)
		return ret;
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ext->length = min(offset + length, cstart + ((u64)n << q->cluster_bits)) - offset;
	ext->type = VDIMG_EXT_DATA;
	ext->flags = VDIMG_EXT_NEW | (e == QED_ENTRY_ZERO ? VDIMG_EXT_FILL_ZERO : 0);
	ext->file = img->file;
	ext->file_offset = host + (offset - cstart);
	ext->fill_offset = cstart;
	ext->fill_length = (u64)n << q->cluster_bits;
	/* whole clusters written by the caller need no fill */
	if (n > 1 && offset == cstart && ext->length == ext->fill_length)
		ext->fill_length = 0;
	ext->cookie[0] = host;
	ext->cookie[1] = QED_NEW_MAGIC | e;
	vdimg_ext_hole_check(ext, host);
	return 0;
}

int qed_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	    struct vdimg_extent *ext)
{
	struct qed *q = QD(img);
	bool nowait = flags & VDIMG_MAP_NOWAIT;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	length = min(length, img->size - offset);
	memset(ext, 0, sizeof(*ext));
	if (!vdimg_mutex_lock_nowait(&q->lock, nowait))
		return -EAGAIN;
	if (!(flags & VDIMG_MAP_WRITE)) {
		ret = qed_map_read(img, offset, length, nowait, ext);
	} else {
		ret = qed_need_writable(img);
		if (!ret && nowait) {
			/* only cached, allocated data can be answered without sleeping */
			ret = qed_map_read(img, offset, length, true, ext);
			if (!ret && ext->type != VDIMG_EXT_DATA)
				ret = -EAGAIN;
		} else if (!ret) {
			ret = qed_map_write(img, offset, length, ext);
		}
	}
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

int qed_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct qed *q = QD(img);
	u64 cstart = ALIGN_DOWN(ext->offset, (u64)q->cluster_size);
	/* one cluster, or a run reserved together (qed_new_run()) */
	u64 n = DIV_ROUND_UP(ext->offset + ext->length - cstart, (u64)q->cluster_size), k;
	struct vdimg_ct_slot *s;
	u32 i;
	int ret;

	if (!(ext->flags & VDIMG_EXT_NEW) || (ext->cookie[1] & ~1ULL) != QED_NEW_MAGIC ||
	    !ext->cookie[0] || (ext->cookie[0] & (q->cluster_size - 1)))
		return -EINVAL;
	vdimg_mutex_lock(&q->lock);
	ret = qed_l2_lookup(img, ext->offset, false, &s, &i);
	if (!ret && !s)
		ret = -EIO;	/* map linked the table; it cannot vanish */
	if (!ret && i + n > q->psize / 8)
		ret = -EIO;
	for (k = 0; !ret && k < n; k++)
		if (qed_get(s, i + k) != (ext->cookie[1] & 1))
			ret = -EIO;	/* someone else changed an entry: the range lock failed */
	if (!ret) {
		for (k = 0; k < n; k++)
			qed_set(s, i + k, ext->cookie[0] + (k << q->cluster_bits));
		img->flags |= VDIMG_IMG_DIRTY;
	}
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

/*
 * A NEW cluster that will not be recorded: its space stays reserved (the end of the file only
 * grows, so a reservation is never handed out twice). It may leak, as a crash would leave it.
 */
void qed_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
}

/* ---- discard and write-zeroes ---- */

/* Does [a, b) cover the whole cluster at @cstart (the last one may be short)? */
static bool qed_whole(struct vdimg_image *img, u64 cstart, u64 a, u64 b)
{
	return a == cstart && (b == cstart + QD(img)->cluster_size || b == img->size);
}

/*
 * Allocated clusters stay allocated (QED cannot free space without leaking it): their bytes are
 * punched or zeroed in the file. With ZEROES, unallocated clusters get the zero marker when a
 * backing file could show through; partial ones of those are left to the caller (-EOPNOTSUPP,
 * decided before anything changes).
 */
int qed_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	struct qed *q = QD(img);
	bool zeroes = flags & VDIMG_DISCARD_ZEROES;
	bool parent = img->flags & VDIMG_IMG_HAS_PARENT;
	u64 end, pos, ends[2];
	int ret, k;

	ret = qed_need_writable(img);
	if (ret)
		return ret;
	if (offset >= img->size || !length || length > img->size - offset)
		return -EINVAL;
	end = offset + length;
	vdimg_mutex_lock(&q->lock);
	if (zeroes && parent) {
		/* the partial clusters at either end: unallocated ones would show the parent */
		ends[0] = offset;
		ends[1] = end - 1;
		for (k = 0; k < 2 && !ret; k++) {
			u64 cs = ALIGN_DOWN(ends[k], (u64)q->cluster_size);
			u64 a = max(offset, cs), b = min(end, cs + q->cluster_size);
			struct vdimg_ct_slot *s;
			u64 e = QED_ENTRY_UNALLOC;
			u32 i;

			if (qed_whole(img, cs, a, b))
				continue;
			ret = qed_l2_lookup(img, cs, false, &s, &i);
			if (!ret && s)
				ret = qed_entry(img, s, i, &e);
			if (!ret && e == QED_ENTRY_UNALLOC)
				ret = -EOPNOTSUPP;
		}
	}
	for (pos = offset; pos < end && !ret;) {
		u64 cstart = ALIGN_DOWN(pos, (u64)q->cluster_size);
		u64 b = min(end, cstart + q->cluster_size), e = QED_ENTRY_UNALLOC;
		bool whole = qed_whole(img, cstart, pos, b);
		struct vdimg_ct_slot *s;
		u32 i;

		ret = qed_l2_lookup(img, pos, false, &s, &i);
		if (!ret && s)
			ret = qed_entry(img, s, i, &e);
		if (ret)
			break;
		if (e > QED_ENTRY_ZERO) {
			u64 foff = e + (pos - cstart);

			if (!zeroes) {
				if (whole) {
					ret = vdimg_file_punch(img->file, foff, b - pos);
					if (ret == -EOPNOTSUPP)
						ret = 0;
				}
			} else if (flags & VDIMG_DISCARD_NOUNMAP) {
				ret = vdimg_file_zero_range(img->file, foff, b - pos);
			} else {
				ret = vdimg_file_zero(img->file, foff, b - pos);
			}
		} else if (e == QED_ENTRY_UNALLOC && zeroes && parent && whole) {
			ret = qed_l2_for_write(img, pos, &s, &i);
			if (!ret) {
				qed_set(s, i, QED_ENTRY_ZERO);
				img->flags |= VDIMG_IMG_DIRTY;
			}
		}
		pos = b;
	}
	vdimg_mutex_unlock(&q->lock);
	return ret;
}
