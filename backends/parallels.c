// SPDX-License-Identifier: GPL-2.0
/*
 * Parallels expanding disk images (.hds), read-write: probe, both header signatures (v1 BAT in
 * sectors, v2 BAT in clusters), the BAT read whole into memory and checked (every entry inside the
 * data area and the file, no two clusters overlapping each other or the format extension cluster),
 * map, allocation, commit, flush and close, and the struct vdimg_format of parallels.
 * Kernel-shared: compiled into the module and the userspace library; only
 * include/vdimg/platform.h services here.
 * The layout is in parallels.h; create, check and describe are in tools/lib/formats/parallels.c.
 *
 * Allocation appends: a new cluster goes at @next_off, past everything the file holds, so space is
 * never handed out twice and a crash can only leak. ->commit() runs after the driver wrote the
 * cluster (data and fill) and only records the entry in the in-memory BAT, marking its 512-byte
 * chunk dirty; ->flush() syncs the file (the data is durable) and then writes the dirty chunks,
 * so a BAT entry on disk never points at data that may not be there. The header's @inuse field says
 * PRL_INUSE_OPEN from a writable open until a clean close, which writes the BAT, syncs and sets
 * PRL_INUSE_CLOSED. An image found with PRL_INUSE_OPEN was not closed cleanly: like qemu, it opens
 * read-only only, until `vdimgctl check --repair`. A dirty-bitmap format extension (@ext_off) is
 * kept untouched until the first write, which invalidates it by clearing @ext_off (a bitmap that no
 * longer lists every change would mislead an incremental backup); its cluster becomes a leak.
 *
 * Locking: @map_lock protects the in-memory BAT, the dirty chunk bitmap and the allocation cursor
 * and is never held across I/O (map() with VDIMG_MAP_NOWAIT only try-locks it); @meta_lock
 * serializes commits, header writes and flushes and is held across their I/O, so a flush never
 * races a commit between its sync and its BAT writes.
 */
#include "parallels.h"

static bool prl_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return head_len >= 16 &&
	       (!memcmp(head, PRL_MAGIC_V1, 16) || !memcmp(head, PRL_MAGIC_V2, 16));
}

/* ---- metadata writes ---- */

int prl_write_header(struct prl *p, u32 inuse)
{
	lockdep_assert_held(&p->meta_lock);
	p->hdr.inuse = cpu_to_le32(inuse);
	return vdimg_file_write(p->file, &p->hdr, sizeof(p->hdr), 0);
}

static void prl_set_dirty(struct prl *p, u32 i)
{
	u32 c = i / PRL_BAT_CHUNK;

	lockdep_assert_held(&p->map_lock);
	if (!(p->chunk_dirty[c / 64] & BIT_ULL(c % 64))) {
		p->chunk_dirty[c / 64] |= BIT_ULL(c % 64);
		p->nr_dirty++;
	}
}

/* Write one 512-byte chunk of the BAT from memory; @meta_lock held. */
static int prl_write_chunk(struct prl *p, u32 c)
{
	__le32 buf[PRL_BAT_CHUNK];
	u32 first = c * PRL_BAT_CHUNK, n = min(PRL_BAT_CHUNK, p->nr_bat - first), i;

	lockdep_assert_held(&p->meta_lock);
	vdimg_mutex_lock(&p->map_lock);
	for (i = 0; i < n; i++)
		buf[i] = cpu_to_le32(p->bat[first + i]);
	vdimg_mutex_unlock(&p->map_lock);
	return vdimg_file_write(p->file, buf, n * 4, PRL_HEADER_SIZE + (u64)first * 4);
}

static int prl_flush_locked(struct prl *p)
{
	u32 nr_chunks = DIV_ROUND_UP(p->nr_bat, PRL_BAT_CHUNK), c;
	bool dirty;
	int ret;

	lockdep_assert_held(&p->meta_lock);
	vdimg_mutex_lock(&p->map_lock);
	dirty = p->nr_dirty;
	vdimg_mutex_unlock(&p->map_lock);
	if (!dirty)
		return 0;
	/* the clusters the new entries point at reach the disk before the entries */
	ret = vdimg_file_sync(p->file);
	if (ret)
		return ret;
	for (c = 0; c < nr_chunks; c++) {
		if (c % 64 == 0 && !p->chunk_dirty[c / 64]) {
			c += 63;
			continue;
		}
		if (!(p->chunk_dirty[c / 64] & BIT_ULL(c % 64)))
			continue;
		ret = prl_write_chunk(p, c);
		if (ret)
			return ret;
		vdimg_mutex_lock(&p->map_lock);
		p->chunk_dirty[c / 64] &= ~BIT_ULL(c % 64);
		p->nr_dirty--;
		vdimg_mutex_unlock(&p->map_lock);
	}
	return 0;
}

int prl_flush(struct vdimg_image *img)
{
	struct prl_disk *d = img->priv;
	u32 k;
	int ret = 0;

	for (k = 0; k < d->nr && !ret; k++) {
		struct prl *p = d->part[k];

		if (!p->writable)
			continue;
		vdimg_mutex_lock(&p->meta_lock);
		ret = prl_flush_locked(p);
		/*
		 * the caller syncs the layer's file only: the other parts' data and BAT writes
		 * are made durable here
		 */
		if (!ret && k)
			ret = vdimg_file_sync(p->file);
		vdimg_mutex_unlock(&p->meta_lock);
	}
	return ret;
}

