// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the DMG backend (backends/dmg/, tools/lib/formats/dmg.c): the ADC decoder on hand
 * made streams (literals, overlapping copies, truncated and out-of-range input); UDIF images built
 * by selftests/host/mkdmg.py from a source disk with raw, zero-fill, ignore, zlib, ADC, bzip2 and
 * LZMA (.xz and .lzma) chunks (one and many tables, 1-sector and 2048-sector chunks, per-table
 * data offsets after a lead-in) read back through libvdimg identical to the source, with their CRC-32 checksums
 * verified by check; bzip2 chunks (Python's bz2 as the encoder; 1 MiB chunks of one 900k block
 * and of several 100k blocks) among them; qemu-img (no ADC, no bzip2) and dmg2img (no ignore
 * chunks; neither reads LZMA) as second readers; the LZMA decoder on mklzma.py's reference
 * streams (liblzma and xz) and corrupted copies of them; encrypted images refused by name; corrupt
 * trailers, tables, offsets, base64, master checksum and compressed data (zlib, ADC; bzip2
 * truncated, with a bad block CRC, bad Huffman code lengths, or decoding to too much; LZMA)
 * refused or failing the read with -EUCLEAN; a master checksum mismatch opened with
 * VDIMG_OPEN_FORCE_CSUM (a warning), a wrong sector count still refused with it; the sample
 * simple-dmg.dmg read as qemu-img reads it. Skips (exit 4) without python3. KTAP on stdout.
 */
#include <sys/wait.h>
#include "../../tools/lib/chain.h"
#include "../../tools/lib/tool-ops.h"
#include "../../backends/dmg/dmg.h"
#include "ktap.h"

static const char *samples;
static const char *mkdmg;
static const char *datadir;
static bool have_qemu, have_dmg2img;

static const char *tp(const char *name)
{
	static char bufs[32][512];
	static int n;
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(strrchr(bufs[i], '/') + 1, name))
			return bufs[i];
	if (n == 32)
		return tpath(name);
	snprintf(bufs[n], sizeof(bufs[n]), "%s", tpath(name));
	return bufs[n++];
}

static void test_adc(void)
{
	/* "abc" literal, then a 2-byte copy (len 6, dist 2 -> from 3 back), then 3-byte copy */
	static const u8 s1[] = { 0x82, 'a', 'b', 'c', (6 - 3) << 2, 2, 0x40 | (5 - 4), 0, 8 };
	static const u8 want1[] = "abcabcabcabcab";
	/* run-length: one literal, then a copy of distance 0 (the previous byte) */
	static const u8 s2[] = { 0x80, 'x', 0x40 | 63, 0, 0 };
	static const u8 bad_dist[] = { 0x80, 'x', (3 - 3) << 2, 5 };
	static const u8 truncated[] = { 0x85, 'a', 'b' };
	u8 out[80];
	size_t i;
	bool all_x = true;

	ok(!dmg_adc_decode(s1, sizeof(s1), out, 14) && !memcmp(out, want1, 14),
	   "adc: literal, 2-byte and 3-byte copies");
	ok(!dmg_adc_decode(s2, sizeof(s2), out, 68), "adc: overlapping copy (run length)");
	for (i = 0; i < 68; i++)
		all_x &= out[i] == 'x';
	ok(all_x, "adc: the run is 68 x's");
	ok_err(dmg_adc_decode(bad_dist, sizeof(bad_dist), out, 4), -EFSCORRUPTED,
	       "adc: a copy from before the start is refused");
	ok_err(dmg_adc_decode(truncated, sizeof(truncated), out, 6), -EFSCORRUPTED,
	       "adc: a truncated literal is refused");
	ok_err(dmg_adc_decode(s1, sizeof(s1), out, 20), -EFSCORRUPTED,
	       "adc: input ending before the output is full is refused");
	ok_err(dmg_adc_decode(s2, sizeof(s2), out, 10), -EFSCORRUPTED,
	       "adc: a copy past the end of the output is refused");
}

/*
 * bzip2 streams straight into the decoder: two blocks (level 1, 100k) of text and random bytes;
 * every truncation fails; random byte changes fail or (CRCs) give exactly the source
 */
