#include "delivery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "smtpreply.h"

/* At most this many connection attempts per job, over all hosts and
 * addresses: a domain listing many dead hosts must not hold a worker for an
 * hour (Postfix's smtp_mx_address_limit plays the same role). */
#define MAX_CONNECT_ATTEMPTS 10
#define IOBUF 65536

/* ---- results ---- */

static void set_result(struct dlv_rcpt *r, int code, const char *esc, const char *text)
{
	char *t = strdup(text);
	if (!t)
		mxf_fatal("out of memory");
	free(r->text);
	r->text = t;
	r->code = code;
	snprintf(r->esc, sizeof(r->esc), "%s", esc);
}

static void set_all(struct dlv_job *j, int code, const char *esc, const char *text)
{
	for (size_t i = 0; i < j->nrcpt; i++)
		set_result(&j->rcpt[i], code, esc, text);
}

static void set_reply(struct dlv_rcpt *r, const struct mxf_smtpreply *rep)
{
	set_result(r, rep->code, mxf_smtpreply_esc(rep), rep->text);
}

/* ---- the DATA stream ---- */

size_t dlv_stuff(struct dlv_stuffer *s, const char *in, size_t len, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (s->cr) {
			s->cr = 0;
			out[o++] = '\r';
			out[o++] = '\n';
			s->bol = 1;
			if (c == '\n')
				continue;
			/* A bare CR became a line end: fall through with c. */
		}
		if (c == '\r') {
			s->cr = 1;
			continue;
		}
		/* Every line end leaves as CRLF: a bare LF or CR passed through
		 * could be read as a line end by one server and not by the
		 * next, which is how SMTP smuggling works. */
		if (c == '\n') {
			out[o++] = '\r';
			out[o++] = '\n';
			s->bol = 1;
			continue;
		}
		if (s->bol && c == '.')
			out[o++] = '.'; /* RFC 5321 §4.5.2 */
		out[o++] = c;
		s->bol = 0;
	}
	return o;
}

