// SPDX-License-Identifier: GPL-2.0
/*
 * The CUE/BIN backend (read-only): a .cue sheet names one or more track files (.bin, .iso) and says
 * where each track of a CD starts and how its sectors are laid out. The layer's image file is the
 * sheet; the caller opens the BINARY files the sheet names and passes them in img->extents, in the
 * order of their FILE lines (this code never opens a path). WAVE, MP3, AIFF and MOTOROLA files may
 * hold audio tracks only; they are not passed (audio is never read, and rips often lack them).
 * The device is one data track (the first, or the one img->snapshot names by its track number) as
 * 2048-byte sectors of user data: MODE1/2048 maps straight onto the file, the raw modes
 * (MODE1/2352, MODE2/2352, MODE2/2336) are ENCODED extents whose sync, header and subheader are
 * stripped in ->read_encoded(). MODE2 form 2 sectors (2324 data bytes, no room in a 2048-byte
 * sector) read as -EIO. AUDIO tracks are listed, never exposed. The sheet text is parsed strictly
 * here, with bounded size, line count and numbers. Kernel-shared; the userspace half (the file
 * names for the caller, info) is tools/lib/formats/cue.c.
 */
#include "cue.h"

#define CUE_MAX_TOKENS		8
#define CUE_ENCODED_SECTORS	32	/* sectors one ENCODED extent covers at most */
#define CUE_MODE2_FORM2		0x20	/* subheader submode bit: form 2 sector */

static const struct {
	const char *name;
	enum cue_mode mode;
	u32 sector_size;
	u32 data_offset;
} cue_modes[] = {
	{ "MODE1/2048", CUE_MODE1_2048, 2048, 0 },
	{ "MODE1/2352", CUE_MODE1_2352, 2352, 16 },
	{ "MODE2/2336", CUE_MODE2_2336, 2336, 8 },
	{ "MODE2/2352", CUE_MODE2_2352, 2352, 24 },
	{ "AUDIO", CUE_AUDIO, 2352, 0 },
};

const char *cue_mode_name(enum cue_mode mode)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cue_modes); i++)
		if (cue_modes[i].mode == mode)
			return cue_modes[i].name;
	return "?";
}

static const char *const cue_file_types[] = {
	[CUE_FILE_BINARY] = "BINARY",
	[CUE_FILE_MOTOROLA] = "MOTOROLA",
	[CUE_FILE_WAVE] = "WAVE",
	[CUE_FILE_MP3] = "MP3",
	[CUE_FILE_AIFF] = "AIFF",
};

const char *cue_file_type_name(enum cue_file_type type)
{
	return (size_t)type < ARRAY_SIZE(cue_file_types) ? cue_file_types[type] : "?";
}

/* keywords the sheet may carry that say nothing about where the data is */
static const char *const cue_ignored[] = {
	"REM", "CATALOG", "PERFORMER", "TITLE", "SONGWRITER", "FLAGS", "ISRC", "CDTEXTFILE",
};

static bool cue_is_ignored(const char *kw)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cue_ignored); i++)
		if (!strcmp(kw, cue_ignored[i]))
			return true;
	return false;
}

bool cue_probe_text(const u8 *head, size_t len, u64 file_size)
{
	static const char *const first[] = { "FILE ", "REM ", "CATALOG ", "TITLE ", "PERFORMER ",
					     "SONGWRITER ", "CDTEXTFILE " };
	size_t i = 0, k;

	if (file_size > CUE_SHEET_MAX || len < 4)
		return false;
	if (len >= 3 && head[0] == 0xef && head[1] == 0xbb && head[2] == 0xbf)
		i = 3;
	while (i < len && (head[i] == ' ' || head[i] == '\t' || head[i] == '\r' || head[i] == '\n'))
		i++;
	for (k = 0; k < ARRAY_SIZE(first); k++) {
		size_t n = strlen(first[k]);

		if (i + n <= len && !memcmp(head + i, first[k], n))
			break;
	}
	if (k == ARRAY_SIZE(first))
		return false;
	/* and a FILE and a TRACK line somewhere */
	for (k = i; k + 6 <= len; k++)
		if (!memcmp(head + k, "TRACK ", 6))
			break;
	if (k + 6 > len)
		return false;
	for (k = i; k + 5 <= len; k++)
		if (!memcmp(head + k, "FILE ", 5))
			return true;
	return false;
}