static void test_bzip2_stream(void)
{
	struct dmg_bzip2 *ws = malloc(dmg_bzip2_workspace_size());
	size_t slen, zlen, n, cut, bad = 0, wrong = 0, other = 0;
	u8 *src = NULL, *z = NULL, *m = NULL, *out = NULL;
	u32 x = 7;

	if (sh("python3 -c \"import bz2, random\nrandom.seed(9)\n"
	       "d=b''.join(b'row %%d %%d\\n' %% (i, random.randrange(99)) for i in range(12000))"
	       "+random.randbytes(30000)\nopen('%s','wb').write(d)\n"
	       "open('%s','wb').write(bz2.compress(d, 1))\"", tp("bz.raw"), tp("bz.bz2"))) {
		ok(false, "bzip2 stream: python3 bz2");
		free(ws);
		return;
	}
	src = slurp(tp("bz.raw"), &slen);
	z = slurp(tp("bz.bz2"), &zlen);
	out = malloc(slen + 1);
	m = z ? malloc(zlen) : NULL;
	if (!ws || !src || !z || !out || !m) {
		ok(false, "bzip2 stream: setup");
		goto out;
	}
	dmg_bzip2_init(ws);
	ok(!dmg_bzip2_decode(ws, z, zlen, out, slen) && !memcmp(out, src, slen),
	   "bzip2 stream: %zu bytes in two blocks decode to the source", slen);
	ok_err(dmg_bzip2_decode(ws, z, zlen, out, slen - 1), -EFSCORRUPTED,
	       "bzip2 stream: into one byte less is refused");
	ok_err(dmg_bzip2_decode(ws, z, zlen, out, slen + 1), -EFSCORRUPTED,
	       "bzip2 stream: into one byte more is refused");
	for (cut = 0; cut < zlen; cut += 61)
		bad += dmg_bzip2_decode(ws, z, cut, out, slen) != -EFSCORRUPTED;
	ok(!bad, "bzip2 stream: every 61st of its %zu truncations is refused (%zu not)", zlen, bad);
	for (n = 0; n < 200; n++) {
		int r;

		memcpy(m, z, zlen);
		x = x * 1103515245 + 12345;
		m[(x >> 8) % zlen] ^= 1 + (x >> 24) % 255;
		r = dmg_bzip2_decode(ws, m, zlen, out, slen);
		if (r == 0)
			wrong += !!memcmp(out, src, slen);
		else
			other += r != -EFSCORRUPTED;
	}
	ok(!wrong && !other,
	   "bzip2 stream: 200 corrupted copies fail with -EFSCORRUPTED or give the source (%zu wrong, %zu other errors)",
	   wrong, other);
out:
	free(ws);
	free(src);
	free(z);
	free(m);
	free(out);
}

/*
 * LZMA streams straight into the decoder: mklzma.py's cases (Python's lzma, i.e. liblzma, and
 * the xz tool: .xz with every check kind, several blocks and stored chunks, .lzma with and
 * without a known size, presets 0-9 and extreme, lc/lp/pb and dictionary sizes, text, random,
 * zeros, long matches, one byte, nothing) each decode to their data; lc + lp > 4 and other xz
 * filters are refused with -EOPNOTSUPP; a wrong output size, truncations and random byte changes
 * fail with -EFSCORRUPTED or give exactly the data.
 */
static u8 *lz_case(int n, const char *ext, size_t *len)
{
	char name[64];

	snprintf(name, sizeof(name), "lz/lz-%d.%s", n, ext);
	return slurp(tpath(name), len);
}

