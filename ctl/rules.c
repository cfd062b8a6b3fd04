/* mxferryctl: domains, addresses, rules and catch-alls in rules.db, then a
 * reload request to the router. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access.h"
#include "address.h"
#include "ctl.h"
#include "daemon.h"
#include "ipc.h"
#include "privdrop.h"
#include "rulesdb.h"


struct db {
	struct mxf_rulesdb *h;
	char path[PATH_MAX];
};

/* As root in production, the files belong to the router (it must read the
 * DB; the data dir is its own). In development everything stays ours. */
static int owner(const struct mxf_config *cfg, bool *give, uid_t *uid, gid_t *gid)
{
	*give = geteuid() == 0 && !mxf_config_bool(cfg, "main", "run_as_invoking_user");
	if (!*give)
		return 0;
	const char *user = mxf_config_str(cfg, "router", "user");
	if (mxf_privdrop_lookup(user, uid, gid) < 0)
		return ctl_fail("no such user %s ([router] user)", user);
	return 0;
}

/* Gives a file we just created to the router. Through a descriptor opened
 * without following links: data_dir belongs to the router user, who must not
 * be able to swap in a symlink and have root chown another file. */
static int give_file(const char *path, uid_t uid, gid_t gid, bool must_exist)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT && !must_exist)
			return 0;
		return ctl_fail("%s: %s", path, strerror(errno));
	}
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		rc = ctl_fail("%s: not a regular file", path);
	else if (fchown(fd, uid, gid) < 0 || fchmod(fd, 0660) < 0) /* group: apid */
		rc = ctl_fail("%s: %s", path, strerror(errno));
	close(fd);
	return rc;
}

/* The audit log's "who": the unix user running us (and, as root through
 * sudo, who invoked sudo: informative only, the environment is the caller's). */
static void set_actor(struct mxf_rulesdb *h)
{
	char who[128];
	uid_t uid = getuid();
	struct passwd *pw = getpwuid(uid);
	if (pw)
		snprintf(who, sizeof(who), "unix:%s", pw->pw_name);
	else
		snprintf(who, sizeof(who), "unix:%lu", (unsigned long)uid);
	const char *sudo = getenv("SUDO_USER");
	if (uid == 0 && sudo && *sudo && strlen(sudo) < 64 &&
	    strspn(sudo, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
		    strlen(sudo)) {
		size_t l = strlen(who);
		snprintf(who + l, sizeof(who) - l, " (sudo:%s)", sudo);
	}
	mxf_rulesdb_set_actor(h, who);
}

/* Opens data_dir/rules.db writable (creating and migrating it on first use)
 * or read-only (falling back to a writable open when it is missing or needs a
 * migration). */
static int db_open(const struct mxf_config *cfg, bool writable, struct db *db)
{
	const char *data = mxf_config_str(cfg, "main", "data_dir");
	char err[512];
	bool give;
	uid_t uid = 0;
	gid_t gid = 0;

	db->h = NULL;
	if (snprintf(db->path, sizeof(db->path), "%s/rules.db", data) >= (int)sizeof(db->path))
		return ctl_fail("data_dir too long");
	if (!writable) {
		int r = mxf_rulesdb_open(db->path, false, &db->h, err, sizeof(err));
		if (r == 0)
			return 0;
		if (r != -ENOENT && r != -ESTALE)
			return ctl_fail("%s", err);
	}
	if (owner(cfg, &give, &uid, &gid) != 0)
		return CTL_REFUSED;
	/* The master creates data_dir; mxferryctl may run before it ever did. */
	if (mkdir(data, 0750) == 0) {
		/* As the master makes it: 0750 whatever the umask. */
		if ((give && chown(data, uid, gid) < 0) || chmod(data, 0750) < 0)
			return ctl_fail("%s: %s", data, strerror(errno));
	} else if (errno != EEXIST) {
		return ctl_fail("cannot create %s: %s", data, strerror(errno));
	}
	struct stat st;
	bool created = lstat(db->path, &st) < 0 && errno == ENOENT;
	if (mxf_rulesdb_open(db->path, true, &db->h, err, sizeof(err)) < 0)
		return ctl_fail("%s", err);
	set_actor(db->h);
	if (created && give) {
		static const char *const sfx[] = {"-wal", "-shm", "-journal"};
		if (give_file(db->path, uid, gid, true) != 0)
			goto fail;
		for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
			char p[PATH_MAX + 16];
			snprintf(p, sizeof(p), "%s%s", db->path, sfx[i]);
			if (give_file(p, uid, gid, false) != 0)
				goto fail;
		}
	}
	return 0;
fail:
	mxf_rulesdb_close(db->h);
	db->h = NULL;
	return CTL_REFUSED;
}

/* Asks the router to load the rules again. A router that is not running
 * loads the DB when it starts, so that is not worth a word. */
static void reload_router(const struct mxf_config *cfg)
{
	char why[600];
	int s = ctl_router_open(cfg, why, sizeof(why));
	if (s < 0) {
		if (s != -ENOENT && s != -ECONNREFUSED)
			ctl_warn("saved, but %s; it will load the rules when it restarts", why);
		return;
	}
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_RELOAD);
	struct mxf_ipc_reply *rep = NULL;
	if (!m || mxf_ipc_put_u64(m, F_REQ, 1) < 0)
		ctl_warn("saved, but out of memory telling the router");
	else if (ctl_router_call(s, m, MXF_MSG_RELOAD_REPLY, 1, CTL_ROUTER_TIMEOUT_MS, &rep, why,
				 sizeof(why)) < 0)
		ctl_warn("saved, but the router did not confirm the reload: %s", why);
	else {
		const struct mxf_ipc_view *v = mxf_ipc_reply_view(rep);
		uint64_t u = 0;
		mxf_ipc_u64(v, F_CODE, 0, &u);
		if (u < 200 || u > 299) {
			const char *text = mxf_ipc_str(v, F_TEXT, 0);
			char safe[512];
			ctl_warn("saved, but the router could not reload (%llu %s); it keeps the "
				 "previous rules",
				 (unsigned long long)u, ctl_safe(safe, sizeof(safe), text ? text : ""));
		}
	}
	mxf_ipc_reply_free(rep);
	mxf_ipc_msg_free(m);
	close(s);
}

/* "local@a-label" shown as "local@U-label". */
static void show_addr(char *out, size_t outlen, const char *addr)
{
	const char *at = strrchr(addr, '@');
	char dom[MXF_DOMAIN_MAX * 4 + 1];
	char tmp[MXF_ADDR_SIZE * 4];
	if (at && mxf_domain_to_unicode(at + 1, dom, sizeof(dom)) == 0)
		snprintf(tmp, sizeof(tmp), "%.*s@%s", (int)(at - addr), addr, dom);
	else
		snprintf(tmp, sizeof(tmp), "%s", addr);
	ctl_safe(out, outlen, tmp);
}

static void show_domain(char *out, size_t outlen, const char *alabel)
{
	char dom[MXF_DOMAIN_MAX * 4 + 1];
	if (mxf_domain_to_unicode(alabel, dom, sizeof(dom)) < 0)
		snprintf(dom, sizeof(dom), "%s", alabel);
	ctl_safe(out, outlen, dom);
}

