// SPDX-License-Identifier: GPL-2.0
/*
 * The QED backend (qemu's docs/interop/qed_spec): header with feature bits (backing file, the
 * "no probe" raw backing flag, NEED_CHECK), an L1 table held in memory and L2 tables read through a
 * bounded LRU cache of table pages, unallocated / zero-marker / data cluster entries, allocation at
 * the end of the file, discard and write-zeroes, and in userspace create, check/repair and describe.
 * Shared by the module and the userspace library: only include/vdimg/platform.h services here.
 *
 * QED has no refcounts: a cluster belongs to whoever references it, and space is allocated by
 * growing the file. Crash safety: the driver writes a new data cluster (and its fill) before
 * ->commit() records it in a cached L2 page; ->flush() first marks the image NEED_CHECK (once),
 * syncs (the data is durable), writes dirty L2 pages, syncs again and only then writes L1 entries
 * that link new L2 tables. A crash can leak clusters at the end of the file, never point a table at
 * unwritten space. A clean close clears NEED_CHECK; a writable open of a NEED_CHECK image scans every
 * table and drops entries that point outside the file (as qemu does) before clearing it, and a
 * read-only open of one treats such entries as unallocated instead of refusing the image.
 */
#include <vdimg/backend.h>
#include "qed.h"
#ifndef __KERNEL__
#include "tool-ops.h"
#endif

#define QED_MAX_L1_BYTES	(32U << 20)	/* L1 entries kept in memory */
#define QED_PAGE_MAX		(64U << 10)	/* cache unit: a page of an L2 table */
#define QED_CACHE_BYTES		(4U << 20)
#define QED_MAX_SLOTS		128U
#define QED_MAX_VSIZE		(1ULL << 62)
#define QED_MAX_RUN_BYTES	(4U << 20)	/* largest run of clusters one NEW extent reserves */

/* cookie[1] of a NEW extent: the entry it replaces (unallocated or zero) */
#define QED_NEW_MAGIC		0x5145440000000000ULL

struct qed_slot {
	u64 off;			/* file offset of the cached page, 0: empty */
	u64 used;			/* LRU tick */
	bool dirty;
	u8 *data;			/* one page, little-endian entries as on disk */
};

struct qed {
	/* fixed after open */
	u32 cluster_size;
	u32 cluster_bits;
	u32 table_size;			/* clusters per table */
	u32 header_size;		/* clusters */
	u64 tbytes;			/* bytes per table */
	u32 tbits;			/* log2 of entries per table */
	u32 psize;			/* cache page size: min(tbytes, QED_PAGE_MAX) */
	u64 features, compat, autoclear;
	u64 l1_offset;
	u64 vsize;
	u32 backing_off, backing_len;
	bool writable;
	bool lenient;			/* read-only NEED_CHECK image: bad entries read as unallocated */

	vdimg_mutex_t lock;		/* protects everything below */
	bool need_check_on_disk;	/* the header on disk has NEED_CHECK */
	u64 l1_entries;			/* entries the virtual size needs (all that is kept) */
	u64 *l1;			/* cpu order */
	u64 l1_dirty_lo, l1_dirty_hi;	/* dirty entries [lo, hi), lo == hi: clean */
	u64 next_alloc;			/* end of the allocated file space, cluster aligned */
	u32 nslots;
	u64 tick;
	struct qed_slot *slot;
	u8 *zpage;			/* psize zeros */
};

static inline struct qed *QD(struct vdimg_image *img)
{
	return img->priv;
}

/* ---- validity of table entries ---- */

/* Does [off, off + len) lie in the regular cluster area, away from the header and the L1 table? */
static bool qed_area_ok(const struct qed *q, u64 off, u64 len)
{
	u64 end;

	if (off & (q->cluster_size - 1))
		return false;
	if (check_add_overflow(off, len, &end) || end > q->next_alloc)
		return false;
	if (off < (u64)q->header_size * q->cluster_size)
		return false;
	if (off < q->l1_offset + q->tbytes && end > q->l1_offset)
		return false;
	return true;
}

static bool qed_table_ok(const struct qed *q, u64 off)
{
	return qed_area_ok(q, off, q->tbytes);
}

static bool qed_data_ok(const struct qed *q, u64 e)
{
	return e == QED_ENTRY_UNALLOC || e == QED_ENTRY_ZERO || qed_area_ok(q, e, q->cluster_size);
}

