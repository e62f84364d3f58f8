// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl measure: how large a new image would be, like `qemu-img measure`: the bytes a new
 * image of a format needs for a given virtual size, or for what a source image's chain holds
 * ("required"), and the bytes it takes fully allocated. QCOW2 uses qemu's qcow2 layout rules (a
 * header cluster, L2 tables for every cluster, the L1 table, refcount blocks and table counting
 * everything including themselves), so the figures are the ones qemu-img measure prints; raw
 * needs its size.
 * Never talks to the module.
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <getopt.h>
#include "vdimgctl.h"
#include "chain.h"

static int measure_usage(void)
{
	printf("Usage: vdimgctl measure [-O FMT] [-o OPTS] [--json] [-t FMT]\n"
	       "                        (--size SIZE | SRC)\n\n"
	       "Print the size a new image of FMT (qcow2 or raw, default raw) needs: for a disk of\n"
	       "SIZE, or to hold what SRC's chain holds (required), and fully allocated, like\n"
	       "`qemu-img measure`. -o takes qcow2's cluster_size and refcount_bits.\n\n"
	       "See vdimgctl(8).\n");
	return EXIT_OK;
}

/*
 * Refcount blocks and table clusters that count @clusters clusters and themselves: the fixed point
 * of "blocks cover everything, the table covers the blocks".
 */
static u64 qcow2_refcount_clusters(u64 clusters, u64 cs, u32 refcount_order)
{
	u64 per_block = cs * 8 >> refcount_order, per_table = cs / 8;
	u64 blocks = 0, table = 0, n = 0, last;

	do {
		last = n;
		blocks = DIV_ROUND_UP(clusters + table + blocks, per_block);
		table = DIV_ROUND_UP(blocks, per_table);
		n = clusters + blocks + table;
	} while (n != last);
	return blocks + table;
}

/* bytes of a fully allocated qcow2 image of @size: data, header, L2, L1, refcounts */
static u64 qcow2_full_size(u64 size, u64 cs, u32 refcount_order)
{
	u64 data = ALIGN(size, cs), meta = cs, l2e, l1e;

	l2e = ALIGN(data / cs, cs / 8);
	meta += l2e * 8;
	l1e = ALIGN(l2e * 8 / cs, cs / 8);
	meta += l1e * 8;
	meta += qcow2_refcount_clusters((meta + data) / cs, cs, refcount_order) * cs;
	return meta + data;
}

/* the bytes of @c's data a copy allocates: data ranges, widened to whole clusters of @cs */
static int measure_data(struct vdimg_chain *c, u64 cs, u64 *out)
{
	struct map_entry e;
	u64 off, end = 0, total = 0;
	int ret;

	for (off = 0; off < c->size; off += e.length) {
		ret = map_range(c, off, c->size - off, &e);
		if (ret)
			return ret;
		if (!e.length)
			return -EIO;
		if (e.zero || !e.data)
			continue;
		/* clusters already counted (the end of the last range's cluster) are not again */
		total += ALIGN(e.start + e.length, cs) - max(ALIGN_DOWN(e.start, cs), end);
		end = ALIGN(e.start + e.length, cs);
	}
	*out = total;
	return 0;
}