/* Splits "a,b , c" into a NULL-terminated array (in place in s). */
static int split_dests(char *s, char ***out, size_t *n)
{
	size_t cap = 1;
	for (const char *p = s; *p; p++)
		cap += *p == ',';
	char **v = calloc(cap + 1, sizeof(*v));
	if (!v)
		return ctl_fail("out of memory");
	*n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ' || *tok == '\t')
			tok++;
		size_t l = strlen(tok);
		while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
			tok[--l] = '\0';
		if (l == 0)
			continue;
		v[(*n)++] = tok;
	}
	if (*n == 0) {
		free(v);
		return ctl_fail("--forward needs at least one destination");
	}
	*out = v;
	return 0;
}

/* ---- domain ---- */

static int domain_list(const struct mxf_config *cfg)
{
	struct db db;
	if (db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	mxf_rulesdb_close(db.h);
	/* rulesdb.h has no domain listing: read the table directly, read-only. */
	sqlite3 *s = NULL;
	sqlite3_stmt *st = NULL;
	int rc = CTL_OK;
	if (sqlite3_open_v2(db.path, &s, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) !=
		    SQLITE_OK ||
	    sqlite3_prepare_v2(s,
			       "SELECT d.name, d.enabled, "
			       "  (SELECT count(*) FROM rules r WHERE r.domain_id = d.id "
			       "     AND r.matcher = 'literal'), "
			       "  (SELECT action FROM rules r WHERE r.domain_id = d.id "
			       "     AND r.matcher = 'all'), d.created, d.subaddressing, d.unverified "
			       "FROM domains d ORDER BY d.name",
			       -1, &st, NULL) != SQLITE_OK) {
		rc = ctl_fail("%s: %s", db.path, s ? sqlite3_errmsg(s) : "cannot open");
		goto out;
	}
	sqlite3_busy_timeout(s, 5000);
	static const char *const hdr[] = {"DOMAIN", "A-LABEL", "ENABLED", "RULES", "CATCH-ALL",
					  "ADDED"};
	struct ctl_table *t = ctl_table_new(6, hdr);
	int step;
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_begin("domains", true);
	}
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		const char *ca = (const char *)sqlite3_column_text(st, 3);
		char u[1024], a[512], n[32], when[64];
		if (ctl_json) {
			char ud[MXF_DOMAIN_MAX * 4 + 1];
			if (mxf_domain_to_unicode(name ? name : "", ud, sizeof(ud)) < 0)
				snprintf(ud, sizeof(ud), "%s", name ? name : "");
			cj_begin(NULL, false);
			cj_str("domain", name);
			cj_str("unicode", ud);
			cj_bool("enabled", sqlite3_column_int(st, 1));
			cj_int("rules", sqlite3_column_int(st, 2));
			cj_str("catchall", ca);
			cj_int("created", sqlite3_column_int64(st, 4));
			cj_bool("subaddressing", sqlite3_column_int(st, 5));
			cj_str("unverified", (const char *)sqlite3_column_text(st, 6));
			cj_end(false);
			continue;
		}
		show_domain(u, sizeof(u), name ? name : "");
		ctl_safe(a, sizeof(a), name ? name : "");
		snprintf(n, sizeof(n), "%d", sqlite3_column_int(st, 2));
		ctl_time(when, sizeof(when), (time_t)sqlite3_column_int64(st, 4));
		const char *cells[] = {u, strcmp(u, a) != 0 ? a : "",
				       sqlite3_column_int(st, 1) ? "yes" : "no", n, ca ? ca : "-",
				       when};
		ctl_table_add(t, cells);
	}
	if (ctl_json) {
		cj_end(true);
		cj_end(false);
	}
	if (step != SQLITE_DONE)
		rc = ctl_fail("%s: %s", db.path, sqlite3_errmsg(s));
	else if (ctl_json)
		;
	else if (ctl_table_rows(t) == 0)
		puts("No domains");
	else
		ctl_table_print(t);
	ctl_table_free(t);
out:
	sqlite3_finalize(st);
	sqlite3_close(s);
	return rc;
}

int ctl_domain(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[0], "dns") == 0)
		return ctl_domain_dns(cfg, argc - 1, argv + 1);
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return domain_list(cfg);
	if (argc == 4 && strcmp(argv[0], "set") == 0) {
		struct db db;
		char err[512];
		if (db_open(cfg, true, &db) != 0)
			return CTL_REFUSED;
		int r = mxf_rulesdb_domain_set(db.h, argv[1], argv[2], argv[3], err, sizeof(err));
		mxf_rulesdb_close(db.h);
		if (r < 0)
			return ctl_fail("%s", err);
		char a[MXF_DOMAIN_MAX + 1], u[1024], k[64], v[64];
		mxf_domain_to_ascii(argv[1], a, sizeof(a));
		show_domain(u, sizeof(u), a);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("domain", a);
			cj_str("key", argv[2]);
			cj_str("value", argv[3]);
			cj_end(false);
		} else {
			printf("domain %s: %s %s\n", u, ctl_safe(k, sizeof(k), argv[2]),
			       ctl_safe(v, sizeof(v), argv[3]));
		}
		fflush(stdout);
		reload_router(cfg);
		return CTL_OK;
	}
	if (argc == 2 && (strcmp(argv[0], "remove") == 0 || strcmp(argv[0], "enable") == 0 ||
			  strcmp(argv[0], "disable") == 0)) {
		struct db db;
		char err[512], a[MXF_DOMAIN_MAX + 1], u[1024];
		if (db_open(cfg, true, &db) != 0)
			return CTL_REFUSED;
		int r = strcmp(argv[0], "remove") == 0
				? mxf_rulesdb_domain_remove(db.h, argv[1], err, sizeof(err))
				: mxf_rulesdb_domain_enable(db.h, argv[1],
							    strcmp(argv[0], "enable") == 0, err,
							    sizeof(err));
		mxf_rulesdb_close(db.h);
		if (r < 0)
			return ctl_fail("%s", err);
		const char *done = strcmp(argv[0], "remove") == 0   ? "removed"
				   : strcmp(argv[0], "enable") == 0 ? "enabled"
								    : "disabled";
		mxf_domain_to_ascii(argv[1], a, sizeof(a));
		show_domain(u, sizeof(u), a);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("domain", a);
			cj_str("result", done);
			cj_end(false);
		} else {
			printf("domain %s %s\n", u, done);
		}
		fflush(stdout);
		reload_router(cfg);
		return CTL_OK;
	}
	if (argc != 2 || strcmp(argv[0], "add") != 0)
		return ctl_usage();
	struct db db;
	char err[512];
	if (db_open(cfg, true, &db) != 0)
		return CTL_REFUSED;
	int r = mxf_rulesdb_domain_add(db.h, argv[1], err, sizeof(err));
	mxf_rulesdb_close(db.h);
	if (r < 0)
		return ctl_fail("%s", err);
	char a[MXF_DOMAIN_MAX + 1], u[1024];
	mxf_domain_to_ascii(argv[1], a, sizeof(a));
	show_domain(u, sizeof(u), a);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("domain", a);
		cj_str("result", "added");
		cj_end(false);
	} else if (strcmp(u, a) != 0)
		printf("domain %s (%s) added\n", u, a);
	else
		printf("domain %s added\n", a);
	reload_router(cfg);
	return CTL_OK;
}

