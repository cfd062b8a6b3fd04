/* Workers (issue 13): recipients whose rule names a worker are decided at
 * end of DATA, before the client gets its answer. At COMMIT the router
 * sends workerd one WORK per such recipient (the worker's definition from
 * the loaded rule set, the envelope, a read-only descriptor of the content)
 * and holds the COMMIT until every answer is in:
 *   - any worker failed (crash, timeout, garbage, workerd down or gone):
 *     451 4.3.0, an `error` activity row, nothing kept -- never a partial
 *     forward, the client retries the whole transaction;
 *   - any worker rejected: 550 5.7.1 REASON for the whole transaction
 *     (every recipient of it, as SMTP has one verdict after DATA), a
 *     `rejected` row, nothing kept;
 *   - otherwise the forwards to verified destinations become recipients
 *     (others are refused and logged), and a recipient without any becomes
 *     a `dropped` row; then the ordinary durable commit. A worker's reply
 *     (one per message) that passed workerd's guards and ours (the
 *     original passed DMARC, its sender is not null) is committed with it
 *     as a new message from the null sender to the original sender. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "address.h"
#include "log.h"
#include "router.h"
#include "rulesdb.h"
#include "spool.h"
#include "strbuf.h"
#include "workerproto.h"

/* What the router waits beyond the worker's own deadline before it gives
 * up on workerd (which kills the worker at the deadline itself). */
#define WORK_GRACE_MS 5000

struct wdec {
	char *action, *to, *reason, *xh;
	char *raw; /* reply: the message to send, NULL when workerd refused it */
};

struct witem {
	char *norm, *given, *worker, *tag, *notify, *orcpt;
	uint64_t wreq;    /* WORK request id (0: not sent) */
	struct peer *wp;  /* the workerd it went to */
	bool done, failed;
	char *error;
	struct wdec *dec;
	size_t ndec;
};

struct workbatch {
	struct workbatch *next;
	struct witem *it;
	size_t n, cap;
	struct peer *p; /* the client (smtpd); NULL once gone */
	uint64_t req;
	struct opened *o;
	struct mxf_env *e;
	bool forwards;
	char *single, *tls;
	char *ar; /* smtpd's Authentication-Results field (validated), or NULL */
	unsigned left;
	uv_timer_t timer;
};

static struct workbatch *running;

struct workbatch *work_batch_new(void)
{
	return calloc(1, sizeof(struct workbatch));
}

static void item_free(struct witem *w)
{
	free(w->norm);
	free(w->given);
	free(w->worker);
	free(w->tag);
	free(w->notify);
	free(w->orcpt);
	free(w->error);
	for (size_t i = 0; i < w->ndec; i++) {
		free(w->dec[i].action);
		free(w->dec[i].to);
		free(w->dec[i].reason);
		free(w->dec[i].xh);
		free(w->dec[i].raw);
	}
	free(w->dec);
}

void work_batch_free(struct workbatch *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n; i++)
		item_free(&b->it[i]);
	free(b->it);
	free(b->single);
	free(b->tls);
	free(b->ar);
	free(b);
}

int work_batch_add(struct workbatch *b, const char *norm, const char *given, const char *worker,
		   const char *tag)
{
	if (b->n == b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 4;
		struct witem *n = realloc(b->it, nc * sizeof(*n));
		if (!n)
			return -ENOMEM;
		b->it = n;
		b->cap = nc;
	}
	struct witem *w = &b->it[b->n];
	memset(w, 0, sizeof(*w));
	b->n++;
	w->norm = strdup(norm);
	w->given = strdup(given);
	w->worker = strdup(worker);
	w->tag = strdup(tag ? tag : "");
	w->notify = strdup("");
	w->orcpt = strdup("");
	return w->norm && w->given && w->worker && w->tag && w->notify && w->orcpt ? 0 : -ENOMEM;
}

int work_batch_set_dsn(struct workbatch *b, const char *notify, const char *orcpt)
{
	struct witem *w = &b->it[b->n - 1];
	free(w->notify);
	free(w->orcpt);
	w->notify = strdup(notify ? notify : "");
	w->orcpt = strdup(orcpt ? orcpt : "");
	return w->notify && w->orcpt ? 0 : -ENOMEM;
}

static void item_fail(struct workbatch *b, struct witem *w, const char *why)
{
	if (w->done)
		return;
	w->done = true;
	w->failed = true;
	w->error = strdup(why);
	b->left--;
}

static void batch_closed(uv_handle_t *h)
{
	work_batch_free(h->data);
}

