// SPDX-License-Identifier: GPL-2.0
/*
 * QCOW2 allocation, commit and flush: the write-back caches of L2 tables and refcount blocks
 * (backends/cluster_table.c) and what must precede an eviction, refcounts of every width, cluster
 * allocation (freed space first, then the end of the file), growing the refcount table, deferred
 * frees and ->flush(). Kernel-shared: compiled into the module and the userspace library; only
 * include/vdimg/platform.h services here.
 *
 * Crash safety: metadata lives in write-back caches that ->flush() writes in dependency order:
 * refcount blocks, sync, L2 tables, sync, L1 table; only then are clusters whose references were
 * dropped (discard, rewritten compressed clusters) decremented. So the on-disk refcounts are never
 * below the on-disk references: a crash can leak clusters but never corrupt the image. A new
 * refcount block is written and synced before the refcount table points at it; a grown refcount
 * table is written and synced before the header points at it.
 */
#include "qcow2.h"

/* Guest data in an external data file must be durable before a table that points at it. */
static int qcow2_sync_data(struct vdimg_image *img)
{
	return img->data_file ? vdimg_file_sync(img->data_file) : 0;
}

/*
 * May the active tables change what @e points at in place? Only when they own it alone
 * (OFLAG_COPIED: refcount 1); a cluster shared with an internal snapshot is copied first. Data
 * clusters in an external data file are never shared (such images have no snapshots).
 */
bool qcow2_owned(const struct qcow2 *q, u64 e)
{
	return q->has_data_file || (e & QCOW2_OFLAG_COPIED);
}

/* ---- caches ---- */

static int qcow2_write_rbs(struct vdimg_image *img);

/* A dirty L2 table may only reach the disk after the refcounts of what it references. */
static int qcow2_l2_barrier(struct vdimg_image *img)
{
	int ret = qcow2_write_rbs(img);

	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = qcow2_sync_data(img);
	return ret;
}

/* Get the cluster at @off into @c (L2 tables, refcount blocks): read it, or zeros if @fresh. */
int qcow2_cache_get(struct vdimg_image *img, struct vdimg_ct *c, u64 off, bool fresh,
		    struct vdimg_ct_slot **out)
{
	return vdimg_ct_get(img, c, off, fresh, c == &QC(img)->l2c ? qcow2_l2_barrier : NULL,
			    "metadata cluster", out);
}

/* ---- refcounts ---- */

static u64 qcow2_rc_get_raw(const struct qcow2 *q, const u8 *blk, u64 i)
{
	u32 order = q->refcount_order;

	switch (order) {
	case 0: case 1: case 2: {
		u32 per = 8 >> order, bits = 1U << order;

		return (blk[i / per] >> ((i % per) * bits)) & ((1U << bits) - 1);
	}
	case 3:
		return blk[i];
	case 4:
		return be16_to_cpu(((const __be16 *)blk)[i]);
	case 5:
		return be32_to_cpu(((const __be32 *)blk)[i]);
	default:
		return be64_to_cpu(((const __be64 *)blk)[i]);
	}
}

void qcow2_rc_set_raw(const struct qcow2 *q, u8 *blk, u64 i, u64 v)
{
	u32 order = q->refcount_order;

	switch (order) {
	case 0: case 1: case 2: {
		u32 per = 8 >> order, bits = 1U << order, sh = (i % per) * bits;
		u8 m = ((1U << bits) - 1) << sh;

		blk[i / per] = (blk[i / per] & ~m) | ((v << sh) & m);
		break;
	}
	case 3:
		blk[i] = v;
		break;
	case 4:
		((__be16 *)blk)[i] = cpu_to_be16(v);
		break;
	case 5:
		((__be32 *)blk)[i] = cpu_to_be32(v);
		break;
	default:
		((__be64 *)blk)[i] = cpu_to_be64(v);
		break;
	}
}

u64 qcow2_rc_max(const struct qcow2 *q)
{
	return q->refcount_order == 6 ? ~0ULL : (1ULL << (1U << q->refcount_order)) - 1;
}

