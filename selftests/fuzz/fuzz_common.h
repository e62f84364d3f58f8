/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the libFuzzer targets share: the input is an image file, copied into one memfd per process;
 * helpers open it as a backend image, check that every extent answers the question asked, walk the
 * whole disk, and do one write the way the driver does (map WRITE, fill, commit or abort). A target
 * sets `fmt` and calls these from its LLVMFuzzerTestOneInput(); anything that does not fit the
 * backend contract abort()s, which libFuzzer reports with the input.
 */
#ifndef _VDIMG_FUZZ_COMMON_H
#define _VDIMG_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <vdimg/backend.h>
#include "vdimg-user.h"

static const struct vdimg_format *fmt;	/* the backend under test, set by the target */
static u8 fuzz_buf[1 << 16];
static u8 *fuzz_dec;			/* decode buffer for ENCODED extents */
static u64 fuzz_dec_size;

static void fuzz_quiet(int level, const char *name, const char *text)
{
}

static void fuzz_sink(void *ctx, const char *key, const char *value)
{
	*(size_t *)ctx += strlen(key) + strlen(value);
}

/*
 * The input as a file (one memfd reused for every run) for backend @f. @dec_size: bytes of the
 * decode buffer for ENCODED extents, 0 if the format has none. NULL if it cannot be wrapped.
 */
static struct vdimg_file *fuzz_load(const struct vdimg_format *f, const u8 *data, size_t size,
				    u64 dec_size)
{
	static int fd = -1;

	if (fd < 0) {
		fmt = f;
		fd = memfd_create("fuzz", 0);
		if (fd < 0)
			abort();
		if (dec_size) {
			fuzz_dec = malloc(dec_size);
			if (!fuzz_dec)
				abort();
			fuzz_dec_size = dec_size;
		}
		vdimg_set_msg_hook(fuzz_quiet);
	}
	if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	return vdimg_file_from_fd(fd);
}

/* 24 bits from the input's last bytes, to pick offsets and variants */
static u32 fuzz_pick(const u8 *data, size_t size)
{
	return size >= 4 ? data[size - 1] | data[size - 2] << 8 | data[size - 3] << 16 : 0;
}

/* open @f with the extent files @ext[@n] (formats with VDIMG_CAP_EXTENT_FILES) */
static int fuzz_open_with(struct vdimg_image *img, struct vdimg_file *f, unsigned int flags,
			  struct vdimg_file **ext, u32 n)
{
	int ret;

	memset(img, 0, sizeof(*img));
	img->file = f;
	img->extents = ext;
	img->nr_extents = n;
	img->name = "fuzz";
	img->fmt = fmt;
	ret = fmt->open(img, flags);
	if (!ret && (flags & VDIMG_OPEN_READ_ONLY))
		img->flags |= VDIMG_IMG_READ_ONLY;	/* as vdimg_image_open() does */
	return ret;
}

static int fuzz_open(struct vdimg_image *img, struct vdimg_file *f, unsigned int flags)
{
	return fuzz_open_with(img, f, flags, NULL, 0);
}

/* Does @e answer "what is at [off, off + len)" (for a write when @write)? */
static void fuzz_check_extent(const struct vdimg_extent *e, u64 off, u64 len, bool write)
{
	u32 last = fuzz_dec ? VDIMG_EXT_ENCODED : VDIMG_EXT_UNALLOCATED;

	if (e->offset != off || !e->length || e->length > len)
		abort();
	if (e->type < VDIMG_EXT_DATA || e->type > last)
		abort();
	if (write && e->type != VDIMG_EXT_DATA)
		abort();
	if (!write && (e->flags & VDIMG_EXT_NEW))
		abort();
	if (e->type == VDIMG_EXT_DATA && e->file_offset + e->length < e->file_offset)
		abort();
	if ((e->flags & VDIMG_EXT_NEW) && e->fill_length &&
	    (e->fill_offset > off || e->fill_offset + e->fill_length < off + e->length))
		abort();
}

/* What a map error means to fuzz_walk() */
enum fuzz_map_errors {
	FUZZ_MAP_STRICT,	/* open validated every table entry: any error is a bug */
	FUZZ_MAP_BAD_BLOCKS,	/* -EUCLEAN marks a block with a bad entry: skip a sector */
	FUZZ_MAP_LAZY,		/* entries are validated when met: an error ends the walk */
};

/*
 * Map the whole disk (at most @max_extents extents), alternately with VDIMG_MAP_NOWAIT; read a
 * bounded part of every DATA extent and decode ENCODED ones (never longer than the decode buffer,
 * which a target sizes for the format's largest cluster).
 */
