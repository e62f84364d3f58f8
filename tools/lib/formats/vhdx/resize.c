// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: offline resize of a VHDX image (a differencing one keeps its parent's size).
 * Everything goes through the metadata log, as every other metadata write of the backend does:
 * first the BAT entries the new size brings in are made NOT_PRESENT where an earlier shrink left
 * something, then the virtual disk size item changes in a log entry of its own; a crash replays
 * to the old or the new size. The BAT grows inside its region only: a region too small for the
 * new size is refused (moving the region means rewriting the region tables).
 */
#include "backends/vhdx/vhdx.h"
#include "tool.h"

/* BAT entries a disk of @size uses */
static u64 vhdx_entries_for(const struct vhdx *v, u64 size)
{
	u64 blocks = DIV_ROUND_UP(size, (u64)v->block_size);
	u64 chunks = DIV_ROUND_UP(blocks, (u64)v->chunk_ratio);

	return v->diff ? chunks * (v->chunk_ratio + 1) : blocks + (blocks - 1) / v->chunk_ratio;
}

/* file offset of the virtual disk size item, from the metadata table */
static int vhdx_vsize_item(struct vdimg_image *img, struct vhdx *v, u64 *off)
{
	u8 *table = malloc(VHDX_META_TABLE_SIZE);
	u32 i, n;
	int ret;

	if (!table)
		return -ENOMEM;
	ret = vdimg_vhdx_meta_read(img, &v->log, table, VHDX_META_TABLE_SIZE, v->meta_off);
	if (ret)
		goto out;
	n = le16_to_cpu(((struct vhdx_meta_hdr *)table)->entry_count);
	ret = -ENOENT;
	for (i = 0; i < n && i < VHDX_META_MAX; i++) {
		struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
						     i * sizeof(*m));

		if (!memcmp(m->item_id, vhdx_guid_vsize, 16) &&
		    !(le32_to_cpu(m->flags) & VHDX_META_IS_USER) && le32_to_cpu(m->length) >= 8 &&
		    le32_to_cpu(m->offset) <= v->meta_len - 8) {
			*off = v->meta_off + le32_to_cpu(m->offset);
			ret = 0;
		}
	}
	if (ret)
		ret = vdimg_corrupt(img, "no virtual disk size item in the metadata table");
out:
	free(table);
	return ret;
}

/* make BAT entries [@from, @to) NOT_PRESENT on disk where they are not, through the log */
static int vhdx_clear_bat(struct vdimg_image *img, struct vhdx *v, u64 from, u64 to)
{
	struct vhdx_pageset ps = { 0 };
	u64 pos = v->bat_off + from * 8, end = v->bat_off + to * 8;
	int ret = 0;

	while (pos < end && !ret) {
		u64 page = ALIGN_DOWN(pos, (u64)VHDX_LOG_SECTOR);
		u64 stop = min(end, page + VHDX_LOG_SECTOR);
		u8 buf[VHDX_LOG_SECTOR], *p;
		u64 i;
		bool dirty = false;

		ret = vdimg_file_read(img->file, buf, VHDX_LOG_SECTOR, page);
		for (i = pos - page; !ret && i < stop - page; i++)
			dirty |= buf[i];
		if (!ret && dirty) {
			p = vhdx_page(img, v, &ps, page);
			if (!p)
				ret = -ENOMEM;
			else
				memset(p + (pos - page), 0, stop - pos);
		}
		if (!ret && (ps.n == VHDX_MAX_PAGES || (stop == end && ps.n))) {
			ret = vhdx_log_commit(img, v, &ps);
			vhdx_pageset_free(&ps);
		}
		pos = stop;
	}
	vhdx_pageset_free(&ps);
	return ret;
}

int vhdx_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct vhdx *v = img->priv;
	struct vhdx_pageset ps = { 0 };
	u64 entries, item, page, i, chunks;
	__le64 le = cpu_to_le64(size);
	__le64 *bat;
	u64 *sb;
	u8 *p;
	int ret;

	if (v->read_only)
		return -EROFS;
	if (v->diff) {
		vdimg_err(img, "a differencing VHDX keeps its parent's size");
		return -EOPNOTSUPP;
	}
	if (v->params & VHDX_PARAM_LEAVE_ALLOCATED) {
		vdimg_err(img, "fixed VHDX images are not resized (their blocks stay allocated): convert to dynamic first");
		return -EOPNOTSUPP;
	}
	if (size % v->lss || size > VHDX_MAX_SIZE) {
		vdimg_err(img, "the size must be a multiple of the %u-byte sector, at most 64 TiB",
			  v->lss);
		return -EINVAL;
	}
	entries = vhdx_entries_for(v, size);
	if (entries * 8 > v->bat_len || entries * 8 > VHDX_BAT_MAX_BYTES) {
		vdimg_err(img, "the BAT region (%u bytes) has no room for the %llu entries of the new size",
			  v->bat_len, (unsigned long long)entries);
		return -ENOSPC;
	}
	ret = vhdx_flush(img);
	if (ret)
		return ret;
	ret = vhdx_vsize_item(img, v, &item);
	if (ret)
		return ret;
	vdimg_mutex_lock(&v->io_lock);
	if (entries > v->nr_entries)
		ret = vhdx_clear_bat(img, v, v->nr_entries, entries);
	if (!ret) {
		page = ALIGN_DOWN(item, (u64)VHDX_LOG_SECTOR);
		p = vhdx_page(img, v, &ps, page);
		if (p) {
			memcpy(p + (item - page), &le, 8);
			ret = vhdx_log_commit(img, v, &ps);
		} else {
			ret = -ENOMEM;
		}
	}
	if (!ret)
		ret = vdimg_file_sync(img->file);
	vdimg_mutex_unlock(&v->io_lock);
	vhdx_pageset_free(&ps);
	if (ret)
		return ret;
	/* the state in memory follows: the BAT array for the new entry count */
	bat = calloc(1, max_t(u64, entries, 1) * 8);
	chunks = DIV_ROUND_UP(DIV_ROUND_UP(size, (u64)v->block_size), (u64)v->chunk_ratio);
	sb = calloc(1, max_t(u64, chunks, v->nr_chunks) * sizeof(u64));
	if (!bat || !sb) {
		free(bat);
		free(sb);
		return -ENOMEM;
	}
	vdimg_mutex_lock(&v->lock);
	memcpy(sb, v->sb_pend, v->nr_chunks * sizeof(u64));
	free(v->sb_pend);
	v->sb_pend = sb;
	for (i = 0; i < min(entries, v->nr_entries); i++)
		bat[i] = v->bat[i];
	free(v->bat);
	v->bat = bat;
	vdimg_mutex_unlock(&v->lock);
	v->nr_entries = entries;
	v->nr_blocks = DIV_ROUND_UP(size, (u64)v->block_size);
	v->nr_chunks = DIV_ROUND_UP(v->nr_blocks, (u64)v->chunk_ratio);
	img->size = size;
	return 0;
}
