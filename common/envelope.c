#include "envelope.h"

#include "strbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* An envelope never legitimately grows near this; a bigger file is corrupt
 * and must not make the router allocate without bound. */
#define ENV_MAX_FILE (16u << 20)

static const char *const status_names[] = {
	[MXF_RS_PENDING] = "pending", [MXF_RS_DEFERRED] = "deferred", [MXF_RS_SENT] = "sent",
	[MXF_RS_FAILED] = "failed",   [MXF_RS_BOUNCED] = "bounced",   [MXF_RS_DROPPED] = "dropped",
	[MXF_RS_RELAYED] = "relayed",
};
#define NSTATUS (sizeof(status_names) / sizeof(status_names[0]))

const char *mxf_env_status_name(enum mxf_rcpt_status s)
{
	return (size_t)s < NSTATUS ? status_names[s] : "unknown";
}

/* ---- CRC-32 (IEEE 802.3, as zlib's crc32) ---- */
static uint32_t crc32_ieee(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < len; i++) {
		c ^= b[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return c ^ 0xffffffffu;
}

/* ---- object ---- */
static char *xstrdup(const char *s)
{
	return strdup(s ? s : "");
}

int mxf_env_set(char **field, const char *value)
{
	char *c = xstrdup(value);
	if (!c)
		return -ENOMEM;
	free(*field);
	*field = c;
	return 0;
}

struct mxf_env *mxf_env_new(const char *qid)
{
	struct mxf_env *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	snprintf(e->qid, sizeof(e->qid), "%s", qid ? qid : "");
	char **f[] = {&e->sender, &e->srs_sender, &e->client_ip, &e->client_name,
		      &e->helo,   &e->proto,      &e->origin,    &e->headers,
		      &e->ret,    &e->envid,      &e->msgid,     &e->subject};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (!(*f[i] = strdup(""))) {
			mxf_env_free(e);
			return NULL;
		}
	}
	return e;
}

static void rcpt_free(struct mxf_env_rcpt *r)
{
	free(r->orig);
	free(r->dest);
	free(r->rule);
	free(r->action);
	free(r->reply);
	free(r->relay);
	free(r->notify);
	free(r->orcpt);
}

void mxf_env_free(struct mxf_env *e)
{
	if (!e)
		return;
	free(e->sender);
	free(e->srs_sender);
	free(e->client_ip);
	free(e->client_name);
	free(e->helo);
	free(e->proto);
	free(e->origin);
	free(e->headers);
	free(e->ret);
	free(e->envid);
	free(e->msgid);
	free(e->subject);
	for (size_t i = 0; i < e->nrcpt; i++)
		rcpt_free(&e->rcpt[i]);
	free(e->rcpt);
	free(e);
}

