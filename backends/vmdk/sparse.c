// SPDX-License-Identifier: GPL-2.0
/*
 * Hosted sparse VMDK extents (KDMV): the grain directory held in memory, grain tables read through
 * a bounded LRU cache, map, allocation, commit, discard and flush. Kernel-shared: only
 * include/vdimg/platform.h services here.
 *
 * Allocation appends: a new grain (or a new pair of grain tables) goes at @next_alloc, the end of
 * everything ever handed out, so space is never handed out twice and a crash can only leak. In a
 * COWD extent the header's freeSector is moved past the new space at once (unsynced: the sync that
 * precedes every table write makes it durable before anything links the space). Order of
 * durability, kept by vmdk_flush_locked(): the driver writes a new grain (and its fill) before
 * ->commit() records it in a cached GT; a flush syncs (the data is durable), writes the dirty GTs
 * (both copies, no sync between: a crash can leave either copy newer, which check reports and
 * repairs), syncs again when new GTs must be linked and only then writes the redundant GD entries,
 * syncs, and writes the GD entries. Before the first metadata change after a writable open the
 * descriptor gets a new CID and the header says uncleanShutdown; a clean close clears it (vmdk.c).
 *
 * Locking: @v->lock protects the GD copies, the GT cache and the allocation cursor and is held
 * across metadata I/O; map() with VDIMG_MAP_NOWAIT only tries it and answers -EAGAIN when it would
 * have to read, allocate or write.
 */
#include "vmdk.h"

#define VMDK_CACHE_BYTES	(4U << 20)	/* grain tables kept in memory */
#define VMDK_MIN_SLOTS		16U
#define VMDK_ALLOC_ALIGN	4096U		/* new grains and GTs start on this boundary */
#define VMDK_NEW_MAGIC		(0x564dULL << 48)	/* cookie[1] of a NEW extent */
#define VMDK_MAX_RUN		(2U << 20)	/* grains reserved together: bytes at most */
#define VMDK_ZBUF		(64U << 10)
#define VMDK_MAX_GRAIN_SECTORS	32768U		/* 16 MiB: bounds the fill of a new grain */
#define VMDK_MAX_GTES		4096U
#define VMDK_MAX_GTS		BIT(22)	/* GD entries: 16 MiB per GD copy in memory */

bool vmdk_grain_ok(const struct vmdk_sparse *v, u32 e)
{
	u64 off = (u64)e * VMDK_SECTOR;
	u64 len = v->compressed ? sizeof(struct vmdk_grain_marker) : v->grain_bytes;

	return off >= v->overhead && off + len <= max(v->file_end, v->next_alloc);
}

static bool vmdk_gt_ok(const struct vmdk_sparse *v, u32 e)
{
	u64 off = (u64)e * VMDK_SECTOR;

	return off >= VMDK_SECTOR && off + v->gt_bytes <= max(v->file_end, v->next_alloc);
}

/* ---- the GT cache ---- */

static int vmdk_gt_write(struct vmdk_sparse *v, struct vmdk_gt_slot *s)
{
	struct vdimg_file *f = v->file;
	u32 gi = s->gd_index;
	int ret;

	lockdep_assert_held(&v->lock);
	ret = vdimg_file_write(f, s->gte, v->gt_bytes, (u64)v->gd[gi] * VMDK_SECTOR);
	if (!ret && v->rgd && v->rgd[gi])
		ret = vdimg_file_write(f, s->gte, v->gt_bytes, (u64)v->rgd[gi] * VMDK_SECTOR);
	if (!ret)
		s->dirty = false;
	return ret;
}

int vmdk_gt_get(struct vmdk_sparse *v, u32 gi, bool load, struct vmdk_gt_slot **out)
{
	struct vmdk_gt_slot *s;
	u32 i, k;
	int ret;

	lockdep_assert_held(&v->lock);
	if (v->slot_of[gi]) {
		s = &v->slots[v->slot_of[gi] - 1];
		s->used = ++v->tick;
		*out = s;
		return 0;
	}
	if (!load)
		return -EAGAIN;
	if (!vmdk_gt_ok(v, v->gd[gi]))
		return vdimg_corrupt(v->img, "GD entry %u points at sector %u, outside the file",
				     gi, v->gd[gi]);
	k = 0;
	for (i = 0; i < v->nr_slots; i++) {
		if (v->slots[i].gd_index == U32_MAX) {
			k = i;
			break;
		}
		if (v->slots[i].used < v->slots[k].used)
			k = i;
	}
	s = &v->slots[k];
	if (s->gd_index != U32_MAX) {
		if (s->dirty) {
			/* the grains it points at are durable before it is */
			ret = vdimg_file_sync(v->file);
			if (!ret)
				ret = vmdk_gt_write(v, s);
			if (ret)
				return ret;
		}
		v->slot_of[s->gd_index] = 0;
		s->gd_index = U32_MAX;
	}
	ret = vdimg_file_read(v->file, s->gte, v->gt_bytes, (u64)v->gd[gi] * VMDK_SECTOR);
	if (ret)
		return ret;
	s->gd_index = gi;
	s->dirty = false;
	s->used = ++v->tick;
	v->slot_of[gi] = k + 1;
	*out = s;
	return 0;
}

static inline u32 vmdk_gte(const struct vmdk_gt_slot *s, u32 i)
{
	return le32_to_cpu(s->gte[i]);
}

static void vmdk_gte_set(struct vmdk_gt_slot *s, u32 i, u32 e)
{
	s->gte[i] = cpu_to_le32(e);
	s->dirty = true;
}

/* ---- header and allocation ---- */

int vmdk_set_unclean(struct vmdk_sparse *v, bool unclean)
{
	__le32 w = cpu_to_le32(unclean);
	u8 b = unclean;
	int ret;

	if (v->cowd)
		ret = vdimg_file_write(v->file, &w, sizeof(w), VMDK_COWD_UNCLEAN_OFF);
	else
		ret = vdimg_file_write(v->file, &b, 1,
				       offsetof(struct vmdk_header, unclean_shutdown));
	if (!ret)
		v->unclean_on_disk = unclean;
	return ret;
}

/*
 * Before the first change after a writable open: a new CID for the image (children can tell their
 * parent changed) and uncleanShutdown in this extent. Lock held; -EAGAIN with @nowait when it is
 * still to be done.
 */
