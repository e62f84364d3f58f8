// SPDX-License-Identifier: GPL-2.0
/*
 * replay-log: read the log a dm-log-writes target wrote (the kernel's
 * Documentation/admin-guide/device-mapper/log-writes.rst) and replay it onto a target device or
 * file, entry by entry, stopping at a named mark, at the next FLUSH/FUA entry or at an entry
 * number. A state file keeps the position, so a test walks the log once and checks the target at
 * every stop instead of replaying from the start for each point. Used by the VM test
 * 340-log-writes; the log is treated as hostile input (every field is bounds-checked).
 *
 *   replay-log --log LOG --list                       every entry, one line each
 *   replay-log --log LOG --marks                      marks, flushes and FUA writes only
 *   replay-log --log LOG --replay DEV [--state FILE] [--until-mark NAME | --until-flush |
 *              --until-point | --until-entry N] [-v]
 *
 * --until-flush stops after the next FLUSH or FUA entry, --until-point after the next FLUSH, FUA
 * or MARK entry (the points where a file system's or an image's promises must hold).
 *
 * The log: one super block (magic, version, nr_entries, sectorsize) in the first sector, then for
 * each entry a sector holding the entry header (sector, nr_sectors, flags, data_len; all little
 * endian, sector and nr_sectors in units of sectorsize) followed by nr_sectors sectors of the data
 * written. A MARK entry carries its name after the header in the same sector; a DISCARD entry has
 * no data.
 *
 * A replay stop prints "stop entry=N next=N flags=F last_mark=NAME" (N counts the entries
 * applied). Exit status: 0 stopped where asked (or at the end when no stop was asked), 3 the end
 * of the log came first, 1 an error (a corrupt log, a write past the target's end, I/O), 2 usage.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define LW_MAGIC	0x6a736677736872ULL
#define LW_VERSION	1ULL

#define LW_FLUSH	(1ULL << 0)
#define LW_FUA		(1ULL << 1)
#define LW_DISCARD	(1ULL << 2)
#define LW_MARK		(1ULL << 3)
#define LW_METADATA	(1ULL << 4)
#define LW_KNOWN	(LW_FLUSH | LW_FUA | LW_DISCARD | LW_MARK | LW_METADATA)

struct lw_super {
	uint64_t magic;
	uint64_t version;
	uint64_t nr_entries;
	uint32_t sectorsize;
} __attribute__((packed));

struct lw_entry {
	uint64_t sector;
	uint64_t nr_sectors;
	uint64_t flags;
	uint64_t data_len;
} __attribute__((packed));

_Static_assert(sizeof(struct lw_super) == 28, "log super size");
_Static_assert(sizeof(struct lw_entry) == 32, "log entry size");

#define COPY_CHUNK (1U << 20)
#define MARK_MAX 4096

static const char *log_path;
/* the copy buffer and the entry sector (globals: reachable when die() exits) */
static char *buf, *sec;

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "replay-log: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: replay-log --log LOG (--list | --marks)\n"
		"       replay-log --log LOG --replay DEV [--state FILE]\n"
		"                  [--until-mark NAME | --until-flush | --until-point | --until-entry N]\n"
		"                  [-v]\n");
	exit(2);
}

/* size of a regular file or a block device */
static uint64_t fd_size(int fd, const char *path)
{
	struct stat st;
	uint64_t sz;

	if (fstat(fd, &st) < 0)
		die("%s: stat: %s", path, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
			die("%s: BLKGETSIZE64: %s", path, strerror(errno));
		return sz;
	}
	if (!S_ISREG(st.st_mode))
		die("%s: neither a regular file nor a block device", path);
	return (uint64_t)st.st_size;
}

static void read_full(int fd, void *buf, size_t len, uint64_t off, const char *what)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("%s: read %s at byte %" PRIu64 ": %s", log_path, what, off + done,
			    strerror(errno));
		if (n == 0)
			die("%s: %s at byte %" PRIu64 ": unexpected end of the log", log_path, what,
			    off + done);
		done += (size_t)n;
	}
}

