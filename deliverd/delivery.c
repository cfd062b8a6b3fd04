#include "delivery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mime7bit.h"
#include "sign.h"
#include "smtpreply.h"

/* At most this many connection attempts per job, over all hosts and
 * addresses: a domain listing many dead hosts must not hold a worker for an
 * hour (Postfix's smtp_mx_address_limit plays the same role). */
#define MAX_CONNECT_ATTEMPTS 10
#define IOBUF 65536
/* A cached connection older than this is closed rather than reused (bounds
 * how long one TCP session lives; Postfix's smtp_connection_reuse_time_limit). */
#define CONN_MAX_AGE_MS (300 * 1000)
/* DNS cache bounds: entries in all, and the longest any answer is kept. */
#define DC_MAX 4096
#define DC_BUCKETS 256
#define DC_TTL_MAX 86400
/* QUIT is politeness: do not wait long for its answer. */
#define QUIT_TIMEOUT_MS 2000

static struct dlv_settings S;
static SSL_CTX *tls_ctx;

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

void dlv_set_result(struct dlv_rcpt *r, int code, const char *esc, const char *text)
{
	set_result(r, code, esc, text);
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

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the DATA stream ---- */

size_t dlv_stuff(struct dlv_stuffer *s, const char *in, size_t len, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		/* Inside a line, up to its CR or LF: copied as a block (the bulk
		 * of a message; found with memchr in a bounded window, so that
		 * a file without line ends stays linear). */
		if (!s->cr && in[i] != '\r' && in[i] != '\n') {
			size_t n = len - i < 4096 ? len - i : 4096;
			const char *lf = memchr(in + i, '\n', n);
			size_t run = lf ? (size_t)(lf - (in + i)) : n;
			const char *cr = memchr(in + i, '\r', run);
			if (cr)
				run = (size_t)(cr - (in + i));
			if (s->bol && in[i] == '.')
				out[o++] = '.'; /* RFC 5321 §4.5.2 */
			memcpy(out + o, in + i, run);
			o += run;
			i += run - 1;
			s->bol = 0;
			continue;
		}
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

/* ---- DNS cache ----
 *
 * MX and address answers, shared by the workers and kept for their TTL
 * (negative answers for their RFC 2308 TTL; temporary failures not at all).
 * The lock is held only to look up or insert, never across a query: two
 * workers asking for the same name at once both ask the server, which is
 * cheaper than making one wait on the other's slow answer. */

enum { DC_MX, DC_A, DC_AAAA };

struct dce {
	struct dce *next;
	int type;
	char name[MXF_DNS_NAME_MAX + 1];
	long long expires;
	int rc;
	char why[128];
	size_t n;
	void *data; /* struct mxf_mx[n] or struct mxf_dns_addr[n] */
};

static pthread_mutex_t dc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dce *dc_tab[DC_BUCKETS];
static size_t dc_count;

static unsigned dc_hash(int type, const char *name)
{
	unsigned h = 2166136261u ^ (unsigned)type;
	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	return h % DC_BUCKETS;
}

static void dce_free(struct dce *e)
{
	free(e->data);
	free(e);
}

/* Copies a live entry out; false when there is none. */
static bool dc_get(int type, const char *name, int *rc, void **data, size_t elem, size_t *n,
		   char *why, size_t whylen)
{
	bool hit = false;
	long long now = now_ms();
	pthread_mutex_lock(&dc_lock);
	for (struct dce **pp = &dc_tab[dc_hash(type, name)], *e; (e = *pp);) {
		if (e->expires <= now) {
			*pp = e->next;
			dce_free(e);
			dc_count--;
			continue;
		}
		if (e->type == type && strcmp(e->name, name) == 0) {
			void *c = NULL;
			if (e->n && !(c = malloc(e->n * elem)))
				mxf_fatal("out of memory");
			if (e->n)
				memcpy(c, e->data, e->n * elem);
			*data = c;
			*n = e->n;
			*rc = e->rc;
			if (why && whylen)
				snprintf(why, whylen, "%s", e->why);
			hit = true;
			break;
		}
		pp = &e->next;
	}
	pthread_mutex_unlock(&dc_lock);
	return hit;
}

static void dc_put(int type, const char *name, uint32_t ttl, int rc, const void *data,
		   size_t elem, size_t n, const char *why)
{
	if (ttl == 0 || rc < 0 || rc == MXF_DNS_TEMPFAIL)
		return;
	if (ttl > DC_TTL_MAX)
		ttl = DC_TTL_MAX;
	struct dce *e = calloc(1, sizeof(*e));
	if (!e || (n && !(e->data = malloc(n * elem))))
		mxf_fatal("out of memory");
	e->type = type;
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->expires = now_ms() + (long long)ttl * 1000;
	e->rc = rc;
	snprintf(e->why, sizeof(e->why), "%s", why ? why : "");
	e->n = n;
	if (n)
		memcpy(e->data, data, n * elem);
	pthread_mutex_lock(&dc_lock);
	if (dc_count >= DC_MAX) {
		/* Full: start over rather than track ages; a cache miss costs
		 * one query. */
		for (size_t b = 0; b < DC_BUCKETS; b++)
			while (dc_tab[b]) {
				struct dce *x = dc_tab[b];
				dc_tab[b] = x->next;
				dce_free(x);
			}
		dc_count = 0;
	}
	unsigned h = dc_hash(type, name);
	e->next = dc_tab[h];
	dc_tab[h] = e;
	dc_count++;
	pthread_mutex_unlock(&dc_lock);
}

static int cached_mx(struct mxf_dns *d, const char *domain, struct mxf_mx **mx, size_t *n,
		     char *why, size_t whylen)
{
	int rc;
	void *data = NULL;
	if (dc_get(DC_MX, domain, &rc, &data, sizeof(**mx), n, why, whylen)) {
		*mx = data;
		return rc;
	}
	rc = mxf_dns_mx(d, domain, mx, n, why, whylen);
	if (rc >= 0)
		dc_put(DC_MX, domain, mxf_dns_last_ttl(d), rc, *mx, sizeof(**mx), *n,
		       rc == MXF_DNS_OK ? NULL : why);
	return rc;
}

static int cached_addrs(struct mxf_dns *d, const char *host, int family, struct mxf_dns_addr *out,
			size_t cap, size_t *n, char *why, size_t whylen)
{
	int rc, type = family == AF_INET6 ? DC_AAAA : DC_A;
	void *data = NULL;
	size_t got;
	if (dc_get(type, host, &rc, &data, sizeof(*out), &got, why, whylen)) {
		*n = got < cap ? got : cap;
		if (*n)
			memcpy(out, data, *n * sizeof(*out));
		free(data);
		return rc;
	}
	rc = mxf_dns_addrs(d, host, family, out, cap, n, why, whylen);
	if (rc >= 0)
		dc_put(type, host, mxf_dns_last_ttl(d), rc, out, sizeof(*out),
		       rc == MXF_DNS_OK ? *n : 0, rc == MXF_DNS_OK ? NULL : why);
	return rc;
}

/* ---- connections ---- */

enum io_err { IO_OK = 0, IO_LOST, IO_TIMEOUT, IO_PROTO, IO_LOCAL, IO_TLS };

struct conn {
	struct conn *next; /* in the idle cache */
	int fd;
	SSL *ssl;
	struct mxf_smtpreply_parser *p;
	char dest[DLV_DEST_SIZE];
	char host[MXF_DNS_NAME_MAX + 1];
	char addr[INET6_ADDRSTRLEN];
	int family;
	unsigned port;
	char peer[DLV_RELAY_SIZE];  /* host[addr] */
	char relay[DLV_RELAY_SIZE]; /* host[addr]:port */
	/* EHLO keywords (of the last EHLO: after STARTTLS, the second one). */
	bool esmtp, pipelining, size, eightbitmime, smtputf8, starttls, dsn;
	unsigned long long size_max; /* 0: no limit announced */
	char tls[160];               /* "" or "TLSv1.3/CIPHER/verified=no" */
	long long born, idle_since;
	unsigned uses;
	enum io_err err; /* sticky: the connection is unusable once set */
	bool closing;    /* the server said 421 */
};

static void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	mxf_smtpreply_parser_free(c->p);
	free(c);
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

/* Waits as an SSL call that failed with code e asks; false on timeout or
 * any other error (c->err set). */
static bool ssl_wait(struct conn *c, int e, long long deadline)
{
	short ev;
	if (e == SSL_ERROR_WANT_READ)
		ev = POLLIN;
	else if (e == SSL_ERROR_WANT_WRITE)
		ev = POLLOUT;
	else {
		c->err = e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ? IO_LOST : IO_TLS;
		ERR_clear_error();
		return false;
	}
	int r = wait_fd(c->fd, ev, deadline);
	if (r == 0)
		c->err = IO_TIMEOUT;
	else if (r < 0)
		c->err = IO_LOST;
	return r > 0;
}

static int c_write(struct conn *c, const char *p, size_t n, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	if (c->err)
		return -1;
	while (n > 0) {
		if (c->ssl) {
			int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
			if (w > 0) {
				p += w;
				n -= (size_t)w;
			} else if (!ssl_wait(c, SSL_get_error(c->ssl, w), deadline)) {
				return -1;
			}
			continue;
		}
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(c->fd, POLLOUT, deadline);
			if (r == 0) {
				c->err = IO_TIMEOUT;
				return -1;
			}
			if (r > 0)
				continue;
		}
		c->err = IO_LOST;
		return -1;
	}
	return 0;
}

/* Reads some bytes before deadline: > 0, or -1 with c->err set. */
static ssize_t c_read(struct conn *c, char *buf, size_t cap, long long deadline)
{
	for (;;) {
		if (c->ssl) {
			int n = SSL_read(c->ssl, buf, (int)cap);
			if (n > 0)
				return n;
			if (!ssl_wait(c, SSL_get_error(c->ssl, n), deadline))
				return -1;
			continue;
		}
		ssize_t n = recv(c->fd, buf, cap, 0);
		if (n > 0)
			return n;
		if (n == 0) {
			c->err = IO_LOST;
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int w = wait_fd(c->fd, POLLIN, deadline);
			if (w > 0)
				continue;
			c->err = w == 0 ? IO_TIMEOUT : IO_LOST;
			return -1;
		}
		c->err = IO_LOST;
		return -1;
	}
}

static int cmd(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cmd(struct conn *c, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2) {
		c->err = IO_LOCAL;
		return -1;
	}
	memcpy(line + n, "\r\n", 2);
	return c_write(c, line, (size_t)n + 2, S.command_timeout_ms);
}

/* Reads one complete reply within timeout_ms. A 421 marks the connection
 * as closing (RFC 5321 §3.8): it is never reused. */
static int read_reply(struct conn *c, int timeout_ms, struct mxf_smtpreply **out)
{
	char buf[4096];
	long long deadline = now_ms() + timeout_ms;

	if (c->err)
		return -1;
	for (;;) {
		int r = mxf_smtpreply_next(c->p, out);
		if (r == 1) {
			if ((*out)->code == 421)
				c->closing = true;
			return 0;
		}
		if (r < 0) {
			c->err = r == -ENOMEM ? IO_LOCAL : IO_PROTO;
			return -1;
		}
		ssize_t n = c_read(c, buf, sizeof(buf), deadline);
		if (n < 0)
			return -1;
		if (mxf_smtpreply_feed(c->p, buf, (size_t)n) == -ENOMEM) {
			c->err = IO_LOCAL;
			return -1;
		}
		/* A protocol error surfaces from next() once the replies
		 * before it have been taken. */
	}
}

static const char *io_what(enum io_err e)
{
	switch (e) {
	case IO_TIMEOUT: return "timed out";
	case IO_PROTO: return "protocol error";
	case IO_LOCAL: return "local error";
	case IO_TLS: return "TLS failure";
	default: return "lost connection";
	}
}

/* Best effort and never blocking for long: the outcome is settled. */
static void conn_quit(struct conn *c, bool wait)
{
	struct mxf_smtpreply *r;
	if (!c->err && !c->closing) {
		if (!wait) {
			/* From the sweep (event loop thread): one try, no wait. */
			static const char q[] = "QUIT\r\n";
			if (c->ssl)
				(void)SSL_write(c->ssl, q, sizeof(q) - 1);
			else
				(void)send(c->fd, q, sizeof(q) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		} else if (c_write(c, "QUIT\r\n", 6, QUIT_TIMEOUT_MS) == 0 &&
			   read_reply(c, QUIT_TIMEOUT_MS, &r) == 0) {
			mxf_smtpreply_free(r);
		}
	}
	if (c->ssl)
		(void)SSL_shutdown(c->ssl);
	ERR_clear_error();
	conn_free(c);
}

/* ---- the idle-connection cache ----
 *
 * After a transaction a healthy connection waits here, keyed by destination,
 * for the next message to the same destination (reuse: far fewer TCP and
 * TLS handshakes for a burst of mail to one domain). Bounded per destination
 * and in all; the oldest idle one makes room. */

static pthread_mutex_t cc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *cc_head;
static unsigned cc_count;

static bool cc_expired(const struct conn *c, long long now)
{
	return now - c->idle_since >= S.cache_time_ms || now - c->born >= CONN_MAX_AGE_MS;
}

/* Walks the cache: closes what has expired and, with dest, takes the first
 * live connection to it. */
static struct conn *cc_walk(const char *dest)
{
	struct conn *found = NULL, *dead = NULL;
	long long now = now_ms();
	pthread_mutex_lock(&cc_lock);
	for (struct conn **pp = &cc_head, *c; (c = *pp);) {
		if (cc_expired(c, now)) {
			*pp = c->next;
			c->next = dead;
			dead = c;
			cc_count--;
			continue;
		}
		if (dest && !found && strcmp(c->dest, dest) == 0) {
			*pp = c->next;
			c->next = NULL;
			found = c;
			cc_count--;
			continue;
		}
		pp = &c->next;
	}
	pthread_mutex_unlock(&cc_lock);
	while (dead) {
		struct conn *n = dead->next;
		conn_quit(dead, false);
		dead = n;
	}
	return found;
}

static void cc_put(struct conn *c)
{
	struct conn *evict = NULL;
	long long now = now_ms();
	unsigned same = 0;

	c->idle_since = now;
	if (S.cache_time_ms <= 0 || S.cache_per_dest == 0 || S.cache_total == 0 ||
	    cc_expired(c, now)) {
		conn_quit(c, true);
		return;
	}
	pthread_mutex_lock(&cc_lock);
	struct conn **oldest = NULL;
	for (struct conn **pp = &cc_head; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->dest, c->dest) == 0)
			same++;
		oldest = pp; /* the list is newest first: the last is oldest */
	}
	if (same >= S.cache_per_dest) {
		evict = c;
		c = NULL;
	} else if (cc_count >= S.cache_total && oldest) {
		evict = *oldest;
		*oldest = evict->next;
		cc_count--;
	}
	if (c) {
		c->next = cc_head;
		cc_head = c;
		cc_count++;
	}
	pthread_mutex_unlock(&cc_lock);
	if (evict)
		conn_quit(evict, true);
}

