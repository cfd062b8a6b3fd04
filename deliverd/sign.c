#include "sign.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dkim.h"
#include "ipc.h"
#include "log.h"

#define SIGN_TIMEOUT_MS 10000
/* Header sections longer than this are not signed (smtpd bounds lines and
 * message size; this only bounds our memory). */
#define HDR_MAX (1024 * 1024)
#define CHUNK 65536

static struct {
	char sock[4096];
	bool arc;
	char authserv_id[256];
} G;

/* One router connection per worker thread (role "signer"): a blocking
 * request/answer, so a slow key operation holds only this job. */
static _Thread_local int sfd = -1;
static _Thread_local uint64_t sreq;

void dsig_init(const char *sock, bool arc, const char *authserv_id)
{
	snprintf(G.sock, sizeof(G.sock), "%s", sock);
	G.arc = arc;
	snprintf(G.authserv_id, sizeof(G.authserv_id), "%s", authserv_id);
}

static int oracle_connect(void)
{
	return mxf_ipc_hello(G.sock, "signer", SIGN_TIMEOUT_MS);
}

/* The router's signature of digest with the key (domain, selector). */
static int oracle_sign(const char *domain, const char *sel, const uint8_t *dg, uint8_t *sig,
		       size_t *siglen)
{
	int r = -EIO;
	for (int attempt = 0; attempt < 2; attempt++) {
		if (sfd < 0 && (sfd = oracle_connect()) < 0) {
			r = sfd;
			sfd = -1;
			continue;
		}
		struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_SIGN);
		struct mxf_ipc_reply *rep = NULL;
		uint64_t req = ++sreq, rq, code;
		r = m ? 0 : -ENOMEM;
		if (r == 0)
			r = mxf_ipc_put_u64(m, F_REQ, req);
		if (r == 0)
			r = mxf_ipc_put_str(m, F_DOMAIN, domain);
		if (r == 0)
			r = mxf_ipc_put_str(m, F_SELECTOR, sel);
		if (r == 0)
			r = mxf_ipc_put_bytes(m, F_DIGEST, dg, MXF_DKIM_DIGEST);
		if (r == 0)
			r = mxf_ipc_call(sfd, m, SIGN_TIMEOUT_MS, &rep);
		mxf_ipc_msg_free(m);
		if (r < 0) {
			/* The router restarted or went away: one fresh connection. */
			close(sfd);
			sfd = -1;
			continue;
		}
		const struct mxf_ipc_view *v = mxf_ipc_reply_view(rep);
		const uint8_t *p;
		size_t pl;
		if (mxf_ipc_type(v) != MXF_MSG_SIGN_REPLY || mxf_ipc_u64(v, F_REQ, 0, &rq) < 0 ||
		    rq != req || mxf_ipc_u64(v, F_CODE, 0, &code) < 0 ||
		    mxf_ipc_bytes(v, F_SIG, 0, &p, &pl) < 0 || pl > MXF_DKIM_SIG_MAX) {
			mxf_ipc_reply_free(rep);
			close(sfd);
			sfd = -1;
			return -EPROTO;
		}
		if (code != 250 || pl == 0) {
			mxf_ipc_reply_free(rep);
			return -ENOKEY;
		}
		memcpy(sig, p, pl);
		*siglen = pl;
		mxf_ipc_reply_free(rep);
		return 0;
	}
	return r;
}

int dsig_webhook(const unsigned char digest[32], unsigned char mac[32])
{
	uint8_t sig[MXF_DKIM_SIG_MAX];
	size_t siglen = 0;
	int r = oracle_sign("", "webhook", digest, sig, &siglen);
	if (r < 0)
		return r;
	if (siglen != 32)
		return -EPROTO;
	memcpy(mac, sig, 32);
	return 0;
}

struct src {
	const char *mem;
	size_t memlen;
	int fd;
	off_t size;
};

