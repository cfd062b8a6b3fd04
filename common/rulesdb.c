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
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "access.h"
#include "address.h"
#include "config.h"
#include "dkim.h"

#define MAX_DESTS 25
#define TAG_LEN 32
#define BUSY_TIMEOUT_MS 5000

struct mxf_rulesdb {
	sqlite3 *db;
	bool writable;
	char actor[128]; /* who the audit log names for our writes */
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
	/* 2: wildcard matcher, reject and worker actions (with their argument),
	 * the per-domain unverified-destination policy, transports. SQLite cannot
	 * change a CHECK in place: the rules table is rebuilt (foreign keys are
	 * off during migrations, so rule_dests survives the DROP). */
	"CREATE TABLE rules_v2 ("
	"  id INTEGER PRIMARY KEY,"
	"  tag TEXT NOT NULL UNIQUE CHECK (length(tag) = 32 AND tag NOT GLOB '*[^0-9a-f]*'),"
	"  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 200),"
	"  priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 1000000),"
	"  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),"
	"  matcher TEXT NOT NULL CHECK (matcher IN ('literal', 'wildcard', 'all')),"
	"  match_to TEXT NOT NULL DEFAULT '' CHECK (length(match_to) <= 320),"
	"  action TEXT NOT NULL CHECK (action IN ('forward', 'drop', 'reject', 'worker')),"
	"  action_arg TEXT NOT NULL DEFAULT '' CHECK (length(action_arg) <= 200),"
	"  created INTEGER NOT NULL,"
	"  CHECK ((matcher = 'all') = (match_to = '')),"
	"  CHECK (matcher <> 'wildcard' OR instr(match_to, '*') > 0),"
	"  CHECK ((action IN ('reject', 'worker')) = (action_arg <> '')));"
	"INSERT INTO rules_v2 (id, tag, domain_id, name, priority, enabled, matcher, match_to,"
	"  action, created) SELECT id, tag, domain_id, name, priority, enabled, matcher, match_to,"
	"  action, created FROM rules;"
	"DROP TABLE rules;"
	"ALTER TABLE rules_v2 RENAME TO rules;"
	"CREATE UNIQUE INDEX rules_catchall ON rules(domain_id) WHERE matcher = 'all';"
	"CREATE UNIQUE INDEX rules_literal ON rules(domain_id, match_to COLLATE NOCASE)"
	"  WHERE matcher = 'literal';"
	"CREATE UNIQUE INDEX rules_wildcard ON rules(domain_id, match_to COLLATE NOCASE)"
	"  WHERE matcher = 'wildcard';"
	"ALTER TABLE domains ADD COLUMN unverified TEXT NOT NULL DEFAULT 'defer'"
	"  CHECK (unverified IN ('defer', 'reject'));"
	"CREATE TABLE transports ("
	"  domain TEXT PRIMARY KEY CHECK (length(domain) BETWEEN 1 AND 253"
	"    AND domain NOT GLOB '*[^a-z0-9.-]*'),"
	"  nexthop TEXT NOT NULL CHECK (length(nexthop) BETWEEN 3 AND 300),"
	"  created INTEGER NOT NULL) WITHOUT ROWID;",
	/* 3: the audit log (issue 8): one row per configuration change, written
	 * in the change's own transaction; before/after are JSON snapshots of
	 * the object (NULL when it did not exist / no longer exists). */
	"CREATE TABLE audit ("
	"  id INTEGER PRIMARY KEY,"
	"  ts INTEGER NOT NULL,"
	"  who TEXT NOT NULL CHECK (length(who) <= 200),"
	"  action TEXT NOT NULL,"
	"  object TEXT NOT NULL,"
	"  before TEXT,"
	"  after TEXT);"
	"CREATE INDEX audit_ts ON audit(ts);",
	/* 4: a second matcher (issue 4): the envelope sender, a comma-separated
	 * list of patterns (any may match) AND-ed with the recipient matcher.
	 * Several rules may then name one address, each for other senders, so
	 * the uniqueness of literal and wildcard rules takes the senders in. */
	"ALTER TABLE rules ADD COLUMN match_from TEXT NOT NULL DEFAULT ''"
	"  CHECK (length(match_from) <= 2000);"
	"DROP INDEX rules_literal;"
	"DROP INDEX rules_wildcard;"
	"CREATE UNIQUE INDEX rules_literal ON rules(domain_id, match_to COLLATE NOCASE, match_from)"
	"  WHERE matcher = 'literal';"
	"CREATE UNIQUE INDEX rules_wildcard ON rules(domain_id, match_to COLLATE NOCASE, match_from)"
	"  WHERE matcher = 'wildcard';",
	/* 5: verification of destination addresses by mail (issue 8): the
	 * SHA-256 of the one-time token sent to the address (never the token
	 * itself) and when it expires. */
	"ALTER TABLE addresses ADD COLUMN token_hash TEXT NOT NULL DEFAULT ''"
	"  CHECK (token_hash = '' OR (length(token_hash) = 64"
	"    AND token_hash NOT GLOB '*[^0-9a-f]*'));"
	"ALTER TABLE addresses ADD COLUMN token_expires INTEGER NOT NULL DEFAULT 0;",
	/* 6: DKIM keys (issue 7). The private key is a file only the router can
	 * read (data_dir/dkim/DOMAIN.SELECTOR.ALG.pem); the row says it exists,
	 * carries the public key for `domain dns`, and whether to sign with it. */
	"CREATE TABLE dkim_keys ("
	"  domain TEXT NOT NULL CHECK (length(domain) BETWEEN 1 AND 253"
	"    AND domain NOT GLOB '*[^a-z0-9.-]*'),"
	"  selector TEXT NOT NULL CHECK (length(selector) BETWEEN 1 AND 63"
	"    AND selector NOT GLOB '*[^a-z0-9.-]*'),"
	"  algorithm TEXT NOT NULL CHECK (algorithm IN ('rsa', 'ed25519')),"
	"  public_key TEXT NOT NULL CHECK (length(public_key) BETWEEN 1 AND 2000),"
	"  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),"
	"  created INTEGER NOT NULL,"
	"  PRIMARY KEY (domain, selector)) WITHOUT ROWID;",
	/* 7 (issue 11): the operator's allow and block lists. value is in the
	 * form mxf_access_parse gives (validated by the writers and again by the
	 * router's load); kind says which of client address range, domain or
	 * sender address it is. */
	"CREATE TABLE access ("
	"  id INTEGER PRIMARY KEY,"
	"  list TEXT NOT NULL CHECK (list IN ('allow', 'block')),"
	"  kind TEXT NOT NULL CHECK (kind IN ('ip', 'domain', 'address')),"
	"  value TEXT NOT NULL CHECK (length(value) BETWEEN 1 AND 329),"
	"  reason TEXT NOT NULL DEFAULT '' CHECK (length(reason) <= 200),"
	"  created INTEGER NOT NULL,"
	"  UNIQUE (list, value));",
	/* 8: the code a reject rule answers with (issue 8's --code): 0 is the
	 * default 550; 4xx ones make the sender try again later. */
	"ALTER TABLE rules ADD COLUMN reject_code INTEGER NOT NULL DEFAULT 0"
	"  CHECK (reject_code IN (0, 450, 451, 452, 550, 551, 552, 553, 554));",
	/* 9 (issue 13): worker definitions. A js worker's module source is kept
	 * here (copied at `worker add`), so editing the original file changes
	 * nothing until the operator adds it again, every change is audited,
	 * and workerd needs no file access: the router sends the source with
	 * each message (hence the size bound, under the 64 KiB IPC message). */
	"CREATE TABLE workers ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64"
	"    AND name NOT GLOB '*[^A-Za-z0-9._-]*'),"
	"  runtime TEXT NOT NULL CHECK (runtime IN ('js', 'program')),"
	"  path TEXT NOT NULL DEFAULT '' CHECK (length(path) <= 1024),"
	"  source TEXT NOT NULL DEFAULT '' CHECK (length(CAST(source AS BLOB)) <= 49152),"
	"  env TEXT NOT NULL DEFAULT '{}' CHECK (length(env) <= 40000),"
	"  timeout INTEGER NOT NULL DEFAULT 30 CHECK (timeout BETWEEN 1 AND 120),"
	"  created INTEGER NOT NULL,"
	"  CHECK ((runtime = 'js') = (source <> '')),"
	"  CHECK ((runtime = 'program') = (path <> '')));",
	/* 10: per-domain DMARC enforcement (issue 7): '' follows [auth] dmarc;
	 * enforce refuses p=reject failures for this domain's recipients,
	 * monitor only records them. */
	"ALTER TABLE domains ADD COLUMN dmarc TEXT NOT NULL DEFAULT ''"
	"  CHECK (dmarc IN ('', 'enforce', 'monitor'));",
	/* 11 (issue 13): the webhook action, whose argument is a URL of up to
	 * 1000 characters. SQLite cannot change a CHECK in place: the rules
	 * table is rebuilt as in migration 2, with every column and index the
	 * later migrations added (foreign keys are off during migrations, so
	 * rule_dests survives the DROP). */
	"CREATE TABLE rules_v11 ("
	"  id INTEGER PRIMARY KEY,"
	"  tag TEXT NOT NULL UNIQUE CHECK (length(tag) = 32 AND tag NOT GLOB '*[^0-9a-f]*'),"
	"  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 200),"
	"  priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 1000000),"
	"  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),"
	"  matcher TEXT NOT NULL CHECK (matcher IN ('literal', 'wildcard', 'all')),"
	"  match_to TEXT NOT NULL DEFAULT '' CHECK (length(match_to) <= 320),"
	"  action TEXT NOT NULL CHECK (action IN ('forward', 'drop', 'reject', 'worker',"
	"    'webhook')),"
	"  action_arg TEXT NOT NULL DEFAULT '' CHECK (length(action_arg) <= 1000),"
	"  created INTEGER NOT NULL,"
	"  match_from TEXT NOT NULL DEFAULT '' CHECK (length(match_from) <= 2000),"
	"  reject_code INTEGER NOT NULL DEFAULT 0"
	"    CHECK (reject_code IN (0, 450, 451, 452, 550, 551, 552, 553, 554)),"
	"  CHECK ((matcher = 'all') = (match_to = '')),"
	"  CHECK (matcher <> 'wildcard' OR instr(match_to, '*') > 0),"
	"  CHECK ((action IN ('reject', 'worker', 'webhook')) = (action_arg <> '')),"
	"  CHECK (action = 'webhook' OR length(action_arg) <= 200));"
	"INSERT INTO rules_v11 (id, tag, domain_id, name, priority, enabled, matcher, match_to,"
	"  action, action_arg, created, match_from, reject_code) SELECT id, tag, domain_id, name,"
	"  priority, enabled, matcher, match_to, action, action_arg, created, match_from,"
	"  reject_code FROM rules;"
	"DROP TABLE rules;"
	"ALTER TABLE rules_v11 RENAME TO rules;"
	"CREATE UNIQUE INDEX rules_catchall ON rules(domain_id) WHERE matcher = 'all';"
	"CREATE UNIQUE INDEX rules_literal ON rules(domain_id, match_to COLLATE NOCASE, match_from)"
	"  WHERE matcher = 'literal';"
	"CREATE UNIQUE INDEX rules_wildcard ON rules(domain_id, match_to COLLATE NOCASE, match_from)"
	"  WHERE matcher = 'wildcard';",
	/* 12: whether a worker may open Internet sockets (issue 13: "only the
	 * network access the operator grants"); off unless granted. */
	"ALTER TABLE workers ADD COLUMN network INTEGER NOT NULL DEFAULT 0"
	"  CHECK (network IN (0, 1));",
	/* 13 (issue 12, apid): stable 32-hex ids for domains (the API's zone_id)
	 * and addresses (set by the INSERTs: triggers are off on our
	 * connections); the
	 * installation's id (account_id); API tokens, of which only the SHA-256
	 * of the secret is kept. */
	"ALTER TABLE domains ADD COLUMN uid TEXT"
	"  CHECK (uid IS NULL OR (length(uid) = 32 AND uid NOT GLOB '*[^0-9a-f]*'));"
	"UPDATE domains SET uid = lower(hex(randomblob(16)));"
	"CREATE UNIQUE INDEX domains_uid ON domains(uid);"
	"ALTER TABLE addresses ADD COLUMN uid TEXT"
	"  CHECK (uid IS NULL OR (length(uid) = 32 AND uid NOT GLOB '*[^0-9a-f]*'));"
	"UPDATE addresses SET uid = lower(hex(randomblob(16)));"
	"CREATE UNIQUE INDEX addresses_uid ON addresses(uid);"
	"INSERT OR IGNORE INTO settings (key, value) VALUES ('account_id', lower(hex(randomblob(16))));"
	"CREATE TABLE api_tokens ("
	"  uid TEXT NOT NULL UNIQUE CHECK (length(uid) = 32 AND uid NOT GLOB '*[^0-9a-f]*'),"
	"  name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64"
	"    AND name NOT GLOB '*[^A-Za-z0-9._-]*'),"
	"  hash BLOB NOT NULL CHECK (length(hash) = 32),"
	"  read_only INTEGER NOT NULL DEFAULT 0 CHECK (read_only IN (0, 1)),"
	"  created INTEGER NOT NULL) WITHOUT ROWID;",
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

/* The end of a loop over rows: r (a callback's stop) or the step's error
 * (rc other than SQLITE_DONE), with the statement finalized. */
static int rows_done(sqlite3_stmt *st, int r, int rc)
{
	if (r == 0 && rc != SQLITE_DONE)
		r = sqlerr(rc) ? sqlerr(rc) : -EIO;
	sqlite3_finalize(st);
	return r;
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
	*v = 0;
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
		int v = 0, r;
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
		/* Create the file ourselves so it is born 0660 (the router's group
		 * is the router and apid, which writes it; API token hashes and
		 * DKIM public keys are in it: nothing for others), never
		 * through a symlink. */
		int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0660);
		/* Whatever the umask: the group's write bit is the point. */
		if (fd >= 0 && fchmod(fd, 0660) < 0) {
			int e = errno;
			close(fd);
			seterr(err, errlen, "%s: %s", path, strerror(e));
			return -e;
		}
		if (fd < 0 && errno == EEXIST)
			fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
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
	if (writable) {
		/* Migrations run with foreign keys off (a table rebuild must not
		 * cascade), as SQLite's ALTER TABLE documentation prescribes. */
		if ((r = migrate(db, err, errlen)) < 0)
			goto fail;
		/* The router only reads; an fsync'd rollback journal (the default)
		 * keeps each transaction durable. */
		if ((r = exec(db, "PRAGMA synchronous = FULL", err, errlen)) < 0)
			goto fail;
	}
	if ((r = exec(db, "PRAGMA foreign_keys = ON", err, errlen)) < 0)
		goto fail;
	if (!writable) {
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

static const char *col_text(sqlite3_stmt *st, int i);

/* ---- audit ---- */

void mxf_rulesdb_set_actor(struct mxf_rulesdb *db, const char *who)
{
	snprintf(db->actor, sizeof(db->actor), "%s", who ? who : "");
}

/* JSON snapshots of one object, taken inside the writer's transaction. */
#define SNAP_DOMAIN                                                                               \
	"SELECT json_object('domain', name, 'enabled', enabled, 'subaddressing', subaddressing, "  \
	"'unverified', unverified, 'dmarc', dmarc) FROM domains WHERE name = ?1"
#define SNAP_ADDRESS                                                                              \
	"SELECT json_object('address', email, 'verified', verified) FROM addresses WHERE email = ?1"
#define SNAP_TOKEN                                                                                \
	"SELECT json_object('token', name, 'id', uid, 'read_only', read_only) FROM api_tokens "   \
	"WHERE name = ?1"
#define SNAP_TRANSPORT                                                                            \
	"SELECT json_object('domain', domain, 'nexthop', nexthop) FROM transports WHERE domain = ?1"
#define SNAP_RULE                                                                                 \
	"SELECT json_object('tag', r.tag, 'domain', d.name, 'name', r.name, 'priority', "         \
	"r.priority, 'enabled', r.enabled, 'matcher', r.matcher, 'to', r.match_to, 'action', "    \
	"r.action, 'argument', r.action_arg, 'code', r.reject_code, 'from', r.match_from, "  \
	"'destinations', "              \
	"(SELECT json_group_array(email) FROM (SELECT a.email FROM rule_dests rd JOIN addresses a ON a.id = rd.address_id "       \
	"WHERE rd.rule_id = r.id ORDER BY a.email))) FROM rules r "                               \
	"JOIN domains d ON d.id = r.domain_id WHERE r.id = ?1"

/* *out: malloc'd JSON, or NULL when there is no such row. */
static int snapshot(struct mxf_rulesdb *db, const char *sql, const char *key, sqlite3_int64 id,
		    char **out, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	*out = NULL;
	int r = prep(db, sql, &st, err, errlen);
	if (r < 0)
		return r;
	if (key)
		sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *j = (const char *)sqlite3_column_text(st, 0);
		if (j && !(*out = strdup(j))) {
			seterr(err, errlen, "out of memory");
			r = -ENOMEM;
		}
	} else if (rc != SQLITE_DONE) {
		r = fail_sql(db, rc, err, errlen);
	}
	sqlite3_finalize(st);
	return r;
}

/* Records a change; the caller commits it with the change or not at all. */
static int audit(struct mxf_rulesdb *db, const char *action, const char *object,
		 const char *before, const char *after, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "INSERT INTO audit (ts, who, action, object, before, after) "
			 "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
		     &st, err, errlen);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
	sqlite3_bind_text(st, 2, db->actor[0] ? db->actor : "unknown", -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, action, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, object, -1, SQLITE_TRANSIENT);
	if (before)
		sqlite3_bind_text(st, 5, before, -1, SQLITE_TRANSIENT);
	if (after)
		sqlite3_bind_text(st, 6, after, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : fail_sql(db, rc, err, errlen);
}

/* Snapshot after the change and record it (before: taken by the caller). */
static int audit_after(struct mxf_rulesdb *db, const char *action, const char *object,
		       const char *before, const char *sql, const char *key, sqlite3_int64 id,
		       char *err, size_t errlen)
{
	char *after = NULL;
	int r = snapshot(db, sql, key, id, &after, err, errlen);
	if (r == 0)
		r = audit(db, action, object, before, after, err, errlen);
	free(after);
	return r;
}

int mxf_rulesdb_audit_list(struct mxf_rulesdb *db, long long since, long long limit,
			   int (*cb)(const struct mxf_audit_entry *e, void *arg), void *arg)
{
	sqlite3_stmt *st;
	/* The newest "limit" entries since "since", oldest first. */
	int r = prep(db,
		     /* Whoever can write the file (the router's user) must not be
		      * able to hand readers malformed JSON: invalid text comes out
		      * as a JSON string. */
		     "SELECT id, ts, who, action, object, "
		     "  CASE WHEN before IS NULL THEN NULL WHEN json_valid(before) THEN json(before) "
		     "    ELSE json_quote(before) END, "
		     "  CASE WHEN after IS NULL THEN NULL WHEN json_valid(after) THEN json(after) "
		     "    ELSE json_quote(after) END "
		     "FROM (SELECT * FROM audit WHERE ts >= ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
		     &st, NULL, 0);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, since);
	sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_audit_entry e = {
			.id = sqlite3_column_int64(st, 0),
			.ts = sqlite3_column_int64(st, 1),
			.who = (const char *)sqlite3_column_text(st, 2),
			.action = (const char *)sqlite3_column_text(st, 3),
			.object = (const char *)sqlite3_column_text(st, 4),
			.before = (const char *)sqlite3_column_text(st, 5),
			.after = (const char *)sqlite3_column_text(st, 6),
		};
		if ((r = cb(&e, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
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
	if ((r = prep(db, "INSERT INTO domains (name, enabled, subaddressing, created, uid) "
			  "VALUES (?1, 1, 0, ?2, lower(hex(randomblob(16))))",
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
		r = audit_after(db, "domain.add", name, NULL, SNAP_DOMAIN, name, 0, err, errlen);
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
	if ((r = prep(db, "INSERT INTO addresses (email, verified, created, uid) "
			  "VALUES (?1, ?2, ?3, lower(hex(randomblob(16))))",
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
		r = audit_after(db, "address.add", addr, NULL, SNAP_ADDRESS, addr, 0, err, errlen);
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
	if (strcmp(action, "drop") == 0 || strcmp(action, "reject") == 0 ||
	    strcmp(action, "worker") == 0 || strcmp(action, "webhook") == 0) {
		if (ndest != 0) {
			seterr(err, errlen, "a %s rule takes no destination", action);
			return -EINVAL;
		}
		return 0;
	}
	if (strcmp(action, "forward") != 0) {
		seterr(err, errlen, "unknown action (forward, drop, reject, worker or webhook)");
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


/* Reject reasons reach an SMTP reply line: printable ASCII only, bounded.
 * Returns the length written (0: nothing printable was given). */
static size_t sanitize_text(const char *in, char *out, size_t outlen)
{
	size_t o = 0;
	while (*in == ' ' || *in == '\t')
		in++;
	for (; *in && o + 1 < outlen && o < 200; in++) {
		unsigned char c = (unsigned char)*in;
		out[o++] = c >= 0x20 && c <= 0x7e ? (char)c : '?';
	}
	while (o && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	return o;
}

bool mxf_rulesdb_webhook_url_ok(const char *s)
{
	size_t n = strlen(s), scheme;
	if (strncasecmp(s, "http://", 7) == 0)
		scheme = 7;
	else if (strncasecmp(s, "https://", 8) == 0)
		scheme = 8;
	else
		return false;
	if (n > MXF_WEBHOOK_URL_MAX || n == scheme || s[scheme] == '/' || s[scheme] == '?' ||
	    s[scheme] == '#')
		return false;
	/* The URL goes to libcurl, the activity log and the envelope: printable
	 * ASCII without spaces, so it can neither split a line nor hide a
	 * second value; curl parses it again in deliverd. */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

static bool worker_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* A reject rule's code: 0 (the default, 550) or one of these; for other
 * actions only 0. */
static int check_code(const char *action, int code, char *err, size_t errlen)
{
	static const int ok[] = {0, 450, 451, 452, 550, 551, 552, 553, 554};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (code == ok[i] && (code == 0 || strcmp(action, "reject") == 0))
			return 0;
	seterr(err, errlen, code && strcmp(action, "reject") != 0
				    ? "--code goes with --reject"
				    : "--code takes 450, 451, 452 or 550 to 554");
	return -EINVAL;
}

/* The action's argument: out gets the stored form. */
static int check_arg(const char *action, const char *arg, char *out, size_t outlen, char *err,
		     size_t errlen)
{
	out[0] = '\0';
	if (strcmp(action, "reject") == 0) {
		if (!arg || sanitize_text(arg, out, outlen) == 0) {
			seterr(err, errlen, "a reject rule needs a reason text");
			return -EINVAL;
		}
		return 0;
	}
	if (strcmp(action, "worker") == 0) {
		if (!arg || !worker_name_ok(arg)) {
			seterr(err, errlen, "a worker rule needs a program name ([A-Za-z0-9._-], "
					    "at most 64)");
			return -EINVAL;
		}
		snprintf(out, outlen, "%s", arg);
		return 0;
	}
	if (strcmp(action, "webhook") == 0) {
		if (!arg || !mxf_rulesdb_webhook_url_ok(arg)) {
			seterr(err, errlen, "a webhook rule needs an http:// or https:// URL (at most "
					    "1000 characters, no spaces or control characters)");
			return -EINVAL;
		}
		if (strlen(arg) >= outlen)
			return -EINVAL;
		snprintf(out, outlen, "%s", arg);
		return 0;
	}
	if (arg && *arg) {
		seterr(err, errlen, "a %s rule takes no text", action);
		return -EINVAL;
	}
	return 0;
}

/* The matcher's address or pattern, normalised, within domain (A-label). */
static int check_match(const char *matcher, const char *to, const char *domain, char *out,
		       size_t outlen, char *err, size_t errlen)
{
	out[0] = '\0';
	if (strcmp(matcher, "all") == 0) {
		if (to && *to) {
			seterr(err, errlen, "a catch-all takes no address");
			return -EINVAL;
		}
		return 0;
	}
	bool wild = strcmp(matcher, "wildcard") == 0;
	if (!wild && strcmp(matcher, "literal") != 0) {
		seterr(err, errlen, "unknown matcher (literal, wildcard or all)");
		return -EINVAL;
	}
	/* '*' is an atext character: a pattern normalises like an address. */
	if (!to || mxf_addr_normalize(to, MXF_ADDR_UTF8, out, outlen) < 0) {
		seterr(err, errlen, wild ? "invalid --match pattern" : "invalid --to address");
		return -EINVAL;
	}
	const char *at = strrchr(out, '@');
	if (strcmp(at + 1, domain) != 0) {
		seterr(err, errlen, "%s is not in domain %s", out, domain);
		return -EINVAL;
	}
	if (wild && !memchr(out, '*', (size_t)(at - out))) {
		seterr(err, errlen, "a --match pattern needs a '*' in its local part");
		return -EINVAL;
	}
	return 0;
}

static void lower_ascii(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

#define MAX_FROM 16

/* One envelope-sender pattern, normalised into out: "<>" (the null sender),
 * or an address pattern where '*' matches any run of characters; compared
 * ASCII-case-insensitively, so stored lower-cased, the domain as A-labels
 * when it has no '*'. */
static int check_from_one(const char *in, size_t len, char *out, size_t outlen, char *err,
			  size_t errlen)
{
	if (len == 0 || len >= outlen || len > 320) {
		seterr(err, errlen, "--from: empty or over-long sender pattern");
		return -EINVAL;
	}
	memcpy(out, in, len);
	out[len] = '\0';
	if (strcmp(out, "<>") == 0)
		return 0;
	for (const unsigned char *c = (const unsigned char *)out; *c; c++)
		if (*c <= ' ' || *c == 0x7f || *c == '<' || *c == '>' || *c == '"' || *c == '\\') {
			seterr(err, errlen, "--from: invalid character in sender pattern %s", out);
			return -EINVAL;
		}
	lower_ascii(out);
	char *at = strrchr(out, '@');
	if (!at && strcmp(out, "*") != 0) {
		seterr(err, errlen, "--from: %s is neither an address pattern, '*' nor '<>'", out);
		return -EINVAL;
	}
	if (at && !strchr(at, '*')) {
		char dom[MXF_DOMAIN_MAX + 1];
		if (mxf_domain_to_ascii(at + 1, dom, sizeof(dom)) < 0 ||
		    (size_t)(at + 1 - out) + strlen(dom) >= outlen) {
			seterr(err, errlen, "--from: invalid domain in sender pattern %s", out);
			return -EINVAL;
		}
		strcpy(at + 1, dom);
	}
	return 0;
}

static int cmp_pat(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

/* A comma-separated list of sender patterns (NULL or "": any sender),
 * normalised into out: sorted, without duplicates or blanks, so one set of
 * senders has one spelling (the uniqueness of rules relies on it). */
static int check_from(const char *in, char *out, size_t outlen, char *err, size_t errlen)
{
	char pat[MAX_FROM][MXF_ADDR_SIZE];
	size_t n = 0, o = 0;
	out[0] = '\0';
	for (const char *p = in ? in : ""; *p;) {
		p += strspn(p, " \t");
		size_t l = strcspn(p, ",");
		size_t t = l;
		while (t && (p[t - 1] == ' ' || p[t - 1] == '\t'))
			t--;
		if (n == MAX_FROM) {
			seterr(err, errlen, "--from: at most %d sender patterns", MAX_FROM);
			return -EINVAL;
		}
		int r = check_from_one(p, t, pat[n], sizeof(pat[n]), err, errlen);
		if (r < 0)
			return r;
		n++;
		p += l + (p[l] == ',');
	}
	qsort(pat, n, sizeof(pat[0]), cmp_pat);
	for (size_t i = 0; i < n; i++) {
		if (i && strcmp(pat[i], pat[i - 1]) == 0)
			continue;
		if (o + strlen(pat[i]) + 2 > outlen || o + strlen(pat[i]) + 1 > 2000) {
			seterr(err, errlen, "--from: sender patterns too long");
			return -EINVAL;
		}
		o += (size_t)snprintf(out + o, outlen - o, "%s%s", o ? "," : "", pat[i]);
	}
	return 0;
}

static int step_done(struct mxf_rulesdb *db, sqlite3_stmt *st, char *err, size_t errlen)
{
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : fail_sql(db, rc, err, errlen);
}

int mxf_rulesdb_rule_create(struct mxf_rulesdb *db, const struct mxf_rule_spec *s, char *tag_out,
			    char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], addr[MXF_ADDR_SIZE], tag[TAG_LEN + 1];
	char arg[MXF_WEBHOOK_URL_MAX + 1];
	char from[2048];
	sqlite3_int64 dom_id, ids[MAX_DESTS];
	size_t nids;
	int r;

	if (!s->domain || !s->action || !s->matcher) {
		seterr(err, errlen, "incomplete rule");
		return -EINVAL;
	}
	if (strcmp(s->matcher, "all") == 0) {
		seterr(err, errlen, "use catchall set for the catch-all");
		return -EINVAL;
	}
	if ((r = check_domain(s->domain, name, sizeof(name), err, errlen)) < 0 ||
	    (r = check_match(s->matcher, s->to, name, addr, sizeof(addr), err, errlen)) < 0 ||
	    (r = check_arg(s->action, s->arg, arg, sizeof(arg), err, errlen)) < 0 ||
	    (r = check_code(s->action, s->code, err, errlen)) < 0 ||
	    (r = check_from(s->from, from, sizeof(from), err, errlen)) < 0)
		return r;
	if (s->priority < 0 || s->priority > 1000000) {
		seterr(err, errlen, "priority must be 0 to 1000000");
		return -EINVAL;
	}
	if (s->name && strlen(s->name) > 200) {
		seterr(err, errlen, "rule name longer than 200 bytes");
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
	if ((r = resolve_dests(db, s->action, s->dests, s->ndest, ids, &nids, err, errlen)) < 0)
		goto out;
	sqlite3_stmt *st;
	if ((r = prep(db, "INSERT INTO rules (tag, domain_id, name, priority, enabled, matcher, "
			  "match_to, action, action_arg, created, match_from, reject_code) "
			  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, tag, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, dom_id);
	sqlite3_bind_text(st, 3, s->name ? s->name : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 4, s->priority);
	sqlite3_bind_int(st, 5, s->disabled ? 0 : 1);
	sqlite3_bind_text(st, 6, s->matcher, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 7, addr, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 8, s->action, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 9, arg, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)time(NULL));
	sqlite3_bind_text(st, 11, from, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 12, s->code);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = sqlerr(rc);
		if (r == -EEXIST)
			seterr(err, errlen, "a rule for %s%s%s already exists", addr,
			       *from ? " from " : "", from);
		else
			r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	sqlite3_int64 new_id = sqlite3_last_insert_rowid(db->db);
	if ((r = insert_dests(db, new_id, ids, nids, err, errlen)) < 0 ||
	    (r = audit_after(db, "rule.add", tag, NULL, SNAP_RULE, NULL, new_id, err, errlen)) < 0)
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

int mxf_rulesdb_rule_add(struct mxf_rulesdb *db, const char *domain, const char *to,
			 const char *action, const char *const *dests, size_t ndest, char *tag_out,
			 char *err, size_t errlen)
{
	struct mxf_rule_spec s = {.domain = domain, .matcher = "literal", .to = to,
				  .action = action, .dests = dests, .ndest = ndest};
	return mxf_rulesdb_rule_create(db, &s, tag_out, err, errlen);
}

static int catchall_write(struct mxf_rulesdb *db, const struct mxf_rule_spec *s,
			  sqlite3_int64 dom_id, sqlite3_int64 *rule_idp, const char *tag,
			  const char *arg, const sqlite3_int64 *ids, size_t nids, char *err,
			  size_t errlen);

int mxf_rulesdb_catchall_put(struct mxf_rulesdb *db, const struct mxf_rule_spec *s, char *err,
			     size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], tag[TAG_LEN + 1], arg[MXF_WEBHOOK_URL_MAX + 1];
	sqlite3_int64 dom_id, ids[MAX_DESTS], rule_id;
	size_t nids;
	sqlite3_stmt *st;
	int r, rc;

	if (!s->domain || !s->action) {
		seterr(err, errlen, "incomplete catch-all");
		return -EINVAL;
	}
	if (s->from && *s->from) {
		/* The catch-all is the unconditional last resort; a rule for some
		 * senders to any address is a "*@domain" wildcard with --from. */
		seterr(err, errlen, "a catch-all takes no --from (use --match '*@DOMAIN' --from)");
		return -EINVAL;
	}
	if ((r = check_domain(s->domain, name, sizeof(name), err, errlen)) < 0 ||
	    (r = check_arg(s->action, s->arg, arg, sizeof(arg), err, errlen)) < 0 ||
	    (r = check_code(s->action, s->code, err, errlen)) < 0)
		return r;
	if ((r = new_tag(tag)) < 0) {
		seterr(err, errlen, "getrandom: %s", strerror(-r));
		return r;
	}
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = find_domain(db, name, name, sizeof(name), &dom_id, err, errlen)) < 0)
		goto out;
	if ((r = resolve_dests(db, s->action, s->dests, s->ndest, ids, &nids, err, errlen)) < 0)
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
	char *before = NULL;
	if (rule_id && (r = snapshot(db, SNAP_RULE, NULL, rule_id, &before, err, errlen)) < 0)
		goto out;
	r = catchall_write(db, s, dom_id, &rule_id, tag, arg, ids, nids, err, errlen);
	if (r == 0)
		r = audit_after(db, "catchall.set", name, before, SNAP_RULE, NULL, rule_id, err,
				errlen);
	free(before);
	if (r < 0)
		goto out;
	return commit(db, err, errlen);
out:
	rollback(db);
	return r;
}

static int catchall_write(struct mxf_rulesdb *db, const struct mxf_rule_spec *s,
			  sqlite3_int64 dom_id, sqlite3_int64 *rule_idp, const char *tag,
			  const char *arg, const sqlite3_int64 *ids, size_t nids, char *err,
			  size_t errlen)
{
	sqlite3_stmt *st;
	sqlite3_int64 rule_id = *rule_idp;
	int r;
	if (rule_id) {
		if ((r = prep(db, "UPDATE rules SET action = ?1, action_arg = ?2, enabled = 1, "
				  "reject_code = ?4 WHERE id = ?3",
			      &st, err, errlen)) < 0)
			goto out;
		sqlite3_bind_text(st, 1, s->action, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, arg, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, rule_id);
		sqlite3_bind_int(st, 4, s->code);
		if ((r = step_done(db, st, err, errlen)) < 0)
			goto out;
		if ((r = prep(db, "DELETE FROM rule_dests WHERE rule_id = ?1", &st, err, errlen)) < 0)
			goto out;
		sqlite3_bind_int64(st, 1, rule_id);
		if ((r = step_done(db, st, err, errlen)) < 0)
			goto out;
	} else {
		if ((r = prep(db, "INSERT INTO rules (tag, domain_id, name, priority, enabled, "
				  "matcher, match_to, action, action_arg, created, reject_code) "
				  "VALUES (?1, ?2, ?3, 0, 1, 'all', '', ?4, ?5, ?6, ?7)",
			      &st, err, errlen)) < 0)
			goto out;
		sqlite3_bind_text(st, 1, tag, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, dom_id);
		sqlite3_bind_text(st, 3, s->name ? s->name : "catch-all", -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 4, s->action, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 5, arg, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)time(NULL));
		sqlite3_bind_int(st, 7, s->code);
		if ((r = step_done(db, st, err, errlen)) < 0)
			goto out;
		rule_id = sqlite3_last_insert_rowid(db->db);
	}
	*rule_idp = rule_id;
	r = insert_dests(db, rule_id, ids, nids, err, errlen);
out:
	return r;
}

int mxf_rulesdb_catchall_set(struct mxf_rulesdb *db, const char *domain, const char *action,
			     const char *const *dests, size_t ndest, char *err, size_t errlen)
{
	struct mxf_rule_spec s = {.domain = domain, .matcher = "all", .action = action,
				  .dests = dests, .ndest = ndest};
	return mxf_rulesdb_catchall_put(db, &s, err, errlen);
}

/* The id of the rule named by tag, or by a name exactly one rule has. */
static int find_rule(struct mxf_rulesdb *db, const char *which, sqlite3_int64 *id, char *err,
		     size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "SELECT id FROM rules WHERE tag = ?1 UNION ALL "
			 "SELECT id FROM rules WHERE name = ?1 AND name <> '' AND tag <> ?1 LIMIT 2",
		     &st, err, errlen);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, which, -1, SQLITE_TRANSIENT);
	int n = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n++ == 0)
			*id = sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return fail_sql(db, rc, err, errlen);
	if (n == 0) {
		seterr(err, errlen, "no rule with tag or name %s", which);
		return -ENOENT;
	}
	if (n > 1) {
		seterr(err, errlen, "several rules are named %s; give the tag", which);
		return -EINVAL;
	}
	return 0;
}

static int rule_tag(struct mxf_rulesdb *db, sqlite3_int64 id, char tag[TAG_LEN + 1], char *err,
		    size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "SELECT tag FROM rules WHERE id = ?1", &st, err, errlen);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		snprintf(tag, TAG_LEN + 1, "%s", (const char *)sqlite3_column_text(st, 0));
	else
		r = rc == SQLITE_DONE ? -ENOENT : fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	return r;
}

static int rule_update(struct mxf_rulesdb *db, const char *which, const char *sql, int val,
		       const char *action, char *err, size_t errlen)
{
	sqlite3_int64 id = 0;
	sqlite3_stmt *st;
	char tag[TAG_LEN + 1], *before = NULL;
	int r = begin_write(db, err, errlen);
	if (r < 0)
		return r;
	if ((r = find_rule(db, which, &id, err, errlen)) < 0 ||
	    (r = rule_tag(db, id, tag, err, errlen)) < 0 ||
	    (r = snapshot(db, SNAP_RULE, NULL, id, &before, err, errlen)) < 0 ||
	    (r = prep(db, sql, &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	if (val >= 0)
		sqlite3_bind_int(st, 2, val);
	if ((r = step_done(db, st, err, errlen)) < 0 ||
	    (r = audit_after(db, action, tag, before, SNAP_RULE, NULL, id, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	free(before);
	rollback(db);
	return r;
}

int mxf_rulesdb_rule_remove(struct mxf_rulesdb *db, const char *which, char *err, size_t errlen)
{
	return rule_update(db, which, "DELETE FROM rules WHERE id = ?1", -1, "rule.remove", err,
			   errlen);
}

int mxf_rulesdb_rule_enable(struct mxf_rulesdb *db, const char *which, bool enabled, char *err,
			    size_t errlen)
{
	return rule_update(db, which, "UPDATE rules SET enabled = ?2 WHERE id = ?1", enabled ? 1 : 0,
			   enabled ? "rule.enable" : "rule.disable", err, errlen);
}

int mxf_rulesdb_rule_edit(struct mxf_rulesdb *db, const char *which, const struct mxf_rule_edit *e,
			  char *err, size_t errlen)
{
	char dom[MXF_DOMAIN_MAX + 1], matcher[16], to[MXF_ADDR_SIZE], action[16];
	char arg[MXF_WEBHOOK_URL_MAX + 1];
	char tag[TAG_LEN + 1], name[256], from[2048], *before = NULL;
	sqlite3_int64 id = 0, ids[MAX_DESTS];
	size_t nids = 0;
	int prio = 0, enabled = 1, r, rc;
	sqlite3_stmt *st = NULL;

	if (e->name && strlen(e->name) > 200) {
		seterr(err, errlen, "rule name longer than 200 bytes");
		return -EINVAL;
	}
	if (e->priority > 1000000 || e->priority < -1) {
		seterr(err, errlen, "priority must be 0 to 1000000");
		return -EINVAL;
	}
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = find_rule(db, which, &id, err, errlen)) < 0 ||
	    (r = prep(db, "SELECT d.name, r.matcher, r.match_to, r.action, r.action_arg, r.name, "
			  "r.priority, r.enabled, r.tag, r.match_from, r.reject_code FROM rules r "
			  "JOIN domains d "
			  "ON d.id = r.domain_id WHERE r.id = ?1",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	snprintf(dom, sizeof(dom), "%s", col_text(st, 0));
	snprintf(matcher, sizeof(matcher), "%s", col_text(st, 1));
	snprintf(to, sizeof(to), "%s", col_text(st, 2));
	snprintf(action, sizeof(action), "%s", col_text(st, 3));
	snprintf(arg, sizeof(arg), "%s", col_text(st, 4));
	snprintf(name, sizeof(name), "%s", col_text(st, 5));
	prio = sqlite3_column_int(st, 6);
	enabled = sqlite3_column_int(st, 7);
	snprintf(tag, sizeof(tag), "%s", col_text(st, 8));
	snprintf(from, sizeof(from), "%s", col_text(st, 9));
	int code = sqlite3_column_int(st, 10);
	sqlite3_finalize(st);
	st = NULL;
	if (e->from) {
		if (strcmp(matcher, "all") == 0 && *e->from) {
			seterr(err, errlen, "a catch-all takes no --from");
			r = -EINVAL;
			goto out;
		}
		if ((r = check_from(e->from, from, sizeof(from), err, errlen)) < 0)
			goto out;
	}
	if (e->matcher) {
		if (strcmp(matcher, "all") == 0 || strcmp(e->matcher, "all") == 0) {
			seterr(err, errlen, "a catch-all stays a catch-all (catchall set / disable)");
			r = -EINVAL;
			goto out;
		}
		if ((r = check_match(e->matcher, e->to, dom, to, sizeof(to), err, errlen)) < 0)
			goto out;
		snprintf(matcher, sizeof(matcher), "%s", e->matcher);
	}
	if (e->action) {
		if ((r = check_arg(e->action, e->arg, arg, sizeof(arg), err, errlen)) < 0 ||
		    (r = resolve_dests(db, e->action, e->dests, e->ndest, ids, &nids, err, errlen)) < 0)
			goto out;
		snprintf(action, sizeof(action), "%s", e->action);
	}
	/* A new action starts from the default code unless one is given. */
	if (e->action || e->code >= 0)
		code = e->code >= 0 ? e->code : 0;
	if ((r = check_code(action, code, err, errlen)) < 0)
		goto out;
	if (e->name)
		snprintf(name, sizeof(name), "%s", e->name);
	if (e->priority >= 0)
		prio = e->priority;
	if (e->enabled >= 0)
		enabled = e->enabled ? 1 : 0;
	if ((r = snapshot(db, SNAP_RULE, NULL, id, &before, err, errlen)) < 0 ||
	    (r = prep(db, "UPDATE rules SET matcher = ?2, match_to = ?3, action = ?4, "
			  "action_arg = ?5, name = ?6, priority = ?7, enabled = ?8, match_from = ?9, "
			  "reject_code = ?10 WHERE id = ?1",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, matcher, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, to, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, action, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 5, arg, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 6, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 7, prio);
	sqlite3_bind_int(st, 8, enabled);
	sqlite3_bind_text(st, 9, from, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 10, code);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_DONE) {
		r = sqlerr(rc);
		if (r == -EEXIST)
			seterr(err, errlen, "a rule for %s%s%s already exists", to,
			       *from ? " from " : "", from);
		else
			r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if (e->action) {
		if ((r = prep(db, "DELETE FROM rule_dests WHERE rule_id = ?1", &st, err, errlen)) < 0)
			goto out;
		sqlite3_bind_int64(st, 1, id);
		r = step_done(db, st, err, errlen);
		st = NULL;
		if (r < 0 || (r = insert_dests(db, id, ids, nids, err, errlen)) < 0)
			goto out;
	}
	if ((r = audit_after(db, "rule.edit", tag, before, SNAP_RULE, NULL, id, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	sqlite3_finalize(st);
	free(before);
	rollback(db);
	return r;
}

/* A write of one bound text key that must touch exactly one row, audited
 * as action on object a with snapshots by snap (keyed by a). */
static int write_one(struct mxf_rulesdb *db, const char *sql, const char *a, const char *b, int c,
		     const char *what, const char *action, const char *snap, char *err,
		     size_t errlen)
{
	sqlite3_stmt *st;
	char *before = NULL;
	int r = begin_write(db, err, errlen);
	if (r < 0)
		return r;
	if ((r = snapshot(db, snap, a, 0, &before, err, errlen)) < 0)
		goto out;
	if ((r = prep(db, sql, &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
	if (b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int(st, 2, c);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
	if ((r = step_done(db, st, err, errlen)) < 0)
		goto out;
	if (sqlite3_changes(db->db) != 1) {
		seterr(err, errlen, "unknown %s %s", what, a);
		r = -ENOENT;
		goto out;
	}
	if ((r = audit_after(db, action, a, before, snap, a, 0, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	free(before);
	rollback(db);
	return r;
}

int mxf_rulesdb_domain_set(struct mxf_rulesdb *db, const char *domain, const char *key,
			   const char *value, char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1];
	int r = check_domain(domain, name, sizeof(name), err, errlen);
	if (r < 0)
		return r;
	if (strcmp(key, "subaddressing") == 0) {
		int on = strcmp(value, "on") == 0 ? 1 : strcmp(value, "off") == 0 ? 0 : -1;
		if (on < 0) {
			seterr(err, errlen, "subaddressing is on or off");
			return -EINVAL;
		}
		return write_one(db, "UPDATE domains SET subaddressing = ?2 WHERE name = ?1", name,
				 NULL, on, "domain", "domain.set", SNAP_DOMAIN, err, errlen);
	}
	if (strcmp(key, "unverified") == 0) {
		if (strcmp(value, "defer") != 0 && strcmp(value, "reject") != 0) {
			seterr(err, errlen, "unverified is defer or reject");
			return -EINVAL;
		}
		return write_one(db, "UPDATE domains SET unverified = ?2 WHERE name = ?1", name, value,
				 0, "domain", "domain.set", SNAP_DOMAIN, err, errlen);
	}
	if (strcmp(key, "dmarc") == 0) {
		/* "default": follow [auth] dmarc. */
		bool dflt = strcmp(value, "default") == 0;
		if (!dflt && strcmp(value, "enforce") != 0 && strcmp(value, "monitor") != 0) {
			seterr(err, errlen, "dmarc is enforce, monitor or default");
			return -EINVAL;
		}
		return write_one(db, "UPDATE domains SET dmarc = ?2 WHERE name = ?1", name,
				 dflt ? "" : value, 0, "domain", "domain.set", SNAP_DOMAIN, err,
				 errlen);
	}
	seterr(err, errlen, "unknown domain setting %s (subaddressing, unverified, dmarc)", key);
	return -EINVAL;
}

int mxf_rulesdb_address_verify(struct mxf_rulesdb *db, const char *email, bool verified,
			       char *err, size_t errlen)
{
	char addr[MXF_ADDR_SIZE];
	int r = check_addr(email, addr, sizeof(addr), err, errlen);
	if (r < 0)
		return r;
	return write_one(db, "UPDATE addresses SET verified = ?2 WHERE email = ?1", addr, NULL,
			 verified ? 1 : 0, "address", verified ? "address.verify" : "address.unverify",
			 SNAP_ADDRESS, err, errlen);
}

/* Hex SHA-256 of a token: what rules.db keeps, so a copy of the database
 * does not verify anything. */
static int token_hash(const char *token, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0;
	if (!EVP_Digest(token, strlen(token), md, &n, EVP_sha256(), NULL) || n != 32)
		return -EIO;
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int mxf_rulesdb_address_token_new(struct mxf_rulesdb *db, const char *email, long long ttl,
				  char token[MXF_TOKEN_SIZE], char *err, size_t errlen)
{
	/* 20 characters of a 32-letter alphabet without look-alikes: 100 bits,
	 * easy to read out of a mail and type. */
	static const char alpha[] = "abcdefghjkmnpqrstuvwxyz023456789";
	char addr[MXF_ADDR_SIZE], hash[65];
	unsigned char rnd[MXF_TOKEN_SIZE - 1];
	int r = check_addr(email, addr, sizeof(addr), err, errlen);
	if (r < 0)
		return r;
	if (ttl <= 0 || ttl > 366LL * 86400) {
		seterr(err, errlen, "token lifetime out of range");
		return -EINVAL;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		seterr(err, errlen, "getrandom: %s", strerror(errno));
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		token[i] = alpha[rnd[i] % 32];
	token[sizeof(rnd)] = '\0';
	if ((r = token_hash(token, hash)) < 0) {
		seterr(err, errlen, "cannot hash the token");
		return r;
	}
	char sql[200];
	snprintf(sql, sizeof(sql),
		 "UPDATE addresses SET token_hash = ?2, token_expires = ?3 + %lld "
		 "WHERE email = ?1 AND verified = 0",
		 ttl);
	r = write_one(db, sql, addr, hash, 0, "unverified address", "address.token", SNAP_ADDRESS,
		      err, errlen);
	if (r < 0)
		memset(token, 0, MXF_TOKEN_SIZE);
	return r;
}

int mxf_rulesdb_address_verify_token(struct mxf_rulesdb *db, const char *email, const char *token,
				     char *err, size_t errlen)
{
	char addr[MXF_ADDR_SIZE], hash[65], *before = NULL;
	sqlite3_stmt *st = NULL;
	int r = check_addr(email, addr, sizeof(addr), err, errlen);
	if (r < 0)
		return r;
	if (strlen(token) != MXF_TOKEN_SIZE - 1 || token_hash(token, hash) < 0) {
		seterr(err, errlen, "wrong or expired token for %s", addr);
		return -EACCES;
	}
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = prep(db, "SELECT verified, token_hash, token_expires FROM addresses "
			  "WHERE email = ?1",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		r = rc == SQLITE_DONE ? -ENOENT : fail_sql(db, rc, err, errlen);
		if (r == -ENOENT)
			seterr(err, errlen, "unknown address %s", addr);
		goto out;
	}
	bool verified = sqlite3_column_int(st, 0) != 0;
	const char *stored = col_text(st, 1);
	/* Constant time: the comparison must not tell how much was right. */
	bool match = strlen(stored) == 64 && CRYPTO_memcmp(stored, hash, 64) == 0;
	bool expired = sqlite3_column_int64(st, 2) < (sqlite3_int64)time(NULL);
	sqlite3_finalize(st);
	st = NULL;
	if (verified) {
		seterr(err, errlen, "%s is verified already", addr);
		r = -EALREADY;
		goto out;
	}
	if (!match || expired) {
		/* One message for both: a guesser learns nothing. */
		seterr(err, errlen, "wrong or expired token for %s", addr);
		r = -EACCES;
		goto out;
	}
	if ((r = snapshot(db, SNAP_ADDRESS, addr, 0, &before, err, errlen)) < 0 ||
	    (r = prep(db, "UPDATE addresses SET verified = 1, token_hash = '', token_expires = 0 "
			  "WHERE email = ?1",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_TRANSIENT);
	r = step_done(db, st, err, errlen);
	st = NULL;
	if (r < 0 || (r = audit_after(db, "address.verify", addr, before, SNAP_ADDRESS, addr, 0,
				      err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	sqlite3_finalize(st);
	free(before);
	rollback(db);
	return r;
}

int mxf_rulesdb_domain_enable(struct mxf_rulesdb *db, const char *domain, bool enabled,
			      char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1];
	int r = check_domain(domain, name, sizeof(name), err, errlen);
	if (r < 0)
		return r;
	return write_one(db, "UPDATE domains SET enabled = ?2 WHERE name = ?1", name, NULL,
			 enabled ? 1 : 0, "domain", enabled ? "domain.enable" : "domain.disable",
			 SNAP_DOMAIN, err, errlen);
}

/* Removes the domain and its rules (each rule's removal audited too, so the
 * audit log can rebuild them). */
int mxf_rulesdb_domain_remove(struct mxf_rulesdb *db, const char *domain, char *err,
			      size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], tag[TAG_LEN + 1], *before = NULL;
	sqlite3_int64 dom_id;
	sqlite3_stmt *st = NULL;
	int r, rc;
	if ((r = check_domain(domain, name, sizeof(name), err, errlen)) < 0)
		return r;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = find_domain(db, name, name, sizeof(name), &dom_id, err, errlen)) < 0)
		goto out;
	if ((r = prep(db, "SELECT id FROM rules WHERE domain_id = ?1 ORDER BY id", &st, err,
		      errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, dom_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		sqlite3_int64 id = sqlite3_column_int64(st, 0);
		if ((r = rule_tag(db, id, tag, err, errlen)) < 0 ||
		    (r = snapshot(db, SNAP_RULE, NULL, id, &before, err, errlen)) < 0 ||
		    (r = audit(db, "rule.remove", tag, before, NULL, err, errlen)) < 0)
			goto out;
		free(before);
		before = NULL;
	}
	if (rc != SQLITE_DONE) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if ((r = snapshot(db, SNAP_DOMAIN, name, 0, &before, err, errlen)) < 0)
		goto out;
	/* Rules and their destinations go by ON DELETE CASCADE. */
	if ((r = prep(db, "DELETE FROM domains WHERE id = ?1", &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, dom_id);
	r = step_done(db, st, err, errlen);
	st = NULL;
	if (r < 0 || (r = audit(db, "domain.remove", name, before, NULL, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	sqlite3_finalize(st);
	free(before);
	rollback(db);
	return r;
}

/* An address still used as a destination cannot go: the rules would
 * silently lose a destination (-EBUSY, with the count). */
int mxf_rulesdb_address_remove(struct mxf_rulesdb *db, const char *email, char *err,
			       size_t errlen)
{
	char addr[MXF_ADDR_SIZE], *before = NULL;
	sqlite3_int64 id;
	sqlite3_stmt *st = NULL;
	int r, rc;
	if ((r = check_addr(email, addr, sizeof(addr), err, errlen)) < 0)
		return r;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	r = lookup_id(db, "SELECT id FROM addresses WHERE email = ?1", addr, &id, NULL, err, errlen);
	if (r == -ENOENT)
		seterr(err, errlen, "unknown address %s", addr);
	if (r < 0)
		goto out;
	if ((r = prep(db, "SELECT count(*) FROM rule_dests WHERE address_id = ?1", &st, err,
		      errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	long long uses = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	st = NULL;
	if (uses < 0) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if (uses > 0) {
		seterr(err, errlen, "address %s is a destination of %lld rule%s; change those first",
		       addr, uses, uses == 1 ? "" : "s");
		r = -EBUSY;
		goto out;
	}
	if ((r = snapshot(db, SNAP_ADDRESS, addr, 0, &before, err, errlen)) < 0 ||
	    (r = prep(db, "DELETE FROM addresses WHERE id = ?1", &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	r = step_done(db, st, err, errlen);
	st = NULL;
	if (r < 0 || (r = audit(db, "address.remove", addr, before, NULL, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	sqlite3_finalize(st);
	free(before);
	rollback(db);
	return r;
}

int mxf_rulesdb_catchall_remove(struct mxf_rulesdb *db, const char *domain, char *err,
				size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], *before = NULL;
	sqlite3_int64 dom_id, rule_id = 0;
	sqlite3_stmt *st = NULL;
	int r, rc;
	if ((r = check_domain(domain, name, sizeof(name), err, errlen)) < 0)
		return r;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = find_domain(db, name, name, sizeof(name), &dom_id, err, errlen)) < 0 ||
	    (r = prep(db, "SELECT id FROM rules WHERE domain_id = ?1 AND matcher = 'all'", &st, err,
		      errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, dom_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		rule_id = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if (!rule_id) {
		seterr(err, errlen, "domain %s has no catch-all", name);
		r = -ENOENT;
		goto out;
	}
	if ((r = snapshot(db, SNAP_RULE, NULL, rule_id, &before, err, errlen)) < 0 ||
	    (r = prep(db, "DELETE FROM rules WHERE id = ?1", &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, rule_id);
	r = step_done(db, st, err, errlen);
	st = NULL;
	if (r < 0 || (r = audit(db, "catchall.remove", name, before, NULL, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	sqlite3_finalize(st);
	free(before);
	rollback(db);
	return r;
}

static int check_nexthop(const char *in, char *err, size_t errlen)
{
	char host[300], a[MXF_DOMAIN_MAX + 1];
	unsigned port;
	unsigned char buf[16];
	if (!in || strlen(in) > 300 || mxf_config_split_hostport(in, host, sizeof(host), &port) < 0 ||
	    port == 0 || port > 65535)
		goto bad;
	if (in[0] == '[') {
		if (inet_pton(AF_INET6, host, buf) != 1 && inet_pton(AF_INET, host, buf) != 1)
			goto bad;
		return 0;
	}
	if (inet_pton(AF_INET, host, buf) == 1)
		return 0;
	if (mxf_domain_to_ascii(host, a, sizeof(a)) < 0 || strcmp(a, host) != 0)
		goto bad;
	return 0;
bad:
	seterr(err, errlen, "next hop must be host:port or [address]:port (lower-case A-labels)");
	return -EINVAL;
}

int mxf_rulesdb_transport_set(struct mxf_rulesdb *db, const char *domain, const char *nexthop,
			      char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1];
	int r = check_domain(domain, name, sizeof(name), err, errlen);
	if (r < 0 || (r = check_nexthop(nexthop, err, errlen)) < 0)
		return r;
	return write_one(db, "INSERT INTO transports (domain, nexthop, created) VALUES (?1, ?2, ?3) "
			     "ON CONFLICT (domain) DO UPDATE SET nexthop = excluded.nexthop",
			 name, nexthop, 0, "domain", "transport.set", SNAP_TRANSPORT, err, errlen);
}

int mxf_rulesdb_transport_remove(struct mxf_rulesdb *db, const char *domain, char *err,
				 size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1];
	int r = check_domain(domain, name, sizeof(name), err, errlen);
	if (r < 0)
		return r;
	return write_one(db, "DELETE FROM transports WHERE domain = ?1 AND ?2 = ?2 AND ?3 = ?3",
			 name, NULL, 0, "transport for", "transport.remove", SNAP_TRANSPORT, err,
			 errlen);
}

/* ---- DKIM keys ---- */

#define SNAP_DKIM                                                                                 \
	"SELECT json_object('domain', domain, 'selector', selector, 'algorithm', algorithm, "     \
	"'public_key', public_key, 'enabled', enabled) FROM dkim_keys "                           \
	"WHERE domain || ' ' || selector = ?1"

static int dkim_write(struct mxf_rulesdb *db, const char *sql, const char *domain,
		      const char *selector, const char *alg, const char *pub, int enabled,
		      const char *action, char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], obj[MXF_DOMAIN_MAX + 80], *before = NULL;
	sqlite3_stmt *st;
	int r = check_domain(domain, name, sizeof(name), err, errlen);
	if (r < 0)
		return r;
	if (!mxf_dkim_selector_valid(selector)) {
		seterr(err, errlen, "bad selector %s (lower-case letters, digits, '-' and '.')",
		       selector);
		return -EINVAL;
	}
	snprintf(obj, sizeof(obj), "%s %s", name, selector);
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = snapshot(db, SNAP_DKIM, obj, 0, &before, err, errlen)) < 0 ||
	    (r = prep(db, sql, &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, selector, -1, SQLITE_TRANSIENT);
	if (alg)
		sqlite3_bind_text(st, 3, alg, -1, SQLITE_TRANSIENT);
	if (pub)
		sqlite3_bind_text(st, 4, pub, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 5, enabled);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)time(NULL));
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = sqlerr(rc);
		if (r == -EEXIST)
			seterr(err, errlen, "a key %s already exists for %s", selector, name);
		else
			r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if (sqlite3_changes(db->db) != 1) {
		seterr(err, errlen, "no key %s for %s", selector, name);
		r = -ENOENT;
		goto out;
	}
	if ((r = audit_after(db, action, obj, before, SNAP_DKIM, obj, 0, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	free(before);
	rollback(db);
	return r;
}

int mxf_rulesdb_dkim_add(struct mxf_rulesdb *db, const char *domain, const char *selector,
			 const char *alg, const char *public_key, bool enabled, char *err,
			 size_t errlen)
{
	enum mxf_dkim_alg a;
	if (mxf_dkim_alg_parse(alg, &a) < 0) {
		seterr(err, errlen, "algorithm is rsa or ed25519");
		return -EINVAL;
	}
	return dkim_write(db,
			  "INSERT INTO dkim_keys (domain, selector, algorithm, public_key, enabled, "
			  "created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
			  domain, selector, alg, public_key, enabled ? 1 : 0, "dkim.add", err,
			  errlen);
}

int mxf_rulesdb_dkim_remove(struct mxf_rulesdb *db, const char *domain, const char *selector,
			    char *err, size_t errlen)
{
	return dkim_write(db,
			  "DELETE FROM dkim_keys WHERE domain = ?1 AND selector = ?2 AND ?5 = ?5 "
			  "AND ?6 = ?6",
			  domain, selector, NULL, NULL, 0, "dkim.remove", err, errlen);
}

int mxf_rulesdb_dkim_enable(struct mxf_rulesdb *db, const char *domain, const char *selector,
			    bool enabled, char *err, size_t errlen)
{
	return dkim_write(db,
			  "UPDATE dkim_keys SET enabled = ?5 WHERE domain = ?1 AND selector = ?2 "
			  "AND ?6 = ?6",
			  domain, selector, NULL, NULL, enabled ? 1 : 0,
			  enabled ? "dkim.enable" : "dkim.disable", err, errlen);
}

int mxf_rulesdb_dkim_list(struct mxf_rulesdb *db, const char *domain,
			  int (*cb)(const struct mxf_dkim_key_info *k, void *arg), void *arg)
{
	sqlite3_stmt *st;
	char name[MXF_DOMAIN_MAX + 1];
	int r;
	if (domain && (r = check_domain(domain, name, sizeof(name), NULL, 0)) < 0)
		return r;
	r = prep(db,
		 "SELECT domain, selector, algorithm, public_key, enabled, created FROM dkim_keys "
		 "WHERE ?1 IS NULL OR domain = ?1 ORDER BY domain, selector",
		 &st, NULL, 0);
	if (r < 0)
		return r;
	if (domain)
		sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_dkim_key_info k = {
			.domain = col_text(st, 0),
			.selector = col_text(st, 1),
			.algorithm = col_text(st, 2),
			.public_key = col_text(st, 3),
			.enabled = sqlite3_column_int(st, 4) != 0,
			.created = sqlite3_column_int64(st, 5),
		};
		if ((r = cb(&k, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
}

int mxf_rulesdb_data_version(struct mxf_rulesdb *db, long long *v)
{
	sqlite3_stmt *st;
	int r = prep(db, "PRAGMA data_version", &st, NULL, 0);
	if (r < 0)
		return r;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : (sqlerr(rc) ? sqlerr(rc) : -EIO);
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
		     "  r.priority, r.enabled, r.action_arg, r.name, r.match_from, r.reject_code "
		     "FROM rules r JOIN domains d ON d.id = r.domain_id "
		     "ORDER BY d.name, r.matcher = 'all', r.priority, r.matcher = 'wildcard', "
		     "  r.match_to, r.id",
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
			.arg = col_text(st, 8),
			.name = col_text(st, 9),
			.from = col_text(st, 10),
			.code = sqlite3_column_int(st, 11),
		};
		if ((r = cb(&ri, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
}

/* ---- the compiled rule set ---- */

enum rs_match { RS_LIT, RS_WILD, RS_ALL };

struct rs_rule {
	sqlite3_int64 id;
	char *tag;
	char *key;  /* literal: folded address; wildcard: folded local pattern; all: domain */
	char *dom;  /* the domain (A-label) */
	char *text; /* reject reason / worker program */
	enum rs_match m;
	enum mxf_route_kind act;
	int priority;
	size_t ndest, nverified;
	char **dests;
	bool *verified;
	size_t nfrom; /* sender patterns, any of which must match; none: any sender */
	char **from;
	int code; /* reject: the SMTP code (0: 550) */
};

struct rs_domain {
	char *name;
	bool subaddr, refuse_unverified;
	const char *dmarc;         /* "", "enforce", "monitor" (static strings) */
	struct rs_rule *catchall;  /* NULL when none (or disabled) */
	/* Wildcard rules by (first byte of the pattern, priority, id), and
	 * where each first byte's run starts (wstart[c] .. wstart[c + 1]): a
	 * local part can only match the patterns of its own first byte and
	 * those that start with '*', so a lookup globs those two runs, merged
	 * in priority order, instead of every wildcard of the domain. */
	struct rs_rule **wild;
	size_t nwild;
	uint32_t *wstart; /* 257 entries when nwild > 0 */
};

struct rs_transport {
	char *domain, *nexthop;
};

struct rs_worker {
	struct mxf_ruleset_worker w;
	char *name, *runtime, *path, *source;
	char **env;
};

struct rs_litslot {
	uint32_t hash, idx;
};

struct mxf_ruleset {
	struct rs_domain *doms; /* sorted by name */
	size_t ndom;
	struct rs_rule *rules; /* every loaded rule, sorted by id */
	size_t nrule;
	struct rs_rule **lit; /* literal rules sorted by (key, priority, id) */
	size_t nlit;
	/* Open-addressing index of lit (issue 14): a RCPT lookup costs one
	 * hash and a probe or two instead of a binary search whose ~17
	 * pointer-chasing string compares (at 100,000 rules) kept it under
	 * 1 M lookups/s. Slot: the key's hash and 1 + the index in lit of the
	 * key's first rule (0: empty). */
	struct rs_litslot *lix;
	size_t lixmask;
	char **verified; /* verified addresses, ASCII-lower-cased, sorted */
	size_t nverified;
	struct rs_transport *tp; /* sorted by domain */
	size_t ntp;
	struct rs_worker *workers; /* issue 13: worker definitions, sorted by name */
	size_t nworker;
	bool cs;
	char sep[16];
};

void mxf_ruleset_free(struct mxf_ruleset *rs)
{
	if (!rs)
		return;
	for (size_t i = 0; i < rs->ndom; i++) {
		free(rs->doms[i].name);
		free(rs->doms[i].wild);
		free(rs->doms[i].wstart);
	}
	for (size_t i = 0; i < rs->nrule; i++) {
		struct rs_rule *ru = &rs->rules[i];
		free(ru->tag);
		free(ru->key);
		free(ru->dom);
		free(ru->text);
		for (size_t j = 0; j < ru->ndest; j++)
			free(ru->dests[j]);
		free(ru->dests);
		free(ru->verified);
		for (size_t j = 0; j < ru->nfrom; j++)
			free(ru->from[j]);
		free(ru->from);
	}
	for (size_t i = 0; i < rs->nverified; i++)
		free(rs->verified[i]);
	for (size_t i = 0; i < rs->ntp; i++) {
		free(rs->tp[i].domain);
		free(rs->tp[i].nexthop);
	}
	for (size_t i = 0; i < rs->nworker; i++) {
		struct rs_worker *w = &rs->workers[i];
		free(w->name);
		free(w->runtime);
		free(w->path);
		free(w->source);
		for (size_t j = 0; j < w->w.nenv; j++)
			free(w->env[j]);
		free(w->env);
	}
	free(rs->workers);
	free(rs->verified);
	free(rs->tp);
	free(rs->doms);
	free(rs->rules);
	free(rs->lit);
	free(rs->lix);
	free(rs);
}

/* The compared form of an address: domain lower-cased always, the local
 * part too unless local parts are case-sensitive. */
static void fold_addr(char *s, bool cs)
{
	char *at = strrchr(s, '@');
	if (!cs || !at)
		lower_ascii(s);
	else
		lower_ascii(at);
}

static int cmp_dom(const void *a, const void *b)
{
	return strcmp(((const struct rs_domain *)a)->name, ((const struct rs_domain *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_tp(const void *a, const void *b)
{
	return strcmp(((const struct rs_transport *)a)->domain,
		      ((const struct rs_transport *)b)->domain);
}

static int cmp_prio(const struct rs_rule *x, const struct rs_rule *y)
{
	if (x->priority != y->priority)
		return x->priority < y->priority ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_lit(const void *a, const void *b)
{
	const struct rs_rule *x = *(struct rs_rule *const *)a, *y = *(struct rs_rule *const *)b;
	int c = strcmp(x->key, y->key);
	return c ? c : cmp_prio(x, y);
}

static int cmp_wild(const void *a, const void *b)
{
	const struct rs_rule *x = *(struct rs_rule *const *)a, *y = *(struct rs_rule *const *)b;
	unsigned char cx = (unsigned char)x->key[0], cy = (unsigned char)y->key[0];
	return cx != cy ? (cx < cy ? -1 : 1) : cmp_prio(x, y);
}

/* FNV-1a: the keys are short, folded addresses; the table is at most half
 * full, so its quality is plenty. */
static uint32_t key_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static int lit_index(struct mxf_ruleset *rs)
{
	size_t cap = 16;
	while (cap < 2 * rs->nlit)
		cap *= 2;
	if (rs->nlit >= UINT32_MAX / 2 || !(rs->lix = calloc(cap, sizeof(*rs->lix))))
		return -ENOMEM;
	rs->lixmask = cap - 1;
	for (size_t i = 0; i < rs->nlit; i++) {
		if (i && strcmp(rs->lit[i]->key, rs->lit[i - 1]->key) == 0)
			continue; /* only a key's first (best) rule */
		uint32_t h = key_hash(rs->lit[i]->key);
		size_t j = h & rs->lixmask;
		while (rs->lix[j].idx)
			j = (j + 1) & rs->lixmask;
		rs->lix[j] = (struct rs_litslot){h, (uint32_t)i + 1};
	}
	return 0;
}

/* The index in lit of key's first rule, or nlit when no literal rule has it. */
static size_t lit_find(const struct mxf_ruleset *rs, const char *key)
{
	if (!rs->nlit)
		return 0;
	uint32_t h = key_hash(key);
	for (size_t j = h & rs->lixmask; rs->lix[j].idx; j = (j + 1) & rs->lixmask)
		if (rs->lix[j].hash == h && strcmp(rs->lit[rs->lix[j].idx - 1]->key, key) == 0)
			return rs->lix[j].idx - 1;
	return rs->nlit;
}

static struct rs_domain *find_dom(const struct mxf_ruleset *rs, const char *name)
{
	struct rs_domain key = {.name = (char *)name};
	return rs->ndom ? bsearch(&key, rs->doms, rs->ndom, sizeof(*rs->doms), cmp_dom) : NULL;
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

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? 2 * *cap : 16;
	void *q = realloc(*p, nc * size);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = nc;
	return 0;
}

static int load_domains(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db,
		     "SELECT name, subaddressing, unverified, dmarc FROM domains WHERE enabled = 1 "
		     "ORDER BY name",
		     &st, err, errlen);
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
		if ((r = grow((void **)&rs->doms, &cap, rs->ndom, sizeof(*rs->doms))) < 0)
			break;
		rs->doms[rs->ndom] = (struct rs_domain){
			.name = strdup(name),
			.subaddr = sqlite3_column_int(st, 1) != 0,
			.refuse_unverified = strcmp(col_text(st, 2), "reject") == 0,
			.dmarc = strcmp(col_text(st, 3), "enforce") == 0   ? "enforce"
				 : strcmp(col_text(st, 3), "monitor") == 0 ? "monitor"
									   : "",
		};
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
		     "SELECT r.id, r.tag, d.name, r.matcher, r.match_to, r.action, r.priority, "
		     "  r.action_arg, r.match_from, r.reject_code "
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
		const char *action = col_text(st, 5), *arg = col_text(st, 7);
		const char *from = col_text(st, 8);
		char addr[MXF_ADDR_SIZE], a2[MXF_WEBHOOK_URL_MAX + 1], f2[2048];
		/* The write-time checks again: a row another writer let through
		 * fails the whole load. */
		if (check_match(matcher, to, dom, addr, sizeof(addr), NULL, 0) < 0 ||
		    strcmp(addr, to) != 0) {
			seterr(err, errlen, "rules database: rule %s: invalid match", tag);
			r = -EINVAL;
			break;
		}
		if (check_arg(action, arg, a2, sizeof(a2), NULL, 0) < 0 || strcmp(a2, arg) != 0) {
			seterr(err, errlen, "rules database: rule %s: invalid action", tag);
			r = -EINVAL;
			break;
		}
		if (check_code(action, sqlite3_column_int(st, 9), NULL, 0) < 0) {
			seterr(err, errlen, "rules database: rule %s: invalid reject code", tag);
			r = -EINVAL;
			break;
		}
		if (check_from(from, f2, sizeof(f2), NULL, 0) < 0 || strcmp(f2, from) != 0 ||
		    (*from && strcmp(matcher, "all") == 0)) {
			seterr(err, errlen, "rules database: rule %s: invalid sender matcher", tag);
			r = -EINVAL;
			break;
		}
		enum mxf_route_kind act = strcmp(action, "forward") == 0  ? MXF_ROUTE_FORWARD
					  : strcmp(action, "drop") == 0   ? MXF_ROUTE_DROP
					  : strcmp(action, "reject") == 0 ? MXF_ROUTE_REJECT
					  : strcmp(action, "worker") == 0 ? MXF_ROUTE_WORKER
					  : strcmp(action, "webhook") == 0 ? MXF_ROUTE_WEBHOOK
									  : MXF_ROUTE_NO_RULE;
		if (act == MXF_ROUTE_NO_RULE) {
			seterr(err, errlen, "rules database: rule %s: invalid action", tag);
			r = -EINVAL;
			break;
		}
		if ((r = grow((void **)&rs->rules, &cap, rs->nrule, sizeof(*rs->rules))) < 0)
			break;
		enum rs_match m = strcmp(matcher, "all") == 0	     ? RS_ALL
				  : strcmp(matcher, "wildcard") == 0 ? RS_WILD
								     : RS_LIT;
		struct rs_rule *ru = &rs->rules[rs->nrule];
		*ru = (struct rs_rule){
			.id = sqlite3_column_int64(st, 0),
			.tag = strdup(tag),
			.dom = strdup(dom),
			.text = strdup(arg),
			.m = m,
			.act = act,
			.priority = sqlite3_column_int(st, 6),
			.code = sqlite3_column_int(st, 9),
		};
		if (m == RS_ALL) {
			ru->key = strdup(dom);
		} else {
			fold_addr(addr, rs->cs);
			if (m == RS_WILD)
				*strrchr(addr, '@') = '\0';
			ru->key = strdup(addr);
		}
		rs->nrule++;
		if (!ru->tag || !ru->key || !ru->dom || !ru->text) {
			r = -ENOMEM;
			break;
		}
		if (*from) {
			size_t n = 1;
			for (const char *c = from; *c; c++)
				n += *c == ',';
			if (!(ru->from = calloc(n, sizeof(*ru->from)))) {
				r = -ENOMEM;
				break;
			}
			for (const char *p = from; *p;) {
				size_t l = strcspn(p, ",");
				if (!(ru->from[ru->nfrom++] = strndup(p, l))) {
					r = -ENOMEM;
					break;
				}
				p += l + (p[l] == ',');
			}
			if (r < 0)
				break;
		}
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
		if (ru->act != MXF_ROUTE_FORWARD || ru->ndest >= MAX_DESTS) {
			seterr(err, errlen, "rules database: rule %s: wrong number of destinations",
			       ru->tag);
			r = -EINVAL;
			break;
		}
		if (!ru->dests && (!(ru->dests = calloc(MAX_DESTS, sizeof(*ru->dests))) ||
				   !(ru->verified = calloc(MAX_DESTS, sizeof(bool))))) {
			r = -ENOMEM;
			break;
		}
		if (!(ru->dests[ru->ndest] = strdup(addr))) {
			r = -ENOMEM;
			break;
		}
		/* Verification may be revoked after the rule was written: the
		 * flag travels with the route, and nothing is forwarded to an
		 * unverified destination (the router defers or refuses). */
		ru->verified[ru->ndest] = sqlite3_column_int(st, 2) != 0;
		ru->nverified += ru->verified[ru->ndest];
		ru->ndest++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	if (r == -ENOMEM)
		seterr(err, errlen, "out of memory");
	return r;
}

static int load_verified(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "SELECT email FROM addresses WHERE verified = 1", &st, err, errlen);
	if (r < 0)
		return r;
	size_t cap = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char *a;
		if ((r = grow((void **)&rs->verified, &cap, rs->nverified, sizeof(char *))) < 0 ||
		    !(a = strdup(col_text(st, 0)))) {
			r = -ENOMEM;
			break;
		}
		lower_ascii(a);
		rs->verified[rs->nverified++] = a;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	if (r == -ENOMEM)
		seterr(err, errlen, "out of memory");
	if (r == 0 && rs->nverified)
		qsort(rs->verified, rs->nverified, sizeof(char *), cmp_str);
	return r;
}

static int load_transports(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err,
			   size_t errlen)
{
	sqlite3_stmt *st;
	int r = prep(db, "SELECT domain, nexthop FROM transports", &st, err, errlen);
	if (r < 0)
		return r;
	size_t cap = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *d = col_text(st, 0), *h = col_text(st, 1);
		char a[MXF_DOMAIN_MAX + 1];
		if (mxf_domain_to_ascii(d, a, sizeof(a)) < 0 || strcmp(a, d) != 0 ||
		    check_nexthop(h, NULL, 0) < 0) {
			seterr(err, errlen, "rules database: invalid transport for %s", d);
			r = -EINVAL;
			break;
		}
		if ((r = grow((void **)&rs->tp, &cap, rs->ntp, sizeof(*rs->tp))) < 0)
			break;
		rs->tp[rs->ntp] = (struct rs_transport){strdup(d), strdup(h)};
		if (!rs->tp[rs->ntp].domain || !rs->tp[rs->ntp].nexthop) {
			free(rs->tp[rs->ntp].domain);
			free(rs->tp[rs->ntp].nexthop);
			r = -ENOMEM;
			break;
		}
		rs->ntp++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	if (r == -ENOMEM)
		seterr(err, errlen, "out of memory");
	if (r == 0 && rs->ntp)
		qsort(rs->tp, rs->ntp, sizeof(*rs->tp), cmp_tp);
	return r;
}

static int load_workers(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err,
			size_t errlen);

int mxf_ruleset_load_opts(struct mxf_rulesdb *db, const struct mxf_ruleset_opts *o,
			  struct mxf_ruleset **out, char *err, size_t errlen)
{
	*out = NULL;
	struct mxf_ruleset *rs = calloc(1, sizeof(*rs));
	if (!rs) {
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rs->cs = o && o->local_case_sensitive;
	snprintf(rs->sep, sizeof(rs->sep), "%s", o && o->subaddr_sep ? o->subaddr_sep : "+");
	/* One read transaction: a consistent snapshot even while mxferryctl
	 * writes. */
	int r = exec(db, "BEGIN", err, errlen);
	if (r < 0)
		goto fail;
	if ((r = load_domains(db, rs, err, errlen)) < 0 || (r = load_rules(db, rs, err, errlen)) < 0 ||
	    (r = load_dests(db, rs, err, errlen)) < 0 ||
	    (r = load_verified(db, rs, err, errlen)) < 0 ||
	    (r = load_transports(db, rs, err, errlen)) < 0 ||
	    (r = load_workers(db, rs, err, errlen)) < 0)
		goto fail;
	rollback(db);

	if (rs->nrule && !(rs->lit = calloc(rs->nrule, sizeof(*rs->lit)))) {
		r = -ENOMEM;
		goto nomem;
	}
	/* Count wildcards per domain, then fill. */
	for (size_t i = 0; i < rs->nrule; i++) {
		struct rs_rule *ru = &rs->rules[i];
		struct rs_domain *d = find_dom(rs, ru->dom);
		if (!d) {
			seterr(err, errlen, "rules database: rule %s: unknown domain", ru->tag);
			r = -EINVAL;
			goto fail;
		}
		if (ru->act == MXF_ROUTE_FORWARD && ru->ndest == 0) {
			seterr(err, errlen, "rules database: rule %s: forward without destination",
			       ru->tag);
			r = -EINVAL;
			goto fail;
		}
		if (ru->m == RS_WILD)
			d->nwild++;
	}
	for (size_t i = 0; i < rs->ndom; i++) {
		if (rs->doms[i].nwild &&
		    !(rs->doms[i].wild = calloc(rs->doms[i].nwild, sizeof(struct rs_rule *)))) {
			r = -ENOMEM;
			goto nomem;
		}
		rs->doms[i].nwild = 0;
	}
	for (size_t i = 0; i < rs->nrule; i++) {
		struct rs_rule *ru = &rs->rules[i];
		struct rs_domain *d = find_dom(rs, ru->dom);
		if (ru->m == RS_ALL) {
			if (d->catchall) {
				seterr(err, errlen, "rules database: rule %s: second catch-all",
				       ru->tag);
				r = -EINVAL;
				goto fail;
			}
			d->catchall = ru;
		} else if (ru->m == RS_WILD) {
			d->wild[d->nwild++] = ru;
		} else {
			rs->lit[rs->nlit++] = ru;
		}
	}
	for (size_t i = 0; i < rs->ndom; i++) {
		struct rs_domain *d = &rs->doms[i];
		if (!d->nwild)
			continue;
		qsort(d->wild, d->nwild, sizeof(struct rs_rule *), cmp_wild);
		if (d->nwild >= UINT32_MAX || !(d->wstart = calloc(257, sizeof(*d->wstart)))) {
			r = -ENOMEM;
			goto nomem;
		}
		/* Counts per first byte, then their running sum: wstart[c] is
		 * the index of the first pattern whose first byte is >= c. */
		for (size_t k = 0; k < d->nwild; k++)
			d->wstart[(unsigned char)d->wild[k]->key[0] + 1]++;
		for (size_t c = 1; c < 257; c++)
			d->wstart[c] += d->wstart[c - 1];
	}
	if (rs->nlit)
		qsort(rs->lit, rs->nlit, sizeof(*rs->lit), cmp_lit);
	if ((r = lit_index(rs)) < 0)
		goto nomem;
	*out = rs;
	return 0;
nomem:
	seterr(err, errlen, "out of memory");
fail:
	rollback(db);
	mxf_ruleset_free(rs);
	return r;
}

int mxf_ruleset_load(struct mxf_rulesdb *db, struct mxf_ruleset **out, char *err, size_t errlen)
{
	return mxf_ruleset_load_opts(db, NULL, out, err, errlen);
}

static void route_from(const struct rs_rule *ru, const struct rs_domain *d, struct mxf_route *out)
{
	out->kind = ru->act;
	out->tag = ru->tag;
	out->text = ru->text;
	out->code = ru->act == MXF_ROUTE_REJECT ? (ru->code ? ru->code : 550) : 0;
	out->refuse_unverified = d->refuse_unverified;
	if (ru->act == MXF_ROUTE_FORWARD) {
		out->ndest = ru->ndest;
		out->dests = (const char *const *)ru->dests;
		out->verified = ru->verified;
		out->nverified = ru->nverified;
	}
}

/* '*' matches any run of bytes (possibly empty); everything else itself. */
static bool glob_match(const char *p, const char *s)
{
	const char *star = NULL, *mark = NULL;
	while (*s) {
		if (*p == '*') {
			star = p++;
			mark = s;
		} else if (*p == *s) {
			p++;
			s++;
		} else if (star) {
			p = star + 1;
			s = ++mark;
		} else {
			return false;
		}
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

/* The envelope sender as sender matchers compare it (ASCII-lower-cased,
 * domain as A-labels), folded on first use: most lookups meet no sender
 * matcher, and folding costs an IDN conversion on every RCPT. */
struct sender_key {
	const char *raw; /* "" the null sender; NULL unknown */
	bool done;
	char folded[MXF_ADDR_SIZE];
};

static const char *sender_folded(struct sender_key *k)
{
	if (!k->raw || !*k->raw)
		return k->raw;
	if (!k->done) {
		if (mxf_addr_normalize(k->raw, MXF_ADDR_UTF8, k->folded, sizeof(k->folded)) < 0)
			snprintf(k->folded, sizeof(k->folded), "%s", k->raw);
		lower_ascii(k->folded);
		k->done = true;
	}
	return k->folded;
}

/* Whether the rule's sender matcher admits the sender ("" the null sender;
 * NULL unknown, which no sender matcher admits). */
static bool from_ok(const struct rs_rule *ru, struct sender_key *k)
{
	if (ru->nfrom == 0)
		return true;
	const char *sender = sender_folded(k);
	if (!sender)
		return false;
	for (size_t i = 0; i < ru->nfrom; i++) {
		const char *p = ru->from[i];
		if (*sender ? strcmp(p, "<>") != 0 && glob_match(p, sender) : strcmp(p, "<>") == 0)
			return true;
	}
	return false;
}

/* The domain's wildcard rules that may match a local part, in priority
 * order: the run of patterns that begin with its first byte merged with
 * the run of those that begin with '*'. */
struct wild_it {
	struct rs_rule *const *a, *const *b;
	size_t na, nb;
};

static void wild_init(struct wild_it *it, const struct rs_domain *d, const char *local)
{
	*it = (struct wild_it){0};
	if (!d->nwild)
		return;
	unsigned c = (unsigned char)local[0];
	it->a = d->wild + d->wstart[c];
	it->na = d->wstart[c + 1] - d->wstart[c];
	if (c != '*') {
		it->b = d->wild + d->wstart['*'];
		it->nb = d->wstart['*' + 1] - d->wstart['*'];
	}
}

/* The next wildcard rule matching local, or NULL. */
static const struct rs_rule *wild_next(struct wild_it *it, const char *local)
{
	for (;;) {
		const struct rs_rule *c;
		if (it->na && (!it->nb || cmp_prio(it->a[0], it->b[0]) <= 0)) {
			c = *it->a++;
			it->na--;
		} else if (it->nb) {
			c = *it->b++;
			it->nb--;
		} else {
			return NULL;
		}
		if (glob_match(c->key, local))
			return c;
	}
}

/* The best rule for a folded address (key) whose local part is local: the
 * literal rules for key and the domain's wildcard rules matching local, in
 * priority order (a literal first among equals, then the older rule), the
 * first whose sender matcher admits sender. */
static const struct rs_rule *match_rules(const struct mxf_ruleset *rs, const struct rs_domain *d,
					 const char *key, const char *local, struct sender_key *sender)
{
	size_t lo = lit_find(rs, key);
	struct wild_it it;
	wild_init(&it, d, local);
	const struct rs_rule *w = wild_next(&it, local);
	for (;;) {
		const struct rs_rule *l =
			lo < rs->nlit && strcmp(rs->lit[lo]->key, key) == 0 ? rs->lit[lo] : NULL, *c;
		if (!l && !w)
			return NULL;
		if (l && (!w || l->priority <= w->priority)) {
			c = l;
			lo++;
			if (from_ok(c, sender))
				return c;
		} else {
			c = w;
			if (from_ok(c, sender))
				return c;
			/* Only now: finding the next match globs the rest. */
			w = wild_next(&it, local);
		}
	}
}

int mxf_ruleset_lookup(const struct mxf_ruleset *rs, const char *addr, const char *sender,
		       struct mxf_route *out)
{
	*out = (struct mxf_route){.kind = MXF_ROUTE_NO_DOMAIN, .tag = "", .text = "", .dmarc = ""};
	char key[MXF_ADDR_SIZE], local[MXF_ADDR_SIZE];
	struct sender_key sk;
	sk.raw = sender, sk.done = false; /* folded: filled on first use */
	size_t len = strlen(addr);
	const char *at = strrchr(addr, '@');
	if (len >= sizeof(key) || !at)
		return -EINVAL;
	memcpy(key, addr, len + 1);
	fold_addr(key, rs->cs);
	size_t llen = (size_t)(at - addr);
	const char *dom = key + llen + 1;
	const struct rs_domain *d = find_dom(rs, dom);
	if (!d)
		return 0;
	out->dmarc = d->dmarc;
	out->kind = MXF_ROUTE_NO_RULE;
	memcpy(local, key, llen);
	local[llen] = '\0';
	const struct rs_rule *ru = match_rules(rs, d, key, local, &sk);
	if (!ru && d->subaddr && llen > 1) {
		/* user+tag@d: the rules of user@d when none names it exactly. */
		size_t cut = strcspn(local, rs->sep);
		if (cut > 0 && cut < llen) {
			char base[MXF_ADDR_SIZE];
			local[cut] = '\0';
			snprintf(base, sizeof(base), "%s@%s", local, dom);
			ru = match_rules(rs, d, base, local, &sk);
		}
	}
	if (!ru)
		ru = d->catchall;
	if (ru)
		route_from(ru, d, out);
	return 0;
}

size_t mxf_ruleset_count(const struct mxf_ruleset *rs)
{
	return rs->nrule;
}

bool mxf_ruleset_dest_verified(const struct mxf_ruleset *rs, const char *addr)
{
	char key[MXF_ADDR_SIZE];
	if (strlen(addr) >= sizeof(key) || !rs->nverified)
		return false;
	strcpy(key, addr);
	lower_ascii(key);
	const char *k = key;
	return bsearch(&k, rs->verified, rs->nverified, sizeof(char *), cmp_str) != NULL;
}

const char *mxf_ruleset_nexthop(const struct mxf_ruleset *rs, const char *domain)
{
	struct rs_transport key = {.domain = (char *)domain};
	const struct rs_transport *t =
		rs->ntp ? bsearch(&key, rs->tp, rs->ntp, sizeof(*rs->tp), cmp_tp) : NULL;
	return t ? t->nexthop : NULL;
}

/* ---- allow and block lists (issue 11) ---- */

#define SNAP_ACCESS                                                                               \
	"SELECT json_object('list', list, 'kind', kind, 'value', value, 'reason', reason) "       \
	"FROM access WHERE list || ':' || value = ?1"

static int check_list(const char *list, char *err, size_t errlen)
{
	if (list && (strcmp(list, "allow") == 0 || strcmp(list, "block") == 0))
		return 0;
	seterr(err, errlen, "list must be allow or block");
	return -EINVAL;
}

int mxf_rulesdb_access_add(struct mxf_rulesdb *db, const char *list, const char *value,
			   const char *reason, char *err, size_t errlen)
{
	char norm[MXF_ACCESS_VALUE_MAX], why[MXF_ACCESS_REASON_MAX + 1], key[MXF_ACCESS_VALUE_MAX + 8];
	char action[16];
	enum mxf_access_kind kind;
	int r = check_list(list, err, errlen);
	if (r < 0)
		return r;
	if (mxf_access_parse(value, &kind, norm, sizeof(norm)) < 0) {
		seterr(err, errlen, "not an IP address, CIDR range, domain or address: %s", value);
		return -EINVAL;
	}
	if (mxf_access_reason_clean(reason ? reason : "", why, sizeof(why)) < 0) {
		seterr(err, errlen, "reason longer than %d characters", MXF_ACCESS_REASON_MAX);
		return -EINVAL;
	}
	snprintf(key, sizeof(key), "%s:%s", list, norm);
	snprintf(action, sizeof(action), "%s.add", list);
	sqlite3_stmt *st;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = prep(db, "INSERT INTO access (list, kind, value, reason, created) "
			  "VALUES (?1, ?2, ?3, ?4, ?5)",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, list, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, mxf_access_kind_name(kind), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, norm, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, why, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		seterr(err, errlen, "%s is already on the %s list", norm, list);
		r = -EEXIST;
		goto out;
	}
	if (rc != SQLITE_DONE) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if ((r = audit_after(db, action, key, NULL, SNAP_ACCESS, key, 0, err, errlen)) < 0)
		goto out;
	return commit(db, err, errlen);
out:
	rollback(db);
	return r;
}

int mxf_rulesdb_access_remove(struct mxf_rulesdb *db, const char *list, const char *value,
			      char *err, size_t errlen)
{
	char norm[MXF_ACCESS_VALUE_MAX], key[MXF_ACCESS_VALUE_MAX + 8], action[16];
	enum mxf_access_kind kind;
	int r = check_list(list, err, errlen);
	if (r < 0)
		return r;
	/* An entry stored by an older validation is still removable verbatim. */
	if (mxf_access_parse(value, &kind, norm, sizeof(norm)) < 0)
		snprintf(norm, sizeof(norm), "%s", value ? value : "");
	snprintf(key, sizeof(key), "%s:%s", list, norm);
	snprintf(action, sizeof(action), "%s.remove", list);
	return write_one(db, "DELETE FROM access WHERE list || ':' || value = ?1 AND ?2 = ?2 "
			     "AND ?3 = ?3",
			 key, NULL, 0, "entry", action, SNAP_ACCESS, err, errlen);
}

int mxf_rulesdb_access_list(struct mxf_rulesdb *db, const char *list,
			    int (*cb)(const struct mxf_access_entry *e, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int r = prep(db,
		     "SELECT list, kind, value, reason, created FROM access "
		     "WHERE ?1 IS NULL OR list = ?1 ORDER BY list, kind, value",
		     &st, NULL, 0);
	if (r < 0)
		return r;
	if (list)
		sqlite3_bind_text(st, 1, list, -1, SQLITE_TRANSIENT);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_access_entry e = {
			.list = col_text(st, 0),
			.kind = col_text(st, 1),
			.value = col_text(st, 2),
			.reason = col_text(st, 3),
			.created = sqlite3_column_int64(st, 4),
		};
		if ((r = cb(&e, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
}

/* ---- workers (issue 13) ---- */

#define SNAP_WORKER                                                                               \
	"SELECT json_object('name', name, 'runtime', runtime, 'path', path, 'source', source, "    \
	"'env', json(env), 'timeout', timeout, 'network', network) FROM workers WHERE name = ?1"

static bool worker_env_ok(const char *kv, char *err, size_t errlen)
{
	const char *eq = strchr(kv, '=');
	size_t kl = eq ? (size_t)(eq - kv) : 0;
	bool ok = eq && kl >= 1 && kl <= 64 && strncmp(kv, "MXF_", 4) != 0 &&
		  strlen(eq + 1) <= 1024 && !(kv[0] >= '0' && kv[0] <= '9');
	for (size_t i = 0; ok && i < kl; i++)
		ok = (kv[i] >= 'A' && kv[i] <= 'Z') || (kv[i] >= 'a' && kv[i] <= 'z') ||
		     (kv[i] >= '0' && kv[i] <= '9') || kv[i] == '_';
	/* Values reach a process environment and the audit log: no controls. */
	for (const unsigned char *c = eq ? (const unsigned char *)eq + 1 : NULL; ok && *c; c++)
		ok = *c >= 0x20 && *c != 0x7f;
	if (!ok)
		seterr(err, errlen, "bad variable (KEY=VALUE, KEY [A-Za-z_][A-Za-z0-9_]*, not "
				    "MXF_..., VALUE printable, at most 1024 bytes)");
	return ok;
}

int mxf_rulesdb_worker_add(struct mxf_rulesdb *db, const struct mxf_worker_spec *w, bool replace,
			   char *err, size_t errlen)
{
	bool js = w->runtime && strcmp(w->runtime, "js") == 0;
	if (!w->name || !worker_name_ok(w->name)) {
		seterr(err, errlen, "a worker name is 1..64 characters of [A-Za-z0-9._-]");
		return -EINVAL;
	}
	if (!js && !(w->runtime && strcmp(w->runtime, "program") == 0)) {
		seterr(err, errlen, "runtime must be js or program");
		return -EINVAL;
	}
	if (js && (!w->source || !*w->source || strlen(w->source) > MXF_WORKER_MAX_SOURCE)) {
		seterr(err, errlen, "a js worker needs a module of 1..%d bytes", MXF_WORKER_MAX_SOURCE);
		return -EINVAL;
	}
	if (!js && (!w->path || w->path[0] != '/' || strlen(w->path) > 1024)) {
		seterr(err, errlen, "a program worker needs an absolute path");
		return -EINVAL;
	}
	if (!js)
		for (const unsigned char *c = (const unsigned char *)w->path; *c; c++)
			if (*c < 0x20 || *c == 0x7f) {
				seterr(err, errlen, "bad program path");
				return -EINVAL;
			}
	if (w->timeout < 0 || w->timeout > MXF_WORKER_MAX_TIMEOUT) {
		seterr(err, errlen, "timeout must be 1..%d seconds", MXF_WORKER_MAX_TIMEOUT);
		return -EINVAL;
	}
	if (w->nenv > 32) {
		seterr(err, errlen, "at most 32 variables");
		return -EINVAL;
	}
	size_t total = js ? strlen(w->source) : strlen(w->path);
	for (size_t i = 0; i < w->nenv; i++) {
		if (!worker_env_ok(w->env[i], err, errlen))
			return -EINVAL;
		total += strlen(w->env[i]) + 6;
	}
	/* The router sends the whole definition in one WORK message (64 KiB
	 * with the envelope): refuse here what could never be sent. */
	if (total > MXF_WORKER_MAX_SOURCE + 8192) {
		seterr(err, errlen, "module and variables together are over %d bytes",
		       MXF_WORKER_MAX_SOURCE + 8192);
		return -EINVAL;
	}
	char *before = NULL;
	sqlite3_stmt *st = NULL;
	int r = begin_write(db, err, errlen);
	if (r < 0)
		return r;
	if ((r = snapshot(db, SNAP_WORKER, w->name, 0, &before, err, errlen)) < 0)
		goto out;
	if (before && !replace) {
		seterr(err, errlen, "worker %s already exists", w->name);
		r = -EEXIST;
		goto out;
	}
	if ((r = prep(db, "INSERT INTO workers (name, runtime, path, source, env, timeout, created, "
			  "network) VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6, ?7) ON CONFLICT (name) DO "
			  "UPDATE SET runtime = excluded.runtime, path = excluded.path, source = "
			  "excluded.source, env = '{}', timeout = excluded.timeout, network = "
			  "excluded.network",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, w->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, js ? "js" : "program", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, js ? "" : w->path, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, js ? w->source : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 5, w->timeout ? w->timeout : MXF_WORKER_DEFAULT_TIMEOUT);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)time(NULL));
	sqlite3_bind_int(st, 7, w->network ? 1 : 0);
	if ((r = step_done(db, st, err, errlen)) < 0)
		goto out;
	st = NULL;
	for (size_t i = 0; i < w->nenv; i++) {
		const char *eq = strchr(w->env[i], '=');
		/* The key is [A-Za-z0-9_]: safe inside a JSON path. */
		if ((r = prep(db, "UPDATE workers SET env = json_set(env, '$.' || ?1, ?2) "
				  "WHERE name = ?3",
			      &st, err, errlen)) < 0)
			goto out;
		sqlite3_bind_text(st, 1, w->env[i], (int)(eq - w->env[i]), SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, eq + 1, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, w->name, -1, SQLITE_TRANSIENT);
		if ((r = step_done(db, st, err, errlen)) < 0)
			goto out;
		st = NULL;
	}
	if ((r = audit_after(db, before ? "worker.replace" : "worker.add", w->name, before,
			     SNAP_WORKER, w->name, 0, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	free(before);
	rollback(db);
	return r;
}

int mxf_rulesdb_worker_remove(struct mxf_rulesdb *db, const char *name, char *err, size_t errlen)
{
	if (!name || !worker_name_ok(name)) {
		seterr(err, errlen, "bad worker name");
		return -EINVAL;
	}
	sqlite3_stmt *st;
	int r = begin_write(db, err, errlen);
	if (r < 0)
		return r;
	if ((r = prep(db, "SELECT count(*) FROM rules WHERE action = 'worker' AND action_arg = ?1",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	if (n > 0) {
		seterr(err, errlen, "worker %s is used by %d rule(s); remove or change them first",
		       name, n);
		r = -EBUSY;
		goto out;
	}
	rollback(db);
	return write_one(db, "DELETE FROM workers WHERE name = ?1 AND ?2 = ?2 AND ?3 = ?3", name,
			 NULL, 0, "worker", "worker.remove", SNAP_WORKER, err, errlen);
out:
	rollback(db);
	return r;
}

int mxf_rulesdb_worker_list(struct mxf_rulesdb *db,
			    int (*cb)(const struct mxf_worker_info *w, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int r = prep(db, "SELECT name, runtime, path, source, env, timeout, created, "
			 "(SELECT count(*) FROM rules r WHERE r.action = 'worker' AND "
			 "r.action_arg = w.name), (SELECT group_concat(key || '=' || value, "
			 "char(10)) FROM json_each(w.env)), network FROM workers w ORDER BY name",
		     &st, NULL, 0);
	if (r < 0)
		return r;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_worker_info wi = {
			.name = col_text(st, 0), .runtime = col_text(st, 1), .path = col_text(st, 2),
			.source = col_text(st, 3), .env = col_text(st, 4),
			.timeout = sqlite3_column_int(st, 5), .created = sqlite3_column_int64(st, 6),
			.rules = sqlite3_column_int(st, 7), .env_lines = col_text(st, 8),
			.network = sqlite3_column_int(st, 9) != 0};
		if ((r = cb(&wi, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
}

static int cmp_worker(const void *a, const void *b)
{
	return strcmp(((const struct rs_worker *)a)->name, ((const struct rs_worker *)b)->name);
}

static int load_workers(struct mxf_rulesdb *db, struct mxf_ruleset *rs, char *err,
			size_t errlen)
{
	sqlite3_stmt *st;
	/* One "KEY=VALUE" per line: values were checked free of controls. */
	int r = prep(db, "SELECT name, runtime, path, source, timeout, (SELECT group_concat(key || "
			 "'=' || value, char(10)) FROM json_each(w.env)), network FROM workers w",
		     &st, err, errlen);
	if (r < 0)
		return r;
	size_t cap = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((r = grow((void **)&rs->workers, &cap, rs->nworker, sizeof(*rs->workers))) < 0)
			break;
		struct rs_worker *w = &rs->workers[rs->nworker];
		memset(w, 0, sizeof(*w));
		rs->nworker++;
		w->name = strdup(col_text(st, 0));
		w->runtime = strdup(col_text(st, 1));
		w->path = strdup(col_text(st, 2));
		w->source = strdup(col_text(st, 3));
		int t = sqlite3_column_int(st, 4);
		const char *env = col_text(st, 5);
		bool network = sqlite3_column_int(st, 6) != 0;
		if (!w->name || !w->runtime || !w->path || !w->source) {
			r = -ENOMEM;
			break;
		}
		size_t n = *env ? 1 : 0;
		for (const char *c = env; *c; c++)
			n += *c == '\n';
		if (n && !(w->env = calloc(n, sizeof(char *)))) {
			r = -ENOMEM;
			break;
		}
		for (const char *c = env; n && *c;) {
			const char *nl = strchr(c, '\n');
			size_t len = nl ? (size_t)(nl - c) : strlen(c);
			if (!(w->env[w->w.nenv] = strndup(c, len))) {
				r = -ENOMEM;
				break;
			}
			w->w.nenv++;
			c += len + (nl ? 1 : 0);
		}
		if (r < 0)
			break;
		w->w = (struct mxf_ruleset_worker){w->name,
						   w->runtime,
						   w->path,
						   w->source,
						   (const char *const *)w->env,
						   w->w.nenv,
						   t > 0 ? (unsigned)t : MXF_WORKER_DEFAULT_TIMEOUT,
						   network};
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_sql(db, rc, err, errlen);
	sqlite3_finalize(st);
	if (r == -ENOMEM)
		seterr(err, errlen, "out of memory");
	if (r == 0 && rs->nworker)
		qsort(rs->workers, rs->nworker, sizeof(*rs->workers), cmp_worker);
	/* The sort moved the entries: the views point at the strings, which
	 * did not move. */
	return r;
}

const struct mxf_ruleset_worker *mxf_ruleset_worker(const struct mxf_ruleset *rs,
						    const char *name)
{
	struct rs_worker key = {.name = (char *)name};
	const struct rs_worker *w =
		rs && rs->nworker
			? bsearch(&key, rs->workers, rs->nworker, sizeof(*rs->workers), cmp_worker)
			: NULL;
	return w ? &w->w : NULL;
}

/* ---- API (issue 12) ---- */

int mxf_rulesdb_account_id(struct mxf_rulesdb *db, char out[33])
{
	sqlite3_stmt *st;
	out[0] = '\0';
	int r = prep(db, "SELECT value FROM settings WHERE key = 'account_id'", &st, NULL, 0);
	if (r < 0)
		return r;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		snprintf(out, 33, "%s", col_text(st, 0));
	else
		r = rc == SQLITE_DONE ? -ENOENT : sqlerr(rc);
	sqlite3_finalize(st);
	return r;
}

int mxf_rulesdb_domain_list(struct mxf_rulesdb *db,
			    int (*cb)(const struct mxf_domain_info *d, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int r = prep(db,
		     "SELECT coalesce(uid, ''), name, enabled, subaddressing, created, unverified, "
		     "  dmarc FROM domains ORDER BY name",
		     &st, NULL, 0);
	if (r < 0)
		return r;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_domain_info d = {
			.id = col_text(st, 0),
			.name = col_text(st, 1),
			.enabled = sqlite3_column_int(st, 2) != 0,
			.subaddressing = sqlite3_column_int(st, 3) != 0,
			.created = sqlite3_column_int64(st, 4),
			.unverified = col_text(st, 5),
			.dmarc = col_text(st, 6),
		};
		if ((r = cb(&d, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
}

int mxf_rulesdb_address_list(struct mxf_rulesdb *db,
			     int (*cb)(const struct mxf_address_info *a, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int r = prep(db,
		     "SELECT coalesce(uid, ''), email, verified, created FROM addresses "
		     "ORDER BY created, id",
		     &st, NULL, 0);
	if (r < 0)
		return r;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_address_info a = {
			.id = col_text(st, 0),
			.email = col_text(st, 1),
			.verified = sqlite3_column_int(st, 2) != 0,
			.created = sqlite3_column_int64(st, 3),
		};
		if ((r = cb(&a, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
}

static bool token_name_ok(const char *name)
{
	size_t n = strlen(name);
	return n >= 1 && n <= 64 &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static int sha256(const char *s, unsigned char out[32])
{
	unsigned int n = 0;
	return EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -EIO;
}

int mxf_rulesdb_token_add(struct mxf_rulesdb *db, const char *name, bool read_only,
			  char secret[MXF_API_TOKEN_SIZE], char id_out[33], char *err,
			  size_t errlen)
{
	if (!token_name_ok(name)) {
		seterr(err, errlen, "a token name is 1 to 64 of A-Z a-z 0-9 . _ -");
		return -EINVAL;
	}
	/* 256 random bits, hex: far past guessing, and a plain SHA-256 of it
	 * is enough (no password stretching needed for random secrets). */
	char a[TAG_LEN + 1], b[TAG_LEN + 1], uid[TAG_LEN + 1];
	int r;
	if ((r = new_tag(a)) < 0 || (r = new_tag(b)) < 0 || (r = new_tag(uid)) < 0) {
		seterr(err, errlen, "getrandom: %s", strerror(-r));
		return r;
	}
	snprintf(secret, MXF_API_TOKEN_SIZE, "mxf_%s%s", a, b);
	unsigned char h[32];
	if ((r = sha256(secret, h)) < 0) {
		seterr(err, errlen, "SHA-256 failed");
		return r;
	}
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	sqlite3_stmt *st;
	if ((r = prep(db,
		      "INSERT INTO api_tokens (uid, name, hash, read_only, created) "
		      "VALUES (?1, ?2, ?3, ?4, ?5)",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, uid, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 3, h, sizeof(h), SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 4, read_only ? 1 : 0);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = sqlerr(rc);
		if (r == -EEXIST)
			seterr(err, errlen, "token %s already exists", name);
		else
			r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if ((r = audit_after(db, "token.add", name, NULL, SNAP_TOKEN, name, 0, err, errlen)) < 0)
		goto out;
	if ((r = commit(db, err, errlen)) < 0)
		return r;
	snprintf(id_out, 33, "%s", uid);
	return 0;
out:
	rollback(db);
	explicit_bzero(secret, MXF_API_TOKEN_SIZE);
	return r;
}

int mxf_rulesdb_token_remove(struct mxf_rulesdb *db, const char *name, char *err, size_t errlen)
{
	int r;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	char *before = NULL;
	if ((r = snapshot(db, SNAP_TOKEN, name, 0, &before, err, errlen)) < 0)
		goto out;
	if (!before) {
		seterr(err, errlen, "no token %s", name);
		r = -ENOENT;
		goto out;
	}
	sqlite3_stmt *st;
	if ((r = prep(db, "DELETE FROM api_tokens WHERE name = ?1", &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if ((r = audit(db, "token.remove", name, before, NULL, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	free(before);
	rollback(db);
	return r;
}

int mxf_rulesdb_token_list(struct mxf_rulesdb *db,
			   int (*cb)(const struct mxf_api_token *t, void *arg), void *arg)
{
	sqlite3_stmt *st;
	int r = prep(db, "SELECT uid, name, read_only, created FROM api_tokens ORDER BY name", &st,
		     NULL, 0);
	if (r < 0)
		return r;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mxf_api_token t = {
			.id = col_text(st, 0),
			.name = col_text(st, 1),
			.read_only = sqlite3_column_int(st, 2) != 0,
			.created = sqlite3_column_int64(st, 3),
		};
		if ((r = cb(&t, arg)) != 0)
			break;
	}
	return rows_done(st, r, rc);
}

int mxf_rulesdb_token_check(struct mxf_rulesdb *db, const char *secret, char id[33],
			    char name[65], bool *read_only)
{
	unsigned char h[32];
	if (strlen(secret) > 200 || sha256(secret, h) < 0)
		return -EACCES;
	sqlite3_stmt *st;
	int r = prep(db, "SELECT uid, name, read_only, hash FROM api_tokens", &st, NULL, 0);
	if (r < 0)
		return r;
	/* Every row is compared, in constant time, so neither the answer's
	 * timing nor an index lookup tells how much of a hash matched. */
	bool found = false;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *b = sqlite3_column_blob(st, 3);
		if (b && sqlite3_column_bytes(st, 3) == 32 && CRYPTO_memcmp(b, h, 32) == 0 &&
		    !found) {
			found = true;
			snprintf(id, 33, "%s", col_text(st, 0));
			snprintf(name, 65, "%s", col_text(st, 1));
			*read_only = sqlite3_column_int(st, 2) != 0;
		}
	}
	if (rc != SQLITE_DONE)
		r = sqlerr(rc) ? sqlerr(rc) : -EIO;
	else
		r = found ? 0 : -EACCES;
	sqlite3_finalize(st);
	return r;
}

int mxf_rulesdb_domain_update(struct mxf_rulesdb *db, const char *domain, int enabled,
			      int subaddressing, char *err, size_t errlen)
{
	char name[MXF_DOMAIN_MAX + 1], *before = NULL;
	sqlite3_int64 dom_id;
	int r = check_domain(domain, name, sizeof(name), err, errlen);
	if (r < 0)
		return r;
	if ((r = begin_write(db, err, errlen)) < 0)
		return r;
	if ((r = find_domain(db, name, name, sizeof(name), &dom_id, err, errlen)) < 0 ||
	    (r = snapshot(db, SNAP_DOMAIN, name, 0, &before, err, errlen)) < 0)
		goto out;
	sqlite3_stmt *st;
	if ((r = prep(db,
		      "UPDATE domains SET enabled = coalesce(?2, enabled), "
		      "subaddressing = coalesce(?3, subaddressing) WHERE id = ?1",
		      &st, err, errlen)) < 0)
		goto out;
	sqlite3_bind_int64(st, 1, dom_id);
	if (enabled >= 0)
		sqlite3_bind_int(st, 2, enabled ? 1 : 0);
	if (subaddressing >= 0)
		sqlite3_bind_int(st, 3, subaddressing ? 1 : 0);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = fail_sql(db, rc, err, errlen);
		goto out;
	}
	if ((r = audit_after(db, "domain.set", name, before, SNAP_DOMAIN, name, 0, err, errlen)) < 0)
		goto out;
	free(before);
	return commit(db, err, errlen);
out:
	free(before);
	rollback(db);
	return r;
}