static void test_lzma_stream(void)
{
	/* the cases corrupted: indexes into mklzma.py's list (see its order) */
	static const struct {
		const char *tag;
		int n;
	} cor[] = {
		{ ".lzma (end marker), text", 0 }, { ".xz CRC-64, text", 1 },
		{ ".xz CRC-32, long matches", 23 }, { ".xz no check, text", 3 },
		{ "xz --format=lzma, random", 12 }, { "xz 7000-byte blocks, long matches", 27 },
		{ ".lzma known size, lc=0 lp=4 pb=4", 87 },
	};
	struct dmg_lzma *ws = malloc(dmg_lzma_workspace_size());
	size_t total = 0, good = 0, unsup = 0, unsup_ok = 0, i;
	char line[256];
	FILE *list;
	u32 x = 5;

	if (!ws || sh("python3 '%s/selftests/host/mklzma.py' '%s' > '%s'",
		      getenv("VDIMG_SRC") ? getenv("VDIMG_SRC") : ".", tpath("lz"),
		      tp("lz.list"))) {
		ok(false, "lzma stream: mklzma.py");
		free(ws);
		return;
	}
	dmg_lzma_init(ws);
	list = fopen(tp("lz.list"), "r");
	while (list && fgets(line, sizeof(line), list)) {
		size_t rlen, zlen;
		u8 *raw, *z, *out, *big;
		char expect[32];
		int n, r;

		if (sscanf(line, "%d %31s", &n, expect) != 2)
			continue;
		raw = lz_case(n, "raw", &rlen);
		z = lz_case(n, "z", &zlen);
		/* exactly the output size: ASan sees any write past it */
		out = malloc(rlen ? rlen : 1);
		big = malloc(rlen + 1);
		if (!raw || !z || !out || !big) {
			ok(false, "lzma stream: case %d missing", n);
		} else if (!strcmp(expect, "unsupported")) {
			unsup++;
			r = dmg_lzma_decode(ws, z, zlen, out, rlen);
			unsup_ok += r == -EOPNOTSUPP;
			if (r != -EOPNOTSUPP)
				printf("# not refused (%d): %s", r, line);
		} else {
			total++;
			r = dmg_lzma_decode(ws, z, zlen, out, rlen);
			if (!r && !memcmp(out, raw, rlen) &&
			    dmg_lzma_decode(ws, z, zlen, big, rlen + 1) == -EFSCORRUPTED &&
			    (!rlen || dmg_lzma_decode(ws, z, zlen, out, rlen - 1) == -EFSCORRUPTED))
				good++;
			else
				printf("# wrong (%d): %s", r, line);
		}
		free(raw);
		free(z);
		free(out);
		free(big);
	}
	if (list)
		fclose(list);
	ok(total > 100 && good == total,
	   "lzma stream: %zu of %zu reference streams decode to their data, and into one byte more or less are refused",
	   good, total);
	ok(unsup == 2 && unsup_ok == unsup,
	   "lzma stream: lc + lp > 4 and an xz delta filter are refused with -EOPNOTSUPP (%zu of %zu)",
	   unsup_ok, unsup);

	for (i = 0; i < ARRAY_SIZE(cor); i++) {
		size_t rlen, zlen, n, cut, bad = 0, wrong = 0, other = 0;
		u8 *raw = lz_case(cor[i].n, "raw", &rlen), *z = lz_case(cor[i].n, "z", &zlen);
		u8 *out = malloc(rlen ? rlen : 1), *m = z ? malloc(zlen) : NULL;
		bool alone = z && zlen && z[0] != 0xfd;

		if (!raw || !z || !out || !m || !ok(!dmg_lzma_decode(ws, z, zlen, out, rlen) &&
						   !memcmp(out, raw, rlen),
						   "lzma corrupt: %s decodes intact", cor[i].tag))
			goto next;
		for (cut = 0; cut < zlen; cut += 1 + zlen / 500)
			bad += dmg_lzma_decode(ws, z, cut, out, rlen) != -EFSCORRUPTED;
		ok(!bad, "lzma corrupt: %s: its truncations (every %zu bytes of %zu) are refused (%zu not)",
		   cor[i].tag, 1 + zlen / 500, zlen, bad);
		for (n = 0; n < 300; n++) {
			size_t at;
			int r;

			memcpy(m, z, zlen);
			x = x * 1103515245 + 12345;
			at = (x >> 8) % zlen;
			m[at] ^= 1 + (x >> 24) % 255;
			r = dmg_lzma_decode(ws, m, zlen, out, rlen);
			if (!r)
				wrong += !!memcmp(out, raw, rlen);
			/* .lzma: the properties byte may become a valid unsupported one */
			else if (r != -EFSCORRUPTED && !(r == -EOPNOTSUPP && alone && !at))
				other++;
		}
		ok(!wrong && !other,
		   "lzma corrupt: %s: 300 corrupted copies fail with -EFSCORRUPTED or give the source (%zu wrong, %zu other errors)",
		   cor[i].tag, wrong, other);
next:
		free(raw);
		free(z);
		free(out);
		free(m);
	}
	free(ws);
}

