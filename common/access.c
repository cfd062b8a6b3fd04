/* access: the operator's allow and block lists, compiled (see access.h).
 *
 * Lookups must stay cheap with thousands of entries, since every connection
 * asks: ranges are kept per list sorted by prefix length (longest first),
 * then by network; a lookup masks the client address once per distinct
 * prefix length present and binary-searches that group, so the cost is
 * (distinct lengths) x log(n), never n. IPv4 is kept as IPv4-mapped IPv6
 * (prefix + 96) so one table serves both families. Domains and addresses are
 * sorted arrays searched with bsearch (a domain once per label suffix). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "address.h"

struct range {
	unsigned char a[16];
	unsigned bits; /* 0..128 in the mapped space */
	int fam;       /* ::/64 must not cover the IPv4-mapped space: families apart */
	const char *value, *reason;
};

struct name {
	char *key; /* lower case */
	const char *value, *reason;
};

struct group {
	int fam;
	unsigned bits;
	size_t start, end;
};

struct list {
	struct range *r;
	size_t nr, capr;
	struct group *g;
	size_t ng;
	struct name *d, *m; /* domains, addresses */
	size_t nd, capd, nm, capm;
};

struct mxf_access {
	struct list l[2]; /* [0] block, [1] allow */
	char **strs;      /* every value and reason, owned */
	size_t nstrs, capstrs;
	size_t count;
};

const char *mxf_access_kind_name(enum mxf_access_kind k)
{
	switch (k) {
	case MXF_ACCESS_IP: return "ip";
	case MXF_ACCESS_DOMAIN: return "domain";
	default: return "address";
	}
}

static void mask(unsigned char a[16], unsigned bits)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
		a[i] &= (unsigned char)(keep ? 0xff << (8 - keep) : 0);
	}
}

