#include "dkim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

const char *mxf_dkim_alg_name(enum mxf_dkim_alg a)
{
	return a == MXF_DKIM_ED25519 ? "ed25519" : "rsa";
}

int mxf_dkim_alg_parse(const char *s, enum mxf_dkim_alg *out)
{
	if (strcmp(s, "rsa") == 0)
		*out = MXF_DKIM_RSA;
	else if (strcmp(s, "ed25519") == 0)
		*out = MXF_DKIM_ED25519;
	else
		return -EINVAL;
	return 0;
}

bool mxf_dkim_selector_valid(const char *s)
{
	size_t n = strlen(s), lab = 0;
	if (n == 0 || n > MXF_DKIM_SELECTOR_MAX)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char c = s[i];
		if (c == '.' || c == '\0') {
			/* empty label, or one with a hyphen at either end */
			if (lab == 0 || s[i - 1] == '-' || s[i - lab] == '-')
				return false;
			lab = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
			lab++;
		} else {
			return false;
		}
	}
	return true;
}

int mxf_dkim_key_path(const char *data_dir, const char *domain, const char *selector,
		      const char *alg, char *out, size_t len)
{
	enum mxf_dkim_alg a;
	/* Both end up in a file name: no '/' and no leading '.' can pass. */
	if (!mxf_dkim_selector_valid(selector) || mxf_dkim_alg_parse(alg, &a) < 0 || !*domain ||
	    domain[0] == '.' || strspn(domain, "abcdefghijklmnopqrstuvwxyz0123456789.-") !=
					 strlen(domain))
		return -EINVAL;
	int n = snprintf(out, len, "%s/dkim/%s.%s.%s.pem", data_dir, domain, selector, alg);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---- base64 ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t mxf_b64_encode(const uint8_t *in, size_t len, char *out)
{
	size_t o = 0, i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = B64[v >> 18];
		out[o++] = B64[(v >> 12) & 63];
		out[o++] = B64[(v >> 6) & 63];
		out[o++] = B64[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
		out[o++] = B64[v >> 18];
		out[o++] = B64[(v >> 12) & 63];
		out[o++] = i + 1 < len ? B64[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long mxf_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0, pad = 0;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		int v = b64val(c);
		if (v < 0 || pad)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -EINVAL;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* Leftover bits must be padding's zero bits, and the padding right. */
	if (pad > 2 || (bits == 6) || (pad && (bits / 2 != pad)) || (acc & ((1u << bits) - 1)))
		return -EINVAL;
	return (long)o;
}

/* ---- body ---- */

struct mxf_dkim_body {
	bool relaxed;
	EVP_MD_CTX *md;
	void (*sink)(void *, const char *, size_t);
	void *arg;
	size_t empty;    /* empty lines held back: dropped if nothing follows */
	bool content;    /* the current line has content (already written) */
	bool wsp;        /* relaxed: whitespace pending inside the line */
	bool cr;         /* a CR seen, not yet known to end the line */
	bool any;        /* anything at all written */
	/* Canonical bytes go to the hash in blocks: one EVP_DigestUpdate per
	 * byte cost ~10 us per KiB (a 100 KiB message signed took 1 ms more). */
	size_t blen;
	char buf[4096];
};

static void flush_out(struct mxf_dkim_body *b)
{
	if (!b->blen)
		return;
	EVP_DigestUpdate(b->md, b->buf, b->blen);
	if (b->sink)
		b->sink(b->arg, b->buf, b->blen);
	b->blen = 0;
}

static void out(struct mxf_dkim_body *b, const char *p, size_t n)
{
	b->any = true;
	if (b->blen + n > sizeof(b->buf))
		flush_out(b);
	if (n >= sizeof(b->buf)) {
		EVP_DigestUpdate(b->md, p, n);
		if (b->sink)
			b->sink(b->arg, p, n);
		return;
	}
	memcpy(b->buf + b->blen, p, n);
	b->blen += n;
}

int mxf_dkim_body_new(bool relaxed, struct mxf_dkim_body **res)
{
	struct mxf_dkim_body *b = calloc(1, sizeof(*b));
	if (!b || !(b->md = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(b->md, EVP_sha256(), NULL)) {
		if (b)
			EVP_MD_CTX_free(b->md);
		free(b);
		return -ENOMEM;
	}
	b->relaxed = relaxed;
	*res = b;
	return 0;
}

void mxf_dkim_body_set_sink(struct mxf_dkim_body *b, void (*sink)(void *, const char *, size_t),
			    void *arg)
{
	b->sink = sink;
	b->arg = arg;
}

/* Content bytes of the current line: first the held-back empty lines (they
 * were not trailing after all), then any pending whitespace as one SP. */
static void content_run(struct mxf_dkim_body *b, const char *p, size_t n)
{
	if (!b->content) {
		for (; b->empty; b->empty--)
			out(b, "\r\n", 2);
		b->content = true;
	}
	if (b->wsp) {
		out(b, " ", 1);
		b->wsp = false;
	}
	out(b, p, n);
}

static void content(struct mxf_dkim_body *b, char c)
{
	content_run(b, &c, 1);
}

/* A byte that is plain content: no line end, no whitespace (relaxed). */
static bool plain(const struct mxf_dkim_body *b, char c)
{
	return c != '\r' && c != '\n' && !(b->relaxed && (c == ' ' || c == '\t'));
}

static void line_end(struct mxf_dkim_body *b)
{
	if (b->content)
		out(b, "\r\n", 2);
	else
		b->empty++;
	b->content = b->wsp = false;
}

void mxf_dkim_body_feed(struct mxf_dkim_body *b, const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (!b->cr && plain(b, c)) {
			/* A run of plain bytes goes out as one block. */
			size_t j = i + 1;
			while (j < len && plain(b, p[j]))
				j++;
			content_run(b, p + i, j - i);
			i = j - 1;
			continue;
		}
		if (b->cr) {
			b->cr = false;
			if (c == '\n') {
				line_end(b);
				continue;
			}
			content(b, '\r');
		}
		if (c == '\r')
			b->cr = true;
		else if (c == '\n')
			line_end(b);
		else if (b->relaxed && (c == ' ' || c == '\t'))
			b->wsp = true; /* written only if content follows on the line */
		else
			content(b, c);
	}
}

void mxf_dkim_body_final(struct mxf_dkim_body *b, uint8_t hash[MXF_DKIM_DIGEST])
{
	if (b->cr) {
		b->cr = false;
		content(b, '\r');
	}
	/* An unterminated last line gets its CRLF; trailing empty lines go. */
	if (b->content)
		line_end(b);
	/* Simple: an empty body is one CRLF (RFC 6376 §3.4.3); relaxed: nothing. */
	if (!b->any && !b->relaxed)
		out(b, "\r\n", 2);
	flush_out(b);
	unsigned int n = 0;
	EVP_DigestFinal_ex(b->md, hash, &n);
}

void mxf_dkim_body_free(struct mxf_dkim_body *b)
{
	if (!b)
		return;
	EVP_MD_CTX_free(b->md);
	free(b);
}

/* ---- header fields ---- */

size_t mxf_dkim_split(const char *msg, size_t len, size_t *hdrlen)
{
	/* A message starting with the empty line has no header fields. */
	if (len >= 2 && msg[0] == '\r' && msg[1] == '\n') {
		*hdrlen = 0;
		return 2;
	}
	if (len >= 1 && msg[0] == '\n') {
		*hdrlen = 0;
		return 1;
	}
	for (size_t i = 0; i + 1 < len; i++) {
		if (msg[i] != '\n')
			continue;
		if (msg[i + 1] == '\n') {
			*hdrlen = i + 1;
			return i + 2;
		}
		if (msg[i + 1] == '\r' && i + 2 < len && msg[i + 2] == '\n') {
			*hdrlen = i + 1;
			return i + 3;
		}
	}
	*hdrlen = len;
	return len;
}

int mxf_dkim_fields(const char *block, size_t len, struct mxf_dkim_field **res, size_t *nres)
{
	size_t cap = 16, n = 0;
	struct mxf_dkim_field *f = malloc(cap * sizeof(*f));
	if (!f)
		return -ENOMEM;
	size_t i = 0;
	while (i < len) {
		/* One line: [i, e) without its line end, next line at nx. */
		const char *lf = memchr(block + i, '\n', len - i);
		size_t nx = lf ? (size_t)(lf - block) + 1 : len;
		size_t e = lf ? (size_t)(lf - block) : len;
		if (e > i && block[e - 1] == '\r')
			e--;
		if (block[i] == ' ' || block[i] == '\t') {
			if (n == 0)
				goto bad;
			f[n - 1].len = e - (size_t)(f[n - 1].p - block);
		} else {
			const char *colon = memchr(block + i, ':', e - i);
			if (!colon)
				goto bad;
			size_t nl = (size_t)(colon - (block + i));
			while (nl > 0 && (block[i + nl - 1] == ' ' || block[i + nl - 1] == '\t'))
				nl--;
			if (nl == 0)
				goto bad;
			if (n == cap) {
				struct mxf_dkim_field *nf = realloc(f, 2 * cap * sizeof(*f));
				if (!nf) {
					free(f);
					return -ENOMEM;
				}
				f = nf;
				cap *= 2;
			}
			f[n].p = block + i;
			f[n].len = e - i;
			f[n].namelen = nl;
			n++;
		}
		i = nx;
	}
	*res = f;
	*nres = n;
	return 0;
bad:
	free(f);
	return -EBADMSG;
}

bool mxf_dkim_field_is(const struct mxf_dkim_field *f, const char *name)
{
	return strlen(name) == f->namelen && strncasecmp(f->p, name, f->namelen) == 0;
}

static bool wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

long mxf_dkim_canon_relaxed(const char *field, size_t len, bool crlf, char *o, size_t cap,
			    size_t used)
{
	size_t k = used;
#define PUT(c)                                                                                    \
	do {                                                                                      \
		if (k + 1 >= cap)                                                                 \
			return -E2BIG;                                                            \
		o[k++] = (c);                                                                     \
	} while (0)
	const char *colon = memchr(field, ':', len);
	if (!colon)
		return -EINVAL;
	size_t nl = (size_t)(colon - field);
	while (nl > 0 && wsp(field[nl - 1]))
		nl--;
	for (size_t i = 0; i < nl; i++) {
		char c = field[i];
		PUT(c >= 'A' && c <= 'Z' ? (char)(c + 32) : c);
	}
	PUT(':');
	/* Unfold, squeeze WSP runs to one SP, drop WSP at both ends of the value. */
	bool pend = false, started = false;
	for (size_t i = (size_t)(colon - field) + 1; i < len; i++) {
		char c = field[i];
		if (wsp(c)) {
			pend = started;
			continue;
		}
		if (pend)
			PUT(' ');
		pend = false;
		started = true;
		PUT(c);
	}
	if (crlf) {
		PUT('\r');
		PUT('\n');
	}
#undef PUT
	o[k] = '\0';
	return (long)k;
}

/* ---- tag lists ---- */

static bool fws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int mxf_dkim_tag(const char *v, size_t len, const char *name, const char **val, size_t *vlen)
{
	size_t i = 0, nlen = strlen(name);
	int found = -ENOENT;
	while (i < len) {
		while (i < len && fws(v[i]))
			i++;
		if (i == len)
			break; /* a trailing ";" */
		size_t ns = i;
		while (i < len && ((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
				   (v[i] >= '0' && v[i] <= '9') || v[i] == '_'))
			i++;
		size_t ne = i;
		if (ne == ns)
			return -EBADMSG;
		while (i < len && fws(v[i]))
			i++;
		if (i == len || v[i] != '=')
			return -EBADMSG;
		i++;
		const char *semi = memchr(v + i, ';', len - i);
		size_t ve = semi ? (size_t)(semi - v) : len;
		size_t vs = i;
		while (vs < ve && fws(v[vs]))
			vs++;
		size_t vend = ve;
		while (vend > vs && fws(v[vend - 1]))
			vend--;
		if (ne - ns == nlen && memcmp(v + ns, name, nlen) == 0) {
			/* RFC 6376 §3.2: a duplicated tag makes the list invalid. */
			if (found == 0)
				return -EBADMSG;
			*val = v + vs;
			*vlen = vend - vs;
			found = 0;
		}
		i = semi ? ve + 1 : len;
	}
	return found;
}

/* ---- signing ---- */

const char *const mxf_dkim_default_headers[] = {
	"from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type",
	"content-transfer-encoding", "reply-to", "in-reply-to", "references",
};
const size_t mxf_dkim_default_nheaders =
	sizeof(mxf_dkim_default_headers) / sizeof(mxf_dkim_default_headers[0]);

int mxf_dkim_pick_headers(const struct mxf_dkim_field *f, size_t n, const char **names,
			  size_t cap)
{
	size_t k = 0;
	bool from = false;
	for (size_t d = 0; d < mxf_dkim_default_nheaders; d++)
		for (size_t i = 0; i < n; i++)
			if (mxf_dkim_field_is(&f[i], mxf_dkim_default_headers[d])) {
				if (k + 1 >= cap)
					return -E2BIG;
				names[k++] = mxf_dkim_default_headers[d];
				from = from || d == 0;
			}
	if (!from)
		return -EINVAL;
	/* One "from" more than there are: nobody can add a From unnoticed. */
	names[k++] = "from";
	return (int)k;
}

struct mxf_dkim_strbuf {
	char *p;
	size_t len, cap;
};

static int sb_add(struct mxf_dkim_strbuf *s, const char *p, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		size_t nc = s->cap ? s->cap : 256;
		while (nc < s->len + n + 1)
			nc *= 2;
		char *np = realloc(s->p, nc);
		if (!np)
			return -ENOMEM;
		s->p = np;
		s->cap = nc;
	}
	memcpy(s->p + s->len, p, n);
	s->len += n;
	s->p[s->len] = '\0';
	return 0;
}

static int sb_str(struct mxf_dkim_strbuf *s, const char *p)
{
	return sb_add(s, p, strlen(p));
}

/* Adds "tag" (already formatted, e.g. "d=example.com"), "; " before it, and
 * folds (CRLF TAB) when the line would pass 76 columns. *col tracks the
 * current column. */
static int sb_tag(struct mxf_dkim_strbuf *s, size_t *col, const char *t, bool first)
{
	size_t tl = strlen(t);
	int r = 0;
	if (!first)
		r = sb_str(s, ";");
	if (r == 0 && !first && *col + 2 + tl > 76) {
		r = sb_str(s, "\r\n\t");
		*col = 8;
	} else if (r == 0 && !first) {
		r = sb_str(s, " ");
		*col += 2;
	}
	if (r == 0)
		r = sb_str(s, t);
	*col += tl;
	return r;
}

/* Hashes the relaxed form of one field; crlf as for the canonicaliser. */
static int hash_field(EVP_MD_CTX *md, const char *p, size_t len, bool crlf)
{
	/* A field's relaxed form is never longer than the field plus CRLF. */
	char *buf = malloc(len + 4);
	if (!buf)
		return -ENOMEM;
	long k = mxf_dkim_canon_relaxed(p, len, crlf, buf, len + 4, 0);
	if (k >= 0)
		EVP_DigestUpdate(md, buf, (size_t)k);
	free(buf);
	return k < 0 ? (int)k : 0;
}

/* RFC 6376 §5.4.2: each name in h= takes the last instance of that name not
 * yet taken; a name with none left contributes nothing. */
static int hash_selected(EVP_MD_CTX *md, const struct mxf_dkim_field *f, size_t n,
			 const char *const *names, size_t nn)
{
	bool *used = calloc(n ? n : 1, 1);
	if (!used)
		return -ENOMEM;
	int r = 0;
	for (size_t k = 0; k < nn && r == 0; k++)
		for (size_t i = n; i-- > 0;)
			if (!used[i] && mxf_dkim_field_is(&f[i], names[k])) {
				used[i] = true;
				r = hash_field(md, f[i].p, f[i].len, true);
				break;
			}
	free(used);
	return r;
}

static int digest_of(EVP_MD_CTX *md, const struct mxf_dkim_strbuf *s,
		     uint8_t digest[MXF_DKIM_DIGEST])
{
	unsigned int dl = 0;
	int r = hash_field(md, s->p, s->len, false);
	if (r == 0 && !EVP_DigestFinal_ex(md, digest, &dl))
		r = -ENOMEM;
	return r;
}

/* The end of both builders: the header itself last into the digest (it
 * hashes without its final CRLF, RFC 6376 §3.7), then hand it over. */
static int conclude(EVP_MD_CTX *md, int r, struct mxf_dkim_strbuf *b, char **hdr,
		    uint8_t digest[MXF_DKIM_DIGEST])
{
	if (r == 0)
		r = digest_of(md, b, digest);
	EVP_MD_CTX_free(md);
	if (r < 0) {
		free(b->p);
		return r;
	}
	*hdr = b->p;
	return 0;
}

int mxf_dkim_sign_digest(const struct mxf_dkim_sig *s, const struct mxf_dkim_field *f, size_t n,
			 char **hdr, uint8_t digest[MXF_DKIM_DIGEST])
{
	struct mxf_dkim_strbuf b = {0};
	char t[512], bh[64];
	size_t col;
	int r;

	*hdr = NULL;
	if (s->arc_i) {
		snprintf(t, sizeof(t), "i=%d", s->arc_i);
		r = sb_str(&b, "ARC-Message-Signature: ");
		col = 23;
	} else {
		snprintf(t, sizeof(t), "v=1");
		r = sb_str(&b, "DKIM-Signature: ");
		col = 16;
	}
	if (r == 0)
		r = sb_tag(&b, &col, t, true);
	snprintf(t, sizeof(t), "a=%s-sha256", mxf_dkim_alg_name(s->alg));
	if (r == 0)
		r = sb_tag(&b, &col, t, false);
	if (r == 0)
		r = sb_tag(&b, &col, "c=relaxed/relaxed", false);
	snprintf(t, sizeof(t), "d=%s", s->domain);
	if (r == 0)
		r = sb_tag(&b, &col, t, false);
	snprintf(t, sizeof(t), "s=%s", s->selector);
	if (r == 0)
		r = sb_tag(&b, &col, t, false);
	snprintf(t, sizeof(t), "t=%lld", s->t);
	if (r == 0)
		r = sb_tag(&b, &col, t, false);
	/* h=, folded between names when long (FWS is allowed around ':'). */
	if (r == 0)
		r = sb_str(&b, ";\r\n\th=");
	col = 10;
	for (size_t k = 0; k < s->nhdrs && r == 0; k++) {
		size_t l = strlen(s->hdrs[k]);
		if (k > 0) {
			r = sb_str(&b, ":");
			col++;
			if (r == 0 && col + l > 76) {
				r = sb_str(&b, "\r\n\t");
				col = 8;
			}
		}
		if (r == 0)
			r = sb_str(&b, s->hdrs[k]);
		col += l;
	}
	mxf_b64_encode(s->bh, MXF_DKIM_DIGEST, bh);
	snprintf(t, sizeof(t), "bh=%s", bh);
	if (r == 0)
		r = sb_tag(&b, &col, t, false);
	if (r == 0)
		r = sb_str(&b, ";\r\n\tb=");
	if (r < 0) {
		free(b.p);
		return r;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
		r = -ENOMEM;
	if (r == 0)
		r = hash_selected(md, f, n, s->hdrs, s->nhdrs);
	return conclude(md, r, &b, hdr, digest);
}

int mxf_dkim_finish(char **hdr, const uint8_t *sig, size_t siglen)
{
	char b64[(MXF_DKIM_SIG_MAX / 3 + 1) * 4 + 1];
	if (siglen > MXF_DKIM_SIG_MAX)
		return -E2BIG;
	size_t l = mxf_b64_encode(sig, siglen, b64);
	struct mxf_dkim_strbuf b = {.p = *hdr, .len = strlen(*hdr), .cap = strlen(*hdr) + 1};
	int r = 0;
	/* The b= tag starts its own line (after "\tb="): 70 characters a line. */
	for (size_t i = 0; i < l && r == 0; i += 70) {
		if (i > 0)
			r = sb_str(&b, "\r\n\t ");
		if (r == 0)
			r = sb_add(&b, b64 + i, l - i < 70 ? l - i : 70);
	}
	if (r == 0)
		r = sb_str(&b, "\r\n");
	*hdr = b.p;
	return r;
}

/* ---- ARC ---- */

enum { ARC_AAR, ARC_AMS, ARC_AS };

/* Which ARC field f is and its instance (0: not ARC or no valid i=). */
static int arc_kind(const struct mxf_dkim_field *f, int *inst)
{
	int kind;
	if (mxf_dkim_field_is(f, "arc-authentication-results"))
		kind = ARC_AAR;
	else if (mxf_dkim_field_is(f, "arc-message-signature"))
		kind = ARC_AMS;
	else if (mxf_dkim_field_is(f, "arc-seal"))
		kind = ARC_AS;
	else
		return -1;
	*inst = 0;
	const char *v = f->p + f->namelen, *val;
	size_t vl = f->len - f->namelen;
	while (vl && *v != ':') {
		v++;
		vl--;
	}
	if (vl) {
		v++;
		vl--;
	}
	/* The AAR is "i=N; authserv-id; results": only its first element is a tag. */
	if (kind == ARC_AAR) {
		const char *semi = memchr(v, ';', vl);
		if (semi)
			vl = (size_t)(semi - v);
	}
	if (mxf_dkim_tag(v, vl, "i", &val, &vl) == 0 && vl >= 1 && vl <= 2) {
		int x = 0;
		for (size_t k = 0; k < vl; k++) {
			if (val[k] < '0' || val[k] > '9')
				return kind;
			x = x * 10 + (val[k] - '0');
		}
		if (x >= 1 && x <= 50)
			*inst = x;
	}
	return kind;
}

void mxf_arc_scan(const struct mxf_dkim_field *f, size_t n, struct mxf_arc_state *st)
{
	int have[51][3] = {{0}};
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < n; i++) {
		int inst, k = arc_kind(&f[i], &inst);
		if (k < 0)
			continue;
		if (inst == 0) {
			st->broken = true;
			continue;
		}
		if (have[inst][k]++)
			st->broken = true;
		if (inst > st->max_i)
			st->max_i = inst;
		if (k == ARC_AS) {
			const char *v = memchr(f[i].p, ':', f[i].len), *cv;
			size_t cl;
			/* A seal without a readable cv= is a broken set. */
			if (!v || mxf_dkim_tag(v + 1, f[i].len - (size_t)(v + 1 - f[i].p), "cv", &cv,
					       &cl) != 0)
				st->broken = true;
		}
	}
	for (int i = 1; i <= st->max_i; i++)
		if (!have[i][0] || !have[i][1] || !have[i][2])
			st->broken = true;
	/* The latest seal decides: a fail below a later seal was caught then. */
	if (st->max_i) {
		for (size_t i = 0; i < n; i++) {
			int inst, k = arc_kind(&f[i], &inst);
			if (k != ARC_AS || inst != st->max_i)
				continue;
			const char *v = memchr(f[i].p, ':', f[i].len), *cv;
			size_t cl;
			st->failed = v && mxf_dkim_tag(v + 1, f[i].len - (size_t)(v + 1 - f[i].p),
						       "cv", &cv, &cl) == 0 &&
				     cl == 4 && strncasecmp(cv, "fail", 4) == 0;
		}
	}
}

int mxf_arc_seal_digest(const struct mxf_dkim_field *f, size_t n, int inst, const char *cv,
			const char *domain, const char *selector, long long t, const char *aar,
			const char *ams, char **hdr, uint8_t digest[MXF_DKIM_DIGEST])
{
	struct mxf_dkim_strbuf b = {0};
	char tag[300];
	size_t col = 10;
	int r;
	*hdr = NULL;
	if (inst < 1 || inst > 50)
		return -EINVAL;
	snprintf(tag, sizeof(tag), "i=%d", inst);
	r = sb_str(&b, "ARC-Seal: ");
	if (r == 0)
		r = sb_tag(&b, &col, tag, true);
	if (r == 0)
		r = sb_tag(&b, &col, "a=rsa-sha256", false);
	snprintf(tag, sizeof(tag), "t=%lld", t);
	if (r == 0)
		r = sb_tag(&b, &col, tag, false);
	snprintf(tag, sizeof(tag), "cv=%s", cv);
	if (r == 0)
		r = sb_tag(&b, &col, tag, false);
	snprintf(tag, sizeof(tag), "d=%s", domain);
	if (r == 0)
		r = sb_tag(&b, &col, tag, false);
	snprintf(tag, sizeof(tag), "s=%s", selector);
	if (r == 0)
		r = sb_tag(&b, &col, tag, false);
	if (r == 0)
		r = sb_str(&b, ";\r\n\tb=");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (r == 0 && (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)))
		r = -ENOMEM;
	/* RFC 8617 §5.1.1: every earlier set in instance order, AAR, AMS, AS,
	 * relaxed; then ours. The scan made sure each exists exactly once. */
	for (int i = 1; i < inst && r == 0; i++)
		for (int k = ARC_AAR; k <= ARC_AS && r == 0; k++) {
			bool got = false;
			for (size_t j = 0; j < n && r == 0; j++) {
				int fi, fk = arc_kind(&f[j], &fi);
				if (fk == k && fi == i) {
					r = hash_field(md, f[j].p, f[j].len, true);
					got = true;
					break;
				}
			}
			if (!got && r == 0)
				r = -EBADMSG;
		}
	if (r == 0)
		r = hash_field(md, aar, strlen(aar), true);
	if (r == 0)
		r = hash_field(md, ams, strlen(ams), true);
	return conclude(md, r, &b, hdr, digest);
}

/* ---- verifying ---- */

int mxf_arc_field_kind(const struct mxf_dkim_field *f, int *inst)
{
	*inst = 0;
	return arc_kind(f, inst);
}

/* The field's value (after the colon). */
static void field_value(const struct mxf_dkim_field *f, const char **v, size_t *vl)
{
	const char *c = memchr(f->p, ':', f->len);
	*v = c ? c + 1 : f->p + f->len;
	*vl = (size_t)(f->p + f->len - *v);
}

/* Hashes field p[0..len) as the signature field: its b= value (with the FWS
 * around it, as RFC 6376 §3.7 and common verifiers do) cut out, canonicalised,
 * no CRLF. */
static int hash_sig_field(EVP_MD_CTX *md, const struct mxf_dkim_field *f, bool relaxed)
{
	const char *v, *b;
	size_t vl, bl;
	field_value(f, &v, &vl);
	if (mxf_dkim_tag(v, vl, "b", &b, &bl) != 0)
		return -EBADMSG;
	/* From just after '=' up to the ';' that ends the value (or the end). */
	const char *from = b;
	while (from > v && from[-1] != '=')
		from--;
	const char *end = memchr(b, ';', (size_t)(f->p + f->len - b));
	if (!end)
		end = f->p + f->len;
	size_t head = (size_t)(from - f->p), tail = (size_t)(f->p + f->len - end);
	char *buf = malloc(head + tail + 4);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, f->p, head);
	memcpy(buf + head, end, tail);
	int r = 0;
	if (relaxed)
		r = hash_field(md, buf, head + tail, false);
	else
		EVP_DigestUpdate(md, buf, head + tail);
	free(buf);
	return r;
}

int mxf_dkim_verify_digest(const struct mxf_dkim_field *f, size_t n,
			   const struct mxf_dkim_field *sig, bool relaxed,
			   uint8_t digest[MXF_DKIM_DIGEST])
{
	const char *v, *h;
	size_t vl, hl;
	field_value(sig, &v, &vl);
	if (mxf_dkim_tag(v, vl, "h", &h, &hl) != 0 || hl == 0)
		return -EBADMSG;
	bool *used = calloc(n ? n : 1, 1);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = used && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) ? 0 : -ENOMEM;
	/* h= is names separated by ':' with FWS allowed around them. */
	for (size_t i = 0; i < hl && r == 0;) {
		while (i < hl && fws(h[i]))
			i++;
		size_t s = i;
		while (i < hl && h[i] != ':' && !fws(h[i]))
			i++;
		size_t e = i;
		while (i < hl && fws(h[i]))
			i++;
		if (i < hl && h[i] != ':') {
			r = -EBADMSG;
			break;
		}
		i++;
		if (e == s) {
			r = -EBADMSG;
			break;
		}
		for (size_t k = n; k-- > 0;)
			if (!used[k] && f[k].namelen == e - s &&
			    strncasecmp(f[k].p, h + s, e - s) == 0) {
				used[k] = true;
				if (relaxed) {
					r = hash_field(md, f[k].p, f[k].len, true);
				} else {
					EVP_DigestUpdate(md, f[k].p, f[k].len);
					EVP_DigestUpdate(md, "\r\n", 2);
				}
				break;
			}
	}
	if (r == 0)
		r = hash_sig_field(md, sig, relaxed);
	unsigned int dl = 0;
	if (r == 0 && !EVP_DigestFinal_ex(md, digest, &dl))
		r = -ENOMEM;
	EVP_MD_CTX_free(md);
	free(used);
	return r;
}

