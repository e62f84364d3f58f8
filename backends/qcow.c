// SPDX-License-Identifier: GPL-2.0
/*
 * The QCOW version 1 backend, read-only: qemu's original format (L1 table in memory, L2 tables
 * through the bounded LRU cache of backends/cluster_table.c, plain and deflate-compressed clusters,
 * a backing file by name). Writable opens are refused: such images should be converted to qcow2.
 * Encrypted images (AES) are refused by name. Kernel-shared: compiled into the module and the
 * userspace library, only include/vdimg/platform.h services here; check, describe and parent_ref
 * are in tools/lib/formats/qcow.c.
 */
#include <vdimg/backend.h>
#include "qcow.h"

/* The cached L2 table at @off (read on a miss unless @nowait). Lock held. */
int qcow_l2_get(struct vdimg_image *img, u64 off, bool nowait, struct vdimg_ct_slot **out)
{
	struct qcow *q = QO(img);

	lockdep_assert_held(&q->lock);
	*out = vdimg_ct_find(&q->l2c, off);
	if (*out)
		return 0;
	if (nowait)
		return -EAGAIN;
	return vdimg_ct_get(img, &q->l2c, off, false, NULL, NULL, out);
}

static void qcow_compressed_range(const struct qcow *q, u64 e, u64 *off, u64 *len)
{
	*off = e & q->coff_mask;
	*len = (e & ~QCOW_OFLAG_COMPRESSED) >> (63 - q->cluster_bits);
}

/* Is entry @e usable? 0 or a corruption error naming it. */
int qcow_check_entry(struct vdimg_image *img, u64 e)
{
	struct qcow *q = QO(img);
	u64 off, len;

	if (!e)
		return 0;
	if (e & QCOW_OFLAG_COMPRESSED) {
		qcow_compressed_range(q, e, &off, &len);
		if (!len || off >= q->fsize || len > q->fsize - off)
			return vdimg_corrupt(img,
					     "compressed cluster entry %#llx is outside the file",
					     (unsigned long long)e);
		return 0;
	}
	if (e < 512 || e > q->fsize || q->cluster_size > q->fsize - e)
		return vdimg_corrupt(img, "data cluster entry %#llx is outside the file",
				     (unsigned long long)e);
	return 0;
}

static int qcow_map_locked(struct vdimg_image *img, u64 offset, u64 length, bool nowait,
			   struct vdimg_extent *ext)
{
	struct qcow *q = QO(img);
	u64 l2_span = 1ULL << (q->cluster_bits + q->l2_bits);
	u64 end = min(offset + length, ALIGN_DOWN(offset, l2_span) + l2_span);
	u64 l1i = offset >> (q->cluster_bits + q->l2_bits), l2off, pos = offset, e0 = 0;
	struct vdimg_ct_slot *s;
	int ret;

	ext->offset = offset;
	ext->file = img->file;
	l2off = l1i < q->l1_size ? q->l1[l1i] : 0;
	if (!l2off) {
		ext->type = VDIMG_EXT_UNALLOCATED;
		ext->length = end - offset;
		return 0;
	}
	if (l2off > q->fsize || q->l2_bytes > q->fsize - l2off)
		return vdimg_corrupt(img, "L1 entry %llu points outside the file (%#llx)",
				     (unsigned long long)l1i, (unsigned long long)l2off);
	ret = qcow_l2_get(img, l2off, nowait, &s);
	if (ret)
		return ret;
	while (pos < end) {
		u32 i = (pos >> q->cluster_bits) & ((1U << q->l2_bits) - 1);
		u64 cstart = ALIGN_DOWN(pos, (u64)q->cluster_size);
		u64 e = qcow_l2_entry(s, i);

		ret = qcow_check_entry(img, e);
		if (ret)
			return ret;
		if (pos == offset) {
			e0 = e;
			if (e & QCOW_OFLAG_COMPRESSED) {
				ext->type = VDIMG_EXT_ENCODED;
				ext->length = min(end, cstart + q->cluster_size) - offset;
				ext->cookie[0] = e;
				return 0;
			}
		} else if (!e != !e0 || (e & QCOW_OFLAG_COMPRESSED) ||
			   (e && e != e0 + (cstart - ALIGN_DOWN(offset, (u64)q->cluster_size)))) {
			break;
		}
		pos = min(cstart + q->cluster_size, end);
	}
	ext->length = pos - offset;
	if (e0) {
		ext->type = VDIMG_EXT_DATA;
		ext->file_offset = e0 + (offset & (q->cluster_size - 1));
	} else {
		ext->type = VDIMG_EXT_UNALLOCATED;
	}
	return 0;
}

