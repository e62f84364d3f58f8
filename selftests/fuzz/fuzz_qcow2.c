// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the QCOW2 backend (backends/qcow2/): the input is an image file. It is
 * opened read-only and the disk is mapped extent by extent (DATA read, ENCODED decoded), described
 * and asked for its parent; then opened writable and given a write chosen by the input (map WRITE,
 * fill, commit or abort), a discard or write-zeroes, a flush, a check, and a reopen, which must
 * succeed after our own writes; finally check --repair, after which our own check must be clean.
 * Map errors are allowed (qcow2 validates L2 entries when it meets them); a crash, a sanitizer
 * report, or an extent that does not answer the question asked is a bug.
 *
 * Build: make build/fuzz/fuzz_qcow2
 * Run:   build/fuzz/fuzz_qcow2 -max_len=65536 selftests/fuzz/corpus/qcow2
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_cluster_format(&vdimg_qcow2_format, data, size, FUZZ_REPAIR_NO_LEAKS);
}
