/* mime7bit: 8-bit message → 7-bit MIME, for a peer without 8BITMIME
 * (RFC 6152 §3: the client must convert or bounce; we convert).
 *
 * Done with GMime, not by hand: every leaf part whose body is not 7-bit gets
 * quoted-printable or base64 (GMime picks the shorter safe one), raw 8-bit
 * header text is re-encoded as RFC 2047 words, and a message without MIME
 * structure becomes text/plain; charset=utf-8 in quoted-printable. The
 * result is a complete RFC 5322 message with CRLF line ends.
 */
#ifndef MXF_DELIVERD_MIME7BIT_H
#define MXF_DELIVERD_MIME7BIT_H

#include <stdbool.h>
#include <stddef.h>

/* Once, on the main thread, before any worker runs (and before the chroot:
 * it loads what charset conversion needs). */
void mime7bit_init(void);

/* True when any byte of the len bytes at p has the high bit set. */
bool mime7bit_is_8bit(const char *p, size_t len);

/* Converts the message in (len bytes) into a new 7-bit message: *out
 * (free()) of *outlen bytes. Thread-safe. Returns 0, -EINVAL when GMime
 * cannot parse it as a message, -ENOMEM. */
int mime7bit_convert(const char *in, size_t len, char **out, size_t *outlen);

#endif
