// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the VMDK backend (backends/vmdk/) against qemu: monolithicSparse and
 * streamOptimized images made by qemu-img (with zeroed_grain, adapter_type, hwversion, compat6)
 * and filled by qemu-io read back through libvdimg byte for byte as `qemu-img convert -O raw` does;
 * variants with separate extent files are refused by name; random writes, discards and
 * write-zeroes through libvdimg compared with a raw shadow, then `qemu-img check` and
 * `qemu-img compare` (and libyal's vmdkinfo when installed); chains made by qemu-img with their
 * CID checks (a parent changed after its child was made is refused unless forced; the first write
 * renews the CID); write cuts at every write of a workload leave an image qemu checks clean with
 * the flushed data intact; streamOptimized images we create from a source read like it through
 * qemu, libvmdk and libvdimg, hold the grains qemu-img writes, in VMware's stream order;
 * descriptor rewrites keep every other line; seSparse extents made by mksesparse.py read as qemu
 * reads them, and what libvdimg writes into them (workloads, write cuts) qemu reads back as written;
 * a monolithicSparse image grown past its grain directory's room (the directories move) reads,
 * writes and checks clean through libvdimg, qemu and vmdkinfo, on a block device too, and a write
 * cut anywhere in that grow leaves the old or the new size with the data; hostile headers fail
 * open cleanly; the sample images in
 * $VDIMG_SAMPLES (set by make check-host, see selftests/samples.sh) when present. Skips (exit 4) when qemu-img is missing. KTAP on stdout.
 */
#include <sys/wait.h>
#include "../../backends/vmdk/vmdk.h"
#include "format_test.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

/* every layer through the registry, as attach opens them */
static int open_chain(struct vdimg_chain **c, const char *const *paths, int n, bool ro)
{
	return open_chain_with(c, paths, n, NULL, NULL, ro, 0);
}

static bool chain_matches_qemu(const char *const *paths, int n, const char *tag)
{
	return chain_matches_qemu_with(paths, n, NULL, NULL, tag);
}

static const char *samples;
static bool have_vmdkinfo;

/* qemu-io commands straddling grains and grain tables, and zeroed ranges */
static const char *const fill_cmds =
	"-c 'write -P 0x11 0 4k' -c 'write -P 0x22 60k 8k' -c 'write -P 0x33 1000k 100k' "
	"-c 'write -P 0x44 2047k 2k' -c 'write -P 0x55 31m 2m' -c 'write -z 3200k 64k' "
	"-c 'write -P 0x66 6143k 3k' -c 'write -P 0x77 8000k 513k' -c 'write -z 9m 1m' "
	"-c 'write -P 0x88 12345k 1k' -c 'write -P 0x99 40956k 4k'";

static const char *const sparse_opts[] = {
	"subformat=monolithicSparse",
	"subformat=monolithicSparse,zeroed_grain=on",
	"subformat=monolithicSparse,adapter_type=lsilogic,hwversion=6",
	"subformat=monolithicSparse,compat6=on",
	"subformat=monolithicSparse,adapter_type=ide,zeroed_grain=on",
};

static void test_qemu_images(void)
{
	const char *p[1] = { tp("q.vmdk") };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(sparse_opts); i++) {
		int r = sh("qemu-img create -q -f vmdk -o %s '%s' 40M && qemu-io -f vmdk %s '%s' >/dev/null",
			   sparse_opts[i], p[0], fill_cmds, p[0]);

		if (!ok(r == 0, "qemu made image %s", sparse_opts[i]))
			continue;
		ok(chain_matches_qemu(p, 1, sparse_opts[i]), "read %s == qemu-img convert",
		   sparse_opts[i]);
	}
	/* a size that is not a multiple of the grain */
	if (ok(sh("qemu-img create -q -f vmdk '%s' 1000k && qemu-io -f vmdk -c 'write -P 0x5a 900k 100k' '%s' >/dev/null",
		  p[0], p[0]) == 0, "qemu made a 1000 KiB image"))
		ok(chain_matches_qemu(p, 1, "1000k"), "read 1000 KiB image == qemu-img convert");
}

/* streamOptimized (compressed grains, markers, footer) through qemu-img convert */
static void test_stream(void)
{
	const char *raw = tp("s.raw"), *p[1] = { tp("s.vmdk") };
	struct vdimg_chain *c;
	int r, fd;

	r = sh("qemu-img create -q -f raw '%s' 40M && qemu-io -f raw %s '%s' >/dev/null && "
	       "qemu-img convert -O vmdk -o subformat=streamOptimized '%s' '%s'",
	       raw, fill_cmds, raw, raw, p[0]);
	if (!ok(r == 0, "qemu made a streamOptimized image"))
		return;
	ok(chain_matches_qemu(p, 1, "stream"), "read streamOptimized == qemu-img convert");
	fd = open(p[0], O_RDWR | O_CLOEXEC);
	r = vdimg_chain_open_fds(&c, &fd, p, 1, NULL, 0);
	ok(r == -EOPNOTSUPP && strstr(ktap_last_msg, "streamOptimized"),
	   "a writable open of streamOptimized is refused by name (%d: %s)", r, ktap_last_msg);
	if (!r)
		vdimg_chain_close(c);
	close(fd);
}

/* the CID the descriptor of @path says */
static u32 read_cid(const char *path, const char *key)
{
	char cmd[1024], line[256];
	FILE *f;
	u32 cid = 0;

	snprintf(cmd, sizeof(cmd), "head -c 4096 '%s' | tr -d '\\0' | grep -a '^%s='", path, key);
	f = popen(cmd, "r");
	if (f && fgets(line, sizeof(line), f))
		cid = strtoul(strchr(line, '=') + 1, NULL, 16);
	if (f)
		pclose(f);
	return cid;
}

/* read [off, off + len) of the image at @path through libvdimg (whole chain, read-only) */
static int lib_read(const char *path, void *buf, size_t len, u64 off)
{
	const char *p[1] = { path };
	struct vdimg_chain *c;
	int ret = open_chain(&c, p, 1, true);

	if (ret)
		return ret;
	ret = vdimg_chain_pread(c, buf, len, off);
	close_chain(c, 1);
	return ret;
}

/* read [off, off + len) of a raw file */
static int raw_read(const char *path, void *buf, size_t len, u64 off)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : pread(fd, buf, len, off);

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

/*
 * Variants with separate extent files (the library opens them next to the descriptor): qemu's data
 * reads back, writes across an extent boundary read back through qemu, qemu-img check stays clean.
 */
static void test_split(void)
{
	static const struct {
		const char *sub;
		u64 size, edge;		/* an extent boundary to straddle */
	} v[] = {
		{ "monolithicFlat", 40 * MiB, 20 * MiB },
		{ "twoGbMaxExtentSparse", 3072 * MiB, 2048 * MiB },
		{ "twoGbMaxExtentFlat", 3072 * MiB, 2048 * MiB },
	};
	static u8 buf[4 * MiB], want[4 * MiB];
	const char *p[1] = { tp("x.vmdk") };
	struct vdimg_chain *c;
	size_t i;
	int r;

	for (i = 0; i < ARRAY_SIZE(v); i++) {
		u64 e = v[i].edge;

		sh("rm -f %s/x*.vmdk", ktap_dir);
		r = sh("qemu-img create -q -f vmdk -o subformat=%s '%s' %llu && "
		       "qemu-io -f vmdk -c 'write -P 0x5a %llu 2m' -c 'write -P 0x11 0 64k' '%s' >/dev/null",
		       v[i].sub, p[0], (unsigned long long)v[i].size,
		       (unsigned long long)(e - MiB), p[0]);
		if (!ok(r == 0, "qemu made and filled %s", v[i].sub))
			continue;
		r = lib_read(p[0], buf, 2 * MiB, e - MiB);
		ok(!r && is_byte(buf, 2 * MiB, 0x5a), "%s: qemu's write across the extent boundary reads back (%d)",
		   v[i].sub, r);
		r = lib_read(p[0], buf, 128 * KiB, 0);
		ok(!r && is_byte(buf, 64 * KiB, 0x11) && is_byte(buf + 64 * KiB, 64 * KiB, 0),
		   "%s: the first extent's data and zeros", v[i].sub);
		r = lib_read(p[0], buf, MiB, v[i].size - MiB);
		ok(!r && is_byte(buf, MiB, 0), "%s: the last MiB reads zeros", v[i].sub);
		if (v[i].size <= 64 * MiB)
			ok(chain_matches_qemu(p, 1, v[i].sub), "%s: whole disk == qemu-img convert",
			   v[i].sub);
		/* writes across the boundary, through our library */
		r = open_chain(&c, p, 1, false);
		if (!ok_err(r, 0, "%s: open writable (extent files opened beside it)", v[i].sub))
			continue;
		fill_pat(want, 3 * MiB, 40 + i, e - 1500 * KiB);
		r = vdimg_chain_pwrite(c, want, 3 * MiB, e - 1500 * KiB);
		if (!r)
			r = vdimg_chain_discard(c, e + 2 * MiB, 512 * KiB, VDIMG_DISCARD_ZEROES);
		close_chain(c, 1);
		ok_err(r, 0, "%s: 3 MiB written across the boundary, 512 KiB zeroed after it", v[i].sub);
		r = sh("qemu-img convert -O raw '%s' '%s'", p[0], tp("x.raw"));
		ok(!r && !raw_read(tp("x.raw"), buf, 3 * MiB, e - 1500 * KiB) &&
		   !memcmp(buf, want, 3 * MiB) &&
		   !raw_read(tp("x.raw"), buf, 512 * KiB, e + 2 * MiB) && is_byte(buf, 512 * KiB, 0) &&
		   !raw_read(tp("x.raw"), buf, 64 * KiB, 0) && is_byte(buf, 64 * KiB, 0x11),
		   "%s: qemu reads our writes, and what was there", v[i].sub);
		unlink(tp("x.raw"));
		if (strstr(v[i].sub, "Sparse"))
			ok(sh("qemu-img check -q -f vmdk '%s'", p[0]) == 0, "%s: qemu-img check clean",
			   v[i].sub);
		if (have_vmdkinfo)
			ok(sh("vmdkinfo '%s' >/dev/null 2>&1", p[0]) == 0, "%s: vmdkinfo reads it",
			   v[i].sub);
		ok(read_cid(p[0], "CID") != 0, "%s: the descriptor still has a CID", v[i].sub);
	}
}

/* a vmfs descriptor (VMFS extents: flat, no offset), made from qemu's monolithicFlat */
static void test_vmfs(void)
{
	const char *p[1] = { tp("v.vmdk") };
	int r;

	sh("rm -f %s/v*.vmdk", ktap_dir);
	r = sh("qemu-img create -q -f vmdk -o subformat=monolithicFlat '%s' 8M && "
	       "qemu-io -f vmdk -c 'write -P 0x3e 1m 3m' '%s' >/dev/null && "
	       "sed -i -e 's/monolithicFlat/vmfs/' -e 's/^RW 16384 FLAT \\(.*\\) 0$/RW 16384 VMFS \\1/' '%s' && "
	       "grep -q 'VMFS' '%s'", p[0], p[0], p[0], p[0]);
	if (!ok(r == 0, "a vmfs descriptor made from a monolithicFlat one"))
		return;
	ok(chain_matches_qemu(p, 1, "vmfs"), "vmfs reads like qemu-img convert");
}

/*
 * COWD (vmfsSparse, read-only): a file built here (qemu cannot create one, but reads it): 2 MiB of
 * 4 KiB grains, GD at sector 4, its one GT at sector 5, grains 0 and 100 allocated. Read alone
 * and as the extent of a vmfsSparse descriptor; a writable open is refused.
 */
static void test_cowd(void)
{
	static u8 f[56 * 512];
	const char *p[1] = { tp("cowd.vmdk") }, *d[1] = { tp("vs.vmdk") };
	struct vdimg_chain *c;
	u8 buf[8192];
	__le32 v;
	int r, fd;

	memset(f, 0, sizeof(f));
	memcpy(f, "COWD", 4);
	v = htole32(1); memcpy(f + 4, &v, 4);		/* version */
	v = htole32(3); memcpy(f + 8, &v, 4);		/* flags */
	v = htole32(4096); memcpy(f + 12, &v, 4);	/* capacity, sectors */
	v = htole32(8); memcpy(f + 16, &v, 4);		/* grain, sectors */
	v = htole32(4); memcpy(f + 20, &v, 4);		/* GD sector */
	v = htole32(1); memcpy(f + 24, &v, 4);		/* GD entries */
	v = htole32(56); memcpy(f + 28, &v, 4);	/* next free sector */
	v = htole32(5); memcpy(f + 4 * 512, &v, 4);	/* GD[0] -> GT at sector 5 */
	v = htole32(40); memcpy(f + 5 * 512, &v, 4);	/* grain 0 at sector 40 */
	v = htole32(48); memcpy(f + 5 * 512 + 100 * 4, &v, 4); /* grain 100 at sector 48 */
	/* qemu reads a CID from the second sector (the header's description field) */
	memcpy(f + 512, "CID=abcdef01\nparentCID=ffffffff\n", 33);
	memset(f + 40 * 512, 0xc1, 4096);
	memset(f + 48 * 512, 0xc2, 4096);
	close(tfile("cowd.vmdk", f, sizeof(f)));
	ok(chain_matches_qemu(p, 1, "cowd"), "a COWD file reads like qemu-img convert");
	r = lib_read(p[0], buf, 8192, 100 * 4096 - 4096);
	ok(!r && is_byte(buf, 4096, 0) && is_byte(buf + 4096, 4096, 0xc2), "COWD grain 100 and its neighbour");
	fd = open(p[0], O_RDWR | O_CLOEXEC);
	vdimg_msg_level = -1;
	r = vdimg_chain_open_fds(&c, &fd, p, 1, NULL, 0);
	vdimg_msg_level = VDIMG_LOG_INFO;
	ok(r == -EOPNOTSUPP, "a writable open of COWD is refused (%d)", r);
	if (!r)
		vdimg_chain_close(c);
	close(fd);
	/* a vmfsSparse descriptor naming it */
	{
		FILE *df = fopen(d[0], "w");

		if (df) {
			fprintf(df, "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
				"createType=\"vmfsSparse\"\n\n# Extent description\n"
				"RW 4096 VMFSSPARSE \"cowd.vmdk\"\n");
			fclose(df);
		}
	}
	r = lib_read(d[0], buf, 4096, 0);
	ok(!r && is_byte(buf, 4096, 0xc1), "a vmfsSparse descriptor reads its COWD extent (%d)", r);
}