/* ---- address ---- */

static int address_list(const struct mxf_config *cfg)
{
	struct db db;
	if (db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	mxf_rulesdb_close(db.h);
	/* rulesdb.h has no address listing: read the table directly, read-only. */
	sqlite3 *s = NULL;
	sqlite3_stmt *st = NULL;
	int rc = CTL_OK;
	if (sqlite3_open_v2(db.path, &s, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) !=
		    SQLITE_OK ||
	    sqlite3_prepare_v2(s,
			       "SELECT a.email, a.verified, "
			       "  (SELECT count(*) FROM rule_dests rd WHERE rd.address_id = a.id), "
			       "  a.created FROM addresses a ORDER BY a.email",
			       -1, &st, NULL) != SQLITE_OK) {
		rc = ctl_fail("%s: %s", db.path, s ? sqlite3_errmsg(s) : "cannot open");
		goto out;
	}
	sqlite3_busy_timeout(s, 5000);
	static const char *const hdr[] = {"ADDRESS", "VERIFIED", "RULES", "ADDED"};
	struct ctl_table *t = ctl_table_new(4, hdr);
	int step;
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_begin("addresses", true);
	}
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		const char *email = (const char *)sqlite3_column_text(st, 0);
		char e[2048], n[32], when[64];
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("address", email);
			cj_bool("verified", sqlite3_column_int(st, 1));
			cj_int("rules", sqlite3_column_int(st, 2));
			cj_int("created", sqlite3_column_int64(st, 3));
			cj_end(false);
			continue;
		}
		show_addr(e, sizeof(e), email ? email : "");
		snprintf(n, sizeof(n), "%d", sqlite3_column_int(st, 2));
		ctl_time(when, sizeof(when), (time_t)sqlite3_column_int64(st, 3));
		const char *cells[] = {e, sqlite3_column_int(st, 1) ? "yes" : "no", n, when};
		ctl_table_add(t, cells);
	}
	if (ctl_json) {
		cj_end(true);
		cj_end(false);
	}
	if (step != SQLITE_DONE)
		rc = ctl_fail("%s: %s", db.path, sqlite3_errmsg(s));
	else if (ctl_json)
		;
	else if (ctl_table_rows(t) == 0)
		puts("No addresses");
	else
		ctl_table_print(t);
	ctl_table_free(t);
out:
	sqlite3_finalize(st);
	sqlite3_close(s);
	return rc;
}

static int send_verification(const struct mxf_config *cfg, struct db *db, const char *a,
			     char qid[MXF_QID_SIZE], char *why, size_t whylen)
{
	return mxf_routerctl_verify_mail(cfg, db->h, a, qid, why, whylen);
}

/* address add (unverified) / address resend: the verification mail and
 * what to say about it. */
static int verification_report(const struct mxf_config *cfg, struct db *db, const char *a,
			       const char *shown, bool added)
{
	char qid[MXF_QID_SIZE] = "", why[600];
	int r = send_verification(cfg, db, a, qid, why, sizeof(why));
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("address", a);
		if (added)
			cj_str("result", "added");
		cj_bool("verified", false);
		cj_begin("verification", false);
		cj_bool("sent", r == 0);
		if (r == 0)
			cj_str("queue_id", qid);
		else
			cj_str("error", why);
		cj_end(false);
		cj_end(false);
	} else if (r == 0) {
		printf("address %s %s, not verified: verification message queued as %s.\n"
		       "Forwarding starts once the recipient's code is given to "
		       "`mxferryctl address verify %s CODE`.\n",
		       shown, added ? "added" : "unchanged", qid, a);
	} else {
		if (added)
			printf("address %s added, not verified.\n", shown);
		ctl_warn("no verification message sent: %s; `mxferryctl address resend %s` sends "
			 "one",
			 why, a);
	}
	fflush(stdout);
	/* Adding stays done when the mail could not go; a resend that sent
	 * nothing failed. */
	return r == 0 || added ? CTL_OK : CTL_REFUSED;
}

int ctl_address(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return address_list(cfg);
	if (argc == 2 && strcmp(argv[0], "resend") == 0) {
		struct db db;
		char a[MXF_ADDR_SIZE], shown[2048];
		if (mxf_addr_normalize(argv[1], MXF_ADDR_UTF8, a, sizeof(a)) < 0)
			return ctl_fail("invalid address %s", ctl_safe(shown, sizeof(shown), argv[1]));
		if (db_open(cfg, true, &db) != 0)
			return CTL_REFUSED;
		show_addr(shown, sizeof(shown), a);
		int rc = verification_report(cfg, &db, a, shown, false);
		mxf_rulesdb_close(db.h);
		return rc;
	}
	if ((argc == 2 && (strcmp(argv[0], "verify") == 0 || strcmp(argv[0], "unverify") == 0)) ||
	    (argc == 3 && strcmp(argv[0], "verify") == 0)) {
		/* With a code: the one from the verification mail. Without: the
		 * operator vouches for (or withdraws) a mailbox. */
		bool on = strcmp(argv[0], "verify") == 0;
		struct db db;
		char err[512], a[MXF_ADDR_SIZE], shown[2048];
		if (db_open(cfg, true, &db) != 0)
			return CTL_REFUSED;
		int r = argc == 3
				? mxf_rulesdb_address_verify_token(db.h, argv[1], argv[2], err, sizeof(err))
				: mxf_rulesdb_address_verify(db.h, argv[1], on, err, sizeof(err));
		mxf_rulesdb_close(db.h);
		if (r < 0)
			return ctl_fail("%s", err);
		mxf_addr_normalize(argv[1], MXF_ADDR_UTF8, a, sizeof(a));
		show_addr(shown, sizeof(shown), a);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("address", a);
			cj_bool("verified", on);
			cj_end(false);
		} else {
			printf("address %s %s\n", shown, on ? "verified" : "no longer verified");
		}
		fflush(stdout);
		reload_router(cfg);
		return CTL_OK;
	}
	if (argc == 2 && strcmp(argv[0], "remove") == 0) {
		struct db db;
		char err[512], a[MXF_ADDR_SIZE], shown[2048];
		if (db_open(cfg, true, &db) != 0)
			return CTL_REFUSED;
		int r = mxf_rulesdb_address_remove(db.h, argv[1], err, sizeof(err));
		mxf_rulesdb_close(db.h);
		if (r < 0)
			return ctl_fail("%s", err);
		mxf_addr_normalize(argv[1], MXF_ADDR_UTF8, a, sizeof(a));
		show_addr(shown, sizeof(shown), a);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("address", a);
			cj_str("result", "removed");
			cj_end(false);
		} else {
			printf("address %s removed\n", shown);
		}
		fflush(stdout);
		reload_router(cfg);
		return CTL_OK;
	}
	if (argc < 2 || strcmp(argv[0], "add") != 0)
		return ctl_usage();
	const char *email = NULL;
	bool verified = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--verified") == 0 && !verified)
			verified = true;
		else if (argv[i][0] != '-' && !email)
			email = argv[i];
		else
			return ctl_usage();
	}
	if (!email)
		return ctl_usage();
	struct db db;
	char err[512];
	if (db_open(cfg, true, &db) != 0)
		return CTL_REFUSED;
	int r = mxf_rulesdb_address_add(db.h, email, verified, err, sizeof(err));
	if (r < 0) {
		mxf_rulesdb_close(db.h);
		return ctl_fail("%s", err);
	}
	char a[MXF_ADDR_SIZE], shown[2048];
	mxf_addr_normalize(email, MXF_ADDR_UTF8, a, sizeof(a));
	show_addr(shown, sizeof(shown), a);
	int rc = CTL_OK;
	if (!verified) {
		rc = verification_report(cfg, &db, a, shown, true);
	} else if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("address", a);
		cj_str("result", "added");
		cj_bool("verified", verified);
		cj_end(false);
	} else {
		printf("address %s added (verified by the operator)\n", shown);
	}
	mxf_rulesdb_close(db.h);
	/* Nothing the router loads changes until a rule uses the address, but
	 * a reload keeps the router's view the DB's. */
	reload_router(cfg);
	return rc;
}

