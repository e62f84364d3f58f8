// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the VMDK tool operations (create, check/repair, describe, parent_ref,
 * set_parent) over the kernel-shared backend in backends/vmdk/. Not part of the module build.
 *
 * create writes monolithicSparse images laid out the way qemu-img does (header, embedded
 * descriptor, redundant GD and its GTs, GD and its GTs, all GTs preallocated, the grain area from a
 * grain boundary), so qemu-img check and VMware-compatible readers accept them, the variants with
 * extent files beside a descriptor, and streamOptimized files written in one pass from a source
 * (convert) in the order VMware's OVF export uses, and empty seSparse extents (ESXi 6.5+ snapshot
 * children) whose table and grain areas have room for every table and grain, and empty COWD
 * (vmfsSparse, ESX 3-5 "-delta.vmdk") extents.
 */
#include <stdio.h>
#include <stdarg.h>
#include <fcntl.h>
#include <unistd.h>
#include <limits.h>
#include <zlib.h>
#include "../../../backends/vmdk/vmdk.h"
#include "vdimg-user.h"

#define VMDK_DEFAULT_GRAIN	(64U << 10)
#define VMDK_CREATE_GTES	512U
#define VMDK_CREATE_DESC_SECTORS 20U

static bool vmdk_opt(const char *opts, const char *key, char *val, size_t valsz)
{
	size_t kl = strlen(key);
	const char *p = opts;

	while (p && *p) {
		if (!strncmp(p, key, kl) && (p[kl] == '=' || p[kl] == ',' || !p[kl])) {
			size_t n = p[kl] == '=' ? strcspn(p + kl + 1, ",") : 0;

			if (n >= valsz)
				n = valsz - 1;
			memcpy(val, p + kl + 1, n);
			val[n] = 0;
			if (p[kl] != '=')
				snprintf(val, valsz, "on");
			return true;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return false;
}

static bool vmdk_opt_on(const char *opts, const char *key)
{
	char v[16];

	return vmdk_opt(opts, key, v, sizeof(v)) && (!strcmp(v, "on") || !strcmp(v, "true") ||
						   !strcmp(v, "1"));
}

/* the file name of @f (for the extent line), from /proc */
static void vmdk_file_name(struct vdimg_file *f, char *buf, size_t len)
{
	char link[64], path[PATH_MAX];
	ssize_t n;
	const char *slash;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", f->fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0) {
		snprintf(buf, len, "disk.vmdk");
		return;
	}
	path[n] = 0;
	slash = strrchr(path, '/');
	slash = slash ? slash + 1 : path;
	n = min_t(size_t, strlen(slash), len - 1);
	memcpy(buf, slash, n);
	buf[n] = '\0';
}

static u32 vmdk_new_cid(void)
{
	u32 cid;

	do {
		vdimg_random_bytes(&cid, sizeof(cid));
	} while (cid >= 0xfffffffeU);
	return cid;
}

/*
 * A hosted sparse extent of @cap sectors in @f, laid out as qemu-img does: header, the descriptor
 * @desc in 20 reserved sectors (none when NULL), redundant GD and its GTs, GD and its GTs (all
 * preallocated, zeros), then the grain area from a grain boundary.
 */
static int vmdk_write_sparse(struct vdimg_file *f, u64 cap, u64 gsec, bool zero_grain,
			     const char *desc)
{
	u64 nr_gts, gd_sec, gt_sec, rgd, gd, overhead, i, dsec = desc ? VMDK_CREATE_DESC_SECTORS : 0;
	struct vmdk_header h;
	__le32 *dir;
	char *area = NULL;
	int ret;

	nr_gts = DIV_ROUND_UP(cap, VMDK_CREATE_GTES * gsec);
	if (nr_gts > (1U << 22) || cap > (1ULL << 44))
		return -EFBIG;
	gd_sec = DIV_ROUND_UP(nr_gts * 4, VMDK_SECTOR);
	gt_sec = VMDK_CREATE_GTES * 4 / VMDK_SECTOR;
	rgd = 1 + dsec;
	gd = rgd + gd_sec + nr_gts * gt_sec;
	overhead = ALIGN(gd + gd_sec + nr_gts * gt_sec, gsec);
	if (overhead + (u64)DIV_ROUND_UP(cap, gsec) * gsec > U32_MAX)
		return -EFBIG;

	memset(&h, 0, sizeof(h));
	h.magic = cpu_to_le32(VMDK_MAGIC);
	h.version = cpu_to_le32(zero_grain ? 2 : 1);
	h.flags = cpu_to_le32(VMDK_FLAG_NL_TEST | VMDK_FLAG_RGD |
			      (zero_grain ? VMDK_FLAG_ZERO_GRAIN : 0));
	h.capacity = cpu_to_le64(cap);
	h.grain_size = cpu_to_le64(gsec);
	h.desc_offset = cpu_to_le64(desc ? 1 : 0);
	h.desc_size = cpu_to_le64(dsec);
	h.num_gtes_per_gt = cpu_to_le32(VMDK_CREATE_GTES);
	h.rgd_offset = cpu_to_le64(rgd);
	h.gd_offset = cpu_to_le64(gd);
	h.overhead = cpu_to_le64(overhead);
	h.nl_single = '\n';
	h.nl_non = ' ';
	h.nl_double1 = '\r';
	h.nl_double2 = '\n';

	dir = calloc(1, gd_sec * VMDK_SECTOR);
	if (desc)
		area = calloc(1, dsec * VMDK_SECTOR);
	if (!dir || (desc && !area)) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_write(f, &h, sizeof(h), 0);
	if (!ret && desc) {
		memcpy(area, desc, min_t(size_t, strlen(desc), dsec * VMDK_SECTOR));
		ret = vdimg_file_write(f, area, dsec * VMDK_SECTOR, VMDK_SECTOR);
	}
	for (i = 0; i < nr_gts; i++)
		dir[i] = cpu_to_le32(rgd + gd_sec + i * gt_sec);
	if (!ret)
		ret = vdimg_file_write(f, dir, gd_sec * VMDK_SECTOR, rgd * VMDK_SECTOR);
	for (i = 0; i < nr_gts; i++)
		dir[i] = cpu_to_le32(gd + gd_sec + i * gt_sec);
	if (!ret)
		ret = vdimg_file_write(f, dir, gd_sec * VMDK_SECTOR, gd * VMDK_SECTOR);
	/* the grain tables are zeros: a sparse file up to the grain area */
	if (!ret)
		ret = vdimg_file_truncate(f, overhead * VMDK_SECTOR);
out:
	free(dir);
	free(area);
	return ret;
}

/* ---- streamOptimized: written once, front to back ---- */

struct vmdk_stream_out {
	struct vdimg_file *f;
	u64 pos;			/* bytes written so far (a sector multiple) */
	u8 *buf;			/* [cap_bytes]: a marker plus compressed data */
	size_t cap_bytes;
};

/* append @len bytes of @p, then zeros up to the next sector */
static int vmdk_stream_put(struct vmdk_stream_out *o, const void *p, size_t len)
{
	static const u8 zeros[VMDK_SECTOR];
	size_t pad = ALIGN(len, (size_t)VMDK_SECTOR) - len;
	int ret;

	ret = vdimg_file_write(o->f, p, len, o->pos);
	if (!ret && pad)
		ret = vdimg_file_write(o->f, zeros, pad, o->pos + len);
	if (!ret)
		o->pos += len + pad;
	return ret;
}

/* a metadata marker of @type followed by @sectors sectors of @data (@len bytes, padded) */
static int vmdk_stream_meta(struct vmdk_stream_out *o, u32 type, const void *data, size_t len)
{
	struct vmdk_marker m;
	int ret;

	memset(&m, 0, sizeof(m));
	m.num_sectors = cpu_to_le64(DIV_ROUND_UP(len, VMDK_SECTOR));
	m.type = cpu_to_le32(type);
	ret = vmdk_stream_put(o, &m, sizeof(m));
	if (!ret && len)
		ret = vmdk_stream_put(o, data, len);
	return ret;
}

/* one grain: its marker (first sector, compressed size) and the zlib stream; its sector in *@gte */
static int vmdk_stream_grain(struct vmdk_stream_out *o, u64 lba, const u8 *data, size_t len,
			     __le32 *gte)
{
	struct vmdk_grain_marker *m = (struct vmdk_grain_marker *)o->buf;
	uLongf clen = o->cap_bytes - sizeof(*m);

	if (compress2(o->buf + sizeof(*m), &clen, data, len, Z_DEFAULT_COMPRESSION) != Z_OK)
		return -ENOMEM;
	if (o->pos / VMDK_SECTOR > U32_MAX)
		return -EFBIG;
	m->lba = cpu_to_le64(lba);
	m->size = cpu_to_le32(clen);
	*gte = cpu_to_le32(o->pos / VMDK_SECTOR);
	return vmdk_stream_put(o, o->buf, sizeof(*m) + clen);
}

/*
 * A streamOptimized file as VMware's OVF export writes it: the header (gdOffset GD_AT_END, so a
 * reader takes the footer's), the descriptor, then for each grain table the compressed grains it
 * covers that are not all zeros, each behind a grain marker, followed by the GT behind a GT marker
 * (GTs without grains are left out: their GD entry is 0); then the GD behind its marker, the footer
 * marker and a copy of the header with the real gdOffset, and the end-of-stream marker. The
 * contents come from opts->source_read (none: an empty disk).
 */
static int vmdk_write_stream(struct vdimg_file *f, u64 cap, u64 gsec, const char *desc,
			     const struct vdimg_create_opts *opts)
{
	u64 nr_gts = DIV_ROUND_UP(cap, VMDK_CREATE_GTES * gsec), gd_sec, dsec, g, i;
	u32 grain = gsec * VMDK_SECTOR;
	struct vmdk_stream_out o = { .f = f };
	struct vmdk_header h;
	__le32 *gd = NULL, *gt = NULL;
	u8 *data = NULL;
	char *area = NULL;
	int ret = -ENOMEM;

	if (nr_gts > (1U << 22))
		return -EFBIG;
	gd_sec = DIV_ROUND_UP(nr_gts * 4, VMDK_SECTOR);
	dsec = VMDK_CREATE_DESC_SECTORS;
	memset(&h, 0, sizeof(h));
	h.magic = cpu_to_le32(VMDK_MAGIC);
	h.version = cpu_to_le32(3);
	h.flags = cpu_to_le32(VMDK_FLAG_NL_TEST | VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS);
	h.capacity = cpu_to_le64(cap);
	h.grain_size = cpu_to_le64(gsec);
	h.desc_offset = cpu_to_le64(1);
	h.desc_size = cpu_to_le64(dsec);
	h.num_gtes_per_gt = cpu_to_le32(VMDK_CREATE_GTES);
	h.gd_offset = cpu_to_le64(VMDK_GD_AT_END);
	h.overhead = cpu_to_le64(ALIGN(1 + dsec, gsec));
	h.nl_single = '\n';
	h.nl_non = ' ';
	h.nl_double1 = '\r';
	h.nl_double2 = '\n';
	h.compress_algorithm = cpu_to_le16(VMDK_COMPRESS_DEFLATE);

	o.cap_bytes = sizeof(struct vmdk_grain_marker) + compressBound(grain);
	o.buf = malloc(o.cap_bytes);
	gd = calloc(1, gd_sec * VMDK_SECTOR);
	gt = malloc(VMDK_CREATE_GTES * 4);
	data = malloc(grain);
	area = calloc(1, dsec * VMDK_SECTOR);
	if (!o.buf || !gd || !gt || !data || !area)
		goto out;
	memcpy(area, desc, min_t(size_t, strlen(desc), dsec * VMDK_SECTOR));
	ret = vmdk_stream_put(&o, &h, sizeof(h));
	if (!ret)
		ret = vmdk_stream_put(&o, area, dsec * VMDK_SECTOR);
	o.pos = le64_to_cpu(h.overhead) * VMDK_SECTOR;
	for (g = 0; g < nr_gts && !ret; g++) {
		bool any = false;

		memset(gt, 0, VMDK_CREATE_GTES * 4);
		for (i = 0; i < VMDK_CREATE_GTES && opts->source_read && !ret; i++) {
			u64 lba = (g * VMDK_CREATE_GTES + i) * gsec;
			size_t len;
			bool zero = false;

			if (lba >= cap)
				break;
			len = min_t(u64, gsec, cap - lba) * VMDK_SECTOR;
			ret = opts->source_read(opts->source_ctx, data, len, lba * VMDK_SECTOR,
						&zero);
			if (ret || zero || (!data[0] && !memcmp(data, data + 1, len - 1)))
				continue;
			ret = vmdk_stream_grain(&o, lba, data, len, &gt[i]);
			any = true;
		}
		if (ret || !any)
			continue;
		if (o.pos / VMDK_SECTOR + 1 > U32_MAX) {
			ret = -EFBIG;
			break;
		}
		gd[g] = cpu_to_le32(o.pos / VMDK_SECTOR + 1);
		ret = vmdk_stream_meta(&o, VMDK_MARKER_GT, gt, VMDK_CREATE_GTES * 4);
	}
	if (ret)
		goto out;
	h.gd_offset = cpu_to_le64(o.pos / VMDK_SECTOR + 1);
	ret = vmdk_stream_meta(&o, VMDK_MARKER_GD, gd, gd_sec * VMDK_SECTOR);
	if (!ret)
		ret = vmdk_stream_meta(&o, VMDK_MARKER_FOOTER, &h, sizeof(h));
	if (!ret)
		ret = vmdk_stream_meta(&o, VMDK_MARKER_EOS, NULL, 0);
	if (!ret)
		ret = vdimg_file_truncate(f, o.pos);
	if (!ret && opts->source_read && opts->source_copied)
		*opts->source_copied = true;
out:
	free(o.buf);
	free(gd);
	free(gt);
	free(data);
	free(area);
	return ret;
}

enum vmdk_create_kind { VMDK_MONO_SPARSE, VMDK_MONO_FLAT, VMDK_SPLIT_SPARSE, VMDK_SPLIT_FLAT,
			VMDK_STREAM, VMDK_SESPARSE, VMDK_COWD };

#define VMDK_COWD_GRAIN_SECTORS	8U	/* 4 KiB grains in the COWD extents create writes */

/*
 * An empty COWD extent of @cap sectors in @f: the 2048-byte header, the grain directory from
 * sector 4, freeSector after it; grain tables and grains are appended there when written.
 */
static int vmdk_write_cowd(struct vdimg_file *f, u64 cap)
{
	u32 span = VMDK_COWD_GTES * VMDK_COWD_GRAIN_SECTORS, gde = DIV_ROUND_UP(cap, span);
	u32 gd_sec = DIV_ROUND_UP(gde * 4, VMDK_SECTOR);
	u8 hdr[VMDK_COWD_HEADER_SIZE] = { 0 };
	struct vmdk_cowd_header *h = (struct vmdk_cowd_header *)hdr;
	int ret;

	if (cap > U32_MAX - 8 * span)
		return -EFBIG;
	memcpy(h->magic, "COWD", 4);
	h->version = cpu_to_le32(1);
	h->flags = cpu_to_le32(3);
	h->capacity = cpu_to_le32(cap);
	h->grain_size = cpu_to_le32(VMDK_COWD_GRAIN_SECTORS);
	h->gd_offset = cpu_to_le32(VMDK_COWD_HEADER_SIZE / VMDK_SECTOR);
	h->gd_entries = cpu_to_le32(gde);
	h->next_free = cpu_to_le32(VMDK_COWD_HEADER_SIZE / VMDK_SECTOR + gd_sec);
	ret = vdimg_file_truncate(f, (u64)(VMDK_COWD_HEADER_SIZE / VMDK_SECTOR + gd_sec) * VMDK_SECTOR);
	if (!ret)
		ret = vdimg_file_write(f, hdr, sizeof(hdr), 0);
	return ret;
}

/* an empty seSparse extent of @cap sectors in @f */
static int vmdk_write_sesparse(struct vdimg_file *f, u64 cap)
{
	u8 hdr[2 * VMDK_SECTOR];
	u64 fsec;
	int ret;

	ret = vmdk_se_new(cap, hdr, hdr + VMDK_SECTOR, &fsec);
	if (!ret)
		ret = vdimg_file_truncate(f, fsec * VMDK_SECTOR);
	if (!ret)
		ret = vdimg_file_write(f, hdr, sizeof(hdr), 0);
	return ret;
}

/* the extents of twoGbMaxExtent* images: 2 GiB, as qemu splits them */
#define VMDK_SPLIT_SECTORS	(VMDK_SPLIT_BYTES / VMDK_SECTOR)

/* append printf-style to @buf (of @len), false when it does not fit */
__attribute__((format(printf, 4, 5)))
static bool vmdk_cat(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len - *pos)
		return false;
	*pos += n;
	return true;
}

