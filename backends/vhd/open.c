// SPDX-License-Identifier: GPL-2.0
/*
 * VHD open and close: Microsoft Virtual Hard Disk images, fixed (data then a footer), dynamic
 * (footer copy, dynamic header, block allocation table, blocks of a sector bitmap and data, footer)
 * and differencing (a dynamic image whose clear bitmap bits defer to a parent): checksums,
 * the footer and its copy, the dynamic header, the BAT checks, damage reports, the parent check,
 * probe, and the struct vdimg_format of vhd. Kernel-shared: compiled into the module and the
 * userspace library; only include/vdimg/platform.h services here, no blk-mq, no libc. Create,
 * check/repair, describe and the parent locators are userspace-only, in tools/lib/formats/vhd/.
 */
#include "vhd.h"

static u32 vhd_checksum(const void *buf, size_t len, size_t csum_off)
{
	const u8 *b = buf;
	u32 sum = 0;
	size_t i;

	for (i = 0; i < len; i++)
		if (i < csum_off || i >= csum_off + 4)
			sum += b[i];
	return ~sum;
}

u32 vhd_footer_csum(const struct vhd_footer *f)
{
	return vhd_checksum(f, sizeof(*f), offsetof(struct vhd_footer, checksum));
}

u32 vhd_hdr_csum(const struct vhd_dyn_header *h)
{
	return vhd_checksum(h, sizeof(*h), offsetof(struct vhd_dyn_header, checksum));
}

static void vhd_fmt_uuid(char *out, const u8 *u)
{
	static const char hex[] = "0123456789abcdef";
	int i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[u[i] >> 4];
		out[o++] = hex[u[i] & 15];
	}
	out[o] = 0;
}

/*
 * The virtual size. Virtual PC ("vpc ") and Virtual Server ("vs  ") size a disk by its CHS geometry
 * and write a larger current size; every other creator (Hyper-V "win ", Disk2VHD "d2v ", qemu,
 * VirtualBox, XenServer) means the footer's current size, which is also the only usable value when
 * the geometry is the maximum (65535/16/255) or zero.
 */
u64 vhd_virtual_size(const struct vhd_footer *f, bool *chs)
{
	u64 cyl = be16_to_cpu(f->cylinders), heads = f->heads, secs = f->sectors;
	u64 chs_sectors = cyl * heads * secs;

	*chs = (!memcmp(f->creator_app, "vpc ", 4) || !memcmp(f->creator_app, "vs  ", 4)) &&
	       chs_sectors && chs_sectors < VHD_CHS_MAX_SECTORS;
	if (*chs)
		return chs_sectors * VHD_SECTOR;
	return be64_to_cpu(f->current_size);
}

/*
 * The geometry the VHD specification's algorithm derives from a sector count (the sector count
 * capped at the largest geometry), as Virtual PC does at creation.
 */
void vhd_geometry(u64 sectors, u16 *cyl, u8 *heads, u8 *spt)
{
	u32 h, s;
	u64 cth;

	sectors = min_t(u64, sectors, VHD_CHS_MAX_SECTORS);
	if (sectors >= 65535ULL * 16 * 63) {
		s = 255;
		h = 16;
	} else {
		s = 17;
		h = max_t(u32, div_u64(div_u64(sectors, s) + 1023, 1024), 4);
		if (div_u64(sectors, s) >= h * 1024ULL || h > 16) {
			s = 31;
			h = 16;
		}
		if (div_u64(sectors, s) >= h * 1024ULL) {
			s = 63;
			h = 16;
		}
	}
	cth = div_u64(sectors, s);
	*cyl = div_u64(cth, h);
	*heads = h;
	*spt = s;
}

/*
 * The current size @size and its geometry in the footer @f. When no geometry expresses @size
 * exactly, the largest one (65535/16/255): readers that size a disk by CHS (qemu for most
 * creators) then take the current size, as for qemu's own force_size images.
 */
void vhd_footer_set_size(struct vhd_footer *f, u64 size)
{
	u16 cyl;
	u8 heads, spt;

	vhd_geometry(size / VHD_SECTOR, &cyl, &heads, &spt);
	if ((u64)cyl * heads * spt != size / VHD_SECTOR) {
		cyl = 65535;
		heads = 16;
		spt = 255;
	}
	f->current_size = cpu_to_be64(size);
	f->cylinders = cpu_to_be16(cyl);
	f->heads = heads;
	f->sectors = spt;
}

static bool vhd_footer_sane(const struct vhd_footer *f)
{
	u32 type = be32_to_cpu(f->disk_type);

	return !memcmp(f->cookie, VHD_FOOTER_COOKIE, 8) &&
	       (be32_to_cpu(f->version) >> 16) == 1 &&
	       type >= VHD_TYPE_FIXED && type <= VHD_TYPE_DIFF;
}

