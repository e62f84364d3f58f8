// SPDX-License-Identifier: GPL-2.0
/*
 * The format registry: which backends are built in, and how an image file is identified. Probing
 * looks only at magic numbers, in the fixed order of vdimg_signatures[] below (documented in
 * Documentation/admin-guide/vdimg.rst), and knows the signatures of formats vdimg does not support
 * so that they are refused by name instead of being taken for raw. Raw is never the result of a
 * probe: the caller decides whether an unrecognised file may be used as raw. Shared by the module
 * and the userspace library; no blk-mq and no libc here.
 */
#include <vdimg/backend.h>
#include "cue.h"

/* Names of every format id, built in or not. */
static const char *const vdimg_format_names[VDIMG_FMT_COUNT] = {
	[VDIMG_FMT_AUTO] = "auto",
	[VDIMG_FMT_RAW] = "raw",
	[VDIMG_FMT_VHD] = "vhd",
	[VDIMG_FMT_VHDX] = "vhdx",
	[VDIMG_FMT_VDI] = "vdi",
	[VDIMG_FMT_VMDK] = "vmdk",
	[VDIMG_FMT_QCOW2] = "qcow2",
	[VDIMG_FMT_QCOW] = "qcow",
	[VDIMG_FMT_QED] = "qed",
	[VDIMG_FMT_PARALLELS] = "parallels",
	[VDIMG_FMT_DMG] = "dmg",
	[VDIMG_FMT_ISO] = "iso",
	[VDIMG_FMT_CUE] = "cue",
};

/* The backends built into this module or library. */
static const struct vdimg_format *const vdimg_formats[] = {
	&vdimg_raw_format,
	&vdimg_iso_format,
	&vdimg_vdi_format,
	&vdimg_vhd_format,
	&vdimg_qcow2_format,
	&vdimg_qed_format,
	&vdimg_qcow_format,
	&vdimg_vhdx_format,
	&vdimg_vmdk_format,
	&vdimg_cue_format,
	&vdimg_dmg_format,
	&vdimg_parallels_format,
};

/* What a probe sees: the head of the file, its last sector and its size. */
struct vdimg_probe_buf {
	const u8 *head;
	size_t head_len;
	const u8 *tail;
	u64 size;
};

static bool vdimg_magic_at(const struct vdimg_probe_buf *p, size_t off, const void *magic,
			   size_t len)
{
	return off + len <= p->head_len && !memcmp(p->head + off, magic, len);
}

static bool vdimg_head_contains(const struct vdimg_probe_buf *p, size_t limit, const char *s)
{
	size_t n = strlen(s), i;

	limit = min(limit, p->head_len);
	for (i = 0; i + n <= limit; i++)
		if (!memcmp(p->head + i, s, n))
			return true;
	return false;
}

static bool sig_qcow_version(const struct vdimg_probe_buf *p, u32 want_min, u32 want_max)
{
	__be32 v;

	if (!vdimg_magic_at(p, 0, "QFI\xfb", 4) || p->head_len < 8)
		return false;
	memcpy(&v, p->head + 4, 4);
	return be32_to_cpu(v) >= want_min && be32_to_cpu(v) <= want_max;
}

static bool sig_qcow2(const struct vdimg_probe_buf *p)
{
	return sig_qcow_version(p, 2, 3);
}

static bool sig_qcow(const struct vdimg_probe_buf *p)
{
	return sig_qcow_version(p, 1, 1);
}

static bool sig_qed(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0, "QED\0", 4);
}

static bool sig_vdi(const struct vdimg_probe_buf *p)
{
	/* u32 0xbeda107f (little-endian) right after the 64-byte pre-header text */
	return vdimg_magic_at(p, 0x40, "\x7f\x10\xda\xbe", 4);
}

static bool sig_vhdx(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0, "vhdxfile", 8);
}

static bool sig_vmdk(const struct vdimg_probe_buf *p)
{
	if (vdimg_magic_at(p, 0, "KDMV", 4) || vdimg_magic_at(p, 0, "COWD", 4))
		return true;
	/* a text descriptor file */
	return vdimg_magic_at(p, 0, "# Disk DescriptorFile", 21);
}

