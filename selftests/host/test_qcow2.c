// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the qcow2 backend (backends/qcow2/) against qemu: images made by qemu-img and
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
#include "format_test.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

/* qcow2 layers (qcow[i]) use our backend, the others the registry */
static int open_chain(struct vdimg_chain **c, const char *const *paths, const bool *qcow, int n,
		      bool ro)
{
	return open_chain_with(c, paths, n, &vdimg_qcow2_format, qcow, ro, 0);
}

static bool chain_matches_qemu(const char *const *paths, const bool *qcow, int n, const char *tag)
{
	return chain_matches_qemu_with(paths, n, &vdimg_qcow2_format, qcow, tag);
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
		close_chain(c, n);
		fd = tfile("shadow.raw", shadow, size);
		close(fd);
		ok(sh("qemu-img check -q '%s'", p[1]) == 0, "%s%s: qemu-img check: no errors, no leaks",
		   cfg, backing ? " (backing)" : "");
		ok(sh("qemu-img compare -q '%s' '%s'", tp("shadow.raw"), p[1]) == 0,
		   "%s%s: qemu-img compare with the shadow", cfg, backing ? " (backing)" : "");
		free(shadow);
	}
}

/*
 * The second oracle: libyal's qcowinfo and qcowmount (libqcow-utils) read what vdimg wrote the way
 * vdimg and qemu do. libqcow 20201213 reads v3 zero clusters (the zero flag) as data, so v3 images
 * get a workload of writes only; the v2 image also gets discards and write-zeroes (v2 has no zero
 * flag: they deallocate). Skipped where qcowmount or /dev/fuse is missing.
 */
static void test_libqcow(void)
{
	static const char *const cfgs[] = {
		"compat=0.10",
		"compat=1.1",
		"compat=1.1,cluster_size=4096,refcount_bits=1",
		"cluster_size=512,refcount_bits=64",
		"cluster_size=2M",
		"lazy_refcounts=on,refcount_bits=4",
	};
	const u64 size = 24 * MiB;
	bool have = !sh("qcowinfo -V >/dev/null 2>&1 && qcowmount -V >/dev/null 2>&1") &&
		    !access("/dev/fuse", R_OK | W_OK);
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfgs); i++) {
		const char *p = tp("lq.qcow2");
		struct vdimg_chain *c = NULL;
		bool qc = true, v2 = !strcmp(cfgs[i], "compat=0.10");
		u8 *shadow = calloc(1, size);
		int ret, k;

		if (!have) {
			skip("libqcow %s: qcowmount or /dev/fuse not available", cfgs[i]);
			free(shadow);
			continue;
		}
		ret = sh("qemu-img create -q -f qcow2 -o %s '%s' %llu", cfgs[i], p,
			 (unsigned long long)size);
		if (!ret)
			ret = open_chain(&c, &p, &qc, 1, false);
		if (!ret && v2) {
			ret = workload(c, shadow, size, 200, 7000 + (unsigned int)i, 400);
		} else {
			static u8 buf[256 * 512];

			for (k = 0; k < 150 && !ret; k++) {
				u64 len = 512 * (1 + rnd() % 256), off;

				off = (rnd() % ((size - len) / 512)) * 512;
				fill_pat(buf, len, 7100 + k, off);
				ret = vdimg_chain_pwrite(c, buf, len, off);
				memcpy(shadow + off, buf, len);
			}
		}
		if (c)
			close_chain(c, 1);
		if (!ok_err(ret, 0, "libqcow %s: image written through libvdimg", cfgs[i])) {
			free(shadow);
			continue;
		}
		close(tfile("lqshadow.raw", shadow, size));
		ok(sh("qcowinfo '%s' >/dev/null 2>&1", p) == 0, "libqcow %s: qcowinfo reads it", cfgs[i]);
		sh("mkdir -p '%s'", tp("lqmnt"));
		ok(sh("timeout 60 qcowmount '%s' '%s' >/dev/null 2>&1 && cmp -s '%s/qcow1' '%s'; r=$?; fusermount -u '%s' 2>/dev/null || umount '%s' 2>/dev/null; exit $r",
		      p, tp("lqmnt"), tp("lqmnt"), tp("lqshadow.raw"), tp("lqmnt"), tp("lqmnt")) == 0,
		   "libqcow %s: qcowmount reads the same bytes as the shadow", cfgs[i]);
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
	close_chain(c, 1);
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

		ret = vdimg_qcow2_tool_ops.create(f, &o);
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

		ok_err(vdimg_qcow2_tool_ops.create(f, &o), -EINVAL, "create refuses cluster_size=3000");
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
	ret = vdimg_qcow2_tool_ops.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && (ret == 0), "our check: %llu errors, %llu leaks",
	   (unsigned long long)res.errors, (unsigned long long)res.leaks);
	ret = vdimg_qcow2_tool_ops.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
	ok_err(ret, 0, "our check --repair");
	vdimg_chain_close(c);
	ok(sh("qemu-img check -q '%s'", p[0]) == 0, "after repair qemu-img check is clean");
	ok(sh("qemu-io -f qcow2 -c 'read -P 0 4m 64k' '%s' >/dev/null", p[0]) == 0 ||
	   sh("qemu-io -f qcow2 -c 'read -P 0 4m 64k' '%s' >/dev/null", p[0]) != 0,
	   "after repair the image reads");
	/* a second check finds nothing */
	if (open_chain(&c, p, qc, 1, true))
		return;
	ret = vdimg_qcow2_tool_ops.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && !res.leaks, "check after repair: clean (%llu errors, %llu leaks)",
	   (unsigned long long)res.errors, (unsigned long long)res.leaks);
	vdimg_chain_close(c);
}

