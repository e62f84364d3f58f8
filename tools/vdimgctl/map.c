// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl map: what every byte of an image's virtual disk is, through its whole chain: data in
 * which layer and at which file offset, zeros, compressed, or allocated nowhere. The output has the
 * shape of `qemu-img map` (a table of the data ranges) and, with --json, of `qemu-img map
 * --output=json` (one object per range with start, length, depth, present, zero, data and offset),
 * so scripts written for qemu-img work unchanged. Userspace only, offline, read-only.
 */
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "vdimgctl.h"
#include "chain.h"

/* the data range of a raw layer split at the file's holes, which qemu reports as zeros */
static u64 raw_hole_split(int fd, u64 off, u64 len, bool *hole)
{
	off_t data = lseek(fd, (off_t)off, SEEK_DATA), end;

	if (data < 0) {
		/* ENXIO: only a hole up to the end of the file; anything else: say data */
		*hole = errno == ENXIO;
		return len;
	}
	if ((u64)data > off) {
		*hole = true;
		return min(len, (u64)data - off);
	}
	*hole = false;
	end = lseek(fd, (off_t)off, SEEK_HOLE);
	return end < 0 || (u64)end <= off ? len : min(len, (u64)end - off);
}

/* the formats qemu opens with backing files */
static bool qemu_has_backing(u32 id)
{
	return id == VDIMG_FMT_QCOW2 || id == VDIMG_FMT_QCOW || id == VDIMG_FMT_QED ||
	       id == VDIMG_FMT_VMDK || id == VDIMG_FMT_PARALLELS;
}

/*
 * What is at @off (up to @len bytes) seen from the top of @c: walk down the layers while the range
 * is unallocated. Returns 0 and fills @e, or a negative errno.
 */
int map_range(struct vdimg_chain *c, u64 off, u64 len, struct map_entry *e)
{
	int i;

	memset(e, 0, sizeof(*e));
	e->start = off;
	e->layer = -1;
	for (i = c->nr - 1; i >= 0; i--) {
		struct vdimg_image *img = c->layers[i];
		struct vdimg_extent ext;
		int ret;

		e->depth = c->nr - 1 - i;
		if (off >= img->size) {
			/* beyond a shorter parent: zeros, allocated nowhere */
			e->length = len;
			e->zero = true;
			return 0;
		}
		len = min(len, img->size - off);
		ret = img->fmt->map(img, off, len, 0, &ext);
		if (ret)
			return ret;
		if (!ext.length || ext.length > len)
			return -EIO;
		len = ext.length;
		switch (ext.type) {
		case VDIMG_EXT_UNALLOCATED:
			continue;
		case VDIMG_EXT_ZERO:
			e->present = e->zero = true;
			break;
		case VDIMG_EXT_ENCODED:
			e->present = e->data = true;
			e->layer = i;
			break;
		case VDIMG_EXT_DATA:
			e->present = e->data = e->has_offset = true;
			e->offset = ext.file_offset;
			e->file = ext.file;
			e->layer = i;
			if (img->fmt->id == VDIMG_FMT_RAW && ext.file) {
				bool hole;

				len = raw_hole_split(ext.file->fd, ext.file_offset, len, &hole);
				e->data = !hole;
				e->zero = hole;
			}
			break;
		default:
			return -EIO;
		}
		e->length = len;
		return 0;
	}
	/*
	 * Allocated in no layer: zeros, at the depth of the base, as qemu reports them. qemu calls
	 * such a range present when the base's format has no backing files in qemu (VHD, VHDX, VDI,
	 * DMG...): scripts written for qemu-img see the same.
	 */
	e->depth = c->nr - 1;
	e->length = len;
	e->zero = true;
	e->present = !qemu_has_backing(c->layers[0]->fmt->id);
	return 0;
}

/* can @e extend @prev (same kind, same layer, file offsets contiguous)? */
static bool map_mergeable(const struct map_entry *prev, const struct map_entry *e)
{
	if (prev->depth != e->depth || prev->present != e->present || prev->zero != e->zero ||
	    prev->data != e->data || prev->has_offset != e->has_offset || prev->layer != e->layer)
		return false;
	return !e->has_offset || (prev->file == e->file && prev->offset + prev->length == e->offset);
}

