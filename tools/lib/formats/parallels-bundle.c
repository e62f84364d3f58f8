// SPDX-License-Identifier: GPL-2.0
/*
 * Userspace only: Parallels bundles. A bundle is a directory (DIR.hdd, under any name) holding
 * DiskDescriptor.xml and the image files it names: <StorageData> lists storages (consecutive sector
 * ranges <Start>..<End> of the disk, several for a split disk), each with one <Image> per snapshot
 * (<GUID>, <Type>, <File>); <Snapshots> links the snapshots (<Shot><GUID>, <ParentGUID>) and may
 * name the current one (<TopGUID>, else the predefined top GUID). Per qemu's docs/interop/prl-xml.txt.
 *
 * The descriptor is hostile text: a small parser of its own (no library, no DTD, no entities beyond
 * the five predefined ones and character references, bounded size, depth and node count) refuses
 * anything it does not understand by name. The chain it describes becomes vdimg layers: one per
 * snapshot, base first; a split storage makes each layer one image file (the part of the first
 * storage) with extent files (the parts of the others, VDIMG_CAP_EXTENT_FILES). The kernel never
 * parses the descriptor: it derives each part's range from the parts' own headers (they follow each
 * other), and the library checks them against the descriptor's ranges when it opens an image. A
 * "Plain" root (a raw file, unsplit) becomes a raw base layer.
 */
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>
#include <libgen.h>
#include <sys/stat.h>
#include "vdimg-user.h"
#include "backends/parallels.h"
#include "parallels-bundle.h"

#define XML_MAX_NODES	20000
#define XML_MAX_DEPTH	16
#define XML_MAX_TEXT	4096
#define XML_NAME_MAX	64

static const char top_guid[] = "{5fbaabe3-6958-40ff-92a7-860e329aab41}";
static const char null_guid[] = "{00000000-0000-0000-0000-000000000000}";

struct xnode {
	char name[XML_NAME_MAX];
	char *text;			/* character data directly inside, trimmed (malloc'd) */
	char version[16];		/* the Version attribute, if any */
	int parent, child, next;	/* indexes, -1 for none */
};

struct xml {
	const char *s;
	size_t len, pos;
	struct xnode *n;		/* grown as elements come (the children move it) */
	int nr, cap;
	const char *why;		/* what was refused */
	int err;
};

static void xml_fail(struct xml *x, int err, const char *why)
{
	if (!x->err) {
		x->err = err;
		x->why = why;
	}
}

static bool xml_at(struct xml *x, const char *lit)
{
	size_t n = strlen(lit);

	return x->len - x->pos >= n && !memcmp(x->s + x->pos, lit, n);
}

static void xml_skip_space(struct xml *x)
{
	while (x->pos < x->len && strchr(" \t\r\n", x->s[x->pos]))
		x->pos++;
}

/* skip past @end; false if it never comes */
static bool xml_skip_to(struct xml *x, const char *end)
{
	const char *p = memmem(x->s + x->pos, x->len - x->pos, end, strlen(end));

	if (!p)
		return false;
	x->pos = p - x->s + strlen(end);
	return true;
}

/* comments, processing instructions and refused declarations between markup */
static bool xml_misc(struct xml *x)
{
	if (xml_at(x, "<!--")) {
		if (!xml_skip_to(x, "-->"))
			xml_fail(x, -EUCLEAN, "an unterminated comment");
		return true;
	}
	if (xml_at(x, "<?")) {
		if (!xml_skip_to(x, "?>"))
			xml_fail(x, -EUCLEAN, "an unterminated processing instruction");
		return true;
	}
	if (xml_at(x, "<!")) {
		/* DOCTYPE, ENTITY, CDATA: never expanded, refused */
		xml_fail(x, -EOPNOTSUPP, "a DTD, entity declaration or CDATA section");
		return true;
	}
	return false;
}

static int xml_name(struct xml *x, char *out)
{
	size_t n = 0;

	while (x->pos < x->len) {
		char c = x->s[x->pos];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.' || c == ':'))
			break;
		if (n + 1 >= XML_NAME_MAX)
			return -1;
		out[n++] = c;
		x->pos++;
	}
	out[n] = 0;
	return n ? 0 : -1;
}

