#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "envelope.h"

static const char QID[] = "01HF0000000000000000000000";

/* The test's own CRC-32 (checked against the standard check value below), so
 * hand-written files can carry a valid E line. */
static uint32_t crc(const char *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= (uint8_t)p[i];
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
	}
	return ~c;
}

/* body + "E <crc>\n" in a static buffer. */
static char *seal(const char *body, size_t *len)
{
	static char buf[8192];
	size_t n = strlen(body);
	assert_true(n + 16 < sizeof(buf));
	memcpy(buf, body, n);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "E %08x\n", crc(body, n));
	*len = n;
	return buf;
}

static const char *good_body =
	"V 1\n"
	"qid 01HF0000000000000000000000\n"
	"arrival 1700000000\n"
	"size 1234\n"
	"sender alice@example.org\n"
	"srs_sender SRS0=abcd=G3=example.org=alice@fwd.example\n"
	"client_ip 192.0.2.1\n"
	"client_name mail.example.org\n"
	"helo mail.example.org\n"
	"proto ESMTP\n"
	"origin smtpd\n"
	"headers Received:%20from%20x%0D%0A\n"
	"rcpt bob@ours.example dest@gmail.example r1 forward pending 0 0 - -\n";

static int parse_body(const char *body)
{
	size_t len;
	char *buf = seal(body, &len);
	struct mxf_env *e = NULL;
	int r = mxf_env_parse(buf, len, &e);
	mxf_env_free(e);
	return r;
}

/* Replaces the first occurrence of from with to in good_body and parses. */
static int parse_variant(const char *from, const char *to)
{
	char body[4096];
	const char *p = strstr(good_body, from);
	assert_non_null(p);
	size_t pre = (size_t)(p - good_body);
	snprintf(body, sizeof(body), "%.*s%s%s", (int)pre, good_body, to, p + strlen(from));
	return parse_body(body);
}

static void test_crc_self(void **state)
{
	(void)state;
	assert_int_equal(crc("123456789", 9), 0xcbf43926u);
}

static struct mxf_env *sample(void)
{
	struct mxf_env *e = mxf_env_new(QID);
	assert_non_null(e);
	e->arrival = 1700000000;
	e->size = 42;
	assert_int_equal(mxf_env_set(&e->sender, ""), 0); /* null sender */
	assert_int_equal(mxf_env_set(&e->srs_sender, "-"), 0); /* literal dash */
	assert_int_equal(mxf_env_set(&e->client_ip, "2001:db8::1"), 0);
	assert_int_equal(mxf_env_set(&e->client_name, NULL), 0);
	assert_int_equal(mxf_env_set(&e->helo, "evil\r\nX-Injected: 1 %41 100%"), 0);
	assert_int_equal(mxf_env_set(&e->proto, "ESMTPS"), 0);
	assert_int_equal(mxf_env_set(&e->origin, "smtpd"), 0);
	assert_int_equal(mxf_env_set(&e->headers,
				     "Received: from a (b [1.2.3.4])\r\n\tby c; date\r\n"),
			 0);
	assert_int_equal(mxf_env_add_rcpt(e, "b\xc3\xa9@ours.example", "d1@x.example", "tag1",
					  "forward"),
			 0);
	assert_int_equal(mxf_env_add_rcpt(e, "drop@ours.example", "", "", "drop"), 1);
	assert_int_equal(mxf_env_add_rcpt(e, "x@ours.example", "--", "-", "relay"), 2);
	e->rcpt[1].status = MXF_RS_DROPPED;
	e->rcpt[2].status = MXF_RS_DEFERRED;
	e->rcpt[2].attempts = 3;
	e->rcpt[2].next_try = 1700003600;
	assert_int_equal(mxf_env_set(&e->rcpt[2].reply, "451 4.3.0 try later"), 0);
	assert_int_equal(mxf_env_set(&e->rcpt[2].relay, "mx.x.example[192.0.2.9]:25"), 0);
	return e;
}

