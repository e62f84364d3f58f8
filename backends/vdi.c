// SPDX-License-Identifier: GPL-2.0
/*
 * The VDI backend (VirtualBox Disk Image): header versions 0 and 1.1, normal (dynamic), fixed,
 * differencing and (legacy) undo images, read-write. Shared by the module and the userspace library:
 * only include/vdimg/platform.h services here, no blk-mq, no libc. The layout is in vdi.h.
 *
 * The block map is read whole at open, checked (every slot index below the allocated count and used
 * once) and kept in memory; map() answers from it without I/O. A write to a FREE or ZERO block
 * reserves a slot (a hole left by a discard, else the next one at the end of the data area) and
 * returns a NEW extent covering the whole block (filled with zeros for a ZERO block, from the layers
 * below for a FREE one); commit() then writes, in this order, the header's
 * allocated count (if the slot is beyond it) and the map entry. A crash between the two leaves an
 * unreferenced slot (a leak that `check --repair` or `compact` reclaims), never an entry pointing
 * outside the allocated area. The first write after open gives the image a new modification UUID,
 * as VirtualBox does.
 *
 * Locking: @map_lock protects the in-memory map, the slot bitmap and the allocation cursor and is
 * never held across I/O (map() with VDIMG_MAP_NOWAIT only try-locks it); @meta_lock serializes
 * every metadata write (header fields, map entries) and is held across that I/O.
 */
#include <vdimg/backend.h>
#include "vdi.h"
#ifndef __KERNEL__
#include "tool-ops.h"
#endif

#define VDI_MIN_BLOCK		512U
#define VDI_MAX_BLOCK		(64U << 20)	/* bounds the fill the driver must do */
#define VDI_MAX_EXTRA		(64U << 20)
#define VDI_MAX_BLOCKS		(1U << 26)	/* 256 MiB of map in memory at most */
#define VDI_DEFAULT_BLOCK	(1U << 20)
#define VDI_ALIGN		(1U << 20)	/* data area alignment of images we create */

struct vdi {
	struct vdimg_image *img;
	u32 version;			/* pre-header version, major << 16 | minor */
	u32 type;			/* enum vdi_image_type */
	u32 hflags;			/* header flags, kept as found */
	u32 header_size;		/* version 1: header.header_size */
	u64 disk_size;			/* header value (img->size is it rounded up to 512) */
	u64 blocks_off;			/* file offset of the map */
	u64 data_off;			/* file offset of slot 0 */
	u32 block_size;
	u32 block_shift;
	u32 block_extra;
	u64 stride;			/* block_size + block_extra */
	u32 nr_blocks;			/* map entries */
	u64 alloc_field;		/* file offset of header.blocks_allocated */
	u64 modify_field;		/* file offset of header.uuid_modify */
	bool read_only;
	bool diff;			/* has a parent (differencing or undo) */
	char comment[257];
	struct vdi_geometry legacy;
	struct vdi_geometry lchs;
	bool has_lchs;
	u8 uuid_create[16];		/* as on disk (GUID layout) */
	u8 uuid_linkage[16];
	u8 uuid_parent_modify[16];

	/* serializes metadata writes; held across their I/O. Protects @disk_alloc. */
	vdimg_mutex_t meta_lock;
	u32 disk_alloc;			/* header.blocks_allocated as on disk */
	u32 repairs;			/* problems a repair open found, not yet written */

	/* protects everything below; never held across I/O */
	vdimg_mutex_t map_lock;
	u32 *map;			/* [nr_blocks], cpu order */
	u64 *slot_used;			/* bitmap [nr_blocks]: slot referenced or reserved */
	u32 next_slot;			/* slots >= this are unused and past the allocated area */
	u32 nr_holes;			/* unused slots below @next_slot */
	u32 hole_hint;			/* no hole below this index */
	bool modified;			/* uuid_modify was renewed since open (also under meta_lock) */
	u8 uuid_modify[16];
};

static inline bool vdi_allocated(u32 e)
{
	return e < VDI_BLOCK_ZERO;
}

static inline bool vdi_test_slot(const struct vdi *v, u32 s)
{
	return v->slot_used[s / 64] & (1ULL << (s % 64));
}

static inline void vdi_set_slot(struct vdi *v, u32 s)
{
	v->slot_used[s / 64] |= 1ULL << (s % 64);
}

static inline void vdi_clear_slot(struct vdi *v, u32 s)
{
	v->slot_used[s / 64] &= ~(1ULL << (s % 64));
}

