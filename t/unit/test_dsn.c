#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dsn.h"

static void test_build(void **state)
{
	(void)state;
	const char hdr[] = "From: a@b.example\r\nSubject: hi\r\n\r\nbody";
	struct mxf_dsn_rcpt r[2] = {
		{"x@dest.example", "alias@ours.example", "5.1.1", "mx.dest.example[127.0.0.2]:25",
		 "550 5.1.1 no such user\r\nInjected: header"},
		{"y@dest.example", NULL, "5.4.4", NULL, "550 5.4.4 no route"},
	};
	struct mxf_dsn d = {"mx.ours.example", "0123456789ABCDEFGHJKMNPQRS", "a@b.example",
			    1700000000, 1700000100, r, 2, hdr,
			    mxf_dsn_header_len(hdr, strlen(hdr), 65536)};
	char *out;
	size_t len;
	assert_int_equal(d.headers_len, strlen(hdr) - 4);
	assert_int_equal(mxf_dsn_build(&d, &out, &len), 0);
	assert_int_equal(strlen(out), len);
	assert_non_null(strstr(out, "To: <a@b.example>\r\n"));
	assert_non_null(strstr(out, "multipart/report; report-type=delivery-status"));
	assert_non_null(strstr(out, "Final-Recipient: rfc822; x@dest.example\r\n"));
	assert_non_null(strstr(out, "Original-Recipient: rfc822; alias@ours.example\r\n"));
	assert_non_null(strstr(out, "Status: 5.1.1\r\n"));
	assert_non_null(strstr(out, "Remote-MTA: dns; mx.dest.example[127.0.0.2]:25\r\n"));
	assert_non_null(strstr(out, "Subject: hi\r\n"));
	assert_null(strstr(out, "body"));
	/* a CR/LF in a remote reply cannot start a header line */
	assert_null(strstr(out, "\nInjected:"));
	/* no bare LF anywhere */
	for (size_t i = 0; i < len; i++)
		if (out[i] == '\n')
			assert_true(i > 0 && out[i - 1] == '\r');
	assert_non_null(strstr(out, "--\r\n"));
	free(out);
}

static void test_header_len(void **state)
{
	(void)state;
	assert_int_equal(mxf_dsn_header_len("A: b\n\nbody", 10, 100), 6);
	assert_int_equal(mxf_dsn_header_len("A: b\r\nC: d", 10, 100), 10);
	assert_int_equal(mxf_dsn_header_len("A: b\r\nC: d", 10, 4), 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build),
		cmocka_unit_test(test_header_len),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
