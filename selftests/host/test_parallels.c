// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the Parallels backend (backends/parallels.c) through libvdimg's chain I/O layer: the
 * samples parallels-v1, parallels-v2 and parallels-with-bitmap read like `qemu-img convert -O raw`
 * (and the bitmap extension stays valid for qemu after a writable open without writes, and is
 * dropped by the first write); images qemu-img creates, fills and converts read back byte for byte;
 * images we create and write pass `qemu-img check` and `qemu-img compare`; the in-use flag; a disk
 * larger than 2 TiB; hostile headers and BATs refused; check --repair; crash cuts at every write;
 * discard (whole clusters unmapped, partial ones, write-zeroes, NOUNMAP, a bundle's snapshot, the
 * file trimmed at close) with qemu-img check and compare, and crash cuts around it.
 * KTAP on stdout; skips (exit 4) when qemu-img is missing.
 */
#include <sys/wait.h>
#include "format_test.h"
#include "../../backends/parallels.h"
#include "../../tools/lib/vdimg-user.h"

#define KiB 1024ULL
#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define TiB (1ULL << 40)

static const struct vdimg_tool_ops *prl = &vdimg_parallels_tool_ops;
static const char *samples;

/* ---- helpers ---- */

static u32 get32(const char *path, u64 off)
{
	__le32 le = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || pread(fd, &le, 4, off) != 4)
		le = 0;
	close(fd);
	return le32_to_cpu(le);
}

#define HDR(field)	offsetof(struct prl_header, field)

static int mkprl(const char *path, u64 size, const char *variant, u32 cluster)
{
	struct vdimg_create_opts o = { .size = size, .variant = variant, .block_size = cluster };
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct vdimg_file *f = vdimg_file_from_fd(fd);
	int ret = prl->create(f, &o);

	vdimg_file_free(f);
	close(fd);
	return ret;
}

static void qemu_check(const char *path, const char *what)
{
	ok(sh("qemu-img check -q -f parallels '%s' >/dev/null", path) == 0,
	   "%s: qemu-img check is clean", what);
}

static void qemu_compare(const char *path, const char *raw, const char *what)
{
	ok(sh("qemu-img compare -q -f parallels -F raw '%s' '%s'", path, raw) == 0,
	   "%s: qemu-img compare with the raw shadow", what);
}

/* open, write randomly, close; then qemu-img check and compare against the shadow */
static void write_and_verify(const char *img, u8 *ref, u64 size, int n, const char *what)
{
	const char *raw = tpath("wv.raw");
	struct vdimg_chain *c;

	if (!ok_err(open1(&c, img, 0), 0, "%s: opens writable", what))
		return;
	ok(get32(img, HDR(inuse)) == PRL_INUSE_OPEN, "%s: in use while open for writing", what);
	ok_err(random_writes(c, ref, size, n, 900), 0, "%s: %d random writes", what, n);
	ok(chain_is(c, ref, size), "%s: reads back what was written", what);
	ok_err(vdimg_chain_close(c), 0, "%s: close", what);
	ok(get32(img, HDR(inuse)) == PRL_INUSE_CLOSED, "%s: closed cleanly", what);
	ok(image_is(img, ref, size), "%s: reopened, reads the same", what);
	put_file(raw, ref, size);
	qemu_check(img, what);
	qemu_compare(img, raw, what);
}

static int open_image(struct vdimg_image *im, const char *path, unsigned int flags, int *fd)
{
	int ret;

	memset(im, 0, sizeof(*im));
	im->name = path;
	*fd = open(path, (flags & VDIMG_OPEN_READ_ONLY) ? O_RDONLY : O_RDWR);
	im->file = vdimg_file_from_fd(*fd);
	ret = vdimg_image_open(im, VDIMG_FMT_PARALLELS, flags);
	if (ret) {
		vdimg_file_free(im->file);
		close(*fd);
	}
	return ret;
}

static void close_image(struct vdimg_image *im, int fd)
{
	vdimg_image_close(im);
	vdimg_file_free(im->file);
	close(fd);
}

/* ---- tests ---- */

static bool same_but_inuse(const char *img, u8 *before, u64 bn)
{
	u64 an;
	u8 *after = read_all(img, &an);
	bool same;

	memcpy(before + HDR(inuse), after + HDR(inuse), 4);
	same = bn == an && !memcmp(before, after, an);
	free(after);
	return same;
}

/* 64 GiB, nothing allocated, a dirty bitmap in a format extension cluster */
static void test_bitmap_sample(const char *img)
{
	struct vdimg_chain *c;
	struct vdimg_extent e = { 0 };
	u8 *before, buf[65536];
	u64 bn;

	if (!ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), 0, "sample with bitmap: opens"))
		return;
	ok(c->size == 64 * GiB && !vdimg_chain_top(c)->fmt->map(vdimg_chain_top(c), 0, c->size,
								   0, &e) &&
	   e.type == VDIMG_EXT_UNALLOCATED && e.length == c->size,
	   "sample with bitmap: 64 GiB, one unallocated extent (as qemu-img map says)");
	ok(sh("qemu-img map --output=json -f parallels '%s' | grep -c '\"data\": false' | grep -qx 1",
	      img) == 0, "sample with bitmap: qemu-img map agrees");
	ok(!vdimg_chain_pread(c, buf, sizeof(buf), 63 * GiB) && is_byte(buf, sizeof(buf), 0),
	   "sample with bitmap: reads zeros");
	vdimg_chain_close(c);

	before = read_all(img, &bn);
	if (ok_err(open1(&c, img, 0), 0, "sample with bitmap: opens writable"))
		vdimg_chain_close(c);
	ok(same_but_inuse(img, before, bn) && get32(img, HDR(inuse)) == PRL_INUSE_CLOSED,
	   "sample with bitmap: a writable open without writes leaves it as it was");
	free(before);
	/* qemu opens it read-only only if its extension (bitmap) parses and checks */
	ok(sh("qemu-io -r -f parallels -c 'read 0 4096' '%s' >/dev/null 2>&1", img) == 0,
	   "sample with bitmap: the bitmap extension is still valid for qemu");

	if (!ok_err(open1(&c, img, 0), 0, "sample with bitmap: opens writable again"))
		return;
	memset(buf, 0x3c, sizeof(buf));
	ok(!vdimg_chain_pwrite(c, buf, sizeof(buf), 40 * GiB + 512), "sample with bitmap: a write");
	ok_err(vdimg_chain_close(c), 0, "sample with bitmap: close");
	ok(get32(img, HDR(ext_off)) == 0,
	   "sample with bitmap: the first write dropped the stale bitmap extension");
	qemu_check(img, "sample with bitmap, written");
	ok(sh("qemu-io -r -f parallels -c 'read -P 0x3c %llu 65536' -c 'read -P 0 0 65536' '%s' | grep -c 'read 65536/65536' | grep -qx 2",
	      40 * GiB + 512, img) == 0, "sample with bitmap: qemu reads our write and zeros");
}

static void test_samples(void)
{
	static const char *names[] = { "parallels-v1", "parallels-v2", "parallels-with-bitmap" };

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		const char *img = tpath("sample.hds"), *raw = tpath("sample.raw");
		struct vdimg_chain *c;
		u8 *ref, *before;
		u64 n, bn;

		if (sh("test -r '%s/%s.bz2'", samples, names[i])) {
			skip("sample %s: not in %s (selftests/samples.sh fetches it)", names[i],
			     samples);
			continue;
		}
		sh("bzcat '%s/%s.bz2' > '%s'", samples, names[i], img);
		if (i == 2) {
			test_bitmap_sample(img);
			continue;
		}
		sh("qemu-img convert -f parallels -O raw '%s' '%s'", img, raw);
		ref = read_all(raw, &n);
		if (!ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), 0, "sample %s: opens", names[i]))
			continue;
		ok(chain_is(c, ref, n), "sample %s: reads like qemu-img convert (%llu bytes)",
		   names[i], (unsigned long long)n);
		vdimg_chain_close(c);

		/* a writable open that writes nothing leaves the file as it was */
		before = read_all(img, &bn);
		if (ok_err(open1(&c, img, 0), 0, "sample %s: opens writable", names[i]))
			vdimg_chain_close(c);
		ok(same_but_inuse(img, before, bn),
		   "sample %s: a writable open without writes changes only the in-use flag", names[i]);
		free(before);
		write_and_verify(img, ref, n, 30, names[i]);
		free(ref);
	}
}

