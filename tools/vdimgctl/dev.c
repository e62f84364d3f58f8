// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl's device verbs, shaped like losetup: attach (probe every layer in userspace first so that
 * errors are clear, then one VDIMG_CTL_ATTACH with the layers base first), detach (deferred when the
 * device is open, like losetup -d), and list (the attributes in /sys/block/vdimgN/vdimg/ plus
 * VDIMG_CTL_GET_INFO when the control device can be opened, printed with libsmartcols).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <getopt.h>
#include <unistd.h>
#include <fcntl.h>
#include <dirent.h>
#include <ctype.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <libsmartcols/libsmartcols.h>
#include "chain.h"
#include "vdimgctl.h"

/* ---- the control device ---- */

static int run_modprobe(void)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0) {
			dup2(null, STDOUT_FILENO);
			close(null);
		}
		execl(modprobe_path(), "modprobe", "vdimg", (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ENOENT;
}

/* Open the control device, loading the module if the node is missing (@load). */
int open_control(bool load, bool quiet)
{
	int fd, i;

	fd = open(control_path(), O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && load && run_modprobe() == 0) {
		/* udev creates the node asynchronously */
		for (i = 0; i < 50; i++) {
			fd = open(control_path(), O_RDWR | O_CLOEXEC);
			if (fd >= 0 || errno != ENOENT)
				break;
			usleep(20000);
		}
	}
	if (fd < 0) {
		int err = errno;

		if (!quiet)
			errmsg(control_path(), "cannot open", "%s%s", strerror(err),
			       err == ENOENT ? " (is the vdimg module available?)" : "");
		return -err;
	}
	return fd;
}

long parse_dev(const char *s)
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

/* ---- attach ---- */

static int attach_usage(void)
{
	printf("Usage: vdimgctl attach [options] [DEV] IMAGE\n"
	       "       vdimgctl attach [options] [DEV] (--vbox VM.vbox | --vmx VM.vmx)\n\n"
	       "Attach IMAGE as the first free /dev/vdimgN (or DEV).\n\n"
	       " -f, --find                 use the first free device (the default)\n"
	       "     --show                 print the device name\n"
	       " -r, --read-only            attach read-only\n"
	       "     --rw                   attach an .iso image read-write (as raw)\n"
	       " -P, --partscan             scan the partition table\n"
	       " -t, --format FMT           format of IMAGE (default: probe)\n"
	       " -b, --sector-size N        logical sector size (512, 2048, 4096)\n"
	       "     --direct-io[=on|off]   require or refuse direct I/O\n"
	       "     --autoclear            detach when the last opener closes\n"
	       "     --chain A,B,...        layers below IMAGE, base first\n"
	       "     --force                ignore mismatched parent links and image checksums\n"
	       "     --overlay[=FILE]       write to a new differencing image on top, never to\n"
	       "                            IMAGE (temporary unless FILE is given)\n"
	       "     --overlay-format FMT   format of the overlay (default qcow2)\n"
	       "     --snapshot NAME|ID     attach an internal snapshot (read-only, or under\n"
	       "                            a temporary --overlay)\n"
	       "     --track N              a CUE sheet's data track N (default: the first)\n"
	       "     --dry-run              check the image and print what would be attached\n"
	       "     --no-lock              take no qemu-compatible image locks (the module\n"
	       "                            still refuses a second vdimg writer)\n"
	       "     --allow-device-extents open the block devices a VMDK descriptor names by\n"
	       "                            absolute path (raw device mappings)\n"
	       "     --vbox VM.vbox         a VirtualBox machine's disk in its current state\n"
	       "                            (base and differencing images, from its registry)\n"
	       "     --vbox-registry FILE   the global VirtualBox.xml (default: the user's)\n"
	       "     --vmx VM.vmx           a VMware machine's disk (its newest .vmdk)\n"
	       "     --disk N|DEV           which disk (VirtualBox: as info --vbox numbers\n"
	       "                            them; VMware: scsi0:0, sata0:1, nvme0:0, ide0:0)\n"
	       "     --port P, --controller NAME  a VirtualBox disk by where it is attached\n\n"
	       "For more details see vdimgctl(8).\n");
	return EXIT_OK;
}

static bool ends_with_iso(const char *path)
{
	size_t n = strlen(path);

	return n >= 4 && !strcasecmp(path + n - 4, ".iso");
}

static const char *attach_reason(int err)
{
	switch (err) {
	case EPERM:
	case EACCES:
		return "permission denied (attaching needs CAP_SYS_ADMIN)";
	case EBUSY:
		return "in use: the device index is taken, or another vdimg device writes the image or holds it while this attach would write it (see dmesg)";
	case EOPNOTSUPP:
		return "the image format is not supported by the vdimg module (see dmesg)";
	case EMEDIUMTYPE:
		return "unrecognised image format (use -t raw to attach a raw disk, or -r)";
	case ESTALE:
		return "the chain's parent links do not match (--force to ignore)";
	case EROFS:
		return "the image can only be attached read-only (-r)";
	case EUCLEAN:
		return "the image is corrupt (see dmesg)";
	case ENOTTY:
		return "the vdimg module does not understand this request (version mismatch?)";
	default:
		return strerror(err);
	}
}

struct attach_layer {
	const char *path;
	int fd;
	u32 format;		/* what to tell the kernel */
	u32 probed;		/* what the probe found (VDIMG_FMT_RAW for unrecognised) */
	int data_fd;		/* its external data file, or -1 */
	u32 snapshot;		/* internal snapshot to expose (1-based), or 0 */
	s32 *ext_fds;		/* its extent files (a VMDK descriptor's), or NULL */
	u32 nr_ext;
};

/*
 * qemu-compatible locks on every file of @l (vdimg_lock_image()): written when @write. After a
 * message naming the file and returning -EBUSY when another process holds it.
 */
/* a loop device on one of @l's files that conflicts (loop devices take no locks) */
static int attach_loop_check(const struct attach_layer *l, int fd, bool write)
{
	char loop[32];
	bool lw;

	if (!vdimg_loop_conflict(fd, write, loop, sizeof(loop), &lw))
		return 0;
	if (lw)
		errmsg(l->path, "cannot attach",
		       "%s, a writable loop device, uses it (losetup -d %s first)", loop, loop);
	else
		errmsg(l->path, "cannot attach",
		       "%s, a read-only loop device, reads it (attach read-only with -r, or losetup -d %s first)",
		       loop, loop);
	return -EBUSY;
}

static int attach_lock(const struct attach_layer *l, bool write)
{
	const char *why;
	u32 i;
	int ret = attach_loop_check(l, l->fd, write);

	if (!ret && l->data_fd >= 0)
		ret = attach_loop_check(l, l->data_fd, write);
	for (i = 0; !ret && i < l->nr_ext; i++)
		ret = attach_loop_check(l, l->ext_fds[i], write);
	if (ret)
		return ret;
	ret = vdimg_lock_image(l->fd, write, &why);
	if (!ret && l->data_fd >= 0)
		ret = vdimg_lock_image(l->data_fd, write, &why);
	for (i = 0; !ret && i < l->nr_ext; i++)
		ret = vdimg_lock_image(l->ext_fds[i], write, &why);
	if (ret == -EBUSY)
		errmsg(l->path, "cannot attach",
		       "in use by another process (qemu, or another vdimg device): it holds or refuses the '%s' permission%s",
		       why, write ? " (attach read-only with -r if it only reads)" : "");
	else if (ret)
		errmsg(l->path, "cannot attach", "cannot lock it: %s", strerror(-ret));
	return ret;
}

/* ---- overlays and snapshots ---- */

/*
 * Create the overlay over @parent_path: in @file (which must not exist), or a temporary file in
 * ${TMPDIR:-/var/tmp} when @file is NULL. Returns the open O_RDWR descriptor and the path in
 * *@path_out (malloc'd), or -errno after a message. The caller unlinks the file on failure (and a
 * temporary one once the kernel holds it).
 */
static int overlay_create(const char *parent_path, u32 parent_format, const char *file, u32 ofmt,
			  char **path_out)
{
	const struct vdimg_format *fmt = vdimg_format_by_id(ofmt);
	struct vdimg_create_opts co = {};
	struct vdimg_path_image parent;
	struct vdimg_file *f;
	char *path, *pabs;
	int fd, ret;

	*path_out = NULL;
	if (!fmt || !vdimg_tool_ops(fmt)->create) {
		errmsg(parent_path, "cannot attach", "cannot create %s overlays", fmt_name(ofmt));
		return -EOPNOTSUPP;
	}
	pabs = realpath(parent_path, NULL);
	if (!pabs) {
		ret = -errno;
		errmsg(parent_path, "cannot attach", "%s", strerror(-ret));
		return ret;
	}
	lib_action("cannot attach");
	ret = vdimg_open_path(&parent, pabs, parent_format, VDIMG_OPEN_READ_ONLY);
	if (ret) {
		if (!lib_reported)
			errmsg(parent_path, "cannot attach", "%s", strerror(-ret));
		free(pabs);
		return ret;
	}
	if (file) {
		path = strdup(file);
		fd = path ? open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
	} else {
		const char *tmp = getenv("TMPDIR");

		if (asprintf(&path, "%s/vdimg-overlay-XXXXXX", tmp && *tmp ? tmp : "/var/tmp") < 0)
			path = NULL;
		fd = path ? mkostemp(path, O_CLOEXEC) : -1;
	}
	if (fd < 0) {
		ret = path ? -errno : -ENOMEM;
		errmsg(file ? file : path ? path : parent_path, "cannot create the overlay", "%s",
		       strerror(-ret));
		free(path);
		vdimg_close_path(&parent);
		free(pabs);
		return ret;
	}
	co.size = parent.img.size;
	co.parent = pabs;
	co.parent_img = &parent.img;
	f = vdimg_file_from_fd(fd);
	lib_action("cannot create the overlay");
	ret = f ? vdimg_tool_ops(fmt)->create(f, &co) : -ENOMEM;
	if (!ret)
		ret = vdimg_file_sync(f);
	vdimg_file_free(f);
	vdimg_close_path(&parent);
	free(pabs);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot create the overlay", "%s", ret == -EINVAL ?
			       "this format cannot be an overlay of this image" : strerror(-ret));
		unlink(path);
		free(path);
		close(fd);
		return ret;
	}
	*path_out = path;
	return fd;
}

