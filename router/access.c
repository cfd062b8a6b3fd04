/* The router's side of the operator's allow/block lists and of smtpd's
 * refusal log (issue 11).
 *
 * Lists: compiled from rules.db with every rules reload (start, SIGHUP,
 * RELOAD, data_version change) and swapped whole; smtpd asks ACCESS_CHECK at
 * connect and at MAIL and gets the verdict from memory. The connect answer
 * says (F_MAIL_FINAL) when MAIL's check could not differ, and smtpd then
 * does not ask at MAIL. Asking (rather than
 * pushing the lists to smtpd) keeps one copy, sized by the router, and a
 * restarted router answers from the database again as soon as smtpd has
 * reconnected; while it is down smtpd goes on without a verdict (its
 * recipients get 451 then anyway).
 *
 * Refusals: every one becomes an activity row with status "rejected" and a
 * reason keyword. A flood must not make activity.db the bottleneck or grow
 * it without bound: per client network (/24, /64) and reason, at most
 * [router] reject_log_rate rows a second are written; the rest are counted
 * and, once that second is over, written as one row whose count column
 * holds how many refusals it stands for (stats add the counts). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "address.h"
#include "config.h"
#include "dnsbl.h"
#include "log.h"
#include "router.h"
#include "rulesdb.h"

static struct mxf_access *lists;

static int add_entry(const struct mxf_access_entry *e, void *arg)
{
	int r = mxf_access_add(arg, strcmp(e->list, "allow") == 0, e->value, e->reason);
	if (r == -EINVAL) {
		/* Written by a newer or a looser writer: skipped, not fatal. */
		mxf_warn("access list: ignoring invalid %s entry '%s'", e->list, e->value);
		return 0;
	}
	return r;
}

int access_reload(void)
{
	struct mxf_access *a = mxf_access_new();
	int r = a ? mxf_rulesdb_access_list(R.rdb, NULL, add_entry, a) : -ENOMEM;
	if (r == 0)
		r = mxf_access_finish(a);
	if (r < 0) {
		mxf_err("allow/block lists: cannot load (%s); keeping the current ones",
			strerror(-r));
		mxf_access_free(a);
		return r;
	}
	if (mxf_access_count(a) != mxf_access_count(lists))
		mxf_info("allow/block lists: %zu entr%s", mxf_access_count(a),
			 mxf_access_count(a) == 1 ? "y" : "ies");
	mxf_access_free(lists);
	lists = a;
	return 0;
}

static const char *verdict_name(const struct mxf_access_result *res)
{
	switch (res->verdict) {
	case MXF_ACCESS_ALLOW: return "allow";
	case MXF_ACCESS_ALLOW_SENDER: return "allow-sender";
	case MXF_ACCESS_BLOCK: return res->client ? "block" : "block-sender";
	default: return "none";
	}
}

int access_check(struct peer *p, const struct mxf_ipc_view *v)
{
	uint64_t req;
	const char *ip = mxf_ipc_str(v, F_CLIENT_IP, 0);
	if (mxf_ipc_u64(v, F_REQ, 0, &req) < 0 || !ip)
		return -1;
	/* MAIL's check carries the sender ("" for the null sender); connect's
	 * the address alone. */
	const char *sender = mxf_ipc_str(v, F_SENDER, 0);
	struct mxf_access_result res;
	mxf_access_check(lists, ip, mxf_ipc_str(v, F_HELO, 0), sender, &res);
	metrics_access_check(sender != NULL);
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(MXF_MSG_ACCESS_REPLY);
	int r = m ? 0 : -ENOMEM;
	if (r == 0)
		r = mxf_ipc_put_u64(m, F_REQ, req);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_ACTION, verdict_name(&res));
	if (r == 0)
		r = mxf_ipc_put_str(m, F_TEXT, res.reason);
	if (r == 0)
		r = mxf_ipc_put_str(m, F_ADDR, res.entry);
	/* Lets smtpd skip the MAIL round trip when no entry could change the
	 * verdict then. A reload before that MAIL is not seen by the session:
	 * it keeps the verdict it got at connect, as it keeps an IP verdict. */
	if (r == 0 && !sender && mxf_access_mail_final(lists, &res))
		r = mxf_ipc_put_u64(m, F_MAIL_FINAL, 1);
	if (r == 0)
		r = peer_send(p, m, -1);
	mxf_ipc_msg_free(m);
	if (r < 0 && !p->closing) {
		mxf_warn("smtpd[%ld]: cannot answer ACCESS_CHECK: %s; closing", (long)p->pid,
			 strerror(-r));
		peer_close(p);
	}
	return 0;
}

/* ---- the refusal log, coalesced ---- */

#define WINDOW_MS 1000
#define MAX_KEYS 10000 /* networks x reasons tracked at once; past it, one per reason */
#define BUCKETS 1024

struct rl {
	struct rl *next;
	uint64_t window;
	unsigned written, suppressed;
	char *key; /* "NET|REASON" */
	char net[64], reason[64];
};

static struct rl *table[BUCKETS];
static size_t nkeys;
static uv_timer_t sweep_timer;
static bool sweep_init;

