// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl snapshot: freeze the current contents of an attached, writable device while it stays in
 * use. The tool creates a new, empty differencing image whose parent is the device's top layer (as
 * libvdimg creates any child, from the parent opened read-only here) and hands it to the kernel
 * (VDIMG_CTL_SNAPSHOT), which pushes it on top of the live chain: from then on the old top is
 * read-only and writes go to the new file. Only this file knows the snapshot verb.
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <ctype.h>
#include <getopt.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include "vdimgctl.h"

static int snapshot_usage(void)
{
	printf("Usage: vdimgctl snapshot [-t FMT] [-o OPTS] [--force] DEV FILE\n\n"
	       "Take a live snapshot of an attached device: create FILE (which must not exist) as a\n"
	       "differencing image over the device's current top layer and make it the new top. The\n"
	       "old top keeps the device's contents as they were and becomes read-only.\n\n"
	       " -t, --format FMT     format of FILE: vhd, vhdx, vdi, qcow2 or qed (default: the top's\n"
	       "                      format when it can have a parent, else qcow2)\n"
	       " -o, --options OPTS   creation options as for create (block_size=N, ...)\n"
	       "     --force          do not let the kernel check FILE's parent link\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

/* "/dev/vdimg3", "vdimg3" or "3" -> 3; -1 if it is none of these */
static long snapshot_parse_dev(const char *s)
{
	const char *d = dev_dir();
	size_t dl = strlen(d);
	char *end;
	long v;

	if (!strncmp(s, d, dl) && s[dl] == '/')
		s += dl + 1;
	else if (!strncmp(s, "/dev/", 5))
		s += 5;
	if (!strncmp(s, "vdimg", 5))
		s += 5;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v >= (long)VDIMG_INDEX_ANY)
		return -1;
	return v;
}

/* /sys/block/vdimgN/vdimg/@attr without the trailing newline, or NULL (errno set) */
static char *snapshot_sysfs(long idx, const char *attr)
{
	char path[512], *buf;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/vdimg%ld/vdimg/%s", sysfs_block_path(), idx, attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = malloc(8192);
	if (!buf) {
		close(fd);
		return NULL;
	}
	n = read(fd, buf, 8191);
	close(fd);
	if (n <= 0) {
		free(buf);
		errno = n ? errno : ENODATA;
		return NULL;
	}
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = 0;
	return buf;
}

static const char *snapshot_reason(int err)
{
	switch (err) {
	case EPERM:
	case EACCES:
		return "permission denied (snapshots need CAP_SYS_ADMIN)";
	case ENXIO:
		return "no such device attached";
	case EROFS:
		return "the device is read-only";
	case E2BIG:
		return "the device's chain is already as deep as the module allows";
	case ESTALE:
		return "the new image is not a child of the device's top layer (--force to ignore)";
	case ELOOP:
		return "the new image is already part of the device's chain";
	case EINVAL:
		return "the new image does not fit the device (differencing image of the device's size and sector size needed; see dmesg)";
	case EBADF:
		return "the new image must be open for reading and writing";
	case EOPNOTSUPP:
		return "the new image's format is not supported by the vdimg module (see dmesg)";
	case ENOTTY:
		return "the vdimg module does not support live snapshots (version mismatch?)";
	default:
		return strerror(err);
	}
}

static bool snapshot_can_parent(u32 id)
{
	return id == VDIMG_FMT_VHD || id == VDIMG_FMT_VHDX || id == VDIMG_FMT_VDI ||
	       id == VDIMG_FMT_QCOW2 || id == VDIMG_FMT_QED;
}

/* -o: block_size/cluster_size/sector_size go into @co, the rest to the backend in *@rest. */
static int snapshot_options(const char *in, struct vdimg_create_opts *co, char **rest)
{
	char *s = strdup(in), *save = NULL, *tok, *out = calloc(1, strlen(in) + 1);
	unsigned long long v;
	int ret = 0;

	*rest = NULL;
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
				usage_error("snapshot", "bad value in option '%s'", tok);
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

/* The parent, opened read-only through libvdimg from its path. */
struct snap_parent {
	struct vdimg_image img;
	int fd;
};

static int snapshot_open_parent(struct snap_parent *p, const char *dev, const char *path,
				u32 format)
{
	int ret;

	memset(p, 0, sizeof(*p));
	p->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (p->fd < 0) {
		errmsg(dev, "cannot snapshot", "cannot open the top layer %s: %s", path,
		       strerror(errno));
		return -errno;
	}
	p->img.file = vdimg_file_from_fd(p->fd);
	p->img.name = path;
	if (!p->img.file) {
		close(p->fd);
		errmsg(dev, "cannot snapshot", "%s", strerror(ENOMEM));
		return -ENOMEM;
	}
	lib_action("cannot snapshot");
	ret = vdimg_image_open(&p->img, format, VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_HAS_CHILD |
			       (format == VDIMG_FMT_RAW ? VDIMG_OPEN_ALLOW_RAW : 0));
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot snapshot", "cannot read the top layer: %s",
			       strerror(-ret));
		vdimg_file_free(p->img.file);
		close(p->fd);
		return ret;
	}
	return 0;
}

static void snapshot_close_parent(struct snap_parent *p)
{
	vdimg_image_close(&p->img);
	vdimg_file_free(p->img.file);
	close(p->fd);
}