/*
 * Before the first change after a writable open: drop the dirty-bitmap extension, which would no
 * longer list every changed sector. -EAGAIN with @nowait when that is still to be done.
 */
static int prl_touch(struct prl *p, bool nowait)
{
	bool done;
	int ret = 0;

	if (!vdimg_mutex_lock_nowait(&p->map_lock, nowait))
		return -EAGAIN;
	done = p->touched;
	vdimg_mutex_unlock(&p->map_lock);
	if (done)
		return 0;
	if (nowait)
		return -EAGAIN;

	vdimg_mutex_lock(&p->meta_lock);
	if (!p->touched) {
		if (p->hdr.ext_off) {
			p->hdr.ext_off = 0;
			ret = prl_write_header(p, PRL_INUSE_OPEN);
			if (!ret)
				vdimg_info(p->img, "the dirty bitmap extension is dropped: it would not record this write");
		}
		if (!ret) {
			vdimg_mutex_lock(&p->map_lock);
			p->touched = true;
			vdimg_mutex_unlock(&p->map_lock);
			p->img->flags |= VDIMG_IMG_DIRTY;
		}
	}
	vdimg_mutex_unlock(&p->meta_lock);
	return ret;
}

/* ---- map, commit, abort ---- */

static u64 prl_clusters_of(const struct prl *p, u64 bytes)
{
	return div_u64(bytes, p->cluster);
}

/* map within one part: @offset and the extent's offsets relative to the part */
static int prl_map_part(struct prl *p, u64 offset, u64 length, unsigned int flags,
			struct vdimg_extent *ext)
{
	struct vdimg_image *img = p->img;
	u64 in, avail, start, off;
	bool device_full = false;
	u32 i, j, e;
	int ret;

	length = min(length, p->size - offset);
	if (flags & VDIMG_MAP_WRITE) {
		if (!p->writable)
			return -EROFS;
		if (p->repairs)
			return -EUCLEAN;	/* opened for repair: check --repair first */
		ret = prl_touch(p, flags & VDIMG_MAP_NOWAIT);
		if (ret)
			return ret;
	}
	if (!vdimg_mutex_lock_nowait(&p->map_lock, flags & VDIMG_MAP_NOWAIT))
		return -EAGAIN;

	i = prl_clusters_of(p, offset);
	start = (u64)i * p->cluster;
	in = offset - start;
	avail = p->cluster - in;
	e = p->bat[i];
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ret = 0;
	if (e) {
		off = prl_entry_offset(p, e);
		for (j = i + 1; avail < length && j < p->nr_bat && p->bat[j] &&
		     prl_entry_offset(p, p->bat[j]) == off + (u64)(j - i) * p->cluster; j++)
			avail += p->cluster;
		ext->type = VDIMG_EXT_DATA;
		ext->file = p->file;
		ext->file_offset = off + in;
	} else if (!(flags & VDIMG_MAP_WRITE)) {
		for (j = i + 1; avail < length && j < p->nr_bat && !p->bat[j]; j++)
			avail += p->cluster;
		ext->type = VDIMG_EXT_UNALLOCATED;
	} else if (flags & VDIMG_MAP_NOWAIT) {
		ret = -EAGAIN;		/* allocation belongs to the worker path */
	} else {
		off = p->next_off;
		/* the entry must fit in 32 bits: sectors (v1) or clusters (v2) */
		if (div64_u64(off, (u64)p->mult * PRL_SECTOR) > U32_MAX) {
			ret = -ENOSPC;
			goto out;
		}
		/* on a block device the cluster must fit in it: the device cannot grow */
		if (vdimg_file_fixed_size(p->file) &&
		    off + p->cluster > vdimg_file_size(p->file)) {
			ret = -ENOSPC;
			device_full = true;
			goto out;
		}
		p->next_off += p->cluster;
		ext->type = VDIMG_EXT_DATA;
		ext->flags = VDIMG_EXT_NEW;
		ext->file = p->file;
		ext->file_offset = off + in;
		ext->fill_offset = start;
		ext->fill_length = min_t(u64, p->cluster, p->size - start);
		ext->cookie[0] = i;
		ext->cookie[1] = off;
		vdimg_ext_hole_check(ext, off);
	}
	ext->length = min(length, avail);
	/* v1 images may place clusters at any sector */
	if (ext->type == VDIMG_EXT_DATA)
		vdimg_ext_page_check(ext, ext->file_offset - in, in + avail);
out:
	vdimg_mutex_unlock(&p->map_lock);
	if (device_full)	/* the message after the unlock: the same -ENOSPC */
		ret = vdimg_device_full(img, vdimg_file_size(p->file), "cluster");
	else if (ret == -ENOSPC)
		vdimg_err(img, "no room for another cluster: its BAT entry would not fit in 32 bits");
	return ret;
}

/* the part holding virtual offset @offset (< the layer's size) */
static struct prl *prl_part_at(struct prl_disk *d, u64 offset, u32 *k)
{
	u32 lo = 0, hi = d->nr;

	while (hi - lo > 1) {
		u32 mid = lo + (hi - lo) / 2;

		if (d->part[mid]->base <= offset)
			lo = mid;
		else
			hi = mid;
	}
	*k = lo;
	return d->part[lo];
}