/* file offset of the data of slot @s */
static inline u64 vdi_slot_offset(const struct vdi *v, u32 s)
{
	return v->data_off + (u64)s * v->stride + v->block_extra;
}

/* GUID layout (VirtualBox, on disk) <-> RFC 4122 byte order (img->uuid); its own inverse */
static void vdi_uuid_swap(u8 *dst, const u8 *src)
{
	static const u8 order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
	int i;

	for (i = 0; i < 16; i++)
		dst[i] = src[order[i]];
}

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" of an RFC-order UUID */
static void vdi_uuid_str(char *buf, const u8 *rfc)
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
static void vdi_new_uuid(u8 *disk)
{
	u8 rfc[16];

	vdimg_random_bytes(rfc, sizeof(rfc));
	rfc[6] = (rfc[6] & 0x0f) | 0x40;
	rfc[8] = (rfc[8] & 0x3f) | 0x80;
	vdi_uuid_swap(disk, rfc);
}

static const char *vdi_type_name(u32 type)
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
		v->alloc_field = VDI_PREHEADER_SIZE + offsetof(struct vdi_header0, blocks_allocated);
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
		v->alloc_field = VDI_PREHEADER_SIZE + offsetof(struct vdi_header1, blocks_allocated);
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
		vdimg_err(img, "disk of %llu bytes in %u blocks is larger than supported (%u blocks)",
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
		return vdimg_corrupt(img, "the data area (at %llu) starts past the end of the file (%llu)",
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
 * @v->repairs; nothing is written before ->check() repairs, and the image refuses writes until then.
 */
static int vdi_read_map(struct vdimg_image *img, struct vdi *v, u64 fsize, bool repair)
{
	u32 i, used = 0, alloc = v->disk_alloc;
	int ret;

	v->map = vdimg_zalloc((size_t)v->nr_blocks * 4);
	v->slot_used = vdimg_zalloc(DIV_ROUND_UP((size_t)v->nr_blocks, 64) * 8);
	if (!v->map || !v->slot_used)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, v->map, (size_t)v->nr_blocks * 4, v->blocks_off);
	if (ret)
		return ret;
	for (i = 0; i < v->nr_blocks; i++) {
		u32 e = le32_to_cpu(((const __le32 *)v->map)[i]);
		const char *bad = NULL;

		v->map[i] = e;
		if (!vdi_allocated(e))
			continue;
		if (e >= v->nr_blocks || v->data_off + ((u64)e + 1) * v->stride > fsize)
			bad = "lies past the end of the file";
		else if (vdi_test_slot(v, e))
			bad = "is used by another block";
		else if (e >= v->disk_alloc && !repair)
			bad = "is beyond the allocated count";
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

static void vdi_close(struct vdimg_image *img)
{
	struct vdi *v = img->priv;

	if (v)
		vdi_free(v);
	img->priv = NULL;
}

/* ---- metadata writes ---- */

static int vdi_write_le32(struct vdi *v, u64 off, u32 val)
{
	__le32 le = cpu_to_le32(val);

	lockdep_assert_held(&v->meta_lock);
	return vdimg_file_write(v->img->file, &le, sizeof(le), off);
}

/*
 * Give the image a new modification UUID before its first change after open (VirtualBox does the
 * same, so that differencing children can tell their parent was modified). Sleeps: with @nowait it
 * answers -EAGAIN instead when the UUID is still to be written.
 */
static int vdi_touch(struct vdi *v, bool nowait)
{
	bool done;
	u8 uuid[16];
	int ret = 0;

	if (nowait) {
		if (!vdimg_mutex_trylock(&v->map_lock))
			return -EAGAIN;
	} else {
		vdimg_mutex_lock(&v->map_lock);
	}
	done = v->modified;
	vdimg_mutex_unlock(&v->map_lock);
	if (done)
		return 0;
	if (nowait)
		return -EAGAIN;

	vdimg_mutex_lock(&v->meta_lock);
	if (!v->modified) {
		vdi_new_uuid(uuid);
		ret = vdimg_file_write(v->img->file, uuid, sizeof(uuid), v->modify_field);
		if (!ret) {
			vdimg_mutex_lock(&v->map_lock);
			memcpy(v->uuid_modify, uuid, sizeof(uuid));
			v->modified = true;
			vdimg_mutex_unlock(&v->map_lock);
			v->img->flags |= VDIMG_IMG_DIRTY;
		}
	}
	vdimg_mutex_unlock(&v->meta_lock);
	return ret;
}

/* A free slot for a new block: the lowest hole, else the next one at the end. */
static int vdi_reserve_slot(struct vdi *v, u32 *slot)
{
	u32 s;

	lockdep_assert_held(&v->map_lock);
	if (v->nr_holes) {
		for (s = v->hole_hint; s < v->next_slot; s++) {
			if (s % 64 == 0 && v->slot_used[s / 64] == ~0ULL) {
				s += 63;
				continue;
			}
			if (!vdi_test_slot(v, s)) {
				vdi_set_slot(v, s);
				v->nr_holes--;
				v->hole_hint = s + 1;
				*slot = s;
				return 0;
			}
		}
		if (WARN_ON_ONCE(v->nr_holes))	/* the hole count lied */
			v->nr_holes = 0;
	}
	if (v->next_slot >= v->nr_blocks)
		return -ENOSPC;		/* cannot happen: one slot per block at most */
	s = v->next_slot++;
	vdi_set_slot(v, s);
	*slot = s;
	return 0;
}

static void vdi_release_slot(struct vdi *v, u32 s)
{
	lockdep_assert_held(&v->map_lock);
	if (WARN_ON_ONCE(s >= v->next_slot || !vdi_test_slot(v, s)))
		return;
	vdi_clear_slot(v, s);
	v->nr_holes++;
	v->hole_hint = min(v->hole_hint, s);
}

/* ---- map, commit, abort ---- */

static int vdi_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		   struct vdimg_extent *ext)
{
	struct vdi *v = img->priv;
	u64 in, avail;
	u32 blk, e, i, slot;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	length = min(length, img->size - offset);
	if (flags & VDIMG_MAP_WRITE) {
		if (v->read_only)
			return -EROFS;
		if (v->repairs)
			return -EUCLEAN;	/* opened for repair: check --repair first */
		ret = vdi_touch(v, flags & VDIMG_MAP_NOWAIT);
		if (ret)
			return ret;
	}
	if (flags & VDIMG_MAP_NOWAIT) {
		if (!vdimg_mutex_trylock(&v->map_lock))
			return -EAGAIN;
	} else {
		vdimg_mutex_lock(&v->map_lock);
	}

	blk = offset >> v->block_shift;
	in = offset & (v->block_size - 1);
	avail = v->block_size - in;
	e = v->map[blk];
	ext->offset = offset;
	ext->flags = 0;
	ext->file = NULL;
	ext->file_offset = 0;
	ext->fill_offset = 0;
	ext->fill_length = 0;
	ext->cookie[0] = 0;
	ext->cookie[1] = 0;
	ret = 0;
	if (vdi_allocated(e)) {
		/* slots that follow each other in the file make one extent */
		if (!v->block_extra)
			for (i = blk + 1; avail < length && i < v->nr_blocks &&
			     v->map[i] == e + (i - blk); i++)
				avail += v->block_size;
		ext->type = VDIMG_EXT_DATA;
		ext->file = img->file;
		ext->file_offset = vdi_slot_offset(v, e) + in;
	} else if (!(flags & VDIMG_MAP_WRITE)) {
		for (i = blk + 1; avail < length && i < v->nr_blocks && v->map[i] == e; i++)
			avail += v->block_size;
		ext->type = e == VDI_BLOCK_ZERO ? VDIMG_EXT_ZERO : VDIMG_EXT_UNALLOCATED;
	} else {
		ret = vdi_reserve_slot(v, &slot);
		if (ret)
			goto out;
		ext->type = VDIMG_EXT_DATA;
		ext->flags = VDIMG_EXT_NEW;
		/* a ZERO block must stay zero around the write; FREE takes what is below */
		if (e == VDI_BLOCK_ZERO)
			ext->flags |= VDIMG_EXT_FILL_ZERO;
		ext->file = img->file;
		ext->file_offset = vdi_slot_offset(v, slot) + in;
		ext->fill_offset = (u64)blk << v->block_shift;
		ext->fill_length = min_t(u64, v->block_size, img->size - ext->fill_offset);
		ext->cookie[0] = blk;
		ext->cookie[1] = slot;
	}
	ext->length = min(length, avail);
out:
	vdimg_mutex_unlock(&v->map_lock);
	return ret;
}

/* Is @ext a NEW extent this image handed out? Sets the block and slot. */
static bool vdi_new_extent(struct vdi *v, const struct vdimg_extent *ext, u32 *blk, u32 *slot)
{
	if (!(ext->flags & VDIMG_EXT_NEW) || ext->cookie[0] >= v->nr_blocks ||
	    ext->cookie[1] >= v->nr_blocks)
		return false;
	*blk = ext->cookie[0];
	*slot = ext->cookie[1];
	return true;
}

static int vdi_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	static const u8 zeros[4096];
	struct vdi *v = img->priv;
	u32 blk, slot;
	u64 valid;
	bool ok;
	int ret = 0;

	if (WARN_ON_ONCE(!vdi_new_extent(v, ext, &blk, &slot)))
		return -EINVAL;
	vdimg_mutex_lock(&v->meta_lock);
	vdimg_mutex_lock(&v->map_lock);
	ok = slot < v->next_slot && vdi_test_slot(v, slot) && !vdi_allocated(v->map[blk]);
	vdimg_mutex_unlock(&v->map_lock);
	if (WARN_ON_ONCE(!ok)) {
		ret = -EINVAL;
		goto out;
	}

	/* the last block may be longer than the disk: the fill stopped at its end, pad the slot */
	valid = img->size - ((u64)blk << v->block_shift);
	while (valid < v->block_size) {
		u32 n = min_t(u64, sizeof(zeros), v->block_size - valid);

		ret = vdimg_file_write(img->file, zeros, n, vdi_slot_offset(v, slot) + valid);
		if (ret)
			goto out;
		valid += n;
	}
	/* the slot inside the allocated area first: a crash then leaks it, nothing worse */
	if (slot >= v->disk_alloc) {
		ret = vdi_write_le32(v, v->alloc_field, slot + 1);
		if (ret)
			goto out;
		v->disk_alloc = slot + 1;
	}
	ret = vdi_write_le32(v, v->blocks_off + (u64)blk * 4, slot);
	/*
	 * Even when that write failed the entry may have reached the disk: keep the slot referenced
	 * in memory so that it is never handed to another block (abort() then leaves it alone).
	 */
	vdimg_mutex_lock(&v->map_lock);
	v->map[blk] = slot;
	vdimg_mutex_unlock(&v->map_lock);
	img->flags |= VDIMG_IMG_DIRTY;
out:
	vdimg_mutex_unlock(&v->meta_lock);
	return ret;
}

static void vdi_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct vdi *v = img->priv;
	u32 blk, slot;

	if (!vdi_new_extent(v, ext, &blk, &slot))
		return;
	vdimg_mutex_lock(&v->map_lock);
	if (slot < v->next_slot && vdi_test_slot(v, slot) && v->map[blk] != slot)
		vdi_release_slot(v, slot);
	vdimg_mutex_unlock(&v->map_lock);
}

