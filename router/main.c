/* router: the spool's single owner, the queue manager and the policy
 * point (DESIGN.md §1). Started by mxferryd as "router -c CONFIG [-s]". */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "privdrop.h"
#include "router.h"
#include "rulesdb.h"
#include "spool.h"
#include "srs.h"

struct router R;
static uv_signal_t sig_hup, sig_term, sig_int;

void router_maybe_exit(void)
{
	if (!R.stopping || R.commits_running > 0 || R.removals_pending > 0)
		return;
	/* Nothing to flush: every acknowledged message is already on disk,
	 * and the next start rebuilds the queue from the spool. */
	activity_close();
	sign_free();
	mxf_info("stopped");
	exit(0);
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)h;
	if (signum == SIGHUP) {
		char err[512] = "";
		queue_reload_rules(err, sizeof(err));
		return;
	}
	if (R.stopping)
		return;
	mxf_info("stopping on signal %d", signum);
	R.stopping = true;
	uv_poll_stop(&R.listen_poll);
	metrics_stop();
	peer_close_all();
	router_maybe_exit(); /* or when the last running commit returns */
}

/* "5m,10m,1h": durations (s/m/h/d suffix, seconds by default), each
 * 1 s .. 7 d. Fatal when malformed: the configuration is wrong. */
static void parse_schedule(const char *spec)
{
	size_t cap = 1;
	for (const char *p = spec; *p; p++)
		cap += *p == ',';
	if (!*spec)
		return;
	R.sched = calloc(cap, sizeof(*R.sched));
	if (!R.sched)
		mxf_fatal("out of memory");
	const char *p = spec;
	while (*p) {
		while (*p == ' ')
			p++;
		char *end;
		errno = 0;
		long long n = strtoll(p, &end, 10);
		long long mul = 1;
		if (end == p || errno)
			mxf_fatal("[router] retry_schedule: bad value at '%s'", p);
		switch (*end) {
		case 's': end++; break;
		case 'm': mul = 60; end++; break;
		case 'h': mul = 3600; end++; break;
		case 'd': mul = 86400; end++; break;
		default: break;
		}
		while (*end == ' ')
			end++;
		if ((*end && *end != ',') || n < 1 || n * mul > 7 * 86400)
			mxf_fatal("[router] retry_schedule: bad value at '%s'", p);
		R.sched[R.nsched++] = n * mul;
		p = *end ? end + 1 : end;
	}
}

