// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: VHDX parent locators: keeping the locator entries read at open (UTF-8), the
 * parent reference for the tool (relative_path, volume_path, absolute_win32_path), and set_parent,
 * which rewrites the locator through the metadata log. The kernel-shared backend is
 * backends/vhdx/.
 */
#include <stdio.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhdx/vhdx.h"
#include "tool.h"

void vhdx_keep_locator(struct vhdx *v, const u8 *k, u32 kl, const u8 *val, u32 vl)
{
	char **nk, **nv;

	if (v->nr_loc >= 64)
		return;
	nk = realloc(v->loc_keys, sizeof(char *) * (v->nr_loc + 1));
	if (!nk)
		return;
	v->loc_keys = nk;
	nv = realloc(v->loc_vals, sizeof(char *) * (v->nr_loc + 1));
	if (!nv)
		return;
	v->loc_vals = nv;
	nk[v->nr_loc] = vdimg_utf16_to_utf8(k, kl, false, false);
	nv[v->nr_loc] = vdimg_utf16_to_utf8(val, vl, false, false);
	if (!nk[v->nr_loc] || !nv[v->nr_loc]) {
		free(nk[v->nr_loc]);
		free(nv[v->nr_loc]);
		return;
	}
	v->nr_loc++;
}

void vhdx_free_locator(struct vhdx *v)
{
	u32 i;

	for (i = 0; i < v->nr_loc; i++) {
		free(v->loc_keys[i]);
		free(v->loc_vals[i]);
	}
	free(v->loc_keys);
	free(v->loc_vals);
	v->loc_keys = v->loc_vals = NULL;
	v->nr_loc = 0;
}

static const char *vhdx_loc_get(const struct vhdx *v, const char *key)
{
	u32 i;

	for (i = 0; i < v->nr_loc; i++)
		if (!strcmp(v->loc_keys[i], key))
			return v->loc_vals[i];
	return NULL;
}

/* A Windows path as a local one: backslashes become slashes, a leading ".\" goes. */
static void vhdx_local_path(char *d, const char *s, size_t n)
{
	size_t i;

	if (s[0] == '.' && (s[1] == '\\' || s[1] == '/'))
		s += 2;
	vdimg_strscpy(d, s, n);
	for (i = 0; d[i]; i++)
		if (d[i] == '\\')
			d[i] = '/';
}

int vhdx_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct vhdx *v = img->priv;
	const char *rel = vhdx_loc_get(v, "relative_path");
	const char *abs = vhdx_loc_get(v, "absolute_win32_path");

	if (!v->diff)
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	ref->format = VDIMG_FMT_VHDX;
	if (rel) {
		vhdx_local_path(ref->path, rel, sizeof(ref->path));
		if (abs)
			vhdx_local_path(ref->alt_path, abs, sizeof(ref->alt_path));
	} else if (abs) {
		vhdx_local_path(ref->path, abs, sizeof(ref->path));
	} else {
		vdimg_err(img, "the parent locator has neither relative_path nor absolute_win32_path");
		return -ENOENT;
	}
	return 0;
}

/* Append key @k = value @val (UTF-8) as a locator entry; @pos grows. -ENAMETOOLONG when full. */
static int vhdx_loc_put(u8 *loc, u32 cap, u32 idx, u32 *pos, const char *k, const char *val)
{
	struct vhdx_locator_entry *le = (void *)(loc + sizeof(struct vhdx_locator_hdr) +
						 idx * sizeof(*le));
	size_t kl, vl;

	kl = vdimg_utf8_to_utf16(k, loc + *pos, cap - *pos, false);
	vl = kl ? vdimg_utf8_to_utf16(val, loc + *pos + kl, cap - *pos - kl, false) : 0;
	if (!kl || !vl || *pos + kl + vl >= cap - 2 || kl > 0xffff || vl > 0xffff)
		return -ENAMETOOLONG;
	le->key_offset = cpu_to_le32(*pos);
	le->key_length = cpu_to_le16(kl);
	le->value_offset = cpu_to_le32(*pos + kl);
	le->value_length = cpu_to_le16(vl);
	*pos += kl + vl;
	return 0;
}

/*
 * Rebase: a new parent locator item (parent_linkage = the new parent's data write GUID,
 * relative_path and absolute_win32_path for @path; volume_path and parent_linkage2 dropped, other
 * entries kept), written through the log over the old item in the room the metadata region has
 * for it (-ENOSPC otherwise), with the table entry's new length.
 */
