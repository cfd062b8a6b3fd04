/* One SMTP session: the protocol state machine on top of the sans-I/O
 * parsers in common/smtp.c.
 *
 * Ordering: commands are handled strictly one after the other. While a
 * command waits for the router (RCPT, DATA/BDAT, end of message) or for the
 * message's checks, no further input is looked at; it stays
 * buffered (and reading pauses once too much is buffered), so pipelined
 * commands can never overtake an answer.
 *
 * Memory: an idle session holds its struct and its libuv handles only; the
 * input buffer, reply buffer and queue-file buffer exist while in use, so
 * 10,000 idle sessions fit in a few tens of MiB. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "abuse.h"
#include "auth.h"
#include "address.h"
#include "dnsbl.h"
#include "log.h"
#include "queueid.h"
#include "smtp.h"
#include "smtpd.h"
#include "tls.h"

#define READ_CHUNK 65536
#define IN_MAX (256 * 1024) /* buffered unprocessed input before reading pauses */
#define WBUF_CAP 65536      /* message content collected before a file write */
#define OUT_FLUSH 65536     /* replies collected before a socket write */
#define OUT_MAX (256 * 1024) /* unsent replies before input processing pauses */
#define MAX_ERRORS 10
#define RCPT_OVERSHOOT_MAX 1000
#define CLOSE_GRACE_MS 10000
#define TEMPFAIL_TEXT "Error: temporary failure, try again later"
#define IP_BUCKETS 4096

enum wait_kind { W_NONE = 0, W_RCPT, W_OPEN, W_COMMIT, W_DNSBL, W_AUTH, W_ACCESS };

struct rcpt {
	char *addr, *orcpt;
	char notify[32];
};

/* Per client IP, and per network (/24, /64): concurrent sessions, and
 * sessions, messages and recipients in the current one-minute window. */
struct ipent {
	struct ipent *next;
	unsigned conns, rate, msgs, rcpts;
	uint64_t window;
	char ip[INET6_ADDRSTRLEN + 4];
};
enum { BY_IP, BY_NET };
static struct ipent *ip_table[2][IP_BUCKETS];

struct session {
	struct session *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_timer_t bltimer; /* the bounded wait for block lists at RCPT */
	uv_shutdown_t shutreq;
	int refs; /* open handles + an in-flight check (W_AUTH) */
	bool closing;
	bool reading;
	bool greeted;
	bool out_blocked; /* a client that pipelines but does not read */
	char ip[INET6_ADDRSTRLEN];
	struct ipent *ipent[2]; /* BY_IP, BY_NET */
	struct blstate *bl; /* NULL: no block lists */

	/* input: in[inoff..inlen) is not yet processed (plaintext) */
	char *in;
	size_t inoff, inlen, incap;
	struct mxf_smtp_lines lines;
	/* replies collected for one write (plaintext) */
	char *out;
	size_t outlen, outcap;
	struct mxf_tls *tls; /* after STARTTLS */

	enum wait_kind wait;
	uint64_t req;
	enum mxf_smtp_verb last_verb;

	bool helo_done, esmtp;
	bool bl_logged, bl_late_logged; /* the score, the lists that failed */
	bool bl_refused;     /* refused on its score once (counted in the history) */
	int score;           /* at the last RCPT verdict, hundredths */
	bool bad_pipelining; /* sent commands ahead before PIPELINING was offered */
	unsigned bad_commands;
	char helo[MXF_SMTP_LINE_MAX];
	/* the transaction */
	bool mail_done, smtputf8;
	char sender[MXF_ADDR_SIZE];
	char ret[8], envid[MXF_SMTP_ENVID_MAX + 1];
	struct rcpt *rcpt;
	size_t nrcpt;
	char pending_rcpt[MXF_ADDR_SIZE];
	char pending_notify[32];
	char *pending_orcpt;

	/* message content (DATA or BDAT) */
	bool in_data;   /* DATA: decoding up to the end marker */
	bool bdat;      /* this transaction uses BDAT */
	bool bdat_failed; /* a chunk was refused: later chunks are skipped */
	bool in_chunk;  /* reading a BDAT chunk into the file */
	bool chunk_last, open_for_bdat;
	uint64_t chunk_size, chunk_left;
	uint64_t skip_left; /* octets of a refused BDAT chunk still to discard */
	struct mxf_smtp_data data;
	char qid[MXF_QID_SIZE];
	bool open;    /* qid opened by the router, neither committed nor aborted */
	uint64_t gen; /* smtpd.link_gen when it was opened */
	int fd;
	/* A queue file the router opens ahead after a RCPT's 250 (F_OPEN_AHEAD):
	 * ahead_req is that RCPT's request while its OPEN_REPLY is due; pre_fd
	 * the file once it came and DATA (or the first BDAT) has not taken it. */
	uint64_t ahead_req;
	int pre_fd;
	char pre_qid[MXF_QID_SIZE];
	uint64_t pre_gen;
	char *wbuf;
	size_t wlen;
	uint64_t written;
	bool write_error, too_big;
	unsigned rcpt_overshoot; /* RCPTs refused past max_recipients */
	bool disk_full; /* the write error was ENOSPC/EDQUOT */
	struct auth *auth; /* issue 7: the checks of this message (NULL: off) */
	uint64_t data_deadline; /* loop ms the message's content must be in by; 0: none */

	/* The operator's allow/block lists (issue 11), asked of the router at
	 * connect and at MAIL (ACCESS_CHECK). */
	bool allowed;        /* client allow-listed: no block lists, score, greylisting */
	bool sender_allowed; /* this transaction's sender allow-listed: no greylisting */
	/* Some accepted recipient's domain only monitors DMARC (its own mode, or
	 * [auth] dmarc): then a p=reject failure is recorded, not refused. */
	bool dmarc_monitor;
	bool access_at_mail; /* the ACCESS_CHECK waited for is MAIL's, not the connect's */
	/* The router said at connect that no entry can change the verdict at
	 * MAIL (F_MAIL_FINAL): MAIL is answered without asking. A reload of the
	 * lists later in the session is not seen by it (doc/design.md). */
	bool mail_final;
	bool greet_due;      /* the greeting delay ended while the connect check ran */

	unsigned errors;
	unsigned cnt[MXF_SMTP_NVERBS], ok[MXF_SMTP_NVERBS];
};

static void process(struct session *s);
static void reject_note(struct session *s, int code, const char *escode, const char *text,
			const char *reason, const char *rcpt);
static void session_close(struct session *s, bool graceful);
static void read_toggle(struct session *s, bool on);
static void flush(struct session *s);

/* ---- small helpers ---- */

static char *esc(char *buf, size_t cap, const char *s)
{
	return mxf_log_escape(buf, cap, s, strlen(s));
}

static uint64_t now_ms(void)
{
	return uv_now(smtpd.loop);
}

