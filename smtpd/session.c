/* One SMTP session: the protocol state machine on top of the sans-I/O
 * parsers in common/smtp.c.
 *
 * Ordering: commands are handled strictly one after the other. While a
 * command waits for the router (RCPT, DATA, end of DATA) or for a write into
 * the queue file, no further input is looked at; it stays buffered (and
 * reading pauses once too much is buffered), so pipelined commands can never
 * overtake an answer. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "address.h"
#include "log.h"
#include "queueid.h"
#include "smtp.h"
#include "smtpd.h"

#define READ_CHUNK 65536
#define IN_MAX (256 * 1024) /* buffered unprocessed input before reading pauses */
#define WBUF_CAP 65536      /* decoded content collected before a file write */
#define OUT_FLUSH 65536     /* replies collected before a socket write */
#define OUT_MAX (256 * 1024) /* unsent replies before input processing pauses */
#define MAX_ERRORS 10
#define CLOSE_GRACE_MS 10000
#define TEMPFAIL_TEXT "Error: temporary failure, try again later"

enum wait_kind { W_NONE = 0, W_RCPT, W_OPEN, W_COMMIT, W_WRITE };

struct session {
	struct session *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t shutreq;
	uv_fs_t fsreq;
	int refs; /* open handles + an in-flight file write */
	bool closing;
	bool reading;
	bool out_blocked; /* a client that pipelines but does not read */
	char ip[INET6_ADDRSTRLEN];

	/* input: in[inoff..inlen) is not yet processed */
	char *in;
	size_t inoff, inlen, incap;
	struct mxf_smtp_lines lines;
	/* replies collected for one write */
	char *out;
	size_t outlen, outcap;

	enum wait_kind wait;
	uint64_t req;
	enum mxf_smtp_verb last_verb;

	bool helo_done, esmtp;
	char helo[MXF_SMTP_LINE_MAX];
	bool mail_done;
	char sender[MXF_ADDR_SIZE];
	char **rcpt;
	size_t nrcpt;
	char pending_rcpt[MXF_ADDR_SIZE];

	/* DATA */
	bool in_data;
	struct mxf_smtp_data data;
	char qid[MXF_QID_SIZE];
	bool open;    /* qid opened by the router, neither committed nor aborted */
	uint64_t gen; /* smtpd.link_gen when it was opened */
	int fd;
	char *wbuf;
	size_t wlen;
	uint64_t written;
	bool write_error, too_big;

	unsigned errors;
	unsigned cnt[MXF_SMTP_NVERBS], ok[MXF_SMTP_NVERBS];
};

static void process(struct session *s);
static void session_close(struct session *s, bool graceful);
static void read_toggle(struct session *s, bool on);

/* ---- small helpers ---- */

static char *esc(char *buf, size_t cap, const char *s)
{
	return mxf_log_escape(buf, cap, s, strlen(s));
}

static void maybe_free(struct session *s)
{
	if (s->refs > 0)
		return;
	if (s->fd >= 0)
		close(s->fd);
	for (size_t i = 0; i < s->nrcpt; i++)
		free(s->rcpt[i]);
	free(s->rcpt);
	free(s->in);
	free(s->out);
	free(s->wbuf);
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
}

static void reset_transaction(struct session *s)
{
	s->mail_done = false;
	s->sender[0] = '\0';
	for (size_t i = 0; i < s->nrcpt; i++)
		free(s->rcpt[i]);
	s->nrcpt = 0;
	s->qid[0] = '\0';
	s->open = false;
	s->in_data = false;
	if (s->fd >= 0 && s->wait != W_WRITE) {
		close(s->fd);
		s->fd = -1;
	}
	s->wlen = 0;
	s->written = 0;
	s->write_error = s->too_big = false;
}

/* ---- output ---- */

struct wreq {
	uv_write_t req;
	char data[];
};

static bool out_full(const struct session *s)
{
	return s->outlen + s->tcp.write_queue_size > OUT_MAX;
}

