/* apid (issue 12): the REST API and the dashboard's static files, an
 * unprivileged daemon under the master. The master binds [api] listen and
 * hands the socket over as fd 3; apid drops to [api] user with the router's
 * group (rules.db read/write, activity.db read) and serves HTTP with
 * libmicrohttpd from one internal thread, so requests are handled one at a
 * time against one rules.db connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "privdrop.h"
#include "rulesdb.h"

#define API_PREFIX "/client/v4"

static struct {
	struct mxf_config *cfg;
	struct mxf_rulesdb *db;
	struct api *api;
	size_t max_body;
	long long rate_limit, rate_window;
	char www[PATH_MAX];
	unsigned long long requests, refused_auth, limited;
} A;

/* ---- per-client-IP rate limit: fixed windows in a small hash table ----
 * A collision shares (or resets) a slot: at worst a client gets a fresh
 * window early, never a wrong refusal for long. */
#define RATE_SLOTS 1024
struct rate_slot {
	char ip[INET6_ADDRSTRLEN];
	time_t window;
	long long count;
};
static struct rate_slot rates[RATE_SLOTS];

static bool rate_ok(const char *ip)
{
	if (A.rate_limit <= 0)
		return true;
	uint32_t h = 2166136261u;
	for (const char *p = ip; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	struct rate_slot *s = &rates[h % RATE_SLOTS];
	time_t now = time(NULL), w = now - now % A.rate_window;
	if (strcmp(s->ip, ip) != 0 || s->window != w) {
		snprintf(s->ip, sizeof(s->ip), "%s", ip);
		s->window = w;
		s->count = 0;
	}
	return ++s->count <= A.rate_limit;
}

/* ---- a request's state across libmicrohttpd's calls ---- */
struct req {
	char *body;
	size_t len, cap;
	bool too_big, limited;
};

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
		      enum MHD_RequestTerminationCode code)
{
	(void)cls;
	(void)c;
	(void)code;
	struct req *rq = *con_cls;
	if (rq) {
		free(rq->body);
		free(rq);
		*con_cls = NULL;
	}
}

static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status, const char *type,
				char *body)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		body ? strlen(body) : 0, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE
								       : MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	enum MHD_Result r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, int code,
				  const char *msg)
{
	return send_buf(c, status, "application/json", api_error_body(code, msg));
}

static const char *query_arg(void *cls, const char *name)
{
	return MHD_lookup_connection_value(cls, MHD_GET_ARGUMENT_KIND, name);
}

static void client_ip(struct MHD_Connection *c, char *out, size_t len)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	snprintf(out, len, "?");
	if (!ci || !ci->client_addr)
		return;
	const struct sockaddr *sa = ci->client_addr;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
			  (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
			  (socklen_t)len);
}

/* ---- the dashboard's files ---- */

static const char *content_type(const char *path)
{
	static const struct {
		const char *ext, *type;
	} t[] = {{".html", "text/html; charset=utf-8"},
		 {".js", "text/javascript; charset=utf-8"},
		 {".mjs", "text/javascript; charset=utf-8"},
		 {".css", "text/css; charset=utf-8"},
		 {".svg", "image/svg+xml"},
		 {".png", "image/png"},
		 {".ico", "image/x-icon"},
		 {".json", "application/json"},
		 {".txt", "text/plain; charset=utf-8"}};
	const char *dot = strrchr(path, '.');
	for (size_t i = 0; dot && i < sizeof(t) / sizeof(t[0]); i++)
		if (strcasecmp(dot, t[i].ext) == 0)
			return t[i].type;
	return "application/octet-stream";
}

/* A path is served only when every segment is [A-Za-z0-9_-][A-Za-z0-9._-]*:
 * no "..", no hidden files, no encoded tricks (MHD has decoded the URL). */
static bool www_path_ok(const char *p)
{
	if (*p != '/' || strlen(p) > 200)
		return false;
	bool seg_start = true;
	for (const char *c = p + 1; *c; c++) {
		bool alnum = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			     (*c >= '0' && *c <= '9') || *c == '_' || *c == '-';
		if (*c == '/') {
			if (seg_start)
				return false;
			seg_start = true;
		} else if (seg_start) {
			if (!alnum)
				return false;
			seg_start = false;
		} else if (!alnum && *c != '.') {
			return false;
		}
	}
	return true;
}

static enum MHD_Result serve_file(struct MHD_Connection *c, const char *method, const char *url)
{
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return send_error(c, 405, 10405, "method not allowed");
	const char *rel = strcmp(url, "/") == 0 ? "/index.html" : url;
	if (!www_path_ok(rel))
		return send_error(c, 404, 7000, "not found");
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s%s", A.www, rel) >= (int)sizeof(path))
		return send_error(c, 404, 7000, "not found");
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		return send_error(c, 404, 7000, "not found");
	}
	struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
	if (!resp) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", content_type(rel));
	MHD_add_response_header(resp, "Cache-Control", "no-cache");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	enum MHD_Result r = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return r;
}

/* ---- /metrics: apid's own counters, then the router's ----
 * The router serves its metrics on [main] metrics_listen (loopback, no auth);
 * apid fetches them (2 s at most) so one authenticated scrape has both. */

