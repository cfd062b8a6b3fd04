/* routerctl: a front end's (mxferryctl, apid) conversations with the router
 * over its control socket as role ctl: the handshake, one request/answer,
 * queueing a message of our own, RELOAD, and the address-verification mail. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "routerctl.h"
#include "rulesdb.h"
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

int mxf_routerctl_open(const struct mxf_config *cfg, char *why, size_t whylen)
{
	char path[PATH_MAX];
	if (mxf_daemon_router_sock(cfg, path, sizeof(path)) < 0) {
		why_set(why, whylen, "spool_dir too long");
		return -ENAMETOOLONG;
	}
	int s = mxf_ipc_hello(path, "ctl", MXF_ROUTERCTL_TIMEOUT_MS);
	if (s == -EPROTO)
		why_set(why, whylen, "the router refused the handshake");
	else if (s == -ENOENT || s == -ECONNREFUSED || s == -ENAMETOOLONG)
		why_set(why, whylen, "cannot reach the router (%s): %s", path, strerror(-s));
	else if (s < 0)
		why_set(why, whylen, "the router refused the connection: %s", strerror(-s));
	return s;
}

int mxf_routerctl_call(int s, const struct mxf_ipc_msg *m, uint16_t want, uint64_t req,
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

/* Printable ASCII only: the router's text goes to a terminal or JSON. */
static const char *safe_text(char *dst, size_t cap, const char *src)
{
	size_t o = 0;
	for (; *src && o + 1 < cap; src++)
		dst[o++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
	dst[o] = '\0';
	return dst;
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
			safe_text(safe, sizeof(safe), t ? t : ""));
	}
	return code;
}

