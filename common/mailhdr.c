#include "mailhdr.h"
#include "strbuf.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

void mxf_mailhdr_init(struct mxf_mailhdr *h, const struct mxf_mailhdr_cb *cb)
{
	h->cb = *cb;
	h->st = MXF_MH_LINESTART;
	h->len = 0;
	h->infield = h->over = h->over_keep = h->eoh_called = false;
	h->fields = h->dropped = h->dropped_octets = 0;
}

bool mxf_mailhdr_in_body(const struct mxf_mailhdr *h)
{
	return h->st == MXF_MH_BODY;
}

static bool verdict(struct mxf_mailhdr *h, bool whole)
{
	return h->cb.field ? h->cb.field(h->cb.arg, h->buf, h->len, whole) : true;
}

/* The current field is complete: emit or drop it. */
static size_t finish(struct mxf_mailhdr *h, char *out)
{
	size_t o = 0;
	if (!h->infield)
		return 0;
	h->fields++;
	if (h->over) {
		if (!h->over_keep)
			h->dropped++;
	} else if (verdict(h, true)) {
		memcpy(out, h->buf, h->len);
		o = h->len;
	} else {
		h->dropped++;
		h->dropped_octets += h->len;
	}
	h->infield = h->over = h->over_keep = false;
	h->len = 0;
	return o;
}

static size_t append(struct mxf_mailhdr *h, char c, char *out)
{
	size_t o = 0;
	h->infield = true;
	if (!h->over && h->len == sizeof(h->buf)) {
		/* Too long to hold: decide on what we have, pass the rest on
		 * (or drop it) under the same verdict. */
		h->over = true;
		h->over_keep = verdict(h, false);
		if (h->over_keep) {
			memcpy(out, h->buf, h->len);
			o = h->len;
		} else {
			h->dropped_octets += h->len;
		}
	}
	if (h->over) {
		if (h->over_keep)
			out[o++] = c;
		else
			h->dropped_octets++;
	} else {
		h->buf[h->len++] = c;
	}
	return o;
}

static void eoh(struct mxf_mailhdr *h)
{
	h->st = MXF_MH_BODY;
	if (!h->eoh_called && h->cb.eoh)
		h->cb.eoh(h->cb.arg);
	h->eoh_called = true;
}

size_t mxf_mailhdr_feed(struct mxf_mailhdr *h, const char *in, size_t n, char *out)
{
	size_t o = 0, i = 0;
	while (i < n && h->st != MXF_MH_BODY) {
		char c = in[i++];
		switch (h->st) {
		case MXF_MH_LINESTART:
			if ((c == ' ' || c == '\t') && h->infield) {
				o += append(h, c, out + o);
				h->st = MXF_MH_INLINE;
			} else if (c == '\r') {
				o += finish(h, out + o);
				h->st = MXF_MH_EOH_CR;
			} else if (c == '\n') {
				/* A bare LF blank line (such a message is refused
				 * anyway; stay consistent). */
				o += finish(h, out + o);
				out[o++] = '\n';
				eoh(h);
			} else {
				o += finish(h, out + o);
				o += append(h, c, out + o);
				h->st = c == '\n' ? MXF_MH_LINESTART : MXF_MH_INLINE;
			}
			break;
		case MXF_MH_INLINE:
			o += append(h, c, out + o);
			if (c == '\n')
				h->st = MXF_MH_LINESTART;
			break;
		case MXF_MH_EOH_CR:
			out[o++] = '\r';
			if (c == '\n') {
				out[o++] = '\n';
				eoh(h);
			} else {
				eoh(h);
				i--; /* c is the first body octet */
			}
			break;
		case MXF_MH_BODY:
			break;
		}
	}
	if (i < n) {
		memcpy(out + o, in + i, n - i);
		if (h->cb.body)
			h->cb.body(h->cb.arg, in + i, n - i);
		o += n - i;
	}
	return o;
}

size_t mxf_mailhdr_end(struct mxf_mailhdr *h, char *out)
{
	size_t o = 0;
	if (h->st == MXF_MH_BODY)
		return 0;
	o += finish(h, out);
	if (h->st == MXF_MH_EOH_CR)
		out[o++] = '\r';
	eoh(h);
	return o;
}

