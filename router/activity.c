/* activity.db: one row per recipient and outcome (DESIGN.md §4), written by
 * the router alone. WAL so readers (mxferryctl, apid) never block it.
 *
 * Writes are off the event loop (issue 14): activity_add/activity_reject copy
 * the row (its time taken now) into a FIFO; a writer thread that owns the
 * write connection inserts whatever is queued in one transaction, so rows
 * batch by themselves under load and an idle router writes a row at once.
 * The loop never waits for the writer: past MAX_ROWS/MAX_BYTES queued, new
 * rows are dropped and counted. Retention pruning runs on the writer too.
 * activity_sent_by reads on the loop through a connection of its own (a WAL
 * reader does not block the writer); it sees committed rows only. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "router.h"

#define ACTIVITY_SCHEMA 5

/* The queue's bound: at ~0.5 KiB a row, a writer stuck on a locked database
 * for minutes at full rate; bytes too, as a row may carry ~10 KiB of text. */
#ifndef MAX_ROWS /* -DMAX_ROWS=... to try the limit by hand */
#define MAX_ROWS 100000
#endif
#define MAX_BYTES (64u << 20)
#define FULL_LOG_EVERY 10 /* s between "queue full" errors */

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

/* A row's text columns, in the INSERT's order (param[] maps them). NULL is
 * SQL NULL; the loop turns "" into NULL except for the null sender. */
enum { C_QID, C_IP, C_HELO, C_FROM, C_RCPT, C_DEST, C_RULE, C_ACTION, C_STATUS, C_RHOST,
       C_REPLY, C_AUTH, C_MSGID, C_SUBJECT, C_REASON, NCOL };
static const int param[NCOL] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 19, 20, 21};
#define P_TS 1
#define P_SIZE 13
#define P_METHODS 14 /* spf, dkim, dmarc, arc: derived from the auth text */
#define P_COUNT 22

struct arow {
	struct arow *next;
	int64_t ts, size; /* size < 0: NULL */
	unsigned count;	  /* > 1: a row standing for several refusals */
	size_t bytes;	  /* the allocation, for the queue's bound */
	const char *col[NCOL]; /* into buf */
	char buf[];
};

/* Loop (producer) and writer share Q under mu; db, ins, next_prune and keep
 * belong to the writer once it runs; rdb and sent to the loop. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t wake;
	struct arow *head, **tail;
	size_t rows, bytes; /* queued or in the writer's current batch */
	uint64_t dropped_full, dropped_failed;
	bool stop;
} Q = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .tail = &Q.head};
static pthread_t writer;
static bool running;

static sqlite3 *db, *rdb;
static sqlite3_stmt *ins, *sent;
static time_t next_prune; /* retention: when to prune next (issue 8) */
static long long keep;	  /* [router] activity_retention, s */

static void *writer_main(void *arg);

/* Another process holds the write lock: wait up to 5 s (then the batch is
 * retried once), but 1 s once the router stops, so that a stop ends within
 * the master's grace time even with the database locked. */
#define BUSY_SLEEP_US 2000
static int writer_busy(void *arg, int n)
{
	(void)arg;
	pthread_mutex_lock(&Q.mu);
	bool stopping = Q.stop;
	pthread_mutex_unlock(&Q.mu);
	if ((long)n * BUSY_SLEEP_US >= (stopping ? 1000000L : 5000000L))
		return 0;
	usleep(BUSY_SLEEP_US);
	return 1;
}