void dlv_cache_sweep(void)
{
	cc_walk(NULL);
}

/* ---- opening a session: connect, greeting, EHLO, STARTTLS ---- */

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
	/* Commands and the body leave in as few writes as the protocol
	 * allows; a write that still follows an unanswered one (the body
	 * after a large buffer, a TLS record) must not wait for an ACK. */
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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

static void parse_ehlo(struct conn *c, const struct mxf_smtpreply *r)
{
	c->esmtp = true;
	c->pipelining = c->size = c->eightbitmime = c->smtputf8 = c->starttls = c->dsn = false;
	c->size_max = 0;
	for (size_t i = 1; i < r->nlines; i++) {
		const char *kw = r->lines[i];
		size_t kl = strcspn(kw, " ");
#define KW(s) (kl == sizeof(s) - 1 && strncasecmp(kw, s, kl) == 0)
		if (KW("SIZE")) {
			c->size = true;
			if (kw[kl] == ' ') {
				char *end;
				unsigned long long v = strtoull(kw + kl + 1, &end, 10);
				if (end != kw + kl + 1 && *end == '\0')
					c->size_max = v;
			}
		} else if (KW("PIPELINING")) {
			c->pipelining = true;
		} else if (KW("8BITMIME")) {
			c->eightbitmime = true;
		} else if (KW("SMTPUTF8")) {
			c->smtputf8 = true;
		} else if (KW("STARTTLS")) {
			c->starttls = true;
		} else if (KW("DSN")) {
			c->dsn = true;
		}
#undef KW
	}
}

