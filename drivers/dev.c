// SPDX-License-Identifier: GPL-2.0
/*
 * Devices: attach (open the chain's layers, check their links, create the disk), detach (at once,
 * or when the last opener closes), and the per-device state machine:
 *
 *   BOUND --detach, not open--> DELETING --> gone
 *   BOUND --last close with autoclear--> RUNDOWN --remove work--> gone
 *
 * A device exists from attach to detach only; its index comes from an IDR. Opening the device
 * holds the module, so module unload only ever meets devices that nobody has open; it tears those
 * down after flushing them. No format knowledge here.
 */
#include "vdimg.h"
#include <linux/idr.h>
#include <linux/file.h>
#include <linux/pagemap.h>
#include <linux/sched/mm.h>
#include <linux/workqueue.h>

static DEFINE_IDR(vdimg_idr);
/* protects vdimg_idr, and serialises device creation and removal */
static DEFINE_MUTEX(vdimg_idr_mutex);
static int vdimg_major;
static unsigned int vdimg_part_shift;
static struct workqueue_struct *vdimg_remove_wq;

#define VDIMG_MAX_HW_QUEUES	16
#define VDIMG_QUEUE_DEPTH	128

static VDIMG_BDOPS_OPEN(vdimg_bdev_open)
{
	struct vdimg_device *dev = VDIMG_BDOPS_DISK->private_data;
	int ret = 0;

	mutex_lock(&dev->lock);
	if (dev->state != VDIMG_STATE_BOUND)
		ret = -ENXIO;
	else
		dev->open_count++;
	mutex_unlock(&dev->lock);
	return ret;
}

static VDIMG_BDOPS_RELEASE(vdimg_bdev_release)
{
	struct vdimg_device *dev = disk->private_data;

	mutex_lock(&dev->lock);
	if (!WARN_ON_ONCE(!dev->open_count) && !--dev->open_count && dev->autoclear &&
	    dev->state == VDIMG_STATE_BOUND) {
		dev->state = VDIMG_STATE_RUNDOWN;
		queue_work(vdimg_remove_wq, &dev->remove_work);
	}
	mutex_unlock(&dev->lock);
}

static void vdimg_free_disk(struct gendisk *disk)
{
	struct vdimg_device *dev = disk->private_data;

	mutex_destroy(&dev->lock);
	kfree(dev);
}

static const struct block_device_operations vdimg_fops = {
	.owner = THIS_MODULE,
	.open = vdimg_bdev_open,
	.release = vdimg_bdev_release,
	.free_disk = vdimg_free_disk,
};

/* ---- layers ---- */

static bool vdimg_can_dio(struct file *file, unsigned int lbs, unsigned int *align)
{
	struct inode *inode = file->f_mapping->host;
	unsigned int bs = SECTOR_SIZE;

	if (!(file->f_mode & FMODE_CAN_ODIRECT))
		return false;
	if (S_ISBLK(inode->i_mode))
		bs = bdev_logical_block_size(I_BDEV(inode));
	else if (inode->i_sb->s_bdev)
		bs = bdev_logical_block_size(inode->i_sb->s_bdev);
	*align = bs;
	return bs <= lbs;
}

/* The inode that identifies a layer's file (for block devices, the device's, not the node's). */
static struct inode *vdimg_file_id(struct file *file)
{
	return file ? file->f_mapping->host : NULL;
}

/* Put the extent files of @l (their gfp masks restored when @restore). */
static void vdimg_layer_put_extents(struct vdimg_layer_k *l, bool restore)
{
	u32 i;

	for (i = 0; i < l->nr_ext; i++) {
		if (!l->ext_vf[i].filp)
			continue;
		if (restore)
			mapping_set_gfp_mask(l->ext_vf[i].filp->f_mapping, l->ext_old_gfp[i]);
		fput(l->ext_vf[i].filp);
	}
	kvfree(l->ext_vf);
	kvfree(l->ext_ptrs);
	kvfree(l->ext_old_gfp);
	l->ext_vf = NULL;
	l->ext_ptrs = NULL;
	l->ext_old_gfp = NULL;
	l->nr_ext = 0;
	l->img.extents = NULL;
	l->img.nr_extents = 0;
}

/*
 * The extent files of @ul (VDIMG_LAYER_EXTENTS): the descriptors copied from userspace, each a
 * readable regular file. Whether one must be writable is the descriptor's business (an RDONLY
 * extent may be opened read-only); a write to one opened read-only fails with an I/O error.
 */
static int vdimg_layer_get_extents(struct vdimg_layer_k *l, const struct vdimg_layer *ul)
{
	u32 n = ul->nr_extents, i;
	s32 *fds;
	int ret = 0;

	fds = kvmalloc_array(n, sizeof(*fds), GFP_KERNEL);
	l->ext_vf = kvcalloc(n, sizeof(*l->ext_vf), GFP_KERNEL);
	l->ext_ptrs = kvcalloc(n, sizeof(*l->ext_ptrs), GFP_KERNEL);
	l->ext_old_gfp = kvcalloc(n, sizeof(*l->ext_old_gfp), GFP_KERNEL);
	if (!fds || !l->ext_vf || !l->ext_ptrs || !l->ext_old_gfp) {
		ret = -ENOMEM;
		goto out;
	}
	l->nr_ext = n;
	if (copy_from_user(fds, u64_to_user_ptr(ul->extent_fds), (size_t)n * sizeof(*fds))) {
		ret = -EFAULT;
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct file *f = fget(fds[i]);

		if (!f) {
			ret = -EBADF;
			goto out;
		}
		vdimg_file_init(&l->ext_vf[i], f);
		l->ext_ptrs[i] = &l->ext_vf[i];
		/* block devices: VMDK raw-device extents (vdimgctl opens them only when asked) */
		if (!S_ISREG(file_inode(f)->i_mode) && !S_ISBLK(file_inode(f)->i_mode)) {
			ret = -EINVAL;
			goto out;
		}
		if (!(f->f_mode & FMODE_READ) || vdimg_file_id(f) == vdimg_file_id(l->vf.filp)) {
			ret = -EBADF;
			goto out;
		}
	}
	l->img.extents = l->ext_ptrs;
	l->img.nr_extents = n;
out:
	kvfree(fds);
	return ret;
}

