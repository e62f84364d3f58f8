// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: what a QCOW2 image refers to and says about itself, for the tool: the backing
 * file name and format, the external data file name, finding an internal snapshot by ID or name,
 * the "vdimgctl info" details, and the format's struct vdimg_tool_ops. The kernel-shared backend is
 * backends/qcow2/.
 */
#include <stdio.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include "tool-ops.h"
#include "backends/qcow2/qcow2.h"
#include "tool.h"

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

const struct vdimg_tool_ops vdimg_qcow2_tool_ops = {
	.id = VDIMG_FMT_QCOW2,
	.create = qcow2_create,
	.check = qcow2_check,
	.parent_ref = qcow2_parent_ref,
	.describe = qcow2_describe,
	.set_parent = qcow2_set_parent,
	.data_file_ref = qcow2_data_file_ref,
	.find_snapshot = qcow2_find_snapshot,
	.resize = qcow2_resize,
	.write_compressed = qcow2_write_compressed,
};