/* ---- header ---- */

static int qed_write_features(struct vdimg_image *img, u64 features)
{
	__le64 v = cpu_to_le64(features);

	return vdimg_file_write(img->file, &v, 8, offsetof(struct qed_header, features));
}

/*
 * Before any table write: the header says NEED_CHECK (durably), and the data the new entries point
 * at is durable.
 */
static int qed_meta_barrier(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	int ret;

	lockdep_assert_held(&q->lock);
	if (!q->need_check_on_disk) {
		ret = qed_write_features(img, q->features | QED_F_NEED_CHECK);
		if (ret)
			return ret;
		q->need_check_on_disk = true;
	}
	return vdimg_file_sync(img->file);
}

/* ---- the L2 page cache ---- */

static int qed_slot_write(struct vdimg_image *img, struct qed_slot *s)
{
	int ret = vdimg_file_write(img->file, s->data, QD(img)->psize, s->off);

	if (!ret)
		s->dirty = false;
	return ret;
}

static struct qed_slot *qed_cache_find(struct qed *q, u64 off)
{
	u32 i;

	for (i = 0; i < q->nslots; i++) {
		if (q->slot[i].off == off) {
			q->slot[i].used = ++q->tick;
			return &q->slot[i];
		}
	}
	return NULL;
}

/* The page at @off in the cache: read it, or zeros when @fresh. */
static int qed_cache_get(struct vdimg_image *img, u64 off, bool fresh, struct qed_slot **out)
{
	struct qed *q = QD(img);
	struct qed_slot *v;
	u32 i;
	int ret;

	v = qed_cache_find(q, off);
	if (v) {
		if (fresh)
			memset(v->data, 0, q->psize);
		*out = v;
		return 0;
	}
	v = &q->slot[0];
	for (i = 0; i < q->nslots; i++) {
		if (!q->slot[i].off) {
			v = &q->slot[i];
			break;
		}
		if (q->slot[i].used < v->used)
			v = &q->slot[i];
	}
	if (v->off && v->dirty) {
		ret = qed_meta_barrier(img);
		if (!ret)
			ret = qed_slot_write(img, v);
		if (ret)
			return ret;
	}
	v->off = 0;
	v->dirty = false;
	if (fresh) {
		memset(v->data, 0, q->psize);
	} else {
		ret = vdimg_file_read(img->file, v->data, q->psize, off);
		if (ret) {
			if (ret == -EFSCORRUPTED)
				vdimg_err(img, "L2 table page at %llu is past the end of the file",
					  (unsigned long long)off);
			return ret;
		}
	}
	v->off = off;
	v->used = ++q->tick;
	*out = v;
	return 0;
}

static inline u64 qed_get(const struct qed_slot *s, u32 i)
{
	return le64_to_cpu(((const __le64 *)s->data)[i]);
}

static inline void qed_set(struct qed_slot *s, u32 i, u64 e)
{
	((__le64 *)s->data)[i] = cpu_to_le64(e);
	s->dirty = true;
}

/* ---- flush ---- */

static bool qed_meta_dirty(const struct qed *q)
{
	u32 i;

	if (q->l1_dirty_lo < q->l1_dirty_hi)
		return true;
	for (i = 0; i < q->nslots; i++)
		if (q->slot[i].off && q->slot[i].dirty)
			return true;
	return false;
}

static int qed_write_l1(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	u64 lo = q->l1_dirty_lo, hi = q->l1_dirty_hi, i;
	__le64 *buf;
	int ret;

	if (lo >= hi)
		return 0;
	buf = vdimg_zalloc((hi - lo) * 8);
	if (!buf)
		return -ENOMEM;
	for (i = lo; i < hi; i++)
		buf[i - lo] = cpu_to_le64(q->l1[i]);
	ret = vdimg_file_write(img->file, buf, (hi - lo) * 8, q->l1_offset + lo * 8);
	vdimg_free(buf);
	if (!ret)
		q->l1_dirty_lo = q->l1_dirty_hi = 0;
	return ret;
}

static void qed_l1_set(struct qed *q, u64 i, u64 v)
{
	q->l1[i] = v;
	if (q->l1_dirty_lo == q->l1_dirty_hi) {
		q->l1_dirty_lo = i;
		q->l1_dirty_hi = i + 1;
	} else {
		q->l1_dirty_lo = min(q->l1_dirty_lo, i);
		q->l1_dirty_hi = max(q->l1_dirty_hi, i + 1);
	}
}

