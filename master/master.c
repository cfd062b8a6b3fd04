/* mxferryd: the master. The only code that keeps root: it reads the config,
 * creates the spool and data directories with their owners, binds the SMTP
 * listeners, starts each daemon (which drops its own privileges), restarts a
 * daemon that dies with a backoff, reloads on SIGHUP and stops everything on
 * SIGTERM. It touches no message: a crash here delays mail, never loses it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "listen.h"
#include "log.h"
#include "privdrop.h"

#define MAX_LISTEN 16
#define STOP_GRACE_MS 4500
/* Of the grace time, how long smtpd may take to finish messages in DATA. */
#define SMTPD_STOP_MS 3500

struct child {
	const char *name;    /* program name in daemon_dir */
	const char *section; /* config section with its user */
	pid_t pid;
	time_t started;
	unsigned restarts;
	int64_t restart_at_ms; /* 0: not waiting */
	int64_t backoff_ms;
	bool off; /* not started in this configuration (apid with [api] listen off) */
};

/* Start order: the router first, so clients find its socket sooner (they
 * retry anyway). */
static struct child children[] = {
	{"router", "router", 0, 0, 0, 0, 0, false},
	{"deliverd", "deliverd", 0, 0, 0, 0, 0, false},
	{"bouncer", "bouncer", 0, 0, 0, 0, 0, false},
	{"workerd", "workerd", 0, 0, 0, 0, 0, false},
	{"smtpd", "smtpd", 0, 0, 0, 0, 0, false},
	/* Issue 12: the REST API, last: nothing waits for it. */
	{"apid", "api", 0, 0, 0, 0, 0, false},
};
#define NCHILD (sizeof(children) / sizeof(children[0]))

static struct mxf_config *cfg;
static char daemon_dir[PATH_MAX];
static int listen_fds[MAX_LISTEN];
static int nlisten;
/* [main] metrics_listen, bound here and handed to the router (-1: off). */
static int metrics_fd = -1;
/* [api] listen, bound here and handed to apid (-1: off). */
static int api_fd = -1;
static bool use_syslog;
static bool same_user; /* every daemon runs as the invoking user */
static time_t master_started;
static char pid_dir[PATH_MAX];
static char notify_path[108]; /* systemd's $NOTIFY_SOCKET, taken at start */

/* The daemons' directory of an installed build (CMake MXF_DAEMON_DIR), used
 * when [main] daemon_dir is empty and the daemons are not beside mxferryd. */
#ifndef MXF_DAEMON_DIR
#define MXF_DAEMON_DIR ""
#endif

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET ("@" means
 * the abstract namespace). Type=notify units learn READY/RELOADING/STOPPING
 * from it; without systemd there is no socket and nothing happens. */