/* RDONLY, NOACCESS and ZERO extents, and extent files that do not fit the descriptor */
static void test_extent_kinds(void)
{
	const char *p[1] = { tp("k.vmdk") };
	struct vdimg_chain *c;
	u8 buf[4096];
	int r;

	sh("rm -f %s/k*.vmdk", ktap_dir);
	if (!ok(sh("qemu-img create -q -f vmdk -o subformat=monolithicFlat '%s' 1M && qemu-io -f vmdk -c 'write -P 0x77 0 1m' '%s' >/dev/null",
		   p[0], p[0]) == 0, "qemu made a 1 MiB monolithicFlat"))
		return;
	/* the descriptor: 1 MiB flat (RDONLY), 1 MiB of ZERO, 1 MiB NOACCESS of the same file */
	r = sh("sed -i -e 's/^RW 2048 FLAT \\(.*\\) 0$/RDONLY 2048 FLAT \\1 0\\nRW 2048 ZERO\\nNOACCESS 2048 FLAT \\1 0/' '%s' && grep -q NOACCESS '%s'",
	       p[0], p[0]);
	if (!ok(r == 0, "descriptor edited: RDONLY flat, ZERO, NOACCESS flat"))
		return;
	r = open_chain(&c, p, 1, false);
	if (!ok_err(r, 0, "open writable"))
		return;
	ok(c->size == 3 * MiB, "3 MiB disk");
	r = vdimg_chain_pread(c, buf, sizeof(buf), 4096);
	ok(!r && is_byte(buf, sizeof(buf), 0x77), "the RDONLY extent reads");
	r = vdimg_chain_pread(c, buf, sizeof(buf), MiB + 4096);
	ok(!r && is_byte(buf, sizeof(buf), 0), "the ZERO extent reads zeros");
	ok_err(vdimg_chain_pread(c, buf, sizeof(buf), 2 * MiB), -EIO, "the NOACCESS extent: -EIO");
	ok_err(vdimg_chain_pwrite(c, buf, sizeof(buf), 0), -EROFS, "a write to the RDONLY extent: -EROFS");
	ok_err(vdimg_chain_pwrite(c, buf, sizeof(buf), MiB), -EROFS, "a write to the ZERO extent: -EROFS");
	close_chain(c, 1);
	/* a flat extent file shorter than its extent */
	sh("truncate -s 512k '%s/k-flat.vmdk'", ktap_dir);
	vdimg_msg_level = -1;
	r = open_chain(&c, p, 1, true);
	vdimg_msg_level = VDIMG_LOG_INFO;
	ok(r == -EUCLEAN, "a short extent file is refused (%d)", r);
	if (!r)
		close_chain(c, 1);
	/* a missing extent file */
	unlink(tp("k-flat.vmdk"));
	vdimg_msg_level = -1;
	r = open_chain(&c, p, 1, true);
	vdimg_msg_level = VDIMG_LOG_INFO;
	ok(r == -ENOENT, "a missing extent file is refused (%d)", r);
	if (!r)
		close_chain(c, 1);
	/* extent names outside the descriptor's directory are refused */
	{
		static const char *const bad[] = { "/etc/passwd", "../k-flat.vmdk", "a/../../x" };
		size_t i;

		for (i = 0; i < ARRAY_SIZE(bad); i++) {
			FILE *df = fopen(tp("k3.vmdk"), "w");

			if (df) {
				fprintf(df, "# Disk DescriptorFile\nversion=1\nCID=12345678\n"
					"parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
					"RW 8 FLAT \"%s\" 0\n", bad[i]);
				fclose(df);
			}
			vdimg_msg_level = -1;
			r = lib_read(tp("k3.vmdk"), buf, 512, 0);
			vdimg_msg_level = VDIMG_LOG_INFO;
			ok(r == -EPERM, "extent file name %s is refused (%d)", bad[i], r);
		}
	}
	/* extents passed that the descriptor does not name */
	{
		struct vdimg_image img = { .name = "k.vmdk" };
		struct vdimg_file *extra[1];
		int fd = open(p[0], O_RDONLY), fd2 = open(p[0], O_RDONLY);

		img.file = vdimg_file_from_fd(fd);
		extra[0] = vdimg_file_from_fd(fd2);
		sh("qemu-img create -q -f vmdk '%s' 1M", tp("k2.vmdk"));
		close(fd);
		fd = open(tp("k2.vmdk"), O_RDONLY);
		img.file->fd = fd;
		img.extents = extra;
		img.nr_extents = 1;
		vdimg_msg_level = -1;
		r = vdimg_image_open(&img, VDIMG_FMT_VMDK, VDIMG_OPEN_READ_ONLY);
		vdimg_msg_level = VDIMG_LOG_INFO;
		ok(r == -EINVAL, "a monolithic image with an extent file given is refused (%d)", r);
		if (!r)
			vdimg_image_close(&img);
		vdimg_file_free(img.file);
		vdimg_file_free(extra[0]);
		close(fd);
		close(fd2);
	}
}

/* ---- writes through libvdimg ---- */

static u8 peek8(const char *path, u64 off)
{
	int fd = open(path, O_RDONLY);
	u8 b = 0xee;

	if (fd < 0 || pread(fd, &b, 1, off) != 1)
		printf("# peek %s failed\n", path);
	close(fd);
	return b;
}

static void test_writes(void)
{
	const u64 size = 40 * MiB;
	size_t i;

	for (i = 0; i < 4; i++) {
		bool backing = i >= 2;
		const char *opts = i % 2 ? "zeroed_grain=on" : "zeroed_grain=off";
		const char *p[2] = { tp("wbase.vmdk"), tp("w.vmdk") };
		struct vdimg_chain *c;
		u8 *shadow = calloc(1, size), *got;
		int ret, n = backing ? 2 : 1;
		const char *const *pp = backing ? p : p + 1;
		u32 cid0;

		if (backing) {
			ret = sh("qemu-img create -q -f vmdk '%s' 40M && qemu-io -f vmdk -c 'write -P 0x3c 0 40m' '%s' >/dev/null"
				 " && qemu-img create -q -f vmdk -o %s -b '%s' -F vmdk '%s'",
				 p[0], p[0], opts, p[0], p[1]);
			memset(shadow, 0x3c, size);
		} else {
			ret = sh("qemu-img create -q -f vmdk -o %s '%s' 40M", opts, p[1]);
		}
		if (!ok(ret == 0, "create %s%s", opts, backing ? " with backing" : "")) {
			free(shadow);
			continue;
		}
		cid0 = read_cid(p[1], "CID");
		ret = open_chain(&c, pp, n, false);
		if (!ok_err(ret, 0, "open %s writable", opts)) {
			free(shadow);
			continue;
		}
		ret = workload(c, shadow, size, 300, (unsigned int)i * 1000, 400);
		ok_err(ret, 0, "300 random writes/discards/zeroes on %s%s", opts,
		       backing ? " over a backing file" : "");
		ok(peek8(p[1], 72) == 1, "%s: uncleanShutdown is set while open", opts);
		got = malloc(size);
		ok(!vdimg_chain_pread(c, got, size, 0) && !memcmp(got, shadow, size),
		   "%s%s: reads back the shadow before close", opts, backing ? " (backing)" : "");
		free(got);
		close_chain(c, n);
		ok(peek8(p[1], 72) == 0, "%s: uncleanShutdown is clear after close", opts);
		ok(read_cid(p[1], "CID") != cid0, "%s: the first write renewed the CID", opts);
		close(tfile("shadow.raw", shadow, size));
		ok(sh("qemu-img check -q -f vmdk '%s'", p[1]) == 0,
		   "%s%s: qemu-img check: no errors", opts, backing ? " (backing)" : "");
		ok(sh("qemu-img compare -q -f raw -F vmdk '%s' '%s'", tp("shadow.raw"), p[1]) == 0,
		   "%s%s: qemu-img compare with the shadow", opts, backing ? " (backing)" : "");
		if (have_vmdkinfo)
			ok(sh("vmdkinfo '%s' >/dev/null 2>&1", p[1]) == 0, "%s: vmdkinfo reads it", opts);
		free(shadow);
	}
}

/* ---- our create, check, set_parent ---- */

static int create_file(const char *path, const struct vdimg_create_opts *o)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	struct vdimg_file *f;
	int ret;

	if (fd < 0)
		return -errno;
	f = vdimg_file_from_fd(fd);
	ret = vdimg_vmdk_tool_ops.create(f, o);
	vdimg_file_free(f);
	close(fd);
	return ret;
}

/* our images with several grain sizes: qemu accepts them, and they take a random workload */
static void test_create(void)
{
	static const struct {
		u32 grain;
		const char *opts;
	} cfg[] = {
		{ 0, NULL },
		{ 8192, "zeroed_grain=on" },
		{ 16384, "adapter_type=lsilogic,hwversion=7" },
		{ 1 << 20, "zeroed_grain=on" },
		{ 32768, "compat6" },
	};
	const u64 size = 40 * MiB;
	const char *p[1] = { tp("mine.vmdk") };
	struct vdimg_check_result res;
	struct vdimg_chain *c;
	size_t i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(cfg); i++) {
		struct vdimg_create_opts o = { .size = size, .block_size = cfg[i].grain,
					       .options = cfg[i].opts };
		u8 *shadow, *got;

		ret = create_file(p[0], &o);
		if (!ok_err(ret, 0, "create grain %u %s", cfg[i].grain, cfg[i].opts ? cfg[i].opts : ""))
			continue;
		ok(sh("qemu-img check -q -f vmdk '%s' && qemu-io -f vmdk -c 'write -P 0x42 1m 3m' -c 'read -P 0x42 1m 3m' '%s' >/dev/null && qemu-img check -q -f vmdk '%s'",
		      p[0], p[0], p[0]) == 0,
		   "grain %u: qemu checks, writes and reads our image", cfg[i].grain);
		if (have_vmdkinfo)
			ok(sh("vmdkinfo '%s' >/dev/null 2>&1", p[0]) == 0, "grain %u: vmdkinfo reads it",
			   cfg[i].grain);
		shadow = calloc(1, size);
		memset(shadow + 1 * MiB, 0x42, 3 * MiB);
		if (!ok_err(open_chain(&c, p, 1, false), 0, "grain %u: open writable", cfg[i].grain)) {
			free(shadow);
			continue;
		}
		rnd_state = 1000 + i;
		ret = workload(c, shadow, size, 200, 77 + i, 300);
		ok_err(ret, 0, "grain %u: 200 random writes/discards", cfg[i].grain);
		memset(&res, 0, sizeof(res));
		ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
		ok(!ret && !res.errors, "grain %u: our check finds no error (%d, %llu errors, %llu leaks)",
		   cfg[i].grain, ret, (unsigned long long)res.errors, (unsigned long long)res.leaks);
		close_chain(c, 1);
		close(tfile("shadow.raw", shadow, size));
		ok(sh("qemu-img check -q -f vmdk '%s'", p[0]) == 0 &&
		   sh("qemu-img compare -q -f raw -F vmdk '%s' '%s'", tp("shadow.raw"), p[0]) == 0,
		   "grain %u: qemu-img check clean, compare equal to the shadow", cfg[i].grain);
		got = malloc(size);
		if (!open_chain(&c, p, 1, true)) {
			ok(!vdimg_chain_pread(c, got, size, 0) && !memcmp(got, shadow, size),
			   "grain %u: reopened, reads the shadow", cfg[i].grain);
			close_chain(c, 1);
		}
		free(got);
		free(shadow);
	}
	{
		struct vdimg_create_opts o = { .size = MiB, .block_size = 4096 };

		/* the spec (and libvmdk) want more than 8 sectors */
		ok_err(create_file(tp("bad.vmdk"), &o), -EINVAL, "create refuses a 4 KiB grain");
		o.block_size = 0;
		o.variant = "vmfsRaw";
		ok_err(create_file(tp("bad.vmdk"), &o), -EOPNOTSUPP, "create refuses other variants");
		o.variant = NULL;
		o.options = "adapter_type=scsi";
		ok_err(create_file(tp("bad.vmdk"), &o), -EINVAL, "create refuses an unknown adapter");
	}
}

/* ---- streamOptimized create ---- */

/* create_opts.source_read over a raw file; counts the calls that said "zeros" */
struct raw_source {
	int fd;
	u64 zero_calls;
};

static int raw_source_read(void *ctx, void *buf, size_t len, u64 off, bool *zero)
{
	struct raw_source *rs = ctx;
	ssize_t n = pread(rs->fd, buf, len, off);

	if (n != (ssize_t)len)
		return -EIO;
	/* say "zeros" for whole zero grains now and then, as convert does for holes */
	if (!(off & (256 * KiB)) && !((u8 *)buf)[0] && !memcmp(buf, (u8 *)buf + 1, len - 1)) {
		rs->zero_calls++;
		*zero = true;
	}
	return 0;
}

/* what a walk of a stream from its overhead on finds */
struct stream_walk {
	u64 grains, gts, gds, footers, eos;
	u64 lbas[512];			/* the first grains' LBAs, in file order */
	u64 gd_sector;			/* where the GD marker's data is */
	u64 footer_gd;			/* the footer's gdOffset */
	u64 head_gd;			/* the header's gdOffset */
	u32 head_flags;
	bool in_order;			/* grain LBAs strictly increasing */
	bool tail_ok;			/* EOS is the last sector, right after the footer */
	bool gts_after_grains;		/* every GT marker follows grains of that GT only */
};

/*
 * Walk the file marker by marker as a streaming reader would (no GD), checking the order VMware
 * writes: grains of GT n, GT n, ..., GD, footer, end of stream. False when a marker is bad.
 */
static bool walk_stream(const char *path, struct stream_walk *w)
{
	size_t len, pos;
	u8 *d = slurp(path, &len);
	const struct vmdk_header *h = (const void *)d;
	u64 last_lba = 0, gt_first = 0, grain_sec;
	bool any = false, bad = false;

	memset(w, 0, sizeof(*w));
	if (!d || len < 4 * VMDK_SECTOR || len % VMDK_SECTOR) {
		free(d);
		return false;
	}
	w->head_gd = le64_to_cpu(h->gd_offset);
	w->head_flags = le32_to_cpu(h->flags);
	grain_sec = le64_to_cpu(h->grain_size);
	w->in_order = true;
	w->gts_after_grains = true;
	pos = le64_to_cpu(h->overhead) * VMDK_SECTOR;
	while (pos + VMDK_SECTOR <= len && !bad) {
		const struct vmdk_marker *m = (const void *)(d + pos);
		u64 n = le64_to_cpu(m->num_sectors);

		if (le32_to_cpu(m->size)) {
			u64 lba = n;

			if (w->grains < ARRAY_SIZE(w->lbas))
				w->lbas[w->grains] = lba;
			if (any && lba <= last_lba)
				w->in_order = false;
			if (!gt_first)
				gt_first = lba / (grain_sec * 512) + 1;
			else if (lba / (grain_sec * 512) + 1 != gt_first)
				w->gts_after_grains = false;
			last_lba = lba;
			any = true;
			w->grains++;
			pos += ALIGN(12 + (u64)le32_to_cpu(m->size), (u64)VMDK_SECTOR);
			continue;
		}
		const struct vmdk_header *foot = (const void *)(d + pos + VMDK_SECTOR);

		switch (le32_to_cpu(m->type)) {
		case VMDK_MARKER_GT:
			w->gts++;
			if (!gt_first || n != 4)
				w->gts_after_grains = false;
			gt_first = 0;
			break;
		case VMDK_MARKER_GD:
			w->gds++;
			w->gd_sector = pos / VMDK_SECTOR + 1;
			if (gt_first)
				w->gts_after_grains = false;
			break;
		case VMDK_MARKER_FOOTER:
			w->footers++;
			if (n != 1 || pos + 2 * VMDK_SECTOR > len) {
				bad = true;
				break;
			}
			w->footer_gd = le64_to_cpu(foot->gd_offset);
			break;
		case VMDK_MARKER_EOS:
			w->eos++;
			w->tail_ok = !n && pos + VMDK_SECTOR == len && w->footers == 1;
			break;
		default:
			bad = true;
		}
		pos += (1 + n) * VMDK_SECTOR;
	}
	free(d);
	return !bad && pos == len;
}

/* the LBAs of the grains in qemu's streamOptimized @path (sectors from its overhead on) */
static u64 qemu_stream_lbas(const char *path, u64 *lbas, u64 max)
{
	size_t len, pos;
	u8 *d = slurp(path, &len);
	u64 n = 0;

	if (!d || len < VMDK_SECTOR) {
		free(d);
		return 0;
	}
	pos = le64_to_cpu(((const struct vmdk_header *)d)->overhead) * VMDK_SECTOR;
	while (pos + VMDK_SECTOR <= len) {
		const struct vmdk_grain_marker *m = (const void *)(d + pos);

		if (!le32_to_cpu(m->size))
			break;
		if (n < max)
			lbas[n] = le64_to_cpu(m->lba);
		n++;
		pos += ALIGN(12 + (u64)le32_to_cpu(m->size), (u64)VMDK_SECTOR);
	}
	free(d);
	return n;
}

/*
 * streamOptimized create: of a raw source (sizes not a multiple of the grain, several grain
 * sizes, more than one GT, an empty disk), the result reads like the source through qemu-img and
 * libvdimg, passes qemu-img check and vmdkinfo, is laid out as VMware streams it, holds exactly
 * the grains qemu-img convert writes, and is refused writable by name.
 */