static unsigned ip_hash(const char *ip)
{
	unsigned h = 2166136261u;
	for (; *ip; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % IP_BUCKETS;
}

static bool rate_limits(void)
{
	return smtpd.max_conn_rate || smtpd.max_conn_rate_net || smtpd.max_msg_rate ||
	       smtpd.max_msg_rate_net || smtpd.max_rcpt_rate || smtpd.max_rcpt_rate_net;
}

/* Drops entries that count nothing any more. */
static void ip_sweep(struct ipent **pp, uint64_t now)
{
	while (*pp) {
		struct ipent *e = *pp;
		if (e->conns == 0 && (!rate_limits() || now - e->window >= smtpd.rate_window_ms)) {
			*pp = e->next;
			free(e);
		} else {
			pp = &e->next;
		}
	}
}

static void ip_release(struct session *s)
{
	for (int k = BY_IP; k <= BY_NET; k++) {
		if (!s->ipent[k])
			continue;
		s->ipent[k]->conns--;
		ip_sweep(&ip_table[k][ip_hash(s->ipent[k]->ip)], now_ms());
		s->ipent[k] = NULL;
	}
}

/* The entry of key in table k (a new one if needed), its window current. */
static struct ipent *ip_entry(int k, const char *key)
{
	uint64_t now = now_ms();
	struct ipent **head = &ip_table[k][ip_hash(key)];
	ip_sweep(head, now);
	struct ipent *e = *head;
	while (e && strcmp(e->ip, key) != 0)
		e = e->next;
	if (!e) {
		if (!(e = calloc(1, sizeof(*e))))
			return NULL; /* no memory for bookkeeping: do not refuse */
		snprintf(e->ip, sizeof(e->ip), "%s", key);
		e->window = now;
		e->next = *head;
		*head = e;
	}
	if (now - e->window >= smtpd.rate_window_ms) {
		e->window = now;
		e->rate = e->msgs = e->rcpts = 0;
	}
	return e;
}

/* Counts a new session of s->ip and its network; false when past a limit. */
static bool ip_admit(struct session *s, const char **why)
{
	char net[INET6_ADDRSTRLEN + 4];
	const char *keys[2] = {s->ip, mxf_ip_prefix(s->ip, net, sizeof(net)) == 0 ? net : NULL};
	unsigned maxc[2] = {smtpd.max_conn_per_ip, smtpd.max_conn_per_net};
	unsigned maxr[2] = {smtpd.max_conn_rate, smtpd.max_conn_rate_net};
	static const char *const cwhy[2] = {"concurrency", "network concurrency"};
	static const char *const rwhy[2] = {"rate", "network rate"};
	bool ok = true;
	for (int k = BY_IP; k <= BY_NET; k++) {
		struct ipent *e = keys[k] ? ip_entry(k, keys[k]) : NULL;
		if (!e)
			continue;
		e->rate++;
		e->conns++;
		s->ipent[k] = e;
		if (ok && maxc[k] && e->conns > maxc[k]) {
			*why = cwhy[k];
			ok = false;
		}
		if (ok && maxr[k] && e->rate > maxr[k]) {
			*why = rwhy[k];
			ok = false;
		}
	}
	return ok;
}

/* Counts a message (MAIL) or a recipient (RCPT) of the session's address
 * and network; false when past the per-minute limit (why: which). */
static bool ip_count(struct session *s, bool rcpt, const char **why)
{
	unsigned max[2] = {rcpt ? smtpd.max_rcpt_rate : smtpd.max_msg_rate,
			   rcpt ? smtpd.max_rcpt_rate_net : smtpd.max_msg_rate_net};
	struct ipent *e[2];
	for (int k = BY_IP; k <= BY_NET; k++) {
		/* The session's entries, their window refreshed. */
		e[k] = s->ipent[k] ? ip_entry(k, s->ipent[k]->ip) : NULL;
		unsigned n = !e[k] ? 0 : rcpt ? e[k]->rcpts : e[k]->msgs;
		if (max[k] && n >= max[k]) {
			*why = k == BY_IP ? "address" : "network";
			return false; /* a refused one counts nowhere */
		}
	}
	for (int k = BY_IP; k <= BY_NET; k++)
		if (e[k])
			(*(rcpt ? &e[k]->rcpts : &e[k]->msgs))++;
	return true;
}

static void rcpts_clear(struct session *s)
{
	for (size_t i = 0; i < s->nrcpt; i++) {
		free(s->rcpt[i].addr);
		free(s->rcpt[i].orcpt);
	}
	s->nrcpt = 0;
}

static void maybe_free(struct session *s)
{
	if (s->refs > 0)
		return;
	if (s->fd >= 0)
		close(s->fd);
	if (s->pre_fd >= 0)
		close(s->pre_fd);
	rcpts_clear(s);
	free(s->rcpt);
	free(s->pending_orcpt);
	free(s->in);
	free(s->out);
	free(s->wbuf);
	auth_free(s->auth);
	mxf_tls_free(s->tls);
	free(s);
}

static void handle_closed(uv_handle_t *h)
{
	struct session *s = h->data;
	s->refs--;
	maybe_free(s);
}

static void close_handles(struct session *s)
{
	if (!uv_is_closing((uv_handle_t *)&s->tcp))
		uv_close((uv_handle_t *)&s->tcp, handle_closed);
	if (!uv_is_closing((uv_handle_t *)&s->timer))
		uv_close((uv_handle_t *)&s->timer, handle_closed);
	if (!uv_is_closing((uv_handle_t *)&s->bltimer))
		uv_close((uv_handle_t *)&s->bltimer, handle_closed);
}

static void drop_preopen(struct session *s);

static void reset_transaction(struct session *s)
{
	drop_preopen(s);
	s->mail_done = s->smtputf8 = false;
	s->sender[0] = '\0';
	s->ret[0] = s->envid[0] = '\0';
	rcpts_clear(s);
	s->qid[0] = '\0';
	s->open = false;
	s->in_data = s->bdat = s->bdat_failed = s->in_chunk = false;
	s->chunk_last = s->open_for_bdat = false;
	s->chunk_left = s->chunk_size = 0;
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	free(s->wbuf);
	s->wbuf = NULL;
	s->wlen = 0;
	s->written = 0;
	s->write_error = s->too_big = s->disk_full = false;
	if (s->wait != W_AUTH) {
		auth_free(s->auth);
		s->auth = NULL;
	}
	s->data_deadline = 0;
	s->sender_allowed = false;
	s->dmarc_monitor = false;
}

/* A message in progress (its content being read, written or committed):
 * on shutdown it may finish. */
static bool mid_message(const struct session *s)
{
	return s->in_data || s->in_chunk || s->open || s->wait == W_OPEN ||
	       s->wait == W_COMMIT || s->wait == W_AUTH;
}

/* ---- output ---- */

struct wreq {
	uv_write_t req;
	char *buf;
};

static bool out_full(const struct session *s)
{
	return s->outlen + s->tcp.write_queue_size > OUT_MAX;
}

static void on_written(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct session *s = req->handle->data;
	(void)status; /* a failed write shows up as a read error/EOF too */
	free(w->buf);
	free(w);
	if (!s->closing && s->out_blocked && !out_full(s)) {
		s->out_blocked = false;
		process(s);
	}
}

static void send_raw(struct session *s, char *buf, size_t len)
{
	struct wreq *w = malloc(sizeof(*w));
	if (!w) {
		free(buf);
		session_close(s, false);
		return;
	}
	w->buf = buf;
	uv_buf_t b = uv_buf_init(buf, (unsigned)len);
	if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_written) < 0) {
		free(buf);
		free(w);
		session_close(s, false);
	}
}

/* Sends the ciphertext OpenSSL produced (handshake records, encrypted replies). */
static void flush_tls(struct session *s)
{
	size_t n;
	while (s->tls && (n = mxf_tls_pending_out(s->tls)) > 0) {
		char *buf = malloc(n);
		if (!buf) {
			session_close(s, false);
			return;
		}
		n = mxf_tls_take_out(s->tls, buf, n);
		send_raw(s, buf, n);
		if (uv_is_closing((uv_handle_t *)&s->tcp))
			return;
	}
}

static void flush(struct session *s)
{
	if (uv_is_closing((uv_handle_t *)&s->tcp))
		return;
	if (s->outlen > 0) {
		if (s->tls) {
			if (mxf_tls_write(s->tls, s->out, s->outlen) < 0) {
				s->outlen = 0;
				session_close(s, false);
				return;
			}
			s->outlen = 0;
		} else {
			/* Replies nearly always fit the socket buffer: written at
			 * once, no write request and no poll change (libuv re-arms
			 * the descriptor after every queued write). uv_try_write
			 * refuses while older writes are queued, so order holds. */
			uv_buf_t b = uv_buf_init(s->out, (unsigned)s->outlen);
			int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
			if (n > 0 && (size_t)n == s->outlen) {
				s->outlen = 0;
			} else {
				/* The rest (or a failure, which the read side
				 * reports too) through a write request that takes
				 * the reply buffer itself. */
				size_t off = n > 0 ? (size_t)n : 0;
				char *buf = s->out;
				size_t len = s->outlen - off;
				if (off)
					memmove(buf, buf + off, len);
				s->out = NULL;
				s->outlen = s->outcap = 0;
				send_raw(s, buf, len);
			}
		}
	}
	if (s->tls)
		flush_tls(s);
}

static void put_line(struct session *s, int code, bool more, const char *escode, const char *text)
{
	char line[MXF_SMTP_LINE_MAX + 1];
	int n = mxf_smtp_reply_line(line, sizeof(line), code, more, escode, text);
	if (n < 0)
		abort(); /* our own codes: a bug */
	if (s->outlen + (size_t)n > s->outcap) {
		size_t ncap = s->outcap ? s->outcap * 2 : 1024;
		while (ncap < s->outlen + (size_t)n)
			ncap *= 2;
		char *nb = realloc(s->out, ncap);
		if (!nb) {
			session_close(s, false);
			return;
		}
		s->out = nb;
		s->outcap = ncap;
	}
	memcpy(s->out + s->outlen, line, (size_t)n);
	s->outlen += (size_t)n;
}

static void reply(struct session *s, int code, const char *escode, const char *text)
{
	if (s->closing)
		return;
	put_line(s, code, false, escode, text);
}

/* Every 4xx/5xx goes through here: a client that keeps failing is cut off
 * (hostile input is answered, counted, and disconnected after N). */
static void reply_err(struct session *s, int code, const char *escode, const char *text)
{
	if (s->closing)
		return;
	if (++s->errors > MAX_ERRORS) {
		mxf_info("too many errors after %s from unknown[%s]",
			 mxf_smtp_verb_name(s->last_verb), s->ip);
		reject_note(s, 421, "4.7.0", "Error: too many errors", "errors", NULL);
		put_line(s, 421, false, "4.7.0", "Error: too many errors");
		session_close(s, true);
		return;
	}
	put_line(s, code, false, escode, text);
}

/* ---- router requests ---- */

void smtpd_abort_qid(const char *qid)
{
	if (!smtpd.link)
		return;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_ABORT);
	if (m && mxf_ipc_put_str(m, F_QID, qid) == 0)
		mxf_routerlink_send(smtpd.link, m, -1); /* link down: the router's restart cleans tmp/ */
	mxf_ipc_msg_free(m);
}

/* Drops the open queue file (not yet committed). */
static void abort_open(struct session *s)
{
	if (!s->open)
		return;
	s->open = false;
	if (smtpd.link && s->gen == smtpd.link_gen && mxf_routerlink_up(smtpd.link))
		smtpd_abort_qid(s->qid);
}

/* Gives back a queue file opened ahead and not used. One still due comes
 * as a reply nobody waits for, which smtpd aborts (main.c). */
static void drop_preopen(struct session *s)
{
	s->ahead_req = 0;
	if (s->pre_fd < 0)
		return;
	close(s->pre_fd);
	s->pre_fd = -1;
	if (smtpd.link && s->pre_gen == smtpd.link_gen && mxf_routerlink_up(smtpd.link))
		smtpd_abort_qid(s->pre_qid);
}

static int send_request(struct session *s, struct mxf_ipc_msg *m, enum wait_kind w)
{
	int r = smtpd.link ? mxf_routerlink_send(smtpd.link, m, -1) : -ENOTCONN;
	mxf_ipc_msg_free(m);
	if (r < 0)
		return r;
	s->wait = w;
	return 0;
}

static int request_open(struct session *s)
{
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_OPEN);
	s->req = ++smtpd.next_req;
	if (!m || mxf_ipc_put_u64(m, F_REQ, s->req) < 0) {
		mxf_ipc_msg_free(m);
		return -ENOMEM;
	}
	return send_request(s, m, W_OPEN);
}

/* ---- commands ---- */

static void log_reject(struct session *s, const char *stage, int code, const char *escode,
		       const char *text, const char *to)
{
	char h[600], t[600], f[1400], r[1400];
	mxf_info("%s: reject: %s from unknown[%s]: %d %s %s; from=<%s>%s%s%s proto=%s helo=<%s>",
		 s->qid[0] ? s->qid : "NOQUEUE", stage, s->ip, code, escode,
		 esc(t, sizeof(t), text), esc(f, sizeof(f), s->sender), to ? " to=<" : "",
		 to ? esc(r, sizeof(r), to) : "", to ? ">" : "", s->esmtp ? "ESMTP" : "SMTP",
		 esc(h, sizeof(h), s->helo));
}

