// SPDX-License-Identifier: GPL-2.0
/*
 * LZMA (the ULMO chunks of DMG images), decoded into a buffer of known size. Two containers are
 * accepted, told apart by their first byte: an .xz stream (magic fd 37 7a 58 5a 00; what
 * libyal's libmodi hands to liblzma's xz decoder for these chunks), whose blocks hold LZMA2 (a
 * run of chunks, each either stored bytes or an LZMA1 range-coded piece that may reset the
 * coder state, change the properties or reset the dictionary), and the .lzma "alone" header
 * (properties byte, 32-bit dictionary size, 64-bit uncompressed size, then one LZMA1 stream),
 * whose properties byte is at most 224. In an .xz stream the stream header, block headers,
 * index and footer are checked, with their CRC-32s, and so is each block's check when it is a
 * CRC-32 or CRC-64 (a SHA-256 check is skipped); only the LZMA2 filter is supported.
 *
 * LZMA1 itself: a binary range decoder with adaptive 11-bit probabilities; per position a match
 * flag, then a literal (coded with the previous byte's top lc bits and the position's low lp
 * bits as context, and with the byte at the last distance as extra context after a match) or
 * a match, a repeat of one of the last four distances, or a one-byte repeat; lengths from a
 * three-tier length coder per position state (low pb bits), distances from a 6-bit slot, then
 * reverse bit trees or direct bits and four aligned bits. The dictionary is the output buffer
 * itself: a chunk decodes to at most its own sector count * 512 bytes, and a match may only
 * reach back to the last dictionary reset. lc + lp must be at most 4 (as LZMA2 requires), which
 * bounds the literal probabilities to 16 * 0x300.
 *
 * The input is hostile: every byte read is bounded by the input (reading past it fails), every
 * write by @dst_len; each loop iteration writes at least one byte or ends the stream, so the
 * time is linear in the output. The memory is one workspace (about 30 KB) that the caller
 * allocates once per image. Kernel-shared (dmg map.c decodes with it).
 */
#include "dmg.h"

#define LZ_STATES	12
#define LZ_POS_MAX	16		/* 1 << pb, pb <= 4 */
#define LZ_LIT_MAX	16		/* 1 << (lc + lp), lc + lp <= 4 */
#define LZ_PROB_INIT	1024
#define LZ_END_DIST	0xffffffffu	/* the end-of-payload marker's distance */

struct dmg_lz_len {
	u16 choice, choice2;
	u16 low[LZ_POS_MAX][8];
	u16 mid[LZ_POS_MAX][8];
	u16 high[256];
};

struct dmg_lz_probs {
	u16 is_match[LZ_STATES][LZ_POS_MAX];
	u16 is_rep[LZ_STATES], is_rep0[LZ_STATES], is_rep1[LZ_STATES], is_rep2[LZ_STATES];
	u16 is_rep0_long[LZ_STATES][LZ_POS_MAX];
	u16 slot[4][64];
	u16 special[115];		/* reverse trees of distance slots 4-13 */
	u16 align[16];
	struct dmg_lz_len match_len, rep_len;
	u16 literal[LZ_LIT_MAX][0x300];
};

struct dmg_lzma {
	struct dmg_lz_probs p;
	u64 crc64_table[256];
	const char *unsupported;	/* after -EOPNOTSUPP: what, and its value */
	u64 unsupported_val;
};

/* range decoder over [in, in + len) */
struct dmg_lz_rc {
	const u8 *in;
	size_t len, pos;
	u32 range, code;
	bool bad;			/* read past the input, or an impossible code */
};

/* one LZMA1 decoder: the output buffer is the dictionary */
struct dmg_lz {
	struct dmg_lzma *ws;
	struct dmg_lz_probs *p;
	struct dmg_lz_rc rc;
	u8 *out;
	size_t out_len, pos;
	size_t dict_start;		/* matches may not reach before this */
	u32 rep[4];
	u32 state;
	u32 lc, lp, pb;
};

size_t dmg_lzma_workspace_size(void)
{
	return sizeof(struct dmg_lzma);
}

void dmg_lzma_init(struct dmg_lzma *ws)
{
	u64 c;
	u32 i, j;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = c & 1 ? (c >> 1) ^ 0xc96c5795d7870f42ULL : c >> 1;
		ws->crc64_table[i] = c;
	}
}

