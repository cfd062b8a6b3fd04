/* The command line splitter (common/smtp.h) in front of the command parser,
 * as smtpd uses them: the sequence of lines must not depend on how the bytes
 * were cut into reads, and no line may hold a line end or exceed the limit. */
#include "fuzz.h"
#include "smtp.h"

struct ev {
	int res;
	size_t len;
	char *line;
};

struct evs {
	struct ev *v;
	size_t n, cap;
};

static void push(struct evs *e, int res, const char *line, size_t len)
{
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 16;
		e->v = realloc(e->v, e->cap * sizeof(*e->v));
		if (!e->v)
			abort();
	}
	char *copy = NULL;
	if (line) {
		copy = malloc(len + 1);
		memcpy(copy, line, len + 1);
	}
	e->v[e->n++] = (struct ev){res, len, copy};
}

static void run(const uint8_t *in, size_t n, struct fuzz_chunker *ch, struct evs *e)
{
	struct mxf_smtp_lines ls;
	mxf_smtp_lines_init(&ls);
	size_t pos = 0;
	while (pos < n) {
		size_t len = ch ? fuzz_chunk(ch, n - pos) : n - pos;
		const char *p = (const char *)in + pos;
		size_t left = len;
		while (left > 0) {
			const char *line = NULL;
			size_t linelen = 0;
			size_t before = left;
			enum mxf_smtp_line_result r = mxf_smtp_lines_next(&ls, &p, &left, &line, &linelen);
			FUZZ_CHECK(left <= before);
			if (r == MXF_SMTP_LINE_MORE) {
				FUZZ_CHECK(left == 0);
				break;
			}
			FUZZ_CHECK(left < before);
			if (r == MXF_SMTP_LINE_OK || r == MXF_SMTP_LINE_BARE_LF) {
				FUZZ_CHECK(line != NULL && line[linelen] == '\0');
				/* The limit counts the terminator: CRLF is two octets, LF one. */
				FUZZ_CHECK(linelen <= MXF_SMTP_LINE_MAX -
							      (r == MXF_SMTP_LINE_OK ? 2 : 1));
				FUZZ_CHECK(memchr(line, '\n', linelen) == NULL);
				if (r == MXF_SMTP_LINE_OK) {
					struct mxf_smtp_cmd cmd;
					(void)mxf_smtp_parse_cmd(line, linelen, &cmd);
				}
				push(e, r, line, linelen);
			} else {
				FUZZ_CHECK(r == MXF_SMTP_LINE_TOO_LONG);
				push(e, r, NULL, 0);
			}
		}
		pos += len;
	}
}

static void evs_free(struct evs *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].line);
	free(e->v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	struct fuzz_chunker ch;
	fuzz_chunker_init(&ch, (uint32_t)data[0] << 8 | data[1]);
	struct evs whole = {0}, chunked = {0};
	run(data + 2, size - 2, NULL, &whole);
	run(data + 2, size - 2, &ch, &chunked);
	FUZZ_CHECK(whole.n == chunked.n);
	for (size_t i = 0; i < whole.n; i++) {
		FUZZ_CHECK(whole.v[i].res == chunked.v[i].res);
		FUZZ_CHECK(whole.v[i].len == chunked.v[i].len);
		if (whole.v[i].line)
			FUZZ_CHECK(memcmp(whole.v[i].line, chunked.v[i].line, whole.v[i].len) == 0);
	}
	evs_free(&whole);
	evs_free(&chunked);
	return 0;
}
