// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of VDI: create (dynamic and fixed, differencing), check and
 * repair, compact (moving the last blocks into holes and truncating), the parent reference (by
 * UUID), set_parent and describe. The kernel-shared backend is backends/vdi/.
 */
#include <stdio.h>
#include "tool-ops.h"
#include "backends/vdi/vdi.h"

static void vdi_chs(u64 size, struct vdi_geometry *g)
{
	u64 cyl = size / 512 / (16 * 63);

	g->cylinders = cpu_to_le32(min_t(u64, cyl, 16383));
	g->heads = cpu_to_le32(16);
	g->sectors = cpu_to_le32(63);
	g->sector_size = cpu_to_le32(512);
}

static int vdi_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	struct vdimg_image *parent = opts->parent ? opts->parent_img : NULL;
	u32 bs = opts->block_size ? opts->block_size : VDI_DEFAULT_BLOCK;
	u64 size = opts->size, map_bytes, data_off;
	struct {
		struct vdi_preheader pre;
		struct vdi_header1 h;
	} __packed hdr;
	u32 type, blocks, i;
	__le32 *map;
	int ret;

	if (opts->parent && !parent)
		return -EINVAL;
	if (!size && parent)
		size = parent->size;
	if (!size || size % 512 || (opts->lbs && opts->lbs != 512))
		return -EINVAL;
	if (!is_power_of_2(bs) || bs < VDI_MIN_BLOCK || bs > VDI_MAX_BLOCK)
		return -EINVAL;
	if (!opts->variant || !strcmp(opts->variant, "dynamic") || !strcmp(opts->variant, "normal"))
		type = parent ? VDI_TYPE_DIFF : VDI_TYPE_NORMAL;
	else if (!strcmp(opts->variant, "fixed"))
		type = VDI_TYPE_FIXED;
	else if (!strcmp(opts->variant, "differencing"))
		type = VDI_TYPE_DIFF;
	else
		return -EINVAL;
	if ((type == VDI_TYPE_DIFF) != !!parent)
		return -EINVAL;		/* fixed with a parent, differencing without */
	if (parent && !(parent->flags & VDIMG_IMG_HAS_UUID))
		return -EOPNOTSUPP;	/* nothing to link to */
	if (DIV_ROUND_UP(size, bs) > VDI_MAX_BLOCKS)
		return -EFBIG;
	blocks = DIV_ROUND_UP(size, bs);
	map_bytes = ALIGN((u64)blocks * 4, 512);
	data_off = ALIGN(512 + map_bytes, VDI_ALIGN);
	if (data_off > 0xffffffffULL)
		return -EFBIG;

	memset(&hdr, 0, sizeof(hdr));
	memcpy(hdr.pre.text, VDI_TEXT, sizeof(VDI_TEXT) - 1);
	hdr.pre.signature = cpu_to_le32(VDI_SIGNATURE);
	hdr.pre.version = cpu_to_le32(VDI_VERSION_1_1);
	hdr.h.header_size = cpu_to_le32(VDI_HEADER1_SIZE);
	hdr.h.type = cpu_to_le32(type);
	hdr.h.blocks_offset = cpu_to_le32(512);
	hdr.h.data_offset = cpu_to_le32(data_off);
	vdi_chs(size, &hdr.h.geometry);
	hdr.h.disk_size = cpu_to_le64(size);
	hdr.h.block_size = cpu_to_le32(bs);
	hdr.h.blocks = cpu_to_le32(blocks);
	hdr.h.blocks_allocated = cpu_to_le32(type == VDI_TYPE_FIXED ? blocks : 0);
	vdi_new_uuid(hdr.h.uuid_create);
	vdi_new_uuid(hdr.h.uuid_modify);
	if (parent) {
		vdi_uuid_swap(hdr.h.uuid_linkage, parent->uuid);
		if (parent->fmt && !strcmp(parent->fmt->name, "vdi")) {
			const struct vdi *p = parent->priv;

			memcpy(hdr.h.uuid_parent_modify, p->uuid_modify, 16);
		}
	}

	map = calloc(1, map_bytes);
	if (!map)
		return -ENOMEM;
	for (i = 0; i < blocks; i++)
		map[i] = cpu_to_le32(type == VDI_TYPE_FIXED ? i : VDI_BLOCK_FREE);
	ret = vdimg_file_write(f, &hdr, sizeof(hdr), 0);
	if (!ret)
		ret = vdimg_file_write(f, map, map_bytes, 512);
	/* the data area of a fixed image reads zeros from a sparse file */
	if (!ret)
		ret = vdimg_file_truncate(f, data_off + (type == VDI_TYPE_FIXED ? (u64)blocks * bs : 0));
	free(map);
	return ret;
}

