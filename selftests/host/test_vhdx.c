// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the VHDX backend (backends/vhdx/) through the userspace chain layer: the sample
 * images in $VDIMG_SAMPLES (set by make check-host, see selftests/samples.sh: contents by sha256
 * and pattern, the 0xc3 write test, the dirty log replayed into the file and, read-only, into
 * memory), qemu interop both ways (images qemu-img makes and qemu-io fills read back as `qemu-img
 * convert -O raw` does; images written here pass `qemu-img check` and `qemu-img compare` against a
 * raw shadow), libyal vhdiinfo/vhdimount as a second reader (including a differencing chain made
 * here), differencing writes that never touch the parent, parent linkage checks, hostile headers,
 * and crash safety with the write-cut hook. KTAP on stdout.
 */
#include <pthread.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include "../../backends/vhdx/vhdx.h"
#include "format_test.h"

#define MiB (1ULL << 20)
#define KiB 1024ULL

static const char *samples;
static bool have_qemu, have_vhdiinfo, have_vhdimount;

static int xopen(struct vdimg_chain **c, int fd, const char *name, unsigned int flags)
{
	const struct vdimg_format *ops[1] = { &vdimg_vhdx_format };

	return vdimg_chain_open_ops(c, &fd, &name, 1, ops, flags);
}

static int xopen2(struct vdimg_chain **c, int base, int top, unsigned int flags)
{
	const struct vdimg_format *ops[2] = { &vdimg_vhdx_format, &vdimg_vhdx_format };
	const char *names[2] = { "base.vhdx", "child.vhdx" };
	int fds[2] = { base, top };

	return vdimg_chain_open_ops(c, fds, names, 2, ops, flags);
}

static int img_open(struct vdimg_image *img, int fd, const char *name, unsigned int flags)
{
	return img_open_with(img, &vdimg_vhdx_format, fd, name, flags);
}

static int xcreate(const char *name, u64 size, const char *variant, u32 bs, u32 lbs,
		   const char *parent_path, struct vdimg_image *parent)
{
	struct vdimg_create_opts o = { .size = size, .variant = variant, .block_size = bs,
				       .lbs = lbs, .parent = parent_path, .parent_img = parent };
	int fd = tfile(name, NULL, 0);
	struct vdimg_file *f = vdimg_file_from_fd(fd);
	int ret = vdimg_vhdx_tool_ops.create(f, &o);

	vdimg_file_free(f);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

/* Read the whole chain and compare with a raw file. */
static bool chain_equals_file(struct vdimg_chain *c, const char *raw)
{
	int fd = open(raw, O_RDONLY | O_CLOEXEC);
	u8 *a = malloc(4 * MiB), *b = malloc(4 * MiB);
	bool same = fd >= 0;
	u64 off;

	for (off = 0; same && off < c->size; off += 4 * MiB) {
		size_t n = min_t(u64, 4 * MiB, c->size - off);
		ssize_t r = pread(fd, b, n, off);

		if (r < 0)
			r = 0;
		memset(b + r, 0, n - r);
		if (vdimg_chain_pread(c, a, n, off) || memcmp(a, b, n)) {
			printf("# differs in [%llu, +%zu)\n", (unsigned long long)off, n);
			same = false;
		}
	}
	if (fd >= 0)
		close(fd);
	free(a);
	free(b);
	return same;
}

static bool chain_sha256(struct vdimg_chain *c, char *out)
{
	char cmd[600];
	u8 *a = malloc(4 * MiB);
	FILE *p;
	u64 off;
	bool good = true;

	snprintf(cmd, sizeof(cmd), "sha256sum > %s", tpath("sha.txt"));
	p = popen(cmd, "w");
	for (off = 0; good && off < c->size; off += 4 * MiB) {
		size_t n = min_t(u64, 4 * MiB, c->size - off);

		good = !vdimg_chain_pread(c, a, n, off) && fwrite(a, 1, n, p) == n;
	}
	free(a);
	if (pclose(p))
		good = false;
	p = fopen(tpath("sha.txt"), "r");
	if (!p || fscanf(p, "%64s", out) != 1)
		good = false;
	if (p)
		fclose(p);
	return good;
}

static bool range_is(struct vdimg_chain *c, u64 off, u64 len, u8 b)
{
	u8 *buf = malloc(MiB);
	bool good = true;

	while (good && len) {
		size_t n = min_t(u64, len, MiB);

		good = !vdimg_chain_pread(c, buf, n, off) && is_byte(buf, n, b);
		off += n;
		len -= n;
	}
	free(buf);
	return good;
}

static bool write_byte(struct vdimg_chain *c, u64 off, u64 len, u8 b)
{
	u8 *buf = malloc(MiB);
	bool good = true;

	memset(buf, b, MiB);
	while (good && len) {
		size_t n = min_t(u64, len, MiB);

		good = !vdimg_chain_pwrite(c, buf, n, off);
		off += n;
		len -= n;
	}
	free(buf);
	return good;
}

/* Decompress a sample into the scratch directory; false if it is missing. */
static bool sample(const char *file, const char *out)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s.bz2", samples, file);
	if (access(path, R_OK))
		return false;
	return !sh("bzcat '%s' > '%s'", path, tpath(out));
}

