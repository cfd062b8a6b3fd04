#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"

static struct mxf_http_req *newr(size_t max)
{
	struct mxf_http_req *r;
	assert_int_equal(mxf_http_req_new(max, &r), 0);
	return r;
}

/* Feeds s whole; returns the result. */
static int feed(struct mxf_http_req *r, const char *s)
{
	return mxf_http_feed(r, s, strlen(s), NULL);
}

/* Parses s as one request; returns the error status (0 when it parsed). */
static unsigned status_of(const char *s)
{
	struct mxf_http_req *r = newr(0);
	int k = feed(r, s);
	unsigned st = mxf_http_error_status(r);
	if (k == 1)
		assert_int_equal(st, 0);
	else if (k == 0)
		st = 1; /* incomplete */
	else
		assert_int_equal(k, -EBADMSG);
	mxf_http_req_free(r);
	return st;
}

static void test_get(void **state)
{
	(void)state;
	struct mxf_http_req *r = newr(0);
	const char *req = "GET /metrics?x=1&y HTTP/1.1\r\nHost: 127.0.0.1:9325\r\n"
			  "User-Agent: Prometheus/2.45\r\nAccept:  text/plain  \r\n\r\nBODY";
	size_t used = 0;
	assert_int_equal(mxf_http_feed(r, req, strlen(req), &used), 1);
	assert_int_equal(used, strlen(req) - 4);
	assert_string_equal(mxf_http_method(r), "GET");
	assert_string_equal(mxf_http_target(r), "/metrics?x=1&y");
	assert_string_equal(mxf_http_path(r), "/metrics");
	assert_string_equal(mxf_http_query(r), "x=1&y");
	assert_int_equal(mxf_http_version(r), 11);
	assert_int_equal(mxf_http_field_count(r), 3);
	assert_string_equal(mxf_http_field(r, "host"), "127.0.0.1:9325");
	assert_string_equal(mxf_http_field(r, "ACCEPT"), "text/plain");
	assert_null(mxf_http_field(r, "Cookie"));
	const char *n, *v;
	assert_int_equal(mxf_http_field_at(r, 1, &n, &v), 0);
	assert_string_equal(n, "User-Agent");
	assert_string_equal(v, "Prometheus/2.45");
	assert_int_equal(mxf_http_field_at(r, 3, &n, &v), -ENOENT);
	uint64_t len = 1;
	assert_int_equal(mxf_http_body_length(r, &len), 0);
	assert_int_equal(len, 0);
	/* Done is sticky and takes nothing more. */
	assert_int_equal(mxf_http_feed(r, "GET", 3, &used), 1);
	assert_int_equal(used, 0);
	mxf_http_req_free(r);
}

/* Byte by byte gives the same as whole. */
static void test_bytewise(void **state)
{
	(void)state;
	const char *req = "\r\nPOST /api/v1/x HTTP/1.0\r\nContent-Length: 12\r\n\r\n";
	struct mxf_http_req *r = newr(0);
	size_t n = strlen(req);
	for (size_t i = 0; i < n; i++) {
		size_t used = 0;
		int k = mxf_http_feed(r, req + i, 1, &used);
		assert_int_equal(used, 1);
		assert_int_equal(k, i + 1 == n ? 1 : 0);
	}
	assert_string_equal(mxf_http_method(r), "POST");
	assert_string_equal(mxf_http_path(r), "/api/v1/x");
	assert_string_equal(mxf_http_query(r), "");
	assert_int_equal(mxf_http_version(r), 10);
	uint64_t len;
	assert_int_equal(mxf_http_body_length(r, &len), 0);
	assert_int_equal(len, 12);
	mxf_http_req_free(r);
}

static void test_incomplete(void **state)
{
	(void)state;
	struct mxf_http_req *r = newr(0);
	assert_int_equal(feed(r, "GET / HTTP/1.1\r\nHost: a\r\n"), 0);
	assert_null(mxf_http_method(r));
	assert_int_equal(mxf_http_error_status(r), 0);
	assert_int_equal(feed(r, "\r"), 0);
	assert_int_equal(feed(r, "\n"), 1);
	mxf_http_req_free(r);
}

