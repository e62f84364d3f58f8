// SPDX-License-Identifier: GPL-2.0
/*
 * The bounded LRU cache of metadata tables shared by the QCOW, QCOW2 and QED backends
 * (backends/cluster_table.h). Kernel-shared: compiled into the module and the userspace library;
 * the callers' locks protect it.
 */
#include "cluster_table.h"

/* A slot's table buffer is allocated when a table first goes into it (see vdimg_ct_get()). */
int vdimg_ct_init(struct vdimg_ct *c, u32 nr, u32 size)
{
	c->nr = nr;
	c->size = size;
	c->slot = vdimg_zalloc(nr * sizeof(*c->slot));
	if (!c->slot)
		return -ENOMEM;
	return 0;
}

u64 vdimg_ct_bytes(const struct vdimg_ct *c)
{
	u64 n = (u64)c->nr * sizeof(*c->slot);
	u32 i;

	for (i = 0; c->slot && i < c->nr; i++)
		if (c->slot[i].data)
			n += c->size;
	return n;
}

void vdimg_ct_free(struct vdimg_ct *c)
{
	u32 i;

	if (!c->slot)
		return;
	for (i = 0; i < c->nr; i++)
		vdimg_free(c->slot[i].data);
	vdimg_free(c->slot);
	c->slot = NULL;
}

struct vdimg_ct_slot *vdimg_ct_find(struct vdimg_ct *c, u64 off)
{
	u32 i;

	for (i = 0; i < c->nr; i++) {
		if (c->slot[i].off && c->slot[i].off == off) {
			c->slot[i].used = ++c->tick;
			return &c->slot[i];
		}
	}
	return NULL;
}

int vdimg_ct_write(struct vdimg_image *img, struct vdimg_ct *c, struct vdimg_ct_slot *s)
{
	int ret = vdimg_file_write(img->file, s->data, c->size, s->off);

	if (!ret)
		s->dirty = false;
	return ret;
}

int vdimg_ct_get(struct vdimg_image *img, struct vdimg_ct *c, u64 off, bool fresh,
		 int (*before_write)(struct vdimg_image *img), const char *what,
		 struct vdimg_ct_slot **out)
{
	struct vdimg_ct_slot *v = vdimg_ct_find(c, off);
	u32 i;
	int ret;

	if (v) {
		if (fresh)
			memset(v->data, 0, c->size);
		*out = v;
		return 0;
	}
	v = &c->slot[0];
	for (i = 0; i < c->nr; i++) {
		if (!c->slot[i].off) {
			v = &c->slot[i];
			break;
		}
		if (c->slot[i].used < v->used)
			v = &c->slot[i];
	}
	if (v->off && v->dirty) {
		ret = before_write ? before_write(img) : 0;
		if (!ret)
			ret = vdimg_ct_write(img, c, v);
		if (ret)
			return ret;
	}
	v->off = 0;
	v->dirty = false;
	if (!v->data) {
		v->data = vdimg_zalloc(c->size);
		if (!v->data)
			return -ENOMEM;
	}
	if (fresh) {
		memset(v->data, 0, c->size);
	} else {
		ret = vdimg_file_read(img->file, v->data, c->size, off);
		if (ret) {
			if (ret == -EFSCORRUPTED && what)
				vdimg_err(img, "%s at %llu is past the end of the file", what,
					  (unsigned long long)off);
			return ret;
		}
	}
	v->off = off;
	v->used = ++c->tick;
	*out = v;
	return 0;
}