static void test_roundtrip(void **state)
{
	(void)state;
	struct mxf_env *e = sample(), *p = NULL;
	char *buf, *buf2;
	size_t len, len2;
	assert_int_equal(mxf_env_format(e, &buf, &len), 0);
	/* No raw control byte reaches the file except the line feeds. */
	for (size_t i = 0; i < len; i++)
		assert_true(buf[i] == '\n' || (buf[i] >= 0x20 && buf[i] < 0x7f));
	assert_non_null(strstr(buf, "\nsender -\n"));
	assert_non_null(strstr(buf, "\nsrs_sender %2D\n"));
	assert_non_null(strstr(buf, "evil%0D%0AX-Injected:%201%20%2541%20100%25\n"));
	assert_int_equal(mxf_env_parse(buf, len, &p), 0);
	assert_string_equal(p->qid, QID);
	assert_int_equal(p->arrival, 1700000000);
	assert_int_equal(p->size, 42);
	assert_string_equal(p->sender, "");
	assert_string_equal(p->srs_sender, "-");
	assert_string_equal(p->client_name, "");
	assert_string_equal(p->helo, e->helo);
	assert_string_equal(p->headers, e->headers);
	assert_int_equal(p->nrcpt, 3);
	assert_string_equal(p->rcpt[0].orig, "b\xc3\xa9@ours.example");
	assert_string_equal(p->rcpt[0].rule, "tag1");
	assert_int_equal(p->rcpt[0].status, MXF_RS_PENDING);
	assert_string_equal(p->rcpt[1].dest, "");
	assert_string_equal(p->rcpt[1].action, "drop");
	assert_int_equal(p->rcpt[1].status, MXF_RS_DROPPED);
	assert_string_equal(p->rcpt[2].dest, "--");
	assert_string_equal(p->rcpt[2].rule, "-");
	assert_int_equal(p->rcpt[2].attempts, 3);
	assert_int_equal(p->rcpt[2].next_try, 1700003600);
	assert_string_equal(p->rcpt[2].reply, "451 4.3.0 try later");
	assert_string_equal(p->rcpt[2].relay, "mx.x.example[192.0.2.9]:25");
	assert_int_equal(mxf_env_format(p, &buf2, &len2), 0);
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	free(buf);
	free(buf2);
	mxf_env_free(e);
	mxf_env_free(p);
	assert_string_equal(mxf_env_status_name(MXF_RS_BOUNCED), "bounced");
}

static void test_good_hand_written(void **state)
{
	(void)state;
	assert_int_equal(parse_body(good_body), 0);
	/* Keys may come in any order. */
	assert_int_equal(parse_variant("size 1234\nsender alice@example.org\n",
				       "sender alice@example.org\nsize 1234\n"),
			 0);
}

