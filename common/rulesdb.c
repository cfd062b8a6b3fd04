/* rulesdb: rules.db access and the compiled in-memory rule set.
 *
 * Every statement uses bound parameters. Writes are one transaction each
 * (BEGIN IMMEDIATE, so a concurrent writer waits on busy_timeout instead of
 * failing half-way). The same validation runs on write and on load: a row
 * that a buggy or older writer let through makes the load fail, and the
 * router keeps its previous rule set. */
#include "rulesdb.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "address.h"

#define MAX_DESTS 25
#define TAG_LEN 32
#define BUSY_TIMEOUT_MS 5000

struct mxf_rulesdb {
	sqlite3 *db;
	bool writable;
};

/* ---- schema ---- */

/* Ordered migrations: migrations[i] takes user_version i to i+1. Never edit a
 * released entry; append a new one. */
static const char *const migrations[] = {
	/* 1: domains, destination addresses, rules, settings */
	"CREATE TABLE domains ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 253"
	"    AND name NOT GLOB '*[^a-z0-9.-]*'),"
	"  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),"
	"  subaddressing INTEGER NOT NULL DEFAULT 0 CHECK (subaddressing IN (0, 1)),"
	"  created INTEGER NOT NULL);"
	/* Destination addresses compare case-insensitively so one mailbox is not
	 * registered (and verified) twice under two spellings. */
	"CREATE TABLE addresses ("
	"  id INTEGER PRIMARY KEY,"
	"  email TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (length(email) BETWEEN 3 AND 320),"
	"  verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),"
	"  created INTEGER NOT NULL);"
	"CREATE TABLE rules ("
	"  id INTEGER PRIMARY KEY,"
	"  tag TEXT NOT NULL UNIQUE CHECK (length(tag) = 32 AND tag NOT GLOB '*[^0-9a-f]*'),"
	"  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 200),"
	"  priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 1000000),"
	"  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),"
	"  matcher TEXT NOT NULL CHECK (matcher IN ('literal', 'all')),"
	"  match_to TEXT NOT NULL DEFAULT '' CHECK (length(match_to) <= 320),"
	"  action TEXT NOT NULL CHECK (action IN ('forward', 'drop')),"
	"  created INTEGER NOT NULL,"
	"  CHECK ((matcher = 'all') = (match_to = '')));"
	/* One catch-all per domain; one literal rule per address (local parts
	 * compare case-insensitively, as at lookup). */
	"CREATE UNIQUE INDEX rules_catchall ON rules(domain_id) WHERE matcher = 'all';"
	"CREATE UNIQUE INDEX rules_literal ON rules(domain_id, match_to COLLATE NOCASE)"
	"  WHERE matcher = 'literal';"
	"CREATE TABLE rule_dests ("
	"  rule_id INTEGER NOT NULL REFERENCES rules(id) ON DELETE CASCADE,"
	"  address_id INTEGER NOT NULL REFERENCES addresses(id) ON DELETE RESTRICT,"
	"  PRIMARY KEY (rule_id, address_id)) WITHOUT ROWID;"
	"CREATE INDEX rule_dests_address ON rule_dests(address_id);"
	"CREATE TABLE settings ("
	"  key TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 100),"
	"  value TEXT NOT NULL) WITHOUT ROWID;",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- helpers ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int sqlerr(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_CONSTRAINT:
		return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY
			       ? -EEXIST
			       : -EINVAL;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

static int fail_sql(struct mxf_rulesdb *db, int rc, char *err, size_t errlen)
{
	seterr(err, errlen, "rules database: %s", sqlite3_errmsg(db->db));
	return sqlerr(rc) ? sqlerr(rc) : -EIO;
}

static int exec(struct mxf_rulesdb *db, const char *sql, char *err, size_t errlen)
{
	int rc = sqlite3_exec(db->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : fail_sql(db, rc, err, errlen);
}

static int prep(struct mxf_rulesdb *db, const char *sql, sqlite3_stmt **st, char *err,
		size_t errlen)
{
	int rc = sqlite3_prepare_v2(db->db, sql, -1, st, NULL);
	return rc == SQLITE_OK ? 0 : fail_sql(db, rc, err, errlen);
}

static int begin_write(struct mxf_rulesdb *db, char *err, size_t errlen)
{
	if (!db->writable) {
		seterr(err, errlen, "rules database opened read-only");
		return -EROFS;
	}
	return exec(db, "BEGIN IMMEDIATE", err, errlen);
}

static int commit(struct mxf_rulesdb *db, char *err, size_t errlen)
{
	int r = exec(db, "COMMIT", err, errlen);
	if (r < 0)
		sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}

static void rollback(struct mxf_rulesdb *db)
{
	if (!sqlite3_get_autocommit(db->db))
		sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
}

static int user_version(struct mxf_rulesdb *db, int *v, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "PRAGMA user_version", &st, err, errlen);
	if (r < 0)
		return r;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*v = sqlite3_column_int(st, 0);
		r = 0;
	} else {
		r = fail_sql(db, rc, err, errlen);
	}
	sqlite3_finalize(st);
	return r;
}

static int migrate(struct mxf_rulesdb *db, char *err, size_t errlen)
{
	for (;;) {
		int v, r;
		/* Read the version inside the write transaction: two mxferryctl
		 * runs racing on a fresh file must not both apply migration 1. */
		if ((r = exec(db, "BEGIN IMMEDIATE", err, errlen)) < 0)
			return r;
		if ((r = user_version(db, &v, err, errlen)) < 0)
			goto fail;
		if (v > SCHEMA_VERSION) {
			seterr(err, errlen,
			       "rules database schema version %d is newer than this program's %d", v,
			       SCHEMA_VERSION);
			r = -EPROTONOSUPPORT;
			goto fail;
		}
		if (v == SCHEMA_VERSION || v < 0) {
			if (v < 0) {
				seterr(err, errlen, "rules database schema version %d is invalid", v);
				r = -EBADMSG;
				goto fail;
			}
			rollback(db);
			return 0;
		}
		if ((r = exec(db, migrations[v], err, errlen)) < 0)
			goto fail;
		/* PRAGMA takes no bound parameter; v + 1 is our own integer. */
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if ((r = exec(db, sql, err, errlen)) < 0)
			goto fail;
		if ((r = commit(db, err, errlen)) < 0)
			return r;
		continue;
	fail:
		rollback(db);
		return r;
	}
}

int mxf_rulesdb_open(const char *path, bool writable, struct mxf_rulesdb **out, char *err,
		     size_t errlen)
{
	*out = NULL;
	if (writable) {
		/* Create the file ourselves so it is born 0640 (it will hold API
		 * tokens and DKIM keys later), never through a symlink. */
		int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
		if (fd < 0) {
			int e = errno;
			seterr(err, errlen, "%s: %s", path, strerror(e));
			return -e;
		}
		close(fd);
	}
	struct mxf_rulesdb *db = calloc(1, sizeof(*db));
	if (!db) {
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	db->writable = writable;
	int flags = (writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) |
		    SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
	int rc = sqlite3_open_v2(path, &db->db, flags, NULL);
	if (rc != SQLITE_OK) {
		int r = sqlerr(rc) ? sqlerr(rc) : -EIO;
		seterr(err, errlen, "%s: %s", path,
		       db->db ? sqlite3_errmsg(db->db) : sqlite3_errstr(rc));
		mxf_rulesdb_close(db);
		return r;
	}
	int r = 0;
	sqlite3_extended_result_codes(db->db, 1);
	sqlite3_busy_timeout(db->db, BUSY_TIMEOUT_MS);
	/* Defensive: no writable_schema tricks, no functions with side effects
	 * called from a schema crafted by someone else. */
	sqlite3_db_config(db->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(db->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	sqlite3_db_config(db->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
	sqlite3_db_config(db->db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
	if ((r = exec(db, "PRAGMA foreign_keys = ON", err, errlen)) < 0)
		goto fail;
	if (writable) {
		if ((r = migrate(db, err, errlen)) < 0)
			goto fail;
		/* The router only reads; an fsync'd rollback journal (the default)
		 * keeps each transaction durable. */
		if ((r = exec(db, "PRAGMA synchronous = FULL", err, errlen)) < 0)
			goto fail;
	} else {
		int v;
		if ((r = user_version(db, &v, err, errlen)) < 0)
			goto fail;
		if (v != SCHEMA_VERSION) {
			if (v > SCHEMA_VERSION) {
				seterr(err, errlen,
				       "%s: schema version %d is newer than this program's %d", path,
				       v, SCHEMA_VERSION);
				r = -EPROTONOSUPPORT;
			} else {
				seterr(err, errlen,
				       "%s: schema version %d, expected %d (run mxferryctl to migrate)",
				       path, v, SCHEMA_VERSION);
				r = -ESTALE;
			}
			goto fail;
		}
	}
	*out = db;
	return 0;
fail:
	mxf_rulesdb_close(db);
	return r;
}

void mxf_rulesdb_close(struct mxf_rulesdb *db)
{
	if (!db)
		return;
	sqlite3_close_v2(db->db);
	free(db);
}

/* ---- validation shared by writes and load ---- */

static int check_domain(const char *in, char *out, size_t outlen, char *err, size_t errlen)
{
	int r = mxf_domain_to_ascii(in, out, outlen);
	if (r < 0) {
		seterr(err, errlen, "invalid domain name");
		return -EINVAL;
	}
	return 0;
}

static int check_addr(const char *in, char *out, size_t outlen, char *err, size_t errlen)
{
	int r = mxf_addr_normalize(in, MXF_ADDR_UTF8, out, outlen);
	if (r < 0) {
		seterr(err, errlen, "invalid address");
		return -EINVAL;
	}
	return 0;
}

/* The domain part of a normalised address: after the last '@' (a quoted
 * local part may itself contain '@'). */
static const char *addr_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : "";
}

static int lookup_id(struct mxf_rulesdb *db, const char *sql, const char *key, sqlite3_int64 *id,
		     int *flag, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, sql, &st, err, errlen);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		if (flag)
			*flag = sqlite3_column_int(st, 1);
		r = 0;
	} else if (rc == SQLITE_DONE) {
		r = -ENOENT;
	} else {
		r = fail_sql(db, rc, err, errlen);
	}
	sqlite3_finalize(st);
	return r;
}

static int new_tag(char out[TAG_LEN + 1])
{
	unsigned char rnd[TAG_LEN / 2];
	size_t got = 0;
	while (got < sizeof(rnd)) {
		ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(out + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

/* ---- writes ---- */

int mxf_rulesdb_domain_add(struct mxf_rulesdb *db, const char *domain, char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1];
	int r = check_domain(domain, name, sizeof(name), err, errlen);
	if (r < 0)
		return r;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	sqlite3_stmt *st;
	if ((r = prep(db, "INSERT INTO domains (name, enabled, subaddressing, created) "
			  "VALUES (?1, 1, 0, ?2)",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = sqlerr(rc);
		if (r == -EEXIST)
			seterr(err, errlen, "domain %s already exists", name);
		else
			r = fail_sql(db, rc, err, errlen);
	}
	sqlite3_finalize(st);
	if (r == 0)
		return commit(db, err, errlen);
out:
	rollback(db);
	return r;
}

int mxf_rulesdb_address_add(struct mxf_rulesdb *db, const char *email, bool verified, char *err,
			    size_t errlen)
{
	char addr[MXF_ADDR_SIZE];
	int r = check_addr(email, addr, sizeof(addr), err, errlen);
	if (r < 0)
		return r;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	sqlite3_stmt *st;
	if ((r = prep(db, "INSERT INTO addresses (email, verified, created) VALUES (?1, ?2, ?3)",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 2, verified ? 1 : 0);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = sqlerr(rc);
		if (r == -EEXIST)
			seterr(err, errlen, "address %s already exists", addr);
		else
			r = fail_sql(db, rc, err, errlen);
	}
	sqlite3_finalize(st);
	if (r == 0)
		return commit(db, err, errlen);
out:
	rollback(db);
	return r;
}

/* Checks action/destinations and resolves them to address ids (inside the
 * caller's transaction). ids has room for MAX_DESTS. */
static int resolve_dests(struct mxf_rulesdb *db, const char *action, const char *const *dests,
			 size_t ndest, sqlite3_int64 *ids, size_t *nids, char *err, size_t errlen)
{
	*nids = 0;
	if (strcmp(action, "drop") == 0) {
		if (ndest != 0) {
			seterr(err, errlen, "a drop rule takes no destination");
			return -EINVAL;
		}
		return 0;
	}
	if (strcmp(action, "forward") != 0) {
		seterr(err, errlen, "unknown action (forward or drop)");
		return -EINVAL;
	}
	if (ndest < 1 || ndest > MAX_DESTS) {
		seterr(err, errlen, "a forward rule needs 1 to %d destinations", MAX_DESTS);
		return -EINVAL;
	}
	for (size_t i = 0; i < ndest; i++) {
		char addr[MXF_ADDR_SIZE];
		int r = mxf_addr_normalize(dests[i], MXF_ADDR_UTF8, addr, sizeof(addr));
		if (r < 0) {
			seterr(err, errlen, "invalid destination address");
			return -EINVAL;
		}
		sqlite3_int64 id;
		int verified = 0;
		r = lookup_id(db, "SELECT id, verified FROM addresses WHERE email = ?1", addr, &id,
			      &verified, err, errlen);
		if (r == -ENOENT) {
			seterr(err, errlen,
			       "destination %s is not a known address (add it with address add)",
			       addr);
			return r;
		}
		if (r < 0)
			return r;
		if (!verified) {
			seterr(err, errlen, "destination %s is not verified", addr);
			return -EPERM;
		}
		/* A destination listed twice is kept once. */
		bool dup = false;
		for (size_t j = 0; j < *nids; j++)
			dup = dup || ids[j] == id;
		if (!dup)
			ids[(*nids)++] = id;
	}
	return 0;
}

static int insert_dests(struct mxf_rulesdb *db, sqlite3_int64 rule_id, const sqlite3_int64 *ids,
			size_t nids, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "INSERT INTO rule_dests (rule_id, address_id) VALUES (?1, ?2)", &st, err,
		     errlen);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nids && r == 0; i++) {
		sqlite3_bind_int64(st, 1, rule_id);
		sqlite3_bind_int64(st, 2, ids[i]);
		int rc = sqlite3_step(st);
		if (rc != SQLITE_DONE)
			r = fail_sql(db, rc, err, errlen);
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	return r;
}

static int find_domain(struct mxf_rulesdb *db, const char *domain, char *name, size_t namelen,
		       sqlite3_int64 *id, char *err, size_t errlen)
{
	int r = check_domain(domain, name, namelen, err, errlen);
	if (r < 0)
		return r;
	r = lookup_id(db, "SELECT id FROM domains WHERE name = ?1", name, id, NULL, err, errlen);
	if (r == -ENOENT)
		seterr(err, errlen, "unknown domain %s (add it with domain add)", name);
	return r;
}

int mxf_rulesdb_rule_add(struct mxf_rulesdb *db, const char *domain, const char *to,
			 const char *action, const char *const *dests, size_t ndest, char *tag_out,
			 char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], addr[MXF_ADDR_SIZE], tag[TAG_LEN + 1];
	sqlite3_int64 dom_id, ids[MAX_DESTS];
	size_t nids;
	int r;

	if ((r = check_domain(domain, name, sizeof(name), err, errlen)) < 0)
		return r;
	if (mxf_addr_normalize(to, MXF_ADDR_UTF8, addr, sizeof(addr)) < 0) {
		seterr(err, errlen, "invalid --to address");
		return -EINVAL;
	}
	if (strcmp(addr_domain(addr), name) != 0) {
		seterr(err, errlen, "%s is not in domain %s", addr, name);
		return -EINVAL;
	}
	if ((r = new_tag(tag)) < 0) {
		seterr(err, errlen, "getrandom: %s", strerror(-r));
		return r;
	}
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = find_domain(db, name, name, sizeof(name), &dom_id, err, errlen)) < 0)
		goto out;
	if ((r = resolve_dests(db, action, dests, ndest, ids, &nids, err, errlen)) < 0)
		goto out;
	sqlite3_stmt *st;
	if ((r = prep(db, "INSERT INTO rules (tag, domain_id, priority, enabled, matcher, "
			  "match_to, action, created) VALUES (?1, ?2, 0, 1, 'literal', ?3, ?4, ?5)",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, tag, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, dom_id);
	sqlite3_bind_text(st, 3, addr, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, action, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = sqlerr(rc);
		if (r == -EEXIST)
			seterr(err, errlen, "a rule for %s already exists", addr);
		else
			r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if ((r = insert_dests(db, sqlite3_last_insert_rowid(db->db), ids, nids, err, errlen)) < 0)
		goto out;
	if ((r = commit(db, err, errlen)) < 0)
		return r;
	if (tag_out)
		memcpy(tag_out, tag, TAG_LEN + 1);
	return 0;
out:
	rollback(db);
	return r;
}

int mxf_rulesdb_catchall_set(struct mxf_rulesdb *db, const char *domain, const char *action,
			     const char *const *dests, size_t ndest, char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], tag[TAG_LEN + 1];
	sqlite3_int64 dom_id, ids[MAX_DESTS], rule_id;
	size_t nids;
	sqlite3_stmt *st;
	int r, rc;

	if ((r = check_domain(domain, name, sizeof(name), err, errlen)) < 0)
		return r;
	if ((r = new_tag(tag)) < 0) {
		seterr(err, errlen, "getrandom: %s", strerror(-r));
		return r;
	}
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = find_domain(db, name, name, sizeof(name), &dom_id, err, errlen)) < 0)
		goto out;
	if ((r = resolve_dests(db, action, dests, ndest, ids, &nids, err, errlen)) < 0)
		goto out;
	/* Replace in place: the catch-all keeps its tag across changes, so the
	 * activity log's rule column stays meaningful. */
	if ((r = prep(db, "SELECT id FROM rules WHERE domain_id = ?1 AND matcher = 'all'", &st, err,
		      errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, dom_id);
	rc = sqlite3_step(st);
	rule_id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if (rule_id) {
		if ((r = prep(db, "UPDATE rules SET action = ?1, enabled = 1 WHERE id = ?2", &st,
			      err, errlen)) < 0)
			goto out;
		sqlite3_bind_text(st, 1, action, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, rule_id);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE) {
			r = fail_sql(db, rc, err, errlen);
			goto out;
		}
		if ((r = prep(db, "DELETE FROM rule_dests WHERE rule_id = ?1", &st, err, errlen)) < 0)
			goto out;
		sqlite3_bind_int64(st, 1, rule_id);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE) {
			r = fail_sql(db, rc, err, errlen);
			goto out;
		}
	} else {
		if ((r = prep(db, "INSERT INTO rules (tag, domain_id, priority, enabled, matcher, "
				  "match_to, action, created) VALUES (?1, ?2, 0, 1, 'all', '', ?3, ?4)",
			      &st, err, errlen)) < 0)
			goto out;
		sqlite3_bind_text(st, 1, tag, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, dom_id);
		sqlite3_bind_text(st, 3, action, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE) {
			r = fail_sql(db, rc, err, errlen);
			goto out;
		}
		rule_id = sqlite3_last_insert_rowid(db->db);
	}
	if ((r = insert_dests(db, rule_id, ids, nids, err, errlen)) < 0)
		goto out;
	return commit(db, err, errlen);
out:
	rollback(db);
	return r;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *s = sqlite3_column_text(st, i);
	return s ? (const char *)s : "";
}

int mxf_rulesdb_rule_list(struct mxf_rulesdb *db,
			  int (*cb)(const struct mxf_rule_info *r, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int r = prep(db,
		     "SELECT r.tag, d.name, r.matcher, r.match_to, r.action, "
		     "  (SELECT group_concat(email, ',') FROM (SELECT a.email FROM rule_dests rd "
		     "     JOIN addresses a ON a.id = rd.address_id WHERE rd.rule_id = r.id "
		     "     ORDER BY a.email)), "
		     "  r.priority, r.enabled "
		     "FROM rules r JOIN domains d ON d.id = r.domain_id "
		     "ORDER BY d.name, r.matcher = 'all', r.priority, r.match_to, r.id",
		     &st, NULL, 0);
	if (r < 0)
		return r;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_rule_info ri = {
			.tag = col_text(st, 0),
			.domain = col_text(st, 1),
			.matcher = col_text(st, 2),
			.to = col_text(st, 3),
			.action = col_text(st, 4),
			.dests = col_text(st, 5),
			.priority = sqlite3_column_int(st, 6),
			.enabled = sqlite3_column_int(st, 7) != 0,
		};
		if ((r = cb(&ri, arg)) != 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sqlerr(rc) ? sqlerr(rc) : -EIO;
	sqlite3_finalize(st);
	return r;
}

/* ---- the compiled rule set ---- */

struct rs_rule {
	sqlite3_int64 id;
	char *tag;
	char *key;  /* literal: ASCII-lower-cased address; catch-all: domain name */
	bool all;
	bool drop;
	int priority;
	size_t ndest, nall; /* verified destinations kept / all listed */
	char **dests;
};

struct rs_domain {
	char *name;
	struct rs_rule *catchall; /* NULL when none (or disabled) */
};

struct mxf_ruleset {
	struct rs_domain *doms; /* sorted by name */
	size_t ndom;
	struct rs_rule *rules; /* every loaded rule, sorted by id while loading */
	size_t nrule;
	struct rs_rule **lit; /* literal rules sorted by (key, priority, id) */
	size_t nlit;
};

void mxf_ruleset_free(struct mxf_ruleset *rs)
{
	if (!rs)
		return;
	for (size_t i = 0; i < rs->ndom; i++)
		free(rs->doms[i].name);
	for (size_t i = 0; i < rs->nrule; i++) {
		struct rs_rule *ru = &rs->rules[i];
		free(ru->tag);
		free(ru->key);
		for (size_t j = 0; j < ru->ndest; j++)
			free(ru->dests[j]);
		free(ru->dests);
	}
	free(rs->doms);
	free(rs->rules);
	free(rs->lit);
	free(rs);
}

static void lower_ascii(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

static int cmp_dom(const void *a, const void *b)
{
	return strcmp(((const struct rs_domain *)a)->name, ((const struct rs_domain *)b)->name);
}

static int cmp_lit(const void *a, const void *b)
{
	const struct rs_rule *x = *(struct rs_rule *const *)a, *y = *(struct rs_rule *const *)b;
	int c = strcmp(x->key, y->key);
	if (c)
		return c;
	if (x->priority != y->priority)
		return x->priority < y->priority ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static struct rs_domain *find_dom(const struct mxf_ruleset *rs, const char *name)
{
	struct rs_domain key = {.name = (char *)name};
	return bsearch(&key, rs->doms, rs->ndom, sizeof(*rs->doms), cmp_dom);
}

static struct rs_rule *find_rule_id(struct mxf_ruleset *rs, sqlite3_int64 id)
{
	size_t lo = 0, hi = rs->nrule;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (rs->rules[mid].id == id)
			return &rs->rules[mid];
		if (rs->rules[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int load_domains(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "SELECT name FROM domains WHERE enabled = 1 ORDER BY name", &st, err,
		     errlen);
	if (r < 0)
		return r;
	size_t cap = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = col_text(st, 0);
		char a[MXF_DOMAIN_MAX + 1];
		if (mxf_domain_to_ascii(name, a, sizeof(a)) < 0 || strcmp(a, name) != 0) {
			seterr(err, errlen, "rules database: invalid domain %s", name);
			r = -EINVAL;
			break;
		}
		if (rs->ndom == cap) {
			cap = cap ? 2 * cap : 16;
			void *p = realloc(rs->doms, cap * sizeof(*rs->doms));
			if (!p) {
				r = -ENOMEM;
				break;
			}
			rs->doms = p;
		}
		rs->doms[rs->ndom] = (struct rs_domain){.name = strdup(name)};
		if (!rs->doms[rs->ndom].name) {
			r = -ENOMEM;
			break;
		}
		rs->ndom++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	if (r == -ENOMEM)
		seterr(err, errlen, "out of memory");
	if (r == 0 && rs->ndom)
		qsort(rs->doms, rs->ndom, sizeof(*rs->doms), cmp_dom);
	return r;
}

static int load_rules(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db,
		     "SELECT r.id, r.tag, d.name, r.matcher, r.match_to, r.action, r.priority "
		     "FROM rules r JOIN domains d ON d.id = r.domain_id "
		     "WHERE r.enabled = 1 AND d.enabled = 1 ORDER BY r.id",
		     &st, err, errlen);
	if (r < 0)
		return r;
	size_t cap = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *tag = col_text(st, 1), *dom = col_text(st, 2);
		const char *matcher = col_text(st, 3), *to = col_text(st, 4);
		const char *action = col_text(st, 5);
		bool all = strcmp(matcher, "all") == 0;
		char addr[MXF_ADDR_SIZE];
		if (!all) {
			if (strcmp(matcher, "literal") != 0 ||
			    mxf_addr_normalize(to, MXF_ADDR_UTF8, addr, sizeof(addr)) < 0 ||
			    strcmp(addr, to) != 0 || strcmp(addr_domain(addr), dom) != 0) {
				seterr(err, errlen, "rules database: rule %s: invalid to address",
				       tag);
				r = -EINVAL;
				break;
			}
		}
		if (strcmp(action, "forward") != 0 && strcmp(action, "drop") != 0) {
			seterr(err, errlen, "rules database: rule %s: invalid action", tag);
			r = -EINVAL;
			break;
		}
		if (rs->nrule == cap) {
			cap = cap ? 2 * cap : 16;
			void *p = realloc(rs->rules, cap * sizeof(*rs->rules));
			if (!p) {
				r = -ENOMEM;
				break;
			}
			rs->rules = p;
		}
		struct rs_rule *ru = &rs->rules[rs->nrule];
		*ru = (struct rs_rule){
			.id = sqlite3_column_int64(st, 0),
			.tag = strdup(tag),
			.key = strdup(all ? dom : to),
			.all = all,
			.drop = strcmp(action, "drop") == 0,
			.priority = sqlite3_column_int(st, 6),
		};
		rs->nrule++;
		if (!ru->tag || !ru->key) {
			r = -ENOMEM;
			break;
		}
		lower_ascii(ru->key);
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	if (r == -ENOMEM)
		seterr(err, errlen, "out of memory");
	return r;
}

static int load_dests(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db,
		     "SELECT rd.rule_id, a.email, a.verified FROM rule_dests rd "
		     "JOIN addresses a ON a.id = rd.address_id ORDER BY rd.rule_id, a.email",
		     &st, err, errlen);
	if (r < 0)
		return r;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct rs_rule *ru = find_rule_id(rs, sqlite3_column_int64(st, 0));
		if (!ru)
			continue; /* a disabled rule or domain */
		const char *email = col_text(st, 1);
		char addr[MXF_ADDR_SIZE];
		if (mxf_addr_normalize(email, MXF_ADDR_UTF8, addr, sizeof(addr)) < 0 ||
		    strcmp(addr, email) != 0) {
			seterr(err, errlen, "rules database: rule %s: invalid destination", ru->tag);
			r = -EINVAL;
			break;
		}
		if (ru->drop || ++ru->nall > MAX_DESTS) {
			seterr(err, errlen, "rules database: rule %s: wrong number of destinations",
			       ru->tag);
			r = -EINVAL;
			break;
		}
		/* Verification may be revoked after the rule was written: an
		 * unverified destination is left out, never forwarded to. */
		if (!sqlite3_column_int(st, 2))
			continue;
		if (!ru->dests && !(ru->dests = calloc(MAX_DESTS, sizeof(*ru->dests)))) {
			r = -ENOMEM;
			break;
		}
		if (!(ru->dests[ru->ndest] = strdup(addr))) {
			r = -ENOMEM;
			break;
		}
		ru->ndest++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	if (r == -ENOMEM)
		seterr(err, errlen, "out of memory");
	return r;
}

int mxf_ruleset_load(struct mxf_rulesdb *db, struct mxf_ruleset **out, char *err, size_t errlen)
{
	*out = NULL;
	struct mxf_ruleset *rs = calloc(1, sizeof(*rs));
	if (!rs) {
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* One read transaction: a consistent snapshot even while mxferryctl
	 * writes. */
	int r = exec(db, "BEGIN", err, errlen);
	if (r < 0)
		goto fail;
	if ((r = load_domains(db, rs, err, errlen)) < 0 || (r = load_rules(db, rs, err, errlen)) < 0 ||
	    (r = load_dests(db, rs, err, errlen)) < 0)
		goto fail;
	rollback(db);

	if (rs->nrule && !(rs->lit = calloc(rs->nrule, sizeof(*rs->lit)))) {
		seterr(err, errlen, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < rs->nrule; i++) {
		struct rs_rule *ru = &rs->rules[i];
		if (!ru->drop && ru->nall == 0) {
			seterr(err, errlen, "rules database: rule %s: forward without destination",
			       ru->tag);
			r = -EINVAL;
			goto fail;
		}
		if (ru->all) {
			struct rs_domain *d = find_dom(rs, ru->key);
			if (!d || d->catchall) {
				seterr(err, errlen, "rules database: rule %s: bad catch-all",
				       ru->tag);
				r = -EINVAL;
				goto fail;
			}
			d->catchall = ru;
		} else {
			rs->lit[rs->nlit++] = ru;
		}
	}
	if (rs->nlit)
		qsort(rs->lit, rs->nlit, sizeof(*rs->lit), cmp_lit);
	*out = rs;
	return 0;
fail:
	rollback(db);
	mxf_ruleset_free(rs);
	return r;
}

static void route_from(const struct rs_rule *ru, struct mxf_route *out)
{
	out->tag = ru->tag;
	if (ru->drop) {
		out->kind = MXF_ROUTE_DROP;
		return;
	}
	/* A forward rule whose destinations are all unverified cannot deliver
	 * anywhere: refuse the recipient (NO_RULE, tag kept for the log) rather
	 * than fall through to the catch-all, which the owner did not mean for
	 * this address. */
	if (ru->ndest == 0) {
		out->kind = MXF_ROUTE_NO_RULE;
		return;
	}
	out->kind = MXF_ROUTE_FORWARD;
	out->ndest = ru->ndest;
	out->dests = (const char *const *)ru->dests;
}

int mxf_ruleset_lookup(const struct mxf_ruleset *rs, const char *addr, struct mxf_route *out)
{
	*out = (struct mxf_route){.kind = MXF_ROUTE_NO_DOMAIN, .tag = "", .ndest = 0, .dests = NULL};
	char key[MXF_ADDR_SIZE];
	size_t len = strlen(addr);
	if (len >= sizeof(key) || !strrchr(addr, '@'))
		return -EINVAL;
	memcpy(key, addr, len + 1);
	lower_ascii(key);
	const struct rs_domain *d = find_dom(rs, addr_domain(key));
	if (!d)
		return 0;
	out->kind = MXF_ROUTE_NO_RULE;
	/* Literal rules sorted by (key, priority): the first match wins. */
	size_t lo = 0, hi = rs->nlit;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(rs->lit[mid]->key, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < rs->nlit && strcmp(rs->lit[lo]->key, key) == 0) {
		route_from(rs->lit[lo], out);
		return 0;
	}
	if (d->catchall)
		route_from(d->catchall, out);
	return 0;
}

size_t mxf_ruleset_count(const struct mxf_ruleset *rs)
{
	return rs->nrule;
}
