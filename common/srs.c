#include "srs.h"

#include <ctype.h>
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

#include "log.h"

#define SRS_SECRET_NEW 32
#define SRS_HASH_LEN 4
#define SRS_DAY 86400
#define SRS_SLOTS 1024 /* 2 base32 chars */

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

struct mxf_srs {
	uint8_t *secret;
	size_t secret_len;
	char *domain;
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
	uint8_t key[SRS_SECRET_NEW];
	char tmp[PATH_MAX];
	int r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if (RAND_bytes(key, sizeof(key)) != 1)
		return -EIO;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	ssize_t k = write(fd, key, sizeof(key));
	OPENSSL_cleanse(key, sizeof(key));
	if (k != (ssize_t)sizeof(key))
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
int mxf_srs_new(const uint8_t *secret, size_t len, const char *srs_domain, struct mxf_srs **out)
{
	if (len == 0 || !srs_domain || !*srs_domain)
		return -EINVAL;
	struct mxf_srs *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->secret = malloc(len);
	s->domain = strdup(srs_domain);
	if (!s->secret || !s->domain) {
		mxf_srs_free(s);
		return -ENOMEM;
	}
	memcpy(s->secret, secret, len);
	s->secret_len = len;
	for (char *p = s->domain; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	*out = s;
	return 0;
}

void mxf_srs_free(struct mxf_srs *s)
{
	if (!s)
		return;
	if (s->secret)
		OPENSSL_cleanse(s->secret, s->secret_len);
	free(s->secret);
	free(s->domain);
	free(s);
}

/* ---- hash and stamp (libsrs2's rules) ---- */

/* First SRS_HASH_LEN chars of base64(HMAC-SHA1(secret, lower(stamp domain local))). */
static int srs_hash(const struct mxf_srs *s, const char *stamp, const char *domain, size_t dlen,
		    const char *local, size_t llen, char out[SRS_HASH_LEN + 1])
{
	size_t sl = strlen(stamp), n = sl + dlen + llen;
	char *data = malloc(n ? n : 1);
	if (!data)
		return -ENOMEM;
	memcpy(data, stamp, sl);
	memcpy(data + sl, domain, dlen);
	memcpy(data + sl + dlen, local, llen);
	for (size_t i = 0; i < n; i++)
		data[i] = (char)tolower((unsigned char)data[i]);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	const unsigned char *ok = HMAC(EVP_sha1(), s->secret, (int)s->secret_len,
				       (const unsigned char *)data, n, md, &mdlen);
	free(data);
	if (!ok)
		return -EIO;
	unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
	EVP_EncodeBlock(b64, md, (int)mdlen);
	memcpy(out, b64, SRS_HASH_LEN);
	out[SRS_HASH_LEN] = '\0';
	return 0;
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
	char stamp[3], hash[SRS_HASH_LEN + 1];
	srs_stamp(now, stamp);
	int r = srs_hash(s, stamp, domain, dlen, sender, llen, hash);
	if (r < 0)
		return r;
	int n = snprintf(out, outlen, "SRS0=%s=%s=%s=%.*s@%s", hash, stamp, domain, (int)llen,
			 sender, s->domain);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	return 0;
}

int mxf_srs_reverse(const struct mxf_srs *s, const char *addr, time_t now, int max_age_days,
		    char *out, size_t outlen)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	if (!at || strcasecmp(at + 1, s->domain) != 0)
		return -EINVAL;
	size_t alen = (size_t)(at - addr);
	/* "SRS0" and a separator (libsrs2 accepts = + -), then
	 * HASH=TT=domain=local; the local part may itself contain '='. */
	if (alen < 5 || strncasecmp(addr, "SRS0", 4) != 0 || !strchr("=+-", addr[4]))
		return -EINVAL;
	const char *p = addr + 5, *end = at;
	const char *f[3];
	size_t fl[3];
	for (int i = 0; i < 3; i++) {
		const char *eq = memchr(p, '=', (size_t)(end - p));
		if (!eq || eq == p)
			return -EINVAL;
		f[i] = p;
		fl[i] = (size_t)(eq - p);
		p = eq + 1;
	}
	const char *local = p;
	size_t llen = (size_t)(end - p);
	if (llen == 0 || fl[0] != SRS_HASH_LEN || fl[1] != 2)
		return -EINVAL;
	char stamp[3] = {f[1][0], f[1][1], '\0'};
	char want[SRS_HASH_LEN + 1];
	int r = srs_hash(s, stamp, f[2], fl[2], local, llen, want);
	if (r < 0)
		return r;
	/* Case-insensitive, as libsrs2: some MTAs fold the case of local parts. */
	char got[SRS_HASH_LEN + 1];
	for (int i = 0; i < SRS_HASH_LEN; i++) {
		got[i] = (char)tolower((unsigned char)f[0][i]);
		want[i] = (char)tolower((unsigned char)want[i]);
	}
	if (CRYPTO_memcmp(got, want, SRS_HASH_LEN) != 0)
		return -EPERM;
	int then = stamp_value(f[1], 2);
	if (then < 0)
		return -EINVAL;
	/* Day numbers wrap every 1024 days: bring "now" above "then". */
	long long today = (long long)((now / SRS_DAY) % SRS_SLOTS);
	while (today < then)
		today += SRS_SLOTS;
	if (today > (long long)then + max_age_days)
		return -ETIMEDOUT;
	int n = snprintf(out, outlen, "%.*s@%.*s", (int)llen, local, (int)fl[2], f[2]);
	if (n < 0 || (size_t)n >= outlen)
		return -ENAMETOOLONG;
	return 0;
}
