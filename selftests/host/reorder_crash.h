/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A crash model that reorders, for the host tests: the write-cut hook (vdimg_write_budget) models
 * a crash as a PREFIX of the writes, but a host file system persists the writes issued since the
 * last completed fdatasync() in any order (ext4 can write an in-place overwrite before the journal
 * commit that extends i_size). Here every write, punch, truncate and sync that the library issues
 * on one traced file is logged (this header interposes pwrite64(), fallocate64(), ftruncate64(),
 * fdatasync() and fsync() of the test program, so the library is unchanged); then, for a cut after
 * any logged operation, rc_build() writes the file a crash could have left: the template, every
 * operation before the last completed sync, and a chosen subset of the operations after it
 * (all, none, all but the last 1 or 2, and seeded random subsets), each applied whole.
 *
 * A test includes this header in ONE program only (it defines those libc symbols). Marks
 * (rc_mark()) let the test place its own progress (a write started, a flush acknowledged) in the
 * log, so it knows at each cut what must read back.
 */
#ifndef _VDIMG_REORDER_CRASH_H
#define _VDIMG_REORDER_CRASH_H

#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/falloc.h>
#include "format_test.h"

enum rc_kind { RC_WRITE, RC_PUNCH, RC_TRUNC, RC_SYNC, RC_MARK };

struct rc_op {
	enum rc_kind kind;
	unsigned long long off, len;	/* RC_TRUNC: len is the size; RC_MARK: off is the tag */
	unsigned char *data;		/* RC_WRITE */
};

static struct rc_op *rc_ops;
static size_t rc_nops, rc_cap;
static dev_t rc_dev;
static ino_t rc_ino;
static bool rc_on;

static void rc_log(enum rc_kind kind, unsigned long long off, unsigned long long len,
		   const void *data)
{
	struct rc_op *op;

	if (rc_nops == rc_cap) {
		rc_cap = rc_cap ? rc_cap * 2 : 256;
		rc_ops = realloc(rc_ops, rc_cap * sizeof(*rc_ops));
		if (!rc_ops)
			abort();
	}
	op = &rc_ops[rc_nops++];
	op->kind = kind;
	op->off = off;
	op->len = len;
	op->data = NULL;
	if (data) {
		op->data = malloc(len ? len : 1);
		if (!op->data)
			abort();
		memcpy(op->data, data, len);
	}
}

static bool rc_traced(int fd)
{
	struct stat st;

	return rc_on && !fstat(fd, &st) && st.st_dev == rc_dev && st.st_ino == rc_ino;
}

/* Start logging the operations on the file at @path (any descriptor of it); clears the log. */
static __attribute__((unused)) void rc_trace(const char *path)
{
	struct stat st;
	size_t i;

	for (i = 0; i < rc_nops; i++)
		free(rc_ops[i].data);
	rc_nops = 0;
	if (stat(path, &st)) {
		printf("Bail out! cannot stat %s\n", path);
		exit(1);
	}
	rc_dev = st.st_dev;
	rc_ino = st.st_ino;
	rc_on = true;
}

static __attribute__((unused)) void rc_stop(void)
{
	rc_on = false;
}

static __attribute__((unused)) void rc_mark(unsigned long long tag)
{
	if (rc_on)
		rc_log(RC_MARK, tag, 0, NULL);
}

/* the interposed calls: the library's calls resolve to these at link time */
ssize_t rc_pwrite64(int fd, const void *buf, size_t n, off_t off) __asm__("pwrite64");
ssize_t rc_pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	ssize_t ret = syscall(SYS_pwrite64, fd, buf, n, off);

	if (ret > 0 && rc_traced(fd))
		rc_log(RC_WRITE, off, ret, buf);
	return ret;
}