/* ---- rule / catch-all ---- */

enum rule_cmd { RC_ADD, RC_EDIT, RC_CATCHALL };

struct action_args {
	const char *first; /* DOMAIN (add, catchall set) or TAG|NAME (edit) */
	const char *to, *match, *reject, *worker, *webhook, *name;
	/* Repeated --forward and --from accumulate: one or more actions of a
	 * kind merge into one list, as one or more sender patterns do. */
	char forward[MXF_ADDR_SIZE * 26], from[2048];
	bool have_forward, have_from, drop, disabled, have_prio;
	int priority, enabled; /* enabled: -1 keep (edit --enable / --disable) */
	int code;              /* --code with --reject; -1: none given */
};

static int append_list(char *buf, size_t len, const char *val, const char *opt)
{
	size_t o = strlen(buf);
	if (o + strlen(val) + 2 > len)
		return ctl_fail("%s: list too long", opt);
	snprintf(buf + o, len - o, "%s%s", o ? "," : "", val);
	return 0;
}

/* The one parser for rule add, rule edit and catchall set: FIRST [--to ADDRESS |
 * --match PATTERN] [--from SENDERS]... (--forward LIST... | --drop | --reject TEXT |
 * --worker PROGRAM) [--name N] [--priority P] [--disabled | --enable | --disable |
 * --any-sender], options in any order, "--opt VALUE" or "--opt=VALUE"; which
 * options a command takes is checked at the end. */
static int parse_action(int argc, char **argv, enum rule_cmd cmd, struct action_args *a)
{
	static const char *const valued[] = {"to",   "match",    "forward", "reject", "worker",
					     "name", "priority", "from",    "code",   "webhook"};
	memset(a, 0, sizeof(*a));
	a->enabled = -1;
	a->code = -1;
	bool any_sender = false;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		const char *val = NULL, *opt = NULL;
		for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]) && !opt; k++) {
			size_t l = strlen(valued[k]);
			if (strncmp(arg, "--", 2) == 0 && strncmp(arg + 2, valued[k], l) == 0 &&
			    (arg[2 + l] == '\0' || arg[2 + l] == '='))
				opt = valued[k];
		}
		if (opt) {
			const char *eq = strchr(arg, '=');
			if (eq)
				val = eq + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			else
				return ctl_usage();
			const char **slot = NULL;
			if (!strcmp(opt, "to"))
				slot = &a->to;
			else if (!strcmp(opt, "match"))
				slot = &a->match;
			else if (!strcmp(opt, "reject"))
				slot = &a->reject;
			else if (!strcmp(opt, "worker"))
				slot = &a->worker;
			else if (!strcmp(opt, "webhook"))
				slot = &a->webhook;
			else if (!strcmp(opt, "name"))
				slot = &a->name;
			if (slot) {
				if (*slot)
					return ctl_usage();
				*slot = val;
			} else if (!strcmp(opt, "forward")) {
				a->have_forward = true;
				if (append_list(a->forward, sizeof(a->forward), val, "--forward") != 0)
					return CTL_REFUSED;
			} else if (!strcmp(opt, "from")) {
				a->have_from = true;
				if (!*val)
					return ctl_fail("--from needs a sender pattern");
				if (append_list(a->from, sizeof(a->from), val, "--from") != 0)
					return CTL_REFUSED;
			} else if (!strcmp(opt, "code")) {
				char *end;
				long c = strtol(val, &end, 10);
				if (a->code >= 0 || !*val || *end || c < 400 || c > 599)
					return ctl_fail("--code takes an SMTP code (450-452, 550-554)");
				a->code = (int)c;
			} else {
				char *end;
				long pr = strtol(val, &end, 10);
				if (a->have_prio || !*val || *end || pr < 0 || pr > 1000000)
					return ctl_fail("--priority takes 0 to 1000000");
				a->priority = (int)pr;
				a->have_prio = true;
			}
		} else if (strcmp(arg, "--drop") == 0 && !a->drop) {
			a->drop = true;
		} else if (strcmp(arg, "--disabled") == 0 && !a->disabled && cmd == RC_ADD) {
			a->disabled = true;
		} else if ((strcmp(arg, "--enable") == 0 || strcmp(arg, "--disable") == 0) &&
			   a->enabled < 0 && cmd == RC_EDIT) {
			a->enabled = strcmp(arg, "--enable") == 0;
		} else if (strcmp(arg, "--any-sender") == 0 && !any_sender && cmd == RC_EDIT) {
			any_sender = true;
		} else if (arg[0] != '-' && !a->first) {
			a->first = arg;
		} else {
			return ctl_usage();
		}
	}
	int nact = a->have_forward + a->drop + !!a->reject + !!a->worker + !!a->webhook;
	if (!a->first || nact > 1 || (a->to && a->match) || (any_sender && a->have_from) ||
	    (a->code >= 0 && nact && !a->reject))
		return ctl_usage();
	if (any_sender)
		a->have_from = true; /* an empty list: any sender */
	switch (cmd) {
	case RC_ADD:
		return nact == 1 && (a->to || a->match) ? 0 : ctl_usage();
	case RC_CATCHALL:
		return nact == 1 && !a->to && !a->match && !a->name && !a->have_prio &&
				       !a->have_from
			       ? 0
			       : ctl_usage();
	case RC_EDIT:
		return argc > 1 ? 0 : ctl_usage();
	}
	return ctl_usage();
}

static const char *action_name(const struct action_args *a)
{
	return a->have_forward ? "forward"
	       : a->drop       ? "drop"
	       : a->reject     ? "reject"
	       : a->worker     ? "worker"
	       : a->webhook    ? "webhook"
			       : NULL;
}

