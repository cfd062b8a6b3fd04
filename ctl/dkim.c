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
#include "dns.h"
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

struct rec {
	char name[600], type[8], value[1400], note[300];
	enum rec_kind { RK_MX, RK_SPF, RK_DMARC, RK_DKIM, RK_STS, RK_TLSRPT } kind;
	const char *status; /* live DNS: ok, missing, wrong, unknown; NULL: not looked up */
	char found[300];    /* what the live DNS has instead (wrong), or why unknown */
};

/* Letters and digits of a TXT value, ASCII-lower-cased, without blanks:
 * DKIM p= values and SPF terms compare like that. */
static void squash(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (; *in && o + 1 < cap; in++)
		if (*in != ' ' && *in != '\t')
			out[o++] = (char)(*in >= 'A' && *in <= 'Z' ? *in - 'A' + 'a' : *in);
	out[o] = '\0';
}

/* The value of tag in a tag=value; list (lower-cased, blanks removed), or "". */
static void tag_of(const char *txt, const char *tag, char *out, size_t cap)
{
	char sq[2048], key[40];
	squash(txt, sq, sizeof(sq));
	snprintf(key, sizeof(key), "%s=", tag);
	out[0] = '\0';
	for (char *p = sq; p && *p; p = strchr(p, ';') ? strchr(p, ';') + 1 : NULL)
		if (strncmp(p, key, strlen(key)) == 0) {
			size_t l = strcspn(p + strlen(key), ";");
			snprintf(out, cap, "%.*s", (int)l, p + strlen(key));
			return;
		}
}

/* Whether what the live DNS answers has the record: ok (as we would publish
 * it, or an equivalent the operator chose: any DMARC policy, an SPF that
 * names this gateway), wrong (a record of that kind that does not do the
 * job), missing, or unknown (no answer). */
