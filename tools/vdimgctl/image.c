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
#include <libgen.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "vdimgctl.h"
#include "chain.h"

/* @flags: VDIMG_OPEN_READ_ONLY, VDIMG_OPEN_REPAIR (check --repair) or 0 (compact) */
int offline_open(struct vdimg_path_image *o, const char *path, u32 format, unsigned int flags,
		 const char *action)
{
	char *top = NULL;
	int ret;

	lib_action(action);
	/* a Parallels bundle (its directory or descriptor) stands for its top snapshot's image */
	ret = vdimg_parallels_bundle_top(path, &top);
	if (ret && ret != -ENOENT) {
		if (!lib_reported)
			errmsg(path, action, "the bundle's descriptor is refused: %s", strerror(-ret));
		return ret;
	}
	/*
	 * images on block devices (LVs, LUNs): read, and written (check --repair, resize, rebase)
	 * in the formats that find their end from their metadata
	 */
	ret = vdimg_open_path(o, top ? top : path, format,
			      flags | VDIMG_PATH_REGULAR | VDIMG_PATH_BLOCK_OK);
	if (ret && !lib_reported)
		errmsg(path, action, "%s",
		       o->failed == VDIMG_PATH_DEVICE_RO ?
		       "on a block device, this format is only read; " VDIMG_DEVICE_FORMATS
		       " are written there" :
		       ret == -EINVAL && o->failed == VDIMG_PATH_NOT_REGULAR ?
		       "not a regular file or a block device" : strerror(-ret));
	if (!ret && top)
		o->img.name = path;	/* @top goes; messages name what the user gave */
	free(top);
	return ret;
}

void offline_close(struct vdimg_path_image *o)
{
	vdimg_close_path(o);
}

/* -t FMT: a format id, or an error message and -EINVAL */
int parse_format(const char *cmd, const char *name, u32 *id)
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