/* "addr" or "addr/bits" to the mapped form; fam: AF_INET or AF_INET6. */
static int parse_range(const char *in, unsigned char a[16], unsigned *bits, int *fam)
{
	char buf[INET6_ADDRSTRLEN + 8];
	if (strlen(in) >= sizeof(buf))
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", in);
	char *slash = strchr(buf, '/');
	long b = -1;
	if (slash) {
		char *end;
		*slash = '\0';
		if (!slash[1] || !isdigit((unsigned char)slash[1]))
			return -EINVAL;
		b = strtol(slash + 1, &end, 10);
		if (*end)
			return -EINVAL;
	}
	unsigned char v4[4];
	memset(a, 0, 16);
	if (inet_pton(AF_INET, buf, v4) == 1) {
		if (b > 32)
			return -EINVAL;
		a[10] = a[11] = 0xff;
		memcpy(a + 12, v4, 4);
		*bits = 96 + (unsigned)(b < 0 ? 32 : b);
		*fam = AF_INET;
	} else if (strchr(buf, ':') && inet_pton(AF_INET6, buf, a) == 1) {
		if (b > 128)
			return -EINVAL;
		*bits = (unsigned)(b < 0 ? 128 : b);
		*fam = AF_INET6;
		/* A v4-mapped range would compare as IPv4: spell it as IPv4. */
		static const unsigned char pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (memcmp(a, pre, 12) == 0)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	mask(a, *bits);
	return 0;
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

int mxf_access_parse(const char *value, enum mxf_access_kind *kind, char *out, size_t cap)
{
	unsigned char a[16];
	unsigned bits;
	int fam;
	if (!value || !*value || strlen(value) >= MXF_ACCESS_VALUE_MAX)
		return -EINVAL;
	if (parse_range(value, a, &bits, &fam) == 0) {
		char s[INET6_ADDRSTRLEN];
		inet_ntop(fam, fam == AF_INET ? a + 12 : a, s, sizeof(s));
		unsigned shown = fam == AF_INET ? bits - 96 : bits;
		int n = bits == 128 ? snprintf(out, cap, "%s", s)
				    : snprintf(out, cap, "%s/%u", s, shown);
		if (n < 0 || (size_t)n >= cap)
			return -ENAMETOOLONG;
		*kind = MXF_ACCESS_IP;
		return 0;
	}
	if (strchr(value, '@')) {
		char *at;
		if (mxf_addr_normalize(value, MXF_ADDR_UTF8, out, cap) < 0)
			return -EINVAL;
		if ((at = strrchr(out, '@')))
			lower(at);
		*kind = MXF_ACCESS_ADDRESS;
		return 0;
	}
	/* A bare label is more likely a typo than a TLD; an all-digit last
	 * label is a mistyped address ("192.0.2.300"), no TLD is numeric. */
	const char *last;
	if (mxf_domain_to_ascii(value, out, cap) < 0 || !(last = strrchr(out, '.')) ||
	    strspn(last + 1, "0123456789") == strlen(last + 1))
		return -EINVAL;
	*kind = MXF_ACCESS_DOMAIN;
	return 0;
}

int mxf_access_reason_clean(const char *in, char *out, size_t cap)
{
	size_t n = in ? strlen(in) : 0;
	if (n > MXF_ACCESS_REASON_MAX || n >= cap)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	out[n] = '\0';
	return 0;
}

struct mxf_access *mxf_access_new(void)
{
	return calloc(1, sizeof(struct mxf_access));
}

void mxf_access_free(struct mxf_access *a)
{
	if (!a)
		return;
	for (int k = 0; k < 2; k++) {
		struct list *l = &a->l[k];
		for (size_t i = 0; i < l->nd; i++)
			free(l->d[i].key);
		for (size_t i = 0; i < l->nm; i++)
			free(l->m[i].key);
		free(l->r);
		free(l->g);
		free(l->d);
		free(l->m);
	}
	for (size_t i = 0; i < a->nstrs; i++)
		free(a->strs[i]);
	free(a->strs);
	free(a);
}

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 16;
	void *np = realloc(*p, nc * size);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = nc;
	return 0;
}

static const char *keep(struct mxf_access *a, const char *s)
{
	char *c;
	if (grow((void **)&a->strs, &a->capstrs, a->nstrs, sizeof(*a->strs)) < 0 ||
	    !(c = strdup(s ? s : "")))
		return NULL;
	a->strs[a->nstrs++] = c;
	return c;
}

int mxf_access_add(struct mxf_access *a, bool allow, const char *value, const char *reason)
{
	char norm[MXF_ACCESS_VALUE_MAX], why[MXF_ACCESS_REASON_MAX + 1];
	enum mxf_access_kind kind;
	if (mxf_access_parse(value, &kind, norm, sizeof(norm)) < 0 ||
	    mxf_access_reason_clean(reason, why, sizeof(why)) < 0)
		return -EINVAL;
	struct list *l = &a->l[allow ? 1 : 0];
	const char *v = keep(a, norm), *rs = keep(a, why);
	if (!v || !rs)
		return -ENOMEM;
	if (kind == MXF_ACCESS_IP) {
		if (grow((void **)&l->r, &l->capr, l->nr, sizeof(*l->r)) < 0)
			return -ENOMEM;
		struct range *r = &l->r[l->nr];
		if (parse_range(norm, r->a, &r->bits, &r->fam) < 0)
			return -EINVAL;
		r->value = v;
		r->reason = rs;
		l->nr++;
	} else {
		bool dom = kind == MXF_ACCESS_DOMAIN;
		struct name **arr = dom ? &l->d : &l->m;
		size_t *n = dom ? &l->nd : &l->nm, *cap = dom ? &l->capd : &l->capm;
		char *key = strdup(norm);
		if (!key || grow((void **)arr, cap, *n, sizeof(**arr)) < 0) {
			free(key);
			return -ENOMEM;
		}
		lower(key);
		(*arr)[*n] = (struct name){.key = key, .value = v, .reason = rs};
		(*n)++;
	}
	a->count++;
	return 0;
}

static int cmp_range(const void *x, const void *y)
{
	const struct range *a = x, *b = y;
	if (a->fam != b->fam)
		return a->fam < b->fam ? -1 : 1;
	if (a->bits != b->bits)
		return a->bits > b->bits ? -1 : 1; /* longest prefix first */
	return memcmp(a->a, b->a, 16);
}

static int cmp_name(const void *x, const void *y)
{
	return strcmp(((const struct name *)x)->key, ((const struct name *)y)->key);
}

int mxf_access_finish(struct mxf_access *a)
{
	for (int k = 0; k < 2; k++) {
		struct list *l = &a->l[k];
		if (l->nr)
			qsort(l->r, l->nr, sizeof(*l->r), cmp_range);
		if (l->nd)
			qsort(l->d, l->nd, sizeof(*l->d), cmp_name);
		if (l->nm)
			qsort(l->m, l->nm, sizeof(*l->m), cmp_name);
		free(l->g);
		l->g = NULL;
		l->ng = 0;
		size_t capg = 0;
		for (size_t i = 0; i < l->nr; i++) {
			if (l->ng && l->g[l->ng - 1].bits == l->r[i].bits &&
			    l->g[l->ng - 1].fam == l->r[i].fam) {
				l->g[l->ng - 1].end = i + 1;
				continue;
			}
			if (grow((void **)&l->g, &capg, l->ng, sizeof(*l->g)) < 0)
				return -ENOMEM;
			l->g[l->ng++] = (struct group){l->r[i].fam, l->r[i].bits, i, i + 1};
		}
	}
	return 0;
}

size_t mxf_access_count(const struct mxf_access *a)
{
	return a ? a->count : 0;
}

static const struct range *find_ip(const struct list *l, const unsigned char ip[16], int fam)
{
	for (size_t g = 0; g < l->ng; g++) {
		if (l->g[g].fam != fam)
			continue;
		struct range key;
		memcpy(key.a, ip, 16);
		mask(key.a, l->g[g].bits);
		size_t lo = l->g[g].start, hi = l->g[g].end;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			int c = memcmp(key.a, l->r[mid].a, 16);
			if (c == 0)
				return &l->r[mid];
			if (c < 0)
				hi = mid;
			else
				lo = mid + 1;
		}
	}
	return NULL;
}

