/* Inbound authentication checks (see auth.h). Everything runs on the loop
 * thread except run_checks, which touches only its own struct auth while
 * the loop leaves it alone (the session waits in W_AUTH). */
#include "auth.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <uv.h>

#include <opendkim/dkim.h>

#include "arcv.h"
#include "dmarc.h"
#include "dns.h"
#include "log.h"
#include "smtpd.h"
#include "spf.h"

/* Header octets given to libopendkim (it keeps them all in memory). */
#define DKIM_HDR_MAX (1024 * 1024)
/* Signatures reported (and looked up: each costs a DNS query). */
#define SIGS_MAX 8
#define AR_MAX 4096

enum dmarc_mode { DM_OFF, DM_MONITOR, DM_ENFORCE };

/* Checks block a pool thread each on DNS; the pool also serves queue-file
 * writes (and block lists), so at most JOBS_MAX run and the rest wait in
 * our own queue. */
#define JOBS_MAX 8
static struct auth *waitq, **waitq_tail = &waitq;
static unsigned njobs;

static struct {
	bool enabled;
	bool require_spf_or_dkim;
	bool arc; /* [auth] arc: validate incoming chains (and seal, in deliverd) */
	enum dmarc_mode dmarc;
	char authserv_id[256];
	const char *hostname;
	struct mxf_dns *dns;
	DKIM_LIB *dkim;
} g;

struct sig {
	char d[MXF_DNS_NAME_MAX + 1], s[64], b8[9];
	const char *result; /* pass fail neutral temperror permerror policy */
	bool used;
};

struct auth {
	struct mxf_mailhdr hdr;
	char qid[32], ip[64], helo[256], sender[600];
	bool dmarc_enforce; /* refuse p=reject failures (auth_set_dmarc_enforce) */
	/* header facts */
	unsigned nfrom;
	char from_domain[MXF_DNS_NAME_MAX + 1];
	bool from_bad;
	bool arc_seen;
	unsigned forged_ar;
	/* for the activity log (the first of each; "" when none) */
	char subject[MXF_MAILHDR_SUBJECT_MAX + 1], msgid[MXF_MAILHDR_MSGID_MAX + 1];
	bool subject_seen, msgid_seen;
	/* ARC (common/arcv.c): fed beside libopendkim, verified in the job */
	struct mxf_arcv *arcv;
	struct mxf_arcv_out arc;
	/* DKIM */
	DKIM *dkim;
	bool dkim_broken; /* the library refused the input: dkim=permerror */
	size_t hdr_fed;
	struct sig sig[SIGS_MAX]; /* from the DKIM-Signature fields, in order */
	size_t nsig;
	/* the job */
	uv_work_t work;
	struct mxf_dns *jdns;
	void (*done)(void *);
	void *arg;
	struct auth *next; /* waiting for a pool thread */
	/* results */
	enum mxf_spf_result spf;
	char spf_domain[MXF_DNS_NAME_MAX + 1];
	const char *dkim_result; /* overall when no signature was evaluated */
	struct mxf_dmarc_out dmarc;
	int code;
	const char *escode, *text;
	char header[AR_MAX];
};

static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen);

void auth_init(const struct mxf_config *cfg)
{
	char err[512];
	g.enabled = mxf_config_bool(cfg, "auth", "checks");
	g.require_spf_or_dkim = mxf_config_bool(cfg, "auth", "require_spf_or_dkim");
	g.arc = mxf_config_bool(cfg, "auth", "arc");
	const char *dm = mxf_config_str(cfg, "auth", "dmarc");
	if (strcmp(dm, "off") == 0)
		g.dmarc = DM_OFF;
	else if (strcmp(dm, "monitor") == 0)
		g.dmarc = DM_MONITOR;
	else if (strcmp(dm, "enforce") == 0)
		g.dmarc = DM_ENFORCE;
	else
		mxf_fatal("[auth] dmarc: expected enforce, monitor or off, not '%s'", dm);
	g.hostname = mxf_config_str(cfg, "main", "hostname");
	const char *id = mxf_config_str(cfg, "auth", "authserv_id");
	snprintf(g.authserv_id, sizeof(g.authserv_id), "%s", id[0] ? id : g.hostname);
	for (char *p = g.authserv_id; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= 0x20 || c >= 0x7f || strchr("();\"\\", c))
			mxf_fatal("[auth] authserv_id: '%s' is not a token", g.authserv_id);
		if (c >= 'A' && c <= 'Z')
			*p = (char)(c + 32);
	}
	if (!g.enabled)
		return;
	/* Each check is a few queries; a short timeout keeps a dead zone
	 * from holding the end of DATA for long. */
	if (mxf_dns_new(mxf_config_str(cfg, "main", "dns_resolver"), 3, 2, &g.dns, err,
			sizeof(err)) < 0)
		mxf_fatal("[auth] resolver: %s", err);
	mxf_spf_global_init();
	if (!(g.dkim = dkim_init(NULL, NULL)))
		mxf_fatal("libopendkim: cannot initialise");
	dkim_set_key_lookup(g.dkim, key_lookup);
	/* Key lookups (DNS) only at dkim_eom, which runs on the pool: by
	 * default libopendkim fetches keys in dkim_eoh, on our loop thread. */
	unsigned int flags = DKIM_LIBFLAGS_DELAYSIGPROC;
	dkim_options(g.dkim, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags));
	/* RFC 8301: no rsa-sha1; keys under 1024 bits fail. */
	unsigned int minkey = 1024;
	dkim_options(g.dkim, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &minkey, sizeof(minkey));
}