static void notify(const char *state)
{
	if (!notify_path[0])
		return;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(notify_path);
	memcpy(sa.sun_path, notify_path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		mxf_warn("cannot notify systemd (%s): %s", state, strerror(errno));
	close(fd);
}

static void take_notify_socket(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	if (e && (e[0] == '/' || e[0] == '@') && strlen(e) < sizeof(notify_path))
		snprintf(notify_path, sizeof(notify_path), "%s", e);
	/* The daemons must not talk to systemd in the master's name. */
	unsetenv("NOTIFY_SOCKET");
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(void)
{
	fprintf(stderr, "usage: mxferryd -c CONFIG [-f] [-S USER]\n"
			"  -c CONFIG  configuration file (default /etc/mxferry/mxferry.conf)\n"
			"  -f         stay in the foreground and log to stderr\n"
			"  -S USER    as root: create the directories with their owners for a\n"
			"             master that will run as USER, then exit\n");
	exit(2);
}

/* Creates dir if missing and gives it to uid:gid with mode. An existing
 * directory gets the owner and mode corrected: they are part of the
 * privilege separation, not a preference. chmod comes first, while a new
 * directory is still its creator's: the systemd unit withholds CAP_FOWNER.
 * The packaged master runs without CAP_CHOWN at all: its ExecStartPre
 * (`mxferryd -S USER`, as root) made everything right already, so a
 * difference here is refused, not repaired. */
#define SETUP_HINT " (run `mxferryd -S USER` as root first, as the systemd unit's ExecStartPre does)"

static void make_dir(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		mxf_fatal("cannot create %s: %s%s", path, strerror(errno),
			  errno == EACCES || errno == EPERM ? SETUP_HINT : "");
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		mxf_fatal("%s is not a directory", path);
	if ((st.st_mode & 07777) != mode && chmod(path, mode) < 0)
		mxf_fatal("cannot chmod %s: %s", path, strerror(errno));
	if ((st.st_uid != uid || st.st_gid != gid) && chown(path, uid, gid) < 0)
		mxf_fatal("cannot chown %s to %ld:%ld: %s%s", path, (long)uid, (long)gid,
			  strerror(errno), errno == EPERM ? SETUP_HINT : "");
}

/* mkdir -p for the parents of a configured directory (root-owned 0755, as
 * any directory above the spool should be). */
static void make_parents(const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			mxf_fatal("cannot create %s: %s", buf, strerror(errno));
		*p = '/';
	}
}

/* The master's own user (pid/ belongs to it): the -S USER being set up
 * for, else whoever runs the master. */
static uid_t master_uid;
static gid_t master_gid;

static void make_dirs(void)
{
	const char *spool = mxf_config_str(cfg, "main", "spool_dir");
	const char *data = mxf_config_str(cfg, "main", "data_dir");
	static const char *const states[] = {"tmp",  "incoming", "active", "deferred",
					     "hold", "corrupt",  "msg"};
	uid_t ruid = getuid();
	gid_t rgid = getgid();
	char path[PATH_MAX];

	if (!same_user && mxf_privdrop_lookup(mxf_config_str(cfg, "router", "user"), &ruid, &rgid) < 0)
		mxf_fatal("no such user %s ([router] user); create it or set [main] "
			  "run_as_invoking_user for development",
			  mxf_config_str(cfg, "router", "user"));
	for (size_t i = 0; i < NCHILD; i++) {
		uid_t u;
		gid_t g;
		if (children[i].off)
			continue;
		const char *name = mxf_config_str(cfg, children[i].section, "user");
		if (!same_user && mxf_privdrop_lookup(name, &u, &g) < 0)
			mxf_fatal("no such user %s ([%s] user)", name, children[i].section);
	}
	make_parents(spool);
	make_parents(data);
	/* The spool's top is root's (the state directories below are the
	 * router's), except for a development master without privileges. */
	make_dir(spool, 0755, same_user ? geteuid() : 0, same_user ? getegid() : 0);
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", spool, states[i]);
		make_dir(path, 0700, ruid, rgid);
	}
	/* private/ holds only the router's socket; the other daemons are jailed
	 * in it and may traverse it (0711) but not list it. */
	snprintf(path, sizeof(path), "%s/private", spool);
	make_dir(path, 0711, ruid, rgid);
	snprintf(pid_dir, sizeof(pid_dir), "%s/pid", spool);
	make_dir(pid_dir, 0755, master_uid, master_gid);
	/* apid shares the router's group (its only group) and writes rules.db,
	 * whose rollback journal SQLite creates beside it: the data directory is
	 * then group-writable, with the sticky bit so apid can neither remove
	 * nor rename the router's files. Private files there stay private (the
	 * router makes them 0600 and dkim/ 0700). */
	make_dir(data, mxf_api_enabled(cfg) ? 01770 : 0750, ruid, rgid);
	if (mxf_api_enabled(cfg) && !same_user) {
		/* rules.db made before the API was on is 0640: make it writable
		 * for the group, through a descriptor (no symlink followed). */
		snprintf(path, sizeof(path), "%s/rules.db", data);
		int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
		struct stat st;
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    (st.st_mode & 0060) != 0060 && fchmod(fd, (st.st_mode & 0777) | 0060) < 0)
			mxf_warn("cannot make %s group-writable for apid: %s", path,
				 strerror(errno));
		if (fd >= 0)
			close(fd);
	}
}

static void write_status(void)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s/status.tmp", pid_dir);
	snprintf(path, sizeof(path), "%s/status", pid_dir);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		mxf_warn("cannot write %s: %s", tmp, strerror(errno));
		return;
	}
	/* Readable by all whatever our umask: mxferryctl status and the
	 * router's metrics (restarts per daemon) read it unprivileged. */
	fchmod(fileno(f), 0644);
	fprintf(f, "mxferryd %ld %ld 0\n", (long)getpid(), (long)master_started);
	for (size_t i = 0; i < NCHILD; i++)
		if (!children[i].off)
			fprintf(f, "%s %ld %ld %u\n", children[i].name, (long)children[i].pid,
				(long)children[i].started, children[i].restarts);
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		mxf_warn("cannot write %s: %s", path, strerror(errno));
}