static int access_ask(struct session *s, bool at_mail);
static void mail_accept(struct session *s);
static void greet(struct session *s);
static void arm_timeout(struct session *s);

/* A refusal smtpd made itself goes to the router's activity log (the
 * router logs its own RCPT refusals). Fire and forget: no reply, and with
 * the router down the refusal is only in the mail log. reason is the
 * keyword stats count by. */
static void reject_note(struct session *s, int code, const char *escode, const char *text,
			const char *reason, const char *rcpt)
{
	if (!smtpd.link || !mxf_routerlink_up(smtpd.link))
		return;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_REJECT_LOG);
	int r = m ? 0 : -ENOMEM;
	if (r == 0)
		r = mxf_ipc_put_str(m, F_CLIENT_IP, s->ip);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_HELO, s->helo);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_SENDER, s->sender);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_RCPT, rcpt ? rcpt : "");
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_CODE, (uint64_t)code);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_ESC, escode ? escode : "");
	if (r == 0)
		r = mxf_ipc_put_str(m, F_TEXT, text ? text : "");
	if (r == 0)
		r = mxf_ipc_put_str(m, F_REASON, reason);
	if (r == 0)
		mxf_routerlink_send(smtpd.link, m, -1);
	mxf_ipc_msg_free(m);
}

static void do_helo(struct session *s, const struct mxf_smtp_cmd *c)
{
	reset_transaction(s);
	s->helo_done = true;
	s->esmtp = c->verb == MXF_SMTP_EHLO;
	snprintf(s->helo, sizeof(s->helo), "%s", c->arg);
	bl_lookup_domain(s->bl, s->helo);
	s->ok[c->verb]++;
	if (!s->esmtp) {
		reply(s, 250, NULL, smtpd.hostname);
		return;
	}
	char size[64];
	snprintf(size, sizeof(size), "SIZE %llu", (unsigned long long)smtpd.max_size);
	put_line(s, 250, true, NULL, smtpd.hostname);
	put_line(s, 250, true, NULL, "PIPELINING");
	put_line(s, 250, true, NULL, size);
	put_line(s, 250, true, NULL, "8BITMIME");
	put_line(s, 250, true, NULL, "SMTPUTF8");
	if (smtpd.tls && !s->tls)
		put_line(s, 250, true, NULL, "STARTTLS");
	put_line(s, 250, true, NULL, "CHUNKING");
	put_line(s, 250, true, NULL, "DSN");
	put_line(s, 250, false, NULL, "ENHANCEDSTATUSCODES");
}

static void do_mail(struct session *s, const struct mxf_smtp_cmd *c)
{
	if (!s->helo_done) {
		reply_err(s, 503, "5.5.1", "Error: send HELO/EHLO first");
		return;
	}
	if (s->mail_done) {
		reply_err(s, 503, "5.5.1", "Error: nested MAIL command");
		return;
	}
	if ((c->smtputf8 || c->ret[0] || c->envid[0]) && !s->esmtp) {
		reply_err(s, 555, "5.5.4", "Error: ESMTP parameters need EHLO");
		return;
	}
	if (c->utf8_path && !c->smtputf8) {
		reply_err(s, 553, "5.6.7", "Error: non-ASCII address needs SMTPUTF8");
		return;
	}
	if (c->has_size && c->size > smtpd.max_size) {
		reject_note(s, 552, "5.3.4", "Message size exceeds fixed limit", "size", NULL);
		reply_err(s, 552, "5.3.4", "Message size exceeds fixed limit");
		return;
	}
	const char *why;
	if (!ip_count(s, false, &why)) {
		/* Past the messages per minute: the session ends, the client
		 * comes back later (RFC 5321 4.2.3: 421 closes). */
		mxf_info("reject: MAIL from unknown[%s]: too many messages per minute (%s limit)",
			 s->ip, why);
		reject_note(s, 421, "4.7.0", "Error: too many messages from your address", "rate",
			    NULL);
		put_line(s, 421, false, "4.7.0", "Error: too many messages from your address, "
						 "try again later");
		session_close(s, true);
		return;
	}
	if (c->null_path) {
		s->sender[0] = '\0';
	} else if (mxf_addr_normalize(c->path, c->smtputf8 ? MXF_ADDR_UTF8 : 0, s->sender,
				      sizeof(s->sender)) < 0) {
		s->sender[0] = '\0';
		reply_err(s, 501, "5.1.7", "Bad sender address syntax");
		return;
	}
	s->smtputf8 = c->smtputf8;
	snprintf(s->ret, sizeof(s->ret), "%s", c->ret);
	snprintf(s->envid, sizeof(s->envid), "%s", c->envid);
	/* The sender and HELO against the operator's lists: the MAIL answer
	 * waits for the router (later input stays buffered, in order), unless
	 * the connect answer said that could not change anything. */
	if (!s->mail_final && access_ask(s, true) == 0)
		return;
	mail_accept(s);
}

/* MAIL passed every check. */
static void mail_accept(struct session *s)
{
	s->mail_done = true;
	if (strchr(s->sender, '@'))
		bl_lookup_domain(s->bl, strrchr(s->sender, '@') + 1);
	s->ok[MXF_SMTP_MAIL]++;
	reply(s, 250, "2.1.0", "Ok");
}

static void rcpt_to_router(struct session *s);

static void facts(const struct session *s, struct bl_facts *f)
{
	const char *at = strrchr(s->sender, '@');
	f->ip = s->ip;
	f->helo = s->helo;
	f->sdomain = at ? at + 1 : NULL;
	f->pipelining = s->bad_pipelining;
	f->bad_commands = s->bad_commands;
}

/* The block-list verdict, taken at the first RCPT (as Postfix's
 * reject_rbl_client does) and again at each later one: by then the HELO and
 * sender domains are known too, and the refusal is logged with the envelope. */
static void rcpt_decide(struct session *s)
{
	char reason[400], detail[400];
	struct bl_facts f;
	if (s->allowed) { /* the operator vouches for this client */
		rcpt_to_router(s);
		return;
	}
	facts(s, &f);
	int score = bl_verdict(s->bl, &f, reason, sizeof(reason), detail, sizeof(detail));
	int th = bl_reject_threshold();
	s->score = score;
	if (s->bl && !s->bl_late_logged) {
		char late[600];
		bl_unanswered(s->bl, late, sizeof(late));
		if (late[0]) {
			s->bl_late_logged = true;
			mxf_info("block lists: no usable answer for %s; unknown[%s] judged "
				 "without them",
				 late, s->ip);
		}
	}
	if (s->bl && !s->bl_logged) {
		s->bl_logged = true;
		mxf_info("reputation: unknown[%s] score %s%d.%02d (reject at %d.%02d): %s", s->ip,
			 score < 0 ? "-" : "", abs(score) / 100, abs(score) % 100, th / 100, th % 100,
			 detail[0] ? detail : "nothing");
	}
	if (s->bl && score >= th) {
		char text[480];
		snprintf(text, sizeof(text), "Service unavailable; %s",
			 reason[0] ? reason : "listed on block lists");
		log_reject(s, "RCPT", 554, "5.7.1", text, s->pending_rcpt);
		/* The keyword: the first list that named it ("dnsbl:ZONE",
		 * "rhsbl:ZONE"), else the score of the heuristics. */
		char kw[300] = "score";
		const char *u = strstr(reason, " blocked using ");
		if (u) {
			size_t zl = strcspn(u + 15, "; ");
			snprintf(kw, sizeof(kw), "%s:%.*s",
				 strncmp(reason, "client ", 7) == 0 ? "dnsbl" : "rhsbl", (int)zl,
				 u + 15);
		}
		reject_note(s, 554, "5.7.1", text, kw, s->pending_rcpt);
		if (!s->bl_refused) { /* one refusal per session in the history */
			s->bl_refused = true;
			bl_history_add(s->ip);
		}
		reply_err(s, 554, "5.7.1", text);
		return;
	}
	rcpt_to_router(s);
}

static void on_bl_wait_over(uv_timer_t *t)
{
	struct session *s = t->data;
	if (s->closing || s->wait != W_DNSBL)
		return;
	s->wait = W_NONE;
	rcpt_decide(s);
	process(s);
}

/* How long the verdict may still wait for lookups; 0: take it now. */
static uint64_t verdict_wait(const struct session *s)
{
	if (s->allowed)
		return 0;
	uint64_t wait = bl_wait_ms(s->bl);
	char reason[400], detail[400];
	struct bl_facts f;
	facts(s, &f);
	/* Already past the threshold and nothing can lower it: no need to
	 * wait for the slow lists. */
	if (wait > 0 && !bl_can_lower() &&
	    bl_verdict(s->bl, &f, reason, sizeof(reason), detail, sizeof(detail)) >=
		    bl_reject_threshold())
		wait = 0;
	return wait;
}

/* A lookup ended: a session waiting at RCPT goes on once it can decide. */
static void on_bl_ready(void *owner)
{
	struct session *s = owner;
	if (s->closing || s->wait != W_DNSBL || verdict_wait(s) > 0)
		return;
	uv_timer_stop(&s->bltimer);
	s->wait = W_NONE;
	rcpt_decide(s);
	process(s);
}

static void rcpt_gate(struct session *s)
{
	uint64_t wait = verdict_wait(s);
	if (wait == 0) {
		rcpt_decide(s);
		return;
	}
	s->wait = W_DNSBL; /* later input stays buffered, in order */
	uv_timer_start(&s->bltimer, on_bl_wait_over, wait, 0);
}

