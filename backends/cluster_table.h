/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A bounded, least-recently-used cache of metadata tables (or pages of them) read from an image
 * file, written back when dirty: the L2 tables of QCOW and QCOW2, QCOW2's refcount blocks, and the
 * L2 table pages of QED. Each format keeps its own lock around every call and decides what must
 * reach the disk before a dirty table is evicted (@before_write of vdimg_ct_get()). Kernel-shared:
 * backends/cluster_table.c is compiled into the module and the userspace library.
 */
#ifndef _VDIMG_CLUSTER_TABLE_H
#define _VDIMG_CLUSTER_TABLE_H

#include <vdimg/backend.h>

struct vdimg_ct_slot {
	u64 off;			/* file offset of the cached table, 0: empty */
	u64 used;			/* LRU tick */
	bool dirty;			/* changed in memory since it was read or written */
	u8 *data;			/* @size bytes as on disk; NULL until first used */
};

/* Every member is protected by the lock of the format that owns the cache. */
struct vdimg_ct {
	u32 nr;				/* slots */
	u32 size;			/* bytes per slot */
	u64 tick;
	struct vdimg_ct_slot *slot;
};

/**
 * vdimg_ct_init() - set up a cache of @nr tables of @size bytes each
 * @c: the cache, zeroed by the caller
 * @nr: slots
 * @size: bytes per table
 *
 * Only the slot array is allocated here; each slot's table buffer when a table first goes into it,
 * so an image whose tables are never read (an empty layer of a chain) pins no table memory.
 *
 * Context: may sleep. Return: 0, or -ENOMEM (free what was allocated with vdimg_ct_free()).
 */
int vdimg_ct_init(struct vdimg_ct *c, u32 nr, u32 size);
void vdimg_ct_free(struct vdimg_ct *c);
/* bytes the cache holds: its slot array and the table buffers allocated so far (owner's lock) */
u64 vdimg_ct_bytes(const struct vdimg_ct *c);

/**
 * vdimg_ct_find() - the cached table at @off, marked most recently used
 * @c: the cache
 * @off: file offset of the table
 *
 * Context: the owner's lock held; never sleeps. Return: the slot, or NULL when not cached.
 */
struct vdimg_ct_slot *vdimg_ct_find(struct vdimg_ct *c, u64 off);

/**
 * vdimg_ct_write() - write a cached table back to the image file and mark it clean
 * @img: the image
 * @c: the cache holding @s
 * @s: the slot
 *
 * Context: the owner's lock held; may sleep. Return: 0 or a negative errno (@s stays dirty).
 */
int vdimg_ct_write(struct vdimg_image *img, struct vdimg_ct *c, struct vdimg_ct_slot *s);

/**
 * vdimg_ct_get() - get the table at @off into the cache
 * @img: the image
 * @c: the cache
 * @off: file offset of the table
 * @fresh: a new table: zero the slot instead of reading it
 * @before_write: called before a dirty victim is written back, to write (and sync) what must reach
 *	the disk before it; NULL when nothing must
 * @what: names the table in the message for a table past the end of the file; NULL: no message
 * @out: the slot
 *
 * A hit (zeroed when @fresh) is returned as it is. Otherwise the least recently used slot (an
 * empty one first) is written back if dirty and reused; an empty slot gets its buffer now.
 *
 * Context: the owner's lock held; may sleep. Return: 0, or a negative errno (-ENOMEM when a slot's
 * buffer cannot be allocated).
 */
int vdimg_ct_get(struct vdimg_image *img, struct vdimg_ct *c, u64 off, bool fresh,
		 int (*before_write)(struct vdimg_image *img), const char *what,
		 struct vdimg_ct_slot **out);

#endif /* _VDIMG_CLUSTER_TABLE_H */
