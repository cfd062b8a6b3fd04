#include "dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"

struct mxf_dns {
	ldns_resolver *r;
	uint32_t last_ttl;
};

/* why: "TYPE: reason" */
static void set_why(char *why, size_t whylen, const char *type, const char *reason)
{
	if (why && whylen)
		snprintf(why, whylen, "%s: %s", type, reason);
}

int mxf_dns_new(const char *server, unsigned timeout_s, unsigned tries, struct mxf_dns **out,
		char *err, size_t errlen)
{
	struct mxf_dns *d = calloc(1, sizeof(*d));
	ldns_resolver *r = NULL;

	if (!d)
		return -ENOMEM;
	if (server && server[0]) {
		char host[256];
		unsigned port;
		unsigned char buf[sizeof(struct in6_addr)];
		ldns_rdf *ns = NULL;

		if (mxf_config_split_hostport(server, host, sizeof(host), &port) < 0) {
			snprintf(err, errlen, "dns resolver %s: expected host:port", server);
			free(d);
			return -EINVAL;
		}
		if (inet_pton(AF_INET, host, buf) == 1)
			ns = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, 4, buf);
		else if (inet_pton(AF_INET6, host, buf) == 1)
			ns = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_AAAA, 16, buf);
		else {
			snprintf(err, errlen, "dns resolver %s: not an IP address", server);
			free(d);
			return -EINVAL;
		}
		r = ldns_resolver_new();
		if (!ns || !r || ldns_resolver_push_nameserver(r, ns) != LDNS_STATUS_OK) {
			ldns_rdf_deep_free(ns);
			if (r)
				ldns_resolver_deep_free(r);
			free(d);
			return -ENOMEM;
		}
		ldns_rdf_deep_free(ns);
		ldns_resolver_set_port(r, (uint16_t)port);
	} else {
		ldns_status st = ldns_resolver_new_frm_file(&r, NULL);
		if (st != LDNS_STATUS_OK) {
			snprintf(err, errlen, "cannot read /etc/resolv.conf: %s",
				 ldns_get_errorstr_by_id(st));
			free(d);
			return -EIO;
		}
		if (ldns_resolver_nameserver_count(r) == 0) {
			snprintf(err, errlen, "/etc/resolv.conf names no nameserver");
			ldns_resolver_deep_free(r);
			free(d);
			return -EINVAL;
		}
	}
	/* Names are always absolute: never append a search domain. */
	ldns_resolver_set_defnames(r, false);
	ldns_resolver_set_dnsrch(r, false);
	ldns_resolver_set_recursive(r, true);
	ldns_resolver_set_fallback(r, true); /* TC=1: retry over TCP */
	ldns_resolver_set_igntc(r, false);
	ldns_resolver_set_edns_udp_size(r, 1232);
	ldns_resolver_set_retry(r, (uint8_t)(tries ? (tries > 10 ? 10 : tries) : 1));
	ldns_resolver_set_retrans(r, 0);
	ldns_resolver_set_timeout(r, (struct timeval){.tv_sec = timeout_s ? timeout_s : 5});
	d->r = r;
	*out = d;
	return 0;
}

int mxf_dns_clone(const struct mxf_dns *d, struct mxf_dns **out)
{
	struct mxf_dns *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	/* ldns_resolver_clone takes a non-const pointer but only reads it. */
	c->r = ldns_resolver_clone((ldns_resolver *)d->r);
	if (!c->r) {
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void mxf_dns_free(struct mxf_dns *d)
{
	if (!d)
		return;
	ldns_resolver_deep_free(d->r);
	free(d);
}

bool mxf_dns_name_valid(const char *name)
{
	size_t len = strlen(name), lab = 0;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > MXF_DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (lab == 0)
				return false;
			lab = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return false;
		if (++lab > 63)
			return false;
	}
	return lab > 0;
}

static const char *rcode_str(ldns_pkt_rcode rc)
{
	switch (rc) {
	case LDNS_RCODE_FORMERR: return "FORMERR";
	case LDNS_RCODE_SERVFAIL: return "SERVFAIL";
	case LDNS_RCODE_NXDOMAIN: return "NXDOMAIN";
	case LDNS_RCODE_NOTIMPL: return "NOTIMP";
	case LDNS_RCODE_REFUSED: return "REFUSED";
	default: return "unexpected rcode";
	}
}

/* TTL for a negative answer (RFC 2308: the SOA's TTL capped by its MINIMUM
 * field); a default when the server sent no SOA. */
static uint32_t negative_ttl(const ldns_pkt *a)
{
	ldns_rr_list *auth = ldns_pkt_authority(a);
	for (size_t i = 0; i < ldns_rr_list_rr_count(auth); i++) {
		ldns_rr *rr = ldns_rr_list_rr(auth, i);
		if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA || ldns_rr_rd_count(rr) < 7)
			continue;
		uint32_t min = ldns_rdf2native_int32(ldns_rr_rdf(rr, 6));
		uint32_t ttl = ldns_rr_ttl(rr);
		return ttl < min ? ttl : min;
	}
	return MXF_DNS_NEG_TTL_DEFAULT;
}

