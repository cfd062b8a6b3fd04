/* The client-side SMTP reply parser (common/smtpreply.h): a hostile server's
 * bytes, whole and in chunks, must give the same replies and the same error,
 * each within the documented bounds. */
#include "fuzz.h"
#include "smtpreply.h"

#include <errno.h>

struct result {
	int err;        /* 0 or the final -EPROTO */
	size_t n;
	int codes[64];
	char *texts[64];
	size_t nlines[64];
};

static void take(struct mxf_smtpreply_parser *p, struct result *res)
{
	for (;;) {
		struct mxf_smtpreply *r = NULL;
		int k = mxf_smtpreply_next(p, &r);
		if (k == 0)
			return;
		if (k < 0) {
			FUZZ_CHECK(k == -EPROTO);
			res->err = k;
			return;
		}
		FUZZ_CHECK(r->code >= 200 && r->code <= 599);
		FUZZ_CHECK(r->nlines >= 1 && r->nlines <= MXF_SMTPREPLY_LINES);
		FUZZ_CHECK(strchr(r->text, '\n') == NULL);
		for (size_t i = 0; i < r->nlines; i++)
			FUZZ_CHECK(strchr(r->lines[i], '\n') == NULL &&
				   strlen(r->lines[i]) < MXF_SMTPREPLY_LINE_MAX);
		const char *esc = mxf_smtpreply_esc(r);
		/* 3xx (354) has no enhanced class of its own (RFC 3463: 2, 4, 5). */
		FUZZ_CHECK(esc && (r->code / 100 == 3 || esc[0] == '0' + r->code / 100));
		if (res->n < 64) {
			res->codes[res->n] = r->code;
			res->texts[res->n] = strdup(r->text);
			res->nlines[res->n] = r->nlines;
		}
		res->n++;
		mxf_smtpreply_free(r);
	}
}

static void run(const uint8_t *in, size_t n, struct fuzz_chunker *ch, struct result *res)
{
	struct mxf_smtpreply_parser *p;
	FUZZ_CHECK(mxf_smtpreply_parser_new(&p) == 0);
	memset(res, 0, sizeof(*res));
	size_t pos = 0;
	while (pos < n) {
		size_t len = ch ? fuzz_chunk(ch, n - pos) : n - pos;
		int r = mxf_smtpreply_feed(p, in + pos, len);
		FUZZ_CHECK(r == 0 || r == -EPROTO);
		pos += len;
		/* Taking replies between reads (as deliverd does) must not matter. */
		if (ch)
			take(p, res);
	}
	take(p, res);
	(void)mxf_smtpreply_partial(p);
	mxf_smtpreply_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	struct fuzz_chunker ch;
	fuzz_chunker_init(&ch, (uint32_t)data[0] << 8 | data[1]);
	struct result a, b;
	run(data + 2, size - 2, NULL, &a);
	run(data + 2, size - 2, &ch, &b);
	FUZZ_CHECK(a.err == b.err);
	FUZZ_CHECK(a.n == b.n);
	for (size_t i = 0; i < a.n && i < 64; i++) {
		FUZZ_CHECK(a.codes[i] == b.codes[i]);
		FUZZ_CHECK(a.nlines[i] == b.nlines[i]);
		FUZZ_CHECK(strcmp(a.texts[i], b.texts[i]) == 0);
		free(a.texts[i]);
		free(b.texts[i]);
	}
	/* The enhanced-code scanner on its own. */
	char *s = fuzz_cstr(data, size);
	char esc[16];
	size_t k = mxf_smtpreply_parse_esc(s, esc);
	FUZZ_CHECK(k < 16 && (k == 0 || strlen(esc) == k));
	free(s);
	return 0;
}