static void test_stream_create(void)
{
	static const struct {
		u64 size;
		u32 grain;
		bool fill;
	} cfg[] = {
		{ 40 * MiB, 0, true },
		{ 40 * MiB + 3 * KiB, 8192, true },
		{ 40 * MiB, 1 << 20, true },
		{ 100 * MiB, 0, false },
	};
	const char *raw = tp("ss.raw"), *p[1] = { tp("ss.vmdk") }, *q = tp("ssq.vmdk");
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cfg); i++) {
		struct raw_source rs = { .fd = -1 };
		bool copied = false;
		struct vdimg_create_opts o = { .size = cfg[i].size, .block_size = cfg[i].grain,
					       .variant = "streamOptimized",
					       .source_copied = &copied };
		struct stream_walk w;
		u64 gsec = (cfg[i].grain ? cfg[i].grain : 65536) / VMDK_SECTOR, want = 0, j;
		u64 *ql = calloc(512, sizeof(*ql));
		struct vdimg_chain *c;
		u8 *buf = malloc(gsec * VMDK_SECTOR);
		int r, fd;

		r = sh("rm -f '%s' && truncate -s %llu '%s'", raw, (unsigned long long)cfg[i].size,
		       raw);
		if (cfg[i].fill)
			r = r ?: sh("qemu-io -f raw %s -c 'write -P 0x3c %llu 3k' '%s' >/dev/null",
				    fill_cmds, (unsigned long long)cfg[i].size - 3 * KiB, raw);
		if (!ok(r == 0, "stream %zu: source made", i)) {
			free(ql);
			free(buf);
			continue;
		}
		if (cfg[i].fill) {
			rs.fd = openf(raw, O_RDONLY);
			o.source_read = raw_source_read;
			o.source_ctx = &rs;
		}
		r = create_file(p[0], &o);
		if (rs.fd >= 0) {
			/* the non-zero grains of the source: what the stream must hold */
			for (j = 0; j * gsec * VMDK_SECTOR < cfg[i].size; j++) {
				size_t n = min_t(u64, gsec * VMDK_SECTOR,
						 cfg[i].size - j * gsec * VMDK_SECTOR);

				if (pread(rs.fd, buf, n, j * gsec * VMDK_SECTOR) == (ssize_t)n &&
				    (buf[0] || memcmp(buf, buf + 1, n - 1)))
					want++;
			}
			close(rs.fd);
		}
		if (!ok_err(r, 0, "stream %zu: create (grain %u, %llu bytes)", i, cfg[i].grain,
			    (unsigned long long)cfg[i].size)) {
			free(ql);
			free(buf);
			continue;
		}
		ok(copied == cfg[i].fill, "stream %zu: says it copied the source (%d)", i, copied);
		ok(sh("qemu-img check -q -f vmdk '%s'", p[0]) == 0,
		   "stream %zu: qemu-img check is clean", i);
		if (cfg[i].fill)
			ok(sh("qemu-img compare -q -f raw -F vmdk '%s' '%s'", raw, p[0]) == 0,
			   "stream %zu: qemu-img compare equal to the source", i);
		else
			ok(sh("qemu-img compare -q -f raw -F vmdk '%s' '%s'", raw, p[0]) == 0,
			   "stream %zu: an empty stream reads zeros", i);
		ok(chain_matches_qemu(p, 1, "stream create"),
		   "stream %zu: libvdimg reads it as qemu-img convert does", i);
		if (have_vmdkinfo)
			ok(sh("vmdkinfo '%s' 2>&1 | grep -q 'Stream optimized'", p[0]) == 0,
			   "stream %zu: vmdkinfo reads it as stream optimized", i);
		ok(walk_stream(p[0], &w), "stream %zu: every marker is valid, back to back", i);
		ok(w.head_gd == VMDK_GD_AT_END && w.head_flags == 0x30001,
		   "stream %zu: header gdOffset GD_AT_END, flags %#x", i, w.head_flags);
		ok(w.grains == want, "stream %zu: %llu grains for %llu non-zero source grains", i,
		   (unsigned long long)w.grains, (unsigned long long)want);
		ok(w.in_order && w.gts_after_grains && w.gds == 1 && w.tail_ok &&
		   w.footer_gd == w.gd_sector,
		   "stream %zu: grains in order, each GT after its grains, GD, footer naming it, EOS last (%llu GTs)",
		   i, (unsigned long long)w.gts);
		if (cfg[i].fill && !cfg[i].grain) {
			u64 nq;

			/* qemu-img's stream of the same source holds the same grains */
			r = sh("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized '%s' '%s'",
			       raw, q);
			nq = r ? 0 : qemu_stream_lbas(q, ql, 512);
			ok(nq == w.grains && nq <= 512 && !memcmp(ql, w.lbas, nq * sizeof(u64)),
			   "stream %zu: the same %llu grain LBAs as qemu-img convert writes", i,
			   (unsigned long long)nq);
		}
		fd = open(p[0], O_RDWR | O_CLOEXEC);
		r = vdimg_chain_open_fds(&c, &fd, p, 1, NULL, 0);
		ok(r == -EOPNOTSUPP && strstr(ktap_last_msg, "streamOptimized"),
		   "stream %zu: a writable open is refused by name (%d)", i, r);
		if (!r)
			vdimg_chain_close(c);
		close(fd);
		free(ql);
		free(buf);
	}
	{
		struct vdimg_create_opts o = { .size = MiB, .variant = "streamOptimized",
					       .parent = "base.vmdk" };
		struct vdimg_image dummy = { .size = MiB };

		o.parent_img = &dummy;
		ok_err(create_file(tp("bad.vmdk"), &o), -EOPNOTSUPP,
		       "a streamOptimized create with a parent is refused");
	}
}

/* ---- descriptors: NUL padding, lines kept on every rewrite ---- */

/* where the descriptor of @d (@len bytes) is: embedded in a sparse file, or the whole file */
static void desc_where(const u8 *d, size_t len, size_t *off, size_t *n)
{
	const struct vmdk_header *h = (const void *)d;

	*off = 0;
	*n = len;
	if (len >= VMDK_SECTOR && le32_to_cpu(h->magic) == VMDK_MAGIC) {
		*off = min_t(u64, le64_to_cpu(h->desc_offset) * VMDK_SECTOR, len);
		*n = min_t(u64, le64_to_cpu(h->desc_size) * VMDK_SECTOR, len - *off);
	}
}

/* the descriptor text of @path, up to the first NUL (malloc'd) */
static char *desc_text(const char *path)
{
	size_t len, off, n;
	u8 *d = slurp(path, &len);
	char *t;

	if (!d)
		return strdup("");
	desc_where(d, len, &off, &n);
	t = strndup((char *)d + off, n);
	free(d);
	return t;
}

/*
 * Put @text into the descriptor of @path before the line that starts with @before; a separate
 * descriptor file gets @pad NULs after its text (an embedded one is NUL-padded anyway).
 */
static int desc_insert(const char *path, const char *before, const char *text, size_t pad)
{
	size_t len, off, n, tl;
	u8 *d = slurp(path, &len);
	char *t = d ? desc_text(path) : NULL, *at = t ? strstr(t, before) : NULL, *out;
	int fd, ret = -EINVAL;

	if (!at) {
		free(d);
		free(t);
		return -ENOENT;
	}
	desc_where(d, len, &off, &n);
	tl = strlen(t) + strlen(text);
	out = calloc(1, tl + pad + 1);
	memcpy(out, t, at - t);
	memcpy(out + (at - t), text, strlen(text));
	memcpy(out + (at - t) + strlen(text), at, strlen(at));
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (off && tl <= n)
		ret = pwrite(fd, out, tl, off) == (ssize_t)tl ? 0 : -EIO;
	else if (!off)
		ret = pwrite(fd, out, tl + pad, 0) == (ssize_t)(tl + pad) &&
		      !ftruncate(fd, tl + pad) ? 0 : -EIO;
	close(fd);
	free(out);
	free(t);
	free(d);
	return ret;
}

/* @t without the lines whose key is one of @keys (NULL-terminated), every other byte kept */
static char *desc_without(const char *t, const char *const *keys)
{
	char *out = calloc(1, strlen(t) + 1);
	const char *eol;
	size_t len = 0, i;

	for (; *t; t = eol) {
		bool drop = false;

		eol = strchr(t, '\n');
		eol = eol ? eol + 1 : t + strlen(t);
		for (i = 0; keys[i]; i++)
			drop |= !strncmp(t, keys[i], strlen(keys[i])) &&
				(t[strlen(keys[i])] == '=' || t[strlen(keys[i])] == ' ');
		if (!drop) {
			memcpy(out + len, t, eol - t);
			len += eol - t;
		}
	}
	return out;
}

/* do @a and @b differ at most in the lines of @keys? */
static bool desc_same_but(const char *a, const char *b, const char *const *keys)
{
	char *x = desc_without(a, keys), *y = desc_without(b, keys);
	bool same = !strcmp(x, y);

	if (!same)
		printf("# descriptors differ:\n# --- before\n%s# --- after\n%s", x, y);
	free(x);
	free(y);
	return same;
}

static const char *const extra_lines =
	"ddb.uuid.image = \"6000C29a-0102-0304-0506-0708090a0b0c\"\n"
	"ddb.longContentID = \"0123456789abcdef0123456789abcdef\"\n"
	"\n# a comment that stays\n"
	"some.unknown.key = \"a b  c\"\r\n"
	"ddb.toolsInstallType = \"4\"\n";

/*
 * A child (embedded descriptor, or a separate NUL-padded descriptor file) with ddb fields, blank
 * lines, comments, CR LF and lines vdimg does not know: it reads like qemu reads it, the CID
 * renewal of the first write changes only the CID line, set_parent only the parent lines, and
 * qemu-img check stays clean.
 */
static void test_desc_keep(void)
{
	static const char *const variants[] = { "monolithicSparse", "twoGbMaxExtentSparse" };
	static const char *const cid_keys[] = { "CID", NULL };
	static const char *const parent_keys[] = { "parentCID", "parentFileNameHint", NULL };
	const char *b = tp("dk-b.vmdk"), *b2 = tp("dk-b2.vmdk"), *top = tp("dk.vmdk");
	const char *p[2] = { b, top }, *p2[2] = { b2, top };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(variants); i++) {
		struct vdimg_chain *c, *pc;
		char *before, *after;
		u8 buf[4096];
		int r, fd, pfd;

		r = sh("rm -f '%s'* '%s' '%s' %s/dk-s0*.vmdk && qemu-img create -q -f vmdk '%s' 4M && "
		       "qemu-io -f vmdk -c 'write -P 0xb1 0 4m' '%s' >/dev/null && cp '%s' '%s' && "
		       "qemu-img create -q -f vmdk -o subformat=%s -b '%s' -F vmdk '%s' && "
		       "qemu-io -f vmdk -c 'write -P 0xc2 1m 64k' '%s' >/dev/null",
		       top, b, b2, ktap_dir, b, b, b, b2, variants[i], b, top, top);
		r = r ?: desc_insert(top, "ddb.adapterType", extra_lines, 2000);
		if (!ok(r == 0, "%s child with extra descriptor lines%s", variants[i],
			i ? " and 2000 NULs after them" : ""))
			continue;
		ok(chain_matches_qemu(p, 2, variants[i]), "%s: the chain reads as qemu reads it",
		   variants[i]);
		before = desc_text(top);
		r = open_chain(&c, p, 2, false);
		if (ok_err(r, 0, "%s: open the chain writable", variants[i])) {
			memset(buf, 0xd3, sizeof(buf));
			ok_err(vdimg_chain_pwrite(c, buf, sizeof(buf), 3 * MiB), 0,
			       "%s: a write (renews the CID)", variants[i]);
			close_chain(c, 2);
		}
		after = desc_text(top);
		ok(read_cid(top, "CID") != 0 && strcmp(before, after) &&
		   desc_same_but(before, after, cid_keys),
		   "%s: the CID renewal changed the CID line and nothing else", variants[i]);
		free(before);
		before = after;
		fd = open(top, O_RDWR | O_CLOEXEC);
		r = vdimg_chain_open_fds(&c, &fd, &top, 1, NULL, VDIMG_CHAIN_ORPHAN_OK);
		if (!r) {
			pfd = open(b2, O_RDONLY | O_CLOEXEC);
			r = vdimg_chain_open_fds(&pc, &pfd, &b2, 1, NULL, VDIMG_CHAIN_READ_ONLY);
			if (!r) {
				r = vdimg_vmdk_tool_ops.set_parent(vdimg_chain_top(c), "dk-b2.vmdk",
								   vdimg_chain_top(pc));
				vdimg_chain_close(pc);
			}
			close(pfd);
			vdimg_chain_close(c);
		}
		close(fd);
		ok_err(r, 0, "%s: set_parent to a copy of the parent", variants[i]);
		after = desc_text(top);
		ok(strstr(after, "parentFileNameHint=\"dk-b2.vmdk\"") &&
		   desc_same_but(before, after, parent_keys),
		   "%s: set_parent changed the parent lines and nothing else", variants[i]);
		ok(strstr(after, "\n\n# a comment that stays\nsome.unknown.key = \"a b  c\"\r\n"),
		   "%s: blank line, comment, unknown line and CR LF are still there", variants[i]);
		free(before);
		free(after);
		ok(sh("qemu-img check -q '%s'", top) == 0 && chain_matches_qemu(p2, 2, "rebased"),
		   "%s: qemu-img check clean, reads like qemu over the new parent", variants[i]);
	}
}

/*
 * A child we create over a VMDK parent takes the parent's adapter, hardware version, geometry and
 * other ddb lines (not longContentID); explicit options still win.
 */
static void test_desc_child(void)
{
	const char *b = tp("dc-b.vmdk"), *top = tp("dc.vmdk");
	const char *p[2] = { b, top };
	struct vdimg_chain *pc;
	char *t;
	int r, pfd;

	r = sh("rm -f '%s' && qemu-img create -q -f vmdk -o adapter_type=lsilogic,hwversion=7 '%s' 6M",
	       b, b);
	r = r ?: desc_insert(b, "ddb.adapterType", extra_lines, 0);
	if (!ok(r == 0, "child create: a parent with extra ddb lines"))
		return;
	for (int round = 0; round < 2; round++) {
		struct vdimg_create_opts o = { .parent = b,
					       .options = round ? "adapter_type=buslogic" : NULL };

		pfd = open(b, O_RDONLY | O_CLOEXEC);
		r = vdimg_chain_open_fds(&pc, &pfd, &b, 1, NULL, VDIMG_CHAIN_READ_ONLY);
		if (!ok_err(r, 0, "child create %d: open the parent", round)) {
			close(pfd);
			return;
		}
		o.parent_img = vdimg_chain_top(pc);
		r = create_file(top, &o);
		vdimg_chain_close(pc);
		close(pfd);
		if (!ok_err(r, 0, "child create %d: create", round))
			continue;
		t = desc_text(top);
		if (!ok(strstr(t, round ? "ddb.adapterType = \"buslogic\"\n" :
			  "ddb.adapterType = \"lsilogic\"\n") &&
		   strstr(t, "ddb.virtualHWVersion = \"7\"\n") &&
		   strstr(t, "ddb.geometry.heads = \"255\"\n") &&
		   strstr(t, "ddb.uuid.image = \"6000C29a-0102-0304-0506-0708090a0b0c\"\n") &&
		   strstr(t, "ddb.toolsInstallType = \"4\"\n") && !strstr(t, "longContentID") &&
		   !strstr(t, "some.unknown.key"),
		   "child create %d: the parent's ddb lines, %s adapter, no longContentID", round,
		   round ? "the given" : "the parent's"))
			printf("# the child's descriptor:\n%s", t);
		ok(strstr(t, "ddb.adapterType") &&
		   !strstr(strstr(t, "ddb.adapterType") + 1, "ddb.adapterType") &&
		   !strstr(strstr(t, "ddb.virtualHWVersion") + 1, "ddb.virtualHWVersion"),
		   "child create %d: one adapterType and one virtualHWVersion line", round);
		free(t);
		ok(sh("qemu-img check -q '%s' && qemu-img info '%s' | grep -q 'backing file: %s'",
		      top, top, b) == 0 && chain_matches_qemu(p, 2, "child"),
		   "child create %d: qemu-img check clean, reads like qemu", round);
	}
}