/* Point block @blk at slot @to instead of @from, after copying the data (offline only). */
static int vdi_move_block(struct vdi *v, u32 blk, u32 from, u32 to, u8 *buf, u32 buflen)
{
	struct vdimg_file *f = v->img->file;
	u64 done;
	int ret;

	for (done = 0; done < v->stride; done += buflen) {
		u32 n = min_t(u64, buflen, v->stride - done);
		u64 src = vdi_slot_offset(v, from) - v->block_extra + done;

		ret = vdimg_file_read(f, buf, n, src);
		if (!ret)
			ret = vdimg_file_write(f, buf, n, vdi_slot_offset(v, to) - v->block_extra +
					       done);
		if (ret)
			return ret;
	}
	ret = vdimg_file_sync(f);	/* the copy is durable before the map points at it */
	if (!ret)
		ret = vdi_write_le32(v, v->blocks_off + (u64)blk * 4, to);
	if (ret)
		return ret;
	vdimg_mutex_lock(&v->map_lock);
	v->map[blk] = to;
	vdi_clear_slot(v, from);
	vdi_set_slot(v, to);
	vdimg_mutex_unlock(&v->map_lock);
	return 0;
}

/*
 * Move block @blk from slot @from to the new slot @to at the end of the allocated area: the count
 * (and the file) cover @to before the map entry points at it. Caller holds meta_lock.
 */
static int vdi_move_block_counted(struct vdi *v, u32 blk, u32 from, u32 to, u8 *buf, u32 buflen)
{
	u64 end = vdi_slot_offset(v, to) - v->block_extra + v->stride;
	int ret;

	/* on a block device the slot must fit; the move writes all of it */
	if (vdimg_file_fixed_size(v->img->file)) {
		ret = 0;
		if (end > vdimg_file_size(v->img->file))
			ret = vdimg_device_full(v->img, vdimg_file_size(v->img->file), "block");
	} else {
		ret = vdimg_file_truncate(v->img->file, end);
	}

	if (!ret)
		ret = vdimg_file_sync(v->img->file);
	if (!ret)
		ret = vdi_write_le32(v, v->alloc_field, to + 1);
	if (ret)
		return ret;
	v->disk_alloc = to + 1;
	vdimg_mutex_lock(&v->map_lock);
	v->nr_holes += to - v->next_slot;	/* the slots skipped (none when @to is the next) */
	v->next_slot = to + 1;
	vdimg_mutex_unlock(&v->map_lock);
	return vdi_move_block(v, blk, from, to, buf, buflen);
}

/*
 * Offline: optionally unmap blocks whose data is all zeros, move the last slots into the holes,
 * lower the allocated count and truncate the file. Every step leaves a valid image.
 */
