/* The router as DKIM/ARC signing oracle (doc/design.md "Signatures").
 *
 * Keys never leave the router and hostile content never enters it: deliverd
 * canonicalises the message it is about to send and asks for the signature
 * of a 32-byte SHA-256 digest (SIGN). Here only the private-key operation
 * happens — on a fixed-size input, so no parser of ours or OpenSSL's sees
 * anything the sender wrote. A compromised deliverd can get signatures of
 * digests of its choosing (it could as well send mail through us); it cannot
 * read a key.
 *
 * Keys: the rows of rules.db's dkim_keys that are enabled, each with its PEM
 * in data_dir/dkim/, loaded at start and with every rules reload. The router
 * is not chrooted (it owns the spool and data_dir), so the files stay where
 * mxferryctl put them, readable by the router's user only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "address.h"
#include "config.h"
#include "dkim.h"
#include "log.h"
#include "router.h"
#include "rulesdb.h"
#include "srs.h"

/* Bound on signatures per message (DKIM for the SRS domain and the
 * receiving domains, both algorithms). */
#define MAX_SIGS 8

struct key {
	char domain[256];
	char selector[MXF_DKIM_SELECTOR_MAX + 1];
	enum mxf_dkim_alg alg;
	EVP_PKEY *pk;
};

static struct key *keys;
static size_t nkeys;

static void threads_stop(void);

struct loading {
	struct key *k;
	size_t n, cap;
	const char *data_dir;
};

static int load_one(const struct mxf_dkim_key_info *ki, void *arg)
{
	struct loading *l = arg;
	char path[4096];
	enum mxf_dkim_alg alg;
	if (!ki->enabled)
		return 0;
	if (mxf_dkim_alg_parse(ki->algorithm, &alg) < 0 ||
	    mxf_dkim_key_path(l->data_dir, ki->domain, ki->selector, ki->algorithm, path,
			      sizeof(path)) < 0) {
		mxf_warn("dkim key %s for %s: bad row; not signing with it", ki->selector,
			 ki->domain);
		return 0;
	}
	FILE *f = fopen(path, "re");
	if (!f) {
		mxf_warn("dkim key %s for %s: %s: %s; not signing with it", ki->selector, ki->domain,
			 path, strerror(errno));
		return 0;
	}
	EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	int id = pk ? EVP_PKEY_get_base_id(pk) : 0;
	if (!pk || (alg == MXF_DKIM_RSA ? id != EVP_PKEY_RSA : id != EVP_PKEY_ED25519)) {
		mxf_warn("dkim key %s for %s: %s is not a %s private key; not signing with it",
			 ki->selector, ki->domain, path, ki->algorithm);
		EVP_PKEY_free(pk);
		return 0;
	}
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 8;
		struct key *nk = realloc(l->k, nc * sizeof(*nk));
		if (!nk) {
			EVP_PKEY_free(pk);
			return -ENOMEM;
		}
		l->k = nk;
		l->cap = nc;
	}
	struct key *k = &l->k[l->n++];
	snprintf(k->domain, sizeof(k->domain), "%s", ki->domain);
	snprintf(k->selector, sizeof(k->selector), "%s", ki->selector);
	k->alg = alg;
	k->pk = pk;
	return 0;
}

static void free_keys(struct key *k, size_t n)
{
	for (size_t i = 0; i < n; i++)
		EVP_PKEY_free(k[i].pk);
	free(k);
}

void sign_load(void)
{
	struct loading l = {.data_dir = mxf_config_str(R.cfg, "main", "data_dir")};
	int r = mxf_rulesdb_dkim_list(R.rdb, NULL, load_one, &l);
	if (r < 0) {
		free_keys(l.k, l.n);
		mxf_err("dkim keys: cannot read rules.db (%s); keeping the %zu loaded", strerror(-r),
			nkeys);
		return;
	}
	free_keys(keys, nkeys);
	keys = l.k;
	nkeys = l.n;
	if (nkeys)
		mxf_info("dkim: %zu signing key(s) loaded", nkeys);
}

