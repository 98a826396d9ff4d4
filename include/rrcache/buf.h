/*
 * buf: bounded text output and the escaping writers that every string from the network goes
 * through before it reaches metrics, JSON, HTML or a log line: Prometheus label values, JSON
 * strings, and DNS names in presentation format. Pure; writes into a caller's memory only.
 */
#ifndef RRCACHE_BUF_H
#define RRCACHE_BUF_H

#include "rrcache/defs.h"

/* A bounded output buffer: writes past cap are dropped and remembered. */
struct rrc_buf {
	char *p;
	size_t len, cap;
	bool overflow;
};

void rrc_buf_put(struct rrc_buf *b, const char *s, size_t n);
__attribute__((format(printf, 2, 3))) void rrc_buf_printf(struct rrc_buf *b, const char *fmt, ...);
/* A Prometheus label value (text format 0.0.4): backslash, double quote and newline escaped;
 * other bytes kept, invalid UTF-8 replaced by U+FFFD so the text stays valid UTF-8. */
void rrc_buf_prom_label(struct rrc_buf *b, const uint8_t *s, size_t n);
/* A JSON string with its quotes: ", \ and control bytes escaped, </ written <\/ (safe inside
 * HTML), invalid UTF-8 replaced by U+FFFD. */
void rrc_buf_json_string(struct rrc_buf *b, const uint8_t *s, size_t n);
/* A wire-form name into presentation format ("www.example.com."), bytes outside printable
 * ASCII and the special characters . \ " ; ( ) @ $ and space as \DDD or \c (RFC 4343). Writes
 * at most cap - 1 bytes plus NUL into out; returns the length. */
size_t rrc_buf_name_text(const uint8_t *name, size_t len, char *out, size_t cap);

#endif
