/* workerd (issue 13): runs the worker a rule names, once per message, and
 * tells the router what it decided. It runs as its own user ([workerd]
 * user), which owns nothing: not the spool (the router's, mode 0700), not
 * the databases. It is not chrooted, since it must exec node and the
 * operator's programs; each run is further confined by workerrun (rlimits,
 * PR_SET_NO_NEW_PRIVS, a seccomp deny list, a process group killed at the
 * deadline). The router gives it everything a run needs in WORK: the
 * worker's definition (js source included) and a read-only descriptor of
 * the message, so it opens no file of ours. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "daemon.h"
#include "ipc.h"
#include "ipcconn.h"
#include "log.h"
#include "queueid.h"
#include "workerproto.h"
#include "workerreply.h"
#include "workerrun.h"

/* Runs at once; more are answered 451 at once (the client retries). */
#define MAX_JOBS 64

struct job {
	struct job *next;
	uint64_t req;
	char qid[MXF_QID_SIZE];
	char worker[72];
	char msgid[MXF_WR_MSGID_MAX + 1]; /* the original's Message-ID, "" if none */
	pid_t pid;
	int out_fd;
	uv_poll_t poll;
	uv_timer_t deadline, reap;
	unsigned timeout;
	struct mxf_wp_parser *parser;
	int perr;
	bool eof, timed_out, output_done;
	int handles; /* open uv handles; freed when 0 */
};

static struct mxf_config *cfg;
static struct mxf_routerlink *link_;
static struct job *jobs;
static unsigned njobs;
static uv_loop_t *loop;
static uv_signal_t sigterm, sigint;
static struct mxf_worker_limits limits;
static char runner[PATH_MAX];

static void job_unlink(struct job *j)
{
	for (struct job **p = &jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			njobs--;
			return;
		}
}

static void handle_closed(uv_handle_t *h)
{
	struct job *j = h->data;
	/* The pipe's descriptor outlives its poll handle: closed earlier, its
	 * number could be reused by the next job's pipe while libuv still
	 * knows this handle. */
	if (h == (uv_handle_t *)&j->poll && j->out_fd >= 0) {
		close(j->out_fd);
		j->out_fd = -1;
	}
	if (--j->handles == 0) {
		mxf_wp_parser_free(j->parser);
		free(j);
	}
}

static void job_close(struct job *j)
{
	job_unlink(j);
	uv_close((uv_handle_t *)&j->poll, handle_closed);
	uv_close((uv_handle_t *)&j->deadline, handle_closed);
	uv_close((uv_handle_t *)&j->reap, handle_closed);
}

/* A reply decision: checked against the original here (the loop guards
 * workerd can judge, workerreply.h). A reply that fails them is relayed
 * without its message and with the reason in F_REASON, so the router logs
 * it; it is not a failure of the worker. */
static int put_reply(struct mxf_ipc_msg *m, const char *qid, const char *worker,
		     const char *msgid, const char *raw)
{
	char why[160] = "", *out = NULL, e1[300];
	int r;
	if (!*msgid)
		snprintf(why, sizeof(why), "the original has no (usable) Message-ID");
	else if ((r = mxf_wr_check(msgid, raw, strlen(raw), &out, why, sizeof(why))) == -ENOMEM)
		snprintf(why, sizeof(why), "out of memory");
	if (*why)
		mxf_info("%s: worker=%s reply not sent: %s", qid,
			 mxf_log_escape(e1, sizeof(e1), worker, strlen(worker)), why);
	if ((r = mxf_ipc_put_str(m, F_RCPT, "")) == 0 &&
	    (r = mxf_ipc_put_str(m, F_REASON, out ? "" : why)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_XHEADERS, "")) == 0 && out)
		r = mxf_ipc_put_str(m, F_REPLY, out);
	free(out);
	return r;
}