int mxf_env_add_rcpt(struct mxf_env *e, const char *orig, const char *dest, const char *rule,
		     const char *action)
{
	struct mxf_env_rcpt *n = realloc(e->rcpt, (e->nrcpt + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	e->rcpt = n;
	struct mxf_env_rcpt *r = &n[e->nrcpt];
	memset(r, 0, sizeof(*r));
	r->status = MXF_RS_PENDING;
	r->orig = xstrdup(orig);
	r->dest = xstrdup(dest);
	r->rule = xstrdup(rule);
	r->action = xstrdup(action);
	r->reply = xstrdup("");
	r->relay = xstrdup("");
	r->notify = xstrdup("");
	r->orcpt = xstrdup("");
	if (!r->orig || !r->dest || !r->rule || !r->action || !r->reply || !r->relay ||
	    !r->notify || !r->orcpt) {
		rcpt_free(r);
		return -ENOMEM;
	}
	return (int)e->nrcpt++;
}

/* ---- formatting ---- */

static bool needs_escape(unsigned char c)
{
	return c < 0x21 || c > 0x7e || c == '%';
}

/* One value: "-" is the empty string, a lone "-" is written "%2D", and every
 * byte outside 0x21..0x7e (or '%') is %XX with upper-case hex. The encoding
 * is canonical (exactly one spelling per value), which the parser enforces. */
static void ob_val(struct mxf_strbuf *o, const char *v)
{
	static const char hex[] = "0123456789ABCDEF";
	if (!v || !*v) {
		mxf_sb_add(o, "-", 1);
		return;
	}
	if (strcmp(v, "-") == 0) {
		mxf_sb_add(o, "%2D", 3);
		return;
	}
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (needs_escape(*p)) {
			char t[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			mxf_sb_add(o, t, 3);
		} else {
			mxf_sb_add(o, (const char *)p, 1);
		}
	}
}

static void ob_num(struct mxf_strbuf *o, uint64_t v)
{
	char t[24];
	int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
	mxf_sb_add(o, t, (size_t)n);
}

static void ob_kv(struct mxf_strbuf *o, const char *key, const char *v)
{
	mxf_sb_str(o, key);
	mxf_sb_add(o, " ", 1);
	ob_val(o, v);
	mxf_sb_add(o, "\n", 1);
}

static void ob_kn(struct mxf_strbuf *o, const char *key, uint64_t v)
{
	mxf_sb_str(o, key);
	mxf_sb_add(o, " ", 1);
	ob_num(o, v);
	mxf_sb_add(o, "\n", 1);
}

int mxf_env_format(const struct mxf_env *e, char **buf, size_t *len)
{
	struct mxf_strbuf o = {0};

	if (!mxf_qid_valid(e->qid) || e->arrival < 0)
		return -EINVAL;
	mxf_sb_str(&o, "V 1\n");
	ob_kv(&o, "qid", e->qid);
	ob_kn(&o, "arrival", (uint64_t)e->arrival);
	ob_kn(&o, "size", e->size);
	ob_kv(&o, "sender", e->sender);
	ob_kv(&o, "srs_sender", e->srs_sender);
	ob_kv(&o, "client_ip", e->client_ip);
	ob_kv(&o, "client_name", e->client_name);
	ob_kv(&o, "helo", e->helo);
	ob_kv(&o, "proto", e->proto);
	ob_kv(&o, "origin", e->origin);
	ob_kv(&o, "headers", e->headers);
	/* Optional keys: absent when empty, so files from before they existed
	 * stay canonical. */
	if (e->ret && *e->ret)
		ob_kv(&o, "ret", e->ret);
	if (e->envid && *e->envid)
		ob_kv(&o, "envid", e->envid);
	if (e->msgid && *e->msgid)
		ob_kv(&o, "msgid", e->msgid);
	if (e->subject && *e->subject)
		ob_kv(&o, "subject", e->subject);
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct mxf_env_rcpt *r = &e->rcpt[i];
		if ((size_t)r->status >= NSTATUS || r->next_try < 0) {
			free(o.p);
			return -EINVAL;
		}
		mxf_sb_str(&o, "rcpt ");
		ob_val(&o, r->orig);
		mxf_sb_add(&o, " ", 1);
		ob_val(&o, r->dest);
		mxf_sb_add(&o, " ", 1);
		ob_val(&o, r->rule);
		mxf_sb_add(&o, " ", 1);
		ob_val(&o, r->action);
		mxf_sb_add(&o, " ", 1);
		mxf_sb_str(&o, status_names[r->status]);
		mxf_sb_add(&o, " ", 1);
		ob_num(&o, r->attempts);
		mxf_sb_add(&o, " ", 1);
		ob_num(&o, (uint64_t)r->next_try);
		mxf_sb_add(&o, " ", 1);
		ob_val(&o, r->reply);
		mxf_sb_add(&o, " ", 1);
		ob_val(&o, r->relay);
		if ((r->notify && *r->notify) || (r->orcpt && *r->orcpt)) {
			mxf_sb_add(&o, " ", 1);
			ob_val(&o, r->notify);
			mxf_sb_add(&o, " ", 1);
			ob_val(&o, r->orcpt);
		}
		mxf_sb_add(&o, "\n", 1);
	}
	if (o.err) {
		free(o.p);
		return o.err;
	}
	char end[16];
	int n = snprintf(end, sizeof(end), "E %08x\n", crc32_ieee(o.p, o.len));
	mxf_sb_add(&o, end, (size_t)n);
	if (o.err) {
		free(o.p);
		return o.err;
	}
	*buf = o.p;
	*len = o.len;
	return 0;
}

/* ---- parsing ---- */
static int hexval(char c)
{
	/* Upper case only: the encoding is canonical. */
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes one token [p, p+n) into a new C string. */
static int dec_val(const char *p, size_t n, char **out)
{
	if (n == 0)
		return -EBADMSG;
	if (n == 1 && p[0] == '-')
		return (*out = strdup("")) ? 0 : -ENOMEM;
	if (n == 3 && memcmp(p, "%2D", 3) == 0)
		return (*out = strdup("-")) ? 0 : -ENOMEM;
	char *s = malloc(n + 1);
	if (!s)
		return -ENOMEM;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x21 || c > 0x7e)
			goto bad;
		if (c != '%') {
			s[o++] = (char)c;
			continue;
		}
		if (n - i < 3)
			goto bad;
		int hi = hexval(p[i + 1]), lo = hexval(p[i + 2]);
		if (hi < 0 || lo < 0)
			goto bad;
		unsigned char d = (unsigned char)(hi << 4 | lo);
		/* NUL cannot live in a C string; a byte that needs no escape
		 * must not be escaped (one spelling per value). */
		if (d == 0 || !needs_escape(d))
			goto bad;
		s[o++] = (char)d;
		i += 2;
	}
	s[o] = '\0';
	*out = s;
	return 0;
bad:
	free(s);
	return -EBADMSG;
}

