// SPDX-License-Identifier: GPL-2.0
/*
 * vdimgctl and the machine files of VM products: `attach --vbox` / `info --vbox` (VirtualBox),
 * `attach --vmx` / `info --vmx` (VMware Workstation / Player / Fusion).
 *
 * VirtualBox: a machine's .vbox (XML) holds <Machine>, whose <MediaRegistry><HardDisks> lists the
 * media it registered: each <HardDisk uuid= location= format=> with its differencing children
 * nested inside it. Media may instead be registered in the user's global registry
 * (VirtualBox.xml: <Global><MediaRegistry>). The machine's current storage is the
 * <StorageControllers> outside any <Snapshot> (under <Machine> in old files, under
 * <Machine><Hardware> since settings 1.17): <StorageController name=> with <AttachedDevice
 * type="HardDisk" port= device=><Image uuid=/></AttachedDevice>. The attached UUID is the newest
 * differencing image of the disk; its chain is the nesting in the registry up to the base. Each
 * medium is found where its location says (relative to the directory of the registry file), or,
 * as VirtualBox does when a machine folder moved, by its UUID: "{uuid}.ext" or the recorded file
 * name in the machine's snapshot folder and folder, accepted only when the image's own UUID is the
 * medium's. A Windows location (C:\..., backslashes) is never opened as it stands; only its last
 * component is looked for in those folders, under the same UUID check. Every link is checked
 * against the images' own headers (the child's parent UUID is the parent's UUID; VDI, VHD and
 * VHDX carry them), and the chain goes to the kernel as an explicit --chain.
 *
 * VMware: a .vmx is "key = "value"" lines; a disk is DEV.fileName with DEV.present = "TRUE", DEV
 * one of scsiN:M, sataN:M, nvmeN:M, ideN:M. The file named is the newest delta of the disk (VMware
 * points the .vmx at the current snapshot's child); its parents follow from parentFileNameHint
 * as for any VMDK.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/stat.h>
#include "vdimgctl.h"
#include "chain.h"
#include "xml.h"

/* ---- shared ---- */

/* the whole of a small text file, NUL-terminated; NULL with errno set */
static char *slurp(const char *path, size_t max, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	ssize_t r;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto fail;
	}
	if ((unsigned long long)st.st_size > max) {
		errno = EFBIG;
		goto fail;
	}
	buf = malloc(st.st_size + 1);
	if (!buf)
		goto fail;
	while (got < (size_t)st.st_size) {
		r = read(fd, buf + got, st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (!r)
				break;
			goto fail;
		}
		got += r;
	}
	buf[got] = 0;
	*len = got;
	close(fd);
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

static char *dir_of(const char *path)
{
	char *c = strdup(path), *d;

	if (!c)
		return NULL;
	d = strdup(dirname(c));
	free(c);
	return d;
}

static char *join(const char *dir, const char *name)
{
	char *p;

	if (name[0] == '/')
		return strdup(name);
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

/* a location written on Windows: a drive letter, a UNC name or a backslash anywhere */
static bool windows_path(const char *s)
{
	return strchr(s, '\\') || (isalpha((unsigned char)s[0]) && s[1] == ':');
}

/* the last component of a path written with either separator */
static const char *last_component(const char *s)
{
	const char *p = s + strlen(s);

	while (p > s && p[-1] != '/' && p[-1] != '\\')
		p--;
	return p;
}

static bool is_file(const char *p)
{
	struct stat st;

	return !stat(p, &st) && S_ISREG(st.st_mode);
}

/* ---- VirtualBox ---- */

#define VB_MAX_MEDIA	16384		/* media of the two registries together */
#define VB_MAX_DISKS	1024		/* hard disks attached to one machine */

struct vb_medium {
	char uuid[37];			/* lower case, no braces */
	const char *loc, *fmt, *type;	/* as written (in the document) */
	int parent;			/* the medium it is nested in, -1 for a base */
	int reg;			/* 0: the .vbox, 1: the global registry */
};

struct vb_disk {
	const char *controller;
	long port, device;
	char uuid[37];
};

/* one layer of a resolved chain */
struct vb_link {
	char *path;
	int medium;
	u32 format;
	u64 size;
	bool has_uuid, has_parent_uuid;
	u8 uuid[16], parent_uuid[16];
};

struct vbox {
	const char *path;
	char *dir, *snapdir, *regpath, *regdir;
	struct xml_doc doc[2];		/* the .vbox, the global registry (maybe empty) */
	int machine;
	struct vb_medium *m;
	int nm, cap_m;
	struct vb_disk *disks;
	int nd, cap_d;
};

/* "{01234567-89ab-...}" or without braces, into @out (lower case); false if it is not a UUID */
static bool vb_uuid(const char *s, char *out)
{
	size_t l, i;

	if (!s)
		return false;
	l = strlen(s);
	if (l == 38 && s[0] == '{' && s[37] == '}') {
		s++;
		l = 36;
	}
	if (l != 36)
		return false;
	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!isxdigit((unsigned char)s[i])) {
			return false;
		}
		out[i] = tolower((unsigned char)s[i]);
	}
	out[36] = 0;
	return true;
}

static int vb_find(const struct vbox *v, const char *uuid)
{
	int i;

	for (i = 0; i < v->nm; i++)
		if (!strcmp(v->m[i].uuid, uuid))
			return i;
	return -1;
}

