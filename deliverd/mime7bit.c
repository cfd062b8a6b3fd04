#include "mime7bit.h"

#include <errno.h>
#include <gmime/gmime.h>
#include <iconv.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* GMime keeps process-wide charset and iconv caches; conversions are rare
 * (only for peers without 8BITMIME), so one lock is simpler than proving
 * which of its calls are safe to run concurrently. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void mime7bit_init(void)
{
	g_mime_init();
}

bool mime7bit_is_8bit(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] & 0x80)
			return true;
	return false;
}

/* Raw 8-bit header text becomes RFC 2047 encoded words (RFC 6152 does not
 * allow 8-bit headers without 8BITMIME any more than 8-bit bodies). */
static void encode_headers(GMimeObject *obj)
{
	GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
	int n = g_mime_header_list_get_count(hl);
	for (int i = 0; i < n; i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		const char *raw = g_mime_header_get_raw_value(h);
		if (!raw || !mime7bit_is_8bit(raw, strlen(raw)))
			continue;
		/* Re-encoded as UTF-8 words: glibc converts UTF-8 with built-in
		 * code, whereas other charsets need gconv modules that a
		 * chrooted deliverd cannot load. */
		const char *val = g_mime_header_get_value(h); /* decoded, UTF-8 */
		char *copy = g_strdup(val ? val : "");
		g_mime_header_set_value(h, NULL, copy, "utf-8");
		g_free(copy);
	}
}

static void each_part(GMimeObject *parent, GMimeObject *part, gpointer data)
{
	(void)parent;
	(void)data;
	encode_headers(part);
	if (GMIME_IS_MESSAGE_PART(part)) {
		GMimeMessage *m = g_mime_message_part_get_message((GMimeMessagePart *)part);
		if (m)
			encode_headers((GMimeObject *)m);
	}
}

int mime7bit_convert(const char *in, size_t len, char **out, size_t *outlen)
{
	int rc = -EINVAL;

	pthread_mutex_lock(&lock);
	GMimeStream *src = g_mime_stream_mem_new_with_buffer(in, len);
	GMimeParser *parser = g_mime_parser_new_with_stream(src);
	GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
	GMimeStream *dst = NULL;
	if (!msg)
		goto out;
	GMimeObject *body = g_mime_message_get_mime_part(msg);
	if (body && GMIME_IS_PART(body) && !g_mime_object_get_header(body, "Content-Type")) {
		/* No MIME structure: RFC 2045 would read it as US-ASCII text,
		 * which 8-bit bytes are not. UTF-8 is the only sane guess. */
		g_mime_object_set_content_type_parameter(body, "charset", "utf-8");
		g_mime_part_set_content_encoding((GMimePart *)body,
						 GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
	}
	if (!g_mime_object_get_header((GMimeObject *)msg, "MIME-Version"))
		g_mime_object_set_header((GMimeObject *)msg, "MIME-Version", "1.0", NULL);
	/* Every leaf whose content is not 7-bit gets QP or base64. */
	g_mime_object_encode((GMimeObject *)msg, GMIME_ENCODING_CONSTRAINT_7BIT);
	encode_headers((GMimeObject *)msg);
	g_mime_message_foreach(msg, each_part, NULL);

	dst = g_mime_stream_mem_new();
	if (g_mime_object_write_to_stream((GMimeObject *)msg, NULL, dst) < 0)
		goto out;
	GByteArray *ba = g_mime_stream_mem_get_byte_array((GMimeStreamMem *)dst);
	char *buf = malloc(ba->len ? ba->len : 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(buf, ba->data, ba->len);
	*out = buf;
	*outlen = ba->len;
	rc = 0;
out:
	if (dst)
		g_object_unref(dst);
	if (msg)
		g_object_unref(msg);
	g_object_unref(parser);
	g_object_unref(src);
	pthread_mutex_unlock(&lock);
	return rc;
}
