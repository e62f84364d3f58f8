// SPDX-License-Identifier: GPL-2.0
/*
 * The userspace side of include/vdimg/platform.h: image file I/O on a file descriptor, CRC-32C,
 * messages, and a write-cut hook for crash-safety tests (every write after the first N fails with
 * -EIO, as if the machine had stopped). Linked into libvdimg; nothing kernel-specific here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <libgen.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <linux/falloc.h>
#include <zlib.h>
#include <vdimg/backend.h>
#include "vdimg-user.h"

long long vdimg_write_budget = -1;	/* writes left before the cut, -1 for no cut */

static void vdimg_default_msg(int level, const char *name, const char *text)
{
	fprintf(stderr, "%s%s%s\n", name ? name : "", name ? ": " : "", text);
}

static vdimg_msg_fn vdimg_msg_hook = vdimg_default_msg;
int vdimg_msg_level = VDIMG_LOG_WARN;	/* print messages at this level or more severe */

void vdimg_set_msg_hook(vdimg_msg_fn fn)
{
	vdimg_msg_hook = fn ? fn : vdimg_default_msg;
}

void vdimg_msg(const struct vdimg_image *img, int level, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	if (level > vdimg_msg_level)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	vdimg_msg_hook(level, img ? img->name : NULL, text);
}

void vdimg_strscpy(char *d, const char *s, size_t n)
{
	if (n)
		snprintf(d, n, "%s", s);
}

static u32 crc32c_table[256];

static void crc32c_init(void)
{
	u32 i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c >> 1) ^ (c & 1 ? 0x82f63b78 : 0);
		crc32c_table[i] = c;
	}
}

/* Same convention as the kernel's crc32c(): no pre- or post-inversion inside. */
u32 vdimg_crc32c(u32 crc, const void *p, size_t n)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const u8 *b = p;

	pthread_once(&once, crc32c_init);
	while (n--)
		crc = crc32c_table[(crc ^ *b++) & 0xff] ^ (crc >> 8);
	return crc;
}

struct vdimg_file *vdimg_file_from_fd(int fd)
{
	struct vdimg_file *f = calloc(1, sizeof(*f));

	if (f)
		f->fd = fd;
	return f;
}

void vdimg_file_free(struct vdimg_file *f)
{
	free(f);
}

char *vdimg_file_dir(const struct vdimg_file *f)
{
	char link[64], buf[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", f->fd);
	n = readlink(link, buf, sizeof(buf) - 1);
	if (n <= 0 || buf[0] != '/') {
		errno = n < 0 ? errno : ENOENT;
		return NULL;
	}
	buf[n] = 0;
	return strdup(dirname(buf));
}

char *vdimg_path_in_dir(const char *dir, const char *path)
{
	char *joined, *out;

	if (path[0] == '/')
		return realpath(path, NULL);
	if (asprintf(&joined, "%s/%s", dir, path) < 0) {
		errno = ENOMEM;
		return NULL;
	}
	out = realpath(joined, NULL);
	free(joined);
	return out;
}

/*
 * @path relative to directory @dir (both absolute and normalized, as realpath() gives them), with
 * @sep between components ('/', or '\\' for the Windows paths VHDX locators keep).
 */
char *vdimg_relpath(const char *path, const char *dir, char sep)
{
	size_t dl = strlen(dir), common = 0, i, up = 0;
	const char *rest;
	char *out, *o;

	if (dl == 1 || (!strncmp(path, dir, dl) && path[dl] == '/')) {
		rest = path + (dl == 1 ? 1 : dl + 1);	/* inside @dir */
	} else {
		for (i = 0; path[i] && dir[i] && path[i] == dir[i]; i++)
			if (path[i] == '/')
				common = i + 1;
		rest = path + common;
		for (i = common; dir[i]; i++)
			if (dir[i] != '/' && (i == common || dir[i - 1] == '/'))
				up++;
	}
	out = malloc(3 * up + strlen(rest) + 3);
	if (!out)
		return NULL;
	o = out;
	if (!up) {
		*o++ = '.';
		*o++ = sep;
	}
	while (up--) {
		*o++ = '.';
		*o++ = '.';
		*o++ = sep;
	}
	for (; *rest; rest++)
		*o++ = *rest == '/' ? sep : *rest;
	*o = 0;
	return out;
}


int vdimg_file_read(struct vdimg_file *f, void *buf, size_t len, u64 off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(f->fd, (char *)buf + done, len - done, off + done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EFSCORRUPTED;
		done += n;
	}
	return 0;
}

static bool vdimg_write_allowed(void)
{
	if (vdimg_write_budget < 0)
		return true;
	if (vdimg_write_budget == 0)
		return false;
	vdimg_write_budget--;
	return true;
}

int vdimg_file_write(struct vdimg_file *f, const void *buf, size_t len, u64 off)
{
	size_t done = 0;

	if (!vdimg_write_allowed())
		return -EIO;
	while (done < len) {
		ssize_t n = pwrite(f->fd, (const char *)buf + done, len - done, off + done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += n;
	}
	return 0;
}

int vdimg_file_sync(struct vdimg_file *f)
{
	if (vdimg_write_budget == 0)
		return -EIO;
	return fdatasync(f->fd) ? -errno : 0;
}

u64 vdimg_file_size(struct vdimg_file *f)
{
	struct stat st;

	if (fstat(f->fd, &st))
		return 0;
	return st.st_size;
}

int vdimg_file_truncate(struct vdimg_file *f, u64 size)
{
	if (!vdimg_write_allowed())
		return -EIO;
	return ftruncate(f->fd, size) ? -errno : 0;
}

int vdimg_file_punch(struct vdimg_file *f, u64 off, u64 len)
{
	if (!vdimg_write_allowed())
		return -EIO;
	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len))
		return -errno;
	return 0;
}

int vdimg_file_zero_range(struct vdimg_file *f, u64 off, u64 len)
{
	static const char zeros[65536];
	int ret;

	if (!vdimg_write_allowed())
		return -EIO;
	if (!fallocate(f->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len))
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	while (len) {
		size_t n = min_t(u64, len, sizeof(zeros));

		ret = vdimg_file_write(f, zeros, n, off);
		if (ret)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

int vdimg_file_zero(struct vdimg_file *f, u64 off, u64 len)
{
	int ret = vdimg_file_punch(f, off, len);

	if (ret != -EOPNOTSUPP)
		return ret;
	return vdimg_file_zero_range(f, off, len);
}

u32 vdimg_crc32(u32 crc, const void *p, size_t n)
{
	return (u32)crc32(crc, p, n);
}
