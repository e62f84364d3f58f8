// SPDX-License-Identifier: GPL-2.0
/*
 * Apple Data Compression (the UDCO chunks of DMG images): a byte-oriented LZ77 code. A byte with
 * the top bit set starts a literal run of (b & 0x7f) + 1 bytes; 01xxxxxx starts a three-byte copy
 * of (b & 0x3f) + 4 bytes from a 16-bit distance; 00xxxxyy a two-byte copy of ((b >> 2) & 0xf) + 3
 * bytes from a 10-bit distance (yy and the next byte); distances count back from the byte before
 * the output position. The input is hostile: every read and copy is bounded by both buffers, and
 * the time is linear in the output. Kernel-shared (dmg map.c decodes with it).
 */
#include "dmg.h"

int dmg_adc_decode(const u8 *src, size_t src_len, u8 *dst, size_t dst_len)
{
	size_t in = 0, out = 0;

	while (out < dst_len) {
		size_t len, dist;
		u8 b;

		if (in >= src_len)
			return -EFSCORRUPTED;	/* ends early */
		b = src[in++];
		if (b & 0x80) {
			len = (b & 0x7f) + 1;
			if (len > src_len - in || len > dst_len - out)
				return -EFSCORRUPTED;
			memcpy(dst + out, src + in, len);
			in += len;
			out += len;
			continue;
		}
		if (b & 0x40) {
			if (src_len - in < 2)
				return -EFSCORRUPTED;
			len = (b & 0x3f) + 4;
			dist = ((size_t)src[in] << 8) | src[in + 1];
			in += 2;
		} else {
			if (src_len - in < 1)
				return -EFSCORRUPTED;
			len = ((b >> 2) & 0xf) + 3;
			dist = ((size_t)(b & 3) << 8) | src[in];
			in += 1;
		}
		if (dist + 1 > out || len > dst_len - out)
			return -EFSCORRUPTED;
		/* byte by byte: the source may overlap what this copy writes */
		for (; len; len--, out++)
			dst[out] = dst[out - dist - 1];
	}
	return 0;
}
