// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: VHD check and repair (footer and its copy, the dynamic header, BAT entries past
 * the end of the file or overlapping). The kernel-shared backend is backends/vhd/.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "vdimg-user.h"
#include "tool-ops.h"
#include "backends/vhd/vhd.h"
#include "tool.h"

int vhd_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct vhd *v = img->priv;
	bool repair = flags & VDIMG_CHECK_REPAIR;
	u32 blk, bad = 0;
	int ret = 0;

	if (repair && ((img->flags & VDIMG_IMG_READ_ONLY) || !v->repair_mode) && v->damage) {
		vdimg_err(img, "repairing needs the image opened writable for repair");
		return -EROFS;
	}
	vdimg_mutex_lock(&v->io_lock);
	if (v->damage & (VHD_DMG_FOOTER_CSUM | VHD_DMG_FOOTER_MISSING | VHD_DMG_FOOTER_SHORT)) {
		/*
		 * A dynamic image whose end footer is simply missing, with a good copy at offset 0, is
		 * what a crash during a block append leaves (the block's bitmap where the footer was,
		 * the new footer not yet written): nothing is lost and a read-write open writes the
		 * footer back, so a warning. A damaged footer, or a missing one with no good copy, is
		 * an error.
		 */
		bool crash = v->type != VHD_TYPE_FIXED && !(v->damage & VHD_DMG_COPY) &&
			     (v->damage & (VHD_DMG_FOOTER_CSUM | VHD_DMG_FOOTER_MISSING |
					   VHD_DMG_FOOTER_SHORT)) == VHD_DMG_FOOTER_MISSING;

		if (crash)
			res->warnings++;
		else
			res->errors++;
		vdimg_warn(img, "check: the footer at the end is %s",
			   crash ? "missing, as an interrupted append leaves it (the copy at offset 0 is good; --repair or a read-write attach writes it back)" :
			   v->damage & VHD_DMG_FOOTER_MISSING ? "missing" :
			   v->damage & VHD_DMG_FOOTER_SHORT ? "511 bytes long" :
			   "damaged (checksum)");
		if (repair) {
			/* on a device, in its last sector (where open looked first) */
			u64 at = v->type == VHD_TYPE_FIXED || v->fixed_file ? v->footer_off :
				 v->data_end;

			ret = vhd_write_footer(img, v, at);
			if (!ret && v->type != VHD_TYPE_FIXED && !v->fixed_file)
				ret = vdimg_file_truncate(img->file, at + VHD_SECTOR);
			if (ret)
				goto out;
			v->footer_off = at;
			res->fixed++;
		}
	}
	if (v->damage & VHD_DMG_COPY) {
		res->errors++;
		vdimg_warn(img, "check: the footer copy at offset 0 is missing or damaged");
		if (repair) {
			ret = vhd_write_footer(img, v, 0);
			if (ret)
				goto out;
			res->fixed++;
		}
	}
	if (v->damage & VHD_DMG_HDR_CSUM) {
		res->errors++;
		vdimg_warn(img, "check: the dynamic header checksum is wrong");
		if (repair) {
			v->hdr->checksum = cpu_to_be32(vhd_hdr_csum(v->hdr));
			ret = vdimg_file_write(img->file, v->hdr, sizeof(*v->hdr), v->hdr_off);
			if (ret)
				goto out;
			res->fixed++;
		}
	}
	for (blk = 0; v->type != VHD_TYPE_FIXED && blk < v->nr_blocks; blk++) {
		if (!(blk % 128))	/* a sector of the BAT */
			vdimg_tool_progress("check", 0, 1, blk, v->nr_blocks);
		if (!(v->state[blk] & VHD_BLK_BAD))
			continue;
		bad++;
		res->errors++;
		vdimg_warn(img, "check: BAT entry %u (sector %u) is past the end of the file or overlaps",
			   blk, vhd_bat_get(v, blk));
		if (!repair)
			continue;
		v->bat[blk] = cpu_to_be32(VHD_BAT_FREE);
		ret = vhd_write_bat_sector(img, v, blk);
		if (ret)
			goto out;
		v->state[blk] &= ~VHD_BLK_BAD;
		res->fixed++;
	}
	if (repair) {
		ret = vdimg_file_sync(img->file);
		if (!ret)
			v->damage = 0;
	}
out:
	vdimg_mutex_unlock(&v->io_lock);
	return ret;
}
