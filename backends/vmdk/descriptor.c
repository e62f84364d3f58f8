// SPDX-License-Identifier: GPL-2.0
/*
 * The VMDK text descriptor: "key=value" lines (version, CID, parentCID, createType,
 * parentFileNameHint, ddb.* entries) and extent lines ("RW 2048 SPARSE "disk.vmdk"" or
 * "RDONLY 4096 FLAT "disk-flat.vmdk" 0"). The text comes from the image, so it is parsed like
 * binary metadata: it ends at the first NUL or at the size the header gives, every line, token and
 * number is bounds-checked, and anything malformed fails with -EFSCORRUPTED. Kernel-shared: no
 * libc string or number parsing here, only what this file defines.
 */
#include "vmdk.h"

#define VMDK_LINE_MAX	4096U

static bool vmdk_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* [*p, end): skip blanks */
static const char *vmdk_skip(const char *p, const char *end)
{
	while (p < end && vmdk_space(*p))
		p++;
	return p;
}

static bool vmdk_parse_dec(const char *s, size_t n, u64 *out)
{
	u64 v = 0;
	size_t i;

	if (!n || n > 20)
		return false;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (check_mul_overflow(v, (u64)10, &v) ||
		    check_add_overflow(v, (u64)(s[i] - '0'), &v))
			return false;
	}
	*out = v;
	return true;
}

static bool vmdk_parse_hex32(const char *s, size_t n, u32 *out)
{
	u32 v = 0;
	size_t i;

	if (!n || n > 8)
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];
		u32 d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return false;
		v = v << 4 | d;
	}
	*out = v;
	return true;
}

void vmdk_hex32(char *buf, u32 v)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = 7; i >= 0; i--) {
		buf[i] = hex[v & 15];
		v >>= 4;
	}
	buf[8] = '\0';
}

static bool vmdk_word_is(const char *s, size_t n, const char *w)
{
	return strlen(w) == n && !memcmp(s, w, n);
}

/* the next blank-separated token of [*p, end) */
static bool vmdk_token(const char **p, const char *end, const char **tok, size_t *n)
{
	const char *s = vmdk_skip(*p, end), *e = s;

	while (e < end && !vmdk_space(*e))
		e++;
	if (e == s)
		return false;
	*tok = s;
	*n = e - s;
	*p = e;
	return true;
}

static const struct {
	const char *name;
	u32 type;
} vmdk_extent_types[] = {
	{ "SPARSE", VMDK_EXT_SPARSE },
	{ "FLAT", VMDK_EXT_FLAT },
	{ "ZERO", VMDK_EXT_ZERO },
	{ "VMFS", VMDK_EXT_VMFS },
	{ "VMFSSPARSE", VMDK_EXT_VMFSSPARSE },
	{ "VMFSRAW", VMDK_EXT_VMFSRAW },
	{ "VMFSRDM", VMDK_EXT_VMFSRDM },
	{ "VMFSRDMP", VMDK_EXT_VMFSRDMP },
	{ "SESPARSE", VMDK_EXT_SESPARSE },
};

const char *vmdk_extent_type_name(u32 type)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(vmdk_extent_types); i++)
		if (vmdk_extent_types[i].type == type)
			return vmdk_extent_types[i].name;
	return "?";
}

/* one extent line, [s, end) without its end of line; the access word is already known */
static int vmdk_parse_extent(struct vdimg_image *img, const char *s, const char *end, u32 access,
			     struct vmdk_desc_extent *x, u32 lineno)
{
	const char *p = s, *tok, *q;
	size_t n, i;

