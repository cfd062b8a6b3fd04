#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "rulesdb.h"

struct fx {
	char dir[64];
	char path[128];
	struct mxf_rulesdb *db;
};

static char err[256];

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/mxf-rulesdb-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/rules.db", f->dir);
	assert_int_equal(mxf_rulesdb_open(f->path, true, &f->db, err, sizeof(err)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	mxf_rulesdb_close(f->db);
	char p[160];
	const char *sfx[] = {"", "-journal", "-wal", "-shm"};
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static int user_version(const char *path)
{
	sqlite3 *s;
	sqlite3_stmt *st;
	int v = -1;
	assert_int_equal(sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(s, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(s);
	return v;
}

static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *s;
	assert_int_equal(sqlite3_open_v2(path, &s, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(s, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(s);
}

/* Common fixture content: example.com, two verified and one unverified
 * destination. */
static void populate(struct mxf_rulesdb *db)
{
	assert_int_equal(mxf_rulesdb_domain_add(db, "example.com", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_address_add(db, "dest@dest.test", true, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_address_add(db, "two@dest.test", true, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_address_add(db, "unv@dest.test", false, err, sizeof(err)), 0);
}

static void test_migrations(void **state)
{
	struct fx *f = *state;
	struct stat sb;
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0660);
	int v = user_version(f->path);
	assert_true(v >= 1);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "example.com", err, sizeof(err)), 0);
	mxf_rulesdb_close(f->db);

	/* Reopening (writable and read-only) keeps the version and the data. */
	assert_int_equal(mxf_rulesdb_open(f->path, true, &f->db, err, sizeof(err)), 0);
	assert_int_equal(user_version(f->path), v);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "example.com", err, sizeof(err)), -EEXIST);
	mxf_rulesdb_close(f->db);
	assert_int_equal(mxf_rulesdb_open(f->path, false, &f->db, err, sizeof(err)), 0);
	/* A read-only handle refuses writes. */
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "other.com", err, sizeof(err)), -EROFS);
	mxf_rulesdb_close(f->db);
	f->db = NULL;

	/* A newer schema is refused, writable or not. */
	raw_exec(f->path, "PRAGMA user_version = 999");
	assert_int_equal(mxf_rulesdb_open(f->path, true, &f->db, err, sizeof(err)),
			 -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "newer"));
	assert_null(f->db);
	assert_int_equal(mxf_rulesdb_open(f->path, false, &f->db, err, sizeof(err)),
			 -EPROTONOSUPPORT);
	assert_int_equal(user_version(f->path), 999);
}

static void test_open_errors(void **state)
{
	struct fx *f = *state;
	struct mxf_rulesdb *db = NULL;
	char p[160];
	/* Read-only open of a missing file. */
	snprintf(p, sizeof(p), "%s/missing.db", f->dir);
	assert_true(mxf_rulesdb_open(p, false, &db, err, sizeof(err)) < 0);
	assert_null(db);
	/* Read-only open of an empty (never migrated) file: stale schema. */
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(mxf_rulesdb_open(p, false, &db, err, sizeof(err)), -ESTALE);
	unlink(p);
	/* Not a database. */
	fp = fopen(p, "w");
	assert_non_null(fp);
	fputs("this is not an sqlite database, not at all, really not one.....\n", fp);
	fputs("padding padding padding padding padding padding padding padding\n", fp);
	fclose(fp);
	assert_true(mxf_rulesdb_open(p, true, &db, err, sizeof(err)) < 0);
	assert_null(db);
	unlink(p);
	/* A symlink is never followed. */
	assert_int_equal(symlink(f->path, p), 0);
	assert_true(mxf_rulesdb_open(p, true, &db, err, sizeof(err)) < 0);
	assert_null(db);
	unlink(p);
}

static void test_domain_validation(void **state)
{
	struct fx *f = *state;
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "Example.COM", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "example.com", err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "already exists"));
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "bad..domain", err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "-bad.com", err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "a b.com", err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "", err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "x'); DROP TABLE domains;--", err,
						 sizeof(err)),
			 -EINVAL);
	/* U-label stored as A-label; the A-label form is then a duplicate. */
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "bücher.example", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "xn--bcher-kva.example", err, sizeof(err)),
			 -EEXIST);
	mxf_rulesdb_close(f->db);
	f->db = NULL;
	sqlite3 *s;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open_v2(f->path, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(s, "SELECT name FROM domains ORDER BY name", -1, &st,
					    NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "example.com");
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "xn--bcher-kva.example");
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(s);
}

