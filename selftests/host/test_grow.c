// SPDX-License-Identifier: GPL-2.0
/*
 * Host tests of the backends' online grow op (->grow(), the kernel-shared code VDIMG_CTL_RESIZE
 * calls) through the userspace library: raw, qcow2 (v2, v3, extended L2, several cluster sizes),
 * QED, dynamic VDI and dynamic and fixed VHD images made by qemu-img and filled by qemu-io grow from 64 MiB to 128 MiB;
 * then `qemu-img info` must report the new size and `qemu-img check` be clean, the old data must
 * read back (and match `qemu-img convert`), the new range must read as zeros, and data written
 * after the grow on both sides of the old end must read back, also through qemu. Refusals: a
 * qcow2 L1 table that is full in place, a QED size past what its L1 maps, a VDI block map
 * without room (-EFBIG, the image unchanged), a fixed VDI (-EOPNOTSUPP), a shrink or the same
 * size (-EINVAL), a read-only open (-EROFS). The old last cluster past a non-aligned end holds
 * stale bytes (left there by a shrink) that the grow must zero. A qcow2 overlay grown over a
 * smaller raw base reads the base's data, then zeros past the base's end. VHD: a BAT without
 * room (-EFBIG, unchanged), a differencing image (-EOPNOTSUPP), stale bytes in the last block
 * past a non-aligned end zeroed, the footer geometry of a size CHS expresses; qemu has no VHD
 * check, so ours and vhdiinfo stand in for `qemu-img check`.
 * Skips (exit 4) when qemu-img is missing. KTAP on stdout.
 */
#include "../../backends/vhd/vhd.h"
#include "../../tools/lib/tool-ops.h"
#include "format_test.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

static const char *const fill_cmds =
	"-c 'write -P 0x11 0 4k' -c 'write -P 0x22 1000k 100k' -c 'write -P 0x33 30m 1m' "
	"-c 'write -z 40m 1m' -c 'write -P 0x44 63m 1m'";

/* qemu-img info's virtual size of @path */
static u64 qemu_vsize(const char *path)
{
	char cmd[1024], out[64] = "";
	FILE *f;

	snprintf(cmd, sizeof(cmd),
		 "qemu-img info --output=json '%s' | sed -n 's/.*\"virtual-size\": *\\([0-9]*\\).*/\\1/p' | head -1",
		 path);
	f = popen(cmd, "r");
	if (!f)
		return 0;
	if (!fgets(out, sizeof(out), f))
		out[0] = 0;
	pclose(f);
	return strtoull(out, NULL, 10);
}

/* grow @path (format @fmt) to @size through the backend op; the op's result */
static int grow_file(const char *path, const struct vdimg_format *fmt, u64 size, bool ro)
{
	struct vdimg_image img = { 0 };
	int fd = openf(path, ro ? O_RDONLY : O_RDWR), ret;

	/* a VMDK descriptor's extent files, as vdimgctl attach passes them */
	img.file = vdimg_file_from_fd(fd);
	img.name = path;
	img.fmt = fmt;
	ret = vdimg_image_open_extents(&img, fmt->id, !ro);
	if (!ret)
		ret = fmt->open(&img, ro ? VDIMG_OPEN_READ_ONLY : 0);
	if (!ret) {
		if (ro)
			img.flags |= VDIMG_IMG_READ_ONLY;
		ret = fmt->grow(&img, size);
		if (!ret && img.size != size)
			ret = -EBADE;
		fmt->close(&img);
	}
	vdimg_image_close_extents(&img);
	vdimg_file_free(img.file);
	close(fd);
	return ret;
}

static bool read_is(struct vdimg_chain *c, u64 off, u64 len, int byte)
{
	u8 *buf = malloc(len);
	bool r = buf && !vdimg_chain_pread(c, buf, len, off) && is_byte(buf, len, byte);

	free(buf);
	return r;
}

/*
 * qemu sizes a fixed VHD by its file, footer included: `qemu-img info` says 512 bytes more and
 * `qemu-img convert` copies the footer too. Set while checking one.
 */
static u64 qemu_extra;

/* reads as `qemu-img convert` of the image, less the qemu_extra bytes at its end */
static bool matches_qemu(const char *const *paths, int n, const struct vdimg_format *fmt,
			 const bool *mine, const char *tag, u64 size)
{
	struct vdimg_chain *c;
	size_t len;
	u8 *want;
	bool same;

	if (!qemu_extra)
		return chain_matches_qemu_with(paths, n, fmt, mine, tag);
	if (sh("qemu-img convert -O raw '%s' '%s'", paths[n - 1], tp("ref.raw")))
		return false;
	want = slurp(tp("ref.raw"), &len);
	same = want && len == size + qemu_extra &&
	       !open_chain_with(&c, paths, n, fmt, mine, true, 0);
	if (same) {
		u8 *got = malloc(size);

		same = got && c->size == size && !vdimg_chain_pread(c, got, size, 0) &&
		       !memcmp(want, got, size);
		free(got);
		close_chain(c, n);
	}
	free(want);
	return same;
}

