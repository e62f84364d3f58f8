// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace side of the platform shim: vdimg_decompress() of include/vdimg/platform.h, which
 * decodes one compressed unit of an image (a qcow2 or qcow cluster, a VMDK grain, a DMG chunk) into
 * a buffer of known size with zlib and libzstd. Only the library (and the fuzz and host tests)
 * build this file; drivers/decompress.c is the kernel twin. The input is hostile: decoding stops at
 * the end of @dst and never writes past it.
 */
#include <vdimg/platform.h>
#include <zlib.h>
#include <zstd.h>

static int vdimg_inflate(int wbits, const void *src, size_t src_len, void *dst, size_t dst_len)
{
	z_stream s;
	int ret, zret;

	memset(&s, 0, sizeof(s));
	if (inflateInit2(&s, wbits) != Z_OK)
		return -ENOMEM;
	s.next_in = (Bytef *)src;
	s.avail_in = src_len;
	s.next_out = dst;
	s.avail_out = dst_len;
	zret = inflate(&s, Z_FINISH);
	ret = (zret == Z_STREAM_END || zret == Z_OK || zret == Z_BUF_ERROR) && !s.avail_out ?
	      0 : -EFSCORRUPTED;
	inflateEnd(&s);
	return ret;
}

static int vdimg_unzstd(const void *src, size_t src_len, void *dst, size_t dst_len)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	size_t done = 0, pos = 0;
	int ret = 0;

	if (!dctx)
		return -ENOMEM;
	while (done < dst_len) {
		size_t fsz = ZSTD_findFrameCompressedSize((const u8 *)src + pos, src_len - pos);
		size_t n;

		if (ZSTD_isError(fsz) || !fsz) {
			ret = -EFSCORRUPTED;
			break;
		}
		n = ZSTD_decompressDCtx(dctx, (u8 *)dst + done, dst_len - done,
					(const u8 *)src + pos, fsz);
		if (ZSTD_isError(n)) {
			ret = -EFSCORRUPTED;
			break;
		}
		done += n;
		pos += fsz;
		if (pos >= src_len && done < dst_len) {
			ret = -EFSCORRUPTED;
			break;
		}
	}
	ZSTD_freeDCtx(dctx);
	return ret;
}

int vdimg_decompress(unsigned int algo, const void *src, size_t src_len, void *dst, size_t dst_len)
{
	if (!src_len)
		return -EFSCORRUPTED;
	switch (algo) {
	case VDIMG_DECOMP_DEFLATE:
		return vdimg_inflate(-15, src, src_len, dst, dst_len);
	case VDIMG_DECOMP_ZLIB:
		return vdimg_inflate(15, src, src_len, dst, dst_len);
	case VDIMG_DECOMP_ZSTD:
		return vdimg_unzstd(src, src_len, dst, dst_len);
	}
	return -EOPNOTSUPP;
}
