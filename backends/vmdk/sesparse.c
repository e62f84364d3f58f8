// SPDX-License-Identifier: GPL-2.0
/*
 * seSparse extents (ESXi 6.5+ snapshots), read-only. VMware does not document the layout; this
 * follows what qemu's reader accepts, with the same strict checks. Sector 0 holds the constant
 * header (struct vmdk_se_header: every offset and size in sectors), the volatile header says
 * whether the journal must be replayed (refused: the tables may be stale). The grain directory is
 * an array of little-endian u64: 0 for no grain table, else 0x10000000 in the top 32 bits and the
 * table's index in the grain-table area (4096 u64 entries, 32 KiB each). A grain table entry's top
 * nibble is its type: 0 unallocated (the whole entry 0), 1 unmapped or 2 zeroed (both read as
 * zeros, never the parent's), 3 allocated: the grain's index in the grain area is bits 48-59 as
 * its low 12 bits and bits 0-47 above them. Grains are 4 KiB. Kernel-shared: only
 * include/vdimg/platform.h services here.
 */
#include "vmdk.h"

#define SE_CONST_MAGIC		0xcafebabeULL
#define SE_VOLATILE_MAGIC	0xcafecafeULL
#define SE_VERSION		0x0000000200000001ULL
#define SE_GRAIN_SECTORS	8ULL
#define SE_GT_SECTORS		64ULL
#define SE_GTES			(SE_GT_SECTORS * VMDK_SECTOR / 8)	/* 4096 */
#define SE_GT_BYTES		(SE_GT_SECTORS * VMDK_SECTOR)
#define SE_MAX_GTS		(1U << 22)	/* 32 MiB of GD in memory: 64 TiB */

#define SE_GDE_ALLOCATED	0x1000000000000000ULL
#define SE_GTE_TYPE(e)		((e) >> 60)
#define SE_GTE_UNALLOC		0
#define SE_GTE_UNMAPPED		1
#define SE_GTE_ZERO		2
#define SE_GTE_ALLOC		3

struct vmdk_se_header {
	__le64 magic;
	__le64 version;
	__le64 capacity;
	__le64 grain_size;
	__le64 gt_size;
	__le64 flags;
	__le64 reserved[4];
	__le64 volatile_off, volatile_size;
	__le64 journal_hdr_off, journal_hdr_size;
	__le64 journal_off, journal_size;
	__le64 gd_off, gd_size;
	__le64 gts_off, gts_size;
	__le64 bitmap_off, bitmap_size;
	__le64 backmap_off, backmap_size;
	__le64 grains_off, grains_size;
	u8 pad[304];
} __packed;

struct vmdk_se_volatile {
	__le64 magic;
	__le64 free_gt;
	__le64 next_txn;
	__le64 replay_journal;
	u8 pad[480];
} __packed;

/* is [@off, @off + @len) (sectors) inside a file of @fsec sectors? */
static bool se_inside(u64 off, u64 len, u64 fsec)
{
	return off && off <= fsec && len <= fsec - off;
}

