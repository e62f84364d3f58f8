// SPDX-License-Identifier: GPL-2.0
/*
 * bzip2 (the UDBZ chunks of DMG images), decoded into a buffer of known size. A stream is "BZh"
 * and a block-size digit 1-9, then blocks, each the 48-bit magic 0x314159265359, the CRC of its
 * output, the origin pointer of the Burrows-Wheeler transform, the map of the byte values used,
 * 2-6 Huffman tables chosen per 50 symbols by move-to-front coded selectors, and the symbols:
 * move-to-front indexes with runs of the front byte written in bijective base 2 (RUNA, RUNB).
 * The block is undone by the inverse BWT and the initial run-length code (four equal bytes and a
 * count); the stream ends with the magic 0x177245385090 and the combined CRC. Streams may follow
 * each other. The CRCs are checked (MSB-first CRC-32, table built once per workspace).
 *
 * The input is hostile: every bit read is bounded by the input, every count by the block size
 * the header gives (at most 900000), every byte written by @dst_len; the time is linear in the
 * input and output. The memory is one workspace (about 3.7 MB) that the caller allocates once
 * per image. Kernel-shared (dmg map.c decodes with it).
 */
#include "dmg.h"

#define BZ_MAX_BLOCK	900000
#define BZ_MAX_GROUPS	6
#define BZ_MAX_ALPHA	258
#define BZ_MAX_LEN	20
#define BZ_MAX_SELECTORS 18002	/* 2 + 900000 / 50: more are read but ignored */
#define BZ_GROUP_SIZE	50

struct dmg_bz_huff {
	u16 perm[BZ_MAX_ALPHA];		/* symbols by code length, then by value */
	u32 first[BZ_MAX_LEN + 2];	/* first canonical code of each length */
	u16 count[BZ_MAX_LEN + 2];	/* codes of each length */
	u16 index[BZ_MAX_LEN + 2];	/* where each length starts in @perm */
	u8 max_len;
};

struct dmg_bzip2 {
	u32 crc_table[256];
	u32 tt[BZ_MAX_BLOCK];		/* the block: byte in bits 0-7, BWT link above */
	u8 selectors[BZ_MAX_SELECTORS];
	struct dmg_bz_huff huff[BZ_MAX_GROUPS];
	u32 cf[256];			/* byte counts, then their first places, of the block */
	u8 len[BZ_MAX_ALPHA];		/* code lengths being read */
};

struct dmg_bz_in {
	const u8 *p;
	size_t len, pos;		/* bytes */
	u64 buf;
	unsigned int bits;		/* valid bits in @buf (low ones) */
	bool over;			/* read past the end: the result is corrupt */
};

size_t dmg_bzip2_workspace_size(void)
{
	return sizeof(struct dmg_bzip2);
}

void dmg_bzip2_init(struct dmg_bzip2 *ws)
{
	u32 i, j, c;

	for (i = 0; i < 256; i++) {
		c = i << 24;
		for (j = 0; j < 8; j++)
			c = c & 0x80000000u ? (c << 1) ^ 0x04c11db7u : c << 1;
		ws->crc_table[i] = c;
	}
}

/* @n bits (at most 32), most significant first; zeros and @over set past the end */
static u32 bz_bits(struct dmg_bz_in *in, unsigned int n)
{
	while (in->bits < n) {
		if (in->pos == in->len) {
			in->over = true;
			return 0;
		}
		in->buf = (in->buf << 8) | in->p[in->pos++];
		in->bits += 8;
	}
	in->bits -= n;
	return (u32)(in->buf >> in->bits) & (u32)((1ULL << n) - 1);
}

static u32 bz_bit(struct dmg_bz_in *in)
{
	return bz_bits(in, 1);
}

