#include "log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "queueid.h"

static char log_prog[32] = "mxferry";
/* "mxferry/PROG": the syslog identifier, Postfix's "postfix/smtpd" shape,
 * which pflogsumm --syslog-name=mxferry parses. openlog keeps the pointer. */
static char log_ident[48] = "mxferry";
static int log_syslog;
static int log_level = MXF_LOG_INFO;
static int journal_fd = -1;

/* True when stderr is the journal's stream (systemd sets JOURNAL_STREAM to
 * the "dev:ino" of the socket it gave us as stderr); a redirected stderr
 * keeps plain lines. */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Connects to journald's native socket now, before any chroot: a connected
 * datagram socket keeps working inside the jail, where the path does not
 * exist. MXF_JOURNAL_SOCKET replaces the path (tests run a fake journald). */
static void journal_open(void)
{
	if (journal_fd >= 0) {
		close(journal_fd);
		journal_fd = -1;
	}
	if (!stderr_is_journal())
		return;
	const char *path = getenv("MXF_JOURNAL_SOCKET");
	if (!path || !*path)
		path = "/run/systemd/journal/socket";
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return;
	}
	journal_fd = fd;
}

void mxf_log_init(const char *progname, int use_syslog)
{
	snprintf(log_prog, sizeof(log_prog), "%s", progname);
	snprintf(log_ident, sizeof(log_ident), "mxferry/%s", progname);
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	else
		journal_open();
}

/* One journal entry in the native protocol: KEY=value lines; MESSAGE in the
 * length-prefixed form, so no byte of it can start a forged field. QUEUE_ID
 * when the line starts with a queue ID ("QID: ..."), for journalctl
 * QUEUE_ID=... to show one message's whole path. Returns 0 if sent. */
static int journal_send(int level, const char *tag, const char *msg)
{
	char head[256], qid[MXF_QID_SIZE] = "";
	size_t tlen = strlen(tag), mlen = strlen(msg);
	if (mlen > MXF_QID_LEN && msg[MXF_QID_LEN] == ':') {
		memcpy(qid, msg, MXF_QID_LEN);
		qid[MXF_QID_LEN] = '\0';
		if (!mxf_qid_valid(qid))
			qid[0] = '\0';
	}
	int n = snprintf(head, sizeof(head),
			 "PRIORITY=%d\nSYSLOG_FACILITY=%d\nSYSLOG_IDENTIFIER=%s\nSYSLOG_PID=%ld\n"
			 "%s%s%sMESSAGE\n",
			 level, LOG_MAIL >> 3, log_ident, (long)getpid(), qid[0] ? "QUEUE_ID=" : "",
			 qid, qid[0] ? "\n" : "");
	if (n < 0 || (size_t)n >= sizeof(head))
		return -1;
	uint8_t len[8];
	for (int i = 0; i < 8; i++)
		len[i] = (uint8_t)((uint64_t)(tlen + mlen) >> (8 * i));
	struct iovec iov[5] = {{head, (size_t)n},
			       {len, sizeof(len)},
			       {(void *)tag, tlen},
			       {(void *)msg, mlen},
			       {"\n", 1}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 5};
	return sendmsg(journal_fd, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

void mxf_log_set_level(int level)
{
	log_level = level;
}

__attribute__((format(printf, 2, 0))) static void log_v(int level, const char *fmt, va_list ap)
{
	char msg[2048];

	if (level > log_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* "warning: " as Postfix writes it (pflogsumm counts those). */
	const char *tag = level <= MXF_LOG_ERR ? "error: " : level == MXF_LOG_WARN ? "warning: " : "";
	if (log_syslog) {
		syslog(level, "%s%s", tag, msg);
		return;
	}
	/* The journal's stream would take the line too, but flat: the entry
	 * carries the daemon's identifier, priority and queue ID as fields. */
	if (journal_fd >= 0 && journal_send(level, tag, msg) == 0)
		return;
	char ts[32];
	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One write per line so lines of several processes never interleave. */
	char line[2300];
	int n = snprintf(line, sizeof(line), "%s.%03ldZ mxferry/%s[%ld]: %s%s\n", ts,
			 now.tv_nsec / 1000000, log_prog, (long)getpid(), tag, msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	ssize_t r = write(STDERR_FILENO, line, (size_t)n);
	(void)r;
}

void mxf_log(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(level, fmt, ap);
	va_end(ap);
}

void mxf_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v(MXF_LOG_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}

char *mxf_log_escape(char *dst, size_t cap, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (cap == 0)
		return dst;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			if (o + 1 >= cap)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 4 >= cap)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}