/* Two chains of the same size read alike: DATA compared byte for byte, the rest must read zeros. */
static bool chains_same(struct vdimg_chain *a, struct vdimg_chain *b)
{
	struct vdimg_image *ia = vdimg_chain_top(a), *ib = vdimg_chain_top(b);
	u8 *x = malloc(4 * MiB), *y = malloc(4 * MiB);
	u64 off = 0;
	bool good = a->size == b->size;

	while (good && off < a->size) {
		struct vdimg_extent ea, eb;
		u64 n;

		good = !ia->fmt->map(ia, off, a->size - off, 0, &ea) &&
		       !ib->fmt->map(ib, off, b->size - off, 0, &eb);
		if (!good)
			break;
		n = min(min(ea.length, eb.length), 4 * MiB);
		if (ea.type == VDIMG_EXT_DATA || eb.type == VDIMG_EXT_DATA)
			good = !vdimg_chain_pread(a, x, n, off) && !vdimg_chain_pread(b, y, n, off) &&
			       !memcmp(x, y, n);
		if (!good)
			printf("# differ at %llu\n", (unsigned long long)off);
		off += n;
	}
	free(x);
	free(y);
	return good;
}

static void test_samples(void)
{
	struct vdimg_chain *c;
	char sha[80];
	int fd;

	if (!sample("iotest-dynamic-1G.vhdx", "dyn1g.vhdx")) {
		skip("iotest-dynamic-1G.vhdx: sample missing");
	} else {
		fd = openf(tpath("dyn1g.vhdx"), O_RDWR);
		ok(!xopen(&c, fd, "dyn1g.vhdx", VDIMG_CHAIN_READ_ONLY), "dynamic-1G opens read-only");
		ok(c && c->size == 1073741824ULL, "dynamic-1G size");
		ok(c && chain_sha256(c, sha) &&
		   !strcmp(sha, "d3d112d8dab7fd360609f7d5a7b769904b7a2a7d7b6b8c535f65a23293c05478"),
		   "dynamic-1G sha256");
		ok(c && range_is(c, 0, 33 * MiB, 0xa5) && range_is(c, 33 * MiB, 33 * MiB, 0x96) &&
		   range_is(c, 66 * MiB, 64 * MiB, 0), "dynamic-1G patterns");
		vdimg_chain_close(c);
		ok(!xopen(&c, fd, "dyn1g.vhdx", 0), "dynamic-1G opens writable");
		ok(c && write_byte(c, 99 * MiB, 58 * MiB, 0xc3), "dynamic-1G: write 0xc3 at [99, 157 MiB)");
		ok(c && !vdimg_chain_close(c), "dynamic-1G: close");
		ok(!xopen(&c, fd, "dyn1g.vhdx", VDIMG_CHAIN_READ_ONLY), "dynamic-1G reopens");
		ok(c && range_is(c, 0, 33 * MiB, 0xa5) && range_is(c, 33 * MiB, 33 * MiB, 0x96) &&
		   range_is(c, 66 * MiB, 33 * MiB, 0) && range_is(c, 99 * MiB, 58 * MiB, 0xc3) &&
		   range_is(c, 157 * MiB, 100 * MiB, 0), "dynamic-1G: 0xc3 reads back, the rest unchanged");
		vdimg_chain_close(c);
		if (have_qemu)
			ok(!sh("qemu-img check -q -f vhdx '%s'", tpath("dyn1g.vhdx")),
			   "dynamic-1G after the write: qemu-img check");
		close(fd);
		unlink(tpath("dyn1g.vhdx"));
	}

	if (!sample("test-disk2vhd.vhdx", "d2v.vhdx")) {
		skip("test-disk2vhd.vhdx: sample missing");
	} else {
		fd = openf(tpath("d2v.vhdx"), O_RDONLY);
		ok(!xopen(&c, fd, "d2v.vhdx", VDIMG_CHAIN_READ_ONLY), "disk2vhd opens (identical headers)");
		ok(c && c->size == 268435456ULL, "disk2vhd size");
		ok(c && chain_sha256(c, sha) &&
		   !strcmp(sha, "96d964042be9b58dda1725567abfb0cf9fd8380e2118754afa979c2ad445938a"),
		   "disk2vhd sha256");
		vdimg_chain_close(c);
		close(fd);
		unlink(tpath("d2v.vhdx"));
	}

	if (!sample("iotest-dirtylog-10G-4M.vhdx", "dirty.vhdx")) {
		skip("iotest-dirtylog-10G-4M.vhdx: sample missing");
	} else {
		struct vdimg_chain *mem = NULL;
		struct vdimg_image img;
		int fd2;
		static const char *want = "179cefe8b0587f123393eedf2aa7aa8d25798591178e6bc3950a09762f38f96f";

		sh("cp --sparse=always '%s' '%s'", tpath("dirty.vhdx"), tpath("dirty-orig.vhdx"));
		/* read-only: replayed in memory, the file untouched */
		fd = openf(tpath("dirty.vhdx"), O_RDONLY);
		ok(!xopen(&mem, fd, "dirty.vhdx", VDIMG_CHAIN_READ_ONLY),
		   "dirty log: read-only open replays into memory");
		ok(mem && mem->size == 10737418240ULL, "dirty log: size");
		ok(mem && range_is(mem, 0, 18 * MiB, 0xa5), "dirty log (memory): [0, 18 MiB) reads 0xa5");
		ok(!sh("cmp -s '%s' '%s'", tpath("dirty.vhdx"), tpath("dirty-orig.vhdx")),
		   "dirty log: a read-only open leaves the file alone");
		/* writable: replayed into the file, the log emptied */
		fd2 = openf(tpath("dirty.vhdx"), O_RDWR);
		ok(!img_open(&img, fd2, "dirty.vhdx", 0), "dirty log: writable open replays the log");
		img_close(&img);
		ok(!xopen(&c, fd2, "dirty.vhdx", VDIMG_CHAIN_READ_ONLY), "dirty log: reopens");
		ok(c && chain_sha256(c, sha) && !strcmp(sha, want), "dirty log (replayed): sha256");
		ok(c && mem && chains_same(mem, c),
		   "dirty log: the in-memory replay reads exactly as the replayed file");
		vdimg_chain_close(c);
		vdimg_chain_close(mem);
		close(fd);
		close(fd2);
		if (have_qemu) {
			ok(!sh("qemu-img check -q -f vhdx '%s'", tpath("dirty.vhdx")),
			   "dirty log (replayed): qemu-img check");
			/* qemu refuses the original read-only: it needs replay. After ours it opens */
			ok(!sh("qemu-img info -f vhdx '%s' >/dev/null 2>&1", tpath("dirty.vhdx")) &&
			   sh("qemu-img info -f vhdx '%s' >/dev/null 2>&1", tpath("dirty-orig.vhdx")),
			   "dirty log: qemu needs no replay after ours (and did before)");
		}
		unlink(tpath("dirty.vhdx"));
		unlink(tpath("dirty-orig.vhdx"));
	}
}