static int prl_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		   struct vdimg_extent *ext)
{
	struct prl_disk *d = img->priv;
	struct prl *p;
	u32 k;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	p = prl_part_at(d, offset, &k);
	ret = prl_map_part(p, offset - p->base, length, flags, ext);
	if (ret)
		return ret;
	ext->offset = offset;
	if (ext->flags & VDIMG_EXT_NEW) {
		ext->fill_offset += p->base;
		ext->cookie[0] |= (u64)k << 32;
	}
	return 0;
}

/*
 * Is @ext a NEW extent this layer handed out? Sets the part, the cluster and its file offset.
 * cookie[0] holds the part in its high 32 bits and the cluster in the low ones.
 */
static bool prl_new_extent(struct prl_disk *d, const struct vdimg_extent *ext, struct prl **pp,
			   u32 *i, u64 *off)
{
	u32 k = ext->cookie[0] >> 32;

	if (!(ext->flags & VDIMG_EXT_NEW) || k >= d->nr)
		return false;
	*pp = d->part[k];
	*i = (u32)ext->cookie[0];
	*off = ext->cookie[1];
	return *i < (*pp)->nr_bat && *off >= (*pp)->data_off;
}

static int prl_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	static const u8 zeros[4096];
	struct prl *p;
	u64 off, valid;
	u32 i, e;
	bool ok;
	int ret = 0;

	if (WARN_ON_ONCE(!prl_new_extent(img->priv, ext, &p, &i, &off)))
		return -EINVAL;
	vdimg_mutex_lock(&p->meta_lock);
	vdimg_mutex_lock(&p->map_lock);
	ok = !p->bat[i] && off + p->cluster <= p->next_off;
	vdimg_mutex_unlock(&p->map_lock);
	if (WARN_ON_ONCE(!ok)) {
		ret = -EINVAL;
		goto out;
	}
	/* the last cluster may reach past the disk: the fill stopped there, complete the cluster */
	valid = p->size - (u64)i * p->cluster;
	while (valid < p->cluster) {
		u32 n = min_t(u64, sizeof(zeros), p->cluster - valid);

		ret = vdimg_file_write(p->file, zeros, n, off + valid);
		if (ret)
			goto out;
		valid += n;
	}
	e = div64_u64(off, (u64)p->mult * PRL_SECTOR);
	vdimg_mutex_lock(&p->map_lock);
	p->bat[i] = e;
	prl_set_dirty(p, i);
	vdimg_mutex_unlock(&p->map_lock);
	img->flags |= VDIMG_IMG_DIRTY;
out:
	vdimg_mutex_unlock(&p->meta_lock);
	return ret;
}

static void prl_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct prl *p;
	u64 off;
	u32 i;

	if (!prl_new_extent(img->priv, ext, &p, &i, &off))
		return;
	/* the last cluster handed out can be handed out again; any other one is leaked */
	vdimg_mutex_lock(&p->map_lock);
	if (off + p->cluster == p->next_off && !p->bat[i])
		p->next_off = off;
	vdimg_mutex_unlock(&p->map_lock);
}

/* ---- discard ---- */

static u32 prl_entry(struct prl *p, u32 i)
{
	u32 e;

	vdimg_mutex_lock(&p->map_lock);
	e = p->bat[i];
	vdimg_mutex_unlock(&p->map_lock);
	return e;
}

/* does [@offset, @offset + @length) of part @p touch a cluster this image does not hold? */
static bool prl_has_hole(struct prl *p, u64 offset, u64 length)
{
	u32 i = prl_clusters_of(p, offset), last = prl_clusters_of(p, offset + length - 1);
	bool hole = false;

	vdimg_mutex_lock(&p->map_lock);
	for (; i <= last && !hole; i++)
		hole = !p->bat[i];
	vdimg_mutex_unlock(&p->map_lock);
	return hole;
}

/*
 * Unmap the allocated cluster @i; @meta_lock held. Its entry is written as 0 first, then the
 * cluster is punched out of the file. Without a sync in between, a crash may leave the old entry
 * on disk pointing at the hole: it reads zeros, as the discarded range may, and stays referenced.
 * A freed cluster is never handed out again while the image is open (allocation only appends at
 * @next_off); a clean close drops the file's end no entry uses any more, after syncing the zeroed
 * entries, and only then can a later open allocate there.
 */
static int prl_unmap(struct prl *p, u32 i)
{
	__le32 zero = 0;
	u64 off;
	int ret;

	lockdep_assert_held(&p->meta_lock);
	vdimg_mutex_lock(&p->map_lock);
	off = prl_entry_offset(p, p->bat[i]);
	p->bat[i] = 0;
	p->freed = true;
	vdimg_mutex_unlock(&p->map_lock);
	ret = vdimg_file_write(p->file, &zero, sizeof(zero), PRL_HEADER_SIZE + (u64)i * 4);
	if (ret) {
		/* the next flush writes the entry's chunk; the cluster is not punched */
		vdimg_mutex_lock(&p->map_lock);
		prl_set_dirty(p, i);
		vdimg_mutex_unlock(&p->map_lock);
		return ret;
	}
	ret = vdimg_file_punch(p->file, off, p->cluster);
	if (ret && ret != -EOPNOTSUPP)
		vdimg_warn(p->img, "cannot deallocate cluster %u of the file (error %d)", i, ret);
	return 0;
}

