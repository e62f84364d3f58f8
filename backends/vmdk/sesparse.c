// SPDX-License-Identifier: GPL-2.0
/*
 * seSparse extents (ESXi 6.5+ snapshots). VMware does not document the layout; this follows what
 * qemu's reader accepts, with the same strict checks. Sector 0 holds the constant header (struct
 * vmdk_se_header: every offset and size in sectors), the volatile header says whether the journal
 * must be replayed (refused: the tables may be stale). The grain directory is an array of
 * little-endian u64: 0 for no grain table, else 0x10000000 in the top 32 bits and the table's index
 * in the grain-table area (4096 u64 entries, 32 KiB each). A grain table entry's top nibble is its
 * type: 0 unallocated (the whole entry 0), 1 unmapped or 2 zeroed (both read as zeros, never the
 * parent's), 3 allocated: the grain's index in the grain area is bits 48-59 as its low 12 bits and
 * bits 0-47 above them. Grains are 4 KiB. Kernel-shared: only include/vdimg/platform.h services
 * here.
 *
 * Writing allocates in place, never through the journal: a new grain table takes the next free
 * index of the grain-table area, a new grain the next free index of the grain area (both past
 * everything the tables use, so nothing is handed out twice and a crash can only leak). Durability
 * is ordered as for hosted sparse extents: a new table is zeroed on disk when it is allocated; the
 * driver writes a new grain before ->commit() records it in the cached table; a flush syncs, writes
 * the table, syncs again when the directory changed and only then writes the directory entries.
 * The volatile header's free-table number is kept past every table handed out, and the journal is
 * never used, so replayJournal stays 0 and every crash cut is a valid image. Extents with an
 * allocation bitmap or back-map (what ESXi keeps for space reclamation, not public) are read-only:
 * writing grains without updating them would mislead ESXi.
 *
 * Locking: @se->lock protects the directory, the one cached table and the allocation cursors and is
 * held across metadata I/O; map() with VDIMG_MAP_NOWAIT only tries it and answers -EAGAIN when it
 * would have to read, allocate or write.
 */
#include "vmdk.h"

#define SE_CONST_MAGIC		0xcafebabeULL
#define SE_VOLATILE_MAGIC	0xcafecafeULL
#define SE_VERSION		0x0000000200000001ULL
#define SE_GRAIN_SECTORS	8ULL
#define SE_GT_SECTORS		64ULL
#define SE_GTES			(SE_GT_SECTORS * VMDK_SECTOR / 8)	/* 4096 */
#define SE_GT_BYTES		(SE_GT_SECTORS * VMDK_SECTOR)
#define SE_MAX_GTS		BIT(22)	/* 32 MiB of GD in memory: 64 TiB */

#define SE_GDE_ALLOCATED	0x1000000000000000ULL
#define SE_GTE_TYPE(e)		((e) >> 60)
#define SE_GTE_UNALLOC		0
#define SE_GTE_UNMAPPED		1
#define SE_GTE_ZERO		2
#define SE_GTE_ALLOC		3
#define SE_NEW_MAGIC		(0x5345ULL << 48)	/* cookie[1] of a NEW extent */

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

/* the byte offset of the grain table a directory entry (cpu order) names */
static u64 se_gt_pos(const struct vmdk_se *se, u64 gde)
{
	return (se->gts_off + (gde & 0xffffffffULL) * SE_GT_SECTORS) * VMDK_SECTOR;
}

/* the grain index of an allocated entry */
static u64 se_grain_idx(u64 e)
{
	return ((e >> 48) & 0xfff) | ((e & 0xffffffffffffULL) << 12);
}

static u64 se_alloc_entry(u64 idx)
{
	return ((u64)SE_GTE_ALLOC << 60) | ((idx & 0xfff) << 48) | (idx >> 12);
}

/* is grain index @idx inside the grain area (and the file)? lock held */
static bool se_grain_ok(const struct vmdk_se *se, u64 idx)
{
	return idx < se->grains_size / SE_GRAIN_SECTORS &&
	       se->grains_off + (idx + 1) * SE_GRAIN_SECTORS <= se->file_sec;
}

/* is [@off, @off + @len) (sectors) below @lim, without overflow? */
static bool se_below(u64 off, u64 len, u64 lim)
{
	return off <= lim && len <= lim - off;
}

