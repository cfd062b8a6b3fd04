#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/syscall.h>
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

/* capget/capset without libcap: version 3, two 32-bit words per set. */
static int caps_get(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	return syscall(SYS_capget, &h, d) < 0 ? -errno : 0;
}

bool mxf_privdrop_capable(void)
{
	struct __user_cap_data_struct d[2];
	const __u32 want = (1u << CAP_SETUID) | (1u << CAP_SETGID);
	return caps_get(d) == 0 && (d[0].effective & want) == want;
}

/* Empties the ambient, effective, permitted and inheritable sets: nothing
 * can be regained afterwards (the bounding set needs CAP_SETPCAP to shrink,
 * but with no_new_privs and nothing permitted it grants nothing). */
static int caps_clear(void)
{
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {{0, 0, 0}, {0, 0, 0}};
	if (syscall(SYS_capset, &h, d) < 0)
		return -errno;
	if (caps_get(d) < 0 || d[0].effective || d[1].effective || d[0].permitted ||
	    d[1].permitted || d[0].inheritable || d[1].inheritable)
		return -EPERM;
	return 0;
}

int mxf_privdrop(const char *user, const char *chroot_dir)
{
	return mxf_privdrop_as(user, NULL, chroot_dir);
}

int mxf_privdrop_as(const char *user, const char *group_of, const char *chroot_dir)
{
	if (user) {
		uid_t uid;
		gid_t gid;
		if (!mxf_privdrop_capable()) {
			mxf_err("privdrop: need root or CAP_SETUID+CAP_SETGID to become %s", user);
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
		uid_t ou;
		if (group_of && mxf_privdrop_lookup(group_of, &ou, &gid) < 0) {
			mxf_err("privdrop: no such user %s", group_of);
			return -ENOENT;
		}
		if (gid == 0) {
			mxf_err("privdrop: refusing to run with group 0");
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
		/* From root the kernel has cleared the capabilities with the uid
		 * change; from a capable service user it has not: clear them. */
		int r = caps_clear();
		if (r < 0) {
			mxf_err("privdrop: cannot clear capabilities: %s", strerror(-r));
			return r;
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
