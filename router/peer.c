/* The router's end of the IPC sockets. The connections are tolerant
 * mxf_ipcconns: where other daemons exit on a malformed message, the router
 * closes only the offending connection: it is the spool's owner, and a
 * compromised smtpd or deliverd must not be able to take it down by sending
 * garbage. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "router.h"

#define MAX_PEERS 256

static const char *const role_names[ROLE_N] = {"none", "smtpd",  "deliverd", "bouncer",
						"ctl",  "signer", "workerd"};

const char *role_name(enum role r)
{
	return (unsigned)r < ROLE_N ? role_names[r] : "?";
}

static struct peer *dead_peers;
static uv_check_t reaper;

static void reap_dead(uv_check_t *h)
{
	while (dead_peers) {
		struct peer *p = dead_peers;
		dead_peers = p->next;
		free(p);
	}
	uv_check_stop(h);
}

/* Forgets the peer; the connection itself is closed by the caller or is
 * already closing (peer_gone). */
static void peer_release(struct peer *p)
{
	if (p->closing)
		return;
	p->closing = true;
	/* Give back what the peer held: its uncommitted files, its delivery
	 * jobs (re-sent to the next deliverd) and its pending bounce. */
	recv_peer_gone(p);
	queue_peer_gone(p);
	if (p->prev)
		p->prev->next = p->next;
	else
		R.peers = p->next;
	if (p->next)
		p->next->prev = p->prev;
	R.npeers--;
	/* Callers up the stack (a dispatch in progress) may still hold p: free
	 * it after this loop iteration. */
	p->next = dead_peers;
	dead_peers = p;
	uv_check_start(&reaper, reap_dead);
}

void peer_close(struct peer *p)
{
	if (p->closing)
		return;
	struct mxf_ipcconn *c = p->conn;
	peer_release(p);
	mxf_ipcconn_close(c);
}

void peer_close_all(void)
{
	while (R.peers)
		peer_close(R.peers);
}

struct peer *peer_find_serial(uint64_t serial)
{
	for (struct peer *p = R.peers; p; p = p->next)
		if (p->serial == serial)
			return p->closing ? NULL : p;
	return NULL;
}

struct peer *peer_find_role(enum role role)
{
	struct peer *best = NULL;
	for (struct peer *p = R.peers; p; p = p->next)
		if (p->role == role && !p->closing && (!best || p->jobs < best->jobs))
			best = p;
	return best;
}

int peer_send(struct peer *p, const struct mxf_ipc_msg *m, int fd)
{
	if (p->closing)
		return -ENOTCONN;
	return mxf_ipcconn_send(p->conn, m, fd);
}

int peer_reply(struct peer *p, uint16_t type, uint64_t req, unsigned code, const char *esc,
	       const char *text, const char *qid, int fd)
{
	return peer_reply_x(p, type, req, code, esc, text, qid, fd, 0, NULL);
}

int peer_reply_x(struct peer *p, uint16_t type, uint64_t req, unsigned code, const char *esc,
		 const char *text, const char *qid, int fd, uint16_t xtag, const char *xval)
{
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(type);
	int r = -ENOMEM;
	if (m && (r = mxf_ipc_put_u64(m, F_REQ, req)) == 0 &&
	    (!qid || (r = mxf_ipc_put_str(m, F_QID, qid)) == 0) &&
	    (r = mxf_ipc_put_u64(m, F_CODE, code)) == 0 &&
	    (!esc || (r = mxf_ipc_put_str(m, F_ESC, esc)) == 0) &&
	    (r = mxf_ipc_put_str(m, F_TEXT, text)) == 0 &&
	    (!xval || !*xval || (r = mxf_ipc_put_str(m, xtag, xval)) == 0))
		r = peer_send(p, m, fd);
	mxf_ipc_msg_free(m);
	if (r < 0 && !p->closing) {
		mxf_warn("%s[%ld]: cannot reply: %s; closing", role_name(p->role), (long)p->pid,
			 strerror(-r));
		peer_close(p);
	}
	return r;
}