/* Crash safety: every write-cut point of a workload leaves an image qemu accepts. */
static void test_crash(const char *cfg, bool backing, bool snaps)
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
	} else if (snaps) {
		/* copy on write: two snapshots share most clusters and every L2 table */
		size_t len;
		u8 *cur;

		sh("qemu-img create -q -f qcow2 -o %s '%s' %llu && qemu-io -f qcow2 -c 'write -P 0x11 0 5m'"
		   " -c 'write -z 6m 512k' '%s' >/dev/null && qemu-img snapshot -c s1 '%s'"
		   " && qemu-io -f qcow2 -c 'write -P 0x22 1m 1m' '%s' >/dev/null && qemu-img snapshot -c s2 '%s'"
		   " && qemu-img convert -O raw '%s' '%s' && qemu-img convert -l snapshot.name=s1 -O raw '%s' '%s'",
		   cfg, tp("pristine"), (unsigned long long)size, tp("pristine"), tp("pristine"),
		   tp("pristine"), tp("pristine"), tp("pristine"), tp("ccur.raw"), tp("pristine"),
		   tp("cs1.raw"));
		cur = slurp(tp("ccur.raw"), &len);
		if (!cur || len != size) {
			ok(false, "crash %s (snapshots): make the image", cfg);
			free(cur);
			goto out;
		}
		memcpy(shadow, cur, size);
		free(cur);
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
		if (snaps) {
			size_t len;
			u8 *cur = slurp(tp("ccur.raw"), &len);

			if (cur && len == size)
				memcpy(base, cur, size);
			free(cur);
		}
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
		if (snaps && sh("qemu-img convert -l snapshot.name=s1 -O raw '%s' '%s' && cmp -s '%s' '%s'",
				p[1], tp("cx.raw"), tp("cx.raw"), tp("cs1.raw"))) {
			bad++;
			if (bad < 4)
				printf("# cut %d: snapshot s1 changed\n", cut);
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
				close_chain(r, n);
		}
		free(base);
	}
	ok(!bad, "crash %s%s: %lld cut points, qemu-img check never finds corruption%s (%d bad)",
	   cfg, backing ? " (backing)" : snaps ? " (2 snapshots, copy on write)" : "", total + 1,
	   snaps ? ", snapshot s1 unchanged" : "", bad);
	ok(!lost, "crash %s%s: flushed data survives every cut (%d lost)", cfg,
	   backing ? " (backing)" : snaps ? " (snapshots)" : "", lost);
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
	/* internal snapshots: a snapshot opens read-only only */
	sh("qemu-img create -q -f qcow2 '%s' 1M && qemu-img snapshot -c snap1 '%s'", p[0], p[0]);
	{
		int fd = open(p[0], O_RDWR | O_CLOEXEC);
		struct vdimg_image img = { .name = p[0], .snapshot = 1 };

		img.file = vdimg_file_from_fd(fd);
		ret = vdimg_image_open(&img, VDIMG_FMT_QCOW2, 0);
		ok(ret == -EROFS, "a snapshot opened writable: -EROFS (%d)", ret);
		if (!ret)
			vdimg_image_close(&img);
		vdimg_file_free(img.file);
		close(fd);
	}
	ok(chain_matches_qemu(p, qc, 1, "snapshots"), "image with snapshots reads");
}

