// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of Parallels images: create (expanding, or plain: every
 * cluster preallocated in order), check and repair (entries a repair open dropped, the in-use flag
 * of an image not closed cleanly, a warning since a crash leaves it so, space leaked after the last
 * cluster), describe, and through
 * parallels-bundle.c the snapshot parent and the parts of a split storage (extent_refs) a bundle's
 * descriptor names. The kernel-shared backend is backends/parallels.c.
 */
#include <stdio.h>
#include "tool-ops.h"
#include "backends/parallels.h"
#include "parallels-bundle.h"

static int prl_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	u32 cluster = opts->block_size ? opts->block_size : PRL_DEFAULT_CLUSTER;
	u64 size = opts->size, bat_bytes, data_off, i, first;
	struct prl_header h;
	bool plain;
	__le32 *bat;
	int ret;

	if (opts->parent)
		return -EOPNOTSUPP;	/* a .hds names no parent: snapshots live in a bundle */
	if (!size || size % PRL_SECTOR || (opts->lbs && opts->lbs != 512))
		return -EINVAL;
	if (cluster % PRL_SECTOR || cluster / PRL_SECTOR > PRL_MAX_TRACKS)
		return -EINVAL;
	if (!opts->variant || !strcmp(opts->variant, "expanding"))
		plain = false;
	else if (!strcmp(opts->variant, "plain") || !strcmp(opts->variant, "preallocated"))
		plain = true;
	else
		return -EINVAL;
	if (DIV_ROUND_UP(size, cluster) > PRL_MAX_BAT)
		return -EFBIG;
	bat_bytes = DIV_ROUND_UP(size, cluster) * 4;
	/* the data area starts on a cluster boundary, as the format asks of v2 images */
	data_off = DIV_ROUND_UP(PRL_HEADER_SIZE + bat_bytes, cluster) * (u64)cluster;
	if (data_off / PRL_SECTOR > U32_MAX)
		return -EFBIG;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, PRL_MAGIC_V2, 16);
	h.version = cpu_to_le32(PRL_VERSION);
	h.heads = cpu_to_le32(16);
	h.cylinders = cpu_to_le32(min_t(u64, size / PRL_SECTOR / 16 / 32, U32_MAX));
	h.tracks = cpu_to_le32(cluster / PRL_SECTOR);
	h.bat_entries = cpu_to_le32(bat_bytes / 4);
	h.nb_sectors = cpu_to_le64(size / PRL_SECTOR);
	h.inuse = cpu_to_le32(PRL_INUSE_CLOSED);
	h.data_off = cpu_to_le32(data_off / PRL_SECTOR);

	bat = calloc(1, bat_bytes);
	if (!bat)
		return -ENOMEM;
	first = data_off / cluster;
	if (plain)
		for (i = 0; i < bat_bytes / 4; i++)
			bat[i] = cpu_to_le32(first + i);
	ret = vdimg_file_write(f, &h, sizeof(h), 0);
	if (!ret)
		ret = vdimg_file_write(f, bat, bat_bytes, PRL_HEADER_SIZE);
	/* the clusters of a plain image read zeros from a sparse file */
	if (!ret)
		ret = vdimg_file_truncate(f, data_off + (plain ? bat_bytes / 4 * cluster : 0));
	free(bat);
	return ret;
}

/*
 * The clusters a dirty-bitmap extension uses beyond its own: the end (file offset) of the last
 * one, or 0. A malformed extension gives 0 with a message; the clusters it may name then count
 * as leaked, which a repair does not truncate (the header still points at the extension).
 */
