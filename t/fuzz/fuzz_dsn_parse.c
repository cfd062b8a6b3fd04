/* The returned-bounce parser (mxf_dsn_parse) fed hostile mail: whatever
 * anyone sends to one of our SRS addresses. Properties: it returns 0 or
 * -ENOENT; every string it copies out is NUL-terminated inside its buffer
 * and printable ASCII (so the router can log and store it as is); a queue
 * ID is either empty or valid; nothing but the queue ID is reported for a
 * message that is not a delivery report; parsing is deterministic. And a
 * notification built by mxf_dsn_build from the same bytes is always
 * recognised as a report. */
#include <errno.h>

#include "dsn.h"
#include "fuzz.h"

static void check_str(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	FUZZ_CHECK(n < cap);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(s[i] >= 0x20 && s[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so ASan sees any read past the end. */
	char *msg = malloc(size ? size : 1);
	memcpy(msg, data, size);
	struct mxf_dsn_info a, b;
	int r = mxf_dsn_parse(msg, size, "mx.gateway.test", &a);
	FUZZ_CHECK(r == 0 || r == -ENOENT);
	check_str(a.qid, sizeof(a.qid));
	check_str(a.message_id, sizeof(a.message_id));
	check_str(a.rcpt, sizeof(a.rcpt));
	check_str(a.action, sizeof(a.action));
	check_str(a.status, sizeof(a.status));
	check_str(a.remote_mta, sizeof(a.remote_mta));
	check_str(a.diagnostic, sizeof(a.diagnostic));
	FUZZ_CHECK(!a.qid[0] || mxf_qid_valid(a.qid));
	FUZZ_CHECK((r == 0) == (a.is_report || a.qid[0]));
	if (!a.is_report)
		FUZZ_CHECK(!a.rcpt[0] && !a.status[0] && !a.diagnostic[0] && !a.remote_mta[0] &&
			   !a.action[0]);
	FUZZ_CHECK(mxf_dsn_parse(msg, size, "mx.gateway.test", &b) == r);
	FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);

	/* Round trip: the input as remote reply text and as the returned
	 * header block of a DSN of ours. */
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	struct mxf_dsn_rcpt rc = {"bob@dest.test", "rfc822;info@gw.test", "5.1.1", text, text,
				  NULL, 0};
	struct mxf_dsn d = {.reporting_mta = "mx.gateway.test",
			    .qid = "0DQ5ZK3M0000AB12CD34EF56GH",
			    .sender = "alice@sender.test",
			    .arrival = 1700000000,
			    .now = 1700000100,
			    .rcpt = &rc,
			    .nrcpt = 1,
			    .headers = msg,
			    .headers_len = mxf_dsn_header_len(msg, size, 65536),
			    .full = msg,
			    .full_len = size,
			    .utf8 = size % 2};
	char *out = NULL;
	size_t outlen = 0;
	FUZZ_CHECK(mxf_dsn_build(&d, &out, &outlen) == 0);
	FUZZ_CHECK(mxf_dsn_parse(out, outlen, "mx.gateway.test", &a) == 0);
	FUZZ_CHECK(a.is_report);
	FUZZ_CHECK(strcmp(a.rcpt, "bob@dest.test") == 0 && strcmp(a.status, "5.1.1") == 0);
	free(out);
	free(text);
	free(msg);
	return 0;
}
