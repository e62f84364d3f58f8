// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: VHD parent locators: reading them at open (the candidate paths of a differencing
 * image's parent, best first), the parent reference for the tool, building new locators (relative
 * and absolute, UTF-16) at create and set_parent, and set_parent itself. The kernel-shared backend
 * is backends/vhd/.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhd/vhd.h"
#include "tool.h"

void vhd_free_locators(struct vhd *v)
{
	u32 i;

	for (i = 0; i < v->nr_paths; i++)
		free(v->paths[i]);
	v->nr_paths = 0;
}

static int vhd_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Turn a locator's bytes into a path (or NULL). */
static char *vhd_locator_path(u32 code, const u8 *data, u32 len)
{
	char *s = NULL, *p;
	size_t i;

	switch (code) {
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
		s = vdimg_utf16_to_utf8(data, len, false, true);
		break;
	case VHD_PLAT_WI2R:
	case VHD_PLAT_WI2K:
	case VHD_PLAT_MACX:
		s = strndup((const char *)data, len);
		break;
	default:
		return NULL;
	}
	if (!s)
		return NULL;
	if (code == VHD_PLAT_MACX) {
		/* file://localhost/path or file:///path, %-escaped */
		const char *q = s;
		char *o;

		if (!strncmp(q, "file://", 7))
			q += 7;
		if (!strncmp(q, "localhost/", 10))
			q += 9;
		p = strdup(q);
		free(s);
		if (!p)
			return NULL;
		for (o = s = p; *p; p++) {
			if (*p == '%' && vhd_hexval(p[1]) >= 0 && vhd_hexval(p[2]) >= 0) {
				*o++ = vhd_hexval(p[1]) << 4 | vhd_hexval(p[2]);
				p += 2;
			} else {
				*o++ = *p;
			}
		}
		*o = 0;
	} else {
		for (i = 0; s[i]; i++)
			if (s[i] == '\\')
				s[i] = '/';
	}
	if (!s[0]) {
		free(s);
		return NULL;
	}
	return s;
}

void vhd_parse_locators(struct vdimg_image *img, struct vhd *v)
{
	static const struct { u32 code; const char *name; } order[] = {
		{ VHD_PLAT_W2RU, "W2ru" }, { VHD_PLAT_WI2R, "Wi2r" }, { VHD_PLAT_W2KU, "W2ku" },
		{ VHD_PLAT_WI2K, "Wi2k" }, { VHD_PLAT_MACX, "MacX" },
	};
	u64 fsize = vdimg_file_size(img->file);
	u32 o, i;
	char *name;

	name = vdimg_utf16_to_utf8((const u8 *)v->hdr->parent_name, VHD_PARENT_NAME_BYTES, true, true);
	if (name) {
		vdimg_strscpy(v->parent_name, name, sizeof(v->parent_name));
		free(name);
	}
	for (o = 0; o < ARRAY_SIZE(order); o++) {
		for (i = 0; i < VHD_NR_LOCATORS && v->nr_paths < VHD_NR_LOCATORS; i++) {
			const struct vhd_locator *l = &v->hdr->loc[i];
			u32 len = be32_to_cpu(l->length);
			u64 off = be64_to_cpu(l->offset);
			u8 *data;
			char *path;

			if (be32_to_cpu(l->code) != order[o].code || !len || len > 65536 ||
			    off > fsize || len > fsize - off)
				continue;
			data = malloc(len);
			if (!data)
				return;
			if (vdimg_file_read(img->file, data, len, off)) {
				free(data);
				continue;
			}
			path = vhd_locator_path(order[o].code, data, len);
			free(data);
			if (!path)
				continue;
			v->path_kind[v->nr_paths] = (char *)order[o].name;
			v->paths[v->nr_paths++] = path;
		}
	}
	if (v->parent_name[0] && v->nr_paths <= VHD_NR_LOCATORS) {
		const char *base = strrchr(v->parent_name, '\\');

		base = base ? base + 1 : v->parent_name;
		if (strrchr(base, '/'))
			base = strrchr(base, '/') + 1;
		v->paths[v->nr_paths] = strdup(base);
		if (v->paths[v->nr_paths])
			v->path_kind[v->nr_paths++] = (char *)"name";
	}
}

const char *vdimg_vhd_parent_path(struct vdimg_image *img, unsigned int idx)
{
	struct vhd *v = img->priv;

	if (!v || img->fmt != &vdimg_vhd_format || idx >= v->nr_paths)
		return NULL;
	return v->paths[idx];
}

