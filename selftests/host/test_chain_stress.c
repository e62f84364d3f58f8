// SPDX-License-Identifier: GPL-2.0
/*
 * Stress tests of real differencing chains through libvdimg's chain layer (tools/lib/io.c), in the
 * spirit of VirtualBox's tstVDIo and tstVDSnap:
 *
 *  - vdio: base + differencing layers of every format that can be a child (same-format and mixed
 *    chains); each level k in turn is the writable top of the sub-chain [0..k] and gets random
 *    64 KiB and 512-byte-granular reads and writes, every read checked against a raw shadow of that
 *    sub-chain; writing level k must never change the files (nor the views) of the levels below.
 *  - snap: 30 rounds of writes and discards to the top, snapshots (a new empty child on top) and
 *    merges of a random span of layers [i..j] into layer i; the device equals the shadow after
 *    every step.
 *  - depth: 300-layer QCOW2 and VHD chains open and read correctly; a read loop over data in the
 *    top layer is timed at depth 1 and depth 300 (the walk stops at the first layer that has the
 *    data, so the ratio must stay small).
 *  - errors: wrong parent, missing parent, parent loops, parent smaller than the child; every image
 *    unchanged afterwards.
 *
 * Images are made with the backends' ->create() (and vdimgctl/qemu-img where the test is about
 * them). KTAP on stdout. VDIMG_SEED=N changes the random seed (printed).
 */
#include <time.h>
#include <signal.h>
#include "../../tools/lib/chain.h"
#include "ktap.h"

#define MiB (1ULL << 20)
#define KiB 1024ULL
#define MAXL 512

static u64 rng_state = 0x9e3779b97f4a7c15ULL;

static u64 rnd64(void)
{
	u64 x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static u64 rnd(u64 n)
{
	return n ? rnd64() % n : 0;
}

static bool have_qemu_img;
static const char *vdimgctl;

/* ---- image files ---- */

struct tchain {
	int n;				/* layers, base first */
	char *path[MAXL];
	char fmt[MAXL][8];
	bool force;			/* a link could not be rewritten: open with FORCE_LINK */
};

static void tc_free(struct tchain *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->path[i]);
	t->n = 0;
	t->force = false;
}

/* Open the first @n layers of @t; the top is writable unless READ_ONLY. */
static int tc_open(struct tchain *t, int n, unsigned int flags, struct vdimg_chain **c)
{
	flags |= VDIMG_CHAIN_ALLOW_RAW;
	if (t->force)
		flags |= VDIMG_CHAIN_FORCE_LINK;
	return vdimg_chain_open(c, (const char *const *)t->path, n, NULL, flags);
}

/*
 * Make an image: raw (a sparse file), or through the backend's ->create(), over @parent (opened
 * alone as a chain of one, so it may itself be a differencing image) when given. @size 0 with a
 * parent: the parent's size. Returns 0 or a negative errno.
 */
static int mkimg(const char *fmt, const char *path, u64 size, const char *parent, u32 block_size)
{
	const struct vdimg_format *f = vdimg_format_by_name(fmt);
	struct vdimg_create_opts o = { .size = size, .block_size = block_size };
	struct vdimg_chain *pc = NULL;
	struct vdimg_file *file;
	int fd, ret;

	if (!strcmp(fmt, "raw")) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		ret = ftruncate(fd, size) ? -errno : 0;
		close(fd);
		return ret;
	}
	if (!f || !vdimg_tool_ops(f)->create)
		return -EOPNOTSUPP;
	if (parent) {
		ret = vdimg_chain_open(&pc, &parent, 1, NULL, VDIMG_CHAIN_READ_ONLY |
				       VDIMG_CHAIN_ALLOW_RAW | VDIMG_CHAIN_ORPHAN_OK);
		if (ret)
			return ret;
		o.parent = parent;
		o.parent_img = vdimg_chain_top(pc);
		if (!size)
			o.size = pc->size;
	}
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	file = vdimg_file_from_fd(fd);
	ret = file ? vdimg_tool_ops(f)->create(file, &o) : -ENOMEM;
	if (!ret)
		ret = vdimg_file_sync(file);
	vdimg_file_free(file);
	close(fd);
	if (ret)
		unlink(path);
out:
	vdimg_chain_close(pc);
	return ret;
}

static u32 default_bs(const char *fmt)
{
	return !strcmp(fmt, "vhdx") ? MiB : 0;	/* VHDX's 32 MiB default is one block here */
}

/* Append a layer of @fmt to @t (over the current top unless @t is empty). */
static int tc_add(struct tchain *t, const char *fmt, const char *name, u64 size)
{
	char *p = strdup(tpath(name));
	int ret;

	unlink(p);
	ret = mkimg(fmt, p, t->n ? 0 : size, t->n ? t->path[t->n - 1] : NULL, default_bs(fmt));
	if (ret) {
		printf("# cannot create %s %s over %s: %d (%s)\n", fmt, p,
		       t->n ? t->path[t->n - 1] : "nothing", ret, ktap_last_msg);
		free(p);
		return ret;
	}
	t->path[t->n] = p;
	snprintf(t->fmt[t->n], sizeof(t->fmt[0]), "%s", fmt);
	t->n++;
	return 0;
}

/* ---- comparisons ---- */

