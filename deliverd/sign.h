/* sign: DKIM signatures and the ARC set on what deliverd sends.
 *
 * deliverd reads the hostile message anyway; it canonicalises and hashes
 * exactly the bytes it is about to send (after a 7-bit conversion, so a
 * converted message still verifies) and asks the router — the only process
 * holding keys — to sign each 32-byte digest (IPC SIGN). Each worker thread
 * keeps its own blocking connection to the router for that, with the role
 * "signer". See common/dkim.h for the sans-I/O part.
 */
#ifndef MXF_DELIVERD_SIGN_H
#define MXF_DELIVERD_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Once, on the main thread, after the privilege drop (sock is the router's
 * socket as seen from the jail). authserv_id: whose Authentication-Results
 * the ARC-Authentication-Results copies. */
void dsig_init(const char *sock, bool arc, const char *authserv_id);

/* The message as it will be sent is pre (the router's header lines) then
 * the content: mem/memlen when not NULL, else fsize bytes of fd. dkim[]
 * are "domain selector alg" specs, arc the ARC key's spec or NULL.
 * Returns the header lines to put above pre (CRLF-terminated; free()), or
 * NULL when there is nothing to add (no keys, no From, a failure: logged;
 * the message then goes unsigned rather than late). Thread-safe; blocking. */
char *dsig_sign(const char *qid, const char *pre, char *const *dkim, size_t ndkim,
		const char *arc, const char *mem, size_t memlen, int fd, off_t fsize);

/* Issue 13: the router's HMAC-SHA256 (its webhook secret) of the 32-byte
 * digest, into mac (32 bytes). Thread-safe; blocking. 0 or negative errno. */
int dsig_webhook(const unsigned char digest[32], unsigned char mac[32]);

#endif
