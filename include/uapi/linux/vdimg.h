/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vdimg: block devices backed by virtual-disk image files.
 *
 * The control ABI of /dev/vdimg-control. Every struct starts with a u32 @size that userspace sets
 * to sizeof() of the struct it was compiled with; the kernel accepts older (shorter, but at least
 * the _VER0 size) and newer (longer, with the unknown tail all zero) structs; arrays of per-layer
 * structs carry their element size the same way (layer_size, layer_info_size). Unknown flags,
 * nonzero reserved fields and unknown commands are refused (-EINVAL, -ENOTTY). Attach and detach
 * need CAP_SYS_ADMIN. See Documentation/userspace-api/vdimg.rst.
 */
#ifndef _UAPI_LINUX_VDIMG_H
#define _UAPI_LINUX_VDIMG_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define VDIMG_CONTROL_NAME	"vdimg-control"
#define VDIMG_MAX_LAYERS	1024		/* longest chain one attach accepts */
#define VDIMG_INDEX_ANY		0xffffffffU	/* attach: pick the first free index */

/* Image formats (vdimg_layer.format, vdimg_layer_info.format). */
enum vdimg_format_id {
	VDIMG_FMT_AUTO = 0,	/* probe the image */
	VDIMG_FMT_RAW = 1,
	VDIMG_FMT_VHD = 2,
	VDIMG_FMT_VHDX = 3,
	VDIMG_FMT_VDI = 4,
	VDIMG_FMT_VMDK = 5,
	VDIMG_FMT_QCOW2 = 6,
	VDIMG_FMT_QCOW = 7,
	VDIMG_FMT_QED = 8,
	VDIMG_FMT_PARALLELS = 9,
	VDIMG_FMT_DMG = 10,
	VDIMG_FMT_ISO = 11,
	VDIMG_FMT_CUE = 12,	/* a CUE sheet and its track files (extent files), read-only */
	VDIMG_FMT_COUNT
};

/* vdimg_attach.flags */
#define VDIMG_ATTACH_READ_ONLY	(1U << 0)	/* every layer read-only, device read-only */
#define VDIMG_ATTACH_PARTSCAN	(1U << 1)	/* scan for partitions (vdimgNpM) */
#define VDIMG_ATTACH_DIRECT_IO	(1U << 2)	/* require direct I/O on the backing files */
#define VDIMG_ATTACH_BUFFERED	(1U << 3)	/* never use direct I/O */
#define VDIMG_ATTACH_AUTOCLEAR	(1U << 4)	/* detach when the last opener closes */
#define VDIMG_ATTACH_FORCE_RAW	(1U << 5)	/* writable raw attach of an unrecognised image */
#define VDIMG_ATTACH_FORCE_LINK	(1U << 6)	/* skip parent identity checks between layers */
/* open despite image checksum mismatches (logged as warnings); structural damage still fails */
#define VDIMG_ATTACH_FORCE_CSUM	(1U << 7)
#define VDIMG_ATTACH_FLAGS_ALL	((1U << 8) - 1)

/* vdimg_layer.flags */
/* @data_fd is the image's external data file (qcow2) */
#define VDIMG_LAYER_DATA_FILE	(1U << 0)
/* expose internal snapshot @snapshot (read-only layer) */
#define VDIMG_LAYER_SNAPSHOT	(1U << 1)
/* @extent_fds holds the layer's extent files (a VMDK descriptor naming separate extent files) */
#define VDIMG_LAYER_EXTENTS	(1U << 2)
#define VDIMG_LAYER_FLAGS_ALL	((1U << 3) - 1)
#define VDIMG_MAX_EXTENTS	4096		/* extent files one layer may have */

struct vdimg_layer {
	__s32 fd;		/* open file; the top layer needs FMODE_WRITE unless read-only */
	__u32 format;		/* enum vdimg_format_id, VDIMG_FMT_AUTO to probe */
	__u32 flags;		/* VDIMG_LAYER_* */
	/* VDIMG_LAYER_DATA_FILE: open data file (same mode as @fd); else 0 */
	__s32 data_fd;
	/* VDIMG_LAYER_SNAPSHOT: 1-based index in the image's snapshot table; else 0 */
	__u32 snapshot;
	__u32 __pad;		/* must be zero */
	__u64 __reserved[1];	/* must be zero */
	/* since VDIMG_LAYER_SIZE_VER1 (ABI version 3) */
	__u64 extent_fds;	/* VDIMG_LAYER_EXTENTS: user pointer to __s32[nr_extents]; else 0 */
	__u32 nr_extents;	/* VDIMG_LAYER_EXTENTS: 1..VDIMG_MAX_EXTENTS; else 0 */
	__u32 __pad2;		/* must be zero */
};

