// SPDX-License-Identifier: GPL-2.0
/*
 * QCOW2 compressed clusters, written (userspace only: vdimgctl convert --compress, as qemu-img
 * convert -c): a cluster is compressed with the image's compression type (raw deflate with a 4 KiB
 * window as qemu writes it, or one zstd frame), and the result is packed byte after byte into
 * shared host clusters, each of which counts one reference per compressed cluster that touches it
 * (qemu's docs/interop/qcow2.txt, "Compressed Clusters Descriptor"). Reading them, and copying one
 * out on a write, is the kernel-shared code's job (backends/qcow2/map.c).
 */
#include <pthread.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>
#include "tool-ops.h"
#include "backends/qcow2/qcow2.h"
#include "tool.h"

/*
 * Each thread that compresses keeps its compressor state and output buffer between clusters
 * (setting up deflate costs more than a small cluster's compression); freed when the thread ends.
 */
struct qcow2_cctx {
	z_stream z;
	bool z_ready;
	ZSTD_CCtx *zstd;
	u8 *out;
	size_t out_len;
};

static pthread_key_t qcow2_cctx_key;
static pthread_once_t qcow2_cctx_once = PTHREAD_ONCE_INIT;

static void qcow2_cctx_free(void *p)
{
	struct qcow2_cctx *c = p;

	if (c->z_ready)
		deflateEnd(&c->z);
	ZSTD_freeCCtx(c->zstd);
	free(c->out);
	free(c);
}

static void qcow2_cctx_key_init(void)
{
	pthread_key_create(&qcow2_cctx_key, qcow2_cctx_free);
}

/* this thread's state, with an output buffer of at least @len bytes; NULL without memory */
static struct qcow2_cctx *qcow2_cctx_get(size_t len)
{
	struct qcow2_cctx *c;

	pthread_once(&qcow2_cctx_once, qcow2_cctx_key_init);
	c = pthread_getspecific(qcow2_cctx_key);
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c || pthread_setspecific(qcow2_cctx_key, c)) {
			free(c);
			return NULL;
		}
	}
	if (c->out_len < len) {
		u8 *out = realloc(c->out, len);

		if (!out)
			return NULL;
		c->out = out;
		c->out_len = len;
	}
	return c;
}

