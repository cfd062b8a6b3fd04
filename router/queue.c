/* The queue manager: an in-memory index over the spool (the files are the
 * truth, DESIGN.md §2), delivery jobs to deliverd, retries, bounces, and
 * start-up recovery. Runs on the event loop; envelope rewrites after a
 * delivery result are done here, synchronously. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "queueid.h"
#include "router.h"
#include "rulesdb.h"
#include "spool.h"
#include "strbuf.h"

#define MAX_INFLIGHT 32    /* delivery jobs handed to deliverd at once */
#define JOB_MAX_RCPT 50    /* recipients per job (one SMTP transaction) */
#define BOUNCE_RETRY 60    /* seconds before retrying a bounce that could not be queued */
#define NBUCKET 4096

/* The notifications the bouncer makes for a message (RFC 3464 Action). */
enum bounce_kind {
	BK_FAILED,  /* FAILED recipients: a bounce */
	BK_DELAYED, /* DEFERRED recipients that want it: a delay warning, no state change */
	BK_RELAYED, /* RELAYED recipients: a success notice (NOTIFY=SUCCESS, peer without DSN) */
};

struct qmsg {
	struct qmsg *next, *prev; /* every message */
	struct qmsg *hnext;       /* hash chain */
	struct mxf_env *env;
	enum mxf_spool_dir dir; /* where the envelope lives now */
	unsigned jobs;          /* delivery jobs queued or in flight */
	bool *busy;             /* per recipient: part of a job */
	bool *bouncing;         /* per recipient: part of the bounce in flight */
	bool bounce_inflight;
	uint64_t bounce_req;
	struct peer *bounce_peer;
	int64_t bounce_after; /* no bounce attempt before this time */
	enum bounce_kind bounce_kind; /* what the notification in flight is */
	bool delay_warned;    /* one was sent (in memory: a restart may send another) */
	int64_t wake;         /* 0, or when to look at this message again */
	bool held;            /* mxferryctl queue hold: nothing is delivered until released */
	bool del;             /* mxferryctl queue delete: removed when nothing is in flight */
	/* Committed by this router and its content handed to nobody else but
	 * delivery jobs (each reports before the message is removed): its
	 * inode may become a later message's queue file. Not for recovered
	 * messages (a deliverd job of the router before a restart may still
	 * read them), returned mail (the bouncer reads it while it is relayed)
	 * or an operator's delete. */
	bool content_private;
	int64_t arrival_ms;   /* for the latency metric: accepted (unix ms) */
};

/* Per destination domain: jobs in flight and the last job's start, so one
 * slow upstream cannot take every delivery slot. */
struct dstate {
	struct dstate *next;
	unsigned inflight;
	int64_t last_ms;
	char domain[256];
};

struct job {
	struct job *next, *prev;
	struct qmsg *m;
	uint64_t req;
	char domain[256];
	size_t n;
	size_t ridx[JOB_MAX_RCPT];
	struct peer *peer; /* NULL while waiting */
	struct dstate *ds; /* set while in flight */
	bool webhook;      /* one "webhook" recipient: deliverd POSTs to its URL */
};

struct jlist {
	struct job *head, *tail;
};
/* jobs waiting for a deliverd, and jobs in flight */
static struct jlist waiting, inflight;
static unsigned ninflight;
static struct qmsg *msgs;
static struct qmsg *bucket[NBUCKET];
static uv_timer_t wake_timer;
static int64_t timer_at; /* when wake_timer fires, 0 = stopped */
static uv_timer_t rate_timer;  /* dispatch again when a domain's rate allows */
static uv_timer_t rules_timer; /* data_version poll */
static struct dstate *dstates;

