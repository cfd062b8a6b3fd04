/* Inbound email authentication (issue 7): SPF (libspf2), DKIM verification
 * (libopendkim, RSA and Ed25519), DMARC (common/dmarc.c) and the hosted
 * service's "SPF or DKIM must pass" rule, ARC chain validation
 * (common/arcv.c, RFC 8617 §5.2), summed up in one
 * Authentication-Results header (RFC 8601) that the router prepends.
 *
 * The loop thread feeds the message as it is written (auth_filter): the
 * header section goes through common/mailhdr.c, which drops any
 * Authentication-Results claiming our authserv-id, and every kept field and
 * the body go to libopendkim and the ARC validator. At the end of the message
 * auth_check runs the DNS-bound parts (SPF, DKIM and ARC keys, DMARC
 * records) on the thread pool
 * with the [main] dns_resolver resolver, then calls back on the loop with a
 * verdict and the header. */
#ifndef MXF_SMTPD_AUTH_H
#define MXF_SMTPD_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "mailhdr.h"

struct auth;

/* Before the chroot (the resolver may read /etc/resolv.conf). */
void auth_init(const struct mxf_config *cfg);
bool auth_enabled(void);

/* For one message (the queue file just opened). NULL: out of memory. */
struct auth *auth_new(const char *qid, const char *ip, const char *helo, const char *sender);
/* Only when no auth_check is running. */
void auth_free(struct auth *a);

/* Output room that auth_filter may need beyond its input. */
#define AUTH_FILTER_SLACK (MXF_MAILHDR_FIELD_MAX + 4)
/* True while the header section is being read (auth_filter then needs
 * AUTH_FILTER_SLACK octets of room beyond its input). */
bool auth_in_header(const struct auth *a);
/* Decoded content p[0..n) (in the write buffer, room for n + slack):
 * rewrites it in place as it must be written; returns the new length. */
size_t auth_filter(struct auth *a, char *p, size_t n);
/* End of content: a header field still held is written to p (room for
 * AUTH_FILTER_SLACK). Returns its length. Idempotent. */
size_t auth_end(struct auth *a, char *p);
/* Octets of content left out of the file (dropped header fields). */
unsigned long long auth_dropped_octets(const struct auth *a);

/* Whether [auth] dmarc is enforce (a domain may say otherwise, per RCPT). */
bool auth_dmarc_enforced(void);
/* Whether this message's DMARC p=reject failure is refused (every
 * recipient's domain enforces) or only recorded. Default: [auth] dmarc. */
void auth_set_dmarc_enforce(struct auth *a, bool enforce);

/* Starts the checks; done(arg) is called once on the loop. Returns 0 or
 * -errno (then done is never called). */
int auth_check(struct auth *a, void (*done)(void *arg), void *arg);

/* After done: 0 to accept, else the SMTP code with *escode and *text. */
int auth_verdict(const struct auth *a, const char **escode, const char **text);
/* After done: the whole Authentication-Results field, CRLF-terminated. */
const char *auth_header(const struct auth *a);
/* The message's first Subject and Message-ID as mxf_mailhdr_value gives
 * them ("" when none), known once the header is read. */
const char *auth_subject(const struct auth *a);
const char *auth_msgid(const struct auth *a);

#endif
