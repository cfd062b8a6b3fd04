/* ipc: the framed protocol between mxferry's processes (DESIGN.md §3).
 *
 * Transport: AF_UNIX SOCK_SEQPACKET, one datagram = one message, at most
 * MXF_IPC_MAX bytes, optionally carrying one descriptor (SCM_RIGHTS).
 *
 * Wire format (little-endian):
 *   u16 magic 0x4d58 ("MX"), u16 type, u32 body length
 *   body: fields, each u16 tag, u32 length, bytes
 * A tag may repeat (lists). Strings carry no NUL. u64 values are 8 bytes.
 * Decoding is strict: every byte must be accounted for, lengths in bounds.
 * A peer that sends a malformed message is a bug or a compromised daemon:
 * the receiver treats it as fatal (the master restarts it).
 *
 * Every connection starts with HELLO (client -> router) carrying the role
 * and protocol version; the router checks SO_PEERCRED against the uid the
 * role is configured to run as and answers HELLO_OK or closes.
 */
#ifndef MXF_IPC_H
#define MXF_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MXF_IPC_VERSION 1
#define MXF_IPC_MAX 65536
#define MXF_IPC_MAGIC 0x4d58

/* Name of the router's listening socket inside spool_dir/private/. */
#define MXF_IPC_ROUTER_SOCK "router"