static struct dstate *dstate_get(const char *domain)
{
	for (struct dstate *d = dstates; d; d = d->next)
		if (strcmp(d->domain, domain) == 0)
			return d;
	struct dstate *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	snprintf(d->domain, sizeof(d->domain), "%s", domain);
	d->next = dstates;
	dstates = d;
	return d;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- lists ---- */
static void jl_append(struct jlist *l, struct job *j)
{
	j->next = NULL;
	j->prev = l->tail;
	if (l->tail)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
}

static void jl_prepend(struct jlist *l, struct job *j)
{
	j->prev = NULL;
	j->next = l->head;
	if (l->head)
		l->head->prev = j;
	else
		l->tail = j;
	l->head = j;
}

static void jl_remove(struct jlist *l, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		l->head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		l->tail = j->prev;
	j->next = j->prev = NULL;
}

static unsigned hash_qid(const char *qid)
{
	uint32_t h = 2166136261u;
	for (; *qid; qid++)
		h = (h ^ (uint8_t)*qid) * 16777619u;
	return h % NBUCKET;
}

static struct qmsg *find_msg(const char *qid)
{
	for (struct qmsg *m = bucket[hash_qid(qid)]; m; m = m->hnext)
		if (strcmp(m->env->qid, qid) == 0)
			return m;
	return NULL;
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* Wall clock in ms (arrival times are wall clock: they survive restarts). */
static int64_t now_ms_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void queue_count(size_t *counts)
{
	for (const struct qmsg *m = msgs; m; m = m->next)
		counts[m->dir]++;
}

static char *esc(char *buf, size_t cap, const char *s)
{
	return mxf_log_escape(buf, cap, s ? s : "", s ? strlen(s) : 0);
}

static struct qmsg *msg_new(struct mxf_env *e, enum mxf_spool_dir dir)
{
	struct qmsg *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->busy = calloc(e->nrcpt, sizeof(bool));
	m->bouncing = calloc(e->nrcpt, sizeof(bool));
	if (!m->busy || !m->bouncing) {
		free(m->busy);
		free(m->bouncing);
		free(m);
		return NULL;
	}
	m->env = e;
	m->dir = dir;
	m->arrival_ms = e->arrival * 1000;
	unsigned h = hash_qid(e->qid);
	m->hnext = bucket[h];
	bucket[h] = m;
	m->next = msgs;
	if (msgs)
		msgs->prev = m;
	msgs = m;
	return m;
}

static void msg_free(struct qmsg *m)
{
	for (struct qmsg **pp = &bucket[hash_qid(m->env->qid)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	}
	if (m->prev)
		m->prev->next = m->next;
	else
		msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
	mxf_env_free(m->env);
	free(m->busy);
	free(m->bouncing);
	free(m);
}

/* The envelope on disk follows the in-memory state. A failed rewrite is
 * logged: the older state on disk at worst repeats a delivery after a
 * crash (at least once), it never loses one. */
static void msg_save(struct qmsg *m)
{
	int r = mxf_spool_env_write(R.spool, m->dir, m->env);
	if (r < 0)
		mxf_err("%s: cannot rewrite envelope in %s/: %s", m->env->qid,
			mxf_spool_dir_name(m->dir), strerror(-r));
}

static void msg_move(struct qmsg *m, enum mxf_spool_dir to)
{
	if (m->dir == to)
		return;
	int r = mxf_spool_move(R.spool, m->env->qid, m->dir, to);
	/* -EIO from a directory fsync: the rename itself happened. */
	if (r == 0 || (r < 0 && faccessat(mxf_spool_dirfd(R.spool, to), m->env->qid, F_OK,
					   AT_SYMLINK_NOFOLLOW) == 0)) {
		if (r < 0)
			mxf_err("%s: move to %s/: %s", m->env->qid, mxf_spool_dir_name(to),
				strerror(-r));
		m->dir = to;
		return;
	}
	mxf_err("%s: cannot move envelope %s/ -> %s/: %s", m->env->qid,
		mxf_spool_dir_name(m->dir), mxf_spool_dir_name(to), strerror(-r));
}

/* ---- timer ---- */
static void on_wake(uv_timer_t *t);

static void timer_update(void)
{
	int64_t min = 0;
	for (struct qmsg *m = msgs; m; m = m->next)
		if (m->wake && (!min || m->wake < min))
			min = m->wake;
	if (!min) {
		uv_timer_stop(&wake_timer);
		timer_at = 0;
		return;
	}
	if (timer_at == min && uv_is_active((uv_handle_t *)&wake_timer))
		return;
	int64_t now = now_s();
	uint64_t ms = min > now ? (uint64_t)(min - now) * 1000 : 0;
	timer_at = min;
	uv_timer_start(&wake_timer, on_wake, ms, 0);
}

static void msg_run(struct qmsg *m);

static void on_wake(uv_timer_t *t)
{
	(void)t;
	int64_t now = now_s();
	timer_at = 0;
	/* Collect first, then run by name: running one message can finish
	 * (and free) another through dispatch(). */
	size_t n = 0, cap = 0;
	char (*due)[MXF_QID_SIZE] = NULL;
	for (struct qmsg *m = msgs; m; m = m->next) {
		if (!m->wake || m->wake > now)
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			void *nd = realloc(due, nc * sizeof(*due));
			if (!nd)
				break; /* the rest stay due: the timer fires again */
			due = nd;
			cap = nc;
		}
		memcpy(due[n++], m->env->qid, MXF_QID_SIZE);
	}
	for (size_t i = 0; i < n; i++) {
		struct qmsg *m = find_msg(due[i]);
		if (m && m->wake && m->wake <= now) {
			m->wake = 0;
			msg_run(m);
		}
	}
	free(due);
	timer_update();
}

/* ---- delivery jobs ---- */
/* A webhook URL's host (lower case), for the per-destination bounds: the
 * part after "scheme://" and any "user@", before the port or path. */
static void url_host(const char *url, char *out, size_t len)
{
	const char *p = strstr(url, "://");
	p = p ? p + 3 : url;
	size_t n = strcspn(p, "/?#");
	const char *at = memchr(p, '@', n);
	if (at) {
		n -= (size_t)(at + 1 - p);
		p = at + 1;
	}
	size_t h = *p == '[' ? strcspn(p, "]") + (p[strcspn(p, "]")] ? 1 : 0) : strcspn(p, ":/?#");
	if (h > n)
		h = n;
	snprintf(out, len, "%.*s", (int)h, p);
	for (char *q = out; *q; q++)
		*q = (char)tolower((unsigned char)*q);
}

static void domain_of(const char *addr, char *out, size_t len)
{
	const char *at = strrchr(addr, '@');
	snprintf(out, len, "%s", at ? at + 1 : "");
	for (char *p = out; *p; p++)
		*p = (char)tolower((unsigned char)*p);
}

static void dispatch(void);

/* Splits "CODE ESC text" as stored in an envelope. */
static void split_reply(const char *reply, unsigned *code, char *ecode, size_t elen,
			const char **text)
{
	*code = 0;
	ecode[0] = '\0';
	*text = reply;
	if (strlen(reply) >= 3 && isdigit((unsigned char)reply[0]) &&
	    isdigit((unsigned char)reply[1]) && isdigit((unsigned char)reply[2]) &&
	    (reply[3] == ' ' || reply[3] == '\0')) {
		*code = (unsigned)((reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0'));
		const char *p = reply + 3;
		while (*p == ' ')
			p++;
		size_t n = strcspn(p, " ");
		if (n > 0 && n < elen && isdigit((unsigned char)p[0]) && p[1] == '.') {
			memcpy(ecode, p, n);
			ecode[n] = '\0';
			p += n;
			while (*p == ' ')
				p++;
		}
		*text = p;
	}
}

static void log_result(const struct qmsg *m, const struct mxf_env_rcpt *r, const char *status,
		       const char *dsn)
{
	char e1[1024], e2[1024], e3[512], e4[2048];
	mxf_info("%s: to=<%s>, orig_to=<%s>, relay=%s, delay=%lld, dsn=%s, status=%s (%s)",
		 m->env->qid, esc(e1, sizeof(e1), r->dest), esc(e2, sizeof(e2), r->orig),
		 *r->relay ? esc(e3, sizeof(e3), r->relay) : "none",
		 (long long)(now_s() - m->env->arrival), dsn, status, esc(e4, sizeof(e4), r->reply));
}

/* Delivery could not even be attempted (no content fd, internal error):
 * a temporary failure for the job's recipients. */
static void apply_one(struct qmsg *m, size_t i, unsigned code, const char *ecode,
		      const char *text, const char *relay, bool peer_dsn);

static void job_finish(struct job *j)
{
	struct qmsg *m = j->m;
	for (size_t k = 0; k < j->n; k++)
		m->busy[j->ridx[k]] = false;
	m->jobs--;
	free(j);
}

static void job_fail_local(struct job *j, const char *why)
{
	struct qmsg *m = j->m;
	for (size_t k = 0; k < j->n; k++)
		apply_one(m, j->ridx[k], 451, "4.3.0", why, "", false);
	msg_save(m);
	job_finish(j);
	if (m->jobs == 0)
		msg_run(m);
}

static struct mxf_ipc_msg *job_message(const struct job *j)
{
	const struct mxf_env *e = j->m->env;
	struct mxf_ipc_msg *msg = mxf_ipc_msg_new(MXF_MSG_DELIVER);
	if (j->webhook) {
		/* Issue 13: the original sender and the custom address go into
		 * the JSON; the router's header block carries our
		 * Authentication-Results. No SRS, DSN, transport or DKIM. */
		const struct mxf_env_rcpt *r = &e->rcpt[j->ridx[0]];
		if (!msg || mxf_ipc_put_u64(msg, F_REQ, j->req) < 0 ||
		    mxf_ipc_put_str(msg, F_QID, e->qid) < 0 ||
		    mxf_ipc_put_str(msg, F_SENDER, e->sender) < 0 ||
		    mxf_ipc_put_str(msg, F_DOMAIN, j->domain) < 0 ||
		    mxf_ipc_put_u64(msg, F_RIDX, j->ridx[0]) < 0 ||
		    mxf_ipc_put_str(msg, F_RCPT, r->orig) < 0 ||
		    mxf_ipc_put_str(msg, F_WEBHOOK, r->dest) < 0 ||
		    mxf_ipc_put_str(msg, F_HEADERS, e->headers) < 0)
			goto fail;
		return msg;
	}
	if (!msg || mxf_ipc_put_u64(msg, F_REQ, j->req) < 0 ||
	    mxf_ipc_put_str(msg, F_QID, e->qid) < 0 ||
	    mxf_ipc_put_str(msg, F_SENDER, e->srs_sender) < 0 ||
	    mxf_ipc_put_str(msg, F_DOMAIN, j->domain) < 0)
		goto fail;
	/* DSN requests (RFC 3461) travel on: deliverd passes them to a peer
	 * that offers DSN. Empty values mean "not given". */
	for (size_t k = 0; k < j->n; k++) {
		const struct mxf_env_rcpt *r = &e->rcpt[j->ridx[k]];
		if (mxf_ipc_put_u64(msg, F_RIDX, j->ridx[k]) < 0 ||
		    mxf_ipc_put_str(msg, F_RCPT, r->dest) < 0 ||
		    mxf_ipc_put_str(msg, F_DSN_NOTIFY, r->notify) < 0 ||
		    mxf_ipc_put_str(msg, F_ORCPT, r->orcpt) < 0)
			goto fail;
	}
	if ((e->ret[0] && mxf_ipc_put_str(msg, F_RET, e->ret) < 0) ||
	    (e->envid[0] && mxf_ipc_put_str(msg, F_ENVID, e->envid) < 0) ||
	    mxf_ipc_put_str(msg, F_HEADERS, e->headers) < 0)
		goto fail;
	/* A per-domain transport (rules.db) overrides the MX lookup. */
	const char *hop = mxf_ruleset_nexthop(R.rules, j->domain);
	if (hop && mxf_ipc_put_str(msg, F_NEXTHOP, hop) < 0)
		goto fail;
	if (sign_add_specs(msg, e, j->ridx, j->n) < 0)
		goto fail;
	return msg;
fail:
	mxf_ipc_msg_free(msg);
	return NULL;
}

static void on_rate(uv_timer_t *t)
{
	(void)t;
	dispatch();
}

/* The oldest waiting job whose domain is under its bounds; NULL if none.
 * *wait_ms: when a rate-limited domain may go next (0: none waits). */
static struct job *pick_job(int64_t now, int64_t *wait_ms)
{
	struct job *best = NULL;
	*wait_ms = 0;
	for (struct job *j = waiting.head; j; j = j->next) {
		if (best && (j->m->env->arrival > best->m->env->arrival ||
			     (j->m->env->arrival == best->m->env->arrival &&
			      strcmp(j->m->env->qid, best->m->env->qid) >= 0)))
			continue;
		struct dstate *d = dstate_get(j->domain);
		if (!d)
			continue;
		if (d->inflight >= R.dom_conc)
			continue;
		if (R.dom_rate && d->last_ms) {
			int64_t gap = 60000 / (int64_t)R.dom_rate;
			if (now - d->last_ms < gap) {
				int64_t w = gap - (now - d->last_ms);
				if (!*wait_ms || w < *wait_ms)
					*wait_ms = w;
				continue;
			}
		}
		best = j;
	}
	return best;
}

static void dispatch(void)
{
	while (waiting.head && ninflight < MAX_INFLIGHT) {
		struct peer *p = peer_find_role(ROLE_DELIVERD);
		if (!p)
			return;
		int64_t now = now_ms(), wait = 0;
		struct job *j = pick_job(now, &wait);
		if (!j) {
			if (wait > 0)
				uv_timer_start(&rate_timer, on_rate, (uint64_t)wait, 0);
			return;
		}
		jl_remove(&waiting, j);
		int fd = mxf_spool_open_content(R.spool, j->m->env->qid);
		if (fd < 0) {
			mxf_err("%s: cannot open content: %s", j->m->env->qid, strerror(-fd));
			job_fail_local(j, "queue file read error");
			continue;
		}
		struct mxf_ipc_msg *msg = job_message(j);
		int r = msg ? peer_send(p, msg, fd) : -E2BIG;
		mxf_ipc_msg_free(msg);
		close(fd);
		if (r == -E2BIG) {
			job_fail_local(j, "delivery request too large");
			continue;
		}
		if (r < 0) {
			/* The peer is going away; try the next one. */
			jl_prepend(&waiting, j);
			peer_close(p);
			continue;
		}
		j->peer = p;
		j->ds = dstate_get(j->domain);
		if (j->ds) {
			j->ds->inflight++;
			j->ds->last_ms = now;
		}
		p->jobs++;
		ninflight++;
		jl_append(&inflight, j);
	}
}

/* A job leaves the in-flight list (answered, or its deliverd went away). */
static void inflight_remove(struct job *j)
{
	jl_remove(&inflight, j);
	ninflight--;
	if (j->ds && j->ds->inflight)
		j->ds->inflight--;
	j->ds = NULL;
}

/* Creates jobs for recipients due now; returns how many were made. */
static unsigned make_jobs(struct qmsg *m, int64_t now)
{
	struct mxf_env *e = m->env;
	unsigned made = 0;
	bool *taken = calloc(e->nrcpt, sizeof(bool));
	if (!taken)
		return 0;
	for (size_t i = 0; i < e->nrcpt; i++) {
		struct mxf_env_rcpt *r = &e->rcpt[i];
		bool due = r->status == MXF_RS_PENDING ||
			   (r->status == MXF_RS_DEFERRED && r->next_try <= now);
		if (taken[i] || m->busy[i] || !due)
			continue;
		/* One job per destination domain, JOB_MAX_RCPT at most. */
		struct job *j = calloc(1, sizeof(*j));
		if (!j)
			break;
		j->m = m;
		j->req = ++R.next_req;
		if (strcmp(r->action, "webhook") == 0) {
			/* One POST per job: its own URL, result and retry. */
			j->webhook = true;
			url_host(r->dest, j->domain, sizeof(j->domain));
			taken[i] = true;
			m->busy[i] = true;
			j->ridx[j->n++] = i;
			m->jobs++;
			made++;
			jl_append(&waiting, j);
			continue;
		}
		domain_of(r->dest, j->domain, sizeof(j->domain));
		for (size_t k = i; k < e->nrcpt && j->n < JOB_MAX_RCPT; k++) {
			struct mxf_env_rcpt *rk = &e->rcpt[k];
			bool kdue = rk->status == MXF_RS_PENDING ||
				    (rk->status == MXF_RS_DEFERRED && rk->next_try <= now);
			char dom[256];
			domain_of(rk->dest, dom, sizeof(dom));
			if (taken[k] || m->busy[k] || !kdue || strcmp(dom, j->domain) != 0 ||
			    strcmp(rk->action, "webhook") == 0)
				continue;
			taken[k] = true;
			m->busy[k] = true;
			j->ridx[j->n++] = k;
		}
		m->jobs++;
		made++;
		jl_append(&waiting, j);
	}
	free(taken);
	return made;
}

/* ---- bounces ---- */
/* Does a NOTIFY value (RFC 3461 §4.1) ask for this kind of DSN? None given
 * means the MTA's default: a failure DSN, and delay warnings when the
 * operator enabled them ([bouncer] delay_warning_time). NEVER, or a list
 * without the keyword, means none. */
static bool notify_has(const char *notify, const char *what)
{
	if (!notify || !*notify)
		return true;
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", notify);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		if (strcasecmp(t, what) == 0)
			return true;
	return false;
}

/* Asks the bouncer for a DSN of kind (enum bounce_kind). */
static bool send_bounce(struct qmsg *m, enum bounce_kind kind)
{
	bool delay = kind == BK_DELAYED, relayed = kind == BK_RELAYED;
	struct peer *p = peer_find_role(ROLE_BOUNCER);
	if (!p)
		return false;
	struct mxf_env *e = m->env;
	int fd = mxf_spool_open_content(R.spool, e->qid);
	if (fd < 0) {
		mxf_err("%s: cannot open content for the bounce: %s", e->qid, strerror(-fd));
		return false;
	}
	uint64_t req = ++R.next_req;
	struct mxf_ipc_msg *msg = mxf_ipc_msg_new(MXF_MSG_BOUNCE);
	int r = msg ? 0 : -ENOMEM;
	if (r == 0 && ((r = mxf_ipc_put_u64(msg, F_REQ, req)) < 0 ||
		       (r = mxf_ipc_put_str(msg, F_QID, e->qid)) < 0 ||
		       (r = mxf_ipc_put_str(msg, F_SENDER, e->sender)) < 0 ||
		       (r = mxf_ipc_put_str(msg, F_RET, e->ret)) < 0 ||
		       (r = mxf_ipc_put_str(msg, F_ENVID, e->envid)) < 0 ||
		       (r = mxf_ipc_put_str(msg, F_PROTO, e->proto)) < 0 ||
		       (delay && (r = mxf_ipc_put_str(msg, F_ACTION, "delayed")) < 0) ||
		       (relayed && (r = mxf_ipc_put_str(msg, F_ACTION, "relayed")) < 0)))
		goto out;
	size_t added = 0;
	int64_t now = now_s();
	for (size_t i = 0; i < e->nrcpt && r == 0; i++) {
		const struct mxf_env_rcpt *rc = &e->rcpt[i];
		if (delay     ? rc->status != MXF_RS_DEFERRED || !notify_has(rc->notify, "DELAY")
		    : relayed ? rc->status != MXF_RS_RELAYED
			      : rc->status != MXF_RS_FAILED)
			continue;
		unsigned code;
		char ecode[32], text[512];
		const char *t;
		split_reply(rc->reply, &code, ecode, sizeof(ecode), &t);
		if (relayed) {
			if (code < 200 || code > 299)
				code = 250;
			if (ecode[0] != '2')
				snprintf(ecode, sizeof(ecode), "2.0.0");
		} else if (code < 400 || code > 599) {
			code = delay ? 451 : 550;
		}
		/* A temporary failure that became final did so because the
		 * message outlived max_queue_lifetime: 4.4.7 (RFC 3463), the
		 * last reply stays in the diagnostic. */
		if (delay && !ecode[0])
			snprintf(ecode, sizeof(ecode), "4.0.0");
		else if (!delay && !relayed && (code < 500 || !ecode[0]))
			snprintf(ecode, sizeof(ecode), "%s", code < 500 ? "4.4.7" : "5.0.0");
		snprintf(text, sizeof(text), "%s", t);
		const char *to = *rc->dest ? rc->dest : rc->orig;
		const char *relay = *rc->relay ? rc->relay : "none";
		/* The lists are parallel: add a recipient whole or not at all.
		 * Those that do not fit go in a later bounce. */
		size_t cur;
		mxf_ipc_msg_data(msg, &cur);
		size_t need = 7 * 6 + strlen(to) + 16 + strlen(ecode) + strlen(text) + strlen(relay) +
			      strlen(rc->orcpt);
		if (cur + need > MXF_IPC_MAX)
			break;
		if ((r = mxf_ipc_put_str(msg, F_RCPT, to)) < 0 ||
		    (r = mxf_ipc_put_u64(msg, F_CODE, code)) < 0 ||
		    (r = mxf_ipc_put_str(msg, F_ESC, ecode)) < 0 ||
		    (r = mxf_ipc_put_str(msg, F_TEXT, text)) < 0 ||
		    (r = mxf_ipc_put_str(msg, F_RELAY, relay)) < 0 ||
		    (r = mxf_ipc_put_str(msg, F_ORCPT, rc->orcpt)) < 0 ||
		    (r = mxf_ipc_put_u64(msg, F_LAST_ATTEMPT, rc->attempts ? (uint64_t)now : 0)) < 0)
			break;
		m->bouncing[i] = true;
		added++;
	}
	if (r == 0 && added == 0)
		r = -E2BIG;
	if (r == 0)
		r = peer_send(p, msg, fd);
out:
	mxf_ipc_msg_free(msg);
	close(fd);
	if (r < 0) {
		mxf_err("%s: cannot send the bounce request: %s", e->qid, strerror(-r));
		memset(m->bouncing, 0, e->nrcpt * sizeof(bool));
		return false;
	}
	m->bounce_inflight = true;
	m->bounce_kind = kind;
	m->bounce_req = req;
	m->bounce_peer = p;
	return true;
}

/* ---- removal of finished messages ----
 * On the thread pool, as many at a time as have finished meanwhile: an
 * unlink can block here (freeing blocks, discard, inode table writes) and
 * must not stall the event loop. Not fsync'ed, as before: a removal lost in
 * a crash only repeats a delivery (at least once). The router does not exit
 * before the removals it started are done. */
struct removal {
	struct removal *next;
	enum mxf_spool_dir dir;
	bool keep_content;
	int result;
	char qid[MXF_QID_SIZE];
};
static struct {
	struct removal *head, **tail, *run;
	bool running;
	uv_work_t work;
} rm = {.tail = &rm.head};

static void rm_work(uv_work_t *w)
{
	(void)w;
	for (struct removal *x = rm.run; x; x = x->next)
		x->result = mxf_spool_remove(R.spool, x->qid, x->dir, x->keep_content);
}

static void rm_start(void);
static void rm_done(uv_work_t *w, int status)
{
	(void)w;
	(void)status;
	struct removal *x = rm.run;
	rm.run = NULL;
	rm.running = false;
	rm_start();
	while (x) {
		struct removal *next = x->next;
		if (x->result < 0)
			mxf_err("%s: cannot remove from %s/: %s", x->qid, mxf_spool_dir_name(x->dir),
				strerror(-x->result));
		else
			mxf_info("%s: removed", x->qid);
		free(x);
		R.removals_pending--;
		x = next;
	}
	router_maybe_exit();
}

static void rm_start(void)
{
	if (rm.running || !rm.head)
		return;
	rm.run = rm.head;
	rm.head = NULL;
	rm.tail = &rm.head;
	if (uv_queue_work(R.loop, &rm.work, rm_work, rm_done) < 0)
		mxf_fatal("cannot queue removals");
	rm.running = true;
}

/* ---- the per-message state machine ---- */
static void msg_remove(struct qmsg *m)
{
	/* An operator's delete (rare, and answered as done) stays here. */
	struct removal *x = m->del ? NULL : malloc(sizeof(*x));
	if (!x) {
		int r = mxf_spool_remove(R.spool, m->env->qid, m->dir, false);
		if (r < 0)
			mxf_err("%s: cannot remove from %s/: %s", m->env->qid,
				mxf_spool_dir_name(m->dir), strerror(-r));
		else
			mxf_info("%s: removed", m->env->qid);
		msg_free(m);
		return;
	}
	x->next = NULL;
	x->dir = m->dir;
	x->keep_content = m->content_private;
	snprintf(x->qid, sizeof(x->qid), "%s", m->env->qid);
	*rm.tail = x;
	rm.tail = &x->next;
	R.removals_pending++;
	msg_free(m);
	rm_start();
}

/* Looks at a message with nothing in flight and does the next thing:
 * deliver what is due, bounce what failed, park what waits, remove what
 * is done. May free m. */
static void msg_run(struct qmsg *m)
{
	struct mxf_env *e = m->env;
	int64_t now = now_s();

	if (m->jobs || m->bounce_inflight)
		return;
	m->wake = 0;
	if (m->del) {
		msg_remove(m);
		return;
	}
	if (m->held) {
		msg_move(m, MXF_SD_HOLD);
		return;
	}
	/* Nothing is ever forwarded to an unverified destination: such a copy
	 * waits (deferred, logged) until the address is verified, or expires. */
	bool changed = false;
	for (size_t i = 0; i < e->nrcpt; i++) {
		struct mxf_env_rcpt *r = &e->rcpt[i];
		bool due = r->status == MXF_RS_PENDING ||
			   (r->status == MXF_RS_DEFERRED && r->next_try <= now);
		if (due && strcmp(r->action, "forward") == 0 &&
		    !mxf_ruleset_dest_verified(R.rules, r->dest)) {
			apply_one(m, i, 451, "4.7.1",
				  "unverified destination: not forwarded until it is verified", "",
				  false);
			changed = true;
		}
	}
	if (changed)
		msg_save(m);
	bool want_now = false;
	for (size_t i = 0; i < e->nrcpt && !want_now; i++)
		want_now = e->rcpt[i].status == MXF_RS_PENDING ||
			   (e->rcpt[i].status == MXF_RS_DEFERRED && e->rcpt[i].next_try <= now);
	if (want_now) {
		msg_move(m, MXF_SD_ACTIVE);
		if (make_jobs(m, now) > 0) {
			dispatch();
			return;
		}
		/* Out of memory: look again shortly. */
		m->wake = now + 1;
		timer_update();
		return;
	}

	bool failed = false, deferred = false, bounce_wait = false;
	int64_t next = 0;
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct mxf_env_rcpt *r = &e->rcpt[i];
		if (r->status == MXF_RS_FAILED)
			failed = true;
		if (r->status == MXF_RS_DEFERRED) {
			deferred = true;
			if (!next || r->next_try < next)
				next = r->next_try;
		}
	}
	if (failed) {
		bool dsn_owed = false;
		changed = false;
		bool ours = strcmp(e->origin, "bouncer") == 0;
		for (size_t i = 0; i < e->nrcpt; i++) {
			struct mxf_env_rcpt *r = &e->rcpt[i];
			if (r->status != MXF_RS_FAILED)
				continue;
			char e1[1400], e2[2200];
			if (ours) {
				/* A notification of ours that cannot be delivered
				 * (refused, or outlived its lifetime) is dropped
				 * here: never bounced, never retried forever. */
				mxf_warn("%s: double-bounce: undeliverable notification to <%s> dropped: %s",
					 e->qid, mxf_log_escape(e1, sizeof(e1), r->dest, strlen(r->dest)),
					 mxf_log_escape(e2, sizeof(e2), r->reply, strlen(r->reply)));
			} else if (!*e->sender) {
				/* Never bounce to the null sender: that is how mail
				 * loops start (RFC 5321 4.5.5). */
				if (!changed)
					mxf_info("%s: bounce suppressed for null sender", e->qid);
			} else if (!notify_has(r->notify, "FAILURE")) {
				mxf_info("%s: to=<%s>: no bounce: the sender asked for NOTIFY=%s", e->qid,
					 mxf_log_escape(e1, sizeof(e1), r->orig, strlen(r->orig)),
					 r->notify);
			} else {
				dsn_owed = true;
				continue;
			}
			r->status = MXF_RS_BOUNCED;
			changed = true;
		}
		if (changed)
			msg_save(m);
		if (!dsn_owed) {
			/* nothing owed */
		} else if (now >= m->bounce_after && send_bounce(m, BK_FAILED)) {
			return; /* BOUNCE_DONE brings us back */
		} else {
			bounce_wait = true;
		}
	}
	/* Success notices owed (NOTIFY=SUCCESS to a host without DSN), after
	 * any bounce: each recipient's state moves to SENT only once the
	 * bouncer has queued the notice, so a crash in between re-sends it. */
	bool relayed = false;
	for (size_t i = 0; i < e->nrcpt && !bounce_wait; i++)
		relayed = relayed || e->rcpt[i].status == MXF_RS_RELAYED;
	if (relayed) {
		if (now >= m->bounce_after && send_bounce(m, BK_RELAYED))
			return; /* BOUNCE_DONE brings us back */
		bounce_wait = true;
	}
	int64_t dw = mxf_config_int(R.cfg, "bouncer", "delay_warning_time");
	if (deferred && !bounce_wait && dw > 0 && !m->delay_warned && now - e->arrival >= dw) {
		bool want = *e->sender && strcmp(e->origin, "bouncer") != 0;
		bool any = false;
		for (size_t i = 0; i < e->nrcpt && want && !any; i++)
			any = e->rcpt[i].status == MXF_RS_DEFERRED && notify_has(e->rcpt[i].notify, "DELAY");
		if (!any)
			m->delay_warned = true;
		else if (now >= m->bounce_after && send_bounce(m, BK_DELAYED))
			return; /* BOUNCE_DONE brings us back */
		else
			bounce_wait = true;
	}
	if (!deferred && !bounce_wait) {
		msg_remove(m);
		return;
	}
	/* Park it: deferred/ until the earliest retry (or the bounce retry). */
	if (bounce_wait) {
		int64_t b = m->bounce_after > now ? m->bounce_after : now + BOUNCE_RETRY;
		if (!next || b < next)
			next = b;
	}
	msg_move(m, MXF_SD_DEFERRED);
	m->wake = next > now ? next : now + 1;
	timer_update();
}

/* ---- results ---- */
/* Every recipient done, nothing owed (no bounce, no success notice). */
static bool all_final(const struct mxf_env *e)
{
	for (size_t i = 0; i < e->nrcpt; i++) {
		enum mxf_rcpt_status st = e->rcpt[i].status;
		if (st != MXF_RS_SENT && st != MXF_RS_BOUNCED && st != MXF_RS_DROPPED)
			return false;
	}
	return true;
}

static int64_t backoff(const struct mxf_env_rcpt *r)
{
	if (R.nsched) {
		size_t k = r->attempts ? r->attempts - 1 : 0;
		return R.sched[k < R.nsched ? k : R.nsched - 1];
	}
	int64_t d = R.retry_min;
	for (unsigned a = 1; a < r->attempts && d < R.retry_max; a++)
		d *= 2;
	return d < R.retry_max ? d : R.retry_max;
}

static void apply_one(struct qmsg *m, size_t i, unsigned code, const char *ecode,
		      const char *text, const char *relay, bool peer_dsn)
{
	struct mxf_env *e = m->env;
	struct mxf_env_rcpt *r = &e->rcpt[i];
	char reply[2048], dsn[32];
	int64_t now = now_s();

	if (ecode && *ecode)
		snprintf(reply, sizeof(reply), "%u %s %s", code, ecode, text);
	else
		snprintf(reply, sizeof(reply), "%u %s", code, text);
	snprintf(dsn, sizeof(dsn), "%s", ecode && *ecode ? ecode
					 : code / 100 == 2 ? "2.0.0"
					 : code / 100 == 4 ? "4.0.0"
							   : "5.0.0");
	mxf_env_set(&r->reply, reply);
	mxf_env_set(&r->relay, relay);
	r->attempts++;
	metrics_delivery(code, !(code / 100 == 4 && now - e->arrival < R.lifetime),
			 (double)(now_ms_real() - m->arrival_ms) / 1000.0);
	if (code / 100 == 2) {
		/* NOTIFY=SUCCESS that the host cannot take on: we owe the sender
		 * an "Action: relayed" notice (RFC 3461 4.1). Never for our own
		 * notifications or the null sender. */
		bool notice = !peer_dsn && *r->notify && notify_has(r->notify, "SUCCESS") &&
			      *e->sender && strcmp(e->origin, "bouncer") != 0;
		r->status = notice ? MXF_RS_RELAYED : MXF_RS_SENT;
		log_result(m, r, "sent", dsn);
		activity_add(e, r, NULL, "forwarded", relay, reply);
	} else if (code / 100 == 4 && now - e->arrival < R.lifetime) {
		r->status = MXF_RS_DEFERRED;
		r->next_try = now + backoff(r);
		log_result(m, r, "deferred", dsn);
		activity_add(e, r, NULL, "deferred", relay, reply);
	} else {
		r->status = MXF_RS_FAILED;
		log_result(m, r, code / 100 == 4 ? "expired" : "bounced", dsn);
		activity_add(e, r, NULL, "delivery_failed", relay, reply);
	}
}

int queue_deliver_result(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	size_t n = mxf_ipc_count(v, F_RIDX);
	struct job *j;

	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || !qid)
		return -1;
	for (j = inflight.head; j; j = j->next)
		if (j->req == req && j->peer == p)
			break;
	if (!j || strcmp(j->m->env->qid, qid) != 0 || mxf_ipc_count(v, F_CODE) != n ||
	    mxf_ipc_count(v, F_ESC) != n || mxf_ipc_count(v, F_TEXT) != n || n > j->n)
		return -1;
	/* Validate everything before applying anything. */
	bool seen[JOB_MAX_RCPT] = {false};
	size_t pos[JOB_MAX_RCPT];
	for (size_t i = 0; i < n; i++) {
		uint64_t ridx, code;
		if (mxf_ipc_u64(v, F_RIDX, i, &ridx) < 0 || mxf_ipc_u64(v, F_CODE, i, &code) < 0 ||
		    code < 200 || code > 599 || !mxf_ipc_str(v, F_ESC, i) ||
		    !mxf_ipc_str(v, F_TEXT, i))
			return -1;
		size_t k;
		for (k = 0; k < j->n; k++)
			if (j->ridx[k] == ridx)
				break;
		if (k == j->n || seen[k])
			return -1;
		seen[k] = true;
		pos[i] = k;
	}
	const char *relay = mxf_ipc_str(v, F_RELAY, 0);
	if (!relay)
		relay = "";
	uint64_t peer_dsn = 0;
	if (mxf_ipc_count(v, F_PEER_DSN) && (mxf_ipc_u64(v, F_PEER_DSN, 0, &peer_dsn) < 0 ||
					     peer_dsn > 1))
		return -1;
	/* deliverd reports a failed or timed-out DNS lookup as 4.4.3: one
	 * DNS error per delivery attempt, however many recipients it had. */
	for (size_t i = 0; i < n; i++)
		if (strcmp(mxf_ipc_str(v, F_ESC, i), "4.4.3") == 0) {
			metrics_dns_error();
			break;
		}
	struct qmsg *m = j->m;
	inflight_remove(j);
	p->jobs--;
	for (size_t i = 0; i < n; i++) {
		uint64_t code;
		mxf_ipc_u64(v, F_CODE, i, &code);
		apply_one(m, j->ridx[pos[i]], (unsigned)code, mxf_ipc_str(v, F_ESC, i),
			  mxf_ipc_str(v, F_TEXT, i), relay, peer_dsn != 0);
	}
	for (size_t k = 0; k < j->n; k++)
		if (!seen[k])
			apply_one(m, j->ridx[k], 451, "4.3.0", "no result from the delivery agent",
				  relay, peer_dsn != 0);
	/* A message this job finished is removed right after (msg_run):
	 * rewriting its envelope first would cost two fsyncs on the event
	 * loop for nothing. A crash before the unlink repeats the delivery
	 * either way (at least once; the unlink is not fsync'ed). */
	if (!(m->jobs == 1 && !m->held && !m->bounce_inflight && all_final(m->env)))
		msg_save(m);
	job_finish(j);
	if (m->jobs == 0)
		msg_run(m);
	dispatch();
	return 0;
}

int queue_bounce_done(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req, code;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || !qid || mxf_ipc_u64(v, F_CODE, 0, &code) < 0)
		return -1;
	struct qmsg *m = find_msg(qid);
	if (!m || !m->bounce_inflight || m->bounce_req != req || m->bounce_peer != p)
		return -1;
	struct mxf_env *e = m->env;
	const char *bqid = mxf_ipc_str(v, F_BOUNCE_QID, 0);
	m->bounce_inflight = false;
	m->bounce_peer = NULL;
	if (m->bounce_kind == BK_RELAYED) {
		/* 2xx: the notice is queued; 5xx: the bouncer will never make it.
		 * Either way the recipient is delivered and final. */
		m->bounce_kind = BK_FAILED;
		if (code / 100 == 2 || code / 100 == 5) {
			if (code / 100 == 2)
				mxf_info("%s: sender success notification: %s", e->qid,
					 bqid && mxf_qid_valid(bqid) ? bqid : "?");
			else
				mxf_err("%s: the bouncer gave up on the success notice (code %llu)",
					e->qid, (unsigned long long)code);
			for (size_t i = 0; i < e->nrcpt; i++)
				if (m->bouncing[i])
					e->rcpt[i].status = MXF_RS_SENT;
			msg_save(m);
		} else {
			m->bounce_after = now_s() + BOUNCE_RETRY;
		}
		memset(m->bouncing, 0, e->nrcpt * sizeof(bool));
		msg_run(m);
		return 0;
	}
	if (m->bounce_kind == BK_DELAYED) {
		/* A delay warning changes no recipient's state. */
		m->bounce_kind = BK_FAILED;
		if (code / 100 == 2 || code / 100 == 5) {
			m->delay_warned = true;
			if (code / 100 == 2)
				mxf_info("%s: sender delay notification: %s", e->qid,
					 bqid && mxf_qid_valid(bqid) ? bqid : "?");
		} else {
			m->bounce_after = now_s() + BOUNCE_RETRY;
		}
		memset(m->bouncing, 0, e->nrcpt * sizeof(bool));
		msg_run(m);
		return 0;
	}
	if (code / 100 == 2 || code / 100 == 5) {
		if (code / 100 == 2)
			mxf_info("%s: sender non-delivery notification: %s", e->qid,
				 bqid && mxf_qid_valid(bqid) ? bqid : "?");
		else
			mxf_err("%s: the bouncer gave up on the bounce (code %llu); no notification "
				"sent",
				e->qid, (unsigned long long)code);
		for (size_t i = 0; i < e->nrcpt; i++) {
			if (!m->bouncing[i])
				continue;
			e->rcpt[i].status = MXF_RS_BOUNCED;
			activity_add(e, &e->rcpt[i], NULL, code / 100 == 2 ? "bounced" : "error", NULL,
				     e->rcpt[i].reply);
		}
		msg_save(m);
	} else {
		mxf_warn("%s: bounce not queued (code %llu); retrying in %ds", e->qid,
			 (unsigned long long)code, BOUNCE_RETRY);
		m->bounce_after = now_s() + BOUNCE_RETRY;
	}
	memset(m->bouncing, 0, e->nrcpt * sizeof(bool));
	msg_run(m);
	return 0;
}

/* ---- peers ---- */
void queue_deliverd_up(struct peer *p)
{
	(void)p;
	dispatch();
}

void queue_bouncer_up(struct peer *p)
{
	(void)p;
	/* Messages parked only for want of a bouncer: look at them now. */
	int64_t now = now_s();
	for (struct qmsg *m = msgs; m; m = m->next) {
		if (m->jobs || m->bounce_inflight || m->held)
			continue;
		for (size_t i = 0; i < m->env->nrcpt; i++) {
			if (m->env->rcpt[i].status == MXF_RS_FAILED ||
			    m->env->rcpt[i].status == MXF_RS_RELAYED) {
				m->bounce_after = 0;
				m->wake = now;
				break;
			}
		}
	}
	timer_update();
}

void queue_peer_gone(struct peer *p)
{
	if (p->role == ROLE_DELIVERD) {
		/* Its jobs go back to the front of the line for the next
		 * deliverd: at least once, never lost. */
		unsigned n = 0;
		for (struct job *j = inflight.tail, *prev; j; j = prev) {
			prev = j->prev;
			if (j->peer != p)
				continue;
			inflight_remove(j);
			j->peer = NULL;
			j->req = ++R.next_req; /* a late answer to the old request is refused */
			jl_prepend(&waiting, j);
			n++;
		}
		p->jobs = 0;
		if (n)
			mxf_warn("deliverd[%ld] went away with %u job(s) in flight; requeued",
				 (long)p->pid, n);
		dispatch();
	} else if (p->role == ROLE_BOUNCER) {
		int64_t now = now_s();
		for (struct qmsg *m = msgs; m; m = m->next) {
			if (!m->bounce_inflight || m->bounce_peer != p)
				continue;
			m->bounce_inflight = false;
			m->bounce_kind = BK_FAILED;
			m->bounce_peer = NULL;
			memset(m->bouncing, 0, m->env->nrcpt * sizeof(bool));
			m->bounce_after = now + BOUNCE_RETRY;
			m->wake = now;
		}
		timer_update();
	}
}

/* ---- new mail ---- */
void queue_add(struct mxf_env *e, int dir, bool content_private)
{
	struct qmsg *m = msg_new(e, (enum mxf_spool_dir)dir);
	if (!m) {
		/* It is safe on disk; a restart picks it up. */
		mxf_err("%s: out of memory; the message waits for the next start", e->qid);
		mxf_env_free(e);
		return;
	}
	m->content_private = content_private;
	/* Just committed: the envelope's arrival is in whole seconds. */
	m->arrival_ms = now_ms_real();
	metrics_received(e);
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct mxf_env_rcpt *r = &e->rcpt[i];
		if (r->status != MXF_RS_DROPPED)
			continue;
		char e1[1024], e2[128];
		mxf_info("%s: to=<%s>, delay=0, status=dropped (rule %s)", e->qid,
			 esc(e1, sizeof(e1), r->orig), esc(e2, sizeof(e2), r->rule));
		activity_add(e, r, NULL, "dropped", NULL, NULL);
	}
	msg_run(m);
}