/* Creates a directory when missing, only inside a directory we own. */
static void ensure_dir(const char *parent, const char *path, mode_t mode)
{
	struct stat st;
	if (stat(path, &st) == 0 || errno != ENOENT)
		return;
	if (stat(parent, &st) < 0 || st.st_uid != geteuid())
		return;
	/* chmod: the umask would take the search bit private/ needs. */
	if ((mkdir(path, mode) < 0 && errno != EEXIST) || chmod(path, mode) < 0)
		mxf_warn("cannot create %s: %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
	char sock[PATH_MAX], path[PATH_MAX], err[512];
	struct mxf_config *cfg = mxf_daemon_init(argc, argv, "router");
	R.cfg = cfg;
	R.dev = mxf_config_bool(cfg, "main", "run_as_invoking_user") || !mxf_privdrop_capable();
	/* The uid of each role's user, looked up while /etc/passwd is still
	 * what we think it is (before dropping privileges). */
	if (!R.dev) {
		const struct {
			enum role role;
			const char *section;
		} roles[] = {{ROLE_SMTPD, "smtpd"}, {ROLE_DELIVERD, "deliverd"},
			     {ROLE_BOUNCER, "bouncer"}, {ROLE_SIGNER, "deliverd"},
			     {ROLE_WORKERD, "workerd"}, {ROLE_CTL, "api"}};
		for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
			gid_t gid;
			/* apid (issue 12) speaks as ctl: queue commands and the
			 * verification mail; its user only when it runs. */
			if (roles[i].role == ROLE_CTL && !mxf_api_enabled(cfg))
				continue;
			const char *user = mxf_config_str(cfg, roles[i].section, "user");
			if (mxf_privdrop_lookup(user, &R.role_uid[roles[i].role], &gid) == 0)
				R.role_uid_known[roles[i].role] = true;
			else
				mxf_warn("no user %s: the %s role cannot connect", user,
					 roles[i].section);
		}
	}
	mxf_daemon_drop(cfg, "router", false, sock, sizeof(sock));
	R.self_uid = geteuid();
	signal(SIGPIPE, SIG_IGN);
	umask(077);

	const char *spool_dir = mxf_config_str(cfg, "main", "spool_dir");
	const char *data_dir = mxf_config_str(cfg, "main", "data_dir");
	R.hostname = mxf_config_str(cfg, "main", "hostname");
	R.retry_min = mxf_config_int(cfg, "router", "retry_min");
	R.retry_max = mxf_config_int(cfg, "router", "retry_max");
	R.lifetime = mxf_config_int(cfg, "router", "max_queue_lifetime");
	parse_schedule(mxf_config_str(cfg, "router", "retry_schedule"));
	R.dom_conc = (unsigned)mxf_config_int(cfg, "router", "domain_concurrency");
	R.dom_rate = (unsigned)mxf_config_int(cfg, "router", "domain_rate");
	R.local_cs = !mxf_config_bool(cfg, "router", "local_part_case_insensitive");
	const char *sep = mxf_config_str(cfg, "router", "subaddress_separator");
	if (!*sep || strlen(sep) >= sizeof(R.subaddr_sep) || strchr(sep, '@') || strchr(sep, '"'))
		mxf_fatal("[router] subaddress_separator: one to 15 characters, not @ or \"");
	snprintf(R.subaddr_sep, sizeof(R.subaddr_sep), "%s", sep);

	int r = mxf_spool_open(spool_dir, true, &R.spool);
	if (r < 0)
		mxf_fatal("spool %s: %s", spool_dir, strerror(-r));
	snprintf(path, sizeof(path), "%s/private", spool_dir);
	ensure_dir(spool_dir, path, 0711);

	snprintf(path, sizeof(path), "%s/rules.db", data_dir);
	if (mxf_rulesdb_open(path, true, &R.rdb, err, sizeof(err)) < 0)
		mxf_fatal("rules database: %s", err);
	struct mxf_ruleset_opts ro = {.local_case_sensitive = R.local_cs,
				      .subaddr_sep = R.subaddr_sep};
	if (mxf_ruleset_load_opts(R.rdb, &ro, &R.rules, err, sizeof(err)) < 0)
		mxf_fatal("rules: %s", err);
	if (access_reload() < 0)
		mxf_fatal("allow/block lists: cannot load");

	sign_load();

	uint8_t secret[4096];
	size_t slen = 0;
	snprintf(path, sizeof(path), "%s/srs.secret", data_dir);
	if ((r = mxf_srs_load_secret(path, 1, secret, sizeof(secret), &slen)) < 0)
		mxf_fatal("SRS secret %s: %s", path, strerror(-r));
	r = mxf_srs_new(secret, slen, mxf_config_str(cfg, "router", "srs_domain"), &R.srs);
	memset(secret, 0, sizeof(secret));
	if (r < 0)
		mxf_fatal("SRS: %s", strerror(-r));
	snprintf(path, sizeof(path), "%s/webhook.secret", data_dir);
	sign_webhook_load(path);
	snprintf(path, sizeof(path), "%s/srs.db", data_dir);
	if ((r = mxf_srs_open_db(R.srs, path)) < 0)
		mxf_warn("SRS database %s: %s; senders too long for SRS keep their address", path,
			 strerror(-r));

	snprintf(path, sizeof(path), "%s/activity.db", data_dir);
	if (activity_open(path) < 0)
		mxf_fatal("cannot open the activity log %s", path);

	/* Commits fsync each message's files on the thread pool, many at once
	 * (group commit, receive.c): the default 4 threads would cap it. */
	if (!getenv("UV_THREADPOOL_SIZE"))
		setenv("UV_THREADPOOL_SIZE", "16", 1);
	R.loop = uv_default_loop();
	queue_init();
	/* Recover before listening: nobody may commit into a spool that is
	 * still being swept (tmp/ is emptied). */
	queue_recover();
	queue_rules_poll_start();
	if ((r = peer_listen(sock)) < 0)
		mxf_fatal("cannot listen on %s: %s", sock, strerror(-r));
	metrics_start();

	uv_signal_init(R.loop, &sig_hup);
	uv_signal_init(R.loop, &sig_term);
	uv_signal_init(R.loop, &sig_int);
	uv_signal_start(&sig_hup, on_signal, SIGHUP);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_start(&sig_int, on_signal, SIGINT);

	if (R.dev)
		mxf_warn("development mode: every role is accepted from uid %ld and root",
			 (long)R.self_uid);
	mxf_info("started: %zu rule(s), srs_domain=%s, listening on %s",
		 mxf_ruleset_count(R.rules), mxf_config_str(cfg, "router", "srs_domain"), sock);
	uv_run(R.loop, UV_RUN_DEFAULT);
	return 0;
}
