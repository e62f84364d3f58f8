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

/* see the userspace definition below */
#define VDIMG_LIBRARY		0

#else /* userspace */

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <endian.h>
#include <sys/types.h>
#include <sys/random.h>
#include <linux/types.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int16_t s16;
typedef int32_t s32;
typedef int64_t s64;

#define le16_to_cpu(x)	le16toh(x)
#define le32_to_cpu(x)	le32toh(x)
#define le64_to_cpu(x)	le64toh(x)
#define cpu_to_le16(x)	htole16(x)
#define cpu_to_le32(x)	htole32(x)
#define cpu_to_le64(x)	htole64(x)
#define be16_to_cpu(x)	be16toh(x)
#define be32_to_cpu(x)	be32toh(x)
#define be64_to_cpu(x)	be64toh(x)
#define cpu_to_be16(x)	htobe16(x)
#define cpu_to_be32(x)	htobe32(x)
#define cpu_to_be64(x)	htobe64(x)

#ifndef EUCLEAN
#define EUCLEAN 117
#endif
#define __packed		__attribute__((packed))
#define __always_unused		__attribute__((unused))
#define __maybe_unused		__attribute__((unused))
#define fallthrough		__attribute__((fallthrough))
#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)
#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))
#define BIT(n)			(1UL << (n))
#define BIT_ULL(n)		(1ULL << (n))
#define U32_MAX			((u32)~0U)
#define U64_MAX			((u64)~0ULL)
#define BUILD_BUG_ON(c)		_Static_assert(!(c), #c)
#define min(a, b)		((a) < (b) ? (a) : (b))
#define max(a, b)		((a) > (b) ? (a) : (b))
#define min_t(t, a, b)		((t)(a) < (t)(b) ? (t)(a) : (t)(b))
#define max_t(t, a, b)		((t)(a) > (t)(b) ? (t)(a) : (t)(b))
#define DIV_ROUND_UP(n, d)	(((n) + (d) - 1) / (d))
#define ALIGN(x, a)		(((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ALIGN_DOWN(x, a)	((x) & ~((__typeof__(x))(a) - 1))
#define IS_ALIGNED(x, a)	(((x) & ((__typeof__(x))(a) - 1)) == 0)
/* the page-cache granule that VDIMG_EXT_PAGE_SHARED is about (the library ignores the flag) */
#ifndef PAGE_SIZE
#define PAGE_SIZE		4096UL
#endif
#define check_add_overflow(a, b, d)	__builtin_add_overflow(a, b, d)
#define check_mul_overflow(a, b, d)	__builtin_mul_overflow(a, b, d)
#define WARN_ON_ONCE(c)		(!!(c))
#define IS_ENABLED(x)		0

static inline bool is_power_of_2(u64 n) { return n != 0 && (n & (n - 1)) == 0; }
static inline unsigned int ilog2(u64 n) { return 63 - __builtin_clzll(n); }
static inline u64 div_u64(u64 a, u32 b) { return a / b; }
static inline u64 div64_u64(u64 a, u64 b) { return a / b; }

#define vdimg_zalloc(sz)	calloc(1, (sz))
#define vdimg_free(p)		free(p)

typedef pthread_mutex_t vdimg_mutex_t;
#define vdimg_mutex_init(m)	pthread_mutex_init((m), NULL)
#define vdimg_mutex_destroy(m)	pthread_mutex_destroy(m)
#define vdimg_mutex_lock(m)	pthread_mutex_lock(m)
#define vdimg_mutex_unlock(m)	pthread_mutex_unlock(m)
#define vdimg_mutex_trylock(m)	(pthread_mutex_trylock(m) == 0)
#define lockdep_assert_held(m)	((void)(m))

static inline void vdimg_random_bytes(void *p, size_t n)
{
	u8 *b = p;

	while (n) {
		ssize_t r = getrandom(b, n, 0);

		if (r < 0 && errno != EINTR) {
			while (n--)	/* no getrandom(): not secret, only unique enough */
				*b++ = (u8)random();
			break;
		}
		if (r <= 0)
			continue;
		b += r;
		n -= r;
	}
}

u32 vdimg_crc32c(u32 seed, const void *p, size_t n);
/* CRC-32 as zlib's crc32() computes it: 0 to start, the previous result to continue */
u32 vdimg_crc32(u32 crc, const void *p, size_t n);
/* copy a NUL-terminated string, truncating to @n - 1 characters */
void vdimg_strscpy(char *d, const char *s, size_t n);

/*
 * 1 in the userspace library, 0 in the module: the one thing a backend may ask about the side it
 * runs on. The tool works offline on images nothing else has open, so at open it may do what the
 * module must not (repair a dirty qcow2, keep a VHD/VHDX parent's locators for the tool, look at
 * qcow2 metadata without its data file). Test it in C (`if (VDIMG_LIBRARY)`), never with #if: the
 * calls it guards go to userspace-only functions (tools/lib/formats/), which the compiler drops
 * from the module the way it drops code behind IS_ENABLED().
 */
#define VDIMG_LIBRARY		1

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
#ifdef __KERNEL__
__printf(3, 4)
#else
__attribute__((format(printf, 3, 4)))
#endif
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

#endif /* _VDIMG_PLATFORM_H */
