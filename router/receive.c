/* Receiving: RCPT checks, opening the file smtpd writes into, and the
 * durable commit that must precede smtpd's 250 (DESIGN.md §2). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "address.h"
#include "config.h"
#include "log.h"
#include "mailhdr.h"
#include "queueid.h"
#include "router.h"
#include "rulesdb.h"
#include "smtp.h"
#include "spool.h"
#include "srs.h"

static uint64_t msgdir_created(void);

/* Files one connection may hold open at once: a compromised smtpd must not
 * exhaust the router's descriptors. */
#define MAX_OPENED 64
/* SRS returns are accepted for 21 days after the forward. */
#define SRS_MAX_AGE_DAYS 21

struct commit {
	uv_work_t work, work2; /* fsync of the content; the envelope */
	unsigned jobs;         /* of the two, not yet returned (event loop) */
	unsigned steps;        /* of the two, not yet done (under gc.mu) */
	uint64_t stamp;        /* msg/ entry (msgdir_created) */
	struct mxf_spool_commit_item item;
	struct commit *next;  /* in the peer's list while it runs */
	struct commit *qnext; /* in the group-commit queue or batch */
	bool published;       /* its batch is done (under gc.mu) */
	struct peer *p;      /* NULL once the peer went away */
	uint64_t req;
	int fd;
	struct mxf_env *e;
	int result;
	int moved; /* incoming -> active done in the worker */
	bool shown; /* the content went to a worker (struct opened) */
	/* A worker's reply, committed after the message (issue 13). */
	struct mxf_env *re;
	char *rraw;
	int rresult;
	int rmoved;
};

void recv_reply_free(struct recv_reply *r)
{
	if (!r)
		return;
	free(r->raw);
	free(r->from);
	free(r->tag);
	free(r);
}