/* ---- discard ---- */

static u32 vdi_entry(struct vdi *v, u32 blk)
{
	u32 e;

	vdimg_mutex_lock(&v->map_lock);
	e = v->map[blk];
	vdimg_mutex_unlock(&v->map_lock);
	return e;
}

/* Unmap one whole block: ZERO in a differencing image (hides the parent), FREE in a base. */
/*
 * Make a whole block read as zeros. Online (@release false) an allocated block keeps its slot and
 * only has its data deallocated in the file: freeing the slot would leave the header's allocated
 * count wrong for qemu-img check until a compact, and a reused slot could receive a write while a
 * read of the old block is still in flight. Offline (compact, @release true) the slot is given back.
 */
static int vdi_unmap_block(struct vdi *v, u32 blk, bool release)
{
	u32 want = v->diff ? VDI_BLOCK_ZERO : VDI_BLOCK_FREE;
	u32 e = vdi_entry(v, blk);
	int ret;

	lockdep_assert_held(&v->meta_lock);
	if (vdi_allocated(e) && !release) {
		v->img->flags |= VDIMG_IMG_DIRTY;
		return vdimg_file_zero(v->img->file, vdi_slot_offset(v, e), v->block_size);
	}
	if (e == want || (!v->diff && e == VDI_BLOCK_ZERO))
		return 0;
	ret = vdi_write_le32(v, v->blocks_off + (u64)blk * 4, want);
	if (ret)
		return ret;
	vdimg_mutex_lock(&v->map_lock);
	v->map[blk] = want;
	vdimg_mutex_unlock(&v->map_lock);
	v->img->flags |= VDIMG_IMG_DIRTY;
	if (!vdi_allocated(e))
		return 0;
	/* unreferenced now: give the space back to the file system, then reuse the slot */
	ret = vdimg_file_punch(v->img->file, vdi_slot_offset(v, e) - v->block_extra, v->stride);
	if (ret && ret != -EOPNOTSUPP)
		vdimg_warn(v->img, "cannot deallocate slot %u of the file (error %d)", e, ret);
	vdimg_mutex_lock(&v->map_lock);
	vdi_release_slot(v, e);
	vdimg_mutex_unlock(&v->map_lock);
	return 0;
}