/* EHLO, or HELO when the server does not know EHLO (RFC 5321 §3.2). */
static int hello(struct conn *c, char *lasterr, size_t lasterrlen)
{
	struct mxf_smtpreply *r = NULL;
	if (cmd(c, "EHLO %s", S.helo) < 0 || read_reply(c, S.command_timeout_ms, &r) < 0) {
		snprintf(lasterr, lasterrlen, "connect to %s: %s while sending EHLO", c->relay,
			 io_what(c->err));
		return -1;
	}
	if (r->code / 100 == 5) {
		mxf_smtpreply_free(r);
		r = NULL;
		if (cmd(c, "HELO %s", S.helo) < 0 || read_reply(c, S.command_timeout_ms, &r) < 0) {
			snprintf(lasterr, lasterrlen, "connect to %s: %s while sending HELO",
				 c->relay, io_what(c->err));
			return -1;
		}
		if (r->code / 100 != 2) {
			snprintf(lasterr, lasterrlen, "connect to %s: HELO: %d %s", c->relay, r->code,
				 r->text);
			mxf_smtpreply_free(r);
			return -1;
		}
		c->esmtp = false;
	} else if (r->code / 100 != 2) {
		snprintf(lasterr, lasterrlen, "connect to %s: EHLO: %d %s", c->relay, r->code, r->text);
		mxf_smtpreply_free(r);
		return -1;
	} else {
		parse_ehlo(c, r);
	}
	mxf_smtpreply_free(r);
	return 0;
}

static bool is_ip_literal(const char *h)
{
	unsigned char b[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, h, b) == 1 || inet_pton(AF_INET6, h, b) == 1;
}

/* STARTTLS and the handshake. Opportunistic (RFC 3207 without policy): the
 * certificate is checked and the result recorded, never enforced. Returns 0
 * (TLS up, or the server declined STARTTLS: go on in clear), -1 (connection
 * unusable: a handshake failure, c->err == IO_TLS when it was TLS itself). */