static char *router_metrics(void)
{
	const char *spec = mxf_config_str(A.cfg, "main", "metrics_listen");
	struct sockaddr_storage ss;
	unsigned sl;
	if (!spec[0] || mxf_config_sockaddr(spec, &ss, &sl) < 0)
		return NULL;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct timeval tv = {2, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	static const char req[] = "GET /metrics HTTP/1.0\r\nHost: router\r\n\r\n";
	char *buf = NULL;
	size_t len = 0, cap = 0;
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0 ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
		goto fail;
	for (;;) {
		if (len + 4096 + 1 > cap) {
			if (cap >= 8u << 20)
				goto fail;
			cap = cap ? cap * 2 : 65536;
			char *nb = realloc(buf, cap);
			if (!nb)
				goto fail;
			buf = nb;
		}
		ssize_t n = read(fd, buf + len, 4096);
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (!buf)
		return NULL;
	buf[len] = '\0';
	char *body = strstr(buf, "\r\n\r\n");
	if (strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 8, " 200", 4) != 0 || !body) {
		free(buf);
		return NULL;
	}
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
fail:
	close(fd);
	free(buf);
	return NULL;
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c)
{
	char *b = NULL;
	char *rm = router_metrics();
	if (asprintf(&b,
		     "# HELP mxferry_api_requests_total HTTP requests apid answered.\n"
		     "# TYPE mxferry_api_requests_total counter\n"
		     "mxferry_api_requests_total %llu\n"
		     "# HELP mxferry_api_auth_failures_total Requests refused for a missing or bad "
		     "token.\n"
		     "# TYPE mxferry_api_auth_failures_total counter\n"
		     "mxferry_api_auth_failures_total %llu\n"
		     "# HELP mxferry_api_rate_limited_total Requests refused by the rate limit.\n"
		     "# TYPE mxferry_api_rate_limited_total counter\n"
		     "mxferry_api_rate_limited_total %llu\n"
		     "# HELP mxferry_api_router_metrics_up Whether the router's metrics "
		     "([main] metrics_listen) follow.\n"
		     "# TYPE mxferry_api_router_metrics_up gauge\n"
		     "mxferry_api_router_metrics_up %d\n%s",
		     A.requests, A.refused_auth, A.limited, rm ? 1 : 0, rm ? rm : "") < 0) {
		free(rm);
		return MHD_NO;
	}
	free(rm);
	return send_buf(c, 200, "text/plain; version=0.0.4", b);
}

/* ---- dispatch ---- */

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
			       const char *method, const char *version, const char *upload,
			       size_t *upload_size, void **con_cls)
{
	(void)cls;
	(void)version;
	struct req *rq = *con_cls;
	if (!rq) {
		if (!(rq = calloc(1, sizeof(*rq))))
			return MHD_NO;
		*con_cls = rq;
		char ip[INET6_ADDRSTRLEN];
		client_ip(c, ip, sizeof(ip));
		rq->limited = !rate_ok(ip);
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
		if (cl && strtoull(cl, NULL, 10) > A.max_body)
			rq->too_big = true;
		return MHD_YES;
	}
	if (*upload_size) {
		/* Bodies past max_body are read and dropped, then refused. */
		if (!rq->too_big && !rq->limited) {
			if (rq->len + *upload_size > A.max_body) {
				rq->too_big = true;
			} else {
				if (rq->len + *upload_size + 1 > rq->cap) {
					size_t cap = (rq->len + *upload_size + 1) * 2;
					if (cap > A.max_body + 1)
						cap = A.max_body + 1;
					char *nb = realloc(rq->body, cap);
					if (!nb)
						return MHD_NO;
					rq->body = nb;
					rq->cap = cap;
				}
				memcpy(rq->body + rq->len, upload, *upload_size);
				rq->len += *upload_size;
			}
		}
		*upload_size = 0;
		return MHD_YES;
	}
	A.requests++;
	if (rq->limited) {
		A.limited++;
		return send_error(c, 429, 971, "rate limited: too many requests");
	}
	if (rq->too_big)
		return send_error(c, 413, 10413, "request body too large");

	bool is_api = strncmp(url, API_PREFIX, strlen(API_PREFIX)) == 0 &&
		      (url[strlen(API_PREFIX)] == '/' || url[strlen(API_PREFIX)] == '\0');
	bool is_metrics = strcmp(url, "/metrics") == 0;
	if (!is_api && !is_metrics)
		return serve_file(c, method, url);

	/* Bearer tokens only; the comparison is on a hash, in constant time. */
	const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	char id[33] = "", name[65] = "";
	bool ro = false;
	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 ||
	    mxf_rulesdb_token_check(A.db, auth + 7, id, name, &ro) < 0) {
		A.refused_auth++;
		return send_error(c, 401, 10000, "Authentication error");
	}
	if (is_metrics)
		return serve_metrics(c);

	char actor[80];
	snprintf(actor, sizeof(actor), "token:%s", name);
	mxf_rulesdb_set_actor(A.db, actor);
	struct api_req q = {
		.method = method,
		.path = url + strlen(API_PREFIX),
		.arg = query_arg,
		.arg_cls = c,
		.body = rq->body ? rq->body : "",
		.bodylen = rq->len,
		.token_id = id,
		.token_name = name,
		.read_only = ro,
	};
	struct api_resp resp;
	api_handle(A.api, &q, &resp);
	if (strcmp(method, "GET") != 0)
		mxf_info("%s %s by token %s: %u", method, url, name, resp.status);
	return send_buf(c, resp.status, "application/json", resp.body);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	mxf_warn("http: %s", buf);
}