static void vdimg_layer_close(struct vdimg_layer_k *l)
{
	if (!l->vf.filp)
		return;
	if (l->img.fmt) {
		u32 i;

		vdimg_image_close(&l->img);
		vdimg_file_trim_tail(&l->vf, l->name);
		vdimg_file_trim_tail(&l->data_vf, l->name);
		for (i = 0; i < l->nr_ext; i++)
			vdimg_file_trim_tail(&l->ext_vf[i], l->name);
		mapping_set_gfp_mask(l->vf.filp->f_mapping, l->old_gfp_mask);
		if (l->data_vf.filp)
			mapping_set_gfp_mask(l->data_vf.filp->f_mapping, l->data_old_gfp_mask);
	}
	vdimg_layer_put_extents(l, !!l->img.fmt);
	fput(l->vf.filp);
	l->vf.filp = NULL;
	if (l->data_vf.filp) {
		fput(l->data_vf.filp);
		l->data_vf.filp = NULL;
	}
	kfree(l->name);
	l->name = NULL;
}

/*
 * A chain cannot hold the same file twice (as a layer or as a data file): that is how a cycle, or
 * one image opened twice with different modes, shows up here. @l is to become layer @pos, over
 * @below[0..pos-1]; its files are open, its image not yet.
 */
static int vdimg_layer_unique(struct vdimg_layer_k **below, unsigned int pos,
			      struct vdimg_layer_k *l)
{
	struct inode *mine[2] = { vdimg_file_id(l->vf.filp), vdimg_file_id(l->data_vf.filp) };
	unsigned int i, a, b;

	if (mine[0] == mine[1]) {
		pr_err("%pD (layer %u) is its own data file: a chain cannot contain the same file twice\n",
		       l->vf.filp, pos);
		return -ELOOP;
	}
	for (i = 0; i < pos; i++) {
		struct file *theirs[2] = { below[i]->vf.filp, below[i]->data_vf.filp };

		for (a = 0; a < 2; a++) {
			for (b = 0; b < 2; b++) {
				if (!mine[a] || !theirs[b] || vdimg_file_id(theirs[b]) != mine[a])
					continue;
				pr_err("%pD (%slayer %u) and %pD (%slayer %u) are the same file: a chain cannot contain the same file twice\n",
				       theirs[b], b ? "data file of " : "", i,
				       a ? l->data_vf.filp : l->vf.filp,
				       a ? "data file of " : "", pos);
				return -ELOOP;
			}
		}
	}
	return 0;
}

/* The inode of @l's file @k: 0 the image, 1 its data file, 2.. its extent files; NULL if none. */
static struct inode *vdimg_layer_inode(struct vdimg_layer_k *l, u32 k)
{
	if (k == 0)
		return vdimg_file_id(l->vf.filp);
	if (k == 1)
		return vdimg_file_id(l->data_vf.filp);
	return k - 2 < l->nr_ext ? vdimg_file_id(l->ext_vf[k - 2].filp) : NULL;
}

static bool vdimg_layer_holds(struct vdimg_layer_k *l, struct inode *inode)
{
	u32 k;

	for (k = 0; k < 2 + l->nr_ext; k++)
		if (vdimg_layer_inode(l, k) == inode)
			return true;
	return false;
}

/*
 * A file that one device writes is in no other device: refuse @l (to be a layer of @dev, written
 * when @written) if another device holds one of its files and either of the two writes it. Two
 * devices may share read-only layers (a golden base under two overlays).
 * Context: vdimg_idr_mutex held (no device's layers change).
 */
static int vdimg_layer_exclusive(struct vdimg_device *dev, struct vdimg_layer_k *l, bool written)
{
	struct vdimg_device *o;
	unsigned int j;
	int id;
	u32 k;

	lockdep_assert_held(&vdimg_idr_mutex);
	idr_for_each_entry(&vdimg_idr, o, id) {
		if (o == dev)
			continue;
		for (j = 0; j < o->nr_layers; j++) {
			struct vdimg_layer_k *ol = o->layers[j];
			bool theirs = !(ol->img.flags & VDIMG_IMG_READ_ONLY);

			if (!written && !theirs)
				continue;
			for (k = 0; k < 2 + l->nr_ext; k++) {
				struct inode *inode = vdimg_layer_inode(l, k);

				if (!inode || !vdimg_layer_holds(ol, inode))
					continue;
				pr_err("%s is %s vdimg%d (layer %u): one device at a time may write an image\n",
				       l->name ?: "a file", theirs ? "written by" : "a layer of",
				       o->index, j);
				return -EBUSY;
			}
		}
	}
	return 0;
}

/*
 * Open @ul into @l (zeroed) as layer @pos over @below[0..pos-1]: the writable top unless @top is
 * false or the device is read-only.
 */
