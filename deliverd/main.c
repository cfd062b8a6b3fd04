/* deliverd: outbound SMTP delivery (DESIGN.md §1).
 *
 * The router sends DELIVER with the message as a read-only descriptor; each
 * one becomes a job on libuv's thread pool (see delivery.h for why blocking),
 * and its per-recipient results go back as DELIVER_RESULT. Jobs wait here,
 * per destination, while that destination has dest_concurrency sessions
 * running: a burst to one domain then runs on a few connections that are
 * reused (the idle-connection cache in delivery.c) instead of opening one
 * per message, and cannot take every worker from other destinations. deliverd holds no
 * state of its own: if the router goes away mid-job, the job finishes, its
 * result is dropped, and the router re-sends what was in flight to the next
 * deliverd connection. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "address.h"
#include "config.h"
#include "daemon.h"
#include "delivery.h"
#include "dns.h"
#include "ipc.h"
#include "ipcconn.h"
#include "log.h"
#include "queueid.h"
#include "rulesdb.h"
#include "sign.h"
#include "webhook.h"

#define DNS_TIMEOUT_S 5
/* How often idle cached connections past their time are closed. */
#define SWEEP_MS 1000
#define DNS_TRIES 2
/* Bound on recipients per DELIVER, far above what the router batches. */
#define MAX_RCPTS 1000

static struct {
	uv_loop_t *loop;
	struct mxf_config *cfg;
	struct mxf_dns *dns;
	struct mxf_routerlink *link;
	/* Bumped whenever the link comes up: a job started under an older
	 * generation answers a router connection that no longer exists. */
	uint64_t gen;
	size_t jobs;
	unsigned dest_concurrency;
	struct dest *dests; /* destinations with running or waiting jobs */
} g;

struct job {
	uv_work_t work;
	struct job *next; /* waiting in its destination's queue */
	struct dest *dest;
	uint64_t req;
	uint64_t gen;
	struct dlv_job d;
};

struct dest {
	struct dest *next;
	char key[DLV_DEST_SIZE];
	unsigned running;
	struct job *head, *tail; /* waiting */
};

static void job_free(struct job *jb)
{
	struct dlv_job *d = &jb->d;
	for (size_t i = 0; i < d->nrcpt; i++) {
		free(d->rcpt[i].addr);
		free(d->rcpt[i].notify);
		free(d->rcpt[i].orcpt);
		free(d->rcpt[i].text);
	}
	free(d->rcpt);
	free(d->sender);
	free(d->domain);
	free(d->nexthop);
	free(d->ret);
	free(d->envid);
	free(d->headers);
	for (size_t i = 0; i < d->ndkim; i++)
		free(d->dkim[i]);
	free(d->dkim);
	free(d->arc);
	free(d->webhook);
	if (d->fd >= 0)
		close(d->fd);
	mxf_dns_free(d->dns);
	free(jb);
}

static const char *status_word(int code)
{
	return code / 100 == 2 ? "sent" : code / 100 == 4 ? "deferred" : "bounced";
}

static void work_cb(uv_work_t *w)
{
	struct job *jb = w->data;
	if (jb->d.webhook)
		whk_run(&jb->d);
	else
		dlv_run(&jb->d);
}

static void after_work_cb(uv_work_t *w, int status);

static void start_job(struct job *jb)
{
	jb->dest->running++;
	int r = uv_queue_work(g.loop, &jb->work, work_cb, after_work_cb);
	if (r < 0)
		mxf_fatal("%s: cannot queue delivery: %s", jb->d.qid, uv_strerror(r));
}

static void dispatch(struct job *jb)
{
	char key[DLV_DEST_SIZE];
	struct dest *ds;
	if (jb->d.webhook)
		snprintf(key, sizeof(key), "webhook %s", jb->d.domain);
	else
		dlv_dest_key(&jb->d, key);
	for (ds = g.dests; ds && strcmp(ds->key, key) != 0; ds = ds->next)
		;
	if (!ds) {
		if (!(ds = calloc(1, sizeof(*ds))))
			mxf_fatal("out of memory");
		snprintf(ds->key, sizeof(ds->key), "%s", key);
		ds->next = g.dests;
		g.dests = ds;
	}
	jb->dest = ds;
	g.jobs++;
	if (ds->running < g.dest_concurrency) {
		start_job(jb);
		return;
	}
	if (ds->tail)
		ds->tail->next = jb;
	else
		ds->head = jb;
	ds->tail = jb;
}