static void test_qemu_images(void)
{
	static const char *writes =
		"-c 'write -P 0x11 0 4096' -c 'write -P 0x22 1048064 1024' "
		"-c 'write -P 0x33 3145216 2097664' -c 'write -P 0x44 9437184 1048576' "
		"-c 'write -P 0x55 16776704 512'";
	static const char *opts[] = { "", "-o cluster_size=64k", "-o cluster_size=4k" };
	const char *img = tpath("q.hds"), *raw = tpath("q.raw"), *src = tpath("src.raw");
	struct vdimg_chain *c;
	u64 n;
	u8 *ref;

	for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
		if (!ok(sh("qemu-img create -q -f parallels %s '%s' 16M && qemu-io -f parallels %s '%s' >/dev/null",
			   opts[i], img, writes, img) == 0, "qemu-img create %s: create and fill",
			opts[i]))
			continue;
		sh("qemu-img convert -f parallels -O raw '%s' '%s'", img, raw);
		ref = read_all(raw, &n);
		if (ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), 0, "qemu-img create %s: opens",
			   opts[i])) {
			ok(n == 16 * MiB && chain_is(c, ref, n),
			   "qemu-img create %s: reads like qemu-img convert", opts[i]);
			vdimg_chain_close(c);
		}
		write_and_verify(img, ref, n, 30, "qemu-made image, written");
		free(ref);
	}

	/* qemu-img convert -O parallels of a patterned raw file, a size that ends mid-cluster */
	ref = malloc(5 * MiB + 1536);
	fill_pat(ref, 5 * MiB + 1536, 5, 0);
	memset(ref + MiB, 0, 2 * MiB);		/* a hole qemu leaves unallocated */
	put_file(src, ref, 5 * MiB + 1536);
	if (ok(sh("qemu-img convert -f raw -O parallels '%s' '%s'", src, img) == 0,
	       "qemu-img convert -O parallels: converts")) {
		ok(image_is(img, ref, 5 * MiB + 1536), "qemu-img convert -O parallels: reads the source");
		write_and_verify(img, ref, 5 * MiB + 1536, 20, "converted image, written");
	}
	free(ref);
}

static void emit_cat(void *ctx, const char *key, const char *value)
{
	char *s = ctx;

	snprintf(s + strlen(s), 4000 - strlen(s), "%s=%s\n", key, value);
}

static void test_create(void)
{
	const char *img = tpath("new.hds");
	struct vdimg_chain *c;
	struct vdimg_extent e;
	char desc[4000] = "";
	u64 size = 40 * MiB + 1536;	/* the last cluster is partial */
	u8 *ref = calloc(1, size);

	ok_err(mkprl(img, size, NULL, 0), 0, "create: expanding");
	ok(fsize(img) == MiB, "create: the file holds the header and BAT (data area at 1 MiB)");
	if (ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), 0, "create: reopens")) {
		struct vdimg_image *im = vdimg_chain_top(c);

		ok(c->size == size && im->alloc_unit == MiB && !strcmp(im->variant, "expanding"),
		   "create: size, cluster size, variant");
		memset(&e, 0, sizeof(e));
		ok(!im->fmt->map(im, 0, size, 0, &e) && e.type == VDIMG_EXT_UNALLOCATED &&
		   e.length == size, "map: an empty image is one UNALLOCATED extent");
		prl->describe(im, emit_cat, desc);
		ok(strstr(desc, "cluster size=1048576\n") && strstr(desc, "bat entries=41\n") &&
		   strstr(desc, "WithouFreSpacExt"), "describe: signature, cluster size, BAT entries");
		vdimg_chain_close(c);
	}
	qemu_check(img, "create expanding");
	ok(sh("qemu-img info '%s' | grep -q 'file format: parallels'", img) == 0,
	   "create: qemu-img info sees a parallels image");
	write_and_verify(img, ref, size, 60, "created expanding");

	memset(ref, 0, size);
	ok_err(mkprl(img, size, NULL, 64 * KiB), 0, "create: 64 KiB clusters");
	write_and_verify(img, ref, size, 60, "created 64 KiB clusters");

	memset(ref, 0, size);
	ok_err(mkprl(img, 8 * MiB, "plain", 0), 0, "create: plain (preallocated)");
	if (ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), 0, "create plain: reopens")) {
		ok(vdimg_chain_top(c)->alloc_unit == 0 &&
		   !strcmp(vdimg_chain_top(c)->variant, "preallocated"),
		   "create plain: every cluster allocated, never allocates");
		vdimg_chain_close(c);
	}
	write_and_verify(img, ref, 8 * MiB, 20, "created plain");
	ok(fsize(img) == 9 * MiB, "create plain: writes do not grow the file");

	ok_err(mkprl(img, 1000, NULL, 0), -EINVAL, "create: a size not a multiple of 512 is EINVAL");
	ok_err(mkprl(img, MiB, NULL, 1000), -EINVAL, "create: a cluster not a multiple of 512 is EINVAL");
	ok_err(mkprl(img, MiB, "sparkly", 0), -EINVAL, "create: an unknown variant is EINVAL");
	free(ref);
}

/* more than 2 TiB: v2 entries count clusters, so 32 bits reach far enough */
static void test_large(void)
{
	const char *img = tpath("big.hds");
	u64 size = 3 * TiB, offs[3] = { 0, 2 * TiB + 5 * MiB + 512, 3 * TiB - 4096 };
	struct vdimg_chain *c;
	u8 buf[8192], got[8192];
	bool same = true;

	if (!ok_err(mkprl(img, size, NULL, 0), 0, "3 TiB: create"))
		return;
	if (!ok_err(open1(&c, img, 0), 0, "3 TiB: opens writable"))
		return;
	for (int i = 0; i < 3; i++) {
		u64 len = i == 2 ? 4096 : sizeof(buf);

		if (i == 1)
			memset(buf, 0xa5, len);
		else
			fill_pat(buf, len, 70 + i, offs[i]);
		same &= !vdimg_chain_pwrite(c, buf, len, offs[i]) &&
			!vdimg_chain_pread(c, got, len, offs[i]) && !memcmp(buf, got, len);
	}
	ok(same, "3 TiB: writes below and above 2 TiB read back");
	vdimg_chain_close(c);
	qemu_check(img, "3 TiB");
	/* qemu reads what we wrote at 2 TiB + 5 MiB */
	ok(sh("qemu-io -r -f parallels -c 'read -P 0xa5 %llu 8192' '%s' | grep -q 'read 8192/8192'",
	      (unsigned long long)offs[1], img) == 0, "3 TiB: qemu-io reads our data above 2 TiB");
}