static void fuzz_walk(struct vdimg_image *img, int max_extents, enum fuzz_map_errors errs)
{
	u64 off = 0;
	int n = 0;

	while (off < img->size && n++ < max_extents) {
		struct vdimg_extent e;
		int ret;

		memset(&e, 0x5a, sizeof(e));
		ret = fmt->map(img, off, img->size - off, n & 1 ? VDIMG_MAP_NOWAIT : 0, &e);
		if (ret == -EAGAIN)
			ret = fmt->map(img, off, img->size - off, 0, &e);
		if (ret == -EUCLEAN && errs == FUZZ_MAP_BAD_BLOCKS) {
			off += 512;
			continue;
		}
		if (ret && errs == FUZZ_MAP_LAZY)
			return;
		if (ret)
			abort();	/* in range, nothing to allocate: must answer */
		fuzz_check_extent(&e, off, img->size - off, false);
		if (e.type == VDIMG_EXT_DATA)
			vdimg_file_read(e.file, fuzz_buf, min_t(u64, e.length, sizeof(fuzz_buf)),
					e.file_offset);
		if (e.type == VDIMG_EXT_ENCODED) {
			if (e.length > fuzz_dec_size)
				abort();	/* one cluster at most */
			fmt->read_encoded(img, &e, fuzz_dec);
		}
		off += e.length;
	}
}

/* Read-only checks every target does: describe, parent_ref consistency, map(WRITE) refused. */
static void fuzz_read_only_calls(struct vdimg_image *img)
{
	struct vdimg_parent_ref ref;
	struct vdimg_extent e;
	size_t chars = 0;

	if (vdimg_tool_ops(fmt)->describe)
		vdimg_tool_ops(fmt)->describe(img, fuzz_sink, &chars);
	if (vdimg_tool_ops(fmt)->parent_ref && vdimg_tool_ops(fmt)->parent_ref(img, &ref) == 0 &&
	    !(img->flags & VDIMG_IMG_HAS_PARENT))
		abort();
	memset(&e, 0, sizeof(e));
	if (fmt->map(img, 0, 512, VDIMG_MAP_WRITE, &e) != -EROFS)
		abort();
}

/*
 * One write of up to 4 KiB at @off as the driver does it: an allocated extent is written in place;
 * a NEW one (when @pick's bit 0 is set and its fill is at most @max_fill) gets its whole fill range
 * written, then ->commit() (->abort() if that fails); otherwise the reservation is aborted.
 */
static void fuzz_write_one(struct vdimg_image *img, u64 off, u32 pick, u64 max_fill)
{
	struct vdimg_extent e;

	memset(&e, 0, sizeof(e));
	if (fmt->map(img, off, 4096, VDIMG_MAP_WRITE, &e))
		return;
	fuzz_check_extent(&e, off, min_t(u64, 4096, img->size - off), true);
	memset(fuzz_buf, 0xc3, sizeof(fuzz_buf));
	if (!(e.flags & VDIMG_EXT_NEW)) {
		vdimg_file_write(e.file, fuzz_buf, e.length, e.file_offset);
	} else if ((pick & 1) && e.fill_length <= max_fill) {
		u64 start = e.file_offset - (e.offset - e.fill_offset), done;
		u64 len = e.fill_length;
		int ret = 0;

		if (!len) {		/* no fill asked: the extent itself */
			start = e.file_offset;
			len = e.length;
		}
		for (done = 0; !ret && done < len; done += sizeof(fuzz_buf))
			ret = vdimg_file_write(e.file, fuzz_buf,
					       min_t(u64, sizeof(fuzz_buf), len - done), start + done);
		if (ret || fmt->commit(img, &e))
			fmt->abort(img, &e);
	} else {
		fmt->abort(img, &e);
	}
}

/* open read-only, map the whole disk strictly (reading DATA extents), the read-only calls */
static void fuzz_read_only_pass(struct vdimg_file *f)
{
	struct vdimg_image img;

	if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY))
		return;
	fuzz_walk(&img, 4096, FUZZ_MAP_STRICT);
	fuzz_read_only_calls(&img);
	fmt->close(&img);
}

/*
 * What a normal open refuses, check --repair must fix for good: when an open for repair works, the
 * repair must succeed and the image then open read-only (and with @writable, writable too).
 */
