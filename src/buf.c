/*
 * buf: bounded text output and escaping. See include/rrcache/buf.h.
 */
#include "rrcache/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void rrc_buf_put(struct rrc_buf *b, const char *s, size_t n)
{
	if (b->overflow || n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void rrc_buf_printf(struct rrc_buf *b, const char *fmt, ...)
{
	if (b->overflow)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= b->cap - b->len) {
		b->overflow = true;
		return;
	}
	b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes are not one. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	size_t len;
	uint32_t min;
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0) {
		len = 2;
		min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		len = 3;
		min = 0x800;
	} else if ((c & 0xF8) == 0xF0) {
		len = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	uint32_t cp = c & (0x7F >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Copies the valid UTF-8 sequence at s[i], or U+FFFD for a byte that starts none. Returns how
 * many bytes it took. */
static size_t put_utf8(struct rrc_buf *b, const uint8_t *s, size_t i, size_t n)
{
	size_t l = utf8_len(s + i, n - i);
	if (l == 0) {
		rrc_buf_put(b, replacement, 3);
		return 1;
	}
	rrc_buf_put(b, (const char *)s + i, l);
	return l;
}

void rrc_buf_prom_label(struct rrc_buf *b, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		if (c == '\\' || c == '"') {
			char esc[2] = {'\\', (char)c};
			rrc_buf_put(b, esc, 2);
			i++;
		} else if (c == '\n') {
			rrc_buf_put(b, "\\n", 2);
			i++;
		} else {
			i += put_utf8(b, s, i, n);
		}
	}
}

void rrc_buf_json_string(struct rrc_buf *b, const uint8_t *s, size_t n)
{
	rrc_buf_put(b, "\"", 1);
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			rrc_buf_put(b, esc, 2);
			i++;
		} else if (c == '/' && i > 0 && s[i - 1] == '<') {
			rrc_buf_put(b, "\\/", 2); /* "</script>" cannot end a script element */
			i++;
		} else if (c < 0x20 || c == 0x7F) {
			rrc_buf_printf(b, "\\u%04x", c);
			i++;
		} else {
			i += put_utf8(b, s, i, n);
		}
	}
	rrc_buf_put(b, "\"", 1);
}

size_t rrc_buf_name_text(const uint8_t *name, size_t len, char *out, size_t cap)
{
	size_t o = 0, i = 0;
	if (cap == 0)
		return 0;
	while (i < len && name[i] != 0) {
		size_t l = name[i++];
		if (l > 63 || i + l > len)
			break;
		for (size_t k = 0; k < l; k++, i++) {
			uint8_t c = name[i];
			char tmp[5];
			size_t tl;
			if (c <= 0x20 || c >= 0x7F) {
				tl = (size_t)snprintf(tmp, sizeof(tmp), "\\%03u", c);
			} else if (strchr(".\\\";()@$", c)) {
				tmp[0] = '\\';
				tmp[1] = (char)c;
				tl = 2;
			} else {
				tmp[0] = (char)c;
				tl = 1;
			}
			if (o + tl + 1 >= cap)
				goto done;
			memcpy(out + o, tmp, tl);
			o += tl;
		}
		if (o + 2 >= cap)
			goto done;
		out[o++] = '.';
	}
	if (o == 0 && cap > 1)
		out[o++] = '.';
done:
	out[o] = '\0';
	return o;
}
