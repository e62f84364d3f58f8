// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of writable images on block devices (issue 18) for VHD (dynamic), VHDX, QED, sparse
 * VMDK and Parallels, through the userspace library with vdimg_fixed_size_test set: every file then
 * counts as fixed-size, as an LV or a LUN does, and a regular file stands for the device. Each
 * image is made and filled by qemu-img and qemu-io, copied to the start of a "device" 6 MiB larger
 * whose tail holds old bytes (0xa5, what a reused LV holds; for a twoGbMaxExtentSparse VMDK, its
 * extent file stands for the device), and written into a new block: the
 * new data must go right after the image's data (not after the device's end), read back, leave
 * the old data alone, the tail's old bytes must not show through (zeroed new blocks and tables),
 * `qemu-img check` (ours for VHD, which qemu cannot check, plus vhdiinfo when installed) must find
 * no error, and `qemu-img convert` must read what we wrote. Then the device is filled until a write
 * fails with -ENOSPC and the message says the device is full: everything written before reads
 * back, the failed write's sectors read old or new data, never garbage, and the image is still
 * clean. VHD: the footer goes in the device's last sector (XenServer's layout), an image copied
 * onto the device (its footer right after its data) and one whose footer is at the device's end
 * both open, a footer of another image left in the last sector is not taken for this one's, one
 * missing in both places is put back at the end by a writable open, and a differencing image's
 * new block goes after its parent locators' data. The library's own writes on a device
 * (test_tool_ops(): check --repair and a grow, then a write into the new range) leave the device's
 * size alone, find no leak in its tail, and keep VHD's footer in its last sector.
 * Skips (exit 4) when qemu-img or qemu-io is missing. KTAP on stdout.
 */
#include "../../backends/vhd/vhd.h"
#include "../../tools/lib/tool-ops.h"
#include "format_test.h"

#define MiB (1024ULL * 1024)
#define VSIZE (32 * MiB)
#define ROOM (6 * MiB)		/* the device's bytes past the image */
#define NEW_AT (24 * MiB)	/* a write into a new block */
#define NEW_LEN (64 * 1024)

struct bd_case {
	const char *name;
	const char *qfmt;	/* qemu-img's name of the format */
	const char *opts;	/* qemu-img create options */
	u64 align;		/* a new block starts at most this far past the data */
	bool extent;		/* the device is the image's sparse extent file, not the image */
	u64 grown;		/* test_tool_ops(): the size to grow to (0: 16 MiB more) */
};

static const struct bd_case cases[] = {
	{ "vhd", "vpc", "-o subformat=dynamic,force_size=on", 4096 },
	{ "vhdx", "vhdx", "-o block_size=1M", MiB },
	{ "qed", "qed", "", 64 * 1024 },
	{ "vmdk", "vmdk", "-o subformat=monolithicSparse", 4096 },
	{ "vmdk extent", "vmdk", "-o subformat=twoGbMaxExtentSparse", 4096, true },
	{ "parallels", "parallels", "-o cluster_size=1M", MiB },
};

/* @dev: @img, then ROOM bytes of 0xa5 */
static void make_device(const char *img, const char *dev)
{
	u64 n = fsize(img);
	u8 *junk = malloc(ROOM);

	copy_file(img, dev);
	memset(junk, 0xa5, ROOM);
	patch(dev, n, junk, ROOM);
	free(junk);
}

/* the image as the reference expects it after qemu-io's writes */
static void ref_init(u8 *ref)
{
	memset(ref, 0, VSIZE);
	memset(ref, 0x11, MiB);
	memset(ref + 8 * MiB, 0x22, MiB);
}

/* our check of @path (opened as a device) finds no error and no leak */
static bool our_check_clean(const char *path)
{
	struct vdimg_check_result res = { 0 };
	struct vdimg_chain *c;
	struct vdimg_image *img;
	int ret;

	ret = open1(&c, path, VDIMG_CHAIN_READ_ONLY);
	if (ret) {
		printf("# open of %s for check: %d\n", path, ret);
		return false;
	}
	img = vdimg_chain_top(c);
	ret = vdimg_tool_ops(img->fmt)->check(img, 0, &res);
	vdimg_chain_close(c);
	if (ret || res.errors || res.leaks)
		printf("# check of %s: %d, %llu errors, %llu leaks\n", path, ret,
		       (unsigned long long)res.errors, (unsigned long long)res.leaks);
	return !ret && !res.errors && !res.leaks;
}

