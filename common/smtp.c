#include "smtp.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- line splitter ---------------------------------------------------- */

void mxf_smtp_lines_init(struct mxf_smtp_lines *ls)
{
	ls->len = 0;
	ls->skipping = false;
	ls->buf[0] = '\0';
}

enum mxf_smtp_line_result mxf_smtp_lines_next(struct mxf_smtp_lines *ls, const char **in,
					      size_t *inlen, const char **line, size_t *linelen)
{
	const char *p = *in;
	size_t n = *inlen;

	while (n > 0) {
		char c = *p++;
		n--;
		if (c == '\n') {
			*in = p;
			*inlen = n;
			/* ls->len + 1 octets including the terminator. */
			if (ls->skipping || ls->len + 1 > MXF_SMTP_LINE_MAX) {
				ls->skipping = false;
				ls->len = 0;
				return MXF_SMTP_LINE_TOO_LONG;
			}
			bool crlf = ls->len > 0 && ls->buf[ls->len - 1] == '\r';
			size_t l = crlf ? ls->len - 1 : ls->len;
			ls->buf[l] = '\0';
			*line = ls->buf;
			*linelen = l;
			ls->len = 0;
			return crlf ? MXF_SMTP_LINE_OK : MXF_SMTP_LINE_BARE_LF;
		}
		if (ls->skipping)
			continue;
		/* A full buffer and no LF yet: the line can no longer fit. Skip
		 * to its end and report it there, so replies stay in order. */
		if (ls->len == MXF_SMTP_LINE_MAX) {
			ls->skipping = true;
			continue;
		}
		ls->buf[ls->len++] = c;
	}
	*in = p;
	*inlen = 0;
	return MXF_SMTP_LINE_MORE;
}

/* ---- replies ---------------------------------------------------------- */

int mxf_smtp_reply_line(char *buf, size_t cap, int code, bool more, const char *esc,
			const char *text)
{
	char tmp[MXF_SMTP_LINE_MAX + 1];
	size_t o;

	if (code < 100 || code > 599)
		return -EINVAL;
	o = (size_t)snprintf(tmp, sizeof(tmp), "%03d%c", code, more ? '-' : ' ');
	const char *parts[2] = {esc && *esc ? esc : NULL, text ? text : ""};
	for (int k = 0; k < 2; k++) {
		if (!parts[k])
			continue;
		for (const char *s = parts[k]; *s && o < MXF_SMTP_LINE_MAX - 2; s++) {
			unsigned char c = (unsigned char)*s;
			tmp[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
		}
		if (k == 0 && o < MXF_SMTP_LINE_MAX - 2)
			tmp[o++] = ' ';
	}
	tmp[o++] = '\r';
	tmp[o++] = '\n';
	if (o + 1 > cap)
		return -ENOSPC;
	memcpy(buf, tmp, o);
	buf[o] = '\0';
	return (int)o;
}

static bool digits(const char **p, int min, int max)
{
	int n = 0;
	while (isdigit((unsigned char)**p) && n < max + 1) {
		(*p)++;
		n++;
	}
	return n >= min && n <= max;
}

bool mxf_smtp_reply_valid(long long code, const char *esc)
{
	if (code < 200 || code > 599 || !esc)
		return false;
	int cls = (int)(code / 100);
	if (cls == 3 || esc[0] != '0' + cls || esc[1] != '.')
		return false;
	const char *p = esc + 2;
	if (!digits(&p, 1, 3) || *p++ != '.' || !digits(&p, 1, 3))
		return false;
	return *p == '\0';
}

/* ---- command parser --------------------------------------------------- */

static const char *const verb_names[MXF_SMTP_NVERBS] = {
	"UNKNOWN", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET",
	"NOOP",    "QUIT", "VRFY", "HELP", "STARTTLS", "BDAT",
};

const char *mxf_smtp_verb_name(enum mxf_smtp_verb v)
{
	return (unsigned)v < MXF_SMTP_NVERBS ? verb_names[v] : "UNKNOWN";
}

static int fail(struct mxf_smtp_cmd *cmd, int code, const char *esc, const char *text)
{
	cmd->err.code = code;
	cmd->err.esc = esc;
	cmd->err.text = text;
	return -EINVAL;
}

/* 8-bit bytes reach the path scanners only as well-formed UTF-8 (checked
 * for the whole line first): RFC 6531 adds UTF8-non-ascii to atext, qtext
 * and sub-domains (U-labels). */
static bool is_atext(unsigned char c)
{
	return isalnum(c) || c >= 0x80 || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* qtextSMTP: %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii */
static bool is_qtext(unsigned char c)
{
	return c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126) || c >= 0x80;
}

static bool is_ldh8(unsigned char c)
{
	return isalnum(c) || c >= 0x80;
}

/* Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing
 * past U+10FFFF, and no C1 controls (U+0080..U+009F). */
static bool utf8_valid(const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint32_t cp;
		if (c >= 0xc2 && c <= 0xdf)
			len = 2, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4, cp = c & 0x07;
		else
			return false;
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp < 0xa0)
			return false;
		i += len;
	}
	return true;
}