/* One lookup; on MXF_DNS_OK *rrs holds the records of type t owned by name or
 * by the end of its CNAME chain. A chain is followed within the answer and,
 * when the answer stops at a CNAME (an authoritative server for another zone
 * does that), by asking for the target: RFC 5321 §5.1 processes a CNAME'd
 * name as the name it points to. */
static int query(struct mxf_dns *d, const char *name, ldns_rr_type t, const char *tname,
		 ldns_rr_list **rrs, char *why, size_t whylen)
{
	char abs[MXF_DNS_NAME_MAX + 2];
	ldns_rdf *dn, *cur;
	ldns_pkt *q = NULL, *a = NULL;
	uint32_t ttl = UINT32_MAX;
	int rc = MXF_DNS_TEMPFAIL, hops = 0;

	*rrs = NULL;
	d->last_ttl = MXF_DNS_NEG_TTL_DEFAULT;
	if (!mxf_dns_name_valid(name))
		return -EINVAL;
	snprintf(abs, sizeof(abs), "%s%s", name, name[strlen(name) - 1] == '.' ? "" : ".");
	if (!(dn = ldns_dname_new_frm_str(abs)))
		return -ENOMEM;
	cur = dn;
again:
	/* ldns marks a nameserver that timed out as unreachable for the life of
	 * the resolver; each lookup gets a fresh chance at every server. */
	for (size_t i = 0; i < ldns_resolver_nameserver_count(d->r); i++)
		ldns_resolver_set_nameserver_rtt(d->r, i, LDNS_RESOLV_RTT_MIN);
	ldns_status st = ldns_resolver_prepare_query_pkt(&q, d->r, cur, t, LDNS_RR_CLASS_IN, LDNS_RD);
	if (st != LDNS_STATUS_OK) {
		rc = -ENOMEM;
		goto out;
	}
	st = ldns_resolver_send_pkt(&a, d->r, q);
	if (st != LDNS_STATUS_OK || !a) {
		char r[128];
		snprintf(r, sizeof(r), "%s", ldns_get_errorstr_by_id(st));
		set_why(why, whylen, tname, st == LDNS_STATUS_OK ? "no answer" : r);
		rc = MXF_DNS_TEMPFAIL;
		goto out;
	}
	/* ldns does not match answers to queries over UDP: an answer with
	 * another ID or question could be spoofed, never use it. */
	ldns_rr_list *qs = ldns_pkt_question(a);
	if (!ldns_pkt_qr(a) || ldns_pkt_id(a) != ldns_pkt_id(q) || ldns_rr_list_rr_count(qs) != 1 ||
	    ldns_rr_get_type(ldns_rr_list_rr(qs, 0)) != t ||
	    ldns_dname_compare(ldns_rr_owner(ldns_rr_list_rr(qs, 0)), cur) != 0) {
		set_why(why, whylen, tname, "answer does not match the query");
		rc = MXF_DNS_TEMPFAIL;
		goto out;
	}
	switch (ldns_pkt_get_rcode(a)) {
	case LDNS_RCODE_NOERROR: {
		ldns_rr_list *an = ldns_pkt_answer(a);
		/* Walk the chain: records of type t at cur, or a CNAME to follow. */
		for (;;) {
			ldns_rr_list *found = NULL;
			ldns_rdf *next = NULL;
			for (size_t i = 0; i < ldns_rr_list_rr_count(an); i++) {
				ldns_rr *rr = ldns_rr_list_rr(an, i);
				if (ldns_dname_compare(ldns_rr_owner(rr), cur) != 0)
					continue;
				if (ldns_rr_get_type(rr) == t) {
					if (!found && !(found = ldns_rr_list_new()))
						break;
					ldns_rr *c = ldns_rr_clone(rr);
					if (!c || !ldns_rr_list_push_rr(found, c)) {
						ldns_rr_free(c);
						break;
					}
					if (ldns_rr_ttl(rr) < ttl)
						ttl = ldns_rr_ttl(rr);
				} else if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME && !next &&
					   ldns_rr_rd_count(rr) == 1) {
					next = ldns_rr_rdf(rr, 0);
					if (ldns_rr_ttl(rr) < ttl)
						ttl = ldns_rr_ttl(rr);
				}
			}
			if (found) {
				*rrs = found;
				d->last_ttl = ttl;
				rc = MXF_DNS_OK;
				goto out;
			}
			if (!next) {
				set_why(why, whylen, tname, "no records");
				d->last_ttl = negative_ttl(a);
				rc = MXF_DNS_NODATA;
				goto out;
			}
			if (++hops > MXF_DNS_CNAME_HOPS) {
				set_why(why, whylen, tname, "CNAME chain too long");
				rc = MXF_DNS_TEMPFAIL;
				goto out;
			}
			ldns_rdf *nc = ldns_rdf_clone(next);
			if (!nc) {
				rc = -ENOMEM;
				goto out;
			}
			if (cur != dn)
				ldns_rdf_deep_free(cur);
			cur = nc;
			/* Is the target answered here too? Else ask for it. */
			bool here = false;
			for (size_t i = 0; i < ldns_rr_list_rr_count(an) && !here; i++)
				here = ldns_dname_compare(ldns_rr_owner(ldns_rr_list_rr(an, i)), cur) == 0;
			if (!here) {
				ldns_pkt_free(q);
				ldns_pkt_free(a);
				q = a = NULL;
				goto again;
			}
		}
	}
	case LDNS_RCODE_NXDOMAIN:
		set_why(why, whylen, tname, "no such domain");
		d->last_ttl = negative_ttl(a);
		rc = MXF_DNS_NXDOMAIN;
		break;
	default:
		set_why(why, whylen, tname, rcode_str(ldns_pkt_get_rcode(a)));
		rc = MXF_DNS_TEMPFAIL;
		break;
	}