/*
 * A writable open: the areas written do not overlap each other or the headers and directory, the
 * extent has no bitmap or back-map, and the allocation cursors go past every table and grain in use
 * (and past the volatile header's free-table number). Uses se->gt; lock not needed yet.
 */
static int se_open_write(struct vmdk_se *se, const struct vmdk_se_header *h,
			 const struct vmdk_se_volatile *vh, u64 gd_sectors)
{
	struct vdimg_image *img = se->img;
	u64 meta = max(se->volatile_off + 1, se->gd_off + gd_sectors), jo, js, free_gt;
	u32 i, k;
	int ret;

	if (h->bitmap_size || h->backmap_size) {
		vdimg_err(img, "seSparse extents with an allocation bitmap or back-map are read-only (their layout is not public)");
		return -EOPNOTSUPP;
	}
	jo = le64_to_cpu(h->journal_hdr_off);
	js = le64_to_cpu(h->journal_hdr_size);
	if (js && se_below(jo, js, VMDK_MAX_CAPACITY))
		meta = max(meta, jo + js);
	jo = le64_to_cpu(h->journal_off);
	js = le64_to_cpu(h->journal_size);
	if (js && se_below(jo, js, VMDK_MAX_CAPACITY))
		meta = max(meta, jo + js);
	if (!se->gts_size || !se->grains_size || se->gts_off < meta || se->grains_off < meta ||
	    (se->gts_off < se->grains_off + se->grains_size &&
	     se->grains_off < se->gts_off + se->gts_size))
		return vdimg_corrupt(img,
				     "the seSparse grain-table and grain areas overlap each other or the headers");
	free_gt = le64_to_cpu(vh->free_gt);
	se->next_gt = min(free_gt, se->gts_size / SE_GT_SECTORS);
	for (i = 0; i < se->nr_gts; i++) {
		u64 gde = le64_to_cpu(se->gd[i]);

		if (!gde)
			continue;
		se->next_gt = max(se->next_gt, (gde & 0xffffffffULL) + 1);
		ret = vdimg_file_read(se->file, se->gt, SE_GT_BYTES, se_gt_pos(se, gde));
		if (ret)
			return ret;
		for (k = 0; k < SE_GTES; k++) {
			u64 e = le64_to_cpu(se->gt[k]), idx;

			if (SE_GTE_TYPE(e) != SE_GTE_ALLOC)
				continue;
			idx = se_grain_idx(e);
			if (!se_grain_ok(se, idx))
				return vdimg_corrupt(img,
						     "seSparse grain table %u entry %u: grain %llu is outside the grain area",
						     i, k, (unsigned long long)idx);
			se->next_grain = max(se->next_grain, idx + 1);
		}
	}
	se->zbuf = vdimg_zalloc(SE_GT_BYTES);
	if (!se->zbuf)
		return -ENOMEM;
	se->writable = true;
	return 0;
}

int vmdk_se_open(struct vmdk_se *se, struct vmdk *vm, struct vdimg_file *file, bool writable)
{
	struct vdimg_image *img = vm->img;
	u64 fsize = vdimg_file_size(file), fsec = fsize / VMDK_SECTOR, cap, gd, gds, need;
	struct vmdk_se_volatile *vh = NULL;
	struct vmdk_se_header *h;
	u32 i;
	int ret;

	BUILD_BUG_ON(sizeof(struct vmdk_se_header) != VMDK_SECTOR);
	BUILD_BUG_ON(sizeof(struct vmdk_se_volatile) != VMDK_SECTOR);
	se->vm = vm;
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
		ret = vdimg_corrupt(img,
				    "the seSparse grain directory (sector %llu, %llu sectors) is outside the file or too small",
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
	se->volatile_off = le64_to_cpu(h->volatile_off);
	se->gd_off = gd;
	ret = vdimg_file_read(file, vh, sizeof(*vh), se->volatile_off * VMDK_SECTOR);
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
			ret = vdimg_corrupt(img,
					    "seSparse grain directory entry %u (%#llx) is invalid",
					    i, (unsigned long long)e);
			goto out;
		}
	}
	if (writable && vdimg_file_fixed_size(file)) {
		/* it allocates at the end of the file, which on a device is the wrong place */
		vdimg_err(img, "a seSparse extent on a block device is read-only");
		ret = -EOPNOTSUPP;
		goto out;
	}
	ret = writable ? se_open_write(se, h, vh, need) : 0;
