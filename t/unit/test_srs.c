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
 * day 19675 % 1024 = 219 = 6*32+27 -> "G3"; hash "IVg/", written "IVg_" (our alphabet
 * has no '/'). */
static void test_vector(void **state)
{
	(void)state;
	struct mxf_srs *s = mk();
	char out[512];
	assert_int_equal(mxf_srs_forward(s, "Alice.Smith@Example.ORG", 1700000000, out, sizeof(out)),
			 0);
	assert_string_equal(out, "SRS0=IVg_=G3=Example.ORG=Alice.Smith@fwd.example.net");
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
	const char *good = "SRS0=IVg_=G3=Example.ORG=Alice.Smith@fwd.example.net";
	assert_int_equal(mxf_srs_reverse(s, good, 1700000000, 21, back, sizeof(back)), 0);
	assert_string_equal(back, "Alice.Smith@Example.ORG");
	/* postsrsd's '/' (same key, e.g. after a migration) is accepted too. */
	assert_int_equal(mxf_srs_reverse(s, "SRS0=IVg/=G3=Example.ORG=Alice.Smith@fwd.example.net",
					 1700000000, 21, back, sizeof(back)),
			 0);
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
	/* One line of base64 (32 random bytes). */
	assert_int_equal(al, 45);
	assert_int_equal(a[44], '\n');
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 45);
	/* Loading again gives the same secret (never regenerated). */
	assert_int_equal(mxf_srs_load_secret(path, 1, b, sizeof(b), &bl), 0);
	assert_int_equal(bl, 45);
	assert_memory_equal(a, b, 45);
	struct mxf_srs *s = NULL;
	assert_int_equal(mxf_srs_new(a, al, "fwd.example.net", &s), 0);
	assert_int_equal(mxf_srs_nkeys(s), 1);
	mxf_srs_free(s);
	/* Too small a buffer is an error, not a silent truncation. */
	assert_int_equal(mxf_srs_load_secret(path, 0, b, 16, &bl), -EFBIG);
	unlink(path);
	rmdir(dir);
}

/* SRS1 when the sender is SRS already; its reverse is the first hop's SRS0. */
static void test_srs1(void **state)
{
	(void)state;
	struct mxf_srs *s = mk();
	char fw[512], fw2[512], back[512];
	const char *srs0 = "SRS0=abcd=G3=orig.example=alice@hop1.example";
	assert_int_equal(mxf_srs_forward(s, srs0, 1700000000, fw, sizeof(fw)), 0);
	assert_true(strncmp(fw, "SRS1=", 5) == 0);
	assert_non_null(strstr(fw, "=hop1.example==abcd=G3=orig.example=alice@fwd.example.net"));
	assert_int_equal(mxf_srs_reverse(s, fw, 1700000000, 21, back, sizeof(back)), 0);
	assert_string_equal(back, srs0);
	/* SRS1 of an SRS1 keeps the first hop. */
	char *at = strrchr(fw, '@');
	snprintf(fw2, sizeof(fw2), "%.*s@hop2.example", (int)(at - fw), fw);
	assert_int_equal(mxf_srs_forward(s, fw2, 1700000000, fw, sizeof(fw)), 0);
	assert_non_null(strstr(fw, "=hop1.example==abcd=G3=orig.example=alice@fwd.example.net"));
	assert_int_equal(mxf_srs_reverse(s, fw, 1700000000, 21, back, sizeof(back)), 0);
	assert_string_equal(back, srs0);
	/* Tampered first hop. */
	char *h = strstr(fw, "hop1");
	h[3] = '9';
	assert_int_equal(mxf_srs_reverse(s, fw, 1700000000, 21, back, sizeof(back)), -EPERM);
	mxf_srs_free(s);
}