bool auth_enabled(void)
{
	return g.enabled;
}

/* ---- header section ---- */

static bool tag_sig(void *arg, const char *t, size_t tl, const char *v, size_t vl)
{
	struct sig *s = arg;
	if (tl == 1 && t[0] == 'd') {
		size_t n = vl < sizeof(s->d) - 1 ? vl : sizeof(s->d) - 1;
		for (size_t i = 0; i < n; i++)
			s->d[i] = (char)(v[i] >= 'A' && v[i] <= 'Z' ? v[i] + 32 : v[i]);
		s->d[n] = '\0';
	} else if (tl == 1 && t[0] == 's') {
		snprintf(s->s, sizeof(s->s), "%.*s", (int)vl, v);
	} else if (tl == 1 && t[0] == 'b') {
		size_t o = 0;
		for (size_t i = 0; i < vl && o < 8; i++)
			if (v[i] != ' ' && v[i] != '\t' && v[i] != '\r' && v[i] != '\n')
				s->b8[o++] = v[i];
		s->b8[o] = '\0';
	}
	return true;
}

/* A token fit for an Authentication-Results value: printable, no
 * specials that would end or nest it. */
static bool ar_token_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= 0x20 || c >= 0x7f || strchr("();\"\\,[]<>:", c))
			return false;
	}
	return true;
}

static bool on_field(void *arg, const char *f, size_t len, bool whole)
{
	struct auth *a = arg;
	if (mxf_mailhdr_is(f, len, "Authentication-Results")) {
		char id[256];
		/* Ours can only come from us: one from outside claiming our
		 * authserv-id is a forgery (RFC 8601 §5), removed on the way in. */
		if (mxf_mailhdr_authserv_id(f, len, id, sizeof(id)) == 0 &&
		    strcmp(id, g.authserv_id) == 0) {
			a->forged_ar++;
			return false;
		}
	} else if (mxf_mailhdr_is(f, len, "From")) {
		a->nfrom++;
		if (a->nfrom == 1 && (!whole || mxf_mailhdr_from_domain(f, len, a->from_domain,
									sizeof(a->from_domain)) < 0))
			a->from_bad = true;
	} else if (mxf_mailhdr_is(f, len, "Subject") && !a->subject_seen) {
		a->subject_seen = true;
		mxf_mailhdr_value(f, len, a->subject, sizeof(a->subject));
	} else if (mxf_mailhdr_is(f, len, "Message-ID") && !a->msgid_seen) {
		a->msgid_seen = true;
		mxf_mailhdr_value(f, len, a->msgid, sizeof(a->msgid));
	} else if (mxf_mailhdr_is(f, len, "ARC-Seal")) {
		a->arc_seen = true;
	} else if (mxf_mailhdr_is(f, len, "DKIM-Signature") && whole && a->nsig < SIGS_MAX) {
		const char *colon = memchr(f, ':', len);
		struct sig *s = &a->sig[a->nsig];
		memset(s, 0, sizeof(*s));
		if (colon && mxf_mailhdr_tags(colon + 1, len - (size_t)(colon + 1 - f), tag_sig, s) == 0)
			a->nsig++;
	}
	if (a->arcv)
		mxf_arcv_field(a->arcv, f, len, whole);
	if (a->dkim && !a->dkim_broken) {
		/* libopendkim takes the field without its final CRLF. A field
		 * too long to hold is not given: a signature covering it fails,
		 * which is what an unverifiable field deserves. */
		size_t l = len;
		if (l >= 2 && f[l - 2] == '\r' && f[l - 1] == '\n')
			l -= 2;
		if (whole && a->hdr_fed + l <= DKIM_HDR_MAX) {
			a->hdr_fed += l;
			if (dkim_header(a->dkim, (u_char *)f, l) != DKIM_STAT_OK)
				a->dkim_broken = true;
		}
	}
	return true;
}

