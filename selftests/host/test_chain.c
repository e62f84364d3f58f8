// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the chain I/O layer (tools/lib/io.c): reads, writes, discards and flushes over raw
 * layers and over the test-only copy-on-write format of mock_cow.h (UNALLOCATED, ZERO, ENCODED and
 * NEW extents, fills, parent checks), error paths (writes past the end, read-only chains, backends
 * returning bad extents, writes cut by the crash hook), and a randomised run against an in-memory
 * reference disk. KTAP on stdout.
 */
#include <pthread.h>
#include "../../tools/lib/chain.h"
#include "ktap.h"
#include "mock_cow.h"

#define MiB (1ULL << 20)
#define KiB 1024ULL

static u8 bufa[4 * MiB], bufb[4 * MiB];

static int raw_file(const char *name, u64 size, unsigned int seed)
{
	u8 *p = malloc(size);
	int fd;

	if (seed)
		fill_pat(p, size, seed, 0);
	else
		memset(p, 0, size);
	fd = tfile(name, p, size);
	free(p);
	return fd;
}

static int mock_file(const char *name, u64 size, u32 unit, const u8 *uuid, const u8 *parent)
{
	int fd = tfile(name, NULL, 0);

	if (mock_create(fd, size, unit, uuid, parent)) {
		printf("Bail out! mock_create %s\n", name);
		exit(1);
	}
	return fd;
}

static const struct vdimg_format raw_ops_dummy;	/* marker: use the registry */

/* Open fds as a chain; ops[i] == &mock_cow_format for mock layers, NULL for registry probing. */
static int open_chain(struct vdimg_chain **c, int n, const int *fds, bool *mock, unsigned int flags)
{
	const struct vdimg_format *ops[8];
	const char *names[8];
	int i;

	for (i = 0; i < n; i++) {
		ops[i] = mock && mock[i] ? &mock_cow_format : NULL;
		names[i] = mock && mock[i] ? "mock-layer" : "raw-layer";
	}
	return vdimg_chain_open_ops(c, fds, names, n, ops, flags | VDIMG_CHAIN_ALLOW_RAW);
}

