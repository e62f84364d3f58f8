// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the VDI backend (backends/vdi/) through libvdimg's chain I/O layer: images made by
 * qemu-img/qemu-io read back like `qemu-img convert -O raw`; random writes and discards against a
 * raw shadow, then `qemu-img check` and `qemu-img compare`; differencing chains (the base file must
 * not change); the VirtualBox gh-850 regression (zeroed blocks in a child must stay zero after a
 * reopen); corrupt headers refused cleanly; crash safety with the write-cut hook; compact and
 * check --repair; version 0 and undo images; concurrent allocations. KTAP on stdout.
 * The qemu-img parts skip (with a reason) when qemu-img is not installed.
 */
#include <pthread.h>
#include <sys/wait.h>
#include "format_test.h"
#include "mock_reorder.h"
#include "../../backends/vdi/vdi.h"

#define KiB 1024ULL
#define MiB (1ULL << 20)

static bool have_qemu;
static const struct vdimg_format *vdi_fmt = &vdimg_vdi_format;
static const struct vdimg_tool_ops *vdi = &vdimg_vdi_tool_ops;

/* ---- helpers ---- */

/* create a VDI with the backend's create() */
static int mkvdi(const char *path, u64 size, const char *variant, const char *parent, u32 bs)
{
	struct vdimg_create_opts o = { .size = size, .variant = variant, .block_size = bs };
	struct vdimg_chain *pc = NULL;
	struct vdimg_file *f;
	int fd, ret;

	if (parent) {
		ret = vdimg_chain_open(&pc, &parent, 1, NULL, VDIMG_CHAIN_READ_ONLY |
				       VDIMG_CHAIN_ORPHAN_OK);
		if (ret)
			return ret;
		o.parent = parent;
		o.parent_img = vdimg_chain_top(pc);
	}
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	f = vdimg_file_from_fd(fd);
	ret = vdi->create(f, &o);
	vdimg_file_free(f);
	close(fd);
	vdimg_chain_close(pc);
	return ret;
}

static int open2(struct vdimg_chain **c, const char *base, const char *top, unsigned int flags)
{
	const char *p[2] = { base, top };

	return vdimg_chain_open(c, p, 2, NULL, flags);
}

static void qemu_check(const char *path, const char *what)
{
	if (!have_qemu) {
		skip("%s: qemu-img check (qemu-img not installed)", what);
		return;
	}
	ok(sh("qemu-img check -q -f vdi '%s' >/dev/null", path) == 0, "%s: qemu-img check is clean",
	   what);
}

static void qemu_compare(const char *path, const char *raw, const char *what)
{
	if (!have_qemu) {
		skip("%s: qemu-img compare (qemu-img not installed)", what);
		return;
	}
	ok(sh("qemu-img compare -q -f vdi -F raw '%s' '%s'", path, raw) == 0,
	   "%s: qemu-img compare with the raw shadow", what);
}

/* one extent of the top layer at @off */
static int map_top(struct vdimg_chain *c, u64 off, u64 len, struct vdimg_extent *e)
{
	struct vdimg_image *img = vdimg_chain_top(c);

	memset(e, 0, sizeof(*e));
	return img->fmt->map(img, off, len, 0, e);
}

static int vi_compact_wrap(struct vdimg_chain *c)
{
	return vdi->compact(vdimg_chain_top(c));
}

/* ---- tests ---- */

static void test_create_and_describe(void)
{
	const char *p = tpath("new.vdi");
	struct vdimg_chain *c;
	struct vdimg_extent e;
	u64 n;
	u8 *hdr;

	ok_err(mkvdi(p, 64 * MiB, NULL, NULL, 0), 0, "create: dynamic 64 MiB");
	hdr = read_all(p, &n);
	ok(n == MiB + 0 && le32_to_cpu(*(__le32 *)(hdr + 72 + 272)) == MiB,
	   "create: data area 1 MiB-aligned, file holds only the metadata");
	free(hdr);
	if (!ok_err(open1(&c, p, VDIMG_CHAIN_READ_ONLY), 0, "create: reopens"))
		return;
	ok(c->size == 64 * MiB && vdimg_chain_top(c)->alloc_unit == MiB &&
	   !strcmp(vdimg_chain_top(c)->variant, "dynamic") &&
	   (vdimg_chain_top(c)->flags & VDIMG_IMG_HAS_UUID), "create: size, block size, variant, uuid");
	ok(!map_top(c, 0, 64 * MiB, &e) && e.type == VDIMG_EXT_UNALLOCATED && e.length == 64 * MiB,
	   "map: an empty image is one UNALLOCATED extent");
	vdimg_chain_close(c);
	qemu_check(p, "create dynamic");
	if (have_qemu)
		ok(sh("qemu-img info '%s' | grep -q 'file format: vdi'", p) == 0,
		   "create: qemu-img info sees a vdi");

	ok_err(mkvdi(tpath("bad.vdi"), 1000, NULL, NULL, 0), -EINVAL,
	       "create: a size that is not a multiple of 512 is EINVAL");
	ok_err(mkvdi(tpath("bad.vdi"), MiB, NULL, NULL, 3000), -EINVAL,
	       "create: a block size that is not a power of two is EINVAL");
	ok_err(mkvdi(tpath("bad.vdi"), MiB, "differencing", NULL, 0), -EINVAL,
	       "create: differencing without a parent is EINVAL");
	ok_err(mkvdi(tpath("bad.vdi"), MiB, "sparkly", NULL, 0), -EINVAL,
	       "create: unknown variant is EINVAL");
}

static void emit_count(void *ctx, const char *key, const char *value)
{
	char *s = ctx;

	strncat(s, key, 4000 - strlen(s));
	strncat(s, "=", 4000 - strlen(s));
	strncat(s, value, 4000 - strlen(s));
	strncat(s, "\n", 4000 - strlen(s));
}

static void test_qemu_images(void)
{
	static const char *variants[2] = { "static=off", "static=on" };
	/* patterns straddling the 1 MiB block boundaries, and odd sizes */
	static const char *writes =
		"-c 'write -P 0x11 0 4096' -c 'write -P 0x22 1048064 1024' "
		"-c 'write -P 0x33 3145216 2097664' -c 'write -P 0x44 9437184 1048576' "
		"-c 'write -P 0x55 16776704 512' -c 'write -z 3146240 4096'";
	u64 size = 16 * MiB;

	for (int v = 0; v < 2; v++) {
		const char *img = tpath(v ? "q-static.vdi" : "q-dyn.vdi");
		const char *raw = tpath("q.raw");
		struct vdimg_chain *c;
		char desc[4096] = "";
		u64 n;
		u8 *ref;

		if (!have_qemu) {
			skip("qemu-img %s: qemu-img not installed", variants[v]);
			continue;
		}
		if (!ok(sh("qemu-img create -q -f vdi -o %s '%s' 16M && qemu-io -f vdi %s '%s' >/dev/null",
			   variants[v], img, writes, img) == 0, "qemu-img %s: create and fill", variants[v]))
			continue;
		sh("qemu-img convert -f vdi -O raw '%s' '%s'", img, raw);
		ref = read_all(raw, &n);
		if (!ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), 0, "qemu-img %s: opens", variants[v]))
			continue;
		ok(n == size && chain_is(c, ref, size), "qemu-img %s: reads like qemu-img convert",
		   variants[v]);
		ok(!strcmp(vdimg_chain_top(c)->variant, v ? "fixed" : "dynamic"),
		   "qemu-img %s: variant %s", variants[v], vdimg_chain_top(c)->variant);
		vdi->describe(vdimg_chain_top(c), emit_count, desc);
		ok(strstr(desc, "version=1.1\n") && strstr(desc, "block size=1048576\n") &&
		   strstr(desc, "creation uuid=") && strstr(desc, "linkage uuid=") &&
		   strstr(desc, "modification uuid="),
		   "qemu-img %s: describe shows version, block size, uuids", variants[v]);
		vdimg_chain_close(c);

		/* then written by us: qemu still agrees */
		if (!ok_err(open1(&c, img, 0), 0, "qemu-img %s: opens writable", variants[v]))
			continue;
		lcg_state = 77 + v;
		ok_err(random_writes(c, ref, size, 40, 500), 0, "qemu-img %s: 40 random writes",
		       variants[v]);
		ok(chain_is(c, ref, size), "qemu-img %s: reads back what was written", variants[v]);
		ok_err(vdimg_chain_close(c), 0, "qemu-img %s: close", variants[v]);
		put_file(raw, ref, size);
		qemu_check(img, variants[v]);
		qemu_compare(img, raw, variants[v]);
		free(ref);
	}
}