/* dcontent: %d33-90 / %d94-126 */
static bool is_dcontent(unsigned char c)
{
	return (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
}

/* address-literal "[" ... "]" at p; returns the end or NULL (4.1.3). */
static const char *scan_literal(const char *p)
{
	char inner[MXF_SMTP_LINE_MAX];
	const char *s = ++p;
	while (is_dcontent((unsigned char)*p))
		p++;
	if (*p != ']' || p == s || (size_t)(p - s) >= sizeof(inner))
		return NULL;
	memcpy(inner, s, (size_t)(p - s));
	inner[p - s] = '\0';
	unsigned char bin[16];
	if (strncasecmp(inner, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, inner + 5, bin) != 1)
			return NULL;
	} else if (isdigit((unsigned char)inner[0])) {
		if (inet_pton(AF_INET, inner, bin) != 1)
			return NULL;
	} else {
		/* General-address-literal: Standardized-tag ":" 1*dcontent,
		 * the tag an Ldh-str. */
		const char *colon = strchr(inner, ':');
		if (!colon || colon == inner || colon[1] == '\0' || colon[-1] == '-')
			return NULL;
		for (const char *t = inner; t < colon; t++)
			if (!isalnum((unsigned char)*t) && *t != '-')
				return NULL;
	}
	return p + 1;
}

/* Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str],
 * or an address literal. Returns the end or NULL. Label lengths are left to
 * mxf_domain_to_ascii; the total is checked by the caller. */
static const char *scan_domain(const char *p)
{
	if (*p == '[')
		return scan_literal(p);
	for (;;) {
		if (!is_ldh8((unsigned char)*p))
			return NULL;
		while (is_ldh8((unsigned char)*p) || *p == '-')
			p++;
		if (p[-1] == '-')
			return NULL;
		if (*p != '.')
			return p;
		p++;
	}
}

/* EHLO/HELO argument: an address literal, or a host name. Names are checked
 * loosely (LDH plus '_', which real clients send); at most 255 octets. */
static bool valid_helo(const char *a)
{
	size_t len = strlen(a);
	if (len == 0 || len > MXF_DOMAIN_MAX)
		return false;
	if (a[0] == '[') {
		const char *e = scan_literal(a);
		return e && *e == '\0';
	}
	bool label_start = true;
	for (const char *p = a; *p; p++) {
		if (*p == '.') {
			if (label_start)
				return false;
			label_start = true;
		} else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
			label_start = false;
		} else {
			return false;
		}
	}
	return !label_start;
}

