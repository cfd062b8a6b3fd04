#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static char log_prog[32] = "mxferry";
static int log_syslog;
static int log_level = MXF_LOG_INFO;

void mxf_log_init(const char *progname, int use_syslog)
{
	snprintf(log_prog, sizeof(log_prog), "%s", progname);
	log_syslog = use_syslog;
	if (use_syslog)
		openlog("mxferry", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void mxf_log_set_level(int level)
{
	log_level = level;
}

static void log_v(int level, const char *fmt, va_list ap)
{
	char msg[2048];

	if (level > log_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_syslog) {
		syslog(level, "%s: %s", log_prog, msg);
		return;
	}
	char ts[32];
	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One write per line so lines of several processes never interleave. */
	char line[2300];
	int n = snprintf(line, sizeof(line), "%s.%03ldZ mxferry/%s[%ld]: %s%s\n", ts,
			 now.tv_nsec / 1000000, log_prog, (long)getpid(),
			 level <= MXF_LOG_ERR ? "error: " : level == MXF_LOG_WARN ? "warning: " : "",
			 msg);
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