/* libyal's vhdimount exposes the image (and its parents) as mnt/vhdi1: compare with @raw. */
static bool vhdimount_cmp(const char *img, const char *raw)
{
	sh("mkdir -p '%s'", tpath("mnt"));
	if (!sh("cd '%s' && timeout 120 vhdimount '%s' mnt >vm.log 2>&1 && "
		"cmp mnt/vhdi1 '%s' >>vm.log 2>&1; s=$?; umount mnt 2>/dev/null; exit $s",
		tpath(""), img, raw))
		return true;
	sh("sed 's/^/# /' '%s'", tpath("vm.log"));
	return false;
}

/* Images qemu-img makes and qemu-io fills read back as qemu-img convert -O raw reads them. */
static void test_qemu_made(void)
{
	static const struct {
		const char *sub;
		const char *bs;
		const char *extra;
	} v[] = {
		{ "dynamic", "1M", "" }, { "dynamic", "8M", ",log_size=2M" },
		{ "dynamic", "32M", ",block_state_zero=off" }, { "fixed", "1M", "" },
		{ "fixed", "4M", "" },
	};
	unsigned int i;

	if (!have_qemu) {
		skip("qemu-img made images: qemu-img/qemu-io missing");
		return;
	}
	for (i = 0; i < ARRAY_SIZE(v); i++) {
		struct vdimg_chain *c;
		int fd;

		sh("rm -f '%s'", tpath("q.vhdx"));
		if (sh("qemu-img create -q -f vhdx -o subformat=%s,block_size=%s%s '%s' 72M",
		       v[i].sub, v[i].bs, v[i].extra, tpath("q.vhdx")) ||
		    sh("qemu-io -f vhdx -c 'write -P 0x11 0 3M' -c 'write -P 0x22 5M 1536k' "
		       "-c 'write -P 0x33 40M 512' -c 'write -P 0x44 71M 1M' "
		       "-c 'write -z 5M 4k' '%s' >/dev/null", tpath("q.vhdx")) ||
		    sh("qemu-img convert -f vhdx -O raw '%s' '%s'", tpath("q.vhdx"),
		       tpath("q.raw"))) {
			ok(false, "qemu %s %s: qemu-img/qemu-io failed", v[i].sub, v[i].bs);
			continue;
		}
		fd = openf(tpath("q.vhdx"), O_RDONLY);
		ok(!xopen(&c, fd, "q.vhdx", VDIMG_CHAIN_READ_ONLY) && c->size == 72 * MiB &&
		   chain_equals_file(c, tpath("q.raw")),
		   "qemu-made %s block %s%s reads as qemu-img convert", v[i].sub, v[i].bs, v[i].extra);
		vdimg_chain_close(c);
		close(fd);
	}
}

/*
 * Write a pattern workload through the chain and into a raw shadow at the same offsets: unaligned
 * starts within blocks, block-straddling, a whole block, a late block.
 */
static bool pattern_writes(struct vdimg_chain *c, int shadow, u32 lbs, unsigned int seed)
{
	static const u64 w[][2] = {
		{ 0, 4096 }, { 1 * MiB - 4096, 8192 }, { 3 * MiB + 4096, 3 * MiB }, { 8 * MiB, 2 * MiB },
		{ 20 * MiB + 8192, 12288 }, { 63 * MiB, 1 * MiB },
	};
	u8 *buf = malloc(4 * MiB);
	bool good = true;
	unsigned int i;

	for (i = 0; good && i < ARRAY_SIZE(w); i++) {
		u64 off = w[i][0], len = w[i][1];

		if (lbs == 512 && i == 4)
			off += 512;	/* a sub-4k start where sectors allow it */
		fill_pat(buf, len, seed + i, off);
		good = !vdimg_chain_pwrite(c, buf, len, off) &&
		       pwrite(shadow, buf, len, off) == (ssize_t)len;
	}
	free(buf);
	return good;
}

