/* mxferryctl: the administration command line (DESIGN.md §1).
 *
 *   mxferryctl [-c CONFIG] COMMAND ...
 *
 * Exit status: 0 done; 1 the request was refused or failed (one line
 * "mxferryctl: reason" on stderr); 2 usage error. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctl.h"

#define DEFAULT_CONFIG "/etc/mxferry/mxferry.conf"

static const char usage_text[] =
	"usage: mxferryctl [-c CONFIG] COMMAND ...\n"
	"  -c CONFIG   configuration file (default " DEFAULT_CONFIG ")\n"
	"\n"
	"commands:\n"
	"  domain add DOMAIN                        add a domain (U-label or A-label)\n"
	"  domain list\n"
	"  domain set DOMAIN subaddressing on|off   user+tag@ falls back to user@\n"
	"  domain set DOMAIN unverified defer|reject  unverified destinations: queue or refuse\n"
	"  address add EMAIL [--verified]           add a destination address\n"
	"  address verify|unverify EMAIL\n"
	"  address list\n"
	"  rule add DOMAIN (--to ADDRESS | --match PATTERN)\n"
	"           (--forward DEST[,DEST...] | --drop | --reject TEXT | --worker PROGRAM)\n"
	"           [--name NAME] [--priority P] [--disabled]   prints the new rule's tag\n"
	"  rule list\n"
	"  rule show|remove|enable|disable TAG|NAME\n"
	"  catchall set DOMAIN (--forward DEST[,DEST...] | --drop | --reject TEXT | --worker P)\n"
	"  transport set DOMAIN HOST:PORT|[ADDR]:PORT   next hop for mail to DOMAIN\n"
	"  transport remove DOMAIN\n"
	"  queue list                               messages in the queue\n"
	"  queue show ID                            one message in detail\n"
	"  queue hold|release|delete|retry ID...    act at once (through the router)\n"
	"  queue flush                              retry everything deferred now\n"
	"  status                                   daemons, queue sizes, listeners\n"
	"  config                                   the effective configuration\n";

int ctl_usage(void)
{
	fputs(usage_text, stderr);
	return CTL_USAGE;
}

static int cmd_config(const struct mxf_config *cfg, int argc, char **argv)
{
	(void)argv;
	if (argc != 0)
		return ctl_usage();
	mxf_config_dump(cfg, stdout);
	return CTL_OK;
}

static const struct {
	const char *name;
	int (*fn)(const struct mxf_config *cfg, int argc, char **argv);
} commands[] = {
	{"domain", ctl_domain}, {"address", ctl_address}, {"rule", ctl_rule},
	{"catchall", ctl_catchall}, {"queue", ctl_queue}, {"status", ctl_status},
	{"transport", ctl_transport},
	{"config", cmd_config},
};

int main(int argc, char **argv)
{
	const char *config = DEFAULT_CONFIG;
	int i = 1;

	/* Dates in the local format of the user's time zone; text stays bytes. */
	setlocale(LC_TIME, "");
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage_text, stdout);
			return CTL_OK;
		}
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			config = argv[++i];
		} else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2] != '\0') {
			config = argv[i] + 2;
		} else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else {
			return ctl_usage();
		}
	}
	if (i >= argc)
		return ctl_usage();

	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		if (strcmp(argv[i], commands[k].name) != 0)
			continue;
		char err[512];
		struct mxf_config *cfg = NULL;
		if (mxf_config_load(config, &cfg, err, sizeof(err)) < 0)
			return ctl_fail("%s", err);
		int rc = commands[k].fn(cfg, argc - i - 1, argv + i + 1);
		mxf_config_free(cfg);
		if (fflush(stdout) != 0 && rc == CTL_OK)
			rc = ctl_fail("cannot write the output");
		return rc;
	}
	return ctl_usage();
}