/* Path = "<" [ A-d-l ":" ] Mailbox ">", Reverse-path also "<>" (4.1.2). */
static int parse_path(const char *p, bool is_mail, struct mxf_smtp_cmd *cmd, const char **end)
{
	const char *esc = is_mail ? "5.1.7" : "5.1.3";
	const char *bad = is_mail ? "Bad sender address syntax" : "Bad recipient address syntax";
	const char *start = p++;

	if (*p == '>') {
		if (!is_mail)
			return fail(cmd, 501, esc, bad);
		cmd->null_path = true;
		*end = p + 1;
		return 0;
	}
	if (*p == '@') {
		/* Source route: obsolete, accepted and ignored (4.1.1.3, C). */
		for (;;) {
			if (*p != '@')
				return fail(cmd, 501, esc, bad);
			p = scan_domain(p + 1);
			if (!p)
				return fail(cmd, 501, esc, bad);
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p != ':')
				return fail(cmd, 501, esc, bad);
			p++;
			break;
		}
	}
	const char *mb = p;
	if (*p == '"') {
		for (p++; *p != '"'; p++) {
			if (*p == '\\') {
				p++;
				if ((unsigned char)*p < 32 || (unsigned char)*p > 126)
					return fail(cmd, 501, esc, bad);
			} else if (!is_qtext((unsigned char)*p)) {
				return fail(cmd, 501, esc, bad);
			}
		}
		p++;
	} else {
		for (;;) {
			if (!is_atext((unsigned char)*p))
				return fail(cmd, 501, esc, bad);
			while (is_atext((unsigned char)*p))
				p++;
			if (*p != '.')
				break;
			p++;
		}
	}
	size_t local_len = (size_t)(p - mb);
	if (!is_mail && *p == '>' && mb == start + 1 && local_len == 10 &&
	    strncasecmp(mb, "postmaster", 10) == 0) {
		/* RCPT TO:<Postmaster> without a domain (4.5.1). */
		cmd->postmaster = true;
		strcpy(cmd->path, "postmaster");
		*end = p + 1;
		return 0;
	}
	if (local_len > MXF_LOCAL_MAX)
		return fail(cmd, 501, esc, "Local part too long");
	if (*p != '@')
		return fail(cmd, 501, esc, bad);
	const char *dom = ++p;
	p = scan_domain(p);
	if (!p)
		return fail(cmd, 501, esc, bad);
	if ((size_t)(p - dom) > MXF_DOMAIN_MAX)
		return fail(cmd, 501, esc, "Domain too long");
	if (*p != '>')
		return fail(cmd, 501, esc, bad);
	p++;
	if ((size_t)(p - start) > MXF_PATH_MAX)
		return fail(cmd, 501, esc, "Path too long");
	size_t mlen = (size_t)(p - 1 - mb); /* <= MXF_PATH_MAX - 2 */
	memcpy(cmd->path, mb, mlen);
	cmd->path[mlen] = '\0';
	for (const char *q = start; q < p; q++)
		cmd->utf8_path |= (unsigned char)*q >= 0x80;
	*end = p;
	return 0;
}

/* xtext (RFC 3461 4): xchar (33..126 but '+' and '=') or "+" 2HEXDIG with
 * upper-case hex. */
static bool xtext_valid(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '+') {
			if (n - i < 3 || !strchr("0123456789ABCDEF", v[i + 1]) || !v[i + 1] ||
			    !strchr("0123456789ABCDEF", v[i + 2]) || !v[i + 2])
				return false;
			i += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return false;
		}
	}
	return true;
}

int mxf_xtext_encode(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool plain = *p >= 33 && *p <= 126 && *p != '+' && *p != '=';
		if (o + (plain ? 1 : 3) + 1 > cap)
			return -ENOSPC;
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '+';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	if (o + 1 > cap)
		return -ENOSPC;
	out[o] = '\0';
	return (int)o;
}

static bool kw_is(const char *kw, size_t n, const char *name)
{
	return n == strlen(name) && strncasecmp(kw, name, n) == 0;
}

/* NOTIFY="NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY"), case-insensitive;
 * written back in a canonical order. */