static void on_eoh(void *arg)
{
	struct auth *a = arg;
	if (a->arcv)
		mxf_arcv_eoh(a->arcv);
	if (!a->dkim || a->dkim_broken)
		return;
	DKIM_STAT st = dkim_eoh(a->dkim);
	if (st == DKIM_STAT_NOSIG) {
		/* No signature: nothing to hash. */
		dkim_free(a->dkim);
		a->dkim = NULL;
	} else if (st != DKIM_STAT_OK) {
		a->dkim_broken = true;
	}
}

static void on_body(void *arg, const char *p, size_t len)
{
	struct auth *a = arg;
	if (a->arcv)
		mxf_arcv_body(a->arcv, p, len);
	if (a->dkim && !a->dkim_broken && dkim_body(a->dkim, (u_char *)p, len) != DKIM_STAT_OK)
		a->dkim_broken = true;
}

bool auth_dmarc_enforced(void)
{
	return g.dmarc == DM_ENFORCE;
}

void auth_set_dmarc_enforce(struct auth *a, bool enforce)
{
	/* [auth] dmarc = off: no evaluation at all, nothing to enforce. */
	a->dmarc_enforce = enforce && g.dmarc != DM_OFF;
}

struct auth *auth_new(const char *qid, const char *ip, const char *helo, const char *sender)
{
	struct auth *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	if (g.arc && mxf_arcv_new(&a->arcv) < 0) {
		free(a);
		return NULL;
	}
	snprintf(a->qid, sizeof(a->qid), "%s", qid);
	snprintf(a->ip, sizeof(a->ip), "%s", ip);
	snprintf(a->helo, sizeof(a->helo), "%s", helo);
	snprintf(a->sender, sizeof(a->sender), "%s", sender);
	a->dmarc_enforce = g.dmarc == DM_ENFORCE;
	struct mxf_mailhdr_cb cb = {on_field, on_eoh, on_body, a};
	mxf_mailhdr_init(&a->hdr, &cb);
	DKIM_STAT st;
	a->dkim = dkim_verify(g.dkim, (const unsigned char *)a->qid, NULL, &st);
	if (a->dkim)
		dkim_set_user_context(a->dkim, a);
	else
		a->dkim_broken = true;
	a->dkim_result = "none";
	return a;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	if (a->dkim)
		dkim_free(a->dkim);
	mxf_arcv_free(a->arcv);
	free(a);
}

bool auth_in_header(const struct auth *a)
{
	return !mxf_mailhdr_in_body(&a->hdr);
}

size_t auth_filter(struct auth *a, char *p, size_t n)
{
	if (mxf_mailhdr_in_body(&a->hdr)) {
		on_body(a, p, n);
		return n;
	}
	/* The loop is single-threaded: one scratch copy serves all sessions.
	 * The output may be longer than n (a held field comes out): the
	 * caller left AUTH_FILTER_SLACK octets of room. */
	static char scratch[65536];
	if (n > sizeof(scratch))
		abort(); /* the write buffer is never larger */
	memcpy(scratch, p, n);
	return mxf_mailhdr_feed(&a->hdr, scratch, n, p);
}

size_t auth_end(struct auth *a, char *p)
{
	return mxf_mailhdr_end(&a->hdr, p);
}

unsigned long long auth_dropped_octets(const struct auth *a)
{
	return a->hdr.dropped_octets;
}

/* ---- the checks, on a pool thread ---- */

