#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

int mxf_privdrop_lookup(const char *user, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam(user);
	if (!pw)
		return -ENOENT;
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int mxf_privdrop(const char *user, const char *chroot_dir)
{
	if (user) {
		uid_t uid;
		gid_t gid;
		if (geteuid() != 0) {
			mxf_err("privdrop: must start as root to become %s", user);
			return -EPERM;
		}
		if (mxf_privdrop_lookup(user, &uid, &gid) < 0) {
			mxf_err("privdrop: no such user %s", user);
			return -ENOENT;
		}
		if (uid == 0) {
			mxf_err("privdrop: refusing to run as %s: it is uid 0", user);
			return -EPERM;
		}
		/* chroot before dropping root: it needs the privilege, and the
		 * daemon can no longer reach any file outside it afterwards. */
		if (chroot_dir && (chroot(chroot_dir) < 0 || chdir("/") < 0)) {
			int e = errno;
			mxf_err("privdrop: chroot %s: %s", chroot_dir, strerror(e));
			return -e;
		}
		if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 ||
		    setresuid(uid, uid, uid) < 0) {
			int e = errno;
			mxf_err("privdrop: cannot become %s: %s", user, strerror(e));
			return -e;
		}
		/* Belt and braces: if root can be regained, something is badly wrong. */
		if (setuid(0) == 0 || seteuid(0) == 0) {
			mxf_err("privdrop: could regain root after dropping it");
			abort();
		}
	}
	struct rlimit rl = {0, 0};
	if (setrlimit(RLIMIT_CORE, &rl) < 0)
		return -errno;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return 0;
}
