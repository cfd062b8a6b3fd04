/* mxferryctl: queue list and status, read straight from the spool. Read
 * only: the router is the spool's single writer; an envelope it moves while
 * we look is simply seen in one state or the other (or missed once). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "ctl.h"
#include "daemon.h"
#include "ipc.h"
#include "envelope.h"
#include "queueid.h"

static const char *const queue_states[] = {"incoming", "active", "deferred", "hold"};
#define NSTATES (sizeof(queue_states) / sizeof(queue_states[0]))

struct item {
	char qid[MXF_QID_SIZE];
	const char *state;
	struct mxf_env *env; /* NULL: unreadable */
	int error;
};

static int cmp_item(const void *a, const void *b)
{
	return strcmp(((const struct item *)a)->qid, ((const struct item *)b)->qid);
}

static int read_state(const char *spool, const char *state, struct item **items, size_t *n,
		      size_t *cap)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", spool, state);
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		if (errno == ENOENT)
			return 0; /* never started: nothing queued */
		return ctl_fail("cannot read %s: %s", path, strerror(errno));
	}
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return ctl_fail("cannot read %s: %s", path, strerror(errno));
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		/* Only queue IDs: temporary names and strays are not messages. */
		if (!mxf_qid_valid(de->d_name))
			continue;
		struct mxf_env *e = NULL;
		int r = mxf_env_read(dirfd(d), de->d_name, &e);
		if (r == -ENOENT)
			continue; /* moved by the router meanwhile */
		if (*n == *cap) {
			*cap = *cap ? 2 * *cap : 64;
			struct item *p = realloc(*items, *cap * sizeof(**items));
			if (!p) {
				mxf_env_free(e);
				closedir(d);
				return ctl_fail("out of memory");
			}
			*items = p;
		}
		struct item *it = &(*items)[(*n)++];
		snprintf(it->qid, sizeof(it->qid), "%s", de->d_name);
		it->state = state;
		it->env = r == 0 ? e : NULL;
		it->error = r;
	}
	closedir(d);
	return 0;
}

static void print_item(const struct item *it)
{
	char when[64], from[1024];
	if (!it->env) {
		printf("%-26s  %-8s  (unreadable envelope: %s)\n", it->qid, it->state,
		       it->error == -EBADMSG ? "malformed" : strerror(-it->error));
		return;
	}
	const struct mxf_env *e = it->env;
	ctl_time(when, sizeof(when), (time_t)e->arrival);
	ctl_safe(from, sizeof(from), e->sender);
	printf("%-26s  %-8s  %10llu  %s  <%s>\n", it->qid, it->state, (unsigned long long)e->size,
	       when, from);
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct mxf_env_rcpt *r = &e->rcpt[i];
		char orig[1024], dest[1024], reply[1024], next[64];
		ctl_safe(orig, sizeof(orig), r->orig);
		ctl_safe(dest, sizeof(dest), r->dest);
		printf("    %s -> %s  %s", orig, dest[0] ? dest : "(none)",
		       mxf_env_status_name(r->status));
		if (r->attempts)
			printf(", %u attempt%s", r->attempts, r->attempts == 1 ? "" : "s");
		if (r->status == MXF_RS_DEFERRED && r->next_try > 0) {
			ctl_time(next, sizeof(next), (time_t)r->next_try);
			printf(", next %s", next);
		}
		putchar('\n');
		if (r->reply && r->reply[0]) {
			char relay[512];
			ctl_safe(reply, sizeof(reply), r->reply);
			ctl_safe(relay, sizeof(relay), r->relay ? r->relay : "");
			printf("        (%s%s%s)\n", reply, relay[0] ? " from " : "", relay);
		}
	}
}