int mxf_routerctl_submit(const struct mxf_config *cfg, const char *rcpt, const char *data,
		      size_t len, char qid[MXF_QID_SIZE], char *why, size_t whylen)
{
	int s = mxf_routerctl_open(cfg, why, whylen);
	if (s < 0)
		return s;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_OPEN);
	struct mxf_ipc_reply *rep = NULL;
	int fd = -1, r = -ENOMEM;
	if (!m || mxf_ipc_put_u64(m, F_REQ, 1) < 0) {
		why_set(why, whylen, "out of memory");
		goto out;
	}
	if ((r = mxf_routerctl_call(s, m, MXF_MSG_OPEN_REPLY, 1, MXF_ROUTERCTL_TIMEOUT_MS, &rep, why,
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
	if ((r = mxf_routerctl_call(s, m, MXF_MSG_COMMIT_REPLY, 2, 30000, &rep, why, whylen)) < 0)
		goto out;
	r = answer(rep, why, whylen) == 250 ? 0 : -EAGAIN;
out:
	mxf_ipc_reply_free(rep);
	mxf_ipc_msg_free(m);
	close(s);
	return r;
}

/* A verification token lives a day, as the hosted service's link does. */
#define VERIFY_TTL (24 * 3600)

int mxf_routerctl_verify_mail(const struct mxf_config *cfg, struct mxf_rulesdb *db, const char *a,
			     char qid[MXF_QID_SIZE], char *why, size_t whylen)
{
	char tok[MXF_TOKEN_SIZE], host[256], date[64], id[40];
	int r = mxf_rulesdb_address_token_new(db, a, VERIFY_TTL, tok, why, whylen);
	if (r < 0)
		return r;
	snprintf(host, sizeof(host), "%s", mxf_config_str(cfg, "main", "hostname"));
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	unsigned char rnd[8];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(id + 2 * i, 3, "%02x", rnd[i]);
	/* The address is a normalised mailbox (no CR, LF or angle brackets);
	 * with a UTF-8 local part the message says so in its charset. */
	char *msg = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&msg, &len);
	if (!f) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	fprintf(f,
		"From: mxferry <postmaster@%s>\r\n"
		"To: <%s>\r\n"
		"Subject: Verify forwarding to %s\r\n"
		"Date: %s\r\n"
		"Message-ID: <verify.%ld.%s@%s>\r\n"
		"Auto-Submitted: auto-generated\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"Content-Transfer-Encoding: 8bit\r\n"
		"\r\n"
		"The mail gateway %s has been asked to forward mail to this\r\n"
		"address (%s). Nothing is forwarded here until the address is\r\n"
		"verified.\r\n"
		"\r\n"
		"If you expect this, give the gateway's administrator this code:\r\n"
		"\r\n"
		"    %s\r\n"
		"\r\n"
		"or, on the gateway, run:\r\n"
		"\r\n"
		"    mxferryctl address verify %s %s\r\n"
		"\r\n"
		"The code is valid for 24 hours and can be used once. If you did not\r\n"
		"expect this message, ignore it: nothing will be forwarded to you.\r\n",
		host, a, a, date, (long)now, id, host, host, a, tok, a, tok);
	memset(tok, 0, sizeof(tok));
	if (fclose(f) != 0 || !msg) {
		free(msg);
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	r = mxf_routerctl_submit(cfg, a, msg, len, qid, why, whylen);
	explicit_bzero(msg, len);
	free(msg);
	return r;
}


int mxf_routerctl_reload(const struct mxf_config *cfg, char *why, size_t whylen)
{
	int s = mxf_routerctl_open(cfg, why, whylen);
	if (s < 0)
		return s;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_RELOAD);
	struct mxf_ipc_reply *rep = NULL;
	int r = -ENOMEM;
	if (!m || mxf_ipc_put_u64(m, F_REQ, 1) < 0)
		why_set(why, whylen, "out of memory");
	else if ((r = mxf_routerctl_call(s, m, MXF_MSG_RELOAD_REPLY, 1, MXF_ROUTERCTL_TIMEOUT_MS,
					 &rep, why, whylen)) == 0 &&
		 answer(rep, why, whylen) / 100 != 2)
		r = -EAGAIN;
	mxf_ipc_reply_free(rep);
	mxf_ipc_msg_free(m);
	close(s);
	return r;
}

int mxf_routerctl_queue(const struct mxf_config *cfg, const char *op, const char *const *qids,
			size_t nq, uint64_t offset, uint64_t *count, char **text, char *why,
			size_t whylen)
{
	if (text)
		*text = NULL;
	*count = 0;
	for (size_t i = 0; i < nq; i++)
		if (!mxf_qid_valid(qids[i])) {
			why_set(why, whylen, "not a queue ID: %.40s", qids[i]);
			return -EINVAL;
		}
	int s = mxf_routerctl_open(cfg, why, whylen);
	if (s < 0)
		return s;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_QUEUE_CTL);
	struct mxf_ipc_reply *rep = NULL;
	uint64_t code = 0;
	int r = -ENOMEM;
	if (!m || mxf_ipc_put_u64(m, F_REQ, 1) < 0 || mxf_ipc_put_str(m, F_TEXT, op) < 0 ||
	    (offset && mxf_ipc_put_u64(m, F_COUNT, offset) < 0)) {
		why_set(why, whylen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nq; i++)
		if (mxf_ipc_put_str(m, F_QID, qids[i]) < 0) {
			why_set(why, whylen, "too many queue IDs at once");
			r = -E2BIG;
			goto out;
		}
	if ((r = mxf_routerctl_call(s, m, MXF_MSG_QUEUE_CTL_REPLY, 1, 10000, &rep, why, whylen)) < 0)
		goto out;
	const struct mxf_ipc_view *v = mxf_ipc_reply_view(rep);
	if (mxf_ipc_u64(v, F_CODE, 0, &code) < 0 || mxf_ipc_u64(v, F_COUNT, 0, count) < 0) {
		why_set(why, whylen, "malformed answer from the router");
		r = -EPROTO;
		goto out;
	}
	if (code != 250) {
		answer(rep, why, whylen);
		r = -EAGAIN;
		goto out;
	}
	if (text) {
		const char *t = mxf_ipc_str(v, F_TEXT, 0);
		if (!(*text = strdup(t ? t : ""))) {
			why_set(why, whylen, "out of memory");
			r = -ENOMEM;
		}
	}
out:
	mxf_ipc_reply_free(rep);
	mxf_ipc_msg_free(m);
	close(s);
	return r;
}
