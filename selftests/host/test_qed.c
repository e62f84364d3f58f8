// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the QED backend (backends/qed/) against qemu: images made by qemu-img (several
 * cluster and table sizes, with and without a raw or qcow2 backing file) filled by qemu-io read back
 * through libvdimg byte for byte as `qemu-img convert -O raw` does; random writes, discards and
 * write-zeroes through libvdimg compared with a raw shadow, then `qemu-img check -f qed` (no errors,
 * no leaks) and `qemu-img compare`; images made by our create accepted by qemu; NEED_CHECK images
 * (read leniently read-only, repaired on a writable open); and write cuts: for every N the workload
 * stops after N writes, and the image must pass `qemu-img check` (leaks allowed) with flushed data
 * intact. Skips (exit 4) when qemu-img is missing. KTAP on stdout.
 */
#include <sys/wait.h>
#include "format_test.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

/* QED layers (qed[i]) use our backend, the others the registry */
static int open_chain(struct vdimg_chain **c, const char *const *paths, const bool *qed, int n,
		      bool ro)
{
	return open_chain_with(c, paths, n, &vdimg_qed_format, qed, ro, 0);
}

static bool chain_matches_qemu(const char *const *paths, const bool *qed, int n, const char *tag)
{
	return chain_matches_qemu_with(paths, n, &vdimg_qed_format, qed, tag);
}

/* qemu-io commands straddling clusters of every size, and zero clusters */
static const char *const fill_cmds =
	"-c 'write -P 0x11 0 4k' -c 'write -P 0x22 60k 8k' -c 'write -P 0x33 1000k 100k' "
	"-c 'write -P 0x44 2047k 2k' -c 'write -P 0x55 3m 1536k' -c 'write -z 3200k 64k' "
	"-c 'write -P 0x66 6143k 3k' -c 'write -P 0x77 8000k 513k' -c 'write -z 9m 1m' "
	"-c 'write -P 0x88 12345k 1k' -c 'write -P 0x99 16380k 4k'";

static const char *const cfgs[] = {
	"cluster_size=4096,table_size=2",
	"cluster_size=4096,table_size=16",
	"cluster_size=65536",
	"cluster_size=16384,table_size=2",
	"cluster_size=1048576,table_size=2",
};

static void test_qemu_images(void)
{
	const char *p[1] = { tp("q.qed") };
	bool qd[1] = { true };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfgs); i++) {
		int r = sh("qemu-img create -q -f qed -o %s '%s' 16M && qemu-io -f qed %s '%s' >/dev/null",
			   cfgs[i], p[0], fill_cmds, p[0]);

		if (!ok(r == 0, "qemu made image %s", cfgs[i]))
			continue;
		ok(chain_matches_qemu(p, qd, 1, cfgs[i]), "read %s == qemu-img convert", cfgs[i]);
	}
}

static void test_backing(void)
{
	const char *p[3] = { tp("base.raw"), tp("mid.qed"), tp("top.qed") };
	const char *q2[2] = { tp("base.qcow2"), tp("over.qed") };
	bool qd[3] = { false, true, true };
	struct vdimg_parent_ref ref;
	struct vdimg_chain *c;
	int r;

	r = sh("qemu-img create -q -f raw '%s' 16M && qemu-io -f raw -c 'write -P 0xab 0 16m' '%s' >/dev/null"
	       " && qemu-img create -q -f qed -b '%s' -F raw '%s'"
	       " && qemu-io -f qed -c 'write -P 0x01 100k 300k' -c 'write -z 1m 1m' '%s' >/dev/null"
	       " && qemu-img create -q -f qed -o cluster_size=4096,table_size=2 -b '%s' -F qed '%s'"
	       " && qemu-io -f qed -c 'write -P 0x02 1030k 3k' -c 'write -P 0x03 5m 9k' -c 'write -z 200k 32k' '%s' >/dev/null",
	       p[0], p[0], p[0], p[1], p[1], p[1], p[2], p[2]);
	if (!ok(r == 0, "qemu made a raw <- qed <- qed chain"))
		return;
	ok(chain_matches_qemu(p, qd, 3, "chain"), "read chain == qemu-img convert");
	if (!open_chain(&c, p, qd, 3, true)) {
		r = vdimg_qed_tool_ops.parent_ref(c->layers[1], &ref);
		ok(!r && ref.format == VDIMG_FMT_RAW && !strcmp(ref.path, p[0]),
		   "parent_ref: no-probe backing file reported as raw (%s)", ref.path);
		r = vdimg_qed_tool_ops.parent_ref(c->layers[2], &ref);
		ok(!r && ref.format == 0 && !strcmp(ref.path, p[1]),
		   "parent_ref: probed backing file without a format");
		close_chain(c, 3);
	}
	r = sh("qemu-img create -q -f qcow2 '%s' 8M && qemu-io -f qcow2 -c 'write -P 0x5c 0 8m' '%s' >/dev/null"
	       " && qemu-img create -q -f qed -b '%s' -F qcow2 '%s' 12M"
	       " && qemu-io -f qed -c 'write -P 0x06 7m 2m' '%s' >/dev/null",
	       q2[0], q2[0], q2[0], q2[1], q2[1]);
	if (ok(r == 0, "qemu made a qcow2 <- qed chain, backing file smaller than the overlay")) {
		bool qq[2] = { false, true };

		ok(chain_matches_qemu(q2, qq, 2, "qcow2 base"), "read qcow2 <- qed == qemu-img convert");
	}
}

