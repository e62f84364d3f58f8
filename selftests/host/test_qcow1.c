// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the QCOW version 1 backend (backends/qcow.c), read-only: images made by qemu-img
 * (`create -f qcow`, with and without a backing file) filled by qemu-io, and compressed ones made
 * by `qemu-img convert -c -O qcow`, read back through libvdimg byte for byte as `qemu-img convert
 * -O raw` does; a writable open refused with the convert hint; encryption refused by name; damaged
 * tables refused as corruption. Skips (exit 4) when qemu-img is missing. KTAP on stdout.
 */
#include <sys/wait.h>
#include "format_test.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

/* qcow layers (qc[i]) use our backend, the others the registry */
static int open_chain(struct vdimg_chain **c, const char *const *paths, const bool *qc, int n,
		      bool ro)
{
	return open_chain_with(c, paths, n, &vdimg_qcow_format, qc, ro, 0);
}

static bool chain_matches_qemu(const char *const *paths, const bool *qc, int n, const char *tag)
{
	return chain_matches_qemu_with(paths, n, &vdimg_qcow_format, qc, tag);
}

static const char *const fill_cmds =
	"-c 'write -P 0x11 0 4k' -c 'write -P 0x22 60k 8k' -c 'write -P 0x33 1000k 100k' "
	"-c 'write -P 0x44 2047k 2k' -c 'write -P 0x55 3m 1536k' -c 'write -P 0x66 6143k 3k' "
	"-c 'write -P 0x77 8000k 513k' -c 'write -P 0x88 12345k 1k' -c 'write -P 0x99 16380k 4k'";

static void test_plain(void)
{
	const char *p[1] = { tp("q.qcow") };
	bool qc[1] = { true };
	struct vdimg_chain *c;
	int r;

	r = sh("qemu-img create -q -f qcow '%s' 16M && qemu-io -f qcow %s '%s' >/dev/null",
	       p[0], fill_cmds, p[0]);
	if (!ok(r == 0, "qemu made a qcow image"))
		return;
	ok(chain_matches_qemu(p, qc, 1, "plain"), "read qcow == qemu-img convert");
	r = open_chain(&c, p, qc, 1, false);
	ok(r == -EROFS && strstr(ktap_last_msg, "qemu-img convert -O qcow2"),
	   "writable open refused with the convert hint (%d: %s)", r, ktap_last_msg);
	if (!r)
		close_chain(c, 1);
	/* the registry probes it as qcow (v1), not qcow2 */
	{
		int fd = open(p[0], O_RDONLY);
		struct vdimg_file *f = vdimg_file_from_fd(fd);
		u32 id = 0;
		const char *why = NULL;

		ok(vdimg_probe(f, &id, &why) == 0 && id == VDIMG_FMT_QCOW, "probe says qcow");
		vdimg_file_free(f);
		close(fd);
	}
	/* a non-aligned virtual size */
	r = sh("qemu-img create -q -f qcow '%s' 5000k && qemu-io -f qcow -c 'write -P 0x5e 4990k 10k' '%s' >/dev/null",
	       p[0], p[0]);
	if (ok(r == 0, "qemu made a 5000k qcow image"))
		ok(chain_matches_qemu(p, qc, 1, "5000k"), "read 5000k qcow == qemu-img convert");
}

static void test_compressed(void)
{
	const char *p[1] = { tp("c.qcow") };
	bool qc[1] = { true };
	int r;

	r = sh("qemu-img create -q -f raw '%s' 8M && qemu-io -f raw -c 'write -P 0x5a 0 1m' "
	       "-c 'write -P 0x13 3m 777k' -c 'write -P 0x77 7m 64k' '%s' >/dev/null",
	       tp("src.raw"), tp("src.raw"));
	sh("head -c 1048576 /dev/urandom | base64 -w0 | dd of='%s' bs=1k seek=1500 conv=notrunc status=none",
	   tp("src.raw"));
	sh("head -c 65536 /dev/urandom | dd of='%s' bs=1k seek=5000 conv=notrunc status=none",
	   tp("src.raw"));
	/*
	 * qemu-img 7.2 exits 1 at the very end of a compressed convert to qcow (its final empty
	 * compressed write is refused) after writing every cluster: judge the result by its content.
	 */
	if (!r)
		sh("qemu-img convert -c -f raw -O qcow '%s' '%s' 2>/dev/null", tp("src.raw"), p[0]);
	r = r ? r : sh("qemu-img convert -f qcow -O raw '%s' '%s' && cmp -s '%s' '%s' && "
		       "test $(stat -c %%s '%s') -lt 4194304", p[0], tp("back.raw"), tp("back.raw"),
		       tp("src.raw"), p[0]);
	if (!ok(r == 0, "qemu-img convert -c -O qcow made a compressed image qemu reads back"))
		return;
	ok(chain_matches_qemu(p, qc, 1, "compressed"), "read compressed qcow == qemu-img convert");
	ok(sh("cmp -s '%s' '%s'", tp("ref.raw"), tp("src.raw")) == 0, "and == the source");
	/* clusters compressed by qemu-io one by one, between plain ones */
	r = sh("qemu-img create -q -f qcow '%s' 1M && qemu-io -f qcow -c 'write -c -P 0x21 0 4k' "
	       "-c 'write -P 0x22 4k 4k' -c 'write -c -P 0x23 8k 4k' -c 'write -c -P 0x24 1020k 4k' '%s' >/dev/null",
	       p[0], p[0]);
	if (ok(r == 0, "qemu-io write -c on qcow"))
		ok(chain_matches_qemu(p, qc, 1, "write -c"), "read mixed compressed/plain == qemu-img convert");
}