static int starttls(struct conn *c, const char *qid, char *lasterr, size_t lasterrlen)
{
	struct mxf_smtpreply *r = NULL;
	if (cmd(c, "STARTTLS") < 0 || read_reply(c, S.command_timeout_ms, &r) < 0) {
		snprintf(lasterr, lasterrlen, "connect to %s: %s while sending STARTTLS", c->relay,
			 io_what(c->err));
		return -1;
	}
	int code = r->code;
	mxf_smtpreply_free(r);
	if (code != 220)
		return 0;
	/* Anything the server sent after its 220 was injected in clear
	 * (CVE-2011-0411 style): the parser starts over. */
	mxf_smtpreply_parser_free(c->p);
	c->p = NULL;
	if (mxf_smtpreply_parser_new(&c->p) < 0)
		mxf_fatal("out of memory");
	if (!(c->ssl = SSL_new(tls_ctx)) || SSL_set_fd(c->ssl, c->fd) != 1)
		mxf_fatal("out of memory");
	if (!is_ip_literal(c->host)) {
		SSL_set_tlsext_host_name(c->ssl, c->host);
		SSL_set1_host(c->ssl, c->host);
	}
	long long deadline = now_ms() + S.command_timeout_ms;
	for (;;) {
		int rc = SSL_connect(c->ssl);
		if (rc == 1)
			break;
		int e = SSL_get_error(c->ssl, rc);
		unsigned long le = ERR_peek_error();
		if (!ssl_wait(c, e, deadline)) {
			char reason[160] = "handshake failed";
			if (le)
				ERR_error_string_n(le, reason, sizeof(reason));
			ERR_clear_error();
			if (c->err != IO_TIMEOUT)
				c->err = IO_TLS;
			snprintf(lasterr, lasterrlen, "connect to %s: TLS handshake: %s", c->relay,
				 c->err == IO_TIMEOUT ? "timed out" : reason);
			return -1;
		}
	}
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	long vr = SSL_get_verify_result(c->ssl);
	bool verified = cert && vr == X509_V_OK;
	X509_free(cert);
	snprintf(c->tls, sizeof(c->tls), "%s/%s/verified=%s", SSL_get_version(c->ssl),
		 SSL_get_cipher_name(c->ssl), verified ? "yes" : "no");
	mxf_info("%s: %s TLS connection established to %s: %s with cipher %s%s%s", qid,
		 verified ? "Verified" : "Unverified", c->relay, SSL_get_version(c->ssl),
		 SSL_get_cipher_name(c->ssl), verified ? "" : ", certificate: ",
		 verified ? "" : (cert ? X509_verify_cert_error_string(vr) : "none"));
	return 0;
}

enum open_rc { OPEN_OK, OPEN_NEXT, OPEN_RETRY_PLAIN };

/* Connects to one address and brings the session up to "ready for MAIL". */
static enum open_rc open_conn(struct dlv_job *j, const char *dest, const char *host,
			      const struct mxf_dns_addr *a, unsigned port, bool use_tls,
			      struct conn **out, char *lasterr, size_t lasterrlen)
{
	struct mxf_smtpreply *r = NULL;
	struct conn *c = calloc(1, sizeof(*c));
	if (!c || mxf_smtpreply_parser_new(&c->p) < 0)
		mxf_fatal("out of memory");
	c->fd = -1;
	snprintf(c->dest, sizeof(c->dest), "%s", dest);
	snprintf(c->host, sizeof(c->host), "%s", host);
	fmt_addr(a, c->addr, sizeof(c->addr));
	c->family = a->family;
	c->port = port;
	snprintf(c->peer, sizeof(c->peer), "%s[%s]", host, c->addr);
	snprintf(c->relay, sizeof(c->relay), "%s[%s]:%u", host, c->addr, port);
	snprintf(j->relay, sizeof(j->relay), "%s", c->relay);
	c->born = now_ms();

	c->fd = connect_to(a, port, S.connect_timeout_ms);
	if (c->fd < 0) {
		snprintf(lasterr, lasterrlen, "connect to %s: %s", c->relay,
			 c->fd == -ETIMEDOUT ? "Connection timed out" : strerror(-c->fd));
		goto next;
	}
	if (read_reply(c, S.greeting_timeout_ms, &r) < 0) {
		snprintf(lasterr, lasterrlen, "connect to %s: %s while reading the greeting",
			 c->relay, io_what(c->err));
		goto next;
	}
	if (r->code / 100 != 2) {
		/* 421 or 554 at the greeting: this host will not talk; the
		 * next one may (RFC 5321 §3.1, §5.1). */
		snprintf(lasterr, lasterrlen, "connect to %s: greeting: %d %s", c->relay, r->code,
			 r->text);
		mxf_smtpreply_free(r);
		goto next;
	}
	mxf_smtpreply_free(r);
	if (hello(c, lasterr, lasterrlen) < 0)
		goto next;
	if (use_tls && S.starttls && tls_ctx && c->esmtp && c->starttls) {
		if (starttls(c, j->qid, lasterr, lasterrlen) < 0) {
			bool tls_failed = c->err == IO_TLS;
			mxf_info("%s: %s", j->qid, lasterr);
			c->err = IO_LOST; /* no QUIT through a broken TLS layer */
			conn_quit(c, false);
			return tls_failed ? OPEN_RETRY_PLAIN : OPEN_NEXT;
		}
		if (c->ssl && hello(c, lasterr, lasterrlen) < 0)
			goto next;
	}
	*out = c;
	return OPEN_OK;
next:
	mxf_info("%s: %s", j->qid, lasterr);
	conn_quit(c, true);
	return OPEN_NEXT;
}

/* A reused connection: RSET proves it is alive and clears any state
 * (RFC 5321 §4.1.1.5) before the next transaction. A peer with PIPELINING
 * gets its RSET in the transaction's first write instead (transact). */
static bool conn_probe(struct conn *c)
{
	struct mxf_smtpreply *r = NULL;
	if (cmd(c, "RSET") < 0 || read_reply(c, S.command_timeout_ms, &r) < 0)
		return false;
	bool ok = r->code / 100 == 2;
	mxf_smtpreply_free(r);
	return ok;
}

/* ---- the message ---- */

struct body {
	int fd;
	const char *headers;
	size_t hlen;
	off_t fsize;
	bool eightbit;
	/* The 7-bit conversion, made once when the first peer without
	 * 8BITMIME needs it. */
	bool conv_tried;
	int conv_rc;
	char *conv;
	size_t convlen;
	/* DKIM/ARC header lines for the unconverted [0] and converted [1]
	 * form, made when the first transaction needs that form (NULL: none). */
	bool sig_done[2];
	char *sig[2];
};

