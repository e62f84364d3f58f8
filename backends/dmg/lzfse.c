// SPDX-License-Identifier: GPL-2.0
/*
 * LZFSE (the ULFO chunks of DMG images), decoded into a buffer of known size. A stream is a run
 * of blocks, each starting with a little-endian magic: "bvx-" (stored bytes), "bvxn" (LZVN, a
 * byte-oriented LZ77 code), "bvx1" and "bvx2" (LZFSE proper: literals and literal-length /
 * match-length / distance triples, all coded with finite state entropy tables whose frequencies
 * the header gives, plainly in v1 and with a small prefix code in v2), and "bvx$", the end.
 * Matches may reach into earlier blocks of the stream.
 *
 * The FSE bit streams are read backwards from their end: a stream of n bytes is the
 * little-endian number of 8n bits, its top (-bits) bits padding, and each read takes the highest
 * bits not yet read. Decoding tables are built per block from the frequencies, every entry
 * filled (a hostile state can only select a defined entry).
 *
 * The input is hostile: every read is bounded by the block's payload, every write by @dst_len,
 * each block must produce exactly the byte count its header gives; the time is linear in the
 * input and output. The memory is one workspace (about 50 KB) that the caller allocates once
 * per image. Kernel-shared (dmg map.c decodes with it).
 */
#include "dmg.h"

#define LZ_MAGIC_END	0x24787662u	/* bvx$ */
#define LZ_MAGIC_RAW	0x2d787662u	/* bvx- */
#define LZ_MAGIC_V1	0x31787662u	/* bvx1 */
#define LZ_MAGIC_V2	0x32787662u	/* bvx2 */
#define LZ_MAGIC_LZVN	0x6e787662u	/* bvxn */

#define LZ_L_SYMS	20
#define LZ_M_SYMS	20
#define LZ_D_SYMS	64
#define LZ_LIT_SYMS	256
#define LZ_NR_FREQ	(LZ_L_SYMS + LZ_M_SYMS + LZ_D_SYMS + LZ_LIT_SYMS)
#define LZ_L_STATES	64
#define LZ_M_STATES	64
#define LZ_D_STATES	256
#define LZ_LIT_STATES	1024
#define LZ_MAX_MATCHES	10000
#define LZ_MAX_LITERALS	(4 * LZ_MAX_MATCHES)
#define LZ_V1_HEADER	772	/* 7 u32, then bits and states, then 360 u16 frequencies */
#define LZ_V2_HEADER	32	/* magic, raw bytes, three packed u64, then the frequencies */

struct dmg_lz_lit {			/* literal decoding entry */
	s16 delta;
	u8 bits;
	u8 symbol;
};

struct dmg_lz_val {			/* L, M or D decoding entry */
	s16 delta;
	u8 bits;			/* state bits + value bits */
	u8 vbits;
	u32 vbase;
};

struct dmg_lzfse {
	u16 freq[LZ_NR_FREQ];		/* L, M, D, literal */
	struct dmg_lz_lit lit[LZ_LIT_STATES];
	struct dmg_lz_val l[LZ_L_STATES], m[LZ_M_STATES], d[LZ_D_STATES];
	u32 l_base[LZ_L_SYMS], m_base[LZ_M_SYMS], d_base[LZ_D_SYMS];
	u8 l_bits[LZ_L_SYMS], m_bits[LZ_M_SYMS], d_bits[LZ_D_SYMS];
	u8 literals[LZ_MAX_LITERALS + 4];
};

size_t dmg_lzfse_workspace_size(void)
{
	return sizeof(struct dmg_lzfse);
}

/* the extra bits of each L, M, D symbol; each base is the previous base + 2^(its extra bits) */
void dmg_lzfse_init(struct dmg_lzfse *ws)
{
	static const u8 l_top[4] = { 2, 3, 5, 8 }, m_top[4] = { 3, 5, 8, 11 };
	unsigned int i;

	for (i = 0; i < LZ_L_SYMS; i++) {
		ws->l_bits[i] = i < 16 ? 0 : l_top[i - 16];
		ws->m_bits[i] = i < 16 ? 0 : m_top[i - 16];
		ws->l_base[i] = i ? ws->l_base[i - 1] + (1u << ws->l_bits[i - 1]) : 0;
		ws->m_base[i] = i ? ws->m_base[i - 1] + (1u << ws->m_bits[i - 1]) : 0;
	}
	for (i = 0; i < LZ_D_SYMS; i++) {
		ws->d_bits[i] = i >> 2;
		ws->d_base[i] = i ? ws->d_base[i - 1] + (1u << ws->d_bits[i - 1]) : 0;
	}
}