/* The 1-based index of internal snapshot @name (a name or an ID) of @path, or -errno. */
static int snapshot_index(const char *path, u32 format, const char *name, u32 *index)
{
	struct vdimg_path_image o;
	struct vdimg_image *img = &o.img;
	int ret;

	lib_action("cannot attach");
	ret = vdimg_open_path(&o, path, format, VDIMG_OPEN_READ_ONLY);
	if (ret) {
		if (!lib_reported)
			errmsg(path, "cannot attach", "%s", strerror(-ret));
		return ret;
	}
	if (!(img->fmt->caps & VDIMG_CAP_SNAPSHOTS) || !vdimg_tool_ops(img->fmt)->find_snapshot) {
		errmsg(path, "cannot attach", "%s images have no internal snapshots", img->fmt->name);
		ret = -EOPNOTSUPP;
	} else {
		ret = vdimg_tool_ops(img->fmt)->find_snapshot(img, name, index);
		if (ret && !lib_reported)
			errmsg(path, "cannot attach", "no snapshot '%s'%s", name,
			       ret == -ENOENT ? "" : " (cannot read the snapshot table)");
	}
	vdimg_close_path(&o);
	return ret;
}

/*
 * The external data file @l's image names (qcow2 data_file), opened with the layer's mode
 * (@writable) into l->data_fd; @img: the image, already open in userspace, or NULL to open it
 * for the question. 0, or -errno after a message.
 */
static int attach_data_file(struct attach_layer *l, struct vdimg_image *img, bool writable)
{
	char *path = NULL;
	int ret;

	lib_action("cannot attach");
	ret = img ? vdimg_data_file_path(img, l->path, &path) :
		    vdimg_image_data_file(l->path, l->probed, &path);
	if (ret) {
		if (!lib_reported)
			errmsg(l->path, "cannot attach", "%s", strerror(-ret));
		return ret;
	}
	if (!path)
		return 0;
	l->data_fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (l->data_fd < 0) {
		ret = -errno;
		errmsg(l->path, "cannot attach", "its data file %s: %s", path, strerror(-ret));
	}
	free(path);
	return ret;
}

/*
 * The extent files @l's image names (a VMDK descriptor), opened beside it with the layer's mode
 * (@writable) into l->ext_fds. 0, or -errno after a message.
 */
/* absolute extent paths naming block devices are opened (attach --allow-device-extents) */
static bool device_extents;

static int attach_extents(struct attach_layer *l, bool writable)
{
	struct vdimg_image img = { .name = l->path };
	u32 i;
	int ret;

	img.file = vdimg_file_from_fd(l->fd);
	if (!img.file)
		return -ENOMEM;
	lib_action("cannot attach");
	ret = vdimg_image_open_extents_dev(&img, l->probed, writable, device_extents);
	if (ret) {
		if (!lib_reported)
			errmsg(l->path, "cannot attach", "%s", strerror(-ret));
		vdimg_file_free(img.file);
		return ret;
	}
	if (img.nr_extents) {
		l->ext_fds = calloc(img.nr_extents, sizeof(*l->ext_fds));
		if (!l->ext_fds) {
			vdimg_image_close_extents(&img);
			vdimg_file_free(img.file);
			return -ENOMEM;
		}
		/* the descriptors stay open for the kernel; only the wrappers go */
		for (i = 0; i < img.nr_extents; i++) {
			l->ext_fds[i] = img.extents[i]->fd;
			vdimg_file_free(img.extents[i]);
		}
		l->nr_ext = img.nr_extents;
		free(img.extents);
	}
	vdimg_file_free(img.file);
	return 0;
}

/* Probe one layer: clear errors for unsupported/unrecognised images. */
static int attach_probe(struct attach_layer *l, bool top, bool *ro, bool rw_iso)
{
	struct vdimg_file *f = vdimg_file_from_fd(l->fd);
	const char *why = NULL;
	u32 id = 0;
	int ret;

	if (!f)
		return -ENOMEM;
	ret = vdimg_probe(f, &id, &why);
	vdimg_file_free(f);
	if (ret == -EOPNOTSUPP) {
		errmsg(l->path, "cannot attach", "%s images are not supported", why);
		return ret;
	}
	if (ret == -EMEDIUMTYPE) {
		errmsg(l->path, "cannot attach",
		       "looks like both a %s image and a fixed VHD; give the format with -t", why);
		return ret;
	}
	if (ret == -ENOENT) {
		/* raw only where nothing is written to it: a lower layer, or a read-only top */
		if (top && !*ro) {
			errmsg(l->path, "cannot attach", "%s", attach_reason(EMEDIUMTYPE));
			return -EMEDIUMTYPE;
		}
		l->probed = VDIMG_FMT_RAW;
		l->format = VDIMG_FMT_RAW;
		return 0;
	}
	if (ret) {
		errmsg(l->path, "cannot attach", "cannot read the image: %s", strerror(-ret));
		return ret;
	}
	l->probed = id;
	if ((id == VDIMG_FMT_CUE || id == VDIMG_FMT_DMG) && top)
		*ro = true;	/* CUE/BIN and DMG are read-only formats */
	if (id == VDIMG_FMT_ISO && top) {
		if (rw_iso)
			l->format = VDIMG_FMT_RAW;	/* --rw: the user wants to write to it */
		else
			*ro = true;
	}
	return 0;
}

