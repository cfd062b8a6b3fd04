/* dsn: builds delivery status notifications (RFC 3464 in an RFC 6522
 * multipart/report). Pure: strings in, a message out; the bouncer does I/O.
 * Every string that came from a remote server is reduced to printable ASCII
 * on one line before it is placed in a header field, so a hostile reply
 * cannot inject headers or MIME parts into the bounce. */
#ifndef MXF_DSN_H
#define MXF_DSN_H

#include <stddef.h>
#include <time.h>

struct mxf_dsn_rcpt {
	const char *rcpt;       /* Final-Recipient */
	const char *orig_rcpt;  /* the address the sender used, or NULL */
	const char *status;     /* enhanced status code, e.g. "5.1.1" */
	const char *remote_mta; /* host the reply came from, or NULL/"" */
	const char *diagnostic; /* the reply, e.g. "550 5.1.1 no such user" */
};

struct mxf_dsn {
	const char *reporting_mta; /* our hostname */
	const char *qid;           /* queue ID of the failed message */
	const char *sender;        /* the original sender: the bounce's To */
	time_t arrival;            /* when the failed message arrived */
	time_t now;
	const struct mxf_dsn_rcpt *rcpt;
	size_t nrcpt;
	const char *headers; /* the failed message's header block */
	size_t headers_len;
};

/* Writes a complete RFC 5322 message (CRLF lines) into a malloc'd buffer. */
int mxf_dsn_build(const struct mxf_dsn *d, char **out, size_t *outlen);

/* Length of the header block at the start of msg (through the empty line),
 * at most max bytes. */
size_t mxf_dsn_header_len(const char *msg, size_t len, size_t max);

#endif
