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

/* Spare envelope files: a removed message's envelope is renamed to
 * tmp/spare.N instead of unlinked, and the next envelope is written over it
 * in place and renamed from there to where it goes: no file made, no block
 * freed and allocated again, one rename. On ext4 without a journal every new inode is searched for past
 * the inodes freed in the last minutes, a cost that grows with the mail
 * flow; reusing envelope inodes halves the files made and freed per
 * message. Only envelopes: a content file may still be open elsewhere
 * (deliverd, the bouncer), an envelope only in mxferryctl, which checks what
 * it reads. Slots are claimed with atomics (the router's pool threads). */
#define SPARES 256
enum { SPARE_EMPTY, SPARE_BUSY, SPARE_FULL };

/* Spare content files (tmp/spare.cN): the content of a message the router
 * removes after every delivery of it reported back — no descriptor to it
 * left outside the router (see mxf_spool_remove) — is kept too, and the
 * next queue file is that inode renamed into msg/ and truncated. */
struct mxf_spool {
	int fd[MXF_SD_COUNT];
	_Atomic int spare[SPARES];
	_Atomic int cspare[SPARES];
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

static int sp_sync(int fd, bool data_only)
{
	int e = fault_hit(MXF_FAULT_FSYNC);
	if (e)
		return -e;
	/* Not retried on EINTR-like failures: a failed fsync may have dropped
	 * the dirty pages, so a later success would prove nothing. */
	return (data_only ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

static int sp_fsync(int fd)
{
	return sp_sync(fd, false);
}

/* A file's data and what it takes to read it back (its size, its blocks),
 * not its times: enough before the rename that publishes it, and an
 * envelope written over a spare of the same size costs one block write. */
static int sp_fdatasync(int fd)
{
	return sp_sync(fd, true);
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

static void spare_name(char out[16], unsigned i)
{
	snprintf(out, 16, "spare.%u", i);
}

static void cspare_name(char out[16], unsigned i)
{
	snprintf(out, 16, "spare.c%u", i);
}

/* Claims a slot of slots in state from (-> SPARE_BUSY); -1 if none. */
static int slot_claim(_Atomic int *slots, int from)
{
	for (unsigned i = 0; i < SPARES; i++) {
		int v = from;
		if (atomic_load(&slots[i]) == from &&
		    atomic_compare_exchange_strong(&slots[i], &v, SPARE_BUSY))
			return (int)i;
	}
	return -1;
}

static int spare_claim(struct mxf_spool *sp, int from)
{
	return slot_claim(sp->spare, from);
}

/* Keeps d/NAME as a spare of slots (moved out of d/ to tmp/); false: the
 * caller unlinks. */
static bool slot_keep(struct mxf_spool *sp, _Atomic int *slots, void (*namef)(char *, unsigned),
		      enum mxf_spool_dir d, const char *name)
{
	int i = slot_claim(slots, SPARE_EMPTY);
	char sn[16];
	if (i < 0)
		return false;
	namef(sn, (unsigned)i);
	/* RENAME_NOREPLACE: a leftover of a crash is never overwritten. */
	bool ok = renameat2(sp->fd[d], name, sp->fd[MXF_SD_TMP], sn, RENAME_NOREPLACE) == 0;
	atomic_store(&slots[i], ok ? SPARE_FULL : SPARE_EMPTY);
	return ok;
}

static bool spare_keep(struct mxf_spool *sp, enum mxf_spool_dir d, const char *name)
{
	return slot_keep(sp, sp->spare, spare_name, d, name);
}

/* A spare content file renamed to msg/QID; -1 if none. Not emptied: the
 * new content is written over the old from offset 0 and the caller cuts the
 * file to its length at the commit (freeing blocks here cost ~0.1 ms on a
 * file system mounted with discard, and usually the next message needs
 * about as many). The descriptor is write-only: the old bytes cannot be
 * read through it. */
static int cspare_take(struct mxf_spool *sp, const char *qid)
{
	int i = slot_claim(sp->cspare, SPARE_FULL), fd = -1;
	char sn[16];
	if (i < 0)
		return -1;
	cspare_name(sn, (unsigned)i);
	if (renameat2(sp->fd[MXF_SD_TMP], sn, sp->fd[MXF_SD_MSG], qid, RENAME_NOREPLACE) < 0) {
		unlinkat(sp->fd[MXF_SD_TMP], sn, 0);
	} else {
		fd = openat(sp->fd[MXF_SD_MSG], qid, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			unlinkat(sp->fd[MXF_SD_MSG], qid, 0);
	}
	atomic_store(&sp->cspare[i], SPARE_EMPTY);
	return fd;
}

int mxf_spool_create(struct mxf_spool *sp, const char *qid, bool *reuse)
{
	if (!mxf_qid_valid(qid))
		return -EINVAL;
	/* Received in place: never renamed, so no directory entry to move and
	 * fsync again. Until an envelope names it, it is an orphan, which
	 * start-up removes. A spare inode renamed here is such an entry as
	 * much as a new file is (the msg/ fsync before the commit covers it). */
	int fd = reuse && *reuse ? cspare_take(sp, qid) : -1;
	if (fd >= 0)
		return fd;
	if (reuse)
		*reuse = false;
	fd = openat(sp->fd[MXF_SD_MSG], qid, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		    0600);
	return fd < 0 ? -errno : fd;
}

void mxf_spool_discard(struct mxf_spool *sp, const char *qid)
{
	char envtmp[ENVTMP_SIZE];
	if (!mxf_qid_valid(qid))
		return;
	env_tmp_name(envtmp, qid);
	unlinkat(sp->fd[MXF_SD_MSG], qid, 0);
	unlinkat(sp->fd[MXF_SD_TMP], envtmp, 0);
}

/* Where an envelope waits to be published: a spare (slot >= 0, written over
 * in place) or a new tmp/QID.env (slot -1). */
struct envtmp {
	char name[32];
	int slot;
};
_Static_assert(ENVTMP_SIZE <= 32, "tmp/QID.env fits struct envtmp and the commit item");

/* Removes an envelope that will not be published; frees its spare slot. */
static void envtmp_drop(struct mxf_spool *sp, const struct envtmp *t)
{
	unlinkat(sp->fd[MXF_SD_TMP], t->name, 0);
	if (t->slot >= 0)
		atomic_store(&sp->spare[t->slot], SPARE_EMPTY);
}

/* The envelope left tmp/ under its name: its spare slot is free again. */
static void envtmp_gone(struct mxf_spool *sp, const struct envtmp *t)
{
	if (t->slot >= 0)
		atomic_store(&sp->spare[t->slot], SPARE_EMPTY);
}

/* Opens a spare to write over (its slot stays busy until the envelope is
 * published or dropped), else creates tmp/QID.env. */
static int envtmp_open(struct mxf_spool *sp, const char *qid, struct envtmp *t)
{
	int i = spare_claim(sp, SPARE_FULL), fd = -1;
	if (i >= 0) {
		spare_name(t->name, (unsigned)i);
		fd = openat(sp->fd[MXF_SD_TMP], t->name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			unlinkat(sp->fd[MXF_SD_TMP], t->name, 0);
			atomic_store(&sp->spare[i], SPARE_EMPTY);
			i = -1;
		}
	}
	t->slot = i;
	if (fd >= 0)
		return fd;
	env_tmp_name(t->name, qid);
	fd = openat(sp->fd[MXF_SD_TMP], t->name,
		    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	return fd < 0 ? -errno : fd;
}

/* Writes e into a spare or tmp/QID.env (named in t) and syncs its data. On
 * failure nothing is left and *fsync_failed says whether the sync failed. */
static int write_env_tmp(struct mxf_spool *sp, const struct mxf_env *e, struct envtmp *t,
			 bool *fsync_failed)
{
	char *buf;
	size_t len;
	*fsync_failed = false;
	int r = mxf_env_format(e, &buf, &len);
	if (r < 0)
		return r;
	int fd = envtmp_open(sp, e->qid, t);
	if (fd < 0) {
		free(buf);
		return fd;
	}
	r = sp_write_all(fd, buf, len);
	free(buf);
	/* A spare's older, longer envelope must not leave its tail behind. */
	if (r == 0 && t->slot >= 0 && ftruncate(fd, (off_t)len) < 0)
		r = -errno;
	if (r == 0 && (r = sp_fdatasync(fd)) < 0)
		*fsync_failed = true;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		envtmp_drop(sp, t);
	return r;
}

/* Takes back everything of one message of a batch, the envelope first. */
static void batch_undo(struct mxf_spool *sp, enum mxf_spool_dir to,
		       const struct mxf_spool_commit_item *it)
{
	if (it->made)
		unlinkat(sp->fd[to], it->e->qid, 0);
	unlinkat(sp->fd[MXF_SD_MSG], it->e->qid, 0);
	if (!it->made && it->env_written) {
		struct envtmp t = {.slot = it->env_slot};
		memcpy(t.name, it->env_tmp, sizeof(t.name));
		envtmp_drop(sp, &t);
	}
}

int mxf_spool_sync_content(struct mxf_spool *sp, int content_fd, bool *fsync_failed)
{
	(void)sp;
	int r = sp_fdatasync(content_fd);
	*fsync_failed = r < 0;
	return r;
}

int mxf_spool_write_env(struct mxf_spool *sp, struct mxf_spool_commit_item *it,
			bool *fsync_failed)
{
	struct envtmp t;
	*fsync_failed = false;
	it->env_written = false;
	if (!mxf_qid_valid(it->e->qid))
		return -EINVAL;
	int r = write_env_tmp(sp, it->e, &t, fsync_failed);
	if (r == 0) {
		memcpy(it->env_tmp, t.name, sizeof(it->env_tmp));
		it->env_slot = t.slot;
		it->env_written = true;
	}
	return r;
}

int mxf_spool_sync_dir(struct mxf_spool *sp, enum mxf_spool_dir d)
{
	if ((unsigned)d >= MXF_SD_COUNT)
		return -EINVAL;
	return sp_fsync(sp->fd[d]);
}

int mxf_spool_commit_publish(struct mxf_spool *sp, enum mxf_spool_dir to,
			     struct mxf_spool_commit_item *it, size_t n)
{
	int fsync_err = 0, r;
	size_t nok = 0;

	if (to != MXF_SD_INCOMING && to != MXF_SD_ACTIVE)
		return -EINVAL;
	/* A failed fsync fails the whole batch: after one, the state of the
	 * page cache is unknown, and it is never retried. */
	for (size_t i = 0; i < n && !fsync_err; i++)
		if (it[i].fsync_failed)
			fsync_err = it[i].result < 0 ? it[i].result : -EIO;
	for (size_t i = 0; i < n; i++) {
		it[i].made = 0;
		if (fsync_err || it[i].result < 0 || !mxf_qid_valid(it[i].e->qid) ||
		    !it[i].env_written)
			continue;
		r = sp_rename(sp->fd[MXF_SD_TMP], it[i].env_tmp, sp->fd[to], it[i].e->qid,
			      RENAME_NOREPLACE);
		if (r == 0) {
			struct envtmp t = {.slot = it[i].env_slot};
			envtmp_gone(sp, &t);
			it[i].made = 1;
			nok++;
		}
		it[i].result = r;
	}
	/* The state directory once for the whole batch. */
	if (!fsync_err && nok > 0 && (r = sp_fsync(sp->fd[to])) < 0)
		fsync_err = r;
	for (size_t i = 0; i < n; i++) {
		if (fsync_err)
			it[i].result = fsync_err;
		if (it[i].result < 0 && mxf_qid_valid(it[i].e->qid))
			batch_undo(sp, to, &it[i]);
	}
	return fsync_err;
}

int mxf_spool_commit_batch(struct mxf_spool *sp, enum mxf_spool_dir to,
			   struct mxf_spool_commit_item *it, size_t n)
{
	int r = 0;
	if (to != MXF_SD_INCOMING && to != MXF_SD_ACTIVE)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		it[i].result = mxf_qid_valid(it[i].e->qid) ? 0 : -EINVAL;
		it[i].fsync_failed = false;
		it[i].env_written = false;
		if (it[i].result == 0)
			it[i].result = mxf_spool_sync_content(sp, it[i].content_fd,
							      &it[i].fsync_failed);
		if (it[i].result == 0)
			it[i].result = mxf_spool_write_env(sp, &it[i], &it[i].fsync_failed);
	}
	/* The contents' directory entries, once, before any envelope is
	 * published. */
	if (n > 0 && (r = mxf_spool_sync_dir(sp, MXF_SD_MSG)) < 0) {
		for (size_t i = 0; i < n; i++) {
			it[i].result = r;
			it[i].fsync_failed = true;
		}
	}
	return mxf_spool_commit_publish(sp, to, it, n);
}

int mxf_spool_commit(struct mxf_spool *sp, int content_fd, const struct mxf_env *e)
{
	struct mxf_spool_commit_item it = {.content_fd = content_fd, .e = e};
	mxf_spool_commit_batch(sp, MXF_SD_INCOMING, &it, 1);
	return it.result;
}

/* ---- state changes ---- */
static bool is_state(enum mxf_spool_dir d)
{
	return d == MXF_SD_INCOMING || d == MXF_SD_ACTIVE || d == MXF_SD_DEFERRED ||
	       d == MXF_SD_HOLD || d == MXF_SD_CORRUPT;
}

int mxf_spool_env_write(struct mxf_spool *sp, enum mxf_spool_dir d, const struct mxf_env *e)
{
	struct envtmp t;
	bool ff;
	int r;
	if (!is_state(d) || !mxf_qid_valid(e->qid))
		return -EINVAL;
	if ((r = write_env_tmp(sp, e, &t, &ff)) < 0)
		return r;
	/* rename(2) over the old file: a reader sees the old or the new
	 * envelope, never a mix. */
	if ((r = sp_rename(sp->fd[MXF_SD_TMP], t.name, sp->fd[d], e->qid, 0)) < 0) {
		envtmp_drop(sp, &t);
		return r;
	}
	envtmp_gone(sp, &t);
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

int mxf_spool_remove(struct mxf_spool *sp, const char *qid, enum mxf_spool_dir d,
		     bool keep_content)
{
	if (!is_state(d) || !mxf_qid_valid(qid))
		return -EINVAL;
	/* No fsync: a removal lost in a crash only means a duplicate delivery
	 * (at least once), never a lost message. */
	if (!spare_keep(sp, d, qid) && unlinkat(sp->fd[d], qid, 0) < 0)
		return -errno;
	if (keep_content && slot_keep(sp, sp->cspare, cspare_name, MXF_SD_MSG, qid))
		return 0;
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
