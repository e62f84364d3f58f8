// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of QCOW version 1 (the backing file name, describe, and a
 * read-only check that every L1 and L2 entry points inside the file). The kernel-shared half is
 * backends/qcow.c.
 */
#include <stdio.h>
#include "tool-ops.h"
#include "backends/qcow.h"

static int qcow_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct qcow *q = QO(img);
	int ret;

	if (!q->backing_off)
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	ret = vdimg_file_read(img->file, ref->path, q->backing_len, q->backing_off);
	if (ret)
		return ret;
	ref->path[q->backing_len] = 0;
	return 0;
}

static void qcow_describe(struct vdimg_image *img,
			  void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct qcow *q = QO(img);
	char v[64];

	emit(ctx, "version", "1");
	snprintf(v, sizeof(v), "%u", q->cluster_size);
	emit(ctx, "cluster size", v);
	snprintf(v, sizeof(v), "%u", 1U << q->l2_bits);
	emit(ctx, "l2 entries", v);
	snprintf(v, sizeof(v), "%u", q->mtime);
	emit(ctx, "mtime", v);
	emit(ctx, "encryption", "none");
}

/* Read-only check: every L1 and L2 entry points inside the file. */
static int qcow_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct qcow *q = QO(img);
	u64 l1i;
	u32 i;
	int ret = 0;

	memset(res, 0, sizeof(*res));
	if (flags & VDIMG_CHECK_REPAIR)
		return -EROFS;
	vdimg_mutex_lock(&q->lock);
	for (l1i = 0; l1i < q->l1_size && !ret; l1i++) {
		u64 l2off = q->l1[l1i];
		struct vdimg_ct_slot *s;

		if (!l2off)
			continue;
		if (l2off > q->fsize || q->l2_bytes > q->fsize - l2off) {
			res->errors++;
			continue;
		}
		ret = qcow_l2_get(img, l2off, false, &s);
		for (i = 0; !ret && i < (1U << q->l2_bits); i++)
			if (qcow_check_entry(img, qcow_l2_entry(s, i)))
				res->errors++;
	}
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

const struct vdimg_tool_ops vdimg_qcow_tool_ops = {
	.id = VDIMG_FMT_QCOW,
	.check = qcow_check,
	.parent_ref = qcow_parent_ref,
	.describe = qcow_describe,
};
