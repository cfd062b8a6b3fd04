#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "srs.h"

#define DAY 86400
static const char secret[] = "mxferry-test-secret";

static struct mxf_srs *mk(void)
{
	struct mxf_srs *s = NULL;
	assert_int_equal(mxf_srs_new((const uint8_t *)secret, strlen(secret), "fwd.example.net", &s),
			 0);
	return s;
}

/* Expected value computed independently with
 *   /usr/bin/python3 -c 'import hmac,hashlib,base64; d=(1700000000//86400)%1024; ...
 *   base64.b64encode(hmac.new(b"mxferry-test-secret",
 *       ("G3"+"Example.ORG"+"Alice.Smith").lower().encode(), hashlib.sha1).digest())[:4]'
 * day 19675 % 1024 = 219 = 6*32+27 -> "G3"; hash "IVg/". */
static void test_vector(void **state)
{
	(void)state;
	struct mxf_srs *s = mk();
	char out[512];
	assert_int_equal(mxf_srs_forward(s, "Alice.Smith@Example.ORG", 1700000000, out, sizeof(out)),
			 0);
	assert_string_equal(out, "SRS0=IVg/=G3=Example.ORG=Alice.Smith@fwd.example.net");
	mxf_srs_free(s);
}

static void test_roundtrip(void **state)
{
	(void)state;
	struct mxf_srs *s = mk();
	char fw[512], back[512];
	const char *senders[] = {"bob@example.com", "a=b=c@sub.example.org", "x+tag@EXAMPLE.com",
				 "\"quoted@local\"@example.com"};
	for (size_t i = 0; i < sizeof(senders) / sizeof(senders[0]); i++) {
		time_t t = 1700000000 + (time_t)i * 3 * DAY;
		assert_int_equal(mxf_srs_forward(s, senders[i], t, fw, sizeof(fw)), 0);
		assert_true(strncmp(fw, "SRS0=", 5) == 0);
		assert_int_equal(mxf_srs_reverse(s, fw, t + 5 * DAY, 21, back, sizeof(back)), 0);
		assert_string_equal(back, senders[i]);
		/* The domain of the SRS address compares case-insensitively. */
		char *at = strrchr(fw, '@');
		for (char *p = at; *p; p++)
			*p = (char)((*p >= 'a' && *p <= 'z') ? *p - 32 : *p);
		assert_int_equal(mxf_srs_reverse(s, fw, t, 21, back, sizeof(back)), 0);
	}
	/* The null sender stays null. */
	assert_int_equal(mxf_srs_forward(s, "", 1700000000, fw, sizeof(fw)), 0);
	assert_string_equal(fw, "");
	assert_int_equal(mxf_srs_forward(s, "no-at-sign", 1700000000, fw, sizeof(fw)), -EINVAL);
	assert_int_equal(mxf_srs_forward(s, "bob@example.com", 1700000000, fw, 20), -ENAMETOOLONG);
	mxf_srs_free(s);
}

