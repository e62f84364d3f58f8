/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Tiny helpers shared by the host tests (selftests/host/test_*.c): KTAP output, scratch files in a
 * private temporary directory, and capture of libvdimg's messages so tests can assert on them.
 * Header-only so that every test is one .c file linked against build/libvdimg-asan.a.
 *
 * Usage: ktap_start(); ok(cond, "name %d", i); ...; return ktap_finish();
 * Exit status: 0 all passed, 1 something failed, 4 everything skipped (kselftest convention).
 */
#ifndef _VDIMG_KTAP_H
#define _VDIMG_KTAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "vdimg-user.h"

static int ktap_n, ktap_failed, ktap_skipped;
static char ktap_dir[256];
static char ktap_last_msg[1024];	/* the last libvdimg message, "name: text" */
static int ktap_verbose;

static void ktap_msg_hook(int level, const char *name, const char *text)
{
	snprintf(ktap_last_msg, sizeof(ktap_last_msg), "%s%s%s", name ? name : "",
		 name ? ": " : "", text);
	if (ktap_verbose)
		printf("# libvdimg: %s\n", ktap_last_msg);
}

static int ktap_rm_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static void ktap_cleanup(void)
{
	if (ktap_dir[0] && !getenv("VDIMG_KEEP_TMP"))
		nftw(ktap_dir, ktap_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void ktap_start(void)
{
	const char *tmp = getenv("TMPDIR");

	setvbuf(stdout, NULL, _IOLBF, 0);
	ktap_verbose = getenv("VDIMG_VERBOSE") != NULL;
	snprintf(ktap_dir, sizeof(ktap_dir), "%s/vdimg-test.XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(ktap_dir)) {
		printf("Bail out! cannot create a temporary directory\n");
		exit(1);
	}
	atexit(ktap_cleanup);
	vdimg_set_msg_hook(ktap_msg_hook);
	vdimg_msg_level = VDIMG_LOG_INFO;
	printf("KTAP version 1\n");
}

__attribute__((format(printf, 2, 3)))
static __attribute__((unused)) bool ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	ktap_n++;
	printf("%sok %d - ", cond ? "" : "not ", ktap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond) {
		ktap_failed++;
		if (ktap_last_msg[0])
			printf("# last library message: %s\n", ktap_last_msg);
	}
	return cond;
}

__attribute__((format(printf, 1, 2)))
static __attribute__((unused)) void skip(const char *fmt, ...)
{
	va_list ap;

	ktap_n++;
	ktap_skipped++;
	printf("ok %d - ", ktap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" # SKIP\n");
}

/* Compare an errno result and say what came back when it differs. */
#define ok_err(got, want, ...) ({					\
	int _g = (got), _w = (want);					\
	bool _r = ok(_g == _w, __VA_ARGS__);				\
	if (!_r)							\
		printf("# got %d (%s), want %d (%s)\n", _g, strerror(-_g), _w, strerror(-_w)); \
	_r; })

static int ktap_finish(void)
{
	printf("1..%d\n", ktap_n);
	printf("# %d passed, %d failed, %d skipped\n", ktap_n - ktap_failed - ktap_skipped,
	       ktap_failed, ktap_skipped);
	if (ktap_failed)
		return 1;
	return ktap_n && ktap_skipped == ktap_n ? 4 : 0;
}

/* A scratch path in the test's private directory. Returns a static buffer (rotating, 8 deep). */
static __attribute__((unused)) const char *tpath(const char *name)
{
	static char bufs[8][512];
	static int i;
	char *b = bufs[i++ % 8];

	snprintf(b, sizeof(bufs[0]), "%s/%s", ktap_dir, name);
	return b;
}

/* Create @name with @len bytes of @data (NULL: a sparse file of @len bytes). Returns an O_RDWR fd. */
static __attribute__((unused)) int tfile(const char *name, const void *data, size_t len)
{
	int fd = open(tpath(name), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0) {
		printf("Bail out! cannot create %s\n", tpath(name));
		exit(1);
	}
	if ((data && pwrite(fd, data, len, 0) != (ssize_t)len) || (!data && ftruncate(fd, len))) {
		printf("Bail out! cannot write %s\n", tpath(name));
		exit(1);
	}
	return fd;
}

/* Deterministic pattern: byte at offset @off of the stream @seed. */
/* Run a shell command built printf-style; its exit status, or -1 if it did not exit normally. */
static __attribute__((unused, format(printf, 1, 2))) int sh(const char *fmt, ...);
static __attribute__((unused)) int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (ktap_verbose)
		printf("# $ %s\n", cmd);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* The whole file in a malloc'd buffer (one spare byte), its length in *len; NULL on error. */
static __attribute__((unused)) u8 *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	u8 *p;

	if (fd < 0 || fstat(fd, &st))
		return NULL;
	p = malloc(st.st_size + 1);
	if (p && pread(fd, p, st.st_size, 0) != st.st_size) {
		free(p);
		p = NULL;
	}
	close(fd);
	*len = st.st_size;
	return p;
}

static inline unsigned char pat(unsigned int seed, unsigned long long off)
{
	unsigned long long x = (off >> 3) * 0x9e3779b97f4a7c15ULL + seed * 0x632be59bd9b4e019ULL;

	x ^= x >> 29;
	return (unsigned char)(x >> (8 * (off & 7)));
}

static inline void fill_pat(void *buf, size_t len, unsigned int seed, unsigned long long off)
{
	unsigned char *p = buf;
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = pat(seed, off + i);
}

static inline bool is_pat(const void *buf, size_t len, unsigned int seed, unsigned long long off)
{
	const unsigned char *p = buf;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != pat(seed, off + i))
			return false;
	return true;
}

static inline bool is_byte(const void *buf, size_t len, unsigned char b)
{
	const unsigned char *p = buf;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != b)
			return false;
	return true;
}

#endif /* _VDIMG_KTAP_H */