/* Images vdimg creates and writes: qemu-img check and compare against a raw shadow. */
static void test_create_write(void)
{
	static const struct {
		const char *variant;
		u32 bs;
		u32 lbs;
	} v[] = {
		{ "dynamic", 0, 512 }, { "dynamic", 1 * MiB, 512 }, { "dynamic", 2 * MiB, 4096 },
		{ "fixed", 1 * MiB, 512 }, { "fixed", 4 * MiB, 4096 },
	};
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(v); i++) {
		struct vdimg_chain *c;
		int fd, shadow;
		bool good;

		fd = xcreate("w.vhdx", 64 * MiB, v[i].variant, v[i].bs, v[i].lbs, NULL, NULL);
		if (!ok(fd >= 0, "create %s bs %u lbs %u", v[i].variant, v[i].bs, v[i].lbs))
			continue;
		shadow = tfile("w.raw", NULL, 64 * MiB);
		good = !xopen(&c, fd, "w.vhdx", 0);
		ok(good && c->layers[0]->lbs == v[i].lbs && !strcmp(c->layers[0]->variant, v[i].variant),
		   "%s: opens with lbs %u", v[i].variant, v[i].lbs);
		good = good && pattern_writes(c, shadow, v[i].lbs, i * 10);
		ok(good, "%s bs %u lbs %u: workload written", v[i].variant, v[i].bs, v[i].lbs);
		ok(c && !vdimg_chain_close(c), "%s: close", v[i].variant);
		good = !xopen(&c, fd, "w.vhdx", VDIMG_CHAIN_READ_ONLY) &&
		       chain_equals_file(c, tpath("w.raw"));
		ok(good, "%s bs %u lbs %u: reads back like the shadow", v[i].variant, v[i].bs, v[i].lbs);
		vdimg_chain_close(c);
		if (have_qemu && v[i].lbs != 512) {
			skip("%s lbs %u: qemu-img check/compare (qemu reads only 512-byte sectors)",
			     v[i].variant, v[i].lbs);
		} else if (have_qemu) {
			ok(!sh("qemu-img check -q -f vhdx '%s'", tpath("w.vhdx")),
			   "%s bs %u lbs %u: qemu-img check", v[i].variant, v[i].bs, v[i].lbs);
			ok(!sh("qemu-img compare -q -f vhdx -F raw '%s' '%s'", tpath("w.vhdx"),
			       tpath("w.raw")),
			   "%s bs %u lbs %u: qemu-img compare with the shadow", v[i].variant, v[i].bs,
			   v[i].lbs);
		}
		if (have_vhdiinfo)
			ok(!sh("vhdiinfo '%s' >/dev/null 2>&1", tpath("w.vhdx")),
			   "%s bs %u lbs %u: vhdiinfo opens it", v[i].variant, v[i].bs, v[i].lbs);
		if (have_vhdimount)
			ok(vhdimount_cmp("w.vhdx", "w.raw"), "%s bs %u lbs %u: vhdimount reads the shadow",
			   v[i].variant, v[i].bs, v[i].lbs);
		close(fd);
		close(shadow);
	}
	/* an image qemu then writes to still reads right here */
	if (have_qemu) {
		struct vdimg_chain *c;
		int fd = xcreate("qw.vhdx", 16 * MiB, "dynamic", 1 * MiB, 512, NULL, NULL);

		close(fd);
		ok(!sh("qemu-io -f vhdx -c 'write -P 0x5a 1M 3M' '%s' >/dev/null && "
		       "qemu-img convert -f vhdx -O raw '%s' '%s'", tpath("qw.vhdx"), tpath("qw.vhdx"),
		       tpath("qw.raw")), "qemu-io writes to a vdimg-made image");
		fd = openf(tpath("qw.vhdx"), O_RDONLY);
		ok(!xopen(&c, fd, "qw.vhdx", VDIMG_CHAIN_READ_ONLY) &&
		   chain_equals_file(c, tpath("qw.raw")), "... and vdimg reads what qemu wrote");
		vdimg_chain_close(c);
		close(fd);
	}
}

/* Differencing: writes set sector bits, never touch the parent; linkage is verified. */
static void test_differencing(void)
{
	struct vdimg_chain *c;
	struct vdimg_image pimg;
	int base, child, shadow;
	char sum1[80], sum2[80];
	bool good;

	base = xcreate("base.vhdx", 64 * MiB, "dynamic", 1 * MiB, 512, NULL, NULL);
	shadow = tfile("diff.raw", NULL, 64 * MiB);
	good = base >= 0 && !xopen(&c, base, "base.vhdx", 0) && pattern_writes(c, shadow, 512, 100);
	ok(good && !vdimg_chain_close(c), "differencing: base written");
	ok(!img_open(&pimg, base, "base.vhdx", VDIMG_OPEN_READ_ONLY), "differencing: base opens");
	child = xcreate("child.vhdx", 0, NULL, 0, 0, tpath("base.vhdx"), &pimg);
	img_close(&pimg);
	ok(child >= 0, "differencing: child created with --parent");
	if (child < 0)
		return;
	sh("sha256sum < '%s' > '%s'", tpath("base.vhdx"), tpath("s1"));
	good = !xopen2(&c, base, child, 0);
	ok(good && !strcmp(c->layers[1]->variant, "differencing") &&
	   (c->layers[1]->flags & VDIMG_IMG_HAS_PARENT), "differencing: chain opens, child is differencing");
	ok(good && chain_equals_file(c, tpath("diff.raw")), "differencing: empty child reads the parent");
	{
		struct vdimg_parent_ref ref;

		ok(good && !vdimg_tool_ops(c->layers[1]->fmt)->parent_ref(c->layers[1], &ref) &&
		   !strcmp(ref.path, "base.vhdx"), "differencing: parent_ref gives the relative path (%s)",
		   good ? ref.path : "");
	}
	/* sub-block writes: 512-byte sectors in partially present blocks */
	if (good) {
		u8 buf[8192];
		static const u64 offs[] = { 512, 3 * MiB + 1024, 3 * MiB + 4096, 9 * MiB - 512,
					    30 * MiB, 63 * MiB + 512 };
		unsigned int i;

		for (i = 0; good && i < ARRAY_SIZE(offs); i++) {
			fill_pat(buf, sizeof(buf) / 2, 200 + i, offs[i]);
			good = !vdimg_chain_pwrite(c, buf, sizeof(buf) / 2, offs[i]) &&
			       pwrite(shadow, buf, sizeof(buf) / 2, offs[i]) == sizeof(buf) / 2;
		}
		good = good && pattern_writes(c, shadow, 512, 300);
	}
	ok(good, "differencing: writes to the child");
	ok(good && chain_equals_file(c, tpath("diff.raw")), "differencing: the chain reads the shadow");
	ok(c && !vdimg_chain_close(c), "differencing: close");
	sh("sha256sum < '%s' > '%s'", tpath("base.vhdx"), tpath("s2"));
	{
		FILE *a = fopen(tpath("s1"), "r"), *b = fopen(tpath("s2"), "r");

		ok(a && b && fscanf(a, "%64s", sum1) == 1 && fscanf(b, "%64s", sum2) == 1 &&
		   !strcmp(sum1, sum2), "differencing: the parent file is untouched");
		if (a)
			fclose(a);
		if (b)
			fclose(b);
	}
	ok(!xopen2(&c, base, child, VDIMG_CHAIN_READ_ONLY) && chain_equals_file(c, tpath("diff.raw")),
	   "differencing: reopened chain reads the shadow");
	vdimg_chain_close(c);
	ok(xopen(&c, child, "child.vhdx", VDIMG_CHAIN_READ_ONLY) == -ENOENT,
	   "differencing: the child alone is refused");
	if (have_vhdiinfo)
		ok(!sh("vhdiinfo '%s' >/dev/null 2>&1", tpath("child.vhdx")),
		   "differencing: vhdiinfo opens the child");
	if (have_vhdimount) {
		/* libvhdi checks the parent linkage against the parent's data write GUID */
		ok(!sh("cd '%s' && mkdir -p mnt && timeout 60 vhdimount child.vhdx mnt >/dev/null 2>&1 "
		       "&& test -s mnt/vhdi1; s=$?; umount mnt 2>/dev/null; exit $s", tpath("")),
		   "differencing: vhdimount opens the chain (linkage accepted)");
		/*
		 * libvhdi 20210425 (Debian 12) returns the parent's data for every block of a
		 * VHDX differencing child, even FULLY_PRESENT ones, so its contents are no oracle.
		 */
		if (getenv("VDIMG_VHDIMOUNT_DIFF"))
			ok(vhdimount_cmp("child.vhdx", "diff.raw"),
			   "differencing: vhdimount reads the chain as the shadow");
		else
			skip("differencing: vhdimount contents (libvhdi 20210425 reads child blocks from the parent)");
	}
	/* the parent changes: the linkage no longer matches */
	good = !xopen(&c, base, "base.vhdx", 0) && write_byte(c, 0, 4096, 0x77);
	ok(good && !vdimg_chain_close(c), "differencing: the parent is written (new data write GUID)");
	ok(xopen2(&c, base, child, VDIMG_CHAIN_READ_ONLY) == -ESTALE,
	   "differencing: stale parent linkage refused");
	ok(!xopen2(&c, base, child, VDIMG_CHAIN_READ_ONLY | VDIMG_CHAIN_FORCE_LINK),
	   "differencing: ... and accepted when forced");
	vdimg_chain_close(c);
	close(base);
	close(child);
	close(shadow);
}