static int qed_flush_locked(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	u32 i;
	int ret;

	lockdep_assert_held(&q->lock);
	if (!q->writable || !qed_meta_dirty(q))
		return 0;
	ret = qed_meta_barrier(img);
	if (ret)
		return ret;
	for (i = 0; i < q->nslots; i++) {
		struct qed_slot *s = &q->slot[i];

		if (s->off && s->dirty) {
			ret = qed_slot_write(img, s);
			if (ret)
				return ret;
		}
	}
	if (q->l1_dirty_lo < q->l1_dirty_hi) {
		/* new L2 tables are durable before the L1 links them */
		ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = qed_write_l1(img);
	}
	return ret;
}

static int qed_flush(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	int ret;

	vdimg_mutex_lock(&q->lock);
	ret = qed_flush_locked(img);
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

/* ---- mapping ---- */

/*
 * The cached page holding the L2 entry of virtual offset @off: *@out NULL when no L2 table is linked
 * (or, lenient, the link is bad). *@idx is the entry's index in the page.
 */
static int qed_l2_lookup(struct vdimg_image *img, u64 off, bool nowait, struct qed_slot **out,
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
		*out = qed_cache_find(q, l2off);
		return *out ? 0 : -EAGAIN;
	}
	return qed_cache_get(img, l2off, false, out);
}

/* An L2 entry as the reader sees it: checked, or (lenient) a bad one as unallocated. */
static int qed_entry(struct vdimg_image *img, const struct qed_slot *s, u32 i, u64 *e)
{
	struct qed *q = QD(img);

	*e = qed_get(s, i);
	if (qed_data_ok(q, *e))
		return 0;
	if (q->lenient) {
		*e = QED_ENTRY_UNALLOC;
		return 0;
	}
	return vdimg_corrupt(img, "L2 entry %#llx (table page %llu, index %u) is not a valid cluster offset",
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
	struct qed_slot *s;
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

	if (l1i >= q->l1_entries)
		return -EINVAL;
	ret = qed_alloc(img, q->tbytes, &off);
	if (ret)
		return ret;
	ret = vdimg_file_write(img->file, q->zpage, q->psize, off + q->tbytes - q->psize);
	if (ret)
		return ret;
	qed_l1_set(q, l1i, off);
	return 0;
}

/* The page for @offset's entry, creating the L2 table when there is none. */
static int qed_l2_for_write(struct vdimg_image *img, u64 offset, struct qed_slot **s, u32 *i)
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
 * within the cached page, at most QED_MAX_RUN_BYTES. Contiguous space for a multi-cluster write keeps
 * it one extent on disk even when several writers allocate at once. Lock held.
 */
static u32 qed_new_run(struct vdimg_image *img, const struct qed_slot *s, u32 i, u64 e, u64 cstart,
		       u64 end)
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
	struct qed_slot *s;
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
	return 0;
}

