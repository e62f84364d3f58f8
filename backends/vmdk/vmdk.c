// SPDX-License-Identifier: GPL-2.0
/*
 * The VMDK backend: probe, open, the extent layout of the virtual disk, map/commit/discard/flush
 * dispatched to the extents, close, the parent check (CID) and the format table. An image is either
 * one hosted sparse file with an embedded descriptor (monolithicSparse, streamOptimized), or a text
 * descriptor file naming extent files (monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat,
 * vmfs), which the caller opens and passes in img->extents: this code never opens a path. Hosted
 * sparse extents are served by sparse.c and stream.c, seSparse extents by sesparse.c, the
 * descriptor text by descriptor.c. COWD (vmfsSparse) extents are sparse.c's too (writable behind a
 * descriptor), raw-device extents are read as FLAT extents of the device the caller passes.
 * Kernel-shared: only include/vdimg/platform.h services here; the userspace-only tool operations
 * are in tools/lib/formats/vmdk.c.
 */
#include "vmdk.h"

#define VMDK_MAX_DESC_SECTORS	(VMDK_DESC_MAX / VMDK_SECTOR)

static bool vmdk_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return head_len >= 4 && (!memcmp(head, "KDMV", 4) || !memcmp(head, "COWD", 4) ||
				 (head_len >= 21 && !memcmp(head, "# Disk DescriptorFile", 21)));
}

static const struct {
	const char *create_type;
	const char *variant;
} vmdk_variants[] = {
	{ "monolithicSparse", "sparse" },
	{ "streamOptimized", "stream" },
	{ "monolithicFlat", "flat" },
	{ "twoGbMaxExtentSparse", "2gb-sparse" },
	{ "twoGbMaxExtentFlat", "2gb-flat" },
	{ "vmfs", "vmfs" },
	{ "vmfsSparse", "vmfs-sparse" },
	{ "seSparse", "sesparse" },
};

static const char *vmdk_variant(const struct vmdk *vm)
{
	size_t i;

	if (!vm->desc_file && vm->ext[0].sp->compressed)
		return "stream";
	if (!vm->desc_file && vm->ext[0].sp->cowd)
		return "cowd";
	for (i = 0; i < ARRAY_SIZE(vmdk_variants); i++)
		if (!strcmp(vm->desc.create_type, vmdk_variants[i].create_type))
			return vmdk_variants[i].variant;
	return vm->desc_file ? "descriptor" : "sparse";
}

/* ---- the descriptor ---- */

/* Read and parse the descriptor embedded in a sparse extent (the header says where). */
static int vmdk_read_embedded_desc(struct vmdk *vm, const struct vmdk_sparse *sp,
				   const struct vmdk_header *h, u64 fsize)
{
	struct vdimg_image *img = vm->img;
	u64 off = le64_to_cpu(h->desc_offset), size = le64_to_cpu(h->desc_size);
	int ret;

	if (!size)
		return 0;
	if (!off || size > VMDK_MAX_DESC_SECTORS || off > fsize / VMDK_SECTOR ||
	    (off + size) * VMDK_SECTOR > fsize)
		return vdimg_corrupt(img,
				     "the descriptor (sector %llu, %llu sectors) is not inside the file",
				     (unsigned long long)off, (unsigned long long)size);
	if (off * VMDK_SECTOR < sp->gd_off + (u64)sp->nr_gts * 4 &&
	    sp->gd_off < (off + size) * VMDK_SECTOR)
		return vdimg_corrupt(img, "the descriptor overlaps the grain directory");
	vm->desc_off = off * VMDK_SECTOR;
	vm->desc_area = size * VMDK_SECTOR;
	vm->desc_text = vdimg_zalloc(vm->desc_area + 1);
	if (!vm->desc_text)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, vm->desc_text, vm->desc_area, vm->desc_off);
	if (ret)
		return ret;
	return vmdk_desc_parse(img, vm->desc_text, vm->desc_area, &vm->desc);
}

/*
 * Replace the descriptor text with @text (@len bytes): in its reserved sectors (the rest zeroed)
 * when embedded, else as the whole descriptor file. -ENOSPC when it does not fit the sectors.
 */
int vmdk_write_desc(struct vmdk *vm, const char *text, u32 len)
{
	struct vdimg_file *f = vm->img->file;
	char *area;
	int ret;

	if (!vm->desc_file) {
		if (len > vm->desc_area)
			return -ENOSPC;
		area = vdimg_zalloc(vm->desc_area);
		if (!area)
			return -ENOMEM;
		memcpy(area, text, len);
		ret = vdimg_file_write(f, area, vm->desc_area, vm->desc_off);
		vdimg_free(area);
		return ret;
	}
	if (len > VMDK_DESC_MAX)
		return -ENOSPC;
	ret = vdimg_file_write(f, text, len, 0);
	if (!ret && vdimg_file_size(f) > len)
		ret = vdimg_file_truncate(f, len);
	return ret;
}

