/* workerreply: the loop guards on a worker's reply (issue 13), sans-I/O.
 *
 * A worker may answer a message with one reply (workerproto.h). As on the
 * hosted service, a reply is only sent when it is a reply to that message
 * and nothing else: its In-Reply-To names the original's Message-ID, its
 * References hold at most MXF_WR_MAX_REFS message-ids, and it parses (a
 * header section of well-formed fields ending in a blank line, one From
 * with an address, one To). workerd checks these, since it has the
 * original and the reply; the router adds the guards only it can judge
 * (the original passed DMARC, a sender to reply to, the message accepted).
 * Failing a guard drops the reply, not the message. */
#ifndef MXF_WORKERREPLY_H
#define MXF_WORKERREPLY_H

#include <stddef.h>

#define MXF_WR_MAX_REFS 100
/* A msg-id ("<left@right>") as we keep it; longer ones are not replied to. */
#define MXF_WR_MSGID_MAX 1000

/* The Message-ID of a message from the start of its content (the header
 * section, or as much of it as the caller read): the msg-id with its angle
 * brackets into out. 0; -ENOENT without exactly one Message-ID field
 * holding exactly one msg-id; -ENOMEM. */
int mxf_wr_msgid(const char *msg, size_t len, char *out, size_t cap);

/* Checks reply (CRLF lines, as workerproto makes them) against the
 * original's msg-id. 0 and *out a malloc'd copy to send (with
 * "Auto-Submitted: auto-replied" first when the reply has no such field,
 * RFC 3834 5.1); -EINVAL with the reason in why; -ENOMEM. */
int mxf_wr_check(const char *orig_msgid, const char *reply, size_t len, char **out, char *why,
		 size_t whylen);

#endif