/* ---- handshake and dispatch ---- */
static bool role_allowed(const struct peer *p, enum role role)
{
	/* Development mode: every daemon runs as the invoking user. */
	if (R.dev)
		return p->uid == R.self_uid || p->uid == 0;
	if (role == ROLE_CTL)
		return p->uid == 0 || p->uid == R.self_uid ||
		       (R.role_uid_known[role] && p->uid == R.role_uid[role]);
	return R.role_uid_known[role] && p->uid == R.role_uid[role];
}

static int on_hello(struct peer *p, const struct mxf_ipc_view *v)
{
	const char *role = mxf_ipc_str(v, F_ROLE, 0);
	uint64_t ver = 0;
	enum role r = ROLE_NONE;
	if (role)
		for (int i = 1; i < ROLE_N; i++)
			if (strcmp(role, role_names[i]) == 0)
				r = (enum role)i;
	if (r == ROLE_NONE || mxf_ipc_u64(v, F_VERSION, 0, &ver) < 0) {
		mxf_warn("peer pid=%ld uid=%ld: bad HELLO; closing", (long)p->pid, (long)p->uid);
		return -2;
	}
	if (ver != MXF_IPC_VERSION) {
		mxf_warn("%s[%ld]: protocol version %llu, want %d; closing", role, (long)p->pid,
			 (unsigned long long)ver, MXF_IPC_VERSION);
		return -2;
	}
	if (!role_allowed(p, r)) {
		mxf_warn("refused %s HELLO from pid=%ld uid=%ld: not that role's user", role,
			 (long)p->pid, (long)p->uid);
		return -2;
	}
	p->role = r;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_HELLO_OK);
	int rc = m ? mxf_ipc_put_u64(m, F_VERSION, MXF_IPC_VERSION) : -ENOMEM;
	if (rc == 0)
		rc = peer_send(p, m, -1);
	mxf_ipc_msg_free(m);
	if (rc < 0)
		return -2;
	mxf_info("%s[%ld] connected (uid=%ld)", role, (long)p->pid, (long)p->uid);
	if (r == ROLE_DELIVERD)
		queue_deliverd_up(p);
	else if (r == ROLE_BOUNCER)
		queue_bouncer_up(p);
	return 0;
}

static int on_reload(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req;
	char err[512] = "";
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0)
		return -1;
	int r = queue_reload_rules(err, sizeof(err));
	peer_reply(p, MXF_MSG_RELOAD_REPLY, req, r == 0 ? 250 : 451, NULL,
		   r == 0 ? "Ok: rules reloaded" : err, NULL, -1);
	return 0;
}

/* Which message types each role may send. */
static bool type_allowed(enum role role, uint16_t t)
{
	switch (role) {
	case ROLE_SMTPD:
		return t == MXF_MSG_RCPT_CHECK || t == MXF_MSG_OPEN || t == MXF_MSG_COMMIT ||
		       t == MXF_MSG_ABORT || t == MXF_MSG_ACCESS_CHECK || t == MXF_MSG_REJECT_LOG ||
		       t == MXF_MSG_SMTPD_STATS;
	case ROLE_BOUNCER:
		return t == MXF_MSG_OPEN || t == MXF_MSG_COMMIT || t == MXF_MSG_ABORT ||
		       t == MXF_MSG_BOUNCE_DONE || t == MXF_MSG_DSN_PARSE_REPLY;
	case ROLE_DELIVERD:
		return t == MXF_MSG_DELIVER_RESULT;
	case ROLE_WORKERD:
		return t == MXF_MSG_WORK_RESULT;
	case ROLE_CTL:
		/* OPEN/COMMIT: the verification mail of `address add` (from
		 * the null sender to one address; checked at COMMIT). */
		return t == MXF_MSG_RELOAD || t == MXF_MSG_QUEUE_CTL || t == MXF_MSG_OPEN ||
		       t == MXF_MSG_COMMIT || t == MXF_MSG_ABORT;
	case ROLE_SIGNER:
		return t == MXF_MSG_SIGN;
	default:
		return false;
	}
}