static bool parse_notify(const char *v, size_t n, char *out, size_t cap)
{
	static const char *const names[] = {"SUCCESS", "FAILURE", "DELAY"};
	unsigned seen = 0;
	bool never = false;
	size_t i = 0;
	while (i <= n) {
		size_t j = i;
		while (j < n && v[j] != ',')
			j++;
		bool ok = false;
		if (kw_is(v + i, j - i, "NEVER") && !never && !seen) {
			never = ok = true;
		} else {
			for (unsigned k = 0; k < 3 && !never; k++) {
				if (kw_is(v + i, j - i, names[k]) && !(seen & (1u << k))) {
					seen |= 1u << k;
					ok = true;
				}
			}
		}
		if (!ok)
			return false;
		i = j + 1;
	}
	out[0] = '\0';
	if (never) {
		snprintf(out, cap, "NEVER");
		return true;
	}
	for (unsigned k = 0; k < 3; k++) {
		if (!(seen & (1u << k)))
			continue;
		if (out[0])
			strncat(out, ",", cap - strlen(out) - 1);
		strncat(out, names[k], cap - strlen(out) - 1);
	}
	return true;
}

/* ORCPT=addr-type ";" xtext (RFC 3461 4.2); utf-8 addresses (RFC 6533) may
 * carry UTF-8, which the line check already found well-formed. */
static bool parse_orcpt(const char *v, size_t n, char *out, size_t cap)
{
	const char *semi = memchr(v, ';', n);
	if (!semi || semi == v || n > MXF_SMTP_ORCPT_MAX || n + 1 > cap)
		return false;
	size_t tl = (size_t)(semi - v), xl = n - tl - 1;
	for (size_t i = 0; i < tl; i++)
		if (!is_atext((unsigned char)v[i]) || (unsigned char)v[i] >= 0x80)
			return false;
	if (xl == 0)
		return false;
	if (kw_is(v, tl, "utf-8")) {
		for (size_t i = tl + 1; i < n; i++)
			if (v[i] == '=' || (unsigned char)v[i] < 33 || v[i] == 127)
				return false;
	} else if (!xtext_valid(semi + 1, xl)) {
		return false;
	}
	for (size_t i = 0; i < tl; i++)
		out[i] = (char)tolower((unsigned char)v[i]);
	memcpy(out + tl, semi, xl + 1);
	out[n] = '\0';
	return true;
}