/* The source disk: 4 MiB of zero, random and text regions of 64 KiB. */
static int make_source(void)
{
	return sh("python3 -c \"import random\nrandom.seed(7)\nd=bytearray()\n"
		  "for i in range(64):\n"
		  " m=i%%4\n"
		  " d+=bytes(65536) if m==0 else random.randbytes(65536) if m==1 else "
		  "(('line %%d text '%%i)*9000).encode()[:65536]\n"
		  "open('%s','wb').write(d)\"", tp("src.raw"));
}

static int open_img(struct vdimg_path_image *o, const char *path, u32 fmt)
{
	ktap_last_msg[0] = '\0';
	return vdimg_open_path(o, path, fmt, VDIMG_OPEN_READ_ONLY);
}

/* Read all of @path through libvdimg; malloc'd, length in *@len. */
static u8 *read_image(const char *path, size_t *len, int *err)
{
	struct vdimg_chain *c;
	u8 *buf = NULL;
	int ret;

	ret = vdimg_chain_open(&c, &path, 1, NULL, VDIMG_CHAIN_READ_ONLY);
	if (!ret) {
		*len = c->size;
		buf = malloc(c->size);
		ret = buf ? vdimg_chain_pread(c, buf, c->size, 0) : -ENOMEM;
		vdimg_chain_close(c);
	}
	if (ret) {
		free(buf);
		buf = NULL;
	}
	*err = ret;
	return buf;
}

static bool same_as(const char *path, const char *ref, const char *tag)
{
	size_t len, rlen;
	int err;
	u8 *got = read_image(path, &len, &err), *want = slurp(ref, &rlen);
	bool same = got && want && len == rlen && !memcmp(got, want, len);

	if (!same)
		printf("# %s: read %d, %zu vs %zu bytes\n", tag, err, got ? len : 0, rlen);
	free(got);
	free(want);
	return same;
}

static bool check_clean(const char *path)
{
	struct vdimg_path_image o;
	struct vdimg_check_result res = {};
	int ret = open_img(&o, path, VDIMG_FMT_AUTO);

	if (ret)
		return false;
	ret = vdimg_tool_ops(o.img.fmt)->check(&o.img, 0, &res);
	vdimg_close_path(&o);
	return !ret && !res.errors;
}