static int vdimg_layer_open(struct vdimg_device *dev, struct vdimg_layer_k **below,
			    unsigned int pos, struct vdimg_layer_k *l, const struct vdimg_layer *ul,
			    bool top)
{
	bool ro = (dev->attach_flags & VDIMG_ATTACH_READ_ONLY) || !top;
	unsigned int oflags = 0;
	u32 i;
	struct address_space *mapping;
	struct file *file;
	umode_t mode;
	int ret;

	file = fget(ul->fd);
	if (!file)
		return -EBADF;
	vdimg_file_init(&l->vf, file);
	mode = file_inode(file)->i_mode;
	if (S_ISDIR(mode))
		return -EISDIR;
	if (!S_ISREG(mode) && !S_ISBLK(mode))
		return -EINVAL;
	if (!(file->f_mode & FMODE_READ) || (!ro && !(file->f_mode & FMODE_WRITE)))
		return -EBADF;
	l->name = kasprintf(GFP_KERNEL, "%pD", file);
	if (!l->name)
		return -ENOMEM;
	l->img.file = &l->vf;
	l->img.name = l->name;
	if (ul->flags & VDIMG_LAYER_SNAPSHOT) {
		if (!ro) {
			pr_err("%s: an internal snapshot is read-only: attach read-only or under an overlay\n",
			       l->name);
			return -EROFS;
		}
		l->img.snapshot = ul->snapshot;
	}
	if (ul->flags & VDIMG_LAYER_DATA_FILE) {
		struct file *df = fget(ul->data_fd);

		if (!df)
			return -EBADF;
		vdimg_file_init(&l->data_vf, df);
		if (!S_ISREG(file_inode(df)->i_mode))
			return -EINVAL;
		if (!(df->f_mode & FMODE_READ) || (!ro && !(df->f_mode & FMODE_WRITE)))
			return -EBADF;
		l->img.data_file = &l->data_vf;
	}
	if (ul->flags & VDIMG_LAYER_EXTENTS) {
		ret = vdimg_layer_get_extents(l, ul);
		if (ret)
			return ret;
	}
	ret = vdimg_layer_unique(below, pos, l);
	if (ret)
		return ret;

	if (ro)
		oflags |= VDIMG_OPEN_READ_ONLY;
	if (!top)
		oflags |= VDIMG_OPEN_HAS_CHILD;
	if (dev->attach_flags & VDIMG_ATTACH_FORCE_CSUM)
		oflags |= VDIMG_OPEN_FORCE_CSUM;
	/* never guess raw for a writable top: a guest could forge a header */
	if (ro || (dev->attach_flags & VDIMG_ATTACH_FORCE_RAW))
		oflags |= VDIMG_OPEN_ALLOW_RAW;
	ret = vdimg_image_open(&l->img, ul->format, oflags);
	if (ret)
		return ret;

	mapping = file->f_mapping;
	l->old_gfp_mask = mapping_gfp_mask(mapping);
	mapping_set_gfp_mask(mapping, l->old_gfp_mask & ~(__GFP_IO | __GFP_FS));
	if (l->data_vf.filp) {
		mapping = l->data_vf.filp->f_mapping;
		l->data_old_gfp_mask = mapping_gfp_mask(mapping);
		mapping_set_gfp_mask(mapping, l->data_old_gfp_mask & ~(__GFP_IO | __GFP_FS));
	}
	for (i = 0; i < l->nr_ext; i++) {
		mapping = l->ext_vf[i].filp->f_mapping;
		l->ext_old_gfp[i] = mapping_gfp_mask(mapping);
		mapping_set_gfp_mask(mapping, l->ext_old_gfp[i] & ~(__GFP_IO | __GFP_FS));
	}
	return 0;
}

/* @img (layer @pos) over @parent: the checks that need no identity (see vdimg_chain_check). */
static int vdimg_link_check(struct vdimg_image *img, struct vdimg_image *parent, unsigned int pos)
{
	if (!(img->flags & VDIMG_IMG_HAS_PARENT) && !(img->fmt->caps & VDIMG_CAP_EXTERNAL_PARENT)) {
		pr_err("%s: not a differencing image, cannot be layered over %s\n",
		       img->name, parent->name);
		return -EINVAL;
	}
	if ((img->fmt->caps & VDIMG_CAP_SAME_SIZE_PARENT) && img->size != parent->size) {
		pr_err("%s (layer %u): a %s child must have its parent's size: it has %llu bytes, its parent %s has %llu\n",
		       img->name, pos, img->fmt->name, (unsigned long long)img->size, parent->name,
		       (unsigned long long)parent->size);
		return -EINVAL;
	}
	return 0;
}

/* Check that the layers form a chain: only the base may stand alone, every link verified. */
static int vdimg_chain_check(struct vdimg_device *dev)
{
	unsigned int i;
	int ret;

	for (i = 0; i < dev->nr_layers; i++) {
		struct vdimg_image *img = &dev->layers[i]->img;
		struct vdimg_image *parent = i ? &dev->layers[i - 1]->img : NULL;

		if (!parent && (img->flags & VDIMG_IMG_HAS_PARENT)) {
			pr_err("%s: a differencing image needs its parent attached below it\n",
			       img->name);
			return -ENOENT;
		}
		if (!parent)
			continue;
		ret = vdimg_link_check(img, parent, i);
		if (ret)
			return ret;
		if ((dev->attach_flags & VDIMG_ATTACH_FORCE_LINK) || !img->fmt->verify_parent)
			continue;
		ret = img->fmt->verify_parent(img, parent);
		if (ret) {
			pr_err("%s: does not match its parent %s (attach with force to override)\n",
			       img->name, parent->name);
			return ret;
		}
	}
	return 0;
}

/* ---- devices ---- */

static void vdimg_remove_workfn(struct work_struct *work);

