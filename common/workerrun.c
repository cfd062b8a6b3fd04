/* workerrun: fork + sandbox + exec of one worker run, and the blocking wait
 * `mxferryctl worker test` uses (workerd waits on its event loop). */
#include "workerrun.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Processes (threads count) of the worker's user: node runs about a dozen
 * threads; this stops a fork bomb, not a worker. */
#define WORKER_NPROC 512
#define WORKER_NOFILE 256

static void die(const char *what)
{
	/* stderr may be /dev/null already; the exit status tells workerd. */
	dprintf(2, "worker sandbox: %s: %s\n", what, strerror(errno));
	_exit(126);
}

#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#endif

/* A deny list (EPERM), not an allow list: node and arbitrary programs must
 * keep working, while the calls that reach the kernel's or other processes'
 * privileged surfaces are closed even if a worker finds a setuid-less way to
 * ask. NO_NEW_PRIVS is set first, so no privilege is needed to install it. */
static void seccomp_deny(bool network)
{
#ifdef SECCOMP_ARCH
	static const int denied[] = {
		SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_mount, SYS_umount2,
		SYS_pivot_root, SYS_chroot, SYS_swapon, SYS_swapoff, SYS_reboot, SYS_kexec_load,
		SYS_kexec_file_load, SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_bpf,
		SYS_perf_event_open, SYS_keyctl, SYS_add_key, SYS_request_key, SYS_unshare,
		SYS_setns, SYS_userfaultfd, SYS_acct, SYS_settimeofday, SYS_clock_settime,
		SYS_open_by_handle_at, SYS_name_to_handle_at, SYS_quotactl, SYS_fanotify_init,
	};
	enum { N = sizeof(denied) / sizeof(denied[0]) };
	/* Without the operator's grant, socket(AF_INET|AF_INET6, ...) is refused
	 * too: the worker keeps AF_UNIX (node needs it) and nothing reaches the
	 * network. X: the instructions of that check. */
	const unsigned char X = network ? 0 : 4;
	struct sock_filter f[4 + N + 4 + 2];
	size_t i = 0;
	f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					      offsetof(struct seccomp_data, arch));
	/* Another ABI's numbers mean other calls: refuse them all. */
	f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0);
	f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					      offsetof(struct seccomp_data, nr));
	for (size_t k = 0; k < N; k++)
		f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)denied[k],
						      (unsigned char)(N + X - k), 0);
	if (!network) {
		f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 3);
		f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
						      offsetof(struct seccomp_data, args[0]));
		f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, 2, 0);
		f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 1, 0);
	}
	f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
	struct sock_fprog prog = {.len = (unsigned short)i, .filter = f};
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		die("seccomp");
#endif
}

static void limit(int res, rlim_t v)
{
	struct rlimit rl = {v, v};
	if (setrlimit(res, &rl) < 0)
		die("setrlimit");
}

/* The feeder: header line and content into the worker's stdin, then exit.
 * A worker that stops reading gets EPIPE here, which is fine. */
static void feed(int wr, const char *hdr, int content_fd)
{
	signal(SIGPIPE, SIG_IGN);
	size_t hl = strlen(hdr);
	char buf[65536];
	if (write(wr, hdr, hl) != (ssize_t)hl || write(wr, "\n", 1) != 1)
		_exit(0);
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(content_fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += n;
		for (ssize_t w = 0; w < n;) {
			ssize_t k = write(wr, buf + w, (size_t)(n - w));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				_exit(0);
			w += k;
		}
	}
	_exit(0);
}

static void setenv_or_die(const char *k, const char *v)
{
	if (setenv(k, v ? v : "", 1) < 0)
		die("setenv");
}

