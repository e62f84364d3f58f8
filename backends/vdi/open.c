// SPDX-License-Identifier: GPL-2.0
/*
 * VDI open and close (VirtualBox Disk Image): probe, header versions 0 and 1.1, normal (dynamic),
 * fixed, differencing and (legacy) undo images, the block map read whole and checked (every slot
 * index below the allocated count and used once), UUIDs, the parent check, and the struct
 * vdimg_format of vdi. Kernel-shared: compiled into the module and the userspace library; only
 * include/vdimg/platform.h services here. The layout is in vdi.h.
 */
#include "vdi.h"

/* GUID layout (VirtualBox, on disk) <-> RFC 4122 byte order (img->uuid); its own inverse */
void vdi_uuid_swap(u8 *dst, const u8 *src)
{
	static const u8 order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
	int i;

	for (i = 0; i < 16; i++)
		dst[i] = src[order[i]];
}

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" of an RFC-order UUID */
void vdi_uuid_str(char *buf, const u8 *rfc)
{
	static const char hex[] = "0123456789abcdef";
	int i, n = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			buf[n++] = '-';
		buf[n++] = hex[rfc[i] >> 4];
		buf[n++] = hex[rfc[i] & 15];
	}
	buf[n] = '\0';
}

/* a random (version 4) UUID, in the on-disk GUID layout */
void vdi_new_uuid(u8 *disk)
{
	u8 rfc[16];

	vdimg_random_bytes(rfc, sizeof(rfc));
	rfc[6] = (rfc[6] & 0x0f) | 0x40;
	rfc[8] = (rfc[8] & 0x3f) | 0x80;
	vdi_uuid_swap(disk, rfc);
}

const char *vdi_type_name(u32 type)
{
	switch (type) {
	case VDI_TYPE_NORMAL:
		return "dynamic";
	case VDI_TYPE_FIXED:
		return "fixed";
	case VDI_TYPE_UNDO:
		return "undo";
	case VDI_TYPE_DIFF:
		return "differencing";
	}
	return "unknown";
}

static bool vdi_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	__le32 sig;

	if (head_len < VDI_PREHEADER_SIZE)
		return false;
	memcpy(&sig, head + offsetof(struct vdi_preheader, signature), sizeof(sig));
	return le32_to_cpu(sig) == VDI_SIGNATURE;
}

/* ---- open ---- */

