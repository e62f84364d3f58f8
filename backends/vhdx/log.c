// SPDX-License-Identifier: GPL-2.0
/*
 * The VHDX metadata log (MS-VHDX section 2.3): finding the active sequence of a non-empty log and
 * replaying it (into the file on a writable open, or into an in-memory overlay of 4 KiB pages on a
 * read-only one), and writing new entries for the metadata updates the backend makes. The log is a
 * circular buffer of 4 KiB sectors; an entry is a header sector with descriptors, then one data
 * sector per data descriptor, protected by a CRC-32C over the whole entry. Everything read here is
 * hostile: lengths, counts, offsets and sequence numbers are checked before use, and a log that
 * names no valid sequence is treated as empty. Kernel-shared: compiled into the module and the
 * userspace library.
 */
#include <vdimg/backend.h>
#include "vhdx.h"

#define VHDX_LOG_MAX_BYTES	(64U << 20)	/* largest log we read into memory */

u32 vdimg_vhdx_crc(const void *buf, size_t len, size_t csum_off)
{
	static const u8 zero[4];
	const u8 *b = buf;
	u32 crc = ~0U;

	crc = vdimg_crc32c(crc, b, csum_off);
	crc = vdimg_crc32c(crc, zero, 4);
	crc = vdimg_crc32c(crc, b + csum_off + 4, len - csum_off - 4);
	return ~crc;
}

static u32 vhdx_desc_sectors(u32 count)
{
	if (count <= VHDX_DESC_FIRST)
		return 1;
	return 1 + DIV_ROUND_UP(count - VHDX_DESC_FIRST, VHDX_DESC_PER_SECTOR);
}

/* The @k-th descriptor of an entry laid out contiguously in @e. */
static const struct vhdx_log_desc *vhdx_desc(const u8 *e, u32 k)
{
	if (k < VHDX_DESC_FIRST)
		return (const struct vhdx_log_desc *)(e + sizeof(struct vhdx_log_entry_hdr)) + k;
	k -= VHDX_DESC_FIRST;
	return (const struct vhdx_log_desc *)(e + VHDX_LOG_SECTOR *
					      (1 + k / VHDX_DESC_PER_SECTOR)) +
	       k % VHDX_DESC_PER_SECTOR;
}

/* What the scan learned about the entry starting at one sector. */
struct vhdx_scan {
	u64 seq;		/* 0: no valid entry starts here */
	u32 sectors;		/* entry length in sectors */
	u32 tail;		/* tail, in sectors */
};

/*
 * Copy the entry at sector @s (of @nsec) out of the circular buffer @logbuf into @e (contiguous)
 * and validate it completely. Returns the number of sectors, or 0 if no valid entry starts there.
 */
static u32 vhdx_entry_check(const u8 *logbuf, u32 nsec, u32 s, const u8 *guid, u8 *e,
			    struct vhdx_scan *out, u64 *budget)
{
	const struct vhdx_log_entry_hdr *h = (const void *)(logbuf + (size_t)s * VHDX_LOG_SECTOR);
	u32 len = le32_to_cpu(h->entry_length), n, count, dsec, ndata = 0, k, i;
	u64 seq = le64_to_cpu(h->seq);