static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	struct auth *a = dkim_get_user_context(dkim);
	const char *sel = (const char *)dkim_sig_getselector(sig);
	const char *dom = (const char *)dkim_sig_getdomain(sig);
	char name[MXF_DNS_NAME_MAX + 2];
	if (!a || !a->jdns) {
		/* Only the pool job may block on DNS. */
		mxf_warn("%s: DKIM key lookup outside the check job", a ? a->qid : "?");
		return DKIM_CBSTAT_TRYAGAIN;
	}
	if (!sel || !dom ||
	    (size_t)snprintf(name, sizeof(name), "%s._domainkey.%s", sel, dom) >= sizeof(name) ||
	    !mxf_dns_name_valid(name))
		return DKIM_CBSTAT_NOTFOUND;
	char **txt = NULL;
	size_t n = 0;
	int rc = mxf_dns_txt(a->jdns, name, &txt, &n, NULL, 0);
	if (rc == MXF_DNS_TEMPFAIL || rc == -ENOMEM)
		return DKIM_CBSTAT_TRYAGAIN;
	if (rc != MXF_DNS_OK)
		return DKIM_CBSTAT_NOTFOUND;
	/* Several records: RFC 6376 §3.6.2.2 leaves the choice; the first. */
	snprintf((char *)buf, buflen, "%s", txt[0]);
	mxf_dns_txt_free(txt, n);
	return DKIM_CBSTAT_CONTINUE;
}

static const char *sig_result(DKIM_SIGINFO *s)
{
	unsigned flags = dkim_sig_getflags(s);
	int err = dkim_sig_geterror(s);
	if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(s) == DKIM_SIGBH_MATCH)
		return "pass";
	if (err == DKIM_SIGERROR_KEYFAIL)
		return "temperror";
	if (err == DKIM_SIGERROR_NOKEY || err == DKIM_SIGERROR_KEYREVOKED ||
	    err == DKIM_SIGERROR_DNSSYNTAX || err == DKIM_SIGERROR_KEYDECODE ||
	    err == DKIM_SIGERROR_KEYTYPEUNKNOWN || err == DKIM_SIGERROR_VERSION ||
	    err == DKIM_SIGERROR_DOMAIN || err == DKIM_SIGERROR_NOTEMAILKEY)
		return "permerror";
	if (err == DKIM_SIGERROR_EXPIRED || err == DKIM_SIGERROR_FUTURE ||
	    err == DKIM_SIGERROR_KEYTOOSMALL)
		return "policy";
	if (!(flags & DKIM_SIGFLAG_PROCESSED) && err == DKIM_SIGERROR_OK)
		return "neutral";
	return "fail";
}

static void run_dkim(struct auth *a)
{
	if (a->dkim_broken) {
		a->dkim_result = a->nsig ? "permerror" : "none";
		return;
	}
	if (!a->dkim)
		return; /* no signature */
	DKIM_STAT st = dkim_eom(a->dkim, NULL);
	if (st == DKIM_STAT_NOSIG)
		return;
	DKIM_SIGINFO **sigs = NULL;
	int n = 0;
	if (dkim_getsiglist(a->dkim, &sigs, &n) != DKIM_STAT_OK || n <= 0) {
		a->dkim_result = st == DKIM_STAT_CANTVRFY ? "temperror" : "permerror";
		return;
	}
	for (int i = 0; i < n && i < SIGS_MAX; i++) {
		const char *d = (const char *)dkim_sig_getdomain(sigs[i]);
		const char *sel = (const char *)dkim_sig_getselector(sigs[i]);
		const char *res = sig_result(sigs[i]);
		/* Match it with the field we parsed (same d= and s=, in order)
		 * for header.b; one we could not parse is reported bare. */
		struct sig *m = NULL;
		for (size_t k = 0; k < a->nsig; k++)
			if (!a->sig[k].used && d && sel && strcasecmp(a->sig[k].d, d) == 0 &&
			    strcmp(a->sig[k].s, sel) == 0) {
				m = &a->sig[k];
				break;
			}
		if (m) {
			m->used = true;
			m->result = res;
		}
	}
	a->dkim_result = "fail";
}

static int dmarc_txt(void *arg, const char *name, char ***txt, size_t *n)
{
	return mxf_dns_txt(arg, name, txt, n, NULL, 0);
}

static void domain_of(const char *addr, char *out, size_t cap)
{
	const char *at = strrchr(addr, '@');
	const char *d = at ? at + 1 : addr;
	size_t o = 0;
	for (; *d && o + 1 < cap; d++)
		out[o++] = (char)(*d >= 'A' && *d <= 'Z' ? *d + 32 : *d);
	while (o > 0 && out[o - 1] == '.')
		o--;
	out[o] = '\0';
}