static void test_inuse(void)
{
	const char *img = tpath("inuse.hds");
	struct vdimg_check_result res = { 0 };
	struct vdimg_chain *c;
	struct vdimg_image im;
	u8 *ref = calloc(1, 4 * MiB);
	int fd;

	mkprl(img, 4 * MiB, NULL, 0);
	open1(&c, img, 0);
	fill_pat(ref, MiB, 3, 0);
	vdimg_chain_pwrite(c, ref, MiB, 0);
	vdimg_chain_close(c);
	patch32(img, HDR(inuse), PRL_INUSE_OPEN);	/* as a crashed writer leaves it */
	ok_err(open1(&c, img, 0), -EUCLEAN, "in use: a writable open of an unclean image is refused");
	if (ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), 0, "in use: a read-only open works")) {
		ok(chain_is(c, ref, 4 * MiB), "in use: reads its data");
		vdimg_chain_close(c);
	}
	ok(sh("qemu-img check -f parallels '%s' >/dev/null 2>&1", img) != 0,
	   "in use: qemu-img check agrees it is unclean");
	/* the state every crash of a writer leaves: a warning, not an error; a repair clears it */
	if (ok_err(open_image(&im, img, VDIMG_OPEN_READ_ONLY, &fd), 0, "in use: opens for check")) {
		ktap_last_msg[0] = '\0';
		ok(!prl->check(&im, 0, &res) && !res.errors && !res.leaks && !res.fixed &&
		   res.warnings == 1 &&
		   strstr(ktap_last_msg, "not closed cleanly") && strstr(ktap_last_msg, "--repair"),
		   "in use: check warns (no error, one warning) and names the repair (%s)", ktap_last_msg);
		close_image(&im, fd);
	}
	if (getenv("VDIMGCTL"))
		ok(sh("\"$VDIMGCTL\" check '%s' 2>&1 | grep -q 'not closed cleanly'", img) == 0 &&
		   sh("\"$VDIMGCTL\" check '%s' >/dev/null 2>&1", img) == 0,
		   "in use: vdimgctl check exits 0 with the warning");
	else
		skip("in use: vdimgctl check: $VDIMGCTL is not set (make check-host sets it)");
	ok(get32(img, HDR(inuse)) == PRL_INUSE_OPEN, "in use: a check without --repair leaves the flag");
	memset(&res, 0, sizeof(res));
	if (ok_err(open_image(&im, img, VDIMG_OPEN_REPAIR, &fd), 0, "in use: opens for repair")) {
		ok(!prl->check(&im, VDIMG_CHECK_REPAIR, &res) && !res.errors && res.fixed == 1 &&
		   res.warnings == 1,
		   "in use: check --repair clears it");
		close_image(&im, fd);
	}
	ok(get32(img, HDR(inuse)) == PRL_INUSE_CLOSED, "in use: the header says closed");
	qemu_check(img, "in use, repaired");
	write_and_verify(img, ref, 4 * MiB, 10, "in use, repaired");
	free(ref);
}

/* a damaged copy of a small image: refused with the error wanted */
struct hostile {
	const char *what;
	u64 off;
	u32 val;
	int want;
};

static void test_hostile(void)
{
	const char *good = tpath("good.hds"), *bad = tpath("bad.hds");
	/* 4 MiB in 64 KiB clusters: data at 64 KiB, clusters 1..3 allocated below */
	const struct hostile cases[] = {
		{ "version 3", HDR(version), 3, -EOPNOTSUPP },
		{ "zero cluster size", HDR(tracks), 0, -EUCLEAN },
		{ "huge clusters", HDR(tracks), 1U << 30, -EOPNOTSUPP },
		{ "no BAT entries", HDR(bat_entries), 0, -EUCLEAN },
		{ "a BAT too large", HDR(bat_entries), 0xffffffffU, -EOPNOTSUPP },
		{ "more sectors than clusters", HDR(nb_sectors), 64 * 128 + 1, -EUCLEAN },
		{ "zero sectors", HDR(nb_sectors), 0, -EUCLEAN },
		{ "data offset 0 (right after the BAT)", HDR(data_off), 0, 0 },
		{ "BAT entry past the end", PRL_HEADER_SIZE + 4 * 5, 1000, -EUCLEAN },
		{ "duplicate BAT entries", PRL_HEADER_SIZE + 4 * 5, 2, -EUCLEAN },
		{ "extension past the end", HDR(ext_off), 100000, -EUCLEAN },
		{ "extension over a cluster", HDR(ext_off), 3 * 128, -EUCLEAN },
	};
	struct vdimg_chain *c;
	u8 junk[64];

	mkprl(good, 4 * MiB, NULL, 64 * KiB);
	open1(&c, good, 0);
	memset(junk, 0x77, sizeof(junk));
	for (int i = 1; i <= 3; i++)
		vdimg_chain_pwrite(c, junk, sizeof(junk), (u64)i * 64 * KiB);
	vdimg_chain_close(c);
	ok(get32(good, PRL_HEADER_SIZE + 4) == 1 && get32(good, PRL_HEADER_SIZE + 12) == 3,
	   "hostile: the base image has clusters 1..3 at file clusters 1..3");

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		copy_file(good, bad);
		patch32(bad, cases[i].off, cases[i].val);
		if (cases[i].want)
			ok_err(open1(&c, bad, VDIMG_CHAIN_READ_ONLY), cases[i].want, "hostile: %s",
			       cases[i].what);
		else if (ok_err(open1(&c, bad, VDIMG_CHAIN_READ_ONLY), 0, "hostile: %s is fine",
				cases[i].what))
			vdimg_chain_close(c);
	}

	/* v1 entries are sectors: into the header, off the cluster grid, overlapping */
	copy_file(good, bad);
	patch32(bad, 0, 0x686f7574);		/* "tuoh": "WithoutFreeSpace" below */
	sh("printf 'WithoutFreeSpace' | dd of='%s' conv=notrunc status=none", bad);
	patch32(bad, PRL_HEADER_SIZE + 4, 128);
	patch32(bad, PRL_HEADER_SIZE + 8, 256);
	patch32(bad, PRL_HEADER_SIZE + 12, 384);
	if (ok_err(open1(&c, bad, VDIMG_CHAIN_READ_ONLY), 0, "hostile v1: the same image as v1 opens")) {
		u8 got[64];

		ok(!vdimg_chain_pread(c, got, 64, 3 * 64 * KiB) && !memcmp(got, junk, 64),
		   "hostile v1: reads cluster 3 through sector entries");
		vdimg_chain_close(c);
	}
	patch32(bad, PRL_HEADER_SIZE + 8, 1);
	ok_err(open1(&c, bad, VDIMG_CHAIN_READ_ONLY), -EUCLEAN, "hostile v1: entry into the header");
	patch32(bad, PRL_HEADER_SIZE + 8, 200);
	ok_err(open1(&c, bad, VDIMG_CHAIN_READ_ONLY), -EUCLEAN, "hostile v1: entry off the cluster grid");
	patch32(bad, PRL_HEADER_SIZE + 8, 384);
	ok_err(open1(&c, bad, VDIMG_CHAIN_READ_ONLY), -EUCLEAN, "hostile v1: duplicate entries");
	sh("truncate -s 40 '%s'", bad);
	ok_err(open1(&c, bad, VDIMG_CHAIN_READ_ONLY), -EUCLEAN, "hostile: a truncated header");
}

/* check --repair of what a normal open refuses; leaks after the last cluster */
static void test_repair(void)
{
	const char *img = tpath("rep.hds"), *raw = tpath("rep.raw");
	struct vdimg_check_result res = { 0 };
	struct vdimg_chain *c;
	struct vdimg_image im;
	u8 *ref = calloc(1, 4 * MiB);
	int fd;

	mkprl(img, 4 * MiB, NULL, 0);
	open1(&c, img, 0);
	fill_pat(ref, 3 * MiB, 11, 0);
	vdimg_chain_pwrite(c, ref, 3 * MiB, 0);	/* file clusters 1, 2, 3 */
	vdimg_chain_close(c);
	patch32(img, PRL_HEADER_SIZE + 8, 2);	/* cluster 2 shares file cluster 2 with 1 */
	patch32(img, PRL_HEADER_SIZE + 0, 900);	/* cluster 0 points past the end */
	ok_err(open1(&c, img, VDIMG_CHAIN_READ_ONLY), -EUCLEAN, "repair: a normal open refuses");
	ok(sh("qemu-img check -f parallels '%s' >/dev/null 2>&1", img) != 0,
	   "repair: qemu-img check agrees it is corrupt");
	if (ok_err(open_image(&im, img, VDIMG_OPEN_REPAIR, &fd), 0, "repair: opens for repair")) {
		struct vdimg_extent e = { 0 };

		ok_err(im.fmt->map(&im, 0, 512, VDIMG_MAP_WRITE, &e), -EUCLEAN,
		       "repair: writes are refused until repaired");
		ok_err(prl->check(&im, VDIMG_CHECK_REPAIR, &res), 0, "repair: check --repair");
		ok(res.errors == 2 && res.leaks == 1 && res.fixed == 3,
		   "repair: two bad entries and the cluster left unused at the end found and fixed (%llu, %llu, %llu)",
		   (unsigned long long)res.errors, (unsigned long long)res.leaks,
		   (unsigned long long)res.fixed);
		close_image(&im, fd);
	}
	memset(ref, 0, MiB);
	memset(ref + 2 * MiB, 0, MiB);
	ok(image_is(img, ref, 4 * MiB), "repair: the kept clusters read their data, dropped ones zeros");
	qemu_check(img, "repair");
	put_file(raw, ref, 4 * MiB);
	qemu_compare(img, raw, "repair");

	/* space after the last cluster is a leak, and a repair truncates it */
	sh("truncate -s %llu '%s'", (unsigned long long)(fsize(img) + 3 * MiB), img);
	memset(&res, 0, sizeof(res));
	if (ok_err(open_image(&im, img, VDIMG_OPEN_REPAIR, &fd), 0, "leak: opens for repair")) {
		ok(!prl->check(&im, VDIMG_CHECK_REPAIR, &res) && res.leaks == 3 && res.fixed == 3 &&
		   !res.errors, "leak: three clusters leaked and given back");
		close_image(&im, fd);
	}
	ok(fsize(img) == 3 * MiB, "leak: the file ends after its last cluster");
	qemu_check(img, "leak repaired");
	free(ref);
}

