// SPDX-License-Identifier: GPL-2.0
/*
 * The VMDK backend: probe, open (header and descriptor validation), close, the parent check (CID)
 * and the format table. Hosted sparse files (monolithicSparse, and streamOptimized read-only) are
 * served by sparse.c and stream.c; the descriptor text by descriptor.c. Files that only hold a
 * descriptor naming separate extent files, and COWD (vmfsSparse) and seSparse extents, are refused
 * by name. Kernel-shared: only include/vdimg/platform.h services here; the userspace-only tool
 * operations are in tools/lib/formats/vmdk.c.
 */
#include "vmdk.h"

#define VMDK_MAX_GRAIN_SECTORS	32768U		/* 16 MiB: bounds the fill of a new grain */
#define VMDK_MAX_GTES		4096U
#define VMDK_MAX_GTS		(1U << 22)	/* GD entries: 16 MiB per GD copy in memory */
#define VMDK_MAX_CAPACITY	(1ULL << 44)	/* sectors (8 PiB) */
#define VMDK_MAX_DESC_SECTORS	(VMDK_DESC_MAX / VMDK_SECTOR)

static bool vmdk_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return head_len >= 4 && (!memcmp(head, "KDMV", 4) || !memcmp(head, "COWD", 4) ||
				 (head_len >= 21 && !memcmp(head, "# Disk DescriptorFile", 21)));
}

int vmdk_read_header(struct vdimg_image *img, struct vdimg_file *f, struct vmdk_header *h)
{
	BUILD_BUG_ON(sizeof(struct vmdk_header) != VMDK_HEADER_SIZE);
	BUILD_BUG_ON(sizeof(struct vmdk_marker) != VMDK_MARKER_SIZE);
	BUILD_BUG_ON(sizeof(struct vmdk_grain_marker) != 12);
	BUILD_BUG_ON(offsetof(struct vmdk_header, unclean_shutdown) != 72);
	BUILD_BUG_ON(offsetof(struct vmdk_header, compress_algorithm) != 77);

	if (vdimg_file_size(f) < VMDK_HEADER_SIZE)
		return vdimg_corrupt(img, "the file is too short for a VMDK header");
	return vdimg_file_read(f, h, sizeof(*h), 0);
}

static const char *vmdk_variant(const char *create_type, bool compressed)
{
	if (compressed || !strcmp(create_type, "streamOptimized"))
		return "stream";
	return "sparse";
}

/* A file that is only a descriptor: name what it is and refuse it (separate extent files). */
static int vmdk_refuse_descriptor_file(struct vdimg_image *img, u64 fsize)
{
	struct vmdk_desc d = {};
	size_t len = min_t(u64, fsize, 65536);
	char *text;
	int ret;

	text = vdimg_zalloc(len + 1);
	if (!text)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, text, len, 0);
	if (!ret)
		ret = vmdk_desc_parse(img, text, len, &d);
	if (!ret) {
		vdimg_err(img, "%s VMDK images (a descriptor file with %u separate extent file%s) are not supported yet",
			  d.create_type[0] ? d.create_type : "descriptor-file", d.nr_extents,
			  d.nr_extents == 1 ? "" : "s");
		ret = -EOPNOTSUPP;
	}
	vmdk_desc_free(&d);
	vdimg_free(text);
	return ret;
}