static int vmdk_touch(struct vmdk_sparse *v, bool nowait)
{
	int ret;

	lockdep_assert_held(&v->lock);
	ret = vmdk_renew_cid(v->vm, nowait);
	if (ret || v->touched)
		return ret;
	if (nowait)
		return -EAGAIN;
	ret = vmdk_set_unclean(v, true);
	if (ret)
		return ret;
	v->touched = true;
	v->img->flags |= VDIMG_IMG_DIRTY;
	return 0;
}

static int vmdk_alloc(struct vmdk_sparse *v, u64 len, u64 *out)
{
	u64 start = ALIGN(v->next_alloc, (u64)VMDK_ALLOC_ALIGN), end;

	lockdep_assert_held(&v->lock);
	/* GTEs and GD entries are u32 sector numbers */
	if (check_add_overflow(start, len, &end) || end > (u64)U32_MAX * VMDK_SECTOR) {
		vdimg_err(v->img, "the sparse extent is full (2 TiB of file)");
		return -ENOSPC;
	}
	if (v->fixed_file && end > v->file_end)
		return vdimg_device_full(v->img, v->file_end, "grain");
	if (v->cowd) {
		/* freeSector passes the new space before a flush's sync makes anything link it */
		__le32 fs = cpu_to_le32(end / VMDK_SECTOR);
		int ret = vdimg_file_write(v->file, &fs, sizeof(fs),
					   offsetof(struct vmdk_cowd_header, next_free));

		if (ret)
			return ret;
	}
	*out = start;
	v->next_alloc = end;
	return 0;
}

static void vmdk_gd_dirty(struct vmdk_sparse *v, u32 gi)
{
	if (v->gd_dirty_lo == v->gd_dirty_hi) {
		v->gd_dirty_lo = gi;
		v->gd_dirty_hi = gi + 1;
	} else {
		v->gd_dirty_lo = min(v->gd_dirty_lo, gi);
		v->gd_dirty_hi = max(v->gd_dirty_hi, gi + 1);
	}
}

/* A new, empty GT (and its redundant copy) for GD entry @gi, cached. Lock held. */
static int vmdk_new_gt(struct vmdk_sparse *v, u32 gi, struct vmdk_gt_slot **out)
{
	u64 size = ALIGN((u64)v->gt_bytes, (u64)VMDK_SECTOR), off, roff = 0;
	u8 *zeros;
	int ret;

	lockdep_assert_held(&v->lock);
	ret = vmdk_alloc(v, size, &off);
	if (!ret && v->rgd)
		ret = vmdk_alloc(v, size, &roff);
	if (ret)
		return ret;
	zeros = vdimg_zalloc(size);
	if (!zeros)
		return -ENOMEM;
	ret = vdimg_file_write(v->file, zeros, size, off);
	if (!ret && roff)
		ret = vdimg_file_write(v->file, zeros, size, roff);
	vdimg_free(zeros);
	if (ret)
		return ret;
	v->gd[gi] = off / VMDK_SECTOR;
	if (v->rgd)
		v->rgd[gi] = roff / VMDK_SECTOR;
	vmdk_gd_dirty(v, gi);
	return vmdk_gt_get(v, gi, true, out);
}

/* ---- flush ---- */

static bool vmdk_dirty(const struct vmdk_sparse *v)
{
	u32 i;

	if (v->gd_dirty_lo < v->gd_dirty_hi)
		return true;
	for (i = 0; i < v->nr_slots; i++)
		if (v->slots[i].gd_index != U32_MAX && v->slots[i].dirty)
			return true;
	return false;
}

static int vmdk_write_gd(struct vmdk_sparse *v, const u32 *gd, u64 off)
{
	u32 lo = v->gd_dirty_lo, hi = v->gd_dirty_hi, i;
	__le32 *buf;
	int ret;

	buf = vdimg_zalloc((size_t)(hi - lo) * 4);
	if (!buf)
		return -ENOMEM;
	for (i = lo; i < hi; i++)
		buf[i - lo] = cpu_to_le32(gd[i]);
	ret = vdimg_file_write(v->file, buf, (size_t)(hi - lo) * 4, off + (u64)lo * 4);
	vdimg_free(buf);
	return ret;
}

int vmdk_flush_locked(struct vmdk_sparse *v)
{
	u32 i;
	int ret;

	lockdep_assert_held(&v->lock);
	if (!v->writable || !vmdk_dirty(v))
		return 0;
	/* the grains new entries point at are durable first */
	ret = vdimg_file_sync(v->file);
	if (ret)
		return ret;
	for (i = 0; i < v->nr_slots; i++) {
		struct vmdk_gt_slot *s = &v->slots[i];

		if (s->gd_index != U32_MAX && s->dirty) {
			ret = vmdk_gt_write(v, s);
			if (ret)
				return ret;
		}
	}
	if (v->gd_dirty_lo < v->gd_dirty_hi) {
		/*
		 * New GTs are durable before a GD links them, and the redundant GD before the GD: a
		 * crash leaves at worst a table only the redundant GD links, which a check repair
		 * unlinks (the other way round, a GT without a copy, would need a new copy).
		 */
		ret = vdimg_file_sync(v->file);
		if (!ret && v->rgd) {
			ret = vmdk_write_gd(v, v->rgd, v->rgd_off);
			if (!ret)
				ret = vdimg_file_sync(v->file);
		}
		if (!ret)
			ret = vmdk_write_gd(v, v->gd, v->gd_off);
		if (ret)
			return ret;
		v->gd_dirty_lo = 0;
		v->gd_dirty_hi = 0;
	}
	return 0;
}

int vmdk_sparse_flush(struct vmdk_sparse *v)
{
	int ret;

	vdimg_mutex_lock(&v->lock);
	ret = vmdk_flush_locked(v);
	vdimg_mutex_unlock(&v->lock);
	/* the caller syncs the image's own file, not an extent file */
	if (!ret && v->writable && v->file != v->img->file)
		ret = vdimg_file_sync(v->file);
	return ret;
}

/* ---- online grow ---- */

#define VMDK_ZERO_CHUNK		BIT(20)		/* bytes of zeros written at once into new tables */

/*
 * New tables at [@off, @off + @len), space vmdk_alloc() just handed out, read as zeros. In a file
 * that can grow, space past its end is a hole that reads as zeros once a later write (the new
 * directories, which follow the tables) moves the end past it: nothing to write. A block device
 * (or space some other write reached) holds old bytes: zeros are written. Lock held.
 */