static int vdi_pack(struct vdi *v, bool zeros, u64 *moved, u64 *unmapped)
{
	struct vdimg_image *img = v->img;
	u32 buflen = min_t(u32, v->block_size, 1U << 20);
	u32 *owner = NULL, blk, lo, hi, used = 0;
	/* compact: the zero scan is the first half of the work; both: moving blocks */
	const char *what = zeros ? "compact" : "check";
	u32 parts = zeros ? 2 : 1;
	u8 *buf;
	int ret = 0;

	*moved = 0;
	*unmapped = 0;
	buf = malloc(buflen);
	owner = malloc((size_t)max_t(u32, v->next_slot, 1) * 4);
	if (!buf || !owner) {
		ret = -ENOMEM;
		goto out;
	}
	vdimg_mutex_lock(&v->meta_lock);
	for (blk = 0; zeros && blk < v->nr_blocks; blk++) {
		u32 e = v->map[blk];
		u64 done;
		bool all_zero = true;

		vdimg_tool_progress(what, 0, parts, blk, v->nr_blocks);
		if (!vdi_allocated(e))
			continue;
		for (done = 0; all_zero && done < v->block_size; done += buflen) {
			u32 i;

			ret = vdimg_file_read(img->file, buf, buflen, vdi_slot_offset(v, e) + done);
			if (ret)
				goto unlock;
			for (i = 0; i < buflen && all_zero; i++)
				all_zero = !buf[i];
		}
		if (!all_zero)
			continue;
		ret = vdi_unmap_block(v, blk, true);
		if (ret)
			goto unlock;
		(*unmapped)++;
	}

	for (lo = 0; lo < v->next_slot; lo++)
		owner[lo] = VDI_BLOCK_FREE;
	for (blk = 0; blk < v->nr_blocks; blk++)
		if (vdi_allocated(v->map[blk])) {
			owner[v->map[blk]] = blk;
			used++;
		}
	lo = 0;
	hi = v->next_slot;
	for (;;) {
		while (lo < hi && owner[lo] != VDI_BLOCK_FREE)
			lo++;
		while (hi > lo && owner[hi - 1] == VDI_BLOCK_FREE)
			hi--;
		if (lo >= hi)
			break;
		/* done when the first hole and the last block meet */
		vdimg_tool_progress(what, parts - 1, parts, lo + (v->next_slot - hi), v->next_slot);
		ret = vdi_move_block(v, owner[hi - 1], hi - 1, lo, buf, buflen);
		if (ret)
			goto unlock;
		owner[lo] = owner[hi - 1];
		owner[hi - 1] = VDI_BLOCK_FREE;
		(*moved)++;
	}
	/* every slot below @used is in use now */
	if (used != v->disk_alloc) {
		ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = vdi_write_le32(v, v->alloc_field, used);
		if (ret)
			goto unlock;
		v->disk_alloc = used;
	}
	ret = vdimg_file_sync(img->file);
	/* a block device keeps its size: the slots past @used are simply free */
	if (!ret && !vdimg_file_fixed_size(img->file) &&
	    vdimg_file_size(img->file) > v->data_off + (u64)used * v->stride)
		ret = vdimg_file_truncate(img->file, v->data_off + (u64)used * v->stride);
	vdimg_mutex_lock(&v->map_lock);
	v->next_slot = used;
	v->nr_holes = 0;
	v->hole_hint = 0;
	vdimg_mutex_unlock(&v->map_lock);
	img->flags |= VDIMG_IMG_DIRTY;
unlock:
	vdimg_mutex_unlock(&v->meta_lock);
out:
	free(owner);
	free(buf);
	return ret;
}

static int vdi_compact(struct vdimg_image *img)
{
	struct vdi *v = img->priv;
	u64 moved, unmapped;
	int ret;

	if (v->read_only)
		return -EROFS;
	if (v->repairs)
		return -EUCLEAN;
	if (v->type == VDI_TYPE_FIXED) {
		vdimg_err(img, "fixed images are not compacted (convert to dynamic instead)");
		return -EOPNOTSUPP;
	}
	/* the entries of blocks written in this session on disk before slots move or are freed */
	ret = vdi_flush(img);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		return ret;
	ret = vdi_touch(v, false);
	if (!ret)
		ret = vdi_pack(v, true, &moved, &unmapped);
	if (ret) {
		vdimg_err(img, "compacting failed (error %d); the image is still valid", ret);
		return ret;
	}
	vdimg_info(img, "compacted: %llu zero blocks unmapped, %llu blocks moved, %u allocated",
		   (unsigned long long)unmapped, (unsigned long long)moved, v->disk_alloc);
	return 0;
}

