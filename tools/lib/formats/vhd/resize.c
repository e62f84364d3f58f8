// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: offline resize of VHD images (fixed and dynamic; a differencing image keeps its
 * parent's size). The footer gets the new current size and the geometry the specification derives
 * from it (the largest geometry when none expresses the size exactly, so that readers which size
 * disks by CHS use the current size, as for the images vdimg creates).
 *
 * Write order, so that a crash leaves the old or the new size:
 *   fixed grow:     extend the file, footer at the new end, then zero the old footer's sector
 *   fixed shrink:   footer at the new end, then cut the file after it
 *   dynamic grow:   BAT entries (in the padding of the BAT's last sector, or a whole new BAT
 *                   written past the last block, the footer moved after it first), then the
 *                   dynamic header (table offset, entries), then the footers
 *   dynamic shrink: the footers, then the BAT entries past the new end freed
 */
#include "vdimg-user.h"
#include "backends/vhd/vhd.h"
#include "tool.h"

/* the footer at the end (@end) and, for dynamic images, its copy at offset 0 */
static int vhd_put_footers(struct vdimg_image *img, struct vhd *v, u64 end)
{
	int ret = vhd_write_footer(img, v, end);

	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret && v->type != VHD_TYPE_FIXED)
		ret = vhd_write_footer(img, v, 0);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	return ret;
}

static int vhd_resize_fixed(struct vdimg_image *img, struct vhd *v, u64 size)
{
	u8 zero[VHD_SECTOR] = { 0 };
	u64 old = v->footer_off;
	int ret;

	vhd_footer_set_size(&v->footer, size);
	if (size > old) {
		ret = vdimg_file_truncate(img->file, size + VHD_SECTOR);
		if (!ret)
			ret = vhd_put_footers(img, v, size);
		if (!ret)
			ret = vdimg_file_write(img->file, zero, VHD_SECTOR, old);
	} else {
		ret = vhd_put_footers(img, v, size);
		if (!ret)
			ret = vdimg_file_truncate(img->file, size + VHD_SECTOR);
	}
	if (!ret)
		v->footer_off = size;
	return ret;
}

/* the dynamic header with a new BAT location and size (its first sector holds all that changes) */
static int vhd_put_header(struct vdimg_image *img, struct vhd *v, u64 bat_off, u32 entries)
{
	int ret;

	v->hdr->table_offset = cpu_to_be64(bat_off);
	v->hdr->max_table_entries = cpu_to_be32(entries);
	v->hdr->checksum = 0;
	v->hdr->checksum = cpu_to_be32(vhd_hdr_csum(v->hdr));
	ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = vdimg_file_write(img->file, v->hdr, sizeof(*v->hdr), v->hdr_off);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	return ret;
}

