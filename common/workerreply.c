/* workerreply: a worker's reply checked against the message it answers.
 * Both header sections are split into fields by mailhdr (the same reader
 * the authentication checks use), so "a field" means the same thing here
 * as everywhere else in mxferry. */
#include "workerreply.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailhdr.h"

/* msg-ids ("<...>" without CFWS inside) of a field's value, outside
 * comments and quoted strings: the count, and the first into first. */
static size_t msgids(const char *f, size_t len, char *first, size_t cap, bool *toolong)
{
	const char *c = memchr(f, ':', len), *end = f + len;
	size_t n = 0;
	int depth = 0;
	*toolong = false;
	if (!c)
		return 0;
	for (c++; c < end; c++) {
		if (depth) {
			if (*c == '\\' && c + 1 < end)
				c++;
			else if (*c == '(')
				depth++;
			else if (*c == ')')
				depth--;
		} else if (*c == '(') {
			depth = 1;
		} else if (*c == '"') {
			for (c++; c < end && *c != '"'; c++)
				if (*c == '\\' && c + 1 < end)
					c++;
		} else if (*c == '<') {
			const char *s = c++;
			while (c < end && *c != '>' && *c != '<' && *c > ' ' && *c != 0x7f)
				c++;
			if (c >= end || *c != '>' || c - s < 3 || !memchr(s, '@', (size_t)(c - s)))
				return SIZE_MAX; /* not a msg-id: the field is malformed */
			if (n++ == 0 && first) {
				size_t l = (size_t)(c - s) + 1;
				if (l >= cap || l > MXF_WR_MSGID_MAX) {
					*toolong = true;
				} else {
					memcpy(first, s, l);
					first[l] = '\0';
				}
			}
		}
	}
	return n;
}

/* Splits msg's header section into fields for cb (which keeps none).
 * 1 when a blank line ended it, 0 when not, -ENOMEM. */
static int walk(const char *msg, size_t len, const struct mxf_mailhdr_cb *cb)
{
	struct mxf_mailhdr *h = malloc(sizeof(*h));
	char *sink = malloc(len + MXF_MAILHDR_FIELD_MAX + 2);
	int r = -ENOMEM;
	if (h && sink) {
		mxf_mailhdr_init(h, cb);
		mxf_mailhdr_feed(h, msg, len, sink);
		r = mxf_mailhdr_in_body(h);
		if (!r)
			mxf_mailhdr_end(h, sink);
	}
	free(h);
	free(sink);
	return r;
}

struct orig {
	char *out;
	size_t cap;
	int found; /* Message-ID fields seen */
	bool ok;
};

static bool orig_field(void *arg, const char *f, size_t len, bool whole)
{
	struct orig *o = arg;
	bool toolong;
	if (mxf_mailhdr_is(f, len, "Message-ID") && o->found++ == 0)
		o->ok = whole && msgids(f, len, o->out, o->cap, &toolong) == 1 && !toolong;
	return false;
}

int mxf_wr_msgid(const char *msg, size_t len, char *out, size_t cap)
{
	struct orig o = {out, cap, 0, false};
	struct mxf_mailhdr_cb cb = {orig_field, NULL, NULL, &o};
	int r = walk(msg, len, &cb);
	if (r < 0)
		return r;
	return o.found == 1 && o.ok ? 0 : -ENOENT;
}

struct rep {
	const char *orig;
	const char *why;
	unsigned from, to, irt, refs, auto_sub;
};

/* An RFC 5322 field name, then ':'. */
static bool field_name_ok(const char *f, size_t len)
{
	size_t i = 0;
	while (i < len && f[i] != ':' && f[i] > ' ' && f[i] < 0x7f)
		i++;
	return i > 0 && i < len && f[i] == ':';
}

static bool rep_field(void *arg, const char *f, size_t len, bool whole)
{
	struct rep *r = arg;
	char id[MXF_WR_MSGID_MAX + 1], dom[256];
	bool toolong;
	if (r->why)
		return false;
	if (!whole) {
		r->why = "a header field longer than 16 KiB";
		return false;
	}
	if (!field_name_ok(f, len)) {
		r->why = "a line of the header section is not a field";
		return false;
	}
	if (mxf_mailhdr_is(f, len, "From")) {
		if (r->from++ || mxf_mailhdr_from_domain(f, len, dom, sizeof(dom)) < 0)
			r->why = "it needs one From field with one address";
	} else if (mxf_mailhdr_is(f, len, "To")) {
		if (r->to++)
			r->why = "more than one To field";
	} else if (mxf_mailhdr_is(f, len, "In-Reply-To")) {
		if (r->irt++ || msgids(f, len, id, sizeof(id), &toolong) != 1 || toolong ||
		    strcmp(id, r->orig) != 0)
			r->why = "In-Reply-To does not name the original's Message-ID";
	} else if (mxf_mailhdr_is(f, len, "References")) {
		size_t n = msgids(f, len, NULL, 0, &toolong);
		if (r->refs++ || n == SIZE_MAX)
			r->why = "malformed References";
		else if (n > MXF_WR_MAX_REFS)
			r->why = "more than 100 References";
	} else if (mxf_mailhdr_is(f, len, "Auto-Submitted")) {
		r->auto_sub++;
	}
	return false;
}

static const char AUTO[] = "Auto-Submitted: auto-replied\r\n";

int mxf_wr_check(const char *orig_msgid, const char *reply, size_t len, char **out, char *why,
		 size_t whylen)
{
	struct rep r = {.orig = orig_msgid};
	*out = NULL;
	if (memchr(reply, '\0', len)) {
		snprintf(why, whylen, "NUL in the reply");
		return -EINVAL;
	}
	struct mxf_mailhdr_cb cb = {rep_field, NULL, NULL, &r};
	int body = walk(reply, len, &cb);
	if (body < 0)
		return body;
	if (!r.why && !body)
		r.why = "no blank line after the header section";
	if (!r.why && !r.from)
		r.why = "it needs one From field with one address";
	if (!r.why && !r.to)
		r.why = "no To field";
	if (!r.why && !r.irt)
		r.why = "In-Reply-To does not name the original's Message-ID";
	if (r.why) {
		snprintf(why, whylen, "%s", r.why);
		return -EINVAL;
	}
	size_t extra = r.auto_sub ? 0 : sizeof(AUTO) - 1;
	if (!(*out = malloc(len + extra + 1)))
		return -ENOMEM;
	memcpy(*out, AUTO, extra);
	memcpy(*out + extra, reply, len);
	(*out)[len + extra] = '\0';
	return 0;
}
