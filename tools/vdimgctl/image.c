// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl's offline verbs on image files, through libvdimg (the same backends the module runs):
 * info (what an image is), create (a new empty image through the backend's ->create()) and check
 * (the backend's ->check(), optionally repairing). Never talks to the module.
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <getopt.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include "vdimgctl.h"

/* An image file opened through libvdimg for an offline verb. */
struct offline_img {
	struct vdimg_image img;
	int fd;
};

/*
 * Open @path as an image. @format VDIMG_FMT_AUTO probes, and an unrecognised file is raw.
 * Prints "vdimgctl: PATH: <action>: <reason>" on failure.
 */
/* @flags: VDIMG_OPEN_READ_ONLY, VDIMG_OPEN_REPAIR (check --repair) or 0 (compact) */
static int offline_open(struct offline_img *o, const char *path, u32 format, unsigned int flags,
			const char *action)
{
	bool writable = !(flags & VDIMG_OPEN_READ_ONLY);
	struct stat st;
	int ret;

	memset(o, 0, sizeof(*o));
	o->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (o->fd < 0) {
		errmsg(path, action, "%s", strerror(errno));
		return -errno;
	}
	if (fstat(o->fd, &st) || !S_ISREG(st.st_mode)) {
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		errmsg(path, action, "%s", ret == -EISDIR ? strerror(EISDIR) : "not a regular file");
		close(o->fd);
		return ret;
	}
	o->img.file = vdimg_file_from_fd(o->fd);
	o->img.name = path;
	if (!o->img.file) {
		close(o->fd);
		errmsg(path, action, "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	if (format == VDIMG_FMT_AUTO)
		flags |= VDIMG_OPEN_ALLOW_RAW;
	lib_action(action);
	ret = vdimg_image_open(&o->img, format, flags);
	if (ret) {
		if (!lib_reported)
			errmsg(path, action, "%s", strerror(-ret));
		vdimg_file_free(o->img.file);
		close(o->fd);
		return ret;
	}
	return 0;
}

static void offline_close(struct offline_img *o)
{
	vdimg_image_close(&o->img);
	vdimg_file_free(o->img.file);
	close(o->fd);
}

/* -t FMT: a format id, or an error message and -EINVAL */
static int parse_format(const char *cmd, const char *name, u32 *id)
{
	u32 i;

	for (i = 0; i < VDIMG_FMT_COUNT; i++) {
		if (vdimg_format_name(i) && !strcmp(name, vdimg_format_name(i))) {
			*id = i;
			return 0;
		}
	}
	usage_error(cmd, "unknown format '%s'", name);
	return -EINVAL;
}

/* ---- info ---- */

struct kv {
	char *key, *value;
};

struct kv_list {
	struct kv *v;
	size_t n;
};

static void kv_emit(void *ctx, const char *key, const char *value)
{
	struct kv_list *l = ctx;
	struct kv *nv = realloc(l->v, (l->n + 1) * sizeof(*nv));

	if (!nv)
		return;
	l->v = nv;
	l->v[l->n].key = strdup(key ? key : "");
	l->v[l->n].value = strdup(value ? value : "");
	l->n++;
}

static int info_usage(void)
{
	printf("Usage: vdimgctl info [-t FMT] [--json] IMAGE\n\n"
	       "Show the format, geometry and identity of an image file.\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "format", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct kv_list kv = {};
	struct offline_img o;
	u32 format = VDIMG_FMT_AUTO;
	bool json = false;
	struct stat st;
	char h1[32], h2[32], h3[32], ubuf[40];
	const char *path;
	int c;
	size_t i;

	while ((c = getopt_long(argc, argv, "Jt:h", opts, NULL)) != -1) {
		switch (c) {
		case 'J':
			json = true;
			break;
		case 't':
			if (parse_format("info", optarg, &format))
				return EXIT_FAIL;
			break;
		case 'h':
			return info_usage();
		default:
			return usage_error("info", "bad option");
		}
	}
	if (optind != argc - 1)
		return usage_error("info", "expected one IMAGE");
	path = argv[optind];
	if (offline_open(&o, path, format, VDIMG_OPEN_READ_ONLY, "cannot open"))
		return EXIT_FAIL;
	fstat(o.fd, &st);
	if ((o.img.flags & VDIMG_IMG_HAS_PARENT) && o.img.fmt->parent_ref) {
		struct vdimg_parent_ref *ref = calloc(1, sizeof(*ref));

		if (ref && !o.img.fmt->parent_ref(&o.img, ref)) {
			if (ref->path[0])
				kv_emit(&kv, "parent", ref->path);
			if (ref->alt_path[0])
				kv_emit(&kv, "parent (alternative)", ref->alt_path);
			if (ref->format)
				kv_emit(&kv, "parent format", fmt_name(ref->format));
			if (ref->by_uuid)
				kv_emit(&kv, "parent", "found by its UUID");
		}
		free(ref);
	}
	if (o.img.fmt->describe)
		o.img.fmt->describe(&o.img, kv_emit, &kv);

	if (json) {
		printf("{\n  \"filename\": ");
		json_str(stdout, path);
		printf(",\n  \"format\": ");
		json_str(stdout, o.img.fmt->name);
		printf(",\n  \"variant\": ");
		json_str(stdout, o.img.variant);
		printf(",\n  \"virtual-size\": %llu", (unsigned long long)o.img.size);
		printf(",\n  \"file-size\": %llu", (unsigned long long)st.st_size);
		printf(",\n  \"actual-size\": %llu", (unsigned long long)st.st_blocks * 512);
		printf(",\n  \"logical-sector-size\": %u", o.img.lbs);
		printf(",\n  \"physical-sector-size\": %u", o.img.pbs);
		printf(",\n  \"allocation-unit\": %u", o.img.alloc_unit);
		printf(",\n  \"differencing\": %s", o.img.flags & VDIMG_IMG_HAS_PARENT ? "true" : "false");
		if (o.img.flags & VDIMG_IMG_HAS_UUID)
			printf(",\n  \"uuid\": \"%s\"", uuid_str(o.img.uuid, ubuf));
		if (o.img.flags & VDIMG_IMG_HAS_PARENT_UUID)
			printf(",\n  \"parent-uuid\": \"%s\"", uuid_str(o.img.parent_uuid, ubuf));
		printf(",\n  \"format-specific\": {");
		for (i = 0; i < kv.n; i++) {
			printf("%s\n    ", i ? "," : "");
			json_str(stdout, kv.v[i].key);
			printf(": ");
			json_str(stdout, kv.v[i].value);
		}
		printf("%s}\n}\n", kv.n ? "\n  " : "");
	} else {
		printf("image: %s\n", path);
		printf("format: %s\n", o.img.fmt->name);
		if (o.img.variant[0])
			printf("variant: %s\n", o.img.variant);
		printf("virtual size: %s (%llu bytes)\n", human_size(o.img.size, h1, sizeof(h1)),
		       (unsigned long long)o.img.size);
		printf("file size: %s (%llu bytes)\n", human_size(st.st_size, h2, sizeof(h2)),
		       (unsigned long long)st.st_size);
		printf("disk size: %s\n", human_size((unsigned long long)st.st_blocks * 512, h3,
						     sizeof(h3)));
		printf("logical sector size: %u\n", o.img.lbs);
		printf("physical sector size: %u\n", o.img.pbs);
		if (o.img.alloc_unit)
			printf("allocation unit: %u\n", o.img.alloc_unit);
		if (o.img.flags & VDIMG_IMG_HAS_UUID)
			printf("uuid: %s\n", uuid_str(o.img.uuid, ubuf));
		if (o.img.flags & VDIMG_IMG_HAS_PARENT)
			printf("differencing: yes\n");
		if (o.img.flags & VDIMG_IMG_HAS_PARENT_UUID)
			printf("parent uuid: %s\n", uuid_str(o.img.parent_uuid, ubuf));
		for (i = 0; i < kv.n; i++)
			printf("%s: %s\n", kv.v[i].key, kv.v[i].value);
	}
	for (i = 0; i < kv.n; i++) {
		free(kv.v[i].key);
		free(kv.v[i].value);
	}
	free(kv.v);
	offline_close(&o);
	return EXIT_OK;
}

/* ---- create ---- */

static int create_usage(void)
{
	printf("Usage: vdimgctl create -t FMT [--variant V] [--parent FILE] [-o OPTS] -s SIZE FILE\n\n"
	       "Create a new, empty image. SIZE takes K, M, G, T suffixes (powers of 1024); with\n"
	       "--parent it defaults to the parent's size. FILE must not exist.\n"
	       "Generic -o keys: block_size=N (or cluster_size=N), sector_size=N; the others go to\n"
	       "the format.\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

/* Take block_size/cluster_size/sector_size out of -o; the rest stays for the backend. */
static int create_parse_options(const char *in, struct vdimg_create_opts *co, char **rest)
{
	char *s = strdup(in), *save = NULL, *tok, *out = calloc(1, strlen(in) + 1);
	unsigned long long v;
	int ret = 0;

	if (!s || !out) {
		free(s);
		free(out);
		return -ENOMEM;
	}
	for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (eq && (!strncmp(tok, "block_size=", 11) || !strncmp(tok, "cluster_size=", 13) ||
			   !strncmp(tok, "sector_size=", 12))) {
			if (parse_size(eq + 1, &v) || !v || v > (1ULL << 31)) {
				usage_error("create", "bad value in option '%s'", tok);
				ret = -EINVAL;
				break;
			}
			if (tok[0] == 's')
				co->lbs = v;
			else
				co->block_size = v;
			continue;
		}
		if (*out)
			strcat(out, ",");
		strcat(out, tok);
	}
	free(s);
	if (ret || !*out) {
		free(out);
		out = NULL;
	}
	*rest = out;
	return ret;
}

int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 't' },
		{ "size", required_argument, NULL, 's' },
		{ "variant", required_argument, NULL, 'v' },
		{ "parent", required_argument, NULL, 'p' },
		{ "options", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct vdimg_create_opts co = {};
	const struct vdimg_format *fmt;
	struct offline_img parent, check;
	const char *fmtname = NULL, *size_arg = NULL, *options = NULL, *path;
	char *rest = NULL;
	unsigned long long size = 0;
	struct vdimg_file *f;
	bool have_parent = false;
	u32 id;
	int c, fd, ret, status = EXIT_FAIL;

	while ((c = getopt_long(argc, argv, "t:s:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			fmtname = optarg;
			break;
		case 's':
			size_arg = optarg;
			break;
		case 'v':
			co.variant = optarg;
			break;
		case 'p':
			co.parent = optarg;
			break;
		case 'o':
			options = optarg;
			break;
		case 'h':
			return create_usage();
		default:
			return usage_error("create", "bad option");
		}
	}
	if (optind != argc - 1)
		return usage_error("create", "expected one FILE");
	path = argv[optind];
	if (!fmtname)
		return usage_error("create", "a format is required (-t FMT)");
	if (parse_format("create", fmtname, &id))
		return EXIT_FAIL;
	if (size_arg && parse_size(size_arg, &size))
		return usage_error("create", "bad size '%s'", size_arg);
	if (!size_arg && !co.parent)
		return usage_error("create", "a size is required (-s SIZE)");
	if (size_arg && (!size || size % 512)) {
		errmsg(path, "cannot create", "the size must be a positive multiple of 512 bytes");
		return EXIT_FAIL;
	}
	fmt = vdimg_format_by_id(id);
	if (!fmt || id == VDIMG_FMT_AUTO) {
		errmsg(path, "cannot create", "%s images are not supported by this build",
		       fmtname);
		return EXIT_FAIL;
	}
	if (!fmt->create) {
		errmsg(path, "cannot create", "vdimgctl cannot create %s images", fmt->name);
		return EXIT_FAIL;
	}
	if (options && create_parse_options(options, &co, &rest))
		return EXIT_FAIL;
	co.options = rest;
	co.size = size;

	if (co.parent) {
		if (offline_open(&parent, co.parent, VDIMG_FMT_AUTO, VDIMG_OPEN_READ_ONLY, "cannot open parent"))
			goto out_free;
		have_parent = true;
		co.parent_img = &parent.img;
		if (!size_arg)
			co.size = parent.img.size;
	}

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		errmsg(path, "cannot create", "%s", strerror(errno));
		goto out_parent;
	}
	f = vdimg_file_from_fd(fd);
	lib_action("cannot create");
	ret = f ? fmt->create(f, &co) : -ENOMEM;
	if (!ret)
		ret = vdimg_file_sync(f);
	vdimg_file_free(f);
	close(fd);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot create", "%s", ret == -EINVAL ?
			       "invalid parameters for this format" : strerror(-ret));
		unlink(path);
		goto out_parent;
	}
	/* the new image must open as what it claims to be */
	if (offline_open(&check, path, id, VDIMG_OPEN_READ_ONLY, "created image does not open")) {
		unlink(path);
		goto out_parent;
	}
	offline_close(&check);
	status = EXIT_OK;
out_parent:
	if (have_parent)
		offline_close(&parent);
out_free:
	free(rest);
	return status;
}

/* ---- check ---- */

static int check_usage(void)
{
	printf("Usage: vdimgctl check [-t FMT] [--repair] [--json] IMAGE\n\n"
	       "Check the metadata of an image (and with --repair, fix what can be fixed).\n"
	       "Exit status 1 when errors remain.\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repair", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'J' },
		{ "format", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct vdimg_check_result res = {};
	struct offline_img o;
	u32 format = VDIMG_FMT_AUTO;
	bool repair = false, json = false;
	unsigned long long left;
	const char *path;
	int c, ret;

	while ((c = getopt_long(argc, argv, "rJt:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			repair = true;
			break;
		case 'J':
			json = true;
			break;
		case 't':
			if (parse_format("check", optarg, &format))
				return EXIT_FAIL;
			break;
		case 'h':
			return check_usage();
		default:
			return usage_error("check", "bad option");
		}
	}
	if (optind != argc - 1)
		return usage_error("check", "expected one IMAGE");
	path = argv[optind];
	if (offline_open(&o, path, format, repair ? VDIMG_OPEN_REPAIR : VDIMG_OPEN_READ_ONLY, "cannot check"))
		return EXIT_FAIL;
	if (!o.img.fmt->check) {
		errmsg(path, "cannot check", "%s images have no checker", o.img.fmt->name);
		offline_close(&o);
		return EXIT_FAIL;
	}
	lib_action("check");
	ret = o.img.fmt->check(&o.img, repair ? VDIMG_CHECK_REPAIR : 0, &res);
	if (!ret && repair) {
		lib_action("cannot write the repairs");
		if (o.img.fmt->flush)
			ret = o.img.fmt->flush(&o.img);
		if (!ret)
			ret = vdimg_file_sync(o.img.file);
	}
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot check", "%s", strerror(-ret));
		offline_close(&o);
		return EXIT_FAIL;
	}
	left = res.errors > res.fixed ? res.errors - res.fixed : 0;
	if (json) {
		printf("{\n  \"filename\": ");
		json_str(stdout, path);
		printf(",\n  \"format\": ");
		json_str(stdout, o.img.fmt->name);
		printf(",\n  \"check-errors\": %llu,\n  \"leaks\": %llu,\n  \"fixed\": %llu,\n"
		       "  \"corruptions-left\": %llu\n}\n", (unsigned long long)res.errors,
		       (unsigned long long)res.leaks, (unsigned long long)res.fixed, left);
	} else {
		if (!res.errors && !res.leaks)
			printf("No errors were found on the image.\n");
		if (res.errors)
			printf("%llu errors were found on the image.\n",
			       (unsigned long long)res.errors);
		if (res.fixed)
			printf("%llu problems were repaired.\n", (unsigned long long)res.fixed);
		if (res.leaks)
			printf("%llu leaked allocation units were found on the image (wasted space, "
			       "no data lost).\n", (unsigned long long)res.leaks);
	}
	offline_close(&o);
	if (left) {
		errmsg(path, "check failed", "%llu errors left%s", left,
		       repair ? "" : " (try --repair)");
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int compact_usage(void)
{
	printf("Usage: vdimgctl compact [-t FMT] IMAGE\n\n"
	       "Give unused space in an image back (drop all-zero blocks, move the last blocks into\n"
	       "holes, shorten the file). Offline: the image must not be attached.\n\n"
	       "See vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_compact(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	u32 format = VDIMG_FMT_AUTO;
	struct offline_img o;
	struct stat st;
	const char *path;
	u64 before;
	int c, ret;

	while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (parse_format("compact", optarg, &format))
				return EXIT_FAIL;
			break;
		case 'h':
			return compact_usage();
		default:
			return usage_error("compact", "bad option");
		}
	}
	if (optind != argc - 1)
		return usage_error("compact", "expected one IMAGE");
	path = argv[optind];
	if (offline_open(&o, path, format, 0, "cannot compact"))
		return EXIT_FAIL;
	if (!o.img.fmt->compact) {
		errmsg(path, "cannot compact", "%s images cannot be compacted", o.img.fmt->name);
		offline_close(&o);
		return EXIT_FAIL;
	}
	before = fstat(o.fd, &st) ? 0 : (u64)st.st_size;
	lib_action("cannot compact");
	ret = o.img.fmt->compact(&o.img);
	if (!ret && o.img.fmt->flush)
		ret = o.img.fmt->flush(&o.img);
	if (!ret)
		ret = vdimg_file_sync(o.img.file);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot compact", "%s", strerror(-ret));
		offline_close(&o);
		return EXIT_FAIL;
	}
	if (!fstat(o.fd, &st))
		printf("%s: %llu -> %llu bytes\n", path, (unsigned long long)before,
		       (unsigned long long)st.st_size);
	offline_close(&o);
	return EXIT_OK;
}