/* ---- seSparse (selftests/host/mksesparse.py makes them; qemu reads them) ---- */

static char mkse[600];

/* the seSparse image @desc from mksesparse.py with @args */
static int make_se(const char *desc, u64 size, const char *args)
{
	return sh("python3 '%s' '%s' %llu %s", mkse, desc, (unsigned long long)size, args);
}

/*
 * seSparse extents: allocated grains placed out of order at indexes past 4096 (both halves of the
 * entry's index), zeroed and unmapped grains, several grain tables, a size that ends inside a
 * grain; alone and as a child over a monolithicSparse parent (zeroed grains hide the parent's
 * data): libvdimg reads what qemu-img convert reads. A writable open is refused by name; broken
 * headers, directory and table entries fail cleanly.
 */
static void test_sesparse(void)
{
	static const struct {
		u64 size;
		int seed;
	} cfg[] = {
		{ 20 * MiB, 1 }, { 40 * MiB + 1536, 2 }, { 1000 * KiB, 3 },
	};
	static const struct {
		const char *kind;
		int err;
	} bad[] = {
		{ "magic", -EUCLEAN }, { "gde", -EUCLEAN }, { "gte", -EUCLEAN },
		{ "grain", -EUCLEAN }, { "replay", -EOPNOTSUPP },
	};
	const char *p[2] = { tp("seb.vmdk"), tp("se.vmdk") };
	struct vdimg_chain *c;
	char args[1200];
	size_t i;
	int r;

	snprintf(mkse, sizeof(mkse), "%s/selftests/host/mksesparse.py",
		 getenv("VDIMG_SRC") ? getenv("VDIMG_SRC") : ".");
	if (access(mkse, R_OK) || sh("command -v python3 >/dev/null")) {
		skip("seSparse: python3 or %s missing", mkse);
		return;
	}
	for (i = 0; i < ARRAY_SIZE(cfg); i++) {
		snprintf(args, sizeof(args), "--seed %d", cfg[i].seed);
		if (!ok(make_se(p[1], cfg[i].size, args) == 0, "seSparse %zu: made (%llu bytes)", i,
			(unsigned long long)cfg[i].size))
			continue;
		ok(chain_matches_qemu(&p[1], 1, "sesparse"),
		   "seSparse %zu: reads as qemu-img convert reads it", i);
	}
	/* a child over a monolithicSparse parent full of data */
	r = sh("rm -f '%s' && qemu-img create -q -f vmdk '%s' 20M && qemu-io -f vmdk -c 'write -P 0x77 0 20m' '%s' >/dev/null",
	       p[0], p[0], p[0]);
	snprintf(args, sizeof(args), "--seed 9 --parent seb.vmdk --parent-cid %08x",
		 read_cid(p[0], "CID"));
	r = r ?: make_se(p[1], 20 * MiB, args);
	if (ok(r == 0, "seSparse child over a monolithicSparse parent made")) {
		ok(chain_matches_qemu(p, 2, "sesparse child"),
		   "seSparse child: the chain reads as qemu-img convert reads it");
		r = open_chain(&c, p, 2, true);
		ok(!r && !strcmp(vdimg_chain_top(c)->variant, "sesparse"),
		   "seSparse child: opened read-only, its variant is sesparse (%d)", r);
		if (!r)
			close_chain(c, 2);
	}
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		u8 *buf = malloc(20 * MiB);

		snprintf(args, sizeof(args), "--corrupt %s", bad[i].kind);
		if (!ok(make_se(p[1], 20 * MiB, args) == 0, "seSparse with a bad %s made",
			bad[i].kind)) {
			free(buf);
			continue;
		}
		r = open_chain(&c, &p[1], 1, true);
		if (!r) {
			r = vdimg_chain_pread(c, buf, 20 * MiB, 0);
			close_chain(c, 1);
		}
		ok_err(r, bad[i].err, "seSparse with a bad %s fails cleanly (%s)", bad[i].kind,
		       ktap_last_msg);
		free(buf);
	}
}

/* does qemu-img convert -O raw of @top read @want[@size]? */
static bool qemu_reads(const char *top, const u8 *want, u64 size, const char *tag)
{
	size_t len, i;
	u8 *got;
	bool same;

	if (sh("qemu-img convert -O raw '%s' '%s'", top, tp("ref.raw"))) {
		printf("# %s: qemu-img convert failed\n", tag);
		return false;
	}
	got = slurp(tp("ref.raw"), &len);
	same = got && len == size && !memcmp(got, want, size);
	if (got && !same && len == size) {
		for (i = 0; got[i] == want[i]; i++)
			;
		printf("# %s: first difference at %zu: want %02x, qemu reads %02x\n", tag, i, want[i],
		       got[i]);
	}
	free(got);
	return same;
}

/* the whole chain @p[@n] read through libvdimg into @buf */
static int chain_read(const char *const *p, int n, u8 *buf, u64 size)
{
	struct vdimg_chain *c;
	int r = open_chain_with(&c, p, n, NULL, NULL, true, VDIMG_CHAIN_FORCE_LINK);

	if (r)
		return r;
	r = vdimg_chain_pread(c, buf, size, 0);
	close_chain(c, n);
	return r;
}

/*
 * Writing seSparse extents: random writes, discards and write-zeroes through libvdimg into a
 * standalone extent with data, one whose size ends inside a grain, and a fresh child over a
 * monolithicSparse parent (zeroed entries hide the parent); qemu-img convert then reads exactly what
 * was written, and the renewed CID is in the descriptor. A full grain area fails with -ENOSPC and
 * leaves the image readable as written; extents with a bitmap or overlapping areas are refused for
 * writing only.
 */
static void test_sesparse_write(void)
{
	static const struct {
		u64 size;
		const char *args;
		bool child;
	} cfg[] = {
		{ 20 * MiB, "--seed 4 --room", false },
		{ 40 * MiB + 1536, "--seed 5 --room", false },
		{ 20 * MiB, "--empty --room", true },
		{ 20 * MiB, "--seed 6 --room", true },
	};
	const char *p[2] = { tp("seb.vmdk"), tp("se.vmdk") };
	struct vdimg_chain *c;
	char args[1200];
	size_t i;
	int r;

	if (access(mkse, R_OK) || sh("command -v python3 >/dev/null")) {
		skip("seSparse write: python3 or mksesparse.py missing");
		return;
	}
	r = sh("rm -f '%s' && qemu-img create -q -f vmdk '%s' 20M && qemu-io -f vmdk -c 'write -P 0x77 0 20m' '%s' >/dev/null",
	       p[0], p[0], p[0]);
	ok(r == 0, "seSparse write: a monolithicSparse parent made");
	for (i = 0; i < ARRAY_SIZE(cfg); i++) {
		const char *const *pp = cfg[i].child ? p : p + 1;
		int n = cfg[i].child ? 2 : 1;
		u64 size = cfg[i].size;
		u8 *shadow = malloc(size), *got = malloc(size);
		u32 cid0, cid1;

		if (cfg[i].child)
			snprintf(args, sizeof(args), "%s --parent seb.vmdk --parent-cid %08x",
				 cfg[i].args, read_cid(p[0], "CID"));
		else
			snprintf(args, sizeof(args), "%s", cfg[i].args);
		r = make_se(p[1], size, args);
		r = r ?: chain_read(pp, n, shadow, size);
		cid0 = read_cid(p[1], "CID");
		r = r ?: open_chain(&c, pp, n, false);
		if (!ok(!r, "seSparse write %zu: made and opened writable (%d)", i, r))
			goto next;
		rnd_state = 100 + i;
		r = workload(c, shadow, size, 120, 3 + i, 300);
		r = r ?: vdimg_chain_flush(c);
		ok(!r, "seSparse write %zu: 120 writes, discards, write-zeroes and flushes (%d)", i,
		   r);
		rnd_state = 200 + i;
		r = workload(c, shadow, size, 40, 50 + i, 64);
		close_chain(c, n);
		cid1 = read_cid(p[1], "CID");
		ok(!r && cid1 != cid0, "seSparse write %zu: the CID was renewed (%08x -> %08x)", i,
		   cid0, cid1);
		ok(qemu_reads(pp[n - 1], shadow, size, "sesparse write"),
		   "seSparse write %zu: qemu-img convert reads what was written", i);
		r = chain_read(pp, n, got, size);
		ok(!r && !memcmp(got, shadow, size),
		   "seSparse write %zu: re-opened, libvdimg reads what was written (%d)", i, r);
next:
		free(shadow);
		free(got);
	}

	/* a child made by create --variant seSparse over the parent, then written */
	{
		struct vdimg_create_opts o = { .parent = p[0], .variant = "seSparse" };
		u8 *shadow = malloc(20 * MiB);
		int pfd = open(p[0], O_RDONLY | O_CLOEXEC);
		struct vdimg_chain *pc;
		char *t;

		r = vdimg_chain_open_fds(&pc, &pfd, &p[0], 1, NULL, VDIMG_CHAIN_READ_ONLY);
		if (!r) {
			o.parent_img = vdimg_chain_top(pc);
			sh("rm -f '%s'", tp("se-sesparse.vmdk"));
			r = create_file(p[1], &o);
			vdimg_chain_close(pc);
		}
		close(pfd);
		t = desc_text(p[1]);
		ok(!r && strstr(t, "createType=\"seSparse\"") &&
		   strstr(t, "SESPARSE \"se-sesparse.vmdk\""),
		   "seSparse create: a child descriptor with one SESPARSE extent (%d)", r);
		free(t);
		ok(!r && qemu_reads(p[1], memset(shadow, 0x77, 20 * MiB), 20 * MiB, "se create"),
		   "seSparse create: qemu-img reads the new child as its parent");
		r = r ?: open_chain(&c, p, 2, false);
		if (!r) {
			rnd_state = 300;
			r = workload(c, shadow, 20 * MiB, 150, 77, 600);
			close_chain(c, 2);
		}
		ok(!r && qemu_reads(p[1], shadow, 20 * MiB, "se create write"),
		   "seSparse create: written through libvdimg, qemu-img reads what was written (%d)",
		   r);
		o.parent = NULL;
		o.parent_img = NULL;
		o.size = MiB;
		o.block_size = 65536;
		ok_err(create_file(tp("bad.vmdk"), &o), -EINVAL,
		       "seSparse create: a grain size other than 4 KiB is refused");
		free(shadow);
	}

	/* no --room: a few spare grains, then the grain area is full */
	if (!make_se(p[1], 20 * MiB, "--seed 7") && !open_chain(&c, &p[1], 1, false)) {
		u8 *shadow = malloc(20 * MiB), *buf = malloc(MiB);
		u64 off;

		r = vdimg_chain_pread(c, shadow, 20 * MiB, 0);
		memset(buf, 0xa5, MiB);
		for (off = 0; !r && off < 20 * MiB; off += MiB) {
			r = vdimg_chain_pwrite(c, buf, MiB, off);
			if (!r)
				memcpy(shadow + off, buf, MiB);
		}
		ok_err(r, -ENOSPC, "seSparse write: a full grain area fails with -ENOSPC (%s)",
		       ktap_last_msg);
		close_chain(c, 1);
		ok(qemu_reads(p[1], shadow, 20 * MiB, "sesparse full"),
		   "seSparse write: after -ENOSPC qemu reads every write that succeeded");
		free(shadow);
		free(buf);
	} else {
		ok(false, "seSparse write: a small extent made and opened");
	}
	if (!make_se(p[1], 20 * MiB, "--corrupt bitmap")) {
		r = open_chain(&c, &p[1], 1, false);
		ok(r == -EOPNOTSUPP && strstr(ktap_last_msg, "bitmap"),
		   "seSparse with an allocation bitmap: a writable open is refused by name (%d)", r);
		if (!r)
			close_chain(c, 1);
		r = open_chain(&c, &p[1], 1, true);
		ok(!r, "seSparse with an allocation bitmap: a read-only open works (%d)", r);
		if (!r)
			close_chain(c, 1);
	}
	if (!make_se(p[1], 20 * MiB, "--room --corrupt overlap")) {
		r = open_chain(&c, &p[1], 1, false);
		ok_err(r, -EUCLEAN, "seSparse with overlapping areas: a writable open fails cleanly (%s)",
		       ktap_last_msg);
		if (!r)
			close_chain(c, 1);
	}
}

/* @pristine (a descriptor and its one extent file @px) copied to @top and @tx */
static void copy_pristine(const char *pristine, const char *px, const char *top, const char *tx)
{
	sh("cp '%s' '%s' && sed 's/%s/%s/' '%s' > '%s'", tp(px), tp(tx), px, tx, tp(pristine),
	   tp(top));
}

/*
 * Write cuts into a child whose descriptor @pristine names one extent @px (seSparse, COWD) over
 * seb.vmdk: the workload stops after every possible number of writes; each cut image reads the
 * same through qemu-img and libvdimg (no torn table or directory) and keeps everything that was
 * flushed before the cut.
 */
static void test_child_crash(const char *tag, const char *pristine, const char *px, u64 size)
{
	const char *p[2] = { tp("seb.vmdk"), tp("cut.vmdk") };
	u8 *base = malloc(size), *flushed = malloc(size), *got = malloc(size);
	int bad = 0, lost = 0, cut;
	long long total;
	struct vdimg_chain *c;
	u64 j;

	copy_pristine(pristine, px, "cut.vmdk", "cut-x.vmdk");
	if (open_chain(&c, p, 2, false)) {
		ok(false, "%s crash: open", tag);
		goto out;
	}
	vdimg_write_budget = 1LL << 40;
	rnd_state = 77;
	workload(c, base, size, 12, 1, 64);
	vdimg_chain_close(c);
	total = (1LL << 40) - vdimg_write_budget;
	vdimg_write_budget = -1;
	for (cut = 0; cut <= total; cut++) {
		int ret;

		copy_pristine(pristine, px, "cut.vmdk", "cut-x.vmdk");
		if (chain_read(p, 2, base, size) || open_chain(&c, p, 2, false)) {
			bad++;
			continue;
		}
		vdimg_write_budget = cut;
		vdimg_msg_level = -1;
		rnd_state = 77;
		ret = workload(c, base, size, 6, 1, 64);
		if (!ret)
			ret = vdimg_chain_flush(c);
		memcpy(flushed, base, size);
		if (!ret)
			workload(c, base, size, 6, 1 + 6, 64);
		vdimg_chain_close(c);
		vdimg_write_budget = -1;
		vdimg_msg_level = VDIMG_LOG_INFO;
		if (chain_read(p, 2, got, size) || !qemu_reads(p[1], got, size, "cut")) {
			bad++;
			if (bad < 4)
				printf("# cut %d: libvdimg and qemu-img disagree or fail\n", cut);
			continue;
		}
		if (!ret)
			for (j = 0; j < size; j += 512)
				if (!memcmp(flushed + j, base + j, 512) &&
				    memcmp(got + j, flushed + j, 512)) {
					lost++;
					break;
				}
	}
	ok(total > 10, "%s crash: the workload makes %lld writes", tag, total);
	ok(!bad, "%s crash: %lld cut points, qemu-img and libvdimg read every cut alike (%d bad)",
	   tag, total + 1, bad);
	ok(!lost, "%s crash: flushed data survives every cut (%d lost)", tag, lost);
out:
	free(base);
	free(flushed);
	free(got);
}