/* Returns <0 when the peer broke the protocol (-2: already logged). Consumes fd. */
static int dispatch(struct peer *p, const struct mxf_ipc_view *v, int fd)
{
	uint16_t t = mxf_ipc_type(v);
	/* No message from a peer carries a descriptor. */
	if (fd >= 0) {
		close(fd);
		return -1;
	}
	if (p->role == ROLE_NONE)
		return t == MXF_MSG_HELLO ? on_hello(p, v) : -1;
	if (!type_allowed(p->role, t))
		return -1;
	switch (t) {
	case MXF_MSG_RCPT_CHECK: recv_rcpt_check(p, v); return 0;
	case MXF_MSG_OPEN: recv_open(p, v); return 0;
	case MXF_MSG_COMMIT: return recv_commit(p, v);
	case MXF_MSG_ABORT: recv_abort(p, v); return 0;
	case MXF_MSG_DELIVER_RESULT: return queue_deliver_result(p, v);
	case MXF_MSG_BOUNCE_DONE: return queue_bounce_done(p, v);
	case MXF_MSG_DSN_PARSE_REPLY: return recv_dsn_parsed(p, v);
	case MXF_MSG_RELOAD: return on_reload(p, v);
	case MXF_MSG_QUEUE_CTL: return queue_ctl(p, v);
	case MXF_MSG_SIGN: return sign_request(p, v);
	case MXF_MSG_ACCESS_CHECK: return access_check(p, v);
	case MXF_MSG_REJECT_LOG: return access_reject_log(p, v);
	case MXF_MSG_SMTPD_STATS: return metrics_smtpd_stats(p, v);
	case MXF_MSG_WORK_RESULT: return work_result(p, v);
	default: return -1;
	}
}

static int on_msg(struct mxf_ipcconn *c, const struct mxf_ipc_view *v, int fd, void *arg)
{
	struct peer *p = arg;
	(void)c;
	int r = dispatch(p, v, fd);
	if (r == -1)
		mxf_warn("%s[%ld] uid=%ld: malformed or unexpected message (type %u); "
			 "closing the connection",
			 role_name(p->role), (long)p->pid, (long)p->uid, mxf_ipc_type(v));
	/* -2: the refusal is logged already. Closing goes through on_gone. */
	return r < 0 ? -1 : 0;
}

static void on_gone(struct mxf_ipcconn *c, void *arg)
{
	struct peer *p = arg;
	(void)c;
	if (p->role != ROLE_NONE && p->role != ROLE_CTL && p->role != ROLE_SIGNER)
		mxf_info("%s[%ld] disconnected", role_name(p->role), (long)p->pid);
	peer_release(p);
}

static void on_accept(uv_poll_t *h, int status, int events)
{
	(void)h;
	(void)events;
	if (status < 0 || R.stopping)
		return;
	for (;;) {
		int s = accept4(R.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (s < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				mxf_warn("accept: %s", strerror(errno));
			return;
		}
		struct peer *p = calloc(1, sizeof(*p));
		if (!p || R.npeers >= MAX_PEERS || mxf_ipc_peercred(s, &p->pid, &p->uid, NULL) < 0 ||
		    mxf_ipcconn_new(R.loop, s, MXF_IPCCONN_TOLERANT, on_msg, on_gone, p, &p->conn) < 0) {
			if (R.npeers >= MAX_PEERS)
				mxf_warn("too many IPC connections; refusing one");
			free(p);
			close(s);
			continue;
		}
		static uint64_t serial;
		p->serial = ++serial;
		p->next = R.peers;
		if (R.peers)
			R.peers->prev = p;
		R.peers = p;
		R.npeers++;
	}
}

int peer_listen(const char *path)
{
	int s = mxf_ipc_listen(path, 64);
	if (s < 0)
		return s;
	/* Anyone may connect; who may do what is decided per role from
	 * SO_PEERCRED at HELLO. */
	if (chmod(path, 0666) < 0 || uv_poll_init(R.loop, &R.listen_poll, s) < 0) {
		int r = -errno;
		close(s);
		return r ? r : -EIO;
	}
	R.listen_fd = s;
	uv_check_init(R.loop, &reaper);
	uv_unref((uv_handle_t *)&reaper);
	uv_poll_start(&R.listen_poll, UV_READABLE, on_accept);
	return 0;
}
