/* common/mailhdr.c: the header-section filter (same output however the input
 * is cut), From domains, authserv-ids, tag lists. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailhdr.h"

struct rec {
	char fields[64][256];
	size_t n;
	bool eoh;
	char body[4096];
	size_t blen;
};

static bool on_field(void *arg, const char *f, size_t len, bool whole)
{
	struct rec *r = arg;
	if (r->n < 64)
		snprintf(r->fields[r->n++], 256, "%s%.*s", whole ? "" : "PARTIAL:",
			 (int)(len > 200 ? 200 : len), f);
	/* Drop Authentication-Results claiming "mx.test". */
	char id[64];
	if (mxf_mailhdr_is(f, len, "Authentication-Results") &&
	    mxf_mailhdr_authserv_id(f, len, id, sizeof(id)) == 0 && strcmp(id, "mx.test") == 0)
		return false;
	return true;
}

static void on_eoh(void *arg)
{
	((struct rec *)arg)->eoh = true;
}

static void on_body(void *arg, const char *p, size_t len)
{
	struct rec *r = arg;
	memcpy(r->body + r->blen, p, len);
	r->blen += len;
}

/* Feeds msg in pieces of `step` octets; returns the output (malloc). */
static char *run(const char *msg, size_t step, struct rec *r, size_t *outlen)
{
	struct mxf_mailhdr *h = malloc(sizeof(*h));
	struct mxf_mailhdr_cb cb = {on_field, on_eoh, on_body, r};
	size_t len = strlen(msg), o = 0;
	char *out = malloc(len + MXF_MAILHDR_FIELD_MAX * 2 + 16);
	memset(r, 0, sizeof(*r));
	mxf_mailhdr_init(h, &cb);
	for (size_t i = 0; i < len; i += step) {
		size_t n = len - i < step ? len - i : step;
		o += mxf_mailhdr_feed(h, msg + i, n, out + o);
	}
	o += mxf_mailhdr_end(h, out + o);
	free(h);
	out[o] = '\0';
	*outlen = o;
	return out;
}

static void test_filter(void **st)
{
	(void)st;
	const char *msg = "Received: from a\r\n\tby b; now\r\n"
			  "Authentication-Results: mx.test; spf=pass\r\n"
			  "Authentication-Results: (c) MX.TEST ;\r\n dkim=pass\r\n"
			  "Authentication-Results: other.test; spf=fail\r\n"
			  "From: A <a@Example.COM.>\r\n"
			  "\r\n"
			  "Authentication-Results: mx.test; in the body\r\n";
	const char *want = "Received: from a\r\n\tby b; now\r\n"
			   "Authentication-Results: other.test; spf=fail\r\n"
			   "From: A <a@Example.COM.>\r\n"
			   "\r\n"
			   "Authentication-Results: mx.test; in the body\r\n";
	for (size_t step = 1; step <= strlen(msg); step++) {
		struct rec r;
		size_t ol;
		char *out = run(msg, step, &r, &ol);
		assert_string_equal(out, want);
		assert_int_equal(r.n, 5);
		assert_string_equal(r.fields[0], "Received: from a\r\n\tby b; now\r\n");
		assert_true(r.eoh);
		assert_int_equal(r.blen, strlen("Authentication-Results: mx.test; in the body\r\n"));
		free(out);
	}
}

static void test_no_body_and_long_field(void **st)
{
	(void)st;
	struct rec r;
	size_t ol;
	/* No blank line at all: the last field comes out at the end. */
	char *out = run("Subject: x\r\nX: y\r\n", 3, &r, &ol);
	assert_string_equal(out, "Subject: x\r\nX: y\r\n");
	assert_int_equal(r.n, 2);
	assert_true(r.eoh);
	free(out);

	/* A field longer than the hold buffer: decided on its first part,
	 * passed through whole when kept, dropped whole when not. */
	size_t big = MXF_MAILHDR_FIELD_MAX + 5000;
	char *msg = malloc(2 * big + 200);
	strcpy(msg, "X-Big: ");
	size_t l = strlen(msg);
	memset(msg + l, 'a', big);
	strcpy(msg + l + big, "\r\nAuthentication-Results: mx.test; ");
	l = strlen(msg);
	memset(msg + l, 'b', big);
	strcpy(msg + l + big, "\r\n\r\nbody\r\n");
	out = run(msg, 4096, &r, &ol);
	assert_int_equal(ol, strlen("X-Big: ") + big + 2 + 2 + 6);
	assert_memory_equal(out, msg, strlen("X-Big: ") + big + 2);
	assert_string_equal(out + ol - 8, "\r\nbody\r\n");
	assert_int_equal(strncmp(r.fields[0], "PARTIAL:X-Big", 13), 0);
	free(out);
	free(msg);
}

