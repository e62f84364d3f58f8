/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A crash model that reorders, for the host crash tests. The write-cut hook (vdimg_write_budget)
 * models a crash as a prefix of the writes; a host file system does not keep that order: until an
 * fsync completes, any of the writes since the previous one may or may not be on the disk (ext4
 * with data=ordered can write an in-place metadata overwrite before the journal commit that
 * extends the file). Here the library records every change of the image file and every completed
 * sync (vdimg_wlog, tools/lib/vdimg-user.h) while the test runs its workload, with marks of its own
 * (MARK: operation N starts; ACK: a flush acknowledged operations below N). Then, at every cut
 * (after each recorded change or sync) the file is rebuilt from its pristine bytes: everything up
 * to the last completed sync before the cut, and one subset of what came after it: all of it (the
 * prefix model), none, all but the last 1 or 2, and random subsets (seeded by the cut, so a failure
 * replays). The test's check function judges each distinct state (the same bytes with the same
 * operations acknowledged and started are checked once).
 */
#ifndef _VDIMG_MOCK_REORDER_H
#define _VDIMG_MOCK_REORDER_H

#include "format_test.h"

#define REORDER_RANDOM	3	/* random subsets per cut */

struct reorder_state {
	size_t cut;		/* records [0, cut) had been issued */
	int variant;		/* which subset of the pending records */
	long long acked;	/* operations below this were acknowledged by a flush */
	long long started;	/* the last operation started, -1 for none */
};

/* judges the file at @path rebuilt for @st; false (with a "# ..." line printed) when wrong */
typedef bool (*reorder_check_fn)(const char *path, const struct reorder_state *st, void *ctx);

struct reorder_file {
	u8 *p;
	u64 size, cap;
};

static inline void reorder_resize(struct reorder_file *f, u64 size)
{
	if (size > f->cap) {
		u64 cap = max(size, 2 * f->cap);

		f->p = realloc(f->p, cap);
		if (!f->p) {
			printf("Bail out! out of memory\n");
			exit(1);
		}
		f->cap = cap;
	}
	if (size > f->size)
		memset(f->p + f->size, 0, size - f->size);
	f->size = size;
}

static inline void reorder_apply(struct reorder_file *f, const struct vdimg_wlog_rec *r)
{
	u64 end;

	switch (r->kind) {
	case VDIMG_WLOG_WRITE:
		if (r->off + r->len > f->size)
			reorder_resize(f, r->off + r->len);
		memcpy(f->p + r->off, r->data, r->len);
		break;
	case VDIMG_WLOG_ZERO:
		end = min(r->off + r->len, f->size);
		if (r->off < end)
			memset(f->p + r->off, 0, end - r->off);
		break;
	case VDIMG_WLOG_TRUNCATE:
		reorder_resize(f, r->off);
		break;
	}
}

/* a state already checked: the same bytes with the same operations acknowledged and started */
struct reorder_seen {
	u32 crc;
	u64 size;
	long long acked, started;
};

static inline bool reorder_seen_before(struct reorder_seen **seen, size_t *nr,
				       const struct reorder_file *f, const struct reorder_state *st)
{
	struct reorder_seen k;
	size_t i;

	memset(&k, 0, sizeof(k));	/* the padding too: compared with memcmp() */
	k.crc = vdimg_crc32(0, f->p, f->size);
	k.size = f->size;
	k.acked = st->acked;
	k.started = st->started;

	for (i = 0; i < *nr; i++)
		if (!memcmp(&(*seen)[i], &k, sizeof(k)))
			return true;
	*seen = realloc(*seen, (*nr + 1) * sizeof(k));
	if (!*seen) {
		printf("Bail out! out of memory\n");
		exit(1);
	}
	(*seen)[(*nr)++] = k;
	return false;
}

static inline bool reorder_is_change(const struct vdimg_wlog_rec *r)
{
	return r->kind == VDIMG_WLOG_WRITE || r->kind == VDIMG_WLOG_ZERO ||
	       r->kind == VDIMG_WLOG_TRUNCATE;
}

/*
 * Which of the @n pending changes does @variant keep? Fills @take; false when the variant is the
 * same as an earlier one of this cut (nothing to check).
 */
static inline bool reorder_subset(bool *take, size_t n, int variant, size_t cut)
{
	u64 seed = 0x9e3779b97f4a7c15ULL * (cut + 1) + variant;
	size_t i, kept = 0;

	switch (variant) {
	case 0:		/* all: what the prefix model sees */
		for (i = 0; i < n; i++)
			take[i] = true;
		return true;
	case 1:		/* none */
		for (i = 0; i < n; i++)
			take[i] = false;
		return n > 0;
	case 2:		/* all but the last one */
	case 3:		/* all but the last two */
		for (i = 0; i < n; i++)
			take[i] = i + variant - 1 < n;
		return n > (size_t)variant - 1;
	}
	for (i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		take[i] = seed & 1;
		kept += take[i];
	}
	return n > 2 && kept && kept < n;
}

/*
 * Replay the log recorded over the file whose bytes were @pristine (@plen) into @path, state by
 * state, and call @check on each. Returns the number of bad states; @states counts those checked.
 */
static inline int reorder_replay(const char *path, const u8 *pristine, u64 plen,
				 reorder_check_fn check, void *ctx, int *states)
{
	const struct vdimg_wlog *log = &vdimg_wlog;
	struct reorder_file f = { 0 };
	size_t cut, i, durable = 0, n;
	bool *take = calloc(log->nr + 1, sizeof(bool));
	struct reorder_state st;
	struct reorder_seen *seen = NULL;
	size_t nr_seen = 0;
	int bad = 0;

	*states = 0;
	st.acked = 0;
	st.started = -1;
	for (cut = 1; cut <= log->nr; cut++) {
		const struct vdimg_wlog_rec *last = &log->rec[cut - 1];

		if (last->kind == VDIMG_WLOG_MARK)
			st.started = last->off;
		if (last->kind == VDIMG_WLOG_ACK)
			st.acked = last->off;
		if (last->kind == VDIMG_WLOG_SYNC)
			durable = cut;
		if (!reorder_is_change(last) && last->kind != VDIMG_WLOG_SYNC)
			continue;
		st.cut = cut;
		for (n = 0, i = durable; i < cut; i++)
			n += reorder_is_change(&log->rec[i]);
		for (st.variant = 0; st.variant < 4 + REORDER_RANDOM; st.variant++) {
			size_t k = 0;

			if (!reorder_subset(take, n, st.variant, cut))
				continue;
			f.size = 0;
			reorder_resize(&f, plen);
			memcpy(f.p, pristine, plen);
			for (i = 0; i < cut; i++) {
				if (!reorder_is_change(&log->rec[i]))
					continue;
				if (i < durable || take[k++])
					reorder_apply(&f, &log->rec[i]);
			}
			if (reorder_seen_before(&seen, &nr_seen, &f, &st))
				continue;
			put_file(path, f.p, f.size);
			(*states)++;
			if (!check(path, &st, ctx)) {
				printf("# ^ at cut %zu of %zu (%zu pending), variant %d, acked %lld, started %lld\n",
				       cut, log->nr, n, st.variant, st.acked, st.started);
				bad++;
			}
		}
	}
	free(f.p);
	free(take);
	free(seen);
	return bad;
}

#endif /* _VDIMG_MOCK_REORDER_H */