int queue_reload_rules(char *err, size_t errlen)
{
	struct mxf_ruleset *rs = NULL;
	struct mxf_ruleset_opts o = {.local_case_sensitive = R.local_cs,
				     .subaddr_sep = R.subaddr_sep};
	long long v = 0;
	/* The version first: a write landing during the load is seen by the
	 * next poll and loaded again. */
	mxf_rulesdb_data_version(R.rdb, &v);
	int r = mxf_ruleset_load_opts(R.rdb, &o, &rs, err, errlen);
	if (r < 0) {
		mxf_err("rules reload failed, keeping the current rules: %s", err);
		R.rules_version = v; /* retried on the next change, not every poll */
		return r;
	}
	mxf_ruleset_free(R.rules);
	R.rules = rs;
	R.rules_version = v;
	mxf_info("rules reloaded: %zu rule(s)", mxf_ruleset_count(rs));
	sign_load();
	access_reload(); /* the allow/block lists live in rules.db too */
	/* A destination may have become verified: what waits for one goes now. */
	int64_t now = now_s();
	for (struct qmsg *m = msgs; m; m = m->next) {
		for (size_t i = 0; i < m->env->nrcpt; i++) {
			struct mxf_env_rcpt *rc = &m->env->rcpt[i];
			if (rc->status == MXF_RS_DEFERRED && rc->next_try > now &&
			    strstr(rc->reply, "unverified destination") &&
			    mxf_ruleset_dest_verified(rs, rc->dest)) {
				rc->next_try = now;
				if (!m->held && !m->jobs && !m->bounce_inflight)
					m->wake = now;
			}
		}
	}
	timer_update();
	return 0;
}