/* the name of extent file @i of @kind for the descriptor named @base (without ".vmdk") */
static void vmdk_extent_name(char *out, size_t len, const char *base, enum vmdk_create_kind kind,
			     u32 i)
{
	if (kind == VMDK_MONO_FLAT)
		snprintf(out, len, "%s-flat.vmdk", base);
	else if (kind == VMDK_SESPARSE)
		snprintf(out, len, "%s-sesparse.vmdk", base);
	else if (kind == VMDK_COWD)
		snprintf(out, len, "%s-delta.vmdk", base);
	else
		snprintf(out, len, "%s-%c%03u.vmdk", base, kind == VMDK_SPLIT_SPARSE ? 's' : 'f', i + 1);
}

/*
 * A new extent file @xname of @n sectors in the directory @dfd, which must not hold one of that
 * name yet: a hosted sparse extent of @gsec-sector grains (vmdk_write_sparse()) for
 * VMDK_SPLIT_SPARSE, an seSparse or COWD extent for those kinds, a sparse file of that size for the
 * flat ones; synced. On failure the file is removed again (unless it was there before: -EEXIST).
 */
static int vmdk_new_extent_file(int dfd, const char *xname, enum vmdk_create_kind kind, u64 n,
				u64 gsec, bool zero_grain, const struct vdimg_image *msg)
{
	struct vdimg_file *xf;
	int xfd, ret;

	xfd = openat(dfd, xname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (xfd < 0) {
		ret = -errno;
		vdimg_err(msg, "cannot create the extent file %s: %s", xname, strerror(-ret));
		return ret;
	}
	xf = vdimg_file_from_fd(xfd);
	ret = xf ? 0 : -ENOMEM;
	if (!ret && kind == VMDK_SPLIT_SPARSE)
		ret = vmdk_write_sparse(xf, n, gsec, zero_grain, NULL);
	else if (!ret && kind == VMDK_SESPARSE)
		ret = vmdk_write_sesparse(xf, n);
	else if (!ret && kind == VMDK_COWD)
		ret = vmdk_write_cowd(xf, n);
	else if (!ret)
		ret = vdimg_file_truncate(xf, n * VMDK_SECTOR);
	if (!ret)
		ret = vdimg_file_sync(xf);
	vdimg_file_free(xf);
	close(xfd);
	if (ret)
		unlinkat(dfd, xname, 0);
	return ret;
}

/*
 * The value of @key in the parent's descriptor into @val when it is a plain one (no quotes or
 * control characters, as it goes into the child's descriptor); @val is left as it is otherwise.
 */
static void vmdk_ddb_inherit(const struct vmdk *pv, const char *key, char *val, size_t len)
{
	char v[64];
	size_t i;

	if (!vmdk_desc_value(pv->desc_text, pv->desc.text_len, key, v, sizeof(v)) || !v[0])
		return;
	for (i = 0; v[i]; i++)
		if (v[i] < 0x20 || v[i] == '"' || v[i] == 0x7f)
			return;
	if (i < len)
		memcpy(val, v, i + 1);
}

/*
 * A child's descriptor gets the parent's other ddb lines byte for byte (uuid, tools version,
 * geometry when @geo: the sizes are equal; ...), but not the ones create writes itself or
 * longContentID, which belongs to the parent's contents.
 */
static bool vmdk_ddb_copy(const struct vmdk *pv, char *desc, size_t dlen, size_t *pos, bool geo)
{
	static const char *const own[] = {
		"ddb.virtualHWVersion", "ddb.adapterType", "ddb.longContentID",
	};
	static const char *const geometry[] = {
		"ddb.geometry.cylinders", "ddb.geometry.heads", "ddb.geometry.sectors",
	};
	const char *src = pv->desc_text, *end = src + pv->desc.text_len, *eol;
	size_t i;

	for (; src < end; src = eol) {
		const char *nl = memchr(src, '\n', end - src), *p = src;
		size_t n;
		bool skip = false;

		eol = nl ? nl + 1 : end;
		n = eol - src;
		while (p < eol && (*p == ' ' || *p == '\t'))
			p++;
		if (eol - p < 4 || memcmp(p, "ddb.", 4))
			continue;
		for (i = 0; i < ARRAY_SIZE(own); i++)
			skip |= vmdk_line_is(src, n, own[i]);
		for (i = 0; i < ARRAY_SIZE(geometry); i++)
			skip |= !geo && vmdk_line_is(src, n, geometry[i]);
		if (skip)
			continue;
		if (n >= dlen - *pos || (!nl && n + 1 >= dlen - *pos))
			return false;
		memcpy(desc + *pos, src, n);
		*pos += n;
		if (!nl)
			desc[(*pos)++] = '\n';
	}
	return true;
}

static int vmdk_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	static const struct {
		const char *name;
		enum vmdk_create_kind kind;
	} kinds[] = {
		{ "monolithicSparse", VMDK_MONO_SPARSE }, { "sparse", VMDK_MONO_SPARSE },
		{ "monolithicFlat", VMDK_MONO_FLAT },
		{ "twoGbMaxExtentSparse", VMDK_SPLIT_SPARSE },
		{ "twoGbMaxExtentFlat", VMDK_SPLIT_FLAT },
		{ "streamOptimized", VMDK_STREAM },
		{ "seSparse", VMDK_SESPARSE },
		{ "vmfsSparse", VMDK_COWD },
	};
	const struct vdimg_image msg = { .name = "vmdk create" };
	struct vdimg_image *parent = opts->parent ? opts->parent_img : NULL;
	u32 grain = opts->block_size ? opts->block_size : VMDK_DEFAULT_GRAIN;
	enum vmdk_create_kind kind = VMDK_MONO_SPARSE;
	u64 size = opts->size, cap, gsec, per, cyl;
	u32 parent_cid = VMDK_CID_NONE, nr, i, made = 0;
	char adapter[32] = "ide", hw[16] = "4", name[256], base[256], xname[300];
	char pcid[9], cid[9], geo[32], *desc = NULL, *dir = NULL;
	const char *o = opts->options, *ct = "monolithicSparse";
	bool zero_grain = vmdk_opt_on(o, "zeroed_grain"), mono, same_geo;
	const struct vmdk *pv = NULL;
	size_t pos = 0, dlen;
	int ret, dfd = -1;

	if (opts->parent && !parent)
		return -EINVAL;
	if (!size && parent)
		size = parent->size;
	if (!size || size % VMDK_SECTOR || (opts->lbs && opts->lbs != VMDK_SECTOR))
		return -EINVAL;
	if (opts->variant) {
		for (i = 0; i < ARRAY_SIZE(kinds) && strcmp(opts->variant, kinds[i].name); i++)
			;
		if (i == ARRAY_SIZE(kinds)) {
			vdimg_err(&msg, "creating %s VMDK images is not supported (monolithicSparse, monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized, seSparse, vmfsSparse)",
				  opts->variant);
			return -EOPNOTSUPP;
		}
		kind = kinds[i].kind;
		ct = kind == VMDK_MONO_SPARSE ? "monolithicSparse" : kinds[i].name;
	}
	mono = kind == VMDK_MONO_SPARSE || kind == VMDK_STREAM;
	if (kind == VMDK_STREAM && parent) {
		vdimg_err(&msg, "a streamOptimized VMDK image cannot have a parent");
		return -EOPNOTSUPP;
	}
	if ((kind == VMDK_SESPARSE || kind == VMDK_COWD) && opts->block_size) {
		vdimg_err(&msg, "%s grains are always 4 KiB (no block size can be chosen)",
			  opts->variant);
		return -EINVAL;
	}
	/* the spec asks for more than 8 sectors (libvmdk refuses fewer) */
	if (!is_power_of_2(grain) || grain < 8192 || grain > (16U << 20)) {
		vdimg_err(&msg, "grain size %u is not a power of two from 8 KiB to 16 MiB", grain);
		return -EINVAL;
	}
	if (parent && parent->fmt && parent->fmt->id == VDIMG_FMT_VMDK && parent->priv &&
	    VMDK(parent)->desc_text)
		pv = VMDK(parent);
	/* a child takes its parent's adapter and hardware version unless told otherwise */
	if (vmdk_opt(o, "adapter_type", adapter, sizeof(adapter))) {
		if (strcmp(adapter, "ide") && strcmp(adapter, "buslogic") &&
		    strcmp(adapter, "lsilogic") && strcmp(adapter, "legacyESX")) {
			vdimg_err(&msg, "unknown adapter_type %s", adapter);
			return -EINVAL;
		}
	} else if (pv) {
		/* VMware's other names (pvscsi, lsisas1068) are kept as they are */
		vmdk_ddb_inherit(pv, "ddb.adapterType", adapter, sizeof(adapter));
	}
	if (!vmdk_opt(o, "hwversion", hw, sizeof(hw)) && pv) {
		char phw[16] = "";

		vmdk_ddb_inherit(pv, "ddb.virtualHWVersion", phw, sizeof(phw));
		if (phw[0] && strspn(phw, "0123456789") == strlen(phw))
			snprintf(hw, sizeof(hw), "%s", phw);
	}
	if (vmdk_opt_on(o, "compat6"))
		snprintf(hw, sizeof(hw), "6");
	if (strspn(hw, "0123456789") != strlen(hw) || !hw[0])
		return -EINVAL;
	if (parent && parent->fmt && parent->fmt->id == VDIMG_FMT_VMDK)
		parent_cid = ((const struct vmdk *)parent->priv)->cid;

	cap = size / VMDK_SECTOR;
	gsec = grain / VMDK_SECTOR;
	if (cap > (1ULL << 44))
		return -EFBIG;
	per = kind == VMDK_SPLIT_SPARSE || kind == VMDK_SPLIT_FLAT ? VMDK_SPLIT_SECTORS : cap;

	nr = mono ? 1 : DIV_ROUND_UP(cap, per);
	if (nr > VMDK_MAX_EXTENTS)
		return -EFBIG;
	vmdk_file_name(f, name, sizeof(name));
	snprintf(base, sizeof(base), "%s", name);
	if (strlen(base) > 5 && !strcmp(base + strlen(base) - 5, ".vmdk"))
		base[strlen(base) - 5] = '\0';

	dlen = VMDK_DESC_MAX;
	desc = calloc(1, dlen);
	if (!desc)
		return -ENOMEM;
	cyl = min_t(u64, cap / (16 * 63), 16383);
	vmdk_hex32(cid, vmdk_new_cid());
	vmdk_hex32(pcid, parent_cid);
	ret = -ENOSPC;
	if (!vmdk_cat(desc, dlen, &pos, "# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\ncreateType=\"%s\"\n",
		      cid, pcid, ct) ||
	    (parent && !vmdk_cat(desc, dlen, &pos, "parentFileNameHint=\"%s\"\n", opts->parent)) ||
	    !vmdk_cat(desc, dlen, &pos, "\n# Extent description\n"))
		goto out;
	for (i = 0; i < nr; i++) {
		u64 n = mono ? cap : min(per, cap - (u64)i * per);
		bool flat = kind == VMDK_MONO_FLAT || kind == VMDK_SPLIT_FLAT;

		if (mono)
			snprintf(xname, sizeof(xname), "%s", name);
		else
			vmdk_extent_name(xname, sizeof(xname), base, kind, i);
		if (!vmdk_cat(desc, dlen, &pos, "RW %llu %s \"%s\"%s\n", (unsigned long long)n,
			      flat ? "FLAT" : kind == VMDK_SESPARSE ? "SESPARSE" :
			      kind == VMDK_COWD ? "VMFSSPARSE" : "SPARSE", xname,
			      flat ? " 0" : ""))
			goto out;
	}
	same_geo = pv && size == parent->size &&
		   vmdk_desc_value(pv->desc_text, pv->desc.text_len, "ddb.geometry.cylinders", geo,
				   sizeof(geo));
	if (!vmdk_cat(desc, dlen, &pos, "\n# The Disk Data Base\n#DDB\n\n") ||
	    !vmdk_cat(desc, dlen, &pos, "ddb.virtualHWVersion = \"%s\"\n", hw) ||
	    (!same_geo && !vmdk_cat(desc, dlen, &pos, "ddb.geometry.cylinders = \"%llu\"\n"
				    "ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n",
				    (unsigned long long)cyl)) ||
	    !vmdk_cat(desc, dlen, &pos, "ddb.adapterType = \"%s\"\n", adapter) ||
	    (pv && !vmdk_ddb_copy(pv, desc, dlen, &pos, same_geo)))
		goto out;
	if (mono) {
		if (pos >= VMDK_CREATE_DESC_SECTORS * VMDK_SECTOR) {
			vdimg_err(&msg, "the descriptor (parent path, the parent's ddb lines) does not fit in %u bytes",
				  VMDK_CREATE_DESC_SECTORS * VMDK_SECTOR);
			goto out;
		}
		if (kind == VMDK_STREAM)
			ret = vmdk_write_stream(f, cap, gsec, desc, opts);
		else
			ret = vmdk_write_sparse(f, cap, gsec, zero_grain, desc);
		goto out;
	}
	/* the extent files beside the descriptor: new files only, removed again on failure */
	dir = vdimg_file_dir(f);
	dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dfd < 0) {
		ret = -errno;
		goto out;
	}
	for (made = 0; made < nr; made++) {
		vmdk_extent_name(xname, sizeof(xname), base, kind, made);
		ret = vmdk_new_extent_file(dfd, xname, kind, min(per, cap - (u64)made * per), gsec,
					   zero_grain, &msg);
		if (ret)
			goto out;
	}
	ret = vdimg_file_write(f, desc, pos, 0);
	if (!ret)
		ret = vdimg_file_truncate(f, pos);