bool mxf_mailhdr_is(const char *f, size_t len, const char *name)
{
	size_t nl = strlen(name);
	if (len < nl || strncasecmp(f, name, nl) != 0)
		return false;
	size_t i = nl;
	while (i < len && (f[i] == ' ' || f[i] == '\t'))
		i++;
	return i < len && f[i] == ':';
}

static bool wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

size_t mxf_mailhdr_value(const char *f, size_t len, char *out, size_t cap)
{
	const char *colon = memchr(f, ':', len);
	size_t o = 0, i = colon ? (size_t)(colon - f) + 1 : len;
	if (cap == 0)
		return 0;
	while (i < len && wsp(f[i]))
		i++;
	while (i < len) {
		const unsigned char *p = (const unsigned char *)f + i;
		size_t l = mxf_utf8_len(p, len - i);
		if (l == 0) { /* not UTF-8 */
			l = 1;
			p = (const unsigned char *)"?";
		} else if (l == 1 && (*p < 0x20 || *p == 0x7f)) {
			/* Unfolding: CRLF goes, the WSP after it stays. */
			if (*p == '\r' || *p == '\n') {
				i++;
				continue;
			}
			p = (const unsigned char *)" ";
		}
		if (o + l > cap - 1)
			break;
		memcpy(out + o, p, l);
		o += l;
		i += l; /* an invalid octet: l is 1 */
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	return o;
}

bool mxf_mailhdr_text_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n > max)
		return false;
	for (size_t i = 0; i < n;) {
		size_t l = mxf_utf8_len(s + i, n - i);
		if (l == 0 || (l == 1 && ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)))
			return false;
		i += l;
	}
	return true;
}

/* Skips a comment starting at s[*i] == '(' (nested, with quoted-pairs).
 * Returns false when it does not end. */
static bool skip_comment(const char *s, size_t len, size_t *i)
{
	unsigned depth = 0;
	for (; *i < len; (*i)++) {
		char c = s[*i];
		if (c == '\\') {
			(*i)++;
		} else if (c == '(') {
			if (++depth > 64)
				return false;
		} else if (c == ')') {
			if (--depth == 0) {
				(*i)++;
				return true;
			}
		}
	}
	return false;
}

static void skip_cfws(const char *s, size_t len, size_t *i)
{
	while (*i < len) {
		if (wsp(s[*i]))
			(*i)++;
		else if (s[*i] == '(') {
			if (!skip_comment(s, len, i)) {
				*i = len;
				return;
			}
		} else
			return;
	}
}

/* Offset of the value (after "name:"), or len. */
static size_t value_start(const char *f, size_t len)
{
	const char *colon = memchr(f, ':', len);
	return colon ? (size_t)(colon - f) + 1 : len;
}

