/* arcv: ARC chain validation (RFC 8617 §5.2) of a message as it streams in.
 *
 * The header fields go in one at a time (as common/mailhdr.c hands them
 * over), then the end of the header section, then the body; the structure
 * of the chain is decided at the end of the header (so the body is hashed
 * only for a chain worth verifying, with the latest AMS's body
 * canonicalisation), the signatures at the end with keys from the caller's
 * TXT function (the resolver in smtpd, a table in the unit tests). Nothing
 * here does I/O itself; verification blocks when txt does (a pool thread in
 * smtpd). The input is hostile: everything is bounded, and fuzzed
 * (t/fuzz/fuzz_arc.c).
 *
 * Algorithms: rsa-sha256 (RFC 8617) and ed25519-sha256 (RFC 8463, not in
 * RFC 8617 but as cheap as the DKIM case); RSA keys under 1024 bits fail
 * (RFC 8301). Not supported: an AMS with l= (fails: a partial body hash lets
 * anything be appended). */
#ifndef MXF_ARCV_H
#define MXF_ARCV_H

#include <stdbool.h>
#include <stddef.h>

/* Header octets kept for the verification (the AMS may cover any field). */
#define MXF_ARCV_HDR_MAX (1024 * 1024)

enum mxf_arcv_result { MXF_ARCV_NONE = 0, MXF_ARCV_PASS, MXF_ARCV_FAIL };

/* TXT lookup: returns an mxf_dns_rc; on MXF_DNS_OK *txt (mxf_dns_txt_free)
 * holds *n strings. */
typedef int (*mxf_arcv_txt_fn)(void *arg, const char *name, char ***txt, size_t *n);

struct mxf_arcv_out {
	enum mxf_arcv_result result;
	int i;           /* the chain's highest instance (0: no chain) */
	const char *why; /* fail: a short reason, letters, digits, spaces, '=' only */
	bool temp;       /* fail because a key lookup failed temporarily */
	unsigned lookups;
};

struct mxf_arcv;
/* -ENOMEM or 0. */
int mxf_arcv_new(struct mxf_arcv **out);
void mxf_arcv_free(struct mxf_arcv *v);
/* One header field, name to final CRLF (the CRLF may be missing). whole is
 * false for a field cut short (too long to hold): a chain then fails. */
void mxf_arcv_field(struct mxf_arcv *v, const char *f, size_t len, bool whole);
/* The end of the header section (idempotent; mxf_arcv_verify calls it too). */
void mxf_arcv_eoh(struct mxf_arcv *v);
/* Body octets after the empty line, in any cuts. */
void mxf_arcv_body(struct mxf_arcv *v, const char *p, size_t len);
/* Verifies the chain (once). */
void mxf_arcv_verify(struct mxf_arcv *v, mxf_arcv_txt_fn txt, void *arg,
		     struct mxf_arcv_out *out);
const char *mxf_arcv_result_name(enum mxf_arcv_result r);

#endif
