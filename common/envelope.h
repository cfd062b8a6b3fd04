/* envelope: the queue file that describes a message (DESIGN.md §2). The
 * content file is immutable once accepted; the envelope is rewritten
 * (write new, fsync, rename over) whenever a recipient's state changes.
 *
 * Format: text lines "KEY value...\n", every value %XX-encoded so no raw
 * space, CR, LF, NUL or '%' can appear in it (CVE-2020-8794 came from raw
 * envelope lines). First line "V 1", last line "E <crc32 hex>" over all bytes
 * before it; anything after E, a bad checksum, an unknown key or a missing
 * field makes the parse fail and the file goes to corrupt/.
 *
 *   V 1
 *   qid QID | arrival N | size N | sender V | srs_sender V | client_ip V
 *   client_name V | helo V | proto V | origin smtpd|bouncer|ctl|worker | headers V
 *                                  (each exactly once, any order)
 *   ret V | envid V                (DSN, RFC 3461: at most once each, only
 *                                  when not empty; older files have none)
 *   msgid V | subject V            (the message's Message-ID and Subject as
 *                                  smtpd saw them, for the activity log: at
 *                                  most once each, only when not empty)
 *   rcpt ORIG DEST RULE ACTION STATUS ATTEMPTS NEXT_TRY REPLY RELAY [NOTIFY ORCPT]
 *                                  (1 or more; the DSN pair is written when
 *                                  either is not empty, and only then)
 *   E xxxxxxxx                     (CRC-32/IEEE, 8 lower-case hex digits)
 *
 * Values (V): bytes 0x21..0x7e other than '%' stand for themselves; every
 * other byte is %XX (upper-case hex; %00 is invalid). The empty string is a
 * lone "-", so a value that is exactly "-" is written "%2D". The encoding is
 * canonical: escaping a byte that needs none, lower-case hex, a number with
 * a sign or leading zero, or an extra space is a defect. Format and parse
 * are inverse: any accepted file re-formats to the same bytes. */
#ifndef MXF_ENVELOPE_H
#define MXF_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "queueid.h"

enum mxf_rcpt_status {
	MXF_RS_PENDING = 0, /* not yet tried */
	MXF_RS_DEFERRED,    /* temporary failure, retry at next_try */
	MXF_RS_SENT,        /* delivered (2xx from the destination) */
	MXF_RS_FAILED,      /* permanent failure, bounce still owed */
	MXF_RS_BOUNCED,     /* permanent failure, bounce queued (or none owed) */
	MXF_RS_DROPPED,     /* the rule said drop */
	MXF_RS_RELAYED,     /* delivered to a host without DSN; a success notice still owed
	                       (NOTIFY=SUCCESS, RFC 3461 4.1); then SENT */
};

struct mxf_env_rcpt {
	char *orig;    /* the address given at RCPT TO (the custom address) */
	char *dest;    /* where it is delivered ("" for drop) */
	char *rule;    /* rule tag, "" when none */
	char *action;  /* "forward", "drop", "relay" (bounces: direct to the dest),
			* "webhook" (dest: the URL, POSTed by deliverd; issue 13) */
	enum mxf_rcpt_status status;
	unsigned attempts;
	int64_t next_try; /* unix seconds */
	char *reply;   /* last reply "CODE ESC text" or "" */
	char *relay;   /* last remote host "name[addr]:port" or "" */
	/* DSN (RFC 3461), "" when not given: NOTIFY "NEVER" or a subset of
	 * "SUCCESS,FAILURE,DELAY"; ORCPT "addr-type;xtext". */
	char *notify, *orcpt;
};

struct mxf_env {
	char qid[MXF_QID_SIZE];
	int64_t arrival;      /* unix seconds */
	uint64_t size;        /* content bytes */
	char *sender;         /* original envelope sender, "" = null sender */
	char *srs_sender;     /* sender used at delivery, "" = null sender */
	char *client_ip, *client_name, *helo, *proto;
	char *origin;         /* "smtpd", "bouncer", "ctl" or "worker" */
	char *headers;        /* block prepended at delivery: CRLF-terminated lines */
	char *ret, *envid;    /* DSN: RET "FULL"/"HDRS", ENVID xtext; "" when not given */
	char *msgid, *subject; /* for the activity log only; "" when none */
	size_t nrcpt;
	struct mxf_env_rcpt *rcpt;
};

struct mxf_env *mxf_env_new(const char *qid);
void mxf_env_free(struct mxf_env *e);
/* Setters copy; NULL stores "". */
int mxf_env_set(char **field, const char *value);
/* Appends a recipient (status PENDING); returns its index or -errno. */
int mxf_env_add_rcpt(struct mxf_env *e, const char *orig, const char *dest, const char *rule,
		     const char *action);
const char *mxf_env_status_name(enum mxf_rcpt_status s);

/* Serialises into a malloc'd buffer. */
int mxf_env_format(const struct mxf_env *e, char **buf, size_t *len);
/* Strict, sans-I/O parse of a whole file's bytes. -EBADMSG on any defect. */
int mxf_env_parse(const char *buf, size_t len, struct mxf_env **out);
/* Reads and parses a file (used by the router and by mxferryctl). */
int mxf_env_read(int dirfd, const char *name, struct mxf_env **out);

#endif