static void on_rules_poll(uv_timer_t *t)
{
	(void)t;
	long long v;
	if (mxf_rulesdb_data_version(R.rdb, &v) == 0 && v != R.rules_version) {
		char err[512] = "";
		queue_reload_rules(err, sizeof(err));
	}
}

void queue_rules_poll_start(void)
{
	mxf_rulesdb_data_version(R.rdb, &R.rules_version);
	uv_timer_start(&rules_timer, on_rules_poll, 500, 500);
}

/* ---- operator control (mxferryctl queue ...) ---- */

/* Takes m's jobs that have not gone to deliverd yet back out of the line. */
static void drop_waiting_jobs(struct qmsg *m)
{
	for (struct job *j = waiting.head, *next; j; j = next) {
		next = j->next;
		if (j->m != m)
			continue;
		jl_remove(&waiting, j);
		job_finish(j);
	}
}

static void retry_now(struct qmsg *m, int64_t now)
{
	for (size_t i = 0; i < m->env->nrcpt; i++)
		if (m->env->rcpt[i].status == MXF_RS_DEFERRED)
			m->env->rcpt[i].next_try = now;
	m->bounce_after = 0;
	if (!m->held)
		m->wake = now;
}

/* A JSON string of the C string s (NULL as ""). */
static void json_str(struct mxf_strbuf *b, const char *s)
{
	s = s ? s : "";
	mxf_sb_json_str(b, s, strlen(s));
}