/*
 * qemu finds no error in @path, a regular file again (QED and Parallels count the device's tail as
 * leaked: exit 3)
 */
static bool qemu_check_clean(const struct bd_case *k, const char *path)
{
	int st;

	if (!strcmp(k->qfmt, "vpc"))
		return sh("command -v vhdiinfo >/dev/null") ||
		       !sh("vhdiinfo '%s' | grep -q 'Media size'", path);
	st = sh("qemu-img check -q -f %s '%s'", k->qfmt, path);
	return st == 0 || (st == 3 && (!strcmp(k->qfmt, "qed") || !strcmp(k->qfmt, "parallels")));
}

/* qemu reads @path like @ref, except [@skip, @skip + @skip_len) */
static bool qemu_reads(const struct bd_case *k, const char *path, const u8 *ref, u64 skip,
		       u64 skip_len)
{
	size_t len;
	u8 *got;
	bool same;

	if (sh("qemu-img convert -f %s -O raw '%s' '%s'", k->qfmt, path, tp("bd-q.raw")))
		return false;
	got = slurp(tp("bd-q.raw"), &len);
	same = got && len == VSIZE && !memcmp(got, ref, skip) &&
	       !memcmp(got + skip + skip_len, ref + skip + skip_len, VSIZE - skip - skip_len);
	free(got);
	return same;
}

/* the file offset of virtual @off in the image on @path, or 0 when it is not plain data */
static u64 data_offset(const char *path, u64 off)
{
	struct vdimg_extent ext;
	struct vdimg_chain *c;
	struct vdimg_image *img;
	u64 at = 0;

	if (open1(&c, path, VDIMG_CHAIN_READ_ONLY))
		return 0;
	img = vdimg_chain_top(c);
	if (!img->fmt->map(img, off, NEW_LEN, 0, &ext) && ext.type == VDIMG_EXT_DATA)
		at = ext.file_offset;
	vdimg_chain_close(c);
	return at;
}

/* every sector of [@off, @off + @len) reads as @ref or as zeros (a write that failed there) */
static bool old_or_new(const char *path, const u8 *ref, u64 off, u64 len)
{
	static const u8 zero[512];
	struct vdimg_chain *c;
	u8 *buf = malloc(len);
	bool good = false;
	u64 i;

	if (!open1(&c, path, VDIMG_CHAIN_READ_ONLY)) {
		good = !vdimg_chain_pread(c, buf, len, off);
		for (i = 0; good && i < len; i += 512)
			good = !memcmp(buf + i, ref + off + i, 512) || !memcmp(buf + i, zero, 512);
		vdimg_chain_close(c);
	}
	free(buf);
	return good;
}

/* the whole chain on @path reads as @ref except [@skip, @skip + @skip_len) */
static bool reads_as(const char *path, const u8 *ref, u64 skip, u64 skip_len)
{
	struct vdimg_chain *c;
	u8 *buf = malloc(VSIZE);
	bool same = false;

	if (!open1(&c, path, VDIMG_CHAIN_READ_ONLY)) {
		same = c->size == VSIZE && !vdimg_chain_pread(c, buf, VSIZE, 0) &&
		       !memcmp(buf, ref, skip) &&
		       !memcmp(buf + skip + skip_len, ref + skip + skip_len,
			       VSIZE - skip - skip_len);
		vdimg_chain_close(c);
	}
	free(buf);
	return same;
}

static bool last_sector_is_footer_of(const char *path, const char *img_path)
{
	u8 end[512], copy[512];
	u64 n = fsize(path);
	int fd = openf(path, O_RDONLY), fi = openf(img_path, O_RDONLY);
	bool same = pread(fd, end, 512, n - 512) == 512 && pread(fi, copy, 512, 0) == 512 &&
		    !memcmp(end, "conectix", 8) && !memcmp(end + 68, copy + 68, 16);

	close(fd);
	close(fi);
	return same;
}