/* ---- crash safety: cut the writes after n of them, reopen, check ---- */

struct op {
	u64 off, len;
	bool flush;
};

static const struct op crash_ops[] = {
	{ 1 * MiB + 512, 8192, false },		/* in an allocated cluster */
	{ 5 * MiB - 4096, MiB + 8192, true },	/* new clusters 4, 5, 6, then a flush */
	{ 9 * MiB + 100 * 512, 3 * 512, false },	/* a new cluster */
	{ 7 * MiB, 2 * MiB, true },		/* two whole new clusters, then a flush */
	{ 12 * MiB - 3584, 1024, false },	/* the end of the partial last cluster */
};

static bool crash_state_ok(const u8 *got, const u8 *old, u64 size)
{
	u8 want[512];

	for (u64 s = 0; s < size; s += 512) {
		bool okay = !memcmp(got + s, old + s, 512);

		for (size_t i = 0; i < ARRAY_SIZE(crash_ops) && !okay; i++) {
			const struct op *o = &crash_ops[i];

			if (s < o->off || s >= o->off + o->len)
				continue;
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

		fill_pat(buf, o->len, 300 + i, o->off);
		if (ref)
			memcpy(ref + o->off, buf, o->len);
		if (!c)
			continue;
		ret = vdimg_chain_pwrite(c, buf, o->len, o->off);
		if (!ret && o->flush)
			ret = vdimg_chain_flush(c);
	}
	free(buf);
	return ret;
}

static void test_crash(void)
{
	const char *pristine = tpath("crash0.hds"), *work = tpath("crash.hds");
	u64 size = 12 * MiB - 512 * 5;
	u8 *old = malloc(size), *got = malloc(size), *ref = malloc(size);
	int n, runs = 0, bad_open = 0, bad_data = 0;
	struct vdimg_chain *c;
	bool done = false;

	mkprl(pristine, size, NULL, 0);
	open1(&c, pristine, 0);
	fill_pat(old, 4 * MiB, 299, 0);		/* clusters 0..3 allocated */
	memset(old + 4 * MiB, 0, size - 4 * MiB);
	vdimg_chain_pwrite(c, old, 4 * MiB, 0);
	vdimg_chain_close(c);
	for (n = 0; n < 300 && !done; n++) {
		struct vdimg_check_result res = { 0 };
		struct vdimg_image im;
		int fd, ret, inuse;

		copy_file(pristine, work);
		if (open1(&c, work, 0)) {
			bad_open++;
			break;
		}
		vdimg_write_budget = n;
		ret = run_ops(c, NULL);
		ret = vdimg_chain_close(c) ?: ret;
		vdimg_write_budget = -1;
		done = !ret;
		runs++;
		if (open1(&c, work, VDIMG_CHAIN_READ_ONLY)) {
			printf("# budget %d: reopen failed: %s\n", n, ktap_last_msg);
			bad_open++;
			continue;
		}
		if (vdimg_chain_pread(c, got, size, 0) || !crash_state_ok(got, old, size)) {
			printf("# budget %d: bad data after the cut\n", n);
			bad_data++;
		}
		vdimg_chain_close(c);
		/*
		 * only the in-use flag (a warning) and leaks may be wrong, no error; a repair fixes
		 * both and makes it writable again
		 */
		inuse = get32(work, HDR(inuse)) == PRL_INUSE_OPEN;
		if (open_image(&im, work, VDIMG_OPEN_REPAIR, &fd)) {
			bad_open++;
			continue;
		}
		if (prl->check(&im, VDIMG_CHECK_REPAIR, &res) || res.errors ||
		    res.fixed != res.leaks + inuse) {
			printf("# budget %d: check found %llu errors\n", n,
			       (unsigned long long)res.errors);
			bad_data++;
		}
		close_image(&im, fd);
		if (open1(&c, work, 0)) {
			printf("# budget %d: not writable after the repair\n", n);
			bad_data++;
			continue;
		}
		memset(got, 0x5a, 4096);
		if (vdimg_chain_pwrite(c, got, 4096, 10 * MiB) ||
		    vdimg_chain_pread(c, got, 4096, 10 * MiB) || !is_byte(got, 4096, 0x5a)) {
			printf("# budget %d: the image does not take writes after the cut\n", n);
			bad_data++;
		}
		vdimg_chain_close(c);
		if (sh("qemu-img check -q -f parallels '%s' >/dev/null 2>&1", work)) {
			printf("# budget %d: qemu-img check is not clean after the repair\n", n);
			bad_data++;
		}
	}
	ok(done && runs > 5, "crash: the workload completes with enough write budget (%d runs)",
	   runs);
	ok(!bad_open, "crash: every cut image reopens (read-only, then for repair)");
	ok(!bad_data, "crash: every cut image reads only old or written data, repairs clean");
	memcpy(ref, old, size);
	run_ops(NULL, ref);
	copy_file(pristine, work);
	open1(&c, work, 0);
	run_ops(c, NULL);
	vdimg_chain_close(c);
	ok(image_is(work, ref, size), "crash: an uncut run reads the full result");
	qemu_check(work, "crash, uncut");
	free(old);
	free(ref);
	free(got);
}

/* ---- bundles ---- */

#define GUID_A	"{a1b2c3d4-0000-4000-8000-000000000001}"
#define GUID_T	"{5fbaabe3-6958-40ff-92a7-860e329aab41}"

static const char bundle_xml[] =
	"<?xml version='1.0' encoding='UTF-8'?>\n"
	"<!-- written by hand after qemu's docs/interop/prl-xml.txt -->\n"
	"<Parallels_disk_image Version=\"1.0\">\n"
	" <Disk_Parameters>\n"
	"  <Disk_size>32768</Disk_size>\n  <Cylinders>64</Cylinders>\n"
	"  <PhysicalSectorSize>512</PhysicalSectorSize>\n  <Heads>16</Heads>\n"
	"  <Sectors>32</Sectors>\n  <Padding>0</Padding>\n"
	"  <Encryption><Engine>{00000000-0000-0000-0000-000000000000}</Engine><Data></Data></Encryption>\n"
	"  <UID>{8d0b4f3e-1111-4222-8333-944455556666}</UID>\n  <Name>harddisk &amp; co</Name>\n"
	"  <Miscellaneous><CompatLevel>level2</CompatLevel><Bootable>1</Bootable></Miscellaneous>\n"
	" </Disk_Parameters>\n"
	" <StorageData>\n"
	"  <Storage>\n   <Start>0</Start>\n   <End>16384</End>\n   <Blocksize>2048</Blocksize>\n"
	"   <Image><GUID>" GUID_A "</GUID><Type>Compressed</Type><File>hd.0." GUID_A ".hds</File></Image>\n"
	"   <Image><GUID>" GUID_T "</GUID><Type>Compressed</Type><File>hd.0." GUID_T ".hds</File></Image>\n"
	"  </Storage>\n"
	"  <Storage>\n   <Start>16384</Start>\n   <End>32768</End>\n   <Blocksize>2048</Blocksize>\n"
	"   <Image><GUID>" GUID_A "</GUID><Type>Compressed</Type><File>hd.1." GUID_A ".hds</File></Image>\n"
	"   <Image><GUID>" GUID_T "</GUID><Type>Compressed</Type><File>hd.1." GUID_T ".hds</File></Image>\n"
	"  </Storage>\n"
	" </StorageData>\n"
	" <Snapshots>\n"
	"  <Shot><GUID>" GUID_A "</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>\n"
	"  <Shot><GUID>" GUID_T "</GUID><ParentGUID>" GUID_A "</ParentGUID></Shot>\n"
	" </Snapshots>\n"
	"</Parallels_disk_image>\n";

/* a split storage (two 8 MiB parts) with two snapshots: base 0x11/0x22, top writes 0x33/0x44 */
static bool make_bundle(const char *dir, u8 *ref)
{
	static const char *parts[4] = { "hd.0." GUID_A ".hds", "hd.1." GUID_A ".hds",
					"hd.0." GUID_T ".hds", "hd.1." GUID_T ".hds" };
	char path[1024];

	sh("rm -rf '%s' && mkdir -p '%s'", dir, dir);
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, parts[i]);
		if (mkprl(path, 8 * MiB, NULL, 0))
			return false;
	}
	snprintf(path, sizeof(path), "%s/DiskDescriptor.xml", dir);
	put_file(path, bundle_xml, strlen(bundle_xml));
	if (sh("cd '%s' && qemu-io -f parallels -c 'write -P 0x11 0 8M' '%s' >/dev/null && "
	       "qemu-io -f parallels -c 'write -P 0x22 0 8M' '%s' >/dev/null && "
	       "qemu-io -f parallels -c 'write -P 0x33 1M 1M' '%s' >/dev/null && "
	       "qemu-io -f parallels -c 'write -P 0x44 6M 2M' '%s' >/dev/null",
	       dir, parts[0], parts[1], parts[2], parts[3]))
		return false;
	memset(ref, 0x11, 8 * MiB);
	memset(ref + 8 * MiB, 0x22, 8 * MiB);
	memset(ref + MiB, 0x33, MiB);
	memset(ref + 14 * MiB, 0x44, 2 * MiB);
	return true;
}

