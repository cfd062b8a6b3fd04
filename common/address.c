#include "address.h"

#include <ctype.h>
#include <errno.h>
#include <idn2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_atext(unsigned char c, unsigned flags)
{
	if (c >= 0x80)
		return (flags & MXF_ADDR_UTF8) != 0;
	return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool ascii_only(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

int mxf_domain_to_ascii(const char *in, char *out, size_t outlen)
{
	char *ace = NULL;
	char buf[MXF_DOMAIN_MAX + 1];

	if (strlen(in) > MXF_DOMAIN_MAX * 4)
		return -ENAMETOOLONG;
	if (ascii_only(in)) {
		if (strlen(in) >= sizeof(buf))
			return -ENAMETOOLONG;
		size_t i;
		for (i = 0; in[i]; i++)
			buf[i] = (char)tolower((unsigned char)in[i]);
		buf[i] = '\0';
	} else {
		int rc = idn2_to_ascii_8z(in, &ace, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
		if (rc != IDN2_OK)
			return rc == IDN2_TOO_BIG_DOMAIN || rc == IDN2_TOO_BIG_LABEL ? -ENAMETOOLONG
										     : -EINVAL;
		if (strlen(ace) >= sizeof(buf)) {
			idn2_free(ace);
			return -ENAMETOOLONG;
		}
		strcpy(buf, ace);
		idn2_free(ace);
	}
	/* Hostname syntax: LDH labels, no leading/trailing hyphen, not empty. */
	size_t len = strlen(buf);
	if (len == 0)
		return -EINVAL;
	if (len > 253)
		return -ENAMETOOLONG;
	size_t lab = 0;
	for (size_t i = 0; i <= len; i++) {
		char c = buf[i];
		if (c == '.' || c == '\0') {
			if (lab == 0 || buf[i - 1] == '-')
				return -EINVAL;
			if (lab > 63)
				return -ENAMETOOLONG;
			lab = 0;
			continue;
		}
		if (!(isalnum((unsigned char)c) || c == '-'))
			return -EINVAL;
		if (lab == 0 && c == '-')
			return -EINVAL;
		lab++;
	}
	if (len + 1 > outlen)
		return -ENAMETOOLONG;
	memcpy(out, buf, len + 1);
	return 0;
}

int mxf_domain_to_unicode(const char *in, char *out, size_t outlen)
{
	char *u = NULL;
	if (idn2_to_unicode_8z8z(in, &u, 0) == IDN2_OK && strlen(u) < outlen) {
		strcpy(out, u);
		idn2_free(u);
		return 0;
	}
	idn2_free(u);
	if (strlen(in) >= outlen)
		return -ENAMETOOLONG;
	strcpy(out, in);
	return 0;
}

int mxf_addr_parse(const char *in, unsigned flags, char *local, size_t locallen, char *domain,
		   size_t domlen)
{
	const char *p = in;
	size_t ll;

	if (*p == '"') {
		/* quoted-string: qtext or quoted-pair, no CR/LF/NUL */
		p++;
		while (*p && *p != '"') {
			if (*p == '\\') {
				p++;
				if ((unsigned char)*p < 0x20 || *p == 0x7f)
					return -EINVAL;
			} else if ((unsigned char)*p < 0x20 || *p == 0x7f ||
				   ((unsigned char)*p >= 0x80 && !(flags & MXF_ADDR_UTF8))) {
				return -EINVAL;
			}
			p++;
		}
		if (*p != '"')
			return -EINVAL;
		p++;
	} else {
		/* dot-atom: atoms separated by single dots */
		const char *start = p;
		bool prev_dot = true;
		while (*p && *p != '@') {
			if (*p == '.') {
				if (prev_dot)
					return -EINVAL;
				prev_dot = true;
			} else if (is_atext((unsigned char)*p, flags)) {
				prev_dot = false;
			} else {
				return -EINVAL;
			}
			p++;
		}
		if (p == start || prev_dot)
			return -EINVAL;
	}
	if (*p != '@')
		return -EINVAL;
	ll = (size_t)(p - in);
	if (ll > MXF_LOCAL_MAX)
		return -ENAMETOOLONG;
	if (ll + 1 > locallen)
		return -ENAMETOOLONG;
	p++;
	if (strlen(p) > MXF_DOMAIN_MAX)
		return -ENAMETOOLONG;
	int r = mxf_domain_to_ascii(p, domain, domlen);
	if (r < 0)
		return r;
	memcpy(local, in, ll);
	local[ll] = '\0';
	return 0;
}

int mxf_addr_normalize(const char *in, unsigned flags, char *out, size_t outlen)
{
	char local[MXF_LOCAL_MAX + 1], domain[MXF_DOMAIN_MAX + 1];
	int r = mxf_addr_parse(in, flags, local, sizeof(local), domain, sizeof(domain));
	if (r < 0)
		return r;
	int n = snprintf(out, outlen, "%s@%s", local, domain);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}
