// SPDX-License-Identifier: GPL-2.0
/*
 * QCOW2 open and close (qemu's docs/interop/qcow2.txt): probe, header v2 and v3 with feature
 * bits and header extensions, validation of the L1 and refcount tables, the external data file,
 * and the struct vdimg_format of qcow2. Kernel-shared: compiled into the module and the userspace
 * library; only include/vdimg/platform.h services here. Create, check/repair, describe and
 * set_parent are userspace-only, in tools/lib/formats/qcow2/.
 */
#include "qcow2.h"

/* ---- open and close ---- */

/* The name the image's feature table gives to incompatible bit @bit, or NULL. */
const char *qcow2_feature_name(const u8 *tbl, u32 len, u32 bit, char *buf, size_t bufsz)
{
	u32 i;

	for (i = 0; tbl && i + sizeof(struct qcow2_feature_name) <= len; i += 48) {
		const struct qcow2_feature_name *f = (const void *)(tbl + i);
		size_t n;

		if (f->type != 0 || f->bit != bit)
			continue;
		n = min_t(size_t, sizeof(f->name), bufsz - 1);
		memcpy(buf, f->name, n);
		buf[n] = 0;
		return buf;
	}
	return NULL;
}

static int qcow2_parse_exts(struct vdimg_image *img, const u8 *c0, u32 len)
{
	struct qcow2 *q = QC(img);
	const u8 *ftbl = NULL;
	u32 flen = 0, off = q->hdr_len, bit;
	char name[48];

	while (off + 8 <= len) {
		const struct qcow2_ext_hdr *h = (const void *)(c0 + off);
		u32 type = be32_to_cpu(h->type), elen = be32_to_cpu(h->len);
		const u8 *d = c0 + off + 8;

		if (type == QCOW2_EXT_END)
			break;
		if (elen > len - off - 8)
			return vdimg_corrupt(img, "header extension %#x overruns the first cluster",
					     type);
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			if (elen >= sizeof(q->backing_fmt))
				return vdimg_corrupt(img, "backing format name too long");
			memcpy(q->backing_fmt, d, elen);
			q->backing_fmt[elen] = 0;
			break;
		case QCOW2_EXT_FEATURE_TABLE:
			ftbl = d;
			flen = elen;
			break;
		case QCOW2_EXT_DATA_FILE:
			if (elen > QCOW2_MAX_DATA_NAME)
				return vdimg_corrupt(img, "external data file name too long");
			memcpy(q->dfname, d, elen);
			q->dfname[elen] = 0;
			break;
		case QCOW2_EXT_BITMAPS: {
			const struct qcow2_bitmaps_ext *b = (const void *)d;

			if (elen < sizeof(*b))
				return vdimg_corrupt(img, "bitmaps extension too short");
			q->has_bitmaps = true;
			q->nb_bitmaps = be32_to_cpu(b->nb_bitmaps);
			break;
		}
		default:
			break;	/* unknown extensions are safe to ignore */
		}
		off += 8 + ALIGN(elen, 8U);
	}
	for (bit = 0; bit < 64; bit++) {
		u64 m = 1ULL << bit;

		if (!(q->incompat & m) || (QCOW2_INCOMPAT_KNOWN & m))
			continue;
		if (qcow2_feature_name(ftbl, flen, bit, name, sizeof(name)))
			vdimg_err(img, "unsupported qcow2 feature '%s' (incompatible bit %u)", name,
				  bit);
		else
			vdimg_err(img, "unsupported qcow2 incompatible feature bit %u", bit);
		return -EOPNOTSUPP;
	}
	return 0;
}

static void qcow2_free_priv(struct qcow2 *q)
{
	vdimg_ct_free(&q->l2c);
	vdimg_ct_free(&q->rbc);
	vdimg_free(q->l1);
	vdimg_free(q->rt);
	vdimg_free(q->cbuf);
	vdimg_free(q->dbuf);
	vdimg_free(q->pending);
	vdimg_mutex_destroy(&q->lock);
	vdimg_free(q);
}

int qcow2_write_header_field(struct vdimg_image *img, size_t off, u64 v, size_t len)
{
	__be64 b64 = cpu_to_be64(v);
	__be32 b32 = cpu_to_be32(v);

	return vdimg_file_write(img->file, len == 8 ? (void *)&b64 : (void *)&b32, len, off);
}

