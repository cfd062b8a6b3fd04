#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dsn.h"

static void test_build(void **state)
{
	(void)state;
	const char hdr[] = "From: a@b.example\r\nSubject: hi\r\n\r\nbody";
	struct mxf_dsn_rcpt r[2] = {
		{"x@dest.example", "alias@ours.example", "5.1.1", "mx.dest.example[127.0.0.2]:25",
		 "550 5.1.1 no such user\r\nInjected: header", NULL, 1700000050},
		{"y@dest.example", NULL, "5.4.4", NULL, "550 5.4.4 no route", NULL, 0},
	};
	struct mxf_dsn d = {.reporting_mta = "mx.ours.example",
			    .qid = "0123456789ABCDEFGHJKMNPQRS",
			    .sender = "a@b.example",
			    .arrival = 1700000000,
			    .now = 1700000100,
			    .rcpt = r,
			    .nrcpt = 2,
			    .headers = hdr,
			    .headers_len = mxf_dsn_header_len(hdr, strlen(hdr), 65536)};
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
	assert_non_null(strstr(out, "Remote-MTA: dns; mx.dest.example\r\n"));
	assert_non_null(strstr(out, "Action: failed\r\n"));
	assert_non_null(strstr(out, "Last-Attempt-Date: Tue, 14 Nov 2023 22:14:10 +0000\r\n"));
	assert_non_null(strstr(out, "Content-Type: text/rfc822-headers\r\n"));
	assert_null(strstr(out, "Original-Envelope-Id"));
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


static struct mxf_dsn base(const struct mxf_dsn_rcpt *r, size_t n, const char *hdr)
{
	struct mxf_dsn d = {.reporting_mta = "mx.ours.example",
			    .qid = "0123456789ABCDEFGHJKMNPQRS",
			    .sender = "a@b.example",
			    .arrival = 1700000000,
			    .now = 1700000100,
			    .rcpt = r,
			    .nrcpt = n,
			    .headers = hdr,
			    .headers_len = strlen(hdr)};
	return d;
}

static void test_build_full_envid_orcpt(void **state)
{
	(void)state;
	const char msg[] = "Subject: hi\nX: y\n\nline one\n--0123456789ABCDEFGHJKMNPQRS.1700000100.0/"
			   "mx.ours.example\nend\n";
	struct mxf_dsn_rcpt r = {"x@dest.example", "rfc822;info+2Bx@ours.example", "5.1.1", "",
				 "550 5.1.1 no", NULL, 0};
	struct mxf_dsn d = base(&r, 1, "Subject: hi\r\nX: y\r\n");
	d.envid = "ENV+2D1";
	d.full = msg;
	d.full_len = strlen(msg);
	char *out;
	size_t len;
	assert_int_equal(mxf_dsn_build(&d, &out, &len), 0);
	assert_non_null(strstr(out, "Original-Envelope-Id: ENV+2D1\r\n"));
	/* xtext decoded */
	assert_non_null(strstr(out, "Original-Recipient: rfc822; info+x@ours.example\r\n"));
	assert_non_null(strstr(out, "Content-Type: message/rfc822\r\n"));
	assert_non_null(strstr(out, "\r\nline one\r\n"));
	/* the body held boundary .0: another one was chosen */
	assert_non_null(strstr(out, "boundary=\"0123456789ABCDEFGHJKMNPQRS.1700000100.1/"));
	assert_null(strstr(out, "Remote-MTA"));
	free(out);

	/* over the cap: headers only, and said so */
	d.full_too_big = true;
	d.full_cap = 1000;
	assert_int_equal(mxf_dsn_build(&d, &out, &len), 0);
	assert_non_null(strstr(out, "larger than 1000 bytes"));
	assert_non_null(strstr(out, "Content-Type: text/rfc822-headers\r\n"));
	assert_null(strstr(out, "line one"));
	free(out);
}

static void test_build_utf8_and_actions(void **state)
{
	(void)state;
	struct mxf_dsn_rcpt r = {"j\xc3\xb6rg@dest.example", NULL, "4.4.7", NULL,
				 "451 4.4.7 expired", "delayed", 0};
	struct mxf_dsn d = base(&r, 1, "Subject: x\r\n");
	d.utf8 = true;
	char *out;
	size_t len;
	assert_int_equal(mxf_dsn_build(&d, &out, &len), 0);
	assert_non_null(strstr(out, "Content-Type: message/global-delivery-status\r\n"));
	assert_non_null(strstr(out, "Content-Type: message/global-headers\r\n"));
	assert_non_null(strstr(out, "Final-Recipient: utf-8; j\xc3\xb6rg@dest.example\r\n"));
	assert_non_null(strstr(out, "Action: delayed\r\n"));
	assert_non_null(strstr(out, "Subject: Delayed Mail"));
	free(out);
}

static const char postfix_dsn[] =
	"From: MAILER-DAEMON@dest.example (Mail Delivery System)\r\n"
	"Subject: Undelivered Mail Returned to Sender\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/report; report-type=delivery-status;\r\n"
	"\tboundary=\"B1\"\r\n"
	"\r\n"
	"--B1\r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"Status: 9.9.9 (prose, not a report field)\r\n"
	"\r\n"
	"--B1\r\n"
	"Content-Description: Delivery report\r\n"
	"Content-Type: message/delivery-status\r\n"
	"\r\n"
	"Reporting-MTA: dns; mx.dest.example\r\n"
	"Arrival-Date: Thu,  1 Jan 2026 00:00:00 +0000\r\n"
	"\r\n"
	"Final-Recipient: rfc822; bob@dest.example\r\n"
	"Action: failed\r\n"
	"Status: 5.1.1\r\n"
	"Remote-MTA: dns; inner.dest.example\r\n"
	"Diagnostic-Code: smtp; 550 5.1.1 <bob@dest.example>: Recipient address\r\n"
	"    rejected: User unknown\r\n"
	"\r\n"
	"Final-Recipient: rfc822; second@dest.example\r\n"
	"Action: failed\r\n"
	"Status: 5.2.2\r\n"
	"\r\n"
	"--B1\r\n"
	"Content-Type: text/rfc822-headers\r\n"
	"\r\n"
	"Received: from mx.ours.example (mx.ours.example [192.0.2.1])\r\n"
	"\tby mx.dest.example (Postfix) with ESMTPS id 4AbC\r\n"
	"\tfor <bob@dest.example>; Thu,  1 Jan 2026 00:00:01 +0000\r\n"
	"Received: from client.example (client.example [192.0.2.9])\r\n"
	"\tby mx.ours.example (mxferry) with ESMTP id 0DQ5ZK3M0000AB12CD34EF56GH\r\n"
	"\tfor <info@ours.example>; Thu, 01 Jan 2026 00:00:00 +0000\r\n"
	"Message-ID: <orig@sender.example>\r\n"
	"Subject: hello\r\n"
	"\r\n"
	"--B1--\r\n";

static void test_parse_postfix(void **state)
{
	(void)state;
	struct mxf_dsn_info in;
	assert_int_equal(mxf_dsn_parse(postfix_dsn, strlen(postfix_dsn), "MX.ours.example", &in), 0);
	assert_true(in.is_report);
	assert_string_equal(in.qid, "0DQ5ZK3M0000AB12CD34EF56GH");
	assert_string_equal(in.message_id, "<orig@sender.example>");
	assert_string_equal(in.rcpt, "bob@dest.example");
	assert_string_equal(in.action, "failed");
	assert_string_equal(in.status, "5.1.1");
	assert_string_equal(in.remote_mta, "inner.dest.example");
	assert_string_equal(in.diagnostic,
			    "550 5.1.1 <bob@dest.example>: Recipient address rejected: User unknown");
	/* another host's mxferry line is not ours */
	assert_int_equal(mxf_dsn_parse(postfix_dsn, strlen(postfix_dsn), "other.example", &in), 0);
	assert_string_equal(in.qid, "");
	assert_true(in.is_report);
	/* every truncation parses without reading past the end */
	for (size_t n = 0; n < sizeof(postfix_dsn) - 1; n++) {
		char *cut = malloc(n ? n : 1);
		memcpy(cut, postfix_dsn, n);
		mxf_dsn_parse(cut, n, "mx.ours.example", &in);
		assert_true(strlen(in.diagnostic) < sizeof(in.diagnostic));
		free(cut);
	}
}

static void test_parse_not_a_report(void **state)
{
	(void)state;
	struct mxf_dsn_info in;
	const char reply[] = "From: bob@dest.example\r\nSubject: re: hi\r\n\r\n"
			     "Status: 5.1.1\r\nFinal-Recipient: rfc822; x@y\r\n";
	assert_int_equal(mxf_dsn_parse(reply, strlen(reply), "mx.ours.example", &in), -ENOENT);
	assert_false(in.is_report);
	assert_string_equal(in.status, "");
	/* a plain-text bounce quoting our Received line still names the QID */
	const char plain[] = "Subject: failure\r\n\r\nReceived: by mx.ours.example (mxferry) id "
			     "0DQ5ZK3M0000AB12CD34EF56GH; Thu, 01 Jan 2026\r\n";
	assert_int_equal(mxf_dsn_parse(plain, strlen(plain), "mx.ours.example", &in), 0);
	assert_false(in.is_report);
	assert_string_equal(in.qid, "0DQ5ZK3M0000AB12CD34EF56GH");
	/* control bytes never reach the output */
	const char evil[] = "Content-Type: multipart/report; report-type=delivery-status\r\n\r\n"
			    "--x\r\nContent-Type: message/delivery-status\r\n\r\n"
			    "Final-Recipient: rfc822; a\x01\x1b[1m@b\r\nStatus: 5.0.0\x7f\r\n"
			    "Diagnostic-Code: smtp; a\r\n\tb\x00\x0c c\r\n";
	assert_int_equal(mxf_dsn_parse(evil, sizeof(evil) - 1, "h", &in), 0);
	assert_string_equal(in.rcpt, "a[1m@b");
	assert_string_equal(in.status, "5.0.0");
	assert_string_equal(in.diagnostic, "a b c");
	assert_int_equal(mxf_dsn_parse(NULL, 0, "h", &in), -ENOENT);
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
		cmocka_unit_test(test_build_full_envid_orcpt),
		cmocka_unit_test(test_build_utf8_and_actions),
		cmocka_unit_test(test_parse_postfix),
		cmocka_unit_test(test_parse_not_a_report),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
