/* mxferryctl: messages, escaping and tables. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

int ctl_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mxferryctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return CTL_REFUSED;
}

void ctl_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mxferryctl: warning: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

char *ctl_safe(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	if (cap == 0)
		return dst;
	for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
		unsigned char c = *p;
		/* C1 controls in UTF-8 are 0xc2 0x80..0x9f: some terminals act on them. */
		bool c1 = c == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;
		if (!(c < 0x20 || c == 0x7f || c == '\\' || c1)) {
			if (o + 1 >= cap)
				break;
			dst[o++] = (char)c;
			continue;
		}
		size_t n = c1 ? 2 : 1;
		if (o + 4 * n >= cap)
			break;
		for (size_t i = 0; i < n; i++) {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[p[i] >> 4];
			dst[o++] = hex[p[i] & 15];
		}
		p += n - 1;
	}
	dst[o] = '\0';
	return dst;
}

void ctl_time(char *dst, size_t cap, time_t t)
{
	struct tm tm;
	if (!localtime_r(&t, &tm) || strftime(dst, cap, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(dst, cap, "%lld", (long long)t);
}

struct ctl_table {
	size_t ncol, nrow, cap;
	char **cells; /* row-major, row 0 is the header */
};

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		fputs("mxferryctl: out of memory\n", stderr);
		exit(CTL_REFUSED);
	}
	return q;
}

struct ctl_table *ctl_table_new(size_t ncol, const char *const *header)
{
	struct ctl_table *t = xrealloc(NULL, sizeof(*t));
	*t = (struct ctl_table){.ncol = ncol};
	ctl_table_add(t, header);
	return t;
}

void ctl_table_add(struct ctl_table *t, const char *const *cells)
{
	if (t->nrow == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 16;
		t->cells = xrealloc(t->cells, t->cap * t->ncol * sizeof(*t->cells));
	}
	for (size_t i = 0; i < t->ncol; i++) {
		const char *c = cells[i] ? cells[i] : "";
		char *d = xrealloc(NULL, strlen(c) + 1);
		strcpy(d, c);
		t->cells[t->nrow * t->ncol + i] = d;
	}
	t->nrow++;
}

size_t ctl_table_rows(const struct ctl_table *t)
{
	return t->nrow - 1;
}

/* Display width: code points, not bytes (no East Asian width table). */
static size_t width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

void ctl_table_print(const struct ctl_table *t)
{
	size_t *w = xrealloc(NULL, t->ncol * sizeof(*w));
	for (size_t c = 0; c < t->ncol; c++) {
		w[c] = 0;
		for (size_t r = 0; r < t->nrow; r++) {
			size_t x = width(t->cells[r * t->ncol + c]);
			if (x > w[c])
				w[c] = x;
		}
	}
	for (size_t r = 0; r < t->nrow; r++) {
		for (size_t c = 0; c < t->ncol; c++) {
			const char *s = t->cells[r * t->ncol + c];
			fputs(s, stdout);
			if (c + 1 < t->ncol)
				printf("%*s", (int)(w[c] - width(s) + 2), "");
		}
		putchar('\n');
	}
	free(w);
}

void ctl_table_free(struct ctl_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nrow * t->ncol; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}
