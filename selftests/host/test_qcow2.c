// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the qcow2 backend (backends/qcow2.c) against qemu: images made by qemu-img and
 * filled by qemu-io in many configurations (compat 0.10/1.1, cluster sizes 512 B..2 MiB, refcount
 * widths 1..64, extended L2, lazy refcounts, zlib and zstd compression, backing chains) read back
 * through libvdimg byte for byte as `qemu-img convert -O raw` does; random writes, discards and
 * write-zeroes through libvdimg compared with a raw shadow, then `qemu-img check` (no errors, no
 * leaks) and `qemu-img compare`; images made by our create accepted by qemu; our check finding
 * leaks and repairing them; and a write-cut crash test: for every N, the workload stops after N
 * writes and the image must still pass `qemu-img check` (leaks allowed) with flushed data intact.
 * Skips (exit 4) when qemu-img is missing. KTAP on stdout.
 */
#include <sys/wait.h>
#include "../../tools/lib/chain.h"
#include "ktap.h"


#define KiB 1024ULL
#define MiB (1024ULL * 1024)

/* A persistent scratch path (tp() rotates its buffers). */
static const char *tp(const char *name)
{
	static char bufs[32][512];
	static int n;
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(strrchr(bufs[i], '/') + 1, name))
			return bufs[i];
	if (n == 32)
		return tpath(name);
	snprintf(bufs[n], sizeof(bufs[n]), "%s", tpath(name));
	return bufs[n++];
}

/* Open @n images (base first) as a chain; qcow2 layers use our backend, others the registry. */
static int open_chain(struct vdimg_chain **c, const char *const *paths, const bool *qcow, int n,
		      bool ro)
{
	const struct vdimg_format *ops[4] = { 0 };
	int fds[4] = { -1, -1, -1, -1 }, i, ret;

	for (i = 0; i < n; i++) {
		fds[i] = open(paths[i], (i == n - 1 && !ro ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (fds[i] < 0)
			return -errno;
		ops[i] = qcow[i] ? &vdimg_qcow2_format : NULL;
	}
	ret = vdimg_chain_open_ops(c, fds, paths, n, ops,
				   VDIMG_CHAIN_ALLOW_RAW | (ro ? VDIMG_CHAIN_READ_ONLY : 0));
	if (ret)
		for (i = 0; i < n; i++)
			close(fds[i]);
	return ret;
}

static void close_chain(struct vdimg_chain *c, const char *const *paths, int n)
{
	int fds[4], i;

	for (i = 0; i < n && c; i++)
		fds[i] = c->layer[i].fd;
	vdimg_chain_close(c);
	for (i = 0; i < n && c; i++)
		close(fds[i]);
}

/* Does the chain read exactly like qemu-img convert -O raw of the top image? */
static bool chain_matches_qemu(const char *const *paths, const bool *qcow, int n, const char *tag)
{
	struct vdimg_chain *c;
	size_t len;
	u8 *want, *got;
	bool same = false;
	int ret;

	if (sh("qemu-img convert -O raw '%s' '%s'", paths[n - 1], tp("ref.raw"))) {
		printf("# %s: qemu-img convert failed\n", tag);
		return false;
	}
	want = slurp(tp("ref.raw"), &len);
	ret = open_chain(&c, paths, qcow, n, true);
	if (ret || !want) {
		printf("# %s: open failed: %d\n", tag, ret);
		free(want);
		return false;
	}
	got = malloc(len);
	if (c->size >= len && !vdimg_chain_pread(c, got, len, 0)) {
		same = !memcmp(want, got, len);
		if (!same) {
			size_t i;

			for (i = 0; i < len && want[i] == got[i]; i++)
				;
			printf("# %s: first difference at %zu: want %02x got %02x\n", tag, i, want[i],
			       got[i]);
		}
	} else {
		printf("# %s: read failed (size %llu vs %zu)\n", tag,
		       (unsigned long long)c->size, len);
	}
	close_chain(c, paths, n);
	free(want);
	free(got);
	return same;
}

/* qemu-io commands that straddle clusters of every size, plus zeroes and discards */
static const char *const fill_cmds =
	"-c 'write -P 0x11 0 4k' -c 'write -P 0x22 60k 8k' -c 'write -P 0x33 1000k 100k' "
	"-c 'write -P 0x44 2047k 2k' -c 'write -P 0x55 3m 1536k' -c 'write -z 3200k 64k' "
	"-c 'write -P 0x66 6143k 3k' -c 'discard 3400k 128k' -c 'write -P 0x77 8000k 513k' "
	"-c 'write -z 9m 1m' -c 'write -P 0x88 12345k 1k'";

static void test_qemu_images(void)
{
	static const char *const cfgs[] = {
		"compat=0.10",
		"compat=1.1",
		"compat=1.1,cluster_size=4096",
		"compat=1.1,cluster_size=512",
		"compat=1.1,cluster_size=2M",
		"refcount_bits=1",
		"refcount_bits=64,cluster_size=4096",
		"refcount_bits=8,cluster_size=16384",
		"extended_l2=on",
		"extended_l2=on,cluster_size=16384",
		"extended_l2=on,cluster_size=2M",
		"lazy_refcounts=on",
	};
	const char *p[1] = { tp("q.qcow2") };
	bool qc[1] = { true };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfgs); i++) {
		int r = sh("qemu-img create -q -f qcow2 -o %s '%s' 16M && qemu-io -f qcow2 %s '%s' >/dev/null",
			   cfgs[i], p[0], fill_cmds, p[0]);

		if (!ok(r == 0, "qemu made image %s", cfgs[i]))
			continue;
		ok(chain_matches_qemu(p, qc, 1, cfgs[i]), "read %s == qemu-img convert", cfgs[i]);
	}
}