/* Find the footer: at the end (512 or 511 bytes), else the copy at offset 0 of a dynamic image. */
static int vhd_read_footer(struct vdimg_image *img, struct vhd *v, u64 fsize)
{
	struct vhd_footer end, copy;
	bool end_ok = false, copy_ok = false;
	int ret;

	if (fsize < VHD_SECTOR)
		return vdimg_corrupt(img, "file of %llu bytes is too small for a VHD footer",
				     (unsigned long long)fsize);
	ret = vdimg_file_read(img->file, &end, sizeof(end), fsize - VHD_SECTOR);
	if (ret)
		return ret;
	if (vhd_footer_sane(&end)) {
		end_ok = true;
		v->footer_off = fsize - VHD_SECTOR;
	} else {
		/* old Virtual PC versions wrote a 511-byte footer */
		memset(&end, 0, sizeof(end));
		ret = vdimg_file_read(img->file, &end, VHD_SECTOR - 1, fsize - (VHD_SECTOR - 1));
		if (ret)
			return ret;
		if (vhd_footer_sane(&end)) {
			end_ok = true;
			v->footer_off = fsize - (VHD_SECTOR - 1);
			v->damage |= VHD_DMG_FOOTER_SHORT;
		}
	}
	ret = vdimg_file_read(img->file, &copy, sizeof(copy), 0);
	if (ret)
		return ret;
	copy_ok = vhd_footer_sane(&copy) && be32_to_cpu(copy.disk_type) != VHD_TYPE_FIXED;
	/*
	 * On a block device the last sector may hold what the device held before: a footer of
	 * another image (another UUID than the good copy's) is not this image's.
	 */
	if (v->fixed_file && end_ok && copy_ok && memcmp(end.uuid, copy.uuid, 16) &&
	    be32_to_cpu(copy.checksum) == vhd_footer_csum(&copy))
		end_ok = false;

	if (end_ok) {
		v->footer = end;
		if (be32_to_cpu(end.checksum) != vhd_footer_csum(&end)) {
			v->damage |= VHD_DMG_FOOTER_CSUM;
			if (copy_ok && be32_to_cpu(copy.checksum) == vhd_footer_csum(&copy) &&
			    copy.disk_type == end.disk_type)
				v->footer = copy;
		}
	} else if (copy_ok && v->fixed_file) {
		/*
		 * A device: the footer may follow the data (an image copied onto a device larger
		 * than itself); vhd_find_footer() looks there once the BAT says where the data
		 * ends. Blocks must end before the last sector, where a writer puts the footer.
		 */
		v->footer = copy;
		v->footer_off = fsize - VHD_SECTOR;
		v->damage |= VHD_DMG_FOOTER_MISSING;	/* until vhd_find_footer() finds it */
		if (be32_to_cpu(copy.checksum) != vhd_footer_csum(&copy))
			v->damage |= VHD_DMG_FOOTER_CSUM;
	} else if (copy_ok) {
		v->footer = copy;
		v->footer_off = fsize;	/* no footer: blocks may reach the end of the file */
		v->damage |= VHD_DMG_FOOTER_MISSING;
		if (be32_to_cpu(copy.checksum) != vhd_footer_csum(&copy))
			v->damage |= VHD_DMG_FOOTER_CSUM;
	} else {
		return vdimg_corrupt(img,
				     "no valid VHD footer at the end of the file or at offset 0");
	}
	v->type = be32_to_cpu(v->footer.disk_type);
	if (v->type != VHD_TYPE_FIXED && end_ok &&
	    (!copy_ok || be32_to_cpu(copy.checksum) != vhd_footer_csum(&copy)))
		v->damage |= VHD_DMG_COPY;
	return 0;
}

/* In-place heap sort of u64 keys (no recursion, no allocation). */
static void vhd_sort_u64(u64 *a, u32 n)
{
	u32 start = n / 2, end = n, root, child;
	u64 t;

	while (end > 1) {
		if (start > 0) {
			start--;
		} else {
			end--;
			t = a[end];
			a[end] = a[0];
			a[0] = t;
		}
		root = start;
		while ((child = 2 * root + 1) < end) {
			if (child + 1 < end && a[child] < a[child + 1])
				child++;
			if (a[root] >= a[child])
				break;
			t = a[root];
			a[root] = a[child];
			a[child] = t;
			root = child;
		}
	}
}

bool vhd_overlaps(u64 s1, u64 e1, u64 s2, u64 e2)
{
	return s1 < e2 && s2 < e1;
}

/* bytes of block @blk that the virtual size uses (the last block may be partial) */
u64 vhd_block_used(const struct vdimg_image *img, const struct vhd *v, u32 blk)
{
	u64 start = (u64)blk << v->block_shift;

	return min_t(u64, v->block_size, img->size - start);
}

/*
 * The end of the parent locators' data (0 without any), for an image on a device, where nothing
 * else says where the metadata ends. The space field counts sectors (the spec) or bytes (Windows):
 * a value below one sector is taken as sectors, as the tool's locator code does. A locator
 * reaching past the footer's place counts up to that place only: a new block then finds no room
 * and fails with ENOSPC instead of overwriting it.
 */