int cmd_measure(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output-format", required_argument, NULL, 'O' },
		{ "options", required_argument, NULL, 'o' },
		{ "size", required_argument, NULL, 's' },
		{ "format", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'J' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	static const char action[] = "cannot measure";
	u32 out_fmt = VDIMG_FMT_RAW, format = VDIMG_FMT_AUTO, *fmts = NULL, order = 4;
	unsigned long long size = 0, v;
	u64 cs = 64 << 10, data = 0, full, req;
	struct vdimg_chain *c = NULL;
	char **paths = NULL, *o = NULL, *tok, *save = NULL;
	bool json = false, has_size = false, bitmaps = false;
	const char *src = NULL;
	int ch, n = 0, ret, status = EXIT_FAIL;

	while ((ch = getopt_long(argc, argv, "O:o:s:t:Jh", opts, NULL)) != -1) {
		switch (ch) {
		case 'O':
			if (parse_format("measure", optarg, &out_fmt))
				return EXIT_FAIL;
			break;
		case 'o':
			free(o);
			o = strdup(optarg);
			break;
		case 's':
			if (parse_size(optarg, &size) || !size) {
				free(o);
				return usage_error("measure", "bad size '%s'", optarg);
			}
			has_size = true;
			break;
		case 't':
			if (parse_format("measure", optarg, &format)) {
				free(o);
				return EXIT_FAIL;
			}
			break;
		case 'J':
			json = true;
			break;
		case 'h':
			free(o);
			return measure_usage();
		default:
			free(o);
			return usage_error("measure", "bad option");
		}
	}
	if (has_size ? optind != argc : optind != argc - 1) {
		free(o);
		return usage_error("measure", "expected either --size SIZE or one SRC");
	}
	if (out_fmt != VDIMG_FMT_QCOW2 && out_fmt != VDIMG_FMT_RAW) {
		free(o);
		errmsg(NULL, action, "measuring %s images is not supported (qcow2 and raw are)",
		       fmt_name(out_fmt));
		return EXIT_FAIL;
	}
	for (tok = o ? strtok_r(o, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
		if (out_fmt == VDIMG_FMT_QCOW2 && !strncmp(tok, "cluster_size=", 13) &&
		    !parse_size(tok + 13, &v) && v >= 512 && v <= (2 << 20) && is_power_of_2(v)) {
			cs = v;
		} else if (out_fmt == VDIMG_FMT_QCOW2 && !strncmp(tok, "refcount_bits=", 14) &&
			   !parse_size(tok + 14, &v) && v >= 1 && v <= 64 && is_power_of_2(v)) {
			order = ilog2(v);
		} else {
			errmsg(NULL, action, "unknown or bad option '%s'", tok);
			free(o);
			return EXIT_FAIL;
		}
	}
	free(o);
	if (!has_size) {
		src = argv[optind];
		if (chain_of(src, format, action, &paths, &fmts, &n))
			return EXIT_FAIL;
		lib_action(action);
		ret = vdimg_chain_open(&c, (const char *const *)paths, n, fmts,
				       VDIMG_CHAIN_READ_ONLY);
		if (ret) {
			if (!lib_reported)
				errmsg(src, action, "%s", strerror(-ret));
			goto out;
		}
		size = c->size;
		ret = measure_data(c, out_fmt == VDIMG_FMT_QCOW2 ? cs : 512, &data);
		if (ret) {
			if (!lib_reported)
				errmsg(src, action, "%s", strerror(-ret));
			goto out;
		}
		/* qemu reports the bitmaps a qcow2 source would carry over (vdimg copies none) */
		bitmaps = out_fmt == VDIMG_FMT_QCOW2 &&
			  c->layers[c->nr - 1]->fmt->id == VDIMG_FMT_QCOW2;
	}
	/* qemu's bound on the L1 table (32 MiB) */
	if (out_fmt == VDIMG_FMT_QCOW2 &&
	    DIV_ROUND_UP(ALIGN((u64)size, cs) / cs, cs / 8) * 8 > (32 << 20)) {
		errmsg(src, action, "the image size is too large (try a larger cluster size)");
		goto out;
	}
	if (out_fmt == VDIMG_FMT_QCOW2) {
		full = qcow2_full_size(size, cs, order);
		req = full - ALIGN(size, cs) + data;
	} else {
		full = size;
		req = size;
	}
	if (json) {
		printf("{\n");
		if (bitmaps)
			printf("    \"bitmaps\": 0,\n");
		printf("    \"required\": %llu,\n    \"fully-allocated\": %llu\n}\n",
		       (unsigned long long)req, (unsigned long long)full);
	} else {
		printf("required size: %llu\nfully allocated size: %llu\n",
		       (unsigned long long)req, (unsigned long long)full);
		if (bitmaps)
			printf("bitmaps size: 0\n");
	}
	status = EXIT_OK;
out:
	if (c)
		vdimg_chain_close(c);
	if (paths)
		vdimg_chain_resolve_free(paths, fmts, n);
	return status;
}
