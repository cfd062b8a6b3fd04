/* The SMTP command parser and reply formatter (common/smtp.h): one command
 * line per input. Whatever the bytes, a parse either fails with a valid reply
 * or yields fields without bytes that could split a line or an envelope. */
#include "fuzz.h"
#include "smtp.h"

#include <errno.h>

/* No byte that could split a line; 8-bit only as well-formed UTF-8 (RFC 6531
 * paths, when the parser takes them) and only where utf8 says so. */
static void check_clean(const char *s, size_t cap, bool utf8)
{
	size_t n = strnlen(s, cap);
	FUZZ_CHECK(n < cap);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		FUZZ_CHECK(c != '\r' && c != '\n');
		if (c < 0x80)
			continue;
		FUZZ_CHECK(utf8);
		size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
		FUZZ_CHECK(c >= 0xc2 && c <= 0xf4 && i + len <= n);
		for (size_t k = 1; k < len; k++)
			FUZZ_CHECK(((unsigned char)s[i + k] & 0xc0) == 0x80);
		i += len - 1;
	}
}

static void check_reply(int code, bool more, const char *esc, const char *text)
{
	char buf[MXF_SMTP_LINE_MAX + 1];
	int n = mxf_smtp_reply_line(buf, sizeof(buf), code, more, esc, text);
	FUZZ_CHECK(n > 2 && (size_t)n <= MXF_SMTP_LINE_MAX);
	FUZZ_CHECK(buf[n - 2] == '\r' && buf[n - 1] == '\n');
	for (int i = 0; i < n - 2; i++)
		FUZZ_CHECK(buf[i] >= 0x20 && buf[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mxf_smtp_cmd cmd;
	int r = mxf_smtp_parse_cmd((const char *)data, size, &cmd);
	FUZZ_CHECK(cmd.verb >= MXF_SMTP_UNKNOWN && cmd.verb < MXF_SMTP_NVERBS);
	FUZZ_CHECK(mxf_smtp_verb_name(cmd.verb) != NULL);
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL);
		FUZZ_CHECK(cmd.err.code >= 500 && cmd.err.code <= 599);
		FUZZ_CHECK(mxf_smtp_reply_valid(cmd.err.code, cmd.err.esc));
		check_reply(cmd.err.code, false, cmd.err.esc, cmd.err.text);
	} else {
		FUZZ_CHECK(r == 0);
		FUZZ_CHECK(cmd.verb != MXF_SMTP_UNKNOWN);
		check_clean(cmd.arg, sizeof(cmd.arg), true);
		check_clean(cmd.path, sizeof(cmd.path), cmd.utf8_path);
		if (cmd.verb == MXF_SMTP_MAIL || cmd.verb == MXF_SMTP_RCPT)
			FUZZ_CHECK(!cmd.null_path || cmd.path[0] == '\0');
	}
	/* The formatter with hostile text: still one printable line. */
	char *text = fuzz_cstr(data, size);
	check_reply(size ? 200 + data[0] % 400 : 250, size > 1 && (data[1] & 1), NULL, text);
	check_reply(451, false, "4.3.0", text);
	free(text);
	return 0;
}
