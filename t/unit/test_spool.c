#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "spool.h"

struct fx {
	char dir[64];
	struct mxf_spool *sp;
};

static int rm_rf(const char *path)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	return system(cmd);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/mxf-spool-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	if (mxf_spool_open(f->dir, true, &f->sp) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	for (int op = 0; op < MXF_FAULT_NOPS; op++)
		mxf_spool_fault_set((enum mxf_spool_fault_op)op, 0, 0);
	mxf_spool_close(f->sp);
	rm_rf(f->dir);
	free(f);
	return 0;
}

/* Number of entries in a spool subdirectory. */
static int count(struct fx *f, enum mxf_spool_dir d)
{
	int fd = openat(mxf_spool_dirfd(f->sp, d), ".", O_RDONLY | O_DIRECTORY);
	DIR *dir = fdopendir(fd);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(dir)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(dir);
	return n;
}

static bool exists(struct fx *f, enum mxf_spool_dir d, const char *name)
{
	struct stat st;
	return fstatat(mxf_spool_dirfd(f->sp, d), name, &st, 0) == 0;
}

static struct mxf_env *env_for(const char *qid)
{
	struct mxf_env *e = mxf_env_new(qid);
	e->arrival = 1700000000;
	e->size = 5;
	mxf_env_set(&e->sender, "a@example.org");
	mxf_env_set(&e->origin, "smtpd");
	mxf_env_add_rcpt(e, "b@ours.example", "c@dest.example", "t", "forward");
	return e;
}

/* Receives "hello" into tmp/QID and returns the router's fd. */
static int receive(struct fx *f, char qid[MXF_QID_SIZE])
{
	assert_int_equal(mxf_qid_new(qid), 0);
	int fd = mxf_spool_create(f->sp, qid, NULL);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hello", 5), 5);
	return fd;
}

