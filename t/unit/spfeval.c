/* spfeval TABLE: evaluates SPF queries through common/spf.c (our record
 * filter, libspf2, our DNS layer) with answers from TABLE ("name<TAB>TYPE
 * <TAB>value" lines, spftable.h), one query per stdin line "ip<TAB>helo<TAB>
 * mailfrom", one result per stdout line. Driven by spf_rfc7208.py with the
 * RFC 7208 test suite. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spf.h"
#include "spftable.h"

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: spfeval TABLE < queries\n");
		return 2;
	}
	FILE *f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	struct spft t = {0};
	char line[8192];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *name = strtok(line, "\t"), *type = strtok(NULL, "\t"), *val = strtok(NULL, "");
		if (name && type)
			spft_add(&t, name, type, val ? val : "");
	}
	fclose(f);
	mxf_spf_global_init();
	struct mxf_spf_dns d = spft_dns(&t);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = '\0';
		char *ip = line, *helo = strchr(ip, '\t'), *from = NULL;
		if (helo) {
			*helo++ = '\0';
			from = strchr(helo, '\t');
			if (from)
				*from++ = '\0';
		}
		enum mxf_spf_result r;
		if (!helo || !from ||
		    mxf_spf_check(&d, ip, helo, from, "receiver.test", &r, NULL, 0) < 0) {
			puts("error");
		} else {
			puts(mxf_spf_result_name(r));
		}
		fflush(stdout);
	}
	spft_free(&t);
	return 0;
}