enum mxf_ipc_type {
	MXF_MSG_HELLO = 1,        /* c->r: F_ROLE, F_VERSION, F_PID */
	MXF_MSG_HELLO_OK,         /* r->c: F_VERSION */
	MXF_MSG_RCPT_CHECK,       /* smtpd->r: F_REQ, F_ADDR [, F_SENDER (the MAIL FROM, "" null: for
	                             sender matchers and the activity row), F_CLIENT_IP, F_HELO
	                             (for the activity row of a refusal, issue 11)] */
	MXF_MSG_RCPT_REPLY,       /* r->smtpd: F_REQ, F_CODE, F_ESC, F_TEXT [, F_DMARC]
				     (a 250 may be followed by an OPEN_REPLY, see F_OPEN_AHEAD) */
	MXF_MSG_OPEN,             /* smtpd|bouncer->r: F_REQ  (new message file) */
	MXF_MSG_OPEN_REPLY,       /* r->c: F_REQ, F_CODE, F_ESC, F_TEXT, F_QID; fd (O_WRONLY) when F_CODE==250 */
	MXF_MSG_COMMIT,           /* c->r: F_REQ, F_QID, F_SENDER, F_RCPT*, F_SIZE, F_CLIENT_IP,
	                             F_CLIENT_NAME, F_HELO, F_PROTO [, F_RET, F_ENVID, F_DSN_NOTIFY*,
	                             F_ORCPT*, F_TLS, F_AUTH_RESULTS, F_MSGID, F_SUBJECT] */
	MXF_MSG_COMMIT_REPLY,     /* r->c: F_REQ, F_QID, F_CODE, F_ESC, F_TEXT.
	                             F_CODE 250: durably queued; 4xx/5xx: nothing kept */
	MXF_MSG_ABORT,            /* c->r: F_QID (discard an opened, uncommitted file) */
	MXF_MSG_DELIVER,          /* r->deliverd: F_REQ, F_QID, F_SENDER (already SRS'd), F_DOMAIN,
	                             F_RIDX* and F_RCPT* (parallel lists), F_HEADERS; fd (O_RDONLY content) */
	MXF_MSG_DELIVER_RESULT,   /* deliverd->r: F_REQ, F_QID, F_RIDX*, F_CODE*, F_ESC*, F_TEXT*,
	                             F_RELAY* (parallel lists, one entry per recipient; all u64
	                             except the strings F_ESC, F_TEXT, F_RELAY) [, F_PEER_DSN] */
	MXF_MSG_BOUNCE,           /* r->bouncer: F_REQ, F_QID, F_SENDER (original), F_RCPT*, F_CODE*,
	                             F_ESC*, F_TEXT*, F_RELAY* (parallel lists); fd (O_RDONLY content)
	                             [, F_ORCPT*, F_LAST_ATTEMPT* (parallel too), F_RET, F_ENVID,
	                             F_PROTO (of the failed message), F_ACTION "delayed" (a delay
	                             warning for deferred recipients: no state changes)] */
	MXF_MSG_BOUNCE_DONE,      /* bouncer->r: F_REQ, F_QID, F_CODE (250: the bounce is queued as
	                             F_BOUNCE_QID; 4xx: try again later; 5xx: give up, log) */
	MXF_MSG_RELOAD,           /* ctl->r: F_REQ */
	MXF_MSG_RELOAD_REPLY,     /* r->ctl: F_REQ, F_CODE, F_TEXT */
	MXF_MSG_QUEUE_CTL,        /* ctl->r: F_REQ, F_TEXT (hold|release|delete|retry|flush|list), F_QID*
				   * (list: F_COUNT offset; the reply's F_TEXT a JSON array) */
	MXF_MSG_QUEUE_CTL_REPLY,  /* r->ctl: F_REQ, F_CODE, F_TEXT, F_COUNT (messages acted on) */
	MXF_MSG_DSN_PARSE,        /* r->bouncer: F_REQ, F_QID (mail that came to an SRS address);
	                             fd (O_RDONLY content): is it a returned bounce, and of what? */
	MXF_MSG_DSN_PARSE_REPLY,  /* bouncer->r: F_REQ, F_QID, F_CODE (250: a report or our queue ID
	                             found; 550: neither), F_BOUNCE_QID (original queue ID or ""),
	                             F_MSGID, F_RCPT, F_ACTION, F_ESC, F_TEXT, F_RELAY (from the
	                             report; "" when absent) */
	/* DKIM/ARC signing oracle (doc/design.md "Signatures"): deliverd builds
	 * the signature header and its digest, the router, which alone holds
	 * the keys, signs the digest. Only on a connection with role "signer"
	 * (deliverd's user). */
	MXF_MSG_SIGN,             /* signer->r: F_REQ, F_DOMAIN, F_SELECTOR, F_DIGEST (32 bytes) */
	MXF_MSG_SIGN_REPLY,       /* r->signer: F_REQ, F_CODE (250, or 550: no such key / failed),
	                             F_SIG (bytes; empty unless 250) */
	/* Issue 11: the operator's allow/block lists, which the router holds
	 * compiled in memory (smtpd cannot open rules.db). */
	MXF_MSG_ACCESS_CHECK,     /* smtpd->r: F_REQ, F_CLIENT_IP [, F_HELO, F_SENDER (at MAIL)] */
	MXF_MSG_ACCESS_REPLY,     /* r->smtpd: F_REQ, F_ACTION ("none", "allow", "allow-sender",
	                             "block" (the client), "block-sender"), F_TEXT (the operator's reason or ""), F_ADDR (the
	                             matching entry or "") [, F_MAIL_FINAL (at connect)] */
	MXF_MSG_REJECT_LOG,       /* smtpd->r, no reply: a refusal smtpd made itself, for the
	                             activity log: F_CLIENT_IP, F_HELO, F_SENDER, F_RCPT (or ""),
	                             F_CODE, F_ESC, F_TEXT, F_REASON */
	MXF_MSG_SMTPD_STATS,      /* smtpd->r, fire and forget: F_SESSIONS, F_TLS_SESSIONS (u64,
	                             counted since the last STATS), F_ACTIVE (u64, sessions open now) */
	MXF_MSG_WORK,             /* r->workerd (issue 13): F_REQ, F_QID, F_WORKER, F_RUNTIME ("js"|
	                             "program"), F_PATH (program) or F_SCRIPT (js source), F_ENV*
	                             ("KEY=VALUE"), F_TIMEOUT (u64 s), F_SENDER, F_ADDR (the custom
	                             address), F_CLIENT_IP, F_HELO, F_SIZE; fd (O_RDONLY content) */
	MXF_MSG_WORK_RESULT,      /* workerd->r: F_REQ, F_QID, F_CODE (250: decisions follow; 451:
	                             the worker failed, F_TEXT says how), F_TEXT, then parallel
	                             lists F_ACTION* (forward|reject|drop), F_RCPT* (forward: the
	                             destination, else ""), F_REASON*, F_XHEADERS* ("X-A: v\r\n"...);
	                             F_REPLY (at most one; see the tag) */
	MXF_MSG_TYPE_MAX
};