static u64 vhd_locators_end(const struct vhd *v)
{
	u64 end = 0, off, len, e;
	u32 i;

	for (i = 0; i < VHD_NR_LOCATORS; i++) {
		const struct vhd_locator *l = &v->hdr->loc[i];

		if (be32_to_cpu(l->code) == VHD_PLAT_NONE)
			continue;
		off = be64_to_cpu(l->offset);
		len = be32_to_cpu(l->space);
		len = len >= VHD_SECTOR ? len : len * VHD_SECTOR;
		len = max_t(u64, len, be32_to_cpu(l->length));
		if (!off || off >= v->footer_off)
			continue;
		if (check_add_overflow(off, len, &e) || e > v->footer_off)
			e = v->footer_off;
		end = max(end, e);
	}
	return end;
}

/*
 * Check every used BAT entry: its block must lie inside the file before the footer, outside the
 * metadata, and not overlap another block. Bad entries get VHD_BLK_BAD. Sets data_end.
 */
static int vhd_check_bat(struct vdimg_image *img, struct vhd *v)
{
	u64 meta[3][2] = {
		{ 0, VHD_SECTOR },
		{ v->hdr_off, v->hdr_off + sizeof(struct vhd_dyn_header) },
		{ v->bat_off, v->bat_off + ALIGN((u64)v->max_entries * 4, VHD_SECTOR) },
	};
	u64 *keys, end, prev_end = 0, data_end = v->fixed_file ? 0 : v->footer_off;
	u32 i, n = 0, bad = 0, blk;
	int m;

	for (m = 0; m < 3; m++)
		data_end = max(data_end, meta[m][1]);
	/* a device: the data ends where the metadata says, parent locators' data included */
	if (v->fixed_file)
		data_end = max(data_end, vhd_locators_end(v));
	/* room for the used entries only: an empty image needs none */
	for (i = 0; i < v->nr_blocks; i++)
		if (v->bat[i] != cpu_to_be32(VHD_BAT_FREE))
			n++;
	keys = n ? vdimg_alloc((size_t)n * sizeof(u64)) : NULL;
	if (n && !keys)
		return -ENOMEM;
	n = 0;
	/* nothing allocated (no keys): nothing to check */
	for (i = 0; keys && i < v->nr_blocks; i++) {
		u32 e = vhd_bat_get(v, i);
		u64 start = (u64)e * VHD_SECTOR;

		if (e == VHD_BAT_FREE)
			continue;
		end = start + v->bitmap_size + vhd_block_used(img, v, i);
		for (m = 0; m < 3; m++)
			if (vhd_overlaps(start, end, meta[m][0], meta[m][1]))
				break;
		/*
		 * A block whose data lies wholly past the end of the file (from the old footer's
		 * place on) never reached the disk: a writer appended it and its BAT entry reached
		 * the disk before the block did (qemu, Virtual PC and older vdimg versions write
		 * the entry without a sync). Read as free, as qemu reads such a block as zeros.
		 * Only near the end, where an append goes: an entry far past it is corrupt.
		 */
		if (m == 3 && start >= v->footer_off && start + v->bitmap_size >= v->file_size &&
		    start < v->file_size + (u64)VHD_STALE_MAX * (v->bitmap_size + v->block_size)) {
			v->bat[i] = cpu_to_be32(VHD_BAT_FREE);
			v->state[i] |= VHD_BLK_STALE;
			v->nr_stale++;
			continue;
		}
		if (m < 3 || end > v->footer_off) {
			v->state[i] |= VHD_BLK_BAD;
			bad++;
			continue;
		}
		keys[n++] = ((u64)e << 32) | i;
	}
	vhd_sort_u64(keys, n);
	for (i = 0; i < n; i++) {
		u64 start = (keys[i] >> 32) * VHD_SECTOR;

		blk = (u32)keys[i];
		end = start + v->bitmap_size + vhd_block_used(img, v, blk);
		if (i && start < prev_end) {
			v->state[blk] |= VHD_BLK_BAD;	/* the first block keeps the space */
			bad++;
			continue;
		}
		prev_end = end;
		/* a full block's space is the block's, even past the virtual size */
		data_end = max(data_end, start + v->bitmap_size + v->block_size);
	}
	vdimg_free(keys);
	v->data_end = ALIGN(data_end, VHD_SECTOR);
	if (v->nr_stale)
		vdimg_warn(img, "%u BAT entries point past the end of the file (an interrupted append): they read as unallocated",
			   v->nr_stale);
	if (v->nr_stale > VHD_STALE_MAX)
		v->damage |= VHD_DMG_BAT;
	if (bad) {
		v->damage |= VHD_DMG_BAT;
		vdimg_err(img, "%u BAT entries point past the end of the file, into metadata or into another block",
			  bad);
	}
	return 0;
}

/*
 * A dynamic or differencing image on a block device whose last sector holds no footer of its own:
 * look right after the data (where a copy of the image file onto a larger device, or qemu writing
 * on the device, leaves it; vdimg's and Hyper-V's new images pad it to where the first block's data
 * would start on a 4 KiB boundary), else the copy at offset 0 stands in and the footer is missing
 * (an interrupted write; a writable open puts it at the end again).
 */
