/* apid's REST API (issue 12): Cloudflare Email Routing v4 shapes over
 * rules.db. Every write is one rulesdb call (one transaction, audited under
 * the token's name); a body is parsed and checked whole (unknown fields,
 * wrong types) before anything is written. */
#include "api.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "address.h"
#include "dnsrecords.h"
#include "log.h"
#include "queueid.h"
#include "routerctl.h"
#include "rulesdb.h"

/* Cloudflare-style error codes. */
enum {
	E_BAD_REQUEST = 1001, /* bad JSON, unknown field, wrong type */
	E_INVALID = 1004,     /* refused by validation (the rulesdb message) */
	E_CONFLICT = 1009,
	E_NO_ROUTE = 7000,
	E_NOT_FOUND = 7003,
	E_METHOD = 10405,
	E_READ_ONLY = 10001,
	E_INTERNAL = 10002,
};

#define MAX_DESTS 25
#define MAX_FROM 32

struct api {
	const struct mxf_config *cfg;
	struct mxf_rulesdb *db;
};

struct api *api_new(const struct mxf_config *cfg, struct mxf_rulesdb *db)
{
	struct api *a = calloc(1, sizeof(*a));
	if (a) {
		a->cfg = cfg;
		a->db = db;
	}
	return a;
}

void api_free(struct api *a)
{
	free(a);
}

/* ---- JSON helpers ---- */

static json_t *js(const char *s)
{
	if (!s)
		return json_null();
	json_t *j = json_string(s);
	/* Only invalid UTF-8 (never from our own validated data) fails. */
	return j ? j : json_string("");
}

static void iso(char *out, size_t len, long long t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "1970-01-01T00:00:00Z");
}

static json_t *jiso(long long t)
{
	char b[40];
	iso(b, sizeof(b), t);
	return json_string(b);
}

static char *dump(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

char *api_error_body(int code, const char *message)
{
	json_t *e = json_object();
	json_object_set_new(e, "code", json_integer(code));
	json_object_set_new(e, "message", js(message));
	json_t *o = json_object();
	json_object_set_new(o, "success", json_false());
	json_t *errs = json_array();
	json_array_append_new(errs, e);
	json_object_set_new(o, "errors", errs);
	json_object_set_new(o, "messages", json_array());
	json_object_set_new(o, "result", json_null());
	return dump(o);
}

static void fail(struct api_resp *r, unsigned status, int code, const char *msg)
{
	r->status = status;
	r->body = api_error_body(code, msg);
}

/* Maps a rulesdb error (negative errno, reason in err). */
static void fail_db(struct api_resp *r, int e, const char *err)
{
	switch (e) {
	case -EINVAL:
	case -EPERM:
	case -ENAMETOOLONG:
	case -EACCES:
	case -EALREADY:
		fail(r, 400, E_INVALID, err);
		break;
	case -EEXIST:
	case -EBUSY:
		fail(r, 409, E_CONFLICT, err);
		break;
	case -ENOENT:
		fail(r, 404, E_NOT_FOUND, err);
		break;
	default:
		mxf_err("rules database: %s", err);
		fail(r, 500, E_INTERNAL, "internal error");
	}
}

/* Takes result (may be NULL: null). info: the list's paging, or NULL. */
static void ok(struct api_resp *r, unsigned status, json_t *result, json_t *info)
{
	json_t *o = json_object();
	json_object_set_new(o, "success", json_true());
	json_object_set_new(o, "errors", json_array());
	json_object_set_new(o, "messages", json_array());
	json_object_set_new(o, "result", result ? result : json_null());
	if (info)
		json_object_set_new(o, "result_info", info);
	r->status = status;
	r->body = dump(o);
}

/* Appends {"code","message"} to an answer's messages (after ok()). */
static void add_message(struct api_resp *r, int code, const char *msg)
{
	json_t *env = r->body ? json_loads(r->body, 0, NULL) : NULL;
	json_t *ms = env ? json_object_get(env, "messages") : NULL;
	if (!json_is_array(ms)) {
		json_decref(env);
		return;
	}
	json_t *m = json_object();
	json_object_set_new(m, "code", json_integer(code));
	json_object_set_new(m, "message", js(msg));
	json_array_append_new(ms, m);
	char *nb = json_dumps(env, JSON_COMPACT);
	json_decref(env);
	if (nb) {
		free(r->body);
		r->body = nb;
	}
}

/* ---- query values ---- */

int api_parse_uint(const char *s, long long min, long long max, long long *out)
{
	if (!s || !*s || strlen(s) > 18)
		return -EINVAL;
	long long v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (*p - '0');
	}
	if (v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int digits(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

int api_parse_time(const char *s, long long *out)
{
	if (!s)
		return -EINVAL;
	if (api_parse_uint(s, 0, 253402300799LL, out) == 0)
		return 0;
	/* YYYY-MM-DD[THH:MM[:SS][Z]] (UTC). */
	size_t n = strlen(s);
	if (n < 10 || n > 25 || s[4] != '-' || s[7] != '-')
		return -EINVAL;
	int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2), h = 0, mi = 0, se = 0;
	const char *p = s + 10;
	if (*p == 'T' || *p == ' ') {
		if (strlen(p) < 6 || p[3] != ':')
			return -EINVAL;
		h = digits(p + 1, 2);
		mi = digits(p + 4, 2);
		p += 6;
		if (*p == ':') {
			if (strlen(p) < 3)
				return -EINVAL;
			se = digits(p + 1, 2);
			p += 3;
		}
		if (*p == 'Z')
			p++;
	}
	if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 ||
	    mi > 59 || se < 0 || se > 60)
		return -EINVAL;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
			.tm_min = mi, .tm_sec = se};
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*out = (long long)t;
	return 0;
}

struct page {
	long long page, per_page;
};

/* page (1..) and per_page (5..1000 as the hosted API; default 20). */
static int get_page(const struct api_req *q, struct page *p, struct api_resp *r)
{
	p->page = 1;
	p->per_page = 20;
	const char *v;
	if ((v = q->arg(q->arg_cls, "page")) && api_parse_uint(v, 1, 1000000, &p->page) < 0) {
		fail(r, 400, E_BAD_REQUEST, "page must be a positive integer");
		return -1;
	}
	if ((v = q->arg(q->arg_cls, "per_page")) &&
	    api_parse_uint(v, 1, 1000, &p->per_page) < 0) {
		fail(r, 400, E_BAD_REQUEST, "per_page must be an integer from 1 to 1000");
		return -1;
	}
	return 0;
}

/* Answers one page of all (an array, taken). */
static void ok_page(struct api_resp *r, json_t *all, const struct page *p)
{
	size_t total = json_array_size(all);
	json_t *out = json_array();
	size_t first = (size_t)((p->page - 1) * p->per_page);
	for (size_t i = first; i < total && i < first + (size_t)p->per_page; i++)
		json_array_append(out, json_array_get(all, i));
	json_t *info = json_object();
	json_object_set_new(info, "page", json_integer(p->page));
	json_object_set_new(info, "per_page", json_integer(p->per_page));
	json_object_set_new(info, "count", json_integer((json_int_t)json_array_size(out)));
	json_object_set_new(info, "total_count", json_integer((json_int_t)total));
	json_object_set_new(info, "total_pages",
			    json_integer((json_int_t)((total + (size_t)p->per_page - 1) /
						      (size_t)p->per_page)));
	json_decref(all);
	ok(r, 200, out, info);
}

static int get_bool_arg(const struct api_req *q, const char *name, int *out, struct api_resp *r)
{
	const char *v = q->arg(q->arg_cls, name);
	*out = -1;
	if (!v)
		return 0;
	if (strcmp(v, "true") == 0)
		*out = 1;
	else if (strcmp(v, "false") == 0)
		*out = 0;
	else {
		char m[80];
		snprintf(m, sizeof(m), "%s must be true or false", name);
		fail(r, 400, E_BAD_REQUEST, m);
		return -1;
	}
	return 0;
}

/* ---- bodies ---- */

/* The body as a JSON object (NULL: answered 400). */
static json_t *body_object(const struct api_req *q, struct api_resp *r)
{
	json_error_t je;
	if (q->bodylen == 0) {
		fail(r, 400, E_BAD_REQUEST, "a JSON object body is required");
		return NULL;
	}
	json_t *j = json_loadb(q->body, q->bodylen, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		char m[300];
		snprintf(m, sizeof(m), "malformed JSON: %s (line %d, column %d)", je.text, je.line,
			 je.column);
		fail(r, 400, E_BAD_REQUEST, m);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		fail(r, 400, E_BAD_REQUEST, "the body must be a JSON object");
		return NULL;
	}
	return j;
}