static int qed_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		   struct vdimg_extent *ext)
{
	struct qed *q = QD(img);
	bool nowait = flags & VDIMG_MAP_NOWAIT;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	length = min(length, img->size - offset);
	memset(ext, 0, sizeof(*ext));
	if (nowait) {
		if (!vdimg_mutex_trylock(&q->lock))
			return -EAGAIN;
	} else {
		vdimg_mutex_lock(&q->lock);
	}
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

static int qed_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct qed *q = QD(img);
	u64 cstart = ALIGN_DOWN(ext->offset, (u64)q->cluster_size);
	/* one cluster, or a run reserved together (qed_new_run()) */
	u64 n = DIV_ROUND_UP(ext->offset + ext->length - cstart, (u64)q->cluster_size), k;
	struct qed_slot *s;
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
static void qed_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
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
static int qed_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
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
			struct qed_slot *s;
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
		struct qed_slot *s;
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

/* ---- scanning every table (NEED_CHECK, check) ---- */

struct qed_scan {
	u64 errors;			/* bad entries and double references */
	u64 fixed;			/* bad entries cleared */
	u8 *used;			/* userspace check: one bit per cluster of the file, or NULL */
	u64 nclusters;
};

/* Mark the clusters of [off, off + len) used; false if one already was. */
static bool qed_mark(const struct qed *q, struct qed_scan *sc, u64 off, u64 len)
{
	u64 c = off >> q->cluster_bits, n = DIV_ROUND_UP(len, (u64)q->cluster_size);
	bool fresh = true;

	if (!sc->used)
		return true;
	for (; n--; c++) {
		if (c >= sc->nclusters)
			continue;
		if (sc->used[c / 8] & (1U << (c % 8)))
			fresh = false;
		sc->used[c / 8] |= 1U << (c % 8);
	}
	return fresh;
}

/*
 * Walk the L1 table and every L2 table: count (and with @fix clear) entries that point outside the
 * regular cluster area, and with a bitmap count clusters referenced twice. Lock held.
 */
static int qed_scan_tables(struct vdimg_image *img, bool fix, struct qed_scan *sc)
{
	struct qed *q = QD(img);
	u64 l1i, p, per = q->psize / 8;
	u32 i;
	int ret;

	lockdep_assert_held(&q->lock);
	for (l1i = 0; l1i < q->l1_entries; l1i++) {
		u64 t = q->l1[l1i];

		if (!t)
			continue;
		if (!qed_table_ok(q, t)) {
			sc->errors++;
			vdimg_err(img, "L1 entry %llu: bad L2 table offset %#llx%s",
				  (unsigned long long)l1i, (unsigned long long)t,
				  fix ? " (cleared)" : "");
			if (fix) {
				qed_l1_set(q, l1i, 0);
				sc->fixed++;
			}
			continue;
		}
		if (!qed_mark(q, sc, t, q->tbytes)) {
			sc->errors++;
			vdimg_err(img, "L2 table at %#llx is referenced twice", (unsigned long long)t);
			continue;
		}
		for (p = 0; p < q->tbytes; p += q->psize) {
			struct qed_slot *s;

			ret = qed_cache_get(img, t + p, false, &s);
			if (ret)
				return ret;
			for (i = 0; i < per; i++) {
				u64 e = qed_get(s, i);

				if (e == QED_ENTRY_UNALLOC || e == QED_ENTRY_ZERO)
					continue;
				if (!qed_data_ok(q, e)) {
					sc->errors++;
					if (sc->errors <= 20)
						vdimg_err(img, "L2 table %#llx entry %llu: bad cluster offset %#llx%s",
							  (unsigned long long)t,
							  (unsigned long long)(p / 8 + i),
							  (unsigned long long)e, fix ? " (cleared)" : "");
					if (fix) {
						qed_set(s, i, QED_ENTRY_UNALLOC);
						sc->fixed++;
					}
				} else if (!qed_mark(q, sc, e, q->cluster_size)) {
					sc->errors++;
					if (sc->errors <= 20)
						vdimg_err(img, "cluster %#llx is referenced twice",
							  (unsigned long long)e);
				}
			}
		}
	}
	return 0;
}

/* Clear NEED_CHECK once every table is on disk. Lock held. */
static int qed_clear_need_check(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	int ret;

	if (!q->need_check_on_disk)
		return 0;
	ret = qed_flush_locked(img);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = qed_write_features(img, q->features & ~QED_F_NEED_CHECK);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret) {
		q->need_check_on_disk = false;
		q->features &= ~QED_F_NEED_CHECK;
	}
	return ret;
}

/* ---- open and close ---- */

static void qed_free_priv(struct qed *q)
{
	u32 i;

	if (q->slot) {
		for (i = 0; i < q->nslots; i++)
			vdimg_free(q->slot[i].data);
		vdimg_free(q->slot);
	}
	vdimg_free(q->l1);
	vdimg_free(q->zpage);
	vdimg_mutex_destroy(&q->lock);
	vdimg_free(q);
}

