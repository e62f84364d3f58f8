/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the VHD and VHDX backends share: sector bitmaps, the per-block bitmaps of sectors present in
 * a differencing image (and, in VHD, in every dynamic one). VHD numbers the sectors of a byte from
 * its most significant bit, VHDX from its least. Kernel-shared: backends/vhd_common.c is compiled
 * into the module and the userspace library.
 */
#ifndef _VDIMG_VHD_COMMON_H
#define _VDIMG_VHD_COMMON_H

#include <vdimg/platform.h>

/* the bit order of a sector bitmap */
enum vdimg_sbm_order {
	VDIMG_SBM_MSB_FIRST,		/* VHD: sector 0 is bit 7 of byte 0 */
	VDIMG_SBM_LSB_FIRST,		/* VHDX: sector 0 is bit 0 of byte 0 */
};

/* the bit of sector @s within its byte */
static inline u8 vdimg_sbm_mask(u32 s, enum vdimg_sbm_order order)
{
	return order == VDIMG_SBM_MSB_FIRST ? 0x80 >> (s & 7) : 1U << (s & 7);
}

static inline bool vdimg_sbm_test(const u8 *bits, u32 s, enum vdimg_sbm_order order)
{
	return bits[s >> 3] & vdimg_sbm_mask(s, order);
}

/**
 * vdimg_sbm_run() - the run of sectors that share the bit of the first one
 * @bits: the bitmap
 * @s: the first sector, below @end
 * @end: where to stop looking
 * @order: the bitmap's bit order
 * @set: out: the bit of sector @s
 *
 * Context: any; touches nothing but @bits and @set.
 * Return: the number of sectors from @s (at least 1, at most @end - @s) with the same bit.
 */
u32 vdimg_sbm_run(const u8 *bits, u32 s, u32 end, enum vdimg_sbm_order order, bool *set);

/**
 * vdimg_sbm_set() - set the bits of sectors [@s, @end)
 * @bits: the bitmap
 * @s: the first sector
 * @end: the sector after the last one
 * @order: the bitmap's bit order
 *
 * Context: any; the caller serializes writers of @bits.
 */
void vdimg_sbm_set(u8 *bits, u32 s, u32 end, enum vdimg_sbm_order order);

#endif /* _VDIMG_VHD_COMMON_H */
