/* delivery: one blocking delivery attempt of one message to one domain.
 *
 * This is the walking skeleton's simple model: a job runs start to finish on
 * a libuv thread-pool thread with blocking sockets and poll()-based timeouts,
 * and the event loop thread only does IPC. The asynchronous client (STARTTLS,
 * connection reuse, many sessions per thread) replaces it in a later issue.
 */
#ifndef MXF_DELIVERD_DELIVERY_H
#define MXF_DELIVERD_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "queueid.h"

#define DLV_RELAY_SIZE (MXF_DNS_NAME_MAX + 64)

struct dlv_rcpt {
	uint64_t ridx;
	char *addr;
	/* Result: always set by dlv_run. */
	int code;
	char esc[16];
	char *text;
};

struct dlv_job {
	/* Input. */
	char qid[MXF_QID_SIZE];
	char *sender; /* "" = null sender */
	char *domain; /* A-label */
	char *headers; /* CRLF lines, sent before the content */
	int fd;        /* O_RDONLY content */
	size_t nrcpt;
	struct dlv_rcpt *rcpt;
	/* Settings. */
	struct mxf_dns *dns; /* this job's own resolver (not shared) */
	const char *helo;
	unsigned port;
	int connect_timeout_ms;
	int command_timeout_ms;
	/* Output: "host[addr]:port" of the host that took the transaction, or
	 * the last one tried, or "none". */
	char relay[DLV_RELAY_SIZE];
};

/* Runs the delivery; every recipient gets a code, enhanced code and text.
 * Blocking: call from a worker thread. */
void dlv_run(struct dlv_job *j);

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
