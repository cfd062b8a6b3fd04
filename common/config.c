#include "config.h"
#include "dnsbl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum ctype { T_STR, T_INT, T_BOOL, T_PATH, T_DURATION };

struct key {
	const char *section;
	const char *name;
	enum ctype type;
	const char *def;
	long long min, max;
	bool reloadable;
};

/* The whole configuration surface. Durations are seconds, with an optional
 * s/m/h/d suffix in the file. */
static const struct key keys[] = {
	{"main", "hostname", T_STR, "", 0, 0, false},
	{"main", "spool_dir", T_PATH, "/var/spool/mxferry", 0, 0, false},
	{"main", "data_dir", T_PATH, "/var/lib/mxferry", 0, 0, false},
	{"main", "daemon_dir", T_PATH, "", 0, 0, false},
	{"main", "dns_resolver", T_STR, "", 0, 0, false},
	/* Development only: every daemon keeps the invoking user's identity. */
	{"main", "run_as_invoking_user", T_BOOL, "no", 0, 0, false},
	{"main", "log_level", T_STR, "info", 0, 0, true},
	{"smtpd", "listen", T_STR, "0.0.0.0:25,[::]:25", 0, 0, false},
	{"smtpd", "user", T_STR, "mxferry-smtpd", 0, 0, false},
	{"smtpd", "max_message_size", T_INT, "26214400", 1024, 1LL << 34, true},
	{"smtpd", "max_recipients", T_INT, "50", 1, 100000, true},
	{"smtpd", "command_timeout", T_DURATION, "300", 1, 3600, true},
	/* STARTTLS (PEM files, read before the chroot); empty: not offered. */
	{"smtpd", "tls_cert", T_PATH, "", 0, 0, false},
	{"smtpd", "tls_key", T_PATH, "", 0, 0, false},
	/* Milliseconds before the 220; a client talking earlier gets 554. */
	{"smtpd", "greet_delay", T_INT, "1000", 0, 60000, true},
	/* Per client IP: concurrent sessions, new sessions per minute (0: no limit). */
	{"smtpd", "max_conn_per_ip", T_INT, "50", 0, 1000000, true},
	{"smtpd", "max_conn_rate", T_INT, "0", 0, 1000000, true},
	/* On SIGTERM, how long messages already in DATA may take to finish. */
	{"smtpd", "shutdown_timeout", T_DURATION, "3", 0, 60, true},
	/* Issue 11: block lists ("zone[=127.0.0.2;127.0.0.4][*weight], ...",
	 * common/dnsbl.h) for the client IP and for the HELO and sender domains;
	 * how long (ms) a verdict may wait for them; the score that refuses. */
	{"smtpd", "dnsbl", T_STR, "", 0, 0, true},
	{"smtpd", "rhsbl", T_STR, "", 0, 0, true},
	{"smtpd", "dnsbl_timeout", T_INT, "2000", 100, 30000, true},
	{"smtpd", "reject_threshold", T_STR, "1", 0, 0, true},
	/* Weights of the reputation heuristics: "no_ptr=0.3, pipelining=0.5, ..." */
	{"smtpd", "score_weights", T_STR, "", 0, 0, true},
	/* Greylisting (client /24 or /64, sender, recipient), in smtpd's memory. */
	{"smtpd", "greylisting", T_BOOL, "no", 0, 0, true},
	{"smtpd", "greylist_delay", T_DURATION, "300", 1, 86400, true},
	{"smtpd", "greylist_window", T_DURATION, "14400", 1, 7 * 86400, true},
	{"smtpd", "greylist_threshold", T_STR, "0", 0, 0, true},
	{"smtpd", "greylist_allow", T_STR, "", 0, 0, true},
	/* Per /24 (IPv4) or /64 (IPv6): concurrent sessions, sessions per minute;
	 * per address and per network: messages and recipients per minute (0: no limit). */
	{"smtpd", "max_conn_per_net", T_INT, "0", 0, 1000000, true},
	{"smtpd", "max_conn_rate_net", T_INT, "0", 0, 1000000, true},
	{"smtpd", "max_msg_rate", T_INT, "0", 0, 1000000, true},
	{"smtpd", "max_msg_rate_net", T_INT, "0", 0, 1000000, true},
	{"smtpd", "max_rcpt_rate", T_INT, "0", 0, 1000000, true},
	{"smtpd", "max_rcpt_rate_net", T_INT, "0", 0, 1000000, true},
	/* The time unit of every per-minute limit above (tests shorten it). */
	{"smtpd", "rate_window", T_DURATION, "60", 1, 3600, true},
	{"router", "user", T_STR, "mxferry-router", 0, 0, false},
	{"router", "srs_domain", T_STR, "", 0, 0, true},
	{"router", "retry_min", T_DURATION, "300", 1, 86400, true},
	/* Retry after retry_min·2^(n-1), capped at retry_max: 5m 10m 20m 40m, then hourly. */
	{"router", "retry_max", T_DURATION, "3600", 1, 7 * 86400, true},
	{"router", "max_queue_lifetime", T_DURATION, "432000", 1, 60 * 86400, true},
	/* Issue 4. An explicit schedule ("5m,10m,20m,40m,1h", the last repeats)
	 * overrides retry_min/retry_max when set. */
	{"router", "retry_schedule", T_STR, "", 0, 0, true},
	/* Characters that start a subaddress (user+tag@) on domains that enable it. */
	{"router", "subaddress_separator", T_STR, "+", 0, 0, true},
	{"router", "local_part_case_insensitive", T_BOOL, "yes", 0, 0, true},
	/* Per destination domain: delivery jobs in flight, new jobs per minute (0: no limit). */
	{"router", "domain_concurrency", T_INT, "20", 1, 10000, true},
	{"router", "domain_rate", T_INT, "0", 0, 1000000, true},
	/* Issue 8: activity.db rows older than this are pruned (hourly and at start). */
	{"router", "activity_retention", T_DURATION, "2678400", 3600, 3650 * 86400, true},
	{"deliverd", "user", T_STR, "mxferry-deliver", 0, 0, false},
	{"deliverd", "smtp_port", T_INT, "25", 1, 65535, false},
	{"deliverd", "connect_timeout", T_DURATION, "30", 1, 3600, true},
	{"deliverd", "command_timeout", T_DURATION, "300", 1, 3600, true},
	/* Issue 5: RFC 5321 §4.5.3.2 timeouts, host choice, TLS, connection reuse. */
	{"deliverd", "greeting_timeout", T_DURATION, "300", 1, 3600, true},
	{"deliverd", "data_init_timeout", T_DURATION, "120", 1, 3600, true},
	{"deliverd", "data_block_timeout", T_DURATION, "180", 1, 3600, true},
	{"deliverd", "data_done_timeout", T_DURATION, "600", 1, 3600, true},
	{"deliverd", "prefer_ipv6", T_BOOL, "yes", 0, 0, true},
	{"deliverd", "relayhost", T_STR, "", 0, 0, true},
	{"deliverd", "starttls", T_BOOL, "yes", 0, 0, true},
	{"deliverd", "tls_ca_file", T_PATH, "/etc/ssl/certs/ca-certificates.crt", 0, 0, false},
	{"deliverd", "max_sessions", T_INT, "32", 1, 1024, false},
	{"deliverd", "dest_concurrency", T_INT, "20", 1, 1024, true},
	{"deliverd", "conn_cache_time", T_DURATION, "10", 0, 3600, true},
	{"deliverd", "conn_cache_per_dest", T_INT, "10", 0, 10000, true},
	{"deliverd", "conn_cache_total", T_INT, "100", 0, 100000, true},
	{"bouncer", "user", T_STR, "mxferry-bounce", 0, 0, false},
	/* Issue 6: a delay warning (DSN Action: delayed) once a message has
	 * waited this long with recipients still deferred; 0 = never (default). */
	{"bouncer", "delay_warning_time", T_DURATION, "0", 0, 60 * 86400, true},
	/* Issue 7, checks on incoming mail (smtpd): SPF, DKIM, DMARC in one
	 * Authentication-Results header with authserv_id ("" = [main] hostname);
	 * dmarc enforce|monitor|off; mail passing neither SPF nor DKIM refused. */
	{"auth", "checks", T_BOOL, "yes", 0, 0, true},
	{"auth", "authserv_id", T_STR, "", 0, 0, true},
	{"auth", "dmarc", T_STR, "enforce", 0, 0, true},
	{"auth", "require_spf_or_dkim", T_BOOL, "yes", 0, 0, true},
	/* Whether deliverd seals forwarded mail with ARC (signing: issue 7). */
	{"auth", "arc", T_BOOL, "yes", 0, 0, false},
	/* Issue 9: the whole DATA/BDAT phase of one message (from the 354 or the
	 * first chunk to the end marker) must end within this, however steadily
	 * the client trickles bytes (command_timeout only bounds each gap). */
	{"smtpd", "data_timeout", T_DURATION, "600", 1, 86400, true},
	/* Issue 11: activity rows for refusals per client network (/24, /64) and
	 * second; past it they are counted and one summary row is written. */
	{"router", "reject_log_rate", T_INT, "10", 0, 1000000, true},
	/* Issue 8: the router's Prometheus endpoint ("127.0.0.1:9325", "[::1]:9325");
	 * empty: off. Bound by the master, so a restart keeps the port. */
	{"main", "metrics_listen", T_STR, "", 0, 0, false},
	/* Issue 13: workerd runs worker programs as this user (no spool or DB
	 * access), js workers with this node binary, each run limited to
	 * memory_limit MiB of data (RLIMIT_DATA). */
	{"workerd", "user", T_STR, "mxferry-worker", 0, 0, false},
	{"workerd", "node", T_PATH, "/usr/bin/node", 0, 0, false},
	{"workerd", "memory_limit", T_INT, "512", 64, 65536, false},
	/* Issue 13: the whole POST of a webhook delivery must end within this. */
	{"deliverd", "webhook_timeout", T_DURATION, "30", 1, 600, false},
	/* Issue 12: apid, the REST API and dashboard. listen "off" or empty:
	 * not started. TLS: PEM files ("" = [smtpd] tls_cert/tls_key when
	 * tls is yes). A request body past max_body is refused with 413; per
	 * client IP, rate_limit requests per rate_window (0: no limit) → 429. */
	{"api", "listen", T_STR, "127.0.0.1:8025", 0, 0, false},
	{"api", "user", T_STR, "mxferry-api", 0, 0, false},
	{"api", "www_dir", T_PATH, "/usr/share/mxferry/www", 0, 0, false},
	{"api", "tls", T_BOOL, "no", 0, 0, false},
	{"api", "tls_cert", T_PATH, "", 0, 0, false},
	{"api", "tls_key", T_PATH, "", 0, 0, false},
	{"api", "max_body", T_INT, "1048576", 1024, 1LL << 30, false},
	{"api", "rate_limit", T_INT, "600", 0, 1000000, false},
	{"api", "rate_window", T_DURATION, "60", 1, 3600, false},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

struct mxf_config {
	char *file;
	char *dir;
	char *val[NKEYS];
	long long num[NKEYS];
	char *err;
	size_t errlen;
	int failed;
};

static int key_index(const char *section, const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int parse_bool(const char *v, long long *out)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcmp(v, "1"))
		*out = 1;
	else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off") || !strcmp(v, "0"))
		*out = 0;
	else
		return -EINVAL;
	return 0;
}