static int vmdk_zero_tables(struct vmdk_sparse *v, u64 off, u64 len)
{
	u32 chunk = min_t(u64, len, VMDK_ZERO_CHUNK);
	void *zeros;
	int ret = 0;

	lockdep_assert_held(&v->lock);
	if (!len || (!v->fixed_file && off >= vdimg_file_size(v->file)))
		return 0;
	zeros = vdimg_zalloc(chunk);
	if (!zeros)
		return -ENOMEM;
	while (len && !ret) {
		u32 n = min_t(u64, len, chunk);

		ret = vdimg_file_write(v->file, zeros, n, off);
		off += n;
		len -= n;
	}
	vdimg_free(zeros);
	return ret;
}

/* @n entries of @dir (cpu order) as one sector-padded directory of @size bytes at @off */
static int vmdk_write_dir(struct vmdk_sparse *v, const u32 *dir, u32 n, u64 size, u64 off)
{
	__le32 *buf = vdimg_zalloc(size);
	u32 i;
	int ret;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		buf[i] = cpu_to_le32(dir[i]);
	ret = vdimg_file_write(v->file, buf, size, off);
	vdimg_free(buf);
	return ret;
}

/*
 * A grain directory of @need entries (more than fit in the last sector of the current one) and
 * its redundant copy, written anew at the end of the extent's data: [new redundant GTs][new GTs]
 * [redundant GD][GD], from vmdk_alloc() (so a block device stops with -ENOSPC at its end). The old
 * entries are copied, every new one links a new empty table (and its copy), as qemu and VMware
 * preallocate them. Nothing links the new space until the header says where the directories
 * are, so the order is: the cache flushed (the old GD on disk holds every entry kept in memory),
 * the tables and directories written and synced (among themselves their order does not matter:
 * a crash before the header leaves the old extent intact and the new space leaked), then ONE
 * 512-byte write of the header sector with the new gdOffset and rgdOffset (a sector is written
 * whole or not at all), synced. From that write on, the GD in memory and its offset are the new
 * ones, so a later flush writes entries there; the old directories' space is never used again
 * (before the grain area as qemu and VMware lay it out, which check does not count; a leak in
 * it after an earlier move). The header's capacity is not written here (see vmdk_sparse_grow()).
 * Lock held.
 */
static int vmdk_move_gd(struct vmdk_sparse *v, u32 need)
{
	u64 gt_size = ALIGN((u64)v->gt_bytes, (u64)VMDK_SECTOR);
	u64 gd_size = ALIGN((u64)need * 4, (u64)VMDK_SECTOR);
	u32 old_nr = v->nr_gts, n = need - old_nr, copies = v->rgd ? 2 : 1, i;
	u64 area, gts, rgts, gd_at, rgd_at = 0;
	u32 *gd, *rgd = NULL, *slot_of;
	struct vmdk_header *h = NULL;
	int ret;

	lockdep_assert_held(&v->lock);
	ret = vmdk_flush_locked(v);
	if (ret)
		return ret;
	gd = vdimg_zalloc((size_t)need * 4);
	slot_of = vdimg_zalloc((size_t)need * 4);
	if (v->rgd)
		rgd = vdimg_zalloc((size_t)need * 4);
	h = vdimg_alloc(sizeof(*h));
	if (!gd || !slot_of || (v->rgd && !rgd) || !h) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vmdk_alloc(v, copies * ((u64)n * gt_size + gd_size), &area);
	if (ret)
		goto out;
	rgts = area;
	gts = area + (copies - 1) * (u64)n * gt_size;
	if (v->rgd)
		rgd_at = gts + (u64)n * gt_size;
	gd_at = gts + (u64)n * gt_size + (copies - 1) * gd_size;
	memcpy(gd, v->gd, (size_t)old_nr * 4);
	memcpy(slot_of, v->slot_of, (size_t)old_nr * 4);
	if (rgd)
		memcpy(rgd, v->rgd, (size_t)old_nr * 4);
	for (i = 0; i < n; i++) {
		gd[old_nr + i] = (gts + (u64)i * gt_size) / VMDK_SECTOR;
		if (rgd)
			rgd[old_nr + i] = (rgts + (u64)i * gt_size) / VMDK_SECTOR;
	}
	ret = vmdk_zero_tables(v, area, (u64)copies * n * gt_size);
	if (!ret && rgd)
		ret = vmdk_write_dir(v, rgd, need, gd_size, rgd_at);
	if (!ret)
		ret = vmdk_write_dir(v, gd, need, gd_size, gd_at);
	if (!ret)
		ret = vdimg_file_sync(v->file);
	if (!ret)
		ret = vdimg_file_read(v->file, h, sizeof(*h), 0);
	if (ret)
		goto out;
	if (le32_to_cpu(h->magic) != VMDK_MAGIC) {
		ret = vdimg_corrupt(v->img, "the sparse extent's header changed under us");
		goto out;
	}
	h->gd_offset = cpu_to_le64(gd_at / VMDK_SECTOR);
	if (rgd)
		h->rgd_offset = cpu_to_le64(rgd_at / VMDK_SECTOR);
	ret = vdimg_file_write(v->file, h, sizeof(*h), 0);
	if (ret)
		goto out;	/* the old header: the old directories stay the live ones */
	swap(v->gd, gd);
	swap(v->slot_of, slot_of);
	if (rgd) {
		swap(v->rgd, rgd);
		v->rgd_off = rgd_at;
	}
	v->gd_off = gd_at;
	v->nr_gts = need;
	ret = vdimg_file_sync(v->file);
out:
	vdimg_free(h);
	vdimg_free(gd);
	vdimg_free(rgd);
	vdimg_free(slot_of);
	return ret;
}

/* the number of grain tables the cache holds for an extent of @nr_gts tables */
static u32 vmdk_cache_slots(const struct vmdk_sparse *v, u32 nr_gts)
{
	return min(max(VMDK_CACHE_BYTES / v->gt_bytes, VMDK_MIN_SLOTS), nr_gts);
}

/*
 * After a grow to v->nr_gts tables, the cache grows as an open at that size would have sized it:
 * an extent opened small (a 64 MiB image has 2 tables) would otherwise keep evicting, and syncing,
 * tables once grown. Slots are only used under the lock, by index (slot_of), so the array may
 * move. Best effort: without memory the cache keeps its size. Lock held.
 */