static void test_random_rw(void)
{
	const char *img = tpath("rw.vdi"), *raw = tpath("rw.raw");
	u64 size = 40 * MiB + 512 * 3;	/* the last block is partial */
	u8 *ref = calloc(1, size);
	struct vdimg_chain *c;

	ok_err(mkvdi(img, size, NULL, NULL, 0), 0, "random: create %llu bytes", (unsigned long long)size);
	if (!ok_err(open1(&c, img, 0), 0, "random: open"))
		return;
	lcg_state = 1;
	ok_err(random_writes(c, ref, size, 300, 1000), 0, "random: 300 writes of mixed sizes");
	ok(chain_is(c, ref, size), "random: reads back the shadow");
	fill_pat(ref + size - 4096, 4096, 9, size - 4096);
	ok_err(vdimg_chain_pwrite(c, ref + size - 4096, 4096, size - 4096), 0,
	       "random: write the partial last block");
	ok_err(vdimg_chain_close(c), 0, "random: close");
	ok(image_is(img, ref, size), "random: reopened image equals the shadow");
	put_file(raw, ref, size);
	qemu_check(img, "random");
	qemu_compare(img, raw, "random");
	free(ref);
}

/* fixed images: all blocks allocated, writes in place, nothing to allocate */
static void test_fixed(void)
{
	const char *img = tpath("fixed.vdi"), *raw = tpath("fixed.raw");
	u64 size = 8 * MiB;
	u8 *ref = calloc(1, size);
	struct vdimg_chain *c;
	struct vdimg_extent e;

	ok_err(mkvdi(img, size, "fixed", NULL, 0), 0, "fixed: create");
	ok(fsize(img) == MiB + size, "fixed: file holds every block");
	if (!ok_err(open1(&c, img, 0), 0, "fixed: open"))
		return;
	ok(vdimg_chain_top(c)->alloc_unit == 0 && !strcmp(vdimg_chain_top(c)->variant, "fixed"),
	   "fixed: never allocates");
	ok(!map_top(c, 0, size, &e) && e.type == VDIMG_EXT_DATA && e.length == size &&
	   e.file_offset == MiB, "fixed: map coalesces contiguous blocks into one DATA extent");
	lcg_state = 3;
	ok_err(random_writes(c, ref, size, 50, 2000), 0, "fixed: random writes");
	ok_err(vdimg_chain_discard(c, MiB, 2 * MiB + 4096, VDIMG_DISCARD_ZEROES), 0,
	       "fixed: discard with zeroes");
	memset(ref + MiB, 0, 2 * MiB + 4096);
	ok(chain_is(c, ref, size), "fixed: reads back (discarded range is zeros)");
	ok(!map_top(c, 0, size, &e) && e.type == VDIMG_EXT_DATA && e.length == size,
	   "fixed: still fully allocated after discard");
	vdimg_chain_close(c);
	put_file(raw, ref, size);
	qemu_check(img, "fixed");
	qemu_compare(img, raw, "fixed");
	free(ref);
}

static void test_diff_chain(void)
{
	const char *base = tpath("base.vdi"), *top = tpath("top.vdi"), *other = tpath("other.vdi");
	u64 size = 12 * MiB, n1, n2;
	u8 *ref = calloc(1, size), *before, *after;
	struct vdimg_chain *c;

	mkvdi(base, size, NULL, NULL, 0);
	if (!ok_err(open1(&c, base, 0), 0, "diff: base"))
		return;
	lcg_state = 5;
	random_writes(c, ref, size, 60, 3000);
	vdimg_chain_close(c);
	ok_err(mkvdi(top, 0, NULL, base, 0), 0, "diff: create a child of the base");
	before = read_all(base, &n1);
	if (!ok_err(open2(&c, base, top, 0), 0, "diff: open base + child"))
		return;
	ok(!strcmp(vdimg_chain_top(c)->variant, "differencing") && c->size == size &&
	   (vdimg_chain_top(c)->flags & VDIMG_IMG_HAS_PARENT), "diff: child is differencing, same size");
	ok(chain_is(c, ref, size), "diff: an empty child reads the base");
	lcg_state = 6;
	ok_err(random_writes(c, ref, size, 200, 4000), 0, "diff: random writes to the child");
	ok(chain_is(c, ref, size), "diff: chain reads the shadow");
	ok_err(vdimg_chain_close(c), 0, "diff: close");
	after = read_all(base, &n2);
	ok(n1 == n2 && !memcmp(before, after, n1), "diff: the base file is byte-identical");
	free(before);
	free(after);
	if (ok_err(open2(&c, base, top, VDIMG_CHAIN_READ_ONLY), 0, "diff: reopen")) {
		ok(chain_is(c, ref, size), "diff: reopened chain reads the shadow");
		vdimg_chain_close(c);
	}
	/* the child alone: its own blocks, holes fall to zeros */
	if (!open1(&c, top, VDIMG_CHAIN_READ_ONLY)) {
		ok(0, "diff: the child alone is refused");
		vdimg_chain_close(c);
	} else {
		ok(strstr(ktap_last_msg, "differencing"), "diff: the child alone is refused");
	}
	mkvdi(other, size, NULL, NULL, 0);
	ok_err(open2(&c, other, top, VDIMG_CHAIN_READ_ONLY), -ESTALE,
	       "diff: a parent with another UUID is ESTALE");
	ok(strstr(ktap_last_msg, "does not match") != NULL, "diff: and says so");
	/* undo images open as differencing */
	patch32(top, 72 + 4, VDI_TYPE_UNDO);
	if (ok_err(open2(&c, base, top, VDIMG_CHAIN_READ_ONLY), 0, "undo: opens with its parent")) {
		ok(!strcmp(vdimg_chain_top(c)->variant, "undo") && chain_is(c, ref, size),
		   "undo: reads like the differencing image");
		vdimg_chain_close(c);
	}
	patch32(top, 72 + 4, VDI_TYPE_DIFF);
	free(ref);
}

