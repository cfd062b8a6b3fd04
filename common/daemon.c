#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc.h"
#include "log.h"
#include "privdrop.h"

struct mxf_config *mxf_daemon_init(int argc, char **argv, const char *name)
{
	const char *path = NULL;
	int use_syslog = 0, c;
	struct mxf_config *cfg;
	char err[512];

	while ((c = getopt(argc, argv, "c:s")) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 's': use_syslog = 1; break;
		default:
			fprintf(stderr, "usage: %s -c CONFIG [-s]\n", name);
			exit(2);
		}
	}
	mxf_log_init(name, use_syslog);
	if (!path) {
		fprintf(stderr, "usage: %s -c CONFIG [-s]\n", name);
		exit(2);
	}
	if (mxf_config_load(path, &cfg, err, sizeof(err)) < 0)
		mxf_fatal("%s", err);
	if (strcmp(mxf_config_str(cfg, "main", "log_level"), "debug") == 0)
		mxf_log_set_level(MXF_LOG_DEBUG);
	return cfg;
}

int mxf_daemon_router_sock(const struct mxf_config *cfg, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/private/%s", mxf_config_str(cfg, "main", "spool_dir"),
			 MXF_IPC_ROUTER_SOCK);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

void mxf_daemon_drop(const struct mxf_config *cfg, const char *section, bool chroot_private,
		     char *sock, size_t socklen)
{
	char priv[4096];
	bool dev = mxf_config_bool(cfg, "main", "run_as_invoking_user");

	if (mxf_daemon_router_sock(cfg, sock, socklen) < 0)
		mxf_fatal("router socket path too long");
	snprintf(priv, sizeof(priv), "%s/private", mxf_config_str(cfg, "main", "spool_dir"));
	/* Not root: nothing to drop to; the master has said so in its log. */
	if (dev || !mxf_privdrop_capable()) {
		if (mxf_privdrop(NULL, NULL) < 0)
			mxf_fatal("cannot restrict process");
		return;
	}
	if (mxf_privdrop(mxf_config_str(cfg, section, "user"), chroot_private ? priv : NULL) < 0)
		mxf_fatal("cannot drop privileges");
	if (chroot_private)
		snprintf(sock, socklen, "/%s", MXF_IPC_ROUTER_SOCK);
}