/* Sector @s of the result is the pattern written there, or zeros. */
static bool crash_verify(struct vdimg_chain *c, const u8 *want, const u8 *written, u64 size,
			 const u8 *base)
{
	u8 *buf = malloc(size);
	u64 s;
	bool good = buf && !vdimg_chain_pread(c, buf, size, 0);

	for (s = 0; good && s < size / 512; s++) {
		const u8 *got = buf + s * 512, *old = base ? base + s * 512 : NULL;
		bool is_old = old ? !memcmp(got, old, 512) : is_byte(got, 512, 0);

		if (written[s])
			good = is_old || !memcmp(got, want + s * 512, 512);
		else
			good = is_old;
		if (!good)
			printf("# sector %llu: neither old nor new data\n", (unsigned long long)s);
	}
	free(buf);
	return good;
}

/*
 * Crash safety: cut the image's writes off after N writes, for every N of a workload; the image must
 * then open (replaying its log), read old or new data per sector, and pass qemu-img check.
 */
static void test_crash(bool diff)
{
	static const u64 w[][2] = {
		{ 0, 8192 }, { 3 * MiB - 512, 4096 }, { 5 * MiB, 1 * MiB }, { 9 * MiB + 4096, 512 },
		{ 5 * MiB + 4096, 8192 }, { 15 * MiB, 1 * MiB },
	};
	const u64 size = 16 * MiB;
	u8 *want = calloc(1, size), *written = calloc(1, size / 512), *base = NULL;
	const char *name = diff ? "differencing" : "dynamic";
	long long total = 0, n;
	unsigned int i, bad = 0, qbad = 0, opened = 0;
	struct vdimg_chain *c;
	int fd, pfd = -1;

	if (diff) {
		struct vdimg_image pimg;

		pfd = xcreate("cbase.vhdx", size, "dynamic", 1 * MiB, 512, NULL, NULL);
		base = malloc(size);
		if (xopen(&c, pfd, "cbase.vhdx", 0) || !write_byte(c, 2 * MiB, 6 * MiB, 0x3c) ||
		    vdimg_chain_close(c) || img_open(&pimg, pfd, "cbase.vhdx", VDIMG_OPEN_READ_ONLY)) {
			ok(false, "crash %s: base image", name);
			goto out;
		}
		fd = xcreate("ctpl.vhdx", 0, NULL, 1 * MiB, 0, tpath("cbase.vhdx"), &pimg);
		img_close(&pimg);
		memset(base, 0, size);
		memset(base + 2 * MiB, 0x3c, 6 * MiB);
	} else {
		fd = xcreate("ctpl.vhdx", size, "dynamic", 1 * MiB, 512, NULL, NULL);
	}
	if (fd < 0) {
		ok(false, "crash %s: template image", name);
		goto out;
	}
	close(fd);
	if (base)
		memcpy(want, base, size);
	for (i = 0; i < ARRAY_SIZE(w); i++) {
		fill_pat(want + w[i][0], w[i][1], 900 + i, w[i][0]);
		memset(written + w[i][0] / 512, 1, w[i][1] / 512);
	}
	/* count the writes of a full run */
	for (n = -1; n < total || n == -1; n++) {
		int fds[2];

		sh("cp '%s' '%s'", tpath("ctpl.vhdx"), tpath("crash.vhdx"));
		fd = openf(tpath("crash.vhdx"), O_RDWR);
		fds[0] = pfd;
		fds[1] = fd;
		vdimg_write_budget = n == -1 ? 1000000000LL : n;
		vdimg_msg_level = -1;
		if (!(diff ? xopen2(&c, pfd, fd, 0) : xopen(&c, fd, "crash.vhdx", 0))) {
			for (i = 0; i < ARRAY_SIZE(w); i++)
				if (vdimg_chain_pwrite(c, want + w[i][0], w[i][1], w[i][0]))
					break;
			vdimg_chain_close(c);
		}
		if (n == -1)
			total = 1000000000LL - vdimg_write_budget;
		vdimg_write_budget = -1;
		vdimg_msg_level = VDIMG_LOG_INFO;
		(void)fds;
		/* qemu replays our log too (check -r all), and reads old or new data after it */
		if (have_qemu && !diff) {
			int qfd;

			sh("cp '%s' '%s'", tpath("crash.vhdx"), tpath("crashq.vhdx"));
			qfd = openf(tpath("crashq.vhdx"), O_RDONLY);
			if (sh("qemu-img check -q -r all -f vhdx '%s' >/dev/null 2>&1",
			       tpath("crashq.vhdx")) ||
			    xopen(&c, qfd, "crashq.vhdx", VDIMG_CHAIN_READ_ONLY)) {
				printf("# cut after %lld writes: qemu could not replay/repair\n", n);
				qbad++;
			} else {
				if (!crash_verify(c, want, written, size, base)) {
					printf("# cut after %lld writes: bad data after qemu's replay\n", n);
					qbad++;
				}
				vdimg_chain_close(c);
			}
			close(qfd);
		}
		/* read-only first (log replayed in memory), then writable (replayed into the file) */
		if ((diff ? xopen2(&c, pfd, fd, VDIMG_CHAIN_READ_ONLY) :
		     xopen(&c, fd, "crash.vhdx", VDIMG_CHAIN_READ_ONLY))) {
			printf("# cut after %lld writes: read-only open failed\n", n);
			bad++;
		} else {
			if (!crash_verify(c, want, written, size, base)) {
				printf("# cut after %lld writes: bad data (read-only)\n", n);
				bad++;
			}
			vdimg_chain_close(c);
		}
		if ((diff ? xopen2(&c, pfd, fd, 0) : xopen(&c, fd, "crash.vhdx", 0))) {
			printf("# cut after %lld writes: writable open failed\n", n);
			bad++;
		} else {
			opened++;
			if (!crash_verify(c, want, written, size, base)) {
				printf("# cut after %lld writes: bad data\n", n);
				bad++;
			}
			vdimg_chain_close(c);
		}
		if (have_qemu && !diff && sh("qemu-img check -q -f vhdx '%s' >/dev/null 2>&1",
					     tpath("crash.vhdx"))) {
			printf("# cut after %lld writes: qemu-img check failed\n", n);
			qbad++;
		}
		close(fd);
	}
	ok(total > 10, "crash %s: the workload makes %lld writes", name, total);
	ok(!bad && opened == total + 1, "crash %s: every cut (0..%lld) opens and reads old or new data",
	   name, total);
	if (have_qemu && !diff)
		ok(!qbad, "crash %s: qemu replays every cut (check -r all) to old or new data, and checks our replay clean", name);
out:
	if (pfd >= 0)
		close(pfd);
	free(base);
	free(want);
	free(written);
}