/* Store @path as locator @idx (UTF-16LE, @win_sep: '/' becomes '\') at *@off. */
int vhd_put_locator(struct vdimg_file *f, struct vhd_dyn_header *h, int idx, u32 code,
		    const char *path, bool win_sep, u64 *off)
{
	size_t max = strlen(path) * 4 + 4, n, i;
	u8 *buf = calloc(1, ALIGN(max, VHD_SECTOR));
	char *tmp = strdup(path);
	int ret;

	if (!buf || !tmp) {
		free(buf);
		free(tmp);
		return -ENOMEM;
	}
	if (win_sep)
		for (i = 0; tmp[i]; i++)
			if (tmp[i] == '/')
				tmp[i] = '\\';
	n = vdimg_utf8_to_utf16(tmp, buf, max, false);
	free(tmp);
	h->loc[idx].code = cpu_to_be32(code);
	h->loc[idx].space = cpu_to_be32(ALIGN(n, VHD_SECTOR));
	h->loc[idx].length = cpu_to_be32(n);
	h->loc[idx].offset = cpu_to_be64(*off);
	ret = vdimg_file_write(f, buf, ALIGN(n, VHD_SECTOR), *off);
	*off += ALIGN(n, VHD_SECTOR);
	free(buf);
	return ret;
}

int vhd_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct vhd *v = img->priv;
	u32 i;

	if (v->type != VHD_TYPE_DIFF || !v->nr_paths)
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	vdimg_strscpy(ref->path, v->paths[0], sizeof(ref->path));
	for (i = 1; i < v->nr_paths; i++) {
		if (strcmp(v->paths[i], v->paths[0])) {
			vdimg_strscpy(ref->alt_path, v->paths[i], sizeof(ref->alt_path));
			break;
		}
	}
	return 0;
}

/* Bytes locator @l may hold at its offset without reaching other metadata or block data. */
static u64 vhd_locator_room(struct vdimg_image *img, struct vhd *v, const struct vhd_locator *l)
{
	u64 off = be64_to_cpu(l->offset), space = be32_to_cpu(l->space), end, lim = v->footer_off;
	u64 bat_end = v->bat_off + ALIGN((u64)v->max_entries * 4, VHD_SECTOR);
	u32 blk;

	/* the specification says sectors, Hyper-V and vdimg write bytes: take the smaller reading */
	space = space >= VHD_SECTOR ? space : space * VHD_SECTOR;
	if (!off || check_add_overflow(off, space, &end))
		return 0;
	if (vhd_overlaps(off, end, 0, VHD_SECTOR) ||
	    vhd_overlaps(off, end, v->hdr_off, v->hdr_off + sizeof(*v->hdr)) ||
	    vhd_overlaps(off, end, v->bat_off, bat_end))
		return 0;
	for (blk = 0; blk < v->nr_blocks; blk++) {
		u32 e = vhd_bat_get(v, blk);
		u64 at = (u64)e * VHD_SECTOR;

		if (e != VHD_BAT_FREE && at >= off)
			lim = min(lim, at);
		else if (e != VHD_BAT_FREE && at + v->bitmap_size + v->block_size > off)
			return 0;	/* the locator starts inside a block */
	}
	return end <= lim ? space : lim > off ? lim - off : 0;
}

/* @path for a locator of kind @code, encoded as the kind wants; *@len bytes. NULL if unknown. */
static u8 *vhd_locator_bytes(u32 code, const char *rel, const char *abs, size_t *len)
{
	const char *src = code == VHD_PLAT_W2RU || code == VHD_PLAT_WI2R ? rel : abs;
	size_t max = strlen(src) * 4 + 16, i;
	char *tmp;
	u8 *out;

	out = calloc(1, max * 3 + 16);
	tmp = strdup(src);
	if (!out || !tmp)
		goto fail;
	if (code == VHD_PLAT_W2RU || code == VHD_PLAT_WI2R)
		for (i = 0; tmp[i]; i++)
			if (tmp[i] == '/')
				tmp[i] = '\\';
	switch (code) {
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
		*len = vdimg_utf8_to_utf16(tmp, out, max, false);
		break;
	case VHD_PLAT_WI2R:
	case VHD_PLAT_WI2K:
		*len = strlen(tmp);
		memcpy(out, tmp, *len);
		break;
	case VHD_PLAT_MACX: {
		static const char hex[] = "0123456789ABCDEF";
		char *o = (char *)out + 7;

		memcpy(out, "file://", 7);
		for (i = 0; tmp[i]; i++) {
			u8 ch = tmp[i];

			if (ch <= ' ' || ch == '%' || ch >= 0x7f) {
				*o++ = '%';
				*o++ = hex[ch >> 4];
				*o++ = hex[ch & 15];
			} else {
				*o++ = ch;
			}
		}
		*len = o - (char *)out;
		break;
	}
	default:
		goto fail;
	}
	free(tmp);
	return out;
fail:
	free(tmp);
	free(out);
	return NULL;
}