void rfc5322_date(time_t t, char *out, size_t len)
{
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(out, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* Copies an untrusted token into a header: printable ASCII only, no
 * comment delimiters, bounded (no header injection, no folding tricks). */
static void hdr_token(char *dst, size_t cap, const char *src, const char *dflt)
{
	size_t o = 0;
	if (!src || !*src)
		src = dflt;
	for (; *src && o + 1 < cap && o < 255; src++) {
		unsigned char c = (unsigned char)*src;
		dst[o++] = (c < 0x21 || c > 0x7e || c == '(' || c == ')' || c == '\\' || c == '<' ||
			    c == '>' || c == ';')
				   ? '?'
				   : (char)c;
	}
	dst[o] = '\0';
}

/* An address from a peer: no control characters (they would reach SMTP
 * command lines at delivery), bounded. "" is the null sender. */
static bool addr_clean(const char *s)
{
	if (!s || strlen(s) >= MXF_ADDR_SIZE)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* The same syntax check deliverd applies before MAIL FROM. */
static bool addr_parses(const char *a)
{
	char local[MXF_LOCAL_MAX * 4 + 8], dom[MXF_DOMAIN_MAX + 1];
	return mxf_addr_parse(a, MXF_ADDR_UTF8, local, sizeof(local), dom, sizeof(dom)) == 0;
}

/* A DSN value from smtpd: no spaces or controls (they would reach a DSN's
 * header fields); NULL stands for "". */
static bool dsn_clean(const char *s, size_t max)
{
	if (!s)
		return true;
	if (strlen(s) > max)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || *s == 0x7f)
			return false;
	return true;
}

/* ORCPT for a recipient the client gave none for (RFC 3461 4.2): the
 * address as received, as "rfc822;xtext" or, with a UTF-8 local part,
 * "utf-8;" with utf-8-addr-xtext (RFC 6533). */
void recv_orcpt_of(const char *addr, char *out, size_t cap)
{
	bool ascii = true;
	for (const char *p = addr; *p; p++)
		ascii = ascii && (unsigned char)*p < 0x80;
	if (ascii) {
		int n = snprintf(out, cap, "rfc822;");
		if (n < 0 || mxf_xtext_encode(addr, out + n, cap - (size_t)n) < 0)
			out[0] = '\0';
		return;
	}
	size_t o = (size_t)snprintf(out, cap, "utf-8;");
	for (const unsigned char *p = (const unsigned char *)addr; *p && o + 8 < cap; p++) {
		if (*p < 0x21 || *p == 0x7f || *p == '+' || *p == '=' || *p == '\\')
			o += (size_t)snprintf(out + o, cap - o, "\\x{%02X}", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
}

static char *esc(char *buf, size_t cap, const char *s)
{
	return mxf_log_escape(buf, cap, s, strlen(s));
}

/* An address on the SRS domain that looks like SRS. */
static bool srs_ours(const char *norm)
{
	const char *at = strrchr(norm, '@');
	return R.srs && at && mxf_srs_is_srs(norm) &&
	       strcasecmp(at + 1, mxf_config_str(R.cfg, "router", "srs_domain")) == 0;
}

/* The address mail to an SRS address of ours goes back to: 0, or <0 when
 * the address is forged, expired or unknown. */
static int srs_return(const char *norm, char *back, size_t len)
{
	int r = mxf_srs_reverse(R.srs, norm, time(NULL), SRS_MAX_AGE_DAYS, back, len);
	if (r == 0 && (!*back || !addr_clean(back) || !addr_parses(back)))
		r = -EINVAL;
	return r;
}

/* ---- RCPT ---- */
static int open_for(struct peer *p, char qid[MXF_QID_SIZE]);

static void open_reply(struct peer *p, uint64_t req, int fd, const char *qid);

/* 250 for a recipient, with its domain's DMARC mode when the domain sets
 * one: smtpd refuses a p=reject failure only when every recipient's
 * domain enforces. Asked to (F_OPEN_AHEAD), the queue file follows as an
 * OPEN_REPLY to the same request (the 250 says it will: F_OPEN_AHEAD 1),
 * made after the 250 is on its way, while the client sends its next
 * command, so DATA finds it there and gets its 354 without another round
 * trip. */
static void rcpt_ok(struct peer *p, const struct mxf_ipc_view *v, uint64_t req, const char *dmarc)
{
	uint64_t ahead = 0;
	char qid[MXF_QID_SIZE];
	/* Ahead only while half the open files are free: those are for DATA. */
	bool will = mxf_ipc_u64(v, F_OPEN_AHEAD, 0, &ahead) == 0 && ahead == 1 &&
		    p->role == ROLE_SMTPD && p->nopened < MAX_OPENED / 2;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_RCPT_REPLY);
	int r = m ? 0 : -ENOMEM;
	if (r == 0 && (r = mxf_ipc_put_u64(m, F_REQ, req)) == 0 &&
	    (r = mxf_ipc_put_u64(m, F_CODE, 250)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_ESC, "2.1.5")) == 0 &&
	    (r = mxf_ipc_put_str(m, F_TEXT, "Ok")) == 0 &&
	    (!dmarc || !*dmarc || (r = mxf_ipc_put_str(m, F_DMARC, dmarc)) == 0) &&
	    (!will || (r = mxf_ipc_put_u64(m, F_OPEN_AHEAD, 1)) == 0))
		r = peer_send(p, m, -1);
	mxf_ipc_msg_free(m);
	if (r < 0) {
		if (!p->closing) {
			mxf_warn("%s[%ld]: cannot reply: %s; closing", role_name(p->role),
				 (long)p->pid, strerror(-r));
			peer_close(p);
		}
		return;
	}
	if (will)
		open_reply(p, req, open_for(p, qid), qid);
}

void recv_rcpt_check(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req;
	const char *addr = mxf_ipc_str(v, F_ADDR, 0);
	/* The sender, for rules with a sender matcher; absent: unknown, and
	 * such rules do not match. */
	const char *sender = mxf_ipc_str(v, F_SENDER, 0);
	char norm[MXF_ADDR_SIZE], text[MXF_ADDR_SIZE + 64], e1[MXF_ADDR_SIZE * 4];
	struct mxf_route rt;

	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0) {
		peer_close(p);
		return;
	}
	if (!addr || !addr_clean(addr) || mxf_addr_normalize(addr, MXF_ADDR_UTF8, norm,
							     sizeof(norm)) < 0) {
		peer_reply(p, MXF_MSG_RCPT_REPLY, req, 501, "5.1.3", "Bad recipient address syntax",
			   NULL, -1);
		return;
	}
	unsigned code = 550;
	const char *ecode = "5.7.1", *why = "relay denied", *reason = "relay";
	struct mxf_env_rcpt log_r = {.orig = norm, .dest = "", .rule = "", .action = "",
				     .reply = "", .relay = ""};
	if (srs_ours(norm)) {
		/* A return to one of our SRS addresses: only a genuine, fresh one. */
		char back[MXF_ADDR_SIZE];
		if (srs_return(norm, back, sizeof(back)) == 0) {
			peer_reply(p, MXF_MSG_RCPT_REPLY, req, 250, "2.1.5", "Ok", NULL, -1);
			return;
		}
		ecode = "5.1.1", why = "bad SRS address", reason = "srs";
		snprintf(text, sizeof(text),
			 "<%s>: Recipient address rejected: invalid or expired SRS address", norm);
		log_r.action = "relay";
		goto refuse;
	}
	if (sender && !addr_clean(sender))
		sender = NULL;
	if (mxf_ruleset_lookup(R.rules, norm, sender, &rt) < 0)
		rt.kind = MXF_ROUTE_NO_DOMAIN;
	log_r.rule = (char *)rt.tag;
	switch (rt.kind) {
	case MXF_ROUTE_FORWARD:
		if (rt.nverified == 0 && rt.refuse_unverified) {
			log_r.action = "forward";
			why = "destination not verified", reason = "unverified";
			snprintf(text, sizeof(text),
				 "<%s>: Recipient address rejected: destination not verified", norm);
			break;
		}
		/* fall through */
	case MXF_ROUTE_DROP:
	case MXF_ROUTE_WEBHOOK:
		rcpt_ok(p, v, req, rt.dmarc);
		return;
	case MXF_ROUTE_REJECT:
		/* The operator's reason, sanitised to printable ASCII when stored,
		 * with the rule's code: 550 unless it says e.g. 451 (try later). */
		code = rt.code ? rt.code : 550;
		ecode = code < 500 ? "4.7.1" : "5.7.1";
		log_r.action = "reject";
		why = "rule", reason = "rule";
		snprintf(text, sizeof(text), "%s", rt.text);
		break;
	case MXF_ROUTE_WORKER:
		/* The worker decides at end of DATA (work.c). A rule naming a
		 * worker that is not defined (yet) is a temporary failure, so
		 * nothing is lost and the sender retries. */
		if (mxf_ruleset_worker(R.rules, rt.text)) {
			rcpt_ok(p, v, req, rt.dmarc);
			return;
		}
		log_r.action = "worker";
		code = 451, ecode = "4.3.0", why = "worker not defined", reason = "worker";
		snprintf(text, sizeof(text), "worker not available");
		break;
	case MXF_ROUTE_NO_RULE:
		ecode = "5.1.1", why = "user unknown", reason = "unknown-rcpt";
		snprintf(text, sizeof(text), "<%s>: Recipient address rejected: User unknown", norm);
		break;
	default:
		snprintf(text, sizeof(text), "<%s>: Relay access denied", norm);
		break;
	}
refuse:
	peer_reply(p, MXF_MSG_RCPT_REPLY, req, code, ecode, text, NULL, -1);
	char reply[sizeof(text) + 16];
	snprintf(reply, sizeof(reply), "%u %s %s", code, ecode, text);
	mxf_info("NOQUEUE: reject: RCPT to=<%s>, reply=%u %s %s", esc(e1, sizeof(e1), norm), code,
		 ecode, why);
	/* smtpd names the client and the envelope so far (optional fields). */
	const char *ip = mxf_ipc_str(v, F_CLIENT_IP, 0), *helo = mxf_ipc_str(v, F_HELO, 0);
	const char *from = mxf_ipc_str(v, F_SENDER, 0);
	access_reject_row(ip && addr_clean(ip) ? ip : NULL, helo && addr_clean(helo) ? helo : NULL,
			  from && addr_clean(from) ? from : NULL, norm, log_r.rule,
			  log_r.action, reply, reason);
}

/* ---- OPEN / ABORT ---- */
static bool disk_full(int r)
{
	return r == -ENOSPC || r == -EDQUOT;
}

/* Creates a queue file for p (kept in its list until COMMIT or ABORT):
 * the descriptor, with the new queue ID in qid, or -errno. */
static int open_for(struct peer *p, char qid[MXF_QID_SIZE])
{
	int fd = -ENOMEM;
	struct opened *o = NULL;
	if (p->nopened >= MAX_OPENED) {
		mxf_warn("%s[%ld]: too many open queue files", role_name(p->role), (long)p->pid);
		return -EMFILE;
	}
	if (mxf_qid_new(qid) < 0)
		return -EIO;
	/* Reused inodes only for smtpd: whoever gets a write descriptor to a
	 * queue file could keep it; smtpd writes every message it receives
	 * anyway, but the bouncer's and mxferryctl's own mail it never sees. */
	bool reused = p->role == ROLE_SMTPD;
	if ((o = calloc(1, sizeof(*o))) && (fd = mxf_spool_create(R.spool, qid, &reused)) >= 0) {
		o->reused = reused;
		memcpy(o->qid, qid, MXF_QID_SIZE);
		o->fd = fd;
		o->stamp = msgdir_created();
		o->next = p->opened;
		p->opened = o;
		p->nopened++;
		return fd;
	}
	free(o);
	mxf_err("cannot create queue file: %s", strerror(-fd));
	return fd;
}

/* OPEN_REPLY: the file (fd >= 0, queue ID qid) or open_for's error. */
static void open_reply(struct peer *p, uint64_t req, int fd, const char *qid)
{
	if (fd >= 0)
		peer_reply(p, MXF_MSG_OPEN_REPLY, req, 250, "2.0.0", "Ok", qid, fd);
	else if (disk_full(fd))
		peer_reply(p, MXF_MSG_OPEN_REPLY, req, 452, "4.3.1", "Insufficient system storage",
			   NULL, -1);
	else
		peer_reply(p, MXF_MSG_OPEN_REPLY, req, 451, "4.3.0", "Error: queue file write error",
			   NULL, -1);
}

void recv_open(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req;
	char qid[MXF_QID_SIZE];

	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0) {
		peer_close(p);
		return;
	}
	open_reply(p, req, open_for(p, qid), qid);
}