/* Read and check the pre-header and header; fills everything in @v but the map. */
static int vdi_read_header(struct vdimg_image *img, struct vdi *v, u64 fsize)
{
	struct vdi_preheader pre;
	u32 alloc, min_blocks;
	u64 map_end;
	int ret;

	BUILD_BUG_ON(sizeof(struct vdi_preheader) != VDI_PREHEADER_SIZE);
	BUILD_BUG_ON(sizeof(struct vdi_header0) != VDI_HEADER0_SIZE);
	BUILD_BUG_ON(sizeof(struct vdi_header1) != VDI_HEADER1_SIZE);
	BUILD_BUG_ON(offsetof(struct vdi_header1, lchs) != VDI_HEADER1_MIN);

	if (fsize < VDI_PREHEADER_SIZE + VDI_HEADER0_SIZE)
		return vdimg_corrupt(img, "the file (%llu bytes) is too short for a VDI header",
				     (unsigned long long)fsize);
	ret = vdimg_file_read(img->file, &pre, sizeof(pre), 0);
	if (ret)
		return ret;
	if (le32_to_cpu(pre.signature) != VDI_SIGNATURE)
		return vdimg_corrupt(img, "bad VDI signature %#x", le32_to_cpu(pre.signature));
	v->version = le32_to_cpu(pre.version);

	if (v->version >> 16 == 0) {
		struct vdi_header0 h;

		ret = vdimg_file_read(img->file, &h, sizeof(h), VDI_PREHEADER_SIZE);
		if (ret)
			return ret;
		v->type = le32_to_cpu(h.type);
		v->hflags = le32_to_cpu(h.flags);
		memcpy(v->comment, h.comment, sizeof(h.comment));
		v->legacy = h.geometry;
		v->disk_size = le64_to_cpu(h.disk_size);
		v->block_size = le32_to_cpu(h.block_size);
		v->block_extra = 0;
		v->nr_blocks = le32_to_cpu(h.blocks);
		alloc = le32_to_cpu(h.blocks_allocated);
		memcpy(v->uuid_create, h.uuid_create, 16);
		memcpy(v->uuid_modify, h.uuid_modify, 16);
		memcpy(v->uuid_linkage, h.uuid_linkage, 16);
		v->blocks_off = VDI_PREHEADER_SIZE + VDI_HEADER0_SIZE;
		v->data_off = v->blocks_off + (u64)v->nr_blocks * 4;
		v->alloc_field = VDI_PREHEADER_SIZE +
				 offsetof(struct vdi_header0, blocks_allocated);
		v->modify_field = VDI_PREHEADER_SIZE + offsetof(struct vdi_header0, uuid_modify);
	} else if (v->version >> 16 == 1) {
		struct vdi_header1 h;
		size_t len;

		memset(&h, 0, sizeof(h));
		ret = vdimg_file_read(img->file, &h.header_size, 4, VDI_PREHEADER_SIZE);
		if (ret)
			return ret;
		v->header_size = le32_to_cpu(h.header_size);
		if (v->header_size < VDI_HEADER1_MIN || v->header_size > VDI_ALIGN)
			return vdimg_corrupt(img, "bad header size %u", v->header_size);
		len = min_t(u32, v->header_size, sizeof(h));
		if (VDI_PREHEADER_SIZE + len > fsize)
			return vdimg_corrupt(img, "the header runs past the end of the file");
		ret = vdimg_file_read(img->file, &h, len, VDI_PREHEADER_SIZE);
		if (ret)
			return ret;
		v->type = le32_to_cpu(h.type);
		v->hflags = le32_to_cpu(h.flags);
		memcpy(v->comment, h.comment, sizeof(h.comment));
		v->legacy = h.geometry;
		v->has_lchs = v->header_size >= VDI_HEADER1_SIZE;
		v->lchs = h.lchs;
		v->disk_size = le64_to_cpu(h.disk_size);
		v->block_size = le32_to_cpu(h.block_size);
		v->block_extra = le32_to_cpu(h.block_extra);
		v->nr_blocks = le32_to_cpu(h.blocks);
		alloc = le32_to_cpu(h.blocks_allocated);
		memcpy(v->uuid_create, h.uuid_create, 16);
		memcpy(v->uuid_modify, h.uuid_modify, 16);
		memcpy(v->uuid_linkage, h.uuid_linkage, 16);
		memcpy(v->uuid_parent_modify, h.uuid_parent_modify, 16);
		v->blocks_off = le32_to_cpu(h.blocks_offset);
		v->data_off = le32_to_cpu(h.data_offset);
		v->alloc_field = VDI_PREHEADER_SIZE +
				 offsetof(struct vdi_header1, blocks_allocated);
		v->modify_field = VDI_PREHEADER_SIZE + offsetof(struct vdi_header1, uuid_modify);
		if (v->blocks_off < VDI_PREHEADER_SIZE + (u64)v->header_size)
			return vdimg_corrupt(img, "the block map (at %llu) overlaps the header",
					     (unsigned long long)v->blocks_off);
	} else {
		vdimg_err(img, "VDI version %u.%u is not supported", v->version >> 16,
			  v->version & 0xffff);
		return -EOPNOTSUPP;
	}

	if (v->type < VDI_TYPE_NORMAL || v->type > VDI_TYPE_DIFF)
		return vdimg_corrupt(img, "unknown image type %u", v->type);
	if (!is_power_of_2(v->block_size) || v->block_size < VDI_MIN_BLOCK)
		return vdimg_corrupt(img, "block size %u is not a power of two >= 512",
				     v->block_size);
	if (v->block_size > VDI_MAX_BLOCK) {
		vdimg_err(img, "block size %u is larger than the supported %u", v->block_size,
			  VDI_MAX_BLOCK);
		return -EOPNOTSUPP;
	}
	if (v->block_extra > VDI_MAX_EXTRA) {
		vdimg_err(img, "per-block extra data of %u bytes is not supported", v->block_extra);
		return -EOPNOTSUPP;
	}
	v->block_shift = ilog2(v->block_size);
	v->stride = (u64)v->block_size + v->block_extra;
	if (!v->disk_size)
		return vdimg_corrupt(img, "the virtual disk size is 0");
	if (v->disk_size > ((u64)VDI_MAX_BLOCKS << v->block_shift) ||
	    v->nr_blocks > VDI_MAX_BLOCKS) {
		vdimg_err(img, "disk of %llu bytes in %u blocks is larger than supported (%lu blocks)",
			  (unsigned long long)v->disk_size, v->nr_blocks, VDI_MAX_BLOCKS);
		return -EOPNOTSUPP;
	}
	min_blocks = (v->disk_size >> v->block_shift) + !!(v->disk_size & (v->block_size - 1));
	if (v->nr_blocks < min_blocks)
		return vdimg_corrupt(img, "%u blocks of %u bytes cannot hold %llu bytes",
				     v->nr_blocks, v->block_size,
				     (unsigned long long)v->disk_size);
	if (alloc > v->nr_blocks)
		return vdimg_corrupt(img, "%u blocks allocated out of %u", alloc, v->nr_blocks);
	map_end = v->blocks_off + (u64)v->nr_blocks * 4;
	if (map_end > v->data_off)
		return vdimg_corrupt(img, "the block map [%llu, %llu) overlaps the data at %llu",
				     (unsigned long long)v->blocks_off,
				     (unsigned long long)map_end,
				     (unsigned long long)v->data_off);
	if (v->data_off > fsize)
		return vdimg_corrupt(img,
				     "the data area (at %llu) starts past the end of the file (%llu)",
				     (unsigned long long)v->data_off, (unsigned long long)fsize);
	v->disk_alloc = alloc;
	v->comment[sizeof(v->comment) - 1] = '\0';
	return 0;
}