int vhdx_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct vhdx *v = img->priv;
	const u32 cap = 60 * 1024;
	char g[40], lk[64], *pabs = NULL, *rel = NULL;
	u8 *loc = NULL, *table = NULL;
	struct vhdx_meta_entry *me = NULL;
	struct vhdx_pageset ps;
	u32 pos, nk = 0, i, room, moff;
	ssize_t n;
	int ret;

	memset(&ps, 0, sizeof(ps));
	if (!parent) {
		vdimg_err(img, "a differencing VHDX cannot drop its parent");
		return -EOPNOTSUPP;
	}
	if (!v->diff) {
		vdimg_err(img, "is not a differencing image: it has no parent to change");
		return -EINVAL;
	}
	if (v->read_only || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (parent->fmt != img->fmt) {
		vdimg_err(img, "the parent of a VHDX differencing image must be a VHDX image, %s is %s",
			  parent->name ? parent->name : "the new parent", parent->fmt->name);
		return -EOPNOTSUPP;
	}
	ret = vdimg_parent_paths(img, path, '\\', &pabs, &rel);
	if (ret)
		return ret;
	ret = -ENOMEM;
	loc = calloc(1, cap);
	table = malloc(VHDX_META_TABLE_SIZE);
	if (!loc || !table)
		goto out;

	/* the new item */
	memcpy(((struct vhdx_locator_hdr *)loc)->locator_type, vhdx_guid_loctype, 16);
	pos = sizeof(struct vhdx_locator_hdr) + (3 + v->nr_loc) * sizeof(struct vhdx_locator_entry);
	vhdx_guid_fmt(g, ((struct vhdx *)parent->priv)->hdr.data_write_guid);
	snprintf(lk, sizeof(lk), "{%s}", g);
	ret = vhdx_loc_put(loc, cap, nk++, &pos, "parent_linkage", lk);
	if (!ret)
		ret = vhdx_loc_put(loc, cap, nk++, &pos, "relative_path", rel);
	if (!ret)
		ret = vhdx_loc_put(loc, cap, nk++, &pos, "absolute_win32_path", pabs);
	for (i = 0; !ret && i < v->nr_loc; i++) {
		const char *k = v->loc_keys[i];

		if (!strcmp(k, "parent_linkage") || !strcmp(k, "relative_path") ||
		    !strcmp(k, "absolute_win32_path") ||
		    !strcmp(k, "volume_path") || !strcmp(k, "parent_linkage2"))
			continue;
		ret = vhdx_loc_put(loc, cap, nk++, &pos, k, v->loc_vals[i]);
	}
	if (ret) {
		vdimg_err(img, "the new parent locator does not fit in an item");
		ret = -ENOSPC;
		goto out;
	}
	((struct vhdx_locator_hdr *)loc)->count = cpu_to_le16(nk);
	/* the entries' strings follow the entries actually used */
	if (nk < 3 + v->nr_loc) {
		u32 gap = (3 + v->nr_loc - nk) * sizeof(struct vhdx_locator_entry);
		u32 first = sizeof(struct vhdx_locator_hdr) + (3 + v->nr_loc) *
			    sizeof(struct vhdx_locator_entry);

		memmove(loc + first - gap, loc + first, pos - first);
		for (i = 0; i < nk; i++) {
			struct vhdx_locator_entry *le = (void *)(loc + sizeof(struct vhdx_locator_hdr) +
								 i * sizeof(*le));

			le->key_offset = cpu_to_le32(le32_to_cpu(le->key_offset) - gap);
			le->value_offset = cpu_to_le32(le32_to_cpu(le->value_offset) - gap);
		}
		pos -= gap;
		memset(loc + pos, 0, gap);
	}

	/* where the old item is, and how much room it has before the next item */
	ret = vdimg_vhdx_meta_read(img, &v->log, table, VHDX_META_TABLE_SIZE, v->meta_off);
	if (ret)
		goto out;
	n = le16_to_cpu(((struct vhdx_meta_hdr *)table)->entry_count);
	for (i = 0; i < n && i < VHDX_META_MAX; i++) {
		struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
						     i * sizeof(*m));

		if (!memcmp(m->item_id, vhdx_guid_parent, 16) &&
		    !(le32_to_cpu(m->flags) & VHDX_META_IS_USER))
			me = m;
	}
	if (!me) {
		ret = vdimg_corrupt(img, "the parent locator is not in the metadata table");
		goto out;
	}
	moff = le32_to_cpu(me->offset);
	room = v->meta_len - moff;
	for (i = 0; i < n && i < VHDX_META_MAX; i++) {
		struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
						     i * sizeof(*m));
		u32 o = le32_to_cpu(m->offset);

		if (m != me && le32_to_cpu(m->length) && o >= moff)
			room = min(room, o - moff);
		else if (m != me && le32_to_cpu(m->length) && o + le32_to_cpu(m->length) > moff)
			room = 0;
	}
	if (pos > room || pos > (VHDX_MAX_PAGES - 2) * VHDX_LOG_SECTOR) {
		vdimg_err(img, "the parent locator needs %u bytes, the metadata region has room for %u",
			  pos, room);
		ret = -ENOSPC;
		goto out;
	}

	/* through the log: the item's pages and the table entry's page */
	vdimg_mutex_lock(&v->io_lock);
	for (i = 0; i < pos && !ret; ) {
		u64 at = v->meta_off + moff + i, page = ALIGN_DOWN(at, (u64)VHDX_LOG_SECTOR);
		u32 k = min_t(u32, pos - i, page + VHDX_LOG_SECTOR - at);
		u8 *p = vhdx_page(img, v, &ps, page);

		if (!p) {
			ret = -ENOMEM;
			break;
		}
		memcpy(p + (at - page), loc + i, k);
		i += k;
	}
	if (!ret) {
		u64 at = v->meta_off + ((u8 *)&me->length - table);
		u64 page = ALIGN_DOWN(at, (u64)VHDX_LOG_SECTOR);
		u8 *p = vhdx_page(img, v, &ps, page);
		__le32 len = cpu_to_le32(pos);

		if (p)
			memcpy(p + (at - page), &len, 4);
		else
			ret = -ENOMEM;
	}
	if (!ret)
		ret = vhdx_log_commit(img, v, &ps);
	if (!ret)
		ret = vdimg_file_sync(img->file);
	if (!ret) {
		vhdx_free_locator(v);
		v->has_linkage = false;
		ret = vhdx_parse_locator(img, v, loc, pos);
		memcpy(img->parent_uuid, v->parent_linkage, 16);
	}
	vdimg_mutex_unlock(&v->io_lock);
out:
	vhdx_pageset_free(&ps);
	free(table);
	free(loc);
	free(rel);
	free(pabs);
	return ret;
}