/* the canonical code of lengths @len[0..@n) (1..20 each) as decoding tables */
static void bz_build(struct dmg_bz_huff *h, const u8 *len, unsigned int n)
{
	unsigned int l, s, k = 0;
	u32 code = 0;

	memset(h->count, 0, sizeof(h->count));
	h->max_len = 0;
	for (s = 0; s < n; s++) {
		h->count[len[s]]++;
		h->max_len = max_t(u8, h->max_len, len[s]);
	}
	for (l = 1; l <= BZ_MAX_LEN; l++) {
		h->first[l] = code;
		h->index[l] = k;
		for (s = 0; s < n; s++)
			if (len[s] == l)
				h->perm[k++] = s;
		code = (code + h->count[l]) << 1;
	}
}

/* one symbol, or -1 for a code no table entry has */
static int bz_decode_sym(struct dmg_bz_in *in, const struct dmg_bz_huff *h)
{
	unsigned int l;
	u32 code = 0;

	for (l = 1; l <= h->max_len; l++) {
		code = (code << 1) | bz_bit(in);
		if (code - h->first[l] < h->count[l])
			return h->perm[h->index[l] + (code - h->first[l])];
	}
	return -1;
}

struct dmg_bz_out {
	u8 *dst;
	size_t len, pos;
	u32 crc;
};

static void bz_put(struct dmg_bzip2 *ws, struct dmg_bz_out *o, u8 b)
{
	o->dst[o->pos++] = b;
	o->crc = (o->crc << 8) ^ ws->crc_table[(o->crc >> 24) ^ b];
}

/*
 * Undo the BWT of the @n bytes in @ws->tt from @orig and the run-length code, appending to @o.
 * -EFSCORRUPTED if the output would pass its end.
 */
static int bz_unsort(struct dmg_bzip2 *ws, u32 n, u32 orig, struct dmg_bz_out *o)
{
	u32 *cf = ws->cf, i, sum = 0, pos;
	int last = -1, run = 0;

	memset(ws->cf, 0, sizeof(ws->cf));
	for (i = 0; i < n; i++)
		cf[ws->tt[i] & 0xff]++;
	for (i = 0; i < 256; i++) {
		u32 c = cf[i];

		cf[i] = sum;
		sum += c;
	}
	for (i = 0; i < n; i++)
		ws->tt[cf[ws->tt[i] & 0xff]++] |= i << 8;
	pos = ws->tt[orig] >> 8;
	for (i = 0; i < n; i++) {
		u8 b;

		pos = ws->tt[pos];
		b = pos & 0xff;
		pos >>= 8;
		if (run == 4) {
			/* b is a count of further copies of the run's byte */
			if (b > o->len - o->pos)
				return -EFSCORRUPTED;
			while (b--)
				bz_put(ws, o, (u8)last);
			run = 0;
			last = -1;
			continue;
		}
		if (o->pos == o->len)
			return -EFSCORRUPTED;
		bz_put(ws, o, b);
		run = b == last ? run + 1 : 1;
		last = b;
	}
	return 0;
}

