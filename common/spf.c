#include "spf.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <spf2/spf_dns_rr.h>

/* What replaces a refused record: an unknown mechanism, which RFC 7208
 * §5 (and libspf2) answer with permerror. */
#define REFUSED_RECORD "v=spf1 mxferry-refused-record/0"

static void spf_quiet(const char *file, int line, const char *msg)
{
	/* libspf2 warns on stderr about the records it evaluates: hostile
	 * input, no business in our log at that volume. */
	(void)file;
	(void)line;
	(void)msg;
}

void mxf_spf_global_init(void)
{
	SPF_warning_handler = spf_quiet;
	SPF_info_handler = spf_quiet;
	SPF_debug_handler = spf_quiet;
}

const char *mxf_spf_result_name(enum mxf_spf_result r)
{
	static const char *const names[] = {"none", "neutral", "pass", "fail",
					    "softfail", "temperror", "permerror"};
	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "permerror";
}

/* ---- the record filter ---- */

static bool is_spf(const char *s)
{
	return strncasecmp(s, "v=spf1", 6) == 0 && (s[6] == '\0' || s[6] == ' ');
}

/* Checks the macros of one term (RFC 7208 §7.1): "%{" letter [digits] ["r"]
 * [delimiters] "}", "%%", "%_", "%-". */
static bool macros_ok(const char *t, size_t len, unsigned *count)
{
	for (size_t i = 0; i < len; i++) {
		if (t[i] != '%')
			continue;
		if (i + 1 >= len)
			return false;
		char c = t[++i];
		if (c == '%' || c == '_' || c == '-')
			continue;
		if (c != '{' || ++*count > MXF_SPF_MACROS_MAX)
			return false;
		i++;
		if (i >= len || !strchr("slodiphvSLODIPHV", t[i]) || t[i] == '\0')
			return false; /* c, r, t belong to exp= only */
		i++;
		size_t digits = 0;
		unsigned val = 0;
		while (i < len && t[i] >= '0' && t[i] <= '9') {
			val = val * 10 + (unsigned)(t[i] - '0');
			if (++digits > 3)
				return false;
			i++;
		}
		if (digits && (val == 0 || val > 128))
			return false;
		if (i < len && (t[i] == 'r' || t[i] == 'R'))
			i++;
		size_t delims = 0;
		while (i < len && t[i] != '}' && strchr(".-+,/_=", t[i]) && t[i] != '\0') {
			if (++delims > 7)
				return false;
			i++;
		}
		if (i >= len || t[i] != '}')
			return false;
	}
	return true;
}

int mxf_spf_record_filter(const char *in, char *out, size_t cap)
{
	size_t inlen = strlen(in);
	if (!is_spf(in)) {
		/* Not SPF: libspf2 ignores it; keep only a bounded prefix
		 * so nothing large is copied around. */
		snprintf(out, cap, "%.*s", (int)(inlen < 64 ? inlen : 64), in);
		return 0;
	}
	if (inlen > MXF_SPF_RECORD_MAX || cap < MXF_SPF_RECORD_MAX + 64)
		goto refuse;
	size_t o = 0;
	unsigned macros = 0;
	for (size_t i = 0; i < inlen;) {
		while (i < inlen && in[i] == ' ')
			i++;
		size_t s = i;
		while (i < inlen && in[i] != ' ')
			i++;
		if (i == s)
			break;
		const char *t = in + s;
		size_t tl = i - s;
		/* Any control or non-ASCII octet: not an SPF record (§4.6). */
		for (size_t k = 0; k < tl; k++)
			if ((unsigned char)t[k] < 0x21 || (unsigned char)t[k] > 0x7e)
				goto refuse;
		/* exp= is never fetched nor expanded: we do not show it. */
		if (tl >= 4 && strncasecmp(t, "exp=", 4) == 0)
			continue;
		if (!macros_ok(t, tl, &macros))
			goto refuse;
		if (o)
			out[o++] = ' ';
		memcpy(out + o, t, tl);
		o += tl;
	}
	out[o] = '\0';
	return 0;
refuse:
	snprintf(out, cap, "%s", REFUSED_RECORD);
	return 1;
}

/* ---- libspf2's DNS layer over our lookups ---- */

static SPF_dns_rr_t *rr_fail(SPF_dns_server_t *srv, const char *domain, ns_type t, int rc)
{
	SPF_dns_stat_t h = rc == MXF_DNS_NXDOMAIN || rc == -EINVAL ? HOST_NOT_FOUND
			   : rc == MXF_DNS_NODATA			  ? NO_DATA
									  : TRY_AGAIN;
	return SPF_dns_rr_new_init(srv, domain, t, 0, h);
}