static int qcow_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		    struct vdimg_extent *ext)
{
	struct qcow *q = QO(img);
	bool nowait = flags & VDIMG_MAP_NOWAIT;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	if (flags & VDIMG_MAP_WRITE)
		return -EROFS;
	length = min(length, img->size - offset);
	memset(ext, 0, sizeof(*ext));
	if (!vdimg_mutex_lock_nowait(&q->lock, nowait))
		return -EAGAIN;
	ret = qcow_map_locked(img, offset, length, nowait, ext);
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

static int qcow_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf)
{
	struct qcow *q = QO(img);
	u64 in = ext->offset & (q->cluster_size - 1), coff, clen;
	u64 e = ext->cookie[0];
	int ret = 0;

	if (!(e & QCOW_OFLAG_COMPRESSED) || in + ext->length > q->cluster_size)
		return -EINVAL;
	vdimg_mutex_lock(&q->lock);
	if (q->dbuf_entry != e) {
		q->dbuf_entry = 0;
		qcow_compressed_range(q, e, &coff, &clen);
		if (!clen || coff >= q->fsize || clen > q->fsize - coff)
			ret = vdimg_corrupt(img, "compressed cluster %#llx is outside the file",
					    (unsigned long long)e);
		if (!ret)
			ret = vdimg_file_read(img->file, q->cbuf, clen, coff);
		if (!ret)
			ret = vdimg_decompress(VDIMG_DECOMP_DEFLATE, q->cbuf, clen, q->dbuf,
					       q->cluster_size);
		if (ret == -EFSCORRUPTED)
			vdimg_err(img, "compressed cluster at %llu does not decompress",
				  (unsigned long long)coff);
		if (!ret)
			q->dbuf_entry = e;
	}
	if (!ret)
		memcpy(buf, q->dbuf + in, ext->length);
	vdimg_mutex_unlock(&q->lock);
	return ret;
}

static void qcow_free_priv(struct qcow *q)
{
	vdimg_ct_free(&q->l2c);
	vdimg_free(q->l1);
	vdimg_free(q->cbuf);
	vdimg_free(q->dbuf);
	vdimg_mutex_destroy(&q->lock);
	vdimg_free(q);
}