out:
	vdimg_free(h);
	vdimg_free(vh);
	return ret;
}

/*
 * The headers of a new, empty seSparse extent of @cap sectors (the tool's create): volatile header
 * at sector 1, journal header and journal (zeros) at 2 and 3..10, the directory at 16, the table
 * area after it with room for every table, the grain area after that with room for every grain.
 * Nothing is allocated; the file needs @*file_sec sectors (up to the grain area).
 */
int vmdk_se_new(u64 cap, void *hdr, void *vol, u64 *file_sec)
{
	struct vmdk_se_header *h = hdr;
	struct vmdk_se_volatile *vh = vol;
	u64 grains = DIV_ROUND_UP(cap, SE_GRAIN_SECTORS), gts = DIV_ROUND_UP(grains, SE_GTES);
	u64 gd_size = DIV_ROUND_UP(gts * 8, VMDK_SECTOR), gts_off = ALIGN(16 + gd_size, 8ULL);

	if (!cap || cap > VMDK_MAX_CAPACITY || gts > SE_MAX_GTS)
		return -EFBIG;
	memset(h, 0, sizeof(*h));
	memset(vh, 0, sizeof(*vh));
	h->magic = cpu_to_le64(SE_CONST_MAGIC);
	h->version = cpu_to_le64(SE_VERSION);
	h->capacity = cpu_to_le64(cap);
	h->grain_size = cpu_to_le64(SE_GRAIN_SECTORS);
	h->gt_size = cpu_to_le64(SE_GT_SECTORS);
	h->volatile_off = cpu_to_le64(1);
	h->volatile_size = cpu_to_le64(1);
	h->journal_hdr_off = cpu_to_le64(2);
	h->journal_hdr_size = cpu_to_le64(1);
	h->journal_off = cpu_to_le64(3);
	h->journal_size = cpu_to_le64(8);
	h->gd_off = cpu_to_le64(16);
	h->gd_size = cpu_to_le64(gd_size);
	h->gts_off = cpu_to_le64(gts_off);
	h->gts_size = cpu_to_le64(gts * SE_GT_SECTORS);
	h->grains_off = cpu_to_le64(gts_off + gts * SE_GT_SECTORS);
	h->grains_size = cpu_to_le64(grains * SE_GRAIN_SECTORS);
	vh->magic = cpu_to_le64(SE_VOLATILE_MAGIC);
	vh->next_txn = cpu_to_le64(1);
	*file_sec = gts_off + gts * SE_GT_SECTORS;
	return 0;
}

u64 vmdk_se_bytes(struct vmdk_se *se)
{
	u64 n;

	vdimg_mutex_lock(&se->lock);
	n = (u64)se->nr_gts * 8 + SE_GT_BYTES + (se->zbuf ? SE_GT_BYTES : 0);
	vdimg_mutex_unlock(&se->lock);
	return n;
}

void vmdk_se_free(struct vmdk_se *se)
{
	vdimg_free(se->gd);
	vdimg_free(se->gt);
	vdimg_free(se->zbuf);
	se->gd = NULL;
	se->gt = NULL;
	se->zbuf = NULL;
	vdimg_mutex_destroy(&se->lock);
}

/* write the cached table back, after the grains it points at are durable; lock held */
static int se_gt_writeback(struct vmdk_se *se)
{
	int ret;

	if (!se->gt_dirty)
		return 0;
	ret = vdimg_file_sync(se->file);
	if (!ret)
		ret = vdimg_file_write(se->file, se->gt, SE_GT_BYTES,
				       se_gt_pos(se, le64_to_cpu(se->gd[se->cached])));
	if (!ret)
		se->gt_dirty = false;
	return ret;
}

/* table @gi (linked) into the cache; lock held. -EAGAIN with @nowait on a miss */
static int se_gt_load(struct vmdk_se *se, u32 gi, bool nowait)
{
	int ret;

	if (se->cached == gi)
		return 0;
	if (nowait)
		return -EAGAIN;
	ret = se_gt_writeback(se);
	if (ret)
		return ret;
	se->cached = U32_MAX;
	ret = vdimg_file_read(se->file, se->gt, SE_GT_BYTES,
			      se_gt_pos(se, le64_to_cpu(se->gd[gi])));
	if (ret)
		return ret;
	se->cached = gi;
	return 0;
}