/* Unlinks the opened file from p's list and returns it (NULL: not ours). */
static struct opened *take_opened(struct peer *p, const char *qid)
{
	for (struct opened **pp = &p->opened; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->qid, qid) == 0) {
			struct opened *o = *pp;
			*pp = o->next;
			p->nopened--;
			return o;
		}
	}
	return NULL;
}

void recv_abort(struct peer *p, const struct mxf_ipc_view *v)
{
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	struct opened *o = qid ? take_opened(p, qid) : NULL;
	if (!o)
		return;
	mxf_spool_discard(R.spool, o->qid);
	close(o->fd);
	free(o);
}

void recv_peer_gone(struct peer *p)
{
	while (p->opened) {
		struct opened *o = p->opened;
		p->opened = o->next;
		mxf_spool_discard(R.spool, o->qid);
		close(o->fd);
		free(o);
	}
	p->nopened = 0;
	/* Running commits finish (and are kept: a crash or a lost reply may
	 * duplicate, never lose) but have nobody to answer. */
	for (struct commit *c = p->commits; c; c = c->next)
		c->p = NULL;
	p->commits = NULL;
	work_peer_gone(p);
}

/* ---- COMMIT ----
 * Group commit. What must be on disk before the 250: the content and its
 * entry in msg/, the envelope and its entry in active/, and the envelope's
 * entry only after the other three (else a crash could leave an envelope
 * without its content). Each of those waits is one fsync; here they overlap
 * as far as that order allows, and the directories' fsyncs are shared:
 * - msg/: smtpd writes the content into msg/QID itself (created at OPEN).
 *   A syncer thread fsyncs msg/ whenever files were created since its last
 *   fsync began — usually while the client still sends the message — so
 *   one fsync covers every message created before it started.
 * - Each COMMIT is two jobs on the thread pool, run at once: fsync the
 *   content; write and fsync tmp/QID.env (file fsyncs are per file; many at
 *   once overlap on the disk, one after the other they would not).
 * - The job that finishes a message second waits until msg/ covers it and
 *   joins the queue of messages ready to publish. The first such job that
 *   finds no publish running becomes the leader: it takes the whole queue,
 *   renames the envelopes into active/ and fsyncs active/ once for all of
 *   them, then wakes the others (leader and followers, as databases do it).
 * Replies go out from the event loop once both jobs of a message returned:
 * nothing is answered before its batch is on disk, and a failed fsync is a
 * 451 for every message of the batch (a failed msg/ fsync: for every
 * message it was to cover).
 * Envelopes go straight into active/: the router routed the message before
 * the commit, so incoming/ (mail still to be routed) would only cost a
 * rename and two directory fsyncs more; start-up reschedules active/. */
#define BATCH_MAX 256
static struct {
	pthread_mutex_t mu;
	pthread_cond_t done; /* a msg/ fsync or a publish finished */
	pthread_cond_t wake; /* the syncer has work */
	/* msg/ entries: created counts OPENs; synced: the count when the last
	 * finished msg/ fsync began; failed: same, for the last that failed. */
	uint64_t created, synced, failed;
	int failed_err;
	bool syncer;
	struct commit *head, **tail; /* ready to publish */
	bool publishing;
	struct mxf_spool_commit_item items[BATCH_MAX]; /* the leader's */
} gc = {.mu = PTHREAD_MUTEX_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
	.wake = PTHREAD_COND_INITIALIZER,
	.tail = &gc.head};

static void *msgdir_syncer(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "mxf-msgsync"); /* tests aim at it */
	pthread_mutex_lock(&gc.mu);
	for (;;) {
		while (gc.synced >= gc.created)
			pthread_cond_wait(&gc.wake, &gc.mu);
		uint64_t upto = gc.created;
		pthread_mutex_unlock(&gc.mu);
		int r = mxf_spool_sync_dir(R.spool, MXF_SD_MSG);
		pthread_mutex_lock(&gc.mu);
		if (r < 0) {
			/* Never retried: whatever it was to cover is refused. */
			gc.failed = upto;
			gc.failed_err = r;
		}
		gc.synced = upto;
		pthread_cond_broadcast(&gc.done);
	}
	return NULL;
}

/* A new file in msg/ (the event loop, at OPEN): its stamp. */
static uint64_t msgdir_created(void)
{
	pthread_mutex_lock(&gc.mu);
	if (!gc.syncer) {
		pthread_t t;
		pthread_attr_t at;
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &at, msgdir_syncer, NULL) != 0)
			mxf_fatal("cannot start the msg/ syncer thread");
		pthread_attr_destroy(&at);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		gc.syncer = true;
	}
	uint64_t stamp = ++gc.created;
	pthread_cond_signal(&gc.wake);
	pthread_mutex_unlock(&gc.mu);
	return stamp;
}

/* The worker's reply: the same durable path as received mail (content
 * fsync'ed, envelope, directory fsyncs), after the message it answers, so
 * the client's 250 comes after both are on disk. */
