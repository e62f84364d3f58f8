/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CUE sheets: the parsed form of a .cue text (files, tracks, their modes and where they start),
 * shared by backends/cue.c (kernel-shared: parsing, checking against the files, mapping) and
 * tools/lib/formats/cue.c (userspace: the file names to open, the track list for info). The text
 * is hostile: cue_parse() bounds its size, its line count and every number in it.
 */
#ifndef _VDIMG_CUE_H
#define _VDIMG_CUE_H

#include <vdimg/backend.h>

#define CUE_SHEET_MAX		65536	/* bytes of sheet text accepted */
#define CUE_LINES_MAX		4096	/* lines of sheet text accepted */
#define CUE_LINE_MAX		1024	/* characters in one line */
#define CUE_NAME_MAX		256	/* bytes of a FILE name, NUL included */
#define CUE_MAX_FILES		99
#define CUE_MAX_TRACKS		99
#define CUE_FRAMES_PER_SEC	75
#define CUE_USER_SECTOR		2048	/* bytes of user data in a data sector */

enum cue_mode {
	CUE_MODE1_2048,		/* cooked: the user data only */
	CUE_MODE1_2352,		/* raw: sync, header, 2048 data, EDC/ECC */
	CUE_MODE2_2336,		/* raw minus sync and header: subheader, data, EDC/ECC */
	CUE_MODE2_2352,		/* raw: sync, header, subheader, data, EDC/ECC */
	CUE_AUDIO,		/* 2352-byte audio frames, not exposed */
};

/* FILE types: BINARY holds raw sectors; the others hold audio tracks only */
enum cue_file_type {
	CUE_FILE_BINARY,
	CUE_FILE_MOTOROLA,	/* raw audio, big-endian samples */
	CUE_FILE_WAVE,
	CUE_FILE_MP3,
	CUE_FILE_AIFF,
};

struct cue_track {
	u32 number;		/* TRACK nn, 1..99, increasing through the sheet */
	enum cue_mode mode;
	u32 file;		/* index of the FILE it is in */
	u32 sector_size;	/* bytes per sector in the file */
	u32 data_offset;	/* offset of the user data in a sector */
	u64 index0;		/* INDEX 00 in sectors from the file start, or U64_MAX for none */
	u64 index1;		/* INDEX 01 in sectors from the file start */
	u64 pregap;		/* PREGAP sectors (not in the file) */
	u64 postgap;		/* POSTGAP sectors (not in the file) */
	/* set by cue_check(); in a non-BINARY file: in its audio data, length 0 (unknown) */
	u64 start;		/* byte offset of INDEX 01 in its file */
	u64 length;		/* bytes from INDEX 01 to the track's end */
};

/*
 * Only the BINARY files are passed as extent files (img->extents), in the order of their FILE
 * lines: audio tracks are never read, so their files need not exist. extent[i] is FILE i's index
 * in img->extents, or U32_MAX for an audio-only file.
 */
struct cue_sheet {
	u32 nr_files;
	u32 nr_tracks;
	u32 nr_binary;		/* BINARY files: the extent files expected */
	char files[CUE_MAX_FILES][CUE_NAME_MAX];
	u8 file_type[CUE_MAX_FILES];	/* enum cue_file_type */
	u32 extent[CUE_MAX_FILES];
	struct cue_track tracks[CUE_MAX_TRACKS];
};

/* the backend's state (img->priv) */
struct cue {
	struct cue_sheet sheet;
	const struct cue_track *track;	/* the exposed one */
	struct vdimg_file *file;	/* its file */
};

#define CUE(img) ((struct cue *)(img)->priv)

/**
 * cue_parse() - parse a CUE sheet's text
 * @img: for messages
 * @text: the sheet, @len bytes (need not be NUL-terminated)
 * @sheet: out: zeroed and filled
 *
 * Return: 0, -EUCLEAN for a malformed sheet, -EOPNOTSUPP for a track mode or file type
 * vdimg does not read (each after a message naming it).
 */
int cue_parse(const struct vdimg_image *img, const char *text, size_t len, struct cue_sheet *sheet);
/*
 * Check the tracks against the sizes of their files (@sizes[i] for FILE i; only BINARY files' are
 * read) and compute each track's start and length. 0 or -EUCLEAN after a message.
 */
int cue_check(const struct vdimg_image *img, struct cue_sheet *sheet, const u64 *sizes);
/* "MODE1/2352" and so on */
const char *cue_mode_name(enum cue_mode mode);
/* "BINARY", "WAVE" and so on */
const char *cue_file_type_name(enum cue_file_type type);
/* Is this head of a file a CUE sheet? */
bool cue_probe_text(const u8 *head, size_t len, u64 file_size);

#endif /* _VDIMG_CUE_H */