out:
	if (rc == MXF_DNS_TEMPFAIL)
		d->last_ttl = 0;
	ldns_pkt_free(q);
	ldns_pkt_free(a);
	if (cur != dn)
		ldns_rdf_deep_free(cur);
	ldns_rdf_deep_free(dn);
	return rc;
}

uint32_t mxf_dns_last_ttl(const struct mxf_dns *d)
{
	return d->last_ttl;
}

/* A name from an answer into our form; false when it is not a host name. */
static bool dname_to_host(const ldns_rdf *rdf, char *out, size_t cap)
{
	char *s = ldns_rdf2str(rdf);
	bool ok = false;

	if (!s)
		return false;
	size_t len = strlen(s);
	if (strcmp(s, ".") == 0) {
		out[0] = '\0';
		ok = true;
	} else if (mxf_dns_name_valid(s) && len < cap + 1) {
		if (s[len - 1] == '.')
			len--;
		for (size_t i = 0; i < len; i++)
			out[i] = (char)tolower((unsigned char)s[i]);
		out[len] = '\0';
		ok = true;
	}
	free(s);
	return ok;
}

int mxf_dns_mx(struct mxf_dns *d, const char *domain, struct mxf_mx **mx, size_t *n, char *why,
	       size_t whylen)
{
	ldns_rr_list *rrs;

	*mx = NULL;
	*n = 0;
	int rc = query(d, domain, LDNS_RR_TYPE_MX, "MX", &rrs, why, whylen);
	if (rc != MXF_DNS_OK)
		return rc;
	size_t cnt = ldns_rr_list_rr_count(rrs);
	struct mxf_mx *v = calloc(cnt < MXF_DNS_MX_MAX ? cnt : MXF_DNS_MX_MAX, sizeof(*v));
	if (!v) {
		ldns_rr_list_deep_free(rrs);
		return -ENOMEM;
	}
	size_t k = 0;
	for (size_t i = 0; i < cnt && k < MXF_DNS_MX_MAX; i++) {
		ldns_rr *rr = ldns_rr_list_rr(rrs, i);
		ldns_rdf *pref = ldns_rr_mx_preference(rr), *ex = ldns_rr_mx_exchange(rr);
		if (!pref || !ex || ldns_rdf_size(pref) != 2)
			continue;
		if (!dname_to_host(ex, v[k].host, sizeof(v[k].host)))
			continue;
		v[k].pref = ldns_rdf2native_int16(pref);
		k++;
	}
	ldns_rr_list_deep_free(rrs);
	if (k == 0) {
		free(v);
		set_why(why, whylen, "MX", "no usable records");
		return MXF_DNS_TEMPFAIL;
	}
	*mx = v;
	*n = k;
	return MXF_DNS_OK;
}