static void start_child(struct child *c)
{
	char prog[PATH_MAX];
	snprintf(prog, sizeof(prog), "%s/%s", daemon_dir, c->name);
	bool is_smtpd = strcmp(c->name, "smtpd") == 0;
	bool is_router = strcmp(c->name, "router") == 0;
	bool is_apid = strcmp(c->name, "apid") == 0;
	if (c->off)
		return;

	pid_t pid = fork();
	if (pid < 0) {
		mxf_err("fork for %s: %s", c->name, strerror(errno));
		c->restart_at_ms = now_ms() + 1000;
		return;
	}
	if (pid == 0) {
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		/* Listeners go to fds 3.. (systemd's convention): smtpd's SMTP
		 * listeners, the router's metrics listener. */
		int n = is_smtpd ? nlisten : is_router && metrics_fd >= 0 ? 1 : is_apid ? 1 : 0;
		const int *src = is_smtpd ? listen_fds : is_apid ? &api_fd : &metrics_fd;
		int high[MAX_LISTEN];
		for (int i = 0; i < n; i++)
			if ((high[i] = fcntl(src[i], F_DUPFD, 100)) < 0)
				_exit(127);
		for (int i = 0; i < n; i++)
			if (dup2(high[i], 3 + i) < 0)
				_exit(127);
		closefrom(3 + n);
		char nbuf[16];
		snprintf(nbuf, sizeof(nbuf), "%d", n);
		if (n > 0)
			setenv("MXF_LISTEN_FDS", nbuf, 1);
		else
			unsetenv("MXF_LISTEN_FDS");
		char *argv[] = {prog, "-c", (char *)mxf_config_file(cfg), use_syslog ? "-s" : NULL,
				NULL};
		execv(prog, argv);
		fprintf(stderr, "mxferryd: exec %s: %s\n", prog, strerror(errno));
		_exit(127);
	}
	c->pid = pid;
	c->started = time(NULL);
	c->restart_at_ms = 0;
	mxf_info("started %s (pid %ld)", c->name, (long)pid);
	write_status();
}

/* smtpd processes replaced at a reload, finishing the messages they were
 * receiving (they exit by themselves within [smtpd] shutdown_timeout). */
#define MAX_RETIRING 8
static pid_t retiring[MAX_RETIRING];

static void reaped(pid_t pid, int status)
{
	for (size_t i = 0; i < MAX_RETIRING; i++)
		if (retiring[i] == pid) {
			retiring[i] = 0;
			mxf_info("retired smtpd (pid %ld) has finished", (long)pid);
			return;
		}
	for (size_t i = 0; i < NCHILD; i++) {
		struct child *c = &children[i];
		if (c->pid != pid)
			continue;
		time_t ran = time(NULL) - c->started;
		char how[64];
		if (WIFSIGNALED(status))
			snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(status));
		else
			snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
		/* A daemon that ran a while restarts at once; one that dies early
		 * (bad config, missing library) is throttled so it cannot spin. */
		if (ran >= 10)
			c->backoff_ms = 100;
		else
			c->backoff_ms = c->backoff_ms < 500 ? 500 : c->backoff_ms * 2;
		if (c->backoff_ms > 60000)
			c->backoff_ms = 60000;
		c->pid = 0;
		c->restarts++;
		c->restart_at_ms = now_ms() + c->backoff_ms;
		mxf_warn("%s (pid %ld) %s after %lds; restarting in %lld ms", c->name, (long)pid,
			 how, (long)ran, (long long)c->backoff_ms);
		write_status();
		return;
	}
}

static void reap_all(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		reaped(pid, status);
}

static void retire(pid_t pid)
{
	for (size_t i = 0; i < MAX_RETIRING; i++)
		if (retiring[i] == 0) {
			retiring[i] = pid;
			kill(pid, SIGTERM);
			return;
		}
	kill(pid, SIGKILL); /* reloads faster than sessions end: no more room */
}

/* Reaps what exited; returns how many of the given pids are still alive. */
static int reap_and_count(bool smtpd_only)
{
	int status, left = 0;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < NCHILD; i++)
			if (children[i].pid == pid)
				children[i].pid = 0;
		for (size_t i = 0; i < MAX_RETIRING; i++)
			if (retiring[i] == pid)
				retiring[i] = 0;
	}
	for (size_t i = 0; i < NCHILD; i++)
		if (!smtpd_only || strcmp(children[i].name, "smtpd") == 0)
			left += children[i].pid > 0;
	for (size_t i = 0; i < MAX_RETIRING; i++)
		left += retiring[i] > 0;
	return left;
}

static void kill_left(void)
{
	int status;
	for (size_t i = 0; i < NCHILD; i++) {
		if (children[i].pid > 0) {
			mxf_warn("%s (pid %ld) did not stop; killing it", children[i].name,
				 (long)children[i].pid);
			kill(children[i].pid, SIGKILL);
			waitpid(children[i].pid, &status, 0);
			children[i].pid = 0;
		}
	}
	for (size_t i = 0; i < MAX_RETIRING; i++) {
		if (retiring[i] > 0) {
			kill(retiring[i], SIGKILL);
			waitpid(retiring[i], &status, 0);
			retiring[i] = 0;
		}
	}
}

