/* spool: the durable file operations on the queue (DESIGN.md §2), without
 * policy. The router is the only writer; mxferryctl reads.
 *
 * Layout: content of message QID in msg/QID, written there during receipt,
 * immutable once accepted, never moved; its envelope file QID moves between
 * incoming/ active/ deferred/ hold/ (corrupt/ for unreadable ones). During
 * the commit: tmp/QID.env, or a spare envelope file tmp/spare.N written over.
 *
 * Durability rules: a file is fsync'ed before the rename that publishes it,
 * and the directory is fsync'ed after; any failure of those returns an error
 * and leaves no half-published message (a failed fsync is never retried:
 * after one, the page cache state is unknown). Every call blocks; the router
 * runs commits on its thread pool. All calls return 0 or -errno. */
#ifndef MXF_SPOOL_H
#define MXF_SPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "envelope.h"

enum mxf_spool_dir {
	MXF_SD_TMP,
	MXF_SD_INCOMING,
	MXF_SD_ACTIVE,
	MXF_SD_DEFERRED,
	MXF_SD_HOLD,
	MXF_SD_CORRUPT,
	MXF_SD_MSG,
	MXF_SD_COUNT
};

struct mxf_spool;

/* Opens spool_dir's subdirectories as directory fds. With create, missing
 * ones are made (mode 0700) when the caller owns spool_dir. */
int mxf_spool_open(const char *spool_dir, bool create, struct mxf_spool **out);
void mxf_spool_close(struct mxf_spool *sp);
int mxf_spool_dirfd(const struct mxf_spool *sp, enum mxf_spool_dir d);
const char *mxf_spool_dir_name(enum mxf_spool_dir d);

/* Creates msg/QID (O_WRONLY|O_CREAT|O_EXCL, 0600) and returns its fd: the
 * content is received in place. With *reuse true it may be a spare content
 * file renamed there instead (see mxf_spool_remove), still holding its old
 * bytes: the writer writes from offset 0 and the caller cuts it to the
 * written length before the commit; *reuse says which it got; without an envelope naming it, it is an
 * orphan (never acknowledged) that start-up removes. */
int mxf_spool_create(struct mxf_spool *sp, const char *qid, bool *reuse);
/* Removes msg/QID and tmp/QID.env (an aborted or failed receipt). */
void mxf_spool_discard(struct mxf_spool *sp, const char *qid);

/* Durable commit of a received message: fdatasync(content_fd), write and
 * fdatasync the envelope (a spare or tmp/QID.env), fsync msg/, rename (no
 * overwrite) it -> incoming/QID, fsync incoming/. On any failure everything made is removed
 * (the content too) and -errno is returned; -ENOSPC and -EDQUOT mean the
 * disk is full. content_fd stays open (the caller closes it). */
int mxf_spool_commit(struct mxf_spool *sp, int content_fd, const struct mxf_env *e);

/* Group commit, in steps that may run on different threads at once. For
 * each message: mxf_spool_sync_content (fsync of msg/QID) and
 * mxf_spool_write_env (the envelope written into a spare file or
 * tmp/QID.env and fdatasync'ed; it->e in, the rest of it private), in either order;
 * mxf_spool_sync_dir(MXF_SD_MSG) once after the contents were created (it
 * covers every entry made before it started). Then, for a batch of such
 * messages, mxf_spool_commit_publish: renames (no overwrite) each
 * envelope -> to/QID (to: MXF_SD_INCOMING or MXF_SD_ACTIVE), then fsyncs
 * `to` once for the whole batch. it->result is 0 (on disk) or -errno, and
 * whatever that message made is removed (its content too). A failed fsync
 * (fsync_failed set by a step: a file's or msg/'s) fails every message of
 * the batch, never retried; other errors (a rename, the write of one
 * envelope) fail only their message. publish returns 0 or the fsync error
 * that failed the batch. _batch runs every step in order on this thread. */
struct mxf_spool_commit_item {
	int content_fd;            /* in: msg/QID, written (stays open) */
	const struct mxf_env *e;   /* in */
	int result;                /* in: the steps' first error (or 0); out */
	bool fsync_failed;         /* in: a step's fsync failed */
	/* private: where mxf_spool_write_env put the envelope (a reused spare
	 * file or tmp/QID.env), and whether publish renamed it */
	bool env_written;
	int env_slot;
	char env_tmp[32];
	unsigned made;
};
int mxf_spool_sync_content(struct mxf_spool *sp, int content_fd, bool *fsync_failed);
int mxf_spool_write_env(struct mxf_spool *sp, struct mxf_spool_commit_item *it,
			bool *fsync_failed);
int mxf_spool_sync_dir(struct mxf_spool *sp, enum mxf_spool_dir d);
int mxf_spool_commit_publish(struct mxf_spool *sp, enum mxf_spool_dir to,
			     struct mxf_spool_commit_item *it, size_t n);
int mxf_spool_commit_batch(struct mxf_spool *sp, enum mxf_spool_dir to,
			   struct mxf_spool_commit_item *it, size_t n);

/* Rewrites the envelope in state dir d: a spare or tmp/QID.env, fdatasync,
 * rename over d/QID, fsync d. */
int mxf_spool_env_write(struct mxf_spool *sp, enum mxf_spool_dir d, const struct mxf_env *e);
/* Moves envelope QID from one state dir to another (no overwrite), then
 * fsyncs both directories. */
int mxf_spool_move(struct mxf_spool *sp, const char *qid, enum mxf_spool_dir from,
		   enum mxf_spool_dir to);
/* Removes a finished message: the envelope first, then msg/QID, so a crash
 * in between leaves an orphan content file (removed at start-up), never an
 * envelope without content. The envelope file is kept as tmp/spare.N (up to
 * 256; tmp/ is emptied at start-up) and reused by the next envelope written:
 * fewer inodes made and freed. With keep_content the content file is kept
 * too (tmp/spare.cN, up to 256) and becomes a later msg/QID of
 * mxf_spool_create, emptied: only for a content no descriptor outside the
 * caller still refers to (another message's bytes would appear under it).
 * Safe to call from several threads. */
int mxf_spool_remove(struct mxf_spool *sp, const char *qid, enum mxf_spool_dir d,
		     bool keep_content);
/* Moves d/NAME to corrupt/ (never deletes); when corrupt/NAME exists a
 * ".N" suffix is added. NAME need not be a valid queue ID. */
int mxf_spool_to_corrupt(struct mxf_spool *sp, enum mxf_spool_dir d, const char *name);
/* Opens msg/QID read-only (the fd handed to deliverd and the bouncer). */
int mxf_spool_open_content(struct mxf_spool *sp, const char *qid);
/* Unlinks every entry of tmp/ (start-up: those were never acknowledged). */
int mxf_spool_clean_tmp(struct mxf_spool *sp);

/* ---- fault injection (tests) ----
 * Compiled in always, off by default: the nth (1-based, counted from this
 * call) operation of kind op fails with err instead of running. nth 0 turns
 * the fault for op off. Counters are atomic (commits run on worker threads). */
enum mxf_spool_fault_op { MXF_FAULT_FSYNC, MXF_FAULT_WRITE, MXF_FAULT_RENAME, MXF_FAULT_NOPS };
void mxf_spool_fault_set(enum mxf_spool_fault_op op, unsigned nth, int err);

#endif
