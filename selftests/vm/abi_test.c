// SPDX-License-Identifier: GPL-2.0
/*
 * abi_test: the control ABI of /dev/vdimg-control (include/uapi/linux/vdimg.h) from userspace, in
 * the VM. Mostly negatives: sizes, flags, reserved fields, file descriptors, privileges, indexes;
 * plus the positive path they are measured against (attach, info, detach, deferred detach).
 * Prints KTAP; exit 0 when everything passed, 1 otherwise, 4 when the control device is missing.
 *
 *   abi_test WORKDIR      (a directory on a filesystem that supports O_DIRECT)
 *   abi_test probe FILE [ro]   (what the kernel answers to an AUTO attach of FILE)
 *   abi_test snapshot DEV FILE [force]   (what the kernel answers to VDIMG_CTL_SNAPSHOT of FILE)
 *   abi_test chain FILE...     (what the kernel answers to a read-only attach of the chain FILE...)
 *   abi_test failnth attach|detach N FILE...   (one attach or detach with a fault injected, see
 *                              failnth_main; needs a kernel with CONFIG_FAULT_INJECTION)
 *
 * Built statically by the harness (selftests/vm/common.sh), so it runs in the busybox initramfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uapi/linux/vdimg.h>

#define CTL_PATH "/dev/" VDIMG_CONTROL_NAME

static int ctl = -1;
static int nr_tests;
static int nr_failed;

static void result(int ok, const char *fmt, ...)
{
	va_list ap;

	nr_tests++;
	if (!ok)
		nr_failed++;
	printf("%s %d - ", ok ? "ok" : "not ok", nr_tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* expect_errno: the call returned -1 with @want, or (want == 0) succeeded */
static int expect(const char *what, int ret, int err, int want)
{
	if (want == 0) {
		result(ret >= 0, "%s succeeds%s%s", what, ret < 0 ? ": " : "",
		       ret < 0 ? strerror(err) : "");
		return ret >= 0;
	}
	if (ret >= 0) {
		result(0, "%s fails with %s (it succeeded)", what, strerrorname_np(want));
		return 0;
	}
	result(err == want, "%s fails with %s%s%s", what, strerrorname_np(want),
	       err == want ? "" : ", got ", err == want ? "" : strerrorname_np(err));
	return err == want;
}

static int do_ioctl(int fd, unsigned long cmd, void *arg, int *err)
{
	int ret = ioctl(fd, cmd, arg);

	*err = ret < 0 ? errno : 0;
	return ret;
}

static void init_attach(struct vdimg_attach *a, struct vdimg_layer *l, int fd, unsigned int flags)
{
	memset(a, 0, sizeof(*a));
	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->format = VDIMG_FMT_RAW;
	a->size = sizeof(*a);
	a->flags = flags;
	a->index = VDIMG_INDEX_ANY;
	a->nr_layers = 1;
	a->layers = (uintptr_t)l;
	a->layer_size = sizeof(*l);
}

/* attach_expect: one attach that must fail with @want (or succeed, returning the index) */
static int attach_expect(const char *what, struct vdimg_attach *a, int want)
{
	int err, ret = do_ioctl(ctl, VDIMG_CTL_ATTACH, a, &err);

	expect(what, ret, err, want);
	return ret < 0 ? -1 : (int)a->index;
}

static int detach(unsigned int index, unsigned int flags)
{
	struct vdimg_detach d = { .size = sizeof(d), .flags = flags, .index = index };
	int err;

	return do_ioctl(ctl, VDIMG_CTL_DETACH, &d, &err) < 0 ? -err : 0;
}

static int get_info(unsigned int index, struct vdimg_dev_info *info, struct vdimg_layer_info *li,
		    unsigned int cap)
{
	int err;

	memset(info, 0, sizeof(*info));
	info->size = sizeof(*info);
	info->index = index;
	info->layers = (uintptr_t)li;
	info->layers_cap = cap;
	return do_ioctl(ctl, VDIMG_CTL_GET_INFO, info, &err) < 0 ? -err : 0;
}

/* wait_detached: a deferred detach completes when the last opener closes (maybe in a worker) */
static int wait_detached(unsigned int index)
{
	struct vdimg_dev_info info;
	int i;

	for (i = 0; i < 100; i++) {
		if (get_info(index, &info, NULL, 0) == -ENXIO)
			return 1;
		usleep(50000);
	}
	return 0;
}

static int make_file(const char *path, size_t size, int random)
{
	char buf[4096];
	size_t done;
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		return -1;
	for (done = 0; done < size; done += sizeof(buf)) {
		size_t i;

		for (i = 0; i < sizeof(buf); i++)
			buf[i] = random ? (char)(rand() >> 7) : 0;
		if (write(fd, buf, sizeof(buf)) != sizeof(buf)) {
			close(fd);
			return -1;
		}
	}
	close(fd);
	return 0;
}

static void test_features(void)
{
	struct vdimg_features f;
	int err, ret;

	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	ret = do_ioctl(ctl, VDIMG_CTL_GET_FEATURES, &f, &err);
	if (!expect("GET_FEATURES", ret, err, 0))
		return;
	result(f.version == VDIMG_ABI_VERSION, "features: ABI version %u (want %u)", f.version,
	       VDIMG_ABI_VERSION);
	result(f.attach_flags == VDIMG_ATTACH_FLAGS_ALL,
	       "features: attach_flags 0x%llx (want 0x%x)", (unsigned long long)f.attach_flags,
	       VDIMG_ATTACH_FLAGS_ALL);
	result(f.formats & (1ULL << VDIMG_FMT_RAW), "features: raw format built in (formats 0x%llx)",
	       (unsigned long long)f.formats);
	result(!(f.formats & ~((1ULL << VDIMG_FMT_COUNT) - 1) & ~1ULL),
	       "features: no unknown format bits");
	result(f.max_layers >= 1 && f.max_layers <= VDIMG_MAX_LAYERS,
	       "features: max_layers %u in 1..%u", f.max_layers, VDIMG_MAX_LAYERS);
	result(f.max_devices >= 1, "features: max_devices %u >= 1", f.max_devices);
	result(f.layer_flags == VDIMG_LAYER_FLAGS_ALL, "features: layer_flags 0x%llx (want 0x%x)",
	       (unsigned long long)f.layer_flags, VDIMG_LAYER_FLAGS_ALL);
	result(!f.__reserved[0] && !f.__reserved[1] && !f.__reserved[2],
	       "features: reserved fields are zero");

	memset(&f, 0, sizeof(f));
	f.size = VDIMG_FEATURES_SIZE_VER0 - 4;
	ret = do_ioctl(ctl, VDIMG_CTL_GET_FEATURES, &f, &err);
	expect("GET_FEATURES with a short struct", ret, err, EINVAL);
}

