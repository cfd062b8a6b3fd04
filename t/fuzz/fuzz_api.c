/* apid's request handling (apid/api.c) on hostile input: the first line is
 * "METHOD PATH[?QUERY]", the rest the body. Against a small rules.db with no
 * router (writes still go through rulesdb; RELOAD and the verification mail
 * fail fast). Properties: every answer is a JSON envelope whose success
 * matches a 2xx status; a read-only token never changes the database. */
#include "api.h"
#include "config.h"
#include "fuzz.h"
#include "rulesdb.h"

#include <jansson.h>
#include <unistd.h>

static struct mxf_config *cfg;
static struct mxf_rulesdb *db;
static struct api *api;

struct query {
	char *q;
	char val[8][256];
};

/* The value of name in a "a=1&b=2" query (no decoding: MHD decodes). */
static const char *query_arg(void *cls, const char *name)
{
	struct query *qs = cls;
	static int slot;
	size_t n = strlen(name);
	for (const char *p = qs->q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > n && strncmp(p, name, n) == 0 && p[n] == '=') {
			char *v = qs->val[slot++ % 8];
			size_t vl = len - n - 1 < 255 ? len - n - 1 : 255;
			memcpy(v, p + n + 1, vl);
			v[vl] = '\0';
			return v;
		}
		p = amp ? amp + 1 : NULL;
	}
	return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char dir[] = "/tmp/mxf-fuzz-api-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	char conf[256], path[256], err[256] = "";
	snprintf(conf, sizeof(conf), "%s/c.conf", dir);
	FILE *f = fopen(conf, "w");
	if (!f)
		abort();
	fprintf(f, "[main]\ndata_dir = %s\nspool_dir = %s/spool\nrun_as_invoking_user = yes\n"
		   "dns_resolver = 127.0.0.1:9\n", dir, dir);
	fclose(f);
	if (mxf_config_load(conf, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	snprintf(path, sizeof(path), "%s/rules.db", dir);
	if (mxf_rulesdb_open(path, true, &db, err, sizeof(err)) < 0 ||
	    mxf_rulesdb_domain_add(db, "gw.test", err, sizeof(err)) < 0 ||
	    mxf_rulesdb_address_add(db, "bob@dest.test", true, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_api setup: %s\n", err);
		abort();
	}
	mxf_rulesdb_set_actor(db, "token:fuzz");
	api = api_new(cfg, db);
	return 0;
}

static int newest_cb(const struct mxf_audit_entry *e, void *arg)
{
	*(long long *)arg = e->id;
	return 0;
}

/* Every rulesdb write appends to the audit log: its newest id says whether
 * anything was written. */
static long long newest_audit(void)
{
	long long id = 0;
	mxf_rulesdb_audit_list(db, 0, 1, newest_cb, &id);
	return id;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool ro = data[0] & 1;
	data++;
	size--;
	const uint8_t *nl = memchr(data, '\n', size);
	size_t ll = nl ? (size_t)(nl - data) : size;
	char line[512];
	if (ll >= sizeof(line) || memchr(data, '\0', ll))
		return 0;
	memcpy(line, data, ll);
	line[ll] = '\0';
	char *sp = strchr(line, ' ');
	if (!sp)
		return 0;
	*sp = '\0';
	char *path = sp + 1, *q = strchr(path, '?');
	if (q)
		*q++ = '\0';
	/* The live DNS check would wait on the network. */
	if (strstr(path, "dns"))
		return 0;
	struct query qs = {.q = q};
	struct api_req req = {
		.method = line,
		.path = path,
		.arg = query_arg,
		.arg_cls = &qs,
		.body = nl ? (const char *)nl + 1 : "",
		.bodylen = nl ? size - ll - 1 : 0,
		.token_id = "00000000000000000000000000000000",
		.token_name = "fuzz",
		.read_only = ro,
	};
	long long before = newest_audit();
	struct api_resp resp;
	api_handle(api, &req, &resp);
	FUZZ_CHECK(resp.body != NULL);
	json_t *j = json_loads(resp.body, 0, NULL);
	FUZZ_CHECK(json_is_object(j));
	json_t *ok = json_object_get(j, "success");
	FUZZ_CHECK(json_is_boolean(ok));
	FUZZ_CHECK(json_is_true(ok) == (resp.status >= 200 && resp.status < 300));
	FUZZ_CHECK(json_is_array(json_object_get(j, "errors")));
	json_decref(j);
	free(resp.body);
	if (ro)
		FUZZ_CHECK(newest_audit() == before);
	return 0;
}
