// SPDX-License-Identifier: GPL-2.0
/*
 * The userspace data path of libvdimg (see chain.h): opens a chain of image files and moves data
 * through the backend contract exactly as the kernel driver does, so that every backend can be
 * unit-tested, fuzzed and crash-tested on the host, and the tool can copy data out of a chain.
 * Backends only map; this file reads and writes the bytes. It trusts no extent a backend returns:
 * an extent that does not describe a prefix of the asked range fails the request with -EIO.
 */
#include <ctype.h>
#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <linux/loop.h>
#include "chain.h"

/* ---- the allocation-unit range lock (drivers/io.c vdimg_lock_units) ---- */

struct chain_range {
	u64 start, end;
	struct chain_range *next;
};

static bool chain_lock_units(struct vdimg_chain *c, struct chain_range *r, u64 pos, u64 len)
{
	u32 unit = c->layers[c->rw]->alloc_unit;
	struct chain_range *o;

	if (!unit)
		return false;
	r->start = pos - pos % unit;
	r->end = pos + len + (unit - (pos + len) % unit) % unit;
	pthread_mutex_lock(&c->range_mutex);
again:
	for (o = c->ranges; o; o = o->next) {
		if (o->start < r->end && r->start < o->end) {
			pthread_cond_wait(&c->range_cond, &c->range_mutex);
			goto again;
		}
	}
	r->next = c->ranges;
	c->ranges = r;
	pthread_mutex_unlock(&c->range_mutex);
	return true;
}

static void chain_unlock_units(struct vdimg_chain *c, struct chain_range *r)
{
	struct chain_range **pp;

	pthread_mutex_lock(&c->range_mutex);
	for (pp = (struct chain_range **)&c->ranges; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	pthread_cond_broadcast(&c->range_cond);
	pthread_mutex_unlock(&c->range_mutex);
}

/* ---- opening ---- */

static char *resolve_relative(const char *child, const char *rel);

int vdimg_data_file_path(struct vdimg_image *img, const char *image_path, char **path)
{
	char *buf;
	int ret;

	*path = NULL;
	if (!img->fmt || !vdimg_tool_ops(img->fmt)->data_file_ref || !(img->fmt->caps & VDIMG_CAP_DATA_FILE))
		return 0;
	buf = calloc(1, 4096);
	if (!buf)
		return -ENOMEM;
	ret = vdimg_tool_ops(img->fmt)->data_file_ref(img, buf, 4096);
	if (ret == -ENOENT) {
		ret = 0;
	} else if (!ret) {
		*path = resolve_relative(image_path, buf);
		if (!*path)
			ret = -ENOMEM;
	}
	free(buf);
	return ret;
}

/*
 * The data file of the image in @f, found by a read-only open of the metadata alone (a backend
 * with VDIMG_CAP_DATA_FILE allows that in userspace). 0 with *@path NULL when there is none or
 * the format has none; a broken image is left for the real open to report.
 */
static int data_file_of(struct vdimg_file *f, const char *image_path,
			const struct vdimg_format *fmt, u32 format, char **path)
{
	struct vdimg_image tmp;
	const char *why;
	int ret;

	*path = NULL;
	if (!fmt) {
		if (format == VDIMG_FMT_AUTO && vdimg_probe(f, &format, &why))
			return 0;
		fmt = vdimg_format_by_id(format);
	}
	if (!fmt || !vdimg_tool_ops(fmt)->data_file_ref || !(fmt->caps & VDIMG_CAP_DATA_FILE))
		return 0;
	memset(&tmp, 0, sizeof(tmp));
	tmp.file = f;
	tmp.name = image_path;
	tmp.fmt = fmt;
	if (fmt->open(&tmp, VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_HAS_CHILD))
		return 0;
	ret = vdimg_data_file_path(&tmp, image_path, path);
	fmt->close(&tmp);
	return ret;
}

int vdimg_image_data_file(const char *image_path, u32 format, char **path)
{
	struct vdimg_file *f;
	int fd, ret;

	*path = NULL;
	fd = open(image_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		struct vdimg_image tmp = { .name = image_path };

		ret = -errno;
		vdimg_err(&tmp, "cannot open: %s", strerror(-ret));
		return ret;
	}
	f = vdimg_file_from_fd(fd);
	ret = f ? data_file_of(f, image_path, NULL, format, path) : -ENOMEM;
	vdimg_file_free(f);
	close(fd);
	return ret;
}

/*
 * A file name read from an image or its descriptor (a VMDK extent, a Parallels bundle part): only
 * a name in the descriptor's directory tree (not absolute, no ".." component), so that a hostile
 * descriptor cannot make a privileged caller open (and let a guest write) an arbitrary file.
 */
bool vdimg_inner_name_ok(const char *name)
{
	const char *p = name;

	if (!*name || *name == '/')
		return false;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		p += n;
		while (*p == '/')
			p++;
	}
	return true;
}

int vdimg_image_open_extents(struct vdimg_image *img, u32 format, bool writable)
{
	return vdimg_image_open_extents_dev(img, format, writable, false);
}

/*
 * An absolute extent path is opened only with @devices, and only when it names a block device
 * (a VMDK raw-device mapping): a hostile descriptor must not make a root attach open any file.
 */
static int open_device_extent(struct vdimg_image *img, const char *path, bool rw)
{
	struct stat st;
	int fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC), ret;

	if (fd < 0) {
		ret = -errno;
		vdimg_err(img, "cannot open its device extent %s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st) || !S_ISBLK(st.st_mode)) {
		close(fd);
		vdimg_err(img, "extent path \"%s\" is absolute but not a block device: refused",
			  path);
		return -EPERM;
	}
	return fd;
}

