// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of QED: the backing file name, set_parent, describe, create
 * and check/repair (a scan of every table with one bit per cluster of the file). The kernel-shared
 * backend is backends/qed/.
 */
#include <stdio.h>
#include "tool-ops.h"
#include "backends/qed/qed.h"

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

static void qed_check_progress(u64 done, u64 total)
{
	vdimg_tool_progress("check", 0, 1, done, total);
}

static int qed_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct qed *q = QD(img);
	bool repair = flags & VDIMG_CHECK_REPAIR;
	struct qed_scan sc = { .progress = qed_check_progress };
	u64 fsize, c, last_used = 0, leak_end;
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
	for (c = 0; c < sc.nclusters; c++)
		if (sc.used[c / 8] & (1U << (c % 8)))
			last_used = c + 1;
	/* the space of a block device past the image's last cluster is the device's, not a leak */
	leak_end = q->fixed_file ? last_used : fsize >> q->cluster_bits;
	for (c = 0; c < leak_end; c++)
		if (!(sc.used[c / 8] & (1U << (c % 8))))
			res->leaks++;	/* (as qemu: a partial last cluster is not one) */
	res->errors = sc.errors;
	res->fixed = sc.fixed;
	if (repair) {
		ret = qed_flush_locked(img);
		/*
		 * leaked clusters at the end of the file can go; others stay (no refcounts). A
		 * block device keeps its size: its space past the image is not the image's
		 */
		if (!ret && !q->fixed_file &&
		    (last_used < sc.nclusters || (fsize & (q->cluster_size - 1)))) {
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

/*
 * Grow only, as qemu does: the L1 table has a fixed size, so the new size must be one the tables
 * can map. L1 entries the new range uses are zeroed on disk first (an earlier shrink by another
 * tool may have left some), then the header's size changes in one 8-byte write.
 */
static int qed_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct qed *q = QD(img);
	u64 l2_span = 1ULL << (q->cluster_bits + q->tbits);
	u64 entries = DIV_ROUND_UP(size, l2_span), i, *nl1;
	__le64 le = cpu_to_le64(size);
	__le64 *disk;
	bool dirty = false;
	int ret;

	if (!q->writable)
		return -EROFS;
	if (flags & VDIMG_RESIZE_SHRINK) {
		vdimg_err(img, "QED images cannot shrink (qemu does not either)");
		return -EOPNOTSUPP;
	}
	if (size > QED_MAX_VSIZE || entries > q->tbytes / 8 || entries * 8 > QED_MAX_L1_BYTES) {
		vdimg_err(img, "the tables of %u-byte clusters map at most %llu bytes",
			  q->cluster_size, (unsigned long long)min_t(u64, (q->tbytes / 8) * l2_span,
								    QED_MAX_VSIZE));
		return -EFBIG;
	}
	disk = vdimg_zalloc(entries * 8);
	nl1 = vdimg_zalloc(entries * 8);
	if (!disk || !nl1) {
		ret = -ENOMEM;
		goto out;
	}
	vdimg_mutex_lock(&q->lock);
	ret = qed_flush_locked(img);
	if (!ret)
		ret = vdimg_file_read(img->file, disk, entries * 8, q->l1_offset);
	for (i = q->l1_entries; !ret && i < entries; i++)
		if (disk[i]) {
			dirty = true;
			disk[i] = 0;
		}
	if (!ret && dirty)
		ret = vdimg_file_write(img->file, disk + q->l1_entries,
				       (entries - q->l1_entries) * 8, q->l1_offset + q->l1_entries * 8);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = vdimg_file_write(img->file, &le, 8, offsetof(struct qed_header, image_size));
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret) {
		memcpy(nl1, q->l1, q->l1_entries * 8);
		vdimg_free(q->l1);
		q->l1 = nl1;
		nl1 = NULL;
		q->l1_entries = entries;
		q->vsize = size;
		img->size = size;
	}
	vdimg_mutex_unlock(&q->lock);
out:
	vdimg_free(disk);
	vdimg_free(nl1);
	return ret;
}

const struct vdimg_tool_ops vdimg_qed_tool_ops = {
	.id = VDIMG_FMT_QED,
	.create = qed_create,
	.check = qed_check,
	.parent_ref = qed_parent_ref,
	.describe = qed_describe,
	.set_parent = qed_set_parent,
	.resize = qed_resize,
};