/* Check the header fields and fill the geometry of @v. */
static int vmdk_check_header(struct vmdk *v, const struct vmdk_header *h, u64 fsize)
{
	struct vdimg_image *img = v->img;
	u64 grain = le64_to_cpu(h->grain_size), cap = le64_to_cpu(h->capacity), span;
	u64 gd = le64_to_cpu(h->gd_offset), rgd = le64_to_cpu(h->rgd_offset);
	u64 ov = le64_to_cpu(h->overhead), fsec = fsize / VMDK_SECTOR;
	u16 algo = le16_to_cpu(h->compress_algorithm);

	v->version = le32_to_cpu(h->version);
	v->hflags = le32_to_cpu(h->flags);
	if (v->version < 1 || v->version > 3) {
		vdimg_err(img, "VMDK sparse extent version %u is not supported", v->version);
		return -EOPNOTSUPP;
	}
	if ((v->hflags & VMDK_FLAG_NL_TEST) &&
	    (h->nl_single != '\n' || h->nl_non != ' ' || h->nl_double1 != '\r' ||
	     h->nl_double2 != '\n'))
		return vdimg_corrupt(img, "the end-of-line check bytes are wrong (the file was transferred in text mode)");
	v->compressed = v->hflags & VMDK_FLAG_COMPRESSED;
	v->markers = v->hflags & VMDK_FLAG_MARKERS;
	v->zero_grain = v->hflags & VMDK_FLAG_ZERO_GRAIN;
	if (algo != VMDK_COMPRESS_NONE && algo != VMDK_COMPRESS_DEFLATE) {
		vdimg_err(img, "compression algorithm %u is not supported", algo);
		return -EOPNOTSUPP;
	}
	if (v->compressed != (algo == VMDK_COMPRESS_DEFLATE)) {
		if (algo == VMDK_COMPRESS_DEFLATE)
			v->compressed = true;	/* what qemu goes by */
		else
			return vdimg_corrupt(img, "compressed grains without a compression algorithm");
	}
	if (!grain || !is_power_of_2(grain))
		return vdimg_corrupt(img, "grain size %llu sectors is not a power of two",
				     (unsigned long long)grain);
	if (grain > VMDK_MAX_GRAIN_SECTORS) {
		vdimg_err(img, "grain size of %llu sectors is larger than the supported %u",
			  (unsigned long long)grain, VMDK_MAX_GRAIN_SECTORS);
		return -EOPNOTSUPP;
	}
	v->grain_bytes = grain * VMDK_SECTOR;
	v->grain_shift = ilog2(v->grain_bytes);
	v->num_gtes = le32_to_cpu(h->num_gtes_per_gt);
	if (!v->num_gtes || v->num_gtes > VMDK_MAX_GTES)
		return vdimg_corrupt(img, "%u entries per grain table is out of bounds (1..%u)",
				     v->num_gtes, VMDK_MAX_GTES);
	v->gt_bytes = v->num_gtes * 4;
	if (!cap)
		return vdimg_corrupt(img, "the capacity is 0");
	if (cap > VMDK_MAX_CAPACITY) {
		vdimg_err(img, "a capacity of %llu sectors is larger than supported",
			  (unsigned long long)cap);
		return -EOPNOTSUPP;
	}
	v->capacity = cap;
	span = (u64)v->num_gtes * grain;
	if (DIV_ROUND_UP(cap, span) > VMDK_MAX_GTS) {
		vdimg_err(img, "%llu grain tables are more than the supported %u",
			  (unsigned long long)DIV_ROUND_UP(cap, span), VMDK_MAX_GTS);
		return -EOPNOTSUPP;
	}
	v->nr_gts = DIV_ROUND_UP(cap, span);
	if (!gd || gd >= fsec || gd * VMDK_SECTOR + (u64)v->nr_gts * 4 > fsize)
		return vdimg_corrupt(img, "the grain directory (sector %llu, %u entries) is not inside the file",
				     (unsigned long long)gd, v->nr_gts);
	v->gd_off = gd * VMDK_SECTOR;
	if ((v->hflags & VMDK_FLAG_RGD) && rgd) {
		if (rgd >= fsec || rgd * VMDK_SECTOR + (u64)v->nr_gts * 4 > fsize)
			return vdimg_corrupt(img, "the redundant grain directory (sector %llu) is not inside the file",
					     (unsigned long long)rgd);
		if (rgd == gd)
			return vdimg_corrupt(img, "both grain directories are at sector %llu",
					     (unsigned long long)gd);
		v->rgd_off = rgd * VMDK_SECTOR;
	}
	if (!ov || ov > fsec)
		return vdimg_corrupt(img, "the grain area starts at sector %llu, outside the file (%llu sectors)",
				     (unsigned long long)ov, (unsigned long long)fsec);
	v->overhead = ov * VMDK_SECTOR;
	return 0;
}

