#include "http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum state { ST_REQLINE, ST_FIELDS, ST_DONE, ST_ERROR };

struct mxf_http_req {
	char *buf; /* the head as received; lines are NUL-split in place */
	size_t cap, len;
	size_t line_start;
	bool saw_cr;
	enum state state;
	unsigned status;
	const char *method, *target, *query;
	char *path;
	unsigned version;
	size_t nfields;
	const char *name[MXF_HTTP_FIELDS_MAX], *value[MXF_HTTP_FIELDS_MAX];
	uint64_t body_len;
	bool chunked;
};

int mxf_http_req_new(size_t head_max, struct mxf_http_req **out)
{
	if (head_max == 0)
		head_max = MXF_HTTP_HEAD_MAX;
	if (head_max < 64)
		return -EINVAL;
	struct mxf_http_req *r = calloc(1, sizeof(*r));
	if (!r || !(r->buf = malloc(head_max))) {
		free(r);
		return -ENOMEM;
	}
	r->cap = head_max;
	*out = r;
	return 0;
}

void mxf_http_req_free(struct mxf_http_req *r)
{
	if (!r)
		return;
	free(r->buf);
	free(r->path);
	free(r);
}

/* RFC 9110 5.6.2 tchar. */
static bool tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int fail(struct mxf_http_req *r, unsigned status)
{
	r->state = ST_ERROR;
	r->status = status;
	return -EBADMSG;
}

/* method SP request-target SP HTTP-version, already free of control
 * characters (checked as the bytes came in). */
static int request_line(struct mxf_http_req *r, char *s)
{
	char *sp1 = strchr(s, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == s || sp2 == sp1 + 1)
		return fail(r, 400);
	*sp1 = *sp2 = '\0';
	const char *method = s, *target = sp1 + 1, *ver = sp2 + 1;
	size_t mlen = (size_t)(sp1 - s);
	if (mlen > MXF_HTTP_METHOD_MAX)
		return fail(r, 400);
	for (size_t i = 0; i < mlen; i++)
		if (!tchar((unsigned char)method[i]))
			return fail(r, 400);
	/* A fragment never travels in a request (RFC 9112 3.2). */
	if (strchr(target, '#'))
		return fail(r, 400);
	if (strlen(ver) != 8 || strncmp(ver, "HTTP/", 5) != 0 || ver[6] != '.' ||
	    ver[5] < '0' || ver[5] > '9' || ver[7] < '0' || ver[7] > '9')
		return fail(r, 400);
	if (ver[5] != '1')
		return fail(r, 505);
	r->version = ver[7] == '0' ? 10 : 11;
	const char *q = strchr(target, '?');
	size_t plen = q ? (size_t)(q - target) : strlen(target);
	if (!(r->path = strndup(target, plen)))
		return fail(r, 500);
	r->method = method;
	r->target = target;
	r->query = q ? q + 1 : "";
	r->state = ST_FIELDS;
	return 0;
}

static int field_line(struct mxf_http_req *r, char *s)
{
	/* obs-fold, or whitespace before the first field (RFC 9112 2.2, 5.2). */
	if (*s == ' ' || *s == '\t')
		return fail(r, 400);
	char *colon = strchr(s, ':');
	if (!colon || colon == s)
		return fail(r, 400);
	for (char *p = s; p < colon; p++)
		if (!tchar((unsigned char)*p))
			return fail(r, 400); /* includes whitespace before the colon */
	if (r->nfields == MXF_HTTP_FIELDS_MAX)
		return fail(r, 431);
	*colon = '\0';
	char *v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	char *end = v + strlen(v);
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*end = '\0';
	r->name[r->nfields] = s;
	r->value[r->nfields] = v;
	r->nfields++;
	return 0;
}

/* The whole head is in: the checks that need every field. */
static int head_done(struct mxf_http_req *r)
{
	size_t hosts = 0, lengths = 0, te = 0;
	uint64_t len = 0;
	for (size_t i = 0; i < r->nfields; i++) {
		if (strcasecmp(r->name[i], "Host") == 0)
			hosts++;
		else if (strcasecmp(r->name[i], "Transfer-Encoding") == 0)
			te++;
		else if (strcasecmp(r->name[i], "Content-Length") == 0) {
			const char *v = r->value[i];
			uint64_t n = 0;
			if (!*v)
				return fail(r, 400);
			for (; *v; v++) {
				if (*v < '0' || *v > '9' || n > (UINT64_MAX - 9) / 10)
					return fail(r, 400);
				n = n * 10 + (uint64_t)(*v - '0');
			}
			/* Repeated lengths must agree (RFC 9112 6.3). */
			if (lengths++ && n != len)
				return fail(r, 400);
			len = n;
		}
	}
	/* HTTP/1.1 requires exactly one Host (RFC 9112 3.2). */
	if (hosts > 1 || (r->version == 11 && hosts == 0))
		return fail(r, 400);
	/* Both framings at once is how requests are smuggled past proxies. */
	if (te && lengths)
		return fail(r, 400);
	r->body_len = len;
	r->chunked = te > 0;
	r->state = ST_DONE;
	return 1;
}

