/* srs: Sender Rewriting Scheme, in postsrsd's (libsrs2's) format
 *   SRS0=HHHH=TT=orig-domain=orig-local@srs-domain
 *   SRS1=HHHH=first-hop==HHHH=TT=orig-domain=orig-local@srs-domain
 * HHHH: first 4 chars of base64(HMAC-SHA1(key, lower(TT orig-domain orig-local)))
 * (SRS1: of lower(first-hop "=HHHH=TT=orig-domain=orig-local")), with one
 * change: base64's '/' is written '_' (some receivers refuse '/' in a local
 * part). Reverse compares case-insensitively and accepts '/' for '_', so
 * addresses minted by postsrsd with the same key still verify.
 * TT: day number (unix days mod 1024) in base32 (A-Z2-7).
 *
 * When the SRS local part would pass 64 octets (RFC 5321's limit), a short
 * database-backed form is used instead:
 *   SRS0=HHHH=TT=ID@srs-domain      (ID: 16 base32 chars; hash over TT ID)
 * where srs.db maps ID to the original sender (rows older than 22 days are
 * purged). The form is told apart by having no '=' after TT.
 *
 * Keys: the secret file holds one key per line, newest first (postsrsd's
 * convention); new addresses are signed with the first, returns verify
 * against every one. A file that is not text (older mxferry wrote 32 raw
 * bytes) is one key. */
#ifndef MXF_SRS_H
#define MXF_SRS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct mxf_srs;

/* Reads the secret file from path; with create, makes a new random one (0600,
 * one line of base64) when the file does not exist. */
int mxf_srs_load_secret(const char *path, int create, uint8_t *buf, size_t cap, size_t *len);
/* secret: the file's bytes (one or more keys, see above). */
int mxf_srs_new(const uint8_t *secret, size_t len, const char *srs_domain, struct mxf_srs **out);
void mxf_srs_free(struct mxf_srs *s);
size_t mxf_srs_nkeys(const struct mxf_srs *s);
/* Enables the short database-backed form (creates the SQLite file). */
int mxf_srs_open_db(struct mxf_srs *s, const char *path);
/* sender "local@domain" -> SRS0 (or SRS1 when sender is SRS already)
 * address. The null sender stays null (out ""). -ENAMETOOLONG when the
 * result would be too long and no database is open. */
int mxf_srs_forward(const struct mxf_srs *s, const char *sender, time_t now, char *out,
		    size_t outlen);
/* SRS address on our domain -> the address to return mail to (the original
 * sender; for SRS1, the first hop's SRS0 address). -EINVAL not SRS, -EPERM
 * bad hash, -ETIMEDOUT older than max_age_days, -ENOENT unknown database id. */
int mxf_srs_reverse(const struct mxf_srs *s, const char *addr, time_t now, int max_age_days,
		    char *out, size_t outlen);
/* Whether addr's local part looks like SRS (SRS0/SRS1 and a separator). */
int mxf_srs_is_srs(const char *addr);

#endif