	if (memcmp(h->signature, "loge", 4) || !len || len % VHDX_LOG_SECTOR ||
	    len / VHDX_LOG_SECTOR > nsec || !seq || memcmp(h->log_guid, guid, 16) ||
	    le32_to_cpu(h->tail) % VHDX_LOG_SECTOR ||
	    le32_to_cpu(h->tail) / VHDX_LOG_SECTOR >= nsec)
		return 0;
	n = len / VHDX_LOG_SECTOR;
	count = le32_to_cpu(h->descriptor_count);
	if (count > (u64)n * VHDX_DESC_PER_SECTOR)
		return 0;
	dsec = vhdx_desc_sectors(count);
	if (dsec > n)
		return 0;
	/* entries claiming to overlap each other could make the scan quadratic: bound the work */
	if (n > *budget) {
		*budget = 0;
		return 0;
	}
	*budget -= n;
	for (i = 0; i < n; i++)
		memcpy(e + (size_t)i * VHDX_LOG_SECTOR,
		       logbuf + (size_t)((s + i) % nsec) * VHDX_LOG_SECTOR, VHDX_LOG_SECTOR);
	if (vdimg_vhdx_crc(e, len, offsetof(struct vhdx_log_entry_hdr, checksum)) !=
	    le32_to_cpu(h->checksum))
		return 0;
	for (k = 0; k < count; k++) {
		const struct vhdx_log_desc *d = vhdx_desc(e, k);

		if (le64_to_cpu(d->seq) != seq || le64_to_cpu(d->file_offset) % VHDX_LOG_SECTOR)
			return 0;
		if (!memcmp(d->signature, "zero", 4)) {
			if (le64_to_cpu(d->leading_or_length) % VHDX_LOG_SECTOR)
				return 0;
			continue;
		}
		if (memcmp(d->signature, "desc", 4))
			return 0;
		if (dsec + ndata >= n)
			return 0;
		{
			const struct vhdx_log_data *ds = (const void *)
				(e + (size_t)(dsec + ndata) * VHDX_LOG_SECTOR);

			if (memcmp(ds->signature, "data", 4) ||
			    le32_to_cpu(ds->seq_high) != (u32)(seq >> 32) ||
			    le32_to_cpu(ds->seq_low) != (u32)seq)
				return 0;
		}
		ndata++;
	}
	out->seq = seq;
	out->sectors = n;
	out->tail = le32_to_cpu(h->tail) / VHDX_LOG_SECTOR;
	return n;
}

void vdimg_vhdx_log_free_overlay(struct vhdx_log *log)
{
	u32 i;

	for (i = 0; i < log->nr_ov; i++)
		vdimg_free(log->ov[i].data);
	vdimg_free(log->ov);
	log->ov = NULL;
	log->nr_ov = 0;
}

static int vhdx_ov_add(struct vhdx_log *log, u32 *cap, u64 off, u64 len, const u8 *page)
{
	struct vhdx_overlay *o;

	if (log->nr_ov == *cap) {
		u32 ncap = *cap ? *cap * 2 : 64;

		o = vdimg_zalloc(sizeof(*o) * (size_t)ncap);
		if (!o)
			return -ENOMEM;
		if (log->nr_ov)
			memcpy(o, log->ov, sizeof(*o) * log->nr_ov);
		vdimg_free(log->ov);
		log->ov = o;
		*cap = ncap;
	}
	o = &log->ov[log->nr_ov];
	o->off = off;
	o->len = len;
	o->data = NULL;
	if (page) {
		o->data = vdimg_zalloc(VHDX_LOG_SECTOR);
		if (!o->data)
			return -ENOMEM;
		memcpy(o->data, page, VHDX_LOG_SECTOR);
	}
	log->nr_ov++;
	return 0;
}

/* Does a descriptor write somewhere it must not (the headers or the log itself)? */
static bool vhdx_desc_bad_target(const struct vhdx_log *log, u64 off, u64 len)
{
	u64 end;

	if (check_add_overflow(off, len, &end) || end > VHDX_MAX_SIZE * 2)
		return true;
	if (off < VHDX_REGION1_OFF)
		return true;
	return off < log->offset + log->length && end > log->offset;
}

