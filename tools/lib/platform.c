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
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <linux/falloc.h>
#include <zlib.h>
#include <vdimg/backend.h>
#include "vdimg-user.h"

long long vdimg_write_budget = -1;	/* writes left before the cut, -1 for no cut */
struct vdimg_wlog vdimg_wlog;		/* the write log of reordering crash tests */
bool vdimg_fixed_size_test;		/* tests: every file is fixed-size, like a device */

/* Record one change (or a sync, a test's mark) of an image file when the test asked for it. */
static void vdimg_wlog_add(int kind, int fd, const void *buf, u64 len, u64 off)
{
	struct vdimg_wlog *l = &vdimg_wlog;
	struct vdimg_wlog_rec *r;

	if (!l->on)
		return;
	if (l->nr == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		struct vdimg_wlog_rec *n = realloc(l->rec, cap * sizeof(*n));

		if (!n)
			abort();
		l->rec = n;
		l->cap = cap;
	}
	r = &l->rec[l->nr];
	r->kind = kind;
	r->fd = fd;
	r->off = off;
	r->len = len;
	r->data = NULL;
	if (buf) {
		r->data = malloc(len ? len : 1);
		if (!r->data)
			abort();
		memcpy(r->data, buf, len);
	}
	l->nr++;
}

void vdimg_wlog_mark(int kind, u64 value)
{
	vdimg_wlog_add(kind, -1, NULL, 0, value);
}

void vdimg_wlog_reset(void)
{
	struct vdimg_wlog *l = &vdimg_wlog;

	while (l->nr)
		free(l->rec[--l->nr].data);
	free(l->rec);
	l->rec = NULL;
	l->cap = 0;
	l->on = false;
}

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


/*
 * The paths a parent locator records for a new parent at @path (absolute, or relative to the
 * directory of @img's file): *@abs canonical and absolute, *@rel relative to that directory with
 * @sep between components (vdimg_relpath()). Both malloc'd; 0 or a negative errno, said on @img.
 */
int vdimg_parent_paths(struct vdimg_image *img, const char *path, char sep, char **abs, char **rel)
{
	char *dir = vdimg_file_dir(img->file);
	int ret = 0;

	*abs = *rel = NULL;
	if (!dir) {
		vdimg_err(img, "cannot tell which directory the image is in");
		return -EINVAL;
	}
	*abs = vdimg_path_in_dir(dir, path);
	if (!*abs) {
		ret = errno ? -errno : -ENOMEM;
		vdimg_err(img, "the new parent %s: %s", path, strerror(-ret));
	} else {
		*rel = vdimg_relpath(*abs, dir, sep);
		if (!*rel) {
			free(*abs);
			*abs = NULL;
			ret = -ENOMEM;
		}
	}
	free(dir);
	return ret;
}

/*
 * UTF-16 (@be: big-endian, else little-endian) of at most @bytes bytes to UTF-8 (malloc'd; NULL on
 * ENOMEM). With @nul_ends a NUL unit ends the string (VHD's NUL-padded parent name); without it a
 * NUL in a counted string (a VHDX locator entry) becomes '?', so that it cannot cut a path short.
 * An unpaired surrogate becomes '?'. Every unit gives at most 3 bytes (a pair gives 4 from 2 units).
 */
char *vdimg_utf16_to_utf8(const u8 *p, size_t bytes, bool be, bool nul_ends)
{
	char *out = malloc(bytes / 2 * 3 + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 1 < bytes; i += 2) {
		u32 c = be ? (u32)p[i] << 8 | p[i + 1] : (u32)p[i + 1] << 8 | p[i];

		if (!c && nul_ends)
			break;
		if (c >= 0xd800 && c < 0xdc00 && i + 3 < bytes) {
			u32 lo = be ? (u32)p[i + 2] << 8 | p[i + 3] : (u32)p[i + 3] << 8 | p[i + 2];

			if (lo >= 0xdc00 && lo < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				i += 2;
			}
		}
		if (!c || (c >= 0xd800 && c < 0xe000))
			c = '?';
		if (c < 0x80) {
			*o++ = c;
		} else if (c < 0x800) {
			*o++ = 0xc0 | c >> 6;
			*o++ = 0x80 | (c & 0x3f);
		} else if (c < 0x10000) {
			*o++ = 0xe0 | c >> 12;
			*o++ = 0x80 | ((c >> 6) & 0x3f);
			*o++ = 0x80 | (c & 0x3f);
		} else {
			*o++ = 0xf0 | c >> 18;
			*o++ = 0x80 | ((c >> 12) & 0x3f);
			*o++ = 0x80 | ((c >> 6) & 0x3f);
			*o++ = 0x80 | (c & 0x3f);
		}
	}
	*o = 0;
	return out;
}

