#include "webhook.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <gmime/gmime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "log.h"
#include "sign.h"

#define MSG_MAX (256L * 1024 * 1024) /* what we read of a content file at most */
#define STATUS_MAX 200

static struct {
	char *ca;
	size_t calen;
	long timeout_ms;
	iconv_t iconv[48]; /* open for the process's life (see whk_init) */
} W;

int whk_init(const char *ca_file, int timeout_s, char *err, size_t errlen)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "libcurl: global init failed");
		return -EIO;
	}
	W.timeout_ms = (long)timeout_s * 1000;
	/* The text parts are converted to UTF-8 with iconv, whose converters
	 * glibc loads from /usr/lib/.../gconv on first use: impossible in the
	 * chroot. Open the common ones now and keep them open, so their
	 * modules stay loaded (a charset not listed comes out as U+FFFD). */
	static const char *const cs[] = {
		"ISO-8859-1",  "ISO-8859-2",   "ISO-8859-3",   "ISO-8859-4",   "ISO-8859-5",
		"ISO-8859-6",  "ISO-8859-7",   "ISO-8859-8",   "ISO-8859-9",   "ISO-8859-10",
		"ISO-8859-13", "ISO-8859-14",  "ISO-8859-15",  "ISO-8859-16",  "WINDOWS-1250",
		"WINDOWS-1251", "WINDOWS-1252", "WINDOWS-1253", "WINDOWS-1254", "WINDOWS-1255",
		"WINDOWS-1256", "WINDOWS-1257", "WINDOWS-1258", "KOI8-R",      "KOI8-U",
		"SHIFT_JIS",   "EUC-JP",       "ISO-2022-JP",  "GB2312",       "GBK",
		"GB18030",     "BIG5",         "EUC-KR",       "UTF-16",       "UTF-7",
		"US-ASCII",    "CP850",        "CP437",        "TIS-620",      "ISO-2022-KR"};
	_Static_assert(sizeof(cs) / sizeof(cs[0]) <= sizeof(W.iconv) / sizeof(W.iconv[0]), "");
	for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
		W.iconv[i] = iconv_open("UTF-8", cs[i]);
	/* Without a CA bundle https webhooks fail verification (deferred, and
	 * logged), http ones still work: not fatal. */
	FILE *f = ca_file && *ca_file ? fopen(ca_file, "re") : NULL;
	if (!f)
		return 0;
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		char *p = realloc(W.ca, W.calen + n);
		if (!p) {
			fclose(f);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		memcpy(p + W.calen, buf, n);
		W.ca = p;
		W.calen += n;
	}
	fclose(f);
	return 0;
}

/* ---- JSON (sans-I/O) ---- */


static void j_cstr(struct mxf_strbuf *b, const char *s)
{
	mxf_sb_json_str(b, s ? s : "", s ? strlen(s) : 0);
}

/* "spf=pass" in our Authentication-Results: the first result of method m
 * (a word preceded by a space, tab or ';'), or "none". */
static void auth_result(const char *ar, const char *m, char *out, size_t outlen)
{
	size_t ml = strlen(m);
	snprintf(out, outlen, "none");
	for (const char *p = ar; p && (p = strstr(p, m)); p += ml) {
		if (p == ar || !strchr(" \t;", p[-1]) || p[ml] != '=')
			continue;
		const char *v = p + ml + 1;
		size_t n = strspn(v, "abcdefghijklmnopqrstuvwxyz");
		if (n && n < outlen)
			snprintf(out, outlen, "%.*s", (int)n, v);
		return;
	}
}

