/* rulesdb: rules.db (SQLite), the routing configuration (DESIGN.md §4).
 * Writers (mxferryctl, later apid) go through the mxf_rulesdb_* calls, which
 * validate exactly as the router does when it loads; the router compiles the
 * whole set into a mxf_ruleset and never touches SQLite on a RCPT lookup.
 * Schema versioned with PRAGMA user_version; migrations run on a writable open. */
#ifndef MXF_RULESDB_H
#define MXF_RULESDB_H

#include <stdbool.h>
#include <stddef.h>

struct mxf_rulesdb;

/* Opens (creating when writable) path. Errors: negative errno, reason in err. */
int mxf_rulesdb_open(const char *path, bool writable, struct mxf_rulesdb **out, char *err,
		     size_t errlen);
void mxf_rulesdb_close(struct mxf_rulesdb *db);

/* Each write is one transaction. Domains accepted as U-labels or A-labels and
 * stored as A-labels; addresses normalised with mxf_addr_normalize.
 * -EEXIST duplicate, -ENOENT unknown domain/rule, -EINVAL invalid input,
 * -EPERM destination not verified. */
int mxf_rulesdb_domain_add(struct mxf_rulesdb *db, const char *domain, char *err, size_t errlen);
int mxf_rulesdb_address_add(struct mxf_rulesdb *db, const char *email, bool verified, char *err,
			    size_t errlen);
/* action "forward" (dests: 1..25 verified destination addresses) or "drop"
 * (ndest 0). tag_out (>= 33 bytes) receives the new rule's stable tag.
 * (The original literal-only interface; mxf_rulesdb_rule_create is the whole one.) */
int mxf_rulesdb_rule_add(struct mxf_rulesdb *db, const char *domain, const char *to,
			 const char *action, const char *const *dests, size_t ndest, char *tag_out,
			 char *err, size_t errlen);
int mxf_rulesdb_catchall_set(struct mxf_rulesdb *db, const char *domain, const char *action,
			     const char *const *dests, size_t ndest, char *err, size_t errlen);

/* A rule as written by an operator.
 *   matcher  "literal" (to: an address of the domain), "wildcard" (to: an address
 *            pattern whose local part holds one or more '*', each matching any run
 *            of characters, possibly empty), "all" (the catch-all; to unused)
 *   action   "forward" (dests: 1..25 verified addresses), "drop", "reject" (arg:
 *            the reason given with 550 5.7.1; stored sanitised to printable ASCII,
 *            1..200 characters), "worker" (arg: program name [A-Za-z0-9._-]{1,64}),
 *            "webhook" (arg: the URL, mxf_rulesdb_webhook_url_ok)
 *   priority 0..1000000, lower first; name: free text up to 200 bytes. */
struct mxf_rule_spec {
	const char *domain;
	const char *matcher;
	const char *to;
	const char *action;
	const char *const *dests;
	size_t ndest;
	const char *arg;
	const char *name;
	int priority;
	bool disabled;
	/* A second matcher, AND-ed with the first: the envelope sender, a
	 * comma-separated list of patterns of which any may match ("<>" the null
	 * sender; '*' any run of characters; ASCII-case-insensitive). NULL or "":
	 * any sender. Not for the catch-all. */
	const char *from;
	/* reject: the code (450, 451, 452, 550..554; 0: 550). */
	int code;
};
/* A webhook rule's URL (issue 13): http:// or https://, a non-empty rest,
 * at most MXF_WEBHOOK_URL_MAX characters of printable ASCII without spaces. */
#define MXF_WEBHOOK_URL_MAX 1000
bool mxf_rulesdb_webhook_url_ok(const char *url);
int mxf_rulesdb_rule_create(struct mxf_rulesdb *db, const struct mxf_rule_spec *s, char *tag_out,
			    char *err, size_t errlen);
/* Sets (creates or replaces in place, keeping its tag) the domain's catch-all;
 * s->matcher is ignored. */
int mxf_rulesdb_catchall_put(struct mxf_rulesdb *db, const struct mxf_rule_spec *s, char *err,
			     size_t errlen);
/* A rule named by its tag, or by its name when exactly one rule has it. */
int mxf_rulesdb_rule_remove(struct mxf_rulesdb *db, const char *which, char *err, size_t errlen);
int mxf_rulesdb_rule_enable(struct mxf_rulesdb *db, const char *which, bool enabled, char *err,
			    size_t errlen);
/* Changes a rule in place (it keeps its tag), validated as rule_create does:
 * NULL / -1 fields stay. matcher+to change what it matches (not for a
 * catch-all); action+dests/arg its action; enabled 0/1. */