static void child(const struct mxf_worker_def *d, const struct mxf_worker_limits *l,
		  const struct mxf_wp_envelope *env, int content_fd, int out_wr, pid_t ppid)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	/* Dies with its keeper (below). */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != ppid)
		_exit(125);
	char *hdr = mxf_wp_header_line(env);
	int in[2];
	if (!hdr || pipe(in) < 0)
		die("pipe");
	pid_t f = fork();
	if (f < 0)
		die("fork");
	if (f == 0) {
		close(in[0]);
		close(out_wr);
		feed(in[1], hdr, content_fd);
	}
	close(in[1]);
	free(hdr);
	int script = -1;
	if (strcmp(d->runtime, "js") == 0) {
		/* The module's source, from a sealed memory file: nothing on disk
		 * the worker user would need to read. */
		script = memfd_create("worker.mjs", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		size_t len = strlen(d->script ? d->script : "");
		if (script < 0 || write(script, d->script ? d->script : "", len) != (ssize_t)len ||
		    lseek(script, 0, SEEK_SET) < 0)
			die("memfd");
		fcntl(script, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
	}
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull < 0 || dup2(in[0], 0) < 0 || dup2(out_wr, 1) < 0 ||
	    (!l->keep_stderr && dup2(devnull, 2) < 0) || (script >= 0 && dup2(script, 3) < 0))
		_exit(126);
	closefrom(script >= 0 ? 4 : 3);

	if (clearenv() != 0)
		_exit(126);
	setenv_or_die("PATH", "/usr/local/bin:/usr/bin:/bin");
	setenv_or_die("LANG", "C.UTF-8");
	setenv_or_die("HOME", "/nonexistent");
	char keys[4096] = "";
	size_t kl = 0;
	for (size_t i = 0; i < d->nenv; i++) {
		const char *eq = strchr(d->env[i], '=');
		if (!eq)
			continue;
		if (putenv((char *)d->env[i]) != 0)
			die("putenv");
		int n = snprintf(keys + kl, sizeof(keys) - kl, "%s%.*s", kl ? "," : "",
				 (int)(eq - d->env[i]), d->env[i]);
		if (n > 0 && (size_t)n < sizeof(keys) - kl)
			kl += (size_t)n;
	}
	/* The envelope; the js runner takes its env object from the keys the
	 * operator configured (MXF_ENV_KEYS), not from our own variables. */
	setenv_or_die("MXF_ENV_KEYS", keys);
	setenv_or_die("MXF_FROM", env->from);
	setenv_or_die("MXF_TO", env->to);
	setenv_or_die("MXF_CLIENT_IP", env->client_ip);
	setenv_or_die("MXF_HELO", env->helo);
	setenv_or_die("MXF_QUEUE_ID", env->queue_id);
	setenv_or_die("MXF_WORKER", d->name);

	limit(RLIMIT_CORE, 0);
	/* CPU: the wall deadline bounds it anyway; this stops a spinning
	 * worker even if the deadline keeper were late. */
	limit(RLIMIT_CPU, (rlim_t)d->timeout + 1);
	/* RLIMIT_DATA, not RLIMIT_AS: V8 reserves gigabytes of address space
	 * it never touches and aborts under an address-space limit; the data
	 * limit counts what is really allocated (heap and private mappings). */
	if (l->memory)
		limit(RLIMIT_DATA, (rlim_t)l->memory);
	/* A worker writes no file. */
	limit(RLIMIT_FSIZE, 0);
	limit(RLIMIT_NOFILE, WORKER_NOFILE);
	if (getuid() != 0)
		limit(RLIMIT_NPROC, WORKER_NPROC);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("no_new_privs");
	seccomp_deny(d->network);
	if (script >= 0) {
		char *argv[] = {(char *)l->node, "--no-warnings", (char *)l->runner, NULL};
		execv(l->node, argv);
	} else {
		char *argv[] = {(char *)d->path, NULL};
		execv(d->path, argv);
	}
	die("exec");
}

static void keeper_term(int sig)
{
	(void)sig;
	kill(0, SIGKILL); /* the whole group, the keeper included */
}

/* The process-group leader: its parent (workerd, or mxferryctl) dying gets
 * it SIGTERM (PR_SET_PDEATHSIG), on which it kills the whole group: the
 * worker and whatever the worker started, which a SIGKILL of the worker
 * alone would leave running. Otherwise it waits for the worker and exits as
 * the worker did, so the exit status seen by the parent is the worker's. */
