// SPDX-License-Identifier: GPL-2.0
/*
 * Outside CI: the reordering crash model (mock_reorder.h) applied to every writable format with a
 * seeded random workload of writes and write-zeroes, a flush after every third operation. Each
 * distinct state must open read-only, hold what the last completed flush acknowledged (or what a
 * later operation wrote) in every sector, check without errors (the format's own check, and
 * qemu-img check where qemu has the format, leaks allowed), and open read-write and take a
 * write. A Parallels image a crash left with its in-use flag set is a warning, not an error, to
 * both checkers (qemu calls it a corruption; nothing else may be wrong); it opens read-write only
 * after `check --repair`, which this does, as a user would, before the write. KTAP on stdout, one
 * test per format. Build and run:
 *
 *   make build/libvdimg-asan.a && cc -O1 -g -fsanitize=address,undefined -D_GNU_SOURCE \
 *	-I. -Iinclude -Itools/lib -Iselftests/host -o build/host/reorder_formats \
 *	selftests/host/reorder_formats.c build/libvdimg-asan.a -lz -lzstd -lpthread
 *   build/host/reorder_formats [format...]
 */
#include <sys/wait.h>
#include "format_test.h"
#include "mock_reorder.h"

#define RF_SIZE		(8ULL << 20)
#define RF_OPS		12

static bool have_qemu;

struct rf_format {
	const char *name, *qemu;	/* qemu-img's name, NULL if qemu cannot check it */
	const struct vdimg_format *fmt;
	const struct vdimg_tool_ops *ops;
	int (*prep)(int fd);		/* changes the new image before the workload; may be NULL */
};

/*
 * vmdk-lazy: a VMDK whose GTs are linked on first write (as VirtualBox makes them) rather than at
 * create: the GD and redundant GD entries are cleared (the tables they linked leak), so the
 * workload exercises a flush that links new tables in both directories.
 */
static int rf_vmdk_lazy(int fd)
{
	__le64 rgd = 0, gd = 0;
	__le32 zero = 0;

	if (pread(fd, &rgd, 8, 48) != 8 || pread(fd, &gd, 8, 56) != 8 || !rgd || !gd)
		return -EIO;
	/* 8 MiB: one GT */
	if (pwrite(fd, &zero, 4, le64toh(gd) * 512) != 4 ||
	    pwrite(fd, &zero, 4, le64toh(rgd) * 512) != 4)
		return -EIO;
	return 0;
}

static const struct rf_format rf_formats[] = {
	{ "vdi", "vdi", &vdimg_vdi_format, &vdimg_vdi_tool_ops },
	{ "vhd", "vpc", &vdimg_vhd_format, &vdimg_vhd_tool_ops },
	{ "vhdx", "vhdx", &vdimg_vhdx_format, &vdimg_vhdx_tool_ops },
	{ "qcow2", "qcow2", &vdimg_qcow2_format, &vdimg_qcow2_tool_ops },
	{ "qed", "qed", &vdimg_qed_format, &vdimg_qed_tool_ops },
	{ "vmdk", "vmdk", &vdimg_vmdk_format, &vdimg_vmdk_tool_ops },
	{ "vmdk-lazy", "vmdk", &vdimg_vmdk_format, &vdimg_vmdk_tool_ops, rf_vmdk_lazy },
	{ "parallels", "parallels", &vdimg_parallels_format, &vdimg_parallels_tool_ops },
};

struct rf_op {
	u64 off, len;
	int kind;		/* 0 write, 1 write-zeroes (discard with ZEROES), 2 flush */
};

struct rf_ctx {
	const struct rf_format *f;
	struct rf_op op[RF_OPS];
	u8 *refs[RF_OPS + 1];
	u8 *got;
};

static int rf_open(struct vdimg_chain **c, const struct rf_ctx *x, const char *path,
		   unsigned int flags)
{
	u32 id = x->f->fmt->id;

	return vdimg_chain_open(c, &path, 1, &id, flags);
}

/*
 * A format that refuses writes after a crash until a repair (the in-use flag of Parallels): what
 * the user does, `vdimgctl check --repair`, which must find no errors, only what a crash leaves.
 */
static int rf_repair(const struct rf_ctx *x, const char *path)
{
	struct vdimg_check_result res = { 0 };
	struct vdimg_image im = { .name = path };
	int fd, ret;

	fd = open(path, O_RDWR);
	if (fd < 0)
		return -errno;
	im.file = vdimg_file_from_fd(fd);
	ret = vdimg_image_open(&im, x->f->fmt->id, VDIMG_OPEN_REPAIR);
	if (!ret) {
		ret = x->f->ops->check ? x->f->ops->check(&im, VDIMG_CHECK_REPAIR, &res) : -EUCLEAN;
		if (!ret && res.errors) {
			printf("# check --repair finds %llu errors: %s\n",
			       (unsigned long long)res.errors, ktap_last_msg);
			ret = -EUCLEAN;
		}
		if (!ret && im.fmt->flush)
			ret = im.fmt->flush(&im);
		vdimg_image_close(&im);
	}
	vdimg_file_free(im.file);
	close(fd);
	return ret;
}