static char *esc(char *buf, size_t cap, const char *s)
{
	return mxf_log_escape(buf, cap, s, strlen(s));
}

static void row(struct workbatch *b, const struct witem *w, const char *dest, const char *status,
		const char *reply)
{
	struct mxf_env_rcpt r = {.orig = w->norm, .dest = (char *)(dest ? dest : ""),
				 .rule = w->tag, .action = "worker", .reply = "", .relay = ""};
	activity_add(b->e, &r, NULL, status, NULL, reply);
}

/* Our own Authentication-Results (smtpd's, validated by receive.c) says
 * dmarc=pass. smtpd writes each method as ";CRLF TAB method=result", and
 * no property it adds can hold a CR, so this cannot be matched elsewhere. */
static bool dmarc_passed(const char *ar)
{
	static const char key[] = ";\r\n\tdmarc=pass";
	const char *m = ar ? strstr(ar, key) : NULL;
	if (!m)
		return false;
	char c = m[sizeof(key) - 1];
	return c == ' ' || c == ';' || c == '\r';
}

/* The message is accepted: which reply, if any, goes out with it. Replies
 * are auto-replies (RFC 3834), so only one per message (the first
 * worker's), only to a sender that is not null (a bounce is never answered)
 * and only when the original passed DMARC: otherwise a forged sender would
 * make us mail a third party. A reply held back is logged and gets a
 * `dropped` row naming the sender; the message itself goes on. 0, or
 * -ENOMEM. */
static int pick_reply(struct workbatch *b, struct recv_reply **out)
{
	const struct mxf_env *e = b->e;
	char e1[1024], e2[600], reply[600];
	for (size_t i = 0; i < b->n; i++) {
		struct witem *w = &b->it[i];
		for (size_t k = 0; k < w->ndec; k++) {
			struct wdec *d = &w->dec[k];
			if (strcmp(d->action, "reply") != 0)
				continue;
			const char *why = !d->raw ? d->reason
					  : *out ? "one reply per message"
					  : !*e->sender ? "the original's sender is null"
					  : !dmarc_passed(b->ar) ? "the original did not pass DMARC"
								 : NULL;
			if (why) {
				snprintf(reply, sizeof(reply), "worker reply not sent: %s", why);
				mxf_info("%s: worker=%s reply to <%s> not sent: %s", b->o->qid,
					 w->worker, esc(e1, sizeof(e1), e->sender),
					 esc(e2, sizeof(e2), why));
				row(b, w, e->sender, "dropped", reply);
				continue;
			}
			struct recv_reply *r = calloc(1, sizeof(*r));
			if (!r || !(r->from = strdup(w->norm)) || !(r->tag = strdup(w->tag))) {
				recv_reply_free(r);
				return -ENOMEM;
			}
			r->raw = d->raw;
			d->raw = NULL;
			*out = r;
		}
	}
	return 0;
}

/* What workerd relays as a reply: our own bounds again (CRLF lines only, a
 * header section ended by a blank line, no more than the protocol allows
 * plus the Auto-Submitted field workerd may add). */
static bool reply_clean(const char *s)
{
	size_t len = s ? strlen(s) : 0;
	if (len < 4 || len > MXF_WP_MAX_REPLY + 64 || !strstr(s, "\r\n\r\n") ||
	    strcmp(s + len - 2, "\r\n") != 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r' && s[i + 1] != '\n')
			return false;
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			return false;
	}
	return true;
}