/* After a grow from @old to @new: data, zeros, writes past and across the old end. */
static void check_grown(const char *const *paths, int n, const struct vdimg_format *fmt,
			const bool *mine, const char *fmtname, u64 old, u64 new, const char *tag)
{
	static u8 buf[2 * MiB];
	struct vdimg_chain *c;
	int ret;

	ok(qemu_vsize(paths[n - 1]) == new + qemu_extra, "%s: qemu-img info says %llu bytes", tag,
	   (unsigned long long)(new + qemu_extra));
	ok(image_clean(fmtname, paths[n - 1], fmt), "%s: qemu-img check (or ours) clean", tag);
	ok(matches_qemu(paths, n, fmt, mine, tag, new), "%s: reads as qemu-img convert", tag);
	ret = open_chain_with(&c, paths, n, fmt, mine, false, 0);
	if (!ok(!ret, "%s: reopens writable", tag))
		return;
	ok(c->size == new, "%s: size %llu", tag, (unsigned long long)c->size);
	ok(n > 1 || (read_is(c, 30 * MiB, MiB, 0x33) && read_is(c, 63 * MiB, MiB, 0x44)),
	   "%s: old data reads back", tag);
	ok(read_is(c, old, new - old, 0), "%s: the new range reads as zeros", tag);
	fill_pat(buf, sizeof(buf), 7, old - MiB);
	ret = vdimg_chain_pwrite(c, buf, sizeof(buf), old - MiB);
	fill_pat(buf, MiB, 8, new - MiB);
	if (!ret)
		ret = vdimg_chain_pwrite(c, buf, MiB, new - MiB);
	ok(!ret, "%s: writes across the old end and at the new end", tag);
	ret = vdimg_chain_pread(c, buf, sizeof(buf), old - MiB);
	ok(!ret && is_pat(buf, sizeof(buf), 7, old - MiB), "%s: the write across the old end reads back",
	   tag);
	ret = vdimg_chain_pread(c, buf, MiB, new - MiB);
	ok(!ret && is_pat(buf, MiB, 8, new - MiB), "%s: the write at the new end reads back", tag);
	close_chain(c, n);
	ok(image_clean(fmtname, paths[n - 1], fmt),
	   "%s: qemu-img check (or ours) clean after the writes", tag);
	ok(!sh("qemu-io -f %s -c 'read -P 0 %llu 1m' '%s' >/dev/null", fmtname,
	       (unsigned long long)(old + MiB), paths[n - 1]) &&
	   matches_qemu(paths, n, fmt, mine, tag, new),
	   "%s: qemu reads what we wrote", tag);
}

/*
 * A raw file grown underneath while open (truncate, lvextend): a grow up to its size takes it as
 * it is (its new bytes show, as after losetup -c), a grow past it extends it.
 */
static void test_raw_grown_underneath(const char *path)
{
	static u8 buf[4096];
	struct vdimg_image img;
	int fd = openf(path, O_RDWR), ret;

	ret = img_open_with(&img, &vdimg_raw_format, fd, path, 0);
	if (!ok_err(ret, 0, "raw grown underneath: open"))
		goto out;
	memset(buf, 0x5a, sizeof(buf));
	ok(!truncate(path, 160 * MiB) && pwrite(fd, buf, sizeof(buf), 150 * MiB) == sizeof(buf),
	   "raw grown underneath: the file grows to 160 MiB, data at 150 MiB");
	ok_err(vdimg_raw_format.grow(&img, 160 * MiB), 0, "raw grown underneath: grow to its size");
	memset(buf, 0, sizeof(buf));
	ok(img.size == 160 * MiB && !vdimg_file_read(img.file, buf, sizeof(buf), 150 * MiB) &&
	   is_byte(buf, sizeof(buf), 0x5a), "raw grown underneath: its data shows, the size follows");
	ok_err(vdimg_raw_format.grow(&img, 192 * MiB), 0, "raw grown underneath: grow past it");
	ok(vdimg_file_size(img.file) == 192 * MiB, "raw grown underneath: the file is extended");
	img_close(&img);
out:
	close(fd);
}

static void test_raw(void)
{
	const char *p[1] = { tp("g.raw") };

	if (!ok(!sh("qemu-img create -q -f raw '%s' 64M && qemu-io -f raw %s '%s' >/dev/null", p[0],
		    fill_cmds, p[0]), "raw: qemu made the image"))
		return;
	ok_err(grow_file(p[0], &vdimg_raw_format, 64 * MiB, false), -EINVAL, "raw: same size refused");
	ok_err(grow_file(p[0], &vdimg_raw_format, 32 * MiB, false), -EINVAL, "raw: shrink refused");
	ok_err(grow_file(p[0], &vdimg_raw_format, 128 * MiB, false), 0, "raw: grown to 128 MiB");
	check_grown(p, 1, &vdimg_raw_format, NULL, "raw", 64 * MiB, 128 * MiB, "raw");
	test_raw_grown_underneath(p[0]);
}

static const char *const qcfgs[] = {
	"compat=1.1,cluster_size=65536",
	"compat=0.10,cluster_size=65536",
	"compat=1.1,cluster_size=4096",
	"compat=1.1,extended_l2=on,cluster_size=131072",
};

