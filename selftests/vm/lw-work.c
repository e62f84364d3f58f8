// SPDX-License-Identifier: GPL-2.0
/*
 * lw-work: the block workload of the VM test 340-log-writes and its checker. Blocks are 4 KiB;
 * a written block holds a header (magic, block number, seed) and a pseudo-random stream from
 * (seed, block), so any block read back names the write it came from. Every operation is
 * appended to a journal file (kept off the device under test) as it is acknowledged:
 *
 *   W BLOCK SEED     a write
 *   Z BLOCK COUNT    BLKZEROOUT (the blocks read as zeros)
 *   D BLOCK COUNT    BLKDISCARD (the blocks read as zeros or keep their data)
 *   M NAME           a point the test marked (written by the test, after an fsync or FUA phase)
 *
 *   lw-work write DEV JOURNAL FIRST COUNT OPS SEED [fua|mix]
 *       OPS random writes into blocks [FIRST, FIRST+COUNT): plain buffered writes then fsync;
 *       "mix" adds discards and zero-outs; "fua" writes with O_DIRECT|O_DSYNC and no fsync
 *   lw-work verify DEV JOURNAL FIRST COUNT AFTER UPTO
 *       every block of the range holds a value it may hold at a point between the marks AFTER
 *       and UPTO: what the journal says it held at AFTER ("-": the start, all zeros), or any
 *       value an operation logged after AFTER and before UPTO ("-": the end) gave it. With
 *       AFTER == UPTO the point is that mark exactly: every block holds its last value.
 * Exit status: 0 fine, 1 a mismatch or an error (each bad block is named), 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BS 4096
#define MAGIC 0x4c57424c4f434b31ULL	/* "LWBLOCK1" */
#define MAXVALS 16

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static void fill(unsigned char *b, uint64_t blk, uint64_t seed)
{
	uint64_t s = (seed * 0x9e3779b97f4a7c15ULL) ^ (blk + 1), v[3] = { MAGIC, blk, seed };
	size_t i;

	memcpy(b, v, sizeof(v));
	for (i = sizeof(v); i < BS; i += 8) {
		uint64_t r = rng_next(&s);

		memcpy(b + i, &r, 8);
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: lw-work write DEV JOURNAL FIRST COUNT OPS SEED [fua|mix]\n"
			"       lw-work verify DEV JOURNAL FIRST COUNT AFTER UPTO\n");
	return 2;
}

static int do_write(char **av, int ac)
{
	uint64_t first = strtoull(av[4], NULL, 0), count = strtoull(av[5], NULL, 0);
	uint64_t ops = strtoull(av[6], NULL, 0), seed = strtoull(av[7], NULL, 0), s, i;
	int fua = ac > 8 && !strcmp(av[8], "fua"), mix = ac > 8 && !strcmp(av[8], "mix");
	unsigned char *b;
	FILE *j;
	int fd;

	if (!count || !seed)
		return usage();
	fd = open(av[2], O_RDWR | (fua ? O_DIRECT | O_DSYNC : 0));
	j = fopen(av[3], "a");
	if (fd < 0 || !j || posix_memalign((void **)&b, BS, BS)) {
		perror("lw-work: open");
		return 1;
	}
	s = seed;
	for (i = 0; i < ops; i++) {
		uint64_t r = rng_next(&s), blk = first + r % count, n = 1 + (r >> 32) % 4;
		uint64_t range[2], wseed = (seed << 20) + i + 1;
		unsigned int kind = mix ? (r >> 40) % 8 : 0;

		if (blk + n > first + count)
			n = first + count - blk;
		range[0] = blk * BS;
		range[1] = n * BS;
		if (kind == 6) {
			if (ioctl(fd, BLKDISCARD, range) < 0) {
				perror("lw-work: BLKDISCARD");
				return 1;
			}
			fprintf(j, "D %" PRIu64 " %" PRIu64 "\n", blk, n);
		} else if (kind == 7) {
			if (ioctl(fd, BLKZEROOUT, range) < 0) {
				perror("lw-work: BLKZEROOUT");
				return 1;
			}
			fprintf(j, "Z %" PRIu64 " %" PRIu64 "\n", blk, n);
		} else {
			fill(b, blk, wseed);
			if (pwrite(fd, b, BS, (off_t)(blk * BS)) != BS) {
				perror("lw-work: write");
				return 1;
			}
			fprintf(j, "W %" PRIu64 " %" PRIu64 "\n", blk, wseed);
		}
	}
	if (!fua && fsync(fd) < 0) {
		perror("lw-work: fsync");
		return 1;
	}
	if (fclose(j) != 0 || close(fd) != 0) {
		perror("lw-work: close");
		return 1;
	}
	return 0;
}