/*
 * Rebase: record @parent (found at @path, relative to this image's directory or absolute) in the
 * dynamic header: parent UUID, timestamp and name, and every platform locator that exists,
 * rewritten in place in the space it already has (-ENOSPC when a path does not fit; nothing is
 * written then). The locators' kinds are kept: relative ones get the path relative to this
 * image's directory, absolute ones the absolute path.
 */
int vhd_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct vhd *v = img->priv;
	struct vhd_dyn_header *nh = NULL;
	u8 *data[VHD_NR_LOCATORS] = {};
	size_t dlen[VHD_NR_LOCATORS] = {};
	char *pabs = NULL, *rel = NULL;
	const char *base;
	int i, used = 0, ret;

	if (!parent) {
		vdimg_err(img, "a differencing VHD cannot drop its parent");
		return -EOPNOTSUPP;
	}
	if (v->type != VHD_TYPE_DIFF) {
		vdimg_err(img, "is not a differencing image: it has no parent to change");
		return -EINVAL;
	}
	if (img->flags & VDIMG_IMG_READ_ONLY)
		return -EROFS;
	if (!(parent->flags & VDIMG_IMG_HAS_UUID)) {
		vdimg_err(img, "the new parent %s has no UUID, which a VHD parent link needs",
			  parent->name ? parent->name : "");
		return -EOPNOTSUPP;
	}
	ret = vdimg_parent_paths(img, path, '/', &pabs, &rel);
	if (ret)
		return ret;
	ret = -ENOMEM;
	nh = malloc(sizeof(*nh));
	if (!nh)
		goto out;
	memcpy(nh, v->hdr, sizeof(*nh));
	for (i = 0; i < VHD_NR_LOCATORS; i++) {
		struct vhd_locator *l = &nh->loc[i];
		u32 code = be32_to_cpu(l->code);
		u64 room;

		if (code == VHD_PLAT_NONE || code == VHD_PLAT_MAC)
			continue;
		data[i] = vhd_locator_bytes(code, rel, pabs, &dlen[i]);
		if (!data[i])
			continue;	/* a kind we do not write: left as it is */
		room = vhd_locator_room(img, v, &v->hdr->loc[i]);
		if (dlen[i] > room) {
			vdimg_err(img, "parent locator %d has room for %llu bytes, the new path needs %zu",
				  i, (unsigned long long)room, dlen[i]);
			ret = -ENOSPC;
			goto out;
		}
		l->length = cpu_to_be32(dlen[i]);
		used++;
	}
	if (!used) {
		vdimg_err(img, "has no parent locator to hold the new parent's path");
		ret = -ENOSPC;
		goto out;
	}
	memcpy(nh->parent_uuid, parent->uuid, 16);
	if (parent->fmt == &vdimg_vhd_format)
		nh->parent_timestamp = ((struct vhd *)parent->priv)->footer.timestamp;
	else
		nh->parent_timestamp = cpu_to_be32((u32)((u64)time(NULL) - VHD_EPOCH_OFFSET));
	memset(nh->parent_name, 0, sizeof(nh->parent_name));
	base = strrchr(pabs, '/') + 1;
	vdimg_utf8_to_utf16(base, (u8 *)nh->parent_name, VHD_PARENT_NAME_BYTES - 2, true);
	nh->checksum = 0;
	nh->checksum = cpu_to_be32(vhd_hdr_csum(nh));

	vdimg_mutex_lock(&v->io_lock);
	ret = 0;
	for (i = 0; i < VHD_NR_LOCATORS && !ret; i++) {
		u64 room, wlen;
		u8 *pad;

		if (!data[i])
			continue;
		/* the locator's data padded with zeros to a sector, within its room */
		room = vhd_locator_room(img, v, &v->hdr->loc[i]);
		wlen = min_t(u64, ALIGN(dlen[i], VHD_SECTOR), room);
		pad = calloc(1, wlen);
		if (!pad) {
			ret = -ENOMEM;
			break;
		}
		memcpy(pad, data[i], dlen[i]);
		ret = vdimg_file_write(img->file, pad, wlen, be64_to_cpu(nh->loc[i].offset));
		free(pad);
	}
	/* the locators' data first, then the header that gives their lengths */
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret)
		ret = vdimg_file_write(img->file, nh, sizeof(*nh), v->hdr_off);
	if (!ret) {
		memcpy(v->hdr, nh, sizeof(*nh));
		memcpy(img->parent_uuid, parent->uuid, 16);
		img->flags |= VDIMG_IMG_DIRTY;
		vhd_free_locators(v);
		v->parent_name[0] = 0;
		vhd_parse_locators(img, v);
	}
	vdimg_mutex_unlock(&v->io_lock);
out:
	for (i = 0; i < VHD_NR_LOCATORS; i++)
		free(data[i]);
	free(nh);
	free(rel);
	free(pabs);
	return ret;
}
