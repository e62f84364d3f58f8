/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The only place that knows kernel versions. vdimg is written against the Linux 6.12 block and VFS
 * APIs; this header maps them back onto 6.1 (Debian's bookworm kernel). Where Debian's 6.1 carries
 * a backport, test the symbol rather than the version.
 */
#ifndef _VDIMG_COMPAT_H
#define _VDIMG_COMPAT_H

#include <linux/version.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/fs.h>

/* Queue limits a vdimg device starts with. */
struct vdimg_limits {
	unsigned int logical_block_size;
	unsigned int physical_block_size;
	unsigned int max_hw_sectors;
	unsigned int max_discard_sectors;	/* 0: no discard */
	unsigned int discard_granularity;
	unsigned int max_write_zeroes_sectors;	/* 0: no write-zeroes */
	unsigned short max_segments;
};

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)

static inline struct gendisk *vdimg_alloc_disk(struct blk_mq_tag_set *set,
					       const struct vdimg_limits *l, void *data)
{
	struct queue_limits lim = {
		.logical_block_size = l->logical_block_size,
		.physical_block_size = l->physical_block_size,
		.io_min = l->physical_block_size,
		.max_hw_sectors = l->max_hw_sectors,
		.max_segments = l->max_segments,
		.max_hw_discard_sectors = l->max_discard_sectors,
		.discard_granularity = l->discard_granularity,
		.max_write_zeroes_sectors = l->max_write_zeroes_sectors,
		.features = BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA,
	};

	return blk_mq_alloc_disk(set, &lim, data);
}

#else

static inline struct gendisk *vdimg_alloc_disk(struct blk_mq_tag_set *set,
					       const struct vdimg_limits *l, void *data)
{
	struct gendisk *disk = blk_mq_alloc_disk(set, data);
	struct request_queue *q;

	if (IS_ERR(disk))
		return disk;
	q = disk->queue;
	blk_queue_logical_block_size(q, l->logical_block_size);
	blk_queue_physical_block_size(q, l->physical_block_size);
	blk_queue_io_min(q, l->physical_block_size);
	blk_queue_max_hw_sectors(q, l->max_hw_sectors);
	blk_queue_max_segments(q, l->max_segments);
	blk_queue_max_discard_sectors(q, l->max_discard_sectors);
	q->limits.discard_granularity = l->discard_granularity;
	blk_queue_max_write_zeroes_sectors(q, l->max_write_zeroes_sectors);
	blk_queue_write_cache(q, true, true);
	blk_queue_flag_set(QUEUE_FLAG_NONROT, q);
	return disk;
}

#endif

/*
 * block_device_operations ->open and ->release changed shape in 6.5. The function these declare
 * sees its gendisk as VDIMG_BDOPS_DISK (->open) or as @disk (->release).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define VDIMG_BDOPS_OPEN(fn)		int fn(struct gendisk *disk, blk_mode_t mode)
#define VDIMG_BDOPS_DISK		disk
#define VDIMG_BDOPS_RELEASE(fn)		void fn(struct gendisk *disk)
#else
#define VDIMG_BDOPS_OPEN(fn)		int fn(struct block_device *bdev, fmode_t mode)
#define VDIMG_BDOPS_DISK		(bdev->bd_disk)
#define VDIMG_BDOPS_RELEASE(fn)		void fn(struct gendisk *disk, fmode_t mode)
#endif

/* blk_mq_alloc_disk()'s disk is released with put_disk() on both; the tag set outlives it. */

/*
 * Freezing a queue: since 6.14 blk_mq_freeze_queue() returns memalloc flags (it enters a NOIO
 * scope) that blk_mq_unfreeze_queue() takes back; 6.1 and 6.12 have the void pair.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
static inline unsigned int vdimg_freeze_queue(struct request_queue *q)
{
	return blk_mq_freeze_queue(q);
}

static inline void vdimg_unfreeze_queue(struct request_queue *q, unsigned int memflags)
{
	blk_mq_unfreeze_queue(q, memflags);
}
#else
static inline unsigned int vdimg_freeze_queue(struct request_queue *q)
{
	blk_mq_freeze_queue(q);
	return 0;
}

static inline void vdimg_unfreeze_queue(struct request_queue *q, unsigned int memflags)
{
	blk_mq_unfreeze_queue(q);
}
#endif

#endif /* _VDIMG_COMPAT_H */
