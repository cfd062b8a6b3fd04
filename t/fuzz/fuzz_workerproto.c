/* The worker decision parser (common/workerproto.h): a worker's stdout is
 * the operator's code next to hostile mail. Whole and chunked input give
 * the same decisions or the same error; every decision keeps the bounds the
 * router relies on (no CR/LF/NUL in addresses and reasons, only X- headers
 * in well-formed lines, a reply's message in CRLF lines within its bound),
 * and a reply goes through workerd's loop guards (workerreply.h) without
 * harm: what they let through is the reply, Auto-Submitted at most added. */
#include "fuzz.h"
#include "workerproto.h"
#include "workerreply.h"

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
		   d->action == MXF_WP_DROP || d->action == MXF_WP_REPLY);
	size_t rl = strlen(d->raw);
	FUZZ_CHECK(rl <= MXF_WP_MAX_REPLY);
	if (d->action != MXF_WP_REPLY) {
		FUZZ_CHECK(rl == 0);
	} else {
		FUZZ_CHECK(rl >= 2 && !strcmp(d->raw + rl - 2, "\r\n"));
		for (size_t i = 0; i < rl; i++)
			FUZZ_CHECK((d->raw[i] != '\r' || d->raw[i + 1] == '\n') &&
				   (d->raw[i] != '\n' || (i && d->raw[i - 1] == '\r')));
		FUZZ_CHECK(!*d->to && !*d->reason && !*d->headers);
		char why[160], *out = NULL;
		char id[MXF_WR_MSGID_MAX + 1];
		/* The reply's own Message-ID, if any, as "the original's". */
		if (mxf_wr_msgid(d->raw, rl, id, sizeof(id)) < 0)
			strcpy(id, "<a@b>");
		int r = mxf_wr_check(id, d->raw, rl, &out, why, sizeof(why));
		FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
		if (r == 0) {
			size_t ol = strlen(out);
			FUZZ_CHECK(ol >= rl && !strcmp(out + ol - rl, d->raw));
		} else {
			FUZZ_CHECK(!out && *why);
		}
		free(out);
	}
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
				   !strcmp(x->reason, y->reason) && !strcmp(x->headers, y->headers) &&
				   !strcmp(x->raw, y->raw));
		}
	}
	mxf_wp_parser_free(a);
	mxf_wp_parser_free(b);
	return 0;
}