/* Write what a repair open fixed in memory: the allocated count first, then the whole map. */
static int vdi_write_repairs(struct vdi *v)
{
	__le32 *map;
	u32 i;
	int ret;

	map = malloc((size_t)v->nr_blocks * 4);
	if (!map)
		return -ENOMEM;
	for (i = 0; i < v->nr_blocks; i++)
		map[i] = cpu_to_le32(v->map[i]);
	vdimg_mutex_lock(&v->meta_lock);
	ret = 0;
	if (v->next_slot != v->disk_alloc) {
		ret = vdi_write_le32(v, v->alloc_field, v->next_slot);
		/* the count on disk before entries that it must cover */
		if (!ret)
			ret = vdimg_file_sync(v->img->file);
		if (!ret)
			v->disk_alloc = v->next_slot;
	}
	if (!ret)
		ret = vdimg_file_write(v->img->file, map, (size_t)v->nr_blocks * 4, v->blocks_off);
	if (!ret)
		ret = vdimg_file_sync(v->img->file);
	vdimg_mutex_unlock(&v->meta_lock);
	free(map);
	if (!ret)
		vdimg_info(v->img, "block map repaired (%u problems)", v->repairs);
	return ret;
}

static int vdi_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct vdi *v = img->priv;
	u64 fsize = vdimg_file_size(img->file), end, moved, unmapped;
	u32 holes;
	int ret;

	/* a repair open found bad entries (a normal open refuses them): write the fixed map */
	if (v->repairs) {
		res->errors += v->repairs;
		if (!(flags & VDIMG_CHECK_REPAIR) || v->read_only)
			return 0;
		ret = vdi_write_repairs(v);
		if (ret)
			return ret;
		res->fixed += v->repairs;
		v->repairs = 0;
	}
	/* entries an open found pointing past the end of the file (see vdi_read_map()) */
	if (v->lost) {
		vdimg_info(img, "%u blocks point past the end of the file (data lost in a crash); a read-write open writes them unallocated",
			   v->lost);
		res->errors += v->lost;
	}
	/* what is left are leaks */
	vdimg_mutex_lock(&v->map_lock);
	holes = v->nr_holes;
	vdimg_mutex_unlock(&v->map_lock);
	end = v->data_off + (u64)v->disk_alloc * v->stride;
	if (holes) {
		vdimg_info(img, "%u of %u allocated slots are not used by any block", holes,
			   v->disk_alloc);
		res->leaks += holes;
	}
	/* the space of a block device past the image's last slot is the device's, not a leak */
	if (vdimg_file_fixed_size(img->file) && fsize > end)
		fsize = end;
	if (fsize > end) {
		vdimg_info(img, "%llu bytes after the last allocated slot",
			   (unsigned long long)(fsize - end));
		res->leaks += DIV_ROUND_UP(fsize - end, v->stride);
	}
	if (fsize < end)
		vdimg_info(img, "the file ends inside the unused slot %u (harmless)",
			   (u32)((fsize - v->data_off) / v->stride));
	if (!(flags & VDIMG_CHECK_REPAIR) || (!holes && fsize <= end))
		return 0;
	if (v->read_only)
		return -EROFS;
	ret = vdi_touch(v, false);
	if (!ret)
		ret = vdi_pack(v, false, &moved, &unmapped);
	if (ret)
		return ret;
	res->fixed += res->leaks;
	return 0;
}