void sign_free(void)
{
	threads_stop();
	free_keys(keys, nkeys);
	keys = NULL;
	nkeys = 0;
}

static const struct key *find_key(const char *domain, const char *selector)
{
	for (size_t i = 0; i < nkeys; i++)
		if (strcmp(keys[i].domain, domain) == 0 && strcmp(keys[i].selector, selector) == 0)
			return &keys[i];
	return NULL;
}

/* RSA: PKCS#1 v1.5 with the SHA-256 DigestInfo, over the digest (RFC 6376
 * §3.3.1). Runs on a signing thread: it touches only its arguments (an
 * EVP_PKEY may be used by several threads at once, each with its own
 * EVP_PKEY_CTX). */
static int sign_rsa(EVP_PKEY *pk, const uint8_t *dg, uint8_t *sig, size_t *siglen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);
	int ok = c && EVP_PKEY_sign_init(c) > 0 &&
		 EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) > 0 &&
		 EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) > 0 &&
		 EVP_PKEY_sign(c, sig, siglen, dg, MXF_DKIM_DIGEST) > 0;
	EVP_PKEY_CTX_free(c);
	return ok ? 0 : -EIO;
}

/* Ed25519: PureEdDSA over the 32 digest bytes (RFC 8463 §3). */
static int sign_ed25519(EVP_PKEY *pk, const uint8_t *dg, uint8_t *sig, size_t *siglen)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok = c && EVP_DigestSignInit(c, NULL, NULL, NULL, pk) > 0 &&
		 EVP_DigestSign(c, sig, siglen, dg, MXF_DKIM_DIGEST) > 0;
	EVP_MD_CTX_free(c);
	return ok ? 0 : -EIO;
}

/* ---- the signing threads (issue 14) ----
 * An RSA-2048 signature costs 0.25-1 ms of CPU. On the router's loop that
 * capped signing at one core and stalled every other router job (RCPT
 * checks, commits, deliveries) meanwhile. The RSA operation runs on a few
 * threads of our own instead — not on libuv's pool, which runs the durable
 * commits: an fsync must not wait behind a queue of signatures, nor a
 * signature behind fsyncs. Ed25519 (~40 us) and the webhook HMAC stay
 * inline: the hand-off would cost about as much as the operation.
 * The key material stays in this process; a job holds its own reference to
 * the key (a rules reload may free the key set meanwhile) and the serial of
 * the connection that asked, looked up again when the job is done (the
 * peer may have gone; its reply is then dropped). Replies carry the
 * request's F_REQ, so they match requests in any order. */
#define SIGN_THREADS_MAX 4
/* deliverd has one request in flight per connection; more is abuse. */
#define SIGN_INFLIGHT_MAX 64

struct sjob {
	struct sjob *next;
	uint64_t serial, req;
	EVP_PKEY *pk;
	int rc;
	size_t siglen;
	uint8_t dg[MXF_DKIM_DIGEST];
	uint8_t sig[MXF_DKIM_SIG_MAX];
	char domain[256];
	char selector[MXF_DKIM_SELECTOR_MAX + 1];
};

static struct {
	uv_mutex_t mu; /* guards todo, done, stop */
	uv_cond_t cv;
	struct sjob *todo, **todo_tail, *done, **done_tail;
	bool stop;
	uv_async_t async;
	uv_thread_t th[SIGN_THREADS_MAX];
	unsigned nth;
	bool tried; /* threads started (nth > 0) or failed to (inline) */
} S;