/*
 * Read the map and check every entry; fills the slot bitmap. With @repair (check --repair) bad
 * entries do not fail: an entry beyond the allocated count whose slot is inside the file is kept
 * (the count will be raised: a crash between the map and header writes of another implementation),
 * one that points past the file or at a slot another block uses becomes FREE. Counted in
 * @v->repairs; nothing is written before ->check() repairs, and the image refuses writes until
 * then.
 *
 * Without @repair one kind of bad entry is tolerated: inside the allocated count, its slot used by
 * no other block, but reaching past the end of the file. That is what a host crash leaves when an
 * implementation wrote the entry without syncing the block's data first (qemu does; this backend
 * did before it deferred entries to flush): the file never grew, the write was never
 * acknowledged by a completed flush, and qemu reads the block as zeros. Here the block becomes
 * FREE (zeros, or the parent's data, as before the write) with a warning; its slot stays reserved
 * for the session, so nothing is written there while the entry on disk still points at it, and a
 * read-write open writes the FREE entry at its first flush (marked dirty). Counted in @v->lost
 * (check reports them).
 */
static int vdi_read_map(struct vdimg_image *img, struct vdi *v, u64 fsize, bool repair)
{
	u32 i, used = 0, alloc = v->disk_alloc;
	int ret;

	v->map = vdimg_alloc((size_t)v->nr_blocks * 4);	/* read whole below */
	v->slot_used = vdimg_zalloc(DIV_ROUND_UP((size_t)v->nr_blocks, 64) * 8);
	v->dirty = vdimg_zalloc(DIV_ROUND_UP((size_t)v->nr_blocks, 64) * 8);
	v->flushing = vdimg_zalloc(DIV_ROUND_UP((size_t)v->nr_blocks, 64) * 8);
	if (!v->map || !v->slot_used || !v->dirty || !v->flushing)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, v->map, (size_t)v->nr_blocks * 4, v->blocks_off);
	if (ret)
		return ret;
	for (i = 0; i < v->nr_blocks; i++) {
		const char *bad = NULL;
		bool past_end;
		u64 two;
		u32 e;

		/*
		 * Two free entries read the same in either byte order: skip them in one step (an
		 * empty 2 TiB image has two million)
		 */
		if (!(i & 1) && i + 1 < v->nr_blocks) {
			memcpy(&two, &v->map[i], sizeof(two));
			if (two == U64_MAX) {
				i++;
				continue;
			}
		}
		e = le32_to_cpu(((const __le32 *)v->map)[i]);
		v->map[i] = e;
		if (!vdi_allocated(e))
			continue;
		past_end = e >= v->nr_blocks || v->data_off + ((u64)e + 1) * v->stride > fsize;
		if (past_end)
			bad = "lies past the end of the file";
		else if (vdi_test_slot(v, e))
			bad = "is used by another block";
		else if (e >= v->disk_alloc && !repair)
			bad = "is beyond the allocated count";
		if (past_end && !repair && e < v->disk_alloc && !vdi_test_slot(v, e)) {
			if (!v->lost)
				vdimg_warn(img, "block %u: slot %u lies past the end of the file (its data never reached the disk): the block reads as unallocated",
					   i, e);
			v->map[i] = VDI_BLOCK_FREE;
			vdi_set_slot(v, e);	/* reserved: the entry on disk still names it */
			if (!v->read_only) {
				v->dirty[i / 64] |= 1ULL << (i % 64);
				v->nr_dirty++;
			}
			v->lost++;
			used++;
			continue;
		}
		if (bad && !repair)
			return vdimg_corrupt(img, "block %u: slot %u %s (%u allocated)", i, e, bad,
					     v->disk_alloc);
		if (bad) {
			vdimg_warn(img, "block %u: slot %u %s: marking the block free", i, e, bad);
			v->map[i] = VDI_BLOCK_FREE;
			v->repairs++;
			continue;
		}
		vdi_set_slot(v, e);
		used++;
		alloc = max(alloc, e + 1);
	}
	if (v->lost > 1)
		vdimg_warn(img, "%u blocks point past the end of the file and read as unallocated",
			   v->lost);
	if (alloc != v->disk_alloc) {
		vdimg_warn(img, "blocks use %u slots but the header counts %u allocated", alloc,
			   v->disk_alloc);
		v->repairs++;
	}
	v->next_slot = alloc;
	v->nr_holes = alloc - used;
	v->hole_hint = 0;
	return 0;
}

