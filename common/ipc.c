#include "ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HDR 8
#define FHDR 6

struct mxf_ipc_msg {
	uint8_t *buf;
	size_t len, cap;
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

struct mxf_ipc_msg *mxf_ipc_msg_new(uint16_t type)
{
	struct mxf_ipc_msg *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->cap = 512;
	m->buf = malloc(m->cap);
	if (!m->buf) {
		free(m);
		return NULL;
	}
	put16(m->buf, MXF_IPC_MAGIC);
	put16(m->buf + 2, type);
	put32(m->buf + 4, 0);
	m->len = HDR;
	return m;
}

void mxf_ipc_msg_free(struct mxf_ipc_msg *m)
{
	if (!m)
		return;
	free(m->buf);
	free(m);
}

struct mxf_ipc_msg *mxf_ipc_msg_dup(const struct mxf_ipc_msg *m)
{
	struct mxf_ipc_msg *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->buf = malloc(m->len);
	if (!d->buf) {
		free(d);
		return NULL;
	}
	memcpy(d->buf, m->buf, m->len);
	d->len = d->cap = m->len;
	return d;
}

int mxf_ipc_put_bytes(struct mxf_ipc_msg *m, uint16_t tag, const void *p, size_t len)
{
	if (len > MXF_IPC_MAX || m->len + FHDR + len > MXF_IPC_MAX)
		return -E2BIG;
	if (m->len + FHDR + len > m->cap) {
		size_t ncap = m->cap;
		while (ncap < m->len + FHDR + len)
			ncap *= 2;
		uint8_t *nb = realloc(m->buf, ncap);
		if (!nb)
			return -ENOMEM;
		m->buf = nb;
		m->cap = ncap;
	}
	put16(m->buf + m->len, tag);
	put32(m->buf + m->len + 2, (uint32_t)len);
	if (len)
		memcpy(m->buf + m->len + FHDR, p, len);
	m->len += FHDR + len;
	put32(m->buf + 4, (uint32_t)(m->len - HDR));
	return 0;
}

int mxf_ipc_put_str(struct mxf_ipc_msg *m, uint16_t tag, const char *s)
{
	return mxf_ipc_put_bytes(m, tag, s, strlen(s));
}

int mxf_ipc_put_u64(struct mxf_ipc_msg *m, uint16_t tag, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	return mxf_ipc_put_bytes(m, tag, b, 8);
}

const uint8_t *mxf_ipc_msg_data(const struct mxf_ipc_msg *m, size_t *len)
{
	*len = m->len;
	return m->buf;
}

struct field {
	uint16_t tag;
	uint32_t len;
	const uint8_t *p;
	char *str; /* lazily made NUL-terminated copy */
};

struct mxf_ipc_view {
	uint16_t type;
	size_t n;
	struct field *f;
};

int mxf_ipc_decode(const uint8_t *buf, size_t len, struct mxf_ipc_view **out)
{
	if (len < HDR || len > MXF_IPC_MAX || get16(buf) != MXF_IPC_MAGIC)
		return -EBADMSG;
	uint16_t type = get16(buf + 2);
	if (type == 0 || type >= MXF_MSG_TYPE_MAX || get32(buf + 4) != len - HDR)
		return -EBADMSG;
	/* First pass: validate and count. */
	size_t n = 0, off = HDR;
	while (off < len) {
		if (len - off < FHDR)
			return -EBADMSG;
		uint16_t tag = get16(buf + off);
		uint32_t fl = get32(buf + off + 2);
		if (tag == 0 || tag >= F_TAG_MAX || fl > len - off - FHDR)
			return -EBADMSG;
		off += FHDR + fl;
		n++;
	}
	struct mxf_ipc_view *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->type = type;
	v->n = n;
	v->f = calloc(n ? n : 1, sizeof(*v->f));
	if (!v->f) {
		free(v);
		return -ENOMEM;
	}
	off = HDR;
	for (size_t i = 0; i < n; i++) {
		v->f[i].tag = get16(buf + off);
		v->f[i].len = get32(buf + off + 2);
		v->f[i].p = buf + off + FHDR;
		off += FHDR + v->f[i].len;
	}
	*out = v;
	return 0;
}

void mxf_ipc_view_free(struct mxf_ipc_view *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++)
		free(v->f[i].str);
	free(v->f);
	free(v);
}

uint16_t mxf_ipc_type(const struct mxf_ipc_view *v)
{
	return v->type;
}

size_t mxf_ipc_count(const struct mxf_ipc_view *v, uint16_t tag)
{
	size_t c = 0;
	for (size_t i = 0; i < v->n; i++)
		c += v->f[i].tag == tag;
	return c;
}

static struct field *find(const struct mxf_ipc_view *v, uint16_t tag, size_t idx)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->f[i].tag == tag && idx-- == 0)
			return &v->f[i];
	return NULL;
}

const char *mxf_ipc_str(const struct mxf_ipc_view *v, uint16_t tag, size_t idx)
{
	struct field *f = find(v, tag, idx);
	if (!f || memchr(f->p, '\0', f->len))
		return NULL;
	if (!f->str) {
		f->str = malloc(f->len + 1);
		if (!f->str)
			return NULL;
		memcpy(f->str, f->p, f->len);
		f->str[f->len] = '\0';
	}
	return f->str;
}

