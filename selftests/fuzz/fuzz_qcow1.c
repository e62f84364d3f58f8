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
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vdimg_check_result res;
	struct vdimg_image img;
	struct vdimg_file *f;

	f = fuzz_load(&vdimg_qcow_format, data, size, 64U << 10);
	if (!f)
		return 0;
	if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY) == 0) {
		fuzz_walk(&img, 4096, FUZZ_MAP_LAZY);
		fuzz_walk(&img, 4096, FUZZ_MAP_LAZY);
		fuzz_read_only_calls(&img);
		vdimg_tool_ops(fmt)->check(&img, 0, &res);
		fmt->close(&img);
	}
	if (fuzz_open(&img, f, 0) == 0)
		abort();	/* writable opens are always refused */
	vdimg_file_free(f);
	return 0;
}
