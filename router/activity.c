/* activity.db: one row per recipient and outcome (DESIGN.md §4), written by
 * the router alone. WAL so readers (mxferryctl, apid) never block it. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "router.h"

#define ACTIVITY_SCHEMA 5

static sqlite3 *db;
static sqlite3_stmt *ins;
static time_t next_prune; /* retention: when to prune next (issue 8) */

static void activity_prune(void);

static const char schema_v1[] =
	"CREATE TABLE activity ("
	" id INTEGER PRIMARY KEY,"
	" ts INTEGER NOT NULL,"
	" queue_id TEXT, client_ip TEXT, helo TEXT, mail_from TEXT, rcpt TEXT, dest TEXT,"
	" rule TEXT, action TEXT, spf TEXT, dkim TEXT, dmarc TEXT,"
	" status TEXT NOT NULL CHECK(status IN ('forwarded','dropped','rejected','deferred',"
	"'delivery_failed','bounced','error')),"
	" remote_host TEXT, reply TEXT);"
	"CREATE INDEX activity_ts ON activity(ts);"
	"CREATE INDEX activity_qid ON activity(queue_id);"
	"PRAGMA user_version = 1;";
/* 2: the message size (issue 4). */
static const char schema_v2[] = "ALTER TABLE activity ADD COLUMN size INTEGER;"
				"PRAGMA user_version = 2;";
/* 3: issue 7, the ARC result and the whole Authentication-Results text of
 * smtpd's checks (spf, dkim, dmarc were in v1 already). */
static const char schema_v3[] = "ALTER TABLE activity ADD COLUMN arc TEXT;"
				"ALTER TABLE activity ADD COLUMN auth TEXT;"
				"PRAGMA user_version = 3;";

/* 4 (issue 11): why a refusal happened ("relay", "dnsbl:ZONE", "rate", ...)
 * and, for a row that stands for several coalesced refusals, how many. */
static const char schema_v4[] = "ALTER TABLE activity ADD COLUMN reason TEXT;"
				"ALTER TABLE activity ADD COLUMN count INTEGER;"
				"PRAGMA user_version = 4;";
/* 5 (issue 12): the message's Message-ID and Subject, for the activity
 * log's views (smtpd's reading of them; NULL for mail that did not come
 * through smtpd or had none). */
static const char schema_v5[] = "ALTER TABLE activity ADD COLUMN message_id TEXT;"
				"ALTER TABLE activity ADD COLUMN subject TEXT;"
				"PRAGMA user_version = 5;";
static sqlite3_stmt *ins_rej;

int activity_open(const char *path)
{
	char *err = NULL;
	int version = -1;
	sqlite3_stmt *st = NULL;

	/* 0640, whatever our umask (077): apid (issue 12) reads it through the
	 * router's group. SQLite gives -wal and -shm the database file's mode;
	 * ones left by an older router are corrected too. */
	static const char *const sfx[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		char p[4096];
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		int fd = open(p, O_RDWR | O_NOFOLLOW | O_CLOEXEC | (i == 0 ? O_CREAT : 0), 0640);
		if (fd >= 0) {
			if (fchmod(fd, 0640) < 0)
				mxf_warn("%s: %s", p, strerror(errno));
			close(fd);
		}
	}
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					       SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(db, 5000);
	/* WAL + synchronous=NORMAL: an activity row is a record, not mail;
	 * losing the last rows in a power cut is acceptable, an fsync per
	 * recipient on the event loop is not. */
	if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
			 &err) != SQLITE_OK)
		goto fail;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW)
		goto fail;
	version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	if (version > ACTIVITY_SCHEMA) {
		mxf_err("%s: schema version %d is newer than this router (%d)", path, version,
			ACTIVITY_SCHEMA);
		goto fail_quiet;
	}
	if (version < ACTIVITY_SCHEMA) {
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &err) != SQLITE_OK ||
		    (version < 1 && sqlite3_exec(db, schema_v1, NULL, NULL, &err) != SQLITE_OK) ||
		    (version < 2 && sqlite3_exec(db, schema_v2, NULL, NULL, &err) != SQLITE_OK) ||
		    (version < 3 && sqlite3_exec(db, schema_v3, NULL, NULL, &err) != SQLITE_OK) ||
		    (version < 4 && sqlite3_exec(db, schema_v4, NULL, NULL, &err) != SQLITE_OK) ||
		    (version < 5 && sqlite3_exec(db, schema_v5, NULL, NULL, &err) != SQLITE_OK) ||
		    sqlite3_exec(db, "COMMIT", NULL, NULL, &err) != SQLITE_OK)
			goto fail;
	}
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO activity (ts, queue_id, client_ip, helo, mail_from, "
			       "rcpt, dest, rule, action, status, remote_host, reply, size, "
			       "spf, dkim, dmarc, arc, auth, message_id, subject) "
			       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
			       -1, &ins, NULL) != SQLITE_OK)
		goto fail;
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO activity (ts, client_ip, helo, mail_from, rcpt, rule, "
			       "action, status, reply, reason, count) "
			       "VALUES (?,?,?,?,?,?,?,'rejected',?,?,?)",
			       -1, &ins_rej, NULL) != SQLITE_OK)
		goto fail;
	next_prune = 0;
	activity_prune();
	return 0;