out:
	if (ret && dfd >= 0) {
		while (made--) {
			vmdk_extent_name(xname, sizeof(xname), base, kind, made);
			unlinkat(dfd, xname, 0);
		}
	}
	if (dfd >= 0)
		close(dfd);
	free(dir);
	free(desc);
	return ret;
}

/* ---- describe ---- */

static void vmdk_describe(struct vdimg_image *img,
			  void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct vmdk *vm = VMDK(img);
	struct vmdk_sparse *sp = vm->ext[0].sp;
	char b[VMDK_PATH_MAX + 64];
	u32 i;

	emit(ctx, "create type", vm->desc.create_type[0] ? vm->desc.create_type :
	     (sp && sp->compressed ? "streamOptimized" : "monolithicSparse"));
	vmdk_hex32(b, vm->cid);
	emit(ctx, "cid", b);
	vmdk_hex32(b, vm->desc.parent_cid);
	emit(ctx, "parent cid", b);
	if (vm->desc.parent_hint[0])
		emit(ctx, "parent file name hint", vm->desc.parent_hint);
	if (vm->desc_text && vmdk_desc_value(vm->desc_text, vm->desc_area, "ddb.adapterType", b,
					     sizeof(b)))
		emit(ctx, "adapter type", b);
	if (vm->desc_text && vmdk_desc_value(vm->desc_text, vm->desc_area, "ddb.virtualHWVersion",
					     b, sizeof(b)))
		emit(ctx, "hardware version", b);
	for (i = 0; i < vm->desc.nr_extents; i++) {
		const struct vmdk_desc_extent *x = &vm->desc.extents[i];
		static const char *const acc[] = { "", "RW", "RDONLY", "NOACCESS" };
		char key[32];

		snprintf(key, sizeof(key), "extent %u", i);
		if (x->type == VMDK_EXT_FLAT || x->type == VMDK_EXT_VMFS)
			snprintf(b, sizeof(b), "%s %llu %s \"%s\" %llu", acc[x->access],
				 (unsigned long long)x->sectors, vmdk_extent_type_name(x->type),
				 x->file, (unsigned long long)x->offset);
		else
			snprintf(b, sizeof(b), "%s %llu %s \"%s\"", acc[x->access],
				 (unsigned long long)x->sectors, vmdk_extent_type_name(x->type),
				 x->file);
		emit(ctx, key, b);
	}
	for (i = 0; i < vm->nr_ext; i++) {
		char key[48];

		sp = vm->ext[i].sp;
		if (!sp)
			continue;
		snprintf(key, sizeof(key), "extent %u sparse", i);
		snprintf(b, sizeof(b), "version %u, flags %#x, grain %u, %u GTEs per GT, %u GTs, GD at %llu%s%s%s%s",
			 sp->version, sp->hflags, sp->grain_bytes, sp->num_gtes, sp->nr_gts,
			 (unsigned long long)sp->gd_off, sp->rgd_off ? ", redundant GD" : "",
			 sp->zero_grain ? ", zeroed grains" : "",
			 sp->compressed ? ", deflate" : "",
			 sp->unclean_on_disk ? ", unclean shutdown" : "");
		emit(ctx, key, b);
	}
}

