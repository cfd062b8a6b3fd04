/* dnsrecords: what a routed domain must publish, and whether the live DNS
 * has it (shared by mxferryctl domain dns and apid, issue 12). */
#ifndef MXF_DNSRECORDS_H
#define MXF_DNSRECORDS_H

#include <stddef.h>

#include "config.h"

struct mxf_rulesdb;

enum mxf_dnsrec_kind {
	MXF_RK_MX,
	MXF_RK_SPF,
	MXF_RK_DMARC,
	MXF_RK_DKIM,
	MXF_RK_STS,
	MXF_RK_TLSRPT
};
struct mxf_dnsrec {
	char name[600], type[8], value[1400], note[300];
	enum mxf_dnsrec_kind kind;
	const char *status; /* live DNS: ok, missing, wrong, unknown; NULL: not looked up */
	char found[300];    /* what the live DNS has instead (wrong), or why unknown */
};

/* The records of domain a (an A-label) into r (cap >= 5): MX, SPF, DMARC,
 * MTA-STS, TLS-RPT, then one per DKIM key in rules.db (*nkeys of them).
 * Returns how many, or <0. */
int mxf_dnsrec_build(const struct mxf_config *cfg, struct mxf_rulesdb *db, const char *a,
		     struct mxf_dnsrec *r, size_t cap, size_t *nkeys);
/* Asks [main] dns_resolver for each and sets status/found. 0, or <0 (no
 * resolver) with err. */
int mxf_dnsrec_check(const struct mxf_config *cfg, struct mxf_dnsrec *r, size_t n, char *err,
		     size_t errlen);

#endif