static int body_scan(struct body *b)
{
	char buf[IOBUF];
	off_t off = 0;
	b->eightbit = mime7bit_is_8bit(b->headers, b->hlen);
	for (;;) {
		ssize_t n = pread(b->fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		if (!b->eightbit)
			b->eightbit = mime7bit_is_8bit(buf, (size_t)n);
		off += n;
	}
	b->fsize = off;
	return 0;
}

static int body_convert(struct body *b)
{
	if (b->conv_tried)
		return b->conv_rc;
	b->conv_tried = true;
	char *in = malloc(b->fsize ? (size_t)b->fsize : 1);
	if (!in)
		return b->conv_rc = -ENOMEM;
	off_t off = 0;
	while (off < b->fsize) {
		ssize_t n = pread(b->fd, in + off, (size_t)(b->fsize - off), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(in);
			return b->conv_rc = n < 0 ? -errno : -EIO;
		}
		off += n;
	}
	b->conv_rc = mime7bit_convert(in, (size_t)b->fsize, &b->conv, &b->convlen);
	free(in);
	/* RFC 6152: a peer without 8BITMIME must never get an 8-bit byte. What
	 * the converter could not make 7-bit (a part lying about its encoding,
	 * MIME nested past the parser's limit, ...) fails as unconvertible. */
	if (b->conv_rc == 0 && mime7bit_is_8bit(b->conv, b->convlen)) {
		free(b->conv);
		b->conv = NULL;
		b->convlen = 0;
		b->conv_rc = -EINVAL;
	}
	return b->conv_rc;
}

/* Output of send_body: stuffed pieces gathered into one buffer, written
 * when the next piece might not fit. A small message leaves in one write
 * with its final dot (each separate small write would also wait for the
 * peer's ACK of the previous one: Nagle against delayed ACK, 40 ms). */
struct bodyout {
	struct conn *c;
	struct dlv_stuffer st;
	char *buf;
	size_t len;
};
#define BODYOUT_SIZE (2 * IOBUF)

static int bo_flush(struct bodyout *o)
{
	int rc = o->len ? c_write(o->c, o->buf, o->len, S.data_block_timeout_ms) : 0;
	o->len = 0;
	return rc;
}

/* Stuffs n (<= IOBUF / 2 - 8) bytes: at most 2n + 2 out. */
static int bo_put(struct bodyout *o, const char *p, size_t n)
{
	if (o->len + 2 * n + 2 > BODYOUT_SIZE && bo_flush(o) < 0)
		return -1;
	o->len += dlv_stuff(&o->st, p, n, o->buf + o->len);
	return 0;
}

/* Sends the headers and the content (converted or not), dot-stuffed, and the
 * final dot, each write within the data block timeout. */
static int send_body(struct conn *c, const struct body *b, bool converted, int *rd_errno)
{
	struct bodyout o = {.c = c, .st = {.bol = 1, .cr = 0}};
	size_t chunk = IOBUF / 2 - 8;
	char *in = malloc(chunk);
	off_t off = 0;
	int rc = -1;

	o.buf = malloc(BODYOUT_SIZE);
	if (!in || !o.buf)
		mxf_fatal("out of memory");
	/* Signatures first. */
	const char *sig = b->sig[converted];
	for (size_t i = 0, sl = sig ? strlen(sig) : 0; i < sl; i += chunk)
		if (bo_put(&o, sig + i, sl - i < chunk ? sl - i : chunk) < 0)
			goto out;
	for (size_t i = 0; i < b->hlen; i += chunk)
		if (bo_put(&o, b->headers + i, b->hlen - i < chunk ? b->hlen - i : chunk) < 0)
			goto out;
	if (converted) {
		for (size_t i = 0; i < b->convlen; i += chunk)
			if (bo_put(&o, b->conv + i, b->convlen - i < chunk ? b->convlen - i : chunk) <
			    0)
				goto out;
	} else {
		for (;;) {
			ssize_t n = pread(b->fd, in, chunk, off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				/* Closing without the final dot makes the
				 * server discard the partial message. */
				*rd_errno = errno;
				c->err = IO_LOCAL;
				goto out;
			}
			if (n == 0)
				break;
			off += n;
			if (bo_put(&o, in, (size_t)n) < 0)
				goto out;
		}
	}
	/* The final dot: at most 5 bytes. */
	if (o.len + 8 > BODYOUT_SIZE && bo_flush(&o) < 0)
		goto out;
	o.len += dlv_stuff_finish(&o.st, o.buf + o.len);
	rc = bo_flush(&o);
out:
	free(in);
	free(o.buf);
	return rc;
}

/* ---- one transaction ---- */

static bool has_8bit(const char *s)
{
	return mime7bit_is_8bit(s, strlen(s));
}

/* A failed session mid-transaction: every recipient still open gets it. */
static void fail_open(struct dlv_job *j, struct conn *c, const bool *open, const char *stage)
{
	char text[512];
	const char *esc = c->err == IO_PROTO ? "4.5.0" : c->err == IO_LOCAL ? "4.3.0" : "4.4.2";
	switch (c->err) {
	case IO_TIMEOUT:
		snprintf(text, sizeof(text), "conversation with %s timed out while %s", c->peer, stage);
		break;
	case IO_PROTO:
		snprintf(text, sizeof(text), "protocol error from %s while %s", c->peer, stage);
		break;
	case IO_LOCAL:
		snprintf(text, sizeof(text), "local error while %s (talking to %s)", stage, c->peer);
		break;
	default:
		snprintf(text, sizeof(text), "lost connection with %s while %s", c->peer, stage);
		break;
	}
	for (size_t i = 0; i < j->nrcpt; i++)
		if (open[i])
			set_result(&j->rcpt[i], 451, esc, text);
}

struct outbuf {
	char *p;
	size_t len, cap;
};

static void ob_printf(struct outbuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ob_printf(struct outbuf *o, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			mxf_fatal("vsnprintf failed");
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		o->cap = (o->cap + (size_t)n + 1) * 2;
		if (!(o->p = realloc(o->p, o->cap)))
			mxf_fatal("out of memory");
	}
}

static void rcpt_cmd(struct outbuf *ob, const struct conn *c, const struct dlv_rcpt *r)
{
	ob_printf(ob, "RCPT TO:<%s>%s%s%s%s\r\n", r->addr, c->dsn && r->notify ? " NOTIFY=" : "",
		  c->dsn && r->notify ? r->notify : "", c->dsn && r->orcpt ? " ORCPT=" : "",
		  c->dsn && r->orcpt ? r->orcpt : "");
}

enum txn_rc { T_DONE, T_RETRY, T_SOFT };

/* One mail transaction on an open session. T_RETRY only for a reused
 * connection that failed before the server answered MAIL, or whose RSET was
 * refused: nothing was settled, so a fresh connection gets the message.
 * T_SOFT: the session failed temporarily as a whole (4xx to MAIL, or the
 * connection lost before the end of data was sent), so nothing was
 * delivered and the next MX host may take the message (RFC 5321 §5.1); the
 * results are set meanwhile. */
/* True when no recipient has a 2xx or 5xx result: nothing was settled. */
static bool accepted_none_final(const struct dlv_job *j)
{
	for (size_t i = 0; i < j->nrcpt; i++)
		if (j->rcpt[i].code / 100 != 4)
			return false;
	return true;
}

static enum txn_rc transact(struct dlv_job *j, struct conn *c, struct body *b, bool reused)
{
	struct mxf_smtpreply *r = NULL;
	struct outbuf ob = {0};
	bool *open = calloc(j->nrcpt, sizeof(*open));
	bool *settled = calloc(j->nrcpt, sizeof(*settled)); /* refused, result final */
	bool converted = false, mail_ok = false, got_mail_reply = false;
	size_t accepted = 0;
	const char *stage = "sending MAIL FROM";
	enum txn_rc rc = T_DONE;
	char text[512];

	if (!open || !settled)
		mxf_fatal("out of memory");
	c->uses++;
	j->peer_dsn = c->dsn;
	snprintf(j->relay, sizeof(j->relay), "%s", c->relay);
	snprintf(j->info, sizeof(j->info), "family=%s, tls=%s, conn_use=%u",
		 c->family == AF_INET6 ? "ipv6" : "ipv4", c->tls[0] ? c->tls : "none", c->uses);

	bool need_utf8 = has_8bit(j->sender);
	for (size_t i = 0; i < j->nrcpt; i++)
		need_utf8 = need_utf8 || has_8bit(j->rcpt[i].addr);
	if (need_utf8 && !c->smtputf8) {
		/* RFC 6531 §3.2: no downgrade of addresses; a permanent failure. */
		snprintf(text, sizeof(text), "SMTPUTF8 is required, but was not offered by host %s",
			 c->peer);
		set_all(j, 550, "5.6.7", text);
		goto out;
	}
	if (b->eightbit && !c->eightbitmime && !need_utf8) {
		int cr = body_convert(b);
		if (cr == -ENOMEM)
			mxf_fatal("out of memory");
		if (cr < 0) {
			snprintf(text, sizeof(text),
				 "8-bit message cannot be converted to 7-bit for host %s, which does "
				 "not offer 8BITMIME",
				 c->peer);
			set_all(j, 554, "5.6.3", text);
			goto out;
		}
		converted = true;
	}
	/* Signed over exactly what this peer gets: the converted form when
	 * it is the one sent (issue 7). */
	if (!b->sig_done[converted]) {
		b->sig[converted] = dsig_sign(j->qid, j->headers, j->dkim, j->ndkim, j->arc,
					      converted ? b->conv : NULL, b->convlen, b->fd,
					      b->fsize);
		b->sig_done[converted] = true;
	}
	unsigned long long size = b->hlen + (converted ? b->convlen : (size_t)b->fsize) +
				  (b->sig[converted] ? strlen(b->sig[converted]) : 0);
	if (c->size && c->size_max && size > c->size_max) {
		/* RFC 1870 §6: never send what the server said it will refuse. */
		snprintf(text, sizeof(text), "message size %llu exceeds size limit %llu of server %s",
			 size, c->size_max, c->peer);
		set_all(j, 552, "5.3.4", text);
		goto out;
	}

	char params[320] = "";
	size_t pl = 0;
	if (c->size)
		pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " SIZE=%llu", size);
	if (b->eightbit && !converted && c->eightbitmime)
		pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " BODY=8BITMIME");
	if (need_utf8)
		pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " SMTPUTF8");
	/* DSN requests travel on only to a server that offers DSN (RFC 3461
	 * §4): to any other, the request is simply not relayed. */
	if (c->dsn && j->ret)
		pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " RET=%s", j->ret);
	if (c->dsn && j->envid)
		snprintf(params + pl, sizeof(params) - pl, " ENVID=%s", j->envid);

	/* With PIPELINING, MAIL, every RCPT and DATA leave in one write
	 * (RFC 2920 §3.1: DATA ends the group); without it, one at a time.
	 * On a reused connection the RSET that checks it leads the group
	 * (RFC 2920 §3.1 allows RSET anywhere in one), saving a round trip. */
	bool pipe = c->pipelining, rset = pipe && reused;
	if (rset)
		ob_printf(&ob, "RSET\r\n");
	ob_printf(&ob, "MAIL FROM:<%s>%s\r\n", j->sender, params);
	if (pipe) {
		for (size_t i = 0; i < j->nrcpt; i++)
			rcpt_cmd(&ob, c, &j->rcpt[i]);
		ob_printf(&ob, "DATA\r\n");
	}
	if (c_write(c, ob.p, ob.len, S.command_timeout_ms) < 0)
		goto io_fail;
	if (rset) {
		if (read_reply(c, S.command_timeout_ms, &r) < 0)
			goto io_fail;
		bool rset_ok = r->code / 100 == 2;
		mxf_smtpreply_free(r);
		r = NULL;
		if (!rset_ok) {
			/* As a refused RSET probe: the connection is dropped
			 * and a fresh one gets the message. The server may be
			 * in DATA by now: no QUIT (it would be content), just
			 * the close, and with no end of data nothing is kept. */
			c->closing = true;
			rc = T_RETRY;
			goto out;
		}
	}
	if (read_reply(c, S.command_timeout_ms, &r) < 0)
		goto io_fail;
	got_mail_reply = true;
	mail_ok = r->code / 100 == 2;
	if (!mail_ok) {
		for (size_t i = 0; i < j->nrcpt; i++) {
			set_reply(&j->rcpt[i], r);
			settled[i] = true;
		}
		if (r->code / 100 == 4)
			rc = T_SOFT;
	}
	mxf_smtpreply_free(r);
	r = NULL;
	if (!mail_ok && !pipe)
		goto out;

	stage = "sending RCPT TO";
	for (size_t i = 0; i < j->nrcpt; i++) {
		if (!pipe) {
			ob.len = 0;
			rcpt_cmd(&ob, c, &j->rcpt[i]);
			if (c_write(c, ob.p, ob.len, S.command_timeout_ms) < 0)
				goto io_fail;
		}
		if (read_reply(c, S.command_timeout_ms, &r) < 0)
			goto io_fail;
		if (mail_ok) {
			if (r->code / 100 == 2) {
				open[i] = true;
				accepted++;
			} else {
				set_reply(&j->rcpt[i], r);
				settled[i] = true;
			}
		}
		mxf_smtpreply_free(r);
		r = NULL;
	}
	if (!pipe && accepted == 0)
		goto out;

	stage = "sending DATA";
	if (!pipe && cmd(c, "DATA") < 0)
		goto io_fail;
	if (read_reply(c, S.data_init_timeout_ms, &r) < 0)
		goto io_fail;
	if (accepted == 0) {
		/* Pipelined and nobody accepted: a server that still says 354
		 * gets an empty message ended at once (RFC 2920 §3.1). */
		if (r->code == 354) {
			mxf_smtpreply_free(r);
			r = NULL;
			if (c_write(c, ".\r\n", 3, S.data_block_timeout_ms) < 0 ||
			    read_reply(c, S.data_done_timeout_ms, &r) < 0)
				c->err = c->err ? c->err : IO_LOST;
		}
		goto out;
	}
	if (r->code != 354) {
		for (size_t i = 0; i < j->nrcpt; i++) {
			if (!open[i])
				continue;
			if (r->code / 100 == 4 || r->code / 100 == 5) {
				set_reply(&j->rcpt[i], r);
			} else {
				snprintf(text, sizeof(text), "protocol error: %s answered DATA with %d",
					 c->peer, r->code);
				set_result(&j->rcpt[i], 451, "4.5.0", text);
			}
		}
		goto out;
	}
	mxf_smtpreply_free(r);
	r = NULL;

	int rd_errno = 0;
	stage = "sending message body";
	if (send_body(c, b, converted, &rd_errno) < 0) {
		if (rd_errno) {
			snprintf(text, sizeof(text), "cannot read message content: %s",
				 strerror(rd_errno));
			for (size_t i = 0; i < j->nrcpt; i++)
				if (open[i])
					set_result(&j->rcpt[i], 451, "4.3.0", text);
			goto out;
		}
		goto io_fail;
	}
	/* A lost connection from here on may still have delivered the message:
	 * deferring then means a possible duplicate, never a loss. */
	stage = "waiting for the reply to end of data";
	if (read_reply(c, S.data_done_timeout_ms, &r) < 0)
		goto io_fail;
	for (size_t i = 0; i < j->nrcpt; i++)
		if (open[i])
			set_reply(&j->rcpt[i], r);
	goto out;