static void test_raw_chain(void)
{
	const char *paths[2];
	struct vdimg_chain *c;
	u32 fmt_raw[2] = { VDIMG_FMT_RAW, VDIMG_FMT_RAW };
	int fd, ret;

	fd = raw_file("r1.raw", MiB, 1);
	close(fd);
	paths[0] = tpath("r1.raw");
	ret = vdimg_chain_open(&c, paths, 1, fmt_raw, 0);
	if (!ok_err(ret, 0, "raw chain: open one writable raw layer"))
		return;
	ok(c->nr == 1 && c->size == MiB && vdimg_chain_top(c)->fmt == &vdimg_raw_format,
	   "raw chain: one layer, size from the top");
	ret = vdimg_chain_pread(c, bufa, MiB, 0);
	ok(!ret && is_pat(bufa, MiB, 1, 0), "raw chain: reads the file");
	ret = vdimg_chain_pread(c, bufa, 1000, 12345);
	ok(!ret && is_pat(bufa, 1000, 1, 12345), "raw chain: unaligned read");
	fill_pat(bufa, 64 * KiB, 2, 4096);
	ret = vdimg_chain_pwrite(c, bufa, 64 * KiB, 4096);
	ok_err(ret, 0, "raw chain: write 64 KiB");
	ret = vdimg_chain_pread(c, bufb, 64 * KiB + 8192, 0);
	ok(!ret && is_pat(bufb, 4096, 1, 0) && is_pat(bufb + 4096, 64 * KiB, 2, 4096) &&
	   is_pat(bufb + 4096 + 64 * KiB, 4096, 1, 4096 + 64 * KiB), "raw chain: reads it back");
	ok_err(vdimg_chain_flush(c), 0, "raw chain: flush");
	ok_err(vdimg_chain_pwrite(c, bufa, 512, MiB), -EINVAL, "raw chain: write at the end is EINVAL");
	ok_err(vdimg_chain_pwrite(c, bufa, 1024, MiB - 512), -EINVAL,
	       "raw chain: write straddling the end is EINVAL");
	ok_err(vdimg_chain_pwrite(c, bufa, 512, ~0ULL - 100), -EINVAL,
	       "raw chain: write at 2^64-101 is EINVAL (no overflow)");
	ok_err(vdimg_chain_pread(c, bufa, 1024, MiB - 512), -EINVAL,
	       "raw chain: read straddling the end is EINVAL");
	ok_err(vdimg_chain_pwrite(c, bufa, 0, MiB), 0, "raw chain: empty write at the end is fine");
	ret = vdimg_chain_discard(c, 8192, 8192, VDIMG_DISCARD_ZEROES);
	ok(!ret && !vdimg_chain_pread(c, bufb, 8192, 8192) && is_byte(bufb, 8192, 0),
	   "raw chain: discard with zeroes reads zeros");
	ok_err(vdimg_chain_discard(c, MiB - 512, 1024, 0), -EINVAL,
	       "raw chain: discard past the end is EINVAL");
	ok_err(vdimg_chain_close(c), 0, "raw chain: close flushes and succeeds");

	ret = vdimg_chain_open(&c, paths, 1, fmt_raw, VDIMG_CHAIN_READ_ONLY);
	if (ok_err(ret, 0, "raw chain: open read-only")) {
		ok(vdimg_chain_top(c)->flags & VDIMG_IMG_READ_ONLY, "raw chain: layer is read-only");
		ok_err(vdimg_chain_pwrite(c, bufa, 512, 0), -EROFS, "raw chain: write to read-only is EROFS");
		ok_err(vdimg_chain_discard(c, 0, 512, 0), -EROFS, "raw chain: discard on read-only is EROFS");
		ok_err(vdimg_chain_flush(c), 0, "raw chain: flush of read-only is a no-op");
		vdimg_chain_close(c);
	}

	/* two raw layers: the top hides the base completely */
	fd = raw_file("r2.raw", MiB, 3);
	close(fd);
	paths[0] = tpath("r1.raw");
	paths[1] = tpath("r2.raw");
	ret = vdimg_chain_open(&c, paths, 2, fmt_raw, 0);
	if (ok_err(ret, 0, "raw chain: two layers")) {
		ok(!(c->layers[1]->flags & VDIMG_IMG_READ_ONLY) &&
		   (c->layers[0]->flags & VDIMG_IMG_READ_ONLY), "raw chain: only the top is writable");
		ok(!vdimg_chain_pread(c, bufa, MiB, 0) && is_pat(bufa, MiB, 3, 0),
		   "raw chain: reads come from the top");
		vdimg_chain_close(c);
	}

	paths[0] = tpath("does-not-exist");
	ret = vdimg_chain_open(&c, paths, 1, NULL, 0);
	ok(ret == -ENOENT && c == NULL && strstr(ktap_last_msg, "cannot open"),
	   "chain open: a missing file is ENOENT with a message");
	paths[0] = ktap_dir;
	ret = vdimg_chain_open(&c, paths, 1, NULL, VDIMG_CHAIN_READ_ONLY);
	ok_err(ret, -EISDIR, "chain open: a directory is EISDIR");
	paths[0] = tpath("r1.raw");
	ok_err(vdimg_chain_open(&c, paths, 0, NULL, 0), -EINVAL, "chain open: zero layers is EINVAL");
	ok_err(vdimg_chain_open(&c, paths, 1, NULL, 1U << 30), -EINVAL,
	       "chain open: unknown flags are EINVAL");

	/* format auto on pattern data: not a known format, raw only when allowed */
	ret = vdimg_chain_open(&c, paths, 1, NULL, 0);
	ok_err(ret, -EMEDIUMTYPE, "chain open: unrecognised data without ALLOW_RAW is EMEDIUMTYPE");
	ret = vdimg_chain_open(&c, paths, 1, NULL, VDIMG_CHAIN_ALLOW_RAW);
	ok_err(ret, 0, "chain open: with ALLOW_RAW it opens");
	vdimg_chain_close(c);

	/* an iso opens only read-only */
	memset(bufa, 0, 64 * KiB);
	memcpy(bufa + 0x8001, "CD001", 5);
	close(tfile("d.iso", bufa, 64 * KiB));
	paths[0] = tpath("d.iso");
	ok_err(vdimg_chain_open(&c, paths, 1, NULL, 0), -EROFS, "chain open: writable iso is EROFS");
	ret = vdimg_chain_open(&c, paths, 1, NULL, VDIMG_CHAIN_READ_ONLY);
	ok(!ret && vdimg_chain_top(c)->fmt == &vdimg_iso_format, "chain open: read-only iso is iso");
	vdimg_chain_close(c);

	/* bochs is refused by name */
	memset(bufa, 0, 4096);
	memcpy(bufa, "Bochs Virtual HD Image", 22);
	close(tfile("d.bochs", bufa, 4096));
	paths[0] = tpath("d.bochs");
	ret = vdimg_chain_open(&c, paths, 1, NULL, VDIMG_CHAIN_ALLOW_RAW | VDIMG_CHAIN_READ_ONLY);
	ok(ret == -EOPNOTSUPP && strstr(ktap_last_msg, "bochs images are not supported"),
	   "chain open: bochs is EOPNOTSUPP by name");
}