/* Read and parse the embedded descriptor the header points at. */
static int vmdk_read_desc(struct vmdk *v, const struct vmdk_header *h, u64 fsize)
{
	struct vdimg_image *img = v->img;
	u64 off = le64_to_cpu(h->desc_offset), size = le64_to_cpu(h->desc_size);
	int ret;

	if (!size)
		return 0;
	if (!off || size > VMDK_MAX_DESC_SECTORS || off > fsize / VMDK_SECTOR ||
	    (off + size) * VMDK_SECTOR > fsize)
		return vdimg_corrupt(img, "the descriptor (sector %llu, %llu sectors) is not inside the file",
				     (unsigned long long)off, (unsigned long long)size);
	if (off * VMDK_SECTOR < v->gd_off + (u64)v->nr_gts * 4 && v->gd_off < (off + size) * VMDK_SECTOR)
		return vdimg_corrupt(img, "the descriptor overlaps the grain directory");
	v->desc_off = off * VMDK_SECTOR;
	v->desc_area = size * VMDK_SECTOR;
	v->desc_text = vdimg_zalloc(v->desc_area + 1);
	if (!v->desc_text)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, v->desc_text, v->desc_area, v->desc_off);
	if (ret)
		return ret;
	return vmdk_desc_parse(img, v->desc_text, v->desc_area, &v->desc);
}

int vmdk_write_desc_cid(struct vmdk *v, u32 cid)
{
	struct vmdk_desc *d = &v->desc;
	char hex[9];
	int ret;

	lockdep_assert_held(&v->lock);
	vmdk_hex32(hex, cid);
	if (d->cid_len == 8) {
		ret = vdimg_file_write(v->img->file, hex, 8, v->desc_off + d->cid_pos);
		if (ret)
			return ret;
		memcpy(v->desc_text + d->cid_pos, hex, 8);
	} else {
		u32 len = d->text_len - d->cid_len + 8;
		char *t;

		if (len > v->desc_area) {
			vdimg_warn(v->img, "no room in the descriptor for a new CID; keeping %08x", v->cid);
			return 0;
		}
		t = vdimg_zalloc(v->desc_area + 1);
		if (!t)
			return -ENOMEM;
		memcpy(t, v->desc_text, d->cid_pos);
		memcpy(t + d->cid_pos, hex, 8);
		memcpy(t + d->cid_pos + 8, v->desc_text + d->cid_pos + d->cid_len,
		       d->text_len - d->cid_pos - d->cid_len);
		ret = vdimg_file_write(v->img->file, t, v->desc_area, v->desc_off);
		if (ret) {
			vdimg_free(t);
			return ret;
		}
		vdimg_free(v->desc_text);
		v->desc_text = t;
		d->cid_len = 8;
		d->text_len = len;
	}
	d->cid = cid;
	v->cid = cid;
	return 0;
}

static void vmdk_free(struct vmdk *v)
{
	vmdk_sparse_free(v);
	vmdk_desc_free(&v->desc);
	vdimg_free(v->desc_text);
	vdimg_mutex_destroy(&v->lock);
	vdimg_free(v);
}