size_t dlv_stuff_finish(struct dlv_stuffer *s, char *out)
{
	size_t o = 0;
	if (s->cr) {
		s->cr = 0;
		s->bol = 1;
		out[o++] = '\r';
		out[o++] = '\n';
	}
	if (!s->bol) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

/* ---- a session's I/O ---- */

enum io_err { IO_OK = 0, IO_LOST, IO_TIMEOUT, IO_PROTO, IO_LOCAL };

struct sess {
	struct dlv_job *j;
	int fd;
	struct mxf_smtpreply_parser *p;
	char peer[DLV_RELAY_SIZE];  /* host[addr] */
	char relay[DLV_RELAY_SIZE]; /* host[addr]:port */
	enum io_err err;
	char *wbuf;
	size_t wlen;
	/* EHLO keywords. */
	bool esmtp, size, smtputf8;
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on the socket until deadline; 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, long long deadline)
{
	for (;;) {
		long long left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd pfd = {.fd = fd, .events = events};
		int r = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

static int write_all(struct sess *s, const char *p, size_t n)
{
	if (s->err)
		return -1;
	while (n > 0) {
		ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(s->fd, POLLOUT, now_ms() + s->j->command_timeout_ms);
			if (r == 0) {
				s->err = IO_TIMEOUT;
				return -1;
			}
			if (r > 0)
				continue;
		}
		s->err = IO_LOST;
		return -1;
	}
	return 0;
}

static int flush(struct sess *s)
{
	int r = write_all(s, s->wbuf, s->wlen);
	s->wlen = 0;
	return r;
}

static int cmd(struct sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cmd(struct sess *s, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2) {
		s->err = IO_LOCAL;
		return -1;
	}
	memcpy(line + n, "\r\n", 2);
	return write_all(s, line, (size_t)n + 2);
}

/* Reads one complete reply within the command timeout. */
static int read_reply(struct sess *s, struct mxf_smtpreply **out)
{
	char buf[4096];
	long long deadline = now_ms() + s->j->command_timeout_ms;

	if (s->err)
		return -1;
	for (;;) {
		int r = mxf_smtpreply_next(s->p, out);
		if (r == 1)
			return 0;
		if (r < 0) {
			s->err = r == -ENOMEM ? IO_LOCAL : IO_PROTO;
			return -1;
		}
		ssize_t n = recv(s->fd, buf, sizeof(buf), 0);
		if (n > 0) {
			if (mxf_smtpreply_feed(s->p, buf, (size_t)n) == -ENOMEM) {
				s->err = IO_LOCAL;
				return -1;
			}
			/* A protocol error surfaces from next() once the
			 * replies before it have been taken. */
			continue;
		}
		if (n == 0) {
			s->err = IO_LOST;
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int w = wait_fd(s->fd, POLLIN, deadline);
			if (w == 0) {
				s->err = IO_TIMEOUT;
				return -1;
			}
			if (w > 0)
				continue;
		}
		s->err = IO_LOST;
		return -1;
	}
}

static const char *io_what(enum io_err e)
{
	switch (e) {
	case IO_TIMEOUT: return "timed out";
	case IO_PROTO: return "protocol error";
	case IO_LOCAL: return "local error";
	default: return "lost connection";
	}
}

/* A failed session mid-transaction: every recipient still open gets it. */
static void fail_open(struct sess *s, bool *open, const char *stage)
{
	char text[512];
	const char *esc = s->err == IO_PROTO ? "4.5.0" : s->err == IO_LOCAL ? "4.3.0" : "4.4.2";
	switch (s->err) {
	case IO_TIMEOUT:
		snprintf(text, sizeof(text), "conversation with %s timed out while %s", s->peer, stage);
		break;
	case IO_PROTO:
		snprintf(text, sizeof(text), "protocol error from %s while %s", s->peer, stage);
		break;
	case IO_LOCAL:
		snprintf(text, sizeof(text), "local error while %s (talking to %s)", stage, s->peer);
		break;
	default:
		snprintf(text, sizeof(text), "lost connection with %s while %s", s->peer, stage);
		break;
	}
	for (size_t i = 0; i < s->j->nrcpt; i++)
		if (open[i])
			set_result(&s->j->rcpt[i], 451, esc, text);
}

/* ---- connecting ---- */

static void fmt_addr(const struct mxf_dns_addr *a, char *out, size_t len)
{
	if (!inet_ntop(a->family, a->family == AF_INET6 ? (const void *)&a->a.v6 : (const void *)&a->a.v4,
		       out, (socklen_t)len))
		snprintf(out, len, "?");
}

/* Connects with the connect timeout; returns the socket or -errno. */
static int connect_to(const struct mxf_dns_addr *a, unsigned port, int timeout_ms)
{
	struct sockaddr_storage ss;
	socklen_t sl;

	memset(&ss, 0, sizeof(ss));
	if (a->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		s6->sin6_addr = a->a.v6;
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		s4->sin_addr = a->a.v4;
		sl = sizeof(*s4);
	}
	int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, sl) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return -e;
	}
	int r = wait_fd(fd, POLLOUT, now_ms() + timeout_ms);
	if (r <= 0) {
		close(fd);
		return r == 0 ? -ETIMEDOUT : r;
	}
	int soerr = 0;
	socklen_t el = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0)
		soerr = errno;
	if (soerr) {
		close(fd);
		return -soerr;
	}
	return fd;
}

/* ---- one SMTP session ---- */

enum sess_rc {
	S_NEXT, /* this host would not take the transaction: try the next one */
	S_DONE, /* every recipient has its result */
};

