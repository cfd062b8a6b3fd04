/* The envelope parser (common/envelope.h). Property: the format is
 * canonical, so any accepted file re-formats to exactly its own bytes, and a
 * parsed envelope holds no value that could break a line of it. */
#include "envelope.h"
#include "fuzz.h"

static void check_value(const char *v)
{
	FUZZ_CHECK(v != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mxf_env *e = NULL;
	int r = mxf_env_parse((const char *)data, size, &e);
	if (r < 0) {
		FUZZ_CHECK(e == NULL);
		return 0;
	}
	FUZZ_CHECK(e != NULL && e->nrcpt >= 1);
	check_value(e->sender);
	check_value(e->srs_sender);
	check_value(e->headers);
	for (size_t i = 0; i < e->nrcpt; i++) {
		check_value(e->rcpt[i].orig);
		check_value(e->rcpt[i].reply);
		FUZZ_CHECK(mxf_env_status_name(e->rcpt[i].status) != NULL);
	}
	char *buf = NULL;
	size_t len = 0;
	FUZZ_CHECK(mxf_env_format(e, &buf, &len) == 0);
	if (len != size || memcmp(buf, data, size) != 0) {
		fprintf(stderr, "re-formatted envelope differs:\n%.*s\n", (int)len, buf);
		abort();
	}
	struct mxf_env *e2 = NULL;
	FUZZ_CHECK(mxf_env_parse(buf, len, &e2) == 0);
	mxf_env_free(e2);
	free(buf);
	mxf_env_free(e);
	return 0;
}