static void test_address_validation(void **state)
{
	struct fx *f = *state;
	assert_int_equal(mxf_rulesdb_address_add(f->db, "a@B.Example", true, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_address_add(f->db, "a@b.example", false, err, sizeof(err)),
			 -EEXIST);
	/* One mailbox is not registered twice under two spellings. */
	assert_int_equal(mxf_rulesdb_address_add(f->db, "A@b.example", false, err, sizeof(err)),
			 -EEXIST);
	assert_int_equal(mxf_rulesdb_address_add(f->db, "noat", true, err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_rulesdb_address_add(f->db, "a@", true, err, sizeof(err)), -EINVAL);
	assert_int_equal(mxf_rulesdb_address_add(f->db, "a b@c.example", true, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_address_add(f->db, "x@bücher.example", true, err, sizeof(err)),
			 0);
	const char *d[] = {"x@xn--bcher-kva.example"};
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "example.com", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "u@example.com", "forward", d,
					      1, NULL, err, sizeof(err)),
			 0);
}

struct collect {
	int n;
	char lines[16][400];
};

static int collect_cb(const struct mxf_rule_info *r, void *arg)
{
	struct collect *c = arg;
	if (c->n < 16)
		snprintf(c->lines[c->n], sizeof(c->lines[0]), "%s %s %s %s %s %d", r->domain,
			 r->matcher, r->to, r->action, r->dests, r->enabled);
	c->n++;
	return 0;
}

static void test_rule_validation(void **state)
{
	struct fx *f = *state;
	char tag[33];
	populate(f->db);
	const char *one[] = {"dest@dest.test"};
	const char *unv[] = {"dest@dest.test", "unv@dest.test"};
	const char *unknown[] = {"nobody@dest.test"};
	const char *bad[] = {"not an address"};

	/* Unknown domain. */
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "other.com", "a@other.com", "forward", one, 1,
					      tag, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "other.com"));
	/* --to outside the rule's domain. */
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@other.com", "forward", one,
					      1, tag, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@sub.example.com", "forward",
					      one, 1, tag, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "bad address", "forward", one,
					      1, tag, err, sizeof(err)),
			 -EINVAL);
	/* Unknown action. */
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "reject", one,
					      1, tag, err, sizeof(err)),
			 -EINVAL);
	/* Forward: 1..25 destinations, known, verified. */
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "forward", one,
					      0, tag, err, sizeof(err)),
			 -EINVAL);
	const char *many[26];
	for (int i = 0; i < 26; i++)
		many[i] = "dest@dest.test";
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "forward",
					      many, 26, tag, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "forward",
					      unknown, 1, tag, err, sizeof(err)),
			 -ENOENT);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "forward", bad,
					      1, tag, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "forward", unv,
					      2, tag, err, sizeof(err)),
			 -EPERM);
	assert_string_equal(err, "destination unv@dest.test is not verified");
	/* Drop takes none. */
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "drop", one, 1,
					      tag, err, sizeof(err)),
			 -EINVAL);
	/* Nothing of the refused attempts was stored. */
	struct collect c = {0};
	assert_int_equal(mxf_rulesdb_rule_list(f->db, collect_cb, &c), 0);
	assert_int_equal(c.n, 0);

	/* 25 destinations (repeats kept once) is fine. */
	memset(tag, 0, sizeof(tag));
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "EXAMPLE.com", "a@Example.com", "forward",
					      many, 25, tag, err, sizeof(err)),
			 0);
	assert_int_equal(strlen(tag), 32);
	assert_int_equal(strspn(tag, "0123456789abcdef"), 32);
	/* Duplicate literal, also with another case in the local part. */
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "drop", NULL,
					      0, tag, err, sizeof(err)),
			 -EEXIST);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "A@example.com", "drop", NULL,
					      0, tag, err, sizeof(err)),
			 -EEXIST);
	char tag2[33];
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "b@example.com", "drop", NULL,
					      0, tag2, err, sizeof(err)),
			 0);
	assert_string_not_equal(tag, tag2);

	/* Catch-all: the same destination checks. */
	assert_int_equal(mxf_rulesdb_catchall_set(f->db, "example.com", "forward", unv, 2, err,
						  sizeof(err)),
			 -EPERM);
	assert_int_equal(mxf_rulesdb_catchall_set(f->db, "nope.com", "drop", NULL, 0, err,
						  sizeof(err)),
			 -ENOENT);
	assert_int_equal(mxf_rulesdb_catchall_set(f->db, "example.com", "drop", one, 1, err,
						  sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_catchall_set(f->db, "example.com", "forward", NULL, 0, err,
						  sizeof(err)),
			 -EINVAL);
}

