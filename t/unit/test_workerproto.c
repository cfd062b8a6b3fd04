/* Worker protocol (common/workerproto.c), the worker table of rules.db and
 * the sandboxed run (common/workerrun.c) with real processes. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "rulesdb.h"
#include "workerproto.h"
#include "workerrun.h"

static struct mxf_wp_parser *parse(const char *s, int *rc)
{
	struct mxf_wp_parser *p = mxf_wp_parser_new();
	assert_non_null(p);
	*rc = mxf_wp_feed(p, s, strlen(s));
	if (*rc == 0)
		*rc = mxf_wp_finish(p);
	return p;
}

static void test_decisions(void **state)
{
	(void)state;
	int rc;
	struct mxf_wp_parser *p = parse(
		"{\"action\":\"forward\",\"to\":\"a@b.test\",\"headers\":{\"X-A\":\"1\",\"x-b\":\"t\\u00e9\"}}\n"
		"\n"
		"  {\"to\":\"c@d.test\", \"action\" : \"forward\"}\r\n"
		"{\"action\":\"reject\",\"reason\":\"No \\\"thanks\\\" \\ud83d\\ude00\"}\n"
		"{\"action\":\"drop\"}",
		&rc);
	assert_int_equal(rc, 0);
	assert_int_equal(mxf_wp_count(p), 4);
	const struct mxf_wp_decision *d = mxf_wp_get(p, 0);
	assert_int_equal(d->action, MXF_WP_FORWARD);
	assert_string_equal(d->to, "a@b.test");
	assert_string_equal(d->headers, "X-A: 1\r\nx-b: t\xc3\xa9\r\n");
	assert_string_equal(mxf_wp_get(p, 1)->to, "c@d.test");
	assert_string_equal(mxf_wp_get(p, 1)->headers, "");
	assert_int_equal(mxf_wp_get(p, 2)->action, MXF_WP_REJECT);
	assert_string_equal(mxf_wp_get(p, 2)->reason, "No \"thanks\" \xf0\x9f\x98\x80");
	assert_int_equal(mxf_wp_get(p, 3)->action, MXF_WP_DROP);
	assert_null(mxf_wp_get(p, 4));
	assert_int_equal(mxf_wp_check_headers(d->headers), 0);
	mxf_wp_parser_free(p);

	/* Nothing at all: no decision (the router drops). */
	p = parse("", &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(mxf_wp_count(p), 0);
	mxf_wp_parser_free(p);
}

static void test_garbage(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"hello\n",
		"{\"action\":\"forward\"}\n",                                  /* no to */
		"{\"action\":\"forward\",\"to\":\"nobody\"}\n",                 /* no @ */
		"{\"action\":\"forward\",\"to\":\"a@b\\r\\nRCPT TO:<x@y>\"}\n", /* CR LF */
		"{\"action\":\"forward\",\"to\":\"a@b.test\",\"headers\":{\"Subject\":\"x\"}}\n",
		"{\"action\":\"forward\",\"to\":\"a@b.test\",\"headers\":{\"X-A\":\"a\\nB: c\"}}\n",
		"{\"action\":\"forward\",\"to\":\"a@b.test\",\"headers\":{\"X-A:\":\"a\"}}\n",
		"{\"action\":\"reject\"}\n",
		"{\"action\":\"reject\",\"reason\":\"\"}\n",
		"{\"action\":\"reject\",\"reason\":\"a\\u0000b\"}\n",
		"{\"action\":\"drop\",\"to\":\"a@b.test\"}\n",
		"{\"action\":\"bounce\"}\n",
		"{\"action\":\"drop\",\"action\":\"drop\"}\n",
		"{\"action\":\"drop\"} x\n",
		"{\"action\":\"drop\",\"n\":1}\n",
		"[{\"action\":\"drop\"}]\n",
		"{\"action\":\"drop\"\n",
		"{\"action\":\"reject\",\"reason\":\"\xff\"}\n",
		"{\"action\":\"reject\",\"reason\":\"\\ud800\"}\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc;
		struct mxf_wp_parser *p = parse(bad[i], &rc);
		if (rc != -EBADMSG)
			fail_msg("accepted %s", bad[i]);
		mxf_wp_parser_free(p);
	}
	/* Bounded: output and decisions. */
	struct mxf_wp_parser *p = mxf_wp_parser_new();
	char big[4096];
	memset(big, ' ', sizeof(big));
	int rc = 0;
	for (int i = 0; i < 17 && rc == 0; i++)
		rc = mxf_wp_feed(p, big, sizeof(big));
	assert_int_equal(rc, -E2BIG);
	mxf_wp_parser_free(p);
	p = mxf_wp_parser_new();
	rc = 0;
	for (int i = 0; i <= MXF_WP_MAX_DECISIONS && rc == 0; i++)
		rc = mxf_wp_feed(p, "{\"action\":\"drop\"}\n", 18);
	assert_int_equal(rc, -EBADMSG);
	mxf_wp_parser_free(p);
}