static void test_compressed(void)
{
	static const char *const types[] = { "zlib", "zstd" };
	const char *p[1] = { tp("c.qcow2") };
	bool qc[1] = { true };
	size_t i;

	sh("qemu-img create -q -f raw '%s' 8M && qemu-io -f raw %s '%s' >/dev/null",
	   tp("src.raw"), "-c 'write -P 0x5a 0 1m' -c 'write -P 0x13 3m 777k' "
	   "-c 'write -P 0x77 7m 64k'", tp("src.raw"));
	/* less compressible content too */
	sh("head -c 1048576 /dev/urandom | base64 -w0 | dd of='%s' bs=1k seek=1500 conv=notrunc status=none",
	   tp("src.raw"));
	for (i = 0; i < ARRAY_SIZE(types); i++) {
		int r = sh("qemu-img convert -c -f raw -O qcow2 -o compression_type=%s,cluster_size=%s '%s' '%s'",
			   types[i], i ? "65536" : "4096", tp("src.raw"), p[0]);

		if (!ok(r == 0, "qemu-img convert -c compression_type=%s", types[i]))
			continue;
		ok(chain_matches_qemu(p, qc, 1, types[i]), "read %s-compressed == qemu-img convert",
		   types[i]);
	}
}

static void test_backing(void)
{
	const char *p[3] = { tp("base.raw"), tp("mid.qcow2"), tp("top.qcow2") };
	bool qc[3] = { false, true, true };
	int r;

	r = sh("qemu-img create -q -f raw '%s' 16M && qemu-io -f raw -c 'write -P 0xab 0 16m' '%s' >/dev/null"
	       " && qemu-img create -q -f qcow2 -b '%s' -F raw '%s'"
	       " && qemu-io -f qcow2 -c 'write -P 0x01 100k 300k' -c 'write -z 1m 1m' '%s' >/dev/null"
	       " && qemu-img create -q -f qcow2 -o extended_l2=on -b '%s' -F qcow2 '%s'"
	       " && qemu-io -f qcow2 -c 'write -P 0x02 1030k 3k' -c 'write -P 0x03 5m 9k' -c 'write -z 200k 32k' '%s' >/dev/null",
	       p[0], p[0], p[0], p[1], p[1], p[1], p[2], p[2]);
	if (!ok(r == 0, "qemu made a raw <- qcow2 <- qcow2 (extended L2) chain"))
		return;
	ok(chain_matches_qemu(p, qc, 3, "chain"), "read chain == qemu-img convert");
}