static void vdi_free(struct vdi *v)
{
	vdimg_free(v->map);
	vdimg_free(v->slot_used);
	vdimg_free(v->dirty);
	vdimg_free(v->flushing);
	vdimg_mutex_destroy(&v->map_lock);
	vdimg_mutex_destroy(&v->meta_lock);
	vdimg_free(v);
}

static int vdi_open(struct vdimg_image *img, unsigned int flags)
{
	u64 fsize = vdimg_file_size(img->file);
	struct vdi *v;
	u32 i;
	int ret;

	v = vdimg_zalloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->img = img;
	vdimg_mutex_init(&v->map_lock);
	vdimg_mutex_init(&v->meta_lock);
	v->read_only = flags & VDIMG_OPEN_READ_ONLY;

	ret = vdi_read_header(img, v, fsize);
	if (ret)
		goto out_free;
	ret = vdi_read_map(img, v, fsize, flags & VDIMG_OPEN_REPAIR);
	if (ret)
		goto out_free;

	v->diff = v->type == VDI_TYPE_DIFF || v->type == VDI_TYPE_UNDO;
	img->size = ALIGN(v->disk_size, 512);
	img->lbs = 512;
	img->pbs = 512;
	img->alloc_unit = v->block_size;
	if (v->type == VDI_TYPE_FIXED) {
		/* a fully allocated fixed image never allocates (discard keeps its blocks) */
		for (i = 0; i < v->nr_blocks && vdi_allocated(v->map[i]); i++)
			;
		if (i == v->nr_blocks)
			img->alloc_unit = 0;
	}
	vdi_uuid_swap(img->uuid, v->uuid_create);
	img->flags |= VDIMG_IMG_HAS_UUID;
	if (v->diff) {
		vdi_uuid_swap(img->parent_uuid, v->uuid_linkage);
		img->flags |= VDIMG_IMG_HAS_PARENT | VDIMG_IMG_HAS_PARENT_UUID;
	}
	vdimg_strscpy(img->variant, vdi_type_name(v->type), sizeof(img->variant));
	if (v->disk_size % 512)
		vdimg_warn(img, "virtual size %llu is not a multiple of 512, rounded up",
			   (unsigned long long)v->disk_size);
	img->priv = v;
	return 0;

out_free:
	vdi_free(v);
	return ret;
}