static int qcow2_open(struct vdimg_image *img, unsigned int flags)
{
	struct qcow2_header h;
	struct qcow2 *q;
	u64 fsize = vdimg_file_size(img->file), l2_span, need, i;
	u32 cs, hlen, ncache;
	u8 *c0 = NULL;
	int ret;

	qcow2_check_layout();
	memset(&h, 0, sizeof(h));
	if (fsize < QCOW2_V2_HEADER_LEN)
		return vdimg_corrupt(img, "file too short for a qcow2 header");
	ret = vdimg_file_read(img->file, &h, min_t(u64, fsize, sizeof(h)), 0);
	if (ret)
		return ret;
	if (be32_to_cpu(h.magic) != QCOW2_MAGIC)
		return vdimg_corrupt(img, "not a qcow2 image");
	q = vdimg_zalloc(sizeof(*q));
	if (!q)
		return -ENOMEM;
	vdimg_mutex_init(&q->lock);
	img->priv = q;
	q->version = be32_to_cpu(h.version);
	if (q->version != 2 && q->version != 3) {
		vdimg_err(img, "qcow2 version %u is not supported", q->version);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	q->cluster_bits = be32_to_cpu(h.cluster_bits);
	if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
		ret = vdimg_corrupt(img, "cluster_bits %u out of range 9..21", q->cluster_bits);
		goto fail;
	}
	q->cluster_size = 1U << q->cluster_bits;
	cs = q->cluster_size;
	if (q->version == 2) {
		hlen = QCOW2_V2_HEADER_LEN;
		q->refcount_order = 4;
		memset((u8 *)&h + QCOW2_V2_HEADER_LEN, 0, sizeof(h) - QCOW2_V2_HEADER_LEN);
	} else {
		hlen = be32_to_cpu(h.header_length);
		if (hlen < QCOW2_V3_HEADER_LEN || hlen % 8 || hlen > cs) {
			ret = vdimg_corrupt(img, "bad header length %u", hlen);
			goto fail;
		}
		if (hlen < sizeof(h))
			memset((u8 *)&h + hlen, 0, sizeof(h) - hlen);
		q->refcount_order = be32_to_cpu(h.refcount_order);
		if (q->refcount_order > 6) {
			ret = vdimg_corrupt(img, "refcount_order %u is above 6", q->refcount_order);
			goto fail;
		}
	}
	q->hdr_len = hlen;
	q->incompat = be64_to_cpu(h.incompatible_features);
	q->compat = be64_to_cpu(h.compatible_features);
	q->autoclear = be64_to_cpu(h.autoclear_features);
	q->compression_type = h.compression_type;
	q->vsize = be64_to_cpu(h.size);
	q->backing_off = be64_to_cpu(h.backing_file_offset);
	q->backing_len = be32_to_cpu(h.backing_file_size);
	q->nb_snapshots = be32_to_cpu(h.nb_snapshots);
	q->snapshots_offset = be64_to_cpu(h.snapshots_offset);
	q->l1_size = be32_to_cpu(h.l1_size);
	q->l1_offset = be64_to_cpu(h.l1_table_offset);
	q->rt_offset = be64_to_cpu(h.refcount_table_offset);
	q->rt_clusters = be32_to_cpu(h.refcount_table_clusters);

	switch (be32_to_cpu(h.crypt_method)) {
	case QCOW2_CRYPT_NONE:
		break;
	case QCOW2_CRYPT_AES:
		vdimg_err(img, "encrypted qcow2 images (legacy AES) are not supported");
		ret = -EOPNOTSUPP;
		goto fail;
	case QCOW2_CRYPT_LUKS:
		vdimg_err(img, "encrypted qcow2 images (LUKS) are not supported");
		ret = -EOPNOTSUPP;
		goto fail;
	default:
		ret = vdimg_corrupt(img, "unknown encryption method %u",
				    be32_to_cpu(h.crypt_method));
		goto fail;
	}

	/* the first cluster: header extensions, backing file name */
	c0 = vdimg_zalloc(cs);
	if (!c0) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vdimg_file_read(img->file, c0, min_t(u64, fsize, cs), 0);
	if (ret)
		goto fail;
	ret = qcow2_parse_exts(img, c0, cs);
	if (ret)
		goto fail;
	if (q->incompat & QCOW2_INCOMPAT_DATA_FILE) {
		q->has_data_file = true;
		q->data_raw = q->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
		q->dfile = img->data_file;
		if (img->snapshot) {
			vdimg_err(img, "an image with an external data file has no internal snapshots");
			ret = -EINVAL;
			goto fail;
		}
		if (!img->data_file) {
			/* userspace may look at the metadata alone (info, finding the data file) */
			bool need = !VDIMG_LIBRARY || !(flags & VDIMG_OPEN_READ_ONLY);

			if (need) {
				vdimg_err(img, "needs its external data file '%s': give it with the image",
					  q->dfname[0] ? q->dfname : "(unnamed)");
				ret = -ENOENT;
				goto fail;
			}
		}
	} else {
		if (img->data_file) {
			vdimg_err(img, "has no external data file, but one was given");
			ret = -EINVAL;
			goto fail;
		}
		q->dfile = img->file;
	}
	if (img->snapshot) {
		if (!(flags & VDIMG_OPEN_READ_ONLY)) {
			vdimg_err(img, "an internal snapshot can only be opened read-only");
			ret = -EROFS;
			goto fail;
		}
		ret = qcow2_open_snapshot(img, img->snapshot);
		if (ret)
			goto fail;
	}
	if (q->incompat & QCOW2_INCOMPAT_COMPRESSION) {
		if (hlen <= 104 || q->compression_type == QCOW2_COMPRESSION_ZLIB) {
			ret = vdimg_corrupt(img,
					    "compression type bit set without a compression type");
			goto fail;
		}
	} else if (q->compression_type) {
		ret = vdimg_corrupt(img, "compression type %u without its feature bit",
				    q->compression_type);
		goto fail;
	}
	if (q->compression_type > QCOW2_COMPRESSION_ZSTD) {
		vdimg_err(img, "unsupported qcow2 compression type %u", q->compression_type);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	q->ext_l2 = q->incompat & QCOW2_INCOMPAT_EXTL2;
	if (q->ext_l2 && q->cluster_bits < 14) {
		ret = vdimg_corrupt(img, "extended L2 entries need clusters of 16 KiB or more");
		goto fail;
	}
	q->l2_entry_size = q->ext_l2 ? 16 : 8;
	q->l2_bits = q->cluster_bits - (q->ext_l2 ? 4 : 3);
	q->sc_bits = q->ext_l2 ? q->cluster_bits - 5 : q->cluster_bits;
	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;
	q->csize_shift = 62 - (q->cluster_bits - 8);
	q->csize_mask = (1ULL << (q->cluster_bits - 8)) - 1;
	q->coff_mask = (1ULL << q->csize_shift) - 1;

	if (q->backing_off) {
		if (q->backing_len == 0 || q->backing_len > 1023 ||
		    q->backing_off > cs || q->backing_len > cs - q->backing_off) {
			ret = vdimg_corrupt(img, "bad backing file name location");
			goto fail;
		}
		img->flags |= VDIMG_IMG_HAS_PARENT;
	}

	/* sizes and tables */
	if (!q->vsize || q->vsize > (1ULL << 62)) {
		ret = vdimg_corrupt(img, "bad virtual size %llu", (unsigned long long)q->vsize);
		goto fail;
	}
	l2_span = 1ULL << (q->cluster_bits + q->l2_bits);
	need = DIV_ROUND_UP(q->vsize, l2_span);
	if (q->l1_size < need || (u64)q->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
		ret = vdimg_corrupt(img, "L1 table of %u entries for a %llu byte disk", q->l1_size,
				    (unsigned long long)q->vsize);
		goto fail;
	}
	ret = qcow2_check_meta_off(img, q->l1_offset, "L1 table");
	if (ret)
		goto fail;
	ret = qcow2_check_meta_off(img, q->rt_offset, "refcount table");
	if (ret)
		goto fail;
	if (!q->rt_clusters || (u64)q->rt_clusters * cs > QCOW2_MAX_RT_BYTES) {
		ret = vdimg_corrupt(img, "refcount table of %u clusters", q->rt_clusters);
		goto fail;
	}
	q->l1 = vdimg_zalloc(max_t(u64, q->l1_size, 1) * 8);
	q->rt_entries = (u64)q->rt_clusters * cs / 8;
	q->rt = vdimg_zalloc(q->rt_entries * 8);
	/* cbuf and dbuf: when a compressed or shared cluster first needs them (qcow2_scratch()) */
	if (!q->l1 || !q->rt) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vdimg_file_read(img->file, q->l1, (u64)q->l1_size * 8, q->l1_offset);
	if (!ret)
		ret = vdimg_file_read(img->file, q->rt, q->rt_entries * 8, q->rt_offset);
	if (ret) {
		if (ret == -EFSCORRUPTED)
			vdimg_err(img, "L1 or refcount table past the end of the file");
		goto fail;
	}
	for (i = 0; i < q->l1_size; i++)
		q->l1[i] = be64_to_cpu(((__be64 *)q->l1)[i]);
	for (i = 0; i < q->rt_entries; i++)
		q->rt[i] = be64_to_cpu(((__be64 *)q->rt)[i]);
	/*
	 * Cache sizes: bounded by bytes, but no more L2 slots than twice the tables the L1 can name
	 * (a copy on write holds the old and the new table), and two refcount block slots for
	 * read-only images: a chain of hundreds of small layers must not cost megabytes each.
	 */
	ncache = min_t(u32, max_t(u32, QCOW2_L2_CACHE_BYTES / cs, 4), 64);
	ncache = min_t(u64, ncache, max_t(u64, 2ULL * q->l1_size, 4));
	ret = vdimg_ct_init(&q->l2c, ncache, cs);
	ncache = min_t(u32, max_t(u32, QCOW2_RB_CACHE_BYTES / cs, 2), 16);
	if (!ret)
		ret = vdimg_ct_init(&q->rbc, (flags & VDIMG_OPEN_READ_ONLY) ? 2 : ncache, cs);
	if (ret)
		goto fail;

	img->size = ALIGN(q->vsize, 512ULL);
	img->lbs = 512;
	img->pbs = 512;
	img->alloc_unit = cs;
	vdimg_strscpy(img->variant, q->backing_off ? "differencing" : "dynamic",
		      sizeof(img->variant));

	q->writable = !(flags & VDIMG_OPEN_READ_ONLY);
	if (q->writable && (q->incompat & QCOW2_INCOMPAT_CORRUPT)) {
		vdimg_warn(img, "the image is marked corrupt: opened read-only (repair it with qemu-img check -r all)");
		q->writable = false;
		img->flags |= VDIMG_IMG_READ_ONLY;
	}
	if (q->writable &&
	    (q->autoclear & ~(q->has_data_file ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0))) {
		/*
		 * we cannot maintain bitmaps (or anything autoclear but a raw data file, which
		 * discard keeps raw): say so before writing
		 */
		u64 keep = q->autoclear & (q->has_data_file ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0);

		ret = qcow2_write_header_field(img, offsetof(struct qcow2_header,
							     autoclear_features), keep, 8);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (ret)
			goto fail;
		if (q->autoclear & QCOW2_AUTOCLEAR_BITMAPS)
			vdimg_info(img, "persistent bitmaps are now marked inconsistent");
		q->autoclear = keep;
	}
	if (q->writable && (q->incompat & QCOW2_INCOMPAT_DIRTY)) {
		if (!VDIMG_LIBRARY) {
			vdimg_err(img, "the image was not closed cleanly (dirty): run 'vdimgctl check --repair' first");
			ret = -EUCLEAN;
			goto fail;
		}
		vdimg_info(img, "the image was not closed cleanly: rebuilding refcounts");
		ret = qcow2_repair(img);
		if (ret)
			goto fail;
	}
	vdimg_free(c0);
	return 0;
fail:
	vdimg_free(c0);
	qcow2_free_priv(q);
	img->priv = NULL;
	return ret;
}

static u64 qcow2_metadata_bytes(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);
	u64 n;

	vdimg_mutex_lock(&q->lock);
	n = max_t(u64, q->l1_size, 1) * 8 + q->rt_entries * 8 + vdimg_ct_bytes(&q->l2c) +
	    vdimg_ct_bytes(&q->rbc) + (u64)q->pending_cap * sizeof(*q->pending) +
	    (q->cbuf ? 2ULL * q->cluster_size : 0) + (q->dbuf ? q->cluster_size : 0);
	vdimg_mutex_unlock(&q->lock);
	return n;
}