static void test_sesparse_crash(void)
{
	char args[200];

	snprintf(args, sizeof(args), "--seed 11 --room --parent seb.vmdk --parent-cid %08x",
		 read_cid(tp("seb.vmdk"), "CID"));
	if (ok(make_se(tp("sepristine.vmdk"), 8 * MiB, args) == 0, "seSparse crash: child made"))
		test_child_crash("seSparse", "sepristine.vmdk", "sepristine-sesparse.vmdk", 8 * MiB);
}

static void poke(const char *path, u64 off, u64 v, int len);

/* a vmfsSparse child of @size over seb.vmdk (or none) made by create, at @path */
static int make_cowd(const char *path, u64 size, bool child)
{
	struct vdimg_create_opts o = { .size = size, .variant = "vmfsSparse" };
	const char *b = tp("seb.vmdk");
	struct vdimg_chain *pc = NULL;
	char x[600];
	int pfd = -1, r = 0;

	snprintf(x, sizeof(x), "%.*s-delta.vmdk", (int)strlen(path) - 5, path);
	unlink(x);
	if (child) {
		pfd = open(b, O_RDONLY | O_CLOEXEC);
		r = vdimg_chain_open_fds(&pc, &pfd, &b, 1, NULL, VDIMG_CHAIN_READ_ONLY);
		o.parent = b;
		o.size = 0;
		o.parent_img = r ? NULL : vdimg_chain_top(pc);
	}
	r = r ?: create_file(path, &o);
	if (pc)
		vdimg_chain_close(pc);
	if (pfd >= 0)
		close(pfd);
	return r;
}

/*
 * Writing COWD (vmfsSparse) extents behind a descriptor: children and standalone disks made by
 * create --variant vmfsSparse, written by workloads through libvdimg, read by qemu-img as written;
 * freeSector covers every grain; a bare COWD file (no descriptor) stays read-only; write cuts.
 */
static void test_cowd_write(void)
{
	const char *p[2] = { tp("seb.vmdk"), tp("cw.vmdk") };
	struct vdimg_chain *c;
	u32 round;
	int r;

	for (round = 0; round < 2; round++) {
		const char *const *pp = round ? p : p + 1;
		int n = round ? 2 : 1;
		u64 size = round ? 20 * MiB : 24 * MiB + 3584;
		u8 *shadow = malloc(size), *got = malloc(size);
		char *t;

		r = make_cowd(p[1], size, round);
		t = desc_text(p[1]);
		ok(!r && strstr(t, "createType=\"vmfsSparse\"") &&
		   strstr(t, "VMFSSPARSE \"cw-delta.vmdk\""),
		   "COWD %u: create --variant vmfsSparse makes a descriptor and a delta (%d)", round,
		   r);
		free(t);
		r = r ?: chain_read(pp, n, shadow, size);
		ok(!r && qemu_reads(pp[n - 1], shadow, size, "cowd new"),
		   "COWD %u: qemu-img reads the new disk as libvdimg does", round);
		r = r ?: open_chain(&c, pp, n, false);
		if (!r) {
			rnd_state = 500 + round;
			r = workload(c, shadow, size, 150, 9 + round, 300);
			r = r ?: vdimg_chain_flush(c);
			r = r ?: workload(c, shadow, size, 30, 90 + round, 16);
			close_chain(c, n);
		}
		ok(!r, "COWD %u: 180 writes, discards and flushes through libvdimg (%d)", round, r);
		ok(!r && qemu_reads(pp[n - 1], shadow, size, "cowd write"),
		   "COWD %u: qemu-img reads what was written", round);
		r = chain_read(pp, n, got, size);
		ok(!r && !memcmp(got, shadow, size),
		   "COWD %u: re-opened, libvdimg reads what was written (%d)", round, r);
		{
			u32 fs = 0;
			int fd = open(tp("cw-delta.vmdk"), O_RDONLY | O_CLOEXEC);

			if (fd >= 0 && pread(fd, &fs, 4, 28) == 4)
				fs = le32toh(fs);
			if (fd >= 0)
				close(fd);
			ok((u64)fs * 512 >= fsize(tp("cw-delta.vmdk")) && peek8(tp("cw-delta.vmdk"), 1648) == 0,
			   "COWD %u: freeSector (%u) covers the file (%llu bytes), uncleanShutdown clear",
			   round, fs, (unsigned long long)fsize(tp("cw-delta.vmdk")));
		}
		free(shadow);
		free(got);
	}
	/* the delta alone, without its descriptor: read-only */
	r = open_chain(&c, (const char *const[]){ tp("cw-delta.vmdk") }, 1, false);
	ok(r == -EOPNOTSUPP && strstr(ktap_last_msg, "descriptor"),
	   "a bare COWD file: a writable open is refused by name (%d)", r);
	if (!r)
		close_chain(c, 1);
	/* a hostile freeSector: inside the metadata (allocation still starts at the end of the
	 * file), or at the end of the 32-bit space (writes fail with -ENOSPC, nothing breaks) */
	for (round = 0; round < 2; round++) {
		u8 *shadow = malloc(20 * MiB), buf[8192];

		r = make_cowd(p[1], 0, true);
		poke(tp("cw-delta.vmdk"), 28, round ? 0xfffffff0U : 1, 4);
		r = r ?: chain_read(p, 2, shadow, 20 * MiB);
		r = r ?: open_chain(&c, p, 2, false);
		if (!r) {
			memset(buf, 0x3c, sizeof(buf));
			r = vdimg_chain_pwrite(c, buf, sizeof(buf), 5 * MiB + 512);
			if (!r)
				memcpy(shadow + 5 * MiB + 512, buf, sizeof(buf));
			close_chain(c, 2);
		}
		if (round)
			ok_err(r, -ENOSPC, "COWD with freeSector at the end of the 32-bit space: a write fails cleanly (%s)",
			       ktap_last_msg);
		else
			ok(!r, "COWD with freeSector inside its header: a write works (%d)", r);
		ok(qemu_reads(p[1], shadow, 20 * MiB, "cowd hostile free"),
		   "COWD with a hostile freeSector (%s): qemu-img reads what was written",
		   round ? "0xfffffff0" : "1");
		free(shadow);
	}
	if (ok(make_cowd(tp("cwpristine.vmdk"), 0, true) == 0, "COWD crash: child made"))
		test_child_crash("COWD", "cwpristine.vmdk", "cwpristine-delta.vmdk", 20 * MiB);
}

/* ---- raw-device extents ---- */

/* a descriptor @path of @type naming @dev as one extent of @sectors */
static void write_dev_desc(const char *path, const char *ct, const char *line)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return;
	fprintf(f, "# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\n"
		"createType=\"%s\"\n\n# Extent description\n%s\n\n# The Disk Data Base\n#DDB\n\n"
		"ddb.adapterType = \"lsilogic\"\n", ct, line);
	fclose(f);
}

/*
 * Extents that name a block device by absolute path (vmfsRaw, vmfsRDM, vmfsPassthroughRawDeviceMap,
 * FLAT on a device): refused unless the caller opts in (VDIMG_CHAIN_DEVICE_EXTENTS, vdimgctl attach
 * --allow-device-extents), and then only for block devices; with it a loop device reads as qemu
 * reads the descriptor and takes writes. Skips when no loop device can be set up.
 */
static void test_device_extents(void)
{
	static const struct {
		const char *ct, *fmt;
		bool qemu;		/* qemu-img knows the createType */
	} kinds[] = {
		{ "vmfsRaw", "RW 8192 VMFSRAW \"%s\"", false },
		{ "vmfsRawDeviceMap", "RW 8192 VMFSRDM \"%s\"", false },
		{ "vmfsPassthroughRawDeviceMap", "RW 8192 VMFSRDMP \"%s\"", false },
		{ "monolithicFlat", "RW 8192 FLAT \"%s\" 0", true },
	};
	const char *d[1] = { tp("dev.vmdk") };
	const u64 size = 4 * MiB;
	char dev[64] = "", line[300];
	u8 *want = malloc(size), *got = malloc(size), buf[65536];
	struct vdimg_chain *c;
	size_t i;
	FILE *lo;
	int r;

	for (i = 0; i < size; i++)
		want[i] = (u8)(i * 7 + (i >> 12));
	close(tfile("dev.raw", want, size));
	snprintf(line, sizeof(line), "losetup -f --show '%s' 2>/dev/null", tp("dev.raw"));
	lo = popen(line, "r");
	if (!lo || !fgets(dev, sizeof(dev), lo) || dev[0] != '/') {
		if (lo)
			pclose(lo);
		skip("device extents: no loop device here (losetup)");
		goto out;
	}
	pclose(lo);
	dev[strcspn(dev, "\n")] = '\0';
	for (i = 0; i < ARRAY_SIZE(kinds); i++) {
		snprintf(line, sizeof(line), kinds[i].fmt, dev);
		write_dev_desc(d[0], kinds[i].ct, line);
		r = open_chain_with(&c, d, 1, NULL, NULL, true, 0);
		ok(r == -EPERM && strstr(ktap_last_msg, "--allow-device-extents"),
		   "%s: without the opt-in the device extent is refused (%d)", kinds[i].ct, r);
		if (!r)
			close_chain(c, 1);
		r = open_chain_with(&c, d, 1, NULL, NULL, true, VDIMG_CHAIN_DEVICE_EXTENTS);
		if (!r) {
			r = c->size == size ? vdimg_chain_pread(c, got, size, 0) : -ERANGE;
			close_chain(c, 1);
		}
		ok(!r && !memcmp(got, want, size),
		   "%s: with the opt-in the device reads as the file behind it (%d)", kinds[i].ct, r);
		if (kinds[i].qemu)
			ok(qemu_reads(d[0], want, size, "dev"), "%s: qemu-img reads it the same",
			   kinds[i].ct);
	}
	/* writes reach the device */
	r = open_chain_with(&c, d, 1, NULL, NULL, false, VDIMG_CHAIN_DEVICE_EXTENTS);
	if (!r) {
		memset(buf, 0x6b, sizeof(buf));
		r = vdimg_chain_pwrite(c, buf, sizeof(buf), MiB + 512);
		r = r ?: vdimg_chain_flush(c);
		close_chain(c, 1);
		memcpy(want + MiB + 512, buf, sizeof(buf));
	}
	ok(!r && qemu_reads(d[0], want, size, "dev write"),
	   "device extent: a write through libvdimg reaches the device, qemu-img reads it (%d)", r);
	/* an absolute path that is not a block device stays refused */
	snprintf(line, sizeof(line), "RW 8192 FLAT \"%s\" 0", tp("dev.raw"));
	write_dev_desc(d[0], "monolithicFlat", line);
	r = open_chain_with(&c, d, 1, NULL, NULL, true, VDIMG_CHAIN_DEVICE_EXTENTS);
	ok(r == -EPERM && strstr(ktap_last_msg, "not a block device"),
	   "an absolute path to a regular file is refused even with the opt-in (%d)", r);
	if (!r)
		close_chain(c, 1);
	sh("losetup -d '%s'", dev);
out:
	free(want);
	free(got);
}

/* ---- compact ---- */

/* file size of @path */
static u64 fsize_of(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (u64)st.st_size;
}

/* compact @path (with its parent @base when not NULL) through the tool op, then check it */
static int compact_one(const char *base, const char *top, struct vdimg_check_result *res)
{
	const char *p[2] = { base, top };
	struct vdimg_chain *c;
	int n = base ? 2 : 1, ret;

	ret = open_chain(&c, base ? p : &p[1], n, false);
	if (ret)
		return ret;
	ret = vdimg_vmdk_tool_ops.compact(vdimg_chain_top(c));
	memset(res, 0, sizeof(*res));
	if (!ret)
		ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, res);
	close_chain(c, n);
	return ret;
}

/*
 * compact of monolithicSparse: all-zero grains are dropped (or become zeroed grains in a child
 * whose parent has data there; kept without zeroed-grain support), the last grains move into the
 * holes, the file shrinks; the disk reads the same (qemu-img compare), qemu-img check and our
 * check are clean and find no leak left; a random workload through libvdimg compacts the same way.
 */
static void test_compact(void)
{
	static const char *const child_opts[] = { "zeroed_grain=on", "zeroed_grain=off" };
	const char *a = tp("cp.vmdk"), *b = tp("cpb.vmdk"), *ref = tp("cp.raw");
	const char *p[1] = { a };
	struct vdimg_check_result res;
	struct vdimg_chain *c;
	u64 before, after;
	size_t i;
	int r;

	r = sh("rm -f '%s' && qemu-img create -q -f vmdk '%s' 40M && qemu-io -f vmdk -c 'write -P 1 0 1m' "
	       "-c 'write -P 0 1m 4m' -c 'write -P 3 10m 64k' -c 'write -P 0 20m 1m' -c 'write -P 5 39m 1m' "
	       "'%s' >/dev/null && qemu-img convert -O raw '%s' '%s'", a, a, a, a, ref);
	if (ok(r == 0, "compact: qemu made an image with zero and data grains")) {
		before = fsize_of(a);
		r = compact_one(NULL, a, &res);
		after = fsize_of(a);
		ok(!r && !res.errors && !res.leaks,
		   "compact: done, our check clean (%d, %llu errors, %llu leaks)", r,
		   (unsigned long long)res.errors, (unsigned long long)res.leaks);
		ok(after < before && after <= 3 * MiB,
		   "compact: the file shrank from %llu to %llu bytes (2 MiB 64 KiB of data)",
		   (unsigned long long)before, (unsigned long long)after);
		ok(sh("qemu-img check -q '%s' && qemu-img compare -q -f raw -F vmdk '%s' '%s'", a, ref,
		      a) == 0, "compact: qemu-img check clean, reads as before");
		ok_err(compact_one(NULL, a, &res), 0, "compact again");
		ok(fsize_of(a) == after, "compact again: nothing more to give back");
	}
	for (i = 0; i < ARRAY_SIZE(child_opts); i++) {
		const char *q[2] = { b, a };

		r = sh("rm -f '%s' '%s' && qemu-img create -q -f vmdk '%s' 16M && "
		       "qemu-io -f vmdk -c 'write -P 0x55 0 16m' '%s' >/dev/null && "
		       "qemu-img create -q -f vmdk -o %s -b '%s' -F vmdk '%s' && "
		       "qemu-io -f vmdk -c 'write -P 0 1m 2m' -c 'write -P 7 8m 64k' -c 'write -P 0 15m 1m' '%s' >/dev/null && "
		       "qemu-img convert -O raw '%s' '%s'",
		       a, b, b, b, child_opts[i], b, a, a, a, ref);
		if (!ok(r == 0, "compact child %s: made", child_opts[i]))
			continue;
		before = fsize_of(a);
		r = compact_one(b, a, &res);
		after = fsize_of(a);
		ok(!r && !res.errors, "compact child %s: done, check clean (%d)", child_opts[i], r);
		ok(i ? after == before : after < before,
		   "compact child %s: %llu -> %llu bytes (%s)", child_opts[i],
		   (unsigned long long)before, (unsigned long long)after,
		   i ? "zero grains must stay" : "zero grains become GTE 1");
		ok(sh("qemu-img check -q '%s' && qemu-img compare -q -f raw -F vmdk '%s' '%s'", a, ref,
		      a) == 0 && chain_matches_qemu(q, 2, "compacted child"),
		   "compact child %s: the chain reads as before (zeros, not the parent's data)",
		   child_opts[i]);
	}
	/* after a random workload through libvdimg */
	{
		struct vdimg_create_opts o = { .size = 24 * MiB, .block_size = 16384 };
		u8 *shadow = calloc(1, 24 * MiB), *got = malloc(24 * MiB);

		r = create_file(a, &o);
		if (!r)
			r = open_chain(&c, p, 1, false);
		if (ok_err(r, 0, "compact workload: create and open")) {
			rnd_state = 4242;
			r = workload(c, shadow, 24 * MiB, 300, 91, 400);
			close_chain(c, 1);
			ok_err(r, 0, "compact workload: 300 random writes/discards");
			before = fsize_of(a);
			r = compact_one(NULL, a, &res);
			ok(!r && !res.errors && !res.leaks && fsize_of(a) <= before,
			   "compact workload: done, clean, %llu -> %llu bytes (%d)",
			   (unsigned long long)before, (unsigned long long)fsize_of(a), r);
			close(tfile("cpshadow.raw", shadow, 24 * MiB));
			ok(sh("qemu-img check -q '%s' && qemu-img compare -q -f raw -F vmdk '%s' '%s'", a,
			      tp("cpshadow.raw"), a) == 0 &&
			   !open_chain(&c, p, 1, true) && !vdimg_chain_pread(c, got, 24 * MiB, 0) &&
			   !memcmp(got, shadow, 24 * MiB),
			   "compact workload: qemu and libvdimg read the shadow");
			close_chain(c, 1);
		}
		free(shadow);
		free(got);
	}
}

