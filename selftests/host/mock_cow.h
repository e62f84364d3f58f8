/* SPDX-License-Identifier: GPL-2.0 */
/*
 * "mockcow": a minimal copy-on-write format that exists only in the host tests, so the chain I/O
 * layer (tools/lib/io.c) can be tested on every extent kind before real sparse backends exist.
 * It is handed to vdimg_chain_open_ops() directly and is never in the registry.
 *
 * Layout (little-endian): a 512-byte header {"MOCKCOW\0", u64 size, u32 unit, u32 nclusters,
 * u8 uuid[16], u8 parent_uuid[16]}, then u32 table[nclusters] at 512, data clusters from
 * ALIGN(512 + 4 * nclusters, unit). Entry 0: unallocated; MOCK_ZERO: reads zeros; MOCK_ENC: an
 * "encoded" cluster whose bytes are computed (mock_enc_byte); k: data at data_start + (k-1) * unit.
 * A unit of 512 gives NEW extents without fill (like a sector bitmap format); larger units need the
 * whole cluster filled. A write to a ZERO cluster asks for a zero fill (VDIMG_EXT_FILL_ZERO).
 *
 * Knobs for fault tests: mock_evil (1: zero-length extents, 2: offset mismatch, 3: huge fill range,
 * 4: fill range not containing the extent); counters of commits, aborts, flushes.
 */
#ifndef _VDIMG_MOCK_COW_H
#define _VDIMG_MOCK_COW_H

#include <vdimg/backend.h>
#include "vdimg-user.h"

#define MOCK_ZERO	0xffffffffU
#define MOCK_ENC	0xfffffffeU

struct mock_hdr {
	char magic[8];
	__le64 size;
	__le32 unit;
	__le32 nclusters;
	u8 uuid[16];
	u8 parent_uuid[16];
};

struct mock_priv {
	u32 unit, n;
	u64 data_start;
	u32 next;		/* next free data cluster number (1-based) */
	u32 *table;
};

static int mock_evil, mock_commits, mock_aborts, mock_flushes;
/* the backend protects its own tables (contract); one lock for the whole mock is enough */
static pthread_mutex_t mock_lock = PTHREAD_MUTEX_INITIALIZER;

static inline unsigned char mock_enc_byte(u64 off)
{
	return (unsigned char)((off * 7) ^ 0x5a);
}

static u64 mock_data_start(u32 unit, u32 n)
{
	return ALIGN(512 + 4ULL * n, (u64)unit);
}

/* Write an empty mockcow image to @fd. */
static int mock_create(int fd, u64 size, u32 unit, const u8 *uuid, const u8 *parent_uuid)
{
	struct mock_hdr h;
	u32 n = (u32)DIV_ROUND_UP(size, unit);
	char sector[512];

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, "MOCKCOW", 8);
	h.size = cpu_to_le64(size);
	h.unit = cpu_to_le32(unit);
	h.nclusters = cpu_to_le32(n);
	if (uuid)
		memcpy(h.uuid, uuid, 16);
	if (parent_uuid)
		memcpy(h.parent_uuid, parent_uuid, 16);
	memset(sector, 0, sizeof(sector));
	memcpy(sector, &h, sizeof(h));
	if (ftruncate(fd, 0) || pwrite(fd, sector, 512, 0) != 512 ||
	    ftruncate(fd, mock_data_start(unit, n)))
		return -errno;
	return 0;
}

/* Set a table entry directly in the file (for ZERO/ENC clusters). */
static int mock_set_entry(int fd, u32 cl, u32 val)
{
	__le32 v = cpu_to_le32(val);

	return pwrite(fd, &v, 4, 512 + 4ULL * cl) == 4 ? 0 : -EIO;
}