/* Each comma-separated item of list, through emit. */
static void each_item(const char *list, void (*emit)(const char *one, void *arg), void *arg)
{
	for (const char *p = list; *p;) {
		size_t l = strcspn(p, ",");
		char one[MXF_ADDR_SIZE];
		snprintf(one, sizeof(one), "%.*s", (int)l, p);
		emit(one, arg);
		p += l + (p[l] == ',');
	}
}

static void cj_item(const char *one, void *arg)
{
	(void)arg;
	cj_str(NULL, one);
}

static void rule_json(const struct mxf_rule_info *r)
{
	cj_begin(NULL, false);
	cj_str("tag", r->tag);
	cj_str("domain", r->domain);
	cj_str("name", r->name);
	cj_int("priority", r->priority);
	cj_bool("enabled", r->enabled);
	cj_str("matcher", r->matcher);
	cj_str("to", r->to);
	cj_begin("from", true);
	each_item(r->from, cj_item, NULL);
	cj_end(true);
	cj_str("action", r->action);
	cj_begin("destinations", true);
	each_item(r->dests, cj_item, NULL);
	cj_end(true);
	cj_str("argument", r->arg);
	if (strcmp(r->action, "reject") == 0)
		cj_int("code", r->code ? r->code : 550);
	cj_end(false);
}

struct list_arg {
	struct ctl_table *t;
	const char *domain; /* A-label, or NULL for all */
};

static int rule_list_cb(const struct mxf_rule_info *r, void *arg)
{
	struct list_arg *la = arg;
	struct ctl_table *t = la->t;
	if (la->domain && strcmp(r->domain, la->domain) != 0)
		return 0;
	if (ctl_json) {
		rule_json(r);
		return 0;
	}
	char dom[1024], to[2048], dests[16384];
	show_domain(dom, sizeof(dom), r->domain);
	if (strcmp(r->matcher, "all") == 0)
		snprintf(to, sizeof(to), "*");
	else
		show_addr(to, sizeof(to), r->to);
	/* Destinations as U-labels too, one by one. */
	size_t o = 0;
	dests[0] = '\0';
	for (const char *p = r->dests; *p && o < sizeof(dests) - 1;) {
		size_t l = strcspn(p, ",");
		char one[MXF_ADDR_SIZE], shown[2048];
		snprintf(one, sizeof(one), "%.*s", (int)l, p);
		show_addr(shown, sizeof(shown), one);
		o += (size_t)snprintf(dests + o, sizeof(dests) - o, "%s%s", o ? "," : "", shown);
		p += l + (p[l] == ',');
	}
	if (!dests[0] && *r->arg)
		ctl_safe(dests, sizeof(dests), r->arg);
	if (!dests[0])
		snprintf(dests, sizeof(dests), "-");
	char tag[80], name[512], prio[32], from[2048];
	ctl_safe(name, sizeof(name), *r->name ? r->name : "-");
	ctl_safe(from, sizeof(from), *r->from ? r->from : "*");
	snprintf(prio, sizeof(prio), "%d", r->priority);
	const char *cells[] = {ctl_safe(tag, sizeof(tag), r->tag), dom, name, prio, r->matcher, to,
			       from, r->action, dests, r->enabled ? "yes" : "no"};
	ctl_table_add(t, cells);
	return 0;
}

static int rule_list(const struct mxf_config *cfg, const char *domain)
{
	struct db db;
	char a[MXF_DOMAIN_MAX + 1];
	if (domain && mxf_domain_to_ascii(domain, a, sizeof(a)) < 0)
		return ctl_fail("invalid domain name");
	if (db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	static const char *const hdr[] = {"TAG",  "DOMAIN", "NAME",	    "PRIORITY",
					  "MATCHER", "TO",	  "FROM",	    "ACTION",
					  "DESTINATIONS", "ENABLED"};
	struct ctl_table *t = ctl_table_new(10, hdr);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_begin("rules", true);
	}
	struct list_arg la = {t, domain ? a : NULL};
	int r = mxf_rulesdb_rule_list(db.h, rule_list_cb, &la);
	int rc = CTL_OK;
	if (ctl_json) {
		cj_end(true);
		cj_end(false);
	}
	if (r < 0)
		rc = ctl_fail("%s: cannot list rules: %s", db.path, strerror(-r));
	else if (ctl_json)
		;
	else if (ctl_table_rows(t) == 0)
		puts("No rules");
	else
		ctl_table_print(t);
	ctl_table_free(t);
	mxf_rulesdb_close(db.h);
	return rc;
}

struct show_arg {
	const char *which;
	int found;
};

static int rule_show_cb(const struct mxf_rule_info *r, void *arg)
{
	struct show_arg *sa = arg;
	if (strcmp(r->tag, sa->which) != 0 && (!*r->name || strcmp(r->name, sa->which) != 0))
		return 0;
	char b1[2048], b2[2048];
	if (ctl_json) {
		if (!sa->found++) {
			cj_begin(NULL, false);
			cj_begin("rules", true);
		}
		rule_json(r);
		return 0;
	}
	if (sa->found++)
		putchar('\n');
	printf("tag:          %s\n", ctl_safe(b1, sizeof(b1), r->tag));
	printf("name:         %s\n", ctl_safe(b1, sizeof(b1), r->name));
	show_domain(b1, sizeof(b1), r->domain);
	printf("domain:       %s\n", b1);
	printf("priority:     %d\n", r->priority);
	printf("enabled:      %s\n", r->enabled ? "yes" : "no");
	if (strcmp(r->matcher, "all") == 0)
		printf("matcher:      all (catch-all)\n");
	else {
		show_addr(b2, sizeof(b2), r->to);
		printf("matcher:      %s %s\n", r->matcher, b2);
	}
	if (*r->from)
		printf("from:         %s\n", ctl_safe(b1, sizeof(b1), r->from));
	printf("action:       %s\n", r->action);
	if (*r->dests)
		printf("destinations: %s\n", ctl_safe(b1, sizeof(b1), r->dests));
	if (*r->arg)
		printf("%s %s\n", strcmp(r->action, "reject") == 0    ? "reason:      "
				   : strcmp(r->action, "webhook") == 0 ? "url:         "
								       : "program:     ",
		       ctl_safe(b1, sizeof(b1), r->arg));
	if (strcmp(r->action, "reject") == 0)
		printf("code:         %d\n", r->code ? r->code : 550);
	return 0;
}