/* one block after its magic, its output appended to @o; @max is the stream's block size */
static int bz_block(struct dmg_bzip2 *ws, struct dmg_bz_in *in, u32 max, struct dmg_bz_out *o,
		    u32 *combined)
{
	u8 seq[256], mtf[256], glist[BZ_MAX_GROUPS], *len = ws->len;
	u32 want_crc, orig, used, i, j, k, n = 0, nsel, stored_sel, ngroups, alpha, run = 0;
	unsigned int nused = 0, runbit = 0, group_left = 0, sel = 0;
	const struct dmg_bz_huff *h = NULL;
	int ret;

	want_crc = bz_bits(in, 32);
	if (bz_bit(in))
		return -EFSCORRUPTED;	/* randomised blocks: bzip2 0.9.0 and older only */
	orig = bz_bits(in, 24);
	used = bz_bits(in, 16);
	for (i = 0; i < 16; i++) {
		if (!(used & (0x8000 >> i)))
			continue;
		j = bz_bits(in, 16);
		for (k = 0; k < 16; k++)
			if (j & (0x8000 >> k))
				seq[nused++] = i * 16 + k;
	}
	if (!nused || in->over)
		return -EFSCORRUPTED;
	alpha = nused + 2;
	ngroups = bz_bits(in, 3);
	nsel = bz_bits(in, 15);
	if (ngroups < 2 || ngroups > BZ_MAX_GROUPS || !nsel)
		return -EFSCORRUPTED;
	for (i = 0; i < ngroups; i++)
		glist[i] = i;
	stored_sel = min_t(u32, nsel, BZ_MAX_SELECTORS);
	for (i = 0; i < nsel; i++) {
		u8 g;

		for (j = 0; bz_bit(in); j++)
			if (j + 1 >= ngroups)
				return -EFSCORRUPTED;
		if (in->over)
			return -EFSCORRUPTED;
		g = glist[j];
		memmove(glist + 1, glist, j);
		glist[0] = g;
		if (i < stored_sel)
			ws->selectors[i] = g;
	}
	for (i = 0; i < ngroups; i++) {
		u32 l = bz_bits(in, 5);

		for (j = 0; j < alpha; j++) {
			for (;;) {
				if (l < 1 || l > BZ_MAX_LEN || in->over)
					return -EFSCORRUPTED;
				if (!bz_bit(in))
					break;
				l = bz_bit(in) ? l - 1 : l + 1;
			}
			len[j] = l;
		}
		bz_build(&ws->huff[i], len, alpha);
	}

	for (i = 0; i < nused; i++)
		mtf[i] = i;
	for (;;) {
		int sym;

		if (!group_left) {
			if (sel >= stored_sel)
				return -EFSCORRUPTED;
			h = &ws->huff[ws->selectors[sel++]];
			group_left = BZ_GROUP_SIZE;
		}
		group_left--;
		sym = bz_decode_sym(in, h);
		if (sym < 0 || in->over)
			return -EFSCORRUPTED;
		if (sym <= 1) {		/* RUNA, RUNB: a digit of the run length */
			if (runbit > 20)
				return -EFSCORRUPTED;
			run += (u32)(sym + 1) << runbit++;
			if (run > max - n)
				return -EFSCORRUPTED;
			continue;
		}
		if (run) {
			u8 b = seq[mtf[0]];

			while (run--)
				ws->tt[n++] = b;
			run = 0;
			runbit = 0;
		}
		if ((u32)sym == alpha - 1)
			break;		/* end of block */
		if (n == max)
			return -EFSCORRUPTED;
		/* index sym - 1 moves to the front */
		k = mtf[sym - 1];
		memmove(mtf + 1, mtf, sym - 1);
		mtf[0] = k;
		ws->tt[n++] = seq[k];
	}
	if (orig >= n)
		return -EFSCORRUPTED;
	o->crc = 0xffffffffu;
	ret = bz_unsort(ws, n, orig, o);
	if (ret)
		return ret;
	if (~o->crc != want_crc)
		return -EFSCORRUPTED;
	*combined = ((*combined << 1) | (*combined >> 31)) ^ want_crc;
	return 0;
}

int dmg_bzip2_decode(struct dmg_bzip2 *ws, const u8 *src, size_t src_len, u8 *dst,
		     size_t dst_len)
{
	struct dmg_bz_in in = { .p = src, .len = src_len };
	struct dmg_bz_out o = { .dst = dst, .len = dst_len };
	int ret;

	do {
		u32 max, combined = 0;

		/* a stream starts on a byte boundary */
		in.bits = 0;
		if (in.len - in.pos < 4 || memcmp(in.p + in.pos, "BZh", 3) ||
		    in.p[in.pos + 3] < '1' || in.p[in.pos + 3] > '9')
			return -EFSCORRUPTED;
		max = (in.p[in.pos + 3] - '0') * 100000;
		in.pos += 4;
		for (;;) {
			u32 hi = bz_bits(&in, 24), lo = bz_bits(&in, 24);

			if (in.over)
				return -EFSCORRUPTED;
			if (hi == 0x314159 && lo == 0x265359) {
				ret = bz_block(ws, &in, max, &o, &combined);
				if (ret)
					return ret;
				continue;
			}
			if (hi != 0x177245 || lo != 0x385090 || bz_bits(&in, 32) != combined ||
			    in.over)
				return -EFSCORRUPTED;
			break;
		}
	} while (o.pos < o.len);
	return 0;
}