fail:
	mxf_err("%s: %s", path, err ? err : db ? sqlite3_errmsg(db) : "cannot open");
fail_quiet:
	sqlite3_free(err);
	sqlite3_finalize(st);
	sqlite3_close(db);
	db = NULL;
	return -1;
}

void activity_close(void)
{
	sqlite3_finalize(ins_rej);
	ins_rej = NULL;
	sqlite3_finalize(ins);
	sqlite3_close(db);
	ins = NULL;
	db = NULL;
}

static void bind_opt(int idx, const char *s)
{
	if (s && *s)
		sqlite3_bind_text(ins, idx, s, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(ins, idx);
}

/* Our Authentication-Results field in the envelope's header block (the
 * router validated it at COMMIT), unfolded into out: "ID; spf=pass ...". */
static bool auth_text(const struct mxf_env *e, char *out, size_t cap)
{
	static const char name[] = "Authentication-Results: ";
	const char *h = e ? e->headers : NULL;
	if (!h)
		return false;
	if (strncmp(h, name, sizeof(name) - 1) != 0) {
		h = strstr(h, "\r\nAuthentication-Results: ");
		if (!h)
			return false;
		h += 2;
	}
	size_t o = 0;
	for (const char *p = h + sizeof(name) - 1; *p && o + 1 < cap; p++) {
		if (p[0] == '\r' && p[1] == '\n') {
			if (p[2] != '\t' && p[2] != ' ')
				break;
			p += 2; /* the fold becomes one space */
			out[o++] = ' ';
			continue;
		}
		out[o++] = *p;
	}
	out[o] = '\0';
	return true;
}

/* The results of one method ("dkim": "pass,fail" for two signatures). */
static void method_results(const char *ar, const char *method, char *out, size_t cap)
{
	size_t ml = strlen(method), o = 0;
	out[0] = '\0';
	for (const char *p = strchr(ar, ';'); p; p = strchr(p + 1, ';')) {
		const char *q = p + 1;
		while (*q == ' ')
			q++;
		if (strncmp(q, method, ml) != 0 || q[ml] != '=')
			continue;
		q += ml + 1;
		size_t l = strcspn(q, " ;");
		if (o + l + 2 >= cap)
			break;
		if (o)
			out[o++] = ',';
		memcpy(out + o, q, l);
		o += l;
		out[o] = '\0';
	}
}

void activity_add(const struct mxf_env *e, const struct mxf_env_rcpt *r, const char *rcpt,
		  const char *status, const char *remote_host, const char *reply)
{
	/* Every recipient outcome passes here: count it even if the log fails. */
	metrics_recipient(status);
	if (!ins)
		return;
	sqlite3_reset(ins);
	sqlite3_clear_bindings(ins);
	sqlite3_bind_int64(ins, 1, (sqlite3_int64)time(NULL));
	bind_opt(2, e ? e->qid : NULL);
	bind_opt(3, e ? e->client_ip : NULL);
	bind_opt(4, e ? e->helo : NULL);
	/* The null sender is "" (stored as such, not NULL) when there is a message. */
	if (e)
		sqlite3_bind_text(ins, 5, e->sender, -1, SQLITE_TRANSIENT);
	bind_opt(6, r ? r->orig : rcpt);
	bind_opt(7, r ? r->dest : NULL);
	bind_opt(8, r ? r->rule : NULL);
	bind_opt(9, r ? r->action : NULL);
	sqlite3_bind_text(ins, 10, status, -1, SQLITE_STATIC);
	bind_opt(11, remote_host);
	bind_opt(12, reply);
	if (e)
		sqlite3_bind_int64(ins, 13, (sqlite3_int64)e->size);
	char ar[4096];
	if (auth_text(e, ar, sizeof(ar))) {
		static const char *const methods[] = {"spf", "dkim", "dmarc", "arc"};
		for (int i = 0; i < 4; i++) {
			char res[128];
			method_results(ar, methods[i], res, sizeof(res));
			bind_opt(14 + i, res);
		}
		bind_opt(18, ar);
	}
	if (e && e->msgid && *e->msgid)
		bind_opt(19, e->msgid);
	if (e && e->subject && *e->subject)
		bind_opt(20, e->subject);
	if (sqlite3_step(ins) != SQLITE_DONE)
		mxf_err("activity log write failed: %s", sqlite3_errmsg(db));
	sqlite3_reset(ins);
	activity_prune();
}

void activity_reject(const char *ip, const char *helo, const char *sender, const char *rcpt,
		     const char *rule, const char *action, const char *reply, const char *reason,
		     unsigned count)
{
	if (!ins_rej)
		return;
	sqlite3_reset(ins_rej);
	sqlite3_clear_bindings(ins_rej);
	sqlite3_bind_int64(ins_rej, 1, (sqlite3_int64)time(NULL));
	const char *vals[] = {ip, helo, sender, rcpt, rule, action, reply, reason};
	for (int i = 0; i < 8; i++)
		if (vals[i] && *vals[i])
			sqlite3_bind_text(ins_rej, i + 2, vals[i], -1, SQLITE_TRANSIENT);
	if (count > 1)
		sqlite3_bind_int64(ins_rej, 10, count);
	if (sqlite3_step(ins_rej) != SQLITE_DONE)
		mxf_err("activity log write failed: %s", sqlite3_errmsg(db));
	sqlite3_reset(ins_rej);
	activity_prune();
}

bool activity_sent_by(const char *qid, const char *sender)
{
	sqlite3_stmt *st = NULL;
	bool found = false;
	if (!db)
		return false;
	if (sqlite3_prepare_v2(db,
			       "SELECT 1 FROM activity WHERE queue_id = ?1 AND mail_from = ?2 "
			       "COLLATE NOCASE LIMIT 1",
			       -1, &st, NULL) != SQLITE_OK) {
		mxf_err("activity log read failed: %s", sqlite3_errmsg(db));
		return false;
	}
	sqlite3_bind_text(st, 1, qid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, sender, -1, SQLITE_STATIC);
	found = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return found;
}

/* Retention ([router] activity_retention): rows older than that go, at start
 * and then at most once an hour, piggybacked on writes (an idle log gains no
 * rows, so it may wait). In batches, so a large backlog never holds the event
 * loop for long: a full batch makes the next write prune again. */
#define PRUNE_BATCH 5000
#define PRUNE_EVERY 3600

static void activity_prune(void)
{
	time_t now = time(NULL);
	if (!db || now < next_prune)
		return;
	long long keep = R.cfg ? mxf_config_int(R.cfg, "router", "activity_retention") : 0;
	if (keep <= 0)
		keep = 31 * 86400;
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db,
			       "DELETE FROM activity WHERE id IN (SELECT id FROM activity "
			       "WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
			       -1, &st, NULL) != SQLITE_OK) {
		mxf_err("activity log prune failed: %s", sqlite3_errmsg(db));
		next_prune = now + PRUNE_EVERY;
		return;
	}
	sqlite3_bind_int64(st, 1, (sqlite3_int64)(now - keep));
	sqlite3_bind_int(st, 2, PRUNE_BATCH);
	int n = 0;
	if (sqlite3_step(st) == SQLITE_DONE) {
		n = sqlite3_changes(db);
	} else {
		mxf_err("activity log prune failed: %s", sqlite3_errmsg(db));
	}
	sqlite3_finalize(st);
	if (n > 0)
		mxf_info("activity log: pruned %d row(s) older than %lld s", n, keep);
	next_prune = n >= PRUNE_BATCH ? now : now + PRUNE_EVERY;
}