/* the HardDisk elements under @e (a HardDisks or a HardDisk), nested as they are */
static int vb_collect(struct vbox *v, int reg, int e, int parent, const char *file)
{
	const struct xml_doc *d = &v->doc[reg];
	int c, i, ret;

	for (c = xml_child(d, e, "HardDisk", -1); c >= 0; c = xml_child(d, e, "HardDisk", c)) {
		struct vb_medium *nm;
		char u[37];

		if (!vb_uuid(xml_attr(d, c, "uuid"), u)) {
			errmsg(file, "cannot read", "a HardDisk without a valid uuid attribute");
			return -EUCLEAN;
		}
		i = vb_find(v, u);
		if (i >= 0) {
			/* in both registries: the machine's own counts; twice in one file is bad */
			if (v->m[i].reg == reg) {
				errmsg(file, "cannot read", "medium {%s} is registered twice", u);
				return -EUCLEAN;
			}
			/* its children registered here still hang under it */
			ret = vb_collect(v, reg, c, i, file);
			if (ret)
				return ret;
			continue;
		}
		if (v->nm == VB_MAX_MEDIA) {
			errmsg(file, "cannot read", "more than %d media", VB_MAX_MEDIA);
			return -E2BIG;
		}
		if (v->nm == v->cap_m) {
			/* doubled: a long registry costs no quadratic copying */
			nm = realloc(v->m, (v->cap_m ? 2 * v->cap_m : 16) * sizeof(*nm));
			if (!nm)
				return -ENOMEM;
			v->m = nm;
			v->cap_m = v->cap_m ? 2 * v->cap_m : 16;
		}
		i = v->nm++;
		memcpy(v->m[i].uuid, u, sizeof(u));
		v->m[i].loc = xml_attr(d, c, "location");
		v->m[i].fmt = xml_attr(d, c, "format");
		v->m[i].type = xml_attr(d, c, "type");
		v->m[i].parent = parent;
		v->m[i].reg = reg;
		ret = vb_collect(v, reg, c, i, file);
		if (ret)
			return ret;
	}
	return 0;
}

static int vb_load(struct xml_doc *d, const char *path)
{
	const char *why;
	unsigned int line;
	size_t len;
	char *s = slurp(path, XML_MAX_BYTES, &len);
	int ret;

	if (!s) {
		ret = -errno;
		errmsg(path, "cannot read", "%s", strerror(-ret));
		return ret;
	}
	ret = xml_parse(s, len, d, &why, &line);
	free(s);
	if (ret) {
		errmsg(path, "cannot read", "line %u: %s", line, why);
		return ret;
	}
	if (!xml_is(d, 0, "VirtualBox")) {
		errmsg(path, "cannot read", "not a VirtualBox settings file (no <VirtualBox> root)");
		xml_free(d);
		return -EUCLEAN;
	}
	return 0;
}

/* the global registry: VBOX_USER_HOME, else ~/.config/VirtualBox of the invoking (sudo) user */
static char *vb_default_registry(void)
{
	const char *home = getenv("VBOX_USER_HOME"), *sudo_uid = getenv("SUDO_UID");
	struct passwd *pw = NULL;
	char *p = NULL;

	if (home && *home) {
		if (asprintf(&p, "%s/VirtualBox.xml", home) < 0)
			return NULL;
		return p;
	}
	if (sudo_uid && *sudo_uid && getuid() == 0)
		pw = getpwuid(strtoul(sudo_uid, NULL, 10));
	if (pw)
		home = pw->pw_dir;
	else
		home = getenv("HOME");
	if (!home || !*home) {
		pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home)
		return NULL;
	if (asprintf(&p, "%s/.config/VirtualBox/VirtualBox.xml", home) < 0)
		return NULL;
	if (!is_file(p)) {
		/* VirtualBox before 4.3 */
		free(p);
		if (asprintf(&p, "%s/.VirtualBox/VirtualBox.xml", home) < 0)
			return NULL;
	}
	return p;
}

static bool vb_in_snapshot(const struct xml_doc *d, int e)
{
	for (e = d->e[e].parent; e >= 0; e = d->e[e].parent)
		if (xml_is(d, e, "Snapshot"))
			return true;
	return false;
}

static void vb_close(struct vbox *v)
{
	xml_free(&v->doc[0]);
	xml_free(&v->doc[1]);
	free(v->dir);
	free(v->snapdir);
	free(v->regpath);
	free(v->regdir);
	free(v->m);
	free(v->disks);
}

