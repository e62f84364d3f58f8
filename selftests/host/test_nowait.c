// SPDX-License-Identifier: GPL-2.0
/*
 * Host test of the VDIMG_MAP_NOWAIT contract (include/vdimg/backend.h) for every format that
 * allocates: the driver's submission path asks map(WRITE | NOWAIT) before it takes an allocation
 * unit's lock, so a backend must answer -EAGAIN for a write to unallocated space there instead of
 * reserving a place and handing out a NEW extent, which would put two NEW extents on one unit at
 * once (VDI did, and the slots it gave back were reused out of order). After a first write (the
 * one that renews an image's identity may also answer -EAGAIN), a NOWAIT write map to allocated
 * space answers DATA without NEW, and one to unallocated space -EAGAIN; nothing is allocated by
 * it (a read map still finds the range unallocated, the file does not grow), the sleeping map
 * then allocates, and `qemu-img check` (ours for VHD, which qemu cannot check) finds the image
 * clean. Skips (exit 4) without qemu-img or qemu-io.
 */
#include <sys/stat.h>
#include "format_test.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

struct nowait_case {
	const char *name;	/* our format name, and the file's suffix */
	const char *qemu;	/* qemu-img's format name */
	const char *opts;	/* qemu-img create -o */
};

static const struct nowait_case cases[] = {
	{ "qcow2", "qcow2", "cluster_size=65536" },
	{ "qed", "qed", "cluster_size=65536" },
	{ "vdi", "vdi", "static=off" },
	{ "vhd", "vpc", "subformat=dynamic,force_size=on" },
	{ "vhdx", "vhdx", "block_size=1048576" },
	{ "vmdk", "vmdk", "subformat=monolithicSparse" },
	{ "parallels", "parallels", "cluster_size=1048576" },
};

static void test_nowait(const struct nowait_case *k)
{
	char name[32];
	const char *path;
	struct vdimg_chain *c = NULL;
	struct vdimg_image *t;
	struct vdimg_extent e;
	u8 buf[4096];
	u64 before;
	int ret;

	snprintf(name, sizeof(name), "nowait.%s", k->name);
	path = tp(name);
	unlink(path);
	if (!ok(!sh("qemu-img create -q -f %s -o %s '%s' 16M", k->qemu, k->opts, path),
		"%s: qemu-img create", k->name))
		return;
	if (!ok_err(open1(&c, path, 0), 0, "%s: open read-write", k->name))
		return;
	t = vdimg_chain_top(c);
	memset(buf, 0x5a, sizeof(buf));
	ok_err(vdimg_chain_pwrite(c, buf, sizeof(buf), 0), 0, "%s: a first write", k->name);

	memset(&e, 0, sizeof(e));
	ret = t->fmt->map(t, 0, 4096, VDIMG_MAP_WRITE | VDIMG_MAP_NOWAIT, &e);
	ok(ret == -EAGAIN || (!ret && e.type == VDIMG_EXT_DATA && !(e.flags & VDIMG_EXT_NEW)),
	   "%s: NOWAIT write map of written space: DATA in place or EAGAIN, never NEW (got %d, flags %#x)",
	   k->name, ret, ret ? 0 : e.flags);

	vdimg_chain_flush(c);
	before = fsize(path);
	memset(&e, 0, sizeof(e));
	ok_err(t->fmt->map(t, 8 * MiB, 4096, VDIMG_MAP_WRITE | VDIMG_MAP_NOWAIT, &e), -EAGAIN,
	       "%s: NOWAIT write map of unallocated space: EAGAIN", k->name);
	memset(&e, 0, sizeof(e));
	ret = t->fmt->map(t, 8 * MiB, 4096, 0, &e);
	ok(!ret && e.type != VDIMG_EXT_DATA,
	   "%s: nothing was allocated by it (a read map finds no data there)", k->name);
	ok(fsize(path) == before, "%s: the file did not grow (%llu, was %llu)", k->name,
	   (unsigned long long)fsize(path), (unsigned long long)before);

	memset(buf, 0xa5, sizeof(buf));
	ok_err(vdimg_chain_pwrite(c, buf, sizeof(buf), 8 * MiB), 0,
	       "%s: the worker's sleeping path then allocates it", k->name);
	vdimg_chain_close(c);

	ok(image_clean(k->qemu, path, vdimg_format_by_name(k->name)),
	   "%s: the image checks clean (qemu-img check; ours and vhdiinfo for VHD)", k->name);
	ok(!sh("qemu-io -f %s -c 'read -P 0xa5 8M 4k' -c 'read -P 0x5a 0 4k' '%s' >/dev/null",
	       k->qemu, path), "%s: qemu-io reads both writes", k->name);
}

int main(void)
{
	unsigned int i;

	ktap_start();
	if (sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		skip("qemu-img or qemu-io is missing");
		return ktap_finish();
	}
	for (i = 0; i < ARRAY_SIZE(cases); i++)
		test_nowait(&cases[i]);
	return ktap_finish();
}