static void test_built(void)
{
	static const struct {
		const char *tag, *opts;
		/* qemu-img cannot read ADC (nor bzip2 without qemu-block-extra); dmg2img drops
		 * ignored chunks and cannot read LZFSE
		 */
		bool noqemu, ignore;
	} v[] = {
		{ "raw", "--types raw", false, false },
		{ "zlib", "--types zlib", false, false },
		{ "adc", "--types adc", true, false },
		{ "raw+zlib+adc, zero and ignore", "--types raw,zlib,adc --ignore", true, true },
		/* dmg2img ignores the tables' data offsets: not a second reader here */
		{ "5 tables, data offsets, lead-in", "--types zlib,raw --tables 5 --rel --lead 4096",
		  false, true },
		{ "1-sector chunks", "--types zlib,adc,raw --chunk 1 --tables 1", true, false },
		{ "2048-sector chunks", "--types adc,zlib --chunk 2048 --tables 1 --ignore", true, true },
		{ "no checksums", "--types zlib --no-crc", false, false },
		{ "resource fork, no property list", "--types zlib,raw,adc --rsrc --tables 3", true,
		  false },
		{ "bzip2", "--types bzip2", true, false },
		{ "bzip2+zlib+raw, 3 tables, zero and ignore",
		  "--types bzip2,zlib,raw --tables 3 --ignore", true, true },
		{ "bzip2 1-sector chunks", "--types bzip2,adc --chunk 1 --tables 1", true, false },
		/* 2048 sectors: 1 MiB per chunk, several 100k bzip2 blocks (level 1) */
		{ "bzip2 2048-sector chunks, 100k blocks",
		  "--types bzip2 --chunk 2048 --tables 1 --bz-level 1", true, false },
		{ "bzip2 2048-sector chunks, 900k blocks", "--types bzip2 --chunk 2048 --tables 1",
		  true, false },
		/* the reference encoder writes LZFSE blocks for 4 KiB and more, LZVN below; neither
		 * qemu-img (without qemu-block-extra) nor dmg2img reads LZFSE
		 */
		{ "lzfse", "--types lzfse", true, true },
		{ "lzfse+raw 2048-sector chunks, zero and ignore",
		  "--types lzfse,raw --chunk 2048 --tables 3 --ignore", true, true },
		{ "lzfse 7-sector chunks (LZVN)", "--types lzfse,zlib --chunk 7 --tables 1", true,
		  true },
		/* LZMA (Python's lzma as the encoder): neither qemu-img nor dmg2img 1.6.7 reads
		 * it (qemu-img fails the read; dmg2img writes wrong data without an error)
		 */
		{ "lzma (.xz)", "--types lzma", true, true },
		{ "lzma (.lzma alone)", "--types lzma --lzma-alone", true, true },
		{ "lzma+zlib+raw, 3 tables, zero and ignore",
		  "--types lzma,zlib,raw --tables 3 --ignore", true, true },
		{ "lzma 1-sector chunks", "--types lzma,adc --chunk 1 --tables 1", true, true },
		{ "lzma 2048-sector chunks", "--types lzma --chunk 2048 --tables 1", true, true },
		{ "lzma alone 2048-sector chunks, resource fork",
		  "--types lzma,raw --chunk 2048 --lzma-alone --rsrc", true, true },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(v); i++) {
		const char *dmg = tp("t.dmg");
		int st = sh("python3 '%s' %s '%s' '%s'", mkdmg, v[i].opts, tp("src.raw"), dmg);

		if (st == 3) {
			skip("%s: no LZFSE encoder (set LZFSE to the reference lzfse tool)", v[i].tag);
			continue;
		}
		if (st) {
			ok(false, "%s: mkdmg.py", v[i].tag);
			continue;
		}
		ok(same_as(dmg, tp("src.raw"), v[i].tag), "%s: reads as the source", v[i].tag);
		ok(check_clean(dmg), "%s: check verifies every checksum", v[i].tag);
		if (have_qemu && !v[i].noqemu)
			ok(!sh("qemu-img convert -f dmg -O raw '%s' '%s' 2>/dev/null", dmg, tp("q.raw")) &&
			   same_as(dmg, tp("q.raw"), v[i].tag), "%s: qemu-img reads the same", v[i].tag);
		if (have_dmg2img && !v[i].ignore)
			ok(!sh("dmg2img -s '%s' '%s' >/dev/null 2>&1", dmg, tp("d.raw")) &&
			   same_as(dmg, tp("d.raw"), v[i].tag), "%s: dmg2img reads the same", v[i].tag);
	}
}