/* Unknown fields are refused, so a typo is not silently ignored. */
static int only_keys(json_t *o, const char *const *allowed, const char *what, struct api_resp *r)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		bool known = false;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(k, *a) == 0)
				known = true;
		if (!known) {
			char m[200];
			snprintf(m, sizeof(m), "unknown field %.80s in %s", k, what);
			fail(r, 400, E_BAD_REQUEST, m);
			return -1;
		}
	}
	return 0;
}

static int wrong_type(struct api_resp *r, const char *field, const char *type)
{
	char m[160];
	snprintf(m, sizeof(m), "%s must be %s", field, type);
	fail(r, 400, E_BAD_REQUEST, m);
	return -1;
}

/* Optional typed fields: absent leaves *out. */
static int opt_bool(json_t *o, const char *k, int *out, struct api_resp *r)
{
	json_t *v = json_object_get(o, k);
	/* null is absence (clients such as Terraform send it for unset fields). */
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return wrong_type(r, k, "a boolean");
	*out = json_is_true(v);
	return 0;
}

static int opt_str(json_t *o, const char *k, const char **out, struct api_resp *r)
{
	json_t *v = json_object_get(o, k);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return wrong_type(r, k, "a string");
	*out = json_string_value(v);
	return 0;
}

/* ---- zones ---- */

struct zone {
	char id[33], name[MXF_DOMAIN_MAX + 1];
	bool enabled, subaddressing;
	long long created;
};

struct zone_find {
	const char *want;
	struct zone *z;
	bool found;
	json_t *list; /* or collect all */
	const char *name_filter;
};

static json_t *zone_json(const struct zone *z)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", js(z->id));
	json_object_set_new(o, "name", js(z->name));
	json_object_set_new(o, "status", json_string("active"));
	json_object_set_new(o, "created_on", jiso(z->created));
	json_object_set_new(o, "modified_on", jiso(z->created));
	return o;
}

static void zone_from(struct zone *z, const struct mxf_domain_info *d)
{
	snprintf(z->id, sizeof(z->id), "%s", d->id);
	snprintf(z->name, sizeof(z->name), "%s", d->name);
	z->enabled = d->enabled;
	z->subaddressing = d->subaddressing;
	z->created = d->created;
}

static int zone_cb(const struct mxf_domain_info *d, void *arg)
{
	struct zone_find *f = arg;
	struct zone z;
	zone_from(&z, d);
	if (f->list) {
		if (!f->name_filter || strcasecmp(f->name_filter, d->name) == 0)
			json_array_append_new(f->list, zone_json(&z));
		return 0;
	}
	if (strcmp(f->want, d->id) == 0 || strcasecmp(f->want, d->name) == 0) {
		*f->z = z;
		f->found = true;
		return 1;
	}
	return 0;
}

/* zone_id: the domain's id or its name (U-label accepted). */
static int find_zone(struct api *a, const char *zid, struct zone *z, struct api_resp *r)
{
	char alabel[MXF_DOMAIN_MAX + 1];
	struct zone_find f = {.want = zid, .z = z};
	if (mxf_domain_to_ascii(zid, alabel, sizeof(alabel)) == 0)
		f.want = alabel;
	int e = mxf_rulesdb_domain_list(a->db, zone_cb, &f);
	if (e < 0) {
		fail_db(r, e, "cannot list domains");
		return -1;
	}
	if (!f.found) {
		fail(r, 404, E_NOT_FOUND, "zone not found");
		return -1;
	}
	return 0;
}

/* After a write: the router loads the rules at once (it would also notice
 * the change by itself, later). */
static void reload(struct api *a)
{
	char why[600];
	if (mxf_routerctl_reload(a->cfg, why, sizeof(why)) < 0)
		mxf_warn("saved, but the router was not told: %s", why);
}

static void zones(struct api *a, const struct api_req *q, struct api_resp *r)
{
	if (strcmp(q->method, "GET") == 0) {
		struct page p;
		if (get_page(q, &p, r) < 0)
			return;
		struct zone_find f = {.list = json_array(), .name_filter = q->arg(q->arg_cls, "name")};
		int e = mxf_rulesdb_domain_list(a->db, zone_cb, &f);
		if (e < 0) {
			json_decref(f.list);
			fail_db(r, e, "cannot list domains");
			return;
		}
		ok_page(r, f.list, &p);
		return;
	}
	/* POST */
	json_t *b = body_object(q, r);
	if (!b)
		return;
	static const char *const keys[] = {"name", "account", "type", "jump_start", NULL};
	const char *name = NULL;
	if (only_keys(b, keys, "the zone", r) < 0 || opt_str(b, "name", &name, r) < 0)
		goto out;
	if (!name) {
		fail(r, 400, E_BAD_REQUEST, "name is required");
		goto out;
	}
	char err[512];
	int e = mxf_rulesdb_domain_add(a->db, name, err, sizeof(err));
	if (e < 0) {
		fail_db(r, e, err);
		goto out;
	}
	reload(a);
	struct zone z;
	if (find_zone(a, name, &z, r) == 0)
		ok(r, 200, zone_json(&z), NULL);
out:
	json_decref(b);
}

static void zone_one(struct api *a, const struct api_req *q, const struct zone *z,
		     struct api_resp *r)
{
	if (strcmp(q->method, "GET") == 0) {
		ok(r, 200, zone_json(z), NULL);
		return;
	}
	char err[512];
	int e = mxf_rulesdb_domain_remove(a->db, z->name, err, sizeof(err));
	if (e < 0) {
		fail_db(r, e, err);
		return;
	}
	reload(a);
	json_t *o = json_object();
	json_object_set_new(o, "id", js(z->id));
	ok(r, 200, o, NULL);
}

/* ---- settings ---- */

static json_t *settings_json(const struct zone *z)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", js(z->id));
	json_object_set_new(o, "tag", js(z->id));
	json_object_set_new(o, "name", js(z->name));
	json_object_set_new(o, "enabled", json_boolean(z->enabled));
	json_object_set_new(o, "created", jiso(z->created));
	json_object_set_new(o, "modified", jiso(z->created));
	json_object_set_new(o, "skip_wizard", json_true());
	json_object_set_new(o, "status", json_string(z->enabled ? "ready" : "unconfigured"));
	json_object_set_new(o, "support_subaddress", json_boolean(z->subaddressing));
	return o;
}

/* Writes enabled/subaddressing (-1 keeps) and answers the settings. */
static void settings_write(struct api *a, struct zone *z, int enabled, int sub, struct api_resp *r)
{
	if (enabled >= 0 || sub >= 0) {
		char err[512];
		int e = mxf_rulesdb_domain_update(a->db, z->name, enabled, sub, err, sizeof(err));
		if (e < 0) {
			fail_db(r, e, err);
			return;
		}
		reload(a);
		if (find_zone(a, z->id, z, r) < 0)
			return;
	}
	ok(r, 200, settings_json(z), NULL);
}

static void settings(struct api *a, const struct api_req *q, struct zone *z, struct api_resp *r)
{
	if (strcmp(q->method, "GET") == 0) {
		ok(r, 200, settings_json(z), NULL);
		return;
	}
	json_t *b = body_object(q, r);
	if (!b)
		return;
	static const char *const keys[] = {"enabled", "support_subaddress", "skip_wizard", NULL};
	int en = -1, sub = -1, skip = -1;
	if (only_keys(b, keys, "the settings", r) == 0 && opt_bool(b, "enabled", &en, r) == 0 &&
	    opt_bool(b, "support_subaddress", &sub, r) == 0 &&
	    opt_bool(b, "skip_wizard", &skip, r) == 0)
		settings_write(a, z, en, sub, r);
	json_decref(b);
}

/* ---- rules ---- */

static json_t *split_json(const char *list)
{
	json_t *arr = json_array();
	const char *p = list;
	while (p && *p) {
		const char *c = strchr(p, ',');
		size_t n = c ? (size_t)(c - p) : strlen(p);
		if (n) {
			json_t *s = json_stringn(p, n);
			json_array_append_new(arr, s ? s : json_string(""));
		}
		p = c ? c + 1 : NULL;
	}
	return arr;
}