/* ESMTP parameters after the path: *( SP esmtp-keyword ["=" esmtp-value] ). */
static int parse_params(const char *p, bool is_mail, struct mxf_smtp_cmd *cmd)
{
	const char *syntax = is_mail ? "Syntax: MAIL FROM:<address> [parameters]"
				     : "Syntax: RCPT TO:<address> [parameters]";
	bool seen_body = false, seen_notify = false;

	while (*p) {
		if (*p != ' ')
			return fail(cmd, 501, "5.5.4", syntax);
		while (*p == ' ')
			p++;
		const char *kw = p;
		if (!isalnum((unsigned char)*p))
			return fail(cmd, 501, "5.5.4", syntax);
		while (isalnum((unsigned char)*p) || *p == '-')
			p++;
		size_t kwlen = (size_t)(p - kw);
		const char *val = NULL;
		size_t vlen = 0;
		if (*p == '=') {
			val = ++p;
			/* esmtp-value: %d33-60 / %d62-126 / UTF8-non-ascii */
			while (((unsigned char)*p >= 33 && (unsigned char)*p <= 126 && *p != '=') ||
			       (unsigned char)*p >= 0x80)
				p++;
			vlen = (size_t)(p - val);
			if (vlen == 0)
				return fail(cmd, 501, "5.5.4", syntax);
		}
		if (*p && *p != ' ')
			return fail(cmd, 501, "5.5.4", syntax);
		if (!is_mail) {
			if (kw_is(kw, kwlen, "NOTIFY")) {
				if (seen_notify || !val ||
				    !parse_notify(val, vlen, cmd->notify, sizeof(cmd->notify)))
					return fail(cmd, 501, "5.5.4", "Bad NOTIFY parameter");
				seen_notify = true;
			} else if (kw_is(kw, kwlen, "ORCPT")) {
				if (cmd->orcpt[0] || !val ||
				    !parse_orcpt(val, vlen, cmd->orcpt, sizeof(cmd->orcpt)))
					return fail(cmd, 501, "5.5.4", "Bad ORCPT parameter");
			} else {
				return fail(cmd, 555, "5.5.4", "Unsupported parameter");
			}
			continue;
		}
		for (size_t i = 0; val && i < vlen; i++)
			if ((unsigned char)val[i] >= 0x80)
				return fail(cmd, 501, "5.5.4", syntax);
		if (kw_is(kw, kwlen, "SIZE")) {
			if (cmd->has_size || !val || vlen > 20)
				return fail(cmd, 501, "5.5.4", "Bad SIZE parameter");
			uint64_t n = 0;
			for (size_t i = 0; i < vlen; i++) {
				if (!isdigit((unsigned char)val[i]))
					return fail(cmd, 501, "5.5.4", "Bad SIZE parameter");
				unsigned d = (unsigned)(val[i] - '0');
				n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;
			}
			cmd->has_size = true;
			cmd->size = n;
		} else if (kw_is(kw, kwlen, "BODY")) {
			if (seen_body || !val)
				return fail(cmd, 501, "5.5.4", "Bad BODY parameter");
			seen_body = true;
			if (vlen == 4 && strncasecmp(val, "7BIT", 4) == 0)
				cmd->body = MXF_SMTP_BODY_7BIT;
			else if (vlen == 8 && strncasecmp(val, "8BITMIME", 8) == 0)
				cmd->body = MXF_SMTP_BODY_8BITMIME;
			else
				return fail(cmd, 555, "5.5.4", "Unsupported BODY type");
		} else if (kw_is(kw, kwlen, "SMTPUTF8")) {
			if (cmd->smtputf8 || val)
				return fail(cmd, 501, "5.5.4", "Bad SMTPUTF8 parameter");
			cmd->smtputf8 = true;
		} else if (kw_is(kw, kwlen, "RET")) {
			if (cmd->ret[0] || !val)
				return fail(cmd, 501, "5.5.4", "Bad RET parameter");
			if (kw_is(val, vlen, "FULL"))
				strcpy(cmd->ret, "FULL");
			else if (kw_is(val, vlen, "HDRS"))
				strcpy(cmd->ret, "HDRS");
			else
				return fail(cmd, 501, "5.5.4", "Bad RET parameter");
		} else if (kw_is(kw, kwlen, "ENVID")) {
			if (cmd->envid[0] || !val || vlen > MXF_SMTP_ENVID_MAX ||
			    !xtext_valid(val, vlen))
				return fail(cmd, 501, "5.5.4", "Bad ENVID parameter");
			memcpy(cmd->envid, val, vlen);
			cmd->envid[vlen] = '\0';
		} else {
			return fail(cmd, 555, "5.5.4", "Unsupported parameter");
		}
	}
	return 0;
}

static int parse_mailrcpt(const char *arg, bool is_mail, struct mxf_smtp_cmd *cmd)
{
	const char *kw = is_mail ? "FROM:" : "TO:";
	size_t kwlen = strlen(kw);
	const char *syntax = is_mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>";
	const char *end;

	if (!arg || strncasecmp(arg, kw, kwlen) != 0)
		return fail(cmd, 501, "5.5.4", syntax);
	const char *p = arg + kwlen;
	if (*p == ' ') /* tolerated, as Postfix does */
		p++;
	if (*p != '<')
		return fail(cmd, 501, "5.5.4", syntax);
	if (parse_path(p, is_mail, cmd, &end) < 0)
		return -EINVAL;
	return parse_params(end, is_mail, cmd);
}

