// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl convert: copy what an image's whole chain reads into a new image of any format vdimg
 * creates, like `qemu-img convert`. Sparse: only the ranges the source map says hold data are read,
 * and blocks of them that read as zeros are not written, so the new image allocates only what has
 * data. With --compress, every allocation unit of a format that can hold compressed ones (qcow2)
 * is stored compressed when that makes it smaller, as qemu-img convert -c does. Userspace only,
 * offline.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "vdimgctl.h"
#include "chain.h"

#define CONVERT_CHUNK	(2U << 20)	/* bytes read and written at a time */
#define CONVERT_ZERO_GRAIN 4096U	/* the unit in which all-zero data is left out */
#define CONVERT_STRIPE	(32U << 20)	/* the share of the disk a worker thread takes at a time */
#define CONVERT_THREADS	4		/* at most, and no more than there are CPUs */

static bool all_zero(const u8 *p, size_t len)
{
	return !p[0] && !memcmp(p, p + 1, len - 1);
}

/* write @buf (@len bytes at @off) to @d, leaving out the 4 KiB pieces that are all zeros */
static int write_sparse(struct vdimg_chain *d, const u8 *buf, size_t len, u64 off)
{
	size_t pos = 0;

	while (pos < len) {
		size_t run = min_t(size_t, CONVERT_ZERO_GRAIN - (off + pos) % CONVERT_ZERO_GRAIN,
				   len - pos), end;
		bool zero = all_zero(buf + pos, run);
		int ret;

		/* extend the run while the pieces after it are of the same kind */
		for (end = pos + run; end < len; end += run) {
			run = min_t(size_t, CONVERT_ZERO_GRAIN, len - end);
			if (all_zero(buf + end, run) != zero)
				break;
		}
		if (!zero) {
			ret = vdimg_chain_pwrite(d, buf + pos, end - pos, off + pos);
			if (ret)
				return ret;
		}
		pos = end;
	}
	return 0;
}

/* copy the data ranges of @s in [@start, @end) into the new, all-zero @d, through @buf */
static int convert_range(struct vdimg_chain *s, struct vdimg_chain *d, u8 *buf, u64 start,
			 u64 end)
{
	struct map_entry e;
	u64 off, pos;
	int ret = 0;

	for (off = start; off < end && !ret; off += e.length) {
		ret = map_range(s, off, end - off, &e);
		if (ret || !e.data)
			continue;	/* zeros, or nothing: the new image reads zeros there */
		for (pos = off; pos < off + e.length && !ret; pos += CONVERT_CHUNK) {
			size_t len = min_t(u64, CONVERT_CHUNK, off + e.length - pos);

			ret = vdimg_chain_pread(s, buf, len, pos);
			if (!ret)
				ret = write_sparse(d, buf, len, pos);
		}
	}
	return ret;
}

/* does [@off, @off + @len) of @s hold any data? */
static int range_has_data(struct vdimg_chain *s, u64 off, u64 len, bool *data)
{
	struct map_entry e;
	u64 end = off + len;
	int ret = 0;

	*data = false;
	for (; off < end && !ret && !*data; off += e.length) {
		ret = map_range(s, off, end - off, &e);
		if (!ret)
			*data = e.data;
	}
	return ret;
}

/*
 * --compress: copy [@start, @end) of @s into @d an allocation unit (@unit bytes, which divides
 * CONVERT_CHUNK) at a time: units that read as zeros are left out, the others go through
 * ->write_compressed(), or as plain data when they do not shrink. @buf holds CONVERT_CHUNK bytes;
 * the last unit of the disk is padded with zeros, as qemu does.
 */
static int convert_range_compressed(struct vdimg_chain *s, struct vdimg_chain *d, u8 *buf,
				    u64 start, u64 end)
{
	struct vdimg_image *top = vdimg_chain_top(d);
	int (*wc)(struct vdimg_image *, u64, const void *) =
		vdimg_tool_ops(top->fmt)->write_compressed;
	u32 unit = top->alloc_unit;
	u64 pos, c;
	size_t len;
	bool data;
	int ret = 0;

	for (pos = start; pos < end && !ret; pos += len) {
		len = min_t(u64, CONVERT_CHUNK, end - pos);
		ret = range_has_data(s, pos, len, &data);
		if (ret || !data)
			continue;
		ret = vdimg_chain_pread(s, buf, len, pos);
		if (ret)
			break;
		memset(buf + len, 0, ALIGN(len, (size_t)unit) - len);
		for (c = 0; c < len && !ret; c += unit) {
			size_t n = min_t(size_t, unit, len - c);

			if (all_zero(buf + c, n))
				continue;
			ret = wc(top, pos + c, buf + c);
			if (!ret)	/* it does not shrink: plain data */
				ret = write_sparse(d, buf + c, n, pos + c);
			else if (ret == 1)
				ret = 0;
		}
	}
	return ret;
}

