#include "dnsbl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns.h"

static bool is_sep(char c);

/* The next token of a separated list at *p; false at the end. */
static bool next_token(const char **p, const char **tok, size_t *len)
{
	while (**p && is_sep(**p))
		(*p)++;
	if (!**p)
		return false;
	*tok = *p;
	while (**p && !is_sep(**p))
		(*p)++;
	*len = (size_t)(*p - *tok);
	return true;
}

static bool is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A dotted quad, optionally followed by "*weight": continues an address list. */
static bool is_quad(const char *tok, size_t len)
{
	char buf[32];
	const char *star = memchr(tok, '*', len);
	size_t ql = star ? (size_t)(star - tok) : len;
	struct in_addr a;
	if (ql == 0 || ql >= sizeof(buf))
		return false;
	memcpy(buf, tok, ql);
	buf[ql] = '\0';
	return inet_pton(AF_INET, buf, &a) == 1;
}

int mxf_score_parse(const char *s, size_t len, int *out)
{
	/* [-]digits[.d[d]]: hundredths, so weights like 0.5 need no floats. */
	size_t i = 0;
	int sign = 1, v = 0, frac = 0, fd = 0;
	if (i < len && (s[i] == '-' || s[i] == '+'))
		sign = s[i++] == '-' ? -1 : 1;
	size_t start = i;
	while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 5)
		v = v * 10 + (s[i++] - '0');
	if (i == start)
		return -EINVAL;
	if (i < len && s[i] == '.') {
		i++;
		while (i < len && s[i] >= '0' && s[i] <= '9' && fd < 2) {
			frac = frac * 10 + (s[i++] - '0');
			fd++;
		}
		if (fd == 0)
			return -EINVAL;
		if (fd == 1)
			frac *= 10;
	}
	if (i != len || v > 1000)
		return -EINVAL;
	*out = sign * (v * 100 + frac);
	return 0;
}

static int parse_weight(const char *s, size_t len, int *w)
{
	return mxf_score_parse(s, len, w);
}

static const char *const factor_names[MXF_SC_N] = {
	"no_ptr", "fcrdns", "helo_literal", "helo_fqdn", "pipelining", "bad_command", "history",
};
/* Defaults: none alone reaches the default reject_threshold of 1; a few
 * together, or one with a block listing, do. */
static const int factor_defaults[MXF_SC_N] = {30, 20, 50, 30, 50, 20, 25};

const char *mxf_score_factor_name(enum mxf_score_factor f)
{
	return factor_names[f];
}

int mxf_score_weights_parse(const char *spec, int w[MXF_SC_N], char *err, size_t errlen)
{
	memcpy(w, factor_defaults, sizeof(factor_defaults));
	const char *p = spec;
	for (;;) {
		const char *tok;
		size_t len;
		if (!next_token(&p, &tok, &len))
			return 0;
		const char *eq = memchr(tok, '=', len);
		size_t nl = eq ? (size_t)(eq - tok) : 0;
		int f = -1;
		for (int i = 0; eq && i < MXF_SC_N; i++)
			if (strlen(factor_names[i]) == nl && strncmp(tok, factor_names[i], nl) == 0)
				f = i;
		if (f < 0 || mxf_score_parse(eq + 1, (size_t)(tok + len - eq - 1), &w[f]) < 0) {
			snprintf(err, errlen, "'%.*s': expected NAME=WEIGHT, NAME one of no_ptr "
					      "fcrdns helo_literal helo_fqdn pipelining bad_command history",
				 (int)len, tok);
			return -EINVAL;
		}
	}
}

enum mxf_helo_verdict mxf_helo_check(const char *helo, const char *ip)
{
	size_t len = strlen(helo);
	if (len >= 2 && helo[0] == '[' && helo[len - 1] == ']') {
		char lit[INET6_ADDRSTRLEN + 8];
		const char *a = helo + 1;
		size_t al = len - 2;
		if (al > 5 && strncasecmp(a, "IPv6:", 5) == 0)
			a += 5, al -= 5;
		if (al >= sizeof(lit))
			return MXF_HELO_LITERAL_OTHER;
		memcpy(lit, a, al);
		lit[al] = '\0';
		unsigned char x[16], y[16];
		int fam = strchr(lit, ':') ? AF_INET6 : AF_INET;
		if (inet_pton(fam, lit, x) != 1 || inet_pton(fam, ip, y) != 1 ||
		    memcmp(x, y, fam == AF_INET ? 4 : 16) != 0)
			return MXF_HELO_LITERAL_OTHER;
		return MXF_HELO_OK;
	}
	if (len && helo[len - 1] == '.')
		len--;
	/* A bare IP without brackets, a single label, or no name at all. */
	struct in_addr a4;
	if (!mxf_dns_name_valid(helo) || !memchr(helo, '.', len) || inet_pton(AF_INET, helo, &a4) == 1)
		return MXF_HELO_NOT_FQDN;
	return MXF_HELO_OK;
}

