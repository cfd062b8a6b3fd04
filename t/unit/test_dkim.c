#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dkim.h"

struct cap {
	char buf[65536];
	size_t len;
};

static void sink(void *arg, const char *p, size_t n)
{
	struct cap *c = arg;
	assert_true(c->len + n < sizeof(c->buf));
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	c->buf[c->len] = '\0';
}

/* Canonical body of in, fed in chunks of step bytes; returns the base64 hash. */
static void body(bool relaxed, const char *in, size_t step, struct cap *c, char b64[64])
{
	struct mxf_dkim_body *b;
	uint8_t h[MXF_DKIM_DIGEST];
	memset(c, 0, sizeof(*c));
	assert_int_equal(mxf_dkim_body_new(relaxed, &b), 0);
	mxf_dkim_body_set_sink(b, sink, c);
	size_t n = strlen(in);
	for (size_t i = 0; i < n; i += step)
		mxf_dkim_body_feed(b, in + i, n - i < step ? n - i : step);
	mxf_dkim_body_final(b, h);
	mxf_dkim_body_free(b);
	mxf_b64_encode(h, sizeof(h), b64);
}

/* RFC 6376 §3.4.5, the body of the example, in every chunking. */
static void test_rfc6376_body(void **st)
{
	(void)st;
	struct cap c;
	char h[64];
	const char *in = " C \r\nD \t E\r\n\r\n\r\n";
	for (size_t step = 1; step <= strlen(in); step++) {
		body(true, in, step, &c, h);
		assert_string_equal(c.buf, " C\r\nD E\r\n");
		body(false, in, step, &c, h);
		assert_string_equal(c.buf, " C \r\nD \t E\r\n");
	}
}

/* A body larger than the hash's block buffer, in every kind of cut: the
 * canonical bytes and the hash do not depend on where the cuts fall. */
static void test_body_blocks(void **st)
{
	(void)st;
	static char in[40000];
	size_t n = 0;
	for (int i = 0; n + 200 < sizeof(in); i++)
		n += (size_t)snprintf(in + n, sizeof(in) - n, "line %d  of\tthe body %*s\r\n%s", i,
				      i % 300, "", i % 17 == 0 ? "\r\n \r\n" : "");
	static struct cap whole, c;
	char h1[64], h2[64];
	for (int relaxed = 0; relaxed < 2; relaxed++) {
		body(relaxed, in, n, &whole, h1);
		size_t steps[] = {1, 3, 4095, 4096, 4097, 9000};
		for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
			body(relaxed, in, steps[k], &c, h2);
			assert_int_equal(c.len, whole.len);
			assert_memory_equal(c.buf, whole.buf, c.len);
			assert_string_equal(h1, h2);
		}
		if (!relaxed)
			assert_memory_equal(whole.buf, in, n); /* simple: the body as it is */
	}
}

/* Hashes as dkimpy computes them (python3-dkim's canonicalization module;
 * the relaxed one is also RFC 8463's example bh=). */
