#include "dmarc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mailhdr.h"

const char *mxf_dmarc_result_name(enum mxf_dmarc_result r)
{
	static const char *const n[] = {"none", "pass", "fail", "temperror", "permerror"};
	return (unsigned)r < 5 ? n[r] : "permerror";
}

const char *mxf_dmarc_policy_name(enum mxf_dmarc_policy p)
{
	static const char *const n[] = {"none", "quarantine", "reject"};
	return (unsigned)p < 3 ? n[p] : "none";
}

static bool veq(const char *v, size_t vl, const char *s)
{
	return vl == strlen(s) && strncasecmp(v, s, vl) == 0;
}

struct pstate {
	struct mxf_dmarc_rec *rec;
	bool first, bad;
};

static bool policy_of(const char *v, size_t vl, enum mxf_dmarc_policy *p)
{
	if (veq(v, vl, "none"))
		*p = MXF_DMARC_P_NONE;
	else if (veq(v, vl, "quarantine"))
		*p = MXF_DMARC_P_QUARANTINE;
	else if (veq(v, vl, "reject"))
		*p = MXF_DMARC_P_REJECT;
	else
		return false;
	return true;
}

static bool on_tag(void *arg, const char *t, size_t tl, const char *v, size_t vl)
{
	struct pstate *ps = arg;
	if (ps->first) {
		/* v=DMARC1 must come first (§4.7). */
		ps->first = false;
		if (!(tl == 1 && t[0] == 'v' && vl == 6 && strncmp(v, "DMARC1", 6) == 0)) {
			ps->bad = true;
			return false;
		}
		return true;
	}
	if (tl == 1 && t[0] == 'p') {
		if (!policy_of(v, vl, &ps->rec->p))
			ps->rec->p = MXF_DMARC_P_NONE;
	} else if (tl == 2 && strncmp(t, "sp", 2) == 0) {
		ps->rec->has_sp = policy_of(v, vl, &ps->rec->sp);
	} else if (tl == 5 && strncmp(t, "adkim", 5) == 0) {
		ps->rec->adkim_strict = veq(v, vl, "s");
	} else if (tl == 4 && strncmp(t, "aspf", 4) == 0) {
		ps->rec->aspf_strict = veq(v, vl, "s");
	} else if (tl == 3 && strncmp(t, "psd", 3) == 0) {
		ps->rec->psd = veq(v, vl, "y") ? 1 : veq(v, vl, "n") ? 0 : -1;
	}
	/* Unknown tags (pct, rua, ruf, fo, t, ...) are ignored (§4.7). */
	return true;
}

int mxf_dmarc_parse(const char *txt, struct mxf_dmarc_rec *rec)
{
	struct pstate ps = {rec, true, false};
	*rec = (struct mxf_dmarc_rec){.p = MXF_DMARC_P_NONE, .psd = -1};
	if (strncmp(txt, "v=DMARC1", 8) != 0)
		return -EINVAL;
	if (mxf_mailhdr_tags(txt, strlen(txt), on_tag, &ps) < 0 || ps.bad || ps.first)
		return -EINVAL;
	return 0;
}

/* _dmarc.name: one valid record, or none (several valid ones count as none,
 * §4.10.1). */
static int lookup(struct mxf_dmarc_ctx *c, const char *name, struct mxf_dmarc_rec *rec)
{
	for (size_t i = 0; i < c->ncache; i++)
		if (strcmp(c->cache[i].name, name) == 0) {
			*rec = c->cache[i].rec;
			return c->cache[i].rc;
		}
	char q[MXF_DNS_NAME_MAX + 16];
	char **txt = NULL;
	size_t n = 0, valid = 0;
	snprintf(q, sizeof(q), "_dmarc.%s", name);
	c->queries++;
	int rc = strlen(q) > MXF_DNS_NAME_MAX ? MXF_DNS_NXDOMAIN : c->txt(c->arg, q, &txt, &n);
	if (rc < 0 && rc != -EINVAL)
		rc = MXF_DNS_TEMPFAIL;
	if (rc == MXF_DNS_OK) {
		for (size_t i = 0; i < n; i++) {
			struct mxf_dmarc_rec r;
			if (mxf_dmarc_parse(txt[i], &r) == 0) {
				*rec = r;
				valid++;
			}
		}
		mxf_dns_txt_free(txt, n);
		rc = valid == 1 ? MXF_DNS_OK : MXF_DNS_NODATA;
	} else if (rc != MXF_DNS_TEMPFAIL) {
		rc = MXF_DNS_NODATA;
	}
	if (c->ncache < sizeof(c->cache) / sizeof(c->cache[0])) {
		snprintf(c->cache[c->ncache].name, sizeof(c->cache[0].name), "%s", name);
		c->cache[c->ncache].rc = rc;
		if (rc == MXF_DNS_OK)
			c->cache[c->ncache].rec = *rec;
		c->ncache++;
	}
	return rc;
}