/* Adds the ';'-separated addresses of s[0..len) to e's filter. */
static int add_filters(struct mxf_dnsbl_entry *e, const char *s, size_t len)
{
	if (len == 0)
		return -EINVAL;
	while (len > 0) {
		const char *semi = memchr(s, ';', len);
		size_t al = semi ? (size_t)(semi - s) : len;
		char buf[32];
		if (al == 0 || al >= sizeof(buf) || e->nfilter >= MXF_DNSBL_FILTER_MAX)
			return -EINVAL;
		memcpy(buf, s, al);
		buf[al] = '\0';
		if (inet_pton(AF_INET, buf, &e->filter[e->nfilter]) != 1)
			return -EINVAL;
		e->nfilter++;
		if (!semi)
			break;
		s += al + 1;
		len -= al + 1;
		if (len == 0)
			return -EINVAL;
	}
	return 0;
}

int mxf_dnsbl_parse(const char *spec, struct mxf_dnsbl_list *out, char *err, size_t errlen)
{
	const char *p = spec;
	struct mxf_dnsbl_entry *last = NULL; /* the entry a bare quad continues */

	memset(out, 0, sizeof(*out));
	for (;;) {
		const char *tok;
		size_t len;
		if (!next_token(&p, &tok, &len))
			return 0;
		if (last && is_quad(tok, len)) {
			const char *star = memchr(tok, '*', len);
			size_t ql = star ? (size_t)(star - tok) : len;
			if (add_filters(last, tok, ql) < 0 ||
			    (star && parse_weight(star + 1, len - ql - 1, &last->weight) < 0)) {
				snprintf(err, errlen, "bad address or weight '%.*s'", (int)len, tok);
				return -EINVAL;
			}
			continue;
		}
		if (out->n >= MXF_DNSBL_ENTRIES_MAX) {
			snprintf(err, errlen, "more than %d zones", MXF_DNSBL_ENTRIES_MAX);
			return -EINVAL;
		}
		struct mxf_dnsbl_entry *e = &out->e[out->n];
		memset(e, 0, sizeof(*e));
		e->weight = 100;
		const char *eq = memchr(tok, '=', len);
		const char *star = memchr(tok, '*', len);
		if (eq && star && star < eq) {
			snprintf(err, errlen, "'%.*s': weight before the addresses", (int)len, tok);
			return -EINVAL;
		}
		size_t zl = eq ? (size_t)(eq - tok) : star ? (size_t)(star - tok) : len;
		if (zl > 0 && tok[zl - 1] == '.')
			zl--;
		if (zl == 0 || zl > MXF_DNSBL_ZONE_MAX) {
			snprintf(err, errlen, "'%.*s': bad zone", (int)len, tok);
			return -EINVAL;
		}
		for (size_t i = 0; i < zl; i++)
			e->zone[i] = (char)tolower((unsigned char)tok[i]);
		e->zone[zl] = '\0';
		if (!mxf_dns_name_valid(e->zone)) {
			snprintf(err, errlen, "'%s': bad zone name", e->zone);
			return -EINVAL;
		}
		if (eq) {
			const char *fe = star ? star : tok + len;
			if (add_filters(e, eq + 1, (size_t)(fe - eq - 1)) < 0) {
				snprintf(err, errlen, "'%.*s': bad reply address", (int)len, tok);
				return -EINVAL;
			}
		}
		if (star && parse_weight(star + 1, (size_t)(tok + len - star - 1), &e->weight) < 0) {
			snprintf(err, errlen, "'%.*s': bad weight", (int)len, tok);
			return -EINVAL;
		}
		/* "zone=a,b": only an entry with '=' and no weight yet continues. */
		last = eq && !star ? e : NULL;
		out->n++;
	}
}