static bool sig_parallels(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0, "WithoutFreeSpace", 16) ||
	       vdimg_magic_at(p, 0, "WithouFreSpacExt", 16);
}

static bool sig_vhd(const struct vdimg_probe_buf *p)
{
	/* dynamic images start with a footer copy; fixed ones only have the footer at the end */
	return vdimg_magic_at(p, 0, "conectix", 8) ||
	       (p->size >= 512 && !memcmp(p->tail, "conectix", 8)) ||
	       (p->size >= 511 && !memcmp(p->tail + 1, "conectix", 8));
}

static bool sig_dmg(const struct vdimg_probe_buf *p)
{
	return p->size >= 512 && !memcmp(p->tail, "koly", 4);
}

static bool sig_iso(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0x8001, "CD001", 5);
}

static bool sig_cue(const struct vdimg_probe_buf *p)
{
	return cue_probe_text(p->head, p->head_len, p->size);
}

static bool sig_encrypted_dmg(const struct vdimg_probe_buf *p)
{
	/* FileVault-style encrypted disk images: v2 header at the start, v1 trailer at the end */
	return vdimg_magic_at(p, 0, "encrcdsa", 8) ||
	       (p->size >= 512 && !memcmp(p->tail + 512 - 8, "cdsaencr", 8));
}

static bool sig_bochs(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0, "Bochs Virtual HD Image", 22);
}

static bool sig_cloop(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0, "#!/bin/sh", 9) &&
	       (vdimg_head_contains(p, 256, "#V2.0 Format") ||
		vdimg_head_contains(p, 256, "#V3.0 Format") ||
		vdimg_head_contains(p, 256, "cloop"));
}

static bool sig_luks(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0, "LUKS\xba\xbe", 6) || vdimg_magic_at(p, 0, "SKUL\xba\xbe", 6);
}

static bool sig_asif(const struct vdimg_probe_buf *p)
{
	return vdimg_magic_at(p, 0, "shdw", 4);
}

static bool sig_sparsebundle(const struct vdimg_probe_buf *p)
{
	/* the Info.plist of a sparse bundle, opened instead of its directory */
	return vdimg_magic_at(p, 0, "<?xml", 5) &&
	       vdimg_head_contains(p, 4096, "com.apple.diskimage.sparsebundle");
}

struct vdimg_signature {
	const char *name;		/* for "<name> images are not supported" */
	u32 id;				/* VDIMG_FMT_*, or 0 for a format vdimg does not know */
	bool (*match)(const struct vdimg_probe_buf *p);
};

/*
 * The probe order. Formats with a magic number at offset 0 come first; VHD before DMG because a
 * dynamic VHD is recognised at its head; signatures found only at the end of the file (fixed VHD,
 * DMG) after every head signature; ISO last because its descriptor sits at 32 KiB where a
 * hybrid image may hold another format's data.
 */
static const struct vdimg_signature vdimg_signatures[] = {
	{ "qcow2", VDIMG_FMT_QCOW2, sig_qcow2 },
	{ "qcow", VDIMG_FMT_QCOW, sig_qcow },
	{ "qed", VDIMG_FMT_QED, sig_qed },
	{ "vdi", VDIMG_FMT_VDI, sig_vdi },
	{ "vhdx", VDIMG_FMT_VHDX, sig_vhdx },
	{ "vmdk", VDIMG_FMT_VMDK, sig_vmdk },
	{ "parallels", VDIMG_FMT_PARALLELS, sig_parallels },
	{ "bochs", 0, sig_bochs },
	{ "cloop", 0, sig_cloop },
	{ "LUKS", 0, sig_luks },
	{ "Apple ASIF", 0, sig_asif },
	{ "Apple sparsebundle", 0, sig_sparsebundle },
	{ "encrypted DMG (encrcdsa/cdsaencr)", 0, sig_encrypted_dmg },
	{ "cue", VDIMG_FMT_CUE, sig_cue },
	{ "vhd", VDIMG_FMT_VHD, sig_vhd },
	{ "dmg", VDIMG_FMT_DMG, sig_dmg },
	{ "iso", VDIMG_FMT_ISO, sig_iso },
};

const struct vdimg_format *vdimg_format_by_id(u32 id)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(vdimg_formats); i++)
		if (vdimg_formats[i]->id == id)
			return vdimg_formats[i];
	return NULL;
}