/* Every answer is in (or will never come): the verdict. */
static void batch_finish(struct workbatch *b)
{
	char e1[1024], e2[1024], reply[600];
	for (struct workbatch **pp = &running; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	uv_timer_stop(&b->timer);
	/* e and o go to recv_refuse or recv_commit_finish below. */
	struct mxf_env *e = b->e;
	struct opened *o = b->o;

	/* 1. A failed worker tempfails the whole transaction. */
	bool failed = false;
	for (size_t i = 0; i < b->n; i++) {
		struct witem *w = &b->it[i];
		if (!w->failed)
			continue;
		failed = true;
		snprintf(reply, sizeof(reply), "451 4.3.0 worker %s: %s", w->worker,
			 w->error ? w->error : "failed");
		mxf_warn("%s: to=<%s>, worker=%s, status=error (%s)", o->qid,
			 esc(e1, sizeof(e1), w->norm), w->worker,
			 esc(e2, sizeof(e2), w->error ? w->error : "failed"));
		row(b, w, NULL, "error", reply);
	}
	if (failed) {
		recv_refuse(b->p, b->req, o, e, 451, "4.3.0",
			    "Error: the message could not be processed, try again later");
		goto out;
	}
	/* 2. A rejection refuses it (SMTP has one answer after DATA). */
	const char *reason = NULL;
	for (size_t i = 0; i < b->n; i++) {
		struct witem *w = &b->it[i];
		for (size_t k = 0; k < w->ndec; k++) {
			if (strcmp(w->dec[k].action, "reject") != 0)
				continue;
			if (!reason)
				reason = w->dec[k].reason;
			snprintf(reply, sizeof(reply), "550 5.7.1 %s", w->dec[k].reason);
			mxf_info("%s: reject: to=<%s>, worker=%s, reply=%s", o->qid,
				 esc(e1, sizeof(e1), w->norm), w->worker,
				 esc(e2, sizeof(e2), reply));
			row(b, w, NULL, "rejected", reply);
			break;
		}
	}
	if (reason) {
		char text[MXF_WP_MAX_REASON * 4 + 1];
		snprintf(text, sizeof(text), "%s", reason);
		recv_refuse(b->p, b->req, o, e, 550, "5.7.1", text);
		goto out;
	}
	/* 3. Forwards to verified destinations; nothing else is delivered. */
	struct mxf_strbuf xh = {0};
	/* Our A-R first (below the Received line), then the workers' headers. */
	if (b->ar)
		mxf_sb_add(&xh, b->ar, strlen(b->ar));
	bool forwards = b->forwards;
	for (size_t i = 0; i < b->n; i++) {
		struct witem *w = &b->it[i];
		bool fwd = false;
		for (size_t k = 0; k < w->ndec; k++) {
			const struct wdec *d = &w->dec[k];
			char norm[MXF_ADDR_SIZE];
			if (strcmp(d->action, "forward") != 0)
				continue;
			if (mxf_addr_normalize(d->to, MXF_ADDR_UTF8, norm, sizeof(norm)) < 0 ||
			    !mxf_ruleset_dest_verified(R.rules, norm)) {
				/* Only the operator's verified destinations: a worker
				 * is code, and must not turn the gateway into a relay. */
				mxf_warn("%s: worker %s forward to <%s> refused: not a verified "
					 "destination",
					 o->qid, w->worker, esc(e1, sizeof(e1), d->to));
				row(b, w, d->to, "rejected",
				    "550 5.7.1 worker forward to an unverified destination refused");
				continue;
			}
			bool dup = false;
			for (size_t j = 0; j < e->nrcpt && !dup; j++)
				dup = strcmp(e->rcpt[j].action, "forward") == 0 &&
				      strcasecmp(e->rcpt[j].dest, norm) == 0;
			fwd = true;
			if (*d->xh && (!xh.p || !strstr(xh.p, d->xh)))
				mxf_sb_str(&xh, d->xh);
			if (dup)
				continue;
			int ri = mxf_env_add_rcpt(e, w->norm, norm, w->tag, "forward");
			char dflt[MXF_ADDR_SIZE * 3 + 16];
			const char *oc = w->orcpt;
			if (!*oc) {
				recv_orcpt_of(w->given, dflt, sizeof(dflt));
				oc = dflt;
			}
			if (ri < 0 || mxf_env_set(&e->rcpt[ri].notify, w->notify) < 0 ||
			    mxf_env_set(&e->rcpt[ri].orcpt, oc) < 0) {
				mxf_sb_free(&xh);
				recv_refuse(b->p, b->req, o, e, 451, "4.3.0",
					    "Error: queue file write error");
				goto out;
			}
		}
		if (fwd) {
			forwards = true;
			continue;
		}
		/* Dropped (by decision, or by doing nothing, as on the hosted
		 * service): recorded, not delivered. */
		int ri = mxf_env_add_rcpt(e, w->norm, "", w->tag, "worker");
		if (ri < 0) {
			mxf_sb_free(&xh);
			recv_refuse(b->p, b->req, o, e, 451, "4.3.0", "Error: queue file write error");
			goto out;
		}
		e->rcpt[ri].status = MXF_RS_DROPPED;
	}
	if (xh.err) {
		mxf_sb_free(&xh);
		recv_refuse(b->p, b->req, o, e, 451, "4.3.0", "Error: queue file write error");
		goto out;
	}
	struct recv_reply *rp = NULL;
	if (pick_reply(b, &rp) < 0) {
		mxf_sb_free(&xh);
		recv_refuse(b->p, b->req, o, e, 451, "4.3.0", "Error: queue file write error");
		goto out;
	}
	recv_commit_finish(b->p, b->req, o, e, forwards, b->single, b->tls, false, xh.p, rp);
	mxf_sb_free(&xh);
out:
	uv_close((uv_handle_t *)&b->timer, batch_closed);
}

static void on_timeout(uv_timer_t *t)
{
	struct workbatch *b = t->data;
	for (size_t i = 0; i < b->n; i++)
		item_fail(b, &b->it[i], "no answer from workerd");
	batch_finish(b);
}

static int send_work(struct workbatch *b, struct witem *w, struct peer *wp,
		     const struct mxf_ruleset_worker *def, int fd)
{
	struct mxf_env *e = b->e;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_WORK);
	w->wreq = ++R.next_req;
	int r = m ? 0 : -ENOMEM;
	if (r == 0 && (r = mxf_ipc_put_u64(m, F_REQ, w->wreq)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_QID, e->qid)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_WORKER, def->name)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_RUNTIME, def->runtime)) == 0 &&
	    (r = mxf_ipc_put_u64(m, F_TIMEOUT, def->timeout)) == 0 &&
	    (r = mxf_ipc_put_u64(m, F_NETWORK, def->network ? 1 : 0)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_SENDER, e->sender)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_ADDR, w->norm)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_CLIENT_IP, e->client_ip ? e->client_ip : "")) == 0 &&
	    (r = mxf_ipc_put_str(m, F_HELO, e->helo ? e->helo : "")) == 0 &&
	    (r = mxf_ipc_put_u64(m, F_SIZE, e->size)) == 0)
		r = strcmp(def->runtime, "js") == 0 ? mxf_ipc_put_str(m, F_SCRIPT, def->source)
						    : mxf_ipc_put_str(m, F_PATH, def->path);
	for (size_t i = 0; r == 0 && i < def->nenv; i++)
		r = mxf_ipc_put_str(m, F_ENV, def->env[i]);
	if (r == 0)
		r = peer_send(wp, m, fd);
	mxf_ipc_msg_free(m);
	if (r == 0)
		w->wp = wp;
	return r;
}