/*
 * Of the optional attach flags @opt (bits an older module may not know: --force's force-csum is
 * only needed for the images it concerns), those the module on @ctl does not know, which the
 * attach then leaves out. A module without VDIMG_CTL_GET_FEATURES knows none of them.
 */
static u32 attach_flags_unknown(int ctl, u32 opt)
{
	struct vdimg_features f = { .size = sizeof(f) };

	if (!opt)
		return 0;
	if (ioctl(ctl, VDIMG_CTL_GET_FEATURES, &f) < 0)
		return opt;
	return opt & ~(u32)f.attach_flags;
}

/* --dry-run: what would be passed to VDIMG_CTL_ATTACH */
static void attach_print(const struct attach_layer *l, int n, u32 flags, u32 lbs, u32 index)
{
	static const char *const names[] = { "read-only", "partscan", "direct-io", "buffered",
					     "autoclear", "force-raw", "force-link",
					     "force-csum" };
	unsigned int b;
	int i;

	for (i = 0; i < n; i++) {
		printf("layer %d: %s (format %s, %s", i, l[i].path, fmt_name(l[i].format),
		       i == n - 1 && !(flags & VDIMG_ATTACH_READ_ONLY) ? "read-write" : "read-only");
		if (l[i].snapshot)
			printf(", %s %u", l[i].probed == VDIMG_FMT_CUE ? "track" : "snapshot",
			       l[i].snapshot);
		if (l[i].data_fd >= 0)
			printf(", data file");
		if (l[i].nr_ext)
			printf(", %u extent file%s", l[i].nr_ext, l[i].nr_ext == 1 ? "" : "s");
		printf(")\n");
	}
	printf("flags:");
	for (b = 0; b < sizeof(names) / sizeof(names[0]); b++)
		if (flags & (1U << b))
			printf(" %s", names[b]);
	printf("\nlogical block size: %u\n", lbs);
	if (index == VDIMG_INDEX_ANY)
		printf("device: first free\n");
	else
		printf("device: %s/vdimg%u\n", dev_dir(), index);
}

/*
 * If the single image in @layers is an image of a format this build knows (raw and ISO aside),
 * replace @layers with its chain, base first, found and opened read-only in userspace: *@rchain
 * (each image opened once; its paths back @layers), which the attach then validates with instead
 * of opening every layer again. 0, or -errno after a message.
 */
static int attach_resolve(struct attach_layer *layers, int *n, u32 format,
			  struct vdimg_chain **rchain, bool force)
{
	const char *why, *top;
	struct vdimg_file *f;
	u32 id = format;
	int fd, ret, i;

	fd = open(layers[0].path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;	/* the attach reports it */
	f = vdimg_file_from_fd(fd);
	ret = f && format == VDIMG_FMT_AUTO ? vdimg_probe(f, &id, &why) : 0;
	vdimg_file_free(f);
	close(fd);
	if (ret || !vdimg_format_by_id(id) || id == VDIMG_FMT_RAW || id == VDIMG_FMT_ISO)
		return 0;
	lib_action("cannot attach");
	ret = vdimg_chain_resolve_open(rchain, layers[0].path, format,
				       (force ? VDIMG_CHAIN_FORCE_CSUM |
						VDIMG_CHAIN_FORCE_LINK : 0) |
				       (device_extents ? VDIMG_CHAIN_DEVICE_EXTENTS : 0));
	if (ret) {
		if (!lib_reported)
			errmsg(layers[0].path, "cannot attach", "%s", attach_reason(-ret));
		return ret;
	}
	/* keep the user's spelling of the top; the parents as resolved */
	top = layers[0].path;
	for (i = 0; i < (*rchain)->nr - 1; i++)
		layers[i].path = (*rchain)->layer[i].path;
	layers[(*rchain)->nr - 1].path = top;
	*n = (*rchain)->nr;
	return 0;
}

/*
 * Is @c (from attach_resolve()) the chain the attach passes: the same files (by inode) in the
 * same formats, nothing added (an overlay) or changed (a snapshot)? Then it stands for the
 * read-only validation open of @layers.
 */
static bool attach_chain_matches(struct vdimg_chain *c, const struct attach_layer *layers, int n)
{
	struct stat a, b;
	int i;

	if (!c || c->nr != n)
		return false;
	for (i = 0; i < n; i++) {
		if (layers[i].snapshot || layers[i].probed != c->layers[i]->fmt->id ||
		    fstat(layers[i].fd, &a) || fstat(c->layer[i].fd, &b) ||
		    a.st_dev != b.st_dev || a.st_ino != b.st_ino)
			return false;
	}
	return true;
}

int cmd_attach(int argc, char **argv)
{
	enum { OPT_SHOW = 256, OPT_RW, OPT_DIO, OPT_AUTOCLEAR, OPT_CHAIN, OPT_FORCE, OPT_DRY,
	       OPT_OVERLAY, OPT_OVERLAY_FMT, OPT_SNAPSHOT, OPT_TRACK, OPT_NO_LOCK, OPT_VBOX,
	       OPT_VBOX_REG, OPT_VMX, OPT_DISK, OPT_PORT, OPT_CONTROLLER, OPT_DEV_EXTENTS };
	static const struct option opts[] = {
		{ "find", no_argument, NULL, 'f' },
		{ "show", no_argument, NULL, OPT_SHOW },
		{ "read-only", no_argument, NULL, 'r' },
		{ "rw", no_argument, NULL, OPT_RW },
		{ "partscan", no_argument, NULL, 'P' },
		{ "format", required_argument, NULL, 't' },
		{ "sector-size", required_argument, NULL, 'b' },
		{ "direct-io", optional_argument, NULL, OPT_DIO },
		{ "autoclear", no_argument, NULL, OPT_AUTOCLEAR },
		{ "chain", required_argument, NULL, OPT_CHAIN },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ "dry-run", no_argument, NULL, OPT_DRY },
		{ "overlay", optional_argument, NULL, OPT_OVERLAY },
		{ "overlay-format", required_argument, NULL, OPT_OVERLAY_FMT },
		{ "snapshot", required_argument, NULL, OPT_SNAPSHOT },
		{ "track", required_argument, NULL, OPT_TRACK },
		{ "no-lock", no_argument, NULL, OPT_NO_LOCK },
		{ "vbox", required_argument, NULL, OPT_VBOX },
		{ "vbox-registry", required_argument, NULL, OPT_VBOX_REG },
		{ "vmx", required_argument, NULL, OPT_VMX },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "controller", required_argument, NULL, OPT_CONTROLLER },
		{ "allow-device-extents", no_argument, NULL, OPT_DEV_EXTENTS },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	bool overlay = false, overlay_tmp = false, overlay_unlinked = false;
	const char *overlay_file = NULL, *snapshot = NULL;
	char *overlay_path = NULL;
	u32 overlay_fmt = VDIMG_FMT_QCOW2, snap_index = 0, track = 0;
	int overlay_fd = -1;
	struct attach_layer *layers = NULL;
	struct vdimg_layer *kl = NULL;
	struct vdimg_attach a;
	struct vdimg_chain *chain = NULL, *rchain = NULL;
	const char *chain_arg = NULL, *top_path;
	char *chain_copy = NULL, *tok, *save = NULL, *bundle_top = NULL;
	bool show = false, ro = false, rw_iso = false, force = false, all_built = true, dry = false;
	bool lock = true;
	u32 flags = 0, format = VDIMG_FMT_AUTO, lbs = 0, index = VDIMG_INDEX_ANY;
	int c, n = 0, i, ctl, ret, status = EXIT_FAIL;
	u32 *fmts = NULL;
	int *fds = NULL;
	const char **names = NULL;
	const char *vbox = NULL, *vbox_reg = NULL, *vmx = NULL;
	struct vm_select sel = { .port = -1 };
	char **vm_paths = NULL;
	int vm_n = 0;

