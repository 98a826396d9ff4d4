/*
 * form: form-encoded request arguments. See include/rrcache/form.h.
 */
#include "rrcache/form.h"

#include <string.h>

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes n bytes of an application/x-www-form-urlencoded value into out (cap bytes with its
 * NUL). RRC_FORM_BAD for a broken escape, an escaped NUL or a value too long: never a part. */
enum rrc_form_field rrc_form_decode(const char *v, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)v[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			int hi = i + 2 < n ? hex_digit(v[i + 1]) : -1;
			int lo = i + 2 < n ? hex_digit(v[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return RRC_FORM_BAD;
			ch = hi << 4 | lo;
			i += 2;
		}
		if (ch == 0 || o + 1 >= cap)
			return RRC_FORM_BAD;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return RRC_FORM_OK;
}

/* The value of field in an application/x-www-form-urlencoded body, decoded into out. */
enum rrc_form_field rrc_form_value(const char *body, const char *field, char *out, size_t cap)
{
	size_t fl = strlen(field);
	for (const char *p = body; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
		if (strncmp(p, field, fl) != 0 || p[fl] != '=')
			continue;
		const char *v = p + fl + 1;
		return rrc_form_decode(v, strcspn(v, "&"), out, cap);
	}
	return RRC_FORM_ABSENT;
}
