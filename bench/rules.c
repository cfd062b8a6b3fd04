/* Rule-set benchmark (issue 14): N rules (default 100000) in a fresh
 * rules.db, then the time mxf_ruleset_load takes to read and compile them
 * and RCPT lookups per second for several address mixes, with and without
 * an envelope sender. Built by the default build (so an API change breaks
 * the build instead of this file); bench/rules runs a Release build of it.
 *
 *   bench_rules DIR [NRULES [SECONDS_PER_MIX [smoke]]]
 *
 * The data: NDOM domains, subaddressing on in all, a catch-all in the even
 * ones; 1 % of the rules are wildcards ("wI-*@"), 1 % of the literal ones
 * carry a sender matcher (beside a sender-less rule for the same address,
 * so a lookup with a sender meets a sender matcher and folds the sender).
 * Exit status 1 when a target is missed (load >= 1 s, a mix < 1 M/s; the
 * targets apply to a Release build only, "smoke" ignores them: ctest runs
 * a small sanitised one), 2 on an error or a wrong route. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rulesdb.h"

#define NDOM 10
#define NADDR 4096 /* distinct addresses per mix, cycled through */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "bench_rules: %s: %s\n", what, err);
	exit(2);
}

/* Rule i: domain i % NDOM; every 100th a wildcard, every 100th + 50 a
 * literal with a sender matcher (and its sender-less twin i + 1). */
static bool is_wild(int i)
{
	return i % 100 == 0;
}

/* The domain of rule i: wildcards spread over the domains as well (100 in
 * each at 100,000 rules). */
static int wild_dom(int i)
{
	return is_wild(i) ? i / 100 % NDOM : i % NDOM;
}