static json_t *rule_json(const struct mxf_rule_info *ri, bool with_zone, const char *zone_id)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", js(ri->tag));
	json_object_set_new(o, "tag", js(ri->tag));
	json_object_set_new(o, "name", js(ri->name));
	json_object_set_new(o, "enabled", json_boolean(ri->enabled));
	if (strcmp(ri->matcher, "all") != 0)
		json_object_set_new(o, "priority", json_integer(ri->priority));
	json_t *m = json_array();
	if (strcmp(ri->matcher, "all") == 0) {
		json_t *x = json_object();
		json_object_set_new(x, "type", json_string("all"));
		json_array_append_new(m, x);
	} else {
		json_t *x = json_object();
		json_object_set_new(x, "type", js(ri->matcher));
		json_object_set_new(x, "field", json_string("to"));
		json_object_set_new(x, "value", js(ri->to));
		json_array_append_new(m, x);
		json_t *froms = split_json(ri->from);
		size_t i;
		json_t *f;
		json_array_foreach(froms, i, f)
		{
			json_t *y = json_object();
			const char *v = json_string_value(f);
			json_object_set_new(y, "type",
					    json_string(strchr(v, '*') ? "wildcard" : "literal"));
			json_object_set_new(y, "field", json_string("from"));
			json_object_set_new(y, "value", json_incref(f));
			json_array_append_new(m, y);
		}
		json_decref(froms);
	}
	json_object_set_new(o, "matchers", m);
	json_t *act = json_object();
	json_object_set_new(act, "type", js(ri->action));
	if (strcmp(ri->action, "forward") == 0)
		json_object_set_new(act, "value", split_json(ri->dests));
	else if (strcmp(ri->action, "drop") == 0)
		json_object_set_new(act, "value", json_array());
	else {
		json_t *v = json_array();
		json_array_append_new(v, js(ri->arg));
		json_object_set_new(act, "value", v);
		if (strcmp(ri->action, "reject") == 0)
			json_object_set_new(act, "code", json_integer(ri->code ? ri->code : 550));
	}
	json_t *acts = json_array();
	json_array_append_new(acts, act);
	json_object_set_new(o, "actions", acts);
	json_object_set_new(o, "source", json_string("api"));
	if (with_zone) {
		json_t *z = json_object();
		json_object_set_new(z, "name", js(ri->domain));
		json_object_set_new(z, "tag", js(zone_id));
		json_object_set_new(o, "zone", z);
	}
	return o;
}

struct rule_find {
	const char *domain;  /* NULL: every domain */
	const char *tag;     /* one rule, or NULL */
	bool catchall;       /* the domain's catch-all */
	int enabled;         /* filter: -1 any */
	json_t *list;
	json_t *ids;         /* domain name -> zone id (account listing) */
	json_t *found;
};

static int rule_cb(const struct mxf_rule_info *ri, void *arg)
{
	struct rule_find *f = arg;
	if (f->domain && strcmp(f->domain, ri->domain) != 0)
		return 0;
	bool all = strcmp(ri->matcher, "all") == 0;
	if (f->tag) {
		if (strcmp(f->tag, ri->tag) == 0) {
			f->found = rule_json(ri, false, NULL);
			return 1;
		}
		return 0;
	}
	if (f->catchall) {
		if (all) {
			f->found = rule_json(ri, false, NULL);
			return 1;
		}
		return 0;
	}
	/* The hosted API lists the catch-all apart (rules/catch_all). */
	if (all && f->domain)
		return 0;
	if (f->enabled >= 0 && ri->enabled != (f->enabled == 1))
		return 0;
	const char *zid = NULL;
	if (f->ids)
		zid = json_string_value(json_object_get(f->ids, ri->domain));
	json_array_append_new(f->list, rule_json(ri, f->ids != NULL, zid ? zid : ""));
	return 0;
}

/* A rule as the API writes it, parsed and type-checked whole. */
struct rule_in {
	const char *matcher, *to;
	char from[MAX_FROM * 330];
	const char *action;
	const char *dests[MAX_DESTS];
	size_t ndest;
	const char *arg;
	int code;
	const char *name;
	long long priority;
	int enabled;
};

static int parse_matchers(json_t *ms, bool catchall, struct rule_in *in, struct api_resp *r)
{
	static const char *const mkeys[] = {"type", "field", "value", NULL};
	if (!json_is_array(ms) || json_array_size(ms) == 0)
		return wrong_type(r, "matchers", "a non-empty array");
	size_t i, nfrom = 0;
	json_t *m;
	json_array_foreach(ms, i, m)
	{
		if (!json_is_object(m))
			return wrong_type(r, "matchers[]", "an object");
		if (only_keys(m, mkeys, "a matcher", r) < 0)
			return -1;
		const char *type = NULL, *field = NULL, *value = NULL;
		if (opt_str(m, "type", &type, r) < 0 || opt_str(m, "field", &field, r) < 0 ||
		    opt_str(m, "value", &value, r) < 0)
			return -1;
		if (!type) {
			fail(r, 400, E_BAD_REQUEST, "a matcher needs a type");
			return -1;
		}
		if (strcmp(type, "all") == 0) {
			if (!catchall) {
				fail(r, 400, E_INVALID,
				     "a matcher of type all is the catch-all (rules/catch_all)");
				return -1;
			}
			in->matcher = "all";
			continue;
		}
		if (catchall) {
			fail(r, 400, E_INVALID, "the catch-all's only matcher is {\"type\":\"all\"}");
			return -1;
		}
		if (strcmp(type, "literal") != 0 && strcmp(type, "wildcard") != 0) {
			fail(r, 400, E_INVALID, "matcher type is literal, wildcard or all");
			return -1;
		}
		if (!field || !value) {
			fail(r, 400, E_INVALID, "a literal or wildcard matcher needs field and value");
			return -1;
		}
		if (strcmp(field, "to") == 0) {
			if (in->to) {
				fail(r, 400, E_INVALID, "one matcher on to per rule");
				return -1;
			}
			in->matcher = type;
			in->to = value;
		} else if (strcmp(field, "from") == 0) {
			size_t l = strlen(in->from);
			if (++nfrom > MAX_FROM || strchr(value, ',') ||
			    l + strlen(value) + 2 > sizeof(in->from)) {
				fail(r, 400, E_INVALID, "too many or invalid from matchers");
				return -1;
			}
			snprintf(in->from + l, sizeof(in->from) - l, "%s%s", l ? "," : "", value);
		} else {
			fail(r, 400, E_INVALID, "matcher field is to or from");
			return -1;
		}
	}
	if (!catchall && !in->to) {
		fail(r, 400, E_INVALID, "a rule needs a matcher on to");
		return -1;
	}
	if (catchall && !in->matcher) {
		fail(r, 400, E_INVALID, "the catch-all's matcher is {\"type\":\"all\"}");
		return -1;
	}
	return 0;
}

static int parse_actions(json_t *as, struct rule_in *in, struct api_resp *r)
{
	static const char *const akeys[] = {"type", "value", "code", NULL};
	if (!json_is_array(as) || json_array_size(as) != 1)
		return wrong_type(r, "actions", "an array of one action");
	json_t *act = json_array_get(as, 0);
	if (!json_is_object(act))
		return wrong_type(r, "actions[]", "an object");
	if (only_keys(act, akeys, "an action", r) < 0)
		return -1;
	const char *type = NULL;
	if (opt_str(act, "type", &type, r) < 0)
		return -1;
	if (!type) {
		fail(r, 400, E_BAD_REQUEST, "an action needs a type");
		return -1;
	}
	json_t *val = json_object_get(act, "value");
	if (json_is_null(val))
		val = NULL;
	if (val && !json_is_array(val))
		return wrong_type(r, "action value", "an array of strings");
	size_t i, n = val ? json_array_size(val) : 0;
	json_t *v;
	json_array_foreach(val, i, v) if (!json_is_string(v)) return wrong_type(
		r, "action value", "an array of strings");
	json_t *code = json_object_get(act, "code");
	if (json_is_null(code))
		code = NULL;
	if (code && (!json_is_integer(code) || strcmp(type, "reject") != 0))
		return wrong_type(r, "code", "an integer, and only for reject");
	in->action = type;
	if (strcmp(type, "forward") == 0) {
		if (n > MAX_DESTS) {
			fail(r, 400, E_INVALID, "a forward rule has 1 to 25 destinations");
			return -1;
		}
		for (i = 0; i < n; i++)
			in->dests[i] = json_string_value(json_array_get(val, i));
		in->ndest = n;
	} else if (strcmp(type, "drop") == 0) {
		if (n) {
			fail(r, 400, E_INVALID, "a drop action takes no value");
			return -1;
		}
	} else if (strcmp(type, "worker") == 0 || strcmp(type, "reject") == 0 ||
		   strcmp(type, "webhook") == 0) {
		if (n != 1) {
			fail(r, 400, E_INVALID, "this action's value is an array of one string");
			return -1;
		}
		in->arg = json_string_value(json_array_get(val, 0));
		if (code) {
			json_int_t c = json_integer_value(code);
			if (c < 0 || c > 999)
				return wrong_type(r, "code", "an SMTP reply code");
			in->code = (int)c;
		}
	} else {
		fail(r, 400, E_INVALID, "action type is forward, drop, worker, reject or webhook");
		return -1;
	}
	return 0;
}