static u64 vdi_metadata_bytes(struct vdimg_image *img)
{
	struct vdi *v = img->priv;
	u64 n;

	/* the block map and its three bitmaps (slots used, dirty, being flushed) */
	vdimg_mutex_lock(&v->map_lock);
	n = (u64)v->nr_blocks * 4 + 3 * DIV_ROUND_UP((u64)v->nr_blocks, 64) * 8;
	vdimg_mutex_unlock(&v->map_lock);
	return n;
}

static void vdi_close(struct vdimg_image *img)
{
	struct vdi *v = img->priv;

	if (v && v->nr_dirty)
		vdimg_warn(img, "%u block map entries were not written (no flush before close)",
			   v->nr_dirty);
	if (v)
		vdi_free(v);
	img->priv = NULL;
}

/* ---- parent identity ---- */

static int vdi_verify_parent(struct vdimg_image *child, struct vdimg_image *parent)
{
	struct vdi *v = child->priv;
	char want[37], have[37];

	if (!v->diff)
		return 0;
	vdi_uuid_str(want, child->parent_uuid);
	if (!(parent->flags & VDIMG_IMG_HAS_UUID)) {
		vdimg_err(child, "parent %s has no UUID to match this image's parent UUID %s",
			  parent->name, want);
		return -ESTALE;
	}
	if (memcmp(child->parent_uuid, parent->uuid, 16)) {
		vdi_uuid_str(have, parent->uuid);
		vdimg_err(child, "parent UUID %s does not match %s, whose UUID is %s", want,
			  parent->name, have);
		return -ESTALE;
	}
	if (parent->fmt == child->fmt && v->version >> 16 >= 1) {
		const struct vdi *p = parent->priv;
		static const u8 none[16];

		if (memcmp(v->uuid_parent_modify, none, 16) &&
		    memcmp(v->uuid_parent_modify, p->uuid_modify, 16))
			vdimg_info(child, "parent %s was modified after this image was created",
				   parent->name);
	}
	return 0;
}

/*
 * Online grow of a dynamic version 1.1 image: the block map may take entries up to the data area
 * (images vdimgctl creates leave room up to a 1 MiB boundary; qemu's leave almost none). The new
 * entries are written free first, then the header's block count, then its disk size (a map
 * longer than the size needs is valid), then the file is synced. The legacy CHS geometry is left
 * as it is.
 */
