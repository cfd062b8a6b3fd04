/* bouncer: turns the router's BOUNCE requests into delivery status
 * notifications and submits them to the router as new mail (null sender), the
 * way smtpd submits: OPEN, write into the descriptor, COMMIT. It answers
 * BOUNCE_DONE only after the router committed the DSN, so the failed message
 * is not forgotten before its bounce is safely queued. It opens no file
 * itself: it is jailed in the spool's private/ directory. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "daemon.h"
#include "dsn.h"
#include "ipc.h"
#include "ipcconn.h"
#include "log.h"
#include "queueid.h"

#define MAX_HEADERS 65536
/* RET=FULL returns the whole message up to this size; a bigger one is
 * returned as headers only, and the notification says so (like Postfix's
 * bounce_size_limit: a bounce should not carry a large attachment back). */
#define MAX_RETURNED (128 * 1024)
/* How much of a returned bounce is read to find what it reports on. */
#define MAX_PARSE (256 * 1024)

enum job_state { JOB_OPENING, JOB_COMMITTING };

struct job {
	struct job *next;
	uint64_t bounce_req; /* the router's request id for BOUNCE */
	uint64_t req;        /* our OPEN/COMMIT request id */
	enum job_state state;
	char qid[MXF_QID_SIZE];
	char *sender;
	char *dsn;
	size_t dsn_len;
	char new_qid[MXF_QID_SIZE];
	bool delay;   /* a delay warning, not a bounce */
	bool relayed; /* a success notice (NOTIFY=SUCCESS to a host without DSN) */
};

static struct mxf_config *cfg;
static struct mxf_routerlink *link_;
static struct job *jobs;
static uint64_t next_req = 1;
static uv_signal_t sigterm, sigint;

static void job_free(struct job *j)
{
	free(j->sender);
	free(j->dsn);
	free(j);
}

static void job_unlink(struct job *j)
{
	for (struct job **p = &jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			return;
		}
}

static void send_done(uint64_t bounce_req, const char *qid, unsigned code, const char *bqid)
{
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_BOUNCE_DONE);
	if (!m || mxf_ipc_put_u64(m, F_REQ, bounce_req) < 0 || mxf_ipc_put_str(m, F_QID, qid) < 0 ||
	    mxf_ipc_put_u64(m, F_CODE, code) < 0 ||
	    (bqid && mxf_ipc_put_str(m, F_BOUNCE_QID, bqid) < 0))
		mxf_fatal("out of memory");
	if (mxf_routerlink_send(link_, m, -1) < 0)
		mxf_warn("%s: cannot report bounce result: router link down", qid);
	mxf_ipc_msg_free(m);
}