/*
 * Discard within one part (offsets relative to it). Whole allocated clusters are unmapped, unless
 * the range must read zeros (@zeroes): then the layer may be a snapshot over a parent the unmapped
 * cluster would show, so they are zeroed in place (punched, the entry kept). Partial clusters are
 * zeroed in place, as is everything with NOUNMAP (@keep: the space stays allocated). An image with
 * every cluster allocated ("preallocated") is no different: the format has no such type.
 */
static int prl_discard_part(struct prl *p, u64 offset, u64 length, bool zeroes, bool keep)
{
	u64 pos, end = offset + length;
	int ret;

	ret = prl_touch(p, false);
	if (ret)
		return ret;
	vdimg_mutex_lock(&p->meta_lock);
	for (pos = offset; pos < end && !ret; ) {
		u32 i = prl_clusters_of(p, pos);
		u64 cstart = (u64)i * p->cluster;
		u64 cend = min(cstart + p->cluster, p->size);
		u64 n = min(end, cend) - pos;
		u32 e = prl_entry(p, i);
		u64 where;

		if (e && pos == cstart && n == cend - cstart && !zeroes && !keep) {
			ret = prl_unmap(p, i);
		} else if (e) {
			where = prl_entry_offset(p, e) + (pos - cstart);
			if (keep)
				ret = vdimg_file_zero_range(p->file, where, n);
			else
				ret = vdimg_file_zero(p->file, where, n);
		}
		pos += n;
	}
	vdimg_mutex_unlock(&p->meta_lock);
	return ret;
}

static int prl_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	bool zeroes = flags & VDIMG_DISCARD_ZEROES, keep = flags & VDIMG_DISCARD_NOUNMAP;
	struct prl_disk *d = img->priv;
	u64 pos, end, n;
	struct prl *p;
	u32 k;
	int ret = 0;

	if (flags & ~(VDIMG_DISCARD_ZEROES | VDIMG_DISCARD_NOUNMAP))
		return -EINVAL;
	if (offset > img->size || length > img->size - offset)
		return -EINVAL;
	if (!length)
		return 0;
	end = offset + length;
	/* a snapshot the library knows has a parent (the driver sets ZEROES in any upper layer) */
	if (img->flags & VDIMG_IMG_HAS_PARENT)
		zeroes = true;
	for (pos = offset; pos < end; pos += n) {
		p = prl_part_at(d, pos, &k);
		n = min(end, p->base + p->size) - pos;
		if (!p->writable)
			return -EROFS;
		if (p->repairs)
			return -EUCLEAN;	/* opened for repair: check --repair first */
		/*
		 * An unallocated cluster that must read zeros: in a snapshot it shows the parent,
		 * and the image cannot tell whether one is below (a bundle's descriptor names it).
		 * Only the write path, which allocates, can hide it; the driver takes that path.
		 */
		if ((zeroes || keep) && prl_has_hole(p, pos - p->base, n))
			return -EOPNOTSUPP;
	}
	for (pos = offset; pos < end && !ret; pos += n) {
		p = prl_part_at(d, pos, &k);
		n = min(end, p->base + p->size) - pos;
		ret = prl_discard_part(p, pos - p->base, n, zeroes, keep);
	}
	return ret;
}

/* ---- open ---- */