static int finish(char *out, size_t cap, size_t o, const char *zone)
{
	int n = snprintf(out + o, cap - o, "%s", zone);
	if (n < 0 || (size_t)n >= cap - o || o + (size_t)n > MXF_DNS_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

int mxf_dnsbl_ip_name(const char *ip, const char *zone, char *out, size_t cap)
{
	struct in_addr a4;
	struct in6_addr a6;
	const unsigned char *b;
	size_t o = 0;
	static const char hex[] = "0123456789abcdef";

	if (inet_pton(AF_INET, ip, &a4) == 1) {
		b = (const unsigned char *)&a4;
	} else if (inet_pton(AF_INET6, ip, &a6) == 1) {
		if (IN6_IS_ADDR_V4MAPPED(&a6)) {
			b = &a6.s6_addr[12];
		} else {
			if (cap < 64 + 1)
				return -ENAMETOOLONG;
			for (int i = 15; i >= 0; i--) {
				out[o++] = hex[a6.s6_addr[i] & 15];
				out[o++] = '.';
				out[o++] = hex[a6.s6_addr[i] >> 4];
				out[o++] = '.';
			}
			return finish(out, cap, o, zone);
		}
	} else {
		return -EINVAL;
	}
	int n = snprintf(out, cap, "%u.%u.%u.%u.", b[3], b[2], b[1], b[0]);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return finish(out, cap, (size_t)n, zone);
}

int mxf_dnsbl_domain_name(const char *domain, const char *zone, char *out, size_t cap)
{
	size_t len = strlen(domain);
	if (len > 0 && domain[len - 1] == '.')
		len--;
	/* A bare label or an address literal is no domain to look up. */
	if (!mxf_dns_name_valid(domain) || !memchr(domain, '.', len))
		return -EINVAL;
	if (len + 1 >= cap)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)domain[i]);
	out[len] = '.';
	return finish(out, cap, len + 1, zone);
}

bool mxf_dnsbl_match(const struct mxf_dnsbl_entry *e, const struct in_addr *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t h = ntohl(a[i].s_addr);
		if (e->nfilter == 0) {
			if ((h >> 24) == 127 && (h >> 8) != 0x7fffff)
				return true;
			continue;
		}
		for (size_t j = 0; j < e->nfilter; j++)
			if (a[i].s_addr == e->filter[j].s_addr)
				return true;
	}
	return false;
}

static int cidr_parse(const char *tok, size_t len, struct mxf_cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = memchr(tok, '/', len);
	size_t al = slash ? (size_t)(slash - tok) : len;
	if (al == 0 || al >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, tok, al);
	buf[al] = '\0';
	memset(c, 0, sizeof(*c));
	c->family = strchr(buf, ':') ? AF_INET6 : AF_INET;
	unsigned max = c->family == AF_INET ? 32 : 128;
	if (inet_pton(c->family, buf, c->a) != 1)
		return -EINVAL;
	c->bits = max;
	if (slash) {
		size_t bl = len - al - 1;
		unsigned v = 0;
		if (bl == 0 || bl > 3)
			return -EINVAL;
		for (size_t i = 0; i < bl; i++) {
			if (slash[1 + i] < '0' || slash[1 + i] > '9')
				return -EINVAL;
			v = v * 10 + (unsigned)(slash[1 + i] - '0');
		}
		if (v > max)
			return -EINVAL;
		c->bits = v;
	}
	return 0;
}

int mxf_cidr_parse_list(const char *spec, struct mxf_cidr *out, size_t cap, size_t *n, char *err,
			size_t errlen)
{
	const char *p = spec;
	*n = 0;
	for (;;) {
		const char *tok;
		size_t len;
		if (!next_token(&p, &tok, &len))
			return 0;
		if (*n >= cap) {
			snprintf(err, errlen, "more than %zu ranges", cap);
			return -EINVAL;
		}
		if (cidr_parse(tok, len, &out[*n]) < 0) {
			snprintf(err, errlen, "'%.*s': expected an address or ADDRESS/BITS", (int)len,
				 tok);
			return -EINVAL;
		}
		(*n)++;
	}
}

static bool prefix_eq(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	size_t full = bits / 8;
	if (memcmp(a, b, full) != 0)
		return false;
	if (bits % 8 == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
	return (a[full] & mask) == (b[full] & mask);
}

bool mxf_cidr_match(const struct mxf_cidr *list, size_t n, const char *ip)
{
	unsigned char a[16];
	int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(fam, ip, a) != 1)
		return false;
	for (size_t i = 0; i < n; i++)
		if (list[i].family == fam && prefix_eq(a, list[i].a, list[i].bits))
			return true;
	return false;
}

int mxf_ip_prefix(const char *ip, char *out, size_t cap)
{
	unsigned char a[16];
	char buf[INET6_ADDRSTRLEN];
	int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(fam, ip, a) != 1)
		return -EINVAL;
	if (fam == AF_INET)
		a[3] = 0;
	else
		memset(a + 8, 0, 8);
	inet_ntop(fam, a, buf, sizeof(buf));
	int r = snprintf(out, cap, "%s/%d", buf, fam == AF_INET ? 24 : 64);
	return r < 0 || (size_t)r >= cap ? -ENAMETOOLONG : 0;
}
