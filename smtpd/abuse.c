/* Block-list lookups for smtpd (see abuse.h). Everything here runs on the
 * loop thread except run_job, which only touches its own job. */
#include "abuse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "dns.h"
#include "dnsbl.h"
#include "log.h"
#include "smtpd.h"

/* Lookups per session (client zones, HELO and sender zones of a few
 * transactions); a client cycling through sender domains gets no more. */
#define BQ_MAX 48
/* Lookups running on the thread pool at once. The pool also serves smtpd's
 * queue-file writes: block lists must never take all of its threads, so
 * main.c sizes the pool above this and the rest waits in our own queue. */
#define JOBS_MAX 16
#define CACHE_BUCKETS 4096
#define CACHE_MAX 100000
#define CACHE_TTL_MAX 3600
#define PTR_MAX 4
#define FCRDNS_NAMES 2 /* PTR names checked forward */
#define HIST_BUCKETS 4096
#define HIST_MAX 100000
#define HIST_HALFLIFE_MS (10 * 60 * 1000)
#define HIST_CAP 4.0 /* refusals counted at most */

enum qstate { Q_PENDING, Q_DONE, Q_FAILED };

struct bq {
	char name[MXF_DNS_NAME_MAX + 1];
	enum qstate state;
	uint64_t deadline; /* loop time after which the verdict stops waiting */
	size_t n;
	struct in_addr a[MXF_DNS_ADDR_MAX];
};

struct blstate {
	int refs; /* the session + each job */
	void *owner;
	void (*ready)(void *owner);
	size_t nq;
	struct bq q[BQ_MAX];
	/* reverse DNS of the client */
	bool rdns_asked;
	enum qstate rdns_state;
	uint64_t rdns_deadline;
	int rdns_rc;
	bool fcrdns;
	char ptr[MXF_DNS_NAME_MAX + 1];
	double history; /* recent refusals of this address, at connect */
};

struct job {
	uv_work_t work;
	struct job *next; /* in the wait queue */
	struct blstate *b;
	bool rdns; /* a PTR + forward lookup, not a list */
	char ip[64];
	bool fcrdns;
	char ptr[MXF_DNS_NAME_MAX + 1];
	size_t idx;
	struct mxf_dns *dns;
	char name[MXF_DNS_NAME_MAX + 1];
	int rc;
	uint32_t ttl;
	size_t n;
	struct in_addr a[MXF_DNS_ADDR_MAX];
};

struct centry {
	struct centry *next;
	uint64_t expires;
	size_t n;
	struct in_addr a[MXF_DNS_ADDR_MAX];
	char name[];
};

static struct mxf_dnsbl_list dnsbl, rhsbl;
static struct mxf_dns *resolver;
static uint64_t timeout_ms;
static int threshold = 100;
static int weights[MXF_SC_N];

struct hist {
	struct hist *next;
	double value;
	uint64_t at;
	char ip[64];
};
static struct hist *hist[HIST_BUCKETS];
static size_t nhist;

/* Greylisting: triplets in memory only. smtpd is chrooted and holds no file,
 * so a restart forgets them: senders retrying then wait one more delay. */
#define GL_BUCKETS 16384
#define GL_MAX 200000
#define GL_PASS_MS (35ULL * 86400 * 1000) /* a triplet that passed, unused */
struct gl {
	struct gl *next;
	uint64_t first, expires;
	bool passed;
	char key[];
};
static struct gl *gl_table[GL_BUCKETS];
static size_t ngl;
static bool gl_on;
static uint64_t gl_delay_ms, gl_window_ms;
static int gl_threshold;
static struct mxf_cidr gl_allow[MXF_CIDR_LIST_MAX];
static size_t ngl_allow;

static uint64_t now_ms(void);
static unsigned fnv(const char *s);
static struct centry *cache[CACHE_BUCKETS];
static size_t ncache, njobs;
static struct job *waitq, **waitq_tail = &waitq;

