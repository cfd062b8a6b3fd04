/* mxferryctl: DKIM signing keys and the DNS records a domain needs.
 *
 * `dkim keygen` makes the key pair with OpenSSL, writes the private key
 * where only the router's user can read it (data_dir/dkim/, 0700, files
 * 0600) and records the public half in rules.db; the router picks the key
 * up on its reload. The private key never passes through rules.db, the
 * audit log or any output. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "address.h"
#include "ctl.h"
#include "dkim.h"
#include "dnsrecords.h"
#include "rulesdb.h"

/* Base64 of the public key as p= wants it: the DER SubjectPublicKeyInfo
 * for RSA (RFC 6376 §3.6.1, what opendkim-genkey publishes), the raw 32
 * bytes for Ed25519 (RFC 8463 §4). */
static int public_b64(EVP_PKEY *k, enum mxf_dkim_alg a, char *out, size_t cap)
{
	unsigned char buf[1024], *p = buf;
	size_t len = sizeof(buf);
	if (a == MXF_DKIM_ED25519) {
		if (!EVP_PKEY_get_raw_public_key(k, buf, &len))
			return -EINVAL;
	} else {
		int n = i2d_PUBKEY(k, NULL);
		if (n <= 0 || (size_t)n > sizeof(buf) || i2d_PUBKEY(k, &p) != n)
			return -EINVAL;
		len = (size_t)n;
	}
	if ((len + 2) / 3 * 4 + 1 > cap)
		return -E2BIG;
	mxf_b64_encode(buf, len, out);
	return 0;
}

/* Writes the PEM into dir as a new file (never replacing one), 0600, owned
 * by the router when we are root. */
