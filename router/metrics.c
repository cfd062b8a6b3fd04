/* metrics: the Prometheus text endpoint ([main] metrics_listen, issue 8).
 *
 * The router serves it because it sees every message, recipient and delivery
 * result and owns the queue. The master binds the socket (so the port
 * survives a router restart and may be privileged) and passes it at fd 3
 * with MXF_LISTEN_FDS=1. Counters live in memory and start from zero when the
 * router starts (Prometheus handles counter resets); smtpd reports its
 * sessions with SMTPD_STATS; restarts come from the master's status file.
 *
 * The endpoint is on the spool owner's event loop, so a client must not be
 * able to hold it: one request per connection, a deadline per connection,
 * and at most MAX_CONNS at once — a new connection over the cap closes the
 * oldest, so idle or hostile clients cannot lock a scraper out. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "router.h"
#include "spool.h"
#include "strbuf.h"

#ifndef MXF_VERSION
#define MXF_VERSION "unknown"
#endif

#define MAX_CONNS 16
#define MAX_REASONS 32
#define DEADLINE_MS 5000 /* from accept to the whole request */
#define LINGER_MS 1000   /* after the answer: reading what is left, until EOF */
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static const char *const rcpt_status[] = {"forwarded", "dropped",  "rejected", "deferred",
					  "delivery_failed", "bounced", "error"};
#define NSTATUS (sizeof(rcpt_status) / sizeof(rcpt_status[0]))
static const char *const dresult[] = {"sent", "deferred", "failed"};
/* Arrival to 2xx at the destination: from a fast local hop to a day of retries. */
static const double buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

static struct {
	uint64_t received[2][2]; /* [origin smtpd, bouncer][tls no, yes] */
	uint64_t rcpt[NSTATUS];
	uint64_t deliveries[3];
	uint64_t lat_bucket[NBUCKETS], lat_count;
	double lat_sum;
	uint64_t dns_errors;
	uint64_t access_checks[2]; /* [connect, mail] */
	uint64_t smtp_sessions, smtp_tls;
	uint64_t http_requests, http_refused;
	/* Refusals by reason keyword (its part before ':', so "dnsbl:ZONE" is
	 * "dnsbl"): a bounded label set; past MAX_REASONS, "other". */
	char reason[MAX_REASONS][24];
	uint64_t refusals[MAX_REASONS + 1];
	size_t nreasons;
} M;

struct mconn {
	struct mconn *next, *prev;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wr;
	uv_shutdown_t sd;
	struct mxf_http_req *req;
	struct mxf_strbuf out;
	int handles; /* open libuv handles; freed at 0 */
	bool answered, closing;
};

static bool on;
static uv_tcp_t listener;
static struct mconn *head, *tail; /* oldest first */
static unsigned nconns;
static char status_path[4096];
static time_t started;

/* ---- counting ---- */
void metrics_received(const struct mxf_env *e)
{
	size_t o = strcmp(e->origin, "bouncer") == 0;
	/* RFC 3848: ESMTPS, ESMTPSA, UTF8SMTPS... name a TLS session. */
	size_t n = strlen(e->proto);
	size_t tls = (n >= 1 && e->proto[n - 1] == 'S') ||
		     (n >= 2 && e->proto[n - 2] == 'S' && e->proto[n - 1] == 'A');
	M.received[o][tls]++;
}

void metrics_recipient(const char *status)
{
	for (size_t i = 0; i < NSTATUS; i++)
		if (strcmp(status, rcpt_status[i]) == 0) {
			M.rcpt[i]++;
			return;
		}
}

void metrics_refusal(const char *reason, bool rcpt)
{
	size_t l = strcspn(reason, ":"), i;
	if (rcpt)
		metrics_recipient("rejected");
	for (i = 0; i < M.nreasons; i++)
		if (strlen(M.reason[i]) == l && strncmp(M.reason[i], reason, l) == 0)
			break;
	if (i == M.nreasons) {
		if (M.nreasons == MAX_REASONS || l == 0 || l >= sizeof(M.reason[0])) {
			M.refusals[MAX_REASONS]++;
			return;
		}
		snprintf(M.reason[i], sizeof(M.reason[i]), "%.*s", (int)l, reason);
		M.nreasons++;
	}
	M.refusals[i]++;
}

