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
	"usage: mxferryctl [-c CONFIG] [--json] COMMAND ...\n"
	"  -c CONFIG   configuration file (default " DEFAULT_CONFIG ")\n"
	"  --json      machine output: one JSON document on stdout (also after the command)\n"
	"\n"
	"commands:\n"
	"  domain add DOMAIN                        add a domain (U-label or A-label)\n"
	"  domain list\n"
	"  domain remove|enable|disable DOMAIN      remove drops the domain's rules too\n"
	"  domain set DOMAIN subaddressing on|off   user+tag@ falls back to user@\n"
	"  domain set DOMAIN unverified defer|reject  unverified destinations: queue or refuse\n"
	"  domain set DOMAIN dmarc enforce|monitor|default  refuse DMARC p=reject failures or not\n"
	"  address add EMAIL [--verified]           add a destination address; without\n"
	"                                           --verified it is mailed a one-time code\n"
	"  address verify EMAIL CODE                the code from that mail\n"
	"  address resend EMAIL                     a new code (the old one stops working)\n"
	"  address verify|unverify EMAIL            the operator vouches / withdraws\n"
	"  address list\n"
	"  address remove EMAIL                     refused while a rule forwards to it\n"
	"  rule add DOMAIN (--to ADDRESS | --match PATTERN) [--from SENDER[,SENDER...]]...\n"
	"           (--forward DEST[,DEST...]... | --drop | --reject TEXT [--code N] |\n"
	"            --worker PROGRAM | --webhook URL)\n"
	"           [--name NAME] [--priority P] [--disabled]   prints the new rule's tag\n"
	"  rule list [DOMAIN]\n"
	"  rule show|remove|enable|disable TAG|NAME\n"
	"  rule edit TAG|NAME [--to A | --match P] [--from S... | --any-sender]\n"
	"           [--forward L... | --drop | --reject T | --worker P | --webhook URL]\n"
	"           [--name N]\n"
	"           [--priority P] [--enable | --disable]\n"
	"  catchall set DOMAIN (--forward DEST[,DEST...] | --drop | --reject TEXT | --worker P |\n"
	"           --webhook URL)\n"
	"  catchall disable DOMAIN                  remove the domain's catch-all\n"
	"  domain dns DOMAIN [--offline]            the DNS records to publish (MX, SPF, DMARC, DKIM,\n"
	"                                           MTA-STS) and whether the live DNS has them\n"
	"  dkim keygen DOMAIN [--selector S] [--algorithm rsa|ed25519] [--disabled]\n"
	"                                           make a signing key (the router keeps it)\n"
	"  dkim list [DOMAIN]\n"
	"  dkim remove|enable|disable DOMAIN SELECTOR\n"
	"  transport set DOMAIN HOST:PORT|[ADDR]:PORT   next hop for mail to DOMAIN\n"
	"  transport remove DOMAIN\n"
	"  worker add NAME (--js FILE | --program PATH) [--env K=V]... [--timeout S] [--network]\n"
	"           [--replace]                     define a worker (a js module is copied)\n"
	"  worker list\n"
	"  worker remove NAME                       refused while a rule names it\n"
	"  worker test NAME --from A --to B < MESSAGE  dry run: prints the decisions\n"
	"  queue list [--state S] [--from X] [--to Y] [--older-than D]\n"
	"                                           messages in the queue\n"
	"  queue show ID [--body]                   one message in detail\n"
	"  queue export ID                          the raw message as it would be sent\n"
	"  queue hold|release|delete|retry ID...|--all  act at once (through the router)\n"
	"  queue flush                              retry everything deferred now\n"
	"  status                                   daemons, queue sizes, listeners\n"
	"  config [--defaults|--changed]            the effective configuration\n"
	"  check                                    validate the configuration and the DBs\n"
	"  audit [--since T] [--limit N]            configuration changes, newest last\n"
	"  log [--since T] [--until T] [--status S] [--from X] [--to Y] [--id QID]\n"
	"      [--limit N] [--follow]               the activity log\n"
	"  stats [--since T] [--by hour|day]        messages per status and bucket,\n"
	"                                           refusals per reason\n"
	"  block add VALUE [--reason TEXT]          refuse a client IP or CIDR range (at\n"
	"                                           connect), a sender domain or address\n"
	"                                           or a HELO domain (at MAIL)\n"
	"  block remove VALUE | block list\n"
	"  allow add|remove VALUE | allow list      IP/CIDR: skip block lists, score and\n"
	"                                           greylisting; sender: skip greylisting\n"
	"  token add NAME [--read-only]             an API token for apid (the secret is\n"
	"                                           printed once; only its hash is kept)\n"
	"  token list | token remove NAME\n"
	"\n"
	"T: 30m, 2h, 7d ago; YYYY-MM-DD[THH:MM[:SS]] local time; @EPOCH\n"
	"exit status: 0 done, 1 refused (reason on stderr), 2 usage error\n";

