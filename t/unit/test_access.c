/* common/access.c: parsing, verdict precedence, CIDR lookups at scale. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "access.h"

static void parse_ok(const char *in, enum mxf_access_kind want, const char *norm)
{
	char out[MXF_ACCESS_VALUE_MAX];
	enum mxf_access_kind k;
	assert_int_equal(mxf_access_parse(in, &k, out, sizeof(out)), 0);
	assert_int_equal(k, want);
	assert_string_equal(out, norm);
}

static void test_parse(void **st)
{
	(void)st;
	parse_ok("192.0.2.7", MXF_ACCESS_IP, "192.0.2.7");
	parse_ok("192.0.2.7/32", MXF_ACCESS_IP, "192.0.2.7");
	parse_ok("198.51.100.77/24", MXF_ACCESS_IP, "198.51.100.0/24");
	parse_ok("2001:DB8::1/32", MXF_ACCESS_IP, "2001:db8::/32");
	parse_ok("::1", MXF_ACCESS_IP, "::1");
	parse_ok("Example.TEST", MXF_ACCESS_DOMAIN, "example.test");
	parse_ok("bücher.test", MXF_ACCESS_DOMAIN, "xn--bcher-kva.test");
	parse_ok("Spam@Bad.Test", MXF_ACCESS_ADDRESS, "Spam@bad.test");
	char out[MXF_ACCESS_VALUE_MAX];
	enum mxf_access_kind k;
	const char *bad[] = {"", "192.0.2.300", "192.0.2.0/33", "::1/129", "localhost",
			     "a b.test", "192.0.2.0/", "::ffff:192.0.2.1", "@x.test", "x@"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mxf_access_parse(bad[i], &k, out, sizeof(out)), -EINVAL);
	char r[MXF_ACCESS_REASON_MAX + 1];
	assert_int_equal(mxf_access_reason_clean("spam\r\nQUIT", r, sizeof(r)), 0);
	assert_string_equal(r, "spam??QUIT");
	char big[300];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(mxf_access_reason_clean(big, r, sizeof(r)), -EINVAL);
}

static enum mxf_access_verdict check(const struct mxf_access *a, const char *ip, const char *helo,
				     const char *sender, const char **reason)
{
	struct mxf_access_result res;
	mxf_access_check(a, ip, helo, sender, &res);
	if (reason)
		*reason = res.reason;
	return res.verdict;
}

static void test_verdicts(void **st)
{
	(void)st;
	struct mxf_access *a = mxf_access_new();
	assert_non_null(a);
	assert_int_equal(mxf_access_add(a, false, "127.0.0.0/24", "range"), 0);
	assert_int_equal(mxf_access_add(a, false, "127.0.0.9", "host"), 0);
	assert_int_equal(mxf_access_add(a, true, "127.0.0.2", NULL), 0);
	assert_int_equal(mxf_access_add(a, true, "::/64", ""), 0);
	assert_int_equal(mxf_access_add(a, false, "2001:db8::/32", "v6"), 0);
	assert_int_equal(mxf_access_add(a, false, "evil.test", "evil"), 0);
	assert_int_equal(mxf_access_add(a, false, "spam@bad.test", "spammer"), 0);
	assert_int_equal(mxf_access_add(a, true, "friend.test", NULL), 0);
	assert_int_equal(mxf_access_add(a, false, "friend.test", NULL), 0);
	assert_int_equal(mxf_access_add(a, false, "not valid", NULL), -EINVAL);
	assert_int_equal(mxf_access_finish(a), 0);
	assert_int_equal(mxf_access_count(a), 9);
	const char *why;
	/* Longest prefix gives the reason; allow beats block for the client. */
	assert_int_equal(check(a, "127.0.0.9", NULL, NULL, &why), MXF_ACCESS_BLOCK);
	assert_string_equal(why, "host");
	assert_int_equal(check(a, "127.0.0.5", NULL, NULL, &why), MXF_ACCESS_BLOCK);
	assert_string_equal(why, "range");
	assert_int_equal(check(a, "127.0.0.2", "x.evil.test", "spam@bad.test", NULL),
			 MXF_ACCESS_ALLOW);
	assert_int_equal(check(a, "127.0.1.5", NULL, NULL, NULL), MXF_ACCESS_NONE);
	/* ::/64 does not cover IPv4 clients (they are not IPv4-mapped here). */
	assert_int_equal(check(a, "::1", NULL, NULL, NULL), MXF_ACCESS_ALLOW);
	assert_int_equal(check(a, "2001:db8:1::5", NULL, NULL, &why), MXF_ACCESS_BLOCK);
	assert_string_equal(why, "v6");
	assert_int_equal(check(a, "2001:db9::5", NULL, NULL, NULL), MXF_ACCESS_NONE);
	/* HELO: block only; sender: domain and subdomains, address case-insensitive. */
	assert_int_equal(check(a, "192.0.2.1", "mx.Evil.Test.", NULL, NULL), MXF_ACCESS_BLOCK);
	/* friend.test is on both lists: as a HELO name only the block counts. */
	assert_int_equal(check(a, "192.0.2.1", "friend.test", NULL, NULL), MXF_ACCESS_BLOCK);
	assert_int_equal(check(a, "192.0.2.1", "[127.0.0.2]", NULL, NULL), MXF_ACCESS_NONE);
	assert_int_equal(check(a, "192.0.2.1", NULL, "x@a.evil.test", NULL), MXF_ACCESS_BLOCK);
	assert_int_equal(check(a, "192.0.2.1", NULL, "x@notevil.test", NULL), MXF_ACCESS_NONE);
	assert_int_equal(check(a, "192.0.2.1", NULL, "SPAM@BAD.TEST", &why), MXF_ACCESS_BLOCK);
	assert_string_equal(why, "spammer");
	assert_int_equal(check(a, "192.0.2.1", NULL, "x@friend.test", NULL),
			 MXF_ACCESS_ALLOW_SENDER);
	/* A sender allow does not lift a client block. */
	assert_int_equal(check(a, "127.0.0.5", NULL, "x@friend.test", NULL), MXF_ACCESS_BLOCK);
	assert_int_equal(check(a, "garbage", NULL, "", NULL), MXF_ACCESS_NONE);
	assert_int_equal(check(NULL, "127.0.0.9", NULL, NULL, NULL), MXF_ACCESS_NONE);
	mxf_access_free(a);
}