static int vhd_find_footer(struct vdimg_image *img, struct vhd *v)
{
	/* right after the data, or where its first block would start 4 KiB-aligned (Hyper-V) */
	u64 at[2] = { v->data_end, ALIGN(v->data_end + VHD_SECTOR, (u64)SZ_4K) - VHD_SECTOR };
	struct vhd_footer f;
	int i, ret;

	for (i = 0; i < 2 && (v->damage & VHD_DMG_FOOTER_MISSING); i++) {
		if (at[i] >= v->footer_off)
			break;
		ret = vdimg_file_read(img->file, &f, sizeof(f), at[i]);
		if (ret)
			return ret;
		if (vhd_footer_sane(&f) && be32_to_cpu(f.checksum) == vhd_footer_csum(&f) &&
		    !memcmp(f.uuid, v->footer.uuid, 16) && f.disk_type == v->footer.disk_type) {
			v->footer_off = at[i];
			v->damage &= ~VHD_DMG_FOOTER_MISSING;
		}
	}
	return 0;
}

static int vhd_open_dynamic(struct vdimg_image *img, struct vhd *v)
{
	struct vhd_dyn_header *h;
	u64 limit = v->footer_off, bat_full, need;
	u32 bs, mte;
	int ret;

	v->hdr_off = be64_to_cpu(v->footer.data_offset);
	if (v->hdr_off < VHD_SECTOR || v->hdr_off >= limit)
		return vdimg_corrupt(img, "dynamic header offset %llu is outside the file",
				     (unsigned long long)v->hdr_off);
	h = vdimg_zalloc(sizeof(*h));
	if (!h)
		return -ENOMEM;
	v->hdr = h;
	/* a truncated header is refused below, after its fields say what else is wrong */
	ret = vdimg_file_read(img->file, h, min_t(u64, sizeof(*h), limit - v->hdr_off),
			      v->hdr_off);
	if (ret)
		return ret;
	if (memcmp(h->cookie, VHD_DYN_COOKIE, 8))
		return vdimg_corrupt(img, "no dynamic header (cookie \"cxsparse\") at offset %llu",
				     (unsigned long long)v->hdr_off);
	if ((be32_to_cpu(h->version) >> 16) != 1)
		return vdimg_corrupt(img, "dynamic header version %#x is not 1.x",
				     be32_to_cpu(h->version));
	if (be32_to_cpu(h->checksum) != vhd_hdr_csum(h))
		v->damage |= VHD_DMG_HDR_CSUM;

	bs = be32_to_cpu(h->block_size);
	if (!is_power_of_2(bs) || bs < VHD_BLOCK_MIN || bs > VHD_BLOCK_MAX)
		return vdimg_corrupt(img, "block size %u is not a power of two in [512 B, 256 MiB]",
				     bs);
	v->block_size = bs;
	v->block_shift = ilog2(bs);
	v->bitmap_size = ALIGN(bs / VHD_SECTOR / 8, VHD_SECTOR);

	mte = be32_to_cpu(h->max_table_entries);
	v->max_entries = mte;
	v->bat_off = be64_to_cpu(h->table_offset);
	bat_full = ALIGN((u64)mte * 4, VHD_SECTOR);
	if (v->bat_off > limit || bat_full > limit - v->bat_off)
		return vdimg_corrupt(img,
				     "BAT of %u entries at offset %llu does not fit in the file (max table entries too large?)",
				     mte, (unsigned long long)v->bat_off);
	if (vhd_overlaps(v->bat_off, v->bat_off + bat_full, 0, VHD_SECTOR) ||
	    vhd_overlaps(v->bat_off, v->bat_off + bat_full, v->hdr_off,
			 v->hdr_off + sizeof(*h)))
		return vdimg_corrupt(img, "BAT at offset %llu overlaps the header",
				     (unsigned long long)v->bat_off);
	if (limit - v->hdr_off < sizeof(*h))
		return vdimg_corrupt(img, "the dynamic header at offset %llu is truncated",
				     (unsigned long long)v->hdr_off);
	need = (img->size + bs - 1) >> v->block_shift;
	if (need > mte)
		return vdimg_corrupt(img,
				     "virtual size %llu needs %llu blocks of %u bytes, the BAT has %u",
				     (unsigned long long)img->size, (unsigned long long)need,
				     bs, mte);
	v->nr_blocks = need;
	v->bat_len = ALIGN(need * 4, VHD_SECTOR);
	if (v->bat_len > VHD_BAT_MAX_BYTES) {
		vdimg_err(img, "a BAT of %u entries is larger than vdimg supports", v->nr_blocks);
		return -EOPNOTSUPP;
	}
	v->bat = vdimg_alloc(v->bat_len);	/* read whole below */
	v->state = vdimg_zalloc(max_t(u32, v->nr_blocks, 1));
	if (!v->bat || !v->state)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, v->bat, v->bat_len, v->bat_off);
	if (ret)
		return ret;

	v->bm_slots = min_t(u32, max_t(u32, VHD_BM_CACHE_BYTES / v->bitmap_size, 4), 1024);
	v->bm_slots = min(v->bm_slots, max_t(u32, v->nr_blocks, 1));
	v->bm_blk = vdimg_zalloc(v->bm_slots * sizeof(u32));
	v->bm_data = vdimg_zalloc((size_t)v->bm_slots * v->bitmap_size);
	if (!v->bm_blk || !v->bm_data)
		return -ENOMEM;
	memset(v->bm_blk, 0xff, v->bm_slots * sizeof(u32));

	if (v->type == VHD_TYPE_DIFF) {
		memcpy(img->parent_uuid, h->parent_uuid, 16);
		img->flags |= VDIMG_IMG_HAS_PARENT | VDIMG_IMG_HAS_PARENT_UUID;
	}
	img->alloc_unit = bs;
	ret = vhd_check_bat(img, v);
	if (!ret && v->fixed_file)
		ret = vhd_find_footer(img, v);
	return ret;
}