static char *read_pem(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		mxf_fatal("cannot read %s: %s", path, strerror(errno));
	char *b = calloc(1, 65537);
	size_t n = b ? fread(b, 1, 65536, f) : 0;
	fclose(f);
	if (!b || n == 0 || n == 65536)
		mxf_fatal("%s: empty or too large", path);
	return b;
}

int main(int argc, char **argv)
{
	A.cfg = mxf_daemon_init(argc, argv, "apid");
	const struct mxf_config *cfg = A.cfg;
	const char *fds = getenv("MXF_LISTEN_FDS");
	if (!fds || strcmp(fds, "1") != 0)
		mxf_fatal("no listening socket from the master (MXF_LISTEN_FDS)");
	unsetenv("MXF_LISTEN_FDS");
	A.max_body = (size_t)mxf_config_int(cfg, "api", "max_body");
	A.rate_limit = mxf_config_int(cfg, "api", "rate_limit");
	A.rate_window = mxf_config_int(cfg, "api", "rate_window");
	snprintf(A.www, sizeof(A.www), "%s", mxf_config_str(cfg, "api", "www_dir"));

	/* TLS material is read before the privilege drop (the key is not
	 * readable by apid's user). */
	char *cert = NULL, *key = NULL;
	if (mxf_config_bool(cfg, "api", "tls")) {
		const char *cp = mxf_config_str(cfg, "api", "tls_cert");
		const char *kp = mxf_config_str(cfg, "api", "tls_key");
		if (!cp[0] || !kp[0]) {
			cp = mxf_config_str(cfg, "smtpd", "tls_cert");
			kp = mxf_config_str(cfg, "smtpd", "tls_key");
		}
		if (!cp[0] || !kp[0])
			mxf_fatal("[api] tls: no certificate ([api] or [smtpd] tls_cert/tls_key)");
		cert = read_pem(cp);
		key = read_pem(kp);
	}

	/* As [api] user, with the router's group as its only group: rules.db
	 * and the data directory are group-writable for it (the master sets
	 * that up when the API is on); the spool and the router's private
	 * files (srs.secret, dkim/) stay out of reach. No chroot: apid reads
	 * www_dir and data_dir. */
	bool dev = mxf_config_bool(cfg, "main", "run_as_invoking_user") || !mxf_privdrop_capable();
	if (mxf_privdrop_as(dev ? NULL : mxf_config_str(cfg, "api", "user"),
			    dev ? NULL : mxf_config_str(cfg, "router", "user"), NULL) < 0)
		mxf_fatal("cannot drop privileges");

	char path[PATH_MAX], err[512];
	snprintf(path, sizeof(path), "%s/rules.db", mxf_config_str(cfg, "main", "data_dir"));
	if (mxf_rulesdb_open(path, true, &A.db, err, sizeof(err)) < 0)
		mxf_fatal("%s", err);
	if (!(A.api = api_new(cfg, A.db)))
		mxf_fatal("out of memory");

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	/* Blocked before MHD's thread exists, so only sigwait below sees them. */
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_POLL;
	if (cert)
		flags |= MHD_USE_TLS;
	struct MHD_Daemon *d;
	if (cert)
		d = MHD_start_daemon(flags, 0, NULL, NULL, handler, NULL, MHD_OPTION_LISTEN_SOCKET,
				     (MHD_socket)3, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
				     MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				     MHD_OPTION_CONNECTION_LIMIT, 256u,
				     MHD_OPTION_PER_IP_CONNECTION_LIMIT, 32u,
				     MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_HTTPS_MEM_CERT, cert,
				     MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
	else
		d = MHD_start_daemon(flags, 0, NULL, NULL, handler, NULL, MHD_OPTION_LISTEN_SOCKET,
				     (MHD_socket)3, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
				     MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				     MHD_OPTION_CONNECTION_LIMIT, 256u,
				     MHD_OPTION_PER_IP_CONNECTION_LIMIT, 32u,
				     MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
	if (!d)
		mxf_fatal("cannot start the HTTP server");
	if (key) {
		explicit_bzero(key, strlen(key));
	}
	mxf_info("serving the API%s (www %s)", cert ? " over TLS" : "", A.www);

	for (;;) {
		int sig = 0;
		if (sigwait(&mask, &sig) != 0)
			continue;
		if (sig == SIGHUP)
			continue; /* nothing to reload: rules.db is read per request */
		break;
	}
	mxf_info("stopping");
	MHD_stop_daemon(d);
	api_free(A.api);
	mxf_rulesdb_close(A.db);
	free(cert);
	free(key);
	mxf_config_free(A.cfg);
	return 0;
}