/* Hostile images: damaged headers, region tables, metadata and BAT entries are refused cleanly. */
static void test_hostile(void)
{
	struct vdimg_image img;
	int fd = xcreate("h.vhdx", 8 * MiB, "dynamic", 1 * MiB, 512, NULL, NULL);
	u8 b[8];

	close(fd);
	sh("cp '%s' '%s'", tpath("h.vhdx"), tpath("h0.vhdx"));
#define DAMAGE(off, len, what) do {							\
		sh("cp '%s' '%s'", tpath("h0.vhdx"), tpath("h.vhdx"));				\
		fd = openf(tpath("h.vhdx"), O_RDWR);					\
		memset(b, 0xee, sizeof(b));						\
		if (pwrite(fd, b, len, off) != len) ok(false, "damage");		\
	} while (0)
	DAMAGE(64 * KiB + 100, 4, "header 1");
	ok(!img_open(&img, fd, "h.vhdx", VDIMG_OPEN_READ_ONLY), "one damaged header: the other is used");
	img_close(&img);
	close(fd);
	DAMAGE(64 * KiB + 100, 4, "header 1");
	pwrite(fd, b, 4, 128 * KiB + 100);
	ok_err(img_open(&img, fd, "h.vhdx", VDIMG_OPEN_READ_ONLY), -EUCLEAN, "both headers damaged: refused");
	close(fd);
	DAMAGE(192 * KiB + 20, 4, "region table 1");
	ok(!img_open(&img, fd, "h.vhdx", VDIMG_OPEN_READ_ONLY), "damaged region table 1: the copy is used");
	img_close(&img);
	pwrite(fd, b, 4, 256 * KiB + 20);
	ok_err(img_open(&img, fd, "h.vhdx", VDIMG_OPEN_READ_ONLY), -EUCLEAN, "both region tables damaged: refused");
	close(fd);
	DAMAGE(2 * MiB, 8, "metadata signature");
	ok_err(img_open(&img, fd, "h.vhdx", VDIMG_OPEN_READ_ONLY), -EUCLEAN, "bad metadata table refused");
	close(fd);
	/* a BAT entry pointing far past the end of the file */
	DAMAGE(3 * MiB, 8, "BAT entry");
	ok_err(img_open(&img, fd, "h.vhdx", VDIMG_OPEN_READ_ONLY), -EUCLEAN, "BAT entry past the end refused");
	close(fd);
	/* truncated file */
	sh("cp '%s' '%s' && truncate -s 300K '%s'", tpath("h0.vhdx"), tpath("h.vhdx"), tpath("h.vhdx"));
	fd = openf(tpath("h.vhdx"), O_RDWR);
	ok_err(img_open(&img, fd, "h.vhdx", VDIMG_OPEN_READ_ONLY), -EUCLEAN, "truncated file refused");
	close(fd);