enum mxf_ipc_tag {
	F_ROLE = 1, F_VERSION, F_PID, F_REQ, F_ADDR, F_CODE, F_ESC, F_TEXT, F_QID,
	F_SENDER, F_RCPT, F_SIZE, F_CLIENT_IP, F_CLIENT_NAME, F_HELO, F_PROTO,
	F_DOMAIN, F_RIDX, F_HEADERS, F_RELAY, F_BOUNCE_QID,
	F_NEXTHOP, /* DELIVER: optional transport override "host:port" or "[addr]:port" */
	/* COMMIT from smtpd (DSN, RFC 3461): F_RET and F_ENVID once, F_DSN_NOTIFY and
	 * F_ORCPT once per F_RCPT (parallel lists; "" when the client gave none);
	 * F_TLS "version=V cipher=C bits=N" or "" (F_PROTO is the RFC 3848 keyword). */
	F_RET, F_ENVID, F_DSN_NOTIFY, F_ORCPT, F_TLS, /* F_NOTIFY is a fcntl.h macro */
	F_COUNT, /* QUEUE_CTL_REPLY: u64 */
	F_MSGID, /* DSN_PARSE_REPLY: Message-ID of the returned message */
	F_LAST_ATTEMPT, /* BOUNCE: u64 unix seconds per F_RCPT (0: never tried) */
	F_ACTION, /* DSN_PARSE_REPLY: the report's Action ("failed", "delivered", ...) or "";
		     BOUNCE: "delayed" or "relayed" (a success notice), absent for failures */
	F_PEER_DSN, /* DELIVER_RESULT: u64 1 when the host that took the message offered DSN */
	F_SELECTOR, F_DIGEST, F_SIG, /* SIGN, SIGN_REPLY */
	/* DELIVER: each F_DKIM "domain selector rsa|ed25519" is one DKIM signature
	 * to add; F_ARC (at most one, rsa) the key to seal an ARC set with. */
	F_DKIM, F_ARC,
	/* COMMIT from smtpd (issue 7), optional: the whole Authentication-Results
	 * field of our checks ("Authentication-Results: ID;...CRLF", folded with
	 * CRLF TAB), which the router validates and prepends to the envelope's
	 * headers. */
	F_AUTH_RESULTS,
	F_REASON, /* REJECT_LOG: the refusal's keyword ("dnsbl:ZONE", "blocklist", "rate", ...) */
	F_SESSIONS, F_TLS_SESSIONS, F_ACTIVE, /* SMTPD_STATS: u64 each */
	/* WORK / WORK_RESULT (issue 13) */
	F_WORKER, F_RUNTIME, F_PATH, F_ENV, F_TIMEOUT, F_SCRIPT, F_XHEADERS, /* and F_REASON */
	F_DMARC, /* RCPT_REPLY 250, optional: the domain's DMARC mode "enforce" or "monitor" */
	/* DELIVER, optional (issue 13): POST the message to this URL instead of
	 * SMTP; then one F_RCPT (the custom address), F_SENDER the original
	 * sender, F_DOMAIN the URL's host. SIGN with F_DOMAIN "" and F_SELECTOR
	 * "webhook": the router's HMAC-SHA256 of F_DIGEST with its webhook secret. */
	F_WEBHOOK,
	/* WORK_RESULT (issue 13): a reply decision is F_ACTION "reply" with
	 * F_RCPT "" and F_XHEADERS ""; F_REASON "" when it passed workerd's
	 * guards, and then its message is the (single) F_REPLY; else F_REASON
	 * says why it is not sent and there is no F_REPLY. */
	F_REPLY,
	F_NETWORK, /* WORK: u64 1 when the worker may open Internet sockets */
	/* COMMIT from smtpd, optional (with F_MSGID): the message's Subject and
	 * Message-ID as mxf_mailhdr_value gives them, for the activity log. */
	F_SUBJECT,
	/* RCPT_CHECK from smtpd, optional u64 1: no queue file is open for this
	 * transaction yet. RCPT_REPLY 250 with F_OPEN_AHEAD 1: the router opens
	 * one now and sends an OPEN_REPLY (success or error) to the same request,
	 * so DATA needs no OPEN round trip. */
	F_OPEN_AHEAD,
	/* ACCESS_REPLY to a connect-time ACCESS_CHECK, optional: u64 1 when no
	 * entry of the router's current lists can change the verdict at MAIL for
	 * this client (no domain or address entries, or the client is
	 * allow-listed by address), so smtpd answers MAIL without asking again. */
	F_MAIL_FINAL,
	F_TAG_MAX
};