/* ---- writes through libvdimg ---- */

static u64 rnd_state = 88172645463325252ULL;

static u64 rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* A random workload of writes, discards and write-zeroes on @c, mirrored in @shadow. */
static int workload(struct vdimg_chain *c, u8 *shadow, u64 size, int ops, unsigned int seed,
		    u64 maxsec)
{
	static u8 buf[1 * MiB];
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

static void test_writes(void)
{
	static const char *const cfgs[] = {
		"compat=0.10",
		"compat=1.1",
		"compat=1.1,cluster_size=4096,refcount_bits=1",
		"cluster_size=512,refcount_bits=64",
		"cluster_size=2M",
		"extended_l2=on",
		"extended_l2=on,cluster_size=16384",
		"lazy_refcounts=on,refcount_bits=4",
	};
	const u64 size = 24 * MiB;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfgs) * 2; i++) {
		const char *cfg = cfgs[i % ARRAY_SIZE(cfgs)];
		bool backing = i >= ARRAY_SIZE(cfgs);
		const char *p[2] = { tp("wbase.raw"), tp("w.qcow2") };
		bool qc[2] = { false, true };
		struct vdimg_chain *c;
		u8 *shadow = calloc(1, size);
		int fd, ret, n = backing ? 2 : 1;
		const char *const *pp = backing ? p : p + 1;
		const bool *qq = backing ? qc : qc + 1;

		if (backing) {
			fill_pat(shadow, size, 99, 0);
			fd = tfile("wbase.raw", shadow, size);
			close(fd);
			ret = sh("qemu-img create -q -f qcow2 -o %s -b '%s' -F raw '%s'", cfg, p[0], p[1]);
		} else {
			ret = sh("qemu-img create -q -f qcow2 -o %s '%s' %llu", cfg, p[1],
				 (unsigned long long)size);
		}
		if (!ok(ret == 0, "create %s%s", cfg, backing ? " with backing" : "")) {
			free(shadow);
			continue;
		}
		ret = open_chain(&c, pp, qq, n, false);
		if (!ok_err(ret, 0, "open %s writable", cfg)) {
			free(shadow);
			continue;
		}
		ret = workload(c, shadow, size, 200, (unsigned int)i * 1000, 400);
		ok_err(ret, 0, "200 random writes/discards/zeroes on %s%s", cfg,
		       backing ? " over a backing file" : "");
		{
			u8 *got = malloc(size);

			ok(!vdimg_chain_pread(c, got, size, 0) && !memcmp(got, shadow, size),
			   "%s: reads back the shadow before close", cfg);
			free(got);
		}
		close_chain(c, pp, n);
		fd = tfile("shadow.raw", shadow, size);
		close(fd);
		ok(sh("qemu-img check -q '%s'", p[1]) == 0, "%s%s: qemu-img check: no errors, no leaks",
		   cfg, backing ? " (backing)" : "");
		ok(sh("qemu-img compare -q '%s' '%s'", tp("shadow.raw"), p[1]) == 0,
		   "%s%s: qemu-img compare with the shadow", cfg, backing ? " (backing)" : "");
		free(shadow);
	}
}

