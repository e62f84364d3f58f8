/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vdimgctl's small XML reader (xml.c) for the machine files of VM products (VirtualBox .vbox and
 * VirtualBox.xml): elements, their attributes and their nesting, nothing else. The input is hostile
 * text, so the reader is bounded (size, depth, elements, attributes, attribute length), does not
 * recurse, refuses a DOCTYPE (and so every entity but the five predefined ones and character
 * references) and names what it refused.
 */
#ifndef _VDIMGCTL_XML_H
#define _VDIMGCTL_XML_H

#include <stddef.h>

#define XML_MAX_BYTES	(16U << 20)	/* a VirtualBox.xml with many media stays far below */
#define XML_MAX_DEPTH	64
#define XML_MAX_ELEMS	200000
#define XML_MAX_ATTRS	64		/* per element */
#define XML_MAX_NAME	128
#define XML_MAX_VALUE	(64U << 10)	/* bytes of one attribute value */

struct xml_attr {
	char *name, *value;		/* value with its references replaced */
};

struct xml_elem {
	char *name;			/* without a namespace prefix */
	struct xml_attr *attrs;
	int nr_attrs;
	int parent, child, next;	/* indexes into xml_doc.e, -1 for none */
	int last;			/* last child, while parsing */
};

struct xml_doc {
	struct xml_elem *e;		/* e[0] is the root element */
	int nr, cap;
};

/*
 * Parse @len bytes at @s into @d. 0, or -EUCLEAN (malformed), -EOPNOTSUPP (a DOCTYPE or an entity
 * other than the predefined ones), -E2BIG (a bound exceeded) or -ENOMEM, with *@why naming what
 * and *@line the line it is on. @d is empty after a failure.
 */
int xml_parse(const char *s, size_t len, struct xml_doc *d, const char **why, unsigned int *line);
void xml_free(struct xml_doc *d);

/* the value of attribute @name of element @i, or NULL */
const char *xml_attr(const struct xml_doc *d, int i, const char *name);
/* the first child of @i named @name after child @after (-1: from the first), or -1 */
int xml_child(const struct xml_doc *d, int i, const char *name, int after);
/* whether @i is named @name */
int xml_is(const struct xml_doc *d, int i, const char *name);

#endif /* _VDIMGCTL_XML_H */