int mxf_ipc_u64(const struct mxf_ipc_view *v, uint16_t tag, size_t idx, uint64_t *out)
{
	struct field *f = find(v, tag, idx);
	if (!f)
		return -ENOENT;
	if (f->len != 8)
		return -EBADMSG;
	uint64_t x = 0;
	for (int i = 7; i >= 0; i--)
		x = x << 8 | f->p[i];
	*out = x;
	return 0;
}

int mxf_ipc_bytes(const struct mxf_ipc_view *v, uint16_t tag, size_t idx, const uint8_t **p,
		  size_t *len)
{
	struct field *f = find(v, tag, idx);
	if (!f)
		return -ENOENT;
	*p = f->p;
	*len = f->len;
	return 0;
}

int mxf_ipc_send(int sock, const struct mxf_ipc_msg *m, int fd)
{
	struct iovec iov = {.iov_base = m->buf, .iov_len = m->len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cm;

	if (fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	for (;;) {
		ssize_t r = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (r >= 0)
			return (size_t)r == m->len ? 0 : -EIO;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

ssize_t mxf_ipc_recv(int sock, uint8_t *buf, size_t cap, int *fd_out)
{
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} cm;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
	ssize_t r;

	*fd_out = -1;
	do
		r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*fd_out < 0)
				*fd_out = fd;
			else
				close(fd); /* one descriptor per message, by protocol */
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (*fd_out >= 0)
			close(*fd_out);
		*fd_out = -1;
		return -EMSGSIZE;
	}
	return r;
}

static int make_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

int mxf_ipc_listen(const char *path, int backlog)
{
	struct sockaddr_un sa;
	int r = make_addr(path, &sa);
	if (r < 0)
		return r;
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -errno;
	unlink(path);
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, backlog) < 0) {
		r = -errno;
		close(s);
		return r;
	}
	return s;
}

int mxf_ipc_connect(const char *path)
{
	struct sockaddr_un sa;
	int r = make_addr(path, &sa);
	if (r < 0)
		return r;
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(s);
		return r;
	}
	return s;
}

int mxf_ipc_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -errno;
	if (pid)
		*pid = uc.pid;
	if (uid)
		*uid = uc.uid;
	if (gid)
		*gid = uc.gid;
	return 0;
}

struct mxf_ipc_reply {
	uint8_t *buf;
	struct mxf_ipc_view *view;
	int fd; /* a descriptor that came with it, or -1 */
};

int mxf_ipc_call(int sock, const struct mxf_ipc_msg *m, int timeout_ms, struct mxf_ipc_reply **out)
{
	int r = mxf_ipc_send(sock, m, -1);
	if (r < 0)
		return r;
	struct pollfd pfd = {.fd = sock, .events = POLLIN};
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	struct mxf_ipc_reply *rep = calloc(1, sizeof(*rep));
	if (!rep || !(rep->buf = malloc(MXF_IPC_MAX))) {
		free(rep);
		return -ENOMEM;
	}
	rep->fd = -1;
	ssize_t n = mxf_ipc_recv(sock, rep->buf, MXF_IPC_MAX, &rep->fd);
	if (n <= 0) {
		mxf_ipc_reply_free(rep);
		return n == 0 ? -ECONNRESET : (int)n;
	}
	r = mxf_ipc_decode(rep->buf, (size_t)n, &rep->view);
	if (r < 0) {
		mxf_ipc_reply_free(rep);
		return r;
	}
	*out = rep;
	return 0;
}

const struct mxf_ipc_view *mxf_ipc_reply_view(const struct mxf_ipc_reply *r)
{
	return r->view;
}

void mxf_ipc_reply_free(struct mxf_ipc_reply *r)
{
	if (!r)
		return;
	mxf_ipc_view_free(r->view);
	free(r->buf);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

int mxf_ipc_hello(const char *path, const char *role, int timeout_ms)
{
	int s = mxf_ipc_connect(path);
	if (s < 0)
		return s;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_HELLO);
	struct mxf_ipc_reply *rep = NULL;
	int r = -ENOMEM;
	if (m && mxf_ipc_put_str(m, F_ROLE, role) == 0 &&
	    mxf_ipc_put_u64(m, F_VERSION, MXF_IPC_VERSION) == 0 &&
	    mxf_ipc_put_u64(m, F_PID, (uint64_t)getpid()) == 0 &&
	    (r = mxf_ipc_call(s, m, timeout_ms, &rep)) == 0 &&
	    mxf_ipc_type(mxf_ipc_reply_view(rep)) != MXF_MSG_HELLO_OK)
		r = -EPROTO;
	mxf_ipc_reply_free(rep);
	mxf_ipc_msg_free(m);
	if (r < 0) {
		close(s);
		return r;
	}
	return s;
}

int mxf_ipc_reply_take_fd(struct mxf_ipc_reply *r)
{
	int fd = r->fd;
	r->fd = -1;
	return fd;
}
