// SPDX-License-Identifier: GPL-2.0
/*
 * The QCOW2 backend (qemu's docs/interop/qcow2.txt): header v2 and v3 with feature bits and header
 * extensions, L1/L2 mapping with a bounded LRU cache of L2 tables, standard, zero, compressed and
 * extended-L2 (subcluster) descriptors, refcounts of every width, allocation, discard, and in
 * userspace create, check/repair and describe. Shared by the module and the userspace library: only
 * include/vdimg/platform.h services here, no blk-mq, no libc.
 *
 * Crash safety: metadata lives in write-back caches that ->flush() writes in dependency order:
 * refcount blocks, sync, L2 tables, sync, L1 table; only then are clusters whose references were
 * dropped (discard, rewritten compressed clusters) decremented. So the on-disk refcounts are never
 * below the on-disk references: a crash can leak clusters but never corrupt the image. A new
 * refcount block is written and synced before the refcount table points at it; a grown refcount
 * table is written and synced before the header points at it.
 */
#include <vdimg/backend.h>
#include "qcow2.h"
#ifndef __KERNEL__
#include "tool-ops.h"
#endif

#define QCOW2_MIN_CLUSTER_BITS	9
#define QCOW2_MAX_CLUSTER_BITS	21
#define QCOW2_MAX_L1_BYTES	(32U << 20)	/* qemu's limit */
#define QCOW2_MAX_RT_BYTES	(8U << 20)	/* qemu's limit */
#define QCOW2_L2_CACHE_BYTES	(4U << 20)
#define QCOW2_RB_CACHE_BYTES	(1U << 20)
#define QCOW2_MAX_PENDING	65536		/* deferred frees kept (1 MiB); beyond, they leak */
#define QCOW2_MAX_RUN_BYTES	(4U << 20)	/* largest run of clusters one NEW extent reserves */

/* cookie[1] of a NEW extent */
#define QCOW2_NEW_ALLOCATED	(1ULL << 0)	/* cookie[0] is a cluster reserved by map */
#define QCOW2_NEW_WAS_COMPRESSED (1ULL << 1)	/* the old descriptor was a compressed one */
#define QCOW2_NEW_WAS_SHARED	(1ULL << 2)	/* a copy of a shared cluster (internal snapshots) */
#define QCOW2_NEW_DATA_FILE	(1ULL << 3)	/* cookie[0] is a data file offset (may be 0) */

#define QCOW2_MAX_SNAPSHOTS	65536		/* qemu's limits on the snapshot table */
#define QCOW2_MAX_SNAP_EXTRA	1024
#define QCOW2_MAX_SNAP_TABLE	(64U << 20)
#define QCOW2_MAX_DATA_NAME	1023

struct qcow2_slot {
	u64 off;			/* host offset of the cached cluster, 0: empty */
	u64 used;			/* LRU tick */
	bool dirty;
	u8 *data;			/* one cluster, as on disk */
};

struct qcow2_cache {
	u32 nr;
	u64 tick;
	struct qcow2_slot *slot;
};

struct qcow2_range {
	u64 off;
	u64 len;
};

struct qcow2 {
	/* fixed after open */
	u32 version;
	u32 cluster_bits;
	u32 cluster_size;
	u32 l2_bits;			/* log2 of entries per L2 table */
	u32 l2_entry_size;		/* 8, or 16 with extended L2 */
	u32 sc_bits;			/* log2 of the subcluster size (== cluster_bits without ext L2) */
	u32 refcount_order;
	u32 rb_bits;			/* log2 of entries per refcount block */
	u32 hdr_len;
	u32 csize_shift;		/* compressed descriptor: where the sector count starts */
	u64 csize_mask;
	u64 coff_mask;
	u64 vsize;			/* virtual size from the header */
	u64 incompat, compat, autoclear;
	u8 compression_type;
	bool ext_l2;
	bool has_bitmaps;
	u64 backing_off;
	u32 backing_len;
	char backing_fmt[32];
	u32 nb_snapshots;
	u64 snapshots_offset;
	u32 nb_bitmaps;
	bool writable;
	/* external data file: DATA clusters live there, at their guest offset, not refcounted */
	bool has_data_file;
	bool data_raw;			/* autoclear "raw external data": keep it a valid raw image */
	struct vdimg_file *dfile;	/* where DATA extents point: img->data_file or img->file */
	char dfname[QCOW2_MAX_DATA_NAME + 1];

	vdimg_mutex_t lock;		/* protects everything below */
	u32 l1_size;
	u64 l1_offset;
	u64 *l1;			/* cpu order */
	u32 l1_dirty_lo, l1_dirty_hi;	/* dirty entries [lo, hi), lo == hi: clean */
	u64 rt_offset;
	u32 rt_clusters;
	u64 rt_entries;
	u64 *rt;			/* refcount table, cpu order */
	struct qcow2_cache l2c;
	struct qcow2_cache rbc;
	u64 free_hint;			/* lowest cluster index that may be free */
	/*
	 * Frees waiting for the next flush (grown on demand). After ->frees_pending() (the driver
	 * drains writes mapped before it), that flush frees only the first free_mark entries.
	 */
	u32 nr_pending, pending_cap;
	struct qcow2_range *pending;
	bool pending_marked;
	u32 free_mark;
	u8 *cbuf;			/* compressed input buffer (2 clusters) */
	u8 *dbuf;			/* decompressed cluster */
};

static inline struct qcow2 *QC(struct vdimg_image *img)
{
	return img->priv;
}

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
static bool qcow2_owned(const struct qcow2 *q, u64 e)
{
	return q->has_data_file || (e & QCOW2_OFLAG_COPIED);
}

/* ---- caches ---- */

static int qcow2_cache_init(struct qcow2_cache *c, u32 nr, u32 size)
{
	u32 i;

	c->nr = nr;
	c->slot = vdimg_zalloc(nr * sizeof(*c->slot));
	if (!c->slot)
		return -ENOMEM;
	for (i = 0; i < nr; i++) {
		c->slot[i].data = vdimg_zalloc(size);
		if (!c->slot[i].data)
			return -ENOMEM;
	}
	return 0;
}

static void qcow2_cache_free(struct qcow2_cache *c)
{
	u32 i;

	if (!c->slot)
		return;
	for (i = 0; i < c->nr; i++)
		vdimg_free(c->slot[i].data);
	vdimg_free(c->slot);
	c->slot = NULL;
}

static struct qcow2_slot *qcow2_cache_find(struct qcow2_cache *c, u64 off)
{
	u32 i;

	for (i = 0; i < c->nr; i++) {
		if (c->slot[i].off == off) {
			c->slot[i].used = ++c->tick;
			return &c->slot[i];
		}
	}
	return NULL;
}

static int qcow2_write_rbs(struct vdimg_image *img);

static int qcow2_slot_write(struct vdimg_image *img, struct qcow2_slot *s)
{
	int ret = vdimg_file_write(img->file, s->data, QC(img)->cluster_size, s->off);

	if (!ret)
		s->dirty = false;
	return ret;
}

/*
 * A slot for a new cached cluster: the least recently used one, written back first if dirty. A
 * dirty L2 table may only reach the disk after the refcounts of what it references.
 */
static int qcow2_cache_victim(struct vdimg_image *img, struct qcow2_cache *c,
			      struct qcow2_slot **out)
{
	struct qcow2_slot *v = &c->slot[0];
	u32 i;
	int ret;

	for (i = 0; i < c->nr; i++) {
		if (!c->slot[i].off) {
			v = &c->slot[i];
			break;
		}
		if (c->slot[i].used < v->used)
			v = &c->slot[i];
	}
	if (v->off && v->dirty) {
		if (c == &QC(img)->l2c) {
			ret = qcow2_write_rbs(img);
			if (!ret)
				ret = vdimg_file_sync(img->file);
			if (!ret)
				ret = qcow2_sync_data(img);
			if (ret)
				return ret;
		}
		ret = qcow2_slot_write(img, v);
		if (ret)
			return ret;
	}
	v->off = 0;
	v->dirty = false;
	*out = v;
	return 0;
}

/* Get the cluster at @off into the cache: read it, or zero it when @fresh. */
static int qcow2_cache_get(struct vdimg_image *img, struct qcow2_cache *c, u64 off, bool fresh,
			   struct qcow2_slot **out)
{
	struct qcow2 *q = QC(img);
	struct qcow2_slot *s = qcow2_cache_find(c, off);
	int ret;

	if (s) {
		if (fresh)
			memset(s->data, 0, q->cluster_size);
		*out = s;
		return 0;
	}
	ret = qcow2_cache_victim(img, c, &s);
	if (ret)
		return ret;
	if (fresh) {
		memset(s->data, 0, q->cluster_size);
	} else {
		ret = vdimg_file_read(img->file, s->data, q->cluster_size, off);
		if (ret) {
			if (ret == -EFSCORRUPTED)
				vdimg_err(img, "metadata cluster at %llu is past the end of the file",
					  (unsigned long long)off);
			return ret;
		}
	}
	s->off = off;
	s->used = ++c->tick;
	*out = s;
	return 0;
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

static void qcow2_rc_set_raw(const struct qcow2 *q, u8 *blk, u64 i, u64 v)
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

static u64 qcow2_rc_max(const struct qcow2 *q)
{
	return q->refcount_order == 6 ? ~0ULL : (1ULL << (1U << q->refcount_order)) - 1;
}

static int qcow2_check_meta_off(struct vdimg_image *img, u64 off, const char *what)
{
	struct qcow2 *q = QC(img);

	if (!off || off & (q->cluster_size - 1) || off > (1ULL << 56))
		return vdimg_corrupt(img, "%s at bad offset %llu", what, (unsigned long long)off);
	return 0;
}

/* The refcount block slot covering cluster @idx, or NULL (*@out) when none is allocated. */
static int qcow2_rb_lookup(struct vdimg_image *img, u64 idx, struct qcow2_slot **out)
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

static int qcow2_rc_get(struct vdimg_image *img, u64 idx, u64 *rc)
{
	struct qcow2 *q = QC(img);
	struct qcow2_slot *s;
	int ret = qcow2_rb_lookup(img, idx, &s);

	if (ret)
		return ret;
	*rc = s ? qcow2_rc_get_raw(q, s->data, idx & ((1ULL << q->rb_bits) - 1)) : 0;
	return 0;
}

static int qcow2_grow_rt(struct vdimg_image *img, u64 need);
static int qcow2_defer_free(struct vdimg_image *img, u64 off, u64 len);

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
	struct qcow2_slot *s;
	__be64 e;
	int ret;

