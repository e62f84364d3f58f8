// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl resize: change the virtual size of an image file offline, through the backend's
 * ->resize() tool operation. What every format shares lives here: parsing an absolute or relative
 * size, refusing a shrink that would drop allocated data (unless --force, which discards it first),
 * refusing differencing images of formats whose children must keep their parent's size, and
 * checking afterwards that the image opens with the new size. With --online, the other way: an
 * attached device grows in place through VDIMG_CTL_RESIZE, and the image file is not touched here.
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <getopt.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include "vdimgctl.h"
#include "tool-ops.h"

static int resize_usage(void)
{
	printf("Usage: vdimgctl resize [-t FMT] [--shrink [--force]] IMAGE [+|-]SIZE\n"
	       "       vdimgctl resize --online DEV [+]SIZE\n\n"
	       "Change the virtual size of an image (offline: it must not be attached). SIZE is the\n"
	       "new size, or +N / -N relative to the current one, with an optional K, M, G, T suffix.\n"
	       "A new range reads as zeros. Shrinking needs --shrink and is refused while data is\n"
	       "allocated past the new end, unless --force (that data is then dropped).\n\n"
	       " -t, --format FMT   the image's format (default: probe)\n"
	       "     --shrink       allow making the image smaller\n"
	       "     --force        with --shrink: drop data allocated past the new end\n"
	       "     --online       grow the attached device DEV (/dev/vdimgN) in place, like\n"
	       "                    losetup -c: its top layer grows, the disk's capacity follows\n\n"
	       "See vdimgctl(8).\n");
	return EXIT_OK;
}

/* "10G", "+1G", "-512M" against @cur: 0 with *@out, or -EINVAL / -ERANGE */
static int parse_new_size(const char *s, u64 cur, u64 *out)
{
	unsigned long long v;
	int sign = 0, ret;

	if (*s == '+' || *s == '-')
		sign = *s++ == '+' ? 1 : -1;
	ret = parse_size(s, &v);
	if (ret)
		return ret;
	if (sign > 0 && __builtin_add_overflow(cur, v, out))
		return -ERANGE;
	if (sign < 0) {
		if (v >= cur)
			return -ERANGE;
		*out = cur - v;
	}
	if (!sign)
		*out = v;
	return 0;
}

/*
 * Does @img itself (not its parents) hold data in [@from, @to)? 1 yes, 0 no, or a negative errno.
 * Ranges that read as zeros (ZERO extents) hold none: the backend drops them with the rest.
 */
static int allocated_past(struct vdimg_image *img, u64 from, u64 to)
{
	struct vdimg_extent ext;
	int ret;

	while (from < to) {
		memset(&ext, 0, sizeof(ext));
		ret = img->fmt->map(img, from, to - from, 0, &ext);
		if (ret)
			return ret;
		if (!ext.length || ext.length > to - from)
			return -EIO;
		if (ext.type == VDIMG_EXT_DATA || ext.type == VDIMG_EXT_ENCODED)
			return 1;
		from += ext.length;
	}
	return 0;
}

/*
 * After growing from @old: the part of the old last allocation unit past @old may still hold
 * bytes an earlier shrink left behind; the new range must read as zeros, so zero it.
 */
static int zero_tail(struct vdimg_image *img, u64 old)
{
	u64 end = img->alloc_unit ? ALIGN(old, (u64)img->alloc_unit) : old;
	struct vdimg_extent ext;
	void *z;
	int ret = 0;

	end = min(end, img->size);
	while (!ret && old < end) {
		memset(&ext, 0, sizeof(ext));
		ret = img->fmt->map(img, old, end - old, 0, &ext);
		if (ret)
			break;
		if (!ext.length || ext.length > end - old)
			return -EIO;
		if (ext.type == VDIMG_EXT_ENCODED) {
			vdimg_err(img, "the compressed block at the old end cannot be zeroed");
			return -EOPNOTSUPP;
		}
		if (ext.type == VDIMG_EXT_DATA) {
			z = calloc(1, ext.length);
			if (!z)
				return -ENOMEM;
			ret = vdimg_file_write(ext.file, z, ext.length, ext.file_offset);
			free(z);
		}
		old += ext.length;
	}
	return ret;
}

/*
 * A child grown from @old: the new range must read as zeros, not as what its parent has there
 * (as qemu-img resize does it), so mark it zero in the child where the format can say so.
 */