static unsigned hash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % BUCKETS;
}

static void summary(const struct rl *e)
{
	char text[256];
	snprintf(text, sizeof(text), "%u more refusal%s from %s in one second (reason %s), "
				     "not logged one by one",
		 e->suppressed, e->suppressed == 1 ? "" : "s", e->net, e->reason);
	mxf_info("activity log: %s", text);
	activity_reject(e->net, NULL, NULL, NULL, NULL, NULL, text, e->reason, e->suppressed);
}

/* Writes the summaries of windows that are over and forgets idle keys. */
static void on_sweep(uv_timer_t *t)
{
	uint64_t now = uv_now(R.loop);
	for (size_t b = 0; b < BUCKETS; b++) {
		for (struct rl **pp = &table[b]; *pp;) {
			struct rl *e = *pp;
			if (now - e->window < WINDOW_MS) {
				pp = &e->next;
				continue;
			}
			if (e->suppressed)
				summary(e);
			*pp = e->next;
			free(e->key);
			free(e);
			nkeys--;
		}
	}
	if (nkeys == 0)
		uv_timer_stop(t);
}

/* Whether a refusal from ip with reason gets a row of its own now. */
static bool rl_admit(const char *ip, const char *reason)
{
	unsigned rate = (unsigned)mxf_config_int(R.cfg, "router", "reject_log_rate");
	if (rate == 0)
		return true;
	char net[64], key[160];
	if (mxf_ip_prefix(ip, net, sizeof(net)) < 0)
		snprintf(net, sizeof(net), "unknown");
	if (nkeys >= MAX_KEYS)
		snprintf(net, sizeof(net), "*");
	snprintf(key, sizeof(key), "%s|%.60s", net, reason);
	uint64_t now = uv_now(R.loop);
	struct rl **head = &table[hash(key)], *e = *head;
	while (e && strcmp(e->key, key) != 0)
		e = e->next;
	if (e && now - e->window >= WINDOW_MS) {
		if (e->suppressed)
			summary(e);
		e->window = now;
		e->written = e->suppressed = 0;
	}
	if (!e) {
		if (!(e = calloc(1, sizeof(*e))) || !(e->key = strdup(key))) {
			free(e);
			return true;
		}
		e->window = now;
		snprintf(e->net, sizeof(e->net), "%s", net);
		snprintf(e->reason, sizeof(e->reason), "%.60s", reason);
		e->next = *head;
		*head = e;
		nkeys++;
		if (!sweep_init) {
			uv_timer_init(R.loop, &sweep_timer);
			uv_unref((uv_handle_t *)&sweep_timer);
			sweep_init = true;
		}
		if (!uv_is_active((uv_handle_t *)&sweep_timer))
			uv_timer_start(&sweep_timer, on_sweep, WINDOW_MS, WINDOW_MS);
	}
	if (e->written < rate) {
		e->written++;
		return true;
	}
	e->suppressed++;
	return false;
}

void access_reject_row(const char *ip, const char *helo, const char *sender, const char *rcpt,
		       const char *rule, const char *action, const char *reply, const char *reason)
{
	metrics_refusal(reason, rcpt && *rcpt);
	if (rl_admit(ip ? ip : "", reason))
		activity_reject(ip, helo, sender, rcpt, rule, action, reply, reason, 1);
}

/* A string from smtpd for a log column: bounded, no control characters
 * (the activity readers escape what they print, but a row is kept long). */
static const char *field(const struct mxf_ipc_view *v, uint16_t tag, char *buf, size_t cap)
{
	const char *s = mxf_ipc_str(v, tag, 0);
	if (!s)
		return NULL;
	size_t o = 0;
	for (; *s && o + 1 < cap; s++)
		buf[o++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
	buf[o] = '\0';
	return buf;
}

int access_reject_log(struct peer *p, const struct mxf_ipc_view *v)
{
	(void)p;
	uint64_t code;
	char ip[64], helo[300], sender[MXF_ADDR_SIZE], rcpt[MXF_ADDR_SIZE], esc[16], text[600],
		reason[80], reply[700];
	if (mxf_ipc_u64(v, F_CODE, 0, &code) < 0 || code < 400 || code > 599 ||
	    !field(v, F_REASON, reason, sizeof(reason)) || !reason[0] ||
	    !field(v, F_CLIENT_IP, ip, sizeof(ip)))
		return -1;
	if (!field(v, F_ESC, esc, sizeof(esc)))
		esc[0] = '\0';
	if (!field(v, F_TEXT, text, sizeof(text)))
		text[0] = '\0';
	snprintf(reply, sizeof(reply), "%llu%s%s %s", (unsigned long long)code, esc[0] ? " " : "",
		 esc, text);
	const char *h = field(v, F_HELO, helo, sizeof(helo));
	const char *s = field(v, F_SENDER, sender, sizeof(sender));
	const char *r = field(v, F_RCPT, rcpt, sizeof(rcpt));
	access_reject_row(ip, h && *h ? h : NULL, s, r && *r ? r : NULL, NULL, NULL, reply, reason);
	return 0;
}