/* Several keys, newest first: sign with the first, verify with all. */
static void test_rotation(void **state)
{
	(void)state;
	struct mxf_srs *old = mk(), *both = NULL, *newer = NULL;
	static const char two[] = "brand-new-key\r\n\nmxferry-test-secret\n";
	assert_int_equal(mxf_srs_new((const uint8_t *)two, strlen(two), "fwd.example.net", &both),
			 0);
	assert_int_equal(mxf_srs_nkeys(both), 2);
	assert_int_equal(mxf_srs_new((const uint8_t *)"brand-new-key", 13, "fwd.example.net", &newer),
			 0);
	char a[512], b[512], back[512];
	assert_int_equal(mxf_srs_forward(old, "bob@example.com", 1700000000, a, sizeof(a)), 0);
	assert_int_equal(mxf_srs_forward(both, "bob@example.com", 1700000000, b, sizeof(b)), 0);
	assert_int_equal(mxf_srs_forward(newer, "bob@example.com", 1700000000, back, sizeof(back)),
			 0);
	assert_string_equal(b, back); /* signed with the newest */
	assert_int_equal(mxf_srs_reverse(both, a, 1700000000, 21, back, sizeof(back)), 0);
	assert_int_equal(mxf_srs_reverse(both, b, 1700000000, 21, back, sizeof(back)), 0);
	assert_int_equal(mxf_srs_reverse(old, b, 1700000000, 21, back, sizeof(back)), -EPERM);
	/* A binary secret (older mxferry) is one key, newlines and all. */
	struct mxf_srs *bin = NULL;
	static const uint8_t raw[] = {0x00, 0x0a, 0xff, 0x41, 0x0a};
	assert_int_equal(mxf_srs_new(raw, sizeof(raw), "fwd.example.net", &bin), 0);
	assert_int_equal(mxf_srs_nkeys(bin), 1);
	mxf_srs_free(bin);
	mxf_srs_free(old);
	mxf_srs_free(both);
	mxf_srs_free(newer);
}

/* Senders whose SRS local part would pass 64 octets: the database form. */
static void test_long_sender(void **state)
{
	(void)state;
	char dir[] = "/tmp/mxf-srsdb-XXXXXX", path[512], fw[512], back[512];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/srs.db", dir);
	struct mxf_srs *s = mk();
	const char *lng = "a.very.long.local.part.of.forty.chars.x@a-rather-long-domain.example.org";
	time_t t = 1700000000;
	assert_int_equal(mxf_srs_forward(s, lng, t, fw, sizeof(fw)), -ENAMETOOLONG);
	assert_int_equal(mxf_srs_open_db(s, path), 0);
	assert_int_equal(mxf_srs_forward(s, lng, t, fw, sizeof(fw)), 0);
	char *at = strrchr(fw, '@');
	assert_true(at - fw <= 64);
	assert_int_equal(at - fw, 5 + 4 + 1 + 2 + 1 + 16);
	assert_int_equal(mxf_srs_reverse(s, fw, t + DAY, 21, back, sizeof(back)), 0);
	assert_string_equal(back, lng);
	/* Case-folded by some MTA on the way back: still found. */
	for (char *p = fw; p < at; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
	assert_int_equal(mxf_srs_reverse(s, fw, t + DAY, 21, back, sizeof(back)), 0);
	assert_int_equal(mxf_srs_reverse(s, fw, t + 30 * DAY, 21, back, sizeof(back)), -ETIMEDOUT);
	/* A well-signed id that is not in the database. */
	char other[512];
	assert_int_equal(mxf_srs_forward(s, lng, t, other, sizeof(other)), 0);
	assert_string_not_equal(other, fw);
	fw[15] = fw[15] == 'a' ? 'b' : 'a';
	assert_int_equal(mxf_srs_reverse(s, fw, t + DAY, 21, back, sizeof(back)), -EPERM);
	mxf_srs_free(s);
	char p2[600];
	const char *sfx[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p2, sizeof(p2), "%s%s", path, sfx[i]);
		unlink(p2);
	}
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector),  cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_tampered), cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_secret),	cmocka_unit_test(test_srs1),
		cmocka_unit_test(test_rotation), cmocka_unit_test(test_long_sender),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
