/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers the format tests (selftests/host/test_<fmt>.c) share, on top of ktap.h: scratch paths
 * that stay valid, opening a chain of image files with a given backend or the registry, comparing
 * what a chain reads with `qemu-img convert -O raw`, and opening one image directly with a backend
 * for create/check/describe. Header-only and static, like ktap.h; a test uses what it needs.
 */
#ifndef _VDIMG_FORMAT_TEST_H
#define _VDIMG_FORMAT_TEST_H

#include "../../tools/lib/chain.h"
#include "../../tools/lib/tool-ops.h"
#include "ktap.h"

#define FT_MAX_LAYERS 4

/* A persistent scratch path: the same @name gives the same buffer (tpath() rotates its own). */
static inline const char *tp(const char *name)
{
	static char bufs[128][512];
	static int n;
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(strrchr(bufs[i], '/') + 1, name))
			return bufs[i];
	if (n == 128)
		return tpath(name);
	snprintf(bufs[n], sizeof(bufs[n]), "%s", tpath(name));
	return bufs[n++];
}

/* Exits the test when @path cannot be opened: the fixture is broken, not the code under test. */
static inline int openf(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);

	if (fd < 0) {
		printf("Bail out! cannot open %s\n", path);
		exit(1);
	}
	return fd;
}

/*
 * Open @n image files (base first) as a chain, the top one writable unless @ro. Layer i uses the
 * backend @fmt where @mine[i] is true (every layer when @mine is NULL; none when @fmt is NULL),
 * the registry's probe otherwise (raw allowed). The chain owns nothing: close_chain() closes the
 * descriptors.
 */
