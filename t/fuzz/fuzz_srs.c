/* SRS (common/srs.h): the reverse path parses addresses that come back from
 * the Internet (bounces to our SRS domain). Properties: reverse never accepts
 * a forged hash (only addresses forward made verify), and reverse(forward(s))
 * gives s back for every sender smtpd would accept. */
#include "address.h"
#include "fuzz.h"
#include "srs.h"

#include <errno.h>
#include <strings.h>

static struct mxf_srs *srs;
static const time_t now = 1767225600; /* 2026-01-01 */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	static const uint8_t secret[] = "fuzzing secret, not a real one";
	if (mxf_srs_new(secret, sizeof(secret) - 1, "fwd.gateway.test", &srs) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 2048)
		return 0;
	char *in = fuzz_cstr(data, size);
	char out[2048], back[2048];

	int r = mxf_srs_reverse(srs, in, now, 21, out, sizeof(out));
	FUZZ_CHECK(r == 0 || r == -EINVAL || r == -EPERM || r == -ETIMEDOUT ||
		   r == -ENAMETOOLONG);
	if (r == 0) {
		/* A verified address must be one that forward can make. */
		FUZZ_CHECK(strchr(out, '@') != NULL);
	}
	char local[MXF_LOCAL_MAX + 1], domain[MXF_DOMAIN_MAX + 1];
	/* A sender that is SRS already becomes SRS1, whose reverse is the first
	 * hop's address, not the input: the exact round trip is for the rest. */
	int srs_in = (strncasecmp(in, "SRS0", 4) == 0 || strncasecmp(in, "SRS1", 4) == 0) &&
		     in[4] && strchr("=+-", in[4]);
	if (mxf_addr_parse(in, MXF_ADDR_UTF8, local, sizeof(local), domain, sizeof(domain)) == 0) {
		r = mxf_srs_forward(srs, in, now, out, sizeof(out));
		/* No database here: a result over 64 octets of local part fails. */
		FUZZ_CHECK(r == 0 || r == -ENAMETOOLONG || (srs_in && r == -EINVAL));
		if (r != 0 || srs_in) {
			if (r == 0)
				FUZZ_CHECK(strncmp(out, "SRS", 3) == 0);
			free(in);
			return 0;
		}
		FUZZ_CHECK(strncmp(out, "SRS0=", 5) == 0);
		r = mxf_srs_reverse(srs, out, now, 21, back, sizeof(back));
		FUZZ_CHECK(r == 0);
		FUZZ_CHECK(strcmp(back, in) == 0);
		/* Too old: the stamp is checked after the hash. */
		FUZZ_CHECK(mxf_srs_reverse(srs, out, now + 30 * 86400, 21, back, sizeof(back)) ==
			   -ETIMEDOUT);
		/* Tamper with one hash character: refused. */
		out[5] = out[5] == 'A' || out[5] == 'a' ? 'B' : 'A';
		FUZZ_CHECK(mxf_srs_reverse(srs, out, now, 21, back, sizeof(back)) != 0);
	}
	free(in);
	return 0;
}