/* Create @path as a child of @parent_path. 0, or -errno after a message. */
static int snapshot_create(const char *dev, const char *path, const struct vdimg_format *fmt,
			   const char *parent_path, u32 parent_fmt, struct vdimg_create_opts *co)
{
	struct snap_parent parent;
	struct vdimg_file *f;
	int fd, ret;

	ret = snapshot_open_parent(&parent, dev, parent_path, parent_fmt);
	if (ret)
		return ret;
	co->parent = parent_path;
	co->parent_img = &parent.img;
	co->size = parent.img.size;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		errmsg(path, "cannot create", "%s", strerror(errno));
		goto out;
	}
	f = vdimg_file_from_fd(fd);
	lib_action("cannot create");
	ret = f ? fmt->create(f, co) : -ENOMEM;
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
out:
	co->parent_img = NULL;
	snapshot_close_parent(&parent);
	return ret;
}

int cmd_snapshot(int argc, char **argv)
{
	enum { OPT_FORCE = 256 };
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 't' },
		{ "options", required_argument, NULL, 'o' },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *fmtname = NULL, *options = NULL, *devarg, *path;
	char *rest = NULL, *top_path = NULL, *top_fmt = NULL, devnode[512];
	const struct vdimg_format *fmt, *pfmt;
	struct vdimg_create_opts co;
	struct vdimg_snapshot s;
	bool force = false;
	int c, ctl = -1, fd, attempt, ret, err = 0, status = EXIT_FAIL;
	long idx;
	u32 id = VDIMG_FMT_AUTO;

	while ((c = getopt_long(argc, argv, "t:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			fmtname = optarg;
			break;
		case 'o':
			options = optarg;
			break;
		case OPT_FORCE:
			force = true;
			break;
		case 'h':
			return snapshot_usage();
		default:
			return usage_error("snapshot", "bad option");
		}
	}
	if (optind != argc - 2)
		return usage_error("snapshot", "expected DEV and FILE");
	devarg = argv[optind];
	path = argv[optind + 1];
	idx = snapshot_parse_dev(devarg);
	if (idx < 0)
		return usage_error("snapshot", "'%s' is not a vdimg device", devarg);
	if (fmtname) {
		fmt = vdimg_format_by_name(fmtname);
		if (!fmt)
			return usage_error("snapshot", "unknown format '%s'", fmtname);
		if (!snapshot_can_parent(fmt->id)) {
			errmsg(path, "cannot create", "%s images cannot have a parent", fmt->name);
			return EXIT_FAIL;
		}
		id = fmt->id;
	}
	if (access(path, F_OK) == 0) {
		errmsg(path, "cannot create", "%s", strerror(EEXIST));
		return EXIT_FAIL;
	}

	top_path = snapshot_sysfs(idx, "backing_file");
	top_fmt = snapshot_sysfs(idx, "format");
	if (!top_path || !top_fmt) {
		errmsg(devarg, "cannot snapshot", "%s", errno == ENOENT ?
		       "no such device attached" : strerror(errno));
		goto out;
	}
	pfmt = vdimg_format_by_name(top_fmt);
	if (!pfmt) {
		errmsg(devarg, "cannot snapshot", "the top layer's format %s is not in this build",
		       top_fmt);
		goto out;
	}
	if (id == VDIMG_FMT_AUTO)
		id = snapshot_can_parent(pfmt->id) ? pfmt->id : VDIMG_FMT_QCOW2;
	fmt = vdimg_format_by_id(id);
	if (!fmt || !fmt->create) {
		errmsg(path, "cannot create", "vdimgctl cannot create %s images",
		       vdimg_format_name(id) ?: "such");
		goto out;
	}

	ctl = open(control_path(), O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		errmsg(control_path(), "cannot open", "%s%s", strerror(errno),
		       errno == ENOENT ? " (is the vdimg module loaded?)" : "");
		goto out;
	}
	snprintf(devnode, sizeof(devnode), "%s/vdimg%ld", dev_dir(), idx);

	/*
	 * A parent identity that changes with the first write after open (VHDX data write GUID) can
	 * move between our read and the kernel's check; the kernel then refuses (-ESTALE) and leaves
	 * the device as it was, and a second try reads the settled value.
	 */
	for (attempt = 0; attempt < 3; attempt++) {
		memset(&co, 0, sizeof(co));
		free(rest);
		rest = NULL;
		if (options && snapshot_options(options, &co, &rest))
			goto out;
		co.options = rest;
		/* the backend writes its metadata on a flush: make the parent's current state durable */
		fd = open(devnode, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fsync(fd)) {
			errmsg(devnode, "cannot snapshot", "cannot flush the device: %s",
			       strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		close(fd);
		if (snapshot_create(devarg, path, fmt, top_path, pfmt->id, &co))
			goto out;
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			errmsg(path, "cannot open", "%s", strerror(errno));
			unlink(path);
			goto out;
		}
		memset(&s, 0, sizeof(s));
		s.size = sizeof(s);
		s.flags = force ? VDIMG_SNAPSHOT_FORCE_LINK : 0;
		s.index = idx;
		s.fd = fd;
		s.format = id;
		ret = ioctl(ctl, VDIMG_CTL_SNAPSHOT, &s);
		err = errno;
		close(fd);
		if (!ret) {
			status = EXIT_OK;
			goto out;
		}
		unlink(path);
		if (err != ESTALE || force)
			break;
	}
	errmsg(devarg, "cannot snapshot", "%s", snapshot_reason(err));
out:
	if (ctl >= 0)
		close(ctl);
	free(rest);
	free(top_path);
	free(top_fmt);
	return status;
}