static int qcow_open(struct vdimg_image *img, unsigned int flags)
{
	struct qcow_header h;
	struct qcow *q;
	u64 shift, i;
	u32 crypt;
	int ret;

	qcow_check_layout();
	if (vdimg_file_size(img->file) < sizeof(h))
		return vdimg_corrupt(img, "file too short for a qcow header");
	ret = vdimg_file_read(img->file, &h, sizeof(h), 0);
	if (ret)
		return ret;
	if (be32_to_cpu(h.magic) != QCOW_MAGIC || be32_to_cpu(h.version) != QCOW_VERSION)
		return vdimg_corrupt(img, "not a qcow version 1 image");
	crypt = be32_to_cpu(h.crypt_method);
	if (crypt == QCOW_CRYPT_AES) {
		vdimg_err(img, "encrypted qcow (v1) images (AES) are not supported");
		return -EOPNOTSUPP;
	}
	if (crypt != QCOW_CRYPT_NONE)
		return vdimg_corrupt(img, "unknown encryption method %u", crypt);
	if (!(flags & VDIMG_OPEN_READ_ONLY)) {
		vdimg_err(img, "qcow (v1) images attach read-only; convert them with qemu-img convert -O qcow2");
		return -EROFS;
	}
	q = vdimg_zalloc(sizeof(*q));
	if (!q)
		return -ENOMEM;
	vdimg_mutex_init(&q->lock);
	img->priv = q;
	q->fsize = vdimg_file_size(img->file);
	q->cluster_bits = h.cluster_bits;
	q->l2_bits = h.l2_bits;
	if (q->cluster_bits < QCOW_MIN_CLUSTER_BITS || q->cluster_bits > QCOW_MAX_CLUSTER_BITS) {
		ret = vdimg_corrupt(img, "cluster_bits %u out of range 9..16", q->cluster_bits);
		goto fail;
	}
	if (q->l2_bits < QCOW_MIN_L2_BITS || q->l2_bits > QCOW_MAX_L2_BITS) {
		ret = vdimg_corrupt(img, "l2_bits %u out of range 6..13", q->l2_bits);
		goto fail;
	}
	q->cluster_size = 1U << q->cluster_bits;
	q->l2_bytes = 8U << q->l2_bits;
	q->coff_mask = (1ULL << (63 - q->cluster_bits)) - 1;
	q->vsize = be64_to_cpu(h.size);
	q->mtime = be32_to_cpu(h.mtime);
	q->l1_offset = be64_to_cpu(h.l1_table_offset);
	q->backing_off = be64_to_cpu(h.backing_file_offset);
	q->backing_len = be32_to_cpu(h.backing_file_size);
	if (!q->vsize || q->vsize > (1ULL << 62)) {
		ret = vdimg_corrupt(img, "bad virtual size %llu", (unsigned long long)q->vsize);
		goto fail;
	}
	shift = q->cluster_bits + q->l2_bits;
	q->l1_size = DIV_ROUND_UP(q->vsize, 1ULL << shift);
	if (q->l1_size * 8 > QCOW_MAX_L1_BYTES) {
		vdimg_err(img, "the L1 table for %llu bytes is too large",
			  (unsigned long long)q->vsize);
		ret = -EFBIG;
		goto fail;
	}
	if (q->l1_offset > q->fsize || q->l1_size * 8 > q->fsize - q->l1_offset) {
		ret = vdimg_corrupt(img, "L1 table at %llu is past the end of the file",
				    (unsigned long long)q->l1_offset);
		goto fail;
	}
	if (q->backing_off) {
		if (!q->backing_len || q->backing_len > 1023 || q->backing_off > q->fsize ||
		    q->backing_len > q->fsize - q->backing_off) {
			ret = vdimg_corrupt(img, "bad backing file name location");
			goto fail;
		}
		img->flags |= VDIMG_IMG_HAS_PARENT;
	}
	q->l1 = vdimg_zalloc(q->l1_size * 8);
	q->cbuf = vdimg_zalloc(q->cluster_size);
	q->dbuf = vdimg_zalloc(q->cluster_size);
	if (!q->l1 || !q->cbuf || !q->dbuf) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vdimg_ct_init(&q->l2c, min_t(u32, max_t(u32, QCOW_L2_CACHE_BYTES / q->l2_bytes, 4),
					   QCOW_MAX_SLOTS), q->l2_bytes);
	if (ret)
		goto fail;
	ret = vdimg_file_read(img->file, q->l1, q->l1_size * 8, q->l1_offset);
	if (ret)
		goto fail;
	for (i = 0; i < q->l1_size; i++)
		q->l1[i] = be64_to_cpu(((__be64 *)q->l1)[i]);

	img->size = ALIGN(q->vsize, 512ULL);
	img->lbs = 512;
	img->pbs = 512;
	img->alloc_unit = 0;
	img->flags |= VDIMG_IMG_READ_ONLY;
	vdimg_strscpy(img->variant, q->backing_off ? "differencing" : "dynamic",
		      sizeof(img->variant));
	return 0;
fail:
	qcow_free_priv(q);
	img->priv = NULL;
	return ret;
}

static u64 qcow_metadata_bytes(struct vdimg_image *img)
{
	struct qcow *q = QO(img);
	u64 n;

	vdimg_mutex_lock(&q->lock);
	n = q->l1_size * 8 + 2ULL * q->cluster_size + vdimg_ct_bytes(&q->l2c);
	vdimg_mutex_unlock(&q->lock);
	return n;
}

static void qcow_close(struct vdimg_image *img)
{
	struct qcow *q = QO(img);

	if (!q)
		return;
	qcow_free_priv(q);
	img->priv = NULL;
}

static bool qcow_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return head_len >= 8 && !memcmp(head, "QFI\xfb\0\0\0\x01", 8);
}

const struct vdimg_format vdimg_qcow_format = {
	.name = "qcow",
	.id = VDIMG_FMT_QCOW,
	.probe = qcow_probe,
	.open = qcow_open,
	.close = qcow_close,
	.map = qcow_map,
	.read_encoded = qcow_read_encoded,
	.metadata_bytes = qcow_metadata_bytes,
};
