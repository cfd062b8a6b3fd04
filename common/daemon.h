/* daemon: start-up shared by the daemons the master runs (smtpd, router,
 * deliverd, bouncer): argument parsing, config, logging, privilege drop. */
#ifndef MXF_DAEMON_H
#define MXF_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Parses "-c CONFIG [-s]" (-s: log to syslog), loads the config, sets up
 * logging as NAME. Exits with a message on failure. */
struct mxf_config *mxf_daemon_init(int argc, char **argv, const char *name);

/* Drops privileges to [section] user, unless [main] run_as_invoking_user.
 * With chroot_private the daemon is jailed in spool_dir/private, where the
 * only entry is the router socket. sock receives the router socket path as
 * seen after the drop. Exits on failure. */
void mxf_daemon_drop(const struct mxf_config *cfg, const char *section, bool chroot_private,
		     char *sock, size_t socklen);

/* spool_dir/private/router, as seen without chroot. */
int mxf_daemon_router_sock(const struct mxf_config *cfg, char *out, size_t len);

#endif