void metrics_delivery(unsigned code, bool final, double latency)
{
	if (code / 100 == 2) {
		M.deliveries[0]++;
		if (latency < 0)
			latency = 0;
		M.lat_count++;
		M.lat_sum += latency;
		for (size_t i = 0; i < NBUCKETS; i++)
			if (latency <= buckets[i])
				M.lat_bucket[i]++;
	} else {
		M.deliveries[final ? 2 : 1]++;
	}
}

void metrics_access_check(bool at_mail)
{
	M.access_checks[at_mail]++;
}

void metrics_dns_error(void)
{
	M.dns_errors++;
}

int metrics_smtpd_stats(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t s, t, a;
	if (mxf_ipc_u64(v, F_SESSIONS, 0, &s) < 0 || mxf_ipc_u64(v, F_TLS_SESSIONS, 0, &t) < 0 ||
	    mxf_ipc_u64(v, F_ACTIVE, 0, &a) < 0 || t > s || a > 1000000)
		return -1;
	M.smtp_sessions += s;
	M.smtp_tls += t;
	p->smtp_active = a;
	return 0;
}

/* ---- rendering ---- */
static void family(struct mxf_strbuf *b, const char *name, const char *type, const char *help)
{
	mxf_sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The master's status file: "NAME PID START RESTARTS" per line. */
static void restarts(struct mxf_strbuf *b)
{
	family(b, "mxferry_daemon_restarts_total", "counter",
	       "Times the master restarted each daemon since it started.");
	FILE *f = fopen(status_path, "re");
	if (!f)
		return;
	char line[256], name[32];
	long pid, start;
	unsigned long n;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%31s %ld %ld %lu", name, &pid, &start, &n) != 4 ||
		    strcmp(name, "mxferryd") == 0 || strspn(name, "abcdefghijklmnopqrstuvwxyz") !=
							   strlen(name))
			continue;
		mxf_sb_printf(b, "mxferry_daemon_restarts_total{daemon=\"%s\"} %lu\n", name, n);
	}
	fclose(f);
}