struct mxf_rule_edit {
	const char *matcher, *to;
	const char *action;
	const char *const *dests;
	size_t ndest;
	const char *arg;
	const char *name;
	int priority; /* -1: keep */
	int enabled;  /* -1: keep */
	const char *from; /* NULL: keep; "": any sender */
	int code;         /* reject code; -1: keep (0 with a new action) */
};
int mxf_rulesdb_rule_edit(struct mxf_rulesdb *db, const char *which, const struct mxf_rule_edit *e,
			  char *err, size_t errlen);
/* Per-domain settings: "subaddressing" on|off; "unverified" defer|reject (what
 * a rule forwarding to an unverified destination does: queue and defer the copy
 * until verified, or refuse the recipient at RCPT); "dmarc" enforce|monitor|
 * default (whether smtpd refuses p=reject failures for this domain's
 * recipients; default: [auth] dmarc). */
int mxf_rulesdb_domain_set(struct mxf_rulesdb *db, const char *domain, const char *key,
			   const char *value, char *err, size_t errlen);
int mxf_rulesdb_address_verify(struct mxf_rulesdb *db, const char *email, bool verified,
			       char *err, size_t errlen);
/* Verification by mail: a new one-time token for an unverified address
 * (replacing any earlier one), valid ttl seconds; only its SHA-256 is stored.
 * -ENOENT: no such unverified address. */
#define MXF_TOKEN_SIZE 21
int mxf_rulesdb_address_token_new(struct mxf_rulesdb *db, const char *email, long long ttl,
				  char token[MXF_TOKEN_SIZE], char *err, size_t errlen);
/* Verifies the address when token is its current, unexpired token (compared
 * in constant time), which is then spent. -EACCES wrong or expired (one
 * message for both), -EALREADY verified already, -ENOENT unknown address. */
int mxf_rulesdb_address_verify_token(struct mxf_rulesdb *db, const char *email, const char *token,
				     char *err, size_t errlen);
/* Issue 8. A disabled domain is not ours for the router (550 5.7.1) but keeps
 * its rules. Removing a domain removes its rules. An address that is still a
 * rule's destination is not removed (-EBUSY). catchall_remove: -ENOENT when
 * the domain has none. */
int mxf_rulesdb_domain_enable(struct mxf_rulesdb *db, const char *domain, bool enabled,
			      char *err, size_t errlen);
int mxf_rulesdb_domain_remove(struct mxf_rulesdb *db, const char *domain, char *err,
			      size_t errlen);
int mxf_rulesdb_address_remove(struct mxf_rulesdb *db, const char *email, char *err,
			       size_t errlen);
int mxf_rulesdb_catchall_remove(struct mxf_rulesdb *db, const char *domain, char *err,
				size_t errlen);
/* Per-destination-domain next hop for deliverd: "host:port" or "[addr]:port". */
int mxf_rulesdb_transport_set(struct mxf_rulesdb *db, const char *domain, const char *nexthop,
			      char *err, size_t errlen);
int mxf_rulesdb_transport_remove(struct mxf_rulesdb *db, const char *domain, char *err,
				 size_t errlen);
/* ---- audit log (issue 8) ----
 * Every write above records, in its own transaction, who made it (the actor
 * set here: "unix:USER" for mxferryctl, "token:NAME" for the API), the action
 * ("domain.add", "rule.remove", ...), the object (domain, address, rule tag)
 * and JSON snapshots before and after (NULL: did not exist / removed). */
void mxf_rulesdb_set_actor(struct mxf_rulesdb *db, const char *who);
struct mxf_audit_entry {
	long long id, ts;
	const char *who, *action, *object;
	const char *before, *after; /* JSON text or NULL */
};
/* Entries with ts >= since, the newest limit of them (limit <= 0: all), oldest first. */
int mxf_rulesdb_audit_list(struct mxf_rulesdb *db, long long since, long long limit,
			   int (*cb)(const struct mxf_audit_entry *e, void *arg), void *arg);

/* DKIM keys (issue 7): the rows only; the private key files are the
 * caller's (mxferryctl writes them, the router reads them). Audited as
 * dkim.add / dkim.remove / dkim.enable / dkim.disable, object "DOMAIN SELECTOR". */
int mxf_rulesdb_dkim_add(struct mxf_rulesdb *db, const char *domain, const char *selector,
			 const char *alg, const char *public_key, bool enabled, char *err,
			 size_t errlen);
int mxf_rulesdb_dkim_remove(struct mxf_rulesdb *db, const char *domain, const char *selector,
			    char *err, size_t errlen);
int mxf_rulesdb_dkim_enable(struct mxf_rulesdb *db, const char *domain, const char *selector,
			    bool enabled, char *err, size_t errlen);