static int vdimg_setup_disk(struct vdimg_device *dev)
{
	struct vdimg_layer_k *top = vdimg_top(dev);
	bool ro = dev->attach_flags & VDIMG_ATTACH_READ_ONLY;
	struct vdimg_limits lim = {
		.logical_block_size = dev->lbs,
		.physical_block_size = max(dev->lbs, top->img.pbs),
		.max_hw_sectors = 8192,
		.max_segments = 256,
	};
	struct gendisk *disk;
	int ret;

	if (!ro && top->img.fmt->discard) {
		lim.max_discard_sectors = UINT_MAX >> SECTOR_SHIFT;
		lim.discard_granularity = max(dev->lbs, top->img.alloc_unit ?: dev->lbs);
		lim.max_write_zeroes_sectors = UINT_MAX >> SECTOR_SHIFT;
	}

	dev->tag_set.ops = &vdimg_mq_ops;
	dev->tag_set.nr_hw_queues = min_t(unsigned int, num_online_cpus(), VDIMG_MAX_HW_QUEUES);
	dev->tag_set.queue_depth = VDIMG_QUEUE_DEPTH;
	dev->tag_set.numa_node = NUMA_NO_NODE;
	dev->tag_set.cmd_size = sizeof(struct vdimg_cmd);
	dev->tag_set.flags = BLK_MQ_F_SHOULD_MERGE;
	dev->tag_set.driver_data = dev;
	ret = blk_mq_alloc_tag_set(&dev->tag_set);
	if (ret)
		return ret;

	disk = vdimg_alloc_disk(&dev->tag_set, &lim, dev);
	if (IS_ERR(disk)) {
		blk_mq_free_tag_set(&dev->tag_set);
		return PTR_ERR(disk);
	}
	disk->major = vdimg_major;
	disk->first_minor = dev->index << vdimg_part_shift;
	disk->minors = 1 << vdimg_part_shift;
	disk->fops = &vdimg_fops;
	disk->private_data = dev;
	if (!(dev->attach_flags & VDIMG_ATTACH_PARTSCAN))
		disk->flags |= GENHD_FL_NO_PART;
	snprintf(disk->disk_name, sizeof(disk->disk_name), "vdimg%d", dev->index);
	set_capacity(disk, dev->size >> SECTOR_SHIFT);
	set_disk_ro(disk, ro);
	dev->disk = disk;
	return 0;
}

static void vdimg_close_layers(struct vdimg_device *dev)
{
	unsigned int i;

	if (!dev->layers)
		return;
	for (i = dev->nr_layers; i-- > 0;) {
		if (!dev->layers[i])
			continue;
		vdimg_layer_close(dev->layers[i]);
		kfree(dev->layers[i]);
	}
	kvfree(dev->layers);
	dev->layers = NULL;
}

/* a regular file that fallocate() can extend: see vdimg_alloc_hole() */
static bool vdimg_file_holes(struct file *f)
{
	return f && S_ISREG(file_inode(f)->i_mode) && (f->f_mode & FMODE_WRITE) &&
	       f->f_op->fallocate;
}

/* Direct I/O on @l's file when the device allows it and the file and dev->lbs permit it. */
static void vdimg_layer_dio(struct vdimg_device *dev, struct vdimg_layer_k *l)
{
	u32 i;

	l->vf.holes = vdimg_file_holes(l->vf.filp);
	l->data_vf.holes = vdimg_file_holes(l->data_vf.filp);
	for (i = 0; i < l->nr_ext; i++)
		l->ext_vf[i].holes = vdimg_file_holes(l->ext_vf[i].filp);
	l->dio_align = SECTOR_SIZE;
	l->dio = false;
	l->data_dio_align = SECTOR_SIZE;
	l->data_dio = false;
	l->vf.dio_align = 0;
	l->data_vf.dio_align = 0;
	if (dev->attach_flags & VDIMG_ATTACH_BUFFERED)
		return;
	l->dio = vdimg_can_dio(l->vf.filp, dev->lbs, &l->dio_align);
	if (l->data_vf.filp)
		l->data_dio = vdimg_can_dio(l->data_vf.filp, dev->lbs, &l->data_dio_align);
	l->vf.dio_align = l->dio ? l->dio_align : 0;
	l->data_vf.dio_align = l->data_dio ? l->data_dio_align : 0;
}

/* Pick the logical block size and direct I/O for a device whose layers are open. */
static int vdimg_setup_io(struct vdimg_device *dev, u32 want_lbs)
{
	struct vdimg_layer_k *top = vdimg_top(dev);
	bool want_dio = dev->attach_flags & VDIMG_ATTACH_DIRECT_IO;
	unsigned int i;

	dev->lbs = want_lbs ?: top->img.lbs;
	if (dev->lbs < top->img.lbs) {
		pr_err("%s: the image has %u-byte sectors; cannot expose %u-byte ones\n",
		       top->name, top->img.lbs, dev->lbs);
		return -EINVAL;
	}
	dev->size = top->img.size;
	if (dev->size % dev->lbs) {
		pr_err("%s: size %llu is not a multiple of the %u-byte logical block size\n",
		       top->name, (unsigned long long)dev->size, dev->lbs);
		return -EINVAL;
	}
	for (i = 0; i < dev->nr_layers; i++)
		vdimg_layer_dio(dev, dev->layers[i]);
	if (want_dio && !top->dio) {
		pr_err("%s: direct I/O is not possible on this file (file system or sector size)\n",
		       top->name);
		return -EINVAL;
	}
	return 0;
}

