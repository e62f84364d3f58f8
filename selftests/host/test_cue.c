// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the CUE/BIN backend (backends/cue.c, tools/lib/formats/cue.c): an ISO 9660 image
 * made by genisoimage, written by this test into track files of every mode (MODE1/2048 as is;
 * MODE1/2352, MODE2/2352 and MODE2/2336 with sync, header and subheader around each sector and
 * zeroed EDC/ECC), wrapped in cue sheets (one file, several files, an audio track before the data
 * track, INDEX 00 pregaps), reads back through libvdimg identical to the ISO; the track a caller
 * names is the one exposed; MODE2 form 2 sectors read as -EIO; mixed-mode sheets with audio tracks
 * in WAVE, MP3, AIFF and MOTOROLA files (present, missing or broken) attach with only their BINARY
 * files as extents and info lists the audio tracks with the lengths it can measure (a WAVE file's
 * data chunk, a MOTOROLA file's size); malformed sheets (unknown modes, FILE types and keywords,
 * data tracks in audio files, overlapping tracks, INDEX past the file end, sizes that are not
 * whole sectors, bad quoting, absolute and ".." paths, missing files) are refused with the errno
 * and a message that names the problem; a writable open is refused. Skips (exit 4) without
 * genisoimage. KTAP.
 */
#include <sys/wait.h>
#include "../../tools/lib/chain.h"
#include "../../backends/cue.h"
#include "ktap.h"

static u8 *iso;
static size_t iso_len;

enum { M1_2048, M1_2352, M2_2336, M2_2352 };
static const char *const mode_names[] = { "MODE1/2048", "MODE1/2352", "MODE2/2336", "MODE2/2352" };
static const u32 mode_sizes[] = { 2048, 2352, 2336, 2352 };

static u8 bcd(u32 v)
{
	return (u8)(((v / 10) << 4) | (v % 10));
}

/* One sector of @mode around 2048 bytes of @data at absolute sector @lba; @form2 marks it form 2. */
static void make_sector(u8 *out, int mode, const u8 *data, u32 lba, bool form2)
{
	static const u8 sync[12] = { 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0 };
	u32 a = lba + 150;
	u8 *p = out;

	memset(out, 0, mode_sizes[mode]);
	if (mode == M1_2048) {
		memcpy(out, data, 2048);
		return;
	}
	if (mode != M2_2336) {
		memcpy(p, sync, 12);
		p[12] = bcd(a / 75 / 60);
		p[13] = bcd(a / 75 % 60);
		p[14] = bcd(a % 75);
		p[15] = mode == M1_2352 ? 1 : 2;
		p += 16;
	}
	if (mode != M1_2352) {
		/* subheader twice: file, channel, submode (data, or form 2), coding */
		p[2] = p[6] = form2 ? 0x20 : 0x08;
		p += 8;
	}
	memcpy(p, data, 2048);
}

/* Write the ISO as a track file of @mode after @lead bytes of noise. 0 or -1. */
static int write_track(const char *name, int mode, size_t lead, long form2_sector)
{
	FILE *f = fopen(tpath(name), "w");
	u8 sec[2352];
	size_t i;

	if (!f)
		return -1;
	for (i = 0; i < lead; i++)
		fputc((int)(i * 7 + 3) & 0xff, f);
	for (i = 0; i < iso_len / 2048; i++) {
		make_sector(sec, mode, iso + i * 2048, (u32)i, (long)i == form2_sector);
		fwrite(sec, mode_sizes[mode], 1, f);
	}
	return fclose(f) ? -1 : 0;
}