static u32 lz_le32(const u8 *p)
{
	return p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

static u64 lz_le64(const u8 *p)
{
	return lz_le32(p) | (u64)lz_le32(p + 4) << 32;
}

static u32 lz_field(u64 v, unsigned int off, unsigned int n)
{
	return (u32)(v >> off) & (u32)((1ULL << n) - 1);
}

/* ---- the backward bit stream ---- */

struct dmg_lz_bits {
	const u8 *p;
	u64 left;			/* bits not yet read: the next read ends at bit @left */
	bool over;
};

static int lz_bits_init(struct dmg_lz_bits *b, const u8 *p, u32 len, int pad)
{
	if (pad < -7 || pad > 0 || !len)
		return -EFSCORRUPTED;
	b->p = p;
	b->left = (u64)len * 8 + pad;
	b->over = false;
	/* the padding bits are zero */
	if (pad && (p[len - 1] >> (8 + pad)))
		return -EFSCORRUPTED;
	return 0;
}

/* the @n (at most 32) bits below @left, most significant first */
static u32 lz_pull(struct dmg_lz_bits *b, unsigned int n)
{
	u64 start, v = 0;
	u32 i, first, last;

	if (!n)
		return 0;
	if (b->left < n) {
		b->over = true;
		return 0;
	}
	start = b->left - n;
	first = start / 8;
	last = (b->left - 1) / 8;
	for (i = last + 1; i-- > first;)
		v = (v << 8) | b->p[i];
	b->left = start;
	return (u32)(v >> (start % 8)) & (u32)((1ULL << n) - 1);
}

/* ---- FSE tables ---- */

/* the state bits k of a symbol of frequency @f among @n states: n <= f << k < 2n */
static unsigned int lz_shift(u32 f, u32 n)
{
	unsigned int k = 0;

	while ((f << k) < n)
		k++;
	return k;
}

static int lz_check_freq(const u16 *f, unsigned int nsym, u32 nstates)
{
	u32 sum = 0, i;

	for (i = 0; i < nsym; i++)
		sum += f[i];
	return sum > nstates ? -EFSCORRUPTED : 0;
}

static void lz_build_lit(struct dmg_lz_lit *t, const u16 *freq)
{
	u32 s, j, pos = 0;

	memset(t, 0, sizeof(*t) * LZ_LIT_STATES);
	for (s = 0; s < LZ_LIT_SYMS; s++) {
		u32 f = freq[s], k, j0;

		if (!f)
			continue;
		k = lz_shift(f, LZ_LIT_STATES);
		j0 = ((2 * LZ_LIT_STATES) >> k) - f;
		for (j = 0; j < f; j++, pos++) {
			t[pos].symbol = s;
			if (j < j0) {
				t[pos].bits = k;
				t[pos].delta = ((f + j) << k) - LZ_LIT_STATES;
			} else {
				t[pos].bits = k - 1;
				t[pos].delta = (j - j0) << (k - 1);
			}
		}
	}
}

static void lz_build_val(struct dmg_lz_val *t, u32 nstates, const u16 *freq, unsigned int nsym,
			 const u8 *vbits, const u32 *vbase)
{
	u32 s, j, pos = 0;

	memset(t, 0, sizeof(*t) * nstates);
	for (s = 0; s < nsym; s++) {
		u32 f = freq[s], k, j0;

		if (!f)
			continue;
		k = lz_shift(f, nstates);
		j0 = ((2 * nstates) >> k) - f;
		for (j = 0; j < f; j++, pos++) {
			t[pos].vbits = vbits[s];
			t[pos].vbase = vbase[s];
			if (j < j0) {
				t[pos].bits = k + vbits[s];
				t[pos].delta = ((f + j) << k) - nstates;
			} else {
				t[pos].bits = k - 1 + vbits[s];
				t[pos].delta = (j - j0) << (k - 1);
			}
		}
	}
}

static u32 lz_value(struct dmg_lz_bits *b, const struct dmg_lz_val *t, u32 nstates, u32 *state)
{
	const struct dmg_lz_val *e = &t[*state];
	u32 v = lz_pull(b, e->bits);

	*state = (e->delta + (v >> e->vbits)) & (nstates - 1);
	return e->vbase + (v & ((1u << e->vbits) - 1));
}

/* the v2 frequencies: a prefix code read from the least significant bit up */
static int lz_v2_freq(struct dmg_lzfse *ws, const u8 *p, u32 len)
{
	u64 pos = 0, total = (u64)len * 8;
	unsigned int i;

	if (!len) {
		memset(ws->freq, 0, sizeof(ws->freq));
		return 0;
	}
	for (i = 0; i < LZ_NR_FREQ; i++) {
		u32 v = 0, n, val;
		unsigned int j;

		/* the next 14 bits (zeros past the end) */
		for (j = 0; j < 14 && pos + j < total; j++)
			v |= (u32)((p[(pos + j) / 8] >> ((pos + j) % 8)) & 1) << j;
		if (!(v & 1)) {
			n = 2;
			val = (v >> 1) & 1;
		} else if ((v & 3) == 1) {
			n = 3;
			val = 2 + ((v >> 2) & 1);
		} else if ((v & 7) == 3) {
			n = 5;
			val = 4 + ((v >> 3) & 3);
		} else if ((v & 15) == 7) {
			n = 8;
			val = 8 + ((v >> 4) & 15);
		} else {
			n = 14;
			val = 24 + ((v >> 4) & 0x3ff);
		}
		if (n > total - pos)
			return -EFSCORRUPTED;
		pos += n;
		ws->freq[i] = val;
	}
	return total - pos < 8 ? 0 : -EFSCORRUPTED;
}

struct dmg_lz_hdr {
	u32 raw, n_lit, n_match, lit_bytes, lmd_bytes, l_state, m_state, d_state;
	u32 lit_state[4];
	int lit_pad, lmd_pad;
};

/* ---- block decoders; @out is the position in @dst, which may hold earlier blocks ---- */

static int lz_match(u8 *dst, size_t dst_len, size_t *out, size_t d, size_t m)
{
	if (!m)
		return 0;
	if (!d || d > *out || m > dst_len - *out)
		return -EFSCORRUPTED;
	/* byte by byte: the source may overlap what this copy writes */
	for (; m; m--, (*out)++)
		dst[*out] = dst[*out - d];
	return 0;
}

static int lz_fse_block(struct dmg_lzfse *ws, const struct dmg_lz_hdr *h, const u8 *payload,
			u8 *dst, size_t dst_len, size_t *out)
{
	struct dmg_lz_bits b;
	u32 st[4], i, l_st, m_st, d_st, lit = 0;
	size_t d = 0, end;
	int ret;

	if (h->n_lit > LZ_MAX_LITERALS || h->n_match > LZ_MAX_MATCHES ||
	    h->l_state >= LZ_L_STATES || h->m_state >= LZ_M_STATES ||
	    h->d_state >= LZ_D_STATES || h->raw > dst_len - *out ||
	    lz_check_freq(ws->freq, LZ_L_SYMS, LZ_L_STATES) ||
	    lz_check_freq(ws->freq + LZ_L_SYMS, LZ_M_SYMS, LZ_M_STATES) ||
	    lz_check_freq(ws->freq + LZ_L_SYMS + LZ_M_SYMS, LZ_D_SYMS, LZ_D_STATES) ||
	    lz_check_freq(ws->freq + LZ_L_SYMS + LZ_M_SYMS + LZ_D_SYMS, LZ_LIT_SYMS,
			  LZ_LIT_STATES))
		return -EFSCORRUPTED;
	for (i = 0; i < 4; i++) {
		if (h->lit_state[i] >= LZ_LIT_STATES)
			return -EFSCORRUPTED;
		st[i] = h->lit_state[i];
	}
	end = *out + h->raw;
	lz_build_lit(ws->lit, ws->freq + LZ_L_SYMS + LZ_M_SYMS + LZ_D_SYMS);
	lz_build_val(ws->l, LZ_L_STATES, ws->freq, LZ_L_SYMS, ws->l_bits, ws->l_base);
	lz_build_val(ws->m, LZ_M_STATES, ws->freq + LZ_L_SYMS, LZ_M_SYMS, ws->m_bits,
		     ws->m_base);
	lz_build_val(ws->d, LZ_D_STATES, ws->freq + LZ_L_SYMS + LZ_M_SYMS, LZ_D_SYMS,
		     ws->d_bits, ws->d_base);

	/* the literals, four interleaved states */
	ret = lz_bits_init(&b, payload, h->lit_bytes, h->lit_pad);
	if (ret)
		return ret;
	for (i = 0; i < h->n_lit; i++) {
		const struct dmg_lz_lit *e = &ws->lit[st[i & 3]];

		st[i & 3] = (e->delta + lz_pull(&b, e->bits)) & (LZ_LIT_STATES - 1);
		ws->literals[i] = e->symbol;
	}
	if (b.over)
		return -EFSCORRUPTED;

	/* the L, M, D triples */
	ret = lz_bits_init(&b, payload + h->lit_bytes, h->lmd_bytes, h->lmd_pad);
	if (ret)
		return ret;
	l_st = h->l_state;
	m_st = h->m_state;
	d_st = h->d_state;
	for (i = 0; i < h->n_match; i++) {
		u32 l = lz_value(&b, ws->l, LZ_L_STATES, &l_st);
		u32 m = lz_value(&b, ws->m, LZ_M_STATES, &m_st);
		u32 nd = lz_value(&b, ws->d, LZ_D_STATES, &d_st);

		if (b.over || l > h->n_lit - lit || l > end - *out)
			return -EFSCORRUPTED;
		if (nd)
			d = nd;
		memcpy(dst + *out, ws->literals + lit, l);
		lit += l;
		*out += l;
		if (m > end - *out)
			return -EFSCORRUPTED;
		ret = lz_match(dst, end, out, d, m);
		if (ret)
			return ret;
	}
	return *out == end ? 0 : -EFSCORRUPTED;
}

static int lz_lzvn_block(const u8 *src, u32 len, u8 *dst, size_t end, size_t *out)
{
	size_t d = 0, in = 0;

	for (;;) {
		size_t l = 0, m = 0, op = 1;
		u8 c;

		if (in >= len)
			return -EFSCORRUPTED;
		c = src[in];
		if (c == 0x06) {			/* end of stream: 8 bytes */
			if (len - in < 8)
				return -EFSCORRUPTED;
			break;
		}
		if (c == 0x0e || c == 0x16)		/* nop */
			goto next;
		if ((c >= 0x70 && c < 0x80) || (c >= 0xd0 && c < 0xe0) ||
		    (c < 0x40 && (c & 7) == 6))
			return -EFSCORRUPTED;		/* undefined */
		if (c >= 0xe0) {
			if ((c & 0xf) == 0) {		/* large: the next byte + 16 */
				if (len - in < 2)
					return -EFSCORRUPTED;
				op = 2;
				if (c == 0xe0)
					l = src[in + 1] + 16;
				else
					m = src[in + 1] + 16;
			} else if (c < 0xf0) {
				l = c & 0xf;
			} else {
				m = c & 0xf;
			}
		} else if (c >= 0xa0 && c < 0xc0) {	/* medium distance */
			u32 w;

			if (len - in < 3)
				return -EFSCORRUPTED;
			op = 3;
			w = src[in + 1] | (u32)src[in + 2] << 8;
			l = (c >> 3) & 3;
			m = (((c & 7) << 2) | (w & 3)) + 3;
			d = w >> 2;
		} else {
			l = c >> 6;
			m = ((c >> 3) & 7) + 3;
			if ((c & 7) == 7) {		/* large distance */
				if (len - in < 3)
					return -EFSCORRUPTED;
				op = 3;
				d = src[in + 1] | (size_t)src[in + 2] << 8;
			} else if ((c & 7) != 6) {	/* small distance */
				if (len - in < 2)
					return -EFSCORRUPTED;
				op = 2;
				d = ((size_t)(c & 7) << 8) | src[in + 1];
			}				/* else the previous distance */
		}
		if (l > len - in - op || l > end - *out)
			return -EFSCORRUPTED;
		memcpy(dst + *out, src + in + op, l);
		*out += l;
		in += l;
		if (lz_match(dst, end, out, d, m))
			return -EFSCORRUPTED;
next:
		in += op;
	}
	return *out == end ? 0 : -EFSCORRUPTED;
}

int dmg_lzfse_decode(struct dmg_lzfse *ws, const u8 *src, size_t src_len, u8 *dst,
		     size_t dst_len)
{
	size_t in = 0, out = 0;
	int ret;

	for (;;) {
		struct dmg_lz_hdr h = {};
		u32 magic, hlen;

		if (src_len - in < 4)
			return -EFSCORRUPTED;
		magic = lz_le32(src + in);
		if (magic == LZ_MAGIC_END)
			break;
		if (src_len - in < 8)
			return -EFSCORRUPTED;
		h.raw = lz_le32(src + in + 4);
		if (h.raw > dst_len - out)
			return -EFSCORRUPTED;
		if (magic == LZ_MAGIC_RAW) {
			if (h.raw > src_len - in - 8)
				return -EFSCORRUPTED;
			memcpy(dst + out, src + in + 8, h.raw);
			out += h.raw;
			in += 8 + h.raw;
			continue;
		}
		if (magic == LZ_MAGIC_LZVN) {
			u32 plen;

			if (src_len - in < 12)
				return -EFSCORRUPTED;
			plen = lz_le32(src + in + 8);
			if (plen > src_len - in - 12)
				return -EFSCORRUPTED;
			ret = lz_lzvn_block(src + in + 12, plen, dst, out + h.raw, &out);
			if (ret)
				return ret;
			in += 12 + plen;
			continue;
		}
		if (magic == LZ_MAGIC_V2) {
			const u8 *p = src + in;
			u64 v0, v1, v2;

			if (src_len - in < LZ_V2_HEADER)
				return -EFSCORRUPTED;
			v0 = lz_le64(p + 8);
			v1 = lz_le64(p + 16);
			v2 = lz_le64(p + 24);
			hlen = lz_field(v2, 0, 32);
			if (hlen < LZ_V2_HEADER || hlen > src_len - in)
				return -EFSCORRUPTED;
			h.n_lit = lz_field(v0, 0, 20);
			h.lit_bytes = lz_field(v0, 20, 20);
			h.n_match = lz_field(v0, 40, 20);
			h.lit_pad = (int)lz_field(v0, 60, 3) - 7;
			h.lit_state[0] = lz_field(v1, 0, 10);
			h.lit_state[1] = lz_field(v1, 10, 10);
			h.lit_state[2] = lz_field(v1, 20, 10);
			h.lit_state[3] = lz_field(v1, 30, 10);
			h.lmd_bytes = lz_field(v1, 40, 20);
			h.lmd_pad = (int)lz_field(v1, 60, 3) - 7;
			h.l_state = lz_field(v2, 32, 10);
			h.m_state = lz_field(v2, 42, 10);
			h.d_state = lz_field(v2, 52, 10);
			ret = lz_v2_freq(ws, p + LZ_V2_HEADER, hlen - LZ_V2_HEADER);
			if (ret)
				return ret;
		} else if (magic == LZ_MAGIC_V1) {
			const u8 *p = src + in;
			unsigned int i;

			hlen = LZ_V1_HEADER;
			if (src_len - in < hlen)
				return -EFSCORRUPTED;
			h.n_lit = lz_le32(p + 12);
			h.n_match = lz_le32(p + 16);
			h.lit_bytes = lz_le32(p + 20);
			h.lmd_bytes = lz_le32(p + 24);
			h.lit_pad = (int)lz_le32(p + 28);
			for (i = 0; i < 4; i++)
				h.lit_state[i] = p[32 + 2 * i] | p[33 + 2 * i] << 8;
			h.lmd_pad = (int)lz_le32(p + 40);
			h.l_state = p[44] | p[45] << 8;
			h.m_state = p[46] | p[47] << 8;
			h.d_state = p[48] | p[49] << 8;
			for (i = 0; i < LZ_NR_FREQ; i++)
				ws->freq[i] = p[50 + 2 * i] | p[51 + 2 * i] << 8;
		} else {
			return -EFSCORRUPTED;
		}
		if (h.lit_bytes > src_len - in - hlen ||
		    h.lmd_bytes > src_len - in - hlen - h.lit_bytes)
			return -EFSCORRUPTED;
		ret = lz_fse_block(ws, &h, src + in + hlen, dst, dst_len, &out);
		if (ret)
			return ret;
		in += hlen + h.lit_bytes + h.lmd_bytes;
	}
	return out == dst_len ? 0 : -EFSCORRUPTED;
}
