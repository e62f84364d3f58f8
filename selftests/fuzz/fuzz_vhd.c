// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the VHD backend (backends/vhd/): the input is an image file (in a memfd).
 * It is opened read-only, every extent is mapped (alternately with VDIMG_MAP_NOWAIT, which may
 * only answer -EAGAIN) and DATA extents are read; describe, check and the parent path candidates
 * run too. Then, when the image opens writable, a write chosen by the input's last bytes is mapped,
 * written and committed, a discard follows, and the image must reopen and read the written bytes
 * back. Crashes, sanitizer reports and answers that do not fit the question abort.
 *
 * Build: make build/fuzz/fuzz_vhd
 * Run:   build/fuzz/fuzz_vhd -max_len=65536 selftests/fuzz/corpus/vhd
 */
#include "fuzz_common.h"
#include "../../backends/vhd/vhd.h"

int LLVMFuzzerTestOneInput(const u8 *data, size_t size)
{
	struct vdimg_check_result res = { 0 };
	struct vdimg_image img;
	struct vdimg_file *f;
	struct vdimg_extent e;
	u64 off = 0, len = 4096;
	unsigned int i;
	size_t chars = 0;
	int ret;

	f = fuzz_load(&vdimg_vhd_format, data, size, 0);
	if (!f)
		return 0;
	vdimg_msg_level = 7;
	{
		u8 tail[512] = { 0 };

		if (size >= 512)
			memcpy(tail, data + size - 512, 512);
		fmt->probe(data, size, tail, size);
	}

	if (!fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY)) {
		if (!img.size || img.size % 512)
			abort();
		fuzz_walk(&img, 4096, FUZZ_MAP_BAD_BLOCKS);
		vdimg_tool_ops(fmt)->describe(&img, fuzz_sink, &chars);
		vdimg_tool_ops(fmt)->check(&img, 0, &res);
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
	if (!fuzz_open(&img, f, 0)) {
		u64 o, left;

		off %= img.size;
		len = min(len, img.size - off);
		memset(fuzz_buf, 0xc3, len);
		for (o = off, left = len; left; ) {
			ret = fmt->map(&img, o, left, VDIMG_MAP_WRITE, &e);
			if (ret == -EUCLEAN || ret == -ENOSPC)
				break;
			if (ret)
				abort();
			fuzz_check_extent(&e, o, left, true);
			if (vdimg_file_write(e.file, fuzz_buf, e.length, e.file_offset))
				abort();
			if ((e.flags & VDIMG_EXT_NEW) && fmt->commit(&img, &e))
				abort();
			o += e.length;
			left -= e.length;
		}
		if (!left) {
			fmt->flush(&img);
			fmt->close(&img);
			if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY))
				abort();	/* our own writes must leave a valid image */
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
			if (fuzz_open(&img, f, 0))
				abort();
		}
		fmt->discard(&img, off & ~(u64)511, min_t(u64, 1 << 20, img.size - (off & ~(u64)511)),
			     0);
		fmt->close(&img);
	}
	vdimg_file_free(f);
	return 0;
}