static void test_dsn_fields(void **state)
{
	(void)state;
	const char *rc = "rcpt bob@ours.example dest@gmail.example r1 forward pending 0 0 - -\n";
	struct mxf_env *e = NULL;
	size_t len;
	/* Older files have no DSN data: "" everywhere. */
	char *buf = seal(good_body, &len);
	assert_int_equal(mxf_env_parse(buf, len, &e), 0);
	assert_string_equal(e->ret, "");
	assert_string_equal(e->envid, "");
	assert_string_equal(e->rcpt[0].notify, "");
	assert_string_equal(e->rcpt[0].orcpt, "");
	/* Set, they round-trip canonically. */
	assert_int_equal(mxf_env_set(&e->ret, "HDRS"), 0);
	assert_int_equal(mxf_env_set(&e->envid, "QQ+2B1"), 0);
	assert_string_equal(e->subject, "");
	assert_int_equal(mxf_env_set(&e->msgid, "<x.1@sender.example>"), 0);
	assert_int_equal(mxf_env_set(&e->subject, "Re: caf\xc3\xa9 100%"), 0);
	assert_int_equal(mxf_env_set(&e->rcpt[0].notify, "SUCCESS,FAILURE"), 0);
	assert_int_equal(mxf_env_set(&e->rcpt[0].orcpt, "rfc822;b+2Bx@ours.example"), 0);
	char *out;
	size_t olen;
	assert_int_equal(mxf_env_format(e, &out, &olen), 0);
	assert_non_null(strstr(out, "\nret HDRS\nenvid QQ+2B1\n"));
	assert_non_null(strstr(out, " - - SUCCESS,FAILURE rfc822;b+2Bx@ours.example\n"));
	struct mxf_env *p = NULL;
	assert_int_equal(mxf_env_parse(out, olen, &p), 0);
	assert_string_equal(p->rcpt[0].orcpt, "rfc822;b+2Bx@ours.example");
	assert_string_equal(p->envid, "QQ+2B1");
	assert_non_null(strstr(out, "\nmsgid <x.1@sender.example>\nsubject Re:%20caf%C3%A9%20100%25\n"));
	assert_string_equal(p->msgid, "<x.1@sender.example>");
	assert_string_equal(p->subject, "Re: caf\xc3\xa9 100%");
	char *out2;
	size_t olen2;
	assert_int_equal(mxf_env_format(p, &out2, &olen2), 0);
	assert_int_equal(olen, olen2);
	assert_memory_equal(out, out2, olen);
	free(out);
	free(out2);
	mxf_env_free(e); /* buf is seal()'s static buffer */
	mxf_env_free(p);
	/* Canonical: an empty optional key or an empty DSN pair is a defect. */
	assert_int_equal(parse_variant("origin smtpd\n", "origin smtpd\nret -\n"), -EBADMSG);
	assert_int_equal(parse_variant("origin smtpd\n", "origin smtpd\nret ALL\n"), -EBADMSG);
	assert_int_equal(parse_variant("origin smtpd\n", "origin smtpd\nenvid -\n"), -EBADMSG);
	assert_int_equal(parse_variant("origin smtpd\n", "origin smtpd\nsubject -\n"), -EBADMSG);
	assert_int_equal(parse_variant("origin smtpd\n", "origin smtpd\nmsgid -\n"), -EBADMSG);
	assert_int_equal(parse_variant("origin smtpd\n", "origin smtpd\nmsgid <a@b>\nmsgid <a@b>\n"),
			 -EBADMSG);
	assert_int_equal(parse_variant("origin smtpd\n", "origin smtpd\nret FULL\nret FULL\n"),
			 -EBADMSG);
	assert_int_equal(parse_variant(rc, "rcpt bob@ours.example d@g.example r1 forward pending 0 "
					   "0 - - - -\n"),
			 -EBADMSG);
	assert_int_equal(parse_variant(rc, "rcpt bob@ours.example d@g.example r1 forward pending 0 "
					   "0 - - NEVER\n"),
			 -EBADMSG);
	assert_int_equal(parse_variant(rc, "rcpt bob@ours.example d@g.example r1 forward pending 0 "
					   "0 - - NEVER -\n"),
			 0);
}

