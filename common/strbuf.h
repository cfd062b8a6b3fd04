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
/* Frees the contents and empties the buffer. */
void mxf_sb_free(struct mxf_strbuf *b);

#endif
