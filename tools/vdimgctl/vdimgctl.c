// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl: attach virtual-disk images as /dev/vdimgN block devices, and inspect, create and check
 * images offline. Shaped like util-linux losetup (attach/detach/list) plus qemu-img style offline
 * verbs (info/create/check). This file holds the command dispatch, --help/--version and the helpers
 * every command shares; the commands live in dev.c (attach, detach, list) and image.c (info,
 * create, check). Errors: "vdimgctl: <object>: <what failed>: <reason>" on stderr, exit status 1.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <ctype.h>
#include "vdimgctl.h"

static const char *lib_cur_action = "error";
bool lib_reported;

void errmsg(const char *object, const char *what, const char *reason_fmt, ...)
{
	va_list ap;

	fputs("vdimgctl: ", stderr);
	if (object)
		fprintf(stderr, "%s: ", object);
	if (what)
		fprintf(stderr, "%s%s", what, reason_fmt ? ": " : "");
	if (reason_fmt) {
		va_start(ap, reason_fmt);
		vfprintf(stderr, reason_fmt, ap);
		va_end(ap);
	}
	fputc('\n', stderr);
}

int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("vdimgctl: ", stderr);
	if (cmd)
		fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'vdimgctl --help' for more information.\n");
	return EXIT_FAIL;
}

static void lib_msg_hook(int level, const char *name, const char *text)
{
	if (level <= VDIMG_LOG_ERR) {
		errmsg(name, lib_cur_action, "%s", text);
		lib_reported = true;
	} else {
		errmsg(name, "warning", "%s", text);
	}
}

void lib_action(const char *action)
{
	lib_cur_action = action;
	lib_reported = false;
}

void lib_msg_init(void)
{
	vdimg_set_msg_hook(lib_msg_hook);
	vdimg_msg_level = VDIMG_LOG_WARN;
}

int parse_size(const char *s, unsigned long long *out)
{
	static const char units[] = "KMGTPE";
	unsigned long long v, mul = 1;
	const char *u;
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	if (*end) {
		u = strchr(units, toupper((unsigned char)*end));
		if (!u)
			return -EINVAL;
		mul = 1ULL << (10 * (u - units + 1));
		end++;
		/* accept K, KB, KiB (all binary, as losetup and qemu-img do) */
		if (!strcmp(end, "iB") || !strcmp(end, "B") || !strcmp(end, "ib"))
			end += strlen(end);
		if (*end)
			return -EINVAL;
	}
	if (__builtin_mul_overflow(v, mul, out))
		return -ERANGE;
	return 0;
}

const char *human_size(unsigned long long bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned int i = 0;
	double v = bytes;

	while (v >= 1024 && i < 6) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", bytes);
	else if (v == (unsigned long long)v)
		snprintf(buf, len, "%llu %s", (unsigned long long)v, units[i]);
	else
		snprintf(buf, len, "%.3g %s", v, units[i]);
	return buf;
}

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = *s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

const char *uuid_str(const u8 *u, char *buf)
{
	snprintf(buf, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		 u[13], u[14], u[15]);
	return buf;
}

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}

const char *control_path(void)
{
	return env_or("VDIMG_CONTROL", "/dev/" VDIMG_CONTROL_NAME);
}

const char *sysfs_block_path(void)
{
	return env_or("VDIMG_SYSFS", "/sys/block");
}

const char *modprobe_path(void)
{
	return env_or("VDIMG_MODPROBE", "/sbin/modprobe");
}

const char *dev_dir(void)
{
	return env_or("VDIMG_DEV", "/dev");
}

const char *fmt_name(u32 id)
{
	static char buf[32];
	const char *n = vdimg_format_name(id);

	if (n)
		return n;
	snprintf(buf, sizeof(buf), "format %u", id);
	return buf;
}

