/* queueid: time-sortable queue IDs, the only name a message has.
 * 26 characters of Crockford base32: 48 bits of milliseconds, then 80 random
 * bits (OpenSSL's CSPRNG), so IDs never collide and sort by arrival. Every
 * program checks IDs it reads (from IPC, a file name, a command line) with
 * mxf_qid_valid before using them in a path. */
#ifndef MXF_QUEUEID_H
#define MXF_QUEUEID_H

#include <stdbool.h>
#include <stdint.h>

#define MXF_QID_LEN 26
#define MXF_QID_SIZE (MXF_QID_LEN + 1)

int mxf_qid_new(char out[MXF_QID_SIZE]);
/* For tests: an ID from explicit parts. */
void mxf_qid_make(char out[MXF_QID_SIZE], uint64_t ms, const uint8_t rnd[10]);
bool mxf_qid_valid(const char *s);
/* Milliseconds since the epoch encoded in a valid ID. */
uint64_t mxf_qid_time_ms(const char *qid);

#endif