/* The whole chain equals @ref; prints the first difference. */
static bool chain_equals(struct vdimg_chain *c, const u8 *ref, u64 size, const char *what)
{
	u8 *b = malloc(size);
	int ret = vdimg_chain_pread(c, b, size, 0);
	bool same = !ret && !memcmp(b, ref, size);

	if (ret)
		printf("# %s: reading the chain failed: %d\n", what, ret);
	else if (!same)
		for (u64 i = 0; i < size; i++)
			if (b[i] != ref[i]) {
				printf("# %s: first difference at %llu: 0x%02x, want 0x%02x\n", what,
				       (unsigned long long)i, b[i], ref[i]);
				break;
			}
	free(b);
	return same;
}

struct snapfile {
	u8 *data;
	size_t len;
};

static void files_snap(struct tchain *t, int n, struct snapfile *s)
{
	for (int i = 0; i < n; i++)
		s[i].data = slurp(t->path[i], &s[i].len);
}

/* The first @n files of @t are byte for byte what files_snap() saw; frees the snapshot. */
static bool files_same(struct tchain *t, int n, struct snapfile *s)
{
	bool same = true;

	for (int i = 0; i < n; i++) {
		size_t len;
		u8 *now = slurp(t->path[i], &len);

		if (!now || !s[i].data || len != s[i].len || memcmp(now, s[i].data, len)) {
			printf("# %s changed\n", t->path[i]);
			same = false;
		}
		free(now);
		free(s[i].data);
		s[i].data = NULL;
	}
	return same;
}

/* qemu-img convert of @top to raw equals @ref (only for chains qemu can read). */
static bool qemu_equals(const char *top, const u8 *ref, u64 size)
{
	const char *out = tpath("qemu-out.raw");
	u8 *q;
	size_t len;
	bool same;

	unlink(out);
	if (sh("qemu-img convert -O raw '%s' '%s' 2>&1 | sed 's/^/# /'; test -s '%s'", top, out, out))
		return false;
	q = slurp(out, &len);
	same = q && len == size && !memcmp(q, ref, size);
	free(q);
	unlink(out);
	return same;
}

/* ---- random I/O ---- */

static u8 *iobuf, *iobuf2;
static unsigned int write_seed = 1000;

/*
 * @nops random reads and writes (50% each) on @c, mirrored in @shadow: @mode 0 64 KiB aligned,
 * 1 any 512-byte multiple (offset and length, up to 128 KiB). Every read is compared.
 */
static bool random_io(struct vdimg_chain *c, u8 *shadow, u64 size, int nops, int mode,
		      bool discards, const char *what)
{
	for (int i = 0; i < nops; i++) {
		u64 off, len;
		int ret, op = rnd(100);

		if (mode == 0) {
			off = rnd(size / (64 * KiB)) * 64 * KiB;
			len = 64 * KiB;
		} else {
			off = rnd(size / 512) * 512;
			len = (1 + rnd(256)) * 512;
		}
		len = min(len, size - off);
		if (op < 50) {
			ret = vdimg_chain_pread(c, iobuf, len, off);
			if (ret || memcmp(iobuf, shadow + off, len)) {
				u64 k = 0;

				while (!ret && k < len && iobuf[k] == shadow[off + k])
					k++;
				printf("# %s: op %d: read %llu+%llu: ret %d, first difference at %llu\n",
				       what, i, (unsigned long long)off, (unsigned long long)len, ret,
				       (unsigned long long)(off + k));
				return false;
			}
		} else if (!discards || op < 90) {
			fill_pat(iobuf, len, ++write_seed, off);
			ret = vdimg_chain_pwrite(c, iobuf, len, off);
			memcpy(shadow + off, iobuf, len);
		} else {
			ret = vdimg_chain_discard(c, off, len, VDIMG_DISCARD_ZEROES);
			memset(shadow + off, 0, len);
		}
		if (ret) {
			printf("# %s: op %d (%d) at %llu+%llu failed: %d\n", what, i, op,
			       (unsigned long long)off, (unsigned long long)len, ret);
			return false;
		}
		if (i % 64 == 63 && (ret = vdimg_chain_flush(c))) {
			printf("# %s: flush failed: %d\n", what, ret);
			return false;
		}
	}
	return true;
}

/* ---- 1a: tstVDIo ---- */