static void test_qcow2(void)
{
	const char *p[1] = { tp("g.qcow2") };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(qcfgs); i++) {
		if (!ok(!sh("qemu-img create -q -f qcow2 -o %s '%s' 64M && qemu-io -f qcow2 %s '%s' >/dev/null",
			    qcfgs[i], p[0], fill_cmds, p[0]), "qcow2 %s: qemu made the image", qcfgs[i]))
			continue;
		ok_err(grow_file(p[0], &vdimg_qcow2_format, 128 * MiB, true), -EROFS,
		       "qcow2 %s: read-only open refused", qcfgs[i]);
		ok_err(grow_file(p[0], &vdimg_qcow2_format, 64 * MiB, false), -EINVAL,
		       "qcow2 %s: same size refused", qcfgs[i]);
		ok_err(grow_file(p[0], &vdimg_qcow2_format, 128 * MiB, false), 0,
		       "qcow2 %s: grown to 128 MiB", qcfgs[i]);
		check_grown(p, 1, &vdimg_qcow2_format, NULL, "qcow2", 64 * MiB, 128 * MiB, qcfgs[i]);
	}
}

/*
 * 512-byte clusters: one L2 table maps 32 KiB, so the L1 of a 64 MiB - 16 KiB disk (2048 entries)
 * fills its 32 clusters exactly: 64 MiB fits in place, 128 MiB does not.
 */
static void test_qcow2_full_l1(void)
{
	const char *p = tp("full.qcow2");
	size_t len1, len2;
	u8 *before, *after;

	if (!ok(!sh("qemu-img create -q -f qcow2 -o cluster_size=512 '%s' %llu && qemu-io -f qcow2 -c 'write -P 0x5a 1m 64k' '%s' >/dev/null",
		    p, 64 * MiB - 16 * KiB, p), "qcow2 512-byte clusters: qemu made the image"))
		return;
	before = slurp(p, &len1);
	ktap_last_msg[0] = 0;
	ok_err(grow_file(p, &vdimg_qcow2_format, 128 * MiB, false), -EFBIG,
	       "qcow2 with a full L1: grow refused with EFBIG");
	ok(strstr(ktap_last_msg, "L1 table") != NULL,
	   "qcow2 with a full L1: the message names the L1 table");
	after = slurp(p, &len2);
	ok(before && after && len1 == len2 && !memcmp(before, after, len1),
	   "qcow2 with a full L1: the file is unchanged");
	free(before);
	free(after);
	ok_err(grow_file(p, &vdimg_qcow2_format, 64 * MiB, false), 0,
	       "qcow2 with a full L1: a grow within the last L2 table works");
	ok(qemu_vsize(p) == 64 * MiB && !sh("qemu-img check -q '%s'", p) &&
	   !sh("qemu-io -f qcow2 -c 'read -P 0x5a 1m 64k' -c 'read -P 0 %llu 16k' '%s' >/dev/null",
	       64 * MiB - 16 * KiB, p),
	   "qcow2 with a full L1: qemu agrees, check clean, data and zeros read back");
}

/*
 * A non-aligned end: qemu shrinks 64 MiB to 63 MiB + 512 after filling the last cluster, which
 * keeps the cluster with its stale bytes past the end; growing must not bring them back.
 */
static void test_qcow2_stale_tail(void)
{
	const char *p[1] = { tp("tail.qcow2") };
	u64 old = 63 * MiB + 512;
	struct vdimg_chain *c;

	if (!ok(!sh("qemu-img create -q -f qcow2 '%s' 64M && qemu-io -f qcow2 -c 'write -P 0x77 63m 1m' '%s' >/dev/null && qemu-img resize -q --shrink '%s' %llu",
		    p[0], p[0], p[0], (unsigned long long)old), "stale tail: qemu made the image"))
		return;
	ok(!sh("qemu-img map --output=json '%s' | grep -q '\"start\": 66060288, .*\"data\": true'", p[0]),
	   "stale tail: the old last cluster is allocated");
	ok_err(grow_file(p[0], &vdimg_qcow2_format, 128 * MiB, false), 0, "stale tail: grown");
	if (!ok(!open_chain_with(&c, p, 1, &vdimg_qcow2_format, NULL, true, 0), "stale tail: reopens"))
		return;
	ok(read_is(c, 63 * MiB, 512, 0x77), "stale tail: the byte before the old end kept its data");
	ok(read_is(c, old, 64 * MiB - old, 0), "stale tail: the rest of the old last cluster reads zeros");
	close_chain(c, 1);
	ok(!sh("qemu-io -f qcow2 -c 'read -P 0 %llu %llu' '%s' >/dev/null", (unsigned long long)old,
	       (unsigned long long)(64 * MiB - old), p[0]), "stale tail: qemu reads zeros there too");
}