int vdimg_dev_attach(const struct vdimg_attach *a, const struct vdimg_layer *ul)
{
	struct vdimg_device *dev;
	unsigned int i;
	int ret;

	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	mutex_init(&dev->lock);
	spin_lock_init(&dev->range_lock);
	INIT_LIST_HEAD(&dev->ranges);
	init_waitqueue_head(&dev->range_wait);
	INIT_WORK(&dev->remove_work, vdimg_remove_workfn);
	dev->attach_flags = a->flags;
	dev->nr_layers = a->nr_layers;
	dev->layers = kvcalloc(a->nr_layers, sizeof(*dev->layers), GFP_KERNEL);
	if (!dev->layers) {
		ret = -ENOMEM;
		goto out_free_dev;
	}
	for (i = 0; i < dev->nr_layers; i++) {
		dev->layers[i] = kzalloc(sizeof(*dev->layers[i]), GFP_KERNEL);
		if (!dev->layers[i]) {
			ret = -ENOMEM;
			goto out_close_layers;
		}
		ret = vdimg_layer_open(dev, dev->layers, i, dev->layers[i], &ul[i],
				       i == dev->nr_layers - 1);
		if (ret)
			goto out_close_layers;
	}
	ret = vdimg_chain_check(dev);
	if (ret)
		goto out_close_layers;
	ret = vdimg_setup_io(dev, a->logical_block_size);
	if (ret)
		goto out_close_layers;

	mutex_lock(&vdimg_idr_mutex);
	for (i = 0; i < dev->nr_layers; i++) {
		ret = vdimg_layer_exclusive(dev, dev->layers[i],
					    !(dev->layers[i]->img.flags & VDIMG_IMG_READ_ONLY));
		if (ret)
			goto out_unlock;
	}
	if (a->index == VDIMG_INDEX_ANY)
		ret = idr_alloc(&vdimg_idr, dev, 0, vdimg_max_devices, GFP_KERNEL);
	else if (a->index >= vdimg_max_devices)
		ret = -EINVAL;
	else
		ret = idr_alloc(&vdimg_idr, dev, a->index, a->index + 1, GFP_KERNEL);
	if (ret == -ENOSPC)
		ret = a->index == VDIMG_INDEX_ANY ? -ENOSPC : -EBUSY;
	if (ret < 0)
		goto out_unlock;
	dev->index = ret;

	dev->wq = alloc_workqueue("vdimg%d", WQ_UNBOUND | WQ_FREEZABLE | WQ_MEM_RECLAIM, 0,
				  dev->index);
	if (!dev->wq) {
		ret = -ENOMEM;
		goto out_remove_idr;
	}
	ret = vdimg_setup_disk(dev);
	if (ret)
		goto out_destroy_wq;
	dev->state = VDIMG_STATE_BOUND;
	ret = device_add_disk(NULL, dev->disk, vdimg_disk_groups);
	if (ret)
		goto out_cleanup_disk;
	/*
	 * Only now: the partition scan inside device_add_disk() opens and closes the disk, and that
	 * close must not count as the last one.
	 */
	if (a->flags & VDIMG_ATTACH_AUTOCLEAR) {
		mutex_lock(&dev->lock);
		dev->autoclear = true;
		mutex_unlock(&dev->lock);
	}
	mutex_unlock(&vdimg_idr_mutex);
	return dev->index;

out_cleanup_disk:
	dev->state = VDIMG_STATE_UNBOUND;
	put_disk(dev->disk);
	blk_mq_free_tag_set(&dev->tag_set);
out_destroy_wq:
	destroy_workqueue(dev->wq);
out_remove_idr:
	idr_remove(&vdimg_idr, dev->index);
out_unlock:
	mutex_unlock(&vdimg_idr_mutex);
out_close_layers:
	vdimg_close_layers(dev);
out_free_dev:
	mutex_destroy(&dev->lock);
	kfree(dev);
	return ret;
}

/*
 * Tear down a device nobody has open. Called with vdimg_idr_mutex held.
 * Return: the result of the final flush; the device is gone either way.
 */
static int vdimg_dev_remove(struct vdimg_device *dev)
{
	int ret;

	lockdep_assert_held(&vdimg_idr_mutex);
	del_gendisk(dev->disk);
	/* every request has completed: write what the backend still holds, then sync */
	ret = vdimg_flush_layers(dev);
	if (ret)
		pr_err("vdimg%d: flushing %s on detach failed: %d\n", dev->index,
		       vdimg_top(dev)->name, ret);
	blk_mq_free_tag_set(&dev->tag_set);
	destroy_workqueue(dev->wq);
	vdimg_close_layers(dev);
	idr_remove(&vdimg_idr, dev->index);
	put_disk(dev->disk);	/* frees dev via vdimg_free_disk() */
	return ret;
}

static void vdimg_remove_workfn(struct work_struct *work)
{
	struct vdimg_device *dev = container_of(work, struct vdimg_device, remove_work);

	mutex_lock(&vdimg_idr_mutex);
	vdimg_dev_remove(dev);
	mutex_unlock(&vdimg_idr_mutex);
}

int vdimg_dev_detach(u32 index, u32 flags)
{
	struct vdimg_device *dev;
	bool remove = false;
	int ret = 0;

	mutex_lock(&vdimg_idr_mutex);
	dev = idr_find(&vdimg_idr, index);
	if (!dev) {
		ret = -ENXIO;
		goto out;
	}
	mutex_lock(&dev->lock);
	if (dev->state != VDIMG_STATE_BOUND) {
		/* already on its way out: fine for a deferred detach */
		ret = (flags & VDIMG_DETACH_DEFERRED) ? 0 : -EBUSY;
	} else if (dev->open_count) {
		if (flags & VDIMG_DETACH_DEFERRED)
			dev->autoclear = true;
		else
			ret = -EBUSY;
	} else {
		dev->state = VDIMG_STATE_DELETING;
		remove = true;
	}
	mutex_unlock(&dev->lock);
	if (remove)
		ret = vdimg_dev_remove(dev);
out:
	mutex_unlock(&vdimg_idr_mutex);
	return ret;
}

