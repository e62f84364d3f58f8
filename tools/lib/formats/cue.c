// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of CUE sheets: the track files a sheet names (for the caller
 * to open beside it and pass as extent files), and the track list for "vdimgctl info". The
 * kernel-shared half (parsing, checks, mapping) is backends/cue.c.
 */
#include <stdio.h>
#include "tool-ops.h"
#include "../../../backends/cue.h"

static int cue_extent_refs(struct vdimg_file *f, char ***paths, bool **ro, u32 *n)
{
	const struct vdimg_image msg = { .name = "cue sheet" };
	u64 fsize = vdimg_file_size(f);
	struct cue_sheet *s;
	char *text;
	u32 i;
	int ret;

	*paths = NULL;
	*ro = NULL;
	*n = 0;
	if (fsize < 1 || fsize > CUE_SHEET_MAX)
		return 0;	/* open says what is wrong */
	text = calloc(1, fsize + 1);
	s = calloc(1, sizeof(*s));
	if (!text || !s) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_read(f, text, fsize, 0);
	if (ret)
		goto out;
	if (cue_parse(&msg, text, fsize, s))
		goto out;	/* ret 0: open reports the bad sheet */
	*paths = calloc(s->nr_files, sizeof(**paths));
	*ro = calloc(s->nr_files, sizeof(**ro));
	if (!*paths || !*ro) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < s->nr_files; i++) {
		(*paths)[i] = strdup(s->files[i]);
		if (!(*paths)[i]) {
			ret = -ENOMEM;
			goto out;
		}
		(*ro)[i] = true;
	}
	*n = s->nr_files;
out:
	if (ret && *paths) {
		for (i = 0; i < s->nr_files; i++)
			free((*paths)[i]);
	}
	if (ret) {
		free(*paths);
		free(*ro);
		*paths = NULL;
		*ro = NULL;
	}
	free(s);
	free(text);
	return ret;
}

static void cue_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	const struct cue *c = CUE(img);
	char key[32], b[CUE_NAME_MAX + 128];
	u32 i;

	snprintf(b, sizeof(b), "%u", c->track->number);
	emit(ctx, "track", b);
	for (i = 0; i < c->sheet.nr_tracks; i++) {
		const struct cue_track *t = &c->sheet.tracks[i];

		snprintf(key, sizeof(key), "track %02u", t->number);
		snprintf(b, sizeof(b), "%s start %llu length %llu (%llu sectors of %u) file \"%s\"%s",
			 cue_mode_name(t->mode), (unsigned long long)t->start,
			 (unsigned long long)t->length,
			 (unsigned long long)(t->length / t->sector_size), t->sector_size,
			 c->sheet.files[t->file], t == c->track ? " (attached)" : "");
		emit(ctx, key, b);
	}
}

static int cue_check_op(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	/* open() checked the sheet against its files; there is nothing else to find */
	return 0;
}

const struct vdimg_tool_ops vdimg_cue_tool_ops = {
	.id = VDIMG_FMT_CUE,
	.check = cue_check_op,
	.describe = cue_describe,
	.extent_refs = cue_extent_refs,
};