static void sign_thread(void *arg)
{
	(void)arg;
	uv_mutex_lock(&S.mu);
	for (;;) {
		while (!S.todo && !S.stop)
			uv_cond_wait(&S.cv, &S.mu);
		if (S.stop)
			break;
		struct sjob *j = S.todo;
		if (!(S.todo = j->next))
			S.todo_tail = &S.todo;
		uv_mutex_unlock(&S.mu);
		j->siglen = sizeof(j->sig);
		j->rc = sign_rsa(j->pk, j->dg, j->sig, &j->siglen);
		uv_mutex_lock(&S.mu);
		j->next = NULL;
		*S.done_tail = j;
		S.done_tail = &j->next;
		/* Thread-safe; coalesced: one wake-up may carry many jobs. */
		uv_async_send(&S.async);
	}
	uv_mutex_unlock(&S.mu);
}

static void free_jobs(struct sjob *j)
{
	while (j) {
		struct sjob *n = j->next;
		EVP_PKEY_free(j->pk);
		OPENSSL_cleanse(j, sizeof(*j));
		free(j);
		j = n;
	}
}

static void sign_reply(struct peer *p, uint64_t req, unsigned code, const uint8_t *sig,
		       size_t siglen);

static void sign_warn(struct peer *p, const char *domain, const char *selector, bool found)
{
	char e1[600];
	mxf_log_escape(e1, sizeof(e1), domain, strlen(domain));
	mxf_warn("signer[%ld]: %s key %s for %s", (long)p->pid,
		 found ? "cannot sign with" : "no such", found ? selector : "", e1);
}

/* On the loop: the finished jobs' replies. */
static void on_signed(uv_async_t *h)
{
	(void)h;
	uv_mutex_lock(&S.mu);
	struct sjob *list = S.done;
	S.done = NULL;
	S.done_tail = &S.done;
	uv_mutex_unlock(&S.mu);
	for (struct sjob *j = list; j; j = j->next) {
		struct peer *p = peer_find_serial(j->serial);
		if (!p)
			continue;
		p->signing--;
		if (j->rc < 0)
			sign_warn(p, j->domain, j->selector, true);
		sign_reply(p, j->req, j->rc < 0 ? 550 : 250, j->sig, j->rc < 0 ? 0 : j->siglen);
	}
	free_jobs(list);
}

/* Started with the first RSA request (a router without RSA keys has no
 * threads). Returns false when they cannot be: the caller signs inline. */
static bool threads_ready(void)
{
	if (S.tried)
		return S.nth > 0 && !S.stop;
	S.tried = true;
	S.todo_tail = &S.todo;
	S.done_tail = &S.done;
	if (uv_mutex_init(&S.mu) < 0)
		goto inline_only;
	if (uv_cond_init(&S.cv) < 0) {
		uv_mutex_destroy(&S.mu);
		goto inline_only;
	}
	if (uv_async_init(R.loop, &S.async, on_signed) < 0) {
		uv_cond_destroy(&S.cv);
		uv_mutex_destroy(&S.mu);
		goto inline_only;
	}
	/* Does not keep the loop alive: a stopping router exits on its own. */
	uv_unref((uv_handle_t *)&S.async);
	unsigned want = uv_available_parallelism();
	if (want > SIGN_THREADS_MAX)
		want = SIGN_THREADS_MAX;
	for (S.nth = 0; S.nth < want; S.nth++)
		if (uv_thread_create(&S.th[S.nth], sign_thread, NULL) < 0)
			break;
	if (S.nth == 0)
		goto inline_only;
	mxf_info("dkim: %u signing thread(s)", S.nth);
	return true;
inline_only:
	mxf_warn("dkim: cannot start signing threads; signing on the event loop");
	return false;
}

static void threads_stop(void)
{
	if (!S.nth)
		return;
	uv_mutex_lock(&S.mu);
	S.stop = true;
	uv_cond_broadcast(&S.cv);
	uv_mutex_unlock(&S.mu);
	/* Waits for the operations under way (a millisecond at most). */
	for (unsigned i = 0; i < S.nth; i++)
		uv_thread_join(&S.th[i]);
	S.nth = 0;
	free_jobs(S.todo);
	free_jobs(S.done);
	S.todo = S.done = NULL;
	S.todo_tail = &S.todo;
	S.done_tail = &S.done;
}