static int write_key(const struct mxf_config *cfg, EVP_PKEY *k, const char *path)
{
	const char *data = mxf_config_str(cfg, "main", "data_dir");
	char dir[PATH_MAX], tmp[PATH_MAX + 8];
	bool give;
	uid_t uid = 0;
	gid_t gid = 0;
	if (ctl_owner(cfg, &give, &uid, &gid) != 0)
		return CTL_REFUSED;
	snprintf(dir, sizeof(dir), "%s/dkim", data);
	if (mkdir(data, 0750) == 0 && ((give && chown(data, uid, gid) < 0) || chmod(data, 0750) < 0))
		return ctl_fail("%s: %s", data, strerror(errno));
	if (mkdir(dir, 0700) == 0) {
		if ((give && chown(dir, uid, gid) < 0) || chmod(dir, 0700) < 0)
			return ctl_fail("%s: %s", dir, strerror(errno));
	} else if (errno != EEXIST) {
		return ctl_fail("cannot create %s: %s", dir, strerror(errno));
	}
	struct stat st;
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return ctl_fail("%s is not a directory", dir);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return ctl_fail("%s: %s", tmp, strerror(errno));
	BIO *b = BIO_new_fd(fd, BIO_NOCLOSE);
	bool ok = b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) &&
		  BIO_flush(b) == 1;
	BIO_free(b);
	/* fsync: the DB row that follows must never name a key lost in a crash. */
	if (!ok || fchmod(fd, 0600) < 0 || (give && fchown(fd, uid, gid) < 0) || fsync(fd) < 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		return ctl_fail("%s: %s", tmp, ok ? strerror(e) : "cannot write the key");
	}
	close(fd);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
		int e = errno;
		unlink(tmp);
		return ctl_fail("%s: %s", path, strerror(e));
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int keygen(const struct mxf_config *cfg, int argc, char **argv)
{
	const char *domain = NULL, *algname = "rsa";
	char selector[MXF_DKIM_SELECTOR_MAX + 1] = "";
	bool enabled = true;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--selector") == 0 && i + 1 < argc) {
			if (strlen(argv[++i]) >= sizeof(selector))
				return ctl_fail("selector too long (at most %d characters)",
						MXF_DKIM_SELECTOR_MAX);
			snprintf(selector, sizeof(selector), "%s", argv[i]);
		} else if (strcmp(argv[i], "--algorithm") == 0 && i + 1 < argc) {
			algname = argv[++i];
		} else if (strcmp(argv[i], "--disabled") == 0) {
			enabled = false;
		} else if (argv[i][0] != '-' && !domain) {
			domain = argv[i];
		} else {
			return ctl_usage();
		}
	}
	enum mxf_dkim_alg alg;
	if (!domain)
		return ctl_usage();
	if (mxf_dkim_alg_parse(algname, &alg) < 0)
		return ctl_fail("algorithm is rsa or ed25519");
	char a[MXF_DOMAIN_MAX + 1];
	if (mxf_domain_to_ascii(domain, a, sizeof(a)) < 0)
		return ctl_fail("bad domain");
	if (!selector[0]) {
		/* Dated, so a rotation gets a new name and both can be published. */
		time_t now = time(NULL);
		struct tm tm;
		gmtime_r(&now, &tm);
		snprintf(selector, sizeof(selector), "mxf%04d%02d%s", tm.tm_year + 1900,
			 tm.tm_mon + 1, alg == MXF_DKIM_RSA ? "r" : "e");
	}
	if (!mxf_dkim_selector_valid(selector))
		return ctl_fail("bad selector (lower-case letters, digits, '-' and '.')");
	char path[PATH_MAX], pub[1024];
	if (mxf_dkim_key_path(mxf_config_str(cfg, "main", "data_dir"), a, selector, algname, path,
			      sizeof(path)) < 0)
		return ctl_fail("bad domain or selector for a key file name");

	EVP_PKEY *k = alg == MXF_DKIM_RSA ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
					  : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!k)
		return ctl_fail("key generation failed");
	if (public_b64(k, alg, pub, sizeof(pub)) < 0) {
		EVP_PKEY_free(k);
		return ctl_fail("cannot encode the public key");
	}
	struct mxf_rulesdb *db;
	if (ctl_db_open(cfg, true, &db) != 0) {
		EVP_PKEY_free(k);
		return CTL_REFUSED;
	}
	/* The file first: a row must never name a key that is not there. */
	int rc = write_key(cfg, k, path);
	EVP_PKEY_free(k);
	if (rc != 0) {
		mxf_rulesdb_close(db);
		return rc;
	}
	char err[512];
	if (mxf_rulesdb_dkim_add(db, a, selector, algname, pub, enabled, err, sizeof(err)) < 0) {
		unlink(path);
		mxf_rulesdb_close(db);
		return ctl_fail("%s", err);
	}
	mxf_rulesdb_close(db);
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("domain", a);
		cj_str("selector", selector);
		cj_str("algorithm", algname);
		cj_str("public_key", pub);
		cj_bool("enabled", enabled);
		cj_end(false);
	} else {
		printf("dkim key %s for %s (%s)%s; publish it (mxferryctl domain dns %s):\n", selector,
		       a, algname, enabled ? "" : ", disabled", a);
		printf("%s._domainkey.%s TXT \"v=DKIM1; k=%s; p=%s\"\n", selector, a, algname, pub);
	}
	fflush(stdout);
	ctl_reload_router(cfg);
	return CTL_OK;
}

struct keys {
	size_t n;
	struct mxf_dkim_key_info k[64];
	char store[64][5][1200];
};

static int collect(const struct mxf_dkim_key_info *k, void *arg)
{
	struct keys *ks = arg;
	if (ks->n == sizeof(ks->k) / sizeof(ks->k[0]))
		return 0;
	char(*s)[1200] = ks->store[ks->n];
	snprintf(s[0], sizeof(s[0]), "%s", k->domain);
	snprintf(s[1], sizeof(s[1]), "%s", k->selector);
	snprintf(s[2], sizeof(s[2]), "%s", k->algorithm);
	snprintf(s[3], sizeof(s[3]), "%s", k->public_key);
	ks->k[ks->n] = *k;
	ks->k[ks->n].domain = s[0];
	ks->k[ks->n].selector = s[1];
	ks->k[ks->n].algorithm = s[2];
	ks->k[ks->n].public_key = s[3];
	ks->n++;
	return 0;
}

static int load_keys(const struct mxf_config *cfg, const char *domain, struct keys *ks)
{
	struct mxf_rulesdb *db;
	ks->n = 0;
	if (ctl_db_open(cfg, false, &db) != 0)
		return CTL_REFUSED;
	int r = mxf_rulesdb_dkim_list(db, domain, collect, ks);
	mxf_rulesdb_close(db);
	if (r < 0)
		return ctl_fail("cannot read the keys: %s", strerror(-r));
	return 0;
}

