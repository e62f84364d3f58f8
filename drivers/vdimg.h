/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The driver's private header: devices, layers and commands, shared by the files under drivers/.
 * Format knowledge stays in backends/; this side moves data and owns the block device.
 */
#ifndef _VDIMG_DRV_H
#define _VDIMG_DRV_H

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <vdimg/backend.h>
#include <vdimg/compat.h>

/* The kernel's image file: what struct vdimg_file is in the module build. */
struct vdimg_file {
	struct file *filp;
	/*
	 * Nonzero when the data path uses direct I/O on this file: its offset, length and memory
	 * alignment. Then the worker's synchronous data I/O is direct too whenever it is aligned,
	 * so that buffered and direct I/O do not meet in the file's page cache (a page a buffered
	 * access brings in while a direct write is in flight cannot be invalidated after it, and
	 * the kernel then fails the next fsync of the file with EIO).
	 */
	unsigned int dio_align;
	/* fallocate() may allocate new units at the end, not write their zero fill (io.c) */
	bool holes;
	/*
	 * The file's end as the image sees it (vdimg_file_size() once @ahead): every write moves it
	 * past what it writes before it starts. With @ahead the file may go on past it, a sparse
	 * tail that vdimg_file_ahead() (io.c) made and detach trims.
	 */
	atomic64_t end;
	bool ahead;
	bool no_ahead;			/* a truncate failed: units go back to fallocate() */
	/*
	 * Serializes what changes the file's size while it is attached: the tail's truncate, which
	 * computes its target from the size it reads, and every write or fallocate() that ends past
	 * the end of the file (vdimg_file_write_begin()), which that truncate would otherwise cut.
	 */
	struct mutex size_lock;
};

void vdimg_file_init(struct vdimg_file *vf, struct file *filp);
void vdimg_file_written(struct vdimg_file *vf, u64 end);
bool vdimg_file_write_begin(struct vdimg_file *vf, u64 end);
void vdimg_file_write_end(struct vdimg_file *vf, bool locked);
void vdimg_file_trim_tail(struct vdimg_file *vf, const char *name);

struct vdimg_layer_k {
	struct vdimg_image img;
	struct vdimg_file vf;
	/* external data file (qcow2 data_file), filp NULL if none */
	struct vdimg_file data_vf;
	char *name;			/* basename, for messages */
	gfp_t old_gfp_mask;		/* the mapping's mask before attach, restored on detach */
	gfp_t data_old_gfp_mask;	/* the same for the data file */
	unsigned int dio_align;		/* direct I/O offset and length alignment */
	bool dio;			/* direct I/O on this file */
	unsigned int data_dio_align;	/* the same for the data file */
	bool data_dio;
	/*
	 * extent files (VDIMG_LAYER_EXTENTS: a VMDK descriptor's), img.extents points at ext_ptrs
	 */
	struct vdimg_file *ext_vf;	/* [nr_ext] */
	struct vdimg_file **ext_ptrs;	/* [nr_ext] */
	gfp_t *ext_old_gfp;		/* [nr_ext] the mappings' masks before attach */
	u32 nr_ext;
};

/* enum vdimg_dev_state lives in the uapi header (unbound/bound/rundown/deleting) */

struct vdimg_device {
	int index;
	/*
	 * protects state, open_count and autoclear, and (with the device suspended) the swap of
	 * layers and nr_layers by a live snapshot; never held across I/O
	 */
	struct mutex lock;
	enum vdimg_dev_state state;
	unsigned int open_count;
	bool autoclear;

	u32 attach_flags;		/* VDIMG_ATTACH_* as attached */
	unsigned int lbs;		/* logical block size of the device */
	u64 size;			/* bytes */

	/*
	 * The chain, base first: an array of pointers, so that backends may keep pointers into a
	 * layer while a live snapshot replaces the array. Changed only with the device suspended
	 * (vdimg_dev_suspend()) and dev->lock held; readers outside the data path (sysfs, GET_INFO)
	 * take dev->lock.
	 */
	struct vdimg_layer_k **layers;
	unsigned int nr_layers;

	/* allocation range locks: writes that may allocate, and discards, on the top layer */
	spinlock_t range_lock;		/* protects ranges */
	struct list_head ranges;
	wait_queue_head_t range_wait;

	/*
	 * Freed-space drain (io.c, vdimg_drain()): data requests count themselves in
	 * inflight[epoch & 1] from before they map until they complete; a flush whose backend frees
	 * space flips the epoch and waits for the old counter to reach zero. epoch changes only
	 * with drain_busy held (a lock made of wait_var_event(), free of initialisation).
	 */
	unsigned int epoch;
	atomic_t inflight[2];
	atomic_t drain_busy;

	struct workqueue_struct *wq;
	struct blk_mq_tag_set tag_set;
	struct gendisk *disk;
	struct work_struct remove_work;	/* autoclear: detach after the last close */
};

static inline struct vdimg_layer_k *vdimg_top(struct vdimg_device *dev)
{
	return dev->layers[dev->nr_layers - 1];
}

/* One request in flight. */
struct vdimg_cmd {
	struct request *rq;
	struct work_struct work;
	struct kiocb iocb;
	struct bio_vec *bvec;		/* allocated when the request spans several bios */
	atomic_t ref;			/* async: submitter + completion */
	long ret;
	unsigned int epoch;		/* 1 + the drain epoch it counts in, 0: none */
};

struct vdimg_range {
	struct list_head node;
	u64 start, end;
};

/* main.c */
extern unsigned int vdimg_max_devices;
extern unsigned int vdimg_max_part;

/* dev.c */
int vdimg_dev_attach(const struct vdimg_attach *a, const struct vdimg_layer *layers);
int vdimg_dev_detach(u32 index, u32 flags);
int vdimg_dev_info(struct vdimg_dev_info *info, void __user *out);
int vdimg_dev_snapshot(const struct vdimg_snapshot *s);
int vdimg_dev_resize(u32 index, u64 new_size);
void vdimg_dev_remove_all(void);
int vdimg_dev_init(void);
void vdimg_dev_exit(void);

/* ctl.c */
int vdimg_ctl_init(void);
void vdimg_ctl_exit(void);

/* io.c */
extern const struct blk_mq_ops vdimg_mq_ops;
int vdimg_flush_layers(struct vdimg_device *dev);

/* sysfs.c */
extern const struct attribute_group *vdimg_disk_groups[];

#endif /* _VDIMG_DRV_H */
