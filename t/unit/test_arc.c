/* common/arcv.c (with dkim.c's verifying half): ARC chain validation
 * (RFC 8617 §5.2) of a two-hop chain sealed by dkimpy's arc_sign (an
 * independent implementation), fed through common/mailhdr.c as smtpd does,
 * and of that chain broken every way §5.2 names. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "arcv.h"
#include "dns.h"
#include "mailhdr.h"

/* Generated with dkimpy's arc_sign (two hops), key below. */
static const char CHAIN2[] =
	"ARC-Seal: i=2; cv=pass; a=rsa-sha256; d=hop1.example; s=s1; t=1767225601;\r\n"
	" b=Y/rxX/ahwOOlDsUu32Z9tZF94+15dvfvv4LPSwoTgon42n7egJliJDYR/A1Iz17VbX7DZ\r\n"
	" VFpUEuefP5UCtdfxrui9+M3yDCrPekcEqmLE5oR3RoXaxNsAlhlmkdzBsLpCiL+01gwSIWo\r\n"
	" GxZG49BSN1PtOFqzOreO3WmBWxqOjk2RkoEb1qe9OKzlmfPltg+yg0Teleyw1d3jPHs1eIc\r\n"
	" /rnbfWKOf2IPEKMsUVh8HNE88Wy8SXDKzkFr3GS6vAr8TO/SfPE1pwAXJAiO5qi1m27JoWz\r\n"
	" tINelkjXAwnkqzvYu9teu7szqelNhUOOnV664wvA4bFVpHTPKJ/wMJ/qnAmA==\r\n"
	"ARC-Message-Signature: i=2; a=rsa-sha256; c=relaxed/relaxed;\r\n"
	" d=hop1.example; s=s1; t=1767225601; h=from : to : subject : message-id\r\n"
	" : date : from; bh=TJnoB+ZgA8hH5kDk0sHkyILr0qoHt1QABzXsd9yItT4=;\r\n"
	" b=Dks3x4LCg+LbSq6gr1dtw0/z0OVuloRx42oTffH4kWfBoilWo9uWNzc7+7dsXwHhs0YGY\r\n"
	" 5KOKPHyeCQ2QMFY2Vvn1NKnMBudVmkkoNPtotCDB1h8SmPfx5wPfCyRSP/2zzz8WB3+0xRU\r\n"
	" 4cJO6Fo93jS6kQP/RnqDuCz0TMawGRsG+wfhPrPywPThxfJnQCF1HMBdJ/0GnbA0ScnO60N\r\n"
	" Eeas+kLo6CyJNzNRYyDDREziB2Qqxki6G1OQxET18WsNCB3wAMfea/zJY0JIFWe1g8lWN2A\r\n"
	" B7kUw623ioJ+GxFQO9VVtT2f9aEqsqs8OiVzX5L+sZ8xRkp5SJW55bRE9S4A==\r\n"
	"ARC-Authentication-Results: i=2; hop2.example; arc=pass\r\n"
	"Authentication-Results: hop2.example; arc=pass\r\n"
	"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=hop1.example; s=s1; t=1767225600;\r\n"
	" b=E3LrIYRXFwWGc54+wZCh5cPy86c8SMdllGiAS4b5FGth7BY/2m2mmAjV86J8WRRFltQ2w\r\n"
	" HhpMVPE5wkSy6Fq9km68VldRbnN4ud5sPoZzGpSqemuVRAK/PkQCsJ9aqndhjoH6bxbQ20U\r\n"
	" jpIwihSnb/Kujzr5gkW7RcWpY8l8sCO9XWy22K5F6PDWjL6ReoPly9Nad+0IbiDjD1A/uB2\r\n"
	" e7j/qhp0o0B4h4LOcv8oBZELiJ795hRn2FQ/G9Kwsr2kHfIcleTrqY9wz3V5EfZFKjI6fHp\r\n"
	" AzqxHlCk4J+EiPJhfy2GMqwwiEsp27IA6YCoLZYNjQyOVe8vhGNFRHru0cCw==\r\n"
	"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
	" d=hop1.example; s=s1; t=1767225600; h=from : to : subject : message-id\r\n"
	" : date : from; bh=TJnoB+ZgA8hH5kDk0sHkyILr0qoHt1QABzXsd9yItT4=;\r\n"
	" b=pw0qyzHhhnbpKyIAkg7T+9rEiElEHEng+MZX4zkEyfyJ9U3MvVd65LRImmEceGZY11aRi\r\n"
	" ArGtiwzocLOW/XVyF8bHqDAHArGkFuM7Eeh0dZE//dlNSORbBYuzBjc2nFLrui0qmNKGu4A\r\n"
	" AhpQdM5dVNqdCGVwWn6W8w2efmozg2Ol/tZpPiode93irJEtquhoZGJsXp+LIsAlUtAdLYE\r\n"
	" JMHQXcaKHQ7T10Xq1WBPB1jIVejn+9SlScxCz1qzXe77BNfoNFbELSp/S//rCaI8ey/EBoL\r\n"
	" JxVl8b+tO4VZbqOvM5m0jzAXVShQCNg8iCoKf4h2ACT+6q48Jv4LUUsUvhvQ==\r\n"
	"ARC-Authentication-Results: i=1; hop1.example; spf=pass smtp.mailfrom=a.example\r\n"
	"Authentication-Results: hop1.example; spf=pass smtp.mailfrom=a.example\r\n"
	"From: Alice <alice@a.example>\r\n"
	"To: bob@b.example\r\n"
	"Subject: arc  test\r\n"
	"Message-ID: <1@a.example>\r\n"
	"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
	"\r\n"
	"Hello  world.\r\n"
	"\r\n";
