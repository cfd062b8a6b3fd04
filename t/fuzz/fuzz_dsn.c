/* The DSN builder (common/dsn.h) fed hostile strings: remote replies, remote
 * host names, recipients and the failed message's header block. Properties:
 * every line ends in CRLF; the human and machine parts are printable ASCII
 * with exactly the MIME boundaries the builder wrote (no injected header or
 * part); the copied header block holds no empty line. */
#include "dsn.h"
#include "fuzz.h"

#define NFIELD 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Fields separated by NUL: sender, then up to 3 recipients of 5 strings;
	 * the rest is the header block (may hold NULs). The reporting MTA and the
	 * queue ID are ours (configuration, our own IDs), so they are fixed. */
	const char *f[NFIELD];
	char *copy = malloc(size + 1);
	memcpy(copy, data, size);
	copy[size] = '\0';
	size_t pos = 0, nf = 0;
	while (nf < NFIELD) {
		f[nf++] = copy + pos;
		char *z = memchr(copy + pos, '\0', size + 1 - pos);
		pos = (size_t)(z - copy) + 1;
		if (pos > size)
			break;
	}
	for (size_t i = nf; i < NFIELD; i++)
		f[i] = "";
	const char *headers = pos <= size ? copy + pos : "";
	size_t hlen = pos <= size ? size - pos : 0;

	struct mxf_dsn_rcpt rc[3];
	size_t nrcpt = size % 4; /* 0..3 */
	for (size_t i = 0; i < 3; i++)
		rc[i] = (struct mxf_dsn_rcpt){f[1 + 5 * i], f[2 + 5 * i][0] ? f[2 + 5 * i] : NULL,
					      f[3 + 5 * i], f[4 + 5 * i], f[5 + 5 * i], NULL, 0};
	struct mxf_dsn d = {
		.reporting_mta = "mx.gateway.test", .qid = "0DQ5ZK3M0000AB12CD34EF56GH", .sender = f[0],
		.arrival = 1700000000, .now = 1700003600,
		.rcpt = rc, .nrcpt = nrcpt, .headers = headers, .envid = NULL,
		.headers_len = mxf_dsn_header_len(headers, hlen, 65536),
	};
	FUZZ_CHECK(d.headers_len <= hlen);
	char *out = NULL;
	size_t outlen = 0;
	FUZZ_CHECK(mxf_dsn_build(&d, &out, &outlen) == 0);

	for (size_t i = 0; i < outlen; i++) {
		if (out[i] == '\n')
			FUZZ_CHECK(i > 0 && out[i - 1] == '\r');
		if (out[i] == '\r')
			FUZZ_CHECK(i + 1 < outlen && out[i + 1] == '\n');
	}
	/* The boundary, as declared in the top-level header. */
	const char *bp = strstr(out, "\r\n\tboundary=\"");
	FUZZ_CHECK(bp != NULL);
	bp += 13;
	const char *be = strchr(bp, '"');
	FUZZ_CHECK(be != NULL);
	size_t blen = (size_t)(be - bp);
	/* Found by its line starts: hostile text cannot start a line. */
	static const char hmark[] = "\r\nContent-Description: Undelivered Message Headers\r\n"
				    "Content-Type: text/rfc822-headers\r\n\r\n";
	const char *hpart = strstr(out, hmark);
	FUZZ_CHECK(hpart != NULL);
	size_t head = (size_t)(hpart - out);
	size_t nbound = 0;
	for (size_t i = 0; i < head; i++) {
		unsigned char c = (unsigned char)out[i];
		FUZZ_CHECK((c >= 0x20 && c < 0x7f) || c == '\r' || c == '\n' || c == '\t');
		if ((i == 0 || out[i - 1] == '\n') && head - i >= blen + 2 && out[i] == '-' &&
		    out[i + 1] == '-' && memcmp(out + i + 2, bp, blen) == 0 &&
		    out[i + 2 + blen] == '\r')
			nbound++;
	}
	FUZZ_CHECK(nbound == 3);
	/* The header block: from after the part's blank line to the final
	 * "\r\n--BOUNDARY--\r\n"; no empty line inside it. */
	size_t hs = head + strlen(hmark);
	size_t tail = blen + 8;
	FUZZ_CHECK(outlen >= hs + tail);
	FUZZ_CHECK(memcmp(out + outlen - tail, "\r\n--", 4) == 0);
	for (size_t i = hs; i + 3 < outlen - tail + 2; i++)
		FUZZ_CHECK(!(out[i] == '\r' && out[i + 1] == '\n' && out[i + 2] == '\r' &&
			     out[i + 3] == '\n') || i + 2 == outlen - tail);
	free(out);
	free(copy);
	return 0;
}
