// SPDX-License-Identifier: GPL-2.0
/*
 * A small XML reader for VM machine files (see xml.h): elements, attributes, nesting. Character
 * data, comments, processing instructions and CDATA sections are skipped. Iterative (an explicit
 * stack of open elements bounded by XML_MAX_DEPTH), so hostile nesting cannot exhaust the C stack.
 * No DTD is read: a DOCTYPE is refused, which leaves only the five predefined entities and
 * character references to replace, and nothing can expand.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "xml.h"

struct xp {
	const char *s;
	size_t len, pos;
	struct xml_doc *d;
	const char *why;
	int err;
};

static int xp_fail(struct xp *x, int err, const char *why)
{
	if (!x->err) {
		x->err = err;
		x->why = why;
	}
	return err;
}

static bool at(const struct xp *x, const char *lit)
{
	size_t n = strlen(lit);

	return x->len - x->pos >= n && !memcmp(x->s + x->pos, lit, n);
}

static bool skip_past(struct xp *x, const char *end)
{
	const char *p = memmem(x->s + x->pos, x->len - x->pos, end, strlen(end));

	if (!p)
		return false;
	x->pos = p - x->s + strlen(end);
	return true;
}

static void skip_space(struct xp *x)
{
	while (x->pos < x->len && strchr(" \t\r\n", x->s[x->pos]) && x->s[x->pos])
		x->pos++;
}

static bool name_start(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == ':' ||
	       c >= 0x80;
}

static bool name_char(unsigned char c)
{
	return name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* a name at the cursor: its length (the cursor moves past it), 0 after a failure */
static size_t take_name(struct xp *x)
{
	size_t start = x->pos;

	if (x->pos >= x->len || !name_start(x->s[x->pos])) {
		xp_fail(x, -EUCLEAN, "a name was expected");
		return 0;
	}
	while (x->pos < x->len && name_char(x->s[x->pos]))
		x->pos++;
	if (x->pos - start > XML_MAX_NAME) {
		xp_fail(x, -E2BIG, "a name is too long");
		return 0;
	}
	return x->pos - start;
}

static size_t put_utf8(char *o, unsigned long c)
{
	if (c < 0x80) {
		o[0] = c;
		return 1;
	}
	if (c < 0x800) {
		o[0] = 0xc0 | (c >> 6);
		o[1] = 0x80 | (c & 0x3f);
		return 2;
	}
	if (c < 0x10000) {
		o[0] = 0xe0 | (c >> 12);
		o[1] = 0x80 | ((c >> 6) & 0x3f);
		o[2] = 0x80 | (c & 0x3f);
		return 3;
	}
	o[0] = 0xf0 | (c >> 18);
	o[1] = 0x80 | ((c >> 12) & 0x3f);
	o[2] = 0x80 | ((c >> 6) & 0x3f);
	o[3] = 0x80 | (c & 0x3f);
	return 4;
}

/* @n bytes of an attribute value at @v, references replaced, into a new string; NULL on failure */
static char *decode(struct xp *x, const char *v, size_t n)
{
	static const struct { const char *name; char c; } pre[] = {
		{ "lt", '<' }, { "gt", '>' }, { "amp", '&' }, { "quot", '"' }, { "apos", '\'' },
	};
	char *out = malloc(n + 1), *o = out;
	size_t i = 0, k;

	if (!out) {
		xp_fail(x, -ENOMEM, "out of memory");
		return NULL;
	}
	while (i < n) {
		const char *semi;
		size_t rl;

		if (v[i] == '<') {
			xp_fail(x, -EUCLEAN, "'<' in an attribute value");
			goto bad;
		}
		if (v[i] != '&') {
			/* attribute-value normalisation: white space becomes a space */
			*o++ = strchr("\t\r\n", v[i]) && v[i] ? ' ' : v[i];
			i++;
			continue;
		}
		semi = memchr(v + i, ';', n - i < 12 ? n - i : 12);
		if (!semi) {
			xp_fail(x, -EUCLEAN, "a '&' that starts no reference");
			goto bad;
		}
		rl = semi - (v + i) - 1;	/* between '&' and ';' */
		if (rl >= 2 && v[i + 1] == '#') {
			bool hex = v[i + 2] == 'x';
			unsigned long c = 0;

			for (k = i + 2 + hex; k < i + 1 + rl; k++) {
				int d;

				if (v[k] >= '0' && v[k] <= '9')
					d = v[k] - '0';
				else if (hex && v[k] >= 'a' && v[k] <= 'f')
					d = v[k] - 'a' + 10;
				else if (hex && v[k] >= 'A' && v[k] <= 'F')
					d = v[k] - 'A' + 10;
				else
					d = -1;
				if (d < 0 || c > 0x10ffff) {
					xp_fail(x, -EUCLEAN, "a malformed character reference");
					goto bad;
				}
				c = c * (hex ? 16 : 10) + d;
			}
			if (k == i + 2 + hex || !c || c > 0x10ffff || (c >= 0xd800 && c < 0xe000)) {
				xp_fail(x, -EUCLEAN, "a character reference to no valid character");
				goto bad;
			}
			o += put_utf8(o, c);
		} else {
			for (k = 0; k < sizeof(pre) / sizeof(pre[0]); k++)
				if (strlen(pre[k].name) == rl &&
				    !memcmp(v + i + 1, pre[k].name, rl))
					break;
			if (k == sizeof(pre) / sizeof(pre[0])) {
				xp_fail(x, -EOPNOTSUPP, "an entity other than the five predefined ones");
				goto bad;
			}
			*o++ = pre[k].c;
		}
		i += rl + 2;
	}
	*o = 0;
	return out;
bad:
	free(out);
	return NULL;
}

