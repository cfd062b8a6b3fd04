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
 * (ndest 0). tag_out (>= 33 bytes) receives the new rule's stable tag. */
int mxf_rulesdb_rule_add(struct mxf_rulesdb *db, const char *domain, const char *to,
			 const char *action, const char *const *dests, size_t ndest, char *tag_out,
			 char *err, size_t errlen);
int mxf_rulesdb_catchall_set(struct mxf_rulesdb *db, const char *domain, const char *action,
			     const char *const *dests, size_t ndest, char *err, size_t errlen);

/* Listing: one call per rule, catch-alls included (matcher "all"). */
struct mxf_rule_info {
	const char *tag;
	const char *domain; /* A-label */
	const char *matcher; /* "literal" or "all" */
	const char *to;      /* the literal address, "" for all */
	const char *action;  /* "forward" / "drop" */
	const char *dests;   /* comma-separated, "" for drop */
	int priority;
	bool enabled;
};
int mxf_rulesdb_rule_list(struct mxf_rulesdb *db,
			  int (*cb)(const struct mxf_rule_info *r, void *arg), void *arg);

/* ---- the compiled rule set (router) ---- */
struct mxf_ruleset;
int mxf_ruleset_load(struct mxf_rulesdb *db, struct mxf_ruleset **out, char *err, size_t errlen);
void mxf_ruleset_free(struct mxf_ruleset *rs);

enum mxf_route_kind {
	MXF_ROUTE_NO_DOMAIN, /* not one of our domains: 550 5.1.1 (no relaying) */
	MXF_ROUTE_NO_RULE,   /* our domain, no rule and no catch-all: 550 5.1.1 */
	MXF_ROUTE_FORWARD,
	MXF_ROUTE_DROP,
};
struct mxf_route {
	enum mxf_route_kind kind;
	const char *tag;  /* rule tag ("" when none) */
	size_t ndest;
	const char *const *dests; /* verified destinations, normalised */
};
/* addr: a normalised "local@a-label" address. Local parts compare
 * case-insensitively. Pointers in out live as long as rs. */
int mxf_ruleset_lookup(const struct mxf_ruleset *rs, const char *addr, struct mxf_route *out);
size_t mxf_ruleset_count(const struct mxf_ruleset *rs);

#endif