static void vhd_free(struct vhd *v)
{
	if (VDIMG_LIBRARY)
		vhd_free_locators(v);
	vdimg_free(v->bm_data);
	vdimg_free(v->bm_blk);
	vdimg_free(v->state);
	vdimg_free(v->bat);
	vdimg_free(v->hdr);
	vdimg_mutex_destroy(&v->io_lock);
	vdimg_mutex_destroy(&v->lock);
	vdimg_free(v);
}

static void vhd_report_damage(struct vdimg_image *img, struct vhd *v)
{
	if (v->damage & VHD_DMG_FOOTER_CSUM)
		vdimg_warn(img, "the footer checksum is wrong");
	if (v->damage & VHD_DMG_FOOTER_MISSING)
		vdimg_warn(img, "no footer at the end of the file; using the copy at offset 0");
	if (v->damage & VHD_DMG_FOOTER_SHORT)
		vdimg_warn(img, "the footer at the end is 511 bytes long");
	if (v->damage & VHD_DMG_COPY)
		vdimg_warn(img, "the footer copy at offset 0 is missing or its checksum is wrong");
	if (v->damage & VHD_DMG_HDR_CSUM)
		vdimg_warn(img, "the dynamic header checksum is wrong");
}

/*
 * A writable open of an image a crash left in the middle of an append: free the stale BAT entries
 * on disk, sync, then write the footer at the end if it is missing (the blocks' bitmaps and
 * data overwrote the old one), sync. Both states are what an interrupted append leaves (by vdimg
 * itself: the footer; by other writers: both), so they are repaired, not refused.
 */
static int vhd_finish_append(struct vdimg_image *img, struct vhd *v)
{
	u32 blk, sec = VHD_NO_BLOCK;
	int ret = 0;

	vdimg_mutex_lock(&v->io_lock);
	for (blk = 0; !ret && v->nr_stale && blk < v->nr_blocks; blk++) {
		if (!(v->state[blk] & VHD_BLK_STALE) || blk / (VHD_SECTOR / 4) == sec)
			continue;
		sec = blk / (VHD_SECTOR / 4);
		ret = vhd_write_bat_sector(img, v, blk);
	}
	if (!ret && v->nr_stale)
		ret = vdimg_file_sync(img->file);
	if (!ret && (v->damage & VHD_DMG_FOOTER_MISSING)) {
		/* on a device, in its last sector (vhd_read_footer() set footer_off there) */
		u64 at = v->fixed_file ? v->footer_off : v->data_end;

		ret = vhd_write_footer(img, v, at);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret) {
			v->footer_off = at;
			v->damage &= ~VHD_DMG_FOOTER_MISSING;
		}
	}
	if (!ret && v->nr_stale) {
		for (blk = 0; blk < v->nr_blocks; blk++)
			v->state[blk] &= ~VHD_BLK_STALE;
		vdimg_warn(img, "freed %u BAT entries that pointed past the end of the file",
			   v->nr_stale);
		v->nr_stale = 0;
	}
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}