/* Read the whole chain and compare with @ref (size bytes). */
static bool chain_equals(struct vdimg_chain *c, const u8 *ref, u64 size)
{
	u8 *b = malloc(size);
	bool same = !vdimg_chain_pread(c, b, size, 0) && !memcmp(b, ref, size);

	free(b);
	return same;
}

static void test_cow(void)
{
	const u64 size = MiB, unit = 64 * KiB;
	bool mock[3] = { false, true, true };
	struct vdimg_chain *c;
	int fds[3], ret, commits;
	u8 *ref = malloc(size);

	fds[0] = raw_file("base.raw", size, 1);
	fds[1] = mock_file("top.mock", size, unit, NULL, NULL);
	mock_set_entry(fds[1], 5, MOCK_ZERO);
	mock_set_entry(fds[1], 6, MOCK_ENC);
	ret = open_chain(&c, 2, fds, mock, 0);
	if (!ok_err(ret, 0, "cow: open raw base + mockcow top"))
		return;
	fill_pat(ref, size, 1, 0);
	memset(ref + 5 * unit, 0, unit);
	for (u64 i = 0; i < unit; i++)
		ref[6 * unit + i] = mock_enc_byte(6 * unit + i);
	ok(chain_equals(c, ref, size), "cow: unallocated reads the base, ZERO reads zeros, ENCODED decodes");
	ret = vdimg_chain_read_level(c, -1, bufa, 4096, 0);
	ok(!ret && is_byte(bufa, 4096, 0), "cow: below the base reads zeros");

	commits = mock_commits;
	fill_pat(bufa, 4096, 2, 0);
	ret = vdimg_chain_pwrite(c, bufa, 4096, 70 * KiB);
	memcpy(ref + 70 * KiB, bufa, 4096);
	ok(!ret && mock_commits == commits + 1, "cow: a write into an unallocated cluster commits once");
	ok(chain_equals(c, ref, size), "cow: data plus the fill from the base read back");
	/* the top file holds the whole filled cluster at the first data cluster */
	ret = pread(fds[1], bufb, unit, mock_data_start(unit, 16)) == (ssize_t)unit ? 0 : -EIO;
	ok(!ret && !memcmp(bufb, ref + unit, unit), "cow: the new cluster in the file is fully filled");
	ret = pread(fds[0], bufb, size, 0) == (ssize_t)size ? 0 : -EIO;
	ok(!ret && is_pat(bufb, size, 1, 0), "cow: the base file is untouched");

	commits = mock_commits;
	fill_pat(bufa, 512, 3, 0);
	ret = vdimg_chain_pwrite(c, bufa, 512, 100 * KiB);
	memcpy(ref + 100 * KiB, bufa, 512);
	ok(!ret && mock_commits == commits && chain_equals(c, ref, size),
	   "cow: a second write in an allocated cluster allocates nothing");

	commits = mock_commits;
	fill_pat(bufa, 80 * KiB, 4, 0);
	ret = vdimg_chain_pwrite(c, bufa, 80 * KiB, 120 * KiB);
	memcpy(ref + 120 * KiB, bufa, 80 * KiB);
	ok(!ret && mock_commits == commits + 2 && chain_equals(c, ref, size),
	   "cow: a write across three clusters allocates the two new ones");

	commits = mock_commits;
	fill_pat(bufa, 1024, 5, 0);
	ret = vdimg_chain_pwrite(c, bufa, 1024, 5 * unit + 4096);
	memcpy(ref + 5 * unit + 4096, bufa, 1024);
	ok(!ret && mock_commits == commits + 1 && chain_equals(c, ref, size),
	   "cow: a write into a ZERO cluster keeps the rest zero (not the base)");
	fill_pat(bufa, 1024, 6, 0);
	ret = vdimg_chain_pwrite(c, bufa, 1024, 6 * unit + 8192);
	ok(!ret, "cow: a write into an ENCODED cluster");
	/* the mock's fill for an encoded cluster comes from below: the base, as the contract says */
	memcpy(ref + 6 * unit, bufb + 6 * unit, unit);
	memcpy(ref + 6 * unit + 8192, bufa, 1024);
	ok(chain_equals(c, ref, size), "cow: ... reads back with the fill from the base");

	ret = vdimg_chain_discard(c, 8 * unit, 2 * unit, 0);
	memset(ref + 8 * unit, 0, 2 * unit);
	ok(!ret && chain_equals(c, ref, size),
	   "cow: discard of unallocated clusters in a differencing layer hides the base");
	ret = vdimg_chain_discard(c, unit, unit, 0);
	memset(ref + unit, 0, unit);
	ok(!ret && chain_equals(c, ref, size),
	   "cow: discard in a differencing layer reads zeros, never the base again");
	ret = vdimg_chain_discard(c, 10 * unit, unit, VDIMG_DISCARD_ZEROES);
	memset(ref + 10 * unit, 0, unit);
	ok(!ret && chain_equals(c, ref, size), "cow: discard with zeroes of a whole cluster reads zeros");
	ret = vdimg_chain_discard(c, 11 * unit + 4096, 8192, VDIMG_DISCARD_ZEROES);
	memset(ref + 11 * unit + 4096, 0, 8192);
	ok(!ret && chain_equals(c, ref, size),
	   "cow: partial discard with zeroes falls back to writing zeros");

	ret = mock_flushes;
	ok(!vdimg_chain_flush(c) && mock_flushes == ret + 1, "cow: flush calls the backend's flush");
	ok(!vdimg_chain_close(c) && mock_flushes == ret + 2, "cow: close flushes");

	ret = open_chain(&c, 2, fds, mock, VDIMG_CHAIN_READ_ONLY);
	ok(!ret && chain_equals(c, ref, size), "cow: reopened read-only, the same data");
	if (!ret)
		vdimg_chain_close(c);

	/* a third layer on top; writes fill from the two below */
	fds[2] = mock_file("top2.mock", size, unit, NULL, NULL);
	ret = open_chain(&c, 3, fds, mock, 0);
	if (ok_err(ret, 0, "cow: three layers")) {
		ok(chain_equals(c, ref, size), "cow: three layers read like the two below");
		fill_pat(bufa, 2048, 7, 0);
		ret = vdimg_chain_pwrite(c, bufa, 2048, 130 * KiB);
		memcpy(ref + 130 * KiB, bufa, 2048);
		ok(!ret && chain_equals(c, ref, size), "cow: three layers: a write fills from the middle");
		vdimg_chain_close(c);
		fds[2] = -1;
	}
	close(fds[0]);
	close(fds[1]);
	free(ref);
}

