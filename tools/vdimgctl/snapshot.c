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
	printf("Usage: vdimgctl snapshot [-t FMT] [--variant V] [-o OPTS] [--force] DEV FILE\n\n"
	       "Take a live snapshot of an attached device: create FILE (which must not exist, or is\n"
	       "a block device not in use, as for create) as a\n"
	       "differencing image over the device's current top layer and make it the new top. The\n"
	       "old top keeps the device's contents as they were and becomes read-only.\n\n"
	       " -t, --format FMT     format of FILE: vhd, vhdx, vdi, qcow2, qed or vmdk (default: the\n"
	       "                      top's format when it can have a parent, else qcow2)\n"
	       "     --variant V      variant of FILE that can be a child: differencing, or for vmdk\n"
	       "                      monolithicSparse (default for a vmdk FILE)\n"
	       " -o, --options OPTS   creation options as for create (block_size=N, ...)\n"
	       "     --force          do not let the kernel check FILE's parent link\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
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

/* VMDK variants create knows that can have a parent; the first is one file, the rest are not */
static const char *const vmdk_child_variants[] = { "monolithicSparse", "seSparse", "vmfsSparse" };

static bool is_vmdk_child_variant(const char *v)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(vmdk_child_variants); i++)
		if (!strcmp(v, vmdk_child_variants[i]))
			return true;
	return false;
}

/*
 * Can a live snapshot of format @id be of variant @v (as create names them)? The kernel takes the
 * new top as one file, so the child must be a differencing image in one file: "differencing" for
 * the formats whose children are that variant, "monolithicSparse" for VMDK. 0, or -1 after a
 * message.
 */
static int snapshot_variant_ok(const char *path, u32 id, const char *v)
{
	if (id == VDIMG_FMT_VMDK) {
		if (!strcmp(v, "monolithicSparse"))
			return 0;
		if (is_vmdk_child_variant(v))
			errmsg(path, "cannot create",
			       "a %s VMDK keeps its grains in a separate extent file, which a live snapshot cannot hand to the kernel (monolithicSparse can)",
			       v);
		else
			errmsg(path, "cannot create",
			       "a %s VMDK cannot be a child (monolithicSparse can)", v);
		return -1;
	}
	if (!strcmp(v, "differencing"))
		return 0;
	errmsg(path, "cannot create", "a %s %s image cannot be a child (differencing can)", v,
	       vdimg_format_name(id) ?: "such");
	return -1;
}

/* Create @path as a child of @parent_path. 0, or -errno after a message. */
static int snapshot_create(const char *dev, const char *path, const struct vdimg_format *fmt,
			   const char *parent_path, u32 parent_fmt, struct vdimg_create_opts *co)
{
	struct vdimg_path_image parent;
	int ret;

	ret = offline_open(&parent, parent_path, parent_fmt,
			   VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_HAS_CHILD, "cannot snapshot");
	if (ret)
		return ret;
	co->parent = parent_path;
	co->parent_img = &parent.img;
	co->size = parent.img.size;
	ret = create_file(path, fmt, co);
	co->parent_img = NULL;
	offline_close(&parent);
	return ret;
}

int cmd_snapshot(int argc, char **argv)
{
	enum { OPT_FORCE = 256, OPT_VARIANT };
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 't' },
		{ "variant", required_argument, NULL, OPT_VARIANT },
		{ "options", required_argument, NULL, 'o' },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *fmtname = NULL, *options = NULL, *variant = NULL, *devarg, *path;
	char *rest = NULL, *top_path = NULL, *top_fmt = NULL, devnode[512];
	const struct vdimg_format *fmt, *pfmt;
	struct vdimg_create_opts co;
	struct vdimg_features feat;
	struct vdimg_snapshot s;
	struct stat st;
	bool force = false, on_device;
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
		case OPT_VARIANT:
			variant = optarg;
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
	idx = parse_dev(devarg);
	if (idx < 0)
		return usage_error("snapshot", "'%s' is not a vdimg device", devarg);
	if (fmtname) {
		fmt = vdimg_format_by_name(fmtname);
		if (!fmt)
			return usage_error("snapshot", "unknown format '%s'", fmtname);
		if (!snapshot_can_parent(fmt->id) && fmt->id != VDIMG_FMT_VMDK) {
			errmsg(path, "cannot create", "%s images cannot have a parent", fmt->name);
			return EXIT_FAIL;
		}
		id = fmt->id;
	}
	/* FILE is new, or a block device the image is written on (an LV, as oVirt keeps them) */
	on_device = !stat(path, &st) && S_ISBLK(st.st_mode);
	if (!on_device && access(path, F_OK) == 0) {
		errmsg(path, "cannot create", "%s", strerror(EEXIST));
		return EXIT_FAIL;
	}

	top_path = sysfs_attr(idx, "backing_file");
	top_fmt = sysfs_attr(idx, "format");
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
	/* a VMDK variant asks for a VMDK child (a VMDK top gets a qcow2 one otherwise) */
	if (id == VDIMG_FMT_AUTO && variant && is_vmdk_child_variant(variant))
		id = VDIMG_FMT_VMDK;
	if (id == VDIMG_FMT_AUTO)
		id = snapshot_can_parent(pfmt->id) ? pfmt->id : VDIMG_FMT_QCOW2;
	if (variant && snapshot_variant_ok(path, id, variant))
		goto out;
	fmt = vdimg_format_by_id(id);
	if (!fmt || !vdimg_tool_ops(fmt)->create) {
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
	memset(&feat, 0, sizeof(feat));
	feat.size = sizeof(feat);
	if (on_device && (ioctl(ctl, VDIMG_CTL_GET_FEATURES, &feat) || feat.version < 5)) {
		errmsg(devarg, "cannot snapshot",
		       "this kernel's vdimg takes no block device as a new top (ABI version 5)");
		goto out;
	}

	/*
	 * A parent identity that changes with the first write after open (VHDX data write GUID) can
	 * move between our read and the kernel's check; the kernel then refuses (-ESTALE) and leaves
	 * the device as it was, and a second try reads the settled value.
	 */
	for (attempt = 0; attempt < 3; attempt++) {
		memset(&co, 0, sizeof(co));
		free(rest);
		rest = NULL;
		if (options && create_parse_options("snapshot", options, &co, &rest))
			goto out;
		co.options = rest;
		/* the formats' create takes "differencing" implied by the parent, not by name */
		co.variant = id == VDIMG_FMT_VMDK ? variant : NULL;
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
			remove_created(path);
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
		remove_created(path);
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