static void do_rcpt(struct session *s, const struct mxf_smtp_cmd *c)
{
	if (!s->mail_done) {
		reply_err(s, 503, "5.5.1", "Error: need MAIL command");
		return;
	}
	if (s->nrcpt >= smtpd.max_rcpt) {
		/* RFC 5321 4.5.3.1.10: the client sends the rest in another
		 * transaction. Not an error (that would end the session and its
		 * accepted recipients) until it overshoots absurdly, as Postfix's
		 * smtpd_recipient_overshoot_limit. */
		if (++s->rcpt_overshoot > RCPT_OVERSHOOT_MAX)
			reply_err(s, 452, "4.5.3", "Error: too many recipients");
		else
			reply(s, 452, "4.5.3", "Error: too many recipients");
		return;
	}
	const char *why;
	if (!ip_count(s, true, &why)) {
		/* 452: this recipient later; those already accepted go now. */
		mxf_info("reject: RCPT from unknown[%s]: too many recipients per minute (%s limit)",
			 s->ip, why);
		reject_note(s, 452, "4.5.3", "Error: too many recipients from your address", "rate",
			    NULL);
		reply(s, 452, "4.5.3", "Error: too many recipients from your address, try again "
				       "later");
		return;
	}
	if (c->utf8_path && !s->smtputf8) {
		reply_err(s, 553, "5.6.7", "Error: non-ASCII address needs SMTPUTF8");
		return;
	}
	char addr[MXF_ADDR_SIZE];
	if (c->postmaster) /* RFC 5321 4.5.1: the postmaster of this host */
		snprintf(addr, sizeof(addr), "postmaster@%s", smtpd.hostname);
	else
		snprintf(addr, sizeof(addr), "%s", c->path);
	/* U-label domains become A-labels here: one spelling everywhere. */
	if (mxf_addr_normalize(addr, s->smtputf8 ? MXF_ADDR_UTF8 : 0, s->pending_rcpt,
			       sizeof(s->pending_rcpt)) < 0) {
		reply_err(s, 501, "5.1.3", "Bad recipient address syntax");
		return;
	}
	snprintf(s->pending_notify, sizeof(s->pending_notify), "%s", c->notify);
	free(s->pending_orcpt);
	if (!(s->pending_orcpt = strdup(c->orcpt))) {
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}

	rcpt_gate(s);
}

/* The recipient passed the block lists: the router decides. */
static void rcpt_to_router(struct session *s)
{
	/* No queue file yet, none coming: ask for one ahead. */
	bool ahead = !s->ahead_req && s->pre_fd < 0 && !s->open;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_RCPT_CHECK);
	s->req = ++smtpd.next_req;
	if (!m || mxf_ipc_put_u64(m, F_REQ, s->req) < 0 ||
	    mxf_ipc_put_str(m, F_ADDR, s->pending_rcpt) < 0 ||
	    mxf_ipc_put_str(m, F_CLIENT_IP, s->ip) < 0 || mxf_ipc_put_str(m, F_HELO, s->helo) < 0 ||
	    mxf_ipc_put_str(m, F_SENDER, s->sender) < 0 ||
	    (ahead && mxf_ipc_put_u64(m, F_OPEN_AHEAD, 1) < 0)) {
		mxf_ipc_msg_free(m);
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	/* Router down: this recipient gets a 4xx, the session goes on. */
	if (send_request(s, m, W_RCPT) < 0)
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
	else if (ahead)
		s->ahead_req = s->req;
}

static int open_file(struct session *s);

static void do_data(struct session *s)
{
	if (!s->mail_done) {
		reply_err(s, 503, "5.5.1", "Error: need MAIL command");
		return;
	}
	if (s->bdat) {
		reply_err(s, 503, "5.5.1", "Error: DATA and BDAT cannot be mixed");
		return;
	}
	if (s->nrcpt == 0) {
		reply_err(s, 554, "5.5.1", "Error: no valid recipients");
		return;
	}
	s->open_for_bdat = false;
	if (open_file(s) < 0)
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
}

static void chunk_begin(struct session *s, const struct mxf_smtp_cmd *c)
{
	s->in_chunk = true;
	s->chunk_size = s->chunk_left = c->bdat_size;
	s->chunk_last = c->bdat_last;
}

static void do_bdat(struct session *s, const struct mxf_smtp_cmd *c)
{
	/* Whatever the answer, the chunk's octets follow the command and must
	 * be read past, or they would be taken for commands (RFC 3030 2). */
	const char *err = NULL, *escode = "5.5.1";
	int code = 503;
	if (!s->mail_done)
		err = "Error: need MAIL command";
	else if (s->nrcpt == 0)
		code = 554, err = "Error: no valid recipients";
	else if (s->bdat_failed)
		err = "Error: message already refused, send RSET";
	if (err) {
		s->skip_left = c->bdat_size;
		if (s->bdat_failed) {
			reply(s, code, escode, err); /* counted once, when it failed */
			if (c->bdat_last)
				reset_transaction(s);
		} else {
			reply_err(s, code, escode, err);
		}
		return;
	}
	s->bdat = true;
	s->chunk_size = c->bdat_size;
	s->chunk_last = c->bdat_last;
	if (s->open) {
		chunk_begin(s, c);
		return;
	}
	/* First chunk: the router opens the queue file. */
	s->open_for_bdat = true;
	if (open_file(s) < 0) {
		s->skip_left = c->bdat_size;
		s->bdat_failed = true;
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		if (c->bdat_last)
			reset_transaction(s);
	}
}

