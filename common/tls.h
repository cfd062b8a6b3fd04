/* tls: OpenSSL contexts and a TLS connection driven through memory BIOs, so
 * an event loop (libuv) moves the ciphertext and OpenSSL never touches a
 * socket. Used by smtpd (server side); usable by deliverd (client side).
 *
 * Only TLS 1.2 and 1.3; no compression, no renegotiation. */
#ifndef MXF_TLS_H
#define MXF_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

/* A server context from PEM files (certificate chain, private key), loaded
 * before the chroot. Returns NULL and a message in err on failure. */
SSL_CTX *mxf_tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen);

struct mxf_tls;

/* A connection on ctx (server or client side). NULL when out of memory. */
struct mxf_tls *mxf_tls_new(SSL_CTX *ctx, bool server);
void mxf_tls_free(struct mxf_tls *t);

/* Ciphertext received from the peer. Returns 0 or -ENOMEM. */
int mxf_tls_feed(struct mxf_tls *t, const void *in, size_t len);
/* Advances the handshake and decrypts what it can into out. Returns the
 * plaintext bytes (0: needs more input), or -EPROTO (a TLS error: the
 * connection is dead; a message in err) or -ECONNRESET (close_notify). */
int mxf_tls_read(struct mxf_tls *t, void *out, size_t cap, char *err, size_t errlen);
/* Encrypts plaintext for the peer. Returns 0 or -EPROTO. */
int mxf_tls_write(struct mxf_tls *t, const void *in, size_t len);
/* Sends close_notify (best effort). */
void mxf_tls_shutdown(struct mxf_tls *t);
/* Ciphertext waiting to be sent to the peer: pending bytes, then take up to
 * cap of them. */
size_t mxf_tls_pending_out(struct mxf_tls *t);
size_t mxf_tls_take_out(struct mxf_tls *t, void *out, size_t cap);
bool mxf_tls_established(const struct mxf_tls *t);
/* "version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256" ("" before the
 * handshake completed). */
void mxf_tls_describe(const struct mxf_tls *t, char *out, size_t cap);

#endif
