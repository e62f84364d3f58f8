// SPDX-License-Identifier: GPL-2.0
/*
 * Outside CI: the reordering crash model of reorder_crash.h over every writable format, through
 * the registry (images made by qemu-img create). Not a test_*.c, so check-host does not run it;
 * it reports, per format, how many crash images fail each check. Build and run:
 *
 *   make build/libvdimg-asan.a
 *   cc -std=gnu11 -O1 -g -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. -Iinclude -Itools/lib \
 *      -Iselftests/host -fsanitize=address,undefined -o build/host/reorder_survey \
 *      selftests/host/reorder_survey.c build/libvdimg-asan.a -lz -lzstd -lpthread
 *   build/host/reorder_survey [qemu-format...]	(default: vpc vdi vhdx qcow2 qed vmdk parallels)
 *
 * Checks at every cut and subset, as test_vhd's test_reorder(): read-only open, acknowledged data
 * reads back and nothing never written, read-write open, a write + flush + reread; and `qemu-img
 * check` (exit 0, 3 = leaks only, or 63 = no check for the format) on subsets 0 and 4.
 */
#include "format_test.h"
#include "reorder_crash.h"

#define MiB (1ULL << 20)
#define KiB 1024ULL

static const struct { u64 off, len; bool flush; } sw[] = {
	{ 0, 4096, false }, { 2 * MiB - 2048, 8192, false }, { 5 * MiB + 512, 1536, true },
	{ 3 * MiB, 256 * KiB, false }, { 512, 1024, false }, { 12 * MiB - 512, 1024, true },
	{ 9 * MiB, 64 * KiB, false }, { 2 * MiB, 512, false }, { 14 * MiB, 4096, false },
};

static bool sector_ok(const u8 *got, const u8 *old, u64 s, size_t k)
{
	long acked = -1, started = -1, i, last = -1;
	size_t j;

	for (j = 0; j < k; j++) {
		if (rc_ops[j].kind != RC_MARK)
			continue;
		i = rc_ops[j].off & 0xffffffffULL;
		if ((rc_ops[j].off >> 32) == 1)
			started = i;
		else
			acked = i;
	}
	for (i = 0; i <= acked; i++)
		if (s >= sw[i].off && s < sw[i].off + sw[i].len)
			last = i;
	if (last >= 0 ? is_pat(got, 512, 700 + last, s) : !memcmp(got, old + s, 512))
		return true;
	for (i = acked + 1; i <= started; i++)
		if (s >= sw[i].off && s < sw[i].off + sw[i].len && is_pat(got, 512, 700 + i, s))
			return true;
	return false;
}

static int copen(struct vdimg_chain **c, const char *path, bool ro)
{
	const char *p[1] = { path };

	return vdimg_chain_open(c, p, 1, NULL, ro ? VDIMG_CHAIN_READ_ONLY : 0);
}