/* Issue 13: reply decisions. */
static void test_reply(void **state)
{
	(void)state;
	int rc;
	/* LF, CRLF and lone CR line ends all become CRLF; a final CRLF is
	 * added; escaped controls other than NUL are kept. */
	struct mxf_wp_parser *p = parse(
		"{\"action\":\"forward\",\"to\":\"a@b.test\"}\n"
		"{\"raw\":\"From: a@gw.test\\nTo: s@x.test\\r\\nIn-Reply-To: <1@x>\\r\\rb\\fody\",\"action\":\"reply\"}\n",
		&rc);
	assert_int_equal(rc, 0);
	assert_int_equal(mxf_wp_count(p), 2);
	const struct mxf_wp_decision *d = mxf_wp_get(p, 1);
	assert_int_equal(d->action, MXF_WP_REPLY);
	assert_string_equal(d->raw, "From: a@gw.test\r\nTo: s@x.test\r\nIn-Reply-To: <1@x>\r\n\r\nb\fody\r\n");
	assert_string_equal(mxf_wp_get(p, 0)->raw, "");
	assert_string_equal(mxf_wp_action_name(d->action), "reply");
	mxf_wp_parser_free(p);

	/* One reply per answer; raw only with reply, nothing else with it; no
	 * NUL; a raw control character is not JSON; 32 KiB at most. */
	static const char *const bad[] = {
		"{\"action\":\"reply\",\"raw\":\"a\"}\n{\"action\":\"reply\",\"raw\":\"b\"}\n",
		"{\"action\":\"reply\"}\n",
		"{\"action\":\"reply\",\"raw\":\"a\",\"to\":\"x@y.test\"}\n",
		"{\"action\":\"reply\",\"raw\":\"a\",\"raw\":\"b\"}\n",
		"{\"action\":\"drop\",\"raw\":\"a\"}\n",
		"{\"action\":\"forward\",\"to\":\"a@b.test\",\"raw\":\"a\"}\n",
		"{\"action\":\"reply\",\"raw\":\"a\\u0000b\"}\n",
		"{\"action\":\"reply\",\"raw\":\"a\rb\"}\n",
		"{\"action\":\"reply\",\"raw\":\"x\",\"reason\":\"y\"}\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p = parse(bad[i], &rc);
		assert_int_equal(rc, -EBADMSG);
		mxf_wp_parser_free(p);
	}
	/* 32 KiB once normalised: 10922 lines "a" LF are 32766 octets as CRLF
	 * lines, one more is over. */
	for (int extra = 0; extra < 2; extra++) {
		size_t pairs = 10922 + (size_t)extra;
		char *json = malloc(pairs * 3 + 64);
		assert_non_null(json);
		size_t m = (size_t)sprintf(json, "{\"action\":\"reply\",\"raw\":\"");
		for (size_t k = 0; k < pairs; k++) {
			memcpy(json + m, "a\\n", 3);
			m += 3;
		}
		strcpy(json + m, "\"}\n");
		p = parse(json, &rc);
		assert_int_equal(rc, extra ? -EBADMSG : 0);
		if (!extra)
			assert_int_equal(strlen(mxf_wp_get(p, 0)->raw), 32766);
		mxf_wp_parser_free(p);
		free(json);
	}
}