static void vmdk_grow_cache(struct vmdk_sparse *v)
{
	u32 want = vmdk_cache_slots(v, v->nr_gts), i;
	struct vmdk_gt_slot *slots;

	lockdep_assert_held(&v->lock);
	if (want <= v->nr_slots)
		return;
	slots = vdimg_zalloc(sizeof(*slots) * want);
	if (!slots)
		return;
	for (i = v->nr_slots; i < want; i++) {
		slots[i].gd_index = U32_MAX;
		slots[i].gte = vdimg_zalloc(v->gt_bytes);
		if (!slots[i].gte)
			break;
	}
	if (i < want) {
		while (i-- > v->nr_slots)
			vdimg_free(slots[i].gte);
		vdimg_free(slots);
		return;
	}
	memcpy(slots, v->slots, sizeof(*slots) * v->nr_slots);
	swap(v->slots, slots);
	v->nr_slots = want;
	vdimg_free(slots);
}

/*
 * Make room for a capacity of @cap sectors (more than now) in a hosted sparse extent. In place
 * while the grain directory (and its redundant copy) has room up to the end of its last sector,
 * which nothing else can use (a 64 KiB-grain extent of 512-entry tables: 128 entries a sector,
 * 4 GiB): every new entry gets an empty table (and its copy) appended to the file, as qemu and
 * VMware preallocate them (qemu writes no grain whose table is missing); the tables are synced
 * before the redundant GD, and that before the GD, links them (vmdk_flush_locked()). Past that
 * room both directories move (vmdk_move_gd()). The header's capacity is not written here but by
 * vmdk_sparse_set_capacity(), after vmdk_grow() has zeroed the stale tail of the old last grain:
 * entries past the old capacity are read by no one (vdimg, qemu, VMware size the directory by the
 * capacity) until it is, and a capacity written with the moved directory would show the new range
 * before that tail is zeroed. -EFBIG after a message past what a directory can address.
 */
int vmdk_sparse_grow(struct vmdk_sparse *v, u64 cap)
{
	u64 span = (u64)v->num_gtes * (v->grain_bytes / VMDK_SECTOR), need, room;
	u32 *gd = NULL, *rgd = NULL, *slot_of = NULL, old_nr, gi;
	struct vmdk_gt_slot *slot;
	int ret;

	if (!v->writable)
		return -EROFS;
	if (v->cowd || v->compressed || v->markers) {
		vdimg_err(v->img, "cannot grow a %s extent",
			  v->cowd ? "vmfsSparse (COWD)" : "streamOptimized");
		return -EOPNOTSUPP;
	}
	need = DIV_ROUND_UP(cap, span);
	if (need > VMDK_MAX_GTS || cap > VMDK_MAX_CAPACITY) {
		u64 most = min_t(u64, (u64)VMDK_MAX_GTS * span, VMDK_MAX_CAPACITY);

		vdimg_err(v->img, "cannot grow past %llu bytes: the most a sparse extent of %u-byte grains and %u-entry grain tables addresses (convert to a new image)",
			  (unsigned long long)most * VMDK_SECTOR, v->grain_bytes, v->num_gtes);
		return -EFBIG;
	}
	vdimg_mutex_lock(&v->lock);
	ret = vmdk_touch(v, false);
	if (ret || need <= v->nr_gts)
		goto out;
	room = ALIGN((u64)v->nr_gts * 4, (u64)VMDK_SECTOR) / 4;
	if (need > room) {
		ret = vmdk_move_gd(v, need);
		if (!ret)
			vmdk_grow_cache(v);
		goto out;
	}
	gd = vdimg_zalloc(need * 4);
	slot_of = vdimg_zalloc(need * 4);
	if (v->rgd)
		rgd = vdimg_zalloc(need * 4);
	if (!gd || !slot_of || (v->rgd && !rgd)) {
		ret = -ENOMEM;
		goto out;
	}
	old_nr = v->nr_gts;
	memcpy(gd, v->gd, (size_t)old_nr * 4);
	memcpy(slot_of, v->slot_of, (size_t)old_nr * 4);
	swap(v->gd, gd);
	swap(v->slot_of, slot_of);
	if (rgd) {
		memcpy(rgd, v->rgd, (size_t)old_nr * 4);
		swap(v->rgd, rgd);
	}
	v->nr_gts = need;
	vmdk_grow_cache(v);
	for (gi = old_nr; !ret && gi < need; gi++)
		ret = vmdk_new_gt(v, gi, &slot);
	if (!ret)
		ret = vmdk_flush_locked(v);
out:
	vdimg_mutex_unlock(&v->lock);
	vdimg_free(gd);
	vdimg_free(rgd);
	vdimg_free(slot_of);
	return ret;
}

/* The header's capacity becomes @cap sectors (synced); the extent then maps that much. */
int vmdk_sparse_set_capacity(struct vmdk_sparse *v, u64 cap)
{
	__le64 c = cpu_to_le64(cap);
	int ret;

	vdimg_mutex_lock(&v->lock);
	ret = vdimg_file_write(v->file, &c, sizeof(c), offsetof(struct vmdk_header, capacity));
	if (!ret)
		ret = vdimg_file_sync(v->file);
	if (!ret) {
		v->capacity = cap;
		v->size = cap * VMDK_SECTOR;
	}
	vdimg_mutex_unlock(&v->lock);
	return ret;
}

/* ---- map ---- */

/* The GTE of grain @g (GT @gi index @ti): 0 when no GT is linked. Lock held. */
static int vmdk_lookup(struct vmdk_sparse *v, u64 g, bool nowait, struct vmdk_gt_slot **s, u32 *e)
{
	u32 gi = div_u64(g, v->num_gtes);
	int ret;

	*s = NULL;
	*e = VMDK_GTE_UNALLOC;
	if (!v->gd[gi])
		return 0;
	ret = vmdk_gt_get(v, gi, !nowait, s);
	if (ret)
		return ret;
	*e = vmdk_gte(*s, g - (u64)gi * v->num_gtes);
	if (*e > VMDK_GTE_ZERO && !vmdk_grain_ok(v, *e))
		return vdimg_corrupt(v->img,
				     "grain %llu points at sector %u, outside the grain area",
				     (unsigned long long)g, *e);
	return 0;
}

