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

static void json_item_inner(const struct item *it, bool full, const char *body);

/* One message as JSON; full adds what queue show prints. */
static void json_item(const struct item *it, bool full)
{
	json_item_inner(it, full, NULL);
}

static void json_item_inner(const struct item *it, bool full, const char *body)
{
	cj_begin(NULL, false);
	cj_str("queue_id", it->qid);
	cj_str("state", it->state);
	if (!it->env) {
		cj_str("error", it->error == -EBADMSG ? "malformed" : strerror(-it->error));
		cj_end(false);
		return;
	}
	const struct mxf_env *e = it->env;
	cj_int("size", (long long)e->size);
	cj_int("arrival", (long long)e->arrival);
	cj_str("sender", e->sender);
	if (full) {
		cj_str("srs_sender", e->srs_sender);
		cj_str("client_name", e->client_name);
		cj_str("client_ip", e->client_ip);
		cj_str("helo", e->helo);
		cj_str("origin", e->origin);
	}
	cj_begin("recipients", true);
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct mxf_env_rcpt *r = &e->rcpt[i];
		cj_begin(NULL, false);
		cj_str("orig", r->orig);
		cj_str("dest", r->dest);
		cj_str("status", mxf_env_status_name(r->status));
		cj_int("attempts", r->attempts);
		cj_int("next_try", (long long)r->next_try);
		cj_str("reply", r->reply ? r->reply : "");
		cj_str("relay", r->relay ? r->relay : "");
		if (full) {
			cj_str("action", r->action);
			cj_str("rule", r->rule);
		}
		cj_end(false);
	}
	cj_end(true);
	if (body)
		cj_str("body", body);
	cj_end(false);
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

/* queue list filters; NULL / 0: any. */
struct qfilter {
	const char *state, *from, *to;
	long long older_than; /* seconds */
};

/* ASCII case-insensitive substring (addresses: the domain is case-less). */
static bool has_sub(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (const char *p = hay ? hay : ""; *p; p++)
		if (strncasecmp(p, needle, n) == 0)
			return true;
	return n == 0;
}

static bool matches(const struct item *it, const struct qfilter *f, time_t now)
{
	if (f->state && strcmp(it->state, f->state) != 0)
		return false;
	if (!it->env)
		return !f->from && !f->to && !f->older_than;
	const struct mxf_env *e = it->env;
	if (f->from && !has_sub(e->sender, f->from))
		return false;
	if (f->older_than && (long long)e->arrival > (long long)now - f->older_than)
		return false;
	if (f->to) {
		bool any = false;
		for (size_t i = 0; i < e->nrcpt && !any; i++)
			any = has_sub(e->rcpt[i].orig, f->to) || has_sub(e->rcpt[i].dest, f->to);
		if (!any)
			return false;
	}
	return true;
}

/* Reads every state; then keeps those f matches (f NULL: all). */
static int read_all(const struct mxf_config *cfg, const struct qfilter *f, struct item **items,
		    size_t *n)
{
	const char *spool = mxf_config_str(cfg, "main", "spool_dir");
	size_t cap = 0;
	int rc = CTL_OK;
	*items = NULL;
	*n = 0;
	for (size_t s = 0; s < NSTATES && rc == CTL_OK; s++)
		rc = read_state(spool, queue_states[s], items, n, &cap);
	if (rc == CTL_OK && f) {
		time_t now = time(NULL);
		size_t k = 0;
		for (size_t i = 0; i < *n; i++) {
			if (matches(&(*items)[i], f, now))
				(*items)[k++] = (*items)[i];
			else
				mxf_env_free((*items)[i].env);
		}
		*n = k;
	}
	return rc;
}