static inline int open_chain_with(struct vdimg_chain **c, const char *const *paths, int n,
				  const struct vdimg_format *fmt, const bool *mine, bool ro,
				  unsigned int flags)
{
	const struct vdimg_format *ops[FT_MAX_LAYERS] = { 0 };
	int fds[FT_MAX_LAYERS], i, ret;

	if (n < 1 || n > FT_MAX_LAYERS)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		fds[i] = open(paths[i], (i == n - 1 && !ro ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (fds[i] < 0) {
			ret = -errno;
			while (i--)
				close(fds[i]);
			return ret;
		}
		ops[i] = !mine || mine[i] ? fmt : NULL;
	}
	ret = vdimg_chain_open_ops(c, fds, paths, n, ops,
				   flags | VDIMG_CHAIN_ALLOW_RAW | (ro ? VDIMG_CHAIN_READ_ONLY : 0));
	if (ret)
		for (i = 0; i < n; i++)
			close(fds[i]);
	return ret;
}

static inline void close_chain(struct vdimg_chain *c, int n)
{
	int fds[FT_MAX_LAYERS], i;

	for (i = 0; i < n && c; i++)
		fds[i] = c->layer[i].fd;
	vdimg_chain_close(c);
	for (i = 0; i < n && c; i++)
		close(fds[i]);
}

/*
 * Does the chain (opened as open_chain_with() does) read exactly like `qemu-img convert -O raw` of
 * the top image? Says where the first difference is when it does not.
 */
static inline bool chain_matches_qemu_with(const char *const *paths, int n,
					   const struct vdimg_format *fmt, const bool *mine,
					   const char *tag)
{
	struct vdimg_chain *c;
	u8 *want, *got = NULL;
	bool same = false;
	size_t len, i;
	int ret;

	if (sh("qemu-img convert -O raw '%s' '%s'", paths[n - 1], tp("ref.raw"))) {
		printf("# %s: qemu-img convert failed\n", tag);
		return false;
	}
	want = slurp(tp("ref.raw"), &len);
	ret = open_chain_with(&c, paths, n, fmt, mine, true, 0);
	if (ret || !want) {
		printf("# %s: open failed: %d\n", tag, ret);
		if (!ret)
			close_chain(c, n);
		free(want);
		return false;
	}
	got = malloc(len ? len : 1);
	if (got && c->size == len && !vdimg_chain_pread(c, got, len, 0)) {
		same = !memcmp(want, got, len);
		for (i = 0; !same && i < len && want[i] == got[i]; i++)
			;
		if (!same)
			printf("# %s: first difference at %zu: want %02x got %02x\n", tag, i, want[i],
			       got[i]);
	} else {
		printf("# %s: read failed (size %llu vs %zu)\n", tag, (unsigned long long)c->size, len);
	}
	close_chain(c, n);
	free(want);
	free(got);
	return same;
}

/* Open one image directly with backend @fmt (not through a chain), for create/check/describe. */
static inline int img_open_with(struct vdimg_image *img, const struct vdimg_format *fmt, int fd,
				const char *name, unsigned int flags)
{
	int ret;

	memset(img, 0, sizeof(*img));
	img->file = vdimg_file_from_fd(fd);
	img->name = name;
	img->fmt = fmt;
	ret = fmt->open(img, flags);
	if (ret) {
		vdimg_file_free(img->file);
		img->file = NULL;
	} else if (flags & VDIMG_OPEN_READ_ONLY) {
		img->flags |= VDIMG_IMG_READ_ONLY;
	}
	return ret;
}

static inline void img_close(struct vdimg_image *img)
{
	if (!img->file)
		return;
	img->fmt->close(img);
	vdimg_file_free(img->file);
	img->file = NULL;
}

/* xorshift64: the tests seed rnd_state to replay a workload */
static u64 rnd_state = 88172645463325252ULL;

static inline u64 rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* A random workload of writes, discards and write-zeroes on @c, mirrored in @shadow. */
static inline int workload(struct vdimg_chain *c, u8 *shadow, u64 size, int ops,
			   unsigned int seed, u64 maxsec)
{
	static u8 buf[1 << 20];
	int i, ret = 0;

	for (i = 0; i < ops && !ret; i++) {
		u64 r = rnd(), len = 512 * (1 + r % maxsec), off;
		int what = (r >> 20) % 10;

		len = min(len, size / 4);
		off = (rnd() % (size / 512 - len / 512)) * 512;
		if (what < 7) {
			fill_pat(buf, len, seed + i, off);
			ret = vdimg_chain_pwrite(c, buf, len, off);
			memcpy(shadow + off, buf, len);
		} else if (what < 9) {
			ret = vdimg_chain_discard(c, off, len, VDIMG_DISCARD_ZEROES);
			memset(shadow + off, 0, len);
		} else {
			ret = vdimg_chain_flush(c);
		}
	}
	return ret;
}

/* ---- whole files: the fixtures of the tests that patch and compare image files ---- */

static inline u64 fsize(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : st.st_size;
}

static inline u8 *read_all(const char *path, u64 *len)
{
	int fd = open(path, O_RDONLY);
	u64 n = fsize(path);
	u8 *p = malloc(n ? n : 1);

	if (fd < 0 || pread(fd, p, n, 0) != (ssize_t)n) {
		printf("Bail out! cannot read %s\n", path);
		exit(1);
	}
	close(fd);
	*len = n;
	return p;
}

static inline void put_file(const char *path, const void *p, u64 len)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || pwrite(fd, p, len, 0) != (ssize_t)len) {
		printf("Bail out! cannot write %s\n", path);
		exit(1);
	}
	close(fd);
}

static inline void copy_file(const char *from, const char *to)
{
	u64 n;
	u8 *p = read_all(from, &n);

	put_file(to, p, n);
	free(p);
}

static inline void patch(const char *path, u64 off, const void *p, size_t len)
{
	int fd = open(path, O_RDWR);

	if (fd < 0 || pwrite(fd, p, len, off) != (ssize_t)len) {
		printf("Bail out! cannot patch %s\n", path);
		exit(1);
	}
	close(fd);
}