static int write_text(const char *name, const char *text)
{
	int fd = tfile(name, text, strlen(text));

	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/* Open the sheet @name (with its files) read-only as track @track (0: the default). */
static int cue_open_img(struct vdimg_image *img, const char *name, u32 track, bool ro)
{
	int fd = open(tpath(name), O_RDONLY | O_CLOEXEC), ret;

	memset(img, 0, sizeof(*img));
	if (fd < 0)
		return -errno;
	img->name = name;
	img->file = vdimg_file_from_fd(fd);
	img->snapshot = track;
	ktap_last_msg[0] = '\0';
	ret = vdimg_image_open_extents(img, VDIMG_FMT_AUTO, false);
	if (!ret)
		ret = vdimg_image_open(img, VDIMG_FMT_AUTO, ro ? VDIMG_OPEN_READ_ONLY : 0);
	if (ret) {
		vdimg_image_close_extents(img);
		vdimg_file_free(img->file);
		close(fd);
	}
	return ret;
}

static void cue_close_img(struct vdimg_image *img)
{
	int fd = img->file->fd;

	vdimg_image_close(img);
	vdimg_image_close_extents(img);
	vdimg_file_free(img->file);
	close(fd);
}

/* Read the whole image through map/read_encoded in odd-sized pieces. */
static int read_all(struct vdimg_image *img, u8 *buf)
{
	u64 off = 0;

	while (off < img->size) {
		u64 want = min_t(u64, img->size - off, 3 * 2048 + 512 * ((off / 512) % 5));
		struct vdimg_extent ext;
		int ret = img->fmt->map(img, off, want, 0, &ext);

		if (ret)
			return ret;
		if (ext.offset != off || !ext.length || ext.length > want)
			return -EIO;
		if (ext.type == VDIMG_EXT_DATA)
			ret = vdimg_file_read(ext.file, buf + off, ext.length, ext.file_offset);
		else if (ext.type == VDIMG_EXT_ENCODED)
			ret = img->fmt->read_encoded(img, &ext, buf + off);
		else
			ret = -EIO;
		if (ret)
			return ret;
		off += ext.length;
	}
	return 0;
}

/* Does sheet @name (track @track) read exactly as the ISO? */
static bool reads_as_iso(const char *name, u32 track, const char *variant)
{
	struct vdimg_image img;
	bool same = false;
	u8 *buf;
	int ret = cue_open_img(&img, name, track, true);

	if (ret) {
		printf("# %s: open: %d\n", name, ret);
		return false;
	}
	buf = malloc(iso_len);
	if (img.size != iso_len || img.lbs != 2048 || strcmp(img.variant, variant))
		printf("# %s: size %llu lbs %u variant %s\n", name, (unsigned long long)img.size,
		       img.lbs, img.variant);
	else if ((ret = read_all(&img, buf)))
		printf("# %s: read: %d\n", name, ret);
	else
		same = !memcmp(buf, iso, iso_len);
	free(buf);
	cue_close_img(&img);
	return same;
}

static bool msg_has(const char *s)
{
	if (strstr(ktap_last_msg, s))
		return true;
	printf("# message \"%s\" lacks \"%s\"\n", ktap_last_msg, s);
	return false;
}

static void test_modes(void)
{
	char name[64], text[512];
	int m;

	for (m = 0; m < 4; m++) {
		snprintf(name, sizeof(name), "m%d.bin", m);
		if (write_track(name, m, 0, -1)) {
			ok(false, "write %s", name);
			continue;
		}
		snprintf(text, sizeof(text),
			 "REM made by test_cue\r\nTITLE \"a disc\"\r\nFILE \"m%d.bin\" BINARY\r\n"
			 "  TRACK 01 %s\r\n    FLAGS DCP\r\n    INDEX 01 00:00:00\r\n", m, mode_names[m]);
		snprintf(name, sizeof(name), "m%d.cue", m);
		write_text(name, text);
		ok(reads_as_iso(name, 0, mode_names[m]), "%s track reads as the ISO", mode_names[m]);
	}
}

/* an audio track, then a data track with an INDEX 00 pregap, in one file; and in two files */
static void test_layouts(void)
{
	struct vdimg_image img;
	int fd;

	/* 300 audio sectors before the data: INDEX 00 at 225, INDEX 01 at 300 (00:04:00) */
	write_track("multi.bin", M1_2352, 300 * 2352, -1);
	write_text("multi.cue", "FILE \"multi.bin\" BINARY\n TRACK 01 AUDIO\n  INDEX 01 00:00:00\n"
		   " TRACK 02 MODE1/2352\n  PREGAP 00:00:10\n  INDEX 00 00:03:00\n  INDEX 01 00:04:00\n");
	ok(reads_as_iso("multi.cue", 0, "MODE1/2352"), "first data track after an audio track");
	ok(reads_as_iso("multi.cue", 2, "MODE1/2352"), "track 2 by number");
	if (ok_err(cue_open_img(&img, "multi.cue", 1, true), -EOPNOTSUPP, "audio track 1 refused"))
		ok(msg_has("audio"), "message names the audio track");
	if (ok_err(cue_open_img(&img, "multi.cue", 3, true), -EINVAL, "missing track 3 refused"))
		ok(msg_has("no track 3"), "message names track 3");
	if (!cue_open_img(&img, "multi.cue", 0, true)) {
		const struct cue_sheet *s = &CUE(&img)->sheet;

		ok(s->nr_tracks == 2 && s->tracks[0].length == 225 * 2352 &&
		   s->tracks[1].start == 300 * 2352, "track regions: audio 225 sectors, data at 300");
		cue_close_img(&img);
	}

	/* two files: audio in one, the data (cooked) in the other */
	fd = tfile("audio.bin", NULL, 2352 * 40);
	close(fd);
	write_track("data.iso", M1_2048, 0, -1);
	write_text("two.cue", "FILE \"audio.bin\" BINARY\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n"
		   "FILE \"data.iso\" BINARY\nTRACK 02 MODE1/2048\nINDEX 01 00:00:00\n");
	ok(reads_as_iso("two.cue", 0, "MODE1/2048"), "data track in the second FILE");

	/* a track file in a subdirectory */
	sh("mkdir -p '%s' && cp '%s' '%s'", tpath("sub"), tpath("m3.bin"), tpath("sub/d.bin"));
	write_text("sub.cue", "FILE \"sub/d.bin\" BINARY\nTRACK 01 MODE2/2352\nINDEX 01 00:00:00\n");
	ok(reads_as_iso("sub.cue", 0, "MODE2/2352"), "track file in a subdirectory");

	ok(vdimg_format_by_id(VDIMG_FMT_CUE) && !cue_open_img(&img, "m1.cue", 0, true) &&
	   img.fmt->id == VDIMG_FMT_CUE, "probe recognises a sheet");
	if (img.fmt)
		cue_close_img(&img);
	ok_err(cue_open_img(&img, "m1.cue", 0, false), -EROFS, "writable open refused");
}

static void put_le16(u8 *p, u32 v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
}

static void put_le32(u8 *p, u32 v)
{
	put_le16(p, v & 0xffff);
	put_le16(p + 2, v >> 16);
}

/*
 * A WAVE file of CD audio: a LIST chunk of @list bytes (odd: padded), then @data bytes of audio in a
 * data chunk whose size field says @data_field.
 */
static int write_wave(const char *name, u32 list, u32 data, u32 data_field)
{
	FILE *f = fopen(tpath(name), "w");
	u8 h[44 + 8];
	u32 i;

	if (!f)
		return -1;
	memcpy(h, "RIFF", 4);
	put_le32(h + 4, 4 + 24 + 8 + list + (list & 1) + 8 + data);
	memcpy(h + 8, "WAVEfmt ", 8);
	put_le32(h + 16, 16);
	put_le16(h + 20, 1);		/* PCM */
	put_le16(h + 22, 2);		/* stereo */
	put_le32(h + 24, 44100);
	put_le32(h + 28, 44100 * 4);
	put_le16(h + 32, 4);
	put_le16(h + 34, 16);
	memcpy(h + 36, "LIST", 4);
	put_le32(h + 40, list);
	fwrite(h, 44, 1, f);
	for (i = 0; i < list + (list & 1); i++)
		fputc('x', f);
	memcpy(h, "data", 4);
	put_le32(h + 4, data_field);
	fwrite(h, 8, 1, f);
	for (i = 0; i < data; i++)
		fputc((int)(i * 13) & 0xff, f);
	return fclose(f) ? -1 : 0;
}

struct lines {
	char text[4096];
};

static void collect(void *ctx, const char *key, const char *value)
{
	struct lines *l = ctx;
	size_t n = strlen(l->text);

	snprintf(l->text + n, sizeof(l->text) - n, "%s: %s\n", key, value);
}

/* vdimgctl info's lines for sheet @name into @l; true when it opens */
static bool describe(const char *name, struct lines *l)
{
	struct vdimg_image img;

	l->text[0] = '\0';
	if (cue_open_img(&img, name, 0, true))
		return false;
	vdimg_tool_ops(img.fmt)->describe(&img, collect, l);
	cue_close_img(&img);
	return true;
}

static bool has_line(const struct lines *l, const char *s)
{
	if (strstr(l->text, s))
		return true;
	printf("# info lacks \"%s\":\n", s);
	printf("# %s", l->text);
	return false;
}

/*
 * Mixed-mode sheets: a data track in a BINARY file and audio tracks in WAVE, MP3, AIFF and MOTOROLA
 * files (present or not), then a second data track in another BINARY file.
 */
static void test_audio_files(void)
{
	const struct vdimg_format *fmt = vdimg_format_by_id(VDIMG_FMT_CUE);
	struct vdimg_image img, bad;
	struct lines l;
	int fd;

	write_wave("game2.wav", 5, 2352 * 260, 2352 * 260);
	fd = tfile("game5.raw", NULL, 2352 * 10);
	close(fd);
	write_text("game.cue", "FILE \"m1.bin\" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n"
		   "FILE \"game2.wav\" WAVE\n  TRACK 02 AUDIO\n    INDEX 00 00:00:00\n"
		   "    INDEX 01 00:02:00\n  TRACK 03 AUDIO\n    INDEX 01 00:02:50\n"
		   "FILE \"game4.mp3\" MP3\n  TRACK 04 AUDIO\n    INDEX 01 00:00:00\n"
		   "FILE \"game5.raw\" MOTOROLA\n  TRACK 05 AUDIO\n    INDEX 01 00:00:00\n"
		   "FILE \"game6.aiff\" AIFF\n  TRACK 06 AUDIO\n    INDEX 01 00:00:00\n"
		   "FILE \"m3.bin\" BINARY\n  TRACK 07 MODE2/2352\n    INDEX 01 00:00:00\n");
	ok(reads_as_iso("game.cue", 0, "MODE1/2352"), "mixed sheet: track 1 (BINARY) reads as the ISO");
	ok(reads_as_iso("game.cue", 7, "MODE2/2352"),
	   "mixed sheet: track 7, the second BINARY file after four audio files, reads as the ISO");
	if (ok_err(cue_open_img(&img, "game.cue", 2, true), -EOPNOTSUPP, "track 2 (WAVE audio) refused"))
		ok(msg_has("audio track"), "the message says it is audio");
	if (ok(!cue_open_img(&img, "game.cue", 0, true), "mixed sheet opens")) {
		const struct cue_sheet *s = &CUE(&img)->sheet;

		ok(img.nr_extents == 2 && s->nr_files == 6 && s->nr_binary == 2 &&
		   s->extent[0] == 0 && s->extent[5] == 1 && s->extent[1] == U32_MAX,
		   "only the two BINARY files are extent files (FILE 1 -> 0, FILE 6 -> 1)");
		/* the kernel half bound-checks the count it is given */
		memset(&bad, 0, sizeof(bad));
		bad.name = "bad";
		bad.file = img.file;
		bad.extents = img.extents;
		bad.nr_extents = 1;
		ktap_last_msg[0] = '\0';
		if (ok_err(fmt->open(&bad, VDIMG_OPEN_READ_ONLY), -EINVAL, "one extent for two BINARY files refused"))
			ok(msg_has("names 2 BINARY files, 1 given"), "the message gives both counts");
		else
			fmt->close(&bad);
		cue_close_img(&img);
	}
	if (ok(describe("game.cue", &l), "info on the mixed sheet")) {
		ok(has_line(&l, "track 01: MODE1/2352 start 0 length "), "info: data track 1");
		ok(has_line(&l, "track 02: AUDIO start 352800 length 117600 (50 sectors of 2352) file \"game2.wav\" WAVE\n"),
		   "info: WAVE track 2 up to track 3 (INDEX 00 at 0, INDEX 01 at 00:02:00)");
		ok(has_line(&l, "track 03: AUDIO start 470400 length 141120 (60 sectors of 2352) file \"game2.wav\" WAVE\n"),
		   "info: WAVE track 3 to the end of the data chunk (after an odd-sized LIST chunk)");
		ok(has_line(&l, "track 04: AUDIO start 0 length unknown (not measured in this format) file \"game4.mp3\" MP3\n"),
		   "info: MP3 track 4, length unknown");
		ok(has_line(&l, "track 05: AUDIO start 0 length 23520 (10 sectors of 2352) file \"game5.raw\" MOTOROLA\n"),
		   "info: MOTOROLA track 5 from the file size");
		ok(has_line(&l, "track 06: AUDIO start 0 length unknown (not measured in this format) file \"game6.aiff\" AIFF\n"),
		   "info: AIFF track 6");
		ok(has_line(&l, "track 07: MODE2/2352 start 0 length ") && has_line(&l, "\"m3.bin\"\n"),
		   "info: data track 7");
	}

	/* the audio files need not be there, nor be sound: only info looks at them */
	write_wave("short.wav", 0, 100, 0xffffff00);
	write_text("text.wav", "just some text, no RIFF header\n");
	write_text("nowav.cue", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\nINDEX 01 00:00:00\n"
		   "FILE \"gone.wav\" WAVE\nTRACK 02 AUDIO\nINDEX 01 00:00:00\n"
		   "FILE \"short.wav\" WAVE\nTRACK 03 AUDIO\nINDEX 01 00:00:00\n"
		   "FILE \"text.wav\" WAVE\nTRACK 04 AUDIO\nINDEX 01 00:00:00\n"
		   "FILE \"../game2.wav\" WAVE\nTRACK 05 AUDIO\nINDEX 01 00:00:00\n"
		   "FILE \"game2.wav\" WAVE\nTRACK 06 AUDIO\nINDEX 01 01:00:00\n"
		   "FILE \"fifo.wav\" WAVE\nTRACK 07 AUDIO\nINDEX 01 00:00:00\n");
	sh("rm -f '%s' && mkfifo '%s'", tpath("fifo.wav"), tpath("fifo.wav"));
	ok(reads_as_iso("nowav.cue", 0, "MODE1/2352"),
	   "missing, broken and outside audio files: the data track reads as the ISO");
	if (ok(describe("nowav.cue", &l), "info on it")) {
		ok(has_line(&l, "track 02: AUDIO start 0 length unknown (the file is missing) file \"gone.wav\" WAVE\n"),
		   "info: a missing WAVE file");
		ok(has_line(&l, "track 03: AUDIO start 0 length unknown (a RIFF chunk runs past the end of the file)"),
		   "info: a data chunk size past the file end");
		ok(has_line(&l, "track 04: AUDIO start 0 length unknown (not a RIFF WAVE file)"),
		   "info: a WAVE file without RIFF header");
		ok(has_line(&l, "track 05: AUDIO start 0 length unknown (the name is not inside the sheet's directory)"),
		   "info: a \"..\" audio name is not opened");
		ok(has_line(&l, "track 06: AUDIO start 10584000 length unknown (INDEX 01 is past the 611520 bytes of audio)"),
		   "info: INDEX 01 past the audio");
		ok(has_line(&l, "track 07: AUDIO start 0 length unknown (not a regular file) file \"fifo.wav\""),
		   "info: a FIFO is not opened (info did not hang)");
	}
}

static void test_form2(void)
{
	struct vdimg_image img;
	struct vdimg_extent ext;
	u8 buf[2048];

	write_track("f2.bin", M2_2352, 0, 5);
	write_text("f2.cue", "FILE \"f2.bin\" BINARY\nTRACK 01 MODE2/2352\nINDEX 01 00:00:00\n");
	if (!ok(!cue_open_img(&img, "f2.cue", 0, true), "open a MODE2 track with a form 2 sector"))
		return;
	ok(!img.fmt->map(&img, 4 * 2048, 2048, 0, &ext) && !img.fmt->read_encoded(&img, &ext, buf) &&
	   !memcmp(buf, iso + 4 * 2048, 2048), "form 1 sector 4 reads");
	ok(!img.fmt->map(&img, 5 * 2048, 2048, 0, &ext) &&
	   img.fmt->read_encoded(&img, &ext, buf) == -EIO && msg_has("form 2"),
	   "form 2 sector 5 reads as -EIO, named");
	cue_close_img(&img);
}

static void test_malformed(void)
{
	static const struct {
		const char *tag, *text;
		int err;
		const char *msg;
	} cases[] = {
		{ "unknown mode", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE3/2352\nINDEX 01 00:00:00\n",
		  -EOPNOTSUPP, "MODE3/2352" },
		{ "CDG mode", "FILE \"m1.bin\" BINARY\nTRACK 01 CDG\nINDEX 01 00:00:00\n",
		  -EOPNOTSUPP, "CDG" },
		{ "data track in a WAVE file", "FILE \"m1.bin\" WAVE\nTRACK 01 MODE1/2352\nINDEX 01 00:00:00\n",
		  -EOPNOTSUPP, "line 2: track 1 is MODE1/2352 in a WAVE file" },
		{ "data track in a MOTOROLA file", "FILE \"a.bin\" BINARY\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n"
		  "FILE \"m1.bin\" MOTOROLA\nTRACK 02 MODE2/2352\nINDEX 01 00:00:00\n",
		  -EOPNOTSUPP, "line 5: track 2 is MODE2/2352 in a MOTOROLA file" },
		{ "unknown FILE type", "FILE \"m1.bin\" OGG\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n",
		  -EOPNOTSUPP, "line 1: FILE type OGG" },
		{ "lower-case FILE type", "FILE \"m1.bin\" wave\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n",
		  -EOPNOTSUPP, "FILE type wave" },
		{ "audio files only", "FILE \"a.wav\" WAVE\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n"
		  "FILE \"b.mp3\" MP3\nTRACK 02 AUDIO\nINDEX 01 00:00:00\n", -EOPNOTSUPP, "no data track" },
		{ "overlapping tracks in a WAVE file", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\n"
		  "INDEX 01 00:00:00\nFILE \"a.wav\" WAVE\nTRACK 02 AUDIO\nINDEX 01 00:04:00\n"
		  "TRACK 03 AUDIO\nINDEX 00 00:03:00\nINDEX 01 00:05:00\n", -EUCLEAN, "tracks 2 and 3 overlap" },
		{ "unknown keyword", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\nINDEX 01 00:00:00\nBOGUS 1\n",
		  -EUCLEAN, "unknown keyword" },
		{ "overlapping tracks", "FILE \"multi.bin\" BINARY\nTRACK 01 AUDIO\nINDEX 01 00:04:00\n"
		  "TRACK 02 MODE1/2352\nINDEX 01 00:04:00\n", -EUCLEAN, "overlap" },
		{ "INDEX past the file end", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\nINDEX 01 99:00:00\n",
		  -EUCLEAN, "not inside" },
		{ "partial sector", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE2/2336\nINDEX 01 00:00:00\n",
		  -EUCLEAN, "whole number" },
		{ "mixed sector sizes in a file", "FILE \"multi.bin\" BINARY\nTRACK 01 AUDIO\nINDEX 01 00:00:00\n"
		  "TRACK 02 MODE1/2048\nINDEX 01 00:04:00\n", -EOPNOTSUPP, "sector sizes" },
		{ "unterminated quote", "FILE \"m1.bin BINARY\nTRACK 01 MODE1/2352\nINDEX 01 00:00:00\n",
		  -EUCLEAN, "quoting" },
		{ "bad MSF", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\nINDEX 01 00:60:00\n",
		  -EUCLEAN, "mm:ss:ff" },
		{ "no INDEX 01", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\nINDEX 00 00:00:00\n",
		  -EUCLEAN, "no INDEX 01" },
		{ "tracks out of order", "FILE \"multi.bin\" BINARY\nTRACK 02 AUDIO\nINDEX 01 00:00:00\n"
		  "TRACK 01 MODE1/2352\nINDEX 01 00:04:00\n", -EUCLEAN, "after track" },
		{ "INDEX before TRACK", "FILE \"m1.bin\" BINARY\nINDEX 01 00:00:00\nTRACK 01 MODE1/2352\n",
		  -EUCLEAN, "outside a TRACK" },
		{ "control character", "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\x01\nINDEX 01 00:00:00\n",
		  -EUCLEAN, "control character" },
		{ "absolute path", "FILE \"/etc/passwd\" BINARY\nTRACK 01 MODE1/2048\nINDEX 01 00:00:00\n",
		  -EPERM, "not inside" },
		{ "dot-dot path", "FILE \"../x.bin\" BINARY\nTRACK 01 MODE1/2048\nINDEX 01 00:00:00\n",
		  -EPERM, "not inside" },
		{ "missing file", "FILE \"nothere.bin\" BINARY\nTRACK 01 MODE1/2048\nINDEX 01 00:00:00\n",
		  -ENOENT, "nothere.bin" },
	};
	struct vdimg_image img;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		write_text("bad.cue", cases[i].text);
		if (ok_err(cue_open_img(&img, "bad.cue", 0, true), cases[i].err, "%s refused",
			   cases[i].tag))
			ok(msg_has(cases[i].msg), "%s: the message says so", cases[i].tag);
		else if (img.fmt)
			cue_close_img(&img);
	}
}