/* The field of kind k and instance i, or NULL. */
static const struct mxf_dkim_field *arc_member(const struct mxf_dkim_field *f, size_t n, int k,
					       int i)
{
	for (size_t j = 0; j < n; j++) {
		int fi, fk = arc_kind(&f[j], &fi);
		if (fk == k && fi == i)
			return &f[j];
	}
	return NULL;
}

int mxf_arc_seal_verify_digest(const struct mxf_dkim_field *f, size_t n, int inst,
			       uint8_t digest[MXF_DKIM_DIGEST])
{
	if (inst < 1 || inst > 50)
		return -EINVAL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) ? 0 : -ENOMEM;
	for (int i = 1; i <= inst && r == 0; i++)
		for (int k = ARC_AAR; k <= ARC_AS && r == 0; k++) {
			const struct mxf_dkim_field *m = arc_member(f, n, k, i);
			if (!m)
				r = -EBADMSG;
			else if (i == inst && k == ARC_AS)
				r = hash_sig_field(md, m, true);
			else
				r = hash_field(md, m->p, m->len, true);
		}
	unsigned int dl = 0;
	if (r == 0 && !EVP_DigestFinal_ex(md, digest, &dl))
		r = -ENOMEM;
	EVP_MD_CTX_free(md);
	return r;
}