int vdimg_image_open_extents_dev(struct vdimg_image *img, u32 format, bool writable,
				 bool devices)
{
	const struct vdimg_tool_ops *ops;
	char **paths = NULL, *dir = NULL;
	bool *ro = NULL;
	u32 n = 0, i;
	int ret;

	if (format == VDIMG_FMT_AUTO) {
		const char *why;

		if (vdimg_probe(img->file, &format, &why))
			return 0;	/* vdimg_image_open() says what is wrong */
	}
	ops = vdimg_tool_ops(vdimg_format_by_id(format));
	if (!ops->extent_refs)
		return 0;
	ret = ops->extent_refs(img->file, &paths, &ro, &n);
	if (ret || !n)
		return ret;
	img->extents = calloc(n, sizeof(*img->extents));
	dir = vdimg_file_dir(img->file);
	if (!img->extents || !dir) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		char *p;
		int fd;

		if (devices && paths[i][0] == '/') {
			fd = open_device_extent(img, paths[i], writable && !ro[i]);
			if (fd < 0) {
				ret = fd;
				goto out;
			}
			p = NULL;
			goto got;
		}
		if (!vdimg_inner_name_ok(paths[i])) {
			vdimg_err(img, "extent file name \"%s\" is not inside the descriptor's directory: refused%s",
				  paths[i], paths[i][0] == '/' && !devices ?
				  " (a block device is opened with vdimgctl attach --allow-device-extents)" : "");
			ret = -EPERM;
			goto out;
		}
		errno = 0;
		p = vdimg_path_in_dir(dir, paths[i]);
		fd = p ? open(p, (writable && !ro[i] ? O_RDWR : O_RDONLY) | O_CLOEXEC) : -1;

		if (fd < 0) {
			ret = errno ? -errno : -ENOMEM;	/* vdimg_path_in_dir() sets it too */
			vdimg_err(img, "cannot open its extent file %s: %s", p ? p : paths[i],
				  strerror(-ret));
			free(p);
			goto out;
		}
got:
		free(p);
		img->extents[i] = vdimg_file_from_fd(fd);
		if (!img->extents[i]) {
			close(fd);
			ret = -ENOMEM;
			goto out;
		}
		img->nr_extents = i + 1;
	}
	ret = 0;
out:
	for (i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(ro);
	free(dir);
	if (ret)
		vdimg_image_close_extents(img);
	return ret;
}

void vdimg_image_close_extents(struct vdimg_image *img)
{
	u32 i;

	for (i = 0; img->extents && i < img->nr_extents; i++) {
		close(img->extents[i]->fd);
		vdimg_file_free(img->extents[i]);
	}
	free(img->extents);
	img->extents = NULL;
	img->nr_extents = 0;
}

/* Open the data file at @path (freed here) for layer @l, with its mode, and give it to its image. */
static int chain_take_data_file(struct vdimg_chain_layer *l, char *path, bool writable)
{
	int ret;

	l->data_fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (l->data_fd < 0) {
		ret = -errno;
		vdimg_err(&l->img, "cannot open its external data file %s: %s", path,
			  strerror(-ret));
		free(path);
		return ret;
	}
	free(path);
	l->data_file = vdimg_file_from_fd(l->data_fd);
	if (!l->data_file)
		return -ENOMEM;
	l->img.data_file = l->data_file;
	return 0;
}

/* Open the layer's external data file, if its image names one, with the layer's mode. */
static int chain_open_data_file(struct vdimg_chain_layer *l, const struct vdimg_format *fmt,
				u32 format, bool writable)
{
	char *path;
	int ret;

	ret = data_file_of(l->file, l->path, fmt, format, &path);
	if (ret || !path)
		return ret;
	return chain_take_data_file(l, path, writable);
}

/*
 * Open layer @i's image read-only, and its external data file when it names one: the metadata
 * alone first (a backend with VDIMG_CAP_DATA_FILE allows that read-only in userspace), then, only
 * when the image names a data file, again with it. An image without one is opened once.
 */
static int chain_open_ro_layer(struct vdimg_chain_layer *l, u32 format, unsigned int oflags)
{
	struct vdimg_image *img = &l->img;
	char *path;
	int ret;

	ret = vdimg_image_open(img, format, oflags);
	if (ret)
		return ret;
	ret = vdimg_data_file_path(img, l->path, &path);
	if (ret || !path)
		return ret;
	format = img->fmt->id;
	vdimg_image_close(img);
	ret = chain_take_data_file(l, path, false);
	if (ret)
		return ret;
	return vdimg_image_open(img, format, oflags);
}

/* 0 when the image on block device @l (@format, or probed) may be written, else -EROFS */
static int chain_device_writable(struct vdimg_chain_layer *l, u32 format)
{
	struct vdimg_file *f = vdimg_file_from_fd(l->fd);
	int ret;

	if (!f)
		return -ENOMEM;
	ret = vdimg_device_write_ok(f, &format);
	vdimg_file_free(f);
	if (ret == -EROFS)
		vdimg_err(&l->img, "a %s image on a block device is only read here; "
			  VDIMG_DEVICE_FORMATS " are written there",
			  vdimg_format_name(format) ?: "such");
	return ret;
}