/* the kind of a GTE for run-building: 0 unallocated, 1 zero, 2 data */
static inline u32 vmdk_kind(u32 e)
{
	return min(e, 2U);
}

static void vmdk_ext_clear(struct vdimg_extent *ext, u64 offset)
{
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
}

/* Read-side answer, lock held: the longest run of one kind inside one GT. */
static int vmdk_map_read(struct vmdk_sparse *v, u64 offset, u64 length, bool nowait,
			 struct vdimg_extent *ext)
{
	u64 g = offset >> v->grain_shift, end = offset + length, pos, gt_end;
	u64 gi = div_u64(g, v->num_gtes);
	struct vmdk_gt_slot *s;
	u32 e0, ti;
	int ret;

	vmdk_ext_clear(ext, offset);
	gt_end = (gi + 1) * v->num_gtes;
	if (gt_end << v->grain_shift < end)
		end = gt_end << v->grain_shift;
	ret = vmdk_lookup(v, g, nowait, &s, &e0);
	if (ret)
		return ret;
	pos = min((g + 1) << v->grain_shift, end);
	if (v->compressed && e0 > VMDK_GTE_ZERO) {
		ext->type = VDIMG_EXT_ENCODED;
		ext->length = pos - offset;
		ext->file = v->file;
		ext->cookie[0] = (u64)e0 * VMDK_SECTOR;
		ext->cookie[1] = g;
		return 0;
	}
	if (s) {
		ti = g - gi * v->num_gtes;
		while (pos < end) {
			u32 e = vmdk_gte(s, ++ti);

			if (vmdk_kind(e) != vmdk_kind(e0))
				break;
			if (e0 > VMDK_GTE_ZERO) {
				if (v->compressed || e != e0 + (u32)((pos >> v->grain_shift) - g) *
						     (v->grain_bytes / VMDK_SECTOR))
					break;
				if (!vmdk_grain_ok(v, e))
					break;	/* reported when that grain is asked for */
			}
			pos = min(pos + v->grain_bytes, end);
		}
	} else {
		pos = end;
	}
	ext->length = pos - offset;
	if (e0 == VMDK_GTE_UNALLOC) {
		ext->type = VDIMG_EXT_UNALLOCATED;
	} else if (e0 == VMDK_GTE_ZERO) {
		ext->type = VDIMG_EXT_ZERO;
	} else {
		ext->type = VDIMG_EXT_DATA;
		ext->file = v->file;
		ext->file_offset = (u64)e0 * VMDK_SECTOR + (offset & (v->grain_bytes - 1));
		/* grains and grain tables are allocated in sectors, not pages */
		vdimg_ext_page_check(ext, (u64)e0 * VMDK_SECTOR,
				     ALIGN((offset & (v->grain_bytes - 1)) + ext->length,
					   v->grain_bytes));
	}
	return 0;
}

/*
 * How many grains from @g (GTE @e, unallocated or zero) a write ending at @end reserves at once:
 * the following grains of the same GT in the same state that the write reaches, so that they lie
 * next to each other in the file and take one write (grains reserved one by one interleave with
 * those of concurrent writes). Page-sized grains only (a run is one unit,
 * vdimg_ext_page_check()); at most VMDK_MAX_RUN bytes. Lock held.
 */
static u32 vmdk_new_run(struct vmdk_sparse *v, const struct vmdk_gt_slot *s, u64 g, u32 e, u64 end)
{
	u32 ti = g - div_u64(g, v->num_gtes) * (u64)v->num_gtes, n = 1;
	u32 max = VMDK_MAX_RUN >> v->grain_shift;

	if (v->grain_bytes % VMDK_ALLOC_ALIGN || v->cowd)
		return 1;
	while (n < max && ti + n < v->num_gtes && ((g + n) << v->grain_shift) < end &&
	       ((g + n + 1) << v->grain_shift) <= v->size && vmdk_gte(s, ti + n) == e)
		n++;
	return n;
}

/* Write-side answer, lock held: existing data, or NEW grains to fill and commit. */
static int vmdk_map_write(struct vmdk_sparse *v, u64 offset, u64 length, struct vdimg_extent *ext)
{
	u64 g = offset >> v->grain_shift, gstart = g << v->grain_shift, host;
	u32 gi = div_u64(g, v->num_gtes), e, n;
	struct vmdk_gt_slot *s;
	int ret;

	ret = vmdk_touch(v, false);
	if (ret)
		return ret;
	ret = vmdk_map_read(v, offset, length, false, ext);
	if (ret || ext->type == VDIMG_EXT_DATA)
		return ret;
	if (!v->gd[gi]) {
		ret = vmdk_new_gt(v, gi, &s);
		if (ret)
			return ret;
	}
	ret = vmdk_lookup(v, g, false, &s, &e);
	if (ret)
		return ret;
	if (e > VMDK_GTE_ZERO || !s)
		return -EIO;	/* map_read said otherwise under the same lock */
	n = vmdk_new_run(v, s, g, e, offset + length);
	ret = vmdk_alloc(v, (u64)n << v->grain_shift, &host);
	if (ret)
		return ret;
	vmdk_ext_clear(ext, offset);
	ext->type = VDIMG_EXT_DATA;
	ext->flags = VDIMG_EXT_NEW | (e == VMDK_GTE_ZERO ? VDIMG_EXT_FILL_ZERO : 0);
	ext->length = min(offset + length, gstart + ((u64)n << v->grain_shift)) - offset;
	ext->file = v->file;
	ext->file_offset = host + (offset - gstart);
	ext->fill_offset = gstart;
	ext->fill_length = min_t(u64, (u64)n << v->grain_shift, v->size - gstart);
	ext->cookie[0] = host | e;
	ext->cookie[1] = VMDK_NEW_MAGIC | g;
	vdimg_ext_hole_check(ext, host);
	vdimg_ext_page_check(ext, host, (u64)n << v->grain_shift);
	return 0;
}

int vmdk_sparse_map(struct vmdk_sparse *v, u64 offset, u64 length, unsigned int flags,
		    struct vdimg_extent *ext)
{
	bool nowait = flags & VDIMG_MAP_NOWAIT;
	int ret;