static void test_qed(void)
{
	const char *p[1] = { tp("g.qed") };
	size_t len1, len2;
	u8 *before, *after;

	if (!ok(!sh("qemu-img create -q -f qed -o cluster_size=4096,table_size=2 '%s' 64M && qemu-io -f qed %s '%s' >/dev/null",
		    p[0], fill_cmds, p[0]), "qed: qemu made the image"))
		return;
	ok_err(grow_file(p[0], &vdimg_qed_format, 128 * MiB, true), -EROFS,
	       "qed: read-only open refused");
	ok_err(grow_file(p[0], &vdimg_qed_format, 64 * MiB, false), -EINVAL, "qed: same size refused");
	/* 4 KiB clusters, two-cluster tables: the L1 maps 1024 * 1024 * 4 KiB = 4 GiB */
	before = slurp(p[0], &len1);
	ktap_last_msg[0] = 0;
	ok_err(grow_file(p[0], &vdimg_qed_format, 4096 * MiB + 4 * KiB, false), -EFBIG,
	       "qed: past what the L1 table maps refused with EFBIG");
	ok(strstr(ktap_last_msg, "L1 table") != NULL, "qed: the message names the L1 table");
	after = slurp(p[0], &len2);
	ok(before && after && len1 == len2 && !memcmp(before, after, len1),
	   "qed: the file is unchanged");
	free(before);
	free(after);
	ok_err(grow_file(p[0], &vdimg_qed_format, 128 * MiB, false), 0, "qed: grown to 128 MiB");
	check_grown(p, 1, &vdimg_qed_format, NULL, "qed", 64 * MiB, 128 * MiB, "qed");
	ok_err(grow_file(p[0], &vdimg_qed_format, 4096 * MiB, false), 0,
	       "qed: grown to 4 GiB, all the L1 table maps");
	ok(qemu_vsize(p[0]) == 4096 * MiB && !sh("qemu-img check -q -f qed '%s'", p[0]),
	   "qed: qemu agrees, check clean");
}

/*
 * VDI: qemu puts the data area right after a 512-byte aligned block map, so a 64 MiB image of
 * 1 MiB blocks (64 entries) has room for 128 entries: 128 MiB grows in place, more does not.
 */
static void test_vdi(void)
{
	const char *p[1] = { tp("g.vdi") };
	size_t len1, len2;
	u8 *before, *after;

	if (!ok(!sh("qemu-img create -q -f vdi '%s' 64M && qemu-io -f vdi %s '%s' >/dev/null",
		    p[0], fill_cmds, p[0]), "vdi: qemu made the image"))
		return;
	ok_err(grow_file(p[0], &vdimg_vdi_format, 128 * MiB, true), -EROFS,
	       "vdi: read-only open refused");
	before = slurp(p[0], &len1);
	ktap_last_msg[0] = 0;
	ok_err(grow_file(p[0], &vdimg_vdi_format, 129 * MiB, false), -EFBIG,
	       "vdi: past the room of the block map refused with EFBIG");
	ok(strstr(ktap_last_msg, "block map") != NULL, "vdi: the message names the block map");
	after = slurp(p[0], &len2);
	ok(before && after && len1 == len2 && !memcmp(before, after, len1),
	   "vdi: the file is unchanged");
	free(before);
	free(after);
	ok_err(grow_file(p[0], &vdimg_vdi_format, 128 * MiB, false), 0, "vdi: grown to 128 MiB");
	check_grown(p, 1, &vdimg_vdi_format, NULL, "vdi", 64 * MiB, 128 * MiB, "vdi");
	if (ok(!sh("qemu-img create -q -f vdi -o static=on '%s' 8M", tp("fixed.vdi")),
	       "vdi: qemu made a fixed image"))
		ok_err(grow_file(tp("fixed.vdi"), &vdimg_vdi_format, 16 * MiB, false), -EOPNOTSUPP,
		       "vdi: a fixed image is refused");
}

/* Set the current size (and geometry) of the VHD @path in both footers, as another tool would. */
static bool vhd_set_size(const char *path, u64 size, u32 type)
{
	struct vhd_footer f;
	int fd = openf(path, O_RDWR);
	off_t end = lseek(fd, 0, SEEK_END) - VHD_SECTOR;
	bool r = pread(fd, &f, sizeof(f), end) == sizeof(f);

	vhd_footer_set_size(&f, size);
	if (type)
		f.disk_type = cpu_to_be32(type);
	f.checksum = 0;
	f.checksum = cpu_to_be32(vhd_footer_csum(&f));
	r = r && pwrite(fd, &f, sizeof(f), end) == sizeof(f) &&
	    pwrite(fd, &f, sizeof(f), 0) == sizeof(f);
	close(fd);
	return r;
}

/*
 * Dynamic VHD: qemu puts the BAT after the header at 1536 and the first block right after its
 * last sector, so a 64 MiB image of 2 MiB blocks (32 entries) has room for 128: 256 MiB grows
 * in place, more does not.
 */
