// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the VHDX backend (backends/vhdx/). A VHDX file is at least a few
 * MiB, so the input is not a whole image: it is laid over the interesting windows of a template
 * image (file identifier, both headers, both region tables, the log, the metadata table and items,
 * the BAT, a sector bitmap) in a memfd. The first input byte chooses the template (clean, or with a
 * pending log entry; dynamic or differencing) and which checksums are recomputed after patching,
 * so mutations get past the CRC-32C checks into the parsers and the log replay. The image is opened
 * read-only (log replayed in memory), every extent is mapped and read, describe/check/parent_ref
 * run; then it is opened writable (log replayed into the file), a write chosen by the input is
 * mapped, written and committed, and the image must reopen and read it back.
 *
 * Build: make build/fuzz/fuzz_vhdx
 * Run:   build/fuzz/fuzz_vhdx -max_len=65536 selftests/fuzz/corpus/vhdx
 * Seeds: VDIMG_FUZZ_SEEDS=DIR build/fuzz/fuzz_vhdx -runs=1 writes the templates' own windows as
 *        inputs (one per template, checksums recomputed) into DIR.
 */
#include <fcntl.h>
#include "fuzz_common.h"
#include "../../backends/vhdx/vhdx.h"

#define MiB (1ULL << 20)
#define KiB 1024ULL


/* A template: its size and its non-zero 4 KiB pages. */
struct tpl {
	u64 size;
	u32 n;
	u64 *off;
	u8 *pages;
};

static struct tpl tpls[4];

static const struct {
	u64 off;
	u32 len;
} windows[] = {
	{ 64 * KiB, 256 },		/* header 1: signature .. log fields */
	{ 128 * KiB, 256 },		/* header 2 */
	{ 192 * KiB, 512 },		/* region table 1 */
	{ 1 * MiB, 8192 },		/* the log's first entry */
	{ 2 * MiB, 512 },		/* metadata table */
	{ 2 * MiB + 64 * KiB, 4096 },	/* metadata items (parameters, size, ..., locator) */
	{ 3 * MiB, 4096 },		/* BAT */
	{ 256 * KiB, 512 },		/* region table 2 */
	{ 0, 64 },			/* file identifier */
};




static void snapshot(struct tpl *t, int fd)
{
	u64 off;

	t->size = lseek(fd, 0, SEEK_END);
	t->off = calloc(t->size / 4096, sizeof(u64));
	t->pages = malloc(t->size);
	if (!t->off || !t->pages)
		abort();
	for (off = 0; off < t->size; off += 4096) {
		u8 *p = t->pages + (u64)t->n * 4096;
		u32 i;

		if (pread(fd, p, 4096, off) != 4096)
			abort();
		for (i = 0; i < 4096 && !p[i]; i++)
			;
		if (i < 4096)
			t->off[t->n++] = off;
	}
}

static void write_block(struct vdimg_image *img, u64 off, u64 len, u8 b)
{
	struct vdimg_extent e;

	memset(fuzz_buf, b, sizeof(fuzz_buf));
	while (len) {
		if (fmt->map(img, off, len, VDIMG_MAP_WRITE, &e))
			abort();
		if (vdimg_file_write(e.file, fuzz_buf, min_t(u64, e.length, sizeof(fuzz_buf)),
				     e.file_offset))
			abort();
		if ((e.flags & VDIMG_EXT_NEW) && fmt->commit(img, &e))
			abort();
		off += e.length;
		len -= e.length;
	}
}

/* Build the templates once: dynamic and differencing, each clean and with a pending log. */
static void build_templates(void)
{
	int k;

	for (k = 0; k < 2; k++) {
		struct vdimg_create_opts o = { .size = 16 * MiB, .block_size = 1 * MiB };
		struct vdimg_image img, parent;
		struct vdimg_file *f, *pf = NULL;
		int fd = memfd_create("tpl", 0), pfd = -1;

		if (k) {
			/* the parent must exist to create a differencing child */
			pfd = memfd_create("parent", 0);
			pf = vdimg_file_from_fd(pfd);
			if (vdimg_tool_ops(fmt)->create(pf, &o) || fuzz_open(&parent, pf, VDIMG_OPEN_READ_ONLY))
				abort();
			o.parent = "/proc/self/exe";	/* any existing path */
			o.parent_img = &parent;
		}
		f = vdimg_file_from_fd(fd);
		if (vdimg_tool_ops(fmt)->create(f, &o))
			abort();
		if (k)
			fmt->close(&parent);
		if (fuzz_open(&img, f, 0))
			abort();
		write_block(&img, 1 * MiB + 512, 8192, 0xa1);
		snapshot(&tpls[2 * k + 1], fd);	/* log pending: not flushed yet */
		fmt->close(&img);
		snapshot(&tpls[2 * k], fd);
		vdimg_file_free(f);
		close(fd);
		if (pf) {
			vdimg_file_free(pf);
			close(pfd);
		}
	}
}

/* The windows of each template as an input: mode byte, then the window bytes in order. */
static void write_seeds(const char *dir)
{
	int m;

	for (m = 0; m < 4; m++) {
		const struct tpl *t = &tpls[m];
		char path[4096];
		FILE *out;
		size_t w;

		snprintf(path, sizeof(path), "%s/seed-template-%d", dir, m);
		out = fopen(path, "w");
		if (!out)
			abort();
		fputc(0x70 | m, out);
		for (w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
			u64 o;

			for (o = windows[w].off; o < windows[w].off + windows[w].len; o++) {
				u32 i;
				u8 b = 0;

				for (i = 0; i < t->n; i++)
					if (t->off[i] == (o & ~4095ULL))
						b = t->pages[(u64)i * 4096 + (o & 4095)];
				fputc(b, out);
			}
		}
		fclose(out);
	}
}