/* The router's Authentication-Results field (unfolded onto one line). */
static char *our_auth_results(const char *pre)
{
	static const char name[] = "Authentication-Results:";
	const char *p = pre;
	while (p && *p) {
		if (strncasecmp(p, name, sizeof(name) - 1) == 0) {
			const char *v = p + sizeof(name) - 1, *e = v;
			while (*e && !(e[0] == '\r' && e[1] == '\n' && e[2] != ' ' && e[2] != '\t') &&
			       !(e[0] == '\n' && e[1] != ' ' && e[1] != '\t'))
				e++;
			char *out = malloc((size_t)(e - v) + 1);
			if (!out)
				return NULL;
			size_t o = 0;
			for (const char *q = v; q < e; q++)
				if (*q != '\r' && *q != '\n')
					out[o++] = *q == '\t' ? ' ' : *q;
			out[o] = '\0';
			char *s = out;
			while (*s == ' ')
				s++;
			memmove(out, s, strlen(s) + 1);
			return out;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

struct walk {
	struct mxf_strbuf *b;
	char *text, *html;
	size_t ntext, nhtml;
	bool text_cut, html_cut;
	size_t natt;
	bool first_att;
};

static char *part_text(GMimePart *part, size_t *n, bool *cut)
{
	char *t = GMIME_IS_TEXT_PART(part) ? g_mime_text_part_get_text(GMIME_TEXT_PART(part)) : NULL;
	if (!t)
		return NULL;
	size_t l = strlen(t);
	*cut = l > WHK_TEXT_MAX;
	if (*cut) {
		l = WHK_TEXT_MAX;
		/* Do not split a UTF-8 sequence. */
		while (l && ((unsigned char)t[l] & 0xc0) == 0x80)
			l--;
	}
	*n = l;
	return t;
}

static void walk_part(GMimeObject *parent, GMimeObject *obj, gpointer data)
{
	struct walk *w = data;
	(void)parent;
	if (!GMIME_IS_PART(obj))
		return; /* multiparts are walked into; an attached message is one part */
	GMimePart *part = GMIME_PART(obj);
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	bool att = g_mime_part_is_attachment(part);
	const char *fn = g_mime_part_get_filename(part);
	if (!att && !fn && ct && g_mime_content_type_is_type(ct, "text", "plain") && !w->text) {
		w->text = part_text(part, &w->ntext, &w->text_cut);
		if (w->text)
			return;
	}
	if (!att && !fn && ct && g_mime_content_type_is_type(ct, "text", "html") && !w->html) {
		w->html = part_text(part, &w->nhtml, &w->html_cut);
		if (w->html)
			return;
	}
	if (w->natt >= WHK_MAX_ATTACH)
		return;
	/* Anything else is an attachment: its metadata and decoded size. */
	gint64 size = 0;
	GMimeDataWrapper *dw = g_mime_part_get_content(part);
	if (dw) {
		GMimeStream *ns = g_mime_stream_null_new();
		if (g_mime_data_wrapper_write_to_stream(dw, ns) >= 0)
			size = (gint64)GMIME_STREAM_NULL(ns)->written;
		g_object_unref(ns);
	}
	char *mt = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
	mxf_sb_str(w->b, w->natt ? ",{\"filename\":" : "{\"filename\":");
	if (fn)
		j_cstr(w->b, fn);
	else
		mxf_sb_str(w->b, "null");
	mxf_sb_str(w->b, ",\"content_type\":");
	j_cstr(w->b, mt ? mt : "application/octet-stream");
	mxf_sb_printf(w->b, ",\"size\":%lld}", (long long)size);
	g_free(mt);
	w->natt++;
}

int whk_payload(const struct whk_in *in, const char *msg, size_t len, struct mxf_strbuf *b)
{
	mxf_sb_str(b, "{\"queue_id\":");
	j_cstr(b, in->qid);
	mxf_sb_str(b, ",\"envelope\":{\"from\":");
	j_cstr(b, in->from);
	mxf_sb_str(b, ",\"to\":");
	j_cstr(b, in->to);
	mxf_sb_str(b, "},\"auth\":{");
	char *ar = our_auth_results(in->pre);
	static const char *const methods[] = {"spf", "dkim", "dmarc"};
	for (size_t i = 0; i < 3; i++) {
		char v[32];
		auth_result(ar, methods[i], v, sizeof(v));
		mxf_sb_printf(b, "\"%s\":", methods[i]);
		j_cstr(b, v);
		mxf_sb_str(b, ",");
	}
	mxf_sb_str(b, "\"authentication_results\":");
	if (ar)
		j_cstr(b, ar);
	else
		mxf_sb_str(b, "null");
	free(ar);
	mxf_sb_str(b, "},\"headers\":[");

	/* GMime copies nothing of the buffer it parses from a mem stream. */
	GMimeStream *st = g_mime_stream_mem_new_with_buffer(msg, len);
	GMimeParser *ps = g_mime_parser_new_with_stream(st);
	GMimeMessage *m = g_mime_parser_construct_message(ps, NULL);
	g_object_unref(ps);
	g_object_unref(st);
	struct walk w = {.b = b};
	if (m) {
		GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(m));
		int nh = hl ? g_mime_header_list_get_count(hl) : 0;
		for (int i = 0; i < nh && i < WHK_MAX_HEADERS; i++) {
			GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
			const char *v = g_mime_header_get_value(h);
			mxf_sb_str(b, i ? ",{\"name\":" : "{\"name\":");
			j_cstr(b, g_mime_header_get_name(h));
			mxf_sb_str(b, ",\"value\":");
			/* Unfolded and RFC 2047-decoded by GMime. */
			j_cstr(b, v ? v : "");
			mxf_sb_str(b, "}");
		}
	}
	mxf_sb_str(b, "],\"attachments\":[");
	if (m)
		g_mime_message_foreach(m, walk_part, &w);
	mxf_sb_str(b, "],\"text\":");
	if (w.text)
		mxf_sb_json_str(b, w.text, w.ntext);
	else
		mxf_sb_str(b, "null");
	mxf_sb_printf(b, ",\"text_truncated\":%s,\"html\":", w.text_cut ? "true" : "false");
	if (w.html)
		mxf_sb_json_str(b, w.html, w.nhtml);
	else
		mxf_sb_str(b, "null");
	mxf_sb_printf(b, ",\"html_truncated\":%s", w.html_cut ? "true" : "false");
	g_free(w.text);
	g_free(w.html);
	if (m)
		g_object_unref(m);

	size_t rl = len > WHK_RAW_MAX ? WHK_RAW_MAX : len;
	mxf_sb_printf(b, ",\"raw_size\":%zu,\"raw_truncated\":%s,\"raw\":\"", len,
		      rl < len ? "true" : "false");
	unsigned char enc[4 * 3072 / 3 + 1];
	for (size_t off = 0; off < rl; off += 3072) {
		size_t n = rl - off < 3072 ? rl - off : 3072;
		int k = EVP_EncodeBlock(enc, (const unsigned char *)msg + off, (int)n);
		mxf_sb_add(b, enc, (size_t)k);
	}
	mxf_sb_str(b, "\"}");
	return b->err;
}

/* ---- the POST ---- */

struct resp {
	char status[STATUS_MAX + 1];
};

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t len = size * n;
	/* Every status line (a 1xx one is followed by the final one). */
	if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
		size_t o = 0;
		for (size_t i = 0; i < len && o < STATUS_MAX; i++)
			if (p[i] != '\r' && p[i] != '\n')
				r->status[o++] = (unsigned char)p[i] >= 0x20 && p[i] != 0x7f ? p[i] : '?';
		r->status[o] = '\0';
	}
	return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n; /* the answer's body is not used */
}

