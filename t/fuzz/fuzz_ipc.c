/* The IPC frame decoder (common/ipc.h): a datagram from a compromised peer.
 * Decoding is strict; every accessor of a decoded view stays in bounds, and
 * a view's fields rebuilt into a message decode to the same fields. */
#include "fuzz.h"
#include "ipc.h"

#include <errno.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mxf_ipc_view *v = NULL;
	int r = mxf_ipc_decode(data, size, &v);
	if (r < 0) {
		FUZZ_CHECK(r == -EBADMSG);
		return 0;
	}
	FUZZ_CHECK(size <= MXF_IPC_MAX);
	struct mxf_ipc_msg *m = mxf_ipc_msg_new(mxf_ipc_type(v));
	FUZZ_CHECK(m != NULL);
	/* Rebuild the string and u64 fields, tag by tag (order across tags is
	 * lost, which the format allows). */
	for (uint16_t tag = 0; tag < F_TAG_MAX + 2; tag++) {
		size_t n = mxf_ipc_count(v, tag);
		for (size_t i = 0; i < n + 1; i++) {
			const char *s = mxf_ipc_str(v, tag, i);
			uint64_t u = 0;
			int ur = mxf_ipc_u64(v, tag, i, &u);
			if (i == n) {
				FUZZ_CHECK(s == NULL && ur == -ENOENT);
				continue;
			}
			FUZZ_CHECK(ur == 0 || ur == -EBADMSG);
			if (s)
				FUZZ_CHECK(mxf_ipc_put_str(m, tag, s) == 0);
			else if (ur == 0)
				FUZZ_CHECK(mxf_ipc_put_u64(m, tag, u) == 0);
		}
	}
	size_t len = 0;
	const uint8_t *buf = mxf_ipc_msg_data(m, &len);
	struct mxf_ipc_view *v2 = NULL;
	FUZZ_CHECK(mxf_ipc_decode(buf, len, &v2) == 0);
	FUZZ_CHECK(mxf_ipc_type(v2) == mxf_ipc_type(v));
	for (uint16_t tag = 0; tag < F_TAG_MAX + 2; tag++) {
		size_t n = mxf_ipc_count(v, tag);
		for (size_t i = 0; i < n; i++) {
			const char *s = mxf_ipc_str(v, tag, i);
			if (s) {
				const char *s2 = NULL;
				for (size_t j = 0; j < mxf_ipc_count(v2, tag) && !s2; j++) {
					const char *c = mxf_ipc_str(v2, tag, j);
					if (c && strcmp(c, s) == 0)
						s2 = c;
				}
				FUZZ_CHECK(s2 != NULL);
			}
		}
	}
	mxf_ipc_view_free(v2);
	mxf_ipc_msg_free(m);
	mxf_ipc_view_free(v);
	return 0;
}
