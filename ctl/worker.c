/* mxferryctl worker add|list|remove|test (issue 13). Definitions live in
 * rules.db (audited like every write); a js module's source is copied in at
 * `add`, so a later edit of the file changes nothing until added again. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "ctl.h"
#include "rulesdb.h"
#include "workerproto.h"
#include "workerreply.h"
#include "workerrun.h"

#define MAX_ENV 32
#define MAX_TEST_MESSAGE (64u << 20)

static int read_file(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ctl_fail("%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > MXF_WORKER_MAX_SOURCE) {
		close(fd);
		return ctl_fail("%s: must be a regular file of 1..%d bytes", path,
				MXF_WORKER_MAX_SOURCE);
	}
	char *buf = malloc((size_t)st.st_size + 1);
	ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return ctl_fail("%s: cannot read it", path);
	}
	buf[n] = '\0';
	if (strlen(buf) != (size_t)n) {
		free(buf);
		return ctl_fail("%s: contains a NUL byte", path);
	}
	*out = buf;
	return 0;
}

static int cmd_add(const struct mxf_config *cfg, int argc, char **argv)
{
	const char *name = argv[0], *js = NULL, *program = NULL;
	const char *env[MAX_ENV + 1];
	size_t nenv = 0;
	long long timeout = 0;
	bool replace = false, network = false;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		bool has = i + 1 < argc;
		if (!strcmp(o, "--js") && has)
			js = argv[++i];
		else if (!strcmp(o, "--program") && has)
			program = argv[++i];
		else if (!strcmp(o, "--env") && has) {
			if (nenv > MAX_ENV)
				return ctl_fail("at most %d --env", MAX_ENV);
			env[nenv++] = argv[++i];
		} else if (!strcmp(o, "--timeout") && has) {
			if (ctl_parse_duration(argv[++i], &timeout) < 0 || timeout < 1 ||
			    timeout > MXF_WORKER_MAX_TIMEOUT)
				return ctl_fail("--timeout must be 1..%d seconds",
						MXF_WORKER_MAX_TIMEOUT);
		} else if (!strcmp(o, "--replace"))
			replace = true;
		else if (!strcmp(o, "--network"))
			network = true;
		else
			return ctl_usage();
	}
	if (!js == !program)
		return ctl_usage();
	char *source = NULL;
	if (js && read_file(js, &source) != 0)
		return CTL_REFUSED;
	if (program) {
		struct stat st;
		if (program[0] != '/')
			return ctl_fail("--program needs an absolute path");
		if (stat(program, &st) < 0 || !S_ISREG(st.st_mode) || access(program, X_OK) < 0)
			return ctl_fail("%s: not an executable file", program);
	}
	struct mxf_worker_spec w = {.name = name, .runtime = js ? "js" : "program",
				    .path = program, .source = source, .env = env,
				    .nenv = nenv, .timeout = (int)timeout, .network = network};
	struct mxf_rulesdb *db = NULL;
	if (ctl_db_open(cfg, true, &db) != 0) {
		free(source);
		return CTL_REFUSED;
	}
	char err[512];
	int r = mxf_rulesdb_worker_add(db, &w, replace, err, sizeof(err));
	mxf_rulesdb_close(db);
	free(source);
	if (r < 0)
		return ctl_fail("%s", err);
	char e1[200];
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("worker", name);
		cj_str("runtime", w.runtime);
		cj_str("result", "added");
		cj_end(false);
	} else {
		printf("worker %s added (%s)\n", ctl_safe(e1, sizeof(e1), name), w.runtime);
	}
	fflush(stdout);
	ctl_reload_router(cfg);
	return CTL_OK;
}

static int list_cb(const struct mxf_worker_info *w, void *arg)
{
	struct ctl_table *t = arg;
	char what[PATH_MAX + 64], tmo[32], rules[16], created[40];
	if (strcmp(w->runtime, "js") == 0)
		snprintf(what, sizeof(what), "module, %zu bytes", strlen(w->source));
	else
		snprintf(what, sizeof(what), "%s", w->path);
	snprintf(tmo, sizeof(tmo), "%ds", w->timeout);
	snprintf(rules, sizeof(rules), "%d", w->rules);
	if (ctl_json) {
		ctl_iso(created, sizeof(created), (time_t)w->created);
		cj_begin(NULL, false);
		cj_str("name", w->name);
		cj_str("runtime", w->runtime);
		cj_str("path", *w->path ? w->path : NULL);
		cj_int("source_bytes", (long long)strlen(w->source));
		cj_raw("env", w->env);
		cj_int("timeout", w->timeout);
		cj_bool("network", w->network);
		cj_int("rules", w->rules);
		cj_str("created", created);
		cj_end(false);
		return 0;
	}
	char safe[PATH_MAX + 64], env[2048];
	ctl_safe(safe, sizeof(safe), what);
	ctl_safe(env, sizeof(env), w->env);
	const char *cells[] = {w->name, w->runtime, safe, tmo, env, rules};
	ctl_table_add(t, cells);
	return 0;
}

static int cmd_list(const struct mxf_config *cfg)
{
	struct mxf_rulesdb *db = NULL;
	if (ctl_db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	static const char *const hdr[] = {"NAME", "RUNTIME", "PROGRAM", "TIMEOUT", "ENV", "RULES"};
	struct ctl_table *t = ctl_table_new(6, hdr);
	if (ctl_json)
		cj_begin(NULL, true);
	int r = mxf_rulesdb_worker_list(db, list_cb, t);
	mxf_rulesdb_close(db);
	if (ctl_json)
		cj_end(true);
	else if (r == 0 && ctl_table_rows(t))
		ctl_table_print(t);
	else if (r == 0)
		printf("no workers\n");
	ctl_table_free(t);
	return r < 0 ? ctl_fail("cannot list workers: %s", strerror(-r)) : CTL_OK;
}

static int cmd_remove(const struct mxf_config *cfg, const char *name)
{
	struct mxf_rulesdb *db = NULL;
	if (ctl_db_open(cfg, true, &db) != 0)
		return CTL_REFUSED;
	char err[512], e1[200];
	int r = mxf_rulesdb_worker_remove(db, name, err, sizeof(err));
	mxf_rulesdb_close(db);
	if (r < 0)
		return ctl_fail("%s", err);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("worker", name);
		cj_str("result", "removed");
		cj_end(false);
	} else {
		printf("worker %s removed\n", ctl_safe(e1, sizeof(e1), name));
	}
	fflush(stdout);
	ctl_reload_router(cfg);
	return CTL_OK;
}

/* The worker's definition, copied out of the database. */
struct found {
	const char *name;
	bool ok;
	char runtime[16], path[1100];
	char *source;
	char *env[MAX_ENV];
	size_t nenv;
	int timeout;
	bool network;
};

