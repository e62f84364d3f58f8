// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the QED backend (backends/qed/): the input is an image file. It is opened
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
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_cluster_format(&vdimg_qed_format, data, size, FUZZ_REPAIR_IDEMPOTENT);
}