static int new_elem(struct xp *x, int parent, const char *qname, size_t nl)
{
	struct xml_doc *d = x->d;
	struct xml_elem *e;
	const char *colon = memchr(qname, ':', nl);

	if (d->nr == XML_MAX_ELEMS)
		return xp_fail(x, -E2BIG, "too many elements");
	if (d->nr == d->cap) {
		int cap = d->cap ? d->cap * 2 : 64;
		struct xml_elem *ne = realloc(d->e, cap * sizeof(*ne));

		if (!ne)
			return xp_fail(x, -ENOMEM, "out of memory");
		d->e = ne;
		d->cap = cap;
	}
	e = &d->e[d->nr];
	memset(e, 0, sizeof(*e));
	e->parent = parent;
	e->child = e->next = e->last = -1;
	/* a prefix goes ("vbox:Machine" is Machine); a name ending in ':' stays whole */
	if (colon && colon + 1 < qname + nl) {
		nl -= colon + 1 - qname;
		qname = colon + 1;
	}
	e->name = strndup(qname, nl);
	if (!e->name)
		return xp_fail(x, -ENOMEM, "out of memory");
	if (parent >= 0) {
		struct xml_elem *p = &d->e[parent];

		if (p->last >= 0)
			d->e[p->last].next = d->nr;
		else
			p->child = d->nr;
		p->last = d->nr;
	}
	return d->nr++;
}

/* the attributes of element @i and the end of its start tag; 1 if it was empty ("/>"), 0 if not */
static int attributes(struct xp *x, int i)
{
	struct xml_elem *e;

	for (;;) {
		size_t nstart, nl, vstart;
		char q, *name, *value;
		const char *end;
		int k;

		skip_space(x);
		if (at(x, "/>")) {
			x->pos += 2;
			return 1;
		}
		if (at(x, ">")) {
			x->pos++;
			return 0;
		}
		nstart = x->pos;
		nl = take_name(x);
		if (!nl)
			return x->err;
		skip_space(x);
		if (!at(x, "="))
			return xp_fail(x, -EUCLEAN, "an attribute without '='");
		x->pos++;
		skip_space(x);
		if (x->pos >= x->len || (x->s[x->pos] != '"' && x->s[x->pos] != '\''))
			return xp_fail(x, -EUCLEAN, "an attribute value without quotes");
		q = x->s[x->pos++];
		vstart = x->pos;
		end = memchr(x->s + vstart, q, x->len - vstart);
		if (!end)
			return xp_fail(x, -EUCLEAN, "an attribute value that does not end");
		if ((size_t)(end - (x->s + vstart)) > XML_MAX_VALUE)
			return xp_fail(x, -E2BIG, "an attribute value is too long");
		x->pos = end - x->s + 1;
		e = &x->d->e[i];
		if (e->nr_attrs == XML_MAX_ATTRS)
			return xp_fail(x, -E2BIG, "too many attributes on one element");
		for (k = 0; k < e->nr_attrs; k++)
			if (strlen(e->attrs[k].name) == nl &&
			    !memcmp(e->attrs[k].name, x->s + nstart, nl))
				return xp_fail(x, -EUCLEAN, "an attribute given twice");
		if (k % 8 == 0) {
			struct xml_attr *na = realloc(e->attrs, (k + 8) * sizeof(*na));

			if (!na)
				return xp_fail(x, -ENOMEM, "out of memory");
			e->attrs = na;
		}
		name = strndup(x->s + nstart, nl);
		value = name ? decode(x, x->s + vstart, end - (x->s + vstart)) : NULL;
		if (!value) {
			free(name);
			xp_fail(x, -ENOMEM, "out of memory");
			return x->err;
		}
		e->attrs[k].name = name;
		e->attrs[k].value = value;
		e->nr_attrs++;
		if (x->pos < x->len && !strchr(" \t\r\n/>", x->s[x->pos]))
			return xp_fail(x, -EUCLEAN, "attributes not separated by white space");
	}
}