#undef DAMAGE
}

struct thr {
	struct vdimg_image *img;
	int id;
	int errors;
};

/* Each thread writes its own blocks (and shared sector bitmap chunks) through map/commit. */
static void *thr_write(void *arg)
{
	struct thr *t = arg;
	u8 *buf = malloc(256 * KiB);
	int i;

	for (i = 0; i < 8; i++) {
		u64 off = ((u64)(i * 4 + t->id) * MiB) + (i & 1) * 4096, left = 256 * KiB;

		fill_pat(buf, left, 500 + t->id, off);
		while (left) {
			struct vdimg_extent e;
			u64 o = off + 256 * KiB - left;

			if (t->img->fmt->map(t->img, o, left, VDIMG_MAP_WRITE, &e) ||
			    vdimg_file_write(e.file, buf + (o - off), e.length, e.file_offset) ||
			    ((e.flags & VDIMG_EXT_NEW) && t->img->fmt->commit(t->img, &e))) {
				t->errors++;
				break;
			}
			left -= e.length;
		}
	}
	free(buf);
	return NULL;
}

/* Concurrent map/commit on different blocks, dynamic and differencing; then check --repair. */
static void test_threads_and_check(void)
{
	struct vdimg_image img, pimg;
	struct vdimg_check_result res;
	struct vdimg_chain *c;
	int base, fd, k;

	base = xcreate("tbase.vhdx", 40 * MiB, "dynamic", 1 * MiB, 512, NULL, NULL);
	for (k = 0; k < 2; k++) {
		struct thr t[4];
		pthread_t th[4];
		u8 *buf = malloc(256 * KiB);
		bool good = true;
		int i;

		if (k) {
			ok(!img_open(&pimg, base, "tbase.vhdx", VDIMG_OPEN_READ_ONLY), "threads: parent opens");
			fd = xcreate("tchild.vhdx", 0, NULL, 1 * MiB, 0, tpath("tbase.vhdx"), &pimg);
			img_close(&pimg);
		} else {
			fd = base;
		}
		ok(!img_open(&img, fd, k ? "tchild.vhdx" : "tbase.vhdx", 0), "threads %d: opens", k);
		for (i = 0; i < 4; i++) {
			t[i] = (struct thr){ .img = &img, .id = i };
			pthread_create(&th[i], NULL, thr_write, &t[i]);
		}
		for (i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			good = good && !t[i].errors;
		}
		ok(good, "threads %d: 4 writers on different blocks", k);
		img_close(&img);
		good = !(k ? xopen2(&c, base, fd, VDIMG_CHAIN_READ_ONLY) :
			 xopen(&c, base, "tbase.vhdx", VDIMG_CHAIN_READ_ONLY));
		for (i = 0; good && i < 32; i++) {
			u64 off = (u64)i * MiB + ((i / 4) & 1) * 4096;

			good = !vdimg_chain_pread(c, buf, 256 * KiB, off) &&
			       is_pat(buf, 256 * KiB, 500 + i % 4, off);
			if (!good)
				printf("# block %d differs\n", i);
		}
		ok(good, "threads %d: every thread's data reads back", k);
		vdimg_chain_close(c);
		if (have_qemu && !k)
			ok(!sh("qemu-img check -q -f vhdx '%s'", tpath("tbase.vhdx")),
			   "threads: qemu-img check");
		free(buf);
		if (k)
			close(fd);
	}
	/* a leaked block (cut after the data, before the BAT) is found and given back */
	vdimg_write_budget = 3;
	vdimg_msg_level = -1;
	if (!img_open(&img, base, "tbase.vhdx", 0)) {
		struct vdimg_extent e;

		if (!img.fmt->map(&img, 36 * MiB, 4096, VDIMG_MAP_WRITE, &e))
			img.fmt->commit(&img, &e);
		img_close(&img);
	}
	vdimg_write_budget = -1;
	vdimg_msg_level = VDIMG_LOG_INFO;
	memset(&res, 0, sizeof(res));
	k = !img_open(&img, base, "tbase.vhdx", 0) && !vdimg_tool_ops(img.fmt)->check(&img, 0, &res) && res.leaks;
	ok(k, "check: a leaked block is reported (%llu)", (unsigned long long)res.leaks);
	ok(!vdimg_tool_ops(img.fmt)->check(&img, VDIMG_CHECK_REPAIR, &res) && res.fixed == res.leaks,
	   "check --repair: gives it back");
	img_close(&img);
	ok(!img_open(&img, base, "tbase.vhdx", 0) && !vdimg_tool_ops(img.fmt)->check(&img, 0, &res) && !res.leaks &&
	   !res.errors, "check: clean after the repair");
	img_close(&img);
	if (have_qemu)
		ok(!sh("qemu-img check -q -f vhdx '%s'", tpath("tbase.vhdx")),
		   "check --repair: qemu-img check");
	close(base);
}