static void on_written(uv_write_t *req, int status)
{
	struct session *s = req->handle->data;
	(void)status; /* a failed write shows up as a read error/EOF too */
	free(req);
	if (!s->closing && s->out_blocked && !out_full(s)) {
		s->out_blocked = false;
		process(s);
	}
}

static void flush(struct session *s)
{
	if (s->outlen == 0 || uv_is_closing((uv_handle_t *)&s->tcp))
		return;
	struct wreq *w = malloc(sizeof(*w) + s->outlen);
	if (!w) {
		session_close(s, false);
		return;
	}
	memcpy(w->data, s->out, s->outlen);
	uv_buf_t b = uv_buf_init(w->data, (unsigned)s->outlen);
	s->outlen = 0;
	if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_written) < 0) {
		free(w);
		session_close(s, false);
	}
}

static void put_line(struct session *s, int code, bool more, const char *escode, const char *text)
{
	char line[MXF_SMTP_LINE_MAX + 1];
	int n = mxf_smtp_reply_line(line, sizeof(line), code, more, escode, text);
	if (n < 0)
		abort(); /* our own codes: a bug */
	if (s->outlen + (size_t)n > s->outcap) {
		size_t ncap = s->outcap ? s->outcap * 2 : 4096;
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
		put_line(s, 421, false, "4.7.0", "Too many errors");
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

static int send_request(struct session *s, struct mxf_ipc_msg *m, enum wait_kind w)
{
	int r = smtpd.link ? mxf_routerlink_send(smtpd.link, m, -1) : -ENOTCONN;
	mxf_ipc_msg_free(m);
	if (r < 0)
		return r;
	s->wait = w;
	return 0;
}

/* ---- commands ---- */

static void do_helo(struct session *s, const struct mxf_smtp_cmd *c)
{
	reset_transaction(s);
	s->helo_done = true;
	s->esmtp = c->verb == MXF_SMTP_EHLO;
	snprintf(s->helo, sizeof(s->helo), "%s", c->arg);
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
	if (c->has_size && c->size > smtpd.max_size) {
		reply_err(s, 552, "5.3.4", "Message size exceeds fixed limit");
		return;
	}
	if (c->null_path) {
		s->sender[0] = '\0';
	} else if (mxf_addr_normalize(c->path, 0, s->sender, sizeof(s->sender)) < 0) {
		s->sender[0] = '\0';
		reply_err(s, 501, "5.1.7", "Bad sender address syntax");
		return;
	}
	s->mail_done = true;
	s->ok[MXF_SMTP_MAIL]++;
	reply(s, 250, "2.1.0", "Ok");
}

static void do_rcpt(struct session *s, const struct mxf_smtp_cmd *c)
{
	if (!s->mail_done) {
		reply_err(s, 503, "5.5.1", "Error: need MAIL command");
		return;
	}
	if (s->nrcpt >= smtpd.max_rcpt) {
		reply_err(s, 452, "4.5.3", "Error: too many recipients");
		return;
	}
	char addr[MXF_ADDR_SIZE];
	if (c->postmaster) /* RFC 5321 4.5.1: the postmaster of this host */
		snprintf(addr, sizeof(addr), "postmaster@%s", smtpd.hostname);
	else
		snprintf(addr, sizeof(addr), "%s", c->path);
	if (mxf_addr_normalize(addr, 0, s->pending_rcpt, sizeof(s->pending_rcpt)) < 0) {
		reply_err(s, 501, "5.1.3", "Bad recipient address syntax");
		return;
	}

	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_RCPT_CHECK);
	s->req = ++smtpd.next_req;
	if (!m || mxf_ipc_put_u64(m, F_REQ, s->req) < 0 ||
	    mxf_ipc_put_str(m, F_ADDR, s->pending_rcpt) < 0) {
		mxf_ipc_msg_free(m);
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	/* Router down: this recipient gets a 4xx, the session goes on. */
	if (send_request(s, m, W_RCPT) < 0)
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
}

static void do_data(struct session *s)
{
	if (!s->mail_done) {
		reply_err(s, 503, "5.5.1", "Error: need MAIL command");
		return;
	}
	if (s->nrcpt == 0) {
		reply_err(s, 554, "5.5.1", "Error: no valid recipients");
		return;
	}
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_OPEN);
	s->req = ++smtpd.next_req;
	if (!m || mxf_ipc_put_u64(m, F_REQ, s->req) < 0) {
		mxf_ipc_msg_free(m);
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	if (send_request(s, m, W_OPEN) < 0)
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
}

static void handle_command(struct session *s, const char *line, size_t len)
{
	struct mxf_smtp_cmd c;
	int r = mxf_smtp_parse_cmd(line, len, &c);

	s->cnt[c.verb]++;
	s->last_verb = c.verb;
	if (r < 0) {
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
	case MXF_SMTP_RSET:
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
		reply(s, 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
		return;
	case MXF_SMTP_QUIT:
		s->ok[c.verb]++;
		reply(s, 221, "2.0.0", "Bye");
		session_close(s, true);
		return;
	default:
		reply_err(s, 500, "5.5.2", "Error: command not recognized");
		return;
	}
}

/* ---- DATA ---- */

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

/* An end-of-data refusal: nothing was committed; the transaction ends. */
static void data_refuse(struct session *s, int code, const char *escode, const char *text)
{
	abort_open(s);
	log_reject(s, "END-OF-MESSAGE", code, escode, text, NULL);
	reset_transaction(s);
	reply_err(s, code, escode, text);
}

static void on_file_written(uv_fs_t *req);

static void start_write(struct session *s)
{
	uv_buf_t b = uv_buf_init(s->wbuf, (unsigned)s->wlen);
	s->fsreq.data = s;
	if (uv_fs_write(smtpd.loop, &s->fsreq, s->fd, &b, 1, -1, on_file_written) < 0) {
		s->write_error = true;
		s->wlen = 0;
		return;
	}
	s->refs++;
	s->wait = W_WRITE;
}

static void on_file_written(uv_fs_t *req)
{
	struct session *s = req->data;
	ssize_t n = req->result;
	uv_fs_req_cleanup(req);
	s->refs--;
	s->wait = W_NONE;
	if (s->closing) {
		maybe_free(s);
		return;
	}
	if (n <= 0) {
		mxf_warn("%s: queue file write error: %s", s->qid,
			 n < 0 ? uv_strerror((int)n) : "nothing written");
		s->write_error = true;
		s->wlen = 0;
	} else {
		s->written += (uint64_t)n;
		memmove(s->wbuf, s->wbuf + n, s->wlen - (size_t)n);
		s->wlen -= (size_t)n;
	}
	process(s);
}

static void finish_data(struct session *s)
{
	s->in_data = false;
	if (s->write_error) {
		data_refuse(s, 451, "4.3.0", "Error: queue file write error");
		return;
	}
	if (s->too_big) {
		data_refuse(s, 552, "5.3.4", "Error: message file too big");
		return;
	}
	if (s->data.bare_cr || s->data.bare_lf) {
		data_refuse(s, 554, "5.6.0", "Message contains bare CR or LF");
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
	if (s->written != s->data.size)
		abort(); /* every decoded byte went to the file or we refused above */

	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_COMMIT);
	s->req = ++smtpd.next_req;
	int r = m ? 0 : -ENOMEM;
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_REQ, s->req);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_QID, s->qid);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_SENDER, s->sender);
	for (size_t i = 0; r == 0 && i < s->nrcpt; i++)
		r = mxf_ipc_put_str(m, F_RCPT, s->rcpt[i]);
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_SIZE, s->written);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_CLIENT_IP, s->ip);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_CLIENT_NAME, "unknown"); /* no PTR lookups yet */
	if (r == 0)
		r = mxf_ipc_put_str(m, F_HELO, s->helo);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_PROTO, s->esmtp ? "ESMTP" : "SMTP");
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