static int info_chain(const char *path, u32 format, bool json);

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
	printf("Usage: vdimgctl info [-t FMT] [--json] [--chain] IMAGE\n"
	       "       vdimgctl info [--json] --vbox VM.vbox [--vbox-registry FILE]\n"
	       "       vdimgctl info [--json] --vmx VM.vmx\n\n"
	       "Show the format, geometry and identity of an image file. With --chain, every\n"
	       "layer of its chain, top first, and whether each parent link matches. With\n"
	       "--vbox or --vmx, a VM's hard disks with their chains (and its snapshots).\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "format", required_argument, NULL, 't' },
		{ "chain", no_argument, NULL, 'c' },
		{ "vbox", required_argument, NULL, 'X' },
		{ "vbox-registry", required_argument, NULL, 'R' },
		{ "vmx", required_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *vbox = NULL, *vbox_reg = NULL, *vmx = NULL;
	bool chain = false;
	struct kv_list kv = {};
	struct vdimg_path_image o;
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
		case 'c':
			chain = true;
			break;
		case 'X':
			vbox = optarg;
			break;
		case 'R':
			vbox_reg = optarg;
			break;
		case 'W':
			vmx = optarg;
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
	if (vbox || vmx) {
		if ((vbox && vmx) || optind != argc || chain || format != VDIMG_FMT_AUTO)
			return usage_error("info", "--vbox or --vmx take no IMAGE, --chain or -t");
		return vbox ? info_vbox(vbox, vbox_reg, json) : info_vmx(vmx, json);
	}
	if (vbox_reg)
		return usage_error("info", "--vbox-registry goes with --vbox");
	if (optind != argc - 1)
		return usage_error("info", "expected one IMAGE");
	path = argv[optind];
	/* a folder that is no Parallels bundle: the image chains in it (Hyper-V's layout) */
	if (!stat(path, &st) && S_ISDIR(st.st_mode) && !chain) {
		char *dd;
		bool bundle;

		if (asprintf(&dd, "%s/DiskDescriptor.xml", path) < 0)
			return EXIT_FAIL;
		bundle = !access(dd, F_OK);
		free(dd);
		if (!bundle) {
			int ret = info_folder(path, json);

			if (ret >= 0)
				return ret;
		}
	}
	if (chain)
		return info_chain(path, format, json);
	if (offline_open(&o, path, format, VDIMG_OPEN_READ_ONLY, "cannot open"))
		return EXIT_FAIL;
	fstat(o.fd, &st);
	if ((o.img.flags & VDIMG_IMG_HAS_PARENT) && vdimg_tool_ops(o.img.fmt)->parent_ref) {
		struct vdimg_parent_ref *ref = calloc(1, sizeof(*ref));

		if (ref && !vdimg_tool_ops(o.img.fmt)->parent_ref(&o.img, ref)) {
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
	if (vdimg_tool_ops(o.img.fmt)->describe)
		vdimg_tool_ops(o.img.fmt)->describe(&o.img, kv_emit, &kv);

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
	       "--parent it defaults to the parent's size. FILE must not exist, or be a block\n"
	       "device (not in use) that the image is then written at the start of.\n"
	       "Generic -o keys: block_size=N (or cluster_size=N), sector_size=N; the others go to\n"
	       "the format.\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

void remove_created(const char *path)
{
	struct stat st;

	if (!lstat(path, &st) && !S_ISBLK(st.st_mode))
		unlink(path);
}

/* why an image of @fmt as @co asks cannot be made on a block device, or NULL */
static const char *device_create_refusal(const struct vdimg_format *fmt,
					 const struct vdimg_create_opts *co)
{
	if (!vdimg_format_device_writable(fmt->id))
		return "this format is not written on block devices; " VDIMG_DEVICE_FORMATS " are";
	if (fmt->id == VDIMG_FMT_VMDK && co->variant && strcmp(co->variant, "monolithicSparse"))
		return "a VMDK on a block device is monolithicSparse (the other variants are several files, or written once)";
	if (fmt->id == VDIMG_FMT_VHD && co->variant && strcmp(co->variant, "dynamic"))
		return "a VHD on a block device is dynamic (a fixed one's footer must end the device)";
	if (co->options && strstr(co->options, "data_file"))
		return "an external data file is a file of its own, not on the device";
	if (co->parent && co->parent[0] != '/')
		return "give the parent by an absolute path: a relative one would be found from the device's directory";
	return NULL;
}

/*
 * A new image on block device @path (an LV, a LUN), as oVirt makes qcow2 images on LVs: made in
 * memory (a memfd) by the format's create, then written at the device's start, what the file
 * leaves as holes written as zeros (the device holds old bytes), and the device's last sector
 * zeroed. A raw image is the device: its first co->size bytes are zeroed. The device is opened O_EXCL, so one that is mounted, attached
 * or otherwise held is refused. The device keeps its size; the image ends where its metadata says.
 */
static int create_on_device(const char *path, const struct vdimg_format *fmt,
			    const struct vdimg_create_opts *co)
{
	const char *why = device_create_refusal(fmt, co);
	struct vdimg_file *dev = NULL, *mf = NULL;
	int fd, mfd = -1, ret;
	u64 dsize, len, off, data, hole;
	char *buf = NULL;

	if (why) {
		errmsg(path, "cannot create", "%s", why);
		return -EINVAL;
	}
	fd = open(path, O_RDWR | O_EXCL | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		errmsg(path, "cannot create", "%s", ret == -EBUSY ?
		       "the block device is in use (mounted, attached or held by another user)" :
		       strerror(-ret));
		return ret;
	}
	dev = vdimg_file_from_fd(fd);
	if (!dev) {
		ret = -ENOMEM;
		goto out;
	}
	dsize = vdimg_file_size(dev);
	lib_action("cannot create");
	/*
	 * The device's last sector, unless the image reaches it: a VHD footer an earlier image
	 * left there would make every later probe see a fixed VHD too
	 */
	if (dsize >= 512) {
		ret = vdimg_file_zero_range(dev, dsize - 512, 512);
		if (ret)
			goto out;
	}
	if (fmt->id == VDIMG_FMT_RAW) {
		len = co->size;
		ret = len > dsize ? -ENOSPC : vdimg_file_zero_range(dev, 0, len);
		goto check;
	}
	mfd = memfd_create("vdimg-create", MFD_CLOEXEC);
	mf = mfd < 0 ? NULL : vdimg_file_from_fd(mfd);
	buf = malloc(1 << 20);
	if (!mf || !buf) {
		ret = mfd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	ret = vdimg_tool_ops(fmt)->create(mf, co);
	if (ret)
		goto out;
	len = vdimg_file_size(mf);
	if (len > dsize) {
		ret = -ENOSPC;
		goto check;
	}
	for (off = 0; !ret && off < len; off = hole) {
		off_t d = lseek(mfd, off, SEEK_DATA), h;

		data = d < 0 ? len : (u64)d;
		if (data > off)
			ret = vdimg_file_zero_range(dev, off, data - off);
		h = data < len ? lseek(mfd, data, SEEK_HOLE) : (off_t)len;
		hole = h < 0 ? len : (u64)h;
		for (off = data; !ret && off < hole; off += d) {
			d = min_t(u64, hole - off, 1 << 20);
			if (pread(mfd, buf, d, off) != d)
				ret = -EIO;
			else
				ret = vdimg_file_write(dev, buf, d, off);
		}
	}
check:
	if (ret == -ENOSPC) {
		errmsg(path, "cannot create", "the image needs %llu bytes, more than the device's %llu",
		       (unsigned long long)len, (unsigned long long)dsize);
		lib_reported = true;
	}
	if (!ret)
		ret = vdimg_file_sync(dev);
out:
	if (ret && !lib_reported)
		errmsg(path, "cannot create", "%s", ret == -EINVAL ?
		       "invalid parameters for this format" : strerror(-ret));
	free(buf);
	vdimg_file_free(mf);
	if (mfd >= 0)
		close(mfd);
	vdimg_file_free(dev);
	close(fd);
	return ret;
}

int create_file(const char *path, const struct vdimg_format *fmt, const struct vdimg_create_opts *co)
{
	struct vdimg_file *f;
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST && !stat(path, &st) && S_ISBLK(st.st_mode))
		return create_on_device(path, fmt, co);
	if (fd < 0) {
		ret = -errno;
		errmsg(path, "cannot create", "%s", strerror(errno));
		return ret;
	}
	f = vdimg_file_from_fd(fd);
	lib_action("cannot create");
	ret = f ? vdimg_tool_ops(fmt)->create(f, co) : -ENOMEM;
	if (!ret)
		ret = vdimg_file_sync(f);
	vdimg_file_free(f);
	close(fd);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot create", "%s", ret == -EINVAL ?
			       "invalid parameters for this format" : strerror(-ret));
		unlink(path);
	}
	return ret;
}

int create_parse_options(const char *cmd, const char *in, struct vdimg_create_opts *co,
			 char **rest)
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
				usage_error(cmd, "bad value in option '%s'", tok);
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
	struct vdimg_path_image parent, check;
	const char *fmtname = NULL, *size_arg = NULL, *options = NULL, *path;
	char *rest = NULL;
	unsigned long long size = 0;
	bool have_parent = false;
	u32 id;
	int c, status = EXIT_FAIL;

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
	if (!vdimg_tool_ops(fmt)->create) {
		errmsg(path, "cannot create", "vdimgctl cannot create %s images", fmt->name);
		return EXIT_FAIL;
	}
	if (options && create_parse_options("create", options, &co, &rest))
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
		if ((fmt->caps & VDIMG_CAP_SAME_SIZE_PARENT) && co.size != parent.img.size) {
			errmsg(path, "cannot create", "a %s child must have its parent's size (%llu bytes); leave out -s",
			       fmt->name, (unsigned long long)parent.img.size);
			goto out_parent;
		}
	}

	if (create_file(path, fmt, &co))
		goto out_parent;
	/* the new image must open as what it claims to be */
	if (offline_open(&check, path, id, VDIMG_OPEN_READ_ONLY, "created image does not open")) {
		remove_created(path);
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

/* ---- progress ---- */

/* the percentage on the progress line being written, -1 when no line is open */
static int progress_last = -1;

void progress_print(const char *what, u64 done, u64 total)
{
	int pct = total ? (int)(done * 100 / total) : 100;

	if (pct == progress_last)
		return;
	progress_last = pct;
	fprintf(stderr, "\r    (%d.00/100%%) %s", pct, what);
	if (done >= total) {
		fputc('\n', stderr);
		progress_last = -1;
	}
}

/* -p: progress even when stderr is not a terminal (as qemu-img -p) */
static bool progress_forced;

static void progress_setup(void)
{
	vdimg_chain_progress = progress_forced || isatty(STDERR_FILENO) ? progress_print : NULL;
}

/*
 * check and compact: the backend reports the steps in between (vdimg_tool_progress()); the start
 * and, when it worked, the end are shown here. A failure ends the line so the message stands alone.
 */
static void progress_begin(const char *what)
{
	progress_setup();
	if (vdimg_chain_progress)
		vdimg_chain_progress(what, 0, 1);
}

static void progress_end(const char *what, bool ok)
{
	if (!vdimg_chain_progress)
		return;
	if (ok) {
		vdimg_chain_progress(what, 1, 1);
	} else if (progress_last >= 0) {
		fputc('\n', stderr);
		progress_last = -1;
	}
}

/* ---- check ---- */

static int check_usage(void)
{
	printf("Usage: vdimgctl check [-t FMT] [--repair] [--json] [-p] IMAGE\n\n"
	       "Check the metadata of an image (and with --repair, fix what can be fixed).\n"
	       "Exit status 1 when errors remain. Progress shows on stderr when it is a\n"
	       "terminal, or always with -p (--progress).\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repair", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'J' },
		{ "format", required_argument, NULL, 't' },
		{ "progress", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct vdimg_check_result res = {};
	struct vdimg_path_image o;
	u32 format = VDIMG_FMT_AUTO;
	bool repair = false, json = false;
	unsigned long long left;
	const char *path;
	int c, ret;

	while ((c = getopt_long(argc, argv, "rJt:ph", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			progress_forced = true;
			break;
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
	if (!vdimg_tool_ops(o.img.fmt)->check) {
		errmsg(path, "cannot check", "%s images have no checker", o.img.fmt->name);
		offline_close(&o);
		return EXIT_FAIL;
	}
	lib_action("check");
	progress_begin("check");
	ret = vdimg_tool_ops(o.img.fmt)->check(&o.img, repair ? VDIMG_CHECK_REPAIR : 0, &res);
	if (!ret && repair) {
		lib_action("cannot write the repairs");
		if (o.img.fmt->flush)
			ret = o.img.fmt->flush(&o.img);
		if (!ret)
			ret = vdimg_file_sync(o.img.file);
	}
	progress_end("check", !ret);
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
		printf(",\n  \"check-errors\": %llu,\n  \"leaks\": %llu,\n  \"warnings\": %llu,\n"
		       "  \"fixed\": %llu,\n  \"corruptions-left\": %llu\n}\n",
		       (unsigned long long)res.errors, (unsigned long long)res.leaks,
		       (unsigned long long)res.warnings, (unsigned long long)res.fixed, left);
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
		if (res.warnings)
			printf("%llu inconsistencies an unclean shutdown leaves were found (no data "
			       "lost%s).\n", (unsigned long long)res.warnings,
			       repair ? "" : "; other tools may refuse the image until --repair");
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
	printf("Usage: vdimgctl compact [-t FMT] [-p] IMAGE\n\n"
	       "Give unused space in an image back (drop all-zero blocks, move the last blocks into\n"
	       "holes, shorten the file). Offline: the image must not be attached. Progress shows\n"
	       "on stderr when it is a terminal, or always with -p (--progress).\n\n"
	       "See vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_compact(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 't' },
		{ "progress", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	u32 format = VDIMG_FMT_AUTO;
	struct vdimg_path_image o;
	struct stat st;
	const char *path;
	u64 before;
	int c, ret;

	while ((c = getopt_long(argc, argv, "t:ph", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			progress_forced = true;
			break;
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
	/* compact gives space back by cutting the file; a device keeps its size whatever it holds */
	if (!stat(path, &st) && S_ISBLK(st.st_mode)) {
		errmsg(path, "cannot compact",
		       "a block device keeps its size, so compacting gives nothing back (convert the image into a smaller device instead)");
		return EXIT_FAIL;
	}
	if (offline_open(&o, path, format, 0, "cannot compact"))
		return EXIT_FAIL;
	if (!vdimg_tool_ops(o.img.fmt)->compact) {
		errmsg(path, "cannot compact", "%s images cannot be compacted", o.img.fmt->name);
		offline_close(&o);
		return EXIT_FAIL;
	}
	before = fstat(o.fd, &st) ? 0 : (u64)st.st_size;
	lib_action("cannot compact");
	progress_begin("compact");
	ret = vdimg_tool_ops(o.img.fmt)->compact(&o.img);
	if (!ret && o.img.fmt->flush)
		ret = o.img.fmt->flush(&o.img);
	if (!ret)
		ret = vdimg_file_sync(o.img.file);
	progress_end("compact", !ret);
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

/* ---- chains: info --chain, commit, rebase ---- */


/* While set, library messages are collected here instead of printed (link checks). */
static char captured[1024];

static void capture_hook(int level, const char *name, const char *text)
{
	if (level <= VDIMG_LOG_ERR && !captured[0])
		snprintf(captured, sizeof(captured), "%s", text);
}

/* Ask @child whether @parent is its parent: 1 ok, 0 mismatch (message in captured[]), -1 no check. */
static int link_check(struct vdimg_image *child, struct vdimg_image *parent)
{
	int ret;

	if (!child->fmt->verify_parent)
		return -1;
	captured[0] = 0;
	vdimg_set_msg_hook(capture_hook);
	ret = child->fmt->verify_parent(child, parent);
	lib_msg_init();
	if (ret && !captured[0])
		snprintf(captured, sizeof(captured), "%s", strerror(-ret));
	return !ret;
}


/* Resolve @path's chain, base first; 0 or -errno after a message ("<path>: <action>: ..."). */
int chain_of(const char *path, u32 format, const char *action, char ***paths, u32 **fmts,
		    int *n)
{
	struct stat st;
	int ret;

	if (stat(path, &st)) {
		ret = -errno;
		errmsg(path, action, "%s", strerror(-ret));
		return ret;
	}
	lib_action(action);
	ret = vdimg_chain_resolve(path, format, paths, fmts, n);
	if (ret && !lib_reported)
		errmsg(path, action, "%s", strerror(-ret));
	return ret;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* @target relative to the directory of @from (both made absolute); NULL on failure. */
static char *path_relative(const char *target, const char *from)
{
	char *t = realpath(target, NULL), *f = realpath(from, NULL), *dir, *out = NULL;
	size_t i, common = 0, up = 0, dl;

	if (!t || !f)
		goto done;
	dir = dirname(f);
	dl = strlen(dir);
	if (dl == 1) {
		out = strdup(t + 1);
		goto done;
	}
	for (i = 0; t[i] && dir[i] && t[i] == dir[i]; i++)
		if (t[i] == '/')
			common = i + 1;
	if (!dir[i] && t[i] == '/')
		common = i + 1;
	else if (dir[common])
		up = 1;
	for (i = common; dir[i]; i++)
		if (dir[i] == '/' && dir[i + 1])
			up++;
	out = malloc(3 * up + strlen(t + common) + 1);
	if (out) {
		char *o = out;

		while (up--) {
			memcpy(o, "../", 3);
			o += 3;
		}
		strcpy(o, t + common);
	}
done:
	free(t);
	free(f);
	return out;
}

static int info_chain(const char *path, u32 format, bool json)
{
	struct vdimg_path_image *o;
	char **paths = NULL, ubuf[40], h1[32], h2[32];
	u32 *fmts = NULL;
	int n = 0, i, opened = 0, status = EXIT_FAIL;

	if (chain_of(path, format, "cannot open", &paths, &fmts, &n))
		return EXIT_FAIL;
	o = calloc(n, sizeof(*o));
	if (!o)
		goto out;
	for (opened = 0; opened < n; opened++)
		if (offline_open(&o[opened], paths[opened], fmts[opened], VDIMG_OPEN_READ_ONLY |
				 (opened < n - 1 ? VDIMG_OPEN_HAS_CHILD : 0), "cannot open"))
			goto out;
	if (json)
		printf("{\n  \"filename\": "), json_str(stdout, path),
		printf(",\n  \"order\": \"top-first\",\n  \"depth\": %d,\n  \"chain\": [", n);
	else
		printf("chain: %s, %d layer%s, top first\n", path, n, n == 1 ? "" : "s");
	for (i = n - 1; i >= 0; i--) {
		struct vdimg_image *img = &o[i].img;
		struct vdimg_parent_ref *ref = NULL;
		struct stat st;
		const char *link;
		int lc = 0;

		fstat(o[i].fd, &st);
		if (img->flags & VDIMG_IMG_HAS_PARENT && vdimg_tool_ops(img->fmt)->parent_ref) {
			ref = calloc(1, sizeof(*ref));
			if (ref && vdimg_tool_ops(img->fmt)->parent_ref(img, ref)) {
				free(ref);
				ref = NULL;
			}
		}
		if (i == 0) {
			link = img->flags & VDIMG_IMG_HAS_PARENT ? "missing" : "none";
		} else {
			lc = link_check(img, &o[i - 1].img);
			link = lc > 0 ? "ok" : lc == 0 ? "mismatch" : "unchecked";
		}
		if (json) {
			printf("%s\n    {\n      \"filename\": ", i == n - 1 ? "" : ",");
			json_str(stdout, paths[i]);
			printf(",\n      \"format\": ");
			json_str(stdout, img->fmt->name);
			printf(",\n      \"variant\": ");
			json_str(stdout, img->variant);
			printf(",\n      \"virtual-size\": %llu,\n      \"file-size\": %llu",
			       (unsigned long long)img->size, (unsigned long long)st.st_size);
			if (img->flags & VDIMG_IMG_HAS_UUID)
				printf(",\n      \"uuid\": \"%s\"", uuid_str(img->uuid, ubuf));
			if (img->flags & VDIMG_IMG_HAS_PARENT_UUID)
				printf(",\n      \"parent-uuid\": \"%s\"",
				       uuid_str(img->parent_uuid, ubuf));
			if (ref && ref->path[0]) {
				printf(",\n      \"backing-filename\": ");
				json_str(stdout, ref->path);
			}
			printf(",\n      \"link\": \"%s\"", link);
			if (lc == 0 && i > 0) {
				printf(",\n      \"link-message\": ");
				json_str(stdout, captured);
			}
			printf("\n    }");
		} else {
			printf("\n[%d] %s%s\n", n - 1 - i, paths[i],
			       i == n - 1 ? " (top)" : i == 0 ? " (base)" : "");
			printf("    format: %s\n", img->fmt->name);
			if (img->variant[0])
				printf("    variant: %s\n", img->variant);
			printf("    virtual size: %s (%llu bytes)\n",
			       human_size(img->size, h1, sizeof(h1)), (unsigned long long)img->size);
			printf("    file size: %s (%llu bytes)\n",
			       human_size(st.st_size, h2, sizeof(h2)), (unsigned long long)st.st_size);
			if (img->flags & VDIMG_IMG_HAS_UUID)
				printf("    uuid: %s\n", uuid_str(img->uuid, ubuf));
			if (img->flags & VDIMG_IMG_HAS_PARENT_UUID)
				printf("    parent uuid: %s\n", uuid_str(img->parent_uuid, ubuf));
			if (ref && ref->path[0])
				printf("    parent: %s\n", ref->path);
			if (i > 0 && lc == 0)
				printf("    link: mismatch: %s\n", captured);
			else if (i > 0 && lc < 0)
				printf("    link: unchecked (%s images record no parent identity)\n",
				       img->fmt->name);
			else
				printf("    link: %s\n", link);
		}
		free(ref);
	}
	if (json)
		printf("\n  ]\n}\n");
	status = EXIT_OK;
out:
	while (opened-- > 0)
		offline_close(&o[opened]);
	free(o);
	vdimg_chain_resolve_free(paths, fmts, n);
	return status;
}

/*
 * After a commit into @base_path, make sure its direct child @child_path still links to it (a
 * VHDX parent linkage names the parent's data write GUID, which the commit renewed).
 */
static int relink_child(const char *child_path, u32 child_fmt, const char *base_path,
			u32 base_fmt)
{
	struct vdimg_path_image child, base;
	struct vdimg_parent_ref *ref;
	int ret = 0;

	if (offline_open(&base, base_path, base_fmt, VDIMG_OPEN_READ_ONLY, "cannot relink"))
		return -EIO;
	if (offline_open(&child, child_path, child_fmt, 0, "cannot relink")) {
		offline_close(&base);
		return -EIO;
	}
	ref = calloc(1, sizeof(*ref));
	if (link_check(&child.img, &base.img) == 0 && vdimg_tool_ops(child.img.fmt)->set_parent && ref) {
		char *rel = path_relative(base_path, child_path);

		if (vdimg_tool_ops(child.img.fmt)->parent_ref && !vdimg_tool_ops(child.img.fmt)->parent_ref(&child.img, ref) &&
		    ref->path[0])
			; /* keep the path the child records */
		else if (rel)
			snprintf(ref->path, sizeof(ref->path), "%s", rel);
		lib_action("cannot relink");
		ret = vdimg_tool_ops(child.img.fmt)->set_parent(&child.img, ref->path, &base.img);
		if (!ret && child.img.fmt->flush)
			ret = child.img.fmt->flush(&child.img);
		if (!ret)
			ret = vdimg_file_sync(child.img.file);
		if (ret && !lib_reported)
			errmsg(child_path, "cannot relink", "%s", strerror(-ret));
		free(rel);
	}
	free(ref);
	offline_close(&child);
	offline_close(&base);
	return ret;
}

static int commit_usage(void)
{
	printf("Usage: vdimgctl commit [-p] [-b BASE] [-d|--drop] IMAGE\n\n"
	       "Merge IMAGE (and the layers between it and BASE) into BASE, offline. BASE is\n"
	       "IMAGE's parent unless -b names a lower layer of IMAGE's chain. Without -d, IMAGE\n"
	       "stays and still reads the same; with -d, IMAGE and the layers between are deleted.\n"
	       "Progress shows on stderr when it is a terminal, or always with -p (--progress).\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_commit(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "base", required_argument, NULL, 'b' },
		{ "drop", no_argument, NULL, 'd' },
		{ "format", required_argument, NULL, 't' },
		{ "progress", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *base_arg = NULL, *path;
	u32 format = VDIMG_FMT_AUTO, *fmts = NULL;
	struct vdimg_chain *c = NULL;
	char **paths = NULL;
	bool drop = false;
	int ch, n = 0, base, i, ret, status = EXIT_FAIL;

	while ((ch = getopt_long(argc, argv, "b:dpt:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			progress_forced = true;
			break;
		case 'b':
			base_arg = optarg;
			break;
		case 'd':
			drop = true;
			break;
		case 't':
			if (parse_format("commit", optarg, &format))
				return EXIT_FAIL;
			break;
		case 'h':
			return commit_usage();
		default:
			return usage_error("commit", "bad option");
		}
	}
	if (optind != argc - 1)
		return usage_error("commit", "expected one IMAGE");
	path = argv[optind];
	if (chain_of(path, format, "cannot commit", &paths, &fmts, &n))
		return EXIT_FAIL;
	if (n < 2) {
		errmsg(path, "cannot commit", "it has no parent to commit into");
		goto out;
	}
	base = n - 2;
	if (base_arg) {
		for (base = n - 2; base >= 0 && !same_file(paths[base], base_arg); base--)
			;
		if (base < 0) {
			errmsg(path, "cannot commit", "%s is not below it in its chain", base_arg);
			goto out;
		}
	}
	/* -d unlinks the layers committed: never the node of a device that holds one */
	for (i = n - 1; drop && i > base; i--) {
		struct stat st;

		if (!stat(paths[i], &st) && S_ISBLK(st.st_mode)) {
			errmsg(path, "cannot commit",
			       "%s is a block device, which -d would not delete: commit without -d",
			       paths[i]);
			goto out;
		}
	}
	progress_setup();
	lib_action("cannot commit");
	ret = vdimg_chain_open_at(&c, (const char *const *)paths, n, fmts, 0, base);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot commit", "%s", strerror(-ret));
		goto out;
	}
	ret = vdimg_chain_commit(c, base, 0);
	if (!ret)
		ret = vdimg_chain_close(c);
	else
		vdimg_chain_close(c);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot commit", "%s", strerror(-ret));
		goto out;
	}
	if (drop) {
		for (i = n - 1; i > base; i--)
			if (unlink(paths[i]))
				errmsg(paths[i], "cannot delete", "%s", strerror(errno));
	} else if (relink_child(paths[base + 1], fmts[base + 1], paths[base], fmts[base])) {
		goto out;
	}
	printf("Image committed.\n");
	status = EXIT_OK;
out:
	vdimg_chain_resolve_free(paths, fmts, n);
	return status;
}

static int rebase_usage(void)
{
	printf("Usage: vdimgctl rebase [-p] [-u] -b NEWPARENT IMAGE\n\n"
	       "Make NEWPARENT the parent of the differencing image IMAGE, offline. Safe mode (the\n"
	       "default) first copies into IMAGE every range it does not hold that the old and\n"
	       "the new parents read differently, so IMAGE reads the same afterwards; -u only\n"
	       "changes the link. A relative NEWPARENT is recorded relative to IMAGE's directory.\n"
	       "Progress shows on stderr when it is a terminal, or always with -p (--progress).\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_rebase(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "unsafe", no_argument, NULL, 'u' },
		{ "backing", required_argument, NULL, 'b' },
		{ "format", required_argument, NULL, 't' },
		{ "progress", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *newp_arg = NULL, *path;
	u32 format = VDIMG_FMT_AUTO, *fmts = NULL, *nfmts = NULL;
	struct vdimg_chain *c = NULL, *np = NULL;
	char **paths = NULL, **npaths = NULL, *rec = NULL;
	bool unsafe = false;
	int ch, n = 0, nn = 0, i, ret, status = EXIT_FAIL;

	while ((ch = getopt_long(argc, argv, "ub:pt:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			progress_forced = true;
			break;
		case 'u':
			unsafe = true;
			break;
		case 'b':
			newp_arg = optarg;
			break;
		case 't':
			if (parse_format("rebase", optarg, &format))
				return EXIT_FAIL;
			break;
		case 'h':
			return rebase_usage();
		default:
			return usage_error("rebase", "bad option");
		}
	}
	if (optind != argc - 1)
		return usage_error("rebase", "expected one IMAGE");
	if (!newp_arg)
		return usage_error("rebase", "the new parent is required (-b NEWPARENT)");
	path = argv[optind];
	progress_setup();
	/* the new parent's chain must not contain IMAGE */
	if (*newp_arg) {
		if (chain_of(newp_arg, VDIMG_FMT_AUTO, "cannot rebase", &npaths, &nfmts, &nn))
			goto out;
		for (i = 0; i < nn; i++) {
			if (same_file(npaths[i], path)) {
				errmsg(path, "cannot rebase", "the chain loops back to %s through %s",
				       path, newp_arg);
				goto out;
			}
		}
		lib_action("cannot rebase");
		ret = vdimg_chain_open(&np, (const char *const *)npaths, nn, nfmts,
				       VDIMG_CHAIN_READ_ONLY);
		if (ret) {
			if (!lib_reported)
				errmsg(newp_arg, "cannot rebase", "%s", strerror(-ret));
			goto out;
		}
		rec = newp_arg[0] == '/' ? strdup(newp_arg) : path_relative(newp_arg, path);
		if (!rec) {
			errmsg(newp_arg, "cannot rebase", "%s", strerror(errno ? errno : ENOMEM));
			goto out;
		}
	}
	if (unsafe) {
		/* the old parents need not exist: open IMAGE alone */
		lib_action("cannot rebase");
		ret = vdimg_chain_open(&c, &path, 1, format == VDIMG_FMT_AUTO ? NULL : &format,
				       VDIMG_CHAIN_ORPHAN_OK);
	} else {
		if (chain_of(path, format, "cannot rebase", &paths, &fmts, &n))
			goto out;
		lib_action("cannot rebase");
		ret = vdimg_chain_open(&c, (const char *const *)paths, n, fmts, 0);
	}
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot rebase", "%s", strerror(-ret));
		goto out;
	}
	lib_action("cannot rebase");
	ret = vdimg_chain_rebase(c, np, rec ? rec : "", unsafe ? VDIMG_REBASE_UNSAFE : 0);
	if (!ret)
		ret = vdimg_chain_close(c);
	else
		vdimg_chain_close(c);
	c = NULL;
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot rebase", "%s", strerror(-ret));
		goto out;
	}
	status = EXIT_OK;
out:
	vdimg_chain_close(np);
	free(rec);
	vdimg_chain_resolve_free(paths, fmts, n);
	vdimg_chain_resolve_free(npaths, nfmts, nn);
	return status;
}
