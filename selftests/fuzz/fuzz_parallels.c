// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the Parallels backend (backends/parallels.c): the input is an image file. It
 * is opened read-only and every extent of the disk is mapped (and DATA extents read); describe runs
 * too. Then an open with VDIMG_OPEN_REPAIR and check --repair: the result must open normally. Then
 * opened writable (an image whose in-use flag is set is refused, as it must be) and given a write to
 * a cluster chosen by the input (map WRITE, fill, commit or abort), a discard there (plain,
 * write-zeroes or NOUNMAP, chosen by the input), a flush, a check, a close (which may trim the
 * file) and a reopen, which must succeed after our own writes and discards. Any crash, sanitizer
 * report or extent that does not answer the question asked is a bug.
 *
 * Build: make build/fuzz/fuzz_parallels
 * Run:   build/fuzz/fuzz_parallels -max_len=65536 selftests/fuzz/corpus/parallels
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	u32 pick = fuzz_pick(data, size);
	struct vdimg_check_result res;
	struct vdimg_image img;
	struct vdimg_file *f;
	u64 off;

	f = fuzz_load(&vdimg_parallels_format, data, size, 0);
	if (!f)
		return 0;
	fuzz_read_only_pass(f);

	/* what a normal open refuses in the BAT, check --repair must fix for good, in-use flag too */
	fuzz_repair_pass(f, true);

	if (fuzz_open(&img, f, 0) == 0) {
		off = ((u64)pick * 512) % img.size;
		fuzz_write_one(&img, off, pick, 1 << 20);
		/* a discard, write-zeroes or NOUNMAP write-zeroes from the written cluster on */
		fmt->discard(&img, off & ~4095ULL, min_t(u64, 2 << 20, img.size - (off & ~4095ULL)),
			     (pick & 2 ? VDIMG_DISCARD_ZEROES : 0) |
			     ((pick & 10) == 10 ? VDIMG_DISCARD_NOUNMAP : 0));
		if (fmt->flush(&img))
			abort();
		memset(&res, 0, sizeof(res));
		vdimg_tool_ops(fmt)->check(&img, 0, &res);
		fuzz_walk(&img, 4096, FUZZ_MAP_STRICT);
		fmt->close(&img);
		/* what we wrote must open again, writable too */
		if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY))
			abort();
		fuzz_walk(&img, 4096, FUZZ_MAP_STRICT);
		fmt->close(&img);
		if (fuzz_open(&img, f, 0))
			abort();
		fmt->close(&img);
	}
	vdimg_file_free(f);
	return 0;
}