	if (offset >= v->size || !length)
		return -EINVAL;
	length = min(length, v->size - offset);
	if ((flags & VDIMG_MAP_WRITE) && !v->writable)
		return -EROFS;
	if (!vdimg_mutex_lock_nowait(&v->lock, nowait))
		return -EAGAIN;
	if (!(flags & VDIMG_MAP_WRITE)) {
		ret = vmdk_map_read(v, offset, length, nowait, ext);
	} else if (nowait) {
		/* only cached, allocated data can be answered without sleeping */
		ret = vmdk_touch(v, true);
		if (!ret)
			ret = vmdk_map_read(v, offset, length, true, ext);
		if (!ret && ext->type != VDIMG_EXT_DATA)
			ret = -EAGAIN;
	} else {
		ret = vmdk_map_write(v, offset, length, ext);
	}
	vdimg_mutex_unlock(&v->lock);
	return ret;
}

/* ---- commit, abort ---- */

int vmdk_sparse_commit(struct vmdk_sparse *v, const struct vdimg_extent *ext)
{
	u64 g = ext->cookie[1] & ~(0xffffULL << 48), host = ext->cookie[0] & ~1ULL;
	u32 was = ext->cookie[0] & 1, gi, ti, e, n, k;
	u64 gstart, valid;
	struct vmdk_gt_slot *s;
	int ret;

	if (!(ext->flags & VDIMG_EXT_NEW) || (ext->cookie[1] >> 48) != (VMDK_NEW_MAGIC >> 48) ||
	    (g << v->grain_shift) >= v->size || !host || host % VMDK_SECTOR ||
	    ext->offset < (g << v->grain_shift))
		return -EINVAL;
	gi = div_u64(g, v->num_gtes);
	ti = g - (u64)gi * v->num_gtes;
	gstart = g << v->grain_shift;
	/* the grains map reserved together (vmdk_new_run()) */
	n = DIV_ROUND_UP(ext->offset + ext->length - gstart, (u64)v->grain_bytes);
	if (!n || ti + n > v->num_gtes)
		return -EINVAL;
	vdimg_mutex_lock(&v->lock);
	ret = -EIO;
	if (!v->gd[gi])
		goto out;	/* map linked the GT; it cannot vanish */
	ret = vmdk_gt_get(v, gi, true, &s);
	if (ret)
		goto out;
	ret = -EIO;
	for (k = 0; k < n; k++) {
		e = vmdk_gte(s, ti + k);
		if (e != was)
			goto out;	/* someone else changed the entry: the range lock failed */
	}
	/* the last grain may reach past the disk: the fill stopped there, pad the grain */
	valid = v->size - gstart;
	while (n == 1 && valid < v->grain_bytes) {
		u32 len = min_t(u64, VMDK_ZBUF, v->grain_bytes - valid);

		ret = vdimg_file_write(v->file, v->zbuf, len, host + valid);
		if (ret)
			goto out;
		valid += len;
	}
	for (k = 0; k < n; k++)
		vmdk_gte_set(s, ti + k, (host + ((u64)k << v->grain_shift)) / VMDK_SECTOR);
	v->img->flags |= VDIMG_IMG_DIRTY;
	ret = 0;
out:
	vdimg_mutex_unlock(&v->lock);
	return ret;
}

/* ---- discard and write-zeroes ---- */

/*
 * Whole grains become zeroed grains (GTE 1) where the header allows it, unallocated (GTE 0) in an
 * image without a parent; their old space leaks (it is never handed out again). Partial grains that
 * hold data are zeroed in the file. What cannot be expressed (an unallocated grain of a child,
 * which shows its parent, without the zeroed-grain flag; a partial one in any case) is left to the
 * caller (-EOPNOTSUPP, decided before anything changes).
 */
int vmdk_sparse_discard(struct vmdk_sparse *v, u64 offset, u64 length, unsigned int flags)
{
	bool has_parent = v->vm->has_parent;
	u64 end, pos;
	int ret = 0;

	if (!v->writable)
		return -EROFS;
	if (flags & VDIMG_DISCARD_NOUNMAP)
		return -EOPNOTSUPP;
	if (flags & ~VDIMG_DISCARD_ZEROES)
		return -EINVAL;
	if (offset > v->size || length > v->size - offset)
		return -EINVAL;
	if (!length)
		return 0;
	end = offset + length;
	vdimg_mutex_lock(&v->lock);
	/* pass 0 decides, pass 1 changes */
	for (int pass = 0; pass < 2 && !ret; pass++) {
		if (pass == 1)
			ret = vmdk_touch(v, false);
		for (pos = offset; pos < end && !ret; ) {
			u64 g = pos >> v->grain_shift, gstart = g << v->grain_shift;
			u64 gend = min(gstart + v->grain_bytes, v->size), n = min(end, gend) - pos;
			bool whole = pos == gstart && n == gend - gstart;
			u32 gi = div_u64(g, v->num_gtes), ti = g - (u64)gi * v->num_gtes, e, want;
			struct vmdk_gt_slot *s;

			ret = vmdk_lookup(v, g, false, &s, &e);
			if (ret)
				break;
			pos += n;
			if (pass == 0) {
				if (e == VMDK_GTE_UNALLOC && has_parent &&
				    (!whole || !v->zero_grain))
					ret = -EOPNOTSUPP;
				continue;
			}
			if (!whole || (e > VMDK_GTE_ZERO && has_parent && !v->zero_grain)) {
				if (e > VMDK_GTE_ZERO)
					ret = vdimg_file_zero(v->file, (u64)e * VMDK_SECTOR +
							      (pos - n - gstart), n);
				continue;
			}
			want = v->zero_grain ? VMDK_GTE_ZERO : VMDK_GTE_UNALLOC;
			if (e == want || (e == VMDK_GTE_UNALLOC && !has_parent))
				continue;
			if (!s) {
				ret = vmdk_new_gt(v, gi, &s);
				if (ret)
					break;
			}
			vmdk_gte_set(s, ti, want);
			v->img->flags |= VDIMG_IMG_DIRTY;
		}
	}
	vdimg_mutex_unlock(&v->lock);
	return ret;
}

/* ---- open ---- */