static void test_chunked(void **state)
{
	(void)state;
	const char *in = "{\"action\":\"forward\",\"to\":\"a@b.test\"}\n{\"action\":\"drop\"}\n";
	struct mxf_wp_parser *p = mxf_wp_parser_new();
	for (const char *c = in; *c; c++)
		assert_int_equal(mxf_wp_feed(p, c, 1), 0);
	assert_int_equal(mxf_wp_finish(p), 0);
	assert_int_equal(mxf_wp_count(p), 2);
	mxf_wp_parser_free(p);
}

static void test_header_line(void **state)
{
	(void)state;
	struct mxf_wp_envelope e = {.from = "a\"b@c", .to = "x@y", .client_ip = "192.0.2.1",
				    .helo = "h\x01", .queue_id = "Q", .size = 42};
	char *s = mxf_wp_header_line(&e);
	assert_string_equal(s, "{\"from\":\"a\\\"b@c\",\"to\":\"x@y\",\"client_ip\":\"192.0.2.1\","
			       "\"helo\":\"h\\u0001\",\"queue_id\":\"Q\",\"size\":42}");
	free(s);
	/* UTF-8 passes; an octet that is not UTF-8 becomes U+FFFD (JSON parsers
	 * refuse invalid UTF-8); \n and \t in their short forms. */
	e.from = "caf\xc3\xa9@c";
	e.helo = "h\xff\xc0\xaf\n\t";
	s = mxf_wp_header_line(&e);
	assert_non_null(strstr(s, "\"from\":\"caf\xc3\xa9@c\""));
	assert_non_null(strstr(s, "\"helo\":\"h\\ufffd\\ufffd\\ufffd\\n\\t\""));
	free(s);
	assert_int_equal(mxf_wp_check_headers("Subject: x\r\n"), -EINVAL);
	assert_int_equal(mxf_wp_check_headers("X-A: x"), -EINVAL);
	assert_int_equal(mxf_wp_check_headers(""), 0);
}