static bool byte_ok(enum state st, unsigned char c)
{
	if (st == ST_REQLINE)
		return c >= 0x20 && c < 0x7f;
	/* field-value: VCHAR, SP, HTAB, obs-text */
	return (c >= 0x20 && c != 0x7f) || c == '\t';
}

int mxf_http_feed(struct mxf_http_req *r, const void *data, size_t len, size_t *used)
{
	const unsigned char *p = data;
	size_t i;
	if (used)
		*used = 0;
	if (r->state == ST_DONE)
		return 1;
	if (r->state == ST_ERROR)
		return -EBADMSG;
	for (i = 0; i < len; i++) {
		unsigned char c = p[i];
		if (r->len == r->cap)
			return fail(r, r->state == ST_REQLINE ? 414 : 431);
		r->buf[r->len++] = (char)c;
		if (r->saw_cr) {
			if (c != '\n')
				return fail(r, 400);
			r->saw_cr = false;
			char *line = r->buf + r->line_start;
			r->buf[r->len - 2] = '\0';
			r->line_start = r->len;
			int k = 0;
			if (r->state == ST_REQLINE) {
				/* Empty lines before the request line are ignored
				 * (RFC 9112 2.2). */
				if (*line)
					k = request_line(r, line);
			} else if (*line) {
				k = field_line(r, line);
			} else {
				k = head_done(r);
			}
			if (k < 0)
				return k;
			if (k == 1) {
				if (used)
					*used = i + 1;
				return 1;
			}
		} else if (c == '\r') {
			r->saw_cr = true;
		} else if (!byte_ok(r->state, c)) {
			/* A bare LF, NUL or other control byte: refused at once. */
			return fail(r, 400);
		}
	}
	if (used)
		*used = len;
	return 0;
}

unsigned mxf_http_error_status(const struct mxf_http_req *r)
{
	return r->state == ST_ERROR ? r->status : 0;
}

const char *mxf_http_method(const struct mxf_http_req *r)
{
	return r->state == ST_DONE ? r->method : NULL;
}

const char *mxf_http_target(const struct mxf_http_req *r)
{
	return r->state == ST_DONE ? r->target : NULL;
}

const char *mxf_http_path(const struct mxf_http_req *r)
{
	return r->state == ST_DONE ? r->path : NULL;
}

const char *mxf_http_query(const struct mxf_http_req *r)
{
	return r->state == ST_DONE ? r->query : NULL;
}

unsigned mxf_http_version(const struct mxf_http_req *r)
{
	return r->state == ST_DONE ? r->version : 0;
}

size_t mxf_http_field_count(const struct mxf_http_req *r)
{
	return r->state == ST_DONE ? r->nfields : 0;
}

int mxf_http_field_at(const struct mxf_http_req *r, size_t idx, const char **name,
		      const char **value)
{
	if (r->state != ST_DONE || idx >= r->nfields)
		return -ENOENT;
	*name = r->name[idx];
	*value = r->value[idx];
	return 0;
}

const char *mxf_http_field(const struct mxf_http_req *r, const char *name)
{
	if (r->state != ST_DONE)
		return NULL;
	for (size_t i = 0; i < r->nfields; i++)
		if (strcasecmp(r->name[i], name) == 0)
			return r->value[i];
	return NULL;
}

int mxf_http_body_length(const struct mxf_http_req *r, uint64_t *len)
{
	*len = 0;
	if (r->state != ST_DONE)
		return -EINVAL;
	if (r->chunked)
		return -ENOTSUP;
	*len = r->body_len;
	return 0;
}

const char *mxf_http_reason(unsigned status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

void mxf_http_response_head(struct mxf_strbuf *b, unsigned status, const char *content_type,
			    size_t body_len, const char *extra)
{
	mxf_sb_printf(b, "HTTP/1.1 %u %s\r\n", status, mxf_http_reason(status));
	if (content_type)
		mxf_sb_printf(b, "Content-Type: %s\r\n", content_type);
	mxf_sb_printf(b, "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", body_len,
		      extra ? extra : "");
}