static const char PUB[] = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtcf3wouoGkKGHq95fxZjDJ+2BvbMHyycuN2AlcDy5AkZPse0myRxntgMNW0TSQB09A+rCNNMBcrAz9m9eQHbtW8x08h0OOEOeWaueN9OdnI/gqWzzbbk3i4vueeC3ECK5/JdeReOv94ur6YBi7/pSsSQxMSfwFwhFC8KNL2am0HS2UlpYSlwFMo71raL68ABoemrAQs7z+heBFlnckFtMdLlaHsmNn6em0gmR92eyNjknxCqKPqmqHAj4H6wOmaXiHQUye17y2qPvs7LJG59f5aU94r5hPy6gfd8iH5Gfr2fiag6aQ+t1aa2Or7b+KLy06ltdCDPvLfh3pGTTnrdcwIDAQAB";

/* What the zone answers: a key record, TEMPFAIL, or nothing (NXDOMAIN). */
static const char *zone_key;
static unsigned queries;

static int txt(void *arg, const char *name, char ***out, size_t *n)
{
	(void)arg;
	queries++;
	if (strcasecmp(name, "s1._domainkey.hop1.example") != 0 || !zone_key)
		return MXF_DNS_NXDOMAIN;
	if (strcmp(zone_key, "TEMPFAIL") == 0)
		return MXF_DNS_TEMPFAIL;
	*out = calloc(1, sizeof(**out));
	(*out)[0] = strdup(zone_key);
	*n = 1;
	return MXF_DNS_OK;
}

static bool on_field(void *arg, const char *f, size_t len, bool whole)
{
	mxf_arcv_field(arg, f, len, whole);
	return true;
}
static void on_eoh(void *arg)
{
	mxf_arcv_eoh(arg);
}
static void on_body(void *arg, const char *p, size_t len)
{
	mxf_arcv_body(arg, p, len);
}