/* A job of ds finished: start its next waiting one, or forget ds. */
static void dest_done(struct dest *ds)
{
	ds->running--;
	if (ds->head && ds->running < g.dest_concurrency) {
		struct job *n = ds->head;
		if (!(ds->head = n->next))
			ds->tail = NULL;
		n->next = NULL;
		start_job(n);
		return;
	}
	if (ds->running == 0 && !ds->head) {
		struct dest **pp = &g.dests;
		while (*pp != ds)
			pp = &(*pp)->next;
		*pp = ds->next;
		free(ds);
	}
}

static void after_work_cb(uv_work_t *w, int status)
{
	struct job *jb = w->data;
	struct dlv_job *d = &jb->d;
	(void)status; /* never cancelled */

	g.jobs--;
	dest_done(jb->dest);
	for (size_t i = 0; i < d->nrcpt; i++) {
		struct dlv_rcpt *r = &d->rcpt[i];
		char to[MXF_ADDR_SIZE * 4 + 1], text[1024];
		mxf_log_escape(to, sizeof(to), r->addr, strlen(r->addr));
		mxf_log_escape(text, sizeof(text), r->text, strlen(r->text));
		mxf_info("%s: to=<%s>, relay=%s, %s%sdsn=%s, status=%s (%d %s)", d->qid, to,
			 d->relay, d->info, d->info[0] ? ", " : "", r->esc, status_word(r->code),
			 r->code, text);
	}
	if (jb->gen != g.gen || !mxf_routerlink_up(g.link)) {
		mxf_info("%s: router connection changed during delivery; result dropped (the "
			 "router re-sends)",
			 d->qid);
		job_free(jb);
		return;
	}
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_DELIVER_RESULT);
	int rc = m ? 0 : -ENOMEM;
	if (rc == 0)
		rc = mxf_ipc_put_u64(m, F_REQ, jb->req);
	if (rc == 0)
		rc = mxf_ipc_put_str(m, F_QID, d->qid);
	if (rc == 0)
		rc = mxf_ipc_put_u64(m, F_PEER_DSN, d->peer_dsn ? 1 : 0);
	for (size_t i = 0; i < d->nrcpt && rc == 0; i++) {
		struct dlv_rcpt *r = &d->rcpt[i];
		rc = mxf_ipc_put_u64(m, F_RIDX, r->ridx);
		if (rc == 0)
			rc = mxf_ipc_put_u64(m, F_CODE, (uint64_t)r->code);
		if (rc == 0)
			rc = mxf_ipc_put_str(m, F_ESC, r->esc);
		if (rc == 0)
			rc = mxf_ipc_put_str(m, F_TEXT, r->text);
		if (rc == 0)
			rc = mxf_ipc_put_str(m, F_RELAY, d->relay);
	}
	if (rc == -E2BIG)
		mxf_fatal("%s: delivery result exceeds the IPC message limit", d->qid);
	if (rc < 0)
		mxf_fatal("%s: cannot build delivery result: %s", d->qid, strerror(-rc));
	rc = mxf_routerlink_send(g.link, m, -1);
	if (rc < 0)
		mxf_warn("%s: cannot send delivery result: %s; the router re-sends", d->qid,
			 strerror(-rc));
	mxf_ipc_msg_free(m);
	job_free(jb);
}

/* Envelope addresses go into SMTP commands verbatim: anything that is not a
 * well-formed mailbox (a CR or LF above all) would let the router's input
 * inject commands. The router validated them already; a bad one is a bug. */