/* open the chain @path (a bundle or an image in one) resolves to */
static int open_bundle(struct vdimg_chain **c, const char *path, unsigned int flags, int *depth)
{
	char *top = NULL, **paths = NULL;
	u32 *formats = NULL;
	int n = 0, ret;

	ret = vdimg_parallels_bundle_top(path, &top);
	if (ret == -ENOENT)
		top = strdup(path);
	else if (ret)
		return ret;
	ret = vdimg_chain_resolve(top, VDIMG_FMT_AUTO, &paths, &formats, &n);
	if (!ret)
		ret = vdimg_chain_open(c, (const char *const *)paths, n, formats, flags);
	*depth = n;
	vdimg_chain_resolve_free(paths, formats, n);
	free(top);
	return ret;
}

static u8 *sha_file(const char *path, u64 *len)
{
	return read_all(path, len);
}

static void test_bundle(void)
{
	const char *dir = tpath("disk.hdd"), *moved = tpath("renamed.pvm.disk");
	u64 size = 16 * MiB, n0, n1;
	u8 *ref = malloc(size), *base0, *base1, *now;
	struct vdimg_chain *c;
	char path[1024], *top = NULL;
	int depth = 0;

	if (!ok(make_bundle(dir, ref), "bundle: made by hand (split storage, two snapshots)"))
		return;
	ok(!vdimg_parallels_bundle_top(dir, &top) && strstr(top, "/hd.0." GUID_T ".hds"),
	   "bundle: the directory names its top snapshot's first part");
	free(top);
	snprintf(path, sizeof(path), "%s/DiskDescriptor.xml", dir);
	ok(!vdimg_parallels_bundle_top(path, &top) && strstr(top, "/hd.0." GUID_T ".hds"),
	   "bundle: so does its DiskDescriptor.xml");
	free(top);
	snprintf(path, sizeof(path), "%s/hd.0." GUID_A ".hds", dir);
	ok_err(vdimg_parallels_bundle_top(path, &top), -ENOENT, "bundle: an image file is not a bundle");

	if (ok_err(open_bundle(&c, dir, VDIMG_CHAIN_READ_ONLY, &depth), 0, "bundle: opens")) {
		ok(depth == 2 && c->size == size, "bundle: two layers of 16 MiB (depth %d)", depth);
		ok(chain_is(c, ref, size), "bundle: reads the top over the base across both parts");
		vdimg_chain_close(c);
	}
	snprintf(path, sizeof(path), "%s/hd.0." GUID_A ".hds", dir);
	base0 = sha_file(path, &n0);
	snprintf(path, sizeof(path), "%s/hd.1." GUID_A ".hds", dir);
	base1 = sha_file(path, &n1);
	if (ok_err(open_bundle(&c, dir, 0, &depth), 0, "bundle: opens writable")) {
		u8 *buf = malloc(MiB);

		fill_pat(buf, MiB, 61, 7 * MiB + MiB / 2);
		memcpy(ref + 7 * MiB + MiB / 2, buf, MiB);
		ok(!vdimg_chain_pwrite(c, buf, MiB, 7 * MiB + MiB / 2),
		   "bundle: a write across the part boundary");
		ok(chain_is(c, ref, size), "bundle: reads it back");
		ok_err(vdimg_chain_close(c), 0, "bundle: close");
		free(buf);
	}
	now = sha_file(path, &n1);
	ok(!memcmp(now, base1, n1), "bundle: the base snapshot's second part is unchanged");
	free(now);
	snprintf(path, sizeof(path), "%s/hd.0." GUID_A ".hds", dir);
	now = sha_file(path, &n0);
	ok(!memcmp(now, base0, n0), "bundle: the base snapshot's first part is unchanged");
	free(now);
	free(base0);
	free(base1);
	for (int k = 0; k < 2; k++) {
		snprintf(path, sizeof(path), "%s/hd.%d." GUID_T ".hds", dir, k);
		qemu_check(path, k ? "bundle top, part 2" : "bundle top, part 1");
	}
	/* qemu reads each part of the top: what we wrote on either side of the boundary */
	ok(sh("cd '%s' && qemu-io -r -f parallels -c 'read -P 0x33 1M 1M' 'hd.0." GUID_T ".hds' | grep -q 'read 1048576/1048576' && "
	      "qemu-io -r -f parallels -c 'read -P 0x44 6M 2M' 'hd.1." GUID_T ".hds' | grep -q 'read 2097152/2097152'",
	      dir) == 0, "bundle: qemu reads the top's parts");

	/* a renamed bundle directory still works: nothing depends on its name */
	sh("rm -rf '%s' && mv '%s' '%s'", moved, dir, moved);
	if (ok_err(open_bundle(&c, moved, VDIMG_CHAIN_READ_ONLY, &depth), 0, "bundle: renamed, opens")) {
		ok(depth == 2 && chain_is(c, ref, size), "bundle: renamed, reads the same");
		vdimg_chain_close(c);
	}
	/* the top's first part on its own resolves the same chain (its directory's descriptor) */
	snprintf(path, sizeof(path), "%s/hd.0." GUID_T ".hds", moved);
	if (ok_err(open_bundle(&c, path, VDIMG_CHAIN_READ_ONLY, &depth), 0,
		   "bundle: the top's file opens with its parts and parent")) {
		ok(depth == 2 && chain_is(c, ref, size), "bundle: the top's file reads the whole disk");
		vdimg_chain_close(c);
	}
	/* a part whose size disagrees with the descriptor's range */
	snprintf(path, sizeof(path), "%s/DiskDescriptor.xml", moved);
	sh("sed -i 's|<End>16384</End>|<End>8192</End>|; s|<Start>16384</Start>|<Start>8192</Start>|' '%s'",
	   path);
	ok(open_bundle(&c, moved, VDIMG_CHAIN_READ_ONLY, &depth) == -EUCLEAN,
	   "bundle: parts whose sizes disagree with the descriptor's ranges are refused");
	free(ref);
}