static void fix_crc(int fd, u64 off, u32 len, u32 csum_off)
{
	u8 *p = malloc(len);
	u32 c;

	if (pread(fd, p, len, off) != (ssize_t)len)
		abort();
	c = cpu_to_le32(vdimg_vhdx_crc(p, len, csum_off));
	if (pwrite(fd, &c, 4, off + csum_off) != 4)
		abort();
	free(p);
}


int LLVMFuzzerTestOneInput(const u8 *data, size_t size)
{
	struct vdimg_check_result res = { 0 };
	struct vdimg_parent_ref *ref;
	size_t chars = 0;
	struct vdimg_image img;
	struct vdimg_extent e;
	struct vdimg_file *f;
	const struct tpl *t;
	size_t pos = 1, i;
	u8 mode;
	int fd;

	fmt = &vdimg_vhdx_format;
	vdimg_set_msg_hook(fuzz_quiet);
	vdimg_msg_level = 7;
	if (!tpls[0].size) {
		build_templates();
		if (getenv("VDIMG_FUZZ_SEEDS"))
			write_seeds(getenv("VDIMG_FUZZ_SEEDS"));
	}
	if (!size)
		return 0;
	mode = data[0];
	t = &tpls[mode & 3];
	fd = memfd_create("fuzz", 0);
	if (fd < 0 || ftruncate(fd, t->size))
		abort();
	for (i = 0; i < t->n; i++)
		if (pwrite(fd, t->pages + i * 4096, 4096, t->off[i]) != 4096)
			abort();
	for (i = 0; i < sizeof(windows) / sizeof(windows[0]) && pos < size; i++) {
		size_t n = min_t(size_t, windows[i].len, size - pos);

		if (pwrite(fd, data + pos, n, windows[i].off) != (ssize_t)n)
			abort();
		pos += n;
	}
	if (mode & 0x10) {
		fix_crc(fd, 64 * KiB, 4096, 4);
		fix_crc(fd, 128 * KiB, 4096, 4);
	}
	if (mode & 0x20) {
		fix_crc(fd, 192 * KiB, 64 * KiB, 4);
		fix_crc(fd, 256 * KiB, 64 * KiB, 4);
	}
	if (mode & 0x40) {
		__le32 len;

		/* the first log entry, as long as it says (within the log) */
		if (pread(fd, &len, 4, 1 * MiB + 8) != 4)
			abort();
		if (le32_to_cpu(len) && le32_to_cpu(len) <= 1 * MiB && !(le32_to_cpu(len) % 4096))
			fix_crc(fd, 1 * MiB, le32_to_cpu(len), 4);
	}
	if (mode & 0x80) {	/* a second entry right after the first */
		if (pwrite(fd, data, min_t(size_t, size, 4096), 1 * MiB + 4096 * (1 + (mode & 3))) < 0)
			abort();
	}
	f = vdimg_file_from_fd(fd);
	fmt->probe(data, size, data, size);

	if (!fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY)) {
		if (!img.size || img.size % 512 || (img.lbs != 512 && img.lbs != 4096))
			abort();
		fuzz_walk(&img, 4096, FUZZ_MAP_STRICT);
		vdimg_tool_ops(fmt)->describe(&img, fuzz_sink, &chars);
		vdimg_tool_ops(fmt)->check(&img, 0, &res);
		ref = malloc(sizeof(*ref));
		if (img.flags & VDIMG_IMG_HAS_PARENT)
			vdimg_tool_ops(fmt)->parent_ref(&img, ref);
		free(ref);
		if (fmt->map(&img, 0, 512, VDIMG_MAP_WRITE, &e) != -EROFS)
			abort();
		fmt->close(&img);
	}

	if (!fuzz_open(&img, f, 0)) {
		u64 off = 0, len = 4096, o, left;
		int ret = 0;

		if (size >= 8) {
			off = ((u64)data[size - 1] << 16 | (u64)data[size - 2] << 8) * 4096;
			len = ((u64)data[size - 3] % 16 + 1) * 4096;
		}
		off %= img.size;
		off &= ~(u64)4095;
		len = min(len, img.size - off);
		memset(fuzz_buf, 0xc3, len);
		for (o = off, left = len; left; ) {
			ret = fmt->map(&img, o, left, VDIMG_MAP_WRITE, &e);
			if (ret == -ENOSPC || ret == -EINVAL)
				break;
			if (ret)
				abort();
			if (e.offset != o || !e.length || e.length > left || e.type != VDIMG_EXT_DATA)
				abort();
			if (vdimg_file_write(e.file, fuzz_buf, e.length, e.file_offset))
				abort();
			if ((e.flags & VDIMG_EXT_NEW) && fmt->commit(&img, &e))
				abort();
			o += e.length;
			left -= e.length;
		}
		fmt->close(&img);
		if (!left && !(mode & 2)) {
			/* our own writes must leave a valid image that reads them back */
			if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY))
				abort();
			for (o = off, left = len; left; ) {
				if (fmt->map(&img, o, left, 0, &e) || e.type != VDIMG_EXT_DATA)
					abort();
				if (vdimg_file_read(e.file, fuzz_buf + (o - off), e.length, e.file_offset))
					abort();
				o += e.length;
				left -= e.length;
			}
			for (o = 0; o < len; o++)
				if (fuzz_buf[o] != 0xc3)
					abort();
			fmt->close(&img);
		}
		if (!fuzz_open(&img, f, 0)) {
			fmt->discard(&img, off, min_t(u64, 2 * MiB, img.size - off), 0);
			fmt->close(&img);
		}
	}
	vdimg_file_free(f);
	close(fd);
	return 0;
}