static int parse_rule(json_t *b, bool catchall, struct rule_in *in, struct api_resp *r)
{
	/* id, tag, source and owner_worker_tag are accepted (a client may send
	 * back what it read) and ignored. */
	static const char *const keys[] = {"name",   "enabled", "priority",         "matchers",
					   "actions", "source", "owner_worker_tag", "id",
					   "tag",     NULL};
	static const char *const ckeys[] = {"name",   "enabled",          "matchers", "actions",
					    "source", "owner_worker_tag", "id",       "tag",
					    NULL};
	memset(in, 0, sizeof(*in));
	in->enabled = 1;
	if (only_keys(b, catchall ? ckeys : keys, catchall ? "the catch-all" : "the rule", r) < 0)
		return -1;
	in->name = "";
	if (opt_str(b, "name", &in->name, r) < 0 || opt_bool(b, "enabled", &in->enabled, r) < 0)
		return -1;
	const char *ignored;
	if (opt_str(b, "source", &ignored, r) < 0 || opt_str(b, "owner_worker_tag", &ignored, r) < 0)
		return -1;
	json_t *v = json_object_get(b, "priority");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v))
			return wrong_type(r, "priority", "an integer");
		in->priority = json_integer_value(v);
		if (in->priority < 0 || in->priority > 1000000) {
			fail(r, 400, E_INVALID, "priority is 0 to 1000000");
			return -1;
		}
	}
	json_t *ms = json_object_get(b, "matchers"), *as = json_object_get(b, "actions");
	if (!ms || !as) {
		fail(r, 400, E_BAD_REQUEST, "matchers and actions are required");
		return -1;
	}
	if (parse_matchers(ms, catchall, in, r) < 0 || parse_actions(as, in, r) < 0)
		return -1;
	return 0;
}

/* The request's rule body, parsed (NULL: answered with the error; else
 * *b is the JSON the result points into, for the caller to release). */
static struct rule_in *rule_body(const struct api_req *q, bool catchall, json_t **b,
				 struct api_resp *r)
{
	if (!(*b = body_object(q, r)))
		return NULL;
	struct rule_in *in = calloc(1, sizeof(*in));
	if (!in)
		fail(r, 500, E_INTERNAL, "out of memory");
	else if (parse_rule(*b, catchall, in, r) == 0)
		return in;
	free(in);
	json_decref(*b);
	return NULL;
}

/* Answers the rule with tag (or the zone's catch-all) as it is now. */
static void answer_rule(struct api *a, const struct zone *z, const char *tag, unsigned status,
			struct api_resp *r)
{
	struct rule_find f = {.domain = z->name, .tag = tag, .catchall = !tag, .enabled = -1};
	int e = mxf_rulesdb_rule_list(a->db, rule_cb, &f);
	if (e < 0) {
		fail_db(r, e, "cannot list rules");
		return;
	}
	if (!f.found) {
		fail(r, 404, E_NOT_FOUND, tag ? "rule not found" : "no catch-all rule");
		return;
	}
	ok(r, status, f.found, NULL);
}

static void rules(struct api *a, const struct api_req *q, const struct zone *z, struct api_resp *r)
{
	if (strcmp(q->method, "GET") == 0) {
		struct page p;
		struct rule_find f = {.domain = z->name, .list = json_array()};
		if (get_page(q, &p, r) < 0 || get_bool_arg(q, "enabled", &f.enabled, r) < 0) {
			json_decref(f.list);
			return;
		}
		int e = mxf_rulesdb_rule_list(a->db, rule_cb, &f);
		if (e < 0) {
			json_decref(f.list);
			fail_db(r, e, "cannot list rules");
			return;
		}
		ok_page(r, f.list, &p);
		return;
	}
	json_t *b;
	struct rule_in *in = rule_body(q, false, &b, r);
	if (!in)
		return;
	struct mxf_rule_spec s = {
		.domain = z->name,
		.matcher = in->matcher,
		.to = in->to,
		.action = in->action,
		.dests = in->dests,
		.ndest = in->ndest,
		.arg = in->arg,
		.name = in->name,
		.priority = (int)in->priority,
		.disabled = !in->enabled,
		.from = in->from,
		.code = in->code,
	};
	char tag[40], err[512];
	int e = mxf_rulesdb_rule_create(a->db, &s, tag, err, sizeof(err));
	if (e < 0) {
		fail_db(r, e, err);
		goto out;
	}
	reload(a);
	answer_rule(a, z, tag, 200, r);
out:
	free(in);
	json_decref(b);
}

static void rule_one(struct api *a, const struct api_req *q, const struct zone *z,
		     const char *tag, struct api_resp *r)
{
	/* The rule must be this zone's (and not its catch-all). */
	struct rule_find f = {.domain = z->name, .tag = tag, .enabled = -1};
	int e = mxf_rulesdb_rule_list(a->db, rule_cb, &f);
	if (e < 0) {
		fail_db(r, e, "cannot list rules");
		return;
	}
	if (!f.found) {
		fail(r, 404, E_NOT_FOUND, "rule not found");
		return;
	}
	if (strcmp(q->method, "GET") == 0) {
		ok(r, 200, f.found, NULL);
		return;
	}
	json_t *before = f.found;
	char err[512];
	if (strcmp(q->method, "DELETE") == 0) {
		if ((e = mxf_rulesdb_rule_remove(a->db, tag, err, sizeof(err))) < 0) {
			json_decref(before);
			fail_db(r, e, err);
			return;
		}
		reload(a);
		ok(r, 200, before, NULL);
		return;
	}
	json_decref(before);
	/* PUT: the whole rule is replaced (absent fields take their defaults),
	 * in one rulesdb call. */
	json_t *b;
	struct rule_in *in = rule_body(q, false, &b, r);
	if (!in)
		return;
	struct mxf_rule_edit ed = {
		.matcher = in->matcher,
		.to = in->to,
		.action = in->action,
		.dests = in->dests,
		.ndest = in->ndest,
		.arg = in->arg,
		.name = in->name,
		.priority = (int)in->priority,
		.enabled = in->enabled,
		.from = in->from,
		.code = in->code,
	};
	if ((e = mxf_rulesdb_rule_edit(a->db, tag, &ed, err, sizeof(err))) < 0) {
		fail_db(r, e, err);
		goto out;
	}
	reload(a);
	answer_rule(a, z, tag, 200, r);
out:
	free(in);
	json_decref(b);
}

static void catch_all(struct api *a, const struct api_req *q, const struct zone *z,
		      struct api_resp *r)
{
	if (strcmp(q->method, "GET") == 0) {
		struct rule_find f = {.domain = z->name, .catchall = true, .enabled = -1};
		int e = mxf_rulesdb_rule_list(a->db, rule_cb, &f);
		if (e < 0) {
			fail_db(r, e, "cannot list rules");
			return;
		}
		if (!f.found) {
			/* The hosted service always has one: a disabled drop. */
			json_t *o = json_object();
			json_object_set_new(o, "id", json_string(""));
			json_object_set_new(o, "tag", json_string(""));
			json_object_set_new(o, "name", json_string(""));
			json_object_set_new(o, "enabled", json_false());
			json_t *m = json_array(), *mm = json_object();
			json_object_set_new(mm, "type", json_string("all"));
			json_array_append_new(m, mm);
			json_object_set_new(o, "matchers", m);
			json_t *acts = json_array(), *act = json_object();
			json_object_set_new(act, "type", json_string("drop"));
			json_object_set_new(act, "value", json_array());
			json_array_append_new(acts, act);
			json_object_set_new(o, "actions", acts);
			f.found = o;
		}
		ok(r, 200, f.found, NULL);
		return;
	}
	json_t *b;
	struct rule_in *in = rule_body(q, true, &b, r);
	if (!in)
		return;
	struct mxf_rule_spec s = {
		.domain = z->name,
		.matcher = "all",
		.action = in->action,
		.dests = in->dests,
		.ndest = in->ndest,
		.arg = in->arg,
		.name = in->name,
		.disabled = !in->enabled,
		.code = in->code,
	};
	char err[512];
	int e = mxf_rulesdb_catchall_put(a->db, &s, err, sizeof(err));
	if (e < 0) {
		fail_db(r, e, err);
		goto out;
	}
	reload(a);
	answer_rule(a, z, NULL, 200, r);
out:
	free(in);
	json_decref(b);
}

/* ---- account-level ---- */

struct zone_ids {
	json_t *ids;
};

