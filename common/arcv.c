#include "arcv.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "dkim.h"
#include "dns.h"

#define SETS_MAX 50
/* Distinct keys looked up per message: one per sealer normally, and a
 * chain of 50 sets by 50 domains is not worth 51 queries. */
#define KEYS_MAX 8

struct rec {
	size_t off, len;
};

struct key {
	char name[MXF_DNS_NAME_MAX + 1];
	EVP_PKEY *pk; /* NULL: unusable (why says so) */
	const char *why;
	bool temp;
};

struct mxf_arcv {
	char *buf;
	size_t len, cap;
	struct rec *rec;
	size_t nrec, caprec;
	bool cut;  /* a field was cut short, or the header outgrew the bound */
	bool eoh, done;
	struct mxf_dkim_field *f;
	size_t n;
	int max_i;
	const char *fail; /* decided from the structure alone */
	const struct mxf_dkim_field *set[SETS_MAX + 1][3];
	bool body_relaxed;
	struct mxf_dkim_body *body;
	struct key keys[KEYS_MAX];
	size_t nkeys;
};

const char *mxf_arcv_result_name(enum mxf_arcv_result r)
{
	return r == MXF_ARCV_PASS ? "pass" : r == MXF_ARCV_FAIL ? "fail" : "none";
}

int mxf_arcv_new(struct mxf_arcv **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void mxf_arcv_free(struct mxf_arcv *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->nkeys; i++)
		EVP_PKEY_free(v->keys[i].pk);
	mxf_dkim_body_free(v->body);
	free(v->f);
	free(v->rec);
	free(v->buf);
	free(v);
}

void mxf_arcv_field(struct mxf_arcv *v, const char *f, size_t len, bool whole)
{
	if (v->eoh || v->cut)
		return;
	if (len >= 2 && f[len - 2] == '\r' && f[len - 1] == '\n')
		len -= 2;
	if (!whole || v->len + len > MXF_ARCV_HDR_MAX) {
		/* Unverifiable: whatever the AMS covers may be in what we lost. */
		v->cut = true;
		return;
	}
	if (v->len + len > v->cap) {
		size_t nc = v->cap ? v->cap : 4096;
		while (nc < v->len + len)
			nc *= 2;
		char *nb = realloc(v->buf, nc);
		if (!nb) {
			v->cut = true;
			return;
		}
		v->buf = nb;
		v->cap = nc;
	}
	if (v->nrec == v->caprec) {
		size_t nc = v->caprec ? 2 * v->caprec : 32;
		struct rec *nr = realloc(v->rec, nc * sizeof(*nr));
		if (!nr) {
			v->cut = true;
			return;
		}
		v->rec = nr;
		v->caprec = nc;
	}
	memcpy(v->buf + v->len, f, len);
	v->rec[v->nrec++] = (struct rec){v->len, len};
	v->len += len;
}

/* Tag t of field f's value; false when absent or the list is malformed. */
static bool tag(const struct mxf_dkim_field *f, const char *t, const char **val, size_t *vl)
{
	const char *c = memchr(f->p, ':', f->len);
	if (!c)
		return false;
	return mxf_dkim_tag(c + 1, f->len - (size_t)(c + 1 - f->p), t, val, vl) == 0;
}

static bool tag_is(const struct mxf_dkim_field *f, const char *t, const char *want)
{
	const char *val;
	size_t vl;
	return tag(f, t, &val, &vl) && vl == strlen(want) && strncasecmp(val, want, vl) == 0;
}

/* The structure (RFC 8617 §5.2 steps 1-4): sets complete and unique, the
 * latest seal not cv=fail, cv=none at i=1 and pass above. */
