/* dns: the lookups mxferry's daemons make (MX and addresses now; TXT for
 * SPF/DKIM/DMARC later), through ldns.
 *
 * Every lookup goes to [main] dns_resolver when set, else to the system's
 * /etc/resolv.conf, and never anywhere else (DESIGN.md §6): the tests run in a
 * network namespace where only their own DNS server exists.
 *
 * A struct mxf_dns is not thread-safe (neither is ldns's resolver): a thread
 * pool job takes its own copy with mxf_dns_clone. Create the first one before
 * dropping privileges and chrooting, since it reads /etc/resolv.conf.
 *
 * The choice of hosts from an MX answer (RFC 5321 §5.1, RFC 7505) is the pure
 * function mxf_dns_mx_order, testable without a server.
 */
#ifndef MXF_DNS_H
#define MXF_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Presentation form of a name, no trailing dot: at most 253 octets. */
#define MXF_DNS_NAME_MAX 253
/* Records kept from one answer; the rest is ignored (a hostile zone must not
 * make us try hosts for hours). */
#define MXF_DNS_MX_MAX 32
#define MXF_DNS_ADDR_MAX 16
/* CNAMEs followed from one name before giving up (temporary failure). */
#define MXF_DNS_CNAME_HOPS 8
/* Cache time of a negative answer that carries no SOA. */
#define MXF_DNS_NEG_TTL_DEFAULT 60

/* Outcome of one lookup (>= 0); functions return -errno on local failures. */
enum mxf_dns_rc {
	MXF_DNS_OK = 0,   /* records found */
	MXF_DNS_NODATA,   /* the name exists without records of that type */
	MXF_DNS_NXDOMAIN, /* the name does not exist: permanent */
	MXF_DNS_TEMPFAIL, /* timeout, SERVFAIL, REFUSED, bogus answer: try later */
};

struct mxf_dns;

/* server: "host:port" or "[v6]:port" (an IP address, the only nameserver
 * used), or "" for the nameservers of /etc/resolv.conf. timeout_s per try,
 * tries per nameserver. Retries over TCP when a UDP answer is truncated.
 * Writes a one-line reason to err on failure. */
int mxf_dns_new(const char *server, unsigned timeout_s, unsigned tries, struct mxf_dns **out,
		char *err, size_t errlen);
int mxf_dns_clone(const struct mxf_dns *d, struct mxf_dns **out);
void mxf_dns_free(struct mxf_dns *d);

/* True for a syntactically valid host name (LDH labels, '_' tolerated, 1-63
 * octets each, at most 253 in all, one optional trailing dot). */
bool mxf_dns_name_valid(const char *name);

struct mxf_mx {
	uint16_t pref;
	char host[MXF_DNS_NAME_MAX + 1]; /* lower case, no trailing dot; "" is the root "." */
};

/* MX records of domain, as received (at most MXF_DNS_MX_MAX; records whose
 * exchange is not a valid host name are dropped). On MXF_DNS_OK *mx (free())
 * holds *n >= 1 records; otherwise *mx is NULL. why (may be NULL) gets a
 * short reason for anything but MXF_DNS_OK. Returns an mxf_dns_rc, -EINVAL for
 * an invalid domain, -ENOMEM. */
int mxf_dns_mx(struct mxf_dns *d, const char *domain, struct mxf_mx **mx, size_t *n, char *why,
	       size_t whylen);

struct mxf_dns_addr {
	int family; /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} a;
};

/* A (family AF_INET) or AAAA (AF_INET6) records of host, up to cap. Returns an
 * mxf_dns_rc (MXF_DNS_OK with *n >= 1), -EINVAL, -ENOMEM. */
int mxf_dns_addrs(struct mxf_dns *d, const char *host, int family, struct mxf_dns_addr *out,
		  size_t cap, size_t *n, char *why, size_t whylen);

/* PTR records at revname (the in-addr.arpa or ip6.arpa name; see
 * mxf_dnsbl_ip_name), as host names (lower case, no trailing dot), up to cap.
 * Records that are not host names are dropped (NODATA when none is left).
 * Returns an mxf_dns_rc (MXF_DNS_OK with *n >= 1), -EINVAL, -ENOMEM. */
int mxf_dns_ptr(struct mxf_dns *d, const char *revname, char (*names)[MXF_DNS_NAME_MAX + 1],
		size_t cap, size_t *n, char *why, size_t whylen);

/* TXT records at name (SPF, DKIM keys, DMARC; issue 7), each record's
 * character-strings joined, at most MXF_DNS_TXT_MAX records; a record holding
 * a NUL is dropped. On MXF_DNS_OK *txt holds *n >= 1 strings, freed with
 * mxf_dns_txt_free. Returns an mxf_dns_rc, -EINVAL, -ENOMEM. */
#define MXF_DNS_TXT_MAX 32
int mxf_dns_txt(struct mxf_dns *d, const char *name, char ***txt, size_t *n, char *why,
		size_t whylen);
void mxf_dns_txt_free(char **txt, size_t n);

/* TTL (seconds) of the last lookup's answer on this handle: the smallest TTL
 * of the records used (CNAMEs included) for MXF_DNS_OK, the negative-caching
 * TTL (RFC 2308) for NODATA and NXDOMAIN, 0 for TEMPFAIL. For caches. */
uint32_t mxf_dns_last_ttl(const struct mxf_dns *d);

/* Uniform random number in [0, bound); bound >= 1. */
typedef uint32_t (*mxf_dns_rand_fn)(void *arg, uint32_t bound);

/* Turns an MX answer into the hosts to try, in place (pure):
 * - records whose exchange is "." are removed; when that leaves none, the
 *   domain has a null MX (RFC 7505: it accepts no mail) and *nullmx is set;
 * - the rest is sorted by preference, records of equal preference shuffled
 *   (RFC 5321 §5.1) with rnd (NULL: a CSPRNG);
 * - a host listed twice keeps only its most preferred record.
 * Returns the number of hosts kept at the front of mx. */
size_t mxf_dns_mx_order(struct mxf_mx *mx, size_t n, bool *nullmx, mxf_dns_rand_fn rnd, void *arg);

#endif
