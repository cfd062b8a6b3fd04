/* http: a sans-I/O parser of HTTP/1.x request heads (RFC 9112) and a
 * response-head writer, for the small servers inside mxferry (the router's
 * metrics endpoint; the API daemon later). It reads the request line and the
 * header fields; a body, if any, is the caller's (mxf_http_body_length says
 * how long it is).
 *
 * Strict by design: the peer is untrusted and the servers are tiny. Lines end
 * in CRLF (a bare CR or LF is refused), no obs-fold, no whitespace before a
 * field's colon, no control characters, one Host (required in HTTP/1.1), no
 * Content-Length beside Transfer-Encoding (request smuggling), bounded head
 * size and field count. */
#ifndef MXF_HTTP_H
#define MXF_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

/* Default bound on the whole head (request line, fields, final CRLF). */
#define MXF_HTTP_HEAD_MAX 8192
#define MXF_HTTP_FIELDS_MAX 64
#define MXF_HTTP_METHOD_MAX 32

struct mxf_http_req;

/* head_max: bound on the head in bytes (0: MXF_HTTP_HEAD_MAX; at least 64).
 * Returns 0 or -ENOMEM/-EINVAL. */
int mxf_http_req_new(size_t head_max, struct mxf_http_req **out);
void mxf_http_req_free(struct mxf_http_req *r);

/* Feeds received bytes. Returns 0 when the head is not complete yet, 1 when
 * it is (*used: how many of these bytes belong to the head; the rest start
 * the body), or -EBADMSG when the request is refused: mxf_http_error_status
 * then gives the answer (400, 414, 431 or 505). Once 1 or negative, every
 * later call returns the same and uses nothing. used may be NULL. */
int mxf_http_feed(struct mxf_http_req *r, const void *data, size_t len, size_t *used);

/* 0 until the parse failed; then the status to answer with. */
unsigned mxf_http_error_status(const struct mxf_http_req *r);

/* After a complete head (NULL or 0 before): */
const char *mxf_http_method(const struct mxf_http_req *r); /* case-sensitive token */
const char *mxf_http_target(const struct mxf_http_req *r); /* as sent */
const char *mxf_http_path(const struct mxf_http_req *r);   /* target up to '?' */
const char *mxf_http_query(const struct mxf_http_req *r);  /* after '?', "" when none */
unsigned mxf_http_version(const struct mxf_http_req *r);   /* 10, 11 (1.x, x>1: 11) */
size_t mxf_http_field_count(const struct mxf_http_req *r);
/* The idx-th field as sent (name as sent, value without surrounding
 * whitespace); -ENOENT past the end. */
int mxf_http_field_at(const struct mxf_http_req *r, size_t idx, const char **name,
		      const char **value);
/* The first field of that name (ASCII case-insensitive), or NULL. */
const char *mxf_http_field(const struct mxf_http_req *r, const char *name);
/* The body's length from Content-Length (0 when absent): 0, or -ENOTSUP for
 * a Transfer-Encoding body (chunked; not supported here). Conflicting or
 * malformed lengths were refused by the parse already. */
int mxf_http_body_length(const struct mxf_http_req *r, uint64_t *len);

/* The reason phrase of a status this module may produce or a server uses. */
const char *mxf_http_reason(unsigned status);
/* Appends "HTTP/1.1 STATUS REASON", Content-Type, Content-Length,
 * Connection: close, the extra lines (each "Name: value\r\n", may be NULL)
 * and the blank line. */
void mxf_http_response_head(struct mxf_strbuf *b, unsigned status, const char *content_type,
			    size_t body_len, const char *extra);

#endif
