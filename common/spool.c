#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queueid.h"

static const char *const dir_names[MXF_SD_COUNT] = {
	"tmp", "incoming", "active", "deferred", "hold", "corrupt", "msg"};

struct mxf_spool {
	int fd[MXF_SD_COUNT];
};

const char *mxf_spool_dir_name(enum mxf_spool_dir d)
{
	return (unsigned)d < MXF_SD_COUNT ? dir_names[d] : "?";
}

int mxf_spool_dirfd(const struct mxf_spool *sp, enum mxf_spool_dir d)
{
	return sp->fd[d];
}

/* ---- fault injection ---- */
static _Atomic unsigned fault_left[MXF_FAULT_NOPS];
static _Atomic int fault_err[MXF_FAULT_NOPS];

void mxf_spool_fault_set(enum mxf_spool_fault_op op, unsigned nth, int err)
{
	atomic_store(&fault_err[op], err);
	atomic_store(&fault_left[op], nth);
}

/* 0, or the injected errno when this call is the one chosen to fail. */
static int fault_hit(enum mxf_spool_fault_op op)
{
	unsigned v = atomic_load(&fault_left[op]);
	while (v > 0) {
		if (atomic_compare_exchange_weak(&fault_left[op], &v, v - 1))
			return v == 1 ? atomic_load(&fault_err[op]) : 0;
	}
	return 0;
}

static int sp_fsync(int fd)
{
	int e = fault_hit(MXF_FAULT_FSYNC);
	if (e)
		return -e;
	/* Not retried on EINTR-like failures: a failed fsync may have dropped
	 * the dirty pages, so a later success would prove nothing. */
	return fsync(fd) < 0 ? -errno : 0;
}

static int sp_write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		int e = fault_hit(MXF_FAULT_WRITE);
		if (e)
			return -e;
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int sp_rename(int fromfd, const char *from, int tofd, const char *to, unsigned flags)
{
	int e = fault_hit(MXF_FAULT_RENAME);
	if (e)
		return -e;
	return renameat2(fromfd, from, tofd, to, flags) < 0 ? -errno : 0;
}

/* ---- open/close ---- */
void mxf_spool_close(struct mxf_spool *sp)
{
	if (!sp)
		return;
	for (int i = 0; i < MXF_SD_COUNT; i++)
		if (sp->fd[i] >= 0)
			close(sp->fd[i]);
	free(sp);
}

int mxf_spool_open(const char *spool_dir, bool create, struct mxf_spool **out)
{
	struct mxf_spool *sp = calloc(1, sizeof(*sp));
	int r = 0;
	if (!sp)
		return -ENOMEM;
	for (int i = 0; i < MXF_SD_COUNT; i++)
		sp->fd[i] = -1;
	int top = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top < 0) {
		r = -errno;
		free(sp);
		return r;
	}
	struct stat st;
	/* Only create inside a directory we own: elsewhere the master made
	 * the layout and a missing directory is its problem to fix. */
	bool may_create = create && fstat(top, &st) == 0 && st.st_uid == geteuid();
	for (int i = 0; i < MXF_SD_COUNT; i++) {
		if (may_create && mkdirat(top, dir_names[i], 0700) < 0 && errno != EEXIST) {
			r = -errno;
			break;
		}
		sp->fd[i] = openat(top, dir_names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (sp->fd[i] < 0) {
			r = -errno;
			break;
		}
	}
	if (r == 0 && may_create)
		r = fsync(top) < 0 ? -errno : 0;
	close(top);
	if (r < 0) {
		mxf_spool_close(sp);
		return r;
	}
	*out = sp;
	return 0;
}

/* ---- receipt ---- */
#define ENVTMP_SIZE (MXF_QID_SIZE + 4)
static void env_tmp_name(char out[ENVTMP_SIZE], const char *qid)
{
	snprintf(out, ENVTMP_SIZE, "%s.env", qid);
}

int mxf_spool_create(struct mxf_spool *sp, const char *qid)
{
	if (!mxf_qid_valid(qid))
		return -EINVAL;
	int fd = openat(sp->fd[MXF_SD_TMP], qid, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			0600);
	return fd < 0 ? -errno : fd;
}

void mxf_spool_discard(struct mxf_spool *sp, const char *qid)
{
	char envtmp[ENVTMP_SIZE];
	if (!mxf_qid_valid(qid))
		return;
	env_tmp_name(envtmp, qid);
	unlinkat(sp->fd[MXF_SD_TMP], qid, 0);
	unlinkat(sp->fd[MXF_SD_TMP], envtmp, 0);
}

/* Writes e to tmp/QID.env and fsyncs it. */
static int write_env_tmp(struct mxf_spool *sp, const struct mxf_env *e)
{
	char envtmp[ENVTMP_SIZE], *buf;
	size_t len;
	int r = mxf_env_format(e, &buf, &len);
	if (r < 0)
		return r;
	env_tmp_name(envtmp, e->qid);
	int fd = openat(sp->fd[MXF_SD_TMP], envtmp,
			O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = -errno;
		free(buf);
		return r;
	}
	r = sp_write_all(fd, buf, len);
	free(buf);
	if (r == 0)
		r = sp_fsync(fd);
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		unlinkat(sp->fd[MXF_SD_TMP], envtmp, 0);
	return r;
}

