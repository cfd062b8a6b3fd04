#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtpreply.h"

static struct mxf_smtpreply_parser *newp(void)
{
	struct mxf_smtpreply_parser *p;
	assert_int_equal(mxf_smtpreply_parser_new(&p), 0);
	return p;
}

static int feed(struct mxf_smtpreply_parser *p, const char *s)
{
	return mxf_smtpreply_feed(p, s, strlen(s));
}

static struct mxf_smtpreply *take(struct mxf_smtpreply_parser *p)
{
	struct mxf_smtpreply *r = NULL;
	assert_int_equal(mxf_smtpreply_next(p, &r), 1);
	assert_non_null(r);
	return r;
}

static void test_single_line(void **state)
{
	(void)state;
	struct mxf_smtpreply_parser *p = newp();
	assert_int_equal(feed(p, "220 mx.example.org ESMTP ready\r\n"), 0);
	struct mxf_smtpreply *r = take(p);
	assert_int_equal(r->code, 220);
	assert_string_equal(r->esc, "");
	assert_string_equal(mxf_smtpreply_esc(r), "2.0.0");
	assert_string_equal(r->text, "mx.example.org ESMTP ready");
	assert_int_equal(r->nlines, 1);
	mxf_smtpreply_free(r);
	struct mxf_smtpreply *none = NULL;
	assert_int_equal(mxf_smtpreply_next(p, &none), 0);
	assert_false(mxf_smtpreply_partial(p));
	mxf_smtpreply_parser_free(p);
}

static void test_multi_line_byte_by_byte(void **state)
{
	(void)state;
	const char *in = "250-mx.example.org Hello\r\n250-SIZE 1000000\r\n250-PIPELINING\r\n"
			 "250 8BITMIME\r\n";
	struct mxf_smtpreply_parser *p = newp();
	struct mxf_smtpreply *r = NULL;
	for (size_t i = 0; in[i]; i++) {
		assert_int_equal(mxf_smtpreply_next(p, &r), 0);
		assert_int_equal(mxf_smtpreply_feed(p, in + i, 1), 0);
	}
	r = take(p);
	assert_int_equal(r->code, 250);
	assert_int_equal(r->nlines, 4);
	assert_string_equal(r->lines[0], "mx.example.org Hello");
	assert_string_equal(r->lines[1], "SIZE 1000000");
	assert_string_equal(r->lines[2], "PIPELINING");
	assert_string_equal(r->lines[3], "8BITMIME");
	assert_string_equal(r->text, "mx.example.org Hello SIZE 1000000 PIPELINING 8BITMIME");
	mxf_smtpreply_free(r);
	mxf_smtpreply_parser_free(p);
}

static void test_enhanced_code(void **state)
{
	(void)state;
	struct mxf_smtpreply_parser *p = newp();
	assert_int_equal(feed(p, "550-5.1.1 The email account that you tried to reach\r\n"
				 "550-5.1.1 does not exist.\r\n550 5.1.1 Bye\r\n"),
			 0);
	struct mxf_smtpreply *r = take(p);
	assert_int_equal(r->code, 550);
	assert_string_equal(r->esc, "5.1.1");
	assert_string_equal(mxf_smtpreply_esc(r), "5.1.1");
	assert_string_equal(r->text,
			    "The email account that you tried to reach does not exist. Bye");
	mxf_smtpreply_free(r);

	/* Three-digit subject and detail are valid (RFC 3463). */
	assert_int_equal(feed(p, "451 4.123.456 later\r\n"), 0);
	r = take(p);
	assert_string_equal(r->esc, "4.123.456");
	assert_string_equal(r->text, "later");
	mxf_smtpreply_free(r);

	/* An enhanced code of another class than the reply is not one. */
	assert_int_equal(feed(p, "250 5.1.1 odd\r\n"), 0);
	r = take(p);
	assert_string_equal(r->esc, "");
	assert_string_equal(mxf_smtpreply_esc(r), "2.0.0");
	assert_string_equal(r->text, "5.1.1 odd");
	mxf_smtpreply_free(r);

	/* Not an enhanced code: four digits, or no separator after it. */
	assert_int_equal(feed(p, "554 5.1.1234 x\r\n554 5.7.1x\r\n"), 0);
	r = take(p);
	assert_string_equal(r->esc, "");
	assert_string_equal(mxf_smtpreply_esc(r), "5.0.0");
	assert_string_equal(r->text, "5.1.1234 x");
	mxf_smtpreply_free(r);
	r = take(p);
	assert_string_equal(r->esc, "");
	mxf_smtpreply_free(r);

	/* An enhanced code alone on the line. */
	assert_int_equal(feed(p, "250 2.0.0\r\n"), 0);
	r = take(p);
	assert_string_equal(r->esc, "2.0.0");
	assert_string_equal(r->text, "");
	mxf_smtpreply_free(r);
	mxf_smtpreply_parser_free(p);
}