/* ---- parents ---- */

static int vmdk_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct vmdk *v = VMDK(img);

	if (!v->desc.parent_hint[0])
		return -ENOENT;
	memset(ref, 0, sizeof(*ref));
	snprintf(ref->path, sizeof(ref->path), "%s", v->desc.parent_hint);
	return 0;
}

struct vmdk_parent_edit {
	const char *path;
	char pcid[9];
	bool placed;
};

/* set_parent's lines: parentCID and parentFileNameHint dropped, new ones after createType */
static int vmdk_parent_line(void *ctx, const char *l, size_t n, bool crlf, char *t, size_t cap,
			    size_t *len)
{
	struct vmdk_parent_edit *e = ctx;
	const char *nl = crlf ? "\r\n" : "\n";
	int ret;

	if (vmdk_line_is(l, n, "parentCID") || vmdk_line_is(l, n, "parentFileNameHint"))
		return 0;
	ret = vmdk_put(t, cap, len, l, n);
	if (ret || e->placed || !vmdk_line_is(l, n, "createType"))
		return ret;
	e->placed = true;
	if (l[n - 1] != '\n')
		ret = vmdk_put(t, cap, len, "\n", 1);
	ret = ret ?: vmdk_put(t, cap, len, "parentCID=", 10) ?: vmdk_put(t, cap, len, e->pcid, 8) ?:
		vmdk_put(t, cap, len, nl, strlen(nl));
	if (e->path)
		ret = ret ?: vmdk_put(t, cap, len, "parentFileNameHint=\"", 20) ?:
			vmdk_put(t, cap, len, e->path, strlen(e->path)) ?:
			vmdk_put(t, cap, len, "\"", 1) ?: vmdk_put(t, cap, len, nl, strlen(nl));
	return ret;
}