static void check_rec(struct mxf_dns *d, struct rec *r, const char *host)
{
	char why[200] = "", name[600];
	snprintf(name, sizeof(name), "%s", r->name);
	if (name[0] && name[strlen(name) - 1] == '.')
		name[strlen(name) - 1] = '\0';
	if (r->kind == RK_MX) {
		struct mxf_mx *mx = NULL;
		size_t n = 0;
		int rc = mxf_dns_mx(d, name, &mx, &n, why, sizeof(why));
		r->status = rc == MXF_DNS_OK ? "wrong" : rc == MXF_DNS_TEMPFAIL || rc < 0 ? "unknown"
										  : "missing";
		for (size_t i = 0; rc == MXF_DNS_OK && i < n; i++) {
			if (strcasecmp(mx[i].host, host) == 0)
				r->status = "ok";
			else if (!r->found[0])
				snprintf(r->found, sizeof(r->found), "%u %s.", mx[i].pref, mx[i].host);
		}
		if (strcmp(r->status, "unknown") == 0)
			snprintf(r->found, sizeof(r->found), "%s", why);
		free(mx);
		return;
	}
	char **txt = NULL;
	size_t n = 0;
	int rc = mxf_dns_txt(d, name, &txt, &n, why, sizeof(why));
	if (rc == MXF_DNS_TEMPFAIL || rc < 0) {
		r->status = "unknown";
		snprintf(r->found, sizeof(r->found), "%s", why);
		return;
	}
	static const char *const prefix[] = {[RK_SPF] = "v=spf1", [RK_DMARC] = "v=dmarc1",
					     [RK_DKIM] = "v=dkim1", [RK_STS] = "v=stsv1",
					     [RK_TLSRPT] = "v=tlsrptv1"};
	r->status = "missing";
	for (size_t i = 0; rc == MXF_DNS_OK && i < n; i++) {
		char sq[2048], want[2048];
		squash(txt[i], sq, sizeof(sq));
		/* A DKIM key record may leave out v=; every other kind starts with it. */
		if (strncmp(sq, prefix[r->kind], strlen(prefix[r->kind])) != 0 &&
		    !(r->kind == RK_DKIM && strstr(sq, "p=")))
			continue;
		bool good = true;
		if (r->kind == RK_DKIM) {
			char a[1600], b[1600];
			tag_of(txt[i], "p", a, sizeof(a));
			tag_of(r->value, "p", b, sizeof(b));
			good = strcmp(a, b) == 0;
		} else if (r->kind == RK_SPF) {
			/* Ours, or any record that names the gateway's host. */
			char h[300];
			squash(r->value, want, sizeof(want));
			snprintf(h, sizeof(h), "a:%s", host);
			good = strcmp(sq, want) == 0 || strstr(sq, h) != NULL;
		}
		if (good) {
			r->status = "ok";
			break;
		}
		r->status = "wrong";
		snprintf(r->found, sizeof(r->found), "%.280s", txt[i]);
	}
	if (rc == MXF_DNS_OK)
		mxf_dns_txt_free(txt, n);
}

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
	const char *host = mxf_config_str(cfg, "main", "hostname");
	const char *srs = mxf_config_str(cfg, "router", "srs_domain");
	struct keys *ks = calloc(1, sizeof(*ks));
	struct rec *r = calloc(6 + 64, sizeof(*r));
	size_t n = 0;
	int rc;
	if (!ks || !r) {
		free(ks);
		free(r);
		return ctl_fail("out of memory");
	}
	if ((rc = load_keys(cfg, a, ks)) != 0) {
		free(ks);
		free(r);
		return rc;
	}
	bool is_srs = strcasecmp(a, srs) == 0;
	snprintf(r[n].name, sizeof(r[n].name), "%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "MX");
	snprintf(r[n].value, sizeof(r[n].value), "10 %s.", host);
	snprintf(r[n].note, sizeof(r[n].note), "mail for %s comes to this gateway", a);
	r[n++].kind = RK_MX;
	/* Forwarded mail leaves with the SRS domain as envelope sender and DSNs
	 * with the HELO name: the gateway's address must pass SPF for both. */
	snprintf(r[n].name, sizeof(r[n].name), "%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=spf1 a:%s -all", host);
	snprintf(r[n].note, sizeof(r[n].note), "%s",
		 is_srs ? "SPF: the SRS domain is the envelope sender of every forwarded message"
			: "SPF: add the domain's own senders (include:...) before -all");
	r[n++].kind = RK_SPF;
	snprintf(r[n].name, sizeof(r[n].name), "_dmarc.%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=DMARC1; p=none");
	snprintf(r[n].note, sizeof(r[n].note),
		 "DMARC: start at p=none; add rua=mailto:... (your choice) to get reports");
	r[n++].kind = RK_DMARC;
	/* MTA-STS (RFC 8461) and TLS reporting (RFC 8460): optional; senders then
	 * insist on TLS to this gateway. The policy file itself is served over
	 * HTTPS at mta-sts.DOMAIN, which mxferry does not do. */
	snprintf(r[n].name, sizeof(r[n].name), "_mta-sts.%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=STSv1; id=%ld", (long)time(NULL));
	snprintf(r[n].note, sizeof(r[n].note),
		 "MTA-STS (optional): also serve https://mta-sts.%s/.well-known/mta-sts.txt with "
		 "\"version: STSv1 / mode: testing / mx: %s / max_age: 86400\"; a new id= "
		 "whenever it changes",
		 a, host);
	r[n++].kind = RK_STS;
	snprintf(r[n].name, sizeof(r[n].name), "_smtp._tls.%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=TLSRPTv1; rua=mailto:tls-reports@%s", a);
	snprintf(r[n].note, sizeof(r[n].note),
		 "TLS-RPT (optional, with MTA-STS): where senders report TLS failures");
	r[n++].kind = RK_TLSRPT;
	for (size_t i = 0; i < ks->n; i++) {
		snprintf(r[n].name, sizeof(r[n].name), "%s._domainkey.%s.", ks->k[i].selector, a);
		snprintf(r[n].type, sizeof(r[n].type), "TXT");
		snprintf(r[n].value, sizeof(r[n].value), "v=DKIM1; k=%s; p=%s", ks->k[i].algorithm,
			 ks->k[i].public_key);
		snprintf(r[n].note, sizeof(r[n].note), "DKIM %s key%s", ks->k[i].algorithm,
			 ks->k[i].enabled ? "" : " (disabled: not signing yet)");
		r[n++].kind = RK_DKIM;
	}
	/* What the live DNS has, asked of [main] dns_resolver like every lookup
	 * mxferry makes (the system's resolvers when it is empty). */
	if (!offline) {
		struct mxf_dns *d = NULL;
		char err[256];
		if (mxf_dns_new(mxf_config_str(cfg, "main", "dns_resolver"), 3, 2, &d, err,
				sizeof(err)) < 0) {
			ctl_warn("no DNS check: %s", err);
		} else {
			for (size_t i = 0; i < n; i++)
				check_rec(d, &r[i], host);
			mxf_dns_free(d);
		}
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
		if (ks->n == 0)
			printf("; no DKIM key for %s (mxferryctl dkim keygen %s)\n", a, a);
	}
	free(ks);
	free(r);
	return CTL_OK;
}