void bl_init(const struct mxf_config *cfg)
{
	char err[300];
	if (mxf_dnsbl_parse(mxf_config_str(cfg, "smtpd", "dnsbl"), &dnsbl, err, sizeof(err)) < 0)
		mxf_fatal("[smtpd] dnsbl: %s", err);
	if (mxf_dnsbl_parse(mxf_config_str(cfg, "smtpd", "rhsbl"), &rhsbl, err, sizeof(err)) < 0)
		mxf_fatal("[smtpd] rhsbl: %s", err);
	timeout_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "dnsbl_timeout");
	const char *ts = mxf_config_str(cfg, "smtpd", "reject_threshold");
	if (mxf_score_parse(ts, strlen(ts), &threshold) < 0 || threshold <= 0)
		mxf_fatal("[smtpd] reject_threshold: expected a number > 0");
	if (mxf_score_weights_parse(mxf_config_str(cfg, "smtpd", "score_weights"), weights, err,
				    sizeof(err)) < 0)
		mxf_fatal("[smtpd] score_weights: %s", err);
	gl_on = mxf_config_bool(cfg, "smtpd", "greylisting");
	gl_delay_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "greylist_delay") * 1000;
	gl_window_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "greylist_window") * 1000;
	const char *gs = mxf_config_str(cfg, "smtpd", "greylist_threshold");
	if (mxf_score_parse(gs, strlen(gs), &gl_threshold) < 0)
		mxf_fatal("[smtpd] greylist_threshold: expected a number");
	if (mxf_cidr_parse_list(mxf_config_str(cfg, "smtpd", "greylist_allow"), gl_allow,
				MXF_CIDR_LIST_MAX, &ngl_allow, err, sizeof(err)) < 0)
		mxf_fatal("[smtpd] greylist_allow: %s", err);
	if (gl_on)
		mxf_info("greylisting: delay %llu s, window %llu s, from score %d.%02d, %zu allowed "
			 "ranges; triplets kept in memory only",
			 (unsigned long long)gl_delay_ms / 1000, (unsigned long long)gl_window_ms / 1000,
			 gl_threshold / 100, gl_threshold % 100, ngl_allow);
	if (!bl_enabled())
		return;
	/* ldns counts whole seconds; the verdict's own deadline is the bound
	 * that matters, this only frees the thread soon after it. */
	unsigned secs = (unsigned)((timeout_ms + 999) / 1000);
	if (mxf_dns_new(mxf_config_str(cfg, "main", "dns_resolver"), secs, 1, &resolver, err,
			sizeof(err)) < 0)
		mxf_fatal("block lists: %s", err);
	mxf_info("block lists: %zu dnsbl, %zu rhsbl zones, timeout %llu ms, reject threshold "
		 "%d.%02d",
		 dnsbl.n, rhsbl.n, (unsigned long long)timeout_ms, threshold / 100, threshold % 100);
}

bool bl_enabled(void)
{
	return dnsbl.n > 0 || rhsbl.n > 0 || gl_on;
}

bool bl_greylisting(void)
{
	return gl_on;
}

int bl_greylist_threshold(void)
{
	return gl_threshold;
}

enum gl_result bl_greylist(const char *ip, const char *sender, const char *rcpt, int score,
			   uint64_t *left_ms)
{
	char prefix[64];
	*left_ms = 0;
	if (!gl_on || score < gl_threshold || mxf_cidr_match(gl_allow, ngl_allow, ip))
		return GL_SKIP;
	if (mxf_ip_prefix(ip, prefix, sizeof(prefix)) < 0)
		return GL_SKIP;
	size_t klen = strlen(prefix) + strlen(sender) + strlen(rcpt) + 3;
	char *key = malloc(klen);
	if (!key)
		return GL_SKIP; /* no memory: let it through rather than defer forever */
	snprintf(key, klen, "%s|%s|%s", prefix, sender, rcpt);
	uint64_t now = now_ms();
	unsigned h = fnv(key) % GL_BUCKETS;
	struct gl **pp = &gl_table[h], *e = NULL;
	while (*pp) {
		struct gl *g = *pp;
		if (g->expires <= now) {
			*pp = g->next;
			free(g);
			ngl--;
			continue;
		}
		if (strcmp(g->key, key) == 0) {
			e = g;
			break;
		}
		pp = &g->next;
	}
	enum gl_result r;
	if (e && e->passed) {
		e->expires = now + GL_PASS_MS;
		r = GL_PASS;
	} else if (e && now - e->first >= gl_delay_ms) {
		e->passed = true;
		e->expires = now + GL_PASS_MS;
		r = GL_PASS;
	} else if (e) {
		*left_ms = gl_delay_ms - (now - e->first);
		r = GL_DEFER;
	} else if (ngl >= GL_MAX) {
		r = GL_SKIP; /* full of live triplets: greylisting pauses, mail flows */
	} else if ((e = malloc(sizeof(*e) + klen))) {
		memcpy(e->key, key, klen);
		e->first = now;
		e->passed = false;
		/* The retry must come after the delay and within the window. */
		e->expires = now + gl_window_ms;
		e->next = gl_table[h];
		gl_table[h] = e;
		ngl++;
		*left_ms = gl_delay_ms;
		r = GL_DEFER;
	} else {
		r = GL_SKIP;
	}
	free(key);
	return r;
}