static void do_starttls(struct session *s)
{
	if (!smtpd.tls) {
		reply_err(s, 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (s->tls) {
		reply_err(s, 503, "5.5.1", "Error: TLS already active");
		return;
	}
	if (s->mail_done) {
		reply_err(s, 503, "5.5.1", "Error: STARTTLS in a mail transaction");
		return;
	}
	s->ok[MXF_SMTP_STARTTLS]++;
	reply(s, 220, "2.0.0", "Ready to start TLS");
	flush(s);
	if (s->closing)
		return;
	/* Anything the client sent after STARTTLS arrived in the clear and
	 * must not be taken as if it came through TLS (CVE-2011-0411). */
	if (s->inlen > s->inoff)
		mxf_info("discarding %zu bytes pipelined after STARTTLS from unknown[%s]",
			 s->inlen - s->inoff, s->ip);
	s->inoff = s->inlen = 0;
	mxf_smtp_lines_init(&s->lines);
	/* RFC 3207 4.2: forget everything learnt before the handshake. */
	reset_transaction(s);
	s->helo_done = s->esmtp = false;
	s->helo[0] = '\0';
	s->tls = mxf_tls_new(smtpd.tls, true);
	if (!s->tls) {
		mxf_err("out of memory starting TLS");
		session_close(s, false);
	}
}

static void handle_command(struct session *s, const char *line, size_t len)
{
	struct mxf_smtp_cmd c;
	int r = mxf_smtp_parse_cmd(line, len, &c);

	s->cnt[c.verb]++;
	s->last_verb = c.verb;
	/* Shutting down: only the chunks of a message under way. */
	if (smtpd.stopping && !(c.verb == MXF_SMTP_BDAT && s->open && r == 0)) {
		put_line(s, 421, false, "4.3.2", "Service shutting down, closing connection");
		session_close(s, true);
		return;
	}
	if (r < 0) {
		/* A refused BDAT whose size is known still brings its octets. */
		if (c.verb == MXF_SMTP_BDAT && c.bdat_size)
			s->skip_left = c.bdat_size;
		s->bad_commands++;
		reply_err(s, c.err.code, c.err.esc, c.err.text);
		return;
	}
	switch (c.verb) {
	case MXF_SMTP_EHLO:
	case MXF_SMTP_HELO:
		do_helo(s, &c);
		return;
	case MXF_SMTP_MAIL:
		do_mail(s, &c);
		return;
	case MXF_SMTP_RCPT:
		do_rcpt(s, &c);
		return;
	case MXF_SMTP_DATA:
		do_data(s);
		return;
	case MXF_SMTP_BDAT:
		do_bdat(s, &c);
		return;
	case MXF_SMTP_STARTTLS:
		do_starttls(s);
		return;
	case MXF_SMTP_RSET:
		abort_open(s);
		reset_transaction(s);
		s->ok[c.verb]++;
		reply(s, 250, "2.0.0", "Ok");
		return;
	case MXF_SMTP_NOOP:
		s->ok[c.verb]++;
		reply(s, 250, "2.0.0", "Ok");
		return;
	case MXF_SMTP_VRFY:
		s->ok[c.verb]++;
		reply(s, 252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
		return;
	case MXF_SMTP_HELP:
		s->ok[c.verb]++;
		reply(s, 214, "2.0.0",
		      "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS");
		return;
	case MXF_SMTP_QUIT:
		s->ok[c.verb]++;
		reply(s, 221, "2.0.0", "Bye");
		session_close(s, true);
		return;
	default:
		s->bad_commands++;
		reply_err(s, 500, "5.5.2", "Error: command not recognized");
		return;
	}
}

/* ---- message content ---- */

/* A refusal at the end of the message: nothing was committed; the
 * transaction ends. */
static void data_refuse(struct session *s, int code, const char *escode, const char *text)
{
	abort_open(s);
	log_reject(s, "END-OF-MESSAGE", code, escode, text, NULL);
	reset_transaction(s);
	reply_err(s, code, escode, text);
}

static bool refused(const struct session *s)
{
	return s->too_big || s->write_error || s->data.bare_cr || s->data.bare_lf ||
	       s->data.nul;
}

/* The reply for a message that cannot be accepted, or false. */
static bool refusal(const struct session *s, int *code, const char **escode, const char **text)
{
	/* A full disk is 452 4.3.1 wherever the space ran out (DESIGN.md §2). */
	if (s->write_error && s->disk_full)
		*code = 452, *escode = "4.3.1", *text = "Error: insufficient system storage";
	else if (s->write_error)
		*code = 451, *escode = "4.3.0", *text = "Error: queue file write error";
	else if (s->too_big)
		*code = 552, *escode = "5.3.4", *text = "Error: message file too big";
	else if (s->data.bare_cr || s->data.bare_lf)
		*code = 554, *escode = "5.6.0",
		*text = "Error: bare CR or LF in message (only CRLF ends a line)";
	else if (s->data.nul)
		*code = 554, *escode = "5.6.0", *text = "Error: NUL byte in message";
	else
		return false;
	return true;
}

/* The activity row of a refused message: its size or its content; our own
 * write errors are not the client's refusal. */
static void content_note(struct session *s, int code, const char *escode, const char *text)
{
	if (!s->write_error)
		reject_note(s, code, escode, text, s->too_big ? "size" : "content", NULL);
}

/* Writes wbuf into the queue file on the loop. It is a regular file: the
 * write goes into the page cache and costs microseconds, less than a hop
 * to the thread pool and back (a wake-up of the loop and a context switch
 * per WBUF_CAP). Durability is not ours to give here: the router fsyncs the
 * file before the 250. A short write leaves the rest in wbuf for the next
 * step; a failed one drops the rest of the content, and the message is
 * refused at its end (ENOSPC/EDQUOT 452, else 451). */
static void start_write(struct session *s)
{
	ssize_t n;
	do
		n = write(s->fd, s->wbuf, s->wlen);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		int e = n < 0 ? errno : 0;
		mxf_warn("%s: queue file write error: %s", s->qid,
			 e ? strerror(e) : "nothing written");
		s->write_error = true;
		s->disk_full = e == ENOSPC || e == EDQUOT;
		s->wlen = 0;
		return;
	}
	s->written += (uint64_t)n;
	memmove(s->wbuf, s->wbuf + n, s->wlen - (size_t)n);
	s->wlen -= (size_t)n;
}

static const char *proto_name(const struct session *s)
{
	/* RFC 3848 / RFC 6531 "with" keywords. */
	if (s->smtputf8)
		return s->tls ? "UTF8SMTPS" : "UTF8SMTP";
	if (!s->esmtp)
		return "SMTP";
	return s->tls ? "ESMTPS" : "ESMTP";
}

static void commit_message(struct session *s);
static void on_auth_done(void *arg);

/* Room left in the write buffer for decoded content: while the header
 * section is filtered, a held field may come out on top of the input. */
static size_t wspace(const struct session *s)
{
	size_t space = WBUF_CAP - s->wlen;
	if (s->auth && auth_in_header(s->auth))
		space = space > AUTH_FILTER_SLACK ? space - AUTH_FILTER_SLACK : 0;
	return space;
}

/* Decoded content just put at wbuf+wlen (o octets) as it goes to the file. */
static void take(struct session *s, size_t o)
{
	s->wlen += s->auth ? auth_filter(s->auth, s->wbuf + s->wlen, o) : o;
}

/* The content is complete: a header field the filter still holds. */
static void take_end(struct session *s)
{
	if (s->auth && !refused(s))
		s->wlen += auth_end(s->auth, s->wbuf + s->wlen);
}

static void finish_message(struct session *s)
{
	int code;
	const char *escode, *text;
	s->in_data = s->in_chunk = false;
	if (refusal(s, &code, &escode, &text)) {
		content_note(s, code, escode, text);
		data_refuse(s, code, escode, text);
		return;
	}
	if (!smtpd.link || s->gen != smtpd.link_gen || !mxf_routerlink_up(smtpd.link)) {
		data_refuse(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	/* Close our descriptor before COMMIT: once the router commits, nothing
	 * in this process can change the content any more. */
	int fd = s->fd;
	s->fd = -1;
	if (close(fd) < 0 && errno != EINTR) {
		mxf_warn("%s: queue file close error: %s", s->qid, strerror(errno));
		data_refuse(s, 451, "4.3.0", "Error: queue file write error");
		return;
	}
	/* Every decoded byte went to the file, was a forged header field we
	 * removed, or we refused above. */
	if (s->written + (s->auth ? auth_dropped_octets(s->auth) : 0) != s->data.size)
		abort();
	free(s->wbuf);
	s->wbuf = NULL;
	if (s->auth) {
		/* The checks decide before the router is asked to commit. */
		auth_set_dmarc_enforce(s->auth, !s->dmarc_monitor);
		if (auth_check(s->auth, on_auth_done, s) < 0) {
			data_refuse(s, 451, "4.3.0", TEMPFAIL_TEXT);
			return;
		}
		s->refs++;
		s->wait = W_AUTH;
		return;
	}
	commit_message(s);
}

/* The checks are done (issue 7): refuse, or commit with their header. */
static void on_auth_done(void *arg)
{
	struct session *s = arg;
	s->refs--;
	s->wait = W_NONE;
	if (s->closing) {
		abort_open(s);
		maybe_free(s);
		return;
	}
	const char *escode, *text;
	int code = auth_verdict(s->auth, &escode, &text);
	if (code) {
		data_refuse(s, code, escode, text);
	} else {
		commit_message(s);
	}
	process(s);
}

static void commit_message(struct session *s)
{

	/* RFC 5321 4.5.3.1.6 sets what we must accept, not a ceiling: longer
	 * lines are kept (deliverd folds or encodes them), and counted. */
	if (s->data.long_lines)
		mxf_info("%s: %llu line%s longer than 998 octets", s->qid,
			 (unsigned long long)s->data.long_lines, s->data.long_lines == 1 ? "" : "s");
	char tls[256] = "";
	if (s->tls)
		mxf_tls_describe(s->tls, tls, sizeof(tls));
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_COMMIT);
	s->req = ++smtpd.next_req;
	int r = m ? 0 : -ENOMEM;
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_REQ, s->req);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_QID, s->qid);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_SENDER, s->sender);
	for (size_t i = 0; r == 0 && i < s->nrcpt; i++) {
		r = mxf_ipc_put_str(m, F_RCPT, s->rcpt[i].addr);
		if (r == 0)
			r = mxf_ipc_put_str(m, F_DSN_NOTIFY, s->rcpt[i].notify);
		if (r == 0)
			r = mxf_ipc_put_str(m, F_ORCPT, s->rcpt[i].orcpt);
	}
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_SIZE, s->written);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_CLIENT_IP, s->ip);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_CLIENT_NAME, "unknown"); /* no PTR lookups yet */
	if (r == 0)
		r = mxf_ipc_put_str(m, F_HELO, s->helo);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_PROTO, proto_name(s));
	if (r == 0)
		r = mxf_ipc_put_str(m, F_RET, s->ret);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_ENVID, s->envid);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_TLS, tls);
	if (r == 0 && s->auth && auth_header(s->auth)[0])
		r = mxf_ipc_put_str(m, F_AUTH_RESULTS, auth_header(s->auth));
	if (r == 0 && s->auth && auth_msgid(s->auth)[0])
		r = mxf_ipc_put_str(m, F_MSGID, auth_msgid(s->auth));
	if (r == 0 && s->auth && auth_subject(s->auth)[0])
		r = mxf_ipc_put_str(m, F_SUBJECT, auth_subject(s->auth));
	if (r < 0) {
		mxf_ipc_msg_free(m);
		mxf_err("%s: cannot build COMMIT: %s", s->qid, strerror(-r));
		data_refuse(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	if (send_request(s, m, W_COMMIT) < 0) {
		data_refuse(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	/* From here the router owns the outcome: no ABORT any more. */
	s->open = false;
}

/* The end of a BDAT chunk (its octets are in the file). */
static void chunk_done(struct session *s)
{
	s->in_chunk = false;
	if (s->chunk_last) {
		mxf_smtp_chunk_end(&s->data);
		finish_message(s);
		return;
	}
	int code;
	const char *escode, *text;
	if (refusal(s, &code, &escode, &text)) {
		/* Refused now; the chunks the client pipelined after this one
		 * are read past until LAST or RSET. */
		abort_open(s);
		log_reject(s, "BDAT", code, escode, text, NULL);
		content_note(s, code, escode, text);
		if (s->fd >= 0) {
			close(s->fd);
			s->fd = -1;
		}
		s->bdat_failed = true;
		reply_err(s, code, escode, text);
		return;
	}
	char t[64];
	snprintf(t, sizeof(t), "Ok: %llu octets received", (unsigned long long)s->chunk_size);
	reply(s, 250, "2.0.0", t);
}

/* One step of DATA; false when it must wait for input or a write. */
static bool data_step(struct session *s)
{
	bool progress = false;
	if (!s->data.done && s->inoff < s->inlen) {
		size_t space = wspace(s);
		if (space >= 2) {
			size_t o;
			size_t used = mxf_smtp_data_feed(&s->data, s->in + s->inoff,
							 s->inlen - s->inoff, s->wbuf + s->wlen,
							 space, &o);
			s->inoff += used;
			progress = used > 0;
			if (s->data.size > smtpd.max_size)
				s->too_big = true;
			/* Content of a message that will be refused is read
			 * to the end marker and dropped. */
			if (!refused(s))
				take(s, o);
			else
				s->wlen = 0;
		}
	}
	if (s->data.done)
		take_end(s);
	if (s->wlen > 0 && (s->data.done || wspace(s) < 2)) {
		/* Written, partly (the rest next step), or failed (then the
		 * rest is read and dropped). */
		start_write(s);
		return true;
	}
	if (s->data.done) {
		finish_message(s);
		return true;
	}
	return progress;
}

/* One step of a BDAT chunk; false when it must wait for input or a write. */
static bool chunk_step(struct session *s)
{
	bool progress = false;
	size_t avail = s->inlen - s->inoff, space = wspace(s);
	size_t n = avail < space ? avail : space;
	if (n > s->chunk_left)
		n = (size_t)s->chunk_left;
	if (n > 0) {
		mxf_smtp_chunk_scan(&s->data, s->in + s->inoff, n);
		if (s->data.size > smtpd.max_size)
			s->too_big = true;
		if (!refused(s) && s->fd >= 0) {
			memcpy(s->wbuf + s->wlen, s->in + s->inoff, n);
			take(s, n);
		} else {
			s->wlen = 0;
		}
		s->inoff += n;
		s->chunk_left -= n;
		progress = true;
	}
	if (s->chunk_left == 0 && s->chunk_last && s->fd >= 0)
		take_end(s);
	if (s->wlen > 0 && (s->chunk_left == 0 || wspace(s) == 0)) {
		start_write(s);
		return true;
	}
	if (s->chunk_left == 0) {
		chunk_done(s);
		return true;
	}
	return progress;
}

/* ---- the input loop ---- */

static void process(struct session *s)
{
	while (!s->closing && s->wait == W_NONE) {
		/* Replies are bounded too: stop until the client reads. */
		if (s->outlen > OUT_FLUSH)
			flush(s);
		if (s->closing)
			return;
		if (out_full(s)) {
			s->out_blocked = true;
			break;
		}
		if (s->skip_left > 0) {
			size_t avail = s->inlen - s->inoff;
			size_t n = avail < s->skip_left ? avail : (size_t)s->skip_left;
			s->inoff += n;
			s->skip_left -= n;
			if (s->skip_left > 0)
				break;
			continue;
		}
		if (s->in_chunk) {
			if (!chunk_step(s))
				break;
			continue;
		}
		if (s->in_data) {
			if (!data_step(s))
				break;
			continue;
		}
		/* Shutting down and the message under way is answered. */
		if (smtpd.stopping && !mid_message(s)) {
			put_line(s, 421, false, "4.3.2", "Service shutting down, closing connection");
			session_close(s, true);
			return;
		}
		const char *p = s->in + s->inoff, *line;
		size_t n = s->inlen - s->inoff, ll;
		if (n == 0)
			break;
		enum mxf_smtp_line_result r = mxf_smtp_lines_next(&s->lines, &p, &n, &line, &ll);
		s->inoff = (size_t)(p - s->in);
		if (r == MXF_SMTP_LINE_MORE)
			break;
		if (r == MXF_SMTP_LINE_TOO_LONG)
			reply_err(s, 500, "5.5.2", "Error: line too long");
		else if (r == MXF_SMTP_LINE_BARE_LF)
			/* The line is refused; what follows is the next line. */
			reply_err(s, 500, "5.5.2", "Error: bare LF received (only CRLF ends a line)");
		else if (memchr(line, '\r', ll))
			/* A bare CR inside a command line: never a line end. */
			reply_err(s, 500, "5.5.2", "Error: bare CR received (only CRLF ends a line)");
		else {
			/* More input behind this command, and PIPELINING was not
			 * offered (no EHLO yet, or HELO): the client does not wait
			 * for replies, as spam engines do (RFC 2920 3.1). */
			if (!s->esmtp && s->inoff < s->inlen && !s->bad_pipelining) {
				s->bad_pipelining = true;
				mxf_info("improper command pipelining after %s from unknown[%s]",
					 s->helo_done ? "HELO" : "CONNECT", s->ip);
			}
			handle_command(s, line, ll);
		}
	}
	if (s->closing)
		return;
	if (s->inoff == s->inlen) {
		/* Idle sessions keep no input buffer. */
		free(s->in);
		s->in = NULL;
		s->inoff = s->inlen = s->incap = 0;
	}
	flush(s);
	if (s->closing)
		return;
	/* Back-pressure: while blocked, stop reading once enough is queued. */
	bool want = s->inlen - s->inoff < IN_MAX;
	if (want != s->reading)
		read_toggle(s, want);
}

/* ---- router replies ---- */

static void router_text(const struct mxf_ipc_view *v, uint64_t *code, const char **escode,
			const char **text)
{
	if (mxf_ipc_u64(v, F_CODE, 0, code) < 0)
		mxf_fatal("malformed reply from router: no code");
	*escode = mxf_ipc_str(v, F_ESC, 0);
	*text = mxf_ipc_str(v, F_TEXT, 0);
	if (!*text)
		*text = "";
}

static void on_rcpt_reply(struct session *s, const struct mxf_ipc_view *v)
{
	uint64_t code;
	const char *escode, *text;
	router_text(v, &code, &escode, &text);
	if (!mxf_smtp_reply_valid((long long)code, escode)) {
		mxf_warn("unusable RCPT reply from router: %llu", (unsigned long long)code);
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	if (code >= 400) {
		log_reject(s, "RCPT", (int)code, escode, text, s->pending_rcpt);
		reply_err(s, (int)code, escode, text);
		return;
	}
	/* Greylisting only recipients that exist: unknown ones get their 5xx
	 * at once. Not counted as an error: a message to many recipients
	 * gets one 451 each. */
	uint64_t left;
	if (s->bl && !s->allowed && !s->sender_allowed &&
	    bl_greylist(s->ip, s->sender, s->pending_rcpt, s->score, &left) == GL_DEFER) {
		char gt[128];
		snprintf(gt, sizeof(gt), "Greylisted, try again in %llu seconds",
			 (unsigned long long)(left + 999) / 1000);
		log_reject(s, "RCPT", 451, "4.7.1", gt, s->pending_rcpt);
		reject_note(s, 451, "4.7.1", gt, "greylist", s->pending_rcpt);
		reply(s, 451, "4.7.1", gt);
		return;
	}
	bool dup = false;
	for (size_t i = 0; i < s->nrcpt; i++)
		dup = dup || strcmp(s->rcpt[i].addr, s->pending_rcpt) == 0;
	if (!dup) {
		char *copy = strdup(s->pending_rcpt);
		struct rcpt *nr = copy ? realloc(s->rcpt, (s->nrcpt + 1) * sizeof(*nr)) : NULL;
		if (!nr) {
			free(copy);
			reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
			return;
		}
		s->rcpt = nr;
		struct rcpt *r = &s->rcpt[s->nrcpt++];
		r->addr = copy;
		r->orcpt = s->pending_orcpt;
		s->pending_orcpt = NULL;
		snprintf(r->notify, sizeof(r->notify), "%s", s->pending_notify);
		if (!r->orcpt && !(r->orcpt = strdup(""))) {
			s->nrcpt--;
			free(copy);
			reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
			return;
		}
	}
	/* One answer after DATA covers every recipient: refuse on DMARC only
	 * when all of their domains enforce it. */
	const char *dm = mxf_ipc_str(v, F_DMARC, 0);
	if (dm ? strcmp(dm, "enforce") != 0 : !auth_dmarc_enforced())
		s->dmarc_monitor = true;
	s->ok[MXF_SMTP_RCPT]++;
	reply(s, (int)code, escode, text);
}

/* The router's answer to OPEN (or a file opened ahead, code 250). */
static void opened(struct session *s, uint64_t code, const char *escode, const char *text,
		   const char *qid, int fd)
{
	bool bdat = s->open_for_bdat;
	if (code == 250) {
		if (fd < 0 || !qid || !mxf_qid_valid(qid)) {
			mxf_err("router OPEN_REPLY 250 without a descriptor or a valid queue id");
			if (qid && mxf_qid_valid(qid))
				smtpd_abort_qid(qid);
			if (fd >= 0)
				close(fd);
			code = 451, escode = "4.3.0", text = TEMPFAIL_TEXT;
			goto fail;
		}
		if (!s->wbuf && !(s->wbuf = malloc(WBUF_CAP))) {
			smtpd_abort_qid(qid);
			close(fd);
			code = 451, escode = "4.3.0", text = TEMPFAIL_TEXT;
			goto fail;
		}
		char h[600];
		snprintf(s->qid, sizeof(s->qid), "%s", qid);
		s->open = true;
		s->gen = smtpd.link_gen;
		s->fd = fd;
		s->wlen = 0;
		s->written = 0;
		s->write_error = s->too_big = s->disk_full = false;
		mxf_smtp_data_init(&s->data);
		auth_free(s->auth);
		s->auth = NULL;
		if (auth_enabled() && !(s->auth = auth_new(qid, s->ip, s->helo, s->sender))) {
			smtpd_abort_qid(qid);
			s->open = false;
			close(fd);
			s->fd = -1;
			code = 451, escode = "4.3.0", text = TEMPFAIL_TEXT;
			goto fail;
		}
		mxf_info("%s: client=unknown[%s], helo=%s", s->qid, s->ip,
			 esc(h, sizeof(h), s->helo));
		/* From the 354 (or the first chunk) the whole content has
		 * data_timeout: each read re-arms the command timeout, so without
		 * a total a client sending a byte a second holds the session and
		 * its queue file for ever (slowloris). */
		s->data_deadline = now_ms() + smtpd.data_timeout_ms;
		arm_timeout(s);
		if (bdat) {
			s->in_chunk = true;
			s->chunk_left = s->chunk_size;
		} else {
			s->in_data = true;
			reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
		}
		return;
	}
	if (fd >= 0)
		close(fd);
	if (code < 400 || !mxf_smtp_reply_valid((long long)code, escode)) {
		mxf_warn("unusable OPEN reply from router: %llu", (unsigned long long)code);
		code = 451, escode = "4.3.0", text = TEMPFAIL_TEXT;
	}
fail:
	log_reject(s, bdat ? "BDAT" : "DATA", (int)code, escode, text, NULL);
	if (bdat) {
		s->skip_left = s->chunk_size;
		s->bdat_failed = true;
		if (s->chunk_last)
			reset_transaction(s);
	}
	reply_err(s, (int)code, escode, text);
}

static void on_commit_reply(struct session *s, const struct mxf_ipc_view *v)
{
	uint64_t code;
	const char *escode, *text;
	router_text(v, &code, &escode, &text);
	/* The only path to a 250 for a message: the router said it committed. */
	if (code == 250) {
		char t[600];
		if (!escode || !mxf_smtp_reply_valid(250, escode))
			escode = "2.0.0";
		if (!text[0]) {
			snprintf(t, sizeof(t), "Ok: queued as %s", s->qid);
			text = t;
		}
		s->ok[s->bdat ? MXF_SMTP_BDAT : MXF_SMTP_DATA]++;
		reply(s, 250, escode, text);
		reset_transaction(s);
		return;
	}
	if (code < 400 || !mxf_smtp_reply_valid((long long)code, escode)) {
		mxf_warn("%s: unusable COMMIT reply from router: %llu", s->qid,
			 (unsigned long long)code);
		code = 451;
		escode = "4.3.0";
		text = TEMPFAIL_TEXT;
	}
	data_refuse(s, (int)code, escode, text);
}

/* ---- the operator's allow/block lists ---- */

/* Sends ACCESS_CHECK (at connect: the address; at MAIL: with the HELO and
 * the sender). 0: the session now waits for the answer; <0: no router, go
 * on without a verdict. */
static int access_ask(struct session *s, bool at_mail)
{
	if (!smtpd.link || !mxf_routerlink_up(smtpd.link))
		return -ENOTCONN;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_ACCESS_CHECK);
	s->req = ++smtpd.next_req;
	int r = m ? 0 : -ENOMEM;
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_REQ, s->req);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_CLIENT_IP, s->ip);
	if (r == 0 && at_mail)
		r = mxf_ipc_put_str(m, F_HELO, s->helo);
	if (r == 0 && at_mail)
		r = mxf_ipc_put_str(m, F_SENDER, s->sender);
	if (r < 0) {
		mxf_ipc_msg_free(m);
		return r;
	}
	s->access_at_mail = at_mail;
	return send_request(s, m, W_ACCESS);
}

static void on_access_reply(struct session *s, const char *action, const char *why,
			    const char *entry, bool mail_final)
{
	char e[700], t[480];
	if (!action)
		action = "none";
	if (!why)
		why = "";
	if (!entry)
		entry = "";
	bool block = strcmp(action, "block") == 0, sblock = strcmp(action, "block-sender") == 0;
	if (strcmp(action, "allow") == 0) {
		if (!s->allowed)
			mxf_info("allow-listed: unknown[%s] (entry %s)", s->ip,
				 esc(e, sizeof(e), entry));
		s->allowed = true;
	} else if (strcmp(action, "allow-sender") == 0 && s->access_at_mail) {
		s->sender_allowed = true;
	}
	if (!s->access_at_mail) {
		s->mail_final = mail_final;
		/* At connect: a blocked client gets 554 instead of the greeting
		 * (RFC 5321 3.1) and is disconnected. */
		if (block) {
			snprintf(t, sizeof(t), "Service unavailable; client [%s] blocked%s%s", s->ip,
				 why[0] ? ": " : " by local policy", why);
			mxf_info("NOQUEUE: reject: CONNECT from unknown[%s]: 554 5.7.1 %s (entry %s)",
				 s->ip, t, esc(e, sizeof(e), entry));
			s->greeted = true;
			reject_note(s, 554, "5.7.1", t, "blocklist", NULL);
			put_line(s, 554, false, "5.7.1", t);
			session_close(s, true);
			return;
		}
		if (s->greet_due) {
			greet(s);
			if (!s->closing)
				arm_timeout(s);
		}
		return;
	}
	if (block || sblock) {
		/* A client blocked since it connected, its HELO name, or its
		 * sender: 550 5.7.1 to this MAIL; the session goes on. */
		if (sblock)
			snprintf(t, sizeof(t), "<%s>: Sender address rejected: %s", s->sender,
				 why[0] ? why : "Access denied");
		else
			snprintf(t, sizeof(t), "Client host rejected: %s",
				 why[0] ? why : "Access denied");
		log_reject(s, "MAIL", 550, "5.7.1", t, NULL);
		reject_note(s, 550, "5.7.1", t, "blocklist", NULL);
		reset_transaction(s);
		reply_err(s, 550, "5.7.1", t);
		return;
	}
	mail_accept(s);
}

static void on_open_reply(struct session *s, const struct mxf_ipc_view *v, int fd)
{
	uint64_t code;
	const char *escode, *text;
	router_text(v, &code, &escode, &text);
	opened(s, code, escode, text, mxf_ipc_str(v, F_QID, 0), fd);
}

/* DATA or a first BDAT chunk: the file opened ahead if there is one (from
 * this router connection), else an OPEN request. */
static int open_file(struct session *s)
{
	if (s->pre_fd >= 0 && s->pre_gen == smtpd.link_gen && smtpd.link &&
	    mxf_routerlink_up(smtpd.link)) {
		char qid[MXF_QID_SIZE];
		int fd = s->pre_fd;
		memcpy(qid, s->pre_qid, sizeof(qid));
		s->pre_fd = -1;
		opened(s, 250, "2.0.0", "Ok", qid, fd);
		return 0;
	}
	if (s->ahead_req && s->pre_fd < 0 && smtpd.link && mxf_routerlink_up(smtpd.link)) {
		/* Opened ahead, not here yet: its OPEN_REPLY is this DATA's. */
		s->req = s->ahead_req;
		s->ahead_req = 0;
		s->wait = W_OPEN;
		return 0;
	}
	drop_preopen(s);
	return request_open(s);
}

bool session_router_reply(const struct mxf_ipc_view *v, uint64_t req, int fd)
{
	enum wait_kind want;
	switch (mxf_ipc_type(v)) {
	case MXF_MSG_RCPT_REPLY: want = W_RCPT; break;
	case MXF_MSG_OPEN_REPLY: want = W_OPEN; break;
	case MXF_MSG_COMMIT_REPLY: want = W_COMMIT; break;
	case MXF_MSG_ACCESS_REPLY: want = W_ACCESS; break;
	default: want = W_NONE; break;
	}
	struct session *s = smtpd.sessions;
	while (s && !(want != W_NONE && s->wait == want && s->req == req))
		s = s->next;
	if (!s && want == W_OPEN) {
		/* A file opened ahead after a RCPT's 250, before DATA: kept. */
		for (s = smtpd.sessions; s && !(s->ahead_req == req && req); s = s->next)
			;
		if (s) {
			uint64_t code = 0;
			const char *qid = mxf_ipc_str(v, F_QID, 0);
			mxf_ipc_u64(v, F_CODE, 0, &code);
			s->ahead_req = 0;
			if (code != 250 || fd < 0 || !qid || !mxf_qid_valid(qid) || s->pre_fd >= 0 ||
			    s->open) {
				/* Not usable: DATA asks again (and answers its error). */
				if (fd >= 0)
					close(fd);
				if (code == 250 && qid && mxf_qid_valid(qid))
					smtpd_abort_qid(qid);
				return true;
			}
			s->pre_fd = fd;
			snprintf(s->pre_qid, sizeof(s->pre_qid), "%s", qid);
			s->pre_gen = smtpd.link_gen;
			return true;
		}
	}
	if (!s) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	s->wait = W_NONE;
	s->req = 0;
	switch (want) {
	case W_RCPT:
		if (fd >= 0)
			close(fd);
		/* A file follows only when the router says so. */
		uint64_t ahead = 0;
		if (s->ahead_req == req &&
		    (mxf_ipc_u64(v, F_OPEN_AHEAD, 0, &ahead) < 0 || ahead != 1))
			s->ahead_req = 0;
		on_rcpt_reply(s, v);
		break;
	case W_OPEN:
		on_open_reply(s, v, fd);
		break;
	case W_ACCESS:
		if (fd >= 0)
			close(fd);
		uint64_t final = 0;
		if (mxf_ipc_u64(v, F_MAIL_FINAL, 0, &final) < 0)
			final = 0;
		on_access_reply(s, mxf_ipc_str(v, F_ACTION, 0), mxf_ipc_str(v, F_TEXT, 0),
				mxf_ipc_str(v, F_ADDR, 0), final == 1);
		if (s->closing)
			return true;
		break;
	default:
		if (fd >= 0)
			close(fd);
		on_commit_reply(s, v);
		break;
	}
	process(s);
	return true;
}

void session_link_down(void)
{
	for (struct session *s = smtpd.sessions, *next; s; s = next) {
		next = s->next;
		enum wait_kind w = s->wait;
		if (w == W_ACCESS) {
			/* No verdict: the session goes on as if no entry applied. */
			s->wait = W_NONE;
			s->req = 0;
			on_access_reply(s, "none", "", "", false);
			if (!s->closing)
				process(s);
			continue;
		}
		if (w != W_RCPT && w != W_OPEN && w != W_COMMIT)
			continue;
		s->wait = W_NONE;
		s->req = 0;
		if (w == W_COMMIT) {
			/* We cannot know whether it was committed; a 4xx makes the
			 * client retry: at worst a duplicate, never a loss. */
			mxf_warn("%s: router connection lost before commit reply", s->qid);
			data_refuse(s, 451, "4.3.0", TEMPFAIL_TEXT);
		} else if (w == W_OPEN && s->open_for_bdat) {
			s->skip_left = s->chunk_size;
			s->bdat_failed = true;
			if (s->chunk_last)
				reset_transaction(s);
			reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		} else {
			reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		}
		process(s);
	}
}

/* ---- connection ---- */

static void greet(struct session *s)
{
	char greeting[MXF_SMTP_LINE_MAX];
	s->greeted = true;
	snprintf(greeting, sizeof(greeting), "%s ESMTP mxferry", smtpd.hostname);
	reply(s, 220, NULL, greeting);
	flush(s);
}

static void on_timeout(uv_timer_t *t);

static void arm_timeout(struct session *s)
{
	uint64_t t = smtpd.timeout_ms;
	if (s->data_deadline) {
		uint64_t now = now_ms();
		uint64_t left = s->data_deadline > now ? s->data_deadline - now : 0;
		if (left < t)
			t = left ? left : 1;
	}
	uv_timer_start(&s->timer, on_timeout, t, 0);
}

static void on_timeout(uv_timer_t *t)
{
	struct session *s = t->data;
	if (s->closing) {
		/* The grace period of a graceful close is over. */
		close_handles(s);
		return;
	}
	if (!s->greeted) {
		if (s->wait == W_ACCESS && !s->greet_due) {
			s->greet_due = true; /* greeted when the connect check is answered */
			arm_timeout(s);
			return;
		}
		if (s->wait == W_ACCESS) /* the router never answered: go on without */
			s->wait = W_NONE;
		greet(s);
		if (!s->closing)
			arm_timeout(s);
		return;
	}
	if (s->data_deadline && now_ms() >= s->data_deadline && (s->in_data || s->in_chunk || s->open)) {
		/* The message is dropped: session_close aborts its queue file. */
		mxf_info("%s: data timeout: content not complete after %llu s from unknown[%s]",
			 s->qid[0] ? s->qid : "NOQUEUE",
			 (unsigned long long)(smtpd.data_timeout_ms / 1000), s->ip);
		reject_note(s, 421, "4.4.2", "Error: timeout exceeded (message took too long)",
			    "data-timeout", NULL);
		put_line(s, 421, false, "4.4.2", "Error: timeout exceeded (message took too long)");
		session_close(s, true);
		return;
	}
	mxf_info("timeout after %s from unknown[%s]", mxf_smtp_verb_name(s->last_verb), s->ip);
	put_line(s, 421, false, "4.4.2", "Error: timeout exceeded");
	session_close(s, true);
}

static char rbuf[READ_CHUNK];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	/* One loop, one read at a time: a shared buffer, copied into the
	 * session only when it must wait. */
	*buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static int append_in(struct session *s, const char *p, size_t n)
{
	if (s->inoff > 0 && s->inoff == s->inlen)
		s->inoff = s->inlen = 0;
	if (s->incap - s->inlen < n) {
		if (s->inoff > 0) {
			memmove(s->in, s->in + s->inoff, s->inlen - s->inoff);
			s->inlen -= s->inoff;
			s->inoff = 0;
		}
		size_t ncap = s->incap ? s->incap : 512;
		while (ncap - s->inlen < n)
			ncap *= 2;
		char *nb = realloc(s->in, ncap);
		if (!nb)
			return -ENOMEM;
		s->in = nb;
		s->incap = ncap;
	}
	memcpy(s->in + s->inlen, p, n);
	s->inlen += n;
	return 0;
}

/* Ciphertext in: handshake, then plaintext into the input buffer. */
static int tls_input(struct session *s, const char *p, size_t n)
{
	static char plain[16384];
	char err[300];
	bool was = mxf_tls_established(s->tls);
	if (mxf_tls_feed(s->tls, p, n) < 0)
		return -ENOMEM;
	for (;;) {
		int r = mxf_tls_read(s->tls, plain, sizeof(plain), err, sizeof(err));
		if (!was && mxf_tls_established(s->tls)) {
			char d[256];
			was = true;
			mxf_tls_describe(s->tls, d, sizeof(d));
			mxf_info("TLS established from unknown[%s]: %s", s->ip, d);
			smtpd.stat_tls++;
		}
		if (r == -ECONNRESET)
			return r;
		if (r < 0) {
			flush_tls(s); /* the alert */
			mxf_info("TLS failure from unknown[%s]: %s", s->ip, err);
			return r;
		}
		if (r == 0)
			break;
		if (append_in(s, plain, (size_t)r) < 0)
			return -ENOMEM;
	}
	flush_tls(s);
	return 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct session *s = st->data;
	if (s->closing)
		return;
	if (nread < 0) {
		if (nread != UV_EOF && nread != UV_ECONNRESET)
			mxf_info("read error from unknown[%s]: %s", s->ip, uv_strerror((int)nread));
		if (s->in_data || s->open)
			mxf_info("%s: lost connection after DATA from unknown[%s]", s->qid, s->ip);
		session_close(s, false);
		return;
	}
	if (nread == 0)
		return;
	if (!s->greeted) {
		/* RFC 5321 3.1: the client waits for the greeting. One that
		 * talks first is a spam engine, not an MTA. */
		mxf_info("PREGREET %zd bytes from unknown[%s]", nread, s->ip);
		if (s->bl)
			bl_history_add(s->ip);
		s->greeted = true;
		reject_note(s, 554, "5.5.0", "Error: talked before the greeting", "pregreet", NULL);
		put_line(s, 554, false, "5.5.0", "Error: talked before the greeting");
		session_close(s, true);
		return;
	}
	int r = s->tls ? tls_input(s, buf->base, (size_t)nread)
		       : append_in(s, buf->base, (size_t)nread);
	if (r < 0) {
		session_close(s, r == -ECONNRESET);
		return;
	}
	arm_timeout(s);
	process(s);
}

static void read_toggle(struct session *s, bool on)
{
	if (on && !s->reading)
		s->reading = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0;
	else if (!on && s->reading) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->reading = false;
	}
}