/* a plain (raw) root under an expanding snapshot, one storage */
static void test_bundle_plain(void)
{
	const char *dir = tpath("plain.hdd");
	char path[1024], xml[4096];
	u64 size = 8 * MiB;
	u8 *ref = malloc(size);
	struct vdimg_chain *c;
	int depth = 0;

	sh("rm -rf '%s' && mkdir -p '%s'", dir, dir);
	fill_pat(ref, size, 81, 0);
	snprintf(path, sizeof(path), "%s/hd.raw", dir);
	put_file(path, ref, size);
	snprintf(path, sizeof(path), "%s/hd.top.hds", dir);
	mkprl(path, size, NULL, 0);
	sh("qemu-io -f parallels -c 'write -P 0x5e 3M 64k' '%s' >/dev/null", path);
	/* qemu-io, knowing no parent, allocated the whole cluster: zeros around its write */
	memset(ref + 3 * MiB, 0, MiB);
	memset(ref + 3 * MiB, 0x5e, 64 * KiB);
	snprintf(xml, sizeof(xml),
		 "<Parallels_disk_image Version='1.0'><Disk_Parameters><Disk_size>16384</Disk_size>"
		 "</Disk_Parameters><StorageData><Storage><Start>0</Start><End>16384</End>"
		 "<Image><GUID>" GUID_A "</GUID><Type>Plain</Type><File>hd.raw</File></Image>"
		 "<Image><GUID>" GUID_T "</GUID><Type>Compressed</Type><File>hd.top.hds</File></Image>"
		 "</Storage></StorageData><Snapshots>"
		 "<Shot><GUID>" GUID_A "</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>"
		 "<Shot><GUID>" GUID_T "</GUID><ParentGUID>" GUID_A "</ParentGUID></Shot>"
		 "</Snapshots></Parallels_disk_image>");
	snprintf(path, sizeof(path), "%s/DiskDescriptor.xml", dir);
	put_file(path, xml, strlen(xml));
	if (ok_err(open_bundle(&c, dir, VDIMG_CHAIN_READ_ONLY, &depth), 0,
		   "bundle, plain root: opens")) {
		ok(depth == 2 && !strcmp(c->layers[0]->fmt->name, "raw") && chain_is(c, ref, size),
		   "bundle, plain root: a raw base under the snapshot, read through");
		vdimg_chain_close(c);
	}
	free(ref);
}

/* malformed or hostile descriptors, each refused with a message */
static void test_bundle_hostile(void)
{
	static const struct { const char *what, *sed; int want; } cases[] = {
		{ "a DTD with an entity", "1a <!DOCTYPE x [<!ENTITY big \"aaaa\">]>", -EOPNOTSUPP },
		{ "an undefined entity", "s|<Name>harddisk|<Name>\\&big;|", -EOPNOTSUPP },
		{ "a CDATA section", "s|<Name>|<Name><![CDATA[x]]>|", -EOPNOTSUPP },
		{ "a mismatched closing tag", "s|</Heads>|</Head>|", -EUCLEAN },
		{ "an unterminated document", "$d", -EUCLEAN },
		{ "a second root element", "$a <x/>", -EUCLEAN },
		{ "another root element", "s|Parallels_disk_image|Disk_image|g", -EUCLEAN },
		{ "version 2.0", "s|Version=\"1.0\"|Version=\"2.0\"|", -EOPNOTSUPP },
		{ "padding 1", "s|<Padding>0|<Padding>1|", -EOPNOTSUPP },
		{ "an encrypted disk", "s|<Engine>{00000000|<Engine>{10000000|", -EOPNOTSUPP },
		{ "storages with a gap", "s|<Start>16384|<Start>16000|", -EUCLEAN },
		{ "storages short of the disk", "s|<Disk_size>32768|<Disk_size>40000|", -EUCLEAN },
		{ "a plain (raw) image in a split storage", "0,/Compressed/s|Compressed|Plain|", -EOPNOTSUPP },
		{ "an unknown image type", "0,/Compressed/s|Compressed|Fancy|", -EOPNOTSUPP },
		{ "a file outside the bundle", "s|<File>hd.1." GUID_T "|<File>../hd.1." GUID_T "|", -EPERM },
		{ "an absolute file name", "s|<File>hd.1." GUID_T "|<File>/etc/hd.1." GUID_T "|", -EPERM },
		{ "a snapshot missing from a storage", "0,/<Image><GUID>" GUID_T "/s|<Image><GUID>" GUID_T "|<Image><GUID>{11111111-2222-3333-4444-555555555555}|", -EUCLEAN },
		{ "a snapshot loop", "s|<ParentGUID>{00000000-0000-0000-0000-000000000000}|<ParentGUID>" GUID_T "|", -EUCLEAN },
		{ "a malformed GUID", "s|<ParentGUID>" GUID_A "|<ParentGUID>{zz}|", -EUCLEAN },
		{ "a top with no shot", "s|<Snapshots>|<Snapshots><TopGUID>{99999999-2222-3333-4444-555555555555}</TopGUID>|", -EUCLEAN },
		{ "a non-numeric End", "s|<End>32768|<End>lots|", -EUCLEAN },
		{ "a NUL byte", "s|harddisk|hard\\x00disk|", -EUCLEAN },
	};
	const char *dir = tpath("h.hdd");
	char xml[1024];
	char *top;
	int ret;

	snprintf(xml, sizeof(xml), "%s/DiskDescriptor.xml", dir);
	sh("mkdir -p '%s'", dir);
	put_file(xml, bundle_xml, strlen(bundle_xml));
	ret = vdimg_parallels_bundle_top(dir, &top);
	if (ok_err(ret, 0, "descriptor: the good one parses"))
		free(top);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		put_file(xml, bundle_xml, strlen(bundle_xml));
		if (sh("sed -i -e '%s' '%s'", cases[i].sed, xml)) {
			ok(false, "descriptor: %s: sed", cases[i].what);
			continue;
		}
		top = NULL;
		ret = vdimg_parallels_bundle_top(dir, &top);
		ok_err(ret, cases[i].want, "descriptor: %s refused", cases[i].what);
		free(top);
	}
	/* nesting beyond the bound, and a file beyond the size limit */
	{
		FILE *f = fopen(xml, "w");

		fputs("<Parallels_disk_image>", f);
		for (int i = 0; i < 40; i++)
			fputs("<a>", f);
		for (int i = 0; i < 40; i++)
			fputs("</a>", f);
		fputs("</Parallels_disk_image>", f);
		fclose(f);
		ok_err(vdimg_parallels_bundle_top(dir, &top), -EOPNOTSUPP,
		       "descriptor: elements nested 40 deep refused");
		sh("truncate -s 2M '%s'", xml);
		ok_err(vdimg_parallels_bundle_top(dir, &top), -EFBIG,
		       "descriptor: a 2 MiB descriptor refused");
	}
}

/* ---- discard ---- */

static u64 blocks_of(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (u64)st.st_blocks;
}

static u32 bat_at(const char *path, u32 i)
{
	return get32(path, PRL_HEADER_SIZE + (u64)i * 4);
}

/* every cluster of @path written with pattern @seed, in order (cluster i at file cluster i + 1) */
static bool make_full(const char *path, u8 *ref, u64 size, int seed)
{
	struct vdimg_chain *c;
	bool good;

	if (mkprl(path, size, NULL, 0) || open1(&c, path, 0))
		return false;
	fill_pat(ref, size, seed, 0);
	good = !vdimg_chain_pwrite(c, ref, size, 0);
	return !vdimg_chain_close(c) && good;
}