/* One step of DATA; false when it must wait for input or a write. */
static bool data_step(struct session *s)
{
	bool progress = false;
	if (!s->data.done && s->inoff < s->inlen) {
		size_t space = WBUF_CAP - s->wlen;
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
			if (!s->too_big && !s->write_error && !s->data.bare_cr &&
			    !s->data.bare_lf)
				s->wlen += o;
			else
				s->wlen = 0;
		}
	}
	if (s->wlen > 0 && (s->data.done || WBUF_CAP - s->wlen < 2)) {
		start_write(s);
		/* Waiting for the write, or it failed at once (then the rest is
		 * read and dropped). */
		return s->wait == W_NONE;
	}
	if (s->data.done) {
		finish_data(s);
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
		if (s->in_data) {
			if (!data_step(s))
				break;
			continue;
		}
		const char *p = s->in + s->inoff, *line;
		size_t n = s->inlen - s->inoff, ll;
		enum mxf_smtp_line_result r = mxf_smtp_lines_next(&s->lines, &p, &n, &line, &ll);
		s->inoff = (size_t)(p - s->in);
		if (r == MXF_SMTP_LINE_MORE)
			break;
		if (r == MXF_SMTP_LINE_TOO_LONG)
			reply_err(s, 500, "5.5.2", "Error: line too long");
		else if (r == MXF_SMTP_LINE_BARE_LF)
			reply_err(s, 500, "5.5.2", "Error: bare LF received");
		else
			handle_command(s, line, ll);
	}
	if (s->closing)
		return;
	if (s->inoff == s->inlen)
		s->inoff = s->inlen = 0;
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
	bool dup = false;
	for (size_t i = 0; i < s->nrcpt; i++)
		dup = dup || strcmp(s->rcpt[i], s->pending_rcpt) == 0;
	if (!dup) {
		char *copy = strdup(s->pending_rcpt);
		char **nr = copy ? realloc(s->rcpt, (s->nrcpt + 1) * sizeof(*nr)) : NULL;
		if (!nr) {
			free(copy);
			reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
			return;
		}
		s->rcpt = nr;
		s->rcpt[s->nrcpt++] = copy;
	}
	s->ok[MXF_SMTP_RCPT]++;
	reply(s, (int)code, escode, text);
}