static int qed_open(struct vdimg_image *img, unsigned int flags)
{
	struct qed_header h;
	struct qed *q;
	u64 fsize = vdimg_file_size(img->file), entries, l2_span, i;
	u32 cs, ts;
	int ret;

	qed_check_layout();
	if (fsize < sizeof(h))
		return vdimg_corrupt(img, "file too short for a QED header");
	ret = vdimg_file_read(img->file, &h, sizeof(h), 0);
	if (ret)
		return ret;
	if (le32_to_cpu(h.magic) != QED_MAGIC)
		return vdimg_corrupt(img, "not a QED image");
	q = vdimg_zalloc(sizeof(*q));
	if (!q)
		return -ENOMEM;
	vdimg_mutex_init(&q->lock);
	img->priv = q;
	cs = le32_to_cpu(h.cluster_size);
	ts = le32_to_cpu(h.table_size);
	if (!is_power_of_2(cs) || cs < QED_MIN_CLUSTER_SIZE || cs > QED_MAX_CLUSTER_SIZE) {
		ret = vdimg_corrupt(img, "cluster size %u is not a power of two from 4 KiB to 64 MiB",
				    cs);
		goto fail;
	}
	if (!is_power_of_2(ts) || ts > QED_MAX_TABLE_SIZE) {
		ret = vdimg_corrupt(img, "table size %u is not a power of two from 1 to 16", ts);
		goto fail;
	}
	q->cluster_size = cs;
	q->cluster_bits = ilog2(cs);
	q->table_size = ts;
	q->tbytes = (u64)cs * ts;
	q->tbits = ilog2(q->tbytes / 8);
	q->psize = min_t(u64, q->tbytes, QED_PAGE_MAX);
	q->header_size = le32_to_cpu(h.header_size);
	q->features = le64_to_cpu(h.features);
	q->compat = le64_to_cpu(h.compat_features);
	q->autoclear = le64_to_cpu(h.autoclear_features);
	q->l1_offset = le64_to_cpu(h.l1_table_offset);
	q->vsize = le64_to_cpu(h.image_size);
	q->need_check_on_disk = q->features & QED_F_NEED_CHECK;
	q->next_alloc = ALIGN(fsize, (u64)cs);
	if (!q->header_size || (u64)q->header_size * cs > fsize) {
		ret = vdimg_corrupt(img, "header size of %u clusters", q->header_size);
		goto fail;
	}
	if (q->features & ~QED_F_KNOWN) {
		vdimg_err(img, "unknown QED feature bits %#llx: not supported",
			  (unsigned long long)(q->features & ~QED_F_KNOWN));
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (q->features & QED_F_BACKING_FILE) {
		q->backing_off = le32_to_cpu(h.backing_filename_offset);
		q->backing_len = le32_to_cpu(h.backing_filename_size);
		if (!q->backing_len || q->backing_len > 4095 ||
		    (u64)q->backing_off + q->backing_len > (u64)q->header_size * cs) {
			ret = vdimg_corrupt(img, "bad backing file name location (%u bytes at %u)",
					    q->backing_len, q->backing_off);
			goto fail;
		}
		img->flags |= VDIMG_IMG_HAS_PARENT;
	}
	if (!q->vsize || q->vsize % 512 || q->vsize > QED_MAX_VSIZE) {
		ret = vdimg_corrupt(img, "bad virtual size %llu", (unsigned long long)q->vsize);
		goto fail;
	}
	l2_span = 1ULL << (q->cluster_bits + q->tbits);
	entries = DIV_ROUND_UP(q->vsize, l2_span);
	if (entries > (q->tbytes / 8)) {
		ret = vdimg_corrupt(img, "virtual size %llu is more than the tables can map",
				    (unsigned long long)q->vsize);
		goto fail;
	}
	if (entries * 8 > QED_MAX_L1_BYTES) {
		vdimg_err(img, "the L1 table needed for %llu bytes is too large",
			  (unsigned long long)q->vsize);
		ret = -EFBIG;
		goto fail;
	}
	if ((q->l1_offset & (cs - 1)) || q->l1_offset < (u64)q->header_size * cs ||
	    q->l1_offset > q->next_alloc || q->tbytes > q->next_alloc - q->l1_offset) {
		ret = vdimg_corrupt(img, "bad L1 table offset %#llx", (unsigned long long)q->l1_offset);
		goto fail;
	}
	q->l1_entries = entries;
	q->l1 = vdimg_zalloc(entries * 8);
	q->zpage = vdimg_zalloc(q->psize);
	q->nslots = min_t(u32, max_t(u32, QED_CACHE_BYTES / q->psize, 8), QED_MAX_SLOTS);
	/* no more slots than twice the L2 tables the image can have (small layers of long chains) */
	q->nslots = min_t(u64, q->nslots, max_t(u64, 2 * entries, 4));
	q->slot = vdimg_zalloc(q->nslots * sizeof(*q->slot));
	if (!q->l1 || !q->zpage || !q->slot) {
		ret = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < q->nslots; i++) {
		q->slot[i].data = vdimg_zalloc(q->psize);
		if (!q->slot[i].data) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	ret = vdimg_file_read(img->file, q->l1, entries * 8, q->l1_offset);
	if (ret)
		goto fail;
	for (i = 0; i < entries; i++)
		q->l1[i] = le64_to_cpu(((__le64 *)q->l1)[i]);

	img->size = q->vsize;
	img->lbs = 512;
	img->pbs = 512;
	img->alloc_unit = cs;
	vdimg_strscpy(img->variant, q->backing_len ? "differencing" : "dynamic",
		      sizeof(img->variant));
	q->writable = !(flags & VDIMG_OPEN_READ_ONLY);
	if (!q->writable) {
		if (q->features & QED_F_NEED_CHECK) {
			vdimg_info(img, "the image needs a check (not closed cleanly): entries pointing outside the file read as unallocated");
			q->lenient = true;
		}
		return 0;
	}
	vdimg_mutex_lock(&q->lock);
	if (q->autoclear) {
		__le64 z = 0;

		ret = vdimg_file_write(img->file, &z, 8, offsetof(struct qed_header,
								  autoclear_features));
		if (!ret)
			ret = vdimg_file_sync(img->file);
		q->autoclear = 0;
	}
	if (!ret && (q->features & QED_F_NEED_CHECK)) {
		struct qed_scan sc = { 0 };

		vdimg_info(img, "the image was not closed cleanly: checking its tables");
		ret = qed_scan_tables(img, true, &sc);
		if (!ret)
			ret = qed_clear_need_check(img);
		if (!ret && sc.fixed)
			vdimg_warn(img, "%llu table entries pointing outside the file were dropped",
				   (unsigned long long)sc.fixed);
	}
	vdimg_mutex_unlock(&q->lock);
	if (ret)
		goto fail;
	return 0;
fail:
	qed_free_priv(q);
	img->priv = NULL;
	return ret;
}

static void qed_close(struct vdimg_image *img)
{
	struct qed *q = QD(img);

	if (!q)
		return;
	if (q->writable) {
		vdimg_mutex_lock(&q->lock);
		if (qed_clear_need_check(img))
			vdimg_err(img, "metadata could not be written at close");
		vdimg_mutex_unlock(&q->lock);
	}
	qed_free_priv(q);
	img->priv = NULL;
}

/* ---- userspace only: parent, describe, create, check ---- */
#ifndef __KERNEL__
#include <stdio.h>

static int qed_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct qed *q = QD(img);
	int ret;

	if (!q->backing_len)
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	ret = vdimg_file_read(img->file, ref->path, q->backing_len, q->backing_off);
	if (ret)
		return ret;
	ref->path[q->backing_len] = 0;
	if (strlen(ref->path) != q->backing_len)
		return vdimg_corrupt(img, "backing file name contains a NUL byte");
	if (q->features & QED_F_BACKING_FORMAT_NO_PROBE)
		ref->format = VDIMG_FMT_RAW;
	return 0;
}

/*
 * Rebase in place: a new backing file name, or none. The name goes into the header clusters where
 * it does not overlap the old one when there is room, and is synced before the header (features
 * and the name's location: one 64-byte write) points at it.
 */
static int qed_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct qed *q = QD(img);
	u64 room = (u64)q->header_size * q->cluster_size, features, mine;
	u32 n = path ? strlen(path) : 0, pos = 0;
	struct qed_header h;
	int ret;

	if (!q->writable)
		return -EROFS;
	if (path && !n)
		path = NULL;
	vdimg_mutex_lock(&q->lock);
	ret = vdimg_file_read(img->file, &h, sizeof(h), 0);
	if (ret)
		goto out;
	if (path) {
		pos = sizeof(h);
		if (q->backing_len && pos < q->backing_off + q->backing_len &&
		    pos + n > q->backing_off && (u64)q->backing_off + q->backing_len + n <= room)
			pos = q->backing_off + q->backing_len;
		if (n > 4095 || pos + n > room) {
			vdimg_err(img, "no room for a %u byte backing file name in the %llu byte header",
				  n, (unsigned long long)room);
			ret = -ENOSPC;
			goto out;
		}
		ret = vdimg_file_write(img->file, path, n, pos);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (ret)
			goto out;
	}
	mine = QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE;
	features = 0;
	if (path) {
		features = QED_F_BACKING_FILE;
		if (parent && parent->fmt && parent->fmt->id == VDIMG_FMT_RAW)
			features |= QED_F_BACKING_FORMAT_NO_PROBE;
	}
	h.features = cpu_to_le64((le64_to_cpu(h.features) & ~mine) | features);
	h.backing_filename_offset = cpu_to_le32(pos);
	h.backing_filename_size = cpu_to_le32(n);
	ret = vdimg_file_write(img->file, &h, sizeof(h), 0);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		goto out;
	q->features = (q->features & ~mine) | features;
	q->backing_off = pos;
	q->backing_len = n;
	if (path)
		img->flags |= VDIMG_IMG_HAS_PARENT;
	else
		img->flags &= ~VDIMG_IMG_HAS_PARENT;
	vdimg_strscpy(img->variant, path ? "differencing" : "dynamic", sizeof(img->variant));
out:
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

static void qed_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct qed *q = QD(img);
	char v[128];

	snprintf(v, sizeof(v), "%u", q->cluster_size);
	emit(ctx, "cluster size", v);
	snprintf(v, sizeof(v), "%u", q->table_size);
	emit(ctx, "table size", v);
	snprintf(v, sizeof(v), "%u", q->header_size);
	emit(ctx, "header size", v);
	emit(ctx, "need check", q->features & QED_F_NEED_CHECK ? "true" : "false");
	if (q->backing_len)
		emit(ctx, "backing format", q->features & QED_F_BACKING_FORMAT_NO_PROBE ?
		     "raw (no probe)" : "probe");
	snprintf(v, sizeof(v), "%#llx", (unsigned long long)q->features);
	emit(ctx, "features", v);
	if (q->compat) {
		snprintf(v, sizeof(v), "%#llx", (unsigned long long)q->compat);
		emit(ctx, "compat features", v);
	}
}

