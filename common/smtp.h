/* smtp: sans-I/O pieces of the SMTP server side (RFC 5321): a command line
 * splitter, a command parser, the DATA decoder and a reply formatter. Nothing
 * here touches a socket, so every rule is unit-tested and fuzzable.
 *
 * Hostile input is the normal case: every function answers bad input with a
 * result (and a reply to send), never with an abort. */
#ifndef MXF_SMTP_H
#define MXF_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "address.h"

/* RFC 5321 4.5.3.1.4/5: command line and text line limits, CRLF included. */
#define MXF_SMTP_LINE_MAX 512
#define MXF_SMTP_TEXT_LINE_MAX 1000

/* ---- line splitter ---------------------------------------------------- */

enum mxf_smtp_line_result {
	MXF_SMTP_LINE_MORE = 0, /* all input consumed, no complete line yet */
	MXF_SMTP_LINE_OK,       /* a CRLF-terminated line */
	MXF_SMTP_LINE_BARE_LF,  /* a line ended by LF without CR: answer an error */
	MXF_SMTP_LINE_TOO_LONG, /* over MXF_SMTP_LINE_MAX octets; skipped to its end */
};

/* Treat as opaque; embedded so a session needs no extra allocation. */
struct mxf_smtp_lines {
	char buf[MXF_SMTP_LINE_MAX + 1];
	size_t len;
	bool skipping;
};

void mxf_smtp_lines_init(struct mxf_smtp_lines *ls);
/* Consumes input from *in, *inlen (both advanced) up to the end of at most one
 * line. A line ends at LF; only CRLF is a proper end (LINE_OK), a lone LF
 * gives LINE_BARE_LF so the client gets an error rather than a hang. For OK
 * and BARE_LF, *line (NUL-terminated, without the terminator, valid until the
 * next call) and *linelen are set. The input after the line is left untouched
 * for the caller (the next command, or DATA content). */
enum mxf_smtp_line_result mxf_smtp_lines_next(struct mxf_smtp_lines *ls, const char **in,
					      size_t *inlen, const char **line, size_t *linelen);

/* ---- replies ---------------------------------------------------------- */

struct mxf_smtp_reply {
	int code;         /* 0: no error */
	const char *esc;  /* enhanced status code (RFC 3463), e.g. "5.5.4" */
	const char *text;
};

/* Formats one reply line "CODE ESC TEXT\r\n" ("CODE-..." when more lines
 * follow); esc may be NULL or "" (greeting, EHLO lines, 354). Bytes of text
 * outside printable ASCII become '?' and text is cut to keep the line within
 * MXF_SMTP_LINE_MAX, so no text (a router's included) can split or stretch a
 * reply. Returns the length, or -ENOSPC when cap is too small. */
int mxf_smtp_reply_line(char *buf, size_t cap, int code, bool more, const char *esc,
			const char *text);
/* A reply code and enhanced code from another process are usable: code
 * 200..599 and esc "C.S.D" (S, D 1..3 digits) whose class C matches the
 * code's first digit (2, 4 or 5). */
bool mxf_smtp_reply_valid(long long code, const char *esc);

/* ---- command parser --------------------------------------------------- */

#define MXF_SMTP_ENVID_MAX 100 /* RFC 3461 4.4 */
#define MXF_SMTP_ORCPT_MAX 500 /* RFC 3461 4.2 */

enum mxf_smtp_verb {
	MXF_SMTP_UNKNOWN = 0,
	MXF_SMTP_EHLO,
	MXF_SMTP_HELO,
	MXF_SMTP_MAIL,
	MXF_SMTP_RCPT,
	MXF_SMTP_DATA,
	MXF_SMTP_RSET,
	MXF_SMTP_NOOP,
	MXF_SMTP_QUIT,
	MXF_SMTP_VRFY,
	MXF_SMTP_HELP,
	MXF_SMTP_STARTTLS, /* RFC 3207 */
	MXF_SMTP_BDAT,     /* RFC 3030 */
	MXF_SMTP_NVERBS
};

enum mxf_smtp_body { MXF_SMTP_BODY_NONE = 0, MXF_SMTP_BODY_7BIT, MXF_SMTP_BODY_8BITMIME };

