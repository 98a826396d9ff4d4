/*
 * form: the arguments of a request to the statistics endpoint, from an
 * application/x-www-form-urlencoded body. Pure. A value is taken whole or refused: a broken
 * %-escape, an escaped NUL or a value too long is an error, never a part of the value (a
 * truncated name must not flush what it happens to name).
 */
#ifndef RRCACHE_FORM_H
#define RRCACHE_FORM_H

#include "rrcache/defs.h"

enum rrc_form_field { RRC_FORM_ABSENT, RRC_FORM_OK, RRC_FORM_BAD };

/* Decodes n bytes of a form-encoded value into out (cap bytes, with its NUL). */
enum rrc_form_field rrc_form_decode(const char *v, size_t n, char *out, size_t cap);

/* The first value of field in body (NUL-terminated), decoded into out. */
enum rrc_form_field rrc_form_value(const char *body, const char *field, char *out, size_t cap);

#endif