static int parse_num(const char *v, int duration, long long *out)
{
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || end == v)
		return -EINVAL;
	long long mul = 1;
	if (duration && *end) {
		switch (*end) {
		case 's': mul = 1; break;
		case 'm': mul = 60; break;
		case 'h': mul = 3600; break;
		case 'd': mul = 86400; break;
		default: return -EINVAL;
		}
		end++;
	}
	if (*end)
		return -EINVAL;
	if (n > LLONG_MAX / mul || n < LLONG_MIN / mul)
		return -ERANGE;
	*out = n * mul;
	return 0;
}

static int set_value(struct mxf_config *cfg, int i, const char *v)
{
	const struct key *k = &keys[i];
	char *copy;
	long long n = 0;
	int r = 0;

	switch (k->type) {
	case T_BOOL:
		r = parse_bool(v, &n);
		break;
	case T_INT:
	case T_DURATION:
		r = parse_num(v, k->type == T_DURATION, &n);
		if (r == 0 && (n < k->min || n > k->max))
			r = -ERANGE;
		break;
	default:
		break;
	}
	if (r < 0) {
		snprintf(cfg->err, cfg->errlen, "%s: [%s] %s: invalid value '%s'%s", cfg->file,
			 k->section, k->name, v, r == -ERANGE ? " (out of range)" : "");
		return r;
	}
	if (k->type == T_PATH && v[0] != '\0' && v[0] != '/') {
		size_t len = strlen(cfg->dir) + strlen(v) + 2;
		copy = malloc(len);
		if (copy)
			snprintf(copy, len, "%s/%s", cfg->dir, v);
	} else {
		copy = strdup(v);
	}
	if (!copy)
		return -ENOMEM;
	free(cfg->val[i]);
	cfg->val[i] = copy;
	cfg->num[i] = n;
	return 0;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
	struct mxf_config *cfg = user;
	if (cfg->failed)
		return 0;
	int i = key_index(section, name);
	if (i < 0) {
		snprintf(cfg->err, cfg->errlen, "%s: unknown key [%s] %s", cfg->file, section, name);
		cfg->failed = -EINVAL;
		return 0;
	}
	int r = set_value(cfg, i, value);
	if (r < 0) {
		cfg->failed = r;
		return 0;
	}
	return 1;
}