#define VDIMG_LAYER_SIZE_VER0	32
#define VDIMG_LAYER_SIZE_VER1	48

struct vdimg_attach {
	__u32 size;		/* in: sizeof(struct vdimg_attach) */
	__u32 flags;		/* in: VDIMG_ATTACH_* */
	__u32 index;		/* in: wanted index or VDIMG_INDEX_ANY; out: the device's index */
	__u32 nr_layers;	/* in: 1..VDIMG_MAX_LAYERS */
	__u64 layers;		/* in: user pointer to struct vdimg_layer[nr_layers], base first */
	__u32 logical_block_size; /* in: 0 (format's own), 512, 2048 or 4096 */
	__u32 layer_size;	/* in: sizeof(struct vdimg_layer), 0 for VDIMG_LAYER_SIZE_VER0 */
	__u64 __reserved[4];	/* must be zero */
};

#define VDIMG_ATTACH_SIZE_VER0	64

/* vdimg_detach.flags */
#define VDIMG_DETACH_DEFERRED	(1U << 0)	/* if open, detach when the last opener closes */
#define VDIMG_DETACH_FLAGS_ALL	((1U << 1) - 1)

struct vdimg_detach {
	__u32 size;		/* in: sizeof(struct vdimg_detach) */
	__u32 flags;		/* in: VDIMG_DETACH_* */
	__u32 index;		/* in: device index */
	__u32 __pad;		/* must be zero */
	__u64 __reserved[2];	/* must be zero */
};

#define VDIMG_DETACH_SIZE_VER0	32

/* vdimg_dev_info.state */
enum vdimg_dev_state {
	VDIMG_STATE_UNBOUND = 0,
	VDIMG_STATE_BOUND = 1,
	VDIMG_STATE_RUNDOWN = 2,
	VDIMG_STATE_DELETING = 3,
};

/* vdimg_dev_info.dev_flags */
#define VDIMG_DEV_READ_ONLY	(1U << 0)
#define VDIMG_DEV_PARTSCAN	(1U << 1)
#define VDIMG_DEV_DIRECT_IO	(1U << 2)	/* direct I/O in use on the top layer */
#define VDIMG_DEV_AUTOCLEAR	(1U << 3)

/* vdimg_layer_info.flags */
#define VDIMG_LAYERI_READ_ONLY	(1U << 0)
#define VDIMG_LAYERI_HAS_UUID	(1U << 1)
#define VDIMG_LAYERI_HAS_PARENT_UUID (1U << 2)
#define VDIMG_LAYERI_DIRECT_IO	(1U << 3)

struct vdimg_layer_info {
	__u32 format;		/* enum vdimg_format_id */
	__u32 flags;		/* VDIMG_LAYERI_* */
	__u64 virtual_size;	/* bytes */
	__u64 file_size;	/* bytes, at the time of the query */
	__u8 uuid[16];
	__u8 parent_uuid[16];
	char format_name[16];	/* NUL-terminated */
	char variant[16];	/* NUL-terminated, e.g. "fixed", "dynamic" */
	__u64 __reserved[4];
};

#define VDIMG_LAYER_INFO_SIZE_VER0 120

struct vdimg_dev_info {
	__u32 size;		/* in: sizeof(struct vdimg_dev_info) */
	__u32 flags;		/* in: must be zero */
	__u32 index;		/* in: device index */
	__u32 state;		/* out: enum vdimg_dev_state */
	__u32 dev_flags;	/* out: VDIMG_DEV_* */
	__u32 nr_layers;	/* out: layers in the chain */
	__u64 size_bytes;	/* out: device size */
	__u32 logical_block_size; /* out */
	__u32 physical_block_size; /* out */
	__u64 layers;		/* in: user pointer to struct vdimg_layer_info[], or 0 */
	__u32 layers_cap;	/* in: entries at @layers; filled base first, up to this many */
	__u32 layer_info_size;	/* in: sizeof(struct vdimg_layer_info), 0 for _VER0 */
	__u64 __reserved[4];	/* must be zero */
};

#define VDIMG_DEV_INFO_SIZE_VER0 88

