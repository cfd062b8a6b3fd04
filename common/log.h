/* log: one line per event to stderr or syslog; untrusted strings go through
 * mxf_log_escape first so a client cannot forge log lines. */
#ifndef MXF_LOG_H
#define MXF_LOG_H

#include <stddef.h>

enum mxf_log_level { MXF_LOG_ERR = 3, MXF_LOG_WARN = 4, MXF_LOG_INFO = 6, MXF_LOG_DEBUG = 7 };

/* progname appears as mxferry/PROGNAME[pid]; use_syslog sends lines to syslog(3). */
void mxf_log_init(const char *progname, int use_syslog);
void mxf_log_set_level(int level);
void mxf_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Environment failure: log and exit(1); the master restarts the daemon. */
void mxf_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define mxf_err(...) mxf_log(MXF_LOG_ERR, __VA_ARGS__)
#define mxf_warn(...) mxf_log(MXF_LOG_WARN, __VA_ARGS__)
#define mxf_info(...) mxf_log(MXF_LOG_INFO, __VA_ARGS__)
#define mxf_debug(...) mxf_log(MXF_LOG_DEBUG, __VA_ARGS__)

/* Copies len bytes of src into dst (always NUL-terminated), escaping
 * non-printable bytes, backslash and space-like controls as \xHH. Returns dst. */
char *mxf_log_escape(char *dst, size_t cap, const char *src, size_t len);

#endif