static int list(const struct mxf_config *cfg, const char *domain)
{
	struct keys *ks = calloc(1, sizeof(*ks));
	if (!ks)
		return ctl_fail("out of memory");
	int rc = load_keys(cfg, domain, ks);
	if (rc != 0) {
		free(ks);
		return rc;
	}
	if (ctl_json) {
		cj_begin(NULL, true);
		for (size_t i = 0; i < ks->n; i++) {
			char ts[32];
			ctl_iso(ts, sizeof(ts), (time_t)ks->k[i].created);
			cj_begin(NULL, false);
			cj_str("domain", ks->k[i].domain);
			cj_str("selector", ks->k[i].selector);
			cj_str("algorithm", ks->k[i].algorithm);
			cj_str("public_key", ks->k[i].public_key);
			cj_bool("enabled", ks->k[i].enabled);
			cj_str("created", ts);
			cj_end(false);
		}
		cj_end(true);
	} else {
		static const char *const hdr[] = {"DOMAIN", "SELECTOR", "ALGORITHM", "ENABLED",
						  "CREATED"};
		struct ctl_table *t = ctl_table_new(5, hdr);
		for (size_t i = 0; i < ks->n; i++) {
			char ts[32];
			ctl_time(ts, sizeof(ts), (time_t)ks->k[i].created);
			const char *row[] = {ks->k[i].domain, ks->k[i].selector, ks->k[i].algorithm,
					     ks->k[i].enabled ? "yes" : "no", ts};
			ctl_table_add(t, row);
		}
		ctl_table_print(t);
		ctl_table_free(t);
	}
	free(ks);
	return CTL_OK;
}

static int change(const struct mxf_config *cfg, const char *verb, const char *domain,
		  const char *selector)
{
	struct keys *ks = calloc(1, sizeof(*ks));
	char a[MXF_DOMAIN_MAX + 1], err[512], path[PATH_MAX] = "";
	int rc;
	if (!ks)
		return ctl_fail("out of memory");
	if (mxf_domain_to_ascii(domain, a, sizeof(a)) < 0) {
		free(ks);
		return ctl_fail("bad domain");
	}
	if ((rc = load_keys(cfg, a, ks)) != 0) {
		free(ks);
		return rc;
	}
	for (size_t i = 0; i < ks->n; i++)
		if (strcmp(ks->k[i].selector, selector) == 0)
			mxf_dkim_key_path(mxf_config_str(cfg, "main", "data_dir"), a, selector,
					  ks->k[i].algorithm, path, sizeof(path));
	free(ks);
	struct mxf_rulesdb *db;
	if (ctl_db_open(cfg, true, &db) != 0)
		return CTL_REFUSED;
	int r = strcmp(verb, "remove") == 0
			? mxf_rulesdb_dkim_remove(db, a, selector, err, sizeof(err))
			: mxf_rulesdb_dkim_enable(db, a, selector, strcmp(verb, "enable") == 0, err,
						  sizeof(err));
	mxf_rulesdb_close(db);
	if (r < 0)
		return ctl_fail("%s", err);
	/* The row went first, so the router (on its reload) stops using the key
	 * before the file disappears. */
	if (strcmp(verb, "remove") == 0 && path[0] && unlink(path) < 0 && errno != ENOENT)
		ctl_warn("key removed, but %s stays: %s", path, strerror(errno));
	const char *done = strcmp(verb, "remove") == 0   ? "removed"
			   : strcmp(verb, "enable") == 0 ? "enabled"
							 : "disabled";
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("domain", a);
		cj_str("selector", selector);
		cj_str("result", done);
		cj_end(false);
	} else {
		printf("dkim key %s for %s %s\n", selector, a, done);
	}
	fflush(stdout);
	ctl_reload_router(cfg);
	return CTL_OK;
}

