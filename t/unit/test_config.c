#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char dir[] = "/tmp/mxf-config-XXXXXX";

static const char *write_conf(const char *name, const char *text)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static void test_defaults(void **state)
{
	(void)state;
	struct mxf_config *c;
	char err[256];
	assert_int_equal(mxf_config_load(write_conf("empty.conf", ""), &c, err, sizeof(err)), 0);
	assert_string_equal(mxf_config_str(c, "main", "spool_dir"), "/var/spool/mxferry");
	assert_int_equal(mxf_config_int(c, "deliverd", "smtp_port"), 25);
	assert_int_equal(mxf_config_int(c, "smtpd", "max_message_size"), 26214400);
	assert_false(mxf_config_bool(c, "main", "run_as_invoking_user"));
	/* srs_domain defaults to the hostname */
	assert_string_equal(mxf_config_str(c, "router", "srs_domain"),
			    mxf_config_str(c, "main", "hostname"));
	mxf_config_free(c);
}

static void test_values_and_relative_paths(void **state)
{
	(void)state;
	struct mxf_config *c;
	char err[256], want[600];
	const char *p = write_conf("a.conf", "[main]\nhostname = mx.example\nspool_dir = ../spool\n"
					     "data_dir = /abs/data\nrun_as_invoking_user = yes\n"
					     "dns_resolver = [::1]:5353\n"
					     "[router]\nretry_min = 2m\n[deliverd]\nsmtp_port = 2526\n");
	assert_int_equal(mxf_config_load(p, &c, err, sizeof(err)), 0);
	assert_string_equal(mxf_config_str(c, "main", "hostname"), "mx.example");
	snprintf(want, sizeof(want), "%s/../spool", dir);
	assert_string_equal(mxf_config_str(c, "main", "spool_dir"), want);
	assert_string_equal(mxf_config_str(c, "main", "data_dir"), "/abs/data");
	assert_true(mxf_config_bool(c, "main", "run_as_invoking_user"));
	assert_int_equal(mxf_config_int(c, "router", "retry_min"), 120);
	assert_int_equal(mxf_config_int(c, "deliverd", "smtp_port"), 2526);
	assert_string_equal(mxf_config_str(c, "router", "srs_domain"), "mx.example");
	mxf_config_free(c);
}

static void expect_error(const char *text, const char *needle)
{
	struct mxf_config *c = NULL;
	char err[256] = "";
	assert_true(mxf_config_load(write_conf("bad.conf", text), &c, err, sizeof(err)) < 0);
	assert_null(c);
	if (!strstr(err, needle))
		fail_msg("error '%s' lacks '%s'", err, needle);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("[main]\nspool_dri = x\n", "unknown key [main] spool_dri");
	expect_error("[nosuch]\nkey = 1\n", "unknown key");
	expect_error("[deliverd]\nsmtp_port = 0\n", "out of range");
	expect_error("[deliverd]\nsmtp_port = 65536\n", "out of range");
	expect_error("[deliverd]\nsmtp_port = 25x\n", "invalid value");
	expect_error("[main]\nrun_as_invoking_user = maybe\n", "invalid value");
	expect_error("[router]\nretry_min = 5w\n", "invalid value");
	expect_error("[main]\ndns_resolver = 127.0.0.1\n", "dns_resolver");
	expect_error("this is not ini\n", "syntax error");
	/* Issue 11: the anti-abuse keys are checked at load, not at smtpd start. */
	expect_error("[smtpd]\ndnsbl = bl.test=127.0.0\n", "[smtpd] dnsbl");
	expect_error("[smtpd]\nrhsbl = a..b\n", "[smtpd] rhsbl");
	expect_error("[smtpd]\nreject_threshold = 0\n", "reject_threshold");
	expect_error("[smtpd]\nscore_weights = no_ptr=x\n", "score_weights");
	expect_error("[smtpd]\ngreylist_threshold = high\n", "greylist_threshold");
	expect_error("[smtpd]\ngreylist_allow = 10.0.0.0/33\n", "greylist_allow");
	struct mxf_config *c;
	char err[256];
	assert_true(mxf_config_load("/nonexistent/x.conf", &c, err, sizeof(err)) < 0);
}

static void test_hostport(void **state)
{
	(void)state;
	char host[64];
	unsigned port;
	assert_int_equal(mxf_config_split_hostport("127.0.0.1:53", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 53);
	assert_int_equal(mxf_config_split_hostport("[::1]:2525", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 2525);
	assert_true(mxf_config_split_hostport("::1:25", host, sizeof(host), &port) < 0);
	assert_true(mxf_config_split_hostport("[::1]25", host, sizeof(host), &port) < 0);
	assert_true(mxf_config_split_hostport("a:0", host, sizeof(host), &port) < 0);
	assert_true(mxf_config_split_hostport(":25", host, sizeof(host), &port) < 0);
}

int main(void)
{
	assert_non_null(mkdtemp(dir));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values_and_relative_paths),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_hostport),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return r;
}