static ssize_t src_read(const struct src *s, char *buf, size_t len, off_t off)
{
	if (s->mem) {
		if ((size_t)off >= s->memlen)
			return 0;
		size_t n = s->memlen - (size_t)off < len ? s->memlen - (size_t)off : len;
		memcpy(buf, s->mem + off, n);
		return (ssize_t)n;
	}
	for (;;) {
		ssize_t n = pread(s->fd, buf, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -errno : n;
	}
}

/* "domain selector alg" */
static int parse_spec(const char *spec, char *dom, size_t dl, char *sel, size_t sl,
		      enum mxf_dkim_alg *alg)
{
	char a[16];
	const char *s1 = strchr(spec, ' '), *s2 = s1 ? strchr(s1 + 1, ' ') : NULL;
	if (!s1 || !s2 || (size_t)(s1 - spec) >= dl || (size_t)(s2 - s1 - 1) >= sl ||
	    strlen(s2 + 1) >= sizeof(a))
		return -EINVAL;
	snprintf(dom, dl, "%.*s", (int)(s1 - spec), spec);
	snprintf(sel, sl, "%.*s", (int)(s2 - s1 - 1), s1 + 1);
	snprintf(a, sizeof(a), "%s", s2 + 1);
	return mxf_dkim_alg_parse(a, alg);
}

static int append(char **out, size_t *len, const char *s)
{
	size_t l = strlen(s);
	char *n = realloc(*out, *len + l + 1);
	if (!n)
		return -ENOMEM;
	memcpy(n + *len, s, l + 1);
	*out = n;
	*len += l;
	return 0;
}

/* One signature header (DKIM, or AMS when arc_i): built, digested, signed
 * by the router, finished. *hdr: free(). */
static int one_sig(const char *spec, int arc_i, const struct mxf_dkim_field *f, size_t n,
		   const char **names, size_t nn, const uint8_t *bh, long long t, char **hdr)
{
	char dom[256], sel[MXF_DKIM_SELECTOR_MAX + 1];
	enum mxf_dkim_alg alg;
	uint8_t dg[MXF_DKIM_DIGEST], sig[MXF_DKIM_SIG_MAX];
	size_t sl = 0;
	if (parse_spec(spec, dom, sizeof(dom), sel, sizeof(sel), &alg) < 0)
		return -EINVAL;
	struct mxf_dkim_sig s = {.alg = alg, .domain = dom, .selector = sel, .t = t,
				 .hdrs = names, .nhdrs = nn, .bh = bh, .arc_i = arc_i};
	int r = mxf_dkim_sign_digest(&s, f, n, hdr, dg);
	if (r == 0)
		r = oracle_sign(dom, sel, dg, sig, &sl);
	if (r == 0)
		r = mxf_dkim_finish(hdr, sig, sl);
	if (r < 0) {
		free(*hdr);
		*hdr = NULL;
	}
	return r;
}

/* Our own Authentication-Results (smtpd guarantees exactly one with our
 * authserv-id): its value, trimmed, or NULL. */
static const struct mxf_dkim_field *our_ar(const struct mxf_dkim_field *f, size_t n,
					   const char **val, size_t *vlen)
{
	size_t il = strlen(G.authserv_id);
	for (size_t i = 0; i < n; i++) {
		if (!mxf_dkim_field_is(&f[i], "authentication-results"))
			continue;
		const char *v = memchr(f[i].p, ':', f[i].len) + 1;
		const char *e = f[i].p + f[i].len;
		while (v < e && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
			v++;
		if ((size_t)(e - v) > il && strncasecmp(v, G.authserv_id, il) == 0 &&
		    (v[il] == ';' || v[il] == ' ' || v[il] == '\t' || v[il] == '\r')) {
			*val = v;
			*vlen = (size_t)(e - v);
			return &f[i];
		}
	}
	return NULL;
}

/* The arc= result in our A-R: "pass" only if it says so. */
static bool ar_arc_pass(const char *v, size_t len)
{
	for (size_t i = 0; i + 4 <= len; i++) {
		if (strncasecmp(v + i, "arc=", 4) != 0)
			continue;
		if (i > 0 && v[i - 1] != ';' && v[i - 1] != ' ' && v[i - 1] != '\t' &&
		    v[i - 1] != '\n')
			continue;
		const char *r = v + i + 4;
		size_t left = len - i - 4;
		return left >= 4 && strncasecmp(r, "pass", 4) == 0 &&
		       (left == 4 || r[4] == ' ' || r[4] == ';' || r[4] == '\t' || r[4] == '\r' ||
			r[4] == '(');
	}
	return false;
}

/* The ARC set of instance max_i + 1, on top (AS, AMS, AAR), appended to *out. */
static int arc_set(const char *qid, const char *spec, const struct mxf_dkim_field *f, size_t n,
		   const char **names, size_t nn, const uint8_t *bh, long long t, char **out,
		   size_t *olen)
{
	struct mxf_arc_state st;
	mxf_arc_scan(f, n, &st);
	/* RFC 8617 §5.1.2: a chain that failed is not sealed again; 50 is the
	 * most instances there may be. */
	if (st.failed || st.max_i >= 50) {
		mxf_info("%s: arc: chain %s; not sealed", qid, st.failed ? "failed" : "at 50 sets");
		return 0;
	}
	int inst = st.max_i + 1;
	const char *arv = NULL;
	size_t arl = 0;
	our_ar(f, n, &arv, &arl);
	const char *cv = inst == 1 ? "none" : (!st.broken && arv && ar_arc_pass(arv, arl)) ? "pass"
											    : "fail";
	/* AAR: our A-R's results; without one, that nothing was checked. */
	char *aar = NULL;
	size_t al = 0;
	char head[64];
	snprintf(head, sizeof(head), "ARC-Authentication-Results: i=%d; ", inst);
	int r = append(&aar, &al, head);
	if (r == 0 && arv) {
		char *copy = strndup(arv, arl);
		r = copy ? append(&aar, &al, copy) : -ENOMEM;
		free(copy);
	} else if (r == 0) {
		r = append(&aar, &al, G.authserv_id);
		if (r == 0)
			r = append(&aar, &al, "; none");
	}
	char *ams = NULL, *as = NULL;
	if (r == 0)
		r = one_sig(spec, inst, f, n, names, nn, bh, t, &ams);
	if (r == 0) {
		/* The AMS without its CRLF for the seal's input. */
		char *ams_field = strndup(ams, strlen(ams) - 2);
		char dom[256], sel[MXF_DKIM_SELECTOR_MAX + 1];
		enum mxf_dkim_alg alg;
		uint8_t dg[MXF_DKIM_DIGEST], sig[MXF_DKIM_SIG_MAX];
		size_t sl = 0;
		r = ams_field ? parse_spec(spec, dom, sizeof(dom), sel, sizeof(sel), &alg) : -ENOMEM;
		if (r == 0)
			r = mxf_arc_seal_digest(f, n, inst, cv, dom, sel, t, aar, ams_field, &as, dg);
		free(ams_field);
		if (r == 0)
			r = oracle_sign(dom, sel, dg, sig, &sl);
		if (r == 0)
			r = mxf_dkim_finish(&as, sig, sl);
	}
	if (r == 0)
		r = append(out, olen, as);
	if (r == 0)
		r = append(out, olen, ams);
	if (r == 0)
		r = append(out, olen, aar);
	if (r == 0)
		r = append(out, olen, "\r\n");
	if (r == 0)
		mxf_info("%s: arc: sealed i=%d cv=%s", qid, inst, cv);
	free(aar);
	free(ams);
	free(as);
	return r;
}

char *dsig_sign(const char *qid, const char *pre, char *const *dkim, size_t ndkim,
		const char *arc, const char *mem, size_t memlen, int fd, off_t fsize)
{
	if (!G.arc)
		arc = NULL;
	if (ndkim == 0 && !arc)
		return NULL;
	struct src s = {.mem = mem, .memlen = memlen, .fd = fd, .size = mem ? (off_t)memlen : fsize};
	size_t prelen = strlen(pre), cap = (size_t)s.size < HDR_MAX ? (size_t)s.size : HDR_MAX;
	char *all = malloc(prelen + cap + 1), *out = NULL, *buf = NULL;
	struct mxf_dkim_field *f = NULL;
	struct mxf_dkim_body *body = NULL;
	const char *why = NULL;
	size_t n = 0, olen = 0, got = 0;
	int r = 0;
	if (!all) {
		why = "out of memory";
		goto out;
	}
	memcpy(all, pre, prelen);
	while (got < cap) {
		ssize_t k = src_read(&s, all + prelen + got, cap - got, (off_t)got);
		if (k <= 0) {
			if (k < 0)
				why = "cannot read the message";
			break;
		}
		got += (size_t)k;
	}
	if (why)
		goto out;
	size_t hl, boff = mxf_dkim_split(all + prelen, got, &hl);
	if (hl == got && (off_t)got < s.size) {
		why = "header section too long";
		goto out;
	}
	if ((r = mxf_dkim_fields(all, prelen + hl, &f, &n)) < 0) {
		why = "malformed header section";
		goto out;
	}
	const char **names = calloc(2 * n + 2, sizeof(*names));
	int nn = names ? mxf_dkim_pick_headers(f, n, names, 2 * n + 2) : -ENOMEM;
	if (nn < 0) {
		free(names);
		why = nn == -EINVAL ? "no From header" : "out of memory";
		goto out;
	}
	/* The body as sent: from after the empty line to the end. */
	uint8_t bh[MXF_DKIM_DIGEST];
	if (mxf_dkim_body_new(true, &body) < 0 || !(buf = malloc(CHUNK))) {
		free(names);
		why = "out of memory";
		goto out;
	}
	for (off_t off = (off_t)boff;;) {
		ssize_t k = src_read(&s, buf, CHUNK, off);
		if (k < 0) {
			free(names);
			why = "cannot read the message";
			goto out;
		}
		if (k == 0)
			break;
		mxf_dkim_body_feed(body, buf, (size_t)k);
		off += k;
	}
	mxf_dkim_body_final(body, bh);
	long long t = (long long)time(NULL);
	char *dk = NULL;
	size_t dklen = 0;
	for (size_t i = 0; i < ndkim; i++) {
		char *h = NULL;
		r = one_sig(dkim[i], 0, f, n, names, (size_t)nn, bh, t, &h);
		if (r < 0) {
			char e[400];
			mxf_log_escape(e, sizeof(e), dkim[i], strlen(dkim[i]));
			mxf_warn("%s: dkim: cannot sign with %s: %s; sent without that signature", qid,
				 e, r == -ENOKEY ? "the router has no such key" : strerror(-r));
			continue;
		}
		/* Later signatures above earlier ones, as each hop prepends. */
		if (append(&dk, &dklen, h) == 0)
			mxf_info("%s: dkim: signed %s", qid, dkim[i]);
		free(h);
	}
	if (arc && (r = arc_set(qid, arc, f, n, names, (size_t)nn, bh, t, &out, &olen)) < 0)
		mxf_warn("%s: arc: cannot seal: %s; sent without an ARC set", qid,
			 r == -ENOKEY ? "the router has no such key" : strerror(-r));
	if (dk) {
		append(&out, &olen, dk);
		free(dk);
	}
	free(names);
out:
	if (why)
		mxf_warn("%s: dkim: not signed: %s", qid, why);
	mxf_dkim_body_free(body);
	free(buf);
	free(f);
	free(all);
	return out;
}
