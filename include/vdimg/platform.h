/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The platform shim under backends/: the few services a format backend needs (memory, locks,
 * endianness, checksums, messages and I/O on an image file), provided by the kernel in the module
 * build and by libc in the userspace library build (tools/lib/). Backends include this file and
 * nothing from <linux/...> or libc directly, so the same source compiles into both.
 */
#ifndef _VDIMG_PLATFORM_H
#define _VDIMG_PLATFORM_H

#ifdef __KERNEL__

#include <linux/types.h>
#include <linux/bits.h>
#include <linux/sizes.h>
#include <linux/errno.h>
#include <linux/kernel.h>
#include <linux/minmax.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/string.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/log2.h>
#include <linux/math64.h>
#include <linux/crc32c.h>
#include <linux/crc32.h>
#include <linux/ratelimit.h>
#include <linux/random.h>
#include <asm/byteorder.h>

#define vdimg_zalloc(sz)	kvzalloc((sz), GFP_KERNEL)
/* not zeroed: for a buffer filled whole right away (a table read from the file) */
#define vdimg_alloc(sz)		kvmalloc((sz), GFP_KERNEL)
#define vdimg_free(p)		kvfree(p)

typedef struct mutex vdimg_mutex_t;
#define vdimg_mutex_init(m)	mutex_init(m)
#define vdimg_mutex_destroy(m)	mutex_destroy(m)
#define vdimg_mutex_lock(m)	mutex_lock(m)
#define vdimg_mutex_unlock(m)	mutex_unlock(m)
/* true if the lock was taken; never sleeps */
#define vdimg_mutex_trylock(m)	(mutex_trylock(m) != 0)

/* fill @p with @n cryptographically random bytes (new UUIDs) */
#define vdimg_random_bytes(p, n) get_random_bytes((p), (n))

#define vdimg_crc32c(seed, p, n) crc32c((seed), (p), (n))
/* CRC-32 as zlib's crc32() computes it: 0 to start, the previous result to continue */
#define vdimg_crc32(crc, p, n)	(~crc32_le(~(u32)(crc), (const u8 *)(p), (n)))
#define vdimg_strscpy(d, s, n)	strscpy((d), (s), (n))

/* see platform-user.h: 1 in the library, 0 here */
#define VDIMG_LIBRARY		0

#else
/* the userspace library's definitions of the same services: see that header */
#include "platform-user.h"

#endif /* __KERNEL__ */

#ifndef EFSCORRUPTED
#define EFSCORRUPTED	EUCLEAN		/* the image's metadata is inconsistent */
#endif

/*
 * Take @m, or with @nowait only try to (false when another holds it): the lock of a map path,
 * whose callers in the submission path may not sleep (VDIMG_MAP_NOWAIT).
 */
static inline bool vdimg_mutex_lock_nowait(vdimg_mutex_t *m, bool nowait)
{
	if (nowait)
		return vdimg_mutex_trylock(m);
	vdimg_mutex_lock(m);
	return true;
}

struct vdimg_file;
struct vdimg_image;

/*
 * Metadata I/O on an image file. All return 0 or a negative errno; a read that reaches past the end
 * of the file returns -EFSCORRUPTED (the image is truncated), never a short count.
 */
int vdimg_file_read(struct vdimg_file *f, void *buf, size_t len, u64 off);
int vdimg_file_write(struct vdimg_file *f, const void *buf, size_t len, u64 off);
int vdimg_file_sync(struct vdimg_file *f);
u64 vdimg_file_size(struct vdimg_file *f);
/*
 * true when @f cannot grow (a block device: an LV, a LUN): its size is all it holds, so a format
 * allocating past its data must stop there with -ENOSPC
 */
bool vdimg_file_fixed_size(struct vdimg_file *f);
int vdimg_file_truncate(struct vdimg_file *f, u64 size);
/* deallocate [off, off + len) keeping the size; -EOPNOTSUPP where the file system cannot */
int vdimg_file_punch(struct vdimg_file *f, u64 off, u64 len);
/* make [off, off + len) read as zeros (zero-range, punch, or writing zeros as a last resort) */
int vdimg_file_zero(struct vdimg_file *f, u64 off, u64 len);
/* make [off, off + len) read as zeros keeping it allocated (zero-range, or writing zeros) */
int vdimg_file_zero_range(struct vdimg_file *f, u64 off, u64 len);

/*
 * Decompression of one compressed unit (a qcow2/qcow cluster, a VMDK grain, a DMG chunk): the
 * kernel's zlib_inflate / zstd in the module (drivers/decompress.c), zlib / libzstd in userspace
 * (tools/lib/decompress.c). Returns 0 when exactly @dst_len bytes were produced (bytes after the
 * end of the stream in @src are ignored), -EFSCORRUPTED when the stream is invalid or ends early,
 * -ENOMEM, or -EOPNOTSUPP for an unknown @algo. May sleep (allocates a workspace).
 */
#define VDIMG_DECOMP_DEFLATE	1	/* raw deflate (RFC 1951), no zlib header */
#define VDIMG_DECOMP_ZLIB	2	/* zlib-wrapped deflate (RFC 1950) */
#define VDIMG_DECOMP_ZSTD	3	/* one or more zstd frames */
int vdimg_decompress(unsigned int algo, const void *src, size_t src_len, void *dst, size_t dst_len);

/*
 * Messages about an image: "vdimg: <image name>: <message>" in the kernel log (ratelimited), on
 * stderr (or the library's message hook) in userspace.
 */
__printf(3, 4)
void vdimg_msg(const struct vdimg_image *img, int level, const char *fmt, ...);
#define VDIMG_LOG_ERR	3
#define VDIMG_LOG_WARN	4
#define VDIMG_LOG_INFO	6
#define vdimg_err(img, fmt, ...)  vdimg_msg((img), VDIMG_LOG_ERR, fmt, ##__VA_ARGS__)
#define vdimg_warn(img, fmt, ...) vdimg_msg((img), VDIMG_LOG_WARN, fmt, ##__VA_ARGS__)
#define vdimg_info(img, fmt, ...) vdimg_msg((img), VDIMG_LOG_INFO, fmt, ##__VA_ARGS__)

/* Report metadata corruption naming the function, return -EFSCORRUPTED (erofs style). */
#define vdimg_corrupt(img, fmt, ...) \
	(vdimg_err((img), "%s: " fmt, __func__, ##__VA_ARGS__), -EFSCORRUPTED)

/*
 * Report that an image kept on a block device of @size bytes (which cannot grow) has no room for
 * another @unit (a string literal: "block", "cluster", "grain"), return -ENOSPC.
 */
#define vdimg_device_full(img, size, unit)						\
	(vdimg_err((img), "the block device is full (%llu bytes): no room for another "	\
		   unit " of the image", (unsigned long long)(size)), -ENOSPC)

#endif /* _VDIMG_PLATFORM_H */