/* One message as the API shows it (issue 12). */
static void list_one(struct mxf_strbuf *b, const struct qmsg *m)
{
	const struct mxf_env *e = m->env;
	const char *state = m->held || m->dir == MXF_SD_HOLD       ? "hold"
			    : m->dir == MXF_SD_DEFERRED               ? "deferred"
									: "active";
	int64_t next = 0;
	for (size_t i = 0; i < e->nrcpt; i++)
		if (e->rcpt[i].status == MXF_RS_DEFERRED && (!next || e->rcpt[i].next_try < next))
			next = e->rcpt[i].next_try;
	mxf_sb_str(b, "{\"id\":");
	json_str(b, e->qid);
	mxf_sb_printf(b, ",\"state\":\"%s\",\"from\":", state);
	json_str(b, e->sender);
	mxf_sb_printf(b, ",\"arrival\":%lld,\"size\":%llu,\"next_try\":%lld,\"recipients\":[",
		      (long long)e->arrival, (unsigned long long)e->size, (long long)next);
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct mxf_env_rcpt *r = &e->rcpt[i];
		mxf_sb_str(b, i ? ",{\"address\":" : "{\"address\":");
		json_str(b, r->dest[0] ? r->dest : r->orig);
		mxf_sb_str(b, ",\"orig\":");
		json_str(b, r->orig);
		mxf_sb_printf(b, ",\"status\":\"%s\",\"attempts\":%u,\"last_reply\":",
			      mxf_env_status_name(r->status), r->attempts);
		json_str(b, r->reply);
		mxf_sb_str(b, "}");
	}
	mxf_sb_str(b, "]}");
}