static const struct name *find_name(const struct name *arr, size_t n, const char *key)
{
	struct name k = {.key = (char *)key};
	return n ? bsearch(&k, arr, n, sizeof(*arr), cmp_name) : NULL;
}

/* The domain or any parent of it. */
static const struct name *find_domain(const struct list *l, const char *domain)
{
	char d[MXF_DOMAIN_MAX + 1];
	if (!domain || !*domain || !l->nd || strlen(domain) >= sizeof(d))
		return NULL;
	snprintf(d, sizeof(d), "%s", domain);
	lower(d);
	size_t len = strlen(d);
	if (len && d[len - 1] == '.')
		d[len - 1] = '\0';
	for (const char *p = d; p && *p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
		const struct name *f = find_name(l->d, l->nd, p);
		if (f)
			return f;
	}
	return NULL;
}

static const struct name *find_sender(const struct list *l, const char *sender)
{
	char s[MXF_ADDR_SIZE];
	const char *at;
	if (!sender || !(at = strrchr(sender, '@')) || strlen(sender) >= sizeof(s))
		return NULL;
	snprintf(s, sizeof(s), "%s", sender);
	lower(s);
	const struct name *f = find_name(l->m, l->nm, s);
	return f ? f : find_domain(l, at + 1);
}

static void set(struct mxf_access_result *out, enum mxf_access_verdict v, const char *value,
		const char *reason, bool client)
{
	out->verdict = v;
	out->entry = value;
	out->reason = reason;
	out->client = client;
}

void mxf_access_check(const struct mxf_access *a, const char *ip, const char *helo,
		      const char *sender, struct mxf_access_result *out)
{
	set(out, MXF_ACCESS_NONE, "", "", false);
	if (!a)
		return;
	unsigned char addr[16];
	unsigned bits;
	int fam;
	bool have_ip = ip && parse_range(ip, addr, &bits, &fam) == 0 && bits == 128;
	const struct list *block = &a->l[0], *allow = &a->l[1];
	const struct range *r;
	const struct name *n;
	/* The client first: only its address can vouch for it. */
	if (have_ip && (r = find_ip(allow, addr, fam))) {
		set(out, MXF_ACCESS_ALLOW, r->value, r->reason, true);
		return;
	}
	if (have_ip && (r = find_ip(block, addr, fam))) {
		set(out, MXF_ACCESS_BLOCK, r->value, r->reason, true);
		return;
	}
	/* A HELO name can only get a client refused: anyone can claim any. */
	if (helo && *helo != '[' && (n = find_domain(block, helo))) {
		set(out, MXF_ACCESS_BLOCK, n->value, n->reason, true);
		return;
	}
	if ((n = find_sender(allow, sender))) {
		set(out, MXF_ACCESS_ALLOW_SENDER, n->value, n->reason, false);
		return;
	}
	if ((n = find_sender(block, sender)))
		set(out, MXF_ACCESS_BLOCK, n->value, n->reason, false);
}

bool mxf_access_mail_final(const struct mxf_access *a, const struct mxf_access_result *at_connect)
{
	if (!a || at_connect->verdict == MXF_ACCESS_ALLOW)
		return true;
	for (int k = 0; k < 2; k++)
		if (a->l[k].nd || a->l[k].nm)
			return false;
	return true;
}
