// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of CUE sheets: the BINARY track files a sheet names (for the
 * caller to open beside it and pass as extent files; the audio-only WAVE, MP3, AIFF and MOTOROLA
 * files are not passed, and need not exist), and the track list for "vdimgctl info", which measures
 * the audio files that are there. The kernel-shared half (parsing, checks, mapping) is
 * backends/cue.c.
 */
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include "tool-ops.h"
#include "vdimg-user.h"
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
	if (!s->nr_binary)
		goto out;	/* audio only: open says there is no data track */
	*paths = calloc(s->nr_binary, sizeof(**paths));
	*ro = calloc(s->nr_binary, sizeof(**ro));
	if (!*paths || !*ro) {
		ret = -ENOMEM;
		goto out;
	}
	/* the BINARY files in FILE order: extent s->extent[i] is FILE i */
	for (i = 0; i < s->nr_files; i++) {
		u32 e = s->extent[i];

		if (e == U32_MAX)
			continue;
		(*paths)[e] = strdup(s->files[i]);
		if (!(*paths)[e]) {
			ret = -ENOMEM;
			goto out;
		}
		(*ro)[e] = true;
	}
	*n = s->nr_binary;
out:
	if (ret && *paths) {
		for (i = 0; i < s->nr_binary; i++)
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

#define CUE_WAVE_CHUNKS_MAX	64	/* RIFF chunks looked at before giving up on "data" */

static u32 cue_le16(const u8 *p)
{
	return p[0] | (u32)p[1] << 8;
}

static u32 cue_le32(const u8 *p)
{
	return cue_le16(p) | cue_le16(p + 2) << 16;
}

/*
 * The bytes of audio in the WAVE file @fd (@fsize bytes): the size of its data chunk, when its fmt
 * chunk says CD audio (PCM, 2 channels, 44100 Hz, 16 bits, so 2352 bytes a sector). Every chunk is
 * bounds-checked against the file. 0, or -EINVAL with *@why saying why not.
 */
static int cue_wave_bytes(int fd, u64 fsize, u64 *bytes, const char **why)
{
	bool cd_audio = false;
	u64 pos = 12;
	u8 h[16];
	u32 i, len;

	if (fsize < 12 || pread(fd, h, 12, 0) != 12 || memcmp(h, "RIFF", 4) ||
	    memcmp(h + 8, "WAVE", 4)) {
		*why = "not a RIFF WAVE file";
		return -EINVAL;
	}
	for (i = 0; i < CUE_WAVE_CHUNKS_MAX && fsize - pos >= 8; i++) {
		if (pread(fd, h, 8, pos) != 8)
			break;
		len = cue_le32(h + 4);
		pos += 8;
		if (len > fsize - pos) {
			*why = "a RIFF chunk runs past the end of the file";
			return -EINVAL;
		}
		if (!memcmp(h, "fmt ", 4)) {
			if (len < 16 || pread(fd, h, 16, pos) != 16) {
				*why = "a short fmt chunk";
				return -EINVAL;
			}
			cd_audio = (cue_le16(h) == 1 || cue_le16(h) == 0xfffe) &&
				   cue_le16(h + 2) == 2 && cue_le32(h + 4) == 44100 &&
				   cue_le16(h + 14) == 16;
			if (!cd_audio) {
				*why = "not 16-bit stereo 44.1 kHz PCM";
				return -EINVAL;
			}
		} else if (!memcmp(h, "data", 4)) {
			if (!cd_audio) {
				*why = "no fmt chunk before the data";
				return -EINVAL;
			}
			*bytes = len;
			return 0;
		}
		pos += (u64)len + (len & 1);
		if (pos > fsize)
			break;
	}
	*why = "no data chunk";
	return -EINVAL;
}

/*
 * The bytes of audio in the sheet's audio-only FILE @i, looked for beside the sheet: a WAVE file's
 * data chunk, a MOTOROLA (raw) file's size. 0, or -errno with *@why saying why it is not known.
 */
static int cue_audio_bytes(struct vdimg_image *img, u32 i, u64 *bytes, const char **why)
{
	const struct cue_sheet *s = &CUE(img)->sheet;
	char *dir, *path;
	struct stat st;
	int fd, ret;

	if (s->file_type[i] != CUE_FILE_WAVE && s->file_type[i] != CUE_FILE_MOTOROLA) {
		*why = "not measured in this format";
		return -EOPNOTSUPP;
	}
	if (!vdimg_inner_name_ok(s->files[i])) {
		*why = "the name is not inside the sheet's directory";
		return -EPERM;
	}
	if (fstat(img->file->fd, &st) || !st.st_nlink) {
		*why = "the sheet has no directory";	/* deleted, or a memfd */
		return -ENOENT;
	}
	dir = vdimg_file_dir(img->file);
	path = dir ? vdimg_path_in_dir(dir, s->files[i]) : NULL;
	ret = path ? stat(path, &st) : -1;
	/* not even opened unless a regular file: no device or FIFO is touched */
	fd = !ret && S_ISREG(st.st_mode) ?
	     open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) : -1;
	free(path);
	free(dir);
	if (ret) {
		*why = "the file is missing";
		return -ENOENT;
	}
	if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		ret = -EINVAL;
	} else if (s->file_type[i] == CUE_FILE_WAVE) {
		ret = cue_wave_bytes(fd, st.st_size, bytes, why);
	} else {
		*bytes = st.st_size;
		ret = 0;
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

/*
 * "length ..." of track @t in an audio-only file: up to the next track in that file (known from the
 * sheet alone), or to the end of the audio when the file is there and measured.
 */
static void cue_audio_length(struct vdimg_image *img, const struct cue_track *t, char *b,
			     size_t len)
{
	const struct cue_sheet *s = &CUE(img)->sheet;
	const struct cue_track *next = t + 1;
	const char *why = "";
	u64 bytes, end;

	if (next < s->tracks + s->nr_tracks && next->file == t->file) {
		end = (next->index0 != U64_MAX ? next->index0 : next->index1) * t->sector_size;
	} else if (!cue_audio_bytes(img, t->file, &bytes, &why)) {
		end = bytes;
		if (end < t->start) {
			snprintf(b, len,
				 "length unknown (INDEX 01 is past the %llu bytes of audio)",
				 (unsigned long long)bytes);
			return;
		}
	} else {
		snprintf(b, len, "length unknown (%s)", why);
		return;
	}
	snprintf(b, len, "length %llu (%llu sectors of %u%s)", (unsigned long long)(end - t->start),
		 (unsigned long long)((end - t->start) / t->sector_size), t->sector_size,
		 (end - t->start) % t->sector_size ? " and a part" : "");
}

static void cue_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	const struct cue *c = CUE(img);
	char key[32], b[CUE_NAME_MAX + 192], l[96];
	u32 i;

	snprintf(b, sizeof(b), "%u", c->track->number);
	emit(ctx, "track", b);
	for (i = 0; i < c->sheet.nr_tracks; i++) {
		const struct cue_track *t = &c->sheet.tracks[i];

		snprintf(key, sizeof(key), "track %02u", t->number);
		if (c->sheet.file_type[t->file] != CUE_FILE_BINARY) {
			cue_audio_length(img, t, l, sizeof(l));
			snprintf(b, sizeof(b), "%s start %llu %s file \"%s\" %s",
				 cue_mode_name(t->mode), (unsigned long long)t->start, l,
				 c->sheet.files[t->file],
				 cue_file_type_name(c->sheet.file_type[t->file]));
			emit(ctx, key, b);
			continue;
		}
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