static int queue_list(const struct mxf_config *cfg)
{
	const char *spool = mxf_config_str(cfg, "main", "spool_dir");
	struct item *items = NULL;
	size_t n = 0, cap = 0;
	int rc = CTL_OK;
	for (size_t s = 0; s < NSTATES && rc == CTL_OK; s++)
		rc = read_state(spool, queue_states[s], &items, &n, &cap);
	if (rc == CTL_OK) {
		if (n == 0) {
			puts("Mail queue is empty");
		} else {
			/* Queue IDs sort by arrival. */
			qsort(items, n, sizeof(*items), cmp_item);
			printf("%-26s  %-8s  %10s  %-19s  %s\n", "QUEUE ID", "STATE", "SIZE",
			       "ARRIVAL", "SENDER / RECIPIENTS");
			uint64_t bytes = 0;
			for (size_t i = 0; i < n; i++) {
				print_item(&items[i]);
				bytes += items[i].env ? items[i].env->size : 0;
			}
			printf("-- %llu KiB in %zu message%s\n",
			       (unsigned long long)((bytes + 1023) / 1024), n, n == 1 ? "" : "s");
		}
	}
	for (size_t i = 0; i < n; i++)
		mxf_env_free(items[i].env);
	free(items);
	return rc;
}

/* queue show ID: the envelope in full, read from the spool. */
static int queue_show(const struct mxf_config *cfg, const char *qid)
{
	const char *spool = mxf_config_str(cfg, "main", "spool_dir");
	if (!mxf_qid_valid(qid))
		return ctl_fail("not a queue ID: %s", qid);
	struct item *items = NULL;
	size_t n = 0, cap = 0;
	int rc = CTL_OK;
	for (size_t s = 0; s < NSTATES && rc == CTL_OK; s++)
		rc = read_state(spool, queue_states[s], &items, &n, &cap);
	const struct item *it = NULL;
	for (size_t i = 0; i < n && rc == CTL_OK; i++)
		if (strcmp(items[i].qid, qid) == 0)
			it = &items[i];
	if (rc == CTL_OK && !it)
		rc = ctl_fail("%s is not in the queue", qid);
	if (it && !it->env) {
		printf("%s  %s  (unreadable envelope: %s)\n", it->qid, it->state,
		       it->error == -EBADMSG ? "malformed" : strerror(-it->error));
	} else if (it) {
		const struct mxf_env *e = it->env;
		char b[2048], when[64];
		ctl_time(when, sizeof(when), (time_t)e->arrival);
		printf("queue id:    %s\n", e->qid);
		printf("state:       %s\n", it->state);
		printf("arrival:     %s\n", when);
		printf("size:        %llu\n", (unsigned long long)e->size);
		printf("sender:      <%s>\n", ctl_safe(b, sizeof(b), e->sender));
		printf("srs sender:  <%s>\n", ctl_safe(b, sizeof(b), e->srs_sender));
		printf("client:      %s", ctl_safe(b, sizeof(b), e->client_name));
		printf(" [%s]", ctl_safe(b, sizeof(b), e->client_ip));
		printf(" helo=%s\n", ctl_safe(b, sizeof(b), e->helo));
		printf("origin:      %s\n", ctl_safe(b, sizeof(b), e->origin));
		for (size_t i = 0; i < e->nrcpt; i++) {
			const struct mxf_env_rcpt *r = &e->rcpt[i];
			printf("recipient:   %s", ctl_safe(b, sizeof(b), r->orig));
			printf(" -> %s", *r->dest ? ctl_safe(b, sizeof(b), r->dest) : "(none)");
			printf("  %s  action=%s", mxf_env_status_name(r->status),
			       ctl_safe(b, sizeof(b), r->action));
			printf(" rule=%s attempts=%u", *r->rule ? ctl_safe(b, sizeof(b), r->rule) : "-",
			       r->attempts);
			if (r->status == MXF_RS_DEFERRED && r->next_try > 0) {
				ctl_time(when, sizeof(when), (time_t)r->next_try);
				printf(" next=%s", when);
			}
			putchar('\n');
			if (r->reply && *r->reply)
				printf("             last reply: %s\n", ctl_safe(b, sizeof(b), r->reply));
		}
	}
	for (size_t i = 0; i < n; i++)
		mxf_env_free(items[i].env);
	free(items);
	return rc;
}