io_fail:
	if (reused && !got_mail_reply) {
		rc = T_RETRY;
		goto out;
	}
	/* Every recipient without a final answer of its own gets the failure. */
	for (size_t i = 0; i < j->nrcpt; i++)
		open[i] = !settled[i];
	fail_open(j, c, open, stage);
	/* Lost before the end of data went out: nothing was delivered here. */
	if (strcmp(stage, "waiting for the reply to end of data") != 0 && accepted_none_final(j))
		rc = T_SOFT;
out:
	mxf_smtpreply_free(r);
	free(ob.p);
	free(open);
	free(settled);
	return rc;
}

/* ---- where to connect ---- */

void dlv_dest_key(const struct dlv_job *j, char out[DLV_DEST_SIZE])
{
	if (j->nexthop && j->nexthop[0])
		snprintf(out, DLV_DEST_SIZE, "via:%s", j->nexthop);
	else if (S.relayhost && S.relayhost[0])
		snprintf(out, DLV_DEST_SIZE, "via:%s", S.relayhost);
	else
		snprintf(out, DLV_DEST_SIZE, "mx:%s", j->domain);
}

/* "host", "host:port", "[addr]", "[addr]:port" ("[IPv6:addr]" too). A
 * bracketed address is used as is; a host name is resolved to addresses,
 * without an MX lookup (it names the server itself). */