static int vhd_grow_dynamic(struct vdimg_image *img, struct vhd *v, u64 size, u32 need)
{
	u64 room = ALIGN((u64)v->max_entries * 4, VHD_SECTOR) / 4;
	u64 bytes = ALIGN((u64)need * 4, VHD_SECTOR), bat_off;
	__be32 *bat;
	int ret;

	if (bytes > VHD_BAT_MAX_BYTES) {
		vdimg_err(img, "a BAT of %u entries is larger than vdimg supports", need);
		return -EFBIG;
	}
	bat = malloc(bytes);
	if (!bat)
		return -ENOMEM;
	memset(bat, 0xff, bytes);		/* VHD_BAT_FREE */
	memcpy(bat, v->bat, (size_t)v->nr_blocks * 4);
	if (need <= room) {
		/* the padding of the BAT's last sector holds the new entries */
		bat_off = v->bat_off;
		ret = vdimg_file_write(img->file, (u8 *)bat + (u64)v->nr_blocks * 4,
				       bytes - (u64)v->nr_blocks * 4,
				       bat_off + (u64)v->nr_blocks * 4);
		if (!ret)
			ret = vhd_put_header(img, v, bat_off, max_t(u32, need, v->max_entries));
	} else if (v->fixed_file) {
		/*
		 * on a block device the footer stays in the device's last sector: the new BAT
		 * goes after the last block, then the header points at it
		 */
		u64 dev_end = vdimg_file_size(img->file) - VHD_SECTOR;

		bat_off = ALIGN(v->data_end, VHD_SECTOR);
		if (bat_off + bytes > dev_end) {
			vdimg_err(img, "the block device is full (%llu bytes): no room for a BAT of %u entries",
				  (unsigned long long)(dev_end + VHD_SECTOR), need);
			ret = -ENOSPC;
			goto out;
		}
		/* an image copied onto the device has its footer after its data: it moves first */
		ret = vhd_footer_to_device_end(img, v);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = vdimg_file_write(img->file, bat, bytes, bat_off);
		if (!ret)
			ret = vhd_put_header(img, v, bat_off, need);
		if (!ret)
			v->data_end = bat_off + bytes;
	} else {
		/*
		 * a new BAT past the last block: the footer moves after it first (the old one
		 * becomes part of the unused area), then the BAT, then the header points at it
		 */
		bat_off = ALIGN(v->data_end, VHD_SECTOR);
		ret = vhd_write_footer(img, v, bat_off + bytes);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = vdimg_file_write(img->file, bat, bytes, bat_off);
		if (!ret)
			ret = vhd_put_header(img, v, bat_off, need);
		if (!ret) {
			v->footer_off = bat_off + bytes;
			v->data_end = v->footer_off;
		}
	}
	if (ret)
		goto out;
	vhd_footer_set_size(&v->footer, size);
	ret = vhd_put_footers(img, v, v->footer_off);
	if (ret)
		goto out;
	/* the state in memory follows (flush and close only write pending blocks: none now) */
	free(v->bat);
	v->bat = bat;
	bat = NULL;
	v->bat_off = bat_off;
	v->bat_len = bytes;
	v->max_entries = max_t(u32, need, v->max_entries);
out:
	free(bat);
	return ret;
}

static int vhd_shrink_dynamic(struct vdimg_image *img, struct vhd *v, u64 size, u32 need)
{
	u32 blk;
	int ret;

	vhd_footer_set_size(&v->footer, size);
	ret = vhd_put_footers(img, v, v->footer_off);
	if (ret)
		return ret;
	/* blocks wholly past the end: free their entries (their space stays until compact) */
	vdimg_mutex_lock(&v->io_lock);
	for (blk = need; blk < v->nr_blocks && !ret; blk++) {
		if (vhd_bat_get(v, blk) == VHD_BAT_FREE)
			continue;
		vdimg_mutex_lock(&v->lock);
		v->bat[blk] = cpu_to_be32(VHD_BAT_FREE);
		vdimg_mutex_unlock(&v->lock);
		ret = vhd_write_bat_sector(img, v, blk);
	}
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

int vhd_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct vhd *v = img->priv;
	u64 need;
	int ret;

	if (img->flags & VDIMG_IMG_READ_ONLY)
		return -EROFS;
	if (v->damage) {
		vdimg_err(img, "the image is damaged: run 'vdimgctl check --repair' first");
		return -EUCLEAN;
	}
	if (v->type == VHD_TYPE_DIFF) {
		vdimg_err(img, "a differencing VHD keeps its parent's size");
		return -EOPNOTSUPP;
	}
	if (size > 2040ULL << 30) {
		vdimg_err(img, "VHD images are limited to 2040 GiB");
		return -EFBIG;
	}
	if (v->type == VHD_TYPE_FIXED && v->fixed_file) {
		vdimg_err(img, "a fixed VHD on a block device cannot be resized: its data reaches the footer in the device's last sector");
		return -EOPNOTSUPP;
	}
	if (v->type == VHD_TYPE_FIXED) {
		ret = vhd_resize_fixed(img, v, size);
	} else {
		need = DIV_ROUND_UP(size, v->block_size);
		if (v->nr_pending)
			return -EBUSY;
		if (size > img->size)
			ret = vhd_grow_dynamic(img, v, size, need);
		else
			ret = vhd_shrink_dynamic(img, v, size, need);
		if (!ret && size > img->size) {
			u8 *st = calloc(1, need);

			if (!st)
				return -ENOMEM;
			memcpy(st, v->state, v->nr_blocks);
			free(v->state);
			v->state = st;
			v->nr_blocks = need;
		}
	}
	if (!ret)
		img->size = size;
	return ret;
}