static int vmdk_open(struct vdimg_image *img, unsigned int flags)
{
	u64 fsize = vdimg_file_size(img->file);
	struct vmdk_header h;
	struct vmdk *v;
	u32 magic;
	int ret;

	memset(&h, 0, sizeof(h));
	ret = vdimg_file_read(img->file, &h, min_t(u64, fsize, sizeof(h)), 0);
	if (ret)
		return ret;
	if (!memcmp(&h, "# Disk DescriptorFile", 21))
		return vmdk_refuse_descriptor_file(img, fsize);
	if (fsize < VMDK_HEADER_SIZE)
		return vdimg_corrupt(img, "the file is too short for a VMDK header");
	if (!memcmp(&h, "COWD", 4)) {
		vdimg_err(img, "vmfsSparse (COWD) VMDK extents are not supported yet");
		return -EOPNOTSUPP;
	}
	magic = le32_to_cpu(h.magic);
	if (magic != VMDK_MAGIC) {
		if (!memcmp(&h, "#", 1))
			return vmdk_refuse_descriptor_file(img, fsize);
		return vdimg_corrupt(img, "not a VMDK file (no KDMV signature)");
	}

	v = vdimg_zalloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->img = img;
	vdimg_mutex_init(&v->lock);
	v->writable = !(flags & VDIMG_OPEN_READ_ONLY);
	v->file_end = ALIGN_DOWN(fsize, (u64)VMDK_SECTOR);
	v->next_alloc = ALIGN(fsize, (u64)VMDK_SECTOR);

	if (!le64_to_cpu(h.capacity) && le64_to_cpu(h.desc_offset)) {
		vdimg_err(img, "a sparse file that only holds a descriptor (separate extent files) is not supported yet");
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (le64_to_cpu(h.gd_offset) == VMDK_GD_AT_END) {
		struct vmdk_header head = h;

		ret = vmdk_stream_footer(v, &h, fsize);
		if (ret)
			goto fail;
		/* the descriptor is where the head says (the footer copy may not say it) */
		if (!le64_to_cpu(h.desc_size)) {
			h.desc_offset = head.desc_offset;
			h.desc_size = head.desc_size;
		}
	}
	ret = vmdk_check_header(v, &h, fsize);
	if (ret)
		goto fail;
	ret = vmdk_read_desc(v, &h, fsize);
	if (ret)
		goto fail;
	if (v->writable && v->compressed) {
		vdimg_err(img, "streamOptimized VMDK images are read-only");
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (v->writable && v->version == 3) {
		vdimg_err(img, "VMDK version 3 sparse extents (changed block tracking) are read-only");
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (v->desc.create_type[0] && strcmp(v->desc.create_type, "monolithicSparse") &&
	    strcmp(v->desc.create_type, "streamOptimized") && v->desc.nr_extents > 1) {
		vdimg_err(img, "%s VMDK images are not supported yet", v->desc.create_type);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	ret = vmdk_sparse_open(v, &h, fsize);
	if (ret)
		goto fail;
	v->unclean_on_disk = h.unclean_shutdown;
	if (h.unclean_shutdown)
		vdimg_info(img, "the image was not closed cleanly (its data is still consistent)");
	v->cid = v->desc.cid;
	v->has_parent = v->desc.parent_hint[0];

	img->size = v->capacity * VMDK_SECTOR;
	img->lbs = VMDK_SECTOR;
	img->pbs = VMDK_SECTOR;
	img->alloc_unit = v->compressed ? 0 : v->grain_bytes;
	if (v->has_parent)
		img->flags |= VDIMG_IMG_HAS_PARENT;
	vdimg_strscpy(img->variant, vmdk_variant(v->desc.create_type, v->compressed),
		      sizeof(img->variant));
	img->priv = v;
	return 0;

fail:
	vmdk_free(v);
	return ret;
}

static void vmdk_close(struct vdimg_image *img)
{
	struct vmdk *v = VMDK(img);
	int ret = 0;

	if (!v)
		return;
	if (v->writable && v->touched) {
		vdimg_mutex_lock(&v->lock);
		ret = vmdk_flush_locked(v);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret && v->unclean_on_disk)
			ret = vmdk_set_unclean(v, false);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		vdimg_mutex_unlock(&v->lock);
		if (ret)
			vdimg_err(img, "metadata could not be written at close (error %d)", ret);
	}
	vmdk_free(v);
	img->priv = NULL;
}

static int vmdk_verify_parent(struct vdimg_image *child, struct vdimg_image *parent)
{
	struct vmdk *v = VMDK(child);
	const struct vmdk *p;
	char want[9], have[9];

	if (!v->has_parent || parent->fmt != child->fmt)
		return 0;	/* only a VMDK parent has a CID to compare */
	p = parent->priv;
	if (v->desc.parent_cid == p->cid)
		return 0;
	vmdk_hex32(want, v->desc.parent_cid);
	vmdk_hex32(have, p->cid);
	vdimg_err(child, "parentCID %s does not match %s, whose CID is %s (the parent changed after this image was made)",
		  want, parent->name ? parent->name : "the parent", have);
	return -ESTALE;
}

const struct vdimg_format vdimg_vmdk_format = {
	.name = "vmdk",
	.id = VDIMG_FMT_VMDK,
	.probe = vmdk_probe,
	.open = vmdk_open,
	.close = vmdk_close,
	.map = vmdk_map,
	.commit = vmdk_commit,
	.abort = vmdk_abort,
	.read_encoded = vmdk_read_encoded,
	.discard = vmdk_discard,
	.flush = vmdk_flush,
	.verify_parent = vmdk_verify_parent,
};