static void test_list_and_catchall_replace(void **state)
{
	struct fx *f = *state;
	populate(f->db);
	const char *two[] = {"two@dest.test", "dest@dest.test"};
	char tag[33];
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "x@example.com", "forward", two,
					      2, tag, err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_catchall_set(f->db, "example.com", "drop", NULL, 0, err,
						  sizeof(err)),
			 0);
	struct collect c = {0};
	assert_int_equal(mxf_rulesdb_rule_list(f->db, collect_cb, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.lines[0],
			    "example.com literal x@example.com forward dest@dest.test,two@dest.test 1");
	assert_string_equal(c.lines[1], "example.com all  drop  1");
	/* catchall set replaces the one catch-all. */
	const char *one[] = {"two@dest.test"};
	assert_int_equal(mxf_rulesdb_catchall_set(f->db, "example.com", "forward", one, 1, err,
						  sizeof(err)),
			 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(mxf_rulesdb_rule_list(f->db, collect_cb, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.lines[1], "example.com all  forward two@dest.test 1");
}

static void test_lookup(void **state)
{
	struct fx *f = *state;
	populate(f->db);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "bücher.example", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "nocatch.example", err, sizeof(err)), 0);
	const char *two[] = {"dest@dest.test", "two@dest.test"};
	char t_fwd[33], t_drop[33], t_idn[33];
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "Info@example.com", "forward",
					      two, 2, t_fwd, err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "spam@example.com", "drop", NULL,
					      0, t_drop, err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "bücher.example", "a@bücher.example",
					      "forward", two, 1, t_idn, err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_catchall_set(f->db, "example.com", "forward", two + 1, 1, err,
						  sizeof(err)),
			 0);

	struct mxf_ruleset *rs;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_count(rs), 4);
	struct mxf_route rt;

	/* Literal, local part case-insensitive. */
	const char *forms[] = {"info@example.com", "INFO@example.com", "Info@example.com"};
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(mxf_ruleset_lookup(rs, forms[i], "", &rt), 0);
		assert_int_equal(rt.kind, MXF_ROUTE_FORWARD);
		assert_string_equal(rt.tag, t_fwd);
		assert_int_equal(rt.ndest, 2);
		assert_string_equal(rt.dests[0], "dest@dest.test");
		assert_string_equal(rt.dests[1], "two@dest.test");
	}
	/* Drop. */
	assert_int_equal(mxf_ruleset_lookup(rs, "spam@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_DROP);
	assert_string_equal(rt.tag, t_drop);
	assert_int_equal(rt.ndest, 0);
	/* Catch-all. */
	assert_int_equal(mxf_ruleset_lookup(rs, "whoever@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_FORWARD);
	assert_int_equal(rt.ndest, 1);
	assert_string_equal(rt.dests[0], "two@dest.test");
	assert_int_equal(strlen(rt.tag), 32);
	/* Not a prefix/suffix match. */
	assert_int_equal(mxf_ruleset_lookup(rs, "info@example.com.evil", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_DOMAIN);
	/* IDN domain by its A-label. */
	assert_int_equal(mxf_ruleset_lookup(rs, "a@xn--bcher-kva.example", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_FORWARD);
	assert_string_equal(rt.tag, t_idn);
	assert_int_equal(rt.ndest, 1);
	assert_int_equal(mxf_ruleset_lookup(rs, "b@xn--bcher-kva.example", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_RULE);
	assert_string_equal(rt.tag, "");
	/* Ours without rules nor catch-all; not ours. */
	assert_int_equal(mxf_ruleset_lookup(rs, "x@nocatch.example", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_RULE);
	assert_int_equal(mxf_ruleset_lookup(rs, "x@dest.test", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_DOMAIN);
	assert_int_equal(mxf_ruleset_lookup(rs, "x@example.org", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_DOMAIN);
	assert_int_equal(mxf_ruleset_lookup(rs, "no-at-sign", "", &rt), -EINVAL);
	mxf_ruleset_free(rs);

	/* Revoked verification: the destination stays in the route, flagged
	 * unverified (the router defers or refuses it, never forwards). */
	raw_exec(f->path, "UPDATE addresses SET verified = 0 WHERE email = 'dest@dest.test'");
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "info@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_FORWARD);
	assert_int_equal(rt.ndest, 2);
	assert_int_equal(rt.nverified, 1);
	assert_string_equal(rt.dests[0], "dest@dest.test");
	assert_false(rt.verified[0]);
	assert_true(rt.verified[1]);
	assert_false(rt.refuse_unverified);
	assert_false(mxf_ruleset_dest_verified(rs, "dest@dest.test"));
	assert_true(mxf_ruleset_dest_verified(rs, "TWO@dest.test"));
	assert_int_equal(mxf_ruleset_lookup(rs, "a@xn--bcher-kva.example", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_FORWARD);
	assert_int_equal(rt.nverified, 0);
	assert_string_equal(rt.tag, t_idn);
	mxf_ruleset_free(rs);
	raw_exec(f->path, "UPDATE addresses SET verified = 1 WHERE email = 'dest@dest.test'");

	/* Disabled rule: falls to the catch-all. Disabled domain: not ours. */
	raw_exec(f->path, "UPDATE rules SET enabled = 0 WHERE match_to = 'spam@example.com'");
	raw_exec(f->path, "UPDATE domains SET enabled = 0 WHERE name = 'nocatch.example'");
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "spam@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_FORWARD);
	assert_string_equal(rt.dests[0], "two@dest.test");
	assert_int_equal(mxf_ruleset_lookup(rs, "x@nocatch.example", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_DOMAIN);
	mxf_ruleset_free(rs);

	/* A read-only handle loads the same set. */
	struct mxf_rulesdb *ro;
	assert_int_equal(mxf_rulesdb_open(f->path, false, &ro, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_load(ro, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_count(rs), 3);
	mxf_ruleset_free(rs);
	mxf_rulesdb_close(ro);
}

static void test_load_validates(void **state)
{
	struct fx *f = *state;
	populate(f->db);
	char tag[33];
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "drop", NULL, 0,
					      tag, err, sizeof(err)),
			 0);
	struct mxf_ruleset *rs = NULL;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	mxf_ruleset_free(rs);
	/* A row that bypassed validation (another writer) fails the load, so
	 * the router keeps its previous set. */
	raw_exec(f->path, "UPDATE rules SET match_to = 'a@elsewhere.com'");
	rs = NULL;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), -EINVAL);
	assert_null(rs);
	assert_non_null(strstr(err, tag));
	raw_exec(f->path, "UPDATE rules SET match_to = 'a@example.com'");
	/* A drop rule with a destination. */
	raw_exec(f->path, "INSERT INTO rule_dests SELECT r.id, a.id FROM rules r, addresses a "
			  "WHERE a.email = 'dest@dest.test'");
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), -EINVAL);
	raw_exec(f->path, "DELETE FROM rule_dests");
	/* A forward rule without any destination. */
	raw_exec(f->path, "UPDATE rules SET action = 'forward'");
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), -EINVAL);
	/* CHECK constraints hold against direct writes too. */
	sqlite3 *s;
	assert_int_equal(sqlite3_open_v2(f->path, &s, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(s, "UPDATE rules SET action = 'bounce'", NULL, NULL, NULL),
			     SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(s, "UPDATE rules SET enabled = 2", NULL, NULL, NULL),
			     SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(s, "UPDATE rules SET matcher = 'regex'", NULL, NULL,
					  NULL),
			     SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(s, "UPDATE rules SET priority = -1", NULL, NULL, NULL),
			     SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(s, "UPDATE rules SET tag = 'XYZ'", NULL, NULL, NULL),
			     SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(s, "UPDATE domains SET name = 'UPPER.com'", NULL, NULL,
					  NULL),
			     SQLITE_OK);
	sqlite3_close(s);
}

static void test_model(void **state)
{
	struct fx *f = *state;
	populate(f->db);
	const char *one[] = {"dest@dest.test"}, *two[] = {"two@dest.test"};
	char t_lit[33], t_wild[33], t_wild2[33], t_rej[33], t_work[33], t_dis[33], t_sub[33];
	struct mxf_rule_spec sp = {.domain = "example.com", .matcher = "literal",
				   .to = "sales-eu@example.com", .action = "forward", .dests = one,
				   .ndest = 1, .priority = 10, .name = "eu"};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_lit, err, sizeof(err)), 0);
	/* A wildcard of better priority wins over the literal... */
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "sales-*@example.com", .action = "forward", .dests = two,
				    .ndest = 1, .priority = 5};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_wild, err, sizeof(err)), 0);
	/* ... one of equal or worse priority does not. */
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "*-eu@example.com", .action = "drop", .priority = 10};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_wild2, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "no@example.com", .action = "reject",
				    .arg = "  Go away\r\n\x01now  "};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_rej, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "w@example.com", .action = "worker", .arg = "spamcheck"};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_work, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "off@example.com", .action = "drop", .disabled = true};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_dis, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "user@example.com", .action = "forward", .dests = one,
				    .ndest = 1};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_sub, err, sizeof(err)), 0);
	/* Invalid ones. */
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "nostar@example.com", .action = "drop"};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EINVAL);
	sp.to = "a*@other.com";
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EINVAL);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "x@example.com", .action = "reject", .arg = " \x01 "};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "y@example.com", .action = "reject", .arg = "   "};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EINVAL);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "y@example.com", .action = "worker", .arg = "../bin/sh"};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EINVAL);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "y@example.com", .action = "drop", .priority = -1};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EINVAL);
	sp = (struct mxf_rule_spec){.domain = "example.com", .action = "reject", .arg = "Nope"};
	assert_int_equal(mxf_rulesdb_catchall_put(f->db, &sp, err, sizeof(err)), 0);

	struct mxf_ruleset *rs;
	struct mxf_route rt;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "sales-eu@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_wild);
	assert_int_equal(mxf_ruleset_lookup(rs, "SALES-x@Example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_wild);
	assert_int_equal(mxf_ruleset_lookup(rs, "x-eu@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_wild2);
	assert_int_equal(rt.kind, MXF_ROUTE_DROP);
	assert_int_equal(mxf_ruleset_lookup(rs, "no@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_REJECT);
	assert_string_equal(rt.text, "Go away???now");
	assert_int_equal(mxf_ruleset_lookup(rs, "w@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_WORKER);
	assert_string_equal(rt.text, "spamcheck");
	/* Disabled: the catch-all (a reject here). */
	assert_int_equal(mxf_ruleset_lookup(rs, "off@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_REJECT);
	assert_string_equal(rt.text, "Nope");
	/* Subaddressing off by default. */
	assert_int_equal(mxf_ruleset_lookup(rs, "user+tag@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_REJECT);
	mxf_ruleset_free(rs);

	/* Subaddressing on; a custom separator set; case-sensitive local parts. */
	assert_int_equal(mxf_rulesdb_domain_set(f->db, "example.com", "subaddressing", "on", err,
						sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_domain_set(f->db, "example.com", "subaddressing", "maybe", err,
						sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_domain_set(f->db, "nope.example", "subaddressing", "on", err,
						sizeof(err)),
			 -ENOENT);
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "user+tag@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_sub);
	assert_int_equal(mxf_ruleset_lookup(rs, "user-tag@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_REJECT);
	/* The exact address first: sales-x+y matches the wildcard as a whole. */
	assert_int_equal(mxf_ruleset_lookup(rs, "sales-x+y@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_wild);
	mxf_ruleset_free(rs);
	struct mxf_ruleset_opts o = {.local_case_sensitive = true, .subaddr_sep = "-+"};
	assert_int_equal(mxf_ruleset_load_opts(f->db, &o, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "user-tag@EXAMPLE.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_sub);
	assert_int_equal(mxf_ruleset_lookup(rs, "USER@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_REJECT);
	mxf_ruleset_free(rs);

	/* Unverified policy, transports, enable/disable/remove by tag or name. */
	assert_int_equal(mxf_rulesdb_domain_set(f->db, "example.com", "unverified", "reject", err,
						sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_transport_set(f->db, "dest.test", "[127.0.0.1]:2525", err,
						   sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_transport_set(f->db, "dest.test", "relay.example:25", err,
						   sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_transport_set(f->db, "dest.test", "relay example:25", err,
						   sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_transport_set(f->db, "dest.test", "[nope]:25", err,
						   sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_rule_enable(f->db, t_dis, true, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_rule_remove(f->db, "eu", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_rule_remove(f->db, "eu", err, sizeof(err)), -ENOENT);
	assert_int_equal(mxf_rulesdb_address_verify(f->db, "two@dest.test", false, err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_address_verify(f->db, "zz@dest.test", false, err, sizeof(err)),
			 -ENOENT);
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_string_equal(mxf_ruleset_nexthop(rs, "dest.test"), "relay.example:25");
	assert_null(mxf_ruleset_nexthop(rs, "other.test"));
	assert_int_equal(mxf_ruleset_lookup(rs, "off@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_dis);
	assert_int_equal(mxf_ruleset_lookup(rs, "sales-eu@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_wild);
	assert_true(rt.refuse_unverified);
	assert_int_equal(rt.nverified, 0);
	mxf_ruleset_free(rs);
	assert_int_equal(mxf_rulesdb_transport_remove(f->db, "dest.test", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_transport_remove(f->db, "dest.test", err, sizeof(err)),
			 -ENOENT);

	/* data_version moves when another connection commits. */
	long long v1, v2;
	assert_int_equal(mxf_rulesdb_data_version(f->db, &v1), 0);
	raw_exec(f->path, "UPDATE domains SET subaddressing = 0");
	assert_int_equal(mxf_rulesdb_data_version(f->db, &v2), 0);
	assert_true(v1 != v2);
}

/* A version-1 database (the walking skeleton's) migrates with its rules and
 * destinations intact. */
/* Issue 4: a rule's second matcher, the envelope sender, AND-ed with the
 * recipient matcher; several rules for one address, each for other senders. */
/* Issue 14: the literal rules' hash index and the wildcards' first-byte
 * runs give the same answers as a scan in priority order would: across
 * runs ('s' and '*'), literal first among equals, a refused sender matcher
 * moving on to the next candidate, many literal keys (hash collisions). */
static void test_lookup_index(void **state)
{
	struct fx *f = *state;
	populate(f->db);
	const char *one[] = {"dest@dest.test"};
	char t_star1[33], t_s3[33], t_sa7[33], t_lit4[33], t_x2[33], t_eq[33];
	struct mxf_rule_spec sp = {.domain = "example.com", .matcher = "wildcard",
				   .to = "*@example.com", .action = "drop", .priority = 1,
				   .from = "*@vip.example"};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_star1, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "s*@example.com", .action = "reject", .arg = "s",
				    .priority = 3, .from = "*@a.example"};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_s3, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "sa*@example.com", .action = "reject", .arg = "sa",
				    .priority = 7};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_sa7, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "sales-eu@example.com", .action = "forward", .dests = one,
				    .ndest = 1, .priority = 4};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_lit4, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "*x@example.com", .action = "drop", .priority = 2};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_x2, err, sizeof(err)), 0);
	/* A literal and a wildcard of equal priority: the literal first. */
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "tie@example.com", .action = "drop", .priority = 7};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_eq, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "t*@example.com", .action = "drop", .priority = 7};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), 0);
	enum { NLIT = 300 };
	static char tags[NLIT][33];
	for (int i = 0; i < NLIT; i++) {
		char to[64];
		snprintf(to, sizeof(to), "u%d@example.com", i);
		sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
					    .to = to, .action = "drop"};
		assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, tags[i], err, sizeof(err)), 0);
	}

	struct mxf_ruleset *rs;
	struct mxf_route rt;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	/* '*' run (priority 1) over the 's' run, for its sender only. */
	assert_int_equal(mxf_ruleset_lookup(rs, "sales-eu@example.com", "b@VIP.example", &rt), 0);
	assert_string_equal(rt.tag, t_star1);
	/* s* (3) for its sender, before the literal (4). */
	assert_int_equal(mxf_ruleset_lookup(rs, "sales-eu@example.com", "b@a.example", &rt), 0);
	assert_string_equal(rt.tag, t_s3);
	/* Both wildcard matchers refuse: the literal, then sa* for others. */
	assert_int_equal(mxf_ruleset_lookup(rs, "sales-eu@example.com", "b@c.example", &rt), 0);
	assert_string_equal(rt.tag, t_lit4);
	assert_int_equal(mxf_ruleset_lookup(rs, "sam@example.com", "b@c.example", &rt), 0);
	assert_string_equal(rt.tag, t_sa7);
	assert_int_equal(mxf_ruleset_lookup(rs, "SAM@example.com", NULL, &rt), 0);
	assert_string_equal(rt.tag, t_sa7);
	/* *x (2, '*' run) before sa* (7, 's' run); a local part of another
	 * first byte meets the '*' run only. */
	assert_int_equal(mxf_ruleset_lookup(rs, "samx@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_x2);
	assert_int_equal(mxf_ruleset_lookup(rs, "box@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_x2);
	assert_int_equal(mxf_ruleset_lookup(rs, "bob@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_RULE);
	assert_int_equal(mxf_ruleset_lookup(rs, "tie@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_eq);
	for (int i = 0; i < NLIT; i++) {
		char a[64];
		snprintf(a, sizeof(a), "U%d@Example.COM", i);
		assert_int_equal(mxf_ruleset_lookup(rs, a, "", &rt), 0);
		assert_string_equal(rt.tag, tags[i]);
		snprintf(a, sizeof(a), "u%d0000@example.com", i);
		assert_int_equal(mxf_ruleset_lookup(rs, a, "", &rt), 0);
		assert_int_equal(rt.kind, MXF_ROUTE_NO_RULE);
	}
	mxf_ruleset_free(rs);
}

static void test_sender_matcher(void **state)
{
	struct fx *f = *state;
	populate(f->db);
	const char *one[] = {"dest@dest.test"}, *two[] = {"two@dest.test"};
	char t_vip[33], t_plain[33], t_null[33], t_spam[33];
	struct mxf_rule_spec sp = {.domain = "example.com", .matcher = "literal",
				   .to = "boss@example.com", .action = "forward", .dests = two,
				   .ndest = 1, .from = " *@VIP.example , ceo@bücher.example "};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_vip, err, sizeof(err)), 0);
	/* The same address and senders again: a duplicate. */
	sp.from = "*@vip.example,ceo@xn--bcher-kva.example";
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EEXIST);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "boss@example.com", .action = "forward", .dests = one,
				    .ndest = 1, .priority = 5};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_plain, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
				    .to = "boss@example.com", .action = "drop", .from = "<>",
				    .priority = 9};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_null, err, sizeof(err)), 0);
	/* Anything from a spam domain to any address: a wildcard with --from. */
	sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "wildcard",
				    .to = "*@example.com", .action = "reject", .arg = "No spam",
				    .from = "*@spam.example"};
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, t_spam, err, sizeof(err)), 0);
	/* Invalid sender patterns, and none on a catch-all. */
	const char *bad[] = {"nobody", "a b@x.example", "<x@y>", "*@", ",", "a@b..c"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sp = (struct mxf_rule_spec){.domain = "example.com", .matcher = "literal",
					    .to = "z@example.com", .action = "drop", .from = bad[i]};
		assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)),
				 -EINVAL);
	}
	sp = (struct mxf_rule_spec){.domain = "example.com", .action = "drop", .from = "*"};
	assert_int_equal(mxf_rulesdb_catchall_put(f->db, &sp, err, sizeof(err)), -EINVAL);

	struct mxf_ruleset *rs;
	struct mxf_route rt;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	/* The conditioned rule (priority 0) for its senders, case-insensitively,
	 * the IDN sender domain as U-label or A-label... */
	const char *vip[] = {"a@vip.example", "A@VIP.Example", "ceo@bücher.example",
			     "CEO@xn--bcher-kva.example"};
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(mxf_ruleset_lookup(rs, "boss@example.com", vip[i], &rt), 0);
		assert_string_equal(rt.tag, t_vip);
		assert_string_equal(rt.dests[0], "two@dest.test");
	}
	/* ... the next rule in priority order for everyone else ... */
	assert_int_equal(mxf_ruleset_lookup(rs, "boss@example.com", "x@other.example", &rt), 0);
	assert_string_equal(rt.tag, t_plain);
	/* ... and an unknown sender only matches unconditioned rules. */
	assert_int_equal(mxf_ruleset_lookup(rs, "boss@example.com", NULL, &rt), 0);
	assert_string_equal(rt.tag, t_plain);
	/* The null sender: the plain rule (priority 5) before the "<>" one (9). */
	assert_int_equal(mxf_ruleset_lookup(rs, "boss@example.com", "", &rt), 0);
	assert_string_equal(rt.tag, t_plain);
	/* The spam wildcard (priority 0) wins over the literal of priority 5,
	 * and applies to any recipient of the domain. */
	assert_int_equal(mxf_ruleset_lookup(rs, "boss@example.com", "x@spam.example", &rt), 0);
	assert_string_equal(rt.tag, t_spam);
	assert_int_equal(rt.kind, MXF_ROUTE_REJECT);
	assert_int_equal(mxf_ruleset_lookup(rs, "nobody@example.com", "x@spam.example", &rt), 0);
	assert_string_equal(rt.tag, t_spam);
	assert_int_equal(mxf_ruleset_lookup(rs, "nobody@example.com", "x@ok.example", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_NO_RULE);
	mxf_ruleset_free(rs);

	/* Editing: the plain rule gets "<>" too, then the "<>" rule clashes... */
	struct mxf_rule_edit e = {.priority = -1, .enabled = -1, .from = "<>", .code = -1};
	assert_int_equal(mxf_rulesdb_rule_edit(f->db, t_plain, &e, err, sizeof(err)), -EEXIST);
	/* ... the conditioned rule loses its condition: a clash with the plain one. */
	e.from = "";
	assert_int_equal(mxf_rulesdb_rule_edit(f->db, t_vip, &e, err, sizeof(err)), -EEXIST);
	e.from = "*@vip.example";
	assert_int_equal(mxf_rulesdb_rule_edit(f->db, t_vip, &e, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "boss@example.com", "ceo@bücher.example", &rt), 0);
	assert_string_equal(rt.tag, t_plain);
	mxf_ruleset_free(rs);

	/* A row that the write checks would refuse fails the whole load. */
	mxf_rulesdb_close(f->db);
	f->db = NULL;
	raw_exec(f->path, "UPDATE rules SET match_from = 'Bad Pattern' WHERE matcher = 'wildcard'");
	assert_int_equal(mxf_rulesdb_open(f->path, false, &f->db, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "sender matcher"));
}

/* Verification by mail: one-time tokens, stored hashed, spent on use. */
static void test_address_tokens(void **state)
{
	struct fx *f = *state;
	char tok[MXF_TOKEN_SIZE], tok2[MXF_TOKEN_SIZE];
	populate(f->db);
	assert_int_equal(mxf_rulesdb_address_token_new(f->db, "unv@dest.test", 3600, tok, err,
						       sizeof(err)),
			 0);
	assert_int_equal(strlen(tok), MXF_TOKEN_SIZE - 1);
	/* Verified and unknown addresses get none. */
	assert_int_equal(mxf_rulesdb_address_token_new(f->db, "dest@dest.test", 3600, tok2, err,
						       sizeof(err)),
			 -ENOENT);
	assert_int_equal(mxf_rulesdb_address_token_new(f->db, "nobody@dest.test", 3600, tok2, err,
						       sizeof(err)),
			 -ENOENT);
	/* Only the hash is stored, never the token. */
	sqlite3 *raw;
	assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(raw, "SELECT token_hash FROM addresses WHERE "
						 "email = 'unv@dest.test'",
					    -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(strlen((const char *)sqlite3_column_text(st, 0)), 64);
	assert_null(strstr((const char *)sqlite3_column_text(st, 0), tok));
	sqlite3_finalize(st);
	sqlite3_close(raw);
	/* A new token replaces the old one. */
	assert_int_equal(mxf_rulesdb_address_token_new(f->db, "UNV@dest.test", 3600, tok2, err,
						       sizeof(err)),
			 0);
	assert_string_not_equal(tok, tok2);
	assert_int_equal(mxf_rulesdb_address_verify_token(f->db, "unv@dest.test", tok, err,
							  sizeof(err)),
			 -EACCES);
	assert_int_equal(mxf_rulesdb_address_verify_token(f->db, "unv@dest.test", "short", err,
							  sizeof(err)),
			 -EACCES);
	/* Expired: refused with the same words as a wrong one. */
	mxf_rulesdb_close(f->db);
	raw_exec(f->path, "UPDATE addresses SET token_expires = 1 WHERE email = 'unv@dest.test'");
	assert_int_equal(mxf_rulesdb_open(f->path, true, &f->db, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_address_verify_token(f->db, "unv@dest.test", tok2, err,
							  sizeof(err)),
			 -EACCES);
	assert_non_null(strstr(err, "wrong or expired"));
	assert_int_equal(mxf_rulesdb_address_token_new(f->db, "unv@dest.test", 3600, tok, err,
						       sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_address_verify_token(f->db, "unv@dest.test", tok, err,
							  sizeof(err)),
			 0);
	/* Spent. */
	assert_int_equal(mxf_rulesdb_address_verify_token(f->db, "unv@dest.test", tok, err,
							  sizeof(err)),
			 -EALREADY);
	assert_int_equal(mxf_rulesdb_address_verify_token(f->db, "x@dest.test", tok, err,
							  sizeof(err)),
			 -ENOENT);
}

static int count_tok(const struct mxf_api_token *t, void *arg)
{
	(void)t;
	++*(int *)arg;
	return 0;
}

struct first_ids {
	char domain[33], address[33];
};

static int dom_id_cb(const struct mxf_domain_info *d, void *arg)
{
	snprintf(((struct first_ids *)arg)->domain, 33, "%s", d->id);
	return 1;
}

static int addr_id_cb(const struct mxf_address_info *a, void *arg)
{
	snprintf(((struct first_ids *)arg)->address, 33, "%s", a->id);
	return 1;
}

/* Issue 12: stable ids, the account id and API tokens (hash only, constant-time check). */
static void test_api_tokens(void **state)
{
	struct fx *f = *state;
	populate(f->db);
	struct first_ids ids = {"", ""};
	assert_int_equal(mxf_rulesdb_domain_list(f->db, dom_id_cb, &ids), 1);
	assert_int_equal(mxf_rulesdb_address_list(f->db, addr_id_cb, &ids), 1);
	assert_int_equal(strlen(ids.domain), 32);
	assert_int_equal(strlen(ids.address), 32);
	assert_true(strspn(ids.domain, "0123456789abcdef") == 32);
	char acct[33], acct2[33];
	assert_int_equal(mxf_rulesdb_account_id(f->db, acct), 0);
	assert_int_equal(strlen(acct), 32);
	/* Stable across a reopen. */
	mxf_rulesdb_close(f->db);
	assert_int_equal(mxf_rulesdb_open(f->path, true, &f->db, err, sizeof(err)), 0);
	struct first_ids again = {"", ""};
	mxf_rulesdb_domain_list(f->db, dom_id_cb, &again);
	assert_string_equal(again.domain, ids.domain);
	assert_int_equal(mxf_rulesdb_account_id(f->db, acct2), 0);
	assert_string_equal(acct, acct2);

	char secret[MXF_API_TOKEN_SIZE], id[33], cid[33], name[65];
	bool ro = true;
	mxf_rulesdb_set_actor(f->db, "unix:test");
	assert_int_equal(mxf_rulesdb_token_add(f->db, "ci", false, secret, id, err, sizeof(err)), 0);
	assert_int_equal(strlen(secret), MXF_API_TOKEN_SIZE - 1);
	assert_int_equal(mxf_rulesdb_token_add(f->db, "ci", true, secret + 0, id, err, sizeof(err)),
			 -EEXIST);
	assert_int_equal(mxf_rulesdb_token_add(f->db, "bad name", true, secret, id, err, sizeof(err)),
			 -EINVAL);
	char s2[MXF_API_TOKEN_SIZE], id2[33];
	assert_int_equal(mxf_rulesdb_token_add(f->db, "ro", true, s2, id2, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_token_check(f->db, s2, cid, name, &ro), 0);
	assert_string_equal(name, "ro");
	assert_string_equal(cid, id2);
	assert_true(ro);
	assert_int_equal(mxf_rulesdb_token_check(f->db, "mxf_wrong", cid, name, &ro), -EACCES);
	assert_int_equal(mxf_rulesdb_token_check(f->db, "", cid, name, &ro), -EACCES);
	int n = 0;
	assert_int_equal(mxf_rulesdb_token_list(f->db, count_tok, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(mxf_rulesdb_token_remove(f->db, "ro", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_token_remove(f->db, "ro", err, sizeof(err)), -ENOENT);
	assert_int_equal(mxf_rulesdb_token_check(f->db, s2, cid, name, &ro), -EACCES);
	/* The domain settings of the API's PUT, one transaction. */
	assert_int_equal(mxf_rulesdb_domain_update(f->db, "example.com", 0, 1, err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_domain_update(f->db, "nope.test", 0, 1, err, sizeof(err)),
			 -ENOENT);
}

static void test_migrate_v1(void **state)
{
	struct fx *f = *state;
	int latest = user_version(f->path);
	char tag[33];
	populate(f->db);
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "forward",
					      (const char *[]){"dest@dest.test"}, 1, tag, err,
					      sizeof(err)),
			 0);
	mxf_rulesdb_close(f->db);
	f->db = NULL;
	/* Back to the v1 shape. */
	raw_exec(f->path,
		 "PRAGMA foreign_keys=OFF; BEGIN;"
		 "DROP INDEX domains_uid; DROP INDEX addresses_uid;"
		 "ALTER TABLE domains DROP COLUMN uid; ALTER TABLE addresses DROP COLUMN uid;"
		 "DROP TABLE api_tokens; DELETE FROM settings WHERE key = 'account_id';"
		 "CREATE TABLE r1 (id INTEGER PRIMARY KEY, tag TEXT NOT NULL UNIQUE,"
		 " domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,"
		 " name TEXT NOT NULL DEFAULT '', priority INTEGER NOT NULL DEFAULT 0,"
		 " enabled INTEGER NOT NULL DEFAULT 1,"
		 " matcher TEXT NOT NULL CHECK (matcher IN ('literal', 'all')),"
		 " match_to TEXT NOT NULL DEFAULT '', action TEXT NOT NULL CHECK (action IN "
		 " ('forward', 'drop')), created INTEGER NOT NULL);"
		 "INSERT INTO r1 SELECT id, tag, domain_id, name, priority, enabled, matcher, match_to,"
		 " action, created FROM rules;"
		 "DROP TABLE rules; ALTER TABLE r1 RENAME TO rules;"
		 "DROP TABLE transports; ALTER TABLE domains DROP COLUMN unverified;"
		 "ALTER TABLE domains DROP COLUMN dmarc;"
		 "DROP TABLE audit; DROP TABLE dkim_keys; DROP TABLE access;"
		 "ALTER TABLE addresses DROP COLUMN token_hash;"
		 "ALTER TABLE addresses DROP COLUMN token_expires;"
		 "DROP TABLE workers;"
		 "PRAGMA user_version = 1; COMMIT;");
	assert_int_equal(user_version(f->path), 1);
	assert_int_equal(mxf_rulesdb_open(f->path, true, &f->db, err, sizeof(err)), 0);
	assert_int_equal(user_version(f->path), latest);
	struct mxf_ruleset *rs;
	struct mxf_route rt;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "a@example.com", "", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_FORWARD);
	assert_string_equal(rt.tag, tag);
	assert_int_equal(rt.ndest, 1);
	mxf_ruleset_free(rs);
	/* Migration 13 gave the existing domain and addresses their ids. */
	struct first_ids ids = {"", ""};
	mxf_rulesdb_domain_list(f->db, dom_id_cb, &ids);
	mxf_rulesdb_address_list(f->db, addr_id_cb, &ids);
	assert_int_equal(strlen(ids.domain), 32);
	assert_int_equal(strlen(ids.address), 32);
	char acct[33];
	assert_int_equal(mxf_rulesdb_account_id(f->db, acct), 0);
}

struct audit_seen {
	int n;
	char action[16][32];
	char who[16][64];
	char object[16][80];
	bool before[16], after[16];
};

static int audit_cb(const struct mxf_audit_entry *e, void *arg)
{
	struct audit_seen *a = arg;
	if (a->n < 16) {
		snprintf(a->action[a->n], 32, "%s", e->action);
		snprintf(a->who[a->n], 64, "%s", e->who);
		snprintf(a->object[a->n], 80, "%s", e->object);
		a->before[a->n] = e->before != NULL;
		a->after[a->n] = e->after != NULL;
	}
	a->n++;
	return 0;
}

/* Issue 8: each write leaves exactly one audit row (a domain removal one per
 * rule too), in its transaction: a refused write leaves none. */
static void test_audit(void **state)
{
	struct fx *f = *state;
	char tag[33];
	struct audit_seen a = {0};
	mxf_rulesdb_set_actor(f->db, "unix:tester");
	populate(f->db);
	const char *one[] = {"dest@dest.test"};
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "a@example.com", "forward", one,
					      1, tag, err, sizeof(err)),
			 0);
	/* Refused: unverified destination, duplicate domain, address in use. */
	const char *unv[] = {"unv@dest.test"};
	assert_int_equal(mxf_rulesdb_rule_add(f->db, "example.com", "b@example.com", "forward", unv,
					      1, NULL, err, sizeof(err)),
			 -EPERM);
	assert_int_equal(mxf_rulesdb_domain_add(f->db, "example.com", err, sizeof(err)), -EEXIST);
	assert_int_equal(mxf_rulesdb_address_remove(f->db, "dest@dest.test", err, sizeof(err)),
			 -EBUSY);
	assert_int_equal(mxf_rulesdb_catchall_remove(f->db, "example.com", err, sizeof(err)),
			 -ENOENT);
	assert_int_equal(mxf_rulesdb_domain_enable(f->db, "example.com", false, err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_domain_remove(f->db, "example.com", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_address_remove(f->db, "dest@dest.test", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_audit_list(f->db, 0, 0, audit_cb, &a), 0);
	static const char *const want[] = {"domain.add",     "address.add",	  "address.add",
					   "address.add",    "rule.add",	  "domain.disable",
					   "rule.remove",    "domain.remove", "address.remove"};
	assert_int_equal(a.n, 9);
	for (int i = 0; i < 9; i++) {
		assert_string_equal(a.action[i], want[i]);
		assert_string_equal(a.who[i], "unix:tester");
	}
	assert_string_equal(a.object[4], tag);
	assert_false(a.before[4]);
	assert_true(a.after[4]);
	assert_true(a.before[5] && a.after[5]);
	assert_true(a.before[6] && !a.after[6]);
	assert_string_equal(a.object[8], "dest@dest.test");
	/* limit: the newest entries, still oldest first. */
	memset(&a, 0, sizeof(a));
	assert_int_equal(mxf_rulesdb_audit_list(f->db, 0, 2, audit_cb, &a), 0);
	assert_int_equal(a.n, 2);
	assert_string_equal(a.action[0], "domain.remove");
	assert_string_equal(a.action[1], "address.remove");
	memset(&a, 0, sizeof(a));
	assert_int_equal(mxf_rulesdb_audit_list(f->db, (long long)time(NULL) + 3600, 0, audit_cb, &a),
			 0);
	assert_int_equal(a.n, 0);
}

struct dkim_seen {
	int n;
	char sel[4][64];
	bool enabled[4];
};

static int dkim_cb(const struct mxf_dkim_key_info *k, void *arg)
{
	struct dkim_seen *s = arg;
	if (s->n < 4) {
		snprintf(s->sel[s->n], sizeof(s->sel[0]), "%s/%s/%s", k->domain, k->selector,
			 k->algorithm);
		s->enabled[s->n] = k->enabled;
	}
	s->n++;
	return 0;
}

static int audit_count_cb(const struct mxf_audit_entry *e, void *arg)
{
	if (strncmp(e->action, "dkim.", 5) == 0)
		(*(int *)arg)++;
	return 0;
}

/* DKIM key rows: validated, listed, enabled/disabled, removed, audited. */
static void test_dkim_keys(void **state)
{
	struct fx *f = *state;
	struct dkim_seen s = {0};
	assert_int_equal(mxf_rulesdb_dkim_add(f->db, "Example.COM", "s1", "rsa", "AAAA", true, err,
					      sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_dkim_add(f->db, "example.com", "e1", "ed25519", "BBBB", false,
					      err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_dkim_add(f->db, "example.com", "s1", "ed25519", "CCCC", true,
					      err, sizeof(err)),
			 -EEXIST);
	assert_int_equal(mxf_rulesdb_dkim_add(f->db, "example.com", "../x", "rsa", "A", true, err,
					      sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_dkim_add(f->db, "example.com", "s2", "dsa", "A", true, err,
					      sizeof(err)),
			 -EINVAL);
	assert_int_equal(mxf_rulesdb_dkim_list(f->db, NULL, dkim_cb, &s), 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.sel[0], "example.com/e1/ed25519");
	assert_false(s.enabled[0]);
	assert_string_equal(s.sel[1], "example.com/s1/rsa");
	assert_int_equal(mxf_rulesdb_dkim_enable(f->db, "example.com", "e1", true, err, sizeof(err)),
			 0);
	assert_int_equal(mxf_rulesdb_dkim_remove(f->db, "example.com", "s1", err, sizeof(err)), 0);
	assert_int_equal(mxf_rulesdb_dkim_remove(f->db, "example.com", "s1", err, sizeof(err)),
			 -ENOENT);
	memset(&s, 0, sizeof(s));
	assert_int_equal(mxf_rulesdb_dkim_list(f->db, "example.com", dkim_cb, &s), 0);
	assert_int_equal(s.n, 1);
	assert_true(s.enabled[0]);
	int n = 0;
	assert_int_equal(mxf_rulesdb_audit_list(f->db, 0, 0, audit_count_cb, &n), 0);
	assert_int_equal(n, 4); /* add, add, enable, remove; the refusals left none */
}

/* Issue 13: the webhook action, its URL checks, the rebuilt rules table
 * (migration 11) with the later columns, and the route. */
static void test_webhook(void **state)
{
	struct fx *f = *state;
	char tag[40], long_url[1100];
	assert_true(mxf_rulesdb_webhook_url_ok("http://h.example/x?a=1"));
	assert_true(mxf_rulesdb_webhook_url_ok("HTTPS://[::1]:8443/"));
	assert_false(mxf_rulesdb_webhook_url_ok("ftp://h.example/"));
	assert_false(mxf_rulesdb_webhook_url_ok("http://"));
	assert_false(mxf_rulesdb_webhook_url_ok("http:///x"));
	assert_false(mxf_rulesdb_webhook_url_ok("http://h/a b"));
	assert_false(mxf_rulesdb_webhook_url_ok("http://h/\r\nX: y"));
	assert_false(mxf_rulesdb_webhook_url_ok("http://h/\xc3\xa9"));
	snprintf(long_url, sizeof(long_url), "http://h/%0991d", 0);
	assert_int_equal(strlen(long_url), 1000);
	assert_true(mxf_rulesdb_webhook_url_ok(long_url));
	strcat(long_url, "1");
	assert_false(mxf_rulesdb_webhook_url_ok(long_url));
	long_url[1000] = '\0';

	assert_int_equal(mxf_rulesdb_domain_add(f->db, "example.com", err, sizeof(err)), 0);
	struct mxf_rule_spec sp = {.domain = "example.com", .matcher = "literal",
				   .to = "h@example.com", .action = "webhook", .arg = "http://h/"};
	sp.arg = "gopher://h/";
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EINVAL);
	sp.arg = NULL;
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, NULL, err, sizeof(err)), -EINVAL);
	sp.arg = long_url;
	sp.from = "*@sender.example";
	assert_int_equal(mxf_rulesdb_rule_create(f->db, &sp, tag, err, sizeof(err)), 0);
	sp = (struct mxf_rule_spec){.domain = "example.com", .action = "webhook",
				    .arg = "https://hooks.example/all"};
	assert_int_equal(mxf_rulesdb_catchall_put(f->db, &sp, err, sizeof(err)), 0);
	struct mxf_ruleset *rs;
	struct mxf_route rt;
	assert_int_equal(mxf_ruleset_load(f->db, &rs, err, sizeof(err)), 0);
	assert_int_equal(mxf_ruleset_lookup(rs, "h@example.com", "a@sender.example", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_WEBHOOK);
	assert_string_equal(rt.text, long_url);
	assert_string_equal(rt.tag, tag);
	/* The sender matcher still works on the rebuilt table. */
	assert_int_equal(mxf_ruleset_lookup(rs, "h@example.com", "a@other.example", &rt), 0);
	assert_int_equal(rt.kind, MXF_ROUTE_WEBHOOK);
	assert_string_equal(rt.text, "https://hooks.example/all");
	mxf_ruleset_free(rs);
	/* A reject reason is still bound to 200 characters by the table. */
	struct mxf_rule_edit e = {.action = "reject", .arg = long_url, .priority = -1,
				  .enabled = -1, .code = -1};
	assert_int_equal(mxf_rulesdb_rule_edit(f->db, tag, &e, err, sizeof(err)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_domain_validation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_address_validation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rule_validation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_and_catchall_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lookup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_validates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_model, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sender_matcher, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lookup_index, setup, teardown),
		cmocka_unit_test_setup_teardown(test_address_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_api_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dkim_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_webhook, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