static void test_cow_edges(void)
{
	bool mock2[2] = { false, true }, mock1[1] = { true }, mockmm[2] = { true, true };
	u8 uuid_a[16] = { 0xa }, uuid_b[16] = { 0xb };
	struct vdimg_chain *c;
	int fds[2], ret;

	/* a base smaller than the top: zeros past its end */
	fds[0] = raw_file("small.raw", 256 * KiB, 1);
	fds[1] = mock_file("big.mock", MiB, 64 * KiB, NULL, NULL);
	ret = open_chain(&c, 2, fds, mock2, 0);
	if (ok_err(ret, 0, "edges: 256 KiB base under a 1 MiB top")) {
		ok(!vdimg_chain_pread(c, bufa, MiB, 0) && is_pat(bufa, 256 * KiB, 1, 0) &&
		   is_byte(bufa + 256 * KiB, MiB - 256 * KiB, 0), "edges: zeros past the base's end");
		fill_pat(bufa, 512, 2, 0);
		ret = vdimg_chain_pwrite(c, bufa, 512, 250 * KiB);
		ok(!ret && !vdimg_chain_pread(c, bufb, 64 * KiB, 192 * KiB) &&
		   is_pat(bufb, 58 * KiB, 1, 192 * KiB) && is_pat(bufb + 58 * KiB, 512, 2, 0) &&
		   is_pat(bufb + 58 * KiB + 512, 5632, 1, 250 * KiB + 512),
		   "edges: a fill at the base's last cluster");
		vdimg_chain_close(c);
	}
	close(fds[0]);
	close(fds[1]);

	/* a lone mockcow: unallocated reads zeros, fills are zeros */
	fds[0] = mock_file("alone.mock", MiB + 512, 64 * KiB, NULL, NULL);
	ret = open_chain(&c, 1, fds, mock1, 0);
	if (ok_err(ret, 0, "edges: a lone sparse image of 1 MiB + 512")) {
		ok(!vdimg_chain_pread(c, bufa, MiB + 512, 0) && is_byte(bufa, MiB + 512, 0),
		   "edges: unallocated without a parent reads zeros");
		fill_pat(bufa, 512, 3, 0);
		ret = vdimg_chain_pwrite(c, bufa, 512, MiB);
		ok(!ret && !vdimg_chain_pread(c, bufb, 1024, MiB - 512) && is_byte(bufb, 512, 0) &&
		   is_pat(bufb + 512, 512, 3, 0),
		   "edges: the last sector, whose cluster reaches past the end, is filled with zeros");
		vdimg_chain_close(c);
	}
	close(fds[0]);

	/* a backend without ->discard(): plain discard is a no-op, zeroing writes zeros */
	{
		struct vdimg_format nodisc = mock_cow_format;
		const struct vdimg_format *ops[1] = { &nodisc };
		const char *names[1] = { "nodiscard" };

		nodisc.discard = NULL;
		fds[0] = mock_file("nodisc.mock", MiB, 64 * KiB, NULL, NULL);
		ret = vdimg_chain_open_ops(&c, fds, names, 1, ops, 0);
		if (ok_err(ret, 0, "edges: a backend without discard")) {
			fill_pat(bufa, 256 * KiB, 8, 0);
			ret = vdimg_chain_pwrite(c, bufa, 256 * KiB, 0);
			ok(!ret && !vdimg_chain_discard(c, 0, 64 * KiB, 0) &&
			   !vdimg_chain_pread(c, bufb, 256 * KiB, 0) && is_pat(bufb, 256 * KiB, 8, 0),
			   "edges: ... plain discard is a successful no-op");
			ok(!vdimg_chain_discard(c, 64 * KiB + 512, 4096, VDIMG_DISCARD_ZEROES) &&
			   !vdimg_chain_pread(c, bufb, 256 * KiB, 0) &&
			   is_pat(bufb, 64 * KiB + 512, 8, 0) && is_byte(bufb + 64 * KiB + 512, 4096, 0) &&
			   is_pat(bufb + 68 * KiB + 512, 188 * KiB - 512, 8, 68 * KiB + 512),
			   "edges: ... discard with zeroes writes zeros");
			vdimg_chain_close(c);
		}
		close(fds[0]);
	}

	/* unit 512: NEW extents without fill */
	fds[0] = raw_file("b512.raw", 64 * KiB, 1);
	fds[1] = mock_file("t512.mock", 64 * KiB, 512, NULL, NULL);
	ret = open_chain(&c, 2, fds, mock2, 0);
	if (ok_err(ret, 0, "edges: 512-byte allocation unit (no fill)")) {
		int commits = mock_commits;

		fill_pat(bufa, 1536, 4, 0);
		ret = vdimg_chain_pwrite(c, bufa, 1536, 4096);
		ok(!ret && mock_commits == commits + 3 && !vdimg_chain_pread(c, bufb, 64 * KiB, 0) &&
		   is_pat(bufb, 4096, 1, 0) && is_pat(bufb + 4096, 1536, 4, 0) &&
		   is_pat(bufb + 5632, 64 * KiB - 5632, 1, 5632), "edges: three NEW sectors, no fill");
		vdimg_chain_close(c);
	}
	close(fds[0]);
	close(fds[1]);

	/* parent identity */
	fds[0] = mock_file("pa.mock", MiB, 64 * KiB, uuid_a, NULL);
	fds[1] = mock_file("ch.mock", MiB, 64 * KiB, uuid_b, uuid_a);
	ret = open_chain(&c, 2, fds, mockmm, 0);
	ok_err(ret, 0, "parent: matching uuid links");
	vdimg_chain_close(c);
	ret = open_chain(&c, 1, &fds[1], mock1, 0);
	ok_err(ret, -ENOENT, "parent: a differencing image alone is refused");
	ret = open_chain(&c, 1, &fds[1], mock1, VDIMG_CHAIN_ORPHAN_OK);
	ok_err(ret, 0, "parent: ... unless ORPHAN_OK");
	vdimg_chain_close(c);
	close(fds[0]);
	fds[0] = mock_file("pb.mock", MiB, 64 * KiB, uuid_b, NULL);
	ret = open_chain(&c, 2, fds, mockmm, 0);
	ok(ret == -ESTALE && strstr(ktap_last_msg, "wrong uuid"), "parent: a wrong uuid is ESTALE");
	ret = open_chain(&c, 2, fds, mockmm, VDIMG_CHAIN_FORCE_LINK);
	ok_err(ret, 0, "parent: ... used anyway with FORCE_LINK");
	vdimg_chain_close(c);
	close(fds[0]);
	close(fds[1]);
}