	memset(x, 0, sizeof(*x));
	x->access = access;
	vmdk_token(&p, end, &tok, &n);	/* the access word */
	if (!vmdk_token(&p, end, &tok, &n) || !vmdk_parse_dec(tok, n, &x->sectors) || !x->sectors)
		goto bad;
	if (!vmdk_token(&p, end, &tok, &n))
		goto bad;
	for (i = 0; i < ARRAY_SIZE(vmdk_extent_types); i++)
		if (vmdk_word_is(tok, n, vmdk_extent_types[i].name))
			x->type = vmdk_extent_types[i].type;
	if (!x->type) {
		vdimg_err(img, "descriptor line %u: unknown extent type \"%.*s\"", lineno,
			  (int)min_t(size_t, n, 16), tok);
		return -EOPNOTSUPP;
	}
	p = vmdk_skip(p, end);
	if (x->type == VMDK_EXT_ZERO && p == end)
		return 0;
	if (p == end || *p != '"')
		goto bad;
	q = ++p;
	while (q < end && *q != '"')
		q++;
	if (q == end || q == p || (size_t)(q - p) >= sizeof(x->file))
		goto bad;
	memcpy(x->file, p, q - p);
	x->file[q - p] = '\0';
	p = q + 1;
	if (vmdk_token(&p, end, &tok, &n)) {
		if (!vmdk_parse_dec(tok, n, &x->offset))
			goto bad;
		if (x->type != VMDK_EXT_FLAT && x->type != VMDK_EXT_VMFS && x->offset)
			goto bad;
	}
	if (vmdk_token(&p, end, &tok, &n))
		goto bad;
	if (x->offset > (~0ULL >> 9) - x->sectors)
		goto bad;
	return 0;
bad:
	return vdimg_corrupt(img, "descriptor line %u: malformed extent line", lineno);
}

/* "key" and "value" of a key=value line, value unquoted; false if the line is not one */
static bool vmdk_key_value(const char *s, const char *end, const char **k, size_t *kn,
			   const char **val, size_t *vn)
{
	const char *eq = s, *ke, *ve;

	while (eq < end && *eq != '=')
		eq++;
	if (eq == end)
		return false;
	s = vmdk_skip(s, eq);
	ke = eq;
	while (ke > s && vmdk_space(ke[-1]))
		ke--;
	if (ke == s)
		return false;
	*k = s;
	*kn = ke - s;
	s = vmdk_skip(eq + 1, end);
	ve = end;
	while (ve > s && vmdk_space(ve[-1]))
		ve--;
	if (ve - s >= 2 && *s == '"' && ve[-1] == '"') {
		s++;
		ve--;
	}
	*val = s;
	*vn = ve - s;
	return true;
}

/* calls @fn for every line [s, e) of the text, with its number; stops at a nonzero return */
static int vmdk_lines(const char *text, size_t len,
		      int (*fn)(void *ctx, const char *s, const char *e, u32 lineno), void *ctx)
{
	const char *p = text, *end = text + len;
	u32 lineno = 0;
	int ret;

	while (p < end) {
		const char *e = p;

		while (e < end && *e != '\n')
			e++;
		lineno++;
		ret = fn(ctx, p, e, lineno);
		if (ret)
			return ret;
		p = e < end ? e + 1 : e;
	}
	return 0;
}

struct vmdk_parse_ctx {
	struct vdimg_image *img;
	struct vmdk_desc *d;
	const char *text;
	u32 cap;			/* extents allocated */
};