static void test_bounds(void)
{
	struct vdimg_image img;
	char *big;
	size_t n = CUE_SHEET_MAX + 10, i;

	/* a sheet past the size limit is not probed as one; as format cue it is refused */
	big = malloc(n + 1);
	memset(big, ' ', n);
	memcpy(big, "FILE \"m1.bin\" BINARY\nTRACK 01 MODE1/2352\nINDEX 01 00:00:00\n", 58);
	big[n] = '\0';
	write_text("big.cue", big);
	ok(!cue_probe_text((u8 *)big, 4096, n), "an oversized sheet is not probed as CUE");
	free(big);

	/* more lines than allowed */
	n = (CUE_LINES_MAX + 1) * 4 + 64;
	big = malloc(n + 1);
	strcpy(big, "FILE \"m1.bin\" BINARY\n");
	for (i = strlen(big); i + 4 < n; i += 4)
		memcpy(big + i, "REM\n", 4);
	big[i] = '\0';
	{
		struct cue_sheet *s = malloc(sizeof(*s));
		struct vdimg_image m = { .name = "lines" };

		ok(cue_parse(&m, big, strlen(big), s) == -EUCLEAN && msg_has("lines"),
		   "more than %d lines refused", CUE_LINES_MAX);
		free(s);
	}
	free(big);
	(void)img;
}

int main(void)
{
	ktap_start();
	if (sh("command -v genisoimage >/dev/null")) {
		printf("1..0 # SKIP genisoimage is not installed\n");
		return 4;
	}
	sh("mkdir -p '%s' && seq 1 20000 > '%s' && head -c 300000 /dev/urandom > '%s'",
	   tpath("tree/dir"), tpath("tree/numbers.txt"), tpath("tree/dir/random.bin"));
	if (sh("genisoimage -quiet -R -J -o '%s' '%s'", tpath("src.iso"), tpath("tree"))) {
		printf("Bail out! genisoimage failed\n");
		return 1;
	}
	iso = slurp(tpath("src.iso"), &iso_len);
	if (!iso || iso_len % 2048) {
		printf("Bail out! bad ISO\n");
		return 1;
	}
	test_modes();
	test_layouts();
	test_form2();
	test_audio_files();
	test_malformed();
	test_bounds();
	free(iso);
	return ktap_finish();
}
