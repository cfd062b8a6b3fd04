/* ipcconn: an ipc socket on a libuv loop. Incoming messages are decoded and
 * handed to a callback; outgoing ones are queued when the socket is full.
 * A malformed message from a peer daemon is fatal (DESIGN.md §3).
 *
 * routerlink: the client end every daemon but the router uses. It connects to
 * spool_dir/private/router, sends HELLO, and reconnects with backoff whenever
 * the router goes away (the master restarts it), reporting up/down. */
#ifndef MXF_IPCCONN_H
#define MXF_IPCCONN_H

#include <stdbool.h>
#include <uv.h>

#include "ipc.h"

struct mxf_ipcconn;
/* fd is a received descriptor or -1; the callback owns it (must close).
 * Returning a negative value closes the connection (on_close is called). */
typedef int (*mxf_ipcconn_msg_cb)(struct mxf_ipcconn *c, const struct mxf_ipc_view *v, int fd,
				  void *arg);
/* Called once when the peer closes, errors or is refused; the conn is freed
 * after it returns. */
typedef void (*mxf_ipcconn_close_cb)(struct mxf_ipcconn *c, void *arg);

/* A malformed message closes this connection instead of exiting the
 * process: for the router, which must outlive a compromised peer. */
#define MXF_IPCCONN_TOLERANT 1u

/* Takes ownership of sock (made non-blocking). */
int mxf_ipcconn_new(uv_loop_t *loop, int sock, unsigned flags, mxf_ipcconn_msg_cb on_msg,
		    mxf_ipcconn_close_cb on_close, void *arg, struct mxf_ipcconn **out);
/* Queues m (copied) and a dup of fd (-1: none); the caller keeps its fd. */
int mxf_ipcconn_send(struct mxf_ipcconn *c, const struct mxf_ipc_msg *m, int fd);
/* Closes without calling on_close. */
void mxf_ipcconn_close(struct mxf_ipcconn *c);
int mxf_ipcconn_fd(const struct mxf_ipcconn *c);
void mxf_ipcconn_set_arg(struct mxf_ipcconn *c, void *arg);

struct mxf_routerlink;
typedef void (*mxf_routerlink_msg_cb)(const struct mxf_ipc_view *v, int fd, void *arg);
typedef void (*mxf_routerlink_state_cb)(bool up, void *arg);
/* sock_path: the router socket as seen by this process (after any chroot). */
int mxf_routerlink_start(uv_loop_t *loop, const char *sock_path, const char *role,
			 mxf_routerlink_msg_cb on_msg, mxf_routerlink_state_cb on_state, void *arg,
			 struct mxf_routerlink **out);
/* -ENOTCONN while the router is down. */
int mxf_routerlink_send(struct mxf_routerlink *l, const struct mxf_ipc_msg *m, int fd);
bool mxf_routerlink_up(const struct mxf_routerlink *l);
void mxf_routerlink_stop(struct mxf_routerlink *l);

#endif