static int vdi_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct vdi *v = img->priv;

	if (!v->diff)
		return -ENOENT;
	/* VDI records no path, only the parent's UUID (img->parent_uuid) */
	memset(ref, 0, sizeof(*ref));
	ref->by_uuid = true;
	return 0;
}

/*
 * Rebase: VDI records no path, only the parent's creation UUID (uuid_linkage) and, in version 1.1
 * headers, the parent's modification UUID at the time of the link (uuid_parent_modify). @path is
 * not stored; the parent is found by its UUID in the child's directory.
 */
static int vdi_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct vdi *v = img->priv;
	u64 link_off, pmod_off = 0;
	u8 link[16], pmod[16];
	int ret;

	if (!parent) {
		vdimg_err(img, "a differencing VDI cannot drop its parent");
		return -EOPNOTSUPP;
	}
	if (!v->diff) {
		vdimg_err(img, "is not a differencing image: it has no parent to change");
		return -EINVAL;
	}
	if (img->flags & VDIMG_IMG_READ_ONLY)
		return -EROFS;
	if (!(parent->flags & VDIMG_IMG_HAS_UUID)) {
		vdimg_err(img, "the new parent %s has no UUID, which a VDI parent link needs",
			  parent->name ? parent->name : "");
		return -EOPNOTSUPP;
	}
	vdi_uuid_swap(link, parent->uuid);
	memset(pmod, 0, sizeof(pmod));
	if (parent->fmt == img->fmt)
		memcpy(pmod, ((const struct vdi *)parent->priv)->uuid_modify, 16);
	if (v->version >> 16 == 0) {
		link_off = VDI_PREHEADER_SIZE + offsetof(struct vdi_header0, uuid_linkage);
	} else {
		link_off = VDI_PREHEADER_SIZE + offsetof(struct vdi_header1, uuid_linkage);
		pmod_off = VDI_PREHEADER_SIZE + offsetof(struct vdi_header1, uuid_parent_modify);
	}
	vdimg_mutex_lock(&v->meta_lock);
	ret = vdimg_file_write(img->file, link, 16, link_off);
	if (!ret && pmod_off)
		ret = vdimg_file_write(img->file, pmod, 16, pmod_off);
	if (!ret) {
		memcpy(v->uuid_linkage, link, 16);
		if (pmod_off)
			memcpy(v->uuid_parent_modify, pmod, 16);
		memcpy(img->parent_uuid, parent->uuid, 16);
		img->flags |= VDIMG_IMG_DIRTY;
	}
	vdimg_mutex_unlock(&v->meta_lock);
	return ret;
}

