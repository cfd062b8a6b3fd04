/* The DATA decoder (common/smtp.h) against a reference decoder written from
 * RFC 5321 4.1.1.4/4.5.2 alone: only CRLF "." CRLF ends the data (so no SMTP
 * smuggling variant can end a message early), a leading dot of a line is
 * removed, everything else is copied byte for byte, and bare CR / bare LF are
 * flagged. The decoder is fed in chunks of varying size and with a varying
 * output capacity; the result must not depend on either. */
#include "fuzz.h"
#include "smtp.h"

#include <stdbool.h>

struct ref {
	char *out;
	size_t outlen, consumed;
	bool done, bare_cr, bare_lf;
};

static void reference(const uint8_t *in, size_t n, struct ref *r)
{
	size_t pos = 0;
	bool bol = true; /* the DATA command's CRLF starts the first line */
	r->out = malloc(n + 1);
	r->outlen = 0;
	r->done = r->bare_cr = r->bare_lf = false;
	while (pos < n) {
		if (bol && in[pos] == '.') {
			if (pos + 2 < n + 0 && in[pos + 1] == '\r' && in[pos + 2] == '\n') {
				r->done = true;
				pos += 3;
				break;
			}
			pos++; /* dot-stuffing */
			if (pos == n)
				break;
			if (pos + 1 == n && in[pos] == '\r') {
				pos = n; /* ".\r" at the end: undecided, the CR is held back */
				break;
			}
		}
		bol = false;
		uint8_t c = in[pos++];
		r->out[r->outlen++] = (char)c;
		if (c == '\r' && pos < n && in[pos] == '\n') {
			r->out[r->outlen++] = '\n';
			pos++;
			bol = true;
		}
	}
	r->consumed = pos;
	/* Flags over the consumed bytes; a CR in the last byte is undecided. */
	for (size_t p = 0; p < r->consumed; p++) {
		if (in[p] == '\r' && p + 1 < n && in[p + 1] != '\n')
			r->bare_cr = true;
		if (in[p] == '\n' && (p == 0 || in[p - 1] != '\r'))
			r->bare_lf = true;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	struct fuzz_chunker ch;
	fuzz_chunker_init(&ch, (uint32_t)data[0] << 8 | data[1]);
	const uint8_t *in = data + 2;
	size_t n = size - 2;

	struct ref r;
	reference(in, n, &r);

	struct mxf_smtp_data d;
	mxf_smtp_data_init(&d);
	char *out = malloc(n + 2);
	size_t outlen = 0, pos = 0;
	while (pos < n && !d.done) {
		size_t len = fuzz_chunk(&ch, n - pos);
		size_t took = 0;
		/* Drain this chunk with small output buffers (the decoder stops when
		 * out is full and must resume exactly where it stopped). */
		while (took < len && !d.done) {
			size_t cap = fuzz_chunk(&ch, 70) + 1;
			size_t o = 0;
			size_t k = mxf_smtp_data_feed(&d, (const char *)in + pos + took, len - took,
						      out + outlen, cap, &o);
			FUZZ_CHECK(o <= cap);
			FUZZ_CHECK(k > 0 || d.done || o > 0);
			took += k;
			outlen += o;
			FUZZ_CHECK(outlen <= n + 1);
		}
		pos += took;
	}

	FUZZ_CHECK(d.done == r.done);
	FUZZ_CHECK(pos == r.consumed);
	FUZZ_CHECK(outlen == r.outlen);
	FUZZ_CHECK(d.size == outlen);
	FUZZ_CHECK(memcmp(out, r.out, outlen) == 0);
	FUZZ_CHECK(d.bare_cr == r.bare_cr);
	FUZZ_CHECK(d.bare_lf == r.bare_lf);
	free(out);
	free(r.out);
	return 0;
}
