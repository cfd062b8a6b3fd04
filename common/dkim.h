/* dkim: the signer's half of DKIM (RFC 6376, RFC 8463) and ARC (RFC 8617),
 * sans-I/O: canonicalisation, header selection, tag lists, base64.
 *
 * Nothing here holds a key. A signer builds the header text with an empty
 * b=, hashes the canonical form with mxf_dkim_sign_digest and gets the
 * signature of that digest from whoever holds the key (in mxferry: the
 * router, over IPC), then appends it with mxf_dkim_finish. The parsers here
 * see hostile input (the message's own headers) and are fuzzed
 * (t/fuzz/fuzz_dkim.c).
 */
#ifndef MXF_DKIM_H
#define MXF_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MXF_DKIM_DIGEST 32 /* SHA-256 */
#define MXF_DKIM_SIG_MAX 512 /* RSA up to 4096 bits; Ed25519 is 64 */
#define MXF_DKIM_SELECTOR_MAX 63

enum mxf_dkim_alg { MXF_DKIM_RSA = 1, MXF_DKIM_ED25519 };
/* "rsa" / "ed25519" and back; -EINVAL for anything else. */
const char *mxf_dkim_alg_name(enum mxf_dkim_alg a);
int mxf_dkim_alg_parse(const char *s, enum mxf_dkim_alg *out);
/* A selector: dot-separated labels of [a-z0-9-], not starting or ending with
 * '-', 1..63 characters in all (so it can name a key file, too). */
bool mxf_dkim_selector_valid(const char *s);

/* Where a private key lives: DATA_DIR/dkim/DOMAIN.SELECTOR.ALG.pem (domain
 * an A-label, selector valid). -ENAMETOOLONG or -EINVAL. */
int mxf_dkim_key_path(const char *data_dir, const char *domain, const char *selector,
		      const char *alg, char *out, size_t len);

/* ---- base64 (RFC 4648, with padding) ---- */
/* Returns the length written (out needs 4 * ceil(len / 3) + 1). */
size_t mxf_b64_encode(const uint8_t *in, size_t len, char *out);
/* Skips whitespace; returns bytes written or -EINVAL (bad character,
 * padding, or more than cap bytes). */
long mxf_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* ---- body canonicalisation (streaming) ---- */
/* Feed the body (the bytes after the header/body separator) in any chunks;
 * lines end with LF, a CR before it is part of the line end. */
struct mxf_dkim_body;
int mxf_dkim_body_new(bool relaxed, struct mxf_dkim_body **out);
/* Optional: also receive the canonical bytes (tests). */
void mxf_dkim_body_set_sink(struct mxf_dkim_body *b, void (*sink)(void *, const char *, size_t),
			    void *arg);
void mxf_dkim_body_feed(struct mxf_dkim_body *b, const char *p, size_t len);
/* Ends the body and gives its SHA-256. */
void mxf_dkim_body_final(struct mxf_dkim_body *b, uint8_t hash[MXF_DKIM_DIGEST]);
void mxf_dkim_body_free(struct mxf_dkim_body *b);

/* ---- header fields ---- */
struct mxf_dkim_field {
	const char *p;  /* "Name: value" with its folding, without the final CRLF */
	size_t len;
	size_t namelen; /* name without the colon and any WSP before it */
};
/* Splits a header block (up to, not including, the empty line; len bytes)
 * into fields. A line without a colon, or a continuation line before any
 * field, is -EBADMSG (the message is not signed then). *out: free(). */
int mxf_dkim_fields(const char *block, size_t len, struct mxf_dkim_field **out, size_t *n);
/* Where the body starts: the offset after the first empty line (CRLFCRLF
 * or LFLF), or len when there is none (no body). *hdrlen is the header
 * block's length without that empty line (its last CRLF included). */
size_t mxf_dkim_split(const char *msg, size_t len, size_t *hdrlen);
/* Relaxed header canonicalisation (RFC 6376 §3.4.2) of one field, appended
 * to out (cap bytes, NUL-terminated), with CRLF when crlf. Returns the new
 * length, or -E2BIG. */
long mxf_dkim_canon_relaxed(const char *field, size_t len, bool crlf, char *out, size_t cap,
			    size_t used);
/* The field's name equals name, ASCII-case-insensitively. */
bool mxf_dkim_field_is(const struct mxf_dkim_field *f, const char *name);