static void send_result(uint64_t req, const char *qid, unsigned code, const char *text,
			const struct mxf_wp_parser *p, const char *worker, const char *msgid)
{
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_WORK_RESULT);
	int r = m ? 0 : -ENOMEM;
	if (r == 0 && (r = mxf_ipc_put_u64(m, F_REQ, req)) == 0 &&
	    (r = mxf_ipc_put_str(m, F_QID, qid)) == 0 && (r = mxf_ipc_put_u64(m, F_CODE, code)) == 0)
		r = mxf_ipc_put_str(m, F_TEXT, text);
	for (size_t i = 0; p && r == 0 && i < mxf_wp_count(p); i++) {
		const struct mxf_wp_decision *d = mxf_wp_get(p, i);
		if ((r = mxf_ipc_put_str(m, F_ACTION, mxf_wp_action_name(d->action))) < 0)
			break;
		if (d->action == MXF_WP_REPLY)
			r = put_reply(m, qid, worker, msgid, d->raw);
		else if ((r = mxf_ipc_put_str(m, F_RCPT, d->to)) == 0 &&
			 (r = mxf_ipc_put_str(m, F_REASON, d->reason)) == 0)
			r = mxf_ipc_put_str(m, F_XHEADERS, d->headers);
	}
	if (r == -E2BIG) {
		/* Decisions that do not fit one message: the worker's fault. */
		mxf_ipc_msg_free(m);
		send_result(req, qid, 451, "worker answer too large", NULL, worker, msgid);
		return;
	}
	if (r == 0)
		r = mxf_routerlink_send(link_, m, -1);
	if (r < 0)
		mxf_warn("%s: cannot send the worker's result: %s", qid, strerror(-r));
	mxf_ipc_msg_free(m);
}

/* The worker has exited (not reaped yet): kill what is left of its group,
 * reap it, report. */
static void job_finish(struct job *j)
{
	kill(-j->pid, SIGKILL);
	int ws = 0;
	while (waitpid(j->pid, &ws, 0) < 0 && errno == EINTR)
		;
	char status[256];
	unsigned code = 451;
	if (j->timed_out)
		snprintf(status, sizeof(status), "timeout after %u s", j->timeout);
	else if (j->perr || (j->perr = mxf_wp_finish(j->parser)) < 0)
		snprintf(status, sizeof(status), "bad answer: %s", mxf_wp_error(j->parser));
	else if (WIFSIGNALED(ws))
		snprintf(status, sizeof(status), "killed by signal %d", WTERMSIG(ws));
	else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
		snprintf(status, sizeof(status), "exit status %d", WEXITSTATUS(ws));
	else
		code = 250, snprintf(status, sizeof(status), "ok");
	char e1[300];
	mxf_info("%s: worker=%s status=%s decisions=%zu", j->qid,
		 mxf_log_escape(e1, sizeof(e1), j->worker, strlen(j->worker)), status,
		 code == 250 ? mxf_wp_count(j->parser) : 0);
	send_result(j->req, j->qid, code, status, code == 250 ? j->parser : NULL, j->worker,
		    j->msgid);
	job_close(j);
}

/* Polled after the output ends: the exit without reaping (WNOWAIT keeps
 * the group id ours until job_finish has killed the rest of the group). */
static void on_reap(uv_timer_t *t)
{
	struct job *j = t->data;
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)j->pid, &si, WEXITED | WNOWAIT | WNOHANG) == 0 && si.si_pid == 0)
		return;
	uv_timer_stop(&j->reap);
	uv_timer_stop(&j->deadline);
	job_finish(j);
}

static void output_done(struct job *j)
{
	if (!j->output_done) {
		j->output_done = true;
		uv_poll_stop(&j->poll);
	}
	/* Garbage or too much output: no need to wait for the rest. */
	if (j->perr)
		kill(-j->pid, SIGKILL);
	uv_timer_start(&j->reap, on_reap, 0, 5);
}

static void on_deadline(uv_timer_t *t)
{
	struct job *j = t->data;
	j->timed_out = true;
	kill(-j->pid, SIGKILL);
	if (!j->output_done)
		output_done(j);
}