static void test_vdio(const char *const *fmts, int n)
{
	const u64 size = 16 * MiB;
	struct snapfile snap[8];
	struct tchain t = {};
	u8 *shadow[8];
	char name[256], what[160];
	int k, len = 0, ret;
	bool qemu_ok = true;

	len = 0;
	for (k = 0; k < n; k++)
		len += snprintf(what + len, sizeof(what) - len, "%s%s", k ? "<-" : "", fmts[k]);
	for (k = 1; k < n; k++)
		if (strcmp(fmts[k], "qcow2") && strcmp(fmts[k], "qed"))
			qemu_ok = false;

	for (k = 0; k < n; k++) {
		struct vdimg_chain *c;
		char lw[200];

		snprintf(name, sizeof(name), "vdio-%d-%s.%s", k, what, fmts[k]);
		for (char *p = name; *p; p++)
			if (*p == '<' || *p == '-')
				*p = '_';
		if (!ok_err(tc_add(&t, fmts[k], name, size), 0, "vdio %s: create level %d (%s)",
			    what, k, fmts[k]))
			goto out;
		shadow[k] = malloc(size);
		if (k)
			memcpy(shadow[k], shadow[k - 1], size);
		else
			memset(shadow[k], 0, size);
		if (!strcmp(fmts[k], "raw") && !k) {
			/* a raw base starts with data */
			int fd = open(t.path[0], O_RDWR);

			fill_pat(shadow[0], size, 7, 0);
			ret = pwrite(fd, shadow[0], size, 0) == (ssize_t)size ? 0 : -EIO;
			close(fd);
			if (ret)
				goto out;
		}
		files_snap(&t, k, snap);
		snprintf(lw, sizeof(lw), "vdio %s: level %d", what, k);
		ret = tc_open(&t, k + 1, 0, &c);
		if (!ok_err(ret, 0, "%s: open the sub-chain [0..%d] with level %d writable", lw, k, k))
			goto out;
		ok(c->nr == k + 1 && c->size == size && chain_equals(c, shadow[k], size, lw),
		   "%s: the empty layer reads the level below", lw);
		ok(random_io(c, shadow[k], size, 120, 0, false, lw),
		   "%s: 120 random 64 KiB reads/writes match the shadow", lw);
		ok(random_io(c, shadow[k], size, 200, 1, false, lw),
		   "%s: 200 random 512-byte-granular reads/writes match the shadow", lw);
		ok(chain_equals(c, shadow[k], size, lw), "%s: whole device = shadow", lw);
		ok_err(vdimg_chain_close(c), 0, "%s: close", lw);
		ok(files_same(&t, k, snap), "%s: the %d lower image files did not change", lw, k);
		ret = tc_open(&t, k + 1, VDIMG_CHAIN_READ_ONLY, &c);
		ok(!ret && chain_equals(c, shadow[k], size, lw), "%s: reopened read-only = shadow", lw);
		vdimg_chain_close(c);
	}
	/* every sub-chain still reads what it read when it was the top */
	{
		bool all = true;

		for (k = 0; k < n; k++) {
			struct vdimg_chain *c;

			ret = tc_open(&t, k + 1, VDIMG_CHAIN_READ_ONLY, &c);
			if (ret || !chain_equals(c, shadow[k], size, what)) {
				printf("# sub-chain [0..%d] differs from its shadow\n", k);
				all = false;
			}
			vdimg_chain_close(c);
		}
		ok(all, "vdio %s: every sub-chain [0..k] still equals shadow k", what);
	}
	if (qemu_ok && have_qemu_img)
		ok(qemu_equals(t.path[n - 1], shadow[n - 1], size),
		   "vdio %s: qemu-img convert of the top reads the same", what);
out:
	for (int i = 0; i < k && i < n; i++)
		free(shadow[i]);
	tc_free(&t);
}

/* ---- 1b: tstVDSnap ---- */

/*
 * Merge layers [i..j] into layer i (i < j < t->n): every range some layer in (i, j] has (data,
 * zeros, anything but UNALLOCATED) is read as the sub-chain [0..j] reads it and written into layer i
 * opened as the top of [0..i]; layer j + 1 (if any) is re-linked to i with ->set_parent(), or the
 * chain is opened with FORCE_LINK from now on; layers (i, j] are deleted.
 */
/* Re-link layer j + 1 (if any) onto layer i; FORCE_LINK from now on if the format cannot. */
static int relink(struct tchain *t, int i, int j)
{
	struct vdimg_chain *child = NULL, *parent = NULL;
	const char *cp = t->path[j + 1], *pp = t->path[i];
	int r = -EOPNOTSUPP, ret;

	if (j + 1 >= t->n)
		return 0;
	ret = vdimg_chain_open(&child, &cp, 1, NULL, VDIMG_CHAIN_ORPHAN_OK);
	if (!ret && vdimg_tool_ops(vdimg_chain_top(child)->fmt)->set_parent &&
	    !vdimg_chain_open(&parent, &pp, 1, NULL, VDIMG_CHAIN_READ_ONLY |
			      VDIMG_CHAIN_ALLOW_RAW | VDIMG_CHAIN_ORPHAN_OK))
		r = vdimg_tool_ops(vdimg_chain_top(child)->fmt)->set_parent(vdimg_chain_top(child), pp,
							    vdimg_chain_top(parent));
	vdimg_chain_close(parent);
	ret = vdimg_chain_close(child) ?: ret;
	if (r) {
		if (r != -EOPNOTSUPP)
			printf("# relink: set_parent of %s: %d\n", cp, r);
		t->force = true;
	}
	return ret;
}

static void drop_layers(struct tchain *t, int i, int j)
{
	for (int m = i + 1; m <= j; m++) {
		unlink(t->path[m]);
		free(t->path[m]);
	}
	memmove(&t->path[i + 1], &t->path[j + 1], (t->n - j - 1) * sizeof(t->path[0]));
	memmove(&t->fmt[i + 1], &t->fmt[j + 1], (t->n - j - 1) * sizeof(t->fmt[0]));
	t->n -= j - i;
}