static void write_full(int fd, const char *path, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("%s: write at byte %" PRIu64 ": %s", path, off + done,
			    n < 0 ? strerror(errno) : "short write");
		done += (size_t)n;
	}
}

/* discard a range of the target: BLKDISCARD on a device, a punched hole in a file, else zeros */
static void discard_range(int fd, const char *path, int is_blk, uint64_t off, uint64_t len)
{
	static char zeros[COPY_CHUNK];
	uint64_t range[2] = { off, len };

	if (is_blk && ioctl(fd, BLKDISCARD, range) == 0)
		return;
	if (!is_blk && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
				 (off_t)len) == 0)
		return;
	while (len) {
		size_t n = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;

		write_full(fd, path, zeros, n, off);
		off += n;
		len -= n;
	}
}

static const char *flag_str(uint64_t f, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s%s%s", f & LW_FLUSH ? "FLUSH|" : "", f & LW_FUA ? "FUA|" : "",
		 f & LW_DISCARD ? "DISCARD|" : "", f & LW_MARK ? "MARK|" : "",
		 f & LW_METADATA ? "METADATA|" : "", f ? "" : "WRITE|");
	buf[strlen(buf) - 1] = '\0';
	return buf;
}

/* the position in the log: entries applied and the byte offset of the next entry header */
struct pos {
	uint64_t entry;
	uint64_t off;
	char last_mark[MARK_MAX];
};

static void load_state(const char *path, struct pos *p, uint64_t nr_entries, uint64_t log_size,
		       uint32_t ss)
{
	FILE *f = fopen(path, "r");
	unsigned long long e, o;
	int n;

	if (!f) {
		if (errno == ENOENT)
			return;
		die("%s: %s", path, strerror(errno));
	}
	p->last_mark[0] = '\0';
	n = fscanf(f, "%llu %llu %4095s", &e, &o, p->last_mark);
	fclose(f);
	if (n < 2)
		die("%s: not a replay-log state file", path);
	if (e > nr_entries || o < ss || o > log_size || o % ss)
		die("%s: position entry %llu byte %llu does not fit this log", path, e, o);
	if (n == 2 || strcmp(p->last_mark, "-") == 0)
		p->last_mark[0] = '\0';
	p->entry = e;
	p->off = o;
}