static int zone_ids_cb(const struct mxf_domain_info *d, void *arg)
{
	json_object_set_new(((struct zone_ids *)arg)->ids, d->name, js(d->id));
	return 0;
}

static void account_rules(struct api *a, const struct api_req *q, struct api_resp *r)
{
	struct page p;
	struct rule_find f = {.list = json_array(), .ids = json_object()};
	struct zone_ids zi = {f.ids};
	int e;
	if (get_page(q, &p, r) < 0 || get_bool_arg(q, "enabled", &f.enabled, r) < 0)
		goto out;
	if ((e = mxf_rulesdb_domain_list(a->db, zone_ids_cb, &zi)) < 0 ||
	    (e = mxf_rulesdb_rule_list(a->db, rule_cb, &f)) < 0) {
		fail_db(r, e, "cannot list rules");
		goto out;
	}
	json_decref(f.ids);
	ok_page(r, f.list, &p);
	return;
out:
	json_decref(f.ids);
	json_decref(f.list);
}

static json_t *address_json(const struct mxf_address_info *ad)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", js(ad->id));
	json_object_set_new(o, "tag", js(ad->id));
	json_object_set_new(o, "email", js(ad->email));
	/* rules.db keeps whether, not when: the creation time stands in. */
	json_object_set_new(o, "verified", ad->verified ? jiso(ad->created) : json_null());
	json_object_set_new(o, "created", jiso(ad->created));
	json_object_set_new(o, "modified", jiso(ad->created));
	return o;
}

struct addr_find {
	const char *id, *email;
	int verified;
	json_t *list, *found;
	char email_out[MXF_ADDR_SIZE];
};

static int addr_cb(const struct mxf_address_info *ad, void *arg)
{
	struct addr_find *f = arg;
	if (f->id || f->email) {
		if ((f->id && strcmp(f->id, ad->id) == 0) ||
		    (f->email && strcasecmp(f->email, ad->email) == 0)) {
			f->found = address_json(ad);
			snprintf(f->email_out, sizeof(f->email_out), "%s", ad->email);
			return 1;
		}
		return 0;
	}
	if (f->verified < 0 || ad->verified == (f->verified == 1))
		json_array_append_new(f->list, address_json(ad));
	return 0;
}

static void addresses(struct api *a, const struct api_req *q, struct api_resp *r)
{
	if (strcmp(q->method, "GET") == 0) {
		struct page p;
		struct addr_find f = {.list = json_array()};
		int e;
		if (get_page(q, &p, r) < 0 || get_bool_arg(q, "verified", &f.verified, r) < 0) {
			json_decref(f.list);
			return;
		}
		const char *dir = q->arg(q->arg_cls, "direction");
		if (dir && strcmp(dir, "asc") != 0 && strcmp(dir, "desc") != 0) {
			json_decref(f.list);
			fail(r, 400, E_BAD_REQUEST, "direction is asc or desc");
			return;
		}
		if ((e = mxf_rulesdb_address_list(a->db, addr_cb, &f)) < 0) {
			json_decref(f.list);
			fail_db(r, e, "cannot list addresses");
			return;
		}
		if (dir && strcmp(dir, "desc") == 0) {
			json_t *rev = json_array();
			for (size_t i = json_array_size(f.list); i > 0; i--)
				json_array_append(rev, json_array_get(f.list, i - 1));
			json_decref(f.list);
			f.list = rev;
		}
		ok_page(r, f.list, &p);
		return;
	}
	json_t *b = body_object(q, r);
	if (!b)
		return;
	static const char *const keys[] = {"email", NULL};
	const char *email = NULL;
	if (only_keys(b, keys, "the address", r) < 0 || opt_str(b, "email", &email, r) < 0)
		goto out;
	if (!email) {
		fail(r, 400, E_BAD_REQUEST, "email is required");
		goto out;
	}
	char err[600], norm[MXF_ADDR_SIZE];
	int e = mxf_rulesdb_address_add(a->db, email, false, err, sizeof(err));
	if (e < 0) {
		fail_db(r, e, err);
		goto out;
	}
	struct addr_find f = {.email = email};
	if (mxf_addr_normalize(email, MXF_ADDR_UTF8, norm, sizeof(norm)) == 0)
		f.email = norm;
	mxf_rulesdb_address_list(a->db, addr_cb, &f);
	if (!f.found) {
		fail(r, 500, E_INTERNAL, "the new address is not there");
		goto out;
	}
	/* The verification mail, as `mxferryctl address add` sends it. The
	 * address stays (the hosted API answers success too) if the router
	 * cannot take it now; the message says so. */
	char qid[MXF_QID_SIZE] = "";
	e = mxf_routerctl_verify_mail(a->cfg, a->db, f.email_out, qid, err, sizeof(err));
	char note[700];
	if (e < 0) {
		mxf_warn("address %s added, but no verification mail: %s", f.email_out, err);
		snprintf(note, sizeof(note), "no verification mail was sent: %s", err);
	} else {
		mxf_info("address %s added; verification mail queued as %s", f.email_out, qid);
		snprintf(note, sizeof(note), "verification mail queued as %s", qid);
	}
	reload(a);
	ok(r, 200, f.found, NULL);
	add_message(r, e < 0 ? 2 : 0, note);
out:
	json_decref(b);
}

static void address_one(struct api *a, const struct api_req *q, const char *id,
			struct api_resp *r)
{
	struct addr_find f = {.id = id};
	int e = mxf_rulesdb_address_list(a->db, addr_cb, &f);
	if (e < 0) {
		fail_db(r, e, "cannot list addresses");
		return;
	}
	if (!f.found) {
		fail(r, 404, E_NOT_FOUND, "address not found");
		return;
	}
	if (strcmp(q->method, "GET") == 0) {
		ok(r, 200, f.found, NULL);
		return;
	}
	char err[600];
	if (strcmp(q->method, "DELETE") == 0) {
		if ((e = mxf_rulesdb_address_remove(a->db, f.email_out, err, sizeof(err))) < 0) {
			json_decref(f.found);
			fail_db(r, e, err);
			return;
		}
		reload(a);
		ok(r, 200, f.found, NULL);
		return;
	}
	json_decref(f.found);
	/* PATCH: {"verification_code": CODE} (the code of the mail, as
	 * `mxferryctl address verify`), or {"verified": bool} (the operator's
	 * word, as `address verify --force`). */
	json_t *b = body_object(q, r);
	if (!b)
		return;
	static const char *const keys[] = {"verification_code", "verified", NULL};
	const char *code = NULL;
	int ver = -1;
	if (only_keys(b, keys, "the address", r) < 0 ||
	    opt_str(b, "verification_code", &code, r) < 0 || opt_bool(b, "verified", &ver, r) < 0)
		goto out;
	if (code && ver >= 0) {
		fail(r, 400, E_BAD_REQUEST, "verification_code or verified, not both");
		goto out;
	}
	e = 0;
	if (code)
		e = mxf_rulesdb_address_verify_token(a->db, f.email_out, code, err, sizeof(err));
	else if (ver >= 0)
		e = mxf_rulesdb_address_verify(a->db, f.email_out, ver == 1, err, sizeof(err));
	if (e < 0) {
		fail_db(r, e, err);
		goto out;
	}
	if (code || ver >= 0)
		reload(a);
	struct addr_find g = {.id = id};
	mxf_rulesdb_address_list(a->db, addr_cb, &g);
	ok(r, 200, g.found, NULL);
out:
	json_decref(b);
}

/* ---- audit log ---- */

static int audit_cb(const struct mxf_audit_entry *ae, void *arg)
{
	json_t *o = json_object();
	char id[32];
	snprintf(id, sizeof(id), "%lld", ae->id);
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "when", jiso(ae->ts));
	json_t *actor = json_object();
	const char *who = ae->who ? ae->who : "";
	bool tok = strncmp(who, "token:", 6) == 0;
	json_object_set_new(actor, "type", json_string(tok ? "token" : "cli"));
	json_object_set_new(actor, "name", js(tok ? who + 6 : who));
	json_object_set_new(o, "actor", actor);
	json_t *act = json_object();
	json_object_set_new(act, "type", js(ae->action));
	json_object_set_new(act, "result", json_true());
	json_object_set_new(o, "action", act);
	json_t *res = json_object();
	const char *dot = ae->action ? strchr(ae->action, '.') : NULL;
	json_object_set_new(res, "type",
			    dot ? json_stringn(ae->action, (size_t)(dot - ae->action)) : js(ae->action));
	json_object_set_new(res, "id", js(ae->object));
	json_object_set_new(o, "resource", res);
	json_t *ov = ae->before ? json_loads(ae->before, 0, NULL) : NULL;
	json_t *nv = ae->after ? json_loads(ae->after, 0, NULL) : NULL;
	json_object_set_new(o, "oldValue", ov ? ov : json_null());
	json_object_set_new(o, "newValue", nv ? nv : json_null());
	/* Newest first. */
	json_array_insert_new(arg, 0, o);
	return 0;
}