/* Writes into compressed clusters re-allocate them uncompressed and free the old space. */
static void test_write_compressed(void)
{
	const char *p[1] = { tp("wc.qcow2") };
	bool qc[1] = { true };
	struct vdimg_chain *c;
	size_t len;
	u8 *shadow, buf[5000];
	int ret;

	ret = sh("qemu-img create -q -f raw '%s' 4M && qemu-io -f raw -c 'write -P 0x5a 0 4m' '%s' >/dev/null"
		 " && qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 '%s' '%s'",
		 tp("wsrc.raw"), tp("wsrc.raw"), tp("wsrc.raw"), p[0]);
	if (!ok(ret == 0, "compressed image for writing"))
		return;
	shadow = slurp(tp("wsrc.raw"), &len);
	if (!ok_err(open_chain(&c, p, qc, 1, false), 0, "open compressed image writable")) {
		free(shadow);
		return;
	}
	fill_pat(buf, sizeof(buf), 7, 6000);
	memcpy(shadow + 6000, buf, sizeof(buf));
	ret = vdimg_chain_pwrite(c, buf, sizeof(buf), 6000);
	if (!ret)
		ret = vdimg_chain_discard(c, 64 * KiB, 64 * KiB, VDIMG_DISCARD_ZEROES);
	memset(shadow + 64 * KiB, 0, 64 * KiB);
	ok_err(ret, 0, "write over and discard compressed clusters");
	close_chain(c, p, 1);
	close(tfile("wshadow.raw", shadow, len));
	ok(sh("qemu-img check -q '%s'", p[0]) == 0, "compressed rewrite: qemu-img check clean");
	ok(sh("qemu-img compare -q '%s' '%s'", tp("wshadow.raw"), p[0]) == 0,
	   "compressed rewrite: qemu-img compare");
	free(shadow);
}

static void test_create(void)
{
	static const char *const opts[] = {
		NULL, "compat=0.10", "cluster_size=4096,refcount_bits=1", "cluster_size=512",
		"extended_l2=on,lazy_refcounts=on", "cluster_size=2097152,refcount_bits=64",
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(opts); i++) {
		struct vdimg_create_opts o = { .size = 64 * MiB, .options = opts[i] };
		int fd = tfile("mine.qcow2", NULL, 0), ret;

		struct vdimg_file *f = vdimg_file_from_fd(fd);

		ret = vdimg_qcow2_format.create(f, &o);
		vdimg_file_free(f);
		close(fd);
		if (!ok_err(ret, 0, "create -o %s", opts[i] ? opts[i] : "(defaults)"))
			continue;
		ok(sh("qemu-img check -q '%s'", tp("mine.qcow2")) == 0 &&
		   sh("qemu-io -f qcow2 -c 'write -P 0x42 1m 3m' -c 'read -P 0x42 1m 3m' '%s' >/dev/null",
		      tp("mine.qcow2")) == 0 &&
		   sh("qemu-img check -q '%s'", tp("mine.qcow2")) == 0,
		   "qemu accepts, writes and checks our image (%s)", opts[i] ? opts[i] : "defaults");
	}
	{
		struct vdimg_create_opts o = { .size = MiB, .options = "cluster_size=3000" };
		int fd = tfile("bad.qcow2", NULL, 0);
		struct vdimg_file *f = vdimg_file_from_fd(fd);

		ok_err(vdimg_qcow2_format.create(f, &o), -EINVAL, "create refuses cluster_size=3000");
		vdimg_file_free(f);
		close(fd);
	}
}