static void vdi_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct vdi *v = img->priv;
	char buf[320];
	u8 rfc[16];
	u32 i, used = 0;

	snprintf(buf, sizeof(buf), "%u.%u", v->version >> 16, v->version & 0xffff);
	emit(ctx, "version", buf);
	emit(ctx, "type", vdi_type_name(v->type));
	vdi_uuid_str(buf, img->uuid);
	emit(ctx, "creation uuid", buf);
	vdimg_mutex_lock(&v->map_lock);
	vdi_uuid_swap(rfc, v->uuid_modify);
	for (i = 0; i < v->nr_blocks; i++)
		used += vdi_allocated(v->map[i]);
	vdimg_mutex_unlock(&v->map_lock);
	vdi_uuid_str(buf, rfc);
	emit(ctx, "modification uuid", buf);
	vdi_uuid_swap(rfc, v->uuid_linkage);
	vdi_uuid_str(buf, rfc);
	emit(ctx, "linkage uuid", buf);
	if (v->version >> 16 >= 1) {
		vdi_uuid_swap(rfc, v->uuid_parent_modify);
		vdi_uuid_str(buf, rfc);
		emit(ctx, "parent modification uuid", buf);
	}
	if (v->comment[0])
		emit(ctx, "comment", v->comment);
	snprintf(buf, sizeof(buf), "%u/%u/%u", le32_to_cpu(v->legacy.cylinders),
		 le32_to_cpu(v->legacy.heads), le32_to_cpu(v->legacy.sectors));
	emit(ctx, "geometry", buf);
	if (v->has_lchs) {
		snprintf(buf, sizeof(buf), "%u/%u/%u", le32_to_cpu(v->lchs.cylinders),
			 le32_to_cpu(v->lchs.heads), le32_to_cpu(v->lchs.sectors));
		emit(ctx, "lchs geometry", buf);
	}
	snprintf(buf, sizeof(buf), "%u", v->block_size);
	emit(ctx, "block size", buf);
	if (v->block_extra) {
		snprintf(buf, sizeof(buf), "%u", v->block_extra);
		emit(ctx, "block extra", buf);
	}
	snprintf(buf, sizeof(buf), "%u", v->nr_blocks);
	emit(ctx, "blocks", buf);
	snprintf(buf, sizeof(buf), "%u", v->disk_alloc);
	emit(ctx, "allocated blocks", buf);
	snprintf(buf, sizeof(buf), "%u", used);
	emit(ctx, "used blocks", buf);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v->blocks_off);
	emit(ctx, "map offset", buf);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v->data_off);
	emit(ctx, "data offset", buf);
	if (v->hflags) {
		snprintf(buf, sizeof(buf), "%#x", v->hflags);
		emit(ctx, "flags", buf);
	}
}

/*
 * The size fields of a version 1 header, from blocks_offset to blocks_allocated: contiguous and
 * inside the first sector, so one write switches an image to a new map, data area and size.
 */
struct vdi_size_fields {
	__le32 blocks_offset;
	__le32 data_offset;
	struct vdi_geometry geometry;
	__le32 unused;
	__le64 disk_size;
	__le32 block_size;
	__le32 block_extra;
	__le32 blocks;
	__le32 blocks_allocated;
} __packed;

#define VDI_SIZE_FIELDS	(VDI_PREHEADER_SIZE + offsetof(struct vdi_header1, blocks_offset))

static int vdi_write_size(struct vdi *v, u64 map_off, u64 data_off, u64 size, u32 blocks,
			  u32 alloc)
{
	struct vdi_size_fields f;
	int ret;

	BUILD_BUG_ON(sizeof(f) != offsetof(struct vdi_header1, uuid_create) -
		     offsetof(struct vdi_header1, blocks_offset));
	ret = vdimg_file_sync(v->img->file);	/* what the header will point at is durable */
	if (!ret)
		ret = vdimg_file_read(v->img->file, &f, sizeof(f), VDI_SIZE_FIELDS);
	if (ret)
		return ret;
	f.blocks_offset = cpu_to_le32(map_off);
	f.data_offset = cpu_to_le32(data_off);
	vdi_chs(size, &f.geometry);
	f.disk_size = cpu_to_le64(size);
	f.blocks = cpu_to_le32(blocks);
	f.blocks_allocated = cpu_to_le32(alloc);
	ret = vdimg_file_write(v->img->file, &f, sizeof(f), VDI_SIZE_FIELDS);
	if (!ret)
		ret = vdimg_file_sync(v->img->file);
	return ret;
}

/* the in-memory map and slot bitmap for @blocks entries, new ones FREE */
static int vdi_resize_map(struct vdi *v, u32 blocks)
{
	u32 *map = vdimg_zalloc((size_t)max_t(u32, blocks, v->nr_blocks) * 4);
	u64 *used = vdimg_zalloc(DIV_ROUND_UP((size_t)max_t(u32, blocks, v->nr_blocks), 64) * 8);
	u32 i;

	if (!map || !used) {
		vdimg_free(map);
		vdimg_free(used);
		return -ENOMEM;
	}
	for (i = 0; i < max_t(u32, blocks, v->nr_blocks); i++)
		map[i] = i < v->nr_blocks ? v->map[i] : VDI_BLOCK_FREE;
	memcpy(used, v->slot_used, DIV_ROUND_UP((size_t)v->nr_blocks, 64) * 8);
	vdimg_mutex_lock(&v->map_lock);
	vdimg_free(v->map);
	vdimg_free(v->slot_used);
	v->map = map;
	v->slot_used = used;
	vdimg_mutex_unlock(&v->map_lock);
	return 0;
}