static inline void patch32(const char *path, u64 off, u32 v)
{
	__le32 le = cpu_to_le32(v);

	patch(path, off, &le, 4);
}

static inline void patch64(const char *path, u64 off, u64 v)
{
	__le64 le = cpu_to_le64(v);

	patch(path, off, &le, 8);
}

/*
 * @path is consistent: `qemu-img check` clean; qemu has no check for VHD ("vpc"): our own check
 * finds no error and no leak, and libvhdi's vhdiinfo (when installed) reads it. (vhdiinfo
 * 20210425 reports the footer's original size, the size at creation that the specification keeps
 * for information and a resize leaves alone, as its media size: not compared.)
 */
static inline bool image_clean(const char *fmtname, const char *path, const struct vdimg_format *fmt)
{
	struct vdimg_check_result res = { 0 };
	struct vdimg_image img;
	int fd, ret;

	if (!strcmp(fmtname, "raw"))
		return true;	/* qemu-img check has nothing to say about raw images */
	if (strcmp(fmtname, "vpc"))
		return !sh("qemu-img check -q -f %s '%s'", fmtname, path);
	fd = openf(path, O_RDONLY);
	ret = img_open_with(&img, fmt, fd, path, VDIMG_OPEN_READ_ONLY);
	if (!ret) {
		ret = vdimg_tool_ops(img.fmt)->check(&img, 0, &res);
		img_close(&img);
	}
	close(fd);
	if (ret || res.errors || res.leaks) {
		printf("# check of %s: %d, %llu errors, %llu leaks\n", path, ret,
		       (unsigned long long)res.errors, (unsigned long long)res.leaks);
		return false;
	}
	return sh("command -v vhdiinfo >/dev/null") ||
	       !sh("vhdiinfo '%s' | grep -q 'Media size'", path);
}

/* ---- whole chains compared with a reference buffer ---- */

static inline int open1(struct vdimg_chain **c, const char *path, unsigned int flags)
{
	return vdimg_chain_open(c, &path, 1, NULL, flags);
}

/* the whole chain equals @ref? */
static inline bool chain_is(struct vdimg_chain *c, const u8 *ref, u64 size)
{
	u8 *b = malloc(size);
	bool same = c->size == size && !vdimg_chain_pread(c, b, size, 0) && !memcmp(b, ref, size);

	if (!same && c->size == size)
		for (u64 i = 0; i < size; i++)
			if (b[i] != ref[i]) {
				printf("# first difference at %llu: %#x, want %#x\n",
				       (unsigned long long)i, b[i], ref[i]);
				break;
			}
	free(b);
	return same;
}

static inline bool image_is(const char *path, const u8 *ref, u64 size)
{
	struct vdimg_chain *c;
	bool same;

	if (open1(&c, path, VDIMG_CHAIN_READ_ONLY))
		return false;
	same = chain_is(c, ref, size);
	vdimg_chain_close(c);
	return same;
}

/* the linear congruential generator of random_writes(); tests seed lcg_state to replay it */
static unsigned int lcg_state = 12345;

static inline u32 lcg(void)
{
	lcg_state = lcg_state * 1103515245 + 12345;
	return lcg_state >> 8;
}

/* random writes of mixed sizes (512 B .. 3 MiB, 512-aligned) through @c and into @ref */
static inline int random_writes(struct vdimg_chain *c, u8 *ref, u64 size, int n, unsigned int seed)
{
	u8 *buf = malloc(3 << 20);
	int i, ret = 0;

	for (i = 0; i < n && !ret; i++) {
		u64 len = (u64)(1 + lcg() % (i % 3 == 0 ? 6144 : 64)) * 512;
		u64 off;

		len = len > size ? size : len;
		off = (u64)(lcg() % ((size - len) / 512 + 1)) * 512;
		fill_pat(buf, len, seed + i, off);
		ret = vdimg_chain_pwrite(c, buf, len, off);
		memcpy(ref + off, buf, len);
	}
	free(buf);
	return ret;
}


#endif
