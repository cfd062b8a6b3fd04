/* webhook: the "webhook URL" action (issue 13): the message as JSON, POSTed
 * with libcurl, signed with the router's HMAC.
 *
 * The MIME parsing of the hostile message happens here, in deliverd (it
 * holds no secret and cannot open a file), never in the router. The JSON:
 *   {"queue_id", "envelope": {"from", "to"}, "auth": {"spf", "dkim", "dmarc",
 *    "authentication_results"}, "headers": [{"name", "value"}...],
 *    "text", "text_truncated", "html", "html_truncated",
 *    "attachments": [{"filename", "content_type", "size"}...],
 *    "raw_size", "raw" (base64), "raw_truncated"}
 * auth comes only from the router's header block (our own
 * Authentication-Results), never from the message's own fields.
 * Signature: X-Mxferry-Signature: t=UNIX,v1=HEX where
 *   HEX = hex(HMAC-SHA256(secret, SHA-256(UNIX "." body)))
 * (the inner hash lets the router, which alone holds the secret, sign
 * a 32-byte digest instead of a body of megabytes).
 */
#ifndef MXF_DELIVERD_WEBHOOK_H
#define MXF_DELIVERD_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "delivery.h"
#include "strbuf.h"

#define WHK_TEXT_MAX (256 * 1024) /* text and html parts, each, decoded */
#define WHK_RAW_MAX (1024 * 1024) /* raw message bytes put in as base64 */
#define WHK_MAX_ATTACH 100
#define WHK_MAX_HEADERS 500

/* Once, on the main thread, before the chroot: libcurl's global state and
 * the CA bundle (read into memory: the jail has no /etc/ssl). timeout_s
 * bounds each POST. 0 or -errno with a reason in err. */
int whk_init(const char *ca_file, int timeout_s, char *err, size_t errlen);

/* Sans-I/O: the JSON for message msg (len bytes: the router's header block
 * followed by the content) appended to out. pre is the router's header
 * block alone (where auth results are read). Returns 0 or -ENOMEM/-EINVAL. */
struct whk_in {
	const char *qid, *from, *to, *pre;
};
int whk_payload(const struct whk_in *in, const char *msg, size_t len, struct mxf_strbuf *out);

/* Posts the job (j->webhook set, one recipient): the result goes into
 * j->rcpt[0] and j->relay as dlv_run does. Blocking; any thread. */
void whk_run(struct dlv_job *j);

#endif