static int vhd_open(struct vdimg_image *img, unsigned int flags)
{
	u64 fsize = vdimg_file_size(img->file);
	bool ro = flags & VDIMG_OPEN_READ_ONLY;
	struct vhd *v;
	bool chs;
	int ret;

	BUILD_BUG_ON(sizeof(struct vhd_footer) != 512);
	BUILD_BUG_ON(sizeof(struct vhd_dyn_header) != 1024);
	BUILD_BUG_ON(sizeof(struct vhd_locator) != 24);

	v = vdimg_zalloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	vdimg_mutex_init(&v->lock);
	vdimg_mutex_init(&v->io_lock);
	v->repair_mode = !ro && (flags & VDIMG_OPEN_REPAIR);
	if (ro)
		img->flags |= VDIMG_IMG_READ_ONLY;

	v->file_size = fsize;
	v->fixed_file = vdimg_file_fixed_size(img->file);
	ret = vhd_read_footer(img, v, fsize);
	if (ret)
		goto fail;
	img->size = ALIGN_DOWN(vhd_virtual_size(&v->footer, &chs), VHD_SECTOR);
	if (!img->size || img->size > (1ULL << 50)) {
		ret = vdimg_corrupt(img, "virtual size %llu is zero or absurd",
				    (unsigned long long)img->size);
		goto fail;
	}
	img->lbs = VHD_SECTOR;
	img->pbs = VHD_SECTOR;
	memcpy(img->uuid, v->footer.uuid, 16);
	img->flags |= VDIMG_IMG_HAS_UUID;

	switch (v->type) {
	case VHD_TYPE_FIXED:
		vdimg_strscpy(img->variant, "fixed", sizeof(img->variant));
		if (img->size > v->footer_off) {
			ret = vdimg_corrupt(img, "fixed image of %llu bytes is truncated to %llu",
					    (unsigned long long)img->size,
					    (unsigned long long)v->footer_off);
			goto fail;
		}
		v->data_end = v->footer_off;
		break;
	case VHD_TYPE_DYNAMIC:
	case VHD_TYPE_DIFF:
		vdimg_strscpy(img->variant, v->type == VHD_TYPE_DIFF ? "differencing" : "dynamic",
			      sizeof(img->variant));
		ret = vhd_open_dynamic(img, v);
		if (ret)
			goto fail;
		break;
	}

	vhd_report_damage(img, v);
	/* an interrupted append, with a good footer copy: repaired by a writable open */
	if (!ro && !(v->damage & ~VHD_DMG_FOOTER_MISSING) && v->type != VHD_TYPE_FIXED) {
		ret = vhd_finish_append(img, v);
		if (ret)
			goto fail;
	}
	if (v->damage && !ro && !v->repair_mode) {
		vdimg_err(img, "refusing a writable open of a damaged image: run vdimgctl check --repair");
		ret = -EUCLEAN;
		goto fail;
	}
	if (v->damage & VHD_DMG_BAT)
		vdimg_warn(img, "requests to the blocks with bad BAT entries will fail");
	img->priv = v;
	if (VDIMG_LIBRARY && v->type == VHD_TYPE_DIFF)
		vhd_parse_locators(img, v);
	return 0;
fail:
	vhd_free(v);
	return ret;
}

static int vhd_verify_parent(struct vdimg_image *child, struct vdimg_image *parent)
{
	char want[40], got[40];

	if (!(child->flags & VDIMG_IMG_HAS_PARENT_UUID))
		return 0;
	vhd_fmt_uuid(want, child->parent_uuid);
	if (!(parent->flags & VDIMG_IMG_HAS_UUID)) {
		vdimg_err(child, "the parent %s has no UUID; this image wants parent %s",
			  parent->name ? parent->name : "", want);
		return -ESTALE;
	}
	if (memcmp(child->parent_uuid, parent->uuid, 16)) {
		vhd_fmt_uuid(got, parent->uuid);
		vdimg_err(child, "parent UUID mismatch: the image wants %s, %s is %s", want,
			  parent->name ? parent->name : "the parent", got);
		return -ESTALE;
	}
	if (parent->size < child->size)
		vdimg_warn(child, "the parent is smaller (%llu bytes) than this image (%llu)",
			   (unsigned long long)parent->size, (unsigned long long)child->size);
	return 0;
}

static u64 vhd_metadata_bytes(struct vdimg_image *img)
{
	struct vhd *v = img->priv;
	u64 n;

	if (!v->bat)
		return 0;	/* fixed */
	/* the BAT, a state byte per block, the sector bitmap cache */
	vdimg_mutex_lock(&v->lock);
	n = v->bat_len + max_t(u32, v->nr_blocks, 1) +
	    (u64)v->bm_slots * (sizeof(u32) + v->bitmap_size);
	vdimg_mutex_unlock(&v->lock);
	return n;
}

static void vhd_close(struct vdimg_image *img)
{
	struct vhd *v = img->priv;

	if (!v)
		return;
	if (v->nr_pending && !(img->flags & VDIMG_IMG_READ_ONLY) && !vhd_flush(img))
		vdimg_file_sync(img->file);
	vhd_free(v);
	img->priv = NULL;
}

static bool vhd_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return (head_len >= 8 && !memcmp(head, VHD_FOOTER_COOKIE, 8)) ||
	       (file_size >= 512 && !memcmp(tail, VHD_FOOTER_COOKIE, 8)) ||
	       (file_size >= 511 && !memcmp(tail + 1, VHD_FOOTER_COOKIE, 8));
}

/* the largest VHD the specification allows */
#define VHD_MAX_SIZE		(2040ULL << 30)

/* Write zeros over [@off, @end) of the file. */
static int vhd_zero_range(struct vdimg_image *img, u64 off, u64 end)
{
	u32 chunk = 64U << 10;
	void *z;
	int ret = 0;

	if (off >= end)
		return 0;
	z = vdimg_zalloc(chunk);
	if (!z)
		return -ENOMEM;
	while (!ret && off < end) {
		u32 n = min_t(u64, chunk, end - off);

		ret = vdimg_file_write(img->file, z, n, off);
		off += n;
	}
	vdimg_free(z);
	return ret;
}