static void test_backing(void)
{
	const char *p[3] = { tp("base.raw"), tp("mid.qcow"), tp("top.qcow") };
	bool qc[3] = { false, true, true };
	struct vdimg_parent_ref ref;
	struct vdimg_chain *c;
	int r;

	r = sh("qemu-img create -q -f raw '%s' 16M && qemu-io -f raw -c 'write -P 0xab 0 16m' '%s' >/dev/null"
	       " && qemu-img create -q -f qcow -b '%s' -F raw '%s'"
	       " && qemu-io -f qcow -c 'write -P 0x01 100k 300k' '%s' >/dev/null"
	       " && qemu-img create -q -f qcow -b '%s' -F qcow '%s'"
	       " && qemu-io -f qcow -c 'write -P 0x02 1030k 3k' -c 'write -P 0x03 5m 9k' '%s' >/dev/null",
	       p[0], p[0], p[0], p[1], p[1], p[1], p[2], p[2]);
	if (!ok(r == 0, "qemu made a raw <- qcow <- qcow chain"))
		return;
	ok(chain_matches_qemu(p, qc, 3, "chain"), "read chain == qemu-img convert");
	if (!open_chain(&c, p, qc, 3, true)) {
		r = vdimg_qcow_tool_ops.parent_ref(c->layers[2], &ref);
		ok(!r && !strcmp(ref.path, p[1]), "parent_ref names the backing file (%s)", ref.path);
		ok(vdimg_qcow_tool_ops.parent_ref(c->layers[1], &ref) == 0 &&
		   !strcmp(ref.path, p[0]), "parent_ref of the middle layer");
		close_chain(c, 3);
	}
}

static void poke(const char *path, u64 off, const void *v, int len)
{
	int fd = open(path, O_RDWR);

	if (fd < 0 || pwrite(fd, v, len, off) != len)
		printf("# poke %s failed\n", path);
	close(fd);
}

static void test_hostile(void)
{
	const char *p[1] = { tp("h.qcow") };
	bool qc[1] = { true };
	struct vdimg_chain *c;
	u8 buf[4096];
	u32 one = htobe32(1);
	u64 far = htobe64(1ULL << 50), l1;
	int r, fd;

	sh("qemu-img create -q -f qcow '%s' 4M && qemu-io -f qcow -c 'write -P 1 0 64k' '%s' >/dev/null",
	   p[0], p[0]);
	poke(p[0], 36, &one, 4);	/* crypt_method = AES */
	r = open_chain(&c, p, qc, 1, true);
	ok(r == -EOPNOTSUPP && strstr(ktap_last_msg, "AES"), "AES encryption refused by name (%s)",
	   ktap_last_msg);
	if (!r)
		close_chain(c, 1);
	one = 0;
	poke(p[0], 36, &one, 4);
	buf[0] = 30;
	poke(p[0], 32, buf, 1);		/* cluster_bits 30 */
	r = open_chain(&c, p, qc, 1, true);
	ok(r == -EUCLEAN, "cluster_bits 30 refused as corruption (%d)", r);
	if (!r)
		close_chain(c, 1);
	buf[0] = 12;
	poke(p[0], 32, buf, 1);
	/* the first L1 entry points far past the end of the file */
	fd = open(p[0], O_RDONLY);
	if (pread(fd, &l1, 8, 40) != 8)
		l1 = 0;
	close(fd);
	poke(p[0], be64toh(l1), &far, 8);
	r = open_chain(&c, p, qc, 1, true);
	if (ok_err(r, 0, "opens with a bad L1 entry (checked when used)")) {
		ok(vdimg_chain_pread(c, buf, sizeof(buf), 0) == -EUCLEAN, "reading through it: -EUCLEAN");
		close_chain(c, 1);
	}
}

int main(void)
{
	ktap_start();
	if (sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		skip("qemu-img/qemu-io not installed");
		return ktap_finish();
	}
	test_plain();
	test_compressed();
	test_backing();
	test_hostile();
	return ktap_finish();
}