struct vdimg_features {
	__u32 size;		/* in: sizeof(struct vdimg_features) */
	__u32 version;		/* out: ABI version, VDIMG_ABI_VERSION */
	__u64 attach_flags;	/* out: VDIMG_ATTACH_* this kernel knows */
	__u64 formats;		/* out: bit (1 << enum vdimg_format_id) per format built in */
	__u32 max_layers;	/* out */
	__u32 max_devices;	/* out */
	__u64 layer_flags;	/* out: VDIMG_LAYER_* this kernel knows (ABI version 2) */
	__u64 __reserved[3];	/* out: zero */
};

#define VDIMG_FEATURES_SIZE_VER0 64
/*
 * 1: attach, detach, info, features. 2: + layer data files and snapshots, VDIMG_CTL_SNAPSHOT.
 * 3: + layer extent files (struct vdimg_layer of VDIMG_LAYER_SIZE_VER1, VDIMG_LAYER_EXTENTS)
 * 4: + online grow, VDIMG_CTL_RESIZE; VDIMG_ATTACH_FORCE_CSUM (found in attach_flags)
 * 5: + VDIMG_CTL_SNAPSHOT takes a block device as the new top (an image on an LV)
 */
#define VDIMG_ABI_VERSION	5

/* vdimg_snapshot.flags */
#define VDIMG_SNAPSHOT_FORCE_LINK (1U << 0)	/* skip the new top's parent identity check */
#define VDIMG_SNAPSHOT_FLAGS_ALL ((1U << 1) - 1)

/*
 * Live snapshot: push a new, empty differencing image (made by the caller, whose parent is the
 * current top) on top of an attached, writable device. I/O is held back (the requests in flight
 * complete, new ones wait) while the old top is flushed and synced and the layers switch; from
 * then on the old top is read-only and writes go to the new one.
 */
struct vdimg_snapshot {
	__u32 size;		/* in: sizeof(struct vdimg_snapshot) */
	__u32 flags;		/* in: VDIMG_SNAPSHOT_* */
	__u32 index;		/* in: device index */
	__s32 fd;		/* in: the new top (a file, or a block device: ABI 5), RW */
	__u32 format;		/* in: enum vdimg_format_id or VDIMG_FMT_AUTO */
	__u32 layer_flags;	/* in: VDIMG_LAYER_DATA_FILE or 0 */
	__s32 data_fd;		/* in: with VDIMG_LAYER_DATA_FILE, else 0 */
	__u32 __pad;		/* must be zero */
	__u64 __reserved[4];	/* must be zero */
};

#define VDIMG_SNAPSHOT_SIZE_VER0 64

/*
 * Online grow (ABI version 4): make an attached, writable device larger. Only the top layer grows,
 * in place, through its format's backend (raw, qcow2, qed, vdi, vhd; others fail: -EOPNOTSUPP, a
 * layout whose tables cannot address the new size with -EFBIG: detach and resize offline). I/O
 * is held back meanwhile; the new range reads as zeros; the new size is durable in the image
 * before the disk capacity changes (a change uevent follows). Shrinking is not supported (-EINVAL).
 */
struct vdimg_resize {
	__u32 size;		/* in: sizeof(struct vdimg_resize) */
	__u32 flags;		/* in: must be zero */
	__u32 index;		/* in: device index */
	__u32 __pad;		/* must be zero */
	__u64 new_size;		/* in: bytes, larger than the current size, a multiple of the
				 * device's logical block size
				 */
	__u64 __reserved[4];	/* must be zero */
};

#define VDIMG_RESIZE_SIZE_VER0	56

#define VDIMG_IOC_MAGIC		0xDB
#define VDIMG_CTL_ATTACH	_IOWR(VDIMG_IOC_MAGIC, 0x00, struct vdimg_attach)
#define VDIMG_CTL_DETACH	_IOW(VDIMG_IOC_MAGIC, 0x01, struct vdimg_detach)
#define VDIMG_CTL_GET_INFO	_IOWR(VDIMG_IOC_MAGIC, 0x02, struct vdimg_dev_info)
#define VDIMG_CTL_GET_FEATURES	_IOWR(VDIMG_IOC_MAGIC, 0x03, struct vdimg_features)
#define VDIMG_CTL_SNAPSHOT	_IOW(VDIMG_IOC_MAGIC, 0x04, struct vdimg_snapshot)
#define VDIMG_CTL_RESIZE	_IOW(VDIMG_IOC_MAGIC, 0x05, struct vdimg_resize)

#endif /* _UAPI_LINUX_VDIMG_H */