/*
 * Fixed: the data grows in place and the footer moves to the new end. A reader finds the footer
 * in the last 512 bytes of the file (a fixed image has no copy at offset 0), so the order is:
 *   1. zero the bytes between the old virtual size and the old footer (a creator that sizes by
 *      CHS may leave some): nothing reads them until the footer says the new size;
 *   2. write the new footer at the new end, which extends the file (the gap is a hole, zeros),
 *      and sync: from here the image has the new size;
 *   3. zero the old footer's sector, now inside the data, and sync.
 * A crash before 2 leaves the old image; after 2, the new size, with the old footer's bytes
 * still in the grown range until 3. Truncating first (or zeroing the old footer first) would
 * leave a file with no footer at its end.
 */
static int vhd_grow_fixed(struct vdimg_image *img, struct vhd *v, u64 new_size)
{
	struct vhd_footer saved = v->footer;
	u64 fo = v->footer_off;
	int ret;

	ret = vhd_zero_range(img, img->size, min(new_size, fo));
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		return ret;
	vhd_footer_set_size(&v->footer, new_size);
	ret = vhd_write_footer(img, v, max(new_size, fo));
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret) {
		v->footer = saved;
		return ret;
	}
	if (new_size > fo) {
		v->footer_off = new_size;
		v->data_end = new_size;
	}
	ret = vhd_zero_range(img, fo, min(fo + VHD_SECTOR, new_size));
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		img->size = new_size;
	return ret;
}

/*
 * Where the BAT can end when it grows in place: at the first thing after it in the file (the
 * dynamic header, a parent locator's data, a block, the footer at the end).
 */
static u64 vhd_bat_room_end(const struct vhd *v)
{
	u64 end = v->footer_off, off;
	u32 i, e;

	if (v->hdr_off > v->bat_off)
		end = min(end, v->hdr_off);
	for (i = 0; i < VHD_NR_LOCATORS; i++) {
		off = be64_to_cpu(v->hdr->loc[i].offset);
		if (be32_to_cpu(v->hdr->loc[i].code) != VHD_PLAT_NONE && off >= v->bat_off)
			end = min(end, off);
	}
	for (i = 0; i < v->nr_blocks; i++) {
		e = vhd_bat_get(v, i);
		off = (u64)e * VHD_SECTOR;
		if (e != VHD_BAT_FREE && off >= v->bat_off)
			end = min(end, off);
	}
	return end;
}

/* The new BAT in memory: the entries on disk past the old ones must be free. */
static int vhd_grow_bat_load(struct vdimg_image *img, struct vhd *v, u32 need, __be32 *bat,
			     u32 len)
{
	u32 disk = min_t(u64, len, ALIGN((u64)v->max_entries * 4, VHD_SECTOR)), i;
	int ret;

	memset(bat, 0xff, len);		/* VHD_BAT_FREE */
	memcpy(bat, v->bat, v->bat_len);
	if (disk > v->bat_len) {
		ret = vdimg_file_read(img->file, (u8 *)bat + v->bat_len, disk - v->bat_len,
				      v->bat_off + v->bat_len);
		if (ret)
			return ret;
	}
	for (i = v->nr_blocks; i < min(need, v->max_entries); i++) {
		if (be32_to_cpu(bat[i]) != VHD_BAT_FREE) {
			vdimg_err(img, "cannot grow online: block %u past the end is allocated (detach and use vdimgctl resize)",
				  i);
			return -EOPNOTSUPP;
		}
	}
	/* new entries, and the padding of a BAT that grows past its old last sector: free */
	for (i = v->nr_blocks; i < (need > v->max_entries ? len / 4 : need); i++)
		bat[i] = cpu_to_be32(VHD_BAT_FREE);
	return 0;
}

/*
 * Dynamic: the BAT takes entries up to the first structure after it; it never moves. Order:
 *   1. the new BAT entries (0xFFFFFFFF, in the BAT's padding or the free space after it), sync:
 *      space nothing uses yet;
 *   2. the dynamic header's max_table_entries if it grows, sync: more entries than the size
 *      needs is valid;
 *   3. the stale bytes of the old last block past the old size zeroed, sync (hidden until 4);
 *   4. the footer at the end with the new current size and geometry, sync, then its copy at
 *      offset 0, sync.
 * A crash before 4 leaves the old size; between the two footers, the footers disagree and each
 * is a valid image (vdimg reads the one at the end, qemu the copy), of the old or new size.
 */
