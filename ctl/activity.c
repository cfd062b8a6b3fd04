/* mxferryctl log and stats: activity.db, read-only. The router is its only
 * writer and keeps it in WAL mode, so reading never blocks delivery. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

/* NULL with no message when the router has never written the log yet. */
static int open_activity(const struct mxf_config *cfg, sqlite3 **out)
{
	char path[PATH_MAX];
	*out = NULL;
	if (snprintf(path, sizeof(path), "%s/activity.db", mxf_config_str(cfg, "main", "data_dir")) >=
	    (int)sizeof(path))
		return ctl_fail("data_dir too long");
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	sqlite3 *s = NULL;
	if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) !=
	    SQLITE_OK) {
		int rc = ctl_fail("%s: %s", path, s ? sqlite3_errmsg(s) : "cannot open");
		sqlite3_close(s);
		return rc;
	}
	sqlite3_busy_timeout(s, 5000);
	*out = s;
	return 0;
}

static const char *col(sqlite3_stmt *st, int i)
{
	const unsigned char *s = sqlite3_column_text(st, i);
	return s ? (const char *)s : NULL;
}

/* ---- log ---- */

#define LOG_COLS                                                                                  \
	"id, ts, queue_id, client_ip, helo, mail_from, rcpt, dest, rule, action, spf, dkim, "    \
	"dmarc, status, remote_host, reply, size, arc, auth"
/* Issue 11 (activity schema 4): a refusal's reason keyword, and how many
 * refusals a coalesced row stands for (NULL: one). */
#define LOG_COLS_V5 LOG_COLS ", reason, count, message_id, subject"
#define LOG_COLS_V4 LOG_COLS ", reason, count, NULL, NULL"
#define LOG_COLS_V2 LOG_COLS ", NULL, NULL, NULL, NULL"

/* Whether the log has these columns (a router that has not run since the
 * upgrade has not added them yet). */
static bool has_cols(sqlite3 *s, const char *cols)
{
	char sql[200];
	sqlite3_stmt *st = NULL;
	snprintf(sql, sizeof(sql), "SELECT %s FROM activity LIMIT 0", cols);
	bool ok = sqlite3_prepare_v2(s, sql, -1, &st, NULL) == SQLITE_OK;
	sqlite3_finalize(st);
	return ok;
}

static const char *const statuses[] = {"forwarded",	  "dropped", "rejected", "deferred",
				       "delivery_failed", "bounced", "error"};

