// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the core of libvdimg: the registry and signature probing (every known signature,
 * unsupported formats refused by name, things that must not be taken for a format), the raw and iso
 * backends, and the platform shim's write-cut hook. KTAP on stdout.
 */
#include <vdimg/backend.h>
#include "ktap.h"

static u8 head[VDIMG_PROBE_HEAD + 4096];

/* Build a file from a head (@hlen bytes of head[]) and a tail sector; probe it. */
static int probe_file(const char *name, size_t hlen, const u8 *tail, size_t size, u32 *id,
		      const char **why)
{
	struct vdimg_file *f;
	int fd, ret;

	fd = tfile(name, NULL, size);
	if (pwrite(fd, head, min(hlen, size), 0) < 0 ||
	    (tail && pwrite(fd, tail, 512, size - 512) != 512))
		return -EIO;
	f = vdimg_file_from_fd(fd);
	*id = 0;
	ret = vdimg_probe(f, id, why);
	vdimg_file_free(f);
	close(fd);
	return ret;
}

struct sig_case {
	const char *name;
	size_t off;
	const char *magic;
	size_t len;
	u32 id;			/* 0: unsupported */
	const char *why;	/* for unsupported */
	bool at_tail;
};

static const struct sig_case sig_cases[] = {
	{ "qcow2 v2", 0, "QFI\xfb\0\0\0\x02", 8, VDIMG_FMT_QCOW2 },
	{ "qcow2 v3", 0, "QFI\xfb\0\0\0\x03", 8, VDIMG_FMT_QCOW2 },
	{ "qcow v1", 0, "QFI\xfb\0\0\0\x01", 8, VDIMG_FMT_QCOW },
	{ "qed", 0, "QED\0", 4, VDIMG_FMT_QED },
	{ "vdi", 0x40, "\x7f\x10\xda\xbe", 4, VDIMG_FMT_VDI },
	{ "vhdx", 0, "vhdxfile", 8, VDIMG_FMT_VHDX },
	{ "vmdk sparse", 0, "KDMV", 4, VDIMG_FMT_VMDK },
	{ "vmdk cowd", 0, "COWD", 4, VDIMG_FMT_VMDK },
	{ "vmdk descriptor", 0, "# Disk DescriptorFile\n", 22, VDIMG_FMT_VMDK },
	{ "parallels v1", 0, "WithoutFreeSpace", 16, VDIMG_FMT_PARALLELS },
	{ "parallels v2", 0, "WithouFreSpacExt", 16, VDIMG_FMT_PARALLELS },
	{ "vhd dynamic", 0, "conectix", 8, VDIMG_FMT_VHD },
	{ "vhd fixed (footer at the end)", 0, "conectix", 8, VDIMG_FMT_VHD, NULL, true },
	{ "dmg (koly at the end)", 0, "koly", 4, VDIMG_FMT_DMG, NULL, true },
	{ "iso (CD001 at 0x8001)", 0x8001, "CD001", 5, VDIMG_FMT_ISO },
	{ "bochs", 0, "Bochs Virtual HD Image", 22, 0, "bochs" },
	{ "cloop", 0, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop", 0, 0, "cloop" },
	{ "LUKS", 0, "LUKS\xba\xbe\0\x01", 8, 0, "LUKS" },
	{ "LUKS2 secondary", 0, "SKUL\xba\xbe\0\x02", 8, 0, "LUKS" },
	{ "Apple ASIF", 0, "shdw", 4, 0, "Apple ASIF" },
	{ "sparsebundle plist", 0, "<?xml version=\"1.0\"?><key>com.apple.diskimage.sparsebundle</key>",
	  0, 0, "Apple sparsebundle" },
};

static void test_probe(void)
{
	size_t i;
	u32 id;
	const char *why;
	int ret;

	for (i = 0; i < ARRAY_SIZE(sig_cases); i++) {
		const struct sig_case *c = &sig_cases[i];
		size_t len = c->len ? c->len : strlen(c->magic);
		u8 tail[512];

		memset(head, 0, sizeof(head));
		memset(tail, 0, sizeof(tail));
		if (c->at_tail)
			memcpy(tail, c->magic, len);
		else
			memcpy(head + c->off, c->magic, len);
		ret = probe_file("probe.img", VDIMG_PROBE_HEAD, c->at_tail ? tail : NULL, 1 << 20,
				 &id, &why);
		if (c->id)
			ok(ret == 0 && id == c->id, "probe: %s -> %s (got %d, id %u)", c->name,
			   vdimg_format_name(c->id), ret, id);
		else
			ok(ret == -EOPNOTSUPP && why && !strcmp(why, c->why),
			   "probe: %s -> EOPNOTSUPP naming \"%s\" (got %d, %s)", c->name, c->why, ret,
			   why ? why : "no name");
	}

	/* an MBR boot sector (0x55aa, partition table) is raw, never a format */
	memset(head, 0, sizeof(head));
	memcpy(head, "\xeb\x63\x90", 3);
	head[0x1be] = 0x80;
	head[0x1c2] = 0x83;
	head[510] = 0x55;
	head[511] = 0xaa;
	ret = probe_file("mbr.img", 512, NULL, 1 << 20, &id, &why);
	ok_err(ret, -ENOENT, "probe: an MBR boot sector is not a format (ENOENT)");

	/* random data, fixed seed */
	srandom(1);
	for (i = 0; i < sizeof(head); i++)
		head[i] = random();
	ret = probe_file("random.img", sizeof(head), NULL, sizeof(head), &id, &why);
	ok_err(ret, -ENOENT, "probe: random data is not a format (ENOENT)");

	/* files shorter than a sector and than the probe window must not be read past their end */
	memset(head, 0, sizeof(head));
	ret = probe_file("tiny.img", 100, NULL, 100, &id, &why);
	ok_err(ret, -ENOENT, "probe: a 100-byte file gives ENOENT");
	memcpy(head, "conectix", 8);
	ret = probe_file("tiny-vhd.img", 511, NULL, 511, &id, &why);
	ok(ret == 0 && id == VDIMG_FMT_VHD, "probe: a 511-byte VHD footer copy is vhd");
	memset(head, 0, sizeof(head));
	ret = probe_file("empty.img", 0, NULL, 0, &id, &why);
	ok_err(ret, -ENOENT, "probe: an empty file gives ENOENT");
	/* a qcow magic with a version we do not know is not qcow */
	memcpy(head, "QFI\xfb\0\0\0\x09", 8);
	ret = probe_file("qcow9.img", 512, NULL, 4096, &id, &why);
	ok_err(ret, -ENOENT, "probe: qcow magic with version 9 is not taken for qcow");
}

static void test_registry(void)
{
	u64 built = vdimg_formats_built_in();
	u32 id;
	int names_ok = 1;

	ok(vdimg_format_by_id(VDIMG_FMT_RAW) == &vdimg_raw_format, "registry: raw is built in");
	ok(vdimg_format_by_name("iso") == &vdimg_iso_format, "registry: iso by name");
	ok(vdimg_format_by_name("nosuch") == NULL && vdimg_format_by_id(VDIMG_FMT_COUNT) == NULL &&
	   vdimg_format_by_id(0) == NULL, "registry: unknown names and ids give NULL");
	ok((built & (1ULL << VDIMG_FMT_RAW)) && (built & (1ULL << VDIMG_FMT_ISO)) && !(built & 1),
	   "registry: built-in mask has raw and iso, never auto");
	for (id = 1; id < VDIMG_FMT_COUNT; id++) {
		const struct vdimg_format *f = vdimg_format_by_id(id);

		if (!vdimg_format_name(id) || (f && (f->id != id || strcmp(f->name, vdimg_format_name(id)))))
			names_ok = 0;
		if (!!f != !!(built & (1ULL << id)))
			names_ok = 0;
		if (f && (!f->open || !f->close || !f->map))
			names_ok = 0;
	}
	ok(names_ok && vdimg_format_name(VDIMG_FMT_COUNT) == NULL,
	   "registry: every id has a name; built-in backends agree with it and have open/close/map");
}

/* Open a file of @size bytes (@data or zeros) as @format. */
static int open_img(const char *name, const void *data, size_t size, u32 format, unsigned int flags,
		    struct vdimg_image *img, int *fdp)
{
	int fd = tfile(name, data, size);
	int ret;

	memset(img, 0, sizeof(*img));
	img->file = vdimg_file_from_fd(fd);
	img->name = tpath(name);
	ret = vdimg_image_open(img, format, flags);
	if (ret) {
		vdimg_file_free(img->file);
		close(fd);
		return ret;
	}
	*fdp = fd;
	return 0;
}

static void close_img(struct vdimg_image *img, int fd)
{
	vdimg_image_close(img);
	vdimg_file_free(img->file);
	close(fd);
}

static void test_raw(void)
{
	struct vdimg_image img;
	struct vdimg_extent ext;
	u8 buf[4096];
	int fd, ret;

	ret = open_img("odd.raw", NULL, 1000, VDIMG_FMT_RAW, 0, &img, &fd);
	ok_err(ret, -EINVAL, "raw: a size that is not a multiple of 512 is refused");
	ok(strstr(ktap_last_msg, "multiple of 512") != NULL, "raw: ... with a message saying so");
	ret = open_img("empty.raw", NULL, 0, VDIMG_FMT_RAW, 0, &img, &fd);
	ok_err(ret, -EINVAL, "raw: an empty file is refused");
	ok(strstr(ktap_last_msg, "empty") != NULL, "raw: ... with a message saying so");

	ret = open_img("unknown.img", NULL, 1 << 20, VDIMG_FMT_AUTO, 0, &img, &fd);
	ok_err(ret, -EMEDIUMTYPE, "open auto: unrecognised data without ALLOW_RAW is EMEDIUMTYPE");
	ret = open_img("unknown.img", NULL, 1 << 20, VDIMG_FMT_AUTO, VDIMG_OPEN_ALLOW_RAW, &img, &fd);
	ok(ret == 0 && img.fmt == &vdimg_raw_format, "open auto: with ALLOW_RAW it is raw");
	if (ret)
		return;
	ok(img.size == 1 << 20 && img.lbs == 512 && img.pbs >= img.lbs && img.alloc_unit == 0 &&
	   !strcmp(img.variant, "fixed"), "raw: geometry (size, 512-byte sectors, fixed)");
	ret = img.fmt->map(&img, 4096, 8192, 0, &ext);
	ok(ret == 0 && ext.type == VDIMG_EXT_DATA && ext.offset == 4096 && ext.length == 8192 &&
	   ext.file_offset == 4096 && ext.file == img.file && !(ext.flags & VDIMG_EXT_NEW),
	   "raw: map in range is identity DATA");
	ret = img.fmt->map(&img, (1 << 20) - 512, 8192, VDIMG_MAP_WRITE, &ext);
	ok(ret == 0 && ext.length == 512, "raw: map across the end is clipped to the end");
	ok_err(img.fmt->map(&img, 1 << 20, 512, 0, &ext), -EINVAL, "raw: map at the end is EINVAL");
	ok_err(img.fmt->map(&img, ~0ULL - 511, 512, 0, &ext), -EINVAL, "raw: map at 2^64-512 is EINVAL");

	memset(buf, 0xab, sizeof(buf));
	ret = pwrite(fd, buf, sizeof(buf), 65536) == sizeof(buf) ? 0 : -EIO;
	ret = ret ?: img.fmt->discard(&img, 65536, 4096, 0);
	ok_err(ret, 0, "raw: discard of written data");
	ret = pread(fd, buf, sizeof(buf), 65536) == sizeof(buf) ? 0 : -EIO;
	ok(!ret && is_byte(buf, sizeof(buf), 0), "raw: discarded range reads zeros");
	ok_err(img.fmt->discard(&img, (1 << 20) - 512, 1024, 0), -EINVAL,
	       "raw: discard past the end is EINVAL");
	close_img(&img, fd);

	/* iso: CD001 at 0x8001 is iso, read-only only */
	{
		static u8 iso[64 * 1024];

		memset(iso, 0, sizeof(iso));
		memcpy(iso + 0x8001, "CD001", 5);
		ret = open_img("disc.iso", iso, sizeof(iso), VDIMG_FMT_AUTO, 0, &img, &fd);
		ok_err(ret, -EROFS, "iso: writable open is EROFS");
		ret = open_img("disc.iso", iso, sizeof(iso), VDIMG_FMT_AUTO, VDIMG_OPEN_READ_ONLY,
			       &img, &fd);
		ok(ret == 0 && img.fmt == &vdimg_iso_format && (img.flags & VDIMG_IMG_READ_ONLY) &&
		   img.size == sizeof(iso), "iso: read-only open works, format iso, read-only flag");
		if (!ret)
			close_img(&img, fd);
		ret = open_img("disc.iso", iso, sizeof(iso), VDIMG_FMT_RAW, 0, &img, &fd);
		ok(ret == 0 && img.fmt == &vdimg_raw_format, "iso: explicit raw opens writable");
		if (!ret)
			close_img(&img, fd);
	}

	/* unsupported formats are refused by name by vdimg_image_open too */
	memset(head, 0, 4096);
	memcpy(head, "Bochs Virtual HD Image", 22);
	ret = open_img("disk.bochs", head, 4096, VDIMG_FMT_AUTO, VDIMG_OPEN_ALLOW_RAW, &img, &fd);
	ok(ret == -EOPNOTSUPP && strstr(ktap_last_msg, "bochs images are not supported"),
	   "open auto: bochs is EOPNOTSUPP \"bochs images are not supported\", even with ALLOW_RAW");
	ret = open_img("bad-id.img", NULL, 4096, 9999, 0, &img, &fd);
	ok_err(ret, -EINVAL, "open: an unknown format id is EINVAL");
}

static void test_write_cut(void)
{
	struct vdimg_file *f;
	u8 buf[512];
	int fd = tfile("cut.img", NULL, 4096);

	f = vdimg_file_from_fd(fd);
	memset(buf, 1, sizeof(buf));
	vdimg_write_budget = 2;
	ok(vdimg_file_write(f, buf, 512, 0) == 0 && vdimg_file_write(f, buf, 512, 512) == 0,
	   "write-cut: writes within the budget succeed");
	ok_err(vdimg_file_write(f, buf, 512, 1024), -EIO, "write-cut: the write after the cut is EIO");
	ok_err(vdimg_file_sync(f), -EIO, "write-cut: sync after the cut is EIO");
	ok_err(vdimg_file_truncate(f, 8192), -EIO, "write-cut: truncate after the cut is EIO");
	ok(pread(fd, buf, 512, 1024) == 512 && is_byte(buf, 512, 0),
	   "write-cut: the cut write did not reach the file");
	vdimg_write_budget = -1;
	ok(vdimg_file_write(f, buf, 512, 1024) == 0 && vdimg_file_sync(f) == 0,
	   "write-cut: budget -1 lifts the cut");
	ok_err(vdimg_file_read(f, buf, 512, 4096 - 256), -EFSCORRUPTED,
	       "file_read: a read past the end of the file is EFSCORRUPTED");
	vdimg_file_free(f);
	close(fd);
}

/* the UTF-16 <-> UTF-8 converters of VHD and VHDX names and locators (tools/lib/platform.c) */
static void test_utf16(void)
{
	/* "a", U+00E9, U+20AC, U+1F600 (a surrogate pair) */
	static const char s[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
	static const u8 le[] = { 'a', 0, 0xe9, 0, 0xac, 0x20, 0x3d, 0xd8, 0x00, 0xde };
	u8 buf[32], be[sizeof(le)];
	size_t n, i;
	char *back;

	for (i = 0; i < sizeof(le); i += 2) {
		be[i] = le[i + 1];
		be[i + 1] = le[i];
	}
	n = vdimg_utf8_to_utf16(s, buf, sizeof(buf), false);
	ok(n == sizeof(le) && !memcmp(buf, le, n), "utf16: 1- to 4-byte UTF-8 to UTF-16LE (%zu bytes)", n);
	n = vdimg_utf8_to_utf16(s, buf, sizeof(buf), true);
	ok(n == sizeof(be) && !memcmp(buf, be, n), "utf16: the same to UTF-16BE");
	n = vdimg_utf8_to_utf16(s, buf, sizeof(le) - 2, false);
	ok(n == 6, "utf16: a surrogate pair that does not fit is left out whole (%zu bytes)", n);
	back = vdimg_utf16_to_utf8(le, sizeof(le), false, true);
	ok(back && !strcmp(back, s), "utf16: UTF-16LE back to the same UTF-8");
	free(back);
	back = vdimg_utf16_to_utf8(be, sizeof(be), true, true);
	ok(back && !strcmp(back, s), "utf16: UTF-16BE back to the same UTF-8");
	free(back);

	/* malformed UTF-8: stray continuation, truncated, overlong, encoded surrogate, past U+10FFFF */
	n = vdimg_utf8_to_utf16("\x80x\xe2\x82y\xc0\xafz\xed\xa0\x80\xf4\x90\x80\x80", buf,
				sizeof(buf), false);
	ok(n == 16 && !memcmp(buf, "?\0x\0?\0y\0?\0z\0?\0?\0", 16),
	   "utf16: malformed UTF-8 sequences become one '?' each, nothing else is lost (%zu)", n);

	/* NUL: the end of a padded name, or a '?' inside a counted string */
	memcpy(buf, "a\0\0\0b\0", 6);
	back = vdimg_utf16_to_utf8(buf, 6, false, true);
	ok(back && !strcmp(back, "a"), "utf16: with nul_ends a NUL unit ends the string");
	free(back);
	back = vdimg_utf16_to_utf8(buf, 6, false, false);
	ok(back && !strcmp(back, "a?b"), "utf16: without nul_ends a NUL unit becomes '?'");
	free(back);
	memcpy(buf, "\x00\xd8x\0\x00\xdc", 6);	/* lone high, 'x', lone low surrogate */
	back = vdimg_utf16_to_utf8(buf, 6, false, true);
	ok(back && !strcmp(back, "?x?"), "utf16: unpaired surrogates become '?'");
	free(back);
}

int main(void)
{
	ktap_start();
	test_registry();
	test_probe();
	test_raw();
	test_write_cut();
	test_utf16();
	return ktap_finish();
}
