// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the Parallels bundle descriptor reader (tools/lib/formats/parallels-bundle.c):
 * the input is a DiskDescriptor.xml. It is parsed as `vdimgctl attach DIR.hdd` parses it; the
 * result must be a refusal or a chain whose every file name stays inside the bundle. Any crash,
 * sanitizer report, hang or file outside the bundle is a bug.
 *
 * Build: make build/fuzz/fuzz_parallels_xml
 * Run:   build/fuzz/fuzz_parallels_xml selftests/fuzz/corpus/parallels_xml
 */
#include "fuzz_common.h"
#include "tools/lib/formats/parallels-bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char dir[64], path[128];
	struct prl_bundle_chain c;
	FILE *f;

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/fuzz-prl-xml.%d", (int)getpid());
		mkdir(dir, 0700);
		snprintf(path, sizeof(path), "%s/DiskDescriptor.xml", dir);
		vdimg_set_msg_hook(fuzz_quiet);
	}
	f = fopen(path, "w");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);
	if (prl_bundle_parse(path, &c) == 0) {
		size_t dl = strlen(dir);

		if (!c.nr || !c.nr_parts)
			abort();
		for (u32 i = 0; i < c.nr * c.nr_parts; i++)
			if (strncmp(c.files[i], dir, dl) || c.files[i][dl] != '/' ||
			    strstr(c.files[i] + dl, "/../"))
				abort();
		prl_bundle_free(&c);
	}
	return 0;
}
