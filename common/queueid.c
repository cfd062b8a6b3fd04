#include "queueid.h"

#include <errno.h>
#include <openssl/rand.h>
#include <string.h>
#include <time.h>

static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static int decode_char(char c)
{
	const char *p = c ? strchr(alphabet, c) : NULL;
	return p ? (int)(p - alphabet) : -1;
}

void mxf_qid_make(char out[MXF_QID_SIZE], uint64_t ms, const uint8_t rnd[10])
{
	/* 128 bits: 48 ms + 80 random, written as 26 chars (2 leading pad bits). */
	uint8_t b[16];
	for (int i = 0; i < 6; i++)
		b[i] = (uint8_t)(ms >> (8 * (5 - i)));
	memcpy(b + 6, rnd, 10);
	int bit = -2; /* the first char carries only 3 bits: 130 - 128 */
	for (int i = 0; i < MXF_QID_LEN; i++) {
		int v = 0;
		for (int k = 0; k < 5; k++, bit++) {
			v <<= 1;
			if (bit >= 0)
				v |= (b[bit / 8] >> (7 - bit % 8)) & 1;
		}
		out[i] = alphabet[v];
	}
	out[MXF_QID_LEN] = '\0';
}

int mxf_qid_new(char out[MXF_QID_SIZE])
{
	uint8_t rnd[10];
	struct timespec ts;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EIO;
	clock_gettime(CLOCK_REALTIME, &ts);
	mxf_qid_make(out, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, rnd);
	return 0;
}

bool mxf_qid_valid(const char *s)
{
	if (!s)
		return false;
	for (int i = 0; i < MXF_QID_LEN; i++)
		if (decode_char(s[i]) < 0)
			return false;
	/* The first character holds the top 3 bits only (the 2 pad bits are 0). */
	return s[MXF_QID_LEN] == '\0' && decode_char(s[0]) < 8;
}

uint64_t mxf_qid_time_ms(const char *qid)
{
	uint64_t v = 0;
	/* The first 10 chars hold 2 pad bits + 48 bits of time. */
	for (int i = 0; i < 10; i++)
		v = v << 5 | (uint64_t)decode_char(qid[i]);
	return v;
}
