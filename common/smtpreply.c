#include "smtpreply.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Bound on the text of one reply, all lines together: a hostile server must
 * not make us buffer without limit by never ending a multi-line reply. */
#define REPLY_TEXT_MAX 65536

struct queued {
	struct queued *next;
	struct mxf_smtpreply *r;
};

struct mxf_smtpreply_parser {
	char line[MXF_SMTPREPLY_LINE_MAX + 1];
	size_t linelen;
	/* The reply in progress: code 0 when none. */
	int code;
	char **lines;
	size_t nlines;
	size_t textlen;
	struct queued *head, *tail;
	int err;
};

int mxf_smtpreply_parser_new(struct mxf_smtpreply_parser **out)
{
	struct mxf_smtpreply_parser *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	*out = p;
	return 0;
}

static void free_lines(char **lines, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}

void mxf_smtpreply_free(struct mxf_smtpreply *r)
{
	if (!r)
		return;
	free_lines(r->lines, r->nlines);
	free(r->text);
	free(r);
}

void mxf_smtpreply_parser_free(struct mxf_smtpreply_parser *p)
{
	if (!p)
		return;
	while (p->head) {
		struct queued *q = p->head;
		p->head = q->next;
		mxf_smtpreply_free(q->r);
		free(q);
	}
	free_lines(p->lines, p->nlines);
	free(p);
}

static bool isdig(char c)
{
	return c >= '0' && c <= '9';
}

size_t mxf_smtpreply_parse_esc(const char *s, char esc[16])
{
	size_t i = 0;
	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return 0;
	if (s[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t start = i;
		while (isdig(s[i]) && i - start < 4)
			i++;
		if (i == start || i - start > 3)
			return 0;
		if (part == 0) {
			if (s[i] != '.')
				return 0;
			i++;
		}
	}
	if (s[i] != '\0' && s[i] != ' ')
		return 0;
	if (esc) {
		memcpy(esc, s, i);
		esc[i] = '\0';
	}
	return i;
}

const char *mxf_smtpreply_esc(const struct mxf_smtpreply *r)
{
	if (r->esc[0])
		return r->esc;
	switch (r->code / 100) {
	case 2: return "2.0.0";
	case 4: return "4.0.0";
	default: return "5.0.0";
	}
}

/* Text of a line without a leading enhanced code of the reply's class. */
static const char *strip_esc(const char *text, int code)
{
	size_t n = mxf_smtpreply_parse_esc(text, NULL);
	if (n == 0 || text[0] - '0' != code / 100)
		return text;
	text += n;
	while (*text == ' ')
		text++;
	return text;
}

static int finish_reply(struct mxf_smtpreply_parser *p)
{
	struct mxf_smtpreply *r = calloc(1, sizeof(*r));
	struct queued *q = calloc(1, sizeof(*q));
	size_t cap = 1;

	for (size_t i = 0; i < p->nlines; i++)
		cap += strlen(p->lines[i]) + 1;
	if (!r || !q || !(r->text = malloc(cap))) {
		free(r);
		free(q);
		return -ENOMEM;
	}
	r->code = p->code;
	r->lines = p->lines;
	r->nlines = p->nlines;
	p->lines = NULL;
	p->nlines = 0;
	p->code = 0;
	p->textlen = 0;

	char esc[16];
	size_t n = mxf_smtpreply_parse_esc(r->lines[0], esc);
	if (n && esc[0] - '0' == r->code / 100)
		memcpy(r->esc, esc, n + 1);

	size_t len = 0;
	for (size_t i = 0; i < r->nlines; i++) {
		const char *t = strip_esc(r->lines[i], r->code);
		size_t tl = strlen(t);
		if (tl == 0)
			continue;
		if (len)
			r->text[len++] = ' ';
		memcpy(r->text + len, t, tl);
		len += tl;
	}
	r->text[len] = '\0';

	q->r = r;
	if (p->tail)
		p->tail->next = q;
	else
		p->head = q;
	p->tail = q;
	return 0;
}

/* One line, without its LF (and CR). */
static int parse_line(struct mxf_smtpreply_parser *p, const char *s, size_t len)
{
	if (memchr(s, '\0', len))
		return -EPROTO;
	if (len < 3 || s[0] < '2' || s[0] > '5' || !isdig(s[1]) || !isdig(s[2]))
		return -EPROTO;
	int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	bool last;
	if (len == 3)
		last = true;
	else if (s[3] == ' ')
		last = true;
	else if (s[3] == '-')
		last = false;
	else
		return -EPROTO;
	/* Every line of a multi-line reply carries the same code (§4.2.1). */
	if (p->code != 0 && p->code != code)
		return -EPROTO;
	size_t tl = len > 4 ? len - 4 : 0;
	if (p->nlines >= MXF_SMTPREPLY_LINES || p->textlen + tl > REPLY_TEXT_MAX)
		return -EPROTO;

	char *t = malloc(tl + 1);
	char **nl = realloc(p->lines, (p->nlines + 1) * sizeof(*nl));
	if (!t || !nl) {
		free(t);
		if (nl)
			p->lines = nl;
		return -ENOMEM;
	}
	if (tl)
		memcpy(t, s + 4, tl);
	t[tl] = '\0';
	p->lines = nl;
	p->lines[p->nlines++] = t;
	p->textlen += tl;
	p->code = code;
	return last ? finish_reply(p) : 0;
}

int mxf_smtpreply_feed(struct mxf_smtpreply_parser *p, const void *data, size_t len)
{
	const char *d = data;

	if (p->err)
		return p->err;
	while (len > 0) {
		const char *lf = memchr(d, '\n', len);
		size_t take = lf ? (size_t)(lf - d) : len;
		/* The line limit counts the CRLF; a longer line is an error
		 * even before its end arrives, so memory stays bounded. */
		if (p->linelen + take + (lf ? 1 : 0) > MXF_SMTPREPLY_LINE_MAX) {
			p->err = -EPROTO;
			return p->err;
		}
		memcpy(p->line + p->linelen, d, take);
		p->linelen += take;
		if (!lf)
			break;
		size_t ll = p->linelen;
		if (ll > 0 && p->line[ll - 1] == '\r')
			ll--;
		int r = parse_line(p, p->line, ll);
		p->linelen = 0;
		if (r < 0) {
			p->err = r;
			return r;
		}
		d += take + 1;
		len -= take + 1;
	}
	return 0;
}

int mxf_smtpreply_next(struct mxf_smtpreply_parser *p, struct mxf_smtpreply **out)
{
	struct queued *q = p->head;
	if (!q)
		return p->err ? p->err : 0;
	p->head = q->next;
	if (!p->head)
		p->tail = NULL;
	*out = q->r;
	free(q);
	return 1;
}

int mxf_smtpreply_partial(const struct mxf_smtpreply_parser *p)
{
	return p->linelen > 0 || p->nlines > 0;
}
