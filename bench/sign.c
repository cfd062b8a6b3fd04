/* Signing-oracle benchmark (issue 14): how many DKIM signatures per second
 * the router gives, and how long another router job waits meanwhile.
 *
 *   bench_sign SOCK DOMAIN SELECTOR [CONNS [SECONDS]]
 *
 * CONNS threads (default 4) each hold a `signer` connection to the router
 * socket SOCK, as deliverd's worker threads do, and ask for the signature
 * of a digest with the key (DOMAIN, SELECTOR), one request at a time, for
 * SECONDS (default 3). Meanwhile a probe connection asks every 2 ms for a
 * webhook HMAC, which the router computes inline on its event loop: its
 * latency is how long any router job (a RCPT check, a commit) would wait.
 * Prints one line: conns, signatures/s, probe p50/p99/max in ms.
 * Run through bench/sign, which starts a gateway and makes the keys. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"

#define TIMEOUT_MS 10000
#define MAX_CONNS 64
#define MAX_PROBES 100000

static const char *sock, *domain, *selector;
static double deadline;
static atomic_long signed_n, failed_n;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One SIGN round trip; 0 when the router signed. */
static int sign_once(int fd, uint64_t req, const char *dom, const char *sel)
{
	uint8_t dg[32];
	for (size_t i = 0; i < sizeof(dg); i++)
		dg[i] = (uint8_t)(req * 31 + i);
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_SIGN);
	struct mxf_ipc_reply *rep = NULL;
	int r = m ? 0 : -ENOMEM;
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_REQ, req);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_DOMAIN, dom);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_SELECTOR, sel);
	if (r == 0)
		r = mxf_ipc_put_bytes(m, F_DIGEST, dg, sizeof(dg));
	if (r == 0)
		r = mxf_ipc_call(fd, m, TIMEOUT_MS, &rep);
	mxf_ipc_msg_free(m);
	if (r < 0)
		return r;
	const struct mxf_ipc_view *v = mxf_ipc_reply_view(rep);
	uint64_t rq, code;
	if (mxf_ipc_type(v) != MXF_MSG_SIGN_REPLY || mxf_ipc_u64(v, F_REQ, 0, &rq) < 0 ||
	    rq != req || mxf_ipc_u64(v, F_CODE, 0, &code) < 0)
		r = -EPROTO;
	else if (code != 250)
		r = -ENOKEY;
	mxf_ipc_reply_free(rep);
	return r;
}

static void *signer(void *arg)
{
	(void)arg;
	int fd = mxf_ipc_hello(sock, "signer", TIMEOUT_MS);
	if (fd < 0) {
		fprintf(stderr, "bench_sign: connect %s: %s\n", sock, strerror(-fd));
		atomic_fetch_add(&failed_n, 1);
		return NULL;
	}
	for (uint64_t req = 1; now() < deadline; req++) {
		if (sign_once(fd, req, domain, selector) < 0) {
			atomic_fetch_add(&failed_n, 1);
			break;
		}
		atomic_fetch_add(&signed_n, 1);
	}
	close(fd);
	return NULL;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s SOCK DOMAIN SELECTOR [CONNS [SECONDS]]\n", argv[0]);
		return 2;
	}
	sock = argv[1];
	domain = argv[2];
	selector = argv[3];
	int conns = argc > 4 ? atoi(argv[4]) : 4;
	double secs = argc > 5 ? atof(argv[5]) : 3;
	if (conns < 1 || conns > MAX_CONNS || secs <= 0) {
		fprintf(stderr, "bench_sign: 1 <= CONNS <= %d, SECONDS > 0\n", MAX_CONNS);
		return 2;
	}
	int probe = mxf_ipc_hello(sock, "signer", TIMEOUT_MS);
	if (probe < 0) {
		fprintf(stderr, "bench_sign: connect %s: %s\n", sock, strerror(-probe));
		return 2;
	}
	/* One of each first: the key exists, the webhook secret too. */
	if (sign_once(probe, 1, domain, selector) < 0 || sign_once(probe, 2, "", "webhook") < 0) {
		fprintf(stderr, "bench_sign: the router does not sign with %s/%s or a webhook\n",
			domain, selector);
		return 2;
	}
	static double lat[MAX_PROBES];
	size_t nlat = 0;
	pthread_t th[MAX_CONNS];
	double t0 = now();
	deadline = t0 + secs;
	for (int i = 0; i < conns; i++)
		if (pthread_create(&th[i], NULL, signer, NULL) != 0) {
			fprintf(stderr, "bench_sign: cannot start a thread\n");
			return 2;
		}
	for (uint64_t req = 3; now() < deadline && nlat < MAX_PROBES; req++) {
		struct timespec gap = {0, 2000000};
		nanosleep(&gap, NULL);
		double p0 = now();
		if (sign_once(probe, req, "", "webhook") < 0) {
			fprintf(stderr, "bench_sign: the probe failed\n");
			return 2;
		}
		lat[nlat++] = now() - p0;
	}
	for (int i = 0; i < conns; i++)
		pthread_join(th[i], NULL);
	double t1 = now();
	close(probe);
	if (atomic_load(&failed_n)) {
		fprintf(stderr, "bench_sign: %ld signer(s) failed\n", atomic_load(&failed_n));
		return 2;
	}
	qsort(lat, nlat, sizeof(lat[0]), cmp_d);
	printf("%5d %10.0f %9.2f %9.2f %9.2f\n", conns, (double)atomic_load(&signed_n) / (t1 - t0),
	       nlat ? lat[nlat / 2] * 1e3 : 0, nlat ? lat[nlat * 99 / 100] * 1e3 : 0,
	       nlat ? lat[nlat - 1] * 1e3 : 0);
	return 0;
}