static int zero_over_parent(struct vdimg_image *img, u64 old)
{
	u64 unit = img->alloc_unit ? img->alloc_unit : 512, from = ALIGN(old, unit);
	int ret = -EOPNOTSUPP;

	if (from < img->size && img->fmt->discard)
		ret = img->fmt->discard(img, from, img->size - from, VDIMG_DISCARD_ZEROES);
	if (from >= img->size || !ret) {
		if (from == old)
			return 0;
		ret = -EOPNOTSUPP;	/* the old last unit's tail */
	}
	if (ret == -EOPNOTSUPP) {
		vdimg_warn(img, "the grown range reads what the parent has there (this %s image cannot mark it zero)",
			   img->fmt->name);
		return 0;
	}
	return ret;
}

static const char *online_reason(int err, const char *fmt)
{
	static char buf[160];

	switch (err) {
	case EPERM:
	case EACCES:
		return "permission denied (online resize needs CAP_SYS_ADMIN)";
	case ENXIO:
		return "no such device attached";
	case EROFS:
		return "the device is read-only";
	case EOPNOTSUPP:
		snprintf(buf, sizeof(buf),
			 "this %s image cannot grow online (dmesg says why; detach, then vdimgctl resize or convert)",
			 fmt ? fmt : "top layer's");
		return buf;
	case EFBIG:
		return "the image's tables cannot address that size in place (dmesg names the limit; detach, then vdimgctl resize or convert)";
	case EINVAL:
		return "refused by the module (see dmesg)";
	case ENOTTY:
		return "this kernel's vdimg has no online resize";
	default:
		return strerror(err);
	}
}

/* resize --online DEV SIZE: VDIMG_CTL_RESIZE on an attached device */
static int resize_online(const char *devarg, const char *arg)
{
	static const char action[] = "cannot resize";
	struct vdimg_features f = { .size = sizeof(f) };
	struct vdimg_dev_info info;
	struct vdimg_resize r;
	char *fmt = NULL, hbuf[32];
	int ctl, status = EXIT_FAIL, ret;
	long idx = parse_dev(devarg);
	u64 size;

	if (idx < 0)
		return usage_error("resize", "'%s' is not a vdimg device", devarg);
	if (*arg == '-')
		return usage_error("resize", "online shrink is not supported");
	ctl = open_control(false, false);
	if (ctl < 0)
		return EXIT_FAIL;
	if (ioctl(ctl, VDIMG_CTL_GET_FEATURES, &f) || f.version < 4) {
		errmsg(devarg, action, "this kernel's vdimg has no online resize");
		goto out;
	}
	memset(&info, 0, sizeof(info));
	info.size = sizeof(info);
	info.index = idx;
	if (ioctl(ctl, VDIMG_CTL_GET_INFO, &info)) {
		errmsg(devarg, action, "%s", online_reason(errno, NULL));
		goto out;
	}
	ret = parse_new_size(arg, info.size_bytes, &size);
	if (ret || !size || size % info.logical_block_size) {
		errmsg(devarg, action, "bad size '%s' (a multiple of the %u-byte sectors is needed)",
		       arg, info.logical_block_size);
		goto out;
	}
	if (size < info.size_bytes) {
		errmsg(devarg, action, "%llu is smaller than the current %llu bytes: online shrink is not supported",
		       (unsigned long long)size, (unsigned long long)info.size_bytes);
		goto out;
	}
	memset(&r, 0, sizeof(r));
	r.size = sizeof(r);
	r.index = idx;
	r.new_size = size;
	if (ioctl(ctl, VDIMG_CTL_RESIZE, &r)) {
		int err = errno;

		fmt = sysfs_attr(idx, "format");
		errmsg(devarg, action, "%s", online_reason(err, fmt));
		goto out;
	}
	printf("%s: %llu bytes (%s)\n", devarg, (unsigned long long)size,
	       human_size(size, hbuf, sizeof(hbuf)));
	status = EXIT_OK;
out:
	free(fmt);
	close(ctl);
	return status;
}

