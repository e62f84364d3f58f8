// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the CUE/BIN backend (backends/cue.c): the input is a cue sheet. It is
 * parsed, then opened read-only against one track file per BINARY file it names (sparse files
 * whose sizes are picked from the input's last bytes, some a whole number of 2352-byte sectors,
 * some not; its audio-only WAVE, MP3, AIFF and MOTOROLA files are not passed, as by vdimgctl),
 * as the default track and as a track number picked from the input; every extent of the exposed
 * track is mapped and read or decoded; describe runs, a write map must be refused. Any crash,
 * sanitizer report or extent that does not answer the question asked is a bug.
 *
 * Build: make build/fuzz/fuzz_cue
 * Run:   build/fuzz/fuzz_cue -max_len=4096 selftests/fuzz/corpus/cue
 */
#include "fuzz_common.h"
#include "../../backends/cue.h"

static struct vdimg_file *cue_files[CUE_MAX_FILES];
static int cue_fds[CUE_MAX_FILES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cue_sheet sheet;
	const struct vdimg_image msg = { .name = "fuzz" };
	u32 pick = fuzz_pick(data, size), i, pass;
	struct vdimg_image img;
	struct vdimg_file *f;

	if (cue_parse(&msg, (const char *)data, size, &sheet))
		return 0;
	f = fuzz_load(&vdimg_cue_format, data, size, CUE_USER_SECTOR * 32);
	if (!f)
		return 0;
	for (i = 0; i < sheet.nr_binary; i++) {
		u64 len = (u64)((pick >> (i % 16)) % 600 + 1) * 2352 + (i == 3 ? 100 : 0);

		if (!cue_files[i]) {
			cue_fds[i] = memfd_create("track", 0);
			if (cue_fds[i] < 0)
				abort();
			cue_files[i] = vdimg_file_from_fd(cue_fds[i]);
		}
		if (ftruncate(cue_fds[i], 0) || ftruncate(cue_fds[i], len))
			abort();
	}
	for (pass = 0; pass < 2; pass++) {
		memset(&img, 0, sizeof(img));
		img.file = f;
		img.name = "fuzz";
		img.fmt = fmt;
		img.extents = cue_files;
		img.nr_extents = sheet.nr_binary;
		img.snapshot = pass ? pick % 100 : 0;
		if (fmt->open(&img, VDIMG_OPEN_READ_ONLY))
			continue;
		img.flags |= VDIMG_IMG_READ_ONLY;
		fuzz_walk(&img, 4096, FUZZ_MAP_STRICT);
		fuzz_read_only_calls(&img);
		fmt->close(&img);
	}
	vdimg_file_free(f);
	return 0;
}