void mxf_config_free(struct mxf_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < NKEYS; i++)
		free(cfg->val[i]);
	free(cfg->file);
	free(cfg->dir);
	free(cfg);
}

int mxf_config_load(const char *path, struct mxf_config **out, char *err, size_t errlen)
{
	struct mxf_config *cfg = calloc(1, sizeof(*cfg));
	char abs[PATH_MAX];
	int r;

	if (!cfg)
		return -ENOMEM;
	cfg->err = err;
	cfg->errlen = errlen;
	if (!realpath(path, abs)) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(cfg);
		return r;
	}
	cfg->file = strdup(abs);
	cfg->dir = strdup(abs);
	if (!cfg->file || !cfg->dir) {
		mxf_config_free(cfg);
		return -ENOMEM;
	}
	char *slash = strrchr(cfg->dir, '/');
	if (slash == cfg->dir)
		slash[1] = '\0';
	else
		*slash = '\0';

	for (size_t i = 0; i < NKEYS; i++) {
		if ((r = set_value(cfg, (int)i, keys[i].def)) < 0) {
			mxf_config_free(cfg);
			return r;
		}
	}
	r = ini_parse(abs, on_entry, cfg);
	if (cfg->failed) {
		r = cfg->failed;
		mxf_config_free(cfg);
		return r;
	}
	if (r != 0) {
		if (r < 0)
			snprintf(err, errlen, "%s: cannot read", abs);
		else
			snprintf(err, errlen, "%s:%d: syntax error", abs, r);
		mxf_config_free(cfg);
		return r < 0 ? -EIO : -EINVAL;
	}
	/* Defaults that depend on other values. */
	int h = key_index("main", "hostname");
	if (cfg->val[h][0] == '\0') {
		char name[256] = "localhost";
		gethostname(name, sizeof(name) - 1);
		set_value(cfg, h, name);
	}
	int s = key_index("router", "srs_domain");
	if (cfg->val[s][0] == '\0')
		set_value(cfg, s, cfg->val[h]);
	if (cfg->val[key_index("main", "dns_resolver")][0] != '\0') {
		char host[256];
		unsigned port;
		if (mxf_config_split_hostport(cfg->val[key_index("main", "dns_resolver")], host,
					      sizeof(host), &port) < 0) {
			snprintf(err, errlen, "%s: [main] dns_resolver: expected host:port", abs);
			mxf_config_free(cfg);
			return -EINVAL;
		}
	}
	const char *dm = cfg->val[key_index("auth", "dmarc")];
	if (strcmp(dm, "enforce") && strcmp(dm, "monitor") && strcmp(dm, "off")) {
		snprintf(err, errlen, "%s: [auth] dmarc: expected enforce, monitor or off", abs);
		mxf_config_free(cfg);
		return -EINVAL;
	}
	static const char *const lists[] = {"dnsbl", "rhsbl"};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		struct mxf_dnsbl_list *l = malloc(sizeof(*l));
		char why[300];
		int pr = l ? mxf_dnsbl_parse(cfg->val[key_index("smtpd", lists[i])], l, why,
					     sizeof(why))
			   : -ENOMEM;
		free(l);
		if (pr < 0) {
			snprintf(err, errlen, "%s: [smtpd] %s: %s", abs, lists[i],
				 pr == -ENOMEM ? "out of memory" : why);
			mxf_config_free(cfg);
			return pr;
		}
	}
	int th, wts[MXF_SC_N];
	const char *ts = cfg->val[key_index("smtpd", "reject_threshold")];
	char why[300];
	if (mxf_score_parse(ts, strlen(ts), &th) < 0 || th <= 0) {
		snprintf(err, errlen, "%s: [smtpd] reject_threshold: expected a number > 0", abs);
		mxf_config_free(cfg);
		return -EINVAL;
	}
	if (mxf_score_weights_parse(cfg->val[key_index("smtpd", "score_weights")], wts, why,
				    sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: [smtpd] score_weights: %s", abs, why);
		mxf_config_free(cfg);
		return -EINVAL;
	}
	const char *gs = cfg->val[key_index("smtpd", "greylist_threshold")];
	struct mxf_cidr cidrs[MXF_CIDR_LIST_MAX];
	size_t ncidr;
	if (mxf_score_parse(gs, strlen(gs), &th) < 0) {
		snprintf(err, errlen, "%s: [smtpd] greylist_threshold: expected a number", abs);
		mxf_config_free(cfg);
		return -EINVAL;
	}
	if (mxf_cidr_parse_list(cfg->val[key_index("smtpd", "greylist_allow")], cidrs,
				MXF_CIDR_LIST_MAX, &ncidr, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: [smtpd] greylist_allow: %s", abs, why);
		mxf_config_free(cfg);
		return -EINVAL;
	}
	*out = cfg;
	return 0;
}

static int must_index(const char *section, const char *key)
{
	int i = key_index(section, key);
	if (i < 0)
		abort();
	return i;
}

const char *mxf_config_str(const struct mxf_config *cfg, const char *section, const char *key)
{
	return cfg->val[must_index(section, key)];
}

long long mxf_config_int(const struct mxf_config *cfg, const char *section, const char *key)
{
	return cfg->num[must_index(section, key)];
}

bool mxf_config_bool(const struct mxf_config *cfg, const char *section, const char *key)
{
	return cfg->num[must_index(section, key)] != 0;
}

const char *mxf_config_file(const struct mxf_config *cfg)
{
	return cfg->file;
}

void mxf_config_dump(const struct mxf_config *cfg, FILE *out)
{
	const char *sect = "";
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(sect, keys[i].section) != 0) {
			sect = keys[i].section;
			fprintf(out, "%s[%s]\n", i ? "\n" : "", sect);
		}
		fprintf(out, "%s = %s\n", keys[i].name, cfg->val[i]);
	}
}