static u64 lz_crc64(const struct dmg_lzma *ws, const u8 *p, size_t n)
{
	u64 c = ~0ULL;

	while (n--)
		c = ws->crc64_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

static u32 lz_le32(const u8 *p)
{
	return p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

/* ---- range decoder ---- */

static u8 rc_byte(struct dmg_lz_rc *rc)
{
	if (rc->pos == rc->len) {
		rc->bad = true;
		return 0;
	}
	return rc->in[rc->pos++];
}

static void rc_init(struct dmg_lz_rc *rc, const u8 *in, size_t len)
{
	u32 i;

	rc->in = in;
	rc->len = len;
	rc->pos = 0;
	rc->bad = rc_byte(rc) != 0;
	rc->range = 0xffffffffu;
	rc->code = 0;
	for (i = 0; i < 4; i++)
		rc->code = rc->code << 8 | rc_byte(rc);
	if (rc->code == rc->range)
		rc->bad = true;
}

static void rc_normalize(struct dmg_lz_rc *rc)
{
	if (rc->range < (1u << 24)) {
		rc->range <<= 8;
		rc->code = rc->code << 8 | rc_byte(rc);
	}
}

static u32 rc_bit(struct dmg_lz_rc *rc, u16 *prob)
{
	u32 bound = (rc->range >> 11) * *prob;
	u32 bit;

	if (rc->code < bound) {
		rc->range = bound;
		*prob += (2048 - *prob) >> 5;
		bit = 0;
	} else {
		rc->range -= bound;
		rc->code -= bound;
		*prob -= *prob >> 5;
		bit = 1;
	}
	rc_normalize(rc);
	return bit;
}

static u32 rc_direct(struct dmg_lz_rc *rc, u32 n)
{
	u32 v = 0;

	while (n--) {
		rc->range >>= 1;
		if (rc->code >= rc->range) {
			rc->code -= rc->range;
			v = v << 1 | 1;
		} else {
			v <<= 1;
		}
		rc_normalize(rc);
	}
	return v;
}

/* @n bits, most significant first, through the tree @probs (1 << @n entries) */
static u32 rc_tree(struct dmg_lz_rc *rc, u16 *probs, u32 n)
{
	u32 m = 1, i;

	for (i = 0; i < n; i++)
		m = m << 1 | rc_bit(rc, &probs[m]);
	return m - (1u << n);
}

/* @n bits, least significant first */
static u32 rc_tree_rev(struct dmg_lz_rc *rc, u16 *probs, u32 n)
{
	u32 m = 1, v = 0, i, bit;

	for (i = 0; i < n; i++) {
		bit = rc_bit(rc, &probs[m]);
		m = m << 1 | bit;
		v |= bit << i;
	}
	return v;
}

/* ---- LZMA1 ---- */

static void lz_reset_probs(struct dmg_lz_probs *p)
{
	u16 *w = (u16 *)p;
	size_t i;

	for (i = 0; i < sizeof(*p) / sizeof(u16); i++)
		w[i] = LZ_PROB_INIT;
}

static void lz_reset_state(struct dmg_lz *lz)
{
	lz_reset_probs(lz->p);
	lz->state = 0;
	memset(lz->rep, 0, sizeof(lz->rep));
}

/*
 * The properties byte: -EFSCORRUPTED above 224; lc + lp > 4 is invalid in LZMA2 (@lzma2) and
 * valid but not supported (-EOPNOTSUPP, named) in LZMA1
 */
static int lz_props(struct dmg_lz *lz, u8 b, bool lzma2)
{
	u32 lc, lp, pb;

	if (b > 224)
		return -EFSCORRUPTED;
	lc = b % 9;
	lp = (b / 9) % 5;
	pb = b / 45;
	if (lc + lp > 4 && lzma2)
		return -EFSCORRUPTED;
	if (lc + lp > 4) {
		lz->ws->unsupported = "LZMA properties with lc + lp above 4";
		lz->ws->unsupported_val = b;
		return -EOPNOTSUPP;
	}
	lz->lc = lc;
	lz->lp = lp;
	lz->pb = pb;
	return 0;
}

static u32 lz_len(struct dmg_lz *lz, struct dmg_lz_len *l, u32 ps)
{
	struct dmg_lz_rc *rc = &lz->rc;

	if (!rc_bit(rc, &l->choice))
		return rc_tree(rc, l->low[ps], 3);
	if (!rc_bit(rc, &l->choice2))
		return 8 + rc_tree(rc, l->mid[ps], 3);
	return 16 + rc_tree(rc, l->high, 8);
}

static u32 lz_dist(struct dmg_lz *lz, u32 len)
{
	struct dmg_lz_rc *rc = &lz->rc;
	u32 slot = rc_tree(rc, lz->p->slot[min(len, 3u)], 6), n, d;

	if (slot < 4)
		return slot;
	n = (slot >> 1) - 1;
	d = (2 | (slot & 1)) << n;
	if (slot < 14)
		return d + rc_tree_rev(rc, lz->p->special + d - slot, n);
	d += rc_direct(rc, n - 4) << 4;
	return d + rc_tree_rev(rc, lz->p->align, 4);
}

static void lz_literal(struct dmg_lz *lz)
{
	size_t rel = lz->pos - lz->dict_start;
	u32 prev = rel ? lz->out[lz->pos - 1] : 0, sym = 1;
	u16 *probs = lz->p->literal[((rel & ((1u << lz->lp) - 1)) << lz->lc) +
				    (prev >> (8 - lz->lc))];

	if (lz->state >= 7) {
		/* the caller checked that rep[0] is inside the dictionary */
		u32 mb = lz->out[lz->pos - lz->rep[0] - 1];

		do {
			u32 mbit = (mb >> 7) & 1, bit;

			mb <<= 1;
			bit = rc_bit(&lz->rc, &probs[((1 + mbit) << 8) + sym]);
			sym = sym << 1 | bit;
			if (bit != mbit)
				break;
		} while (sym < 0x100);
	}
	while (sym < 0x100)
		sym = sym << 1 | rc_bit(&lz->rc, &probs[sym]);
	lz->out[lz->pos++] = (u8)sym;
	lz->state = lz->state < 4 ? 0 : lz->state < 10 ? lz->state - 3 : lz->state - 6;
}

enum { LZ_OK, LZ_MARKER };

/*
 * Decode until @end bytes of output (or the end marker, when @marker_ok). Returns LZ_OK at
 * @end, LZ_MARKER at the marker, -EFSCORRUPTED for bad data.
 */
static int lz_run(struct dmg_lz *lz, size_t end, bool marker_ok)
{
	struct dmg_lz_probs *p = lz->p;
	struct dmg_lz_rc *rc = &lz->rc;

	while (lz->pos < end) {
		u32 ps = (lz->pos - lz->dict_start) & ((1u << lz->pb) - 1);
		u32 s = lz->state, len;
		size_t have = lz->pos - lz->dict_start;

		if (rc->bad)
			return -EFSCORRUPTED;
		if (!rc_bit(rc, &p->is_match[s][ps])) {
			if (s >= 7 && lz->rep[0] >= have)
				return -EFSCORRUPTED;
			lz_literal(lz);
			continue;
		}
		if (!rc_bit(rc, &p->is_rep[s])) {
			u32 d;

			len = lz_len(lz, &p->match_len, ps);
			lz->state = s < 7 ? 7 : 10;
			d = lz_dist(lz, len);
			if (d == LZ_END_DIST)
				return marker_ok && !rc->bad ? LZ_MARKER : -EFSCORRUPTED;
			lz->rep[3] = lz->rep[2];
			lz->rep[2] = lz->rep[1];
			lz->rep[1] = lz->rep[0];
			lz->rep[0] = d;
		} else {
			if (!rc_bit(rc, &p->is_rep0[s])) {
				if (!rc_bit(rc, &p->is_rep0_long[s][ps])) {
					if (lz->rep[0] >= have)
						return -EFSCORRUPTED;
					lz->state = s < 7 ? 9 : 11;
					lz->out[lz->pos] = lz->out[lz->pos - lz->rep[0] - 1];
					lz->pos++;
					continue;
				}
			} else {
				u32 d;

				if (!rc_bit(rc, &p->is_rep1[s])) {
					d = lz->rep[1];
				} else {
					if (!rc_bit(rc, &p->is_rep2[s])) {
						d = lz->rep[2];
					} else {
						d = lz->rep[3];
						lz->rep[3] = lz->rep[2];
					}
					lz->rep[2] = lz->rep[1];
				}
				lz->rep[1] = lz->rep[0];
				lz->rep[0] = d;
			}
			len = lz_len(lz, &p->rep_len, ps);
			lz->state = s < 7 ? 8 : 11;
		}
		len += 2;
		if (rc->bad || lz->rep[0] >= have || len > end - lz->pos)
			return -EFSCORRUPTED;
		/* byte by byte: the source may overlap the bytes being written */
		while (len--) {
			lz->out[lz->pos] = lz->out[lz->pos - lz->rep[0] - 1];
			lz->pos++;
		}
	}
	return rc->bad ? -EFSCORRUPTED : LZ_OK;
}

/* after the last byte: the end marker (a match of distance 0xffffffff), read without writing */
static int lz_end_marker(struct dmg_lz *lz)
{
	struct dmg_lz_probs *p = lz->p;
	struct dmg_lz_rc *rc = &lz->rc;
	u32 ps = (lz->pos - lz->dict_start) & ((1u << lz->pb) - 1), s = lz->state, len;

	if (!rc_bit(rc, &p->is_match[s][ps]) || rc_bit(rc, &p->is_rep[s]))
		return -EFSCORRUPTED;
	len = lz_len(lz, &p->match_len, ps);
	if (lz_dist(lz, len) != LZ_END_DIST || rc->bad || rc->code)
		return -EFSCORRUPTED;
	return 0;
}

/* ---- .lzma (alone): 13-byte header, one LZMA1 stream ---- */

static int lz_alone(struct dmg_lzma *ws, const u8 *src, size_t src_len, u8 *dst,
		    size_t dst_len)
{
	struct dmg_lz lz = { .ws = ws, .p = &ws->p, .out = dst, .out_len = dst_len };
	u64 size = 0;
	int i, ret;

	if (src_len < 13)
		return -EFSCORRUPTED;
	ret = lz_props(&lz, src[0], false);
	if (ret)
		return ret;
	for (i = 12; i >= 5; i--)
		size = size << 8 | src[i];
	if (size != U64_MAX && size != dst_len)
		return -EFSCORRUPTED;
	lz_reset_state(&lz);
	rc_init(&lz.rc, src + 13, src_len - 13);
	ret = lz_run(&lz, dst_len, true);
	if (ret < 0)
		return ret;
	if (ret == LZ_MARKER)
		return lz.pos == dst_len && !lz.rc.code ? 0 : -EFSCORRUPTED;
	/* all the output: the stream ends here, or with an end marker (needed without a size) */
	if (size != U64_MAX && !lz.rc.code)
		return 0;
	return lz_end_marker(&lz);
}

/* ---- .xz: stream header, blocks of LZMA2, index, footer ---- */

static const u8 xz_magic[6] = { 0xfd, '7', 'z', 'X', 'Z', 0x00 };

/* a variable-length integer (at most 9 bytes, no redundant last zero byte) */
static int xz_vli(const u8 *p, size_t len, size_t *pos, u64 *v)
{
	u32 i;

	*v = 0;
	for (i = 0; i < 9; i++) {
		u8 b;

		if (*pos >= len)
			return -EFSCORRUPTED;
		b = p[(*pos)++];
		*v |= (u64)(b & 0x7f) << (7 * i);
		if (!(b & 0x80))
			return i && !b ? -EFSCORRUPTED : 0;
	}
	return -EFSCORRUPTED;
}

/* the LZMA2 chunks of one block: @src is the rest of the input, *@used what they take */
static int xz_lzma2(struct dmg_lzma *ws, const u8 *src, size_t src_len, size_t *used,
		    u8 *dst, size_t dst_len, size_t *out_pos)
{
	struct dmg_lz lz = { .ws = ws, .p = &ws->p, .out = dst, .out_len = dst_len };
	bool need_dict = true, need_props = true;
	size_t pos = 0;
	int ret;

	lz.pos = *out_pos;
	lz.dict_start = lz.pos;
	for (;;) {
		u32 ctrl, unpacked, packed;

		if (pos >= src_len)
			return -EFSCORRUPTED;
		ctrl = src[pos++];
		if (!ctrl)
			break;
		if (ctrl == 1 || ctrl >= 0xe0) {
			lz.dict_start = lz.pos;
			need_dict = false;
		} else if (need_dict) {
			return -EFSCORRUPTED;
		}
		if (ctrl < 0x80) {
			if (ctrl > 2 || src_len - pos < 2)
				return -EFSCORRUPTED;
			unpacked = ((u32)src[pos] << 8 | src[pos + 1]) + 1;
			pos += 2;
			if (unpacked > src_len - pos || unpacked > dst_len - lz.pos)
				return -EFSCORRUPTED;
			memcpy(dst + lz.pos, src + pos, unpacked);
			lz.pos += unpacked;
			pos += unpacked;
			if (ctrl == 1)
				need_props = true;
			continue;
		}
		if (src_len - pos < 4)
			return -EFSCORRUPTED;
		unpacked = (((ctrl & 0x1f) << 16) | (u32)src[pos] << 8 | src[pos + 1]) + 1;
		packed = ((u32)src[pos + 2] << 8 | src[pos + 3]) + 1;
		pos += 4;
		if (ctrl >= 0xc0) {
			if (pos >= src_len)
				return -EFSCORRUPTED;
			ret = lz_props(&lz, src[pos++], true);
			if (ret)
				return ret;
			need_props = false;
		} else if (need_props) {
			return -EFSCORRUPTED;
		}
		if (ctrl >= 0xa0)
			lz_reset_state(&lz);
		if (packed > src_len - pos || unpacked > dst_len - lz.pos)
			return -EFSCORRUPTED;
		rc_init(&lz.rc, src + pos, packed);
		ret = lz_run(&lz, lz.pos + unpacked, false);
		if (ret < 0)
			return ret;
		if (lz.rc.pos != packed || lz.rc.code)
			return -EFSCORRUPTED;
		pos += packed;
	}
	*used = pos;
	*out_pos = lz.pos;
	return 0;
}

static size_t xz_check_size(u32 type)
{
	return type ? 4u << ((type - 1) / 3) : 0;
}

/* one .xz stream at @src; *@used is its length */
static int xz_stream(struct dmg_lzma *ws, const u8 *src, size_t src_len, size_t *used,
		     u8 *dst, size_t dst_len, size_t *out_pos)
{
	size_t pos = 12, blocks = 0, start, csize, isize, ipos, block_out;
	u64 v, nrec, unpadded, usize;
	u32 check, i, j;
	int ret;

	if (src_len < 24 || memcmp(src, xz_magic, 6) || src[6] || src[7] > 15 ||
	    vdimg_crc32(0, src + 6, 2) != lz_le32(src + 8))
		return -EFSCORRUPTED;
	check = src[7];
	/* blocks until the index indicator */
	for (;;) {
		size_t hsize, hpos, data;
		u32 flags, nfilt;
		u64 hdr_csize = U64_MAX, hdr_usize = U64_MAX, id, psize;

		if (pos >= src_len)
			return -EFSCORRUPTED;
		if (!src[pos])
			break;
		hsize = ((size_t)src[pos] + 1) * 4;
		if (hsize > src_len - pos ||
		    vdimg_crc32(0, src + pos, hsize - 4) != lz_le32(src + pos + hsize - 4))
			return -EFSCORRUPTED;
		flags = src[pos + 1];
		if (flags & 0x3c)
			return -EFSCORRUPTED;
		nfilt = (flags & 3) + 1;
		hpos = pos + 2;
		if ((flags & 0x40) && xz_vli(src, pos + hsize - 4, &hpos, &hdr_csize))
			return -EFSCORRUPTED;
		if ((flags & 0x80) && xz_vli(src, pos + hsize - 4, &hpos, &hdr_usize))
			return -EFSCORRUPTED;
		if (xz_vli(src, pos + hsize - 4, &hpos, &id) ||
		    xz_vli(src, pos + hsize - 4, &hpos, &psize))
			return -EFSCORRUPTED;
		if (nfilt != 1 || id != 0x21) {
			ws->unsupported = nfilt != 1 ? "an xz filter chain (only a lone LZMA2 is)" :
				"the xz filter";
			ws->unsupported_val = id;
			return -EOPNOTSUPP;
		}
		if (psize != 1 || hpos >= pos + hsize - 4 || src[hpos] > 40)
			return -EFSCORRUPTED;
		for (hpos++; hpos < pos + hsize - 4; hpos++)
			if (src[hpos])
				return -EFSCORRUPTED;
		pos += hsize;
		data = pos;
		block_out = *out_pos;
		ret = xz_lzma2(ws, src + pos, src_len - pos, &csize, dst, dst_len, out_pos);
		if (ret)
			return ret;
		pos += csize;
		if ((hdr_csize != U64_MAX && hdr_csize != csize) ||
		    (hdr_usize != U64_MAX && hdr_usize != *out_pos - block_out))
			return -EFSCORRUPTED;
		while ((pos - data) & 3) {
			if (pos >= src_len || src[pos])
				return -EFSCORRUPTED;
			pos++;
		}
		if (xz_check_size(check) > src_len - pos)
			return -EFSCORRUPTED;
		if (check == 1 && vdimg_crc32(0, dst + block_out, *out_pos - block_out) !=
				  lz_le32(src + pos))
			return -EFSCORRUPTED;
		if (check == 4) {
			u64 c = lz_crc64(ws, dst + block_out, *out_pos - block_out);

			for (j = 0; j < 8; j++)
				if (src[pos + j] != (u8)(c >> (8 * j)))
					return -EFSCORRUPTED;
		}
		pos += xz_check_size(check);
		blocks++;
	}
	/* the index: a record (unpadded size, uncompressed size) per block, then its CRC-32 */
	start = pos++;
	ipos = pos;
	if (xz_vli(src, src_len, &ipos, &nrec) || nrec != blocks)
		return -EFSCORRUPTED;
	for (i = 0; i < nrec; i++)
		if (xz_vli(src, src_len, &ipos, &unpadded) || !unpadded ||
		    xz_vli(src, src_len, &ipos, &usize))
			return -EFSCORRUPTED;
	while ((ipos - start) & 3) {
		if (ipos >= src_len || src[ipos])
			return -EFSCORRUPTED;
		ipos++;
	}
	if (src_len - ipos < 16 || vdimg_crc32(0, src + start, ipos - start) != lz_le32(src + ipos))
		return -EFSCORRUPTED;
	isize = ipos + 4 - start;
	pos = ipos + 4;
	/* the footer: CRC-32, backward size, the flags again, "YZ" */
	v = lz_le32(src + pos + 4);
	if (vdimg_crc32(0, src + pos + 4, 6) != lz_le32(src + pos) || (v + 1) * 4 != isize ||
	    memcmp(src + pos + 8, src + 6, 2) || src[pos + 10] != 'Y' || src[pos + 11] != 'Z')
		return -EFSCORRUPTED;
	*used = pos + 12;
	return 0;
}

static int lz_xz(struct dmg_lzma *ws, const u8 *src, size_t src_len, u8 *dst, size_t dst_len)
{
	size_t pos = 0, out = 0, used;
	int ret;

	while (pos < src_len) {
		ret = xz_stream(ws, src + pos, src_len - pos, &used, dst, dst_len, &out);
		if (ret)
			return ret;
		pos += used;
		/* stream padding: zeros in fours; another stream may follow */
		while (src_len - pos >= 4 && !lz_le32(src + pos))
			pos += 4;
		if (pos < src_len && (src_len - pos < 6 || memcmp(src + pos, xz_magic, 6)))
			return -EFSCORRUPTED;
	}
	return out == dst_len ? 0 : -EFSCORRUPTED;
}

const char *dmg_lzma_unsupported(const struct dmg_lzma *ws, u64 *val)
{
	*val = ws->unsupported_val;
	return ws->unsupported;
}

int dmg_lzma_decode(struct dmg_lzma *ws, const u8 *src, size_t src_len, u8 *dst, size_t dst_len)
{
	ws->unsupported = NULL;
	if (!src_len)
		return -EFSCORRUPTED;
	if (src[0] == xz_magic[0])
		return lz_xz(ws, src, src_len, dst, dst_len);
	return lz_alone(ws, src, src_len, dst, dst_len);
}