static void on_open_reply(struct session *s, const struct mxf_ipc_view *v, int fd)
{
	uint64_t code;
	const char *escode, *text;
	const char *qid = mxf_ipc_str(v, F_QID, 0);
	router_text(v, &code, &escode, &text);
	if (code == 250) {
		if (fd < 0 || !qid || !mxf_qid_valid(qid)) {
			mxf_err("router OPEN_REPLY 250 without a descriptor or a valid queue id");
			if (qid && mxf_qid_valid(qid))
				smtpd_abort_qid(qid);
			if (fd >= 0)
				close(fd);
			reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
			return;
		}
		char h[600];
		snprintf(s->qid, sizeof(s->qid), "%s", qid);
		s->open = true;
		s->gen = smtpd.link_gen;
		s->fd = fd;
		s->in_data = true;
		s->wlen = 0;
		s->written = 0;
		s->write_error = s->too_big = false;
		mxf_smtp_data_init(&s->data);
		mxf_info("%s: client=unknown[%s], helo=%s", s->qid, s->ip,
			 esc(h, sizeof(h), s->helo));
		reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
		return;
	}
	if (fd >= 0)
		close(fd);
	if (code < 400 || !mxf_smtp_reply_valid((long long)code, escode)) {
		mxf_warn("unusable OPEN reply from router: %llu", (unsigned long long)code);
		reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		return;
	}
	log_reject(s, "DATA", (int)code, escode, text, NULL);
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
		s->ok[MXF_SMTP_DATA]++;
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

bool session_router_reply(const struct mxf_ipc_view *v, uint64_t req, int fd)
{
	enum wait_kind want;
	switch (mxf_ipc_type(v)) {
	case MXF_MSG_RCPT_REPLY: want = W_RCPT; break;
	case MXF_MSG_OPEN_REPLY: want = W_OPEN; break;
	case MXF_MSG_COMMIT_REPLY: want = W_COMMIT; break;
	default: want = W_NONE; break;
	}
	struct session *s = smtpd.sessions;
	while (s && !(want != W_NONE && s->wait == want && s->req == req))
		s = s->next;
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
		on_rcpt_reply(s, v);
		break;
	case W_OPEN:
		on_open_reply(s, v, fd);
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
		if (w != W_RCPT && w != W_OPEN && w != W_COMMIT)
			continue;
		s->wait = W_NONE;
		s->req = 0;
		if (w == W_COMMIT) {
			/* We cannot know whether it was committed; a 4xx makes the
			 * client retry: at worst a duplicate, never a loss. */
			mxf_warn("%s: router connection lost before commit reply", s->qid);
			data_refuse(s, 451, "4.3.0", TEMPFAIL_TEXT);
		} else {
			reply_err(s, 451, "4.3.0", TEMPFAIL_TEXT);
		}
		process(s);
	}
}