/* VirtualBox gh-850: zeroed blocks of a child lost their ZERO marking after a reopen */
static void test_gh850(void)
{
	const char *base = tpath("g-base.vdi"), *top = tpath("g-top.vdi");
	u64 size = 8 * MiB;
	u8 *ref = malloc(size), *zero = calloc(1, 2 * MiB);
	struct vdimg_chain *c;
	struct vdimg_extent e;

	mkvdi(base, size, NULL, NULL, 0);
	open1(&c, base, 0);
	fill_pat(ref, size, 850, 0);
	ok_err(vdimg_chain_pwrite(c, ref, size, 0), 0, "gh-850: base filled with a pattern");
	vdimg_chain_close(c);
	mkvdi(top, 0, NULL, base, 0);
	if (!ok_err(open2(&c, base, top, 0), 0, "gh-850: open base + child"))
		return;
	/* blocks 2 and 3 zeroed as whole blocks (write-zeroes), block 5 by writing zeros */
	ok_err(vdimg_chain_discard(c, 2 * MiB, 2 * MiB, VDIMG_DISCARD_ZEROES), 0,
	       "gh-850: write-zeroes of two whole blocks");
	ok_err(vdimg_chain_pwrite(c, zero, MiB, 5 * MiB), 0, "gh-850: full-block write of zeros");
	memset(ref + 2 * MiB, 0, 2 * MiB);
	memset(ref + 5 * MiB, 0, MiB);
	ok(!map_top(c, 2 * MiB, 2 * MiB, &e) && e.type == VDIMG_EXT_ZERO && e.length == 2 * MiB,
	   "gh-850: the blocks are ZERO in the child");
	ok(chain_is(c, ref, size), "gh-850: zeros read as zeros");
	vdimg_chain_close(c);
	if (!ok_err(open2(&c, base, top, 0), 0, "gh-850: reopen"))
		return;
	ok(chain_is(c, ref, size), "gh-850: after reopen the zeros still read as zeros");
	ok(!map_top(c, 2 * MiB, 2 * MiB, &e) && e.type == VDIMG_EXT_ZERO,
	   "gh-850: ZERO entries persisted in the block map");
	{
		struct vdimg_image *t = vdimg_chain_top(c);

		memset(&e, 0, sizeof(e));
		ok(!t->fmt->map(t, 2 * MiB + 512, 512, VDIMG_MAP_WRITE, &e) &&
		   (e.flags & VDIMG_EXT_NEW) && (e.flags & VDIMG_EXT_FILL_ZERO),
		   "gh-850: a write into a ZERO block asks for a zero fill");
		t->fmt->abort(t, &e);
	}
	/* a partial write into a ZERO block: the rest of the block stays zero (not the parent's) */
	fill_pat(ref + 2 * MiB + 4096, 8192, 851, 2 * MiB + 4096);
	ok_err(vdimg_chain_pwrite(c, ref + 2 * MiB + 4096, 8192, 2 * MiB + 4096), 0,
	       "gh-850: partial write into a ZERO block");
	ok(chain_is(c, ref, size), "gh-850: the rest of that block reads zeros, not the parent");
	/* partial write-zeroes on a FREE block of the child needs the write path; still zeros */
	ok_err(vdimg_chain_discard(c, 6 * MiB + 512, 4096, VDIMG_DISCARD_ZEROES), 0,
	       "gh-850: partial write-zeroes over the parent's data");
	memset(ref + 6 * MiB + 512, 0, 4096);
	ok(chain_is(c, ref, size), "gh-850: partial write-zeroes reads zeros, the rest the parent");
	vdimg_chain_close(c);
	free(ref);
	free(zero);
}

static void test_discard_compact_check(void)
{
	const char *img = tpath("dc.vdi"), *raw = tpath("dc.raw");
	u64 size = 32 * MiB, before, after;
	u8 *ref = calloc(1, size);
	struct vdimg_chain *c;
	struct vdimg_check_result res = { 0 };
	struct vdimg_extent e;

	mkvdi(img, size, NULL, NULL, 0);
	if (!ok_err(open1(&c, img, 0), 0, "discard: open"))
		return;
	fill_pat(ref, size, 42, 0);
	ok_err(vdimg_chain_pwrite(c, ref, size, 0), 0, "discard: fill every block");
	ok_err(vdimg_chain_discard(c, 3 * MiB, 4 * MiB, 0), 0, "discard: four whole blocks");
	memset(ref + 3 * MiB, 0, 4 * MiB);
	/* allocated blocks keep their slot (qemu-img check stays clean); the data becomes a hole */
	ok(!map_top(c, 3 * MiB, 4 * MiB, &e) && e.type == VDIMG_EXT_DATA &&
	   e.length == 4 * MiB, "discard: whole blocks of a base keep their slots");
	ok_err(vdimg_chain_discard(c, 10 * MiB + 1024, 8192, VDIMG_DISCARD_ZEROES), 0,
	       "discard: partial block with zeroes");
	memset(ref + 10 * MiB + 1024, 0, 8192);
	ok(chain_is(c, ref, size), "discard: reads zeros where discarded, data elsewhere");
	ok_err(vdimg_chain_discard(c, 20 * MiB, MiB, 0), 0, "discard: one more block");
	memset(ref + 20 * MiB, 0, MiB);
	ok_err(vdi_fmt->discard(vdimg_chain_top(c), 0, MiB, VDIMG_DISCARD_ZEROES | VDIMG_DISCARD_NOUNMAP),
	       -EOPNOTSUPP, "discard: NOUNMAP is left to the driver's write path");
	fill_pat(ref + 4 * MiB, 4096, 43, 4 * MiB);
	ok_err(vdimg_chain_pwrite(c, ref + 4 * MiB, 4096, 4 * MiB), 0, "discard: write a discarded block");
	ok(!map_top(c, 4 * MiB, 4096, &e) && e.type == VDIMG_EXT_DATA &&
	   e.file_offset == MiB + 4 * MiB, "discard: the write went to the block's own slot");
	ok(chain_is(c, ref, size), "discard: reads the shadow");
	vdimg_chain_close(c);
	ok(image_is(img, ref, size), "discard: persisted across reopen");
	qemu_check(img, "after discard");

	if (open1(&c, img, VDIMG_CHAIN_READ_ONLY) == 0) {
		ok_err(vdi->check(vdimg_chain_top(c), 0, &res), 0, "check: runs");
		ok(res.leaks == 0 && res.errors == 0, "check: discard leaves no leaks (got %llu)",
		   (unsigned long long)res.leaks);
		vdimg_chain_close(c);
	}
	/* a leaked slot: block 20 (all zeros) loses its map entry, its slot stays counted */
	{
		int fd = open(img, O_RDWR);
		__le32 boff, fre = cpu_to_le32(VDI_BLOCK_FREE);

		ok(fd >= 0 && pread(fd, &boff, 4, 72 + offsetof(struct vdi_header1, blocks_offset)) == 4,
		   "check: read the map offset");
		ok(pwrite(fd, &fre, 4, le32_to_cpu(boff) + 20 * 4) == 4, "check: leak one slot");
		close(fd);
	}
	if (open1(&c, img, VDIMG_CHAIN_READ_ONLY) == 0) {
		memset(&res, 0, sizeof(res));
		ok_err(vdi->check(vdimg_chain_top(c), 0, &res), 0, "check: runs on the leaky image");
		ok(res.leaks == 1 && res.errors == 0, "check: one unused slot is a leak (got %llu)",
		   (unsigned long long)res.leaks);
		vdimg_chain_close(c);
	}
	before = fsize(img);
	if (open1(&c, img, 0) == 0) {
		memset(&res, 0, sizeof(res));
		ok_err(vdi->check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res), 0, "check --repair");
		ok(res.fixed == 1, "check --repair: fixed the leak");
		ok(chain_is(c, ref, size), "check --repair: content unchanged");
		vdimg_chain_close(c);
	}
	after = fsize(img);
	ok(after == before - MiB, "check --repair: file shrank by one block");
	put_file(raw, ref, size);
	qemu_check(img, "after repair");
	qemu_compare(img, raw, "after repair");

	/* compact: unmaps zero blocks, moves the last ones into the holes, truncates */
	if (open1(&c, img, 0) == 0) {
		memset(ref + 12 * MiB, 0, 3 * MiB);
		ok_err(vdimg_chain_pwrite(c, ref + 12 * MiB, 3 * MiB, 12 * MiB), 0,
		       "compact: zero three blocks by writing zeros");
		ok_err(vdimg_chain_discard(c, 14 * MiB + 0, 0, 0), 0, "discard: empty range is a no-op");
		ok_err(vi_compact_wrap(c), 0, "compact: runs");
		ok(chain_is(c, ref, size), "compact: content preserved");
		vdimg_chain_close(c);
	}
	/* zero blocks: 3, 5 and 6 (discarded), 12, 13 and 14 (written with zeros) */
	ok(fsize(img) == after - 6 * MiB, "compact: file shrank by the six zero blocks");
	put_file(raw, ref, size);
	ok(image_is(img, ref, size), "compact: reopened image equals the shadow");
	qemu_check(img, "after compact");
	qemu_compare(img, raw, "after compact");
	free(ref);
}

