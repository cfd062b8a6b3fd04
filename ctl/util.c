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

/* ---- JSON output ---- */

bool ctl_json;

static struct {
	int depth;
	bool first[32];
} jw = {0, {true}};

/* Writes s as a JSON string: controls as \u00XX, invalid UTF-8 as U+FFFD,
 * so any bytes from the spool or the network still give valid JSON. */
void ctl_json_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	fputc('"', f);
	while (*p) {
		unsigned char c = *p;
		if (c == '"' || c == '\\') {
			fputc('\\', f);
			fputc(c, f);
			p++;
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\u%04x", c);
			p++;
		} else if (c < 0x80) {
			fputc(c, f);
			p++;
		} else {
			size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
			bool ok = n > 0 && c < 0xf5;
			for (size_t i = 1; ok && i < n; i++)
				ok = (p[i] & 0xc0) == 0x80;
			/* No overlongs or surrogates. */
			if (ok && n == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f)))
				ok = false;
			if (ok && n == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f)))
				ok = false;
			if (ok) {
				fwrite(p, 1, n, f);
				p += n;
			} else {
				fputs("\\ufffd", f);
				p++;
			}
		}
	}
	fputc('"', f);
}

static void jkey(const char *key)
{
	if (!jw.first[jw.depth])
		putchar(',');
	jw.first[jw.depth] = false;
	if (key) {
		ctl_json_string(stdout, key);
		putchar(':');
	}
}

void cj_begin(const char *key, bool array)
{
	if (jw.depth > 0)
		jkey(key);
	putchar(array ? '[' : '{');
	if (jw.depth < 31)
		jw.depth++;
	jw.first[jw.depth] = true;
}

void cj_end(bool array)
{
	putchar(array ? ']' : '}');
	if (jw.depth > 0)
		jw.depth--;
	if (jw.depth == 0) {
		putchar('\n');
		jw.first[0] = true;
	}
}

void cj_str(const char *key, const char *v)
{
	jkey(key);
	if (v)
		ctl_json_string(stdout, v);
	else
		fputs("null", stdout);
}

void cj_int(const char *key, long long v)
{
	jkey(key);
	printf("%lld", v);
}

void cj_bool(const char *key, bool v)
{
	jkey(key);
	fputs(v ? "true" : "false", stdout);
}

void cj_raw(const char *key, const char *json)
{
	jkey(key);
	fputs(json && *json ? json : "null", stdout);
}

void ctl_iso(char *dst, size_t cap, time_t t)
{
	struct tm tm;
	if (!gmtime_r(&t, &tm) || strftime(dst, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(dst, cap, "%lld", (long long)t);
}

int ctl_parse_duration(const char *s, long long *out)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+')
		return -1;
	long long v = strtoll(s, &end, 10);
	if (end == s || v < 0 || v > 100LL * 365 * 86400)
		return -1;
	long long mul = 1;
	if (*end == 's')
		end++;
	else if (*end == 'm')
		mul = 60, end++;
	else if (*end == 'h')
		mul = 3600, end++;
	else if (*end == 'd')
		mul = 86400, end++;
	else if (*end == 'w')
		mul = 7 * 86400, end++;
	if (*end)
		return -1;
	*out = v * mul;
	return 0;
}

int ctl_parse_time(const char *s, time_t *out)
{
	long long d;
	if (s[0] == '@') {
		char *end;
		long long v = strtoll(s + 1, &end, 10);
		if (end == s + 1 || *end || v < 0)
			return -1;
		*out = (time_t)v;
		return 0;
	}
	if (ctl_parse_duration(s, &d) == 0 && s[strlen(s) - 1] > '9') {
		*out = time(NULL) - (time_t)d;
		return 0;
	}
	static const char *const fmts[] = {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
					   "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"};
	for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		struct tm tm = {0};
		const char *end = strptime(s, fmts[i], &tm);
		if (end && *end == '\0') {
			tm.tm_isdst = -1;
			time_t t = mktime(&tm);
			if (t == (time_t)-1)
				return -1;
			*out = t;
			return 0;
		}
	}
	return -1;
}