static void audit_logs(struct api *a, const struct api_req *q, struct api_resp *r)
{
	struct page p;
	long long since = 0;
	const char *v = q->arg(q->arg_cls, "since");
	if (get_page(q, &p, r) < 0)
		return;
	if (v && api_parse_time(v, &since) < 0) {
		fail(r, 400, E_BAD_REQUEST, "since is ISO 8601 or Unix seconds");
		return;
	}
	json_t *all = json_array();
	int e = mxf_rulesdb_audit_list(a->db, since, 0, audit_cb, all);
	if (e < 0) {
		json_decref(all);
		fail_db(r, e, "cannot read the audit log");
		return;
	}
	ok_page(r, all, &p);
}

/* ---- activity.db: the log and the analytics ---- */

static sqlite3 *activity_open(struct api *a, struct api_resp *r)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/activity.db", mxf_config_str(a->cfg, "main", "data_dir"));
	sqlite3 *s = NULL;
	if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		sqlite3_close(s);
		return NULL;
	}
	sqlite3_busy_timeout(s, 5000);
	(void)r;
	return s;
}

static json_t *col_json(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? js((const char *)t) : json_null();
}

static int time_args(const struct api_req *q, long long *since, long long *until,
		     struct api_resp *r)
{
	const char *v;
	if ((v = q->arg(q->arg_cls, "since")) && api_parse_time(v, since) < 0)
		return fail(r, 400, E_BAD_REQUEST, "since is ISO 8601 or Unix seconds"), -1;
	if ((v = q->arg(q->arg_cls, "until")) && api_parse_time(v, until) < 0)
		return fail(r, 400, E_BAD_REQUEST, "until is ISO 8601 or Unix seconds"), -1;
	return 0;
}

static void activity(struct api *a, const struct api_req *q, const struct zone *z,
		     struct api_resp *r)
{
	struct page p;
	long long since = 0, until = LLONG_MAX;
	if (get_page(q, &p, r) < 0 || time_args(q, &since, &until, r) < 0)
		return;
	const char *status = q->arg(q->arg_cls, "status"), *from = q->arg(q->arg_cls, "from"),
		   *to = q->arg(q->arg_cls, "to");
	char dom[MXF_DOMAIN_MAX + 3];
	snprintf(dom, sizeof(dom), "%%@%s", z->name);
	sqlite3 *s = activity_open(a, r);
	json_t *all = json_array();
	if (!s) { /* no mail yet */
		ok_page(r, all, &p);
		return;
	}
	sqlite3_stmt *st = NULL;
	/* Parameters only; the LIKE patterns are the user's substring.
	 * "queued": a deferred row whose copy has no final outcome logged since
	 * (delivered, failed, bounced); a retried copy that got through is no
	 * longer in the queue (the queue_id index keeps this a lookup). */
	const char *sql =
		"SELECT id, ts, queue_id, mail_from, rcpt, status, action, spf, dkim, dmarc, arc, "
		"  reply, client_ip, dest, message_id, subject, "
		"  status = 'deferred' AND NOT EXISTS (SELECT 1 FROM "
		"  activity b WHERE b.queue_id = activity.queue_id AND b.rcpt IS activity.rcpt "
		"  AND b.dest IS activity.dest AND b.id > activity.id AND b.status <> 'deferred') "
		"FROM activity WHERE rcpt LIKE ?1 AND ts >= ?2 AND ts <= ?3 "
		"  AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR instr(lower(mail_from), "
		"  lower(?5)) > 0) AND (?6 IS NULL OR instr(lower(rcpt), lower(?6)) > 0) "
		"ORDER BY id DESC LIMIT 10000";
	if (sqlite3_prepare_v2(s, sql, -1, &st, NULL) != SQLITE_OK) {
		mxf_warn("activity.db: %s", sqlite3_errmsg(s));
		sqlite3_close(s);
		json_decref(all);
		fail(r, 500, E_INTERNAL, "cannot read the activity log");
		return;
	}
	sqlite3_bind_text(st, 1, dom, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, since);
	sqlite3_bind_int64(st, 3, until);
	if (status)
		sqlite3_bind_text(st, 4, status, -1, SQLITE_TRANSIENT);
	if (from)
		sqlite3_bind_text(st, 5, from, -1, SQLITE_TRANSIENT);
	if (to)
		sqlite3_bind_text(st, 6, to, -1, SQLITE_TRANSIENT);
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *o = json_object();
		json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
		json_object_set_new(o, "datetime", jiso(sqlite3_column_int64(st, 1)));
		json_object_set_new(o, "queue_id", col_json(st, 2));
		json_object_set_new(o, "message_id", col_json(st, 14));
		json_object_set_new(o, "from", col_json(st, 3));
		json_object_set_new(o, "to", col_json(st, 4));
		json_object_set_new(o, "subject", col_json(st, 15));
		json_object_set_new(o, "status", col_json(st, 5));
		json_object_set_new(o, "action", col_json(st, 6));
		json_object_set_new(o, "spf", col_json(st, 7));
		json_object_set_new(o, "dkim", col_json(st, 8));
		json_object_set_new(o, "dmarc", col_json(st, 9));
		json_object_set_new(o, "arc", col_json(st, 10));
		json_object_set_new(o, "reply", col_json(st, 11));
		json_object_set_new(o, "client_ip", col_json(st, 12));
		json_object_set_new(o, "dest", col_json(st, 13));
		json_object_set_new(o, "queued", json_boolean(sqlite3_column_int(st, 16) != 0));
		json_array_append_new(all, o);
	}
	sqlite3_finalize(st);
	sqlite3_close(s);
	ok_page(r, all, &p);
}

static const char *const series_keys[] = {"received",        "forwarded", "dropped", "rejected",
					  "delivery_failed", "bounced"};
#define NSERIES (sizeof(series_keys) / sizeof(series_keys[0]))

static void analytics(struct api *a, const struct api_req *q, const struct zone *z,
		      struct api_resp *r)
{
	long long now = (long long)time(NULL), step = 3600;
	const char *v;
	if ((v = q->arg(q->arg_cls, "step")) && api_parse_uint(v, 60, 31 * 86400, &step) < 0) {
		fail(r, 400, E_BAD_REQUEST, "step is 60 to 2678400 seconds");
		return;
	}
	/* Default: the last day, in whole steps, the current one included. */
	long long until = (now / step + 1) * step, since = until - 86400;
	if (since % step)
		since -= since % step;
	if (time_args(q, &since, &until, r) < 0)
		return;
	if (until <= since || (until - since) / step > 5000) {
		fail(r, 400, E_BAD_REQUEST, "since must be before until, at most 5000 steps apart");
		return;
	}
	size_t nb = (size_t)((until - since + step - 1) / step);
	long long(*cnt)[NSERIES] = calloc(nb, sizeof(*cnt));
	if (!cnt) {
		fail(r, 500, E_INTERNAL, "out of memory");
		return;
	}
	char dom[MXF_DOMAIN_MAX + 3];
	snprintf(dom, sizeof(dom), "%%@%s", z->name);
	sqlite3 *s = activity_open(a, r);
	if (s) {
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(s,
				       "SELECT (ts - ?2) / ?4, status, sum(coalesce(count, 1)) "
				       "FROM activity WHERE rcpt LIKE ?1 AND ts >= ?2 AND ts < ?3 "
				       "GROUP BY 1, 2",
				       -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_text(st, 1, dom, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 2, since);
			sqlite3_bind_int64(st, 3, until);
			sqlite3_bind_int64(st, 4, step);
			while (sqlite3_step(st) == SQLITE_ROW) {
				long long b = sqlite3_column_int64(st, 0);
				const char *stt = (const char *)sqlite3_column_text(st, 1);
				long long n = sqlite3_column_int64(st, 2);
				if (b < 0 || (size_t)b >= nb || !stt)
					continue;
				for (size_t k = 1; k < NSERIES; k++)
					if (strcmp(stt, series_keys[k]) == 0)
						cnt[b][k] += n;
			}
		} else {
			mxf_warn("activity.db: %s", sqlite3_errmsg(s));
		}
		sqlite3_finalize(st);
		st = NULL;
		/* received: messages, in the bucket of their first row, as
		 * `mxferryctl stats` counts them. */
		if (sqlite3_prepare_v2(s,
				       "SELECT (m - ?2) / ?4, count(*) FROM (SELECT min(ts) AS m "
				       "FROM activity WHERE queue_id IS NOT NULL AND rcpt LIKE ?1 "
				       "GROUP BY queue_id HAVING m >= ?2 AND m < ?3) GROUP BY 1",
				       -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_text(st, 1, dom, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 2, since);
			sqlite3_bind_int64(st, 3, until);
			sqlite3_bind_int64(st, 4, step);
			while (sqlite3_step(st) == SQLITE_ROW) {
				long long b = sqlite3_column_int64(st, 0);
				if (b >= 0 && (size_t)b < nb)
					cnt[b][0] += sqlite3_column_int64(st, 1);
			}
		}
		sqlite3_finalize(st);
		sqlite3_close(s);
	}
	json_t *series = json_array(), *totals = json_object();
	long long tot[NSERIES] = {0};
	for (size_t i = 0; i < nb; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "ts", jiso(since + (long long)i * step));
		for (size_t k = 0; k < NSERIES; k++) {
			json_object_set_new(o, series_keys[k], json_integer(cnt[i][k]));
			tot[k] += cnt[i][k];
		}
		json_array_append_new(series, o);
	}
	for (size_t k = 0; k < NSERIES; k++)
		json_object_set_new(totals, series_keys[k], json_integer(tot[k]));
	free(cnt);
	json_t *o = json_object();
	json_object_set_new(o, "since", jiso(since));
	json_object_set_new(o, "until", jiso(until));
	json_object_set_new(o, "step", json_integer(step));
	json_object_set_new(o, "series", series);
	json_object_set_new(o, "totals", totals);
	ok(r, 200, o, NULL);
}