int qcow2_check_meta_off(struct vdimg_image *img, u64 off, const char *what)
{
	struct qcow2 *q = QC(img);

	if (!off || off & (q->cluster_size - 1) || off > (1ULL << 56))
		return vdimg_corrupt(img, "%s at bad offset %llu", what, (unsigned long long)off);
	return 0;
}

/* The refcount block slot covering cluster @idx, or NULL (*@out) when none is allocated. */
static int qcow2_rb_lookup(struct vdimg_image *img, u64 idx, struct vdimg_ct_slot **out)
{
	struct qcow2 *q = QC(img);
	u64 ri = idx >> q->rb_bits, off;
	int ret;

	*out = NULL;
	if (ri >= q->rt_entries)
		return 0;
	off = q->rt[ri] & ~QCOW2_RT_RESERVED;
	if (!off)
		return 0;
	ret = qcow2_check_meta_off(img, off, "refcount block");
	if (ret)
		return ret;
	return qcow2_cache_get(img, &q->rbc, off, false, out);
}

int qcow2_rc_get(struct vdimg_image *img, u64 idx, u64 *rc)
{
	struct qcow2 *q = QC(img);
	struct vdimg_ct_slot *s;
	int ret = qcow2_rb_lookup(img, idx, &s);

	if (ret)
		return ret;
	*rc = s ? qcow2_rc_get_raw(q, s->data, idx & ((1ULL << q->rb_bits) - 1)) : 0;
	return 0;
}

static int qcow2_grow_rt(struct vdimg_image *img, u64 need);

/*
 * Create the refcount block for the range of cluster @idx (which is free, as every cluster of a
 * range without a block is). The block goes into that same range, next to @idx, and counts
 * itself; it is written and synced before the refcount table entry that points at it.
 */
static int qcow2_rb_create(struct vdimg_image *img, u64 idx)
{
	struct qcow2 *q = QC(img);
	u64 ri = idx >> q->rb_bits, first = ri << q->rb_bits, per = 1ULL << q->rb_bits;
	u64 b = idx + 1 < first + per ? idx + 1 : idx - 1;
	struct vdimg_ct_slot *s;
	__be64 e;
	int ret;

	ret = qcow2_cache_get(img, &q->rbc, b << q->cluster_bits, true, &s);
	if (ret)
		return ret;
	qcow2_rc_set_raw(q, s->data, b - first, 1);
	ret = vdimg_ct_write(img, &q->rbc, s);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	e = cpu_to_be64(b << q->cluster_bits);
	if (!ret)
		ret = vdimg_file_write(img->file, &e, 8, q->rt_offset + ri * 8);
	if (ret) {
		s->off = 0;
		return ret;
	}
	q->rt[ri] = b << q->cluster_bits;
	return 0;
}

/* Add @delta to the refcount of cluster @idx (in the cache; written by flush). */
int qcow2_rc_add(struct vdimg_image *img, u64 idx, s64 delta)
{
	struct qcow2 *q = QC(img);
	struct vdimg_ct_slot *s;
	u64 i, rc;
	int ret;

	if ((idx >> q->rb_bits) >= q->rt_entries) {
		if (delta < 0)
			return vdimg_corrupt(img, "freeing cluster %llu that has no refcount",
					     (unsigned long long)idx);
		ret = qcow2_grow_rt(img, idx >> q->rb_bits);
		if (ret)
			return ret;
	}
	ret = qcow2_rb_lookup(img, idx, &s);
	if (ret)
		return ret;
	if (!s) {
		if (delta < 0)
			return vdimg_corrupt(img, "freeing cluster %llu that has no refcount",
					     (unsigned long long)idx);
		ret = qcow2_rb_create(img, idx);
		if (!ret)
			ret = qcow2_rb_lookup(img, idx, &s);
		if (ret)
			return ret;
		if (!s)
			return -EIO;
	}
	i = idx & ((1ULL << q->rb_bits) - 1);
	rc = qcow2_rc_get_raw(q, s->data, i);
	if (delta < 0 && rc < (u64)-delta)
		return vdimg_corrupt(img, "refcount of cluster %llu would go below zero",
				     (unsigned long long)idx);
	if (delta > 0 && qcow2_rc_max(q) - rc < (u64)delta) {
		vdimg_err(img, "refcount of cluster %llu overflows %u bits",
			  (unsigned long long)idx, 1U << q->refcount_order);
		return -EOVERFLOW;
	}
	qcow2_rc_set_raw(q, s->data, i, rc + delta);
	s->dirty = true;
	if (delta < 0 && rc + delta == 0 && idx < q->free_hint)
		q->free_hint = idx;
	/* a freed cluster takes no more compressed clusters (tools/lib/formats/qcow2/compress.c) */
	if (delta < 0 && rc + delta == 0 && q->cfree >> q->cluster_bits == idx)
		q->cfree = 0;
	return 0;
}