static void job_fail(struct job *j, const char *why)
{
	mxf_warn("%s: bounce not queued: %s; the router will ask again", j->qid, why);
	send_done(j->bounce_req, j->qid, 451, NULL);
	job_unlink(j);
	job_free(j);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void on_open_reply(struct job *j, const struct mxf_ipc_view *v, int fd)
{
	uint64_t code = 0;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	if (mxf_ipc_u64(v, F_CODE, 0, &code) < 0 || code != 250 || fd < 0 || !mxf_qid_valid(qid)) {
		if (fd >= 0)
			close(fd);
		job_fail(j, "router refused to open a file");
		return;
	}
	snprintf(j->new_qid, sizeof(j->new_qid), "%s", qid);
	int r = write_all(fd, j->dsn, j->dsn_len);
	close(fd);
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(r < 0 ? MXF_MSG_ABORT : MXF_MSG_COMMIT);
	if (!m)
		mxf_fatal("out of memory");
	if (r < 0) {
		mxf_ipc_put_str(m, F_QID, j->new_qid);
		mxf_routerlink_send(link_, m, -1);
		mxf_ipc_msg_free(m);
		job_fail(j, strerror(-r));
		return;
	}
	j->req = next_req++;
	j->state = JOB_COMMITTING;
	/* The bounce goes out with the null sender (RFC 5321 4.5.5), so it can
	 * never cause another bounce. */
	if (mxf_ipc_put_u64(m, F_REQ, j->req) < 0 || mxf_ipc_put_str(m, F_QID, j->new_qid) < 0 ||
	    mxf_ipc_put_str(m, F_SENDER, "") < 0 || mxf_ipc_put_str(m, F_RCPT, j->sender) < 0 ||
	    mxf_ipc_put_u64(m, F_SIZE, j->dsn_len) < 0 ||
	    mxf_ipc_put_str(m, F_CLIENT_IP, "127.0.0.1") < 0 ||
	    mxf_ipc_put_str(m, F_CLIENT_NAME, "localhost") < 0 ||
	    mxf_ipc_put_str(m, F_HELO, mxf_config_str(cfg, "main", "hostname")) < 0 ||
	    mxf_ipc_put_str(m, F_PROTO, "local") < 0)
		mxf_fatal("out of memory");
	if (mxf_routerlink_send(link_, m, -1) < 0) {
		mxf_ipc_msg_free(m);
		job_fail(j, "router link down");
		return;
	}
	mxf_ipc_msg_free(m);
}

static void on_commit_reply(struct job *j, const struct mxf_ipc_view *v)
{
	uint64_t code = 0;
	if (mxf_ipc_u64(v, F_CODE, 0, &code) < 0 || code != 250) {
		const char *t = mxf_ipc_str(v, F_TEXT, 0);
		job_fail(j, t ? t : "commit refused");
		return;
	}
	char s[600];
	mxf_info("%s: sender %s notification: %s, to=<%s>", j->qid,
		 j->delay ? "delay" : j->relayed ? "success" : "non-delivery", j->new_qid,
		 mxf_log_escape(s, sizeof(s), j->sender, strlen(j->sender)));
	send_done(j->bounce_req, j->qid, 250, j->new_qid);
	job_unlink(j);
	job_free(j);
}

/* Up to max bytes from the start of fd; *whole: all of it fitted. */
static char *read_upto(int fd, size_t max, size_t *len, bool *whole)
{
	char *buf = malloc(max + 1);
	size_t n = 0;
	if (!buf)
		return NULL;
	while (n < max + 1) {
		ssize_t r = pread(fd, buf + n, max + 1 - n, (off_t)n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	*whole = n <= max;
	*len = n > max ? max : n;
	return buf;
}

static void on_bounce(const struct mxf_ipc_view *v, int fd)
{
	uint64_t breq;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	const char *sender = mxf_ipc_str(v, F_SENDER, 0);
	size_t n = mxf_ipc_count(v, F_RCPT);

	/* The router is trusted but checked: a malformed request is a bug. */
	if (mxf_ipc_u64(v, F_REQ, 0, &breq) < 0 || !mxf_qid_valid(qid) || !sender || !sender[0] ||
	    n == 0 || mxf_ipc_count(v, F_CODE) != n || mxf_ipc_count(v, F_ESC) != n ||
	    mxf_ipc_count(v, F_TEXT) != n || fd < 0)
		mxf_fatal("malformed BOUNCE request from router");

	struct mxf_dsn_rcpt *rc = calloc(n, sizeof(*rc));
	char (*diag)[1100] = calloc(n, sizeof(*diag));
	struct job *j = calloc(1, sizeof(*j));
	if (!rc || !diag || !j)
		mxf_fatal("out of memory");
	for (size_t i = 0; i < n; i++) {
		uint64_t code = 0;
		mxf_ipc_u64(v, F_CODE, i, &code);
		rc[i].rcpt = mxf_ipc_str(v, F_RCPT, i);
		rc[i].status = mxf_ipc_str(v, F_ESC, i);
		rc[i].remote_mta = mxf_ipc_count(v, F_RELAY) == n ? mxf_ipc_str(v, F_RELAY, i) : NULL;
		snprintf(diag[i], sizeof(diag[i]), "%03u %s %s", (unsigned)code,
			 rc[i].status ? rc[i].status : "", mxf_ipc_str(v, F_TEXT, i));
		rc[i].diagnostic = diag[i];
		if (!rc[i].rcpt || !rc[i].status)
			mxf_fatal("malformed BOUNCE request from router");
		if (rc[i].remote_mta && strcmp(rc[i].remote_mta, "none") == 0)
			rc[i].remote_mta = NULL;
	}
	const char *ret = mxf_ipc_str(v, F_RET, 0);
	const char *proto = mxf_ipc_str(v, F_PROTO, 0);
	bool want_full = ret && strcmp(ret, "FULL") == 0;
	size_t clen = 0, hlen = 0;
	bool whole = false;
	char *headers = read_upto(fd, want_full ? MAX_RETURNED : MAX_HEADERS, &clen, &whole);
	close(fd);
	if (headers)
		hlen = mxf_dsn_header_len(headers, clen, clen);
	const char *action = mxf_ipc_str(v, F_ACTION, 0);
	j->delay = action && strcmp(action, "delayed") == 0;
	j->relayed = action && strcmp(action, "relayed") == 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t t = 0;
		rc[i].action = j->delay ? "delayed" : j->relayed ? "relayed" : NULL;
		const char *oc = mxf_ipc_count(v, F_ORCPT) == n ? mxf_ipc_str(v, F_ORCPT, i) : NULL;
		rc[i].orig_rcpt = oc && *oc ? oc : NULL;
		if (mxf_ipc_count(v, F_LAST_ATTEMPT) == n && mxf_ipc_u64(v, F_LAST_ATTEMPT, i, &t) == 0)
			rc[i].last_attempt = (time_t)t;
	}
	struct mxf_dsn d = {
		.reporting_mta = mxf_config_str(cfg, "main", "hostname"),
		.qid = qid,
		.sender = sender,
		.arrival = (time_t)(mxf_qid_time_ms(qid) / 1000),
		.now = time(NULL),
		.rcpt = rc,
		.nrcpt = n,
		.headers = headers ? headers : "",
		.headers_len = headers ? hlen : 0,
		.envid = mxf_ipc_str(v, F_ENVID, 0),
		.full = want_full && headers ? headers : NULL,
		.full_len = clen,
		.full_too_big = !whole,
		.full_cap = MAX_RETURNED,
		/* RFC 6533: SMTPUTF8 mail arrived with UTF8SMTP(S)(A). */
		.utf8 = proto && strstr(proto, "UTF8") != NULL,
	};
	snprintf(j->qid, sizeof(j->qid), "%s", qid);
	j->bounce_req = breq;
	j->sender = strdup(sender);
	int r = j->sender ? mxf_dsn_build(&d, &j->dsn, &j->dsn_len) : -ENOMEM;
	free(headers);
	free(rc);
	free(diag);
	if (r < 0) {
		j->next = jobs;
		jobs = j;
		job_fail(j, strerror(-r));
		return;
	}
	j->req = next_req++;
	j->state = JOB_OPENING;
	j->next = jobs;
	jobs = j;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_OPEN);
	if (!m || mxf_ipc_put_u64(m, F_REQ, j->req) < 0)
		mxf_fatal("out of memory");
	if (mxf_routerlink_send(link_, m, -1) < 0)
		job_fail(j, "router link down");
	mxf_ipc_msg_free(m);
}

/* Mail that came to one of our SRS addresses: what does it report on? The
 * router must not parse it (DESIGN.md: hostile input is parsed in the
 * unprivileged daemons), so it asks here and writes the activity row. */
static void on_dsn_parse(const struct mxf_ipc_view *v, int fd)
{
	uint64_t req;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || !mxf_qid_valid(qid) || fd < 0)
		mxf_fatal("malformed DSN_PARSE request from router");
	size_t len = 0;
	bool whole;
	char *buf = read_upto(fd, MAX_PARSE, &len, &whole);
	close(fd);
	struct mxf_dsn_info in;
	int r = buf ? mxf_dsn_parse(buf, len, mxf_config_str(cfg, "main", "hostname"), &in) : -ENOMEM;
	free(buf);
	if (r < 0)
		memset(&in, 0, sizeof(in));
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_DSN_PARSE_REPLY);
	if (!m || mxf_ipc_put_u64(m, F_REQ, req) < 0 || mxf_ipc_put_str(m, F_QID, qid) < 0 ||
	    mxf_ipc_put_u64(m, F_CODE, r == 0 ? 250 : 550) < 0 ||
	    mxf_ipc_put_str(m, F_BOUNCE_QID, in.qid) < 0 ||
	    mxf_ipc_put_str(m, F_MSGID, in.message_id) < 0 || mxf_ipc_put_str(m, F_RCPT, in.rcpt) < 0 ||
	    mxf_ipc_put_str(m, F_ACTION, in.action) < 0 ||
	    mxf_ipc_put_str(m, F_ESC, in.status) < 0 || mxf_ipc_put_str(m, F_TEXT, in.diagnostic) < 0 ||
	    mxf_ipc_put_str(m, F_RELAY, in.remote_mta) < 0)
		mxf_fatal("out of memory");
	if (mxf_routerlink_send(link_, m, -1) < 0)
		mxf_warn("%s: cannot report on the returned mail: router link down", qid);
	mxf_ipc_msg_free(m);
}