static int rule_show(const struct mxf_config *cfg, const char *which)
{
	struct db db;
	if (db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	struct show_arg sa = {which, 0};
	int r = mxf_rulesdb_rule_list(db.h, rule_show_cb, &sa);
	mxf_rulesdb_close(db.h);
	if (ctl_json && sa.found) {
		cj_end(true);
		cj_end(false);
	}
	if (r < 0)
		return ctl_fail("%s: cannot list rules: %s", db.path, strerror(-r));
	if (!sa.found)
		return ctl_fail("no rule with tag or name %s", which);
	return CTL_OK;
}

static int rule_change(const struct mxf_config *cfg, const char *op, const char *which)
{
	struct db db;
	char err[512];
	if (db_open(cfg, true, &db) != 0)
		return CTL_REFUSED;
	int r = strcmp(op, "remove") == 0
			? mxf_rulesdb_rule_remove(db.h, which, err, sizeof(err))
			: mxf_rulesdb_rule_enable(db.h, which, strcmp(op, "enable") == 0, err,
						  sizeof(err));
	mxf_rulesdb_close(db.h);
	if (r < 0)
		return ctl_fail("%s", err);
	char safe[512];
	const char *done = strcmp(op, "remove") == 0   ? "removed"
			   : strcmp(op, "enable") == 0 ? "enabled"
						       : "disabled";
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("rule", which);
		cj_str("result", done);
		cj_end(false);
	} else {
		printf("rule %s %s\n", ctl_safe(safe, sizeof(safe), which), done);
	}
	fflush(stdout);
	reload_router(cfg);
	return CTL_OK;
}

/* rule edit TAG|NAME [--to A | --match P] [--from S... | --any-sender]
 * [--forward L... | --drop | --reject T | --worker P] [--name N] [--priority P]
 * [--enable | --disable] */
static int rule_edit(const struct mxf_config *cfg, int argc, char **argv)
{
	struct action_args a;
	int rc = parse_action(argc, argv, RC_EDIT, &a);
	if (rc != 0)
		return rc;
	struct mxf_rule_edit e = {.priority = a.have_prio ? a.priority : -1,
				  .enabled = a.enabled,
				  .code = a.code,
				  .name = a.name,
				  .from = a.have_from ? a.from : NULL};
	if (a.to || a.match) {
		e.matcher = a.match ? "wildcard" : "literal";
		e.to = a.match ? a.match : a.to;
	}
	char **dests = NULL;
	size_t n = 0;
	if (a.have_forward && split_dests(a.forward, &dests, &n) != 0)
		return CTL_REFUSED;
	if ((e.action = action_name(&a))) {
		e.dests = (const char *const *)dests;
		e.ndest = n;
		e.arg = a.reject ? a.reject : a.worker ? a.worker : a.webhook;
	}
	struct db db;
	char err[512], safe[512];
	if (db_open(cfg, true, &db) != 0) {
		free(dests);
		return CTL_REFUSED;
	}
	int r = mxf_rulesdb_rule_edit(db.h, a.first, &e, err, sizeof(err));
	mxf_rulesdb_close(db.h);
	free(dests);
	if (r < 0)
		return ctl_fail("%s", err);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("rule", a.first);
		cj_str("result", "edited");
		cj_end(false);
	} else {
		printf("rule %s edited\n", ctl_safe(safe, sizeof(safe), a.first));
	}
	fflush(stdout);
	reload_router(cfg);
	return CTL_OK;
}

int ctl_rule(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "edit") == 0)
		return rule_edit(cfg, argc - 1, argv + 1);
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return rule_list(cfg, NULL);
	if (argc == 2 && strcmp(argv[0], "list") == 0)
		return rule_list(cfg, argv[1]);
	if (argc == 2 && strcmp(argv[0], "show") == 0)
		return rule_show(cfg, argv[1]);
	if (argc == 2 && (strcmp(argv[0], "remove") == 0 || strcmp(argv[0], "enable") == 0 ||
			  strcmp(argv[0], "disable") == 0))
		return rule_change(cfg, argv[0], argv[1]);
	if (argc < 1 || strcmp(argv[0], "add") != 0)
		return ctl_usage();
	struct action_args a;
	int rc = parse_action(argc - 1, argv + 1, RC_ADD, &a);
	if (rc != 0)
		return rc;
	char **dests = NULL;
	size_t n = 0;
	if (a.have_forward && split_dests(a.forward, &dests, &n) != 0)
		return CTL_REFUSED;
	struct db db;
	char err[512], tag[33];
	if (db_open(cfg, true, &db) != 0) {
		free(dests);
		return CTL_REFUSED;
	}
	struct mxf_rule_spec sp = {
		.domain = a.first,
		.from = a.from,
		.code = a.code < 0 ? 0 : a.code,
		.matcher = a.match ? "wildcard" : "literal",
		.to = a.match ? a.match : a.to,
		.action = action_name(&a),
		.dests = (const char *const *)dests,
		.ndest = n,
		.arg = a.reject ? a.reject : a.worker ? a.worker : a.webhook,
		.name = a.name,
		.priority = a.priority,
		.disabled = a.disabled,
	};
	int r = mxf_rulesdb_rule_create(db.h, &sp, tag, err, sizeof(err));
	mxf_rulesdb_close(db.h);
	free(dests);
	if (r < 0)
		return ctl_fail("%s", err);
	/* The tag alone on stdout, so scripts can capture it. */
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("tag", tag);
		cj_str("result", "added");
		cj_end(false);
	} else {
		printf("%s\n", tag);
	}
	fflush(stdout);
	if (a.worker && !ctl_worker_defined(cfg, a.worker))
		ctl_warn("note: worker %s is not defined yet; mail to this rule is answered 451 "
			 "(try again later) until `mxferryctl worker add %s ...`",
			 a.worker, a.worker);
	reload_router(cfg);
	return CTL_OK;
}

int ctl_catchall(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[0], "disable") == 0 || strcmp(argv[0], "remove") == 0)) {
		struct db db;
		char err[512], d[MXF_DOMAIN_MAX + 1], u[1024];
		if (db_open(cfg, true, &db) != 0)
			return CTL_REFUSED;
		int r = mxf_rulesdb_catchall_remove(db.h, argv[1], err, sizeof(err));
		mxf_rulesdb_close(db.h);
		if (r < 0)
			return ctl_fail("%s", err);
		mxf_domain_to_ascii(argv[1], d, sizeof(d));
		show_domain(u, sizeof(u), d);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("domain", d);
			cj_str("catchall", NULL);
			cj_str("result", "removed");
			cj_end(false);
		} else {
			printf("catch-all of %s removed\n", u);
		}
		fflush(stdout);
		reload_router(cfg);
		return CTL_OK;
	}
	if (argc < 1 || strcmp(argv[0], "set") != 0)
		return ctl_usage();
	struct action_args a;
	int rc = parse_action(argc - 1, argv + 1, RC_CATCHALL, &a);
	if (rc != 0)
		return rc;
	char **dests = NULL;
	size_t n = 0;
	if (a.have_forward && split_dests(a.forward, &dests, &n) != 0)
		return CTL_REFUSED;
	struct db db;
	char err[512];
	if (db_open(cfg, true, &db) != 0) {
		free(dests);
		return CTL_REFUSED;
	}
	struct mxf_rule_spec sp = {
		.domain = a.first,
		.code = a.code < 0 ? 0 : a.code,
		.matcher = "all",
		.action = action_name(&a),
		.dests = (const char *const *)dests,
		.ndest = n,
		.arg = a.reject ? a.reject : a.worker ? a.worker : a.webhook,
	};
	int r = mxf_rulesdb_catchall_put(db.h, &sp, err, sizeof(err));
	mxf_rulesdb_close(db.h);
	free(dests);
	if (r < 0)
		return ctl_fail("%s", err);
	char d[MXF_DOMAIN_MAX + 1], u[1024];
	mxf_domain_to_ascii(a.first, d, sizeof(d));
	show_domain(u, sizeof(u), d);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("domain", d);
		cj_str("catchall", action_name(&a));
		cj_end(false);
	} else {
		printf("catch-all of %s set to %s\n", u, action_name(&a));
	}
	fflush(stdout);
	reload_router(cfg);
	return CTL_OK;
}

