/* workerproto: a worker's decisions (JSON lines) and the header line it
 * reads. A small JSON reader of our own: only objects and strings occur in
 * the protocol, and anything else (numbers, arrays, nesting beyond the
 * headers object, duplicate keys) is refused rather than interpreted. */
#include "workerproto.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "strbuf.h"

struct dec {
	enum mxf_wp_action action;
	char *to, *reason, *headers, *raw;
};

struct mxf_wp_parser {
	struct mxf_strbuf line;
	size_t total;
	int failed;
	char err[160];
	struct dec d[MXF_WP_MAX_DECISIONS];
	struct mxf_wp_decision view[MXF_WP_MAX_DECISIONS];
	size_t n;
	bool replied; /* a reply decision was seen (at most one) */
};

struct mxf_wp_parser *mxf_wp_parser_new(void)
{
	return calloc(1, sizeof(struct mxf_wp_parser));
}

void mxf_wp_parser_free(struct mxf_wp_parser *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		free(p->d[i].to);
		free(p->d[i].reason);
		free(p->d[i].headers);
		free(p->d[i].raw);
	}
	mxf_sb_free(&p->line);
	free(p);
}

const char *mxf_wp_action_name(enum mxf_wp_action a)
{
	switch (a) {
	case MXF_WP_FORWARD: return "forward";
	case MXF_WP_REJECT: return "reject";
	case MXF_WP_DROP: return "drop";
	case MXF_WP_REPLY: return "reply";
	}
	return "?";
}

/* ---- the JSON subset ---- */
struct rd {
	const unsigned char *s, *end;
	const char *why;
};

static void ws(struct rd *r)
{
	while (r->s < r->end && (*r->s == ' ' || *r->s == '\t' || *r->s == '\r' || *r->s == '\n'))
		r->s++;
}

static bool lit(struct rd *r, char c)
{
	ws(r);
	if (r->s < r->end && *r->s == (unsigned char)c) {
		r->s++;
		return true;
	}
	return false;
}