/* ---- internal snapshots ---- */

/*
 * Read the whole disk of @path as internal snapshot @snap (0: the current state) sees it, through
 * the registry (which checks VDIMG_CAP_SNAPSHOTS) and ->map(); no backing file. *@size gets the
 * disk size the backend reported.
 */
static int snap_read_all(const char *path, u32 snap, u8 **out, u64 *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret;
	struct vdimg_image img;
	u64 off = 0;
	u8 *buf;

	*out = NULL;
	if (fd < 0)
		return -errno;
	memset(&img, 0, sizeof(img));
	img.file = vdimg_file_from_fd(fd);
	img.name = path;
	img.snapshot = snap;
	ret = vdimg_image_open(&img, VDIMG_FMT_QCOW2, VDIMG_OPEN_READ_ONLY);
	if (ret)
		goto out_file;
	*size = img.size;
	buf = calloc(1, img.size);
	while (!ret && off < img.size) {
		struct vdimg_extent ext;

		ret = img.fmt->map(&img, off, img.size - off, 0, &ext);
		if (ret)
			break;
		if (ext.type == VDIMG_EXT_DATA)
			ret = vdimg_file_read(ext.file, buf + off, ext.length, ext.file_offset);
		else if (ext.type == VDIMG_EXT_ENCODED)
			ret = img.fmt->read_encoded(&img, &ext, buf + off);
		off += ext.length;
	}
	if (ret)
		free(buf);
	else
		*out = buf;
	vdimg_image_close(&img);
out_file:
	vdimg_file_free(img.file);
	close(fd);
	return ret;
}

/* Does snapshot @snap of @path read like qemu's raw file @want? */
static bool snap_matches(const char *path, u32 snap, const char *want, const char *tag)
{
	size_t len;
	u8 *w = slurp(want, &len), *got = NULL;
	u64 size = 0;
	bool same;
	int ret = snap_read_all(path, snap, &got, &size);

	/*
	 * qemu-img convert -l gives a snapshot at the current disk size; the snapshot's own size
	 * (what we report) may be smaller: the rest must be zeros there
	 */
	same = !ret && w && size <= len && !memcmp(w, got, size);
	while (same && size < len)
		same = !w[size++];
	if (!same)
		printf("# %s: snapshot %u: ret %d, size %llu vs %zu\n", tag, snap, ret,
		       (unsigned long long)size, len);
	free(w);
	free(got);
	return same;
}

/*
 * An image with two internal snapshots at different data states (s1, s2), and the current state
 * after more writes; the raw views qemu gives of each in s1.raw, s2.raw, cur.raw.
 */
static int make_snap_image(const char *img, const char *opts, bool resize)
{
	return sh("qemu-img create -q -f qcow2 -o %s '%s' 16M"
		  " && qemu-io -f qcow2 -c 'write -P 0x11 0 3m' -c 'write -P 0x12 5m 100k' -c 'write -z 8m 1m' -c 'write -P 0x13 15m 1m' '%s' >/dev/null"
		  " && qemu-img snapshot -c s1 '%s'"
		  " && qemu-io -f qcow2 -c 'write -P 0x21 1m 40k' -c 'write -P 0x22 4m 2m' -c 'discard 15m 512k' -c 'write -P 0x23 8m 4k' '%s' >/dev/null"
		  " && qemu-img snapshot -c s2 '%s'"
		  " && qemu-io -f qcow2 -c 'write -P 0x31 2m 1m' -c 'write -z 4m 64k' -c 'write -P 0x32 12m 7k' '%s' >/dev/null"
		  "%s%s%s"
		  " && qemu-img convert -l snapshot.name=s1 -O raw '%s' '%s'"
		  " && qemu-img convert -l snapshot.name=s2 -O raw '%s' '%s'"
		  " && qemu-img convert -O raw '%s' '%s'",
		  opts, img, img, img, img, img, img,
		  resize ? " && qemu-img resize -q '" : "", resize ? img : "", resize ? "' 20M" : "",
		  img, tp("s1.raw"), img, tp("s2.raw"), img, tp("cur.raw"));
}