static int mock_open(struct vdimg_image *img, unsigned int flags)
{
	static const u8 nil[16];
	struct mock_priv *m;
	struct mock_hdr h;
	u64 fsize = vdimg_file_size(img->file), end;
	u32 i;
	int ret;

	ret = vdimg_file_read(img->file, &h, sizeof(h), 0);
	if (ret)
		return ret;
	if (memcmp(h.magic, "MOCKCOW", 8))
		return vdimg_corrupt(img, "bad magic");
	m = vdimg_zalloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	img->size = le64_to_cpu(h.size);
	m->unit = le32_to_cpu(h.unit);
	m->n = le32_to_cpu(h.nclusters);
	if (m->unit < 512 || !is_power_of_2(m->unit) || m->unit > (1U << 26) || !img->size ||
	    img->size % 512 || m->n != DIV_ROUND_UP(img->size, m->unit) || m->n > (1U << 24)) {
		vdimg_free(m);
		return vdimg_corrupt(img, "bad geometry");
	}
	m->data_start = mock_data_start(m->unit, m->n);
	m->table = vdimg_zalloc(4ULL * m->n);
	if (!m->table) {
		vdimg_free(m);
		return -ENOMEM;
	}
	ret = vdimg_file_read(img->file, m->table, 4ULL * m->n, 512);
	if (ret) {
		vdimg_free(m->table);
		vdimg_free(m);
		return ret;
	}
	m->next = 1;
	for (i = 0; i < m->n; i++) {
		u32 e = le32_to_cpu(m->table[i]);

		m->table[i] = e;
		if (e && e != MOCK_ZERO && e != MOCK_ENC && e >= m->next)
			m->next = e + 1;
	}
	end = m->data_start + (u64)(m->next - 1) * m->unit;
	if (fsize > end)
		m->next += (fsize - end + m->unit - 1) / m->unit;	/* leaked space stays leaked */
	img->lbs = 512;
	img->pbs = 512;
	img->alloc_unit = m->unit;
	memcpy(img->uuid, h.uuid, 16);
	memcpy(img->parent_uuid, h.parent_uuid, 16);
	img->flags |= VDIMG_IMG_HAS_UUID;
	if (memcmp(h.parent_uuid, nil, 16))
		img->flags |= VDIMG_IMG_HAS_PARENT | VDIMG_IMG_HAS_PARENT_UUID;
	vdimg_strscpy(img->variant, img->flags & VDIMG_IMG_HAS_PARENT ? "differencing" : "dynamic",
		      sizeof(img->variant));
	img->priv = m;
	return 0;
}

static void mock_close(struct vdimg_image *img)
{
	struct mock_priv *m = img->priv;

	vdimg_free(m->table);
	vdimg_free(m);
	img->priv = NULL;
}

static int mock_map_locked(struct vdimg_image *img, u64 off, u64 len, unsigned int flags,
			   struct vdimg_extent *ext);

static int mock_map(struct vdimg_image *img, u64 off, u64 len, unsigned int flags,
		    struct vdimg_extent *ext)
{
	int ret;

	pthread_mutex_lock(&mock_lock);
	ret = mock_map_locked(img, off, len, flags, ext);
	pthread_mutex_unlock(&mock_lock);
	return ret;
}

static int mock_map_locked(struct vdimg_image *img, u64 off, u64 len, unsigned int flags,
			   struct vdimg_extent *ext)
{
	struct mock_priv *m = img->priv;
	u32 cl, e;
	u64 in;

	if (off >= img->size || !len)
		return -EINVAL;
	len = min(len, img->size - off);
	cl = off / m->unit;
	in = off % m->unit;
	e = m->table[cl];
	memset(ext, 0, sizeof(*ext));
	ext->offset = off;
	ext->length = min(len, m->unit - in);

