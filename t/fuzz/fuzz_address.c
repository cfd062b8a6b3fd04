/* Mailbox parsing and IDN (common/address.h) with hostile strings. The
 * normal form is a fixed point: normalising it again gives it back, and its
 * domain is lower-case LDH A-labels (nothing libidn2 returns can smuggle a
 * byte that is not a hostname's). */
#include "address.h"
#include "fuzz.h"

#include <ctype.h>

static void check_ldh(const char *d)
{
	for (; *d; d++)
		FUZZ_CHECK(islower((unsigned char)*d) || isdigit((unsigned char)*d) || *d == '-' ||
			   *d == '.');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *in = fuzz_cstr(data, size);
	char local[MXF_LOCAL_MAX + 1], domain[MXF_DOMAIN_MAX + 1];
	char norm[MXF_ADDR_SIZE], norm2[MXF_ADDR_SIZE];
	char asc[MXF_DOMAIN_MAX + 1], asc2[MXF_DOMAIN_MAX + 1], uni[4 * MXF_DOMAIN_MAX + 1];

	for (unsigned flags = 0; flags <= MXF_ADDR_UTF8; flags++) {
		if (mxf_addr_parse(in, flags, local, sizeof(local), domain, sizeof(domain)) == 0) {
			FUZZ_CHECK(strlen(local) <= MXF_LOCAL_MAX);
			check_ldh(domain);
		}
		if (mxf_addr_normalize(in, flags, norm, sizeof(norm)) == 0) {
			FUZZ_CHECK(mxf_addr_normalize(norm, flags, norm2, sizeof(norm2)) == 0);
			FUZZ_CHECK(strcmp(norm, norm2) == 0);
			FUZZ_CHECK(strchr(norm, '\r') == NULL && strchr(norm, '\n') == NULL);
		}
	}
	if (mxf_domain_to_ascii(in, asc, sizeof(asc)) == 0) {
		check_ldh(asc);
		FUZZ_CHECK(strlen(asc) <= 253);
		FUZZ_CHECK(mxf_domain_to_ascii(asc, asc2, sizeof(asc2)) == 0);
		FUZZ_CHECK(strcmp(asc, asc2) == 0);
		FUZZ_CHECK(mxf_domain_to_unicode(asc, uni, sizeof(uni)) == 0);
	}
	(void)mxf_domain_to_unicode(in, uni, sizeof(uni));
	/* Small output buffers must fail cleanly, never overflow. */
	char tiny[8];
	(void)mxf_addr_normalize(in, MXF_ADDR_UTF8, tiny, sizeof(tiny));
	(void)mxf_domain_to_ascii(in, tiny, sizeof(tiny));
	(void)mxf_domain_to_unicode(in, tiny, sizeof(tiny));
	free(in);
	return 0;
}