/* our create of the variants with extent files: qemu and libvmdk read them, writes cross extents */
static void test_create_split(void)
{
	static const char *const vars[] = {
		"monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
	};
	static u8 buf[2 * MiB];
	const char *p[2] = { tp("cs.vmdk"), tp("cschild.vmdk") };
	struct vdimg_chain *c;
	size_t i;
	int r;

	for (i = 0; i < ARRAY_SIZE(vars); i++) {
		struct vdimg_create_opts o = { .size = 3072 * MiB, .variant = vars[i] };

		sh("rm -f %s/cs*.vmdk", ktap_dir);
		r = create_file(p[0], &o);
		if (!ok_err(r, 0, "create %s, 3 GiB", vars[i]))
			continue;
		ok(sh("test $(ls %s/cs-*.vmdk | wc -l) = %d", ktap_dir, i ? 2 : 1) == 0,
		   "%s: %d extent file(s) beside the descriptor", vars[i], i ? 2 : 1);
		ok(sh("qemu-img check -q -f vmdk '%s' 2>/dev/null || test %zu != 1", p[0], i) == 0 &&
		   sh("qemu-io -f vmdk -c 'write -P 0x5a 2047m 2m' -c 'read -P 0x5a 2047m 2m' '%s' >/dev/null",
		      p[0]) == 0, "%s: qemu writes and reads across the extent boundary", vars[i]);
		if (have_vmdkinfo)
			ok(sh("vmdkinfo '%s' >/dev/null 2>&1", p[0]) == 0, "%s: vmdkinfo reads it",
			   vars[i]);
		r = lib_read(p[0], buf, 2 * MiB, 2047 * MiB);
		ok(!r && is_byte(buf, 2 * MiB, 0x5a), "%s: we read qemu's write", vars[i]);
		r = open_chain(&c, p, 1, false);
		if (!ok_err(r, 0, "%s: open writable", vars[i]))
			continue;
		memset(buf, 0x6d, sizeof(buf));
		r = vdimg_chain_pwrite(c, buf, 1536 * KiB, 2048 * MiB - 768 * KiB);
		close_chain(c, 1);
		ok(!r && sh("qemu-io -f vmdk -c 'read -P 0x6d %llu 1536k' -c 'read -P 0x5a 2047m 256k' '%s' >/dev/null",
			    2048 * MiB - 768 * KiB, p[0]) == 0,
		   "%s: qemu reads our write across the boundary", vars[i]);
		if (i == 1) {
			ok(sh("qemu-img check -q -f vmdk '%s'", p[0]) == 0, "%s: qemu-img check clean after our write",
			   vars[i]);
			/* a split child over it */
			r = open_chain(&c, p, 1, true);
			if (!r) {
				struct vdimg_create_opts co = { .variant = vars[i], .parent = "cs.vmdk",
								.parent_img = c->layers[0] };

				r = create_file(p[1], &co);
				close_chain(c, 1);
			}
			ok(!r && sh("qemu-io -f vmdk -c 'read -P 0x6d 2048m 512k' '%s' >/dev/null",
				    p[1]) == 0, "a %s child made by us reads its parent through qemu", vars[i]);
			r = open_chain(&c, p, 2, false);
			if (ok_err(r, 0, "the split child opens over its parent, CID checked")) {
				r = vdimg_chain_pwrite(c, buf, 4096, 0);
				close_chain(c, 2);
				ok(!r && sh("qemu-img check -q -f vmdk '%s' && qemu-io -f vmdk -c 'read -P 0x6d 0 4k' '%s' >/dev/null",
					    p[1], p[1]) == 0, "a write into the split child: qemu reads it, check clean");
			}
		}
	}
	{
		struct vdimg_create_opts o = { .size = MiB, .variant = "monolithicFlat" };
		int fd = open(tp("cs-flat.vmdk"), O_RDWR | O_CREAT, 0600);

		close(fd);
		ok_err(create_file(p[0], &o), -EEXIST, "create refuses to overwrite an extent file");
		ok(access(tp("cs-flat.vmdk"), F_OK) == 0, "and leaves that file alone");
	}
}

/* a VMDK child over a VDI base and over a raw base (made by our create: qemu does not allow it) */
static void test_foreign_parent(void)
{
	static const char *const bases[] = { "vdi", "raw", "qcow2" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bases); i++) {
		char bname[32];
		const char *p[2];
		struct vdimg_chain *c;
		u8 *want = malloc(8 * MiB), *got = malloc(8 * MiB), buf[70000];
		int ret;

		snprintf(bname, sizeof(bname), "fb.%s", bases[i]);
		p[0] = tp(bname);
		p[1] = tp("fchild.vmdk");
		ret = sh("qemu-img create -q -f %s '%s' 8M && qemu-io -f %s -c 'write -P 0x6b 0 8m' '%s' >/dev/null",
			 bases[i], p[0], bases[i], p[0]);
		if (!ok(ret == 0, "qemu made a %s base", bases[i]))
			goto next;
		ret = open_chain(&c, p, 1, true);
		if (!ret) {
			struct vdimg_create_opts o = { .parent = p[0], .parent_img = c->layers[0] };

			ret = create_file(p[1], &o);
			close_chain(c, 1);
		}
		if (!ok_err(ret, 0, "create a vmdk child over the %s base", bases[i]))
			goto next;
		memset(want, 0x6b, 8 * MiB);
		fill_pat(buf, sizeof(buf), 5, 0);
		memcpy(want + 100000, buf, sizeof(buf));
		ret = open_chain(&c, p, 2, false);
		if (ok_err(ret, 0, "open %s <- vmdk", bases[i])) {
			ret = vdimg_chain_pwrite(c, buf, sizeof(buf), 100000);
			ok(!ret && !vdimg_chain_pread(c, got, 8 * MiB, 0) && !memcmp(got, want, 8 * MiB),
			   "%s <- vmdk: a write across grains, the rest from the base", bases[i]);
			close_chain(c, 2);
		}
		/* qemu takes the parent of a VMDK for a VMDK: check the child without it */
		ok(sh("qemu-img check -q 'json:{\"driver\":\"vmdk\",\"file\":{\"driver\":\"file\",\"filename\":\"%s\"},\"backing\":null}'",
		      p[1]) == 0, "%s <- vmdk: qemu-img check of the child alone is clean", bases[i]);
next:
		free(want);
		free(got);
	}
}

static void test_set_parent(void)
{
	const char *b1 = tp("sp1.vmdk"), *b2 = tp("sp2.vmdk"), *top = tp("sp.vmdk");
	const char *p2[2] = { b2, top };
	struct vdimg_chain *c, *pc;
	int ret, fd, pfd;

	ret = sh("qemu-img create -q -f vmdk '%s' 8M && qemu-io -f vmdk -c 'write -P 0xa1 0 8m' '%s' >/dev/null"
		 " && cp '%s' '%s'"
		 " && qemu-img create -q -f vmdk -b '%s' -F vmdk '%s' && qemu-io -f vmdk -c 'write -P 0xc3 2m 64k' '%s' >/dev/null",
		 b1, b1, b1, b2, b1, top, top);
	if (!ok(ret == 0, "set_parent: qemu made a base, a copy and a child"))
		return;
	fd = open(top, O_RDWR | O_CLOEXEC);
	ret = vdimg_chain_open_fds(&c, &fd, &top, 1, NULL, VDIMG_CHAIN_ORPHAN_OK);
	if (!ok_err(ret, 0, "open the child alone, writable")) {
		close(fd);
		return;
	}
	pfd = open(b2, O_RDONLY | O_CLOEXEC);
	ret = vdimg_chain_open_fds(&pc, &pfd, &b2, 1, NULL, VDIMG_CHAIN_READ_ONLY);
	if (!ret) {
		ret = vdimg_vmdk_tool_ops.set_parent(vdimg_chain_top(c), b2, vdimg_chain_top(pc));
		vdimg_chain_close(pc);
	}
	close(pfd);
	ok_err(ret, 0, "set_parent to the copy");
	vdimg_chain_close(c);
	close(fd);
	ok(sh("qemu-img info '%s' | grep -q 'backing file: %s' && qemu-img check -q '%s'", top, b2,
	      top) == 0, "qemu-img info shows the new parent, check clean");
	ok(read_cid(top, "parentCID") == read_cid(b2, "CID"), "parentCID is the new parent's CID");
	ok(chain_matches_qemu(p2, 2, "rebased"), "the rebased chain reads like qemu-img convert");
	fd = open(top, O_RDWR | O_CLOEXEC);
	ret = vdimg_chain_open_fds(&c, &fd, &top, 1, NULL, VDIMG_CHAIN_ORPHAN_OK);
	if (!ret) {
		ok_err(vdimg_vmdk_tool_ops.set_parent(vdimg_chain_top(c), NULL, NULL), 0,
		       "set_parent(NULL) drops the parent");
		vdimg_chain_close(c);
	}
	close(fd);
	ok(sh("qemu-img check -q '%s' && ! qemu-img info '%s' | grep -q 'backing file'", top, top) == 0,
	   "qemu-img info shows no parent");
	ok(read_cid(top, "parentCID") == 0xffffffff, "parentCID is ffffffff");
}

/* a cut after the data but before the tables: a leak our check finds and repair trims */
static void test_check_repair(void)
{
	const char *p[1] = { tp("leak.vmdk") };
	struct vdimg_check_result res = {};
	struct vdimg_chain *c;
	u8 buf[64 * KiB];
	int ret;

	sh("qemu-img create -q -f vmdk '%s' 8M", p[0]);
	if (open_chain(&c, p, 1, false))
		return;
	fill_pat(buf, sizeof(buf), 3, 0);
	vdimg_chain_pwrite(c, buf, sizeof(buf), 0);
	vdimg_chain_flush(c);
	/* the grain's data reaches the file, its GTE does not */
	vdimg_write_budget = 1;
	vdimg_chain_pwrite(c, buf, sizeof(buf), 4 * MiB);
	vdimg_chain_flush(c);
	vdimg_msg_level = -1;
	vdimg_chain_close(c);
	vdimg_msg_level = VDIMG_LOG_INFO;
	vdimg_write_budget = -1;
	ok(sh("qemu-img check -q -f vmdk '%s'", p[0]) == 0, "cut image: qemu-img check clean");
	if (open_chain(&c, p, 1, false))
		return;
	ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && res.leaks == 1, "our check: %llu errors, %llu leaks",
	   (unsigned long long)res.errors, (unsigned long long)res.leaks);
	memset(&res, 0, sizeof(res));
	ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
	ok(!ret && res.fixed == 1, "our check --repair trims the leak (%llu fixed)",
	   (unsigned long long)res.fixed);
	memset(&res, 0, sizeof(res));
	ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && !res.errors && !res.leaks, "then our check is clean");
	ret = vdimg_chain_pread(c, buf, sizeof(buf), 0);
	ok(!ret && is_pat(buf, sizeof(buf), 3, 0), "the flushed grain reads back");
	vdimg_chain_close(c);
	/* a damaged redundant GT and a GTE outside the file: found and repaired */
	{
		int fd = open(p[0], O_RDWR);
		__le64 rgd = 0, gd = 0;
		__le32 rgt = 0, gt = 0, bad = htole32(0x7ffffff0);

		if (pread(fd, &rgd, 8, 48) != 8 || pread(fd, &gd, 8, 56) != 8 ||
		    pread(fd, &rgt, 4, le64toh(rgd) * 512) != 4 ||
		    pread(fd, &gt, 4, le64toh(gd) * 512) != 4 ||
		    pwrite(fd, &bad, 4, le32toh(rgt) * 512 + 4) != 4 ||
		    pwrite(fd, &bad, 4, le32toh(gt) * 512 + 8) != 4)
			printf("# damaging the tables failed\n");
		close(fd);
	}
	if (open_chain(&c, p, 1, false))
		return;
	memset(&res, 0, sizeof(res));
	ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
	ok(!ret && res.errors == 2, "damaged tables: our check finds 2 errors (%llu)",
	   (unsigned long long)res.errors);
	memset(&res, 0, sizeof(res));
	ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
	ok(!ret && res.fixed == 2, "repair fixes both (%llu fixed)", (unsigned long long)res.fixed);
	memset(&res, 0, sizeof(res));
	ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
	ok(!ret && !res.errors && !res.fixed, "a second repair finds nothing");
	vdimg_chain_close(c);
	ok(sh("qemu-img check -q -f vmdk '%s'", p[0]) == 0, "qemu-img check clean after repair");
}

/*
 * Issue 16: a flush writes a GT and its redundant copy with no sync between them, so a crash can
 * leave either copy newer. With uncleanShutdown set that is a warning (no data lost; VirtualBox
 * refuses such an image, VMware's vdiskmanager -R rewrites the copy), fixed by a repair that
 * rewrites the copy from the GT; the same difference in a cleanly closed extent is an error.
 */
static void test_stale_copy(void)
{
	static const struct {
		const char *what;
		bool unclean, copy_newer;
		u64 errors, warnings, fixed;
	} cases[] = {
		{ "GT newer, unclean", true, false, 0, 1, 1 },
		/* the grain only the copy linked is a leak at the end of the file, cut off */
		{ "copy newer, unclean", true, true, 0, 1, 2 },
		{ "GT newer, clean", false, false, 1, 0, 1 },
	};
	const char *p[1] = { tp("stale.vmdk") };
	u8 buf[64 * KiB];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct vdimg_check_result res = {};
		struct vdimg_chain *c;
		__le64 rgd = 0, gd = 0;
		__le32 rgt = 0, gt = 0, zero = 0, e = 0;
		u8 unclean = cases[i].unclean;
		int fd, ret;

		sh("rm -f '%s'; qemu-img create -q -f vmdk '%s' 8M", p[0], p[0]);
		if (open_chain(&c, p, 1, false))
			return;
		fill_pat(buf, sizeof(buf), 9, 0);
		ret = vdimg_chain_pwrite(c, buf, sizeof(buf), 0);
		ret = ret ?: vdimg_chain_close(c);
		/* GTE 0 of GT 0 now points at the grain in both copies; one copy loses it */
		fd = open(p[0], O_RDWR);
		if (ret || fd < 0 || pread(fd, &rgd, 8, 48) != 8 || pread(fd, &gd, 8, 56) != 8 ||
		    pread(fd, &rgt, 4, le64toh(rgd) * 512) != 4 ||
		    pread(fd, &gt, 4, le64toh(gd) * 512) != 4 ||
		    pread(fd, &e, 4, le32toh(gt) * 512) != 4 || !e ||
		    pwrite(fd, &zero, 4, (cases[i].copy_newer ? le32toh(gt) : le32toh(rgt)) * 512) != 4 ||
		    pwrite(fd, &unclean, 1, 72) != 1) {
			ok(false, "%s: the tables can be changed", cases[i].what);
			if (fd >= 0)
				close(fd);
			continue;
		}
		close(fd);
		ok(sh("qemu-img check -q -f vmdk '%s'", p[0]) == 0,
		   "%s: qemu-img check (reads the GT only) is clean", cases[i].what);
		if (open_chain(&c, p, 1, false))
			return;
		ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
		ok(!ret && res.errors == cases[i].errors && res.warnings == cases[i].warnings &&
		   !res.fixed, "%s: our check: %llu errors, %llu warnings", cases[i].what,
		   (unsigned long long)res.errors, (unsigned long long)res.warnings);
		memset(&res, 0, sizeof(res));
		ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
		ok(!ret && res.fixed == cases[i].fixed, "%s: repair rewrites the copy (%llu fixed)",
		   cases[i].what, (unsigned long long)res.fixed);
		memset(&res, 0, sizeof(res));
		ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
		ok(!ret && !res.errors && !res.warnings && !res.fixed,
		   "%s: then the copies are in step", cases[i].what);
		/* the GT is the truth: the grain it links reads, the one only the copy linked is gone */
		ret = vdimg_chain_pread(c, buf, sizeof(buf), 0);
		ok(!ret && (cases[i].copy_newer ? is_byte(buf, sizeof(buf), 0) :
			    is_pat(buf, sizeof(buf), 9, 0)),
		   "%s: reads what the GT links", cases[i].what);
		vdimg_chain_close(c);
		fd = open(p[0], O_RDONLY);
		ok(fd >= 0 && pread(fd, &gt, 4, le32toh(rgt) * 512) == 4 &&
		   gt == (cases[i].copy_newer ? 0 : e), "%s: the copy's entry is the GT's",
		   cases[i].what);
		if (fd >= 0)
			close(fd);
	}
}

