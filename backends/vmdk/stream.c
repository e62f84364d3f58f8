// SPDX-License-Identifier: GPL-2.0
/*
 * streamOptimized VMDK, read-only: the footer that holds the real header when the head's gdOffset
 * is VMDK_GD_AT_END, and compressed grains (a grain marker: the grain's first sector, the size of
 * the zlib stream that follows) decoded into the caller's buffer through vdimg_decompress(). The
 * grain directory and tables are the ordinary hosted sparse ones (sparse.c), each GTE pointing at a
 * grain marker instead of raw data. Kernel-shared: only include/vdimg/platform.h services here.
 */
#include "vmdk.h"

/*
 * The footer of a stream: [footer marker][header copy][end-of-stream marker] in the last three
 * sectors. Replaces @h when it checks out.
 */
int vmdk_stream_footer(struct vmdk_sparse *v, struct vmdk_header *h, u64 fsize)
{
	struct vdimg_image *img = v->img;
	struct vmdk_stream_tail {
		struct vmdk_marker footer;
		struct vmdk_header header;
		struct vmdk_marker eos;
	} __packed;
	struct vmdk_stream_tail *t;
	int ret;

	BUILD_BUG_ON(sizeof(*t) != 3 * VMDK_SECTOR);
	if (fsize < 4 * VMDK_SECTOR)
		return vdimg_corrupt(img,
				     "the grain directory is in a footer, but the file is too short for one");
	t = vdimg_zalloc(sizeof(*t));
	if (!t)
		return -ENOMEM;
	ret = vdimg_file_read(v->file, t, sizeof(*t), ALIGN_DOWN(fsize, (u64)VMDK_SECTOR) -
			      sizeof(*t));
	if (ret)
		goto out;
	if (le32_to_cpu(t->footer.size) || le32_to_cpu(t->footer.type) != VMDK_MARKER_FOOTER ||
	    le32_to_cpu(t->header.magic) != VMDK_MAGIC || le64_to_cpu(t->eos.num_sectors) ||
	    le32_to_cpu(t->eos.size) || le32_to_cpu(t->eos.type) != VMDK_MARKER_EOS) {
		ret = vdimg_corrupt(img, "the stream footer is missing or invalid");
		goto out;
	}
	if (le64_to_cpu(t->header.gd_offset) == VMDK_GD_AT_END) {
		ret = vdimg_corrupt(img,
				    "the stream footer does not give the grain directory either");
		goto out;
	}
	*h = t->header;
out:
	vdimg_free(t);
	return ret;
}

/* the most compressed bytes a grain may take (deflate can expand a little) */
static u32 vmdk_max_compressed(const struct vmdk_sparse *v)
{
	return v->grain_bytes + v->grain_bytes / 8 + 1024;
}

int vmdk_sparse_read_encoded(struct vmdk_sparse *v, const struct vdimg_extent *ext, void *buf)
{
	struct vdimg_image *img = v->img;
	u64 moff = ext->cookie[0], g = ext->cookie[1], gstart = g << v->grain_shift, avail, len;
	u64 hdr = v->markers ? sizeof(struct vmdk_grain_marker) : 0;
	u32 csize, glen;
	u8 *src = NULL, *dst = NULL;
	int ret;

	if (ext->type != VDIMG_EXT_ENCODED || gstart >= v->size ||
	    ext->offset < gstart || ext->offset + ext->length > gstart + v->grain_bytes ||
	    moff < v->overhead || moff >= v->file_end)
		return -EINVAL;
	avail = v->file_end - moff;
	if (v->markers) {
		struct vmdk_grain_marker m;

		if (avail < hdr)
			return vdimg_corrupt(img,
					     "grain %llu: the marker lies past the end of the file",
					     (unsigned long long)g);
		ret = vdimg_file_read(v->file, &m, sizeof(m), moff);
		if (ret)
			return ret;
		csize = le32_to_cpu(m.size);
		if (le64_to_cpu(m.lba) != gstart / VMDK_SECTOR)
			return vdimg_corrupt(img, "grain %llu: its marker names sector %llu",
					     (unsigned long long)g,
					     (unsigned long long)le64_to_cpu(m.lba));
		if (!csize || csize > vmdk_max_compressed(v) || csize > avail - hdr)
			return vdimg_corrupt(img, "grain %llu: compressed size %u is out of bounds",
					     (unsigned long long)g, csize);
		len = csize;
	} else {
		/* no marker: the stream ends where it ends */
		len = min_t(u64, avail, vmdk_max_compressed(v));
	}
	glen = min_t(u64, v->grain_bytes, v->size - gstart);
	src = vdimg_zalloc(len);
	dst = vdimg_zalloc(glen);
	if (!src || !dst) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_read(v->file, src, len, moff + hdr);
	if (ret)
		goto out;
	ret = vdimg_decompress(VDIMG_DECOMP_ZLIB, src, len, dst, glen);
	if (ret == -EFSCORRUPTED)
		vdimg_err(img, "grain %llu: the compressed data is invalid", (unsigned long long)g);
	if (!ret)
		memcpy(buf, dst + (ext->offset - gstart), ext->length);
out:
	vdimg_free(src);
	vdimg_free(dst);
	return ret;
}