static void test_vhd_dynamic(void)
{
	const char *p[1] = { tp("g.vhd") };
	size_t len1, len2;
	u8 *before, *after;

	if (!ok(!sh("qemu-img create -q -f vpc -o force_size=on '%s' 64M && qemu-io -f vpc %s '%s' >/dev/null",
		    p[0], fill_cmds, p[0]), "vhd dynamic: qemu made the image"))
		return;
	ok_err(grow_file(p[0], &vdimg_vhd_format, 128 * MiB, true), -EROFS,
	       "vhd dynamic: read-only open refused");
	ok_err(grow_file(p[0], &vdimg_vhd_format, 64 * MiB, false), -EINVAL,
	       "vhd dynamic: same size refused");
	before = slurp(p[0], &len1);
	ktap_last_msg[0] = 0;
	ok_err(grow_file(p[0], &vdimg_vhd_format, 256 * MiB + 512, false), -EFBIG,
	       "vhd dynamic: past the room of the BAT refused with EFBIG");
	ok(strstr(ktap_last_msg, "BAT") && strstr(ktap_last_msg, "268435456"),
	   "vhd dynamic: the message names the BAT and the limit");
	after = slurp(p[0], &len2);
	ok(before && after && len1 == len2 && !memcmp(before, after, len1),
	   "vhd dynamic: the file is unchanged");
	free(before);
	free(after);
	ok_err(grow_file(p[0], &vdimg_vhd_format, 128 * MiB, false), 0,
	       "vhd dynamic: grown to 128 MiB");
	check_grown(p, 1, &vdimg_vhd_format, NULL, "vpc", 64 * MiB, 128 * MiB, "vhd dynamic");
	ok_err(grow_file(p[0], &vdimg_vhd_format, 256 * MiB, false), 0,
	       "vhd dynamic: grown to 256 MiB, all the BAT's room");
	ok(qemu_vsize(p[0]) == 256 * MiB && image_clean("vpc", p[0], &vdimg_vhd_format) &&
	   !sh("qemu-io -f vpc -c 'read -P 0x33 30m 1m' -c 'read -P 0 128m 128m' '%s' >/dev/null",
	       p[0]), "vhd dynamic: qemu agrees, check clean, data and zeros read back");
	/* the same image as a differencing one keeps its parent's size */
	ok(vhd_set_size(p[0], 256 * MiB, VHD_TYPE_DIFF), "vhd: made it differencing");
	ok_err(grow_file(p[0], &vdimg_vhd_format, 258 * MiB, false), -EOPNOTSUPP,
	       "vhd differencing: refused");
}

/*
 * A non-aligned end: the last block is allocated and full of data past the end (another tool
 * shrank the size in the footer); the grow must zero those bytes.
 */
static void test_vhd_stale_tail(void)
{
	const char *p[1] = { tp("tail.vhd") };
	u64 old = 63 * MiB + 512;
	struct vdimg_chain *c;

	if (!ok(!sh("qemu-img create -q -f vpc -o force_size=on '%s' 64M && qemu-io -f vpc -c 'write -P 0x77 63m 1m' '%s' >/dev/null",
		    p[0], p[0]) && vhd_set_size(p[0], old, 0), "vhd stale tail: made the image"))
		return;
	/* within the last block first: no new BAT entry */
	ok_err(grow_file(p[0], &vdimg_vhd_format, 64 * MiB, false), 0,
	       "vhd stale tail: grown within the last block");
	if (ok(!open_chain_with(&c, p, 1, &vdimg_vhd_format, NULL, true, 0),
	       "vhd stale tail: reopens at 64 MiB")) {
		ok(c->size == 64 * MiB && read_is(c, 63 * MiB, 512, 0x77) &&
		   read_is(c, old, 64 * MiB - old, 0),
		   "vhd stale tail: data before the old end, zeros after it");
		close_chain(c, 1);
	}
	ok_err(grow_file(p[0], &vdimg_vhd_format, 96 * MiB, false), 0, "vhd stale tail: grown");
	if (!ok(!open_chain_with(&c, p, 1, &vdimg_vhd_format, NULL, true, 0),
		"vhd stale tail: reopens"))
		return;
	ok(read_is(c, 63 * MiB, 512, 0x77), "vhd stale tail: the sector before the old end kept its data");
	ok(read_is(c, old, 96 * MiB - old, 0), "vhd stale tail: the rest reads zeros");
	close_chain(c, 1);
	ok(!sh("qemu-io -f vpc -c 'read -P 0 %llu %llu' '%s' >/dev/null", (unsigned long long)old,
	       (unsigned long long)(96 * MiB - old), p[0]), "vhd stale tail: qemu reads zeros there too");
}

/* Fixed VHD: the data grows in place, the footer moves to the new end. */
static void test_vhd_fixed(void)
{
	const char *p[1] = { tp("gf.vhd") };
	u16 cyl;
	u8 heads, spt;

	if (!ok(!sh("qemu-img create -q -f vpc -o subformat=fixed,force_size=on '%s' 64M && qemu-io -f vpc %s '%s' >/dev/null",
		    p[0], fill_cmds, p[0]), "vhd fixed: qemu made the image"))
		return;
	ok_err(grow_file(p[0], &vdimg_vhd_format, 128 * MiB, true), -EROFS,
	       "vhd fixed: read-only open refused");
	ok_err(grow_file(p[0], &vdimg_vhd_format, 128 * MiB, false), 0, "vhd fixed: grown to 128 MiB");
	ok(!sh("test $(stat -c %%s '%s') -eq %llu", p[0], 128 * MiB + 512),
	   "vhd fixed: the file is the data and a footer");
	qemu_extra = VHD_SECTOR;
	check_grown(p, 1, &vdimg_vhd_format, NULL, "vpc", 64 * MiB, 128 * MiB, "vhd fixed");
	qemu_extra = 0;
	/* a size the geometry expresses: 16 heads, 63 sectors, 1000 cylinders */
	ok_err(grow_file(p[0], &vdimg_vhd_format, 1000ULL * 16 * 63 * 512, false), 0,
	       "vhd fixed: grown to a CHS size");
	vhd_geometry(1000ULL * 16 * 63, &cyl, &heads, &spt);
	ok(cyl == 1000 && heads == 16 && spt == 63 &&
	   !sh("od -An -tx1 -j %llu -N4 '%s' | grep -q '03 e8 10 3f'",
	       1000ULL * 16 * 63 * 512 + offsetof(struct vhd_footer, cylinders), p[0]) &&
	   qemu_vsize(p[0]) == 1000ULL * 16 * 63 * 512 + VHD_SECTOR &&
	   image_clean("vpc", p[0], &vdimg_vhd_format),
	   "vhd fixed: the footer has that geometry, qemu and vhdiinfo agree");
}