static void log_row(sqlite3_stmt *st)
{
	if (ctl_json) {
		char iso[40];
		ctl_iso(iso, sizeof(iso), (time_t)sqlite3_column_int64(st, 1));
		cj_begin(NULL, false);
		cj_int("id", sqlite3_column_int64(st, 0));
		cj_int("ts", sqlite3_column_int64(st, 1));
		cj_str("time", iso);
		static const char *const names[] = {
			NULL,	NULL,  "queue_id", "client_ip", "helo",	 "from",	"rcpt",
			"dest", "rule", "action",   "spf",	"dkim",	 "dmarc",	"status",
			"remote_host", "reply"};
		for (int i = 2; i <= 15; i++)
			cj_str(names[i], col(st, i));
		if (sqlite3_column_type(st, 16) == SQLITE_NULL)
			cj_raw("size", NULL);
		else
			cj_int("size", sqlite3_column_int64(st, 16));
		/* Issue 7: the ARC result and smtpd's whole Authentication-Results. */
		cj_str("arc", col(st, 17));
		cj_str("auth", col(st, 18));
		cj_str("reason", col(st, 19));
		cj_int("count", sqlite3_column_type(st, 20) == SQLITE_NULL
					? 1
					: sqlite3_column_int64(st, 20));
		cj_str("message_id", col(st, 21));
		cj_str("subject", col(st, 22));
		cj_end(false);
		return;
	}
	char when[64], b[6][1024];
	ctl_time(when, sizeof(when), (time_t)sqlite3_column_int64(st, 1));
	const char *qid = col(st, 2), *from = col(st, 5), *dest = col(st, 7);
	const char *reply = col(st, 15), *host = col(st, 14);
	printf("%s  %-26s  %-15s", when, qid ? qid : "-", col(st, 13));
	/* No sender is known for a recipient refused at RCPT (NULL), unlike the
	 * null sender of a bounce (""). */
	if (from)
		printf(" from=<%s>", ctl_safe(b[0], sizeof(b[0]), from));
	printf(" to=<%s>", ctl_safe(b[1], sizeof(b[1]), col(st, 6) ? col(st, 6) : ""));
	if (dest)
		printf(" dest=<%s>", ctl_safe(b[2], sizeof(b[2]), dest));
	printf(" spf=%s dkim=%s dmarc=%s", col(st, 10) ? ctl_safe(b[3], 64, col(st, 10)) : "-",
	       col(st, 11) ? ctl_safe(b[4], 64, col(st, 11)) : "-",
	       col(st, 12) ? ctl_safe(b[5], 64, col(st, 12)) : "-");
	if (col(st, 17))
		printf(" arc=%s", ctl_safe(b[3], 64, col(st, 17)));
	if (col(st, 3))
		printf(" client=[%s]", ctl_safe(b[3], sizeof(b[3]), col(st, 3)));
	if (host)
		printf(" relay=%s", ctl_safe(b[4], sizeof(b[4]), host));
	if (col(st, 19))
		printf(" reason=%s", ctl_safe(b[4], sizeof(b[4]), col(st, 19)));
	if (sqlite3_column_type(st, 20) != SQLITE_NULL)
		printf(" count=%lld", (long long)sqlite3_column_int64(st, 20));
	if (col(st, 22))
		printf(" subject=\"%s\"", ctl_safe(b[4], sizeof(b[4]), col(st, 22)));
	if (reply)
		printf(" (%s)", ctl_safe(b[5], sizeof(b[5]), reply));
	putchar('\n');
}

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int ctl_log(const struct mxf_config *cfg, int argc, char **argv)
{
	time_t since = 0, until = 0;
	const char *status = NULL, *from = NULL, *to = NULL, *qid = NULL;
	long long limit = 100;
	bool follow = false;
	for (int i = 0; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(o, "--follow") == 0 || strcmp(o, "-f") == 0) {
			follow = true;
			continue;
		}
		if (!v || o[0] != '-')
			return ctl_usage();
		i++;
		if (strcmp(o, "--since") == 0) {
			if (ctl_parse_time(v, &since) < 0)
				return ctl_fail("--since: not a time: %s", v);
		} else if (strcmp(o, "--until") == 0) {
			if (ctl_parse_time(v, &until) < 0)
				return ctl_fail("--until: not a time: %s", v);
		} else if (strcmp(o, "--status") == 0) {
			status = v;
			bool ok = false;
			for (size_t k = 0; k < sizeof(statuses) / sizeof(statuses[0]); k++)
				ok = ok || strcmp(v, statuses[k]) == 0;
			if (!ok)
				return ctl_fail("--status: one of forwarded, dropped, rejected, "
						"deferred, delivery_failed, bounced, error");
		} else if (strcmp(o, "--from") == 0) {
			from = v;
		} else if (strcmp(o, "--to") == 0) {
			to = v;
		} else if (strcmp(o, "--id") == 0) {
			qid = v;
		} else if (strcmp(o, "--limit") == 0) {
			char *end;
			limit = strtoll(v, &end, 10);
			if (!*v || *end || limit < 1)
				return ctl_fail("--limit takes a positive number");
		} else {
			return ctl_usage();
		}
	}
	sqlite3 *s;
	if (open_activity(cfg, &s) != 0)
		return CTL_REFUSED;
	if (!s && !follow) {
		if (ctl_json)
			puts("{\"entries\":[]}");
		else
			puts("No activity");
		return CTL_OK;
	}
	/* Filters: substrings for addresses (case-insensitive, LIKE's wildcards
	 * escaped), exact for the rest. The newest "limit" rows, shown oldest first. */
	static const char where[] =
		" WHERE id > ?1 AND ts >= ?2 AND (?3 = 0 OR ts < ?3) AND (?4 IS NULL OR status = ?4)"
		" AND (?5 IS NULL OR mail_from LIKE '%' || ?5 || '%' ESCAPE '\\')"
		" AND (?6 IS NULL OR rcpt LIKE '%' || ?6 || '%' ESCAPE '\\'"
		"      OR dest LIKE '%' || ?6 || '%' ESCAPE '\\')"
		" AND (?7 IS NULL OR queue_id = ?7)";
	char sql_first[1024], sql_next[1024];
	const char *cols = !s || has_cols(s, "message_id, subject") ? LOG_COLS_V5
			   : has_cols(s, "reason, count")	       ? LOG_COLS_V4
								       : LOG_COLS_V2;
	snprintf(sql_first, sizeof(sql_first),
		 "SELECT * FROM (SELECT %s FROM activity%s ORDER BY id DESC LIMIT ?8) "
		 "ORDER BY id",
		 cols, where);
	snprintf(sql_next, sizeof(sql_next), "SELECT %s FROM activity%s ORDER BY id LIMIT 1000",
		 cols, where);
	char like_from[1024], like_to[1024];
	const char *pats[2] = {from, to};
	char *outs[2] = {like_from, like_to};
	for (int k = 0; k < 2; k++) {
		if (!pats[k])
			continue;
		size_t o = 0;
		for (const char *p = pats[k]; *p && o + 2 < sizeof(like_from); p++) {
			if (*p == '%' || *p == '_' || *p == '\\')
				outs[k][o++] = '\\';
			outs[k][o++] = *p;
		}
		outs[k][o] = '\0';
	}
	long long last = 0;
	int rc = CTL_OK;
	bool first = true;
	if (follow) {
		signal(SIGINT, on_signal);
		signal(SIGTERM, on_signal);
		/* Each line goes out as it comes. */
		setvbuf(stdout, NULL, _IOLBF, 0);
	} else if (ctl_json) {
		cj_begin(NULL, false);
		cj_begin("entries", true);
	}
	while (!stop) {
		if (!s) {
			if (open_activity(cfg, &s) != 0)
				return CTL_REFUSED;
			if (!s) {
				usleep(500000);
				continue;
			}
		}
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(s, first ? sql_first : sql_next, -1, &st, NULL) != SQLITE_OK) {
			rc = ctl_fail("activity log: %s", sqlite3_errmsg(s));
			break;
		}
		sqlite3_bind_int64(st, 1, last);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)since);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)until);
		if (status)
			sqlite3_bind_text(st, 4, status, -1, SQLITE_STATIC);
		if (from)
			sqlite3_bind_text(st, 5, like_from, -1, SQLITE_STATIC);
		if (to)
			sqlite3_bind_text(st, 6, like_to, -1, SQLITE_STATIC);
		if (qid)
			sqlite3_bind_text(st, 7, qid, -1, SQLITE_STATIC);
		if (first)
			sqlite3_bind_int64(st, 8, limit);
		int step, n = 0;
		while ((step = sqlite3_step(st)) == SQLITE_ROW) {
			last = sqlite3_column_int64(st, 0);
			n++;
			log_row(st);
		}
		if (step != SQLITE_DONE && step != SQLITE_BUSY)
			rc = ctl_fail("activity log: %s", sqlite3_errmsg(s));
		sqlite3_finalize(st);
		if (rc != CTL_OK)
			break;
		if (first && n == 0 && !follow && !ctl_json)
			puts("No activity");
		first = false;
		if (!follow)
			break;
		fflush(stdout);
		usleep(500000);
	}
	if (!follow && ctl_json) {
		cj_end(true);
		cj_end(false);
	}
	sqlite3_close(s);
	return rc;
}