static int prl_read_header(struct vdimg_image *img, struct prl *p, u64 fsize)
{
	struct prl_header *h = &p->hdr;
	u64 sectors, bat_end, ext;
	u32 v;
	int ret;

	BUILD_BUG_ON(sizeof(struct prl_header) != PRL_HEADER_SIZE);
	BUILD_BUG_ON(offsetof(struct prl_header, inuse) != 44);
	BUILD_BUG_ON(offsetof(struct prl_header, ext_off) != 56);

	if (fsize < PRL_HEADER_SIZE)
		return vdimg_corrupt(img, "the file (%llu bytes) is too short for a header",
				     (unsigned long long)fsize);
	ret = vdimg_file_read(p->file, h, sizeof(*h), 0);
	if (ret)
		return ret;
	if (!memcmp(h->magic, PRL_MAGIC_V2, 16))
		p->v2 = true;
	else if (memcmp(h->magic, PRL_MAGIC_V1, 16))
		return vdimg_corrupt(img, "bad Parallels signature");
	v = le32_to_cpu(h->version);
	if (v != PRL_VERSION) {
		vdimg_err(img, "Parallels header version %u is not supported (only %u)", v,
			  PRL_VERSION);
		return -EOPNOTSUPP;
	}
	p->tracks = le32_to_cpu(h->tracks);
	if (!p->tracks)
		return vdimg_corrupt(img, "the cluster size is 0 sectors");
	if (p->tracks > PRL_MAX_TRACKS) {
		vdimg_err(img, "clusters of %u sectors are larger than the supported %u",
			  p->tracks, PRL_MAX_TRACKS);
		return -EOPNOTSUPP;
	}
	p->cluster = p->tracks * PRL_SECTOR;
	p->mult = p->v2 ? p->tracks : 1;
	p->nr_bat = le32_to_cpu(h->bat_entries);
	if (!p->nr_bat)
		return vdimg_corrupt(img, "the BAT has no entries");
	if (p->nr_bat > PRL_MAX_BAT) {
		vdimg_err(img, "a BAT of %u entries is larger than the supported %lu", p->nr_bat,
			  PRL_MAX_BAT);
		return -EOPNOTSUPP;
	}
	sectors = le64_to_cpu(h->nb_sectors);
	if (!p->v2)
		sectors &= 0xffffffffULL;	/* v1 uses only the low 32 bits */
	if (!sectors)
		return vdimg_corrupt(img, "the virtual disk size is 0");
	if (sectors > (u64)p->nr_bat * p->tracks)
		return vdimg_corrupt(img, "%llu sectors do not fit in %u clusters of %u sectors",
				     (unsigned long long)sectors, p->nr_bat, p->tracks);
	p->size = sectors * PRL_SECTOR;

	bat_end = PRL_HEADER_SIZE + (u64)p->nr_bat * 4;
	if (bat_end > fsize)
		return vdimg_corrupt(img, "the BAT (%u entries) runs past the end of the file",
				     p->nr_bat);
	v = le32_to_cpu(h->data_off);
	p->data_off = v ? (u64)v * PRL_SECTOR : ALIGN(bat_end, PRL_SECTOR);
	if (p->data_off < bat_end)
		return vdimg_corrupt(img, "the data area (sector %u) overlaps the BAT (%llu bytes)",
				     v, (unsigned long long)bat_end);
	ext = le64_to_cpu(h->ext_off);
	if (ext) {
		if (ext > ~0ULL / PRL_SECTOR || ext * PRL_SECTOR < p->data_off ||
		    ext * PRL_SECTOR > fsize || fsize - ext * PRL_SECTOR < p->cluster)
			return vdimg_corrupt(img,
					     "the format extension (sector %llu) is not in the data area",
					     (unsigned long long)ext);
		p->ext_off = ext * PRL_SECTOR;
	}
	p->found_inuse = le32_to_cpu(h->inuse);
	if (p->found_inuse && p->found_inuse != PRL_INUSE_OPEN &&
	    p->found_inuse != PRL_INUSE_CLOSED)
		vdimg_warn(img, "unknown in-use value %#x in the header", p->found_inuse);
	return 0;
}

/* sector of the cluster BAT entry @i points at */
static u64 prl_sector_of(const struct prl *p, u32 i)
{
	return (u64)p->bat[i] * p->mult;
}

/* entry @a sorts before entry @b: by the sector they point at, then by their index */
static bool prl_before(const struct prl *p, u32 a, u32 b)
{
	u64 sa = prl_sector_of(p, a), sb = prl_sector_of(p, b);

	return sa < sb || (sa == sb && a < b);
}

/* heap sort of @idx[0..n) with prl_before() */
static void prl_sift(const struct prl *p, u32 *idx, u32 root, u32 n)
{
	for (;;) {
		u32 child = 2 * root + 1, t;

		if (child >= n)
			return;
		if (child + 1 < n && prl_before(p, idx[child], idx[child + 1]))
			child++;
		if (!prl_before(p, idx[root], idx[child]))
			return;
		t = idx[root];
		idx[root] = idx[child];
		idx[child] = t;
		root = child;
	}
}

static void prl_sort(const struct prl *p, u32 *idx, u32 n)
{
	u32 i, t;

	for (i = n / 2; i-- > 0; )
		prl_sift(p, idx, i, n);
	for (i = n; i-- > 1; ) {
		t = idx[0];
		idx[0] = idx[i];
		idx[i] = t;
		prl_sift(p, idx, 0, i);
	}
}

/*
 * Drop entry @i (check --repair) or fail the open. Counted in @p->repairs; nothing is written
 * before ->check() repairs, and the image refuses writes until then.
 */
static int prl_bad_entry(struct vdimg_image *img, struct prl *p, u32 i, const char *why,
			 bool repair)
{
	if (!repair)
		return vdimg_corrupt(img, "BAT entry %u (%u) %s", i, p->bat[i], why);
	vdimg_warn(img, "BAT entry %u (%u) %s: marking the cluster unallocated", i, p->bat[i], why);
	p->bat[i] = 0;
	p->repairs++;
	return 0;
}

/*
 * Read the BAT and check every entry: inside the data area and the file, aligned to clusters from
 * the start of the data area (v1), no two clusters overlapping each other or the extension cluster.
 * Also sets the allocation cursor past everything the file holds; on a block device, whose size
 * is not the image's, past the last cluster the BAT references.
 */