/* The message through mailhdr in pieces of chunk octets, then verified. */
static struct mxf_arcv_out run(const char *msg, size_t chunk)
{
	struct mxf_arcv *v;
	assert_int_equal(mxf_arcv_new(&v), 0);
	struct mxf_mailhdr *h = malloc(sizeof(*h));
	struct mxf_mailhdr_cb cb = {on_field, on_eoh, on_body, v};
	mxf_mailhdr_init(h, &cb);
	size_t len = strlen(msg);
	char *out = malloc(len + MXF_MAILHDR_FIELD_MAX + 4);
	for (size_t o = 0; o < len; o += chunk)
		mxf_mailhdr_feed(h, msg + o, len - o < chunk ? len - o : chunk, out);
	mxf_mailhdr_end(h, out);
	struct mxf_arcv_out r;
	queries = 0;
	mxf_arcv_verify(v, txt, NULL, &r);
	assert_int_equal(r.lookups, queries);
	mxf_arcv_free(v);
	free(out);
	free(h);
	return r;
}

/* CHAIN2 with the first occurrence of from replaced by to. */
static char *edit(const char *from, const char *to)
{
	const char *p = strstr(CHAIN2, from);
	assert_non_null(p);
	size_t fl = strlen(from), tl = strlen(to), len = strlen(CHAIN2);
	char *s = malloc(len - fl + tl + 1);
	size_t off = (size_t)(p - CHAIN2);
	memcpy(s, CHAIN2, off);
	memcpy(s + off, to, tl);
	memcpy(s + off + tl, p + fl, len - off - fl + 1);
	return s;
}

static void expect_fail(const char *from, const char *to, const char *why)
{
	char *m = edit(from, to);
	struct mxf_arcv_out r = run(m, 4096);
	assert_int_equal(r.result, MXF_ARCV_FAIL);
	if (why && (!r.why || strcmp(r.why, why) != 0))
		fail_msg("%s -> %s: %s, expected %s", from, to, r.why ? r.why : "(null)", why);
	free(m);
}

static void test_pass(void **st)
{
	(void)st;
	zone_key = PUB;
	struct mxf_arcv_out r = run(CHAIN2, 4096);
	assert_int_equal(r.result, MXF_ARCV_PASS);
	assert_int_equal(r.i, 2);
	assert_null(r.why);
	/* Both hops use the same key: asked once. */
	assert_int_equal(r.lookups, 1);
	/* Any cuts of the input give the same answer. */
	for (size_t c = 1; c < 40; c += 7)
		assert_int_equal(run(CHAIN2, c).result, MXF_ARCV_PASS);
	/* Whitespace changes relaxed canonicalisation ignores. */
	char *m = edit("Subject: arc  test", "Subject:   arc \t test  ");
	assert_int_equal(run(m, 4096).result, MXF_ARCV_PASS);
	free(m);
}

static void test_none(void **st)
{
	(void)st;
	zone_key = PUB;
	struct mxf_arcv_out r =
		run("From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n", 4096);
	assert_int_equal(r.result, MXF_ARCV_NONE);
	assert_int_equal(r.lookups, 0);
	r = run("From: a@b.example\r\n", 4096); /* no body at all */
	assert_int_equal(r.result, MXF_ARCV_NONE);
}

