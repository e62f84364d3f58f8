// SPDX-License-Identifier: GPL-2.0
/*
 * The raw backend: the image file is the disk, byte for byte. Also serves ISO 9660 images ("iso"),
 * which are raw files that open read-only. Kernel-shared: compiled into the module and the
 * userspace library; create and check are in tools/lib/formats/raw.c.
 */
#include <vdimg/backend.h>

static int raw_open_common(struct vdimg_image *img, const char *variant)
{
	u64 size = vdimg_file_size(img->file);

	if (!size) {
		vdimg_err(img, "the file is empty");
		return -EINVAL;
	}
	if (size % 512) {
		vdimg_err(img, "size %llu is not a multiple of 512 bytes",
			  (unsigned long long)size);
		return -EINVAL;
	}
	img->size = size;
	img->lbs = 512;
	img->pbs = 512;
	img->alloc_unit = 0;
	vdimg_strscpy(img->variant, variant, sizeof(img->variant));
	return 0;
}

static int raw_open(struct vdimg_image *img, unsigned int flags)
{
	return raw_open_common(img, "fixed");
}

static int iso_open(struct vdimg_image *img, unsigned int flags)
{
	if (!(flags & VDIMG_OPEN_READ_ONLY)) {
		vdimg_err(img, "ISO images attach read-only (use format raw to write to one)");
		return -EROFS;
	}
	return raw_open_common(img, "iso9660");
}

static void raw_close(struct vdimg_image *img)
{
}

static int raw_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		   struct vdimg_extent *ext)
{
	if (offset >= img->size)
		return -EINVAL;
	ext->offset = offset;
	ext->length = min(length, img->size - offset);
	ext->type = VDIMG_EXT_DATA;
	ext->flags = 0;
	ext->file = img->file;
	ext->file_offset = offset;
	ext->fill_offset = 0;
	ext->fill_length = 0;
	return 0;
}

static int raw_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	if (offset >= img->size || length > img->size - offset)
		return -EINVAL;
	if (flags & VDIMG_DISCARD_NOUNMAP)
		return vdimg_file_zero_range(img->file, offset, length);
	/* a punched hole reads as zeros, so discard and write-zeroes are the same here */
	return vdimg_file_zero(img->file, offset, length);
}

/* Online grow: extend the file; the new range is a hole and reads as zeros. */
/*
 * A raw image grows with its file: a file (or block device) already grown underneath to @new_size
 * or more is taken as it is, as losetup -c does; a shorter one is extended (a hole) and synced.
 */
static int raw_grow(struct vdimg_image *img, u64 new_size)
{
	u64 fsize = vdimg_file_size(img->file);
	int ret;

	if (new_size <= img->size)
		return -EINVAL;
	if (fsize < new_size) {
		ret = vdimg_file_truncate(img->file, new_size);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (ret) {
			vdimg_err(img, "extending the file to %llu bytes failed: %d",
				  (unsigned long long)new_size, ret);
			/* best effort: back to the size it had */
			vdimg_file_truncate(img->file, fsize);
			return ret;
		}
	}
	img->size = new_size;
	return 0;
}

const struct vdimg_format vdimg_raw_format = {
	.name = "raw",
	.id = VDIMG_FMT_RAW,
	.open = raw_open,
	.close = raw_close,
	.map = raw_map,
	.discard = raw_discard,
	.grow = raw_grow,
};

const struct vdimg_format vdimg_iso_format = {
	.name = "iso",
	.id = VDIMG_FMT_ISO,
	.open = iso_open,
	.close = raw_close,
	.map = raw_map,
};