static int vb_open(struct vbox *v, const char *path, const char *registry)
{
	const struct xml_doc *d = &v->doc[0];
	const char *sf;
	int e, ret;

	memset(v, 0, sizeof(*v));
	v->path = path;
	ret = vb_load(&v->doc[0], path);
	if (ret)
		return ret;
	v->machine = xml_child(d, 0, "Machine", -1);
	if (v->machine < 0) {
		errmsg(path, "cannot read", "no <Machine> (a global VirtualBox.xml is not a machine)");
		ret = -EUCLEAN;
		goto fail;
	}
	v->dir = dir_of(path);
	sf = xml_attr(d, v->machine, "snapshotFolder");
	if (!sf || !*sf || windows_path(sf))
		sf = "Snapshots";
	v->snapdir = v->dir ? join(v->dir, sf) : NULL;
	if (!v->dir || !v->snapdir) {
		ret = -ENOMEM;
		goto fail;
	}
	e = xml_child(d, xml_child(d, v->machine, "MediaRegistry", -1), "HardDisks", -1);
	ret = vb_collect(v, 0, e, -1, path);
	if (ret)
		goto fail;

	v->regpath = registry ? strdup(registry) : vb_default_registry();
	if (v->regpath && (registry || is_file(v->regpath))) {
		const struct xml_doc *g = &v->doc[1];

		ret = vb_load(&v->doc[1], v->regpath);
		if (ret)
			goto fail;
		v->regdir = dir_of(v->regpath);
		if (!v->regdir) {
			ret = -ENOMEM;
			goto fail;
		}
		e = xml_child(g, 0, "Global", -1);
		e = xml_child(g, xml_child(g, e, "MediaRegistry", -1), "HardDisks", -1);
		ret = vb_collect(v, 1, e, -1, v->regpath);
		if (ret)
			goto fail;
	}

	/* the current state's hard disks: attachments outside every <Snapshot> */
	for (e = 0; e < d->nr; e++) {
		const char *t = xml_attr(d, e, "type"), *ctl, *s;
		struct vb_disk *nd, *k;
		int img, p = d->e[e].parent;
		char *end;

		if (!xml_is(d, e, "AttachedDevice") || !t || strcmp(t, "HardDisk") ||
		    vb_in_snapshot(d, e))
			continue;
		img = xml_child(d, e, "Image", -1);
		if (img < 0)
			continue;	/* an empty slot */
		if (v->nd == VB_MAX_DISKS) {
			errmsg(path, "cannot read", "more than %d hard disks", VB_MAX_DISKS);
			ret = -E2BIG;
			goto fail;
		}
		if (v->nd == v->cap_d) {
			nd = realloc(v->disks, (v->cap_d ? 2 * v->cap_d : 8) * sizeof(*nd));
			if (!nd) {
				ret = -ENOMEM;
				goto fail;
			}
			v->disks = nd;
			v->cap_d = v->cap_d ? 2 * v->cap_d : 8;
		}
		k = &v->disks[v->nd];
		ctl = xml_is(d, p, "StorageController") ? xml_attr(d, p, "name") : NULL;
		k->controller = ctl ? ctl : "";
		s = xml_attr(d, e, "port");
		k->port = s ? strtol(s, &end, 10) : 0;
		if (s && (!*s || *end || k->port < 0 || k->port > 65535)) {
			errmsg(path, "cannot read", "an AttachedDevice with port \"%s\"", s);
			ret = -EUCLEAN;
			goto fail;
		}
		s = xml_attr(d, e, "device");
		k->device = s ? strtol(s, &end, 10) : 0;
		if (s && (!*s || *end || k->device < 0 || k->device > 65535)) {
			errmsg(path, "cannot read", "an AttachedDevice with device \"%s\"", s);
			ret = -EUCLEAN;
			goto fail;
		}
		if (!vb_uuid(xml_attr(d, img, "uuid"), k->uuid)) {
			errmsg(path, "cannot read", "an attached Image without a valid uuid");
			ret = -EUCLEAN;
			goto fail;
		}
		v->nd++;
	}
	return 0;
fail:
	vb_close(v);
	return ret;
}

static void vb_chain_free(struct vb_link *l, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(l[i].path);
	free(l);
}

/*
 * Open @path as medium @mi would be: fill @l. 1 if it is that medium (its UUID matches, or its
 * format keeps none and @trust_name), 0 if it is another file, -errno if it cannot be read.
 */
static int vb_try(const struct vbox *v, int mi, const char *path, bool trust_name,
		  struct vb_link *l)
{
	struct vdimg_path_image o;
	char u[37];
	int ret;

	if (!is_file(path))
		return 0;
	lib_action("cannot read");
	ret = vdimg_open_path(&o, path, VDIMG_FMT_AUTO, VDIMG_OPEN_READ_ONLY | VDIMG_PATH_REGULAR);
	if (ret)
		return ret;
	memset(l, 0, sizeof(*l));
	l->medium = mi;
	l->format = o.img.fmt->id;
	l->size = o.img.size;
	l->has_uuid = o.img.flags & VDIMG_IMG_HAS_UUID;
	l->has_parent_uuid = o.img.flags & VDIMG_IMG_HAS_PARENT_UUID;
	memcpy(l->uuid, o.img.uuid, 16);
	memcpy(l->parent_uuid, o.img.parent_uuid, 16);
	vdimg_close_path(&o);
	if (l->has_uuid)
		return !strcmp(uuid_str(l->uuid, u), v->m[mi].uuid);
	return trust_name;
}