/* the GTE of grain @g; lock held. -EAGAIN with @nowait when its table is not cached */
static int se_gte(struct vmdk_se *se, u64 g, bool nowait, u64 *out)
{
	u32 gi = div_u64(g, SE_GTES), ti = g - (u64)gi * SE_GTES;
	int ret;

	*out = 0;
	if (!se->gd[gi])
		return 0;
	ret = se_gt_load(se, gi, nowait);
	if (ret)
		return ret;
	*out = le64_to_cpu(se->gt[ti]);
	return 0;
}

static void se_gd_dirty(struct vmdk_se *se, u32 gi)
{
	if (se->gd_dirty_lo == se->gd_dirty_hi) {
		se->gd_dirty_lo = gi;
		se->gd_dirty_hi = gi + 1;
	} else {
		se->gd_dirty_lo = min(se->gd_dirty_lo, gi);
		se->gd_dirty_hi = max(se->gd_dirty_hi, gi + 1);
	}
}

/*
 * A new, empty table for directory entry @gi, zeroed on disk and cached; the volatile header's
 * free-table number moves past it first. The directory entry is written by the next flush. Lock
 * held.
 */
static int se_new_gt(struct vmdk_se *se, u32 gi)
{
	u64 idx = se->next_gt, pos;
	__le64 free_gt;
	int ret;

	if (idx >= se->gts_size / SE_GT_SECTORS || idx > 0xffffffffULL) {
		vdimg_err(se->img, "the seSparse grain-table area is full");
		return -ENOSPC;
	}
	ret = se_gt_writeback(se);
	if (ret)
		return ret;
	free_gt = cpu_to_le64(idx + 1);
	ret = vdimg_file_write(se->file, &free_gt, sizeof(free_gt),
			       se->volatile_off * VMDK_SECTOR +
			       offsetof(struct vmdk_se_volatile, free_gt));
	if (ret)
		return ret;
	se->next_gt = idx + 1;
	pos = (se->gts_off + idx * SE_GT_SECTORS) * VMDK_SECTOR;
	ret = vdimg_file_write(se->file, se->zbuf, SE_GT_BYTES, pos);
	if (ret)
		return ret;
	se->file_sec = max(se->file_sec, pos / VMDK_SECTOR + SE_GT_SECTORS);
	se->gd[gi] = cpu_to_le64(SE_GDE_ALLOCATED | idx);
	se_gd_dirty(se, gi);
	memset(se->gt, 0, SE_GT_BYTES);
	se->cached = gi;
	se->gt_dirty = false;
	return 0;
}

/* a new CID before the first change after open; lock held */
static int se_touch(struct vmdk_se *se, bool nowait)
{
	int ret;

	if (se->touched)
		return 0;
	ret = vmdk_renew_cid(se->vm, nowait);
	if (!ret)
		se->touched = true;
	return ret;
}

/* @ext for grain @g whose entry is @e, @in bytes into it: what reads see; lock held */
static int se_decode(struct vmdk_se *se, u64 g, u64 e, u64 in, struct vdimg_extent *ext)
{
	u64 idx;

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
		idx = se_grain_idx(e);
		if (!se_grain_ok(se, idx))
			return vdimg_corrupt(se->img,
					     "seSparse grain %llu: grain %llu is outside the grain area",
					     (unsigned long long)g, (unsigned long long)idx);
		ext->type = VDIMG_EXT_DATA;
		ext->file = se->file;
		ext->file_offset = (se->grains_off + idx * SE_GRAIN_SECTORS) * VMDK_SECTOR + in;
		return 0;
	}
	return vdimg_corrupt(se->img, "seSparse grain %llu: entry type %llu is unknown",
			     (unsigned long long)g, (unsigned long long)SE_GTE_TYPE(e));
}

/* a NEW grain for grain @g (entry @e, not allocated) to fill and commit; lock held */
static int se_map_new(struct vmdk_se *se, u64 g, u64 e, u64 offset, u64 length,
		      struct vdimg_extent *ext)
{
	const u64 gbytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
	u32 gi = div_u64(g, SE_GTES);
	u64 gstart = g * gbytes, idx, host;
	int ret;

