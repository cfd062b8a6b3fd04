#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

struct mxf_tls {
	SSL *ssl;
	BIO *rbio, *wbio; /* network side: what we received / what we must send */
	bool established;
};

static void err_text(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "unknown error";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	if (err && errlen)
		snprintf(err, errlen, "%s: %s", what, buf);
}

SSL_CTX *mxf_tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		err_text(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	/* Renegotiation is an old DoS and injection vector; compression leaks
	 * (CRIME). Idle sessions keep no read/write buffers. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		err_text(err, errlen, cert);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		err_text(err, errlen, key);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct mxf_tls *mxf_tls_new(SSL_CTX *ctx, bool server)
{
	struct mxf_tls *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->ssl = SSL_new(ctx);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	/* An empty read BIO means "want more input", not EOF. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both now */
	if (server)
		SSL_set_accept_state(t->ssl);
	else
		SSL_set_connect_state(t->ssl);
	return t;
}

void mxf_tls_free(struct mxf_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	free(t);
}

int mxf_tls_feed(struct mxf_tls *t, const void *in, size_t len)
{
	while (len > 0) {
		int chunk = len > 1 << 30 ? 1 << 30 : (int)len;
		int n = BIO_write(t->rbio, in, chunk);
		if (n <= 0)
			return -ENOMEM;
		in = (const char *)in + n;
		len -= (size_t)n;
	}
	return 0;
}

int mxf_tls_read(struct mxf_tls *t, void *out, size_t cap, char *err, size_t errlen)
{
	if (!t->established) {
		int r = SSL_do_handshake(t->ssl);
		if (r != 1) {
			int e = SSL_get_error(t->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return 0;
			err_text(err, errlen, "TLS handshake");
			return -EPROTO;
		}
		t->established = true;
	}
	if (cap == 0)
		return 0;
	int n = SSL_read(t->ssl, out, cap > 1 << 30 ? 1 << 30 : (int)cap);
	if (n > 0)
		return n;
	int e = SSL_get_error(t->ssl, n);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	if (e == SSL_ERROR_ZERO_RETURN)
		return -ECONNRESET;
	err_text(err, errlen, "TLS read");
	return -EPROTO;
}

int mxf_tls_write(struct mxf_tls *t, const void *in, size_t len)
{
	while (len > 0) {
		int n = SSL_write(t->ssl, in, len > 1 << 30 ? 1 << 30 : (int)len);
		if (n <= 0) {
			ERR_clear_error();
			return -EPROTO;
		}
		in = (const char *)in + n;
		len -= (size_t)n;
	}
	return 0;
}

void mxf_tls_shutdown(struct mxf_tls *t)
{
	if (t->established)
		SSL_shutdown(t->ssl);
	ERR_clear_error();
}

size_t mxf_tls_pending_out(struct mxf_tls *t)
{
	return BIO_ctrl_pending(t->wbio);
}

size_t mxf_tls_take_out(struct mxf_tls *t, void *out, size_t cap)
{
	int n = BIO_read(t->wbio, out, cap > 1 << 30 ? 1 << 30 : (int)cap);
	return n > 0 ? (size_t)n : 0;
}

bool mxf_tls_established(const struct mxf_tls *t)
{
	return t->established;
}

void mxf_tls_describe(const struct mxf_tls *t, char *out, size_t cap)
{
	if (!t->established) {
		snprintf(out, cap, "%s", "");
		return;
	}
	const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
	snprintf(out, cap, "version=%s cipher=%s bits=%d", SSL_get_version(t->ssl),
		 c ? SSL_CIPHER_get_name(c) : "unknown", c ? SSL_CIPHER_get_bits(c, NULL) : 0);
}