static void on_output(uv_poll_t *h, int status, int events)
{
	struct job *j = h->data;
	char buf[8192];
	(void)events;
	if (status < 0) {
		output_done(j);
		return;
	}
	for (;;) {
		ssize_t n = read(j->out_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			j->eof = true;
			output_done(j);
			return;
		}
		if ((j->perr = mxf_wp_feed(j->parser, buf, (size_t)n)) < 0) {
			output_done(j);
			return;
		}
	}
}

static void fail_now(uint64_t req, const char *qid, const char *why)
{
	mxf_warn("%s: worker not run: %s", qid, why);
	send_result(req, qid, 451, why, NULL, "", "");
}

/* The original's Message-ID, for a reply's In-Reply-To guard: from the
 * first 64 KiB (a header section beyond that has no Message-ID we use). */
static void original_msgid(int fd, char *out, size_t cap)
{
	enum { HEAD = 65536 };
	char *buf = malloc(HEAD);
	size_t n = 0;
	out[0] = '\0';
	while (buf && n < HEAD) {
		ssize_t k = pread(fd, buf + n, HEAD - n, (off_t)n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	if (buf && mxf_wr_msgid(buf, n, out, cap) < 0)
		out[0] = '\0';
	free(buf);
}

static int on_work(const struct mxf_ipc_view *v, int fd)
{
	uint64_t req, timeout, size, network = 0;
	const char *qid = mxf_ipc_str(v, F_QID, 0), *name = mxf_ipc_str(v, F_WORKER, 0);
	const char *runtime = mxf_ipc_str(v, F_RUNTIME, 0);
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || mxf_ipc_u64(v, F_TIMEOUT, 0, &timeout) < 0 ||
	    mxf_ipc_u64(v, F_SIZE, 0, &size) < 0 || !qid || !mxf_qid_valid(qid) || !name ||
	    !runtime || fd < 0 || timeout == 0 || timeout > 3600 ||
	    (mxf_ipc_count(v, F_NETWORK) && mxf_ipc_u64(v, F_NETWORK, 0, &network) < 0))
		return -1;
	size_t nenv = mxf_ipc_count(v, F_ENV);
	if (nenv > 64)
		return -1;
	const char *env[64];
	for (size_t i = 0; i < nenv; i++)
		if (!(env[i] = mxf_ipc_str(v, F_ENV, i)) || !strchr(env[i], '='))
			return -1;
	struct mxf_worker_def d = {
		.name = name, .runtime = runtime, .path = mxf_ipc_str(v, F_PATH, 0),
		.script = mxf_ipc_str(v, F_SCRIPT, 0), .env = env, .nenv = nenv,
		.timeout = (unsigned)timeout, .network = network == 1};
	if (strcmp(runtime, "js") == 0 ? !d.script : strcmp(runtime, "program") != 0 || !d.path)
		return -1;
	struct mxf_wp_envelope e = {
		.from = mxf_ipc_str(v, F_SENDER, 0), .to = mxf_ipc_str(v, F_ADDR, 0),
		.client_ip = mxf_ipc_str(v, F_CLIENT_IP, 0), .helo = mxf_ipc_str(v, F_HELO, 0),
		.queue_id = qid, .size = size};
	if (!e.from || !e.to)
		return -1;
	if (njobs >= MAX_JOBS) {
		close(fd);
		fail_now(req, qid, "too many workers running");
		return 0;
	}
	struct job *j = calloc(1, sizeof(*j));
	if (!j || !(j->parser = mxf_wp_parser_new())) {
		free(j);
		close(fd);
		fail_now(req, qid, "out of memory");
		return 0;
	}
	original_msgid(fd, j->msgid, sizeof(j->msgid));
	int r = mxf_workerrun_start(&d, &limits, &e, fd, &j->pid, &j->out_fd);
	close(fd);
	if (r < 0) {
		mxf_wp_parser_free(j->parser);
		free(j);
		fail_now(req, qid, strerror(-r));
		return 0;
	}
	j->req = req;
	j->timeout = (unsigned)timeout;
	snprintf(j->qid, sizeof(j->qid), "%s", qid);
	snprintf(j->worker, sizeof(j->worker), "%s", name);
	if (fcntl(j->out_fd, F_SETFL, fcntl(j->out_fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    uv_poll_init(loop, &j->poll, j->out_fd) < 0) {
		/* Cannot watch it: stop the worker at once. */
		kill(-j->pid, SIGKILL);
		while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(j->out_fd);
		mxf_wp_parser_free(j->parser);
		free(j);
		fail_now(req, qid, "cannot watch the worker's output");
		return 0;
	}
	uv_timer_init(loop, &j->deadline);
	uv_timer_init(loop, &j->reap);
	j->poll.data = j->deadline.data = j->reap.data = j;
	j->handles = 3;
	j->next = jobs;
	jobs = j;
	njobs++;
	uv_poll_start(&j->poll, UV_READABLE, on_output);
	uv_timer_start(&j->deadline, on_deadline, timeout * 1000, 0);
	return 0;
}

static void on_msg(const struct mxf_ipc_view *v, int fd, void *arg)
{
	(void)arg;
	if (mxf_ipc_type(v) == MXF_MSG_WORK && on_work(v, fd) == 0)
		return;
	/* The router is trusted: a malformed request is a bug (DESIGN.md §3). */
	mxf_fatal("malformed or unexpected message from router (type %u)", mxf_ipc_type(v));
}

static void kill_all(void)
{
	while (jobs) {
		struct job *j = jobs;
		kill(-j->pid, SIGKILL);
		while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
			;
		job_close(j);
	}
}

static void on_state(bool up, void *arg)
{
	(void)arg;
	/* The router answered 451 for everything in flight when the link
	 * dropped; results nobody waits for are not worth the CPU. */
	if (!up)
		kill_all();
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)signum;
	(void)h;
	mxf_info("stopping");
	kill_all();
	mxf_routerlink_stop(link_);
	uv_close((uv_handle_t *)&sigterm, NULL);
	uv_close((uv_handle_t *)&sigint, NULL);
}

int main(int argc, char **argv)
{
	char sock[PATH_MAX];
	loop = uv_default_loop();
	cfg = mxf_daemon_init(argc, argv, "workerd");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	/* Our runner is installed beside us (daemon_dir); found before the
	 * privilege drop makes /proc/self/exe unreadable. */
	ssize_t n = readlink("/proc/self/exe", runner, sizeof(runner) - 1);
	char *slash = n > 0 ? (runner[n] = '\0', strrchr(runner, '/')) : NULL;
	if (!slash || (size_t)(slash - runner) + sizeof("/runner.mjs") > sizeof(runner))
		mxf_fatal("cannot find my own directory");
	strcpy(slash, "/runner.mjs");
	limits = (struct mxf_worker_limits){
		.node = mxf_config_str(cfg, "workerd", "node"), .runner = runner,
		.memory = (uint64_t)mxf_config_int(cfg, "workerd", "memory_limit") << 20,
		.keep_stderr = false};
	mxf_daemon_drop(cfg, "workerd", false, sock, sizeof(sock));
	if (access(runner, R_OK) < 0)
		mxf_warn("%s: %s; js workers will fail", runner, strerror(errno));
	if (mxf_routerlink_start(loop, sock, "workerd", on_msg, on_state, NULL, &link_) < 0)
		mxf_fatal("cannot start router link");
	uv_signal_init(loop, &sigterm);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_init(loop, &sigint);
	uv_signal_start(&sigint, on_signal, SIGINT);
	mxf_info("started");
	uv_run(loop, UV_RUN_DEFAULT);
	kill_all();
	uv_run(loop, UV_RUN_NOWAIT);
	uv_loop_close(loop);
	mxf_config_free(cfg);
	return 0;
}
