// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel side of include/vdimg/platform.h: metadata I/O on a backing file and messages for the
 * backends. Guest data never goes through here (see io.c); these helpers are for headers, tables
 * and bitmaps, buffered through the page cache of the backing file.
 */
#include "vdimg.h"
#include <linux/falloc.h>
#include <linux/namei.h>

int vdimg_file_read(struct vdimg_file *f, void *buf, size_t len, u64 off)
{
	loff_t pos = off;

	while (len) {
		ssize_t n = kernel_read(f->filp, buf, len, &pos);

		if (n < 0)
			return n;
		if (n == 0)
			return -EFSCORRUPTED;	/* past the end of the file */
		buf += n;
		len -= n;
	}
	return 0;
}

int vdimg_file_write(struct vdimg_file *f, const void *buf, size_t len, u64 off)
{
	loff_t pos = off;
	bool locked;
	int ret = 0;

	locked = vdimg_file_write_begin(f, off + len);
	while (len) {
		ssize_t n = kernel_write(f->filp, buf, len, &pos);

		if (n <= 0) {
			ret = n ? n : -EIO;
			break;
		}
		buf += n;
		len -= n;
	}
	vdimg_file_write_end(f, locked);
	return ret;
}

int vdimg_file_sync(struct vdimg_file *f)
{
	return vfs_fsync(f->filp, 0);
}

/* @end, once the file has a sparse tail past it (io.c: vdimg_file_ahead()) */
u64 vdimg_file_size(struct vdimg_file *f)
{
	/* pairs with vdimg_file_ahead(): @end is valid once @ahead reads true */
	if (smp_load_acquire(&f->ahead))
		return atomic64_read(&f->end);
	return i_size_read(f->filp->f_mapping->host);
}

void vdimg_file_init(struct vdimg_file *vf, struct file *filp)
{
	vf->filp = filp;
	mutex_init(&vf->size_lock);
}

/*
 * Before a synchronous write or fallocate() that ends at @end: the image's end moves past it
 * (vdimg_file_written()), and one that ends past the end of the file takes @size_lock (see
 * struct vdimg_file), so that a sparse tail's truncate, computed from the size before it, cannot
 * run meanwhile and cut off what it adds. The size only grows otherwise while the file is
 * attached, so a write that ends inside the file needs no lock. Return: whether it was taken,
 * for vdimg_file_write_end().
 */
bool vdimg_file_write_begin(struct vdimg_file *vf, u64 end)
{
	vdimg_file_written(vf, end);
	if (end <= i_size_read(file_inode(vf->filp)))
		return false;
	mutex_lock(&vf->size_lock);
	return true;
}

void vdimg_file_write_end(struct vdimg_file *vf, bool locked)
{
	if (locked)
		mutex_unlock(&vf->size_lock);
}

/* @vf holds data up to @end (or will: called before the write) */
void vdimg_file_written(struct vdimg_file *vf, u64 end)
{
	s64 old = atomic64_read(&vf->end);

	while (old < (s64)end && !atomic64_try_cmpxchg(&vf->end, &old, end))
		;
}

/*
 * Detach: give back the sparse tail past the image's end (vdimg_file_ahead()). Only a tail that
 * reads as zeros is left if that fails, and the next attach takes it as part of the file.
 */
void vdimg_file_trim_tail(struct vdimg_file *vf, const char *name)
{
	u64 end = atomic64_read(&vf->end);
	int ret;

	if (!vf->filp || !vf->ahead || i_size_read(file_inode(vf->filp)) <= end)
		return;
	mutex_lock(&vf->size_lock);
	ret = vfs_truncate(&vf->filp->f_path, end);
	mutex_unlock(&vf->size_lock);
	if (ret)
		pr_warn("%s: cannot trim the file's sparse tail to %llu bytes (error %d)\n", name,
			end, ret);
}

bool vdimg_file_fixed_size(struct vdimg_file *f)
{
	return S_ISBLK(file_inode(f->filp)->i_mode);
}

int vdimg_file_truncate(struct vdimg_file *f, u64 size)
{
	int ret;

	if (size > LLONG_MAX)
		return -EFBIG;
	mutex_lock(&f->size_lock);
	ret = vfs_truncate(&f->filp->f_path, size);
	if (!ret)
		atomic64_set(&f->end, size);
	mutex_unlock(&f->size_lock);
	return ret;
}

int vdimg_file_punch(struct vdimg_file *f, u64 off, u64 len)
{
	if (off > LLONG_MAX || len > LLONG_MAX - off)
		return -EINVAL;
	return vfs_fallocate(f->filp, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
}

int vdimg_file_zero_range(struct vdimg_file *f, u64 off, u64 len)
{
	void *zeros;
	int ret;

	if (off > LLONG_MAX || len > LLONG_MAX - off)
		return -EINVAL;
	ret = vfs_fallocate(f->filp, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
	if (ret != -EOPNOTSUPP)
		return ret;
	zeros = (void *)get_zeroed_page(GFP_KERNEL);
	if (!zeros)
		return -ENOMEM;
	ret = 0;
	while (len && !ret) {
		size_t n = min_t(u64, len, PAGE_SIZE);

		ret = vdimg_file_write(f, zeros, n, off);
		off += n;
		len -= n;
	}
	free_page((unsigned long)zeros);
	return ret;
}

int vdimg_file_zero(struct vdimg_file *f, u64 off, u64 len)
{
	int ret = vdimg_file_punch(f, off, len);

	if (ret != -EOPNOTSUPP)
		return ret;
	return vdimg_file_zero_range(f, off, len);
}

void vdimg_msg(const struct vdimg_image *img, int level, const char *fmt, ...)
{
	static DEFINE_RATELIMIT_STATE(rs, DEFAULT_RATELIMIT_INTERVAL, DEFAULT_RATELIMIT_BURST);
	struct va_format vaf;
	va_list args;

	if (!__ratelimit(&rs))
		return;
	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	switch (level) {
	case VDIMG_LOG_ERR:
		pr_err("%s: %pV\n", img && img->name ? img->name : "?", &vaf);
		break;
	case VDIMG_LOG_WARN:
		pr_warn("%s: %pV\n", img && img->name ? img->name : "?", &vaf);
		break;
	default:
		pr_info("%s: %pV\n", img && img->name ? img->name : "?", &vaf);
		break;
	}
	va_end(args);
}