static const char *structure(struct mxf_arcv *v)
{
	bool any = false;
	for (size_t j = 0; j < v->n; j++) {
		int inst, k = mxf_arc_field_kind(&v->f[j], &inst);
		if (k < 0)
			continue;
		any = true;
		if (inst == 0)
			return "malformed or out of range instance";
		if (v->set[inst][k])
			return "duplicate ARC field";
		v->set[inst][k] = &v->f[j];
		if (inst > v->max_i)
			v->max_i = inst;
	}
	if (!any)
		return NULL;
	if (v->cut)
		return "header too large to verify";
	for (int i = 1; i <= v->max_i; i++)
		if (!v->set[i][MXF_ARC_AAR] || !v->set[i][MXF_ARC_AMS] || !v->set[i][MXF_ARC_AS])
			return "incomplete or missing ARC set";
	if (tag_is(v->set[v->max_i][MXF_ARC_AS], "cv", "fail"))
		return "latest seal says cv=fail";
	for (int i = 1; i <= v->max_i; i++)
		if (!tag_is(v->set[i][MXF_ARC_AS], "cv", i == 1 ? "none" : "pass"))
			return i == 1 ? "first seal without cv=none" : "seal without cv=pass";
	/* The latest AMS decides how the body is hashed. */
	const struct mxf_dkim_field *ams = v->set[v->max_i][MXF_ARC_AMS];
	const char *c, *l;
	size_t cl, ll;
	if (tag(ams, "l", &l, &ll))
		return "AMS with l= not accepted";
	v->body_relaxed = false;
	if (tag(ams, "c", &c, &cl)) {
		const char *slash = memchr(c, '/', cl);
		size_t hl = slash ? (size_t)(slash - c) : cl;
		if (!((hl == 7 && strncasecmp(c, "relaxed", 7) == 0) ||
		      (hl == 6 && strncasecmp(c, "simple", 6) == 0)))
			return "unknown canonicalization";
		if (slash) {
			size_t bl = cl - hl - 1;
			if (bl == 7 && strncasecmp(slash + 1, "relaxed", 7) == 0)
				v->body_relaxed = true;
			else if (!(bl == 6 && strncasecmp(slash + 1, "simple", 6) == 0))
				return "unknown canonicalization";
		}
	}
	if (mxf_dkim_body_new(v->body_relaxed, &v->body) < 0)
		return "out of memory";
	return NULL;
}

void mxf_arcv_eoh(struct mxf_arcv *v)
{
	if (v->eoh)
		return;
	v->eoh = true;
	if (v->nrec) {
		v->f = calloc(v->nrec, sizeof(*v->f));
		if (!v->f) {
			v->fail = "out of memory";
			return;
		}
	}
	for (size_t i = 0; i < v->nrec; i++) {
		struct mxf_dkim_field *f = &v->f[v->n];
		f->p = v->buf + v->rec[i].off;
		f->len = v->rec[i].len;
		const char *colon = memchr(f->p, ':', f->len);
		if (!colon)
			continue; /* not a field any signature can name */
		size_t nl = (size_t)(colon - f->p);
		while (nl > 0 && (f->p[nl - 1] == ' ' || f->p[nl - 1] == '\t'))
			nl--;
		if (nl == 0)
			continue;
		f->namelen = nl;
		v->n++;
	}
	v->fail = structure(v);
}

void mxf_arcv_body(struct mxf_arcv *v, const char *p, size_t len)
{
	if (v->body && !v->fail && !v->done)
		mxf_dkim_body_feed(v->body, p, len);
}

/* ---- keys and signatures ---- */

/* A DKIM key record (RFC 6376 §3.6.1) for alg. */
static EVP_PKEY *parse_key(const char *rec, enum mxf_dkim_alg alg, const char **why)
{
	const char *val;
	size_t vl, len = strlen(rec);
	uint8_t der[4096];
	*why = "unusable key record";
	if (mxf_dkim_tag(rec, len, "v", &val, &vl) == 0 && !(vl == 5 && memcmp(val, "DKIM1", 5) == 0))
		return NULL;
	if (mxf_dkim_tag(rec, len, "p", &val, &vl) == -EBADMSG)
		return NULL;
	if (mxf_dkim_tag(rec, len, "p", &val, &vl) != 0 || vl == 0) {
		*why = "no key or revoked key";
		return NULL;
	}
	long dl = mxf_b64_decode(val, vl, der, sizeof(der));
	if (dl <= 0)
		return NULL;
	const char *k;
	size_t kl;
	enum mxf_dkim_alg ka = MXF_DKIM_RSA;
	if (mxf_dkim_tag(rec, len, "k", &k, &kl) == 0) {
		if (kl == 7 && memcmp(k, "ed25519", 7) == 0)
			ka = MXF_DKIM_ED25519;
		else if (!(kl == 3 && memcmp(k, "rsa", 3) == 0))
			return NULL;
	}
	if (ka != alg) {
		*why = "key type does not match a=";
		return NULL;
	}
	EVP_PKEY *pk = NULL;
	const unsigned char *q = der;
	if (alg == MXF_DKIM_ED25519) {
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, (size_t)dl);
	} else {
		/* SubjectPublicKeyInfo as RFC 6376 says, or a bare RSAPublicKey
		 * as some publish. */
		pk = d2i_PUBKEY(NULL, &q, dl);
		if (!pk) {
			q = der;
			pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &q, dl);
		}
		if (pk && (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA || EVP_PKEY_get_bits(pk) < 1024)) {
			*why = "RSA key missing or under 1024 bits";
			EVP_PKEY_free(pk);
			pk = NULL;
		}
	}
	return pk;
}