static int find_cb(const struct mxf_worker_info *w, void *arg)
{
	struct found *f = arg;
	if (strcmp(w->name, f->name) != 0)
		return 0;
	f->ok = true;
	snprintf(f->runtime, sizeof(f->runtime), "%s", w->runtime);
	snprintf(f->path, sizeof(f->path), "%s", w->path);
	f->source = strdup(w->source);
	f->timeout = w->timeout;
	f->network = w->network;
	for (const char *c = w->env_lines; *c && f->nenv < MAX_ENV;) {
		const char *nl = strchr(c, '\n');
		size_t len = nl ? (size_t)(nl - c) : strlen(c);
		f->env[f->nenv++] = strndup(c, len);
		c += len + (nl ? 1 : 0);
	}
	return 1;
}

static void runner_path(const struct mxf_config *cfg, char *out, size_t cap)
{
	const char *d = mxf_config_str(cfg, "main", "daemon_dir");
	if (d && *d) {
		snprintf(out, cap, "%s/runner.mjs", d);
		return;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(out, cap, "%s/runner.mjs", self);
			if (access(out, R_OK) == 0)
				return;
		}
	}
	snprintf(out, cap, "%s/runner.mjs", MXF_DAEMON_DIR);
}

static int cmd_test(const struct mxf_config *cfg, int argc, char **argv)
{
	const char *from = NULL, *to = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--from") && i + 1 < argc)
			from = argv[++i];
		else if (!strcmp(argv[i], "--to") && i + 1 < argc)
			to = argv[++i];
		else
			return ctl_usage();
	}
	if (!from || !to)
		return ctl_usage();
	struct found f = {.name = argv[0]};
	struct mxf_rulesdb *db = NULL;
	if (ctl_db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	mxf_rulesdb_worker_list(db, find_cb, &f);
	mxf_rulesdb_close(db);
	int rc = CTL_REFUSED;
	int mfd = -1;
	if (!f.ok) {
		rc = ctl_fail("no worker %s", argv[0]);
		goto out;
	}
	/* The message from stdin into a memory file: the runtime reads it
	 * with pread, as it reads the spool file in workerd. */
	mfd = memfd_create("message", MFD_CLOEXEC);
	if (mfd < 0) {
		rc = ctl_fail("memfd: %s", strerror(errno));
		goto out;
	}
	char buf[65536];
	size_t total = 0;
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = ctl_fail("reading the message: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		total += (size_t)n;
		if (total > MAX_TEST_MESSAGE || write(mfd, buf, (size_t)n) != n) {
			rc = ctl_fail("message too large");
			goto out;
		}
	}
	char runner[PATH_MAX + 16];
	runner_path(cfg, runner, sizeof(runner));
	struct mxf_worker_def d = {.name = f.name, .runtime = f.runtime, .path = f.path,
				   .script = f.source, .env = (const char *const *)f.env,
				   .nenv = f.nenv, .timeout = (unsigned)f.timeout,
				   .network = f.network};
	struct mxf_worker_limits l = {
		.node = mxf_config_str(cfg, "workerd", "node"), .runner = runner,
		.memory = (uint64_t)mxf_config_int(cfg, "workerd", "memory_limit") << 20,
		.keep_stderr = true};
	struct mxf_wp_envelope env = {.from = from, .to = to, .client_ip = "127.0.0.1",
				      .helo = "localhost", .queue_id = "dryrun", .size = total};
	pid_t pid;
	int out;
	int r = mxf_workerrun_start(&d, &l, &env, mfd, &pid, &out);
	if (r < 0) {
		rc = ctl_fail("cannot start the worker: %s", strerror(-r));
		goto out;
	}
	struct mxf_wp_parser *p = mxf_wp_parser_new();
	char status[300];
	if (!p)
		abort();
	int ok = mxf_workerrun_wait(pid, out, d.timeout, p, status, sizeof(status));
	close(out);
	/* What the router would answer the client. */
	char verdict[400] = "250 2.0.0 accepted";
	for (size_t i = 0; ok == 0 && i < mxf_wp_count(p); i++)
		if (mxf_wp_get(p, i)->action == MXF_WP_REJECT) {
			snprintf(verdict, sizeof(verdict), "550 5.7.1 %s", mxf_wp_get(p, i)->reason);
			break;
		}
	if (ok < 0)
		snprintf(verdict, sizeof(verdict), "451 4.3.0 (the worker failed)");
	/* A reply: workerd's guards, run on the same message (the router's
	 * -- DMARC pass, a sender, the message accepted -- need the real
	 * transaction). */
	char rwhy[200] = "";
	for (size_t i = 0; ok == 0 && i < mxf_wp_count(p); i++) {
		const struct mxf_wp_decision *dd = mxf_wp_get(p, i);
		if (dd->action != MXF_WP_REPLY)
			continue;
		char id[MXF_WR_MSGID_MAX + 1], *head = malloc(65536), *o2 = NULL;
		ssize_t hn = head ? pread(mfd, head, 65536, 0) : -1;
		if (hn < 0 || mxf_wr_msgid(head, (size_t)hn, id, sizeof(id)) < 0)
			snprintf(rwhy, sizeof(rwhy), "the original has no (usable) Message-ID");
		else if (mxf_wr_check(id, dd->raw, strlen(dd->raw), &o2, rwhy, sizeof(rwhy)) < 0 &&
			 !*rwhy)
			snprintf(rwhy, sizeof(rwhy), "out of memory");
		free(o2);
		free(head);
	}
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("worker", f.name);
		cj_str("status", status);
		cj_bool("ok", ok == 0);
		cj_str("verdict", verdict);
		cj_begin("decisions", true);
		for (size_t i = 0; ok == 0 && i < mxf_wp_count(p); i++) {
			const struct mxf_wp_decision *dd = mxf_wp_get(p, i);
			cj_begin(NULL, false);
			cj_str("action", mxf_wp_action_name(dd->action));
			if (dd->action == MXF_WP_FORWARD) {
				cj_str("to", dd->to);
				cj_str("headers", dd->headers);
			}
			if (dd->action == MXF_WP_REJECT)
				cj_str("reason", dd->reason);
			if (dd->action == MXF_WP_REPLY) {
				cj_str("raw", dd->raw);
				cj_str("not_sent", rwhy);
			}
			cj_end(false);
		}
		cj_end(true);
		cj_end(false);
	} else {
		char e1[2048], e2[1024];
		printf("worker %s: %s\n", ctl_safe(e2, sizeof(e2), f.name),
		       ctl_safe(e1, sizeof(e1), status));
		for (size_t i = 0; ok == 0 && i < mxf_wp_count(p); i++) {
			const struct mxf_wp_decision *dd = mxf_wp_get(p, i);
			if (dd->action == MXF_WP_FORWARD) {
				printf("forward %s\n", ctl_safe(e1, sizeof(e1), dd->to));
				for (const char *h = dd->headers; *h;) {
					const char *eol = strstr(h, "\r\n");
					printf("  %.*s\n", (int)(eol - h), h);
					h = eol + 2;
				}
			} else if (dd->action == MXF_WP_REJECT) {
				printf("reject %s\n", ctl_safe(e1, sizeof(e1), dd->reason));
			} else if (dd->action == MXF_WP_REPLY) {
				printf("reply (%zu octets)%s%s\n", strlen(dd->raw),
				       *rwhy ? ": not sent: " : "", ctl_safe(e1, sizeof(e1), rwhy));
			} else {
				printf("drop\n");
			}
		}
		if (ok == 0 && mxf_wp_count(p) == 0)
			printf("drop (no decision)\n");
		printf("verdict: %s\n", ctl_safe(e1, sizeof(e1), verdict));
	}
	mxf_wp_parser_free(p);
	rc = ok == 0 ? CTL_OK : CTL_REFUSED;
out:
	if (mfd >= 0)
		close(mfd);
	free(f.source);
	for (size_t i = 0; i < f.nenv; i++)
		free(f.env[i]);
	return rc;
}

bool ctl_worker_defined(const struct mxf_config *cfg, const char *name)
{
	struct found f = {.name = name};
	struct mxf_rulesdb *db = NULL;
	if (ctl_db_open(cfg, false, &db) != 0)
		return true; /* cannot tell: no warning */
	mxf_rulesdb_worker_list(db, find_cb, &f);
	mxf_rulesdb_close(db);
	free(f.source);
	for (size_t i = 0; i < f.nenv; i++)
		free(f.env[i]);
	return f.ok;
}

int ctl_worker(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[0], "add") == 0)
		return cmd_add(cfg, argc - 1, argv + 1);
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return cmd_list(cfg);
	if (argc == 2 && strcmp(argv[0], "remove") == 0)
		return cmd_remove(cfg, argv[1]);
	if (argc >= 2 && strcmp(argv[0], "test") == 0)
		return cmd_test(cfg, argc - 1, argv + 1);
	return ctl_usage();
}