static void qcow2_close(struct vdimg_image *img)
{
	struct qcow2 *q = QC(img);

	if (!q)
		return;
	if (q->writable && (img->flags & VDIMG_IMG_DIRTY)) {
		vdimg_mutex_lock(&q->lock);
		if (qcow2_flush_locked(img))
			vdimg_err(img, "metadata could not be written at close");
		vdimg_mutex_unlock(&q->lock);
	}
	qcow2_free_priv(q);
	img->priv = NULL;
}

/*
 * Online grow: the L1 table may take entries up to the end of the clusters it was allocated in
 * (they are its own; offline resize moves it to make it larger). The new entries are zeroed on
 * disk, then l1_size and the size go into the header (in that order: a larger L1 with the old size
 * is a valid image), then the file is synced.
 */
static int qcow2_grow(struct vdimg_image *img, u64 new_size)
{
	struct qcow2 *q = QC(img);
	u64 l2_span = 1ULL << (q->cluster_bits + q->l2_bits), need, cap, i, rc;
	u64 old = img->size, old_vsize = q->vsize;
	u64 *l1 = NULL;
	void *z = NULL;
	int ret;

	if (!q->writable)
		return -EROFS;
	if (new_size <= old || new_size > (1ULL << 62))
		return -EINVAL;
	need = DIV_ROUND_UP(new_size, l2_span);
	cap = ALIGN((u64)q->l1_size * 8, (u64)q->cluster_size) / 8;
	cap = min_t(u64, cap, QCOW2_MAX_L1_BYTES / 8);
	if (need > cap) {
		vdimg_err(img, "cannot grow online past %llu bytes: the L1 table (%llu entries in place) is full; detach and use vdimgctl resize",
			  (unsigned long long)(cap * l2_span), (unsigned long long)cap);
		return -EFBIG;
	}
	if (q->has_data_file && q->data_raw && vdimg_file_size(q->dfile) < new_size) {
		ret = vdimg_file_truncate(q->dfile, new_size);
		if (!ret)
			ret = vdimg_file_sync(q->dfile);
		if (ret) {
			vdimg_err(img, "extending the raw data file %s failed: %d", q->dfname, ret);
			return ret;
		}
	}
	img->size = new_size;
	ret = vdimg_grow_zero_new(img, old_vsize);
	img->size = old;
	if (ret)
		return ret;

	vdimg_mutex_lock(&q->lock);
	if (need > q->l1_size) {
		/* the clusters the entries go to must be allocated (they are the L1's) */
		for (i = q->l1_offset >> q->cluster_bits;
		     !ret && i <= (q->l1_offset + need * 8 - 1) >> q->cluster_bits; i++) {
			ret = qcow2_rc_get(img, i, &rc);
			if (!ret && !rc)
				ret = vdimg_corrupt(img, "L1 table cluster %llu is free",
						    (unsigned long long)i);
		}
		l1 = vdimg_zalloc(need * 8);
		z = vdimg_zalloc((need - q->l1_size) * 8);
		if (!ret && (!l1 || !z))
			ret = -ENOMEM;
		if (!ret)
			ret = vdimg_file_write(img->file, z, (need - q->l1_size) * 8,
					       q->l1_offset + (u64)q->l1_size * 8);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = qcow2_write_header_field(img, offsetof(struct qcow2_header, l1_size),
						       need, 4);
		if (ret)
			goto out;
		memcpy(l1, q->l1, (size_t)q->l1_size * 8);
		vdimg_free(q->l1);
		q->l1 = l1;
		l1 = NULL;
		q->l1_size = need;
	}
	ret = qcow2_write_header_field(img, offsetof(struct qcow2_header, size), new_size, 8);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret) {
		q->vsize = new_size;
		img->size = new_size;
	}
out:
	vdimg_mutex_unlock(&q->lock);
	vdimg_free(l1);
	vdimg_free(z);
	return ret;
}

static bool qcow2_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	u32 v;

	if (head_len < 8 || memcmp(head, "QFI\xfb", 4))
		return false;
	v = ((u32)head[4] << 24) | ((u32)head[5] << 16) | ((u32)head[6] << 8) | head[7];
	return v == 2 || v == 3;
}

const struct vdimg_format vdimg_qcow2_format = {
	.name = "qcow2",
	.id = VDIMG_FMT_QCOW2,
	.caps = VDIMG_CAP_DATA_FILE | VDIMG_CAP_SNAPSHOTS,
	.probe = qcow2_probe,
	.open = qcow2_open,
	.close = qcow2_close,
	.map = qcow2_map,
	.commit = qcow2_commit,
	.abort = qcow2_abort,
	.read_encoded = qcow2_read_encoded,
	.discard = qcow2_discard,
	.flush = qcow2_flush,
	.frees_pending = qcow2_frees_pending,
	.grow = qcow2_grow,
	.metadata_bytes = qcow2_metadata_bytes,
};