/* ---- corrupt headers ---- */

#define H1(field) (72 + offsetof(struct vdi_header1, field))

struct mutation {
	const char *what;
	u64 off;		/* where to write */
	int width;		/* 4 or 8 bytes; 0: truncate the file to @val */
	u64 val;
	int want;		/* errno open must fail with */
};

static void test_corrupt(void)
{
	const char *good = tpath("cor-good.vdi"), *bad = tpath("cor.vdi");
	const u32 fmt = VDIMG_FMT_VDI;
	static const struct mutation m[] = {
		{ "bad signature", 64, 4, 0x12345678, -EUCLEAN },
		{ "version 2.0", 68, 4, 0x00020000, -EOPNOTSUPP },
		{ "header size 16", H1(header_size), 4, 16, -EUCLEAN },
		{ "header size 2^31", H1(header_size), 4, 0x7fffffff, -EUCLEAN },
		{ "image type 0", H1(type), 4, 0, -EUCLEAN },
		{ "image type 9", H1(type), 4, 9, -EUCLEAN },
		{ "block size 0", H1(block_size), 4, 0, -EUCLEAN },
		{ "block size 3000", H1(block_size), 4, 3000, -EUCLEAN },
		{ "block size 256", H1(block_size), 4, 256, -EUCLEAN },
		{ "block size 1 GiB", H1(block_size), 4, 1U << 30, -EOPNOTSUPP },
		{ "block extra 1 GiB", H1(block_extra), 4, 1U << 30, -EOPNOTSUPP },
		{ "disk size 0", H1(disk_size), 8, 0, -EUCLEAN },
		{ "disk size larger than the blocks", H1(disk_size), 8, 5 * MiB, -EUCLEAN },
		{ "disk size 2^63", H1(disk_size), 8, 1ULL << 63, -EOPNOTSUPP },
		{ "allocated > blocks", H1(blocks_allocated), 4, 5, -EUCLEAN },
		{ "3 blocks for 4 MiB", H1(blocks), 4, 3, -EUCLEAN },
		{ "2^31 blocks", H1(blocks), 4, 0x7fffffff, -EOPNOTSUPP },
		{ "2^18 blocks: map runs into the data", H1(blocks), 4, 1U << 18, -EUCLEAN },
		{ "map offset inside the header", H1(blocks_offset), 4, 100, -EUCLEAN },
		{ "map overlaps the data", H1(blocks_offset), 4, MiB - 8, -EUCLEAN },
		{ "data offset past the end", H1(data_offset), 4, 0x7ffffe00, -EUCLEAN },
		{ "data offset inside the map", H1(data_offset), 4, 512 + 8, -EUCLEAN },
		{ "map entry = allocated count", 512 + 8, 4, 2, -EUCLEAN },
		{ "map entry far beyond", 512 + 8, 4, 0xfffffff0, -EUCLEAN },
		{ "two blocks in one slot", 512 + 8, 4, 0, -EUCLEAN },
		/* a file truncated inside a counted slot opens now: see test_lost() */
		{ "file shorter than a header", 0, 0, 100, -EUCLEAN },
	};
	struct vdimg_chain *c;
	u8 *ref = calloc(1, 4 * MiB);

	mkvdi(good, 4 * MiB, NULL, NULL, 0);
	open1(&c, good, 0);
	fill_pat(ref, 2 * MiB, 7, 0);
	vdimg_chain_pwrite(c, ref, 2 * MiB, 0);	/* blocks 0 and 1 in slots 0 and 1 */
	vdimg_chain_close(c);
	ok(image_is(good, ref, 4 * MiB), "corrupt: the unmutated image opens and reads");

	for (size_t i = 0; i < ARRAY_SIZE(m); i++) {
		int ret;

		copy_file(good, bad);
		if (m[i].width == 4)
			patch32(bad, m[i].off, m[i].val);
		else if (m[i].width == 8)
			patch64(bad, m[i].off, m[i].val);
		else if (truncate(bad, m[i].val))
			printf("Bail out! truncate\n");
		ktap_last_msg[0] = '\0';
		ret = vdimg_chain_open(&c, &bad, 1, &fmt, 0);
		if (!ret)
			vdimg_chain_close(c);
		ok(ret == m[i].want && ktap_last_msg[0], "corrupt: %s is refused (%d) with a message",
		   m[i].what, ret);
	}
	free(ref);
}