static void log_disconnect(struct session *s)
{
	static const char *const names[MXF_SMTP_NVERBS] = {
		"unknown", "ehlo", "helo", "mail", "rcpt", "data",
		"rset", "noop", "quit", "vrfy", "help", "starttls", "bdat",
	};
	static const int order[] = {MXF_SMTP_EHLO, MXF_SMTP_HELO, MXF_SMTP_STARTTLS,
				    MXF_SMTP_MAIL, MXF_SMTP_RCPT, MXF_SMTP_DATA,
				    MXF_SMTP_BDAT, MXF_SMTP_RSET, MXF_SMTP_NOOP,
				    MXF_SMTP_VRFY, MXF_SMTP_HELP, MXF_SMTP_QUIT,
				    MXF_SMTP_UNKNOWN};
	char buf[512];
	size_t o = 0;
	unsigned tot = 0, okt = 0;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		int v = order[i];
		if (!s->cnt[v])
			continue;
		tot += s->cnt[v];
		okt += s->ok[v];
		if (s->ok[v] == s->cnt[v])
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, " %s=%u", names[v], s->cnt[v]);
		else
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, " %s=%u/%u", names[v],
					      s->ok[v], s->cnt[v]);
	}
	if (okt == tot)
		snprintf(buf + o, sizeof(buf) - o, " commands=%u", tot);
	else
		snprintf(buf + o, sizeof(buf) - o, " commands=%u/%u", okt, tot);
	mxf_info("disconnect from unknown[%s]%s", s->ip, buf);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	close_handles(req->data);
}