int mxf_config_entry(const struct mxf_config *cfg, size_t i, struct mxf_config_item *out)
{
	if (i >= NKEYS)
		return -ENOENT;
	const struct key *k = &keys[i];
	out->section = k->section;
	out->key = k->name;
	out->value = cfg->val[i];
	out->def = k->def;
	out->reloadable = k->reloadable;
	/* Numbers compare by value: "5m" is the default "300". */
	long long d = 0;
	if (k->type == T_BOOL)
		out->changed = parse_bool(k->def, &d) < 0 || d != cfg->num[i];
	else if (k->type == T_INT || k->type == T_DURATION)
		out->changed = parse_num(k->def, k->type == T_DURATION, &d) < 0 || d != cfg->num[i];
	else
		out->changed = strcmp(cfg->val[i], k->def) != 0;
	return 0;
}

int mxf_config_split_hostport(const char *in, char *host, size_t hostlen, unsigned *port)
{
	const char *colon;
	size_t hl;

	if (in[0] == '[') {
		const char *close = strchr(in, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - in - 1);
		in++;
		colon = close + 1;
	} else {
		colon = strrchr(in, ':');
		if (!colon || strchr(in, ':') != colon)
			return -EINVAL;
		hl = (size_t)(colon - in);
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	memcpy(host, in, hl);
	host[hl] = '\0';
	long long p;
	if (parse_num(colon + 1, 0, &p) < 0 || p < 1 || p > 65535)
		return -EINVAL;
	*port = (unsigned)p;
	return 0;
}

int mxf_config_sockaddr(const char *in, struct sockaddr_storage *ss, unsigned *sslen)
{
	char host[256];
	unsigned port;
	if (mxf_config_split_hostport(in, host, sizeof(host), &port) < 0)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*sslen = sizeof(*s4);
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*sslen = sizeof(*s6);
	} else {
		return -EAFNOSUPPORT;
	}
	return 0;
}

bool mxf_api_enabled(const struct mxf_config *cfg)
{
	const char *l = mxf_config_str(cfg, "api", "listen");
	return l[0] && strcasecmp(l, "off") != 0 && strcasecmp(l, "no") != 0;
}