/* the file of medium @mi, into @l; -errno after a message */
static int vb_locate(const struct vbox *v, int mi, bool force, struct vb_link *l)
{
	const struct vb_medium *m = &v->m[mi];
	const char *loc = m->loc ? m->loc : "", *base = last_component(loc), *ext;
	const char *regdir = m->reg ? v->regdir : v->dir;
	const char *dirs[2] = { v->snapdir, v->dir };
	char *cand = NULL, *byname = NULL;
	int i, k, ret;
	bool win = windows_path(loc);

	/* where the registry says, unless it is a Windows path */
	if (*loc && !win) {
		cand = join(regdir, loc);
		if (!cand)
			return -ENOMEM;
		ret = vb_try(v, mi, cand, true, l);
		if (ret == 1)
			goto found;
		if (ret == 0 && is_file(cand)) {
			char u[37];

			if (!force) {
				errmsg(cand, "cannot attach",
				       "medium {%s} of the registry is this file, but the file's UUID is %s",
				       m->uuid, uuid_str(l->uuid, u));
				free(cand);
				return -ESTALE;
			}
			goto found;
		}
		if (ret < 0) {
			if (!lib_reported)
				errmsg(cand, "cannot read", "%s", strerror(-ret));
			free(cand);
			return ret;
		}
		free(cand);
	}
	/* by UUID as VirtualBox does: "{uuid}.ext", the recorded name, in the machine's folders */
	ext = strrchr(base, '.');
	if (asprintf(&byname, "{%s}%s", m->uuid, ext ? ext : ".vdi") < 0)
		return -ENOMEM;
	for (i = 0; i < 2; i++) {
		const char *names[2] = { byname, *base ? base : NULL };

		for (k = 0; k < 2; k++) {
			if (!names[k] || !strcmp(names[k], ".") || !strcmp(names[k], ".."))
				continue;
			cand = join(dirs[i], names[k]);
			if (!cand) {
				free(byname);
				return -ENOMEM;
			}
			/* a format without UUIDs: only the recorded file name, never a guess */
			ret = vb_try(v, mi, cand, k == 1 && *loc, l);
			if (ret == 1) {
				free(byname);
				goto found;
			}
			free(cand);
		}
	}
	free(byname);
	errmsg(v->path, "cannot attach", "medium {%s} (\"%s\") is not found%s", m->uuid, loc,
	       win ? " (a Windows path: only its file name was looked for in the machine's folders)" :
	       "");
	return -ENOENT;
found:
	l->path = cand;
	if (m->fmt && *m->fmt && strcasecmp(m->fmt, fmt_name(l->format)) && !force) {
		errmsg(cand, "cannot attach", "the registry says %s, the file is %s (--force to ignore)",
		       m->fmt, fmt_name(l->format));
		free(cand);
		l->path = NULL;
		return -EMEDIUMTYPE;
	}
	return 0;
}

/* the chain of medium @uuid, base first, into @out (@n layers); -errno after a message */
static int vb_chain(const struct vbox *v, const char *uuid, bool force, struct vb_link **out,
		    int *n)
{
	struct vb_link *l = NULL, t;
	char *seen = calloc(v->nm ? v->nm : 1, 1);
	int cur = vb_find(v, uuid), nr = 0, i, ret = 0;
	char u1[37];

	if (!seen)
		return -ENOMEM;
	if (cur < 0) {
		errmsg(v->path, "cannot attach", "medium {%s} is in no media registry%s", uuid,
		       v->regdir ? "" : " (the global VirtualBox.xml was not found; --vbox-registry)");
		ret = -ENOENT;
		goto out;
	}
	while (cur >= 0) {
		struct vb_link *nl;
		int next;

		if (seen[cur] || nr == VDIMG_MAX_LAYERS) {
			errmsg(v->path, "cannot attach", "the parents of medium {%s} form a loop", uuid);
			ret = -ELOOP;
			goto out;
		}
		seen[cur] = 1;
		nl = realloc(l, (nr + 1) * sizeof(*nl));
		if (!nl) {
			ret = -ENOMEM;
			goto out;
		}
		l = nl;
		ret = vb_locate(v, cur, force, &l[nr]);
		if (ret)
			goto out;
		nr++;
		next = v->m[cur].parent;
		/* a base of one registry whose image has a parent: that parent by its UUID */
		if (next < 0 && l[nr - 1].has_parent_uuid) {
			next = vb_find(v, uuid_str(l[nr - 1].parent_uuid, u1));
			if (next < 0) {
				errmsg(l[nr - 1].path, "cannot attach",
				       "its parent {%s} is in no media registry", u1);
				ret = -ENOENT;
				goto out;
			}
		}
		if (next >= 0 && nr >= 1 && l[nr - 1].has_parent_uuid && !force &&
		    strcmp(uuid_str(l[nr - 1].parent_uuid, u1), v->m[next].uuid)) {
			errmsg(l[nr - 1].path, "cannot attach",
			       "its parent is {%s}, the registry nests it in {%s} (--force to ignore)",
			       u1, v->m[next].uuid);
			ret = -ESTALE;
			goto out;
		}
		if (next < 0 && l[nr - 1].has_parent_uuid && !force) {
			errmsg(l[nr - 1].path, "cannot attach",
			       "a differencing image, but the registry gives it no parent");
			ret = -ESTALE;
			goto out;
		}
		cur = next;
	}
	for (i = 0; i < nr / 2; i++) {
		t = l[i];
		l[i] = l[nr - 1 - i];
		l[nr - 1 - i] = t;
	}
	*out = l;
	*n = nr;
	l = NULL;
	nr = 0;
out:
	if (l)
		vb_chain_free(l, nr);
	free(seen);
	return ret;
}

static void vb_disk_name(const struct vb_disk *k, char *buf, size_t len)
{
	snprintf(buf, len, "%s port %ld device %ld", k->controller, k->port, k->device);
}