static void test_body_hash_dkimpy(void **st)
{
	(void)st;
	struct cap c;
	char h[64];
	const char *m = "Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n\r\n";
	body(true, m, 7, &c, h);
	assert_string_equal(h, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
	body(false, m, 3, &c, h);
	assert_string_equal(h, "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=");
	body(true, "", 1, &c, h);
	assert_string_equal(h, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
	body(false, "", 1, &c, h);
	assert_string_equal(h, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
	/* No final line end; whitespace-only lines at the end are empty. */
	body(true, "a  b\r\n \t\r\n\r\nc", 1, &c, h);
	assert_string_equal(c.buf, "a b\r\n\r\n\r\nc\r\n");
	body(true, "x\r\n  \r\n\t\r\n", 2, &c, h);
	assert_string_equal(c.buf, "x\r\n");
	body(false, "x\r\n  \r\n", 2, &c, h);
	assert_string_equal(c.buf, "x\r\n  \r\n");
}

/* RFC 6376 §3.4.5, the header fields of the example. */
static void test_rfc6376_headers(void **st)
{
	(void)st;
	const char *blk = "A: X\r\nB : Y\t\r\n\tZ  \r\n";
	struct mxf_dkim_field *f;
	size_t n;
	char out[256];
	assert_int_equal(mxf_dkim_fields(blk, strlen(blk), &f, &n), 0);
	assert_int_equal(n, 2);
	assert_true(mxf_dkim_field_is(&f[1], "b"));
	long k = mxf_dkim_canon_relaxed(f[0].p, f[0].len, true, out, sizeof(out), 0);
	assert_true(k > 0);
	k = mxf_dkim_canon_relaxed(f[1].p, f[1].len, true, out, sizeof(out), (size_t)k);
	assert_string_equal(out, "a:X\r\nb:Y Z\r\n");
	assert_int_equal(mxf_dkim_canon_relaxed(f[1].p, f[1].len, true, out, 5, 0), -E2BIG);
	free(f);
	assert_int_equal(mxf_dkim_fields(" x\r\nA: b\r\n", 10, &f, &n), -EBADMSG);
	assert_int_equal(mxf_dkim_fields("nocolon\r\n", 9, &f, &n), -EBADMSG);

	size_t hl;
	const char *msg = "A: 1\r\nB: 2\r\n\r\nbody\r\n";
	assert_int_equal(mxf_dkim_split(msg, strlen(msg), &hl), 14);
	assert_int_equal(hl, 12);
	assert_int_equal(mxf_dkim_split("A: 1\r\n", 6, &hl), 6);
	assert_int_equal(hl, 6);
}

static void test_tags(void **st)
{
	(void)st;
	const char *v = " v=1; a=rsa-sha256;\r\n\td = example.net ; h=from : to; b=ab\r\n cd;";
	const char *val;
	size_t vl;
	assert_int_equal(mxf_dkim_tag(v, strlen(v), "d", &val, &vl), 0);
	assert_int_equal(vl, 11);
	assert_memory_equal(val, "example.net", 11);
	assert_int_equal(mxf_dkim_tag(v, strlen(v), "b", &val, &vl), 0);
	assert_int_equal(vl, 7);
	assert_int_equal(mxf_dkim_tag(v, strlen(v), "x", &val, &vl), -ENOENT);
	assert_int_equal(mxf_dkim_tag("a=1; a=2", 8, "a", &val, &vl), -EBADMSG);
	assert_int_equal(mxf_dkim_tag("a=1; =2", 7, "a", &val, &vl), -EBADMSG);
	assert_int_equal(mxf_dkim_tag("a", 1, "a", &val, &vl), -EBADMSG);
}

static void test_b64(void **st)
{
	(void)st;
	char o[64];
	uint8_t d[64];
	assert_int_equal(mxf_b64_encode((const uint8_t *)"foob", 4, o), 8);
	assert_string_equal(o, "Zm9vYg==");
	assert_int_equal(mxf_b64_decode("Zm9v\r\n Yg==", 11, d, sizeof(d)), 4);
	assert_memory_equal(d, "foob", 4);
	assert_int_equal(mxf_b64_decode("Zm9vY", 5, d, sizeof(d)), -EINVAL);
	assert_int_equal(mxf_b64_decode("Zm=9", 4, d, sizeof(d)), -EINVAL);
	assert_int_equal(mxf_b64_decode("Zm9v", 4, d, 2), -EINVAL);
}

/* The built header: its tags parse back, h= oversigns From, and the digest
 * changes with any signed field but not with an unsigned one. */
static void test_sign_header(void **st)
{
	(void)st;
	const char *blk = "Received: x\r\nFrom: a@b.example\r\nSubject: hi\r\nX-Other: 1\r\n";
	struct mxf_dkim_field *f;
	size_t n;
	const char *names[16];
	uint8_t bh[MXF_DKIM_DIGEST] = {1, 2, 3}, d1[MXF_DKIM_DIGEST], d2[MXF_DKIM_DIGEST];
	char *h1, *h2;
	assert_int_equal(mxf_dkim_fields(blk, strlen(blk), &f, &n), 0);
	int nn = mxf_dkim_pick_headers(f, n, names, 16);
	assert_int_equal(nn, 3);
	assert_string_equal(names[0], "from");
	assert_string_equal(names[1], "subject");
	assert_string_equal(names[2], "from");
	struct mxf_dkim_sig s = {.alg = MXF_DKIM_ED25519, .domain = "fwd.example", .selector = "s1",
				 .t = 1700000000, .hdrs = names, .nhdrs = (size_t)nn, .bh = bh};
	assert_int_equal(mxf_dkim_sign_digest(&s, f, n, &h1, d1), 0);
	const char *v = strchr(h1, ':') + 1, *val;
	size_t vl;
	assert_int_equal(mxf_dkim_tag(v, strlen(v), "a", &val, &vl), 0);
	assert_memory_equal(val, "ed25519-sha256", vl);
	assert_int_equal(mxf_dkim_tag(v, strlen(v), "h", &val, &vl), 0);
	assert_memory_equal(val, "from:subject:from", vl);
	assert_int_equal(mxf_dkim_tag(v, strlen(v), "b", &val, &vl), 0);
	assert_int_equal(vl, 0);
	free(f);
	/* An unsigned field changed: same digest; a signed one: another. */
	const char *blk2 = "Received: y\r\nFrom: a@b.example\r\nSubject: hi\r\nX-Other: 2\r\n";
	assert_int_equal(mxf_dkim_fields(blk2, strlen(blk2), &f, &n), 0);
	assert_int_equal(mxf_dkim_sign_digest(&s, f, n, &h2, d2), 0);
	assert_memory_equal(d1, d2, sizeof(d1));
	free(h2);
	free(f);
	const char *blk3 = "From: a@b.example\r\nSubject:  hi\r\nFrom: c@d.example\r\n";
	assert_int_equal(mxf_dkim_fields(blk3, strlen(blk3), &f, &n), 0);
	assert_int_equal(mxf_dkim_sign_digest(&s, f, n, &h2, d2), 0);
	assert_memory_not_equal(d1, d2, sizeof(d1));
	free(h2);
	free(f);
	uint8_t sig[64];
	memset(sig, 0xab, sizeof(sig));
	assert_int_equal(mxf_dkim_finish(&h1, sig, sizeof(sig)), 0);
	v = strchr(h1, ':') + 1;
	assert_int_equal(mxf_dkim_tag(v, strlen(v), "b", &val, &vl), 0);
	uint8_t back[64];
	assert_int_equal(mxf_b64_decode(val, vl, back, sizeof(back)), 64);
	assert_memory_equal(back, sig, 64);
	for (const char *p = h1; (p = strchr(p, '\n'));)
		assert_true(*++p == '\t' || *p == '\0');
	free(h1);
}

static void test_arc_scan(void **st)
{
	(void)st;
	struct mxf_dkim_field *f;
	size_t n;
	struct mxf_arc_state a;
	const char *one = "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x; s=y; b=zz\r\n"
			  "ARC-Message-Signature: i=1; a=rsa-sha256; d=x; s=y; h=from; bh=a; b=b\r\n"
			  "ARC-Authentication-Results: i=1; mx.x; spf=pass\r\nFrom: a@b\r\n";
	assert_int_equal(mxf_dkim_fields(one, strlen(one), &f, &n), 0);
	mxf_arc_scan(f, n, &a);
	assert_int_equal(a.max_i, 1);
	assert_false(a.failed);
	assert_false(a.broken);
	char *h;
	uint8_t d[MXF_DKIM_DIGEST];
	assert_int_equal(mxf_arc_seal_digest(f, n, 2, "pass", "fwd.example", "s", 1, "ARC-Authentication-Results: i=2; gw; arc=pass",
					     "ARC-Message-Signature: i=2; b=", &h, d),
			 0);
	assert_non_null(strstr(h, "cv=pass"));
	free(h);
	/* A missing earlier set cannot be sealed over. */
	assert_int_equal(mxf_arc_seal_digest(f, n, 3, "pass", "fwd.example", "s", 1, "A: 1", "B: 2",
					     &h, d),
			 -EBADMSG);
	free(f);
	const char *bad = "ARC-Seal: i=2; cv=fail; b=\r\nARC-Seal: i=1; cv=none; b=\r\n";
	assert_int_equal(mxf_dkim_fields(bad, strlen(bad), &f, &n), 0);
	mxf_arc_scan(f, n, &a);
	assert_int_equal(a.max_i, 2);
	assert_true(a.failed);
	assert_true(a.broken);
	free(f);
}

static void test_selector(void **st)
{
	(void)st;
	assert_true(mxf_dkim_selector_valid("mx2026"));
	assert_true(mxf_dkim_selector_valid("a.b-c"));
	assert_false(mxf_dkim_selector_valid(""));
	assert_false(mxf_dkim_selector_valid("-a"));
	assert_false(mxf_dkim_selector_valid("a..b"));
	assert_false(mxf_dkim_selector_valid("a/b"));
	assert_false(mxf_dkim_selector_valid("A"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc6376_body),  cmocka_unit_test(test_body_hash_dkimpy),
		cmocka_unit_test(test_body_blocks),
		cmocka_unit_test(test_rfc6376_headers), cmocka_unit_test(test_tags),
		cmocka_unit_test(test_b64),           cmocka_unit_test(test_sign_header),
		cmocka_unit_test(test_arc_scan),      cmocka_unit_test(test_selector),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
