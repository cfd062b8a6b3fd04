#include "dsn.h"

#include "strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Printable ASCII on one line, at most cap-1 bytes. */
static const char *clean(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	if (!in)
		in = "";
	for (; *in && o + 1 < cap; in++) {
		unsigned char c = (unsigned char)*in;
		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : (c == '\t' ? ' ' : '?');
	}
	out[o] = '\0';
	return out;
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

int mxf_dsn_build(const struct mxf_dsn *d, char **out, size_t *outlen)
{
	struct mxf_strbuf b = {0};
	char date[64], arr[64], host[256], qid[64], boundary[400];
	char c1[1024], c2[1024], c3[1024];

	rfc5322_date(d->now, date, sizeof(date));
	rfc5322_date(d->arrival, arr, sizeof(arr));
	clean(d->reporting_mta, host, sizeof(host));
	clean(d->qid, qid, sizeof(qid));
	snprintf(boundary, sizeof(boundary), "%s.%ld/%s", qid, (long)d->now, host);

	mxf_sb_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
	mxf_sb_printf(&b, "To: <%s>\r\n", clean(d->sender, c1, sizeof(c1)));
	mxf_sb_printf(&b, "Subject: Undelivered Mail Returned to Sender\r\n");
	mxf_sb_printf(&b, "Date: %s\r\n", date);
	mxf_sb_printf(&b, "Message-ID: <%s.bounce@%s>\r\n", qid, host);
	mxf_sb_printf(&b, "Auto-Submitted: auto-replied\r\n");
	mxf_sb_printf(&b, "MIME-Version: 1.0\r\n");
	mxf_sb_printf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		      "\tboundary=\"%s\"\r\n\r\n",
		  boundary);
	mxf_sb_printf(&b, "This is a MIME-encapsulated message.\r\n\r\n");

	mxf_sb_printf(&b, "--%s\r\nContent-Description: Notification\r\n"
		      "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
		  boundary);
	mxf_sb_printf(&b, "This is the mail system at host %s.\r\n\r\n", host);
	mxf_sb_printf(&b, "I'm sorry to have to inform you that your message could not\r\n"
		      "be delivered to one or more recipients. It's attached below.\r\n\r\n");
	for (size_t i = 0; i < d->nrcpt; i++) {
		const struct mxf_dsn_rcpt *r = &d->rcpt[i];
		if (r->remote_mta && r->remote_mta[0])
			mxf_sb_printf(&b, "<%s>: host %s said: %s\r\n\r\n", clean(r->rcpt, c1, sizeof(c1)),
				  clean(r->remote_mta, c2, sizeof(c2)),
				  clean(r->diagnostic, c3, sizeof(c3)));
		else
			mxf_sb_printf(&b, "<%s>: %s\r\n\r\n", clean(r->rcpt, c1, sizeof(c1)),
				  clean(r->diagnostic, c3, sizeof(c3)));
	}

	mxf_sb_printf(&b, "--%s\r\nContent-Description: Delivery report\r\n"
		      "Content-Type: message/delivery-status\r\n\r\n",
		  boundary);
	mxf_sb_printf(&b, "Reporting-MTA: dns; %s\r\nX-Mxferry-Queue-ID: %s\r\nArrival-Date: %s\r\n",
		  host, qid, arr);
	for (size_t i = 0; i < d->nrcpt; i++) {
		const struct mxf_dsn_rcpt *r = &d->rcpt[i];
		mxf_sb_printf(&b, "\r\nFinal-Recipient: rfc822; %s\r\n", clean(r->rcpt, c1, sizeof(c1)));
		if (r->orig_rcpt && r->orig_rcpt[0])
			mxf_sb_printf(&b, "Original-Recipient: rfc822; %s\r\n",
				  clean(r->orig_rcpt, c1, sizeof(c1)));
		mxf_sb_printf(&b, "Action: failed\r\nStatus: %s\r\n", clean(r->status, c1, sizeof(c1)));
		if (r->remote_mta && r->remote_mta[0])
			mxf_sb_printf(&b, "Remote-MTA: dns; %s\r\n", clean(r->remote_mta, c2, sizeof(c2)));
		mxf_sb_printf(&b, "Diagnostic-Code: smtp; %s\r\n", clean(r->diagnostic, c3, sizeof(c3)));
	}
	mxf_sb_printf(&b, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
		      "Content-Type: text/rfc822-headers\r\n\r\n",
		  boundary);
	/* The original header block, with bare LFs made CRLF and no empty line
	 * inside (that would end the part's headers early). */
	for (size_t i = 0; i < d->headers_len; i++) {
		char ch = d->headers[i];
		if (ch == '\r')
			continue;
		if (ch == '\n') {
			if (b.len >= 2 && b.p[b.len - 1] == '\n' && b.p[b.len - 2] == '\r')
				continue;
			mxf_sb_add(&b, "\r\n", 2);
		} else {
			mxf_sb_add(&b, &ch, 1);
		}
	}
	if (b.len < 2 || b.p[b.len - 1] != '\n')
		mxf_sb_add(&b, "\r\n", 2);
	mxf_sb_printf(&b, "\r\n--%s--\r\n", boundary);
	if (b.err) {
		free(b.p);
		return b.err;
	}
	*out = b.p;
	*outlen = b.len;
	return 0;
}