static void test_malformed(void **state)
{
	(void)state;
	assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
	assert_int_equal(status_of("GET / HTTP/1.0\r\n\r\n"), 0);
	assert_int_equal(status_of("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 0);
	const char *bad[] = {
		"garbage\r\n\r\n",
		"GET /\r\n\r\n",
		"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",       /* bare LF */
		"GET / HTTP/1.1\r\rHost: a\r\n\r\n", /* bare CR */
		"GET /\x01 HTTP/1.1\r\n",
		"G\0T / HTTP/1.1\r\n",
		"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
		"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",                     /* no Host */
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", /* two */
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nNo-colon\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/11\r\nHost: a\r\n\r\n",
		"GET / http/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.x\r\nHost: a\r\n\r\n",
		"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\nHost: a\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mxf_http_req *r = newr(0);
		/* bad[7] has a NUL: feed its first 11 bytes. */
		size_t n = i == 7 ? 11 : strlen(bad[i]);
		int k = mxf_http_feed(r, bad[i], n, NULL);
		if (k != -EBADMSG || mxf_http_error_status(r) != 400)
			fail_msg("case %zu (%s): k=%d status=%u", i, bad[i], k,
				 mxf_http_error_status(r));
		/* Failure is sticky. */
		assert_int_equal(feed(r, "\r\n"), -EBADMSG);
		assert_null(mxf_http_method(r));
		mxf_http_req_free(r);
	}
	assert_int_equal(status_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
	assert_int_equal(status_of("GET / HTTP/0.9\r\n\r\n"), 505);
}

/* A control byte is refused as it comes, without waiting for the line. */
static void test_early_refusal(void **state)
{
	(void)state;
	struct mxf_http_req *r = newr(0);
	assert_int_equal(feed(r, "GE"), 0);
	assert_int_equal(mxf_http_feed(r, "\x16\x03\x01", 3, NULL), -EBADMSG);
	assert_int_equal(mxf_http_error_status(r), 400);
	mxf_http_req_free(r);
}

static void test_limits(void **state)
{
	(void)state;
	/* A 9 KiB field: 431. */
	char *big = malloc(10000);
	strcpy(big, "GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ");
	size_t n = strlen(big);
	memset(big + n, 'a', 9 * 1024);
	strcpy(big + n + 9 * 1024, "\r\n\r\n");
	assert_int_equal(status_of(big), 431);
	/* A 9 KiB target: 414. */
	strcpy(big, "GET /");
	memset(big + 5, 'a', 9 * 1024);
	strcpy(big + 5 + 9 * 1024, " HTTP/1.1\r\n\r\n");
	assert_int_equal(status_of(big), 414);
	free(big);

	/* Exactly at the bound parses; one byte over does not. */
	struct mxf_http_req *r = newr(64);
	char fit[64 + 1];
	memset(fit, 0, sizeof(fit));
	/* Pad with an X field so the head is exactly 64 bytes. */
	snprintf(fit, sizeof(fit), "GET / HTTP/1.0\r\nX: %-*s\r\n\r\n", 64 - 16 - 3 - 2 - 2, "");
	assert_int_equal(strlen(fit), 64);
	assert_int_equal(feed(r, fit), 1);
	mxf_http_req_free(r);
	r = newr(64);
	char over[80];
	snprintf(over, sizeof(over), "GET / HTTP/1.0\r\nX: %-*s\r\n\r\n", 64 - 16 - 3 - 2 - 1, "");
	assert_int_equal(feed(r, over), -EBADMSG);
	assert_int_equal(mxf_http_error_status(r), 431);
	mxf_http_req_free(r);

	/* Too many fields: 431. */
	struct mxf_strbuf b = {0};
	mxf_sb_str(&b, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < MXF_HTTP_FIELDS_MAX; i++)
		mxf_sb_printf(&b, "X-%d: %d\r\n", i, i);
	mxf_sb_str(&b, "\r\n");
	assert_int_equal(b.err, 0);
	assert_int_equal(status_of(b.p), 431);
	mxf_sb_free(&b);

	struct mxf_http_req *bad;
	assert_int_equal(mxf_http_req_new(10, &bad), -EINVAL);
}

static void test_chunked(void **state)
{
	(void)state;
	struct mxf_http_req *r = newr(0);
	assert_int_equal(feed(r, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
			 1);
	uint64_t len;
	assert_int_equal(mxf_http_body_length(r, &len), -ENOTSUP);
	mxf_http_req_free(r);
}

static void test_response(void **state)
{
	(void)state;
	struct mxf_strbuf b = {0};
	mxf_http_response_head(&b, 405, "text/plain", 19, "Allow: GET\r\n");
	assert_string_equal(b.p, "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\n"
				 "Content-Length: 19\r\nConnection: close\r\nAllow: GET\r\n\r\n");
	mxf_sb_free(&b);
	assert_string_equal(mxf_http_reason(431), "Request Header Fields Too Large");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get),       cmocka_unit_test(test_bytewise),
		cmocka_unit_test(test_incomplete), cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_early_refusal), cmocka_unit_test(test_limits),
		cmocka_unit_test(test_chunked),   cmocka_unit_test(test_response),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
