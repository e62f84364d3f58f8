// SPDX-License-Identifier: GPL-2.0
/*
 * QCOW2 mapping: L1/L2 lookups through the L2 cache, standard, zero, compressed and extended-L2
 * (subcluster) descriptors, ->map() for reads and writes (reserving new clusters, copying clusters
 * shared with internal snapshots), ->commit(), ->abort(), ->read_encoded() and ->discard().
 * Kernel-shared: compiled into the module and the userspace library; only
 * include/vdimg/platform.h services here.
 */
#include "qcow2.h"

/* ---- mapping ---- */

void qcow2_l2_read(const struct qcow2 *q, const u8 *t, u32 i, struct qcow2_l2e *out)
{
	const __be64 *p = (const __be64 *)(t + (size_t)i * q->l2_entry_size);

	out->e = be64_to_cpu(p[0]);
	out->bm = q->ext_l2 ? be64_to_cpu(p[1]) : 0;
}

void qcow2_l2_write(const struct qcow2 *q, u8 *t, u32 i, const struct qcow2_l2e *in)
{
	__be64 *p = (__be64 *)(t + (size_t)i * q->l2_entry_size);

	p[0] = cpu_to_be64(in->e);
	if (q->ext_l2)
		p[1] = cpu_to_be64(in->bm);
}

/* The kind of subcluster @sc of an entry, and checks of the entry itself. */
int qcow2_kind(struct vdimg_image *img, const struct qcow2_l2e *l, u32 sc,
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
static int qcow2_l2_lookup(struct vdimg_image *img, u64 off, bool nowait,
			   struct vdimg_ct_slot **out)
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
		*out = vdimg_ct_find(&q->l2c, l2off);
		return *out ? 0 : -EAGAIN;
	}
	return qcow2_cache_get(img, &q->l2c, l2off, false, out);
}

void qcow2_compressed_range(const struct qcow2 *q, u64 e, u64 *off, u64 *len)
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
	struct vdimg_ct_slot *t;
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
					return vdimg_corrupt(img,
							     "compressed cluster in an image with an external data file");
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

/*
 * q->cbuf and q->dbuf, allocated the first time a compressed cluster is read or a cluster or L2
 * table is copied: most images (and every empty layer of a chain) never need them.
 * Context: q->lock held.
 */
static int qcow2_scratch(struct qcow2 *q)
{
	lockdep_assert_held(&q->lock);
	if (!q->cbuf)
		q->cbuf = vdimg_zalloc(2 * (size_t)q->cluster_size);
	if (!q->dbuf)
		q->dbuf = vdimg_zalloc(q->cluster_size);
	return q->cbuf && q->dbuf ? 0 : -ENOMEM;
}

/* The compressed cluster of L2 entry @e into @dst. Context: q->lock held, qcow2_scratch() done. */
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

int qcow2_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf)
{
	struct qcow2 *q = QC(img);
	u64 in = ext->offset & (q->cluster_size - 1);
	int ret;

	if (!(ext->cookie[0] & QCOW2_OFLAG_COMPRESSED) || in + ext->length > q->cluster_size)
		return -EINVAL;
	vdimg_mutex_lock(&q->lock);
	ret = qcow2_scratch(q);
	if (!ret)
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
static int qcow2_new_l2(struct vdimg_image *img, u64 offset, struct vdimg_ct_slot **out)
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
int qcow2_l2_writable(struct vdimg_image *img, u64 offset, struct vdimg_ct_slot **out)
{
	struct qcow2 *q = QC(img);
	u64 l1i = offset >> (q->cluster_bits + q->l2_bits), old, off;
	struct vdimg_ct_slot *t, *n;
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
	ret = qcow2_scratch(q);
	if (ret)
		return ret;
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
 * up to virtual offset @end, one NEW extent may reserve together: a run of entries with exactly the
 * same descriptor, either unallocated (0) or a plain zero cluster without a host offset, within one
 * L2 table and at most QCOW2_MAX_RUN_BYTES. Reserving them contiguously keeps a multi-cluster write
 * one extent on disk even when several writers allocate at the same time (one cluster per map
 * interleaves them, and every later large request on the range then needs one I/O per cluster).
 * Extended L2 entries and anything with a host offset stay one cluster. Lock held.
 */
static u32 qcow2_new_run(struct vdimg_image *img, const struct vdimg_ct_slot *t, u32 i,
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
static bool qcow2_clip_owned(struct qcow2 *q, const struct vdimg_ct_slot *t,
			     struct vdimg_extent *ext)
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
	struct vdimg_ct_slot *t;
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
			return vdimg_corrupt(img,
					     "compressed cluster in an image with an external data file");
		/* rewrite the whole cluster uncompressed; the caller's data goes on top */
		ret = qcow2_scratch(q);
		if (!ret)
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
		ret = qcow2_scratch(q);
		if (!ret)
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
	/* fresh clusters at the end of the file need no zero fill */
	if (ext->cookie[1] == QCOW2_NEW_ALLOCATED)
		vdimg_ext_hole_check(ext, host);
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

int qcow2_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
	      struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
	bool nowait = flags & VDIMG_MAP_NOWAIT;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	length = min(length, img->size - offset);
	memset(ext, 0, sizeof(*ext));
	if (!vdimg_mutex_lock_nowait(&q->lock, nowait))
		return -EAGAIN;
	if (!(flags & VDIMG_MAP_WRITE)) {
		ret = qcow2_map_read(img, offset, length, nowait, ext);
	} else {
		ret = qcow2_need_writable(img);
		if (!ret && nowait) {
			/*
			 * only a cached, allocated, unshared run can be answered without sleeping
			 */
			ret = qcow2_map_read(img, offset, length, true, ext);
			if (!ret && ext->type != VDIMG_EXT_DATA)
				ret = -EAGAIN;
			if (!ret) {
				struct vdimg_ct_slot *t;
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
	/* (sub)clusters smaller than a page share it with their neighbours */
	if (!ret && ext->type == VDIMG_EXT_DATA)
		vdimg_ext_unit_check(ext, 1ULL << q->sc_bits);
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

int qcow2_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
	u64 cstart = ALIGN_DOWN(ext->offset, (u64)q->cluster_size);
	u32 i = (ext->offset >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
	struct vdimg_ct_slot *t;
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

void qcow2_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct qcow2 *q = QC(img);
	u64 cstart = ALIGN_DOWN(ext->offset, (u64)q->cluster_size), rc;
	u32 n = DIV_ROUND_UP(ext->offset + ext->length - cstart, (u64)q->cluster_size), k;
	u32 i = (ext->offset >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
	struct vdimg_ct_slot *t;
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
static int qcow2_discard_cluster(struct vdimg_image *img, u64 pos, struct vdimg_ct_slot *t, u32 i,
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
int qcow2_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
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
		struct vdimg_ct_slot *t;

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
