/* The pure parts of dns: host order from an MX answer, null MX, name syntax.
 * Lookups against a real server are covered by the end-to-end tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dns.h"

static void set(struct mxf_mx *m, uint16_t pref, const char *host)
{
	m->pref = pref;
	snprintf(m->host, sizeof(m->host), "%s", host);
}

/* Deterministic "random" source: always the largest / smallest choice. */
static uint32_t rnd_max(void *arg, uint32_t bound)
{
	(void)arg;
	return bound - 1;
}

static uint32_t rnd_zero(void *arg, uint32_t bound)
{
	(void)arg;
	(void)bound;
	return 0;
}

/* Replays a sequence and checks every bound is sane. */
struct seq {
	const uint32_t *v;
	size_t i;
};
static uint32_t rnd_seq(void *arg, uint32_t bound)
{
	struct seq *s = arg;
	assert_true(bound >= 1);
	uint32_t x = s->v[s->i++];
	assert_true(x < bound);
	return x;
}

static void test_sorted_by_preference(void **state)
{
	(void)state;
	struct mxf_mx mx[4];
	bool nullmx = true;
	set(&mx[0], 30, "c.example");
	set(&mx[1], 10, "a.example");
	set(&mx[2], 65535, "z.example");
	set(&mx[3], 20, "b.example");
	size_t n = mxf_dns_mx_order(mx, 4, &nullmx, rnd_max, NULL);
	assert_int_equal(n, 4);
	assert_false(nullmx);
	assert_string_equal(mx[0].host, "a.example");
	assert_string_equal(mx[1].host, "b.example");
	assert_string_equal(mx[2].host, "c.example");
	assert_string_equal(mx[3].host, "z.example");
	assert_int_equal(mx[3].pref, 65535);
}

static void test_equal_preference_shuffled(void **state)
{
	(void)state;
	struct mxf_mx mx[5];
	bool nullmx;
	set(&mx[0], 10, "p1");
	set(&mx[1], 10, "p2");
	set(&mx[2], 10, "p3");
	set(&mx[3], 5, "first");
	set(&mx[4], 20, "last");

	/* With rnd always 0 Fisher-Yates over [p1 p2 p3] rotates: i=2 swaps
	 * with 0 -> p3 p2 p1, i=1 swaps with 0 -> p2 p3 p1. */
	size_t n = mxf_dns_mx_order(mx, 5, &nullmx, rnd_zero, NULL);
	assert_int_equal(n, 5);
	assert_string_equal(mx[0].host, "first");
	assert_string_equal(mx[1].host, "p2");
	assert_string_equal(mx[2].host, "p3");
	assert_string_equal(mx[3].host, "p1");
	assert_string_equal(mx[4].host, "last");

	/* The shuffle only ever chooses within the equal-preference run: the
	 * run of three asks for bounds 3 then 2, nothing else is asked. */
	set(&mx[0], 10, "p1");
	set(&mx[1], 10, "p2");
	set(&mx[2], 10, "p3");
	set(&mx[3], 5, "first");
	set(&mx[4], 20, "last");
	const uint32_t v[] = {1, 1};
	struct seq s = {v, 0};
	n = mxf_dns_mx_order(mx, 5, &nullmx, rnd_seq, &s);
	assert_int_equal(s.i, 2);
	assert_string_equal(mx[0].host, "first");
	assert_string_equal(mx[4].host, "last");
	/* [p1 p2 p3]: i=2 j=1 -> p1 p3 p2; i=1 j=1 -> unchanged. */
	assert_string_equal(mx[1].host, "p1");
	assert_string_equal(mx[2].host, "p3");
	assert_string_equal(mx[3].host, "p2");
}

