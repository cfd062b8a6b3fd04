/* workerrun: starting a worker runtime in its sandbox (issue 13). Shared by
 * workerd and `mxferryctl worker test`, so a dry run sees the same limits as
 * the real thing. */
#ifndef MXF_WORKERRUN_H
#define MXF_WORKERRUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "workerproto.h"

struct mxf_worker_def {
	const char *name;
	const char *runtime; /* "js" or "program" */
	const char *path;    /* program: absolute path of the executable */
	const char *script;  /* js: the module's source */
	const char *const *env; /* "KEY=VALUE" */
	size_t nenv;
	unsigned timeout; /* wall-clock seconds */
	bool network;     /* may open AF_INET/AF_INET6 sockets (granted by the operator) */
};

struct mxf_worker_limits {
	const char *node;   /* js: the node binary */
	const char *runner; /* js: our runner.mjs */
	uint64_t memory;    /* bytes (RLIMIT_DATA) */
	bool keep_stderr;   /* the worker's stderr: ours (dry run) or /dev/null */
};

/* Forks the runtime as the leader of a new process group (kill it with
 * kill(-pid, SIGKILL)). Its stdin is the header line, "\n", then the whole
 * content of content_fd (read with pread; the fd's offset is not moved);
 * *out_fd is the read end of its stdout (close-on-exec, blocking). pid is
 * a keeper that exits as the worker does; when the caller dies, the keeper
 * kills the whole group (PR_SET_PDEATHSIG). 0 or -errno. */
int mxf_workerrun_start(const struct mxf_worker_def *d, const struct mxf_worker_limits *l,
			const struct mxf_wp_envelope *env, int content_fd, pid_t *pid, int *out_fd);

/* Blocking: reads the worker's output into p until EOF or the deadline,
 * kills the process group at the deadline, reaps the worker. *status gets
 * "ok", "timeout", "exit N", "signal N", or the parser's error; returns 0
 * when the decisions in p are to be used, -1 otherwise. */
int mxf_workerrun_wait(pid_t pid, int out_fd, unsigned timeout, struct mxf_wp_parser *p,
		       char *status, size_t statuslen);

#endif