static int prl_read_bat(struct vdimg_image *img, struct prl *p, u64 fsize, bool repair)
{
	u64 end = vdimg_file_fixed_size(p->file) ? p->data_off : max(p->data_off, fsize);
	u64 last = 0;
	u32 *idx = NULL, n = 0, i, k = 0;
	int ret;

	p->bat = vdimg_alloc((size_t)p->nr_bat * 4);	/* read whole below */
	p->chunk_dirty = vdimg_zalloc(DIV_ROUND_UP(DIV_ROUND_UP(p->nr_bat, PRL_BAT_CHUNK), 64) * 8);
	if (!p->bat || !p->chunk_dirty)
		return -ENOMEM;
	ret = vdimg_file_read(p->file, p->bat, (size_t)p->nr_bat * 4, PRL_HEADER_SIZE);
	if (ret)
		return ret;
	for (i = 0; i < p->nr_bat; i++) {
		u64 off, valid, start = (u64)i * p->cluster, two;
		u32 e;

		/* two free (zero) entries need no conversion: one step (two million in 2 TiB) */
		if (!(i & 1) && i + 1 < p->nr_bat) {
			memcpy(&two, &p->bat[i], sizeof(two));
			if (!two) {
				i++;
				continue;
			}
		}
		e = le32_to_cpu(((const __le32 *)p->bat)[i]);
		p->bat[i] = e;
		if (!e)
			continue;
		off = prl_entry_offset(p, e);
		valid = start < p->size ? min_t(u64, p->cluster, p->size - start) : p->cluster;
		if (off < p->data_off)
			ret = prl_bad_entry(img, p, i, "points into the header or the BAT", repair);
		else if (off > fsize || fsize - off < valid)
			ret = prl_bad_entry(img, p, i, "points past the end of the file", repair);
		else if (!p->v2 && (off - p->data_off) % p->cluster)
			ret = prl_bad_entry(img, p, i, "is not on a cluster boundary", repair);
		else if (p->ext_off && off < p->ext_off + p->cluster &&
			 p->ext_off < off + p->cluster)
			ret = prl_bad_entry(img, p, i, "overlaps the format extension cluster",
					    repair);
		if (ret)
			return ret;
		if (p->bat[i])
			n++;
	}

	/* no two entries share a cluster, or part of one */
	idx = vdimg_zalloc(max_t(size_t, n, 1) * 4);
	if (!idx)
		return -ENOMEM;
	for (i = 0, n = 0; i < p->nr_bat; i++)
		if (p->bat[i])
			idx[n++] = i;
	prl_sort(p, idx, n);
	/* of two overlapping entries the later (in file order, then BAT order) goes */
	for (i = 1, k = 0; i < n && !ret; i++) {
		u64 prev = prl_sector_of(p, idx[k]), cur = prl_sector_of(p, idx[i]);

		if (cur - prev >= p->tracks) {
			k = i;
			continue;
		}
		ret = prl_bad_entry(img, p, idx[i], cur == prev ? "is used by another entry too" :
				    "overlaps another entry's cluster", repair);
	}
	if (n)
		last = prl_entry_offset(p, p->bat[idx[k]]) + p->cluster;
	vdimg_free(idx);
	if (ret)
		return ret;

	/* new clusters go after everything, aligned as the format wants */
	end = max(end, last);
	if (p->ext_off)
		end = max(end, p->ext_off + p->cluster);
	if (p->v2)
		p->next_off = DIV_ROUND_UP(end, (u64)p->cluster) * p->cluster;
	else
		p->next_off = p->data_off +
			      DIV_ROUND_UP(end - p->data_off, (u64)p->cluster) * p->cluster;
	return 0;
}

static void prl_free(struct prl *p)
{
	vdimg_free(p->bat);
	vdimg_free(p->chunk_dirty);
	vdimg_mutex_destroy(&p->map_lock);
	vdimg_mutex_destroy(&p->meta_lock);
	vdimg_free(p);
}

/* open one file of the layer (the whole layer, or one part of a split storage) */
static int prl_open_part(struct vdimg_image *img, struct vdimg_file *file, unsigned int flags,
			 struct prl **out)
{
	u64 fsize = vdimg_file_size(file);
	bool repair = flags & VDIMG_OPEN_REPAIR;
	struct prl *p;
	int ret;

	p = vdimg_zalloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->img = img;
	p->file = file;
	vdimg_mutex_init(&p->map_lock);
	vdimg_mutex_init(&p->meta_lock);
	p->writable = !(flags & VDIMG_OPEN_READ_ONLY);

	ret = prl_read_header(img, p, fsize);
	if (ret)
		goto out_free;
	ret = prl_read_bat(img, p, fsize, repair);
	if (ret)
		goto out_free;
	if (p->writable && p->found_inuse == PRL_INUSE_OPEN && !repair) {
		vdimg_err(img, "the image was not closed cleanly (in use flag set): it opens read-only until `vdimgctl check --repair`");
		ret = -EUCLEAN;
		goto out_free;
	}
	*out = p;
	return 0;

out_free:
	prl_free(p);
	return ret;
}

/*
 * After a discard unmapped clusters: drop the end of the file that no entry uses any more (qemu-img
 * check counts it as leaked); the zeroed entries are synced. Not with a format extension, whose
 * clusters the kernel-shared code does not know. Only a leak is left if it fails.
 */
static void prl_trim(struct prl *p)
{
	u64 end = p->data_off, fsize = vdimg_file_size(p->file);
	int ret;
	u32 i;

	if (!p->freed || p->hdr.ext_off || vdimg_file_fixed_size(p->file))
		return;		/* a block device keeps its size */
	vdimg_mutex_lock(&p->map_lock);
	for (i = 0; i < p->nr_bat; i++)
		if (p->bat[i])
			end = max(end, prl_entry_offset(p, p->bat[i]) + p->cluster);
	vdimg_mutex_unlock(&p->map_lock);
	if (fsize <= end)
		return;
	ret = vdimg_file_truncate(p->file, end);
	if (!ret)
		ret = vdimg_file_sync(p->file);
	if (ret)
		vdimg_warn(p->img, "cannot give back the unused end of the file (error %d)", ret);
}

/*
 * a clean close of one part: BAT written, synced, the unused end trimmed, then the in-use flag
 * cleared and synced
 */
