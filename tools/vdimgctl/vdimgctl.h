/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vdimgctl's private header: the command entry points and the helpers they share (messages in the
 * "vdimgctl: <object>: <what failed>: <reason>" shape, size parsing, JSON string output, the paths
 * of the control device and sysfs, which tests may redirect through the environment).
 */
#ifndef _VDIMGCTL_H
#define _VDIMGCTL_H

#include <stdbool.h>
#include <stdio.h>
#include <vdimg/backend.h>
#include "vdimg-user.h"

/* VDIMGCTL_VERSION: set by the Makefile from debian/changelog */
#ifndef VDIMGCTL_VERSION
#error "VDIMGCTL_VERSION is not defined (the Makefile passes it, from debian/changelog)"
#endif

/* exit statuses, as losetup: 0 success, 1 any failure */
#define EXIT_OK		0
#define EXIT_FAIL	1

int cmd_attach(int argc, char **argv);
int cmd_detach(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_measure(int argc, char **argv);

/* "vdimgctl: <object>: <what>: <reason>" on stderr; @object or @reason may be NULL */
void errmsg(const char *object, const char *what, const char *reason_fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* usage error: message, hint at --help, returns EXIT_FAIL */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Library messages: while an operation runs, errors the backends report come out as
 * "vdimgctl: <image>: <action>: <text>". lib_action() sets the action and clears lib_reported;
 * lib_reported says whether an error was printed since, so the caller does not print a second one.
 */
void lib_action(const char *action);
extern bool lib_reported;
void lib_msg_init(void);

/* parse "1048576", "64K", "10G", "1.5T" is refused (integers only), "2MiB"; 0 or -EINVAL/-ERANGE */
int parse_size(const char *s, unsigned long long *out);
/* "1.5 GiB" style, into @buf */
const char *human_size(unsigned long long bytes, char *buf, size_t len);
/* print @s as a JSON string literal */
void json_str(FILE *f, const char *s);
/* 8-4-4-4-12 hex of 16 bytes, into @buf (37 bytes) */
const char *uuid_str(const u8 *uuid, char *buf);

/* redirectable paths (env VDIMG_CONTROL, VDIMG_SYSFS, VDIMG_MODPROBE, VDIMG_DEV) */
const char *control_path(void);
const char *sysfs_block_path(void);
const char *modprobe_path(void);
const char *dev_dir(void);

/* image.c: -t FMT as a format id; 0, or -EINVAL after a usage message for @cmd */
int parse_format(const char *cmd, const char *name, u32 *id);
/* image.c: resolve @path's chain, base first (malloc'd, vdimg_chain_resolve_free()); 0 or -errno
 * after a message "<path>: <action>: ..." */
int chain_of(const char *path, u32 format, const char *action, char ***paths, u32 **fmts, int *n);

/* name of a format id for messages ("vhd"), "format <n>" if unknown */
const char *fmt_name(u32 id);

/* dev.c: "/dev/vdimg3", "vdimg3" or "3" -> 3; -1 if it is none of these */
long parse_dev(const char *s);
/* the control device, the module loaded first when @load; -errno after a message unless @quiet */
int open_control(bool load, bool quiet);
/* dev.c: /sys/block/vdimgN/vdimg/@attr without trailing newlines, or NULL (errno set) */
char *sysfs_attr(long idx, const char *attr);

/*
 * image.c: open the regular file @path as an image with vdimg_open_path() (@format
 * VDIMG_FMT_AUTO probes; an unrecognised file is raw). @flags: VDIMG_OPEN_*. Prints
 * "vdimgctl: PATH: <action>: <reason>" on failure.
 */
int offline_open(struct vdimg_path_image *o, const char *path, u32 format, unsigned int flags,
		 const char *action);
void offline_close(struct vdimg_path_image *o);
/*
 * image.c: create @path (which must not exist, or be a block device not in use: the image is
 * written at its start) as a new image, synced; 0, or -errno after a message, with the file
 * removed again
 */
int create_file(const char *path, const struct vdimg_format *fmt,
		const struct vdimg_create_opts *co);
/* image.c: remove what create_file() made at @path after a later failure (never a device) */
void remove_created(const char *path);
/* image.c: take block_size/cluster_size/sector_size out of -o for @cmd; the rest for the backend */
int create_parse_options(const char *cmd, const char *in, struct vdimg_create_opts *co,
			 char **rest);

struct vdimg_chain;

/* map.c: one range of an image's map, as `qemu-img map` describes it */
struct map_entry {
	u64 start, length, offset;
	int depth;			/* 0: the top layer */
	int layer;			/* the layer holding data (for the file name), -1 for none */
	const struct vdimg_file *file;	/* with an offset: the file it is in */
	bool present, zero, data, has_offset;
};

/* map.c: what is at @off (at most @len bytes) of chain @c, looking down from the top */
int map_range(struct vdimg_chain *c, u64 off, u64 len, struct map_entry *e);

/* image.c: the "(NN.00/100%) what" progress line of long operations on a terminal */
void progress_print(const char *what, u64 done, u64 total);

/*
 * vmconf.c: VM machine files. Which disk of a machine: @disk (VirtualBox: its number in info
 * --vbox; VMware: "scsi0:0"), else the one on @port (-1: any) of @controller (NULL: any).
 */
struct vm_select {
	const char *disk;
	long port;
	const char *controller;
};

/*
 * the chain of the chosen disk of VirtualBox machine @vbox, base first; *@readonly when its top
 * medium is one VirtualBox never writes (Immutable, Readonly, MultiAttach); -errno after a message
 */
int vbox_attach_chain(const char *vbox, const char *registry, const struct vm_select *sel,
		      bool force, char ***paths, int *n, bool *readonly);
void vm_paths_free(char **paths, int n);
int info_vbox(const char *vbox, const char *registry, bool json);
/* the newest .vmdk of disk @disk (NULL: the only one) of VMware machine @vmx (malloc'd) */
int vmx_attach_top(const char *vmx, const char *disk, char **top);
int info_vmx(const char *vmx, bool json);
/*
 * info on a folder (Hyper-V's "Virtual Hard Disks"): each chain of its VHD(X)/AVHD(X) images; an
 * exit status, or -1 (nothing printed) when the folder holds no such image
 */
int info_folder(const char *dir, bool json);

#endif /* _VDIMGCTL_H */