/* Open layer @i of @c (its fd and path set) as @format, or through @op when not NULL. */
static int chain_open_layer(struct vdimg_chain *c, int i, u32 format,
			    const struct vdimg_format *op)
{
	struct vdimg_chain_layer *l = &c->layer[i];
	struct vdimg_image *img = &l->img;
	bool top = i == c->nr - 1;
	unsigned int oflags = 0, rflags;
	struct stat st;
	int ret;

	if (fstat(l->fd, &st)) {
		ret = -errno;
		vdimg_err(img, "cannot stat: %s", strerror(-ret));
		return ret;
	}
	if (S_ISDIR(st.st_mode)) {
		vdimg_err(img, "is a directory");
		return -EISDIR;
	}
	/*
	 * A block device (an image kept on an LV or a LUN) is written only in a format that finds
	 * the end of its data from its own metadata, not from the device's size; decided before
	 * the open, which may already write
	 */
	if (S_ISBLK(st.st_mode) && i == c->rw) {
		ret = chain_device_writable(l, op ? op->id : format);
		if (ret)
			return ret;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		vdimg_err(img, "not a regular file or a block device");
		return -EINVAL;
	}
	l->file = vdimg_file_from_fd(l->fd);
	if (!l->file)
		return -ENOMEM;
	l->file->no_sync = i == c->rw && (c->flags & VDIMG_CHAIN_UNSAFE);
	img->file = l->file;
	if (i != c->rw)
		oflags |= VDIMG_OPEN_READ_ONLY;
	if (!top)
		oflags |= VDIMG_OPEN_HAS_CHILD;
	if (c->flags & VDIMG_CHAIN_FORCE_CSUM)
		oflags |= VDIMG_OPEN_FORCE_CSUM;
	/* the registry's open may take an unrecognised file as raw; a backend's own ->open() not */
	rflags = oflags | (c->flags & VDIMG_CHAIN_ALLOW_RAW ? VDIMG_OPEN_ALLOW_RAW : 0);
	if (i != c->rw && !op) {
		ret = vdimg_image_open_extents_dev(img, format, false,
						   c->flags & VDIMG_CHAIN_DEVICE_EXTENTS);
		return ret ? ret : chain_open_ro_layer(l, format, rflags);
	}
	ret = chain_open_data_file(l, op, format, i == c->rw);
	if (!ret)
		ret = vdimg_image_open_extents_dev(img, op ? op->id : format, i == c->rw,
						   c->flags & VDIMG_CHAIN_DEVICE_EXTENTS);
	if (ret)
		return ret;

	if (op) {
		/* a backend the registry does not know (tests, backends being written) */
		img->fmt = op;
		ret = op->open(img, oflags);
		if (ret) {
			img->fmt = NULL;
			return ret;
		}
		if (oflags & VDIMG_OPEN_READ_ONLY)
			img->flags |= VDIMG_IMG_READ_ONLY;
		if (!img->size || img->size % 512 || !img->lbs) {
			vdimg_err(img, "backend %s opened the image with a bad geometry", op->name);
			op->close(img);
			img->fmt = NULL;
			return -EINVAL;
		}
		return 0;
	}
	return vdimg_image_open(img, format, rflags);
}

/* Every child's parent link, and a base that would need a parent. */
static int chain_check_links(struct vdimg_chain *c)
{
	int i, ret;

	if ((c->layers[0]->flags & VDIMG_IMG_HAS_PARENT) && !(c->flags & VDIMG_CHAIN_ORPHAN_OK)) {
		vdimg_err(c->layers[0], "is a differencing image: its parent must be opened below it");
		return -ENOENT;
	}
	for (i = 1; i < c->nr; i++) {
		struct vdimg_image *child = c->layers[i], *parent = c->layers[i - 1];

		/* the driver's rule (drivers/dev.c): VHD, VHDX, VDI children have the parent's size */
		if ((child->fmt->caps & VDIMG_CAP_SAME_SIZE_PARENT) && child->size != parent->size) {
			vdimg_err(child, "a %s child must have its parent's size: it has %llu bytes, its parent %s has %llu",
				  child->fmt->name, (unsigned long long)child->size, parent->name,
				  (unsigned long long)parent->size);
			return -EINVAL;
		}
		if (!child->fmt->verify_parent)
			continue;
		ret = child->fmt->verify_parent(child, parent);
		if (!ret)
			continue;
		if (c->flags & VDIMG_CHAIN_FORCE_LINK) {
			vdimg_warn(child, "parent %s does not match, used anyway (forced)", parent->name);
			continue;
		}
		return ret;
	}
	return 0;
}

static int chain_open_common(struct vdimg_chain **out, const int *fds, const char *const *names,
			     int n, const u32 *formats, const struct vdimg_format *const *ops,
			     unsigned int flags, bool own_fds, int rw)
{
	struct vdimg_chain *c;
	int i, ret;

	*out = NULL;
	if (n < 1 || n > VDIMG_MAX_LAYERS || (flags & ~VDIMG_CHAIN_FLAGS_ALL) || rw >= n)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->flags = flags;
	c->rw = flags & VDIMG_CHAIN_READ_ONLY ? -1 : rw;
	pthread_mutex_init(&c->range_mutex, NULL);
	pthread_cond_init(&c->range_cond, NULL);
	c->layer = calloc(n, sizeof(*c->layer));
	c->layers = calloc(n, sizeof(*c->layers));
	if (!c->layer || !c->layers) {
		free(c->layer);
		free(c->layers);
		pthread_mutex_destroy(&c->range_mutex);
		pthread_cond_destroy(&c->range_cond);
		free(c);
		return -ENOMEM;
	}
	c->nr = n;
	for (i = 0; i < n; i++) {
		c->layer[i].fd = fds[i];
		c->layer[i].own_fd = own_fds;
		c->layer[i].data_fd = -1;
		c->layer[i].path = strdup(names && names[i] ? names[i] : "(image)");
		c->layer[i].img.name = c->layer[i].path;
		c->layers[i] = &c->layer[i].img;
	}
	for (i = 0; i < n; i++) {
		if (!c->layer[i].path) {
			ret = -ENOMEM;
			goto fail;
		}
		ret = chain_open_layer(c, i, formats ? formats[i] : VDIMG_FMT_AUTO,
				       ops ? ops[i] : NULL);
		if (ret)
			goto fail;
	}
	ret = chain_check_links(c);
	if (ret)
		goto fail;
	c->size = vdimg_chain_top(c)->size;
	*out = c;
	return 0;
fail:
	c->flags |= VDIMG_CHAIN_READ_ONLY;	/* no flush on the way out */
	c->rw = -1;
	vdimg_chain_close(c);
	return ret;
}

int vdimg_chain_open_fds(struct vdimg_chain **out, const int *fds, const char *const *names, int n,
			 const u32 *formats, unsigned int flags)
{
	return chain_open_common(out, fds, names, n, formats, NULL, flags, false, n - 1);
}

int vdimg_chain_open_ops(struct vdimg_chain **out, const int *fds, const char *const *names, int n,
			 const struct vdimg_format *const *ops, unsigned int flags)
{
	return chain_open_common(out, fds, names, n, NULL, ops, flags, false, n - 1);
}