static void prl_close_part(struct prl *p)
{
	int ret;

	if (p->writable) {
		vdimg_mutex_lock(&p->meta_lock);
		ret = prl_flush_locked(p);
		if (!ret)
			ret = vdimg_file_sync(p->file);
		if (!ret)
			prl_trim(p);
		if (!ret && p->inuse_written)
			ret = prl_write_header(p, PRL_INUSE_CLOSED);
		if (!ret && p->inuse_written)
			ret = vdimg_file_sync(p->file);
		vdimg_mutex_unlock(&p->meta_lock);
		if (ret)
			vdimg_err(p->img, "metadata could not be written at close (error %d)", ret);
	}
	prl_free(p);
}

static void prl_disk_free(struct prl_disk *d)
{
	u32 k;

	for (k = 0; k < d->nr; k++)
		prl_close_part(d->part[k]);
	vdimg_free(d);
}

static int prl_open(struct vdimg_image *img, unsigned int flags)
{
	u32 nr = img->nr_extents + 1, k, i;
	bool full = true;
	struct prl_disk *d;
	u64 size = 0;
	int ret;

	if (nr > PRL_MAX_PARTS) {
		vdimg_err(img, "a layer of %u parts is more than the supported %u", nr,
			  PRL_MAX_PARTS);
		return -EOPNOTSUPP;
	}
	d = vdimg_zalloc(sizeof(*d) + nr * sizeof(d->part[0]));
	if (!d)
		return -ENOMEM;
	for (k = 0; k < nr; k++) {
		struct vdimg_file *file = k ? img->extents[k - 1] : img->file;
		struct prl *p;

		ret = prl_open_part(img, file, flags, &p);
		if (ret) {
			if (nr > 1)
				vdimg_err(img, "part %u of the split image cannot be used", k + 1);
			goto out_free;
		}
		d->part[d->nr++] = p;
		/*
		 * The parts follow each other in the virtual disk; the driver allocates in units
		 * of the cluster from offset 0, so every part starts on one and shares its size.
		 */
		if (k && (p->cluster != d->part[0]->cluster || size % p->cluster)) {
			vdimg_err(img, "part %u of the split image has %u-byte clusters at offset %llu: the parts must share one cluster size and start on cluster boundaries",
				  k + 1, p->cluster, (unsigned long long)size);
			ret = -EOPNOTSUPP;
			goto out_free;
		}
		p->base = size;
		size += p->size;
		for (i = 0; full && i < p->nr_bat; i++)
			full = p->bat[i];
	}
	for (k = 0; k < nr && !(flags & (VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_REPAIR)); k++) {
		struct prl *p = d->part[k];

		/* from now until a clean close the image says it is open for writing */
		vdimg_mutex_lock(&p->meta_lock);
		ret = prl_write_header(p, PRL_INUSE_OPEN);
		vdimg_mutex_unlock(&p->meta_lock);
		if (ret)
			goto out_free;
		p->inuse_written = true;
	}

	img->size = size;
	img->lbs = 512;
	img->pbs = 512;
	/*
	 * every cluster allocated: never allocates, unless it is writable (a discard may unmap
	 * clusters, later written again)
	 */
	img->alloc_unit = full && (flags & VDIMG_OPEN_READ_ONLY) ? 0 : d->part[0]->cluster;
	vdimg_strscpy(img->variant, !full ? "expanding" : "preallocated", sizeof(img->variant));
	img->priv = d;
	if (VDIMG_LIBRARY) {
		ret = prl_bundle_note(img);
		if (ret) {
			img->priv = NULL;
			goto out_free;
		}
	}
	return 0;

out_free:
	prl_disk_free(d);
	return ret;
}

static u64 prl_metadata_bytes(struct vdimg_image *img)
{
	struct prl_disk *d = img->priv;
	u64 n = 0;
	u32 k;

	/* each part's BAT and its bitmap of dirty BAT chunks */
	for (k = 0; k < d->nr; k++) {
		struct prl *p = d->part[k];

		vdimg_mutex_lock(&p->map_lock);
		n += (u64)p->nr_bat * 4 +
		     DIV_ROUND_UP(DIV_ROUND_UP((u64)p->nr_bat, PRL_BAT_CHUNK), 64) * 8;
		vdimg_mutex_unlock(&p->map_lock);
	}
	return n;
}

static void prl_close(struct vdimg_image *img)
{
	struct prl_disk *d = img->priv;

	if (d)
		prl_disk_free(d);
	img->priv = NULL;
}

/*
 * Online grow of a single-file image (and the offline resize's grow): the BAT may take entries up
 * to the data area (qemu and Parallels start the data on a cluster boundary, so a 1 MiB-cluster
 * image has room for 262128 entries, 256 GiB; a header without data_off puts the data at the next
 * sector after the BAT, which a BAT growing within that sector does not move). The new entries are
 * written free and synced first, then the header's bat_entries and nb_sectors in one 64-byte write
 * (within sector 0, so a crash leaves the old or the new pair; a BAT longer than the size needs is
 * valid), then the file is synced. A bundle's split storage or snapshot is resized with its bundle
 * (its DiskDescriptor.xml records the size), not here.
 */
