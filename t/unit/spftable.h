/* A DNS table for SPF tests (test_spf.c, spfeval.c): lines of
 * "name TYPE value" answered through struct mxf_spf_dns, the way the
 * resolver would: CNAMEs followed, TIMEOUT as a temporary failure, an
 * invalid name as -EINVAL, NODATA for a name with other records only. */
#ifndef MXF_T_SPFTABLE_H
#define MXF_T_SPFTABLE_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns.h"
#include "spf.h"

struct spft_rr {
	char *name, *type, *value;
};

struct spft {
	struct spft_rr *rr;
	size_t n, cap;
	unsigned queries;
};

static inline void spft_add(struct spft *t, const char *name, const char *type, const char *value)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->rr = realloc(t->rr, t->cap * sizeof(*t->rr));
	}
	size_t l = strlen(name);
	t->rr[t->n].name = strdup(name);
	if (l && t->rr[t->n].name[l - 1] == '.')
		t->rr[t->n].name[l - 1] = '\0';
	t->rr[t->n].type = strdup(type);
	/* Values may carry "\\n" and "\\\\" escapes (a record with a line
	 * break in it). */
	char *v = strdup(value), *o = v;
	for (const char *p = value; *p; p++) {
		if (p[0] == '\\' && p[1] == 'n') {
			*o++ = '\n';
			p++;
		} else if (p[0] == '\\' && p[1] == '\\') {
			*o++ = '\\';
			p++;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	t->rr[t->n].value = v;
	t->n++;
}

static inline void spft_free(struct spft *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->rr[i].name);
		free(t->rr[i].type);
		free(t->rr[i].value);
	}
	free(t->rr);
	memset(t, 0, sizeof(*t));
}

/* Index range of name's records of type (NULL: any) after CNAMEs; returns an
 * mxf_dns_rc, *name_out the final name. */
static inline int spft_find(struct spft *t, const char *name, const char *type,
			    const char **name_out)
{
	static char abs[MXF_DNS_NAME_MAX + 2];
	t->queries++;
	if (!mxf_dns_name_valid(name))
		return -EINVAL;
	/* An absolute name is the same name. */
	snprintf(abs, sizeof(abs), "%s", name);
	if (abs[0] && abs[strlen(abs) - 1] == '.')
		abs[strlen(abs) - 1] = '\0';
	name = abs;
	for (int hops = 0; hops < 8; hops++) {
		bool any = false, timeout = false, have = false;
		const char *cname = NULL;
		for (size_t i = 0; i < t->n; i++) {
			if (strcasecmp(t->rr[i].name, name) != 0)
				continue;
			any = true;
			if (strcmp(t->rr[i].type, "TIMEOUT") == 0)
				timeout = true;
			if (strcmp(t->rr[i].type, type) == 0)
				have = true;
			if (strcmp(t->rr[i].type, "CNAME") == 0)
				cname = t->rr[i].value;
		}
		/* TIMEOUT: the questions the name has no records for time out
		 * (the RFC 7208 suite's meaning). */
		if (timeout && !have)
			return MXF_DNS_TEMPFAIL;
		if (cname && strcmp(type, "CNAME") != 0) {
			name = cname;
			continue;
		}
		*name_out = name;
		for (size_t i = 0; i < t->n; i++)
			if (strcasecmp(t->rr[i].name, name) == 0 && strcmp(t->rr[i].type, type) == 0)
				return MXF_DNS_OK;
		return any ? MXF_DNS_NODATA : MXF_DNS_NXDOMAIN;
	}
	return MXF_DNS_TEMPFAIL;
}

static inline int spft_txt(void *arg, const char *name, char ***txt, size_t *n)
{
	struct spft *t = arg;
	const char *nm;
	int rc = spft_find(t, name, "TXT", &nm);
	if (rc != MXF_DNS_OK)
		return rc;
	char **v = calloc(t->n, sizeof(*v));
	size_t k = 0;
	for (size_t i = 0; i < t->n; i++)
		if (strcasecmp(t->rr[i].name, nm) == 0 && strcmp(t->rr[i].type, "TXT") == 0)
			v[k++] = strdup(t->rr[i].value);
	*txt = v;
	*n = k;
	return MXF_DNS_OK;
}

static inline int spft_addrs(void *arg, const char *name, int family, struct mxf_dns_addr *out,
			     size_t cap, size_t *n)
{
	struct spft *t = arg;
	const char *nm, *type = family == AF_INET ? "A" : "AAAA";
	*n = 0;
	int rc = spft_find(t, name, type, &nm);
	if (rc != MXF_DNS_OK)
		return rc;
	for (size_t i = 0; i < t->n && *n < cap; i++)
		if (strcasecmp(t->rr[i].name, nm) == 0 && strcmp(t->rr[i].type, type) == 0 &&
		    inet_pton(family, t->rr[i].value, &out[*n].a) == 1)
			out[(*n)++].family = family;
	return *n ? MXF_DNS_OK : MXF_DNS_NODATA;
}

static inline int spft_mx(void *arg, const char *name, struct mxf_mx **mx, size_t *n)
{
	struct spft *t = arg;
	const char *nm;
	int rc = spft_find(t, name, "MX", &nm);
	if (rc != MXF_DNS_OK)
		return rc;
	*mx = calloc(t->n, sizeof(**mx));
	*n = 0;
	for (size_t i = 0; i < t->n; i++) {
		if (strcasecmp(t->rr[i].name, nm) != 0 || strcmp(t->rr[i].type, "MX") != 0)
			continue;
		unsigned pref;
		char host[300];
		if (sscanf(t->rr[i].value, "%u %299s", &pref, host) != 2)
			continue;
		size_t hl = strlen(host);
		if (hl && host[hl - 1] == '.')
			host[hl - 1] = '\0';
		(*mx)[*n].pref = (uint16_t)pref;
		snprintf((*mx)[*n].host, sizeof((*mx)[*n].host), "%s", host);
		(*n)++;
	}
	return MXF_DNS_OK;
}

static inline int spft_ptr(void *arg, const char *revname, char (*names)[MXF_DNS_NAME_MAX + 1],
			   size_t cap, size_t *n)
{
	struct spft *t = arg;
	const char *nm;
	*n = 0;
	int rc = spft_find(t, revname, "PTR", &nm);
	if (rc != MXF_DNS_OK)
		return rc;
	for (size_t i = 0; i < t->n && *n < cap; i++)
		if (strcasecmp(t->rr[i].name, nm) == 0 && strcmp(t->rr[i].type, "PTR") == 0)
			snprintf(names[(*n)++], MXF_DNS_NAME_MAX + 1, "%s", t->rr[i].value);
	return *n ? MXF_DNS_OK : MXF_DNS_NODATA;
}

static inline struct mxf_spf_dns spft_dns(struct spft *t)
{
	return (struct mxf_spf_dns){spft_txt, spft_addrs, spft_mx, spft_ptr, t};
}

#endif