static void append(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t cap, const char *fmt, ...)
{
	size_t l = strlen(buf);
	if (l >= cap - 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf + l, cap - l, fmt, ap);
	va_end(ap);
}

static void build_header(struct auth *a)
{
	char *h = a->header;
	size_t cap = sizeof(a->header);
	h[0] = '\0';
	append(h, cap, "Authentication-Results: %s;\r\n\tspf=%s", g.authserv_id,
	       mxf_spf_result_name(a->spf));
	/* The identity checked: the whole address when it is a safe token,
	 * else its domain (RFC 8601 §2.3: smtp.mailfrom, smtp.helo). */
	if (a->sender[0]) {
		if (ar_token_ok(a->sender) && strlen(a->sender) <= 256)
			append(h, cap, " smtp.mailfrom=%s", a->sender);
		else if (ar_token_ok(a->spf_domain))
			append(h, cap, " smtp.mailfrom=%s", a->spf_domain);
	} else if (ar_token_ok(a->helo)) {
		append(h, cap, " smtp.helo=%s", a->helo);
	}
	size_t reported = 0;
	for (size_t i = 0; i < a->nsig; i++) {
		struct sig *s = &a->sig[i];
		if (!s->result)
			continue;
		append(h, cap, ";\r\n\tdkim=%s", s->result);
		if (ar_token_ok(s->d))
			append(h, cap, " header.d=%s", s->d);
		if (ar_token_ok(s->s))
			append(h, cap, " header.s=%s", s->s);
		if (ar_token_ok(s->b8))
			append(h, cap, " header.b=%s", s->b8);
		reported++;
	}
	if (!reported)
		append(h, cap, ";\r\n\tdkim=%s", a->dkim_result);
	append(h, cap, ";\r\n\tdmarc=%s", mxf_dmarc_result_name(a->dmarc.result));
	if (a->dmarc.result == MXF_DMARC_PASS || a->dmarc.result == MXF_DMARC_FAIL)
		append(h, cap, " (p=%s)", mxf_dmarc_policy_name(a->dmarc.policy));
	if (a->from_domain[0] && ar_token_ok(a->from_domain))
		append(h, cap, " header.from=%s", a->from_domain);
	/* ARC (RFC 8617 §5.2): deliverd seals cv=pass only on our arc=pass.
	 * The comment's text is fixed (letters, digits, spaces, '='). */
	if (a->arc.result == MXF_ARCV_PASS)
		append(h, cap, ";\r\n\tarc=pass (i=%d)\r\n", a->arc.i);
	else if (a->arc.result == MXF_ARCV_FAIL)
		append(h, cap, ";\r\n\tarc=fail (%s)\r\n", a->arc.why ? a->arc.why : "chain");
	else
		append(h, cap, ";\r\n\tarc=none%s\r\n",
		       a->arc_seen && !a->arcv ? " (chain not evaluated)" : "");
	size_t l = strlen(h);
	if (l + 1 >= cap || l < 2 || h[l - 2] != '\r' || h[l - 1] != '\n') {
		/* Cut short (cannot happen within the bounds above, but the
		 * router drops a peer that sends a malformed field): results
		 * without their properties. */
		snprintf(h, cap,
			 "Authentication-Results: %s;\r\n\tspf=%s;\r\n\tdkim=%s;\r\n\tdmarc=%s;"
			 "\r\n\tarc=%s\r\n",
			 g.authserv_id, mxf_spf_result_name(a->spf),
			 reported ? "permerror (too many signatures to report)" : a->dkim_result,
			 mxf_dmarc_result_name(a->dmarc.result), mxf_arcv_result_name(a->arc.result));
	}
}