/* Canonical unsigned decimal: "0" or no leading zero, no sign, <= max. */
static int dec_num(const char *p, size_t n, uint64_t max, uint64_t *out)
{
	if (n == 0 || n > 20 || (n > 1 && p[0] == '0'))
		return -EBADMSG;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EBADMSG;
		unsigned d = (unsigned)(p[i] - '0');
		if (v > (max - d) / 10)
			return -EBADMSG;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

#define MAXTOK 12
struct tok {
	const char *p;
	size_t n;
};

/* Splits a line (without its LF) on single spaces; an empty token (double,
 * leading or trailing space) is a defect. */
static int split(const char *p, size_t n, struct tok *t, size_t *nt)
{
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && p[i] != ' ')
			continue;
		if (i == start || k == MAXTOK)
			return -EBADMSG;
		t[k].p = p + start;
		t[k].n = i - start;
		k++;
		start = i + 1;
	}
	*nt = k;
	return 0;
}

static bool tok_is(const struct tok *t, const char *s)
{
	return t->n == strlen(s) && memcmp(t->p, s, t->n) == 0;
}

enum { K_QID, K_ARRIVAL, K_SIZE, K_SENDER, K_SRS, K_CIP, K_CNAME, K_HELO, K_PROTO, K_ORIGIN,
       K_HEADERS, K_RET, K_ENVID, K_MSGID, K_SUBJECT, K_N };
/* Keys from K_RET on are optional. */
#define K_REQUIRED K_RET
static const char *const keynames[K_N] = {
	"qid", "arrival", "size", "sender", "srs_sender", "client_ip", "client_name", "helo",
	"proto", "origin", "headers", "ret", "envid", "msgid", "subject"};

static int parse_rcpt(struct mxf_env *e, const struct tok *t, size_t nt)
{
	if (nt != 10 && nt != 12)
		return -EBADMSG;
	char *orig = NULL, *dest = NULL, *rule = NULL, *action = NULL, *reply = NULL, *relay = NULL;
	char *notify = NULL, *orcpt = NULL;
	uint64_t att, next;
	int r = -EBADMSG;
	size_t st;

	for (st = 0; st < NSTATUS; st++)
		if (tok_is(&t[5], status_names[st]))
			break;
	if (st == NSTATUS || dec_num(t[6].p, t[6].n, UINT32_MAX, &att) < 0 ||
	    dec_num(t[7].p, t[7].n, INT64_MAX, &next) < 0)
		return -EBADMSG;
	if ((r = dec_val(t[1].p, t[1].n, &orig)) < 0 || (r = dec_val(t[2].p, t[2].n, &dest)) < 0 ||
	    (r = dec_val(t[3].p, t[3].n, &rule)) < 0 || (r = dec_val(t[4].p, t[4].n, &action)) < 0 ||
	    (r = dec_val(t[8].p, t[8].n, &reply)) < 0 || (r = dec_val(t[9].p, t[9].n, &relay)) < 0)
		goto out;
	if (nt == 12) {
		if ((r = dec_val(t[10].p, t[10].n, &notify)) < 0 ||
		    (r = dec_val(t[11].p, t[11].n, &orcpt)) < 0)
			goto out;
		r = -EBADMSG;
		if (!*notify && !*orcpt) /* canonical: the pair only when needed */
			goto out;
	} else if (!(notify = strdup("")) || !(orcpt = strdup(""))) {
		r = -ENOMEM;
		goto out;
	}
	r = -EBADMSG;
	if (!*orig || (strcmp(action, "forward") && strcmp(action, "drop") && strcmp(action, "relay") &&
			strcmp(action, "webhook")))
		goto out;
	struct mxf_env_rcpt *n = realloc(e->rcpt, (e->nrcpt + 1) * sizeof(*n));
	if (!n) {
		r = -ENOMEM;
		goto out;
	}
	e->rcpt = n;
	n[e->nrcpt] = (struct mxf_env_rcpt){.orig = orig, .dest = dest, .rule = rule,
					    .action = action, .status = (enum mxf_rcpt_status)st,
					    .attempts = (unsigned)att, .next_try = (int64_t)next,
					    .reply = reply, .relay = relay, .notify = notify,
					    .orcpt = orcpt};
	e->nrcpt++;
	return 0;
out:
	free(orig);
	free(dest);
	free(rule);
	free(action);
	free(reply);
	free(relay);
	free(notify);
	free(orcpt);
	return r;
}