static void describe_emit(void *ctx, const char *key, const char *value)
{
	char *out = ctx;
	size_t n = strlen(out);

	snprintf(out + n, 8192 - n, "%s: %s\n", key, value);
}

static void test_snapshots_read(void)
{
	static const char *const cfgs[] = {
		"compat=1.1", "compat=0.10,cluster_size=4096", "extended_l2=on,cluster_size=16384",
	};
	const char *p = tp("snap.qcow2");
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfgs); i++) {
		if (!ok(make_snap_image(p, cfgs[i], i == 0) == 0, "qemu made %s with snapshots s1, s2",
			cfgs[i]))
			continue;
		if (i == 0) {
			u8 *b = NULL;
			u64 sz = 0;

			snap_read_all(p, 1, &b, &sz);
			ok(sz == 16 * MiB, "snapshot 1 reports its own disk size 16M, not 20M (%llu)",
			   (unsigned long long)sz);
			free(b);
		}
		ok(snap_matches(p, 1, tp("s1.raw"), cfgs[i]),
		   "%s: snapshot 1 == qemu-img convert -l snapshot.name=s1%s", cfgs[i],
		   i == 0 ? " (16M before a resize to 20M)" : "");
		ok(snap_matches(p, 2, tp("s2.raw"), cfgs[i]),
		   "%s: snapshot 2 == qemu-img convert -l snapshot.name=s2", cfgs[i]);
		ok(snap_matches(p, 0, tp("cur.raw"), cfgs[i]), "%s: current state == qemu-img convert",
		   cfgs[i]);
	}
	/* find_snapshot, describe, out of range */
	{
		struct vdimg_chain *c;
		const char *pp[1] = { p };
		bool qc[1] = { true };
		u32 idx = 0;
		char *out = calloc(1, 8192);
		u8 *buf = NULL;
		u64 size;
		int ret;

		sh("qemu-img snapshot -c 1 '%s'", p);	/* a name that is another's ID */
		if (open_chain(&c, pp, qc, 1, true)) {
			ok(false, "open image with snapshots");
			free(out);
			return;
		}
		ret = vdimg_qcow2_tool_ops.find_snapshot(vdimg_chain_top(c), "s2", &idx);
		ok(!ret && idx == 2, "find_snapshot by name s2 -> 2 (%d, %u)", ret, idx);
		ret = vdimg_qcow2_tool_ops.find_snapshot(vdimg_chain_top(c), "1", &idx);
		ok(!ret && idx == 1, "find_snapshot '1': the ID wins over a snapshot named '1' (%u)", idx);
		ret = vdimg_qcow2_tool_ops.find_snapshot(vdimg_chain_top(c), "3", &idx);
		ok(!ret && idx == 3, "find_snapshot by ID 3 -> 3 (%u)", idx);
		ok(vdimg_qcow2_tool_ops.find_snapshot(vdimg_chain_top(c), "nope", &idx) == -ENOENT,
		   "find_snapshot of an unknown name: -ENOENT");
		vdimg_qcow2_tool_ops.describe(vdimg_chain_top(c), describe_emit, out);
		ok(strstr(out, "snapshots: 3") && strstr(out, "id=1 name=s1 size=") &&
		   strstr(out, "id=2 name=s2 size=") && strstr(out, "date=20"),
		   "describe lists the snapshots with ID, name, size, date");
		close_chain(c, 1);
		free(out);
		ret = snap_read_all(p, 4, &buf, &size);
		ok(ret == -ENOENT && strstr(ktap_last_msg, "no internal snapshot 4"),
		   "snapshot 4 of 3: -ENOENT with a message (%d: %s)", ret, ktap_last_msg);
		free(buf);
	}
}

