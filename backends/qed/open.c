// SPDX-License-Identifier: GPL-2.0
/*
 * QED open and close (qemu's docs/interop/qed_spec): probe, the header with its feature bits
 * (backing file, the "no probe" raw backing flag, NEED_CHECK), the L1 table, the scan of every
 * table a NEED_CHECK image needs, and the struct vdimg_format of qed. Kernel-shared: compiled into
 * the module and the userspace library. A clean close clears NEED_CHECK; a writable open of a
 * NEED_CHECK image scans every table and drops entries that point outside the file (as qemu does)
 * before clearing it, and a read-only open of one treats such entries as unallocated instead of
 * refusing the image. Create, check/repair, describe and set_parent are userspace-only
 * (tools/lib/formats/qed.c).
 */
#include "qed.h"

/* ---- scanning every table (NEED_CHECK, check) ---- */

/* Mark the clusters of [off, off + len) used; false if one already was. */
bool qed_mark(const struct qed *q, struct qed_scan *sc, u64 off, u64 len)
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
int qed_scan_tables(struct vdimg_image *img, bool fix, struct qed_scan *sc)
{
	struct qed *q = QD(img);
	u64 l1i, p, per = q->psize / 8;
	u32 i;
	int ret;

	lockdep_assert_held(&q->lock);
	for (l1i = 0; l1i < q->l1_entries; l1i++) {
		u64 t = q->l1[l1i];

		if (sc->progress)
			sc->progress(l1i, q->l1_entries);
		if (!t)
			continue;
		if (!qed_table_ok(q, t)) {
			sc->errors++;
			if (!sc->quiet)
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
			vdimg_err(img, "L2 table at %#llx is referenced twice",
				  (unsigned long long)t);
			continue;
		}
		sc->end = max(sc->end, t + q->tbytes);
		for (p = 0; p < q->tbytes; p += q->psize) {
			struct vdimg_ct_slot *s;

			ret = qed_cache_get(img, t + p, false, &s);
			if (ret)
				return ret;
			for (i = 0; i < per; i++) {
				u64 e = qed_get(s, i);

				if (e == QED_ENTRY_UNALLOC || e == QED_ENTRY_ZERO)
					continue;
				if (!qed_data_ok(q, e)) {
					sc->errors++;
					if (sc->errors <= 20 && !sc->quiet)
						vdimg_err(img, "L2 table %#llx entry %llu: bad cluster offset %#llx%s",
							  (unsigned long long)t,
							  (unsigned long long)(p / 8 + i),
							  (unsigned long long)e,
							  fix ? " (cleared)" : "");
					if (fix) {
						qed_set(s, i, QED_ENTRY_UNALLOC);
						sc->fixed++;
					}
					continue;
				}
				sc->end = max(sc->end, e + q->cluster_size);
				if (!qed_mark(q, sc, e, q->cluster_size)) {
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
int qed_clear_need_check(struct vdimg_image *img)
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

/*
 * A writable image on a block device: QED allocates by growing the file, and the device is larger
 * than the image, so new space starts after the last table or cluster the tables reference (the
 * header and the L1 table included), not at the device's end. Every L2 table is read once. Lock
 * held.
 */
static int qed_find_end(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	struct qed_scan sc = { .quiet = true };
	int ret;

	lockdep_assert_held(&q->lock);
	ret = qed_scan_tables(img, false, &sc);
	if (ret)
		return ret;
	sc.end = max(sc.end, max((u64)q->header_size * q->cluster_size, q->l1_offset + q->tbytes));
	q->next_alloc = ALIGN(sc.end, (u64)q->cluster_size);
	if (sc.errors)
		vdimg_warn(img, "%llu table entries point outside the device or twice at one cluster: new clusters go after the valid ones",
			   (unsigned long long)sc.errors);
	return 0;
}

/* ---- open and close ---- */

static void qed_free_priv(struct qed *q)
{
	vdimg_ct_free(&q->l2c);
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
	u32 cs, ts, nslots;
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
		ret = vdimg_corrupt(img,
				    "cluster size %u is not a power of two from 4 KiB to 64 MiB",
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
	q->fixed_file = vdimg_file_fixed_size(img->file);
	q->dev_size = fsize;
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
		ret = vdimg_corrupt(img, "bad L1 table offset %#llx",
				    (unsigned long long)q->l1_offset);
		goto fail;
	}
	q->l1_entries = entries;
	q->l1 = vdimg_zalloc(entries * 8);
	q->zpage = vdimg_zalloc(q->psize);
	nslots = min_t(u32, max_t(u32, QED_CACHE_BYTES / q->psize, 8), QED_MAX_SLOTS);
	/*
	 * no more slots than twice the L2 tables the image can have (small layers of long chains)
	 */
	nslots = min_t(u64, nslots, max_t(u64, 2 * entries, 4));
	if (!q->l1 || !q->zpage) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vdimg_ct_init(&q->l2c, nslots, q->psize);
	if (ret)
		goto fail;
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
	if (!ret && q->fixed_file)
		ret = qed_find_end(img);
	vdimg_mutex_unlock(&q->lock);
	if (ret)
		goto fail;
	return 0;
fail:
	qed_free_priv(q);
	img->priv = NULL;
	return ret;
}

static u64 qed_metadata_bytes(struct vdimg_image *img)
{
	struct qed *q = QD(img);
	u64 n;

	vdimg_mutex_lock(&q->lock);
	n = q->l1_entries * 8 + q->psize + vdimg_ct_bytes(&q->l2c);
	vdimg_mutex_unlock(&q->lock);
	return n;
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

/*
 * Online grow: the L1 table has a fixed size (table_size clusters), so the new size must be one
 * it maps; the L1 entries the new size brings in must be empty on disk. Then one header field,
 * image_size, changes.
 */
static int qed_grow(struct vdimg_image *img, u64 new_size)
{
	struct qed *q = QD(img);
	u64 l2_span = 1ULL << (q->cluster_bits + q->tbits), need, cap, i, old = img->size;
	u64 *l1 = NULL;
	__le64 v;
	int ret = 0;

	if (!q->writable)
		return -EROFS;
	if (new_size <= old || new_size % 512 || new_size > QED_MAX_VSIZE)
		return -EINVAL;
	need = DIV_ROUND_UP(new_size, l2_span);
	cap = min_t(u64, q->tbytes / 8, QED_MAX_L1_BYTES / 8);
	if (need > cap) {
		vdimg_err(img, "cannot grow past %llu bytes: that is all the L1 table maps",
			  (unsigned long long)(cap * l2_span));
		return -EFBIG;
	}
	vdimg_mutex_lock(&q->lock);
	if (need > q->l1_entries) {
		l1 = vdimg_zalloc(need * 8);
		if (!l1)
			ret = -ENOMEM;
		else
			ret = vdimg_file_read(img->file, l1 + q->l1_entries,
					      (need - q->l1_entries) * 8,
					      q->l1_offset + q->l1_entries * 8);
		for (i = q->l1_entries; !ret && i < need; i++) {
			if (l1[i]) {
				vdimg_err(img, "cannot grow online: L1 entry %llu past the end is not empty (detach and use vdimgctl resize)",
					  (unsigned long long)i);
				ret = -EOPNOTSUPP;
			}
		}
		if (!ret) {
			/* all zeros: the same in any byte order */
			memcpy(l1, q->l1, q->l1_entries * 8);
			vdimg_free(q->l1);
			q->l1 = l1;
			l1 = NULL;
			q->l1_entries = need;
		}
	}
	vdimg_mutex_unlock(&q->lock);
	vdimg_free(l1);
	if (ret)
		return ret;
	img->size = new_size;
	ret = vdimg_grow_zero_new(img, old);
	if (!ret) {
		v = cpu_to_le64(new_size);
		ret = vdimg_file_write(img->file, &v, 8, offsetof(struct qed_header, image_size));
	}
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret) {
		img->size = old;
		return ret;
	}
	vdimg_mutex_lock(&q->lock);
	q->vsize = new_size;
	vdimg_mutex_unlock(&q->lock);
	return 0;
}

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
	.grow = qed_grow,
	.metadata_bytes = qed_metadata_bytes,
};
