// SPDX-License-Identifier: GPL-2.0
/*
 * Offline chain operations of libvdimg (see chain.h): commit (merge the layers above a lower layer
 * into it, like qemu-img commit) and rebase (give a differencing image another parent, copying what
 * would read differently first, like qemu-img rebase). Both move data only through the chain's
 * read and write paths in io.c, so every backend's allocation, fill and commit rules apply; links
 * change only through the backends' ->set_parent(). Nothing here may run while the images are in
 * use elsewhere (attached, or open in another program).
 */
#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include "chain.h"

#define CHAINOPS_CHUNK		(1U << 20)	/* bytes moved per read/write */
#define CHAINOPS_CMP		4096U		/* rebase compares and copies in units of this */

void (*vdimg_chain_progress)(const char *what, u64 done, u64 total);

static void chainops_progress(const char *what, u64 done, u64 total)
{
	if (vdimg_chain_progress)
		vdimg_chain_progress(what, done, total);
}

/*
 * What the layers (@lo, @hi] of @c say about [@off, +@len): *@type is the type the highest layer
 * with an answer gives (VDIMG_EXT_UNALLOCATED when none of them has the range), *@chunk the length
 * of the prefix that answer holds for.
 */
static int chain_alloc_between(struct vdimg_chain *c, int lo, int hi, u64 off, u64 len,
			       u64 *chunk, u32 *type)
{
	int l;

	*type = VDIMG_EXT_UNALLOCATED;
	for (l = hi; l > lo; l--) {
		struct vdimg_image *img = c->layers[l];
		struct vdimg_extent ext;
		int ret;

		if (off >= img->size) {
			/* past this layer's end it reads zeros and hides what is below */
			*type = VDIMG_EXT_ZERO;
			break;
		}
		len = min(len, img->size - off);
		memset(&ext, 0, sizeof(ext));
		ret = img->fmt->map(img, off, len, 0, &ext);
		if (ret)
			return ret;
		if (ext.offset != off || !ext.length || ext.length > len) {
			vdimg_err(img, "map(%llu, %llu) returned the extent [%llu, +%llu)",
				  (unsigned long long)off, (unsigned long long)len,
				  (unsigned long long)ext.offset, (unsigned long long)ext.length);
			return -EIO;
		}
		len = ext.length;
		if (ext.type != VDIMG_EXT_UNALLOCATED) {
			*type = ext.type;
			break;
		}
	}
	*chunk = len;
	return 0;
}

int vdimg_chain_commit(struct vdimg_chain *c, int base, unsigned int flags)
{
	struct vdimg_image *top = vdimg_chain_top(c), *bimg;
	u64 off = 0, size;
	u8 *buf;
	int ret = 0;

	if (flags || base < 0 || base >= c->nr - 1 || c->rw != base)
		return -EINVAL;
	bimg = c->layers[base];
	size = top->size;
	if (size > bimg->size) {
		vdimg_err(top, "is larger (%llu bytes) than %s (%llu bytes): cannot commit into it",
			  (unsigned long long)size, bimg->name, (unsigned long long)bimg->size);
		return -EFBIG;
	}
	buf = malloc(CHAINOPS_CHUNK);
	if (!buf)
		return -ENOMEM;
	while (off < size) {
		u64 len = min_t(u64, CHAINOPS_CHUNK, size - off), chunk;
		u32 type;

		ret = chain_alloc_between(c, base, c->nr - 1, off, len, &chunk, &type);
		if (ret)
			break;
		if (type == VDIMG_EXT_ZERO) {
			ret = vdimg_chain_discard(c, off, chunk, VDIMG_DISCARD_ZEROES);
		} else if (type != VDIMG_EXT_UNALLOCATED) {
			/* as the whole chain reads it: the layers above base hold these bytes */
			ret = vdimg_chain_read_level(c, c->nr - 1, buf, chunk, off);
			if (!ret)
				ret = vdimg_chain_pwrite(c, buf, chunk, off);
		}
		if (ret)
			break;
		off += chunk;
		chainops_progress("commit", off, size);
	}
	free(buf);
	if (!ret)
		ret = vdimg_chain_flush(c);
	return ret;
}

/* Write [off, +len) of @old (the old view of the top's parents) where @newp reads otherwise. */
static int rebase_range(struct vdimg_chain *c, struct vdimg_chain *newp, u8 *a, u8 *b, u64 off,
			u64 len)
{
	u64 pos = 0;
	int ret;

	ret = vdimg_chain_read_level(c, c->nr - 2, a, len, off);
	if (!ret)
		ret = newp ? vdimg_chain_read_level(newp, newp->nr - 1, b, len, off) :
			(memset(b, 0, len), 0);
	if (ret)
		return ret;
	while (pos < len) {
		u64 start, n = min_t(u64, CHAINOPS_CMP, len - pos);

		if (!memcmp(a + pos, b + pos, n)) {
			pos += n;
			continue;
		}
		/* a run of differing units: one write */
		start = pos;
		while (pos < len) {
			n = min_t(u64, CHAINOPS_CMP, len - pos);
			if (!memcmp(a + pos, b + pos, n))
				break;
			pos += n;
		}
		ret = vdimg_chain_pwrite(c, a + start, pos - start, off + start);
		if (ret)
			return ret;
	}
	return 0;
}

int vdimg_chain_rebase(struct vdimg_chain *c, struct vdimg_chain *newp, const char *path,
		       unsigned int flags)
{
	struct vdimg_image *top = vdimg_chain_top(c);
	u64 off = 0, size = top->size;
	u8 *a = NULL, *b = NULL;
	int ret = 0;

	if ((flags & ~VDIMG_REBASE_UNSAFE) || c->rw != c->nr - 1)
		return -EINVAL;
	if (!vdimg_tool_ops(top->fmt)->set_parent) {
		vdimg_err(top, "%s images cannot change their parent", top->fmt->name);
		return -EOPNOTSUPP;
	}
	if (!(flags & VDIMG_REBASE_UNSAFE)) {
		if (c->nr < 2) {
			vdimg_err(top, "its old parent is not open: only an unsafe rebase (-u) can change the link");
			return -EINVAL;
		}
		a = malloc(CHAINOPS_CHUNK);
		b = malloc(CHAINOPS_CHUNK);
		if (!a || !b) {
			ret = -ENOMEM;
			goto out;
		}
		while (off < size) {
			u64 len = min_t(u64, CHAINOPS_CHUNK, size - off), chunk;
			u32 type;

			/* only what the top does not hold itself can read differently */
			ret = chain_alloc_between(c, c->nr - 2, c->nr - 1, off, len, &chunk, &type);
			if (!ret && type == VDIMG_EXT_UNALLOCATED)
				ret = rebase_range(c, newp, a, b, off, chunk);
			if (ret)
				goto out;
			off += chunk;
			chainops_progress("rebase", off, size);
		}
		/* the copied data must be durable before the link changes */
		ret = vdimg_chain_flush(c);
		if (ret)
			goto out;
	}
	ret = vdimg_tool_ops(top->fmt)->set_parent(top, path, newp ? vdimg_chain_top(newp) : NULL);
	if (ret == -ENOSPC)
		vdimg_err(top, "no room in the image for the parent path %s", path);
	else if (ret == -EOPNOTSUPP && !newp)
		vdimg_err(top, "%s images cannot drop their parent", top->fmt->name);
	if (!ret)
		ret = vdimg_chain_flush(c);
out:
	free(a);
	free(b);
	return ret;
}