int mxf_dns_addrs(struct mxf_dns *d, const char *host, int family, struct mxf_dns_addr *out,
		  size_t cap, size_t *n, char *why, size_t whylen)
{
	ldns_rr_list *rrs;
	bool v6 = family == AF_INET6;

	*n = 0;
	if (family != AF_INET && family != AF_INET6)
		return -EINVAL;
	int rc = query(d, host, v6 ? LDNS_RR_TYPE_AAAA : LDNS_RR_TYPE_A, v6 ? "AAAA" : "A", &rrs,
		       why, whylen);
	if (rc != MXF_DNS_OK)
		return rc;
	size_t k = 0, want = v6 ? 16 : 4;
	for (size_t i = 0; i < ldns_rr_list_rr_count(rrs) && k < cap; i++) {
		ldns_rdf *a = ldns_rr_a_address(ldns_rr_list_rr(rrs, i));
		if (!a || ldns_rdf_size(a) != want)
			continue;
		memset(&out[k], 0, sizeof(out[k]));
		out[k].family = family;
		memcpy(v6 ? (void *)&out[k].a.v6 : (void *)&out[k].a.v4, ldns_rdf_data(a), want);
		k++;
	}
	ldns_rr_list_deep_free(rrs);
	if (k == 0) {
		set_why(why, whylen, v6 ? "AAAA" : "A", "no usable records");
		return MXF_DNS_TEMPFAIL;
	}
	*n = k;
	return MXF_DNS_OK;
}

static uint32_t csprng(void *arg, uint32_t bound)
{
	(void)arg;
	/* Rejection sampling keeps the result uniform. */
	uint32_t lim = UINT32_MAX - UINT32_MAX % bound, x;
	do {
		if (RAND_bytes((unsigned char *)&x, sizeof(x)) != 1)
			abort();
	} while (x >= lim);
	return x % bound;
}

size_t mxf_dns_mx_order(struct mxf_mx *mx, size_t n, bool *nullmx, mxf_dns_rand_fn rnd, void *arg)
{
	size_t k = 0;

	if (!rnd)
		rnd = csprng;
	/* Drop "." exchanges (RFC 7505 null MX); if nothing is left, the
	 * domain says it takes no mail at all. */
	for (size_t i = 0; i < n; i++)
		if (mx[i].host[0] != '\0')
			mx[k++] = mx[i];
	*nullmx = n > 0 && k == 0;
	n = k;
	/* Stable insertion sort by preference (n is small). */
	for (size_t i = 1; i < n; i++) {
		struct mxf_mx t = mx[i];
		size_t j = i;
		while (j > 0 && mx[j - 1].pref > t.pref) {
			mx[j] = mx[j - 1];
			j--;
		}
		mx[j] = t;
	}
	/* Shuffle each run of equal preference (Fisher-Yates): spreads load
	 * over hosts the domain ranks alike, as RFC 5321 §5.1 asks. */
	for (size_t s = 0; s < n;) {
		size_t e = s + 1;
		while (e < n && mx[e].pref == mx[s].pref)
			e++;
		for (size_t i = e - 1; i > s; i--) {
			size_t j = s + rnd(arg, (uint32_t)(i - s + 1));
			struct mxf_mx t = mx[i];
			mx[i] = mx[j];
			mx[j] = t;
		}
		s = e;
	}
	/* A host listed twice: only its first (most preferred) place counts. */
	k = 0;
	for (size_t i = 0; i < n; i++) {
		bool dup = false;
		for (size_t j = 0; j < k && !dup; j++)
			dup = strcmp(mx[j].host, mx[i].host) == 0;
		if (!dup)
			mx[k++] = mx[i];
	}
	return k;
}