static int vhd_grow_dynamic(struct vdimg_image *img, struct vhd *v, u64 new_size)
{
	struct vhd_footer saved = v->footer;
	u64 old = img->size, room_end, room, cap, need;
	u32 len, mte = v->max_entries, wr_to;
	__be32 *bat = NULL, *tb;
	u8 *state = NULL, *ts;
	int ret;

	/* reserved blocks' entries are written by a flush, which the grow needs first */
	if (v->nr_pending) {
		ret = vhd_flush(img);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (ret)
			return ret;
	}
	if (v->nr_pending)
		return -EBUSY;
	need = (new_size + v->block_size - 1) >> v->block_shift;
	room_end = vhd_bat_room_end(v);
	room = room_end > v->bat_off ? (room_end - v->bat_off) / 4 : 0;
	cap = max_t(u64, mte, min_t(u64, room, VHD_BAT_MAX_BYTES / 4));
	if (need > cap) {
		vdimg_err(img, "cannot grow online past %llu bytes: the BAT at offset %llu has room for %llu entries before the next structure at %llu (detach and use vdimgctl resize)",
			  (unsigned long long)min_t(u64, cap << v->block_shift, VHD_MAX_SIZE),
			  (unsigned long long)v->bat_off, (unsigned long long)cap,
			  (unsigned long long)room_end);
		return -EFBIG;
	}
	if (need * 4 > VHD_BAT_MAX_BYTES) {
		vdimg_err(img, "a BAT of %llu entries is larger than vdimg supports",
			  (unsigned long long)need);
		return -EOPNOTSUPP;
	}
	len = ALIGN(need * 4, VHD_SECTOR);
	bat = vdimg_zalloc(len);
	state = vdimg_zalloc(need);
	if (!bat || !state) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vhd_grow_bat_load(img, v, need, bat, len);
	if (ret)
		goto out;
	memcpy(state, v->state, v->nr_blocks);

	vdimg_mutex_lock(&v->io_lock);
	wr_to = need > mte ? len : need * 4;
	if (wr_to > v->nr_blocks * 4) {
		ret = vdimg_file_write(img->file, (u8 *)bat + v->nr_blocks * 4,
				       wr_to - v->nr_blocks * 4, v->bat_off + v->nr_blocks * 4);
		if (!ret)
			ret = vdimg_file_sync(img->file);
	}
	if (!ret && need > mte) {
		v->hdr->max_table_entries = cpu_to_be32(need);
		v->hdr->checksum = 0;
		v->hdr->checksum = cpu_to_be32(vhd_hdr_csum(v->hdr));
		ret = vdimg_file_write(img->file, v->hdr, sizeof(*v->hdr), v->hdr_off);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		if (!ret) {
			v->max_entries = need;
			v->data_end = max_t(u64, v->data_end, v->bat_off + len);
		}
	}
	vdimg_mutex_unlock(&v->io_lock);
	if (ret)
		goto out;

	/* the entries past the old size are free: the bigger table in memory is harmless */
	vdimg_mutex_lock(&v->lock);
	tb = v->bat;
	v->bat = bat;
	bat = tb;
	ts = v->state;
	v->state = state;
	state = ts;
	v->bat_len = len;
	v->nr_blocks = need;
	vdimg_mutex_unlock(&v->lock);

	img->size = new_size;
	ret = vdimg_grow_zero_new(img, old);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (ret)
		goto fail;
	vhd_footer_set_size(&v->footer, new_size);
	vdimg_mutex_lock(&v->io_lock);
	ret = vhd_write_footer(img, v, v->footer_off);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret) {
		/* the end says the new size now: a failure below leaves only the copy stale */
		ret = vhd_write_footer(img, v, 0);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		vdimg_mutex_unlock(&v->io_lock);
		goto out;
	}
	vdimg_mutex_unlock(&v->io_lock);
fail:
	img->size = old;
	v->footer = saved;
out:
	vdimg_free(bat);
	vdimg_free(state);
	return ret;
}

/*
 * Online grow: fixed and dynamic images. A differencing image keeps its parent's size (the spec;
 * VDIMG_CAP_SAME_SIZE_PARENT makes the driver refuse it first). The new range reads as zeros.
 */
static int vhd_grow(struct vdimg_image *img, u64 new_size)
{
	struct vhd *v = img->priv;

	if (img->flags & VDIMG_IMG_READ_ONLY)
		return -EROFS;
	if (new_size <= img->size || new_size % VHD_SECTOR)
		return -EINVAL;
	if (v->damage) {
		vdimg_err(img, "cannot grow a damaged image: run vdimgctl check --repair");
		return -EUCLEAN;
	}
	if (v->type == VHD_TYPE_DIFF) {
		vdimg_err(img, "cannot grow a differencing VHD: it keeps its parent's size");
		return -EOPNOTSUPP;
	}
	if (new_size > VHD_MAX_SIZE) {
		vdimg_err(img, "cannot grow past %llu bytes, the VHD limit (2040 GiB)",
			  VHD_MAX_SIZE);
		return -EFBIG;
	}
	if (v->type == VHD_TYPE_FIXED && v->fixed_file) {
		vdimg_err(img, "cannot grow a fixed VHD on a block device: its data reaches the footer in the device's last sector");
		return -EOPNOTSUPP;
	}
	if (v->type == VHD_TYPE_FIXED)
		return vhd_grow_fixed(img, v, new_size);
	return vhd_grow_dynamic(img, v, new_size);
}

const struct vdimg_format vdimg_vhd_format = {
	.name = "vhd",
	.id = VDIMG_FMT_VHD,
	.caps = VDIMG_CAP_SAME_SIZE_PARENT,
	.probe = vhd_probe,
	.open = vhd_open,
	.close = vhd_close,
	.map = vhd_map,
	.commit = vhd_commit,
	.abort = vhd_abort,
	.discard = vhd_discard,
	.flush = vhd_flush,
	.verify_parent = vhd_verify_parent,
	.grow = vhd_grow,
	.metadata_bytes = vhd_metadata_bytes,
};