/*
 * A flush links new GTs in the redundant GD first (synced), then in the GD: a crash leaves at worst
 * a table only the redundant GD links. With uncleanShutdown set that is a warning and a repair
 * unlinks it; in a cleanly closed extent it stays an error.
 */
static void test_stale_rgd(void)
{
	const char *p[1] = { tp("stale-rgd.vmdk") };

	for (int unclean = 1; unclean >= 0; unclean--) {
		struct vdimg_check_result res = {};
		struct vdimg_chain *c;
		__le64 rgd = 0, gd = 0;
		__le32 zero = 0, e = 1;
		u8 flag = unclean;
		u8 buf[4096];
		int fd, ret;

		/* qemu links every GT at create: unlinking GT 0 in the GD gives the crash's state */
		sh("rm -f '%s'; qemu-img create -q -f vmdk '%s' 8M", p[0], p[0]);
		fd = open(p[0], O_RDWR);
		if (fd < 0 || pread(fd, &rgd, 8, 48) != 8 || pread(fd, &gd, 8, 56) != 8 ||
		    pwrite(fd, &zero, 4, le64toh(gd) * 512) != 4 || pwrite(fd, &flag, 1, 72) != 1) {
			ok(false, "GD entry 0 can be cleared");
			if (fd >= 0)
				close(fd);
			return;
		}
		close(fd);
		if (open_chain(&c, p, 1, false))
			return;
		ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
		ok(!ret && res.errors == (u64)!unclean && res.warnings == (u64)unclean,
		   "only the redundant GD links GT 0, %s: %llu errors, %llu warnings",
		   unclean ? "unclean" : "clean", (unsigned long long)res.errors,
		   (unsigned long long)res.warnings);
		memset(&res, 0, sizeof(res));
		ret = vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), VDIMG_CHECK_REPAIR, &res);
		memset(&res, 0, sizeof(res));
		ret = ret ?: vdimg_vmdk_tool_ops.check(vdimg_chain_top(c), 0, &res);
		if (unclean)
			ok(!ret && !res.errors && !res.warnings, "unclean: a repair unlinks it");
		else
			ok(!ret && res.errors == 1, "clean: it stays an error after a repair");
		/* the GD is the truth: nothing is allocated, and a write links a new GT pair */
		memset(buf, 0x77, sizeof(buf));
		ret = vdimg_chain_pwrite(c, buf, sizeof(buf), 0);
		ret = ret ?: vdimg_chain_flush(c);
		ret = ret ?: vdimg_chain_pread(c, buf, sizeof(buf), 4096);
		ok(!ret && is_byte(buf, sizeof(buf), 0), "%s: a write over it works",
		   unclean ? "unclean" : "clean");
		vdimg_chain_close(c);
		fd = open(p[0], O_RDONLY);
		ok(fd >= 0 && pread(fd, &e, 4, le64toh(rgd) * 512) == 4 && e &&
		   sh("qemu-img check -q -f vmdk '%s' && qemu-io -c 'read -P 0x77 0 4k' -f vmdk '%s' >/dev/null",
		      p[0], p[0]) == 0, "%s: the copy is linked again, qemu-img check clean, qemu reads the write",
		   unclean ? "unclean" : "clean");
		if (fd >= 0)
			close(fd);
	}
}

/* ---- chains ---- */

static void test_chains(void)
{
	const char *p[3] = { tp("c0.vmdk"), tp("c1.vmdk"), tp("c2.vmdk") };
	struct vdimg_parent_ref ref;
	struct vdimg_chain *c;
	u8 buf[4096];
	int r;

	r = sh("qemu-img create -q -f vmdk '%s' 40M && qemu-io -f vmdk -c 'write -P 0xa0 0 40m' '%s' >/dev/null"
	       " && qemu-img create -q -f vmdk -b '%s' -F vmdk '%s'"
	       " && qemu-io -f vmdk -c 'write -P 0xa1 1m 3m' -c 'write -z 10m 1m' '%s' >/dev/null"
	       " && qemu-img create -q -f vmdk -o zeroed_grain=on -b '%s' -F vmdk '%s'"
	       " && qemu-io -f vmdk -c 'write -P 0xa2 2m 65k' -c 'write -z 20m 128k' '%s' >/dev/null",
	       p[0], p[0], p[0], p[1], p[1], p[1], p[2], p[2]);
	if (!ok(r == 0, "qemu made a 3-deep vmdk chain"))
		return;
	ok(chain_matches_qemu(p, 3, "chain3"), "read 3-deep chain == qemu-img convert");
	if (!open_chain(&c, p, 3, true)) {
		r = vdimg_tool_ops(c->layers[2]->fmt)->parent_ref ?
		    vdimg_tool_ops(c->layers[2]->fmt)->parent_ref(c->layers[2], &ref) : -ENOSYS;
		ok(!r && !strcmp(ref.path, p[1]), "parent_ref gives parentFileNameHint (%s)",
		   r ? "" : ref.path);
		close_chain(c, 3);
	} else {
		ok(false, "open the chain");
	}
	/* write into the middle layer: its CID changes, the top's parentCID no longer fits */
	if (!open_chain(&c, p, 2, false)) {
		memset(buf, 0x77, sizeof(buf));
		r = vdimg_chain_pwrite(c, buf, sizeof(buf), 0);
		close_chain(c, 2);
		ok_err(r, 0, "write into the middle layer");
	}
	r = open_chain(&c, p, 3, true);
	ok(r == -ESTALE && strstr(ktap_last_msg, "parentCID"),
	   "a parent whose CID changed is refused (%d: %s)", r, ktap_last_msg);
	if (!r)
		close_chain(c, 3);
	r = open_chain_with(&c, p, 3, NULL, NULL, true, VDIMG_CHAIN_FORCE_LINK);
	ok_err(r, 0, "forced, the same chain opens");
	if (!r)
		close_chain(c, 3);
	ok(sh("qemu-img info --backing-chain '%s' >/dev/null 2>&1", p[2]) == 0,
	   "qemu still opens the chain");
}

/* ---- grow past the grain directory's room ---- */

/* the u64 at @off of @path (0 when it cannot be read) */
static u64 peek64(const char *path, u64 off)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	u64 v = 0;

	if (fd >= 0 && pread(fd, &v, 8, off) != 8)
		v = 0;
	if (fd >= 0)
		close(fd);
	return le64_to_cpu(v);
}

/* grow the monolithic @path to @size through the backend's ->grow (as VDIMG_CTL_RESIZE does) */
static u64 grown_meta;	/* metadata_bytes right after the last grow_mono() */

static int grow_mono(const char *path, u64 size)
{
	struct vdimg_image img;
	int fd = openf(path, O_RDWR), ret;

	ret = img_open_with(&img, &vdimg_vmdk_format, fd, path, 0);
	if (!ret) {
		ret = vdimg_vmdk_format.grow(&img, size);
		if (!ret && img.size != size)
			ret = -EBADE;
		grown_meta = vdimg_vmdk_format.metadata_bytes(&img);
		img_close(&img);
	}
	close(fd);
	return ret;
}

/* metadata_bytes of @path opened writable now */
static u64 meta_at_open(const char *path)
{
	struct vdimg_image img;
	int fd = openf(path, O_RDWR);
	u64 n = 0;

	if (!img_open_with(&img, &vdimg_vmdk_format, fd, path, 0)) {
		n = vdimg_vmdk_format.metadata_bytes(&img);
		img_close(&img);
	}
	close(fd);
	return n;
}

/* our check of @path: its result, errors and leaks (a repair when @repair) */
static int our_check(const char *path, bool repair, struct vdimg_check_result *res)
{
	struct vdimg_image img;
	int fd = openf(path, repair ? O_RDWR : O_RDONLY), ret;

	memset(res, 0, sizeof(*res));
	ret = img_open_with(&img, &vdimg_vmdk_format, fd, path, repair ? 0 : VDIMG_OPEN_READ_ONLY);
	if (!ret) {
		ret = vdimg_vmdk_tool_ops.check(&img, repair ? VDIMG_CHECK_REPAIR : 0, res);
		if (!ret && repair)
			ret = vdimg_vmdk_format.flush(&img);
		img_close(&img);
	}
	close(fd);
	return ret;
}

/* [@off, @off + @len) of the chain of @path reads as the same range of the file @raw */
static bool reads_like(const char *path, const char *raw, u64 off, u64 len)
{
	u8 *a = malloc(len), *b = malloc(len);
	struct vdimg_chain *c;
	int fd = open(raw, O_RDONLY | O_CLOEXEC);
	bool same = false;

	if (a && b && fd >= 0 && pread(fd, b, len, off) == (ssize_t)len &&
	    !open_chain(&c, &path, 1, true)) {
		same = !vdimg_chain_pread(c, a, len, off) && !memcmp(a, b, len);
		close_chain(c, 1);
	}
	if (fd >= 0)
		close(fd);
	free(a);
	free(b);
	return same;
}

/*
 * A monolithicSparse image grown past the room in its grain directory's last sector: 64 MiB of
 * qemu's 64 KiB grains (2 GD entries, room for 128: 4 GiB) to 8 GiB (256 entries), with and
 * without a redundant GD, and ours with 8 KiB grains (4 MiB a table, room for 128 of them in
 * 512 MiB) to 2 GiB and again to 4 GiB (the moved directory moves again). Both directories move
 * (the header says so), our check finds neither error nor leak right after the grow (the moved GD
 * is the last thing in the file: not a leak, not cut off by a repair), the old data reads back,
 * the new range reads zeros, data written across the old end, in the new range and at the new end
 * reads back after a reopen through libvdimg, qemu-io and qemu-img compare (against a raw shadow
 * grown the same way), and qemu-img check and vmdkinfo accept the image.
 */
static void test_grow_move_gd(void)
{
	static const struct {
		const char *tag;
		bool ours, no_rgd;
		u64 sizes[2];
	} cfg[] = {
		{ "qemu 64 KiB grains", false, false, { 8192 * MiB } },
		{ "qemu 64 KiB grains, no redundant GD", false, true, { 8192 * MiB } },
		{ "ours 8 KiB grains", true, false, { 2048 * MiB, 4096 * MiB } },
	};
	const char *p = tp("mg.vmdk"), *raw = tp("mg.raw");
	static u8 buf[2 * MiB];
	struct vdimg_check_result res;
	struct vdimg_chain *c;
	size_t i, k;
	u64 old;

	for (i = 0; i < ARRAY_SIZE(cfg); i++) {
		const char *tag = cfg[i].tag;
		int r;

		unlink(p);
		if (cfg[i].ours) {
			struct vdimg_create_opts o = { .size = 64 * MiB, .block_size = 8192,
						       .options = "zeroed_grain=on" };

			r = create_file(p, &o);
		} else {
			r = sh("qemu-img create -q -f vmdk '%s' 64M", p);
		}
		if (!r && cfg[i].no_rgd)
			patch32(p, 8, 1);	/* flags: the end-of-line check only */
		if (!ok(!r && !sh("qemu-io -f vmdk %s '%s' >/dev/null && qemu-img convert -O raw '%s' '%s'",
				  fill_cmds, p, p, raw), "grow %s: made and filled", tag))
			continue;
		old = 64 * MiB;
		for (k = 0; k < ARRAY_SIZE(cfg[i].sizes) && cfg[i].sizes[k]; k++) {
			u64 new = cfg[i].sizes[k], gd = peek64(p, 56), rgd = peek64(p, 48);
			u64 flen = fsize(p);

			if (!ok_err(grow_mono(p, new), 0, "grow %s: %llu -> %llu MiB", tag,
				    (unsigned long long)(old / MiB), (unsigned long long)(new / MiB)))
				break;
			/* the table cache grew as an open at the new size sizes it */
			ok(grown_meta && grown_meta == meta_at_open(p),
			   "grow %s: the table cache grows with the image (%llu bytes of metadata, an open %llu)",
			   tag, (unsigned long long)grown_meta, (unsigned long long)meta_at_open(p));
			/* [redundant GTs][GTs][redundant GD][GD] past what the file held */
			ok(peek64(p, 56) != gd && peek64(p, 56) * 512 >= flen &&
			   (cfg[i].no_rgd ? peek64(p, 48) == rgd :
			    peek64(p, 48) * 512 >= flen && peek64(p, 48) < peek64(p, 56)),
			   "grow %s: the header links new directories (GD at sector %llu, was %llu)",
			   tag, (unsigned long long)peek64(p, 56), (unsigned long long)gd);
			flen = fsize(p);
			r = our_check(p, false, &res);
			ok(!r && !res.errors && !res.leaks,
			   "grow %s: our check finds no error and no leak (%llu, %llu)", tag,
			   (unsigned long long)res.errors, (unsigned long long)res.leaks);
			r = our_check(p, true, &res);
			ok(!r && !res.errors && fsize(p) == flen,
			   "grow %s: a repair cuts nothing off (%llu -> %llu bytes)", tag,
			   (unsigned long long)flen, (unsigned long long)fsize(p));
			ok(!truncate(raw, new) && !sh("qemu-img check -q -f vmdk '%s'", p) &&
			   !sh("qemu-img compare -q -f vmdk -F raw '%s' '%s'", p, raw),
			   "grow %s: qemu-img check clean, compare equal to the grown shadow", tag);
			ok(reads_like(p, raw, 0, 64 * MiB) && reads_like(p, raw, new - 2 * MiB, 2 * MiB),
			   "grow %s: the old data and the new end read back", tag);

			/* writes across the old end, into the middle of the new range, at the end */
			r = open_chain(&c, &p, 1, false);
			if (!ok_err(r, 0, "grow %s: reopens writable, %llu bytes", tag,
				    (unsigned long long)new) || c->size != new) {
				if (!r)
					close_chain(c, 1);
				break;
			}
			fill_pat(buf, sizeof(buf), 11 + k, old - MiB);
			r = vdimg_chain_pwrite(c, buf, sizeof(buf), old - MiB);
			patch(raw, old - MiB, buf, sizeof(buf));
			fill_pat(buf, MiB, 12 + k, new / 2 + 123 * KiB);
			r = r ?: vdimg_chain_pwrite(c, buf, MiB, new / 2 + 123 * KiB);
			patch(raw, new / 2 + 123 * KiB, buf, MiB);
			fill_pat(buf, MiB, 13 + k, new - MiB);
			r = r ?: vdimg_chain_pwrite(c, buf, MiB, new - MiB);
			patch(raw, new - MiB, buf, MiB);
			r = r ?: vdimg_chain_flush(c);
			close_chain(c, 1);
			ok_err(r, 0, "grow %s: writes across the old end, in the new range, at the end",
			       tag);
			ok(reads_like(p, raw, old - MiB, 2 * MiB) &&
			   reads_like(p, raw, new / 2, 2 * MiB) && reads_like(p, raw, new - MiB, MiB) &&
			   reads_like(p, raw, 0, 64 * MiB),
			   "grow %s: reopened, everything reads back", tag);
			r = our_check(p, false, &res);
			ok(!r && !res.errors,
			   "grow %s: our check finds no error after the writes (%llu leaks)", tag,
			   (unsigned long long)res.leaks);
			ok(!sh("qemu-img check -q -f vmdk '%s'", p) &&
			   !sh("qemu-img compare -q -f vmdk -F raw '%s' '%s'", p, raw) &&
			   !sh("qemu-io -f vmdk -c 'read -P 0x55 31m 2m' -c 'read -P 0 %llu 1m' '%s' >/dev/null",
			       (unsigned long long)(old + 4 * MiB), p),
			   "grow %s: qemu-img check clean, qemu reads what was written", tag);
			if (have_vmdkinfo)
				ok(!sh("vmdkinfo '%s' 2>&1 | grep -q 'Media size:.*(%llu bytes)'", p,
				       (unsigned long long)new),
				   "grow %s: vmdkinfo reads it, %llu bytes", tag,
				   (unsigned long long)new);
			old = new;
		}
	}
}