/* ---- writes through libvdimg ---- */

static void test_writes(void)
{
	const u64 size = 24 * MiB;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfgs) * 2; i++) {
		const char *cfg = cfgs[i % ARRAY_SIZE(cfgs)];
		bool backing = i >= ARRAY_SIZE(cfgs);
		const char *p[2] = { tp("wbase.raw"), tp("w.qed") };
		bool qd[2] = { false, true };
		struct vdimg_chain *c;
		u8 *shadow = calloc(1, size), *got;
		int ret, n = backing ? 2 : 1;
		const char *const *pp = backing ? p : p + 1;
		const bool *qq = backing ? qd : qd + 1;

		if (backing) {
			fill_pat(shadow, size, 99, 0);
			close(tfile("wbase.raw", shadow, size));
			ret = sh("qemu-img create -q -f qed -o %s -b '%s' -F raw '%s'", cfg, p[0], p[1]);
		} else {
			ret = sh("qemu-img create -q -f qed -o %s '%s' %llu", cfg, p[1],
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
		got = malloc(size);
		ok(!vdimg_chain_pread(c, got, size, 0) && !memcmp(got, shadow, size),
		   "%s%s: reads back the shadow before close", cfg, backing ? " (backing)" : "");
		free(got);
		close_chain(c, n);
		close(tfile("shadow.raw", shadow, size));
		ok(sh("qemu-img check -q -f qed '%s'", p[1]) == 0,
		   "%s%s: qemu-img check: no errors, no leaks", cfg, backing ? " (backing)" : "");
		ok(sh("qemu-img compare -q -f raw -F qed '%s' '%s'", tp("shadow.raw"), p[1]) == 0,
		   "%s%s: qemu-img compare with the shadow", cfg, backing ? " (backing)" : "");
		free(shadow);
	}
}

static void test_create(void)
{
	static const char *const opts[] = {
		NULL, "cluster_size=4096,table_size=2", "cluster_size=16384,table_size=16",
		"cluster_size=4194304,table_size=2",
	};
	struct vdimg_check_result res;
	struct vdimg_chain *c;
	const char *p[2] = { tp("cbase.raw"), tp("mine.qed") };
	bool qd[2] = { false, true };
	size_t i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(opts); i++) {
		struct vdimg_create_opts o = { .size = 64 * MiB, .options = opts[i] };
		int fd = tfile("mine.qed", NULL, 0);
		struct vdimg_file *f = vdimg_file_from_fd(fd);

		ret = vdimg_qed_tool_ops.create(f, &o);
		vdimg_file_free(f);
		close(fd);
		if (!ok_err(ret, 0, "create -o %s", opts[i] ? opts[i] : "(defaults)"))
			continue;
		ok(sh("qemu-img check -q -f qed '%s'", p[1]) == 0 &&
		   sh("qemu-io -f qed -c 'write -P 0x42 1m 3m' -c 'read -P 0x42 1m 3m' '%s' >/dev/null",
		      p[1]) == 0 &&
		   sh("qemu-img check -q -f qed '%s'", p[1]) == 0,
		   "qemu accepts, writes and checks our image (%s)", opts[i] ? opts[i] : "defaults");
	}
	/* with a raw backing file: no-probe, and qemu reads through it */
	{
		u8 *base = malloc(4 * MiB);
		struct vdimg_image bimg = { .fmt = &vdimg_raw_format, .name = "base" };
		struct vdimg_create_opts o = { .size = 8 * MiB, .parent = p[0], .parent_img = &bimg,
					       .options = "cluster_size=4096" };
		int fd;
		struct vdimg_file *f;

		fill_pat(base, 4 * MiB, 17, 0);
		close(tfile("cbase.raw", base, 4 * MiB));
		free(base);
		fd = tfile("mine.qed", NULL, 0);
		f = vdimg_file_from_fd(fd);
		ret = vdimg_qed_tool_ops.create(f, &o);
		vdimg_file_free(f);
		close(fd);
		ok_err(ret, 0, "create with a raw backing file");
		ok(sh("qemu-img info '%s' | grep -q 'backing file format: raw'", p[1]) == 0 ||
		   sh("qemu-img info '%s' | grep -q 'backing file: '", p[1]) == 0,
		   "qemu sees the backing file");
		if (!open_chain(&c, p, qd, 2, false)) {
			u8 buf[6000];

			fill_pat(buf, sizeof(buf), 3, 0);
			ret = vdimg_chain_pwrite(c, buf, sizeof(buf), 4 * MiB - 3000);
			close_chain(c, 2);
			ok_err(ret, 0, "write across the end of the backing file");
			ok(chain_matches_qemu(p, qd, 2, "created"), "created overlay reads like qemu");
			ok(sh("qemu-img check -q -f qed '%s'", p[1]) == 0, "created overlay: qemu-img check clean");
		}
		if (!open_chain(&c, p + 1, qd + 1, 1, true)) {
			ret = vdimg_qed_tool_ops.check(vdimg_chain_top(c), 0, &res);
			ok(!ret && !res.errors && !res.leaks, "our check: clean (%llu errors, %llu leaks)",
			   (unsigned long long)res.errors, (unsigned long long)res.leaks);
			vdimg_chain_close(c);
		}
	}
	{
		struct vdimg_create_opts o = { .size = MiB, .options = "cluster_size=2048" };
		int fd = tfile("bad.qed", NULL, 0);
		struct vdimg_file *f = vdimg_file_from_fd(fd);

		ok_err(vdimg_qed_tool_ops.create(f, &o), -EINVAL, "create refuses cluster_size=2048");
		o.options = "table_size=3";
		ok_err(vdimg_qed_tool_ops.create(f, &o), -EINVAL, "create refuses table_size=3");
		o.options = "cluster_size=4096,table_size=2";
		o.size = 8192 * MiB;
		ok_err(vdimg_qed_tool_ops.create(f, &o), -EFBIG, "create refuses a size the tables cannot map");
		vdimg_file_free(f);
		close(fd);
	}
}

