// SPDX-License-Identifier: GPL-2.0
/*
 * Sector bitmaps shared by the VHD and VHDX backends (backends/vhd_common.h): finding runs of
 * sectors with the same bit and setting ranges, in either bit order. Kernel-shared: compiled into
 * the module and the userspace library; no I/O and no locking here.
 */
#include "vhd_common.h"

u32 vdimg_sbm_run(const u8 *bits, u32 s, u32 end, enum vdimg_sbm_order order, bool *set)
{
	bool v = vdimg_sbm_test(bits, s, order);
	u8 full = v ? 0xff : 0;
	u32 i = s + 1;

	*set = v;
	while (i < end) {
		if (!(i & 7) && i + 8 <= end && bits[i >> 3] == full) {
			i += 8;
			continue;
		}
		if (vdimg_sbm_test(bits, i, order) != v)
			break;
		i++;
	}
	return i - s;
}

void vdimg_sbm_set(u8 *bits, u32 s, u32 end, enum vdimg_sbm_order order)
{
	for (; s < end; s++)
		bits[s >> 3] |= vdimg_sbm_mask(s, order);
}
