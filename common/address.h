/* address: RFC 5321 mailbox parsing and IDN domain handling (libidn2).
 * Domains are kept as lower-case A-labels everywhere inside mxferry and shown
 * as U-labels to people. */
#ifndef MXF_ADDRESS_H
#define MXF_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

#define MXF_LOCAL_MAX 64
#define MXF_DOMAIN_MAX 255
#define MXF_PATH_MAX 256 /* RFC 5321 4.5.3.1.3, including the angle brackets */
#define MXF_ADDR_SIZE 320

/* Allow UTF-8 in the local part (SMTPUTF8). */
#define MXF_ADDR_UTF8 1

/* Converts a domain (ASCII or UTF-8 U-labels) to lower-case A-labels and
 * checks hostname syntax (LDH labels of 1..63, total <= 253). */
int mxf_domain_to_ascii(const char *in, char *out, size_t outlen);
/* A-labels to U-labels for display; falls back to a copy of the input. */
int mxf_domain_to_unicode(const char *in, char *out, size_t outlen);

/* Parses "local@domain" (no angle brackets). Local part: dot-atom or
 * quoted-string, at most 64 octets. Writes local part (as given) and the
 * A-label domain. Returns 0, -EINVAL (syntax) or -ENAMETOOLONG (limits). */
int mxf_addr_parse(const char *in, unsigned flags, char *local, size_t locallen, char *domain,
		   size_t domlen);
/* "local@a-label-domain", the form stored and compared. */
int mxf_addr_normalize(const char *in, unsigned flags, char *out, size_t outlen);

#endif