/*
 * No room for the grown map between the header and the data: as VirtualBox does, move the blocks
 * of the first @k slots elsewhere (free slots the old map can name, each move durable before its
 * map entry, as compact does), then write the whole map, renumbered by -@k, into the freed slots
 * and switch the header to it and to the data area @k slots further in one write. A crash leaves
 * the old image (with some blocks moved) or the new one. Refused (-ENOSPC) when the old map has
 * too few free slots to take the moved blocks.
 */
static int vdi_relocate(struct vdi *v, u32 blocks, u64 size)
{
	u64 map_bytes = ALIGN((u64)blocks * 4, 512);
	u32 k = DIV_ROUND_UP(map_bytes, v->stride), blk, i, to;
	u32 buflen = min_t(u32, v->block_size, 1U << 20);
	u64 new_data = v->data_off + (u64)k * v->stride;
	__le32 *disk = NULL;
	u8 *buf = NULL;
	int ret = 0;

	if (new_data > 0xffffffffULL) {
		vdimg_err(v->img, "the grown block map does not fit below 4 GiB");
		return -EFBIG;
	}
	buf = malloc(buflen);
	disk = malloc(map_bytes);
	if (!buf || !disk) {
		ret = -ENOMEM;
		goto out;
	}
	/* the old map can only name slots below its block count: move within it */
	for (blk = 0, i = 0; blk < v->nr_blocks; blk++)
		i += vdi_allocated(v->map[blk]);
	if (k > v->nr_blocks || i > v->nr_blocks - k) {
		vdimg_err(v->img, "the block map must grow into the first %u blocks' slots and there are not enough free slots to move them to: compact the image or convert it",
			  k);
		ret = -ENOSPC;
		goto out;
	}
	to = k;
	for (blk = 0; blk < v->nr_blocks && !ret; blk++) {
		u32 e = v->map[blk];

		if (!vdi_allocated(e) || e >= k)
			continue;
		while (vdi_test_slot(v, to))
			to++;
		if (to >= v->disk_alloc)
			ret = vdi_move_block_counted(v, blk, e, to, buf, buflen);
		else
			ret = vdi_move_block(v, blk, e, to, buf, buflen);
	}
	if (ret)
		goto out;
	for (i = 0; i < map_bytes / 4; i++) {
		u32 e = i < v->nr_blocks ? v->map[i] : VDI_BLOCK_FREE;

		disk[i] = cpu_to_le32(vdi_allocated(e) ? e - k : e);
	}
	ret = vdimg_file_write(v->img->file, disk, map_bytes, v->data_off);
	if (!ret && vdimg_file_size(v->img->file) < new_data)
		ret = vdimg_file_truncate(v->img->file, new_data);
	if (!ret)
		ret = vdi_write_size(v, v->data_off, new_data, size, blocks, v->next_slot - k);
	if (ret)
		goto out;
	/* the image is the new one now: renumber what is in memory */
	ret = vdi_resize_map(v, blocks);
	if (ret)
		goto out;
	vdimg_mutex_lock(&v->map_lock);
	memset(v->slot_used, 0, DIV_ROUND_UP((size_t)max_t(u32, blocks, v->nr_blocks), 64) * 8);
	for (i = 0; i < blocks; i++)
		if (vdi_allocated(v->map[i])) {
			v->map[i] -= k;
			vdi_set_slot(v, v->map[i]);
		}
	v->blocks_off = v->data_off;
	v->data_off = new_data;
	v->next_slot -= k;
	v->nr_holes = 0;
	for (i = 0; i < v->next_slot; i++)
		v->nr_holes += !vdi_test_slot(v, i);
	v->hole_hint = 0;
	v->disk_alloc = v->next_slot;
	vdimg_mutex_unlock(&v->map_lock);
out:
	free(disk);
	free(buf);
	return ret;
}

