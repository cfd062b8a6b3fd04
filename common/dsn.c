#include "dsn.h"

#include "strbuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One line of printable text, at most cap-1 bytes. ASCII only, unless utf8:
 * then bytes >= 0x80 pass too (RFC 6533 fields may hold UTF-8); controls
 * never do, so no CR/LF can reach the output. */
static const char *clean_u(const char *in, char *out, size_t cap, bool utf8)
{
	size_t o = 0;
	if (!in)
		in = "";
	for (; *in && o + 1 < cap; in++) {
		unsigned char c = (unsigned char)*in;
		if (c >= 0x20 && c < 0x7f)
			out[o++] = (char)c;
		else if (c == '\t')
			out[o++] = ' ';
		else if (utf8 && c >= 0x80)
			out[o++] = (char)c;
		else
			out[o++] = '?';
	}
	/* Never end inside a UTF-8 sequence cut by the cap. */
	if (utf8 && *in) {
		size_t k = o;
		while (k > 0 && ((unsigned char)out[k - 1] & 0xc0) == 0x80)
			k--;
		if (k > 0 && ((unsigned char)out[k - 1] & 0xc0) == 0xc0)
			o = k - 1;
	}
	out[o] = '\0';
	return out;
}

static const char *clean(const char *in, char *out, size_t cap)
{
	return clean_u(in, out, cap, false);
}

static bool has_8bit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

static void rfc5322_date(time_t t, char *out, size_t cap)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, cap, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

size_t mxf_dsn_header_len(const char *msg, size_t len, size_t max)
{
	if (len > max)
		len = max;
	for (size_t i = 0; i + 1 < len; i++) {
		if (msg[i] == '\n' && msg[i + 1] == '\n')
			return i + 2;
		if (i + 3 < len && msg[i] == '\r' && msg[i + 1] == '\n' && msg[i + 2] == '\r' &&
		    msg[i + 3] == '\n')
			return i + 4;
	}
	return len;
}

/* xtext (RFC 3461 §4): "+HH" stands for a byte. Decoded into printable
 * ASCII; anything else stays encoded. */
static void xtext_decode(const char *in, char *out, size_t cap)
{
	static const char hx[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *in && o + 1 < cap; in++) {
		const char *a, *b;
		if (in[0] == '+' && in[1] && in[2] && (a = strchr(hx, in[1])) && (b = strchr(hx, in[2]))) {
			int v = (int)(a - hx) * 16 + (int)(b - hx);
			if (v > 0x20 && v < 0x7f) {
				out[o++] = (char)v;
				in += 2;
				continue;
			}
		}
		out[o++] = *in;
	}
	out[o] = '\0';
}

/* "name[addr]:port" (deliverd's form) -> "name", or addr when no name. */
static void mta_name(const char *relay, char *out, size_t cap)
{
	const char *br = strchr(relay, '[');
	size_t n = br ? (size_t)(br - relay) : strlen(relay);
	if (n == 0 && br) {
		const char *e = strchr(br, ']');
		relay = br + 1;
		n = e ? (size_t)(e - relay) : strlen(relay);
	}
	if (n >= cap)
		n = cap - 1;
	memcpy(out, relay, n);
	out[n] = '\0';
}

static bool contains(const char *hay, size_t n, const char *needle)
{
	return hay && n && memmem(hay, n, needle, strlen(needle)) != NULL;
}

/* Copies a message (or header block) with bare LFs made CRLF and lone CRs
 * dropped; stop_at_empty: no empty line inside (it would end a part's
 * headers early). */
static void add_crlf(struct mxf_strbuf *b, const char *p, size_t n, bool stop_at_empty)
{
	size_t start = b->len;
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (ch == '\r')
			continue;
		if (ch == '\n') {
			if (stop_at_empty && b->len >= start + 2 && b->p[b->len - 1] == '\n' &&
			    b->p[b->len - 2] == '\r')
				continue;
			mxf_sb_add(b, "\r\n", 2);
		} else {
			mxf_sb_add(b, &ch, 1);
		}
	}
	if (b->len < 2 || b->p[b->len - 1] != '\n')
		mxf_sb_add(b, "\r\n", 2);
}