static void test_tampered(void **state)
{
	(void)state;
	struct mxf_srs *s = mk();
	char back[512];
	const char *good = "SRS0=IVg/=G3=Example.ORG=Alice.Smith@fwd.example.net";
	assert_int_equal(mxf_srs_reverse(s, good, 1700000000, 21, back, sizeof(back)), 0);
	assert_string_equal(back, "Alice.Smith@Example.ORG");
	/* Hash compares case-insensitively (libsrs2 behaviour). */
	assert_int_equal(mxf_srs_reverse(s, "srs0=ivG/=g3=example.org=alice.smith@fwd.example.net",
					 1700000000, 21, back, sizeof(back)),
			 0);
	assert_string_equal(back, "alice.smith@example.org");
	/* Wrong hash, changed local part, changed domain, changed stamp. */
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg0=G3=Example.ORG=Alice.Smith@fwd.example.net",
					 1700000000, 21, back, sizeof(back)),
			 -EPERM);
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg/=G3=Example.ORG=Mallory@fwd.example.net",
					 1700000000, 21, back, sizeof(back)),
			 -EPERM);
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg/=G3=evil.example=Alice.Smith@fwd.example.net",
					 1700000000, 21, back, sizeof(back)),
			 -EPERM);
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg/=G4=Example.ORG=Alice.Smith@fwd.example.net",
					 1700000000, 21, back, sizeof(back)),
			 -EPERM);
	/* Another secret does not verify. */
	struct mxf_srs *o = NULL;
	assert_int_equal(mxf_srs_new((const uint8_t *)"other", 5, "fwd.example.net", &o), 0);
	assert_int_equal(mxf_srs_reverse(o, good, 1700000000, 21, back, sizeof(back)), -EPERM);
	mxf_srs_free(o);
	/* Not SRS at all, or not our domain. */
	assert_int_equal(mxf_srs_reverse(s, "alice@fwd.example.net", 1700000000, 21, back,
					 sizeof(back)),
			 -EINVAL);
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg/=G3=Example.ORG=Alice.Smith@other.example",
					 1700000000, 21, back, sizeof(back)),
			 -EINVAL);
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg/=G3=Example.ORG@fwd.example.net", 1700000000,
					 21, back, sizeof(back)),
			 -EINVAL);
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg/==Example.ORG=a@fwd.example.net", 1700000000,
					 21, back, sizeof(back)),
			 -EINVAL);
	mxf_srs_free(s);
}

static void test_expiry(void **state)
{
	(void)state;
	struct mxf_srs *s = mk();
	char fw[512], back[512];
	time_t t = 1700000000;
	assert_int_equal(mxf_srs_forward(s, "bob@example.com", t, fw, sizeof(fw)), 0);
	assert_int_equal(mxf_srs_reverse(s, fw, t + 21 * DAY, 21, back, sizeof(back)), 0);
	assert_int_equal(mxf_srs_reverse(s, fw, t + 22 * DAY, 21, back, sizeof(back)), -ETIMEDOUT);
	assert_int_equal(mxf_srs_reverse(s, fw, t + 400 * DAY, 21, back, sizeof(back)), -ETIMEDOUT);

	/* Across the 1024-day wrap: stamped on slot 1022, checked 3 days later
	 * when the slot number is 1. */
	time_t day0 = (time_t)(1024 * 20 + 1022) * DAY + 3600;
	assert_int_equal(mxf_srs_forward(s, "bob@example.com", day0, fw, sizeof(fw)), 0);
	assert_true(strstr(fw, "=76=") != NULL); /* 1022 = 31*32+30 -> "76" */
	assert_int_equal(mxf_srs_reverse(s, fw, day0 + 3 * DAY, 21, back, sizeof(back)), 0);
	assert_string_equal(back, "bob@example.com");
	assert_int_equal(mxf_srs_reverse(s, fw, day0 + 3 * DAY, 2, back, sizeof(back)), -ETIMEDOUT);
	mxf_srs_free(s);
}

static void test_secret(void **state)
{
	(void)state;
	char dir[] = "/tmp/mxf-srs-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[512];
	snprintf(path, sizeof(path), "%s/srs.secret", dir);
	uint8_t a[256], b[256];
	size_t al = 0, bl = 0;
	assert_int_equal(mxf_srs_load_secret(path, 0, a, sizeof(a), &al), -ENOENT);
	assert_int_equal(mxf_srs_load_secret(path, 1, a, sizeof(a), &al), 0);
	assert_int_equal(al, 32);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 32);
	/* Loading again gives the same secret (never regenerated). */
	assert_int_equal(mxf_srs_load_secret(path, 1, b, sizeof(b), &bl), 0);
	assert_int_equal(bl, 32);
	assert_memory_equal(a, b, 32);
	/* Too small a buffer is an error, not a silent truncation. */
	assert_int_equal(mxf_srs_load_secret(path, 0, b, 16, &bl), -EFBIG);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector),  cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_tampered), cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