int mxf_dns_ptr(struct mxf_dns *d, const char *revname, char (*names)[MXF_DNS_NAME_MAX + 1],
		size_t cap, size_t *n, char *why, size_t whylen)
{
	ldns_rr_list *rrs;

	*n = 0;
	int rc = query(d, revname, LDNS_RR_TYPE_PTR, "PTR", &rrs, why, whylen);
	if (rc != MXF_DNS_OK)
		return rc;
	size_t k = 0;
	for (size_t i = 0; i < ldns_rr_list_rr_count(rrs) && k < cap; i++) {
		ldns_rr *rr = ldns_rr_list_rr(rrs, i);
		/* A PTR to "." or to something that is no host name is no name. */
		if (ldns_rr_rd_count(rr) == 1 && dname_to_host(ldns_rr_rdf(rr, 0), names[k],
								MXF_DNS_NAME_MAX + 1) &&
		    names[k][0])
			k++;
	}
	ldns_rr_list_deep_free(rrs);
	if (k == 0) {
		set_why(why, whylen, "PTR", "no usable records");
		return MXF_DNS_NODATA;
	}
	*n = k;
	return MXF_DNS_OK;
}

void mxf_dns_txt_free(char **txt, size_t n)
{
	if (!txt)
		return;
	for (size_t i = 0; i < n; i++)
		free(txt[i]);
	free(txt);
}

int mxf_dns_txt(struct mxf_dns *d, const char *name, char ***txt, size_t *n, char *why,
		size_t whylen)
{
	ldns_rr_list *rrs;

	*txt = NULL;
	*n = 0;
	int rc = query(d, name, LDNS_RR_TYPE_TXT, "TXT", &rrs, why, whylen);
	if (rc != MXF_DNS_OK)
		return rc;
	size_t cnt = ldns_rr_list_rr_count(rrs);
	if (cnt > MXF_DNS_TXT_MAX)
		cnt = MXF_DNS_TXT_MAX;
	char **out = calloc(cnt ? cnt : 1, sizeof(*out));
	if (!out) {
		ldns_rr_list_deep_free(rrs);
		return -ENOMEM;
	}
	size_t k = 0;
	for (size_t i = 0; i < cnt; i++) {
		ldns_rr *rr = ldns_rr_list_rr(rrs, i);
		size_t total = 0;
		for (size_t j = 0; j < ldns_rr_rd_count(rr); j++) {
			ldns_rdf *f = ldns_rr_rdf(rr, j);
			if (ldns_rdf_size(f) >= 1)
				total += ldns_rdf_size(f) - 1;
		}
		char *s = malloc(total + 1);
		if (!s) {
			mxf_dns_txt_free(out, k);
			ldns_rr_list_deep_free(rrs);
			return -ENOMEM;
		}
		size_t o = 0;
		/* Character-strings are length-prefixed; RFC 7208 §3.3 and RFC
		 * 6376 §3.6.2.2 join them without anything in between. */
		for (size_t j = 0; j < ldns_rr_rd_count(rr); j++) {
			ldns_rdf *f = ldns_rr_rdf(rr, j);
			const uint8_t *p = ldns_rdf_data(f);
			size_t sz = ldns_rdf_size(f);
			if (sz < 1)
				continue;
			size_t l = p[0] < sz - 1 ? p[0] : sz - 1;
			memcpy(s + o, p + 1, l);
			o += l;
		}
		s[o] = '\0';
		/* A NUL inside a record would cut it short for C callers:
		 * such a record is not one we could evaluate; drop it. */
		if (strlen(s) != o) {
			free(s);
			continue;
		}
		out[k++] = s;
	}
	ldns_rr_list_deep_free(rrs);
	if (k == 0) {
		free(out);
		set_why(why, whylen, "TXT", "no usable records");
		return MXF_DNS_NODATA;
	}
	*txt = out;
	*n = k;
	return MXF_DNS_OK;
}