int rc_fallocate64(int fd, int mode, off_t off, off_t len) __asm__("fallocate64");
int rc_fallocate64(int fd, int mode, off_t off, off_t len)
{
	int ret = syscall(SYS_fallocate, fd, mode, off, len);

	/* punch and zero-range keep the size: both read zeros afterwards */
	if (!ret && rc_traced(fd) && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
		rc_log(RC_PUNCH, off, len, NULL);
	else if (!ret && rc_traced(fd) && !(mode & FALLOC_FL_KEEP_SIZE))
		rc_log(RC_TRUNC, 0, -1ULL, NULL);	/* unsupported by the model: flagged */
	return ret;
}

int rc_ftruncate64(int fd, off_t len) __asm__("ftruncate64");
int rc_ftruncate64(int fd, off_t len)
{
	int ret = syscall(SYS_ftruncate, fd, len);

	if (!ret && rc_traced(fd))
		rc_log(RC_TRUNC, 0, len, NULL);
	return ret;
}

int rc_fdatasync(int fd) __asm__("fdatasync");
int rc_fdatasync(int fd)
{
	int ret = syscall(SYS_fdatasync, fd);

	if (!ret && rc_traced(fd))
		rc_log(RC_SYNC, 0, 0, NULL);
	return ret;
}

int rc_fsync(int fd) __asm__("fsync");
int rc_fsync(int fd)
{
	int ret = syscall(SYS_fsync, fd);

	if (!ret && rc_traced(fd))
		rc_log(RC_SYNC, 0, 0, NULL);
	return ret;
}

/* the index of the last RC_SYNC in ops [0, @k), or -1 */
static __attribute__((unused)) long rc_last_sync(size_t k)
{
	while (k--)
		if (rc_ops[k].kind == RC_SYNC)
			return k;
	return -1;
}

static int rc_apply(int fd, const struct rc_op *op)
{
	switch (op->kind) {
	case RC_WRITE:
		return syscall(SYS_pwrite64, fd, op->data, op->len, op->off) == (ssize_t)op->len ?
		       0 : -1;
	case RC_PUNCH:
		return syscall(SYS_fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       op->off, op->len) ? -1 : 0;
	case RC_TRUNC:
		if (op->len == -1ULL)
			return -1;
		return syscall(SYS_ftruncate, fd, op->len) ? -1 : 0;
	default:
		return 0;
	}
}

/* the number of subset variants rc_build() knows for a cut */
#define RC_VARIANTS	8

/*
 * Write to @out the file a crash after op @k - 1 (the first @k ops done) could leave: @tmpl, the
 * ops before the last sync among them, and variant @var of the ops after it: 0 all, 1 none, 2 all
 * but the last, 3 all but the last two, 4.. a random subset seeded by @seed, @k and @var.
 * Returns the number of unsynced ops applied, or -1 on an error of the fixture.
 */
static __attribute__((unused)) int rc_build(const char *tmpl, const char *out, size_t k,
					    unsigned int var, unsigned int seed)
{
	long ls = rc_last_sync(k);
	unsigned int rnd = seed * 2654435761U ^ (unsigned int)k * 40503U ^ var * 97U;
	size_t i, n = 0, unsynced = 0;
	int fd, applied = 0;

	if (sh("cp --sparse=always '%s' '%s'", tmpl, out))
		return -1;
	fd = open(out, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	for (i = ls + 1; i < k; i++)
		unsynced += rc_ops[i].kind != RC_MARK && rc_ops[i].kind != RC_SYNC;
	for (i = 0; i < k; i++) {
		bool take = true;

		if ((long)i > ls && rc_ops[i].kind != RC_MARK && rc_ops[i].kind != RC_SYNC) {
			n++;
			switch (var) {
			case 0:
				break;
			case 1:
				take = false;
				break;
			case 2:
			case 3:
				take = n + (var - 1) <= unsynced;
				break;
			default:
				rnd = rnd * 1103515245U + 12345U;
				take = (rnd >> 16) & 1;
			}
			applied += take;
		}
		if (take && rc_apply(fd, &rc_ops[i])) {
			close(fd);
			return -1;
		}
	}
	close(fd);
	return applied;
}

#endif /* _VDIMG_REORDER_CRASH_H */
