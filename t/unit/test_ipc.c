#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"

static void test_roundtrip(void **state)
{
	(void)state;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_COMMIT);
	assert_non_null(m);
	assert_int_equal(mxf_ipc_put_u64(m, F_REQ, 0x0102030405060708ULL), 0);
	assert_int_equal(mxf_ipc_put_str(m, F_SENDER, ""), 0);
	assert_int_equal(mxf_ipc_put_str(m, F_RCPT, "a@example.com"), 0);
	assert_int_equal(mxf_ipc_put_str(m, F_RCPT, "b@example.com"), 0);
	size_t len;
	const uint8_t *d = mxf_ipc_msg_data(m, &len);
	struct mxf_ipc_view *v;
	assert_int_equal(mxf_ipc_decode(d, len, &v), 0);
	assert_int_equal(mxf_ipc_type(v), MXF_MSG_COMMIT);
	uint64_t x;
	assert_int_equal(mxf_ipc_u64(v, F_REQ, 0, &x), 0);
	assert_true(x == 0x0102030405060708ULL);
	assert_string_equal(mxf_ipc_str(v, F_SENDER, 0), "");
	assert_int_equal(mxf_ipc_count(v, F_RCPT), 2);
	assert_string_equal(mxf_ipc_str(v, F_RCPT, 1), "b@example.com");
	assert_null(mxf_ipc_str(v, F_RCPT, 2));
	assert_int_equal(mxf_ipc_u64(v, F_SIZE, 0, &x), -ENOENT);
	/* a string field read as u64 has the wrong length */
	assert_int_equal(mxf_ipc_u64(v, F_RCPT, 0, &x), -EBADMSG);
	mxf_ipc_view_free(v);
	mxf_ipc_msg_free(m);
}

static void test_strict_decoding(void **state)
{
	(void)state;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_RCPT_CHECK);
	mxf_ipc_put_u64(m, F_REQ, 7);
	mxf_ipc_put_str(m, F_ADDR, "x@y.z");
	size_t len;
	const uint8_t *d = mxf_ipc_msg_data(m, &len);
	uint8_t buf[256];
	struct mxf_ipc_view *v;
	memcpy(buf, d, len);

	/* every truncation fails */
	for (size_t l = 0; l < len; l++)
		assert_int_equal(mxf_ipc_decode(buf, l, &v), -EBADMSG);
	/* trailing garbage fails (length field no longer matches) */
	buf[len] = 0;
	assert_int_equal(mxf_ipc_decode(buf, len + 1, &v), -EBADMSG);
	/* bad magic */
	buf[0] ^= 1;
	assert_int_equal(mxf_ipc_decode(buf, len, &v), -EBADMSG);
	buf[0] ^= 1;
	/* unknown type */
	buf[2] = 0xee;
	assert_int_equal(mxf_ipc_decode(buf, len, &v), -EBADMSG);
	buf[2] = d[2];
	/* unknown tag */
	buf[8] = 0xee;
	assert_int_equal(mxf_ipc_decode(buf, len, &v), -EBADMSG);
	buf[8] = d[8];
	/* a field length pointing past the end */
	buf[10] = 0xff;
	assert_int_equal(mxf_ipc_decode(buf, len, &v), -EBADMSG);
	buf[10] = d[10];
	assert_int_equal(mxf_ipc_decode(buf, len, &v), 0);
	mxf_ipc_view_free(v);

	/* a string with an embedded NUL is refused by the accessor */
	struct mxf_ipc_msg *n = mxf_ipc_msg_new(MXF_MSG_RCPT_CHECK);
	mxf_ipc_put_bytes(n, F_ADDR, "a\0b", 3);
	d = mxf_ipc_msg_data(n, &len);
	assert_int_equal(mxf_ipc_decode(d, len, &v), 0);
	assert_null(mxf_ipc_str(v, F_ADDR, 0));
	mxf_ipc_view_free(v);
	mxf_ipc_msg_free(n);
	mxf_ipc_msg_free(m);
}

static void test_size_cap(void **state)
{
	(void)state;
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_DELIVER);
	char *big = malloc(MXF_IPC_MAX);
	memset(big, 'a', MXF_IPC_MAX - 1);
	big[MXF_IPC_MAX - 1] = '\0';
	assert_int_equal(mxf_ipc_put_str(m, F_HEADERS, big), -E2BIG);
	big[MXF_IPC_MAX - 100] = '\0';
	assert_int_equal(mxf_ipc_put_str(m, F_HEADERS, big), 0);
	assert_int_equal(mxf_ipc_put_str(m, F_HEADERS, big), -E2BIG);
	free(big);
	mxf_ipc_msg_free(m);
}

static void test_socket_and_fd_passing(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_OPEN_REPLY);
	mxf_ipc_put_str(m, F_QID, "0123456789ABCDEFGHJKMNPQRS");
	assert_int_equal(mxf_ipc_send(sv[0], m, p[1]), 0);
	uint8_t buf[MXF_IPC_MAX];
	int fd;
	ssize_t n = mxf_ipc_recv(sv[1], buf, sizeof(buf), &fd);
	assert_true(n > 0);
	assert_true(fd >= 0);
	/* the passed descriptor is the pipe's write end */
	assert_int_equal(write(fd, "x", 1), 1);
	char c;
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_int_equal(c, 'x');
	close(fd);
	/* message boundaries are kept: two sends, two receives */
	assert_int_equal(mxf_ipc_send(sv[0], m, -1), 0);
	assert_int_equal(mxf_ipc_send(sv[0], m, -1), 0);
	size_t len;
	mxf_ipc_msg_data(m, &len);
	assert_int_equal(mxf_ipc_recv(sv[1], buf, sizeof(buf), &fd), (ssize_t)len);
	assert_int_equal(fd, -1);
	assert_int_equal(mxf_ipc_recv(sv[1], buf, sizeof(buf), &fd), (ssize_t)len);
	/* an oversized datagram is reported as truncated, not half-read */
	assert_int_equal(mxf_ipc_send(sv[0], m, -1), 0);
	assert_int_equal(mxf_ipc_recv(sv[1], buf, 10, &fd), -EMSGSIZE);
	/* orderly close reads as 0 */
	close(sv[0]);
	assert_int_equal(mxf_ipc_recv(sv[1], buf, sizeof(buf), &fd), 0);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
	mxf_ipc_msg_free(m);
}

static void test_listen_connect_peercred(void **state)
{
	(void)state;
	char dir[] = "/tmp/mxf-ipc-XXXXXX", path[256];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);
	int l = mxf_ipc_listen(path, 4);
	assert_true(l >= 0);
	int c = mxf_ipc_connect(path);
	assert_true(c >= 0);
	int s = accept(l, NULL, NULL);
	assert_true(s >= 0);
	uid_t uid;
	pid_t pid;
	assert_int_equal(mxf_ipc_peercred(s, &pid, &uid, NULL), 0);
	assert_int_equal(uid, getuid());
	assert_int_equal(pid, getpid());
	close(s);
	close(c);
	close(l);
	unlink(path);
	rmdir(dir);
	char longp[200];
	memset(longp, 'x', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	assert_int_equal(mxf_ipc_listen(longp, 1), -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_strict_decoding),
		cmocka_unit_test(test_size_cap),
		cmocka_unit_test(test_socket_and_fd_passing),
		cmocka_unit_test(test_listen_connect_peercred),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