static void test_format(const struct bd_case *k)
{
	char img[512], dev[512], ext[512];
	u8 *ref = malloc(VSIZE), *buf = malloc(MiB);
	struct vdimg_chain *c;
	u64 end, at, o;
	int ret;

	/*
	 * A descriptor's sparse extent on a device: the descriptor is opened, and its extent file
	 * holds the device's old bytes past the extent.
	 */
	snprintf(img, sizeof(img), "%s", tp(k->extent ? "bdx.vmdk" : "bd.img"));
	snprintf(dev, sizeof(dev), "%s", k->extent ? img : tp("bd.dev"));
	snprintf(ext, sizeof(ext), "%s", tp("bdx-s001.vmdk"));
	vdimg_fixed_size_test = false;
	if (sh("qemu-img create -q -f %s %s '%s' 32M", k->qfmt, k->opts, img) ||
	    sh("qemu-io -f %s -c 'write -P 0x11 0 1m' -c 'write -P 0x22 8m 1m' '%s' >/dev/null",
	       k->qfmt, img)) {
		ok(false, "%s: qemu-img makes the image", k->name);
		goto out;
	}
	end = fsize(k->extent ? ext : img);
	if (k->extent) {
		memset(buf, 0xa5, MiB);
		for (o = 0; o < ROOM; o += MiB)
			patch(ext, end + o, buf, MiB);
	} else {
		make_device(img, dev);
	}
	ref_init(ref);

	/* a new block, right after the image's data */
	vdimg_fixed_size_test = true;
	ret = open1(&c, dev, 0);
	if (!ok_err(ret, 0, "%s: opens writable on a device %llu bytes larger", k->name,
		    (unsigned long long)ROOM))
		goto out;
	fill_pat(buf, NEW_LEN, 1, NEW_AT);
	memcpy(ref + NEW_AT, buf, NEW_LEN);
	ok_err(vdimg_chain_pwrite(c, buf, NEW_LEN, NEW_AT), 0, "%s: write into a new block",
	       k->name);
	ok_err(vdimg_chain_flush(c), 0, "%s: flush", k->name);
	vdimg_chain_close(c);
	ok(reads_as(dev, ref, 0, 0), "%s: reads back, old data intact, no old device bytes",
	   k->name);
	at = data_offset(dev, NEW_AT);
	ok(at && at + NEW_LEN <= end + k->align + NEW_LEN && at + NEW_LEN <= end + ROOM - MiB,
	   "%s: the new data follows the image's data (at %llu, the image ended at %llu, the device at %llu)",
	   k->name, (unsigned long long)at, (unsigned long long)end,
	   (unsigned long long)(end + ROOM));
	ok(our_check_clean(dev), "%s: our check of the device is clean", k->name);
	if (!strcmp(k->qfmt, "vpc"))
		ok(last_sector_is_footer_of(dev, img),
		   "vhd: the footer is in the device's last sector");
	vdimg_fixed_size_test = false;
	ok(qemu_check_clean(k, dev), "%s: qemu-img check (vhdiinfo for vhd) finds no error",
	   k->name);
	ok(qemu_reads(k, dev, ref, 0, 0), "%s: qemu reads the device like the reference", k->name);

	/* fill the device: 1 MiB writes into new blocks until one fails */
	vdimg_fixed_size_test = true;
	ret = open1(&c, dev, 0);
	if (!ok_err(ret, 0, "%s: opens writable again", k->name))
		goto out;
	ktap_last_msg[0] = 0;
	for (o = 12 * MiB, ret = 0; o < NEW_AT; o += MiB) {
		fill_pat(buf, MiB, 2, o);
		ret = vdimg_chain_pwrite(c, buf, MiB, o);
		if (ret)
			break;
		memcpy(ref + o, buf, MiB);
	}
	ok_err(ret, -ENOSPC, "%s: a write fails with ENOSPC when the device is full (at %llu MiB)",
	       k->name, (unsigned long long)(o / MiB));
	ok(o > 12 * MiB && strstr(ktap_last_msg, "the block device is full"),
	   "%s: after %llu MiB, and says so: %s", k->name,
	   (unsigned long long)(o - 12 * MiB) / MiB, ktap_last_msg);
	ok_err(vdimg_chain_flush(c), 0, "%s: flush after ENOSPC", k->name);
	vdimg_chain_close(c);
	if (o >= NEW_AT)
		goto out;
	fill_pat(buf, MiB, 2, o);
	memcpy(ref + o, buf, MiB);	/* either this or zeros, sector by sector */
	ok(reads_as(dev, ref, o, MiB) && old_or_new(dev, ref, o, MiB),
	   "%s: everything written reads back, the failed write old or new data", k->name);
	ok(our_check_clean(dev), "%s: our check of the full device is clean", k->name);
	vdimg_fixed_size_test = false;
	ok(qemu_check_clean(k, dev), "%s: qemu-img check of the full device finds no error",
	   k->name);
	ok(qemu_reads(k, dev, ref, o, MiB), "%s: qemu reads the full device like the reference",
	   k->name);
out:
	vdimg_fixed_size_test = false;
	free(ref);
	free(buf);
}