/* ---- stats ---- */

enum { S_RECEIVED, S_FORWARDED, S_DROPPED, S_REJECTED, S_FAILED, S_BOUNCED, S_DEFERRED, NSTAT };
static const char *const stat_names[NSTAT] = {"received",	  "forwarded", "dropped",
					      "rejected",	  "delivery_failed",
					      "bounced",	  "deferred"};
static const char *const stat_heads[NSTAT] = {"RECEIVED", "FORWARDED", "DROPPED", "REJECTED",
					      "FAILED",   "BOUNCED",   "DEFERRED"};
/* Bar chart: one character per outcome kind (received is the input, not drawn). */
static const char stat_mark[NSTAT] = {0, '#', '-', 'x', '!', 'b', '~'};

struct bucket {
	long long start;
	char label[32];
	long long n[NSTAT];
};

static struct bucket *bucket_get(struct bucket **b, size_t *n, size_t *cap, long long start,
				 const char *label)
{
	for (size_t i = 0; i < *n; i++)
		if ((*b)[i].start == start)
			return &(*b)[i];
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		struct bucket *p = realloc(*b, *cap * sizeof(**b));
		if (!p)
			return NULL;
		*b = p;
	}
	struct bucket *x = &(*b)[(*n)++];
	memset(x, 0, sizeof(*x));
	x->start = start;
	snprintf(x->label, sizeof(x->label), "%s", label ? label : "?");
	return x;
}