/* ---- transports ---- */

int ctl_transport(const struct mxf_config *cfg, int argc, char **argv)
{
	bool set = argc == 3 && strcmp(argv[0], "set") == 0;
	if (!set && !(argc == 2 && strcmp(argv[0], "remove") == 0))
		return ctl_usage();
	struct db db;
	char err[512];
	if (db_open(cfg, true, &db) != 0)
		return CTL_REFUSED;
	int r = set ? mxf_rulesdb_transport_set(db.h, argv[1], argv[2], err, sizeof(err))
		    : mxf_rulesdb_transport_remove(db.h, argv[1], err, sizeof(err));
	mxf_rulesdb_close(db.h);
	if (r < 0)
		return ctl_fail("%s", err);
	char d[MXF_DOMAIN_MAX + 1], u[1024], h[600];
	mxf_domain_to_ascii(argv[1], d, sizeof(d));
	show_domain(u, sizeof(u), d);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("domain", d);
		cj_str("nexthop", set ? argv[2] : NULL);
		cj_str("result", set ? "set" : "removed");
		cj_end(false);
	} else if (set)
		printf("mail for %s goes to %s\n", u, ctl_safe(h, sizeof(h), argv[2]));
	else
		printf("transport for %s removed\n", u);
	fflush(stdout);
	reload_router(cfg);
	return CTL_OK;
}

/* ---- audit ---- */

static int audit_cb(const struct mxf_audit_entry *e, void *arg)
{
	struct ctl_table *t = arg;
	if (ctl_json) {
		char iso[40];
		ctl_iso(iso, sizeof(iso), (time_t)e->ts);
		cj_begin(NULL, false);
		cj_int("id", e->id);
		cj_int("ts", e->ts);
		cj_str("time", iso);
		cj_str("who", e->who);
		cj_str("action", e->action);
		cj_str("object", e->object);
		/* Stored by rulesdb as JSON: embedded as values, not strings. */
		cj_raw("before", e->before);
		cj_raw("after", e->after);
		cj_end(false);
		return 0;
	}
	char when[64], who[256], obj[1024], b[4096], a[4096];
	ctl_time(when, sizeof(when), (time_t)e->ts);
	const char *cells[] = {when, ctl_safe(who, sizeof(who), e->who ? e->who : ""),
			       e->action ? e->action : "",
			       ctl_safe(obj, sizeof(obj), e->object ? e->object : ""),
			       ctl_safe(b, sizeof(b), e->before ? e->before : "-"),
			       ctl_safe(a, sizeof(a), e->after ? e->after : "-")};
	ctl_table_add(t, cells);
	return 0;
}

/* audit [--since T] [--limit N] */
int ctl_audit(const struct mxf_config *cfg, int argc, char **argv)
{
	time_t since = 0;
	long long limit = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
			if (ctl_parse_time(argv[++i], &since) < 0)
				return ctl_fail("--since: not a time: %s", argv[i]);
		} else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
			char *end;
			limit = strtoll(argv[++i], &end, 10);
			if (!*argv[i] || *end || limit < 1)
				return ctl_fail("--limit takes a positive number");
		} else {
			return ctl_usage();
		}
	}
	struct db db;
	if (db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	static const char *const hdr[] = {"TIME", "WHO", "ACTION", "OBJECT", "BEFORE", "AFTER"};
	struct ctl_table *t = ctl_table_new(6, hdr);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_begin("entries", true);
	}
	int r = mxf_rulesdb_audit_list(db.h, (long long)since, limit, audit_cb, t);
	mxf_rulesdb_close(db.h);
	if (ctl_json) {
		cj_end(true);
		cj_end(false);
	}
	int rc = CTL_OK;
	if (r < 0)
		rc = ctl_fail("%s: cannot read the audit log: %s", db.path, strerror(-r));
	else if (ctl_json)
		;
	else if (ctl_table_rows(t) == 0)
		puts("No changes recorded");
	else
		ctl_table_print(t);
	ctl_table_free(t);
	return rc;
}

/* ---- check ---- */

struct checks {
	int problems;
};

static void check_line(struct checks *c, const char *what, bool ok, const char *detail)
{
	if (!ok)
		c->problems++;
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("check", what);
		cj_bool("ok", ok);
		cj_str("detail", detail);
		cj_end(false);
	} else {
		char safe[1024];
		printf("%-8s %s%s%s\n", ok ? "ok" : "PROBLEM", what, detail && *detail ? ": " : "",
		       ctl_safe(safe, sizeof(safe), detail ? detail : ""));
	}
}

/* PRAGMA quick_check of an SQLite file, read-only. */
static void check_sqlite(struct checks *c, const char *what, const char *path, bool must_exist)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		check_line(c, what, !must_exist, errno == ENOENT ? "not created yet" : strerror(errno));
		return;
	}
	sqlite3 *s = NULL;
	sqlite3_stmt *q = NULL;
	char detail[512] = "";
	bool ok = sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) ==
			  SQLITE_OK &&
		  sqlite3_busy_timeout(s, 5000) == SQLITE_OK &&
		  sqlite3_prepare_v2(s, "PRAGMA quick_check", -1, &q, NULL) == SQLITE_OK &&
		  sqlite3_step(q) == SQLITE_ROW;
	if (ok) {
		const char *res = (const char *)sqlite3_column_text(q, 0);
		ok = res && strcmp(res, "ok") == 0;
		snprintf(detail, sizeof(detail), "%s", res ? res : "no answer");
	} else {
		snprintf(detail, sizeof(detail), "%s", s ? sqlite3_errmsg(s) : "cannot open");
	}
	sqlite3_finalize(q);
	sqlite3_close(s);
	check_line(c, what, ok, ok ? "integrity ok" : detail);
}

