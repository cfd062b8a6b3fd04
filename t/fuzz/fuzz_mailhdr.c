/* The header-section filter and field parsers (common/mailhdr.h) that smtpd
 * runs on hostile messages for DKIM/DMARC/ARC and the forged
 * Authentication-Results removal. Properties: the output does not depend on
 * how the input is cut; with a callback that keeps everything the output is
 * the input; what is dropped is exactly the fields the callback refused; the
 * From, authserv-id and tag-list parsers never read out of bounds. */
#include "fuzz.h"
#include "mailhdr.h"

#include <errno.h>

struct st {
	bool keep_all;
	size_t dropped;
};

static bool on_field(void *arg, const char *f, size_t len, bool whole)
{
	struct st *s = arg;
	char buf[256];
	char id[64];
	(void)mxf_mailhdr_from_domain(f, len, buf, sizeof(buf));
	int r = mxf_mailhdr_authserv_id(f, len, id, sizeof(id));
	FUZZ_CHECK(r == 0 || r == -EINVAL);
	if (r == 0)
		FUZZ_CHECK(id[0] != '\0' && strlen(id) < sizeof(id));
	(void)whole;
	if (s->keep_all)
		return true;
	bool drop = mxf_mailhdr_is(f, len, "Authentication-Results") && r == 0 &&
		    strcmp(id, "mx.test") == 0;
	return !drop;
}

static bool on_tag(void *arg, const char *t, size_t tl, const char *v, size_t vl)
{
	(void)arg;
	FUZZ_CHECK(tl > 0);
	(void)t;
	(void)v;
	(void)vl;
	return true;
}

static char *run(const uint8_t *in, size_t n, bool whole, uint32_t seed, bool keep_all,
		 size_t *outlen)
{
	struct mxf_mailhdr *h = malloc(sizeof(*h));
	struct st s = {keep_all, 0};
	struct mxf_mailhdr_cb cb = {on_field, NULL, NULL, &s};
	char *out = malloc(n + MXF_MAILHDR_FIELD_MAX + 8);
	char *piece = malloc(n + 1);
	struct fuzz_chunker ch;
	size_t o = 0;
	mxf_mailhdr_init(h, &cb);
	fuzz_chunker_init(&ch, seed);
	for (size_t i = 0; i < n;) {
		size_t k = whole ? n : fuzz_chunk(&ch, n - i);
		memcpy(piece, in + i, k); /* the filter must not read past k */
		o += mxf_mailhdr_feed(h, piece, k, out + o);
		i += k;
	}
	o += mxf_mailhdr_end(h, out + o);
	free(piece);
	free(h);
	*outlen = o;
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint32_t seed;
	memcpy(&seed, data, 4);
	data += 4;
	size -= 4;

	size_t l1, l2, l3;
	char *a = run(data, size, true, seed, false, &l1);
	char *b = run(data, size, false, seed, false, &l2);
	FUZZ_CHECK(l1 == l2 && memcmp(a, b, l1) == 0);
	FUZZ_CHECK(l1 <= size);
	char *c = run(data, size, false, seed ^ 0x5a5a, true, &l3);
	FUZZ_CHECK(l3 == size && memcmp(c, data, size) == 0);
	free(a);
	free(b);
	free(c);

	(void)mxf_mailhdr_tags((const char *)data, size, on_tag, NULL);
	return 0;
}