static int parse(struct xp *x)
{
	struct { size_t pos, len; int elem; } stack[XML_MAX_DEPTH];
	int depth = 0, ret;
	bool root_done = false;

	while (x->pos < x->len) {
		size_t nstart, nl;
		int i;

		if (x->s[x->pos] != '<') {
			const char *lt = memchr(x->s + x->pos, '<', x->len - x->pos);
			size_t stop = lt ? (size_t)(lt - x->s) : x->len;

			if (!depth)
				for (; x->pos < stop; x->pos++)
					if (!strchr(" \t\r\n", x->s[x->pos]) || !x->s[x->pos])
						return xp_fail(x, -EUCLEAN, "text outside the root element");
			if (memchr(x->s + x->pos, 0, stop - x->pos))
				return xp_fail(x, -EUCLEAN, "a NUL byte in the text");
			x->pos = stop;
			continue;
		}
		if (at(x, "<?")) {
			if (!skip_past(x, "?>"))
				return xp_fail(x, -EUCLEAN, "a processing instruction that does not end");
			continue;
		}
		if (at(x, "<!--")) {
			if (!skip_past(x, "-->"))
				return xp_fail(x, -EUCLEAN, "a comment that does not end");
			continue;
		}
		if (at(x, "<![CDATA[")) {
			if (!depth || !skip_past(x, "]]>"))
				return xp_fail(x, -EUCLEAN, "a misplaced CDATA section");
			continue;
		}
		if (at(x, "<!DOCTYPE"))
			return xp_fail(x, -EOPNOTSUPP, "a DOCTYPE (document type definitions are not read)");
		if (at(x, "<!"))
			return xp_fail(x, -EUCLEAN, "a markup declaration outside a DTD");
		if (at(x, "</")) {
			x->pos += 2;
			nstart = x->pos;
			nl = take_name(x);
			if (!nl)
				return x->err;
			skip_space(x);
			if (!at(x, ">"))
				return xp_fail(x, -EUCLEAN, "an end tag without '>'");
			x->pos++;
			if (!depth || stack[depth - 1].len != nl ||
			    memcmp(x->s + stack[depth - 1].pos, x->s + nstart, nl))
				return xp_fail(x, -EUCLEAN, "an end tag that matches no start tag");
			depth--;
			if (!depth)
				root_done = true;
			continue;
		}
		x->pos++;
		if (root_done)
			return xp_fail(x, -EUCLEAN, "a second root element");
		nstart = x->pos;
		nl = take_name(x);
		if (!nl)
			return x->err;
		i = new_elem(x, depth ? stack[depth - 1].elem : -1, x->s + nstart, nl);
		if (i < 0)
			return i;
		ret = attributes(x, i);
		if (ret < 0)
			return ret;
		if (ret == 1) {
			if (!depth)
				root_done = true;
			continue;
		}
		if (depth == XML_MAX_DEPTH)
			return xp_fail(x, -E2BIG, "elements nested too deep");
		stack[depth].pos = nstart;
		stack[depth].len = nl;
		stack[depth].elem = i;
		depth++;
	}
	if (depth)
		return xp_fail(x, -EUCLEAN, "the document ends inside an element");
	if (!root_done)
		return xp_fail(x, -EUCLEAN, "no root element");
	return 0;
}

void xml_free(struct xml_doc *d)
{
	int i, k;

	for (i = 0; i < d->nr; i++) {
		for (k = 0; k < d->e[i].nr_attrs; k++) {
			free(d->e[i].attrs[k].name);
			free(d->e[i].attrs[k].value);
		}
		free(d->e[i].attrs);
		free(d->e[i].name);
	}
	free(d->e);
	memset(d, 0, sizeof(*d));
}

int xml_parse(const char *s, size_t len, struct xml_doc *d, const char **why, unsigned int *line)
{
	struct xp x = { .s = s, .len = len, .d = d };
	size_t i;
	int ret;

	memset(d, 0, sizeof(*d));
	if (len > XML_MAX_BYTES) {
		*why = "the file is too large";
		*line = 0;
		return -E2BIG;
	}
	/* a UTF-8 byte-order mark */
	if (len >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
		x.pos = 3;
	ret = parse(&x);
	if (ret) {
		*why = x.why;
		*line = 1;
		for (i = 0; i < x.pos && i < len; i++)
			*line += s[i] == '\n';
		xml_free(d);
	}
	return ret;
}

const char *xml_attr(const struct xml_doc *d, int i, const char *name)
{
	int k;

	if (i < 0 || i >= d->nr)
		return NULL;
	for (k = 0; k < d->e[i].nr_attrs; k++)
		if (!strcmp(d->e[i].attrs[k].name, name))
			return d->e[i].attrs[k].value;
	return NULL;
}

int xml_is(const struct xml_doc *d, int i, const char *name)
{
	return i >= 0 && i < d->nr && !strcmp(d->e[i].name, name);
}

int xml_child(const struct xml_doc *d, int i, const char *name, int after)
{
	int c;

	if (i < 0 || i >= d->nr)
		return -1;
	c = after >= 0 ? d->e[after].next : d->e[i].child;
	for (; c >= 0; c = d->e[c].next)
		if (!name || !strcmp(d->e[c].name, name))
			return c;
	return -1;
}
