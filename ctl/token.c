/* mxferryctl token (issue 12): the REST API's bearer tokens in rules.db.
 * The secret is printed once; rules.db keeps only its SHA-256. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ctl.h"
#include "rulesdb.h"

static int list_cb(const struct mxf_api_token *t, void *arg)
{
	struct ctl_table *tab = arg;
	char when[64];
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("name", t->name);
		cj_str("id", t->id);
		cj_bool("read_only", t->read_only);
		ctl_iso(when, sizeof(when), (time_t)t->created);
		cj_str("created", when);
		cj_end(false);
		return 0;
	}
	ctl_time(when, sizeof(when), (time_t)t->created);
	const char *cells[] = {t->name, t->id, t->read_only ? "read-only" : "read-write", when};
	ctl_table_add(tab, cells);
	return 0;
}

int ctl_token(const struct mxf_config *cfg, int argc, char **argv)
{
	if (argc < 1)
		return ctl_usage();
	struct mxf_rulesdb *h;
	char err[512];
	if (strcmp(argv[0], "add") == 0) {
		bool ro = false;
		const char *name = NULL;
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--read-only") == 0)
				ro = true;
			else if (!name && argv[i][0] != '-')
				name = argv[i];
			else
				return ctl_usage();
		}
		if (!name)
			return ctl_usage();
		if (ctl_db_open(cfg, true, &h) != 0)
			return CTL_REFUSED;
		char secret[MXF_API_TOKEN_SIZE], id[33];
		int r = mxf_rulesdb_token_add(h, name, ro, secret, id, err, sizeof(err));
		mxf_rulesdb_close(h);
		if (r < 0)
			return ctl_fail("%s", err);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("name", name);
			cj_str("id", id);
			cj_bool("read_only", ro);
			cj_str("token", secret);
			cj_end(false);
		} else {
			printf("token %s (%s) added, id %s. Its secret, shown only now:\n%s\n", name,
			       ro ? "read-only" : "read-write", id, secret);
		}
		explicit_bzero(secret, sizeof(secret));
		return CTL_OK;
	}
	if (strcmp(argv[0], "remove") == 0) {
		if (argc != 2)
			return ctl_usage();
		if (ctl_db_open(cfg, true, &h) != 0)
			return CTL_REFUSED;
		int r = mxf_rulesdb_token_remove(h, argv[1], err, sizeof(err));
		mxf_rulesdb_close(h);
		if (r < 0)
			return ctl_fail("%s", err);
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("name", argv[1]);
			cj_str("result", "removed");
			cj_end(false);
		} else {
			printf("token %s removed\n", argv[1]);
		}
		return CTL_OK;
	}
	if (strcmp(argv[0], "list") == 0) {
		if (argc != 1)
			return ctl_usage();
		if (ctl_db_open(cfg, false, &h) != 0)
			return CTL_REFUSED;
		static const char *const hdr[] = {"NAME", "ID", "SCOPE", "CREATED"};
		struct ctl_table *t = ctl_table_new(4, hdr);
		if (ctl_json)
			cj_begin(NULL, true);
		int r = mxf_rulesdb_token_list(h, list_cb, t);
		mxf_rulesdb_close(h);
		if (ctl_json)
			cj_end(true);
		else if (ctl_table_rows(t) == 0)
			puts("No tokens");
		else
			ctl_table_print(t);
		ctl_table_free(t);
		return r < 0 ? ctl_fail("cannot list tokens") : CTL_OK;
	}
	return ctl_usage();
}