static void test_struct_shapes(int fd)
{
	struct vdimg_layer l;
	struct vdimg_attach a;
	unsigned char big[sizeof(struct vdimg_attach) + 16];
	int idx;

	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.size = VDIMG_ATTACH_SIZE_VER0 - 8;
	attach_expect("ATTACH with a short struct (size VER0-8)", &a, EINVAL);

	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.size = 0;
	attach_expect("ATTACH with size 0", &a, EINVAL);

	/* a newer userspace's longer struct: nonzero tail refused, zero tail accepted */
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	memset(big, 0, sizeof(big));
	a.size = sizeof(big);
	memcpy(big, &a, sizeof(a));
	big[sizeof(a) + 3] = 1;
	attach_expect("ATTACH with a longer struct and a nonzero tail", (struct vdimg_attach *)big,
		      E2BIG);
	big[sizeof(a) + 3] = 0;
	idx = attach_expect("ATTACH with a longer struct and a zero tail", (struct vdimg_attach *)big,
			    0);
	if (idx >= 0)
		result(detach(idx, 0) == 0, "DETACH of that device");

	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY | (1U << 31));
	attach_expect("ATTACH with an unknown flag (bit 31)", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY | (VDIMG_ATTACH_FLAGS_ALL + 1));
	attach_expect("ATTACH with the first unknown flag", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.layer_size = VDIMG_LAYER_SIZE_VER0 - 8;
	attach_expect("ATTACH with layer_size below VER0", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.layer_size = 1 << 20;
	attach_expect("ATTACH with a huge layer_size", &a, EINVAL);
	{
		/* a newer userspace's longer layer struct: nonzero tail refused, zero tail accepted */
		unsigned char lbig[sizeof(struct vdimg_layer) + 8];

		init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
		memset(lbig, 0, sizeof(lbig));
		memcpy(lbig, &l, sizeof(l));
		lbig[sizeof(l) + 2] = 1;
		a.layers = (uintptr_t)lbig;
		a.layer_size = sizeof(lbig);
		attach_expect("ATTACH with a longer layer struct and a nonzero tail", &a, E2BIG);
		lbig[sizeof(l) + 2] = 0;
		idx = attach_expect("ATTACH with a longer layer struct and a zero tail", &a, 0);
		if (idx >= 0)
			result(detach(idx, 0) == 0, "DETACH of that device");
	}
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.__reserved[3] = 1;
	attach_expect("ATTACH with nonzero __reserved[3]", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_FLAGS_ALL + 1;
	attach_expect("ATTACH with an unknown layer flag", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.data_fd = fd;
	attach_expect("ATTACH with data_fd but no VDIMG_LAYER_DATA_FILE", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.nr_extents = 1;
	attach_expect("ATTACH with nr_extents but no VDIMG_LAYER_EXTENTS", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_EXTENTS;
	attach_expect("ATTACH with VDIMG_LAYER_EXTENTS and no extents", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_EXTENTS;
	l.nr_extents = VDIMG_MAX_EXTENTS + 1;
	attach_expect("ATTACH with too many extents", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.__pad2 = 1;
	attach_expect("ATTACH with nonzero __pad2", &a, EINVAL);
	{
		/* a raw image has no extent files; a bad pointer is EFAULT */
		__s32 efd = fd;

		init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
		l.flags = VDIMG_LAYER_EXTENTS;
		l.nr_extents = 1;
		l.extent_fds = 8;
		attach_expect("ATTACH with a bad extent_fds pointer", &a, EFAULT);
		l.extent_fds = (uintptr_t)&efd;
		attach_expect("ATTACH with the layer's own file as its extent", &a, EBADF);
	}
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.snapshot = 1;
	attach_expect("ATTACH with snapshot but no VDIMG_LAYER_SNAPSHOT", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_SNAPSHOT;
	attach_expect("ATTACH with VDIMG_LAYER_SNAPSHOT and snapshot 0", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_SNAPSHOT;
	l.snapshot = 1;
	attach_expect("ATTACH of a snapshot of a raw image", &a, EOPNOTSUPP);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_DATA_FILE;
	l.data_fd = memfd_create("abi-data", MFD_CLOEXEC);
	attach_expect("ATTACH of a raw image with a data file", &a, EINVAL);
	close(l.data_fd);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_DATA_FILE;
	l.data_fd = fd;
	attach_expect("ATTACH of an image that is its own data file", &a, ELOOP);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.flags = VDIMG_LAYER_DATA_FILE;
	l.data_fd = 1000;
	attach_expect("ATTACH with a data_fd that is not open", &a, EBADF);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.__pad = 1;
	attach_expect("ATTACH with nonzero layer __pad", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.__reserved[0] = 1;
	attach_expect("ATTACH with nonzero layer __reserved[0]", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	l.format = VDIMG_FMT_COUNT;
	attach_expect("ATTACH with an unknown format id", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.nr_layers = 0;
	attach_expect("ATTACH with nr_layers 0", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.nr_layers = VDIMG_MAX_LAYERS + 1;
	attach_expect("ATTACH with nr_layers VDIMG_MAX_LAYERS+1", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.logical_block_size = 1024;
	attach_expect("ATTACH with logical_block_size 1024", &a, EINVAL);
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	a.layers = 8;
	attach_expect("ATTACH with a bad layers pointer", &a, EFAULT);
}

static void test_fds(const char *dir, const char *file)
{
	struct vdimg_layer l;
	struct vdimg_attach a;
	int dfd, nfd, rofd, pfd[2];

	init_attach(&a, &l, -1, VDIMG_ATTACH_READ_ONLY);
	attach_expect("ATTACH with fd -1", &a, EBADF);
	init_attach(&a, &l, 999, VDIMG_ATTACH_READ_ONLY);
	attach_expect("ATTACH with a closed fd", &a, EBADF);

	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	init_attach(&a, &l, dfd, VDIMG_ATTACH_READ_ONLY);
	attach_expect("ATTACH of a directory", &a, EISDIR);
	close(dfd);

	nfd = open("/dev/null", O_RDWR);
	init_attach(&a, &l, nfd, VDIMG_ATTACH_READ_ONLY);
	attach_expect("ATTACH of a character device", &a, EINVAL);
	close(nfd);

	rofd = open(file, O_RDONLY);
	init_attach(&a, &l, rofd, 0);
	attach_expect("writable ATTACH of an O_RDONLY fd", &a, EBADF);
	close(rofd);

	if (pipe(pfd) == 0) {
		init_attach(&a, &l, pfd[0], VDIMG_ATTACH_READ_ONLY);
		attach_expect("ATTACH of a pipe", &a, EINVAL);
		close(pfd[0]);
		close(pfd[1]);
	}
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pfd) == 0) {
		init_attach(&a, &l, pfd[0], VDIMG_ATTACH_READ_ONLY);
		attach_expect("ATTACH of a socket", &a, EINVAL);
		close(pfd[0]);
		close(pfd[1]);
	}
	/* an O_PATH descriptor opens nothing: the kernel's fget() does not take it */
	rofd = open(file, O_PATH);
	init_attach(&a, &l, rofd, VDIMG_ATTACH_READ_ONLY);
	attach_expect("ATTACH of an O_PATH fd", &a, EBADF);
	close(rofd);
}

static void test_lifecycle(const char *file, const char *junk)
{
	struct vdimg_layer_info li[2];
	struct vdimg_dev_info info;
	struct vdimg_layer l;
	struct vdimg_attach a;
	struct vdimg_detach d;
	char dev[64];
	struct stat st;
	int fd, jfd, idx, idx2, bfd, err, ret;

	fd = open(file, O_RDWR);
	fstat(fd, &st);
	init_attach(&a, &l, fd, 0);
	idx = attach_expect("writable raw ATTACH", &a, 0);
	if (idx < 0) {
		close(fd);
		return;
	}
	ret = get_info(idx, &info, li, 2);
	result(ret == 0, "GET_INFO of the new device (%s)", ret ? strerror(-ret) : "0");
	if (ret == 0) {
		result(info.state == VDIMG_STATE_BOUND, "info: state BOUND (%u)", info.state);
		result(info.nr_layers == 1, "info: nr_layers 1 (%u)", info.nr_layers);
		result(info.size_bytes == (uint64_t)st.st_size, "info: size %llu = file size %lld",
		       (unsigned long long)info.size_bytes, (long long)st.st_size);
		result(!(info.dev_flags & VDIMG_DEV_READ_ONLY), "info: not read-only");
		result(info.logical_block_size == 512, "info: logical_block_size 512 (%u)",
		       info.logical_block_size);
		result(li[0].format == VDIMG_FMT_RAW && !strcmp(li[0].format_name, "raw"),
		       "info: layer 0 format raw (%u, \"%.16s\")", li[0].format, li[0].format_name);
	}

	/* another file, so that the index is what is in use */
	jfd = open(junk, O_RDONLY);
	init_attach(&a, &l, jfd, VDIMG_ATTACH_READ_ONLY);
	a.index = idx;
	attach_expect("ATTACH at an index in use", &a, EBUSY);
	close(jfd);
	/* one writer per file: the file this device writes is nobody else's, not even read-only */
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	attach_expect("read-only ATTACH of a file another device writes", &a, EBUSY);

	memset(&info, 0, sizeof(info));
	info.size = sizeof(info);
	info.index = idx;
	info.flags = 1;
	ret = do_ioctl(ctl, VDIMG_CTL_GET_INFO, &info, &err);
	expect("GET_INFO with nonzero flags", ret, err, EINVAL);
	info.flags = 0;
	info.size = VDIMG_DEV_INFO_SIZE_VER0 - 8;
	ret = do_ioctl(ctl, VDIMG_CTL_GET_INFO, &info, &err);
	expect("GET_INFO with a short struct", ret, err, EINVAL);
	info.size = sizeof(info);
	info.layer_info_size = VDIMG_LAYER_INFO_SIZE_VER0 - 8;
	ret = do_ioctl(ctl, VDIMG_CTL_GET_INFO, &info, &err);
	expect("GET_INFO with layer_info_size below VER0", ret, err, EINVAL);
	{
		/* a newer userspace's longer layer_info: filled, and the tail cleared */
		unsigned char ibig[2][sizeof(struct vdimg_layer_info) + 8];

		memset(ibig, 0xff, sizeof(ibig));
		memset(&info, 0, sizeof(info));
		info.size = sizeof(info);
		info.index = idx;
		info.layers = (uintptr_t)ibig;
		info.layers_cap = 2;
		info.layer_info_size = sizeof(ibig[0]);
		ret = do_ioctl(ctl, VDIMG_CTL_GET_INFO, &info, &err);
		expect("GET_INFO with a longer layer_info", ret, err, 0);
		result(ret == 0 && ((struct vdimg_layer_info *)ibig[0])->format == VDIMG_FMT_RAW &&
		       ibig[0][sizeof(struct vdimg_layer_info)] == 0 &&
		       ibig[0][sizeof(ibig[0]) - 1] == 0 && ibig[1][0] == 0xff,
		       "GET_INFO: longer layer_info filled, tail zeroed, unused entry untouched");
	}

	memset(&d, 0, sizeof(d));
	d.size = VDIMG_DETACH_SIZE_VER0 - 4;
	d.index = idx;
	ret = do_ioctl(ctl, VDIMG_CTL_DETACH, &d, &err);
	expect("DETACH with a short struct", ret, err, EINVAL);
	d.size = sizeof(d);
	d.flags = 1U << 7;
	ret = do_ioctl(ctl, VDIMG_CTL_DETACH, &d, &err);
	expect("DETACH with an unknown flag", ret, err, EINVAL);
	d.flags = 0;
	d.__reserved[0] = 1;
	ret = do_ioctl(ctl, VDIMG_CTL_DETACH, &d, &err);
	expect("DETACH with nonzero __reserved", ret, err, EINVAL);

	/* busy: plain detach refused, deferred detach happens at the last close */
	snprintf(dev, sizeof(dev), "/dev/vdimg%d", idx);
	bfd = open(dev, O_RDONLY);
	result(bfd >= 0, "open %s (%s)", dev, bfd < 0 ? strerror(errno) : "0");
	if (bfd >= 0) {
		result(detach(idx, 0) == -EBUSY, "DETACH of an open device fails with EBUSY");
		result(detach(idx, VDIMG_DETACH_DEFERRED) == 0, "deferred DETACH of an open device");
		result(get_info(idx, &info, NULL, 0) == 0, "the device stays while it is open");
		close(bfd);
		result(wait_detached(idx), "the device goes away at the last close");
	} else {
		detach(idx, 0);
	}
	close(fd);
	result(get_info(idx, &info, NULL, 0) == -ENXIO, "GET_INFO of a detached index fails with ENXIO");
	result(detach(idx, 0) == -ENXIO, "DETACH of an unattached index fails with ENXIO");

	/* an image no format claims: raw only when read-only or forced */
	jfd = open(junk, O_RDWR);
	init_attach(&a, &l, jfd, 0);
	l.format = VDIMG_FMT_AUTO;
	attach_expect("writable AUTO ATTACH of an unrecognised image", &a, EMEDIUMTYPE);
	init_attach(&a, &l, jfd, VDIMG_ATTACH_READ_ONLY);
	l.format = VDIMG_FMT_AUTO;
	idx = attach_expect("read-only AUTO ATTACH of an unrecognised image", &a, 0);
	init_attach(&a, &l, jfd, VDIMG_ATTACH_READ_ONLY);
	l.format = VDIMG_FMT_AUTO;
	idx2 = attach_expect("a second read-only ATTACH of the same file (read-only layers are shared)",
			     &a, 0);
	if (idx2 >= 0)
		result(detach(idx2, 0) == 0, "DETACH");
	init_attach(&a, &l, jfd, VDIMG_ATTACH_FORCE_RAW);
	l.format = VDIMG_FMT_AUTO;
	attach_expect("writable ATTACH of a file another device holds", &a, EBUSY);
	if (idx >= 0) {
		ret = get_info(idx, &info, li, 1);
		result(ret == 0 && (info.dev_flags & VDIMG_DEV_READ_ONLY) && li[0].format == VDIMG_FMT_RAW,
		       "it is raw and read-only");
		result(detach(idx, 0) == 0, "DETACH");
	}
	init_attach(&a, &l, jfd, VDIMG_ATTACH_FORCE_RAW);
	l.format = VDIMG_FMT_AUTO;
	idx2 = attach_expect("FORCE_RAW AUTO ATTACH of an unrecognised image", &a, 0);
	if (idx2 >= 0)
		result(detach(idx2, 0) == 0, "DETACH");
	close(jfd);
}

static int snapshot_ioctl(struct vdimg_snapshot *s, int *err)
{
	return do_ioctl(ctl, VDIMG_CTL_SNAPSHOT, s, err);
}

static void init_snapshot(struct vdimg_snapshot *s, unsigned int index, int fd, unsigned int format)
{
	memset(s, 0, sizeof(*s));
	s->size = sizeof(*s);
	s->index = index;
	s->fd = fd;
	s->format = format;
}

static void snapshot_expect(const char *what, struct vdimg_snapshot *s, int want)
{
	int err, ret = snapshot_ioctl(s, &err);

	expect(what, ret, err, want);
}

/* qemu-img create -f qcow2 -b BACKING -F raw PATH SIZE; 0 on success */
static int make_qcow2_child(const char *path, const char *backing, const char *size)
{
	char cmd[3 * 4096];

	if (access("/usr/bin/qemu-img", X_OK))
		return -1;
	unlink(path);
	snprintf(cmd, sizeof(cmd), "/usr/bin/qemu-img create -q -f qcow2 -b '%s' -F raw '%s' %s",
		 backing, path, size);
	return system(cmd) == 0 ? 0 : -1;
}

/*
 * VDIMG_CTL_SNAPSHOT: struct shapes against a writable raw device, then the refusals that need a
 * real device (ENXIO, EROFS, EBADF, EINVAL, ELOOP) and one successful snapshot with a qcow2 child.
 * Attach refuses the same file twice in one chain (ELOOP).
 */
static void test_snapshot(const char *dir, const char *file)
{
	unsigned char big[sizeof(struct vdimg_snapshot) + 16];
	char child[4096], bigchild[4096];
	struct vdimg_layer_info li[3];
	struct vdimg_dev_info info;
	struct vdimg_layer ll[2];
	struct vdimg_snapshot s;
	struct vdimg_attach a;
	struct vdimg_layer l;
	int fd, fd2, rofd, cfd, idx, err, ret;

	snprintf(child, sizeof(child), "%s/snap-child.qcow2", dir);
	snprintf(bigchild, sizeof(bigchild), "%s/snap-big.qcow2", dir);
	fd = open(file, O_RDWR);
	fd2 = open(file, O_RDONLY);

	/* attach: the same file twice in one chain (two fds, one inode) */
	init_attach(&a, &ll[0], fd2, VDIMG_ATTACH_READ_ONLY);
	memset(&ll[1], 0, sizeof(ll[1]));
	ll[1].fd = fd;
	ll[1].format = VDIMG_FMT_RAW;
	a.nr_layers = 2;
	idx = attach_expect("ATTACH of a chain holding the same file twice", &a, ELOOP);
	if (idx >= 0)
		detach(idx, 0);

	init_attach(&a, &l, fd, 0);
	idx = attach_expect("ATTACH writable raw device for SNAPSHOT", &a, 0);
	if (idx < 0)
		goto out;

	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.size = VDIMG_SNAPSHOT_SIZE_VER0 - 8;
	snapshot_expect("SNAPSHOT with a short struct (size VER0-8)", &s, EINVAL);
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.size = 0;
	snapshot_expect("SNAPSHOT with size 0", &s, EINVAL);
	memset(big, 0, sizeof(big));
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.size = sizeof(big);
	memcpy(big, &s, sizeof(s));
	big[sizeof(s) + 3] = 1;
	ret = do_ioctl(ctl, VDIMG_CTL_SNAPSHOT, big, &err);
	expect("SNAPSHOT with a nonzero tail beyond the known struct", ret, err, E2BIG);
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.flags = 1U << 31;
	snapshot_expect("SNAPSHOT with an unknown flag", &s, EINVAL);
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.__pad = 1;
	snapshot_expect("SNAPSHOT with nonzero __pad", &s, EINVAL);
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.__reserved[3] = 1;
	snapshot_expect("SNAPSHOT with nonzero __reserved", &s, EINVAL);
	init_snapshot(&s, idx, fd, VDIMG_FMT_COUNT);
	snapshot_expect("SNAPSHOT with an unknown format", &s, EINVAL);
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.layer_flags = VDIMG_LAYER_SNAPSHOT;
	snapshot_expect("SNAPSHOT with layer flag LAYER_SNAPSHOT", &s, EINVAL);
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	s.data_fd = fd;
	snapshot_expect("SNAPSHOT with a data_fd but no LAYER_DATA_FILE", &s, EINVAL);

	init_snapshot(&s, 4000000, fd, VDIMG_FMT_RAW);
	snapshot_expect("SNAPSHOT of an index not attached", &s, ENXIO);
	init_snapshot(&s, idx, -1, VDIMG_FMT_AUTO);
	snapshot_expect("SNAPSHOT with fd -1", &s, EBADF);
	rofd = open(file, O_RDONLY);
	init_snapshot(&s, idx, rofd, VDIMG_FMT_AUTO);
	snapshot_expect("SNAPSHOT with an O_RDONLY fd", &s, EBADF);
	close(rofd);
	init_snapshot(&s, idx, fd, VDIMG_FMT_RAW);
	snapshot_expect("SNAPSHOT with the top's own file", &s, ELOOP);

	if (make_qcow2_child(child, file, "1M") || make_qcow2_child(bigchild, file, "2M")) {
		result(1, "SNAPSHOT with qcow2 children # SKIP qemu-img cannot create them");
		detach(idx, 0);
		goto out;
	}
	/* a raw file is not a differencing image (the junk next to it, as raw) */
	cfd = open(child, O_RDWR);
	init_snapshot(&s, idx, cfd, VDIMG_FMT_RAW);
	snapshot_expect("SNAPSHOT with a non-differencing image", &s, EINVAL);
	close(cfd);
	cfd = open(bigchild, O_RDWR);
	init_snapshot(&s, idx, cfd, VDIMG_FMT_AUTO);
	snapshot_expect("SNAPSHOT with a child of another size", &s, EINVAL);
	close(cfd);
	cfd = open(child, O_RDWR);
	init_snapshot(&s, idx, cfd, VDIMG_FMT_AUTO);
	snapshot_expect("SNAPSHOT with a qcow2 child of the raw top", &s, 0);
	memset(li, 0, sizeof(li));
	ret = get_info(idx, &info, li, 3);
	result(!ret && info.nr_layers == 2 && li[1].format == VDIMG_FMT_QCOW2 &&
	       (li[0].flags & VDIMG_LAYERI_READ_ONLY) && !(li[1].flags & VDIMG_LAYERI_READ_ONLY),
	       "GET_INFO after SNAPSHOT: 2 layers, the old top read-only, qcow2 on top (%d, %u layers)",
	       ret, info.nr_layers);
	init_snapshot(&s, idx, cfd, VDIMG_FMT_AUTO);
	snapshot_expect("SNAPSHOT with the file that is already the top", &s, ELOOP);
	close(cfd);
	result(detach(idx, 0) == 0, "DETACH after SNAPSHOT");

	/* a read-only device cannot take a snapshot */
	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	idx = attach_expect("ATTACH read-only raw device for SNAPSHOT", &a, 0);
	if (idx >= 0) {
		cfd = open(child, O_RDWR);
		init_snapshot(&s, idx, cfd, VDIMG_FMT_AUTO);
		snapshot_expect("SNAPSHOT of a read-only device", &s, EROFS);
		close(cfd);
		detach(idx, 0);
	}
	unlink(child);
	unlink(bigchild);
out:
	close(fd);
	close(fd2);
}

static void init_resize(struct vdimg_resize *r, unsigned int index, unsigned long long new_size)
{
	memset(r, 0, sizeof(*r));
	r->size = sizeof(*r);
	r->index = index;
	r->new_size = new_size;
}

static void resize_expect(const char *what, struct vdimg_resize *r, int want)
{
	int err, ret = do_ioctl(ctl, VDIMG_CTL_RESIZE, r, &err);

	expect(what, ret, err, want);
}

/*
 * VDIMG_CTL_RESIZE: struct shapes and refusals against a writable raw device of 1 MiB (a copy of
 * @file, so the other tests keep theirs), then one grow seen by GET_INFO, the file and the disk's
 * capacity; a read-only device refuses (EROFS).
 */
static void test_resize(const char *dir)
{
	unsigned char big[sizeof(struct vdimg_resize) + 16];
	struct vdimg_dev_info info;
	struct vdimg_resize r;
	struct vdimg_attach a;
	struct vdimg_layer l;
	char path[4096], sysf[128], buf[64] = "";
	int fd, idx, err, ret, sfd;
	struct stat st;

	snprintf(path, sizeof(path), "%s/resize.img", dir);
	if (make_file(path, 1 << 20, 1)) {
		result(0, "RESIZE: create %s", path);
		return;
	}
	fd = open(path, O_RDWR);
	init_attach(&a, &l, fd, 0);
	idx = attach_expect("ATTACH writable raw device for RESIZE", &a, 0);
	if (idx < 0)
		goto out;
	init_resize(&r, idx, 2 << 20);
	r.size = VDIMG_RESIZE_SIZE_VER0 - 8;
	resize_expect("RESIZE with a short struct (size VER0-8)", &r, EINVAL);
	init_resize(&r, idx, 2 << 20);
	r.size = 0;
	resize_expect("RESIZE with size 0", &r, EINVAL);
	memset(big, 0, sizeof(big));
	init_resize(&r, idx, 2 << 20);
	r.size = sizeof(big);
	memcpy(big, &r, sizeof(r));
	big[sizeof(r) + 5] = 1;
	ret = do_ioctl(ctl, VDIMG_CTL_RESIZE, big, &err);
	expect("RESIZE with a nonzero tail beyond the known struct", ret, err, E2BIG);
	init_resize(&r, idx, 2 << 20);
	r.flags = 1;
	resize_expect("RESIZE with nonzero flags", &r, EINVAL);
	init_resize(&r, idx, 2 << 20);
	r.__pad = 1;
	resize_expect("RESIZE with nonzero __pad", &r, EINVAL);
	init_resize(&r, idx, 2 << 20);
	r.__reserved[3] = 1;
	resize_expect("RESIZE with nonzero __reserved", &r, EINVAL);
	init_resize(&r, 4000000, 2 << 20);
	resize_expect("RESIZE of an index not attached", &r, ENXIO);
	init_resize(&r, idx, 512 << 10);
	resize_expect("RESIZE to a smaller size (online shrink)", &r, EINVAL);
	init_resize(&r, idx, (2 << 20) + 100);
	resize_expect("RESIZE to a size that is not a multiple of the sector size", &r, EINVAL);
	init_resize(&r, idx, 1ULL << 63);
	resize_expect("RESIZE to 2^63 bytes", &r, EINVAL);
	init_resize(&r, idx, 1 << 20);
	resize_expect("RESIZE to the current size (nothing to do)", &r, 0);
	init_resize(&r, idx, 2 << 20);
	resize_expect("RESIZE raw 1 MiB -> 2 MiB", &r, 0);
	ret = get_info(idx, &info, NULL, 0);
	result(!ret && info.size_bytes == 2 << 20, "GET_INFO after RESIZE: %llu bytes",
	       (unsigned long long)info.size_bytes);
	result(!fstat(fd, &st) && st.st_size == 2 << 20, "the raw file grew to %lld bytes",
	       (long long)st.st_size);
	snprintf(sysf, sizeof(sysf), "/sys/block/vdimg%d/size", idx);
	sfd = open(sysf, O_RDONLY);
	if (sfd >= 0) {
		ret = read(sfd, buf, sizeof(buf) - 1);
		buf[ret > 0 ? ret : 0] = 0;
		close(sfd);
	}
	result(atoll(buf) == 4096, "the disk's capacity is 4096 sectors (%s)", buf);
	result(detach(idx, 0) == 0, "DETACH after RESIZE");

	init_attach(&a, &l, fd, VDIMG_ATTACH_READ_ONLY);
	idx = attach_expect("ATTACH read-only raw device for RESIZE", &a, 0);
	if (idx >= 0) {
		init_resize(&r, idx, 4 << 20);
		resize_expect("RESIZE of a read-only device", &r, EROFS);
		detach(idx, 0);
	}
out:
	close(fd);
	unlink(path);
}

/* the same requests from an unprivileged process (uid 65534, no capabilities) */
static void test_unprivileged(const char *file)
{
	struct vdimg_layer l;
	struct vdimg_attach a;
	struct vdimg_features f;
	struct vdimg_dev_info info;
	int fd = open(file, O_RDWR), status, pfd[2];
	pid_t pid;

	if (pipe(pfd))
		return;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct vdimg_snapshot s;
		struct vdimg_resize r;
		int err, ret, res[5];

		close(pfd[0]);
		if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			_exit(2);
		init_attach(&a, &l, fd, 0);
		ret = do_ioctl(ctl, VDIMG_CTL_ATTACH, &a, &err);
		res[0] = ret < 0 ? err : 0;
		ret = detach(0, 0);
		res[1] = -ret;
		memset(&f, 0, sizeof(f));
		f.size = sizeof(f);
		ret = do_ioctl(ctl, VDIMG_CTL_GET_FEATURES, &f, &err);
		res[2] = ret < 0 ? err : 0;
		init_snapshot(&s, 0, fd, VDIMG_FMT_AUTO);
		ret = snapshot_ioctl(&s, &err);
		res[3] = ret < 0 ? err : 0;
		init_resize(&r, 0, 1ULL << 30);
		ret = do_ioctl(ctl, VDIMG_CTL_RESIZE, &r, &err);
		res[4] = ret < 0 ? err : 0;
		if (write(pfd[1], res, sizeof(res)) != sizeof(res))
			_exit(3);
		_exit(0);
	}
	close(pfd[1]);
	{
		int res[5] = { -1, -1, -1, -1, -1 };
		ssize_t n = read(pfd[0], res, sizeof(res));

		waitpid(pid, &status, 0);
		if (n != sizeof(res)) {
			result(0, "unprivileged child ran (status %d)", status);
		} else {
			result(res[0] == EPERM, "unprivileged ATTACH fails with EPERM (%s)",
			       res[0] ? strerrorname_np(res[0]) : "succeeded");
			result(res[1] == EPERM, "unprivileged DETACH fails with EPERM (%s)",
			       res[1] ? strerrorname_np(res[1]) : "succeeded");
			result(res[2] == 0, "unprivileged GET_FEATURES is allowed (%s)",
			       res[2] ? strerrorname_np(res[2]) : "0");
			result(res[3] == EPERM, "unprivileged SNAPSHOT fails with EPERM (%s)",
			       res[3] ? strerrorname_np(res[3]) : "succeeded");
			result(res[4] == EPERM, "unprivileged RESIZE fails with EPERM (%s)",
			       res[4] ? strerrorname_np(res[4]) : "succeeded");
		}
	}
	close(pfd[0]);

	/* root of a new user namespace is not CAP_SYS_ADMIN where the module checks it */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		int err, ret;

		if (unshare(CLONE_NEWUSER))
			_exit(100);
		init_attach(&a, &l, fd, 0);
		ret = do_ioctl(ctl, VDIMG_CTL_ATTACH, &a, &err);
		_exit(ret < 0 ? (err & 0x7f) : 0);
	}
	waitpid(pid, &status, 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 100)
		result(1, "ATTACH from a user namespace # SKIP unshare(CLONE_NEWUSER) failed");
	else
		result(WIFEXITED(status) && WEXITSTATUS(status) == EPERM,
		       "ATTACH by root of a new user namespace fails with EPERM (exit %d)",
		       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	{
		struct stat st = { 0 };

		result(stat("/dev/vdimg-control", &st) == 0 && st.st_uid == 0 &&
		       (st.st_mode & 0077) == 0,
		       "/dev/vdimg-control is root's alone (mode %o)", st.st_mode & 07777);
	}
	close(fd);
	(void)info;
}

/*
 * abi_test probe FILE [ro]: one AUTO-format attach straight through the ioctl (no userspace probe),
 * prints "errno NAME" or "attached FORMAT", and detaches again. Lets the shell tests see what the
 * kernel itself answers for a given image.
 */
static int probe_main(const char *file, int ro)
{
	struct vdimg_layer_info li;
	struct vdimg_dev_info info;
	struct vdimg_layer l;
	struct vdimg_attach a;
	int fd, err, ret;

	fd = open(file, ro ? O_RDONLY : O_RDWR);
	if (fd < 0) {
		printf("open %s: %s\n", file, strerror(errno));
		return 1;
	}
	init_attach(&a, &l, fd, ro ? VDIMG_ATTACH_READ_ONLY : 0);
	l.format = VDIMG_FMT_AUTO;
	ret = do_ioctl(ctl, VDIMG_CTL_ATTACH, &a, &err);
	if (ret < 0) {
		printf("errno %s\n", strerrorname_np(err));
		return 0;
	}
	memset(&li, 0, sizeof(li));
	get_info(a.index, &info, &li, 1);
	printf("attached %.16s\n", li.format_name);
	return detach(a.index, 0) ? 1 : 0;
}

/*
 * abi_test snapshot DEV FILE [force]: one VDIMG_CTL_SNAPSHOT of FILE (opened read-write, format
 * probed) onto /dev/vdimgN, prints "ok" or "errno NAME".
 */
static int snapshot_main(const char *devname, const char *file, int force)
{
	const char *p = strrchr(devname, '/');
	struct vdimg_snapshot s;
	int fd, err, ret;

	p = p ? p + 1 : devname;
	if (!strncmp(p, "vdimg", 5))
		p += 5;
	fd = open(file, O_RDWR);
	if (fd < 0) {
		printf("open %s: %s\n", file, strerror(errno));
		return 1;
	}
	init_snapshot(&s, (unsigned int)strtoul(p, NULL, 10), fd, VDIMG_FMT_AUTO);
	if (force)
		s.flags = VDIMG_SNAPSHOT_FORCE_LINK;
	ret = snapshot_ioctl(&s, &err);
	if (ret < 0)
		printf("errno %s\n", strerrorname_np(err));
	else
		printf("ok\n");
	close(fd);
	return 0;
}

/*
 * abi_test chain FILE...: one read-only attach of the chain FILE... (base first, formats probed)
 * straight through the ioctl, prints "errno NAME" or "attached N", and detaches again.
 */
static int chain_main(int n, char **files)
{
	struct vdimg_layer l[16];
	struct vdimg_attach a;
	int i, err, ret;

	if (n < 1 || n > 16)
		return 2;
	memset(l, 0, sizeof(l));
	for (i = 0; i < n; i++) {
		l[i].fd = open(files[i], O_RDONLY);
		if (l[i].fd < 0) {
			printf("open %s: %s\n", files[i], strerror(errno));
			return 1;
		}
	}
	init_attach(&a, &l[0], l[0].fd, VDIMG_ATTACH_READ_ONLY);
	l[0].format = VDIMG_FMT_AUTO;
	a.layers = (uintptr_t)l;
	a.nr_layers = n;
	ret = do_ioctl(ctl, VDIMG_CTL_ATTACH, &a, &err);
	if (ret < 0) {
		printf("errno %s\n", strerrorname_np(err));
		return 0;
	}
	printf("attached %d\n", n);
	return detach(a.index, 0) ? 1 : 0;
}

/* set_fail_nth: make the @n-th fault-injection point of this task fail (0: none) */
static int set_fail_nth(int fd, unsigned int n)
{
	char buf[16];
	int len = snprintf(buf, sizeof(buf), "%u", n);

	return pwrite(fd, buf, len, 0) == len ? 0 : -1;
}

/* fail_nth_left: what the countdown set by set_fail_nth() has left (0: the fault was injected) */
static unsigned int fail_nth_left(int fd)
{
	char buf[16] = "";

	if (pread(fd, buf, sizeof(buf) - 1, 0) <= 0)
		return ~0U;
	return (unsigned int)strtoul(buf, NULL, 10);
}

/* dev_rw: @len bytes at offset 0 of /dev/vdimg@index, direct I/O; 0 or -errno */
static int dev_rw(unsigned int index, void *buf, size_t len, int write)
{
	char path[64];
	ssize_t n;
	int fd, i;

	snprintf(path, sizeof(path), "/dev/vdimg%u", index);
	for (i = 0; i < 100; i++) {	/* devtmpfs creates the node asynchronously */
		fd = open(path, (write ? O_RDWR : O_RDONLY) | O_DIRECT);
		if (fd >= 0 || errno != ENOENT)
			break;
		usleep(20000);
	}
	if (fd < 0)
		return -errno;
	n = write ? pwrite(fd, buf, len, 0) : pread(fd, buf, len, 0);
	i = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
	close(fd);
	return i;
}

/*
 * abi_test failnth attach|detach N FILE...: one ioctl with the N-th fault-injection point of this
 * task failing (/proc/thread-self/fail-nth, written right before the ioctl; failslab and
 * fail_page_alloc must be set to act on sleeping allocations). The chain FILE... (base first,
 * formats probed) is attached read-write.
 *  - attach: the ATTACH ioctl under the fault. When it succeeds, 64 KiB written at offset 0
 *    must read back, and the device detaches.
 *  - detach: a clean attach, 64 KiB written at offset 0 (no flush: the detach's final flush has
 *    metadata to write), then the DETACH ioctl under the fault. When it fails the device must
 *    still be there and detach cleanly on a second try. Either way a new attach must read the
 *    64 KiB back (data the detach reported as written must not be lost).
 * Prints one line: "injected|clean attach|detach ok|errno NAME ..." (a clean run also says how
 * many fault-injection points the ioctl passed: "(N points)") and exits 0 when everything held, 1
 * when something that must hold did not (the line says what), 3 when setting up failed.
 */
static int failnth_main(const char *mode, unsigned int nth, int n, char **files)
{
	int attach_mode = !strcmp(mode, "attach");
	struct vdimg_layer l[16];
	int i, err, ret, hit, fnth, rc = 0;
	unsigned int left;
	unsigned char *buf, *back;
	struct vdimg_attach a;
	const size_t len = 65536;

	if (n < 1 || n > 16 || (!attach_mode && strcmp(mode, "detach")))
		return 2;
	fnth = open("/proc/thread-self/fail-nth", O_RDWR);
	if (fnth < 0) {
		printf("setup: /proc/thread-self/fail-nth: %s\n", strerror(errno));
		return 3;
	}
	if (posix_memalign((void **)&buf, 4096, len) || posix_memalign((void **)&back, 4096, len))
		return 3;
	for (i = 0; i < (int)len; i++)
		buf[i] = (unsigned char)(i * 7 + nth);
	memset(l, 0, sizeof(l));
	for (i = 0; i < n; i++) {
		l[i].fd = open(files[i], O_RDWR);
		l[i].format = VDIMG_FMT_AUTO;
		if (l[i].fd < 0) {
			printf("setup: open %s: %s\n", files[i], strerror(errno));
			return 3;
		}
	}
	init_attach(&a, &l[0], l[0].fd, 0);
	l[0].format = VDIMG_FMT_AUTO;
	a.layers = (uintptr_t)l;
	a.nr_layers = n;

	if (!attach_mode) {
		if (do_ioctl(ctl, VDIMG_CTL_ATTACH, &a, &err) < 0) {
			printf("setup: attach: %s\n", strerrorname_np(err));
			return 3;
		}
		ret = dev_rw(a.index, buf, len, 1);
		if (ret) {
			printf("setup: write: %s\n", strerrorname_np(-ret));
			return 3;
		}
	}
	/* from here to the ioctl nothing but the ioctl enters the kernel */
	if (set_fail_nth(fnth, nth)) {
		printf("setup: fail-nth: %s\n", strerror(errno));
		return 3;
	}
	if (attach_mode) {
		ret = do_ioctl(ctl, VDIMG_CTL_ATTACH, &a, &err);
	} else {
		struct vdimg_detach d = { .size = sizeof(d), .index = a.index };

		ret = do_ioctl(ctl, VDIMG_CTL_DETACH, &d, &err);
	}
	left = fail_nth_left(fnth);
	hit = left == 0;
	set_fail_nth(fnth, 0);
	printf("%s %s %s", hit ? "injected" : "clean", mode, ret < 0 ? "errno" : "ok");
	if (ret < 0)
		printf(" %s", strerrorname_np(err));
	if (!hit && left <= nth)
		printf(" (%u points)", nth - left);
	if (ret < 0 && !hit) {
		printf(", fails with no fault injected\n");
		return 1;
	}

	if (attach_mode) {
		if (ret < 0) {
			printf("\n");
			return 0;
		}
		ret = dev_rw(a.index, buf, len, 1);
		if (!ret)
			ret = dev_rw(a.index, back, len, 0);
		if (ret || memcmp(buf, back, len)) {
			printf(", but the device does not read back what was written (%s)",
			       ret ? strerrorname_np(-ret) : "differs");
			rc = 1;
		}
		ret = detach(a.index, 0);
		if (ret) {
			printf(", then detach fails: %s", strerrorname_np(-ret));
			rc = 1;
		}
		printf("\n");
		return rc;
	}

	/* detach mode: a failed detach leaves the device usable and detachable */
	if (ret < 0) {
		ret = detach(a.index, 0);
		if (ret) {
			printf(", then a clean detach fails too: %s\n", strerrorname_np(-ret));
			return 1;
		}
		printf(", clean detach ok");
	}
	for (i = 0; i < n; i++)
		l[i].format = VDIMG_FMT_AUTO;
	init_attach(&a, &l[0], l[0].fd, VDIMG_ATTACH_READ_ONLY);
	l[0].format = VDIMG_FMT_AUTO;
	a.layers = (uintptr_t)l;
	a.nr_layers = n;
	if (do_ioctl(ctl, VDIMG_CTL_ATTACH, &a, &err) < 0) {
		printf(", but the image does not attach again: %s\n", strerrorname_np(err));
		return 1;
	}
	ret = dev_rw(a.index, back, len, 0);
	if (ret || memcmp(buf, back, len)) {
		printf(", but the data written before the detach is lost (%s)",
		       ret ? strerrorname_np(-ret) : "differs");
		rc = 1;
	}
	if (detach(a.index, 0)) {
		printf(", and the re-attached device does not detach");
		rc = 1;
	}
	printf("\n");
	return rc;
}

int main(int argc, char **argv)
{
	char file[4096], junk[4096];
	struct stat st;
	int fd, err, ret;
	struct vdimg_attach a;

	if (argc < 2 || (argc > 2 && strcmp(argv[1], "probe") && strcmp(argv[1], "snapshot") &&
			 strcmp(argv[1], "chain") && strcmp(argv[1], "failnth"))) {
		fprintf(stderr, "usage: %s WORKDIR | probe FILE [ro] | snapshot DEV FILE [force] | chain FILE... | failnth attach|detach N FILE...\n",
			argv[0]);
		return 2;
	}
	ctl = open(CTL_PATH, O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		printf("SKIP: %s: %s\n", CTL_PATH, strerror(errno));
		return 4;
	}
	if (!strcmp(argv[1], "probe") && argc > 2)
		return probe_main(argv[2], argc > 3 && !strcmp(argv[3], "ro"));
	if (!strcmp(argv[1], "chain"))
		return chain_main(argc - 2, argv + 2);
	if (!strcmp(argv[1], "failnth") && argc > 4)
		return failnth_main(argv[2], (unsigned int)strtoul(argv[3], NULL, 10), argc - 4,
				    argv + 4);
	if (!strcmp(argv[1], "snapshot") && argc > 3)
		return snapshot_main(argv[2], argv[3], argc > 4 && !strcmp(argv[4], "force"));
	printf("KTAP version 1\n");
	snprintf(file, sizeof(file), "%s/abi.img", argv[1]);
	snprintf(junk, sizeof(junk), "%s/junk.img", argv[1]);
	srand(1);
	if (make_file(file, 1 << 20, 0) || make_file(junk, 1 << 20, 1)) {
		printf("FATAL: cannot create files in %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	memset(&st, 0, sizeof(st));
	stat(CTL_PATH, &st);
	result(S_ISCHR(st.st_mode) && (st.st_mode & 07777) == 0600,
	       "%s is a character device with mode 0600 (%o)", CTL_PATH, st.st_mode & 07777);

	test_features();
	ret = do_ioctl(ctl, _IOWR(VDIMG_IOC_MAGIC, 0x7f, struct vdimg_attach), &a, &err);
	expect("an unknown vdimg ioctl", ret, err, ENOTTY);
	ret = do_ioctl(ctl, _IO('x', 1), NULL, &err);
	expect("a foreign ioctl", ret, err, ENOTTY);

	fd = open(file, O_RDWR);
	test_struct_shapes(fd);
	close(fd);
	test_fds(argv[1], file);
	test_lifecycle(file, junk);
	test_unprivileged(file);
	test_snapshot(argv[1], file);
	test_resize(argv[1]);

	printf("1..%d\n", nr_tests);
	return nr_failed ? 1 : 0;
}