/* check --repair of what a normal open refuses: an entry beyond the count, a shared slot */
static void test_repair(void)
{
	const char *img = tpath("rep.vdi"), *raw = tpath("rep.raw");
	struct vdimg_check_result res = { 0 };
	struct vdimg_chain *c;
	struct vdimg_image im = { .name = "rep.vdi" };
	struct vdimg_extent e = { 0 };
	u8 *ref = calloc(1, 4 * MiB);
	int fd, ret;

	mkvdi(img, 4 * MiB, NULL, NULL, 0);
	open1(&c, img, 0);
	fill_pat(ref, 3 * MiB, 11, 0);
	vdimg_chain_pwrite(c, ref, 3 * MiB, 0);	/* slots 0, 1, 2 */
	vdimg_chain_close(c);
	patch32(img, H1(blocks_allocated), 2);	/* the count write was lost */
	patch32(img, 512 + 12, 1);		/* block 3 shares slot 1 */
	ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), -EUCLEAN, "repair: a normal open refuses");

	fd = open(img, O_RDWR);
	im.file = vdimg_file_from_fd(fd);
	ret = vdimg_image_open(&im, VDIMG_FMT_VDI, VDIMG_OPEN_REPAIR);
	if (ok_err(ret, 0, "repair: opens with VDIMG_OPEN_REPAIR")) {
		ok_err(im.fmt->map(&im, 0, 512, VDIMG_MAP_WRITE, &e), -EUCLEAN,
		       "repair: writes are refused until repaired");
		ok_err(vdimg_tool_ops(im.fmt)->check(&im, VDIMG_CHECK_REPAIR, &res), 0, "repair: check --repair");
		ok(res.errors == 2 && res.fixed == 2, "repair: two problems found and fixed (%llu, %llu)",
		   (unsigned long long)res.errors, (unsigned long long)res.fixed);
		vdimg_image_close(&im);
	}
	vdimg_file_free(im.file);
	close(fd);
	ok(image_is(img, ref, 4 * MiB), "repair: the kept block reads its data, the shared one zeros");
	put_file(raw, ref, 4 * MiB);
	qemu_check(img, "repair");
	qemu_compare(img, raw, "repair");
	free(ref);
}

/* ---- version 0 ---- */

static void test_v0(void)
{
	const char *img = tpath("v0.vdi");
	const u64 map_off = 72 + VDI_HEADER0_SIZE, data = map_off + 8;
	struct vdi_preheader pre = { .signature = cpu_to_le32(VDI_SIGNATURE), .version = 0 };
	struct vdi_header0 h = {
		.type = cpu_to_le32(VDI_TYPE_NORMAL),
		.disk_size = cpu_to_le64(2 * MiB),
		.block_size = cpu_to_le32(MiB),
		.blocks = cpu_to_le32(2),
		.blocks_allocated = cpu_to_le32(1),
	};
	__le32 map[2] = { cpu_to_le32(VDI_BLOCK_FREE), cpu_to_le32(0) };
	u8 *ref = calloc(1, 2 * MiB);
	struct vdimg_chain *c;
	char desc[4096] = "";
	u64 n;
	u8 *file;

	memcpy(pre.text, VDI_TEXT, sizeof(VDI_TEXT) - 1);
	h.uuid_create[0] = 1;
	fill_pat(ref + MiB, MiB, 70, MiB);
	put_file(img, &pre, sizeof(pre));
	patch(img, 72, &h, sizeof(h));
	patch(img, map_off, map, sizeof(map));
	patch(img, data, ref + MiB, MiB);
	if (!ok_err(open1(&c, img, 0), 0, "v0: a version 0 image opens"))
		return;
	ok(chain_is(c, ref, 2 * MiB), "v0: reads (FREE block zeros, slot 0 data)");
	vdi->describe(vdimg_chain_top(c), emit_count, desc);
	ok(strstr(desc, "version=0.0\n") != NULL, "v0: describe says version 0.0");
	fill_pat(ref, 4096, 71, 0);
	ok_err(vdimg_chain_pwrite(c, ref, 4096, 0), 0, "v0: write allocates a block");
	vdimg_chain_close(c);
	ok(image_is(img, ref, 2 * MiB), "v0: reopened reads the write");
	file = read_all(img, &n);
	ok(n == data + 2 * MiB && le32_to_cpu(*(__le32 *)(file + 72 + 296)) == 2 &&
	   le32_to_cpu(*(__le32 *)(file + map_off)) == 1,
	   "v0: new slot 1 appended, map entry and allocated count in the v0 places");
	free(file);
	free(ref);
}

/* ---- modification UUID, NOWAIT, abort ---- */

static void read_modify_uuid(const char *img, u8 *uuid)
{
	int fd = open(img, O_RDONLY);

	if (pread(fd, uuid, 16, H1(uuid_modify)) != 16)
		memset(uuid, 0, 16);
	close(fd);
}

static void test_uuid_nowait(void)
{
	const char *img = tpath("mu.vdi");
	u8 u0[16], u1[16], u2[16], u3[16];
	struct vdimg_chain *c;
	struct vdimg_image *t;
	struct vdimg_extent e, e2;
	u8 buf[4096];

	mkvdi(img, 4 * MiB, NULL, NULL, 0);
	read_modify_uuid(img, u0);
	open1(&c, img, 0);
	t = vdimg_chain_top(c);
	vdimg_chain_pread(c, buf, sizeof(buf), 0);
	read_modify_uuid(img, u1);
	ok(!memcmp(u0, u1, 16), "uuid: reading keeps the modification UUID");
	memset(&e, 0, sizeof(e));
	ok_err(t->fmt->map(t, 0, 4096, VDIMG_MAP_WRITE | VDIMG_MAP_NOWAIT, &e), -EAGAIN,
	       "nowait: the first write map would write the UUID: EAGAIN");
	ok_err(t->fmt->map(t, 0, 4096, VDIMG_MAP_NOWAIT, &e), 0, "nowait: a read map works");
	memset(buf, 0xab, sizeof(buf));
	vdimg_chain_pwrite(c, buf, sizeof(buf), 0);
	read_modify_uuid(img, u2);
	ok(memcmp(u1, u2, 16) != 0, "uuid: the first write renews the modification UUID");
	vdimg_chain_pwrite(c, buf, sizeof(buf), MiB);
	read_modify_uuid(img, u3);
	ok(!memcmp(u2, u3, 16), "uuid: later writes in the same session keep it");
	ok((t->flags & VDIMG_IMG_DIRTY) != 0, "uuid: the image is marked dirty");

	ok_err(t->fmt->map(t, 2 * MiB, 4096, VDIMG_MAP_WRITE | VDIMG_MAP_NOWAIT, &e), -EAGAIN,
	       "nowait: a write map to a free block leaves the allocation to the worker: EAGAIN");
	memset(&e, 0, sizeof(e));
	ok_err(t->fmt->map(t, 2 * MiB, 4096, VDIMG_MAP_WRITE, &e), 0,
	       "a write map to a free block reserves a slot");
	ok(e.type == VDIMG_EXT_DATA && (e.flags & VDIMG_EXT_NEW) && !(e.flags & VDIMG_EXT_FILL_ZERO) &&
	   e.fill_offset == 2 * MiB && e.fill_length == MiB && e.length == 4096,
	   "NEW whole-block extent, filled from below for a FREE block");
	t->fmt->abort(t, &e);
	memset(&e2, 0, sizeof(e2));
	t->fmt->map(t, 3 * MiB, 4096, VDIMG_MAP_WRITE, &e2);
	ok(e2.file_offset == e.file_offset, "abort: the released slot is handed out again");
	t->fmt->abort(t, &e2);
	vdimg_chain_close(c);
	open1(&c, img, 0);
	vdimg_chain_pwrite(c, buf, 512, 0);
	vdimg_chain_close(c);
	read_modify_uuid(img, u0);
	ok(memcmp(u0, u3, 16) != 0, "uuid: a new session's first write renews it again");
}

/* ---- concurrent allocations ---- */

struct worker {
	struct vdimg_image *img;
	int t, nthreads, nblocks;
	int err;
};

