// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: creating VHDX images (fixed, dynamic, differencing): headers, region table,
 * metadata items, the BAT and the parent locator. The kernel-shared backend is backends/vhdx/.
 */
#include <stdio.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhdx/vhdx.h"
#include "tool.h"

static int vhdx_put_meta(u8 *table, u8 *region, u32 *next, int idx, const u8 *guid,
			 const void *data, u32 len, u32 flags)
{
	struct vhdx_meta_entry *m = (void *)(table + sizeof(struct vhdx_meta_hdr) +
					     idx * sizeof(*m));

	memcpy(m->item_id, guid, 16);
	m->offset = cpu_to_le32(*next);
	m->length = cpu_to_le32(len);
	m->flags = cpu_to_le32(flags);
	memcpy(region + *next, data, len);
	*next += ALIGN(len, 4096U);
	return 0;
}

int vhdx_create(struct vdimg_file *f, const struct vdimg_create_opts *opts)
{
	const char *variant = opts->variant ? opts->variant : (opts->parent ? "differencing" :
							       "dynamic");
	bool fixed = !strcmp(variant, "fixed"), diff = opts->parent != NULL;
	u32 bs = opts->block_size, lss = opts->lbs ? opts->lbs : 512, cr, nent;
	u64 size = opts->size, nblocks, nchunks, bat_len, log_off = VHDX_MiB, log_len = VHDX_MiB;
	u64 meta_off, bat_off, data_off, i;
	struct vhdx_header *h = NULL;
	u8 *meta = NULL, *buf = NULL, *bat = NULL;
	u8 parent_dwg[16];
	u32 next = VHDX_META_TABLE_SIZE, nmeta = 0, pflags;
	struct vdimg_image tmp = { .name = "create" };
	int ret = -ENOMEM;

	if (diff && opts->variant && strcmp(opts->variant, "differencing")) {
		vdimg_err(&tmp, "a VHDX with a parent is always differencing");
		return -EINVAL;
	}
	if (!diff && !fixed && strcmp(variant, "dynamic")) {
		vdimg_err(&tmp, "unknown VHDX variant \"%s\" (fixed, dynamic)", variant);
		return -EINVAL;
	}
	if (diff) {
		struct vdimg_image *p = opts->parent_img;

		if (!p || !p->fmt || p->fmt->id != VDIMG_FMT_VHDX) {
			vdimg_err(&tmp, "the parent of a VHDX differencing image must be a VHDX image");
			return -EINVAL;
		}
		memcpy(parent_dwg, ((struct vhdx *)p->priv)->hdr.data_write_guid, 16);
		if (!size)
			size = p->size;
		if (!opts->lbs)
			lss = p->lbs;
		if (!bs)
			bs = ((struct vhdx *)p->priv)->block_size;
	}
	if (!bs)
		bs = diff ? 2 * VHDX_MiB : 32 * VHDX_MiB;
	if (lss != 512 && lss != 4096) {
		vdimg_err(&tmp, "logical sector size %u: VHDX has 512 or 4096", lss);
		return -EINVAL;
	}
	if (bs < VHDX_BLOCK_MIN || bs > VHDX_BLOCK_MAX || !is_power_of_2(bs)) {
		vdimg_err(&tmp, "block size %u: VHDX needs a power of two from 1 MiB to 256 MiB", bs);
		return -EINVAL;
	}
	if (!size || size % lss || size > VHDX_MAX_SIZE) {
		vdimg_err(&tmp, "size %llu: must be a multiple of %u up to 64 TiB",
			  (unsigned long long)size, lss);
		return -EINVAL;
	}
	cr = (u32)((VHDX_SB_SECTORS * lss) / bs);
	nblocks = DIV_ROUND_UP(size, (u64)bs);
	nchunks = DIV_ROUND_UP(nblocks, (u64)cr);
	nent = diff ? nchunks * (cr + 1) : nblocks + (nblocks - 1) / cr;
	bat_len = ALIGN((u64)nent * 8, VHDX_MiB);
	meta_off = log_off + log_len;
	bat_off = meta_off + VHDX_MiB;
	data_off = bat_off + bat_len;

	h = calloc(1, sizeof(*h));
	meta = calloc(1, VHDX_MiB);
	buf = calloc(1, VHDX_REGION_SIZE);
	bat = calloc(1, bat_len);
	if (!h || !meta || !buf || !bat)
		goto out;

	/* file identifier */
	memcpy(buf, "vhdxfile", 8);
	vdimg_utf8_to_utf16("vdimg", buf + 8, 512, false);
	ret = vdimg_file_write(f, buf, 520, 0);
	if (ret)
		goto out;

	/* metadata */
	{
		struct vhdx_meta_hdr *mh = (void *)meta;
		struct vhdx_file_params fp;
		__le64 vs = cpu_to_le64(size);
		__le32 l = cpu_to_le32(lss), ph = cpu_to_le32(lss);
		u8 p83[16];
		const u32 vreq = VHDX_META_IS_VIRTUAL | VHDX_META_IS_REQUIRED;

		memcpy(mh->signature, "metadata", 8);
		pflags = (fixed ? VHDX_PARAM_LEAVE_ALLOCATED : 0) | (diff ? VHDX_PARAM_HAS_PARENT : 0);
		fp.block_size = cpu_to_le32(bs);
		fp.flags = cpu_to_le32(pflags);
		vhdx_new_guid(p83);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_params, &fp, sizeof(fp),
			      VHDX_META_IS_REQUIRED);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_vsize, &vs, 8, vreq);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_page83, p83, 16, vreq);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_lss, &l, 4, vreq);
		vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_pss, &ph, 4, vreq);
		if (diff) {
			u8 loc[4096];
			struct vhdx_locator_hdr *lh = (void *)loc;
			const char *keys[3] = { "parent_linkage", "relative_path",
						"absolute_win32_path" };
			char *vals[3] = { NULL, NULL, NULL }, *dir = vdimg_file_dir(f);
			char g[40], *absparent = realpath(opts->parent, NULL);
			u32 pos, k, nk = 0;

			vhdx_guid_fmt(g, parent_dwg);
			vals[0] = malloc(64);
			if (vals[0])
				snprintf(vals[0], 64, "{%s}", g);
			if (absparent && dir)
				vals[1] = vdimg_relpath(absparent, dir, '\\');
			if (absparent)
				vals[2] = strdup(absparent);
			free(dir);
			free(absparent);
			memset(loc, 0, sizeof(loc));
			memcpy(lh->locator_type, vhdx_guid_loctype, 16);
			pos = sizeof(*lh) + 3 * sizeof(struct vhdx_locator_entry);
			ret = 0;
			for (k = 0; k < 3; k++) {
				struct vhdx_locator_entry *le = (void *)(loc + sizeof(*lh) +
									 nk * sizeof(*le));
				size_t kl, vl;

				if (!vals[k]) {
					if (!k)
						ret = -ENOMEM;
					continue;
				}
				kl = vdimg_utf8_to_utf16(keys[k], loc + pos, sizeof(loc) - pos, false);
				le->key_offset = cpu_to_le32(pos);
				le->key_length = cpu_to_le16(kl);
				pos += kl;
				vl = vdimg_utf8_to_utf16(vals[k], loc + pos, sizeof(loc) - pos, false);
				le->value_offset = cpu_to_le32(pos);
				le->value_length = cpu_to_le16(vl);
				pos += vl;
				if (!kl || !vl || pos >= sizeof(loc) - 2)
					ret = -ENAMETOOLONG;
				nk++;
			}
			lh->count = cpu_to_le16(nk);
			for (k = 0; k < 3; k++)
				free(vals[k]);
			if (ret) {
				vdimg_err(&tmp, "cannot build the parent locator");
				goto out;
			}
			vhdx_put_meta(meta, meta, &next, nmeta++, vhdx_guid_parent, loc, pos,
				      VHDX_META_IS_REQUIRED);
		}
		mh->entry_count = cpu_to_le16(nmeta);
	}
	ret = vdimg_file_write(f, meta, VHDX_MiB, meta_off);
	if (ret)
		goto out;

	/* BAT (fixed: every block present, laid out in order after the BAT) */
	if (fixed) {
		for (i = 0; i < nblocks; i++) {
			__le64 e = cpu_to_le64((data_off + i * bs) | VHDX_PAYLOAD_FULLY_PRESENT);

			memcpy(bat + (i + i / cr) * 8, &e, 8);
		}
	}
	ret = vdimg_file_write(f, bat, bat_len, bat_off);
	if (ret)
		goto out;
	ret = vdimg_file_truncate(f, fixed ? data_off + nblocks * bs : data_off);
	if (ret)
		goto out;

	/* region tables */
	memset(buf, 0, VHDX_REGION_SIZE);
	{
		struct vhdx_region_hdr *rh = (void *)buf;
		struct vhdx_region_entry *r = (void *)(buf + sizeof(*rh));

		memcpy(rh->signature, "regi", 4);
		rh->entry_count = cpu_to_le32(2);
		memcpy(r[0].guid, vhdx_guid_bat, 16);
		r[0].file_offset = cpu_to_le64(bat_off);
		r[0].length = cpu_to_le32(bat_len);
		r[0].flags = cpu_to_le32(VHDX_REGION_REQUIRED);
		memcpy(r[1].guid, vhdx_guid_meta, 16);
		r[1].file_offset = cpu_to_le64(meta_off);
		r[1].length = cpu_to_le32(VHDX_MiB);
		r[1].flags = cpu_to_le32(VHDX_REGION_REQUIRED);
		rh->checksum = cpu_to_le32(vdimg_vhdx_crc(buf, VHDX_REGION_SIZE,
						    offsetof(struct vhdx_region_hdr, checksum)));
	}
	ret = vdimg_file_write(f, buf, VHDX_REGION_SIZE, VHDX_REGION1_OFF);
	if (!ret)
		ret = vdimg_file_write(f, buf, VHDX_REGION_SIZE, VHDX_REGION2_OFF);
	if (ret)
		goto out;

	/* headers last: sequence 0 and 1, the second current */
	memcpy(h->signature, "head", 4);
	vhdx_new_guid(h->file_write_guid);
	vhdx_new_guid(h->data_write_guid);
	h->version = cpu_to_le16(1);
	h->log_length = cpu_to_le32(log_len);
	h->log_offset = cpu_to_le64(log_off);
	for (i = 0; i < 2; i++) {
		h->seq = cpu_to_le64(i);
		h->checksum = 0;
		h->checksum = cpu_to_le32(vdimg_vhdx_crc(h, sizeof(*h),
						   offsetof(struct vhdx_header, checksum)));
		ret = vdimg_file_write(f, h, sizeof(*h), i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
		if (ret)
			goto out;
	}
	ret = vdimg_file_sync(f);
out:
	free(h);
	free(meta);
	free(buf);
	free(bat);
	return ret;
}