static void reply_commit(struct commit *c)
{
	int fd = mxf_spool_create(R.spool, c->re->qid, NULL);
	size_t len = strlen(c->rraw), off = 0;
	c->rresult = fd;
	while (fd >= 0 && off < len) {
		ssize_t k = write(fd, c->rraw + off, len - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			c->rresult = k < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)k;
	}
	if (fd >= 0 && off == len) {
		struct mxf_spool_commit_item it = {.content_fd = fd, .e = c->re};
		mxf_spool_commit_batch(R.spool, MXF_SD_ACTIVE, &it, 1);
		c->rresult = it.result;
	}
	if (fd >= 0) {
		if (c->rresult < 0)
			mxf_spool_discard(R.spool, c->re->qid);
		close(fd);
	}
	c->rmoved = c->rresult == 0;
}

/* The leader's part, without the lock: batch is a list through qnext. */
static void publish(struct commit *batch)
{
	size_t n = 0;
	for (struct commit *c = batch; c; c = c->qnext, n++)
		gc.items[n] = c->item;
	mxf_spool_commit_publish(R.spool, MXF_SD_ACTIVE, gc.items, n);
	n = 0;
	for (struct commit *c = batch; c; c = c->qnext, n++) {
		c->result = gc.items[n].result;
		c->moved = c->result == 0;
		if (c->result == 0 && c->re)
			reply_commit(c);
	}
}

/* Under gc.mu, by the job that finished c's files second. */
static void commit_join(struct commit *c)
{
	while (gc.synced < c->stamp)
		pthread_cond_wait(&gc.done, &gc.mu);
	if (c->stamp <= gc.failed) {
		if (c->item.result == 0)
			c->item.result = gc.failed_err;
		c->item.fsync_failed = true;
	}
	*gc.tail = c;
	gc.tail = &c->qnext;
	while (!c->published) {
		if (gc.publishing) {
			pthread_cond_wait(&gc.done, &gc.mu);
			continue;
		}
		/* Leader: everything ready now (this one included, unless
		 * more than BATCH_MAX wait before it). */
		struct commit *batch = gc.head, *last = batch;
		for (size_t n = 1; last->qnext && n < BATCH_MAX; n++)
			last = last->qnext;
		gc.head = last->qnext;
		if (!gc.head)
			gc.tail = &gc.head;
		last->qnext = NULL;
		gc.publishing = true;
		pthread_mutex_unlock(&gc.mu);
		publish(batch);
		pthread_mutex_lock(&gc.mu);
		for (struct commit *x = batch; x; x = x->qnext)
			x->published = true;
		gc.publishing = false;
		pthread_cond_broadcast(&gc.done);
	}
}

/* One step's outcome; the first error wins. Under gc.mu. */
static void step_result(struct commit *c, int r, bool fsync_failed)
{
	if (r < 0 && c->item.result == 0)
		c->item.result = r;
	if (fsync_failed)
		c->item.fsync_failed = true;
}

static void content_work(uv_work_t *w)
{
	struct commit *c = w->data;
	bool ff;
	int r = mxf_spool_sync_content(R.spool, c->fd, &ff);
	pthread_mutex_lock(&gc.mu);
	step_result(c, r, ff);
	if (--c->steps == 0)
		commit_join(c);
	pthread_mutex_unlock(&gc.mu);
}

static void env_work(uv_work_t *w)
{
	struct commit *c = w->data;
	bool ff;
	int r = mxf_spool_write_env(R.spool, &c->item, &ff);
	pthread_mutex_lock(&gc.mu);
	step_result(c, r, ff);
	if (--c->steps == 0)
		commit_join(c);
	pthread_mutex_unlock(&gc.mu);
}

static void commit_finish(struct commit *c);

/* Both jobs' after-work: the reply once both returned. */
static void commit_done(uv_work_t *w, int status)
{
	struct commit *c = w->data;
	(void)status;
	if (--c->jobs == 0)
		commit_finish(c);
}


static void commit_detach(struct commit *c)
{
	if (!c->p)
		return;
	for (struct commit **pp = &c->p->commits; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
}

/* ---- mail returned to an SRS address ----
 * It is relayed to the original sender like any mail (add_routed). If it is
 * a bounce of a message we forwarded, that message's activity gets a
 * 'bounced' row with the upstream's diagnostic. The bouncer reads the
 * hostile content and answers with a few cleaned strings; the router only
 * checks them and writes the row. A bouncer that is down or slow only
 * costs the row, never the mail. */
#define RETURNED_MAX 64
static struct returned {
	uint64_t req;
	char qid[MXF_QID_SIZE];
	char back[MXF_ADDR_SIZE]; /* the original sender it is relayed to */
} returned[RETURNED_MAX];
static size_t returned_next;

/* True when the bouncer was handed the content. */
static bool returned_ask(const struct mxf_env *e)
{
	const char *back = NULL;
	if (strcmp(e->origin, "smtpd") != 0)
		return false;
	for (size_t i = 0; i < e->nrcpt && !back; i++)
		if (strcmp(e->rcpt[i].action, "relay") == 0)
			back = e->rcpt[i].dest;
	if (!back)
		return false;
	struct peer *p = peer_find_role(ROLE_BOUNCER);
	if (!p) {
		mxf_info("%s: returned mail not examined: no bouncer connected", e->qid);
		return false;
	}
	int fd = mxf_spool_open_content(R.spool, e->qid);
	if (fd < 0) {
		mxf_err("%s: cannot open returned mail: %s", e->qid, strerror(-fd));
		return false;
	}
	struct returned *rt = &returned[returned_next++ % RETURNED_MAX];
	rt->req = ++R.next_req;
	snprintf(rt->qid, sizeof(rt->qid), "%s", e->qid);
	snprintf(rt->back, sizeof(rt->back), "%s", back);
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_DSN_PARSE);
	int r = m ? 0 : -ENOMEM;
	if (r == 0 && (r = mxf_ipc_put_u64(m, F_REQ, rt->req)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_QID, e->qid)) == 0)
		r = peer_send(p, m, fd);
	if (r < 0) {
		mxf_err("%s: cannot ask the bouncer about returned mail: %s", e->qid, strerror(-r));
		rt->req = 0;
	}
	mxf_ipc_msg_free(m);
	close(fd);
	return true;
}