/* ---- building ---- */
struct mxf_ipc_msg;
struct mxf_ipc_msg *mxf_ipc_msg_new(uint16_t type);
void mxf_ipc_msg_free(struct mxf_ipc_msg *m);
struct mxf_ipc_msg *mxf_ipc_msg_dup(const struct mxf_ipc_msg *m);
/* Appends a field. Fail with -E2BIG past MXF_IPC_MAX, -EINVAL for a string
 * containing NUL (put_str takes a C string, so that means never). */
int mxf_ipc_put_str(struct mxf_ipc_msg *m, uint16_t tag, const char *s);
int mxf_ipc_put_bytes(struct mxf_ipc_msg *m, uint16_t tag, const void *p, size_t len);
int mxf_ipc_put_u64(struct mxf_ipc_msg *m, uint16_t tag, uint64_t v);
const uint8_t *mxf_ipc_msg_data(const struct mxf_ipc_msg *m, size_t *len);

/* ---- reading ---- */
struct mxf_ipc_view;
/* Decodes a received datagram. Returns -EBADMSG on any malformation. The view
 * points into buf (which must outlive it) and copies nothing. */
int mxf_ipc_decode(const uint8_t *buf, size_t len, struct mxf_ipc_view **out);
void mxf_ipc_view_free(struct mxf_ipc_view *v);
uint16_t mxf_ipc_type(const struct mxf_ipc_view *v);
/* Number of occurrences of tag. */
size_t mxf_ipc_count(const struct mxf_ipc_view *v, uint16_t tag);
/* idx-th occurrence of a string field, NUL-terminated copy kept in the view;
 * NULL when absent or when it contains a NUL byte. */
const char *mxf_ipc_str(const struct mxf_ipc_view *v, uint16_t tag, size_t idx);
/* idx-th occurrence of a u64 field; -ENOENT absent, -EBADMSG wrong length. */
int mxf_ipc_u64(const struct mxf_ipc_view *v, uint16_t tag, size_t idx, uint64_t *out);
/* idx-th occurrence of a field as raw bytes (pointing into the buffer);
 * -ENOENT when absent. */
int mxf_ipc_bytes(const struct mxf_ipc_view *v, uint16_t tag, size_t idx, const uint8_t **p,
		  size_t *len);

/* ---- sockets ---- */
/* Blocking-safe send of one message with an optional fd (-1 for none).
 * Returns 0, -EAGAIN when a non-blocking socket is full, or -errno. */
int mxf_ipc_send(int sock, const struct mxf_ipc_msg *m, int fd);
/* Receives one datagram into buf (capacity MXF_IPC_MAX). *fd_out is the
 * passed descriptor or -1 (extra descriptors are closed). Returns the length,
 * 0 on orderly close, -EAGAIN, -EMSGSIZE on truncation, or -errno. */
ssize_t mxf_ipc_recv(int sock, uint8_t *buf, size_t cap, int *fd_out);
/* Router side: bind+listen a SEQPACKET socket at path (replacing a stale one). */
int mxf_ipc_listen(const char *path, int backlog);
/* Client side: connect a SEQPACKET socket to path. Blocking connect. */
int mxf_ipc_connect(const char *path);
/* Peer credentials of a connected AF_UNIX socket. */
int mxf_ipc_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

/* Blocking request/response helper (for mxferryctl and tests): sends m and
 * waits up to timeout_ms for one reply; *out must be freed with
 * mxf_ipc_reply_free. */
struct mxf_ipc_reply;
int mxf_ipc_call(int sock, const struct mxf_ipc_msg *m, int timeout_ms, struct mxf_ipc_reply **out);
const struct mxf_ipc_view *mxf_ipc_reply_view(const struct mxf_ipc_reply *r);
/* Connects to path and says HELLO as role (blocking, up to timeout_ms for
 * the answer): the socket, or -errno (connect's, the call's, or -EPROTO
 * when the answer is not HELLO_OK). */
int mxf_ipc_hello(const char *path, const char *role, int timeout_ms);
/* The descriptor that came with the reply (now the caller's), or -1. */
int mxf_ipc_reply_take_fd(struct mxf_ipc_reply *r);
void mxf_ipc_reply_free(struct mxf_ipc_reply *r);

#endif
