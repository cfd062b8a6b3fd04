/* mxferryctl internals shared by its source files. */
#ifndef MXF_CTL_H
#define MXF_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "config.h"

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

/* Commands (argv[0] is the first argument after the command words). */
int ctl_domain(const struct mxf_config *cfg, int argc, char **argv);
int ctl_address(const struct mxf_config *cfg, int argc, char **argv);
int ctl_rule(const struct mxf_config *cfg, int argc, char **argv);
int ctl_catchall(const struct mxf_config *cfg, int argc, char **argv);
int ctl_transport(const struct mxf_config *cfg, int argc, char **argv);
int ctl_queue(const struct mxf_config *cfg, int argc, char **argv);
int ctl_status(const struct mxf_config *cfg, int argc, char **argv);

#endif