static int vmdk_parse_line(void *arg, const char *s, const char *e, u32 lineno)
{
	struct vmdk_parse_ctx *c = arg;
	struct vmdk_desc *d = c->d;
	const char *k, *val, *p = s, *tok;
	size_t kn, vn, n;
	u32 access = 0;
	u64 num;

	if (e - s > VMDK_LINE_MAX)
		return vdimg_corrupt(c->img, "descriptor line %u is longer than %u bytes", lineno,
				     VMDK_LINE_MAX);
	p = vmdk_skip(s, e);
	if (p == e || *p == '#')
		return 0;
	if (vmdk_token(&p, e, &tok, &n)) {
		if (vmdk_word_is(tok, n, "RW"))
			access = VMDK_ACCESS_RW;
		else if (vmdk_word_is(tok, n, "RDONLY"))
			access = VMDK_ACCESS_RDONLY;
		else if (vmdk_word_is(tok, n, "NOACCESS"))
			access = VMDK_ACCESS_NOACCESS;
	}
	if (access) {
		int ret;

		if (d->nr_extents >= VMDK_MAX_EXTENTS)
			return vdimg_corrupt(c->img, "more than %u extents", VMDK_MAX_EXTENTS);
		if (d->nr_extents == c->cap) {
			u32 cap = c->cap ? c->cap * 2 : 4;
			struct vmdk_desc_extent *x = vdimg_zalloc(sizeof(*x) * cap);

			if (!x)
				return -ENOMEM;
			if (d->extents)
				memcpy(x, d->extents, sizeof(*x) * d->nr_extents);
			vdimg_free(d->extents);
			d->extents = x;
			c->cap = cap;
		}
		ret = vmdk_parse_extent(c->img, s, e, access, &d->extents[d->nr_extents], lineno);
		if (ret)
			return ret;
		d->nr_extents++;
		return 0;
	}
	if (!vmdk_key_value(s, e, &k, &kn, &val, &vn))
		return 0;	/* VMware ignores lines it does not understand, so do we */
	if (vmdk_word_is(k, kn, "CID")) {
		if (!vmdk_parse_hex32(val, vn, &d->cid))
			return vdimg_corrupt(c->img, "descriptor line %u: bad CID", lineno);
		d->has_cid = true;
		d->cid_pos = val - c->text;
		d->cid_len = vn;
	} else if (vmdk_word_is(k, kn, "parentCID")) {
		if (!vmdk_parse_hex32(val, vn, &d->parent_cid))
			return vdimg_corrupt(c->img, "descriptor line %u: bad parentCID", lineno);
	} else if (vmdk_word_is(k, kn, "version")) {
		if (!vmdk_parse_dec(val, vn, &num) || num > 0xffff)
			return vdimg_corrupt(c->img, "descriptor line %u: bad version", lineno);
		d->version = num;
	} else if (vmdk_word_is(k, kn, "createType")) {
		if (!vn || vn >= sizeof(d->create_type))
			return vdimg_corrupt(c->img, "descriptor line %u: bad createType", lineno);
		memcpy(d->create_type, val, vn);
		d->create_type[vn] = '\0';
	} else if (vmdk_word_is(k, kn, "parentFileNameHint")) {
		if (vn >= sizeof(d->parent_hint))
			return vdimg_corrupt(c->img,
					     "descriptor line %u: parentFileNameHint too long",
					     lineno);
		memcpy(d->parent_hint, val, vn);
		d->parent_hint[vn] = '\0';
	}
	return 0;
}

int vmdk_desc_parse(struct vdimg_image *img, const char *text, size_t len, struct vmdk_desc *d)
{
	struct vmdk_parse_ctx c = { .img = img, .d = d, .text = text };
	const char *nul;
	int ret;

	if (len > VMDK_DESC_MAX)
		return vdimg_corrupt(img, "descriptor of %zu bytes is too large", len);
	nul = memchr(text, '\0', len);
	if (nul)
		len = nul - text;
	d->text_len = len;
	d->parent_cid = VMDK_CID_NONE;
	d->version = 1;
	ret = vmdk_lines(text, len, vmdk_parse_line, &c);
	if (ret) {
		vmdk_desc_free(d);
		return ret;
	}
	return 0;
}

void vmdk_desc_free(struct vmdk_desc *d)
{
	vdimg_free(d->extents);
	d->extents = NULL;
	d->nr_extents = 0;
}

struct vmdk_value_ctx {
	const char *key;
	char *val;
	size_t valsz;
	bool found;
};

static int vmdk_value_line(void *arg, const char *s, const char *e, u32 lineno)
{
	struct vmdk_value_ctx *c = arg;
	const char *k, *val;
	size_t kn, vn;

	if (!vmdk_key_value(s, e, &k, &kn, &val, &vn) || !vmdk_word_is(k, kn, c->key))
		return 0;
	vn = min(vn, c->valsz - 1);
	memcpy(c->val, val, vn);
	c->val[vn] = '\0';
	c->found = true;
	return 1;
}