static struct job *find_job(uint64_t req, enum job_state st)
{
	for (struct job *j = jobs; j; j = j->next)
		if (j->req == req && j->state == st)
			return j;
	return NULL;
}

static void on_msg(const struct mxf_ipc_view *v, int fd, void *arg)
{
	uint64_t req = 0;
	struct job *j;
	(void)arg;
	switch (mxf_ipc_type(v)) {
	case MXF_MSG_BOUNCE:
		on_bounce(v, fd);
		return;
	case MXF_MSG_DSN_PARSE:
		on_dsn_parse(v, fd);
		return;
	case MXF_MSG_OPEN_REPLY:
		mxf_ipc_u64(v, F_REQ, 0, &req);
		if ((j = find_job(req, JOB_OPENING)))
			on_open_reply(j, v, fd);
		else if (fd >= 0)
			close(fd);
		return;
	case MXF_MSG_COMMIT_REPLY:
		mxf_ipc_u64(v, F_REQ, 0, &req);
		if ((j = find_job(req, JOB_COMMITTING)))
			on_commit_reply(j, v);
		break;
	default:
		mxf_fatal("unexpected message type %u from router", mxf_ipc_type(v));
	}
	if (fd >= 0)
		close(fd);
}

static void on_state(bool up, void *arg)
{
	(void)arg;
	if (up)
		return;
	/* The router asks again for every bounce it has no BOUNCE_DONE for, so
	 * unfinished jobs can go. A DSN committed just before the link dropped
	 * is then sent twice: at least once, never lost. */
	while (jobs) {
		struct job *j = jobs;
		jobs = j->next;
		job_free(j);
	}
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)signum;
	mxf_info("stopping");
	mxf_routerlink_stop(link_);
	uv_close((uv_handle_t *)&sigterm, NULL);
	uv_close((uv_handle_t *)&sigint, NULL);
	(void)h;
}

int main(int argc, char **argv)
{
	char sock[256];
	uv_loop_t *loop = uv_default_loop();

	cfg = mxf_daemon_init(argc, argv, "bouncer");
	signal(SIGPIPE, SIG_IGN);
	/* The master reloads by replacing smtpd and HUPping the router only; a
	 * stray SIGHUP must not kill a daemon mid-work. */
	signal(SIGHUP, SIG_IGN);
	mxf_daemon_drop(cfg, "bouncer", true, sock, sizeof(sock));
	if (mxf_routerlink_start(loop, sock, "bouncer", on_msg, on_state, NULL, &link_) < 0)
		mxf_fatal("cannot start router link");
	uv_signal_init(loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_init(loop, &sigint);
	uv_signal_start(&sigint, on_signal, SIGINT);
	mxf_info("started");
	uv_run(loop, UV_RUN_DEFAULT);
	on_state(false, NULL);
	uv_loop_close(loop);
	mxf_config_free(cfg);
	return 0;
}