/* The new CID into the descriptor: the 8 digits in place when the old value had 8, else rebuilt. */
static int vmdk_write_cid(struct vmdk *vm, u32 cid)
{
	struct vmdk_desc *d = &vm->desc;
	u32 len = d->text_len - d->cid_len + 8, size;
	char hex[9], *t;
	int ret;

	lockdep_assert_held(&vm->cid_lock);
	vmdk_hex32(hex, cid);
	if (d->cid_len == 8) {
		ret = vdimg_file_write(vm->img->file, hex, 8, vm->desc_off + d->cid_pos);
		if (!ret)
			memcpy(vm->desc_text + d->cid_pos, hex, 8);
		return ret;
	}
	size = max(len, vm->desc_area);
	t = vdimg_zalloc(size + 1);
	if (!t)
		return -ENOMEM;
	memcpy(t, vm->desc_text, d->cid_pos);
	memcpy(t + d->cid_pos, hex, 8);
	memcpy(t + d->cid_pos + 8, vm->desc_text + d->cid_pos + d->cid_len,
	       d->text_len - d->cid_pos - d->cid_len);
	ret = vmdk_write_desc(vm, t, len);
	if (ret == -ENOSPC) {
		vdimg_warn(vm->img,
			   "no room in the descriptor for a new CID; keeping %08x", vm->cid);
		vdimg_free(t);
		return 0;
	}
	if (ret) {
		vdimg_free(t);
		return ret;
	}
	vdimg_free(vm->desc_text);
	vm->desc_text = t;
	vm->desc_area = size;
	d->cid_len = 8;
	d->text_len = len;
	return 0;
}

int vmdk_renew_cid(struct vmdk *vm, bool nowait)
{
	bool done;
	u32 cid;
	int ret = 0;

	if (nowait) {
		if (!vdimg_mutex_trylock(&vm->cid_lock))
			return -EAGAIN;
		done = vm->cid_renewed;
		vdimg_mutex_unlock(&vm->cid_lock);
		return done ? 0 : -EAGAIN;
	}
	vdimg_mutex_lock(&vm->cid_lock);
	if (!vm->cid_renewed) {
		if (vm->desc_text && vm->desc.cid_len) {
			do {
				vdimg_random_bytes(&cid, sizeof(cid));
			} while (cid == vm->cid || cid >= 0xfffffffeU);
			ret = vmdk_write_cid(vm, cid);
			if (!ret) {
				vm->desc.cid = cid;
				vm->cid = cid;
			}
		}
		if (!ret) {
			vm->cid_renewed = true;
			vm->img->flags |= VDIMG_IMG_DIRTY;
		}
	}
	vdimg_mutex_unlock(&vm->cid_lock);
	return ret;
}

/* ---- opening extents ---- */

static void vmdk_free(struct vmdk *vm)
{
	u32 i;

	for (i = 0; vm->ext && i < vm->nr_ext; i++) {
		if (vm->ext[i].sp) {
			vmdk_sparse_free(vm->ext[i].sp);
			vdimg_free(vm->ext[i].sp);
		}
		if (vm->ext[i].se) {
			vmdk_se_free(vm->ext[i].se);
			vdimg_free(vm->ext[i].se);
		}
	}
	vdimg_free(vm->ext);
	vmdk_desc_free(&vm->desc);
	vdimg_free(vm->desc_text);
	vdimg_mutex_destroy(&vm->cid_lock);
	vdimg_free(vm);
}

/*
 * A COWD (vmfsSparse) extent in @f for @x: writable when a vmfsSparse descriptor names it (the CID
 * lives there), allocating from the header's freeSector (or the end of the file, if later).
 */