static void test_strict(void **state)
{
	(void)state;
	/* unknown key */
	assert_int_equal(parse_variant("proto ESMTP\n", "proto ESMTP\nfoo bar\n"), -EBADMSG);
	/* duplicate singular key */
	assert_int_equal(parse_variant("proto ESMTP\n", "proto ESMTP\nproto SMTP\n"), -EBADMSG);
	assert_int_equal(parse_variant("qid 01HF0000000000000000000000\n",
				       "qid 01HF0000000000000000000000\nqid 01HF0000000000000000000000\n"),
			 -EBADMSG);
	/* missing field */
	assert_int_equal(parse_variant("helo mail.example.org\n", ""), -EBADMSG);
	assert_int_equal(parse_variant("headers Received:%20from%20x%0D%0A\n", ""), -EBADMSG);
	/* no recipient */
	assert_int_equal(parse_variant("rcpt bob@ours.example dest@gmail.example r1 forward pending 0 0 - -\n", ""),
			 -EBADMSG);
	/* bad %XX: truncated, not hex, lower-case, needless, NUL */
	assert_int_equal(parse_variant("%20from", "%2"), -EBADMSG);
	assert_int_equal(parse_variant("%20from", "%zzfrom"), -EBADMSG);
	assert_int_equal(parse_variant("%0D%0A", "%0d%0a"), -EBADMSG);
	assert_int_equal(parse_variant("%20from", "%41from"), -EBADMSG);
	assert_int_equal(parse_variant("%20from", "%00from"), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo %2Dx"), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo %2D"), 0);
	assert_int_equal(parse_variant("helo mail.example.org", "helo -"), 0);
	/* raw bytes outside 0x21..0x7e */
	assert_int_equal(parse_variant("helo mail.example.org", "helo mail\x01.example.org"), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo mail\x80.example.org"), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo mail\r"), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo mail\tx"), -EBADMSG);
	/* spacing */
	assert_int_equal(parse_variant("helo mail.example.org", "helo  mail.example.org"), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo mail.example.org "), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo"), -EBADMSG);
	assert_int_equal(parse_variant("helo mail.example.org", "helo a b"), -EBADMSG);
	/* numbers: leading zero, sign, overflow, garbage */
	assert_int_equal(parse_variant("size 1234", "size 01234"), -EBADMSG);
	assert_int_equal(parse_variant("size 1234", "size -1"), -EBADMSG);
	assert_int_equal(parse_variant("size 1234", "size 99999999999999999999"), -EBADMSG);
	assert_int_equal(parse_variant("arrival 1700000000", "arrival 9223372036854775808"), -EBADMSG);
	assert_int_equal(parse_variant("forward pending 0 0", "forward pending 0 1x"), -EBADMSG);
	/* enumerations */
	assert_int_equal(parse_variant("forward pending", "forward PENDING"), -EBADMSG);
	assert_int_equal(parse_variant("forward pending", "explode pending"), -EBADMSG);
	assert_int_equal(parse_variant("origin smtpd", "origin ftpd"), -EBADMSG);
	/* recipient field count, empty original address */
	assert_int_equal(parse_variant("0 0 - -\n", "0 0 -\n"), -EBADMSG);
	assert_int_equal(parse_variant("0 0 - -\n", "0 0 - - -\n"), -EBADMSG);
	assert_int_equal(parse_variant("rcpt bob@ours.example", "rcpt -"), -EBADMSG);
	/* queue id */
	assert_int_equal(parse_variant("qid 01HF0000000000000000000000", "qid ../../etc/passwd"),
			 -EBADMSG);
	/* version line */
	assert_int_equal(parse_variant("V 1\n", "V 2\n"), -EBADMSG);
	assert_int_equal(parse_variant("V 1\nqid 01HF0000000000000000000000\n",
				       "qid 01HF0000000000000000000000\nV 1\n"),
			 -EBADMSG);
}

static void test_framing(void **state)
{
	(void)state;
	size_t len;
	char *buf = seal(good_body, &len);
	char copy[8192];
	struct mxf_env *e = NULL;

	memcpy(copy, buf, len);
	assert_int_equal(mxf_env_parse(copy, len, &e), 0);
	mxf_env_free(e);
	/* bad checksum */
	copy[len - 2] = copy[len - 2] == '0' ? '1' : '0';
	assert_int_equal(mxf_env_parse(copy, len, &e), -EBADMSG);
	/* upper-case checksum digits are not the canonical form */
	memcpy(copy, buf, len);
	for (size_t i = len - 9; i < len - 1; i++)
		if (copy[i] >= 'a' && copy[i] <= 'f')
			copy[i] = (char)(copy[i] - 32);
	if (memcmp(copy, buf, len) != 0)
		assert_int_equal(mxf_env_parse(copy, len, &e), -EBADMSG);
	/* text after E */
	memcpy(copy, buf, len);
	memcpy(copy + len, "x\n", 2);
	assert_int_equal(mxf_env_parse(copy, len + 2, &e), -EBADMSG);
	memcpy(copy + len, "\n", 1);
	assert_int_equal(mxf_env_parse(copy, len + 1, &e), -EBADMSG);
	/* missing E, missing final newline, truncated anywhere */
	assert_int_equal(mxf_env_parse(good_body, strlen(good_body), &e), -EBADMSG);
	memcpy(copy, buf, len);
	assert_int_equal(mxf_env_parse(copy, len - 1, &e), -EBADMSG);
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(mxf_env_parse(copy, cut, &e), -EBADMSG);
}