static void session_close(struct session *s, bool graceful)
{
	if (s->closing)
		return;
	abort_open(s);
	drop_preopen(s);
	log_disconnect(s);
	if (graceful) {
		flush(s);
		if (s->tls && !uv_is_closing((uv_handle_t *)&s->tcp)) {
			mxf_tls_shutdown(s->tls);
			flush_tls(s);
		}
	}
	s->closing = true;
	if (s->prev)
		s->prev->next = s->next;
	else
		smtpd.sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	smtpd.nsessions--;
	ip_release(s);
	bl_detach(s->bl);
	s->bl = NULL;
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	if (s->reading)
		uv_read_stop((uv_stream_t *)&s->tcp);
	s->reading = false;
	s->shutreq.data = s;
	if (graceful && !uv_is_closing((uv_handle_t *)&s->tcp) &&
	    uv_shutdown(&s->shutreq, (uv_stream_t *)&s->tcp, on_shutdown) == 0) {
		/* Bounded: a client that never reads cannot hold us. */
		uv_timer_start(&s->timer, on_timeout, smtpd.stopping ? 1000 : CLOSE_GRACE_MS, 0);
	} else {
		close_handles(s);
	}
	smtpd_check_done();
}

static void peer_ip(struct session *s)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	snprintf(s->ip, sizeof(s->ip), "unknown");
	if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, s->ip, sizeof(s->ip));
	} else if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], s->ip, sizeof(s->ip));
		else
			inet_ntop(AF_INET6, a, s->ip, sizeof(s->ip));
	}
}