static struct key *get_key(struct mxf_arcv *v, mxf_arcv_txt_fn txt, void *arg,
			   struct mxf_arcv_out *out, const char *d, size_t dl, const char *s,
			   size_t sl, enum mxf_dkim_alg alg)
{
	char name[MXF_DNS_NAME_MAX + 2];
	static struct key bad = {.why = "invalid key name"};
	/* A NUL would cut the name short: another key than the one named. */
	if (dl == 0 || sl == 0 || memchr(d, '\0', dl) || memchr(s, '\0', sl) ||
	    (size_t)snprintf(name, sizeof(name), "%.*s._domainkey.%.*s", (int)sl, s, (int)dl, d) >=
		    sizeof(name) ||
	    !mxf_dns_name_valid(name))
		return &bad;
	for (size_t i = 0; i < v->nkeys; i++)
		if (strcasecmp(v->keys[i].name, name) == 0) {
			struct key *k = &v->keys[i];
			if (k->pk && alg != (EVP_PKEY_get_base_id(k->pk) == EVP_PKEY_ED25519
						     ? MXF_DKIM_ED25519
						     : MXF_DKIM_RSA)) {
				static struct key mism = {.why = "key type does not match a="};
				return &mism;
			}
			return k;
		}
	if (v->nkeys == KEYS_MAX) {
		static struct key many = {.why = "too many signing keys"};
		return &many;
	}
	struct key *k = &v->keys[v->nkeys++];
	snprintf(k->name, sizeof(k->name), "%s", name);
	char **t = NULL;
	size_t n = 0;
	out->lookups++;
	int rc = txt(arg, name, &t, &n);
	if (rc == MXF_DNS_OK) {
		/* RFC 6376 §3.6.2.2 leaves the choice among several: the first
		 * that parses. */
		for (size_t i = 0; i < n && !k->pk; i++)
			k->pk = parse_key(t[i], alg, &k->why);
		mxf_dns_txt_free(t, n);
	} else if (rc == MXF_DNS_TEMPFAIL || rc == -ENOMEM) {
		k->why = "key lookup failed temporarily";
		k->temp = true;
	} else {
		k->why = "no key record";
	}
	return k;
}

static bool alg_of(const struct mxf_dkim_field *f, enum mxf_dkim_alg *alg)
{
	if (tag_is(f, "a", "rsa-sha256"))
		*alg = MXF_DKIM_RSA;
	else if (tag_is(f, "a", "ed25519-sha256"))
		*alg = MXF_DKIM_ED25519;
	else
		return false;
	return true;
}

static bool sig_ok(EVP_PKEY *pk, enum mxf_dkim_alg alg, const uint8_t *sig, size_t sl,
		   const uint8_t dg[MXF_DKIM_DIGEST])
{
	int r = 0;
	if (alg == MXF_DKIM_RSA) {
		/* RSA PKCS#1 v1.5 over the SHA-256 DigestInfo: the digest is
		 * what was signed (the same split as the router's signer). */
		EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);
		if (c && EVP_PKEY_verify_init(c) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1)
			r = EVP_PKEY_verify(c, sig, sl, dg, MXF_DKIM_DIGEST);
		EVP_PKEY_CTX_free(c);
	} else {
		/* RFC 8463: PureEdDSA over the 32 digest bytes. */
		EVP_MD_CTX *m = EVP_MD_CTX_new();
		if (m && EVP_DigestVerifyInit(m, NULL, NULL, NULL, pk) == 1)
			r = EVP_DigestVerify(m, sig, sl, dg, MXF_DKIM_DIGEST);
		EVP_MD_CTX_free(m);
	}
	return r == 1;
}