static bool mail_final(const struct mxf_access *a, const char *ip)
{
	struct mxf_access_result res;
	mxf_access_check(a, ip, NULL, NULL, &res);
	return mxf_access_mail_final(a, &res);
}

/* The connect verdict is final for MAIL only when no HELO or sender entry
 * could match: no domain or address entries, or an allow-listed client. */
static void test_mail_final(void **st)
{
	(void)st;
	assert_true(mail_final(NULL, "192.0.2.1"));
	struct mxf_access *a = mxf_access_new();
	assert_true(mail_final(a, "192.0.2.1")); /* empty */
	assert_int_equal(mxf_access_add(a, false, "127.0.0.0/24", NULL), 0);
	assert_int_equal(mxf_access_add(a, true, "127.0.0.2", NULL), 0);
	assert_int_equal(mxf_access_finish(a), 0);
	assert_true(mail_final(a, "192.0.2.1")); /* addresses only */
	mxf_access_free(a);
	for (int k = 0; k < 4; k++) { /* one name entry of each kind and list */
		a = mxf_access_new();
		assert_int_equal(mxf_access_add(a, true, "127.0.0.2", NULL), 0);
		assert_int_equal(mxf_access_add(a, k & 1, k & 2 ? "x@y.test" : "y.test", NULL), 0);
		assert_int_equal(mxf_access_finish(a), 0);
		assert_false(mail_final(a, "192.0.2.1"));
		assert_true(mail_final(a, "127.0.0.2")); /* allow-listed: nothing overrides */
		mxf_access_free(a);
	}
}

/* 20,000 ranges of 4 prefix lengths: a lookup stays in microseconds. */
static void test_scale(void **st)
{
	(void)st;
	struct mxf_access *a = mxf_access_new();
	char v[64];
	static const unsigned lens[] = {32, 24, 20, 16};
	for (unsigned i = 0; i < 20000; i++) {
		unsigned len = lens[i % 4];
		snprintf(v, sizeof(v), "10.%u.%u.%u/%u", (i >> 8) & 255, i & 255, (i * 7) & 255, len);
		assert_int_equal(mxf_access_add(a, false, v, NULL), 0);
	}
	assert_int_equal(mxf_access_finish(a), 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned hits = 0;
	for (unsigned i = 0; i < 100000; i++) {
		snprintf(v, sizeof(v), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		hits += check(a, v, NULL, NULL, NULL) == MXF_ACCESS_BLOCK;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) /
		    100000.0;
	printf("access: 20000 ranges, %.2f us per lookup (sanitized build), %u hits\n", us, hits);
	assert_true(hits > 0);
	assert_true(us < 50.0);
	mxf_access_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_verdicts),
		cmocka_unit_test(test_mail_final),
		cmocka_unit_test(test_scale),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