	if ((flags & VDIMG_MAP_WRITE) && (e == 0 || e == MOCK_ZERO || e == MOCK_ENC)) {
		u32 k = m->next++;
		int ret;

		ext->type = VDIMG_EXT_DATA;
		ext->flags = VDIMG_EXT_NEW;
		ext->file = img->file;
		ext->file_offset = m->data_start + (u64)(k - 1) * m->unit + in;
		ext->fill_offset = (u64)cl * m->unit;
		ext->fill_length = m->unit == 512 ? 0 : m->unit;
		ext->cookie[0] = cl;
		ext->cookie[1] = k;
		if (e == MOCK_ZERO && m->unit == 512) {
			/* no fill asked: zero the new space here (the other way the contract allows) */
			ret = vdimg_file_zero(img->file, ext->file_offset - in, m->unit);
			if (ret)
				return ret;
		} else if (e == MOCK_ZERO) {
			/* the cluster read as zeros, not as the parent: fill with zeros */
			ext->flags |= VDIMG_EXT_FILL_ZERO;
		}
		switch (mock_evil) {
		case 1: ext->length = 0; break;
		case 2: ext->offset += 512; break;
		case 3: ext->fill_length = 1ULL << 40; break;
		case 4: ext->fill_offset += m->unit; break;
		}
		return 0;
	}
	/* extend over following clusters of the same kind */
	while (off + ext->length < img->size && ext->length < len) {
		u32 ne = m->table[cl + 1];

		if (!((e == 0 && ne == 0) || (e == MOCK_ZERO && ne == MOCK_ZERO) ||
		      (e != 0 && e < MOCK_ENC && ne == e + 1)))
			break;
		cl++;
		e = ne;
		ext->length = min(len, ext->length + m->unit);
	}
	e = m->table[off / m->unit];
	if (e == 0) {
		ext->type = VDIMG_EXT_UNALLOCATED;
	} else if (e == MOCK_ZERO) {
		ext->type = VDIMG_EXT_ZERO;
	} else if (e == MOCK_ENC) {
		ext->type = VDIMG_EXT_ENCODED;
	} else {
		ext->type = VDIMG_EXT_DATA;
		ext->file = img->file;
		ext->file_offset = m->data_start + (u64)(e - 1) * m->unit + in;
	}
	if (mock_evil == 1)
		ext->length = 0;
	else if (mock_evil == 2)
		ext->offset += 512;
	return 0;
}

static int mock_commit(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	struct mock_priv *m = img->priv;
	u32 cl = ext->cookie[0], k = ext->cookie[1];
	__le32 v = cpu_to_le32(k);
	int ret;

	pthread_mutex_lock(&mock_lock);
	ret = vdimg_file_write(img->file, &v, 4, 512 + 4ULL * cl);
	if (!ret) {
		m->table[cl] = k;
		img->flags |= VDIMG_IMG_DIRTY;
		mock_commits++;
	}
	pthread_mutex_unlock(&mock_lock);
	return ret;
}

static void mock_abort(struct vdimg_image *img, const struct vdimg_extent *ext)
{
	mock_aborts++;		/* the reserved cluster stays leaked, as the contract allows */
}

static int mock_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf)
{
	u8 *p = buf;
	u64 i;

	for (i = 0; i < ext->length; i++)
		p[i] = mock_enc_byte(ext->offset + i);
	return 0;
}

static int mock_discard(struct vdimg_image *img, u64 off, u64 len, unsigned int flags)
{
	struct mock_priv *m = img->priv;
	u64 end = off + len;
	u32 cl;
	int ret;

	if (off >= img->size || len > img->size - off)
		return -EINVAL;
	/* whole clusters only; partial ones are zeroed in place when zeroes are asked for */
	for (cl = off / m->unit; (u64)cl * m->unit < end; cl++) {
		u64 cs = (u64)cl * m->unit, ce = min(cs + m->unit, img->size);
		u32 val = flags & VDIMG_DISCARD_ZEROES ? MOCK_ZERO : 0;
		__le32 v = cpu_to_le32(val);

		if (cs >= off && ce <= end) {
			ret = vdimg_file_write(img->file, &v, 4, 512 + 4ULL * cl);
			if (ret)
				return ret;
			m->table[cl] = val;
		} else if (flags & VDIMG_DISCARD_ZEROES) {
			return -EOPNOTSUPP;	/* let the caller write zeros */
		}
	}
	return 0;
}

static int mock_flush(struct vdimg_image *img)
{
	mock_flushes++;
	return 0;
}

static int mock_verify_parent(struct vdimg_image *child, struct vdimg_image *parent)
{
	if ((child->flags & VDIMG_IMG_HAS_PARENT_UUID) &&
	    memcmp(child->parent_uuid, parent->uuid, 16)) {
		vdimg_err(child, "parent %s has the wrong uuid", parent->name);
		return -ESTALE;
	}
	return 0;
}

static const struct vdimg_format mock_cow_format = {
	.name = "mockcow",
	.id = VDIMG_FMT_COUNT,	/* not a real id */
	.open = mock_open,
	.close = mock_close,
	.map = mock_map,
	.commit = mock_commit,
	.abort = mock_abort,
	.read_encoded = mock_read_encoded,
	.discard = mock_discard,
	.flush = mock_flush,
	.verify_parent = mock_verify_parent,
};

#endif /* _VDIMG_MOCK_COW_H */