	while ((c = getopt_long(argc, argv, "frPt:b:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			break;
		case OPT_NO_LOCK:
			lock = false;
			break;
		case OPT_DEV_EXTENTS:
			device_extents = true;
			break;
		case OPT_SHOW:
			show = true;
			break;
		case 'r':
			ro = true;
			break;
		case OPT_RW:
			rw_iso = true;
			break;
		case 'P':
			flags |= VDIMG_ATTACH_PARTSCAN;
			break;
		case 't':
			for (format = 1; format < VDIMG_FMT_COUNT; format++)
				if (vdimg_format_name(format) && !strcmp(optarg, vdimg_format_name(format)))
					break;
			if (format == VDIMG_FMT_COUNT)
				return usage_error("attach", "unknown format '%s'", optarg);
			break;
		case 'b': {
			unsigned long long v;

			if (parse_size(optarg, &v) || (v != 512 && v != 2048 && v != 4096))
				return usage_error("attach", "sector size must be 512, 2048 or 4096");
			lbs = v;
			break;
		}
		case OPT_DIO:
			if (!optarg || !strcmp(optarg, "on") || !strcmp(optarg, "1"))
				flags = (flags & ~VDIMG_ATTACH_BUFFERED) | VDIMG_ATTACH_DIRECT_IO;
			else if (!strcmp(optarg, "off") || !strcmp(optarg, "0"))
				flags = (flags & ~VDIMG_ATTACH_DIRECT_IO) | VDIMG_ATTACH_BUFFERED;
			else
				return usage_error("attach", "--direct-io takes on or off");
			break;
		case OPT_AUTOCLEAR:
			flags |= VDIMG_ATTACH_AUTOCLEAR;
			break;
		case OPT_CHAIN:
			chain_arg = optarg;
			break;
		case OPT_DRY:
			dry = true;
			break;
		case OPT_OVERLAY:
			overlay = true;
			overlay_file = optarg && *optarg ? optarg : NULL;
			break;
		case OPT_OVERLAY_FMT: {
			u32 id;

			for (id = 1; id < VDIMG_FMT_COUNT; id++)
				if (vdimg_format_name(id) && !strcmp(optarg, vdimg_format_name(id)))
					break;
			if (id == VDIMG_FMT_COUNT)
				return usage_error("attach", "unknown format '%s'", optarg);
			if (id != VDIMG_FMT_QCOW2 && id != VDIMG_FMT_VHD && id != VDIMG_FMT_VHDX &&
			    id != VDIMG_FMT_VDI && id != VDIMG_FMT_QED)
				return usage_error("attach", "%s cannot be an overlay format", optarg);
			overlay_fmt = id;
			break;
		}
		case OPT_SNAPSHOT:
			snapshot = optarg;
			break;
		case OPT_TRACK: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || v < 1 || v > 99)
				return usage_error("attach", "--track takes a track number 1..99");
			track = v;
			break;
		}
		case OPT_FORCE:
			force = true;
			flags |= VDIMG_ATTACH_FORCE_LINK | VDIMG_ATTACH_FORCE_CSUM;
			break;
		case OPT_VBOX:
			vbox = optarg;
			break;
		case OPT_VBOX_REG:
			vbox_reg = optarg;
			break;
		case OPT_VMX:
			vmx = optarg;
			break;
		case OPT_DISK:
			sel.disk = optarg;
			break;
		case OPT_PORT: {
			char *end;

			sel.port = strtol(optarg, &end, 10);
			if (!*optarg || *end || sel.port < 0 || sel.port > 65535)
				return usage_error("attach", "--port takes a port number");
			break;
		}
		case OPT_CONTROLLER:
			sel.controller = optarg;
			break;
		case 'h':
			return attach_usage();
		default:
			return usage_error("attach", "bad option");
		}
	}
	/* with --vbox or --vmx the VM's disk is IMAGE: a single argument is DEV */
	if (argc - optind == 2 || ((vbox || vmx) && argc - optind == 1)) {
		long v = parse_dev(argv[optind]);

		if (v < 0)
			return usage_error("attach", "'%s' is not a vdimg device", argv[optind]);
		index = v;
		optind++;
	}
	if (vbox || vmx) {
		/* a VM's disk stands for IMAGE (and, from a .vbox, for --chain) */
		if (vbox && vmx)
			return usage_error("attach", "--vbox and --vmx exclude each other");
		if (argc - optind > 0 || chain_arg || track || snapshot)
			return usage_error("attach", "--%s takes no IMAGE, --chain, --track or --snapshot",
					   vbox ? "vbox" : "vmx");
		if (vmx && (sel.port >= 0 || sel.controller))
			return usage_error("attach", "--vmx takes --disk DEV (scsi0:0, sata0:1, ...)");
	} else if (sel.disk || sel.port >= 0 || sel.controller || vbox_reg) {
		return usage_error("attach", "--disk, --port, --controller and --vbox-registry go with --vbox or --vmx");
	}
	if (argc - optind > 1 || (argc - optind == 0 && !chain_arg && !vbox && !vmx))
		return usage_error("attach", "expected one IMAGE");
	if (overlay && ro)
		return usage_error("attach", "--overlay makes IMAGE read-only already; -r with it is pointless");
	if (snapshot && overlay_file)
		return usage_error("attach", "--snapshot takes only a temporary --overlay (an overlay file could not name the snapshot as its parent)");
	if (snapshot && !overlay)
		ro = true;	/* a snapshot is read-only */
	if (track || format == VDIMG_FMT_CUE)
		ro = true;	/* CUE/BIN is read-only (DMG given with -t: the module says so) */
	if (track && snapshot)
		return usage_error("attach", "--track and --snapshot exclude each other");
	if (track && (overlay || chain_arg))
		return usage_error("attach", "--track takes no --overlay or --chain");
	overlay_tmp = overlay && !overlay_file;

	/* the layers, base first: --chain entries, then IMAGE on top */
	layers = calloc(VDIMG_MAX_LAYERS + 1, sizeof(*layers));
	if (!layers)
		goto out;
	/* no descriptor yet: an early error path must not close fd 0 */
	for (i = 0; i < VDIMG_MAX_LAYERS + 1; i++) {
		layers[i].fd = -1;
		layers[i].data_fd = -1;
	}
	if (chain_arg) {
		chain_copy = strdup(chain_arg);
		for (tok = strtok_r(chain_copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			if (n == VDIMG_MAX_LAYERS) {
				usage_error("attach", "more than %d layers", VDIMG_MAX_LAYERS);
				goto out;
			}
			layers[n++].path = tok;
		}
	}
	if (optind < argc) {
		if (n == VDIMG_MAX_LAYERS) {
			usage_error("attach", "more than %d layers", VDIMG_MAX_LAYERS);
			goto out;
		}
		layers[n++].path = argv[optind];
		/* a Parallels bundle (DIR.hdd or its DiskDescriptor.xml): its top snapshot's file */
		ret = vdimg_parallels_bundle_top(argv[optind], &bundle_top);
		if (ret && ret != -ENOENT) {
			errmsg(argv[optind], "cannot attach", "the bundle's descriptor is refused: %s",
			       strerror(-ret));
			goto out;
		}
		if (!ret)
			layers[n - 1].path = bundle_top;
	}
	if (vbox) {
		bool vb_ro = false;

		if (vbox_attach_chain(vbox, vbox_reg, &sel, force, &vm_paths, &vm_n, &vb_ro))
			goto out;
		if (vb_ro && !overlay && !ro) {
			errmsg(vbox, "note", "the medium is immutable, read-only or multi-attach: attached read-only (--overlay to write to a temporary overlay)");
			ro = true;
		}
		if (n + vm_n > VDIMG_MAX_LAYERS) {
			usage_error("attach", "more than %d layers", VDIMG_MAX_LAYERS);
			goto out;
		}
		/* the registry's chain, checked against the images: an explicit chain */
		for (i = 0; i < vm_n; i++)
			layers[n++].path = vm_paths[i];
	} else if (vmx) {
		vm_paths = calloc(1, sizeof(*vm_paths));
		if (!vm_paths || vmx_attach_top(vmx, sel.disk, &vm_paths[0]))
			goto out;
		vm_n = 1;
		layers[n++].path = vm_paths[0];
	}
	if (!n) {
		usage_error("attach", "no image given");
		goto out;
	}
	/* a differencing image without --chain: find its parents the way the image records them */
	if (!chain_arg && !vbox && attach_resolve(layers, &n, format, &rchain, force))
		goto out;
	top_path = layers[n - 1].path;
	if (ends_with_iso(top_path) && !rw_iso && !overlay)
		ro = true;
	if (snapshot && snapshot_index(top_path, format, snapshot, &snap_index))
		goto out;
	/* a CUE track travels in the layer's snapshot field (Documentation/userspace-api/vdimg.rst) */
	if (track)
		snap_index = track;
	if (overlay) {
		if (n == VDIMG_MAX_LAYERS) {
			usage_error("attach", "more than %d layers", VDIMG_MAX_LAYERS);
			goto out;
		}
		overlay_fd = overlay_create(top_path, format, overlay_file, overlay_fmt,
					    &overlay_path);
		if (overlay_fd < 0)
			goto out;
		layers[n - 1].snapshot = snap_index;
		layers[n].path = overlay_path;
		layers[n].format = overlay_fmt;
		n++;
	} else {
		layers[n - 1].snapshot = snap_index;
	}

	for (i = 0; i < n; i++) {
		struct attach_layer *l = &layers[i];
		bool top = i == n - 1;
		struct stat st;

		if (overlay && top) {
			/* the overlay we made: already open read-write */
			l->fd = overlay_fd;
			overlay_fd = -1;
			l->probed = l->format;
			continue;
		}
		l->format = top || (overlay && i == n - 2) ? format : VDIMG_FMT_AUTO;
		l->fd = open(l->path, (top && !ro ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (l->fd < 0) {
			errmsg(l->path, "cannot attach", "%s", strerror(errno));
			goto out;
		}
		/* the kernel takes block devices as layers too (images on LVs, LUNs) */
		if (fstat(l->fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
			errmsg(l->path, "cannot attach", "%s",
			       S_ISDIR(st.st_mode) ? strerror(EISDIR) :
			       "not a regular file or a block device");
			goto out;
		}
		if (l->format == VDIMG_FMT_AUTO) {
			if (attach_probe(l, top, &ro, rw_iso))
				goto out;
		} else {
			l->probed = l->format;
		}
		/*
		 * Written on a block device, a format must find the end of its data from its own
		 * metadata, not from the device's size: qcow2 allocates by its refcounts, VDI after
		 * the blocks its header counts, VHD, VHDX, QED and sparse VMDK after the last
		 * block, cluster or grain their tables reference (VHD's footer goes in the device's
		 * last sector), Parallels after the last cluster its BAT references; all stop with
		 * ENOSPC at the device's end, and raw does not allocate. The rest (QCOW v1 among
		 * them) are read-only formats, refused here before the kernel says so;
		 * streamOptimized and seSparse VMDK refuse a writable open there themselves.
		 */
		if (top && !ro && S_ISBLK(st.st_mode) && !vdimg_format_device_writable(l->probed)) {
			errmsg(l->path, "cannot attach",
			       "a %s image on a block device is attached only read-only (-r, or --overlay); "
			       VDIMG_DEVICE_FORMATS " can be written there",
			       vdimg_format_name(l->probed) ?: "such");
			goto out;
		}
		if (!vdimg_format_by_id(l->probed))
			all_built = false;
		else if (attach_extents(l, top && !ro))
			goto out;
	}
	if (ro)
		flags |= VDIMG_ATTACH_READ_ONLY;

	/*
	 * Open the whole chain read-only in userspace with the same backends as the module, so that
	 * a corrupt image or a broken parent link is explained here rather than as a bare errno.
	 * The chain the resolution opened is that open already when it is the same chain. Skipped
	 * when this build lacks one of the formats (the module decides then).
	 */
	if (all_built && attach_chain_matches(rchain, layers, n)) {
		chain = rchain;
	} else if (all_built) {
		fds = calloc(n, sizeof(*fds));
		names = calloc(n, sizeof(*names));
		fmts = calloc(n, sizeof(*fmts));
		if (!fds || !names || !fmts)
			goto out;
		for (i = 0; i < n; i++) {
			fds[i] = layers[i].fd;
			names[i] = layers[i].path;
			fmts[i] = layers[i].probed;
		}
		lib_action("cannot attach");
		ret = vdimg_chain_open_fds(&chain, fds, names, n, fmts, VDIMG_CHAIN_READ_ONLY |
					   (force ? VDIMG_CHAIN_FORCE_LINK | VDIMG_CHAIN_FORCE_CSUM : 0) |
					   (device_extents ? VDIMG_CHAIN_DEVICE_EXTENTS : 0));
		if (ret) {
			if (!lib_reported)
				errmsg(top_path, "cannot attach", "%s", attach_reason(-ret));
			goto out;
		}
	}
	/* the data files the images name, asked of the open chain (or of each image) */
	for (i = 0; i < n; i++) {
		if (!vdimg_format_by_id(layers[i].probed) || (overlay && i == n - 1))
			continue;
		if (attach_data_file(&layers[i], chain ? chain->layers[i] : NULL,
				     i == n - 1 && !ro))
			goto out;
	}
	/* a temporary overlay lives only as long as the descriptors the kernel takes */
	if (overlay_tmp && overlay_path && unlink(overlay_path) == 0)
		overlay_unlinked = true;

	if (dry) {
		attach_print(layers, n, flags, lbs, index);
		status = EXIT_OK;
		goto out;
	}
	kl = calloc(n, sizeof(*kl));
	if (!kl)
		goto out;
	for (i = 0; lock && i < n; i++)
		if (attach_lock(&layers[i], i == n - 1 && !ro))
			goto out;
	for (i = 0; i < n; i++) {
		kl[i].fd = layers[i].fd;
		kl[i].format = layers[i].format;
		if (layers[i].data_fd >= 0) {
			kl[i].flags |= VDIMG_LAYER_DATA_FILE;
			kl[i].data_fd = layers[i].data_fd;
		}
		if (layers[i].snapshot) {
			kl[i].flags |= VDIMG_LAYER_SNAPSHOT;
			kl[i].snapshot = layers[i].snapshot;
		}
		if (layers[i].nr_ext) {
			kl[i].flags |= VDIMG_LAYER_EXTENTS;
			kl[i].extent_fds = (uintptr_t)layers[i].ext_fds;
			kl[i].nr_extents = layers[i].nr_ext;
		}
	}
	ctl = open_control(true, false);
	if (ctl < 0)
		goto out;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.flags = flags;
	a.index = index;
	a.nr_layers = n;
	a.layers = (uintptr_t)kl;
	a.layer_size = sizeof(*kl);
	a.logical_block_size = lbs;
	a.flags &= ~attach_flags_unknown(ctl, a.flags & VDIMG_ATTACH_FORCE_CSUM);
	ret = ioctl(ctl, VDIMG_CTL_ATTACH, &a);
	if (ret < 0) {
		int err = errno;

		errmsg(top_path, "cannot attach", "%s", attach_reason(err));
		close(ctl);
		goto out;
	}
	close(ctl);
	if (show)
		printf("%s/vdimg%u\n", dev_dir(), a.index);
	status = EXIT_OK;
out:
	if (layers) {
		for (i = 0; i < n; i++) {
			if (layers[i].fd >= 0)
				close(layers[i].fd);
			if (layers[i].data_fd >= 0)
				close(layers[i].data_fd);
			while (layers[i].nr_ext)
				close(layers[i].ext_fds[--layers[i].nr_ext]);
			free(layers[i].ext_fds);
		}
	}
	if (overlay_fd >= 0)
		close(overlay_fd);
	/* an overlay this attach created is removed unless the attach succeeded with =FILE */
	if (overlay_path && !overlay_unlinked && (overlay_tmp || status != EXIT_OK || dry))
		unlink(overlay_path);
	free(overlay_path);
	free(layers);
	free(kl);
	free(fds);
	free(names);
	free(fmts);
	free(chain_copy);
	vm_paths_free(vm_paths, vm_n);
	free(bundle_top);
	if (chain != rchain)
		vdimg_chain_close(chain);
	vdimg_chain_close(rchain);
	return status;
}

/* ---- the attached devices in sysfs ---- */

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return x < y ? -1 : x > y;
}

/* Indexes of /sys/block/vdimgN, sorted; returns the count (0 if none or no sysfs). */
static int list_indexes(long **out)
{
	DIR *d = opendir(sysfs_block_path());
	struct dirent *e;
	long *v = NULL, *nv;
	int n = 0;

	*out = NULL;
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char *end;
		long idx;

		if (strncmp(e->d_name, "vdimg", 5) || !isdigit((unsigned char)e->d_name[5]))
			continue;
		idx = strtol(e->d_name + 5, &end, 10);
		if (*end)
			continue;	/* a partition or something else */
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv)
			break;
		v = nv;
		v[n++] = idx;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_long);
	*out = v;
	return n;
}