static void test_discard(void)
{
	const char *img = tpath("disc.hds"), *raw = tpath("disc.raw");
	u64 size = 12 * MiB - 2560, b0, b1;	/* the last cluster is partial */
	u8 *ref = malloc(size), *buf = malloc(2 * MiB);
	struct vdimg_image *top;
	struct vdimg_chain *c;

	if (!ok(make_full(img, ref, size, 71), "discard: a 12 MiB image, every cluster written"))
		goto out;
	ok(bat_at(img, 3) == 4 && bat_at(img, 11) == 12, "discard: clusters allocated in order");
	if (!ok_err(open1(&c, img, 0), 0, "discard: opens writable"))
		goto out;
	b0 = blocks_of(img);
	ok_err(vdimg_chain_discard(c, 3 * MiB, 3 * MiB, 0), 0, "discard: clusters 3..5");
	memset(ref + 3 * MiB, 0, 3 * MiB);
	ok(chain_is(c, ref, size), "discard: the whole clusters read zeros, the rest intact");
	ok(!bat_at(img, 3) && !bat_at(img, 4) && !bat_at(img, 5) && bat_at(img, 6) == 7 &&
	   bat_at(img, 2) == 3, "discard: their BAT entries are 0 on disk at once, no others");
	b1 = blocks_of(img);
	/* a split extent may cost the file system a block of metadata */
	ok(b0 > b1 && b0 - b1 >= (3 * MiB - 64 * KiB) / 512,
	   "discard: 3 MiB given back to the file system (%llu -> %llu blocks)",
	   (unsigned long long)b0, (unsigned long long)b1);
	ok_err(vdimg_chain_discard(c, 7 * MiB + 4096, 8192, 0), 0, "discard: 8 KiB inside cluster 7");
	memset(ref + 7 * MiB + 4096, 0, 8192);
	ok(chain_is(c, ref, size) && bat_at(img, 7) == 8,
	   "discard: partial: only the range reads zeros, the cluster stays allocated");
	ok_err(vdimg_chain_discard(c, 8 * MiB, MiB, VDIMG_DISCARD_ZEROES), 0,
	       "discard: write-zeroes of the whole cluster 8");
	memset(ref + 8 * MiB, 0, MiB);
	ok(chain_is(c, ref, size) && bat_at(img, 8) == 9,
	   "discard: write-zeroes reads zeros and keeps the cluster (it may be a snapshot's)");
	top = vdimg_chain_top(c);
	ok_err(top->fmt->discard(top, 9 * MiB + 512, 4096,
				 VDIMG_DISCARD_ZEROES | VDIMG_DISCARD_NOUNMAP), 0,
	       "discard: NOUNMAP inside cluster 9");
	memset(ref + 9 * MiB + 512, 0, 4096);
	ok(chain_is(c, ref, size) && bat_at(img, 9) == 10, "discard: NOUNMAP zeroes in place");
	ok_err(top->fmt->discard(top, 4 * MiB, 4096, VDIMG_DISCARD_ZEROES | VDIMG_DISCARD_NOUNMAP),
	       -EOPNOTSUPP, "discard: NOUNMAP of an unallocated cluster is left to the write path");
	ok_err(top->fmt->discard(top, 4 * MiB, 4096, VDIMG_DISCARD_ZEROES), -EOPNOTSUPP,
	       "discard: so is write-zeroes of one (it might show a parent)");
	ok_err(top->fmt->discard(top, 0, 512, 1U << 7), -EINVAL, "discard: unknown flags refused");
	ok_err(top->fmt->discard(top, size - 512, 1024, 0), -EINVAL,
	       "discard: a range past the end refused");
	ok_err(vdimg_chain_discard(c, 11 * MiB, size - 11 * MiB, 0), 0,
	       "discard: the partial last cluster, whole");
	memset(ref + 11 * MiB, 0, size - 11 * MiB);
	ok(chain_is(c, ref, size) && !bat_at(img, 11), "discard: it reads zeros, unmapped");
	ok_err(vdimg_chain_close(c), 0, "discard: close");
	ok(fsize(img) == 12 * MiB, "discard: the close trimmed the freed last cluster (%llu bytes)",
	   (unsigned long long)fsize(img));
	ok(get32(img, HDR(inuse)) == PRL_INUSE_CLOSED, "discard: closed cleanly");
	ok(image_is(img, ref, size), "discard: reopened, reads the same");
	put_file(raw, ref, size);
	qemu_check(img, "discard");
	qemu_compare(img, raw, "discard");

	/* freed clusters below the end: trimmed too once the last one goes */
	if (ok_err(open1(&c, img, 0), 0, "discard: reopens writable")) {
		ok(!vdimg_chain_discard(c, 9 * MiB, MiB, 0) &&
		   !vdimg_chain_discard(c, 10 * MiB, MiB, 0),
		   "discard: clusters 9, then 10 (now the last)");
		memset(ref + 9 * MiB, 0, 2 * MiB);
		fill_pat(buf, MiB, 72, 4 * MiB);
		memcpy(ref + 4 * MiB, buf, MiB);
		ok(!vdimg_chain_pwrite(c, buf, MiB, 4 * MiB),
		   "discard: a write to freed cluster 4");
		ok(bat_at(img, 4) == 0, "discard: its entry waits for the flush");
		ok(chain_is(c, ref, size), "discard: reads back");
		ok_err(vdimg_chain_close(c), 0, "discard: close");
		ok(bat_at(img, 4) == 12,
		   "discard: a freed cluster is not reused while open: cluster 4 appended");
		ok(fsize(img) == 13 * MiB, "discard: nothing to trim after it (%llu bytes)",
		   (unsigned long long)fsize(img));
		ok(image_is(img, ref, size), "discard: reopened, reads the same");
		put_file(raw, ref, size);
		qemu_check(img, "discard, reuse");
		qemu_compare(img, raw, "discard, reuse");
	}
	if (ok_err(open1(&c, img, 0), 0, "discard: reopens writable again")) {
		ok(!vdimg_chain_discard(c, 4 * MiB, MiB, 0), "discard: the appended cluster 4");
		memset(ref + 4 * MiB, 0, MiB);
		ok_err(vdimg_chain_close(c), 0, "discard: close");
		ok(fsize(img) == 10 * MiB,
		   "discard: trimmed to the highest cluster still used (8 at 9 MiB): %llu bytes",
		   (unsigned long long)fsize(img));
		ok(image_is(img, ref, size), "discard: reopened, reads the same");
		put_file(raw, ref, size);
		qemu_check(img, "discard, trim below holes");
		qemu_compare(img, raw, "discard, trim below holes");
	}

	/* a preallocated image is one with every cluster allocated: unmapped the same */
	ok_err(mkprl(img, 4 * MiB, "plain", 0), 0, "discard: a preallocated image");
	if (ok_err(open1(&c, img, 0), 0, "discard preallocated: opens")) {
		fill_pat(ref, 4 * MiB, 73, 0);
		ok(!vdimg_chain_pwrite(c, ref, 4 * MiB, 0), "discard preallocated: written");
		ok(!vdimg_chain_discard(c, MiB, 2 * MiB, 0), "discard preallocated: clusters 1..2");
		memset(ref + MiB, 0, 2 * MiB);
		ok(chain_is(c, ref, 4 * MiB) && !bat_at(img, 1) && !bat_at(img, 2) &&
		   bat_at(img, 3),
		   "discard preallocated: zeros, the entries 0");
		ok(vdimg_chain_top(c)->alloc_unit == MiB,
		   "discard preallocated: opened writable, it allocates in clusters");
		fill_pat(buf, 4096, 74, MiB);
		memcpy(ref + MiB, buf, 4096);
		ok(!vdimg_chain_pwrite(c, buf, 4096, MiB) && chain_is(c, ref, 4 * MiB),
		   "discard preallocated: a freed cluster written again");
		ok_err(vdimg_chain_close(c), 0, "discard preallocated: close");
		ok(image_is(img, ref, 4 * MiB), "discard preallocated: reopened, reads the same");
		put_file(raw, ref, 4 * MiB);
		qemu_check(img, "discard preallocated");
		qemu_compare(img, raw, "discard preallocated");
	}
out:
	free(ref);
	free(buf);
}