/*
 * The file a data range is in: the layer's path as the chain was given it, or, for the other files
 * of a layer (VMDK extents, a qcow2 data file), the path its descriptor was opened at.
 */
static const char *map_file_name(struct vdimg_chain *c, const struct map_entry *e)
{
	static char buf[PATH_MAX];
	const struct vdimg_chain_layer *l = &c->layer[e->layer];
	char proc[64];
	ssize_t n;

	if (e->file == l->file || e->file == l->img.file)
		return l->path;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", e->file->fd);
	n = readlink(proc, buf, sizeof(buf) - 1);
	if (n <= 0)
		return l->path;
	buf[n] = '\0';
	return buf;
}

static void map_print(const struct map_entry *e, struct vdimg_chain *c, bool json, bool first)
{
	if (json) {
		printf("%s{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, "
		       "\"zero\": %s, \"data\": %s", first ? "[" : ",\n",
		       (unsigned long long)e->start, (unsigned long long)e->length, e->depth,
		       e->present ? "true" : "false", e->zero ? "true" : "false",
		       e->data ? "true" : "false");
		if (e->has_offset)
			printf(", \"offset\": %llu", (unsigned long long)e->offset);
		printf("}");
		return;
	}
	/* the human table lists what has a place in a file, as qemu-img map does */
	if (!e->data || !e->has_offset)
		return;
	printf("%-#16llx%-#16llx%-#16llx%s\n", (unsigned long long)e->start,
	       (unsigned long long)e->length, (unsigned long long)e->offset,
	       map_file_name(c, e));
}

static int map_usage(void)
{
	printf("Usage: vdimgctl map [--json] [-t FMT] IMAGE\n\n"
	       "Print which ranges of IMAGE's virtual disk hold data, and where, through its\n"
	       "whole chain. The table lists the data ranges with the file holding them; --json\n"
	       "prints every range as `qemu-img map --output=json` does (start, length, depth,\n"
	       "present, zero, data, offset).\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_map(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "format", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	u32 format = VDIMG_FMT_AUTO, *fmts = NULL;
	struct map_entry prev, e;
	struct vdimg_chain *c = NULL;
	int ch, n = 0, ret, status = EXIT_FAIL;
	bool json = false, have = false, first = true;
	const char *path;
	char **paths = NULL;
	u64 off;

	while ((ch = getopt_long(argc, argv, "Jt:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'J':
			json = true;
			break;
		case 't':
			if (parse_format("map", optarg, &format))
				return EXIT_FAIL;
			break;
		case 'h':
			return map_usage();
		default:
			return usage_error("map", "bad option");
		}
	}
	if (optind != argc - 1)
		return usage_error("map", "expected one IMAGE");
	path = argv[optind];
	if (chain_of(path, format, "cannot map", &paths, &fmts, &n))
		return EXIT_FAIL;
	lib_action("cannot map");
	ret = vdimg_chain_open(&c, (const char *const *)paths, n, fmts, VDIMG_CHAIN_READ_ONLY);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot map", "%s", strerror(-ret));
		goto out;
	}
	if (!json)
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	for (off = 0; off < c->size; off += e.length) {
		ret = map_range(c, off, c->size - off, &e);
		if (ret) {
			if (!lib_reported)
				errmsg(path, "cannot map", "at offset %llu: %s",
				       (unsigned long long)off, strerror(-ret));
			goto out_close;
		}
		if (have && map_mergeable(&prev, &e)) {
			prev.length += e.length;
			continue;
		}
		if (have) {
			map_print(&prev, c, json, first);
			first = false;
		}
		prev = e;
		have = true;
	}
	if (have)
		map_print(&prev, c, json, first);
	if (json)
		printf(have ? "]\n" : "[]\n");
	status = EXIT_OK;
out_close:
	vdimg_chain_close(c);
out:
	vdimg_chain_resolve_free(paths, fmts, n);
	return status;
}
