/* strbuf: a growing NUL-terminated byte buffer. Errors are sticky: append
 * freely, check err once at the end. A plain struct (zero-initialised is an
 * empty buffer) because it lives on the stack of the function building. */
#ifndef MXF_STRBUF_H
#define MXF_STRBUF_H

#include <stddef.h>

struct mxf_strbuf {
	char *p;
	size_t len, cap;
	int err; /* 0 or -ENOMEM/-EINVAL from the first failed append */
};

void mxf_sb_add(struct mxf_strbuf *b, const void *s, size_t n);
void mxf_sb_str(struct mxf_strbuf *b, const char *s);
void mxf_sb_printf(struct mxf_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string of s[0..n): well-formed UTF-8 passes, every other octet
 * becomes U+FFFD (so any JSON parser takes the result), controls are
 * escaped. */
void mxf_sb_json_str(struct mxf_strbuf *b, const char *s, size_t n);
/* Length of the well-formed UTF-8 sequence at p[0..n) (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
size_t mxf_utf8_len(const void *p, size_t n);
/* Frees the contents and empties the buffer. */
void mxf_sb_free(struct mxf_strbuf *b);

#endif
