/* Unit tests for common/smtp.c: line splitter, command parser, DATA decoder,
 * reply formatting. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp.h"

/* ---- helpers ---- */

static char *rep(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* A dotted domain of exactly n octets with labels of at most 63. */
static char *domain_of(size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		s[i] = (i % 64 == 63) ? '.' : (char)('a' + (i / 64) % 26);
	if (s[n - 1] == '.')
		s[n - 1] = 'z';
	s[n] = '\0';
	return s;
}

static int parse(const char *line, struct mxf_smtp_cmd *c)
{
	return mxf_smtp_parse_cmd(line, strlen(line), c);
}

/* The last expect_err result, for checks of the reply text. */
static struct mxf_smtp_cmd last;

static void expect_err(const char *line, int code, const char *esc)
{
	struct mxf_smtp_cmd c;
	int r = parse(line, &c);
	last = c;
	if (r == 0 || c.err.code != code || strcmp(c.err.esc, esc) != 0)
		fail_msg("'%.80s': got r=%d %d %s, want %d %s", line, r, c.err.code,
			 c.err.esc ? c.err.esc : "-", code, esc);
}

static void expect_ok(const char *line, struct mxf_smtp_cmd *c)
{
	int r = parse(line, c);
	if (r != 0)
		fail_msg("'%.80s': got %d %s %s", line, c->err.code, c->err.esc, c->err.text);
}

/* ---- line splitter ---- */

static void test_lines_basic(void **state)
{
	(void)state;
	struct mxf_smtp_lines ls;
	mxf_smtp_lines_init(&ls);
	const char *in = "EHLO a\r\nMAIL FROM:<>\r\nRC";
	size_t n = strlen(in);
	const char *line;
	size_t ll;

	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_OK);
	assert_string_equal(line, "EHLO a");
	assert_int_equal(ll, 6);
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_OK);
	assert_string_equal(line, "MAIL FROM:<>");
	/* The rest stays until its end arrives, even one byte at a time. */
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_MORE);
	assert_int_equal(n, 0);
	const char *more = "PT TO:<a@b>\r";
	for (const char *p = more; *p; p++) {
		const char *q = p;
		size_t one = 1;
		assert_int_equal(mxf_smtp_lines_next(&ls, &q, &one, &line, &ll), MXF_SMTP_LINE_MORE);
	}
	in = "\nQUIT\r\n";
	n = strlen(in);
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_OK);
	assert_string_equal(line, "RCPT TO:<a@b>");
	/* Input after the line is left for the caller. */
	assert_int_equal(n, 6);
	assert_memory_equal(in, "QUIT\r\n", 6);
}

static void test_lines_bare_lf(void **state)
{
	(void)state;
	struct mxf_smtp_lines ls;
	mxf_smtp_lines_init(&ls);
	const char *in = "NOOP\nNOOP\r\n";
	size_t n = strlen(in);
	const char *line;
	size_t ll;
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_BARE_LF);
	assert_string_equal(line, "NOOP");
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_OK);
	assert_string_equal(line, "NOOP");
	/* A bare CR does not end a line: it stays inside (the parser rejects it). */
	in = "NO\rOP\r\n";
	n = strlen(in);
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_OK);
	assert_int_equal(ll, 5);
	assert_memory_equal(line, "NO\rOP", 5);
}

static void check_len(size_t content, enum mxf_smtp_line_result want)
{
	struct mxf_smtp_lines ls;
	mxf_smtp_lines_init(&ls);
	char *buf = malloc(content + 2 + 7);
	memset(buf, 'x', content);
	memcpy(buf + content, "\r\nQUIT\r\n", 8);
	const char *in = buf;
	size_t n = content + 8;
	const char *line;
	size_t ll;
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), want);
	if (want == MXF_SMTP_LINE_OK)
		assert_int_equal(ll, content);
	/* Either way the next line comes out intact: the long one was skipped
	 * to its end. */
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_OK);
	assert_string_equal(line, "QUIT");
	assert_int_equal(n, 0);
	free(buf);
}

static void test_lines_limit(void **state)
{
	(void)state;
	check_len(510, MXF_SMTP_LINE_OK);       /* 512 octets with CRLF */
	check_len(511, MXF_SMTP_LINE_TOO_LONG); /* 513 */
	check_len(512, MXF_SMTP_LINE_TOO_LONG);
	check_len(5000, MXF_SMTP_LINE_TOO_LONG);
}

static void test_lines_long_fed_in_pieces(void **state)
{
	(void)state;
	struct mxf_smtp_lines ls;
	mxf_smtp_lines_init(&ls);
	char *x = rep('y', 700);
	const char *line;
	size_t ll;
	const char *in = x;
	size_t n = 700;
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_MORE);
	in = x;
	n = 700;
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_MORE);
	in = "zz\r\nNOOP\r\n";
	n = strlen(in);
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_TOO_LONG);
	assert_int_equal(mxf_smtp_lines_next(&ls, &in, &n, &line, &ll), MXF_SMTP_LINE_OK);
	assert_string_equal(line, "NOOP");
	free(x);
}

/* ---- command parser ---- */