bool bl_can_lower(void)
{
	for (size_t i = 0; i < dnsbl.n; i++)
		if (dnsbl.e[i].weight < 0)
			return true;
	for (size_t i = 0; i < rhsbl.n; i++)
		if (rhsbl.e[i].weight < 0)
			return true;
	return false;
}

int bl_reject_threshold(void)
{
	return threshold;
}

static uint64_t now_ms(void)
{
	return uv_now(smtpd.loop);
}

/* ---- cache ---- */

static unsigned fnv(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static unsigned name_hash(const char *s)
{
	return fnv(s) % CACHE_BUCKETS;
}

static struct centry *cache_get(const char *name, uint64_t now)
{
	struct centry **pp = &cache[name_hash(name)];
	while (*pp) {
		struct centry *e = *pp;
		if (e->expires <= now) {
			*pp = e->next;
			free(e);
			ncache--;
			continue;
		}
		if (strcmp(e->name, name) == 0)
			return e;
		pp = &e->next;
	}
	return NULL;
}

static void cache_put(const char *name, uint32_t ttl, const struct in_addr *a, size_t n)
{
	uint64_t now = now_ms();
	if (ttl == 0 || cache_get(name, now))
		return;
	if (ncache >= CACHE_MAX)
		return; /* full of live entries: lookups simply go to the server */
	size_t len = strlen(name) + 1;
	struct centry *e = malloc(sizeof(*e) + len);
	if (!e)
		return;
	e->expires = now + (uint64_t)(ttl > CACHE_TTL_MAX ? CACHE_TTL_MAX : ttl) * 1000;
	e->n = n;
	memcpy(e->a, a, n * sizeof(*a));
	memcpy(e->name, name, len);
	unsigned h = name_hash(name);
	e->next = cache[h];
	cache[h] = e;
	ncache++;
}

/* ---- jobs ---- */

static void release(struct blstate *b)
{
	if (--b->refs == 0)
		free(b);
}

static void run_job(uv_work_t *w)
{
	struct job *j = w->data;
	struct mxf_dns_addr out[MXF_DNS_ADDR_MAX];
	char why[256];
	size_t n = 0;
	if (j->rdns) {
		/* Forward-confirmed reverse DNS: a PTR name whose addresses
		 * include the client's. */
		static _Thread_local char names[PTR_MAX][MXF_DNS_NAME_MAX + 1];
		struct in6_addr want;
		int fam = strchr(j->ip, ':') ? AF_INET6 : AF_INET;
		inet_pton(fam, j->ip, &want);
		j->rc = mxf_dns_ptr(j->dns, j->name, names, PTR_MAX, &n, why, sizeof(why));
		j->fcrdns = false;
		j->ptr[0] = '\0';
		if (j->rc != MXF_DNS_OK)
			return;
		snprintf(j->ptr, sizeof(j->ptr), "%s", names[0]);
		for (size_t i = 0; i < n && i < FCRDNS_NAMES && !j->fcrdns; i++) {
			size_t na = 0;
			if (mxf_dns_addrs(j->dns, names[i], fam, out, MXF_DNS_ADDR_MAX, &na, why,
					  sizeof(why)) != MXF_DNS_OK)
				continue;
			for (size_t k = 0; k < na && !j->fcrdns; k++)
				j->fcrdns = memcmp(&out[k].a, &want, fam == AF_INET ? 4 : 16) == 0;
			if (j->fcrdns)
				snprintf(j->ptr, sizeof(j->ptr), "%s", names[i]);
		}
		return;
	}
	int rc = mxf_dns_addrs(j->dns, j->name, AF_INET, out, MXF_DNS_ADDR_MAX, &n, why,
			       sizeof(why));
	j->rc = rc;
	j->ttl = mxf_dns_last_ttl(j->dns);
	j->n = 0;
	if (rc == MXF_DNS_OK)
		for (size_t i = 0; i < n; i++)
			j->a[j->n++] = out[i].a.v4;
}

static void job_done(uv_work_t *w, int status);

static void job_state(struct job *j, enum qstate st)
{
	if (j->rdns)
		j->b->rdns_state = st;
	else
		j->b->q[j->idx].state = st;
}

static void start_jobs(void)
{
	while (waitq && njobs < JOBS_MAX) {
		struct job *j = waitq;
		waitq = j->next;
		if (!waitq)
			waitq_tail = &waitq;
		/* Nobody waits for it any more: the cache can do without. */
		uint64_t dl = j->rdns ? j->b->rdns_deadline : j->b->q[j->idx].deadline;
		if (!j->b->owner || now_ms() >= dl) {
			job_state(j, Q_FAILED);
			release(j->b);
			free(j);
			continue;
		}
		if (mxf_dns_clone(resolver, &j->dns) < 0) {
			job_state(j, Q_FAILED);
			release(j->b);
			free(j);
			continue;
		}
		j->work.data = j;
		if (uv_queue_work(smtpd.loop, &j->work, run_job, job_done) < 0) {
			mxf_dns_free(j->dns);
			job_state(j, Q_FAILED);
			release(j->b);
			free(j);
			continue;
		}
		njobs++;
	}
}

static void job_done(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct blstate *b = j->b;
	struct bq *q = &b->q[j->idx];
	njobs--;
	mxf_dns_free(j->dns);
	if (j->rdns) {
		b->rdns_rc = status == 0 ? j->rc : MXF_DNS_TEMPFAIL;
		b->rdns_state = b->rdns_rc >= 0 && b->rdns_rc != MXF_DNS_TEMPFAIL ? Q_DONE : Q_FAILED;
		b->fcrdns = j->fcrdns;
		snprintf(b->ptr, sizeof(b->ptr), "%s", j->ptr);
	} else if (status == 0 && j->rc >= 0 && j->rc != MXF_DNS_TEMPFAIL) {
		cache_put(j->name, j->ttl, j->a, j->n);
		q->n = j->n;
		memcpy(q->a, j->a, j->n * sizeof(j->a[0]));
		q->state = Q_DONE;
	} else {
		mxf_debug("block list lookup %s failed (%d)", j->name, j->rc);
		q->state = Q_FAILED;
	}
	free(j);
	start_jobs();
	if (b->owner)
		b->ready(b->owner);
	release(b);
}

static void lookup(struct blstate *b, const char *name)
{
	for (size_t i = 0; i < b->nq; i++)
		if (strcmp(b->q[i].name, name) == 0)
			return;
	if (b->nq >= BQ_MAX)
		return;
	struct bq *q = &b->q[b->nq];
	snprintf(q->name, sizeof(q->name), "%s", name);
	q->deadline = now_ms() + timeout_ms;
	struct centry *e = cache_get(name, now_ms());
	if (e) {
		q->state = Q_DONE;
		q->n = e->n;
		memcpy(q->a, e->a, e->n * sizeof(e->a[0]));
		b->nq++;
		return;
	}
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return;
	q->state = Q_PENDING;
	j->b = b;
	j->idx = b->nq++;
	snprintf(j->name, sizeof(j->name), "%s", name);
	b->refs++;
	*waitq_tail = j;
	waitq_tail = &j->next;
	start_jobs();
}

/* ---- per session ---- */

struct blstate *bl_new(void *owner, void (*ready)(void *owner))
{
	struct blstate *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->refs = 1;
	b->owner = owner;
	b->ready = ready;
	return b;
}

void bl_detach(struct blstate *b)
{
	if (!b)
		return;
	b->owner = NULL;
	release(b);
}

void bl_lookup_ip(struct blstate *b, const char *ip)
{
	char name[MXF_DNS_NAME_MAX + 1];
	for (size_t i = 0; b && i < dnsbl.n; i++)
		if (mxf_dnsbl_ip_name(ip, dnsbl.e[i].zone, name, sizeof(name)) == 0)
			lookup(b, name);
}

void bl_lookup_domain(struct blstate *b, const char *domain)
{
	char name[MXF_DNS_NAME_MAX + 1];
	for (size_t i = 0; b && domain && i < rhsbl.n; i++)
		if (mxf_dnsbl_domain_name(domain, rhsbl.e[i].zone, name, sizeof(name)) == 0)
			lookup(b, name);
}

void bl_lookup_rdns(struct blstate *b, const char *ip)
{
	if (!b || b->rdns_asked || (weights[MXF_SC_NO_PTR] == 0 && weights[MXF_SC_FCRDNS] == 0))
		return;
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return;
	if (mxf_dnsbl_ip_name(ip, strchr(ip, ':') ? "ip6.arpa" : "in-addr.arpa", j->name,
			      sizeof(j->name)) < 0) {
		free(j);
		return;
	}
	b->rdns_asked = true;
	b->rdns_state = Q_PENDING;
	b->rdns_deadline = now_ms() + timeout_ms;
	j->rdns = true;
	j->b = b;
	snprintf(j->ip, sizeof(j->ip), "%s", ip);
	b->refs++;
	*waitq_tail = j;
	waitq_tail = &j->next;
	start_jobs();
}

/* ---- refusals per address, decaying ---- */

static double decayed(const struct hist *h, uint64_t now)
{
	return h->value * exp2(-(double)(now - h->at) / HIST_HALFLIFE_MS);
}

static struct hist *hist_find(const char *ip, uint64_t now, bool create)
{
	struct hist **pp = &hist[fnv(ip) % HIST_BUCKETS];
	while (*pp) {
		struct hist *h = *pp;
		if (strcmp(h->ip, ip) == 0)
			return h;
		if (decayed(h, now) < 0.05) { /* forgotten */
			*pp = h->next;
			free(h);
			nhist--;
			continue;
		}
		pp = &h->next;
	}
	if (!create || nhist >= HIST_MAX)
		return NULL;
	struct hist *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	snprintf(h->ip, sizeof(h->ip), "%s", ip);
	h->at = now;
	h->next = hist[fnv(ip) % HIST_BUCKETS];
	hist[fnv(ip) % HIST_BUCKETS] = h;
	nhist++;
	return h;
}

void bl_history_add(const char *ip)
{
	uint64_t now = now_ms();
	struct hist *h = hist_find(ip, now, true);
	if (!h)
		return;
	h->value = decayed(h, now) + 1;
	if (h->value > HIST_CAP)
		h->value = HIST_CAP;
	h->at = now;
}

void bl_history_load(struct blstate *b, const char *ip)
{
	uint64_t now = now_ms();
	struct hist *h = b ? hist_find(ip, now, false) : NULL;
	if (h)
		b->history = decayed(h, now);
}

uint64_t bl_wait_ms(const struct blstate *b)
{
	uint64_t now = now_ms(), wait = 0;
	if (b && b->rdns_asked && b->rdns_state == Q_PENDING && b->rdns_deadline > now)
		wait = b->rdns_deadline - now;
	for (size_t i = 0; b && i < b->nq; i++)
		if (b->q[i].state == Q_PENDING && b->q[i].deadline > now &&
		    b->q[i].deadline - now > wait)
			wait = b->q[i].deadline - now;
	return wait;
}

void bl_unanswered(const struct blstate *b, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = '\0';
	if (b && b->rdns_asked && b->rdns_state != Q_DONE)
		o = (size_t)snprintf(out, cap, "PTR");
	for (size_t i = 0; b && i < b->nq && o < cap; i++) {
		if (b->q[i].state == Q_DONE)
			continue;
		int n = snprintf(out + o, cap - o, "%s%s", o ? " " : "", b->q[i].name);
		if (n < 0)
			break;
		o += (size_t)n;
	}
}

static const struct bq *find(const struct blstate *b, const char *name)
{
	for (size_t i = 0; i < b->nq; i++)
		if (b->q[i].state == Q_DONE && strcmp(b->q[i].name, name) == 0)
			return &b->q[i];
	return NULL;
}

static void append(char *out, size_t cap, const char *what, const char *subj, const char *zone)
{
	size_t o = strlen(out);
	if (o < cap)
		snprintf(out + o, cap - o, "%s%s [%s] blocked using %s", o ? "; " : "", what, subj,
			 zone);
}

static void add_detail(char *detail, size_t dcap, const char *name, int w)
{
	size_t o = strlen(detail);
	if (o < dcap)
		snprintf(detail + o, dcap - o, "%s%s*%s%d.%02d", o ? " " : "", name,
			 w < 0 ? "-" : "", abs(w) / 100, abs(w) % 100);
}

static int score_list(const struct blstate *b, const struct mxf_dnsbl_list *l, const char *subj,
		      bool ip, const char *what, char *reason, size_t rcap, char *detail,
		      size_t dcap)
{
	char name[MXF_DNS_NAME_MAX + 1];
	int score = 0;
	if (!subj || !subj[0])
		return 0;
	for (size_t i = 0; i < l->n; i++) {
		const struct mxf_dnsbl_entry *e = &l->e[i];
		int r = ip ? mxf_dnsbl_ip_name(subj, e->zone, name, sizeof(name))
			   : mxf_dnsbl_domain_name(subj, e->zone, name, sizeof(name));
		const struct bq *q = r == 0 ? find(b, name) : NULL;
		if (!q || !mxf_dnsbl_match(e, q->a, q->n))
			continue;
		score += e->weight;
		if (e->weight > 0)
			append(reason, rcap, what, subj, e->zone);
		add_detail(detail, dcap, e->zone, e->weight);
	}
	return score;
}

static int factor(enum mxf_score_factor f, int times, char *detail, size_t dcap)
{
	int w = weights[f] * times;
	if (w != 0)
		add_detail(detail, dcap, mxf_score_factor_name(f), w);
	return w;
}

int bl_verdict(const struct blstate *b, const struct bl_facts *f, char *reason, size_t rcap,
	       char *detail, size_t dcap)
{
	reason[0] = detail[0] = '\0';
	if (!b)
		return 0;
	int score = score_list(b, &dnsbl, f->ip, true, "client", reason, rcap, detail, dcap);
	score += score_list(b, &rhsbl, f->helo, false, "helo", reason, rcap, detail, dcap);
	score += score_list(b, &rhsbl, f->sdomain, false, "sender domain", reason, rcap, detail,
			    dcap);
	bool lists = reason[0] != '\0';
	/* A lookup that failed (timeout, SERVFAIL) says nothing either way. */
	if (b->rdns_asked && b->rdns_state == Q_DONE) {
		if (b->rdns_rc != MXF_DNS_OK)
			score += factor(MXF_SC_NO_PTR, 1, detail, dcap);
		else if (!b->fcrdns)
			score += factor(MXF_SC_FCRDNS, 1, detail, dcap);
	}
	if (f->helo && f->helo[0]) {
		enum mxf_helo_verdict h = mxf_helo_check(f->helo, f->ip);
		if (h == MXF_HELO_LITERAL_OTHER)
			score += factor(MXF_SC_HELO_LITERAL, 1, detail, dcap);
		else if (h == MXF_HELO_NOT_FQDN)
			score += factor(MXF_SC_HELO_FQDN, 1, detail, dcap);
	}
	if (f->pipelining)
		score += factor(MXF_SC_PIPELINING, 1, detail, dcap);
	if (f->bad_commands)
		score += factor(MXF_SC_BAD_COMMAND, f->bad_commands > 3 ? 3 : (int)f->bad_commands,
				detail, dcap);
	int hw = (int)lround(b->history * weights[MXF_SC_HISTORY]);
	if (hw != 0) {
		score += hw;
		add_detail(detail, dcap, "history", hw);
	}
	if (!lists && score > 0)
		snprintf(reason, rcap, "client [%s] has a poor reputation (%s)", f->ip, detail);
	return score;
}

const char *bl_ptr_name(const struct blstate *b)
{
	return b && b->rdns_state == Q_DONE && b->ptr[0] ? b->ptr : NULL;
}