void session_accept(uv_stream_t *listener)
{
	struct session *s = calloc(1, sizeof(*s));
	if (!s) {
		mxf_err("out of memory accepting a connection");
		return;
	}
	s->fd = -1;
	s->pre_fd = -1;
	if (uv_tcp_init(smtpd.loop, &s->tcp) < 0) {
		free(s);
		return;
	}
	s->tcp.data = s;
	s->refs = 1;
	uv_timer_init(smtpd.loop, &s->timer);
	s->timer.data = s;
	s->refs++;
	uv_timer_init(smtpd.loop, &s->bltimer);
	s->bltimer.data = s;
	s->refs++;
	mxf_smtp_lines_init(&s->lines);
	if (uv_accept(listener, (uv_stream_t *)&s->tcp) < 0) {
		s->closing = true;
		close_handles(s);
		return;
	}
	s->next = smtpd.sessions;
	if (s->next)
		s->next->prev = s;
	smtpd.sessions = s;
	smtpd.nsessions++;
	smtpd.stat_sessions++;
	peer_ip(s);
	mxf_info("connect from unknown[%s]", s->ip);

	const char *why = NULL;
	if (!ip_admit(s, &why)) {
		mxf_info("reject: connect from unknown[%s]: too many connections (%s limit)", s->ip,
			 why);
		s->greeted = true;
		reject_note(s, 421, "4.7.0", "Error: too many connections from your address", "rate",
			    NULL);
		put_line(s, 421, false, "4.7.0", "Error: too many connections from your address");
		session_close(s, true);
		return;
	}
	/* Block lists are asked now, in parallel with the greeting delay. */
	if (bl_enabled()) {
		s->bl = bl_new(s, on_bl_ready);
		bl_lookup_ip(s->bl, s->ip);
		bl_lookup_rdns(s->bl, s->ip);
		bl_history_load(s->bl, s->ip);
	}
	/* Reading starts at once: input before the greeting is a pregreet. */
	read_toggle(s, true);
	/* The operator's lists are asked now; the greeting waits for the
	 * answer (a local round trip, well inside any greeting delay). */
	bool asked = access_ask(s, false) == 0;
	if (smtpd.greet_delay_ms > 0) {
		uv_timer_start(&s->timer, on_timeout, smtpd.greet_delay_ms, 0);
		return;
	}
	if (asked) {
		s->greet_due = true;
		arm_timeout(s); /* bounds the wait for a router that does not answer */
		return;
	}
	greet(s);
	if (!s->closing)
		arm_timeout(s);
}

void session_close_all(void)
{
	for (struct session *s = smtpd.sessions, *next; s; s = next) {
		next = s->next;
		if (mid_message(s))
			continue; /* answered 421 after its message */
		put_line(s, 421, false, "4.3.2", "Service shutting down, closing connection");
		session_close(s, true);
	}
}

void session_kill_all(void)
{
	while (smtpd.sessions) {
		struct session *s = smtpd.sessions;
		if (s->in_data || s->open)
			mxf_warn("%s: shutdown deadline passed during the message; dropped (no 250 "
				 "was given)", s->qid[0] ? s->qid : "NOQUEUE");
		put_line(s, 421, false, "4.3.2", "Service shutting down, closing connection");
		session_close(s, false);
	}
}
