/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The userspace half of the platform shim (include/vdimg/platform.h): libc and compiler builtins
 * standing in for the kernel services a backend uses, for the library build (tools/lib/). Only
 * platform.h includes this file, and only outside the kernel; it is never copied into a kernel
 * tree (tools/intree/add-to-kernel.sh).
 */
#ifndef _VDIMG_PLATFORM_USER_H
#define _VDIMG_PLATFORM_USER_H

#ifdef __KERNEL__
#error "platform-user.h is the userspace half of include/vdimg/platform.h"
#endif

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
#define __printf(a, b)		__attribute__((format(printf, a, b)))
#define fallthrough		__attribute__((fallthrough))
#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)
#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))
#define BIT(n)			(1UL << (n))
#define BIT_ULL(n)		(1ULL << (n))
#define SZ_4K			0x00001000
#define SZ_64K			0x00010000
#define SZ_1M			0x00100000
#define U32_MAX			((u32)~0U)
#define U64_MAX			((u64)~0ULL)
#define BUILD_BUG_ON(c)		_Static_assert(!(c), #c)
#define min(a, b)		((a) < (b) ? (a) : (b))
#define max(a, b)		((a) > (b) ? (a) : (b))
#define min_t(t, a, b)		((t)(a) < (t)(b) ? (t)(a) : (t)(b))
#define max_t(t, a, b)		((t)(a) > (t)(b) ? (t)(a) : (t)(b))
#define DIV_ROUND_UP(n, d)	(((n) + (d) - 1) / (d))
#define swap(a, b)		do { __typeof__(a) __swap_tmp = (a); (a) = (b); (b) = __swap_tmp; } while (0)
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
#define vdimg_alloc(sz)		malloc(sz)
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


#endif /* _VDIMG_PLATFORM_USER_H */
