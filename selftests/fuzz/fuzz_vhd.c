// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the VHD backend (backends/vhd.c): the input is an image file (in a memfd).
 * It is opened read-only, every extent is mapped (alternately with VDIMG_MAP_NOWAIT, which may
 * only answer -EAGAIN) and DATA extents are read; describe, check and the parent path candidates
 * run too. Then, when the image opens writable, a write chosen by the input's last bytes is mapped,
 * written and committed, a discard follows, and the image must reopen and read the written bytes
 * back. Crashes, sanitizer reports and answers that do not fit the question abort.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Itools/lib \
 *        selftests/fuzz/fuzz_vhd.c backends/vhd.c tools/lib/platform.c -lz -lzstd \
 *        -o build/fuzz/fuzz_vhd
 * Run:   build/fuzz/fuzz_vhd -max_len=65536 selftests/fuzz/corpus/vhd
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <vdimg/backend.h>
#include "vdimg-user.h"
#include "../../backends/vhd.h"

static const struct vdimg_format *fmt = &vdimg_vhd_format;
static u8 buf[1 << 16];

static void quiet(int level, const char *name, const char *text)
{
}

static void emit(void *ctx, const char *key, const char *value)
{
	if (!key || !value)
		abort();
}

static void check_extent(const struct vdimg_extent *e, u64 off, u64 len, bool write)
{
	if (e->offset != off || !e->length || e->length > len)
		abort();
	if (write ? e->type != VDIMG_EXT_DATA :
		    e->type != VDIMG_EXT_DATA && e->type != VDIMG_EXT_UNALLOCATED)
		abort();
	if (!write && (e->flags & VDIMG_EXT_NEW))
		abort();
	if (e->type == VDIMG_EXT_DATA && e->file_offset + e->length < e->file_offset)
		abort();
}

static void walk(struct vdimg_image *img)
{
	u64 off = 0;
	int n = 0, ret;

	while (off < img->size && n++ < 4096) {
		struct vdimg_extent e;

		memset(&e, 0x5a, sizeof(e));
		ret = fmt->map(img, off, img->size - off, n & 1 ? VDIMG_MAP_NOWAIT : 0, &e);
		if (ret == -EAGAIN && (n & 1))
			ret = fmt->map(img, off, img->size - off, 0, &e);
		if (ret == -EUCLEAN) {
			off += 512;	/* a block with a bad BAT entry: requests to it fail */
			continue;
		}
		if (ret)
			abort();
		check_extent(&e, off, img->size - off, false);
		if (e.type == VDIMG_EXT_DATA)
			vdimg_file_read(e.file, buf, min_t(u64, e.length, sizeof(buf)), e.file_offset);
		off += e.length;
	}
}

static int open_img(struct vdimg_image *img, struct vdimg_file *f, unsigned int flags)
{
	memset(img, 0, sizeof(*img));
	img->file = f;
	img->name = "fuzz.vhd";
	img->fmt = fmt;
	return fmt->open(img, flags);
}

int LLVMFuzzerTestOneInput(const u8 *data, size_t size)
{
	struct vdimg_check_result res = { 0 };
	struct vdimg_image img;
	struct vdimg_file *f;
	struct vdimg_extent e;
	u64 off = 0, len = 4096;
	unsigned int i;
	int fd, ret;

	vdimg_set_msg_hook(quiet);
	vdimg_msg_level = 7;
	fd = memfd_create("fuzz", 0);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		abort();
	f = vdimg_file_from_fd(fd);
	{
		u8 tail[512] = { 0 };

		if (size >= 512)
			memcpy(tail, data + size - 512, 512);
		fmt->probe(data, size, tail, size);
	}

	if (!open_img(&img, f, VDIMG_OPEN_READ_ONLY)) {
		img.flags |= VDIMG_IMG_READ_ONLY;
		if (!img.size || img.size % 512)
			abort();
		walk(&img);
		fmt->describe(&img, emit, NULL);
		fmt->check(&img, 0, &res);
		for (i = 0; vdimg_vhd_parent_path(&img, i); i++)
			if (i > 9)
				abort();
		if (fmt->map(&img, 0, 512, VDIMG_MAP_WRITE, &e) != -EROFS)
			abort();
		fmt->close(&img);
	}

	if (size >= 8) {
		off = ((u64)data[size - 1] << 24 | (u64)data[size - 2] << 16 |
		       (u64)data[size - 3] << 8) * 512;
		len = ((u64)data[size - 4] % 16 + 1) * 512;
	}
	if (!open_img(&img, f, 0)) {
		u64 o, left;

		off %= img.size;
		len = min(len, img.size - off);
		memset(buf, 0xc3, len);
		for (o = off, left = len; left; ) {
			ret = fmt->map(&img, o, left, VDIMG_MAP_WRITE, &e);
			if (ret == -EUCLEAN || ret == -ENOSPC)
				break;
			if (ret)
				abort();
			check_extent(&e, o, left, true);
			if (vdimg_file_write(e.file, buf, e.length, e.file_offset))
				abort();
			if ((e.flags & VDIMG_EXT_NEW) && fmt->commit(&img, &e))
				abort();
			o += e.length;
			left -= e.length;
		}
		if (!left) {
			fmt->flush(&img);
			fmt->close(&img);
			if (open_img(&img, f, VDIMG_OPEN_READ_ONLY))
				abort();	/* our own writes must leave a valid image */
			img.flags |= VDIMG_IMG_READ_ONLY;
			for (o = off, left = len; left; ) {
				if (fmt->map(&img, o, left, 0, &e) || e.type != VDIMG_EXT_DATA)
					abort();
				if (vdimg_file_read(e.file, buf + (o - off), e.length, e.file_offset))
					abort();
				o += e.length;
				left -= e.length;
			}
			for (o = 0; o < len; o++)
				if (buf[o] != 0xc3)
					abort();
			fmt->close(&img);
			if (open_img(&img, f, 0))
				abort();
		}
		fmt->discard(&img, off & ~(u64)511, min_t(u64, 1 << 20, img.size - (off & ~(u64)511)),
			     0);
		fmt->close(&img);
	}
	vdimg_file_free(f);
	close(fd);
	return 0;
}
