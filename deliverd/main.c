/* deliverd: outbound SMTP delivery (DESIGN.md §1).
 *
 * The router sends DELIVER with the message as a read-only descriptor; each
 * one becomes a job on libuv's thread pool (see delivery.h for why blocking),
 * and its per-recipient results go back as DELIVER_RESULT. deliverd holds no
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

/* Concurrent deliveries = worker threads (libuv's default is 4). */
#define THREADPOOL_SIZE "32"
#define DNS_TIMEOUT_S 5
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
} g;

struct job {
	uv_work_t work;
	uint64_t req;
	uint64_t gen;
	struct dlv_job d;
};

static void job_free(struct job *jb)
{
	struct dlv_job *d = &jb->d;
	for (size_t i = 0; i < d->nrcpt; i++) {
		free(d->rcpt[i].addr);
		free(d->rcpt[i].text);
	}
	free(d->rcpt);
	free(d->sender);
	free(d->domain);
	free(d->headers);
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
	dlv_run(&jb->d);
}

static void after_work_cb(uv_work_t *w, int status)
{
	struct job *jb = w->data;
	struct dlv_job *d = &jb->d;
	(void)status; /* never cancelled */

	g.jobs--;
	for (size_t i = 0; i < d->nrcpt; i++) {
		struct dlv_rcpt *r = &d->rcpt[i];
		char to[MXF_ADDR_SIZE * 4 + 1], text[1024];
		mxf_log_escape(to, sizeof(to), r->addr, strlen(r->addr));
		mxf_log_escape(text, sizeof(text), r->text, strlen(r->text));
		mxf_info("%s: to=<%s>, relay=%s, dsn=%s, status=%s (%d %s)", d->qid, to, d->relay,
			 r->esc, status_word(r->code), r->code, text);
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
	if (sender[0] && !addr_ok(sender))
		mxf_fatal("malformed DELIVER from router: sender");
	if (!mxf_dns_name_valid(domain))
		mxf_fatal("malformed DELIVER from router: domain");

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
	}
	jb->req = req;
	jb->gen = g.gen;
	jb->work.data = jb;
	snprintf(d->qid, sizeof(d->qid), "%s", qid);
	d->sender = xstrdup(sender);
	d->domain = xstrdup(domain);
	d->headers = xstrdup(headers);
	/* ldns resolvers are not thread-safe: each job gets its own copy,
	 * made here on the loop thread. */
	if (mxf_dns_clone(g.dns, &d->dns) < 0)
		mxf_fatal("out of memory");
	d->helo = mxf_config_str(g.cfg, "main", "hostname");
	d->port = (unsigned)mxf_config_int(g.cfg, "deliverd", "smtp_port");
	d->connect_timeout_ms = (int)mxf_config_int(g.cfg, "deliverd", "connect_timeout") * 1000;
	d->command_timeout_ms = (int)mxf_config_int(g.cfg, "deliverd", "command_timeout") * 1000;

	char from[MXF_ADDR_SIZE * 4 + 1], dom[MXF_DNS_NAME_MAX + 1];
	mxf_log_escape(from, sizeof(from), sender, strlen(sender));
	mxf_log_escape(dom, sizeof(dom), domain, strlen(domain));
	mxf_info("%s: from=<%s>, domain=%s, nrcpt=%zu", qid, from, dom, n);

	int r = uv_queue_work(g.loop, &jb->work, work_cb, after_work_cb);
	if (r < 0)
		mxf_fatal("%s: cannot queue delivery: %s", qid, uv_strerror(r));
	g.jobs++;
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

int main(int argc, char **argv)
{
	char sock[4096], err[512];
	uv_signal_t sigterm, sigint;

	g.cfg = mxf_daemon_init(argc, argv, "deliverd");
	signal(SIGPIPE, SIG_IGN);

	/* Before the drop: reading /etc/resolv.conf is impossible in the chroot. */
	const char *server = mxf_config_str(g.cfg, "main", "dns_resolver");
	if (mxf_dns_new(server, DNS_TIMEOUT_S, DNS_TRIES, &g.dns, err, sizeof(err)) < 0)
		mxf_fatal("%s", err);

	mxf_daemon_drop(g.cfg, "deliverd", true, sock, sizeof(sock));

	/* Must precede the first use of the pool, where libuv reads it. */
	setenv("UV_THREADPOOL_SIZE", THREADPOOL_SIZE, 1);
	g.loop = uv_default_loop();
	uv_signal_init(g.loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_init(g.loop, &sigint);
	uv_signal_start(&sigint, on_signal, SIGINT);

	if (mxf_routerlink_start(g.loop, sock, "deliverd", on_msg, on_state, NULL, &g.link) < 0)
		mxf_fatal("cannot start router link");
	mxf_info("started: smtp_port=%lld, dns=%s", mxf_config_int(g.cfg, "deliverd", "smtp_port"),
		 server[0] ? server : "/etc/resolv.conf");
	uv_run(g.loop, UV_RUN_DEFAULT);
	return 0;
}
