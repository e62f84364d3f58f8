// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the VMDK backend (backends/vmdk/): the input is an image file (a hosted
 * sparse extent, a stream, or a descriptor). It is opened read-only and mapped extent by extent
 * (DATA read, ENCODED grains decoded), described and asked for its parent; then opened writable and
 * given a write chosen by the input (map WRITE, fill, commit or abort), a discard or write-zeroes, a
 * flush, a check and a reopen; finally check --repair, after which a second repair must find
 * nothing more to fix and the image must open writable again. Map errors are allowed (grain table
 * entries are validated when met); a crash, a sanitizer report, or an extent that does not answer
 * the question asked is a bug.
 *
 * An input that starts with the seSparse constant-header magic is an seSparse extent file instead:
 * a descriptor naming it as one SESPARSE extent (of the header's capacity) is made, and the image
 * is walked read-only, then opened writable and given writes (NEW grains filled and committed, in
 * new grain tables too), a discard or write-zeroes and a flush, and walked again after a reopen.
 *
 * Build: make build/fuzz/fuzz_vmdk
 * Run:   build/fuzz/fuzz_vmdk -max_len=262144 selftests/fuzz/corpus/vmdk
 */
#include "fuzz_common.h"

#define SE_MAGIC_LE	"\xbe\xba\xfe\xca\0\0\0\0"

/* the seSparse extent in @data behind a descriptor made here */
static int fuzz_sesparse(const u8 *data, size_t size)
{
	static int dfd = -1;
	u32 pick = fuzz_pick(data, size);
	struct vdimg_file *x, *d, *ext[1];
	struct vdimg_image img;
	char desc[256];
	__le64 lecap;
	u64 cap, off;
	int n, i;

	if (size < 24)
		return 0;
	memcpy(&lecap, data + 16, 8);
	cap = le64_to_cpu(lecap);
	if (!cap || cap > (1ULL << 32))
		return 0;
	x = fuzz_load(&vdimg_vmdk_format, data, size, 2U << 20);
	if (dfd < 0)
		dfd = memfd_create("fuzz-desc", 0);
	if (!x || dfd < 0)
		abort();
	n = snprintf(desc, sizeof(desc),
		     "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
		     "createType=\"seSparse\"\n\nRW %llu SESPARSE \"x.vmdk\"\n",
		     (unsigned long long)cap);
	if (ftruncate(dfd, 0) || pwrite(dfd, desc, n, 0) != n)
		abort();
	d = vdimg_file_from_fd(dfd);
	if (!d)
		abort();
	ext[0] = x;
	for (i = 0; i < 3; i++) {
		unsigned int flags = i == 1 ? 0 : VDIMG_OPEN_READ_ONLY;

		if (fuzz_open_with(&img, d, flags, ext, 1))
			continue;
		if (flags) {
			fuzz_walk(&img, 2048, FUZZ_MAP_LAZY);
			if (i == 0)
				fuzz_read_only_calls(&img);
		} else {
			off = ((u64)pick * 512) % img.size;
			fuzz_write_one(&img, off, pick | 1, 2U << 20);
			fuzz_write_one(&img, (off + (16ULL << 20)) % img.size, pick, 2U << 20);
			fuzz_write_one(&img, off, pick | 1, 2U << 20);
			fmt->discard(&img, off & ~511ULL,
				     min_t(u64, 1 << 20, img.size - (off & ~511ULL)),
				     pick & 2 ? VDIMG_DISCARD_ZEROES : 0);
			fmt->flush(&img);
			fuzz_walk(&img, 2048, FUZZ_MAP_LAZY);
		}
		fmt->close(&img);
	}
	vdimg_file_free(d);
	vdimg_file_free(x);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 8 && !memcmp(data, SE_MAGIC_LE, 8))
		return fuzz_sesparse(data, size);
	return fuzz_cluster_format(&vdimg_vmdk_format, data, size, FUZZ_REPAIR_IDEMPOTENT);
}
