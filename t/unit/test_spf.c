/* common/spf.c: the record filter (length cap, exp= removed, macro limits)
 * and checks through libspf2 with every answer from a table (spftable.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "spf.h"
#include "spftable.h"

static void test_filter(void **st)
{
	(void)st;
	char out[MXF_SPF_RECORD_MAX + 64];
	assert_int_equal(mxf_spf_record_filter("v=spf1 a -all exp=explain.%{d}", out, sizeof(out)),
			 0);
	assert_string_equal(out, "v=spf1 a -all");
	assert_int_equal(mxf_spf_record_filter("v=spf1  EXP=x  include:%{d2r}.x.example ~all",
					       out, sizeof(out)),
			 0);
	assert_string_equal(out, "v=spf1 include:%{d2r}.x.example ~all");
	/* Not SPF: kept (a bounded prefix). */
	assert_int_equal(mxf_spf_record_filter("google-site-verification=abc", out, sizeof(out)), 0);
	assert_string_equal(out, "google-site-verification=abc");
	/* Refused: too long, c/r/t macros outside exp, big digits, too many macros. */
	char big[MXF_SPF_RECORD_MAX + 100];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "v=spf1 a:", 9);
	assert_int_equal(mxf_spf_record_filter(big, out, sizeof(out)), 1);
	assert_int_equal(strncmp(out, "v=spf1 mxferry-refused", 22), 0);
	assert_int_equal(mxf_spf_record_filter("v=spf1 a:%{c}.x -all", out, sizeof(out)), 1);
	assert_int_equal(mxf_spf_record_filter("v=spf1 a:%{d999}.x -all", out, sizeof(out)), 1);
	assert_int_equal(mxf_spf_record_filter("v=spf1 a:%{d0}.x -all", out, sizeof(out)), 1);
	assert_int_equal(mxf_spf_record_filter("v=spf1 a:%{l.-.-.-.-.-.-.-}.x", out, sizeof(out)), 1);
	assert_int_equal(mxf_spf_record_filter("v=spf1 a:%{s}%{s}%{s}%{s}%{s}%{s}%{s}%{s}%{s}.x",
					       out, sizeof(out)),
			 1);
	assert_int_equal(mxf_spf_record_filter("v=spf1 a:%x", out, sizeof(out)), 1);
	assert_int_equal(mxf_spf_record_filter("v=spf1 a:%%%_%-.x ?all", out, sizeof(out)), 0);
}

static enum mxf_spf_result check(struct spft *t, const char *ip, const char *helo,
				 const char *sender)
{
	enum mxf_spf_result r;
	struct mxf_spf_dns d = spft_dns(t);
	char why[128];
	assert_int_equal(mxf_spf_check(&d, ip, helo, sender, "mx.test", &r, why, sizeof(why)), 0);
	return r;
}

static void test_results(void **st)
{
	(void)st;
	struct spft t = {0};
	mxf_spf_global_init();
	spft_add(&t, "pass.example", "TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all");
	spft_add(&t, "pass.example", "TXT", "some other record");
	spft_add(&t, "soft.example", "TXT", "v=spf1 ~all");
	spft_add(&t, "neutral.example", "TXT", "v=spf1 ?all");
	spft_add(&t, "perm.example", "TXT", "v=spf1 foo:bar -all");
	spft_add(&t, "two.example", "TXT", "v=spf1 -all");
	spft_add(&t, "two.example", "TXT", "v=spf1 +all");
	spft_add(&t, "none.example", "A", "192.0.2.9");
	spft_add(&t, "temp.example", "TIMEOUT", "");
	spft_add(&t, "inc.example", "TXT", "v=spf1 include:temp.example -all");
	spft_add(&t, "mx.example", "TXT", "v=spf1 mx -all exp=why.example");
	spft_add(&t, "mx.example", "MX", "10 mail.mx.example");
	spft_add(&t, "mail.mx.example", "A", "198.51.100.7");
	spft_add(&t, "why.example", "TXT", "%{c}%{r}%{t}");
	spft_add(&t, "helo.example", "TXT", "v=spf1 a -all");
	spft_add(&t, "helo.example", "A", "203.0.113.5");
	spft_add(&t, "macro.example", "TXT", "v=spf1 exists:%{ir}.%{l1r-}.m.example -all");
	spft_add(&t, "5.113.0.203.user.m.example", "A", "127.0.0.2");
	spft_add(&t, "bigmacro.example", "TXT", "v=spf1 exists:%{c}.x -all");

	assert_int_equal(check(&t, "192.0.2.1", "h", "a@pass.example"), MXF_SPF_PASS);
	assert_int_equal(check(&t, "2001:db8::1", "h", "a@pass.example"), MXF_SPF_PASS);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@pass.example"), MXF_SPF_FAIL);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@soft.example"), MXF_SPF_SOFTFAIL);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@neutral.example"), MXF_SPF_NEUTRAL);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@perm.example"), MXF_SPF_PERMERROR);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@two.example"), MXF_SPF_PERMERROR);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@none.example"), MXF_SPF_NONE);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@nxdomain.example"), MXF_SPF_NONE);
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@temp.example"), MXF_SPF_TEMPERROR);
	/* RFC 7208 §5.2: an include: whose lookup fails temporarily. */
	assert_int_equal(check(&t, "198.51.100.1", "h", "a@inc.example"), MXF_SPF_TEMPERROR);
	assert_int_equal(check(&t, "198.51.100.7", "h", "a@mx.example"), MXF_SPF_PASS);
	/* exp= is never fetched: the fail needs no query for why.example. */
	t.queries = 0;
	assert_int_equal(check(&t, "198.51.100.8", "h", "a@mx.example"), MXF_SPF_FAIL);
	/* The null sender: the HELO identity. */
	assert_int_equal(check(&t, "203.0.113.5", "helo.example", ""), MXF_SPF_PASS);
	assert_int_equal(check(&t, "203.0.113.6", "helo.example", ""), MXF_SPF_FAIL);
	/* Macros of the simple form work; refused ones are permerror. */
	assert_int_equal(check(&t, "203.0.113.5", "h", "x.user@macro.example"), MXF_SPF_PASS);
	assert_int_equal(check(&t, "203.0.113.5", "h", "x@bigmacro.example"), MXF_SPF_PERMERROR);
	spft_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filter),
		cmocka_unit_test(test_results),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
