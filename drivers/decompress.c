// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel side of the platform shim: vdimg_decompress() of include/vdimg/platform.h, which decodes
 * one compressed unit of an image (a qcow2 or qcow cluster, a VMDK grain, a DMG chunk) into a
 * buffer of known size with the kernel's zlib_inflate and zstd (CONFIG_ZLIB_INFLATE,
 * CONFIG_ZSTD_DECOMPRESS). Only the module builds this file; tools/lib/decompress.c is the
 * userspace twin (zlib, libzstd). The input is hostile: decoding stops at the end of @dst and never
 * writes past it.
 */
#include <vdimg/platform.h>
#include <linux/zlib.h>
#include <linux/zstd.h>

/*
 * Built into a kernel tree (Kconfig), BLK_DEV_VDIMG_ZLIB and BLK_DEV_VDIMG_ZSTD may leave a
 * decoder out; out of tree there is no CONFIG_BLK_DEV_VDIMG and both are built.
 */
#if !defined(CONFIG_BLK_DEV_VDIMG) && !defined(CONFIG_BLK_DEV_VDIMG_MODULE)
#define VDIMG_HAVE_ZLIB 1
#define VDIMG_HAVE_ZSTD 1
#else
#define VDIMG_HAVE_ZLIB IS_ENABLED(CONFIG_BLK_DEV_VDIMG_ZLIB)
#define VDIMG_HAVE_ZSTD IS_ENABLED(CONFIG_BLK_DEV_VDIMG_ZSTD)
#endif

#if VDIMG_HAVE_ZLIB
static int vdimg_inflate(int wbits, const void *src, size_t src_len, void *dst, size_t dst_len)
{
	struct z_stream_s s = {};
	int ret, zret;

	s.workspace = kvmalloc(zlib_inflate_workspacesize(), GFP_KERNEL);
	if (!s.workspace)
		return -ENOMEM;
	if (zlib_inflateInit2(&s, wbits) != Z_OK) {
		kvfree(s.workspace);
		return -EFSCORRUPTED;
	}
	s.next_in = src;
	s.avail_in = src_len;
	s.next_out = dst;
	s.avail_out = dst_len;
	zret = zlib_inflate(&s, Z_FINISH);
	ret = (zret == Z_STREAM_END || zret == Z_OK || zret == Z_BUF_ERROR) && !s.avail_out ?
	      0 : -EFSCORRUPTED;
	zlib_inflateEnd(&s);
	kvfree(s.workspace);
	return ret;
}

#else
static int vdimg_inflate(int wbits, const void *src, size_t src_len, void *dst, size_t dst_len)
{
	pr_warn_ratelimited("vdimg: deflate-compressed data needs CONFIG_BLK_DEV_VDIMG_ZLIB\n");
	return -EOPNOTSUPP;
}
#endif

#if VDIMG_HAVE_ZSTD
static int vdimg_unzstd(const void *src, size_t src_len, void *dst, size_t dst_len)
{
	size_t ws = zstd_dctx_workspace_bound(), done = 0, pos = 0;
	void *work = kvmalloc(ws, GFP_KERNEL);
	zstd_dctx *dctx;
	int ret = 0;

	if (!work)
		return -ENOMEM;
	dctx = zstd_init_dctx(work, ws);
	if (!dctx) {
		kvfree(work);
		return -ENOMEM;
	}
	while (done < dst_len) {
		size_t fsz = zstd_find_frame_compressed_size((const u8 *)src + pos, src_len - pos);
		size_t n;

		if (zstd_is_error(fsz) || !fsz) {
			ret = -EFSCORRUPTED;
			break;
		}
		n = zstd_decompress_dctx(dctx, (u8 *)dst + done, dst_len - done,
					 (const u8 *)src + pos, fsz);
		if (zstd_is_error(n) || (!n && !fsz)) {
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
	kvfree(work);
	return ret;
}
#else
static int vdimg_unzstd(const void *src, size_t src_len, void *dst, size_t dst_len)
{
	pr_warn_ratelimited("vdimg: zstd-compressed data needs CONFIG_BLK_DEV_VDIMG_ZSTD\n");
	return -EOPNOTSUPP;
}
#endif

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