/* Contents of /sys/block/vdimgN/vdimg/@attr without the final newline, or NULL. */
char *sysfs_attr(long idx, const char *attr)
{
	char path[512], *buf;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/vdimg%ld/vdimg/%s", sysfs_block_path(), idx, attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = malloc(65536);
	if (!buf) {
		close(fd);
		return NULL;
	}
	n = read(fd, buf, 65535);
	close(fd);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = 0;
	return buf;
}

/* ---- detach ---- */

static int detach_one(int ctl, long idx, const char *name)
{
	struct vdimg_detach d;

	memset(&d, 0, sizeof(d));
	d.size = sizeof(d);
	d.index = idx;
	if (ioctl(ctl, VDIMG_CTL_DETACH, &d) == 0)
		return 0;
	if (errno == EBUSY) {
		/* open: detach when the last opener closes, as losetup -d does */
		d.flags = VDIMG_DETACH_DEFERRED;
		if (ioctl(ctl, VDIMG_CTL_DETACH, &d) == 0)
			return 0;
	}
	if (errno != ENXIO && errno != EPERM && errno != EBUSY && errno != EINVAL &&
	    errno != E2BIG && errno != ENOTTY) {
		/* the device is gone, but its final metadata write or sync failed (the ABI) */
		errmsg(name, "detached, but its last metadata write failed",
		       "%s; check the image (vdimgctl check)", strerror(errno));
		return -1;
	}
	errmsg(name, "cannot detach", "%s", errno == ENXIO ? "no such device attached" :
	       errno == EPERM ? "permission denied (detaching needs CAP_SYS_ADMIN)" :
	       strerror(errno));
	return -1;
}