/* Patch @len little-endian bytes of @v at @off of @path. */
static void poke(const char *path, u64 off, u64 v, int len)
{
	int fd = open(path, O_RDWR);
	u64 le = htole64(v);

	if (fd < 0 || pwrite(fd, &le, len, off) != len)
		printf("# poke %s failed\n", path);
	close(fd);
}

static u64 peek(const char *path, u64 off)
{
	int fd = open(path, O_RDONLY);
	u64 le = 0;

	if (fd < 0 || pread(fd, &le, 8, off) != 8)
		printf("# peek %s failed\n", path);
	close(fd);
	return le64toh(le);
}

/* NEED_CHECK: read leniently read-only, scanned, repaired and cleared on a writable open. */
static void test_need_check(void)
{
	const char *p[1] = { tp("nc.qed") };
	bool qd[1] = { true };
	struct vdimg_check_result res;
	struct vdimg_chain *c;
	u64 l1, l2;
	u8 *buf = malloc(64 * KiB);
	int ret;

	ret = sh("qemu-img create -q -f qed -o cluster_size=4096,table_size=2 '%s' 4M && "
		 "qemu-io -f qed -c 'write -P 0x31 0 16k' '%s' >/dev/null", p[0], p[0]);
	if (!ok(ret == 0, "need-check image made by qemu"))
		goto out;
	/* entry 5 (unallocated) of the first L2 table points far past the end of the file */
	l1 = peek(p[0], 4096);
	l2 = l1 ? l1 + 5 * 8 : 0;
	poke(p[0], l2, 1ULL << 40, 8);
	poke(p[0], 16, 2, 8);		/* features = NEED_CHECK */
	ret = open_chain(&c, p, qd, 1, true);
	if (ok_err(ret, 0, "read-only open of a NEED_CHECK image")) {
		ret = vdimg_chain_pread(c, buf, 24 * KiB, 0);
		ok(!ret && is_byte(buf, 16 * KiB, 0x31) && is_byte(buf + 20 * KiB, 4 * KiB, 0),
		   "the bad entry reads as unallocated, the others as written");
		ret = vdimg_qed_tool_ops.check(vdimg_chain_top(c), 0, &res);
		ok(!ret && res.errors == 1, "our check finds the bad entry (%llu errors)",
		   (unsigned long long)res.errors);
		close_chain(c, 1);
	}
	ret = open_chain(&c, p, qd, 1, false);
	if (ok_err(ret, 0, "writable open repairs the NEED_CHECK image")) {
		ret = vdimg_chain_pread(c, buf, 24 * KiB, 0);
		ok(!ret && is_byte(buf + 20 * KiB, 4 * KiB, 0), "repaired entry reads as zeros");
		close_chain(c, 1);
	}
	ok(peek(p[0], 16) == 0 && peek(p[0], l2) == 0, "NEED_CHECK cleared, bad entry dropped");
	ok(sh("qemu-img check -q -f qed '%s'", p[0]) == 0, "qemu-img check clean after the repair");
	/* without NEED_CHECK the same damage is corruption */
	poke(p[0], l2, 1ULL << 40, 8);
	ret = open_chain(&c, p, qd, 1, true);
	if (!ret) {
		ret = vdimg_chain_pread(c, buf, 24 * KiB, 0);
		ok(ret == -EUCLEAN, "a bad entry in a clean image is corruption (%d)", ret);
		close_chain(c, 1);
	}
	/* an unknown feature bit is refused by value */
	poke(p[0], 16, 0x10, 8);
	ret = open_chain(&c, p, qd, 1, true);
	ok(ret == -EOPNOTSUPP && strstr(ktap_last_msg, "0x10"), "unknown feature bit refused (%s)",
	   ktap_last_msg);
	if (!ret)
		close_chain(c, 1);
out:
	free(buf);
}