/* Check the header fields of a sparse extent and fill the geometry of @v. */
int vmdk_check_header(struct vmdk_sparse *v, const struct vmdk_header *h, u64 fsize)
{
	struct vdimg_image *img = v->img;
	u64 grain = le64_to_cpu(h->grain_size), cap = le64_to_cpu(h->capacity), span;
	u64 gd = le64_to_cpu(h->gd_offset), rgd = le64_to_cpu(h->rgd_offset);
	u64 ov = le64_to_cpu(h->overhead), fsec = fsize / VMDK_SECTOR;
	u16 algo = le16_to_cpu(h->compress_algorithm);
	bool deflate;

	v->version = le32_to_cpu(h->version);
	v->hflags = le32_to_cpu(h->flags);
	if (v->version < 1 || v->version > 3) {
		vdimg_err(img, "VMDK sparse extent version %u is not supported", v->version);
		return -EOPNOTSUPP;
	}
	if ((v->hflags & VMDK_FLAG_NL_TEST) &&
	    (h->nl_single != '\n' || h->nl_non != ' ' || h->nl_double1 != '\r' ||
	     h->nl_double2 != '\n'))
		return vdimg_corrupt(img,
				     "the end-of-line check bytes are wrong (the file was transferred in text mode)");
	v->compressed = v->hflags & VMDK_FLAG_COMPRESSED;
	v->markers = v->hflags & VMDK_FLAG_MARKERS;
	v->zero_grain = v->hflags & VMDK_FLAG_ZERO_GRAIN;
	if (algo != VMDK_COMPRESS_NONE && algo != VMDK_COMPRESS_DEFLATE) {
		vdimg_err(img, "compression algorithm %u is not supported", algo);
		return -EOPNOTSUPP;
	}
	deflate = algo == VMDK_COMPRESS_DEFLATE;
	if (v->compressed != deflate) {
		if (deflate)
			v->compressed = true;	/* what qemu goes by */
		else
			return vdimg_corrupt(img,
					     "compressed grains without a compression algorithm");
	}
	if (!grain || !is_power_of_2(grain))
		return vdimg_corrupt(img, "grain size %llu sectors is not a power of two",
				     (unsigned long long)grain);
	if (grain > VMDK_MAX_GRAIN_SECTORS) {
		vdimg_err(img, "grain size of %llu sectors is larger than the supported %u",
			  (unsigned long long)grain, VMDK_MAX_GRAIN_SECTORS);
		return -EOPNOTSUPP;
	}
	v->grain_bytes = grain * VMDK_SECTOR;
	v->grain_shift = ilog2(v->grain_bytes);
	v->num_gtes = le32_to_cpu(h->num_gtes_per_gt);
	if (!v->num_gtes || v->num_gtes > VMDK_MAX_GTES)
		return vdimg_corrupt(img, "%u entries per grain table is out of bounds (1..%u)",
				     v->num_gtes, VMDK_MAX_GTES);
	v->gt_bytes = v->num_gtes * 4;
	if (!cap)
		return vdimg_corrupt(img, "the capacity is 0");
	if (cap > VMDK_MAX_CAPACITY) {
		vdimg_err(img, "a capacity of %llu sectors is larger than supported",
			  (unsigned long long)cap);
		return -EOPNOTSUPP;
	}
	v->capacity = cap;
	v->size = cap * VMDK_SECTOR;
	span = (u64)v->num_gtes * grain;
	if (DIV_ROUND_UP(cap, span) > VMDK_MAX_GTS) {
		vdimg_err(img, "%llu grain tables are more than the supported %lu",
			  (unsigned long long)DIV_ROUND_UP(cap, span), VMDK_MAX_GTS);
		return -EOPNOTSUPP;
	}
	v->nr_gts = DIV_ROUND_UP(cap, span);
	if (!gd || gd >= fsec || gd * VMDK_SECTOR + (u64)v->nr_gts * 4 > fsize)
		return vdimg_corrupt(img,
				     "the grain directory (sector %llu, %u entries) is not inside the file",
				     (unsigned long long)gd, v->nr_gts);
	v->gd_off = gd * VMDK_SECTOR;
	if ((v->hflags & VMDK_FLAG_RGD) && rgd) {
		if (rgd >= fsec || rgd * VMDK_SECTOR + (u64)v->nr_gts * 4 > fsize)
			return vdimg_corrupt(img,
					     "the redundant grain directory (sector %llu) is not inside the file",
					     (unsigned long long)rgd);
		if (rgd == gd)
			return vdimg_corrupt(img, "both grain directories are at sector %llu",
					     (unsigned long long)gd);
		v->rgd_off = rgd * VMDK_SECTOR;
	}
	if (!ov || ov > fsec)
		return vdimg_corrupt(img,
				     "the grain area starts at sector %llu, outside the file (%llu sectors)",
				     (unsigned long long)ov, (unsigned long long)fsec);
	v->overhead = ov * VMDK_SECTOR;
	return 0;
}

/* The header of a COWD extent: the same GD/GT/grain scheme with 4096-entry GTs and no copy. */
int vmdk_check_cowd_header(struct vmdk_sparse *v, const struct vmdk_cowd_header *h, u64 fsize)
{
	struct vdimg_image *img = v->img;
	u32 cap = le32_to_cpu(h->capacity), grain = le32_to_cpu(h->grain_size);
	u32 gd = le32_to_cpu(h->gd_offset), n = le32_to_cpu(h->gd_entries);
	u64 span;

	BUILD_BUG_ON(sizeof(struct vmdk_cowd_header) != 32);
	if (le32_to_cpu(h->version) != 1) {
		vdimg_err(img, "COWD version %u is not supported", le32_to_cpu(h->version));
		return -EOPNOTSUPP;
	}
	if (!grain || !is_power_of_2(grain))
		return vdimg_corrupt(img, "COWD grain size %u sectors is not a power of two",
				     grain);
	if (grain > VMDK_MAX_GRAIN_SECTORS) {
		vdimg_err(img, "COWD grain size of %u sectors is larger than supported", grain);
		return -EOPNOTSUPP;
	}
	if (!cap)
		return vdimg_corrupt(img, "the COWD capacity is 0");
	span = (u64)VMDK_COWD_GTES * grain;
	if (n < DIV_ROUND_UP(cap, span) || n > VMDK_MAX_GTS)
		return vdimg_corrupt(img, "%u COWD grain directory entries for %u sectors", n, cap);
	if ((u64)gd * VMDK_SECTOR < VMDK_COWD_HEADER_SIZE ||
	    (u64)gd * VMDK_SECTOR + (u64)n * 4 > fsize)
		return vdimg_corrupt(img,
				     "the COWD grain directory (sector %u, %u entries) is not inside the file",
				     gd, n);
	v->cowd = true;
	v->version = 1;
	v->capacity = cap;
	v->size = (u64)cap * VMDK_SECTOR;
	v->grain_bytes = grain * VMDK_SECTOR;
	v->grain_shift = ilog2(v->grain_bytes);
	v->num_gtes = VMDK_COWD_GTES;
	v->gt_bytes = VMDK_COWD_GTES * 4;
	v->nr_gts = DIV_ROUND_UP(cap, span);
	v->gd_off = (u64)gd * VMDK_SECTOR;
	v->overhead = VMDK_COWD_HEADER_SIZE;
	return 0;
}