static void render(struct mxf_strbuf *b)
{
	family(b, "mxferry_up", "gauge", "1: the router answers.");
	mxf_sb_str(b, "mxferry_up 1\n");
	family(b, "mxferry_build_info", "gauge", "The running version.");
	mxf_sb_printf(b, "mxferry_build_info{version=\"%s\"} 1\n", MXF_VERSION);
	family(b, "mxferry_router_start_time_seconds", "gauge",
	       "When the router started (counters start from zero then).");
	mxf_sb_printf(b, "mxferry_router_start_time_seconds %lld\n", (long long)started);

	family(b, "mxferry_messages_received_total", "counter",
	       "Messages queued, by origin and whether the SMTP session used TLS.");
	static const char *const origin[] = {"smtpd", "bouncer"};
	for (size_t o = 0; o < 2; o++)
		for (size_t t = 0; t < 2; t++)
			mxf_sb_printf(b,
				      "mxferry_messages_received_total{origin=\"%s\",tls=\"%s\"} "
				      "%llu\n",
				      origin[o], t ? "yes" : "no",
				      (unsigned long long)M.received[o][t]);

	family(b, "mxferry_recipients_total", "counter",
	       "Recipient outcomes, as written to the activity log.");
	for (size_t i = 0; i < NSTATUS; i++)
		mxf_sb_printf(b, "mxferry_recipients_total{status=\"%s\"} %llu\n", rcpt_status[i],
			      (unsigned long long)M.rcpt[i]);

	family(b, "mxferry_refusals_total", "counter",
	       "SMTP refusals (connection, sender or recipient), by reason keyword.");
	for (size_t i = 0; i < M.nreasons; i++)
		mxf_sb_printf(b, "mxferry_refusals_total{reason=\"%s\"} %llu\n", M.reason[i],
			      (unsigned long long)M.refusals[i]);
	if (M.refusals[MAX_REASONS])
		mxf_sb_printf(b, "mxferry_refusals_total{reason=\"other\"} %llu\n",
			      (unsigned long long)M.refusals[MAX_REASONS]);

	family(b, "mxferry_activity_rows_dropped_total", "counter",
	       "Activity log rows not written: its writer's queue was full, or the write failed.");
	mxf_sb_printf(b, "mxferry_activity_rows_dropped_total{reason=\"queue_full\"} %llu\n",
		      (unsigned long long)activity_dropped(false));
	mxf_sb_printf(b, "mxferry_activity_rows_dropped_total{reason=\"write_failed\"} %llu\n",
		      (unsigned long long)activity_dropped(true));

	size_t q[MXF_SD_COUNT] = {0};
	queue_count(q);
	family(b, "mxferry_queue_messages", "gauge", "Messages in the queue, by state.");
	static const struct {
		const char *name;
		enum mxf_spool_dir d;
	} states[] = {{"incoming", MXF_SD_INCOMING},
		      {"active", MXF_SD_ACTIVE},
		      {"deferred", MXF_SD_DEFERRED},
		      {"hold", MXF_SD_HOLD}};
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		mxf_sb_printf(b, "mxferry_queue_messages{state=\"%s\"} %zu\n", states[i].name,
			      q[states[i].d]);

	family(b, "mxferry_deliveries_total", "counter",
	       "Delivery results per recipient (failed: 5xx or expired).");
	for (size_t i = 0; i < 3; i++)
		mxf_sb_printf(b, "mxferry_deliveries_total{result=\"%s\"} %llu\n", dresult[i],
			      (unsigned long long)M.deliveries[i]);

	family(b, "mxferry_delivery_latency_seconds", "histogram",
	       "From acceptance to a 2xx at the destination, per recipient.");
	for (size_t i = 0; i < NBUCKETS; i++)
		mxf_sb_printf(b, "mxferry_delivery_latency_seconds_bucket{le=\"%g\"} %llu\n",
			      buckets[i], (unsigned long long)M.lat_bucket[i]);
	mxf_sb_printf(b, "mxferry_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
		      (unsigned long long)M.lat_count);
	mxf_sb_printf(b, "mxferry_delivery_latency_seconds_sum %.3f\n", M.lat_sum);
	mxf_sb_printf(b, "mxferry_delivery_latency_seconds_count %llu\n",
		      (unsigned long long)M.lat_count);

	family(b, "mxferry_dns_errors_total", "counter",
	       "Delivery attempts that failed on DNS (4.4.3: lookup failure or timeout).");
	mxf_sb_printf(b, "mxferry_dns_errors_total %llu\n", (unsigned long long)M.dns_errors);
	family(b, "mxferry_access_checks_total", "counter",
	       "smtpd's questions to the allow/block lists, by SMTP stage.");
	mxf_sb_printf(b, "mxferry_access_checks_total{stage=\"connect\"} %llu\n",
		      (unsigned long long)M.access_checks[0]);
	mxf_sb_printf(b, "mxferry_access_checks_total{stage=\"mail\"} %llu\n",
		      (unsigned long long)M.access_checks[1]);

	uint64_t active = 0;
	for (struct peer *p = R.peers; p; p = p->next)
		if (p->role == ROLE_SMTPD && !p->closing)
			active += p->smtp_active;
	family(b, "mxferry_smtp_sessions_total", "counter",
	       "SMTP sessions accepted (reported by smtpd about once a second).");
	mxf_sb_printf(b, "mxferry_smtp_sessions_total %llu\n",
		      (unsigned long long)M.smtp_sessions);
	family(b, "mxferry_smtp_tls_sessions_total", "counter",
	       "SMTP sessions that completed a STARTTLS handshake.");
	mxf_sb_printf(b, "mxferry_smtp_tls_sessions_total %llu\n", (unsigned long long)M.smtp_tls);
	family(b, "mxferry_smtp_sessions_active", "gauge", "SMTP sessions open now.");
	mxf_sb_printf(b, "mxferry_smtp_sessions_active %llu\n", (unsigned long long)active);

	restarts(b);

	family(b, "mxferry_metrics_requests_total", "counter",
	       "Requests to this endpoint, by whether they were refused (4xx/5xx).");
	mxf_sb_printf(b, "mxferry_metrics_requests_total{refused=\"no\"} %llu\n",
		      (unsigned long long)M.http_requests);
	mxf_sb_printf(b, "mxferry_metrics_requests_total{refused=\"yes\"} %llu\n",
		      (unsigned long long)M.http_refused);
}

/* ---- connections ---- */
static void conn_handle_closed(uv_handle_t *h)
{
	struct mconn *c = h->data;
	if (--c->handles > 0)
		return;
	mxf_http_req_free(c->req);
	mxf_sb_free(&c->out);
	free(c);
}