static void vdimg_fill_layer_info(struct vdimg_layer_k *l, struct vdimg_layer_info *li)
{
	const struct vdimg_image *img = &l->img;

	memset(li, 0, sizeof(*li));
	li->format = img->fmt->id;
	li->virtual_size = img->size;
	li->file_size = vdimg_file_size(&l->vf);
	if (img->flags & VDIMG_IMG_READ_ONLY)
		li->flags |= VDIMG_LAYERI_READ_ONLY;
	if (l->dio)
		li->flags |= VDIMG_LAYERI_DIRECT_IO;
	if (img->flags & VDIMG_IMG_HAS_UUID) {
		li->flags |= VDIMG_LAYERI_HAS_UUID;
		memcpy(li->uuid, img->uuid, sizeof(li->uuid));
	}
	if (img->flags & VDIMG_IMG_HAS_PARENT_UUID) {
		li->flags |= VDIMG_LAYERI_HAS_PARENT_UUID;
		memcpy(li->parent_uuid, img->parent_uuid, sizeof(li->parent_uuid));
	}
	strscpy(li->format_name, img->fmt->name, sizeof(li->format_name));
	strscpy(li->variant, img->variant, sizeof(li->variant));
}

int vdimg_dev_info(struct vdimg_dev_info *info, void __user *out)
{
	struct vdimg_layer_info *li = NULL;
	struct vdimg_device *dev;
	unsigned int i, n = 0;
	int ret = 0;

	if (out && info->layers_cap) {
		li = kvcalloc(min(info->layers_cap, VDIMG_MAX_LAYERS), sizeof(*li), GFP_KERNEL);
		if (!li)
			return -ENOMEM;
	}
	mutex_lock(&vdimg_idr_mutex);
	dev = idr_find(&vdimg_idr, info->index);
	if (!dev) {
		ret = -ENXIO;
		goto out;
	}
	mutex_lock(&dev->lock);
	info->state = dev->state;
	info->dev_flags = 0;
	if (dev->attach_flags & VDIMG_ATTACH_READ_ONLY)
		info->dev_flags |= VDIMG_DEV_READ_ONLY;
	if (dev->attach_flags & VDIMG_ATTACH_PARTSCAN)
		info->dev_flags |= VDIMG_DEV_PARTSCAN;
	if (vdimg_top(dev)->dio)
		info->dev_flags |= VDIMG_DEV_DIRECT_IO;
	if (dev->autoclear)
		info->dev_flags |= VDIMG_DEV_AUTOCLEAR;
	/* dev->lock: a live snapshot may replace the layers */
	info->nr_layers = dev->nr_layers;
	info->size_bytes = dev->size;
	info->logical_block_size = dev->lbs;
	info->physical_block_size = queue_physical_block_size(dev->disk->queue);
	if (li)
		n = min3(info->layers_cap, dev->nr_layers, VDIMG_MAX_LAYERS);
	for (i = 0; i < n; i++)
		vdimg_fill_layer_info(dev->layers[i], &li[i]);
	mutex_unlock(&dev->lock);
out:
	mutex_unlock(&vdimg_idr_mutex);
	/* no user memory is touched under the mutex: a faulting buffer stalls only its caller */
	for (i = 0; !ret && i < n; i++) {
		void __user *dst = (void __user *)out + (size_t)i * info->layer_info_size;
		size_t len = min_t(size_t, sizeof(*li), info->layer_info_size);

		if (copy_to_user(dst, &li[i], len) ||
		    clear_user(dst + len, info->layer_info_size - len))
			ret = -EFAULT;
	}
	kvfree(li);
	return ret;
}

/* The new top's file: a regular file open for reading and writing. */
static int vdimg_snapshot_fd_check(int fd)
{
	struct file *file = fget(fd);
	umode_t mode;
	int ret = 0;

	if (!file)
		return -EBADF;
	mode = file_inode(file)->i_mode;
	if (S_ISDIR(mode))
		ret = -EISDIR;
	else if (!S_ISREG(mode) && !S_ISBLK(mode))	/* a block device since ABI 5 (an LV) */
		ret = -EINVAL;
	else if ((file->f_mode & (FMODE_READ | FMODE_WRITE)) != (FMODE_READ | FMODE_WRITE))
		ret = -EBADF;
	fput(file);
	return ret;
}

/*
 * The attached, writable device @index for a change of its layers or size (snapshot, resize):
 * -ENXIO when there is none or it is being detached, -EROFS when it or its top is read-only.
 * Context: vdimg_idr_mutex held.
 */
static struct vdimg_device *vdimg_writable_dev(u32 index)
{
	struct vdimg_device *dev = idr_find(&vdimg_idr, index);
	bool bound;

	lockdep_assert_held(&vdimg_idr_mutex);
	if (!dev)
		return ERR_PTR(-ENXIO);
	mutex_lock(&dev->lock);
	bound = dev->state == VDIMG_STATE_BOUND;
	mutex_unlock(&dev->lock);
	if (!bound)
		return ERR_PTR(-ENXIO);
	if ((dev->attach_flags & VDIMG_ATTACH_READ_ONLY) ||
	    (vdimg_top(dev)->img.flags & VDIMG_IMG_READ_ONLY))
		return ERR_PTR(-EROFS);
	return dev;
}

/*
 * Stop a device's I/O for a change of its layers or size, the way request-based dm suspends: the
 * freeze drains the requests in flight, the quiesce keeps those that arrive from being dispatched,
 * and the freeze ends at once. Only then is it safe to do I/O on the backing files (flush, sync,
 * header writes) with the device stopped: a frozen queue is a lock every submitter takes
 * (q_usage_counter, which lockdep models as one), so syncing the host file system under it orders
 * that file system's journal after the journal of a file system on the device, which submits in a
 * handle. Submitters to a quiesced queue only queue their requests and wait for them, as on any
 * slow device. Allocations meanwhile must not recurse into I/O on the device: NOIO until resume.
 *
 * Return: the flags for vdimg_dev_resume().
 */