/*
 * Rewrite the descriptor with another parentCID and parentFileNameHint (or none), right after the
 * createType line; every other line is copied byte for byte. Must fit in the reserved sectors.
 */
static int vmdk_set_parent(struct vdimg_image *img, const char *path, struct vdimg_image *parent)
{
	struct vmdk *v = VMDK(img);
	struct vmdk_parent_edit e = {};
	u32 cap = v->desc_file ? VMDK_DESC_MAX : v->desc_area, pc = VMDK_CID_NONE;
	size_t len;
	char *t;
	int ret;

	if (!v->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	if (!v->desc_text) {
		vdimg_err(img, "has no descriptor to record a parent in");
		return -EOPNOTSUPP;
	}
	if (path && !*path)
		path = NULL;
	if (path && strlen(path) >= VMDK_PATH_MAX) {
		vdimg_err(img, "the parent path is longer than %u bytes", VMDK_PATH_MAX - 1);
		return -ENOSPC;
	}
	if (path && parent && parent->fmt == img->fmt)
		pc = ((const struct vmdk *)parent->priv)->cid;
	vmdk_hex32(e.pcid, pc);
	e.path = path;
	t = calloc(1, cap + 1);
	if (!t)
		return -ENOMEM;
	ret = vmdk_desc_edit(v, t, cap, &len, vmdk_parent_line, &e);
	if (!ret && !e.placed)
		ret = -EOPNOTSUPP;	/* no createType line: not a descriptor we understand */
	if (ret == -ENOSPC)
		vdimg_err(img, "no room for the parent path in the %u-byte descriptor", cap);
	if (!ret)
		ret = vmdk_desc_commit(img, t, len);
	if (ret) {
		free(t);
		return ret;
	}
	v->has_parent = path != NULL;
	if (path)
		img->flags |= VDIMG_IMG_HAS_PARENT;
	else
		img->flags &= ~VDIMG_IMG_HAS_PARENT;
	return 0;
}

/* ---- check ---- */

struct vmdk_area {
	u64 start, end;
	u32 gi, ti;			/* the GTE that points at it; ti U32_MAX for a GT, both for a GD */
};

/* append to a growing array */
static int vmdk_area_add(struct vmdk_area **a, u64 *nr, u64 *cap, u64 start, u64 len, u32 gi,
			 u32 ti)
{
	if (*nr == *cap) {
		struct vmdk_area *b = realloc(*a, *cap * 2 * sizeof(**a));

		if (!b)
			return -ENOMEM;
		*a = b;
		*cap *= 2;
	}
	(*a)[(*nr)++] = (struct vmdk_area){ start, start + len, gi, ti };
	return 0;
}

static int vmdk_area_cmp(const void *a, const void *b)
{
	const struct vmdk_area *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Is GTE @e (not 0 or 1) inside the grain area of a file of @fsize bytes? */
static bool vmdk_check_gte(const struct vmdk_sparse *v, u32 e, u64 fsize)
{
	u64 off = (u64)e * VMDK_SECTOR;

	return off >= v->overhead && off + (v->compressed ? 12 : v->grain_bytes) <= fsize;
}

/*
 * Pass 2 of a repair, when pass 1 found no overlapping space (so writing a table cannot hit
 * anything else): GTEs outside the grain area are cleared, each redundant GT is rewritten from its
 * primary one, and a redundant GD entry without a GD entry is cleared. Lock held.
 */
static int vmdk_check_fix(struct vmdk_sparse *v, u64 fsize, __le32 *gt, __le32 *rgt, u64 *fixed)
{
	u32 gi, ti;
	int ret;

	for (gi = 0; gi < v->nr_gts; gi++) {
		u32 r = v->rgd ? v->rgd[gi] : 0;
		bool changed = false, rchanged = false;
		__le32 zero = 0;

		if (!v->gd[gi] && r) {
			/* a table only the redundant GD links (a crash before the GD entry) */
			ret = vdimg_file_write(v->file, &zero, 4, v->rgd_off + (u64)gi * 4);
			if (ret)
				return ret;
			v->rgd[gi] = 0;
			(*fixed)++;
		}
		if (!v->gd[gi])
			continue;
		ret = vdimg_file_read(v->file, gt, v->gt_bytes, (u64)v->gd[gi] * VMDK_SECTOR);
		if (!ret && r)
			ret = vdimg_file_read(v->file, rgt, v->gt_bytes, (u64)r * VMDK_SECTOR);
		if (ret)
			return ret;
		if (r && memcmp(gt, rgt, v->gt_bytes)) {
			rchanged = true;
			(*fixed)++;
		}
		for (ti = 0; ti < v->num_gtes; ti++) {
			u32 e = le32_to_cpu(gt[ti]);

			if (e > VMDK_GTE_ZERO && !vmdk_check_gte(v, e, fsize)) {
				gt[ti] = 0;
				changed = true;
				(*fixed)++;
			}
		}
		if (changed)
			ret = vdimg_file_write(v->file, gt, v->gt_bytes,
					       (u64)v->gd[gi] * VMDK_SECTOR);
		if (!ret && r && (changed || rchanged))
			ret = vdimg_file_write(v->file, gt, v->gt_bytes, (u64)r * VMDK_SECTOR);
		if (ret)
			return ret;
		if ((changed || rchanged) && v->slot_of[gi]) {
			/* the cached copy is stale now */
			memcpy(v->slots[v->slot_of[gi] - 1].gte, gt, v->gt_bytes);
			v->slots[v->slot_of[gi] - 1].dirty = false;
		}
	}
	return 0;
}

/*
 * A redundant GT that differs from its GT as a crash can leave it: the extent says uncleanShutdown
 * and every entry of the copy is one a GT could hold (unallocated, zeroed, or a grain inside the
 * grain area). A flush writes both copies with no sync between them (as qemu and VirtualBox do;
 * no order could keep two separate tables equal across a crash), so either copy may be the newer
 * one; neither difference is acknowledged data, and the primary GT, the one every reader (this
 * code, qemu, VirtualBox) maps through, is the truth. VirtualBox refuses such an image and
 * VMware's "vmware-vdiskmanager -R" rewrites the copy: a warning, fixed by a repair.
 */
static bool vmdk_stale_copy(const struct vmdk_sparse *v, const __le32 *gt, const __le32 *rgt,
			    u64 fsize)
{
	u32 ti;

	if (!v->unclean_on_disk)
		return false;
	for (ti = 0; ti < v->num_gtes; ti++) {
		u32 r = le32_to_cpu(rgt[ti]);

		if (rgt[ti] != gt[ti] && r > VMDK_GTE_ZERO && !vmdk_check_gte(v, r, fsize))
			return false;
	}
	return true;
}

/*
 * The GD against the redundant GD and each GT against its copy; every GTE inside the grain area;
 * no two grains or tables overlapping; unreferenced space after the grain area start (leaks, in
 * grains). A redundant GT a crash left out of step with its GT is a warning (vmdk_stale_copy()),
 * and so is a table only the redundant GD links in an extent with uncleanShutdown set
 * (vmdk_flush_locked() writes the redundant GD first); any other difference is an error. Repair
 * (only when nothing overlaps): GTEs that point outside the file are cleared, redundant GTs are
 * rewritten from the primary ones, redundant GD entries without a GD entry are cleared, and
 * unreferenced space at the end of the file is cut off. What it cannot fix (overlaps, a GT without
 * a copy, a table only the redundant GD links in a cleanly closed extent) stays an error.
 */
static int vmdk_check_sparse(struct vmdk_sparse *v, unsigned int flags,
			     struct vdimg_check_result *res, u32 part, u32 parts)
{
	struct vdimg_image *img = v->img;
	bool repair = (flags & VDIMG_CHECK_REPAIR) && v->writable;
	u64 fsize = vdimg_file_size(v->file), last = v->overhead, nr = 0, cap, i, fixable = 0;
	u64 unfixable = 0, fixed = 0, stale = 0;
	__le32 *gt = NULL, *rgt = NULL;
	struct vmdk_area *a = NULL;
	u32 gi, ti;
	int ret = 0;

	cap = (u64)v->nr_gts * 2 + 16;
	a = calloc(cap, sizeof(*a));
	gt = malloc(v->gt_bytes);
	rgt = malloc(v->gt_bytes);
	if (!a || !gt || !rgt) {
		ret = -ENOMEM;
		goto out;
	}
	vdimg_mutex_lock(&v->lock);
	/*
	 * the directories take space too: after a grow moved them (vmdk_move_gd()) they lie among
	 * the grains, often last in the file, which is neither a leak nor to be cut off; the space
	 * of the old ones is before the grain area (not counted) or a leak like any other
	 */
	ret = vmdk_area_add(&a, &nr, &cap, v->gd_off, (u64)v->nr_gts * 4, U32_MAX, U32_MAX);
	if (!ret && v->rgd_off)
		ret = vmdk_area_add(&a, &nr, &cap, v->rgd_off, (u64)v->nr_gts * 4, U32_MAX,
				    U32_MAX);
	for (gi = 0; gi < v->nr_gts && !ret; gi++) {
		u32 r = v->rgd ? v->rgd[gi] : 0;

		vdimg_tool_progress("check", part, parts, gi, v->nr_gts);

		if (!v->gd[gi]) {
			if (r && v->unclean_on_disk) {
				/* the redundant GD is written (and synced) first */
				vdimg_info(img, "GT %u: only the redundant GD links a table, as an unclean shutdown leaves it (no data lost; a repair unlinks it)",
					   gi);
				stale++;
			} else if (r) {
				vdimg_info(img, "GT %u: only the redundant GD links a table", gi);
				unfixable++;
			}
			continue;
		}
		ret = vdimg_file_read(v->file, gt, v->gt_bytes, (u64)v->gd[gi] * VMDK_SECTOR);
		if (ret)
			break;
		ret = vmdk_area_add(&a, &nr, &cap, (u64)v->gd[gi] * VMDK_SECTOR, v->gt_bytes, gi,
				    U32_MAX);
		if (ret)
			break;
		if (v->rgd && !r) {
			vdimg_info(img, "GT %u has no redundant copy", gi);
			unfixable++;
		}
		if (r) {
			ret = vmdk_area_add(&a, &nr, &cap, (u64)r * VMDK_SECTOR, v->gt_bytes, gi,
					    U32_MAX);
			if (!ret)
				ret = vdimg_file_read(v->file, rgt, v->gt_bytes, (u64)r * VMDK_SECTOR);
			if (ret)
				break;
			if (!memcmp(gt, rgt, v->gt_bytes)) {
				/* in step */
			} else if (vmdk_stale_copy(v, gt, rgt, fsize)) {
				vdimg_info(img, "GT %u: its redundant copy was left out of step by an unclean shutdown (no data lost; a repair rewrites it)",
					   gi);
				stale++;
			} else {
				vdimg_info(img, "GT %u differs from its redundant copy", gi);
				fixable++;
			}
		}
		for (ti = 0; ti < v->num_gtes; ti++) {
			u32 e = le32_to_cpu(gt[ti]);
			u64 off = (u64)e * VMDK_SECTOR;

			if (e <= VMDK_GTE_ZERO)
				continue;
			if (!vmdk_check_gte(v, e, fsize)) {
				vdimg_info(img, "GT %u entry %u points at sector %u, outside the grain area",
					   gi, ti, e);
				fixable++;
				continue;
			}
			if (v->compressed)
				continue;
			ret = vmdk_area_add(&a, &nr, &cap, off, v->grain_bytes, gi, ti);
			if (ret)
				break;
		}
	}
	if (!ret && !v->compressed) {
		qsort(a, nr, sizeof(*a), vmdk_area_cmp);
		for (i = 0; i < nr; i++) {
			if (i && a[i].start < a[i - 1].end) {
				if (a[i].gi == U32_MAX)
					vdimg_info(img, "space at %llu is used twice (a grain directory)",
						   (unsigned long long)a[i].start);
				else
					vdimg_info(img, "space at %llu is used twice (GT %u)",
						   (unsigned long long)a[i].start, a[i].gi);
				unfixable++;
			}
			if (a[i].start >= v->overhead && a[i].start > last)
				res->leaks += (a[i].start - last) / v->grain_bytes;
			last = max(last, a[i].end);
		}
	}
	/* a table write could land on other data while anything overlaps */
	if (!ret && repair && (fixable || stale) && !unfixable)
		ret = vmdk_check_fix(v, fsize, gt, rgt, &fixed);
	/* the space of a block device past the extent's last grain is the device's, not a leak */
	if (!ret && !v->compressed && fsize > last + VMDK_SECTOR &&
	    !vdimg_file_fixed_size(v->file)) {
		u64 n = DIV_ROUND_UP(fsize - last, v->grain_bytes);

		vdimg_info(img, "%llu bytes after the last grain", (unsigned long long)(fsize - last));
		res->leaks += n;
		if (repair && !unfixable) {
			ret = vdimg_file_truncate(v->file, ALIGN(last, (u64)VMDK_SECTOR));
			if (!ret) {
				fixed += n;
				v->next_alloc = ALIGN(last, (u64)VMDK_SECTOR);
				v->file_end = min(v->file_end, v->next_alloc);
			}
		}
	}
	if (!ret && fixed)
		ret = vdimg_file_sync(v->file);
	vdimg_mutex_unlock(&v->lock);
	res->errors += fixable + unfixable;
	res->warnings += stale;
	res->fixed += fixed;
out:
	free(a);
	free(gt);
	free(rgt);
	return ret;
}

static int vmdk_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct vmdk *vm = VMDK(img);
	u32 i;
	int ret;

	ret = vmdk_flush(img);
	for (i = 0; !ret && i < vm->nr_ext; i++)
		if (vm->ext[i].sp)	/* COWD: report only, repair knows KDMV headers */
			ret = vmdk_check_sparse(vm->ext[i].sp, vm->ext[i].sp->cowd ?
						flags & ~VDIMG_CHECK_REPAIR : flags, res, i,
						vm->nr_ext);
	return ret;
}

/* ---- extent files of a descriptor ---- */

static int vmdk_extent_refs(struct vdimg_file *f, char ***paths, bool **ro, u32 *n)
{
	const struct vdimg_image msg = { .name = "vmdk descriptor" };
	u64 fsize = vdimg_file_size(f);
	struct vmdk_desc d = {};
	char *text;
	u32 i, k = 0;
	int ret;

	*paths = NULL;
	*ro = NULL;
	*n = 0;
	if (fsize < 1 || fsize > VMDK_DESC_MAX)
		return 0;	/* not a descriptor file (open says what is wrong) */
	text = calloc(1, fsize + 1);
	if (!text)
		return -ENOMEM;
	ret = vdimg_file_read(f, text, fsize, 0);
	if (ret || text[0] != '#') {
		free(text);
		return ret;
	}
	ret = vmdk_desc_parse((struct vdimg_image *)&msg, text, fsize, &d);
	free(text);
	if (ret)
		return 0;	/* open reports the bad descriptor */
	*paths = calloc(d.nr_extents + 1, sizeof(**paths));
	*ro = calloc(d.nr_extents + 1, sizeof(**ro));
	if (!*paths || !*ro) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < d.nr_extents; i++) {
		const struct vmdk_desc_extent *x = &d.extents[i];

		if (x->type == VMDK_EXT_ZERO || !x->file[0])
			continue;
		(*paths)[k] = strdup(x->file);
		if (!(*paths)[k]) {
			ret = -ENOMEM;
			goto out;
		}
		(*ro)[k++] = x->access != VMDK_ACCESS_RW;
	}
	*n = k;
out:
	vmdk_desc_free(&d);
	if (ret) {
		for (i = 0; *paths && i < k; i++)
			free((*paths)[i]);
		free(*paths);
		free(*ro);
		*paths = NULL;
		*ro = NULL;
	}
	return ret;
}