/* Queues an RSA job for p; false when it must be signed inline instead. */
static bool sign_async(struct peer *p, uint64_t req, const struct key *k, const uint8_t *dg)
{
	if (!threads_ready())
		return false;
	struct sjob *j = calloc(1, sizeof(*j));
	if (!j || EVP_PKEY_up_ref(k->pk) != 1) {
		free(j);
		return false;
	}
	j->serial = p->serial;
	j->req = req;
	j->pk = k->pk;
	memcpy(j->dg, dg, sizeof(j->dg));
	snprintf(j->domain, sizeof(j->domain), "%s", k->domain);
	snprintf(j->selector, sizeof(j->selector), "%s", k->selector);
	p->signing++;
	uv_mutex_lock(&S.mu);
	*S.todo_tail = j;
	S.todo_tail = &j->next;
	uv_cond_signal(&S.cv);
	uv_mutex_unlock(&S.mu);
	return true;
}

/* Issue 13: the webhook secret. Only the router holds it, as it holds the
 * DKIM keys: deliverd, which parses the hostile message to build the JSON,
 * sends the SHA-256 of what it signs and gets the HMAC back, so a
 * compromised deliverd can sign while it runs but cannot carry the secret
 * away. The key is the first line of the file, as text (what a receiver
 * copies into its configuration). */
static uint8_t whk_secret[256];
static size_t whk_len;

void sign_webhook_load(const char *path)
{
	uint8_t buf[4096];
	size_t n = 0;
	int r = mxf_srs_load_secret(path, 1, buf, sizeof(buf), &n);
	if (r < 0)
		mxf_fatal("webhook secret %s: %s", path, strerror(-r));
	size_t l = 0;
	while (l < n && buf[l] != '\n' && buf[l] != '\r')
		l++;
	if (l == 0 || l > sizeof(whk_secret))
		mxf_fatal("webhook secret %s: the first line must hold 1 to %zu bytes", path,
			  sizeof(whk_secret));
	memcpy(whk_secret, buf, l);
	whk_len = l;
	OPENSSL_cleanse(buf, sizeof(buf));
}

static int sign_webhook(const uint8_t *dg, uint8_t *sig, size_t *siglen)
{
	unsigned int len = 0;
	if (!whk_len || *siglen < 32 ||
	    !HMAC(EVP_sha256(), whk_secret, (int)whk_len, dg, MXF_DKIM_DIGEST, sig, &len))
		return -EIO;
	*siglen = len;
	return 0;
}

static void sign_reply(struct peer *p, uint64_t req, unsigned code, const uint8_t *sig,
		       size_t siglen)
{
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_SIGN_REPLY);
	int r = m ? 0 : -ENOMEM;
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_REQ, req);
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_CODE, code);
	if (r == 0)
		r = mxf_ipc_put_bytes(m, F_SIG, sig, siglen);
	if (r == 0)
		r = peer_send(p, m, -1);
	mxf_ipc_msg_free(m);
	if (r < 0 && !p->closing) {
		mxf_warn("signer[%ld]: cannot reply: %s; closing", (long)p->pid, strerror(-r));
		peer_close(p);
	}
}