/*
 * A writable extent on a block device: allocation appends at the end of the file, and the device
 * is larger than the extent, so the next grain goes after the last grain table, grain or
 * directory the extent references (every GT is read once). Entries outside the device are left
 * to the readers that report them.
 */
static int vmdk_find_end(struct vmdk_sparse *v)
{
	u64 gd_end = (u64)v->nr_gts * 4, end = v->overhead, gt_size;
	__le32 *gt;
	u32 i, k, e;
	int ret = 0;

	gt_size = ALIGN((u64)v->gt_bytes, (u64)VMDK_SECTOR);
	end = max(end, v->gd_off + gd_end);
	if (v->rgd_off)
		end = max(end, v->rgd_off + gd_end);
	gt = vdimg_alloc(v->gt_bytes);
	if (!gt)
		return -ENOMEM;
	for (i = 0; !ret && i < v->nr_gts; i++) {
		if (v->rgd && v->rgd[i])
			end = max(end, (u64)v->rgd[i] * VMDK_SECTOR + gt_size);
		if (!v->gd[i])
			continue;
		end = max(end, (u64)v->gd[i] * VMDK_SECTOR + gt_size);
		ret = vdimg_file_read(v->file, gt, v->gt_bytes, (u64)v->gd[i] * VMDK_SECTOR);
		for (k = 0; !ret && k < v->num_gtes; k++) {
			e = le32_to_cpu(gt[k]);
			if (e > VMDK_GTE_ZERO && vmdk_grain_ok(v, e))
				end = max(end, (u64)e * VMDK_SECTOR + v->grain_bytes);
		}
	}
	vdimg_free(gt);
	if (ret)
		return ret;
	/* a COWD extent's freeSector counts too (vmdk.c keeps it inside the device) */
	if (v->cowd)
		end = max(end, v->next_alloc);
	v->next_alloc = ALIGN(end, (u64)VMDK_SECTOR);
	return 0;
}

int vmdk_sparse_open(struct vmdk_sparse *v, const struct vmdk_header *h, u64 fsize)
{
	struct vdimg_image *img = v->img;
	u64 gd_bytes;
	u32 i;
	int ret;

	gd_bytes = (u64)v->nr_gts * 4;
	v->gd = vdimg_zalloc(gd_bytes);
	v->slot_of = vdimg_zalloc(gd_bytes);
	if (!v->gd || !v->slot_of)
		return -ENOMEM;
	ret = vdimg_file_read(v->file, v->gd, gd_bytes, v->gd_off);
	if (ret == -EFSCORRUPTED)
		return vdimg_corrupt(img, "the grain directory lies past the end of the file");
	if (ret)
		return ret;
	for (i = 0; i < v->nr_gts; i++)
		v->gd[i] = le32_to_cpu(((__le32 *)v->gd)[i]);
	if (v->rgd_off) {
		v->rgd = vdimg_zalloc(gd_bytes);
		if (!v->rgd)
			return -ENOMEM;
		ret = vdimg_file_read(v->file, v->rgd, gd_bytes, v->rgd_off);
		if (ret == -EFSCORRUPTED)
			return vdimg_corrupt(img,
					     "the redundant grain directory lies past the end of the file");
		if (ret)
			return ret;
		for (i = 0; i < v->nr_gts; i++)
			v->rgd[i] = le32_to_cpu(((__le32 *)v->rgd)[i]);
	}
	for (i = 0; i < v->nr_gts; i++) {
		if (v->gd[i] && !vmdk_gt_ok(v, v->gd[i]))
			return vdimg_corrupt(img,
					     "GD entry %u points at sector %u, outside the file",
					     i, v->gd[i]);
		if (v->rgd && v->rgd[i] && !vmdk_gt_ok(v, v->rgd[i])) {
			if (v->writable)
				return vdimg_corrupt(img,
						     "redundant GD entry %u points at sector %u, outside the file",
						     i, v->rgd[i]);
			v->rgd[i] = 0;	/* never used for reading */
		}
	}
	v->nr_slots = vmdk_cache_slots(v, v->nr_gts);
	v->slots = vdimg_zalloc(sizeof(*v->slots) * v->nr_slots);
	if (!v->slots)
		return -ENOMEM;
	for (i = 0; i < v->nr_slots; i++) {
		v->slots[i].gd_index = U32_MAX;
		v->slots[i].gte = vdimg_zalloc(v->gt_bytes);
		if (!v->slots[i].gte)
			return -ENOMEM;
	}
	if (v->writable) {
		v->zbuf = vdimg_zalloc(VMDK_ZBUF);
		if (!v->zbuf)
			return -ENOMEM;
	}
	v->fixed_file = vdimg_file_fixed_size(v->file);
	if (v->writable && v->fixed_file)
		return vmdk_find_end(v);
	return 0;
}

u64 vmdk_sparse_bytes(struct vmdk_sparse *v)
{
	u64 n;

	vdimg_mutex_lock(&v->lock);
	n = (u64)v->nr_gts * 4 * (v->rgd ? 3 : 2) +
	    (u64)v->nr_slots * (sizeof(*v->slots) + v->gt_bytes) + (v->zbuf ? VMDK_ZBUF : 0);
	vdimg_mutex_unlock(&v->lock);
	return n;
}

void vmdk_sparse_free(struct vmdk_sparse *v)
{
	u32 i;

	if (v->slots)
		for (i = 0; i < v->nr_slots; i++)
			vdimg_free(v->slots[i].gte);
	vdimg_free(v->slots);
	vdimg_free(v->gd);
	vdimg_free(v->rgd);
	vdimg_free(v->slot_of);
	vdimg_free(v->zbuf);
	vdimg_mutex_destroy(&v->lock);
}
