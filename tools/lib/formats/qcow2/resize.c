// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: offline resize of a QCOW2 image. Growing raises the virtual size and, when the L1
 * table needs more entries than its clusters hold, writes a larger L1 table elsewhere first;
 * shrinking drops the L2 tables wholly past the new end (the caller has discarded the data there).
 * The virtual size, the L1 size and the L1 offset sit next to each other in the header and change
 * in one write, after everything they point at is on disk: a crash leaves the old or the new size
 * (and at worst leaked clusters, which check --repair gives back).
 */
#include "tool.h"
#include "backends/qcow2/qcow2.h"

/* header bytes 24..47: size, crypt_method, l1_size, l1_table_offset */
#define QCOW2_SIZE_FIELDS	offsetof(struct qcow2_header, size)

static int qcow2_write_geometry(struct vdimg_image *img, u64 size, u32 l1_size, u64 l1_off)
{
	struct {
		__be64 size;
		__be32 crypt_method;
		__be32 l1_size;
		__be64 l1_table_offset;
	} __packed f;
	int ret;

	BUILD_BUG_ON(offsetof(struct qcow2_header, l1_table_offset) != QCOW2_SIZE_FIELDS + 16);
	ret = vdimg_file_read(img->file, &f, sizeof(f), QCOW2_SIZE_FIELDS);
	if (ret)
		return ret;
	f.size = cpu_to_be64(size);
	f.l1_size = cpu_to_be32(l1_size);
	f.l1_table_offset = cpu_to_be64(l1_off);
	ret = vdimg_file_write(img->file, &f, sizeof(f), QCOW2_SIZE_FIELDS);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	return ret;
}

/* is the L2 table at @off all zeros (nothing allocated, no zero flags)? 1, 0 or -errno */
static int qcow2_l2_empty(struct vdimg_image *img, u64 off)
{
	struct qcow2 *q = QC(img);
	u64 *t = vdimg_zalloc(q->cluster_size);
	u32 i;
	int ret;

	if (!t)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, t, q->cluster_size, off);
	if (!ret) {
		ret = 1;
		for (i = 0; i < q->cluster_size / 8 && ret; i++)
			if (t[i])
				ret = 0;
	}
	vdimg_free(t);
	return ret;
}

/* write L1 entries [@from, @to) of @q->l1 at @base (a table's file offset) */
static int qcow2_put_l1(struct vdimg_image *img, u64 base, u32 from, u32 to)
{
	struct qcow2 *q = QC(img);
	__be64 *buf;
	u32 i;
	int ret;

	if (from >= to)
		return 0;
	buf = vdimg_zalloc((u64)(to - from) * 8);
	if (!buf)
		return -ENOMEM;
	for (i = from; i < to; i++)
		buf[i - from] = cpu_to_be64(q->l1[i]);
	ret = vdimg_file_write(img->file, buf, (u64)(to - from) * 8, base + (u64)from * 8);
	vdimg_free(buf);
	return ret;
}

static int qcow2_shrink_l1(struct vdimg_image *img, u64 size, u32 need)
{
	struct qcow2 *q = QC(img);
	u32 i, n = 0;
	u64 *drop;
	int ret;

	drop = vdimg_zalloc((u64)(q->l1_size - need + 1) * 8);
	if (!drop)
		return -ENOMEM;
	for (i = need; i < q->l1_size; i++) {
		u64 off = q->l1[i] & QCOW2_OFFSET_MASK;

		if (!off)
			continue;
		ret = qcow2_l2_empty(img, off);
		if (ret < 0)
			goto out;
		if (!ret)
			continue;	/* still maps something: kept, harmless past the end */
		drop[n++] = off;
		q->l1[i] = 0;
	}
	/* the L1 entries first (a crash leaks the tables), then the size, then the frees */
	ret = qcow2_put_l1(img, q->l1_offset, need, q->l1_size);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = qcow2_write_geometry(img, size, q->l1_size, q->l1_offset);
	for (i = 0; !ret && i < n; i++)
		ret = qcow2_rc_add(img, drop[i] >> q->cluster_bits, -1);
out:
	vdimg_free(drop);
	return ret;
}