/* smtpd stops first and may finish the messages it is receiving; the router
 * (and what it needs) keeps running until then, so those messages can still
 * be committed and answered 250. */
static void stop_all(void)
{
	int64_t deadline = now_ms() + STOP_GRACE_MS;
	for (size_t i = 0; i < NCHILD; i++)
		if (children[i].pid > 0 && strcmp(children[i].name, "smtpd") == 0)
			kill(children[i].pid, SIGTERM);
	for (size_t i = 0; i < MAX_RETIRING; i++)
		if (retiring[i] > 0)
			kill(retiring[i], SIGTERM);
	int64_t smtpd_deadline = now_ms() + SMTPD_STOP_MS;
	while (reap_and_count(true) > 0 && now_ms() < smtpd_deadline)
		usleep(20000);
	for (size_t i = 0; i < NCHILD; i++)
		if (children[i].pid > 0)
			kill(children[i].pid, SIGTERM);
	while (reap_and_count(false) > 0) {
		if (now_ms() >= deadline) {
			kill_left();
			break;
		}
		usleep(20000);
	}
}

static bool daemons_in(const char *dir, const char **missing)
{
	for (size_t i = 0; i < NCHILD; i++) {
		char prog[PATH_MAX];
		snprintf(prog, sizeof(prog), "%s/%s", dir, children[i].name);
		if (!children[i].off && access(prog, X_OK) < 0) {
			*missing = children[i].name;
			return false;
		}
	}
	return true;
}

/* [main] daemon_dir if set; else beside mxferryd (a build tree's bin/);
 * else the compiled-in MXF_DAEMON_DIR (an installed package). */
static void find_daemon_dir(void)
{
	const char *d = mxf_config_str(cfg, "main", "daemon_dir"), *missing = "";
	if (d[0]) {
		snprintf(daemon_dir, sizeof(daemon_dir), "%s", d);
	} else {
		ssize_t n = readlink("/proc/self/exe", daemon_dir, sizeof(daemon_dir) - 1);
		if (n < 0)
			mxf_fatal("cannot find my own path: %s", strerror(errno));
		daemon_dir[n] = '\0';
		char *slash = strrchr(daemon_dir, '/');
		*slash = '\0';
		if (!daemons_in(daemon_dir, &missing) && MXF_DAEMON_DIR[0])
			snprintf(daemon_dir, sizeof(daemon_dir), "%s", MXF_DAEMON_DIR);
	}
	if (!daemons_in(daemon_dir, &missing))
		mxf_fatal("daemon %s not found in %s ([main] daemon_dir)", missing, daemon_dir);
}

