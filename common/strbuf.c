#include "strbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mxf_sb_add(struct mxf_strbuf *b, const void *s, size_t n)
{
	if (b->err)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 1024;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->err = -ENOMEM;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void mxf_sb_str(struct mxf_strbuf *b, const char *s)
{
	mxf_sb_add(b, s, strlen(s));
}

void mxf_sb_printf(struct mxf_strbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		if (!b->err)
			b->err = -EINVAL;
		return;
	}
	char *tmp = malloc((size_t)n + 1);
	if (!tmp) {
		if (!b->err)
			b->err = -ENOMEM;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(tmp, (size_t)n + 1, fmt, ap);
	va_end(ap);
	mxf_sb_add(b, tmp, (size_t)n);
	free(tmp);
}

void mxf_sb_free(struct mxf_strbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->err = 0;
}

size_t mxf_utf8_len(const void *s, size_t n)
{
	const unsigned char *p = s;
	unsigned char c = p[0];
	size_t l;
	unsigned lo = 0x80, hi = 0xbf;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		l = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		l = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		l = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < l || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < l; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return l;
}

void mxf_sb_json_str(struct mxf_strbuf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	mxf_sb_add(b, "\"", 1);
	for (size_t i = 0; i < n;) {
		unsigned c = p[i];
		size_t len = mxf_utf8_len(p + i, n - i);
		if (len == 0) {
			mxf_sb_add(b, "\\ufffd", 6);
			i++;
		} else if (len > 1) {
			mxf_sb_add(b, &p[i], len);
			i += len;
		} else {
			if (c == '"' || c == '\\') {
				char e[2] = {'\\', (char)c};
				mxf_sb_add(b, e, 2);
			} else if (c == '\n') {
				mxf_sb_add(b, "\\n", 2);
			} else if (c == '\r') {
				mxf_sb_add(b, "\\r", 2);
			} else if (c == '\t') {
				mxf_sb_add(b, "\\t", 2);
			} else if (c < 0x20 || c == 0x7f) {
				mxf_sb_printf(b, "\\u%04x", c);
			} else {
				mxf_sb_add(b, &p[i], 1);
			}
			i++;
		}
	}
	mxf_sb_add(b, "\"", 1);
}