int cmd_detach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "all", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	bool all = false;
	int c, i, ctl, status = EXIT_OK;

	while ((c = getopt_long(argc, argv, "ah", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			all = true;
			break;
		case 'h':
			printf("Usage: vdimgctl detach DEV...\n       vdimgctl detach -a\n\n"
			       "Detach devices; a device still open is detached when it is last closed.\n\n"
			       "For more details see vdimgctl(8).\n");
			return EXIT_OK;
		default:
			return usage_error("detach", "bad option");
		}
	}
	if (!all && optind == argc)
		return usage_error("detach", "no device given");
	if (all && optind != argc)
		return usage_error("detach", "-a takes no devices");
	for (i = optind; i < argc; i++)
		if (parse_dev(argv[i]) < 0)
			return usage_error("detach", "'%s' is not a vdimg device", argv[i]);
	ctl = open_control(false, false);
	if (ctl < 0)
		return EXIT_FAIL;
	if (all) {
		long *idx;
		int n = list_indexes(&idx);
		char name[64];

		for (i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "%s/vdimg%ld", dev_dir(), idx[i]);
			if (detach_one(ctl, idx[i], name))
				status = EXIT_FAIL;
		}
		free(idx);
	} else {
		for (i = optind; i < argc; i++)
			if (detach_one(ctl, parse_dev(argv[i]), argv[i]))
				status = EXIT_FAIL;
	}
	close(ctl);
	return status;
}

/* ---- list ---- */

enum {
	COL_NAME, COL_FORMAT, COL_VSIZE, COL_RO, COL_DIO, COL_PARTSCAN, COL_AUTOCLEAR,
	COL_LOGSEC, COL_DEPTH, COL_CHAIN, COL_BACKFILE, COL_COUNT
};

struct colinfo {
	const char *name;
	double whint;
	int flags;
	int json;
	const char *help;
};

static const struct colinfo cols[COL_COUNT] = {
	[COL_NAME] = { "NAME", 0.15, 0, SCOLS_JSON_STRING, "device name" },
	[COL_FORMAT] = { "FORMAT", 6, 0, SCOLS_JSON_STRING, "format of the top layer" },
	[COL_VSIZE] = { "VSIZE", 5, SCOLS_FL_RIGHT, SCOLS_JSON_STRING, "virtual size" },
	[COL_RO] = { "RO", 1, SCOLS_FL_RIGHT, SCOLS_JSON_BOOLEAN, "read-only" },
	[COL_DIO] = { "DIO", 1, SCOLS_FL_RIGHT, SCOLS_JSON_BOOLEAN, "direct I/O in use" },
	[COL_PARTSCAN] = { "PARTSCAN", 1, SCOLS_FL_RIGHT, SCOLS_JSON_BOOLEAN, "partition scan" },
	[COL_AUTOCLEAR] = { "AUTOCLEAR", 1, SCOLS_FL_RIGHT, SCOLS_JSON_BOOLEAN, "autoclear" },
	[COL_LOGSEC] = { "LOG-SEC", 4, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "logical sector size" },
	[COL_DEPTH] = { "DEPTH", 1, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "layers in the chain" },
	[COL_CHAIN] = { "CHAIN", 0.3, 0, SCOLS_JSON_ARRAY_STRING, "image files, base first" },
	[COL_BACKFILE] = { "BACK-FILE", 0.3, 0, SCOLS_JSON_STRING, "the top image file" },
};