static void test_rulesdb_workers(void **state)
{
	(void)state;
	char path[] = "/tmp/mxf-wp-XXXXXX", db_path[64], err[256];
	assert_non_null(mkdtemp(path));
	snprintf(db_path, sizeof(db_path), "%s/rules.db", path);
	struct mxf_rulesdb *db;
	assert_int_equal(mxf_rulesdb_open(db_path, true, &db, err, sizeof(err)), 0);
	const char *env[] = {"A=1", "B_2=x y"};
	struct mxf_worker_spec w = {.name = "w1", .runtime = "js", .source = "export default {}",
				    .env = env, .nenv = 2};
	assert_int_equal(mxf_rulesdb_worker_add(db, &w, false, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_worker_add(db, &w, false, err, sizeof(err)), -EEXIST);
	struct mxf_worker_spec bad = w;
	bad.name = "bad name";
	assert_int_equal(mxf_rulesdb_worker_add(db, &bad, false, err, sizeof(err)), -EINVAL);
	bad = w;
	const char *badenv[] = {"MXF_FROM=x"};
	bad.env = badenv;
	bad.nenv = 1;
	assert_int_equal(mxf_rulesdb_worker_add(db, &bad, true, err, sizeof(err)), -EINVAL);
	bad = (struct mxf_worker_spec){.name = "p", .runtime = "program", .path = "relative"};
	assert_int_equal(mxf_rulesdb_worker_add(db, &bad, false, err, sizeof(err)), -EINVAL);
	struct mxf_worker_spec prog = {.name = "p", .runtime = "program", .path = "/bin/true",
				       .timeout = 7};
	assert_int_equal(mxf_rulesdb_worker_add(db, &prog, false, err, sizeof(err)), 0);

	struct mxf_ruleset *rs;
	assert_int_equal(mxf_ruleset_load(db, &rs, err, sizeof(err)), 0);
	const struct mxf_ruleset_worker *lw = mxf_ruleset_worker(rs, "w1");
	assert_non_null(lw);
	assert_string_equal(lw->runtime, "js");
	assert_string_equal(lw->source, "export default {}");
	assert_int_equal(lw->timeout, MXF_WORKER_DEFAULT_TIMEOUT);
	assert_int_equal(lw->nenv, 2);
	assert_string_equal(lw->env[0], "A=1");
	assert_string_equal(lw->env[1], "B_2=x y");
	lw = mxf_ruleset_worker(rs, "p");
	assert_non_null(lw);
	assert_string_equal(lw->path, "/bin/true");
	assert_int_equal(lw->timeout, 7);
	assert_null(mxf_ruleset_worker(rs, "nope"));
	mxf_ruleset_free(rs);

	assert_int_equal(mxf_rulesdb_domain_add(db, "gw.test", err, sizeof(err)), 0);
	struct mxf_rule_spec r = {.domain = "gw.test", .matcher = "literal", .to = "x@gw.test",
				  .action = "worker", .arg = "p"};
	char tag[40];
	assert_int_equal(mxf_rulesdb_rule_create(db, &r, tag, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_worker_remove(db, "p", err, sizeof(err)), -EBUSY);
	assert_int_equal(mxf_rulesdb_worker_remove(db, "w1", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_worker_remove(db, "w1", err, sizeof(err)), -ENOENT);
	mxf_rulesdb_close(db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", path);
	assert_int_equal(system(cmd), 0);
}

/* A real run: the header line and the message on stdin, the decisions
 * back, the deadline enforced on a spinning program. */
static void test_run(void **state)
{
	(void)state;
	int fd = memfd_create("msg", 0);
	const char msg[] = "Subject: hi\r\n\r\nbody\r\n";
	assert_int_equal(write(fd, msg, sizeof(msg) - 1), (ssize_t)sizeof(msg) - 1);
	char prog[] = "/tmp/mxf-wp-prog-XXXXXX";
	int pf = mkstemp(prog);
	const char script[] =
		"#!/bin/sh\nread h\nbody=$(cat)\n"
		"case \"$h$body$MXF_TO$K\" in *'\"size\":21'*'Subject: hi'*'x@y.test'*v) ;; *) exit 9;; "
		"esac\n"
		"echo '{\"action\":\"forward\",\"to\":\"a@b.test\"}'\n";
	assert_int_equal(write(pf, script, sizeof(script) - 1), (ssize_t)sizeof(script) - 1);
	fchmod(pf, 0755);
	close(pf);
	const char *env[] = {"K=v"};
	struct mxf_worker_def d = {.name = "t", .runtime = "program", .path = prog, .env = env,
				   .nenv = 1, .timeout = 5};
	struct mxf_worker_limits l = {.memory = 256u << 20, .keep_stderr = true};
	struct mxf_wp_envelope e = {.from = "a@b", .to = "x@y.test", .client_ip = "",
				    .helo = "", .queue_id = "Q", .size = sizeof(msg) - 1};
	pid_t pid;
	int out;
	assert_int_equal(mxf_workerrun_start(&d, &l, &e, fd, &pid, &out), 0);
	struct mxf_wp_parser *p = mxf_wp_parser_new();
	char status[200];
	assert_int_equal(mxf_workerrun_wait(pid, out, 5, p, status, sizeof(status)), 0);
	assert_string_equal(status, "ok");
	assert_int_equal(mxf_wp_count(p), 1);
	close(out);
	mxf_wp_parser_free(p);

	pf = open(prog, O_WRONLY | O_TRUNC);
	const char spin[] = "#!/bin/sh\nwhile :; do :; done\n";
	assert_int_equal(write(pf, spin, sizeof(spin) - 1), (ssize_t)sizeof(spin) - 1);
	close(pf);
	d.timeout = 1;
	assert_int_equal(mxf_workerrun_start(&d, &l, &e, fd, &pid, &out), 0);
	p = mxf_wp_parser_new();
	assert_int_equal(mxf_workerrun_wait(pid, out, 1, p, status, sizeof(status)), -1);
	assert_non_null(strstr(status, "timeout"));
	assert_int_equal(kill(pid, 0), -1); /* reaped */
	close(out);
	mxf_wp_parser_free(p);
	unlink(prog);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decisions),      cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_chunked),        cmocka_unit_test(test_header_line),
		cmocka_unit_test(test_reply),
		cmocka_unit_test(test_rulesdb_workers), cmocka_unit_test(test_run),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