static void survey(const char *fmt)
{
	u64 size = 16 * MiB, s;
	u8 *old = calloc(1, size), *got = malloc(size), *buf = malloc(256 * KiB);
	int imgs = 0, cuts = 0, bro = 0, bdata = 0, brw = 0, bafter = 0, bq = 0, nq = 0, ret;
	const char *first = NULL;
	struct vdimg_chain *c;
	unsigned int var;
	size_t i, k;

	if (sh("qemu-img create -q -f %s '%s' 16M", fmt, tp("sv-tmpl.img"))) {
		printf("# %s: qemu-img create failed\n", fmt);
		return;
	}
	fill_pat(old + 1 * MiB, 6 * MiB, 43, 1 * MiB);
	if (copen(&c, tp("sv-tmpl.img"), false) ||
	    vdimg_chain_pwrite(c, old + 1 * MiB, 6 * MiB, 1 * MiB) || vdimg_chain_close(c)) {
		printf("# %s: cannot write the template (%s)\n", fmt, ktap_last_msg);
		return;
	}
	sh("cp --sparse=always '%s' '%s'", tp("sv-tmpl.img"), tp("sv.img"));
	if (copen(&c, tp("sv.img"), false)) {
		printf("# %s: cannot open (%s)\n", fmt, ktap_last_msg);
		return;
	}
	rc_trace(tp("sv.img"));
	for (ret = 0, i = 0; !ret && i < ARRAY_SIZE(sw); i++) {
		rc_mark((1ULL << 32) | i);
		fill_pat(buf, sw[i].len, 700 + i, sw[i].off);
		ret = vdimg_chain_pwrite(c, buf, sw[i].len, sw[i].off);
		if (!ret && sw[i].flush) {
			ret = vdimg_chain_flush(c);
			rc_mark((2ULL << 32) | i);
		}
	}
	rc_stop();
	vdimg_chain_close(c);
	if (ret) {
		printf("# %s: the workload failed %d\n", fmt, ret);
		return;
	}
	vdimg_msg_level = -1;
	for (k = 1; k <= rc_nops; k++) {
		if (rc_ops[k - 1].kind == RC_MARK)
			continue;
		cuts++;
		for (var = 0; var < RC_VARIANTS; var++) {
			char what[200] = "";

			if (rc_build(tp("sv-tmpl.img"), tp("svc.img"), k, var, 16) < 0)
				exit(1);
			imgs++;
			if (copen(&c, tp("svc.img"), true)) {
				bro++;
				snprintf(what, sizeof(what), "read-only open: %.100s", ktap_last_msg);
				goto next;
			}
			ret = vdimg_chain_pread(c, got, size, 0);
			vdimg_chain_close(c);
			for (s = 0; !ret && s < size; s += 512)
				if (!sector_ok(got + s, old, s, k))
					break;
			if (ret || s < size) {
				bdata++;
				snprintf(what, sizeof(what), "data: sector %llu",
					 (unsigned long long)(s / 512));
			}
			if (var == 0 || var == 4) {
				nq++;
				ret = sh("qemu-img check -q -f %s '%s' >/dev/null 2>&1", fmt,
					 tp("svc.img"));
				if (ret != 0 && ret != 3 && ret != 63) {
					bq++;
					if (!what[0])
						snprintf(what, sizeof(what), "qemu-img check %d", ret);
				}
			}
			if (copen(&c, tp("svc.img"), false)) {
				brw++;
				snprintf(what, sizeof(what), "read-write open: %.100s", ktap_last_msg);
				goto next;
			}
			fill_pat(buf, 4096, 799, 10 * MiB);
			memcpy(got + 10 * MiB, buf, 4096);
			ret = vdimg_chain_pwrite(c, buf, 4096, 10 * MiB);
			ret = vdimg_chain_close(c) ?: ret;
			if (!ret)
				ret = copen(&c, tp("svc.img"), true);
			if (!ret) {
				u8 *again = malloc(size);

				ret = vdimg_chain_pread(c, again, size, 0);
				if (!ret && memcmp(again, got, size))
					ret = -EILSEQ;
				free(again);
				vdimg_chain_close(c);
			}
			if (ret) {
				bafter++;
				if (!what[0])
					snprintf(what, sizeof(what), "write after: %d %.100s", ret,
						 ktap_last_msg);
			}
next:
			if (what[0] && !first) {
				static char fb[256];

				snprintf(fb, sizeof(fb), "cut %zu var %u: %.160s", k, var, what);
				first = fb;
			}
		}
	}
	vdimg_msg_level = VDIMG_LOG_INFO;
	ok(!bro && !bdata && !brw && !bafter && !bq,
	   "%s: %d crash images (%zu ops, %d cuts): ro-open %d, data %d, rw-open %d, write-after %d, qemu-check %d/%d bad%s%s",
	   fmt, imgs, rc_nops, cuts, bro, bdata, brw, bafter, bq, nq, first ? "; first: " : "",
	   first ? first : "");
	free(old);
	free(got);
	free(buf);
}

int main(int argc, char **argv)
{
	static const char *const def[] = { "vpc", "vdi", "vhdx", "qcow2", "qed", "vmdk",
					   "parallels" };
	int i;

	ktap_start();
	if (argc > 1)
		for (i = 1; i < argc; i++)
			survey(argv[i]);
	else
		for (i = 0; i < (int)ARRAY_SIZE(def); i++)
			survey(def[i]);
	return ktap_finish();
}