/* The same with libvdimg's vdimg_chain_commit() on the sub-chain [0..j] opened writable at i. */
static int merge_lib(struct tchain *t, int i, int j)
{
	struct vdimg_chain *c;
	int ret;

	ret = vdimg_chain_open_at(&c, (const char *const *)t->path, j + 1, NULL,
				  VDIMG_CHAIN_ALLOW_RAW | (t->force ? VDIMG_CHAIN_FORCE_LINK : 0), i);
	if (ret)
		return ret;
	ret = vdimg_chain_commit(c, i, 0);
	ret = vdimg_chain_close(c) ?: ret;
	if (ret)
		return ret;
	ret = relink(t, i, j);
	if (!ret)
		drop_layers(t, i, j);
	return ret;
}

static int merge(struct tchain *t, int i, int j, u64 size)
{
	struct vdimg_chain *c;
	u8 *map = calloc(size / 512, 1), *data = malloc(size);
	int ret, m;

	ret = tc_open(t, j + 1, VDIMG_CHAIN_READ_ONLY, &c);
	if (ret)
		goto out;
	for (m = i + 1; m <= j && !ret; m++) {
		struct vdimg_image *img = c->layers[m];
		u64 off = 0;

		while (off < size) {
			struct vdimg_extent ext = {};

			ret = img->fmt->map(img, off, size - off, 0, &ext);
			if (ret || !ext.length || ext.length > size - off) {
				printf("# merge: map of %s at %llu: %d\n", t->path[m],
				       (unsigned long long)off, ret);
				ret = ret ?: -EIO;
				break;
			}
			if (ext.type != VDIMG_EXT_UNALLOCATED)
				memset(map + off / 512, 1, DIV_ROUND_UP(ext.length, 512));
			off += ext.length;
		}
	}
	for (u64 s = 0; !ret && s < size / 512;) {
		u64 e = s;

		if (!map[s]) {
			s++;
			continue;
		}
		while (e < size / 512 && map[e])
			e++;
		ret = vdimg_chain_read_level(c, j, data + s * 512, (e - s) * 512, s * 512);
		s = e;
	}
	vdimg_chain_close(c);
	if (ret)
		goto out;
	ret = tc_open(t, i + 1, 0, &c);
	if (ret)
		goto out;
	for (u64 s = 0; !ret && s < size / 512;) {
		u64 e = s;

		if (!map[s]) {
			s++;
			continue;
		}
		while (e < size / 512 && map[e])
			e++;
		ret = vdimg_chain_pwrite(c, data + s * 512, (e - s) * 512, s * 512);
		s = e;
	}
	ret = vdimg_chain_close(c) ?: ret;
	if (ret)
		goto out;
	ret = relink(t, i, j);
	if (!ret)
		drop_layers(t, i, j);
out:
	free(map);
	free(data);
	return ret;
}

/* Formats a child of @parent may have (vdimgctl's rules: a VHDX child needs a VHDX parent). */
static const char *pick_child(const char *parent, const char *const *pool, int npool)
{
	for (;;) {
		const char *f = pool[rnd(npool)];

		if (!strcmp(f, "vhdx") && strcmp(parent, "vhdx"))
			continue;
		if ((!strcmp(f, "vhd") || !strcmp(f, "vdi")) &&
		    (!strcmp(parent, "raw") || !strcmp(parent, "qcow2") || !strcmp(parent, "qed")))
			continue;
		return f;
	}
}

static void test_snap(const char *base_fmt, const char *const *pool, int npool, const char *label)
{
	const u64 size = 8 * MiB;
	struct tchain t = {};
	struct vdimg_chain *c = NULL;
	u8 *shadow = calloc(size, 1);
	int round, ret, snaps = 0, merges = 0, nfile = 0;
	bool good = true;
	char name[64], what[96];

	if (!ok_err(tc_add(&t, base_fmt, "snap-base", size), 0, "snap %s: create the base", label))
		goto out;
	ret = tc_open(&t, t.n, 0, &c);
	if (!ok_err(ret, 0, "snap %s: open", label))
		goto out;
	for (round = 0; round < 30 && good; round++) {
		snprintf(what, sizeof(what), "snap %s round %d (%d layers)", label, round, t.n);
		good = random_io(c, shadow, size, 40, round & 1, true, what) &&
		       chain_equals(c, shadow, size, what);
		if (!good)
			break;
		if (rnd(2)) {
			const char *f = pick_child(t.fmt[t.n - 1], pool, npool);

			ret = vdimg_chain_close(c);
			c = NULL;
			snprintf(name, sizeof(name), "snap-%d.%s", ++nfile, f);
			ret = ret ?: tc_add(&t, f, name, size);
			ret = ret ?: tc_open(&t, t.n, 0, &c);
			snaps++;
			if (ret || !chain_equals(c, shadow, size, what)) {
				printf("# %s: snapshot to %s failed: %d\n", what, f, ret);
				good = false;
				break;
			}
		}
		if (t.n >= 2 && rnd(3) == 0) {
			int i = rnd(t.n - 1), j = i + 1 + rnd(t.n - 1 - i);

			ret = vdimg_chain_close(c);
			c = NULL;
			/* alternately libvdimg's commit and the test's own merge */
			printf("# %s: merge [%d..%d] of %d (%s)\n", what, i, j, t.n,
			       merges & 1 ? "test's merge" : "vdimg_chain_commit");
			ret = ret ?: (merges & 1 ? merge(&t, i, j, size) : merge_lib(&t, i, j));
			ret = ret ?: tc_open(&t, t.n, 0, &c);
			merges++;
			if (ret || !chain_equals(c, shadow, size, what)) {
				printf("# %s: merge [%d..%d] failed: %d (%s)\n", what, i, j, ret,
				       ktap_last_msg);
				good = false;
				break;
			}
		}
	}
	ok(good, "snap %s: 30 rounds of writes/discards, %d snapshots, %d merges: device = shadow "
	   "after every step", label, snaps, merges);
	if (c) {
		ok_err(vdimg_chain_close(c), 0, "snap %s: close", label);
		c = NULL;
		ret = tc_open(&t, t.n, VDIMG_CHAIN_READ_ONLY, &c);
		ok(!ret && chain_equals(c, shadow, size, label),
		   "snap %s: reopened read-only (%d layers) = shadow", label, t.n);
	}
out:
	vdimg_chain_close(c);
	free(shadow);
	tc_free(&t);
}