static void test_authserv_id(void **st)
{
	(void)st;
	char id[64];
	const char *f = "Authentication-Results:  (comment (nested)) Mx.Example 1; spf=pass";
	assert_int_equal(mxf_mailhdr_authserv_id(f, strlen(f), id, sizeof(id)), 0);
	assert_string_equal(id, "mx.example");
	f = "Authentication-Results: \"q.example\"; none";
	assert_int_equal(mxf_mailhdr_authserv_id(f, strlen(f), id, sizeof(id)), 0);
	assert_string_equal(id, "q.example");
	f = "Authentication-Results: ;";
	assert_int_equal(mxf_mailhdr_authserv_id(f, strlen(f), id, sizeof(id)), -EINVAL);
}

static void test_from_domain(void **st)
{
	(void)st;
	char d[256];
	struct {
		const char *f;
		int rc;
		const char *d;
	} c[] = {
		{"From: a@B.example\r\n", 0, "b.example"},
		{"From: \"Doe, John\" <john@x.example>\r\n", 0, "x.example"},
		{"From: (c@evil.example) j <j@good.example> (x@evil.example)", 0, "good.example"},
		{"From: \"a@evil.example\" <b@good.example>", 0, "good.example"},
		{"From: a@one.example, b@two.example", -E2BIG, NULL},
		{"From: A <a@one.example>, B <b@two.example>", -E2BIG, NULL},
		{"From: undisclosed-recipients:;", -EINVAL, NULL},
		{"From: nobody", -EINVAL, NULL},
		{"From: a@[192.0.2.1]", -EINVAL, NULL},
		{"From: <a@x..example>", -EINVAL, NULL},
		{"From: a@x.example.", 0, "x.example"},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		int rc = mxf_mailhdr_from_domain(c[i].f, strlen(c[i].f), d, sizeof(d));
		if (rc != c[i].rc)
			fail_msg("%s: %d, want %d", c[i].f, rc, c[i].rc);
		if (rc == 0)
			assert_string_equal(d, c[i].d);
	}
}

struct tv {
	char out[512];
};

static bool on_tag(void *arg, const char *t, size_t tl, const char *v, size_t vl)
{
	struct tv *x = arg;
	size_t l = strlen(x->out);
	snprintf(x->out + l, sizeof(x->out) - l, "[%.*s=%.*s]", (int)tl, t, (int)vl, v);
	return true;
}

static void test_tags(void **st)
{
	(void)st;
	struct tv x = {""};
	const char *s = " v=1; a=rsa-sha256;\r\n\td = example.com ; b= abc\r\n def ;";
	assert_int_equal(mxf_mailhdr_tags(s, strlen(s), on_tag, &x), 0);
	assert_string_equal(x.out, "[v=1][a=rsa-sha256][d=example.com][b=abc\r\n def]");
	assert_int_equal(mxf_mailhdr_tags("a=1; a=2", 8, on_tag, &x), -EINVAL);
	assert_int_equal(mxf_mailhdr_tags("a=1; novalue", 12, on_tag, &x), -EINVAL);
	assert_int_equal(mxf_mailhdr_tags("1a=1", 4, on_tag, &x), -EINVAL);
}

static void test_value(void **state)
{
	(void)state;
	char out[64];
	const char *f = "Subject:  Hello\r\n\tworld \x01 caf\xc3\xa9 \xff\xc0\xaf end  \r\n";
	size_t n = mxf_mailhdr_value(f, strlen(f), out, sizeof(out));
	/* The fold's CRLF goes, its TAB (a control octet) becomes a space;
	 * \xff, \xc0 and the \xaf after it are no UTF-8: a '?' each. */
	assert_string_equal(out, "Hello world   caf\xc3\xa9 ??? end");
	assert_int_equal(n, strlen(out));
	assert_true(mxf_mailhdr_text_ok(out, 63));
	/* Cut on a character boundary: no half of the two-octet e-acute. */
	const char *g = "Subject: abc\xc3\xa9";
	char small[5];
	assert_int_equal(mxf_mailhdr_value(g, strlen(g), small, sizeof(small)), 3);
	assert_string_equal(small, "abc");
	/* Overlong form, surrogate, above U+10FFFF: each octet a '?'. */
	const char *h = "X: \xe0\x80\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xf0\x9f\x98\x80";
	mxf_mailhdr_value(h, strlen(h), out, sizeof(out));
	assert_string_equal(out, "???|???|????|\xf0\x9f\x98\x80");
	assert_int_equal(mxf_mailhdr_value("Subject:\r\n", 10, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_false(mxf_mailhdr_text_ok("a\tb", 10));
	assert_false(mxf_mailhdr_text_ok("caf\xc3", 10));
	assert_false(mxf_mailhdr_text_ok("abcdef", 5));
	assert_true(mxf_mailhdr_text_ok("", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filter),
		cmocka_unit_test(test_no_body_and_long_field),
		cmocka_unit_test(test_authserv_id),
		cmocka_unit_test(test_from_domain),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_value),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