/* append character data [from, to) to @t (length *@tl), decoding references */
static void xml_text(struct xml *x, const char *from, const char *to, char *t, size_t *tl)
{
	static const struct { const char *ref; char c; } ents[] = {
		{ "&lt;", '<' }, { "&gt;", '>' }, { "&amp;", '&' }, { "&quot;", '"' },
		{ "&apos;", '\'' },
	};

	while (from < to && !x->err) {
		char c = *from;

		if (c == '&') {
			const char *semi = memchr(from, ';', to - from);
			size_t i, n = semi ? (size_t)(semi - from + 1) : 0;
			unsigned long v = 0;

			for (i = 0; n && i < ARRAY_SIZE(ents); i++)
				if (n == strlen(ents[i].ref) && !memcmp(from, ents[i].ref, n))
					break;
			if (n && i < ARRAY_SIZE(ents)) {
				c = ents[i].c;
			} else if (n > 3 && from[1] == '#') {
				char *end;

				v = from[2] == 'x' ? strtoul(from + 3, &end, 16) :
						     strtoul(from + 2, &end, 10);
				if (end != semi || !v || v > 126) {
					xml_fail(x, -EOPNOTSUPP, "a character reference outside ASCII");
					return;
				}
				c = v;
			} else {
				xml_fail(x, -EOPNOTSUPP, "an entity reference (only the predefined ones are read)");
				return;
			}
			from += n;
		} else {
			if (!c) {
				xml_fail(x, -EUCLEAN, "a NUL byte");
				return;
			}
			from++;
		}
		if (*tl + 1 >= XML_MAX_TEXT) {
			xml_fail(x, -EOPNOTSUPP, "an element text longer than 4 KiB");
			return;
		}
		t[(*tl)++] = c;
	}
}

static char *xml_trim(char *t, size_t tl)
{
	size_t a = 0;

	while (tl && strchr(" \t\r\n", t[tl - 1]))
		tl--;
	while (a < tl && strchr(" \t\r\n", t[a]))
		a++;
	t[tl] = 0;
	return strdup(t + a);
}

/* one element at x->pos ('<'), with its children; returns its index or -1 */
static int xml_element(struct xml *x, int parent, int depth)
{
	char t[XML_MAX_TEXT], aname[XML_NAME_MAX], end[XML_NAME_MAX];
	size_t tl = 0;
	int me, last = -1;
	struct xnode *e;

	if (depth > XML_MAX_DEPTH) {
		xml_fail(x, -EOPNOTSUPP, "elements nested more than 16 deep");
		return -1;
	}
	if (x->nr >= XML_MAX_NODES) {
		xml_fail(x, -EOPNOTSUPP, "more than 20000 elements");
		return -1;
	}
	if (x->nr == x->cap) {
		int cap = x->cap ? min(2 * x->cap, XML_MAX_NODES) : 64;
		struct xnode *n = realloc(x->n, cap * sizeof(*n));

		if (!n) {
			xml_fail(x, -ENOMEM, "memory");
			return -1;
		}
		x->n = n;
		x->cap = cap;
	}
	me = x->nr++;
	e = &x->n[me];
	memset(e, 0, sizeof(*e));
	e->parent = parent;
	e->child = e->next = -1;
	x->pos++;
	if (xml_name(x, e->name)) {
		xml_fail(x, -EUCLEAN, "a malformed element name");
		return -1;
	}
	/* attributes: name="value" or name='value'; only Version is kept */
	for (;;) {
		const char *q;
		char quote;

		xml_skip_space(x);
		if (x->pos >= x->len) {
			xml_fail(x, -EUCLEAN, "an unterminated tag");
			return -1;
		}
		if (x->s[x->pos] == '>' || xml_at(x, "/>"))
			break;
		if (xml_name(x, aname) || x->pos + 1 >= x->len || x->s[x->pos] != '=' ||
		    (x->s[x->pos + 1] != '"' && x->s[x->pos + 1] != '\'')) {
			xml_fail(x, -EUCLEAN, "a malformed attribute");
			return -1;
		}
		quote = x->s[x->pos + 1];
		x->pos += 2;
		q = memchr(x->s + x->pos, quote, x->len - x->pos);
		if (!q || memchr(x->s + x->pos, '<', q - (x->s + x->pos))) {
			xml_fail(x, -EUCLEAN, "an unterminated attribute value");
			return -1;
		}
		if (!strcmp(aname, "Version"))
			snprintf(x->n[me].version, sizeof(x->n[me].version), "%.*s",
				 (int)(q - (x->s + x->pos)), x->s + x->pos);
		x->pos = q - x->s + 1;
	}
	if (xml_at(x, "/>")) {
		x->pos += 2;
		x->n[me].text = strdup("");
		return me;
	}
	x->pos++;
	for (;;) {
		const char *lt = memchr(x->s + x->pos, '<', x->len - x->pos);

		if (!lt) {
			xml_fail(x, -EUCLEAN, "an element that is never closed");
			return -1;
		}
		xml_text(x, x->s + x->pos, lt, t, &tl);
		x->pos = lt - x->s;
		if (x->err)
			return -1;
		if (xml_at(x, "</")) {
			x->pos += 2;
			if (xml_name(x, end) || strcmp(end, x->n[me].name)) {
				xml_fail(x, -EUCLEAN, "a closing tag that does not match");
				return -1;
			}
			xml_skip_space(x);
			if (x->pos >= x->len || x->s[x->pos] != '>') {
				xml_fail(x, -EUCLEAN, "a malformed closing tag");
				return -1;
			}
			x->pos++;
			break;
		}
		if (xml_misc(x)) {
			if (x->err)
				return -1;
			continue;
		}
		{
			int c = xml_element(x, me, depth + 1);

			if (c < 0)
				return -1;
			if (last < 0)
				x->n[me].child = c;
			else
				x->n[last].next = c;
			last = c;
		}
	}
	x->n[me].text = xml_trim(t, tl);
	if (!x->n[me].text)
		xml_fail(x, -ENOMEM, "memory");
	return me;
}