/* Apply one validated entry @e (contiguous) to the file or the overlay. */
static int vhdx_entry_apply(struct vdimg_image *img, struct vhdx_log *log, const u8 *e,
			    u64 file_size, bool to_file, u32 *cap)
{
	const struct vhdx_log_entry_hdr *h = (const void *)e;
	u32 count = le32_to_cpu(h->descriptor_count), dsec = vhdx_desc_sectors(count), k, nd = 0;
	u8 *page;
	int ret = 0;

	if (le64_to_cpu(h->flushed_file_offset) > file_size)
		return vdimg_corrupt(img,
				     "log entry %llu needs a file of %llu bytes, the file has %llu: truncated image",
				     (unsigned long long)le64_to_cpu(h->seq),
				     (unsigned long long)le64_to_cpu(h->flushed_file_offset),
				     (unsigned long long)file_size);
	page = vdimg_zalloc(VHDX_LOG_SECTOR);
	if (!page)
		return -ENOMEM;
	for (k = 0; k < count && !ret; k++) {
		const struct vhdx_log_desc *d = vhdx_desc(e, k);
		u64 off = le64_to_cpu(d->file_offset);

		if (!memcmp(d->signature, "zero", 4)) {
			u64 len = le64_to_cpu(d->leading_or_length);

			if (!len)
				continue;
			if (vhdx_desc_bad_target(log, off, len)) {
				ret = vdimg_corrupt(img,
						    "log entry zeroes [%llu, +%llu), outside what a log may change",
						    (unsigned long long)off,
						    (unsigned long long)len);
				break;
			}
			if (to_file)
				ret = vdimg_file_zero(img->file, off, len);
			else
				ret = vhdx_ov_add(log, cap, off, len, NULL);
			continue;
		}
		{
			const struct vhdx_log_data *ds = (const void *)(e + (size_t)(dsec + nd++) *
									  VHDX_LOG_SECTOR);
			__le64 lead = d->leading_or_length;
			__le32 trail = d->trailing_or_reserved;

			memcpy(page, &lead, 8);
			memcpy(page + 8, ds->data, sizeof(ds->data));
			memcpy(page + 8 + sizeof(ds->data), &trail, 4);
		}
		if (vhdx_desc_bad_target(log, off, VHDX_LOG_SECTOR)) {
			ret = vdimg_corrupt(img,
					    "log entry writes at %llu, outside what a log may change",
					    (unsigned long long)off);
			break;
		}
		if (to_file)
			ret = vdimg_file_write(img->file, page, VHDX_LOG_SECTOR, off);
		else
			ret = vhdx_ov_add(log, cap, off, VHDX_LOG_SECTOR, page);
	}
	vdimg_free(page);
	if (!ret && le64_to_cpu(h->last_file_offset) > log->last_file_offset)
		log->last_file_offset = le64_to_cpu(h->last_file_offset);
	return ret;
}

int vdimg_vhdx_log_replay(struct vdimg_image *img, struct vhdx_log *log, u64 file_size,
			  bool to_file)
{
	u32 nsec = log->length / VHDX_LOG_SECTOR, s, head, tail, steps, cap = 0;
	struct vhdx_scan *scan = NULL;
	u8 *logbuf = NULL, *e = NULL;
	u64 best_below = ~0ULL, budget = 8ULL * (log->length / VHDX_LOG_SECTOR) + 64;
	int ret;

	if (log->length > VHDX_LOG_MAX_BYTES) {
		vdimg_err(img, "the log (%u bytes) is larger than vdimg handles (%u)", log->length,
			  VHDX_LOG_MAX_BYTES);
		return -EOPNOTSUPP;
	}
	logbuf = vdimg_zalloc(log->length);
	e = vdimg_zalloc(log->length);
	scan = vdimg_zalloc(sizeof(*scan) * (size_t)nsec);
	if (!logbuf || !e || !scan) {
		ret = -ENOMEM;
		goto out;
	}
	ret = vdimg_file_read(img->file, logbuf, log->length, log->offset);
	if (ret)
		goto out;
	for (s = 0; s < nsec; s++)
		vhdx_entry_check(logbuf, nsec, s, log->guid, e, &scan[s], &budget);
	if (!budget) {
		ret = vdimg_corrupt(img, "the log's entries overlap each other beyond repair");
		goto out;
	}

	/*
	 * The active sequence: the valid sequence whose head has the highest sequence number. A
	 * sequence runs from the head's tail entry to the head, each entry directly following the
	 * previous one with the next sequence number. Try heads from the highest number down.
	 */
	for (;;) {
		u64 best = 0;
		u32 cur;

		head = nsec;
		for (s = 0; s < nsec; s++)
			if (scan[s].seq && scan[s].seq > best && scan[s].seq < best_below) {
				best = scan[s].seq;
				head = s;
			}
		if (head == nsec)
			break;		/* no valid sequence: nothing to replay */
		best_below = best;
		tail = scan[head].tail;
		cur = tail;
		for (steps = 0; steps <= nsec; steps++) {
			u32 next;

			if (!scan[cur].seq)
				break;
			if (cur == head)
				break;
			next = (cur + scan[cur].sectors) % nsec;
			if (!scan[next].seq || scan[next].seq != scan[cur].seq + 1)
				break;
			cur = next;
		}
		if (cur != head || !scan[cur].seq)
			continue;	/* the tail does not lead to this head */

		/* replay tail .. head in order */
		log->replayed_entries = 0;
		log->last_file_offset = 0;
		cur = tail;
		for (;;) {
			struct vhdx_scan tmp;
			u64 again = nsec;

			if (!vhdx_entry_check(logbuf, nsec, cur, log->guid, e, &tmp, &again)) {
				ret = -EIO;	/* cannot happen: validated above */
				goto out;
			}
			ret = vhdx_entry_apply(img, log, e, file_size, to_file, &cap);
			if (ret)
				goto out;
			log->replayed_entries++;
			if (cur == head)
				break;
			cur = (cur + scan[cur].sectors) % nsec;
		}
		log->seq = scan[head].seq + 1;
		if (to_file && log->last_file_offset > file_size &&
		    vdimg_file_fixed_size(img->file)) {
			ret = vdimg_corrupt(img,
					    "the log says the image is %llu bytes long, more than the block device holds (%llu)",
					    (unsigned long long)log->last_file_offset,
					    (unsigned long long)file_size);
			goto out;
		}
		if (to_file && log->last_file_offset > file_size) {
			ret = vdimg_file_truncate(img->file,
						  ALIGN(log->last_file_offset, VHDX_MiB));
			if (ret)
				goto out;
		}
		break;
	}
	ret = 0;
out:
	if (ret)
		vdimg_vhdx_log_free_overlay(log);
	vdimg_free(scan);
	vdimg_free(e);
	vdimg_free(logbuf);
	return ret;
}

