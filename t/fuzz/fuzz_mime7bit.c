/* deliverd's 7-bit converter (deliverd/mime7bit.c, GMime underneath) fed
 * hostile mail: any message a client may send ends up here when the next
 * hop lacks 8BITMIME. Properties: no crash, leak or undefined behaviour in
 * the converter or GMime; the result is 0, -EINVAL or -ENOMEM; a converted
 * message is non-empty and deterministic (the same input twice gives the
 * same bytes).
 *
 * MXF_FUZZ_MIME7BIT_STRICT=1 in the environment also requires the output to
 * be 7-bit, which is what RFC 6152 asks. It is off by default because the
 * converter does not guarantee it yet (an 8-bit multipart preamble, an
 * 8-bit header name, a part that claims Content-Transfer-Encoding: 7bit,
 * message/rfc822 content and MIME nested past GMime's 1024-level limit all
 * come out 8-bit): see t/e2e/test_security_abuse.py. */
#include <errno.h>
#include <stdbool.h>

#include "fuzz.h"
#include "mime7bit.h"

static bool strict;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *e = getenv("MXF_FUZZ_MIME7BIT_STRICT");
	strict = e && strcmp(e, "1") == 0;
	mime7bit_init();
	/* Warm GMime's type system and charset caches once, so their
	 * process-lifetime allocations are not taken for per-input leaks. */
	static const char warm[] = "From: a@b\r\nSubject: \xc3\xa4\r\nMIME-Version: 1.0\r\n"
				   "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
				   "Content-Type: text/plain; charset=iso-8859-1\r\n\r\n\xe4\r\n"
				   "--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: s\r\n\r\nb\r\n"
				   "--x--\r\n";
	char *out;
	size_t outlen;
	if (mime7bit_convert(warm, sizeof(warm) - 1, &out, &outlen) == 0)
		free(out);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so ASan sees any read past the end. */
	char *in = malloc(size ? size : 1);
	memcpy(in, data, size);
	char *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	int ra = mime7bit_convert(in, size, &a, &alen);
	FUZZ_CHECK(ra == 0 || ra == -EINVAL || ra == -ENOMEM);
	if (ra == 0) {
		FUZZ_CHECK(alen > 0);
		if (strict)
			FUZZ_CHECK(!mime7bit_is_8bit(a, alen));
		int rb = mime7bit_convert(in, size, &b, &blen);
		FUZZ_CHECK(rb == 0 && blen == alen && memcmp(a, b, alen) == 0);
		free(b);
		free(a);
	}
	free(in);
	return 0;
}