static int xml_parse(struct xml *x)
{
	int root = -1;

	if (x->len >= 3 && !memcmp(x->s, "\xef\xbb\xbf", 3))
		x->pos = 3;	/* a UTF-8 byte order mark */
	for (;;) {
		xml_skip_space(x);
		if (x->pos >= x->len || x->err)
			break;
		if (xml_misc(x))
			continue;
		if (x->s[x->pos] != '<' || root >= 0) {
			xml_fail(x, -EUCLEAN, "text or a second element outside the root element");
			break;
		}
		root = xml_element(x, -1, 0);
	}
	if (!x->err && root < 0)
		xml_fail(x, -EUCLEAN, "no root element");
	return x->err ? x->err : root;
}

static void xml_free(struct xml *x)
{
	for (int i = 0; x->n && i < x->nr; i++)
		free(x->n[i].text);
	free(x->n);
}

/* the first child of @n named @name after @after (-1: from the first), or -1 */
static int xml_child(const struct xml *x, int n, const char *name, int after)
{
	int c = after < 0 ? x->n[n].child : x->n[after].next;

	for (; c >= 0; c = x->n[c].next)
		if (!strcmp(x->n[c].name, name))
			return c;
	return -1;
}

static const char *xml_child_text(const struct xml *x, int n, const char *name)
{
	int c = xml_child(x, n, name, -1);

	return c < 0 ? NULL : x->n[c].text;
}

/* ---- the descriptor ---- */

static bool guid_ok(const char *g)
{
	static const char shape[] = "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}";

	if (!g || strlen(g) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'x' ? !strchr("0123456789abcdefABCDEF", g[i]) : g[i] != shape[i])
			return false;
	return true;
}

static bool number(const char *s, u64 *v)
{
	char *end;

	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return !errno && !*end;
}

void prl_bundle_free(struct prl_bundle_chain *c)
{
	for (u32 i = 0; c->files && i < c->nr * c->nr_parts; i++)
		free(c->files[i]);
	free(c->files);
	free(c->part_sectors);
	memset(c, 0, sizeof(*c));
}

static char *read_text(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf = NULL;
	ssize_t n;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > PRL_XML_MAX) {
		errno = st.st_size > PRL_XML_MAX ? EFBIG : EINVAL;
		goto out;
	}
	buf = malloc(st.st_size + 1);
	if (!buf)
		goto out;
	n = pread(fd, buf, st.st_size, 0);
	if (n != st.st_size) {
		free(buf);
		buf = NULL;
		errno = EIO;
		goto out;
	}
	buf[n] = 0;
	*len = n;
out:
	close(fd);
	return buf;
}

static int bundle_build(struct vdimg_image *msg, const char *dir, const struct xml *x, int root,
			struct prl_bundle_chain *out)
{
	int params, sd, snaps, st, shot, img;
	const char *top, *t;
	const char *chain[64];
	u64 disk, pos = 0, start, end;
	u32 nr = 0, ns = 0, i, k;