/*
 * Refused with -EFBIG: the message holds @word and the file is byte for byte what it was.
 * (@path is slurped whole: keep such images small or sparse.)
 */
static void grow_refused(const char *path, const struct vdimg_format *fmt, u64 size,
			 const char *word, const char *tag)
{
	size_t len1, len2;
	u8 *before, *after;

	before = slurp(path, &len1);
	ktap_last_msg[0] = 0;
	ok_err(grow_file(path, fmt, size, false), -EFBIG, "%s: refused with EFBIG", tag);
	ok(strstr(ktap_last_msg, word) != NULL, "%s: the message names the %s", tag, word);
	after = slurp(path, &len2);
	ok(before && after && len1 == len2 && !memcmp(before, after, len1),
	   "%s: the file is unchanged", tag);
	free(before);
	free(after);
}

/*
 * VHDX: qemu sizes the BAT region of a small disk to 1 MiB, 131072 entries; with 1 MiB blocks and
 * 4096 blocks per sector bitmap chunk that holds 131041 payload entries and the 31 bitmap entries
 * interleaved with them, so 131041 MiB grows in place and a MiB more does not. (qemu's default
 * blocks for a 64 MiB disk: the common case, with the data and qemu's view checked.)
 */
static void test_vhdx(void)
{
	const char *p[1] = { tp("g.vhdx") };

	if (ok(!sh("rm -f '%s' && qemu-img create -q -f vhdx '%s' 64M && qemu-io -f vhdx %s '%s' >/dev/null",
		   p[0], p[0], fill_cmds, p[0]), "vhdx: qemu made the image")) {
		ok_err(grow_file(p[0], &vdimg_vhdx_format, 128 * MiB, true), -EROFS,
		       "vhdx: read-only open refused");
		ok_err(grow_file(p[0], &vdimg_vhdx_format, 64 * MiB, false), -EINVAL,
		       "vhdx: same size refused");
		ok_err(grow_file(p[0], &vdimg_vhdx_format, 128 * MiB, false), 0,
		       "vhdx: grown to 128 MiB");
		check_grown(p, 1, &vdimg_vhdx_format, NULL, "vhdx", 64 * MiB, 128 * MiB, "vhdx");
	}
	if (!ok(!sh("rm -f '%s' && qemu-img create -q -f vhdx -o block_size=1M '%s' 64M",
		    p[0], p[0]), "vhdx 1 MiB blocks: qemu made the image"))
		return;
	grow_refused(p[0], &vdimg_vhdx_format, 131042 * MiB, "BAT region",
		     "vhdx 1 MiB blocks past 131041 MiB");
	ok(strstr(ktap_last_msg, "137406447616"), "vhdx 1 MiB blocks: the message says 131041 MiB");
	ok_err(grow_file(p[0], &vdimg_vhdx_format, 131041 * MiB, false), 0,
	       "vhdx 1 MiB blocks: grown to 131041 MiB, all the BAT region's room");
	ok(qemu_vsize(p[0]) == 131041 * MiB && !sh("qemu-img check -q -f vhdx '%s'", p[0]) &&
	   !sh("qemu-io -f vhdx -c 'write -P 0x5c 131040m 1m' -c 'read -P 0x5c 131040m 1m' -c 'read -P 0 0 1m' '%s' >/dev/null",
	       p[0]) && !sh("qemu-img check -q -f vhdx '%s'", p[0]),
	   "vhdx 1 MiB blocks: qemu agrees, check clean, writes and reads the last block");
}

/*
 * A VHDX shrunk by the tool's resize op (which leaves the BAT entries past the new end and the
 * bytes of the last block past it as they were) after 60-64 MiB was written: growing online must
 * bring back neither the blocks past the old end nor the tail of the old last block.
 */