int recv_dsn_parsed(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req, code;
	const char *qid = mxf_ipc_str(v, F_QID, 0), *bqid = mxf_ipc_str(v, F_BOUNCE_QID, 0);
	const char *rcpt = mxf_ipc_str(v, F_RCPT, 0), *esc = mxf_ipc_str(v, F_ESC, 0);
	const char *diag = mxf_ipc_str(v, F_TEXT, 0), *relay = mxf_ipc_str(v, F_RELAY, 0);
	const char *action = mxf_ipc_str(v, F_ACTION, 0);
	(void)p;
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || mxf_ipc_u64(v, F_CODE, 0, &code) < 0 || !qid ||
	    !bqid || !rcpt || !esc || !diag || !relay)
		return -1;
	struct returned *rt = NULL;
	for (size_t i = 0; i < RETURNED_MAX && !rt; i++)
		if (returned[i].req == req && req && strcmp(returned[i].qid, qid) == 0)
			rt = &returned[i];
	if (!rt)
		return 0; /* forgotten (more than RETURNED_MAX at once): only a row lost */
	rt->req = 0;
	char e1[MXF_ADDR_SIZE * 4], e2[2200], e3[1100];
	mxf_log_escape(e1, sizeof(e1), rt->back, strlen(rt->back));
	if (code != 250 || !*bqid) {
		mxf_info("%s: mail returned to <%s> %s", qid, e1,
			 code != 250 ? "is not a delivery report"
				     : "is a delivery report naming no message of ours");
		return 0;
	}
	if (!mxf_qid_valid(bqid) || !action)
		return -1;
	if (*action && strcasecmp(action, "failed") != 0) {
		/* A success or delay report (NOTIFY passed on to the peer):
		 * relayed to the sender, but the message did not bounce. */
		mxf_info("%s: delivery report for %s with action=%s: relayed, not a bounce", qid, bqid,
			 mxf_log_escape(e2, sizeof(e2), action, strlen(action)));
		return 0;
	}
	/* Only a message that sender sent through us: a valid SRS address
	 * is proof of one forward to the holder, not of every queue ID. */
	if (!activity_sent_by(bqid, rt->back)) {
		mxf_warn("%s: delivery report names %s, which <%s> did not send; ignored", qid, bqid,
			 e1);
		return 0;
	}
	char reply[1100];
	if (*esc && !strstr(diag, esc))
		snprintf(reply, sizeof(reply), "%s %s", esc, diag);
	else
		snprintf(reply, sizeof(reply), "%s", *diag ? diag : esc);
	struct mxf_env *orig = mxf_env_new(bqid);
	if (!orig || mxf_env_set(&orig->sender, rt->back) < 0) {
		mxf_env_free(orig);
		return 0;
	}
	activity_add(orig, NULL, *rcpt ? rcpt : NULL, "bounced", *relay ? relay : NULL, reply);
	mxf_env_free(orig);
	mxf_info("%s: returned bounce of %s: to=<%s>, status=%s, reply=%s", qid, bqid,
		 mxf_log_escape(e3, sizeof(e3), rcpt, strlen(rcpt)),
		 *esc ? mxf_log_escape(e2, sizeof(e2), esc, strlen(esc)) : "unknown",
		 mxf_log_escape(e2, sizeof(e2), reply, strlen(reply)));
	return 0;
}

static void commit_finish(struct commit *c)
{
	struct peer *p = c->p;
	char e1[MXF_ADDR_SIZE * 4];

	commit_detach(c);
	close(c->fd);
	R.commits_running--;
	if (c->result == 0) {
		struct mxf_env *e = c->e;
		char text[64];
		snprintf(text, sizeof(text), "Ok: queued as %s", e->qid);
		if (p)
			peer_reply(p, MXF_MSG_COMMIT_REPLY, c->req, 250, "2.0.0", text, e->qid, -1);
		else
			mxf_warn("%s: committed, but the client went away before the reply", e->qid);
		mxf_info("%s: from=<%s>, size=%llu, nrcpt=%zu (queue active)", e->qid,
			 esc(e1, sizeof(e1), e->sender), (unsigned long long)e->size, e->nrcpt);
		char oqid[MXF_QID_SIZE];
		snprintf(oqid, sizeof(oqid), "%s", e->qid);
		bool shown = returned_ask(e);
		queue_add(e, c->moved ? MXF_SD_ACTIVE : MXF_SD_INCOMING, !shown && !c->shown);
		/* e is gone */
		if (c->re && c->rresult == 0) {
			mxf_info("%s: worker reply queued as %s", oqid, c->re->qid);
			mxf_info("%s: from=<>, to=<%s>, size=%llu, nrcpt=1, origin=worker (queue "
				 "active)",
				 c->re->qid, esc(e1, sizeof(e1), c->re->rcpt[0].dest),
				 (unsigned long long)c->re->size);
			queue_add(c->re, c->rmoved ? MXF_SD_ACTIVE : MXF_SD_INCOMING, true);
			c->re = NULL;
		} else if (c->re) {
			mxf_err("%s: worker reply not kept: queue file commit failed: %s", oqid,
				strerror(-c->rresult));
		}
	} else {
		mxf_err("%s: queue file commit failed: %s", c->e->qid, strerror(-c->result));
		if (p) {
			if (disk_full(c->result))
				peer_reply(p, MXF_MSG_COMMIT_REPLY, c->req, 452, "4.3.1",
					   "Insufficient system storage", c->e->qid, -1);
			else
				peer_reply(p, MXF_MSG_COMMIT_REPLY, c->req, 451, "4.3.0",
					   "Error: queue file write error", c->e->qid, -1);
		}
		mxf_env_free(c->e);
	}
	mxf_env_free(c->re);
	free(c->rraw);
	free(c);
	router_maybe_exit();
}

/* Adds the recipients an smtpd RCPT resolves to. Returns 1 when it
 * forwards, 0 when not, 2 when a worker decides (wb gets the request and
 * nothing is added yet), <0 when the address no longer routes. */