static bool rr_put(SPF_dns_rr_t *rr, const void *p, size_t len)
{
	if (SPF_dns_rr_buf_realloc(rr, rr->num_rr, len) != SPF_E_SUCCESS)
		return false;
	memcpy(rr->rr[rr->num_rr], p, len);
	rr->num_rr++;
	return true;
}

static SPF_dns_rr_t *lookup(SPF_dns_server_t *srv, const char *domain, ns_type t, int cache)
{
	const struct mxf_spf_dns *d = srv->hook;
	(void)cache;
	char name[MXF_DNS_NAME_MAX + 2];
	int rc;
	if (!domain || strlen(domain) > MXF_DNS_NAME_MAX)
		return rr_fail(srv, domain ? "" : "", t, -EINVAL);
	snprintf(name, sizeof(name), "%s", domain);
	switch ((int)t) {
	case ns_t_txt: {
		char **txt = NULL;
		size_t n = 0;
		rc = d->txt(d->arg, name, &txt, &n);
		if (rc != MXF_DNS_OK)
			return rr_fail(srv, domain, t, rc);
		SPF_dns_rr_t *rr = SPF_dns_rr_new_init(srv, domain, t, 0, NETDB_SUCCESS);
		char f[MXF_SPF_RECORD_MAX + 64];
		for (size_t i = 0; rr && i < n; i++) {
			mxf_spf_record_filter(txt[i], f, sizeof(f));
			if (!rr_put(rr, f, strlen(f) + 1)) {
				SPF_dns_rr_free(rr);
				rr = NULL;
			}
		}
		mxf_dns_txt_free(txt, n);
		return rr;
	}
	case ns_t_a:
	case ns_t_aaaa: {
		struct mxf_dns_addr a[MXF_DNS_ADDR_MAX];
		size_t n = 0;
		rc = d->addrs(d->arg, name, t == ns_t_a ? AF_INET : AF_INET6, a, MXF_DNS_ADDR_MAX, &n);
		if (rc != MXF_DNS_OK)
			return rr_fail(srv, domain, t, rc);
		SPF_dns_rr_t *rr = SPF_dns_rr_new_init(srv, domain, t, 0, NETDB_SUCCESS);
		for (size_t i = 0; rr && i < n; i++) {
			bool ok = t == ns_t_a ? rr_put(rr, &a[i].a.v4, sizeof(a[i].a.v4))
					      : rr_put(rr, &a[i].a.v6, sizeof(a[i].a.v6));
			if (!ok) {
				SPF_dns_rr_free(rr);
				rr = NULL;
			}
		}
		return rr;
	}
	case ns_t_mx: {
		struct mxf_mx *mx = NULL;
		size_t n = 0;
		rc = d->mx(d->arg, name, &mx, &n);
		if (rc != MXF_DNS_OK)
			return rr_fail(srv, domain, t, rc);
		SPF_dns_rr_t *rr = SPF_dns_rr_new_init(srv, domain, t, 0, NETDB_SUCCESS);
		for (size_t i = 0; rr && i < n; i++) {
			if (!mx[i].host[0])
				continue; /* null MX */
			if (!rr_put(rr, mx[i].host, strlen(mx[i].host) + 1)) {
				SPF_dns_rr_free(rr);
				rr = NULL;
			}
		}
		free(mx);
		return rr;
	}
	case ns_t_ptr: {
		char names[4][MXF_DNS_NAME_MAX + 1];
		size_t n = 0;
		rc = d->ptr(d->arg, name, names, 4, &n);
		if (rc != MXF_DNS_OK)
			return rr_fail(srv, domain, t, rc);
		SPF_dns_rr_t *rr = SPF_dns_rr_new_init(srv, domain, t, 0, NETDB_SUCCESS);
		for (size_t i = 0; rr && i < n; i++)
			if (!rr_put(rr, names[i], strlen(names[i]) + 1)) {
				SPF_dns_rr_free(rr);
				rr = NULL;
			}
		return rr;
	}
	default:
		/* The SPF RR type (99) is obsolete (RFC 7208 §3.1). */
		return SPF_dns_rr_new_init(srv, domain, t, 0, NO_DATA);
	}
}

/* ---- lookups through an mxf_dns ---- */

static int r_txt(void *arg, const char *name, char ***txt, size_t *n)
{
	return mxf_dns_txt(arg, name, txt, n, NULL, 0);
}

static int r_addrs(void *arg, const char *name, int family, struct mxf_dns_addr *out, size_t cap,
		   size_t *n)
{
	return mxf_dns_addrs(arg, name, family, out, cap, n, NULL, 0);
}