int mxf_dsn_build(const struct mxf_dsn *d, char **out, size_t *outlen)
{
	struct mxf_strbuf b = {0};
	char date[64], arr[64], host[256], qid[64], boundary[400];
	char c1[1024], c2[1024], c3[1024];
	bool u = d->utf8;
	size_t nfail = 0, ndelay = 0;

	for (size_t i = 0; i < d->nrcpt; i++) {
		const char *a = d->rcpt[i].action;
		if (!a || strcmp(a, "failed") == 0)
			nfail++;
		else if (strcmp(a, "delayed") == 0)
			ndelay++;
	}
	rfc5322_date(d->now, date, sizeof(date));
	rfc5322_date(d->arrival, arr, sizeof(arr));
	clean(d->reporting_mta, host, sizeof(host));
	clean(d->qid, qid, sizeof(qid));
	/* The returned text cannot contain the boundary: a hostile message
	 * that guessed it would otherwise split the report. */
	bool full = d->full && !d->full_too_big;
	for (unsigned k = 0;; k++) {
		char line[420];
		snprintf(boundary, sizeof(boundary), "%s.%ld.%u/%s", qid, (long)d->now, k, host);
		snprintf(line, sizeof(line), "--%s", boundary);
		if (!contains(d->headers, d->headers_len, line) &&
		    !(full && contains(d->full, d->full_len, line)))
			break;
	}

	const char *subject = nfail ? "Undelivered Mail Returned to Sender"
			      : ndelay ? "Delayed Mail (still being retried)"
				       : "Successful Mail Delivery Report";
	mxf_sb_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
	mxf_sb_printf(&b, "To: <%s>\r\n", clean_u(d->sender, c1, sizeof(c1), u));
	mxf_sb_printf(&b, "Subject: %s\r\n", subject);
	mxf_sb_printf(&b, "Date: %s\r\n", date);
	mxf_sb_printf(&b, "Message-ID: <%s.%s@%s>\r\n", qid,
		      nfail ? "bounce" : ndelay ? "delay" : "success", host);
	mxf_sb_printf(&b, "Auto-Submitted: auto-replied\r\n");
	mxf_sb_printf(&b, "MIME-Version: 1.0\r\n");
	mxf_sb_printf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		      "\tboundary=\"%s\"\r\n\r\n",
		  boundary);
	mxf_sb_printf(&b, "This is a MIME-encapsulated message.\r\n\r\n");

	mxf_sb_printf(&b, "--%s\r\nContent-Description: Notification\r\n"
		      "Content-Type: text/plain; charset=%s\r\n%s\r\n",
		  boundary, u ? "utf-8" : "us-ascii", u ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	mxf_sb_printf(&b, "This is the mail system at host %s.\r\n\r\n", host);
	if (nfail)
		mxf_sb_printf(&b, "I'm sorry to have to inform you that your message could not\r\n"
			      "be delivered to one or more recipients. It's attached below.\r\n\r\n");
	else if (ndelay)
		mxf_sb_printf(&b, "Your message could not be delivered yet. It is still being\r\n"
			      "retried; you do not need to send it again.\r\n\r\n");
	else
		mxf_sb_printf(&b, "Your message was successfully delivered or relayed to the\r\n"
			      "recipients listed below, as you asked.\r\n\r\n");
	if (d->full && d->full_too_big)
		mxf_sb_printf(&b, "The message was larger than %zu bytes, so only its headers\r\n"
			      "are returned.\r\n\r\n",
			  d->full_cap);
	for (size_t i = 0; i < d->nrcpt; i++) {
		const struct mxf_dsn_rcpt *r = &d->rcpt[i];
		if (r->remote_mta && r->remote_mta[0])
			mxf_sb_printf(&b, "<%s>: host %s said: %s\r\n\r\n",
				      clean_u(r->rcpt, c1, sizeof(c1), u),
				      clean(r->remote_mta, c2, sizeof(c2)),
				      clean_u(r->diagnostic, c3, sizeof(c3), u));
		else
			mxf_sb_printf(&b, "<%s>: %s\r\n\r\n", clean_u(r->rcpt, c1, sizeof(c1), u),
				      clean_u(r->diagnostic, c3, sizeof(c3), u));
	}

	mxf_sb_printf(&b, "--%s\r\nContent-Description: Delivery report\r\n"
		      "Content-Type: message/%sdelivery-status\r\n\r\n",
		  boundary, u ? "global-" : "");
	mxf_sb_printf(&b, "Reporting-MTA: dns; %s\r\nX-Mxferry-Queue-ID: %s\r\n", host, qid);
	if (d->envid && d->envid[0])
		mxf_sb_printf(&b, "Original-Envelope-Id: %s\r\n", clean(d->envid, c1, sizeof(c1)));
	mxf_sb_printf(&b, "Arrival-Date: %s\r\n", arr);
	for (size_t i = 0; i < d->nrcpt; i++) {
		const struct mxf_dsn_rcpt *r = &d->rcpt[i];
		clean_u(r->rcpt, c1, sizeof(c1), u);
		mxf_sb_printf(&b, "\r\nFinal-Recipient: %s; %s\r\n",
			      u && has_8bit(c1, strlen(c1)) ? "utf-8" : "rfc822", c1);
		if (r->orig_rcpt && r->orig_rcpt[0]) {
			/* ORCPT "type;xtext" (RFC 3461 §4.2), or a bare address. */
			const char *semi = strchr(r->orig_rcpt, ';');
			char type[64] = "rfc822";
			const char *val = r->orig_rcpt;
			if (semi && (size_t)(semi - r->orig_rcpt) < sizeof(type)) {
				memcpy(type, r->orig_rcpt, (size_t)(semi - r->orig_rcpt));
				type[semi - r->orig_rcpt] = '\0';
				val = semi + 1;
				while (*val == ' ')
					val++;
			}
			xtext_decode(val, c3, sizeof(c3));
			mxf_sb_printf(&b, "Original-Recipient: %s; %s\r\n", clean(type, c2, sizeof(c2)),
				      clean_u(c3, c1, sizeof(c1), u));
		}
		mxf_sb_printf(&b, "Action: %s\r\nStatus: %s\r\n",
			      clean(r->action ? r->action : "failed", c2, sizeof(c2)),
			      clean(r->status, c1, sizeof(c1)));
		if (r->remote_mta && r->remote_mta[0]) {
			mta_name(r->remote_mta, c3, sizeof(c3));
			mxf_sb_printf(&b, "Remote-MTA: dns; %s\r\n", clean(c3, c2, sizeof(c2)));
		}
		if (r->diagnostic && r->diagnostic[0])
			mxf_sb_printf(&b, "Diagnostic-Code: smtp; %s\r\n",
				      clean_u(r->diagnostic, c3, sizeof(c3), u));
		if (r->last_attempt) {
			rfc5322_date(r->last_attempt, c2, sizeof(c2));
			mxf_sb_printf(&b, "Last-Attempt-Date: %s\r\n", c2);
		}
	}
	if (full) {
		bool eight = has_8bit(d->full, d->full_len);
		mxf_sb_printf(&b, "\r\n--%s\r\nContent-Description: Undelivered Message\r\n"
			      "Content-Type: message/%s\r\n%s\r\n",
			  boundary, u ? "global" : "rfc822",
			  eight ? "Content-Transfer-Encoding: 8bit\r\n" : "");
		add_crlf(&b, d->full, d->full_len, false);
	} else {
		mxf_sb_printf(&b, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
			      "Content-Type: %s\r\n\r\n",
			  boundary, u ? "message/global-headers" : "text/rfc822-headers");
		add_crlf(&b, d->headers, d->headers_len, true);
	}
	mxf_sb_printf(&b, "\r\n--%s--\r\n", boundary);
	if (b.err) {
		free(b.p);
		return b.err;
	}
	*out = b.p;
	*outlen = b.len;
	return 0;
}