/*
 * The copy is split in stripes that worker threads take in turn: the library's chains take reads
 * and writes from several threads (each backend locks its own tables, writes lock the allocation
 * units they touch), so the copy uses every CPU, as qemu-img convert keeps several requests going.
 */
struct convert_job {
	struct vdimg_chain *s, *d;
	pthread_mutex_t lock;	/* protects the members below */
	u64 next;		/* start of the next stripe nobody has taken */
	u64 done;		/* bytes of the stripes finished */
	int ret;		/* the first error */
	bool progress;
	bool compress;		/* through ->write_compressed() of @d's top */
};

static void *convert_worker(void *arg)
{
	struct convert_job *job = arg;
	u8 *buf = malloc(CONVERT_CHUNK);
	u64 start, end;
	int ret;

	pthread_mutex_lock(&job->lock);
	if (!buf)
		job->ret = job->ret ?: -ENOMEM;
	while (!job->ret && job->next < job->s->size) {
		start = job->next;
		end = min_t(u64, start + CONVERT_STRIPE, job->s->size);
		job->next = end;
		pthread_mutex_unlock(&job->lock);
		if (job->compress)
			ret = convert_range_compressed(job->s, job->d, buf, start, end);
		else
			ret = convert_range(job->s, job->d, buf, start, end);
		pthread_mutex_lock(&job->lock);
		if (ret && !job->ret)
			job->ret = ret;
		job->done += end - start;
		if (job->progress)
			progress_print("converting", job->done, job->s->size);
	}
	pthread_mutex_unlock(&job->lock);
	free(buf);
	return NULL;
}