static int queue_list(const struct mxf_config *cfg, int argc, char **argv)
{
	struct qfilter f = {0};
	for (int i = 0; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			return ctl_usage();
		i++;
		if (strcmp(o, "--state") == 0) {
			bool ok = false;
			for (size_t k = 0; k < NSTATES; k++)
				ok = ok || strcmp(v, queue_states[k]) == 0;
			if (!ok)
				return ctl_fail("--state: incoming, active, deferred or hold");
			f.state = v;
		} else if (strcmp(o, "--from") == 0) {
			f.from = v;
		} else if (strcmp(o, "--to") == 0) {
			f.to = v;
		} else if (strcmp(o, "--older-than") == 0) {
			if (ctl_parse_duration(v, &f.older_than) < 0)
				return ctl_fail("--older-than: a duration such as 30m, 2h or 1d");
		} else {
			return ctl_usage();
		}
	}
	struct item *items = NULL;
	size_t n = 0;
	int rc = read_all(cfg, &f, &items, &n);
	if (rc == CTL_OK && ctl_json) {
		if (n > 0)
			qsort(items, n, sizeof(*items), cmp_item);
		cj_begin(NULL, false);
		cj_begin("messages", true);
		for (size_t i = 0; i < n; i++)
			json_item(&items[i], false);
		cj_end(true);
		cj_end(false);
	} else if (rc == CTL_OK) {
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
/* The message content, msg/QID, into a malloc'd buffer (at most 64 MiB). */
static int read_content(const struct mxf_config *cfg, const char *qid, char **out, size_t *len)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/msg/%s", mxf_config_str(cfg, "main", "spool_dir"), qid);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return ctl_fail("cannot read %s: %s", path, strerror(errno));
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);
	while (buf) {
		if (n == cap) {
			if (cap >= 64u << 20) {
				free(buf);
				close(fd);
				return ctl_fail("%s: larger than 64 MiB", path);
			}
			char *p = realloc(buf, cap *= 2);
			if (!p) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = p;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			close(fd);
			return ctl_fail("cannot read %s: %s", path, strerror(e));
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (!buf)
		return ctl_fail("out of memory");
	*out = buf;
	*len = n;
	return 0;
}

/* Reads the queue and finds qid in it (*it NULL when absent). */
static int read_one(const struct mxf_config *cfg, const char *qid, struct item **items, size_t *n,
		    const struct item **it)
{
	int rc = read_all(cfg, NULL, items, n);
	*it = NULL;
	for (size_t i = 0; i < *n && rc == CTL_OK; i++)
		if (strcmp((*items)[i].qid, qid) == 0)
			*it = &(*items)[i];
	return rc;
}

static int queue_show(const struct mxf_config *cfg, const char *qid, bool body)
{
	if (!mxf_qid_valid(qid))
		return ctl_fail("not a queue ID: %s", qid);
	struct item *items = NULL;
	size_t n = 0;
	const struct item *it = NULL;
	int rc = read_one(cfg, qid, &items, &n, &it);
	if (rc == CTL_OK && !it)
		rc = ctl_fail("%s is not in the queue", qid);
	char *content = NULL;
	size_t clen = 0;
	if (it && body && read_content(cfg, qid, &content, &clen) != 0)
		rc = CTL_REFUSED, it = NULL;
	if (it && ctl_json) {
		if (body) {
			/* The body as text (JSON strings are Unicode: other bytes
			 * become U+FFFD; queue export gives them exactly). */
			char *z = realloc(content, clen + 1);
			if (z) {
				content = z;
				content[clen] = '\0';
			}
		}
		json_item_inner(it, true, body && content ? content : NULL);
	} else if (it && !it->env) {
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
		if (body && content) {
			/* For a terminal: controls escaped line by line. */
			printf("\n");
			size_t o = 0;
			while (o < clen) {
				size_t l = 0;
				while (o + l < clen && content[o + l] != '\n')
					l++;
				char line[1024], safe[4200];
				size_t take = l < sizeof(line) - 1 ? l : sizeof(line) - 1;
				memcpy(line, content + o, take);
				line[take] = '\0';
				if (take && line[take - 1] == '\r')
					line[take - 1] = '\0';
				for (size_t k = 0; k < take; k++)
					if (line[k] == '\0')
						line[k] = ' ';
				printf("%s%s\n", ctl_safe(safe, sizeof(safe), line),
				       take < l ? " [...]" : "");
				o += l + 1;
			}
		}
	}
	free(content);
	for (size_t i = 0; i < n; i++)
		mxf_env_free(items[i].env);
	free(items);
	return rc;
}

/* hold|release|delete|retry|flush: through the router, which owns the spool
 * (ctl never moves a queue file itself). */
static int queue_control_n(const struct mxf_config *cfg, const char *op, int nq, char **qids,
			   unsigned long long *countp)
{
	char why[600];
	uint64_t count = 0;
	for (int i = 0; i < nq; i++)
		if (!mxf_qid_valid(qids[i]))
			return ctl_fail("not a queue ID: %s", qids[i]);
	if (mxf_routerctl_queue(cfg, op, (const char *const *)qids, (size_t)nq, 0, &count, NULL,
				why, sizeof(why)) < 0)
		return ctl_fail("%s", why);
	*countp = count;
	return CTL_OK;
}

static int queue_control(const struct mxf_config *cfg, const char *op, int nq, char **qids)
{
	unsigned long long count = 0;
	int rc = queue_control_n(cfg, op, nq, qids, &count);
	if (rc != CTL_OK)
		return rc;
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("operation", op);
		cj_int("count", (long long)count);
		cj_int("requested", nq);
		cj_end(false);
	} else {
		printf("%s: %llu message%s\n", op, count, count == 1 ? "" : "s");
	}
	if (nq > 0 && count < (unsigned long long)nq)
		rc = ctl_fail("%llu of the %d queue IDs are not in the queue",
			      (unsigned long long)nq - count, nq);
	return rc;
}

/* queue export ID: the message as it would be delivered, the prepended
 * header block (Received) and the content, byte for byte, for resending
 * elsewhere. */
static int queue_export(const struct mxf_config *cfg, const char *qid)
{
	if (!mxf_qid_valid(qid))
		return ctl_fail("not a queue ID: %s", qid);
	struct item *items = NULL;
	size_t n = 0;
	const struct item *it = NULL;
	int rc = read_one(cfg, qid, &items, &n, &it);
	char *content = NULL;
	size_t clen = 0;
	if (rc == CTL_OK && !it)
		rc = ctl_fail("%s is not in the queue", qid);
	else if (rc == CTL_OK && !it->env)
		rc = ctl_fail("%s: unreadable envelope", qid);
	else if (rc == CTL_OK && read_content(cfg, qid, &content, &clen) != 0)
		rc = CTL_REFUSED;
	if (rc == CTL_OK) {
		const char *h = it->env->headers ? it->env->headers : "";
		if (fwrite(h, 1, strlen(h), stdout) != strlen(h) ||
		    fwrite(content, 1, clen, stdout) != clen)
			rc = ctl_fail("cannot write the output");
	}
	free(content);
	for (size_t i = 0; i < n; i++)
		mxf_env_free(items[i].env);
	free(items);
	return rc;
}

/* queue hold|release|delete|retry --all: every queued message, in batches
 * that fit one IPC message. */
static int queue_all(const struct mxf_config *cfg, const char *op)
{
	struct item *items = NULL;
	size_t n = 0;
	int rc = read_all(cfg, NULL, &items, &n);
	unsigned long long total = 0;
	enum { BATCH = 1000 }; /* 1000 IDs of 26 bytes and framing: under MXF_IPC_MAX */
	char *ids[BATCH];
	for (size_t i = 0; i < n && rc == CTL_OK; i += BATCH) {
		int k = 0;
		for (size_t j = i; j < n && k < BATCH; j++)
			ids[k++] = items[j].qid;
		unsigned long long c = 0;
		rc = queue_control_n(cfg, op, k, ids, &c);
		total += c;
	}
	if (rc == CTL_OK) {
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("operation", op);
			cj_int("count", (long long)total);
			cj_int("requested", (long long)n);
			cj_end(false);
		} else {
			printf("%s: %llu message%s\n", op, total, total == 1 ? "" : "s");
		}
	}
	for (size_t i = 0; i < n; i++)
		mxf_env_free(items[i].env);
	free(items);
	return rc;
}

