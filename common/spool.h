/* spool: the durable file operations on the queue (DESIGN.md §2), without
 * policy. The router is the only writer; mxferryctl reads.
 *
 * Layout: content of message QID in msg/QID once accepted (immutable, never
 * moved); its envelope file QID moves between incoming/ active/ deferred/
 * hold/ (corrupt/ for unreadable ones). During receipt: tmp/QID (content)
 * and tmp/QID.env.
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

/* Creates tmp/QID (O_WRONLY|O_CREAT|O_EXCL, 0600) and returns its fd. */
int mxf_spool_create(struct mxf_spool *sp, const char *qid);
/* Removes tmp/QID and tmp/QID.env (an aborted or failed receipt). */
void mxf_spool_discard(struct mxf_spool *sp, const char *qid);

/* Durable commit of a received message: fsync(content_fd), write and fsync
 * tmp/QID.env, rename (no overwrite) tmp/QID -> msg/QID and tmp/QID.env ->
 * incoming/QID, fsync msg/ and incoming/. On any failure everything made is
 * removed (tmp files too) and -errno is returned; -ENOSPC and -EDQUOT mean
 * the disk is full. content_fd stays open (the caller closes it). */
int mxf_spool_commit(struct mxf_spool *sp, int content_fd, const struct mxf_env *e);

/* Rewrites the envelope in state dir d: tmp/QID.env, fsync, rename over
 * d/QID, fsync d. */
int mxf_spool_env_write(struct mxf_spool *sp, enum mxf_spool_dir d, const struct mxf_env *e);
/* Moves envelope QID from one state dir to another (no overwrite), then
 * fsyncs both directories. */
int mxf_spool_move(struct mxf_spool *sp, const char *qid, enum mxf_spool_dir from,
		   enum mxf_spool_dir to);
/* Removes a finished message: the envelope first, then msg/QID, so a crash
 * in between leaves an orphan content file (removed at start-up), never an
 * envelope without content. */
int mxf_spool_remove(struct mxf_spool *sp, const char *qid, enum mxf_spool_dir d);
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