/* ---- resize ---- */

/*
 * The name prefix and number of the extent files that follow @name, the last extent file of a
 * twoGbMaxExtent* image: "disk" and 3 after "disk-s002.vmdk" ("-f002" for flat), as VMware and
 * qemu name them. False when @name is not named so (or lies in another directory).
 */
static bool vmdk_split_name(const char *name, char c, char *prefix, size_t len, u32 *next)
{
	size_t n = strlen(name), d = 0;
	unsigned long k;

	if (strchr(name, '/') || n < 5 || strcmp(name + n - 5, ".vmdk"))
		return false;
	n -= 5;
	while (d < n && d < 6 && name[n - 1 - d] >= '0' && name[n - 1 - d] <= '9')
		d++;
	if (d < 3 || n < d + 2 || name[n - d - 1] != c || name[n - d - 2] != '-' ||
	    n - d - 2 >= len)
		return false;
	k = strtoul(name + n - d, NULL, 10);
	if (!k || k >= VMDK_MAX_EXTENTS)
		return false;
	memcpy(prefix, name, n - d - 2);
	prefix[n - d - 2] = 0;
	*next = k + 1;
	return true;
}

/* @text (@len bytes) as the file @name in @dfd, atomically: a new file synced, then renamed over */
static int vmdk_replace_file(int dfd, const char *name, struct vdimg_file *old, const char *text,
			     size_t len, const struct vdimg_image *msg)
{
	char tmp[VMDK_PATH_MAX + 32];
	struct vdimg_file *tf;
	struct stat st;
	int tfd, ret;

	snprintf(tmp, sizeof(tmp), ".%s.resize-%d", name, (int)getpid());
	tfd = openat(dfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (tfd < 0) {
		ret = -errno;
		vdimg_err(msg, "cannot create %s beside the descriptor: %s", tmp, strerror(-ret));
		return ret;
	}
	/* the descriptor keeps its mode, and its owner where allowed (root) */
	ret = 0;
	if (fstat(old->fd, &st) || fchmod(tfd, st.st_mode & 07777) ||
	    (fchown(tfd, st.st_uid, st.st_gid) && errno != EPERM))
		ret = -errno;
	tf = ret ? NULL : vdimg_file_from_fd(tfd);
	if (!ret && !tf)
		ret = -ENOMEM;
	if (!ret)
		ret = vdimg_file_write(tf, text, len, 0);
	if (!ret)
		ret = vdimg_file_sync(tf);
	vdimg_file_free(tf);
	close(tfd);
	if (!ret && renameat(dfd, tmp, dfd, name))
		ret = -errno;
	if (ret) {
		unlinkat(dfd, tmp, 0);
		return ret;
	}
	/* the new name is durable with the directory */
	return fsync(dfd) ? -errno : 0;
}

/*
 * Grow a twoGbMaxExtentSparse or twoGbMaxExtentFlat image to @size bytes, past what its last extent
 * file holds (2 GiB): that extent grows to 2 GiB as online (vmdk_grow_last(), its descriptor
 * line left alone: vdimg accepts a last sparse extent larger than its line, and a flat file larger
 * than its extent), new extent files follow (named and laid out as create makes them: the same
 * grain size and zeroed-grain flag as the last one, flat ones as sparse files), each synced, and
 * only then the descriptor names them, written to a new file renamed over the old one. A crash
 * before the rename leaves the old image (its last extent possibly grown, unnamed by its line)
 * and stray extent files that a retry refuses to overwrite; a failure removes them. The image stays
 * open as it was, its new extents not part of it (img->size ends with the old last file; reopen
 * it to use them), and img->file is now the replaced descriptor: nothing writes it again (the CID
 * was renewed first, in place).
 */
static int vmdk_resize_split(struct vdimg_image *img, u64 size)
{
	struct vmdk *v = VMDK(img);
	struct vmdk_ext *last = &v->ext[v->nr_ext - 1];
	const struct vmdk_desc_extent *dx = &v->desc.extents[v->nr_ext - 1];
	bool sparse = last->type == VMDK_EXT_SPARSE;
	enum vmdk_create_kind kind = sparse ? VMDK_SPLIT_SPARSE : VMDK_SPLIT_FLAT;
	u64 end = last->start + VMDK_SPLIT_BYTES, gsec = 128, pos;
	char prefix[VMDK_PATH_MAX], name[256], xname[VMDK_PATH_MAX + 16], *more = NULL, *t = NULL;
	char *dir = NULL;
	u32 nr, first, made = 0;
	bool zero_grain = false;
	size_t mlen = 0, len = 0;
	int dfd = -1, ret;

	if ((sparse && (!last->sp || last->sp->cowd || dx->type != VMDK_EXT_SPARSE)) ||
	    (!sparse && dx->type != VMDK_EXT_FLAT) || v->desc.nr_extents != v->nr_ext) {
		vdimg_err(img, "cannot grow a %s image whose last extent is %s",
			  v->desc.create_type, vmdk_extent_type_name(dx->type));
		return -EOPNOTSUPP;
	}
	if (last->len > VMDK_SPLIT_BYTES) {
		vdimg_err(img, "the last extent file holds more than 2 GiB: not a %s image as VMware makes them",
			  v->desc.create_type);
		return -EOPNOTSUPP;
	}
	if (sparse) {
		gsec = last->sp->grain_bytes / VMDK_SECTOR;
		zero_grain = last->sp->zero_grain;
	}
	nr = DIV_ROUND_UP(size - end, VMDK_SPLIT_BYTES);
	if (v->nr_ext + nr > VMDK_MAX_EXTENTS) {
		vdimg_err(img, "cannot grow to %llu bytes: more than %u extent files",
			  (unsigned long long)size, VMDK_MAX_EXTENTS);
		return -EFBIG;
	}
	vmdk_file_name(img->file, name, sizeof(name));
	if (!vmdk_split_name(dx->file, sparse ? 's' : 'f', prefix, sizeof(prefix), &first)) {
		/* named otherwise: after the descriptor, numbered on */
		snprintf(prefix, sizeof(prefix), "%s", name);
		if (strlen(prefix) > 5 && !strcmp(prefix + strlen(prefix) - 5, ".vmdk"))
			prefix[strlen(prefix) - 5] = 0;
		first = v->nr_ext + 1;
	}
	dir = vdimg_file_dir(img->file);
	dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dfd < 0) {
		ret = -errno;
		vdimg_err(img, "cannot open the descriptor's directory: %s", strerror(-ret));
		goto out;
	}
	more = calloc(nr, VMDK_PATH_MAX + 64);
	if (!more) {
		ret = -ENOMEM;
		goto out;
	}
	/* the CID changes before anything else does, in the old descriptor as always */
	ret = vmdk_renew_cid(v, false);
	if (!ret && last->len < VMDK_SPLIT_BYTES)
		ret = vmdk_grow_last(img, end, false);
	for (pos = end; !ret && made < nr; made++, pos += VMDK_SPLIT_BYTES) {
		u64 n = min_t(u64, size - pos, VMDK_SPLIT_BYTES) / VMDK_SECTOR;

		vmdk_extent_name(xname, sizeof(xname), prefix, kind, first - 1 + made);
		ret = vmdk_new_extent_file(dfd, xname, kind, n, gsec, zero_grain, img);
		if (ret == -EEXIST)
			vdimg_err(img, "the descriptor does not name %s: left by an interrupted resize? (remove it if so)",
				  xname);
		if (ret)
			break;
		mlen += snprintf(more + mlen, VMDK_PATH_MAX + 64, "RW %llu %s \"%s\"%s\n",
				 (unsigned long long)n, sparse ? "SPARSE" : "FLAT", xname,
				 sparse ? "" : " 0");
	}
	if (ret)
		goto out;
	ret = vmdk_desc_resized(v, size, VMDK_SPLIT_SECTORS, more, &t, &len);
	if (ret == -ENOSPC)
		vdimg_err(img, "the descriptor would pass %u bytes", (unsigned int)VMDK_DESC_MAX);
	if (!ret) {
		struct vmdk_desc d = {};

		/* what the next open reads: every extent, the new size */
		ret = vmdk_desc_parse(img, t, len, &d);
		if (!ret && d.nr_extents != v->nr_ext + nr)
			ret = vdimg_corrupt(img, "the new descriptor names %u extents, not %u",
					    d.nr_extents, v->nr_ext + nr);
		vmdk_desc_free(&d);
	}
	if (!ret)
		ret = vmdk_replace_file(dfd, name, img->file, t, len, img);
	if (!ret)
		made = 0;	/* named now */
out:
	while (made--) {
		vmdk_extent_name(xname, sizeof(xname), prefix, kind, first - 1 + made);
		unlinkat(dfd, xname, 0);
	}
	if (dfd >= 0)
		close(dfd);
	free(dir);
	free(more);
	vdimg_free(t);
	return ret;
}

