/* srs: Sender Rewriting Scheme, postsrsd-compatible SRS0 form
 *   SRS0=HHHH=TT=orig-domain=orig-local@srs-domain
 * HHHH: first 4 chars of base64(HMAC-SHA1(secret, lower(TT orig-domain orig-local)))
 * TT: day number (unix days mod 1024) in base32 (A-Z2-7). */
#ifndef MXF_SRS_H
#define MXF_SRS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct mxf_srs;

/* Reads the secret from path; with create, makes a new random one (0600)
 * when the file does not exist. */
int mxf_srs_load_secret(const char *path, int create, uint8_t *buf, size_t cap, size_t *len);
int mxf_srs_new(const uint8_t *secret, size_t len, const char *srs_domain, struct mxf_srs **out);
void mxf_srs_free(struct mxf_srs *s);
/* sender "local@domain" -> SRS0 address. The null sender stays null (out ""). */
int mxf_srs_forward(const struct mxf_srs *s, const char *sender, time_t now, char *out,
		    size_t outlen);
/* SRS0 address -> original sender; -EINVAL not SRS, -EPERM bad hash,
 * -ETIMEDOUT older than max_age_days. */
int mxf_srs_reverse(const struct mxf_srs *s, const char *addr, time_t now, int max_age_days,
		    char *out, size_t outlen);

#endif