int vdimg_vhdx_meta_read(struct vdimg_image *img, const struct vhdx_log *log, void *buf,
			 size_t len, u64 off)
{
	u8 *p = buf;
	u32 i;
	int ret;

	ret = vdimg_file_read(img->file, buf, len, off);
	if (ret)
		return ret;
	for (i = 0; i < log->nr_ov; i++) {
		const struct vhdx_overlay *o = &log->ov[i];
		u64 s = max(o->off, off), e = min(o->off + o->len, off + len);

		if (s >= e)
			continue;
		if (o->data)
			memcpy(p + (s - off), o->data + (s - o->off), e - s);
		else
			memset(p + (s - off), 0, e - s);
	}
	return 0;
}

int vdimg_vhdx_log_write(struct vdimg_image *img, struct vhdx_log *log,
			 const struct vhdx_log_page *pages, u32 n, u64 file_size)
{
	u32 dsec = vhdx_desc_sectors(n), total = (dsec + n) * VHDX_LOG_SECTOR, k;
	struct vhdx_log_entry_hdr *h;
	u8 *e;
	int ret;

	if (!n || total > log->length)
		return -EINVAL;
	if (log->pos + (u64)total > log->length)
		log->pos = 0;
	e = vdimg_zalloc(total);
	if (!e)
		return -ENOMEM;
	h = (void *)e;
	memcpy(h->signature, "loge", 4);
	h->entry_length = cpu_to_le32(total);
	h->tail = cpu_to_le32(log->pos);
	h->seq = cpu_to_le64(log->seq);
	h->descriptor_count = cpu_to_le32(n);
	memcpy(h->log_guid, log->guid, 16);
	h->flushed_file_offset = cpu_to_le64(file_size);
	h->last_file_offset = cpu_to_le64(file_size);
	for (k = 0; k < n; k++) {
		struct vhdx_log_desc *d = (struct vhdx_log_desc *)vhdx_desc(e, k);
		struct vhdx_log_data *ds = (void *)(e + (size_t)(dsec + k) * VHDX_LOG_SECTOR);
		__le64 lead;
		__le32 trail;

		memcpy(&lead, pages[k].data, 8);
		memcpy(&trail, pages[k].data + VHDX_LOG_SECTOR - 4, 4);
		memcpy(d->signature, "desc", 4);
		d->trailing_or_reserved = trail;
		d->leading_or_length = lead;
		d->file_offset = cpu_to_le64(pages[k].off);
		d->seq = cpu_to_le64(log->seq);
		memcpy(ds->signature, "data", 4);
		ds->seq_high = cpu_to_le32((u32)(log->seq >> 32));
		ds->seq_low = cpu_to_le32((u32)log->seq);
		memcpy(ds->data, pages[k].data + 8, sizeof(ds->data));
	}
	h->checksum = cpu_to_le32(vdimg_vhdx_crc(e, total,
						 offsetof(struct vhdx_log_entry_hdr, checksum)));
	ret = vdimg_file_write(img->file, e, total, log->offset + log->pos);
	vdimg_free(e);
	if (ret)
		return ret;
	log->pos += total;
	if (log->pos >= log->length)
		log->pos = 0;
	log->seq++;
	return 0;
}