static u64 prl_ext_end(struct prl *p)
{
	u8 *buf;
	u64 end = 0, pos = 24, fsize = vdimg_file_size(p->file);

	if (!p->hdr.ext_off)
		return 0;
	buf = malloc(p->cluster);
	if (!buf || vdimg_file_read(p->file, buf, p->cluster, p->ext_off))
		goto out;
	if (le64_to_cpu(*(__le64 *)buf) != PRL_EXT_MAGIC) {
		vdimg_warn(p->img, "the format extension cluster has a bad magic number");
		goto out;
	}
	while (pos + 24 <= p->cluster) {
		u64 magic = le64_to_cpu(*(__le64 *)(buf + pos));
		u32 len = le32_to_cpu(*(__le32 *)(buf + pos + 16));
		u64 data = pos + 24, l1, k;

		if (!magic)
			break;
		if (len > p->cluster - data)
			break;
		if (magic == PRL_EXT_BITMAP && len >= 32) {
			l1 = le32_to_cpu(*(__le32 *)(buf + data + 28));
			for (k = 0; k < l1 && data + 32 + (k + 1) * 8 <= data + len; k++) {
				u64 e = le64_to_cpu(*(__le64 *)(buf + data + 32 + k * 8));

				if (e > 1 && e < fsize / PRL_SECTOR)
					end = max(end, e * PRL_SECTOR + p->cluster);
			}
		}
		pos = data + ALIGN((u64)len, 8);
	}
out:
	free(buf);
	return end;
}

/* Write the whole BAT from memory (a repair open dropped entries), then sync. */
static int prl_write_bat(struct prl *p)
{
	__le32 *bat = malloc((size_t)p->nr_bat * 4);
	u32 i;
	int ret;

	if (!bat)
		return -ENOMEM;
	vdimg_mutex_lock(&p->map_lock);
	for (i = 0; i < p->nr_bat; i++)
		bat[i] = cpu_to_le32(p->bat[i]);
	vdimg_mutex_unlock(&p->map_lock);
	ret = vdimg_file_write(p->file, bat, (size_t)p->nr_bat * 4, PRL_HEADER_SIZE);
	if (!ret)
		ret = vdimg_file_sync(p->file);
	free(bat);
	return ret;
}

static int prl_check_part(struct vdimg_image *img, struct prl *p, unsigned int flags,
			  struct vdimg_check_result *res)
{
	bool repair = (flags & VDIMG_CHECK_REPAIR) && p->writable;
	u64 fsize = vdimg_file_size(p->file), end = p->data_off, used = 0, span;
	u32 i;
	int ret;

	if ((flags & VDIMG_CHECK_REPAIR) && !p->writable)
		return -EROFS;
	if (p->repairs) {
		res->errors += p->repairs;
		if (repair) {
			ret = prl_write_bat(p);
			if (ret)
				return ret;
			vdimg_info(img, "BAT repaired (%u entries dropped)", p->repairs);
			res->fixed += p->repairs;
			p->repairs = 0;
		}
	}
	/*
	 * Every crash while the image is open for writing leaves the flag set: the expected crash
	 * state, not a corruption (the open checked every BAT entry, and a crash can only leak). A
	 * warning, since writable opens are refused until a repair clears it.
	 */
	if (p->found_inuse == PRL_INUSE_OPEN) {
		res->warnings++;
		if (!repair) {
			vdimg_warn(img, "the image was not closed cleanly (in use flag set): it opens read-only until check --repair clears the flag");
		} else {
			vdimg_info(img, "the image was not closed cleanly (in use flag set): clearing the flag");
			vdimg_mutex_lock(&p->meta_lock);
			ret = prl_write_header(p, PRL_INUSE_CLOSED);
			if (!ret)
				ret = vdimg_file_sync(p->file);
			vdimg_mutex_unlock(&p->meta_lock);
			if (ret)
				return ret;
			p->found_inuse = PRL_INUSE_CLOSED;
			res->fixed++;
		}
	}