static bool allow(const struct api_req *q, const char *methods, struct api_resp *r);

/* ---- DNS: the records to publish and the live check (common/dnsrecords.c,
 * as `mxferryctl domain dns`) ---- */

static json_t *dns_record_json(const struct mxf_dnsrec *d)
{
	json_t *o = json_object();
	char name[600];
	snprintf(name, sizeof(name), "%s", d->name);
	if (name[0] && name[strlen(name) - 1] == '.')
		name[strlen(name) - 1] = '\0';
	json_object_set_new(o, "type", js(d->type));
	json_object_set_new(o, "name", js(name));
	if (d->kind == MXF_RK_MX) {
		/* "10 host." -> priority 10, content "host" */
		unsigned pref = 10;
		char host[300] = "";
		sscanf(d->value, "%u %299s", &pref, host);
		if (host[0] && host[strlen(host) - 1] == '.')
			host[strlen(host) - 1] = '\0';
		json_object_set_new(o, "content", js(host));
		json_object_set_new(o, "priority", json_integer(pref));
	} else {
		json_object_set_new(o, "content", js(d->value));
	}
	json_object_set_new(o, "ttl", json_integer(3600));
	return o;
}

static void dns_get(struct api *a, const struct api_req *q, const struct zone *z,
		    struct api_resp *r)
{
	size_t cap = 6 + 64, nkeys = 0;
	struct mxf_dnsrec *recs = calloc(cap, sizeof(*recs));
	if (!recs) {
		fail(r, 500, E_INTERNAL, "out of memory");
		return;
	}
	int n = mxf_dnsrec_build(a->cfg, a->db, z->name, recs, cap, &nkeys);
	if (n < 0) {
		free(recs);
		fail_db(r, n, "cannot read the DKIM keys");
		return;
	}
	char err[256];
	const char *live = q->arg(q->arg_cls, "check");
	bool check = !live || strcmp(live, "false") != 0;
	json_t *messages = json_array();
	if (check && mxf_dnsrec_check(a->cfg, recs, (size_t)n, err, sizeof(err)) < 0) {
		json_t *m = json_object();
		json_object_set_new(m, "code", json_integer(1));
		json_object_set_new(m, "message", js(err));
		json_array_append_new(messages, m);
	}
	static const char *const kind[] = {[MXF_RK_MX] = "mx",	     [MXF_RK_SPF] = "spf",
					   [MXF_RK_DMARC] = "dmarc", [MXF_RK_DKIM] = "dkim",
					   [MXF_RK_STS] = "mta-sts", [MXF_RK_TLSRPT] = "tls-rpt"};
	json_t *records = json_array(), *errors = json_array();
	for (int i = 0; i < n; i++) {
		/* MTA-STS and TLS-RPT are optional: listed, never an error. */
		bool optional = recs[i].kind == MXF_RK_STS || recs[i].kind == MXF_RK_TLSRPT;
		json_t *rec = dns_record_json(&recs[i]);
		json_object_set_new(rec, "note", js(recs[i].note));
		json_object_set_new(rec, "status", recs[i].status ? js(recs[i].status) : json_null());
		if (recs[i].found[0])
			json_object_set_new(rec, "found", js(recs[i].found));
		json_object_set_new(rec, "optional", json_boolean(optional));
		if (!optional && recs[i].status &&
		    (strcmp(recs[i].status, "missing") == 0 || strcmp(recs[i].status, "wrong") == 0)) {
			json_t *e = json_object();
			char code[40];
			snprintf(code, sizeof(code), "%s.%s", kind[recs[i].kind], recs[i].status);
			json_object_set_new(e, "code", json_string(code));
			json_object_set_new(e, "missing", dns_record_json(&recs[i]));
			json_array_append_new(errors, e);
		}
		json_array_append_new(records, rec);
	}
	free(recs);
	json_t *o = json_object();
	json_object_set_new(o, "record", records);
	json_object_set_new(o, "errors", errors);
	ok(r, 200, o, NULL);
	/* A resolver failure is said in messages, the envelope's own list. */
	if (json_array_size(messages))
		add_message(r, 1, json_string_value(json_object_get(json_array_get(messages, 0),
								    "message")));
	json_decref(messages);
}

/* ---- the queue, through the router (which alone reads the spool) ---- */

/* Each answer of the router holds what fits in one IPC message: ask again
 * from where it stopped until every message is here (at most 100,000). */
#define QUEUE_LIST_MAX 100000

static json_t *queue_fetch(struct api *a, const char *qid, struct api_resp *r)
{
	char why[600];
	uint64_t total = 0;
	const char *q[1] = {qid};
	json_t *arr = json_array();
	do {
		char *text = NULL;
		if (mxf_routerctl_queue(a->cfg, "list", q, qid ? 1 : 0, json_array_size(arr),
					&total, &text, why, sizeof(why)) < 0) {
			mxf_warn("queue list: %s", why);
			json_decref(arr);
			fail(r, 503, E_INTERNAL, "the router cannot be reached");
			return NULL;
		}
		json_t *part = json_loads(text, 0, NULL);
		free(text);
		if (!json_is_array(part)) {
			json_decref(part);
			json_decref(arr);
			fail(r, 500, E_INTERNAL, "malformed queue listing from the router");
			return NULL;
		}
		size_t got = json_array_size(part);
		json_array_extend(arr, part);
		json_decref(part);
		/* Nothing more (or the queue shrank meanwhile). */
		if (got == 0)
			break;
	} while (json_array_size(arr) < total && json_array_size(arr) < QUEUE_LIST_MAX);
	/* Times as ISO 8601, as everywhere in the API. */
	size_t i;
	json_t *m;
	json_array_foreach(arr, i, m)
	{
		json_t *t = json_object_get(m, "arrival");
		json_object_set_new(m, "arrival", jiso(json_integer_value(t)));
		t = json_object_get(m, "next_try");
		json_int_t nt = json_integer_value(t);
		json_object_set_new(m, "next_try", nt ? jiso(nt) : json_null());
	}
	return arr;
}

