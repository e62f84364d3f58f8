// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: QCOW2 check and repair: counts the references of every host cluster (header,
 * L1/L2 tables, refcount structures, snapshots, bitmaps) against the refcounts, fixes OFLAG_COPIED,
 * and rebuilds the refcounts when repairing (also at a writable open of a dirty image:
 * qcow2_repair()). The kernel-shared backend is backends/qcow2/.
 */
#include <stdio.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include "tool-ops.h"
#include "backends/qcow2/qcow2.h"
#include "tool.h"

struct qcow2_ck {
	struct vdimg_image *img;
	u32 *cnt;			/* computed references per host cluster */
	u64 n;
	u64 errors;
	u8 *buf;
};

/* check keeps a u32 reference count per host cluster of the file: 512 MiB at most */
#define QCOW2_CHECK_MAX_CLUSTERS	(1ULL << 27)

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

		/* the active tables are the first half of check's work, the refcounts the other */
		if (l1 == q->l1)
			vdimg_tool_progress("check", 0, 2, i, l1_size);
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
		struct vdimg_ct_slot *t;

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

int qcow2_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
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

		if (!(idx & ((1ULL << q->rb_bits) - 1)))	/* a refcount block */
			vdimg_tool_progress("check", 1, 2, idx,
					    max(ck.n, min(covered, ck.n + (1ULL << q->rb_bits))));
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

int qcow2_repair(struct vdimg_image *img)
{
	struct vdimg_check_result res;

	return qcow2_check(img, VDIMG_CHECK_REPAIR, &res);
}