static int cmp_bucket(const void *a, const void *b)
{
	long long x = ((const struct bucket *)a)->start, y = ((const struct bucket *)b)->start;
	return x < y ? -1 : x > y;
}

/* stats [--since T] [--by hour|day]: per bucket (local time), the messages
 * received (queue IDs first seen there) and the recipients by outcome. */
int ctl_stats(const struct mxf_config *cfg, int argc, char **argv)
{
	bool by_day = false, have_since = false;
	time_t since = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
			if (ctl_parse_time(argv[++i], &since) < 0)
				return ctl_fail("--since: not a time: %s", argv[i]);
			have_since = true;
		} else if (strcmp(argv[i], "--by") == 0 && i + 1 < argc) {
			i++;
			if (strcmp(argv[i], "day") == 0)
				by_day = true;
			else if (strcmp(argv[i], "hour") != 0)
				return ctl_fail("--by: hour or day");
		} else {
			return ctl_usage();
		}
	}
	if (!have_since)
		since = time(NULL) - (by_day ? 30 * 86400 : 86400);
	const char *fmt = by_day ? "%Y-%m-%d 00:00:00" : "%Y-%m-%d %H:00:00";
	sqlite3 *s;
	if (open_activity(cfg, &s) != 0)
		return CTL_REFUSED;
	struct bucket *b = NULL;
	size_t nb = 0, cap = 0;
	int rc = CTL_OK;
	/* Refusals by reason (issue 11): keyword and count, largest first. */
	struct reason {
		char name[80];
		long long n;
	} reasons[64];
	size_t nreasons = 0;
	if (s) {
		char sql[2][1024];
		bool v3 = has_cols(s, "reason, count");
		/* A coalesced refusal row stands for count refusals. */
		snprintf(sql[0], sizeof(sql[0]),
			 "SELECT CAST(strftime('%%s', k, 'utc') AS INTEGER), k, "
			 "sum(status = 'forwarded'), sum(status = 'dropped'), "
			 "sum(CASE WHEN status = 'rejected' THEN n ELSE 0 END),"
			 " sum(status = 'delivery_failed'), sum(status = 'bounced'),"
			 " sum(status = 'deferred') FROM (SELECT strftime('%s', ts, 'unixepoch', "
			 "'localtime') AS k, status, %s AS n FROM activity WHERE ts >= ?1) GROUP BY k",
			 fmt, v3 ? "coalesce(count, 1)" : "1");
		if (v3) {
			sqlite3_stmt *st = NULL;
			if (sqlite3_prepare_v2(s,
					       "SELECT coalesce(reason, '-'), sum(coalesce(count, 1)) "
					       "FROM activity WHERE status = 'rejected' AND ts >= ?1 "
					       "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 64",
					       -1, &st, NULL) == SQLITE_OK) {
				sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
				while (sqlite3_step(st) == SQLITE_ROW && nreasons < 64) {
					snprintf(reasons[nreasons].name, sizeof(reasons[0].name),
						 "%s", col(st, 0) ? col(st, 0) : "-");
					reasons[nreasons++].n = sqlite3_column_int64(st, 1);
				}
			}
			sqlite3_finalize(st);
		}
		/* A message counts as received in the bucket of its first row. */
		snprintf(sql[1], sizeof(sql[1]),
			 "SELECT CAST(strftime('%%s', k, 'utc') AS INTEGER), k, count(*) FROM "
			 "(SELECT strftime('%s', m, 'unixepoch', 'localtime') AS k FROM "
			 "(SELECT min(ts) AS m FROM activity WHERE queue_id IS NOT NULL "
			 "GROUP BY queue_id HAVING m >= ?1)) GROUP BY k",
			 fmt);
		for (int q = 0; q < 2 && rc == CTL_OK; q++) {
			sqlite3_stmt *st = NULL;
			if (sqlite3_prepare_v2(s, sql[q], -1, &st, NULL) != SQLITE_OK) {
				rc = ctl_fail("activity log: %s", sqlite3_errmsg(s));
				break;
			}
			sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
			int step;
			while ((step = sqlite3_step(st)) == SQLITE_ROW) {
				struct bucket *x = bucket_get(&b, &nb, &cap, sqlite3_column_int64(st, 0),
							      col(st, 1));
				if (!x) {
					rc = ctl_fail("out of memory");
					break;
				}
				if (q == 1)
					x->n[S_RECEIVED] += sqlite3_column_int64(st, 2);
				else
					for (int k = S_FORWARDED; k < NSTAT; k++)
						x->n[k] += sqlite3_column_int64(st, 2 + k - 1);
			}
			if (rc == CTL_OK && step != SQLITE_DONE)
				rc = ctl_fail("activity log: %s", sqlite3_errmsg(s));
			sqlite3_finalize(st);
		}
		sqlite3_close(s);
	}
	if (rc != CTL_OK) {
		free(b);
		return rc;
	}
	if (nb > 0)
		qsort(b, nb, sizeof(*b), cmp_bucket);
	long long tot[NSTAT] = {0};
	for (size_t i = 0; i < nb; i++)
		for (int k = 0; k < NSTAT; k++)
			tot[k] += b[i].n[k];
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("by", by_day ? "day" : "hour");
		cj_int("since", (long long)since);
		cj_begin("buckets", true);
		for (size_t i = 0; i < nb; i++) {
			char iso[40];
			ctl_iso(iso, sizeof(iso), (time_t)b[i].start);
			cj_begin(NULL, false);
			cj_int("start", b[i].start);
			cj_str("time", iso);
			for (int k = 0; k < NSTAT; k++)
				cj_int(stat_names[k], b[i].n[k]);
			cj_end(false);
		}
		cj_end(true);
		cj_begin("total", false);
		for (int k = 0; k < NSTAT; k++)
			cj_int(stat_names[k], tot[k]);
		cj_end(false);
		cj_begin("rejected_by_reason", false);
		for (size_t i = 0; i < nreasons; i++)
			cj_int(reasons[i].name, reasons[i].n);
		cj_end(false);
		cj_end(false);
		free(b);
		return CTL_OK;
	}
	if (nb == 0) {
		puts("No activity in that period");
		free(b);
		return CTL_OK;
	}
	const char *hdr[NSTAT + 1] = {by_day ? "DAY" : "HOUR"};
	for (int k = 0; k < NSTAT; k++)
		hdr[k + 1] = stat_heads[k];
	struct ctl_table *t = ctl_table_new(NSTAT + 1, hdr);
	char cells[NSTAT + 1][40];
	const char *cp[NSTAT + 1];
	for (size_t i = 0; i <= nb; i++) {
		const long long *v = i < nb ? b[i].n : tot;
		snprintf(cells[0], sizeof(cells[0]), "%.*s", by_day ? 10 : 16,
			 i < nb ? b[i].label : "total");
		for (int k = 0; k < NSTAT; k++)
			snprintf(cells[k + 1], sizeof(cells[k + 1]), "%lld", v[k]);
		for (int k = 0; k <= NSTAT; k++)
			cp[k] = cells[k];
		ctl_table_add(t, cp);
	}
	ctl_table_print(t);
	ctl_table_free(t);
	/* The chart: outcomes per bucket, stacked, scaled to 50 columns. */
	long long max = 0;
	for (size_t i = 0; i < nb; i++) {
		long long sum = 0;
		for (int k = S_FORWARDED; k < NSTAT; k++)
			sum += b[i].n[k];
		if (sum > max)
			max = sum;
	}
	putchar('\n');
	for (size_t i = 0; i < nb && max > 0; i++) {
		printf("%.*s |", by_day ? 10 : 16, b[i].label);
		long long sum = 0;
		for (int k = S_FORWARDED; k < NSTAT; k++) {
			long long w = (b[i].n[k] * 50 + max - 1) / max;
			for (long long c = 0; c < w; c++)
				putchar(stat_mark[k]);
			sum += b[i].n[k];
		}
		printf(" %lld\n", sum);
	}
	printf("(# forwarded, - dropped, x rejected, ! delivery failed, b bounced, ~ deferred)\n");
	if (nreasons > 0) {
		static const char *const rh[] = {"REJECTED BY REASON", "COUNT"};
		struct ctl_table *rt = ctl_table_new(2, rh);
		for (size_t i = 0; i < nreasons; i++) {
			char n[32], name[256];
			snprintf(n, sizeof(n), "%lld", reasons[i].n);
			const char *rc2[] = {ctl_safe(name, sizeof(name), reasons[i].name), n};
			ctl_table_add(rt, rc2);
		}
		putchar('\n');
		ctl_table_print(rt);
		ctl_table_free(rt);
	}
	free(b);
	return CTL_OK;
}
