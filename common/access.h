/* access: the operator's allow and block lists (issue 11), compiled in memory.
 *
 * Entries live in rules.db (mxf_rulesdb_access_*, written by mxferryctl);
 * the router compiles them with this module at every rules reload and
 * answers smtpd's ACCESS_CHECK from memory, never from SQLite.
 *
 * An entry is one of
 *   ip       an address or a CIDR range ("192.0.2.7", "198.51.100.0/24",
 *            "2001:db8::/32"), matched against the client address;
 *   domain   a domain name, matched against that domain and its subdomains:
 *            the envelope sender's domain, and (block only) the HELO name;
 *   address  an envelope sender address (case-insensitive).
 * The verdict (mxf_access_check): a client allow entry (ip) beats every
 * block; then a client block (ip, or a domain matching the HELO) refuses;
 * then a sender allow (address, domain) beats a sender block; then a sender
 * block refuses. HELO and sender are the client's own claims: they can get
 * it refused, never let it skip the block lists (see doc/design.md). */
#ifndef MXF_ACCESS_H
#define MXF_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

enum mxf_access_kind { MXF_ACCESS_IP, MXF_ACCESS_DOMAIN, MXF_ACCESS_ADDRESS };
#define MXF_ACCESS_VALUE_MAX 330  /* an address (320) or a range, plus NUL */
#define MXF_ACCESS_REASON_MAX 200

/* Validates and normalises an entry: an IP range to its network address
 * ("198.51.100.7/24" -> "198.51.100.0/24", "192.0.2.7/32" -> "192.0.2.7"), a
 * domain to lower-case A-labels, an address as mxf_addr_normalize does with
 * the domain lower-cased. -EINVAL when it is none of these. */
int mxf_access_parse(const char *value, enum mxf_access_kind *kind, char *out, size_t cap);
const char *mxf_access_kind_name(enum mxf_access_kind k);
/* An operator's reason made fit for an SMTP reply: printable ASCII, at most
 * MXF_ACCESS_REASON_MAX characters (others replaced by '?'); -EINVAL if too long. */
int mxf_access_reason_clean(const char *in, char *out, size_t cap);

struct mxf_access;
struct mxf_access *mxf_access_new(void);
void mxf_access_free(struct mxf_access *a);
/* Adds an entry (value as mxf_access_parse accepts; reason may be NULL).
 * -EINVAL for an invalid value, -ENOMEM. */
int mxf_access_add(struct mxf_access *a, bool allow, const char *value, const char *reason);
/* Sorts for lookups; call once after the last add. */
int mxf_access_finish(struct mxf_access *a);
size_t mxf_access_count(const struct mxf_access *a);

enum mxf_access_verdict {
	MXF_ACCESS_NONE,         /* no entry applies */
	MXF_ACCESS_ALLOW,        /* client allow-listed: skips block lists, score, greylisting */
	MXF_ACCESS_ALLOW_SENDER, /* sender allow-listed: skips greylisting */
	MXF_ACCESS_BLOCK,        /* refuse */
};
struct mxf_access_result {
	enum mxf_access_verdict verdict;
	const char *entry;  /* the matching entry's value, "" for none */
	const char *reason; /* the operator's reason, "" when none was given */
	bool client;        /* the match was on the client (ip, HELO), not the sender */
};
/* ip: the client address; helo, sender: NULL or "" when not known yet. The
 * result's strings point into a and live until it is freed. */
void mxf_access_check(const struct mxf_access *a, const char *ip, const char *helo,
		      const char *sender, struct mxf_access_result *out);
/* Whether a check at MAIL (HELO and sender known) must give the same verdict
 * as at_connect, the client's own (ip only) verdict from a: true when the
 * client is allow-listed (that beats every later entry) or when a holds no
 * domain or address entry (the only kinds HELO and sender are matched to). */
bool mxf_access_mail_final(const struct mxf_access *a, const struct mxf_access_result *at_connect);

#endif
