/* The SPF record path (common/spf.c): a hostile record goes through our
 * filter (length cap, exp= removed, macro limits) and then libspf2's
 * compiler and evaluator, with every DNS answer made from the input: the
 * record under test for the sender's domain and for any include:/redirect=
 * target, addresses for a/mx lookups. Properties: the filter's output is
 * bounded and carries no exp=; the check returns a result, never crashes
 * (ASan watches libspf2's macro expansion, the CVE-2021-20314 class). */
#include "fuzz.h"
#include "spf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <strings.h>

static const char *record;
static unsigned lookups;

static int f_txt(void *arg, const char *name, char ***txt, size_t *n)
{
	(void)arg;
	(void)name;
	if (++lookups > 64)
		return MXF_DNS_TEMPFAIL;
	char **v = calloc(1, sizeof(*v));
	v[0] = strdup(record);
	*txt = v;
	*n = 1;
	return MXF_DNS_OK;
}

static int f_addrs(void *arg, const char *name, int family, struct mxf_dns_addr *out, size_t cap,
		   size_t *n)
{
	(void)arg;
	(void)cap;
	lookups++;
	*n = 0;
	if (strlen(name) % 3 == 0)
		return MXF_DNS_NXDOMAIN;
	out[0].family = family;
	if (family == AF_INET)
		inet_pton(AF_INET, "192.0.2.1", &out[0].a.v4);
	else
		inet_pton(AF_INET6, "2001:db8::1", &out[0].a.v6);
	*n = 1;
	return MXF_DNS_OK;
}

static int f_mx(void *arg, const char *name, struct mxf_mx **mx, size_t *n)
{
	(void)arg;
	lookups++;
	if (strlen(name) % 2)
		return MXF_DNS_NODATA;
	*mx = calloc(1, sizeof(**mx));
	snprintf((*mx)[0].host, sizeof((*mx)[0].host), "mx.%.200s", name);
	*n = 1;
	return MXF_DNS_OK;
}

static int f_ptr(void *arg, const char *revname, char (*names)[MXF_DNS_NAME_MAX + 1], size_t cap,
		 size_t *n)
{
	(void)arg;
	(void)revname;
	(void)cap;
	lookups++;
	snprintf(names[0], MXF_DNS_NAME_MAX + 1, "host.example.com");
	*n = 1;
	return MXF_DNS_OK;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	mxf_spf_global_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 3000)
		return 0;
	char *in = fuzz_cstr(data, size);
	char out[MXF_SPF_RECORD_MAX + 64];
	int r = mxf_spf_record_filter(in, out, sizeof(out));
	FUZZ_CHECK(r == 0 || r == 1);
	FUZZ_CHECK(strlen(out) < sizeof(out));
	if (strncasecmp(in, "v=spf1", 6) == 0 && (in[6] == ' ' || in[6] == '\0') && r == 0)
		for (const char *p = strstr(out, " "); p; p = strstr(p + 1, " "))
			FUZZ_CHECK(strncasecmp(p + 1, "exp=", 4) != 0);

	record = in;
	lookups = 0;
	struct mxf_spf_dns d = {f_txt, f_addrs, f_mx, f_ptr, NULL};
	enum mxf_spf_result res;
	/* The sender's local part feeds %{l}: take one from the input too. */
	char sender[80];
	snprintf(sender, sizeof(sender), "%.40s@example.com", size > 8 ? in + size - 8 : "a.b");
	for (char *p = sender; *p && *p != '@'; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e || *p == '@')
			*p = 'x';
	r = mxf_spf_check(&d, size % 2 ? "192.0.2.1" : "2001:db8::5", "helo.example.com", sender,
			  "mx.example", &res, NULL, 0);
	FUZZ_CHECK(r == 0 || r == -ENOMEM);
	if (r == 0)
		FUZZ_CHECK(res <= MXF_SPF_PERMERROR);
	free(in);
	return 0;
}