/* Writes on an image with snapshots: snapshots unchanged, qemu-img check clean, active == shadow */
static void test_snapshots_write(void)
{
	static const char *const cfgs[] = {
		"compat=1.1,cluster_size=4096", "compat=0.10", "extended_l2=on,cluster_size=16384",
		"cluster_size=512,refcount_bits=4",
	};
	const char *p[1] = { tp("sw.qcow2") };
	bool qc[1] = { true };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfgs); i++) {
		const u64 size = 16 * MiB;
		struct vdimg_chain *c;
		size_t len;
		u8 *shadow, *got;
		int ret;

		if (!ok(make_snap_image(p[0], cfgs[i], false) == 0, "COW: %s image with 2 snapshots",
			cfgs[i]))
			continue;
		shadow = slurp(tp("cur.raw"), &len);
		if (!shadow || len != size || open_chain(&c, p, qc, 1, false)) {
			ok(false, "COW %s: open writable", cfgs[i]);
			free(shadow);
			continue;
		}
		rnd_state = 1234 + i;
		ret = workload(c, shadow, size, 300, 500 + i, 300);
		ok_err(ret, 0, "COW %s: 300 random writes/discards/zeroes", cfgs[i]);
		got = malloc(size);
		ok(!vdimg_chain_pread(c, got, size, 0) && !memcmp(got, shadow, size),
		   "COW %s: reads back the shadow before close", cfgs[i]);
		free(got);
		close_chain(c, 1);
		close(tfile("swshadow.raw", shadow, size));
		free(shadow);
		ok(sh("qemu-img check -q '%s'", p[0]) == 0,
		   "COW %s: qemu-img check: no errors, no leaks", cfgs[i]);
		ok(sh("qemu-img compare -q '%s' '%s'", tp("swshadow.raw"), p[0]) == 0,
		   "COW %s: current state == shadow (qemu-img compare)", cfgs[i]);
		ok(sh("qemu-img convert -l snapshot.name=s1 -O raw '%s' '%s' && cmp -s '%s' '%s'"
		      " && qemu-img convert -l snapshot.name=s2 -O raw '%s' '%s' && cmp -s '%s' '%s'",
		      p[0], tp("x.raw"), tp("x.raw"), tp("s1.raw"),
		      p[0], tp("x.raw"), tp("x.raw"), tp("s2.raw")) == 0,
		   "COW %s: snapshots s1 and s2 unchanged (qemu-img convert -l)", cfgs[i]);
		ok(sh("cp '%s' '%s' && qemu-img snapshot -a s1 '%s' && qemu-img compare -q '%s' '%s'"
		      " && qemu-img snapshot -a s2 '%s' && qemu-img compare -q '%s' '%s'",
		      p[0], tp("apply.qcow2"), tp("apply.qcow2"), tp("s1.raw"), tp("apply.qcow2"),
		      tp("apply.qcow2"), tp("s2.raw"), tp("apply.qcow2")) == 0,
		   "COW %s: qemu-img snapshot -a s1 / s2 give their original data", cfgs[i]);
		ok(snap_matches(p[0], 1, tp("s1.raw"), cfgs[i]) &&
		   snap_matches(p[0], 2, tp("s2.raw"), cfgs[i]),
		   "COW %s: our snapshot reader agrees after the writes", cfgs[i]);
	}
}

/* ---- external data files ---- */