static void test_vhdx_stale(void)
{
	const char *p[1] = { tp("tail.vhdx") };
	u64 old = 60 * MiB + 512;
	struct vdimg_chain *c;
	struct vdimg_image img;
	int fd, ret;

	if (!ok(!sh("rm -f '%s' && qemu-img create -q -f vhdx -o block_size=1M '%s' 64M && qemu-io -f vhdx -c 'write -P 0x77 60m 4m' '%s' >/dev/null",
		    p[0], p[0], p[0]), "vhdx stale: qemu made the image"))
		return;
	fd = openf(p[0], O_RDWR);
	ret = img_open_with(&img, &vdimg_vhdx_format, fd, p[0], 0);
	if (!ret) {
		ret = vdimg_tool_ops(img.fmt)->resize(&img, old, VDIMG_RESIZE_SHRINK);
		img_close(&img);
	}
	close(fd);
	if (!ok_err(ret, 0, "vhdx stale: shrunk to 60 MiB + 512 by the resize op"))
		return;
	ok_err(grow_file(p[0], &vdimg_vhdx_format, 128 * MiB, false), 0, "vhdx stale: grown");
	if (!ok(!open_chain_with(&c, p, 1, &vdimg_vhdx_format, NULL, true, 0), "vhdx stale: reopens"))
		return;
	ok(read_is(c, 60 * MiB, 512, 0x77), "vhdx stale: the sector before the old end kept its data");
	ok(read_is(c, old, 128 * MiB - old, 0), "vhdx stale: the rest reads zeros");
	close_chain(c, 1);
	ok(!sh("qemu-img check -q -f vhdx '%s'", p[0]) &&
	   !sh("qemu-io -f vhdx -c 'read -P 0 %llu %llu' '%s' >/dev/null", (unsigned long long)old,
	       (unsigned long long)(128 * MiB - old), p[0]),
	   "vhdx stale: qemu-img check clean, qemu reads zeros there too");
}

/*
 * Parallels: qemu starts the data area on a cluster boundary. 1 MiB clusters: room for 262128
 * entries (256 GiB less 16 MiB). 4 KiB clusters, 64 MiB: 16384 entries, the data at 69632, room
 * for 17392 entries, 69568 KiB. (A writable open rewrites the header's in-use field, which qemu
 * leaves 0: the refusals come after one of ours, so the file is unchanged by the refused one.)
 */
static void test_parallels(void)
{
	const char *p[1] = { tp("g.hds") };
	static const char *const opts[] = { "", "-o cluster_size=4k" };
	char tag[64];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(opts); i++) {
		snprintf(tag, sizeof(tag), "parallels %s", opts[i][0] ? opts[i] + 3 : "default");
		if (!ok(!sh("rm -f '%s' && qemu-img create -q -f parallels %s '%s' 64M && qemu-io -f parallels %s '%s' >/dev/null",
			    p[0], opts[i], p[0], fill_cmds, p[0]), "%s: qemu made the image", tag))
			continue;
		ok_err(grow_file(p[0], &vdimg_parallels_format, 68 * MiB, true), -EROFS,
		       "%s: read-only open refused", tag);
		ok_err(grow_file(p[0], &vdimg_parallels_format, 64 * MiB, false), -EINVAL,
		       "%s: same size refused", tag);
		if (i == 1) {
			grow_refused(p[0], &vdimg_parallels_format, 69568 * KiB + 4 * KiB, "BAT",
				     "parallels 4 KiB clusters past 69568 KiB");
			ok_err(grow_file(p[0], &vdimg_parallels_format, 69568 * KiB, false), 0,
			       "%s: grown to 69568 KiB, all the BAT's room", tag);
			ok(qemu_vsize(p[0]) == 69568 * KiB &&
			   !sh("qemu-img check -q -f parallels '%s'", p[0]),
			   "%s: qemu agrees, check clean", tag);
			ok(!sh("qemu-io -f parallels -c 'read -P 0x44 63m 1m' -c 'read -P 0 64m 3m' -c 'write -P 0x5d 69564k 4k' -c 'read -P 0x5d 69564k 4k' '%s' >/dev/null",
			       p[0]) && !sh("qemu-img check -q -f parallels '%s'", p[0]),
			   "%s: qemu reads the data and zeros, writes the last cluster, check clean",
			   tag);
			continue;
		}
		grow_refused(p[0], &vdimg_parallels_format, 262128 * MiB + MiB, "BAT",
			     "parallels past the BAT's room");
		ok_err(grow_file(p[0], &vdimg_parallels_format, 128 * MiB, false), 0,
		       "%s: grown to 128 MiB", tag);
		check_grown(p, 1, &vdimg_parallels_format, NULL, "parallels", 64 * MiB, 128 * MiB,
			    tag);
		ok_err(grow_file(p[0], &vdimg_parallels_format, 262128 * MiB, false), 0,
		       "%s: grown to 262128 MiB, all the BAT's room", tag);
		ok(qemu_vsize(p[0]) == 262128 * MiB && !sh("qemu-img check -q -f parallels '%s'", p[0]),
		   "%s: qemu agrees, check clean", tag);
	}
}

/*
 * VMDK, as qemu makes them: monolithicSparse (64 KiB grains, 512-entry tables: a GD entry maps
 * 32 MiB, its one sector holds 128, so 4 GiB grows in place; past that the directories move,
 * which test_vmdk covers, up to 2^22 tables: 128 TiB), twoGbMaxExtentSparse (the last extent file
 * up to 2 GiB online), and the flat kinds, whose file is extended. streamOptimized is refused.
 */