static void test_equal_preference_all_orders_reachable(void **state)
{
	(void)state;
	/* With the real CSPRNG, over many runs each of the two equal hosts
	 * comes first sometimes, and the lower preference never moves. */
	int first_a = 0, first_b = 0;
	for (int i = 0; i < 400; i++) {
		struct mxf_mx mx[3];
		bool nullmx;
		set(&mx[0], 10, "a");
		set(&mx[1], 10, "b");
		set(&mx[2], 0, "top");
		assert_int_equal(mxf_dns_mx_order(mx, 3, &nullmx, NULL, NULL), 3);
		assert_string_equal(mx[0].host, "top");
		if (strcmp(mx[1].host, "a") == 0)
			first_a++;
		else
			first_b++;
	}
	assert_true(first_a > 50);
	assert_true(first_b > 50);
}

static void test_null_mx(void **state)
{
	(void)state;
	struct mxf_mx mx[2];
	bool nullmx = false;
	set(&mx[0], 0, "");
	assert_int_equal(mxf_dns_mx_order(mx, 1, &nullmx, rnd_zero, NULL), 0);
	assert_true(nullmx);

	/* A "." target with another preference still names no host. */
	nullmx = false;
	set(&mx[0], 10, "");
	assert_int_equal(mxf_dns_mx_order(mx, 1, &nullmx, rnd_zero, NULL), 0);
	assert_true(nullmx);

	/* Misconfigured: "." beside a real host. The real host is used. */
	nullmx = true;
	set(&mx[0], 0, "");
	set(&mx[1], 10, "mx.example");
	assert_int_equal(mxf_dns_mx_order(mx, 2, &nullmx, rnd_zero, NULL), 1);
	assert_false(nullmx);
	assert_string_equal(mx[0].host, "mx.example");

	/* No records at all is not a null MX (that is the implicit MX case,
	 * decided by the caller from the lookup's NODATA). */
	nullmx = true;
	assert_int_equal(mxf_dns_mx_order(mx, 0, &nullmx, rnd_zero, NULL), 0);
	assert_false(nullmx);
}

static void test_duplicates(void **state)
{
	(void)state;
	struct mxf_mx mx[4];
	bool nullmx;
	set(&mx[0], 20, "mx1.example");
	set(&mx[1], 10, "mx2.example");
	set(&mx[2], 10, "mx1.example");
	set(&mx[3], 30, "mx2.example");
	size_t n = mxf_dns_mx_order(mx, 4, &nullmx, rnd_max, NULL);
	assert_int_equal(n, 2);
	assert_int_equal(mx[0].pref, 10);
	assert_int_equal(mx[1].pref, 10);
	assert_true(strcmp(mx[0].host, mx[1].host) != 0);
}

static void test_name_valid(void **state)
{
	(void)state;
	assert_true(mxf_dns_name_valid("example.org"));
	assert_true(mxf_dns_name_valid("example.org."));
	assert_true(mxf_dns_name_valid("xn--bcher-kva.example"));
	assert_true(mxf_dns_name_valid("_dmarc.example.org"));
	assert_true(mxf_dns_name_valid("localhost"));
	assert_false(mxf_dns_name_valid(""));
	assert_false(mxf_dns_name_valid("."));
	assert_false(mxf_dns_name_valid("a..b"));
	assert_false(mxf_dns_name_valid(".a"));
	assert_false(mxf_dns_name_valid("a b.example"));
	assert_false(mxf_dns_name_valid("a\\.b.example"));
	assert_false(mxf_dns_name_valid("[127.0.0.1]"));
	char label[70];
	memset(label, 'a', 64);
	label[64] = '\0';
	assert_false(mxf_dns_name_valid(label));
	label[63] = '\0';
	assert_true(mxf_dns_name_valid(label));
	char longname[300];
	for (int i = 0; i < 127; i++)
		memcpy(longname + 2 * i, "a.", 2);
	longname[253] = '\0'; /* "a.a. ... a" : 253 octets */
	assert_true(mxf_dns_name_valid(longname));
	longname[253] = 'a';
	longname[254] = '\0';
	assert_false(mxf_dns_name_valid(longname));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sorted_by_preference),
		cmocka_unit_test(test_equal_preference_shuffled),
		cmocka_unit_test(test_equal_preference_all_orders_reachable),
		cmocka_unit_test(test_null_mx),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_name_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