struct mxf_smtp_cmd {
	enum mxf_smtp_verb verb; /* set even when the parse fails */
	/* EHLO/HELO: the domain or address literal. VRFY/HELP/NOOP: the raw
	 * argument ("" when none). */
	char arg[MXF_SMTP_LINE_MAX];
	/* MAIL/RCPT: the mailbox without angle brackets and source route;
	 * "" for the null reverse-path <>, "postmaster" for RCPT TO:<postmaster>. */
	char path[MXF_PATH_MAX];
	bool null_path;  /* MAIL FROM:<> */
	bool postmaster; /* RCPT TO:<postmaster> (any case, no domain) */
	bool has_size;
	uint64_t size;   /* SIZE=; UINT64_MAX when it does not fit */
	enum mxf_smtp_body body;
	/* The path holds UTF-8 (RFC 6531): allowed only in an SMTPUTF8
	 * transaction, which the session checks. */
	bool utf8_path;
	bool smtputf8;   /* MAIL ... SMTPUTF8 */
	/* DSN (RFC 3461), canonical forms, "" when absent:
	 * MAIL RET= "FULL"|"HDRS", ENVID= the xtext as given (<= 100 chars);
	 * RCPT NOTIFY= "NEVER" or a subset of "SUCCESS,FAILURE,DELAY" in that
	 * order, ORCPT= "addr-type;xtext" (addr-type lower-cased). */
	char ret[8];
	char envid[MXF_SMTP_ENVID_MAX + 1];
	char notify[32];
	char orcpt[MXF_SMTP_ORCPT_MAX + 1];
	/* BDAT chunk-size [LAST] */
	uint64_t bdat_size;
	bool bdat_last;
	struct mxf_smtp_reply err; /* the reply to send when the parse fails */
};

/* Parses one command line (without CRLF). Strict RFC 5321 syntax, except:
 * verbs and FROM:/TO: are case-insensitive (as the RFC says), one space after
 * "FROM:"/"TO:" is tolerated (as Postfix does), trailing spaces are ignored,
 * and source routes (<@a,@b:user@d>) are accepted and dropped (4.1.1.3).
 * NUL, CR and LF anywhere make the line invalid; 8-bit bytes are allowed
 * only as well-formed UTF-8 in a MAIL/RCPT line (RFC 6531: in the path, as
 * UTF-8 local parts and U-label domains, and in parameter values).
 * MAIL parameters: SIZE, BODY=7BIT|8BITMIME, SMTPUTF8, RET, ENVID; RCPT
 * parameters: NOTIFY, ORCPT; each at most once.
 * Returns 0, or -EINVAL with cmd->err set:
 *   500 5.5.2 unknown verb or invalid bytes; 501 5.5.4 syntax;
 *   501 5.1.7 (MAIL) / 5.1.3 (RCPT) bad path or path/local part/domain over
 *   64/255/256 octets (4.5.3.1); 555 5.5.4 unknown MAIL/RCPT parameter. */
int mxf_smtp_parse_cmd(const char *line, size_t len, struct mxf_smtp_cmd *cmd);
/* Upper-case verb name ("EHLO"...; "UNKNOWN"). */
const char *mxf_smtp_verb_name(enum mxf_smtp_verb v);

/* ---- DATA decoder ----------------------------------------------------- */

/* Treat as opaque apart from the read-only results below. */
struct mxf_smtp_data {
	int state;
	uint64_t line_len;
	/* results */
	uint64_t size;       /* decoded octets (what the message file holds) */
	uint64_t long_lines; /* lines over MXF_SMTP_TEXT_LINE_MAX octets (allowed, counted) */
	bool bare_cr;        /* a CR not followed by LF */
	bool bare_lf;        /* an LF not preceded by CR */
	bool nul;            /* a NUL byte (refused: RFC 5321 2.3.8 / 4.1.1.4) */
	bool done;           /* the end marker CRLF.CRLF was consumed */
};

/* Starts decoding right after the CRLF of the DATA command line (which is the
 * first CRLF of the end marker: a message may be empty). */
void mxf_smtp_data_init(struct mxf_smtp_data *d);
/* Decodes in[0..inlen) into out: leading dots removed (4.5.2), everything
 * else byte for byte. Only CRLF "." CRLF ends the data: LF "." LF, CR "." CR
 * and every other mix are content (SMTP smuggling), and bare CR / bare LF are
 * flagged for the caller to refuse the message, never normalised. Decoding
 * stops when out is full; an outcap of inlen + 1 always takes all the input
 * (one CR may be held back between calls). Stops right after the end marker:
 * the rest of the input
 * (pipelined commands) is not consumed. Returns the input bytes consumed and
 * sets *outlen. */
size_t mxf_smtp_data_feed(struct mxf_smtp_data *d, const char *in, size_t inlen, char *out,
			  size_t outcap, size_t *outlen);

/* BDAT (RFC 3030): chunk octets are the message as is (no dot-stuffing, no
 * end marker), but the same refusals apply: chunk_scan looks at the octets
 * (size, bare CR / bare LF across chunk boundaries, NUL, line lengths)
 * without changing them; chunk_end, after the LAST chunk, flags a CR the
 * message ended with. Start with mxf_smtp_data_init. */
void mxf_smtp_chunk_scan(struct mxf_smtp_data *d, const char *in, size_t inlen);
void mxf_smtp_chunk_end(struct mxf_smtp_data *d);

/* ---- xtext (RFC 3461 4) ------------------------------------------------ */

/* Encodes s as xtext ('+', '=' and bytes outside 33..126 as "+XX"). Returns
 * the length, or -ENOSPC. */
int mxf_xtext_encode(const char *s, char *out, size_t cap);

#endif