struct mxf_dkim_key_info {
	const char *domain, *selector, *algorithm; /* A-label; "rsa" / "ed25519" */
	const char *public_key; /* base64, as published in p= */
	bool enabled;
	long long created;
};
/* Every key (domain NULL) or one domain's, by domain and selector. */
int mxf_rulesdb_dkim_list(struct mxf_rulesdb *db, const char *domain,
			  int (*cb)(const struct mxf_dkim_key_info *k, void *arg), void *arg);

/* PRAGMA data_version: changes when another connection commits. */
int mxf_rulesdb_data_version(struct mxf_rulesdb *db, long long *v);

/* Listing: one call per rule, catch-alls included (matcher "all"). */
struct mxf_rule_info {
	const char *tag;
	const char *domain; /* A-label */
	const char *matcher; /* "literal", "wildcard" or "all" */
	const char *to;      /* the literal address or pattern, "" for all */
	const char *action;  /* "forward" / "drop" / "reject" / "worker" */
	const char *dests;   /* comma-separated, "" unless forward */
	const char *arg;     /* reject reason / worker program, else "" */
	const char *name;
	int priority;
	bool enabled;
	const char *from; /* sender patterns, comma-separated; "" any sender */
	int code;         /* reject code, 0: the default 550 */
};
int mxf_rulesdb_rule_list(struct mxf_rulesdb *db,
			  int (*cb)(const struct mxf_rule_info *r, void *arg), void *arg);

/* ---- the compiled rule set (router) ---- */
struct mxf_ruleset;
struct mxf_ruleset_opts {
	bool local_case_sensitive; /* default false: local parts compare ASCII-case-insensitively */
	const char *subaddr_sep;   /* characters that start a subaddress (default "+") */
};
int mxf_ruleset_load(struct mxf_rulesdb *db, struct mxf_ruleset **out, char *err, size_t errlen);
int mxf_ruleset_load_opts(struct mxf_rulesdb *db, const struct mxf_ruleset_opts *o,
			  struct mxf_ruleset **out, char *err, size_t errlen);
void mxf_ruleset_free(struct mxf_ruleset *rs);

enum mxf_route_kind {
	MXF_ROUTE_NO_DOMAIN, /* not one of our domains: 550 5.7.1 (no relaying) */
	MXF_ROUTE_NO_RULE,   /* our domain, no rule and no catch-all: 550 5.1.1 */
	MXF_ROUTE_FORWARD,
	MXF_ROUTE_DROP,
	MXF_ROUTE_REJECT, /* 550 5.7.1 text */
	MXF_ROUTE_WORKER, /* text: the program */
	MXF_ROUTE_WEBHOOK, /* text: the URL (issue 13) */
};
struct mxf_route {
	enum mxf_route_kind kind;
	const char *tag;  /* rule tag ("" when none) */
	size_t ndest;
	const char *const *dests; /* destinations, normalised */
	const bool *verified;     /* parallel to dests: verified when loaded */
	size_t nverified;
	bool refuse_unverified;   /* the domain refuses at RCPT rather than defer */
	const char *text;         /* reject reason or worker program, else "" */
	unsigned code;            /* reject: 550 (default) or the rule's code */
	const char *dmarc;        /* the domain's DMARC mode: "" ([auth] dmarc), "enforce", "monitor" */
};
/* addr: a normalised "local@a-label" address; sender: the envelope sender
 * ("" the null sender; NULL unknown: rules with a sender matcher do not
 * match). Evaluation: rules matching the whole address (literal and
 * wildcard, by priority, a literal first among equals, then the older rule)
 * whose sender matcher (if any) admits the sender; with subaddressing on,
 * then those matching the address without its subaddress; then the
 * catch-all. Pointers in out live as long as rs. */
int mxf_ruleset_lookup(const struct mxf_ruleset *rs, const char *addr, const char *sender,
		       struct mxf_route *out);
size_t mxf_ruleset_count(const struct mxf_ruleset *rs);
/* Whether a destination address is verified in this snapshot. */
bool mxf_ruleset_dest_verified(const struct mxf_ruleset *rs, const char *addr);
/* The transport next hop for a destination domain (A-label), or NULL. */
const char *mxf_ruleset_nexthop(const struct mxf_ruleset *rs, const char *domain);

/* ---- allow and block lists (issue 11; common/access.h) ----
 * list "allow" or "block"; value an IP address or CIDR range, a domain or a
 * sender address, stored normalised (mxf_access_parse); reason (block: given
 * in the refusal) printable ASCII up to 200 characters. Audited as
 * "block.add", "allow.remove", ... -EEXIST: already listed; -ENOENT: not listed. */
int mxf_rulesdb_access_add(struct mxf_rulesdb *db, const char *list, const char *value,
			   const char *reason, char *err, size_t errlen);
int mxf_rulesdb_access_remove(struct mxf_rulesdb *db, const char *list, const char *value,
			      char *err, size_t errlen);