/*
 * Split one line (NUL-terminated, no line break) into at most CUE_MAX_TOKENS tokens, in place.
 * A token is a run of printable characters without spaces, or "a quoted string" without quotes in
 * it. Returns the number of tokens, or -1 for a malformed line.
 */
static int cue_tokenize(char *line, char **tok)
{
	int n = 0;
	char *p = line;

	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			return n;
		if (n == CUE_MAX_TOKENS)
			return -1;
		if (*p == '"') {
			tok[n++] = ++p;
			while (*p && *p != '"')
				p++;
			if (*p != '"')
				return -1;	/* unterminated */
			*p++ = '\0';
			if (*p && *p != ' ' && *p != '\t')
				return -1;	/* "name"junk */
		} else {
			tok[n++] = p;
			while (*p && *p != ' ' && *p != '\t') {
				if (*p == '"')
					return -1;
				p++;
			}
			if (*p)
				*p++ = '\0';
		}
	}
}

/* A decimal number of 1..@digits digits, at most @max. */
static bool cue_number(const char *s, int digits, u32 max, u32 *out)
{
	u32 v = 0;
	int i;

	for (i = 0; s[i]; i++) {
		if (i == digits || s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (!i || v > max)
		return false;
	*out = v;
	return true;
}

/* mm:ss:ff as a sector count */
static bool cue_msf(const char *s, u64 *sectors)
{
	char buf[16];
	char *ss, *ff;
	u32 m, sec, f;

	if (strlen(s) >= sizeof(buf))
		return false;
	memcpy(buf, s, strlen(s) + 1);
	ss = strchr(buf, ':');
	if (!ss)
		return false;
	*ss++ = '\0';
	ff = strchr(ss, ':');
	if (!ff)
		return false;
	*ff++ = '\0';
	if (!cue_number(buf, 4, 9999, &m) || !cue_number(ss, 2, 59, &sec) ||
	    !cue_number(ff, 2, CUE_FRAMES_PER_SEC - 1, &f))
		return false;
	*sectors = ((u64)m * 60 + sec) * CUE_FRAMES_PER_SEC + f;
	return true;
}

/* One line of the sheet; @lineno for messages. */
static int cue_line(const struct vdimg_image *img, struct cue_sheet *s, char *line, u32 lineno,
		    bool *in_track)
{
	struct cue_track *t = s->nr_tracks ? &s->tracks[s->nr_tracks - 1] : NULL;
	char *tok[CUE_MAX_TOKENS];
	int n = cue_tokenize(line, tok);
	size_t i;
	u32 v;
	u64 pos;

	if (n < 0)
		return vdimg_corrupt(img, "line %u: malformed (bad quoting or too many words)",
				     lineno);
	if (!n || cue_is_ignored(tok[0]))
		return 0;
	if (!strcmp(tok[0], "FILE")) {
		if (n != 3)
			return vdimg_corrupt(img, "line %u: FILE needs a name and a type", lineno);
		for (i = 0; i < ARRAY_SIZE(cue_file_types); i++)
			if (!strcmp(tok[2], cue_file_types[i]))
				break;
		if (i == ARRAY_SIZE(cue_file_types)) {
			vdimg_err(img, "line %u: FILE type %.16s is not supported (BINARY; WAVE, MP3, AIFF, MOTOROLA for audio)",
				  lineno, tok[2]);
			return -EOPNOTSUPP;
		}
		if (s->nr_files == CUE_MAX_FILES)
			return vdimg_corrupt(img, "line %u: more than %d FILE lines", lineno,
					     CUE_MAX_FILES);
		if (s->nr_files && (!s->nr_tracks || s->tracks[s->nr_tracks - 1].file !=
				    s->nr_files - 1))
			return vdimg_corrupt(img, "line %u: the previous FILE has no TRACK",
					     lineno);
		if (!tok[1][0] || strlen(tok[1]) >= CUE_NAME_MAX)
			return vdimg_corrupt(img, "line %u: the FILE name is empty or too long",
					     lineno);
		s->file_type[s->nr_files] = i;
		s->extent[s->nr_files] = i == CUE_FILE_BINARY ? s->nr_binary++ : U32_MAX;
		vdimg_strscpy(s->files[s->nr_files++], tok[1], CUE_NAME_MAX);
		*in_track = false;
		return 0;
	}
	if (!strcmp(tok[0], "TRACK")) {
		if (n != 3 || !cue_number(tok[1], 2, 99, &v) || !v)
			return vdimg_corrupt(img, "line %u: TRACK needs a number 1..99 and a mode",
					     lineno);
		if (!s->nr_files)
			return vdimg_corrupt(img, "line %u: TRACK before any FILE", lineno);
		if (t && v <= t->number)
			return vdimg_corrupt(img, "line %u: track %u after track %u", lineno, v,
					     t->number);
		if (t && t->index1 == U64_MAX)
			return vdimg_corrupt(img, "line %u: track %u has no INDEX 01", lineno,
					     t->number);
		for (i = 0; i < ARRAY_SIZE(cue_modes); i++)
			if (!strcmp(tok[2], cue_modes[i].name))
				break;
		if (i == ARRAY_SIZE(cue_modes)) {
			vdimg_err(img, "line %u: track mode %.16s is not supported",
				  lineno, tok[2]);
			return -EOPNOTSUPP;
		}
		if (cue_modes[i].mode != CUE_AUDIO &&
		    s->file_type[s->nr_files - 1] != CUE_FILE_BINARY) {
			vdimg_err(img, "line %u: track %u is %s in a %s file: data tracks are read from BINARY files only",
				  lineno, v, cue_modes[i].name,
				  cue_file_type_name(s->file_type[s->nr_files - 1]));
			return -EOPNOTSUPP;
		}
		if (s->nr_tracks == CUE_MAX_TRACKS)
			return vdimg_corrupt(img, "line %u: too many tracks", lineno);
		t = &s->tracks[s->nr_tracks++];
		t->number = v;
		t->mode = cue_modes[i].mode;
		t->sector_size = cue_modes[i].sector_size;
		t->data_offset = cue_modes[i].data_offset;
		t->file = s->nr_files - 1;
		t->index0 = U64_MAX;
		t->index1 = U64_MAX;
		*in_track = true;
		return 0;
	}
	if (!*in_track)
		return vdimg_corrupt(img, "line %u: %.16s outside a TRACK", lineno, tok[0]);
	if (!strcmp(tok[0], "INDEX")) {
		if (n != 3 || !cue_number(tok[1], 2, 99, &v) || !cue_msf(tok[2], &pos))
			return vdimg_corrupt(img, "line %u: INDEX needs a number and mm:ss:ff",
					     lineno);
		if (v == 0) {
			if (t->index0 != U64_MAX || t->index1 != U64_MAX)
				return vdimg_corrupt(img, "line %u: INDEX 00 out of order", lineno);
			t->index0 = pos;
		} else if (v == 1) {
			if (t->index1 != U64_MAX)
				return vdimg_corrupt(img, "line %u: a second INDEX 01", lineno);
			if (t->index0 != U64_MAX && pos < t->index0)
				return vdimg_corrupt(img, "line %u: INDEX 01 before INDEX 00",
						     lineno);
			t->index1 = pos;
		} else if (t->index1 == U64_MAX || pos < t->index1) {
			return vdimg_corrupt(img, "line %u: INDEX %u before INDEX 01", lineno, v);
		}
		return 0;
	}
	if (!strcmp(tok[0], "PREGAP") || !strcmp(tok[0], "POSTGAP")) {
		if (n != 2 || !cue_msf(tok[1], &pos))
			return vdimg_corrupt(img, "line %u: %s needs mm:ss:ff", lineno, tok[0]);
		if (tok[0][1] == 'R')
			t->pregap = pos;
		else
			t->postgap = pos;
		return 0;
	}
	return vdimg_corrupt(img, "line %u: unknown keyword %.16s", lineno, tok[0]);
}

int cue_parse(const struct vdimg_image *img, const char *text, size_t len, struct cue_sheet *s)
{
	char line[CUE_LINE_MAX + 1];
	bool in_track = false;
	u32 lineno = 0;
	size_t pos = 0;
	int ret;

	memset(s, 0, sizeof(*s));
	if (len > CUE_SHEET_MAX)
		return vdimg_corrupt(img, "the sheet has %zu bytes, more than %d",
				     len, CUE_SHEET_MAX);
	if (len >= 3 && (u8)text[0] == 0xef && (u8)text[1] == 0xbb && (u8)text[2] == 0xbf)
		pos = 3;	/* UTF-8 byte order mark */
	while (pos < len) {
		size_t n = 0;

		if (++lineno > CUE_LINES_MAX)
			return vdimg_corrupt(img, "more than %d lines", CUE_LINES_MAX);
		while (pos < len && text[pos] != '\n') {
			char c = text[pos++];

			if (c == '\r' && (pos == len || text[pos] == '\n'))
				continue;
			if ((u8)c < 0x20 && c != '\t')
				return vdimg_corrupt(img, "line %u: control character 0x%02x",
						     lineno,
						     (u8)c);
			if (n == CUE_LINE_MAX)
				return vdimg_corrupt(img, "line %u is longer than %d characters",
						     lineno,
						     CUE_LINE_MAX);
			line[n++] = c;
		}
		pos++;	/* the '\n' */
		line[n] = '\0';
		ret = cue_line(img, s, line, lineno, &in_track);
		if (ret)
			return ret;
	}
	if (!s->nr_tracks)
		return vdimg_corrupt(img, "the sheet has no TRACK");
	if (s->tracks[s->nr_tracks - 1].file != s->nr_files - 1)
		return vdimg_corrupt(img, "the last FILE has no TRACK");
	if (s->tracks[s->nr_tracks - 1].index1 == U64_MAX)
		return vdimg_corrupt(img, "track %u has no INDEX 01",
				     s->tracks[s->nr_tracks - 1].number);
	return 0;
}

int cue_check(const struct vdimg_image *img, struct cue_sheet *s, const u64 *sizes)
{
	u32 i;

	for (i = 0; i < s->nr_tracks; i++) {
		struct cue_track *t = &s->tracks[i];
		const struct cue_track *next = i + 1 < s->nr_tracks ? &s->tracks[i + 1] : NULL;
		u64 fsize, end, nstart = 0;

		if (next && next->file != t->file)
			next = NULL;
		if (next) {
			nstart = next->index0 != U64_MAX ? next->index0 : next->index1;
			if (nstart <= t->index1)
				return vdimg_corrupt(img, "tracks %u and %u overlap", t->number,
						     next->number);
		}
		/* sector counts are below 10^4 * 60 * 75: no overflow in bytes */
		t->start = t->index1 * t->sector_size;
		if (s->file_type[t->file] != CUE_FILE_BINARY) {
			/* audio (parsing saw to it) in a file not given here: its length unknown */
			t->length = 0;
			continue;
		}
		fsize = sizes[t->file];
		if (next && next->sector_size != t->sector_size) {
			vdimg_err(img, "tracks %u and %u share a file with different sector sizes (%u, %u): not supported",
				  t->number, next->number, t->sector_size, next->sector_size);
			return -EOPNOTSUPP;
		}
		if (t->start >= fsize)
			return vdimg_corrupt(img,
					     "track %u: INDEX 01 (byte %llu) is not inside %s (%llu bytes)",
					     t->number, (unsigned long long)t->start,
					     s->files[t->file], (unsigned long long)fsize);
		if (next) {
			end = nstart * t->sector_size;
			if (end > fsize)
				return vdimg_corrupt(img, "track %u starts past the end of %s",
						     next->number, s->files[t->file]);
		} else {
			end = fsize;
			if ((end - t->start) % t->sector_size)
				return vdimg_corrupt(img,
						     "track %u: %llu bytes are not a whole number of %u-byte sectors",
						     t->number,
						     (unsigned long long)(end - t->start),
						     t->sector_size);
		}
		t->length = end - t->start;
	}
	return 0;
}

/* ---- the backend ---- */

static int cue_open(struct vdimg_image *img, unsigned int flags)
{
	u64 fsize = vdimg_file_size(img->file), *sizes = NULL;
	char *text = NULL;
	struct cue *c;
	u32 i;
	int ret;

	if (!(flags & VDIMG_OPEN_READ_ONLY)) {
		vdimg_err(img, "CUE/BIN images are read-only: attach read-only");
		return -EROFS;
	}
	if (!fsize || fsize > CUE_SHEET_MAX)
		return vdimg_corrupt(img, "the sheet has %llu bytes (1..%d accepted)",
				     (unsigned long long)fsize, CUE_SHEET_MAX);
	c = vdimg_zalloc(sizeof(*c));
	text = vdimg_zalloc(fsize);
	sizes = vdimg_zalloc(CUE_MAX_FILES * sizeof(*sizes));
	if (!c || !text || !sizes) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vdimg_file_read(img->file, text, fsize, 0);
	if (ret)
		goto fail;
	ret = cue_parse(img, text, fsize, &c->sheet);
	if (ret)
		goto fail;
	if (img->nr_extents != c->sheet.nr_binary) {
		vdimg_err(img, "the sheet names %u BINARY file%s, %u given (vdimgctl opens them beside the sheet)",
			  c->sheet.nr_binary, c->sheet.nr_binary == 1 ? "" : "s", img->nr_extents);
		ret = -EINVAL;
		goto fail;
	}
	for (i = 0; i < c->sheet.nr_files; i++)
		if (c->sheet.extent[i] < img->nr_extents)
			sizes[i] = vdimg_file_size(img->extents[c->sheet.extent[i]]);
	ret = cue_check(img, &c->sheet, sizes);
	if (ret)
		goto fail;
	for (i = 0; i < c->sheet.nr_tracks; i++) {
		const struct cue_track *t = &c->sheet.tracks[i];

		if (img->snapshot ? t->number == img->snapshot : t->mode != CUE_AUDIO) {
			c->track = t;
			break;
		}
	}
	ret = -EINVAL;
	if (!c->track && img->snapshot) {
		vdimg_err(img, "the sheet has no track %u", img->snapshot);
		goto fail;
	}
	if (!c->track) {
		vdimg_err(img, "the sheet has no data track (audio CDs are not exposed)");
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (c->track->mode == CUE_AUDIO) {
		vdimg_err(img, "track %u is an audio track: only data tracks are exposed",
			  c->track->number);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (c->sheet.extent[c->track->file] >= img->nr_extents) {
		/* cue_parse() keeps data tracks in BINARY files: not reached */
		ret = -EINVAL;
		goto fail;
	}
	c->file = img->extents[c->sheet.extent[c->track->file]];
	img->size = c->track->length / c->track->sector_size * CUE_USER_SECTOR;
	img->lbs = CUE_USER_SECTOR;
	img->pbs = CUE_USER_SECTOR;
	img->alloc_unit = 0;
	vdimg_strscpy(img->variant, cue_mode_name(c->track->mode), sizeof(img->variant));
	img->priv = c;
	vdimg_free(text);
	vdimg_free(sizes);
	return 0;

fail:
	vdimg_free(sizes);
	vdimg_free(text);
	vdimg_free(c);
	return ret;
}

static void cue_close(struct vdimg_image *img)
{
	vdimg_free(img->priv);
	img->priv = NULL;
}

static int cue_map(struct vdimg_image *img, u64 offset, u64 length, unsigned int flags,
		   struct vdimg_extent *ext)
{
	const struct cue_track *t = CUE(img)->track;
	u64 sector = offset / CUE_USER_SECTOR, end;

	if (flags & VDIMG_MAP_WRITE)
		return -EROFS;
	if (offset >= img->size || !length)
		return -EINVAL;
	memset(ext, 0, sizeof(*ext));
	ext->offset = offset;
	ext->length = min(length, img->size - offset);
	if (t->mode == CUE_MODE1_2048) {
		ext->type = VDIMG_EXT_DATA;
		ext->file = CUE(img)->file;
		ext->file_offset = t->start + offset;
		return 0;
	}
	/* raw sectors: at most CUE_ENCODED_SECTORS of them per extent */
	end = (sector + CUE_ENCODED_SECTORS) * CUE_USER_SECTOR;
	ext->length = min(ext->length, end - offset);
	ext->type = VDIMG_EXT_ENCODED;
	return 0;
}

static int cue_read_encoded(struct vdimg_image *img, const struct vdimg_extent *ext, void *buf)
{
	const struct cue_track *t = CUE(img)->track;
	u64 first = ext->offset / CUE_USER_SECTOR, last, s;
	u8 *raw, *out = buf;
	u32 nr, skip;
	int ret;

	if (ext->type != VDIMG_EXT_ENCODED || !ext->length || ext->offset >= img->size ||
	    ext->length > img->size - ext->offset)
		return -EINVAL;
	last = (ext->offset + ext->length - 1) / CUE_USER_SECTOR;
	if (last - first >= CUE_ENCODED_SECTORS)
		return -EINVAL;
	nr = last - first + 1;
	raw = vdimg_zalloc((size_t)nr * t->sector_size);
	if (!raw)
		return -ENOMEM;
	ret = vdimg_file_read(CUE(img)->file, raw, (size_t)nr * t->sector_size,
			      t->start + first * t->sector_size);
	if (ret)
		goto out;
	skip = ext->offset % CUE_USER_SECTOR;
	for (s = 0; s < nr; s++) {
		const u8 *sec = raw + s * t->sector_size;
		u64 done = out - (u8 *)buf;
		u32 n = min_t(u64, CUE_USER_SECTOR - skip, ext->length - done);

		if (t->mode != CUE_MODE1_2352) {
			/* the subheader: in the 2336-byte form right at the start, else after 16 */
			u32 sub = t->mode == CUE_MODE2_2336 ? 0 : 16;

			if (sec[sub + 2] & CUE_MODE2_FORM2) {
				vdimg_err(img, "sector %llu of track %u is a MODE2 form 2 sector (no 2048-byte user data)",
					  (unsigned long long)(first + s), t->number);
				ret = -EIO;
				goto out;
			}
		}
		memcpy(out, sec + t->data_offset + skip, n);
		out += n;
		skip = 0;
	}
out:
	vdimg_free(raw);
	return ret;
}

static bool cue_probe(const u8 *head, size_t head_len, const u8 *tail, u64 file_size)
{
	return cue_probe_text(head, head_len, file_size);
}

const struct vdimg_format vdimg_cue_format = {
	.name = "cue",
	.id = VDIMG_FMT_CUE,
	.caps = VDIMG_CAP_EXTENT_FILES | VDIMG_CAP_SNAPSHOTS,
	.probe = cue_probe,
	.open = cue_open,
	.close = cue_close,
	.map = cue_map,
	.read_encoded = cue_read_encoded,
};