/* "list" (apid, issue 12): the messages (those named by F_QID, else all;
 * F_COUNT as an offset) as a JSON array in F_TEXT, as many as fit in one
 * answer; F_COUNT is how many there are in all. The router already holds
 * every envelope, and apid may not read the spool. */
static int queue_list(struct peer *p, const struct mxf_ipc_view *v, uint64_t req)
{
	size_t nq = mxf_ipc_count(v, F_QID);
	uint64_t skip = 0, total = 0;
	mxf_ipc_u64(v, F_COUNT, 0, &skip);
	struct mxf_strbuf b = {0};
	mxf_sb_str(&b, "[");
	bool first = true, full = false;
	for (struct qmsg *m = msgs; m; m = m->next) {
		if (m->del)
			continue;
		bool want = nq == 0;
		for (size_t i = 0; i < nq && !want; i++)
			want = strcmp(mxf_ipc_str(v, F_QID, i), m->env->qid) == 0;
		if (!want)
			continue;
		if (total++ < skip || full)
			continue;
		size_t before = b.len;
		if (!first)
			mxf_sb_str(&b, ",");
		list_one(&b, m);
		/* Room for the other fields of the answer. */
		if (b.len > MXF_IPC_MAX - 1024) {
			b.len = before;
			b.p[before] = '\0';
			full = true;
			continue;
		}
		first = false;
	}
	mxf_sb_str(&b, "]");
	struct mxf_ipc_msg *msg = mxf_ipc_msg_new(MXF_MSG_QUEUE_CTL_REPLY);
	int r = msg && !b.err ? 0 : -ENOMEM;
	if (r == 0 && ((r = mxf_ipc_put_u64(msg, F_REQ, req)) < 0 ||
		       (r = mxf_ipc_put_u64(msg, F_CODE, 250)) < 0 ||
		       (r = mxf_ipc_put_str(msg, F_TEXT, b.p)) < 0 ||
		       (r = mxf_ipc_put_u64(msg, F_COUNT, total)) < 0))
		goto out;
	r = peer_send(p, msg, -1);
out:
	mxf_ipc_msg_free(msg);
	mxf_sb_free(&b);
	(void)r;
	return 0;
}