/* ---- connection ---- */

static void on_timeout(uv_timer_t *t)
{
	struct session *s = t->data;
	if (s->closing) {
		/* The grace period of a graceful close is over. */
		close_handles(s);
		return;
	}
	mxf_info("timeout after %s from unknown[%s]", mxf_smtp_verb_name(s->last_verb), s->ip);
	put_line(s, 421, false, "4.4.2", "Error: timeout exceeded");
	session_close(s, true);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct session *s = h->data;
	(void)suggested;
	if (s->inoff > 0) {
		memmove(s->in, s->in + s->inoff, s->inlen - s->inoff);
		s->inlen -= s->inoff;
		s->inoff = 0;
	}
	if (s->incap - s->inlen < READ_CHUNK) {
		char *nb = realloc(s->in, s->inlen + READ_CHUNK);
		if (!nb) {
			*buf = uv_buf_init(NULL, 0);
			return;
		}
		s->in = nb;
		s->incap = s->inlen + READ_CHUNK;
	}
	*buf = uv_buf_init(s->in + s->inlen, READ_CHUNK);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct session *s = st->data;
	(void)buf;
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
	s->inlen += (size_t)nread;
	uv_timer_start(&s->timer, on_timeout, smtpd.timeout_ms, 0);
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
		"rset", "noop", "quit", "vrfy", "help",
	};
	static const int order[] = {MXF_SMTP_EHLO, MXF_SMTP_HELO, MXF_SMTP_MAIL, MXF_SMTP_RCPT,
				    MXF_SMTP_DATA, MXF_SMTP_RSET, MXF_SMTP_NOOP, MXF_SMTP_VRFY,
				    MXF_SMTP_HELP, MXF_SMTP_QUIT, MXF_SMTP_UNKNOWN};
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
	log_disconnect(s);
	if (graceful)
		flush(s);
	s->closing = true;
	if (s->prev)
		s->prev->next = s->next;
	else
		smtpd.sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	if (s->fd >= 0 && s->wait != W_WRITE) {
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
		uv_timer_start(&s->timer, on_timeout, smtpd.stopping ? 2000 : CLOSE_GRACE_MS, 0);
		return;
	}
	close_handles(s);
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
	s->wbuf = malloc(WBUF_CAP);
	if (!s->wbuf || uv_tcp_init(smtpd.loop, &s->tcp) < 0) {
		free(s->wbuf);
		free(s);
		return;
	}
	s->tcp.data = s;
	s->refs = 1;
	uv_timer_init(smtpd.loop, &s->timer);
	s->timer.data = s;
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
	peer_ip(s);
	mxf_info("connect from unknown[%s]", s->ip);

	char greet[MXF_SMTP_LINE_MAX];
	snprintf(greet, sizeof(greet), "%s ESMTP mxferry", smtpd.hostname);
	reply(s, 220, NULL, greet);
	flush(s);
	if (s->closing)
		return;
	uv_timer_start(&s->timer, on_timeout, smtpd.timeout_ms, 0);
	read_toggle(s, true);
}

void session_close_all(void)
{
	while (smtpd.sessions) {
		struct session *s = smtpd.sessions;
		put_line(s, 421, false, "4.3.2", "Service shutting down");
		session_close(s, true);
	}
}
