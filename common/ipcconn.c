#include "ipcconn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct outmsg {
	struct outmsg *next;
	struct mxf_ipc_msg *m;
	int fd;
};

struct mxf_ipcconn {
	uv_poll_t poll;
	int sock;
	mxf_ipcconn_msg_cb on_msg;
	mxf_ipcconn_close_cb on_close;
	void *arg;
	unsigned flags;
	struct outmsg *head, *tail;
	uint8_t *buf;
	bool closing;
};

static void conn_free_cb(uv_handle_t *h)
{
	struct mxf_ipcconn *c = h->data;
	while (c->head) {
		struct outmsg *o = c->head;
		c->head = o->next;
		if (o->fd >= 0)
			close(o->fd);
		mxf_ipc_msg_free(o->m);
		free(o);
	}
	close(c->sock);
	free(c->buf);
	free(c);
}

void mxf_ipcconn_close(struct mxf_ipcconn *c)
{
	if (!c || c->closing)
		return;
	c->closing = true;
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, conn_free_cb);
}

static void conn_fail(struct mxf_ipcconn *c)
{
	if (c->closing)
		return;
	if (c->on_close)
		c->on_close(c, c->arg);
	mxf_ipcconn_close(c);
}

static void update_events(struct mxf_ipcconn *c);

static void flush_out(struct mxf_ipcconn *c)
{
	while (c->head) {
		struct outmsg *o = c->head;
		int r = mxf_ipc_send(c->sock, o->m, o->fd);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			mxf_warn("ipc send failed: %s", strerror(-r));
			conn_fail(c);
			return;
		}
		c->head = o->next;
		if (!c->head)
			c->tail = NULL;
		if (o->fd >= 0)
			close(o->fd);
		mxf_ipc_msg_free(o->m);
		free(o);
	}
	update_events(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct mxf_ipcconn *c = h->data;
	if (status < 0) {
		conn_fail(c);
		return;
	}
	if (events & UV_WRITABLE)
		flush_out(c);
	if (c->closing || !(events & (UV_READABLE | UV_DISCONNECT)))
		return;
	/* Drain what is there, a bounded number per wake-up for fairness. */
	for (int i = 0; i < 64 && !c->closing; i++) {
		int fd;
		ssize_t n = mxf_ipc_recv(c->sock, c->buf, MXF_IPC_MAX, &fd);
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			if (n < 0 && n != -ECONNRESET)
				mxf_warn("ipc receive failed: %s", strerror((int)-n));
			conn_fail(c);
			return;
		}
		struct mxf_ipc_view *v;
		if (mxf_ipc_decode(c->buf, (size_t)n, &v) < 0) {
			if (!(c->flags & MXF_IPCCONN_TOLERANT))
				mxf_fatal("malformed internal message from peer; exiting");
			if (fd >= 0)
				close(fd);
			mxf_warn("malformed internal message from peer; closing the connection");
			conn_fail(c);
			return;
		}
		int r = c->on_msg(c, v, fd, c->arg);
		mxf_ipc_view_free(v);
		if (r < 0)
			conn_fail(c);
	}
}

static void update_events(struct mxf_ipcconn *c)
{
	if (c->closing)
		return;
	int ev = UV_READABLE | UV_DISCONNECT | (c->head ? UV_WRITABLE : 0);
	uv_poll_start(&c->poll, ev, on_poll);
}

int mxf_ipcconn_new(uv_loop_t *loop, int sock, unsigned flags, mxf_ipcconn_msg_cb on_msg,
		    mxf_ipcconn_close_cb on_close, void *arg, struct mxf_ipcconn **out)
{
	struct mxf_ipcconn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->buf = malloc(MXF_IPC_MAX);
	if (!c->buf) {
		free(c);
		return -ENOMEM;
	}
	int fl = fcntl(sock, F_GETFL);
	fcntl(sock, F_SETFL, fl | O_NONBLOCK);
	fcntl(sock, F_SETFD, FD_CLOEXEC);
	int r = uv_poll_init(loop, &c->poll, sock);
	if (r < 0) {
		free(c->buf);
		free(c);
		return r;
	}
	c->poll.data = c;
	c->sock = sock;
	c->on_msg = on_msg;
	c->on_close = on_close;
	c->arg = arg;
	c->flags = flags;
	update_events(c);
	*out = c;
	return 0;
}