/* ---- parsing a returned bounce (hostile input) ---- */

struct line {
	const char *p;
	size_t n;
};

/* The next line from *pos: without its CRLF/LF. false at the end. */
static bool next_line(const char *m, size_t len, size_t *pos, struct line *l)
{
	if (*pos >= len)
		return false;
	const char *s = m + *pos;
	const char *nl = memchr(s, '\n', len - *pos);
	size_t n = nl ? (size_t)(nl - s) : len - *pos;
	*pos += n + (nl ? 1 : 0);
	if (n && s[n - 1] == '\r')
		n--;
	l->p = s;
	l->n = n;
	return true;
}

static bool prefix_ci(const struct line *l, const char *pfx)
{
	size_t k = strlen(pfx);
	return l->n >= k && strncasecmp(l->p, pfx, k) == 0;
}

static bool contains_ci(const char *p, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = 0; i + k <= n; i++)
		if (strncasecmp(p + i, needle, k) == 0)
			return true;
	return false;
}

/* Appends the printable part of [p, p+n) to out (capacity cap), trimmed,
 * whitespace runs made one space. */
static void put_clean(char *out, size_t cap, const char *p, size_t n)
{
	size_t o = strlen(out);
	for (size_t i = 0; i < n && o + 1 < cap; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			if (o > 0 && out[o - 1] != ' ')
				out[o++] = ' ';
		} else if (c > 0x20 && c < 0x7f) {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	while (o > 0 && out[o - 1] == ' ')
		out[--o] = '\0';
}

/* The value of "Name: value", after the colon (and "type;" when typed). */
static void field_value(const struct line *l, size_t namelen, bool typed, char *out, size_t cap)
{
	const char *p = l->p + namelen;
	size_t n = l->n - namelen;
	if (typed) {
		const char *semi = memchr(p, ';', n);
		if (semi) {
			n -= (size_t)(semi + 1 - p);
			p = semi + 1;
		}
	}
	out[0] = '\0';
	put_clean(out, cap, p, n);
}

/* Appends a folded continuation line to a field already copied. */
static void field_more(const struct line *l, char *out, size_t cap)
{
	size_t o = strlen(out);
	if (o + 2 < cap && o > 0) {
		out[o++] = ' ';
		out[o] = '\0';
	}
	put_clean(out, cap, l->p, l->n);
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* Our Received line: "by HOST (mxferry)" ... " id QID". */
static void find_qid(const char *m, size_t len, const char *host, char qid[MXF_QID_SIZE])
{
	static const char tag[] = "(mxferry)";
	size_t hl = host ? strlen(host) : 0;
	const char *p = m, *end = m + len;
	if (!hl || !m || !len)
		return;
	while ((p = memmem(p, (size_t)(end - p), tag, sizeof(tag) - 1))) {
		const char *t = p;
		p += sizeof(tag) - 1;
		/* "by" SP host SP before the tag */
		size_t at = (size_t)(t - m); /* "by" at at-hl-4, host at at-hl-1 */
		if (at < hl + 4 || !is_ws(m[at - 1]) || strncasecmp(m + at - 1 - hl, host, hl) != 0 ||
		    !is_ws(m[at - 2 - hl]) || strncasecmp(m + at - 4 - hl, "by", 2) != 0)
			continue;
		/* " id " within the rest of this (possibly folded) Received. */
		size_t win = (size_t)(end - p) < 400 ? (size_t)(end - p) : 400;
		for (size_t i = 0; i + 4 + MXF_QID_LEN <= win; i++) {
			if (p[i] == ';')
				break;
			if (is_ws(p[i]) && (p[i + 1] == 'i' || p[i + 1] == 'I') &&
			    (p[i + 2] == 'd' || p[i + 2] == 'D') && is_ws(p[i + 3])) {
				char c[MXF_QID_SIZE];
				memcpy(c, p + i + 4, MXF_QID_LEN);
				c[MXF_QID_LEN] = '\0';
				size_t after = i + 4 + MXF_QID_LEN;
				if (mxf_qid_valid(c) &&
				    (after == win || !((p[after] >= '0' && p[after] <= '9') ||
						       (p[after] >= 'A' && p[after] <= 'Z') ||
						       (p[after] >= 'a' && p[after] <= 'z')))) {
					memcpy(qid, c, MXF_QID_SIZE);
					return;
				}
			}
		}
	}
}

int mxf_dsn_parse(const char *msg, size_t len, const char *host, struct mxf_dsn_info *out)
{
	enum { TOP, SKIP, PARTHDR, STATUS, RETHDR } st = TOP;
	enum { K_NONE, K_PART_DS, K_PART_RET } kind = K_NONE;
	bool top_report = false, in_rcpt = false, rcpt_done = false, ret_done = false;
	char *last = NULL; /* the field a continuation line extends */
	size_t lastcap = 0;
	size_t pos = 0;
	struct line l;

	memset(out, 0, sizeof(*out));
	if (!msg)
		len = 0;
	while (next_line(msg, len, &pos, &l)) {
		bool cont = l.n > 0 && (l.p[0] == ' ' || l.p[0] == '\t');
		if (cont && last) {
			field_more(&l, last, lastcap);
			continue;
		}
		last = NULL;
		switch (st) {
		case TOP:
			if (l.n == 0) {
				st = SKIP;
			} else if (prefix_ci(&l, "Content-Type:")) {
				/* A folded Content-Type: look at the next lines too. */
				size_t p2 = pos, span = l.n;
				struct line l2;
				while (next_line(msg, len, &p2, &l2) && l2.n &&
				       (l2.p[0] == ' ' || l2.p[0] == '\t'))
					span = (size_t)(l2.p + l2.n - l.p);
				top_report = contains_ci(l.p, span, "multipart/report") &&
					     contains_ci(l.p, span, "delivery-status");
			}
			break;
		case SKIP:
		case STATUS:
		case RETHDR:
			if (l.n >= 2 && l.p[0] == '-' && l.p[1] == '-') {
				/* Any boundary-like line starts a part (a
				 * simplification: we need no exact MIME tree). */
				st = PARTHDR;
				kind = K_NONE;
				break;
			}
			if (st == STATUS) {
				if (l.n == 0) {
					if (in_rcpt)
						rcpt_done = true;
					break;
				}
				if (rcpt_done)
					break;
				if (prefix_ci(&l, "Final-Recipient:")) {
					in_rcpt = true;
					field_value(&l, 16, true, out->rcpt, sizeof(out->rcpt));
					last = out->rcpt, lastcap = sizeof(out->rcpt);
				} else if (!in_rcpt) {
					break;
				} else if (prefix_ci(&l, "Action:")) {
					field_value(&l, 7, false, out->action, sizeof(out->action));
				} else if (prefix_ci(&l, "Status:")) {
					field_value(&l, 7, false, out->status, sizeof(out->status));
				} else if (prefix_ci(&l, "Remote-MTA:")) {
					field_value(&l, 11, true, out->remote_mta,
						    sizeof(out->remote_mta));
					last = out->remote_mta, lastcap = sizeof(out->remote_mta);
				} else if (prefix_ci(&l, "Diagnostic-Code:")) {
					field_value(&l, 16, true, out->diagnostic,
						    sizeof(out->diagnostic));
					last = out->diagnostic, lastcap = sizeof(out->diagnostic);
				}
			} else if (st == RETHDR) {
				if (l.n == 0) {
					ret_done = true;
					st = SKIP;
				} else if (!out->message_id[0] && prefix_ci(&l, "Message-ID:")) {
					field_value(&l, 11, false, out->message_id,
						    sizeof(out->message_id));
					last = out->message_id, lastcap = sizeof(out->message_id);
				}
			}
			break;
		case PARTHDR:
			if (l.n == 0) {
				st = kind == K_PART_DS && !out->is_report ? STATUS
				     : kind == K_PART_RET && !ret_done    ? RETHDR
									  : SKIP;
				if (st == STATUS)
					out->is_report = top_report;
				break;
			}
			if (prefix_ci(&l, "Content-Type:")) {
				struct line v = {l.p + 13, l.n - 13};
				while (v.n && (v.p[0] == ' ' || v.p[0] == '\t'))
					v.p++, v.n--;
				if (prefix_ci(&v, "message/delivery-status") ||
				    prefix_ci(&v, "message/global-delivery-status"))
					kind = K_PART_DS;
				else if (prefix_ci(&v, "text/rfc822-headers") ||
					 prefix_ci(&v, "message/rfc822") ||
					 prefix_ci(&v, "message/global"))
					kind = K_PART_RET;
			}
			break;
		}
	}
	/* Only the first Received of ours counts, wherever it is (returned
	 * headers, or a quoted copy in a non-standard bounce). */
	find_qid(msg, len, host, out->qid);
	if (!out->is_report)
		out->rcpt[0] = out->action[0] = out->status[0] = out->remote_mta[0] =
			out->diagnostic[0] = '\0';
	return out->is_report || out->qid[0] ? 0 : -ENOENT;
}