/* a snapshot in a bundle: discarded ranges read zeros, never the base again */
static void test_discard_bundle(void)
{
	const char *dir = tpath("dbundle.hdd");
	u64 size = 16 * MiB, n0, n1;
	u8 *ref = malloc(size), *base0, *base1, *now;
	struct vdimg_chain *c;
	char path[1024];
	int depth = 0;

	if (!ok(make_bundle(dir, ref), "discard bundle: made"))
		goto out;
	snprintf(path, sizeof(path), "%s/hd.0." GUID_A ".hds", dir);
	base0 = read_all(path, &n0);
	snprintf(path, sizeof(path), "%s/hd.1." GUID_A ".hds", dir);
	base1 = read_all(path, &n1);
	if (ok_err(open_bundle(&c, dir, 0, &depth), 0, "discard bundle: opens writable")) {
		/* top part 0: 1..2 MiB allocated (0x33), 2..4 MiB only in the base (0x11) */
		ok_err(vdimg_chain_discard(c, MiB, 3 * MiB, 0), 0,
		       "discard bundle: 1..4 MiB (the top's cluster and the base's)");
		memset(ref + MiB, 0, 3 * MiB);
		ok(chain_is(c, ref, size), "discard bundle: reads zeros, the base stays hidden");
		ok_err(vdimg_chain_flush(c), 0, "discard bundle: flush");
		snprintf(path, sizeof(path), "%s/hd.0." GUID_T ".hds", dir);
		ok(bat_at(path, 1) && bat_at(path, 2) && bat_at(path, 3),
		   "discard bundle: the top holds the zeroed clusters (unmapping would show the base)");
		/* across the part boundary, partial clusters on both sides */
		ok_err(vdimg_chain_discard(c, 7 * MiB + 4096, MiB, 0), 0,
		       "discard bundle: a range across the part boundary");
		memset(ref + 7 * MiB + 4096, 0, MiB);
		ok(chain_is(c, ref, size), "discard bundle: reads zeros there too");
		ok_err(vdimg_chain_close(c), 0, "discard bundle: close");
	}
	snprintf(path, sizeof(path), "%s/hd.0." GUID_A ".hds", dir);
	now = read_all(path, &n0);
	ok(!memcmp(now, base0, n0), "discard bundle: the base's first part is unchanged");
	free(now);
	snprintf(path, sizeof(path), "%s/hd.1." GUID_A ".hds", dir);
	now = read_all(path, &n1);
	ok(!memcmp(now, base1, n1), "discard bundle: the base's second part is unchanged");
	free(now);
	free(base0);
	free(base1);
	if (ok_err(open_bundle(&c, dir, VDIMG_CHAIN_READ_ONLY, &depth), 0,
		   "discard bundle: reopens")) {
		ok(chain_is(c, ref, size), "discard bundle: reads the same after a reopen");
		vdimg_chain_close(c);
	}
	for (int k = 0; k < 2; k++) {
		snprintf(path, sizeof(path), "%s/hd.%d." GUID_T ".hds", dir, k);
		qemu_check(path, k ? "discard bundle top, part 2" : "discard bundle top, part 1");
	}
out:
	free(ref);
}

/* crash cuts around discards: whole clusters, a partial one, the last one, a write, flushes */
struct dop {
	u64 off, len;
	bool write, flush;
};

static const struct dop dcrash_ops[] = {
	{ 2 * MiB, 2 * MiB, false, false },		/* unmap clusters 2, 3 */
	{ 5 * MiB + 8192, 4096, false, true },		/* zero inside cluster 5, flush */
	{ 7 * MiB, MiB, false, false },			/* unmap the last cluster */
	{ 2 * MiB + 512, 4096, true, true },		/* a new cluster 2 */
	{ 6 * MiB, MiB, false, false },			/* unmap cluster 6 */
	{ 2 * MiB, MiB, false, false },			/* unmap the new cluster 2, the last */
};

static bool dcrash_state_ok(const u8 *got, const u8 *old, u64 size)
{
	u8 want[512];

	for (u64 s = 0; s < size; s += 512) {
		bool okay = !memcmp(got + s, old + s, 512);

		for (size_t i = 0; i < ARRAY_SIZE(dcrash_ops) && !okay; i++) {
			const struct dop *o = &dcrash_ops[i];

			if (s < o->off || s >= o->off + o->len)
				continue;
			if (o->write)
				fill_pat(want, 512, 400 + i, s);
			else
				memset(want, 0, 512);
			okay = !memcmp(got + s, want, 512);
		}
		/* a discarded cluster later written: zeros around the write */
		if (!okay && s >= 2 * MiB && s < 3 * MiB)
			okay = is_byte(got + s, 512, 0);
		if (!okay) {
			printf("# sector at %llu holds neither old, zeroed nor written data\n",
			       (unsigned long long)s);
			return false;
		}
	}
	return true;
}

static int run_dops(struct vdimg_chain *c, u8 *ref)
{
	u8 *buf = malloc(2 * MiB);
	int ret = 0;

	for (size_t i = 0; i < ARRAY_SIZE(dcrash_ops) && !ret; i++) {
		const struct dop *o = &dcrash_ops[i];

		if (o->write)
			fill_pat(buf, o->len, 400 + i, o->off);
		else
			memset(buf, 0, o->len);
		if (ref)
			memcpy(ref + o->off, buf, o->len);
		if (!c)
			continue;
		if (o->write)
			ret = vdimg_chain_pwrite(c, buf, o->len, o->off);
		else
			ret = vdimg_chain_discard(c, o->off, o->len, 0);
		if (!ret && o->flush)
			ret = vdimg_chain_flush(c);
	}
	free(buf);
	return ret;
}

static void test_discard_crash(void)
{
	const char *pristine = tpath("dcrash0.hds"), *work = tpath("dcrash.hds");
	const char *raw = tpath("dcrash.raw");
	u64 size = 8 * MiB;
	u8 *old = malloc(size), *got = malloc(size), *ref = malloc(size);
	int n, runs = 0, bad_open = 0, bad_data = 0;
	struct vdimg_chain *c;
	bool done = false;

	if (!ok(make_full(pristine, old, size, 399), "discard crash: 8 clusters written"))
		goto out;
	for (n = 0; n < 200 && !done; n++) {
		struct vdimg_check_result res = { 0 };
		struct vdimg_image im;
		int fd, ret, inuse;

		copy_file(pristine, work);
		if (open1(&c, work, 0)) {
			bad_open++;
			break;
		}
		vdimg_write_budget = n;
		ret = run_dops(c, NULL);
		ret = vdimg_chain_close(c) ?: ret;
		vdimg_write_budget = -1;
		done = !ret;
		runs++;
		if (open1(&c, work, VDIMG_CHAIN_READ_ONLY)) {
			printf("# budget %d: reopen failed: %s\n", n, ktap_last_msg);
			bad_open++;
			continue;
		}
		if (vdimg_chain_pread(c, got, size, 0) || !dcrash_state_ok(got, old, size)) {
			printf("# budget %d: bad data after the cut\n", n);
			bad_data++;
		}
		vdimg_chain_close(c);
		inuse = get32(work, HDR(inuse)) == PRL_INUSE_OPEN;
		if (open_image(&im, work, VDIMG_OPEN_REPAIR, &fd)) {
			bad_open++;
			continue;
		}
		if (prl->check(&im, VDIMG_CHECK_REPAIR, &res) || res.errors ||
		    res.fixed != res.leaks + inuse) {
			printf("# budget %d: check found %llu errors\n", n,
			       (unsigned long long)res.errors);
			bad_data++;
		}
		close_image(&im, fd);
		if (sh("qemu-img check -q -f parallels '%s' >/dev/null 2>&1", work)) {
			printf("# budget %d: qemu-img check is not clean after the repair\n", n);
			bad_data++;
		}
	}
	ok(done && runs > 5,
	   "discard crash: the workload completes with enough write budget (%d runs)", runs);
	ok(!bad_open, "discard crash: every cut image reopens (read-only, then for repair)");
	ok(!bad_data,
	   "discard crash: every cut image reads old, zeroed or written data, repairs clean");
	memcpy(ref, old, size);
	run_dops(NULL, ref);
	copy_file(pristine, work);
	open1(&c, work, 0);
	run_dops(c, NULL);
	vdimg_chain_close(c);
	ok(image_is(work, ref, size), "discard crash: an uncut run reads the full result");
	ok(fsize(work) == 7 * MiB,
	   "discard crash: an uncut run trims the file after cluster 5 (%llu bytes)",
	   (unsigned long long)fsize(work));
	put_file(raw, ref, size);
	qemu_check(work, "discard crash, uncut");
	qemu_compare(work, raw, "discard crash, uncut");
out:
	free(old);
	free(ref);
	free(got);
}

int main(void)
{
	ktap_start();
	lcg_state = 4242;
	if (sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		skip("qemu-img/qemu-io not installed");
		return ktap_finish();
	}
	samples = getenv("VDIMG_SAMPLES") ? getenv("VDIMG_SAMPLES") : "/var/cache/vdimg/samples";
	test_samples();
	test_qemu_images();
	test_create();
	test_large();
	test_inuse();
	test_hostile();
	test_repair();
	test_crash();
	test_bundle();
	test_bundle_plain();
	test_bundle_hostile();
	test_discard();
	test_discard_bundle();
	test_discard_crash();
	return ktap_finish();
}