/* the disk @sel picks (see struct vm_select); its index, or -1 after a message */
static int vb_select(const struct vbox *v, const struct vm_select *sel)
{
	int i, found = -1, hits = 0;
	char name[300];

	if (sel->disk) {
		char *end;
		long k = strtol(sel->disk, &end, 10);

		if (!*sel->disk || *end || k < 0 || k >= v->nd) {
			errmsg(v->path, "cannot attach", "no disk %s (the machine has %d; see info --vbox)",
			       sel->disk, v->nd);
			return -1;
		}
		return k;
	}
	for (i = 0; i < v->nd; i++) {
		if (sel->port >= 0 && v->disks[i].port != sel->port)
			continue;
		if (sel->controller && strcmp(v->disks[i].controller, sel->controller))
			continue;
		found = i;
		hits++;
	}
	if (hits == 1)
		return found;
	if (!hits) {
		errmsg(v->path, "cannot attach", "no hard disk %s",
		       sel->port >= 0 || sel->controller ? "matches" : "is attached");
		return -1;
	}
	errmsg(v->path, "cannot attach",
	       "%d hard disks match; choose one with --disk N, --port P or --controller NAME:", hits);
	for (i = 0; i < v->nd; i++) {
		vb_disk_name(&v->disks[i], name, sizeof(name));
		fprintf(stderr, "  disk %d: %s\n", i, name);
	}
	return -1;
}

int vbox_attach_chain(const char *vbox, const char *registry, const struct vm_select *sel,
		      bool force, char ***paths, int *n, bool *readonly)
{
	const char *type;
	struct vbox v;
	struct vb_link *l;
	int k, i, nl, ret;

	ret = vb_open(&v, vbox, registry);
	if (ret)
		return ret;
	k = vb_select(&v, sel);
	if (k < 0) {
		vb_close(&v);
		return -ENOENT;
	}
	ret = vb_chain(&v, v.disks[k].uuid, force, &l, &nl);
	if (ret) {
		vb_close(&v);
		return ret;
	}
	/* media VirtualBox itself never writes: attached read-only */
	type = v.m[l[nl - 1].medium].type;
	*readonly = type && (!strcasecmp(type, "Immutable") || !strcasecmp(type, "Readonly") ||
			     !strcasecmp(type, "MultiAttach"));
	vb_close(&v);
	*paths = calloc(nl, sizeof(**paths));
	if (!*paths) {
		vb_chain_free(l, nl);
		return -ENOMEM;
	}
	for (i = 0; i < nl; i++) {
		(*paths)[i] = l[i].path;
		l[i].path = NULL;
	}
	*n = nl;
	vb_chain_free(l, nl);
	return 0;
}