	if (strcmp(x->n[root].name, "Parallels_disk_image"))
		return vdimg_err(msg, "the root element is <%s>, not <Parallels_disk_image>",
				 x->n[root].name), -EUCLEAN;
	if (x->n[root].version[0] && strcmp(x->n[root].version, "1.0"))
		return vdimg_err(msg, "descriptor version %s is not supported (only 1.0)",
				 x->n[root].version), -EOPNOTSUPP;
	params = xml_child(x, root, "Disk_Parameters", -1);
	sd = xml_child(x, root, "StorageData", -1);
	snaps = xml_child(x, root, "Snapshots", -1);
	if (params < 0 || sd < 0 || snaps < 0)
		return vdimg_err(msg, "Disk_Parameters, StorageData or Snapshots is missing"), -EUCLEAN;
	if (!number(xml_child_text(x, params, "Disk_size"), &disk) || !disk)
		return vdimg_err(msg, "Disk_size is missing or not a number"), -EUCLEAN;
	t = xml_child_text(x, params, "Padding");
	if (t && strcmp(t, "0"))
		return vdimg_err(msg, "Padding %s is not supported (only 0)", t), -EOPNOTSUPP;
	st = xml_child(x, params, "Encryption", -1);
	t = st >= 0 ? xml_child_text(x, st, "Engine") : NULL;
	if (t && *t && strcasecmp(t, null_guid))
		return vdimg_err(msg, "encrypted disks (engine %s) are not supported", t), -EOPNOTSUPP;

	/* the chain: from the top snapshot down its parents to the root */
	top = xml_child_text(x, snaps, "TopGUID");
	if (!top)
		top = top_guid;
	for (t = top; strcmp(t, null_guid); ) {
		const char *parent = NULL;

		if (!guid_ok(t))
			return vdimg_err(msg, "snapshot GUID \"%s\" is malformed", t), -EUCLEAN;
		for (i = 0; i < nr; i++)
			if (!strcasecmp(chain[i], t))
				return vdimg_err(msg, "the snapshots loop at %s", t), -EUCLEAN;
		if (nr == ARRAY_SIZE(chain))
			return vdimg_err(msg, "more than %zu snapshots in the chain",
					 ARRAY_SIZE(chain)), -EOPNOTSUPP;
		for (shot = xml_child(x, snaps, "Shot", -1); shot >= 0;
		     shot = xml_child(x, snaps, "Shot", shot)) {
			const char *g = xml_child_text(x, shot, "GUID");

			if (g && !strcasecmp(g, t)) {
				parent = xml_child_text(x, shot, "ParentGUID");
				break;
			}
		}
		if (!parent)
			return vdimg_err(msg, "snapshot %s has no <Shot> with a ParentGUID", t),
			       -EUCLEAN;
		chain[nr++] = t;
		t = parent;
	}
	if (!nr)
		return vdimg_err(msg, "the top snapshot GUID is the null GUID"), -EUCLEAN;

