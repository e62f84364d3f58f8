// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the freed-space contract (->frees_pending(), include/vdimg/backend.h) that keeps a
 * late write from landing in space given to another offset: a qcow2 cluster freed by a discard is
 * not handed out again before a flush; after ->frees_pending() the next ->flush() frees only what
 * was pending at that call (the driver drained the writes that could still target it), and later
 * discards wait for the following flush; many discards between flushes never free anything early
 * (there used to be a forced flush after 256). Then `qemu-img check` finds no errors and no leaks.
 * Also: multi-cluster writes from several threads get one contiguous extent per request (qcow2
 * and QED), as the driver's single-kiocb path needs. Skips (exit 4) without qemu-img. KTAP.
 */
#include <pthread.h>
#include "../../tools/lib/chain.h"
#include "ktap.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)
#define CS (64 * KiB)

static bool have_qemu_img(void)
{
	return !system("qemu-img --version >/dev/null 2>&1");
}

static int run(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static struct vdimg_chain *open1(const char *path)
{
	struct vdimg_chain *c = NULL;

	if (vdimg_chain_open(&c, &path, 1, NULL, 0))
		return NULL;
	return c;
}

/* Host offset of virtual @off (DATA), or 0. */
static u64 host_of(struct vdimg_chain *c, u64 off)
{
	struct vdimg_image *top = vdimg_chain_top(c);
	struct vdimg_extent e;

	if (top->fmt->map(top, off, CS, 0, &e) || e.type != VDIMG_EXT_DATA)
		return 0;
	return e.file_offset;
}

static bool write_at(struct vdimg_chain *c, u64 off, u64 len, u8 v)
{
	u8 *buf = malloc(len);
	int ret;

	memset(buf, v, len);
	ret = vdimg_chain_pwrite(c, buf, len, off);
	free(buf);
	return !ret;
}

/* Is @host among the @n host offsets of @hosts? */
static bool among(const u64 *hosts, int n, u64 host)
{
	int i;

	for (i = 0; i < n; i++)
		if (hosts[i] == host)
			return true;
	return false;
}

static bool check_clean(const char *path)
{
	return !run("qemu-img check -q %s >/dev/null 2>&1", path);
}

static void test_mark(void)
{
	const char *path = tpath("mark.qcow2");
	struct vdimg_chain *c;
	struct vdimg_image *top;
	u64 a, b, n1, n2, n3;
	bool ok_all;

	run("qemu-img create -q -f qcow2 %s 64M", path);
	c = open1(path);
	if (!ok(c != NULL, "qcow2: open"))
		return;
	top = vdimg_chain_top(c);
	ok(top->fmt->frees_pending != NULL, "qcow2 has ->frees_pending()");
	if (!top->fmt->frees_pending)
		goto out;
	ok_all = write_at(c, 0, CS, 1) && write_at(c, CS, CS, 2) && !vdimg_chain_flush(c);
	ok(ok_all, "two clusters written and flushed");
	ok(!top->fmt->frees_pending(top), "nothing pending after a flush");
	vdimg_chain_flush(c);
	a = host_of(c, 0);
	b = host_of(c, CS);
	ok(a && b && a != b, "both clusters allocated");
	/* A discarded; the driver's flush marks it; B discarded after the mark */
	ok(!vdimg_chain_discard(c, 0, CS, 0), "discard A");
	n1 = (write_at(c, 10 * MiB, CS, 3), host_of(c, 10 * MiB));
	ok(n1 && n1 != a, "A is not reused before a flush");
	ok(top->fmt->frees_pending(top), "frees pending after the discard");
	ok(!vdimg_chain_discard(c, CS, CS, 0), "discard B after the mark");
	ok(!top->fmt->flush(top), "flush");
	/* A may be reused now, B must not be */
	write_at(c, 20 * MiB, CS, 4);
	write_at(c, 21 * MiB, CS, 5);
	n2 = host_of(c, 20 * MiB);
	n3 = host_of(c, 21 * MiB);
	ok(n2 != b && n3 != b, "B (discarded after the mark) is not reused after that flush");
	ok(n2 == a || n3 == a, "A (marked) is free after the flush and reused");
	/* the following flush without a mark (library, close) frees B */
	ok(!vdimg_chain_flush(c), "flush without a mark");
	write_at(c, 30 * MiB, CS, 6);
	ok(host_of(c, 30 * MiB) == b, "B is free after the next flush and reused");
out:
	ok(!vdimg_chain_close(c), "close");
	ok(check_clean(path), "qemu-img check: no errors, no leaks");
}

/* 1000 discards of scattered clusters without a flush: none freed early, all freed after. */
static void test_many(void)
{
	const char *path = tpath("many.qcow2");
	enum { N = 1000 };
	static u64 old[N];
	struct vdimg_chain *c;
	int i, reused = 0;
	bool ok_all = true;

	run("qemu-img create -q -f qcow2 %s 256M", path);
	c = open1(path);
	if (!ok(c != NULL, "many: open"))
		return;
	/* every other cluster, so no two discarded clusters are contiguous in the file */
	for (i = 0; i < 2 * N && ok_all; i++)
		ok_all = write_at(c, (u64)i * CS, CS, i);
	ok_all = ok_all && !vdimg_chain_flush(c);
	ok(ok_all, "many: %d clusters written", 2 * N);
	for (i = 0; i < N; i++) {
		old[i] = host_of(c, (u64)2 * i * CS);
		ok_all = ok_all && !vdimg_chain_discard(c, (u64)2 * i * CS, CS, 0);
	}
	ok(ok_all, "many: %d scattered clusters discarded", N);
	for (i = 0; i < N; i++) {
		write_at(c, 128 * MiB + (u64)i * CS, CS, 0x55);
		reused += among(old, N, host_of(c, 128 * MiB + (u64)i * CS));
	}
	ok(!reused, "many: no discarded cluster reused before a flush (%d were)", reused);
	ok(!vdimg_chain_flush(c), "many: flush");
	reused = 0;
	for (i = 0; i < N; i++) {
		write_at(c, 192 * MiB + (u64)i * CS, CS, 0x66);
		reused += among(old, N, host_of(c, 192 * MiB + (u64)i * CS));
	}
	ok(reused == N, "many: after the flush the discarded clusters are reused (%d of %d)",
	   reused, N);
	ok(!vdimg_chain_close(c), "many: close");
	ok(check_clean(path), "many: qemu-img check: no errors, no leaks");
}

struct writer {
	struct vdimg_chain *c;
	u64 size;
	u64 *next;
	pthread_mutex_t *m;
};

static void *writer_fn(void *arg)
{
	struct writer *w = arg;
	u8 *buf = malloc(MiB);

	memset(buf, 0xab, MiB);
	for (;;) {
		u64 off;

		pthread_mutex_lock(w->m);
		off = *w->next;
		*w->next += MiB;
		pthread_mutex_unlock(w->m);
		if (off >= w->size || vdimg_chain_pwrite(w->c, buf, MiB, off))
			break;
	}
	free(buf);
	return NULL;
}

/* 8 threads writing 1 MiB requests in order (fio --rw=write --iodepth=8): 1 extent per MiB. */
static void test_contiguous(const char *fmt)
{
	const char *path = tpath(fmt);
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	struct vdimg_chain *c;
	struct vdimg_image *top;
	struct writer w;
	pthread_t t[8];
	u64 next = 0, off, extents = 0;
	int i;

	run("qemu-img create -q -f %s %s 64M", fmt, path);
	c = open1(path);
	if (!ok(c != NULL, "%s: open", fmt))
		return;
	w = (struct writer){ .c = c, .size = 64 * MiB, .next = &next, .m = &m };
	for (i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, writer_fn, &w);
	for (i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	top = vdimg_chain_top(c);
	for (off = 0; off < 64 * MiB; off += MiB) {
		u64 p = off;

		while (p < off + MiB) {
			struct vdimg_extent e;

			if (top->fmt->map(top, p, off + MiB - p, VDIMG_MAP_WRITE, &e))
				break;
			p += e.length;
			extents++;
		}
	}
	ok(extents == 64, "%s: 8 writers of 1 MiB: %llu extents for 64 MiB (want 64)", fmt,
	   (unsigned long long)extents);
	ok(!vdimg_chain_close(c), "%s: close", fmt);
	ok(check_clean(path), "%s: qemu-img check clean", fmt);
}

int main(void)
{
	ktap_start();
	if (!have_qemu_img()) {
		skip("qemu-img is not installed");
		return ktap_finish();
	}
	test_mark();
	test_many();
	test_contiguous("qcow2");
	test_contiguous("qed");
	return ktap_finish();
}