/* @len bytes of @in compressed into c->out (@room bytes): the size, 0 if they do not fit, -errno */
static ssize_t qcow2_deflate(struct qcow2_cctx *c, const void *in, size_t len, size_t room)
{
	ssize_t n = 0;
	int zret;

	if (!c->z_ready) {
		memset(&c->z, 0, sizeof(c->z));
		/* what qemu writes: raw deflate (no zlib header), 4 KiB window */
		if (deflateInit2(&c->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		c->z_ready = true;
	} else if (deflateReset(&c->z) != Z_OK) {
		return -EIO;
	}
	c->z.next_in = (Bytef *)in;
	c->z.avail_in = len;
	c->z.next_out = c->out;
	c->z.avail_out = room;
	zret = deflate(&c->z, Z_FINISH);
	if (zret == Z_STREAM_END)
		n = c->z.total_out;
	else if (zret != Z_OK && zret != Z_BUF_ERROR)
		n = -EIO;
	return n;
}

static ssize_t qcow2_zstd(struct qcow2_cctx *c, const void *in, size_t len, size_t room)
{
	size_t n;

	if (!c->zstd)
		c->zstd = ZSTD_createCCtx();
	if (!c->zstd)
		return -ENOMEM;
	n = ZSTD_compressCCtx(c->zstd, c->out, room, in, len, ZSTD_CLEVEL_DEFAULT);
	if (ZSTD_isError(n))
		return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? 0 : -EIO;
	return n;
}

/* (lock held) whether the cluster of @off may take one more compressed cluster */
static int qcow2_cfree_usable(struct vdimg_image *img, u64 off, bool *ok)
{
	struct qcow2 *q = QC(img);
	u64 rc;
	int ret = qcow2_rc_get(img, off >> q->cluster_bits, &rc);

	*ok = !ret && rc && rc < qcow2_rc_max(q);
	return ret;
}

/*
 * (lock held) @len (< cluster size) bytes for compressed data: after the last compressed cluster
 * when they fit in its host cluster, or in the one allocated right after it; otherwise at the
 * start of a new cluster. Every host cluster the range touches counts one more reference.
 */
static int qcow2_alloc_bytes(struct vdimg_image *img, u32 len, u64 *out)
{
	struct qcow2 *q = QC(img);
	u64 cs = q->cluster_size, off = q->cfree, next;
	bool ok = false;
	int ret;

	if (off) {
		ret = qcow2_cfree_usable(img, off, &ok);
		if (ret)
			return ret;
	}
	if (ok && off + len <= ALIGN(off, cs)) {
		ret = qcow2_rc_add(img, off >> q->cluster_bits, 1);
		if (ret)
			return ret;
		*out = off;
		q->cfree = (off + len) & (cs - 1) ? off + len : 0;
		return 0;
	}
	ret = qcow2_alloc(img, 1, &next);
	if (ret)
		return ret;
	if (ok && next == ALIGN(off, cs)) {
		/* the data runs on from the old cluster into the new, contiguous one */
		ret = qcow2_rc_add(img, off >> q->cluster_bits, 1);
		if (ret) {
			qcow2_rc_add(img, next >> q->cluster_bits, -1);
			return ret;
		}
		*out = off;
		q->cfree = (off + len) & (cs - 1) ? off + len : 0;
		return 0;
	}
	*out = next;
	q->cfree = next + len;
	return 0;
}

/* (lock held) the L2 slot and index of the cluster at @off, ready to change */
static int qcow2_l2_slot(struct vdimg_image *img, u64 off, struct vdimg_ct_slot **t, u32 *i)
{
	struct qcow2 *q = QC(img);

	*i = (off >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
	return qcow2_l2_writable(img, off, t);
}

/**
 * qcow2_write_compressed() - the ->write_compressed() tool operation of QCOW2
 * @img: an image opened writable
 * @off: guest offset of the cluster, a multiple of the cluster size, below img->size
 * @buf: the whole cluster (zero-padded past img->size)
 *
 * Context: may run in several threads at once: the compression runs outside the image's lock.
 * Return: 1 written compressed; 0 when it does not shrink below one cluster (nothing written, as
 * qemu does: the caller writes it as plain data); -EEXIST when the image already has something
 * there, or another negative errno.
 */
int qcow2_write_compressed(struct vdimg_image *img, u64 off, const void *buf)
{
	struct qcow2 *q = QC(img);
	u64 cs = q->cluster_size, host, nsec;
	struct vdimg_ct_slot *t;
	struct qcow2_cctx *c;
	struct qcow2_l2e l;
	ssize_t n;
	u8 *out;
	u32 i;
	int ret;

	if (!q->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (off & (cs - 1) || off >= img->size)
		return -EINVAL;
	if (q->has_data_file) {
		vdimg_err(img, "an image with an external data file cannot hold compressed clusters");
		return -EOPNOTSUPP;
	}
	c = qcow2_cctx_get(cs);
	if (!c)
		return -ENOMEM;
	out = c->out;
	/* qemu keeps a cluster compressed only when it fits in cluster size - 1 bytes */
	if (q->compression_type == QCOW2_COMPRESSION_ZSTD)
		n = qcow2_zstd(c, buf, cs, cs - 1);
	else
		n = qcow2_deflate(c, buf, cs, cs - 1);
	if (n <= 0)
		return n;
	vdimg_mutex_lock(&q->lock);
	ret = qcow2_l2_slot(img, off, &t, &i);
	if (ret)
		goto out;
	qcow2_l2_read(q, t->data, i, &l);
	if (l.e || l.bm) {
		ret = -EEXIST;
		goto out;
	}
	ret = qcow2_alloc_bytes(img, n, &host);
	if (ret)
		goto out;
	nsec = ((host + n - 1) >> 9) - (host >> 9);
	if (host & ~q->coff_mask || nsec > q->csize_mask) {
		vdimg_err(img, "compressed data at %llu cannot be addressed",
			  (unsigned long long)host);
		ret = -EFBIG;
		goto out;
	}
	ret = vdimg_file_write(img->file, out, n, host);
	/* the allocations may have moved the table in the cache */
	if (!ret)
		ret = qcow2_l2_slot(img, off, &t, &i);
	if (ret)
		goto out;	/* the bytes leak, as after a crash; convert removes the image */
	l.e = QCOW2_OFLAG_COMPRESSED | (nsec << q->csize_shift) | host;
	l.bm = 0;
	qcow2_l2_write(q, t->data, i, &l);
	t->dirty = true;
	img->flags |= VDIMG_IMG_DIRTY;
	ret = 1;
out:
	vdimg_mutex_unlock(&q->lock);
	return ret;
}
