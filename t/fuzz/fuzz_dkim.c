/* The signer's parsers (common/dkim.c) fed hostile mail: deliverd runs them
 * on every message it signs. The first byte seeds the chunking. Properties:
 * the body hash does not depend on how the body is cut into reads; fields
 * cover the header block in order without overlap; every header built for
 * the message parses back as a tag list with the expected d=, an empty b=
 * and no bare CR or LF outside a fold; the ARC scan never reports an
 * instance above 50; base64 round-trips. */
#include <errno.h>

#include "dkim.h"
#include "fuzz.h"

static void check_header(const char *h, const char *dom)
{
	/* Folds are CRLF + WSP only. */
	for (const char *p = h; *p; p++) {
		if (*p == '\r')
			FUZZ_CHECK(p[1] == '\n' && (p[2] == '\t' || p[2] == ' ' || p[2] == '\0'));
		if (*p == '\n')
			FUZZ_CHECK(p > h && p[-1] == '\r');
	}
	const char *c = strchr(h, ':');
	FUZZ_CHECK(c != NULL);
	const char *v;
	size_t vl;
	FUZZ_CHECK(mxf_dkim_tag(c + 1, strlen(c + 1), "d", &v, &vl) == 0);
	FUZZ_CHECK(vl == strlen(dom) && memcmp(v, dom, vl) == 0);
	FUZZ_CHECK(mxf_dkim_tag(c + 1, strlen(c + 1), "b", &v, &vl) == 0 && vl == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct fuzz_chunker ch;
	fuzz_chunker_init(&ch, data[0]);
	data++;
	size--;
	char *msg = malloc(size ? size : 1);
	memcpy(msg, data, size);

	size_t hl, boff = mxf_dkim_split(msg, size, &hl);
	FUZZ_CHECK(hl <= boff && boff <= size);

	/* Body hash: whole vs chunked, both canonicalisations. */
	for (int relaxed = 0; relaxed < 2; relaxed++) {
		struct mxf_dkim_body *a, *b;
		uint8_t ha[MXF_DKIM_DIGEST], hb[MXF_DKIM_DIGEST];
		FUZZ_CHECK(mxf_dkim_body_new(relaxed, &a) == 0 && mxf_dkim_body_new(relaxed, &b) == 0);
		mxf_dkim_body_feed(a, msg + boff, size - boff);
		for (size_t off = boff; off < size;) {
			size_t n = fuzz_chunk(&ch, size - off);
			mxf_dkim_body_feed(b, msg + off, n);
			off += n;
		}
		mxf_dkim_body_final(a, ha);
		mxf_dkim_body_final(b, hb);
		FUZZ_CHECK(memcmp(ha, hb, sizeof(ha)) == 0);
		mxf_dkim_body_free(a);
		mxf_dkim_body_free(b);
	}

	struct mxf_dkim_field *f;
	size_t n;
	int r = mxf_dkim_fields(msg, hl, &f, &n);
	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	if (r == 0) {
		const char *prev = msg;
		for (size_t i = 0; i < n; i++) {
			FUZZ_CHECK(f[i].p >= prev && f[i].p + f[i].len <= msg + hl);
			FUZZ_CHECK(f[i].namelen > 0 && f[i].namelen < f[i].len);
			prev = f[i].p + f[i].len;
			/* Tag parsing of every value: no crash, a found value in bounds. */
			const char *v;
			size_t vl;
			const char *val = f[i].p + f[i].namelen;
			size_t rest = f[i].len - f[i].namelen;
			if (mxf_dkim_tag(val, rest, "i", &v, &vl) == 0)
				FUZZ_CHECK(v >= val && v + vl <= val + rest);
		}
		struct mxf_arc_state st;
		mxf_arc_scan(f, n, &st);
		FUZZ_CHECK(st.max_i >= 0 && st.max_i <= 50);

		const char **names = calloc(2 * n + 2, sizeof(*names));
		int nn = mxf_dkim_pick_headers(f, n, names, 2 * n + 2);
		FUZZ_CHECK(nn > 0 || nn == -EINVAL);
		if (nn > 0) {
			uint8_t bh[MXF_DKIM_DIGEST] = {0}, dg[MXF_DKIM_DIGEST];
			char *h = NULL;
			struct mxf_dkim_sig s = {.alg = MXF_DKIM_RSA, .domain = "fwd.example",
						 .selector = "s1", .t = 1, .hdrs = names,
						 .nhdrs = (size_t)nn, .bh = bh};
			FUZZ_CHECK(mxf_dkim_sign_digest(&s, f, n, &h, dg) == 0);
			check_header(h, "fwd.example");
			free(h);
			if (!st.failed && st.max_i < 50) {
				r = mxf_arc_seal_digest(f, n, st.max_i + 1, "pass", "fwd.example", "s1",
							1, "ARC-Authentication-Results: i=1; x; none",
							"ARC-Message-Signature: i=1; b=", &h, dg);
				FUZZ_CHECK(r == 0 || r == -EBADMSG);
				FUZZ_CHECK(r != 0 || !st.broken || st.max_i == 0 || h);
				if (r == 0) {
					check_header(h, "fwd.example");
					free(h);
				}
			}
		}
		free(names);
		free(f);
	}

	/* base64 round trip of the input's first bytes. */
	size_t bl = size < 300 ? size : 300;
	char b64[404];
	uint8_t back[300];
	size_t el = mxf_b64_encode(data, bl, b64);
	FUZZ_CHECK(mxf_b64_decode(b64, el, back, sizeof(back)) == (long)bl);
	FUZZ_CHECK(memcmp(back, data, bl) == 0);
	uint8_t junk[1024];
	long d = mxf_b64_decode(msg, size < 1000 ? size : 1000, junk, sizeof(junk));
	FUZZ_CHECK(d >= -EINVAL);
	free(msg);
	return 0;
}