static bool rf_check(const char *path, const struct reorder_state *st, void *ctx)
{
	struct rf_ctx *x = ctx;
	struct vdimg_check_result res = { 0 };
	const u8 *ack = x->refs[st->acked];
	struct vdimg_chain *c;
	u8 want[512];
	bool good = true;
	int ret;

	ktap_last_msg[0] = '\0';
	if (rf_open(&c, x, path, VDIMG_CHAIN_READ_ONLY)) {
		printf("# read-only open failed: %s\n", ktap_last_msg);
		return false;
	}
	if (vdimg_chain_pread(c, x->got, RF_SIZE, 0)) {
		printf("# the image does not read: %s\n", ktap_last_msg);
		good = false;
	}
	for (u64 s = 0; good && s < RF_SIZE; s += 512) {
		bool okay = !memcmp(x->got + s, ack + s, 512);

		for (long long i = st->acked; i <= st->started && !okay; i++) {
			const struct rf_op *o = &x->op[i];

			if (o->kind == 2 || s < o->off || s >= o->off + o->len)
				continue;
			if (o->kind)
				memset(want, 0, 512);
			else
				fill_pat(want, 512, 800 + i, s);
			okay = !memcmp(x->got + s, want, 512);
		}
		if (!okay) {
			printf("# sector at %llu holds neither acknowledged nor newer written data\n",
			       (unsigned long long)s);
			good = false;
		}
	}
	if (good && x->f->ops->check &&
	    (x->f->ops->check(vdimg_chain_top(c), 0, &res) || res.errors)) {
		printf("# check finds %llu errors: %s\n", (unsigned long long)res.errors,
		       ktap_last_msg);
		good = false;
	}
	vdimg_chain_close(c);
	if (good && have_qemu && x->f->qemu) {
		int rc = sh("qemu-img check -f %s '%s' >/dev/null 2>&1", x->f->qemu, path);

		/* 63: qemu cannot check the format (vpc) */
		if (rc == 2 && !strcmp(x->f->name, "vdi"))	/* count above the entries: a leak */
			rc = sh("out=$(qemu-img check -f vdi '%s' 2>&1); "
				"! echo \"$out\" | grep ERROR | grep -vq 'allocated blocks mismatch' && "
				"echo \"$out\" | tr -d , | "
				"awk '/allocated blocks mismatch/ { if ($6 + 0 > $9 + 0) exit 1 }'",
				path) ? 2 : 3;
		/*
		 * The in-use flag of a crash: qemu counts it as a corruption that -r all clears (and
		 * says ERROR of the leaked tail too, which it counts as a leak); nothing else may be
		 * wrong.
		 */
		if (rc == 2 && !strcmp(x->f->name, "parallels"))
			rc = sh("out=$(qemu-img check -f parallels '%s' 2>&1); "
				"echo \"$out\" | grep -q '^1 errors were found' && "
				"echo \"$out\" | grep -q 'ERROR image was not closed correctly' && "
				"! echo \"$out\" | grep ERROR | grep -v -e 'not closed correctly' "
				"-e 'space leaked at the end' | grep -q .", path) ? 2 : 3;
		/* a VHDX log to replay: qemu opens it only to repair; replay it on a copy */
		if (rc == 1 && !strcmp(x->f->name, "vhdx"))
			rc = sh("qemu-img check -f vhdx '%s' 2>&1 | grep -q 'log that needs to be replayed' && "
				"cp '%s' '%s.q' && { qemu-img check -r leaks -f vhdx '%s.q' >/dev/null 2>&1; "
				"rc=$?; rm -f '%s.q'; exit $rc; }", path, path, path, path, path);
		if (rc != 0 && rc != 3 && rc != 63) {
			printf("# qemu-img check exits %d:\n", rc);
			sh("qemu-img check -f %s '%s' 2>&1 | grep ERROR | sed 's/^/#   /'",
			   x->f->qemu, path);
			good = false;
		}
	}
	if (!good)
		return false;
	ret = rf_open(&c, x, path, 0);
	if (ret == -EUCLEAN && !rf_repair(x, path)) {
		if (have_qemu && x->f->qemu &&
		    sh("qemu-img check -f %s '%s' >/dev/null 2>&1; r=$?; [ $r = 0 ] || [ $r = 3 ]",
		       x->f->qemu, path)) {
			printf("# qemu-img check is not clean after check --repair\n");
			return false;
		}
		ret = rf_open(&c, x, path, 0);
	}
	if (ret) {
		printf("# read-write open failed: %s\n", ktap_last_msg);
		return false;
	}
	memset(x->got, 0x5a, 4096);
	if (vdimg_chain_pwrite(c, x->got, 4096, RF_SIZE - 4096) ||
	    vdimg_chain_pread(c, x->got, 4096, RF_SIZE - 4096) || !is_byte(x->got, 4096, 0x5a)) {
		printf("# the image does not take a write\n");
		good = false;
	}
	return !vdimg_chain_close(c) && good;
}