void work_run(struct workbatch *b, struct peer *p, uint64_t req, struct opened *o,
	      struct mxf_env *e, bool forwards, const char *single, const char *tls,
	      const char *auth_results)
{
	b->p = p;
	b->req = req;
	b->o = o;
	b->e = e;
	b->forwards = forwards;
	b->single = single ? strdup(single) : NULL;
	b->tls = tls ? strdup(tls) : NULL;
	b->ar = auth_results ? strdup(auth_results) : NULL;
	b->left = (unsigned)b->n;
	b->next = running;
	running = b;
	uv_timer_init(R.loop, &b->timer);
	b->timer.data = b;
	if ((single && !b->single) || (tls && !b->tls) || (auth_results && !b->ar)) {
		for (size_t i = 0; i < b->n; i++)
			item_fail(b, &b->it[i], "out of memory");
		batch_finish(b);
		return;
	}
	struct peer *wp = peer_find_role(ROLE_WORKERD);
	/* The message as smtpd wrote it, read-only for the worker (received
	 * in place in msg/, not yet committed). */
	int fd = mxf_spool_open_content(R.spool, o->qid);
	o->shown = true; /* a worker past its deadline may still read it */
	unsigned timeout = 0;
	for (size_t i = 0; i < b->n; i++) {
		struct witem *w = &b->it[i];
		const struct mxf_ruleset_worker *def = mxf_ruleset_worker(R.rules, w->worker);
		int r;
		if (!def)
			item_fail(b, w, "worker not defined");
		else if (!wp)
			item_fail(b, w, "workerd is not running");
		else if (fd < 0)
			item_fail(b, w, "cannot open the message");
		else if ((r = send_work(b, w, wp, def, fd)) < 0)
			item_fail(b, w, r == -E2BIG ? "worker definition too large" : strerror(-r));
		else if (def->timeout > timeout)
			timeout = def->timeout;
	}
	if (fd >= 0)
		close(fd);
	if (b->left == 0) {
		batch_finish(b);
		return;
	}
	uv_timer_start(&b->timer, on_timeout, (uint64_t)timeout * 1000 + WORK_GRACE_MS, 0);
}

static bool printable(const char *s, size_t max)
{
	if (!s || strlen(s) > max)
		return false;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return false;
	return true;
}

/* WORK_RESULT: checked again here (workerd runs the operator's code next
 * to hostile mail; what it relays reaches SMTP replies and headers). */