/* What one device looks like, from sysfs and (when available) GET_INFO. */
struct devstate {
	long idx;
	char *format, *backing, *chain, *state;
	unsigned long long vsize;
	int ro, dio, partscan, autoclear;	/* -1 unknown */
	unsigned int lbs, depth;
	struct vdimg_layer_info *li;		/* per layer from GET_INFO (base first), or NULL */
	unsigned int nli;
};

#define LIST_LAYERS_MAX	256	/* layers per device list --chain asks the module about */

static int attr_int(long idx, const char *attr)
{
	char *s = sysfs_attr(idx, attr);
	int v = s && *s ? atoi(s) : -1;

	free(s);
	return v;
}

static unsigned long long attr_ull(long idx, const char *attr, bool *ok)
{
	char *s = sysfs_attr(idx, attr);
	unsigned long long v = 0;

	*ok = s && *s;
	if (*ok)
		v = strtoull(s, NULL, 10);
	free(s);
	return v;
}

static void devstate_fill(struct devstate *d, long idx, int ctl)
{
	struct vdimg_layer_info li[1];
	struct vdimg_dev_info info;
	bool got;
	int v;

	memset(d, 0, sizeof(*d));
	d->idx = idx;
	d->format = sysfs_attr(idx, "format");
	d->backing = sysfs_attr(idx, "backing_file");
	d->chain = sysfs_attr(idx, "chain");
	d->state = sysfs_attr(idx, "state");
	d->ro = attr_int(idx, "read_only");
	d->dio = attr_int(idx, "dio");
	d->partscan = attr_int(idx, "partscan");
	d->autoclear = attr_int(idx, "autoclear");
	v = attr_int(idx, "logical_block_size");
	d->lbs = v > 0 ? v : 0;
	v = attr_int(idx, "depth");
	d->depth = v > 0 ? v : 0;
	d->vsize = attr_ull(idx, "virtual_size", &got);

	if (ctl < 0)
		return;
	/* the ioctl view fills what sysfs did not say (older module, missing attribute) */
	memset(&info, 0, sizeof(info));
	memset(li, 0, sizeof(li));
	info.size = sizeof(info);
	info.index = idx;
	info.layers = (uintptr_t)li;
	info.layers_cap = 1;
	info.layer_info_size = sizeof(li[0]);
	if (ioctl(ctl, VDIMG_CTL_GET_INFO, &info))
		return;
	/* every layer's format and size, for list --chain */
	if (info.nr_layers > 1) {
		struct vdimg_dev_info all = info;

		d->li = calloc(min_t(u32, info.nr_layers, LIST_LAYERS_MAX), sizeof(*d->li));
		all.layers = (uintptr_t)d->li;
		all.layers_cap = min_t(u32, info.nr_layers, LIST_LAYERS_MAX);
		if (d->li && !ioctl(ctl, VDIMG_CTL_GET_INFO, &all)) {
			d->nli = all.layers_cap;
		} else {
			free(d->li);
			d->li = NULL;
		}
	} else {
		d->li = calloc(1, sizeof(*d->li));
		if (d->li) {
			d->li[0] = li[0];
			d->nli = 1;
		}
	}
	if (!got)
		d->vsize = info.size_bytes;
	if (d->ro < 0)
		d->ro = !!(info.dev_flags & VDIMG_DEV_READ_ONLY);
	if (d->dio < 0)
		d->dio = !!(info.dev_flags & VDIMG_DEV_DIRECT_IO);
	if (d->partscan < 0)
		d->partscan = !!(info.dev_flags & VDIMG_DEV_PARTSCAN);
	if (d->autoclear < 0)
		d->autoclear = !!(info.dev_flags & VDIMG_DEV_AUTOCLEAR);
	if (!d->lbs)
		d->lbs = info.logical_block_size;
	if (!d->depth)
		d->depth = info.nr_layers;
	if (!d->format && info.nr_layers == 1) {
		li[0].format_name[sizeof(li[0].format_name) - 1] = 0;
		d->format = strdup(li[0].format_name);
	}
}

static void devstate_free(struct devstate *d)
{
	free(d->li);
	free(d->format);
	free(d->backing);
	free(d->chain);
	free(d->state);
}

/* "1G", "1.5G", "512" (lsblk style) */
static void compact_size(unsigned long long v, char *buf, size_t len)
{
	static const char units[] = "BKMGTPE";
	double x = v;
	int i = 0;

	while (x >= 1024 && i < 6) {
		x /= 1024;
		i++;
	}
	if (!i)
		snprintf(buf, len, "%lluB", v);
	else if (x == (unsigned long long)x)
		snprintf(buf, len, "%llu%c", (unsigned long long)x, units[i]);
	else
		snprintf(buf, len, "%.1f%c", x, units[i]);
}

static char *cell(struct devstate *d, int col, bool bytes, bool json)
{
	char buf[64];

	switch (col) {
	case COL_NAME:
		snprintf(buf, sizeof(buf), "%s/vdimg%ld", dev_dir(), d->idx);
		return strdup(buf);
	case COL_FORMAT:
		return d->format ? strdup(d->format) : NULL;
	case COL_VSIZE:
		if (bytes)
			snprintf(buf, sizeof(buf), "%llu", d->vsize);
		else
			compact_size(d->vsize, buf, sizeof(buf));
		return strdup(buf);
	case COL_RO:
	case COL_DIO:
	case COL_PARTSCAN:
	case COL_AUTOCLEAR: {
		int v = col == COL_RO ? d->ro : col == COL_DIO ? d->dio :
			col == COL_PARTSCAN ? d->partscan : d->autoclear;

		if (v < 0)
			return NULL;
		return strdup(v ? "1" : "0");	/* libsmartcols turns these into JSON booleans */
	}
	case COL_LOGSEC:
		snprintf(buf, sizeof(buf), "%u", d->lbs);
		return strdup(buf);
	case COL_DEPTH:
		snprintf(buf, sizeof(buf), "%u", d->depth);
		return strdup(buf);
	case COL_CHAIN: {
		/* one path per line in sysfs: an array in JSON, comma-separated in a table */
		char *s = d->chain ? strdup(d->chain) : d->backing ? strdup(d->backing) : NULL, *p;

		if (s && !json)
			for (p = s; *p; p++)
				if (*p == '\n')
					*p = ',';
		return s;
	}
	case COL_BACKFILE:
		return d->backing ? strdup(d->backing) : NULL;
	}
	return NULL;
}

/*
 * list --chain: one child line per layer under the device's line, top first (as lsblk puts what
 * a device is made of under it): NAME is the layer's file, FORMAT and VSIZE the layer's own,
 * DEPTH its position (1 = base). Paths from sysfs `chain`; formats and sizes from GET_INFO.
 */
static int list_chain_lines(struct libscols_table *tb, struct libscols_line *parent,
			    struct devstate *d, const int *sel, int nsel, bool bytes)
{
	char *paths = d->chain ? strdup(d->chain) : d->backing ? strdup(d->backing) : NULL;
	char **v = NULL, *save = NULL, *tok;
	int nv = 0, i, j, ret = 0;