	ret = qcow2_cache_get(img, &q->rbc, b << q->cluster_bits, true, &s);
	if (ret)
		return ret;
	qcow2_rc_set_raw(q, s->data, b - first, 1);
	ret = qcow2_slot_write(img, s);
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
static int qcow2_rc_add(struct vdimg_image *img, u64 idx, s64 delta)
{
	struct qcow2 *q = QC(img);
	struct qcow2_slot *s;
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
	return 0;
}

/* Reserve @n contiguous free clusters (refcount 1 in the cache). */
static int qcow2_alloc(struct vdimg_image *img, u64 n, u64 *out)
{
	struct qcow2 *q = QC(img);
	u64 idx = q->free_hint, run = 0, start = idx, rc, i;
	u64 limit = 1ULL << (56 - q->cluster_bits);
	u64 sane = (vdimg_file_size(img->file) >> q->cluster_bits) + (2ULL << q->rb_bits) + 65536;
	struct qcow2_slot *blk;
	int ret;

	/* the header cluster is never free; skipping it also keeps offset 0 meaning "none" */
	if (!idx)
		idx = start = 1;
	while (run < n) {
		if (idx >= limit) {
			vdimg_err(img, "no free cluster below 64 PiB");
			return -ENOSPC;
		}
		if (idx >= sane)	/* only a bad refcount table counts so much beyond the file */
			return vdimg_corrupt(img, "no free cluster up to %llu, far past the end of the file",
					     (unsigned long long)idx);
		if ((idx >> q->rb_bits) >= q->rt_entries) {
			/* the new table and blocks go exactly here: grow first, then look again */
			ret = qcow2_grow_rt(img, idx >> q->rb_bits);
			if (ret)
				return ret;
			run = 0;
			idx = start = q->free_hint > idx ? q->free_hint : idx;
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
		struct qcow2_slot *s = &q->rbc.slot[i];

		if (s->off && s->dirty) {
			ret = qcow2_slot_write(img, s);
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
	if (!ret)
		q->l1_dirty_lo = q->l1_dirty_hi = 0;
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

static int qcow2_flush_locked(struct vdimg_image *img)
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
			struct qcow2_slot *s = &q->l2c.slot[i];

			if (s->off && s->dirty) {
				ret = qcow2_slot_write(img, s);
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
static int qcow2_defer_free(struct vdimg_image *img, u64 off, u64 len)
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
static bool qcow2_frees_pending(struct vdimg_image *img)
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

static int qcow2_flush(struct vdimg_image *img)
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

/* ---- mapping ---- */

/* What one subcluster (or cluster, without extended L2) holds. */
enum qcow2_kind {
	QK_UNALLOC,
	QK_ZERO,
	QK_DATA,
	QK_COMPRESSED,
};

struct qcow2_l2e {
	u64 e;				/* the descriptor word */
	u64 bm;				/* extended L2: the subcluster bitmap */
};

static void qcow2_l2_read(const struct qcow2 *q, const u8 *t, u32 i, struct qcow2_l2e *out)
{
	const __be64 *p = (const __be64 *)(t + (size_t)i * q->l2_entry_size);

	out->e = be64_to_cpu(p[0]);
	out->bm = q->ext_l2 ? be64_to_cpu(p[1]) : 0;
}

static void qcow2_l2_write(const struct qcow2 *q, u8 *t, u32 i, const struct qcow2_l2e *in)
{
	__be64 *p = (__be64 *)(t + (size_t)i * q->l2_entry_size);

	p[0] = cpu_to_be64(in->e);
	if (q->ext_l2)
		p[1] = cpu_to_be64(in->bm);
}

/* The kind of subcluster @sc of an entry, and checks of the entry itself. */
static int qcow2_kind(struct vdimg_image *img, const struct qcow2_l2e *l, u32 sc,
		      enum qcow2_kind *kind)
{
	struct qcow2 *q = QC(img);
	u64 host = l->e & QCOW2_OFFSET_MASK;

	if (l->e & QCOW2_OFLAG_COMPRESSED) {
		if (q->ext_l2 && l->bm)
			return vdimg_corrupt(img, "compressed cluster with a subcluster bitmap");
		*kind = QK_COMPRESSED;
		return 0;
	}
	if (l->e & QCOW2_L2_STD_RESERVED)
		return vdimg_corrupt(img, "L2 entry %#llx has reserved bits set",
				     (unsigned long long)l->e);
	if (host & (q->cluster_size - 1))
		return vdimg_corrupt(img, "L2 entry %#llx is not cluster aligned",
				     (unsigned long long)l->e);
	if (q->ext_l2) {
		u32 a = QCOW2_SC_ALLOC(l->bm), z = QCOW2_SC_ZERO(l->bm);

		if (l->e & QCOW2_OFLAG_ZERO)
			return vdimg_corrupt(img, "extended L2 entry with the zero bit");
		if (a & z)
			return vdimg_corrupt(img, "subcluster both allocated and zero");
		/* with a data file, guest cluster 0 is data at host offset 0 */
		if (a && !host && !q->has_data_file)
			return vdimg_corrupt(img, "allocated subclusters without a host cluster");
		if (a & (1U << sc))
			*kind = QK_DATA;
		else if (z & (1U << sc))
			*kind = QK_ZERO;
		else
			*kind = QK_UNALLOC;
		return 0;
	}
	if (l->e & QCOW2_OFLAG_ZERO)
		*kind = QK_ZERO;
	else if (host || (q->has_data_file && (l->e & QCOW2_OFLAG_COPIED)))
		*kind = QK_DATA;	/* (data file: guest cluster 0 is at host offset 0) */
	else
		*kind = QK_UNALLOC;
	return 0;
}

/* The L2 table for @off: NULL in *@out when the L1 entry is empty. */
static int qcow2_l2_lookup(struct vdimg_image *img, u64 off, bool nowait, struct qcow2_slot **out)
{
	struct qcow2 *q = QC(img);
	u64 l1i = off >> (q->cluster_bits + q->l2_bits), l2off;
	int ret;

	*out = NULL;
	if (l1i >= q->l1_size)
		return 0;
	if (q->l1[l1i] & QCOW2_L1_RESERVED)
		return vdimg_corrupt(img, "L1 entry %llu has reserved bits set",
				     (unsigned long long)l1i);
	l2off = q->l1[l1i] & QCOW2_OFFSET_MASK;
	if (!l2off)
		return 0;
	ret = qcow2_check_meta_off(img, l2off, "L2 table");
	if (ret)
		return ret;
	if (nowait) {
		*out = qcow2_cache_find(&q->l2c, l2off);
		return *out ? 0 : -EAGAIN;
	}
	return qcow2_cache_get(img, &q->l2c, l2off, false, out);
}

static void qcow2_compressed_range(const struct qcow2 *q, u64 e, u64 *off, u64 *len)
{
	u64 coff = e & q->coff_mask;
	u64 nsec = ((e >> q->csize_shift) & q->csize_mask) + 1;

	*off = coff;
	*len = nsec * 512 - (coff & 511);
}

/*
 * Read-side mapping: the longest run from @offset of one kind within one L2 table. Called with the
 * lock held.
 */
static int qcow2_map_read(struct vdimg_image *img, u64 offset, u64 length, bool nowait,
			  struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
	u64 l2_span = 1ULL << (q->cluster_bits + q->l2_bits);
	u64 end = min(offset + length, ALIGN_DOWN(offset, l2_span) + l2_span);
	u64 sc_size = 1ULL << q->sc_bits, pos = offset, host0 = 0;
	enum qcow2_kind kind0 = QK_UNALLOC;
	struct qcow2_slot *t;
	bool first = true;
	int ret;

	ret = qcow2_l2_lookup(img, offset, nowait, &t);
	if (ret)
		return ret;
	ext->offset = offset;
	ext->file = img->file;
	if (!t) {
		ext->type = VDIMG_EXT_UNALLOCATED;
		ext->length = end - offset;
		return 0;
	}
	while (pos < end) {
		u32 i = (pos >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
		u32 sc = (pos & (q->cluster_size - 1)) >> q->sc_bits;
		u64 next = min(ALIGN_DOWN(pos, sc_size) + sc_size, end), host;
		struct qcow2_l2e l;
		enum qcow2_kind kind;

		qcow2_l2_read(q, t->data, i, &l);
		ret = qcow2_kind(img, &l, sc, &kind);
		if (ret)
			return ret;
		host = (l.e & QCOW2_OFFSET_MASK) + (pos & (q->cluster_size - 1));
		if (first) {
			kind0 = kind;
			host0 = host;
			first = false;
			if (kind == QK_COMPRESSED) {
				if (q->has_data_file)
					return vdimg_corrupt(img, "compressed cluster in an image with an external data file");
				ext->type = VDIMG_EXT_ENCODED;
				ext->length = min(end, ALIGN_DOWN(pos, (u64)q->cluster_size) +
						  q->cluster_size) - offset;
				ext->cookie[0] = l.e;
				ext->cookie[1] = 0;
				return 0;
			}
		} else if (kind != kind0 ||
			   (kind == QK_DATA && host != host0 + (pos - offset))) {
			break;
		}
		pos = next;
	}
	ext->length = pos - offset;
	switch (kind0) {
	case QK_DATA:
		if (!q->dfile) {
			vdimg_err(img, "its external data file '%s' is not open", q->dfname);
			return -ENXIO;
		}
		ext->type = VDIMG_EXT_DATA;
		ext->file = q->dfile;
		ext->file_offset = host0;
		break;
	case QK_ZERO:
		ext->type = VDIMG_EXT_ZERO;
		break;
	default:
		ext->type = VDIMG_EXT_UNALLOCATED;
		break;
	}
	return 0;
}

static int qcow2_decode_cluster(struct vdimg_image *img, u64 e, u8 *dst)
{
	struct qcow2 *q = QC(img);
	u64 coff, clen, fsize = vdimg_file_size(img->file);
	int ret;

	qcow2_compressed_range(q, e, &coff, &clen);
	if (coff >= fsize)
		return vdimg_corrupt(img, "compressed cluster at %llu is past the end of the file",
				     (unsigned long long)coff);
	/* the last sector of the file may be short */
	clen = min(clen, fsize - coff);
	ret = vdimg_file_read(img->file, q->cbuf, clen, coff);
	if (ret)
		return ret;
	ret = vdimg_decompress(q->compression_type == QCOW2_COMPRESSION_ZSTD ?
			       VDIMG_DECOMP_ZSTD : VDIMG_DECOMP_DEFLATE,
			       q->cbuf, clen, dst, q->cluster_size);
	if (ret == -EFSCORRUPTED)
		vdimg_err(img, "compressed cluster at %llu does not decompress",
			  (unsigned long long)coff);
	return ret;
}

static int qcow2_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf)
{
	struct qcow2 *q = QC(img);
	u64 in = ext->offset & (q->cluster_size - 1);
	int ret;

	if (!(ext->cookie[0] & QCOW2_OFLAG_COMPRESSED) || in + ext->length > q->cluster_size)
		return -EINVAL;
	vdimg_mutex_lock(&q->lock);
	ret = qcow2_decode_cluster(img, ext->cookie[0], q->dbuf);
	if (!ret)
		memcpy(buf, q->dbuf + in, ext->length);
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

static void qcow2_l1_set(struct qcow2 *q, u32 l1i, u64 v)
{
	q->l1[l1i] = v;
	if (q->l1_dirty_lo == q->l1_dirty_hi) {
		q->l1_dirty_lo = l1i;
		q->l1_dirty_hi = l1i + 1;
	} else {
		q->l1_dirty_lo = min_t(u32, q->l1_dirty_lo, l1i);
		q->l1_dirty_hi = max_t(u32, q->l1_dirty_hi, l1i + 1);
	}
}

/* Install an empty L2 table for @offset (L1 entry in memory, table in the cache, both dirty). */
static int qcow2_new_l2(struct vdimg_image *img, u64 offset, struct qcow2_slot **out)
{
	struct qcow2 *q = QC(img);
	u64 l1i = offset >> (q->cluster_bits + q->l2_bits), off;
	int ret;

	if (l1i >= q->l1_size)
		return vdimg_corrupt(img, "offset %llu is beyond the L1 table",
				     (unsigned long long)offset);
	ret = qcow2_alloc(img, 1, &off);
	if (ret)
		return ret;
	ret = qcow2_cache_get(img, &q->l2c, off, true, out);
	if (ret) {
		qcow2_rc_add(img, off >> q->cluster_bits, -1);
		return ret;
	}
	(*out)->dirty = true;
	qcow2_l1_set(q, l1i, off | QCOW2_OFLAG_COPIED);
	return 0;
}

/*
 * The L2 table for @offset, ready to change: installed when the L1 entry is empty, and copied to
 * a new cluster when the L1 entry lacks OFLAG_COPIED (the table is shared with an internal
 * snapshot). The copy keeps every entry as it is: the data clusters it names were counted once
 * per table that references them when the snapshot was taken, so their refcounts stay right, and
 * entries without OFLAG_COPIED still get copied on write. The L1 entry then names the copy, and
 * the old table loses one reference after the next flush has made the new L1 durable.
 */
static int qcow2_l2_writable(struct vdimg_image *img, u64 offset, struct qcow2_slot **out)
{
	struct qcow2 *q = QC(img);
	u64 l1i = offset >> (q->cluster_bits + q->l2_bits), old, off;
	struct qcow2_slot *t, *n;
	int ret;

	ret = qcow2_l2_lookup(img, offset, false, &t);
	if (ret)
		return ret;
	if (!t)
		return qcow2_new_l2(img, offset, out);
	if (q->l1[l1i] & QCOW2_OFLAG_COPIED) {
		*out = t;
		return 0;
	}
	old = q->l1[l1i] & QCOW2_OFFSET_MASK;
	/* the cache may evict @t while making room for the copy */
	memcpy(q->dbuf, t->data, q->cluster_size);
	ret = qcow2_alloc(img, 1, &off);
	if (ret)
		return ret;
	ret = qcow2_cache_get(img, &q->l2c, off, true, &n);
	if (ret) {
		qcow2_rc_add(img, off >> q->cluster_bits, -1);
		return ret;
	}
	memcpy(n->data, q->dbuf, q->cluster_size);
	n->dirty = true;
	qcow2_l1_set(q, l1i, off | QCOW2_OFLAG_COPIED);
	*out = n;
	/* if this fails the old table only leaks: its refcount stays one too high */
	return qcow2_defer_free(img, old, q->cluster_size);
}

static int qcow2_need_writable(struct vdimg_image *img)
{
	if (!QC(img)->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	return 0;
}

/*
 * How many clusters, from entry @i of table @t (whose descriptor is @l, at virtual offset @cstart)
 * up to virtual offset @end, one NEW extent may reserve together: a run of entries with exactly the same descriptor, either
 * unallocated (0) or a plain zero cluster without a host offset, within one L2 table and at most
 * QCOW2_MAX_RUN_BYTES. Reserving them contiguously keeps a multi-cluster write one extent on disk
 * even when several writers allocate at the same time (one cluster per map interleaves them, and
 * every later large request on the range then needs one I/O per cluster). Extended L2 entries and
 * anything with a host offset stay one cluster. Lock held.
 */
static u32 qcow2_new_run(struct vdimg_image *img, const struct qcow2_slot *t, u32 i,
			 const struct qcow2_l2e *l, u64 cstart, u64 end)
{
	struct qcow2 *q = QC(img);
	u32 per_table = 1U << q->l2_bits, max = QCOW2_MAX_RUN_BYTES >> q->cluster_bits, n = 1;
	struct qcow2_l2e l2;

	/* a run must fit into a fresh refcount block's range next to the block itself */
	max = min(max, 1U << (q->rb_bits - 1));

	if (q->ext_l2 || (l->e != 0 && l->e != QCOW2_OFLAG_ZERO))
		return 1;
	while (n < max && i + n < per_table && cstart + ((u64)n << q->cluster_bits) < end) {
		qcow2_l2_read(q, t->data, i + n, &l2);
		if (l2.e != l->e)
			break;
		n++;
	}
	return n;
}

/*
 * Clip a DATA extent of map_read (one L2 table) to the clusters the active tables own alone,
 * which may be written in place. False when the first one is shared.
 */
static bool qcow2_clip_owned(struct qcow2 *q, const struct qcow2_slot *t, struct vdimg_extent *ext)
{
	u64 pos = ext->offset, end = ext->offset + ext->length;
	struct qcow2_l2e l;

	while (pos < end) {
		qcow2_l2_read(q, t->data, (pos >> q->cluster_bits) & ((1U << q->l2_bits) - 1), &l);
		if (!qcow2_owned(q, l.e))
			break;
		pos = ALIGN_DOWN(pos, (u64)q->cluster_size) + q->cluster_size;
	}
	if (pos == ext->offset)
		return false;
	ext->length = min(pos, end) - ext->offset;
	return true;
}

/*
 * Write-side mapping, lock held: allocated data the active tables own is returned as is; anything
 * else becomes a NEW extent over a run of subclusters of one kind (the whole cluster without
 * extended L2).
 *
 * Copy on write of a cluster shared with an internal snapshot (no OFLAG_COPIED): the contract's
 * fill comes from the layers below, but the bytes that must survive here are the shared cluster's
 * own. So map copies the whole old cluster into a newly reserved one itself (it may sleep here,
 * as for a compressed cluster, which is rewritten the same way) and returns the new cluster as a
 * NEW extent: without a fill where the old cluster held data, with the usual fill where it did
 * not (extended L2: unallocated or zero subclusters). ->commit() points the entry at the copy
 * (with OFLAG_COPIED) and drops one reference of the old cluster after the next flush, the same
 * deferred decrement a rewritten compressed cluster gets. Nothing is written into the shared
 * cluster, so a crash before the commit only leaks the copy.
 */
static int qcow2_map_write(struct vdimg_image *img, u64 offset, u64 length,
			   struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
	u64 cstart = ALIGN_DOWN(offset, (u64)q->cluster_size), host, newc = 0;
	u64 sc_size = 1ULL << q->sc_bits;
	u32 i = (offset >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
	u32 sc = (offset - cstart) >> q->sc_bits, s0, s1;
	struct qcow2_slot *t;
	struct qcow2_l2e l;
	enum qcow2_kind kind, k2;
	bool copy = false;
	u32 run = 1;
	int ret;

	ret = qcow2_map_read(img, offset, length, false, ext);
	if (ret)
		return ret;
	if (ext->type == VDIMG_EXT_DATA) {
		ret = qcow2_l2_lookup(img, offset, false, &t);
		if (ret)
			return ret;
		if (!t)
			return -EIO;
		if (qcow2_clip_owned(q, t, ext))
			return 0;
	}
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ret = qcow2_l2_writable(img, offset, &t);
	if (ret)
		return ret;
	qcow2_l2_read(q, t->data, i, &l);
	ret = qcow2_kind(img, &l, sc, &kind);
	if (ret)
		return ret;
	host = l.e & QCOW2_OFFSET_MASK;
	ext->flags = VDIMG_EXT_NEW;
	ext->cookie[0] = 0;
	ext->cookie[1] = 0;
	if (kind == QK_COMPRESSED) {
		if (q->has_data_file)
			return vdimg_corrupt(img, "compressed cluster in an image with an external data file");
		/* rewrite the whole cluster uncompressed; the caller's data goes on top */
		ret = qcow2_alloc(img, 1, &newc);
		if (ret)
			return ret;
		ret = qcow2_decode_cluster(img, l.e, q->dbuf);
		if (!ret)
			ret = vdimg_file_write(img->file, q->dbuf, q->cluster_size, newc);
		if (ret) {
			qcow2_rc_add(img, newc >> q->cluster_bits, -1);
			return ret;
		}
		ext->type = VDIMG_EXT_DATA;
		ext->file = img->file;
		ext->length = min(offset + length, cstart + q->cluster_size) - offset;
		ext->file_offset = newc + (offset - cstart);
		ext->fill_offset = 0;
		ext->fill_length = 0;
		ext->cookie[0] = newc;
		ext->cookie[1] = QCOW2_NEW_ALLOCATED | QCOW2_NEW_WAS_COMPRESSED;
		return 0;
	}
	/* the run of subclusters of this kind around @sc */
	s0 = sc;
	s1 = sc + 1;
	if (q->ext_l2) {
		while (s0 > 0 && !qcow2_kind(img, &l, s0 - 1, &k2) && k2 == kind)
			s0--;
		while (s1 < QCOW2_SUBCLUSTERS && !qcow2_kind(img, &l, s1, &k2) && k2 == kind)
			s1++;
	}
	if (q->has_data_file) {
		/* data clusters sit at their guest offset in the data file, unrefcounted */
		if (!q->dfile) {
			vdimg_err(img, "its external data file '%s' is not open", q->dfname);
			return -ENXIO;
		}
		host = cstart;
		ext->cookie[1] |= QCOW2_NEW_DATA_FILE;
		if (!(l.e & QCOW2_OFFSET_MASK))
			run = qcow2_new_run(img, t, i, &l, cstart, offset + length);
	} else if (host && !qcow2_owned(q, l.e)) {
		/* shared with a snapshot: copy what it holds, write the copy */
		copy = kind == QK_DATA || (q->ext_l2 && QCOW2_SC_ALLOC(l.bm));
		ret = qcow2_alloc(img, 1, &newc);
		if (ret)
			return ret;
		if (copy) {
			ret = vdimg_file_read(img->file, q->dbuf, q->cluster_size, host);
			if (!ret)
				ret = vdimg_file_write(img->file, q->dbuf, q->cluster_size, newc);
			if (ret) {
				qcow2_rc_add(img, newc >> q->cluster_bits, -1);
				return ret;
			}
		}
		host = newc;
		ext->cookie[1] |= QCOW2_NEW_ALLOCATED | (copy ? QCOW2_NEW_WAS_SHARED : 0);
	} else if (!host) {
		run = qcow2_new_run(img, t, i, &l, cstart, offset + length);
		ret = qcow2_alloc(img, run, &newc);
		if (ret)
			return ret;
		host = newc;
		ext->cookie[1] |= QCOW2_NEW_ALLOCATED;
	} else if (kind == QK_DATA) {
		return -EIO;	/* owned data was answered above */
	}
	ext->cookie[0] = host;
	ext->type = VDIMG_EXT_DATA;
	ext->file = q->dfile;
	ext->file_offset = host + (offset - cstart);
	if (run > 1) {
		/* a run of clusters reserved together (qcow2_new_run(): no extended L2) */
		ext->length = min(offset + length, cstart + ((u64)run << q->cluster_bits)) - offset;
		ext->fill_offset = cstart;
		ext->fill_length = (u64)run << q->cluster_bits;
		if (kind == QK_ZERO)
			ext->flags |= VDIMG_EXT_FILL_ZERO;
		/* whole clusters the caller writes need no fill (and no bounce buffer) */
		if (offset == cstart && ext->length == ext->fill_length)
			ext->fill_length = 0;
		return 0;
	}
	ext->length = min(offset + length, cstart + ((u64)s1 << q->sc_bits)) - offset;
	if (kind == QK_DATA) {
		/* the copy already holds the rest of the run */
		ext->fill_offset = 0;
		ext->fill_length = 0;
		return 0;
	}
	ext->fill_offset = cstart + ((u64)s0 << q->sc_bits);
	ext->fill_length = (u64)(s1 - s0) * sc_size;
	if (kind == QK_ZERO)
		ext->flags |= VDIMG_EXT_FILL_ZERO;
	return 0;
}

static int qcow2_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		     struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
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
		ret = qcow2_map_read(img, offset, length, nowait, ext);
	} else {
		ret = qcow2_need_writable(img);
		if (!ret && nowait) {
			/* only a cached, allocated, unshared run can be answered without sleeping */
			ret = qcow2_map_read(img, offset, length, true, ext);
			if (!ret && ext->type != VDIMG_EXT_DATA)
				ret = -EAGAIN;
			if (!ret) {
				struct qcow2_slot *t;
				struct qcow2_l2e l;

				qcow2_l2_lookup(img, offset, true, &t);
				qcow2_l2_read(q, t->data, (offset >> q->cluster_bits) &
					      ((1U << q->l2_bits) - 1), &l);
				if (!(l.e & QCOW2_OFLAG_COPIED))
					ret = -EAGAIN;
			}
		} else if (!ret) {
			ret = qcow2_map_write(img, offset, length, ext);
		}
	}
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

static int qcow2_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
	u64 cstart = ALIGN_DOWN(ext->offset, (u64)q->cluster_size);
	u32 i = (ext->offset >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
	struct qcow2_slot *t;
	struct qcow2_l2e l;
	int ret;

	if (!(ext->flags & VDIMG_EXT_NEW) ||
	    (!ext->cookie[0] && !(ext->cookie[1] & QCOW2_NEW_DATA_FILE)))
		return -EINVAL;
	vdimg_mutex_lock(&q->lock);
	ret = qcow2_l2_lookup(img, ext->offset, false, &t);
	if (!ret && !t)
		ret = -EIO;	/* map installed the table; it cannot vanish */
	if (ret)
		goto out;
	qcow2_l2_read(q, t->data, i, &l);
	if (ext->cookie[1] & QCOW2_NEW_WAS_COMPRESSED) {
		u64 coff, clen;

		if (!(l.e & QCOW2_OFLAG_COMPRESSED)) {
			ret = -EIO;
			goto out;
		}
		qcow2_compressed_range(q, l.e, &coff, &clen);
		ret = qcow2_defer_free(img, ALIGN_DOWN(coff, 512), ALIGN(clen + (coff & 511), 512));
		if (ret)
			goto out;
		l.e = ext->cookie[0] | QCOW2_OFLAG_COPIED;
		l.bm = q->ext_l2 ? 0xffffffffULL : 0;
	} else if (q->ext_l2) {
		/* no fill: a copy of a shared cluster whose subclusters keep their state */
		u32 s0 = ext->fill_length ? (ext->fill_offset - cstart) >> q->sc_bits : 0;
		u32 n = ext->fill_length >> q->sc_bits;
		u32 mask = n >= 32 ? ~0U : ((1U << n) - 1) << s0;
		u64 old = l.e & QCOW2_OFFSET_MASK;

		if (s0 >= QCOW2_SUBCLUSTERS || s0 + n > QCOW2_SUBCLUSTERS) {
			ret = -EIO;
			goto out;
		}

		if (old && old != ext->cookie[0] && !q->has_data_file) {
			/* the other subclusters lived in the old cluster: map copied them along */
			if ((QCOW2_SC_ALLOC(l.bm) & ~mask) &&
			    !(ext->cookie[1] & QCOW2_NEW_WAS_SHARED)) {
				ret = -EIO;
				goto out;
			}
			ret = qcow2_defer_free(img, old, q->cluster_size);
			if (ret)
				goto out;
		}
		l.e = ext->cookie[0] | QCOW2_OFLAG_COPIED;
		l.bm = (l.bm | mask) & ~((u64)mask << 32);
	} else {
		/* one cluster, or a run of them reserved together (qcow2_new_run()) */
		u32 n = DIV_ROUND_UP(ext->offset + ext->length - cstart, (u64)q->cluster_size), k;

		if (i + n > (1U << q->l2_bits)) {
			ret = -EIO;
			goto out;
		}
		for (k = 0; k < n; k++) {
			u64 old, host = ext->cookie[0] + ((u64)k << q->cluster_bits);

			qcow2_l2_read(q, t->data, i + k, &l);
			old = l.e & QCOW2_OFFSET_MASK;
			/* data clusters in an external data file are not refcounted */
			if (old && old != host && !q->has_data_file) {
				ret = qcow2_defer_free(img, old, q->cluster_size);
				if (ret)
					goto out;
			}
			l.e = host | QCOW2_OFLAG_COPIED;
			qcow2_l2_write(q, t->data, i + k, &l);
		}
		t->dirty = true;
		img->flags |= VDIMG_IMG_DIRTY;
		goto out;
	}
	qcow2_l2_write(q, t->data, i, &l);
	t->dirty = true;
	img->flags |= VDIMG_IMG_DIRTY;
out:
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

static void qcow2_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
	u64 cstart = ALIGN_DOWN(ext->offset, (u64)q->cluster_size), rc;
	u32 n = DIV_ROUND_UP(ext->offset + ext->length - cstart, (u64)q->cluster_size), k;
	u32 i = (ext->offset >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
	struct qcow2_slot *t;
	struct qcow2_l2e l;

	if (!(ext->flags & VDIMG_EXT_NEW) || !(ext->cookie[1] & QCOW2_NEW_ALLOCATED))
		return;
	vdimg_mutex_lock(&q->lock);
	/*
	 * commit may have failed after using them, or succeeded partly: only undo bare reservations
	 * (every cluster of a run reserved together, qcow2_new_run())
	 */
	if (qcow2_l2_lookup(img, ext->offset, false, &t) || !t || i + n > (1U << q->l2_bits))
		n = 0;
	for (k = 0; k < n; k++) {
		u64 host = ext->cookie[0] + ((u64)k << q->cluster_bits);

		if (qcow2_rc_get(img, host >> q->cluster_bits, &rc) || rc != 1)
			continue;
		qcow2_l2_read(q, t->data, i + k, &l);
		if ((l.e & QCOW2_OFFSET_MASK) != host || (l.e & QCOW2_OFLAG_COMPRESSED))
			qcow2_rc_add(img, host >> q->cluster_bits, -1);
	}
	vdimg_mutex_unlock(&q->lock);
}

/* ---- discard and write-zeroes ---- */

/*
 * Discard or zero subclusters [s0, s1) of the cluster at @pos (the entry of table @t). A host
 * cluster the entry stops naming loses one reference after the next flush: freed when the active
 * tables owned it, still there for the snapshots that share it. A table shared with a snapshot is
 * copied before the entry changes (qcow2_l2_writable()).
 */
static int qcow2_discard_cluster(struct vdimg_image *img, u64 pos, struct qcow2_slot *t, u32 i,
				 u32 s0, u32 s1, bool zeroes)
{
	struct qcow2 *q = QC(img);
	struct qcow2_l2e l, n;
	u64 host, foff = 0, flen = 0;
	int ret;

	qcow2_l2_read(q, t->data, i, &l);
	n = l;
	host = l.e & QCOW2_OFFSET_MASK;
	if (l.e & QCOW2_OFLAG_COMPRESSED) {
		u64 coff, clen;

		if (s0 || s1 < (q->ext_l2 ? QCOW2_SUBCLUSTERS : 1U))
			return -EOPNOTSUPP;
		qcow2_compressed_range(q, l.e, &coff, &clen);
		foff = ALIGN_DOWN(coff, 512);
		flen = ALIGN(clen + (coff & 511), 512);
		n.e = zeroes && !q->ext_l2 ? QCOW2_OFLAG_ZERO : 0;
		n.bm = zeroes && q->ext_l2 ? 0xffffffff00000000ULL : 0;
	} else if (q->ext_l2) {
		u32 cnt = s1 - s0, mask = (cnt >= 32 ? ~0U : ((1U << cnt) - 1)) << s0;

		n.bm &= ~(u64)mask;
		n.bm &= ~((u64)mask << 32);
		if (zeroes)
			n.bm |= (u64)mask << 32;
		if (!QCOW2_SC_ALLOC(n.bm) && host) {
			foff = host;
			flen = q->cluster_size;
			n.e = 0;
		}
	} else {
		if (host) {
			foff = host;
			flen = q->cluster_size;
		}
		n.e = zeroes ? QCOW2_OFLAG_ZERO : 0;
	}
	if (n.e == l.e && n.bm == l.bm)
		return 0;
	if (q->has_data_file)
		flen = 0;	/* data file clusters are not refcounted */
	ret = qcow2_l2_writable(img, pos, &t);
	if (ret)
		return ret;
	if (flen) {
		ret = qcow2_defer_free(img, foff, flen);
		if (ret)
			return ret;
	}
	qcow2_l2_write(q, t->data, i, &n);
	t->dirty = true;
	img->flags |= VDIMG_IMG_DIRTY;
	return 0;
}

/*
 * Discard: whole units (subclusters with extended L2, else clusters) lose their data; the host
 * clusters are freed after the next flush made the new L2 entries durable. With ZEROES the units
 * read as zeros afterwards; partial units then must be zeroed by the caller, as must everything
 * in a version 2 image that has a backing file (it cannot express zeros).
 */
static int qcow2_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	struct qcow2 *q = QC(img);
	bool zeroes = flags & VDIMG_DISCARD_ZEROES;
	u64 unit = 1ULL << q->sc_bits, start, end, pos;
	int ret;

	ret = qcow2_need_writable(img);
	if (ret)
		return ret;
	if (offset >= img->size || length > img->size - offset)
		return -EINVAL;
	start = ALIGN(offset, unit);
	end = ALIGN_DOWN(offset + length, unit);
	if (offset + length == img->size)
		end = ALIGN(img->size, unit);
	if (zeroes) {
		if (start != offset || end < offset + length)
			return -EOPNOTSUPP;	/* partial units: the caller writes zeros */
		if (q->version < 3 && (img->flags & VDIMG_IMG_HAS_PARENT))
			return -EOPNOTSUPP;
	}
	if (start >= end)
		return 0;
	/*
	 * a raw external data file must keep reading like the disk: zeros are written into it by
	 * the caller, and a plain discard (a hint) leaves everything as it is
	 */
	if (q->data_raw)
		return zeroes ? -EOPNOTSUPP : 0;
	/* a v2 image without a parent reads unallocated clusters as zeros: plain discard */
	if (q->version < 3)
		zeroes = false;
	vdimg_mutex_lock(&q->lock);
	for (pos = start; pos < end && !ret;) {
		u64 cstart = ALIGN_DOWN(pos, (u64)q->cluster_size);
		u64 cend = min(cstart + q->cluster_size, end);
		u32 i = (pos >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
		u32 s0 = (pos - cstart) >> q->sc_bits;
		u32 s1 = DIV_ROUND_UP(cend - cstart, unit);
		struct qcow2_slot *t;

		if (!q->ext_l2) {
			s0 = 0;
			s1 = 1;
		}
		ret = qcow2_l2_lookup(img, pos, false, &t);
		if (!ret && !t && zeroes)
			ret = qcow2_l2_writable(img, pos, &t);
		if (!ret && t)
			ret = qcow2_discard_cluster(img, pos, t, i, s0, s1, zeroes);
		pos = cend;
	}
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

/* ---- internal snapshots ---- */

/* One entry of the snapshot table, as far as we use it. */
struct qcow2_snap {
	u64 l1_offset;
	u32 l1_size;
	u64 disk_size;			/* from the extra data; 0 when the entry does not record it */
	u64 vm_state;
	u32 date_sec;
	u32 id_len, name_len;
	u64 id_off, name_off;		/* file offsets of the (not NUL-terminated) strings */
};

/*
 * Entry @idx (0-based, file order) of the snapshot table; every entry before it is bounds-checked
 * on the way (the table is a list of variable-length entries). -ENOENT past the last entry.
 */
static int qcow2_snapshot(struct vdimg_image *img, u32 idx, struct qcow2_snap *out)
{
	struct qcow2 *q = QC(img);
	u64 fsize = vdimg_file_size(img->file), off = q->snapshots_offset, end;
	u32 i;
	int ret;

	if (idx >= q->nb_snapshots)
		return -ENOENT;
	if (q->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return vdimg_corrupt(img, "%u snapshots, more than %u", q->nb_snapshots,
				     QCOW2_MAX_SNAPSHOTS);
	ret = qcow2_check_meta_off(img, off, "snapshot table");
	if (ret)
		return ret;
	for (i = 0;; i++) {
		struct qcow2_snapshot_hdr s;
		u32 extra, idl, nl;

		if (off - q->snapshots_offset > QCOW2_MAX_SNAP_TABLE || off + sizeof(s) > fsize)
			return vdimg_corrupt(img, "snapshot table runs past the end of the file");
		ret = vdimg_file_read(img->file, &s, sizeof(s), off);
		if (ret)
			return ret;
		extra = be32_to_cpu(s.extra_data_size);
		idl = be16_to_cpu(s.id_str_size);
		nl = be16_to_cpu(s.name_size);
		if (extra > QCOW2_MAX_SNAP_EXTRA)
			return vdimg_corrupt(img, "snapshot %u has %u bytes of extra data", i + 1, extra);
		end = off + sizeof(s) + extra + idl + nl;
		if (end > fsize)
			return vdimg_corrupt(img, "snapshot %u runs past the end of the file", i + 1);
		if (i == idx) {
			__be64 x[2] = { 0, 0 };

			memset(out, 0, sizeof(*out));
			out->l1_offset = be64_to_cpu(s.l1_table_offset);
			out->l1_size = be32_to_cpu(s.l1_size);
			out->date_sec = be32_to_cpu(s.date_sec);
			out->vm_state = be32_to_cpu(s.vm_state_size);
			if (extra >= 8) {
				ret = vdimg_file_read(img->file, x, min_t(u32, extra, 16),
						      off + sizeof(s));
				if (ret)
					return ret;
				out->vm_state = be64_to_cpu(x[0]);
				if (extra >= 16)
					out->disk_size = be64_to_cpu(x[1]);
			}
			out->id_len = idl;
			out->name_len = nl;
			out->id_off = off + sizeof(s) + extra;
			out->name_off = out->id_off + idl;
			return 0;
		}
		off = ALIGN(end, 8ULL);
	}
}

/* Open the image as snapshot @n (1-based) sees it: its L1 table and its disk size. */
static int qcow2_open_snapshot(struct vdimg_image *img, u32 n)
{
	struct qcow2 *q = QC(img);
	struct qcow2_snap sn;
	int ret;

	ret = qcow2_snapshot(img, n - 1, &sn);
	if (ret == -ENOENT) {
		vdimg_err(img, "has no internal snapshot %u (it has %u)", n, q->nb_snapshots);
		return ret;
	}
	if (ret)
		return ret;
	ret = qcow2_check_meta_off(img, sn.l1_offset, "snapshot L1 table");
	if (ret)
		return ret;
	q->l1_offset = sn.l1_offset;
	q->l1_size = sn.l1_size;
	if (sn.disk_size)
		q->vsize = sn.disk_size;
	return 0;
}

/* ---- open and close ---- */


/* The name the image's feature table gives to incompatible bit @bit, or NULL. */
static const char *qcow2_feature_name(const u8 *tbl, u32 len, u32 bit, char *buf, size_t bufsz)
{
	u32 i;

	for (i = 0; tbl && i + sizeof(struct qcow2_feature_name) <= len; i += 48) {
		const struct qcow2_feature_name *f = (const void *)(tbl + i);
		size_t n;

		if (f->type != 0 || f->bit != bit)
			continue;
		n = min_t(size_t, sizeof(f->name), bufsz - 1);
		memcpy(buf, f->name, n);
		buf[n] = 0;
		return buf;
	}
	return NULL;
}

static int qcow2_parse_exts(struct vdimg_image *img, const u8 *c0, u32 len)
{
	struct qcow2 *q = QC(img);
	const u8 *ftbl = NULL;
	u32 flen = 0, off = q->hdr_len, bit;
	char name[48];

	while (off + 8 <= len) {
		const struct qcow2_ext_hdr *h = (const void *)(c0 + off);
		u32 type = be32_to_cpu(h->type), elen = be32_to_cpu(h->len);
		const u8 *d = c0 + off + 8;

		if (type == QCOW2_EXT_END)
			break;
		if (elen > len - off - 8)
			return vdimg_corrupt(img, "header extension %#x overruns the first cluster",
					     type);
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			if (elen >= sizeof(q->backing_fmt))
				return vdimg_corrupt(img, "backing format name too long");
			memcpy(q->backing_fmt, d, elen);
			q->backing_fmt[elen] = 0;
			break;
		case QCOW2_EXT_FEATURE_TABLE:
			ftbl = d;
			flen = elen;
			break;
		case QCOW2_EXT_DATA_FILE:
			if (elen > QCOW2_MAX_DATA_NAME)
				return vdimg_corrupt(img, "external data file name too long");
			memcpy(q->dfname, d, elen);
			q->dfname[elen] = 0;
			break;
		case QCOW2_EXT_BITMAPS: {
			const struct qcow2_bitmaps_ext *b = (const void *)d;

			if (elen < sizeof(*b))
				return vdimg_corrupt(img, "bitmaps extension too short");
			q->has_bitmaps = true;
			q->nb_bitmaps = be32_to_cpu(b->nb_bitmaps);
			break;
		}
		default:
			break;	/* unknown extensions are safe to ignore */
		}
		off += 8 + ALIGN(elen, 8U);
	}
	for (bit = 0; bit < 64; bit++) {
		u64 m = 1ULL << bit;

		if (!(q->incompat & m) || (QCOW2_INCOMPAT_KNOWN & m))
			continue;
		if (qcow2_feature_name(ftbl, flen, bit, name, sizeof(name)))
			vdimg_err(img, "unsupported qcow2 feature '%s' (incompatible bit %u)", name,
				  bit);
		else
			vdimg_err(img, "unsupported qcow2 incompatible feature bit %u", bit);
		return -EOPNOTSUPP;
	}
	return 0;
}

static void qcow2_free_priv(struct qcow2 *q)
{
	qcow2_cache_free(&q->l2c);
	qcow2_cache_free(&q->rbc);
	vdimg_free(q->l1);
	vdimg_free(q->rt);
	vdimg_free(q->cbuf);
	vdimg_free(q->dbuf);
	vdimg_free(q->pending);
	vdimg_mutex_destroy(&q->lock);
	vdimg_free(q);
}

static int qcow2_write_header_field(struct vdimg_image *img, size_t off, u64 v, size_t len)
{
	__be64 b64 = cpu_to_be64(v);
	__be32 b32 = cpu_to_be32(v);

	return vdimg_file_write(img->file, len == 8 ? (void *)&b64 : (void *)&b32, len, off);
}

#ifndef __KERNEL__
static int qcow2_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res);
#endif

static int qcow2_open(struct vdimg_image *img, unsigned int flags)
{
	struct qcow2_header h;
	struct qcow2 *q;
	u64 fsize = vdimg_file_size(img->file), l2_span, need, i;
	u32 cs, hlen, ncache;
	u8 *c0 = NULL;
	int ret;

	qcow2_check_layout();
	memset(&h, 0, sizeof(h));
	if (fsize < QCOW2_V2_HEADER_LEN)
		return vdimg_corrupt(img, "file too short for a qcow2 header");
	ret = vdimg_file_read(img->file, &h, min_t(u64, fsize, sizeof(h)), 0);
	if (ret)
		return ret;
	if (be32_to_cpu(h.magic) != QCOW2_MAGIC)
		return vdimg_corrupt(img, "not a qcow2 image");
	q = vdimg_zalloc(sizeof(*q));
	if (!q)
		return -ENOMEM;
	vdimg_mutex_init(&q->lock);
	img->priv = q;
	q->version = be32_to_cpu(h.version);
	if (q->version != 2 && q->version != 3) {
		vdimg_err(img, "qcow2 version %u is not supported", q->version);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	q->cluster_bits = be32_to_cpu(h.cluster_bits);
	if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
		ret = vdimg_corrupt(img, "cluster_bits %u out of range 9..21", q->cluster_bits);
		goto fail;
	}
	cs = q->cluster_size = 1U << q->cluster_bits;
	if (q->version == 2) {
		hlen = QCOW2_V2_HEADER_LEN;
		q->refcount_order = 4;
		memset((u8 *)&h + QCOW2_V2_HEADER_LEN, 0, sizeof(h) - QCOW2_V2_HEADER_LEN);
	} else {
		hlen = be32_to_cpu(h.header_length);
		if (hlen < QCOW2_V3_HEADER_LEN || hlen % 8 || hlen > cs) {
			ret = vdimg_corrupt(img, "bad header length %u", hlen);
			goto fail;
		}
		if (hlen < sizeof(h))
			memset((u8 *)&h + hlen, 0, sizeof(h) - hlen);
		q->refcount_order = be32_to_cpu(h.refcount_order);
		if (q->refcount_order > 6) {
			ret = vdimg_corrupt(img, "refcount_order %u is above 6", q->refcount_order);
			goto fail;
		}
	}
	q->hdr_len = hlen;
	q->incompat = be64_to_cpu(h.incompatible_features);
	q->compat = be64_to_cpu(h.compatible_features);
	q->autoclear = be64_to_cpu(h.autoclear_features);
	q->compression_type = h.compression_type;
	q->vsize = be64_to_cpu(h.size);
	q->backing_off = be64_to_cpu(h.backing_file_offset);
	q->backing_len = be32_to_cpu(h.backing_file_size);
	q->nb_snapshots = be32_to_cpu(h.nb_snapshots);
	q->snapshots_offset = be64_to_cpu(h.snapshots_offset);
	q->l1_size = be32_to_cpu(h.l1_size);
	q->l1_offset = be64_to_cpu(h.l1_table_offset);
	q->rt_offset = be64_to_cpu(h.refcount_table_offset);
	q->rt_clusters = be32_to_cpu(h.refcount_table_clusters);

	switch (be32_to_cpu(h.crypt_method)) {
	case QCOW2_CRYPT_NONE:
		break;
	case QCOW2_CRYPT_AES:
		vdimg_err(img, "encrypted qcow2 images (legacy AES) are not supported");
		ret = -EOPNOTSUPP;
		goto fail;
	case QCOW2_CRYPT_LUKS:
		vdimg_err(img, "encrypted qcow2 images (LUKS) are not supported");
		ret = -EOPNOTSUPP;
		goto fail;
	default:
		ret = vdimg_corrupt(img, "unknown encryption method %u",
				    be32_to_cpu(h.crypt_method));
		goto fail;
	}

	/* the first cluster: header extensions, backing file name */
	c0 = vdimg_zalloc(cs);
	if (!c0) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vdimg_file_read(img->file, c0, min_t(u64, fsize, cs), 0);
	if (ret)
		goto fail;
	ret = qcow2_parse_exts(img, c0, cs);
	if (ret)
		goto fail;
	if (q->incompat & QCOW2_INCOMPAT_DATA_FILE) {
		q->has_data_file = true;
		q->data_raw = q->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
		q->dfile = img->data_file;
		if (img->snapshot) {
			vdimg_err(img, "an image with an external data file has no internal snapshots");
			ret = -EINVAL;
			goto fail;
		}
		if (!img->data_file) {
			bool need = true;
#ifndef __KERNEL__
			/* userspace may look at the metadata alone (info, finding the data file) */
			need = !(flags & VDIMG_OPEN_READ_ONLY);
#endif
			if (need) {
				vdimg_err(img, "needs its external data file '%s': give it with the image",
					  q->dfname[0] ? q->dfname : "(unnamed)");
				ret = -ENOENT;
				goto fail;
			}
		}
	} else {
		if (img->data_file) {
			vdimg_err(img, "has no external data file, but one was given");
			ret = -EINVAL;
			goto fail;
		}
		q->dfile = img->file;
	}
	if (img->snapshot) {
		if (!(flags & VDIMG_OPEN_READ_ONLY)) {
			vdimg_err(img, "an internal snapshot can only be opened read-only");
			ret = -EROFS;
			goto fail;
		}
		ret = qcow2_open_snapshot(img, img->snapshot);
		if (ret)
			goto fail;
	}
	if (q->incompat & QCOW2_INCOMPAT_COMPRESSION) {
		if (hlen <= 104 || q->compression_type == QCOW2_COMPRESSION_ZLIB) {
			ret = vdimg_corrupt(img, "compression type bit set without a compression type");
			goto fail;
		}
	} else if (q->compression_type) {
		ret = vdimg_corrupt(img, "compression type %u without its feature bit",
				    q->compression_type);
		goto fail;
	}
	if (q->compression_type > QCOW2_COMPRESSION_ZSTD) {
		vdimg_err(img, "unsupported qcow2 compression type %u", q->compression_type);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	q->ext_l2 = q->incompat & QCOW2_INCOMPAT_EXTL2;
	if (q->ext_l2 && q->cluster_bits < 14) {
		ret = vdimg_corrupt(img, "extended L2 entries need clusters of 16 KiB or more");
		goto fail;
	}
	q->l2_entry_size = q->ext_l2 ? 16 : 8;
	q->l2_bits = q->cluster_bits - (q->ext_l2 ? 4 : 3);
	q->sc_bits = q->ext_l2 ? q->cluster_bits - 5 : q->cluster_bits;
	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;
	q->csize_shift = 62 - (q->cluster_bits - 8);
	q->csize_mask = (1ULL << (q->cluster_bits - 8)) - 1;
	q->coff_mask = (1ULL << q->csize_shift) - 1;

	if (q->backing_off) {
		if (q->backing_len == 0 || q->backing_len > 1023 ||
		    q->backing_off > cs || q->backing_len > cs - q->backing_off) {
			ret = vdimg_corrupt(img, "bad backing file name location");
			goto fail;
		}
		img->flags |= VDIMG_IMG_HAS_PARENT;
	}

	/* sizes and tables */
	if (!q->vsize || q->vsize > (1ULL << 62)) {
		ret = vdimg_corrupt(img, "bad virtual size %llu", (unsigned long long)q->vsize);
		goto fail;
	}
	l2_span = 1ULL << (q->cluster_bits + q->l2_bits);
	need = DIV_ROUND_UP(q->vsize, l2_span);
	if (q->l1_size < need || (u64)q->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
		ret = vdimg_corrupt(img, "L1 table of %u entries for a %llu byte disk", q->l1_size,
				    (unsigned long long)q->vsize);
		goto fail;
	}
	ret = qcow2_check_meta_off(img, q->l1_offset, "L1 table");
	if (ret)
		goto fail;
	ret = qcow2_check_meta_off(img, q->rt_offset, "refcount table");
	if (ret)
		goto fail;
	if (!q->rt_clusters || (u64)q->rt_clusters * cs > QCOW2_MAX_RT_BYTES) {
		ret = vdimg_corrupt(img, "refcount table of %u clusters", q->rt_clusters);
		goto fail;
	}
	q->l1 = vdimg_zalloc(max_t(u64, q->l1_size, 1) * 8);
	q->rt_entries = (u64)q->rt_clusters * cs / 8;
	q->rt = vdimg_zalloc(q->rt_entries * 8);
	q->cbuf = vdimg_zalloc(2 * cs);
	q->dbuf = vdimg_zalloc(cs);
	if (!q->l1 || !q->rt || !q->cbuf || !q->dbuf) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vdimg_file_read(img->file, q->l1, (u64)q->l1_size * 8, q->l1_offset);
	if (!ret)
		ret = vdimg_file_read(img->file, q->rt, q->rt_entries * 8, q->rt_offset);
	if (ret) {
		if (ret == -EFSCORRUPTED)
			vdimg_err(img, "L1 or refcount table past the end of the file");
		goto fail;
	}
	for (i = 0; i < q->l1_size; i++)
		q->l1[i] = be64_to_cpu(((__be64 *)q->l1)[i]);
	for (i = 0; i < q->rt_entries; i++)
		q->rt[i] = be64_to_cpu(((__be64 *)q->rt)[i]);
	/*
	 * Cache sizes: bounded by bytes, but no more L2 slots than twice the tables the L1 can name
	 * (a copy on write holds the old and the new table), and two refcount block slots for
	 * read-only images: a chain of hundreds of small layers must not cost megabytes each.
	 */
	ncache = min_t(u32, max_t(u32, QCOW2_L2_CACHE_BYTES / cs, 4), 64);
	ncache = min_t(u64, ncache, max_t(u64, 2ULL * q->l1_size, 4));
	ret = qcow2_cache_init(&q->l2c, ncache, cs);
	ncache = min_t(u32, max_t(u32, QCOW2_RB_CACHE_BYTES / cs, 2), 16);
	if (!ret)
		ret = qcow2_cache_init(&q->rbc, (flags & VDIMG_OPEN_READ_ONLY) ? 2 : ncache, cs);
	if (ret)
		goto fail;

	img->size = ALIGN(q->vsize, 512ULL);
	img->lbs = 512;
	img->pbs = 512;
	img->alloc_unit = cs;
	vdimg_strscpy(img->variant, q->backing_off ? "differencing" : "dynamic",
		      sizeof(img->variant));

	q->writable = !(flags & VDIMG_OPEN_READ_ONLY);
	if (q->writable && (q->incompat & QCOW2_INCOMPAT_CORRUPT)) {
		vdimg_warn(img, "the image is marked corrupt: opened read-only (repair it with qemu-img check -r all)");
		q->writable = false;
		img->flags |= VDIMG_IMG_READ_ONLY;
	}
	if (q->writable && (q->autoclear & ~(q->has_data_file ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0))) {
		/*
		 * we cannot maintain bitmaps (or anything autoclear but a raw data file, which
		 * discard keeps raw): say so before writing
		 */
		u64 keep = q->autoclear & (q->has_data_file ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0);

		ret = qcow2_write_header_field(img, offsetof(struct qcow2_header,
							     autoclear_features), keep, 8);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (ret)
			goto fail;
		if (q->autoclear & QCOW2_AUTOCLEAR_BITMAPS)
			vdimg_info(img, "persistent bitmaps are now marked inconsistent");
		q->autoclear = keep;
	}
	if (q->writable && (q->incompat & QCOW2_INCOMPAT_DIRTY)) {
#ifdef __KERNEL__
		vdimg_err(img, "the image was not closed cleanly (dirty): run 'vdimgctl check --repair' first");
		ret = -EUCLEAN;
		goto fail;
#else
		struct vdimg_check_result res;

		vdimg_info(img, "the image was not closed cleanly: rebuilding refcounts");
		ret = qcow2_check(img, VDIMG_CHECK_REPAIR, &res);
		if (ret)
			goto fail;
#endif
	}
	vdimg_free(c0);
	return 0;
fail:
	vdimg_free(c0);
	qcow2_free_priv(q);
	img->priv = NULL;
	return ret;
}

static void qcow2_close(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);

	if (!q)
		return;
	if (q->writable && (img->flags & VDIMG_IMG_DIRTY)) {
		vdimg_mutex_lock(&q->lock);
		if (qcow2_flush_locked(img))
			vdimg_err(img, "metadata could not be written at close");
		vdimg_mutex_unlock(&q->lock);
	}
	qcow2_free_priv(q);
	img->priv = NULL;
}

/* ---- userspace only: parent, describe, create, check ---- */
#ifndef __KERNEL__
#include <stdio.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static int qcow2_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct qcow2 *q = QC(img);
	int ret;

	if (!q->backing_off)
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	ret = vdimg_file_read(img->file, ref->path, q->backing_len, q->backing_off);
	if (ret)
		return ret;
	ref->path[q->backing_len] = 0;
	if (q->backing_fmt[0])
		ref->format = vdimg_format_by_qemu_name(q->backing_fmt);
	return 0;
}

/* Read a snapshot string of @len bytes at @off into @buf (truncated to @sz - 1, NUL-terminated). */
static int qcow2_snap_str(struct vdimg_image *img, u64 off, u32 len, char *buf, size_t sz)
{
	size_t n = min_t(size_t, len, sz - 1);
	int ret = vdimg_file_read(img->file, buf, n, off);

	buf[ret ? 0 : n] = 0;
	return ret;
}

/*
 * The snapshot @key names: an entry whose ID string is @key, else the first whose name is @key
 * (qemu-img snapshot -l lists both). 0 with the 1-based index in *@index, or -ENOENT.
 */
static int qcow2_find_snapshot(struct vdimg_image *img, const char *key, u32 *index)
{
	struct qcow2 *q = QC(img);
	size_t kl = strlen(key);
	u32 i, by_name = 0;
	char *buf;
	int ret = 0;

	if (!kl || kl > 65535)
		return -ENOENT;
	buf = malloc(kl + 1);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < q->nb_snapshots; i++) {
		struct qcow2_snap sn;

		ret = qcow2_snapshot(img, i, &sn);
		if (ret)
			break;
		if (sn.id_len == kl) {
			ret = qcow2_snap_str(img, sn.id_off, sn.id_len, buf, kl + 1);
			if (ret)
				break;
			if (!strcmp(buf, key)) {
				*index = i + 1;
				goto out;
			}
		}
		if (!by_name && sn.name_len == kl) {
			ret = qcow2_snap_str(img, sn.name_off, sn.name_len, buf, kl + 1);
			if (ret)
				break;
			if (!strcmp(buf, key))
				by_name = i + 1;
		}
	}
	if (!ret && by_name)
		*index = by_name;
	else if (!ret)
		ret = -ENOENT;
out:
	free(buf);
	return ret;
}

static int qcow2_data_file_ref(struct vdimg_image *img, char *path, size_t len)
{
	struct qcow2 *q = QC(img);

	if (!q->has_data_file || !q->dfname[0])
		return -ENOENT;
	if (strlen(q->dfname) >= len)
		return -ENAMETOOLONG;
	strcpy(path, q->dfname);
	return 0;
}

/*
 * Rebase in place: a new backing file name (and backing format extension), or none. The header
 * cluster is rebuilt in memory: the header, the backing format extension first, every other
 * extension as it was, the end marker, then the name, placed where it does not overlap the old
 * name when there is room. Written tail first (everything after the first sector), synced, then
 * the first sector (the header fields and the start of the extensions) in one write, synced: a
 * crash before that write leaves the old header naming the old (intact) name.
 */
static int qcow2_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct qcow2 *q = QC(img);
	u32 cs = q->cluster_size, off, pos = 0, n = path ? strlen(path) : 0;
	const char *fmt = path && parent && parent->fmt ? vdimg_format_qemu_name(parent->fmt->id) :
			  NULL;
	struct qcow2_header *h;
	u8 *c0 = NULL, *nb = NULL;
	int ret;

	if (!q->writable)
		return -EROFS;
	if (img->snapshot)
		return -EROFS;
	if (path && !n)
		path = NULL;
	if (n > 1023) {
		vdimg_err(img, "backing file name longer than 1023 bytes");
		return -ENOSPC;
	}
	if (path && q->data_raw) {
		vdimg_err(img, "a raw external data file excludes a backing file");
		return -EINVAL;
	}
	c0 = calloc(1, cs);
	nb = calloc(1, cs);
	if (!c0 || !nb) {
		ret = -ENOMEM;
		goto out;
	}
	vdimg_mutex_lock(&q->lock);
	ret = vdimg_file_read(img->file, c0, min_t(u64, cs, vdimg_file_size(img->file)), 0);
	if (ret)
		goto unlock;
	/* keep the old name's bytes where the new layout does not need them (see above) */
	if (q->backing_off)
		memcpy(nb + q->backing_off, c0 + q->backing_off, q->backing_len);
	memset(nb, 0, q->hdr_len);
	memcpy(nb, c0, q->hdr_len);
	off = q->hdr_len;
	if (fmt) {
		struct qcow2_ext_hdr e = { cpu_to_be32(QCOW2_EXT_BACKING_FORMAT),
					   cpu_to_be32(strlen(fmt)) };
		u32 sz = 8 + ALIGN((u32)strlen(fmt), 8U);

		memset(nb + off, 0, sz);
		memcpy(nb + off, &e, 8);
		memcpy(nb + off + 8, fmt, strlen(fmt));
		off += sz;
	}
	{
		u32 p = q->hdr_len;

		while (p + 8 <= cs) {
			const struct qcow2_ext_hdr *e = (const void *)(c0 + p);
			u32 type = be32_to_cpu(e->type), elen = be32_to_cpu(e->len), sz;

			if (type == QCOW2_EXT_END)
				break;
			if (elen > cs - p - 8) {
				ret = vdimg_corrupt(img, "header extension %#x overruns the first cluster",
						    type);
				goto unlock;
			}
			sz = 8 + ALIGN(elen, 8U);
			if (sz > cs - p)
				sz = cs - p;
			p += sz;
			if (type == QCOW2_EXT_BACKING_FORMAT)
				continue;
			if (off + sz + 8 > cs) {
				ret = -ENOSPC;
				goto nospace;
			}
			memcpy(nb + off, e, sz);
			off += sz;
		}
	}
	if (off + 8 > cs) {
		ret = -ENOSPC;
		goto nospace;
	}
	memset(nb + off, 0, 8);
	off += 8;
	if (path) {
		pos = off;
		if (q->backing_off && pos < q->backing_off + q->backing_len &&
		    pos + n > q->backing_off && q->backing_off + q->backing_len + n <= cs)
			pos = q->backing_off + q->backing_len;
		if (pos + n > cs) {
			ret = -ENOSPC;
			goto nospace;
		}
		memcpy(nb + pos, path, n);
	}
	h = (struct qcow2_header *)nb;
	h->backing_file_offset = cpu_to_be64(path ? pos : 0);
	h->backing_file_size = cpu_to_be32(n);
	if (cs > 512) {
		ret = vdimg_file_write(img->file, nb + 512, cs - 512, 512);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (ret)
			goto unlock;
	}
	ret = vdimg_file_write(img->file, nb, min(cs, 512U), 0);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		goto unlock;
	q->backing_off = path ? pos : 0;
	q->backing_len = n;
	vdimg_strscpy(q->backing_fmt, fmt ? fmt : "", sizeof(q->backing_fmt));
	if (path)
		img->flags |= VDIMG_IMG_HAS_PARENT;
	else
		img->flags &= ~VDIMG_IMG_HAS_PARENT;
	vdimg_strscpy(img->variant, path ? "differencing" : "dynamic", sizeof(img->variant));
	goto unlock;
nospace:
	vdimg_err(img, "no room for the backing file name in the %u byte header cluster", cs);
unlock:
	vdimg_mutex_unlock(&q->lock);
out:
	free(c0);
	free(nb);
	return ret;
}

static void qcow2_describe(struct vdimg_image *img,
			   void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct qcow2 *q = QC(img);
	char v[512], k[64];
	u32 i;

	snprintf(v, sizeof(v), "%s", q->version == 2 ? "0.10" : "1.1");
	emit(ctx, "compat", v);
	snprintf(v, sizeof(v), "%u", q->cluster_size);
	emit(ctx, "cluster size", v);
	snprintf(v, sizeof(v), "%u", 1U << q->refcount_order);
	emit(ctx, "refcount bits", v);
	emit(ctx, "compression type", q->compression_type ? "zstd" : "zlib");
	emit(ctx, "extended l2", q->ext_l2 ? "true" : "false");
	emit(ctx, "lazy refcounts", q->compat & QCOW2_COMPAT_LAZY_REFCOUNTS ? "true" : "false");
	emit(ctx, "dirty", q->incompat & QCOW2_INCOMPAT_DIRTY ? "true" : "false");
	emit(ctx, "corrupt", q->incompat & QCOW2_INCOMPAT_CORRUPT ? "true" : "false");
	if (q->backing_fmt[0])
		emit(ctx, "backing format", q->backing_fmt);
	if (q->has_bitmaps) {
		snprintf(v, sizeof(v), "%u%s", q->nb_bitmaps,
			 q->autoclear & QCOW2_AUTOCLEAR_BITMAPS ? "" : " (inconsistent)");
		emit(ctx, "bitmaps", v);
	}
	if (q->has_data_file) {
		emit(ctx, "data file", q->dfname[0] ? q->dfname : "(unnamed)");
		emit(ctx, "data file raw", q->data_raw ? "true" : "false");
	}
	snprintf(v, sizeof(v), "%u", q->nb_snapshots);
	emit(ctx, "snapshots", v);
	for (i = 0; i < q->nb_snapshots && i < 1024; i++) {
		struct qcow2_snap sn;
		char id[128], name[256], date[32];
		time_t t;
		struct tm tm;

		if (qcow2_snapshot(img, i, &sn) ||
		    qcow2_snap_str(img, sn.id_off, sn.id_len, id, sizeof(id)) ||
		    qcow2_snap_str(img, sn.name_off, sn.name_len, name, sizeof(name)))
			break;
		t = sn.date_sec;
		if (!localtime_r(&t, &tm) || !strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm))
			snprintf(date, sizeof(date), "%u", sn.date_sec);
		snprintf(k, sizeof(k), "snapshot %u", i + 1);
		snprintf(v, sizeof(v), "id=%s name=%s size=%llu date=%s vm-state=%llu", id, name,
			 (unsigned long long)(sn.disk_size ? sn.disk_size : q->vsize), date,
			 (unsigned long long)sn.vm_state);
		emit(ctx, k, v);
	}
	if (img->snapshot) {
		snprintf(v, sizeof(v), "%u", img->snapshot);
		emit(ctx, "opened snapshot", v);
	}
}

static bool qcow2_opt(const char *opts, const char *key, char *val, size_t valsz)
{
	size_t kl = strlen(key);
	const char *p = opts;

	while (p && *p) {
		if (!strncmp(p, key, kl) && p[kl] == '=') {
			const char *e = strchr(p + kl + 1, ',');
			size_t n = e ? (size_t)(e - p - kl - 1) : strlen(p + kl + 1);

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

static bool qcow2_opt_bool(const char *v)
{
	return !strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1");
}

static const char *const qcow2_opt_keys[] = {
	"cluster_size", "compat", "refcount_bits", "lazy_refcounts", "extended_l2",
	"compression_type", "data_file", "data_file_raw",
};

static int qcow2_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	const struct vdimg_image msg = { .name = "qcow2 create" };
	u32 cs = opts->block_size ? opts->block_size : 65536, version = 3, rbits = 16, order;
	bool lazy = false, extl2 = false, zstd = false, draw = false;
	char dname[QCOW2_MAX_DATA_NAME + 1] = "";
	u64 per, l2_span, l1_size, l1c, k, tc, total, i, coff;
	const char *p;
	char v[64];
	struct qcow2_header h;
	u8 *buf = NULL;
	int ret;

	/* refuse unknown option keys rather than silently ignoring them */
	for (p = opts->options; p && *p;) {
		size_t n = strcspn(p, "=,");
		bool known = false;

		for (i = 0; i < ARRAY_SIZE(qcow2_opt_keys); i++)
			if (strlen(qcow2_opt_keys[i]) == n && !strncmp(p, qcow2_opt_keys[i], n))
				known = true;
		if (!known) {
			vdimg_err(&msg, "unknown option '%.*s'", (int)n, p);
			return -EINVAL;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	if (qcow2_opt(opts->options, "cluster_size", v, sizeof(v)))
		cs = strtoul(v, NULL, 0);
	if (qcow2_opt(opts->options, "compat", v, sizeof(v))) {
		if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
			version = 2;
		else if (strcmp(v, "1.1") && strcmp(v, "v3")) {
			vdimg_err(&msg, "compat must be 0.10 or 1.1");
			return -EINVAL;
		}
	}
	if (qcow2_opt(opts->options, "refcount_bits", v, sizeof(v)))
		rbits = strtoul(v, NULL, 0);
	if (qcow2_opt(opts->options, "lazy_refcounts", v, sizeof(v)))
		lazy = qcow2_opt_bool(v);
	if (qcow2_opt(opts->options, "extended_l2", v, sizeof(v)))
		extl2 = qcow2_opt_bool(v);
	if (qcow2_opt(opts->options, "compression_type", v, sizeof(v))) {
		if (!strcmp(v, "zstd"))
			zstd = true;
		else if (strcmp(v, "zlib")) {
			vdimg_err(&msg, "compression_type must be zlib or zstd");
			return -EINVAL;
		}
	}
	qcow2_opt(opts->options, "data_file", dname, sizeof(dname));
	if (qcow2_opt(opts->options, "data_file_raw", v, sizeof(v)))
		draw = qcow2_opt_bool(v);
	if (draw && !dname[0]) {
		vdimg_err(&msg, "data_file_raw needs data_file");
		return -EINVAL;
	}
	if (dname[0] && (version == 2 || (draw && opts->parent))) {
		vdimg_err(&msg, "data_file needs compat=1.1%s", draw ? " and excludes a backing file" : "");
		return -EINVAL;
	}
	if (!is_power_of_2(cs) || cs < 512 || cs > (2U << 20)) {
		vdimg_err(&msg, "cluster_size must be a power of two from 512 to 2M");
		return -EINVAL;
	}
	if (!is_power_of_2(rbits) || rbits > 64) {
		vdimg_err(&msg, "refcount_bits must be a power of two from 1 to 64");
		return -EINVAL;
	}
	if (version == 2 && (rbits != 16 || lazy || extl2 || zstd)) {
		vdimg_err(&msg, "compat=0.10 allows neither refcount_bits other than 16, lazy refcounts, extended L2 nor zstd");
		return -EINVAL;
	}
	if (extl2 && cs < 16384) {
		vdimg_err(&msg, "extended_l2 needs cluster_size 16K or more");
		return -EINVAL;
	}
	if (!opts->size || opts->size % 512 || (opts->lbs && opts->lbs != 512))
		return -EINVAL;
	if (opts->parent && strlen(opts->parent) > 1023) {
		vdimg_err(&msg, "backing file name longer than 1023 bytes");
		return -ENAMETOOLONG;
	}
	order = ilog2(rbits);
	per = (u64)cs * 8 / rbits;
	l2_span = (u64)cs / (extl2 ? 16 : 8) * cs;
	l1_size = DIV_ROUND_UP(opts->size, l2_span);
	if (l1_size * 8 > QCOW2_MAX_L1_BYTES) {
		vdimg_err(&msg, "the disk is too large for this cluster size");
		return -EFBIG;
	}
	l1c = max_t(u64, DIV_ROUND_UP(l1_size * 8, cs), 1);
	/* layout: header, refcount table (tc), refcount blocks (k), L1 table (l1c) */
	for (k = 1;; k++) {
		tc = DIV_ROUND_UP(k * 8, cs);
		total = 1 + tc + k + l1c;
		if (k * per >= total)
			break;
	}
	buf = calloc(1, cs);
	if (!buf)
		return -ENOMEM;
	ret = vdimg_file_truncate(f, total * cs);
	if (ret)
		goto out;

	memset(&h, 0, sizeof(h));
	h.magic = cpu_to_be32(QCOW2_MAGIC);
	h.version = cpu_to_be32(version);
	h.cluster_bits = cpu_to_be32(ilog2(cs));
	h.size = cpu_to_be64(opts->size);
	h.l1_size = cpu_to_be32(l1_size);
	h.l1_table_offset = cpu_to_be64((1 + tc + k) * cs);
	h.refcount_table_offset = cpu_to_be64((u64)cs);
	h.refcount_table_clusters = cpu_to_be32(tc);
	if (version == 3) {
		u64 inc = (extl2 ? QCOW2_INCOMPAT_EXTL2 : 0) | (zstd ? QCOW2_INCOMPAT_COMPRESSION : 0) |
			  (dname[0] ? QCOW2_INCOMPAT_DATA_FILE : 0);

		h.incompatible_features = cpu_to_be64(inc);
		h.compatible_features = cpu_to_be64(lazy ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
		h.autoclear_features = cpu_to_be64(draw ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0);
		h.refcount_order = cpu_to_be32(order);
		h.header_length = cpu_to_be32(QCOW2_HEADER_LEN);
		h.compression_type = zstd ? QCOW2_COMPRESSION_ZSTD : QCOW2_COMPRESSION_ZLIB;
	}
	memcpy(buf, &h, version == 3 ? QCOW2_HEADER_LEN : QCOW2_V2_HEADER_LEN);
	coff = version == 3 ? QCOW2_HEADER_LEN : QCOW2_V2_HEADER_LEN;
	if (opts->parent && opts->parent_img) {
		const char *fmt = vdimg_format_qemu_name(opts->parent_img->fmt->id);
		struct qcow2_ext_hdr e = { cpu_to_be32(QCOW2_EXT_BACKING_FORMAT),
					   cpu_to_be32(strlen(fmt)) };

		memcpy(buf + coff, &e, sizeof(e));
		memcpy(buf + coff + 8, fmt, strlen(fmt));
		coff += 8 + ALIGN(strlen(fmt), 8UL);
	}
	if (dname[0]) {
		struct qcow2_ext_hdr e = { cpu_to_be32(QCOW2_EXT_DATA_FILE),
					   cpu_to_be32(strlen(dname)) };

		if (coff + 8 + ALIGN(strlen(dname), 8UL) + 8 > cs) {
			vdimg_err(&msg, "no room for the data file name in a %u byte cluster", cs);
			ret = -ENAMETOOLONG;
			goto out;
		}
		memcpy(buf + coff, &e, sizeof(e));
		memcpy(buf + coff + 8, dname, strlen(dname));
		coff += 8 + ALIGN(strlen(dname), 8UL);
	}
	if (version == 3) {
		static const struct { u8 type, bit; const char *name; } ft[] = {
			{ 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
			{ 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
			{ 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
		};
		struct qcow2_ext_hdr e = { cpu_to_be32(QCOW2_EXT_FEATURE_TABLE),
					   cpu_to_be32(sizeof(ft) / sizeof(ft[0]) * 48) };

		if (coff + 8 + ARRAY_SIZE(ft) * 48 + 8 + (opts->parent ? 1024 : 0) <= cs) {
			memcpy(buf + coff, &e, sizeof(e));
			coff += 8;
			for (i = 0; i < ARRAY_SIZE(ft); i++) {
				struct qcow2_feature_name *n = (void *)(buf + coff);

				n->type = ft[i].type;
				n->bit = ft[i].bit;
				strncpy(n->name, ft[i].name, sizeof(n->name));
				coff += 48;
			}
		}
	}
	coff += 8;	/* end-of-extensions marker (zeros) */
	if (opts->parent) {
		size_t n = strlen(opts->parent);

		if (coff + n > cs) {
			vdimg_err(&msg, "no room for the backing file name in a %u byte cluster", cs);
			ret = -ENAMETOOLONG;
			goto out;
		}
		memcpy(buf + coff, opts->parent, n);
		((struct qcow2_header *)buf)->backing_file_offset = cpu_to_be64(coff);
		((struct qcow2_header *)buf)->backing_file_size = cpu_to_be32(n);
	}
	ret = vdimg_file_write(f, buf, cs, 0);
	if (ret)
		goto out;
	/* refcount table */
	{
		struct qcow2 q = { .refcount_order = order };

		for (i = 0; i < k; i++) {
			u64 j;

			memset(buf, 0, cs);
			for (j = 0; j < per && i * per + j < total; j++)
				qcow2_rc_set_raw(&q, buf, j, 1);
			ret = vdimg_file_write(f, buf, cs, (1 + tc + i) * cs);
			if (ret)
				goto out;
		}
		for (i = 0; i < k; i++) {
			__be64 e = cpu_to_be64((1 + tc + i) * cs);

			ret = vdimg_file_write(f, &e, 8, cs + i * 8);
			if (ret)
				goto out;
		}
	}
	ret = vdimg_file_sync(f);
	if (!ret && dname[0]) {
		/* the data file itself, empty and as large as the disk (relative: to the cwd) */
		int dfd = open(dname, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

		if (dfd < 0 || ftruncate(dfd, opts->size) || fsync(dfd)) {
			ret = -errno;
			vdimg_err(&msg, "cannot create the data file %s: %s", dname, strerror(-ret));
		}
		if (dfd >= 0)
			close(dfd);
	}
out:
	free(buf);
	return ret;
}

struct qcow2_ck {
	struct vdimg_image *img;
	u32 *cnt;			/* computed references per host cluster */
	u64 n;
	u64 errors;
	u8 *buf;
};

static void qcow2_ck_inc(struct qcow2_ck *ck, u64 off, u64 len, const char *what)
{
	struct qcow2 *q = QC(ck->img);
	u64 c, first, last;

	if (!len)
		return;
	first = off >> q->cluster_bits;
	last = (off + len - 1) >> q->cluster_bits;
	for (c = first; c <= last; c++) {
		if (c >= ck->n) {
			if (ck->errors++ < 20)
				vdimg_err(ck->img, "%s at %llu is beyond the end of the file", what,
					  (unsigned long long)off);
			return;
		}
		if (ck->cnt[c] != ~0U)
			ck->cnt[c]++;
	}
}

static int qcow2_ck_l1(struct qcow2_ck *ck, const u64 *l1, u32 l1_size)
{
	struct qcow2 *q = QC(ck->img);
	u32 i, j, ents = 1U << q->l2_bits;
	int ret;

	for (i = 0; i < l1_size; i++) {
		u64 l2off = l1[i] & QCOW2_OFFSET_MASK;

		if (!l2off)
			continue;
		if (l2off & (q->cluster_size - 1) || (l1[i] & QCOW2_L1_RESERVED)) {
			ck->errors++;
			vdimg_err(ck->img, "L1 entry %u (%#llx) is invalid", i,
				  (unsigned long long)l1[i]);
			continue;
		}
		qcow2_ck_inc(ck, l2off, q->cluster_size, "L2 table");
		if ((l2off >> q->cluster_bits) >= ck->n)
			continue;
		ret = vdimg_file_read(ck->img->file, ck->buf, q->cluster_size, l2off);
		if (ret)
			return ret;
		for (j = 0; j < ents; j++) {
			struct qcow2_l2e l;
			enum qcow2_kind kind;

			qcow2_l2_read(q, ck->buf, j, &l);
			if (l.e & QCOW2_OFLAG_COMPRESSED) {
				u64 coff, clen;

				qcow2_compressed_range(q, l.e, &coff, &clen);
				qcow2_ck_inc(ck, ALIGN_DOWN(coff, 512), ALIGN(clen + (coff & 511), 512),
					     "compressed cluster");
				continue;
			}
			if (qcow2_kind(ck->img, &l, 0, &kind)) {
				ck->errors++;
				continue;
			}
			if ((l.e & QCOW2_OFFSET_MASK) && !q->has_data_file)
				qcow2_ck_inc(ck, l.e & QCOW2_OFFSET_MASK, q->cluster_size,
					     "data cluster");
		}
	}
	return 0;
}

/* Snapshot table: its clusters, each snapshot's L1 and everything below it. */
static int qcow2_ck_snapshots(struct qcow2_ck *ck)
{
	struct qcow2 *q = QC(ck->img);
	u64 off = q->snapshots_offset, fsize = vdimg_file_size(ck->img->file);
	u32 i;
	int ret;

	for (i = 0; i < q->nb_snapshots; i++) {
		struct qcow2_snapshot_hdr s;
		u64 l1off, *l1;
		u32 l1n, j;

		if (off + sizeof(s) > fsize)
			return vdimg_corrupt(ck->img, "snapshot table past the end of the file");
		ret = vdimg_file_read(ck->img->file, &s, sizeof(s), off);
		if (ret)
			return ret;
		l1off = be64_to_cpu(s.l1_table_offset);
		l1n = be32_to_cpu(s.l1_size);
		off = ALIGN(off + sizeof(s) + be32_to_cpu(s.extra_data_size) +
			    be16_to_cpu(s.id_str_size) + be16_to_cpu(s.name_size), 8ULL);
		if ((u64)l1n * 8 > QCOW2_MAX_L1_BYTES || (l1off & (q->cluster_size - 1))) {
			ck->errors++;
			continue;
		}
		qcow2_ck_inc(ck, l1off, (u64)l1n * 8, "snapshot L1 table");
		l1 = calloc(max_t(u32, l1n, 1), 8);
		if (!l1)
			return -ENOMEM;
		ret = vdimg_file_read(ck->img->file, l1, (u64)l1n * 8, l1off);
		for (j = 0; !ret && j < l1n; j++)
			l1[j] = be64_to_cpu(((__be64 *)l1)[j]);
		if (!ret)
			ret = qcow2_ck_l1(ck, l1, l1n);
		free(l1);
		if (ret)
			return ret;
	}
	if (q->nb_snapshots)
		qcow2_ck_inc(ck, q->snapshots_offset, off - q->snapshots_offset, "snapshot table");
	return 0;
}

/* Bitmap directory and tables, when the bitmaps extension is consistent. */
static int qcow2_ck_bitmaps(struct qcow2_ck *ck, const u8 *c0)
{
	struct qcow2 *q = QC(ck->img);
	u32 off = q->hdr_len;
	const struct qcow2_bitmaps_ext *b = NULL;
	u64 dsize, doff, p;
	u8 *dir;
	int ret = 0;

	if (!q->has_bitmaps || !(q->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	while (off + 8 <= q->cluster_size) {
		const struct qcow2_ext_hdr *h = (const void *)(c0 + off);

		if (!h->type)
			break;
		if (be32_to_cpu(h->type) == QCOW2_EXT_BITMAPS)
			b = (const void *)(c0 + off + 8);
		off += 8 + ALIGN(be32_to_cpu(h->len), 8U);
	}
	if (!b)
		return 0;
	dsize = be64_to_cpu(b->bitmap_directory_size);
	doff = be64_to_cpu(b->bitmap_directory_offset);
	if (dsize > (64U << 20))
		return vdimg_corrupt(ck->img, "bitmap directory too large");
	qcow2_ck_inc(ck, doff, dsize, "bitmap directory");
	dir = calloc(1, dsize + 1);
	if (!dir)
		return -ENOMEM;
	ret = vdimg_file_read(ck->img->file, dir, dsize, doff);
	for (p = 0; !ret && p + sizeof(struct qcow2_bitmap_dir_entry) <= dsize;) {
		const struct qcow2_bitmap_dir_entry *e = (const void *)(dir + p);
		u64 toff = be64_to_cpu(e->bitmap_table_offset);
		u32 tsz = be32_to_cpu(e->bitmap_table_size), j;
		__be64 *t;

		if ((u64)tsz * 8 > (64U << 20))
			break;
		qcow2_ck_inc(ck, toff, (u64)tsz * 8, "bitmap table");
		t = calloc(max_t(u32, tsz, 1), 8);
		if (!t) {
			ret = -ENOMEM;
			break;
		}
		ret = vdimg_file_read(ck->img->file, t, (u64)tsz * 8, toff);
		for (j = 0; !ret && j < tsz; j++) {
			u64 o = be64_to_cpu(t[j]) & QCOW2_OFFSET_MASK;

			if (o)
				qcow2_ck_inc(ck, o, q->cluster_size, "bitmap data");
		}
		free(t);
		p = ALIGN(p + sizeof(*e) + be32_to_cpu(e->extra_data_size) +
			  be16_to_cpu(e->name_size), 8ULL);
	}
	free(dir);
	return ret;
}

/* Write new refcount structures holding ck->cnt after the last used cluster; switch to them. */
static int qcow2_rebuild_refcounts(struct qcow2_ck *ck)
{
	struct vdimg_image *img = ck->img;
	struct qcow2 *q = QC(img);
	u64 cs = q->cluster_size, per = 1ULL << q->rb_bits, e = ck->n, k, tc, i, j;
	u8 *blk;
	__be64 *rt;
	int ret = 0;

	/* the old structures are not references any more */
	for (i = 0; i < q->rt_entries; i++) {
		u64 o = (q->rt[i] & ~QCOW2_RT_RESERVED) >> q->cluster_bits;

		if (o && o < ck->n && ck->cnt[o])
			ck->cnt[o]--;
	}
	for (i = 0; i < q->rt_clusters; i++) {
		u64 o = (q->rt_offset >> q->cluster_bits) + i;

		if (o < ck->n && ck->cnt[o])
			ck->cnt[o]--;
	}
	while (e > 1 && !ck->cnt[e - 1])
		e--;
	for (k = 1;; k++) {
		tc = DIV_ROUND_UP(k * 8, cs);
		if (k * per >= e + k + tc)
			break;
	}
	if (tc * cs > QCOW2_MAX_RT_BYTES)
		return -EFBIG;
	blk = calloc(1, cs);
	rt = calloc(tc, cs);
	if (!blk || !rt) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < k; i++) {
		memset(blk, 0, cs);
		for (j = 0; j < per; j++) {
			u64 idx = i * per + j, v = 0;

			if (idx < e)
				v = ck->cnt[idx];
			else if (idx < e + k + tc)
				v = 1;
			if (v > qcow2_rc_max(q)) {
				vdimg_err(img, "cluster %llu has %llu references, more than %u-bit refcounts hold",
					  (unsigned long long)idx, (unsigned long long)v,
					  1U << q->refcount_order);
				ret = -EOVERFLOW;
				goto out;
			}
			qcow2_rc_set_raw(q, blk, j, v);
		}
		ret = vdimg_file_write(img->file, blk, cs, (e + i) * cs);
		if (ret)
			goto out;
		rt[i] = cpu_to_be64((e + i) * cs);
	}
	ret = vdimg_file_write(img->file, rt, tc * cs, (e + k) * cs);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = qcow2_write_header_field(img, offsetof(struct qcow2_header,
							     refcount_table_offset), (e + k) * cs, 8);
	if (!ret)
		ret = qcow2_write_header_field(img, offsetof(struct qcow2_header,
							     refcount_table_clusters), tc, 4);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		goto out;
	vdimg_free(q->rt);
	q->rt = vdimg_zalloc(tc * cs);
	if (!q->rt) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < k; i++)
		q->rt[i] = (e + i) * cs;
	q->rt_offset = (e + k) * cs;
	q->rt_clusters = tc;
	q->rt_entries = tc * cs / 8;
	for (i = 0; i < q->rbc.nr; i++)
		q->rbc.slot[i].off = 0;
	q->free_hint = 1;
out:
	free(blk);
	free(rt);
	return ret;
}

/* OFLAG_COPIED must say "refcount == 1" in the active tables. */
static int qcow2_ck_copied(struct vdimg_image *img, bool fix, u64 *bad)
{
	struct qcow2 *q = QC(img);
	u32 i, j, ents = 1U << q->l2_bits;
	int ret;

	for (i = 0; i < q->l1_size; i++) {
		u64 l2off = q->l1[i] & QCOW2_OFFSET_MASK, rc;
		struct qcow2_slot *t;

		if (!l2off || (l2off & (q->cluster_size - 1)))
			continue;
		ret = qcow2_rc_get(img, l2off >> q->cluster_bits, &rc);
		if (ret)
			return ret;
		if (!!(q->l1[i] & QCOW2_OFLAG_COPIED) != (rc == 1)) {
			(*bad)++;
			if (fix) {
				q->l1[i] ^= QCOW2_OFLAG_COPIED;
				if (q->l1_dirty_lo == q->l1_dirty_hi)
					q->l1_dirty_lo = i;
				q->l1_dirty_hi = i + 1;
			}
		}
		ret = qcow2_cache_get(img, &q->l2c, l2off, false, &t);
		if (ret)
			return ret;
		for (j = 0; j < ents; j++) {
			struct qcow2_l2e l;
			u64 host;

			qcow2_l2_read(q, t->data, j, &l);
			host = l.e & QCOW2_OFFSET_MASK;
			if ((l.e & QCOW2_OFLAG_COMPRESSED) || !host || q->has_data_file)
				continue;
			ret = qcow2_rc_get(img, host >> q->cluster_bits, &rc);
			if (ret)
				return ret;
			if (!!(l.e & QCOW2_OFLAG_COPIED) != (rc == 1)) {
				(*bad)++;
				if (fix) {
					l.e ^= QCOW2_OFLAG_COPIED;
					qcow2_l2_write(q, t->data, j, &l);
					t->dirty = true;
				}
			}
		}
	}
	return 0;
}

/* check keeps a u32 reference count per host cluster of the file: 512 MiB at most */
#define QCOW2_CHECK_MAX_CLUSTERS	(1ULL << 27)

static int qcow2_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct qcow2 *q = QC(img);
	bool repair = flags & VDIMG_CHECK_REPAIR;
	struct qcow2_ck ck = { .img = img };
	u64 fsize = vdimg_file_size(img->file), idx, covered, rc, bad = 0, i;
	u8 *c0 = NULL;
	int ret;

	memset(res, 0, sizeof(*res));
	if (repair && !q->writable)
		return -EROFS;
	vdimg_mutex_lock(&q->lock);
	ret = qcow2_flush_locked(img);
	if (ret)
		goto out;
	ck.n = DIV_ROUND_UP(fsize, (u64)q->cluster_size);
	/* one counter per host cluster: a hostile (or huge sparse) file must not ask for gigabytes */
	if (ck.n > QCOW2_CHECK_MAX_CLUSTERS) {
		vdimg_err(img, "the file spans %llu clusters; check counts at most %llu (%llu MiB of counters)",
			  (unsigned long long)ck.n, (unsigned long long)QCOW2_CHECK_MAX_CLUSTERS,
			  (unsigned long long)(QCOW2_CHECK_MAX_CLUSTERS * sizeof(u32)) >> 20);
		ret = -EFBIG;
		goto out;
	}
	ck.cnt = calloc(ck.n + 1, sizeof(u32));
	ck.buf = malloc(q->cluster_size);
	c0 = calloc(1, q->cluster_size);
	if (!ck.cnt || !ck.buf || !c0) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_read(img->file, c0, min_t(u64, fsize, q->cluster_size), 0);
	if (ret)
		goto out;
	qcow2_ck_inc(&ck, 0, q->cluster_size, "header");
	qcow2_ck_inc(&ck, q->l1_offset, (u64)q->l1_size * 8, "L1 table");
	qcow2_ck_inc(&ck, q->rt_offset, (u64)q->rt_clusters * q->cluster_size, "refcount table");
	for (i = 0; i < q->rt_entries; i++) {
		u64 o = q->rt[i] & ~QCOW2_RT_RESERVED;

		if (!o)
			continue;
		if (o & (q->cluster_size - 1)) {
			ck.errors++;
			continue;
		}
		qcow2_ck_inc(&ck, o, q->cluster_size, "refcount block");
	}
	ret = qcow2_ck_l1(&ck, q->l1, q->l1_size);
	if (!ret)
		ret = qcow2_ck_snapshots(&ck);
	if (!ret)
		ret = qcow2_ck_bitmaps(&ck, c0);
	if (ret)
		goto out;
	/* compare with the stored refcounts, over the file and over what the table covers */
	covered = q->rt_entries << q->rb_bits;
	for (idx = 0; idx < max(ck.n, min(covered, ck.n + (1ULL << q->rb_bits))); idx++) {
		u64 want = idx < ck.n ? ck.cnt[idx] : 0;

		ret = qcow2_rc_get(img, idx, &rc);
		if (ret)
			goto out;
		if (rc > want) {
			res->leaks++;
		} else if (rc < want) {
			res->errors++;
			if (res->errors <= 20)
				vdimg_err(img, "cluster %llu: refcount %llu, %llu references",
					  (unsigned long long)idx, (unsigned long long)rc,
					  (unsigned long long)want);
		}
	}
	res->errors += ck.errors;
	if (repair && (res->leaks || res->errors || (q->incompat & QCOW2_INCOMPAT_DIRTY))) {
		ret = qcow2_rebuild_refcounts(&ck);
		if (ret)
			goto out;
		res->fixed += res->leaks + res->errors - ck.errors;
	}
	ret = qcow2_ck_copied(img, repair, &bad);
	if (ret)
		goto out;
	res->errors += bad;
	if (repair) {
		res->fixed += bad;
		img->flags |= VDIMG_IMG_DIRTY;
		ret = qcow2_flush_locked(img);
		if (!ret && (q->incompat & QCOW2_INCOMPAT_DIRTY)) {
			ret = vdimg_file_sync(img->file);
			if (!ret)
				ret = qcow2_write_header_field(img, offsetof(struct qcow2_header,
					incompatible_features), q->incompat & ~QCOW2_INCOMPAT_DIRTY, 8);
			if (!ret)
				q->incompat &= ~QCOW2_INCOMPAT_DIRTY;
		}
	}
out:
	vdimg_mutex_unlock(&q->lock);
	free(ck.cnt);
	free(ck.buf);
	free(c0);
	return ret;
}

#endif /* !__KERNEL__ */

static bool qcow2_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	u32 v;

	if (head_len < 8 || memcmp(head, "QFI\xfb", 4))
		return false;
	v = ((u32)head[4] << 24) | ((u32)head[5] << 16) | ((u32)head[6] << 8) | head[7];
	return v == 2 || v == 3;
}

const struct vdimg_format vdimg_qcow2_format = {
	.name = "qcow2",
	.id = VDIMG_FMT_QCOW2,
	.caps = VDIMG_CAP_DATA_FILE | VDIMG_CAP_SNAPSHOTS,
	.probe = qcow2_probe,
	.open = qcow2_open,
	.close = qcow2_close,
	.map = qcow2_map,
	.commit = qcow2_commit,
	.abort = qcow2_abort,
	.read_encoded = qcow2_read_encoded,
	.discard = qcow2_discard,
	.flush = qcow2_flush,
	.frees_pending = qcow2_frees_pending,
};

#ifndef __KERNEL__
const struct vdimg_tool_ops vdimg_qcow2_tool_ops = {
	.id = VDIMG_FMT_QCOW2,
	.create = qcow2_create,
	.check = qcow2_check,
	.parent_ref = qcow2_parent_ref,
	.describe = qcow2_describe,
	.set_parent = qcow2_set_parent,
	.data_file_ref = qcow2_data_file_ref,
	.find_snapshot = qcow2_find_snapshot,
};
#endif