int work_result(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req, code;
	const char *qid = mxf_ipc_str(v, F_QID, 0), *text = mxf_ipc_str(v, F_TEXT, 0);
	size_t n = mxf_ipc_count(v, F_ACTION);
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || mxf_ipc_u64(v, F_CODE, 0, &code) < 0 || !qid ||
	    !printable(text, 300) || mxf_ipc_count(v, F_RCPT) != n ||
	    mxf_ipc_count(v, F_REASON) != n || mxf_ipc_count(v, F_XHEADERS) != n ||
	    n > MXF_WP_MAX_DECISIONS || (code != 250 && code != 451) || (code != 250 && n) ||
	    mxf_ipc_count(v, F_REPLY) > 1 ||
	    (mxf_ipc_count(v, F_REPLY) && !reply_clean(mxf_ipc_str(v, F_REPLY, 0))))
		return -1;
	size_t nreply = 0, nsent = 0;
	for (size_t i = 0; i < n; i++) {
		const char *a = mxf_ipc_str(v, F_ACTION, i), *to = mxf_ipc_str(v, F_RCPT, i);
		const char *rs = mxf_ipc_str(v, F_REASON, i), *xh = mxf_ipc_str(v, F_XHEADERS, i);
		if (!a || !printable(to, MXF_WP_MAX_ADDR) || !printable(rs, 4 * MXF_WP_MAX_REASON) ||
		    !xh || mxf_wp_check_headers(xh) < 0)
			return -1;
		bool ok;
		if (strcmp(a, "forward") == 0)
			ok = *to && !*rs;
		else if (strcmp(a, "reject") == 0)
			ok = *rs && !*to && !*xh;
		else if (strcmp(a, "reply") == 0)
			/* One per worker; sent (F_REPLY) or refused with a reason. */
			ok = !*to && !*xh && nreply++ == 0 && (nsent += !*rs) <= 1;
		else
			ok = strcmp(a, "drop") == 0 && !*to && !*rs && !*xh;
		if (!ok)
			return -1;
	}
	if (nsent != mxf_ipc_count(v, F_REPLY))
		return -1;
	for (struct workbatch *b = running; b; b = b->next) {
		for (size_t i = 0; i < b->n; i++) {
			struct witem *w = &b->it[i];
			if (w->wreq != req || w->wp != p || w->done)
				continue;
			if (strcmp(qid, b->o->qid) != 0)
				return -1;
			if (code != 250) {
				item_fail(b, w, text);
			} else {
				if (n && !(w->dec = calloc(n, sizeof(*w->dec)))) {
					item_fail(b, w, "out of memory");
				} else {
					for (size_t k = 0; k < n; k++) {
						w->dec[k].action = strdup(mxf_ipc_str(v, F_ACTION, k));
						w->dec[k].to = strdup(mxf_ipc_str(v, F_RCPT, k));
						w->dec[k].reason = strdup(mxf_ipc_str(v, F_REASON, k));
						w->dec[k].xh = strdup(mxf_ipc_str(v, F_XHEADERS, k));
						w->ndec++;
						if (!w->dec[k].action || !w->dec[k].to ||
						    !w->dec[k].reason || !w->dec[k].xh)
							break;
					}
					bool oom = false;
					for (size_t k = 0; k < w->ndec; k++)
						oom |= !w->dec[k].action || !w->dec[k].to ||
						       !w->dec[k].reason || !w->dec[k].xh;
					/* A reply workerd let through: its message. */
					for (size_t k = 0; k < w->ndec && !oom; k++)
						if (!strcmp(w->dec[k].action, "reply") &&
						    !*w->dec[k].reason)
							oom = !(w->dec[k].raw =
									strdup(mxf_ipc_str(v, F_REPLY, 0)));
					if (oom || w->ndec != n) {
						item_fail(b, w, "out of memory");
					} else {
						w->done = true;
						b->left--;
					}
				}
			}
			if (b->left == 0)
				batch_finish(b);
			return 0;
		}
	}
	return 0; /* an answer after the deadline: nobody waits for it */
}

void work_peer_gone(struct peer *p)
{
	struct workbatch *b = running;
	while (b) {
		struct workbatch *next = b->next;
		if (b->p == p)
			b->p = NULL; /* the client: its verdict has nobody to go to */
		for (size_t i = 0; i < b->n; i++)
			if (b->it[i].wp == p)
				item_fail(b, &b->it[i], "workerd went away");
		if (b->left == 0)
			batch_finish(b);
		b = next;
	}
}