/* hold|release|delete|retry|flush: through the router, which owns the spool
 * (ctl never moves a queue file itself). */
static int queue_control(const struct mxf_config *cfg, const char *op, int nq, char **qids)
{
	char path[PATH_MAX];
	for (int i = 0; i < nq; i++)
		if (!mxf_qid_valid(qids[i]))
			return ctl_fail("not a queue ID: %s", qids[i]);
	if (mxf_daemon_router_sock(cfg, path, sizeof(path)) < 0)
		return ctl_fail("spool_dir too long");
	int s = mxf_ipc_connect(path);
	if (s < 0)
		return ctl_fail("cannot reach the router (%s): %s", path, strerror(-s));
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_HELLO);
	struct mxf_ipc_reply *rep = NULL;
	const struct mxf_ipc_view *v;
	uint64_t code = 0, count = 0, req = 0;
	int rc = CTL_OK, r;
	if (!m || mxf_ipc_put_str(m, F_ROLE, "ctl") < 0 ||
	    mxf_ipc_put_u64(m, F_VERSION, MXF_IPC_VERSION) < 0 ||
	    mxf_ipc_put_u64(m, F_PID, (uint64_t)getpid()) < 0) {
		rc = ctl_fail("out of memory");
		goto out;
	}
	if ((r = mxf_ipc_call(s, m, 5000, &rep)) < 0 ||
	    mxf_ipc_type(mxf_ipc_reply_view(rep)) != MXF_MSG_HELLO_OK) {
		rc = ctl_fail("the router refused the connection%s%s", r < 0 ? ": " : "",
			      r < 0 ? strerror(-r) : "");
		goto out;
	}
	mxf_ipc_reply_free(rep);
	rep = NULL;
	mxf_ipc_msg_free(m);
	if (!(m = mxf_ipc_msg_new(MXF_MSG_QUEUE_CTL)) || mxf_ipc_put_u64(m, F_REQ, 1) < 0 ||
	    mxf_ipc_put_str(m, F_TEXT, op) < 0) {
		rc = ctl_fail("out of memory");
		goto out;
	}
	for (int i = 0; i < nq; i++)
		if (mxf_ipc_put_str(m, F_QID, qids[i]) < 0) {
			rc = ctl_fail("too many queue IDs at once");
			goto out;
		}
	if ((r = mxf_ipc_call(s, m, 10000, &rep)) < 0) {
		rc = ctl_fail("no answer from the router: %s", strerror(-r));
		goto out;
	}
	v = mxf_ipc_reply_view(rep);
	if (mxf_ipc_type(v) != MXF_MSG_QUEUE_CTL_REPLY || mxf_ipc_u64(v, F_REQ, 0, &req) < 0 ||
	    req != 1 || mxf_ipc_u64(v, F_CODE, 0, &code) < 0 ||
	    mxf_ipc_u64(v, F_COUNT, 0, &count) < 0) {
		rc = ctl_fail("malformed answer from the router");
		goto out;
	}
	if (code != 250) {
		const char *t = mxf_ipc_str(v, F_TEXT, 0);
		char safe[512];
		rc = ctl_fail("the router refused: %s", ctl_safe(safe, sizeof(safe), t ? t : ""));
		goto out;
	}
	printf("%s: %llu message%s\n", op, (unsigned long long)count, count == 1 ? "" : "s");
	if (nq > 0 && count < (uint64_t)nq)
		rc = ctl_fail("%llu of the %d queue IDs are not in the queue",
			      (unsigned long long)((uint64_t)nq - count), nq);