static void *worker_fn(void *arg)
{
	struct worker *w = arg;
	u8 *buf = malloc(MiB);

	for (int b = w->t; b < w->nblocks && !w->err; b += w->nthreads) {
		struct vdimg_extent e = { 0 };
		u64 off = (u64)b * MiB + 4096;
		int ret;

		ret = w->img->fmt->map(w->img, off, 8192, VDIMG_MAP_WRITE, &e);
		if (ret || !(e.flags & VDIMG_EXT_NEW) || e.fill_offset != (u64)b * MiB) {
			w->err = ret ? ret : -EIO;
			break;
		}
		memset(buf, 0, MiB);
		fill_pat(buf + 4096, 8192, 900, off);
		ret = vdimg_file_write(e.file, buf, MiB, e.file_offset - 4096);
		if (!ret)
			ret = w->img->fmt->commit(w->img, &e);
		w->err = ret;
		/* and a read map of someone else's block meanwhile */
		memset(&e, 0, sizeof(e));
		w->img->fmt->map(w->img, ((b + 1) % w->nblocks) * MiB, MiB, 0, &e);
	}
	free(buf);
	return NULL;
}

static void test_threads(void)
{
	const char *img = tpath("thr.vdi");
	const int nthreads = 4, nblocks = 32;
	struct worker w[4];
	pthread_t th[4];
	u8 *ref = calloc(1, nblocks * MiB);
	struct vdimg_chain *c;
	u8 b[16];
	int errs = 0;

	mkvdi(img, nblocks * MiB, NULL, NULL, 0);
	open1(&c, img, 0);
	/* renew the UUID first, as the driver's worker would on its first write */
	{
		struct vdimg_image *t = vdimg_chain_top(c);
		struct vdimg_extent e = { 0 };

		if (!t->fmt->map(t, 0, 16, VDIMG_MAP_WRITE, &e))
			t->fmt->abort(t, &e);
	}
	(void)b;
	for (int i = 0; i < nthreads; i++) {
		w[i] = (struct worker){ vdimg_chain_top(c), i, nthreads, nblocks, 0 };
		pthread_create(&th[i], NULL, worker_fn, &w[i]);
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		if (w[i].err)
			printf("# thread %d: error %d\n", i, w[i].err);
		errs += w[i].err != 0;
	}
	ok(!errs, "threads: 4 threads allocate 32 blocks concurrently");
	for (int i = 0; i < nblocks; i++)
		fill_pat(ref + (u64)i * MiB + 4096, 8192, 900, (u64)i * MiB + 4096);
	vdimg_chain_close(c);
	ok(image_is(img, ref, nblocks * MiB), "threads: every block reads back (slots unique on reopen)");
	qemu_check(img, "threads");
	free(ref);
}

/* ---- crash safety ---- */

struct op {
	u64 off, len;
	int kind;		/* 0 write pattern, 1 discard, 2 discard with zeroes */
};

static const struct op crash_ops[] = {
	{ 1 * MiB + 512, 8192, 0 },		/* in an allocated block */
	{ 5 * MiB - 4096, MiB + 8192, 0 },	/* new blocks 4, 5, 6 */
	{ 2 * MiB, MiB, 1 },			/* free block 2 */
	{ 2 * MiB + 4096, 4096, 0 },		/* reuse its slot */
	{ 512, 1024, 2 },			/* zero part of block 0 */
	{ 9 * MiB + 100 * 512, 3 * 512, 0 },	/* a new block */
	{ 3 * MiB, MiB, 2 },			/* free block 3 */
	{ 7 * MiB, 2 * MiB, 0 },		/* two whole new blocks */
};

/* Does every sector of @got hold the old data, or what some operation put there? */
static bool crash_state_ok(const u8 *got, const u8 *old, u64 size, int nops)
{
	u8 want[512];

	for (u64 s = 0; s < size; s += 512) {
		bool okay = !memcmp(got + s, old + s, 512);

		for (int i = 0; i < nops && !okay; i++) {
			const struct op *o = &crash_ops[i];

			if (s < o->off || s >= o->off + o->len)
				continue;
			if (o->kind)
				memset(want, 0, 512);
			else
				fill_pat(want, 512, 300 + i, s);
			okay = !memcmp(got + s, want, 512);
		}
		if (!okay) {
			printf("# sector at %llu holds neither old nor written data\n",
			       (unsigned long long)s);
			return false;
		}
	}
	return true;
}

static int run_ops(struct vdimg_chain *c, u8 *ref)
{
	u8 *buf = malloc(4 * MiB);
	int ret = 0;

	for (size_t i = 0; i < ARRAY_SIZE(crash_ops) && !ret; i++) {
		const struct op *o = &crash_ops[i];

		if (o->kind == 0) {
			fill_pat(buf, o->len, 300 + i, o->off);
			ret = c ? vdimg_chain_pwrite(c, buf, o->len, o->off) : 0;
			if (ref)
				memcpy(ref + o->off, buf, o->len);
		} else {
			ret = c ? vdimg_chain_discard(c, o->off, o->len,
						      o->kind == 2 ? VDIMG_DISCARD_ZEROES : 0) : 0;
			if (ref)
				memset(ref + o->off, 0, o->len);
		}
	}
	free(buf);
	return ret;
}

static void test_crash(bool diff)
{
	const char *base = tpath("cr-base.vdi"), *pristine = tpath("cr-pristine.vdi");
	const char *work = tpath("cr-work.vdi");
	const u64 size = 12 * MiB;
	u8 *old = malloc(size), *ref, *got = malloc(size);
	struct vdimg_chain *c;
	int n, bad_open = 0, bad_data = 0, runs = 0;
	bool done = false;

	mkvdi(base, size, NULL, NULL, 0);
	open1(&c, base, 0);
	fill_pat(old, 4 * MiB, 299, 0);		/* blocks 0..3 allocated */
	memset(old + 4 * MiB, 0, size - 4 * MiB);
	vdimg_chain_pwrite(c, old, 4 * MiB, 0);
	vdimg_chain_close(c);
	if (diff) {
		mkvdi(pristine, 0, NULL, base, 0);
	} else {
		copy_file(base, pristine);
	}
	ref = malloc(size);
	memcpy(ref, old, size);
	for (n = 0; n < 400 && !done; n++) {
		struct vdimg_check_result res = { 0 };
		int ret;

		copy_file(pristine, work);
		ret = diff ? open2(&c, base, work, 0) : open1(&c, work, 0);
		if (ret) {
			bad_open++;
			break;
		}
		vdimg_write_budget = n;
		ret = run_ops(c, NULL);
		ret = vdimg_chain_close(c) ?: ret;
		vdimg_write_budget = -1;
		done = !ret;
		runs++;
		ktap_last_msg[0] = '\0';
		ret = diff ? open2(&c, base, work, 0) : open1(&c, work, 0);
		if (ret) {
			printf("# budget %d: reopen failed: %s\n", n, ktap_last_msg);
			bad_open++;
			continue;
		}
		if (vdimg_chain_pread(c, got, size, 0) || !crash_state_ok(got, old, size, 8) ||
		    vdi->check(vdimg_chain_top(c), 0, &res) || res.errors) {
			printf("# budget %d: bad state after the cut\n", n);
			bad_data++;
		}
		/* and the image stays usable: one more write lands */
		if (!done) {
			memset(got, 0x5a, 4096);
			if (vdimg_chain_pwrite(c, got, 4096, 8 * MiB) ||
			    vdimg_chain_pread(c, got, 4096, 8 * MiB) || !is_byte(got, 4096, 0x5a)) {
				printf("# budget %d: the image does not take writes after the cut\n", n);
				bad_data++;
			}
		}
		vdimg_chain_close(c);
	}
	ok(done, "crash%s: the workload completes with enough write budget (%d runs)",
	   diff ? " (differencing)" : "", runs);
	ok(!bad_open, "crash%s: every cut image reopens", diff ? " (differencing)" : "");
	ok(!bad_data, "crash%s: every cut image reads only old or written data and checks clean",
	   diff ? " (differencing)" : "");
	run_ops(NULL, ref);
	ok(done && (diff ? (open2(&c, base, work, VDIMG_CHAIN_READ_ONLY) == 0) :
		    (open1(&c, work, VDIMG_CHAIN_READ_ONLY) == 0)) && chain_is(c, ref, size),
	   "crash%s: the complete run reads the full result", diff ? " (differencing)" : "");
	if (done)
		vdimg_chain_close(c);
	free(old);
	free(ref);
	free(got);
}