	vdimg_mutex_lock(&p->map_lock);
	for (i = 0; i < p->nr_bat; i++) {
		if (!p->bat[i])
			continue;
		used++;
		end = max(end, prl_entry_offset(p, p->bat[i]) + p->cluster);
	}
	vdimg_mutex_unlock(&p->map_lock);
	if (p->hdr.ext_off) {
		end = max(end, p->ext_off + p->cluster);
		end = max(end, prl_ext_end(p));
	}
	span = end > p->data_off ? DIV_ROUND_UP(end - p->data_off, (u64)p->cluster) : 0;
	if (span > used + !!p->hdr.ext_off)
		vdimg_info(img, "%llu clusters inside the data area are not used by the BAT (discarded, extension clusters, or left by an interrupted write)",
			   (unsigned long long)(span - used - !!p->hdr.ext_off));
	/* a block device's bytes past the image are not the image's */
	if (fsize > end && !vdimg_file_fixed_size(p->file)) {
		u64 n = DIV_ROUND_UP(fsize - end, (u64)p->cluster);

		vdimg_info(img, "%llu bytes after the last cluster are not used",
			   (unsigned long long)(fsize - end));
		res->leaks += n;
		if (repair) {
			ret = vdimg_file_truncate(p->file, end);
			if (ret)
				return ret;
			res->fixed += n;
		}
	}
	return 0;
}

static int prl_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct prl_disk *d = img->priv;
	int ret = 0;

	for (u32 k = 0; k < d->nr && !ret; k++)
		ret = prl_check_part(img, d->part[k], flags, res);
	return ret;
}

static void prl_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct prl_disk *d = img->priv;
	struct prl *p = d->part[0];
	u32 i, k, used = 0, inuse = p->found_inuse;
	char buf[64];

	if (d->nr > 1) {
		snprintf(buf, sizeof(buf), "%u", d->nr);
		emit(ctx, "parts", buf);
	}

	emit(ctx, "signature", p->v2 ? PRL_MAGIC_V2 " (BAT in clusters)" :
				       PRL_MAGIC_V1 " (BAT in sectors)");
	snprintf(buf, sizeof(buf), "%u", p->cluster);
	emit(ctx, "cluster size", buf);
	snprintf(buf, sizeof(buf), "%u", p->nr_bat);
	emit(ctx, "bat entries", buf);
	for (k = 0; k < d->nr; k++) {
		vdimg_mutex_lock(&d->part[k]->map_lock);
		for (i = 0; i < d->part[k]->nr_bat; i++)
			used += !!d->part[k]->bat[i];
		vdimg_mutex_unlock(&d->part[k]->map_lock);
	}
	snprintf(buf, sizeof(buf), "%u", used);
	emit(ctx, "allocated clusters", buf);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)p->data_off);
	emit(ctx, "data offset", buf);
	snprintf(buf, sizeof(buf), "%u/%u", le32_to_cpu(p->hdr.cylinders),
		 le32_to_cpu(p->hdr.heads));
	emit(ctx, "geometry (cylinders/heads)", buf);
	emit(ctx, "in use", inuse == PRL_INUSE_OPEN ? "yes (not closed cleanly)" :
			    inuse == PRL_INUSE_CLOSED ? "no" : inuse ? "unknown value" : "no (old writer)");
	if (p->hdr.ext_off) {
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)p->ext_off);
		emit(ctx, "format extension offset", buf);
	}
	if (le32_to_cpu(p->hdr.flags)) {
		snprintf(buf, sizeof(buf), "%#x", le32_to_cpu(p->hdr.flags));
		emit(ctx, "flags", buf);
	}
}

/*
 * Resize a single-file image. Growing is the backend's online grow (prl_grow() in
 * backends/parallels.c: the BAT grows into the room before the data area, refused past it).
 * Shrinking keeps only the BAT entries the new size uses, then writes the header's entry count
 * and size (adjacent fields, one write) and trims the file. A bundle's split storage or snapshot
 * is refused: its descriptor records the size too.
 */