static void test_refused(void)
{
	static const struct {
		const char *tag, *opts;
		int err;
		const char *msg;
	} v[] = {
		{ "chunk data past the file", "--corrupt offset", -EUCLEAN, "not inside the file" },
		{ "overlapping chunks", "--corrupt overlap", -EUCLEAN, "in two chunks" },
		{ "a gap between chunks", "--corrupt gap", -EUCLEAN, "in no chunk" },
		{ "trailer sector count", "--corrupt count", -EUCLEAN, "the trailer says" },
		{ "bad base64", "--corrupt b64", -EUCLEAN, "base64" },
		{ "not a mish table", "--corrupt nomish", -EUCLEAN, "not a mish table" },
		{ "master checksum", "--corrupt master", -EUCLEAN, "master checksum mismatch" },
		{ "koly version", "--corrupt version", -EOPNOTSUPP, "koly version 3" },
	};
	struct vdimg_path_image o;
	size_t i;
	int fd;

	for (i = 0; i < ARRAY_SIZE(v); i++) {
		const char *dmg = tp("bad.dmg");
		int ret;

		if (sh("python3 '%s' --types zlib,raw %s '%s' '%s'", mkdmg, v[i].opts, tp("src.raw"),
		       dmg)) {
			ok(false, "%s: mkdmg.py", v[i].tag);
			continue;
		}
		ret = open_img(&o, dmg, VDIMG_FMT_AUTO);
		if (!ret)
			vdimg_close_path(&o);
		if (ok_err(ret, v[i].err, "%s refused", v[i].tag) && !strstr(ktap_last_msg, v[i].msg))
			ok(false, "%s: message \"%s\" lacks \"%s\"", v[i].tag, ktap_last_msg, v[i].msg);
	}

	/* force: a master checksum mismatch warns instead; structural damage is still refused */
	sh("python3 '%s' --types zlib,raw --corrupt master '%s' '%s'", mkdmg, tp("src.raw"),
	   tp("bad.dmg"));
	ktap_last_msg[0] = '\0';
	if (ok(!vdimg_open_path(&o, tp("bad.dmg"), VDIMG_FMT_AUTO,
				VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_FORCE_CSUM),
	       "master checksum mismatch with VDIMG_OPEN_FORCE_CSUM: opens")) {
		ok(!DMG(&o.img)->master_verified && strstr(ktap_last_msg, "opened anyway"),
		   "master checksum mismatch with force: not verified, a warning (\"%s\")",
		   ktap_last_msg);
		vdimg_close_path(&o);
	}
	{
		const char *bad = tp("bad.dmg");
		struct vdimg_chain *c;
		u8 *buf, *want;
		size_t wlen;
		int ret = vdimg_chain_open(&c, &bad, 1, NULL,
					   VDIMG_CHAIN_READ_ONLY | VDIMG_CHAIN_FORCE_CSUM);

		want = slurp(tp("src.raw"), &wlen);
		buf = !ret && want ? malloc(c->size) : NULL;
		ok(buf && c->size == wlen && !vdimg_chain_pread(c, buf, wlen, 0) &&
		   !memcmp(buf, want, wlen),
		   "master checksum mismatch with VDIMG_CHAIN_FORCE_CSUM: reads as the source (%d)",
		   ret);
		if (!ret)
			vdimg_chain_close(c);
		free(buf);
		free(want);
	}
	sh("python3 '%s' --types zlib,raw --corrupt count '%s' '%s'", mkdmg, tp("src.raw"),
	   tp("bad.dmg"));
	ok_err(vdimg_open_path(&o, tp("bad.dmg"), VDIMG_FMT_AUTO,
			       VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_FORCE_CSUM), -EUCLEAN,
	       "a wrong sector count with force is still refused");

	/* bad compressed data: open works, reading that chunk fails, check counts it */
	for (i = 0; i < 7; i++) {
		static const char *const corrupt[][2] = {
			{ "zlib", "zdata" }, { "adc", "adcdist" }, { "bzip2", "bztrunc" },
			{ "bzip2", "bzcrc" }, { "bzip2", "bzhuff" }, { "bzip2", "bzlong" },
			{ "lzma", "lzdata" },
		};
		const char *kind = corrupt[i][0];
		size_t len;
		int err;
		u8 *buf;

		sh("python3 '%s' --types %s --corrupt %s '%s' '%s'", mkdmg, kind, corrupt[i][1],
		   tp("src.raw"), tp("bad.dmg"));
		buf = read_image(tp("bad.dmg"), &len, &err);
		free(buf);
		ok(err == -EUCLEAN && strstr(ktap_last_msg, "compressed data is invalid"),
		   "corrupt %s data (%s): the read fails with -EUCLEAN, named (%d)", kind,
		   corrupt[i][1], err);
		ok(!check_clean(tp("bad.dmg")), "corrupt %s data (%s): check finds it", kind,
		   corrupt[i][1]);
	}

	/* encrypted images: refused by name */
	fd = tfile("enc.dmg", "encrcdsa\0\0\0\2", 12);
	if (fd >= 0) {
		ftruncate(fd, 8192);
		close(fd);
	}
	ok(open_img(&o, tp("enc.dmg"), VDIMG_FMT_AUTO) == -EOPNOTSUPP &&
	   strstr(ktap_last_msg, "encrypted DMG"), "encrcdsa image refused by name");

	/* the trailer missing when the format is forced; a writable open */
	ok(open_img(&o, tp("src.raw"), VDIMG_FMT_DMG) == -EUCLEAN, "no koly trailer: -EUCLEAN");
	sh("python3 '%s' '%s' '%s'", mkdmg, tp("src.raw"), tp("t.dmg"));
	ktap_last_msg[0] = '\0';
	ok(vdimg_open_path(&o, tp("t.dmg"), VDIMG_FMT_AUTO, 0) == -EROFS, "writable open refused");
}