int sign_request(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req;
	const uint8_t *dg;
	size_t dl;
	const char *domain = mxf_ipc_str(v, F_DOMAIN, 0), *sel = mxf_ipc_str(v, F_SELECTOR, 0);
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || !domain || !sel ||
	    mxf_ipc_bytes(v, F_DIGEST, 0, &dg, &dl) < 0 || dl != MXF_DKIM_DIGEST)
		return -1;
	if (p->signing >= SIGN_INFLIGHT_MAX)
		return -1;
	uint8_t sig[MXF_DKIM_SIG_MAX];
	size_t siglen = sizeof(sig);
	/* No DKIM key has an empty domain (rules.db CHECK): "" + "webhook"
	 * names the webhook secret. */
	if (!*domain && strcmp(sel, "webhook") == 0) {
		if (sign_webhook(dg, sig, &siglen) < 0) {
			mxf_warn("signer[%ld]: cannot sign a webhook", (long)p->pid);
			siglen = 0;
		}
		sign_reply(p, req, siglen ? 250 : 550, sig, siglen);
		return 0;
	}
	const struct key *k = find_key(domain, sel);
	if (k && k->alg == MXF_DKIM_RSA && sign_async(p, req, k, dg))
		return 0; /* answered by on_signed */
	int r = !k ? -ENOKEY
		   : k->alg == MXF_DKIM_RSA ? sign_rsa(k->pk, dg, sig, &siglen)
					    : sign_ed25519(k->pk, dg, sig, &siglen);
	if (r < 0) {
		sign_warn(p, domain, k ? k->selector : "", k != NULL);
		siglen = 0;
	}
	sign_reply(p, req, r < 0 ? 550 : 250, sig, siglen);
	return 0;
}

/* The domain of an address (or a bare domain), as keys are stored. */
static void domain_of(const char *addr, char *out, size_t len)
{
	const char *at = strrchr(addr, '@');
	char a[256];
	snprintf(a, sizeof(a), "%s", at ? at + 1 : addr);
	for (char *q = a; *q; q++)
		if (*q >= 'A' && *q <= 'Z')
			*q = (char)(*q + 32);
	/* U-label addresses: the keys are stored under the A-label. */
	if (mxf_domain_to_ascii(a, out, len) < 0)
		snprintf(out, len, "%s", a);
}

static int put_key(struct mxf_ipc_msg *msg, uint16_t tag, const struct key *k)
{
	char spec[400];
	snprintf(spec, sizeof(spec), "%s %s %s", k->domain, k->selector, mxf_dkim_alg_name(k->alg));
	return mxf_ipc_put_str(msg, tag, spec);
}

int sign_add_specs(struct mxf_ipc_msg *msg, const struct mxf_env *e, const size_t *ridx,
		   size_t n)
{
	const char *srs = mxf_config_str(R.cfg, "router", "srs_domain");
	char doms[4][256];
	size_t nd = 0, nsig = 0;
	int r = 0;
	if (!nkeys)
		return 0;
	/* The SRS domain, then each receiving domain (the custom address's). */
	domain_of(srs, doms[nd], sizeof(doms[nd]));
	nd += doms[nd][0] != '\0';
	for (size_t k = 0; k < n && nd < 4; k++) {
		char d[256];
		domain_of(e->rcpt[ridx[k]].orig, d, sizeof(d));
		bool dup = !d[0];
		for (size_t i = 0; i < nd && !dup; i++)
			dup = strcmp(doms[i], d) == 0;
		if (!dup)
			snprintf(doms[nd++], sizeof(doms[0]), "%s", d);
	}
	for (size_t i = 0; i < nd && r == 0; i++)
		for (size_t k = 0; k < nkeys && r == 0 && nsig < MAX_SIGS; k++)
			if (strcmp(keys[k].domain, doms[i]) == 0) {
				r = put_key(msg, F_DKIM, &keys[k]);
				nsig++;
			}
	/* ARC is rsa-sha256 only (RFC 8617 §4.1.3 mandates it; Ed25519 is not
	 * defined for ARC): the SRS domain's RSA key seals what we forward.
	 * DSNs of our own and workers' replies are not forwarded mail: no
	 * ARC set. */
	if (r == 0 && nd && strcasecmp(doms[0], srs) == 0 && strcmp(e->origin, "bouncer") != 0 &&
	    strcmp(e->origin, "worker") != 0)
		for (size_t k = 0; k < nkeys; k++)
			if (keys[k].alg == MXF_DKIM_RSA && strcmp(keys[k].domain, doms[0]) == 0) {
				r = put_key(msg, F_ARC, &keys[k]);
				break;
			}
	return r;
}