static int qcow2_grow_l1(struct vdimg_image *img, u64 size, u32 need)
{
	struct qcow2 *q = QC(img);
	u64 room = ALIGN((u64)q->l1_size * 8, q->cluster_size) / 8;
	u64 old_off = q->l1_offset, bytes, new_off, *nl1;
	u32 old_n = q->l1_size, i;
	int ret;

	nl1 = vdimg_zalloc((u64)need * 8);
	if (!nl1)
		return -ENOMEM;
	memcpy(nl1, q->l1, (u64)old_n * 8);
	vdimg_free(q->l1);
	q->l1 = nl1;
	if (need <= room) {
		/* the padding of the table's last cluster holds the new entries: zero it first */
		ret = qcow2_put_l1(img, q->l1_offset, old_n, need);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = qcow2_write_geometry(img, size, need, q->l1_offset);
		if (!ret)
			q->l1_size = need;
		return ret;
	}
	/* a new table: allocated and written (with the refcounts) before the header points at it */
	bytes = ALIGN((u64)need * 8, q->cluster_size);
	/* qcow2_alloc() finds runs inside the range of one refcount block at a time */
	if ((bytes >> q->cluster_bits) > (1ULL << q->rb_bits) / 2) {
		vdimg_err(img, "an L1 table of %llu clusters is too large for %u-byte clusters",
			  (unsigned long long)(bytes >> q->cluster_bits), q->cluster_size);
		return -ENOSPC;
	}
	ret = qcow2_alloc(img, bytes >> q->cluster_bits, &new_off);
	if (ret)
		return ret;
	ret = qcow2_flush_locked(img);
	if (!ret)
		ret = qcow2_put_l1(img, new_off, 0, need);
	if (!ret) {
		u8 *z = vdimg_zalloc(bytes - (u64)need * 8 + 1);

		ret = z ? vdimg_file_write(img->file, z, bytes - (u64)need * 8,
					  new_off + (u64)need * 8) : -ENOMEM;
		vdimg_free(z);
	}
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = qcow2_write_geometry(img, size, need, new_off);
	if (ret)
		return ret;
	q->l1_offset = new_off;
	q->l1_size = need;
	for (i = 0; i < ALIGN((u64)old_n * 8, q->cluster_size) >> q->cluster_bits; i++) {
		ret = qcow2_rc_add(img, (old_off >> q->cluster_bits) + i, -1);
		if (ret)
			return ret;
	}
	return 0;
}

int qcow2_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct qcow2 *q = QC(img);
	u64 l2_span = 1ULL << (q->cluster_bits + q->l2_bits);
	u64 need = DIV_ROUND_UP(size, l2_span);
	int ret;

	if (q->has_data_file) {
		vdimg_err(img, "resizing an image with an external data file is not supported");
		return -EOPNOTSUPP;
	}
	if (q->has_bitmaps || q->nb_bitmaps) {
		vdimg_err(img, "resizing an image with persistent bitmaps is not supported");
		return -EOPNOTSUPP;
	}
	if (q->nb_snapshots && size < img->size) {
		vdimg_err(img, "an image with internal snapshots cannot shrink");
		return -EOPNOTSUPP;
	}
	if (size > (1ULL << 62) || need * 8 > QCOW2_MAX_L1_BYTES) {
		vdimg_err(img, "%llu bytes need an L1 table larger than %u MiB",
			  (unsigned long long)size, QCOW2_MAX_L1_BYTES >> 20);
		return -EFBIG;
	}
	vdimg_mutex_lock(&q->lock);
	/* what the caller's discard left pending goes first */
	ret = qcow2_flush_locked(img);
	if (ret)
		goto out;
	if (size < img->size)
		ret = qcow2_shrink_l1(img, size, need);
	else if (need > q->l1_size)
		ret = qcow2_grow_l1(img, size, need);
	else
		ret = qcow2_write_geometry(img, size, q->l1_size, q->l1_offset);
	if (ret)
		goto out;
	q->vsize = size;
	img->size = size;
	img->flags |= VDIMG_IMG_DIRTY;
	ret = qcow2_flush_locked(img);
out:
	vdimg_mutex_unlock(&q->lock);
	return ret;
}