static int vdi_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	struct vdi *v = img->priv;
	u64 off, end;
	int ret;

	if (v->read_only)
		return -EROFS;
	if (v->repairs)
		return -EUCLEAN;
	if (flags & VDIMG_DISCARD_NOUNMAP)
		return -EOPNOTSUPP;	/* the driver writes the zeros */
	if (flags & ~VDIMG_DISCARD_ZEROES)
		return -EINVAL;
	if (offset > img->size || length > img->size - offset)
		return -EINVAL;
	if (!length)
		return 0;
	end = offset + length;

	/*
	 * A partial block that is FREE in a differencing image shows the parent: making it read
	 * zeros needs a copy from the parent, which only the write path can do.
	 */
	if (v->diff && (flags & VDIMG_DISCARD_ZEROES)) {
		u64 bs = v->block_size, first = offset & ~(bs - 1);
		u64 last = (end - 1) & ~(bs - 1);

		if (offset != first && vdi_entry(v, first >> v->block_shift) == VDI_BLOCK_FREE)
			return -EOPNOTSUPP;
		if (end != min(last + bs, img->size) &&
		    vdi_entry(v, last >> v->block_shift) == VDI_BLOCK_FREE)
			return -EOPNOTSUPP;
	}
	ret = vdi_touch(v, false);
	if (ret)
		return ret;

	vdimg_mutex_lock(&v->meta_lock);
	for (off = offset; off < end; ) {
		u32 blk = off >> v->block_shift;
		u64 bstart = (u64)blk << v->block_shift;
		u64 bend = min(bstart + v->block_size, img->size);
		u64 n = min(end, bend) - off;
		u32 e = vdi_entry(v, blk);

		if (off == bstart && n == bend - bstart && v->type != VDI_TYPE_FIXED) {
			ret = vdi_unmap_block(v, blk, false);
		} else if (vdi_allocated(e)) {
			/* partial block, or a fixed image (which stays preallocated): zero in place */
			u64 where = vdi_slot_offset(v, e) + (off - bstart);

			if (v->type == VDI_TYPE_FIXED)
				ret = vdimg_file_zero_range(img->file, where, n);
			else
				ret = vdimg_file_zero(img->file, where, n);
			img->flags |= VDIMG_IMG_DIRTY;
		}
		if (ret)
			break;
		off += n;
	}
	vdimg_mutex_unlock(&v->meta_lock);
	return ret;
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