struct bstate {
	unsigned int n;		/* values the block may hold; 0 with any set: not checked */
	int any;
	uint64_t v[MAXVALS];	/* seeds; 0 is all zeros */
};

static void add_val(struct bstate *st, uint64_t v)
{
	unsigned int i;

	for (i = 0; i < st->n; i++)
		if (st->v[i] == v)
			return;
	if (st->n == MAXVALS) {
		st->any = 1;
		return;
	}
	st->v[st->n++] = v;
}

static int do_verify(char **av)
{
	uint64_t first = strtoull(av[4], NULL, 0), count = strtoull(av[5], NULL, 0), i, a, b;
	const char *after = av[6], *upto = av[7];
	unsigned long long ua, ub;
	int strict = strcmp(after, "-") != 0, bad = 0, fd, found_after = !strict, k;
	unsigned char *buf, *want;
	struct bstate *st;
	char line[4200], name[4096], op;
	FILE *j;

	st = calloc(count, sizeof(*st));
	fd = open(av[2], O_RDONLY | O_DIRECT);
	j = fopen(av[3], "r");
	if (!count || !st || fd < 0 || !j || posix_memalign((void **)&buf, BS, BS) ||
	    !(want = malloc(BS))) {
		perror("lw-work: verify setup");
		return 1;
	}
	for (i = 0; i < count; i++)
		add_val(&st[i], 0);
	while (fgets(line, sizeof(line), j)) {
		if (sscanf(line, "M %4095s", name) == 1) {
			if (strict && !strcmp(name, after)) {
				strict = 0;
				found_after = 1;
				if (!strcmp(upto, after))
					break;
				continue;
			}
			if (!strict && !strcmp(name, upto))
				break;
			continue;
		}
		if (sscanf(line, "%c %llu %llu", &op, &ua, &ub) != 3) {
			fprintf(stderr, "lw-work: journal: bad line: %s", line);
			return 1;
		}
		a = ua;
		b = ub;
		if (op == 'W') {
			if (a < first || a >= first + count)
				continue;
			if (strict)
				st[a - first].n = 0, st[a - first].any = 0;
			add_val(&st[a - first], b);
			continue;
		}
		for (i = a; i < a + b; i++) {
			if (i < first || i >= first + count)
				continue;
			if (strict && op == 'Z')
				st[i - first].n = 0, st[i - first].any = 0;
			add_val(&st[i - first], 0);
		}
	}
	if (!found_after) {
		fprintf(stderr, "lw-work: mark %s is not in the journal\n", after);
		return 1;
	}
	for (i = 0; i < count; i++) {
		uint64_t hdr[3], blk = first + i;
		int zero = 1, ok = 0;

		if (pread(fd, buf, BS, (off_t)(blk * BS)) != BS) {
			fprintf(stderr, "lw-work: block %" PRIu64 ": read: %s\n", blk, strerror(errno));
			return 1;
		}
		if (st[i].any)
			continue;
		for (k = 0; k < BS; k++)
			if (buf[k]) {
				zero = 0;
				break;
			}
		memcpy(hdr, buf, sizeof(hdr));
		for (k = 0; k < (int)st[i].n && !ok; k++) {
			if (st[i].v[k] == 0) {
				ok = zero;
				continue;
			}
			if (zero || hdr[2] != st[i].v[k])
				continue;
			fill(want, blk, st[i].v[k]);
			ok = !memcmp(want, buf, BS);
		}
		if (!ok) {
			if (bad++ < 10)
				fprintf(stderr, "lw-work: block %" PRIu64 ": holds %s (magic %#" PRIx64
					" block %" PRIu64 " seed %" PRIu64 "), may hold %u value(s), first %"
					PRIu64 "\n", blk, zero ? "zeros" : "data", hdr[0], hdr[1], hdr[2],
					st[i].n, st[i].v[0]);
		}
	}
	if (bad) {
		fprintf(stderr, "lw-work: %d of %" PRIu64 " blocks hold a value they may not hold "
			"between %s and %s\n", bad, count, after, upto);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 8 && !strcmp(argv[1], "write"))
		return do_write(argv, argc);
	if (argc == 8 && !strcmp(argv[1], "verify"))
		return do_verify(argv);
	return usage();
}