	for (st = xml_child(x, sd, "Storage", -1); st >= 0; st = xml_child(x, sd, "Storage", st))
		ns++;
	if (!ns || ns > PRL_MAX_PARTS)
		return vdimg_err(msg, "%u storages (1 to %u are read)", ns, PRL_MAX_PARTS),
		       ns ? -EOPNOTSUPP : -EUCLEAN;
	out->nr = nr;
	out->nr_parts = ns;
	out->files = calloc((size_t)nr * ns, sizeof(char *));
	out->part_sectors = calloc(ns, sizeof(u64));
	if (!out->files || !out->part_sectors)
		return -ENOMEM;
	for (st = xml_child(x, sd, "Storage", -1), k = 0; st >= 0;
	     st = xml_child(x, sd, "Storage", st), k++) {
		if (!number(xml_child_text(x, st, "Start"), &start) ||
		    !number(xml_child_text(x, st, "End"), &end) || start != pos || end <= start)
			return vdimg_err(msg, "storage %u: its Start and End do not follow the previous storage (%llu)",
					 k + 1, (unsigned long long)pos), -EUCLEAN;
		out->part_sectors[k] = end - start;
		pos = end;
		for (i = 0; i < nr; i++) {
			const char *g = chain[nr - 1 - i], *type = NULL, *file = NULL;

			for (img = xml_child(x, st, "Image", -1); img >= 0;
			     img = xml_child(x, st, "Image", img)) {
				const char *ig = xml_child_text(x, img, "GUID");

				if (ig && !strcasecmp(ig, g)) {
					type = xml_child_text(x, img, "Type");
					file = xml_child_text(x, img, "File");
					break;
				}
			}
			if (!file || !type)
				return vdimg_err(msg, "storage %u has no image of snapshot %s", k + 1, g),
				       -EUCLEAN;
			/* a raw root, as Parallels makes "plain" disks; only whole, in one storage */
			if (!strcmp(type, "Plain") && (i || ns > 1))
				return vdimg_err(msg, "storage %u: plain (raw) image %s is supported only as the root of an unsplit disk",
						 k + 1, file), -EOPNOTSUPP;
			if (!strcmp(type, "Plain"))
				out->plain_base = true;
			else if (strcmp(type, "Compressed"))
				return vdimg_err(msg, "storage %u: image type \"%s\" is not known", k + 1,
						 type), -EOPNOTSUPP;
			if (!vdimg_inner_name_ok(file))
				return vdimg_err(msg, "image file \"%s\" is not inside the bundle: refused",
						 file), -EPERM;
			if (asprintf(&out->files[(size_t)i * ns + k], "%s/%s", dir, file) < 0) {
				out->files[(size_t)i * ns + k] = NULL;
				return -ENOMEM;
			}
		}
	}
	if (pos != disk)
		return vdimg_err(msg, "the storages end at sector %llu, the disk at %llu",
				 (unsigned long long)pos, (unsigned long long)disk), -EUCLEAN;
	return 0;
}

int prl_bundle_parse(const char *path, struct prl_bundle_chain *out)
{
	struct vdimg_image msg = { .name = path };
	struct xml x = { 0 };
	char *text, *copy, *dir;
	int ret, root;

	memset(out, 0, sizeof(*out));
	text = read_text(path, &x.len);
	if (!text) {
		ret = -errno;
		vdimg_err(&msg, "cannot read the descriptor: %s", strerror(errno));
		return ret;
	}
	x.s = text;
	root = xml_parse(&x);
	if (root < 0) {
		ret = root;
		if (x.why)
			vdimg_err(&msg, "descriptor refused: %s (at byte %zu)", x.why, x.pos);
		goto out;
	}
	copy = strdup(path);
	dir = copy ? dirname(copy) : NULL;
	ret = dir ? bundle_build(&msg, dir, &x, root, out) : -ENOMEM;
	free(copy);
out:
	if (ret)
		prl_bundle_free(out);
	xml_free(&x);
	free(text);
	return ret;
}

/* ---- the image's place in its bundle ---- */

/*
 * The bundle of the open file @f (its directory's descriptor, if any) and the layer it is the
 * first part of: 0 with *@layer set, -ENOENT when it is not in a bundle (or is not a layer's
 * first file: it is then an image on its own).
 */
static int bundle_of(struct vdimg_file *f, struct prl_bundle_chain *c, u32 *layer)
{
	char *dir = vdimg_file_dir(f), *desc = NULL;
	struct stat me, st;
	int ret = -ENOENT;

	if (!dir)
		return -ENOENT;
	if (asprintf(&desc, "%s/%s", dir, PRL_DESCRIPTOR) < 0) {
		desc = NULL;
		ret = -ENOMEM;
		goto out;
	}
	if (access(desc, F_OK) || fstat(f->fd, &me))
		goto out;
	ret = prl_bundle_parse(desc, c);
	if (ret)
		goto out;
	ret = -ENOENT;
	for (u32 i = 0; i < c->nr; i++)
		if (!stat(c->files[(size_t)i * c->nr_parts], &st) && st.st_dev == me.st_dev &&
		    st.st_ino == me.st_ino) {
			*layer = i;
			ret = 0;
			break;
		}
	if (ret)
		prl_bundle_free(c);
out:
	free(desc);
	free(dir);
	return ret;
}