static void run_checks(uv_work_t *w)
{
	struct auth *a = w->data;
	char why[256];

	/* SPF: MAIL FROM, or the HELO identity for the null sender. */
	struct mxf_spf_dns sd;
	mxf_spf_dns_resolver(a->jdns, &sd);
	if (a->sender[0])
		domain_of(a->sender, a->spf_domain, sizeof(a->spf_domain));
	else
		domain_of(a->helo, a->spf_domain, sizeof(a->spf_domain));
	if (mxf_spf_check(&sd, a->ip, a->helo, a->sender, g.hostname, &a->spf, why, sizeof(why)) <
	    0)
		a->spf = MXF_SPF_TEMPERROR;

	run_dkim(a);
	if (a->arcv)
		mxf_arcv_verify(a->arcv, dmarc_txt, a->jdns, &a->arc);

	const char *pass[SIGS_MAX];
	size_t npass = 0;
	bool dkim_temp = false;
	for (size_t i = 0; i < a->nsig; i++) {
		if (a->sig[i].result && strcmp(a->sig[i].result, "pass") == 0)
			pass[npass++] = a->sig[i].d;
		if (a->sig[i].result && strcmp(a->sig[i].result, "temperror") == 0)
			dkim_temp = true;
	}

	if (g.dmarc != DM_OFF) {
		struct mxf_dmarc_ctx *c = calloc(1, sizeof(*c));
		if (c) {
			c->txt = dmarc_txt;
			c->arg = a->jdns;
			struct mxf_dmarc_in in = {
				.from_domain = a->nfrom == 1 && !a->from_bad ? a->from_domain : NULL,
				.no_from = a->nfrom == 0,
				.spf_pass = a->spf == MXF_SPF_PASS,
				.spf_domain = a->spf_domain,
				.dkim_pass = pass,
				.ndkim = npass,
			};
			mxf_dmarc_check(c, &in, &a->dmarc);
			free(c);
		} else {
			a->dmarc.result = MXF_DMARC_TEMPERROR;
		}
	}
	build_header(a);

	/* The verdict. */
	a->code = 0;
	if (a->dmarc_enforce && a->dmarc.result == MXF_DMARC_FAIL &&
	    a->dmarc.policy == MXF_DMARC_P_REJECT) {
		a->code = 550, a->escode = "5.7.1";
		a->text = "Email rejected per DMARC policy of the From domain";
	} else if (g.require_spf_or_dkim && a->spf != MXF_SPF_PASS && npass == 0) {
		if (a->spf == MXF_SPF_TEMPERROR || dkim_temp) {
			a->code = 451, a->escode = "4.7.26";
			a->text = "Temporary failure checking SPF and DKIM, try again later";
		} else {
			a->code = 550, a->escode = "5.7.26";
			a->text = "Unauthenticated email is not accepted: it passes neither SPF nor "
				  "DKIM";
		}
	}
}

static void start_jobs(void);

static void checks_done(uv_work_t *w, int status)
{
	struct auth *a = w->data;
	njobs--;
	start_jobs();
	mxf_dns_free(a->jdns);
	a->jdns = NULL;
	if (status != 0) {
		/* Cancelled (shutdown): nothing was decided. */
		a->code = 451, a->escode = "4.3.0", a->text = "Error: temporary failure, try again later";
		a->header[0] = '\0';
	} else {
		char ar[AR_MAX];
		size_t o = 0;
		/* One log line: the header without its folding. */
		for (const char *p = a->header; *p && o + 1 < sizeof(ar); p++)
			if (*p != '\r' && *p != '\n')
				ar[o++] = *p == '\t' ? ' ' : *p;
		ar[o] = '\0';
		mxf_info("%s: %s%s", a->qid, ar + strlen("Authentication-Results: "),
			 a->forged_ar ? " (forged Authentication-Results removed)" : "");
	}
	a->done(a->arg);
}


static void start_jobs(void)
{
	while (waitq && njobs < JOBS_MAX) {
		struct auth *a = waitq;
		waitq = a->next;
		if (!waitq)
			waitq_tail = &waitq;
		a->work.data = a;
		/* Fails only for a NULL callback: a bug. */
		if (uv_queue_work(smtpd.loop, &a->work, run_checks, checks_done) < 0)
			abort();
		njobs++;
	}
}

int auth_check(struct auth *a, void (*done)(void *arg), void *arg)
{
	int r = mxf_dns_clone(g.dns, &a->jdns);
	if (r < 0)
		return r;
	a->done = done;
	a->arg = arg;
	a->next = NULL;
	*waitq_tail = a;
	waitq_tail = &a->next;
	start_jobs();
	return 0;
}

int auth_verdict(const struct auth *a, const char **escode, const char **text)
{
	*escode = a->escode;
	*text = a->text;
	return a->code;
}

const char *auth_header(const struct auth *a)
{
	return a->header;
}

const char *auth_subject(const struct auth *a)
{
	return a->subject;
}

const char *auth_msgid(const struct auth *a)
{
	return a->msgid;
}