int mxf_ipcconn_send(struct mxf_ipcconn *c, const struct mxf_ipc_msg *m, int fd)
{
	if (c->closing)
		return -ENOTCONN;
	if (!c->head) {
		int r = mxf_ipc_send(c->sock, m, fd);
		if (r == 0)
			return 0;
		if (r != -EAGAIN)
			return r;
	}
	struct outmsg *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->fd = -1;
	o->m = mxf_ipc_msg_dup(m);
	if (!o->m || (fd >= 0 && (o->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)) {
		int r = o->m ? -errno : -ENOMEM;
		mxf_ipc_msg_free(o->m);
		free(o);
		return r;
	}
	if (c->tail)
		c->tail->next = o;
	else
		c->head = o;
	c->tail = o;
	update_events(c);
	return 0;
}

int mxf_ipcconn_fd(const struct mxf_ipcconn *c)
{
	return c->sock;
}

void mxf_ipcconn_set_arg(struct mxf_ipcconn *c, void *arg)
{
	c->arg = arg;
}

/* ---- routerlink ---- */

struct mxf_routerlink {
	uv_loop_t *loop;
	char *path;
	char *role;
	mxf_routerlink_msg_cb on_msg;
	mxf_routerlink_state_cb on_state;
	void *arg;
	struct mxf_ipcconn *conn;
	bool up;
	uv_timer_t timer;
	uint64_t backoff_ms;
	bool warned;
};

static void link_retry(struct mxf_routerlink *l);

static int link_on_msg(struct mxf_ipcconn *c, const struct mxf_ipc_view *v, int fd, void *arg)
{
	struct mxf_routerlink *l = arg;
	(void)c;
	if (!l->up) {
		uint64_t ver;
		if (mxf_ipc_type(v) != MXF_MSG_HELLO_OK || mxf_ipc_u64(v, F_VERSION, 0, &ver) < 0 ||
		    ver != MXF_IPC_VERSION)
			mxf_fatal("router refused our handshake");
		if (fd >= 0)
			close(fd);
		l->up = true;
		l->backoff_ms = 100;
		l->warned = false;
		mxf_info("connected to router");
		if (l->on_state)
			l->on_state(true, l->arg);
		return 0;
	}
	l->on_msg(v, fd, l->arg);
	return 0;
}

static void link_on_close(struct mxf_ipcconn *c, void *arg)
{
	struct mxf_routerlink *l = arg;
	(void)c;
	bool was_up = l->up;
	l->conn = NULL;
	l->up = false;
	if (was_up) {
		mxf_warn("lost connection to router; reconnecting");
		if (l->on_state)
			l->on_state(false, l->arg);
	}
	link_retry(l);
}

static void link_connect(uv_timer_t *t)
{
	struct mxf_routerlink *l = t->data;
	int s = mxf_ipc_connect(l->path);
	if (s < 0) {
		if (!l->warned && l->backoff_ms >= 1600) {
			mxf_warn("cannot connect to router at %s: %s; still trying", l->path,
				 strerror(-s));
			l->warned = true;
		}
		link_retry(l);
		return;
	}
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_HELLO);
	if (!m || mxf_ipc_put_str(m, F_ROLE, l->role) < 0 ||
	    mxf_ipc_put_u64(m, F_VERSION, MXF_IPC_VERSION) < 0 ||
	    mxf_ipc_put_u64(m, F_PID, (uint64_t)getpid()) < 0 || mxf_ipc_send(s, m, -1) < 0) {
		mxf_ipc_msg_free(m);
		close(s);
		link_retry(l);
		return;
	}
	mxf_ipc_msg_free(m);
	if (mxf_ipcconn_new(l->loop, s, 0, link_on_msg, link_on_close, l, &l->conn) < 0) {
		close(s);
		link_retry(l);
	}
}

static void link_retry(struct mxf_routerlink *l)
{
	uv_timer_start(&l->timer, link_connect, l->backoff_ms, 0);
	if (l->backoff_ms < 2000)
		l->backoff_ms *= 2;
}

int mxf_routerlink_start(uv_loop_t *loop, const char *sock_path, const char *role,
			 mxf_routerlink_msg_cb on_msg, mxf_routerlink_state_cb on_state, void *arg,
			 struct mxf_routerlink **out)
{
	struct mxf_routerlink *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->loop = loop;
	l->path = strdup(sock_path);
	l->role = strdup(role);
	if (!l->path || !l->role) {
		free(l->path);
		free(l->role);
		free(l);
		return -ENOMEM;
	}
	l->on_msg = on_msg;
	l->on_state = on_state;
	l->arg = arg;
	l->backoff_ms = 100;
	uv_timer_init(loop, &l->timer);
	l->timer.data = l;
	uv_timer_start(&l->timer, link_connect, 0, 0);
	*out = l;
	return 0;
}

int mxf_routerlink_send(struct mxf_routerlink *l, const struct mxf_ipc_msg *m, int fd)
{
	if (!l->up || !l->conn)
		return -ENOTCONN;
	return mxf_ipcconn_send(l->conn, m, fd);
}

bool mxf_routerlink_up(const struct mxf_routerlink *l)
{
	return l->up;
}

static void link_timer_closed(uv_handle_t *h)
{
	struct mxf_routerlink *l = h->data;
	free(l->path);
	free(l->role);
	free(l);
}

void mxf_routerlink_stop(struct mxf_routerlink *l)
{
	if (!l)
		return;
	if (l->conn)
		mxf_ipcconn_close(l->conn);
	uv_timer_stop(&l->timer);
	uv_close((uv_handle_t *)&l->timer, link_timer_closed);
}
