/* Block-list lookups of one SMTP session (issue 11), on top of the sans-I/O
 * common/dnsbl.c.
 *
 * Lookups start as soon as their subject is known (the client IP at connect,
 * the HELO name at HELO, the sender domain at MAIL), run in parallel on
 * libuv's thread pool, each with its own clone of the resolver (ldns
 * resolvers are not thread-safe), and their answers are cached process-wide
 * for their TTL. The verdict is taken at RCPT: a session waits there for the
 * lookups still running, at most [smtpd] dnsbl_timeout after each began, then
 * goes on without those that did not answer; a dead list never holds a
 * session longer than that. */
#ifndef MXF_SMTPD_ABUSE_H
#define MXF_SMTPD_ABUSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct blstate;

/* Reads the lists and creates the resolver: before the chroot. */
void bl_init(const struct mxf_config *cfg);
/* True when any list is configured. */
bool bl_enabled(void);
/* True when some list has a negative weight (an allow list): a score can
 * then still go down as answers arrive. */
bool bl_can_lower(void);
/* The score at or above which a client is refused. */
int bl_reject_threshold(void);

/* Greylisting ([smtpd] greylisting): for a recipient the router accepted,
 * with the session's score. GL_SKIP: not greylisted (off, allowed range,
 * score under greylist_threshold); GL_DEFER: answer 451 4.7.1 (first sight,
 * or the delay has not passed; *left_ms until it has); GL_PASS: retried
 * after the delay within the window, remembered 35 days. */
enum gl_result { GL_SKIP, GL_DEFER, GL_PASS };
bool bl_greylisting(void);
int bl_greylist_threshold(void);
enum gl_result bl_greylist(const char *ip, const char *sender, const char *rcpt, int score,
			   uint64_t *left_ms);

/* ready(owner) is called on the loop each time a lookup of the session ends. */
struct blstate *bl_new(void *owner, void (*ready)(void *owner));
/* The session is gone: lookups in flight finish into the cache only. */
void bl_detach(struct blstate *b);
void bl_lookup_ip(struct blstate *b, const char *ip);
void bl_lookup_domain(struct blstate *b, const char *domain);
/* Milliseconds a verdict may still wait for; 0: take it now. */
uint64_t bl_wait_ms(const struct blstate *b);
/* The lists that have not answered yet, for the log. */
void bl_unanswered(const struct blstate *b, char *out, size_t cap);
/* PTR and forward-confirmed reverse DNS of the client, in the same bounded
 * wait as the lists (only when their weights are not 0). */
void bl_lookup_rdns(struct blstate *b, const char *ip);
/* The client's PTR name once known (the confirmed one when there is one). */
const char *bl_ptr_name(const struct blstate *b);
/* Refusals per address, kept in memory (lost at restart) and halving every
 * 10 minutes: add one; load the current count into a new session. */
void bl_history_add(const char *ip);
void bl_history_load(struct blstate *b, const char *ip);

/* What the session saw, for the score. */
struct bl_facts {
	const char *ip, *helo, *sdomain; /* helo, sdomain: NULL or "" when unknown */
	bool pipelining;                 /* commands sent ahead without PIPELINING */
	unsigned bad_commands;
};
/* The score (hundredths) of what is known so far: list weights of the
 * lookups answered plus the heuristics. reason gets the refusal text
 * ("client [IP] blocked using ZONE; ..."), detail each part with its weight. */
int bl_verdict(const struct blstate *b, const struct bl_facts *f, char *reason, size_t rcap,
	       char *detail, size_t dcap);

#endif