static void keeper(const struct mxf_worker_def *d, const struct mxf_worker_limits *l,
		   const struct mxf_wp_envelope *env, int content_fd, int out_wr, pid_t ppid)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	struct sigaction sa = {.sa_handler = keeper_term};
	sigaction(SIGTERM, &sa, NULL);
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != ppid)
		_exit(125);
	pid_t self = getpid();
	pid_t w = fork();
	if (w < 0)
		_exit(126);
	if (w == 0)
		child(d, l, env, content_fd, out_wr, self);
	/* Nothing of the parent's (the router socket, other jobs' pipes). */
	closefrom(3);
	int st = 0;
	while (waitpid(w, &st, 0) < 0)
		if (errno != EINTR)
			_exit(126);
	if (WIFSIGNALED(st)) {
		int sig = WTERMSIG(st);
		signal(sig, SIG_DFL);
		limit(RLIMIT_CORE, 0);
		kill(self, sig);
		_exit(128 + sig);
	}
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 126);
}

int mxf_workerrun_start(const struct mxf_worker_def *d, const struct mxf_worker_limits *l,
			const struct mxf_wp_envelope *env, int content_fd, pid_t *pid, int *out_fd)
{
	int out[2];
	if (!d->runtime || (strcmp(d->runtime, "js") && strcmp(d->runtime, "program")))
		return -EINVAL;
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid_t ppid = getpid();
	pid_t c = fork();
	if (c < 0) {
		int r = -errno;
		close(out[0]);
		close(out[1]);
		return r;
	}
	if (c == 0) {
		setpgid(0, 0);
		close(out[0]);
		keeper(d, l, env, content_fd, out[1], ppid);
		_exit(126);
	}
	/* Both sides set the group, so a kill right after fork finds it. */
	setpgid(c, c);
	close(out[1]);
	*pid = c;
	*out_fd = out[0];
	return 0;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mxf_workerrun_wait(pid_t pid, int out_fd, unsigned timeout, struct mxf_wp_parser *p,
		       char *status, size_t statuslen)
{
	long long deadline = mono_ms() + (long long)timeout * 1000;
	bool timed_out = false, eof = false;
	int perr = 0;
	char buf[4096];
	while (!eof) {
		long long left = deadline - mono_ms();
		if (left <= 0) {
			timed_out = true;
			break;
		}
		struct pollfd pfd = {out_fd, POLLIN, 0};
		int n = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
		if (n < 0 && errno != EINTR)
			break;
		if (n <= 0)
			continue;
		ssize_t k = read(out_fd, buf, sizeof(buf));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			eof = true;
			break;
		}
		if (!perr && (perr = mxf_wp_feed(p, buf, (size_t)k)) < 0)
			break; /* too much or garbage: no need to wait for more */
	}
	/* Whatever happened, nothing of the worker survives it. */
	if (timed_out || perr || !eof)
		kill(-pid, SIGKILL);
	/* Wait for the exit without reaping: while the leader is a zombie the
	 * group id is still ours, so the group kill below cannot hit a
	 * recycled pid. A worker that closed stdout but goes on running is
	 * still held to the deadline. */
	for (;;) {
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT | WNOHANG) < 0 && errno != EINTR)
			break;
		if (si.si_pid == pid)
			break;
		if (!timed_out && mono_ms() >= deadline) {
			timed_out = true;
			kill(-pid, SIGKILL);
		}
		usleep(5000);
	}
	kill(-pid, SIGKILL); /* a feeder or a child the worker left behind */
	int ws = 0;
	while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
		;
	if (timed_out) {
		snprintf(status, statuslen, "timeout after %u s", timeout);
		return -1;
	}
	if (perr || (perr = mxf_wp_finish(p)) < 0) {
		snprintf(status, statuslen, "bad answer: %s", mxf_wp_error(p));
		return -1;
	}
	if (WIFSIGNALED(ws)) {
		snprintf(status, statuslen, "killed by signal %d", WTERMSIG(ws));
		return -1;
	}
	if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
		snprintf(status, statuslen, "exit status %d", WEXITSTATUS(ws));
		return -1;
	}
	snprintf(status, statuslen, "ok");
	return 0;
}
