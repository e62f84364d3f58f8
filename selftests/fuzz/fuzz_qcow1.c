// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the QCOW version 1 backend (backends/qcow.c): the input is an image file. It
 * is opened read-only and mapped extent by extent (DATA read, ENCODED clusters decoded, NOWAIT and
 * blocking maps alternating), described, checked and asked for its parent; a writable open must be
 * refused and a write map must answer -EROFS. Map errors are allowed (entries are validated when
 * met); a crash, a sanitizer report, or an extent that does not answer the question asked is a bug.
 *
 * Build: make build/fuzz/fuzz_qcow1
 * Run:   build/fuzz/fuzz_qcow1 -max_len=65536 selftests/fuzz/corpus/qcow1
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <vdimg/backend.h>
#include "vdimg-user.h"

static const struct vdimg_format *fmt = &vdimg_qcow_format;
static u8 buf[1 << 16];
static u8 *dec;

static void quiet(int level, const char *name, const char *text)
{
}

static void sink(void *ctx, const char *key, const char *value)
{
	*(size_t *)ctx += strlen(key) + strlen(value);
}

static void walk(struct vdimg_image *img)
{
	u64 off = 0;
	int n = 0;

	while (off < img->size && n++ < 4096) {
		struct vdimg_extent e;
		u64 len = img->size - off;
		int ret;

		memset(&e, 0x5a, sizeof(e));
		ret = fmt->map(img, off, len, n & 1 ? VDIMG_MAP_NOWAIT : 0, &e);
		if (ret == -EAGAIN)
			ret = fmt->map(img, off, len, 0, &e);
		if (ret)
			return;
		if (e.offset != off || !e.length || e.length > len || e.flags)
			abort();
		if (e.type != VDIMG_EXT_DATA && e.type != VDIMG_EXT_UNALLOCATED &&
		    e.type != VDIMG_EXT_ENCODED)
			abort();
		if (e.type == VDIMG_EXT_DATA)
			vdimg_file_read(e.file, buf, min_t(u64, e.length, sizeof(buf)), e.file_offset);
		if (e.type == VDIMG_EXT_ENCODED) {
			if (e.length > (64U << 10))
				abort();	/* one cluster at most */
			fmt->read_encoded(img, &e, dec);
		}
		off += e.length;
	}
}

static int open_img(struct vdimg_image *img, struct vdimg_file *f, unsigned int flags)
{
	memset(img, 0, sizeof(*img));
	img->file = f;
	img->name = "fuzz";
	img->fmt = fmt;
	return fmt->open(img, flags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	struct vdimg_check_result res;
	struct vdimg_image img;
	struct vdimg_file *f;
	struct vdimg_extent e;

	if (fd < 0) {
		fd = memfd_create("fuzz-qcow1", 0);
		dec = malloc(64U << 10);
		if (fd < 0 || !dec)
			abort();
		vdimg_set_msg_hook(quiet);
	}
	if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	f = vdimg_file_from_fd(fd);
	if (!f)
		return 0;
	if (open_img(&img, f, VDIMG_OPEN_READ_ONLY) == 0) {
		struct vdimg_parent_ref ref;
		size_t chars = 0;

		walk(&img);
		walk(&img);
		fmt->describe(&img, sink, &chars);
		if (fmt->parent_ref(&img, &ref) == 0 && !(img.flags & VDIMG_IMG_HAS_PARENT))
			abort();
		memset(&e, 0, sizeof(e));
		if (fmt->map(&img, 0, 512, VDIMG_MAP_WRITE, &e) != -EROFS)
			abort();
		fmt->check(&img, 0, &res);
		fmt->close(&img);
	}
	if (open_img(&img, f, 0) == 0)
		abort();	/* writable opens are always refused */
	vdimg_file_free(f);
	return 0;
}