static int parse_override(const char *spec, char *host, size_t hostlen, bool *literal,
			  struct mxf_dns_addr *addr, unsigned *port)
{
	const char *end, *p;
	*port = S.port;
	*literal = false;
	if (spec[0] == '[') {
		if (!(end = strchr(spec, ']')))
			return -EINVAL;
		p = spec + 1;
		if (strncasecmp(p, "IPv6:", 5) == 0)
			p += 5;
		*literal = true;
	} else {
		p = spec;
		end = strchr(spec, ':');
		if (!end)
			end = spec + strlen(spec);
	}
	size_t hl = (size_t)(end - p);
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	memcpy(host, p, hl);
	host[hl] = '\0';
	const char *rest = end + (*literal ? 1 : 0);
	if (*rest == ':') {
		char *e;
		unsigned long v = strtoul(rest + 1, &e, 10);
		if (e == rest + 1 || *e || v < 1 || v > 65535)
			return -EINVAL;
		*port = (unsigned)v;
	} else if (*rest) {
		return -EINVAL;
	}
	if (*literal) {
		memset(addr, 0, sizeof(*addr));
		if (inet_pton(AF_INET6, host, &addr->a.v6) == 1)
			addr->family = AF_INET6;
		else if (inet_pton(AF_INET, host, &addr->a.v4) == 1)
			addr->family = AF_INET;
		else
			return -EINVAL;
	} else if (!mxf_dns_name_valid(host)) {
		return -EINVAL;
	}
	return 0;
}

/* The session is over for this job: keep the connection for the next
 * message when it is healthy, else close it. */
static void conn_release(struct conn *c)
{
	if (!c->err && !c->closing)
		cc_put(c);
	else
		conn_quit(c, true);
}

/* TRY_SOFT: the session failed as a whole but the recipients' results are
 * set (the host's own reply); the next host may still take the message. */
enum try_rc { TRY_DONE, TRY_NEXT, TRY_SOFT };

/* Tries one address (STARTTLS, and in clear after a TLS failure). */
static enum try_rc try_addr(struct dlv_job *j, struct body *b, const char *dest, const char *host,
			    const struct mxf_dns_addr *a, unsigned port, char *lasterr,
			    size_t lasterrlen)
{
	struct conn *c = NULL;
	enum open_rc o = open_conn(j, dest, host, a, port, true, &c, lasterr, lasterrlen);
	if (o == OPEN_RETRY_PLAIN) {
		/* Opportunistic TLS: a failed handshake must not stop the mail
		 * (RFC 7435); it goes in clear, and the log says so. */
		mxf_info("%s: TLS failed with %s; retrying without TLS", j->qid, j->relay);
		o = open_conn(j, dest, host, a, port, false, &c, lasterr, lasterrlen);
	}
	if (o != OPEN_OK)
		return TRY_NEXT;
	if (transact(j, c, b, false) == T_SOFT) {
		/* Try the next host; if none takes it, this is the reason. */
		const struct dlv_rcpt *r = &j->rcpt[0];
		snprintf(lasterr, lasterrlen, "host %s said: %d %s %s", c->peer, r->code, r->esc,
			 r->text ? r->text : "");
		mxf_info("%s: %s; trying the next host", j->qid, lasterr);
		conn_quit(c, true);
		return TRY_SOFT;
	}
	conn_release(c);
	return TRY_DONE;
}

/* The addresses of host, in the order to try: AAAA then A (prefer_ipv6),
 * or A then AAAA. *tempfail is set when a lookup failed temporarily. */
static size_t host_addrs(struct dlv_job *j, const char *host, struct mxf_dns_addr *out,
			 bool *tempfail, char *why, size_t whylen)
{
	int fam[2] = {AF_INET6, AF_INET};
	char w[2][128] = {"", ""};
	size_t na = 0, n;
	if (!S.prefer_ipv6) {
		fam[0] = AF_INET;
		fam[1] = AF_INET6;
	}
	for (int k = 0; k < 2; k++) {
		int r = cached_addrs(j->dns, host, fam[k], out + na, MXF_DNS_ADDR_MAX, &n, w[k],
				     sizeof(w[k]));
		if (r < 0)
			mxf_fatal("%s: address lookup: %s", j->qid, strerror(-r));
		if (r == MXF_DNS_OK)
			na += n;
		else if (r == MXF_DNS_TEMPFAIL)
			*tempfail = true;
	}
	snprintf(why, whylen, "%s; %s", w[0], w[1]);
	return na;
}

