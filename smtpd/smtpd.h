/* smtpd internals: the process-wide state (main.c) and the SMTP session
 * (session.c). smtpd holds no secret and opens no file: message content goes
 * into a descriptor the router hands over, and only the router's COMMIT_REPLY
 * can produce a 250 for a message. */
#ifndef MXF_SMTPD_H
#define MXF_SMTPD_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "ipc.h"
#include "ipcconn.h"

struct session;

struct smtpd {
	uv_loop_t *loop;
	const char *hostname;
	uint64_t max_size;
	size_t max_rcpt;
	uint64_t timeout_ms;
	uint64_t greet_delay_ms;
	unsigned max_conn_per_ip, max_conn_rate; /* 0: no limit */
	/* Per /24 or /64, and per minute messages and recipients (issue 11). */
	unsigned max_conn_per_net, max_conn_rate_net;
	unsigned max_msg_rate, max_msg_rate_net, max_rcpt_rate, max_rcpt_rate_net;
	uint64_t rate_window_ms; /* the "minute" of the rate limits */
	SSL_CTX *tls;                            /* NULL: no STARTTLS */
	size_t nsessions;
	struct mxf_routerlink *link;
	/* Bumped each time the router link comes up: a queue file opened
	 * under an older generation belongs to a router instance that is gone. */
	uint64_t link_gen;
	uint64_t next_req;
	struct session *sessions;
	/* SIGTERM: no new sessions, 421 to new commands; sessions in the
	 * middle of a message finish it first. */
	bool stopping;
	/* Issue 9: the most one message's DATA/BDAT phase may take ([smtpd]
	 * data_timeout); bounds a client that trickles bytes within the
	 * command timeout. */
	uint64_t data_timeout_ms;
	/* Counted since the last SMTPD_STATS to the router (metrics). */
	uint64_t stat_sessions, stat_tls;
};

extern struct smtpd smtpd;

/* Takes a new connection from a listener. */
void session_accept(uv_stream_t *listener);
/* A router reply for a request (RCPT_REPLY, OPEN_REPLY, COMMIT_REPLY);
 * returns false when no session waits for it. fd is consumed either way. */
bool session_router_reply(const struct mxf_ipc_view *v, uint64_t req, int fd);
/* The router link went down: every waiting session answers 451. */
void session_link_down(void);
/* Shutdown: 421 and close every session not in the middle of a message;
 * those get 421 once their message is answered. */
void session_close_all(void);
/* Shutdown deadline passed: close everybody now. */
void session_kill_all(void);
/* Called when a session ends: while stopping, the last one ends the loop. */
void smtpd_check_done(void);
/* Fire-and-forget ABORT of a queue file. */
void smtpd_abort_qid(const char *qid);

#endif