static bool addr_ok(const char *a)
{
	char local[MXF_LOCAL_MAX * 4 + 8], dom[MXF_DOMAIN_MAX + 1];
	for (const char *p = a; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
			return false;
	return mxf_addr_parse(a, MXF_ADDR_UTF8, local, sizeof(local), dom, sizeof(dom)) == 0;
}

/* A DSN parameter as the router passes it: already in wire form (xtext and
 * keywords), so only printable ASCII without spaces, or "" for none. */
static char *dsn_param(const struct mxf_ipc_view *v, uint16_t tag, size_t idx, const char *what)
{
	const char *s = mxf_ipc_str(v, tag, idx);
	if (!s || strlen(s) > 500)
		mxf_fatal("malformed DELIVER from router: %s", what);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			mxf_fatal("malformed DELIVER from router: %s", what);
	if (!s[0])
		return NULL;
	char *c = strdup(s);
	if (!c)
		mxf_fatal("out of memory");
	return c;
}

static const char *one_str(const struct mxf_ipc_view *v, uint16_t tag, const char *what)
{
	const char *s;
	if (mxf_ipc_count(v, tag) != 1 || !(s = mxf_ipc_str(v, tag, 0)))
		mxf_fatal("malformed DELIVER from router: %s", what);
	return s;
}

static char *xstrdup(const char *s)
{
	char *c = strdup(s);
	if (!c)
		mxf_fatal("out of memory");
	return c;
}

/* "domain selector alg": 3 words of printable ASCII. */
static bool spec_ok(const char *s)
{
	size_t sp = 0, n = strlen(s);
	for (const char *p = s; *p; p++) {
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			return false;
		sp += *p == ' ';
	}
	return n > 4 && n < 400 && sp == 2;
}

static void on_deliver(const struct mxf_ipc_view *v, int fd)
{
	uint64_t req, ridx;
	size_t n = mxf_ipc_count(v, F_RCPT);

	/* A malformed request from the router is fatal (DESIGN.md §3). */
	if (fd < 0 || (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY)
		mxf_fatal("malformed DELIVER from router: no read-only content descriptor");
	if (mxf_ipc_count(v, F_REQ) != 1 || mxf_ipc_u64(v, F_REQ, 0, &req) < 0)
		mxf_fatal("malformed DELIVER from router: F_REQ");
	const char *qid = one_str(v, F_QID, "F_QID");
	if (!mxf_qid_valid(qid))
		mxf_fatal("malformed DELIVER from router: invalid queue ID");
	const char *sender = one_str(v, F_SENDER, "F_SENDER");
	const char *domain = one_str(v, F_DOMAIN, "F_DOMAIN");
	const char *headers = "";
	if (mxf_ipc_count(v, F_HEADERS) > 0)
		headers = one_str(v, F_HEADERS, "F_HEADERS");
	size_t hl = strlen(headers);
	if (hl > 0 && (hl < 2 || headers[hl - 2] != '\r' || headers[hl - 1] != '\n'))
		mxf_fatal("malformed DELIVER from router: F_HEADERS must end with CRLF");
	if (n == 0 || n > MAX_RCPTS || mxf_ipc_count(v, F_RIDX) != n)
		mxf_fatal("malformed DELIVER from router: recipient lists");
	/* DSN parameters: optional, and then one per recipient. */
	size_t nnotify = mxf_ipc_count(v, F_DSN_NOTIFY), norcpt = mxf_ipc_count(v, F_ORCPT);
	if ((nnotify && nnotify != n) || (norcpt && norcpt != n) || mxf_ipc_count(v, F_RET) > 1 ||
	    mxf_ipc_count(v, F_ENVID) > 1)
		mxf_fatal("malformed DELIVER from router: DSN parameters");
	if (sender[0] && !addr_ok(sender))
		mxf_fatal("malformed DELIVER from router: sender");
	/* Issue 13: a webhook POST: one recipient (the custom address), the
	 * URL checked as rules.db checks it; F_DOMAIN is the URL's host, a
	 * key for the per-destination bound only. */
	const char *webhook = NULL;
	char adomain[MXF_DOMAIN_MAX + 1];
	if (mxf_ipc_count(v, F_WEBHOOK) > 0) {
		webhook = one_str(v, F_WEBHOOK, "F_WEBHOOK");
		if (!mxf_rulesdb_webhook_url_ok(webhook) || n != 1 ||
		    strlen(domain) >= sizeof(adomain))
			mxf_fatal("malformed DELIVER from router: webhook");
		for (const char *p = domain; *p; p++)
			if ((unsigned char)*p <= 0x20 || *p == 0x7f)
				mxf_fatal("malformed DELIVER from router: webhook host");
		snprintf(adomain, sizeof(adomain), "%s", domain);
	/* IDN destinations are looked up by their A-labels. */
	} else if (mxf_domain_to_ascii(domain, adomain, sizeof(adomain)) < 0 ||
		   !mxf_dns_name_valid(adomain)) {
		mxf_fatal("malformed DELIVER from router: domain");
	}
	const char *nexthop = NULL;
	if (mxf_ipc_count(v, F_NEXTHOP) > 0) {
		nexthop = one_str(v, F_NEXTHOP, "F_NEXTHOP");
		for (const char *p = nexthop; *p; p++)
			if ((unsigned char)*p <= 0x20 || *p == 0x7f)
				mxf_fatal("malformed DELIVER from router: F_NEXTHOP");
	}

	struct job *jb = calloc(1, sizeof(*jb));
	if (!jb || !(jb->d.rcpt = calloc(n, sizeof(*jb->d.rcpt))))
		mxf_fatal("out of memory");
	struct dlv_job *d = &jb->d;
	d->fd = fd;
	for (size_t i = 0; i < n; i++) {
		const char *rc = mxf_ipc_str(v, F_RCPT, i);
		if (!rc || !addr_ok(rc) || mxf_ipc_u64(v, F_RIDX, i, &ridx) < 0)
			mxf_fatal("malformed DELIVER from router: recipient %zu", i);
		d->rcpt[i].ridx = ridx;
		d->rcpt[i].addr = xstrdup(rc);
		d->nrcpt++;
		if (nnotify)
			d->rcpt[i].notify = dsn_param(v, F_DSN_NOTIFY, i, "F_DSN_NOTIFY");
		if (norcpt)
			d->rcpt[i].orcpt = dsn_param(v, F_ORCPT, i, "F_ORCPT");
	}
	if (mxf_ipc_count(v, F_RET) == 1)
		d->ret = dsn_param(v, F_RET, 0, "F_RET");
	if (mxf_ipc_count(v, F_ENVID) == 1)
		d->envid = dsn_param(v, F_ENVID, 0, "F_ENVID");
	jb->req = req;
	jb->gen = g.gen;
	jb->work.data = jb;
	snprintf(d->qid, sizeof(d->qid), "%s", qid);
	d->sender = xstrdup(sender);
	d->domain = xstrdup(adomain);
	d->nexthop = nexthop && nexthop[0] ? xstrdup(nexthop) : NULL;
	d->headers = xstrdup(headers);
	d->webhook = webhook ? xstrdup(webhook) : NULL;
	/* Signing keys (names only; the router holds them): printable, no
	 * control characters, bounded. */
	size_t nd = mxf_ipc_count(v, F_DKIM);
	if (nd > 16 || mxf_ipc_count(v, F_ARC) > 1)
		mxf_fatal("malformed DELIVER from router: signing keys");
	if (nd && !(d->dkim = calloc(nd, sizeof(*d->dkim))))
		mxf_fatal("out of memory");
	for (size_t i = 0; i < nd; i++) {
		const char *s = mxf_ipc_str(v, F_DKIM, i);
		if (!s || !spec_ok(s))
			mxf_fatal("malformed DELIVER from router: F_DKIM");
		d->dkim[d->ndkim++] = xstrdup(s);
	}
	if (mxf_ipc_count(v, F_ARC) == 1) {
		const char *s = mxf_ipc_str(v, F_ARC, 0);
		if (!s || !spec_ok(s))
			mxf_fatal("malformed DELIVER from router: F_ARC");
		d->arc = xstrdup(s);
	}
	/* ldns resolvers are not thread-safe: each job gets its own copy,
	 * made here on the loop thread. */
	if (mxf_dns_clone(g.dns, &d->dns) < 0)
		mxf_fatal("out of memory");

	char from[MXF_ADDR_SIZE * 4 + 1], dom[MXF_DNS_NAME_MAX + 1];
	mxf_log_escape(from, sizeof(from), sender, strlen(sender));
	mxf_log_escape(dom, sizeof(dom), adomain, strlen(adomain));
	mxf_info("%s: from=<%s>, domain=%s%s%s, nrcpt=%zu", qid, from, dom,
		 d->nexthop ? ", nexthop=" : "", d->nexthop ? d->nexthop : "", n);
	dispatch(jb);
}

static void on_msg(const struct mxf_ipc_view *v, int fd, void *arg)
{
	(void)arg;
	if (mxf_ipc_type(v) != MXF_MSG_DELIVER)
		mxf_fatal("unexpected message type %u from router", mxf_ipc_type(v));
	on_deliver(v, fd);
}

static void on_state(bool up, void *arg)
{
	(void)arg;
	if (up)
		g.gen++;
	else if (g.jobs)
		mxf_info("%zu deliveries in progress; their results will be dropped", g.jobs);
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)h;
	mxf_info("stopping on signal %d (%zu deliveries in progress; the router re-sends them)",
		 signum, g.jobs);
	/* Jobs block in worker threads; nothing here needs flushing, and the
	 * router owns every message, so leaving now loses nothing. */
	_exit(0);
}

static void on_sweep(uv_timer_t *t)
{
	(void)t;
	dlv_cache_sweep();
}

static int ms(const char *key)
{
	return (int)mxf_config_int(g.cfg, "deliverd", key) * 1000;
}

int main(int argc, char **argv)
{
	char sock[4096], err[512], pool[16];
	uv_signal_t sigterm, sigint;
	uv_timer_t sweep;

	g.cfg = mxf_daemon_init(argc, argv, "deliverd");
	signal(SIGPIPE, SIG_IGN);
	/* The master reloads by replacing smtpd and HUPping the router only; a
	 * stray SIGHUP must not kill a daemon mid-work. */
	signal(SIGHUP, SIG_IGN);

	/* Before the drop: reading /etc/resolv.conf is impossible in the chroot. */
	const char *server = mxf_config_str(g.cfg, "main", "dns_resolver");
	if (mxf_dns_new(server, DNS_TIMEOUT_S, DNS_TRIES, &g.dns, err, sizeof(err)) < 0)
		mxf_fatal("%s", err);

	struct dlv_settings st = {
		.helo = mxf_config_str(g.cfg, "main", "hostname"),
		.port = (unsigned)mxf_config_int(g.cfg, "deliverd", "smtp_port"),
		.connect_timeout_ms = ms("connect_timeout"),
		.greeting_timeout_ms = ms("greeting_timeout"),
		.command_timeout_ms = ms("command_timeout"),
		.data_init_timeout_ms = ms("data_init_timeout"),
		.data_block_timeout_ms = ms("data_block_timeout"),
		.data_done_timeout_ms = ms("data_done_timeout"),
		.prefer_ipv6 = mxf_config_bool(g.cfg, "deliverd", "prefer_ipv6"),
		.starttls = mxf_config_bool(g.cfg, "deliverd", "starttls"),
		.relayhost = mxf_config_str(g.cfg, "deliverd", "relayhost"),
		.tls_ca_file = mxf_config_str(g.cfg, "deliverd", "tls_ca_file"),
		.cache_time_ms = ms("conn_cache_time"),
		.cache_per_dest = (unsigned)mxf_config_int(g.cfg, "deliverd", "conn_cache_per_dest"),
		.cache_total = (unsigned)mxf_config_int(g.cfg, "deliverd", "conn_cache_total"),
	};
	/* Before the drop: the CA file and GMime's charset tables. */
	if (dlv_init(&st, err, sizeof(err)) < 0)
		mxf_fatal("%s", err);
	g.dest_concurrency = (unsigned)mxf_config_int(g.cfg, "deliverd", "dest_concurrency");
	if (whk_init(st.tls_ca_file, (int)mxf_config_int(g.cfg, "deliverd", "webhook_timeout"), err,
		     sizeof(err)) < 0)
		mxf_fatal("%s", err);

	mxf_daemon_drop(g.cfg, "deliverd", true, sock, sizeof(sock));
	const char *asid = mxf_config_str(g.cfg, "auth", "authserv_id");
	dsig_init(sock, mxf_config_bool(g.cfg, "auth", "arc"),
		  asid[0] ? asid : mxf_config_str(g.cfg, "main", "hostname"));

	/* Sessions at once = worker threads. Must precede the first use of
	 * the pool, where libuv reads it. */
	snprintf(pool, sizeof(pool), "%lld", mxf_config_int(g.cfg, "deliverd", "max_sessions"));
	setenv("UV_THREADPOOL_SIZE", pool, 1);
	g.loop = uv_default_loop();
	uv_timer_init(g.loop, &sweep);
	uv_timer_start(&sweep, on_sweep, SWEEP_MS, SWEEP_MS);
	uv_signal_init(g.loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_init(g.loop, &sigint);
	uv_signal_start(&sigint, on_signal, SIGINT);

	if (mxf_routerlink_start(g.loop, sock, "deliverd", on_msg, on_state, NULL, &g.link) < 0)
		mxf_fatal("cannot start router link");
	mxf_info("started: smtp_port=%u, dns=%s, relayhost=%s, prefer_ipv6=%s, starttls=%s, "
		 "max_sessions=%s, dest_concurrency=%u, conn_cache_time=%ds",
		 st.port, server[0] ? server : "/etc/resolv.conf",
		 st.relayhost[0] ? st.relayhost : "none", st.prefer_ipv6 ? "yes" : "no",
		 st.starttls ? "yes" : "no", pool, g.dest_concurrency, st.cache_time_ms / 1000);
	uv_run(g.loop, UV_RUN_DEFAULT);
	return 0;
}