static size_t nlabels(const char *d)
{
	size_t n = *d ? 1 : 0;
	for (; *d; d++)
		if (*d == '.')
			n++;
	return n;
}

/* The rightmost k labels of d. */
static const char *suffix(const char *d, size_t k)
{
	size_t n = nlabels(d);
	while (n > k) {
		const char *dot = strchr(d, '.');
		if (!dot)
			break;
		d = dot + 1;
		n--;
	}
	return d;
}

/* The tree walk's targets (§4.10.1): the domain, then, from at most seven
 * labels, one label fewer each time down to one. */
static size_t walk(const char *d, const char **t)
{
	size_t n = nlabels(d), k = 0;
	t[k++] = d;
	size_t next = n > 8 ? 7 : n - 1;
	for (; next >= 1 && n > 1; next--)
		t[k++] = suffix(d, next);
	return k;
}

int mxf_dmarc_find(struct mxf_dmarc_ctx *c, const char *domain, struct mxf_dmarc_rec *rec,
		   bool *at_domain)
{
	const char *t[16];
	size_t nt = walk(domain, t);
	for (size_t i = 0; i < nt; i++) {
		int rc = lookup(c, t[i], rec);
		if (rc == MXF_DNS_OK) {
			*at_domain = i == 0;
			return MXF_DNS_OK;
		}
		if (rc == MXF_DNS_TEMPFAIL)
			return rc;
	}
	return MXF_DNS_NODATA;
}

int mxf_dmarc_org_domain(struct mxf_dmarc_ctx *c, const char *domain, char *org, size_t cap)
{
	const char *t[16], *best = NULL;
	size_t nt = walk(domain, t);
	for (size_t i = 0; i < nt; i++) {
		struct mxf_dmarc_rec rec;
		int rc = lookup(c, t[i], &rec);
		if (rc == MXF_DNS_TEMPFAIL)
			return rc;
		if (rc != MXF_DNS_OK)
			continue;
		if (rec.psd == 0) {
			snprintf(org, cap, "%s", t[i]);
			return 0;
		}
		if (rec.psd == 1) {
			/* A public suffix: the organisation is one label below. */
			size_t k = nlabels(t[i]) + 1;
			snprintf(org, cap, "%s", k > nlabels(domain) ? domain : suffix(domain, k));
			return 0;
		}
		best = t[i];
	}
	snprintf(org, cap, "%s", best ? best : domain);
	return 0;
}

int mxf_dmarc_aligned(struct mxf_dmarc_ctx *c, const char *a, const char *from, bool strict)
{
	if (strcasecmp(a, from) == 0)
		return 1;
	if (strict)
		return 0;
	/* Different Organizational Domains cannot share fewer than two
	 * labels: no query needed. */
	size_t na = nlabels(a), nf = nlabels(from), k = 0;
	while (k < na && k < nf && strcasecmp(suffix(a, k + 1), suffix(from, k + 1)) == 0)
		k++;
	if (k < 2)
		return 0;
	char oa[MXF_DNS_NAME_MAX + 1], of[MXF_DNS_NAME_MAX + 1];
	if (mxf_dmarc_org_domain(c, a, oa, sizeof(oa)) != 0 ||
	    mxf_dmarc_org_domain(c, from, of, sizeof(of)) != 0)
		return -1;
	return strcasecmp(oa, of) == 0;
}

void mxf_dmarc_check(struct mxf_dmarc_ctx *c, const struct mxf_dmarc_in *in,
		     struct mxf_dmarc_out *out)
{
	*out = (struct mxf_dmarc_out){.result = MXF_DMARC_NONE, .policy = MXF_DMARC_P_NONE};
	if (!in->from_domain || !*in->from_domain) {
		out->result = in->no_from ? MXF_DMARC_NONE : MXF_DMARC_PERMERROR;
		return;
	}
	struct mxf_dmarc_rec rec;
	bool own = false;
	int rc = mxf_dmarc_find(c, in->from_domain, &rec, &own);
	if (rc == MXF_DNS_TEMPFAIL) {
		out->result = MXF_DMARC_TEMPERROR;
		return;
	}
	if (rc != MXF_DNS_OK)
		return; /* none */
	out->policy = !own && rec.has_sp ? rec.sp : rec.p;
	bool temp = false;
	if (in->spf_pass && in->spf_domain && *in->spf_domain) {
		int a = mxf_dmarc_aligned(c, in->spf_domain, in->from_domain, rec.aspf_strict);
		out->spf_aligned = a == 1;
		temp |= a < 0;
	}
	for (size_t i = 0; i < in->ndkim && !out->dkim_aligned; i++) {
		int a = mxf_dmarc_aligned(c, in->dkim_pass[i], in->from_domain, rec.adkim_strict);
		out->dkim_aligned = a == 1;
		temp |= a < 0;
	}
	if (out->spf_aligned || out->dkim_aligned)
		out->result = MXF_DMARC_PASS;
	else
		out->result = temp ? MXF_DMARC_TEMPERROR : MXF_DMARC_FAIL;
}
