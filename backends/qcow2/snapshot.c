// SPDX-License-Identifier: GPL-2.0
/*
 * QCOW2 internal snapshots in the kernel-shared backend: walking the snapshot table (entries of
 * variable length, each bounds-checked) and opening a snapshot read-only in place of the active
 * tables. Kernel-shared: compiled into the module and the userspace library. Finding a snapshot by
 * ID or name and describing them are userspace-only (tools/lib/formats/qcow2/).
 */
#include "qcow2.h"

/* ---- internal snapshots ---- */

/*
 * Entry @idx (0-based, file order) of the snapshot table; every entry before it is bounds-checked
 * on the way (the table is a list of variable-length entries). -ENOENT past the last entry.
 */
int qcow2_snapshot(struct vdimg_image *img, u32 idx, struct qcow2_snap *out)
{
	struct qcow2 *q = QC(img);
	u64 fsize = vdimg_file_size(img->file), off = q->snapshots_offset, end;
	u32 i;
	int ret;

	if (idx >= q->nb_snapshots)
		return -ENOENT;
	if (q->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return vdimg_corrupt(img, "%u snapshots, more than %u", q->nb_snapshots,
				     QCOW2_MAX_SNAPSHOTS);
	ret = qcow2_check_meta_off(img, off, "snapshot table");
	if (ret)
		return ret;
	for (i = 0;; i++) {
		struct qcow2_snapshot_hdr s;
		u32 extra, idl, nl;

		if (off - q->snapshots_offset > QCOW2_MAX_SNAP_TABLE || off + sizeof(s) > fsize)
			return vdimg_corrupt(img, "snapshot table runs past the end of the file");
		ret = vdimg_file_read(img->file, &s, sizeof(s), off);
		if (ret)
			return ret;
		extra = be32_to_cpu(s.extra_data_size);
		idl = be16_to_cpu(s.id_str_size);
		nl = be16_to_cpu(s.name_size);
		if (extra > QCOW2_MAX_SNAP_EXTRA)
			return vdimg_corrupt(img, "snapshot %u has %u bytes of extra data", i + 1,
					     extra);
		end = off + sizeof(s) + extra + idl + nl;
		if (end > fsize)
			return vdimg_corrupt(img, "snapshot %u runs past the end of the file",
					     i + 1);
		if (i == idx) {
			__be64 x[2] = { 0, 0 };

			memset(out, 0, sizeof(*out));
			out->l1_offset = be64_to_cpu(s.l1_table_offset);
			out->l1_size = be32_to_cpu(s.l1_size);
			out->date_sec = be32_to_cpu(s.date_sec);
			out->vm_state = be32_to_cpu(s.vm_state_size);
			if (extra >= 8) {
				ret = vdimg_file_read(img->file, x, min_t(u32, extra, 16),
						      off + sizeof(s));
				if (ret)
					return ret;
				out->vm_state = be64_to_cpu(x[0]);
				if (extra >= 16)
					out->disk_size = be64_to_cpu(x[1]);
			}
			out->id_len = idl;
			out->name_len = nl;
			out->id_off = off + sizeof(s) + extra;
			out->name_off = out->id_off + idl;
			return 0;
		}
		off = ALIGN(end, 8ULL);
	}
}

/* Open the image as snapshot @n (1-based) sees it: its L1 table and its disk size. */
int qcow2_open_snapshot(struct vdimg_image *img, u32 n)
{
	struct qcow2 *q = QC(img);
	struct qcow2_snap sn;
	int ret;

	ret = qcow2_snapshot(img, n - 1, &sn);
	if (ret == -ENOENT) {
		vdimg_err(img, "has no internal snapshot %u (it has %u)", n, q->nb_snapshots);
		return ret;
	}
	if (ret)
		return ret;
	ret = qcow2_check_meta_off(img, sn.l1_offset, "snapshot L1 table");
	if (ret)
		return ret;
	q->l1_offset = sn.l1_offset;
	q->l1_size = sn.l1_size;
	if (sn.disk_size)
		q->vsize = sn.disk_size;
	return 0;
}
