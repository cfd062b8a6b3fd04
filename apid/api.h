/* apid's REST API (issue 12): the /client/v4 routes, their JSON in and out,
 * all through common/rulesdb.c so the API accepts and refuses exactly what
 * mxferryctl does. Called from one thread only (libmicrohttpd's). */
#ifndef MXF_APID_API_H
#define MXF_APID_API_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct mxf_rulesdb;
struct api;

struct api_req {
	const char *method;
	const char *path; /* after /client/v4, starting with '/' */
	/* A query parameter's value, or NULL. */
	const char *(*arg)(void *cls, const char *name);
	void *arg_cls;
	const char *body;
	size_t bodylen;
	/* The authenticated token. */
	const char *token_id, *token_name;
	bool read_only;
};

struct api_resp {
	unsigned status;
	char *body; /* malloc'd JSON (the envelope) */
};

struct api *api_new(const struct mxf_config *cfg, struct mxf_rulesdb *db);
void api_free(struct api *a);
/* Always fills resp (errors included, as the envelope). */
void api_handle(struct api *a, const struct api_req *req, struct api_resp *resp);
/* An error envelope (for the HTTP layer: 401, 413, 429, ...). malloc'd. */
char *api_error_body(int code, const char *message);

/* Parsing of query values (exposed for the fuzz target): a time as ISO 8601
 * UTC ("2026-11-29T06:00:00Z", "2026-11-29") or Unix seconds; 0 or -EINVAL. */
int api_parse_time(const char *s, long long *out);
/* A positive decimal integer within [min, max]; 0 or -EINVAL. */
int api_parse_uint(const char *s, long long min, long long max, long long *out);

#endif