static int r_mx(void *arg, const char *name, struct mxf_mx **mx, size_t *n)
{
	return mxf_dns_mx(arg, name, mx, n, NULL, 0);
}

static int r_ptr(void *arg, const char *revname, char (*names)[MXF_DNS_NAME_MAX + 1], size_t cap,
		 size_t *n)
{
	return mxf_dns_ptr(arg, revname, names, cap, n, NULL, 0);
}

void mxf_spf_dns_resolver(struct mxf_dns *d, struct mxf_spf_dns *out)
{
	*out = (struct mxf_spf_dns){r_txt, r_addrs, r_mx, r_ptr, d};
}

int mxf_spf_check(const struct mxf_spf_dns *dns, const char *ip, const char *helo,
		  const char *sender, const char *receiver, enum mxf_spf_result *res, char *why,
		  size_t whylen)
{
	SPF_dns_server_t layer = {
		.destroy = NULL, /* ours, on the stack */
		.lookup = lookup,
		.name = "mxferry",
		.hook = (void *)dns,
	};
	SPF_server_t *srv = SPF_server_new_dns(&layer, 0);
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	int r = 0;
	char from[600];

	*res = MXF_SPF_PERMERROR;
	if (why && whylen)
		why[0] = '\0';
	if (!srv)
		return -ENOMEM;
	SPF_server_set_rec_dom(srv, receiver && *receiver ? receiver : "localhost");
	/* The default explanation is expanded with the sender's macros on
	 * fail: a fixed text instead (we never show one). */
	SPF_response_t *eresp = NULL;
	SPF_server_set_explanation(srv, "SPF check failed", &eresp);
	SPF_response_free(eresp);
	if (!(req = SPF_request_new(srv))) {
		r = -ENOMEM;
		goto out;
	}
	if (SPF_request_set_ipv4_str(req, ip) != SPF_E_SUCCESS &&
	    SPF_request_set_ipv6_str(req, ip) != SPF_E_SUCCESS) {
		snprintf(why, whylen, "bad client address");
		goto out;
	}
	/* The null sender: the HELO identity as postmaster@helo (§2.4). */
	if (sender && *sender)
		snprintf(from, sizeof(from), "%s", sender);
	else
		snprintf(from, sizeof(from), "postmaster@%s", helo && *helo ? helo : "unknown");
	if (helo && *helo)
		SPF_request_set_helo_dom(req, helo);
	if (SPF_request_set_env_from(req, from) != 0) {
		/* No usable domain in the identity: nothing to check. */
		*res = MXF_SPF_NONE;
		snprintf(why, whylen, "no domain in the identity");
		goto out;
	}
	SPF_request_query_mailfrom(req, &resp);
	if (!resp) {
		*res = MXF_SPF_TEMPERROR;
		goto out;
	}
	switch (SPF_response_result(resp)) {
	case SPF_RESULT_NEUTRAL: *res = MXF_SPF_NEUTRAL; break;
	case SPF_RESULT_PASS: *res = MXF_SPF_PASS; break;
	case SPF_RESULT_FAIL: *res = MXF_SPF_FAIL; break;
	case SPF_RESULT_SOFTFAIL: *res = MXF_SPF_SOFTFAIL; break;
	case SPF_RESULT_NONE: *res = MXF_SPF_NONE; break;
	case SPF_RESULT_TEMPERROR: *res = MXF_SPF_TEMPERROR; break;
	default: *res = MXF_SPF_PERMERROR; break;
	}
	/* libspf2 1.2.10 turns a temporary DNS failure (TRY_AGAIN from our
	 * layer) into permerror once the error leaves SPF_server_get_record
	 * or an include:. Our layer never answers NO_RECOVERY, the only other
	 * source of SPF_E_DNS_ERROR, so that error means temperror (RFC 7208
	 * §4.4, §5.2). */
	if (*res == MXF_SPF_PERMERROR) {
		if (SPF_response_errcode(resp) == SPF_E_DNS_ERROR)
			*res = MXF_SPF_TEMPERROR;
		for (int i = 0; i < SPF_response_messages(resp); i++) {
			SPF_error_t *e = SPF_response_message(resp, i);
			if (e && SPF_error_errorp(e) && SPF_error_code(e) == SPF_E_DNS_ERROR)
				*res = MXF_SPF_TEMPERROR;
		}
	}
	if (why && whylen) {
		const char *rs = SPF_strreason(SPF_response_reason(resp));
		snprintf(why, whylen, "%s", rs ? rs : "");
	}
out:
	SPF_response_free(resp);
	SPF_request_free(req);
	SPF_server_free(srv);
	return r;
}