/*
 * Write cuts in a grow that moves the directories (64 MiB to 8 GiB): every write after the first
 * N fails, as if the machine stopped there. Each cut image opens, has the old or the new size,
 * its old data, and a clean check (ours: no error; qemu-img check); some cuts leave each size.
 */
static void test_grow_move_gd_crash(void)
{
	const char *p = tp("mgc.vmdk"), *pristine = tp("mgc.pristine"), *raw = tp("mgc.raw");
	int cut, bad = 0, olds = 0, news = 0;
	struct vdimg_check_result res;
	struct vdimg_chain *c;
	long long total;

	if (!ok(!sh("rm -f '%s' && qemu-img create -q -f vmdk '%s' 64M && qemu-io -f vmdk %s '%s' >/dev/null && qemu-img convert -O raw '%s' '%s' && cp '%s' '%s'",
		    pristine, pristine, fill_cmds, pristine, pristine, raw, pristine, p),
		"grow crash: made and filled"))
		return;
	vdimg_write_budget = 1LL << 40;
	ok_err(grow_mono(p, 8192 * MiB), 0, "grow crash: the grow with no cut");
	total = (1LL << 40) - vdimg_write_budget;
	vdimg_write_budget = -1;
	for (cut = 0; cut <= total; cut++) {
		u64 size = 0;
		int r;

		copy_file(pristine, p);
		vdimg_write_budget = cut;
		vdimg_msg_level = -1;
		grow_mono(p, 8192 * MiB);
		vdimg_write_budget = -1;
		vdimg_msg_level = VDIMG_LOG_INFO;
		r = open_chain(&c, &p, 1, true);
		if (!r) {
			size = c->size;
			close_chain(c, 1);
		}
		olds += size == 64 * MiB;
		news += size == 8192 * MiB;
		if (r || (size != 64 * MiB && size != 8192 * MiB) || !reads_like(p, raw, 0, 64 * MiB) ||
		    our_check(p, false, &res) || res.errors ||
		    sh("qemu-img check -q -f vmdk '%s' >/dev/null 2>&1", p) ||
		    sh("qemu-io -f vmdk -c 'read -P 0x55 31m 2m' '%s' >/dev/null 2>&1", p)) {
			if (++bad < 4)
				printf("# cut after %d writes: open %d, size %llu, %llu errors\n", cut, r,
				       (unsigned long long)size, (unsigned long long)res.errors);
		}
	}
	ok(total >= 5, "grow crash: the grow makes %lld writes", total);
	ok(!bad && olds && news,
	   "grow crash: %lld cuts: each opens with the old (%d) or new (%d) size, its data, check clean (%d bad)",
	   total + 1, olds, news, bad);
}

/*
 * The grow on a block device (every file fixed-size): the new tables are zeroed over the device's
 * old bytes (0xa5, which would read as grains outside the file), the directories follow them;
 * with too little room left, ENOSPC saying the device is full, and the image keeps its size.
 */
static void test_grow_move_gd_device(void)
{
	const char *p = tp("mgd.vmdk"), *raw = tp("mgd.raw");
	struct vdimg_check_result res;
	static u8 junk[4 * MiB];
	u64 end;
	int r;

	memset(junk, 0xa5, sizeof(junk));
	if (!ok(!sh("rm -f '%s' && qemu-img create -q -f vmdk '%s' 64M && qemu-io -f vmdk %s '%s' >/dev/null && qemu-img convert -O raw '%s' '%s'",
		    p, p, fill_cmds, p, p, raw), "grow device: made and filled"))
		return;
	end = fsize(p);
	patch(p, end, junk, sizeof(junk));
	vdimg_fixed_size_test = true;
	ok_err(grow_mono(p, 8192 * MiB), 0, "grow device: 64 MiB -> 8 GiB on a device 4 MiB larger");
	ok(fsize(p) == end + sizeof(junk), "grow device: the device keeps its size");
	ok(!truncate(raw, 8192 * MiB) && reads_like(p, raw, 0, 64 * MiB) &&
	   reads_like(p, raw, 5000 * MiB, 2 * MiB) && reads_like(p, raw, 8190 * MiB, 2 * MiB),
	   "grow device: old data, zeros in the new range (no old device bytes)");
	r = our_check(p, false, &res);
	ok(!r && !res.errors,
	   "grow device: our check finds no error (%llu leaks)", (unsigned long long)res.leaks);
	vdimg_fixed_size_test = false;
	ok(!sh("qemu-img check -q -f vmdk '%s'", p) &&
	   !sh("qemu-img compare -q -f vmdk -F raw '%s' '%s'", p, raw),
	   "grow device: qemu-img check clean, compare equal to the shadow");

	/* too little room: 64 KiB past the image */
	if (sh("rm -f '%s' && qemu-img create -q -f vmdk '%s' 64M && qemu-io -f vmdk -c 'write -P 0x77 1m 1m' '%s' >/dev/null",
	       p, p, p))
		return;
	patch(p, fsize(p), junk, 64 * KiB);
	vdimg_fixed_size_test = true;
	ktap_last_msg[0] = 0;
	r = grow_mono(p, 8192 * MiB);
	ok(r == -ENOSPC && strstr(ktap_last_msg, "block device is full"),
	   "grow device: with 64 KiB left, ENOSPC, saying so (%d: %s)", r, ktap_last_msg);
	ok(!our_check(p, false, &res) && !res.errors, "grow device: after ENOSPC, check clean");
	vdimg_fixed_size_test = false;
	ok(peek64(p, 12) == 64 * MiB / 512 && !sh("qemu-img check -q -f vmdk '%s'", p) &&
	   !sh("qemu-io -f vmdk -c 'read -P 0x77 1m 1m' '%s' >/dev/null", p),
	   "grow device: still 64 MiB, qemu-img check clean, the data reads back");
}

/* ---- crash safety ---- */

static void test_crash(bool backing)
{
	const u64 size = 40 * MiB;
	const char *p[2] = { tp("cbase.vmdk"), tp("crash.vmdk") };
	const char *const *pp = backing ? p : p + 1;
	int n = backing ? 2 : 1, bad = 0, lost = 0, unclean = 0, cut;
	long long total;
	u8 *shadow = calloc(1, size), *flushed = malloc(size), *got = malloc(size);
	struct vdimg_chain *c;

	if (backing) {
		sh("qemu-img create -q -f vmdk '%s' 40M && qemu-io -f vmdk -c 'write -P 0x5e 0 40m' '%s' >/dev/null"
		   " && qemu-img create -q -f vmdk -b '%s' -F vmdk '%s'", p[0], p[0], p[0], tp("pristine"));
		memset(shadow, 0x5e, size);
	} else {
		sh("qemu-img create -q -f vmdk -o zeroed_grain=on '%s' 40M", tp("pristine"));
	}
	sh("cp '%s' '%s'", tp("pristine"), p[1]);
	if (open_chain(&c, pp, n, false)) {
		ok(false, "crash: open");
		goto out;
	}
	vdimg_write_budget = 1LL << 40;
	rnd_state = 42;
	workload(c, shadow, size, 16, 1, 300);
	vdimg_chain_close(c);
	total = (1LL << 40) - vdimg_write_budget;
	vdimg_write_budget = -1;
	for (cut = 0; cut <= total; cut++) {
		u8 *base = calloc(1, size);
		int ret, i;

		if (backing)
			memset(base, 0x5e, size);
		sh("cp '%s' '%s'", tp("pristine"), p[1]);
		if (open_chain(&c, pp, n, false)) {
			bad++;
			free(base);
			continue;
		}
		vdimg_write_budget = cut;
		vdimg_msg_level = -1;
		rnd_state = 42;
		ret = workload(c, base, size, 8, 1, 300);
		if (!ret)
			ret = vdimg_chain_flush(c);
		memcpy(flushed, base, size);
		if (!ret)
			workload(c, base, size, 8, 1 + 8, 300);
		vdimg_chain_close(c);
		vdimg_write_budget = -1;
		vdimg_msg_level = VDIMG_LOG_INFO;
		i = sh("qemu-img check -q -f vmdk '%s' >/dev/null 2>&1", p[1]);
		if (i != 0) {
			bad++;
			if (bad < 4)
				printf("# cut %d: qemu-img check exit %d\n", cut, i);
		}
		unclean += peek8(p[1], 72) != 0;
		for (i = 0; i < 2 && !ret; i++) {
			struct vdimg_chain *r = NULL;
			u64 j;

			if (open_chain_with(&r, pp, n, NULL, NULL, i == 0, VDIMG_CHAIN_FORCE_LINK) ||
			    vdimg_chain_pread(r, got, size, 0)) {
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
		free(base);
	}
	ok(total > 10, "crash%s: the workload makes %lld writes", backing ? " (backing)" : "", total);
	ok(!bad, "crash%s: %lld cut points, qemu-img check never finds corruption (%d bad)",
	   backing ? " (backing)" : "", total + 1, bad);
	ok(!lost, "crash%s: flushed data survives every cut (%d lost)", backing ? " (backing)" : "",
	   lost);
	ok(unclean > 0, "crash%s: cut images say uncleanShutdown (%d)", backing ? " (backing)" : "",
	   unclean);
out:
	free(shadow);
	free(flushed);
	free(got);
}

/* ---- hostile headers ---- */

static void poke(const char *path, u64 off, u64 v, int len)
{
	int fd = open(path, O_RDWR);
	u64 le = htole64(v);

	if (fd < 0 || pwrite(fd, &le, len, off) != len)
		printf("# poke %s failed\n", path);
	close(fd);
}

static void test_hostile(void)
{
	static const struct {
		const char *what;
		u64 off, val;
		int len, err;
	} cases[] = {
		{ "version 4", 4, 4, 4, -EOPNOTSUPP },
		{ "grain size 3 sectors", 20, 3, 8, -EUCLEAN },
		{ "grain size 0", 20, 0, 8, -EUCLEAN },
		{ "grain size 2^40 sectors", 20, 1ULL << 40, 8, -EOPNOTSUPP },
		{ "capacity 0 (a descriptor-only sparse file)", 12, 0, 8, -EOPNOTSUPP },
		{ "capacity 2^62 sectors", 12, 1ULL << 62, 8, -EOPNOTSUPP },
		{ "0 GTEs per GT", 44, 0, 4, -EUCLEAN },
		{ "2^31 GTEs per GT", 44, 1U << 31, 4, -EUCLEAN },
		{ "GD past the end", 56, 1ULL << 40, 8, -EUCLEAN },
		{ "GD at 0", 56, 0, 8, -EUCLEAN },
		{ "redundant GD past the end", 48, 1ULL << 33, 8, -EUCLEAN },
		{ "overhead past the end", 64, 1ULL << 40, 8, -EUCLEAN },
		{ "descriptor past the end", 28, 1ULL << 50, 8, -EUCLEAN },
		{ "huge descriptor", 36, 1ULL << 30, 8, -EUCLEAN },
		{ "bad newline bytes", 73, 'x', 1, -EUCLEAN },
		{ "compression algorithm 7", 77, 7, 2, -EOPNOTSUPP },
		{ "GD entry outside the file", 0, 0, 0, -EUCLEAN },
	};
	const char *p[1] = { tp("h.vmdk") };
	struct vdimg_chain *c;
	size_t i;
	int r;

	sh("qemu-img create -q -f vmdk '%s' 40M && qemu-io -f vmdk -c 'write -P 1 0 1m' '%s' >/dev/null",
	   tp("h0.vmdk"), tp("h0.vmdk"));
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		sh("cp '%s' '%s'", tp("h0.vmdk"), p[0]);
		if (cases[i].len) {
			poke(p[0], cases[i].off, cases[i].val, cases[i].len);
		} else {
			/* the first GD entry: its sector number, from the header's gdOffset */
			int fd = open(p[0], O_RDWR);
			__le64 gd = 0;

			if (pread(fd, &gd, 8, 56) == 8)
				poke(p[0], le64toh(gd) * 512, 0x7fffffff, 4);
			close(fd);
		}
		vdimg_msg_level = -1;
		r = open_chain(&c, p, 1, false);
		vdimg_msg_level = VDIMG_LOG_INFO;
		ok(r == cases[i].err, "hostile %s: %d (want %d)", cases[i].what, r, cases[i].err);
		if (!r)
			close_chain(c, 1);
	}
}

/* ---- samples ---- */

static int unpack(const char *name, const char *out)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/%s.bz2", samples, name);
	if (access(path, R_OK))
		return -ENOENT;
	return sh("bzip2 -dc '%s' > '%s'", path, out) ? -EIO : 0;
}

static void test_samples(void)
{
	const char *p[1] = { tp("sample.vmdk") };
	struct vdimg_chain *c;
	u8 buf[512];
	int r, i, bad = 0;

	if (unpack("iotest-version3.vmdk", p[0])) {
		skip("iotest-version3.vmdk: no sample in %s", samples);
	} else if (ok_err(open_chain(&c, p, 1, true), 0, "iotest-version3.vmdk opens read-only")) {
		ok(c->size == 17179869184ULL, "iotest-version3.vmdk: 16 GiB");
		for (i = 0; i < 100; i++) {
			r = vdimg_chain_pread(c, buf, 512, (u64)i * 655360 + i * 512);
			if (r || !is_byte(buf, 512, 0x30 + i % 10))
				bad++;
		}
		ok(!bad, "iotest-version3.vmdk: the 100 pattern sectors read right (%d bad)", bad);
		close_chain(c, 1);
	}
	if (unpack("afl9.vmdk", p[0])) {
		skip("afl9.vmdk: no sample in %s", samples);
	} else {
		r = open_chain(&c, p, 1, true);
		ok(r == -EUCLEAN || r == -EOPNOTSUPP, "afl9.vmdk is refused cleanly (%d: %s)", r,
		   ktap_last_msg);
		if (!r)
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
	samples = getenv("VDIMG_SAMPLES") ? getenv("VDIMG_SAMPLES") : "/var/cache/vdimg/samples";
	have_vmdkinfo = sh("command -v vmdkinfo >/dev/null 2>&1") == 0;
	test_qemu_images();
	test_stream();
	test_split();
	test_extent_kinds();
	test_vmfs();
	test_cowd();
	test_writes();
	test_chains();
	test_create();
	test_create_split();
	test_stream_create();
	test_desc_keep();
	test_desc_child();
	test_sesparse();
	test_sesparse_write();
	test_sesparse_crash();
	test_cowd_write();
	test_device_extents();
	test_compact();
	test_foreign_parent();
	test_set_parent();
	test_check_repair();
	test_stale_copy();
	test_stale_rgd();
	test_grow_move_gd();
	test_grow_move_gd_crash();
	test_grow_move_gd_device();
	test_hostile();
	test_samples();
	test_crash(false);
	test_crash(true);
	return ktap_finish();
}