static int parse_field(struct mxf_env *e, int k, const struct tok *v)
{
	uint64_t n;
	char *s = NULL;
	int r;

	switch (k) {
	case K_ARRIVAL:
		if (dec_num(v->p, v->n, INT64_MAX, &n) < 0)
			return -EBADMSG;
		e->arrival = (int64_t)n;
		return 0;
	case K_SIZE:
		return dec_num(v->p, v->n, UINT64_MAX, &e->size);
	default:
		break;
	}
	if ((r = dec_val(v->p, v->n, &s)) < 0)
		return r;
	char **dst = NULL;
	switch (k) {
	case K_QID:
		if (!mxf_qid_valid(s)) {
			free(s);
			return -EBADMSG;
		}
		memcpy(e->qid, s, MXF_QID_SIZE);
		free(s);
		return 0;
	case K_SENDER: dst = &e->sender; break;
	case K_SRS: dst = &e->srs_sender; break;
	case K_CIP: dst = &e->client_ip; break;
	case K_CNAME: dst = &e->client_name; break;
	case K_HELO: dst = &e->helo; break;
	case K_PROTO: dst = &e->proto; break;
	case K_ORIGIN:
		/* ctl: mxferryctl's verification mail; worker: a worker's
		 * reply (issue 13). */
		if (strcmp(s, "smtpd") && strcmp(s, "bouncer") && strcmp(s, "ctl") &&
		    strcmp(s, "worker")) {
			free(s);
			return -EBADMSG;
		}
		dst = &e->origin;
		break;
	case K_HEADERS: dst = &e->headers; break;
	case K_RET:
	case K_ENVID:
		/* Written only when not empty (canonical). */
		if (!*s || (k == K_RET && strcmp(s, "FULL") && strcmp(s, "HDRS"))) {
			free(s);
			return -EBADMSG;
		}
		dst = k == K_RET ? &e->ret : &e->envid;
		break;
	case K_MSGID:
	case K_SUBJECT:
		if (!*s) { /* written only when not empty (canonical) */
			free(s);
			return -EBADMSG;
		}
		dst = k == K_MSGID ? &e->msgid : &e->subject;
		break;
	default:
		free(s);
		return -EBADMSG;
	}
	free(*dst);
	*dst = s;
	return 0;
}

int mxf_env_parse(const char *buf, size_t len, struct mxf_env **out)
{
	struct mxf_env *e = mxf_env_new("");
	bool seen[K_N] = {false};
	bool ended = false;
	size_t off = 0, lineno = 0;
	int r = -EBADMSG;

	if (!e)
		return -ENOMEM;
	while (off < len) {
		const char *nl = memchr(buf + off, '\n', len - off);
		if (!nl)
			goto fail; /* unterminated last line */
		size_t ll = (size_t)(nl - (buf + off));
		struct tok t[MAXTOK];
		size_t nt;
		if (split(buf + off, ll, t, &nt) < 0)
			goto fail;
		if (lineno == 0) {
			if (nt != 2 || !tok_is(&t[0], "V") || !tok_is(&t[1], "1"))
				goto fail;
		} else if (tok_is(&t[0], "E")) {
			/* The checksum covers every byte before the E line; the
			 * E line must be the file's last bytes. */
			if (nt != 2 || t[1].n != 8 || (size_t)(nl - buf) + 1 != len)
				goto fail;
			char want[9];
			snprintf(want, sizeof(want), "%08x", crc32_ieee(buf, off));
			if (memcmp(want, t[1].p, 8) != 0)
				goto fail;
			ended = true;
		} else if (tok_is(&t[0], "rcpt")) {
			if ((r = parse_rcpt(e, t, nt)) < 0)
				goto fail;
		} else {
			int k;
			for (k = 0; k < K_N; k++)
				if (tok_is(&t[0], keynames[k]))
					break;
			if (k == K_N || seen[k] || nt != 2)
				goto fail;
			seen[k] = true;
			if ((r = parse_field(e, k, &t[1])) < 0)
				goto fail;
		}
		r = -EBADMSG;
		off += ll + 1;
		lineno++;
	}
	if (!ended || e->nrcpt == 0)
		goto fail;
	for (int k = 0; k < K_REQUIRED; k++)
		if (!seen[k])
			goto fail;
	*out = e;
	return 0;
fail:
	mxf_env_free(e);
	return r == -ENOMEM ? r : -EBADMSG;
}

int mxf_env_read(int dirfd, const char *name, struct mxf_env **out)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct stat st;
	int r;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)ENV_MAX_FILE) {
		close(fd);
		return -EBADMSG;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		if (len == cap) {
			/* Grew while we read: not a file we wrote atomically. */
			free(buf);
			close(fd);
			return -EBADMSG;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			free(buf);
			close(fd);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	r = mxf_env_parse(buf, len, out);
	free(buf);
	return r;
}
