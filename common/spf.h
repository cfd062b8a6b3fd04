/* spf: SPF (RFC 7208) checks with libspf2, whose every DNS question is
 * answered through our own lookups (mxf_dns against [main] dns_resolver, or
 * a test's zone), never through the system resolver.
 *
 * Debian 12's libspf2 1.2.10 has had memory bugs in macro expansion
 * (CVE-2021-20314, CVE-2023-42118 class), so the records it sees are
 * filtered first (mxf_spf_record_filter): bounded length, `exp=` removed
 * (an explanation is never fetched nor expanded: we do not show it), macros
 * only of the RFC's simple form and few. A record that fails the filter is
 * replaced by one that libspf2 answers with permerror.
 *
 * Blocking: run it on a worker thread. */
#ifndef MXF_SPF_H
#define MXF_SPF_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"

enum mxf_spf_result {
	MXF_SPF_NONE = 0,
	MXF_SPF_NEUTRAL,
	MXF_SPF_PASS,
	MXF_SPF_FAIL,
	MXF_SPF_SOFTFAIL,
	MXF_SPF_TEMPERROR,
	MXF_SPF_PERMERROR,
};

/* Longest SPF record evaluated (joined strings); RFC 7208 §3.4 wants them
 * to fit 512-octet answers; real ones stay well under 1 KiB. */
#define MXF_SPF_RECORD_MAX 2048
/* Macro expressions per record. */
#define MXF_SPF_MACROS_MAX 8

/* The lookups SPF needs. Each returns an mxf_dns_rc (or -errno, taken as
 * a temporary failure; -EINVAL, an invalid name, as NXDOMAIN). */
struct mxf_spf_dns {
	int (*txt)(void *arg, const char *name, char ***txt, size_t *n);
	int (*addrs)(void *arg, const char *name, int family, struct mxf_dns_addr *out, size_t cap,
		     size_t *n);
	int (*mx)(void *arg, const char *name, struct mxf_mx **mx, size_t *n);
	int (*ptr)(void *arg, const char *revname, char (*names)[MXF_DNS_NAME_MAX + 1], size_t cap,
		   size_t *n);
	void *arg;
};

/* Lookups through d (the caller's own handle: not thread-safe). */
void mxf_spf_dns_resolver(struct mxf_dns *d, struct mxf_spf_dns *out);

/* Once per process, before any thread runs a check: libspf2's log hooks. */
void mxf_spf_global_init(void);

const char *mxf_spf_result_name(enum mxf_spf_result r);

/* Filters one TXT record: records that are not SPF ("v=spf1" then SP or
 * end) are copied unchanged; an SPF record loses its exp= modifiers and is
 * checked against the limits above. Writes a NUL-terminated record to out
 * (cap >= MXF_SPF_RECORD_MAX + 64). Returns 0 when out is the record
 * (possibly without exp=), 1 when it was refused and out holds a
 * placeholder that evaluates to permerror. */
int mxf_spf_record_filter(const char *in, char *out, size_t cap);

/* Checks client ip (text) for the MAIL FROM identity sender, or, for the
 * null sender (""), the HELO identity (RFC 7208 §2.3, §2.4). receiver is
 * our host name (the %{r} macro). why (may be NULL) gets a short reason.
 * Returns 0 with *res set, or -errno on local failure (no memory). */
int mxf_spf_check(const struct mxf_spf_dns *dns, const char *ip, const char *helo,
		  const char *sender, const char *receiver, enum mxf_spf_result *res, char *why,
		  size_t whylen);

#endif