static int add_routed(struct mxf_env *e, const char *rcpt, struct workbatch **wb)
{
	char norm[MXF_ADDR_SIZE];
	struct mxf_route rt;
	int fwd = 0;

	if (mxf_addr_normalize(rcpt, MXF_ADDR_UTF8, norm, sizeof(norm)) < 0)
		return -EINVAL;
	if (srs_ours(norm)) {
		/* A return (normally a bounce) to the original sender: relayed
		 * with the envelope sender as received. */
		char back[MXF_ADDR_SIZE];
		if (srs_return(norm, back, sizeof(back)) < 0)
			return -EINVAL;
		int i = mxf_env_add_rcpt(e, norm, back, "", "relay");
		return i < 0 ? i : 0;
	}
	if (mxf_ruleset_lookup(R.rules, norm, e->sender, &rt) < 0)
		return -EINVAL;
	if (rt.kind == MXF_ROUTE_WORKER) {
		if (!mxf_ruleset_worker(R.rules, rt.text))
			return -EINVAL;
		if (!*wb && !(*wb = work_batch_new()))
			return -ENOMEM;
		int r = work_batch_add(*wb, norm, rcpt, rt.text, rt.tag);
		return r < 0 ? r : 2;
	}
	if (rt.kind == MXF_ROUTE_DROP) {
		int i = mxf_env_add_rcpt(e, norm, "", rt.tag, "drop");
		if (i < 0)
			return i;
		e->rcpt[i].status = MXF_RS_DROPPED;
		return 0;
	}
	if (rt.kind == MXF_ROUTE_WEBHOOK) {
		/* Issue 13: queued like a forward, with the URL as the
		 * destination; deliverd POSTs it (one copy per URL). */
		for (size_t k = 0; k < e->nrcpt; k++)
			if (strcmp(e->rcpt[k].action, "webhook") == 0 &&
			    strcmp(e->rcpt[k].dest, rt.text) == 0)
				return 0;
		/* 0: not an SMTP forward, so no SRS sender is needed for it. */
		int i = mxf_env_add_rcpt(e, norm, rt.text, rt.tag, "webhook");
		return i < 0 ? i : 0;
	}
	if (rt.kind != MXF_ROUTE_FORWARD || rt.ndest == 0)
		return -EINVAL;
	for (size_t d = 0; d < rt.ndest; d++) {
		/* Unverified: left out where the domain refuses them; otherwise
		 * queued and held back (deferred) until verified. */
		if (!rt.verified[d] && rt.refuse_unverified)
			continue;
		/* One copy per destination per message, however many
		 * recipients lead to it. */
		bool dup = false;
		for (size_t k = 0; k < e->nrcpt && !dup; k++)
			dup = strcmp(e->rcpt[k].action, "forward") == 0 &&
			      strcasecmp(e->rcpt[k].dest, rt.dests[d]) == 0;
		if (dup) {
			fwd = 1;
			continue;
		}
		int i = mxf_env_add_rcpt(e, norm, rt.dests[d], rt.tag, "forward");
		if (i < 0)
			return i;
		fwd = 1;
	}
	return fwd ? 1 : -EINVAL;
}

static int build_headers(struct mxf_env *e, const char *single_rcpt, bool from_bouncer,
			 const char *tls)
{
	char date[64], host[256], helo[256], name[256], ip[256], proto[64], rc[300], buf[2048];
	hdr_token(host, sizeof(host), R.hostname, "localhost");
	rfc5322_date((time_t)e->arrival, date, sizeof(date));
	if (from_bouncer) {
		snprintf(buf, sizeof(buf), "Received: by %s (mxferry) id %s; %s\r\n", host, e->qid,
			 date);
		return mxf_env_set(&e->headers, buf);
	}
	hdr_token(helo, sizeof(helo), e->helo, "unknown");
	hdr_token(name, sizeof(name), e->client_name, "unknown");
	hdr_token(ip, sizeof(ip), e->client_ip, "unknown");
	hdr_token(proto, sizeof(proto), e->proto, "SMTP");
	char forc[320] = "";
	if (single_rcpt) {
		hdr_token(rc, sizeof(rc), single_rcpt, "");
		snprintf(forc, sizeof(forc), "\r\n\tfor <%s>", rc);
	}
	/* TLS facts from smtpd "version=V cipher=C bits=N", as a comment
	 * the way Postfix writes it. */
	char tlsc[400] = "";
	if (tls && *tls) {
		char ver[64] = "", cip[128] = "", tv[64], tc[128];
		unsigned bits = 0;
		if (sscanf(tls, "version=%63s cipher=%127s bits=%u", ver, cip, &bits) == 3) {
			hdr_token(tv, sizeof(tv), ver, "unknown");
			hdr_token(tc, sizeof(tc), cip, "unknown");
			snprintf(tlsc, sizeof(tlsc), "\r\n\t(using %s with cipher %s (%u/%u bits))",
				 tv, tc, bits, bits);
		}
	}
	snprintf(buf, sizeof(buf),
		 "Received: from %s (%s [%s])%s\r\n\tby %s (mxferry) with %s id %s%s; %s\r\n", helo,
		 name, ip, tlsc, host, proto, e->qid, forc, date);
	return mxf_env_set(&e->headers, buf);
}

/* Issue 7: smtpd's Authentication-Results field. smtpd parses hostile
 * headers and DNS, so what it sends is checked like any peer string:
 * printable ASCII lines, CRLF then TAB or SP between them (folding only, no
 * new field can start), the field name, a CRLF at the end, bounded. */
static bool auth_results_clean(const char *s)
{
	static const char name[] = "Authentication-Results: ";
	size_t len = s ? strlen(s) : 0;
	if (len < sizeof(name) + 2 || len > 4096 || strncmp(s, name, sizeof(name) - 1) != 0 ||
	    s[len - 2] != '\r' || s[len - 1] != '\n')
		return false;
	for (size_t i = 0; i < len - 2; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r') {
			if (s[i + 1] != '\n' || (s[i + 2] != '\t' && s[i + 2] != ' '))
				return false;
			i++;
		} else if ((c < 0x20 && c != '\t') || c > 0x7e) {
			return false;
		}
	}
	return true;
}

/* Appends header lines (CRLF-terminated, validated by the caller) to the
 * block deliverd prepends to the content. */
static int headers_append(struct mxf_env *e, const char *more)
{
	size_t hl = strlen(e->headers), ml = strlen(more);
	char *h = malloc(hl + ml + 1);
	if (!h)
		return -ENOMEM;
	memcpy(h, e->headers, hl);
	memcpy(h + hl, more, ml + 1);
	int r = mxf_env_set(&e->headers, h);
	free(h);
	return r;
}