const struct vdimg_format *vdimg_format_by_name(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(vdimg_formats); i++)
		if (!strcmp(vdimg_formats[i]->name, name))
			return vdimg_formats[i];
	return NULL;
}

const char *vdimg_format_name(u32 id)
{
	return id < VDIMG_FMT_COUNT ? vdimg_format_names[id] : NULL;
}

/* qemu's driver names where they differ from ours (qcow2 backing format extensions use them) */
static const char *const vdimg_qemu_names[VDIMG_FMT_COUNT] = {
	[VDIMG_FMT_VHD] = "vpc",
	[VDIMG_FMT_ISO] = "raw",
};

const char *vdimg_format_qemu_name(u32 id)
{
	if (id >= VDIMG_FMT_COUNT)
		return NULL;
	return vdimg_qemu_names[id] ?: vdimg_format_names[id];
}

u32 vdimg_format_by_qemu_name(const char *name)
{
	u32 id;

	for (id = 1; id < VDIMG_FMT_COUNT; id++)
		if (vdimg_format_names[id] && !strcmp(name, vdimg_format_qemu_name(id)))
			return id;
	/* our own spelling, as vdimg before this wrote it ("vhd") */
	for (id = 1; id < VDIMG_FMT_COUNT; id++)
		if (vdimg_format_names[id] && !strcmp(name, vdimg_format_names[id]))
			return id;
	return VDIMG_FMT_AUTO;
}

u64 vdimg_formats_built_in(void)
{
	u64 mask = 0;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(vdimg_formats); i++)
		mask |= 1ULL << vdimg_formats[i]->id;
	return mask;
}

int vdimg_probe(struct vdimg_file *f, u32 *id, const char **why)
{
	struct vdimg_probe_buf p = { .size = vdimg_file_size(f) };
	u8 *head, tail[512];
	size_t i;
	int ret;

	*why = NULL;
	p.head_len = min_t(u64, p.size, VDIMG_PROBE_HEAD);
	head = vdimg_zalloc(VDIMG_PROBE_HEAD);
	if (!head)
		return -ENOMEM;
	memset(tail, 0, sizeof(tail));
	ret = vdimg_file_read(f, head, p.head_len, 0);
	if (!ret && p.size >= sizeof(tail))
		ret = vdimg_file_read(f, tail, sizeof(tail), p.size - sizeof(tail));
	if (ret)
		goto out;
	p.head = head;
	p.tail = tail;

	ret = -ENOENT;
	for (i = 0; i < ARRAY_SIZE(vdimg_signatures); i++) {
		const struct vdimg_signature *s = &vdimg_signatures[i];

		if (!s->match(&p))
			continue;
		if (!s->id) {
			*why = s->name;
			ret = -EOPNOTSUPP;
		} else if (s->id != VDIMG_FMT_VHD && p.size >= 512 &&
			   !memcmp(tail, "conectix", 8)) {
			/*
			 * A fixed VHD's first sector belongs to its guest, which can write any
			 * header there: a head signature over a VHD footer is ambiguous, never
			 * guessed.
			 */
			*why = s->name;
			ret = -EMEDIUMTYPE;
		} else {
			*id = s->id;
			ret = 0;
		}
		break;
	}
out:
	vdimg_free(head);
	return ret;
}