void dlv_run(struct dlv_job *j)
{
	struct mxf_mx *mx = NULL;
	size_t nmx = 0;
	char why[256], text[768], lasterr[768] = "", dest[DLV_DEST_SIZE];
	bool last_dns = false, any_tempfail = false, implicit = false, soft = false;
	int attempts = 0, rc = MXF_DNS_OK;
	unsigned port = S.port;
	struct body b = {.fd = j->fd, .headers = j->headers, .hlen = strlen(j->headers)};
	struct conn *c;

	snprintf(j->relay, sizeof(j->relay), "none");
	j->info[0] = '\0';
	j->peer_dsn = false;
	for (size_t i = 0; i < j->nrcpt; i++)
		set_result(&j->rcpt[i], 451, "4.3.0", "internal error: no result");
	int br = body_scan(&b);
	if (br < 0) {
		snprintf(text, sizeof(text), "cannot read message content: %s", strerror(-br));
		set_all(j, 451, "4.3.0", text);
		return;
	}

	/* A cached session to the same destination first. */
	dlv_dest_key(j, dest);
	while ((c = cc_walk(dest))) {
		if (!c->pipelining && !conn_probe(c)) {
			conn_quit(c, false);
			continue;
		}
		if (transact(j, c, &b, true) == T_RETRY) {
			conn_quit(c, false);
			for (size_t i = 0; i < j->nrcpt; i++)
				set_result(&j->rcpt[i], 451, "4.3.0", "internal error: no result");
			continue;
		}
		conn_release(c);
		goto done;
	}

	const char *override = j->nexthop && j->nexthop[0] ? j->nexthop
			       : S.relayhost && S.relayhost[0] ? S.relayhost
							       : NULL;
	if (override) {
		struct mxf_dns_addr lit;
		bool literal;
		if (!(mx = calloc(1, sizeof(*mx))))
			mxf_fatal("out of memory");
		if (parse_override(override, mx->host, sizeof(mx->host), &literal, &lit, &port) < 0) {
			snprintf(text, sizeof(text), "invalid transport destination %s", override);
			set_all(j, 451, "4.3.5", text);
			goto done;
		}
		if (literal) {
			if (try_addr(j, &b, dest, mx->host, &lit, port, lasterr, sizeof(lasterr)) ==
			    TRY_NEXT)
				set_all(j, 451, "4.4.1", lasterr);
			goto done;
		}
		nmx = 1;
	} else {
		if (!mxf_dns_name_valid(j->domain)) {
			snprintf(text, sizeof(text), "invalid domain name %s", j->domain);
			set_all(j, 550, "5.1.2", text);
			goto done;
		}
		rc = cached_mx(j->dns, j->domain, &mx, &nmx, why, sizeof(why));
		if (rc < 0)
			mxf_fatal("%s: MX lookup: %s", j->qid, strerror(-rc));
		switch (rc) {
		case MXF_DNS_OK: {
			bool nullmx;
			nmx = mxf_dns_mx_order(mx, nmx, &nullmx, NULL, NULL);
			if (nullmx) {
				set_all(j, 556, "5.1.10", "Recipient address has null MX");
				goto done;
			}
			break;
		}
		case MXF_DNS_NODATA:
			/* No MX: the domain itself is the implicit MX (RFC 5321 §5.1). */
			free(mx);
			if (!(mx = calloc(1, sizeof(*mx))))
				mxf_fatal("out of memory");
			snprintf(mx->host, sizeof(mx->host), "%s", j->domain);
			nmx = 1;
			implicit = true;
			break;
		case MXF_DNS_NXDOMAIN:
			snprintf(text, sizeof(text), "domain %s not found", j->domain);
			set_all(j, 550, "5.1.2", text);
			goto done;
		default:
			snprintf(text, sizeof(text), "DNS lookup failed for %s (%s)", j->domain, why);
			set_all(j, 451, "4.4.3", text);
			goto done;
		}
	}

	for (size_t h = 0; h < nmx && attempts < MAX_CONNECT_ATTEMPTS; h++) {
		struct mxf_dns_addr addrs[2 * MXF_DNS_ADDR_MAX];
		char w[300];
		bool tf = false;
		size_t na = host_addrs(j, mx[h].host, addrs, &tf, w, sizeof(w));
		any_tempfail = any_tempfail || tf;
		if (na == 0) {
			/* An MX host without addresses is skipped (RFC 5321 §5.1);
			 * when all are like that, the failure is temporary. */
			snprintf(lasterr, sizeof(lasterr), "no address for %s (%s)", mx[h].host, w);
			last_dns = true;
			mxf_info("%s: %s", j->qid, lasterr);
			continue;
		}
		for (size_t i = 0; i < na && attempts < MAX_CONNECT_ATTEMPTS; i++) {
			attempts++;
			last_dns = false;
			enum try_rc t = try_addr(j, &b, dest, mx[h].host, &addrs[i], port, lasterr,
						 sizeof(lasterr));
			if (t == TRY_DONE)
				goto done;
			soft = t == TRY_SOFT;
		}
	}
	if (last_dns && attempts == 0 && !any_tempfail && implicit) {
		/* Neither MX nor address records: nothing will ever take it. */
		snprintf(text, sizeof(text), "domain %s has no MX or address records", j->domain);
		set_all(j, 550, "5.4.4", text);
		goto done;
	}
	/* The last host that answered failed the session softly: its own
	 * replies stay the recipients' results. */
	if (!soft || last_dns)
		set_all(j, 451, last_dns ? "4.4.3" : "4.4.1", lasterr);
done:
	free(mx);
	free(b.conv);
	free(b.sig[0]);
	free(b.sig[1]);
}

int dlv_init(const struct dlv_settings *s, char *err, size_t errlen)
{
	S = *s;
	mime7bit_init();
	if (!S.starttls)
		return 0;
	tls_ctx = SSL_CTX_new(TLS_client_method());
	if (!tls_ctx) {
		snprintf(err, errlen, "cannot create the TLS client context");
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(tls_ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Opportunistic: verify to record the result, never to refuse. */
	SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
	/* Loaded now, before the chroot hides the file. */
	if (S.tls_ca_file && S.tls_ca_file[0] &&
	    SSL_CTX_load_verify_locations(tls_ctx, S.tls_ca_file, NULL) != 1) {
		mxf_warn("cannot load CA certificates from %s: no peer certificate will verify",
			 S.tls_ca_file);
		ERR_clear_error();
	}
	return 0;
}