static void conn_close(struct mconn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		tail = c->prev;
	nconns--;
	uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
	uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_timer(uv_timer_t *t)
{
	struct mconn *c = t->data;
	conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct mconn *c = req->data;
	if (status < 0)
		conn_close(c);
}

static void on_written(uv_write_t *req, int status)
{
	struct mconn *c = req->data;
	if (status < 0 || c->closing) {
		conn_close(c);
		return;
	}
	/* Half-close and read to EOF: closing with unread input would send a
	 * RST that can destroy the answer before the client reads it. */
	c->sd.data = c;
	if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

static void answer(struct mconn *c, unsigned status)
{
	struct mxf_strbuf body = {0};
	const char *extra = NULL;
	c->answered = true;
	if (status == 200) {
		M.http_requests++;
		render(&body);
	} else {
		M.http_refused++;
		mxf_sb_printf(&body, "%s\n", mxf_http_reason(status));
		if (status == 405)
			extra = "Allow: GET\r\n";
	}
	mxf_http_response_head(&c->out, status, status == 200 ? CONTENT_TYPE : "text/plain",
			       body.len, extra);
	mxf_sb_add(&c->out, body.p ? body.p : "", body.len);
	mxf_sb_free(&body);
	if (c->out.err) {
		mxf_err("metrics: out of memory");
		conn_close(c);
		return;
	}
	uv_buf_t buf = uv_buf_init(c->out.p, (unsigned)c->out.len);
	c->wr.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, on_written) < 0)
		conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	/* One loop thread: the bytes are parsed before the next read. */
	static char rbuf[4096];
	(void)h;
	(void)hint;
	*buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct mconn *c = st->data;
	if (c->closing)
		return;
	if (nread < 0) {
		conn_close(c);
		return;
	}
	if (nread == 0 || c->answered)
		return; /* after the answer: drained until EOF */
	int k = mxf_http_feed(c->req, buf->base, (size_t)nread, NULL);
	if (k == 0)
		return;
	if (k < 0) {
		answer(c, mxf_http_error_status(c->req));
		return;
	}
	if (strcmp(mxf_http_path(c->req), "/metrics") != 0)
		answer(c, 404);
	else if (strcmp(mxf_http_method(c->req), "GET") != 0)
		answer(c, 405);
	else
		answer(c, 200);
}

static void on_connection(uv_stream_t *server, int status)
{
	if (status < 0) {
		mxf_warn("metrics: accept: %s", uv_strerror(status));
		return;
	}
	struct mconn *c = calloc(1, sizeof(*c));
	if (!c || mxf_http_req_new(0, &c->req) < 0) {
		free(c);
		mxf_err("metrics: out of memory");
		return;
	}
	uv_tcp_init(R.loop, &c->tcp);
	uv_timer_init(R.loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	c->prev = tail;
	if (tail)
		tail->next = c;
	else
		head = c;
	tail = c;
	nconns++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
		conn_close(c);
		return;
	}
	if (nconns > MAX_CONNS) {
		mxf_debug("metrics: more than %d connections; closing the oldest", MAX_CONNS);
		conn_close(head);
	}
	uv_timer_start(&c->timer, on_timer, DEADLINE_MS, 0);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
		conn_close(c);
}

int metrics_start(void)
{
	const char *spec = mxf_config_str(R.cfg, "main", "metrics_listen");
	const char *e = getenv("MXF_LISTEN_FDS");
	started = time(NULL);
	snprintf(status_path, sizeof(status_path), "%s/pid/status",
		 mxf_config_str(R.cfg, "main", "spool_dir"));
	if (!e || strcmp(e, "1") != 0) {
		if (spec[0])
			mxf_warn("[main] metrics_listen is set but no listener was passed "
				 "(MXF_LISTEN_FDS): the router was not started by mxferryd; "
				 "metrics are off");
		return 0;
	}
	unsetenv("MXF_LISTEN_FDS");
	int fd = 3, type = 0, acc = 0;
	socklen_t tl = sizeof(type), al = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0 || !acc)
		mxf_fatal("metrics: fd 3 is not a listening stream socket");
	int r = uv_tcp_init(R.loop, &listener);
	if (r == 0)
		r = uv_tcp_open(&listener, fd);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&listener, 64, on_connection);
	if (r < 0)
		mxf_fatal("metrics: cannot listen on fd 3: %s", uv_strerror(r));
	on = true;
	mxf_info("metrics on http://%s/metrics", spec);
	return 0;
}

static void on_closed_noop(uv_handle_t *h)
{
	(void)h;
}

void metrics_stop(void)
{
	if (!on)
		return;
	on = false;
	uv_close((uv_handle_t *)&listener, on_closed_noop);
	while (head)
		conn_close(head);
}
