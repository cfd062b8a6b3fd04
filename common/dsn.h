/* dsn: builds delivery status notifications (RFC 3464 in an RFC 6522
 * multipart/report; RFC 6533 global forms for SMTPUTF8 mail) and reads the
 * few facts the gateway needs out of a returned one. Pure: bytes in, bytes
 * out; the bouncer does the I/O.
 *
 * Building: every string that came from a remote server is reduced to
 * printable ASCII on one line (printable UTF-8 for the global forms) before
 * it is placed in a header field, so a hostile reply cannot inject headers or
 * MIME parts into the bounce.
 *
 * Parsing (mxf_dsn_parse): the input is hostile mail from anywhere. The
 * parser never allocates, never reads past len, and copies out only cleaned,
 * bounded strings; it does not decode MIME, it looks for the few header-like
 * lines RFC 3464 defines and for our own Received line. */
#ifndef MXF_DSN_H
#define MXF_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "queueid.h"

struct mxf_dsn_rcpt {
	const char *rcpt;       /* Final-Recipient */
	const char *orig_rcpt;  /* ORCPT as given ("rfc822;addr"), or a bare address, or NULL */
	const char *status;     /* enhanced status code, e.g. "5.1.1" */
	const char *remote_mta; /* host the reply came from, or NULL/"" */
	const char *diagnostic; /* the reply, e.g. "550 5.1.1 no such user" */
	const char *action;     /* "failed" (NULL), "delayed", "delivered", "relayed" */
	time_t last_attempt;    /* 0: not tried (no Last-Attempt-Date) */
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
	/* Optional: ENVID (xtext, RFC 3461) for Original-Envelope-Id; the
	 * whole message for RET=FULL (NULL: headers only; the caller leaves
	 * it NULL when the message is over its cap and sets truncated); utf8:
	 * the original was SMTPUTF8, use the RFC 6533 types. */
	const char *envid;
	const char *full;
	size_t full_len;
	bool full_too_big;
	size_t full_cap; /* for the text saying so */
	bool utf8;
};

/* Writes a complete RFC 5322 message (CRLF lines) into a malloc'd buffer. */
int mxf_dsn_build(const struct mxf_dsn *d, char **out, size_t *outlen);

/* Length of the header block at the start of msg (through the empty line),
 * at most max bytes. */
size_t mxf_dsn_header_len(const char *msg, size_t len, size_t max);

/* What a returned bounce says about the message it returns. */
struct mxf_dsn_info {
	bool is_report;           /* multipart/report with a delivery-status part */
	char qid[MXF_QID_SIZE];   /* from our Received line ("by HOST (mxferry) ... id QID"), or "" */
	char message_id[256];     /* Message-ID of the returned message (its headers), or "" */
	char rcpt[256];           /* first Final-Recipient address, or "" */
	char action[32];          /* its Action, or "" */
	char status[16];          /* its Status ("5.1.1"), or "" */
	char remote_mta[256];     /* its Remote-MTA name, or "" */
	char diagnostic[512];     /* its Diagnostic-Code text, or "" */
};

/* Parses msg (a whole message, possibly truncated by the caller). host is our
 * hostname: only a Received line naming it counts. Returns 0 when the message
 * is a delivery report or carries our queue ID, -ENOENT when neither. */
int mxf_dsn_parse(const char *msg, size_t len, const char *host, struct mxf_dsn_info *out);

#endif
