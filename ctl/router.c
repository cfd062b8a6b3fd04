/* mxferryctl's conversations with the router over its control socket: the
 * handshake, one request/answer, and queueing a message of our own. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "daemon.h"
#include "ipc.h"
#include "queueid.h"

static void why_set(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

int ctl_router_open(const struct mxf_config *cfg, char *why, size_t whylen)
{
	char path[PATH_MAX];
	if (mxf_daemon_router_sock(cfg, path, sizeof(path)) < 0) {
		why_set(why, whylen, "spool_dir too long");
		return -ENAMETOOLONG;
	}
	int s = mxf_ipc_hello(path, "ctl", CTL_ROUTER_TIMEOUT_MS);
	if (s == -EPROTO)
		why_set(why, whylen, "the router refused the handshake");
	else if (s == -ENOENT || s == -ECONNREFUSED || s == -ENAMETOOLONG)
		why_set(why, whylen, "cannot reach the router (%s): %s", path, strerror(-s));
	else if (s < 0)
		why_set(why, whylen, "the router refused the connection: %s", strerror(-s));
	return s;
}

int ctl_router_call(int s, const struct mxf_ipc_msg *m, uint16_t want, uint64_t req,
		    int timeout_ms, struct mxf_ipc_reply **out, char *why, size_t whylen)
{
	uint64_t u;
	*out = NULL;
	int r = mxf_ipc_call(s, m, timeout_ms, out);
	if (r < 0) {
		why_set(why, whylen, "no answer from the router: %s", strerror(-r));
		return r;
	}
	const struct mxf_ipc_view *v = mxf_ipc_reply_view(*out);
	if (mxf_ipc_type(v) != want || mxf_ipc_u64(v, F_REQ, 0, &u) < 0 || u != req ||
	    mxf_ipc_u64(v, F_CODE, 0, &u) < 0) {
		why_set(why, whylen, "malformed answer from the router");
		mxf_ipc_reply_free(*out);
		*out = NULL;
		return -EPROTO;
	}
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The answer's code, and its text (sanitised) into why unless 2xx. */
static uint64_t answer(const struct mxf_ipc_reply *rep, char *why, size_t whylen)
{
	const struct mxf_ipc_view *v = mxf_ipc_reply_view(rep);
	uint64_t code = 0;
	mxf_ipc_u64(v, F_CODE, 0, &code);
	if (code / 100 != 2) {
		const char *t = mxf_ipc_str(v, F_TEXT, 0);
		char safe[512];
		why_set(why, whylen, "the router refused: %llu %s", (unsigned long long)code,
			ctl_safe(safe, sizeof(safe), t ? t : ""));
	}
	return code;
}

int ctl_router_submit(const struct mxf_config *cfg, const char *rcpt, const char *data,
		      size_t len, char qid[MXF_QID_SIZE], char *why, size_t whylen)
{
	int s = ctl_router_open(cfg, why, whylen);
	if (s < 0)
		return s;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_OPEN);
	struct mxf_ipc_reply *rep = NULL;
	int fd = -1, r = -ENOMEM;
	if (!m || mxf_ipc_put_u64(m, F_REQ, 1) < 0) {
		why_set(why, whylen, "out of memory");
		goto out;
	}
	if ((r = ctl_router_call(s, m, MXF_MSG_OPEN_REPLY, 1, CTL_ROUTER_TIMEOUT_MS, &rep, why,
				 whylen)) < 0)
		goto out;
	const char *q = mxf_ipc_str(mxf_ipc_reply_view(rep), F_QID, 0);
	if (answer(rep, why, whylen) != 250) {
		r = -EAGAIN;
		goto out;
	}
	if (!q || !mxf_qid_valid(q) || (fd = mxf_ipc_reply_take_fd(rep)) < 0) {
		why_set(why, whylen, "malformed answer from the router");
		r = -EPROTO;
		goto out;
	}
	snprintf(qid, MXF_QID_SIZE, "%s", q);
	mxf_ipc_reply_free(rep);
	rep = NULL;
	mxf_ipc_msg_free(m);
	/* The router makes it durable at COMMIT (fsync before its 250);
	 * a failed write is an ABORT, which leaves nothing behind. */
	r = write_all(fd, data, len);
	close(fd);
	m = mxf_ipc_msg_new(r < 0 ? MXF_MSG_ABORT : MXF_MSG_COMMIT);
	if (r < 0) {
		why_set(why, whylen, "cannot write the message: %s", strerror(-r));
		if (m && mxf_ipc_put_str(m, F_QID, qid) == 0)
			mxf_ipc_send(s, m, -1);
		goto out;
	}
	r = -ENOMEM;
	if (!m || mxf_ipc_put_u64(m, F_REQ, 2) < 0 || mxf_ipc_put_str(m, F_QID, qid) < 0 ||
	    mxf_ipc_put_str(m, F_SENDER, "") < 0 || mxf_ipc_put_str(m, F_RCPT, rcpt) < 0 ||
	    mxf_ipc_put_u64(m, F_SIZE, len) < 0 || mxf_ipc_put_str(m, F_CLIENT_IP, "") < 0 ||
	    mxf_ipc_put_str(m, F_CLIENT_NAME, "") < 0 || mxf_ipc_put_str(m, F_HELO, "") < 0 ||
	    mxf_ipc_put_str(m, F_PROTO, "local") < 0) {
		why_set(why, whylen, "out of memory");
		goto out;
	}
	if ((r = ctl_router_call(s, m, MXF_MSG_COMMIT_REPLY, 2, 30000, &rep, why, whylen)) < 0)
		goto out;
	r = answer(rep, why, whylen) == 250 ? 0 : -EAGAIN;
out:
	mxf_ipc_reply_free(rep);
	mxf_ipc_msg_free(m);
	close(s);
	return r;
}
