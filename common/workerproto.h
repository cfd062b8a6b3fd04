/* workerproto: what a worker program says (issue 13), sans-I/O.
 *
 * A worker (the `program` runtime, or our Node.js runner for `js`) reads on
 * stdin one JSON header line {"from":..,"to":..,"client_ip":..,"helo":..,
 * "queue_id":..,"size":N} followed by the raw message, and writes its
 * decisions on stdout, one JSON object per line:
 *   {"action":"forward","to":"a@b.example","headers":{"X-Foo":"bar"}}
 *   {"action":"reject","reason":"text"}
 *   {"action":"drop"}
 *   {"action":"reply","raw":"From: ...\r\nIn-Reply-To: <id>\r\n\r\nbody"}
 * A reply's raw is a whole RFC 5322 message (UTF-8 text, no NUL), at most
 * MXF_WP_MAX_REPLY octets once its line ends (CRLF, LF or a lone CR) are
 * made CRLF; it always ends with CRLF. At most one reply per answer: the
 * hosted runtime's "one reply" loop guard, and a second one is garbage
 * like any other protocol violation (the worker fails, 451). Whether the
 * reply is sent is decided later (workerreply.h, then the router).
 * Blank lines are ignored; anything else is garbage and fails the whole
 * answer (the message is tempfailed, never half-forwarded). No decision at
 * all means drop (as on the hosted service: a worker that does nothing
 * consumes the message).
 *
 * The parser is strict and bounded: at most MXF_WP_MAX_OUTPUT bytes, at most
 * MXF_WP_MAX_DECISIONS decisions, header names must start with "X-" (as on
 * the hosted runtime) and be RFC 5322 field names, values carry no control
 * character, reasons are printable (UTF-8 allowed). Addresses are checked
 * syntactically by the router, which also requires verified destinations. */
#ifndef MXF_WORKERPROTO_H
#define MXF_WORKERPROTO_H

#include <stddef.h>
#include <stdint.h>

#define MXF_WP_MAX_OUTPUT 65536
#define MXF_WP_MAX_DECISIONS 32
#define MXF_WP_MAX_HEADERS 16
#define MXF_WP_MAX_REASON 200
#define MXF_WP_MAX_ADDR 320
#define MXF_WP_MAX_REPLY 32768

enum mxf_wp_action { MXF_WP_FORWARD = 1, MXF_WP_REJECT, MXF_WP_DROP, MXF_WP_REPLY };

struct mxf_wp_decision {
	enum mxf_wp_action action;
	const char *to;      /* forward: the destination, else "" */
	const char *reason;  /* reject: the reason, else "" */
	const char *headers; /* forward: "Name: value\r\n"..., else "" */
	const char *raw;     /* reply: the message (CRLF lines, no NUL), else "" */
};

struct mxf_wp_parser;
struct mxf_wp_parser *mxf_wp_parser_new(void);
void mxf_wp_parser_free(struct mxf_wp_parser *p);
/* Pushes output bytes. 0, or -EBADMSG (garbage; mxf_wp_error says why),
 * -E2BIG (too much output), -ENOMEM. Once failed, stays failed. */
int mxf_wp_feed(struct mxf_wp_parser *p, const void *buf, size_t len);
/* End of output: a last line without a newline is parsed too. */
int mxf_wp_finish(struct mxf_wp_parser *p);
size_t mxf_wp_count(const struct mxf_wp_parser *p);
const struct mxf_wp_decision *mxf_wp_get(const struct mxf_wp_parser *p, size_t i);
const char *mxf_wp_error(const struct mxf_wp_parser *p);
const char *mxf_wp_action_name(enum mxf_wp_action a);
/* The header line given to a worker (no trailing newline); malloc'd. */
struct mxf_wp_envelope {
	const char *from, *to, *client_ip, *helo, *queue_id;
	uint64_t size;
};
char *mxf_wp_header_line(const struct mxf_wp_envelope *e);
/* Checks an "X-Name: value\r\n"... block as the parser makes them (the
 * router re-checks what workerd relays): 0 or -EINVAL. */
int mxf_wp_check_headers(const char *block);

#endif
