// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the VDI backend (backends/vdi/): the input is an image file. It is opened
 * read-only and every extent of the disk is mapped (and DATA extents read); describe and parent_ref
 * run too. Then an open with VDIMG_OPEN_REPAIR and check --repair: the result must open normally.
 * Then opened writable and given a write to a block chosen by the input (map WRITE, fill, commit or
 * abort), a discard, a check and a reopen, which must succeed after our own writes. Any crash,
 * sanitizer report or extent that does not answer the question asked is a bug.
 *
 * Build: make build/fuzz/fuzz_vdi
 * Run:   build/fuzz/fuzz_vdi -max_len=16384 selftests/fuzz/corpus/vdi
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	u32 pick = fuzz_pick(data, size);
	struct vdimg_check_result res;
	struct vdimg_image img;
	struct vdimg_file *f;
	u64 off;

	f = fuzz_load(&vdimg_vdi_format, data, size, 0);
	if (!f)
		return 0;
	fuzz_read_only_pass(f);

	/* what a normal open refuses in the map, check --repair must fix for good */
	fuzz_repair_pass(f, false);

	if (fuzz_open(&img, f, 0) == 0) {
		off = ((u64)pick * 512) % img.size;
		fuzz_write_one(&img, off, pick, 1 << 20);
		fmt->discard(&img, off & ~4095ULL, min_t(u64, 1 << 20, img.size - (off & ~4095ULL)),
			     pick & 2 ? VDIMG_DISCARD_ZEROES : 0);
		memset(&res, 0, sizeof(res));
		vdimg_tool_ops(fmt)->check(&img, 0, &res);
		fuzz_walk(&img, 4096, FUZZ_MAP_STRICT);
		fmt->close(&img);
		/* what we wrote must open again */
		if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY))
			abort();
		fuzz_walk(&img, 4096, FUZZ_MAP_STRICT);
		fmt->close(&img);
	}
	vdimg_file_free(f);
	return 0;
}