static bool se_zero(const u8 *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int vmdk_se_open(struct vmdk_se *se, struct vdimg_image *img, struct vdimg_file *file)
{
	u64 fsize = vdimg_file_size(file), fsec = fsize / VMDK_SECTOR, cap, gd, gds, need;
	struct vmdk_se_volatile *vh = NULL;
	struct vmdk_se_header *h;
	u32 i;
	int ret;

	BUILD_BUG_ON(sizeof(struct vmdk_se_header) != VMDK_SECTOR);
	BUILD_BUG_ON(sizeof(struct vmdk_se_volatile) != VMDK_SECTOR);
	se->img = img;
	se->file = file;
	se->cached = U32_MAX;
	vdimg_mutex_init(&se->lock);
	if (fsize < 2 * VMDK_SECTOR)
		return vdimg_corrupt(img, "the seSparse extent is too short for its headers");
	h = vdimg_zalloc(sizeof(*h));
	vh = vdimg_zalloc(sizeof(*vh));
	if (!h || !vh) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_read(file, h, sizeof(*h), 0);
	if (ret)
		goto out;
	ret = -EOPNOTSUPP;
	if (le64_to_cpu(h->magic) != SE_CONST_MAGIC) {
		ret = vdimg_corrupt(img, "the seSparse header magic is wrong");
		goto out;
	}
	if (le64_to_cpu(h->version) != SE_VERSION) {
		vdimg_err(img, "seSparse version %#llx is not supported",
			  (unsigned long long)le64_to_cpu(h->version));
		goto out;
	}
	if (le64_to_cpu(h->grain_size) != SE_GRAIN_SECTORS ||
	    le64_to_cpu(h->gt_size) != SE_GT_SECTORS) {
		vdimg_err(img, "seSparse grains of %llu sectors, grain tables of %llu: only 8 and 64 are supported",
			  (unsigned long long)le64_to_cpu(h->grain_size),
			  (unsigned long long)le64_to_cpu(h->gt_size));
		goto out;
	}
	if (h->flags || h->reserved[0] || h->reserved[1] || h->reserved[2] || h->reserved[3] ||
	    !se_zero(h->pad, sizeof(h->pad))) {
		vdimg_err(img, "seSparse flags or reserved fields are set: not supported");
		goto out;
	}
	cap = le64_to_cpu(h->capacity);
	if (!cap || cap > VMDK_MAX_CAPACITY) {
		ret = vdimg_corrupt(img, "seSparse capacity of %llu sectors is out of bounds",
				    (unsigned long long)cap);
		goto out;
	}
	se->capacity = cap;
	se->size = cap * VMDK_SECTOR;
	se->nr_gts = DIV_ROUND_UP(cap, SE_GTES * SE_GRAIN_SECTORS);
	if (se->nr_gts > SE_MAX_GTS) {
		vdimg_err(img, "seSparse: %u grain tables are more than supported", se->nr_gts);
		goto out;
	}
	ret = -EFSCORRUPTED;
	if (!se_inside(le64_to_cpu(h->volatile_off), 1, fsec)) {
		ret = vdimg_corrupt(img, "the seSparse volatile header is outside the file");
		goto out;
	}
	gd = le64_to_cpu(h->gd_off);
	gds = le64_to_cpu(h->gd_size);
	need = DIV_ROUND_UP((u64)se->nr_gts * 8, VMDK_SECTOR);
	if (gds < need || !se_inside(gd, need, fsec)) {
		ret = vdimg_corrupt(img, "the seSparse grain directory (sector %llu, %llu sectors) is outside the file or too small",
				    (unsigned long long)gd, (unsigned long long)gds);
		goto out;
	}
	se->gts_off = le64_to_cpu(h->gts_off);
	se->gts_size = le64_to_cpu(h->gts_size);
	se->grains_off = le64_to_cpu(h->grains_off);
	se->grains_size = le64_to_cpu(h->grains_size);
	se->file_sec = fsec;
	if (se->gts_size > VMDK_MAX_CAPACITY || se->grains_size > VMDK_MAX_CAPACITY ||
	    (se->gts_size && !se_inside(se->gts_off, 0, fsec)) ||
	    (se->grains_size && !se_inside(se->grains_off, 0, fsec))) {
		ret = vdimg_corrupt(img, "the seSparse grain table or grain area is out of bounds");
		goto out;
	}
	ret = vdimg_file_read(file, vh, sizeof(*vh), le64_to_cpu(h->volatile_off) * VMDK_SECTOR);
	if (ret)
		goto out;
	if (le64_to_cpu(vh->magic) != SE_VOLATILE_MAGIC) {
		ret = vdimg_corrupt(img, "the seSparse volatile header magic is wrong");
		goto out;
	}
	if (vh->replay_journal) {
		vdimg_err(img, "the seSparse journal must be replayed (the disk was not closed cleanly): not supported");
		ret = -EOPNOTSUPP;
		goto out;
	}
	se->gd = vdimg_zalloc((size_t)se->nr_gts * 8);
	se->gt = vdimg_zalloc(SE_GT_BYTES);
	if (!se->gd || !se->gt) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_read(file, se->gd, (size_t)se->nr_gts * 8, gd * VMDK_SECTOR);
	if (ret)
		goto out;
	for (i = 0; i < se->nr_gts; i++) {
		u64 e = le64_to_cpu(se->gd[i]), idx = e & 0xffffffffULL;

		if (!e)
			continue;
		/* the table lies in the grain-table area, and inside the file */
		if ((e & ~0xffffffffULL) != SE_GDE_ALLOCATED ||
		    (idx + 1) * SE_GT_SECTORS > se->gts_size ||
		    se->gts_off + (idx + 1) * SE_GT_SECTORS > fsec) {
			ret = vdimg_corrupt(img, "seSparse grain directory entry %u (%#llx) is invalid",
					    i, (unsigned long long)e);
			goto out;
		}
	}
	ret = 0;
out:
	vdimg_free(h);
	vdimg_free(vh);
	return ret;
}

void vmdk_se_free(struct vmdk_se *se)
{
	vdimg_free(se->gd);
	vdimg_free(se->gt);
	se->gd = NULL;
	se->gt = NULL;
	vdimg_mutex_destroy(&se->lock);
}

/* the GTE of grain @g; lock held. -EAGAIN with @nowait when its table is not cached */
static int se_gte(struct vmdk_se *se, u64 g, bool nowait, u64 *out)
{
	u32 gi = div_u64(g, SE_GTES), ti = g - (u64)gi * SE_GTES;
	u64 e = le64_to_cpu(se->gd[gi]);
	int ret;

	if (!e) {
		*out = 0;
		return 0;
	}
	if (se->cached != gi) {
		if (nowait)
			return -EAGAIN;
		se->cached = U32_MAX;
		ret = vdimg_file_read(se->file, se->gt, SE_GT_BYTES,
				      (se->gts_off + (e & 0xffffffffULL) * SE_GT_SECTORS) *
				      VMDK_SECTOR);
		if (ret)
			return ret;
		se->cached = gi;
	}
	*out = le64_to_cpu(se->gt[ti]);
	return 0;
}

int vmdk_se_map(struct vmdk_se *se, u64 offset, u64 length, unsigned int flags,
		struct vdimg_extent *ext)
{
	const u64 gbytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
	bool nowait = flags & VDIMG_MAP_NOWAIT;
	u64 g = div_u64(offset, gbytes), in = offset - g * gbytes, e, idx;
	int ret;

	if (offset >= se->size || !length)
		return -EINVAL;
	if (flags & VDIMG_MAP_WRITE)
		return -EROFS;
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ext->length = min(min(length, gbytes - in), se->size - offset);
	if (!vdimg_mutex_lock_nowait(&se->lock, nowait))
		return -EAGAIN;
	ret = se_gte(se, g, nowait, &e);
	vdimg_mutex_unlock(&se->lock);
	if (ret)
		return ret;
	switch (SE_GTE_TYPE(e)) {
	case SE_GTE_UNALLOC:
		if (e)
			return vdimg_corrupt(se->img, "seSparse grain %llu: entry %#llx is invalid",
					     (unsigned long long)g, (unsigned long long)e);
		ext->type = VDIMG_EXT_UNALLOCATED;
		return 0;
	case SE_GTE_UNMAPPED:
	case SE_GTE_ZERO:
		ext->type = VDIMG_EXT_ZERO;
		return 0;
	case SE_GTE_ALLOC:
		idx = ((e >> 48) & 0xfff) | ((e & 0xffffffffffffULL) << 12);
		if (idx >= se->grains_size / SE_GRAIN_SECTORS ||
		    se->grains_off + (idx + 1) * SE_GRAIN_SECTORS > se->file_sec)
			return vdimg_corrupt(se->img, "seSparse grain %llu: grain %llu is outside the grain area",
					     (unsigned long long)g, (unsigned long long)idx);
		ext->type = VDIMG_EXT_DATA;
		ext->file = se->file;
		ext->file_offset = (se->grains_off + idx * SE_GRAIN_SECTORS) * VMDK_SECTOR + in;
		return 0;
	}
	return vdimg_corrupt(se->img, "seSparse grain %llu: entry type %llu is unknown",
			     (unsigned long long)g, (unsigned long long)SE_GTE_TYPE(e));
}