int ctl_dkim(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[0], "keygen") == 0)
		return keygen(cfg, argc - 1, argv + 1);
	if ((argc == 1 || argc == 2) && strcmp(argv[0], "list") == 0)
		return list(cfg, argc == 2 ? argv[1] : NULL);
	if (argc == 3 && (strcmp(argv[0], "remove") == 0 || strcmp(argv[0], "enable") == 0 ||
			  strcmp(argv[0], "disable") == 0))
		return change(cfg, argv[0], argv[1], argv[2]);
	return ctl_usage();
}

/* ---- domain dns ---- */

/* Zone-file text of a TXT value: strings of at most 255 bytes (RFC 1035
 * §3.3.14 limits each one; DKIM keys are longer). */
static void zone_txt(const char *v, char *out, size_t cap)
{
	size_t n = strlen(v), o = 0;
	for (size_t i = 0; i < n || i == 0; i += 255) {
		size_t l = n - i < 255 ? n - i : 255;
		int w = snprintf(out + o, cap - o, "%s\"%.*s\"", i ? " " : "", (int)l, v + i);
		if (w < 0 || (size_t)w >= cap - o)
			break;
		o += (size_t)w;
		if (n == 0)
			break;
	}
}

int ctl_domain_dns(const struct mxf_config *cfg, int argc, char **argv)
{
	bool offline = argc == 2 && strcmp(argv[1], "--offline") == 0;
	if (argc != 1 && !offline)
		return ctl_usage();
	char a[MXF_DOMAIN_MAX + 1];
	if (mxf_domain_to_ascii(argv[0], a, sizeof(a)) < 0)
		return ctl_fail("bad domain");
	struct mxf_dnsrec *r = calloc(6 + 64, sizeof(*r));
	if (!r)
		return ctl_fail("out of memory");
	struct mxf_rulesdb *db;
	if (ctl_db_open(cfg, false, &db) != 0) {
		free(r);
		return CTL_REFUSED;
	}
	size_t nkeys = 0;
	int got = mxf_dnsrec_build(cfg, db, a, r, 6 + 64, &nkeys);
	mxf_rulesdb_close(db);
	if (got < 0) {
		free(r);
		return ctl_fail("cannot read the keys: %s", strerror(-got));
	}
	size_t n = (size_t)got;
	/* What the live DNS has, asked of [main] dns_resolver like every lookup
	 * mxferry makes (the system's resolvers when it is empty). */
	if (!offline) {
		char err[256];
		if (mxf_dnsrec_check(cfg, r, n, err, sizeof(err)) < 0)
			ctl_warn("no DNS check: %s", err);
	}
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("domain", a);
		cj_begin("records", true);
		for (size_t i = 0; i < n; i++) {
			cj_begin(NULL, false);
			cj_str("name", r[i].name);
			cj_str("type", r[i].type);
			cj_str("value", r[i].value);
			if (strcmp(r[i].type, "TXT") == 0) {
				cj_begin("strings", true);
				size_t l = strlen(r[i].value);
				for (size_t k = 0; k < l; k += 255) {
					char part[256];
					snprintf(part, sizeof(part), "%.*s",
						 (int)(l - k < 255 ? l - k : 255), r[i].value + k);
					cj_str(NULL, part);
				}
				cj_end(true);
			}
			cj_str("note", r[i].note);
			if (r[i].status) {
				cj_str("status", r[i].status);
				if (r[i].found[0])
					cj_str("found", r[i].found);
			}
			cj_end(false);
		}
		cj_end(true);
		cj_end(false);
	} else {
		for (size_t i = 0; i < n; i++) {
			char txt[1600];
			if (strcmp(r[i].type, "TXT") == 0)
				zone_txt(r[i].value, txt, sizeof(txt));
			else
				snprintf(txt, sizeof(txt), "%s", r[i].value);
			printf("; %s\n", r[i].note);
			if (r[i].status) {
				char f[700];
				printf(";   live DNS: %s%s%s\n", r[i].status, r[i].found[0] ? ": " : "",
				       ctl_safe(f, sizeof(f), r[i].found));
			}
			printf("%s 3600 IN %s %s\n", r[i].name, r[i].type, txt);
		}
		if (nkeys == 0)
			printf("; no DKIM key for %s (mxferryctl dkim keygen %s)\n", a, a);
	}
	free(r);
	return CTL_OK;
}