/* Our check finds leaks left by a cut, and --repair trims them. */
static void test_check_repair(void)
{
	const char *p[1] = { tp("leak.qed") };
	bool qd[1] = { true };
	struct vdimg_chain *c;
	struct vdimg_check_result res;
	u8 buf[64 * KiB];
	int ret;

	sh("qemu-img create -q -f qed -o cluster_size=4096,table_size=2 '%s' 8M", p[0]);
	if (open_chain(&c, p, qd, 1, false))
		return;
	fill_pat(buf, sizeof(buf), 3, 0);
	vdimg_chain_pwrite(c, buf, sizeof(buf), 0);
	vdimg_chain_flush(c);
	/*
	 * the new L2 table page and the data (one write: the 16 clusters are one run) reach the
	 * disk, the L2 entries do not
	 */
	vdimg_write_budget = 2;
	vdimg_chain_pwrite(c, buf, sizeof(buf), 4 * MiB);
	vdimg_chain_flush(c);
	vdimg_chain_close(c);
	vdimg_write_budget = -1;
	ret = sh("qemu-img check -q -f qed '%s' >/dev/null 2>&1", p[0]);
	ok(ret == 3, "cut image: qemu-img check finds leaks, no corruption (exit %d)", ret);
	if (open_chain(&c, p, qd, 1, false))
		return;
	ret = vdimg_qed_tool_ops.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && res.leaks, "our check: %llu errors, %llu leaks",
	   (unsigned long long)res.errors, (unsigned long long)res.leaks);
	ret = vdimg_qed_tool_ops.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
	ok_err(ret, 0, "our check --repair");
	vdimg_chain_close(c);
	ok(sh("qemu-img check -q -f qed '%s'", p[0]) == 0, "after repair qemu-img check is clean");
	ok(sh("qemu-io -f qed -c 'read -P 0 4m 64k' '%s' >/dev/null", p[0]) == 0,
	   "after repair the cut range reads as zeros");
}

