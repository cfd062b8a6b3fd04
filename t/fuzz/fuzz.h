/* Helpers shared by the libFuzzer targets (t/fuzz/fuzz_*.c).
 *
 * Push parsers must give the same result however the input is cut into
 * reads, so several targets feed the same bytes twice: whole, and in chunks
 * whose sizes come from a seed taken off the front of the input. */
#ifndef MXF_FUZZ_H
#define MXF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed property is a bug like a crash: abort so libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                                  \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                   \
			abort();                                                          \
		}                                                                         \
	} while (0)

struct fuzz_chunker {
	uint32_t state;
};

static inline void fuzz_chunker_init(struct fuzz_chunker *c, uint32_t seed)
{
	c->state = seed * 2654435761u + 1;
}

/* Next chunk size in 1..max (xorshift; small sizes are likely, so a CR and
 * its LF often land in different reads). */
static inline size_t fuzz_chunk(struct fuzz_chunker *c, size_t max)
{
	uint32_t x = c->state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	c->state = x;
	size_t n = (x & 3) == 0 ? (x >> 8) % 64 + 1 : (x >> 8) % 4 + 1;
	return n < max ? n : max;
}

/* A NUL-terminated copy (malloc'd), stopping at the first NUL of data. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#endif