static int prl_grow(struct vdimg_image *img, u64 new_size)
{
	struct prl_disk *d = img->priv;
	struct prl *p = d->part[0];
	u64 n64 = DIV_ROUND_UP(new_size, (u64)p->cluster), room, old = img->size;
	u32 n, old_nr = p->nr_bat;
	u32 *nbat = NULL, *obat;
	u64 *ndirty = NULL, *odirty;
	__le32 *zero = NULL;
	__le64 sectors;
	__le32 entries;
	int ret;

	if (!p->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (new_size <= old || new_size % PRL_SECTOR)
		return -EINVAL;
	if (p->repairs) {
		vdimg_err(img, "cannot grow a damaged image: run vdimgctl check --repair");
		return -EUCLEAN;
	}
	if (d->nr != 1 || (img->flags & VDIMG_IMG_HAS_PARENT)) {
		vdimg_err(img, "cannot grow a bundle's split storage or snapshot here: the bundle's DiskDescriptor.xml records its size");
		return -EOPNOTSUPP;
	}
	if (!p->v2 && new_size / PRL_SECTOR > U32_MAX) {
		vdimg_err(img, "cannot grow past %llu bytes: a version 1 image records its size in 32 bits",
			  (unsigned long long)U32_MAX * PRL_SECTOR);
		return -EFBIG;
	}
	room = min_t(u64, (p->data_off - PRL_HEADER_SIZE) / 4, PRL_MAX_BAT);
	if (n64 > room) {
		vdimg_err(img, "cannot grow past %llu bytes: the BAT has room for %llu entries before the data area at %llu (convert to a new image)",
			  (unsigned long long)(room * p->cluster), (unsigned long long)room,
			  (unsigned long long)p->data_off);
		return -EFBIG;
	}
	n = n64;
	ret = prl_touch(p, false);
	if (ret)
		return ret;
	if (n > old_nr) {
		nbat = vdimg_zalloc((size_t)n * 4);
		ndirty = vdimg_zalloc(DIV_ROUND_UP(DIV_ROUND_UP((size_t)n, PRL_BAT_CHUNK), 64) * 8);
		zero = vdimg_zalloc((size_t)(n - old_nr) * 4);
		if (!nbat || !ndirty || !zero) {
			ret = -ENOMEM;
			goto out;
		}
		/* the room past the BAT may hold anything (a shrink, another tool): free entries */
		vdimg_mutex_lock(&p->meta_lock);
		ret = vdimg_file_write(p->file, zero, (size_t)(n - old_nr) * 4,
				       PRL_HEADER_SIZE + (u64)old_nr * 4);
		if (!ret)
			ret = vdimg_file_sync(p->file);
		vdimg_mutex_unlock(&p->meta_lock);
		if (ret)
			goto out;
		vdimg_mutex_lock(&p->map_lock);
		memcpy(nbat, p->bat, (size_t)old_nr * 4);
		memcpy(ndirty, p->chunk_dirty,
		       DIV_ROUND_UP(DIV_ROUND_UP((size_t)old_nr, PRL_BAT_CHUNK), 64) * 8);
		obat = p->bat;
		odirty = p->chunk_dirty;
		p->bat = nbat;
		p->chunk_dirty = ndirty;
		p->nr_bat = n;
		vdimg_mutex_unlock(&p->map_lock);
		nbat = obat;		/* freed below */
		ndirty = odirty;
	}
	vdimg_mutex_lock(&p->map_lock);
	p->size = new_size;
	vdimg_mutex_unlock(&p->map_lock);
	img->size = new_size;
	ret = vdimg_grow_zero_new(img, old);
	if (!ret)
		ret = vdimg_file_sync(p->file);
	if (!ret) {
		vdimg_mutex_lock(&p->meta_lock);
		entries = p->hdr.bat_entries;
		sectors = p->hdr.nb_sectors;
		p->hdr.bat_entries = cpu_to_le32(n);
		p->hdr.nb_sectors = cpu_to_le64(new_size / PRL_SECTOR);
		ret = prl_write_header(p, le32_to_cpu(p->hdr.inuse));
		if (!ret)
			ret = vdimg_file_sync(p->file);
		if (ret) {
			p->hdr.bat_entries = entries;
			p->hdr.nb_sectors = sectors;
		}
		vdimg_mutex_unlock(&p->meta_lock);
	}
	if (ret) {
		/* the longer BAT in memory stays (its new entries are free); the size goes back */
		vdimg_mutex_lock(&p->map_lock);
		p->size = old;
		vdimg_mutex_unlock(&p->map_lock);
		img->size = old;
	}
out:
	vdimg_free(nbat);
	vdimg_free(ndirty);
	vdimg_free(zero);
	return ret;
}

const struct vdimg_format vdimg_parallels_format = {
	.name = "parallels",
	.id = VDIMG_FMT_PARALLELS,
	/* the parts of a split storage; the snapshot links live in the bundle's descriptor */
	.caps = VDIMG_CAP_EXTENT_FILES | VDIMG_CAP_SAME_SIZE_PARENT | VDIMG_CAP_EXTERNAL_PARENT,
	.probe = prl_probe,
	.open = prl_open,
	.close = prl_close,
	.map = prl_map,
	.commit = prl_commit,
	.abort = prl_abort,
	.discard = prl_discard,
	.flush = prl_flush,
	.grow = prl_grow,
	.metadata_bytes = prl_metadata_bytes,
};