int cmd_resize(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 't' },
		{ "shrink", no_argument, NULL, 's' },
		{ "force", no_argument, NULL, 'f' },
		{ "online", no_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	static const char action[] = "cannot resize";
	u32 format = VDIMG_FMT_AUTO;
	bool shrink = false, force = false, online = false;
	struct vdimg_path_image o;
	const struct vdimg_tool_ops *ops;
	const char *path, *arg;
	char hbuf[32];
	u64 size, old;
	int c, ret;

	while ((c = getopt_long(argc, argv, "+t:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (parse_format("resize", optarg, &format))
				return EXIT_FAIL;
			break;
		case 's':
			shrink = true;
			break;
		case 'f':
			force = true;
			break;
		case 'o':
			online = true;
			break;
		case 'h':
			return resize_usage();
		default:
			return usage_error("resize", "bad option");
		}
	}
	/* options come before IMAGE ("+" above), so a "-1G" after it is the size */
	if (optind != argc - 2)
		return usage_error("resize", "expected IMAGE and SIZE");
	if (force && !shrink)
		return usage_error("resize", "--force only goes with --shrink");
	path = argv[optind];
	arg = argv[optind + 1];
	if (online) {
		if (shrink || format != VDIMG_FMT_AUTO)
			return usage_error("resize", "--online goes with neither --shrink nor -t");
		return resize_online(path, arg);
	}
	if (offline_open(&o, path, format, 0, action))
		return EXIT_FAIL;
	old = o.img.size;
	ret = parse_new_size(arg, old, &size);
	if (ret || !size || size % 512) {
		errmsg(path, action, "bad size '%s' (a positive multiple of 512 bytes is needed)",
		       arg);
		goto fail;
	}
	ops = vdimg_tool_ops(o.img.fmt);
	if (S_ISBLK(o.st.st_mode) && o.img.fmt->id == VDIMG_FMT_RAW) {
		errmsg(path, action,
		       "a raw image on a block device is the whole device: resize the device instead (lvextend, lvreduce)");
		goto fail;
	}
	if (!ops->resize) {
		errmsg(path, action, "%s images cannot be resized", o.img.fmt->name);
		goto fail;
	}
	if ((o.img.flags & VDIMG_IMG_HAS_PARENT) &&
	    (o.img.fmt->caps & VDIMG_CAP_SAME_SIZE_PARENT)) {
		errmsg(path, action, "a differencing %s image must keep its parent's size",
		       o.img.fmt->name);
		goto fail;
	}
	if (size == old) {
		offline_close(&o);
		printf("%s: already %llu bytes\n", path, (unsigned long long)size);
		return EXIT_OK;
	}
	if (size < old) {
		if (!shrink) {
			errmsg(path, action,
			       "%llu is smaller than the current %llu bytes: use --shrink",
			       (unsigned long long)size, (unsigned long long)old);
			goto fail;
		}
		lib_action(action);
		ret = allocated_past(&o.img, size, old);
		if (ret < 0)
			goto fail_errno;
		if (ret && !force) {
			errmsg(path, action, "data is allocated past %s; --force drops it",
			       human_size(size, hbuf, sizeof(hbuf)));
			goto fail;
		}
		/* a best effort: the backend frees what is left past the end itself */
		if (ret && o.img.fmt->discard) {
			ret = o.img.fmt->discard(&o.img, size, old - size, 0);
			if (ret && ret != -EOPNOTSUPP)
				goto fail_errno;
		}
	}
	lib_action(action);
	/*
	 * tests only (selftests/host/test_resize.sh): fail every image write after the first N, as
	 * if the machine stopped there, to show what an interrupted resize leaves
	 */
	if (getenv("VDIMGCTL_TEST_WRITE_CUT"))
		vdimg_write_budget = atoll(getenv("VDIMGCTL_TEST_WRITE_CUT"));
	ret = ops->resize(&o.img, size, size < old ? VDIMG_RESIZE_SHRINK : 0);
	if (!ret && size > old)
		ret = zero_tail(&o.img, old);
	if (!ret && size > old && (o.img.flags & VDIMG_IMG_HAS_PARENT))
		ret = zero_over_parent(&o.img, old);
	if (!ret && o.img.fmt->flush)
		ret = o.img.fmt->flush(&o.img);
	if (!ret)
		ret = vdimg_file_sync(o.img.file);
	if (ret)
		goto fail_errno;
	offline_close(&o);
	vdimg_write_budget = -1;
	/* what the next user will see */
	if (offline_open(&o, path, format, VDIMG_OPEN_READ_ONLY, "resized, but cannot reopen"))
		return EXIT_FAIL;
	if (o.img.size != size) {
		errmsg(path, "resized", "the image reopens with %llu bytes, not %llu",
		       (unsigned long long)o.img.size, (unsigned long long)size);
		goto fail;
	}
	offline_close(&o);
	printf("Image resized.\n");
	return EXIT_OK;
fail_errno:
	if (!lib_reported)
		errmsg(path, action, "%s", strerror(-ret));
fail:
	offline_close(&o);
	vdimg_write_budget = -1;
	return EXIT_FAIL;
}