struct mxf_access_entry {
	const char *list, *kind, *value, *reason;
	long long created;
};
/* Entries of list (NULL: both), ordered by list, kind, value. */
int mxf_rulesdb_access_list(struct mxf_rulesdb *db, const char *list,
			    int (*cb)(const struct mxf_access_entry *e, void *arg), void *arg);
/* ---- workers (issue 13) ----
 * A worker: name [A-Za-z0-9._-]{1,64}; runtime "js" (source: an ES module of
 * at most 48 KiB) or "program" (path: an absolute path); env: "KEY=VALUE"
 * (KEY [A-Za-z_][A-Za-z0-9_]{0,63}, not starting with MXF_; VALUE printable,
 * at most 1024 bytes; at most 32); timeout 1..120 s (0: the default, 30).
 * add: -EEXIST when the name exists (replace: true overwrites it in place).
 * remove: -ENOENT unknown, -EBUSY while a rule names it. */
struct mxf_worker_spec {
	const char *name, *runtime, *path, *source;
	const char *const *env;
	size_t nenv;
	int timeout;
	bool network; /* may open Internet sockets (default: no) */
};
int mxf_rulesdb_worker_add(struct mxf_rulesdb *db, const struct mxf_worker_spec *w, bool replace,
			   char *err, size_t errlen);
int mxf_rulesdb_worker_remove(struct mxf_rulesdb *db, const char *name, char *err, size_t errlen);
struct mxf_worker_info {
	const char *name, *runtime, *path, *source;
	const char *env; /* JSON object */
	const char *env_lines; /* the same as "KEY=VALUE" lines */
	int timeout;
	long long created;
	int rules; /* rules naming it */
	bool network;
};
int mxf_rulesdb_worker_list(struct mxf_rulesdb *db,
			    int (*cb)(const struct mxf_worker_info *w, void *arg), void *arg);
/* A loaded worker definition (pointers live as long as the rule set). */
struct mxf_ruleset_worker {
	const char *name, *runtime, *path, *source;
	const char *const *env; /* "KEY=VALUE" */
	size_t nenv;
	unsigned timeout;
	bool network;
};
const struct mxf_ruleset_worker *mxf_ruleset_worker(const struct mxf_ruleset *rs,
						    const char *name);
#define MXF_WORKER_DEFAULT_TIMEOUT 30
#define MXF_WORKER_MAX_TIMEOUT 120
#define MXF_WORKER_MAX_SOURCE 49152

/* ---- the REST API (issue 12) ---- */
/* The installation's id (account_id): 32 hex, made by migration 13. */
int mxf_rulesdb_account_id(struct mxf_rulesdb *db, char out[33]);
struct mxf_domain_info {
	const char *id; /* stable 32 hex (zone_id) */
	const char *name; /* A-label */
	bool enabled, subaddressing;
	long long created;
	const char *unverified, *dmarc;
};
int mxf_rulesdb_domain_list(struct mxf_rulesdb *db,
			    int (*cb)(const struct mxf_domain_info *d, void *arg), void *arg);
struct mxf_address_info {
	const char *id; /* stable 32 hex */
	const char *email;
	bool verified;
	long long created;
};
int mxf_rulesdb_address_list(struct mxf_rulesdb *db,
			     int (*cb)(const struct mxf_address_info *a, void *arg), void *arg);
/* Settings of the API's PUT/PATCH in one transaction (audited domain.set):
 * enabled and subaddressing 0/1, -1 keeps. -ENOENT unknown domain. */
int mxf_rulesdb_domain_update(struct mxf_rulesdb *db, const char *domain, int enabled,
			      int subaddressing, char *err, size_t errlen);
/* API tokens: NAME [A-Za-z0-9._-]{1,64}; the secret ("mxf_" + 64 hex, 256
 * random bits) is returned once and only its SHA-256 stored. Audited as
 * token.add / token.remove. check: 0 and the token's id, name and scope, or
 * -EACCES (every row compared in constant time). */
#define MXF_API_TOKEN_SIZE 69
int mxf_rulesdb_token_add(struct mxf_rulesdb *db, const char *name, bool read_only,
			  char secret[MXF_API_TOKEN_SIZE], char id[33], char *err, size_t errlen);
int mxf_rulesdb_token_remove(struct mxf_rulesdb *db, const char *name, char *err, size_t errlen);
struct mxf_api_token {
	const char *id, *name;
	bool read_only;
	long long created;
};
int mxf_rulesdb_token_list(struct mxf_rulesdb *db,
			   int (*cb)(const struct mxf_api_token *t, void *arg), void *arg);
int mxf_rulesdb_token_check(struct mxf_rulesdb *db, const char *secret, char id[33],
			    char name[65], bool *read_only);

#endif