static void save_state(const char *path, const struct pos *p)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	fprintf(f, "%" PRIu64 " %" PRIu64 " %s\n", p->entry, p->off,
		p->last_mark[0] ? p->last_mark : "-");
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		die("%s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
	enum { O_LIST = 1, O_MARKS, O_UNTIL_MARK, O_UNTIL_FLUSH, O_UNTIL_POINT, O_UNTIL_ENTRY,
	       O_STATE };
	static const struct option opts[] = {
		{ "log", required_argument, NULL, 'l' },
		{ "replay", required_argument, NULL, 'r' },
		{ "list", no_argument, NULL, O_LIST },
		{ "marks", no_argument, NULL, O_MARKS },
		{ "until-mark", required_argument, NULL, O_UNTIL_MARK },
		{ "until-flush", no_argument, NULL, O_UNTIL_FLUSH },
		{ "until-point", no_argument, NULL, O_UNTIL_POINT },
		{ "until-entry", required_argument, NULL, O_UNTIL_ENTRY },
		{ "state", required_argument, NULL, O_STATE },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	const char *replay_path = NULL, *state_path = NULL, *until_mark = NULL;
	int list = 0, marks_only = 0, verbose = 0, c, logfd, tfd = -1, is_blk = 0;
	uint64_t until_flush = 0, until_entry = UINT64_MAX, log_size, target_size = 0, stop_flags = 0;
	struct lw_super sb;
	struct pos p = { 0 };
	uint32_t ss;
	char fbuf[64], *end;
	int stopped = 0, asked;

	while ((c = getopt_long(argc, argv, "l:r:v", opts, NULL)) != -1) {
		switch (c) {
		case 'l': log_path = optarg; break;
		case 'r': replay_path = optarg; break;
		case 'v': verbose = 1; break;
		case O_LIST: list = 1; break;
		case O_MARKS: list = 1; marks_only = 1; break;
		case O_UNTIL_MARK: until_mark = optarg; break;
		case O_UNTIL_FLUSH: until_flush = LW_FLUSH | LW_FUA; break;
		case O_UNTIL_POINT: until_flush = LW_FLUSH | LW_FUA | LW_MARK; break;
		case O_UNTIL_ENTRY:
			errno = 0;
			until_entry = strtoull(optarg, &end, 0);
			if (errno || *end || end == optarg)
				usage();
			break;
		case O_STATE: state_path = optarg; break;
		default: usage();
		}
	}
	asked = until_mark || until_flush || until_entry != UINT64_MAX;
	if (optind != argc || !log_path || list == !!replay_path ||
	    (list && (asked || state_path)) || (!!until_mark + !!until_flush +
						(until_entry != UINT64_MAX)) > 1)
		usage();

	logfd = open(log_path, O_RDONLY);
	if (logfd < 0)
		die("%s: %s", log_path, strerror(errno));
	log_size = fd_size(logfd, log_path);
	if (log_size < sizeof(sb))
		die("%s: too small for a log super block", log_path);
	read_full(logfd, &sb, sizeof(sb), 0, "the super block");
	if (le64toh(sb.magic) != LW_MAGIC)
		die("%s: bad magic %#" PRIx64 " (not a dm-log-writes log)", log_path,
		    (uint64_t)le64toh(sb.magic));
	if (le64toh(sb.version) != LW_VERSION)
		die("%s: unsupported log version %" PRIu64, log_path,
		    (uint64_t)le64toh(sb.version));
	ss = le32toh(sb.sectorsize);
	if (ss < 512 || ss > 65536 || (ss & (ss - 1)))
		die("%s: bad sector size %u", log_path, ss);
	/* every entry takes at least its header sector */
	if (le64toh(sb.nr_entries) > log_size / ss - 1)
		die("%s: %" PRIu64 " entries cannot fit in a %" PRIu64 "-byte log", log_path,
		    (uint64_t)le64toh(sb.nr_entries), log_size);
	p.off = ss;

	if (replay_path) {
		struct stat st;

		tfd = open(replay_path, O_RDWR);
		if (tfd < 0)
			die("%s: %s", replay_path, strerror(errno));
		target_size = fd_size(tfd, replay_path);
		if (fstat(tfd, &st) == 0)
			is_blk = S_ISBLK(st.st_mode);
		if (state_path)
			load_state(state_path, &p, le64toh(sb.nr_entries), log_size, ss);
	}

	buf = malloc(COPY_CHUNK);
	sec = malloc(ss);
	if (!buf || !sec)
		die("out of memory");

	while (p.entry < le64toh(sb.nr_entries)) {
		struct lw_entry *e = (struct lw_entry *)sec;
		uint64_t sector, nr, flags, dlen, left, src, dst;
		char name[MARK_MAX] = "";

		if (p.off > log_size - ss)
			die("%s: entry %" PRIu64 ": header at byte %" PRIu64 " is past the log's end",
			    log_path, p.entry, p.off);
		read_full(logfd, sec, ss, p.off, "an entry header");
		sector = le64toh(e->sector);
		nr = le64toh(e->nr_sectors);
		flags = le64toh(e->flags);
		dlen = le64toh(e->data_len);
		if (flags & ~LW_KNOWN)
			die("%s: entry %" PRIu64 " at byte %" PRIu64 ": unknown flags %#" PRIx64,
			    log_path, p.entry, p.off, flags);
		if (flags & LW_MARK) {
			if (nr || dlen >= ss - sizeof(*e) || dlen >= MARK_MAX)
				die("%s: entry %" PRIu64 ": malformed mark (%" PRIu64
				    " sectors, %" PRIu64 " name bytes)", log_path, p.entry, nr, dlen);
			memcpy(name, sec + sizeof(*e), dlen);
			name[dlen] = '\0';
			if (strlen(name) != dlen)
				die("%s: entry %" PRIu64 ": mark name holds a NUL", log_path, p.entry);
		} else if (dlen) {
			die("%s: entry %" PRIu64 ": inline data entries are not supported", log_path,
			    p.entry);
		}
		/* the data follows the header unless it is a discard */
		left = (log_size - p.off) / ss - 1;
		if (!(flags & LW_DISCARD) && nr > left)
			die("%s: entry %" PRIu64 " at byte %" PRIu64 ": %" PRIu64
			    " data sectors run past the log's end", log_path, p.entry, p.off, nr);
		if (nr > UINT64_MAX / ss || sector > UINT64_MAX / ss - nr)
			die("%s: entry %" PRIu64 ": sector %" PRIu64 " + %" PRIu64 " overflows",
			    log_path, p.entry, sector, nr);

		if (list) {
			if (!marks_only || (flags & (LW_MARK | LW_FLUSH | LW_FUA)))
				printf("%" PRIu64 " @%" PRIu64 " sector %" PRIu64 " len %" PRIu64
				       " %s%s%s\n", p.entry, p.off, sector, nr,
				       flag_str(flags, fbuf, sizeof(fbuf)), name[0] ? " " : "", name);
		} else if (flags & LW_MARK) {
			snprintf(p.last_mark, sizeof(p.last_mark), "%s", name);
		} else if (nr) {
			if ((sector + nr) * ss > target_size)
				die("%s: entry %" PRIu64 " writes sectors %" PRIu64 "..%" PRIu64
				    ", past the end of %s (%" PRIu64 " bytes)", log_path, p.entry,
				    sector, sector + nr - 1, replay_path, target_size);
			if (flags & LW_DISCARD) {
				discard_range(tfd, replay_path, is_blk, sector * ss, nr * ss);
			} else {
				src = p.off + ss;
				dst = sector * ss;
				left = nr * ss;
				while (left) {
					size_t n = left < COPY_CHUNK ? (size_t)left : COPY_CHUNK;

					read_full(logfd, buf, n, src, "entry data");
					write_full(tfd, replay_path, buf, n, dst);
					src += n;
					dst += n;
					left -= n;
				}
			}
		}
		if (verbose && !list)
			fprintf(stderr, "replay %" PRIu64 ": sector %" PRIu64 " len %" PRIu64 " %s%s%s\n",
				p.entry, sector, nr, flag_str(flags, fbuf, sizeof(fbuf)),
				name[0] ? " " : "", name);
		p.off += ss + ((flags & LW_DISCARD) ? 0 : nr * ss);
		p.entry++;
		if (list)
			continue;
		if ((until_mark && (flags & LW_MARK) && strcmp(name, until_mark) == 0) ||
		    (flags & until_flush) ||
		    (until_entry != UINT64_MAX && p.entry >= until_entry)) {
			stopped = 1;
			stop_flags = flags;
			break;
		}
	}
	if (list)
		goto out;
	if (fsync(tfd) < 0 && errno != EINVAL)
		die("%s: fsync: %s", replay_path, strerror(errno));
	if (state_path)
		save_state(state_path, &p);
	printf("stop entry=%" PRIu64 " next=%" PRIu64 " flags=%s last_mark=%s\n", p.entry,
	       p.off, stopped ? flag_str(stop_flags, fbuf, sizeof(fbuf)) : "END",
	       p.last_mark[0] ? p.last_mark : "-");
out:
	free(buf);
	free(sec);
	close(logfd);
	if (tfd >= 0)
		close(tfd);
	return asked && !stopped ? 3 : 0;
}