/* copy every data range of @s into the new, all-zero @d, with up to CONVERT_THREADS threads */
static int convert_copy(struct vdimg_chain *s, struct vdimg_chain *d, bool progress,
			bool compress)
{
	struct convert_job job = { .s = s, .d = d, .progress = progress, .compress = compress };
	pthread_t tid[CONVERT_THREADS];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int i, nr = cpus < 1 ? 1 : (int)min_t(long, cpus, CONVERT_THREADS), started = 0;

	pthread_mutex_init(&job.lock, NULL);
	if (progress)
		progress_print("converting", 0, s->size);
	/* the first worker is this thread; a thread that cannot start leaves its share to the rest */
	for (i = 1; i < nr; i++)
		if (!pthread_create(&tid[started], NULL, convert_worker, &job))
			started++;
	convert_worker(&job);
	for (i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	pthread_mutex_destroy(&job.lock);
	return job.ret;
}

/*
 * create_opts.source_read for a create that writes the data itself (VMDK streamOptimized): in
 * order, so no threads; ranges the map says hold no data are zeros without a read.
 */
static int convert_source_read(void *ctx, void *buf, size_t len, u64 off, bool *zero)
{
	struct vdimg_chain *s = ctx;
	struct map_entry e;
	int ret;

	ret = map_range(s, off, len, &e);
	if (ret)
		return ret;
	if (!e.data && e.length >= len) {
		*zero = true;
		return 0;
	}
	return vdimg_chain_pread(s, buf, len, off);
}

/*
 * Can --compress make a @fmt (@variant) image? qcow2 stores compressed clusters; a VMDK
 * streamOptimized image is compressed anyway (its create writes the grains deflated).
 */
static int convert_compress_ok(const char *dst, u32 id, const struct vdimg_format *fmt,
			       const char *variant)
{
	if (id == VDIMG_FMT_VMDK) {
		if (variant && !strcmp(variant, "streamOptimized"))
			return 0;
		errmsg(dst, "cannot convert",
		       "only streamOptimized VMDK images are compressed (--variant streamOptimized)");
		return -EOPNOTSUPP;
	}
	if (!vdimg_tool_ops(fmt)->write_compressed) {
		errmsg(dst, "cannot convert", "%s images cannot hold compressed data (qcow2 can)",
		       fmt->name);
		return -EOPNOTSUPP;
	}
	return 0;
}

static int convert_usage(void)
{
	printf("Usage: vdimgctl convert [-t FMT] [-O FMT] [--variant V] [-o OPTS] [-c] [-p]\n"
	       "                        SRC DST\n\n"
	       "Copy what SRC reads, through its whole chain, into DST, a new image of format\n"
	       "FMT (default raw). Only data is copied: zeros and unallocated ranges stay\n"
	       "unallocated in DST.\n\n"
	       "Options:\n"
	       " -t, --format FMT           format of SRC (default: probe)\n"
	       " -O, --output-format FMT    format of DST (default: raw)\n"
	       "     --variant V            variant of DST, as for create\n"
	       " -o, --options OPTS         create options of DST, as for create\n"
	       " -c, --compress             store DST's clusters compressed (qcow2; VMDK\n"
	       "                            streamOptimized always is)\n"
	       " -p, --progress             show progress also when stderr is not a terminal\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_convert(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 't' },
		{ "output-format", required_argument, NULL, 'O' },
		{ "variant", required_argument, NULL, 'v' },
		{ "options", required_argument, NULL, 'o' },
		{ "progress", no_argument, NULL, 'p' },
		{ "compress", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	u32 format = VDIMG_FMT_AUTO, out_id = VDIMG_FMT_RAW, *fmts = NULL;
	const char *src, *dst, *options = NULL;
	struct vdimg_create_opts co = {};
	struct vdimg_chain *s = NULL, *d = NULL;
	const struct vdimg_format *fmt;
	char **paths = NULL, *rest = NULL;
	int ch, n = 0, ret, status = EXIT_FAIL;
	bool progress = isatty(STDERR_FILENO), copied = false, compress = false;

	while ((ch = getopt_long(argc, argv, "t:O:o:pch", opts, NULL)) != -1) {
		switch (ch) {
		case 't':
			if (parse_format("convert", optarg, &format))
				return EXIT_FAIL;
			break;
		case 'O':
			if (parse_format("convert", optarg, &out_id))
				return EXIT_FAIL;
			break;
		case 'v':
			co.variant = optarg;
			break;
		case 'o':
			options = optarg;
			break;
		case 'p':
			progress = true;	/* also off a terminal, as the other commands' -p */
			break;
		case 'c':
			compress = true;
			break;
		case 'h':
			return convert_usage();
		default:
			return usage_error("convert", "bad option");
		}
	}
	if (optind != argc - 2)
		return usage_error("convert", "expected SRC and DST");
	src = argv[optind];
	dst = argv[optind + 1];
	fmt = vdimg_format_by_id(out_id);
	if (!fmt || out_id == VDIMG_FMT_AUTO || !vdimg_tool_ops(fmt)->create) {
		errmsg(dst, "cannot convert", "vdimgctl cannot create %s images",
		       fmt ? fmt->name : vdimg_format_name(out_id));
		return EXIT_FAIL;
	}
	if (options && create_parse_options("convert", options, &co, &rest))
		return EXIT_FAIL;
	co.options = rest;
	if (compress && convert_compress_ok(dst, out_id, fmt, co.variant))
		goto out_free;

	if (chain_of(src, format, "cannot convert", &paths, &fmts, &n))
		goto out_free;
	lib_action("cannot convert");
	ret = vdimg_chain_open(&s, (const char *const *)paths, n, fmts, VDIMG_CHAIN_READ_ONLY);
	if (ret) {
		if (!lib_reported)
			errmsg(src, "cannot convert", "%s", strerror(-ret));
		goto out_free;
	}
	co.size = s->size;
	co.source_read = convert_source_read;
	co.source_ctx = s;
	co.source_copied = &copied;
	if (create_file(dst, fmt, &co))
		goto out_src;
	if (copied) {
		status = EXIT_OK;
		goto out_src;
	}
	lib_action("cannot convert");
	/* no syncs while the copy runs (the image is of no use until it is done): one at its end */
	ret = vdimg_chain_open(&d, &dst, 1, &out_id, VDIMG_CHAIN_ALLOW_RAW | VDIMG_CHAIN_UNSAFE);
	if (!ret && compress) {
		u32 unit = vdimg_chain_top(d)->alloc_unit;

		/* qcow2 clusters are 512 B to 2 MiB; the copy works in units of CONVERT_CHUNK */
		if (!unit || !is_power_of_2(unit) || unit > CONVERT_CHUNK)
			ret = -EOPNOTSUPP;
	}
	if (!ret)
		ret = convert_copy(s, d, progress, compress);
	if (!ret)
		ret = vdimg_chain_flush(d);
	if (d) {
		int cret = vdimg_chain_close(d);

		if (!ret)
			ret = cret;
	}
	if (ret) {
		if (!lib_reported)
			errmsg(dst, "cannot convert", "%s", strerror(-ret));
		remove_created(dst);
		goto out_src;
	}
	status = EXIT_OK;
out_src:
	vdimg_chain_close(s);
out_free:
	vdimg_chain_resolve_free(paths, fmts, n);
	free(rest);
	return status;
}