int ctl_queue(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "list") == 0)
		return queue_list(cfg, argc - 1, argv + 1);
	if (argc == 2 && strcmp(argv[0], "show") == 0)
		return queue_show(cfg, argv[1], false);
	if (argc == 3 && strcmp(argv[0], "show") == 0 && strcmp(argv[2], "--body") == 0)
		return queue_show(cfg, argv[1], true);
	if (argc == 3 && strcmp(argv[0], "show") == 0 && strcmp(argv[1], "--body") == 0)
		return queue_show(cfg, argv[2], true);
	if (argc == 2 && strcmp(argv[0], "export") == 0)
		return queue_export(cfg, argv[1]);
	if (argc == 2 && strcmp(argv[1], "--all") == 0 &&
	    (strcmp(argv[0], "hold") == 0 || strcmp(argv[0], "release") == 0 ||
	     strcmp(argv[0], "delete") == 0 || strcmp(argv[0], "retry") == 0))
		return queue_all(cfg, argv[0]);
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
	/* JSON: the daemons are gathered first (the master's state decides
	 * whether there is anything to print). */
	struct {
		char name[64];
		long pid;
		long long start;
		unsigned restarts;
		bool up;
	} dm[32];
	size_t ndm = 0;
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
		if (ndm < sizeof(dm) / sizeof(dm[0])) {
			snprintf(dm[ndm].name, sizeof(dm[ndm].name), "%s", name);
			dm[ndm].pid = pid;
			dm[ndm].start = start;
			dm[ndm].restarts = restarts;
			dm[ndm].up = up;
			ndm++;
		}
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
	static const char *const states[] = {"incoming", "active", "deferred", "hold", "corrupt"};
	if (ctl_json) {
		ctl_table_free(t);
		cj_begin(NULL, false);
		cj_begin("daemons", true);
		for (size_t i = 0; i < ndm; i++) {
			cj_begin(NULL, false);
			cj_str("name", dm[i].name);
			cj_str("state", dm[i].up ? "running" : "down");
			cj_int("pid", dm[i].up ? dm[i].pid : 0);
			cj_int("started", dm[i].start);
			cj_int("uptime", dm[i].up ? (long long)now - dm[i].start : 0);
			cj_int("restarts", dm[i].restarts);
			cj_end(false);
		}
		cj_end(true);
		cj_begin("queue", false);
		for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
			cj_int(states[i], count_dir(spool, states[i]));
		cj_end(false);
		cj_str("listen", mxf_config_str(cfg, "smtpd", "listen"));
		cj_end(false);
		return CTL_OK;
	}
	ctl_table_print(t);
	ctl_table_free(t);

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