static int vdi_grow(struct vdimg_image *img, u64 new_size)
{
	struct vdi *v = img->priv;
	u64 need, room, old = img->size, i;
	u32 *map = NULL;
	u64 *used = NULL, *dirty = NULL, *flushing = NULL;
	__le32 *ones = NULL;
	int ret;

	if (v->read_only)
		return -EROFS;
	if (new_size <= old || new_size % 512)
		return -EINVAL;
	if (v->type != VDI_TYPE_NORMAL || v->version >> 16 < 1) {
		vdimg_err(img, "cannot grow a %s version %u.%u VDI image online (detach and use vdimgctl resize)",
			  vdi_type_name(v->type), v->version >> 16, v->version & 0xffff);
		return -EOPNOTSUPP;
	}
	need = DIV_ROUND_UP(new_size, (u64)v->block_size);
	room = (v->data_off - v->blocks_off) / 4;
	if (need > min_t(u64, room, VDI_MAX_BLOCKS)) {
		vdimg_err(img, "cannot grow online past %llu bytes: the block map has room for %llu entries before the data area (detach and use vdimgctl resize)",
			  (unsigned long long)(min_t(u64, room, VDI_MAX_BLOCKS) << v->block_shift),
			  (unsigned long long)min_t(u64, room, VDI_MAX_BLOCKS));
		return -EFBIG;
	}
	ret = vdi_touch(v, false);
	if (ret)
		return ret;
	if (need > v->nr_blocks) {
		map = vdimg_zalloc(need * 4);
		used = vdimg_zalloc(DIV_ROUND_UP(need, 64) * 8);
		ones = vdimg_zalloc((need - v->nr_blocks) * 4);
		dirty = vdimg_zalloc(DIV_ROUND_UP(need, 64) * 8);
		flushing = vdimg_zalloc(DIV_ROUND_UP(need, 64) * 8);
		if (!map || !used || !ones || !dirty || !flushing) {
			ret = -ENOMEM;
			goto out;
		}
		for (i = 0; i < need - v->nr_blocks; i++)
			ones[i] = cpu_to_le32(VDI_BLOCK_FREE);
		vdimg_mutex_lock(&v->meta_lock);
		ret = vdimg_file_write(img->file, ones, (need - v->nr_blocks) * 4,
				       v->blocks_off + (u64)v->nr_blocks * 4);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret)
			ret = vdi_write_le32(v, VDI_PREHEADER_SIZE +
					     offsetof(struct vdi_header1, blocks), need);
		vdimg_mutex_unlock(&v->meta_lock);
		if (ret)
			goto out;
		vdimg_mutex_lock(&v->map_lock);
		memcpy(map, v->map, (size_t)v->nr_blocks * 4);
		for (i = v->nr_blocks; i < need; i++)
			map[i] = VDI_BLOCK_FREE;
		memcpy(used, v->slot_used, DIV_ROUND_UP((size_t)v->nr_blocks, 64) * 8);
		/* the old arrays end up in the locals and are freed below */
		swap(v->map, map);
		swap(v->slot_used, used);
		/* flushing is only used under meta_lock, which a flush holds: none runs now */
		memcpy(dirty, v->dirty, DIV_ROUND_UP((size_t)v->nr_blocks, 64) * 8);
		swap(v->dirty, dirty);
		swap(v->flushing, flushing);
		v->nr_blocks = need;
		vdimg_mutex_unlock(&v->map_lock);
	}
	img->size = new_size;
	ret = vdimg_grow_zero_new(img, old);
	if (!ret) {
		__le64 ds = cpu_to_le64(new_size);

		vdimg_mutex_lock(&v->meta_lock);
		ret = vdimg_file_write(img->file, &ds, 8, VDI_PREHEADER_SIZE +
				       offsetof(struct vdi_header1, disk_size));
		if (!ret)
			ret = vdimg_file_sync(img->file);
		vdimg_mutex_unlock(&v->meta_lock);
	}
	if (ret)
		img->size = old;
	else
		v->disk_size = new_size;
out:
	vdimg_free(map);
	vdimg_free(used);
	vdimg_free(dirty);
	vdimg_free(flushing);
	vdimg_free(ones);
	return ret;
}

const struct vdimg_format vdimg_vdi_format = {
	.name = "vdi",
	.id = VDIMG_FMT_VDI,
	.caps = VDIMG_CAP_SAME_SIZE_PARENT,
	.probe = vdi_probe,
	.open = vdi_open,
	.close = vdi_close,
	.map = vdi_map,
	.commit = vdi_commit,
	.flush = vdi_flush,
	.abort = vdi_abort,
	.discard = vdi_discard,
	.verify_parent = vdi_verify_parent,
	.grow = vdi_grow,
	.metadata_bytes = vdi_metadata_bytes,
};
