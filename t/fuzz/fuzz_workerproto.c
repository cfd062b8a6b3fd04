/* The worker decision parser (common/workerproto.h): a worker's stdout is
 * the operator's code next to hostile mail. Whole and chunked input give
 * the same decisions or the same error; every decision keeps the bounds the
 * router relies on (no CR/LF/NUL in addresses and reasons, only X- headers
 * in well-formed lines). */
#include "fuzz.h"
#include "workerproto.h"

#include <errno.h>

static struct mxf_wp_parser *run(const uint8_t *in, size_t n, struct fuzz_chunker *ch, int *rc)
{
	struct mxf_wp_parser *p = mxf_wp_parser_new();
	FUZZ_CHECK(p);
	*rc = 0;
	size_t off = 0;
	while (off < n && *rc == 0) {
		size_t k = ch ? fuzz_chunk(ch, n - off) : n - off;
		*rc = mxf_wp_feed(p, in + off, k);
		off += k;
	}
	if (*rc == 0)
		*rc = mxf_wp_finish(p);
	return p;
}

static void check(const struct mxf_wp_decision *d)
{
	FUZZ_CHECK(d->action == MXF_WP_FORWARD || d->action == MXF_WP_REJECT ||
		   d->action == MXF_WP_DROP);
	FUZZ_CHECK(!strpbrk(d->to, "\r\n<> ") && strlen(d->to) <= MXF_WP_MAX_ADDR);
	FUZZ_CHECK(!strpbrk(d->reason, "\r\n") && strlen(d->reason) <= 4 * MXF_WP_MAX_REASON);
	FUZZ_CHECK(mxf_wp_check_headers(d->headers) == 0);
	if (d->action == MXF_WP_FORWARD)
		FUZZ_CHECK(strchr(d->to, '@') && !*d->reason);
	if (d->action == MXF_WP_REJECT)
		FUZZ_CHECK(*d->reason && !*d->to && !*d->headers);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	struct fuzz_chunker ch;
	fuzz_chunker_init(&ch, (uint32_t)data[0] | (uint32_t)data[1] << 8);
	data += 2, size -= 2;
	int r1, r2;
	struct mxf_wp_parser *a = run(data, size, NULL, &r1);
	struct mxf_wp_parser *b = run(data, size, &ch, &r2);
	FUZZ_CHECK(r1 == r2);
	FUZZ_CHECK(r1 == 0 || r1 == -EBADMSG || r1 == -E2BIG);
	if (r1 == 0) {
		FUZZ_CHECK(mxf_wp_count(a) == mxf_wp_count(b));
		FUZZ_CHECK(mxf_wp_count(a) <= MXF_WP_MAX_DECISIONS);
		for (size_t i = 0; i < mxf_wp_count(a); i++) {
			const struct mxf_wp_decision *x = mxf_wp_get(a, i), *y = mxf_wp_get(b, i);
			check(x);
			FUZZ_CHECK(x->action == y->action && !strcmp(x->to, y->to) &&
				   !strcmp(x->reason, y->reason) && !strcmp(x->headers, y->headers));
		}
	}
	mxf_wp_parser_free(a);
	mxf_wp_parser_free(b);
	return 0;
}
