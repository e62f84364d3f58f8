/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The on-disk layout of Parallels expanding disk images (.hds), as backends/parallels.c reads and
 * writes it, and the backend's private state. A file starts with a 64-byte header, then the
 * block allocation table (BAT: one little-endian u32 per cluster of the virtual disk), then the
 * data area. A BAT entry of 0 is a cluster not in this image (zeros, or the parent snapshot's data
 * in a bundle); any other value is the cluster's place in the file: in sectors for
 * "WithoutFreeSpace" (v1) images, in clusters (units of @tracks sectors) for "WithouFreSpacExt"
 * (v2) ones. @ext_off, when not zero, is the sector of a format extension cluster (dirty bitmaps).
 * Layout per qemu's docs/interop/parallels.txt. The private header of backends/parallels.c
 * (kernel-shared) and of its userspace half, tools/lib/formats/parallels.c; the host tests read the
 * layout from it too.
 */
#ifndef _VDIMG_PARALLELS_H
#define _VDIMG_PARALLELS_H

#include <vdimg/backend.h>

#define PRL_MAGIC_V1		"WithoutFreeSpace"	/* BAT entries in sectors */
#define PRL_MAGIC_V2		"WithouFreSpacExt"	/* BAT entries in clusters */
#define PRL_VERSION		2
#define PRL_INUSE_OPEN		0x746f6e59U	/* "Ynot": open for writing (or not closed) */
#define PRL_INUSE_CLOSED	0x312e3276U	/* "v2.1": closed cleanly */
#define PRL_FLAG_EMPTY		BIT(0)		/* header.flags: take the image as empty */
#define PRL_EXT_MAGIC		0xab234cef23dcea87ULL	/* first 8 bytes of the extension cluster */
#define PRL_EXT_BITMAP		0x20385fae252cb34aULL	/* dirty bitmap feature */

struct prl_header {
	char magic[16];
	__le32 version;			/* PRL_VERSION */
	__le32 heads;			/* geometry hints only */
	__le32 cylinders;
	__le32 tracks;			/* cluster size in sectors */
	__le32 bat_entries;		/* clusters of the virtual disk */
	__le64 nb_sectors;		/* virtual size in sectors (v1: the low 32 bits only) */
	__le32 inuse;			/* PRL_INUSE_*, or 0 (written by old software) */
	__le32 data_off;		/* sector of the data area; 0: right after the BAT */
	__le32 flags;			/* PRL_FLAG_* */
	__le64 ext_off;			/* sector of the format extension cluster, 0 for none */
} __packed;

#define PRL_HEADER_SIZE		64
#define PRL_SECTOR		512U
#define PRL_BAT_CHUNK		128U		/* BAT entries per 512-byte write unit */

/* ---- the backend's private state ---- */

#define PRL_MAX_TRACKS		(128U << 11)	/* 128 MiB clusters: bounds the driver's fill */
#define PRL_MAX_BAT		BIT(26)		/* 256 MiB of BAT in memory */
#define PRL_DEFAULT_CLUSTER	SZ_1M		/* as qemu and Parallels create */

/* one image file: the whole layer, or one part of a split storage */
struct prl {
	struct vdimg_image *img;	/* the layer, for messages */
	struct vdimg_file *file;
	u64 base;			/* virtual offset of the part's first byte in the layer */
	u64 size;			/* virtual bytes the part holds */
	struct prl_header hdr;		/* as on disk, updated before each header write */
	bool v2;			/* "WithouFreSpacExt": entries in clusters */
	bool writable;
	u32 tracks;			/* cluster size in sectors */
	u32 cluster;			/* cluster size in bytes */
	u32 mult;			/* sectors per BAT unit: 1 (v1) or @tracks (v2) */
	u32 nr_bat;
	u64 data_off;			/* bytes: start of the data area */
	u64 ext_off;			/* bytes: the extension cluster, 0 for none */
	u32 found_inuse;		/* header.inuse at open */
	u32 repairs;			/* entries a repair open dropped, not yet written */

	/* serializes metadata writes (BAT chunks, header); held across their I/O */
	vdimg_mutex_t meta_lock;
	bool touched;			/* first write after open prepared (meta_lock) */
	bool inuse_written;		/* this open set PRL_INUSE_OPEN: a clean close clears it */
	bool freed;			/* a discard unmapped a cluster: a clean close trims */

	/* protects everything below; never held across I/O */
	vdimg_mutex_t map_lock;
	u32 *bat;			/* [nr_bat], cpu order, as committed */
	u64 *chunk_dirty;		/* bitmap of BAT chunks committed but not written */
	u64 next_off;			/* file offset of the next cluster handed out */
	u64 nr_dirty;			/* set bits in @chunk_dirty */
};

/*
 * A layer: one image file, or the parts of a split storage (a Parallels bundle), consecutive in the
 * virtual disk in the order userspace passed them (the first is the layer's file, the others its
 * extent files). The ranges are derived from the parts' own sizes.
 */
#define PRL_MAX_PARTS		256

struct prl_disk {
	u32 nr;
	struct prl *part[];
};

/* file offset of the data of BAT entry @e (not 0) */
static inline u64 prl_entry_offset(const struct prl *p, u32 e)
{
	return (u64)e * p->mult * PRL_SECTOR;
}

/* the in-memory state is also read by the userspace half */
int prl_write_header(struct prl *p, u32 inuse);
int prl_flush(struct vdimg_image *img);

/*
 * userspace only (tools/lib/formats/parallels-bundle.c), called at open when VDIMG_LIBRARY: if
 * the image's directory holds a DiskDescriptor.xml naming it as a snapshot with a parent, mark
 * the image as having one (the library then resolves the chain from the descriptor), and check
 * its parts' sizes against the descriptor's ranges. 0, or a negative errno after a message.
 */
int prl_bundle_note(struct vdimg_image *img);

#endif /* _VDIMG_PARALLELS_H */