/* Checks field f's b= against dg with the key its d= and s= name. NULL, or
 * why not (bad when the signature itself is wrong). */
static const char *check_sig(struct mxf_arcv *v, mxf_arcv_txt_fn txt, void *arg,
			     struct mxf_arcv_out *out, const struct mxf_dkim_field *f,
			     enum mxf_dkim_alg alg, const uint8_t dg[MXF_DKIM_DIGEST],
			     const char *bad)
{
	const char *d, *s, *b;
	size_t dl, sl, bl;
	uint8_t sig[MXF_DKIM_SIG_MAX];
	if (!tag(f, "d", &d, &dl) || !tag(f, "s", &s, &sl) || !tag(f, "b", &b, &bl))
		return "signature without d= s= or b=";
	long n = mxf_b64_decode(b, bl, sig, sizeof(sig));
	if (n <= 0)
		return "malformed b=";
	struct key *k = get_key(v, txt, arg, out, d, dl, s, sl, alg);
	if (!k->pk) {
		out->temp = k->temp;
		return k->why;
	}
	return sig_ok(k->pk, alg, sig, (size_t)n, dg) ? NULL : bad;
}

static const char *verify(struct mxf_arcv *v, mxf_arcv_txt_fn txt, void *arg,
			  struct mxf_arcv_out *out)
{
	uint8_t dg[MXF_DKIM_DIGEST], bh[MXF_DKIM_DIGEST + 1], got[MXF_DKIM_DIGEST];
	enum mxf_dkim_alg alg;
	const char *why, *val;
	size_t vl;

	/* The latest AMS, like a DKIM signature (§5.2 step 5). */
	const struct mxf_dkim_field *ams = v->set[v->max_i][MXF_ARC_AMS];
	if (!alg_of(ams, &alg))
		return "AMS with an unknown a=";
	if (!tag(ams, "bh", &val, &vl) ||
	    mxf_b64_decode(val, vl, bh, sizeof(bh)) != MXF_DKIM_DIGEST)
		return "AMS with a malformed bh=";
	mxf_dkim_body_final(v->body, got);
	if (memcmp(got, bh, MXF_DKIM_DIGEST) != 0)
		return "AMS body hash mismatch";
	const char *c;
	size_t cl;
	bool hrelaxed = tag(ams, "c", &c, &cl) && cl >= 7 && strncasecmp(c, "relaxed", 7) == 0;
	if (mxf_dkim_verify_digest(v->f, v->n, ams, hrelaxed, dg) < 0)
		return "AMS malformed";
	if ((why = check_sig(v, txt, arg, out, ams, alg, dg, "AMS signature does not verify")))
		return why;

	/* Every seal, the latest first (§5.2 step 7). */
	for (int i = v->max_i; i >= 1; i--) {
		const struct mxf_dkim_field *as = v->set[i][MXF_ARC_AS];
		if (!alg_of(as, &alg))
			return "seal with an unknown a=";
		if (tag(as, "h", &val, &vl))
			return "seal with h=";
		if (mxf_arc_seal_verify_digest(v->f, v->n, i, dg) < 0)
			return "seal malformed";
		if ((why = check_sig(v, txt, arg, out, as, alg, dg, "seal signature does not verify")))
			return why;
	}
	return NULL;
}

void mxf_arcv_verify(struct mxf_arcv *v, mxf_arcv_txt_fn txt, void *arg,
		     struct mxf_arcv_out *out)
{
	memset(out, 0, sizeof(*out));
	mxf_arcv_eoh(v);
	out->i = v->max_i;
	if (v->done) {
		out->result = MXF_ARCV_FAIL;
		out->why = "verified twice";
		return;
	}
	v->done = true;
	if (!v->fail && v->max_i == 0) {
		out->result = MXF_ARCV_NONE;
		return;
	}
	const char *why = v->fail ? v->fail : verify(v, txt, arg, out);
	out->result = why ? MXF_ARCV_FAIL : MXF_ARCV_PASS;
	out->why = why;
}
