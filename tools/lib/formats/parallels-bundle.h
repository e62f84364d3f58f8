/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Userspace only: Parallels bundles (a .hdd directory holding DiskDescriptor.xml and the .hds image
 * files it names), read by tools/lib/formats/parallels-bundle.c for the tool operations in
 * parallels.c and for vdimgctl attach. The kernel never sees the descriptor.
 */
#ifndef _VDIMG_PARALLELS_BUNDLE_H
#define _VDIMG_PARALLELS_BUNDLE_H

#include "tool-ops.h"

#define PRL_DESCRIPTOR		"DiskDescriptor.xml"
#define PRL_XML_MAX		(1U << 20)	/* bytes of descriptor read at most */

/* tool operations (parallels.c) */
int prl_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref);
int prl_extent_refs(struct vdimg_file *f, char ***paths, bool **ro, u32 *n);

/*
 * The chain a bundle describes, base first: @nr layers of @nr_parts files each (absolute paths,
 * malloc'd; layer i's parts at files[i * nr_parts + k]).
 */
struct prl_bundle_chain {
	u32 nr, nr_parts;
	char **files;
	u64 *part_sectors;		/* [nr_parts]: End - Start of each storage */
	bool plain_base;		/* the root is a "Plain" image: a raw file (one storage) */
};

/*
 * Parse the descriptor at @path (a DiskDescriptor.xml) into @out: the chain ending at the top
 * snapshot (TopGUID, or Parallels' predefined top GUID). 0, or a negative errno after a message
 * naming what was refused (-EOPNOTSUPP for what the format allows but vdimg does not read,
 * -EUCLEAN for a malformed descriptor).
 */
int prl_bundle_parse(const char *path, struct prl_bundle_chain *out);
void prl_bundle_free(struct prl_bundle_chain *c);

#endif /* _VDIMG_PARALLELS_BUNDLE_H */