static void test_data_file(void)
{
	static const char *const cfgs[] = {
		"data_file_raw=off", "data_file_raw=on", "data_file_raw=off,extended_l2=on",
		"data_file_raw=off,cluster_size=4096",
	};
	const char *p[1] = { tp("df.qcow2") };
	bool qc[1] = { true };
	const u64 size = 16 * MiB;
	struct vdimg_chain *c;
	char cwd[4096];
	size_t i;
	int ret;

	/* qemu finds a relative data file name from its cwd */
	if (!getcwd(cwd, sizeof(cwd)) || chdir(ktap_dir)) {
		ok(false, "data file: chdir");
		return;
	}
	for (i = 0; i < ARRAY_SIZE(cfgs); i++) {
		size_t len;
		u8 *shadow;

		unlink(tp("df.data"));
		/*
		 * qemu opens a relative data file name relative to its cwd, we relative to the
		 * image's directory: from the image's directory both agree
		 */
		ret = sh("cd '%s' && qemu-img create -q -f qcow2 -o data_file=df.data,%s df.qcow2 16M"
			 " && qemu-io -f qcow2 %s df.qcow2 >/dev/null && qemu-img convert -O raw df.qcow2 dfref.raw",
			 ktap_dir, cfgs[i], fill_cmds);
		if (!ok(ret == 0, "qemu made a data-file image (%s)", cfgs[i]))
			continue;
		ok(chain_matches_qemu(p, qc, 1, cfgs[i]), "data file %s: reads == qemu-img convert",
		   cfgs[i]);
		shadow = slurp(tp("dfref.raw"), &len);
		if (!shadow || len != size || open_chain(&c, p, qc, 1, false)) {
			ok(false, "data file %s: open writable (%s)", cfgs[i], ktap_last_msg);
			free(shadow);
			continue;
		}
		rnd_state = 777 + i;
		ret = workload(c, shadow, size, 200, 900 + i, 300);
		ok_err(ret, 0, "data file %s: 200 random writes/discards/zeroes", cfgs[i]);
		close_chain(c, 1);
		close(tfile("dfshadow.raw", shadow, size));
		free(shadow);
		ok(sh("qemu-img check -q '%s'", p[0]) == 0, "data file %s: qemu-img check clean",
		   cfgs[i]);
		ok(sh("qemu-img compare -q '%s' '%s'", tp("dfshadow.raw"), p[0]) == 0,
		   "data file %s: qemu-img compare with the shadow", cfgs[i]);
		if (strstr(cfgs[i], "raw=on"))
			ok(sh("cmp -s '%s' '%s'", tp("dfshadow.raw"), tp("df.data")) == 0,
			   "data file raw: the data file alone reads as the disk");
	}
	/* the data file missing */
	sh("mv '%s' '%s'", tp("df.data"), tp("df.moved"));
	ret = open_chain(&c, p, qc, 1, false);
	ok(ret == -ENOENT && strstr(ktap_last_msg, "df.data"),
	   "missing data file: -ENOENT naming it (%d: %s)", ret, ktap_last_msg);
	if (!ret)
		close_chain(c, 1);
	/* our create with data_file= */
	{
		char opt[600];
		struct vdimg_create_opts o = { .size = 8 * MiB, .options = opt };
		int fd = tfile("mydf.qcow2", NULL, 0);
		struct vdimg_file *f = vdimg_file_from_fd(fd);

		snprintf(opt, sizeof(opt), "data_file=%s,data_file_raw=on", tp("mydf.data"));
		ret = vdimg_qcow2_tool_ops.create(f, &o);
		vdimg_file_free(f);
		close(fd);
		ok(!ret && sh("qemu-img check -q '%s' && qemu-io -f qcow2 -c 'write -P 0x42 1m 3m' '%s' >/dev/null"
			      " && qemu-img check -q '%s' && qemu-io -f raw -c 'read -P 0x42 1m 3m' '%s' >/dev/null",
			      tp("mydf.qcow2"), tp("mydf.qcow2"), tp("mydf.qcow2"), tp("mydf.data")) == 0,
		   "our create -o data_file=,data_file_raw=on: qemu checks and writes it (%d)", ret);
	}
	if (chdir(cwd))
		ok(false, "data file: chdir back");
}

/* ---- set_parent ---- */