	if (!paths)
		return 0;
	for (tok = strtok_r(paths, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save)) {
		char **nvv = realloc(v, (nv + 1) * sizeof(*v));

		if (!nvv) {
			ret = -ENOMEM;
			goto out;
		}
		v = nvv;
		v[nv++] = tok;
	}
	for (i = nv - 1; i >= 0; i--) {
		struct libscols_line *ln = scols_table_new_line(tb, parent);
		const struct vdimg_layer_info *li = i < (int)d->nli && d->li ? &d->li[i] : NULL;
		char buf[64];

		if (!ln) {
			ret = -ENOMEM;
			goto out;
		}
		for (j = 0; j < nsel; j++) {
			char *val = NULL;

			switch (sel[j]) {
			case COL_NAME:
			case COL_BACKFILE:
			case COL_CHAIN:
				val = strdup(v[i]);
				break;
			case COL_FORMAT:
				if (li) {
					snprintf(buf, sizeof(buf), "%.15s", li->format_name);
					val = strdup(buf);
				}
				break;
			case COL_VSIZE:
				if (li) {
					if (bytes)
						snprintf(buf, sizeof(buf), "%llu",
							 (unsigned long long)li->virtual_size);
					else
						compact_size(li->virtual_size, buf, sizeof(buf));
					val = strdup(buf);
				}
				break;
			case COL_RO:
				val = strdup(i == nv - 1 && d->ro == 0 ? "0" : "1");
				break;
			case COL_DEPTH:
				snprintf(buf, sizeof(buf), "%d", i + 1);
				val = strdup(buf);
				break;
			}
			if (val && scols_line_refer_data(ln, j, val))
				free(val);
		}
	}
out:
	free(v);
	free(paths);
	return ret;
}

static int list_usage(void)
{
	int i;

	printf("Usage: vdimgctl list [options] [DEV]\n\n"
	       " -l, --list             long listing (accepted for losetup users)\n"
	       " -O, --output COLS      columns to print, comma-separated\n"
	       "     --output-all       every column\n"
	       " -J, --json             JSON output\n"
	       " -n, --noheadings       no header line\n"
	       "     --raw              raw output\n"
	       "     --bytes            sizes in bytes\n"
	       "     --chain            every layer under its device (top first), as a tree\n\n"
	       "Default columns: NAME FORMAT VSIZE RO DIO DEPTH BACK-FILE (with -J also CHAIN).\n"
	       "\nColumns:\n");
	for (i = 0; i < COL_COUNT; i++)
		printf(" %10s  %s\n", cols[i].name, cols[i].help);
	printf("\nFor more details see vdimgctl(8).\n");
	return EXIT_OK;
}

int cmd_list(int argc, char **argv)
{
	enum { OPT_RAW = 256, OPT_BYTES, OPT_ALL, OPT_CHAIN };
	static const struct option opts[] = {
		{ "list", no_argument, NULL, 'l' },
		{ "output", required_argument, NULL, 'O' },
		{ "output-all", no_argument, NULL, OPT_ALL },
		{ "json", no_argument, NULL, 'J' },
		{ "noheadings", no_argument, NULL, 'n' },
		{ "raw", no_argument, NULL, OPT_RAW },
		{ "bytes", no_argument, NULL, OPT_BYTES },
		{ "chain", no_argument, NULL, OPT_CHAIN },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	bool tree = false;
	int sel[COL_COUNT], nsel = 0, c, i, j, n, ctl, status = EXIT_FAIL;
	bool json = false, noheadings = false, raw = false, bytes = false;
	const char *out_arg = NULL;
	struct libscols_table *tb = NULL;
	long only = -1, *idx = NULL;

	while ((c = getopt_long(argc, argv, "lO:Jnh", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			break;
		case 'O':
			out_arg = optarg;
			break;
		case OPT_ALL:
			out_arg = "NAME,FORMAT,VSIZE,RO,DIO,PARTSCAN,AUTOCLEAR,LOG-SEC,DEPTH,CHAIN,BACK-FILE";
			break;
		case 'J':
			json = true;
			break;
		case 'n':
			noheadings = true;
			break;
		case OPT_RAW:
			raw = true;
			break;
		case OPT_BYTES:
			bytes = true;
			break;
		case OPT_CHAIN:
			tree = true;
			break;
		case 'h':
			return list_usage();
		default:
			return usage_error("list", "bad option");
		}
	}
	if (argc - optind > 1)
		return usage_error("list", "at most one device");
	if (optind < argc) {
		only = parse_dev(argv[optind]);
		if (only < 0)
			return usage_error("list", "'%s' is not a vdimg device", argv[optind]);
	}
	if (!out_arg)
		out_arg = json ? "NAME,FORMAT,VSIZE,RO,DIO,DEPTH,CHAIN,BACK-FILE" :
		       "NAME,FORMAT,VSIZE,RO,DIO,DEPTH,BACK-FILE";
	{
		char *s = strdup(out_arg), *save = NULL, *tok;

		for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			for (j = 0; j < COL_COUNT; j++)
				if (!strcasecmp(tok, cols[j].name))
					break;
			if (j == COL_COUNT || nsel == COL_COUNT) {
				usage_error("list", "unknown column '%s'", tok);
				free(s);
				return EXIT_FAIL;
			}
			sel[nsel++] = j;
		}
		free(s);
		if (!nsel)
			return usage_error("list", "no columns");
	}

	n = list_indexes(&idx);
	if (only >= 0) {
		for (i = 0; i < n && idx[i] != only; i++)
			;
		if (i == n) {
			char name[64];

			snprintf(name, sizeof(name), "%s/vdimg%ld", dev_dir(), only);
			errmsg(name, "cannot list", "no such device attached");
			free(idx);
			return EXIT_FAIL;
		}
		idx[0] = only;
		n = 1;
	}
	ctl = open_control(false, true);	/* optional: root only */

	scols_init_debug(0);
	tb = scols_new_table();
	if (!tb)
		goto out;
	scols_table_enable_json(tb, json);
	scols_table_enable_raw(tb, raw);
	scols_table_enable_noheadings(tb, noheadings);
	scols_table_set_name(tb, "vdimgdevices");
	for (i = 0; i < nsel; i++) {
		const struct colinfo *ci = &cols[sel[i]];
		int cflags = ci->flags | (tree && sel[i] == COL_NAME ? SCOLS_FL_TREE : 0);
		struct libscols_column *cl = scols_table_new_column(tb, ci->name, ci->whint,
								     cflags);

		if (!cl)
			goto out;
		if (json) {
			int type = ci->json;

			if (sel[i] == COL_VSIZE && bytes)
				type = SCOLS_JSON_NUMBER;
			scols_column_set_json_type(cl, type);
			if (type == SCOLS_JSON_ARRAY_STRING) {
				/* one array element per line of the cell */
				scols_column_set_flags(cl, ci->flags | SCOLS_FL_WRAP);
				scols_column_set_wrapfunc(cl, scols_wrapnl_chunksize,
							  scols_wrapnl_nextchunk, NULL);
			}
		}
	}
	for (i = 0; i < n; i++) {
		struct libscols_line *ln;
		struct devstate d;

		devstate_fill(&d, idx[i], ctl);
		if (d.state && strcmp(d.state, "bound") && only < 0) {
			devstate_free(&d);	/* being set up or torn down */
			continue;
		}
		ln = scols_table_new_line(tb, NULL);
		if (!ln) {
			devstate_free(&d);
			goto out;
		}
		for (j = 0; j < nsel; j++) {
			char *v = cell(&d, sel[j], bytes, json);

			if (v && scols_line_refer_data(ln, j, v))
				free(v);
		}
		if (tree && list_chain_lines(tb, ln, &d, sel, nsel, bytes))
			goto out;
		devstate_free(&d);
	}
	if (scols_table_get_nlines(tb) || json)
		scols_print_table(tb);
	status = EXIT_OK;
out:
	if (ctl >= 0)
		close(ctl);
	scols_unref_table(tb);
	free(idx);
	return status;
}