/* ---- tag lists (RFC 6376 §3.2) ---- */
/* Finds tag name in the tag-list value v (len bytes); on success *val and
 * *vlen are its value with surrounding FWS trimmed. -ENOENT absent,
 * -EBADMSG when the list is malformed. */
int mxf_dkim_tag(const char *v, size_t len, const char *name, const char **val, size_t *vlen);

/* ---- signing ---- */
/* What a signature header is built from. */
struct mxf_dkim_sig {
	enum mxf_dkim_alg alg;
	const char *domain, *selector;
	long long t;             /* signature time */
	const char *const *hdrs; /* names for h=, in order (repeats oversign) */
	size_t nhdrs;
	const uint8_t *bh;       /* body hash (MXF_DKIM_DIGEST bytes) */
	int arc_i;               /* 0: DKIM-Signature; else ARC-Message-Signature i= */
};
/* The default list of header names a signature covers (those present are
 * put in h=, From twice). */
extern const char *const mxf_dkim_default_headers[];
extern const size_t mxf_dkim_default_nheaders;

/* Chooses h= for fields: every default name present (once per instance),
 * plus "from" once more (oversigning). names[] must hold 2 * nfields + 1
 * entries; returns the count. -EINVAL when there is no From. */
int mxf_dkim_pick_headers(const struct mxf_dkim_field *f, size_t n, const char **names,
			  size_t cap);

/* Builds the header field text with b= empty ("DKIM-Signature: v=1; ..."
 * folded, no final CRLF) into *hdr, and the SHA-256 of the signed data
 * (the selected fields, bottom-up per RFC 6376 §5.4.2, then this field
 * without b= value and CRLF). Returns 0 or -ENOMEM / -E2BIG. *hdr: free(). */
int mxf_dkim_sign_digest(const struct mxf_dkim_sig *s, const struct mxf_dkim_field *f, size_t n,
			 char **hdr, uint8_t digest[MXF_DKIM_DIGEST]);
/* Appends the base64 signature (folded) and CRLF to hdr (reallocated). */
int mxf_dkim_finish(char **hdr, const uint8_t *sig, size_t siglen);

/* ---- ARC (RFC 8617) ---- */
struct mxf_arc_state {
	int max_i;        /* highest instance present (0: none) */
	bool failed;      /* the latest ARC-Seal says cv=fail */
	bool broken;      /* sets are incomplete, repeated or malformed */
};
/* Looks at the ARC header fields among f. */
void mxf_arc_scan(const struct mxf_dkim_field *f, size_t n, struct mxf_arc_state *st);
/* The ARC-Seal of instance i (cv "none"/"pass"/"fail"): header text with
 * b= empty into *hdr and the digest over every set 1..i-1 from f, then
 * aar and ams (complete fields of instance i, without CRLF), then this seal. */
int mxf_arc_seal_digest(const struct mxf_dkim_field *f, size_t n, int i, const char *cv,
			const char *domain, const char *selector, long long t, const char *aar,
			const char *ams, char **hdr, uint8_t digest[MXF_DKIM_DIGEST]);


/* ---- verifying (ARC chain validation, smtpd) ---- */
enum mxf_arc_kind { MXF_ARC_AAR = 0, MXF_ARC_AMS, MXF_ARC_AS };
/* Which ARC field f is (an mxf_arc_kind, or -1 for another field) and its
 * instance into *inst (0 when i= is missing, malformed or outside 1..50). */
int mxf_arc_field_kind(const struct mxf_dkim_field *f, int *inst);
/* The header hash a DKIM-style signature field sig (DKIM-Signature or
 * ARC-Message-Signature, one of f or not) claims: the fields its h= names,
 * bottom-up (RFC 6376 §5.4.2), canonicalised relaxed or simple, then sig
 * itself with the b= value emptied and no CRLF. -EBADMSG without a usable
 * h= or b=, -ENOMEM. */
int mxf_dkim_verify_digest(const struct mxf_dkim_field *f, size_t n,
			   const struct mxf_dkim_field *sig, bool relaxed,
			   uint8_t digest[MXF_DKIM_DIGEST]);
/* The hash the ARC-Seal of instance inst signs (RFC 8617 §5.1.1): the sets
 * 1..inst, AAR, AMS, AS each, relaxed, that seal last with its b= value
 * emptied and no CRLF. Each set must be in f exactly once (-EBADMSG). */
int mxf_arc_seal_verify_digest(const struct mxf_dkim_field *f, size_t n, int inst,
			       uint8_t digest[MXF_DKIM_DIGEST]);

#endif
