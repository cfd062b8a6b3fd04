/* privdrop: the one routine every daemon uses to give up root. */
#ifndef MXF_PRIVDROP_H
#define MXF_PRIVDROP_H

#include <sys/types.h>

#include <stdbool.h>

int mxf_privdrop_lookup(const char *user, uid_t *uid, gid_t *gid);
/* Whether this process may take other identities: CAP_SETUID and CAP_SETGID
 * in its effective set. Root has them; so has the packaged master, which
 * runs as its own user with them as ambient capabilities (systemd). */
bool mxf_privdrop_capable(void);
/* When capable: optionally chroot(chroot_dir), then setgroups(1, {gid}),
 * setresgid, setresuid to user, clear every capability (a non-root master's
 * ambient ones are not cleared by the kernel on the uid change) and verify
 * none is left and setuid(0) fails; then (capable or not) RLIMIT_CORE 0 and
 * PR_SET_NO_NEW_PRIVS. user NULL keeps the current identity (the development
 * mode) and skips the chroot. Returns 0 or -errno. */
int mxf_privdrop(const char *user, const char *chroot_dir);
/* The same with the primary group of user group_of (NULL: user's own) as
 * the only group: apid shares the router's group to reach rules.db. */
int mxf_privdrop_as(const char *user, const char *group_of, const char *chroot_dir);

#endif