/* Discard and write-zeroes: whole blocks become ZERO/UNMAPPED, partial ranges zeroed in place. */
static void test_discard(void)
{
	struct vdimg_chain *c;
	int fd = xcreate("d.vhdx", 64 * MiB, "dynamic", 1 * MiB, 512, NULL, NULL);
	int shadow = tfile("d.raw", NULL, 64 * MiB);
	u8 *zero = calloc(1, 3 * MiB);
	bool good = !xopen(&c, fd, "d.vhdx", 0) && pattern_writes(c, shadow, 512, 700);

	ok(good, "discard: data written");
	ok(good && !vdimg_chain_discard(c, 8 * MiB, 1 * MiB, VDIMG_DISCARD_ZEROES) &&
	   pwrite(shadow, zero, 1 * MiB, 8 * MiB) == (ssize_t)MiB, "discard: a whole block, zeroes");
	ok(good && !vdimg_chain_discard(c, 9 * MiB, 1 * MiB, 0) &&
	   pwrite(shadow, zero, 1 * MiB, 9 * MiB) == (ssize_t)MiB, "discard: a whole block, unmap");
	ok(good && !vdimg_chain_discard(c, 3 * MiB + 8192, 12288, VDIMG_DISCARD_ZEROES) &&
	   pwrite(shadow, zero, 12288, 3 * MiB + 8192) == 12288, "discard: part of a block, zeroes");
	ok(good && chain_equals_file(c, tpath("d.raw")), "discard: reads as the shadow");
	ok(c && !vdimg_chain_close(c), "discard: close");
	ok(!xopen(&c, fd, "d.vhdx", VDIMG_CHAIN_READ_ONLY) && chain_equals_file(c, tpath("d.raw")),
	   "discard: reopened, reads as the shadow");
	vdimg_chain_close(c);
	if (have_qemu) {
		ok(!sh("qemu-img check -q -f vhdx '%s'", tpath("d.vhdx")), "discard: qemu-img check");
		ok(!sh("qemu-img compare -q -f vhdx -F raw '%s' '%s'", tpath("d.vhdx"), tpath("d.raw")),
		   "discard: qemu-img compare with the shadow");
	}
	/* a block that was discarded can be written again */
	ok(!xopen(&c, fd, "d.vhdx", 0) && write_byte(c, 8 * MiB + 4096, 4096, 0x99) &&
	   pwrite(shadow, zero, 0, 0) == 0 && !vdimg_chain_close(c), "discard: rewrite a discarded block");
	{
		u8 b[4096];

		memset(b, 0x99, sizeof(b));
		pwrite(shadow, b, sizeof(b), 8 * MiB + 4096);
	}
	ok(!xopen(&c, fd, "d.vhdx", VDIMG_CHAIN_READ_ONLY) && chain_equals_file(c, tpath("d.raw")),
	   "discard: the rewritten block reads back, zeros around it");
	vdimg_chain_close(c);
	free(zero);
	close(fd);
	close(shadow);
}

/* The current header's file write GUID (the slot with the higher sequence number). */
static bool cur_file_guid(int fd, u8 *guid)
{
	u8 h[2][64];
	u64 seq[2];
	int i;

	for (i = 0; i < 2; i++)
		if (pread(fd, h[i], 64, (i + 1) * 65536) != 64 || memcmp(h[i], "head", 4))
			return false;
	for (i = 0; i < 2; i++) {
		memcpy(&seq[i], h[i] + 8, 8);
		seq[i] = le64_to_cpu(seq[i]);
	}
	i = seq[1] > seq[0];
	memcpy(guid, h[i] + 16, 16);
	return true;
}

/*
 * MS-VHDX: the file write GUID changes before the first modification after an open for write.
 * A writable open that writes nothing (e.g. one a chain check then refuses) leaves the file as
 * it was; the first write renews the GUID.
 */
static void test_file_write_guid(void)
{
	struct vdimg_chain *c = NULL;
	u8 before[16], after[16];
	struct stat st0, st1;
	char *a, *b;
	int fd;

	fd = xcreate("fwg.vhdx", 8 << 20, NULL, 0, 0, NULL, NULL);
	a = malloc(4 << 20);
	b = malloc(4 << 20);
	ok(fd >= 0 && a && b && !fstat(fd, &st0) && pread(fd, a, 4 << 20, 0) >= 0 &&
	   cur_file_guid(fd, before), "file write GUID: image made");
	ok(xopen(&c, fd, "fwg.vhdx", 0) == 0, "file write GUID: writable open");
	vdimg_chain_close(c);
	ok(!fstat(fd, &st1) && st1.st_size == st0.st_size &&
	   pread(fd, b, 4 << 20, 0) >= 0 && !memcmp(a, b, min_t(u64, st0.st_size, 4 << 20)),
	   "file write GUID: a writable open and close without writes leaves the file unchanged");
	c = NULL;
	ok(xopen(&c, fd, "fwg.vhdx", 0) == 0 && write_byte(c, 4096, 4096, 0x5c) &&
	   vdimg_chain_close(c) == 0, "file write GUID: one write");
	ok(cur_file_guid(fd, after) && memcmp(before, after, 16),
	   "file write GUID: renewed by the first write");
	free(a);
	free(b);
	close(fd);
}

int main(void)
{
	ktap_start();
	samples = getenv("VDIMG_SAMPLES") ? getenv("VDIMG_SAMPLES") : "/var/cache/vdimg/samples";
	have_qemu = !sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1");
	have_vhdiinfo = !sh("vhdiinfo -V >/dev/null 2>&1");
	have_vhdimount = !sh("vhdimount -V >/dev/null 2>&1") && !access("/dev/fuse", R_OK);
	test_samples();
	test_qemu_made();
	test_create_write();
	test_differencing();
	test_discard();
	test_file_write_guid();
	test_hostile();
	test_threads_and_check();
	test_crash(false);
	test_crash(true);
	return ktap_finish();
}
