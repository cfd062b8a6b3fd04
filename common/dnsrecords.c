/* dnsrecords: the DNS records a domain routed through this gateway needs
 * (MX, SPF, DMARC, MTA-STS, TLS-RPT, one DKIM key record per key) and a live
 * check of each through [main] dns_resolver. Shared by `mxferryctl domain
 * dns` and apid's /email/routing/dns (issue 12), so both say the same. */
#include "dnsrecords.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dns.h"
#include "rulesdb.h"

struct keys {
	struct mxf_dnsrec *r;
	size_t n, cap;
	const char *domain;
};

static int add_key(const struct mxf_dkim_key_info *k, void *arg)
{
	struct keys *ks = arg;
	if (ks->n == ks->cap)
		return 0;
	struct mxf_dnsrec *r = &ks->r[ks->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s._domainkey.%s.", k->selector, ks->domain);
	snprintf(r->type, sizeof(r->type), "TXT");
	snprintf(r->value, sizeof(r->value), "v=DKIM1; k=%s; p=%s", k->algorithm, k->public_key);
	snprintf(r->note, sizeof(r->note), "DKIM %s key%s", k->algorithm,
		 k->enabled ? "" : " (disabled: not signing yet)");
	r->kind = MXF_RK_DKIM;
	return 0;
}

/* Letters and digits of a TXT value, ASCII-lower-cased, without blanks:
 * DKIM p= values and SPF terms compare like that. */
static void squash(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (; *in && o + 1 < cap; in++)
		if (*in != ' ' && *in != '\t')
			out[o++] = (char)(*in >= 'A' && *in <= 'Z' ? *in - 'A' + 'a' : *in);
	out[o] = '\0';
}

/* The value of tag in a tag=value; list (lower-cased, blanks removed), or "". */
static void tag_of(const char *txt, const char *tag, char *out, size_t cap)
{
	char sq[2048], key[40];
	squash(txt, sq, sizeof(sq));
	snprintf(key, sizeof(key), "%s=", tag);
	out[0] = '\0';
	for (char *p = sq; p && *p; p = strchr(p, ';') ? strchr(p, ';') + 1 : NULL)
		if (strncmp(p, key, strlen(key)) == 0) {
			size_t l = strcspn(p + strlen(key), ";");
			snprintf(out, cap, "%.*s", (int)l, p + strlen(key));
			return;
		}
}

/* Whether what the live DNS answers has the record: ok (as we would publish
 * it, or an equivalent the operator chose: any DMARC policy, an SPF that
 * names this gateway), wrong (a record of that kind that does not do the
 * job), missing, or unknown (no answer). */
static void check_rec(struct mxf_dns *d, struct mxf_dnsrec *r, const char *host)
{
	char why[200] = "", name[600];
	snprintf(name, sizeof(name), "%s", r->name);
	if (name[0] && name[strlen(name) - 1] == '.')
		name[strlen(name) - 1] = '\0';
	if (r->kind == MXF_RK_MX) {
		struct mxf_mx *mx = NULL;
		size_t n = 0;
		int rc = mxf_dns_mx(d, name, &mx, &n, why, sizeof(why));
		r->status = rc == MXF_DNS_OK ? "wrong" : rc == MXF_DNS_TEMPFAIL || rc < 0 ? "unknown"
										  : "missing";
		for (size_t i = 0; rc == MXF_DNS_OK && i < n; i++) {
			if (strcasecmp(mx[i].host, host) == 0)
				r->status = "ok";
			else if (!r->found[0])
				snprintf(r->found, sizeof(r->found), "%u %s.", mx[i].pref, mx[i].host);
		}
		if (strcmp(r->status, "unknown") == 0)
			snprintf(r->found, sizeof(r->found), "%s", why);
		free(mx);
		return;
	}
	char **txt = NULL;
	size_t n = 0;
	int rc = mxf_dns_txt(d, name, &txt, &n, why, sizeof(why));
	if (rc == MXF_DNS_TEMPFAIL || rc < 0) {
		r->status = "unknown";
		snprintf(r->found, sizeof(r->found), "%s", why);
		return;
	}
	static const char *const prefix[] = {[MXF_RK_SPF] = "v=spf1", [MXF_RK_DMARC] = "v=dmarc1",
					     [MXF_RK_DKIM] = "v=dkim1", [MXF_RK_STS] = "v=stsv1",
					     [MXF_RK_TLSRPT] = "v=tlsrptv1"};
	r->status = "missing";
	for (size_t i = 0; rc == MXF_DNS_OK && i < n; i++) {
		char sq[2048], want[2048];
		squash(txt[i], sq, sizeof(sq));
		/* A DKIM key record may leave out v=; every other kind starts with it. */
		if (strncmp(sq, prefix[r->kind], strlen(prefix[r->kind])) != 0 &&
		    !(r->kind == MXF_RK_DKIM && strstr(sq, "p=")))
			continue;
		bool good = true;
		if (r->kind == MXF_RK_DKIM) {
			char a[1600], b[1600];
			tag_of(txt[i], "p", a, sizeof(a));
			tag_of(r->value, "p", b, sizeof(b));
			good = strcmp(a, b) == 0;
		} else if (r->kind == MXF_RK_SPF) {
			/* Ours, or any record that names the gateway's host. */
			char h[300];
			squash(r->value, want, sizeof(want));
			snprintf(h, sizeof(h), "a:%s", host);
			good = strcmp(sq, want) == 0 || strstr(sq, h) != NULL;
		}
		if (good) {
			r->status = "ok";
			break;
		}
		r->status = "wrong";
		snprintf(r->found, sizeof(r->found), "%.280s", txt[i]);
	}
	if (rc == MXF_DNS_OK)
		mxf_dns_txt_free(txt, n);
}

int mxf_dnsrec_build(const struct mxf_config *cfg, struct mxf_rulesdb *db, const char *a,
		     struct mxf_dnsrec *r, size_t cap, size_t *nkeys)
{
	const char *host = mxf_config_str(cfg, "main", "hostname");
	const char *srs = mxf_config_str(cfg, "router", "srs_domain");
	size_t n = 0;
	if (cap < 5)
		return -ENOSPC;
	memset(r, 0, cap * sizeof(*r));
	bool is_srs = strcasecmp(a, srs) == 0;
	snprintf(r[n].name, sizeof(r[n].name), "%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "MX");
	snprintf(r[n].value, sizeof(r[n].value), "10 %s.", host);
	snprintf(r[n].note, sizeof(r[n].note), "mail for %s comes to this gateway", a);
	r[n++].kind = MXF_RK_MX;
	/* Forwarded mail leaves with the SRS domain as envelope sender and DSNs
	 * with the HELO name: the gateway's address must pass SPF for both. */
	snprintf(r[n].name, sizeof(r[n].name), "%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=spf1 a:%s -all", host);
	snprintf(r[n].note, sizeof(r[n].note), "%s",
		 is_srs ? "SPF: the SRS domain is the envelope sender of every forwarded message"
			: "SPF: add the domain's own senders (include:...) before -all");
	r[n++].kind = MXF_RK_SPF;
	snprintf(r[n].name, sizeof(r[n].name), "_dmarc.%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=DMARC1; p=none");
	snprintf(r[n].note, sizeof(r[n].note),
		 "DMARC: start at p=none; add rua=mailto:... (your choice) to get reports");
	r[n++].kind = MXF_RK_DMARC;
	/* MTA-STS (RFC 8461) and TLS reporting (RFC 8460): optional; senders then
	 * insist on TLS to this gateway. The policy file itself is served over
	 * HTTPS at mta-sts.DOMAIN, which mxferry does not do. */
	snprintf(r[n].name, sizeof(r[n].name), "_mta-sts.%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=STSv1; id=%ld", (long)time(NULL));
	snprintf(r[n].note, sizeof(r[n].note),
		 "MTA-STS (optional): also serve https://mta-sts.%s/.well-known/mta-sts.txt with "
		 "\"version: STSv1 / mode: testing / mx: %s / max_age: 86400\"; a new id= "
		 "whenever it changes",
		 a, host);
	r[n++].kind = MXF_RK_STS;
	snprintf(r[n].name, sizeof(r[n].name), "_smtp._tls.%s.", a);
	snprintf(r[n].type, sizeof(r[n].type), "TXT");
	snprintf(r[n].value, sizeof(r[n].value), "v=TLSRPTv1; rua=mailto:tls-reports@%s", a);
	snprintf(r[n].note, sizeof(r[n].note),
		 "TLS-RPT (optional, with MTA-STS): where senders report TLS failures");
	r[n++].kind = MXF_RK_TLSRPT;
	struct keys ks = {.r = r + n, .cap = cap - n, .domain = a};
	int e = mxf_rulesdb_dkim_list(db, a, add_key, &ks);
	if (e < 0)
		return e;
	*nkeys = ks.n;
	return (int)(n + ks.n);
}

int mxf_dnsrec_check(const struct mxf_config *cfg, struct mxf_dnsrec *r, size_t n, char *err,
		     size_t errlen)
{
	struct mxf_dns *d = NULL;
	int e = mxf_dns_new(mxf_config_str(cfg, "main", "dns_resolver"), 3, 2, &d, err, errlen);
	if (e < 0)
		return e;
	for (size_t i = 0; i < n; i++)
		check_rec(d, &r[i], mxf_config_str(cfg, "main", "hostname"));
	mxf_dns_free(d);
	return 0;
}