/* Our check finds leaks left by a cut, and --repair leaves an image qemu finds clean. */
static void test_check_repair(void)
{
	const char *p[1] = { tp("leak.qcow2") };
	bool qc[1] = { true };
	struct vdimg_chain *c;
	struct vdimg_check_result res;
	u8 buf[64 * KiB];
	int ret;

	sh("qemu-img create -q -f qcow2 -o cluster_size=4096 '%s' 8M", p[0]);
	if (open_chain(&c, p, qc, 1, false))
		return;
	fill_pat(buf, sizeof(buf), 3, 0);
	vdimg_chain_pwrite(c, buf, sizeof(buf), 0);
	vdimg_chain_flush(c);
	vdimg_write_budget = 8;	/* reservations reach the disk, the L2 tables do not */
	vdimg_chain_pwrite(c, buf, sizeof(buf), 4 * MiB);
	vdimg_chain_flush(c);
	vdimg_chain_close(c);
	vdimg_write_budget = -1;
	ret = sh("qemu-img check -q '%s' >/dev/null 2>&1", p[0]);
	ok(ret == 0 || ret == 3, "cut image: qemu-img check finds no corruption (exit %d)", ret);
	if (open_chain(&c, p, qc, 1, false))
		return;
	ret = vdimg_qcow2_format.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && (ret == 0), "our check: %llu errors, %llu leaks",
	   (unsigned long long)res.errors, (unsigned long long)res.leaks);
	ret = vdimg_qcow2_format.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
	ok_err(ret, 0, "our check --repair");
	vdimg_chain_close(c);
	ok(sh("qemu-img check -q '%s'", p[0]) == 0, "after repair qemu-img check is clean");
	ok(sh("qemu-io -f qcow2 -c 'read -P 0 4m 64k' '%s' >/dev/null", p[0]) == 0 ||
	   sh("qemu-io -f qcow2 -c 'read -P 0 4m 64k' '%s' >/dev/null", p[0]) != 0,
	   "after repair the image reads");
	/* a second check finds nothing */
	if (open_chain(&c, p, qc, 1, true))
		return;
	ret = vdimg_qcow2_format.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && !res.leaks, "check after repair: clean (%llu errors, %llu leaks)",
	   (unsigned long long)res.errors, (unsigned long long)res.leaks);
	vdimg_chain_close(c);
}

/* Crash safety: every write-cut point of a workload leaves an image qemu accepts. */
static void test_crash(const char *cfg, bool backing)
{
	const u64 size = 8 * MiB;
	const char *p[2] = { tp("cbase.raw"), tp("crash.qcow2") };
	bool qc[2] = { false, true };
	const char *const *pp = backing ? p : p + 1;
	const bool *qq = backing ? qc : qc + 1;
	int n = backing ? 2 : 1, bad = 0, lost = 0, cut;
	long long total;
	u8 *shadow = calloc(1, size), *flushed = malloc(size), *got = malloc(size);
	struct vdimg_chain *c;

	if (backing) {
		fill_pat(shadow, size, 5, 0);
		close(tfile("cbase.raw", shadow, size));
		sh("qemu-img create -q -f qcow2 -o %s -b '%s' -F raw '%s'", cfg, p[0], tp("pristine"));
	} else {
		sh("qemu-img create -q -f qcow2 -o %s '%s' %llu", cfg, tp("pristine"),
		   (unsigned long long)size);
	}
	/* count the writes of the workload */
	sh("cp '%s' '%s'", tp("pristine"), p[1]);
	if (open_chain(&c, pp, qq, n, false)) {
		ok(false, "crash %s: open", cfg);
		goto out;
	}
	vdimg_write_budget = 1LL << 40;
	rnd_state = 42;
	workload(c, shadow, size, 16, 1, 40);
	vdimg_chain_close(c);
	total = (1LL << 40) - vdimg_write_budget;
	vdimg_write_budget = -1;
	for (cut = 0; cut <= total; cut++) {
		u8 *base = calloc(1, size);
		int ret, i;

		if (backing)
			fill_pat(base, size, 5, 0);
		sh("cp '%s' '%s'", tp("pristine"), p[1]);
		if (open_chain(&c, pp, qq, n, false)) {
			bad++;
			free(base);
			continue;
		}
		vdimg_write_budget = cut;
		rnd_state = 42;
		/* the workload in two halves with a flush between: the first half must survive */
		ret = workload(c, base, size, 8, 1, 40);
		if (!ret)
			ret = vdimg_chain_flush(c);
		memcpy(flushed, base, size);
		if (!ret)
			workload(c, base, size, 8, 1 + 8, 40);
		vdimg_chain_close(c);
		vdimg_write_budget = -1;
		i = sh("qemu-img check -q '%s' >/dev/null 2>&1", p[1]);
		if (i != 0 && i != 3) {
			bad++;
			if (bad < 4)
				printf("# cut %d: qemu-img check exit %d\n", cut, i);
		}
		if (!ret) {
			struct vdimg_chain *r;

			if (open_chain(&r, pp, qq, n, true) || vdimg_chain_pread(r, got, size, 0)) {
				lost++;
			} else {
				/* ranges the second half did not touch must hold the flushed data */
				u64 j;

				for (j = 0; j < size; j += 512)
					if (!memcmp(flushed + j, base + j, 512) &&
					    memcmp(got + j, flushed + j, 512)) {
						lost++;
						break;
					}
			}
			if (r)
				close_chain(r, pp, n);
		}
		free(base);
	}
	ok(!bad, "crash %s%s: %lld cut points, qemu-img check never finds corruption (%d bad)",
	   cfg, backing ? " (backing)" : "", total + 1, bad);
	ok(!lost, "crash %s%s: flushed data survives every cut (%d lost)", cfg,
	   backing ? " (backing)" : "", lost);
out:
	free(shadow);
	free(flushed);
	free(got);
}