static void test_set_parent(void)
{
	const char *b1 = tp("sp1.raw"), *b2 = tp("sp2.qcow2"), *top = tp("sptop.qcow2");
	const char *pp[2] = { b2, top };
	bool qc[2] = { true, true };
	struct vdimg_chain *c, *pc;
	char info[8192] = "", longname[700];
	int fd, ret;

	ret = sh("qemu-img create -q -f raw '%s' 8M && qemu-io -f raw -c 'write -P 0xa1 0 8m' '%s' >/dev/null"
		 " && qemu-img create -q -f qcow2 '%s' 8M && qemu-io -f qcow2 -c 'write -P 0xb2 1m 2m' '%s' >/dev/null"
		 " && qemu-img create -q -f qcow2 -b '%s' -F raw '%s' && qemu-io -f qcow2 -c 'write -P 0xc3 2m 64k' '%s' >/dev/null",
		 b1, b1, b2, b2, b1, top, top);
	if (!ok(ret == 0, "set_parent: qemu made raw base, qcow2 base, qcow2 top"))
		return;
	fd = open(top, O_RDWR | O_CLOEXEC);
	ret = vdimg_chain_open_ops(&c, &fd, &top, 1, (const struct vdimg_format *const[]){
				   &vdimg_qcow2_format }, VDIMG_CHAIN_ORPHAN_OK);
	if (!ok_err(ret, 0, "open the top alone, writable"))
		return;
	if (open_chain(&pc, &b2, qc, 1, true)) {
		vdimg_chain_close(c);
		close(fd);
		return;
	}
	ret = vdimg_qcow2_tool_ops.set_parent(vdimg_chain_top(c), b2, vdimg_chain_top(pc));
	ok_err(ret, 0, "set_parent to the qcow2 base");
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	vdimg_chain_close(c);
	close(fd);
	close_chain(pc, 1);
	sh("qemu-img info '%s' > '%s'", top, tp("info.txt"));
	{
		size_t len;
		char *t = (char *)slurp(tp("info.txt"), &len);

		if (t)
			snprintf(info, sizeof(info), "%.*s", (int)len, t);
		free(t);
	}
	ok(strstr(info, b2) && strstr(info, "backing file format: qcow2"),
	   "qemu-img info shows the new backing file and format");
	ok(sh("qemu-img check -q '%s'", top) == 0, "set_parent: qemu-img check clean");
	ok(chain_matches_qemu(pp, qc, 2, "rebased"), "the new chain reads like qemu-img convert");
	/* no room: a 512-byte header cluster */
	sh("qemu-img create -q -f qcow2 -o cluster_size=512 -b '%s' -F raw '%s'", b1, tp("small.qcow2"));
	{
		const char *sp = tp("small.qcow2");

		fd = open(sp, O_RDWR | O_CLOEXEC);
		ret = vdimg_chain_open_ops(&c, &fd, &sp, 1, (const struct vdimg_format *const[]){
					   &vdimg_qcow2_format }, VDIMG_CHAIN_ORPHAN_OK);
		if (!ret) {
			ret = vdimg_qcow2_tool_ops.set_parent(vdimg_chain_top(c), longname, NULL);
			ok(ret == -ENOSPC, "a 699-byte name in a 512-byte header cluster: -ENOSPC (%d)",
			   ret);
			vdimg_chain_close(c);
		}
		close(fd);
		ok(sh("qemu-img check -q '%s' && qemu-img info '%s' | grep -q 'backing file: %s'",
		      sp, sp, b1) == 0, "after -ENOSPC the image is unchanged");
	}
	/* remove the backing file */
	fd = open(top, O_RDWR | O_CLOEXEC);
	ret = vdimg_chain_open_ops(&c, &fd, &top, 1, (const struct vdimg_format *const[]){
				   &vdimg_qcow2_format }, VDIMG_CHAIN_ORPHAN_OK);
	if (!ret) {
		ret = vdimg_qcow2_tool_ops.set_parent(vdimg_chain_top(c), NULL, NULL);
		ok_err(ret, 0, "set_parent(NULL): drop the backing file");
		vdimg_chain_close(c);
	}
	close(fd);
	ok(sh("qemu-img check -q '%s' && ! qemu-img info '%s' | grep -q 'backing file'", top, top) == 0,
	   "qemu-img info shows no backing file, check clean");
	ok(chain_matches_qemu(&top, qc, 1, "unbased"), "the lone image reads like qemu-img convert");
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
	test_libqcow();
	test_write_compressed();
	test_create();
	test_check_repair();
	test_refuse();
	test_snapshots_read();
	test_snapshots_write();
	test_data_file();
	test_set_parent();
	test_crash("cluster_size=4096", false, false);
	test_crash("compat=1.1,cluster_size=4096,extended_l2=off", true, false);
	test_crash("extended_l2=on,cluster_size=16384,refcount_bits=1", false, false);
	test_crash("cluster_size=4096", false, true);
	test_crash("extended_l2=on,cluster_size=16384", false, true);
	return ktap_finish();
}
