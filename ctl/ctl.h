/* mxferryctl internals shared by its source files. */
#ifndef MXF_CTL_H
#define MXF_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "queueid.h"

/* Exit codes: 0 done, 1 refused (one line on stderr), 2 usage. */
enum { CTL_OK = 0, CTL_REFUSED = 1, CTL_USAGE = 2 };

/* Prints "mxferryctl: ..." on stderr and returns CTL_REFUSED. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ctl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the usage on stderr and returns CTL_USAGE. */
int ctl_usage(void);

/* For showing strings from the spool or the network on a terminal: copies
 * src into dst, escaping ASCII controls, DEL, backslash and C1 controls as
 * \xHH, keeping other UTF-8 as is. Returns dst. */
char *ctl_safe(char *dst, size_t cap, const char *src);
/* "YYYY-MM-DD HH:MM:SS" local time. */
void ctl_time(char *dst, size_t cap, time_t t);

/* A text table with columns padded to the widest cell (UTF-8 aware). */
struct ctl_table;
struct ctl_table *ctl_table_new(size_t ncol, const char *const *header);
/* Copies the ncol cells. Aborts on out-of-memory (a CLI has nothing better to do). */
void ctl_table_add(struct ctl_table *t, const char *const *cells);
size_t ctl_table_rows(const struct ctl_table *t);
void ctl_table_print(const struct ctl_table *t);
void ctl_table_free(struct ctl_table *t);

/* --json given: commands print one JSON document on stdout instead of text. */
extern bool ctl_json;
void ctl_json_string(FILE *f, const char *s);
/* A streaming JSON writer on stdout: key is NULL inside arrays (and for the
 * outermost value); the outermost cj_end prints a newline. */
void cj_begin(const char *key, bool array);
void cj_end(bool array);
void cj_str(const char *key, const char *v); /* NULL: null */
void cj_int(const char *key, long long v);
void cj_bool(const char *key, bool v);
void cj_raw(const char *key, const char *json); /* already JSON; NULL or "": null */
/* Seconds since the epoch as "2026-01-02T03:04:05Z" (UTC). */
void ctl_iso(char *dst, size_t cap, time_t t);
/* Parses a time for --since/--until: "30m", "2h", "7d", "90s" ago, an epoch
 * number with '@', or "YYYY-MM-DD[ HH:MM[:SS]]" / "...T..." local time. */
int ctl_parse_time(const char *s, time_t *out);
/* "30m", "2h", "1d", "45s" or plain seconds. */
int ctl_parse_duration(const char *s, long long *out);

/* Commands (argv[0] is the first argument after the command words). */
/* ---- the router's control socket (common/routerctl.c) ---- */
#include "routerctl.h"
#define CTL_ROUTER_TIMEOUT_MS MXF_ROUTERCTL_TIMEOUT_MS
#define ctl_router_open mxf_routerctl_open
#define ctl_router_call mxf_routerctl_call
#define ctl_router_submit mxf_routerctl_submit

int ctl_domain(const struct mxf_config *cfg, int argc, char **argv);
int ctl_address(const struct mxf_config *cfg, int argc, char **argv);
int ctl_rule(const struct mxf_config *cfg, int argc, char **argv);
int ctl_catchall(const struct mxf_config *cfg, int argc, char **argv);
int ctl_transport(const struct mxf_config *cfg, int argc, char **argv);
int ctl_queue(const struct mxf_config *cfg, int argc, char **argv);
int ctl_status(const struct mxf_config *cfg, int argc, char **argv);
int ctl_audit(const struct mxf_config *cfg, int argc, char **argv);
int ctl_check(const struct mxf_config *cfg, int argc, char **argv);
int ctl_log(const struct mxf_config *cfg, int argc, char **argv);
int ctl_stats(const struct mxf_config *cfg, int argc, char **argv);
/* dkim.c: keys (dkim keygen|list|remove|enable|disable) and `domain dns`. */
int ctl_dkim(const struct mxf_config *cfg, int argc, char **argv);
int ctl_domain_dns(const struct mxf_config *cfg, int argc, char **argv);
/* rules.c, shared with dkim.c: rules.db opened as the other commands open it
 * (0 or CTL_REFUSED, said already); who owns the router's files; RELOAD. */
struct mxf_rulesdb;
int ctl_db_open(const struct mxf_config *cfg, bool writable, struct mxf_rulesdb **h);
int ctl_owner(const struct mxf_config *cfg, bool *give, uid_t *uid, gid_t *gid);
void ctl_reload_router(const struct mxf_config *cfg);
/* Issue 11: the operator's block and allow lists in rules.db. */
int ctl_block(const struct mxf_config *cfg, int argc, char **argv);
int ctl_allow(const struct mxf_config *cfg, int argc, char **argv);
/* token.c (issue 12): the API's tokens. */
int ctl_token(const struct mxf_config *cfg, int argc, char **argv);
/* worker.c (issue 13) */
int ctl_worker(const struct mxf_config *cfg, int argc, char **argv);
bool ctl_worker_defined(const struct mxf_config *cfg, const char *name);

#endif