/* Reserve @n contiguous free clusters (refcount 1 in the cache). */
int qcow2_alloc(struct vdimg_image *img, u64 n, u64 *out)
{
	struct qcow2 *q = QC(img);
	u64 idx = q->free_hint, run = 0, start = idx, rc, i;
	u64 limit = 1ULL << (56 - q->cluster_bits);
	u64 sane = (vdimg_file_size(img->file) >> q->cluster_bits) + (2ULL << q->rb_bits) + 65536;
	struct vdimg_ct_slot *blk;
	int ret;

	/* the header cluster is never free; skipping it also keeps offset 0 meaning "none" */
	if (!idx) {
		start = 1;
		idx = 1;
	}
	while (run < n) {
		if (idx >= limit) {
			vdimg_err(img, "no free cluster below 64 PiB");
			return -ENOSPC;
		}
		/* only a bad refcount table counts so much beyond the file */
		if (idx >= sane)
			return vdimg_corrupt(img,
					     "no free cluster up to %llu, far past the end of the file",
					     (unsigned long long)idx);
		if ((idx >> q->rb_bits) >= q->rt_entries) {
			/* the new table and blocks go exactly here: grow first, then look again */
			ret = qcow2_grow_rt(img, idx >> q->rb_bits);
			if (ret)
				return ret;
			run = 0;
			start = q->free_hint > idx ? q->free_hint : idx;
			idx = start;
			continue;
		}
		ret = qcow2_rb_lookup(img, idx, &blk);
		if (!ret && !blk) {
			/*
			 * A range without a refcount block: its block goes next to @idx (see
			 * qcow2_rb_create()), possibly inside the run found so far; create it
			 * first and look again, so a run of @n never covers it.
			 */
			ret = qcow2_rb_create(img, idx);
			if (ret)
				return ret;
			run = 0;
			start = idx;
			continue;
		}
		if (!ret)
			ret = qcow2_rc_get(img, idx, &rc);
		if (ret)
			return ret;
		idx++;
		if (rc) {
			run = 0;
			start = idx;
		} else {
			run++;
		}
	}
	for (i = 0; i < n; i++) {
		ret = qcow2_rc_add(img, start + i, 1);
		if (ret) {
			while (i--)
				qcow2_rc_add(img, start + i, -1);
			return ret;
		}
	}
	if (q->free_hint == start || q->free_hint <= 1)
		q->free_hint = start + n;
	*out = start << q->cluster_bits;
	img->flags |= VDIMG_IMG_DIRTY;
	return 0;
}