static int prl_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct prl_disk *d = img->priv;
	struct prl *p = d->part[0];
	u64 n64 = DIV_ROUND_UP(size, (u64)p->cluster), room, end;
	u32 n = n64, i, *nbat = NULL;
	u64 *ndirty = NULL;
	__le32 *zero = NULL;
	int ret = 0;

	if (!p->writable)
		return -EROFS;
	/* growing is the online grow's job, in the same order (backends/parallels.c) */
	if (size > img->size)
		return img->fmt->grow(img, size);
	if (p->repairs)
		return -EUCLEAN;
	if (d->nr != 1 || (img->flags & VDIMG_IMG_HAS_PARENT)) {
		vdimg_err(img, "a bundle's split storage or snapshot is resized with its bundle, not here");
		return -EOPNOTSUPP;
	}
	if (!le32_to_cpu(p->hdr.data_off)) {
		vdimg_err(img, "the header does not say where the data starts: growing the BAT would move it");
		return -EOPNOTSUPP;
	}
	if (!p->v2 && size / PRL_SECTOR > U32_MAX) {
		vdimg_err(img, "version 1 images hold at most 2 TiB");
		return -EFBIG;
	}
	room = (p->data_off - PRL_HEADER_SIZE) / 4;
	if (n64 > PRL_MAX_BAT || n64 > room) {
		vdimg_err(img, "the BAT has room for %llu clusters (%llu bytes) before the data area; growing further would mean moving data",
			  (unsigned long long)min_t(u64, room, PRL_MAX_BAT),
			  (unsigned long long)min_t(u64, room, PRL_MAX_BAT) * p->cluster);
		return -ENOSPC;
	}
	ret = prl_flush(img);
	if (ret)
		return ret;
	nbat = vdimg_zalloc((size_t)max(n, p->nr_bat) * 4);
	ndirty = vdimg_zalloc(DIV_ROUND_UP(DIV_ROUND_UP((size_t)max(n, p->nr_bat), PRL_BAT_CHUNK), 64) * 8);
	if (!nbat || !ndirty) {
		ret = -ENOMEM;
		goto out;
	}
	vdimg_mutex_lock(&p->meta_lock);
	/* shrinking: clusters past the new end (the caller checked or discarded them) are dropped */
	zero = vdimg_zalloc((size_t)(p->nr_bat - n) * 4 + 4);
	ret = zero ? vdimg_file_write(p->file, zero, (size_t)(p->nr_bat - n) * 4,
				      PRL_HEADER_SIZE + (u64)n * 4) : -ENOMEM;
	if (!ret)
		ret = vdimg_file_sync(p->file);
	if (!ret) {
		p->hdr.bat_entries = cpu_to_le32(n);
		p->hdr.nb_sectors = cpu_to_le64(size / PRL_SECTOR);
		ret = prl_write_header(p, le32_to_cpu(p->hdr.inuse));
	}
	if (!ret)
		ret = vdimg_file_sync(p->file);
	if (!ret) {
		vdimg_mutex_lock(&p->map_lock);
		memcpy(nbat, p->bat, (size_t)min(n, p->nr_bat) * 4);
		vdimg_free(p->bat);
		vdimg_free(p->chunk_dirty);
		p->bat = nbat;
		p->chunk_dirty = ndirty;
		nbat = NULL;
		ndirty = NULL;
		p->nr_bat = n;
		p->size = size;
		for (i = 0, end = p->data_off; i < n; i++)
			if (p->bat[i])
				end = max(end, prl_entry_offset(p, p->bat[i]) + p->cluster);
		vdimg_mutex_unlock(&p->map_lock);
		img->size = size;
		/* the file ends after the last cluster still used (dropped ones at the end go) */
		if (end < p->next_off) {
			if (!vdimg_file_fixed_size(p->file))
				ret = vdimg_file_truncate(p->file, end);
			p->next_off = end;
		}
	}
	vdimg_mutex_unlock(&p->meta_lock);
out:
	vdimg_free(zero);
	vdimg_free(nbat);
	vdimg_free(ndirty);
	return ret;
}

const struct vdimg_tool_ops vdimg_parallels_tool_ops = {
	.id = VDIMG_FMT_PARALLELS,
	.create = prl_create,
	.check = prl_check,
	.describe = prl_describe,
	.parent_ref = prl_parent_ref,
	.extent_refs = prl_extent_refs,
	.resize = prl_resize,
};