int activity_open(const char *path)
{
	char *err = NULL;
	int version = -1;
	sqlite3_stmt *st = NULL;

	/* 0640, whatever our umask (077): apid (issue 12) reads it through the
	 * router's group. SQLite gives -wal and -shm the database file's mode;
	 * ones left by an older router are corrected too. */
	/* Two connections on two threads: the library must allow it. */
	if (!sqlite3_threadsafe()) {
		mxf_err("%s: SQLite is built without thread support", path);
		return -1;
	}
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
	/* Only the writer thread waits on another process's lock, never the
	 * event loop. */
	sqlite3_busy_handler(db, writer_busy, NULL);
	/* WAL + synchronous=NORMAL: an activity row is a record, not mail;
	 * losing the last rows in a power cut is acceptable, an fsync per
	 * batch is not worth it. */
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
	/* One statement for both kinds of row: a refusal leaves the message's
	 * columns NULL. */
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO activity (ts, queue_id, client_ip, helo, mail_from, "
			       "rcpt, dest, rule, action, status, remote_host, reply, size, "
			       "spf, dkim, dmarc, arc, auth, message_id, subject, reason, count) "
			       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
			       -1, &ins, NULL) != SQLITE_OK)
		goto fail;
	/* The loop's own connection, read-only in effect: a WAL reader sees the
	 * last commit and never blocks the writer. The short timeout bounds a
	 * stall of the loop (WAL recovery by another process). */
	if (sqlite3_open_v2(path, &rdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
		    SQLITE_OK ||
	    sqlite3_exec(rdb, "PRAGMA query_only=1", NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_prepare_v2(rdb,
			       "SELECT 1 FROM activity WHERE queue_id = ?1 AND mail_from = ?2 "
			       "COLLATE NOCASE LIMIT 1",
			       -1, &sent, NULL) != SQLITE_OK) {
		mxf_err("%s: %s", path, err ? err : rdb ? sqlite3_errmsg(rdb) : "cannot open");
		goto fail_quiet;
	}
	sqlite3_busy_timeout(rdb, 1000);
	keep = R.cfg ? mxf_config_int(R.cfg, "router", "activity_retention") : 0;
	if (keep <= 0)
		keep = 31 * 86400;
	next_prune = 0; /* the writer's first job */

	/* No signal for the writer: they are the loop's (uv_signal). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&writer, NULL, writer_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		mxf_err("%s: cannot start the writer thread: %s", path, strerror(r));
		goto fail_quiet;
	}
	running = true;
	return 0;
fail:
	mxf_err("%s: %s", path, err ? err : db ? sqlite3_errmsg(db) : "cannot open");
fail_quiet:
	sqlite3_free(err);
	sqlite3_finalize(st);
	sqlite3_finalize(ins);
	sqlite3_finalize(sent);
	sqlite3_close(db);
	sqlite3_close(rdb);
	ins = sent = NULL;
	db = rdb = NULL;
	return -1;
}

/* Clean stop: the writer writes what is queued, then ends. */
void activity_close(void)
{
	if (running) {
		pthread_mutex_lock(&Q.mu);
		Q.stop = true;
		pthread_cond_signal(&Q.wake);
		pthread_mutex_unlock(&Q.mu);
		pthread_join(writer, NULL);
		running = false;
	}
	sqlite3_finalize(ins);
	sqlite3_finalize(sent);
	sqlite3_close(db);
	sqlite3_close(rdb);
	ins = sent = NULL;
	db = rdb = NULL;
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

/* The loop's half: one allocation holding the row and its text, appended
 * to the queue; never waits for the writer beyond the mutex. */
static void enqueue(const char *const *v, int64_t size, unsigned count)
{
	static time_t last_full_log;
	static uint64_t logged_drops;
	size_t len[NCOL], bytes = sizeof(struct arow);
	for (int i = 0; i < NCOL; i++) {
		len[i] = v[i] ? strlen(v[i]) + 1 : 0;
		bytes += len[i];
	}
	struct arow *a = malloc(bytes);
	if (a) {
		a->next = NULL;
		a->ts = (int64_t)time(NULL); /* the event's time, not the write's */
		a->size = size;
		a->count = count;
		a->bytes = bytes;
		char *p = a->buf;
		for (int i = 0; i < NCOL; i++) {
			a->col[i] = v[i] ? memcpy(p, v[i], len[i]) : NULL;
			p += len[i];
		}
	}
	pthread_mutex_lock(&Q.mu);
	if (a && Q.rows < MAX_ROWS && Q.bytes + bytes <= MAX_BYTES) {
		*Q.tail = a;
		Q.tail = &a->next;
		Q.rows++;
		Q.bytes += bytes;
		pthread_cond_signal(&Q.wake);
		pthread_mutex_unlock(&Q.mu);
		return;
	}
	uint64_t dropped = ++Q.dropped_full;
	size_t rows = Q.rows;
	pthread_mutex_unlock(&Q.mu);
	bool oom = !a;
	free(a);
	time_t now = time(NULL);
	if (now - last_full_log >= FULL_LOG_EVERY) {
		mxf_err("activity log: %zu row(s) wait for the database%s; %llu new row(s) "
			"dropped since the last report",
			rows, oom ? " (out of memory)" : "",
			(unsigned long long)(dropped - logged_drops));
		last_full_log = now;
		logged_drops = dropped;
	}
}

static const char *opt(const char *s)
{
	return s && *s ? s : NULL;
}

void activity_add(const struct mxf_env *e, const struct mxf_env_rcpt *r, const char *rcpt,
		  const char *status, const char *remote_host, const char *reply)
{
	/* Every recipient outcome passes here: count it even if the log fails. */
	metrics_recipient(status);
	if (!running)
		return;
	const char *v[NCOL] = {0};
	char ar[4096];
	if (e) {
		v[C_QID] = opt(e->qid);
		v[C_IP] = opt(e->client_ip);
		v[C_HELO] = opt(e->helo);
		/* The null sender is "" (stored as such, not NULL). */
		v[C_FROM] = e->sender;
		v[C_MSGID] = opt(e->msgid);
		v[C_SUBJECT] = opt(e->subject);
	}
	v[C_RCPT] = opt(r ? r->orig : rcpt);
	if (r) {
		v[C_DEST] = opt(r->dest);
		v[C_RULE] = opt(r->rule);
		v[C_ACTION] = opt(r->action);
	}
	v[C_STATUS] = status;
	v[C_RHOST] = opt(remote_host);
	v[C_REPLY] = opt(reply);
	if (auth_text(e, ar, sizeof(ar)))
		v[C_AUTH] = opt(ar);
	enqueue(v, e ? (int64_t)e->size : -1, 1);
}

void activity_reject(const char *ip, const char *helo, const char *sender, const char *rcpt,
		     const char *rule, const char *action, const char *reply, const char *reason,
		     unsigned count)
{
	if (!running)
		return;
	const char *v[NCOL] = {
		[C_IP] = opt(ip),	  [C_HELO] = opt(helo),	    [C_FROM] = opt(sender),
		[C_RCPT] = opt(rcpt),	  [C_RULE] = opt(rule),	    [C_ACTION] = opt(action),
		[C_STATUS] = "rejected", [C_REPLY] = opt(reply), [C_REASON] = opt(reason),
	};
	enqueue(v, -1, count);
}

uint64_t activity_dropped(bool failed)
{
	pthread_mutex_lock(&Q.mu);
	uint64_t n = failed ? Q.dropped_failed : Q.dropped_full;
	pthread_mutex_unlock(&Q.mu);
	return n;
}

/* Committed rows only: one still queued (normally for a millisecond or so;
 * longer while the database is locked) is not seen. Its caller matches
 * bounces that arrive long after the row was written. */
bool activity_sent_by(const char *qid, const char *sender)
{
	if (!sent)
		return false;
	sqlite3_reset(sent);
	sqlite3_bind_text(sent, 1, qid, -1, SQLITE_STATIC);
	sqlite3_bind_text(sent, 2, sender, -1, SQLITE_STATIC);
	int rc = sqlite3_step(sent);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		mxf_err("activity log read failed: %s", sqlite3_errmsg(rdb));
	sqlite3_reset(sent);
	sqlite3_clear_bindings(sent);
	return rc == SQLITE_ROW;
}

/* ---- the writer thread ---- */

static void bind_text(int idx, const char *s)
{
	if (s && *s)
		sqlite3_bind_text(ins, idx, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(ins, idx);
}

/* Inserts one row of the open transaction. 0: written; 1: this row alone
 * failed (a constraint, a value too big: the statement is undone, the
 * transaction goes on); <0: the transaction is over (an I/O error, a full
 * disk...: rolled back, by SQLite or here). */
static int insert(const struct arow *a)
{
	sqlite3_bind_int64(ins, P_TS, a->ts);
	for (int i = 0; i < NCOL; i++)
		if (i == C_FROM && a->col[i])
			sqlite3_bind_text(ins, param[i], a->col[i], -1, SQLITE_STATIC);
		else
			bind_text(param[i], a->col[i]);
	if (a->size >= 0)
		sqlite3_bind_int64(ins, P_SIZE, a->size);
	else
		sqlite3_bind_null(ins, P_SIZE);
	static const char *const methods[] = {"spf", "dkim", "dmarc", "arc"};
	char res[4][128];
	for (int i = 0; i < 4; i++) {
		res[i][0] = '\0';
		if (a->col[C_AUTH])
			method_results(a->col[C_AUTH], methods[i], res[i], sizeof(res[i]));
		bind_text(P_METHODS + i, res[i]);
	}
	if (a->count > 1)
		sqlite3_bind_int64(ins, P_COUNT, a->count);
	else
		sqlite3_bind_null(ins, P_COUNT);
	int rc = sqlite3_step(ins);
	if (rc != SQLITE_DONE)
		mxf_err("activity log write failed: %s", sqlite3_errmsg(db));
	sqlite3_reset(ins);
	sqlite3_clear_bindings(ins); /* no pointer into a row outlives it */
	if (rc == SQLITE_DONE)
		return 0;
	if (sqlite3_get_autocommit(db))
		return -1;
	rc &= 0xff;
	if (rc == SQLITE_CONSTRAINT || rc == SQLITE_TOOBIG || rc == SQLITE_MISMATCH)
		return 1;
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* One transaction for the whole batch. <0 when it did not commit; *bad:
 * rows that failed alone (skipped, the rest committed). */
static int write_batch(const struct arow *batch, unsigned *bad)
{
	*bad = 0;
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		mxf_err("activity log write failed: %s", sqlite3_errmsg(db));
		return -1;
	}
	for (const struct arow *a = batch; a; a = a->next) {
		int r = insert(a);
		if (r < 0)
			return -1;
		*bad += (unsigned)r;
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		mxf_err("activity log write failed: %s", sqlite3_errmsg(db));
		if (!sqlite3_get_autocommit(db))
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

/* Retention ([router] activity_retention): rows older than that go, at start
 * and then at most once an hour. In batches of their own transaction, so a
 * large backlog never holds the writer (and the rows queued behind) long: a
 * full batch prunes again after the next rows. */
#define PRUNE_BATCH 5000
#define PRUNE_EVERY 3600

static void activity_prune(void)
{
	time_t now = time(NULL);
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

static void free_rows(struct arow *a)
{
	while (a) {
		struct arow *next = a->next;
		free(a);
		a = next;
	}
}

/* Takes the whole queue each turn: the rows that arrived while the last
 * transaction ran become the next one. A failed transaction is retried
 * once, then its rows are dropped: the log is a record, not mail. */
static void *writer_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "mxf-activity"); /* tests exclude it by name */
	pthread_mutex_lock(&Q.mu);
	for (;;) {
		while (!Q.head && !Q.stop && time(NULL) < next_prune) {
			/* Wakes for the hourly prune even when no row comes. */
			struct timespec until = {.tv_sec = next_prune};
			pthread_cond_timedwait(&Q.wake, &Q.mu, &until);
		}
		struct arow *batch = Q.head;
		if (!batch && Q.stop)
			break;
		bool stopping = Q.stop;
		Q.head = NULL;
		Q.tail = &Q.head;
		pthread_mutex_unlock(&Q.mu);

		size_t rows = 0, bytes = 0;
		unsigned bad = 0;
		for (struct arow *a = batch; a; a = a->next) {
			rows++;
			bytes += a->bytes;
		}
		int r = batch ? write_batch(batch, &bad) : 0;
		if (r < 0) {
			mxf_err("activity log: %zu row(s) not written; retrying once", rows);
			r = write_batch(batch, &bad);
			if (r < 0)
				mxf_err("activity log: %zu row(s) dropped", rows);
		}
		free_rows(batch);
		/* Not at a stop: pruning may wait for the next start. */
		if (!stopping && time(NULL) >= next_prune)
			activity_prune();

		pthread_mutex_lock(&Q.mu);
		Q.rows -= rows;
		Q.bytes -= bytes;
		Q.dropped_failed += r < 0 ? rows : bad;
	}
	pthread_mutex_unlock(&Q.mu);
	return NULL;
}