	if (!se->gd[gi]) {
		ret = se_new_gt(se, gi);
		if (ret)
			return ret;
	}
	idx = se->next_grain;
	if (idx >= se->grains_size / SE_GRAIN_SECTORS) {
		vdimg_err(se->img, "the seSparse grain area is full");
		return -ENOSPC;
	}
	se->next_grain = idx + 1;
	host = (se->grains_off + idx * SE_GRAIN_SECTORS) * VMDK_SECTOR;
	se->file_sec = max(se->file_sec, host / VMDK_SECTOR + SE_GRAIN_SECTORS);
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ext->type = VDIMG_EXT_DATA;
	ext->flags = VDIMG_EXT_NEW | (SE_GTE_TYPE(e) != SE_GTE_UNALLOC ? VDIMG_EXT_FILL_ZERO : 0);
	ext->length = min(offset + length, gstart + gbytes) - offset;
	ext->file = se->file;
	ext->file_offset = host + (offset - gstart);
	ext->fill_offset = gstart;
	ext->fill_length = min(gbytes, se->size - gstart);
	ext->cookie[0] = idx | (SE_GTE_TYPE(e) << 60);
	ext->cookie[1] = SE_NEW_MAGIC | g;
	vdimg_ext_hole_check(ext, host);
	vdimg_ext_page_check(ext, host, gbytes);
	return 0;
}

int vmdk_se_map(struct vmdk_se *se, u64 offset, u64 length, unsigned int flags,
		struct vdimg_extent *ext)
{
	const u64 gbytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
	bool nowait = flags & VDIMG_MAP_NOWAIT, write = flags & VDIMG_MAP_WRITE;
	u64 g = div_u64(offset, gbytes), in = offset - g * gbytes, e;
	int ret;

	if (offset >= se->size || !length)
		return -EINVAL;
	if (write && !se->writable)
		return -EROFS;
	length = min(length, se->size - offset);
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ext->length = min(length, gbytes - in);
	if (!vdimg_mutex_lock_nowait(&se->lock, nowait))
		return -EAGAIN;
	ret = write ? se_touch(se, nowait) : 0;
	if (!ret)
		ret = se_gte(se, g, nowait, &e);
	if (!ret)
		ret = se_decode(se, g, e, in, ext);
	if (!ret && write && ext->type != VDIMG_EXT_DATA)
		ret = nowait ? -EAGAIN : se_map_new(se, g, e, offset, length, ext);
	vdimg_mutex_unlock(&se->lock);
	return ret;
}

int vmdk_se_commit(struct vmdk_se *se, const struct vdimg_extent *ext)
{
	const u64 gbytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
	u64 g = ext->cookie[1] & ~(0xffffULL << 48), idx = ext->cookie[0] & ~(0xfULL << 60);
	u64 was = ext->cookie[0] >> 60, gstart = g * gbytes, host, e;
	u32 gi, ti;
	int ret;

	if (!se->writable || !(ext->flags & VDIMG_EXT_NEW) ||
	    (ext->cookie[1] >> 48) != (SE_NEW_MAGIC >> 48) || gstart >= se->size ||
	    idx >= se->grains_size / SE_GRAIN_SECTORS || was > SE_GTE_ZERO)
		return -EINVAL;
	gi = div_u64(g, SE_GTES);
	ti = g - (u64)gi * SE_GTES;
	host = (se->grains_off + idx * SE_GRAIN_SECTORS) * VMDK_SECTOR;
	vdimg_mutex_lock(&se->lock);
	ret = -EIO;
	if (!se->gd[gi] || idx >= se->next_grain)
		goto out;	/* map linked the table and handed out the grain */
	ret = se_gt_load(se, gi, false);
	if (ret)
		goto out;
	e = le64_to_cpu(se->gt[ti]);
	ret = -EIO;
	if (SE_GTE_TYPE(e) != was || SE_GTE_TYPE(e) == SE_GTE_ALLOC || (!was && e))
		goto out;	/* someone else changed the entry: the range lock failed */
	/* the last grain may reach past the disk: the fill stopped there, pad the grain */
	if (se->size - gstart < gbytes) {
		ret = vdimg_file_write(se->file, se->zbuf, gbytes - (se->size - gstart),
				       host + (se->size - gstart));
		if (ret)
			goto out;
	}
	se->gt[ti] = cpu_to_le64(se_alloc_entry(idx));
	se->gt_dirty = true;
	se->img->flags |= VDIMG_IMG_DIRTY;
	ret = 0;
out:
	vdimg_mutex_unlock(&se->lock);
	return ret;
}

