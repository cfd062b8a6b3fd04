/* Rule lookup (common/rulesdb.h) of hostile addresses, raw and normalised,
 * against a small compiled rule set. Properties: a domain that is not ours is
 * never routed (no relaying); an address of ours routes exactly as its
 * lower-cased form does. */
#include "address.h"
#include "fuzz.h"
#include "rulesdb.h"

#include <ctype.h>
#include <unistd.h>

static struct mxf_ruleset *rs;

static void must(int r, const char *what, const char *err)
{
	if (r != 0) {
		fprintf(stderr, "fuzz_rules setup: %s: %d %s\n", what, r, err);
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char path[] = "/tmp/mxf-fuzz-rules-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		abort();
	close(fd);
	unlink(path);
	struct mxf_rulesdb *db;
	char err[256] = "";
	must(mxf_rulesdb_open(path, true, &db, err, sizeof(err)), "open", err);
	must(mxf_rulesdb_domain_add(db, "gw.test", err, sizeof(err)), "domain", err);
	must(mxf_rulesdb_domain_add(db, "bücher.test", err, sizeof(err)), "idn domain", err);
	must(mxf_rulesdb_address_add(db, "bob@dest.test", true, err, sizeof(err)), "address", err);
	const char *dests[] = {"bob@dest.test"};
	char tag[64];
	must(mxf_rulesdb_rule_add(db, "gw.test", "info@gw.test", "forward", dests, 1, tag, err,
				  sizeof(err)),
	     "rule", err);
	must(mxf_rulesdb_rule_add(db, "gw.test", "\"q u\"@gw.test", "drop", NULL, 0, tag, err,
				  sizeof(err)),
	     "quoted rule", err);
	/* One address, two rules: a sender-conditioned one first. */
	struct mxf_rule_spec vip = {.domain = "gw.test", .matcher = "literal", .to = "sales@gw.test",
				    .action = "forward", .dests = dests, .ndest = 1,
				    .from = "*@vip.test,<>"};
	must(mxf_rulesdb_rule_create(db, &vip, tag, err, sizeof(err)), "vip rule", err);
	must(mxf_rulesdb_rule_add(db, "gw.test", "sales@gw.test", "drop", NULL, 0, tag, err,
				  sizeof(err)),
	     "sales rule", err);
	must(mxf_rulesdb_catchall_set(db, "bücher.test", "forward", dests, 1, err, sizeof(err)),
	     "catch-all", err);
	must(mxf_ruleset_load(db, &rs, err, sizeof(err)), "load", err);
	mxf_rulesdb_close(db);
	unlink(path);
	return 0;
}

static int ours(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at && (strcasecmp(at + 1, "gw.test") == 0 ||
		      strcasecmp(at + 1, "xn--bcher-kva.test") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1024)
		return 0;
	char *in = fuzz_cstr(data, size);
	struct mxf_route rt, rt2;

	/* The contract wants a normalised address; a raw one must still be safe. */
	if (mxf_ruleset_lookup(rs, in, "", &rt) == 0) {
		if (rt.kind == MXF_ROUTE_FORWARD || rt.kind == MXF_ROUTE_DROP)
			FUZZ_CHECK(ours(in));
		for (size_t i = 0; i < rt.ndest; i++)
			FUZZ_CHECK(strcmp(rt.dests[i], "bob@dest.test") == 0);
	}
	char norm[MXF_ADDR_SIZE];
	if (mxf_addr_normalize(in, MXF_ADDR_UTF8, norm, sizeof(norm)) == 0 &&
	    mxf_ruleset_lookup(rs, norm, "", &rt) == 0) {
		FUZZ_CHECK(rt.kind != MXF_ROUTE_NO_DOMAIN || !ours(norm));
		if (rt.kind == MXF_ROUTE_FORWARD || rt.kind == MXF_ROUTE_DROP)
			FUZZ_CHECK(ours(norm));
		/* Local parts compare case-insensitively. */
		char low[MXF_ADDR_SIZE];
		size_t i;
		for (i = 0; norm[i]; i++)
			low[i] = (char)tolower((unsigned char)norm[i]);
		low[i] = '\0';
		FUZZ_CHECK(mxf_ruleset_lookup(rs, low, "", &rt2) == 0);
		FUZZ_CHECK(rt2.kind == rt.kind);
	}
	/* The input as the envelope sender: the conditioned rule or the plain one. */
	FUZZ_CHECK(mxf_ruleset_lookup(rs, "sales@gw.test", in, &rt) == 0);
	FUZZ_CHECK(rt.kind == (*in && !strchr(in, '@') ? MXF_ROUTE_DROP : rt.kind));
	FUZZ_CHECK(rt.kind == (*in ? rt.kind : MXF_ROUTE_FORWARD));
	FUZZ_CHECK(rt.kind == MXF_ROUTE_FORWARD || rt.kind == MXF_ROUTE_DROP);
	free(in);
	return 0;
}
