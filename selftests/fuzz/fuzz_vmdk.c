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
 * Build: make build/fuzz/fuzz_vmdk
 * Run:   build/fuzz/fuzz_vmdk -max_len=262144 selftests/fuzz/corpus/vmdk
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_cluster_format(&vdimg_vmdk_format, data, size, FUZZ_REPAIR_IDEMPOTENT);
}