static void fuzz_repair_pass(struct vdimg_file *f, bool writable)
{
	struct vdimg_check_result res = {};
	struct vdimg_image img;

	if (fuzz_open(&img, f, VDIMG_OPEN_REPAIR))
		return;
	if (vdimg_tool_ops(fmt)->check(&img, VDIMG_CHECK_REPAIR, &res))
		abort();
	fmt->close(&img);
	if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY))
		abort();
	fmt->close(&img);
	if (!writable)
		return;
	if (fuzz_open(&img, f, 0))
		abort();
	fmt->close(&img);
}

/*
 * The run of the cluster-table formats (qcow2, qed): read-only walk and calls, a walk of an
 * internal snapshot (formats with VDIMG_CAP_SNAPSHOTS); a writable open
 * with one write, a discard or write-zeroes, a flush, a check, a walk and a reopen; then (for a
 * quarter of the inputs) check --repair, after which @after_repair must hold: for
 * FUZZ_REPAIR_NO_LEAKS our own check finds no leak unless it still finds errors the repair could
 * not fix, for FUZZ_REPAIR_IDEMPOTENT a second repair
 * fixes nothing and the image opens writable again. Map errors are allowed (these formats validate
 * table entries when they meet them).
 */
enum fuzz_repair_rule { FUZZ_REPAIR_NO_LEAKS, FUZZ_REPAIR_IDEMPOTENT };

static int fuzz_cluster_format(const struct vdimg_format *format, const u8 *data, size_t size,
			       enum fuzz_repair_rule after_repair)
{
	u32 pick = fuzz_pick(data, size);
	struct vdimg_check_result res;
	struct vdimg_image img;
	struct vdimg_file *f;
	u64 off;

	f = fuzz_load(format, data, size, 2U << 20);
	if (!f)
		return 0;
	if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY) == 0) {
		fuzz_walk(&img, 2048, FUZZ_MAP_LAZY);
		fuzz_read_only_calls(&img);
		fmt->close(&img);
	}

	/* an internal snapshot the input picks (1..4), read-only as the registry insists */
	if (fmt->caps & VDIMG_CAP_SNAPSHOTS) {
		memset(&img, 0, sizeof(img));
		img.file = f;
		img.name = "fuzz";
		img.fmt = fmt;
		img.snapshot = 1 + (pick >> 8) % 4;
		if (fmt->open(&img, VDIMG_OPEN_READ_ONLY) == 0) {
			img.flags |= VDIMG_IMG_READ_ONLY;
			fuzz_walk(&img, 2048, FUZZ_MAP_LAZY);
			fmt->close(&img);
		}
	}

	if (fuzz_open(&img, f, 0) == 0) {
		off = ((u64)pick * 512) % img.size;
		fuzz_write_one(&img, off, pick, 2U << 20);
		fmt->discard(&img, off & ~4095ULL, min_t(u64, 1 << 20, img.size - (off & ~4095ULL)),
			     pick & 2 ? VDIMG_DISCARD_ZEROES : 0);
		fmt->flush(&img);
		memset(&res, 0, sizeof(res));
		vdimg_tool_ops(fmt)->check(&img, 0, &res);
		fuzz_walk(&img, 2048, FUZZ_MAP_LAZY);
		fmt->close(&img);
		if (fuzz_open(&img, f, VDIMG_OPEN_READ_ONLY) == 0) {
			fuzz_walk(&img, 2048, FUZZ_MAP_LAZY);
			fmt->close(&img);
		}
	}

	if ((pick & 4) && fuzz_open(&img, f, 0) == 0) {
		memset(&res, 0, sizeof(res));
		if (vdimg_tool_ops(fmt)->check(&img, VDIMG_CHECK_REPAIR, &res) == 0) {
			memset(&res, 0, sizeof(res));
			/*
			 * a repair that left no error also left no leak (with corruption it could not
			 * fix, e.g. table entries with reserved bits, leak counts mean little)
			 */
			if (after_repair == FUZZ_REPAIR_NO_LEAKS && vdimg_tool_ops(fmt)->check(&img, 0, &res) == 0 &&
			    !res.errors && res.leaks)
				abort();
			if (after_repair == FUZZ_REPAIR_IDEMPOTENT &&
			    vdimg_tool_ops(fmt)->check(&img, VDIMG_CHECK_REPAIR, &res) == 0 && res.fixed)
				abort();	/* a repaired image has nothing left to fix */
		}
		fmt->close(&img);
		if (after_repair == FUZZ_REPAIR_IDEMPOTENT) {
			if (fuzz_open(&img, f, 0) != 0)
				abort();	/* and opens again */
			fmt->close(&img);
		}
	}
	vdimg_file_free(f);
	return 0;
}

#endif /* _VDIMG_FUZZ_COMMON_H */
