/* smtpd: the ESMTP server. It gets its listening sockets from the master
 * (fds 3.., MXF_LISTEN_FDS of them), drops privileges into the spool's
 * private/ directory, where the only thing it can reach is the router socket,
 * and talks SMTP on libuv. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "abuse.h"
#include "auth.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "queueid.h"
#include "smtpd.h"
#include "tls.h"

#define MAX_LISTEN 64

struct smtpd smtpd;

static uv_tcp_t listeners[MAX_LISTEN];
static int nlisten;
static uv_signal_t sigterm, sigint;
static uv_timer_t stop_timer;
static bool stop_timer_on, done;
static uint64_t shutdown_ms;
static uv_timer_t stats_timer;
static uint64_t stats_sent_active = UINT64_MAX; /* forces a first report */

/* Session counts for the router's metrics, at most once a second and only
 * when something changed: deltas, so an old and a new smtpd after a reload
 * add up, and nothing is lost while the router is away (kept until sent). */
static void on_stats_timer(uv_timer_t *t)
{
	(void)t;
	if (!smtpd.link || !mxf_routerlink_up(smtpd.link) ||
	    (smtpd.stat_sessions == 0 && smtpd.stat_tls == 0 && stats_sent_active == smtpd.nsessions))
		return;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_SMTPD_STATS);
	if (m && mxf_ipc_put_u64(m, F_SESSIONS, smtpd.stat_sessions) == 0 &&
	    mxf_ipc_put_u64(m, F_TLS_SESSIONS, smtpd.stat_tls) == 0 &&
	    mxf_ipc_put_u64(m, F_ACTIVE, smtpd.nsessions) == 0 &&
	    mxf_routerlink_send(smtpd.link, m, -1) == 0) {
		smtpd.stat_sessions = smtpd.stat_tls = 0;
		stats_sent_active = smtpd.nsessions;
	}
	mxf_ipc_msg_free(m);
}

static void on_connection(uv_stream_t *server, int status)
{
	if (status < 0) {
		mxf_warn("accept: %s", uv_strerror(status));
		return;
	}
	if (smtpd.stopping)
		return;
	session_accept(server);
}

static void on_router_msg(const struct mxf_ipc_view *v, int fd, void *arg)
{
	(void)arg;
	uint16_t type = mxf_ipc_type(v);
	if (type != MXF_MSG_RCPT_REPLY && type != MXF_MSG_OPEN_REPLY &&
	    type != MXF_MSG_COMMIT_REPLY && type != MXF_MSG_ACCESS_REPLY) {
		mxf_warn("unexpected message type %u from router; ignored", type);
		if (fd >= 0)
			close(fd);
		return;
	}
	uint64_t req;
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0)
		mxf_fatal("malformed reply from router: no request id");
	uint64_t code = 0;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	mxf_ipc_u64(v, F_CODE, 0, &code);
	if (session_router_reply(v, req, fd))
		return;
	/* Nobody waits for it (the client left, or the reply is stale). A file
	 * the router opened for us must not linger: abort it. */
	if (type == MXF_MSG_OPEN_REPLY && code == 250 && qid && mxf_qid_valid(qid))
		smtpd_abort_qid(qid);
	mxf_debug("stale router reply (request %llu) ignored", (unsigned long long)req);
}

static void on_router_state(bool up, void *arg)
{
	(void)arg;
	if (up) {
		smtpd.link_gen++;
		stats_sent_active = UINT64_MAX; /* a new router knows nothing yet */
		return;
	}
	session_link_down();
}

static void on_closed_noop(uv_handle_t *h)
{
	(void)h;
}

/* The last session is gone (or the deadline passed): release what keeps
 * the loop running. The router link stays up until then, so messages
 * already in DATA can still be committed. */
void smtpd_check_done(void)
{
	if (!smtpd.stopping || smtpd.nsessions > 0 || done)
		return;
	done = true;
	if (stop_timer_on)
		uv_close((uv_handle_t *)&stop_timer, on_closed_noop);
	uv_close((uv_handle_t *)&sigterm, on_closed_noop);
	uv_close((uv_handle_t *)&sigint, on_closed_noop);
	on_stats_timer(&stats_timer); /* the last counts, while the link is up */
	uv_close((uv_handle_t *)&stats_timer, on_closed_noop);
	mxf_routerlink_stop(smtpd.link);
	smtpd.link = NULL;
}

static void on_stop_deadline(uv_timer_t *t)
{
	(void)t;
	mxf_warn("shutdown: %zu session%s still busy after %llu ms; closing them", smtpd.nsessions,
		 smtpd.nsessions == 1 ? "" : "s", (unsigned long long)shutdown_ms);
	session_kill_all();
	smtpd_check_done();
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)h;
	if (smtpd.stopping)
		return;
	mxf_info("%s received; stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	smtpd.stopping = true;
	for (int i = 0; i < nlisten; i++)
		uv_close((uv_handle_t *)&listeners[i], on_closed_noop);
	session_close_all();
	if (smtpd.nsessions > 0) {
		mxf_info("shutdown: waiting up to %llu ms for %zu message%s in progress",
			 (unsigned long long)shutdown_ms, smtpd.nsessions,
			 smtpd.nsessions == 1 ? "" : "s");
		uv_timer_init(smtpd.loop, &stop_timer);
		stop_timer_on = true;
		uv_timer_start(&stop_timer, on_stop_deadline, shutdown_ms, 0);
	}
	smtpd_check_done();
}

/* Every session is a descriptor: take the hard limit (raised first while
 * still root), so 10,000 sessions fit. */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (geteuid() == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 65536) {
		struct rlimit want = {65536, 65536};
		if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
			rl = want;
		}
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			mxf_warn("cannot raise the descriptor limit: %s", strerror(errno));
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	mxf_info("descriptor limit %llu", (unsigned long long)rl.rlim_cur);
}