int queue_ctl(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req;
	const char *op = mxf_ipc_str(v, F_TEXT, 0);
	size_t nq = mxf_ipc_count(v, F_QID);
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || !op)
		return -1;
	for (size_t i = 0; i < nq; i++)
		if (!mxf_ipc_str(v, F_QID, i))
			return -1;
	if (strcmp(op, "list") == 0)
		return queue_list(p, v, req);
	int64_t now = now_s();
	uint64_t count = 0;
	bool flush = strcmp(op, "flush") == 0;
	if (!flush && strcmp(op, "hold") != 0 && strcmp(op, "release") != 0 &&
	    strcmp(op, "delete") != 0 && strcmp(op, "retry") != 0)
		return -1;
	if (flush) {
		for (struct qmsg *m = msgs; m; m = m->next) {
			if (m->held || m->del)
				continue;
			retry_now(m, now);
			count++;
		}
	}
	for (size_t i = 0; i < nq && !flush; i++) {
		const char *qid = mxf_ipc_str(v, F_QID, i);
		struct qmsg *m = mxf_qid_valid(qid) ? find_msg(qid) : NULL;
		if (!m || m->del)
			continue;
		count++;
		if (strcmp(op, "hold") == 0) {
			if (m->held)
				continue;
			m->held = true;
			drop_waiting_jobs(m);
			mxf_info("%s: held by the operator", qid);
			if (!m->jobs && !m->bounce_inflight) {
				m->wake = 0;
				msg_move(m, MXF_SD_HOLD);
			}
		} else if (strcmp(op, "release") == 0) {
			if (!m->held)
				continue;
			m->held = false;
			mxf_info("%s: released by the operator", qid);
			retry_now(m, now);
		} else if (strcmp(op, "retry") == 0) {
			retry_now(m, now);
		} else { /* delete */
			m->del = true;
			drop_waiting_jobs(m);
			mxf_info("%s: deleted by the operator", qid);
			if (!m->jobs && !m->bounce_inflight)
				msg_remove(m);
		}
	}
	timer_update();
	char text[64];
	snprintf(text, sizeof(text), "Ok: %llu message(s)", (unsigned long long)count);
	struct mxf_ipc_msg *msg = mxf_ipc_msg_new(MXF_MSG_QUEUE_CTL_REPLY);
	int r = msg ? 0 : -ENOMEM;
	if (r == 0 && ((r = mxf_ipc_put_u64(msg, F_REQ, req)) < 0 ||
		       (r = mxf_ipc_put_u64(msg, F_CODE, 250)) < 0 ||
		       (r = mxf_ipc_put_str(msg, F_TEXT, text)) < 0 ||
		       (r = mxf_ipc_put_u64(msg, F_COUNT, count)) < 0))
		goto out;
	r = peer_send(p, msg, -1);