/*
 * Whole grains become zeroed entries (type 2) in a child, unallocated ones (0) in an image without
 * a parent; their old space leaks. Partial grains that hold data are zeroed in the file. A partial
 * grain of a child that shows its parent cannot be expressed: -EOPNOTSUPP, decided before anything
 * changes.
 */
int vmdk_se_discard(struct vmdk_se *se, u64 offset, u64 length, unsigned int flags)
{
	const u64 gbytes = SE_GRAIN_SECTORS * VMDK_SECTOR;
	bool has_parent = se->vm->has_parent;
	u64 end, pos;
	int pass, ret = 0;

	if (!se->writable)
		return -EROFS;
	if (flags & VDIMG_DISCARD_NOUNMAP)
		return -EOPNOTSUPP;
	if (flags & ~VDIMG_DISCARD_ZEROES)
		return -EINVAL;
	if (offset > se->size || length > se->size - offset)
		return -EINVAL;
	if (!length)
		return 0;
	end = offset + length;
	vdimg_mutex_lock(&se->lock);
	/* pass 0 decides, pass 1 changes */
	for (pass = 0; pass < 2 && !ret; pass++) {
		if (pass == 1)
			ret = se_touch(se, false);
		for (pos = offset; pos < end && !ret; ) {
			u64 g = div_u64(pos, gbytes), gstart = g * gbytes, e, t;
			u64 gend = min(gstart + gbytes, se->size), n = min(end, gend) - pos;
			bool whole = pos == gstart && n == gend - gstart;
			u32 gi = div_u64(g, SE_GTES), ti = g - (u64)gi * SE_GTES;
			struct vdimg_extent x;

			ret = se_gte(se, g, false, &e);
			if (!ret)
				ret = se_decode(se, g, e, pos - gstart, &x);
			if (ret)
				break;
			t = SE_GTE_TYPE(e);
			pos += n;
			if (pass == 0) {
				if (t == SE_GTE_UNALLOC && has_parent && !whole)
					ret = -EOPNOTSUPP;
				continue;
			}
			if (!whole) {
				if (t == SE_GTE_ALLOC)
					ret = vdimg_file_zero(se->file, x.file_offset, n);
				continue;
			}
			if (t == SE_GTE_UNMAPPED || t == SE_GTE_ZERO ||
			    (t == SE_GTE_UNALLOC && !has_parent))
				continue;
			if (!se->gd[gi])
				ret = se_new_gt(se, gi);
			if (!ret)
				ret = se_gt_load(se, gi, false);
			if (ret)
				break;
			se->gt[ti] = cpu_to_le64(has_parent ? (u64)SE_GTE_ZERO << 60 : 0);
			se->gt_dirty = true;
			se->img->flags |= VDIMG_IMG_DIRTY;
		}
	}
	vdimg_mutex_unlock(&se->lock);
	return ret;
}

/* the dirty table, then (after a sync) the directory entries that link new tables; lock held */
static int se_flush_locked(struct vmdk_se *se)
{
	u32 lo = se->gd_dirty_lo, hi = se->gd_dirty_hi;
	int ret;

	if (!se->writable || (!se->gt_dirty && lo == hi))
		return 0;
	ret = se_gt_writeback(se);
	if (ret || lo == hi)
		return ret;
	/* new tables are durable before the directory links them */
	ret = vdimg_file_sync(se->file);
	if (!ret)
		ret = vdimg_file_write(se->file, &se->gd[lo], (size_t)(hi - lo) * 8,
				       se->gd_off * VMDK_SECTOR + (u64)lo * 8);
	if (!ret) {
		se->gd_dirty_lo = 0;
		se->gd_dirty_hi = 0;
	}
	return ret;
}

int vmdk_se_flush(struct vmdk_se *se)
{
	int ret;

	if (!se->writable)
		return 0;
	vdimg_mutex_lock(&se->lock);
	ret = se_flush_locked(se);
	vdimg_mutex_unlock(&se->lock);
	if (!ret && se->touched)
		ret = vdimg_file_sync(se->file);
	return ret;
}