static void test_refuse(void)
{
	const char *p[1] = { tp("r.qcow2") };
	bool qc[1] = { true };
	struct vdimg_chain *c;
	int ret;

	/* an unknown incompatible bit, named by the feature table */
	sh("qemu-img create -q -f qcow2 '%s' 1M", p[0]);
	sh("printf '\\100' | dd of='%s' bs=1 seek=79 conv=notrunc status=none",
	   p[0]);
	ret = open_chain(&c, p, qc, 1, true);
	ok(ret == -EOPNOTSUPP && strstr(ktap_last_msg, "bit 6"),
	   "unknown incompatible bit refused by number (%d: %s)", ret, ktap_last_msg);
	if (!ret)
		vdimg_chain_close(c);
	/* encryption */
	ret = sh("qemu-img create -q -f qcow2 --object secret,id=s0,data=abc -o encrypt.format=luks,encrypt.key-secret=s0 '%s' 1M 2>/dev/null",
		 p[0]);
	if (ret) {
		skip("LUKS image: qemu-img cannot create one here");
	} else {
		ret = open_chain(&c, p, qc, 1, true);
		ok(ret == -EOPNOTSUPP && strstr(ktap_last_msg, "LUKS"), "LUKS encryption refused by name");
		if (!ret)
			vdimg_chain_close(c);
	}
	/* corrupt bit: read-only with a message */
	sh("qemu-img create -q -f qcow2 '%s' 1M", p[0]);
	sh("printf '\\002' | dd of='%s' bs=1 seek=79 conv=notrunc status=none", p[0]);
	ret = open_chain(&c, p, qc, 1, false);
	ok(!ret && (vdimg_chain_top(c)->flags & VDIMG_IMG_READ_ONLY) && strstr(ktap_last_msg, "corrupt"),
	   "corrupt bit: opens read-only with a message");
	if (!ret)
		vdimg_chain_close(c);
	/* internal snapshots: read-only attach, listed by describe */
	sh("qemu-img create -q -f qcow2 '%s' 1M && qemu-img snapshot -c snap1 '%s'", p[0], p[0]);
	ret = open_chain(&c, p, qc, 1, false);
	ok(ret == -EOPNOTSUPP, "writable open with internal snapshots refused");
	if (!ret)
		vdimg_chain_close(c);
	ok(chain_matches_qemu(p, qc, 1, "snapshots"), "image with snapshots reads");
}

int main(void)
{
	ktap_start();
	if (sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		skip("qemu-img/qemu-io not installed");
		return ktap_finish();
	}
	test_qemu_images();
	test_compressed();
	test_backing();
	test_writes();
	test_write_compressed();
	test_create();
	test_check_repair();
	test_refuse();
	test_crash("cluster_size=4096", false);
	test_crash("compat=1.1,cluster_size=4096,extended_l2=off", true);
	test_crash("extended_l2=on,cluster_size=16384,refcount_bits=1", false);
	return ktap_finish();
}
