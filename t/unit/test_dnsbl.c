#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dnsbl.h"

static struct in_addr ip4(const char *s)
{
	struct in_addr a;
	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a;
}

static void test_parse(void **st)
{
	(void)st;
	struct mxf_dnsbl_list l;
	char err[256];
	assert_int_equal(mxf_dnsbl_parse("", &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(mxf_dnsbl_parse("Zen.Test., bl.test=127.0.0.2;127.0.0.4*3  w.test*-2",
					 &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.e[0].zone, "zen.test");
	assert_int_equal(l.e[0].weight, 100);
	assert_int_equal(l.e[0].nfilter, 0);
	assert_string_equal(l.e[1].zone, "bl.test");
	assert_int_equal(l.e[1].weight, 300);
	assert_int_equal(l.e[1].nfilter, 2);
	assert_int_equal(l.e[1].filter[1].s_addr, ip4("127.0.0.4").s_addr);
	assert_int_equal(l.e[2].weight, -200);
	/* The comma form of the address list, as in the issue. */
	assert_int_equal(mxf_dnsbl_parse("bl.test=127.0.0.2,127.0.0.4*2, other.test", &l, err,
					 sizeof(err)), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.e[0].nfilter, 2);
	assert_int_equal(l.e[0].weight, 200);
	assert_string_equal(l.e[1].zone, "other.test");
	assert_int_equal(mxf_dnsbl_parse("half.test*0.5", &l, err, sizeof(err)), 0);
	assert_int_equal(l.e[0].weight, 50);
	/* A quad after an entry without '=' is a bad zone, not an address. */
	assert_int_equal(mxf_dnsbl_parse("a.test 127.0.0.2", &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 2); /* "127.0.0.2" is a valid name: taken as a zone */
	const char *bad[] = {"bl.test=", "bl.test=127.0.0.x", "bl.test*", "bl.test*x",
			     "bl.test*2=127.0.0.2", "bad..zone", "=127.0.0.2", "bl.test=1.2.3.4;",
			     "bl.test*100000", "a_b c$d"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(mxf_dnsbl_parse(bad[i], &l, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != '\0');
	}
	char many[2048] = "";
	for (int i = 0; i < MXF_DNSBL_ENTRIES_MAX + 1; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "z%d.test,", i);
	assert_int_equal(mxf_dnsbl_parse(many, &l, err, sizeof(err)), -EINVAL);
}

static void test_names(void **st)
{
	(void)st;
	char n[300];
	assert_int_equal(mxf_dnsbl_ip_name("127.0.0.2", "bl.test", n, sizeof(n)), 0);
	assert_string_equal(n, "2.0.0.127.bl.test");
	assert_int_equal(mxf_dnsbl_ip_name("::ffff:192.0.2.9", "bl.test", n, sizeof(n)), 0);
	assert_string_equal(n, "9.2.0.192.bl.test");
	/* RFC 5782 §2.4's example. */
	assert_int_equal(mxf_dnsbl_ip_name("2001:db8:1:2:3:4:567:89ab", "ugly.example.com", n,
					   sizeof(n)), 0);
	assert_string_equal(n, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2."
			       "ugly.example.com");
	assert_int_equal(mxf_dnsbl_ip_name("::1", "bl6.test", n, sizeof(n)), 0);
	assert_string_equal(n, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
			       "bl6.test");
	assert_int_equal(mxf_dnsbl_ip_name("unknown", "bl.test", n, sizeof(n)), -EINVAL);
	assert_int_equal(mxf_dnsbl_ip_name("::1", "bl.test", n, 20), -ENAMETOOLONG);
	char zone[MXF_DNSBL_ZONE_MAX + 1];
	memset(zone, 'a', sizeof(zone) - 1);
	zone[sizeof(zone) - 1] = '\0';
	for (size_t i = 60; i < sizeof(zone) - 1; i += 61)
		zone[i] = '.';
	assert_int_equal(mxf_dnsbl_ip_name("::1", zone, n, sizeof(n)), -ENAMETOOLONG);

	assert_int_equal(mxf_dnsbl_domain_name("Spam.Example.", "rhs.test", n, sizeof(n)), 0);
	assert_string_equal(n, "spam.example.rhs.test");
	assert_int_equal(mxf_dnsbl_domain_name("[127.0.0.1]", "rhs.test", n, sizeof(n)), -EINVAL);
	assert_int_equal(mxf_dnsbl_domain_name("localhost", "rhs.test", n, sizeof(n)), -EINVAL);
	assert_int_equal(mxf_dnsbl_domain_name("", "rhs.test", n, sizeof(n)), -EINVAL);
	assert_int_equal(mxf_dnsbl_domain_name("a.b", "rhs.test", n, 5), -ENAMETOOLONG);
}

static void test_match(void **st)
{
	(void)st;
	struct mxf_dnsbl_list l;
	char err[256];
	assert_int_equal(mxf_dnsbl_parse("any.test bl.test=127.0.0.4", &l, err, sizeof(err)), 0);
	struct in_addr two = ip4("127.0.0.2"), four = ip4("127.0.0.4"), pub = ip4("192.0.2.1"),
		       refused = ip4("127.255.255.254");
	assert_true(mxf_dnsbl_match(&l.e[0], &two, 1));
	assert_false(mxf_dnsbl_match(&l.e[0], &pub, 1));
	assert_false(mxf_dnsbl_match(&l.e[0], &refused, 1));
	assert_false(mxf_dnsbl_match(&l.e[0], NULL, 0));
	assert_false(mxf_dnsbl_match(&l.e[1], &two, 1));
	struct in_addr both[2] = {two, four};
	assert_true(mxf_dnsbl_match(&l.e[1], both, 2));
}

static void test_score(void **st)
{
	(void)st;
	int v;
	struct {
		const char *s;
		int want;
	} ok[] = {{"1", 100}, {"0.5", 50}, {"2.25", 225}, {"-1.1", -110}, {"+3", 300}, {"1000", 100000}};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(mxf_score_parse(ok[i].s, strlen(ok[i].s), &v), 0);
		assert_int_equal(v, ok[i].want);
	}
	const char *bad[] = {"", "-", "1.", ".5", "1.234", "1001", "x", "1x", "99999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mxf_score_parse(bad[i], strlen(bad[i]), &v), -EINVAL);

	int w[MXF_SC_N];
	char err[300];
	assert_int_equal(mxf_score_weights_parse("", w, err, sizeof(err)), 0);
	assert_int_equal(w[MXF_SC_PIPELINING], 50);
	assert_true(w[MXF_SC_NO_PTR] < 100 && w[MXF_SC_HELO_LITERAL] < 100);
	assert_int_equal(mxf_score_weights_parse("no_ptr=0, pipelining=1.5 history=-1", w, err,
						 sizeof(err)), 0);
	assert_int_equal(w[MXF_SC_NO_PTR], 0);
	assert_int_equal(w[MXF_SC_PIPELINING], 150);
	assert_int_equal(w[MXF_SC_HISTORY], -100);
	assert_int_equal(w[MXF_SC_FCRDNS], 20);
	assert_int_equal(mxf_score_weights_parse("nope=1", w, err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_score_weights_parse("no_ptr", w, err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_score_weights_parse("no_ptr=x", w, err, sizeof(err)), -EINVAL);
}

static void test_helo(void **st)
{
	(void)st;
	assert_int_equal(mxf_helo_check("mail.example.com", "192.0.2.1"), MXF_HELO_OK);
	assert_int_equal(mxf_helo_check("mail.example.com.", "192.0.2.1"), MXF_HELO_OK);
	assert_int_equal(mxf_helo_check("[192.0.2.1]", "192.0.2.1"), MXF_HELO_OK);
	assert_int_equal(mxf_helo_check("[192.0.2.2]", "192.0.2.1"), MXF_HELO_LITERAL_OTHER);
	assert_int_equal(mxf_helo_check("[IPv6:2001:db8::1]", "2001:db8:0::1"), MXF_HELO_OK);
	assert_int_equal(mxf_helo_check("[IPv6:2001:db8::2]", "2001:db8::1"),
			 MXF_HELO_LITERAL_OTHER);
	assert_int_equal(mxf_helo_check("[192.0.2.1]", "2001:db8::1"), MXF_HELO_LITERAL_OTHER);
	assert_int_equal(mxf_helo_check("[garbage]", "192.0.2.1"), MXF_HELO_LITERAL_OTHER);
	assert_int_equal(mxf_helo_check("localhost", "192.0.2.1"), MXF_HELO_NOT_FQDN);
	assert_int_equal(mxf_helo_check("192.0.2.1", "192.0.2.1"), MXF_HELO_NOT_FQDN);
	assert_int_equal(mxf_helo_check("bad_name!.com", "192.0.2.1"), MXF_HELO_NOT_FQDN);
}

static void test_cidr(void **st)
{
	(void)st;
	struct mxf_cidr l[4];
	size_t n;
	char err[200], p[64];
	assert_int_equal(mxf_cidr_parse_list("192.0.2.0/24, 10.1.2.3 2001:db8::/33", l, 4, &n, err,
					     sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_true(mxf_cidr_match(l, n, "192.0.2.200"));
	assert_false(mxf_cidr_match(l, n, "192.0.3.1"));
	assert_true(mxf_cidr_match(l, n, "10.1.2.3"));
	assert_false(mxf_cidr_match(l, n, "10.1.2.4"));
	assert_true(mxf_cidr_match(l, n, "2001:db8:7fff::1"));
	assert_false(mxf_cidr_match(l, n, "2001:db8:8000::1"));
	assert_false(mxf_cidr_match(l, n, "garbage"));
	const char *bad[] = {"1.2.3.4/33", "1.2.3/24", "::/129", "1.2.3.4/", "1.2.3.4/x", "a,b"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mxf_cidr_parse_list(bad[i], l, 4, &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_cidr_parse_list("1.1.1.1 2.2.2.2", l, 1, &n, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_ip_prefix("192.0.2.77", p, sizeof(p)), 0);
	assert_string_equal(p, "192.0.2.0/24");
	assert_int_equal(mxf_ip_prefix("2001:db8:1:2:3:4:5:6", p, sizeof(p)), 0);
	assert_string_equal(p, "2001:db8:1:2::/64");
	assert_int_equal(mxf_ip_prefix("nope", p, sizeof(p)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_score),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_cidr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