static unsigned int vdimg_dev_suspend(struct vdimg_device *dev)
{
	struct request_queue *q = dev->disk->queue;
	unsigned int memflags = vdimg_freeze_queue(q);

	blk_mq_quiesce_queue(q);
	vdimg_unfreeze_queue(q, memflags);
	return memalloc_noio_save();
}

static void vdimg_dev_resume(struct vdimg_device *dev, unsigned int noio_flags)
{
	memalloc_noio_restore(noio_flags);
	blk_mq_unquiesce_queue(dev->disk->queue);
}

/**
 * vdimg_dev_snapshot() - push a new, empty differencing image on top of an attached device
 * @s: the request, validated by ctl.c
 *
 * The new layer is opened and checked (differencing, the device's size, a sector size the device
 * can serve, no file already in the chain) before anything changes. Then the device is suspended,
 * the old top flushed and synced, the new top's parent link verified against the old top as it is
 * now (identity fields such as a VHDX data write GUID only settle once the old top is quiesced),
 * and the layer array replaced. From then on the old top is read-only. Any failure leaves the
 * device as it was.
 *
 * Context: process context; takes vdimg_idr_mutex (so detach waits) and, for the swap, dev->lock.
 * Return: 0, or -ENXIO (no such device), -EROFS (read-only device), -E2BIG (chain full), -EBADF,
 * -EINVAL (not a differencing image, size or sector size mismatch, no direct I/O possible),
 * -ELOOP (the file is already in the chain), -ESTALE (not a child of the top), an open or flush
 * error.
 */
int vdimg_dev_snapshot(const struct vdimg_snapshot *s)
{
	const struct vdimg_layer ul = {
		.fd = s->fd,
		.format = s->format,
		.flags = s->layer_flags,
		.data_fd = s->data_fd,
	};
	struct vdimg_layer_k **layers = NULL, **old, *l, *top;
	struct vdimg_device *dev;
	unsigned int n, noio;
	int ret;

	l = kzalloc(sizeof(*l), GFP_KERNEL);
	if (!l)
		return -ENOMEM;
	mutex_lock(&vdimg_idr_mutex);
	dev = vdimg_writable_dev(s->index);
	if (IS_ERR(dev)) {
		ret = PTR_ERR(dev);
		goto out_unlock;
	}
	/* layers and nr_layers change only here and in resize, under vdimg_idr_mutex */
	n = dev->nr_layers;
	top = vdimg_top(dev);
	if (n >= VDIMG_MAX_LAYERS) {
		ret = -E2BIG;
		goto out_unlock;
	}
	ret = vdimg_snapshot_fd_check(s->fd);
	if (ret)
		goto out_unlock;
	layers = kvcalloc(n + 1, sizeof(*layers), GFP_KERNEL);
	if (!layers) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	ret = vdimg_layer_open(dev, dev->layers, n, l, &ul, true);
	if (!ret)
		ret = vdimg_layer_exclusive(dev, l, true);
	if (ret)
		goto out_close;
	ret = vdimg_link_check(&l->img, &top->img, n);
	if (ret)
		goto out_close;
	if (l->img.size != dev->size) {
		pr_err("vdimg%d: snapshot: %s has %llu bytes, the device %llu\n", dev->index,
		       l->name, (unsigned long long)l->img.size, (unsigned long long)dev->size);
		ret = -EINVAL;
		goto out_close;
	}
	if (l->img.lbs > dev->lbs) {
		pr_err("vdimg%d: snapshot: %s has %u-byte sectors, the device %u-byte ones\n",
		       dev->index, l->name, l->img.lbs, dev->lbs);
		ret = -EINVAL;
		goto out_close;
	}
	vdimg_layer_dio(dev, l);
	if ((dev->attach_flags & VDIMG_ATTACH_DIRECT_IO) && !l->dio) {
		pr_err("vdimg%d: snapshot: direct I/O is not possible on %s\n",
		       dev->index, l->name);
		ret = -EINVAL;
		goto out_close;
	}
	memcpy(layers, dev->layers, n * sizeof(*layers));
	layers[n] = l;

	noio = vdimg_dev_suspend(dev);
	/* no request in flight: what the old top holds goes to its file, then the file is synced */
	ret = vdimg_flush_layers(dev);
	if (ret) {
		pr_err("vdimg%d: snapshot: flushing %s failed: %d\n", dev->index, top->name, ret);
		goto out_resume;
	}
	if (!(s->flags & VDIMG_SNAPSHOT_FORCE_LINK) && l->img.fmt->verify_parent) {
		ret = l->img.fmt->verify_parent(&l->img, &top->img);
		if (ret) {
			pr_err("vdimg%d: snapshot: %s is not a child of the top layer %s (force to override)\n",
			       dev->index, l->name, top->name);
			goto out_resume;
		}
	}
	mutex_lock(&dev->lock);
	old = dev->layers;
	dev->layers = layers;
	dev->nr_layers = n + 1;
	top->img.flags |= VDIMG_IMG_READ_ONLY;
	mutex_unlock(&dev->lock);
	vdimg_dev_resume(dev, noio);
	pr_info("vdimg%d: snapshot: %s over %s, %u layers\n",
		dev->index, l->name, top->name, n + 1);
	mutex_unlock(&vdimg_idr_mutex);
	kvfree(old);
	return 0;

out_resume:
	vdimg_dev_resume(dev, noio);
out_close:
	vdimg_layer_close(l);
out_unlock:
	mutex_unlock(&vdimg_idr_mutex);
	kvfree(layers);
	kfree(l);
	return ret;
}

