// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the QED backend (backends/qed.c): the input is an image file. It is opened
 * read-only (lenient when NEED_CHECK is set) and mapped extent by extent, described and asked for its
 * parent; then opened writable (a NEED_CHECK image is scanned and repaired first) and given a write
 * chosen by the input (map WRITE, fill, commit or abort), a discard or write-zeroes, a flush, a check
 * and a reopen; finally check --repair, after which a writable open must succeed and a second repair
 * must find nothing more to fix. Map errors are allowed (entries are validated when met); a crash, a
 * sanitizer report, or an extent that does not answer the question asked is a bug.
 *
 * Build: make build/fuzz/fuzz_qed
 * Run:   build/fuzz/fuzz_qed -max_len=65536 selftests/fuzz/corpus/qed
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <vdimg/backend.h>
#include "vdimg-user.h"

static const struct vdimg_format *fmt = &vdimg_qed_format;
static u8 buf[1 << 16];
static u8 *dec;

static void quiet(int level, const char *name, const char *text)
{
}

static void sink(void *ctx, const char *key, const char *value)
{
	*(size_t *)ctx += strlen(key) + strlen(value);
}

static void check_extent(const struct vdimg_extent *e, u64 off, u64 len, bool write)
{
	if (e->offset != off || !e->length || e->length > len)
		abort();
	if (e->type < VDIMG_EXT_DATA || e->type > VDIMG_EXT_ENCODED)
		abort();
	if (write && e->type != VDIMG_EXT_DATA)
		abort();
	if (!write && (e->flags & VDIMG_EXT_NEW))
		abort();
	if ((e->flags & VDIMG_EXT_NEW) && e->fill_length &&
	    (e->fill_offset > off || e->fill_offset + e->fill_length < off + e->length))
		abort();
}

static void walk(struct vdimg_image *img)
{
	u64 off = 0;
	int n = 0;

	while (off < img->size && n++ < 2048) {
		struct vdimg_extent e;
		int ret;

		memset(&e, 0x5a, sizeof(e));
		ret = fmt->map(img, off, img->size - off, n & 1 ? VDIMG_MAP_NOWAIT : 0, &e);
		if (ret == -EAGAIN)
			ret = fmt->map(img, off, img->size - off, 0, &e);
		if (ret)
			return;
		check_extent(&e, off, img->size - off, false);
		if (e.type == VDIMG_EXT_DATA)
			vdimg_file_read(e.file, buf, min_t(u64, e.length, sizeof(buf)), e.file_offset);
		if (e.type == VDIMG_EXT_ENCODED && e.length <= (2U << 20))
			fmt->read_encoded(img, &e, dec);
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
	u64 off;
	u32 pick = size >= 4 ? data[size - 1] | data[size - 2] << 8 | data[size - 3] << 16 : 0;

	if (fd < 0) {
		fd = memfd_create("fuzz-qed", 0);
		dec = malloc(2U << 20);
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
		fmt->describe(&img, sink, &chars);
		if (fmt->parent_ref(&img, &ref) == 0 && !(img.flags & VDIMG_IMG_HAS_PARENT))
			abort();
		memset(&e, 0, sizeof(e));
		if (fmt->map(&img, 0, 512, VDIMG_MAP_WRITE, &e) != -EROFS)
			abort();
		fmt->close(&img);
	}

	if (open_img(&img, f, 0) == 0) {
		off = ((u64)pick * 512) % img.size;
		memset(&e, 0, sizeof(e));
		if (fmt->map(&img, off, 4096, VDIMG_MAP_WRITE, &e) == 0) {
			check_extent(&e, off, min_t(u64, 4096, img.size - off), true);
			memset(buf, 0xc3, sizeof(buf));
			if (!(e.flags & VDIMG_EXT_NEW)) {
				vdimg_file_write(e.file, buf, e.length, e.file_offset);
			} else if ((pick & 1) && e.fill_length <= (2U << 20)) {
				u64 start = e.file_offset - (e.offset - e.fill_offset), done;
				u64 len = e.fill_length ? e.fill_length : e.length;
				int ret = 0;

				if (!e.fill_length)
					start = e.file_offset;
				for (done = 0; !ret && done < len; done += sizeof(buf))
					ret = vdimg_file_write(e.file, buf,
							       min_t(u64, sizeof(buf), len - done),
							       start + done);
				if (ret || fmt->commit(&img, &e))
					fmt->abort(&img, &e);
			} else {
				fmt->abort(&img, &e);
			}
		}
		fmt->discard(&img, off & ~4095ULL, min_t(u64, 1 << 20, img.size - (off & ~4095ULL)),
			     pick & 2 ? VDIMG_DISCARD_ZEROES : 0);
		fmt->flush(&img);
		memset(&res, 0, sizeof(res));
		fmt->check(&img, 0, &res);
		walk(&img);
		fmt->close(&img);
		if (open_img(&img, f, VDIMG_OPEN_READ_ONLY) == 0) {
			walk(&img);
			fmt->close(&img);
		}
	}

	if ((pick & 4) && open_img(&img, f, 0) == 0) {
		memset(&res, 0, sizeof(res));
		if (fmt->check(&img, VDIMG_CHECK_REPAIR, &res) == 0) {
			memset(&res, 0, sizeof(res));
			if (fmt->check(&img, VDIMG_CHECK_REPAIR, &res) == 0 && res.fixed)
				abort();	/* a repaired image has nothing left to fix */
		}
		fmt->close(&img);
		if (open_img(&img, f, 0) != 0)
			abort();	/* and opens again */
		fmt->close(&img);
	}
	vdimg_file_free(f);
	return 0;
}