static void test_verbs(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	static const struct {
		const char *line;
		enum mxf_smtp_verb v;
	} t[] = {
		{"DATA", MXF_SMTP_DATA}, {"data", MXF_SMTP_DATA}, {"RSET", MXF_SMTP_RSET},
		{"NOOP", MXF_SMTP_NOOP}, {"NOOP anything", MXF_SMTP_NOOP},
		{"QUIT", MXF_SMTP_QUIT}, {"QuIt", MXF_SMTP_QUIT}, {"HELP", MXF_SMTP_HELP},
		{"HELP mail", MXF_SMTP_HELP}, {"VRFY bob", MXF_SMTP_VRFY},
		{"RSET  ", MXF_SMTP_RSET}, /* trailing spaces ignored */
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		expect_ok(t[i].line, &c);
		assert_int_equal(c.verb, t[i].v);
	}
	expect_ok("HELP mail", &c);
	assert_string_equal(c.arg, "mail");
	expect_ok("VRFY <bob@example.org>", &c);
	assert_string_equal(c.arg, "<bob@example.org>");
	assert_string_equal(mxf_smtp_verb_name(MXF_SMTP_RCPT), "RCPT");
}

static void test_unknown_and_args(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_err("FOO", 500, "5.5.2");
	expect_err("", 500, "5.5.2");
	expect_err("EHLOX a", 500, "5.5.2");
	expect_err("DAT", 500, "5.5.2");
	expect_err("STARTTL", 500, "5.5.2");
	expect_err("STARTTLS x", 501, "5.5.4");
	expect_err("BDATX 1", 500, "5.5.2");
	expect_err("DATAX", 500, "5.5.2");
	assert_int_not_equal(parse("DATAX", &c), 0);
	assert_int_equal(c.verb, MXF_SMTP_UNKNOWN);
	expect_err("DATA x", 501, "5.5.4");
	expect_err("RSET x", 501, "5.5.4");
	expect_err("QUIT now", 501, "5.5.4");
	expect_err("VRFY", 501, "5.5.4");
	/* The verb is known even when the arguments are bad (for counting). */
	assert_int_not_equal(parse("DATA x", &c), 0);
	assert_int_equal(c.verb, MXF_SMTP_DATA);
}

static void test_bad_bytes(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_err("NOOP\r", 500, "5.5.2");
	expect_err("NOOP a\rb", 500, "5.5.2");
	expect_err("NOOP a\nb", 500, "5.5.2");
	/* 8-bit: only well-formed UTF-8, only in MAIL/RCPT. */
	expect_err("RCPT TO:<b\xc3@example.org>", 500, "5.5.2");
	expect_err("RCPT TO:<b\xc0\xaf@example.org>", 500, "5.5.2");     /* overlong */
	expect_err("RCPT TO:<b\xed\xa0\x80@example.org>", 500, "5.5.2"); /* surrogate */
	expect_err("RCPT TO:<b\xc2\x85@example.org>", 500, "5.5.2");     /* C1 NEL */
	expect_err("NOOP \xc3\xa9", 500, "5.5.2");
	expect_err("EHLO ex\x80mple.org", 500, "5.5.2");
	/* NUL: explicit length, the line goes on after it. */
	assert_int_equal(mxf_smtp_parse_cmd("NOOP\0x", 6, &c), -EINVAL);
	assert_int_equal(c.err.code, 500);
	assert_int_equal(mxf_smtp_parse_cmd("QUIT\0", 5, &c), -EINVAL);
	/* Over the limit even without the splitter. */
	char *l = rep('x', 600);
	memcpy(l, "NOOP ", 5);
	expect_err(l, 500, "5.5.2");
	free(l);
}

static void test_helo(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("EHLO mail.example.org", &c);
	assert_int_equal(c.verb, MXF_SMTP_EHLO);
	assert_string_equal(c.arg, "mail.example.org");
	expect_ok("helo localhost", &c);
	assert_int_equal(c.verb, MXF_SMTP_HELO);
	assert_string_equal(c.arg, "localhost");
	expect_ok("EHLO my_host.local", &c); /* underscores: real clients send them */
	expect_ok("EHLO [192.0.2.1]", &c);
	assert_string_equal(c.arg, "[192.0.2.1]");
	expect_ok("EHLO [IPv6:2001:db8::1]", &c);
	expect_ok("EHLO [ipv6:::1]", &c);
	expect_ok("EHLO [x-tag:some-content]", &c);
	expect_err("EHLO", 501, "5.5.4");
	expect_err("HELO", 501, "5.5.4");
	expect_err("EHLO  two.spaces", 501, "5.5.4");
	expect_err("EHLO a b", 501, "5.5.4");
	expect_err("EHLO a..b", 501, "5.5.4");
	expect_err("EHLO .a", 501, "5.5.4");
	expect_err("EHLO a.", 501, "5.5.4");
	expect_err("EHLO a@b", 501, "5.5.4");
	expect_err("EHLO [192.0.2.300]", 501, "5.5.4");
	expect_err("EHLO [IPv6:2001:db8::g]", 501, "5.5.4");
	expect_err("EHLO [192.0.2.1", 501, "5.5.4");
	expect_err("EHLO []", 501, "5.5.4");
	expect_err("EHLO [1.2.3.4]x", 501, "5.5.4");

	/* 255 octets is the longest domain. */
	char line[600];
	char *d = domain_of(255);
	assert_int_equal(strlen(d), 255);
	snprintf(line, sizeof(line), "EHLO %s", d);
	expect_ok(line, &c);
	assert_string_equal(c.arg, d);
	free(d);
	d = domain_of(256);
	snprintf(line, sizeof(line), "EHLO %s", d);
	expect_err(line, 501, "5.5.4");
	free(d);
}