/*
 * VHD: a footer of another image in the device's last sector (what an LV held before) is not
 * taken for this image's: the copy at offset 0 and the footer after the data are, and a write
 * puts this image's footer at the end.
 */
static void test_vhd_stale_footer(void)
{
	char img[512], dev[512];
	u8 other[512], *ref = malloc(VSIZE), *buf = malloc(NEW_LEN);
	struct vdimg_chain *c;
	int fd, ret;

	snprintf(img, sizeof(img), "%s", tp("bd.vhd"));
	snprintf(dev, sizeof(dev), "%s", tp("bd-vhd.dev"));
	if (sh("qemu-img create -q -f vpc -o force_size=on '%s' 32M", img) ||
	    sh("qemu-img create -q -f vpc '%s' 16M", tp("other.vhd")) ||
	    sh("qemu-io -f vpc -c 'write -P 0x11 0 1m' -c 'write -P 0x22 8m 1m' '%s' >/dev/null",
	       img)) {
		ok(false, "vhd stale footer: qemu-img makes the images");
		goto out;
	}
	make_device(img, dev);
	fd = openf(tp("other.vhd"), O_RDONLY);
	ret = pread(fd, other, 512, fsize(tp("other.vhd")) - 512) != 512;
	close(fd);
	if (ret) {
		ok(false, "vhd stale footer: read the other image's footer");
		goto out;
	}
	patch(dev, fsize(dev) - 512, other, 512);
	ref_init(ref);
	vdimg_fixed_size_test = true;
	ret = open1(&c, dev, 0);
	if (ok_err(ret, 0, "vhd stale footer: opens writable") &&
	    ok(c->size == VSIZE, "vhd stale footer: this image's size (%llu), not the other's",
	       (unsigned long long)c->size)) {
		fill_pat(buf, NEW_LEN, 3, NEW_AT);
		memcpy(ref + NEW_AT, buf, NEW_LEN);
		ok_err(vdimg_chain_pwrite(c, buf, NEW_LEN, NEW_AT), 0, "vhd stale footer: write");
	}
	if (!ret)
		vdimg_chain_close(c);
	ok(reads_as(dev, ref, 0, 0), "vhd stale footer: reads back");
	ok(last_sector_is_footer_of(dev, img),
	   "vhd stale footer: this image's footer replaced it in the last sector");
	ok(our_check_clean(dev), "vhd stale footer: our check is clean");
out:
	vdimg_fixed_size_test = false;
	free(ref);
	free(buf);
}

/*
 * VHD: no footer in the device's last sector nor after the data (a write interrupted as the
 * footer moved): read-only, the copy at offset 0 stands in; a writable open puts the footer in
 * the device's last sector.
 */