/* xorshift: reproducible "random" flips. */
static uint32_t rng = 0x12345678;
static uint32_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static void test_fuzz(void **state)
{
	(void)state;
	struct mxf_env *e = sample();
	char *orig;
	size_t olen;
	assert_int_equal(mxf_env_format(e, &orig, &olen), 0);
	mxf_env_free(e);
	/* Body = everything before the E line. */
	size_t blen = olen - strlen("E 00000000\n");
	char body[8192], out[8300];
	size_t accepted = 0;
	for (int iter = 0; iter < 20000; iter++) {
		memcpy(body, orig, blen);
		int flips = 1 + (int)(next_rand() % 3);
		for (int f = 0; f < flips; f++) {
			size_t pos = next_rand() % blen;
			uint32_t mode = next_rand() % 3;
			if (mode == 0)
				body[pos] ^= (char)(1u << (next_rand() % 8));
			else if (mode == 1)
				body[pos] = (char)(next_rand() & 0xff);
			else
				body[pos] = "% -\n0A"[next_rand() % 6];
		}
		/* With the checksum recomputed: the parse fails, or the file
		 * is canonical (format(parse(x)) == x). */
		memcpy(out, body, blen);
		size_t len = blen + (size_t)snprintf(out + blen, sizeof(out) - blen, "E %08x\n",
						     crc(body, blen));
		struct mxf_env *p = NULL;
		int r = mxf_env_parse(out, len, &p);
		if (r == 0) {
			char *re;
			size_t relen;
			assert_int_equal(mxf_env_format(p, &re, &relen), 0);
			assert_int_equal(relen, len);
			assert_memory_equal(re, out, len);
			free(re);
			mxf_env_free(p);
			accepted++;
		} else {
			assert_int_equal(r, -EBADMSG);
		}
		/* With the original checksum, any change is caught. */
		if (memcmp(body, orig, blen) != 0) {
			memcpy(out + blen, orig + blen, olen - blen);
			assert_int_equal(mxf_env_parse(out, olen, &p), -EBADMSG);
		}
	}
	/* Some flips land in values and stay valid: the property was exercised. */
	assert_true(accepted > 0);
	free(orig);
}

static void test_read(void **state)
{
	(void)state;
	char dir[] = "/tmp/mxf-env-XXXXXX";
	assert_non_null(mkdtemp(dir));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	struct mxf_env *e = sample(), *p = NULL;
	char *buf;
	size_t len;
	assert_int_equal(mxf_env_format(e, &buf, &len), 0);
	int fd = openat(dfd, QID, O_WRONLY | O_CREAT, 0600);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
	assert_int_equal(mxf_env_read(dfd, QID, &p), 0);
	assert_int_equal(p->nrcpt, 3);
	mxf_env_free(p);
	assert_int_equal(mxf_env_read(dfd, "missing", &p), -ENOENT);
	fd = openat(dfd, "bad", O_WRONLY | O_CREAT, 0600);
	assert_int_equal(write(fd, buf, len - 3), (ssize_t)(len - 3));
	close(fd);
	assert_int_equal(mxf_env_read(dfd, "bad", &p), -EBADMSG);
	unlinkat(dfd, QID, 0);
	unlinkat(dfd, "bad", 0);
	close(dfd);
	rmdir(dir);
	free(buf);
	mxf_env_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc_self),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_good_hand_written),
		cmocka_unit_test(test_strict),
		cmocka_unit_test(test_dsn_fields),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