int mxf_mailhdr_authserv_id(const char *f, size_t len, char *id, size_t cap)
{
	size_t i = value_start(f, len), o = 0;
	if (i >= len || cap == 0)
		return -EINVAL;
	skip_cfws(f, len, &i);
	/* A quoted authserv-id is allowed by RFC 8601 (value); unquote it. */
	if (i < len && f[i] == '"') {
		for (i++; i < len && f[i] != '"'; i++) {
			if (f[i] == '\\' && i + 1 < len)
				i++;
			if (o + 1 >= cap)
				return -EINVAL;
			char c = f[i];
			id[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
	} else {
		for (; i < len && f[i] != ';' && f[i] != '(' && !wsp(f[i]); i++) {
			if (o + 1 >= cap)
				return -EINVAL;
			char c = f[i];
			id[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
	}
	id[o] = '\0';
	/* Controls, NUL and 8-bit octets make no authserv-id we could match
	 * (nor one a reader downstream would take for ours). */
	for (size_t k = 0; k < o; k++)
		if ((unsigned char)id[k] < 0x21 || (unsigned char)id[k] > 0x7e)
			return -EINVAL;
	return o ? 0 : -EINVAL;
}

int mxf_mailhdr_from_domain(const char *f, size_t len, char *domain, size_t cap)
{
	size_t i = value_start(f, len);
	/* Find the address: inside the top-level <...>, or else the value
	 * without comments and whitespace. Count top-level mailboxes. */
	char addr[1024];
	size_t alen = 0, mailboxes = 0;
	bool angle = false, got_angle = false, content = false, group = false;
	if (i >= len)
		return -EINVAL;
	while (i < len) {
		char c = f[i];
		if (c == '(') {
			if (!skip_comment(f, len, &i))
				return -EINVAL;
			continue;
		}
		if (c == '"') {
			/* A quoted string: part of a display name or of a
			 * local part (kept, for the '@' search below). */
			size_t j = i + 1;
			while (j < len && f[j] != '"') {
				if (f[j] == '\\')
					j++;
				j++;
			}
			if (j >= len)
				return -EINVAL;
			if (angle || !got_angle) {
				if (alen + (j + 1 - i) >= sizeof(addr))
					return -EINVAL;
				/* Quoted text never carries the domain: blank it. */
				for (size_t k = i; k <= j; k++)
					addr[alen++] = 'q';
			}
			content = true;
			i = j + 1;
			continue;
		}
		if (c == '<' && !angle) {
			if (got_angle)
				return -E2BIG;
			angle = got_angle = true;
			alen = 0;
			i++;
			continue;
		}
		if (c == '>' && angle) {
			angle = false;
			i++;
			continue;
		}
		if (c == ':' && !angle)
			group = true;
		if (c == ',' && !angle) {
			if (content)
				mailboxes++;
			content = false;
			if (!got_angle)
				alen = 0;
			i++;
			if (mailboxes >= 1) {
				/* Something after the comma makes it a list. */
				size_t k = i;
				skip_cfws(f, len, &k);
				if (k < len)
					return -E2BIG;
			}
			continue;
		}
		if (!wsp(c)) {
			content = true;
			if (angle || !got_angle) {
				if (alen + 1 >= sizeof(addr))
					return -EINVAL;
				addr[alen++] = c;
			}
		}
		i++;
	}
	if (group || angle)
		return -EINVAL;
	const char *at = NULL;
	for (size_t k = 0; k < alen; k++)
		if (addr[k] == '@')
			at = addr + k;
	if (!at)
		return -EINVAL;
	size_t dl = alen - (size_t)(at + 1 - addr);
	const char *d = at + 1;
	while (dl > 0 && d[dl - 1] == '.')
		dl--;
	if (dl == 0 || dl >= cap || dl > 253)
		return -EINVAL;
	for (size_t k = 0; k < dl; k++) {
		char c = d[k];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c + 32);
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		      c == '_'))
			return -EINVAL; /* literals, UTF-8 (A-labels are what DNS knows) */
		domain[k] = c;
	}
	domain[dl] = '\0';
	if (domain[0] == '.' || strstr(domain, ".."))
		return -EINVAL;
	return 0;
}

int mxf_mailhdr_tags(const char *s, size_t len,
		     bool (*fn)(void *arg, const char *tag, size_t tl, const char *val, size_t vl),
		     void *arg)
{
	enum { SEEN_MAX = 64 };
	const char *seen[SEEN_MAX];
	size_t seenl[SEEN_MAX], nseen = 0;
	size_t i = 0;
	while (i < len) {
		const char *semi = memchr(s + i, ';', len - i);
		size_t end = semi ? (size_t)(semi - s) : len;
		size_t a = i, b = end;
		while (a < b && wsp(s[a]))
			a++;
		while (b > a && wsp(s[b - 1]))
			b--;
		i = semi ? end + 1 : len;
		if (a == b)
			continue; /* empty element (a trailing ';') */
		const char *eq = memchr(s + a, '=', b - a);
		if (!eq)
			return -EINVAL;
		size_t te = (size_t)(eq - s), vs = te + 1;
		while (te > a && wsp(s[te - 1]))
			te--;
		while (vs < b && wsp(s[vs]))
			vs++;
		if (te == a)
			return -EINVAL;
		char c0 = s[a];
		if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z')))
			return -EINVAL;
		for (size_t k = a; k < te; k++) {
			char c = s[k];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '_'))
				return -EINVAL;
		}
		for (size_t k = 0; k < nseen; k++)
			if (seenl[k] == te - a && memcmp(seen[k], s + a, te - a) == 0)
				return -EINVAL;
		if (nseen < SEEN_MAX) {
			seen[nseen] = s + a;
			seenl[nseen++] = te - a;
		}
		if (!fn(arg, s + a, te - a, s + vs, b - vs))
			return 0;
	}
	return 0;
}