bool vmdk_desc_value(const char *text, size_t len, const char *key, char *val, size_t valsz)
{
	struct vmdk_value_ctx c = { .key = key, .val = val, .valsz = valsz };
	const char *nul = memchr(text, '\0', len);

	if (!valsz)
		return false;
	if (nul)
		len = nul - text;
	vmdk_lines(text, len, vmdk_value_line, &c);
	return c.found;
}

/* ---- editing the text (resize, set_parent) ---- */

/* is the line [@s, @s + @n) a "@key = value" line (blanks around the key allowed)? */
bool vmdk_line_is(const char *s, size_t n, const char *key)
{
	size_t kl = strlen(key);

	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	if (n < kl || memcmp(s, key, kl))
		return false;
	s += kl;
	n -= kl;
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	return n && *s == '=';
}

/* append @n bytes of @s to @t (@cap bytes, @len used); -ENOSPC when they do not fit */
int vmdk_put(char *t, size_t cap, size_t *len, const char *s, size_t n)
{
	if (n > cap - *len)
		return -ENOSPC;
	memcpy(t + *len, s, n);
	*len += n;
	return 0;
}

/*
 * Build a new descriptor text in @t (@cap bytes, *@len set) from the current one, line by line
 * through @fn. A line @fn copies keeps every byte (comments, blank lines, lines this code does not
 * know, CR LF endings). -ENOSPC when the result does not fit.
 */
int vmdk_desc_edit(struct vmdk *v, char *t, size_t cap, size_t *len, vmdk_line_fn fn,
		   void *ctx)
{
	const char *src = v->desc_text, *end = src + v->desc.text_len, *eol;
	int ret = 0;

	*len = 0;
	for (; src < end && !ret; src = eol) {
		const char *nl = memchr(src, '\n', end - src);

		eol = nl ? nl + 1 : end;
		ret = fn(ctx, src, eol - src, nl && nl > src && nl[-1] == '\r', t, cap, len);
	}
	return ret;
}

/*
 * Parse the new descriptor text @t, write it in place under the CID lock, synced, and make it the
 * current one (@t then belongs to the image).
 */
int vmdk_desc_commit(struct vdimg_image *img, char *t, size_t len)
{
	struct vmdk *v = VMDK(img);
	struct vmdk_desc d = {};
	int ret;

	ret = vmdk_desc_parse(img, t, len, &d);
	if (!ret) {
		vdimg_mutex_lock(&v->cid_lock);
		ret = vmdk_write_desc(v, t, len);
		if (!ret)
			ret = vdimg_file_sync(img->file);
		vdimg_mutex_unlock(&v->cid_lock);
	}
	if (ret) {
		vmdk_desc_free(&d);
		return ret;
	}
	vmdk_desc_free(&v->desc);
	v->desc = d;
	vdimg_free(v->desc_text);
	v->desc_text = t;
	if (v->desc_file)
		v->desc_area = len;
	img->flags |= VDIMG_IMG_DIRTY;
	return 0;
}