static int hex4(const unsigned char *s, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = s[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

static void put_utf8(struct mxf_strbuf *b, unsigned cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp, n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		u[2] = (char)(0x80 | (cp >> 6 & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
	}
	mxf_sb_add(b, u, n);
}

/* Length of the valid UTF-8 sequence at s (non-ASCII lead), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
	unsigned c = s[0];
	size_t n;
	unsigned min, cp;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, min = 0x80, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, min = 0x800, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	if ((size_t)(end - s) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* A string; control characters (after unescaping) are refused: every value
 * ends up in a header, an SMTP reply or a log line. A reply's raw message
 * (msg) may carry escaped ones but NUL: it is a message, never a field. */
static bool str_any(struct rd *r, struct mxf_strbuf *b, size_t max, bool msg)
{
	if (!lit(r, '"')) {
		r->why = "expected a string";
		return false;
	}
	while (r->s < r->end && *r->s != '"') {
		unsigned c = *r->s;
		if (c == '\\') {
			if (r->end - r->s < 2)
				goto bad;
			unsigned e = r->s[1];
			r->s += 2;
			switch (e) {
			case '"': mxf_sb_add(b, "\"", 1); break;
			case '\\': mxf_sb_add(b, "\\", 1); break;
			case '/': mxf_sb_add(b, "/", 1); break;
			case 't': mxf_sb_add(b, "\t", 1); break;
			case 'b': case 'f': case 'n': case 'r':
				if (!msg) {
					r->why = "control character in a string";
					return false;
				}
				mxf_sb_add(b, e == 'b' ? "\b" : e == 'f' ? "\f" : e == 'n' ? "\n" : "\r", 1);
				break;
			case 'u': {
				unsigned cp, lo;
				if (r->end - r->s < 4 || hex4(r->s, &cp) < 0)
					goto bad;
				r->s += 4;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (r->end - r->s < 6 || r->s[0] != '\\' || r->s[1] != 'u' ||
					    hex4(r->s + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
						goto bad;
					r->s += 6;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					goto bad;
				}
				if (msg ? cp == 0 : (cp < 0x20 && cp != '\t') || cp == 0x7f) {
					r->why = msg ? "NUL in a reply" : "control character in a string";
					return false;
				}
				put_utf8(b, cp);
				break;
			}
			default: goto bad;
			}
		} else if (c < 0x20 || c == 0x7f) {
			if (c != '\t') {
				r->why = "control character in a string";
				return false;
			}
			mxf_sb_add(b, r->s++, 1);
		} else if (c < 0x80) {
			mxf_sb_add(b, r->s++, 1);
		} else {
			size_t n = utf8_len(r->s, r->end);
			if (!n) {
				r->why = "invalid UTF-8";
				return false;
			}
			mxf_sb_add(b, r->s, n);
			r->s += n;
		}
		if (b->len > max) {
			r->why = "string too long";
			return false;
		}
	}
	if (r->s >= r->end)
		goto bad;
	r->s++;
	if (b->err) {
		r->why = "out of memory";
		return false;
	}
	if (!b->p)
		mxf_sb_add(b, "", 0);
	return !b->err;
bad:
	r->why = "bad string";
	return false;
}

static bool str(struct rd *r, struct mxf_strbuf *b, size_t max)
{
	return str_any(r, b, max, false);
}

/* A reply's line ends made CRLF (a lone LF or CR is one line end), and a
 * final CRLF: what goes into the spool is never ambiguous to a reader. */
static bool crlf(const struct mxf_strbuf *in, struct mxf_strbuf *out, const char **why)
{
	const char *s = in->p ? in->p : "";
	for (size_t i = 0; i < in->len; i++) {
		if (s[i] == '\r' || s[i] == '\n') {
			mxf_sb_add(out, "\r\n", 2);
			if (s[i] == '\r' && i + 1 < in->len && s[i + 1] == '\n')
				i++;
		} else {
			mxf_sb_add(out, &s[i], 1);
		}
		if (out->len > MXF_WP_MAX_REPLY) {
			*why = "reply longer than 32 KiB";
			return false;
		}
	}
	if (out->len < 2 || memcmp(out->p + out->len - 2, "\r\n", 2) != 0)
		mxf_sb_add(out, "\r\n", 2);
	if (out->len > MXF_WP_MAX_REPLY) {
		*why = "reply longer than 32 KiB";
		return false;
	}
	if (out->err)
		*why = "out of memory";
	return !out->err;
}

/* RFC 5322 field name starting with "X-". */
static bool xname_ok(const char *n)
{
	size_t len = strlen(n);
	if (len < 3 || len > 76 || strncasecmp(n, "X-", 2) != 0)
		return false;
	for (const char *c = n; *c; c++)
		if (*c < 0x21 || *c > 0x7e || *c == ':')
			return false;
	return true;
}

static bool hvalue_ok(const char *v)
{
	if (strlen(v) > 900)
		return false;
	for (const unsigned char *c = (const unsigned char *)v; *c; c++)
		if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
			return false;
	return true;
}

/* The "headers" object, rendered as a header block. */
static bool headers_obj(struct rd *r, struct mxf_strbuf *block)
{
	size_t n = 0;
	if (!lit(r, '{')) {
		r->why = "headers must be an object";
		return false;
	}
	if (lit(r, '}'))
		return true;
	do {
		struct mxf_strbuf k = {0}, v = {0};
		bool ok = str(r, &k, 80) && lit(r, ':') && str(r, &v, 900);
		if (ok && !xname_ok(k.p)) {
			r->why = "only X- headers may be added";
			ok = false;
		} else if (ok && !hvalue_ok(v.p)) {
			r->why = "bad header value";
			ok = false;
		} else if (ok && ++n > MXF_WP_MAX_HEADERS) {
			r->why = "too many headers";
			ok = false;
		} else if (!ok && !r->why) {
			r->why = "bad headers object";
		}
		if (ok)
			mxf_sb_printf(block, "%s: %s\r\n", k.p, v.p);
		mxf_sb_free(&k);
		mxf_sb_free(&v);
		if (!ok)
			return false;
	} while (lit(r, ','));
	if (!lit(r, '}')) {
		r->why = "bad headers object";
		return false;
	}
	return true;
}

static bool reason_ok(const char *s)
{
	size_t len = strlen(s);
	if (len == 0 || len > MXF_WP_MAX_REASON)
		return false;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return false;
	return true;
}

static bool addr_ok(const char *s)
{
	size_t len = strlen(s);
	if (len < 3 || len > MXF_WP_MAX_ADDR || !strchr(s, '@'))
		return false;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (*c <= 0x20 || *c == 0x7f || *c == '<' || *c == '>')
			return false;
	return true;
}

static int parse_line(struct mxf_wp_parser *p, const unsigned char *s, size_t len)
{
	struct rd r = {s, s + len, NULL};
	struct mxf_strbuf action = {0}, to = {0}, reason = {0}, hdr = {0}, raw = {0}, rawn = {0};
	bool have_hdr = false, ok;

	ws(&r);
	if (r.s == r.end)
		return 0; /* blank line */
	if (p->n >= MXF_WP_MAX_DECISIONS) {
		snprintf(p->err, sizeof(p->err), "more than %d decisions", MXF_WP_MAX_DECISIONS);
		return -EBADMSG;
	}
	ok = lit(&r, '{');
	if (!ok)
		r.why = "a decision must be a JSON object";
	if (ok && !lit(&r, '}')) {
		do {
			struct mxf_strbuf k = {0};
			ok = str(&r, &k, 16) && lit(&r, ':');
			if (ok) {
				struct mxf_strbuf *dst = NULL;
				if (!strcmp(k.p, "action"))
					dst = &action;
				else if (!strcmp(k.p, "to"))
					dst = &to;
				else if (!strcmp(k.p, "reason"))
					dst = &reason;
				else if (!strcmp(k.p, "raw"))
					dst = &raw;
				if (dst && dst->p) {
					r.why = "duplicate key";
					ok = false;
				} else if (dst == &raw) {
					/* Bounded before normalisation too: a lone LF
					 * grows by one octet at most. */
					ok = str_any(&r, dst, MXF_WP_MAX_REPLY, true);
				} else if (dst) {
					ok = str(&r, dst, dst == &reason ? 4 * MXF_WP_MAX_REASON
									 : MXF_WP_MAX_ADDR);
				} else if (!strcmp(k.p, "headers") && !have_hdr) {
					have_hdr = true;
					ok = headers_obj(&r, &hdr);
				} else {
					r.why = "unknown or duplicate key";
					ok = false;
				}
			}
			mxf_sb_free(&k);
		} while (ok && lit(&r, ','));
		if (ok && !lit(&r, '}')) {
			r.why = "bad object";
			ok = false;
		}
	}
	ws(&r);
	if (ok && r.s != r.end) {
		r.why = "trailing characters";
		ok = false;
	}
	struct dec d = {0};
	if (ok && !action.p) {
		r.why = "no action";
		ok = false;
	} else if (ok && !strcmp(action.p, "forward")) {
		d.action = MXF_WP_FORWARD;
		if (!to.p || !addr_ok(to.p) || reason.p || raw.p) {
			r.why = "forward needs a valid \"to\" (and no reason)";
			ok = false;
		}
	} else if (ok && !strcmp(action.p, "reject")) {
		d.action = MXF_WP_REJECT;
		if (!reason.p || !reason_ok(reason.p) || to.p || have_hdr || raw.p) {
			r.why = "reject needs a printable \"reason\" of 1..200 characters only";
			ok = false;
		}
	} else if (ok && !strcmp(action.p, "drop")) {
		d.action = MXF_WP_DROP;
		if (to.p || reason.p || have_hdr || raw.p) {
			r.why = "drop takes no argument";
			ok = false;
		}
	} else if (ok && !strcmp(action.p, "reply")) {
		d.action = MXF_WP_REPLY;
		if (!raw.p || to.p || reason.p || have_hdr) {
			r.why = "reply needs \"raw\" (and nothing else)";
			ok = false;
		} else if (p->replied) {
			/* The hosted runtime's loop guard: one reply per message. */
			r.why = "more than one reply";
			ok = false;
		} else {
			ok = crlf(&raw, &rawn, &r.why);
		}
	} else if (ok) {
		r.why = "unknown action (forward, reject, drop or reply)";
		ok = false;
	}
	if (ok) {
		d.to = strdup(to.p ? to.p : "");
		d.reason = strdup(reason.p ? reason.p : "");
		d.headers = strdup(hdr.p ? hdr.p : "");
		d.raw = strdup(rawn.p ? rawn.p : "");
		if (!d.to || !d.reason || !d.headers || !d.raw || hdr.err) {
			free(d.to);
			free(d.reason);
			free(d.headers);
			free(d.raw);
			r.why = "out of memory";
			ok = false;
		}
	}
	mxf_sb_free(&action);
	mxf_sb_free(&to);
	mxf_sb_free(&reason);
	mxf_sb_free(&hdr);
	mxf_sb_free(&raw);
	mxf_sb_free(&rawn);
	if (!ok) {
		snprintf(p->err, sizeof(p->err), "decision %zu: %s", p->n + 1,
			 r.why ? r.why : "malformed");
		return -EBADMSG;
	}
	p->d[p->n] = d;
	p->view[p->n] = (struct mxf_wp_decision){d.action, d.to, d.reason, d.headers, d.raw};
	p->replied |= d.action == MXF_WP_REPLY;
	p->n++;
	return 0;
}

int mxf_wp_feed(struct mxf_wp_parser *p, const void *buf, size_t len)
{
	if (p->failed)
		return p->failed;
	const unsigned char *s = buf;
	if (len > MXF_WP_MAX_OUTPUT - p->total) {
		snprintf(p->err, sizeof(p->err), "more than %d bytes of output", MXF_WP_MAX_OUTPUT);
		return p->failed = -E2BIG;
	}
	p->total += len;
	while (len) {
		const unsigned char *nl = memchr(s, '\n', len);
		size_t n = nl ? (size_t)(nl - s) : len;
		mxf_sb_add(&p->line, s, n);
		if (p->line.err) {
			snprintf(p->err, sizeof(p->err), "out of memory");
			return p->failed = -ENOMEM;
		}
		if (!nl)
			break;
		int r = parse_line(p, (const unsigned char *)(p->line.p ? p->line.p : ""),
				   p->line.len);
		p->line.len = 0;
		if (r < 0)
			return p->failed = r;
		s += n + 1;
		len -= n + 1;
	}
	return 0;
}

int mxf_wp_finish(struct mxf_wp_parser *p)
{
	if (p->failed)
		return p->failed;
	if (p->line.len) {
		int r = parse_line(p, (const unsigned char *)p->line.p, p->line.len);
		p->line.len = 0;
		if (r < 0)
			return p->failed = r;
	}
	return 0;
}

size_t mxf_wp_count(const struct mxf_wp_parser *p)
{
	return p->n;
}

const struct mxf_wp_decision *mxf_wp_get(const struct mxf_wp_parser *p, size_t i)
{
	return i < p->n ? &p->view[i] : NULL;
}

const char *mxf_wp_error(const struct mxf_wp_parser *p)
{
	return p->err[0] ? p->err : "no error";
}

/* ---- the header line ---- */
/* A JSON string of the C string s (NULL as ""). */
static void json_str(struct mxf_strbuf *b, const char *s)
{
	s = s ? s : "";
	mxf_sb_json_str(b, s, strlen(s));
}

char *mxf_wp_header_line(const struct mxf_wp_envelope *e)
{
	struct mxf_strbuf b = {0};
	mxf_sb_str(&b, "{\"from\":");
	json_str(&b, e->from);
	mxf_sb_str(&b, ",\"to\":");
	json_str(&b, e->to);
	mxf_sb_str(&b, ",\"client_ip\":");
	json_str(&b, e->client_ip);
	mxf_sb_str(&b, ",\"helo\":");
	json_str(&b, e->helo);
	mxf_sb_str(&b, ",\"queue_id\":");
	json_str(&b, e->queue_id);
	mxf_sb_printf(&b, ",\"size\":%llu}", (unsigned long long)e->size);
	if (b.err) {
		mxf_sb_free(&b);
		return NULL;
	}
	return b.p;
}

int mxf_wp_check_headers(const char *block)
{
	size_t n = 0;
	while (*block) {
		const char *eol = strstr(block, "\r\n");
		const char *colon = strchr(block, ':');
		if (!eol || !colon || colon > eol || colon[1] != ' ' || ++n > MXF_WP_MAX_HEADERS)
			return -EINVAL;
		char name[80], value[904];
		size_t nl = (size_t)(colon - block), vl = (size_t)(eol - colon - 2);
		if (nl >= sizeof(name) || vl >= sizeof(value))
			return -EINVAL;
		memcpy(name, block, nl);
		name[nl] = '\0';
		memcpy(value, colon + 2, vl);
		value[vl] = '\0';
		if (!xname_ok(name) || !hvalue_ok(value))
			return -EINVAL;
		block = eol + 2;
	}
	return 0;
}
