// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of libvdimg's chain operations (tools/lib/chainops.c) over real backends: commit of a
 * three-layer chain into its middle layer and into its base (-b), for VHD, VDI, VHDX, QCOW2 over
 * VHD and QCOW2, checked against a raw shadow of what the chain must read; safe rebase (the image
 * reads the same over its new parent) and unsafe rebase (only the link changes); ->set_parent()
 * refusing a path with no room (-ENOSPC) without changing the image; a writable lower layer
 * (vdimg_chain_open_at) leaving the layers above it untouched; VDIMG_CHAIN_UNSAFE (convert's
 * open) leaving out every sync until the flush, which syncs, and the image then reading right. KTAP.
 */
#include <errno.h>
#include "ktap.h"
#include "chain.h"

#define SZ	(16ULL << 20)

struct fmtcase {
	const char *name;
	u32 base, mid, top;	/* formats of the layers */
};

static const struct fmtcase cases[] = {
	{ "vhd->vhd->vhd", VDIMG_FMT_VHD, VDIMG_FMT_VHD, VDIMG_FMT_VHD },
	{ "vdi->vdi->vdi", VDIMG_FMT_VDI, VDIMG_FMT_VDI, VDIMG_FMT_VDI },
	{ "vhdx->vhdx->vhdx", VDIMG_FMT_VHDX, VDIMG_FMT_VHDX, VDIMG_FMT_VHDX },
	{ "qcow2 over vhd", VDIMG_FMT_VHD, VDIMG_FMT_QCOW2, VDIMG_FMT_QCOW2 },
	{ "qcow2->qcow2->qcow2", VDIMG_FMT_QCOW2, VDIMG_FMT_QCOW2, VDIMG_FMT_QCOW2 },
};

static unsigned int rnd_state = 12345;

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static unsigned int rnd(void)
{
	rnd_state = rnd_state * 1103515245 + 12345;
	return rnd_state >> 8;
}

static u32 mk_block_size;	/* of the images mk() creates; 0: the format's default */

/* Create @path as an empty @fmt image of SZ bytes, over @parent (NULL: none). */
static int mk(const char *path, u32 fmt, const char *parent)
{
	const struct vdimg_format *f = vdimg_format_by_id(fmt);
	struct vdimg_create_opts co = { .size = SZ, .block_size = mk_block_size };
	struct vdimg_image pimg = {};
	struct vdimg_file *file;
	int fd, pfd = -1, ret;

	if (!f || !vdimg_tool_ops(f)->create)
		return -EOPNOTSUPP;
	if (parent) {
		pfd = open(parent, O_RDONLY);
		pimg.name = parent;
		pimg.file = vdimg_file_from_fd(pfd);
		ret = vdimg_image_open(&pimg, VDIMG_FMT_AUTO, VDIMG_OPEN_READ_ONLY);
		if (ret)
			return ret;
		co.parent = parent;
		co.parent_img = &pimg;
	}
	unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
	file = vdimg_file_from_fd(fd);
	ret = vdimg_tool_ops(f)->create(file, &co);
	vdimg_file_free(file);
	close(fd);
	if (parent) {
		vdimg_image_close(&pimg);
		vdimg_file_free(pimg.file);
		close(pfd);
	}
	return ret;
}

/* Random writes (and one zeroing) into the top of @paths[0..n), mirrored into @shadow. */
static int scribble(const char *const *paths, int n, u8 *shadow, unsigned int seed, bool zero)
{
	struct vdimg_chain *c;
	u8 *buf = malloc(1 << 20);
	int i, ret;

	ret = vdimg_chain_open(&c, paths, n, NULL, 0);
	if (ret) {
		free(buf);
		return ret;
	}
	for (i = 0; i < 12 && !ret; i++) {
		u64 len = ((rnd() % 1024) + 1) * 512, off = (rnd() % (SZ / 512)) * 512;

		if (len > SZ - off)
			len = SZ - off;
		fill_pat(buf, len, seed + i, off);
		ret = vdimg_chain_pwrite(c, buf, len, off);
		memcpy(shadow + off, buf, len);
	}
	if (!ret && zero) {
		/* a zeroed range that hides the data below (whole MiB: every format can say it) */
		u64 off = (rnd() % 14 + 1) << 20;

		ret = vdimg_chain_discard(c, off, 1 << 20, VDIMG_DISCARD_ZEROES);
		memset(shadow + off, 0, 1 << 20);
	}
	free(buf);
	if (ret) {
		vdimg_chain_close(c);
		return ret;
	}
	return vdimg_chain_close(c);
}

