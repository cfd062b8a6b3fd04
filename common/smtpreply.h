/* smtpreply: sans-I/O parser for SMTP server replies (RFC 5321 §4.2).
 *
 * Feed it whatever bytes arrive from the server; take complete replies out
 * with mxf_smtpreply_next. It never blocks and never touches a socket, so a
 * client can pipeline commands and tests can drive it byte by byte.
 *
 * The server on the other end is untrusted. The parser is strict about
 * structure (three-digit code with first digit 2-5, the same code on every line
 * of a reply, '-' or ' ' or end of line after the code, no NUL bytes) and
 * bounded: a line may be up to MXF_SMTPREPLY_LINE_MAX octets (RFC 5321 says
 * 512; real servers exceed it a little, so we are lenient up to 4096), a reply
 * up to MXF_SMTPREPLY_LINES lines. Anything else is a protocol error, after
 * which the connection must be dropped. CRLF ends a line; a bare LF is
 * accepted too (lenient: the line content is the same).
 */
#ifndef MXF_SMTPREPLY_H
#define MXF_SMTPREPLY_H

#include <stddef.h>

#define MXF_SMTPREPLY_LINE_MAX 4096 /* octets, CRLF included */
#define MXF_SMTPREPLY_LINES 256

struct mxf_smtpreply {
	int code;      /* 200..599 */
	char esc[16];  /* "X.Y.Z" from the first line (RFC 3463), "" when absent */
	char *text;    /* every line's text, enhanced code removed, joined by one space */
	size_t nlines;
	char **lines;  /* each line's text after "NNN-"/"NNN ", as sent (for EHLO keywords) */
};

struct mxf_smtpreply_parser;

int mxf_smtpreply_parser_new(struct mxf_smtpreply_parser **out);
void mxf_smtpreply_parser_free(struct mxf_smtpreply_parser *p);

/* Consumes all of data. Returns 0, -EPROTO once the input is malformed (and
 * from then on), or -ENOMEM. Replies completed before an error stay available. */
int mxf_smtpreply_feed(struct mxf_smtpreply_parser *p, const void *data, size_t len);

/* Takes the oldest complete reply: 1 and *out (free with mxf_smtpreply_free),
 * 0 when none is complete yet, -EPROTO when the input was malformed and every
 * earlier reply has been taken. */
int mxf_smtpreply_next(struct mxf_smtpreply_parser *p, struct mxf_smtpreply **out);

/* True when bytes of an incomplete reply are buffered (a server that closes
 * then has cut a reply short). */
int mxf_smtpreply_partial(const struct mxf_smtpreply_parser *p);

void mxf_smtpreply_free(struct mxf_smtpreply *r);

/* Parses an enhanced status code "C.SSS.DDD" (RFC 3463: class 2, 4 or 5,
 * subject and detail 1-3 digits) at the start of s, followed by a space or
 * the end. Returns its length (0 when there is none) and copies it into esc
 * (16 bytes) when esc is not NULL. */
size_t mxf_smtpreply_parse_esc(const char *s, char esc[16]);

/* The enhanced code to report for a reply: its own when present and of the
 * same class as the reply code, else "2.0.0" / "4.0.0" / "5.0.0". */
const char *mxf_smtpreply_esc(const struct mxf_smtpreply *r);

#endif
