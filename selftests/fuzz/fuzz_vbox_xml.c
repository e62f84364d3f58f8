// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for vdimgctl's XML reader (tools/vdimgctl/xml.c), which reads VirtualBox
 * machine files (.vbox) and registries (VirtualBox.xml) for `vdimgctl attach/info --vbox`. The
 * input is the file. The result must be a refusal that names its reason, or a tree whose links
 * are consistent (every parent before its children, children and siblings in range and in
 * document order, nesting within XML_MAX_DEPTH) and whose names and attributes are strings. Any
 * crash, sanitizer report or hang is a bug.
 *
 * Build: make build/fuzz/fuzz_vbox_xml
 * Run:   build/fuzz/fuzz_vbox_xml selftests/fuzz/corpus/vbox_xml
 */
#include "fuzz_common.h"
#include "tools/vdimgctl/xml.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xml_doc d;
	const char *why = NULL;
	unsigned int line;
	int i, k, depth;

	if (xml_parse((const char *)data, size, &d, &why, &line)) {
		if (!why || d.nr || d.e)
			abort();
		return 0;
	}
	if (d.nr < 1 || d.e[0].parent != -1)
		abort();
	for (i = 0; i < d.nr; i++) {
		const struct xml_elem *e = &d.e[i];

		if (!e->name || !*e->name)
			abort();
		if (i && (e->parent < 0 || e->parent >= i))
			abort();
		if ((e->child != -1 && (e->child <= i || e->child >= d.nr)) ||
		    (e->next != -1 && (e->next <= i || e->next >= d.nr)))
			abort();
		if (e->child != -1 && d.e[e->child].parent != i)
			abort();
		if (e->next != -1 && d.e[e->next].parent != e->parent)
			abort();
		for (depth = 0, k = i; k >= 0; k = d.e[k].parent)
			depth++;
		if (depth > XML_MAX_DEPTH + 1)
			abort();
		for (k = 0; k < e->nr_attrs; k++)
			if (!e->attrs[k].name || !e->attrs[k].value ||
			    xml_attr(&d, i, e->attrs[k].name) != e->attrs[k].value)
				abort();
	}
	xml_free(&d);
	return 0;
}