/* Does the chain @paths[0..n) read as @want? (links forced: commit may renew identities) */
static bool reads_as(const char *const *paths, int n, const u8 *want)
{
	struct vdimg_chain *c;
	u8 *buf = malloc(SZ);
	bool same = false;

	if (buf && !vdimg_chain_open(&c, paths, n, NULL, VDIMG_CHAIN_READ_ONLY |
				     VDIMG_CHAIN_FORCE_LINK)) {
		same = !vdimg_chain_pread(c, buf, SZ, 0) && !memcmp(buf, want, SZ);
		vdimg_chain_close(c);
	}
	free(buf);
	return same;
}

/* base <- mid <- top with data in each; @shadow[] gets what the whole chain reads. */
static int build(const struct fmtcase *fc, char names[3][512], u8 *shadow, u8 *base_only,
		 u8 *base_mid)
{
	const char *p[3] = { names[0], names[1], names[2] };
	int ret;

	memset(shadow, 0, SZ);
	ret = mk(p[0], fc->base, NULL);
	if (!ret)
		ret = scribble(p, 1, shadow, 100, false);
	if (base_only)
		memcpy(base_only, shadow, SZ);
	if (!ret)
		ret = mk(p[1], fc->mid, p[0]);
	if (!ret)
		ret = scribble(p, 2, shadow, 200, true);
	if (base_mid)
		memcpy(base_mid, shadow, SZ);
	if (!ret)
		ret = mk(p[2], fc->top, p[1]);
	if (!ret)
		ret = scribble(p, 3, shadow, 300, false);
	return ret;
}