static bool has_8bit(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

static void parse_ehlo(struct sess *s, const struct mxf_smtpreply *r)
{
	s->esmtp = true;
	for (size_t i = 1; i < r->nlines; i++) {
		const char *kw = r->lines[i];
		size_t kl = strcspn(kw, " ");
		if (kl == 4 && strncasecmp(kw, "SIZE", 4) == 0)
			s->size = true;
		else if (kl == 8 && strncasecmp(kw, "SMTPUTF8", 8) == 0)
			s->smtputf8 = true;
	}
}

static void quit(struct sess *s)
{
	struct mxf_smtpreply *r;
	if (s->err)
		return;
	/* Politeness only: the outcome is settled, a failure here changes nothing. */
	if (cmd(s, "QUIT") == 0 && read_reply(s, &r) == 0)
		mxf_smtpreply_free(r);
}

/* Sends the headers and the content, dot-stuffed, and the final dot. */
static int send_body(struct sess *s, int *rd_errno)
{
	struct dlv_job *j = s->j;
	struct dlv_stuffer st = {.bol = 1, .cr = 0};
	char *in = malloc(IOBUF / 2 - 8);
	size_t inlen = IOBUF / 2 - 8;
	off_t off = 0;

	if (!in) {
		s->err = IO_LOCAL;
		return -1;
	}
	/* s->wbuf holds IOBUF: 2 * chunk + 2 always fits. */
	const char *h = j->headers;
	size_t hl = strlen(h);
	while (hl > 0) {
		size_t c = hl < inlen ? hl : inlen;
		s->wlen = dlv_stuff(&st, h, c, s->wbuf);
		if (flush(s) < 0)
			goto fail;
		h += c;
		hl -= c;
	}
	for (;;) {
		ssize_t n = pread(j->fd, in, inlen, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*rd_errno = errno;
			s->err = IO_LOCAL;
			goto fail;
		}
		if (n == 0)
			break;
		off += n;
		s->wlen = dlv_stuff(&st, in, (size_t)n, s->wbuf);
		if (flush(s) < 0)
			goto fail;
	}
	s->wlen = dlv_stuff_finish(&st, s->wbuf);
	if (flush(s) < 0)
		goto fail;
	free(in);
	return 0;
fail:
	free(in);
	return -1;
}

static enum sess_rc session(struct dlv_job *j, const char *host, const struct mxf_dns_addr *a,
			    char *lasterr, size_t lasterrlen)
{
	char addr[INET6_ADDRSTRLEN];
	struct sess s = {.j = j, .fd = -1};
	struct mxf_smtpreply *r = NULL;
	enum sess_rc rc = S_NEXT;
	bool *open = NULL, need_utf8;
	size_t accepted = 0;

	fmt_addr(a, addr, sizeof(addr));
	snprintf(s.peer, sizeof(s.peer), "%s[%s]", host, addr);
	snprintf(s.relay, sizeof(s.relay), "%s[%s]:%u", host, addr, j->port);
	snprintf(j->relay, sizeof(j->relay), "%s", s.relay);

	s.fd = connect_to(a, j->port, j->connect_timeout_ms);
	if (s.fd < 0) {
		snprintf(lasterr, lasterrlen, "connect to %s: %s", s.relay,
			 s.fd == -ETIMEDOUT ? "Connection timed out" : strerror(-s.fd));
		mxf_info("%s: %s", j->qid, lasterr);
		return S_NEXT;
	}
	if (mxf_smtpreply_parser_new(&s.p) < 0 || !(s.wbuf = malloc(IOBUF)) ||
	    !(open = calloc(j->nrcpt, sizeof(*open))))
		mxf_fatal("out of memory");

	/* Greeting, EHLO/HELO: any trouble here sends us to the next host. */
	const char *stage = "reading the greeting";
	if (read_reply(&s, &r) < 0)
		goto next_io;
	if (r->code / 100 != 2) {
		snprintf(lasterr, lasterrlen, "connect to %s: greeting: %d %s", s.relay, r->code, r->text);
		goto next_reply;
	}
	mxf_smtpreply_free(r);
	r = NULL;

	stage = "sending EHLO";
	if (cmd(&s, "EHLO %s", j->helo) < 0 || read_reply(&s, &r) < 0)
		goto next_io;
	if (r->code / 100 == 5) {
		/* Not an ESMTP server: plain HELO (RFC 5321 §3.2). */
		mxf_smtpreply_free(r);
		r = NULL;
		stage = "sending HELO";
		if (cmd(&s, "HELO %s", j->helo) < 0 || read_reply(&s, &r) < 0)
			goto next_io;
		if (r->code / 100 != 2) {
			snprintf(lasterr, lasterrlen, "connect to %s: HELO: %d %s", s.relay, r->code,
				 r->text);
			goto next_reply;
		}
	} else if (r->code / 100 != 2) {
		snprintf(lasterr, lasterrlen, "connect to %s: EHLO: %d %s", s.relay, r->code, r->text);
		goto next_reply;
	} else {
		parse_ehlo(&s, r);
	}
	mxf_smtpreply_free(r);
	r = NULL;

	/* From here on the host has the transaction: whatever happens is the
	 * result (RFC 5321 §4.5.4.1 moves on only for connection trouble). */
	rc = S_DONE;
	for (size_t i = 0; i < j->nrcpt; i++)
		open[i] = true;

	need_utf8 = has_8bit(j->sender);
	for (size_t i = 0; i < j->nrcpt; i++)
		need_utf8 = need_utf8 || has_8bit(j->rcpt[i].addr);
	if (need_utf8 && !s.smtputf8) {
		char text[512];
		snprintf(text, sizeof(text), "SMTPUTF8 is required, but was not offered by host %s",
			 s.peer);
		set_all(j, 550, "5.6.7", text);
		quit(&s);
		goto out;
	}

	char params[64] = "";
	size_t plen = 0;
	if (s.size) {
		struct stat sb;
		if (fstat(j->fd, &sb) == 0)
			plen += (size_t)snprintf(params + plen, sizeof(params) - plen, " SIZE=%lld",
						 (long long)sb.st_size + (long long)strlen(j->headers));
	}
	if (need_utf8)
		snprintf(params + plen, sizeof(params) - plen, " SMTPUTF8");

	stage = "sending MAIL FROM";
	if (cmd(&s, "MAIL FROM:<%s>%s", j->sender, params) < 0 || read_reply(&s, &r) < 0) {
		fail_open(&s, open, stage);
		goto out;
	}
	if (r->code / 100 != 2) {
		for (size_t i = 0; i < j->nrcpt; i++)
			set_reply(&j->rcpt[i], r);
		mxf_smtpreply_free(r);
		r = NULL;
		quit(&s);
		goto out;
	}
	mxf_smtpreply_free(r);
	r = NULL;

	stage = "sending RCPT TO";
	for (size_t i = 0; i < j->nrcpt; i++) {
		if (cmd(&s, "RCPT TO:<%s>", j->rcpt[i].addr) < 0 || read_reply(&s, &r) < 0) {
			fail_open(&s, open, stage);
			goto out;
		}
		if (r->code / 100 != 2) {
			set_reply(&j->rcpt[i], r);
			open[i] = false;
		} else {
			accepted++;
		}
		mxf_smtpreply_free(r);
		r = NULL;
	}
	if (accepted == 0) {
		quit(&s);
		goto out;
	}

	stage = "sending DATA";
	if (cmd(&s, "DATA") < 0 || read_reply(&s, &r) < 0) {
		fail_open(&s, open, stage);
		goto out;
	}
	if (r->code != 354) {
		for (size_t i = 0; i < j->nrcpt; i++) {
			if (!open[i])
				continue;
			if (r->code / 100 == 4 || r->code / 100 == 5) {
				set_reply(&j->rcpt[i], r);
			} else {
				char text[512];
				snprintf(text, sizeof(text), "protocol error: %s answered DATA with %d",
					 s.peer, r->code);
				set_result(&j->rcpt[i], 451, "4.5.0", text);
			}
		}
		mxf_smtpreply_free(r);
		r = NULL;
		quit(&s);
		goto out;
	}
	mxf_smtpreply_free(r);
	r = NULL;

	int rd_errno = 0;
	stage = "sending message body";
	if (send_body(&s, &rd_errno) < 0) {
		if (rd_errno) {
			char text[256];
			snprintf(text, sizeof(text), "cannot read message content: %s",
				 strerror(rd_errno));
			for (size_t i = 0; i < j->nrcpt; i++)
				if (open[i])
					set_result(&j->rcpt[i], 451, "4.3.0", text);
			/* Closing without the final dot makes the server
			 * discard the partial message. */
		} else {
			fail_open(&s, open, stage);
		}
		goto out;
	}
	/* A lost connection from here on may still have delivered the message:
	 * deferring then means a possible duplicate, never a loss. */
	stage = "waiting for the reply to end of data";
	if (read_reply(&s, &r) < 0) {
		fail_open(&s, open, stage);
		goto out;
	}
	for (size_t i = 0; i < j->nrcpt; i++)
		if (open[i])
			set_reply(&j->rcpt[i], r);
	mxf_smtpreply_free(r);
	r = NULL;
	quit(&s);
	goto out;

next_reply:
	mxf_info("%s: %s", j->qid, lasterr);
	s.err = IO_OK;
	quit(&s);
	goto out;
next_io:
	snprintf(lasterr, lasterrlen, "connect to %s: %s while %s", s.relay, io_what(s.err), stage);
	mxf_info("%s: %s", j->qid, lasterr);
out:
	mxf_smtpreply_free(r);
	mxf_smtpreply_parser_free(s.p);
	free(s.wbuf);
	free(open);
	if (s.fd >= 0)
		close(s.fd);
	return rc;
}

/* ---- host selection ---- */

void dlv_run(struct dlv_job *j)
{
	struct mxf_mx *mx = NULL;
	size_t nmx = 0;
	char why[256], text[768], lasterr[768] = "";
	bool last_dns = false, any_tempfail = false;
	int attempts = 0;

	snprintf(j->relay, sizeof(j->relay), "none");
	for (size_t i = 0; i < j->nrcpt; i++)
		set_result(&j->rcpt[i], 451, "4.3.0", "internal error: no result");

	if (!mxf_dns_name_valid(j->domain)) {
		snprintf(text, sizeof(text), "invalid domain name %s", j->domain);
		set_all(j, 550, "5.1.2", text);
		return;
	}
	int rc = mxf_dns_mx(j->dns, j->domain, &mx, &nmx, why, sizeof(why));
	if (rc < 0)
		mxf_fatal("%s: MX lookup: %s", j->qid, strerror(-rc));
	switch (rc) {
	case MXF_DNS_OK: {
		bool nullmx;
		nmx = mxf_dns_mx_order(mx, nmx, &nullmx, NULL, NULL);
		if (nullmx) {
			free(mx);
			set_all(j, 556, "5.1.10", "Recipient address has null MX");
			return;
		}
		break;
	}
	case MXF_DNS_NODATA:
		/* No MX: the domain itself is the implicit MX (RFC 5321 §5.1). */
		if (!(mx = calloc(1, sizeof(*mx))))
			mxf_fatal("out of memory");
		snprintf(mx->host, sizeof(mx->host), "%s", j->domain);
		nmx = 1;
		break;
	case MXF_DNS_NXDOMAIN:
		snprintf(text, sizeof(text), "domain %s not found", j->domain);
		set_all(j, 550, "5.1.2", text);
		return;
	default:
		snprintf(text, sizeof(text), "DNS lookup failed for %s (%s)", j->domain, why);
		set_all(j, 451, "4.4.3", text);
		return;
	}

	for (size_t h = 0; h < nmx && attempts < MAX_CONNECT_ATTEMPTS; h++) {
		struct mxf_dns_addr addrs[2 * MXF_DNS_ADDR_MAX];
		size_t na = 0, n;
		char why6[128] = "", why4[128] = "";
		/* IPv6 first, then IPv4. */
		int r6 = mxf_dns_addrs(j->dns, mx[h].host, AF_INET6, addrs, MXF_DNS_ADDR_MAX, &n, why6,
				       sizeof(why6));
		if (r6 == MXF_DNS_OK)
			na += n;
		int r4 = mxf_dns_addrs(j->dns, mx[h].host, AF_INET, addrs + na, MXF_DNS_ADDR_MAX, &n,
				       why4, sizeof(why4));
		if (r4 == MXF_DNS_OK)
			na += n;
		if (r6 < 0 || r4 < 0)
			mxf_fatal("%s: address lookup: %s", j->qid, strerror(-(r6 < 0 ? r6 : r4)));
		if (na == 0) {
			any_tempfail = any_tempfail || r6 == MXF_DNS_TEMPFAIL || r4 == MXF_DNS_TEMPFAIL;
			snprintf(lasterr, sizeof(lasterr), "no address for %s (%s; %s)", mx[h].host, why6,
				 why4);
			last_dns = true;
			mxf_info("%s: %s", j->qid, lasterr);
			continue;
		}
		for (size_t i = 0; i < na && attempts < MAX_CONNECT_ATTEMPTS; i++) {
			attempts++;
			last_dns = false;
			if (session(j, mx[h].host, &addrs[i], lasterr, sizeof(lasterr)) == S_DONE) {
				free(mx);
				return;
			}
		}
	}
	free(mx);
	if (last_dns && attempts == 0 && !any_tempfail && rc == MXF_DNS_NODATA) {
		/* Neither MX nor address records: nothing will ever take it. */
		snprintf(text, sizeof(text), "domain %s has no MX or address records", j->domain);
		set_all(j, 550, "5.4.4", text);
		return;
	}
	set_all(j, 451, last_dns ? "4.4.3" : "4.4.1", lasterr);
}