static int vmdk_open_cowd(struct vmdk *vm, struct vmdk_ext *x, struct vdimg_file *f,
			  const struct vmdk_cowd_header *h, u64 fsize)
{
	struct vmdk_sparse *sp;
	int ret;

	if (vm->writable && x->access == VMDK_ACCESS_RW && !vm->desc_file) {
		vdimg_err(vm->img, "a COWD (vmfsSparse) file without a descriptor is read-only (attach read-only or under an overlay)");
		return -EOPNOTSUPP;
	}
	sp = vdimg_zalloc(sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	vdimg_mutex_init(&sp->lock);
	x->sp = sp;
	sp->vm = vm;
	sp->img = vm->img;
	sp->file = f;
	sp->writable = vm->writable && x->access == VMDK_ACCESS_RW;
	sp->file_end = ALIGN_DOWN(fsize, (u64)VMDK_SECTOR);
	sp->next_alloc = max(sp->file_end, (u64)le32_to_cpu(h->next_free) * VMDK_SECTOR);
	/* on a block device, where freeSector says, but not past the device's end */
	if (vdimg_file_fixed_size(f))
		sp->next_alloc = min(sp->file_end, (u64)le32_to_cpu(h->next_free) * VMDK_SECTOR);
	ret = vmdk_check_cowd_header(sp, h, fsize);
	if (!ret)
		ret = vmdk_sparse_open(sp, NULL, fsize);
	return ret;
}

/*
 * Open the hosted sparse extent in @f for @x: header (or stream footer) checks, the embedded
 * descriptor when @embedded (a monolithic image), the grain directory.
 */
static int vmdk_open_sparse(struct vmdk *vm, struct vmdk_ext *x, struct vdimg_file *f,
			    bool embedded)
{
	struct vdimg_image *img = vm->img;
	u64 fsize = vdimg_file_size(f);
	struct vmdk_header h;
	struct vmdk_sparse *sp;
	int ret;

	BUILD_BUG_ON(sizeof(struct vmdk_header) != VMDK_HEADER_SIZE);
	BUILD_BUG_ON(sizeof(struct vmdk_marker) != VMDK_MARKER_SIZE);
	BUILD_BUG_ON(sizeof(struct vmdk_grain_marker) != 12);
	BUILD_BUG_ON(offsetof(struct vmdk_header, unclean_shutdown) != 72);
	BUILD_BUG_ON(offsetof(struct vmdk_header, compress_algorithm) != 77);

	if (fsize < VMDK_HEADER_SIZE)
		return vdimg_corrupt(img, "a sparse extent file is too short for a VMDK header");
	ret = vdimg_file_read(f, &h, sizeof(h), 0);
	if (ret)
		return ret;
	if (!memcmp(&h, "COWD", 4))
		return vmdk_open_cowd(vm, x, f, (const struct vmdk_cowd_header *)&h, fsize);
	if (le32_to_cpu(h.magic) != VMDK_MAGIC)
		return vdimg_corrupt(img, "a sparse extent has no KDMV signature");
	if (embedded && !le64_to_cpu(h.capacity) && le64_to_cpu(h.desc_offset)) {
		vdimg_err(img, "a sparse file that only holds a descriptor is not supported");
		return -EOPNOTSUPP;
	}
	sp = vdimg_zalloc(sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	vdimg_mutex_init(&sp->lock);
	x->sp = sp;
	sp->vm = vm;
	sp->img = img;
	sp->file = f;
	sp->writable = vm->writable && x->access == VMDK_ACCESS_RW;
	sp->file_end = ALIGN_DOWN(fsize, (u64)VMDK_SECTOR);
	sp->next_alloc = ALIGN(fsize, (u64)VMDK_SECTOR);
	if (le64_to_cpu(h.gd_offset) == VMDK_GD_AT_END) {
		struct vmdk_header head = h;

		ret = vmdk_stream_footer(sp, &h, fsize);
		if (ret)
			return ret;
		/* the descriptor is where the head says (the footer copy may not say it) */
		if (!le64_to_cpu(h.desc_size)) {
			h.desc_offset = head.desc_offset;
			h.desc_size = head.desc_size;
		}
	}
	ret = vmdk_check_header(sp, &h, fsize);
	if (ret)
		return ret;
	if (embedded) {
		ret = vmdk_read_embedded_desc(vm, sp, &h, fsize);
		if (ret)
			return ret;
	}
	if (sp->writable && sp->compressed) {
		vdimg_err(img, "streamOptimized VMDK images are read-only");
		return -EOPNOTSUPP;
	}
	if (sp->writable && sp->version == 3) {
		vdimg_err(img, "VMDK version 3 sparse extents (changed block tracking) are read-only");
		return -EOPNOTSUPP;
	}
	ret = vmdk_sparse_open(sp, &h, fsize);
	if (ret)
		return ret;
	sp->unclean_on_disk = h.unclean_shutdown;
	if (h.unclean_shutdown)
		vdimg_info(img, "a sparse extent was not closed cleanly (its data is still consistent)");
	return 0;
}

/* One hosted sparse file with its descriptor inside (monolithicSparse, streamOptimized). */
static int vmdk_open_monolithic(struct vmdk *vm)
{
	struct vdimg_image *img = vm->img;
	struct vmdk_ext *x;
	int ret;

	if (img->nr_extents) {
		vdimg_err(img, "a monolithic sparse VMDK has no separate extent files");
		return -EINVAL;
	}
	vm->ext = vdimg_zalloc(sizeof(*vm->ext));
	if (!vm->ext)
		return -ENOMEM;
	vm->nr_ext = 1;
	x = &vm->ext[0];
	x->type = VMDK_EXT_SPARSE;
	x->access = VMDK_ACCESS_RW;
	x->file = img->file;
	ret = vmdk_open_sparse(vm, x, img->file, true);
	if (ret)
		return ret;
	if (vm->desc.nr_extents > 1) {
		vdimg_err(img, "a sparse file whose descriptor names %u extents is not supported",
			  vm->desc.nr_extents);
		return -EOPNOTSUPP;
	}
	x->len = x->sp->size;
	return 0;
}

/* A text descriptor naming extent files, which the caller passed in img->extents. */
static int vmdk_open_descriptor(struct vmdk *vm, u64 fsize)
{
	struct vdimg_image *img = vm->img;
	const char *ct;
	u32 i, files = 0, k = 0;
	u64 pos = 0;
	int ret;

	if (fsize > VMDK_DESC_MAX)
		return vdimg_corrupt(img, "a descriptor file of %llu bytes is too large",
				     (unsigned long long)fsize);
	vm->desc_file = true;
	vm->desc_area = fsize;
	vm->desc_text = vdimg_zalloc(fsize + 1);
	if (!vm->desc_text)
		return -ENOMEM;
	ret = vdimg_file_read(img->file, vm->desc_text, fsize, 0);
	if (!ret)
		ret = vmdk_desc_parse(img, vm->desc_text, fsize, &vm->desc);
	if (ret)
		return ret;
	ct = vm->desc.create_type[0] ? vm->desc.create_type : "descriptor-file";
	if (!vm->desc.nr_extents)
		return vdimg_corrupt(img, "the descriptor names no extent");
	for (i = 0; i < vm->desc.nr_extents; i++) {
		const struct vmdk_desc_extent *d = &vm->desc.extents[i];

		switch (d->type) {
		case VMDK_EXT_SPARSE:
		case VMDK_EXT_VMFSSPARSE:
		case VMDK_EXT_FLAT:
		case VMDK_EXT_VMFS:
		case VMDK_EXT_SESPARSE:
		case VMDK_EXT_VMFSRAW:
		case VMDK_EXT_VMFSRDM:
		case VMDK_EXT_VMFSRDMP:
			files++;
			break;
		case VMDK_EXT_ZERO:
			break;
		default:
			vdimg_err(img, "%s VMDK images with %s extents are not supported yet", ct,
				  vmdk_extent_type_name(d->type));
			return -EOPNOTSUPP;
		}
	}
	if (img->nr_extents != files) {
		vdimg_err(img, "%s VMDK image: its descriptor names %u extent file%s, %u %s given",
			  ct, files, files == 1 ? "" : "s", img->nr_extents,
			  img->nr_extents == 1 ? "was" : "were");
		return img->nr_extents ? -EINVAL : -ENOENT;
	}
	vm->ext = vdimg_zalloc(sizeof(*vm->ext) * vm->desc.nr_extents);
	if (!vm->ext)
		return -ENOMEM;
	vm->nr_ext = vm->desc.nr_extents;
	for (i = 0; i < vm->nr_ext; i++) {
		const struct vmdk_desc_extent *d = &vm->desc.extents[i];
		struct vmdk_ext *x = &vm->ext[i];

		if (d->sectors > VMDK_MAX_CAPACITY ||
		    pos / VMDK_SECTOR + d->sectors > VMDK_MAX_CAPACITY) {
			vdimg_err(img, "a disk of more than %llu sectors is not supported",
				  (unsigned long long)VMDK_MAX_CAPACITY);
			return -EOPNOTSUPP;
		}
		x->start = pos;
		x->len = d->sectors * VMDK_SECTOR;
		/* raw-device extents: the device (a block device the caller opened) read as FLAT */
		switch (d->type) {
		case VMDK_EXT_VMFS:
		case VMDK_EXT_VMFSRAW:
		case VMDK_EXT_VMFSRDM:
		case VMDK_EXT_VMFSRDMP:
			x->type = VMDK_EXT_FLAT;
			break;
		case VMDK_EXT_VMFSSPARSE:
			x->type = VMDK_EXT_SPARSE;
			break;
		default:
			x->type = d->type;
		}
		x->access = d->access;
		pos += x->len;
		if (x->type == VMDK_EXT_ZERO)
			continue;
		x->file = img->extents[k++];
		if (!x->file)
			return -EINVAL;
		if (x->type == VMDK_EXT_FLAT) {
			u64 need = d->offset * VMDK_SECTOR + x->len;

			x->file_off = d->offset * VMDK_SECTOR;
			if (vdimg_file_size(x->file) < need)
				return vdimg_corrupt(img,
						     "extent %u (%s) holds %llu bytes, its extent needs %llu",
						     i, d->file,
						     (unsigned long long)vdimg_file_size(x->file),
						     (unsigned long long)need);
			continue;
		}
		if (x->type == VMDK_EXT_SESPARSE) {
			x->se = vdimg_zalloc(sizeof(*x->se));
			if (!x->se)
				return -ENOMEM;
			ret = vmdk_se_open(x->se, vm, x->file,
					   vm->writable && x->access == VMDK_ACCESS_RW);
			if (ret)
				return ret;
			if (x->se->capacity != d->sectors)
				return vdimg_corrupt(img,
						     "extent %u (%s) holds %llu sectors, the descriptor says %llu",
						     i, d->file,
						     (unsigned long long)x->se->capacity,
						     (unsigned long long)d->sectors);
			continue;
		}
		ret = vmdk_open_sparse(vm, x, x->file, false);
		if (ret)
			return ret;
		/*
		 * the last extent may hold more than its line says: an online grow that stopped
		 * between the extent's capacity and the descriptor (the line's count is the size)
		 */
		if (x->sp->capacity != d->sectors &&
		    (i + 1 != vm->nr_ext || x->sp->capacity < d->sectors || x->sp->cowd))
			return vdimg_corrupt(img,
					     "extent %u (%s) holds %llu sectors, the descriptor says %llu",
					     i, d->file, (unsigned long long)x->sp->capacity,
					     (unsigned long long)d->sectors);
		if (x->start % x->sp->grain_bytes)
			return vdimg_corrupt(img,
					     "extent %u does not start on a grain boundary", i);
		if (x->sp->compressed && vm->writable) {
			vdimg_err(img, "compressed extents are read-only");
			return -EOPNOTSUPP;
		}
	}
	return 0;
}

static int vmdk_open(struct vdimg_image *img, unsigned int flags)
{
	u64 fsize = vdimg_file_size(img->file);
	struct vmdk *vm;
	char head[32];
	u32 i, grain = 0;
	int ret;

	memset(head, 0, sizeof(head));
	ret = vdimg_file_read(img->file, head, min_t(u64, fsize, sizeof(head)), 0);
	if (ret)
		return ret;
	if (memcmp(head, "KDMV", 4) && memcmp(head, "COWD", 4) && head[0] != '#')
		return vdimg_corrupt(img, "not a VMDK file (no KDMV signature, no descriptor)");

	vm = vdimg_zalloc(sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->img = img;
	vdimg_mutex_init(&vm->cid_lock);
	vm->writable = !(flags & VDIMG_OPEN_READ_ONLY);
	if (!memcmp(head, "KDMV", 4) || !memcmp(head, "COWD", 4))
		ret = vmdk_open_monolithic(vm);
	else
		ret = vmdk_open_descriptor(vm, fsize);
	if (ret)
		goto fail;
	vm->cid = vm->desc.cid;
	vm->has_parent = vm->desc.parent_hint[0];

	img->size = vm->ext[vm->nr_ext - 1].start + vm->ext[vm->nr_ext - 1].len;
	if (!img->size || img->size % VMDK_SECTOR) {
		ret = vdimg_corrupt(img, "the disk has no sectors");
		goto fail;
	}
	img->lbs = VMDK_SECTOR;
	img->pbs = VMDK_SECTOR;
	for (i = 0; i < vm->nr_ext; i++)
		if (vm->ext[i].sp && !vm->ext[i].sp->compressed)
			grain = max(grain, vm->ext[i].sp->grain_bytes);
		else if (vm->ext[i].se)	/* NEW grains of one unit are never mapped twice */
			grain = max(grain, 8U * VMDK_SECTOR);
	img->alloc_unit = grain;
	if (vm->has_parent)
		img->flags |= VDIMG_IMG_HAS_PARENT;
	img->priv = vm;
	vdimg_strscpy(img->variant, vmdk_variant(vm), sizeof(img->variant));
	return 0;

fail:
	vmdk_free(vm);
	return ret;
}

/* Each sparse extent's grain directories and grain table cache, each seSparse one's tables. */
static u64 vmdk_metadata_bytes(struct vdimg_image *img)
{
	struct vmdk *vm = VMDK(img);
	u64 n = 0;
	u32 i;

	for (i = 0; i < vm->nr_ext; i++) {
		if (vm->ext[i].sp)
			n += vmdk_sparse_bytes(vm->ext[i].sp);
		else if (vm->ext[i].se)
			n += vmdk_se_bytes(vm->ext[i].se);
	}
	return n;
}

static void vmdk_close(struct vdimg_image *img)
{
	struct vmdk *vm = VMDK(img);
	u32 i;

	if (!vm)
		return;
	for (i = 0; i < vm->nr_ext; i++) {
		struct vmdk_ext *x = &vm->ext[i];
		struct vmdk_sparse *sp = x->sp;
		int ret = 0;

		if (sp && sp->writable && sp->touched) {
			vdimg_mutex_lock(&sp->lock);
			ret = vmdk_flush_locked(sp);
			if (!ret)
				ret = vdimg_file_sync(sp->file);
			if (!ret && sp->unclean_on_disk)
				ret = vmdk_set_unclean(sp, false);
			if (!ret)
				ret = vdimg_file_sync(sp->file);
			vdimg_mutex_unlock(&sp->lock);
		} else if (x->se) {
			ret = vmdk_se_flush(x->se);
		} else if (!sp && x->file && vm->writable && x->access == VMDK_ACCESS_RW &&
			   vm->cid_renewed) {
			ret = vdimg_file_sync(x->file);
		}
		if (ret)
			vdimg_err(img, "extent %u: metadata could not be written at close (error %d)",
				  i, ret);
	}
	vmdk_free(vm);
	img->priv = NULL;
}

/* ---- the data path, dispatched to extents ---- */

/* The extent holding virtual offset @off (< img->size). */
static struct vmdk_ext *vmdk_find(struct vmdk *vm, u64 off)
{
	u32 lo = 0, hi = vm->nr_ext;

	while (hi - lo > 1) {
		u32 mid = lo + (hi - lo) / 2;

		if (vm->ext[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &vm->ext[lo];
}

static int vmdk_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		    struct vdimg_extent *ext)
{
	struct vmdk *vm = VMDK(img);
	bool write = flags & VDIMG_MAP_WRITE;
	struct vmdk_ext *x;
	u64 rel;
	int ret;

	if (offset >= img->size || !length)
		return -EINVAL;
	if (write && (!vm->writable || (img->flags & VDIMG_IMG_READ_ONLY)))
		return -EROFS;
	x = vmdk_find(vm, offset);
	rel = offset - x->start;
	length = min(length, x->len - rel);
	if (x->access == VMDK_ACCESS_NOACCESS)
		return -EIO;
	if (write && (x->access != VMDK_ACCESS_RW || x->type == VMDK_EXT_ZERO))
		return -EROFS;
	if (x->type == VMDK_EXT_SPARSE || x->type == VMDK_EXT_SESPARSE) {
		if (x->type == VMDK_EXT_SPARSE)
			ret = vmdk_sparse_map(x->sp, rel, length, flags, ext);
		else
			ret = vmdk_se_map(x->se, rel, length, flags, ext);
		if (ret)
			return ret;
		ext->offset += x->start;
		if (ext->flags & VDIMG_EXT_NEW)
			ext->fill_offset += x->start;
		return 0;
	}
	if (write) {
		ret = vmdk_renew_cid(vm, flags & VDIMG_MAP_NOWAIT);
		if (ret)
			return ret;
	}
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ext->length = length;
	if (x->type == VMDK_EXT_ZERO) {
		ext->type = VDIMG_EXT_ZERO;
	} else {
		ext->type = VDIMG_EXT_DATA;
		ext->file = x->file;
		ext->file_offset = x->file_off + rel;
	}
	return 0;
}

/* @ext (virtual offsets) as the sparse extent it lies in sees it; NULL if it is not in one */
static struct vmdk_ext *vmdk_ext_of(struct vmdk *vm, const struct vdimg_extent *ext,
				    struct vdimg_extent *rel)
{
	struct vmdk_ext *x;

	if (ext->offset >= vm->img->size)
		return NULL;
	x = vmdk_find(vm, ext->offset);
	if ((x->type != VMDK_EXT_SPARSE && x->type != VMDK_EXT_SESPARSE) ||
	    ext->offset + ext->length > x->start + x->len)
		return NULL;
	*rel = *ext;
	rel->offset -= x->start;
	if (rel->flags & VDIMG_EXT_NEW)
		rel->fill_offset -= x->start;
	return x;
}

static int vmdk_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct vdimg_extent rel;
	struct vmdk_ext *x = vmdk_ext_of(VMDK(img), ext, &rel);

	if (!x)
		return -EINVAL;
	if (x->se)
		return vmdk_se_commit(x->se, &rel);
	return vmdk_sparse_commit(x->sp, &rel);
}

/* A NEW grain that will not be recorded stays reserved: it leaks, as a crash would leave it. */
static void vmdk_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
}

static int vmdk_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf)
{
	struct vdimg_extent rel;
	struct vmdk_ext *x = vmdk_ext_of(VMDK(img), ext, &rel);

	if (!x || !x->sp)
		return -EINVAL;
	return vmdk_sparse_read_encoded(x->sp, &rel, buf);
}

static int vmdk_discard(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags)
{
	struct vmdk *vm = VMDK(img);
	u64 end;
	int ret = 0;

	if (!vm->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (flags & ~(VDIMG_DISCARD_ZEROES | VDIMG_DISCARD_NOUNMAP))
		return -EINVAL;
	if (offset > img->size || length > img->size - offset)
		return -EINVAL;
	end = offset + length;
	while (!ret && offset < end) {
		struct vmdk_ext *x = vmdk_find(vm, offset);
		u64 rel = offset - x->start, n = min(end - offset, x->len - rel);

		if (x->access == VMDK_ACCESS_NOACCESS)
			ret = -EIO;
		else if (x->type == VMDK_EXT_ZERO)
			ret = 0;
		else if (x->access != VMDK_ACCESS_RW)
			ret = -EROFS;
		else if (x->type == VMDK_EXT_SPARSE)
			ret = vmdk_sparse_discard(x->sp, rel, n, flags);
		else if (x->type == VMDK_EXT_SESPARSE)
			ret = vmdk_se_discard(x->se, rel, n, flags);
		else
			ret = vmdk_renew_cid(vm, false) ?:
			      (flags & VDIMG_DISCARD_NOUNMAP ?
			       vdimg_file_zero_range(x->file, x->file_off + rel, n) :
			       vdimg_file_zero(x->file, x->file_off + rel, n));
		offset += n;
	}
	return ret;
}

int vmdk_flush(struct vdimg_image *img)
{
	struct vmdk *vm = VMDK(img);
	u32 i;
	int ret = 0;

	for (i = 0; !ret && i < vm->nr_ext; i++) {
		struct vmdk_ext *x = &vm->ext[i];

		if (x->sp)
			ret = vmdk_sparse_flush(x->sp);
		else if (x->se)
			ret = vmdk_se_flush(x->se);
		else if (x->file && x->file != img->file && vm->writable &&
			 x->access == VMDK_ACCESS_RW && vm->cid_renewed)
			ret = vdimg_file_sync(x->file);
	}
	return ret;
}

static int vmdk_verify_parent(struct vdimg_image *child, struct vdimg_image *parent)
{
	struct vmdk *vm = VMDK(child);
	const struct vmdk *p;
	char want[9], have[9];

	if (!vm->has_parent || parent->fmt != child->fmt)
		return 0;	/* only a VMDK parent has a CID to compare */
	p = parent->priv;
	if (vm->desc.parent_cid == p->cid)
		return 0;
	vmdk_hex32(want, vm->desc.parent_cid);
	vmdk_hex32(have, p->cid);
	vdimg_err(child, "parentCID %s does not match %s, whose CID is %s (the parent changed after this image was made)",
		  want, parent->name ? parent->name : "the parent", have);
	return -ESTALE;
}

/*
 * Online grow (and the offline resize's grow of the last extent): the last extent grows, when it is
 * writable and either a hosted sparse extent (monolithicSparse, or the last file of
 * twoGbMaxExtentSparse up to 2 GiB; past the room of its grain directory's last sector the
 * directories move, vmdk_sparse_grow()), or a FLAT extent behind a descriptor file (monolithicFlat,
 * vmfs; twoGbMaxExtentFlat up to 2 GiB) whose file is extended (bytes it already held past the old
 * end zeroed). A new extent file is never made here (the kernel opens no paths: the offline
 * resize, tools/lib/formats/vmdk.c, adds them), nor are streamOptimized, vmfsSparse, seSparse or
 * raw-device extents grown. The descriptor follows when @desc: the last extent line's sector count
 * and ddb.geometry.cylinders, every other line kept (without @desc the caller writes it). Order,
 * each step synced: the tables (or the flat file) first, then the stale tail of the old last grain
 * zeroed, then the sparse header's capacity, then the descriptor. A crash before the capacity
 * leaves the old size and some leaked tables; between the capacity and the descriptor, a
 * monolithicSparse image has the new size (qemu and vdimg take the header's capacity, the embedded
 * descriptor is informational there) and a descriptor file the old one (vdimg accepts a last
 * sparse extent larger than its line, and a flat file larger than its extent).
 */
int vmdk_grow_last(struct vdimg_image *img, u64 new_size, bool desc)
{
	struct vmdk *vm = VMDK(img);
	struct vmdk_ext *last = &vm->ext[vm->nr_ext - 1];
	const struct vmdk_desc_extent *dx = NULL;
	u64 old = img->size, new_len, old_len = last->len;
	bool two_gb;
	char *t = NULL;
	size_t len = 0;
	int ret;

	if (!vm->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (new_size <= old || new_size % VMDK_SECTOR)
		return -EINVAL;
	if (vm->desc.nr_extents == vm->nr_ext)
		dx = &vm->desc.extents[vm->nr_ext - 1];
	if (last->access != VMDK_ACCESS_RW) {
		vdimg_err(img, "cannot grow: the last extent is not writable");
		return -EOPNOTSUPP;
	}
	new_len = new_size - last->start;
	two_gb = !strcmp(vm->desc.create_type, "twoGbMaxExtentSparse") ||
		 !strcmp(vm->desc.create_type, "twoGbMaxExtentFlat");
	if (two_gb && new_len > VMDK_SPLIT_BYTES) {
		vdimg_err(img, "cannot grow past %llu bytes online: the last extent file of a %s image holds at most 2 GiB (detach it: vdimgctl resize adds extent files)",
			  (unsigned long long)(last->start + VMDK_SPLIT_BYTES),
			  vm->desc.create_type);
		return -EFBIG;
	}
	if (last->type == VMDK_EXT_FLAT) {
		if (!vm->desc_file || !dx ||
		    (dx->type != VMDK_EXT_FLAT && dx->type != VMDK_EXT_VMFS)) {
			vdimg_err(img, "cannot grow a %s extent",
				  dx ? vmdk_extent_type_name(dx->type) : "raw device");
			return -EOPNOTSUPP;
		}
	} else if (last->type != VMDK_EXT_SPARSE || !last->sp ||
		   (vm->desc_file && !dx)) {
		vdimg_err(img, "cannot grow a %s extent",
			  vmdk_extent_type_name(last->type));
		return -EOPNOTSUPP;
	}
	/* the new descriptor text first: nothing changes if it cannot be made */
	if (desc && vm->desc_text && vm->desc.nr_extents) {
		ret = vmdk_desc_resized(vm, new_size, new_len / VMDK_SECTOR, NULL, &t, &len);
		if (ret)
			return ret;
		if (!vm->desc_file && len > vm->desc_area) {
			vdimg_err(img, "cannot grow: the embedded descriptor (%u bytes) has no room for the new extent line",
				  vm->desc_area);
			ret = -EFBIG;
			goto out;
		}
	}
	if (last->type == VMDK_EXT_SPARSE) {
		/* refusals first; then it renews the CID as any first change does */
		ret = vmdk_sparse_grow(last->sp, new_len / VMDK_SECTOR);
	} else {
		u64 fsize = vdimg_file_size(last->file), from = last->file_off + old_len;
		u64 to = last->file_off + new_len;

		ret = vmdk_renew_cid(vm, false);
		/* bytes the file already holds past the old end (a shrink left them) read zeros */
		if (!ret && fsize > from)
			ret = vdimg_file_zero(last->file, from, min(fsize, to) - from);
		if (!ret && fsize < to) {
			ret = vdimg_file_truncate(last->file, to);
			if (ret)
				vdimg_err(img, "cannot grow: the flat extent's file cannot be extended to %llu bytes (error %d)",
					  (unsigned long long)to, ret);
		}
		if (!ret)
			ret = vdimg_file_sync(last->file);
	}
	if (ret)
		goto out;
	last->len = new_len;
	img->size = new_size;
	if (last->sp && last->sp->size < new_len) {
		/* the map reads the extent up to its size: the new range first, durable below */
		vdimg_mutex_lock(&last->sp->lock);
		last->sp->size = new_len;
		vdimg_mutex_unlock(&last->sp->lock);
	}
	ret = last->sp ? vdimg_grow_zero_new(img, old) : 0;
	if (!ret)
		ret = vmdk_flush(img);
	if (!ret && last->file != img->file)
		ret = vdimg_file_sync(last->file);
	if (!ret && last->sp && last->sp->capacity < new_len / VMDK_SECTOR)
		ret = vmdk_sparse_set_capacity(last->sp, new_len / VMDK_SECTOR);
	if (!ret && t) {
		ret = vmdk_desc_commit(img, t, len);
		if (!ret)
			t = NULL;
	}
	if (ret) {
		img->size = old;
		last->len = old_len;
		if (last->sp) {
			vdimg_mutex_lock(&last->sp->lock);
			last->sp->size = last->sp->capacity * VMDK_SECTOR;
			vdimg_mutex_unlock(&last->sp->lock);
		}
	}
out:
	vdimg_free(t);
	return ret;
}

static int vmdk_grow(struct vdimg_image *img, u64 new_size)
{
	return vmdk_grow_last(img, new_size, true);
}

const struct vdimg_format vdimg_vmdk_format = {
	.name = "vmdk",
	.id = VDIMG_FMT_VMDK,
	.caps = VDIMG_CAP_EXTENT_FILES,
	.probe = vmdk_probe,
	.open = vmdk_open,
	.close = vmdk_close,
	.map = vmdk_map,
	.commit = vmdk_commit,
	.abort = vmdk_abort,
	.read_encoded = vmdk_read_encoded,
	.discard = vmdk_discard,
	.flush = vmdk_flush,
	.verify_parent = vmdk_verify_parent,
	.grow = vmdk_grow,
	.metadata_bytes = vmdk_metadata_bytes,
};