/*
 * Flat images (a descriptor file whose last extent is a writable FLAT one): that extent's file
 * grows (a hole, zeros) before the descriptor records the new sector count and geometry, and a
 * shrunk descriptor is written before the file is cut; the descriptor is rewritten in place (every
 * other line kept byte for byte, as set_parent does). A sparse last extent grows through the
 * backend's online grow (its grain directory moves when it has no room in place); shrinking it is
 * refused. twoGbMaxExtent* images grow past their last file's 2 GiB with new extent files
 * (vmdk_resize_split()).
 */
static int vmdk_resize(struct vdimg_image *img, u64 size, unsigned int flags)
{
	struct vmdk *v = VMDK(img);
	struct vmdk_ext *last;
	char *t = NULL;
	u64 new_len, old_end;
	size_t len = 0;
	int ret = 0;

	if (!v->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	last = v->nr_ext ? &v->ext[v->nr_ext - 1] : NULL;
	if (last && v->desc_file && last->access == VMDK_ACCESS_RW && size > img->size &&
	    size - last->start > VMDK_SPLIT_BYTES &&
	    (!strcmp(v->desc.create_type, "twoGbMaxExtentSparse") ||
	     !strcmp(v->desc.create_type, "twoGbMaxExtentFlat")))
		return vmdk_resize_split(img, size);
	/* a sparse extent grows as online (backends/vmdk/vmdk.c) */
	if (last && last->type == VMDK_EXT_SPARSE && size > img->size)
		return img->fmt->grow(img, size);
	if (!v->desc_file || !v->desc_text || !last || last->type != VMDK_EXT_FLAT ||
	    last->access != VMDK_ACCESS_RW) {
		vdimg_err(img, "only flat VMDK images can be shrunk");
		return -EOPNOTSUPP;
	}
	if (size <= last->start) {
		vdimg_err(img, "the new size would drop whole extents");
		return -EOPNOTSUPP;
	}
	new_len = size - last->start;
	ret = vmdk_desc_resized(v, size, new_len / 512, NULL, &t, &len);
	if (ret)
		return ret;
	old_end = last->file_off + last->len;
	if (size > img->size) {
		if (vdimg_file_size(last->file) < last->file_off + new_len)
			ret = vdimg_file_truncate(last->file, last->file_off + new_len);
		if (!ret)
			ret = vdimg_file_sync(last->file);
	}
	if (!ret)
		ret = vmdk_desc_commit(img, t, len);
	if (ret)
		goto out;
	t = NULL;
	if (size < img->size && vdimg_file_size(last->file) == old_end)
		ret = vdimg_file_truncate(last->file, last->file_off + new_len);
	last->len = new_len;
	img->size = size;
out:
	vdimg_free(t);
	return ret;
}

/* ---- compact ---- */

/* forget every cached GT (compact reads and writes the tables itself); lock held */
static void vmdk_drop_cache(struct vmdk_sparse *v)
{
	u32 i;

	for (i = 0; i < v->nr_slots; i++) {
		if (v->slots[i].gd_index != U32_MAX)
			v->slot_of[v->slots[i].gd_index] = 0;
		v->slots[i].gd_index = U32_MAX;
		v->slots[i].dirty = false;
	}
}

/* write GT @gi (both copies) and make it durable */
static int vmdk_put_gt(struct vmdk_sparse *v, u32 gi, const __le32 *gt)
{
	int ret = vdimg_file_write(v->file, gt, v->gt_bytes, (u64)v->gd[gi] * VMDK_SECTOR);

	if (!ret && v->rgd && v->rgd[gi])
		ret = vdimg_file_write(v->file, gt, v->gt_bytes, (u64)v->rgd[gi] * VMDK_SECTOR);
	if (!ret)
		ret = vdimg_file_sync(v->file);
	return ret;
}

/*
 * Compact one hosted sparse extent: grains that hold only zeros are dropped (GTE 0, or 1 when a
 * parent's data would show through and the extent has zeroed grains), then, when every grain lies
 * on the grid from the grain area's start (as qemu and vdimg allocate them) and no table lies in
 * the grain area, the last grains move into the holes and the file is cut after the last one.
 * A grain is copied and synced before its entry points at it: a crash leaves a leak at worst.
 */
static int vmdk_compact_sparse(struct vmdk_sparse *v, bool has_parent, u32 part, u32 parts)
{
	u64 gb = v->grain_bytes, area = v->overhead, nslots, lo, hi, g, *owner = NULL;
	u32 zero_val = has_parent ? (v->zero_grain ? VMDK_GTE_ZERO : U32_MAX) : VMDK_GTE_UNALLOC;
	__le32 *gt = malloc(v->gt_bytes);
	u8 *buf = malloc(gb);
	bool grid = area % VMDK_SECTOR == 0;
	u32 gi, ti;
	int ret = 0;

	if (!gt || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	vdimg_mutex_lock(&v->lock);
	ret = vmdk_flush_locked(v);
	vmdk_drop_cache(v);
	vdimg_mutex_unlock(&v->lock);
	/* directories a grow moved among the grains stay where they are: no moving, no cut */
	if (v->gd_off >= area || (v->rgd_off && v->rgd_off >= area))
		grid = false;
	nslots = v->file_end > area ? DIV_ROUND_UP(v->file_end - area, gb) : 0;
	owner = calloc(nslots + 1, sizeof(*owner));
	if (!owner)
		ret = -ENOMEM;
	for (gi = 0; gi < v->nr_gts && !ret; gi++) {
		bool changed = false;

		/* each extent: reading every grain (zeros), then moving grains (the 2nd half) */
		vdimg_tool_progress("compact", 2 * part, 2 * parts, gi, v->nr_gts);
		if (!v->gd[gi])
			continue;
		if ((u64)v->gd[gi] * VMDK_SECTOR >= area ||
		    (v->rgd && (u64)v->rgd[gi] * VMDK_SECTOR >= area))
			grid = false;
		ret = vdimg_file_read(v->file, gt, v->gt_bytes, (u64)v->gd[gi] * VMDK_SECTOR);
		for (ti = 0; ti < v->num_gtes && !ret; ti++) {
			u64 e = le32_to_cpu(gt[ti]), off = e * VMDK_SECTOR;

			if (e <= VMDK_GTE_ZERO)
				continue;
			if (!vmdk_grain_ok(v, e)) {
				ret = vdimg_corrupt(v->img, "GT %u entry %u points outside the file (check --repair first)",
						    gi, ti);
				break;
			}
			ret = vdimg_file_read(v->file, buf, min_t(u64, gb, v->file_end - off), off);
			if (!ret && zero_val != U32_MAX && !buf[0] &&
			    !memcmp(buf, buf + 1, min_t(u64, gb, v->file_end - off) - 1)) {
				gt[ti] = cpu_to_le32(zero_val);
				changed = true;
				continue;
			}
			if (off < area || (off - area) % gb || owner[(off - area) / gb])
				grid = false;
			else
				owner[(off - area) / gb] = ((u64)gi << 32 | ti) + 1;
		}
		if (!ret && changed)
			ret = vmdk_put_gt(v, gi, gt);
	}
	if (ret || !grid || !nslots)
		goto out;
	/* the last grains into the first holes */
	for (lo = 0, hi = nslots; !ret; lo++) {
		while (hi > 0 && !owner[hi - 1])
			hi--;
		while (lo < hi && owner[lo])
			lo++;
		if (lo + 1 >= hi)
			break;
		vdimg_tool_progress("compact", 2 * part + 1, 2 * parts, lo + (nslots - hi), nslots);
		g = owner[hi - 1] - 1;
		gi = g >> 32;
		ti = (u32)g;
		ret = vdimg_file_read(v->file, buf, gb, area + (hi - 1) * gb);
		if (!ret)
			ret = vdimg_file_write(v->file, buf, gb, area + lo * gb);
		if (!ret)
			ret = vdimg_file_sync(v->file);
		if (!ret)
			ret = vdimg_file_read(v->file, gt, v->gt_bytes, (u64)v->gd[gi] * VMDK_SECTOR);
		if (ret)
			break;
		gt[ti] = cpu_to_le32((area + lo * gb) / VMDK_SECTOR);
		ret = vmdk_put_gt(v, gi, gt);
		owner[lo] = owner[hi - 1];
		owner[hi - 1] = 0;
	}
	while (!ret && hi > 0 && !owner[hi - 1])
		hi--;
	if (!ret && area + hi * gb < v->file_end) {
		ret = vdimg_file_truncate(v->file, area + hi * gb);
		if (!ret) {
			v->file_end = area + hi * gb;
			v->next_alloc = v->file_end;
		}
	}
out:
	free(owner);
	free(gt);
	free(buf);
	return ret;
}

static int vmdk_compact(struct vdimg_image *img)
{
	struct vmdk *vm = VMDK(img);
	u32 i;
	int ret = 0;

	if (!vm->writable || (img->flags & VDIMG_IMG_READ_ONLY))
		return -EROFS;
	for (i = 0; i < vm->nr_ext && !ret; i++) {
		struct vmdk_sparse *sp = vm->ext[i].sp;

		if (!sp || sp->compressed || sp->cowd || !sp->writable)
			continue;
		ret = vmdk_compact_sparse(sp, vm->has_parent, i, vm->nr_ext);
	}
	return ret;
}

const struct vdimg_tool_ops vdimg_vmdk_tool_ops = {
	.extent_refs = vmdk_extent_refs,
	.id = VDIMG_FMT_VMDK,
	.create = vmdk_create,
	.check = vmdk_check,
	.parent_ref = vmdk_parent_ref,
	.set_parent = vmdk_set_parent,
	.describe = vmdk_describe,
	.resize = vmdk_resize,
	.compact = vmdk_compact,
};