/* grow or shrink a dynamic base image (differencing ones keep their parent's size) */
static int vdi_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct vdi *v = img->priv;
	u64 blocks64 = DIV_ROUND_UP(size, v->block_size), moved, unmapped;
	u32 blocks = blocks64, i;
	int ret;

	if (v->read_only)
		return -EROFS;
	if (v->repairs)
		return -EUCLEAN;
	if (v->version >> 16 != 1) {
		vdimg_err(img, "only version 1.1 VDI images can be resized");
		return -EOPNOTSUPP;
	}
	ret = vdi_flush(img);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		return ret;
	if (v->type != VDI_TYPE_NORMAL) {
		vdimg_err(img, "only dynamic VDI images can be resized (this one is %s)",
			  vdi_type_name(v->type));
		return -EOPNOTSUPP;
	}
	if (blocks64 > VDI_MAX_BLOCKS) {
		vdimg_err(img, "%llu bytes need more than %lu blocks", (unsigned long long)size,
			  VDI_MAX_BLOCKS);
		return -EFBIG;
	}
	ret = vdi_touch(v, false);
	if (ret)
		return ret;
	if (blocks < v->nr_blocks) {
		/* drop what is left past the end, then pack the slots below the new count */
		vdimg_mutex_lock(&v->meta_lock);
		for (i = blocks; i < v->nr_blocks && !ret; i++)
			ret = vdi_unmap_block(v, i, true);
		vdimg_mutex_unlock(&v->meta_lock);
		if (!ret)
			ret = vdi_pack(v, false, &moved, &unmapped);
		if (!ret)
			ret = vdi_write_size(v, v->blocks_off, v->data_off, size, blocks, v->disk_alloc);
		if (ret)
			return ret;
		v->nr_blocks = blocks;
	} else if ((u64)blocks * 4 <= v->data_off - v->blocks_off) {
		__le32 *fresh = NULL;

		if (blocks > v->nr_blocks) {
			fresh = malloc((size_t)(blocks - v->nr_blocks) * 4);
			if (!fresh)
				return -ENOMEM;
			memset(fresh, 0xff, (size_t)(blocks - v->nr_blocks) * 4);	/* FREE */
			ret = vdimg_file_write(img->file, fresh, (size_t)(blocks - v->nr_blocks) * 4,
					       v->blocks_off + (u64)v->nr_blocks * 4);
			free(fresh);
		}
		vdimg_mutex_lock(&v->meta_lock);
		if (!ret)
			ret = vdi_write_size(v, v->blocks_off, v->data_off, size, blocks,
					     v->disk_alloc);
		vdimg_mutex_unlock(&v->meta_lock);
		if (!ret)
			ret = vdi_resize_map(v, blocks);
		if (ret)
			return ret;
		v->nr_blocks = blocks;
	} else {
		vdimg_mutex_lock(&v->meta_lock);
		ret = vdi_relocate(v, blocks, size);
		vdimg_mutex_unlock(&v->meta_lock);
		if (ret)
			return ret;
		v->nr_blocks = blocks;
	}
	v->disk_size = size;
	img->size = size;
	img->flags |= VDIMG_IMG_DIRTY;
	return 0;
}

const struct vdimg_tool_ops vdimg_vdi_tool_ops = {
	.id = VDIMG_FMT_VDI,
	.create = vdi_create,
	.check = vdi_check,
	.parent_ref = vdi_parent_ref,
	.set_parent = vdi_set_parent,
	.describe = vdi_describe,
	.compact = vdi_compact,
	.resize = vdi_resize,
};
