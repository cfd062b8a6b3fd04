/* routerctl: talking to the router's control socket as role ctl (mxferryctl
 * and apid): handshake, request/answer, queueing a message of our own, RELOAD
 * and the address-verification mail (issue 12: shared so both front ends send
 * the same thing). */
#ifndef MXF_ROUTERCTL_H
#define MXF_ROUTERCTL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "queueid.h"

#define MXF_ROUTERCTL_TIMEOUT_MS 5000
struct mxf_ipc_msg;
struct mxf_ipc_reply;
struct mxf_rulesdb;
/* Connects and shakes hands as role ctl: the socket, or <0 with the reason in why. */
int mxf_routerctl_open(const struct mxf_config *cfg, char *why, size_t whylen);
/* Sends m and takes one answer of type want carrying F_REQ req and an F_CODE
 * (*out, to free with mxf_ipc_reply_free), or <0 with the reason in why. */
int mxf_routerctl_call(int s, const struct mxf_ipc_msg *m, uint16_t want, uint64_t req,
		       int timeout_ms, struct mxf_ipc_reply **out, char *why, size_t whylen);
/* Queues data (a whole RFC 5322 message, CRLF) from the null sender to rcpt
 * through the router, which makes it durable before it answers; qid gets its
 * queue ID. 0, or <0 with the reason in why. */
int mxf_routerctl_submit(const struct mxf_config *cfg, const char *rcpt, const char *data,
			 size_t len, char qid[MXF_QID_SIZE], char *why, size_t whylen);
/* Makes a new one-time token for the unverified address a (rules.db) and
 * queues the verification message through the router. 0, or <0 with why. */
int mxf_routerctl_verify_mail(const struct mxf_config *cfg, struct mxf_rulesdb *db, const char *a,
			      char qid[MXF_QID_SIZE], char *why, size_t whylen);
/* Asks the router to reload rules.db. 0, or <0 with the reason in why. */
int mxf_routerctl_reload(const struct mxf_config *cfg, char *why, size_t whylen);
/* QUEUE_CTL: op hold|release|delete|retry|flush (count: messages acted
 * on) or list (text: malloc'd JSON array of the messages qids names, else
 * all, from offset; count: how many in all). 0, or <0 with why. */
int mxf_routerctl_queue(const struct mxf_config *cfg, const char *op, const char *const *qids,
			size_t nq, uint64_t offset, uint64_t *count, char **text, char *why,
			size_t whylen);

#endif