/* ---- 1c: depth ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 4 KiB reads over [off, off + len) of @c, @n times; seconds, or -1 on a wrong byte. */
static double time_reads(struct vdimg_chain *c, u64 off, u64 len, unsigned int seed, int n)
{
	double t0 = now_s();

	for (int i = 0; i < n; i++) {
		u64 o = off + rnd(len / 4096) * 4096;

		if (vdimg_chain_pread(c, iobuf, 4096, o) || !is_pat(iobuf, 4096, seed, o))
			return -1;
	}
	return now_s() - t0;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void test_depth(const char *fmt, int depth)
{
	const u64 size = 4 * MiB, boff = 512 * KiB, toff = 2 * MiB, dlen = 256 * KiB;
	struct tchain t = {};
	struct vdimg_chain *c = NULL;
	char **rp = NULL;
	u32 *rf = NULL;
	int i, ret, rn = 0;
	double t1, tn;
	char name[64];

	/* the base gets data before the children exist */
	ret = tc_add(&t, fmt, "depth-0", size);
	if (!ret)
		ret = tc_open(&t, 1, 0, &c);
	if (!ret) {
		fill_pat(iobuf, dlen, 21, boff);
		ret = vdimg_chain_pwrite(c, iobuf, dlen, boff);
		ret = vdimg_chain_close(c) ?: ret;
		c = NULL;
	}
	for (i = 1; !ret && i < depth; i++) {
		snprintf(name, sizeof(name), "depth-%d.%s", i, fmt);
		ret = tc_add(&t, fmt, name, 0);
	}
	if (!ok_err(ret, 0, "depth %s: %d-layer chain created", fmt, depth))
		goto out;
	ret = vdimg_chain_resolve(t.path[depth - 1], VDIMG_FMT_AUTO, &rp, &rf, &rn);
	ok(!ret && rn == depth && same_file(rp[0], t.path[0]) && same_file(rp[1], t.path[1]) &&
	   same_file(rp[depth - 1], t.path[depth - 1]),
	   "depth %s: vdimg_chain_resolve finds all %d layers (found %d)", fmt, depth, rn);
	if (!ret)
		vdimg_chain_resolve_free(rp, rf, rn);
	ret = tc_open(&t, depth, 0, &c);
	if (!ok_err(ret, 0, "depth %s: open %d layers", fmt, depth))
		goto out;
	fill_pat(iobuf, dlen, 22, toff);
	ok(!vdimg_chain_pwrite(c, iobuf, dlen, toff), "depth %s: write to the top", fmt);
	ok(!vdimg_chain_pread(c, iobuf2, dlen, boff) && is_pat(iobuf2, dlen, 21, boff),
	   "depth %s: data in the base is found through %d layers", fmt, depth);
	ok(!vdimg_chain_pread(c, iobuf2, dlen, toff) && is_pat(iobuf2, dlen, 22, toff),
	   "depth %s: data in the top reads back", fmt);
	ok(!vdimg_chain_pread(c, iobuf2, 64 * KiB, 3 * MiB) && is_byte(iobuf2, 64 * KiB, 0),
	   "depth %s: unwritten range reads zeros", fmt);
	ok_err(vdimg_chain_close(c), 0, "depth %s: close", fmt);
	c = NULL;

	/* time top-resident reads: the top alone (depth 1) and the whole chain */
	{
		const char *top = t.path[depth - 1];
		struct vdimg_chain *one = NULL;
		int reps = 20000;

		ret = vdimg_chain_open(&one, &top, 1, NULL, VDIMG_CHAIN_READ_ONLY |
				       VDIMG_CHAIN_ORPHAN_OK);
		ret = ret ?: tc_open(&t, depth, VDIMG_CHAIN_READ_ONLY, &c);
		if (!ok_err(ret, 0, "depth %s: open for timing", fmt)) {
			vdimg_chain_close(one);
			goto out;
		}
		time_reads(one, toff, dlen, 22, 1000);	/* warm up */
		t1 = time_reads(one, toff, dlen, 22, reps);
		tn = time_reads(c, toff, dlen, 22, reps);
		ok(t1 >= 0 && tn >= 0, "depth %s: timed reads of top data are correct", fmt);
		printf("# %s depth1: %.3f s, depth%d: %.3f s for %d 4 KiB reads\n", fmt, t1, depth,
		       tn, reps);
		printf("# depth%d/depth1 read time ratio: %.2f (%s)\n", depth, tn / t1, fmt);
		ok(t1 > 0 && tn / t1 < 5, "depth %s: top-resident reads at depth %d cost < 5x depth 1",
		   fmt, depth);
		vdimg_chain_close(one);
	}
out:
	vdimg_chain_close(c);
	for (i = 0; i < t.n; i++)
		unlink(t.path[i]);
	tc_free(&t);
}

/* ---- 1d: errors ---- */

static void alarm_hang(int sig)
{
	printf("Bail out! a chain operation hung (alarm)\n");
	_exit(1);
}

static void put_data(const char *path, unsigned int seed, u64 off, u64 len)
{
	struct vdimg_chain *c;
	const char *p = path;

	if (vdimg_chain_open(&c, &p, 1, NULL, VDIMG_CHAIN_ORPHAN_OK)) {
		printf("# cannot open %s to put data\n", path);
		return;
	}
	fill_pat(iobuf, len, seed, off);
	vdimg_chain_pwrite(c, iobuf, len, off);
	vdimg_chain_close(c);
}

static void test_errors(void)
{
	static const char *const fmts[] = { "vhd", "vdi", "vhdx" };
	struct snapfile snap[4];
	struct tchain t = {};
	struct vdimg_chain *c;
	char **rp;
	u32 *rf;
	int rn, ret;

	signal(SIGALRM, alarm_hang);
	for (int f = 0; f < 3; f++) {
		const char *fmt = fmts[f];
		char a[512], b[512], ch[512], moved[512];
		const char *paths[2];

		snprintf(a, sizeof(a), "%s", tpath("err-a"));
		snprintf(b, sizeof(b), "%s", tpath("err-b"));
		snprintf(ch, sizeof(ch), "%s", tpath("err-child"));
		/* elsewhere: VDI finds a parent by its UUID in the child's directory */
		mkdir(tpath("elsewhere"), 0700);
		snprintf(moved, sizeof(moved), "%s", tpath("elsewhere/err-a.moved"));
		unlink(a), unlink(b), unlink(ch), unlink(moved);
		ret = mkimg(fmt, a, 8 * MiB, NULL, default_bs(fmt));
		ret = ret ?: mkimg(fmt, b, 8 * MiB, NULL, default_bs(fmt));
		if (!ret) {
			put_data(a, 31, 0, 64 * KiB);
			put_data(b, 32, 0, 64 * KiB);
		}
		ret = ret ?: mkimg(fmt, ch, 0, a, default_bs(fmt));
		if (!ok_err(ret, 0, "errors %s: two bases of 8 MiB and a child of the first", fmt))
			continue;
		t.n = 3;
		t.path[0] = a, t.path[1] = b, t.path[2] = ch;
		files_snap(&t, 3, snap);
		t.n = 0;

		paths[0] = b;
		paths[1] = ch;
		ktap_last_msg[0] = 0;
		ret = vdimg_chain_open(&c, paths, 2, NULL, 0);
		ok(ret == -ESTALE && strstr(ktap_last_msg, "err-child") && strstr(ktap_last_msg, "err-b"),
		   "errors %s: child of A over B is ESTALE, message names both (%s)", fmt, ktap_last_msg);
		if (!ret)
			vdimg_chain_close(c);
		ret = vdimg_chain_open(&c, paths, 2, NULL, VDIMG_CHAIN_READ_ONLY | VDIMG_CHAIN_FORCE_LINK);
		ok(!ret && !vdimg_chain_pread(c, iobuf, 64 * KiB, 0) && is_pat(iobuf, 64 * KiB, 32, 0),
		   "errors %s: with FORCE_LINK it opens and reads B", fmt);
		if (!ret)
			vdimg_chain_close(c);
		paths[0] = a;
		ret = vdimg_chain_open(&c, paths, 2, NULL, VDIMG_CHAIN_READ_ONLY);
		ok(!ret && !vdimg_chain_pread(c, iobuf, 64 * KiB, 0) && is_pat(iobuf, 64 * KiB, 31, 0),
		   "errors %s: over the right parent it opens and reads A", fmt);
		if (!ret)
			vdimg_chain_close(c);

		/* the resolver finds B where A was: the link check still refuses it */
		if (rename(a, moved) || rename(b, a))
			printf("# rename failed\n");
		ktap_last_msg[0] = 0;
		alarm(60);
		ret = vdimg_chain_resolve(ch, VDIMG_FMT_AUTO, &rp, &rf, &rn);
		if (!ret) {
			struct vdimg_chain *c2 = NULL;

			ret = vdimg_chain_open(&c2, (const char *const *)rp, rn, rf, 0);
			vdimg_chain_resolve_free(rp, rf, rn);
			if (!ret)
				vdimg_chain_close(c2);
		}
		alarm(0);
		ok(ret == -ESTALE || ret == -ENOENT,
		   "errors %s: B renamed to A's name: resolve + open refuses (%d: %s)", fmt, ret,
		   ktap_last_msg);
		if (rename(a, b) || rename(moved, a))
			printf("# rename back failed\n");

		/* missing parent */
		if (rename(a, moved))
			printf("# rename failed\n");
		ktap_last_msg[0] = 0;
		ret = vdimg_chain_resolve(ch, VDIMG_FMT_AUTO, &rp, &rf, &rn);
		ok(ret == -ENOENT && strstr(ktap_last_msg, "err-child") &&
		   (strstr(ktap_last_msg, "err-a") || !strcmp(fmt, "vdi")),
		   "errors %s: missing parent: ENOENT, message names the child and the missing file (%s)",
		   fmt, ktap_last_msg);
		if (!ret)
			vdimg_chain_resolve_free(rp, rf, rn);
		if (rename(moved, a))
			printf("# rename back failed\n");

		/* vdimgctl: a differencing image over a missing file */
		if (vdimgctl) {
			ret = sh("'%s' create -t %s --parent '%s' '%s' >'%s' 2>&1", vdimgctl, fmt,
				 tpath("no-such-parent"), tpath("err-new"), tpath("err-out"));
			size_t ol;
			char *out = (char *)slurp(tpath("err-out"), &ol);

			if (out)
				out[ol] = 0;
			ok(ret == 1 && out && strstr(out, "no-such-parent") &&
			   access(tpath("err-new"), F_OK),
			   "errors %s: vdimgctl create --parent MISSING fails naming it, creates nothing",
			   fmt);
			free(out);
		}

		t.n = 3;
		ok(files_same(&t, 3, snap), "errors %s: no image changed", fmt);
		t.n = 0;
	}

	/*
	 * A VHD, VDI or VHDX child must have its parent's size: the driver refuses anything else
	 * (drivers/dev.c vdimg_link_check), and the library mirrors the driver. VDI and VHDX create
	 * let the size be chosen, so such a child is easy to make.
	 */
	for (int f = 1; f < 3; f++) {
		const char *fmt = fmts[f];
		char a[512], ch[512];
		const char *paths[2] = { a, ch };

		snprintf(a, sizeof(a), "%s", tpath("sz-a"));
		snprintf(ch, sizeof(ch), "%s", tpath("sz-child"));
		unlink(a), unlink(ch);
		ret = mkimg(fmt, a, 4 * MiB, NULL, default_bs(fmt));
		if (!ret)
			put_data(a, 41, 0, 4 * MiB);
		ret = ret ?: mkimg(fmt, ch, 8 * MiB, a, default_bs(fmt));
		if (!ok_err(ret, 0, "errors %s: a child of 8 MiB over a 4 MiB parent", fmt))
			continue;
		t.n = 2, t.path[0] = a, t.path[1] = ch;
		files_snap(&t, 2, snap);
		ktap_last_msg[0] = 0;
		ret = vdimg_chain_open(&c, paths, 2, NULL, 0);
		ok(ret < 0 && strstr(ktap_last_msg, "size"),
		   "errors %s: parent size != child size is refused like the driver does (%d: %s)",
		   fmt, ret, ktap_last_msg);
		if (!ret)
			vdimg_chain_close(c);
		ok(files_same(&t, 2, snap), "errors %s: size mismatch: no image changed", fmt);
		t.n = 0;
	}

	if (!have_qemu_img) {
		skip("errors: qemu-img not found: loops and qcow2 size tests");
		return;
	}
	/* loops made by qemu-img rebase -u */
	{
		char x[512], y[512];
		const char *paths[2] = { x, y };

		snprintf(x, sizeof(x), "%s", tpath("loop-x.qcow2"));
		snprintf(y, sizeof(y), "%s", tpath("loop-y.qcow2"));
		ret = sh("qemu-img create -q -f qcow2 '%s' 8M && qemu-img create -q -f qcow2 '%s' 8M && "
			 "qemu-img rebase -u -f qcow2 -b '%s' -F qcow2 '%s' && "
			 "qemu-img rebase -u -f qcow2 -b '%s' -F qcow2 '%s'", x, y, y, x, x, y);
		if (ok(ret == 0, "errors loop: x -> y -> x made by qemu-img rebase -u")) {
			t.n = 2, t.path[0] = x, t.path[1] = y;
			files_snap(&t, 2, snap);
			ktap_last_msg[0] = 0;
			alarm(60);
			ret = vdimg_chain_resolve(x, VDIMG_FMT_AUTO, &rp, &rf, &rn);
			alarm(0);
			ok(ret == -ELOOP && strstr(ktap_last_msg, "loop"),
			   "errors loop: resolve is ELOOP with a message (%s)", ktap_last_msg);
			if (!ret)
				vdimg_chain_resolve_free(rp, rf, rn);
			ret = vdimg_chain_open(&c, paths, 2, NULL, VDIMG_CHAIN_READ_ONLY |
					       VDIMG_CHAIN_ORPHAN_OK);
			ok(ret == 0, "errors loop: given explicitly as [x, y] (ORPHAN_OK: x is a "
			   "differencing base), y over x opens");
			if (!ret)
				vdimg_chain_close(c);
			ok(files_same(&t, 2, snap), "errors loop: neither image changed");
			t.n = 0;
		}
		ret = sh("qemu-img rebase -u -f qcow2 -b '%s' -F qcow2 '%s'", x, x);
		if (ok(ret == 0, "errors self-loop: x -> x made by qemu-img rebase -u")) {
			t.n = 1, t.path[0] = x;
			files_snap(&t, 1, snap);
			ktap_last_msg[0] = 0;
			alarm(60);
			ret = vdimg_chain_resolve(x, VDIMG_FMT_AUTO, &rp, &rf, &rn);
			alarm(0);
			ok(ret == -ELOOP, "errors self-loop: resolve is ELOOP (%s)", ktap_last_msg);
			if (!ret)
				vdimg_chain_resolve_free(rp, rf, rn);
			if (vdimgctl)
				ok(sh("timeout 60 '%s' info '%s' >/dev/null 2>&1; test $? -ne 124",
				      vdimgctl, x) == 0, "errors self-loop: vdimgctl info does not hang");
			ok(files_same(&t, 1, snap), "errors self-loop: the image did not change");
			t.n = 0;
		}
	}
	/* qcow2 over a smaller base: zeros past the base's end, as qemu reads it */
	{
		char base[512], top[512];
		u8 *ref;
		size_t len;

		snprintf(base, sizeof(base), "%s", tpath("small-base.qcow2"));
		snprintf(top, sizeof(top), "%s", tpath("big-top.qcow2"));
		ret = sh("qemu-img create -q -f qcow2 '%s' 3M && "
			 "qemu-io -f qcow2 -c 'write -P 0x5a 0 3M' '%s' >/dev/null && "
			 "qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s' 8M && "
			 "qemu-io -f qcow2 -c 'write -P 0x33 2M 2M' '%s' >/dev/null && "
			 "qemu-img convert -O raw '%s' '%s'", base, base, base, top, top, top,
			 tpath("small-expect.raw"));
		ref = ret ? NULL : slurp(tpath("small-expect.raw"), &len);
		if (ok(ref && len == 8 * MiB, "errors qcow2 size: 8 MiB over a 3 MiB base (qemu-img)")) {
			const char *paths[2] = { base, top };

			ret = vdimg_chain_open(&c, paths, 2, NULL, 0);
			if (ok_err(ret, 0, "errors qcow2 size: opens")) {
				ok(chain_equals(c, ref, 8 * MiB, "qcow2 size"),
				   "errors qcow2 size: reads like qemu-img convert (zeros past the base)");
				/* a write in the gap fills from zeros, not past the base's end */
				fill_pat(iobuf, 4096, 43, 0);
				memcpy(ref + 5 * MiB, iobuf, 4096);
				ok(!vdimg_chain_pwrite(c, iobuf, 4096, 5 * MiB) &&
				   chain_equals(c, ref, 8 * MiB, "qcow2 size write"),
				   "errors qcow2 size: a write past the base's end reads back, zeros around");
				vdimg_chain_close(c);
				ok(qemu_equals(top, ref, 8 * MiB), "errors qcow2 size: qemu agrees after it");
			}
		}
		free(ref);
	}
}

int main(void)
{
	static const char *const vdio_chains[][4] = {
		{ "vhd", "vhd", "vhd" }, { "vdi", "vdi", "vdi" }, { "vhdx", "vhdx", "vhdx" },
		{ "qcow2", "qcow2", "qcow2" }, { "qed", "qed", "qed" },
		{ "vhdx", "vdi", "vhd", "qcow2" }, { "vdi", "vhd", "qed" }, { "raw", "qed", "qcow2" },
		{ "vhd", "qcow2", "qed" }, { "raw", "qcow2", "qcow2" }, { "qcow2", "qed", "qcow2" },
		{ "vmdk", "vmdk", "vmdk", "vmdk" }, { "vdi", "vmdk", "qcow2" }, { "vmdk", "qed", "vmdk" },
	};
	static const char *const all_children[] = { "vhd", "vdi", "vhdx", "qcow2", "qed" };
	static const char *const q_children[] = { "qcow2" };
	static const char *const vhd_children[] = { "vhd" };
	static const char *const vdi_children[] = { "vdi" };
	static const char *const vhdx_children[] = { "vhdx" };
	static const char *const qed_children[] = { "qed" };
	static const char *const vmdk_children[] = { "vmdk" };
	static const char *const vmdk_mixed[] = { "vmdk", "qcow2", "vhdx" };
	const char *seed = getenv("VDIMG_SEED");

	ktap_start();
	if (seed)
		rng_state = strtoull(seed, NULL, 0) ?: 1;
	printf("# seed 0x%llx (VDIMG_SEED)\n", (unsigned long long)rng_state);
	vdimgctl = getenv("VDIMGCTL");
	have_qemu_img = sh("qemu-img --version >/dev/null 2>&1") == 0;
	iobuf = malloc(16 * MiB);
	iobuf2 = malloc(16 * MiB);

	for (size_t i = 0; i < ARRAY_SIZE(vdio_chains); i++) {
		int n = 0;

		while (n < 4 && vdio_chains[i][n])
			n++;
		test_vdio(vdio_chains[i], n);
	}

	test_snap("qcow2", q_children, 1, "qcow2");
	test_snap("vhd", vhd_children, 1, "vhd");
	test_snap("vdi", vdi_children, 1, "vdi");
	test_snap("vhdx", vhdx_children, 1, "vhdx");
	test_snap("qed", qed_children, 1, "qed");
	test_snap("vhdx", all_children, ARRAY_SIZE(all_children), "mixed");
	test_snap("raw", all_children, ARRAY_SIZE(all_children), "raw-mixed");
	test_snap("vmdk", vmdk_children, 1, "vmdk");
	test_snap("vdi", vmdk_mixed, ARRAY_SIZE(vmdk_mixed), "vmdk-mixed");

	test_depth("qcow2", 300);
	test_depth("vhd", 300);

	test_errors();
	free(iobuf);
	free(iobuf2);
	return ktap_finish();
}