/* Returns <0 only for a protocol violation. */
int recv_commit(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req, size;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	const char *sender = mxf_ipc_str(v, F_SENDER, 0);
	size_t nrcpt = mxf_ipc_count(v, F_RCPT);
	/* Mail we make ourselves (the bouncer's notifications, mxferryctl's
	 * verification mail) goes out as is: no rules. */
	bool bouncer = p->role == ROLE_BOUNCER || p->role == ROLE_CTL;

	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || mxf_ipc_u64(v, F_SIZE, 0, &size) < 0 || !qid ||
	    !sender || !addr_clean(sender) || nrcpt == 0)
		return -1;
	for (size_t i = 0; i < nrcpt; i++)
		if (!addr_clean(mxf_ipc_str(v, F_RCPT, i)))
			return -1;
	/* DSN facts (RFC 3461): absent from bouncer and older smtpd; when
	 * present, one NOTIFY and one ORCPT per recipient. */
	size_t nnotify = mxf_ipc_count(v, F_DSN_NOTIFY), norcpt = mxf_ipc_count(v, F_ORCPT);
	const char *ret = mxf_ipc_str(v, F_RET, 0), *envid = mxf_ipc_str(v, F_ENVID, 0);
	if ((nnotify && nnotify != nrcpt) || (norcpt && norcpt != nrcpt) ||
	    (ret && *ret && strcmp(ret, "FULL") && strcmp(ret, "HDRS")) || !dsn_clean(envid, 100) ||
	    (mxf_ipc_count(v, F_TLS) && !addr_clean(mxf_ipc_str(v, F_TLS, 0))))
		return -1;
	if (mxf_ipc_count(v, F_AUTH_RESULTS) > 1 ||
	    (mxf_ipc_count(v, F_AUTH_RESULTS) == 1 &&
	     (bouncer || !auth_results_clean(mxf_ipc_str(v, F_AUTH_RESULTS, 0)))))
		return -1;
	/* Subject and Message-ID are the sender's text: smtpd made them safe
	 * for a log and JSON (mxf_mailhdr_value); checked again here. */
	const char *msgid = mxf_ipc_str(v, F_MSGID, 0), *subject = mxf_ipc_str(v, F_SUBJECT, 0);
	if (mxf_ipc_count(v, F_MSGID) > 1 || mxf_ipc_count(v, F_SUBJECT) > 1 ||
	    (msgid && !mxf_mailhdr_text_ok(msgid, MXF_MAILHDR_MSGID_MAX)) ||
	    (subject && !mxf_mailhdr_text_ok(subject, MXF_MAILHDR_SUBJECT_MAX)))
		return -1;
	for (size_t i = 0; i < nnotify; i++)
		if (!mxf_ipc_str(v, F_DSN_NOTIFY, i) || !dsn_clean(mxf_ipc_str(v, F_DSN_NOTIFY, i), 31))
			return -1;
	for (size_t i = 0; i < norcpt; i++)
		if (!addr_clean(mxf_ipc_str(v, F_ORCPT, i)) || strchr(mxf_ipc_str(v, F_ORCPT, i), ' '))
			return -1;
	/* An administrator's mxferryctl only sends verification mail: one
	 * recipient, the null sender (so nothing ever bounces back to us). */
	if (p->role == ROLE_CTL && (*sender || nrcpt != 1))
		return -1;
	struct opened *o = take_opened(p, qid);
	if (!o) {
		mxf_warn("%s[%ld]: COMMIT of a queue file it did not open", role_name(p->role),
			 (long)p->pid);
		return -1;
	}
	struct stat st = {0};
	struct mxf_env *e = NULL;
	struct workbatch *wb = NULL;
	unsigned code = 451;
	const char *ecode = "4.3.0", *text = "Error: queue file write error";
	int r;

	/* A reused file still holds its old bytes past what smtpd wrote: cut
	 * here, before anyone (a worker, the fsync, deliverd) reads it. */
	int sr = fstat(o->fd, &st);
	if (sr == 0 && o->reused && (uint64_t)st.st_size > size) {
		if (ftruncate(o->fd, (off_t)size) == 0)
			st.st_size = (off_t)size;
		else
			mxf_err("%s: cannot cut the queue file to %llu: %s", qid,
				(unsigned long long)size, strerror(errno));
	}
	if (sr < 0 || (uint64_t)st.st_size != size) {
		mxf_err("%s: size mismatch (file %lld, client says %llu)", qid, (long long)st.st_size,
			(unsigned long long)size);
		goto refuse;
	}
	if (!(e = mxf_env_new(qid)))
		goto refuse;
	e->arrival = time(NULL);
	e->size = size;
	if (mxf_env_set(&e->sender, sender) < 0 ||
	    mxf_env_set(&e->client_ip, mxf_ipc_str(v, F_CLIENT_IP, 0)) < 0 ||
	    mxf_env_set(&e->client_name, mxf_ipc_str(v, F_CLIENT_NAME, 0)) < 0 ||
	    mxf_env_set(&e->helo, mxf_ipc_str(v, F_HELO, 0)) < 0 ||
	    mxf_env_set(&e->proto, mxf_ipc_str(v, F_PROTO, 0)) < 0 ||
	    mxf_env_set(&e->origin, p->role == ROLE_CTL ? "ctl" : bouncer ? "bouncer" : "smtpd") < 0 ||
	    mxf_env_set(&e->ret, ret) < 0 || mxf_env_set(&e->envid, envid) < 0 ||
	    mxf_env_set(&e->msgid, msgid) < 0 || mxf_env_set(&e->subject, subject) < 0)
		goto refuse;
	bool forwards = false;
	for (size_t i = 0; i < nrcpt; i++) {
		const char *rcpt = mxf_ipc_str(v, F_RCPT, i);
		if (bouncer) {
			/* Mail the bouncer made goes out as is, to external
			 * addresses: no rule applies. */
			char norm[MXF_ADDR_SIZE];
			if (mxf_addr_normalize(rcpt, MXF_ADDR_UTF8, norm, sizeof(norm)) < 0) {
				code = 550, ecode = "5.1.3", text = "Bad recipient address syntax";
				goto refuse;
			}
			if ((r = mxf_env_add_rcpt(e, norm, norm, "", "relay")) < 0)
				goto refuse;
			continue;
		}
		size_t first = e->nrcpt;
		r = add_routed(e, rcpt, &wb);
		if (r == 2) {
			/* The worker's recipients get the DSN facts of this RCPT. */
			if (work_batch_set_dsn(wb, nnotify ? mxf_ipc_str(v, F_DSN_NOTIFY, i) : "",
					       norcpt ? mxf_ipc_str(v, F_ORCPT, i) : "") < 0)
				goto refuse;
			continue;
		}
		/* Every envelope recipient this RCPT became carries its DSN
		 * request; a forwarded one names the address given at RCPT. */
		for (size_t k = first; r >= 0 && k < e->nrcpt; k++) {
			const char *nt = nnotify ? mxf_ipc_str(v, F_DSN_NOTIFY, i) : "";
			const char *oc = norcpt ? mxf_ipc_str(v, F_ORCPT, i) : "";
			char dflt[MXF_ADDR_SIZE * 3 + 16];
			if (!*oc && strcmp(e->rcpt[k].action, "forward") == 0) {
				recv_orcpt_of(rcpt, dflt, sizeof(dflt));
				oc = dflt;
			}
			if (mxf_env_set(&e->rcpt[k].notify, nt) < 0 ||
			    mxf_env_set(&e->rcpt[k].orcpt, oc) < 0)
				r = -ENOMEM;
		}
		if (r == -EINVAL) {
			/* The rules changed between RCPT and end of DATA: a
			 * temporary refusal lets the client retry and get a
			 * fresh RCPT verdict; nothing is lost. */
			char e1[MXF_ADDR_SIZE * 4];
			mxf_warn("%s: recipient <%s> no longer routed; refusing the message", qid,
				 esc(e1, sizeof(e1), rcpt));
			code = 451, ecode = "4.3.0", text = "Recipient routing changed, try again later";
			goto refuse;
		}
		if (r < 0)
			goto refuse;
		forwards |= r == 1;
	}
	if (*sender && !addr_parses(sender)) {
		code = 550, ecode = "5.1.7", text = "Bad sender address syntax";
		goto refuse;
	}
	const char *single = nrcpt == 1 ? mxf_ipc_str(v, F_RCPT, 0) : NULL;
	if (wb) {
		/* A worker decides: the commit goes on (or is refused) when every
		 * worker has answered; the client waits for the verdict. */
		work_run(wb, p, req, o, e, forwards, single, mxf_ipc_str(v, F_TLS, 0),
			 mxf_ipc_str(v, F_AUTH_RESULTS, 0));
		return 0;
	}
	recv_commit_finish(p, req, o, e, forwards, single, mxf_ipc_str(v, F_TLS, 0), bouncer,
			   mxf_ipc_str(v, F_AUTH_RESULTS, 0), NULL);
	return 0;