static void test_commit(const struct fmtcase *fc)
{
	char names[3][512];
	const char *p[3] = { names[0], names[1], names[2] };
	u8 *shadow = malloc(SZ), *base_only = malloc(SZ), *base_mid = malloc(SZ);
	struct vdimg_chain *c;
	int ret;

	snprintf(names[0], 512, "%s", tpath("base.img"));
	snprintf(names[1], 512, "%s", tpath("mid.img"));
	snprintf(names[2], 512, "%s", tpath("top.img"));

	/* 1. commit top into mid (the default BASE) */
	ret = build(fc, names, shadow, base_only, base_mid);
	if (!ok(!ret, "%s: build a 3-layer chain with data in every layer", fc->name)) {
		printf("# %s\n", strerror(-ret));
		goto out;
	}
	ok(reads_as(p, 3, shadow), "%s: the chain reads as its raw shadow", fc->name);
	ret = vdimg_chain_open_at(&c, p, 3, NULL, 0, 1);
	ok_err(ret, 0, "%s: open with the middle layer writable", fc->name);
	if (ret)
		goto out;
	ret = vdimg_chain_commit(c, 1, 0);
	ok_err(ret, 0, "%s: commit top into mid", fc->name);
	ok_err(vdimg_chain_close(c), 0, "%s: close after commit flushes cleanly", fc->name);
	ok(reads_as(p, 2, shadow), "%s: base <- mid now reads what the 3-layer chain read", fc->name);
	ok(reads_as(p, 3, shadow), "%s: the top still reads the same", fc->name);
	ok(reads_as(p, 1, base_only), "%s: the base was not touched", fc->name);

	/* 2. commit -b base over two layers */
	ret = build(fc, names, shadow, base_only, NULL);
	ok(!ret, "%s: rebuild the chain", fc->name);
	ret = ret ? ret : vdimg_chain_open_at(&c, p, 3, NULL, 0, 0);
	if (!ret) {
		ret = vdimg_chain_commit(c, 0, 0);
		ret = vdimg_chain_close(c) ?: ret;
	}
	ok_err(ret, 0, "%s: commit top and mid into base", fc->name);
	ok(reads_as(p, 1, shadow), "%s: the base alone reads what the 3-layer chain read", fc->name);
	ok(reads_as(p, 3, shadow), "%s: the 3-layer chain still reads the same", fc->name);
	ret = vdimg_chain_open_at(&c, p, 3, NULL, 0, 2);
	if (!ret) {
		ok_err(vdimg_chain_commit(c, 2, 0), -EINVAL, "%s: commit into the top is refused",
		       fc->name);
		vdimg_chain_close(c);
	}

	/* 3. safe rebase of top from mid onto base: reads the same */
	ret = build(fc, names, shadow, NULL, NULL);
	if (!ret) {
		struct vdimg_chain *np;

		ret = vdimg_chain_open(&c, p, 3, NULL, 0);
		if (!ret) {
			ret = vdimg_chain_open(&np, p, 1, NULL, VDIMG_CHAIN_READ_ONLY);
			if (!ret) {
				ret = vdimg_chain_rebase(c, np, "base.img", 0);
				vdimg_chain_close(np);
			}
			ret = vdimg_chain_close(c) ?: ret;
		}
	}
	if (fc->top == VDIMG_FMT_VHDX && fc->base != VDIMG_FMT_VHDX) {
		skip("%s: safe rebase", fc->name);
	} else {
		const char *q[2] = { names[0], names[2] };
		char **rp = NULL;
		u32 *rf = NULL;
		int rn = 0;

		ok_err(ret, 0, "%s: safe rebase of top onto base", fc->name);
		ok(reads_as(q, 2, shadow), "%s: base <- top reads as the old 3-layer chain", fc->name);
		ret = vdimg_chain_resolve(names[2], VDIMG_FMT_AUTO, &rp, &rf, &rn);
		ok(!ret && rn == 2 && same_file(rp[0], names[0]),
		   "%s: the top's recorded parent is now the base (chain of %d)", fc->name, rn);
		vdimg_chain_resolve_free(rp, rf, rn);
		ret = vdimg_chain_open(&c, q, 2, NULL, VDIMG_CHAIN_READ_ONLY);
		ok_err(ret, 0, "%s: base <- top opens with the links checked", fc->name);
		if (!ret)
			vdimg_chain_close(c);
	}

	/* 4. unsafe rebase: only the link; what mid held now reads from the base */
	ret = build(fc, names, shadow, base_only, base_mid);
	if (!ret) {
		struct vdimg_chain *np;

		ret = vdimg_chain_open(&c, &p[2], 1, NULL, VDIMG_CHAIN_ORPHAN_OK);
		if (!ret) {
			ret = vdimg_chain_open(&np, p, 1, NULL, VDIMG_CHAIN_READ_ONLY);
			if (!ret) {
				ret = vdimg_chain_rebase(c, np, names[0], VDIMG_REBASE_UNSAFE);
				vdimg_chain_close(np);
			}
			ret = vdimg_chain_close(c) ?: ret;
		}
		ok_err(ret, 0, "%s: unsafe rebase of top onto base (absolute path)", fc->name);
		if (!ret) {
			const char *q[2] = { names[0], names[2] };
			u8 *got = malloc(SZ);
			u64 i, same_top = 0, from_base = 0, bad = 0;

			ret = vdimg_chain_open(&c, q, 2, NULL, VDIMG_CHAIN_READ_ONLY);
			ok_err(ret, 0, "%s: base <- top opens with the links checked", fc->name);
			if (!ret && !vdimg_chain_pread(c, got, SZ, 0)) {
				/*
				 * every sector reads as before (the top's own data, or what a cluster
				 * format copied into the top when it was written) or as the base, and
				 * some that read mid's data before now read the base's
				 */
				for (i = 0; i < SZ; i += 512) {
					bool t = !memcmp(got + i, shadow + i, 512);
					bool b = !memcmp(got + i, base_only + i, 512);

					same_top += t;
					from_base += b && !t;
					bad += !t && !b;
				}
				ok(!bad && same_top && from_base,
				   "%s: reads are the old chain's (%llu sectors) or the base's (%llu changed), nothing else (%llu bad)",
				   fc->name, (unsigned long long)same_top,
				   (unsigned long long)from_base, (unsigned long long)bad);
			} else {
				ok(0, "%s: read base <- top", fc->name);
			}
			if (!ret)
				vdimg_chain_close(c);
			free(got);
		}
	}
out:
	free(shadow);
	free(base_only);
	free(base_mid);
}