int ctl_check(const struct mxf_config *cfg, int argc, char **argv)
{
	(void)argv;
	if (argc != 0)
		return ctl_usage();
	struct checks c = {0};
	char path[PATH_MAX + 32], detail[1024];
	const char *data = mxf_config_str(cfg, "main", "data_dir");
	const char *spool = mxf_config_str(cfg, "main", "spool_dir");
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_begin("checks", true);
	}
	/* The configuration parsed (or we would not be here). */
	check_line(&c, "configuration", true, mxf_config_file(cfg));
	const char *host = mxf_config_str(cfg, "main", "hostname");
	check_line(&c, "[main] hostname", *host != '\0', *host ? host : "empty");
	const char *srs = mxf_config_str(cfg, "router", "srs_domain");
	check_line(&c, "[router] srs_domain", *srs != '\0',
		   *srs ? srs : "empty: forwarding has no SRS domain");
	struct stat st;
	bool d_ok = stat(data, &st) == 0 && S_ISDIR(st.st_mode);
	check_line(&c, "data_dir", d_ok, d_ok ? data : strerror(errno));
	bool s_ok = stat(spool, &st) == 0 && S_ISDIR(st.st_mode);
	check_line(&c, "spool_dir", s_ok || errno == ENOENT,
		   s_ok ? spool : errno == ENOENT ? "not created yet (mxferryd makes it)" : strerror(errno));
	snprintf(path, sizeof(path), "%s/rules.db", data);
	check_sqlite(&c, "rules.db", path, false);
	/* Load the rules exactly as the router does: what it would refuse is a problem. */
	struct mxf_rulesdb *h = NULL;
	char err[512];
	int r = lstat(path, &st) == 0 ? mxf_rulesdb_open(path, false, &h, err, sizeof(err)) : 1;
	if (r < 0) {
		check_line(&c, "rules", false, err);
	} else if (r == 0) {
		struct mxf_ruleset *rs = NULL;
		struct mxf_ruleset_opts o = {
			.local_case_sensitive =
				!mxf_config_bool(cfg, "router", "local_part_case_insensitive"),
			.subaddr_sep = mxf_config_str(cfg, "router", "subaddress_separator"),
		};
		if (mxf_ruleset_load_opts(h, &o, &rs, err, sizeof(err)) < 0) {
			check_line(&c, "rules", false, err);
		} else {
			snprintf(detail, sizeof(detail), "%zu rule(s) load", mxf_ruleset_count(rs));
			check_line(&c, "rules", true, detail);
		}
		mxf_ruleset_free(rs);
		mxf_rulesdb_close(h);
	}
	snprintf(path, sizeof(path), "%s/activity.db", data);
	check_sqlite(&c, "activity.db", path, false);
	snprintf(path, sizeof(path), "%s/corrupt", spool);
	long ncorrupt = 0;
	DIR *dir = opendir(path);
	if (dir) {
		struct dirent *de;
		while ((de = readdir(dir)))
			ncorrupt += de->d_name[0] != '.';
		closedir(dir);
	}
	snprintf(detail, sizeof(detail), "%ld file(s) in %s", ncorrupt, path);
	check_line(&c, "corrupt envelopes", ncorrupt == 0, detail);
	if (ctl_json) {
		cj_end(true);
		cj_bool("ok", c.problems == 0);
		cj_int("problems", c.problems);
		cj_end(false);
	} else {
		printf("%d problem%s\n", c.problems, c.problems == 1 ? "" : "s");
	}
	if (c.problems) {
		fflush(stdout);
		return ctl_fail("%d problem%s found", c.problems, c.problems == 1 ? "" : "s");
	}
	return CTL_OK;
}

/* ---- for ctl/dkim.c ---- */

int ctl_db_open(const struct mxf_config *cfg, bool writable, struct mxf_rulesdb **h)
{
	struct db db;
	int r = db_open(cfg, writable, &db);
	*h = db.h;
	return r;
}

int ctl_owner(const struct mxf_config *cfg, bool *give, uid_t *uid, gid_t *gid)
{
	return owner(cfg, give, uid, gid);
}

void ctl_reload_router(const struct mxf_config *cfg)
{
	reload_router(cfg);
}

/* ---- allow and block lists (issue 11) ---- */

static int access_list_cb(const struct mxf_access_entry *e, void *arg)
{
	struct ctl_table *t = arg;
	if (ctl_json) {
		char iso[40];
		ctl_iso(iso, sizeof(iso), (time_t)e->created);
		cj_begin(NULL, false);
		cj_str("list", e->list);
		cj_str("kind", e->kind);
		cj_str("value", e->value);
		cj_str("reason", e->reason);
		cj_int("created", e->created);
		cj_str("time", iso);
		cj_end(false);
		return 0;
	}
	char when[64], v[1024], r[1024];
	ctl_time(when, sizeof(when), (time_t)e->created);
	const char *cells[] = {ctl_safe(v, sizeof(v), e->value), e->kind,
			       ctl_safe(r, sizeof(r), e->reason[0] ? e->reason : "-"), when};
	ctl_table_add(t, cells);
	return 0;
}

/* block|allow add VALUE [--reason TEXT] | remove VALUE | list */
static int access_cmd(const struct mxf_config *cfg, const char *list, int argc, char **argv)
{
	if (argc < 1)
		return ctl_usage();
	const char *op = argv[0];
	bool add = strcmp(op, "add") == 0, del = strcmp(op, "remove") == 0;
	if (strcmp(op, "list") == 0) {
		if (argc != 1)
			return ctl_usage();
		struct db db;
		if (db_open(cfg, false, &db) != 0)
			return CTL_REFUSED;
		static const char *const hdr[] = {"VALUE", "KIND", "REASON", "ADDED"};
		struct ctl_table *t = ctl_json ? NULL : ctl_table_new(4, hdr);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("list", list);
			cj_begin("entries", true);
		}
		int r = mxf_rulesdb_access_list(db.h, list, access_list_cb, t);
		mxf_rulesdb_close(db.h);
		if (ctl_json) {
			cj_end(true);
			cj_end(false);
		} else if (r == 0 && ctl_table_rows(t) == 0) {
			printf("The %s list is empty\n", list);
		} else if (r == 0) {
			ctl_table_print(t);
		}
		ctl_table_free(t);
		return r < 0 ? ctl_fail("%s list: %s", list, strerror(-r)) : CTL_OK;
	}
	const char *reason = NULL;
	if (add && argc == 4 && strcmp(argv[2], "--reason") == 0)
		reason = argv[3];
	else if (!((add || del) && argc == 2))
		return ctl_usage();
	struct db db;
	char err[512], norm[MXF_ACCESS_VALUE_MAX], h[1024];
	enum mxf_access_kind kind;
	if (db_open(cfg, true, &db) != 0)
		return CTL_REFUSED;
	int r = add ? mxf_rulesdb_access_add(db.h, list, argv[1], reason, err, sizeof(err))
		    : mxf_rulesdb_access_remove(db.h, list, argv[1], err, sizeof(err));
	mxf_rulesdb_close(db.h);
	if (r < 0)
		return ctl_fail("%s", err);
	if (mxf_access_parse(argv[1], &kind, norm, sizeof(norm)) < 0)
		snprintf(norm, sizeof(norm), "%s", argv[1]);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("list", list);
		cj_str("value", norm);
		cj_str("kind", mxf_access_kind_name(kind));
		cj_str("result", add ? "added" : "removed");
		cj_end(false);
	} else {
		printf("%s %s the %s list\n", ctl_safe(h, sizeof(h), norm),
		       add ? "added to" : "removed from", list);
	}
	fflush(stdout);
	reload_router(cfg);
	return CTL_OK;
}

int ctl_block(const struct mxf_config *cfg, int argc, char **argv)
{
	return access_cmd(cfg, "block", argc, argv);
}

int ctl_allow(const struct mxf_config *cfg, int argc, char **argv)
{
	return access_cmd(cfg, "allow", argc, argv);
}