refuse:
	work_batch_free(wb);
	recv_refuse(p, req, o, e, code, ecode, text);
	return 0;
}

void recv_refuse(struct peer *p, uint64_t req, struct opened *o, struct mxf_env *e, unsigned code,
		 const char *ecode, const char *text)
{
	mxf_env_free(e);
	mxf_spool_discard(R.spool, o->qid);
	close(o->fd);
	if (p)
		peer_reply(p, MXF_MSG_COMMIT_REPLY, req, code, ecode, text, o->qid, -1);
	free(o);
}

/* The envelope of a worker's reply: a new message from the null sender
 * (RFC 3834: an auto-reply is never bounced, and our queue never bounces
 * to <>) to the original sender, answered from the custom address (which
 * names the domain deliverd signs for). NULL when it cannot be made. */
static struct mxf_env *reply_env(const struct mxf_env *orig, const struct recv_reply *rp)
{
	char qid[MXF_QID_SIZE], to[MXF_ADDR_SIZE], e1[MXF_ADDR_SIZE * 4];
	struct mxf_env *re = NULL;
	if (mxf_addr_normalize(orig->sender, MXF_ADDR_UTF8, to, sizeof(to)) < 0) {
		mxf_warn("%s: worker reply not sent: cannot use the sender <%s>", orig->qid,
			 esc(e1, sizeof(e1), orig->sender));
		return NULL;
	}
	if (mxf_qid_new(qid) < 0 || !(re = mxf_env_new(qid)))
		goto fail;
	re->arrival = time(NULL);
	re->size = strlen(rp->raw);
	if (mxf_env_set(&re->sender, "") < 0 || mxf_env_set(&re->srs_sender, "") < 0 ||
	    mxf_env_set(&re->client_ip, "") < 0 || mxf_env_set(&re->client_name, "") < 0 ||
	    mxf_env_set(&re->helo, "") < 0 || mxf_env_set(&re->proto, "") < 0 ||
	    mxf_env_set(&re->origin, "worker") < 0 || mxf_env_set(&re->ret, "") < 0 ||
	    mxf_env_set(&re->envid, "") < 0 || build_headers(re, NULL, true, NULL) < 0 ||
	    mxf_env_add_rcpt(re, rp->from, to, rp->tag, "relay") < 0)
		goto fail;
	return re;
fail:
	mxf_err("%s: worker reply not sent: out of memory", orig->qid);
	mxf_env_free(re);
	return NULL;
}

/* SRS, the Received line, then the durable commit on the thread pool. */
void recv_commit_finish(struct peer *p, uint64_t req, struct opened *o, struct mxf_env *e,
			bool forwards, const char *single, const char *tls, bool bouncer,
			const char *xheaders, struct recv_reply *reply)
{
	char qid[MXF_QID_SIZE];
	const char *sender = e->sender;
	snprintf(qid, sizeof(qid), "%s", o->qid);
	unsigned code = 451;
	const char *ecode = "4.3.0", *text = "Error: queue file write error";
	int r;
	if (!p) {
		/* The client went away while a worker decided: nothing to keep. */
		code = 0;
		goto refuse;
	}
	if (forwards && *sender && R.srs) {
		char srs[1024];
		r = mxf_srs_forward(R.srs, sender, time(NULL), srs, sizeof(srs));
		/* An SRS local part can outgrow 64 octets, or wrap a quoted local
		 * part into something that is no longer an address: deliver
		 * with the original sender rather than hand deliverd an
		 * address it must refuse. */
		if (r == 0 && !addr_parses(srs))
			r = -EDOM;
		if (r == 0) {
			if (mxf_env_set(&e->srs_sender, srs) < 0)
				goto refuse;
		} else {
			char e1[MXF_ADDR_SIZE * 4];
			mxf_warn("%s: cannot SRS-rewrite <%s>: %s; keeping the sender", qid,
				 esc(e1, sizeof(e1), sender),
				 r == -EDOM ? "the SRS form is not a valid address (local part over "
					      "64 octets?)"
					    : strerror(-r));
			if (mxf_env_set(&e->srs_sender, sender) < 0)
				goto refuse;
		}
	} else if (mxf_env_set(&e->srs_sender, sender) < 0) {
		goto refuse;
	}
	if (build_headers(e, single, bouncer, tls) < 0)
		goto refuse;
	/* Right below our Received line: smtpd's A-R (trace and results of
	 * this hop stay together, the block still starts with Received), then
	 * a worker's forward(..., headers): X- headers checked by work.c. */
	if (xheaders && *xheaders && headers_append(e, xheaders) < 0)
		goto refuse;

	struct commit *c = calloc(1, sizeof(*c));
	if (!c)
		goto refuse;
	c->p = p;
	c->req = req;
	c->fd = o->fd;
	c->e = e;
	c->stamp = o->stamp;
	c->shown = o->shown;
	free(o);
	if (reply && (c->re = reply_env(e, reply))) {
		c->rraw = reply->raw;
		reply->raw = NULL;
	}
	recv_reply_free(reply);
	reply = NULL;
	c->item = (struct mxf_spool_commit_item){.content_fd = c->fd, .e = e};
	c->work.data = c->work2.data = c;
	c->jobs = c->steps = 2;
	if ((r = uv_queue_work(R.loop, &c->work, content_work, commit_done)) < 0 ||
	    (r = uv_queue_work(R.loop, &c->work2, env_work, commit_done)) < 0)
		mxf_fatal("cannot queue a commit: %s", uv_strerror(r));
	c->next = p->commits;
	p->commits = c;
	R.commits_running++;
	return;

refuse:
	recv_reply_free(reply);
	recv_refuse(code ? p : NULL, req, o, e, code, ecode, text);
}
