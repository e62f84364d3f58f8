// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: creating VHD images (fixed, dynamic, differencing): CHS geometry, the footer,
 * the dynamic header, the BAT and the parent locators. The kernel-shared backend is backends/vhd/.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhd/vhd.h"
#include "tool.h"

static void vhd_new_footer(struct vhd_footer *f, u32 type, u64 size, u64 data_offset)
{
	time_t now = time(NULL);

	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, VHD_FOOTER_COOKIE, 8);
	f->features = cpu_to_be32(VHD_FEAT_RESERVED);
	f->version = cpu_to_be32(VHD_VERSION);
	f->data_offset = cpu_to_be64(data_offset);
	f->timestamp = cpu_to_be32((u32)((u64)now - VHD_EPOCH_OFFSET));
	memcpy(f->creator_app, "vdmg", 4);
	f->creator_version = cpu_to_be32(0x00010000);
	memcpy(f->creator_os, "Wi2k", 4);
	f->original_size = cpu_to_be64(size);
	vhd_footer_set_size(f, size);
	f->disk_type = cpu_to_be32(type);
	vdimg_random_bytes(f->uuid, 16);
	f->uuid[6] = (f->uuid[6] & 0x0f) | 0x40;	/* version 4 */
	f->uuid[8] = (f->uuid[8] & 0x3f) | 0x80;
	f->checksum = cpu_to_be32(vhd_footer_csum(f));
}

int vhd_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	struct vdimg_image *parent = opts->parent_img;
	u32 type = VHD_TYPE_DYNAMIC, bs = opts->block_size ? opts->block_size : 2U << 20;
	struct vhd_footer foot;
	struct vhd_dyn_header *h;
	u64 size = opts->size, bat_len, off, end;
	u32 mte;
	u8 *bat = NULL;
	int ret;

	if (opts->variant && !strcmp(opts->variant, "fixed"))
		type = VHD_TYPE_FIXED;
	else if (opts->variant && !strcmp(opts->variant, "differencing"))
		type = VHD_TYPE_DIFF;
	else if (opts->variant && strcmp(opts->variant, "dynamic"))
		return -EINVAL;
	if (opts->parent || parent) {
		if (type == VHD_TYPE_FIXED || !parent || !opts->parent)
			return -EINVAL;
		if (!(parent->flags & VDIMG_IMG_HAS_UUID))
			return -EINVAL;
		type = VHD_TYPE_DIFF;
		if (!size)
			size = parent->size;
		if (size != parent->size)
			return -EINVAL;
	} else if (type == VHD_TYPE_DIFF) {
		return -EINVAL;
	}
	if (opts->lbs && opts->lbs != VHD_SECTOR)
		return -EINVAL;
	if (!size || size % VHD_SECTOR || size > 2040ULL << 30)
		return size > 2040ULL << 30 ? -EFBIG : -EINVAL;
	if (!is_power_of_2(bs) || bs < VHD_BLOCK_MIN || bs > VHD_BLOCK_MAX)
		return -EINVAL;

	if (type == VHD_TYPE_FIXED) {
		vhd_new_footer(&foot, type, size, VHD_NO_OFFSET);
		ret = vdimg_file_truncate(f, size);
		return ret ? ret : vdimg_file_write(f, &foot, sizeof(foot), size);
	}

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	mte = (size + bs - 1) / bs;
	bat_len = ALIGN((u64)mte * 4, VHD_SECTOR);
	memcpy(h->cookie, VHD_DYN_COOKIE, 8);
	h->data_offset = cpu_to_be64(VHD_NO_OFFSET);
	h->table_offset = cpu_to_be64(VHD_SECTOR + sizeof(*h));
	h->version = cpu_to_be32(VHD_VERSION);
	h->max_table_entries = cpu_to_be32(mte);
	h->block_size = cpu_to_be32(bs);
	off = VHD_SECTOR + sizeof(*h) + bat_len;

	ret = -ENOMEM;
	bat = malloc(bat_len);
	if (!bat)
		goto out;
	memset(bat, 0xff, bat_len);
	ret = vdimg_file_write(f, bat, bat_len, VHD_SECTOR + sizeof(*h));
	if (ret)
		goto out;

	if (type == VHD_TYPE_DIFF) {
		char *pabs, *rel = NULL, *dir;

		memcpy(h->parent_uuid, parent->uuid, 16);
		if (parent->fmt == &vdimg_vhd_format)
			h->parent_timestamp = ((struct vhd *)parent->priv)->footer.timestamp;
		else
			h->parent_timestamp = cpu_to_be32((u32)((u64)time(NULL) -
								 VHD_EPOCH_OFFSET));
		pabs = realpath(opts->parent, NULL);
		if (!pabs) {
			ret = -errno;
			goto out;
		}
		vdimg_utf8_to_utf16(strrchr(pabs, '/') + 1, (u8 *)h->parent_name,
				  VHD_PARENT_NAME_BYTES - 2, true);
		dir = vdimg_file_dir(f);
		if (dir)
			rel = vdimg_relpath(pabs, dir, '/');
		free(dir);
		ret = 0;
		if (rel)
			ret = vhd_put_locator(f, h, 0, VHD_PLAT_W2RU, rel, true, &off);
		if (!ret)
			ret = vhd_put_locator(f, h, rel ? 1 : 0, VHD_PLAT_W2KU, pabs, false, &off);
		free(rel);
		free(pabs);
		if (ret)
			goto out;
	}
	h->checksum = cpu_to_be32(vhd_hdr_csum(h));
	ret = vdimg_file_write(f, h, sizeof(*h), VHD_SECTOR);
	if (ret)
		goto out;
	/* the first block's data 4 KiB-aligned, as Hyper-V lays it out */
	end = ALIGN(off + VHD_SECTOR, 4096) - VHD_SECTOR;
	vhd_new_footer(&foot, type, size, VHD_SECTOR);
	ret = vdimg_file_write(f, &foot, sizeof(foot), 0);
	if (!ret)
		ret = vdimg_file_write(f, &foot, sizeof(foot), end);
out:
	free(bat);
	free(h);
	return ret;
}