/*
 * An entry inside the allocated count whose slot lies past the end of the file: what a host crash
 * leaves after an implementation that writes entries before syncing the data (qemu). It reads as
 * unallocated; check reports it; a read-write open writes the entry FREE at its first flush.
 */
static void test_lost(void)
{
	const char *img = tpath("lost.vdi");
	const u64 size = 4 * MiB;
	struct vdimg_check_result res = { 0 };
	struct vdimg_chain *c;
	u8 *ref = calloc(1, size);
	struct vdi *v;
	u64 slot2;
	int ret;

	mkvdi(img, size, NULL, NULL, 0);
	fill_pat(ref, 3 * MiB, 700, 0);
	open1(&c, img, 0);
	vdimg_chain_pwrite(c, ref, 3 * MiB, 0);
	v = vdimg_chain_top(c)->priv;
	slot2 = vdi_slot_offset(v, v->map[2]);
	vdimg_chain_close(c);
	/* the file ends inside block 2's slot: its data never reached the disk */
	ret = truncate(img, slot2 + 4096);
	memset(ref + 2 * MiB, 0, MiB);
	ok(!ret && open1(&c, img, VDIMG_CHAIN_READ_ONLY) == 0,
	   "lost: an entry past the end of the file inside the count opens read-only");
	if (!ret) {
		ok(chain_is(c, ref, size), "lost: that block reads as zeros, the others intact");
		ret = vdi->check(vdimg_chain_top(c), 0, &res);
		ok(!ret && res.errors == 1, "lost: check reports it as an error (%llu)",
		   (unsigned long long)res.errors);
		vdimg_chain_close(c);
	}
	ok(open1(&c, img, 0) == 0 && !vdimg_chain_close(c),
	   "lost: a read-write open and close (flush) succeed");
	memset(&res, 0, sizeof(res));
	ret = open1(&c, img, 0);
	ret = ret ?: vdi->check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && res.leaks == 1,
	   "lost: after it the entry is FREE on disk, its slot a leak (%llu errors, %llu leaks)",
	   (unsigned long long)res.errors, (unsigned long long)res.leaks);
	fill_pat(ref + 2 * MiB, MiB, 701, 2 * MiB);
	ok(!vdimg_chain_pwrite(c, ref + 2 * MiB, MiB, 2 * MiB) && !vdimg_chain_close(c) &&
	   image_is(img, ref, size), "lost: the block takes a write again and reads it back");
	if (have_qemu)
		ok(sh("qemu-img check -q -f vdi '%s' >/dev/null", img) == 0,
		   "lost: qemu-img check is clean after the rewrite");
	else
		skip("lost: qemu-img check (qemu-img not installed)");
	free(ref);
}

/* ---- crash safety when the host file system reorders writes between syncs ---- */

#define RO_BS	MiB		/* the only block size qemu opens */
#define RO_SIZE	(16 * RO_BS)

struct rop {
	u64 off, len;
	int kind;		/* 0 write pattern, 1 discard, 2 discard with zeroes, 3 flush */
};

static const struct rop reorder_ops[] = {
	{ 1 * RO_BS + 512, 8192, 0 },		/* in an allocated block */
	{ 5 * RO_BS - 4096, RO_BS + 8192, 0 },	/* new blocks 4 (the hole's slot), 5, 6 */
	{ 0, 0, 3 },
	{ 2 * RO_BS, RO_BS, 1 },		/* unmap block 2 */
	{ 2 * RO_BS + 4096, 4096, 0 },		/* write it again */
	{ 0, 0, 3 },
	{ 512, 1024, 2 },			/* zero part of block 0 */
	{ 9 * RO_BS + 100 * 512, 3 * 512, 0 },	/* a new block */
	{ 0, 0, 3 },
	{ 3 * RO_BS, RO_BS, 2 },		/* zero block 3 */
	{ 7 * RO_BS, 2 * RO_BS, 0 },		/* two whole new blocks */
	{ 12 * RO_BS - 512, 1024, 0 },		/* two new blocks, partly written */
};

#define RO_NOPS ((int)ARRAY_SIZE(reorder_ops))

struct reorder_ctx {
	const char *base;	/* the parent, or NULL */
	u8 *refs[RO_NOPS + 1];	/* the disk after the first N operations */
	u8 *got;
};

static int run_reorder_ops(struct vdimg_chain *c, u8 **refs)
{
	u8 *buf = malloc(4 * RO_BS);
	int ret = 0;

	for (int i = 0; i < RO_NOPS && !ret; i++) {
		const struct rop *o = &reorder_ops[i];

		if (refs)
			memcpy(refs[i + 1], refs[i], RO_SIZE);
		vdimg_wlog_mark(VDIMG_WLOG_MARK, i);
		if (o->kind == 0) {
			fill_pat(buf, o->len, 600 + i, o->off);
			if (c)
				ret = vdimg_chain_pwrite(c, buf, o->len, o->off);
			if (refs)
				memcpy(refs[i + 1] + o->off, buf, o->len);
		} else if (o->kind < 3) {
			if (c)
				ret = vdimg_chain_discard(c, o->off, o->len,
							  o->kind == 2 ? VDIMG_DISCARD_ZEROES : 0);
			if (refs)
				memset(refs[i + 1] + o->off, 0, o->len);
		} else if (c) {
			ret = vdimg_chain_flush(c);
			if (!ret)
				vdimg_wlog_mark(VDIMG_WLOG_ACK, i + 1);
		}
	}
	free(buf);
	return ret;
}

static int reorder_open(struct vdimg_chain **c, const struct reorder_ctx *x, const char *path,
			unsigned int flags);

/* the chain over @path reads the complete workload's result */
static bool image_is_chain(const struct reorder_ctx *x, const char *path)
{
	struct vdimg_chain *c;
	bool same;

	if (reorder_open(&c, x, path, VDIMG_CHAIN_READ_ONLY))
		return false;
	same = chain_is(c, x->refs[RO_NOPS], RO_SIZE);
	vdimg_chain_close(c);
	return same;
}

static int reorder_open(struct vdimg_chain **c, const struct reorder_ctx *x, const char *path,
			unsigned int flags)
{
	return x->base ? open2(c, x->base, path, flags) : open1(c, path, flags);
}

