/* The HTTP request-head parser (common/http.h): hostile bytes, whole and in
 * chunks, must give the same request or the same refusal, within bounds. */
#include "fuzz.h"
#include "http.h"

#include <errno.h>

struct result {
	int k;
	unsigned status;
	size_t used;
	char *method, *target, *path, *query;
	unsigned version;
	size_t nfields;
	struct mxf_strbuf fields;
};

static void run(const uint8_t *in, size_t n, struct fuzz_chunker *ch, struct result *res)
{
	struct mxf_http_req *r;
	FUZZ_CHECK(mxf_http_req_new(256 + (n & 0x3ff), &r) == 0);
	memset(res, 0, sizeof(*res));
	size_t pos = 0;
	int k = 0;
	while (pos < n) {
		size_t len = ch ? fuzz_chunk(ch, n - pos) : n - pos, used = 0;
		k = mxf_http_feed(r, in + pos, len, &used);
		FUZZ_CHECK(k == 0 || k == 1 || k == -EBADMSG);
		FUZZ_CHECK(used <= len);
		FUZZ_CHECK(k != 0 || used == len);
		res->used += used;
		pos += len;
		if (k != 0)
			break;
	}
	res->k = k;
	res->status = mxf_http_error_status(r);
	if (k < 0)
		FUZZ_CHECK(res->status == 400 || res->status == 414 || res->status == 431 ||
			   res->status == 505 || res->status == 500);
	else
		FUZZ_CHECK(res->status == 0);
	if (k == 1) {
		const char *m = mxf_http_method(r), *t = mxf_http_target(r), *p = mxf_http_path(r);
		FUZZ_CHECK(m && t && p && mxf_http_query(r));
		FUZZ_CHECK(*m && strlen(m) <= MXF_HTTP_METHOD_MAX && !strpbrk(m, " \r\n:"));
		FUZZ_CHECK(*t && !strpbrk(t, " \r\n#"));
		FUZZ_CHECK(strncmp(t, p, strlen(p)) == 0);
		res->version = mxf_http_version(r);
		FUZZ_CHECK(res->version == 10 || res->version == 11);
		res->nfields = mxf_http_field_count(r);
		FUZZ_CHECK(res->nfields <= MXF_HTTP_FIELDS_MAX);
		FUZZ_CHECK(res->version == 10 || mxf_http_field(r, "host"));
		for (size_t i = 0; i < res->nfields; i++) {
			const char *name, *value;
			FUZZ_CHECK(mxf_http_field_at(r, i, &name, &value) == 0);
			FUZZ_CHECK(*name && !strpbrk(name, " \t\r\n:"));
			FUZZ_CHECK(!strpbrk(value, "\r\n"));
			mxf_sb_printf(&res->fields, "%s=%s;", name, value);
		}
		uint64_t blen;
		int b = mxf_http_body_length(r, &blen);
		FUZZ_CHECK(b == 0 || b == -ENOTSUP);
		res->method = strdup(m);
		res->target = strdup(t);
		res->path = strdup(p);
		res->query = strdup(mxf_http_query(r));
	} else {
		FUZZ_CHECK(!mxf_http_method(r) && mxf_http_field_count(r) == 0);
	}
	mxf_http_req_free(r);
}

static void done(struct result *r)
{
	free(r->method);
	free(r->target);
	free(r->path);
	free(r->query);
	mxf_sb_free(&r->fields);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	struct fuzz_chunker ch;
	fuzz_chunker_init(&ch, (uint32_t)data[0] << 8 | data[1]);
	struct result a, b;
	run(data + 2, size - 2, NULL, &a);
	run(data + 2, size - 2, &ch, &b);
	FUZZ_CHECK(a.k == b.k && a.status == b.status);
	if (a.k == 1) {
		/* Where the head ends does not depend on the reads. */
		FUZZ_CHECK(a.used == b.used);
		FUZZ_CHECK(strcmp(a.method, b.method) == 0 && strcmp(a.target, b.target) == 0 &&
			   strcmp(a.path, b.path) == 0 && strcmp(a.query, b.query) == 0);
		FUZZ_CHECK(a.version == b.version && a.nfields == b.nfields);
		FUZZ_CHECK((!a.fields.p && !b.fields.p) ||
			   (a.fields.p && b.fields.p && strcmp(a.fields.p, b.fields.p) == 0));
	}
	done(&a);
	done(&b);
	return 0;
}
