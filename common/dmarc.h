/* dmarc: DMARC per RFC 9989 (DMARCbis, which replaces RFC 7489): records,
 * the DNS tree walk that finds both the policy record and the
 * Organizational Domain (no public suffix list), identifier alignment, and
 * the result. Sans-I/O in the sense that matters for tests: every DNS
 * question goes through the caller's txt function (the resolver in smtpd, a
 * table in the unit tests). No `pct` (removed by DMARCbis). Not evaluated:
 * `np` (it needs to know whether the author domain exists: more queries for
 * little gain), reports (rua/ruf).
 *
 * Blocking when txt is: run it on a worker thread. */
#ifndef MXF_DMARC_H
#define MXF_DMARC_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"

enum mxf_dmarc_policy { MXF_DMARC_P_NONE = 0, MXF_DMARC_P_QUARANTINE, MXF_DMARC_P_REJECT };
enum mxf_dmarc_result {
	MXF_DMARC_NONE = 0, /* no policy record */
	MXF_DMARC_PASS,
	MXF_DMARC_FAIL,
	MXF_DMARC_TEMPERROR,
	MXF_DMARC_PERMERROR, /* no usable author domain (several From, none) */
};

struct mxf_dmarc_rec {
	enum mxf_dmarc_policy p, sp;
	bool has_sp;
	bool adkim_strict, aspf_strict;
	int psd; /* -1 absent, 0 "n", 1 "y" */
};

/* Parses one TXT record. Returns 0, or -EINVAL when it is not a DMARC
 * record (does not start with v=DMARC1, malformed tag list). A missing or
 * unknown p is p=none (RFC 9989 §4.7). */
int mxf_dmarc_parse(const char *txt, struct mxf_dmarc_rec *rec);

/* TXT lookup: returns an mxf_dns_rc; on MXF_DNS_OK *txt (mxf_dns_txt_free)
 * holds *n strings. */
typedef int (*mxf_dmarc_txt_fn)(void *arg, const char *name, char ***txt, size_t *n);

struct mxf_dmarc_ctx {
	mxf_dmarc_txt_fn txt;
	void *arg;
	unsigned queries; /* counted, for tests and logs */
	/* answers of this evaluation, so a walk never asks twice */
	struct {
		char name[MXF_DNS_NAME_MAX + 1];
		int rc; /* MXF_DNS_OK: rec valid; NODATA: no (single valid) record */
		struct mxf_dmarc_rec rec;
	} cache[24];
	size_t ncache;
};

/* The policy record for domain: at _dmarc.domain, else up the tree walk.
 * Returns MXF_DNS_OK (rec, and *at_domain true when it was the domain's
 * own), MXF_DNS_NODATA (none), MXF_DNS_TEMPFAIL. */
int mxf_dmarc_find(struct mxf_dmarc_ctx *c, const char *domain, struct mxf_dmarc_rec *rec,
		   bool *at_domain);

/* The Organizational Domain of domain (RFC 9989 §4.10.2) into org.
 * Returns 0 or MXF_DNS_TEMPFAIL. */
int mxf_dmarc_org_domain(struct mxf_dmarc_ctx *c, const char *domain, char *org, size_t cap);

/* Identifier alignment of a (an authenticated domain) with the author
 * domain: strict is equality, relaxed the same Organizational Domain.
 * Returns 1, 0, or MXF_DNS_TEMPFAIL (as a negative: -1). */
int mxf_dmarc_aligned(struct mxf_dmarc_ctx *c, const char *a, const char *from, bool strict);

struct mxf_dmarc_in {
	const char *from_domain; /* NULL: unusable or several (permerror) */
	bool spf_pass;
	const char *spf_domain; /* the MAIL FROM (or HELO) domain */
	const char *const *dkim_pass; /* d= of the signatures that verified */
	size_t ndkim;
	bool no_from; /* no From field at all: none (from_domain NULL) */
};

struct mxf_dmarc_out {
	enum mxf_dmarc_result result;
	enum mxf_dmarc_policy policy; /* the one that applies (p or sp) */
	bool spf_aligned, dkim_aligned;
};

void mxf_dmarc_check(struct mxf_dmarc_ctx *c, const struct mxf_dmarc_in *in,
		     struct mxf_dmarc_out *out);

const char *mxf_dmarc_result_name(enum mxf_dmarc_result r);
const char *mxf_dmarc_policy_name(enum mxf_dmarc_policy p);

#endif