static void test_open_layout(void **state)
{
	struct fx *f = *state;
	const char *names[] = {"tmp", "incoming", "active", "deferred", "hold", "corrupt", "msg"};
	for (size_t i = 0; i < 7; i++) {
		char p[128];
		struct stat st;
		snprintf(p, sizeof(p), "%s/%s", f->dir, names[i]);
		assert_int_equal(stat(p, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0700);
		assert_string_equal(mxf_spool_dir_name((enum mxf_spool_dir)i), names[i]);
	}
	struct mxf_spool *sp2;
	assert_int_equal(mxf_spool_open("/nonexistent/spool", true, &sp2), -ENOENT);
}

static void test_commit_ok(void **state)
{
	struct fx *f = *state;
	char qid[MXF_QID_SIZE];
	int fd = receive(f, qid);
	/* The same ID cannot be created twice. */
	assert_int_equal(mxf_spool_create(f->sp, qid, NULL), -EEXIST);
	struct stat st;
	/* Received in place, in msg/ (an orphan until an envelope names it). */
	assert_int_equal(fstatat(mxf_spool_dirfd(f->sp, MXF_SD_MSG), qid, &st, 0), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	struct mxf_env *e = env_for(qid);
	assert_int_equal(mxf_spool_commit(f->sp, fd, e), 0);
	close(fd);
	assert_int_equal(count(f, MXF_SD_TMP), 0);
	assert_true(exists(f, MXF_SD_MSG, qid));
	assert_true(exists(f, MXF_SD_INCOMING, qid));
	struct mxf_env *r = NULL;
	assert_int_equal(mxf_env_read(mxf_spool_dirfd(f->sp, MXF_SD_INCOMING), qid, &r), 0);
	assert_string_equal(r->sender, "a@example.org");
	mxf_env_free(r);
	/* Content readable through a read-only fd, never writable. */
	int rfd = mxf_spool_open_content(f->sp, qid);
	char buf[8];
	assert_true(rfd >= 0);
	assert_int_equal(read(rfd, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(write(rfd, "x", 1), -1);
	assert_int_equal(errno, EBADF);
	close(rfd);
	mxf_env_free(e);
}

/* Every way a commit can fail leaves nothing behind and returns the error. */
static void commit_fails(struct fx *f, enum mxf_spool_fault_op op, unsigned nth, int err)
{
	char qid[MXF_QID_SIZE];
	int fd = receive(f, qid);
	struct mxf_env *e = env_for(qid);
	mxf_spool_fault_set(op, nth, err);
	assert_int_equal(mxf_spool_commit(f->sp, fd, e), -err);
	mxf_spool_fault_set(op, 0, 0);
	close(fd);
	assert_int_equal(count(f, MXF_SD_TMP), 0);
	assert_int_equal(count(f, MXF_SD_INCOMING), 0);
	assert_int_equal(count(f, MXF_SD_MSG), 0);
	mxf_env_free(e);
}

static void test_commit_faults(void **state)
{
	struct fx *f = *state;
	/* fsync #1 content, #2 envelope, #3 msg/ dir, #4 incoming/ dir */
	for (unsigned n = 1; n <= 4; n++)
		commit_fails(f, MXF_FAULT_FSYNC, n, EIO);
	/* A full disk is told apart from other errors. */
	commit_fails(f, MXF_FAULT_WRITE, 1, ENOSPC);
	commit_fails(f, MXF_FAULT_WRITE, 1, EDQUOT);
	commit_fails(f, MXF_FAULT_FSYNC, 2, ENOSPC);
	/* the one rename: the envelope into incoming/ */
	commit_fails(f, MXF_FAULT_RENAME, 1, EIO);
	commit_fails(f, MXF_FAULT_RENAME, 1, EXDEV);
	/* A fault past the commit's last fsync does not fire. */
	char qid[MXF_QID_SIZE];
	int fd = receive(f, qid);
	struct mxf_env *e = env_for(qid);
	mxf_spool_fault_set(MXF_FAULT_FSYNC, 5, EIO);
	assert_int_equal(mxf_spool_commit(f->sp, fd, e), 0);
	mxf_spool_fault_set(MXF_FAULT_FSYNC, 0, 0);
	close(fd);
	assert_true(exists(f, MXF_SD_INCOMING, qid));
	mxf_env_free(e);
}

/* Group commit: n messages into active/, each file fsync'ed, each directory
 * once; a failed fsync anywhere fails the whole batch and leaves nothing
 * (content included); a rename failure fails only its message. */
#define NB 5
static void batch_fx(struct fx *f, char qid[NB][MXF_QID_SIZE], struct mxf_env *e[NB],
		     struct mxf_spool_commit_item it[NB])
{
	for (int i = 0; i < NB; i++) {
		it[i] = (struct mxf_spool_commit_item){.content_fd = receive(f, qid[i])};
		it[i].e = e[i] = env_for(qid[i]);
	}
}

static void batch_free(struct mxf_env *e[NB], struct mxf_spool_commit_item it[NB])
{
	for (int i = 0; i < NB; i++) {
		close(it[i].content_fd);
		mxf_env_free(e[i]);
	}
}

static void test_commit_batch(void **state)
{
	struct fx *f = *state;
	char qid[NB][MXF_QID_SIZE];
	struct mxf_env *e[NB];
	struct mxf_spool_commit_item it[NB];

	batch_fx(f, qid, e, it);
	assert_int_equal(mxf_spool_commit_batch(f->sp, MXF_SD_ACTIVE, it, NB), 0);
	for (int i = 0; i < NB; i++) {
		assert_int_equal(it[i].result, 0);
		assert_true(exists(f, MXF_SD_MSG, qid[i]));
		assert_true(exists(f, MXF_SD_ACTIVE, qid[i]));
	}
	assert_int_equal(count(f, MXF_SD_TMP), 0);
	assert_int_equal(count(f, MXF_SD_INCOMING), 0);
	batch_free(e, it);
	/* Only state directories a commit may publish into. */
	assert_int_equal(mxf_spool_commit_batch(f->sp, MXF_SD_DEFERRED, it, 0), -EINVAL);

	/* 2 fsyncs per message, then msg/ and active/: whichever fails (the
	 * third message's content, the last message's envelope, either
	 * directory), every message of the batch is refused and gone. */
	const unsigned fail_at[] = {5, 2 * NB, 2 * NB + 1, 2 * NB + 2};
	for (size_t k = 0; k < sizeof(fail_at) / sizeof(fail_at[0]); k++) {
		assert_int_equal(count(f, MXF_SD_ACTIVE), NB);
		batch_fx(f, qid, e, it);
		mxf_spool_fault_set(MXF_FAULT_FSYNC, fail_at[k], EIO);
		assert_int_equal(mxf_spool_commit_batch(f->sp, MXF_SD_ACTIVE, it, NB), -EIO);
		mxf_spool_fault_set(MXF_FAULT_FSYNC, 0, 0);
		for (int i = 0; i < NB; i++) {
			assert_int_equal(it[i].result, -EIO);
			assert_false(exists(f, MXF_SD_ACTIVE, qid[i]));
			assert_false(exists(f, MXF_SD_MSG, qid[i]));
		}
		assert_int_equal(count(f, MXF_SD_TMP), 0);
		assert_int_equal(count(f, MXF_SD_MSG), NB);
		batch_free(e, it);
	}

	/* A rename failure (the 2nd message's envelope: rename #2) refuses
	 * that message alone; the others are committed. */
	batch_fx(f, qid, e, it);
	mxf_spool_fault_set(MXF_FAULT_RENAME, 2, EIO);
	assert_int_equal(mxf_spool_commit_batch(f->sp, MXF_SD_ACTIVE, it, NB), 0);
	mxf_spool_fault_set(MXF_FAULT_RENAME, 0, 0);
	for (int i = 0; i < NB; i++) {
		assert_int_equal(it[i].result, i == 1 ? -EIO : 0);
		assert_int_equal(exists(f, MXF_SD_ACTIVE, qid[i]), i != 1);
		assert_int_equal(exists(f, MXF_SD_MSG, qid[i]), i != 1);
	}
	assert_int_equal(count(f, MXF_SD_TMP), 0);
	batch_free(e, it);
}

/* A removed message's envelope inode is kept in tmp/ and reused by the next
 * envelope written (truncated first); its content file is unlinked. */
static void test_spare_envelopes(void **state)
{
	struct fx *f = *state;
	char q1[MXF_QID_SIZE], q2[MXF_QID_SIZE];
	struct stat st1, st2;
	int fd = receive(f, q1);
	struct mxf_env *e1 = env_for(q1);
	mxf_env_set(&e1->sender, "a-much-longer-sender-than-the-next-one@example.org");
	assert_int_equal(mxf_spool_commit(f->sp, fd, e1), 0);
	close(fd);
	assert_int_equal(fstatat(mxf_spool_dirfd(f->sp, MXF_SD_INCOMING), q1, &st1, 0), 0);
	assert_int_equal(mxf_spool_remove(f->sp, q1, MXF_SD_INCOMING, false), 0);
	assert_false(exists(f, MXF_SD_INCOMING, q1));
	assert_false(exists(f, MXF_SD_MSG, q1));
	assert_int_equal(count(f, MXF_SD_TMP), 1); /* the spare */
	fd = receive(f, q2);
	struct mxf_env *e2 = env_for(q2), *r = NULL;
	assert_int_equal(mxf_spool_commit(f->sp, fd, e2), 0);
	close(fd);
	assert_int_equal(count(f, MXF_SD_TMP), 0);
	assert_int_equal(fstatat(mxf_spool_dirfd(f->sp, MXF_SD_INCOMING), q2, &st2, 0), 0);
	assert_int_equal(st1.st_ino, st2.st_ino);
	/* Nothing of the old envelope is left in the reused file. */
	assert_int_equal(mxf_env_read(mxf_spool_dirfd(f->sp, MXF_SD_INCOMING), q2, &r), 0);
	assert_string_equal(r->qid, q2);
	assert_string_equal(r->sender, "a@example.org");
	/* Written over in place, then cut to its own length. */
	char *buf;
	size_t len;
	assert_int_equal(mxf_env_format(e2, &buf, &len), 0);
	assert_int_equal((size_t)st2.st_size, len);
	free(buf);
	mxf_env_free(r);
	/* A failed write into a spare: the commit fails and leaves nothing, the
	 * spare included (its content is unknown); the next commit works. */
	char q3[MXF_QID_SIZE], q4[MXF_QID_SIZE];
	assert_int_equal(mxf_spool_remove(f->sp, q2, MXF_SD_INCOMING, false), 0);
	assert_int_equal(count(f, MXF_SD_TMP), 1);
	fd = receive(f, q3);
	struct mxf_env *e3 = env_for(q3);
	mxf_spool_fault_set(MXF_FAULT_WRITE, 1, EIO);
	assert_int_equal(mxf_spool_commit(f->sp, fd, e3), -EIO);
	close(fd);
	assert_int_equal(count(f, MXF_SD_TMP), 0);
	assert_int_equal(count(f, MXF_SD_MSG), 0);
	assert_int_equal(count(f, MXF_SD_INCOMING), 0);
	fd = receive(f, q4);
	struct mxf_env *e4 = env_for(q4);
	assert_int_equal(mxf_spool_commit(f->sp, fd, e4), 0);
	close(fd);
	assert_true(exists(f, MXF_SD_INCOMING, q4));
	mxf_env_free(e1);
	mxf_env_free(e2);
	mxf_env_free(e3);
	mxf_env_free(e4);
}

/* A removed message's content kept (keep_content) becomes the next queue
 * file: the same inode, emptied; without keep_content it is unlinked. */
static void test_spare_contents(void **state)
{
	struct fx *f = *state;
	char q1[MXF_QID_SIZE], q2[MXF_QID_SIZE], q3[MXF_QID_SIZE];
	struct stat st1, st2;
	int fd = receive(f, q1);
	struct mxf_env *e1 = env_for(q1);
	assert_int_equal(mxf_spool_commit(f->sp, fd, e1), 0);
	close(fd);
	assert_int_equal(fstatat(mxf_spool_dirfd(f->sp, MXF_SD_MSG), q1, &st1, 0), 0);
	assert_int_equal(mxf_spool_remove(f->sp, q1, MXF_SD_INCOMING, true), 0);
	assert_false(exists(f, MXF_SD_MSG, q1));
	assert_true(exists(f, MXF_SD_TMP, "spare.c0"));
	assert_int_equal(count(f, MXF_SD_TMP), 2); /* the envelope's and the content's */
	/* Without reuse (a queue file for the bouncer or mxferryctl) a new file. */
	assert_int_equal(mxf_qid_new(q3), 0);
	bool reuse = false;
	fd = mxf_spool_create(f->sp, q3, &reuse);
	assert_true(fd >= 0);
	assert_true(exists(f, MXF_SD_TMP, "spare.c0"));
	close(fd);
	mxf_spool_discard(f->sp, q3);
	assert_int_equal(mxf_qid_new(q2), 0);
	reuse = true;
	fd = mxf_spool_create(f->sp, q2, &reuse);
	assert_true(fd >= 0);
	assert_true(reuse);
	assert_false(exists(f, MXF_SD_TMP, "spare.c0"));
	assert_int_equal(fstat(fd, &st2), 0);
	assert_int_equal(st1.st_ino, st2.st_ino);
	/* The old bytes stay until the caller cuts the file (the router does
	 * at COMMIT); the descriptor cannot read them. */
	assert_int_equal(st2.st_size, 5);
	char rb[8];
	assert_int_equal(read(fd, rb, sizeof(rb)), -1);
	assert_int_equal(write(fd, "hey", 3), 3);
	assert_int_equal(ftruncate(fd, 3), 0);
	struct mxf_env *e2 = env_for(q2);
	e2->size = 3;
	assert_int_equal(mxf_spool_commit(f->sp, fd, e2), 0);
	close(fd);
	char buf[16] = {0};
	int rfd = mxf_spool_open_content(f->sp, q2);
	assert_true(rfd >= 0);
	assert_int_equal(read(rfd, buf, sizeof(buf)), 3);
	assert_string_equal(buf, "hey");
	close(rfd);
	/* Not kept: unlinked (no content spare appears). */
	assert_int_equal(mxf_spool_remove(f->sp, q2, MXF_SD_INCOMING, false), 0);
	assert_false(exists(f, MXF_SD_MSG, q2));
	assert_int_equal(count(f, MXF_SD_TMP), 1); /* the envelope's spare only */
	assert_int_equal(mxf_qid_new(q3), 0);
	reuse = true;
	fd = mxf_spool_create(f->sp, q3, &reuse);
	assert_true(fd >= 0);
	assert_false(reuse);
	assert_int_equal(count(f, MXF_SD_TMP), 1);
	close(fd);
	mxf_spool_discard(f->sp, q3);
	mxf_env_free(e1);
	mxf_env_free(e2);
}

static void test_rewrite_move_remove(void **state)
{
	struct fx *f = *state;
	char qid[MXF_QID_SIZE];
	int fd = receive(f, qid);
	struct mxf_env *e = env_for(qid), *r = NULL;
	assert_int_equal(mxf_spool_commit(f->sp, fd, e), 0);
	close(fd);

	assert_int_equal(mxf_spool_move(f->sp, qid, MXF_SD_INCOMING, MXF_SD_ACTIVE), 0);
	assert_false(exists(f, MXF_SD_INCOMING, qid));
	assert_true(exists(f, MXF_SD_ACTIVE, qid));
	assert_int_equal(mxf_spool_move(f->sp, qid, MXF_SD_INCOMING, MXF_SD_ACTIVE), -ENOENT);

	e->rcpt[0].status = MXF_RS_DEFERRED;
	e->rcpt[0].attempts = 1;
	assert_int_equal(mxf_spool_env_write(f->sp, MXF_SD_ACTIVE, e), 0);
	assert_int_equal(mxf_env_read(mxf_spool_dirfd(f->sp, MXF_SD_ACTIVE), qid, &r), 0);
	assert_int_equal(r->rcpt[0].status, MXF_RS_DEFERRED);
	mxf_env_free(r);
	assert_int_equal(count(f, MXF_SD_TMP), 0);

	/* A failed rewrite reports the error and keeps the old envelope. */
	e->rcpt[0].status = MXF_RS_SENT;
	mxf_spool_fault_set(MXF_FAULT_FSYNC, 1, EIO);
	assert_int_equal(mxf_spool_env_write(f->sp, MXF_SD_ACTIVE, e), -EIO);
	assert_int_equal(mxf_env_read(mxf_spool_dirfd(f->sp, MXF_SD_ACTIVE), qid, &r), 0);
	assert_int_equal(r->rcpt[0].status, MXF_RS_DEFERRED);
	mxf_env_free(r);
	assert_int_equal(count(f, MXF_SD_TMP), 0);

	/* A move never overwrites, and a failed directory fsync is reported. */
	assert_int_equal(mxf_spool_move(f->sp, qid, MXF_SD_ACTIVE, MXF_SD_DEFERRED), 0);
	int x = openat(mxf_spool_dirfd(f->sp, MXF_SD_ACTIVE), qid, O_WRONLY | O_CREAT, 0600);
	close(x);
	assert_int_equal(mxf_spool_move(f->sp, qid, MXF_SD_DEFERRED, MXF_SD_ACTIVE), -EEXIST);
	unlinkat(mxf_spool_dirfd(f->sp, MXF_SD_ACTIVE), qid, 0);
	mxf_spool_fault_set(MXF_FAULT_FSYNC, 1, EIO);
	assert_int_equal(mxf_spool_move(f->sp, qid, MXF_SD_DEFERRED, MXF_SD_ACTIVE), -EIO);
	assert_true(exists(f, MXF_SD_ACTIVE, qid));

	/* Path tricks are refused. */
	assert_int_equal(mxf_spool_move(f->sp, "../x", MXF_SD_ACTIVE, MXF_SD_DEFERRED), -EINVAL);
	assert_int_equal(mxf_spool_create(f->sp, "../../etc/x", NULL), -EINVAL);
	assert_int_equal(mxf_spool_open_content(f->sp, "x/y"), -EINVAL);
	assert_int_equal(mxf_spool_move(f->sp, qid, MXF_SD_ACTIVE, MXF_SD_MSG), -EINVAL);

	assert_int_equal(mxf_spool_remove(f->sp, qid, MXF_SD_ACTIVE, false), 0);
	assert_false(exists(f, MXF_SD_ACTIVE, qid));
	assert_false(exists(f, MXF_SD_MSG, qid));
	assert_int_equal(mxf_spool_remove(f->sp, qid, MXF_SD_ACTIVE, false), -ENOENT);
	mxf_env_free(e);
}

static void test_corrupt_and_tmp(void **state)
{
	struct fx *f = *state;
	int afd = mxf_spool_dirfd(f->sp, MXF_SD_ACTIVE);
	for (int i = 0; i < 3; i++) {
		int x = openat(afd, "junk", O_WRONLY | O_CREAT, 0600);
		assert_true(x >= 0);
		close(x);
		assert_int_equal(mxf_spool_to_corrupt(f->sp, MXF_SD_ACTIVE, "junk"), 0);
	}
	assert_true(exists(f, MXF_SD_CORRUPT, "junk"));
	assert_true(exists(f, MXF_SD_CORRUPT, "junk.1"));
	assert_true(exists(f, MXF_SD_CORRUPT, "junk.2"));
	assert_int_equal(count(f, MXF_SD_ACTIVE), 0);
	assert_int_equal(mxf_spool_to_corrupt(f->sp, MXF_SD_ACTIVE, "../x"), -EINVAL);
	assert_int_equal(mxf_spool_to_corrupt(f->sp, MXF_SD_ACTIVE, "gone"), -ENOENT);

	char qid[MXF_QID_SIZE];
	int t = openat(mxf_spool_dirfd(f->sp, MXF_SD_TMP), "other.env", O_WRONLY | O_CREAT, 0600);
	close(t);
	t = openat(mxf_spool_dirfd(f->sp, MXF_SD_TMP), "x", O_WRONLY | O_CREAT, 0600);
	close(t);
	assert_int_equal(count(f, MXF_SD_TMP), 2);
	assert_int_equal(mxf_spool_clean_tmp(f->sp), 0);
	assert_int_equal(count(f, MXF_SD_TMP), 0);

	/* An aborted receipt: its content (received in msg/) is gone. */
	int fd = receive(f, qid);
	close(fd);
	assert_true(exists(f, MXF_SD_MSG, qid));
	mxf_spool_discard(f->sp, qid);
	assert_false(exists(f, MXF_SD_MSG, qid));
	assert_int_equal(count(f, MXF_SD_TMP), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_faults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spare_envelopes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spare_contents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_move_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_and_tmp, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