/* @v in decimal into @buf (21 bytes at least, not terminated); the digits written */
static int vmdk_dec(char *buf, u64 v)
{
	char tmp[20];
	int n = 0, i;

	do {
		tmp[n++] = '0' + (char)(v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

/* is the line [@l, @l + @n) an extent line? */
static bool vmdk_extent_line(const char *l, size_t n)
{
	static const char *const acc[] = { "RW ", "RDONLY ", "NOACCESS " };
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(acc); i++)
		if (n > strlen(acc[i]) && !memcmp(l, acc[i], strlen(acc[i])))
			return true;
	return false;
}

struct vmdk_resize_edit {
	u32 k, nr;			/* extent lines seen, the last one's number */
	u64 sectors, cyl;		/* the last extent's new length, the new cylinder count */
	const char *more;		/* lines to add after the last extent line, or NULL */
};

/* @s's lines (each ending in LF) appended, ending in CR LF when @crlf */
static int vmdk_put_lines(char *t, size_t cap, size_t *len, const char *s, bool crlf)
{
	int ret = 0;

	while (*s && !ret) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? nl - s : strlen(s);

		ret = vmdk_put(t, cap, len, s, n) ?:
		      vmdk_put(t, cap, len, crlf ? "\r\n" : "\n", crlf ? 2 : 1);
		s += n + !!nl;
	}
	return ret;
}

/* resize's lines: the last extent's sector count and ddb.geometry.cylinders replaced */
static int vmdk_resize_line(void *ctx, const char *l, size_t n, bool crlf, char *t, size_t cap,
			    size_t *len)
{
	struct vmdk_resize_edit *e = ctx;
	const char *a, *b;
	char add[64];
	int k;

	if (vmdk_extent_line(l, n) && ++e->k == e->nr) {
		a = memchr(l, ' ', n);			/* "RW| 2048 FLAT ..." */
		b = a ? memchr(a + 1, ' ', n - (a + 1 - l)) : NULL;	/* "RW 2048| FLAT ..." */
		if (!b)
			return -EUCLEAN;
		add[0] = ' ';
		k = 1 + vmdk_dec(add + 1, e->sectors);
		k = vmdk_put(t, cap, len, l, a - l) ?: vmdk_put(t, cap, len, add, k) ?:
		    vmdk_put(t, cap, len, b, n - (b - l));
		if (!k && e->more && l[n - 1] != '\n')
			k = vmdk_put(t, cap, len, "\n", 1);	/* the last line of the text */
		if (!k && e->more)
			k = vmdk_put_lines(t, cap, len, e->more, crlf);
		return k;
	}
	if (vmdk_line_is(l, n, "ddb.geometry.cylinders")) {
		static const char key[] = "ddb.geometry.cylinders = \"";
		const char *eol = crlf ? "\r\n" : l[n - 1] == '\n' ? "\n" : "";

		k = vmdk_dec(add, e->cyl);
		return vmdk_put(t, cap, len, key, sizeof(key) - 1) ?:
			vmdk_put(t, cap, len, add, k) ?: vmdk_put(t, cap, len, "\"", 1) ?:
			vmdk_put(t, cap, len, eol, strlen(eol));
	}
	return vmdk_put(t, cap, len, l, n);
}

/*
 * The descriptor text for a disk of @size bytes whose last extent holds @sectors sectors: that
 * extent line's count and ddb.geometry.cylinders replaced (at most 65535; heads and sectors per
 * track kept, 16 and 63 when absent or out of range), the lines of @more (each ending in LF; NULL
 * for none: new extent lines) added after that extent line with its line ending, every other line
 * byte for byte. *@out (VMDK_DESC_MAX + 1 bytes, *@len used) then belongs to the caller:
 * vmdk_desc_commit() takes it.
 */
int vmdk_desc_resized(struct vmdk *v, u64 size, u64 sectors, const char *more, char **out,
		      size_t *len)
{
	struct vmdk_resize_edit e = {};
	u64 heads = 16, secs = 63;
	char val[32], *t;
	int ret;

	if (vmdk_desc_value(v->desc_text, v->desc.text_len, "ddb.geometry.heads", val,
			    sizeof(val)) && !vmdk_parse_dec(val, strlen(val), &heads))
		heads = 0;
	if (vmdk_desc_value(v->desc_text, v->desc.text_len, "ddb.geometry.sectors", val,
			    sizeof(val)) && !vmdk_parse_dec(val, strlen(val), &secs))
		secs = 0;
	if (!heads || !secs || heads > 255 || secs > 255) {
		heads = 16;
		secs = 63;
	}
	e.nr = v->desc.nr_extents;
	e.sectors = sectors;
	e.more = more;
	e.cyl = min_t(u64, div64_u64(size / VMDK_SECTOR, heads * secs), 65535);
	t = vdimg_zalloc(VMDK_DESC_MAX + 1);
	if (!t)
		return -ENOMEM;
	ret = vmdk_desc_edit(v, t, VMDK_DESC_MAX, len, vmdk_resize_line, &e);
	if (!ret && e.k != e.nr)
		ret = vdimg_corrupt(v->img, "the descriptor's extent lines changed under us");
	if (ret) {
		vdimg_free(t);
		return ret;
	}
	*out = t;
	return 0;
}