int ctl_usage(void)
{
	fputs(usage_text, stderr);
	return CTL_USAGE;
}

/* config [--defaults|--changed]: the effective value of every key, the
 * built-in defaults, or only the keys the file changes. */
static int cmd_config(const struct mxf_config *cfg, int argc, char **argv)
{
	int mode = 0; /* 0 effective, 1 defaults, 2 changed */
	if (argc > 1)
		return ctl_usage();
	if (argc == 1) {
		if (strcmp(argv[0], "--defaults") == 0)
			mode = 1;
		else if (strcmp(argv[0], "--changed") == 0)
			mode = 2;
		else
			return ctl_usage();
	}
	if (!ctl_json && mode == 0) {
		mxf_config_dump(cfg, stdout);
		return CTL_OK;
	}
	struct mxf_config_item it;
	const char *sect = NULL;
	if (ctl_json) {
		cj_begin(NULL, false);
		cj_str("file", mxf_config_file(cfg));
		cj_begin("keys", true);
	}
	for (size_t i = 0; mxf_config_entry(cfg, i, &it) == 0; i++) {
		if (mode == 2 && !it.changed)
			continue;
		const char *v = mode == 1 ? it.def : it.value;
		if (ctl_json) {
			cj_begin(NULL, false);
			cj_str("section", it.section);
			cj_str("key", it.key);
			cj_str("value", v);
			cj_str("default", it.def);
			cj_bool("changed", it.changed);
			cj_bool("reloadable", it.reloadable);
			cj_end(false);
			continue;
		}
		if (!sect || strcmp(sect, it.section) != 0)
			printf("%s[%s]\n", sect ? "\n" : "", it.section);
		sect = it.section;
		printf("%s = %s\n", it.key, v);
	}
	if (ctl_json) {
		cj_end(true);
		cj_end(false);
	}
	return CTL_OK;
}

static const struct {
	const char *name;
	int (*fn)(const struct mxf_config *cfg, int argc, char **argv);
} commands[] = {
	{"domain", ctl_domain}, {"address", ctl_address}, {"rule", ctl_rule},
	{"catchall", ctl_catchall}, {"queue", ctl_queue}, {"status", ctl_status},
	{"transport", ctl_transport},
	{"config", cmd_config}, {"audit", ctl_audit}, {"log", ctl_log}, {"stats", ctl_stats},
	{"check", ctl_check}, {"dkim", ctl_dkim}, {"block", ctl_block}, {"allow", ctl_allow},
	{"worker", ctl_worker}, {"token", ctl_token},
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
		} else if (strcmp(argv[i], "--json") == 0) {
			ctl_json = true;
		} else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else {
			return ctl_usage();
		}
	}
	if (i >= argc)
		return ctl_usage();
	/* -c CONFIG and --json are accepted after the command words too
	 * ("mxferryctl queue list --json"); they are taken out before the
	 * command parses its own arguments. An option value that is literally
	 * "--json" must be written --opt=--json. */
	int cargc = 0;
	for (int k = i + 1; k < argc; k++) {
		if (strcmp(argv[k], "--json") == 0) {
			ctl_json = true;
		} else if (strcmp(argv[k], "-c") == 0) {
			if (k + 1 >= argc)
				return ctl_usage();
			config = argv[++k];
		} else {
			argv[i + 1 + cargc++] = argv[k];
		}
	}

	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		if (strcmp(argv[i], commands[k].name) != 0)
			continue;
		char err[512];
		struct mxf_config *cfg = NULL;
		if (mxf_config_load(config, &cfg, err, sizeof(err)) < 0)
			return ctl_fail("%s", err);
		int rc = commands[k].fn(cfg, cargc, argv + i + 1);
		mxf_config_free(cfg);
		if (fflush(stdout) != 0 && rc == CTL_OK)
			rc = ctl_fail("cannot write the output");
		return rc;
	}
	return ctl_usage();
}