void vm_paths_free(char **paths, int n)
{
	int i;

	for (i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
}

static void vb_snapshots(const struct xml_doc *d, int parent, const char *current, bool json,
			 int depth)
{
	int s, first = 1;
	char u[37];

	for (s = xml_child(d, parent, "Snapshot", -1); s >= 0;
	     s = xml_child(d, parent, "Snapshot", s)) {
		const char *name = xml_attr(d, s, "name");
		bool cur = vb_uuid(xml_attr(d, s, "uuid"), u) && current && !strcmp(u, current);
		int kids = xml_child(d, s, "Snapshots", -1);

		if (!vb_uuid(xml_attr(d, s, "uuid"), u))
			u[0] = 0;
		if (json) {
			printf("%s{\"uuid\": ", first ? "" : ", ");
			json_str(stdout, u);
			printf(", \"name\": ");
			json_str(stdout, name ? name : "");
			printf(", \"current\": %s, \"children\": [", cur ? "true" : "false");
			vb_snapshots(d, kids, current, json, depth + 1);
			printf("]}");
		} else {
			printf("%*s%s {%s}%s\n", 2 + 2 * depth, "", name ? name : "", u,
			       cur ? " (current)" : "");
			vb_snapshots(d, kids, current, json, depth + 1);
		}
		first = 0;
	}
}

int info_vbox(const char *vbox, const char *registry, bool json)
{
	const struct xml_doc *d;
	struct vbox v;
	char cur[37], u[37], name[300], h[32];
	const char *mname;
	int k, i, status = EXIT_OK;

	if (vb_open(&v, vbox, registry))
		return EXIT_FAIL;
	d = &v.doc[0];
	mname = xml_attr(d, v.machine, "name");
	if (!vb_uuid(xml_attr(d, v.machine, "currentSnapshot"), cur))
		cur[0] = 0;
	if (!vb_uuid(xml_attr(d, v.machine, "uuid"), u))
		u[0] = 0;
	if (json) {
		printf("{\n  \"filename\": ");
		json_str(stdout, vbox);
		printf(",\n  \"name\": ");
		json_str(stdout, mname ? mname : "");
		printf(",\n  \"uuid\": ");
		json_str(stdout, u);
		if (v.regdir) {
			printf(",\n  \"registry\": ");
			json_str(stdout, v.regpath);
		}
		printf(",\n  \"disks\": [");
	} else {
		printf("vbox: %s\nmachine: %s", vbox, mname ? mname : "");
		if (u[0])
			printf(" {%s}", u);
		putchar('\n');
		if (v.regdir)
			printf("global registry: %s\n", v.regpath);
	}
	for (k = 0; k < v.nd; k++) {
		struct vb_link *l = NULL;
		int nl = 0, ret;

		/* an unresolved chain is reported and the listing goes on */
		ret = vb_chain(&v, v.disks[k].uuid, false, &l, &nl);
		if (ret)
			status = EXIT_FAIL;
		if (json) {
			printf("%s\n    {\"index\": %d, \"controller\": ", k ? "," : "", k);
			json_str(stdout, v.disks[k].controller);
			printf(", \"port\": %ld, \"device\": %ld, \"uuid\": \"%s\"",
			       v.disks[k].port, v.disks[k].device, v.disks[k].uuid);
			if (!ret) {
				printf(", \"filename\": ");
				json_str(stdout, l[nl - 1].path);
				printf(", \"format\": \"%s\", \"virtual-size\": %llu",
				       fmt_name(l[nl - 1].format),
				       (unsigned long long)l[nl - 1].size);
			}
			printf(", \"chain\": [");
			for (i = 0; i < nl; i++) {
				printf("%s{\"uuid\": \"%s\", \"filename\": ", i ? ", " : "",
				       v.m[l[i].medium].uuid);
				json_str(stdout, l[i].path);
				printf(", \"format\": \"%s\"}", fmt_name(l[i].format));
			}
			printf("]}");
		} else {
			vb_disk_name(&v.disks[k], name, sizeof(name));
			printf("disk %d: %s\n  medium: {%s}\n", k, name, v.disks[k].uuid);
			if (!ret) {
				printf("  image: %s\n  format: %s\n  virtual size: %s (%llu bytes)\n",
				       l[nl - 1].path, fmt_name(l[nl - 1].format),
				       human_size(l[nl - 1].size, h, sizeof(h)),
				       (unsigned long long)l[nl - 1].size);
				printf("  chain (base first):\n");
				for (i = 0; i < nl; i++)
					printf("    %d: %s (%s, {%s})\n", i, l[i].path,
					       fmt_name(l[i].format), v.m[l[i].medium].uuid);
			} else {
				printf("  chain: not resolved\n");
			}
		}
		vb_chain_free(l, nl);
	}
	if (json) {
		printf("%s],\n  \"current-snapshot\": ", v.nd ? "\n  " : "");
		json_str(stdout, cur);
		printf(",\n  \"snapshots\": [");
		vb_snapshots(d, v.machine, cur, true, 0);
		printf("]\n}\n");
	} else {
		printf("snapshots:%s\n",
		       xml_child(d, v.machine, "Snapshot", -1) < 0 ? " none" : "");
		vb_snapshots(d, v.machine, cur, false, 0);
	}
	vb_close(&v);
	return status;
}

/* ---- VMware ---- */

#define VMX_MAX_BYTES	(4U << 20)
#define VMX_MAX_DISKS	256

struct vmx_kv {
	char *key, *value;		/* keys compare case-insensitively, as VMware's do */
};

struct vmx {
	const char *path;
	char *dir, *buf;
	struct vmx_kv *kv;
	int nkv, cap_kv;
	struct vmx_disk {
		char dev[24];
		char *path;		/* the .vmdk, relative names made absolute */
	} *disks;
	int nd;
};

static const char *vmx_get(const struct vmx *x, const char *key)
{
	int i;

	for (i = 0; i < x->nkv; i++)
		if (!strcasecmp(x->kv[i].key, key))
			return x->kv[i].value;
	return NULL;
}

static int hexval(int c)
{
	return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

/* VMware writes special characters of a value as |XX (hex): decoded in place */
static void vmx_unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		int hi = *s == '|' ? hexval((unsigned char)s[1]) : -1;
		int lo = hi >= 0 ? hexval((unsigned char)s[2]) : -1;

		if (lo >= 0 && (hi << 4 | lo)) {
			*o++ = hi << 4 | lo;
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

static void vmx_close(struct vmx *x)
{
	int i;

	for (i = 0; i < x->nd; i++)
		free(x->disks[i].path);
	free(x->disks);
	free(x->kv);
	free(x->buf);
	free(x->dir);
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && strchr(" \t\r", e[-1]))
		*--e = 0;
	return s;
}

/* "scsi0:1", "sata0:0", "nvme0:0", "ide1:0": true, with @dev the device part of @key */
static bool vmx_disk_key(const char *key, char *dev, size_t len)
{
	static const char *const bus[] = { "scsi", "sata", "nvme", "ide" };
	const char *p, *dot;
	size_t i, l;

	for (i = 0; i < 4; i++)
		if (!strncasecmp(key, bus[i], strlen(bus[i])))
			break;
	if (i == 4)
		return false;
	p = key + strlen(bus[i]);
	if (!isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p++ != ':' || !isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p))
		p++;
	dot = p;
	if (strcasecmp(dot, ".fileName"))
		return false;
	l = dot - key;
	if (l >= len)
		return false;
	memcpy(dev, key, l);
	dev[l] = 0;
	return true;
}

static int vmx_open(struct vmx *x, const char *path)
{
	size_t len;
	char *line, *save = NULL, key[64];
	unsigned int lineno = 0;
	int i, ret;

	memset(x, 0, sizeof(*x));
	x->path = path;
	x->buf = slurp(path, VMX_MAX_BYTES, &len);
	if (!x->buf) {
		ret = -errno;
		errmsg(path, "cannot read", "%s", strerror(-ret));
		return ret;
	}
	if (memchr(x->buf, 0, len)) {
		errmsg(path, "cannot read", "not a text file (a NUL byte)");
		ret = -EUCLEAN;
		goto fail;
	}
	x->dir = dir_of(path);
	if (!x->dir) {
		ret = -ENOMEM;
		goto fail;
	}
	for (line = strtok_r(x->buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq, *k, *val;
		struct vmx_kv *nk;

		lineno++;
		line = trim(line);
		if (!*line || *line == '#' || !strncmp(line, ".encoding", 9))
			continue;
		eq = strchr(line, '=');
		if (!eq) {
			errmsg(path, "cannot read", "line %u: not \"key = value\"", lineno);
			ret = -EUCLEAN;
			goto fail;
		}
		*eq = 0;
		k = trim(line);
		val = trim(eq + 1);
		if (*val == '"') {
			size_t vl = strlen(val);

			if (vl < 2 || val[vl - 1] != '"') {
				errmsg(path, "cannot read", "line %u: a value without its closing quote",
				       lineno);
				ret = -EUCLEAN;
				goto fail;
			}
			val[vl - 1] = 0;
			val++;
		}
		vmx_unescape(val);
		if (x->nkv == x->cap_kv) {
			nk = realloc(x->kv, (x->cap_kv ? 2 * x->cap_kv : 64) * sizeof(*nk));
			if (!nk) {
				ret = -ENOMEM;
				goto fail;
			}
			x->kv = nk;
			x->cap_kv = x->cap_kv ? 2 * x->cap_kv : 64;
		}
		x->kv[x->nkv].key = k;
		x->kv[x->nkv].value = val;
		x->nkv++;
	}
	for (i = 0; i < x->nkv; i++) {
		struct vmx_disk *nd;
		const char *v, *name = x->kv[i].value;
		char dev[24];

		if (!vmx_disk_key(x->kv[i].key, dev, sizeof(dev)))
			continue;
		snprintf(key, sizeof(key), "%s.present", dev);
		v = vmx_get(x, key);
		if (!v || strcasecmp(v, "TRUE"))
			continue;
		snprintf(key, sizeof(key), "%s.deviceType", dev);
		v = vmx_get(x, key);
		if (v && !strcasestr(v, "disk"))
			continue;	/* a CD-ROM, a raw device */
		if (strlen(name) < 5 || strcasecmp(name + strlen(name) - 5, ".vmdk"))
			continue;
		if (x->nd == VMX_MAX_DISKS) {
			errmsg(path, "cannot read", "more than %d disks", VMX_MAX_DISKS);
			ret = -E2BIG;
			goto fail;
		}
		nd = realloc(x->disks, (x->nd + 1) * sizeof(*nd));
		if (!nd) {
			ret = -ENOMEM;
			goto fail;
		}
		x->disks = nd;
		snprintf(nd[x->nd].dev, sizeof(nd[x->nd].dev), "%s", dev);
		/* a Windows path: only its file name, beside the .vmx (a moved VM's usual case) */
		nd[x->nd].path = join(x->dir, windows_path(name) ? last_component(name) : name);
		if (!nd[x->nd].path) {
			ret = -ENOMEM;
			goto fail;
		}
		x->nd++;
	}
	return 0;
fail:
	vmx_close(x);
	return ret;
}

int vmx_attach_top(const char *vmx, const char *disk, char **top)
{
	struct vmx x;
	int i, k = -1;

	if (vmx_open(&x, vmx))
		return -EUCLEAN;
	for (i = 0; i < x.nd; i++)
		if (!disk || !strcasecmp(x.disks[i].dev, disk))
			k = k == -1 ? i : -2;
	if (k < 0) {
		if (k == -1)
			errmsg(vmx, "cannot attach", disk ? "no disk %s" : "no hard disk%s",
			       disk ? disk : "");
		else
			errmsg(vmx, "cannot attach", "%d hard disks; choose one with --disk:", x.nd);
		for (i = 0; k == -2 && i < x.nd; i++)
			fprintf(stderr, "  %s: %s\n", x.disks[i].dev, x.disks[i].path);
		vmx_close(&x);
		return -ENOENT;
	}
	*top = x.disks[k].path;
	x.disks[k].path = NULL;
	vmx_close(&x);
	return 0;
}

int info_vmx(const char *vmx, bool json)
{
	struct vmx x;
	const char *name;
	int k, i, status = EXIT_OK;

	if (vmx_open(&x, vmx))
		return EXIT_FAIL;
	name = vmx_get(&x, "displayName");
	if (json) {
		printf("{\n  \"filename\": ");
		json_str(stdout, vmx);
		printf(",\n  \"name\": ");
		json_str(stdout, name ? name : "");
		printf(",\n  \"disks\": [");
	} else {
		printf("vmx: %s\nmachine: %s\n", vmx, name ? name : "");
	}
	for (k = 0; k < x.nd; k++) {
		char **paths = NULL;
		u32 *fmts = NULL;
		int n = 0;
		bool ok = !chain_of(x.disks[k].path, VDIMG_FMT_AUTO, "cannot read", &paths, &fmts,
				    &n);

		if (!ok)
			status = EXIT_FAIL;
		if (json) {
			printf("%s\n    {\"device\": ", k ? "," : "");
			json_str(stdout, x.disks[k].dev);
			printf(", \"filename\": ");
			json_str(stdout, x.disks[k].path);
			printf(", \"chain\": [");
			for (i = 0; i < n; i++) {
				printf("%s{\"filename\": ", i ? ", " : "");
				json_str(stdout, paths[i]);
				printf(", \"format\": \"%s\"}", fmt_name(fmts[i]));
			}
			printf("]}");
		} else {
			printf("disk %s: %s\n", x.disks[k].dev, x.disks[k].path);
			if (ok) {
				printf("  chain (base first):\n");
				for (i = 0; i < n; i++)
					printf("    %d: %s (%s)\n", i, paths[i], fmt_name(fmts[i]));
			} else {
				printf("  chain: not resolved\n");
			}
		}
		if (ok)
			vdimg_chain_resolve_free(paths, fmts, n);
	}
	if (json)
		printf("%s]\n}\n", x.nd ? "\n  " : "");
	vmx_close(&x);
	return status;
}

/* ---- Hyper-V: a folder of .vhdx/.avhdx (and .vhd/.avhd) images ---- */

#define FOLDER_MAX_IMAGES	4096

struct hv_image {
	char *path;
	bool has_uuid, has_parent_uuid, is_parent;
	u8 uuid[16], parent_uuid[16];
};

static bool hv_name(const char *n)
{
	static const char *const ext[] = { ".vhdx", ".avhdx", ".vhd", ".avhd" };
	size_t l = strlen(n), i;

	for (i = 0; i < 4; i++)
		if (l > strlen(ext[i]) && !strcasecmp(n + l - strlen(ext[i]), ext[i]))
			return true;
	return false;
}

static int hv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct hv_image *)a)->path, ((const struct hv_image *)b)->path);
}