int mxf_smtp_parse_cmd(const char *line, size_t len, struct mxf_smtp_cmd *cmd)
{
	char l[MXF_SMTP_LINE_MAX + 1];

	memset(cmd, 0, sizeof(*cmd));
	/* The verb: the first word, matched whole. */
	size_t vl = 0;
	while (vl < len && line[vl] != ' ')
		vl++;
	for (int v = 1; v < MXF_SMTP_NVERBS; v++)
		if (vl == strlen(verb_names[v]) && strncasecmp(line, verb_names[v], vl) == 0)
			cmd->verb = (enum mxf_smtp_verb)v;
	if (len > MXF_SMTP_LINE_MAX - 2)
		return fail(cmd, 500, "5.5.2", "Error: line too long");
	/* Commands are ASCII without controls that could smuggle a second
	 * line: no NUL, no CR or LF left inside; 8-bit only as UTF-8 in MAIL
	 * and RCPT (SMTPUTF8, whose use the session checks). */
	bool eight = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c == 0 || c == '\r' || c == '\n')
			return fail(cmd, 500, "5.5.2", "Error: invalid character in command");
		eight |= c >= 0x80;
	}
	if (eight && ((cmd->verb != MXF_SMTP_MAIL && cmd->verb != MXF_SMTP_RCPT) ||
		      !utf8_valid((const unsigned char *)line, len)))
		return fail(cmd, 500, "5.5.2", "Error: invalid character in command");
	while (len > 0 && line[len - 1] == ' ')
		len--;
	memcpy(l, line, len);
	l[len] = '\0';
	if (cmd->verb == MXF_SMTP_UNKNOWN)
		return fail(cmd, 500, "5.5.2", "Error: command not recognized");
	const char *arg = len > vl ? l + vl + 1 : NULL;

	switch (cmd->verb) {
	case MXF_SMTP_EHLO:
	case MXF_SMTP_HELO:
		if (!arg || !valid_helo(arg))
			return fail(cmd, 501, "5.5.4",
				    cmd->verb == MXF_SMTP_EHLO ? "Syntax: EHLO hostname"
							       : "Syntax: HELO hostname");
		strcpy(cmd->arg, arg);
		return 0;
	case MXF_SMTP_MAIL:
		return parse_mailrcpt(arg, true, cmd);
	case MXF_SMTP_RCPT:
		return parse_mailrcpt(arg, false, cmd);
	case MXF_SMTP_DATA:
	case MXF_SMTP_RSET:
	case MXF_SMTP_QUIT:
	case MXF_SMTP_STARTTLS:
		if (arg)
			return fail(cmd, 501, "5.5.4",
				    cmd->verb == MXF_SMTP_DATA   ? "Syntax: DATA"
				    : cmd->verb == MXF_SMTP_RSET ? "Syntax: RSET"
				    : cmd->verb == MXF_SMTP_QUIT ? "Syntax: QUIT"
								 : "Syntax: STARTTLS");
		return 0;
	case MXF_SMTP_BDAT: {
		/* "BDAT" SP chunk-size [SP "LAST"], chunk-size 1*DIGIT. */
		const char *p = arg;
		uint64_t n = 0;
		size_t nd = 0;
		while (p && isdigit((unsigned char)*p)) {
			unsigned d = (unsigned)(*p++ - '0');
			n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;
			nd++;
		}
		if (!p || nd == 0 || nd > 20 || n == UINT64_MAX)
			return fail(cmd, 501, "5.5.4", "Syntax: BDAT chunk-size [LAST]");
		cmd->bdat_size = n;
		if (*p == ' ' && strcasecmp(p + 1, "LAST") == 0)
			cmd->bdat_last = true;
		else if (*p)
			return fail(cmd, 501, "5.5.4", "Syntax: BDAT chunk-size [LAST]");
		return 0;
	}
	case MXF_SMTP_VRFY:
		if (!arg)
			return fail(cmd, 501, "5.5.4", "Syntax: VRFY address");
		strcpy(cmd->arg, arg);
		return 0;
	case MXF_SMTP_NOOP:
	case MXF_SMTP_HELP:
		if (arg)
			strcpy(cmd->arg, arg);
		return 0;
	default:
		return fail(cmd, 500, "5.5.2", "Error: command not recognized");
	}
}

/* ---- DATA decoder ----------------------------------------------------- */

enum { D_BOL = 0, D_TEXT, D_CR, D_DOT, D_DOT_CR, D_DONE };

void mxf_smtp_data_init(struct mxf_smtp_data *d)
{
	memset(d, 0, sizeof(*d));
	d->state = D_BOL;
}