static int take_pidfile(void)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/master.pid", pid_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		mxf_fatal("cannot open %s: %s", path, strerror(errno));
	/* The lock, not the file's existence, says a master is running. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		mxf_fatal("another mxferryd is running (%s is locked)", path);
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || write(fd, buf, (size_t)n) != n)
		mxf_fatal("cannot write %s", path);
	return fd;
}

static void daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		mxf_fatal("fork: %s", strerror(errno));
	if (pid > 0)
		_exit(0);
	setsid();
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

int main(int argc, char **argv)
{
	const char *path = "/etc/mxferry/mxferry.conf";
	bool foreground = false;
	const char *setup_for = NULL;
	char err[512];
	int c;

	while ((c = getopt(argc, argv, "c:fhS:")) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 'f': foreground = true; break;
		case 'S': setup_for = optarg; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	mxf_log_init("mxferryd", 0);
	take_notify_socket();
	if (mxf_config_load(path, &cfg, err, sizeof(err)) < 0)
		mxf_fatal("%s", err);
	if (strcmp(mxf_config_str(cfg, "main", "log_level"), "debug") == 0)
		mxf_log_set_level(MXF_LOG_DEBUG);

	/* Privilege separation needs a master that may take the daemons'
	 * identities: root, or the packaged service user with CAP_SETUID and
	 * CAP_SETGID as ambient capabilities. */
	same_user = !mxf_privdrop_capable() || mxf_config_bool(cfg, "main", "run_as_invoking_user");
	master_uid = geteuid();
	master_gid = getegid();
	for (size_t i = 0; i < NCHILD; i++)
		children[i].off = strcmp(children[i].name, "apid") == 0 && !mxf_api_enabled(cfg);
	if (setup_for) {
		if (geteuid() != 0)
			mxf_fatal("-S: the directories are set up as root");
		if (mxf_privdrop_lookup(setup_for, &master_uid, &master_gid) < 0)
			mxf_fatal("-S: no such user %s", setup_for);
		make_dirs();
		mxf_info("directories set up for a master running as %s", setup_for);
		return 0;
	}
	if (mxf_api_enabled(cfg) &&
	    (api_fd = mxf_listen_bind_one(mxf_config_str(cfg, "api", "listen"), "[api] listen", err,
					  sizeof(err))) < 0)
		mxf_fatal("%s", err);
	find_daemon_dir();
	make_dirs();

	nlisten = mxf_listen_bind_all(mxf_config_str(cfg, "smtpd", "listen"), listen_fds, MAX_LISTEN,
				      err, sizeof(err));
	if (nlisten < 0)
		mxf_fatal("%s", err);
	const char *mlisten = mxf_config_str(cfg, "main", "metrics_listen");
	if (mlisten[0] &&
	    (metrics_fd = mxf_listen_bind_one(mlisten, "[main] metrics_listen", err, sizeof(err))) < 0)
		mxf_fatal("%s", err);

	if (!foreground) {
		daemonize();
		use_syslog = true;
		mxf_log_init("mxferryd", 1);
	}
	int pidfd = take_pidfile();
	master_started = time(NULL);

	struct passwd *pw = getpwuid(geteuid());
	if (!mxf_privdrop_capable())
		mxf_warn("started without root or CAP_SETUID+CAP_SETGID: every daemon runs as the "
			 "invoking user %s (uid %ld)",
			 pw ? pw->pw_name : "?", (long)geteuid());
	else if (same_user)
		mxf_warn("DEVELOPMENT MODE ([main] run_as_invoking_user = yes): every daemon runs as "
			 "%s (uid %ld) with no privilege separation; never use this in production",
			 pw ? pw->pw_name : "?", (long)geteuid());
	mxf_info("starting: config %s, daemons from %s, listening on %s", mxf_config_file(cfg),
		 daemon_dir, mxf_config_str(cfg, "smtpd", "listen"));

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		mxf_fatal("signalfd: %s", strerror(errno));

	for (size_t i = 0; i < NCHILD; i++)
		start_child(&children[i]);
	/* Ready: the listeners are bound (connections wait in their backlog
	 * until smtpd accepts) and every daemon has been started. */
	notify("READY=1\nSTATUS=running");

	bool running = true;
	while (running) {
		int64_t now = now_ms(), wait = -1;
		for (size_t i = 0; i < NCHILD; i++) {
			struct child *ch = &children[i];
			if (ch->pid == 0 && ch->restart_at_ms) {
				if (ch->restart_at_ms <= now)
					start_child(ch);
				else if (wait < 0 || ch->restart_at_ms - now < wait)
					wait = ch->restart_at_ms - now;
			}
		}
		struct pollfd pfd = {.fd = sfd, .events = POLLIN};
		int r = poll(&pfd, 1, wait < 0 ? -1 : (int)(wait > INT_MAX ? INT_MAX : wait));
		if (r < 0 && errno != EINTR)
			mxf_fatal("poll: %s", strerror(errno));
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
			switch (si.ssi_signo) {
			case SIGCHLD:
				reap_all();
				break;
			case SIGHUP:
				/* The router reloads its rules in place; smtpd is replaced
				 * by a new one that reads the new configuration while the
				 * old one finishes what it is receiving. deliverd and the
				 * bouncer keep running (their settings need a restart). */
				mxf_info("reload requested");
				notify("RELOADING=1");
				for (size_t i = 0; i < NCHILD; i++) {
					struct child *ch = &children[i];
					if (ch->pid <= 0)
						continue;
					if (strcmp(ch->name, "router") == 0) {
						kill(ch->pid, SIGHUP);
					} else if (strcmp(ch->name, "smtpd") == 0) {
						pid_t old = ch->pid;
						start_child(ch);
						mxf_info("smtpd (pid %ld) retires after its sessions",
							 (long)old);
						retire(old);
					}
				}
				notify("READY=1");
				break;
			default:
				running = false;
			}
		}
	}
	mxf_info("stopping");
	notify("STOPPING=1");
	stop_all();
	for (int i = 0; i < nlisten; i++)
		close(listen_fds[i]);
	if (metrics_fd >= 0)
		close(metrics_fd);
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/status", pid_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/master.pid", pid_dir);
	unlink(p);
	close(pidfd);
	mxf_info("stopped");
	mxf_config_free(cfg);
	return 0;
}
