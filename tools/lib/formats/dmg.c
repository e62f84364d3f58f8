// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: the tool operations of DMG (UDIF) images: "vdimgctl info" details (trailer,
 * tables, chunk counts by type, which checksums were verified) and "vdimgctl check", which
 * verifies what open does not (it would read the whole image): the data fork's CRC-32 and each
 * blkx table's CRC-32 over its decoded data (ignored chunks, free space, are not part of it; one
 * pass over the chunks for all tables). The kernel-shared half is backends/dmg/.
 */
#include <stdio.h>
#include "tool-ops.h"
#include "../../../backends/dmg/dmg.h"

static void dmg_describe(struct vdimg_image *img,
			 void (*emit)(void *ctx, const char *key, const char *value), void *ctx)
{
	static const u32 types[] = { DMG_CHUNK_RAW, DMG_CHUNK_ZERO, DMG_CHUNK_IGNORE,
				     DMG_CHUNK_ZLIB, DMG_CHUNK_ADC, DMG_CHUNK_BZIP2,
				     DMG_CHUNK_LZFSE, DMG_CHUNK_LZMA };
	const struct dmg *d = DMG(img);
	char b[128];
	size_t t;
	u32 i, n;

	snprintf(b, sizeof(b), "%u", be32_to_cpu(d->koly.version));
	emit(ctx, "koly version", b);
	snprintf(b, sizeof(b), "%llu bytes at %llu",
		 (unsigned long long)be64_to_cpu(d->koly.data_fork_length),
		 (unsigned long long)be64_to_cpu(d->koly.data_fork_offset));
	emit(ctx, "data fork", b);
	snprintf(b, sizeof(b), "%llu bytes at %llu",
		 (unsigned long long)be64_to_cpu(d->koly.xml_length),
		 (unsigned long long)be64_to_cpu(d->koly.xml_offset));
	emit(ctx, "property list", b);
	snprintf(b, sizeof(b), "%u", d->nr_tables);
	emit(ctx, "blkx tables", b);
	for (t = 0; t < ARRAY_SIZE(types); t++) {
		for (i = 0, n = 0; i < d->nr_chunks; i++)
			n += d->chunks[i].type == types[t];
		if (!n)
			continue;
		snprintf(b, sizeof(b), "chunks %s", dmg_chunk_type_name(types[t]));
		{
			char v[32];

			snprintf(v, sizeof(v), "%u", n);
			emit(ctx, b, v);
		}
	}
	emit(ctx, "master checksum", d->master_verified ? "CRC32, verified" :
	     be32_to_cpu(d->koly.master_checksum.type) ? "not verified (kind unknown)" : "none");
	for (i = 0; i < d->nr_tables; i++) {
		char key[32];

		snprintf(key, sizeof(key), "table %u", i);
		snprintf(b, sizeof(b), "sectors %llu+%llu, checksum type %u %08x",
			 (unsigned long long)d->tables[i].first_sector,
			 (unsigned long long)d->tables[i].sector_count, d->tables[i].csum_type,
			 d->tables[i].csum);
		emit(ctx, key, b);
	}
}

/* CRC-32 of [off, off + len) of the file */
static int dmg_crc_range(struct vdimg_file *f, u64 off, u64 len, u32 *crc)
{
	u8 *buf = malloc(1 << 20);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while (len && !ret) {
		size_t n = len < (1 << 20) ? len : (1 << 20);

		ret = vdimg_file_read(f, buf, n, off);
		if (!ret)
			*crc = vdimg_crc32(*crc, buf, n);
		off += n;
		len -= n;
	}
	free(buf);
	return ret;
}

static int dmg_check(struct vdimg_image *img, unsigned int flags, struct vdimg_check_result *res)
{
	struct dmg *d = DMG(img);
	const struct dmg_checksum *dc = &d->koly.data_checksum;
	u8 *buf, *zero, *tbad;
	u32 i, t, crc, *tcrc;
	int ret;

	if (flags & VDIMG_CHECK_REPAIR)
		return -EOPNOTSUPP;
	if (be32_to_cpu(dc->type) == DMG_CSUM_CRC32) {
		crc = 0;
		ret = dmg_crc_range(img->file, be64_to_cpu(d->koly.data_fork_offset),
				    be64_to_cpu(d->koly.data_fork_length), &crc);
		if (ret)
			return ret;
		if (crc != be32_to_cpu(dc->data[0])) {
			vdimg_err(img, "data fork checksum mismatch: the image says %08x, the data gives %08x",
				  be32_to_cpu(dc->data[0]), crc);
			res->errors++;
		}
	}
	buf = malloc(d->max_chunk_bytes > (1 << 20) ? d->max_chunk_bytes : (1 << 20));
	zero = calloc(1, 1 << 20);
	tcrc = calloc(d->nr_tables, sizeof(*tcrc));
	tbad = calloc(d->nr_tables, 1);
	if (!buf || !zero || !tcrc || !tbad) {
		ret = -ENOMEM;
		goto out;
	}
	/*
	 * one pass over the sorted chunks, a running CRC per table: a table's chunks come in
	 * sector order, as its checksum wants them (time linear in the chunks, not tables x chunks)
	 */
	ret = 0;
	for (i = 0; i < d->nr_chunks && !ret; i++) {
		const struct dmg_chunk *c = &d->chunks[i];
		u64 left = c->count * DMG_SECTOR;

		t = c->table;
		crc = tcrc[t];
		if (d->tables[t].csum_type != DMG_CSUM_CRC32 || tbad[t])
			continue;
		if (c->type == DMG_CHUNK_RAW) {
			ret = dmg_crc_range(img->file, c->offset, left, &crc);
		} else if (c->type == DMG_CHUNK_IGNORE) {
			continue;	/* free space: not part of the checksum */
		} else if (c->type == DMG_CHUNK_ZERO) {
			while (left) {
				size_t n = left < (1 << 20) ? left : (1 << 20);

				crc = vdimg_crc32(crc, zero, n);
				left -= n;
			}
		} else {
			ret = dmg_decode_chunk(d, i, buf);
			if (ret == -EFSCORRUPTED) {
				res->errors++;
				ret = 0;
				tbad[t] = 1;	/* reported already */
				continue;
			}
			if (!ret)
				crc = vdimg_crc32(crc, buf, left);
		}
		tcrc[t] = crc;
	}
	for (t = 0; t < d->nr_tables && !ret; t++) {
		if (d->tables[t].csum_type != DMG_CSUM_CRC32 || tbad[t])
			continue;
		if (tcrc[t] != d->tables[t].csum) {
			vdimg_err(img, "blkx table %u checksum mismatch: the image says %08x, the data gives %08x",
				  t, d->tables[t].csum, tcrc[t]);
			res->errors++;
		}
	}
out:
	free(tcrc);
	free(tbad);
	free(buf);
	free(zero);
	return ret;
}

const struct vdimg_tool_ops vdimg_dmg_tool_ops = {
	.id = VDIMG_FMT_DMG,
	.check = dmg_check,
	.describe = dmg_describe,
};