static void test_vhd_no_footer(void)
{
	char img[512], dev[512];
	u8 zero[512] = { 0 }, *ref = malloc(VSIZE);
	struct vdimg_chain *c;
	int ret;

	snprintf(img, sizeof(img), "%s", tp("bdn.vhd"));
	snprintf(dev, sizeof(dev), "%s", tp("bdn.dev"));
	if (sh("qemu-img create -q -f vpc -o force_size=on '%s' 32M", img) ||
	    sh("qemu-io -f vpc -c 'write -P 0x11 0 1m' -c 'write -P 0x22 8m 1m' '%s' >/dev/null",
	       img)) {
		ok(false, "vhd without a footer: qemu-img makes the image");
		goto out;
	}
	make_device(img, dev);
	patch(dev, fsize(img) - 512, zero, 512);
	ref_init(ref);
	vdimg_fixed_size_test = true;
	ktap_last_msg[0] = 0;
	ok(reads_as(dev, ref, 0, 0) && strstr(ktap_last_msg, "using the copy at offset 0"),
	   "vhd without a footer: reads through the copy at offset 0, and says so");
	ret = open1(&c, dev, 0);
	if (ok_err(ret, 0, "vhd without a footer: opens writable"))
		vdimg_chain_close(c);
	ok(last_sector_is_footer_of(dev, img),
	   "vhd without a footer: the writable open put it in the device's last sector");
	ok(our_check_clean(dev), "vhd without a footer: our check is clean afterwards");
out:
	vdimg_fixed_size_test = false;
	free(ref);
}

/*
 * VHD: a differencing image (made here, its parent locators' data after the BAT) on a device
 * over a base file: the new block goes after the locators' data, which stays intact, and the
 * sectors of the block the write did not cover still read the parent, not the device's old bytes.
 */
static void test_vhd_diff(void)
{
	char base[512], child[512], dev[512];
	const char *paths[2];
	u8 *ref = malloc(VSIZE), *buf = malloc(NEW_LEN);
	struct vdimg_create_opts o = { 0 };
	struct vdimg_parent_ref pref;
	struct vdimg_image bimg;
	struct vdimg_chain *c;
	struct vdimg_extent ext;
	struct vdimg_file *f;
	u64 end, at = 0;
	int bfd, cfd, ret;

	snprintf(base, sizeof(base), "%s", tp("bdb.vhd"));
	snprintf(child, sizeof(child), "%s", tp("bdc.vhd"));
	snprintf(dev, sizeof(dev), "%s", tp("bdc.dev"));
	if (sh("qemu-img create -q -f vpc -o force_size=on '%s' 32M", base) ||
	    sh("qemu-io -f vpc -c 'write -P 0x11 0 1m' -c 'write -P 0x22 8m 1m' '%s' >/dev/null",
	       base)) {
		ok(false, "vhd differencing: qemu-img makes the base");
		goto out;
	}
	bfd = openf(base, O_RDONLY);
	ret = img_open_with(&bimg, &vdimg_vhd_format, bfd, base, VDIMG_OPEN_READ_ONLY);
	if (!ok_err(ret, 0, "vhd differencing: the base opens")) {
		close(bfd);
		goto out;
	}
	cfd = tfile("bdc.vhd", NULL, 0);
	f = vdimg_file_from_fd(cfd);
	o.parent = base;
	o.parent_img = &bimg;
	ret = vdimg_vhd_tool_ops.create(f, &o);
	vdimg_file_free(f);
	close(cfd);
	img_close(&bimg);
	close(bfd);
	if (!ok_err(ret, 0, "vhd differencing: the child is created over the base"))
		goto out;
	end = fsize(child);
	make_device(child, dev);
	ref_init(ref);
	paths[0] = base;
	paths[1] = dev;
	vdimg_fixed_size_test = true;
	ret = open_chain_with(&c, paths, 2, &vdimg_vhd_format, NULL, false, 0);
	if (!ok_err(ret, 0, "vhd differencing: base + child on a device open, the child writable"))
		goto out;
	fill_pat(buf, NEW_LEN, 4, NEW_AT + 4096);
	memcpy(ref + NEW_AT + 4096, buf, NEW_LEN);
	ok_err(vdimg_chain_pwrite(c, buf, NEW_LEN, NEW_AT + 4096), 0,
	       "vhd differencing: write into a new block");
	close_chain(c, 2);
	ret = open_chain_with(&c, paths, 2, &vdimg_vhd_format, NULL, true, 0);
	if (!ok_err(ret, 0, "vhd differencing: opens again"))
		goto out;
	ok(chain_is(c, ref, VSIZE),
	   "vhd differencing: reads the base and the write, no old device bytes");
	if (!c->layers[1]->fmt->map(c->layers[1], NEW_AT + 4096, NEW_LEN, 0, &ext) &&
	    ext.type == VDIMG_EXT_DATA)
		at = ext.file_offset;
	at = at ? at - 4096 : 0;	/* the block's data */
	ok(at >= end - 512 && at < end + 4096,
	   "vhd differencing: the new block follows the locators' data (its data at %llu, the image's footer at %llu)",
	   (unsigned long long)at, (unsigned long long)(end - 512));
	ret = vdimg_vhd_tool_ops.parent_ref(c->layers[1], &pref);
	ok(!ret && strlen(pref.path) >= 7 && !strcmp(pref.path + strlen(pref.path) - 7, "bdb.vhd"),
	   "vhd differencing: the parent locators still name the base (%d, %s)", ret,
	   ret ? "" : pref.path);
	close_chain(c, 2);
	ok(last_sector_is_footer_of(dev, child),
	   "vhd differencing: the footer is in the device's last sector");
out:
	vdimg_fixed_size_test = false;
	free(ref);
	free(buf);
}