int info_folder(const char *dir, bool json)
{
	struct hv_image *im = NULL;
	struct dirent *de;
	int n = 0, i, k, chains = 0, status = EXIT_OK;
	DIR *d = opendir(dir);

	if (!d) {
		errmsg(dir, "cannot read", "%s", strerror(errno));
		return EXIT_FAIL;
	}
	while ((de = readdir(d))) {
		struct vdimg_path_image o;
		struct hv_image *ni;
		char *p;

		if (!hv_name(de->d_name))
			continue;
		if (n == FOLDER_MAX_IMAGES) {
			errmsg(dir, "cannot read", "more than %d images", FOLDER_MAX_IMAGES);
			status = EXIT_FAIL;
			break;
		}
		p = join(dir, de->d_name);
		if (!p)
			break;
		lib_action("cannot read");
		if (vdimg_open_path(&o, p, VDIMG_FMT_AUTO,
				    VDIMG_OPEN_READ_ONLY | VDIMG_PATH_REGULAR | VDIMG_PATH_BUILT_IN)) {
			if (!lib_reported)
				errmsg(p, "cannot read", "not an image this build reads");
			status = EXIT_FAIL;
			free(p);
			continue;
		}
		ni = realloc(im, (n + 1) * sizeof(*ni));
		if (!ni) {
			vdimg_close_path(&o);
			free(p);
			break;
		}
		im = ni;
		memset(&im[n], 0, sizeof(im[n]));
		im[n].path = p;
		im[n].has_uuid = o.img.flags & VDIMG_IMG_HAS_UUID;
		im[n].has_parent_uuid = o.img.flags & VDIMG_IMG_HAS_PARENT_UUID;
		memcpy(im[n].uuid, o.img.uuid, 16);
		memcpy(im[n].parent_uuid, o.img.parent_uuid, 16);
		vdimg_close_path(&o);
		n++;
	}
	closedir(d);
	if (!n && status == EXIT_OK) {
		free(im);
		return -1;	/* no image in it: not a folder of images */
	}
	qsort(im, n, sizeof(*im), hv_cmp);
	/* an image another one names as its parent is not the newest of its chain */
	for (i = 0; i < n; i++)
		for (k = 0; k < n; k++)
			if (k != i && im[k].has_parent_uuid && im[i].has_uuid &&
			    !memcmp(im[k].parent_uuid, im[i].uuid, 16))
				im[i].is_parent = true;
	if (json) {
		printf("{\n  \"folder\": ");
		json_str(stdout, dir);
		printf(",\n  \"chains\": [");
	} else {
		printf("folder: %s\n", dir);
	}
	for (i = 0; i < n; i++) {
		char **paths = NULL;
		u32 *fmts = NULL;
		int nl = 0, j;
		bool ok;

		if (im[i].is_parent)
			continue;
		ok = !chain_of(im[i].path, VDIMG_FMT_AUTO, "cannot read", &paths, &fmts, &nl);
		if (!ok)
			status = EXIT_FAIL;
		if (json) {
			printf("%s\n    {\"top\": ", chains ? "," : "");
			json_str(stdout, im[i].path);
			printf(", \"chain\": [");
			for (j = 0; j < nl; j++) {
				printf("%s{\"filename\": ", j ? ", " : "");
				json_str(stdout, paths[j]);
				printf(", \"format\": \"%s\"}", fmt_name(fmts[j]));
			}
			printf("]}");
		} else {
			printf("chain %d: attach %s (the newest)\n", chains, im[i].path);
			if (!ok)
				printf("  not resolved\n");
			for (j = 0; j < nl; j++)
				printf("  %d: %s (%s)\n", j, paths[j], fmt_name(fmts[j]));
		}
		if (ok)
			vdimg_chain_resolve_free(paths, fmts, nl);
		chains++;
	}
	if (json)
		printf("%s]\n}\n", chains ? "\n  " : "");
	for (i = 0; i < n; i++)
		free(im[i].path);
	free(im);
	return status;
}
