/* listen: the master binds every [smtpd] listen address before any daemon
 * starts, so an unprivileged smtpd can serve port 25. */
#ifndef MXF_MASTER_LISTEN_H
#define MXF_MASTER_LISTEN_H

#include <stddef.h>

/* Parses "addr:port,[v6]:port,..." and binds a listening TCP socket for each.
 * Fills fds (at most max) and returns the count, or -errno with err set. */
int mxf_listen_bind_all(const char *spec, int *fds, size_t max, char *err, size_t errlen);

/* Binds one "addr:port" (key names the setting in errors). Returns the
 * listening socket or -errno with err set. */
int mxf_listen_bind_one(const char *item, const char *key, char *err, size_t errlen);

#endif