static int listen_fds(void)
{
	const char *e = getenv("MXF_LISTEN_FDS");
	char *end;
	if (!e || !*e)
		mxf_fatal("MXF_LISTEN_FDS is not set: smtpd must be started by mxferryd");
	errno = 0;
	long n = strtol(e, &end, 10);
	if (errno || *end || n < 1 || n > MAX_LISTEN)
		mxf_fatal("MXF_LISTEN_FDS: invalid value '%s'", e);
	unsetenv("MXF_LISTEN_FDS");
	return (int)n;
}

int main(int argc, char **argv)
{
	struct mxf_config *cfg = mxf_daemon_init(argc, argv, "smtpd");
	char sock[4096];

	signal(SIGPIPE, SIG_IGN);
	/* The master reloads by replacing smtpd and HUPping the router only; a
	 * stray SIGHUP must not kill a daemon mid-work. */
	signal(SIGHUP, SIG_IGN);
	smtpd.loop = uv_default_loop();
	smtpd.hostname = mxf_config_str(cfg, "main", "hostname");
	smtpd.max_size = (uint64_t)mxf_config_int(cfg, "smtpd", "max_message_size");
	smtpd.max_rcpt = (size_t)mxf_config_int(cfg, "smtpd", "max_recipients");
	smtpd.timeout_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "command_timeout") * 1000;
	smtpd.data_timeout_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "data_timeout") * 1000;
	smtpd.greet_delay_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "greet_delay");
	smtpd.max_conn_per_ip = (unsigned)mxf_config_int(cfg, "smtpd", "max_conn_per_ip");
	smtpd.max_conn_rate = (unsigned)mxf_config_int(cfg, "smtpd", "max_conn_rate");
	smtpd.max_conn_per_net = (unsigned)mxf_config_int(cfg, "smtpd", "max_conn_per_net");
	smtpd.max_conn_rate_net = (unsigned)mxf_config_int(cfg, "smtpd", "max_conn_rate_net");
	smtpd.max_msg_rate = (unsigned)mxf_config_int(cfg, "smtpd", "max_msg_rate");
	smtpd.max_msg_rate_net = (unsigned)mxf_config_int(cfg, "smtpd", "max_msg_rate_net");
	smtpd.max_rcpt_rate = (unsigned)mxf_config_int(cfg, "smtpd", "max_rcpt_rate");
	smtpd.max_rcpt_rate_net = (unsigned)mxf_config_int(cfg, "smtpd", "max_rcpt_rate_net");
	smtpd.rate_window_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "rate_window") * 1000;
	shutdown_ms = (uint64_t)mxf_config_int(cfg, "smtpd", "shutdown_timeout") * 1000;

	/* The certificate and key are read now: after the drop smtpd is
	 * chrooted where neither exists. */
	const char *cert = mxf_config_str(cfg, "smtpd", "tls_cert");
	const char *key = mxf_config_str(cfg, "smtpd", "tls_key");
	if (cert[0] || key[0]) {
		char err[512];
		if (!cert[0] || !key[0])
			mxf_fatal("[smtpd] tls_cert and tls_key must be set together");
		if (!(smtpd.tls = mxf_tls_server_ctx(cert, key, err, sizeof(err))))
			mxf_fatal("TLS: %s", err);
	}
	raise_nofile();
	/* Before the chroot: the resolver may read /etc/resolv.conf. */
	bl_init(cfg);
	auth_init(cfg);
	/* Block-list lookups block a pool thread each (abuse.c keeps at most
	 * 16 running): the pool must keep threads for queue-file writes.
	 * libuv reads this when the pool first starts. */
	if ((bl_enabled() || auth_enabled()) && !getenv("UV_THREADPOOL_SIZE"))
		setenv("UV_THREADPOOL_SIZE", "24", 1);

	nlisten = listen_fds();
	for (int i = 0; i < nlisten; i++) {
		int fd = 3 + i, type = 0;
		socklen_t tl = sizeof(type);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM)
			mxf_fatal("fd %d is not a listening stream socket", fd);
		int r = uv_tcp_init(smtpd.loop, &listeners[i]);
		if (r == 0)
			r = uv_tcp_open(&listeners[i], fd);
		if (r == 0)
			r = uv_listen((uv_stream_t *)&listeners[i], 4096, on_connection);
		if (r < 0)
			mxf_fatal("cannot listen on fd %d: %s", fd, uv_strerror(r));
	}

	mxf_daemon_drop(cfg, "smtpd", true, sock, sizeof(sock));
	int r = mxf_routerlink_start(smtpd.loop, sock, "smtpd", on_router_msg, on_router_state,
				     NULL, &smtpd.link);
	if (r < 0)
		mxf_fatal("router link: %s", strerror(-r));

	uv_timer_init(smtpd.loop, &stats_timer);
	uv_timer_start(&stats_timer, on_stats_timer, 1000, 1000);
	uv_unref((uv_handle_t *)&stats_timer);

	uv_signal_init(smtpd.loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_init(smtpd.loop, &sigint);
	uv_signal_start(&sigint, on_signal, SIGINT);

	mxf_info("ready: %d listener%s, hostname %s, max size %llu, max recipients %zu, STARTTLS %s",
		 nlisten, nlisten == 1 ? "" : "s", smtpd.hostname,
		 (unsigned long long)smtpd.max_size, smtpd.max_rcpt, smtpd.tls ? "on" : "off");
	uv_run(smtpd.loop, UV_RUN_DEFAULT);
	uv_loop_close(smtpd.loop);
	SSL_CTX_free(smtpd.tls);
	mxf_config_free(cfg);
	mxf_info("stopped");
	return 0;
}