static void test_faults(void)
{
	bool mock2[2] = { false, true };
	struct vdimg_chain *c;
	int fds[2], ret, i;

	fds[0] = raw_file("fb.raw", MiB, 1);
	fds[1] = mock_file("ft.mock", MiB, 64 * KiB, NULL, NULL);
	ret = open_chain(&c, 2, fds, mock2, 0);
	if (!ok_err(ret, 0, "faults: open"))
		return;

	/* crash hook: the data write fails -> abort, nothing committed, the base still shows */
	fill_pat(bufa, 4096, 9, 0);
	i = mock_aborts;
	ret = mock_commits;
	vdimg_write_budget = 0;
	ok(vdimg_chain_pwrite(c, bufa, 4096, 0) == -EIO && mock_aborts == i + 1 &&
	   mock_commits == ret, "faults: data write cut -> EIO, abort, no commit");
	vdimg_write_budget = 1;
	ok(vdimg_chain_pwrite(c, bufa, 4096, 0) == -EIO && mock_aborts == i + 2 &&
	   mock_commits == ret, "faults: commit write cut -> EIO, abort");
	vdimg_write_budget = -1;
	ok(!vdimg_chain_pread(c, bufb, 64 * KiB, 0) && is_pat(bufb, 64 * KiB, 1, 0),
	   "faults: after both cuts the range still reads the base");
	ok(!vdimg_chain_pwrite(c, bufa, 4096, 0) && !vdimg_chain_pread(c, bufb, 4096, 0) &&
	   is_pat(bufb, 4096, 9, 0), "faults: the write succeeds once the cut is lifted");

	/* backends answering nonsense */
	for (i = 1; i <= 4; i++) {
		int aborts = mock_aborts;

		mock_evil = i;
		ret = vdimg_chain_pwrite(c, bufa, 4096, 512 * KiB);
		ok(ret == -EIO && mock_aborts == aborts + 1,
		   "faults: evil map mode %d on write -> EIO and abort", i);
		if (i <= 2)
			ok_err(vdimg_chain_pread(c, bufb, 4096, 512 * KiB), -EIO,
			       "faults: evil map mode %d on read -> EIO", i);
		mock_evil = 0;
	}
	ok(!vdimg_chain_pread(c, bufb, 64 * KiB, 512 * KiB) && is_pat(bufb, 64 * KiB, 1, 512 * KiB),
	   "faults: after the evil answers the range still reads the base");
	vdimg_chain_close(c);
	close(fds[0]);
	close(fds[1]);
}