int mxf_spool_commit(struct mxf_spool *sp, int content_fd, const struct mxf_env *e)
{
	char envtmp[ENVTMP_SIZE];
	const char *qid = e->qid;
	bool msg_made = false, env_made = false;
	int r;

	if (!mxf_qid_valid(qid))
		return -EINVAL;
	env_tmp_name(envtmp, qid);
	/* Content first, then the envelope that points at it: an envelope is
	 * only ever visible with its content already on disk. */
	if ((r = sp_fsync(content_fd)) < 0)
		goto fail;
	if ((r = write_env_tmp(sp, e)) < 0)
		goto fail;
	if ((r = sp_rename(sp->fd[MXF_SD_TMP], qid, sp->fd[MXF_SD_MSG], qid, RENAME_NOREPLACE)) < 0)
		goto fail;
	msg_made = true;
	if ((r = sp_rename(sp->fd[MXF_SD_TMP], envtmp, sp->fd[MXF_SD_INCOMING], qid,
			   RENAME_NOREPLACE)) < 0)
		goto fail;
	env_made = true;
	/* msg/ before incoming/: a crash between the two leaves at worst an
	 * orphan content file, which start-up removes. */
	if ((r = sp_fsync(sp->fd[MXF_SD_MSG])) < 0 || (r = sp_fsync(sp->fd[MXF_SD_INCOMING])) < 0)
		goto fail;
	return 0;
fail:
	/* The caller answers 4xx: take back everything, the envelope first. */
	if (env_made)
		unlinkat(sp->fd[MXF_SD_INCOMING], qid, 0);
	if (msg_made)
		unlinkat(sp->fd[MXF_SD_MSG], qid, 0);
	unlinkat(sp->fd[MXF_SD_TMP], qid, 0);
	unlinkat(sp->fd[MXF_SD_TMP], envtmp, 0);
	return r;
}

/* ---- state changes ---- */
static bool is_state(enum mxf_spool_dir d)
{
	return d == MXF_SD_INCOMING || d == MXF_SD_ACTIVE || d == MXF_SD_DEFERRED ||
	       d == MXF_SD_HOLD || d == MXF_SD_CORRUPT;
}

int mxf_spool_env_write(struct mxf_spool *sp, enum mxf_spool_dir d, const struct mxf_env *e)
{
	char envtmp[ENVTMP_SIZE];
	int r;
	if (!is_state(d) || !mxf_qid_valid(e->qid))
		return -EINVAL;
	if ((r = write_env_tmp(sp, e)) < 0)
		return r;
	env_tmp_name(envtmp, e->qid);
	/* rename(2) over the old file: a reader sees the old or the new
	 * envelope, never a mix. */
	if ((r = sp_rename(sp->fd[MXF_SD_TMP], envtmp, sp->fd[d], e->qid, 0)) < 0) {
		unlinkat(sp->fd[MXF_SD_TMP], envtmp, 0);
		return r;
	}
	return sp_fsync(sp->fd[d]);
}

int mxf_spool_move(struct mxf_spool *sp, const char *qid, enum mxf_spool_dir from,
		   enum mxf_spool_dir to)
{
	int r;
	if (!is_state(from) || !is_state(to) || !mxf_qid_valid(qid))
		return -EINVAL;
	if ((r = sp_rename(sp->fd[from], qid, sp->fd[to], qid, RENAME_NOREPLACE)) < 0)
		return r;
	if ((r = sp_fsync(sp->fd[to])) < 0)
		return r;
	return sp_fsync(sp->fd[from]);
}

int mxf_spool_remove(struct mxf_spool *sp, const char *qid, enum mxf_spool_dir d)
{
	if (!is_state(d) || !mxf_qid_valid(qid))
		return -EINVAL;
	/* No fsync: a removal lost in a crash only means a duplicate delivery
	 * (at least once), never a lost message. */
	if (unlinkat(sp->fd[d], qid, 0) < 0)
		return -errno;
	if (unlinkat(sp->fd[MXF_SD_MSG], qid, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int mxf_spool_to_corrupt(struct mxf_spool *sp, enum mxf_spool_dir d, const char *name)
{
	char dst[NAME_MAX + 1];
	int r = -EEXIST;
	if ((unsigned)d >= MXF_SD_COUNT || d == MXF_SD_CORRUPT || !*name || strchr(name, '/') ||
	    !strcmp(name, ".") || !strcmp(name, "..") || strlen(name) > NAME_MAX - 4)
		return -EINVAL;
	for (int i = 0; i < 1000 && r == -EEXIST; i++) {
		if (i == 0)
			snprintf(dst, sizeof(dst), "%s", name);
		else
			snprintf(dst, sizeof(dst), "%s.%d", name, i);
		r = sp_rename(sp->fd[d], name, sp->fd[MXF_SD_CORRUPT], dst, RENAME_NOREPLACE);
	}
	if (r < 0)
		return r;
	if ((r = sp_fsync(sp->fd[MXF_SD_CORRUPT])) < 0)
		return r;
	return sp_fsync(sp->fd[d]);
}

int mxf_spool_open_content(struct mxf_spool *sp, const char *qid)
{
	if (!mxf_qid_valid(qid))
		return -EINVAL;
	int fd = openat(sp->fd[MXF_SD_MSG], qid, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

int mxf_spool_clean_tmp(struct mxf_spool *sp)
{
	int fd = openat(sp->fd[MXF_SD_TMP], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *dir = fdopendir(fd);
	if (!dir) {
		int r = -errno;
		close(fd);
		return r;
	}
	int r = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(sp->fd[MXF_SD_TMP], de->d_name, 0) < 0 && errno != ENOENT)
			r = -errno;
	}
	closedir(dir);
	return r;
}