static void test_vmdk(void)
{
	static const char *const sub[] = { "monolithicSparse", "twoGbMaxExtentSparse",
					   "monolithicFlat", "twoGbMaxExtentFlat" };
	const char *p[1] = { tp("g.vmdk") };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(sub); i++) {
		if (!ok(!sh("rm -f %s/g*.vmdk && qemu-img create -q -f vmdk -o subformat=%s '%s' 64M && qemu-io -f vmdk %s '%s' >/dev/null",
			    tp(""), sub[i], p[0], fill_cmds, p[0]), "vmdk %s: qemu made the image", sub[i]))
			continue;
		ok_err(grow_file(p[0], &vdimg_vmdk_format, 128 * MiB, true), -EROFS,
		       "vmdk %s: read-only open refused", sub[i]);
		ok_err(grow_file(p[0], &vdimg_vmdk_format, 64 * MiB, false), -EINVAL,
		       "vmdk %s: same size refused", sub[i]);
		if (i == 0)
			grow_refused(p[0], &vdimg_vmdk_format, (128ULL << 40) + 64 * KiB,
				     "most a sparse extent", "vmdk monolithicSparse past 128 TiB");
		if (i == 1 || i == 3)
			grow_refused(p[0], &vdimg_vmdk_format, 2048 * MiB + 512, "vdimgctl resize",
				     i == 1 ? "vmdk twoGbMaxExtentSparse past 2 GiB" :
				     "vmdk twoGbMaxExtentFlat past 2 GiB");
		ok_err(grow_file(p[0], &vdimg_vmdk_format, 128 * MiB, false), 0,
		       "vmdk %s: grown to 128 MiB", sub[i]);
		if (i == 0 || i == 2)
			check_grown(p, 1, &vdimg_vmdk_format, NULL, "vmdk", 64 * MiB, 128 * MiB,
				    sub[i]);
		else
			ok(qemu_vsize(p[0]) == 128 * MiB && !sh("qemu-img check -q '%s'", p[0]) &&
			   !sh("qemu-io -f vmdk -c 'read -P 0x44 63m 1m' -c 'read -P 0 64m 64m' -c 'write -P 0x5f 127m 1m' -c 'read -P 0x5f 127m 1m' '%s' >/dev/null",
			       p[0]) && !sh("qemu-img check -q '%s'", p[0]),
			   "vmdk %s: qemu agrees, reads data and zeros, writes the last MiB, check clean",
			   sub[i]);
		ok(!sh("grep -aq 'ddb.geometry.cylinders = \"260\"' '%s'", p[0]),
		   "vmdk %s: the descriptor's cylinders follow (260 of 16 x 63)", sub[i]);
		if (i == 0) {
			ok_err(grow_file(p[0], &vdimg_vmdk_format, 4096 * MiB, false), 0,
			       "vmdk monolithicSparse: grown to 4 GiB, all the GD's room");
			ok(qemu_vsize(p[0]) == 4096 * MiB &&
			   !sh("qemu-io -f vmdk -c 'write -P 0x5e 4095m 1m' -c 'read -P 0x5e 4095m 1m' -c 'read -P 0x33 30m 1m' '%s' >/dev/null",
			       p[0]) && !sh("qemu-img check -q -f vmdk '%s'", p[0]),
			   "vmdk monolithicSparse: qemu agrees, writes the last grain, check clean");
		}
	}
	if (ok(!sh("rm -f %s/g*.vmdk && qemu-img create -q -f vmdk -o subformat=streamOptimized '%s' 64M",
		   tp(""), p[0]), "vmdk streamOptimized: qemu made the image"))
		ok(grow_file(p[0], &vdimg_vmdk_format, 128 * MiB, false) == -EOPNOTSUPP,
		   "vmdk streamOptimized: refused (read-only format)");
}

/* A qcow2 overlay over a 64 MiB raw base grows; the base stays 64 MiB and reads zeros past it. */
static void test_overlay(void)
{
	const char *p[2] = { tp("base.raw"), tp("ov.qcow2") };
	static const bool mine[2] = { false, true };

	if (!ok(!sh("qemu-img create -q -f raw '%s' 64M && qemu-io -f raw %s '%s' >/dev/null && qemu-img create -q -f qcow2 -F raw -b '%s' '%s' && qemu-io -f qcow2 -c 'write -P 0x66 2m 64k' '%s' >/dev/null",
		    p[0], fill_cmds, p[0], p[0], p[1], p[1]), "overlay: qemu made base and overlay"))
		return;
	ok_err(grow_file(p[1], &vdimg_qcow2_format, 128 * MiB, false), 0, "overlay: grown");
	check_grown(p, 2, &vdimg_qcow2_format, mine, "qcow2", 64 * MiB, 128 * MiB, "overlay");
	ok(!sh("test $(stat -c %%s '%s') -eq %llu", p[0], 64 * MiB), "overlay: the base kept its size");
}

int main(void)
{
	ktap_start();
	if (sh("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1")) {
		skip("qemu-img/qemu-io not installed");
		return ktap_finish();
	}
	ok(!vdimg_qcow_format.grow, "formats without a grow op say so (NULL)");
	test_raw();
	test_qcow2();
	test_qcow2_full_l1();
	test_qcow2_stale_tail();
	test_qed();
	test_vdi();
	test_vhd_dynamic();
	test_vhd_stale_tail();
	test_vhd_fixed();
	test_vhdx();
	test_vhdx_stale();
	test_parallels();
	test_vmdk();
	test_overlay();
	return ktap_finish();
}