static int populate(const char *path, int n)
{
	char err[512];
	struct mxf_rulesdb *db;
	if (mxf_rulesdb_open(path, true, &db, err, sizeof(err)) < 0)
		die("open", err);
	if (mxf_rulesdb_address_add(db, "dest@dest.example", true, err, sizeof(err)) < 0)
		die("address", err);
	const char *dests[] = {"dest@dest.example"};
	for (int d = 0; d < NDOM; d++) {
		char dom[64];
		snprintf(dom, sizeof(dom), "bench%d.example", d);
		if (mxf_rulesdb_domain_add(db, dom, err, sizeof(err)) < 0 ||
		    mxf_rulesdb_domain_set(db, dom, "subaddressing", "on", err, sizeof(err)) < 0)
			die("domain", err);
		if (d % 2 == 0) {
			struct mxf_rule_spec s = {.domain = dom, .matcher = "all", .action = "forward",
						  .dests = dests, .ndest = 1};
			if (mxf_rulesdb_catchall_put(db, &s, err, sizeof(err)) < 0)
				die("catch-all", err);
		}
	}
	mxf_rulesdb_close(db);
	/* Bulk insert straight into SQLite (what a big import would do); the
	 * load validates every row as it would any writer's. */
	sqlite3 *s;
	sqlite3_stmt *r, *dst;
	if (sqlite3_open(path, &s) != SQLITE_OK)
		die("sqlite3_open", path);
	sqlite3_exec(s, "BEGIN", NULL, NULL, NULL);
	if (sqlite3_prepare_v2(s,
			       "INSERT INTO rules (tag, domain_id, priority, matcher, match_to, "
			       "match_from, action, created) SELECT ?1, id, ?2, ?3, ?4, ?5, "
			       "'forward', 0 FROM domains WHERE name = ?6",
			       -1, &r, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s, "INSERT INTO rule_dests VALUES (?1, 1)", -1, &dst, NULL) !=
		    SQLITE_OK)
		die("prepare", sqlite3_errmsg(s));
	for (int i = 0; i < n; i++) {
		char tag[33], to[96], dom[64];
		bool wild = is_wild(i), from = i % 100 == 50;
		/* The twin of a sender-matched rule names the same address. */
		int a = i % 100 == 51 ? i - 1 : i;
		snprintf(tag, sizeof(tag), "%032x", i);
		snprintf(dom, sizeof(dom), "bench%d.example", wild_dom(a));
		if (wild)
			snprintf(to, sizeof(to), "w%d-*@%s", i, dom);
		else
			snprintf(to, sizeof(to), "user%d@%s", a, dom);
		sqlite3_bind_text(r, 1, tag, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(r, 2, i % 7);
		sqlite3_bind_text(r, 3, wild ? "wildcard" : "literal", -1, SQLITE_STATIC);
		sqlite3_bind_text(r, 4, to, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(r, 5, from ? "*@vip.example,boss@*.example" : "", -1,
				  SQLITE_STATIC);
		sqlite3_bind_text(r, 6, dom, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(r) != SQLITE_DONE)
			die("insert", sqlite3_errmsg(s));
		sqlite3_reset(r);
		sqlite3_bind_int64(dst, 1, sqlite3_last_insert_rowid(s));
		if (sqlite3_step(dst) != SQLITE_DONE)
			die("insert", sqlite3_errmsg(s));
		sqlite3_reset(dst);
	}
	sqlite3_finalize(r);
	sqlite3_finalize(dst);
	if (sqlite3_exec(s, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		die("commit", sqlite3_errmsg(s));
	sqlite3_close(s);
	return 0;
}

/* The i-th address of a mix (0 <= i < NADDR), over rule numbers < n. */
enum mix { LITERAL, WILDCARD, SUBADDR, CATCHALL, MISS, FOREIGN, NMIX };
static const char *const mix_names[NMIX] = {
	"literal", "wildcard", "subaddress", "catch-all", "miss (no rule)", "not our domain"};
static const enum mxf_route_kind mix_want[NMIX] = {
	MXF_ROUTE_FORWARD, MXF_ROUTE_FORWARD, MXF_ROUTE_FORWARD,
	MXF_ROUTE_FORWARD, MXF_ROUTE_NO_RULE, MXF_ROUTE_NO_DOMAIN};

/* A rule number near k whose address has a literal rule (not a wildcard,
 * the twin's address is that of k - 1). */
static int literal_rule(int k)
{
	if (is_wild(k))
		return k >= 2 ? k - 2 : 2;
	return k % 100 == 51 ? k - 1 : k;
}

static void mix_addr(enum mix m, int i, int n, char *out, size_t len)
{
	/* Spread over the whole rule set (a large prime stride). */
	int k = (int)(((long long)i * 7919) % n);
	switch (m) {
	case LITERAL:
		k = literal_rule(k);
		snprintf(out, len, "User%d@bench%d.example", k, k % NDOM);
		break;
	case WILDCARD:
		k -= k % 100;
		snprintf(out, len, "w%d-list%d@bench%d.example", k, i, wild_dom(k));
		break;
	case SUBADDR:
		k = literal_rule(k);
		snprintf(out, len, "user%d+tag%d@bench%d.example", k, i, k % NDOM);
		break;
	case CATCHALL: /* even domains have one */
		snprintf(out, len, "nobody%d@bench%d.example", i, 2 * (i % (NDOM / 2)));
		break;
	case MISS: /* odd domains have none */
		snprintf(out, len, "nobody%d@bench%d.example", i, 2 * (i % (NDOM / 2)) + 1);
		break;
	default:
		snprintf(out, len, "user%d@elsewhere%d.example", i, i % 50);
		break;
	}
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [NRULES [SECONDS_PER_MIX [smoke]]]\n", argv[0]);
		return 2;
	}
	int n = argc > 2 ? atoi(argv[2]) : 100000;
	double secs = argc > 3 ? atof(argv[3]) : 0.5;
	bool smoke = argc > 4 && strcmp(argv[4], "smoke") == 0;
	if (n < 200 || secs <= 0) {
		fprintf(stderr, "bench_rules: NRULES >= 200 and SECONDS_PER_MIX > 0\n");
		return 2;
	}
	char path[4096], err[512];
	snprintf(path, sizeof(path), "%s/rules.db", argv[1]);
	unlink(path);
	double t0 = now();
	populate(path, n);
	double t1 = now();

	struct mxf_rulesdb *db;
	struct mxf_ruleset *rs;
	if (mxf_rulesdb_open(path, false, &db, err, sizeof(err)) < 0)
		die("open", err);
	double t2 = now();
	if (mxf_ruleset_load(db, &rs, err, sizeof(err)) < 0)
		die("load", err);
	double t3 = now();
	int fail = t3 - t2 >= 1.0;
	printf("rules:            %zu in %d domains (1 %% wildcards, 1 %% with a sender "
	       "matcher; subaddressing on, catch-all in half)\n",
	       mxf_ruleset_count(rs), NDOM);
	printf("insert (bulk):    %.3f s\n", t1 - t0);
	printf("load+compile:     %.3f s%s\n", t3 - t2, t3 - t2 < 1.0 ? "" : "   (target < 1 s)");
	printf("%-18s %14s %14s\n", "RCPT lookups/s", "no sender", "with sender");

	static char addrs[NADDR][128];
	const char *senders[2] = {"", "Someone@Sender.example"};
	for (int m = 0; m < NMIX; m++) {
		for (int i = 0; i < NADDR; i++)
			mix_addr((enum mix)m, i, n, addrs[i], sizeof(addrs[i]));
		double rate[2];
		for (int si = 0; si < 2; si++) {
			struct mxf_route rt;
			long done = 0, bad = 0;
			double s0 = now(), s1;
			/* Batches of NADDR between clock reads. */
			do {
				for (int i = 0; i < NADDR; i++) {
					if (mxf_ruleset_lookup(rs, addrs[i], senders[si], &rt) < 0 ||
					    rt.kind != mix_want[m])
						bad++;
				}
				done += NADDR;
				s1 = now();
			} while (s1 - s0 < secs);
			if (bad) {
				fprintf(stderr, "bench_rules: %s: %ld lookups gave the wrong route\n",
					mix_names[m], bad);
				return 2;
			}
			rate[si] = (double)done / (s1 - s0);
			fail |= rate[si] < 1e6;
		}
		printf("  %-16s %12.2f M %12.2f M\n", mix_names[m], rate[0] / 1e6, rate[1] / 1e6);
	}
	mxf_ruleset_free(rs);
	mxf_rulesdb_close(db);
	printf("%s\n", fail ? "FAIL: a target (load < 1 s, lookups >= 1 M/s) is missed"
			    : "PASS: load < 1 s, every mix >= 1 M lookups/s");
	return fail && !smoke;
}