static void test_mail_basic(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("MAIL FROM:<alice@example.org>", &c);
	assert_int_equal(c.verb, MXF_SMTP_MAIL);
	assert_string_equal(c.path, "alice@example.org");
	assert_false(c.null_path);
	assert_false(c.has_size);
	assert_int_equal(c.body, MXF_SMTP_BODY_NONE);

	expect_ok("mail from:<Alice@Example.ORG>", &c);
	assert_string_equal(c.path, "Alice@Example.ORG"); /* normalising is not the parser's job */

	expect_ok("MAIL FROM:<>", &c);
	assert_true(c.null_path);
	assert_string_equal(c.path, "");

	/* One space after the colon is tolerated, two are not. */
	expect_ok("MAIL FROM: <a@example.org>", &c);
	assert_string_equal(c.path, "a@example.org");
	expect_err("MAIL FROM:  <a@example.org>", 501, "5.5.4");
	expect_err("MAIL FROM :<a@example.org>", 501, "5.5.4");
	expect_err("MAIL  FROM:<a@example.org>", 501, "5.5.4");
	/* Brackets are required (strict). */
	expect_err("MAIL FROM:a@example.org", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org", 501, "5.1.7");
	expect_err("MAIL FROM:<a@example.org>x", 501, "5.5.4");
	expect_err("MAIL TO:<a@example.org>", 501, "5.5.4");
	expect_err("MAIL", 501, "5.5.4");
	expect_err("MAIL FROM:", 501, "5.5.4");

	/* Trailing spaces are fine. */
	expect_ok("MAIL FROM:<a@example.org>  ", &c);
}

static void test_path_syntax(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("MAIL FROM:<first.last+tag@sub.example.org>", &c);
	assert_string_equal(c.path, "first.last+tag@sub.example.org");
	expect_ok("MAIL FROM:<\"john doe\"@example.org>", &c);
	assert_string_equal(c.path, "\"john doe\"@example.org");
	/* A quoted local part may hold '>' and an escaped quote. */
	expect_ok("RCPT TO:<\"a>b\\\"c\"@example.org>", &c);
	assert_string_equal(c.path, "\"a>b\\\"c\"@example.org");
	expect_ok("RCPT TO:<user@[192.0.2.1]>", &c);
	assert_string_equal(c.path, "user@[192.0.2.1]");
	expect_ok("RCPT TO:<user@[IPv6:2001:db8::1]>", &c);

	expect_err("RCPT TO:<>", 501, "5.1.3");
	expect_err("RCPT TO:<a>", 501, "5.1.3");
	expect_err("RCPT TO:<@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a@>", 501, "5.1.3");
	expect_err("RCPT TO:<a@b@c>", 501, "5.1.3");
	expect_err("RCPT TO:<.a@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a.@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a..b@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a b@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a@-example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a@example-.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a@example..org>", 501, "5.1.3");
	expect_err("RCPT TO:<a@example.org.>", 501, "5.1.3");
	expect_err("RCPT TO:<a@exa_mple.org>", 501, "5.1.3");
	expect_err("RCPT TO:<\"unterminated@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<a@[300.1.1.1]>", 501, "5.1.3");
	expect_err("MAIL FROM:<a(comment)@example.org>", 501, "5.1.7");
}

static void test_source_route(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("RCPT TO:<@relay.example:user@example.org>", &c);
	assert_string_equal(c.path, "user@example.org");
	expect_ok("MAIL FROM:<@a.example,@b.example:user@example.org>", &c);
	assert_string_equal(c.path, "user@example.org");
	expect_ok("RCPT TO:<@[192.0.2.1]:user@example.org>", &c);
	assert_string_equal(c.path, "user@example.org");
	expect_err("RCPT TO:<@a.example user@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<@a.example,b.example:user@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<@:user@example.org>", 501, "5.1.3");
	expect_err("RCPT TO:<@a.example:>", 501, "5.1.3");
}

static void test_postmaster(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("RCPT TO:<postmaster>", &c);
	assert_true(c.postmaster);
	assert_string_equal(c.path, "postmaster");
	expect_ok("RCPT TO:<PostMaster>", &c);
	assert_true(c.postmaster);
	expect_ok("RCPT TO:<postmaster@example.org>", &c);
	assert_false(c.postmaster);
	assert_string_equal(c.path, "postmaster@example.org");
	expect_err("MAIL FROM:<postmaster>", 501, "5.1.7");
	expect_err("RCPT TO:<postmaste>", 501, "5.1.3");
	expect_err("RCPT TO:<@a.example:postmaster>", 501, "5.1.3");
}

static void test_path_limits(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	char line[1024];

	/* Local part: 64 octets allowed, 65 not. */
	char *l64 = rep('l', 64), *l65 = rep('l', 65);
	snprintf(line, sizeof(line), "RCPT TO:<%s@example.org>", l64);
	expect_ok(line, &c);
	snprintf(line, sizeof(line), "RCPT TO:<%s@example.org>", l65);
	expect_err(line, 501, "5.1.3");
	assert_string_equal(last.err.text, "Local part too long");
	snprintf(line, sizeof(line), "MAIL FROM:<%s@example.org>", l65);
	expect_err(line, 501, "5.1.7");
	/* Quoted local parts count as written. */
	char *q62 = rep('q', 62);
	snprintf(line, sizeof(line), "RCPT TO:<\"%s\"@example.org>", q62);
	expect_ok(line, &c);
	snprintf(line, sizeof(line), "RCPT TO:<\"%sq\"@example.org>", q62);
	expect_err(line, 501, "5.1.3");

	/* Domain: 256 octets is over the domain limit, 255 is within it (and
	 * then caught by the path limit, since <x@255> is 259 octets). */
	char *d255 = domain_of(255), *d256 = domain_of(256);
	snprintf(line, sizeof(line), "RCPT TO:<x@%s>", d256);
	parse(line, &c);
	assert_string_equal(c.err.text, "Domain too long");
	snprintf(line, sizeof(line), "RCPT TO:<x@%s>", d255);
	parse(line, &c);
	assert_int_equal(c.err.code, 501);
	assert_string_equal(c.err.text, "Path too long");

	/* Path: 256 octets with the brackets allowed, 257 not. */
	char *d189 = domain_of(189), *d190 = domain_of(190);
	snprintf(line, sizeof(line), "RCPT TO:<%s@%s>", l64, d189); /* 1+64+1+189+1 = 256 */
	expect_ok(line, &c);
	assert_int_equal(strlen(c.path), 254);
	snprintf(line, sizeof(line), "RCPT TO:<%s@%s>", l64, d190);
	expect_err(line, 501, "5.1.3");
	assert_string_equal(last.err.text, "Path too long");
	/* A source route counts towards the path. */
	snprintf(line, sizeof(line), "RCPT TO:<@r:%s@%s>", l64, d189);
	expect_err(line, 501, "5.1.3");
	snprintf(line, sizeof(line), "MAIL FROM:<%s@%s> SIZE=10", l64, d189);
	expect_ok(line, &c);
	snprintf(line, sizeof(line), "MAIL FROM:<%s@%s>", l64, d190);
	expect_err(line, 501, "5.1.7");

	free(l64);
	free(l65);
	free(q62);
	free(d255);
	free(d256);
	free(d189);
	free(d190);
}

static void test_mail_params(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("MAIL FROM:<a@example.org> SIZE=12345", &c);
	assert_true(c.has_size);
	assert_int_equal(c.size, 12345);
	expect_ok("MAIL FROM:<a@example.org> size=0 body=8bitmime", &c);
	assert_true(c.has_size);
	assert_int_equal(c.size, 0);
	assert_int_equal(c.body, MXF_SMTP_BODY_8BITMIME);
	expect_ok("MAIL FROM:<> BODY=7BIT SIZE=99", &c);
	assert_true(c.null_path);
	assert_int_equal(c.body, MXF_SMTP_BODY_7BIT);
	assert_int_equal(c.size, 99);
	expect_ok("MAIL FROM:<a@example.org> SIZE=18446744073709551615", &c);
	assert_true(c.size == UINT64_MAX);
	/* 20 digits that overflow: saturate, so the size check refuses it. */
	expect_ok("MAIL FROM:<a@example.org> SIZE=99999999999999999999", &c);
	assert_true(c.size == UINT64_MAX);
	expect_ok("MAIL FROM:<a@example.org>  SIZE=1", &c); /* extra spaces tolerated */

	expect_err("MAIL FROM:<a@example.org> SIZE=123456789012345678901", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> SIZE=", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> SIZE", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> SIZE=12k", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> SIZE=-1", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> SIZE=1 SIZE=2", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> BODY=7BIT BODY=7BIT", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> BODY", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> BODY=BINARYMIME", 555, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> SMTPUTF8=yes", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> SMTPUTF8 SMTPUTF8", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> RET=ALL", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> RET=FULL RET=HDRS", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> ENVID=a+2", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> ENVID=a+2b", 501, "5.5.4"); /* lower-case hex */
	expect_err("MAIL FROM:<a@example.org> ENVID=a ENVID=b", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> X-FOO=bar", 555, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> =bar", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org> A=b=c", 501, "5.5.4");
	expect_err("MAIL FROM:<a@example.org>SIZE=1", 501, "5.5.4");
	/* RCPT takes no parameters here (no DSN yet). */
	expect_ok("RCPT TO:<b@example.org>", &c);
	expect_err("RCPT TO:<b@example.org> NOTIFY=NEVER,SUCCESS", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> NOTIFY=SUCCESS,SUCCESS", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> NOTIFY=", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> NOTIFY=SOMETIMES", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> NOTIFY=DELAY NOTIFY=DELAY", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> ORCPT=b@example.org", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> ORCPT=rfc822;", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> ORCPT=rfc822;a+zz", 501, "5.5.4");
	expect_err("RCPT TO:<b@example.org> SIZE=1", 555, "5.5.4");
}

/* ---- DATA decoder ---- */

struct dec {
	struct mxf_smtp_data d;
	char out[8192];
	size_t outlen;
	size_t consumed;
};

/* Feeds in pieces of chunk bytes (0: all at once). */
static void decode(struct dec *x, const char *in, size_t len, size_t chunk)
{
	mxf_smtp_data_init(&x->d);
	x->outlen = 0;
	x->consumed = 0;
	if (chunk == 0)
		chunk = len;
	while (x->consumed < len && !x->d.done) {
		size_t n = len - x->consumed < chunk ? len - x->consumed : chunk;
		size_t o;
		size_t used = mxf_smtp_data_feed(&x->d, in + x->consumed, n, x->out + x->outlen,
						 sizeof(x->out) - x->outlen, &o);
		assert_true(used <= n);
		assert_true(o <= used + 1);
		x->consumed += used;
		x->outlen += o;
		if (used < n)
			break; /* stopped at the end marker */
	}
	assert_int_equal(x->d.size, x->outlen);
}

static void test_data_simple(void **state)
{
	(void)state;
	struct dec x;
	const char *in = "Subject: hi\r\n\r\nbody\r\n.\r\n";
	for (size_t chunk = 0; chunk <= 5; chunk++) {
		decode(&x, in, strlen(in), chunk);
		assert_true(x.d.done);
		assert_int_equal(x.consumed, strlen(in));
		assert_int_equal(x.outlen, strlen("Subject: hi\r\n\r\nbody\r\n"));
		assert_memory_equal(x.out, "Subject: hi\r\n\r\nbody\r\n", x.outlen);
		assert_false(x.d.bare_cr);
		assert_false(x.d.bare_lf);
		assert_int_equal(x.d.long_lines, 0);
	}
	/* An empty message: the DATA line's CRLF starts the end marker. */
	decode(&x, ".\r\n", 3, 0);
	assert_true(x.d.done);
	assert_int_equal(x.outlen, 0);
	/* Not finished yet. */
	decode(&x, "abc\r\n.\r", 7, 0);
	assert_false(x.d.done);
	assert_int_equal(x.consumed, 7);
}

static void test_data_unstuff(void **state)
{
	(void)state;
	struct dec x;
	const char *in = "..leading\r\n.\r\n";
	decode(&x, in, strlen(in), 0);
	assert_true(x.d.done);
	assert_int_equal(x.outlen, 10);
	assert_memory_equal(x.out, ".leading\r\n", 10);

	in = "a\r\n..\r\n...x\r\nmid.dle.\r\n. space\r\n.\r\n";
	for (size_t chunk = 0; chunk <= 3; chunk++) {
		decode(&x, in, strlen(in), chunk);
		const char *want = "a\r\n.\r\n..x\r\nmid.dle.\r\n space\r\n";
		assert_true(x.d.done);
		assert_int_equal(x.outlen, strlen(want));
		assert_memory_equal(x.out, want, x.outlen);
	}
}

static void expect_not_end(const char *in, size_t len, bool cr, bool lf)
{
	struct dec x;
	for (size_t chunk = 0; chunk <= 2; chunk++) {
		decode(&x, in, len, chunk);
		if (x.d.done)
			fail_msg("smuggled end marker accepted (chunk %zu)", chunk);
		assert_int_equal(x.consumed, len);
		assert_int_equal(x.d.bare_cr, cr);
		assert_int_equal(x.d.bare_lf, lf);
	}
}

static void test_data_smuggling(void **state)
{
	(void)state;
	/* None of these ends the data: only CRLF.CRLF does. */
	expect_not_end("a\n.\nMAIL FROM:<x@y>\r\n", 21, false, true);
	expect_not_end("a\r\n.\nMAIL FROM:<x@y>\r\n", 22, false, true);
	expect_not_end("a\n.\r\nMAIL FROM:<x@y>\r\n", 22, false, true);
	expect_not_end("a\r.\r\nMAIL FROM:<x@y>\r\n", 22, true, false);
	expect_not_end("a\r\n.\rMAIL FROM:<x@y>\r\n", 22, true, false);
	expect_not_end("a\r.\rMAIL FROM:<x@y>\r\n", 21, true, false);
	expect_not_end("a\r\n.\r\rMAIL\r\n", 12, true, false);
	expect_not_end("a\r\r\n.\r\r\n", 8, true, false);
	expect_not_end("\n.\r\n", 4, false, true);
	expect_not_end(".\n", 2, false, true);
	expect_not_end("a\r\n\x00.\r\n", 7, false, false);

	/* Mixed: the real end marker after smuggling attempts still ends it,
	 * with the flags kept for the refusal. */
	struct dec x;
	const char *in = "a\n.\nb\r\n.\r\nRSET\r\n";
	decode(&x, in, strlen(in), 0);
	assert_true(x.d.done);
	assert_true(x.d.bare_lf);
	assert_int_equal(x.consumed, strlen(in) - 6);
	/* Bare CR/LF are passed through untouched, never normalised. */
	assert_int_equal(x.outlen, 7);
	assert_memory_equal(x.out, "a\n.\nb\r\n", 7);

	in = "x\ry\r\n.\r\n";
	decode(&x, in, strlen(in), 1);
	assert_true(x.d.done);
	assert_true(x.d.bare_cr);
	assert_false(x.d.bare_lf);
	assert_memory_equal(x.out, "x\ry\r\n", 5);
}

static void test_data_pipelined_rest(void **state)
{
	(void)state;
	struct dec x;
	const char *in = "body\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n";
	decode(&x, in, strlen(in), 0);
	assert_true(x.d.done);
	assert_int_equal(x.consumed, 9);
	assert_string_equal(in + x.consumed, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	assert_int_equal(x.outlen, 6);

	/* Once done, the decoder consumes nothing more. */
	size_t o;
	char out[16];
	assert_int_equal(mxf_smtp_data_feed(&x.d, "more", 4, out, sizeof(out), &o), 0);
	assert_int_equal(o, 0);
}

static void test_data_outcap(void **state)
{
	(void)state;
	struct mxf_smtp_data d;
	char out[4];
	size_t o;
	mxf_smtp_data_init(&d);
	/* A small output buffer limits consumption; nothing is lost. */
	assert_int_equal(mxf_smtp_data_feed(&d, "abcdef", 6, out, 4, &o), 4);
	assert_int_equal(o, 4);
	assert_memory_equal(out, "abcd", 4);
	/* A held-back CR needs room for two bytes. */
	mxf_smtp_data_init(&d);
	assert_int_equal(mxf_smtp_data_feed(&d, "\r\n.\r", 4, out, 4, &o), 4);
	assert_int_equal(o, 2);
	assert_int_equal(mxf_smtp_data_feed(&d, "X", 1, out, 1, &o), 0);
	assert_int_equal(mxf_smtp_data_feed(&d, "X", 1, out, 2, &o), 1);
	assert_int_equal(o, 2);
	assert_memory_equal(out, "\rX", 2);
	assert_true(d.bare_cr);
	assert_int_equal(d.size, 4);
}

static void test_data_long_lines(void **state)
{
	(void)state;
	struct dec x;
	char in[4000];
	size_t n = 0;
	memset(in, 'a', 998); /* 998 + CRLF = 1000: fine */
	n = 998;
	memcpy(in + n, "\r\n", 2);
	n += 2;
	memset(in + n, 'b', 999); /* 1001: long */
	n += 999;
	memcpy(in + n, "\r\n", 2);
	n += 2;
	/* A stuffed dot does not count: 1 + 998 on the wire. */
	in[n++] = '.';
	memset(in + n, 'c', 998);
	n += 998;
	memcpy(in + n, "\r\n.\r\n", 5);
	n += 5;
	decode(&x, in, n, 0);
	assert_true(x.d.done);
	assert_int_equal(x.d.long_lines, 1);
	assert_int_equal(x.outlen, 1000 + 1001 + 1000);
	assert_false(x.d.bare_cr);
}

/* ---- replies ---- */

static void test_reply(void **state)
{
	(void)state;
	char buf[600];
	assert_int_equal(mxf_smtp_reply_line(buf, sizeof(buf), 250, false, "2.1.0", "Ok"), 14);
	assert_string_equal(buf, "250 2.1.0 Ok\r\n");
	mxf_smtp_reply_line(buf, sizeof(buf), 250, true, NULL, "PIPELINING");
	assert_string_equal(buf, "250-PIPELINING\r\n");
	mxf_smtp_reply_line(buf, sizeof(buf), 354, false, "", "End data with <CR><LF>.<CR><LF>");
	assert_string_equal(buf, "354 End data with <CR><LF>.<CR><LF>\r\n");
	/* Text from elsewhere cannot inject a line. */
	mxf_smtp_reply_line(buf, sizeof(buf), 550, false, "5.1.1", "no\r\n250 2.0.0 ok\x80");
	assert_string_equal(buf, "550 5.1.1 no??250 2.0.0 ok?\r\n");
	char *longtext = rep('t', 700);
	int n = mxf_smtp_reply_line(buf, sizeof(buf), 550, false, "5.1.1", longtext);
	assert_int_equal(n, MXF_SMTP_LINE_MAX);
	assert_memory_equal(buf + n - 2, "\r\n", 2);
	free(longtext);
	assert_int_equal(mxf_smtp_reply_line(buf, 10, 250, false, "2.0.0", "Ok"), -ENOSPC);
	assert_int_equal(mxf_smtp_reply_line(buf, sizeof(buf), 99, false, NULL, "x"), -EINVAL);

	assert_true(mxf_smtp_reply_valid(250, "2.0.0"));
	assert_true(mxf_smtp_reply_valid(550, "5.1.1"));
	assert_true(mxf_smtp_reply_valid(451, "4.123.999"));
	assert_false(mxf_smtp_reply_valid(250, "5.0.0"));
	assert_false(mxf_smtp_reply_valid(550, "4.1.1"));
	assert_false(mxf_smtp_reply_valid(354, "3.0.0"));
	assert_false(mxf_smtp_reply_valid(600, "6.0.0"));
	assert_false(mxf_smtp_reply_valid(199, "1.0.0"));
	assert_false(mxf_smtp_reply_valid(250, "2.0"));
	assert_false(mxf_smtp_reply_valid(250, "2.0.0 "));
	assert_false(mxf_smtp_reply_valid(250, "2.1234.0"));
	assert_false(mxf_smtp_reply_valid(250, "2..0"));
	assert_false(mxf_smtp_reply_valid(250, NULL));
}

static void test_smtputf8_and_dsn(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc" "cher.example> SMTPUTF8 BODY=8BITMIME RET=hdrs "
		  "ENVID=QQ+2B1",
		  &c);
	assert_true(c.utf8_path);
	assert_true(c.smtputf8);
	assert_string_equal(c.path, "j\xc3\xb6rg@b\xc3\xbc" "cher.example");
	assert_string_equal(c.ret, "HDRS");
	assert_string_equal(c.envid, "QQ+2B1");
	expect_ok("MAIL FROM:<a@example.org>", &c);
	assert_false(c.utf8_path);
	assert_false(c.smtputf8);
	assert_string_equal(c.ret, "");
	expect_ok("RCPT TO:<\"q \xe2\x82\xac\"@\xe4\xbe\x8b.example> NOTIFY=delay,Failure "
		  "ORCPT=RFC822;b+2Bx@example.org",
		  &c);
	assert_true(c.utf8_path);
	assert_string_equal(c.notify, "FAILURE,DELAY");
	assert_string_equal(c.orcpt, "rfc822;b+2Bx@example.org");
	expect_ok("RCPT TO:<b@example.org> NOTIFY=NEVER ORCPT=utf-8;b\xc3\xa9@example.org", &c);
	assert_string_equal(c.notify, "NEVER");
	assert_string_equal(c.orcpt, "utf-8;b\xc3\xa9@example.org");
	/* 100 xtext characters is the ENVID limit. */
	char l[300];
	snprintf(l, sizeof(l), "MAIL FROM:<a@example.org> ENVID=%0100d", 0);
	expect_ok(l, &c);
	snprintf(l, sizeof(l), "MAIL FROM:<a@example.org> ENVID=%0101d", 0);
	expect_err(l, 501, "5.5.4");

	char x[64];
	assert_int_equal(mxf_xtext_encode("a+b=c d", x, sizeof(x)), 13);
	assert_string_equal(x, "a+2Bb+3Dc+20d");
	assert_int_equal(mxf_xtext_encode("abc", x, 3), -ENOSPC);
}

static void test_bdat_and_starttls(void **state)
{
	(void)state;
	struct mxf_smtp_cmd c;
	expect_ok("BDAT 0 LAST", &c);
	assert_int_equal(c.verb, MXF_SMTP_BDAT);
	assert_int_equal(c.bdat_size, 0);
	assert_true(c.bdat_last);
	expect_ok("bdat 12345", &c);
	assert_int_equal(c.bdat_size, 12345);
	assert_false(c.bdat_last);
	expect_ok("BDAT 7 last", &c);
	assert_true(c.bdat_last);
	expect_err("BDAT", 501, "5.5.4");
	expect_err("BDAT -1", 501, "5.5.4");
	expect_err("BDAT 1x", 501, "5.5.4");
	expect_err("BDAT 12 LASTX", 501, "5.5.4");
	/* A chunk size we can report even when refused: the session must
	 * still read past the octets. */
	assert_int_equal(last.bdat_size, 12);
	expect_err("BDAT 99999999999999999999999", 501, "5.5.4");
	expect_ok("STARTTLS", &c);
	assert_int_equal(c.verb, MXF_SMTP_STARTTLS);
	assert_string_equal(mxf_smtp_verb_name(MXF_SMTP_STARTTLS), "STARTTLS");
}

/* The block copy inside lines (issue 14) decodes exactly as the byte loop
 * did: random messages (dots, CR, LF, NUL, long lines, end markers) fed
 * whole, byte by byte and in random pieces with random output room all
 * give what a plain byte-at-a-time reference gives. */
struct refdata {
	int st;
	uint64_t len, size, longl;
	bool cr, lf, nul, done;
};

static size_t ref_feed(struct refdata *d, const char *in, size_t n, char *out)
{
	enum { B, T, C, DT, DC, DN };
	size_t i = 0, o = 0;
	while (i < n && d->st != DN) {
		char c = in[i++];
		switch (d->st) {
		case B:
			if (c == '.') {
				d->st = DT;
				continue;
			}
			break;
		case DT:
			if (c == '\r') {
				d->st = DC;
				continue;
			}
			break;
		case DC:
			if (c == '\n') {
				d->st = DN;
				d->done = true;
				continue;
			}
			d->cr = true;
			out[o++] = '\r';
			if (++d->len == MXF_SMTP_TEXT_LINE_MAX - 1)
				d->longl++;
			break;
		case C:
			if (c == '\n') {
				out[o++] = '\n';
				d->st = B;
				d->len = 0;
				continue;
			}
			d->cr = true;
			if (++d->len == MXF_SMTP_TEXT_LINE_MAX - 1)
				d->longl++;
			break;
		}
		d->st = T;
		out[o++] = c;
		if (c == '\r') {
			d->st = C;
		} else if (c == '\n') {
			d->lf = true;
			d->len = 0;
		} else {
			d->nul |= c == '\0';
			if (++d->len == MXF_SMTP_TEXT_LINE_MAX - 1)
				d->longl++;
		}
	}
	d->size += o;
	return i;
}

static void test_data_blocks_match_bytes(void **state)
{
	(void)state;
	enum { MAXN = 6000 };
	char *in = malloc(MAXN), *want = malloc(MAXN + 8), *got = malloc(MAXN + 8);
	unsigned seed = 14;
	for (int round = 0; round < 3000; round++) {
		size_t n = (size_t)(rand_r(&seed) % MAXN);
		int spice = rand_r(&seed) % 4; /* how often special bytes come */
		for (size_t k = 0; k < n; k++) {
			int r = rand_r(&seed) % (spice == 0 ? 2000 : spice == 1 ? 200 : 20);
			static const char sp[] = ".\r\n\r\n.\0";
			in[k] = r < 7 ? sp[r] : (char)('a' + r % 26);
			if (spice == 3 && r % 5 == 0 && k + 5 < n) { /* a CRLF.CRLF now and then */
				memcpy(in + k, "\r\n.\r\n", 5);
				k += 4;
			}
		}
		struct refdata rd = {0};
		size_t wlen = 0, wused = ref_feed(&rd, in, n, want);
		wlen = (size_t)rd.size;
		for (int mode = 0; mode < 3; mode++) {
			struct mxf_smtp_data d;
			mxf_smtp_data_init(&d);
			size_t used = 0, glen = 0;
			while (used < n && !d.done) {
				size_t piece = mode == 0 ? n - used : mode == 1 ? 1 :
					       1 + (size_t)(rand_r(&seed) % 700);
				if (piece > n - used)
					piece = n - used;
				size_t cap = mode == 2 ? 2 + (size_t)(rand_r(&seed) % 900) : piece + 1;
				size_t o = 0, u = mxf_smtp_data_feed(&d, in + used, piece, got + glen, cap,
								     &o);
				used += u;
				glen += o;
				assert_true(u > 0 || d.done);
			}
			assert_int_equal(used, wused);
			assert_int_equal(glen, wlen);
			assert_memory_equal(got, want, wlen);
			assert_int_equal(d.size, rd.size);
			assert_int_equal(d.long_lines, rd.longl);
			assert_int_equal(d.bare_cr, rd.cr);
			assert_int_equal(d.bare_lf, rd.lf);
			assert_int_equal(d.nul, rd.nul);
			assert_int_equal(d.done, rd.done);
		}
	}
	free(in);
	free(want);
	free(got);
}

static void test_data_nul(void **state)
{
	(void)state;
	struct mxf_smtp_data d;
	char out[64];
	size_t o;
	mxf_smtp_data_init(&d);
	const char in[] = "a\0b\r\n.\r\n";
	mxf_smtp_data_feed(&d, in, sizeof(in) - 1, out, sizeof(out), &o);
	assert_true(d.done);
	assert_true(d.nul);
	assert_false(d.bare_cr || d.bare_lf);
}

static void chunks(const char *const *parts, size_t n, struct mxf_smtp_data *d)
{
	mxf_smtp_data_init(d);
	for (size_t i = 0; i < n; i++)
		mxf_smtp_chunk_scan(d, parts[i], strlen(parts[i]));
	mxf_smtp_chunk_end(d);
}

static void test_chunk_scan(void **state)
{
	(void)state;
	struct mxf_smtp_data d;
	const char *ok[] = {"a: b\r", "\n\r\nbody\r", "\n.\r\n", ""};
	chunks(ok, 4, &d);
	assert_false(d.bare_cr || d.bare_lf || d.nul);
	assert_int_equal(d.size, 17);
	const char *lf[] = {"a: b\r\n", "\nx\r\n"};
	chunks(lf, 2, &d);
	assert_true(d.bare_lf);
	const char *cr[] = {"a\r", "b\r\n"};
	chunks(cr, 2, &d);
	assert_true(d.bare_cr);
	const char *endcr[] = {"a\r\nb\r"};
	chunks(endcr, 1, &d);
	assert_true(d.bare_cr);
	const char *smug[] = {"x\r\n.\n", "MAIL FROM:<a@b>\r\n"};
	chunks(smug, 2, &d);
	assert_true(d.bare_lf);
	char nul[] = "a\0b\r\n";
	mxf_smtp_data_init(&d);
	mxf_smtp_chunk_scan(&d, nul, 5);
	mxf_smtp_chunk_end(&d);
	assert_true(d.nul);
	char *big = malloc(1200);
	assert_non_null(big);
	memset(big, 'x', 1200);
	mxf_smtp_data_init(&d);
	mxf_smtp_chunk_scan(&d, big, 998);
	assert_int_equal(d.long_lines, 0);
	mxf_smtp_chunk_scan(&d, big, 1);
	assert_int_equal(d.long_lines, 1);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines_basic),
		cmocka_unit_test(test_lines_bare_lf),
		cmocka_unit_test(test_lines_limit),
		cmocka_unit_test(test_lines_long_fed_in_pieces),
		cmocka_unit_test(test_verbs),
		cmocka_unit_test(test_unknown_and_args),
		cmocka_unit_test(test_bad_bytes),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_mail_basic),
		cmocka_unit_test(test_path_syntax),
		cmocka_unit_test(test_source_route),
		cmocka_unit_test(test_postmaster),
		cmocka_unit_test(test_path_limits),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_data_simple),
		cmocka_unit_test(test_data_unstuff),
		cmocka_unit_test(test_data_smuggling),
		cmocka_unit_test(test_data_pipelined_rest),
		cmocka_unit_test(test_data_outcap),
		cmocka_unit_test(test_data_long_lines),
		cmocka_unit_test(test_reply),
		cmocka_unit_test(test_smtputf8_and_dsn),
		cmocka_unit_test(test_bdat_and_starttls),
		cmocka_unit_test(test_data_nul),
		cmocka_unit_test(test_data_blocks_match_bytes),
		cmocka_unit_test(test_chunk_scan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
