/* common/dmarc.c: records, the RFC 9989 tree walk (policy record and
 * Organizational Domain, psd=), alignment and results, against a table. */
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

#include "dmarc.h"

static const char *const zone[][2] = {
	{"_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine"},
	{"_dmarc.strict.example", "v=DMARC1; p=reject; adkim=s; aspf=s"},
	{"_dmarc.com", "v=DMARC1; p=none; psd=y"},
	{"_dmarc.two.example", "v=DMARC1; p=none"},
	{"_dmarc.two.example", "v=DMARC1; p=reject"}, /* two records: none */
	{"_dmarc.bad.example", "v=DMARC1 p=reject"},   /* malformed */
	{"_dmarc.org.example", "v=DMARC1; p=quarantine; psd=n"},
	{"_dmarc.a.b.org.example", "v=DMARC1; p=none"},
	{"_dmarc.temp.example", "TEMPFAIL"},
};

static int txt(void *arg, const char *name, char ***out, size_t *n)
{
	(void)arg;
	char **v = calloc(8, sizeof(*v));
	size_t k = 0;
	for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++)
		if (strcasecmp(zone[i][0], name) == 0) {
			if (strcmp(zone[i][1], "TEMPFAIL") == 0) {
				free(v);
				return MXF_DNS_TEMPFAIL;
			}
			v[k++] = strdup(zone[i][1]);
		}
	if (!k) {
		free(v);
		return MXF_DNS_NXDOMAIN;
	}
	*out = v;
	*n = k;
	return MXF_DNS_OK;
}

static struct mxf_dmarc_ctx *ctx(void)
{
	struct mxf_dmarc_ctx *c = calloc(1, sizeof(*c));
	c->txt = txt;
	return c;
}

static void test_parse(void **st)
{
	(void)st;
	struct mxf_dmarc_rec r;
	assert_int_equal(mxf_dmarc_parse("v=DMARC1; p=reject; pct=10; adkim=s", &r), 0);
	assert_int_equal(r.p, MXF_DMARC_P_REJECT);
	assert_true(r.adkim_strict);
	assert_false(r.aspf_strict);
	assert_int_equal(mxf_dmarc_parse("v=DMARC1; p=bogus", &r), 0);
	assert_int_equal(r.p, MXF_DMARC_P_NONE);
	assert_int_equal(mxf_dmarc_parse("v=DMARC1", &r), 0);
	assert_int_equal(mxf_dmarc_parse("p=reject; v=DMARC1", &r), -EINVAL);
	assert_int_equal(mxf_dmarc_parse("v=spf1 -all", &r), -EINVAL);
	assert_int_equal(mxf_dmarc_parse("v=DMARC1 p=reject", &r), -EINVAL);
}

static void test_walk(void **st)
{
	(void)st;
	struct mxf_dmarc_ctx *c = ctx();
	struct mxf_dmarc_rec r;
	bool own;
	char org[256];
	assert_int_equal(mxf_dmarc_find(c, "a.b.example.com", &r, &own), MXF_DNS_OK);
	assert_false(own);
	assert_int_equal(r.p, MXF_DMARC_P_REJECT);
	assert_int_equal(r.sp, MXF_DMARC_P_QUARANTINE);
	/* psd=y at com: the organisation is one label below. */
	assert_int_equal(mxf_dmarc_org_domain(c, "a.b.example.com", org, sizeof(org)), 0);
	assert_string_equal(org, "example.com");
	/* psd=n stops the walk there even with a record further down. */
	assert_int_equal(mxf_dmarc_org_domain(c, "x.a.b.org.example", org, sizeof(org)), 0);
	assert_string_equal(org, "org.example");
	/* No record anywhere: the domain itself. */
	assert_int_equal(mxf_dmarc_org_domain(c, "x.nowhere.test", org, sizeof(org)), 0);
	assert_string_equal(org, "x.nowhere.test");
	/* Two records, or a malformed one, count as none. */
	assert_int_equal(mxf_dmarc_find(c, "two.example", &r, &own), MXF_DNS_NODATA);
	assert_int_equal(mxf_dmarc_find(c, "bad.example", &r, &own), MXF_DNS_NODATA);
	assert_int_equal(mxf_dmarc_find(c, "x.temp.example", &r, &own), MXF_DNS_TEMPFAIL);
	free(c);
	/* More than eight labels: the walk jumps to seven, at most 8 queries. */
	c = ctx();
	assert_int_equal(mxf_dmarc_find(c, "1.2.3.4.5.6.7.8.9.10.x.test", &r, &own),
			 MXF_DNS_NODATA);
	assert_int_equal(c->queries, 8);
	free(c);
}

static void test_check(void **st)
{
	(void)st;
	struct mxf_dmarc_out o;
	const char *sub[] = {"mail.example.com"};
	const char *other[] = {"other.example"};
	struct mxf_dmarc_ctx *c = ctx();
	/* Relaxed: a subdomain's signature aligns. */
	struct mxf_dmarc_in in = {"example.com", false, "x.test", sub, 1, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_PASS);
	assert_true(o.dkim_aligned);
	assert_int_equal(o.policy, MXF_DMARC_P_REJECT);
	/* Not aligned: fail; a subdomain author gets sp. */
	in = (struct mxf_dmarc_in){"news.example.com", true, "bulk.test", other, 1, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_FAIL);
	assert_int_equal(o.policy, MXF_DMARC_P_QUARANTINE);
	/* SPF alignment, relaxed. */
	in = (struct mxf_dmarc_in){"example.com", true, "bounce.example.com", NULL, 0, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_PASS);
	assert_true(o.spf_aligned);
	free(c);
	/* Strict: only the same domain. */
	c = ctx();
	const char *ss[] = {"mail.strict.example"};
	in = (struct mxf_dmarc_in){"strict.example", true, "mail.strict.example", ss, 1, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_FAIL);
	const char *s2[] = {"STRICT.example"};
	in = (struct mxf_dmarc_in){"strict.example", false, NULL, s2, 1, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_PASS);
	/* No record: none; no usable From: permerror; no From: none. */
	in = (struct mxf_dmarc_in){"nowhere.test", true, "nowhere.test", NULL, 0, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_NONE);
	in = (struct mxf_dmarc_in){NULL, true, "nowhere.test", NULL, 0, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_PERMERROR);
	in.no_from = true;
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_NONE);
	in = (struct mxf_dmarc_in){"a.temp.example", true, "a.temp.example", NULL, 0, false};
	mxf_dmarc_check(c, &in, &o);
	assert_int_equal(o.result, MXF_DMARC_TEMPERROR);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_walk),
		cmocka_unit_test(test_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
