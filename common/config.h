/* config: the one INI reader every program shares. A table in config.c names
 * every key with its type, default and bounds; unknown keys and out-of-range
 * values are errors, so a typo never silently falls back to a default. */
#ifndef MXF_CONFIG_H
#define MXF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct mxf_config;

/* Loads path. Relative paths in the file are resolved against the file's own
 * directory. On error returns negative errno and writes a one-line reason. */
int mxf_config_load(const char *path, struct mxf_config **out, char *err, size_t errlen);
void mxf_config_free(struct mxf_config *cfg);

/* Getters abort on a key missing from the table: that is a bug, not input. */
const char *mxf_config_str(const struct mxf_config *cfg, const char *section, const char *key);
long long mxf_config_int(const struct mxf_config *cfg, const char *section, const char *key);
bool mxf_config_bool(const struct mxf_config *cfg, const char *section, const char *key);
/* Absolute path of the loaded file. */
const char *mxf_config_file(const struct mxf_config *cfg);
/* Prints every effective value as INI. */
void mxf_config_dump(const struct mxf_config *cfg, FILE *out);

/* The i-th known key (0, 1, ...; -ENOENT past the last): effective value,
 * built-in default, and whether the file changed it. */
struct mxf_config_item {
	const char *section, *key, *value, *def;
	bool changed, reloadable;
};
int mxf_config_entry(const struct mxf_config *cfg, size_t i, struct mxf_config_item *out);

/* Parses "host:port" / "[v6]:port" into host (brackets removed) and port. */
int mxf_config_split_hostport(const char *in, char *host, size_t hostlen, unsigned *port);

/* "addr:port" / "[v6]:port" with a numeric address into a socket address:
 * -EINVAL for a bad form, -EAFNOSUPPORT when the host is not an IP address. */
struct sockaddr_storage;
int mxf_config_sockaddr(const char *in, struct sockaddr_storage *ss, unsigned *sslen);

/* Whether apid runs: [api] listen is neither empty nor "off". */
bool mxf_api_enabled(const struct mxf_config *cfg);

#endif