/* Crash safety: every write-cut point of a workload leaves an image qemu accepts. */
static void test_crash(const char *cfg, bool backing)
{
	const u64 size = 8 * MiB;
	const char *p[2] = { tp("cbase.raw"), tp("crash.qed") };
	bool qd[2] = { false, true };
	const char *const *pp = backing ? p : p + 1;
	const bool *qq = backing ? qd : qd + 1;
	int n = backing ? 2 : 1, bad = 0, lost = 0, bad2 = 0, cut;
	long long total;
	u8 *shadow = calloc(1, size), *flushed = malloc(size), *got = malloc(size);
	struct vdimg_chain *c;

	if (backing) {
		fill_pat(shadow, size, 5, 0);
		close(tfile("cbase.raw", shadow, size));
		sh("qemu-img create -q -f qed -o %s -b '%s' -F raw '%s'", cfg, p[0], tp("pristine"));
	} else {
		sh("qemu-img create -q -f qed -o %s '%s' %llu", cfg, tp("pristine"),
		   (unsigned long long)size);
	}
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
		ret = workload(c, base, size, 8, 1, 40);
		if (!ret)
			ret = vdimg_chain_flush(c);
		memcpy(flushed, base, size);
		if (!ret)
			workload(c, base, size, 8, 1 + 8, 40);
		vdimg_chain_close(c);
		vdimg_write_budget = -1;
		i = sh("qemu-img check -q -f qed '%s' >/dev/null 2>&1", p[1]);
		if (i != 0 && i != 3) {
			bad++;
			if (bad < 4)
				printf("# cut %d: qemu-img check exit %d\n", cut, i);
		}
		/* read-only (lenient if NEED_CHECK), then writable (scan and clear) */
		for (i = 0; i < 2 && !ret; i++) {
			struct vdimg_chain *r = NULL;
			u64 j;

			if (open_chain(&r, pp, qq, n, i == 0) || vdimg_chain_pread(r, got, size, 0)) {
				lost++;
			} else {
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
		if (!ret && (peek(p[1], 16) & 2))
			bad2++;
		i = sh("qemu-img check -q -f qed '%s' >/dev/null 2>&1", p[1]);
		if (i != 0 && i != 3)
			bad2++;
		free(base);
	}
	ok(!bad, "crash %s%s: %lld cut points, qemu-img check never finds corruption (%d bad)",
	   cfg, backing ? " (backing)" : "", total + 1, bad);
	ok(!lost, "crash %s%s: flushed data survives every cut (%d lost)", cfg,
	   backing ? " (backing)" : "", lost);
	ok(!bad2, "crash %s%s: a writable reopen leaves NEED_CHECK clear and the image clean (%d bad)",
	   cfg, backing ? " (backing)" : "", bad2);
out:
	free(shadow);
	free(flushed);
	free(got);
}

/* ---- set_parent ---- */

static int open_alone(struct vdimg_chain **c, const char *path, int *fd)
{
	int ret;

	*fd = open(path, O_RDWR | O_CLOEXEC);
	ret = vdimg_chain_open_ops(c, fd, &path, 1, (const struct vdimg_format *const[]){
				   &vdimg_qed_format }, VDIMG_CHAIN_ORPHAN_OK);
	if (ret)
		close(*fd);
	return ret;
}

static void test_set_parent(void)
{
	const char *b1 = tp("sp1.raw"), *b2 = tp("sp2.raw"), *b3 = tp("sp3.qcow2"), *top = tp("sp.qed");
	const char *p2[2] = { b2, top }, *p3[2] = { b3, top };
	bool qd[2] = { false, true };
	struct vdimg_chain *c, *pc;
	char longname[5000];
	int fd, pfd, ret;

	ret = sh("qemu-img create -q -f raw '%s' 8M && qemu-io -f raw -c 'write -P 0xa1 0 8m' '%s' >/dev/null"
		 " && qemu-img create -q -f raw '%s' 8M && qemu-io -f raw -c 'write -P 0xa2 0 8m' '%s' >/dev/null"
		 " && qemu-img create -q -f qcow2 '%s' 8M && qemu-io -f qcow2 -c 'write -P 0xa3 1m 1m' '%s' >/dev/null"
		 " && qemu-img create -q -f qed -b '%s' -F raw '%s' && qemu-io -f qed -c 'write -P 0xc3 2m 64k' '%s' >/dev/null",
		 b1, b1, b2, b2, b3, b3, b1, top, top);
	if (!ok(ret == 0, "set_parent: qemu made two raw bases, a qcow2 base and a qed top"))
		return;
	/* to another raw file: the no-probe bit stays */
	if (!ok_err(open_alone(&c, top, &fd), 0, "open the qed top alone, writable"))
		return;
	pfd = open(b2, O_RDONLY | O_CLOEXEC);
	ret = vdimg_chain_open_fds(&pc, &pfd, &b2, 1, (const u32[]){ VDIMG_FMT_RAW },
				   VDIMG_CHAIN_READ_ONLY | VDIMG_CHAIN_ALLOW_RAW);
	if (!ret) {
		ret = vdimg_qed_tool_ops.set_parent(vdimg_chain_top(c), b2, vdimg_chain_top(pc));
		vdimg_chain_close(pc);
	}
	close(pfd);
	ok_err(ret, 0, "set_parent to another raw base");
	vdimg_chain_close(c);
	close(fd);
	ok(sh("qemu-img info '%s' | grep -q 'backing file: %s' && qemu-img info '%s' | grep -q 'backing file format: raw'"
	      " && qemu-img check -q '%s'", top, b2, top, top) == 0,
	   "qemu-img info shows the new raw backing file, check clean");
	ok(chain_matches_qemu(p2, qd, 2, "rebased raw"), "raw <- qed reads like qemu-img convert");
	/* to a qcow2 file: probed (no format bit) */
	if (!open_alone(&c, top, &fd)) {
		ret = vdimg_qed_tool_ops.set_parent(vdimg_chain_top(c), b3, NULL);
		ok_err(ret, 0, "set_parent to a qcow2 base");
		vdimg_chain_close(c);
		close(fd);
	}
	ok(sh("qemu-img info '%s' | grep -q 'backing file: %s' && qemu-img check -q '%s'", top, b3,
	      top) == 0, "qemu-img info shows the qcow2 backing file");
	ok(chain_matches_qemu(p3, (bool[]){ false, true }, 2, "rebased qcow2"),
	   "qcow2 <- qed reads like qemu-img convert");
	/* no room */
	memset(longname, 'y', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	if (!open_alone(&c, top, &fd)) {
		ret = vdimg_qed_tool_ops.set_parent(vdimg_chain_top(c), longname, NULL);
		ok(ret == -ENOSPC, "a 4999-byte name: -ENOSPC (%d)", ret);
		ret = vdimg_qed_tool_ops.set_parent(vdimg_chain_top(c), NULL, NULL);
		ok_err(ret, 0, "set_parent(NULL): drop the backing file");
		vdimg_chain_close(c);
		close(fd);
	}
	ok(sh("qemu-img check -q '%s' && ! qemu-img info '%s' | grep -q 'backing file'", top, top) == 0,
	   "qemu-img info shows no backing file, check clean");
	ok(chain_matches_qemu(&top, qd + 1, 1, "unbased"), "the lone qed reads like qemu-img convert");
}

int main(void)
{
	ktap_start();
	if (sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		skip("qemu-img/qemu-io not installed");
		return ktap_finish();
	}
	test_qemu_images();
	test_backing();
	test_writes();
	test_create();
	test_need_check();
	test_check_repair();
	test_set_parent();
	test_crash("cluster_size=4096,table_size=2", false);
	test_crash("cluster_size=16384,table_size=2", true);
	return ktap_finish();
}