static void rf_run(const struct rf_format *f)
{
	struct vdimg_create_opts o = { .size = RF_SIZE };
	const char *pristine = tpath("rf-pristine"), *work = tpath("rf-work");
	struct rf_ctx x = { .f = f };
	struct vdimg_chain *c = NULL;
	struct vdimg_file *file;
	char state[256];
	u8 *pbytes, *buf = malloc(RF_SIZE);
	u64 plen;
	int fd, ret, bad, states;

	rnd_state = 88172645463325252ULL;
	for (int i = 0; i < RF_OPS; i++) {
		u64 r = rnd();

		x.op[i].kind = i % 3 == 2 ? 2 : (r >> 40) % 4 == 0;
		x.op[i].len = 512 * (1 + r % 512);
		x.op[i].off = (rnd() % ((RF_SIZE - x.op[i].len) / 512)) * 512;
	}
	for (int i = 0; i <= RF_OPS; i++)
		x.refs[i] = calloc(1, RF_SIZE);
	x.got = malloc(RF_SIZE);

	fd = open(pristine, O_RDWR | O_CREAT | O_TRUNC, 0600);
	file = vdimg_file_from_fd(fd);
	ret = f->ops->create ? f->ops->create(file, &o) : -EOPNOTSUPP;
	if (!ret && f->prep)
		ret = f->prep(fd);
	vdimg_file_free(file);
	close(fd);
	if (ret) {
		skip("%s: cannot create an image (%d)", f->name, ret);
		goto out;
	}
	pbytes = read_all(pristine, &plen);
	copy_file(pristine, work);
	vdimg_wlog_reset();
	vdimg_wlog.on = true;
	ret = rf_open(&c, &x, work, 0);
	for (int i = 0; i < RF_OPS && !ret; i++) {
		const struct rf_op *op = &x.op[i];

		memcpy(x.refs[i + 1], x.refs[i], RF_SIZE);
		vdimg_wlog_mark(VDIMG_WLOG_MARK, i);
		if (op->kind == 0) {
			fill_pat(buf, op->len, 800 + i, op->off);
			ret = vdimg_chain_pwrite(c, buf, op->len, op->off);
			memcpy(x.refs[i + 1] + op->off, buf, op->len);
		} else if (op->kind == 1) {
			ret = vdimg_chain_discard(c, op->off, op->len, VDIMG_DISCARD_ZEROES);
			memset(x.refs[i + 1] + op->off, 0, op->len);
		} else {
			ret = vdimg_chain_flush(c);
			if (!ret)
				vdimg_wlog_mark(VDIMG_WLOG_ACK, i + 1);
		}
	}
	ret = vdimg_chain_close(c) ?: ret;
	if (!ret)
		vdimg_wlog_mark(VDIMG_WLOG_ACK, RF_OPS);
	vdimg_wlog.on = false;
	if (ret) {
		ok(false, "%s: the workload runs (%d: %s)", f->name, ret, ktap_last_msg);
		goto out_log;
	}
	snprintf(state, sizeof(state), "/dev/shm/vdimg-rf.%d", (int)getpid());
	if (access("/dev/shm", W_OK))
		snprintf(state, sizeof(state), "%s", tpath("rf-state"));
	bad = reorder_replay(state, pbytes, plen, rf_check, &x, &states);
	unlink(state);
	ok(!bad, "%s: every crash state (%d, %zu log records) opens, holds what was acknowledged, checks clean and takes writes (%d bad)",
	   f->name, states, vdimg_wlog.nr, bad);
out_log:
	vdimg_wlog_reset();
	free(pbytes);
out:
	for (int i = 0; i <= RF_OPS; i++)
		free(x.refs[i]);
	free(x.got);
	free(buf);
}

int main(int argc, char **argv)
{
	ktap_start();
	have_qemu = sh("qemu-img --version >/dev/null 2>&1") == 0;
	for (size_t i = 0; i < ARRAY_SIZE(rf_formats); i++) {
		bool want = argc < 2;

		for (int a = 1; a < argc; a++)
			want |= !strcmp(argv[a], rf_formats[i].name);
		if (want)
			rf_run(&rf_formats[i]);
	}
	return ktap_finish();
}
