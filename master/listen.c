#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"

static int bind_one(const char *item, const char *key, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	unsigned sl;
	int one = 1;

	int r = mxf_config_sockaddr(item, &ss, &sl);
	if (r == -EAFNOSUPPORT) {
		snprintf(err, errlen, "%s: '%s' is not an IP address", key, item);
		return -EINVAL;
	}
	if (r < 0) {
		snprintf(err, errlen, "%s: bad address '%s' (want addr:port)", key, item);
		return -EINVAL;
	}
	int s = socket(ss.ss_family, SOCK_STREAM, 0);
	if (s < 0)
		return -errno;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* [::] must not also grab IPv4: "0.0.0.0:25,[::]:25" binds both. */
	if (ss.ss_family == AF_INET6)
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&ss, (socklen_t)sl) < 0 || listen(s, 1024) < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot listen on %s: %s", item, strerror(e));
		close(s);
		return -e;
	}
	return s;
}

int mxf_listen_bind_all(const char *spec, int *fds, size_t max, char *err, size_t errlen)
{
	char *copy = strdup(spec), *save = NULL;
	size_t n = 0;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		if (n == max) {
			snprintf(err, errlen, "[smtpd] listen: more than %zu addresses", max);
			r = -E2BIG;
			break;
		}
		int s = bind_one(tok, "[smtpd] listen", err, errlen);
		if (s < 0) {
			r = s;
			break;
		}
		fds[n++] = s;
	}
	free(copy);
	if (r == 0 && n == 0) {
		snprintf(err, errlen, "[smtpd] listen: no address");
		r = -EINVAL;
	}
	if (r < 0) {
		while (n > 0)
			close(fds[--n]);
		return r;
	}
	return (int)n;
}

int mxf_listen_bind_one(const char *item, const char *key, char *err, size_t errlen)
{
	return bind_one(item, key, err, errlen);
}
