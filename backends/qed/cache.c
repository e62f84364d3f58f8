// SPDX-License-Identifier: GPL-2.0
/*
 * QED tables and flush: validity of table entries, header feature updates, L2 table pages through
 * the bounded LRU cache of backends/cluster_table.c, and ->flush(). Kernel-shared: compiled into
 * the module and the userspace library; only include/vdimg/platform.h services here.
 *
 * QED has no refcounts: a cluster belongs to whoever references it, and space is allocated by
 * growing the file. Crash safety: the driver writes a new data cluster (and its fill) before
 * ->commit() records it in a cached L2 page; ->flush() first marks the image NEED_CHECK (once),
 * syncs (the data is durable), writes dirty L2 pages, syncs again and only then writes L1 entries
 * that link new L2 tables. A crash can leak clusters at the end of the file, never point a table at
 * unwritten space.
 */
#include "qed.h"

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

bool qed_table_ok(const struct qed *q, u64 off)
{
	return qed_area_ok(q, off, q->tbytes);
}

bool qed_data_ok(const struct qed *q, u64 e)
{
	return e == QED_ENTRY_UNALLOC || e == QED_ENTRY_ZERO || qed_area_ok(q, e, q->cluster_size);
}

/* ---- header ---- */

int qed_write_features(struct vdimg_image *img, u64 features)
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

/* The page at @off in the cache: read it, or zeros when @fresh. */
int qed_cache_get(struct vdimg_image *img, u64 off, bool fresh, struct vdimg_ct_slot **out)
{
	return vdimg_ct_get(img, &QD(img)->l2c, off, fresh, qed_meta_barrier, "L2 table page", out);
}

/* ---- flush ---- */

static bool qed_meta_dirty(const struct qed *q)
{
	u32 i;

	if (q->l1_dirty_lo < q->l1_dirty_hi)
		return true;
	for (i = 0; i < q->l2c.nr; i++)
		if (q->l2c.slot[i].off && q->l2c.slot[i].dirty)
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
	if (!ret) {
		q->l1_dirty_lo = 0;
		q->l1_dirty_hi = 0;
	}
	return ret;
}

void qed_l1_set(struct qed *q, u64 i, u64 v)
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

int qed_flush_locked(struct vdimg_image *img)
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
	for (i = 0; i < q->l2c.nr; i++) {
		struct vdimg_ct_slot *s = &q->l2c.slot[i];

		if (s->off && s->dirty) {
			ret = vdimg_ct_write(img, &q->l2c, s);
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

int qed_flush(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	int ret;

	vdimg_mutex_lock(&q->lock);
	ret = qed_flush_locked(img);
	vdimg_mutex_unlock(&q->lock);
	return ret;
}
