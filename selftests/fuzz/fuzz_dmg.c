// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the DMG backend (backends/dmg/): the input is an image file. It is opened
 * read-only, every extent of the disk is mapped (DATA extents read, ENCODED ones decoded: zlib and
 * ADC, bzip2, LZFSE and LZMA chunks), describe runs, and a write map must be refused. The input
 * is also fed to the ADC, bzip2, LZFSE and LZMA decoders directly, with an output size picked
 * from its last bytes. Any crash, sanitizer report
 * or extent that does not answer the question asked is a bug.
 *
 * Build: make build/fuzz/fuzz_dmg
 * Run:   build/fuzz/fuzz_dmg -max_len=65536 selftests/fuzz/corpus/dmg
 */
#include "fuzz_common.h"
#include "../../backends/dmg/dmg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static u8 out[1 << 16];
	static struct dmg_bzip2 *bz;
	static struct dmg_lzfse *lz;
	static struct dmg_lzma *xz;
	struct vdimg_image img;
	struct vdimg_file *f;

	if (!bz) {
		bz = vdimg_zalloc(dmg_bzip2_workspace_size());
		if (!bz)
			abort();
		dmg_bzip2_init(bz);
		lz = vdimg_zalloc(dmg_lzfse_workspace_size());
		if (!lz)
			abort();
		dmg_lzfse_init(lz);
		xz = vdimg_zalloc(dmg_lzma_workspace_size());
		if (!xz)
			abort();
		dmg_lzma_init(xz);
	}
	dmg_adc_decode(data, size, out, fuzz_pick(data, size) % sizeof(out));
	dmg_bzip2_decode(bz, data, size, out, fuzz_pick(data, size) % sizeof(out));
	dmg_lzfse_decode(lz, data, size, out, fuzz_pick(data, size) % sizeof(out));
	dmg_lzma_decode(xz, data, size, out, fuzz_pick(data, size) % sizeof(out));
	f = fuzz_load(&vdimg_dmg_format, data, size, DMG_MAX_CHUNK_SECTORS * DMG_SECTOR);
	if (!f)
		return 0;
	/* the chunk list covers the disk without gaps: every map must answer */
	fuzz_read_only_pass(f);
	if (fuzz_open(&img, f, 0) != -EROFS)
		abort();	/* read-only format */
	vdimg_file_free(f);
	return 0;
}