out:
	mxf_ipc_msg_free(msg);
	(void)r; /* a ctl that went away has nothing to be told */
	return 0;
}

/* ---- start-up recovery ---- */
struct nameset {
	char (*v)[MXF_QID_SIZE];
	size_t n, cap;
};

static void ns_add(struct nameset *s, const char *qid)
{
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 64;
		void *nv = realloc(s->v, nc * sizeof(*s->v));
		if (!nv)
			mxf_fatal("out of memory during recovery");
		s->v = nv;
		s->cap = nc;
	}
	snprintf(s->v[s->n++], MXF_QID_SIZE, "%s", qid);
}

static int ns_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Calls fn for each entry name of a spool directory. */
static void each_entry(enum mxf_spool_dir d, void (*fn)(enum mxf_spool_dir, const char *, void *),
		       void *arg)
{
	int fd = openat(mxf_spool_dirfd(R.spool, d), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		mxf_fatal("cannot read %s/: %s", mxf_spool_dir_name(d), strerror(errno));
	}
	/* Collect first: fn renames entries of this very directory. */
	char (*names)[256] = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				mxf_fatal("out of memory during recovery");
		}
		snprintf(names[n++], 256, "%s", de->d_name);
	}
	closedir(dir);
	for (size_t i = 0; i < n; i++)
		fn(d, names[i], arg);
	free(names);
}

static void corrupt(enum mxf_spool_dir d, const char *name, const char *why)
{
	char e1[1024];
	int r = mxf_spool_to_corrupt(R.spool, d, name);
	mxf_warn("%s/%s: %s; %s", mxf_spool_dir_name(d), esc(e1, sizeof(e1), name), why,
		 r == 0 ? "moved to corrupt/" : "could not move it to corrupt/");
}

static void recover_entry(enum mxf_spool_dir d, const char *name, void *arg)
{
	struct nameset *keep = arg;
	struct mxf_env *e = NULL;
	struct stat st;

	if (!mxf_qid_valid(name)) {
		corrupt(d, name, "not a queue file name");
		return;
	}
	int r = mxf_env_read(mxf_spool_dirfd(R.spool, d), name, &e);
	if (r == -EBADMSG) {
		corrupt(d, name, "envelope does not parse");
		ns_add(keep, name); /* its content stays for a human to look at */
		return;
	}
	if (r < 0) {
		/* Unreadable, not malformed: leave it (and its content) alone. */
		mxf_err("%s/%s: cannot read: %s; skipped", mxf_spool_dir_name(d), name, strerror(-r));
		ns_add(keep, name);
		return;
	}
	if (strcmp(e->qid, name) != 0) {
		mxf_env_free(e);
		corrupt(d, name, "envelope names another queue ID");
		ns_add(keep, name);
		return;
	}
	if (find_msg(name)) {
		mxf_env_free(e);
		corrupt(d, name, "a second envelope for a queued message");
		return;
	}
	if (fstatat(mxf_spool_dirfd(R.spool, MXF_SD_MSG), name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(st.st_mode) || (uint64_t)st.st_size != e->size) {
		mxf_env_free(e);
		corrupt(d, name, "content missing or of the wrong size");
		ns_add(keep, name);
		return;
	}
	ns_add(keep, name);
	struct qmsg *m = msg_new(e, d);
	if (!m)
		mxf_fatal("out of memory during recovery");
	m->held = d == MXF_SD_HOLD;
	if (d == MXF_SD_INCOMING)
		msg_move(m, MXF_SD_ACTIVE);
}

static void corrupt_entry(enum mxf_spool_dir d, const char *name, void *arg)
{
	(void)d;
	/* corrupt/QID or corrupt/QID.N: keep msg/QID. */
	char q[MXF_QID_SIZE];
	snprintf(q, sizeof(q), "%s", name);
	if (mxf_qid_valid(q))
		ns_add(arg, q);
}

static void orphan_entry(enum mxf_spool_dir d, const char *name, void *arg)
{
	struct nameset *keep = arg;
	(void)d;
	if (!mxf_qid_valid(name))
		return; /* not ours to touch */
	if (keep->n && bsearch(name, keep->v, keep->n, sizeof(*keep->v), ns_cmp))
		return;
	/* Content without an envelope was never acknowledged (the envelope
	 * is published after the content), so nobody was told 250. */
	if (unlinkat(mxf_spool_dirfd(R.spool, MXF_SD_MSG), name, 0) == 0)
		mxf_info("%s: removed orphan content file", name);
}

void queue_init(void)
{
	uv_timer_init(R.loop, &wake_timer);
	uv_timer_init(R.loop, &rate_timer);
	uv_timer_init(R.loop, &rules_timer);
}

void queue_recover(void)
{
	struct nameset keep = {0};
	int r = mxf_spool_clean_tmp(R.spool);
	if (r < 0)
		mxf_warn("cannot empty tmp/: %s", strerror(-r));
	each_entry(MXF_SD_CORRUPT, corrupt_entry, &keep);
	/* incoming/ last: its entries move to active/, which must not be
	 * scanned after that. */
	const enum mxf_spool_dir dirs[] = {MXF_SD_ACTIVE, MXF_SD_DEFERRED, MXF_SD_HOLD,
					   MXF_SD_INCOMING};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		each_entry(dirs[i], recover_entry, &keep);
	if (keep.n)
		qsort(keep.v, keep.n, sizeof(*keep.v), ns_cmp);
	each_entry(MXF_SD_MSG, orphan_entry, &keep);
	free(keep.v);

	size_t nact = 0, ndef = 0;
	int64_t now = now_s();
	size_t nhold = 0;
	for (struct qmsg *m = msgs, *next; m; m = next) {
		next = m->next;
		if (m->held) {
			nhold++;
		} else if (m->dir == MXF_SD_DEFERRED) {
			/* Due at the earliest retry; anything else in it
			 * (a bounce owed, a pending recipient) is due now. */
			int64_t w = 0;
			for (size_t i = 0; i < m->env->nrcpt; i++) {
				const struct mxf_env_rcpt *rc = &m->env->rcpt[i];
				int64_t t = rc->status == MXF_RS_DEFERRED ? rc->next_try
					    : rc->status == MXF_RS_PENDING || rc->status == MXF_RS_FAILED ||
							      rc->status == MXF_RS_RELAYED
						    ? now
						    : 0;
				if (t && (!w || t < w))
					w = t;
			}
			m->wake = w ? w : now;
			ndef++;
		} else {
			m->wake = now;
			nact++;
		}
	}
	mxf_info("queue recovered: %zu active, %zu deferred, %zu held", nact, ndef, nhold);
	timer_update();
}
