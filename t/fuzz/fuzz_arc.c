/* ARC chain validation (common/arcv.c and the verifying half of dkim.c) fed
 * hostile mail, as smtpd feeds it (through common/mailhdr.c). Input: a
 * chunk-seed byte, a key record up to the first LF (what every key lookup
 * answers; "T" answers TEMPFAIL, an empty one NXDOMAIN), then the message.
 * Properties: the result does not depend on how the input is cut; none
 * means no chain (i=0) and no lookup; pass has an instance in 1..50; a fail
 * says why in letters, digits, spaces and '=' only (it goes into a header
 * comment); the lookups stay bounded. */
#include "arcv.h"
#include "dns.h"
#include "fuzz.h"
#include "mailhdr.h"

static const char *key;
static size_t keylen;

static int txt(void *arg, const char *name, char ***out, size_t *n)
{
	(void)arg;
	(void)name;
	if (keylen == 0)
		return MXF_DNS_NXDOMAIN;
	if (keylen == 1 && key[0] == 'T')
		return MXF_DNS_TEMPFAIL;
	*out = calloc(1, sizeof(**out));
	(*out)[0] = malloc(keylen + 1);
	memcpy((*out)[0], key, keylen);
	(*out)[0][keylen] = '\0';
	*n = 1;
	return MXF_DNS_OK;
}

static bool on_field(void *arg, const char *f, size_t len, bool whole)
{
	mxf_arcv_field(arg, f, len, whole);
	return true;
}
static void on_eoh(void *arg)
{
	mxf_arcv_eoh(arg);
}
static void on_body(void *arg, const char *p, size_t len)
{
	mxf_arcv_body(arg, p, len);
}

static struct mxf_arcv_out run(const char *msg, size_t len, struct fuzz_chunker *ch)
{
	struct mxf_arcv *v;
	FUZZ_CHECK(mxf_arcv_new(&v) == 0);
	struct mxf_mailhdr *h = malloc(sizeof(*h));
	struct mxf_mailhdr_cb cb = {on_field, on_eoh, on_body, v};
	mxf_mailhdr_init(h, &cb);
	char *out = malloc(len + MXF_MAILHDR_FIELD_MAX + 4);
	for (size_t o = 0; o < len;) {
		size_t n = ch ? fuzz_chunk(ch, len - o) : len - o;
		mxf_mailhdr_feed(h, msg + o, n, out);
		o += n;
	}
	mxf_mailhdr_end(h, out);
	struct mxf_arcv_out r;
	mxf_arcv_verify(v, txt, NULL, &r);
	mxf_arcv_free(v);
	free(out);
	free(h);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct fuzz_chunker ch;
	fuzz_chunker_init(&ch, data[0]);
	const char *p = (const char *)data + 1;
	size--;
	const char *lf = memchr(p, '\n', size);
	if (!lf)
		return 0;
	key = p;
	keylen = (size_t)(lf - p);
	const char *msg = lf + 1;
	size_t len = size - keylen - 1;

	struct mxf_arcv_out a = run(msg, len, NULL), b = run(msg, len, &ch);
	FUZZ_CHECK(a.result == b.result && a.i == b.i && a.lookups == b.lookups);
	FUZZ_CHECK((a.why == NULL) == (b.why == NULL));
	FUZZ_CHECK(!a.why || strcmp(a.why, b.why) == 0);
	FUZZ_CHECK(a.i >= 0 && a.i <= 50);
	FUZZ_CHECK(a.lookups <= 8);
	switch (a.result) {
	case MXF_ARCV_NONE:
		FUZZ_CHECK(a.i == 0 && a.lookups == 0 && !a.why);
		break;
	case MXF_ARCV_PASS:
		FUZZ_CHECK(a.i >= 1 && !a.why && a.lookups >= 1);
		break;
	case MXF_ARCV_FAIL:
		FUZZ_CHECK(a.why != NULL);
		for (const char *w = a.why; *w; w++)
			FUZZ_CHECK((*w >= 'a' && *w <= 'z') || (*w >= 'A' && *w <= 'Z') ||
				   (*w >= '0' && *w <= '9') || *w == ' ' || *w == '=');
		break;
	default:
		FUZZ_CHECK(0);
	}
	return 0;
}