int vdimg_image_open(struct vdimg_image *img, u32 format, unsigned int flags)
{
	const struct vdimg_format *fmt;
	const char *why;
	int ret;

	if (format == VDIMG_FMT_AUTO) {
		ret = vdimg_probe(img->file, &format, &why);
		if (ret == -EOPNOTSUPP) {
			vdimg_err(img, "%s images are not supported", why);
			return ret;
		}
		if (ret == -EMEDIUMTYPE) {
			vdimg_err(img, "looks like both a %s image and a fixed VHD (a guest may have written one of them); give the format explicitly",
				  why);
			return ret;
		}
		if (ret == -ENOENT) {
			if (!(flags & VDIMG_OPEN_ALLOW_RAW)) {
				vdimg_err(img, "unrecognised image format; raw needs an explicit format or a read-only attach");
				return -EMEDIUMTYPE;
			}
			format = VDIMG_FMT_RAW;
		} else if (ret) {
			vdimg_err(img, "cannot read the image to identify it (error %d)", ret);
			return ret;
		}
	}
	fmt = vdimg_format_by_id(format);
	if (!fmt) {
		const char *name = vdimg_format_name(format);

		if (!name || format == VDIMG_FMT_AUTO) {
			vdimg_err(img, "unknown format id %u", format);
			return -EINVAL;
		}
		vdimg_err(img, "%s images are not supported by this build", name);
		return -EOPNOTSUPP;
	}
	if (img->data_file && !(fmt->caps & VDIMG_CAP_DATA_FILE)) {
		vdimg_err(img, "%s images have no external data file", fmt->name);
		return -EINVAL;
	}
	if (img->nr_extents && !(fmt->caps & VDIMG_CAP_EXTENT_FILES)) {
		vdimg_err(img, "%s images have no separate extent files", fmt->name);
		return -EINVAL;
	}
	if (img->snapshot && !(fmt->caps & VDIMG_CAP_SNAPSHOTS)) {
		vdimg_err(img, "%s images have no internal snapshots", fmt->name);
		return -EOPNOTSUPP;
	}
	if (img->snapshot && !(flags & VDIMG_OPEN_READ_ONLY)) {
		vdimg_err(img, "an internal snapshot can only be opened read-only");
		return -EROFS;
	}
	img->fmt = fmt;
	ret = fmt->open(img,
			flags & (VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_HAS_CHILD | VDIMG_OPEN_REPAIR |
				 VDIMG_OPEN_FORCE_CSUM));
	if (ret) {
		img->fmt = NULL;
		return ret;
	}
	if (flags & VDIMG_OPEN_READ_ONLY)
		img->flags |= VDIMG_IMG_READ_ONLY;
	if (WARN_ON_ONCE(!img->size || img->size % 512 || !img->lbs)) {
		fmt->close(img);
		img->fmt = NULL;
		return -EINVAL;
	}
	return 0;
}

void vdimg_image_close(struct vdimg_image *img)
{
	if (img->fmt) {
		img->fmt->close(img);
		img->fmt = NULL;
	}
}

/*
 * For ->grow(): the range [@old, img->size) that a grow brings in must read as zeros through @img.
 * Called with img->size already the new size and nothing written yet. Bytes of the old last
 * allocation unit past @old may hold anything (written by another tool, or left by a shrink):
 * they are zeroed in the file. Allocated units wholly past @old (left behind, or planted) are
 * refused (-EOPNOTSUPP) rather than freed here, as is a compressed last unit.
 */
int vdimg_grow_zero_new(struct vdimg_image *img, u64 old)
{
	u64 tail_end = img->alloc_unit ? ALIGN(old, (u64)img->alloc_unit) : old;
	struct vdimg_extent ext;
	void *z = NULL;
	bool data;
	int ret = 0;

	tail_end = min(tail_end, img->size);
	while (!ret && old < img->size) {
		u64 end = old < tail_end ? tail_end : img->size;

		ret = img->fmt->map(img, old, end - old, 0, &ext);
		if (ret)
			break;
		if (!ext.length || ext.length > img->size - old) {
			ret = -EIO;
			break;
		}
		data = ext.type == VDIMG_EXT_DATA || ext.type == VDIMG_EXT_ENCODED;
		if (old >= tail_end && data) {
			vdimg_err(img, "cannot grow online: data is allocated past the end at %llu (detach and use vdimgctl resize)",
				  (unsigned long long)old);
			ret = -EOPNOTSUPP;
		} else if (ext.type == VDIMG_EXT_ENCODED) {
			vdimg_err(img, "cannot grow online: the last cluster is compressed (detach and use vdimgctl resize)");
			ret = -EOPNOTSUPP;
		} else if (ext.type == VDIMG_EXT_DATA) {
			if (!z)
				z = vdimg_zalloc(ext.length);
			ret = -ENOMEM;
			if (z)
				ret = vdimg_file_write(ext.file, z, ext.length, ext.file_offset);
			vdimg_free(z);
			z = NULL;
		}
		old += ext.length;
	}
	return ret;
}