/* one UTF-8 sequence at *@s as a code point, advancing *@s; malformed input gives '?' */
static u32 utf8_next(const u8 **s)
{
	static const u32 min[] = { 0, 0x80, 0x800, 0x10000 };
	const u8 *p = *s;
	u32 c = *p++;
	int n, k;

	if (c < 0x80)
		n = 0;
	else if (c >= 0xc0 && c < 0xe0)
		n = 1, c &= 0x1f;
	else if (c >= 0xe0 && c < 0xf0)
		n = 2, c &= 0x0f;
	else if (c >= 0xf0 && c < 0xf8)
		n = 3, c &= 0x07;
	else
		n = -1;
	for (k = 0; k < n; k++) {
		if ((p[k] & 0xc0) != 0x80)
			break;
		c = c << 6 | (p[k] & 0x3f);
	}
	if (n < 0 || k < n || c < min[n] || c > 0x10ffff || (c >= 0xd800 && c < 0xe000)) {
		/* skip the lead byte and the continuation bytes that were there */
		*s = p + (n < 0 ? 0 : k);
		return '?';
	}
	*s = p + n;
	return c;
}

/*
 * UTF-8 @s to UTF-16 (@be: big-endian, else little-endian) into @out, at most @max bytes and only
 * whole characters (a surrogate pair is never split); malformed UTF-8 becomes '?'. Returns the
 * bytes written.
 */
size_t vdimg_utf8_to_utf16(const char *s, u8 *out, size_t max, bool be)
{
	const u8 *p = (const u8 *)s;
	size_t n = 0;

	while (*p) {
		u32 c = utf8_next(&p), units[2] = { c }, nu = 1, k;

		if (c >= 0x10000) {
			units[0] = 0xd800 + ((c - 0x10000) >> 10);
			units[1] = 0xdc00 + ((c - 0x10000) & 0x3ff);
			nu = 2;
		}
		if (n + nu * 2 > max)
			break;
		for (k = 0; k < nu; k++, n += 2) {
			out[n] = be ? units[k] >> 8 : units[k] & 0xff;
			out[n + 1] = be ? units[k] & 0xff : units[k] >> 8;
		}
	}
	return n;
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
	vdimg_wlog_add(VDIMG_WLOG_WRITE, f->fd, buf, len, off);
	return 0;
}

int vdimg_file_sync(struct vdimg_file *f)
{
	if (vdimg_write_budget == 0)
		return -EIO;
	if (f->no_sync)
		return 0;
	if (fdatasync(f->fd))
		return -errno;
	vdimg_wlog_add(VDIMG_WLOG_SYNC, f->fd, NULL, 0, 0);
	return 0;
}

bool vdimg_file_fixed_size(struct vdimg_file *f)
{
	struct stat st;

	if (vdimg_fixed_size_test)
		return true;
	return !fstat(f->fd, &st) && S_ISBLK(st.st_mode);
}

u64 vdimg_file_size(struct vdimg_file *f)
{
	struct stat st;
	u64 bytes;

	if (fstat(f->fd, &st))
		return 0;
	if (S_ISBLK(st.st_mode))
		return ioctl(f->fd, BLKGETSIZE64, &bytes) ? 0 : bytes;
	return st.st_size;
}

int vdimg_file_truncate(struct vdimg_file *f, u64 size)
{
	if (!vdimg_write_allowed())
		return -EIO;
	if (ftruncate(f->fd, size))
		return -errno;
	vdimg_wlog_add(VDIMG_WLOG_TRUNCATE, f->fd, NULL, 0, size);
	return 0;
}

int vdimg_file_punch(struct vdimg_file *f, u64 off, u64 len)
{
	if (!vdimg_write_allowed())
		return -EIO;
	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len))
		return -errno;
	vdimg_wlog_add(VDIMG_WLOG_ZERO, f->fd, NULL, len, off);
	return 0;
}

int vdimg_file_zero_range(struct vdimg_file *f, u64 off, u64 len)
{
	static const char zeros[65536];
	int ret;

	if (!vdimg_write_allowed())
		return -EIO;
	if (!fallocate(f->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len)) {
		vdimg_wlog_add(VDIMG_WLOG_ZERO, f->fd, NULL, len, off);
		return 0;
	}
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