static void test_code_only_and_lf(void **state)
{
	(void)state;
	struct mxf_smtpreply_parser *p = newp();
	/* "NNN" alone ends a reply; a bare LF ends a line as well. */
	assert_int_equal(feed(p, "354\r\n221-a\n221 b\n"), 0);
	struct mxf_smtpreply *r = take(p);
	assert_int_equal(r->code, 354);
	assert_string_equal(r->text, "");
	mxf_smtpreply_free(r);
	r = take(p);
	assert_int_equal(r->code, 221);
	assert_string_equal(r->text, "a b");
	mxf_smtpreply_free(r);
	mxf_smtpreply_parser_free(p);
}

static void test_several_replies_one_feed(void **state)
{
	(void)state;
	struct mxf_smtpreply_parser *p = newp();
	/* Pipelined answers arrive together, and a partial one stays pending. */
	assert_int_equal(feed(p, "250 2.1.0 ok\r\n550 5.1.1 no\r\n250 2.1.5 ok\r\n354 go"), 0);
	int codes[] = {250, 550, 250};
	for (int i = 0; i < 3; i++) {
		struct mxf_smtpreply *r = take(p);
		assert_int_equal(r->code, codes[i]);
		mxf_smtpreply_free(r);
	}
	struct mxf_smtpreply *r = NULL;
	assert_int_equal(mxf_smtpreply_next(p, &r), 0);
	assert_true(mxf_smtpreply_partial(p));
	assert_int_equal(feed(p, " ahead\r\n"), 0);
	r = take(p);
	assert_int_equal(r->code, 354);
	assert_string_equal(r->text, "go ahead");
	mxf_smtpreply_free(r);
	assert_false(mxf_smtpreply_partial(p));
	mxf_smtpreply_parser_free(p);
}

static void expect_error(const char *in)
{
	struct mxf_smtpreply_parser *p = newp();
	struct mxf_smtpreply *r = NULL;
	assert_int_equal(feed(p, in), -EPROTO);
	assert_int_equal(mxf_smtpreply_next(p, &r), -EPROTO);
	/* Sticky: later input is refused too. */
	assert_int_equal(feed(p, "250 ok\r\n"), -EPROTO);
	mxf_smtpreply_parser_free(p);
}

static void test_protocol_errors(void **state)
{
	(void)state;
	expect_error("250-first\r\n251 second\r\n"); /* mismatched codes */
	expect_error("2x0 bad\r\n");                 /* non-digit */
	expect_error("abc\r\n");
	expect_error("25\r\n");       /* too short */
	expect_error("\r\n");         /* empty line */
	expect_error("250_ok\r\n");   /* bad separator */
	expect_error("150 prelim\r\n"); /* 1yz is not an SMTP reply */
	expect_error("650 huh\r\n");
	expect_error("050 huh\r\n");
	static const char nul[] = "250 a\0b\r\n";
	struct mxf_smtpreply_parser *p = newp();
	assert_int_equal(mxf_smtpreply_feed(p, nul, sizeof(nul) - 1), -EPROTO);
	mxf_smtpreply_parser_free(p);
}

