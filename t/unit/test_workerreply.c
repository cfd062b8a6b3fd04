/* A worker's reply checked against the original (common/workerreply.c):
 * the hosted service's loop guards that workerd applies. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "workerreply.h"

static const char ORIG[] = "From: Alice <alice@sender.test>\r\n"
			   "To: info@gw.test\r\n"
			   "Message-ID:\r\n <orig.1@sender.test> (a comment)\r\n"
			   "Subject: hi\r\n\r\nbody\r\n";

static void test_msgid(void **state)
{
	(void)state;
	char id[64];
	assert_int_equal(mxf_wr_msgid(ORIG, strlen(ORIG), id, sizeof(id)), 0);
	assert_string_equal(id, "<orig.1@sender.test>");
	/* Only the header section counts, even cut short. */
	assert_int_equal(mxf_wr_msgid(ORIG, 99, id, sizeof(id)), 0);
	static const char *const none[] = {
		"From: a@b.test\r\n\r\nMessage-ID: <x@y>\r\n",          /* in the body */
		"Message-ID: <a@b>\r\nMessage-ID: <c@d>\r\n\r\n",        /* two fields */
		"Message-ID: <a@b> <c@d>\r\n\r\n",                       /* two ids */
		"Message-ID: no-brackets@b\r\n\r\n", "Message-ID: <a b@c>\r\n\r\n",
		"Message-ID: <nodomain>\r\n\r\n", "",
	};
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
		assert_int_equal(mxf_wr_msgid(none[i], strlen(none[i]), id, sizeof(id)), -ENOENT);
	/* A buffer too small is not a match. */
	assert_int_equal(mxf_wr_msgid(ORIG, strlen(ORIG), id, 8), -ENOENT);
}

static int check(const char *reply, char **out, char *why)
{
	return mxf_wr_check("<orig.1@sender.test>", reply, strlen(reply), out, why, 160);
}

static void test_check(void **state)
{
	(void)state;
	char why[160], *out;
	const char *ok = "From: Info <info@gw.test>\r\nTo: alice@sender.test\r\n"
			 "In-Reply-To: <orig.1@sender.test>\r\nReferences: <a@b> (x)\r\n"
			 " <orig.1@sender.test>\r\nSubject: Re: hi\r\n\r\nThanks.\r\n";
	assert_int_equal(check(ok, &out, why), 0);
	assert_non_null(out);
	assert_memory_equal(out, "Auto-Submitted: auto-replied\r\n", 30);
	assert_string_equal(out + 30, ok);
	free(out);
	/* The worker's own Auto-Submitted is kept, none added. */
	const char *own = "Auto-Submitted: auto-generated\r\nFrom: info@gw.test\r\nTo: a@s.test\r\n"
			  "In-Reply-To: <orig.1@sender.test>\r\n\r\n";
	assert_int_equal(check(own, &out, why), 0);
	assert_string_equal(out, own);
	free(out);

	struct {
		const char *reply, *why;
	} bad[] = {
		{"From: info@gw.test\r\nTo: a@s.test\r\nIn-Reply-To: <other@sender.test>\r\n\r\nx\r\n",
		 "In-Reply-To"},
		{"From: info@gw.test\r\nTo: a@s.test\r\n\r\nx\r\n", "In-Reply-To"},
		{"From: info@gw.test\r\nTo: a@s.test\r\nIn-Reply-To: <orig.1@sender.test> <x@y>\r\n\r\n",
		 "In-Reply-To"},
		{"From: info@gw.test\r\nTo: a@s.test\r\nIn-Reply-To: <orig.1@sender.test>\r\n"
		 "In-Reply-To: <orig.1@sender.test>\r\n\r\n",
		 "In-Reply-To"},
		{"To: a@s.test\r\nIn-Reply-To: <orig.1@sender.test>\r\n\r\n", "From"},
		{"From: a@b.test, c@d.test\r\nTo: a@s.test\r\nIn-Reply-To: <orig.1@sender.test>\r\n\r\n",
		 "From"},
		{"From: info@gw.test\r\nIn-Reply-To: <orig.1@sender.test>\r\n\r\n", "To"},
		{"From: info@gw.test\r\nTo: a@s.test\r\nIn-Reply-To: <orig.1@sender.test>\r\n", "blank"},
		{"From: info@gw.test\r\nnot a field\r\nTo: a@s.test\r\n"
		 "In-Reply-To: <orig.1@sender.test>\r\n\r\n",
		 "not a field"},
		{" From: info@gw.test\r\nTo: a@s.test\r\nIn-Reply-To: <orig.1@sender.test>\r\n\r\n",
		 "not a field"},
		{"From: info@gw.test\r\nTo: a@s.test\r\nIn-Reply-To: <orig.1@sender.test>\r\n"
		 "References: <a@b> <broken\r\n\r\n",
		 "References"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		out = (char *)1;
		assert_int_equal(check(bad[i].reply, &out, why), -EINVAL);
		assert_null(out);
		if (!strstr(why, bad[i].why))
			fail_msg("case %zu: %s", i, why);
	}
	/* NUL inside the given length. */
	assert_int_equal(mxf_wr_check("<orig.1@sender.test>", "From: a\0b\r\n\r\n", 13, &out, why,
				      sizeof(why)),
			 -EINVAL);
}

static void test_references(void **state)
{
	(void)state;
	char why[160], *out;
	for (int n = 100; n <= 101; n++) {
		char *r = malloc(8192);
		assert_non_null(r);
		size_t o = (size_t)sprintf(r, "From: info@gw.test\r\nTo: a@s.test\r\n"
					      "In-Reply-To: <orig.1@sender.test>\r\nReferences:");
		for (int i = 0; i < n; i++)
			o += (size_t)sprintf(r + o, "\r\n <ref%d@sender.test>", i);
		strcpy(r + o, "\r\n\r\nbody\r\n");
		int rc = check(r, &out, why);
		if (n == 100) {
			assert_int_equal(rc, 0);
			free(out);
		} else {
			assert_int_equal(rc, -EINVAL);
			assert_non_null(strstr(why, "more than 100 References"));
		}
		free(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_msgid),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_references),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