static void queue(struct api *a, const struct api_req *q, char **seg, size_t n,
		  struct api_resp *r)
{
	/* seg: "queue" [QID [ACTION]] */
	if (n == 1) {
		if (!allow(q, "GET", r))
			return;
		struct page p;
		const char *state = q->arg(q->arg_cls, "state");
		if (get_page(q, &p, r) < 0)
			return;
		if (state && strcmp(state, "active") != 0 && strcmp(state, "deferred") != 0 &&
		    strcmp(state, "hold") != 0) {
			fail(r, 400, E_BAD_REQUEST, "state is active, deferred or hold");
			return;
		}
		json_t *all = queue_fetch(a, NULL, r);
		if (!all)
			return;
		json_t *out = json_array();
		size_t i;
		json_t *m;
		json_array_foreach(all, i, m)
		{
			const char *st = json_string_value(json_object_get(m, "state"));
			if (!state || (st && strcmp(st, state) == 0))
				json_array_append(out, m);
		}
		json_decref(all);
		ok_page(r, out, &p);
		return;
	}
	const char *qid = seg[1];
	if (n == 2) {
		if (!allow(q, "GET DELETE", r))
			return;
	} else if (n == 3 && (strcmp(seg[2], "hold") == 0 || strcmp(seg[2], "release") == 0 ||
			      strcmp(seg[2], "retry") == 0)) {
		if (!allow(q, "POST", r))
			return;
	} else {
		fail(r, 404, E_NO_ROUTE, "no route for that URI");
		return;
	}
	if (!mxf_qid_valid(qid)) {
		fail(r, 404, E_NOT_FOUND, "no such message in the queue");
		return;
	}
	if (n == 2 && strcmp(q->method, "GET") == 0) {
		json_t *one = queue_fetch(a, qid, r);
		if (!one)
			return;
		if (json_array_size(one) == 0) {
			json_decref(one);
			fail(r, 404, E_NOT_FOUND, "no such message in the queue");
			return;
		}
		json_t *m = json_incref(json_array_get(one, 0));
		json_decref(one);
		ok(r, 200, m, NULL);
		return;
	}
	const char *op = n == 2 ? "delete" : seg[2];
	const char *qs[1] = {qid};
	uint64_t count = 0;
	char why[600];
	if (mxf_routerctl_queue(a->cfg, op, qs, 1, 0, &count, NULL, why, sizeof(why)) < 0) {
		mxf_warn("queue %s %s: %s", op, qid, why);
		fail(r, 503, E_INTERNAL, "the router cannot be reached");
		return;
	}
	if (count == 0) {
		fail(r, 404, E_NOT_FOUND, "no such message in the queue");
		return;
	}
	mxf_info("queue %s %s by token %s", op, qid, q->token_name);
	json_t *o = json_object();
	json_object_set_new(o, "id", js(qid));
	json_object_set_new(o, "operation", js(op));
	ok(r, 200, o, NULL);
}

/* ---- routing ---- */

#define MAX_SEG 10

static bool method_in(const char *m, const char *list)
{
	/* list: "GET PUT" */
	size_t n = strlen(m);
	for (const char *p = list; *p;) {
		size_t l = strcspn(p, " ");
		if (l == n && n && strncmp(p, m, n) == 0)
			return true;
		p += l;
		p += *p == ' ';
	}
	return false;
}

static bool is_write(const char *m)
{
	return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0;
}

/* Method check shared by every route: 405 for others, 403 for a read-only
 * token's write. */
static bool allow(const struct api_req *q, const char *methods, struct api_resp *r)
{
	if (!method_in(q->method, methods)) {
		fail(r, 405, E_METHOD, "method not allowed");
		return false;
	}
	if (is_write(q->method) && q->read_only) {
		fail(r, 403, E_READ_ONLY, "this token is read-only");
		return false;
	}
	return true;
}

static bool eq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

static void route(struct api *a, const struct api_req *q, char **seg, size_t n,
		  struct api_resp *r)
{
	char acct[33];
	if (n == 3 && eq(seg[0], "user") && eq(seg[1], "tokens") && eq(seg[2], "verify")) {
		if (!allow(q, "GET", r))
			return;
		json_t *o = json_object();
		json_object_set_new(o, "id", js(q->token_id));
		json_object_set_new(o, "status", json_string("active"));
		json_object_set_new(o, "name", js(q->token_name));
		json_object_set_new(o, "read_only", json_boolean(q->read_only));
		ok(r, 200, o, NULL);
		return;
	}
	if (n >= 1 && eq(seg[0], "zones")) {
		if (n == 1) {
			if (allow(q, "GET POST", r))
				zones(a, q, r);
			return;
		}
		struct zone z;
		if (n == 2) {
			if (allow(q, "GET DELETE", r) && find_zone(a, seg[1], &z, r) == 0)
				zone_one(a, q, &z, r);
			return;
		}
		if (n < 4 || !eq(seg[2], "email") || !eq(seg[3], "routing"))
			goto none;
		if (n == 4) {
			if (allow(q, "GET PUT PATCH", r) && find_zone(a, seg[1], &z, r) == 0)
				settings(a, q, &z, r);
			return;
		}
		if (n == 5 && eq(seg[4], "dns")) {
			if (!allow(q, "GET POST PATCH DELETE", r) || find_zone(a, seg[1], &z, r) < 0)
				return;
			if (eq(q->method, "POST"))
				settings_write(a, &z, 1, -1, r);
			else if (eq(q->method, "DELETE"))
				settings_write(a, &z, 0, -1, r);
			else if (eq(q->method, "PATCH"))
				settings_write(a, &z, -1, -1, r);
			else
				dns_get(a, q, &z, r);
			return;
		}
		if ((n == 5 || n == 6) && (eq(seg[4], "enable") || eq(seg[4], "disable"))) {
			/* The deprecated enable/disable endpoints. */
			if (allow(q, "POST", r) && find_zone(a, seg[1], &z, r) == 0)
				settings_write(a, &z, eq(seg[4], "enable") ? 1 : 0, -1, r);
			return;
		}
		if (n == 5 && eq(seg[4], "rules")) {
			if (allow(q, "GET POST", r) && find_zone(a, seg[1], &z, r) == 0)
				rules(a, q, &z, r);
			return;
		}
		if (n == 6 && eq(seg[4], "rules") && eq(seg[5], "catch_all")) {
			if (allow(q, "GET PUT", r) && find_zone(a, seg[1], &z, r) == 0)
				catch_all(a, q, &z, r);
			return;
		}
		if (n == 6 && eq(seg[4], "rules")) {
			if (allow(q, "GET PUT DELETE", r) && find_zone(a, seg[1], &z, r) == 0)
				rule_one(a, q, &z, seg[5], r);
			return;
		}
		if (n == 5 && eq(seg[4], "activity")) {
			if (allow(q, "GET", r) && find_zone(a, seg[1], &z, r) == 0)
				activity(a, q, &z, r);
			return;
		}
		if (n == 5 && eq(seg[4], "analytics")) {
			if (allow(q, "GET", r) && find_zone(a, seg[1], &z, r) == 0)
				analytics(a, q, &z, r);
			return;
		}
		goto none;
	}
	if (n >= 1 && eq(seg[0], "accounts")) {
		int e = mxf_rulesdb_account_id(a->db, acct);
		if (e < 0) {
			fail_db(r, e, "no account id");
			return;
		}
		if (n == 1) {
			if (!allow(q, "GET", r))
				return;
			json_t *arr = json_array(), *o = json_object();
			json_object_set_new(o, "id", json_string(acct));
			json_object_set_new(o, "name", json_string("mxferry"));
			json_array_append_new(arr, o);
			struct page p = {1, 20};
			ok_page(r, arr, &p);
			return;
		}
		if (!eq(seg[1], acct)) {
			fail(r, 404, E_NOT_FOUND, "account not found");
			return;
		}
		if (n == 3 && eq(seg[2], "audit_logs")) {
			if (allow(q, "GET", r))
				audit_logs(a, q, r);
			return;
		}
		if (n < 5 || !eq(seg[2], "email") || !eq(seg[3], "routing"))
			goto none;
		if (n == 5 && eq(seg[4], "addresses")) {
			if (allow(q, "GET POST", r))
				addresses(a, q, r);
			return;
		}
		if (n == 6 && eq(seg[4], "addresses")) {
			if (allow(q, "GET PATCH DELETE", r))
				address_one(a, q, seg[5], r);
			return;
		}
		if (n == 5 && eq(seg[4], "rules")) {
			if (allow(q, "GET", r))
				account_rules(a, q, r);
			return;
		}
		if (n >= 5 && n <= 7 && eq(seg[4], "queue")) {
			queue(a, q, seg + 4, n - 4, r);
			return;
		}
	}
none:
	fail(r, 404, E_NO_ROUTE, "no route for that URI");
}

void api_handle(struct api *a, const struct api_req *q, struct api_resp *r)
{
	r->status = 500;
	r->body = NULL;
	char *path = strdup(q->path);
	char *seg[MAX_SEG];
	size_t n = 0;
	bool too_many = false;
	if (!path) {
		fail(r, 500, E_INTERNAL, "out of memory");
		return;
	}
	char *save = NULL;
	for (char *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
		if (n == MAX_SEG) {
			too_many = true;
			break;
		}
		seg[n++] = t;
	}
	if (too_many)
		fail(r, 404, E_NO_ROUTE, "no route for that URI");
	else
		route(a, q, seg, n, r);
	free(path);
	if (!r->body) {
		r->status = 500;
		r->body = strdup("{\"success\":false,\"errors\":[{\"code\":10002,\"message\":"
				 "\"internal error\"}],\"messages\":[],\"result\":null}");
	}
}