/**
 * vdimg_dev_resize() - grow an attached device online
 * @index: the device
 * @new_size: the new size in bytes
 *
 * Only the top layer grows, through its backend's ->grow(), with the device suspended and the
 * layers' metadata flushed and synced first. The layers below keep their size: reads past a lower
 * layer's end are zeros (vdimg_read_chain()), so the device refuses when a lower layer is larger
 * than the device, whose bytes would otherwise show through in the new range. The capacity changes
 * (with a change uevent) only once the backend has made the new size durable.
 *
 * Context: process context; takes vdimg_idr_mutex (so detach and snapshot wait) and dev->lock.
 * Return: 0 (also when @new_size is the current size), or -ENXIO (no such device), -EROFS
 * (read-only device), -EINVAL (a shrink, a size that is not a multiple of the logical block size,
 * a lower layer larger than the device, a format whose children keep their parent's size),
 * -EOPNOTSUPP (the top layer's format cannot grow online), -EFBIG (its tables cannot address the
 * new size in place), a flush or I/O error.
 */
int vdimg_dev_resize(u32 index, u64 new_size)
{
	struct vdimg_layer_k *top;
	struct vdimg_device *dev;
	unsigned int noio, i;
	u64 old;
	int ret;

	mutex_lock(&vdimg_idr_mutex);
	dev = vdimg_writable_dev(index);
	if (IS_ERR(dev)) {
		ret = PTR_ERR(dev);
		goto out_unlock;
	}
	/* size, layers and nr_layers change only under vdimg_idr_mutex */
	top = vdimg_top(dev);
	old = dev->size;
	if (new_size < old) {
		pr_err("vdimg%d: resize: online shrink is not supported\n", dev->index);
		ret = -EINVAL;
		goto out_unlock;
	}
	if (new_size % dev->lbs || new_size >> 62) {
		pr_err("vdimg%d: resize: %llu bytes is not a multiple of the %u-byte sectors\n",
		       dev->index, (unsigned long long)new_size, dev->lbs);
		ret = -EINVAL;
		goto out_unlock;
	}
	ret = 0;
	if (new_size == old)
		goto out_unlock;
	if (!top->img.fmt->grow) {
		pr_err("vdimg%d: resize: %s: %s images cannot grow online (detach and use vdimgctl resize)\n",
		       dev->index, top->name, top->img.fmt->name);
		ret = -EOPNOTSUPP;
		goto out_unlock;
	}
	if (dev->nr_layers > 1 && (top->img.fmt->caps & VDIMG_CAP_SAME_SIZE_PARENT)) {
		pr_err("vdimg%d: resize: %s: a differencing %s image must keep its parent's size\n",
		       dev->index, top->name, top->img.fmt->name);
		ret = -EINVAL;
		goto out_unlock;
	}
	for (i = 0; i + 1 < dev->nr_layers; i++) {
		if (dev->layers[i]->img.size > old) {
			pr_err("vdimg%d: resize: the lower layer %s is larger than the device; its data would show in the new range\n",
			       dev->index, dev->layers[i]->name);
			ret = -EINVAL;
			goto out_unlock;
		}
	}

	noio = vdimg_dev_suspend(dev);
	ret = vdimg_flush_layers(dev);
	if (ret)
		pr_err("vdimg%d: resize: flushing %s failed: %d\n", dev->index, top->name, ret);
	else
		ret = top->img.fmt->grow(&top->img, new_size);
	if (!ret && top->img.size != new_size) {
		WARN_ON_ONCE(1);
		ret = -EIO;
	}
	if (!ret) {
		mutex_lock(&dev->lock);
		dev->size = new_size;
		mutex_unlock(&dev->lock);
	}
	vdimg_dev_resume(dev, noio);
	if (ret) {
		pr_err("vdimg%d: resize: growing %s to %llu bytes failed: %d\n", dev->index,
		       top->name, (unsigned long long)new_size, ret);
		goto out_unlock;
	}
	set_capacity_and_notify(dev->disk, new_size >> SECTOR_SHIFT);
	pr_info("vdimg%d: resize: %llu -> %llu bytes\n", dev->index, (unsigned long long)old,
		(unsigned long long)new_size);
out_unlock:
	mutex_unlock(&vdimg_idr_mutex);
	return ret;
}

int vdimg_dev_init(void)
{
	vdimg_part_shift = fls(vdimg_max_part);
	if (vdimg_max_devices > (1U << (MINORBITS - vdimg_part_shift)))
		vdimg_max_devices = 1U << (MINORBITS - vdimg_part_shift);
	vdimg_remove_wq = alloc_workqueue("vdimg_remove", WQ_UNBOUND, 0);
	if (!vdimg_remove_wq)
		return -ENOMEM;
	vdimg_major = register_blkdev(0, "vdimg");
	if (vdimg_major < 0) {
		destroy_workqueue(vdimg_remove_wq);
		return vdimg_major;
	}
	return 0;
}

/* Module unload: nobody has a device open (that pins the module); remove what is attached. */
void vdimg_dev_exit(void)
{
	struct vdimg_device *dev;
	int id;

	/* autoclear removals already queued run first */
	destroy_workqueue(vdimg_remove_wq);
	mutex_lock(&vdimg_idr_mutex);
	idr_for_each_entry(&vdimg_idr, dev, id) {
		dev->state = VDIMG_STATE_DELETING;
		vdimg_dev_remove(dev);
	}
	idr_destroy(&vdimg_idr);
	mutex_unlock(&vdimg_idr_mutex);
	unregister_blkdev(vdimg_major, "vdimg");
}