static u8 *lzfse_decode_file(const char *name, size_t *len, size_t out_len, int *err)
{
	char path[600];
	struct dmg_lzfse *ws = malloc(dmg_lzfse_workspace_size());
	u8 *src, *out = malloc(out_len + 1);

	snprintf(path, sizeof(path), "%s/%s", datadir, name);
	src = slurp(path, len);
	*err = -ENOMEM;
	if (ws && src && out) {
		dmg_lzfse_init(ws);
		*err = dmg_lzfse_decode(ws, src, *len, out, out_len);
	}
	free(ws);
	free(out);
	return src;
}

/*
 * LZFSE: the encoder is not packaged, so the reference encoder's output is committed
 * (selftests/host/data/lzfse-*, made by mkdmg.py with LZFSE set, from lzfse-src.py's disk)
 */
static void test_lzfse(void)
{
	static const struct {
		const char *file;
		size_t off, len;
	} st[] = {
		{ "lzfse-fse.bin", 16384, 16384 },	/* one bvx2 block */
		{ "lzfse-lzvn.bin", 25000, 3000 },	/* one bvxn block */
	};
	struct dmg_lzfse *ws = malloc(dmg_lzfse_workspace_size());
	size_t i, srclen;
	u8 *src, *out;

	if (sh("python3 '%s/lzfse-src.py' '%s'", datadir, tp("ls.raw"))) {
		ok(false, "lzfse: lzfse-src.py");
		free(ws);
		return;
	}
	src = slurp(tp("ls.raw"), &srclen);
	out = malloc(srclen + 1);
	if (!ws || !src || !out || srclen != 262144) {
		ok(false, "lzfse: setup");
		goto out;
	}
	dmg_lzfse_init(ws);
	for (i = 0; i < 2; i++) {
		char path[600];
		const char *name = i ? "lzfse-lzvn.dmg" : "lzfse-fse.dmg";

		snprintf(path, sizeof(path), "%s/%s", datadir, name);
		ok(same_as(path, tp("ls.raw"), name), "lzfse: %s reads as its source", name);
		ok(check_clean(path), "lzfse: %s: check verifies every checksum", name);
	}
	for (i = 0; i < ARRAY_SIZE(st); i++) {
		size_t len, cut, bad = 0, flips_ok = 0, n;
		int err;
		u8 *s = lzfse_decode_file(st[i].file, &len, st[i].len, &err), *m;
		u32 x = 1;

		if (!s) {
			ok(false, "lzfse: %s missing", st[i].file);
			continue;
		}
		ok(!err, "lzfse: %s decodes (%d)", st[i].file, err);
		ok(!dmg_lzfse_decode(ws, s, len, out, st[i].len) &&
		   !memcmp(out, src + st[i].off, st[i].len), "lzfse: %s gives the source bytes",
		   st[i].file);
		ok_err(dmg_lzfse_decode(ws, s, len, out, st[i].len - 1), -EFSCORRUPTED,
		       "lzfse: %s into one byte less is refused", st[i].file);
		ok_err(dmg_lzfse_decode(ws, s, len, out, st[i].len + 1), -EFSCORRUPTED,
		       "lzfse: %s into one byte more is refused", st[i].file);
		for (cut = 0; cut < len; cut++)
			bad += dmg_lzfse_decode(ws, s, cut, out, st[i].len) != -EFSCORRUPTED;
		ok(!bad, "lzfse: %s: each of its %zu truncations is refused (%zu not)", st[i].file,
		   len, bad);
		m = malloc(len);
		if (!m)
			continue;
		/* 3000 random byte changes: an error or a result, never anything else */
		for (n = 0; n < 3000; n++) {
			int r;

			memcpy(m, s, len);
			x = x * 1103515245 + 12345;
			m[(x >> 8) % len] ^= 1 + (x >> 24) % 255;
			r = dmg_lzfse_decode(ws, m, len, out, st[i].len);
			flips_ok += r == 0 || r == -EFSCORRUPTED;
		}
		ok(flips_ok == 3000, "lzfse: %s: 3000 corrupted copies decode or fail cleanly",
		   st[i].file);
		/* header fields: the raw byte count, the magic */
		memcpy(m, s, len);
		m[4] ^= 1;
		ok_err(dmg_lzfse_decode(ws, m, len, out, st[i].len), -EFSCORRUPTED,
		       "lzfse: %s: a wrong block size is refused", st[i].file);
		memcpy(m, s, len);
		m[3] = 'z';
		ok_err(dmg_lzfse_decode(ws, m, len, out, st[i].len), -EFSCORRUPTED,
		       "lzfse: %s: an unknown block magic is refused", st[i].file);
		if (!i) {
			/* v2: the L state (bits 32-41 of the third packed word) past its 64 states */
			memcpy(m, s, len);
			m[28] = 0xff;
			m[29] |= 3;
			ok_err(dmg_lzfse_decode(ws, m, len, out, st[i].len), -EFSCORRUPTED,
			       "lzfse: bvx2 with an L state out of range is refused");
			/* the header one byte longer: the frequency code does not end there */
			memcpy(m, s, len);
			m[24]++;
			ok_err(dmg_lzfse_decode(ws, m, len, out, st[i].len), -EFSCORRUPTED,
			       "lzfse: bvx2 with a wrong header size is refused");
		}
		free(m);
		free(s);
	}
out:
	free(ws);
	free(src);
	free(out);
}

