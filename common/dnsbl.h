/* dnsbl: the sans-I/O half of DNS block lists (issue 11): the
 * "[smtpd] dnsbl" / "rhsbl" syntax, the names to query, and whether an answer
 * counts as a listing. smtpd does the lookups (smtpd/abuse.c).
 *
 * Syntax (postscreen-like), entries separated by commas or blanks:
 *     zone[=ADDR[;ADDR...]][*WEIGHT]
 * e.g. "zen.test*2, bl.test=127.0.0.2;127.0.0.4". Addresses may also be
 * separated by commas ("bl.test=127.0.0.2,127.0.0.4"): a bare dotted quad
 * after an entry with '=' continues its list, since no zone is a dotted quad.
 * WEIGHT is a number with at most two decimals (0.5), default 1; a negative
 * one (an allow list) lowers the score. Scores are kept in hundredths. Without addresses, any answer in 127.0.0.0/8 outside 127.255.255.0/24
 * counts: answers outside 127/8 come from a hijacked or wildcarded zone, and
 * 127.255.255.x are the error codes some lists return to refused resolvers;
 * neither means "listed". */
#ifndef MXF_DNSBL_H
#define MXF_DNSBL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

#define MXF_DNSBL_ZONE_MAX 200 /* leaves room for 64 nibble labels + "." */
#define MXF_DNSBL_FILTER_MAX 16
#define MXF_DNSBL_ENTRIES_MAX 32

struct mxf_dnsbl_entry {
	char zone[MXF_DNSBL_ZONE_MAX + 1]; /* lower case, no trailing dot */
	int weight; /* hundredths */
	size_t nfilter; /* 0: the default filter above */
	struct in_addr filter[MXF_DNSBL_FILTER_MAX];
};

struct mxf_dnsbl_list {
	size_t n;
	struct mxf_dnsbl_entry e[MXF_DNSBL_ENTRIES_MAX];
};

/* Parses spec ("" gives an empty list). -EINVAL with a reason in err. */
int mxf_dnsbl_parse(const char *spec, struct mxf_dnsbl_list *out, char *err, size_t errlen);

/* The name to query for a client address in zone: reversed octets for IPv4
 * ("2.0.0.127.zone"), reversed nibbles for IPv6 (RFC 5782 §2.4); a v4-mapped
 * v6 address is queried as IPv4. -EINVAL for a bad address, -ENAMETOOLONG. */
int mxf_dnsbl_ip_name(const char *ip, const char *zone, char *out, size_t cap);

/* The name to query for a domain (HELO name, sender domain) in an RHSBL
 * zone: "domain.zone", lower case, trailing dot dropped. -EINVAL for
 * something that is not a host name (an address literal, say). */
int mxf_dnsbl_domain_name(const char *domain, const char *zone, char *out, size_t cap);

/* True when the A records of an answer make a listing for e. */
bool mxf_dnsbl_match(const struct mxf_dnsbl_entry *e, const struct in_addr *a, size_t n);

/* A score or weight ("1", "0.5", "-2.25", within +-1000) in hundredths. */
int mxf_score_parse(const char *s, size_t len, int *out);

/* The heuristics that add to a session's score besides the lists. */
enum mxf_score_factor {
	MXF_SC_NO_PTR,       /* the client address has no PTR */
	MXF_SC_FCRDNS,       /* no PTR name resolves back to the address */
	MXF_SC_HELO_LITERAL, /* HELO [address] of another host */
	MXF_SC_HELO_FQDN,    /* HELO not a fully qualified domain name */
	MXF_SC_PIPELINING,   /* commands sent ahead without PIPELINING */
	MXF_SC_BAD_COMMAND,  /* per unknown or malformed command (3 at most) */
	MXF_SC_HISTORY,      /* per recent refusal of the same address (decaying) */
	MXF_SC_N
};
const char *mxf_score_factor_name(enum mxf_score_factor f);
/* "[smtpd] score_weights": "NAME=WEIGHT, ..." over the defaults into w. */
int mxf_score_weights_parse(const char *spec, int w[MXF_SC_N], char *err, size_t errlen);

/* An address range: "192.0.2.0/24", "2001:db8::/32", or one address. */
struct mxf_cidr {
	int family;
	unsigned bits;
	unsigned char a[16];
};
#define MXF_CIDR_LIST_MAX 256
/* "cidr, cidr ..." into out (at most cap). -EINVAL with a reason in err. */
int mxf_cidr_parse_list(const char *spec, struct mxf_cidr *out, size_t cap, size_t *n, char *err,
			size_t errlen);
bool mxf_cidr_match(const struct mxf_cidr *list, size_t n, const char *ip);
/* The network of ip that greylisting and rate limits count together: the
 * /24 of an IPv4 address, the /64 of an IPv6 one ("192.0.2.0/24"). */
int mxf_ip_prefix(const char *ip, char *out, size_t cap);

enum mxf_helo_verdict { MXF_HELO_OK, MXF_HELO_NOT_FQDN, MXF_HELO_LITERAL_OTHER };
/* Judges a HELO/EHLO argument given the client's address. */
enum mxf_helo_verdict mxf_helo_check(const char *helo, const char *ip);

#endif
