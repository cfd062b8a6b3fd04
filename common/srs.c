#include "srs.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"

#define SRS_SECRET_NEW 32
#define SRS_HASH_LEN 4
#define SRS_DAY 86400
#define SRS_SLOTS 1024 /* 2 base32 chars */

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

#define SRS_MAX_KEYS 16
#define SRS_ID_LEN 16
#define SRS_DB_KEEP_DAYS 22

struct mxf_srs {
	uint8_t *key[SRS_MAX_KEYS];
	size_t key_len[SRS_MAX_KEYS];
	size_t nkeys;
	char *domain;
	sqlite3 *db;
};

/* ---- secret ---- */
static int read_secret(int fd, uint8_t *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	for (;;) {
		if (n == cap) {
			char extra;
			ssize_t k = read(fd, &extra, 1);
			if (k > 0)
				return -EFBIG;
			break;
		}
		ssize_t k = read(fd, buf + n, cap - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		n += (size_t)k;
	}
	if (n == 0)
		return -EINVAL;
	*len = n;
	return 0;
}

static int create_secret(const char *path)
{
	uint8_t raw[SRS_SECRET_NEW];
	unsigned char key[4 * ((SRS_SECRET_NEW + 2) / 3) + 2];
	char tmp[PATH_MAX];
	int r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	/* One text line: an operator rotates by putting a new line first. */
	int kl = EVP_EncodeBlock(key, raw, (int)sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	key[kl++] = '\n';
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	ssize_t k = write(fd, key, (size_t)kl);
	OPENSSL_cleanse(key, sizeof(key));
	if (k != (ssize_t)kl)
		r = k < 0 ? -errno : -EIO;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	/* Publish atomically and without overwrite: a secret that changes
	 * under live SRS addresses would break every pending bounce. */
	if (r == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0 &&
	    errno != EEXIST)
		r = -errno;
	unlink(tmp);
	if (r == 0) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", path);
		char *slash = strrchr(dir, '/');
		if (slash == dir)
			slash[1] = '\0';
		else if (slash)
			*slash = '\0';
		else
			strcpy(dir, ".");
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	return r;
}

int mxf_srs_load_secret(const char *path, int create, uint8_t *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT && create) {
		int r = create_secret(path);
		if (r < 0)
			return r;
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	}
	if (fd < 0)
		return -errno;
	struct stat st;
	int r = 0;
	if (fstat(fd, &st) < 0)
		r = -errno;
	else if (!S_ISREG(st.st_mode))
		r = -EINVAL;
	else if (st.st_mode & 077)
		mxf_warn("%s: secret is readable by others (mode %03o); make it 0600", path,
			 (unsigned)(st.st_mode & 0777));
	if (r == 0)
		r = read_secret(fd, buf, cap, len);
	close(fd);
	return r;
}

/* ---- object ---- */
static int add_key(struct mxf_srs *s, const uint8_t *k, size_t n)
{
	if (n == 0)
		return 0;
	if (s->nkeys == SRS_MAX_KEYS)
		return -E2BIG;
	if (!(s->key[s->nkeys] = malloc(n)))
		return -ENOMEM;
	memcpy(s->key[s->nkeys], k, n);
	s->key_len[s->nkeys++] = n;
	return 0;
}

int mxf_srs_new(const uint8_t *secret, size_t len, const char *srs_domain, struct mxf_srs **out)
{
	if (len == 0 || !srs_domain || !*srs_domain)
		return -EINVAL;
	struct mxf_srs *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	int r = (s->domain = strdup(srs_domain)) ? 0 : -ENOMEM;
	bool text = true;
	for (size_t i = 0; i < len && text; i++)
		text = (secret[i] >= 0x20 && secret[i] < 0x7f) || secret[i] == '\n' ||
		       secret[i] == '\r' || secret[i] == '\t';
	if (r == 0 && text) {
		/* Lines, newest first; blank lines and trailing CR ignored. */
		for (size_t i = 0; i < len && r == 0;) {
			size_t e = i;
			while (e < len && secret[e] != '\n')
				e++;
			size_t n = e - i;
			while (n && (secret[i + n - 1] == '\r' || secret[i + n - 1] == ' ' ||
				     secret[i + n - 1] == '\t'))
				n--;
			r = add_key(s, secret + i, n);
			i = e + 1;
		}
	} else if (r == 0) {
		r = add_key(s, secret, len);
	}
	if (r == 0 && s->nkeys == 0)
		r = -EINVAL;
	if (r < 0) {
		mxf_srs_free(s);
		return r;
	}
	for (char *p = s->domain; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	*out = s;
	return 0;
}

void mxf_srs_free(struct mxf_srs *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nkeys; i++) {
		OPENSSL_cleanse(s->key[i], s->key_len[i]);
		free(s->key[i]);
	}
	if (s->db)
		sqlite3_close(s->db);
	free(s->domain);
	free(s);
}

size_t mxf_srs_nkeys(const struct mxf_srs *s)
{
	return s->nkeys;
}

int mxf_srs_open_db(struct mxf_srs *s, const char *path)
{
	sqlite3 *db = NULL;
	int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
		    SQLITE_OK ||
	    sqlite3_busy_timeout(db, 5000) != SQLITE_OK ||
	    /* A lost mapping only breaks a return for one message: WAL with
	     * synchronous=NORMAL keeps fsyncs off the router's loop. */
	    sqlite3_exec(db,
			 "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
			 "CREATE TABLE IF NOT EXISTS srs (id TEXT PRIMARY KEY CHECK (length(id) = 16),"
			 " sender TEXT NOT NULL CHECK (length(sender) <= 512),"
			 " created INTEGER NOT NULL) WITHOUT ROWID;",
			 NULL, NULL, NULL) != SQLITE_OK) {
		mxf_err("%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
		sqlite3_close(db);
		return -EIO;
	}
	if (s->db)
		sqlite3_close(s->db);
	s->db = db;
	return 0;
}

/* ---- hash and stamp (libsrs2's rules) ---- */

/* First SRS_HASH_LEN chars of base64(HMAC-SHA1(key, lower(a b c))), '/' as '_'. */
static int srs_hash(const uint8_t *key, size_t klen, const char *a, size_t alen, const char *b,
		    size_t blen, const char *c, size_t clen, char out[SRS_HASH_LEN + 1])
{
	size_t n = alen + blen + clen;
	char *data = malloc(n ? n : 1);
	if (!data)
		return -ENOMEM;
	memcpy(data, a, alen);
	memcpy(data + alen, b, blen);
	memcpy(data + alen + blen, c, clen);
	for (size_t i = 0; i < n; i++)
		data[i] = (char)tolower((unsigned char)data[i]);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	const unsigned char *ok =
		HMAC(EVP_sha1(), key, (int)klen, (const unsigned char *)data, n, md, &mdlen);
	free(data);
	if (!ok)
		return -EIO;
	unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
	EVP_EncodeBlock(b64, md, (int)mdlen);
	for (int i = 0; i < SRS_HASH_LEN; i++)
		out[i] = b64[i] == '/' ? '_' : (char)b64[i];
	out[SRS_HASH_LEN] = '\0';
	return 0;
}

/* Constant-time check of a received hash against every key. */
static int hash_ok(const struct mxf_srs *s, const char *got_in, const char *a, size_t alen,
		   const char *b, size_t blen, const char *c, size_t clen)
{
	char got[SRS_HASH_LEN], want[SRS_HASH_LEN + 1];
	for (int i = 0; i < SRS_HASH_LEN; i++) {
		char ch = (char)tolower((unsigned char)got_in[i]);
		got[i] = ch == '/' ? '_' : ch;
	}
	int ok = 0;
	for (size_t k = 0; k < s->nkeys; k++) {
		int r = srs_hash(s->key[k], s->key_len[k], a, alen, b, blen, c, clen, want);
		if (r < 0)
			return r;
		for (int i = 0; i < SRS_HASH_LEN; i++)
			want[i] = (char)tolower((unsigned char)want[i]);
		ok |= CRYPTO_memcmp(got, want, SRS_HASH_LEN) == 0;
	}
	return ok ? 0 : -EPERM;
}

static void srs_stamp(time_t now, char out[3])
{
	unsigned t = (unsigned)((now / SRS_DAY) % SRS_SLOTS);
	out[0] = b32[(t >> 5) & 31];
	out[1] = b32[t & 31];
	out[2] = '\0';
}

static int stamp_value(const char *st, size_t n)
{
	if (n != 2)
		return -1;
	int v = 0;
	for (size_t i = 0; i < 2; i++) {
		const char *p = strchr(b32, toupper((unsigned char)st[i]));
		if (!st[i] || !p)
			return -1;
		v = v << 5 | (int)(p - b32);
	}
	return v;
}

static int stamp_check(const char *stamp, time_t now, int max_age_days)
{
	int then = stamp_value(stamp, 2);
	if (then < 0)
		return -EINVAL;
	/* Day numbers wrap every 1024 days: bring "now" above "then". */
	long long today = (long long)((now / SRS_DAY) % SRS_SLOTS);
	while (today < then)
		today += SRS_SLOTS;
	return today > (long long)then + max_age_days ? -ETIMEDOUT : 0;
}

int mxf_srs_is_srs(const char *addr)
{
	return addr && (strncasecmp(addr, "SRS0", 4) == 0 || strncasecmp(addr, "SRS1", 4) == 0) &&
	       addr[4] && strchr("=+-", addr[4]);
}

/* The short form: a random id mapped to the sender in srs.db. */
static int db_forward(const struct mxf_srs *s, const char *sender, time_t now, char *out,
		      size_t outlen)
{
	if (!s->db)
		return -ENAMETOOLONG;
	if (strlen(sender) > 512)
		return -ENAMETOOLONG;
	uint8_t rnd[SRS_ID_LEN];
	char id[SRS_ID_LEN + 1], stamp[3], hash[SRS_HASH_LEN + 1];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EIO;
	for (int i = 0; i < SRS_ID_LEN; i++)
		id[i] = b32[rnd[i] & 31];
	id[SRS_ID_LEN] = '\0';
	sqlite3_stmt *st = NULL;
	int r = -EIO;
	if (sqlite3_prepare_v2(s->db, "INSERT INTO srs (id, sender, created) VALUES (?1, ?2, ?3)",
			       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, sender, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
		if (sqlite3_step(st) == SQLITE_DONE)
			r = 0;
	}
	sqlite3_finalize(st);
	if (r < 0) {
		mxf_err("srs.db: cannot store a mapping: %s", sqlite3_errmsg(s->db));
		return r;
	}
	/* Purge what no valid return can name any more (about one write in 64). */
	if ((rnd[0] & 0xfc) == 0 &&
	    sqlite3_prepare_v2(s->db, "DELETE FROM srs WHERE created < ?1", -1, &st, NULL) ==
		    SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)now - SRS_DB_KEEP_DAYS * SRS_DAY);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
	srs_stamp(now, stamp);
	if ((r = srs_hash(s->key[0], s->key_len[0], stamp, 2, id, SRS_ID_LEN, "", 0, hash)) < 0)
		return r;
	int n = snprintf(out, outlen, "SRS0=%s=%s=%s@%s", hash, stamp, id, s->domain);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int mxf_srs_forward(const struct mxf_srs *s, const char *sender, time_t now, char *out,
		    size_t outlen)
{
	if (!sender || !*sender) {
		if (outlen < 1)
			return -ENAMETOOLONG;
		out[0] = '\0';
		return 0;
	}
	/* The last '@' separates: a quoted local part may contain one. */
	const char *at = strrchr(sender, '@');
	if (!at || at == sender || !at[1])
		return -EINVAL;
	const char *domain = at + 1;
	size_t llen = (size_t)(at - sender), dlen = strlen(domain);
	char hash[SRS_HASH_LEN + 1], local[1024];
	int r, n;
	if (mxf_srs_is_srs(sender) && llen > 5) {
		/* Already SRS: SRS1 keeps the first hop and its opaque part, so
		 * a return goes back through it (libsrs2's guarded scheme). */
		const char *host, *opaque;
		size_t hlen, olen;
		if (toupper((unsigned char)sender[3]) == '0') {
			host = domain;
			hlen = dlen;
			opaque = sender + 4; /* "=HHHH=TT=domain=local" */
			olen = llen - 4;
		} else {
			/* SRS1=HHHH=host=opaque: skip the old hash. */
			const char *p = memchr(sender + 5, '=', llen - 5);
			const char *q = p ? memchr(p + 1, '=', (size_t)(at - p - 1)) : NULL;
			if (!p || !q || q == p + 1)
				goto plain;
			host = p + 1;
			hlen = (size_t)(q - host);
			opaque = q + 1;
			olen = (size_t)(at - opaque);
		}
		if ((r = srs_hash(s->key[0], s->key_len[0], host, hlen, opaque, olen, "", 0, hash)) <
		    0)
			return r;
		n = snprintf(local, sizeof(local), "SRS1=%s=%.*s=%.*s", hash, (int)hlen, host,
			     (int)olen, opaque);
	} else {
	plain:;
		char stamp[3];
		srs_stamp(now, stamp);
		if ((r = srs_hash(s->key[0], s->key_len[0], stamp, 2, domain, dlen, sender, llen,
				  hash)) < 0)
			return r;
		n = snprintf(local, sizeof(local), "SRS0=%s=%s=%s=%.*s", hash, stamp, domain,
			     (int)llen, sender);
	}
	if (n < 0 || (size_t)n >= sizeof(local) || n > 64)
		return db_forward(s, sender, now, out, outlen);
	n = snprintf(out, outlen, "%s@%s", local, s->domain);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

static int db_reverse(const struct mxf_srs *s, const char *id, size_t idlen, char *out,
		      size_t outlen)
{
	char key[SRS_ID_LEN + 1];
	if (idlen != SRS_ID_LEN || !s->db)
		return -ENOENT;
	for (size_t i = 0; i < idlen; i++)
		key[i] = (char)toupper((unsigned char)id[i]);
	key[idlen] = '\0';
	sqlite3_stmt *st = NULL;
	int r = -ENOENT;
	if (sqlite3_prepare_v2(s->db, "SELECT sender FROM srs WHERE id = ?1", -1, &st, NULL) !=
	    SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *snd = (const char *)sqlite3_column_text(st, 0);
		int n = snprintf(out, outlen, "%s", snd ? snd : "");
		r = n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
	}
	sqlite3_finalize(st);
	return r;
}

int mxf_srs_reverse(const struct mxf_srs *s, const char *addr, time_t now, int max_age_days,
		    char *out, size_t outlen)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	if (!at || strcasecmp(at + 1, s->domain) != 0 || !mxf_srs_is_srs(addr))
		return -EINVAL;
	const char *p = addr + 5, *end = at;
	int n, r;
	if (toupper((unsigned char)addr[3]) == '1') {
		/* SRS1=HHHH=host=opaque -> SRS0opaque@host (no stamp: the first
		 * hop checks its own). */
		const char *e1 = memchr(p, '=', (size_t)(end - p));
		const char *e2 = e1 ? memchr(e1 + 1, '=', (size_t)(end - e1 - 1)) : NULL;
		if (!e1 || !e2 || e1 - p != SRS_HASH_LEN || e2 == e1 + 1 || e2 + 1 >= end)
			return -EINVAL;
		const char *host = e1 + 1, *opaque = e2 + 1;
		if ((r = hash_ok(s, p, host, (size_t)(e2 - host), opaque, (size_t)(end - opaque), "",
				 0)) < 0)
			return r;
		n = snprintf(out, outlen, "SRS0%.*s@%.*s", (int)(end - opaque), opaque,
			     (int)(e2 - host), host);
		return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
	}
	/* SRS0: HASH=TT=domain=local (the local part may contain '='), or the
	 * short form HASH=TT=ID. */
	const char *f[2];
	size_t fl[2];
	for (int i = 0; i < 2; i++) {
		const char *eq = memchr(p, '=', (size_t)(end - p));
		if (!eq || eq == p)
			return -EINVAL;
		f[i] = p;
		fl[i] = (size_t)(eq - p);
		p = eq + 1;
	}
	if (fl[0] != SRS_HASH_LEN || fl[1] != 2 || p >= end)
		return -EINVAL;
	const char *eq = memchr(p, '=', (size_t)(end - p));
	if (!eq) {
		if (end - p != SRS_ID_LEN)
			return -EINVAL;
		if ((r = hash_ok(s, f[0], f[1], 2, p, (size_t)(end - p), "", 0)) < 0 ||
		    (r = stamp_check(f[1], now, max_age_days)) < 0)
			return r;
		return db_reverse(s, p, (size_t)(end - p), out, outlen);
	}
	const char *dom = p, *local = eq + 1;
	size_t dlen = (size_t)(eq - p), llen = (size_t)(end - local);
	if (dlen == 0 || llen == 0)
		return -EINVAL;
	if ((r = hash_ok(s, f[0], f[1], 2, dom, dlen, local, llen)) < 0 ||
	    (r = stamp_check(f[1], now, max_age_days)) < 0)
		return r;
	n = snprintf(out, outlen, "%.*s@%.*s", (int)llen, local, (int)dlen, dom);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	return 0;
}
