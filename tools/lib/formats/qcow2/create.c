// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: creating a QCOW2 image (v2 or v3, cluster size, refcount width, lazy refcounts,
 * extended L2, zstd compression type, external data file, backing file) and rebasing one in place
 * (set_parent: a new backing file name and format, crash-safe). The kernel-shared backend is
 * backends/qcow2/.
 */
#include <stdio.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include "tool-ops.h"
#include "backends/qcow2/qcow2.h"
#include "tool.h"

static const char *const qcow2_opt_keys[] = {
	"cluster_size", "compat", "refcount_bits", "lazy_refcounts", "extended_l2",
	"compression_type", "data_file", "data_file_raw",
};

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

int qcow2_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
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

/*
 * Rebase in place: a new backing file name (and backing format extension), or none. The header
 * cluster is rebuilt in memory: the header, the backing format extension first, every other
 * extension as it was, the end marker, then the name, placed where it does not overlap the old
 * name when there is room. Written tail first (everything after the first sector), synced, then
 * the first sector (the header fields and the start of the extensions) in one write, synced: a
 * crash before that write leaves the old header naming the old (intact) name.
 */
int qcow2_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
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