/*
 * The library's writes on a device (issue 18): check --repair, a resize that grows the image and
 * a write into the new range, for every format that can be written there. The device keeps its
 * size (nothing truncates it), its old bytes do not show through the new range, everything reads
 * back after a reopen, and our check and qemu's find no error.
 */
static const struct bd_case tool_cases[] = {
	{ "qcow2", "qcow2", "" },
	{ "vdi", "vdi", "" },
	{ "vhd", "vpc", "-o subformat=dynamic,force_size=on" },
	/* past the 128 entries of the BAT's sector: a new BAT after the last block */
	{ "vhd moving its BAT", "vpc", "-o subformat=dynamic,force_size=on", .grown = 300 * MiB },
	{ "vhdx", "vhdx", "-o block_size=1M" },
	{ "qed", "qed", "" },
	{ "vmdk", "vmdk", "-o subformat=monolithicSparse" },
	{ "parallels", "parallels", "-o cluster_size=1M" },
};

static void test_tool_ops(const struct bd_case *k)
{
	const u64 GROWN = k->grown ? k->grown : VSIZE + 16 * MiB;
	char img[512], dev[512];
	u8 *ref = calloc(1, GROWN), *buf = malloc(GROWN);
	struct vdimg_check_result res = { 0 };
	const struct vdimg_tool_ops *ops;
	struct vdimg_image *top;
	struct vdimg_chain *c;
	u64 dsize;
	size_t len;
	int ret;

	snprintf(img, sizeof(img), "%s", tp("bdt.img"));
	snprintf(dev, sizeof(dev), "%s", tp("bdt.dev"));
	vdimg_fixed_size_test = false;
	if (sh("qemu-img create -q -f %s %s '%s' 32M", k->qfmt, k->opts, img) ||
	    sh("qemu-io -f %s -c 'write -P 0x11 0 1m' -c 'write -P 0x22 8m 1m' '%s' >/dev/null",
	       k->qfmt, img)) {
		ok(false, "%s tool: qemu-img makes the image", k->name);
		goto out;
	}
	make_device(img, dev);
	dsize = fsize(dev);
	ref_init(ref);

	vdimg_fixed_size_test = true;
	ret = open1(&c, dev, 0);
	if (!ok_err(ret, 0, "%s tool: opens writable on a device", k->name))
		goto out;
	top = vdimg_chain_top(c);
	ops = vdimg_tool_ops(top->fmt);
	ret = ops->check(top, VDIMG_CHECK_REPAIR, &res);
	ok(!ret && !res.errors && !res.leaks && !res.fixed,
	   "%s tool: check --repair of the device finds nothing to fix (%d, %llu errors, %llu leaks, %llu fixed)",
	   k->name, ret, (unsigned long long)res.errors, (unsigned long long)res.leaks,
	   (unsigned long long)res.fixed);
	ret = ops->resize(top, GROWN, 0);
	if (!ret && top->fmt->flush)
		ret = top->fmt->flush(top);
	ok_err(ret, 0, "%s tool: grows from %llu to %llu MiB on the device", k->name,
	       (unsigned long long)(VSIZE / MiB), (unsigned long long)(GROWN / MiB));
	vdimg_chain_close(c);
	ok(fsize(dev) == dsize, "%s tool: the device keeps its size (%llu bytes, was %llu)",
	   k->name, (unsigned long long)fsize(dev), (unsigned long long)dsize);
	/* a BAT moved after the last block: the footer goes to the device's end, not after it */
	if (!strcmp(k->qfmt, "vpc") && k->grown)
		ok(last_sector_is_footer_of(dev, img),
		   "%s tool: after the grow, the footer is in the device's last sector", k->name);
	if (ret)
		goto out;

	/* a write into the range the grow added, through a fresh open */
	ret = open1(&c, dev, 0);
	if (!ok_err(ret, 0, "%s tool: reopens writable at the new size", k->name))
		goto out;
	ok(c->size == GROWN, "%s tool: the new size (%llu) is seen", k->name,
	   (unsigned long long)c->size);
	fill_pat(buf, NEW_LEN, 4, GROWN - 4 * MiB);
	memcpy(ref + GROWN - 4 * MiB, buf, NEW_LEN);
	ok_err(vdimg_chain_pwrite(c, buf, NEW_LEN, GROWN - 4 * MiB), 0,
	       "%s tool: write into the new range", k->name);
	ok_err(vdimg_chain_flush(c), 0, "%s tool: flush", k->name);
	vdimg_chain_close(c);

	ret = open1(&c, dev, VDIMG_CHAIN_READ_ONLY);
	ok(!ret && c->size == GROWN && !vdimg_chain_pread(c, buf, GROWN, 0) &&
	   !memcmp(buf, ref, GROWN),
	   "%s tool: reads back, the new range zeros and the write, no old device bytes", k->name);
	if (!ret)
		vdimg_chain_close(c);
	ok(our_check_clean(dev), "%s tool: our check of the grown image is clean", k->name);
	ok(fsize(dev) == dsize, "%s tool: the device still has its size", k->name);
	if (!strcmp(k->qfmt, "vpc"))
		ok(last_sector_is_footer_of(dev, img),
		   "%s tool: the footer is in the device's last sector", k->name);
	vdimg_fixed_size_test = false;
	ok(qemu_check_clean(k, dev), "%s tool: qemu-img check (vhdiinfo for vhd) finds no error",
	   k->name);
	free(buf);
	buf = NULL;
	ok(!sh("qemu-img convert -f %s -O raw '%s' '%s'", k->qfmt, dev, tp("bdt-q.raw")) &&
	   (buf = slurp(tp("bdt-q.raw"), &len)) && len == GROWN && !memcmp(buf, ref, GROWN),
	   "%s tool: qemu reads the grown image like the reference", k->name);
out:
	vdimg_fixed_size_test = false;
	free(ref);
	free(buf);
}

int main(void)
{
	unsigned int i;

	ktap_start();
	if (sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		skip("qemu-img or qemu-io is missing");
		return ktap_finish();
	}
	for (i = 0; i < ARRAY_SIZE(cases); i++)
		test_format(&cases[i]);
	test_vhd_stale_footer();
	test_vhd_no_footer();
	test_vhd_diff();
	for (i = 0; i < ARRAY_SIZE(tool_cases); i++)
		test_tool_ops(&tool_cases[i]);
	return ktap_finish();
}