#ifndef __KERNEL__
#include <stdio.h>

/* ---- userspace only: create, check, compact, describe ---- */

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
 * Offline: optionally unmap blocks whose data is all zeros, move the last slots into the holes,
 * lower the allocated count and truncate the file. Every step leaves a valid image.
 */
static int vdi_pack(struct vdi *v, bool zeros, u64 *moved, u64 *unmapped)
{
	struct vdimg_image *img = v->img;
	u32 buflen = min_t(u32, v->block_size, 1U << 20);
	u32 *owner = NULL, blk, lo, hi, used = 0;
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
	if (!ret && vdimg_file_size(img->file) > v->data_off + (u64)used * v->stride)
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
#endif /* !__KERNEL__ */

const struct vdimg_format vdimg_vdi_format = {
	.name = "vdi",
	.id = VDIMG_FMT_VDI,
	.caps = VDIMG_CAP_SAME_SIZE_PARENT,
	.probe = vdi_probe,
	.open = vdi_open,
	.close = vdi_close,
	.map = vdi_map,
	.commit = vdi_commit,
	.abort = vdi_abort,
	.discard = vdi_discard,
	.verify_parent = vdi_verify_parent,
};

#ifndef __KERNEL__
const struct vdimg_tool_ops vdimg_vdi_tool_ops = {
	.id = VDIMG_FMT_VDI,
	.create = vdi_create,
	.check = vdi_check,
	.parent_ref = vdi_parent_ref,
	.set_parent = vdi_set_parent,
	.describe = vdi_describe,
	.compact = vdi_compact,
};
#endif