static void test_sample(void)
{
	char path[512], raw[512];

	if (!samples) {
		skip("sample simple-dmg.dmg: VDIMG_SAMPLES is not set");
		return;
	}
	snprintf(path, sizeof(path), "%s/simple-dmg.dmg.bz2", samples);
	if (access(path, R_OK)) {
		skip("sample simple-dmg.dmg is not fetched (selftests/samples.sh)");
		return;
	}
	snprintf(raw, sizeof(raw), "%s", tp("simple.dmg"));
	if (sh("bzip2 -dc '%s' > '%s'", path, raw)) {
		ok(false, "simple-dmg: bunzip2");
		return;
	}
	if (have_qemu)
		ok(!sh("qemu-img convert -f dmg -O raw '%s' '%s' 2>/dev/null", raw, tp("q.raw")) &&
		   same_as(raw, tp("q.raw"), "simple-dmg"), "simple-dmg: reads as qemu-img reads it");
	ok(check_clean(raw), "simple-dmg: master, data fork and table checksums verify");
	{
		struct vdimg_path_image o;

		if (ok(!open_img(&o, raw, VDIMG_FMT_AUTO), "simple-dmg: opens")) {
			ok(DMG(&o.img)->master_verified && DMG(&o.img)->nr_tables == 8,
			   "simple-dmg: 8 tables, master checksum verified at open");
			vdimg_close_path(&o);
		}
	}
}

int main(void)
{
	static char script[512], data[512];

	ktap_start();
	if (sh("command -v python3 >/dev/null")) {
		printf("1..0 # SKIP python3 is not installed\n");
		return 4;
	}
	samples = getenv("VDIMG_SAMPLES");
	snprintf(script, sizeof(script), "%s/selftests/host/mkdmg.py",
		 getenv("VDIMG_SRC") ? getenv("VDIMG_SRC") : ".");
	mkdmg = script;
	snprintf(data, sizeof(data), "%s/selftests/host/data",
		 getenv("VDIMG_SRC") ? getenv("VDIMG_SRC") : ".");
	datadir = data;
	if (access(mkdmg, R_OK)) {
		printf("Bail out! %s not found (run from the source tree, or set VDIMG_SRC)\n", mkdmg);
		return 1;
	}
	have_qemu = !sh("command -v qemu-img >/dev/null");
	have_dmg2img = !sh("command -v dmg2img >/dev/null");
	test_adc();
	test_bzip2_stream();
	test_lzma_stream();
	if (make_source()) {
		printf("Bail out! cannot make the source disk\n");
		return 1;
	}
	test_built();
	if (!have_qemu)
		skip("qemu-img is not installed: no second reader");
	if (!have_dmg2img)
		skip("dmg2img is not installed: no second reader");
	test_refused();
	test_lzfse();
	test_sample();
	return ktap_finish();
}