/* Threads writing interleaved 4 KiB pieces of the same clusters: the unit lock keeps them apart. */
struct thr_arg {
	struct vdimg_chain *c;
	int t, nthreads, errors;
};

static void *thr_write(void *p)
{
	struct thr_arg *a = p;
	u8 buf[4096];
	u64 off;

	for (off = (u64)a->t * 4096; off < 2 * MiB; off += (u64)a->nthreads * 4096) {
		fill_pat(buf, sizeof(buf), 77, off);
		if (vdimg_chain_pwrite(a->c, buf, sizeof(buf), off))
			a->errors++;
	}
	return NULL;
}

static void test_threads(void)
{
	bool mock2[2] = { false, true };
	struct thr_arg args[8];
	pthread_t th[8];
	struct vdimg_chain *c;
	int fds[2], ret, i, errors = 0, commits = mock_commits;

	fds[0] = raw_file("tb.raw", 2 * MiB, 1);
	fds[1] = mock_file("tt.mock", 2 * MiB, 64 * KiB, NULL, NULL);
	ret = open_chain(&c, 2, fds, mock2, 0);
	if (!ok_err(ret, 0, "threads: open"))
		return;
	for (i = 0; i < 8; i++) {
		args[i] = (struct thr_arg){ .c = c, .t = i, .nthreads = 8 };
		pthread_create(&th[i], NULL, thr_write, &args[i]);
	}
	for (i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		errors += args[i].errors;
	}
	ok(!errors && mock_commits == commits + 32 && !vdimg_chain_pread(c, bufa, 2 * MiB, 0) &&
	   is_pat(bufa, 2 * MiB, 77, 0),
	   "threads: 8 writers into the same clusters: one allocation per cluster, no lost write");
	vdimg_chain_close(c);
	close(fds[0]);
	close(fds[1]);
}