size_t mxf_smtp_data_feed(struct mxf_smtp_data *d, const char *in, size_t inlen, char *out,
			  size_t outcap, size_t *outlen)
{
	size_t i = 0, o = 0;

	/* D_DOT_CR holds back one CR, which may come out with the next byte. */
	while (i < inlen && d->state != D_DONE && o + (d->state == D_DOT_CR ? 2 : 1) <= outcap) {
		/* Inside a line, up to its CR: copied as a block (memchr and
		 * memcpy instead of the byte loop; the bulk of a message). Off
		 * once a bare LF or a NUL was seen — the message is refused
		 * then, and the byte loop keeps the scan linear. */
		if (d->state == D_TEXT && !d->bare_lf && !d->nul) {
			size_t n = inlen - i < outcap - o ? inlen - i : outcap - o;
			const char *cr = memchr(in + i, '\r', n);
			size_t run = cr ? (size_t)(cr - (in + i)) : n;
			const char *lf = memchr(in + i, '\n', run);
			if (lf)
				run = (size_t)(lf - (in + i));
			const char *nul = memchr(in + i, '\0', run);
			if (nul)
				run = (size_t)(nul - (in + i));
			if (run > 0) {
				memcpy(out + o, in + i, run);
				uint64_t before = d->line_len;
				d->line_len += run;
				/* 998 octets + CRLF is the longest allowed line. */
				if (before < MXF_SMTP_TEXT_LINE_MAX - 1 &&
				    d->line_len >= MXF_SMTP_TEXT_LINE_MAX - 1)
					d->long_lines++;
				i += run;
				o += run;
				continue;
			}
		}
		char c = in[i++];
		switch (d->state) {
		case D_BOL:
			/* A leading dot is dropped: it is either dot-stuffing or the
			 * start of the end marker. */
			if (c == '.') {
				d->state = D_DOT;
				continue;
			}
			break;
		case D_DOT:
			if (c == '\r') {
				d->state = D_DOT_CR;
				continue;
			}
			break;
		case D_DOT_CR:
			if (c == '\n') {
				/* CRLF "." CRLF: the only end marker. */
				d->state = D_DONE;
				d->done = true;
				continue;
			}
			/* "." CR <not LF>: content with a bare CR. */
			d->bare_cr = true;
			out[o++] = '\r';
			if (++d->line_len == MXF_SMTP_TEXT_LINE_MAX - 1)
				d->long_lines++;
			break;
		case D_CR:
			if (c == '\n') {
				out[o++] = '\n';
				d->state = D_BOL;
				d->line_len = 0;
				continue;
			}
			d->bare_cr = true;
			if (++d->line_len == MXF_SMTP_TEXT_LINE_MAX - 1)
				d->long_lines++;
			break;
		default:
			break;
		}
		/* Ordinary text (from any state that fell through). */
		d->state = D_TEXT;
		if (c == '\r') {
			out[o++] = c;
			d->state = D_CR;
		} else if (c == '\n') {
			/* A bare LF ends no line for the end marker's sake: after it
			 * we are not at the beginning of a line. */
			out[o++] = c;
			d->bare_lf = true;
			d->line_len = 0;
		} else {
			out[o++] = c;
			d->nul |= c == '\0';
			/* 998 octets + CRLF is the longest allowed line. */
			if (++d->line_len == MXF_SMTP_TEXT_LINE_MAX - 1)
				d->long_lines++;
		}
	}
	d->size += o;
	*outlen = o;
	return i;
}

void mxf_smtp_chunk_scan(struct mxf_smtp_data *d, const char *in, size_t inlen)
{
	for (size_t i = 0; i < inlen; i++) {
		char c = in[i];
		if (d->state == D_CR && c != '\n') {
			d->bare_cr = true;
			if (++d->line_len == MXF_SMTP_TEXT_LINE_MAX - 1)
				d->long_lines++;
		}
		if (c == '\n') {
			d->bare_lf |= d->state != D_CR;
			d->line_len = 0;
			d->state = D_TEXT;
			continue;
		}
		d->state = c == '\r' ? D_CR : D_TEXT;
		if (c == '\r')
			continue;
		d->nul |= c == '\0';
		if (++d->line_len == MXF_SMTP_TEXT_LINE_MAX - 1)
			d->long_lines++;
	}
	d->size += inlen;
}

void mxf_smtp_chunk_end(struct mxf_smtp_data *d)
{
	if (d->state == D_CR)
		d->bare_cr = true;
	d->state = D_DONE;
	d->done = true;
}
