/* mailhdr: the header section of a message as it streams in (RFC 5322 §2.2,
 * §3.6), sans-I/O, for the authentication checks (DKIM, DMARC, ARC) and for
 * removing forged Authentication-Results on the way into the spool.
 *
 * mxf_mailhdr_feed takes decoded message content (CRLF lines, dot-unstuffed)
 * in any cuts, splits the header section into fields (a field ends where the
 * next line does not start with SP/HTAB), hands each whole field to a
 * callback that says keep or drop, and copies what is kept, then the body,
 * to an output buffer. Memory is bounded: one field is held at most
 * (MXF_MAILHDR_FIELD_MAX); a longer field is passed on in pieces, marked
 * partial, and the callback decides from its first MXF_MAILHDR_FIELD_MAX
 * octets (a name and an authserv-id are there).
 *
 * Pure helpers for the field values the checks need: the From: domain
 * (DMARC's author domain), the authserv-id of an Authentication-Results
 * field, and DKIM-style tag=value lists (DKIM-Signature, ARC-*, DMARC
 * records). */
#ifndef MXF_MAILHDR_H
#define MXF_MAILHDR_H

#include <stdbool.h>
#include <stddef.h>

/* A field held whole for the callbacks (DKIM-Signature with a 4096-bit key
 * is about 1 KiB; References of long threads may be more). */
#define MXF_MAILHDR_FIELD_MAX 16384

struct mxf_mailhdr_cb {
	/* A field, from its name to its final CRLF (folds included). whole is
	 * false for the first MXF_MAILHDR_FIELD_MAX octets of a longer one
	 * (called once; the rest follows the same verdict). Returns true to
	 * keep the field in the output. */
	bool (*field)(void *arg, const char *f, size_t len, bool whole);
	/* The blank line that ends the header section was seen (or the end of
	 * a message that has none). */
	void (*eoh)(void *arg);
	/* Body octets (after the blank line), in order. May be NULL. */
	void (*body)(void *arg, const char *p, size_t len);
	void *arg;
};

enum mxf_mailhdr_state { MXF_MH_LINESTART, MXF_MH_INLINE, MXF_MH_EOH_CR, MXF_MH_BODY };

struct mxf_mailhdr {
	struct mxf_mailhdr_cb cb;
	enum mxf_mailhdr_state st;
	size_t len;        /* octets of the current field in buf */
	bool infield;      /* a field is under way */
	bool over;         /* the current field outgrew buf: passing through */
	bool over_keep;    /* ... with this verdict */
	bool eoh_called;
	unsigned long long fields, dropped; /* counts */
	unsigned long long dropped_octets;
	char buf[MXF_MAILHDR_FIELD_MAX];
};

void mxf_mailhdr_init(struct mxf_mailhdr *h, const struct mxf_mailhdr_cb *cb);
/* True once the body has started (what is fed from then on passes
 * through unchanged). */
bool mxf_mailhdr_in_body(const struct mxf_mailhdr *h);
/* Consumes all n octets of in, writes what is kept to out and returns its
 * length. out must not overlap in and must hold n + MXF_MAILHDR_FIELD_MAX
 * octets (a held field is released). */
size_t mxf_mailhdr_feed(struct mxf_mailhdr *h, const char *in, size_t n, char *out);
/* End of the message: releases a field still held (a message without a
 * body). out holds MXF_MAILHDR_FIELD_MAX + 2 octets. */
size_t mxf_mailhdr_end(struct mxf_mailhdr *h, char *out);

/* Case-insensitive test of a field's name ("From" matches "from : x"). */
bool mxf_mailhdr_is(const char *f, size_t len, const char *name);

/* A field's value fit for a log or a JSON string: unfolded, surrounding
 * whitespace removed, every control octet a space, every octet that is not
 * part of a well-formed UTF-8 sequence a '?', cut at cap - 1 octets on a
 * character boundary. f is the whole field. Returns the length written. */
size_t mxf_mailhdr_value(const char *f, size_t len, char *out, size_t cap);
/* What the activity log keeps of a Subject and a Message-ID (octets). */
#define MXF_MAILHDR_SUBJECT_MAX 300
#define MXF_MAILHDR_MSGID_MAX 250

/* Whether s is what mxf_mailhdr_value makes: well-formed UTF-8 without
 * control octets, at most max octets. */
bool mxf_mailhdr_text_ok(const char *s, size_t max);

/* The authserv-id of an Authentication-Results field value (RFC 8601 §2.2:
 * the first token, after CFWS, up to ';' or CFWS), lower-cased into id.
 * f is the whole field. Returns 0, or -EINVAL when none can be found. */
int mxf_mailhdr_authserv_id(const char *f, size_t len, char *id, size_t cap);

/* The domain of the single address of a From field (RFC 5322 mailbox:
 * "Name <l@d>", "l@d", with comments and quoted strings), lower-cased, no
 * trailing dot. Returns 0; -EINVAL without a usable address; -E2BIG when
 * the field holds several mailboxes (DMARC cannot choose one). */
int mxf_mailhdr_from_domain(const char *f, size_t len, char *domain, size_t cap);

/* A tag=value list (RFC 6376 §3.2): calls fn for each tag with its value,
 * whitespace (FWS) removed around both; fn returns false to stop. Returns
 * 0, or -EINVAL for a malformed list (a tag without '=', an empty or
 * invalid tag name, a tag given twice). */
int mxf_mailhdr_tags(const char *s, size_t len,
		     bool (*fn)(void *arg, const char *tag, size_t tl, const char *val, size_t vl),
		     void *arg);

#endif
