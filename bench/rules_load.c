/* Rule-set load benchmark: N rules (default 100000) in rules.db, then the
 * time mxf_ruleset_load takes to compile them and the cost of a lookup.
 * Run through bench/rules_load.sh. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rulesdb.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [NRULES]\n", argv[0]);
		return 2;
	}
	int n = argc > 2 ? atoi(argv[2]) : 100000;
	char path[4096], err[512];
	snprintf(path, sizeof(path), "%s/rules.db", argv[1]);
	unlink(path);
	struct mxf_rulesdb *db;
	if (mxf_rulesdb_open(path, true, &db, err, sizeof(err)) < 0 ||
	    mxf_rulesdb_domain_add(db, "bench.example", err, sizeof(err)) < 0 ||
	    mxf_rulesdb_address_add(db, "dest@dest.example", true, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	mxf_rulesdb_close(db);
	/* Bulk insert straight into SQLite (what a big import would do); the
	 * load validates every row as it would any writer's. */
	sqlite3 *s;
	sqlite3_stmt *r, *d;
	double t0 = now();
	sqlite3_open(path, &s);
	sqlite3_exec(s, "BEGIN", NULL, NULL, NULL);
	sqlite3_prepare_v2(s,
			   "INSERT INTO rules (tag, domain_id, priority, matcher, match_to, action, "
			   "created) VALUES (?1, 1, ?2, ?3, ?4, 'forward', 0)",
			   -1, &r, NULL);
	sqlite3_prepare_v2(s, "INSERT INTO rule_dests VALUES (?1, 1)", -1, &d, NULL);
	for (int i = 0; i < n; i++) {
		char tag[33], to[64];
		snprintf(tag, sizeof(tag), "%032x", i);
		bool wild = i % 100 == 0; /* 1 % wildcards */
		snprintf(to, sizeof(to), wild ? "w%d-*@bench.example" : "user%d@bench.example", i);
		sqlite3_bind_text(r, 1, tag, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(r, 2, i % 7);
		sqlite3_bind_text(r, 3, wild ? "wildcard" : "literal", -1, SQLITE_STATIC);
		sqlite3_bind_text(r, 4, to, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(r) != SQLITE_DONE) {
			fprintf(stderr, "insert: %s\n", sqlite3_errmsg(s));
			return 1;
		}
		sqlite3_reset(r);
		sqlite3_bind_int64(d, 1, sqlite3_last_insert_rowid(s));
		sqlite3_step(d);
		sqlite3_reset(d);
	}
	sqlite3_finalize(r);
	sqlite3_finalize(d);
	sqlite3_exec(s, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(s);
	double t1 = now();

	if (mxf_rulesdb_open(path, false, &db, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	struct mxf_ruleset *rs;
	double t2 = now();
	if (mxf_ruleset_load(db, &rs, err, sizeof(err)) < 0) {
		fprintf(stderr, "load: %s\n", err);
		return 1;
	}
	double t3 = now();
	int hits = 0, lookups = 200000;
	struct mxf_route rt;
	for (int i = 0; i < lookups; i++) {
		char a[64];
		snprintf(a, sizeof(a), "user%d@bench.example", (i * 7919) % (n * 2));
		mxf_ruleset_lookup(rs, a, &rt);
		hits += rt.kind == MXF_ROUTE_FORWARD;
	}
	double t4 = now();
	printf("rules:          %zu (%d%% wildcards)\n", mxf_ruleset_count(rs), 1);
	printf("insert (bulk):  %.3f s\n", t1 - t0);
	printf("load+compile:   %.3f s\n", t3 - t2);
	printf("lookup:         %.2f us each (%d lookups, %d matched)\n",
	       (t4 - t3) * 1e6 / lookups, lookups, hits);
	mxf_ruleset_free(rs);
	mxf_rulesdb_close(db);
	return t3 - t2 < 1.0 ? 0 : 1;
}