static bool qed_opt(const char *opts, const char *key, char *val, size_t valsz)
{
	size_t kl = strlen(key);
	const char *p = opts;

	while (p && *p) {
		if (!strncmp(p, key, kl) && p[kl] == '=') {
			size_t n = strcspn(p + kl + 1, ",");

			if (n >= valsz)
				n = valsz - 1;
			memcpy(val, p + kl + 1, n);
			val[n] = 0;
			return true;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return false;
}

static int qed_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	const struct vdimg_image msg = { .name = "qed create" };
	u32 cs = opts->block_size ? opts->block_size : QED_DEFAULT_CLUSTER;
	u32 ts = QED_DEFAULT_TABLE_SIZE;
	u64 n, features = 0;
	const char *p;
	struct qed_header h;
	char v[64];
	u8 *buf;
	int ret;

	for (p = opts->options; p && *p;) {
		size_t kl = strcspn(p, "=,");

		if (!((kl == 12 && !strncmp(p, "cluster_size", 12)) ||
		      (kl == 10 && !strncmp(p, "table_size", 10)))) {
			vdimg_err(&msg, "unknown option '%.*s' (cluster_size, table_size)", (int)kl, p);
			return -EINVAL;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	if (qed_opt(opts->options, "cluster_size", v, sizeof(v)))
		cs = strtoul(v, NULL, 0);
	if (qed_opt(opts->options, "table_size", v, sizeof(v)))
		ts = strtoul(v, NULL, 0);
	if (!is_power_of_2(cs) || cs < QED_MIN_CLUSTER_SIZE || cs > QED_MAX_CLUSTER_SIZE) {
		vdimg_err(&msg, "cluster_size must be a power of two from 4096 to 64M");
		return -EINVAL;
	}
	if (!is_power_of_2(ts) || ts > QED_MAX_TABLE_SIZE) {
		vdimg_err(&msg, "table_size must be a power of two from 1 to 16");
		return -EINVAL;
	}
	if (!opts->size || opts->size % 512 || (opts->lbs && opts->lbs != 512))
		return -EINVAL;
	n = (u64)cs * ts / 8;
	if (opts->size > QED_MAX_VSIZE || DIV_ROUND_UP(opts->size, n * cs) > n ||
	    DIV_ROUND_UP(opts->size, n * cs) * 8 > QED_MAX_L1_BYTES) {
		vdimg_err(&msg, "the disk is too large for this cluster size and table size");
		return -EFBIG;
	}
	memset(&h, 0, sizeof(h));
	if (opts->parent) {
		size_t len = strlen(opts->parent);

		if (len > cs - sizeof(h) || len > 4095) {
			vdimg_err(&msg, "backing file name too long");
			return -ENAMETOOLONG;
		}
		features |= QED_F_BACKING_FILE;
		if (opts->parent_img && opts->parent_img->fmt &&
		    opts->parent_img->fmt->id == VDIMG_FMT_RAW)
			features |= QED_F_BACKING_FORMAT_NO_PROBE;
		h.backing_filename_offset = cpu_to_le32(sizeof(h));
		h.backing_filename_size = cpu_to_le32(len);
	}
	h.magic = cpu_to_le32(QED_MAGIC);
	h.cluster_size = cpu_to_le32(cs);
	h.table_size = cpu_to_le32(ts);
	h.header_size = cpu_to_le32(1);
	h.features = cpu_to_le64(features);
	h.l1_table_offset = cpu_to_le64((u64)cs);
	h.image_size = cpu_to_le64(opts->size);
	buf = calloc(1, cs);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	if (opts->parent)
		memcpy(buf + sizeof(h), opts->parent, strlen(opts->parent));
	/* the L1 table (zeros) first, the header last */
	ret = vdimg_file_truncate(f, (u64)cs * (1 + ts));
	if (!ret)
		ret = vdimg_file_write(f, buf, cs, 0);
	if (!ret)
		ret = vdimg_file_sync(f);
	free(buf);
	return ret;
}

static int qed_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct qed *q = QD(img);
	bool repair = flags & VDIMG_CHECK_REPAIR;
	struct qed_scan sc = { 0 };
	u64 fsize, c, last_used = 0;
	int ret;

	memset(res, 0, sizeof(*res));
	if (repair && !q->writable)
		return -EROFS;
	vdimg_mutex_lock(&q->lock);
	ret = qed_flush_locked(img);
	if (ret)
		goto out;
	fsize = vdimg_file_size(img->file);
	sc.nclusters = DIV_ROUND_UP(fsize, (u64)q->cluster_size);
	sc.used = calloc(1, sc.nclusters / 8 + 1);
	if (!sc.used) {
		ret = -ENOMEM;
		goto out;
	}
	qed_mark(q, &sc, 0, (u64)q->header_size * q->cluster_size);
	qed_mark(q, &sc, q->l1_offset, q->tbytes);
	ret = qed_scan_tables(img, repair, &sc);
	if (ret)
		goto out;
	for (c = 0; c < sc.nclusters; c++) {
		if (sc.used[c / 8] & (1U << (c % 8)))
			last_used = c + 1;
		else if (c < fsize >> q->cluster_bits)
			res->leaks++;	/* (as qemu: a partial last cluster is not one) */
	}
	res->errors = sc.errors;
	res->fixed = sc.fixed;
	if (repair) {
		ret = qed_flush_locked(img);
		/* leaked clusters at the end of the file can go; others stay (no refcounts) */
		if (!ret && (last_used < sc.nclusters || (fsize & (q->cluster_size - 1)))) {
			u64 keep = max(last_used << q->cluster_bits, q->l1_offset + q->tbytes);
			u64 tail;

			keep = max(keep, (u64)q->header_size * q->cluster_size);
			tail = sc.nclusters > (keep >> q->cluster_bits) ?
			       sc.nclusters - (keep >> q->cluster_bits) : 0;
			ret = vdimg_file_sync(img->file);
			if (!ret)
				ret = vdimg_file_truncate(img->file, keep);
			if (!ret) {
				res->fixed += tail;
				q->next_alloc = keep;
			}
		}
		if (!ret && sc.errors == sc.fixed)
			ret = qed_clear_need_check(img);
	}
out:
	vdimg_mutex_unlock(&q->lock);
	free(sc.used);
	return ret;
}

#endif /* !__KERNEL__ */

static bool qed_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return head_len >= 4 && !memcmp(head, "QED\0", 4);
}

const struct vdimg_format vdimg_qed_format = {
	.name = "qed",
	.id = VDIMG_FMT_QED,
	.probe = qed_probe,
	.open = qed_open,
	.close = qed_close,
	.map = qed_map,
	.commit = qed_commit,
	.abort = qed_abort,
	.discard = qed_discard,
	.flush = qed_flush,
};

#ifndef __KERNEL__
const struct vdimg_tool_ops vdimg_qed_tool_ops = {
	.id = VDIMG_FMT_QED,
	.create = qed_create,
	.check = qed_check,
	.parent_ref = qed_parent_ref,
	.describe = qed_describe,
	.set_parent = qed_set_parent,
};
#endif