/*
 * qemu-img check clean, but for a header count above the blocks in use (qemu calls that a
 * mismatch; for us it is a leak of slots that nothing references)
 */
static bool reorder_qemu_ok(const char *path)
{
	return sh("out=$(qemu-img check -f vdi '%s' 2>&1); rc=$?; [ $rc = 0 ] || [ $rc = 3 ] || "
		  "{ [ $rc = 2 ] && ! echo \"$out\" | grep ERROR | "
		  "grep -vqE 'allocated blocks mismatch' && echo \"$out\" | tr -d , | "
		  "awk '/allocated blocks mismatch/ { if ($6 + 0 > $9 + 0) exit 1 }'; } || "
		  "{ echo \"$out\" | sed 's/^/# qemu-img: /'; false; }", path) == 0;
}

static bool reorder_check(const char *path, const struct reorder_state *st, void *ctx)
{
	struct reorder_ctx *x = ctx;
	struct vdimg_check_result res = { 0 };
	const u8 *ack = x->refs[st->acked];
	struct vdimg_chain *c;
	u8 want[512];
	bool good = true;

	ktap_last_msg[0] = '\0';
	if (reorder_open(&c, x, path, VDIMG_CHAIN_READ_ONLY)) {
		printf("# read-only open failed: %s\n", ktap_last_msg);
		return false;
	}
	if (vdimg_chain_pread(c, x->got, RO_SIZE, 0)) {
		printf("# the image does not read\n");
		good = false;
	}
	for (u64 s = 0; good && s < RO_SIZE; s += 512) {
		bool okay = !memcmp(x->got + s, ack + s, 512);

		for (long long i = st->acked; i <= st->started && !okay; i++) {
			const struct rop *o = &reorder_ops[i];

			if (o->kind == 3 || s < o->off || s >= o->off + o->len)
				continue;
			if (o->kind)
				memset(want, 0, 512);
			else
				fill_pat(want, 512, 600 + i, s);
			okay = !memcmp(x->got + s, want, 512);
		}
		if (!okay) {
			printf("# sector at %llu holds neither acknowledged nor newer written data\n",
			       (unsigned long long)s);
			good = false;
		}
	}
	if (good && (vdi->check(vdimg_chain_top(c), 0, &res) || res.errors)) {
		printf("# vdimgctl check finds %llu errors\n", (unsigned long long)res.errors);
		good = false;
	}
	vdimg_chain_close(c);
	if (good && have_qemu && !x->base && !reorder_qemu_ok(path)) {
		printf("# qemu-img check is not clean\n");
		good = false;
	}
	if (!good)
		return false;
	if (reorder_open(&c, x, path, 0)) {
		printf("# read-write open failed: %s\n", ktap_last_msg);
		return false;
	}
	memset(x->got, 0x5a, 4096);
	if (vdimg_chain_pwrite(c, x->got, 4096, 14 * RO_BS) ||
	    vdimg_chain_pread(c, x->got, 4096, 14 * RO_BS) || !is_byte(x->got, 4096, 0x5a)) {
		printf("# the image does not take a write\n");
		good = false;
	}
	return !vdimg_chain_close(c) && good;
}

static void test_reorder(bool diff)
{
	const char *base = tpath("ro-base.vdi"), *pristine = tpath("ro-pristine.vdi");
	const char *work = tpath("ro-work.vdi");
	const char *what = diff ? "reorder (differencing)" : "reorder";
	struct reorder_ctx x = { .base = diff ? base : NULL };
	struct vdimg_chain *c = NULL;
	u8 *pbytes, *buf = malloc(RO_BS);
	char state[256];
	u64 plen;
	int bad, states, ret;

	for (int i = 0; i <= RO_NOPS; i++)
		x.refs[i] = calloc(1, RO_SIZE);
	x.got = malloc(RO_SIZE);
	/* the base: blocks 0..3 written */
	mkvdi(base, RO_SIZE, NULL, NULL, RO_BS);
	open1(&c, base, 0);
	fill_pat(x.refs[0], 4 * RO_BS, 599, 0);
	vdimg_chain_pwrite(c, x.refs[0], 4 * RO_BS, 0);
	vdimg_chain_close(c);
	if (diff)
		mkvdi(pristine, 0, NULL, base, 0);
	else
		copy_file(base, pristine);
	/*
	 * a hole in the pristine image: block 4 written, then its entry made FREE as if another
	 * implementation had crashed; its slot keeps old data that must never show
	 */
	ret = diff ? open2(&c, base, pristine, 0) : open1(&c, pristine, 0);
	fill_pat(buf, RO_BS, 598, 4 * RO_BS);
	ret = ret ?: vdimg_chain_pwrite(c, buf, RO_BS, 4 * RO_BS);
	ret = vdimg_chain_close(c) ?: ret;
	{
		struct vdimg_chain *t;
		struct vdi *v;

		ret = ret ?: (diff ? open2(&t, base, pristine, VDIMG_CHAIN_READ_ONLY) :
			      open1(&t, pristine, VDIMG_CHAIN_READ_ONLY));
		if (!ret) {
			v = vdimg_chain_top(t)->priv;
			plen = v->blocks_off + 4 * 4;
			vdimg_chain_close(t);
			patch32(pristine, plen, VDI_BLOCK_FREE);
		}
	}
	ok(!ret, "%s: the pristine image is made", what);

	pbytes = read_all(pristine, &plen);
	copy_file(pristine, work);
	vdimg_wlog_reset();
	vdimg_wlog.on = true;
	ret = reorder_open(&c, &x, work, 0);
	ret = ret ?: run_reorder_ops(c, NULL);
	ret = ret ?: vdimg_chain_close(c);
	if (!ret)
		vdimg_wlog_mark(VDIMG_WLOG_ACK, RO_NOPS);
	vdimg_wlog.on = false;
	run_reorder_ops(NULL, x.refs);
	ok(!ret && image_is_chain(&x, work), "%s: the workload runs and reads back", what);

	/* hundreds of states, each synced by its write check: on tmpfs when there is one */
	snprintf(state, sizeof(state), "/dev/shm/vdimg-reorder.%d.vdi", (int)getpid());
	if (access("/dev/shm", W_OK))
		snprintf(state, sizeof(state), "%s", tpath("ro-state.vdi"));
	bad = reorder_replay(state, pbytes, plen, reorder_check, &x, &states);
	unlink(state);
	ok(!bad, "%s: every crash state (%d, %zu log records) opens, holds what was acknowledged, checks clean and takes writes (%d bad)",
	   what, states, vdimg_wlog.nr, bad);
	vdimg_wlog_reset();
	for (int i = 0; i <= RO_NOPS; i++)
		free(x.refs[i]);
	free(x.got);
	free(pbytes);
	free(buf);
}

int main(void)
{
	ktap_start();
	have_qemu = sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1") == 0;
	test_create_and_describe();
	test_qemu_images();
	test_random_rw();
	test_fixed();
	test_diff_chain();
	test_gh850();
	test_discard_compact_check();
	test_corrupt();
	test_repair();
	test_v0();
	test_uuid_nowait();
	test_threads();
	test_crash(false);
	test_crash(true);
	test_lost();
	test_reorder(false);
	test_reorder(true);
	return ktap_finish();
}