static int qcow2_write_rbs(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);
	u32 i;
	int ret;

	for (i = 0; i < q->rbc.nr; i++) {
		struct vdimg_ct_slot *s = &q->rbc.slot[i];

		if (s->off && s->dirty) {
			ret = vdimg_ct_write(img, &q->rbc, s);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/*
 * The refcount table is full: write a larger one (with the refcount blocks that count it) into the
 * first range no block covers yet, where every cluster is free, then switch the header to it.
 */
static int qcow2_grow_rt(struct vdimg_image *img, u64 need)
{
	struct qcow2 *q = QC(img);
	u64 per = 1ULL << q->rb_bits, cs = q->cluster_size;
	u64 new_entries, tclusters, k, base, i, *nrt = NULL;
	u8 *blk = NULL;
	struct {
		__be64 off;
		__be32 clusters;
	} __packed hdr;
	int ret;

	new_entries = max(q->rt_entries * 2, need + 2);
	for (k = 1;; k++) {
		tclusters = DIV_ROUND_UP((new_entries + k) * 8, cs);
		if (k * per >= k + tclusters)
			break;
	}
	new_entries = tclusters * cs / 8;
	if (tclusters * cs > QCOW2_MAX_RT_BYTES) {
		vdimg_err(img, "refcount table would exceed %u MiB", QCOW2_MAX_RT_BYTES >> 20);
		return -ENOSPC;
	}
	base = q->rt_entries * per;	/* first cluster of the first uncovered range */
	ret = qcow2_write_rbs(img);
	if (ret)
		return ret;
	nrt = vdimg_zalloc(tclusters * cs);
	blk = vdimg_zalloc(cs);
	if (!nrt || !blk) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(nrt, q->rt, q->rt_entries * 8);
	/* blocks at base .. base + k - 1, table right after them */
	for (i = 0; i < k; i++) {
		u64 first = base + i * per, c;

		memset(blk, 0, cs);
		for (c = first; c < first + per && c < base + k + tclusters; c++)
			qcow2_rc_set_raw(q, blk, c - first, 1);
		ret = vdimg_file_write(img->file, blk, cs, (base + i) * cs);
		if (ret)
			goto out;
		nrt[q->rt_entries + i] = (base + i) * cs;
	}
	for (i = 0; i < new_entries; i++)
		((__be64 *)nrt)[i] = cpu_to_be64(nrt[i]);
	ret = vdimg_file_write(img->file, nrt, tclusters * cs, (base + k) * cs);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	hdr.off = cpu_to_be64((base + k) * cs);
	hdr.clusters = cpu_to_be32(tclusters);
	if (!ret)
		ret = vdimg_file_write(img->file, &hdr, sizeof(hdr),
				       offsetof(struct qcow2_header, refcount_table_offset));
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		goto out;
	for (i = 0; i < new_entries; i++)
		nrt[i] = be64_to_cpu(((__be64 *)nrt)[i]);
	/* the old table is free once the header no longer names it (durable: synced above) */
	qcow2_defer_free(img, q->rt_offset, (u64)q->rt_clusters * cs);
	vdimg_free(q->rt);
	q->rt = nrt;
	nrt = NULL;
	q->rt_offset = (base + k) * cs;
	q->rt_clusters = tclusters;
	q->rt_entries = new_entries;
	if (q->free_hint < base + k + tclusters && q->free_hint >= base)
		q->free_hint = base + k + tclusters;
out:
	vdimg_free(nrt);
	vdimg_free(blk);
	return ret;
}

/* Decrement the refcounts of the host clusters touched by [off, off + len). */
static int qcow2_free_range(struct vdimg_image *img, u64 off, u64 len)
{
	struct qcow2 *q = QC(img);
	u64 c, first = off >> q->cluster_bits, last = (off + len - 1) >> q->cluster_bits;
	int ret;

	for (c = first; c <= last; c++) {
		ret = qcow2_rc_add(img, c, -1);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- flush ---- */

static int qcow2_write_l1(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);
	u32 lo = q->l1_dirty_lo, hi = q->l1_dirty_hi, i;
	__be64 *buf;
	int ret;

	if (lo >= hi)
		return 0;
	buf = vdimg_zalloc((hi - lo) * 8);
	if (!buf)
		return -ENOMEM;
	for (i = lo; i < hi; i++)
		buf[i - lo] = cpu_to_be64(q->l1[i]);
	ret = vdimg_file_write(img->file, buf, (hi - lo) * 8, q->l1_offset + (u64)lo * 8);
	vdimg_free(buf);
	if (!ret) {
		q->l1_dirty_lo = 0;
		q->l1_dirty_hi = 0;
	}
	return ret;
}

static bool qcow2_l2_dirty(struct qcow2 *q)
{
	u32 i;

	for (i = 0; i < q->l2c.nr; i++)
		if (q->l2c.slot[i].off && q->l2c.slot[i].dirty)
			return true;
	return false;
}

int qcow2_flush_locked(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);
	u32 i, n;
	int ret;

	lockdep_assert_held(&q->lock);
	if (!q->writable)
		return 0;
	ret = qcow2_write_rbs(img);
	if (ret)
		return ret;
	if (qcow2_l2_dirty(q) || q->l1_dirty_lo < q->l1_dirty_hi || q->nr_pending) {
		ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = qcow2_sync_data(img);
		if (ret)
			return ret;
		for (i = 0; i < q->l2c.nr; i++) {
			struct vdimg_ct_slot *s = &q->l2c.slot[i];

			if (s->off && s->dirty) {
				ret = vdimg_ct_write(img, &q->l2c, s);
				if (ret)
					return ret;
			}
		}
		if (q->l1_dirty_lo < q->l1_dirty_hi) {
			ret = vdimg_file_sync(img->file);
			if (!ret)
				ret = qcow2_write_l1(img);
			if (ret)
				return ret;
		}
	}
	/* only what ->frees_pending() marked, when it was called: the driver drained for those */
	n = q->pending_marked ? min(q->free_mark, q->nr_pending) : q->nr_pending;
	q->pending_marked = false;
	if (n) {
		/* the references are gone on disk: now the refcounts may drop */
		ret = vdimg_file_sync(img->file);
		if (ret)
			return ret;
		for (i = 0; i < n; i++) {
			ret = qcow2_free_range(img, q->pending[i].off, q->pending[i].len);
			if (ret)
				return ret;
		}
		memmove(q->pending, q->pending + n, (q->nr_pending - n) * sizeof(*q->pending));
		q->nr_pending -= n;
		ret = qcow2_write_rbs(img);
	}
	return ret;
}

/*
 * Free [off, off + len) after the next flush made the references to it durable, and only when no
 * write mapped before may still go there (->frees_pending()). Never flushes or frees here: a
 * discard or commit is no place to wait for writes in flight. When the list cannot grow, the
 * space leaks (check --repair finds it) instead of being freed early.
 */
int qcow2_defer_free(struct vdimg_image *img, u64 off, u64 len)
{
	struct qcow2 *q = QC(img);
	struct qcow2_range *last = q->nr_pending ? &q->pending[q->nr_pending - 1] : NULL;

	lockdep_assert_held(&q->lock);
	/* extend the last range when contiguous, unless a drain already covers it */
	if (last && last->off + last->len == off &&
	    (!q->pending_marked || q->nr_pending > q->free_mark)) {
		last->len += len;
		return 0;
	}
	if (q->nr_pending == q->pending_cap) {
		u32 cap = q->pending_cap ? q->pending_cap * 2 : 64;
		struct qcow2_range *np = NULL;

		if (cap <= QCOW2_MAX_PENDING)
			np = vdimg_zalloc(cap * sizeof(*np));
		if (!np) {
			vdimg_warn(img, "too many frees before a flush: %llu bytes at %llu leak",
				   (unsigned long long)len, (unsigned long long)off);
			return 0;
		}
		if (q->nr_pending)
			memcpy(np, q->pending, q->nr_pending * sizeof(*np));
		vdimg_free(q->pending);
		q->pending = np;
		q->pending_cap = cap;
	}
	q->pending[q->nr_pending].off = off;
	q->pending[q->nr_pending].len = len;
	q->nr_pending++;
	return 0;
}

/*
 * The driver asks before ->flush(): frees are pending, and the next flush frees just those (the
 * driver waits for the writes in flight that may still target them first).
 */
bool qcow2_frees_pending(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);
	bool ret;

	vdimg_mutex_lock(&q->lock);
	q->pending_marked = true;
	q->free_mark = q->nr_pending;
	ret = q->nr_pending != 0;
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

int qcow2_flush(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);
	int ret;

	vdimg_mutex_lock(&q->lock);
	/* data written in place into an external data file is durable after a flush too */
	ret = q->writable ? qcow2_sync_data(img) : 0;
	if (!ret)
		ret = qcow2_flush_locked(img);
	vdimg_mutex_unlock(&q->lock);
	return ret;
}
