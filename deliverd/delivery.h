/* delivery: one delivery attempt of one message to one destination.
 *
 * A job runs start to finish on a libuv thread-pool thread with non-blocking
 * sockets and poll()-based deadlines (the issue allows a worker pool); the
 * event loop thread only does IPC and dispatch. What the workers share —
 * the DNS cache and the idle-connection cache — sits behind mutexes and is
 * never locked across network I/O, so one slow DNS answer or one slow server
 * only holds its own worker.
 */
#ifndef MXF_DELIVERD_DELIVERY_H
#define MXF_DELIVERD_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "queueid.h"

#define DLV_RELAY_SIZE (MXF_DNS_NAME_MAX + 64)
#define DLV_DEST_SIZE (MXF_DNS_NAME_MAX + 16)

/* Settings shared by every job: set once by dlv_init, read-only after. */
struct dlv_settings {
	const char *helo;
	unsigned port;
	int connect_timeout_ms;
	int greeting_timeout_ms;
	int command_timeout_ms; /* EHLO, STARTTLS, MAIL, RCPT, RSET */
	int data_init_timeout_ms;
	int data_block_timeout_ms;
	int data_done_timeout_ms;
	bool prefer_ipv6;
	bool starttls;
	const char *relayhost; /* "" or "host[:port]" / "[addr][:port]" */
	const char *tls_ca_file;
	int cache_time_ms;     /* idle connections kept this long; 0: no reuse */
	unsigned cache_per_dest;
	unsigned cache_total;
};

struct dlv_rcpt {
	uint64_t ridx;
	char *addr;
	char *notify, *orcpt; /* DSN (RFC 3461), wire form; NULL when not given */
	/* Result: always set by dlv_run. */
	int code;
	char esc[16];
	char *text;
};

struct dlv_job {
	/* Input. */
	char qid[MXF_QID_SIZE];
	char *sender;  /* "" = null sender */
	char *domain;  /* A-label */
	char *nexthop; /* NULL, or a transport override from the rules */
	char *headers; /* CRLF lines, sent before the content */
	char *ret, *envid; /* DSN (RFC 3461), wire form; NULL when not given */
	int fd;        /* O_RDONLY content */
	char **dkim;   /* DKIM keys to sign with, "domain selector alg" (deliverd/sign.h) */
	size_t ndkim;
	char *arc;     /* the key to seal an ARC set with, or NULL */
	char *webhook; /* issue 13: POST to this URL instead (deliverd/webhook.h) */
	size_t nrcpt;
	struct dlv_rcpt *rcpt;
	struct mxf_dns *dns; /* this job's own resolver (not shared) */
	/* Output: "host[addr]:port" of the host that took the transaction, or
	 * the last one tried, or "none"; and what the log line adds to it. */
	char relay[DLV_RELAY_SIZE];
	char info[256]; /* "family=ipv6, tls=TLSv1.3/..., conn_use=2" */
	/* The host that took the transaction offered DSN, so the recipients'
	 * NOTIFY went on with them and success notices are its business. */
	bool peer_dsn;
};

/* Reads the settings (copied) and creates the TLS client context: call once
 * on the main thread before the chroot (it loads the CA file). Returns 0 or
 * -errno with a reason in err. */
int dlv_init(const struct dlv_settings *s, char *err, size_t errlen);

/* The destination a job goes to — its nexthop, else the relayhost, else its
 * domain — as the key for concurrency limits and connection reuse. */
void dlv_dest_key(const struct dlv_job *j, char out[DLV_DEST_SIZE]);

/* Runs the delivery; every recipient gets a code, enhanced code and text.
 * Blocking: call from a worker thread. */
void dlv_run(struct dlv_job *j);

/* Sets a recipient's result (code, enhanced code, text copied). */
void dlv_set_result(struct dlv_rcpt *r, int code, const char *esc, const char *text);

/* Closes cached connections idle for longer than the cache time. Any thread. */
void dlv_cache_sweep(void);

/* Dot-stuffing and line-end normalisation of the DATA stream, exposed for
 * reuse: feed the message in any chunks, then finish. out must hold
 * 2 * len + 2 bytes (feed) or 5 bytes (finish); returns bytes written. */
struct dlv_stuffer {
	int bol; /* at the beginning of a line */
	int cr;  /* the previous byte was a CR not yet written */
};
size_t dlv_stuff(struct dlv_stuffer *s, const char *in, size_t len, char *out);
size_t dlv_stuff_finish(struct dlv_stuffer *s, char *out);

#endif
