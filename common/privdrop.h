/* privdrop: the one routine every daemon uses to give up root. */
#ifndef MXF_PRIVDROP_H
#define MXF_PRIVDROP_H

#include <sys/types.h>

int mxf_privdrop_lookup(const char *user, uid_t *uid, gid_t *gid);
/* As root: optionally chroot(chroot_dir), then setgroups(1, {gid}),
 * setresgid, setresuid to user, verify setuid(0) fails, then (root or not)
 * RLIMIT_CORE 0 and PR_SET_NO_NEW_PRIVS. user NULL keeps the current identity
 * (the development mode) and skips the chroot. Returns 0 or -errno. */
int mxf_privdrop(const char *user, const char *chroot_dir);

#endif