out:
	mxf_ipc_reply_free(rep);
	mxf_ipc_msg_free(m);
	close(s);
	return rc;
}

int ctl_queue(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return queue_list(cfg);
	if (argc == 2 && strcmp(argv[0], "show") == 0)
		return queue_show(cfg, argv[1]);
	if (argc == 1 && strcmp(argv[0], "flush") == 0)
		return queue_control(cfg, "flush", 0, NULL);
	if (argc >= 2 && (strcmp(argv[0], "hold") == 0 || strcmp(argv[0], "release") == 0 ||
			  strcmp(argv[0], "delete") == 0 || strcmp(argv[0], "retry") == 0))
		return queue_control(cfg, argv[0], argc - 1, argv + 1);
	return ctl_usage();
}

/* ---- status ---- */

static bool alive(pid_t pid)
{
	/* EPERM: it exists, we may just not signal it (not root). */
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

static void duration(char *out, size_t cap, long long s)
{
	if (s < 0)
		s = 0;
	if (s >= 86400)
		snprintf(out, cap, "%lldd %lldh %lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
	else if (s >= 3600)
		snprintf(out, cap, "%lldh %lldm %llds", s / 3600, s % 3600 / 60, s % 60);
	else if (s >= 60)
		snprintf(out, cap, "%lldm %llds", s / 60, s % 60);
	else
		snprintf(out, cap, "%llds", s);
}

/* Entries of spool_dir/state, -1 when unreadable. */
static long count_dir(const char *spool, const char *state)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", spool, state);
	DIR *d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -1;
	long n = 0;
	struct dirent *de;
	bool any = strcmp(state, "corrupt") == 0;
	while ((de = readdir(d)))
		if (any ? de->d_name[0] != '.' : mxf_qid_valid(de->d_name))
			n++;
	closedir(d);
	return n;
}

int ctl_status(const struct mxf_config *cfg, int argc, char **argv)
{
	(void)argv;
	if (argc != 0)
		return ctl_usage();
	const char *spool = mxf_config_str(cfg, "main", "spool_dir");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/pid/status", spool);
	FILE *f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return ctl_fail("mxferryd is not running (no %s)", path);
		return ctl_fail("cannot read %s: %s", path, strerror(errno));
	}
	static const char *const hdr[] = {"DAEMON", "STATE", "PID", "UPTIME", "RESTARTS"};
	struct ctl_table *t = ctl_table_new(5, hdr);
	char line[512];
	bool first = true, master = false;
	time_t now = time(NULL);
	while (fgets(line, sizeof(line), f)) {
		char name[64];
		long pid;
		long long start;
		unsigned restarts;
		if (sscanf(line, "%63s %ld %lld %u", name, &pid, &start, &restarts) != 4)
			continue;
		bool up = alive((pid_t)pid);
		if (first)
			master = up;
		first = false;
		char p[32], u[64], rs[32], safe[256];
		snprintf(p, sizeof(p), "%ld", pid);
		duration(u, sizeof(u), (long long)now - start);
		snprintf(rs, sizeof(rs), "%u", restarts);
		const char *cells[] = {ctl_safe(safe, sizeof(safe), name),
				       up ? "running" : "down", up ? p : "-", up ? u : "-", rs};
		ctl_table_add(t, cells);
	}
	fclose(f);
	if (!master) {
		ctl_table_free(t);
		return ctl_fail("mxferryd is not running");
	}
	ctl_table_print(t);
	ctl_table_free(t);

	static const char *const states[] = {"incoming", "active", "deferred", "hold", "corrupt"};
	printf("\nqueue:");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		long c = count_dir(spool, states[i]);
		if (c < 0)
			printf("%s %s ?", i ? "," : "", states[i]);
		else
			printf("%s %s %ld", i ? "," : "", states[i], c);
	}
	printf("\nlistening: %s\n", mxf_config_str(cfg, "smtpd", "listen"));
	return CTL_OK;
}
