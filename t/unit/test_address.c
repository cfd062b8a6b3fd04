#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "address.h"

static void norm_ok(const char *in, const char *want)
{
	char out[MXF_ADDR_SIZE];
	int r = mxf_addr_normalize(in, MXF_ADDR_UTF8, out, sizeof(out));
	if (r != 0)
		fail_msg("'%s': %d", in, r);
	assert_string_equal(out, want);
}

static void norm_bad(const char *in, unsigned flags, int want)
{
	char out[MXF_ADDR_SIZE];
	int r = mxf_addr_normalize(in, flags, out, sizeof(out));
	if (r != want)
		fail_msg("'%s': got %d want %d", in, r, want);
}

static void test_normalize(void **state)
{
	(void)state;
	norm_ok("user@example.com", "user@example.com");
	norm_ok("User.Name+tag@EXAMPLE.Com", "User.Name+tag@example.com");
	norm_ok("\"quoted local\"@example.com", "\"quoted local\"@example.com");
	norm_ok("a@b.c", "a@b.c");
	/* IDN: U-labels become lower-case A-labels */
	norm_ok("info@bücher.example", "info@xn--bcher-kva.example");
	norm_ok("info@BÜCHER.example", "info@xn--bcher-kva.example");
	norm_ok("x@xn--bcher-kva.example", "x@xn--bcher-kva.example");
	/* UTF-8 local part only with SMTPUTF8 */
	norm_ok("jürgen@example.com", "jürgen@example.com");
	norm_bad("jürgen@example.com", 0, -EINVAL);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	norm_bad("", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("noat", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("@example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("user@", MXF_ADDR_UTF8, -EINVAL);
	norm_bad(".user@example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("user.@example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("us..er@example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("us er@example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("user@exa mple.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("user@-example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("user@example-.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("user@example..com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("user@example.com\r\nRCPT", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("\"unterminated@example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("\"a\nb\"@example.com", MXF_ADDR_UTF8, -EINVAL);
	norm_bad("a@b@example.com", MXF_ADDR_UTF8, -EINVAL);
}

static void test_limits(void **state)
{
	(void)state;
	char addr[600];
	/* local part: 64 ok, 65 too long */
	memset(addr, 'a', 64);
	strcpy(addr + 64, "@example.com");
	norm_ok(addr, addr);
	memset(addr, 'a', 65);
	strcpy(addr + 65, "@example.com");
	norm_bad(addr, MXF_ADDR_UTF8, -ENAMETOOLONG);
	/* label: 63 ok, 64 too long */
	strcpy(addr, "u@");
	memset(addr + 2, 'b', 63);
	strcpy(addr + 65, ".example");
	norm_ok(addr, addr);
	strcpy(addr, "u@");
	memset(addr + 2, 'b', 64);
	strcpy(addr + 66, ".example");
	norm_bad(addr, MXF_ADDR_UTF8, -ENAMETOOLONG);
	/* domain: 253 ok, 254 too long */
	strcpy(addr, "u@");
	size_t o = 2;
	for (int i = 0; i < 4; i++) {
		memset(addr + o, 'c', 62);
		o += 62;
		addr[o++] = '.';
	}
	memset(addr + o, 'd', 1); /* 4*63 + 1 = 253 */
	addr[o + 1] = '\0';
	norm_ok(addr, addr);
	addr[o + 1] = 'd';
	addr[o + 2] = '\0';
	norm_bad(addr, MXF_ADDR_UTF8, -ENAMETOOLONG);
}

static void test_domain_unicode(void **state)
{
	(void)state;
	char out[256];
	assert_int_equal(mxf_domain_to_unicode("xn--bcher-kva.example", out, sizeof(out)), 0);
	assert_string_equal(out, "bücher.example");
	assert_int_equal(mxf_domain_to_unicode("plain.example", out, sizeof(out)), 0);
	assert_string_equal(out, "plain.example");
	assert_int_equal(mxf_domain_to_ascii("Plain.Example", out, sizeof(out)), 0);
	assert_string_equal(out, "plain.example");
	assert_true(mxf_domain_to_ascii("under_score.example", out, sizeof(out)) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_domain_unicode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