static void test_tampered(void **st)
{
	(void)st;
	zone_key = PUB;
	expect_fail("Hello  world.", "Hello  world!", "AMS body hash mismatch");
	expect_fail("Subject: arc  test", "Subject: arc test!", "AMS signature does not verify");
	/* The AAR of hop 1 is covered by both seals only. */
	expect_fail("i=1; hop1.example; spf=pass", "i=1; hop1.example; spf=fail",
		    "seal signature does not verify");
	/* A key that is not the signer's (another RSA 2048 key). */
	zone_key = "v=DKIM1; k=rsa; p="
		   "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0et8ttA64E96YrGvhz2s6laZ0FyxQt+0zrNH"
		   "BwX1ovUiz8TmQjaDD94uWwIe3iaWsX8mMA+2lEYGau0rmYjG5STgg861A3AeM4NJdexJXtGOtZSSdOIV"
		   "/aFIQ0j+CeSR1ABBumuRso2uIF6fyqoZKpAu6wff2A1uZQzbwF4xK1a8uqgiTnWh85su5eVyvdj86AmI"
		   "M5BGISFBxU6iDIm288pYVoyrufs1KSvXR1K7CFZjfBYdtX40YGQ1VvJ/qN29W6nltcmBrVes/Zydbm9Q"
		   "mb/YOWFnB1bGudpILRMJhXFZlqlbKBLQDidhdYa73rf3LJJgu1GaPPYrtg8Fuvy5RwIDAQAB";
	struct mxf_arcv_out r = run(CHAIN2, 4096);
	assert_int_equal(r.result, MXF_ARCV_FAIL);
	assert_string_equal(r.why, "AMS signature does not verify");
}

static void test_structure(void **st)
{
	(void)st;
	zone_key = PUB;
	/* The seal at i=2 renamed away: set 2 incomplete. */
	expect_fail("ARC-Seal: i=2", "X-ARC-Seal: i=2", "incomplete or missing ARC set");
	/* A gap: instance 2 claims to be 3. */
	expect_fail("ARC-Seal: i=2", "ARC-Seal: i=3", "incomplete or missing ARC set");
	/* Duplicates: a second seal of instance 1. */
	expect_fail("ARC-Seal: i=2", "ARC-Seal: i=1", "duplicate ARC field");
	expect_fail("ARC-Seal: i=2", "ARC-Seal: i=51", "malformed or out of range instance");
	expect_fail("ARC-Seal: i=2", "ARC-Seal: i=x", "malformed or out of range instance");
	expect_fail("cv=pass", "cv=fail", "latest seal says cv=fail");
	expect_fail("cv=pass", "cv=none", "seal without cv=pass");
	expect_fail("cv=none", "cv=pass", "first seal without cv=none");
	expect_fail("ARC-Message-Signature: i=2; a=rsa-sha256;",
		    "ARC-Message-Signature: i=2; a=rsa-sha256; l=5;", "AMS with l= not accepted");
	expect_fail("ARC-Message-Signature: i=2; a=rsa-sha256;",
		    "ARC-Message-Signature: i=2; a=rsa-sha1;", "AMS with an unknown a=");
	/* A malformed tag list (a tag twice). */
	expect_fail("ARC-Message-Signature: i=2; a=rsa-sha256;",
		    "ARC-Message-Signature: i=2; a=rsa-sha256; a=rsa-sha256;", NULL);
}

static void test_keys(void **st)
{
	(void)st;
	zone_key = NULL;
	struct mxf_arcv_out r = run(CHAIN2, 4096);
	assert_int_equal(r.result, MXF_ARCV_FAIL);
	assert_string_equal(r.why, "no key record");
	assert_false(r.temp);
	zone_key = "TEMPFAIL";
	r = run(CHAIN2, 4096);
	assert_int_equal(r.result, MXF_ARCV_FAIL);
	assert_true(r.temp);
	zone_key = "v=DKIM1; k=rsa; p=";
	r = run(CHAIN2, 4096);
	assert_string_equal(r.why, "no key or revoked key");
	zone_key = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
	r = run(CHAIN2, 4096);
	assert_string_equal(r.why, "key type does not match a=");
	zone_key = "v=DKIM1; k=rsa; p=AAAA";
	r = run(CHAIN2, 4096);
	assert_int_equal(r.result, MXF_ARCV_FAIL);
	zone_key = "v=DKIM2; k=rsa; p=AAAA";
	r = run(CHAIN2, 4096);
	assert_int_equal(r.result, MXF_ARCV_FAIL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pass),      cmocka_unit_test(test_none),
		cmocka_unit_test(test_tampered),  cmocka_unit_test(test_structure),
		cmocka_unit_test(test_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