/* A parent path longer than the locator space: -ENOSPC and the image unchanged. */
static void test_enospc(u32 fmt, const char *name)
{
	char dir[1400], parent[1500], child[600];
	struct vdimg_chain *c, *np;
	size_t len0, len1;
	u8 *before, *after;
	int i, ret;

	snprintf(child, sizeof(child), "%s", tpath("child.img"));
	snprintf(parent, sizeof(parent), "%s", tpath("p0.img"));
	snprintf(dir, sizeof(dir), "%s", tpath(""));
	for (i = 0; i < 5; i++) {
		size_t l = strlen(dir);

		memset(dir + l, 'd', 200);
		dir[l + 200] = 0;
		mkdir(dir, 0755);
		strcat(dir, "/");
	}
	if (mk(parent, fmt, NULL) || mk(child, fmt, parent)) {
		ok(0, "%s: create parent and child", name);
		return;
	}
	snprintf(parent, sizeof(parent), "%sp1.img", dir);
	if (mk(parent, fmt, NULL)) {
		ok(0, "%s: create a parent with a 1000-byte path", name);
		return;
	}
	before = slurp(child, &len0);
	ret = vdimg_chain_open(&c, (const char *[]){ child }, 1, NULL, VDIMG_CHAIN_ORPHAN_OK);
	if (!ret) {
		ret = vdimg_chain_open(&np, (const char *[]){ parent }, 1, NULL,
				       VDIMG_CHAIN_READ_ONLY);
		if (!ret) {
			ret = vdimg_chain_rebase(c, np, parent, VDIMG_REBASE_UNSAFE);
			vdimg_chain_close(np);
		}
		vdimg_chain_close(c);
	}
	if (fmt == VDIMG_FMT_VHDX) {
		/* the metadata region has room: the long path is recorded */
		char **rp = NULL;
		u32 *rf = NULL;
		int rn = 0;

		ok_err(ret, 0, "%s: a 1000-byte parent path fits the metadata region", name);
		ret = vdimg_chain_resolve(child, VDIMG_FMT_AUTO, &rp, &rf, &rn);
		ok(!ret && rn == 2 && same_file(rp[0], parent), "%s: the child now resolves to it",
		   name);
		vdimg_chain_resolve_free(rp, rf, rn);
		free(before);
		return;
	}
	ok_err(ret, -ENOSPC, "%s: a 1000-byte parent path does not fit the locators: -ENOSPC", name);
	after = slurp(child, &len1);
	/* the writable open may renew identities (VHDX file write GUID); VHD must be byte-equal */
	if (fmt == VDIMG_FMT_VHD)
		ok(before && after && len0 == len1 && !memcmp(before, after, len0),
		   "%s: the image is byte-identical after the refusal", name);
	free(before);
	free(after);
}

/* the syncs of the image file in the write log */
static int wlog_syncs(void)
{
	size_t i;
	int n = 0;

	for (i = 0; i < vdimg_wlog.nr; i++)
		n += vdimg_wlog.rec[i].kind == VDIMG_WLOG_SYNC;
	return n;
}

/*
 * Writes into a new @fmt image (allocation units of @unit bytes) that allocate new tables (with
 * small units, many), with and without VDIMG_CHAIN_UNSAFE: the format syncs to order what it
 * writes; unsafe, no sync comes before vdimg_chain_flush(), which syncs; either way the image
 * reads back the writes.
 */
static void test_unsafe(u32 fmt, u32 unit, const char *name)
{
	const char *path = tpath("unsafe.img");
	u8 *shadow = calloc(1, SZ), *buf = malloc(SZ);
	int pass, before, ret;

	for (pass = 0; pass < 2; pass++) {
		bool unsafe = pass;
		struct vdimg_chain *c;
		u64 off;

		memset(shadow, 0, SZ);
		mk_block_size = unit;
		ret = mk(path, fmt, NULL);
		mk_block_size = 0;
		if (!ret)
			ret = vdimg_chain_open(&c, &path, 1, NULL, unsafe ? VDIMG_CHAIN_UNSAFE : 0);
		if (ret) {
			ok_err(ret, 0, "%s: create and open (%s)", name, unsafe ? "unsafe" : "safe");
			continue;
		}
		vdimg_wlog_reset();
		vdimg_wlog.on = true;
		for (off = 0; off < SZ && !ret; off += 3 << 20) {
			fill_pat(shadow + off, 1 << 20, 7, off);
			ret = vdimg_chain_pwrite(c, shadow + off, 1 << 20, off);
		}
		before = wlog_syncs();
		if (!ret)
			ret = vdimg_chain_flush(c);
		ok_err(ret, 0, "%s: writes and flush (%s)", name, unsafe ? "unsafe" : "safe");
		if (unsafe)
			ok(!before && wlog_syncs() > 0,
			   "%s: unsafe: no sync before the flush (%d), the flush syncs (%d)", name,
			   before, wlog_syncs());
		else
			ok(before > 0, "%s: safe: the writes sync (%d times)", name, before);
		vdimg_wlog_reset();
		ret = vdimg_chain_close(c) ?: vdimg_chain_open(&c, &path, 1, NULL,
							    VDIMG_CHAIN_READ_ONLY);
		if (!ret) {
			ret = vdimg_chain_pread(c, buf, SZ, 0);
			vdimg_chain_close(c);
		}
		ok(!ret && !memcmp(buf, shadow, SZ), "%s: reopened, it reads the writes (%s)", name,
		   unsafe ? "unsafe" : "safe");
	}
	free(shadow);
	free(buf);
}

int main(void)
{
	size_t i;

	ktap_start();
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		test_commit(&cases[i]);
	test_enospc(VDIMG_FMT_VHD, "vhd");
	test_enospc(VDIMG_FMT_VHDX, "vhdx");
	test_unsafe(VDIMG_FMT_QCOW2, 512, "qcow2");
	test_unsafe(VDIMG_FMT_VHDX, 0, "vhdx");
	return ktap_finish();
}