static void usage(void)
{
	fputs("Usage:\n"
	      " vdimgctl attach [options] IMAGE         attach an image as /dev/vdimgN\n"
	      " vdimgctl attach [options] DEV IMAGE     ... at a chosen device\n"
	      " vdimgctl detach DEV...                  detach devices\n"
	      " vdimgctl detach -a                      detach every vdimg device\n"
	      " vdimgctl list [options] [DEV]           list attached devices\n"
	      " vdimgctl info [--json] IMAGE            show what an image file is\n"
	      " vdimgctl create -t FMT -s SIZE FILE     create an image\n"
	      " vdimgctl check [--repair] [--json] IMAGE  check an image's metadata\n"
	      " vdimgctl compact IMAGE                   give unused space back (offline)\n"
	      " vdimgctl info --chain [--json] IMAGE    show every layer of an image's chain\n"
	      " vdimgctl commit [-b BASE] [-d] IMAGE    merge IMAGE into its parent (offline)\n"
	      " vdimgctl rebase [-u] -b NEWPARENT IMAGE give IMAGE another parent (offline)\n"
	      " vdimgctl snapshot [-t FMT] DEV FILE     live snapshot: FILE becomes the new top\n"
	      " vdimgctl map [--json] IMAGE             where the data of IMAGE's chain is\n"
	      " vdimgctl convert [-O FMT] SRC DST       copy SRC's chain into a new image\n"
	      " vdimgctl resize [--shrink] IMAGE [+-]SIZE change an image's virtual size (offline)\n"
	      " vdimgctl measure [-O FMT] (--size N | SRC) how large a new image would be\n"
	      " vdimgctl attach [options] --vbox VM.vbox  a VirtualBox VM's disk as it is now\n"
	      " vdimgctl attach [options] --vmx VM.vmx    a VMware VM's disk\n"
	      " vdimgctl info [--json] --vbox VM.vbox|--vmx VM.vmx|FOLDER  a VM's disks and chains\n"
	      "\n"
	      "Attach virtual-disk image files (VHD, VHDX, VDI, QCOW2, QED, ...) as block devices.\n"
	      "\n"
	      "Attach options:\n"
	      " -f, --find                 use the first free device (the default)\n"
	      "     --show                 print the device name after attaching\n"
	      " -r, --read-only            attach read-only\n"
	      "     --rw                   attach an .iso image read-write\n"
	      " -P, --partscan             scan the partition table (vdimgNpM)\n"
	      " -t, --format FMT           image format (default: probe; 'raw' for a raw file)\n"
	      " -b, --sector-size N        logical sector size: 512, 2048 or 4096\n"
	      "     --direct-io[=on|off]   require or refuse direct I/O on the image file\n"
	      "     --autoclear            detach when the last opener closes the device\n"
	      "     --chain A,B,...        attach a chain of images, base first (IMAGE is the top)\n"
	      "     --force                do not refuse mismatched parent links in a chain, nor\n"
	      "                            image checksum mismatches (DMG)\n"
	      "     --overlay[=FILE]       writes go to a new overlay, IMAGE stays untouched\n"
	      "     --overlay-format FMT   format of the overlay (default qcow2)\n"
	      "     --snapshot NAME|ID     attach an internal snapshot of IMAGE (read-only)\n"
	      "     --track N              attach data track N of a CUE sheet (default: the first)\n"
	      "     --vbox VM.vbox         a VirtualBox VM's disk (base to current snapshot)\n"
	      "     --vbox-registry FILE   the global VirtualBox.xml (default: the user's)\n"
	      "     --vmx VM.vmx           a VMware VM's disk (its newest .vmdk)\n"
	      "     --disk N|DEV           which VM disk; --port P, --controller NAME (VirtualBox)\n"
	      "\n"
	      "List options:\n"
	      " -l, --list                 long listing (all default columns; accepted for losetup users)\n"
	      " -O, --output COLS          columns to print (comma-separated, see below)\n"
	      "     --output-all           print every column\n"
	      " -J, --json                 JSON output\n"
	      " -n, --noheadings           no header line\n"
	      "     --raw                  raw output\n"
	      "     --bytes                sizes in bytes\n"
	      "     --chain                every layer under its device, as a tree\n"
	      "\n"
	      "Create options:\n"
	      " -t, --format FMT           format of the new image (required)\n"
	      " -s, --size SIZE            virtual size, with an optional K, M, G, T suffix (binary)\n"
	      "     --variant V            format variant (fixed, dynamic, ...)\n"
	      "     --parent FILE          create a differencing image over FILE\n"
	      " -o, --options OPTS         format options, key=value,...\n"
	      "\n"
	      "Columns:\n"
	      "       NAME  device name           FORMAT  format of the top layer\n"
	      "      VSIZE  virtual size              RO  read-only\n"
	      "        DIO  direct I/O in use   PARTSCAN  partition scan\n"
	      "  AUTOCLEAR  detach on last close LOG-SEC  logical sector size\n"
	      "      DEPTH  layers in the chain    CHAIN  image files, base first\n"
	      "  BACK-FILE  the top image file\n"
	      "\n"
	      " -h, --help                 display this help\n"
	      " -V, --version              display version\n"
	      "\n"
	      "For more details see vdimgctl(8).\n", stdout);
}

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
};

static const struct command commands[] = {
	{ "attach", cmd_attach },
	{ "detach", cmd_detach },
	{ "list", cmd_list },
	{ "info", cmd_info },
	{ "create", cmd_create },
	{ "check", cmd_check },
	{ "compact", cmd_compact },
	{ "commit", cmd_commit },
	{ "rebase", cmd_rebase },
	{ "snapshot", cmd_snapshot },
	{ "map", cmd_map },
	{ "convert", cmd_convert },
	{ "resize", cmd_resize },
	{ "measure", cmd_measure },
};

int main(int argc, char **argv)
{
	size_t i;

	lib_msg_init();
	if (argc < 2)
		return usage_error(NULL, "no command given");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage();
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("vdimgctl %s\n", VDIMGCTL_VERSION);
		return EXIT_OK;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	return usage_error(NULL, "unknown command '%s'", argv[1]);
}