int prl_bundle_note(struct vdimg_image *img)
{
	struct prl_disk *d = img->priv;
	struct prl_bundle_chain c;
	u32 layer, k;
	int ret;

	ret = bundle_of(img->file, &c, &layer);
	if (ret == -ENOENT)
		return 0;
	if (ret)
		return ret;
	/* the parts must be the ones the descriptor names, with the sizes of its ranges */
	if (img->nr_extents && d->nr != c.nr_parts) {
		vdimg_err(img, "opened with %u parts, the bundle's descriptor has %u storages", d->nr,
			  c.nr_parts);
		ret = -EUCLEAN;
	}
	for (k = 0; !ret && k < d->nr && d->nr == c.nr_parts; k++)
		if (d->part[k]->size != c.part_sectors[k] * PRL_SECTOR) {
			vdimg_err(img, "part %u holds %llu sectors, the descriptor's storage %u has %llu",
				  k + 1, (unsigned long long)(d->part[k]->size / PRL_SECTOR), k + 1,
				  (unsigned long long)c.part_sectors[k]);
			ret = -EUCLEAN;
		}
	if (!ret && layer > 0)
		img->flags |= VDIMG_IMG_HAS_PARENT;
	prl_bundle_free(&c);
	return ret;
}

int prl_parent_ref(struct vdimg_image *img, struct vdimg_parent_ref *ref)
{
	struct prl_bundle_chain c;
	u32 layer;
	int ret;

	ret = bundle_of(img->file, &c, &layer);
	if (ret)
		return ret;
	memset(ref, 0, sizeof(*ref));
	ret = -ENOENT;
	if (layer > 0) {
		snprintf(ref->path, sizeof(ref->path), "%s",
			 c.files[(size_t)(layer - 1) * c.nr_parts]);
		ref->format = layer == 1 && c.plain_base ? VDIMG_FMT_RAW : VDIMG_FMT_PARALLELS;
		ret = 0;
	}
	prl_bundle_free(&c);
	return ret;
}

int prl_extent_refs(struct vdimg_file *f, char ***paths, bool **ro, u32 *n)
{
	struct prl_bundle_chain c;
	char *dir = NULL;
	u32 layer, k;
	int ret;

	*n = 0;
	ret = bundle_of(f, &c, &layer);
	if (ret == -ENOENT)
		return 0;
	if (ret)
		return ret;
	if (c.nr_parts == 1)
		goto out;
	dir = vdimg_file_dir(f);
	*paths = calloc(c.nr_parts - 1, sizeof(char *));
	*ro = calloc(c.nr_parts - 1, sizeof(bool));
	if (!dir || !*paths || !*ro) {
		ret = -ENOMEM;
		goto out;
	}
	/* names relative to the first part's directory, as the extent opener wants them */
	for (k = 1; k < c.nr_parts; k++) {
		const char *full = c.files[(size_t)layer * c.nr_parts + k];
		size_t dl = strlen(dir);

		(*paths)[k - 1] = strdup(!strncmp(full, dir, dl) && full[dl] == '/' ?
					 full + dl + 1 : full);
		if (!(*paths)[k - 1]) {
			ret = -ENOMEM;
			goto out;
		}
		(*ro)[k - 1] = layer + 1 < c.nr;	/* snapshots below the top only read */
	}
	*n = c.nr_parts - 1;
out:
	if (ret && *paths) {
		for (k = 0; k + 1 < c.nr_parts; k++)
			free((*paths)[k]);
		free(*paths);
		free(*ro);
		*paths = NULL;
		*ro = NULL;
	}
	free(dir);
	prl_bundle_free(&c);
	return ret;
}

int vdimg_parallels_bundle_top(const char *path, char **top)
{
	struct prl_bundle_chain c;
	struct stat st;
	char *desc;
	int ret;

	*top = NULL;
	if (stat(path, &st))
		return -errno;
	if (S_ISDIR(st.st_mode)) {
		if (asprintf(&desc, "%s/%s", path, PRL_DESCRIPTOR) < 0)
			return -ENOMEM;
		if (access(desc, F_OK) && errno == ENOENT) {
			free(desc);
			return -ENOENT;		/* a directory, but no bundle: the caller says so */
		}
	} else {
		const char *b = strrchr(path, '/');

		if (strcmp(b ? b + 1 : path, PRL_DESCRIPTOR))
			return -ENOENT;		/* not a bundle: the caller opens the file itself */
		desc = strdup(path);
		if (!desc)
			return -ENOMEM;
	}
	ret = prl_bundle_parse(desc, &c);
	free(desc);
	if (ret)
		return ret;
	*top = strdup(c.files[(size_t)(c.nr - 1) * c.nr_parts]);
	prl_bundle_free(&c);
	return *top ? 0 : -ENOMEM;
}