static void test_replies_before_error_survive(void **state)
{
	(void)state;
	struct mxf_smtpreply_parser *p = newp();
	assert_int_equal(feed(p, "250 ok\r\ngarbage\r\n"), -EPROTO);
	struct mxf_smtpreply *r = take(p);
	assert_int_equal(r->code, 250);
	mxf_smtpreply_free(r);
	assert_int_equal(mxf_smtpreply_next(p, &r), -EPROTO);
	mxf_smtpreply_parser_free(p);
}

static void test_line_length(void **state)
{
	(void)state;
	/* Longer than RFC 5321's 512 but within our lenience: accepted. */
	char line[MXF_SMTPREPLY_LINE_MAX + 16];
	memcpy(line, "250 ", 4);
	memset(line + 4, 'a', 1000);
	memcpy(line + 1004, "\r\n", 3);
	struct mxf_smtpreply_parser *p = newp();
	assert_int_equal(feed(p, line), 0);
	struct mxf_smtpreply *r = take(p);
	assert_int_equal(strlen(r->text), 1000);
	mxf_smtpreply_free(r);

	/* Exactly at the limit, CRLF included: accepted. */
	size_t body = MXF_SMTPREPLY_LINE_MAX - 4 - 2;
	memset(line + 4, 'b', body);
	memcpy(line + 4 + body, "\r\n", 3);
	assert_int_equal(feed(p, line), 0);
	r = take(p);
	assert_int_equal(strlen(r->text), body);
	mxf_smtpreply_free(r);
	mxf_smtpreply_parser_free(p);

	/* One octet more: refused, even fed in small pieces without an end. */
	p = newp();
	int rc = 0;
	assert_int_equal(feed(p, "250 "), 0);
	for (size_t i = 0; i < MXF_SMTPREPLY_LINE_MAX && rc == 0; i++)
		rc = mxf_smtpreply_feed(p, "c", 1);
	assert_int_equal(rc, -EPROTO);
	mxf_smtpreply_parser_free(p);
}

static void test_too_many_lines(void **state)
{
	(void)state;
	struct mxf_smtpreply_parser *p = newp();
	int rc = 0;
	for (int i = 0; i <= MXF_SMTPREPLY_LINES && rc == 0; i++)
		rc = feed(p, "250-more\r\n");
	assert_int_equal(rc, -EPROTO);
	mxf_smtpreply_parser_free(p);
}

static void test_parse_esc(void **state)
{
	(void)state;
	char esc[16];
	assert_int_equal(mxf_smtpreply_parse_esc("5.7.1 denied", esc), 5);
	assert_string_equal(esc, "5.7.1");
	assert_int_equal(mxf_smtpreply_parse_esc("2.0.0", esc), 5);
	assert_int_equal(mxf_smtpreply_parse_esc("3.0.0 x", esc), 0);
	assert_int_equal(mxf_smtpreply_parse_esc("5..1 x", esc), 0);
	assert_int_equal(mxf_smtpreply_parse_esc("5.1. x", esc), 0);
	assert_int_equal(mxf_smtpreply_parse_esc("5.1", esc), 0);
	assert_int_equal(mxf_smtpreply_parse_esc("5.1000.1 x", esc), 0);
	assert_int_equal(mxf_smtpreply_parse_esc("", esc), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_line),
		cmocka_unit_test(test_multi_line_byte_by_byte),
		cmocka_unit_test(test_enhanced_code),
		cmocka_unit_test(test_code_only_and_lf),
		cmocka_unit_test(test_several_replies_one_feed),
		cmocka_unit_test(test_protocol_errors),
		cmocka_unit_test(test_replies_before_error_survive),
		cmocka_unit_test(test_line_length),
		cmocka_unit_test(test_too_many_lines),
		cmocka_unit_test(test_parse_esc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