int vdimg_chain_open(struct vdimg_chain **out, const char *const *paths, int n, const u32 *formats,
		     unsigned int flags)
{
	return vdimg_chain_open_at(out, paths, n, formats, flags, n - 1);
}

int vdimg_chain_open_at(struct vdimg_chain **out, const char *const *paths, int n,
			const u32 *formats, unsigned int flags, int rw)
{
	int *fds, i, ret;

	*out = NULL;
	if (n < 1 || n > VDIMG_MAX_LAYERS || rw < 0 || rw >= n)
		return -EINVAL;
	fds = calloc(n, sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		bool writable = i == rw && !(flags & VDIMG_CHAIN_READ_ONLY);

		fds[i] = open(paths[i], (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (fds[i] < 0) {
			struct vdimg_image tmp = { .name = paths[i] };

			ret = -errno;
			vdimg_err(&tmp, "cannot open: %s", strerror(-ret));
			while (i--)
				close(fds[i]);
			free(fds);
			return ret;
		}
	}
	/* from here on the chain owns the descriptors, also when opening fails */
	ret = chain_open_common(out, fds, paths, n, formats, NULL, flags, true, rw);
	free(fds);
	return ret;
}

int vdimg_chain_close(struct vdimg_chain *c)
{
	int i, ret = 0;

	if (!c)
		return 0;
	if (c->rw >= 0)
		ret = vdimg_chain_flush(c);
	for (i = c->layer ? c->nr - 1 : -1; i >= 0; i--) {
		struct vdimg_chain_layer *l = &c->layer[i];

		vdimg_image_close(&l->img);
		vdimg_image_close_extents(&l->img);
		vdimg_file_free(l->file);
		if (l->own_fd && l->fd >= 0)
			close(l->fd);
		vdimg_file_free(l->data_file);
		if (l->data_fd >= 0)
			close(l->data_fd);
		free(l->path);
	}
	free(c->layer_mem ? c->layer_mem : c->layer);
	free(c->layers);
	pthread_mutex_destroy(&c->range_mutex);
	pthread_cond_destroy(&c->range_cond);
	free(c);
	return ret;
}

/* ---- moving data ---- */

/* Bytes of a DATA extent; past the end of the file reads zeros (as loop does for short reads). */
static int chain_read_file(struct vdimg_file *f, void *buf, size_t len, u64 off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(f->fd, (char *)buf + done, len - done, off + done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			memset((char *)buf + done, 0, len - done);
			break;
		}
		done += n;
	}
	return 0;
}

/* Is @ext a usable answer to map(@off, @len)? Backend bugs and hostile images end here. */
static int chain_check_extent(struct vdimg_image *img, const struct vdimg_extent *ext, u64 off,
			      u64 len, bool write)
{
	u64 end;

	if (ext->offset != off || !ext->length || ext->length > len) {
		vdimg_err(img, "map(%llu, %llu) returned the extent [%llu, +%llu)",
			  (unsigned long long)off, (unsigned long long)len,
			  (unsigned long long)ext->offset, (unsigned long long)ext->length);
		return -EIO;
	}
	switch (ext->type) {
	case VDIMG_EXT_DATA:
		if (!ext->file || check_add_overflow(ext->file_offset, ext->length, &end) ||
		    end > (u64)LLONG_MAX) {
			vdimg_err(img, "map(%llu) returned a data extent at a bad file offset %llu",
				  (unsigned long long)off, (unsigned long long)ext->file_offset);
			return -EIO;
		}
		break;
	case VDIMG_EXT_ZERO:
	case VDIMG_EXT_UNALLOCATED:
	case VDIMG_EXT_ENCODED:
		if (!write)
			break;
		fallthrough;
	default:
		vdimg_err(img, "map(%llu%s) returned extent type %u", (unsigned long long)off,
			  write ? ", WRITE" : "", ext->type);
		return -EIO;
	}
	if ((ext->flags & VDIMG_EXT_NEW) && !write) {
		vdimg_err(img, "map(%llu) returned a new extent to a read", (unsigned long long)off);
		return -EIO;
	}
	return 0;
}

int vdimg_chain_read_level(struct vdimg_chain *c, int level, void *buf, size_t len, u64 off)
{
	u8 *p = buf;
	u64 end;
	int ret;

	if (level >= c->nr || check_add_overflow(off, (u64)len, &end))
		return -EINVAL;
	while (len) {
		u64 chunk = len;
		int l = level;

		/* walk down until one layer has the first bytes; clip to what each layer answered */
		for (;;) {
			struct vdimg_image *img;
			struct vdimg_extent ext;

			if (l < 0) {
				memset(p, 0, chunk);	/* below the base */
				break;
			}
			img = c->layers[l];
			if (off >= img->size) {
				memset(p, 0, chunk);	/* past the end of this layer: zeros */
				break;
			}
			chunk = min(chunk, img->size - off);
			memset(&ext, 0, sizeof(ext));
			ret = img->fmt->map(img, off, chunk, 0, &ext);
			if (ret)
				return ret;
			ret = chain_check_extent(img, &ext, off, chunk, false);
			if (ret)
				return ret;
			chunk = ext.length;
			if (ext.type == VDIMG_EXT_UNALLOCATED) {
				l--;
				continue;
			}
			if (ext.type == VDIMG_EXT_ZERO) {
				memset(p, 0, chunk);
			} else if (ext.type == VDIMG_EXT_DATA) {
				ret = chain_read_file(ext.file, p, chunk, ext.file_offset);
			} else if (!img->fmt->read_encoded) {
				vdimg_err(img, "encoded extent but the backend cannot decode it");
				ret = -EIO;
			} else {
				ret = img->fmt->read_encoded(img, &ext, p);
			}
			if (ret)
				return ret;
			break;
		}
		p += chunk;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

int vdimg_chain_pread(struct vdimg_chain *c, void *buf, size_t len, u64 off)
{
	if (off > c->size || len > c->size - off)
		return -EINVAL;
	return vdimg_chain_read_level(c, c->nr - 1, buf, len, off);
}

/*
 * A NEW extent with a fill range: build [fill_offset, +fill_length) from the caller's data and the
 * layers below the top, and write it at the matching file offset.
 */
static int chain_write_fill(struct vdimg_chain *c, struct vdimg_image *top,
			    const struct vdimg_extent *ext, const u8 *data)
{
	u64 fill_end, head, tail_off, tail_len, foff;
	u8 *fill;
	int ret;

	if (check_add_overflow(ext->fill_offset, ext->fill_length, &fill_end) ||
	    ext->fill_offset > ext->offset || ext->offset + ext->length > fill_end ||
	    ext->fill_length > VDIMG_CHAIN_MAX_FILL ||
	    ext->file_offset < ext->offset - ext->fill_offset) {
		vdimg_err(top, "map(%llu, WRITE) returned a bad fill range [%llu, +%llu)",
			  (unsigned long long)ext->offset, (unsigned long long)ext->fill_offset,
			  (unsigned long long)ext->fill_length);
		return -EIO;
	}
	head = ext->offset - ext->fill_offset;
	tail_off = ext->offset + ext->length;
	tail_len = fill_end - tail_off;
	foff = ext->file_offset - head;
	fill = malloc(ext->fill_length);
	if (!fill)
		return -ENOMEM;
	if ((ext->flags & VDIMG_EXT_FILL_ZERO) || c->rw < 1) {
		/* the unit read as zeros before (a ZERO entry): it must not show the parent now */
		memset(fill, 0, head);
		memset(fill + head + ext->length, 0, tail_len);
		ret = 0;
	} else {
		/* past the writable layer's own end the unit is zeros, whatever a larger parent holds */
		u64 end = top->size, tail_in = tail_off < end ? min(tail_len, end - tail_off) : 0;

		ret = vdimg_chain_read_level(c, c->rw - 1, fill, head, ext->fill_offset);
		if (!ret)
			ret = vdimg_chain_read_level(c, c->rw - 1, fill + head + ext->length,
						     tail_in, tail_off);
		memset(fill + head + ext->length + tail_in, 0, tail_len - tail_in);
	}
	if (!ret) {
		memcpy(fill + head, data, ext->length);
		ret = vdimg_file_write(ext->file, fill, ext->fill_length, foff);
	}
	free(fill);
	return ret;
}

static int chain_write_locked(struct vdimg_chain *c, const u8 *p, size_t len, u64 off);

int vdimg_chain_pwrite(struct vdimg_chain *c, const void *buf, size_t len, u64 off)
{
	struct chain_range r;
	bool locked;
	int ret;

	if (c->rw < 0)
		return -EROFS;
	if (off > c->layers[c->rw]->size || len > c->layers[c->rw]->size - off)
		return -EINVAL;
	if (!len)
		return 0;
	locked = chain_lock_units(c, &r, off, len);
	ret = chain_write_locked(c, buf, len, off);
	if (locked)
		chain_unlock_units(c, &r);
	return ret;
}

static int chain_write_locked(struct vdimg_chain *c, const u8 *p, size_t len, u64 off)
{
	struct vdimg_image *top = c->layers[c->rw];	/* the writable layer */
	int ret;

	while (len) {
		struct vdimg_extent ext;

		memset(&ext, 0, sizeof(ext));
		ret = top->fmt->map(top, off, len, VDIMG_MAP_WRITE, &ext);
		if (ret)
			return ret;
		ret = chain_check_extent(top, &ext, off, len, true);
		if (ret) {
			if ((ext.flags & VDIMG_EXT_NEW) && top->fmt->abort)
				top->fmt->abort(top, &ext);
			return ret;
		}
		if (!(ext.flags & VDIMG_EXT_NEW)) {
			ret = vdimg_file_write(ext.file, p, ext.length, ext.file_offset);
			if (ret)
				return ret;
		} else {
			if (ext.fill_length)
				ret = chain_write_fill(c, top, &ext, p);
			else
				ret = vdimg_file_write(ext.file, p, ext.length, ext.file_offset);
			if (!ret && top->fmt->commit)
				ret = top->fmt->commit(top, &ext);
			else if (!ret)
				ret = -EIO;	/* NEW without ->commit(): a backend bug */
			if (ret) {
				if (top->fmt->abort)
					top->fmt->abort(top, &ext);
				return ret;
			}
		}
		p += ext.length;
		off += ext.length;
		len -= ext.length;
	}
	return 0;
}

int vdimg_chain_discard(struct vdimg_chain *c, u64 off, u64 len, unsigned int flags)
{
	struct vdimg_image *top;
	static const u8 zeros[65536];
	int ret = -EOPNOTSUPP;

	if (c->rw < 0)
		return -EROFS;
	top = c->layers[c->rw];
	if (flags & ~VDIMG_DISCARD_ZEROES)
		return -EINVAL;
	if (off > top->size || len > top->size - off)
		return -EINVAL;
	if (!len)
		return 0;
	/* in a differencing layer a discarded range must not show the parent again */
	if (c->rw > 0)
		flags |= VDIMG_DISCARD_ZEROES;
	if (top->fmt->discard) {
		struct chain_range r;
		bool locked = chain_lock_units(c, &r, off, len);

		ret = top->fmt->discard(top, off, len, flags);
		if (locked)
			chain_unlock_units(c, &r);
	}
	if (ret != -EOPNOTSUPP)
		return ret;
	if (!(flags & VDIMG_DISCARD_ZEROES))
		return 0;	/* discard is a hint */
	/* write-zeroes the format cannot express: write real zeros */
	while (len) {
		size_t n = min_t(u64, len, sizeof(zeros));

		ret = vdimg_chain_pwrite(c, zeros, n, off);
		if (ret)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

int vdimg_chain_flush(struct vdimg_chain *c)
{
	struct vdimg_image *top;
	int ret = 0;

	if (c->rw < 0)
		return 0;
	top = c->layers[c->rw];
	top->file->no_sync = false;	/* VDIMG_CHAIN_UNSAFE ends here */
	if (top->fmt && top->fmt->flush)
		ret = top->fmt->flush(top);
	if (!ret)
		ret = vdimg_file_sync(top->file);
	return ret;
}

/* ---- resolving a chain from its top image ---- */

#define RESOLVE_DIR_SCAN_MAX	4096	/* directory entries looked at for a parent found by UUID */

/*
 * Open @path read-only as a layer of a chain (@format, or probed, raw allowed); @quiet: probing a
 * candidate (only formats built in, no message). A file that is not regular is -EINVAL.
 */
static int resolve_open(const char *path, u32 format, struct vdimg_path_image *o, bool quiet,
			unsigned int oflags)
{
	int ret;

	ret = vdimg_open_path(o, path, format, VDIMG_OPEN_READ_ONLY | VDIMG_OPEN_HAS_CHILD |
			      VDIMG_PATH_REGULAR | (quiet ? VDIMG_PATH_BUILT_IN : 0) | oflags);
	if (o->failed == VDIMG_PATH_NOT_REGULAR) {
		if (!quiet && S_ISBLK(o->st.st_mode)) {
			struct vdimg_image tmp = { .name = path };

			vdimg_err(&tmp, "is a block device, which is a layer only when named by the user (attach --chain), not by an image");
		}
		return -EINVAL;
	}
	if (o->failed == VDIMG_PATH_NO_FILE && !quiet) {
		struct vdimg_image tmp = { .name = path };

		vdimg_err(&tmp, "cannot open: %s", strerror(-ret));
	}
	return ret;
}

/* "dir/of/child" + "rel" -> "dir/of/rel"; absolute @rel unchanged. Caller frees. */
static char *resolve_relative(const char *child, const char *rel)
{
	const char *slash = strrchr(child, '/');
	char *out;

	if (rel[0] == '/' || !slash)
		return strdup(rel);
	if (asprintf(&out, "%.*s/%s", (int)(slash - child), child, rel) < 0)
		return NULL;
	return out;
}

/* A file in @child's directory whose image UUID is @uuid, or NULL. */
static char *resolve_by_uuid(const char *child, const u8 *uuid, const struct stat *child_st)
{
	const char *slash = strrchr(child, '/');
	char *dir = slash ? strndup(child, slash - child + (slash == child)) : strdup(".");
	char *found = NULL;
	struct dirent *e;
	int seen = 0;
	DIR *d;

	if (!dir)
		return NULL;
	d = opendir(dir);
	while (d && (e = readdir(d)) && !found && seen++ < RESOLVE_DIR_SCAN_MAX) {
		struct vdimg_path_image o;
		char *path;

		if (e->d_name[0] == '.' || asprintf(&path, "%s/%s", dir, e->d_name) < 0)
			continue;
		if (!resolve_open(path, VDIMG_FMT_AUTO, &o, true, 0)) {
			if ((o.img.flags & VDIMG_IMG_HAS_UUID) && !memcmp(o.img.uuid, uuid, 16) &&
			    (o.st.st_dev != child_st->st_dev || o.st.st_ino != child_st->st_ino))
				found = strdup(path);
			vdimg_close_path(&o);
		}
		free(path);
	}
	if (d)
		closedir(d);
	free(dir);
	return found;
}

int vdimg_chain_resolve(const char *top, u32 top_format, char ***paths_out, u32 **formats_out,
			int *n_out)
{
	return vdimg_chain_resolve_flags(top, top_format, paths_out, formats_out, n_out, 0);
}

/* Done with an image of the walk: the chain being kept closes its own. */
static void resolve_close(struct vdimg_chain *keep, struct vdimg_path_image *o)
{
	if (!keep)
		vdimg_close_path(o);
}

/*
 * For vdimg_chain_resolve_open(): open @path as layer @i of @c (read-only, with its data file and
 * extent files), refusing what resolve_open() refuses; @named: the path the caller gave (a block
 * device is allowed), not one found in an image.
 */
static int resolve_open_layer(struct vdimg_chain *c, int i, const char *path, u32 format,
			      bool named, struct stat *st)
{
	struct vdimg_chain_layer *l = &c->layer[i];
	struct vdimg_image tmp = { .name = path };
	int ret;

	l->path = strdup(path);
	if (!l->path)
		return -ENOMEM;
	l->img.name = l->path;
	l->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (l->fd < 0) {
		ret = -errno;
		vdimg_err(&tmp, "cannot open: %s", strerror(-ret));
		return ret;
	}
	l->own_fd = true;
	if (fstat(l->fd, st))
		return -errno;
	if (!S_ISREG(st->st_mode) && !(named && S_ISBLK(st->st_mode))) {
		if (S_ISBLK(st->st_mode))
			vdimg_err(&tmp, "is a block device, which is a layer only when named by the user (attach --chain), not by an image");
		return -EINVAL;
	}
	return chain_open_layer(c, i, format, NULL);
}

/*
 * The walk of vdimg_chain_resolve_flags(). With @keep (a read-only chain of VDIMG_MAX_LAYERS
 * empty layers), each image is opened once into @keep, top into the last layer and its parents
 * below it, and stays open; without, each is opened, asked for its parent and closed.
 */
static int chain_resolve(const char *top, u32 top_format, char ***paths_out, u32 **formats_out,
			 int *n_out, unsigned int flags, struct vdimg_chain *keep)
{
	unsigned int oflags = (flags & VDIMG_CHAIN_FORCE_CSUM ? VDIMG_OPEN_FORCE_CSUM : 0) |
			      (flags & VDIMG_CHAIN_DEVICE_EXTENTS ? VDIMG_PATH_DEVICE_EXTENTS : 0);
	char **paths = NULL;
	u32 *formats = NULL;
	struct stat *seen = NULL;
	char *cur = strdup(top);
	u32 fmt = top_format;
	int n = 0, i, ret = 0;

	*paths_out = NULL;
	*formats_out = NULL;
	*n_out = 0;
	paths = calloc(VDIMG_MAX_LAYERS, sizeof(*paths));
	formats = calloc(VDIMG_MAX_LAYERS, sizeof(*formats));
	seen = calloc(VDIMG_MAX_LAYERS, sizeof(*seen));
	if (!cur || !paths || !formats || !seen) {
		ret = -ENOMEM;
		goto fail;
	}
	for (;;) {
		struct vdimg_parent_ref *ref;
		struct vdimg_path_image o;
		struct vdimg_image *img = &o.img;
		char *next = NULL;

		/*
		 * the image the caller names may be a block device (an LV, a LUN); a parent path
		 * recorded in an image may not (no image makes us read a disk it names)
		 */
		if (keep) {
			ret = resolve_open_layer(keep, VDIMG_MAX_LAYERS - 1 - n, cur, fmt, !n,
						 &seen[n]);
			img = &keep->layer[VDIMG_MAX_LAYERS - 1 - n].img;
			o.fd = -1;	/* nothing of @o is used: the chain owns the image */
		} else {
			ret = resolve_open(cur, fmt, &o, false,
					   oflags | (n ? 0 : VDIMG_PATH_BLOCK_OK));
			seen[n] = o.st;
		}
		if (ret)
			goto fail;
		for (i = 0; i < n; i++) {
			if (seen[i].st_dev == seen[n].st_dev && seen[i].st_ino == seen[n].st_ino) {
				vdimg_err(img, "the chain of parents loops back to %s", paths[i]);
				resolve_close(keep, &o);
				ret = -ELOOP;
				goto fail;
			}
		}
		paths[n] = cur;
		formats[n] = img->fmt->id;
		n++;
		cur = NULL;
		if (!(img->flags & VDIMG_IMG_HAS_PARENT)) {
			resolve_close(keep, &o);
			break;
		}
		if (n == VDIMG_MAX_LAYERS) {
			vdimg_err(img, "more than %d images in the chain", VDIMG_MAX_LAYERS);
			resolve_close(keep, &o);
			ret = -ELOOP;
			goto fail;
		}
		ref = calloc(1, sizeof(*ref));
		ret = !ref ? -ENOMEM : !vdimg_tool_ops(img->fmt)->parent_ref ? -ENOENT : vdimg_tool_ops(img->fmt)->parent_ref(img, ref);
		if (!ret && ref->path[0]) {
			const char *cand[2] = { ref->path, ref->alt_path };

			for (i = 0; i < 2 && !next; i++) {
				char *p;

				if (!cand[i][0])
					continue;
				p = resolve_relative(paths[n - 1], cand[i]);
				if (p && access(p, F_OK) == 0)
					next = p;
				else
					free(p);
			}
			/*
			 * A Windows drive path (VHD/VHDX locators, Hyper-V's absolute_win32_path with
			 * no relative_path): its file name beside the child, as Hyper-V's folder layout
			 * keeps x.vhdx and x_GUID.avhdx together. The parent link (UUID) is still
			 * checked when the chain opens.
			 */
			for (i = 0; i < 2 && !next; i++) {
				const char *c = cand[i], *base;
				char *p;

				if (!isalpha((unsigned char)c[0]) || c[1] != ':')
					continue;
				base = strrchr(c, '/');
				base = base ? base + 1 : c + 2;
				if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
					continue;
				p = resolve_relative(paths[n - 1], base);
				if (p && access(p, F_OK) == 0)
					next = p;
				else
					free(p);
			}
			if (!next) {
				vdimg_err(img, "its parent %s was not found", ref->path);
				ret = -ENOENT;
			}
		} else if (!ret && ref->by_uuid) {
			char u[40];
			const u8 *b = img->parent_uuid;

			next = resolve_by_uuid(paths[n - 1], img->parent_uuid, &seen[n - 1]);
			if (!next) {
				snprintf(u, sizeof(u), "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
					 "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
					 b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
					 b[14], b[15]);
				vdimg_err(img, "no image with its parent's UUID %s in its directory; give the chain explicitly",
					  u);
				ret = -ENOENT;
			}
		} else if (!ret || ret == -ENOENT) {
			vdimg_err(img, "is a differencing image but does not say where its parent is");
			ret = -ENOENT;
		}
		fmt = ref && !ret && ref->format ? ref->format : VDIMG_FMT_AUTO;
		free(ref);
		resolve_close(keep, &o);
		if (ret) {
			free(next);
			goto fail;
		}
		cur = next;
	}
	/* collected top first; the chain is base first */
	for (i = 0; i < n / 2; i++) {
		char *p = paths[i];
		u32 f = formats[i];

		paths[i] = paths[n - 1 - i];
		paths[n - 1 - i] = p;
		formats[i] = formats[n - 1 - i];
		formats[n - 1 - i] = f;
	}
	free(seen);
	*paths_out = paths;
	*formats_out = formats;
	*n_out = n;
	return 0;
fail:
	free(cur);
	if (paths)
		for (i = 0; i < n; i++)
			free(paths[i]);
	free(paths);
	free(formats);
	free(seen);
	return ret;
}

int vdimg_chain_resolve_flags(const char *top, u32 top_format, char ***paths_out,
			      u32 **formats_out, int *n_out, unsigned int flags)
{
	return chain_resolve(top, top_format, paths_out, formats_out, n_out, flags, NULL);
}

int vdimg_chain_resolve_open(struct vdimg_chain **out, const char *top, u32 top_format,
			     unsigned int flags)
{
	struct vdimg_chain *c;
	u32 *formats;
	char **paths;
	int n, i, ret;

	*out = NULL;
	if (flags & ~(VDIMG_CHAIN_FORCE_CSUM | VDIMG_CHAIN_FORCE_LINK | VDIMG_CHAIN_DEVICE_EXTENTS))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	/* parents named by a path are probed, an unrecognised one is raw (as resolving does) */
	c->flags = flags | VDIMG_CHAIN_READ_ONLY | VDIMG_CHAIN_ALLOW_RAW;
	c->rw = -1;
	pthread_mutex_init(&c->range_mutex, NULL);
	pthread_cond_init(&c->range_cond, NULL);
	c->layer = calloc(VDIMG_MAX_LAYERS, sizeof(*c->layer));
	c->layers = calloc(VDIMG_MAX_LAYERS, sizeof(*c->layers));
	if (!c->layer || !c->layers) {
		ret = -ENOMEM;
		goto fail;
	}
	c->nr = VDIMG_MAX_LAYERS;
	for (i = 0; i < c->nr; i++) {
		c->layer[i].fd = -1;
		c->layer[i].data_fd = -1;
	}
	ret = chain_resolve(top, top_format, &paths, &formats, &n, flags, c);
	if (ret)
		goto fail;
	vdimg_chain_resolve_free(paths, formats, n);
	/* the layers were opened top down from the array's end: the chain starts at its base */
	c->layer_mem = c->layer;
	c->layer += VDIMG_MAX_LAYERS - n;
	c->nr = n;
	for (i = 0; i < n; i++)
		c->layers[i] = &c->layer[i].img;
	ret = chain_check_links(c);
	if (ret)
		goto fail;
	c->size = vdimg_chain_top(c)->size;
	*out = c;
	return 0;
fail:
	vdimg_chain_close(c);
	return ret;
}

void vdimg_chain_resolve_free(char **paths, u32 *formats, int n)
{
	int i;

	if (paths)
		for (i = 0; i < n; i++)
			free(paths[i]);
	free(paths);
	free(formats);
}

/*
 * Image locks, in qemu's scheme (its block/file-posix.c), so that qemu and vdimg do not both write
 * one image: open file description (OFD) locks on single bytes, all shared (read) locks. Byte
 * 100 + i says "I use permission i", byte 200 + i "I do not let others have permission i", where
 * i is 0 consistent read, 1 write, 2 write-unchanged, 3 resize. A writer uses 0-3 and does not
 * share write and resize; a reader uses 0 and does not share them either (a backing file must not
 * change under it). Before locking, each byte whose counterpart we claim is tested for a lock held
 * by another open file: that is a conflict. OFD locks belong to the open file, so those on a
 * descriptor the kernel keeps last until the device lets it go, whatever becomes of the tool.
 */
#define VDIMG_LOCK_USE		100
#define VDIMG_LOCK_NO_SHARE	200
#define VDIMG_PERM_WRITE	1
#define VDIMG_PERM_RESIZE	3

static int vdimg_lock_byte(int fd, int cmd, short type, off_t byte, struct flock *fl)
{
	memset(fl, 0, sizeof(*fl));
	fl->l_type = type;
	fl->l_whence = SEEK_SET;
	fl->l_start = byte;
	fl->l_len = 1;
	return fcntl(fd, cmd, fl) ? -errno : 0;
}

/* the errors of a file system without OFD locks (e.g. some network file systems): no locking */
static bool vdimg_no_ofd_locks(int err)
{
	return err == -EINVAL || err == -ENOLCK || err == -EOPNOTSUPP;
}

int vdimg_lock_image(int fd, bool write, const char **why)
{
	static const char *const names[] = { "consistent read", "write", "write unchanged", "resize" };
	unsigned int use = write ? 0xf : 0x1;
	unsigned int no_share = 1U << VDIMG_PERM_WRITE | 1U << VDIMG_PERM_RESIZE;
	struct flock fl;
	unsigned int i;
	int ret;

	*why = NULL;
	for (i = 0; i < 4; i++) {
		/* others who refuse what we use, others who use what we refuse */
		off_t probe[2] = { VDIMG_LOCK_NO_SHARE + i, VDIMG_LOCK_USE + i };
		bool want[2] = { use & (1U << i), no_share & (1U << i) };
		unsigned int k;

		for (k = 0; k < 2; k++) {
			if (!want[k])
				continue;
			ret = vdimg_lock_byte(fd, F_OFD_GETLK, F_WRLCK, probe[k], &fl);
			if (vdimg_no_ofd_locks(ret))
				return 0;
			if (ret)
				return ret;
			if (fl.l_type != F_UNLCK) {
				*why = names[i];
				return -EBUSY;
			}
		}
	}
	for (i = 0; i < 4; i++) {
		if ((use & (1U << i)) &&
		    (ret = vdimg_lock_byte(fd, F_OFD_SETLK, F_RDLCK, VDIMG_LOCK_USE + i, &fl)))
			goto fail;
		if ((no_share & (1U << i)) &&
		    (ret = vdimg_lock_byte(fd, F_OFD_SETLK, F_RDLCK, VDIMG_LOCK_NO_SHARE + i, &fl)))
			goto fail;
	}
	return 0;
fail:
	/* someone took a byte between the test and the lock: theirs wins, ours go */
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_UNLCK;
	fl.l_whence = SEEK_SET;
	fcntl(fd, F_OFD_SETLK, &fl);
	if (ret == -EAGAIN || ret == -EACCES) {
		*why = names[i];
		return -EBUSY;
	}
	return vdimg_no_ofd_locks(ret) ? 0 : ret;
}

/*
 * Loop devices take no locks: find one on the file open at @fd (matched by device and inode, as
 * losetup -j does) that conflicts with an attach: a writable one always, a read-only one when
 * @write. Returns true with its name in @name; false also when nothing can be looked at.
 */
bool vdimg_loop_conflict(int fd, bool write, char *name, size_t len, bool *loop_writable)
{
	struct dirent *e;
	struct stat st;
	bool found = false;
	DIR *d;

	if (fstat(fd, &st) || !S_ISREG(st.st_mode))
		return false;
	d = opendir("/sys/block");
	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		struct loop_info64 li;
		char dev[32];
		int lfd;

		if (strncmp(e->d_name, "loop", 4) ||
		    snprintf(dev, sizeof(dev), "/dev/%s", e->d_name) >= (int)sizeof(dev))
			continue;
		lfd = open(dev, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (lfd < 0)
			continue;
		memset(&li, 0, sizeof(li));
		if (!ioctl(lfd, LOOP_GET_STATUS64, &li) && li.lo_device == (u64)st.st_dev &&
		    li.lo_inode == (u64)st.st_ino) {
			*loop_writable = !(li.lo_flags & LO_FLAGS_READ_ONLY);
			if (*loop_writable || write) {
				snprintf(name, len, "%s", dev);
				found = true;
			}
		}
		close(lfd);
	}
	closedir(d);
	return found;
}