static int read_all(int fd, char **out, size_t *outlen, const char *pre)
{
	size_t pl = strlen(pre), cap = pl + 65536, len = pl;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, pre, pl);
	for (off_t off = 0;;) {
		if (len == cap) {
			if (cap > (size_t)MSG_MAX) {
				free(buf);
				return -EFBIG;
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t k = pread(fd, buf + len, cap - len, off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = errno;
			free(buf);
			return -e;
		}
		if (k == 0)
			break;
		len += (size_t)k;
		off += k;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

static void result(struct dlv_job *j, int code, const char *esc, const char *text)
{
	dlv_set_result(&j->rcpt[0], code, esc, text);
}

/* "host:port:addr,addr" for CURLOPT_RESOLVE: the URL's host resolved
 * through our resolver ([main] dns_resolver), never the system's (libcurl
 * would otherwise ask /etc/resolv.conf, which the tests and the chroot do not
 * have). An IP literal needs nothing. Returns 1 (resolved), 0 (literal), or
 * <0 with why set. */
static int pin_host(struct dlv_job *j, const char *host, long port, char *out, size_t outlen,
		    char *why, size_t whylen)
{
	struct in6_addr a6;
	char bare[MXF_DNS_NAME_MAX + 3];
	snprintf(bare, sizeof(bare), "%s", host);
	size_t bl = strlen(bare);
	if (bare[0] == '[' && bl > 2 && bare[bl - 1] == ']') {
		memmove(bare, bare + 1, bl - 2);
		bare[bl - 2] = '\0';
	}
	if (inet_pton(AF_INET, bare, &a6) == 1 || inet_pton(AF_INET6, bare, &a6) == 1)
		return 0;
	if (!mxf_dns_name_valid(bare)) {
		snprintf(why, whylen, "invalid host name in the URL");
		return -EINVAL;
	}
	int n = snprintf(out, outlen, "%s:%ld:", bare, port);
	size_t o = (size_t)n, found = 0;
	static const int fam[] = {AF_INET6, AF_INET};
	for (size_t f = 0; f < 2; f++) {
		struct mxf_dns_addr a[8];
		size_t na = 0;
		char w[200] = "";
		int rc = mxf_dns_addrs(j->dns, bare, fam[f], a, 8, &na, w, sizeof(w));
		if (rc != MXF_DNS_OK) {
			if (!found && w[0])
				snprintf(why, whylen, "%s", w);
			continue;
		}
		for (size_t k = 0; k < na && o + INET6_ADDRSTRLEN + 4 < outlen; k++) {
			char s[INET6_ADDRSTRLEN];
			inet_ntop(a[k].family, &a[k].a, s, sizeof(s));
			o += (size_t)snprintf(out + o, outlen - o, a[k].family == AF_INET6 ? "%s[%s]"
											   : "%s%s",
					      found ? "," : "", s);
			found++;
		}
	}
	if (!found) {
		if (!why[0])
			snprintf(why, whylen, "no address for %s", bare);
		return -ENOENT;
	}
	return 1;
}

void whk_run(struct dlv_job *j)
{
	char *msg = NULL, why[256] = "", errbuf[CURL_ERROR_SIZE] = "";
	size_t len = 0;
	struct mxf_strbuf body = {0};
	struct curl_slist *hdrs = NULL, *resolve = NULL;
	CURL *c = NULL;
	CURLU *u = NULL;
	char *host = NULL, *scheme = NULL, *port = NULL;
	snprintf(j->relay, sizeof(j->relay), "none");

	int r = read_all(j->fd, &msg, &len, j->headers);
	if (r < 0) {
		result(j, 451, "4.3.0", "cannot read the queue file");
		goto out;
	}
	struct whk_in in = {.qid = j->qid, .from = j->sender, .to = j->rcpt[0].addr,
			    .pre = j->headers};
	if (whk_payload(&in, msg, len, &body) < 0) {
		result(j, 451, "4.3.0", "out of memory building the webhook payload");
		goto out;
	}

	/* The signature: t=UNIX,v1=hex(HMAC(secret, SHA-256(UNIX "." body))). */
	char ts[32], sighdr[160];
	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	unsigned char dg[SHA256_DIGEST_LENGTH], mac[32];
	EVP_MD_CTX *sc = EVP_MD_CTX_new();
	bool hashed = sc && EVP_DigestInit_ex(sc, EVP_sha256(), NULL) > 0 &&
		      EVP_DigestUpdate(sc, ts, strlen(ts)) > 0 && EVP_DigestUpdate(sc, ".", 1) > 0 &&
		      EVP_DigestUpdate(sc, body.p, body.len) > 0 &&
		      EVP_DigestFinal_ex(sc, dg, NULL) > 0;
	EVP_MD_CTX_free(sc);
	if (!hashed || (r = dsig_webhook(dg, mac)) < 0) {
		result(j, 451, "4.3.0", "cannot sign the webhook (router unavailable)");
		goto out;
	}
	int o = snprintf(sighdr, sizeof(sighdr), "X-Mxferry-Signature: t=%s,v1=", ts);
	for (size_t i = 0; i < 32; i++)
		o += snprintf(sighdr + o, sizeof(sighdr) - (size_t)o, "%02x", mac[i]);

	if (!(u = curl_url()) || curl_url_set(u, CURLUPART_URL, j->webhook, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
		result(j, 451, "4.3.0", "webhook URL not understood");
		goto out;
	}
	char pin[1024];
	long portn = strtol(port, NULL, 10);
	r = pin_host(j, host, portn, pin, sizeof(pin), why, sizeof(why));
	snprintf(j->relay, sizeof(j->relay), "%s:%ld", host, portn);
	if (r < 0) {
		char t[400];
		snprintf(t, sizeof(t), "webhook host lookup failed: %s", why);
		result(j, 451, "4.4.3", t);
		goto out;
	}
	if (r == 1 && !(resolve = curl_slist_append(NULL, pin)))
		goto oom;
	char qh[80];
	snprintf(qh, sizeof(qh), "X-Mxferry-Queue-Id: %s", j->qid);
	struct curl_slist *h;
	if (!(h = curl_slist_append(hdrs, "Content-Type: application/json")) || !(hdrs = h) ||
	    !(h = curl_slist_append(hdrs, sighdr)) || !(hdrs = h) ||
	    !(h = curl_slist_append(hdrs, qh)) || !(hdrs = h) ||
	    !(h = curl_slist_append(hdrs, "Expect:")) || !(hdrs = h))
		goto oom;
	if (!(c = curl_easy_init()))
		goto oom;
	struct resp resp = {""};
	curl_easy_setopt(c, CURLOPT_CURLU, u);
	/* Only http(s), no redirects (a 3xx is a failure: the operator named
	 * this URL), no proxy from the environment, no signals (threads). */
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, W.timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, W.timeout_ms < 10000 ? W.timeout_ms : 10000L);
	if (resolve)
		curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "mxferry-webhook/1");
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.p);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body.len);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &resp);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	if (W.ca) {
		struct curl_blob blob = {.data = W.ca, .len = W.calen, .flags = CURL_BLOB_NOCOPY};
		curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
	}
	CURLcode rc = curl_easy_perform(c);
	char *ip = NULL;
	if (curl_easy_getinfo(c, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip && *ip)
		snprintf(j->relay, sizeof(j->relay), "%s[%s]:%ld", host, ip, portn);
	if (rc != CURLE_OK) {
		char t[400];
		snprintf(t, sizeof(t), "webhook %s: %s",
			 rc == CURLE_OPERATION_TIMEDOUT ? "timed out" : "failed",
			 errbuf[0] ? errbuf : curl_easy_strerror(rc));
		result(j, 451,
		       rc == CURLE_OPERATION_TIMEDOUT ? "4.4.2"
		       : rc == CURLE_COULDNT_CONNECT ? "4.4.1"
						     : "4.4.0",
		       t);
		goto out;
	}
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	char t[STATUS_MAX + 64];
	snprintf(t, sizeof(t), "%s", resp.status[0] ? resp.status : "HTTP status");
	/* 2xx: delivered. Anything else, 410 Gone included, is retried on the
	 * queue's schedule until max_queue_lifetime: an endpoint that is down
	 * or misconfigured for a while must not lose mail. */
	if (status >= 200 && status <= 299) {
		result(j, 250, "2.0.0", t);
	} else {
		if (status >= 300 && status <= 399)
			snprintf(t + strlen(t), sizeof(t) - strlen(t), " (redirects are not followed)");
		result(j, 451, "4.0.0", t);
	}
	goto out;
oom:
	result(j, 451, "4.3.0", "out of memory");
out:
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	curl_slist_free_all(resolve);
	curl_free(host);
	curl_free(scheme);
	curl_free(port);
	curl_url_cleanup(u);
	mxf_sb_free(&body);
	free(msg);
}