/* Random writes, zeroing discards and plain discards against an in-memory reference. */
static void test_random(void)
{
	const u64 size = 4 * MiB;
	bool mock2[2] = { false, true };
	struct vdimg_chain *c;
	u8 *ref = malloc(size), *base = malloc(size);
	int fds[2], ret, i, bad = 0;

	fds[0] = raw_file("rb.raw", size, 11);
	fds[1] = mock_file("rt.mock", size, 32 * KiB, NULL, NULL);
	fill_pat(base, size, 11, 0);
	memcpy(ref, base, size);
	ret = open_chain(&c, 2, fds, mock2, 0);
	if (!ok_err(ret, 0, "random: open"))
		return;
	srandom(42);
	for (i = 0; i < 400 && !bad; i++) {
		u64 off = (random() % (size / 512)) * 512;
		u64 len = ((random() % 256) + 1) * 512;
		int op = random() % 10;

		len = min(len, size - off);
		if (op < 8) {
			fill_pat(bufa, len, 100 + i, 0);
			ret = vdimg_chain_pwrite(c, bufa, len, off);
			memcpy(ref + off, bufa, len);
		} else if (op == 8) {
			ret = vdimg_chain_discard(c, off, len, VDIMG_DISCARD_ZEROES);
			memset(ref + off, 0, len);
		} else {
			ret = vdimg_chain_flush(c);
		}
		if (ret) {
			printf("# op %d at %llu+%llu failed: %d\n", op, (unsigned long long)off,
			       (unsigned long long)len, ret);
			bad = 1;
		}
		if (i % 50 == 49 && !chain_equals(c, ref, size)) {
			printf("# mismatch after op %d\n", i);
			bad = 1;
		}
	}
	ok(!bad && chain_equals(c, ref, size), "random: 400 writes/zeroings/flushes match the reference");
	vdimg_chain_close(c);
	ret = open_chain(&c, 2, fds, mock2, VDIMG_CHAIN_READ_ONLY);
	ok(!ret && chain_equals(c, ref, size), "random: the same after closing and reopening");
	if (!ret)
		vdimg_chain_close(c);
	ok(pread(fds[0], bufa, size, 0) == (ssize_t)size && !memcmp(bufa, base, size),
	   "random: the base never changed");
	close(fds[0]);
	close(fds[1]);
	free(ref);
	free(base);
}

int main(void)
{
	ktap_start();
	(void)raw_ops_dummy;
	test_raw_chain();
	test_cow();
	test_cow_edges();
	test_faults();
	test_threads();
	test_random();
	return ktap_finish();
}
