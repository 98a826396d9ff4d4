/*
 * route: a table of domain names, each with a value (an upstream pool, a local zone), and the
 * longest one a query name falls under.
 *
 * Names are lowercased wire form, matched by whole labels: "corp.example" covers
 * "a.corp.example" and "corp.example" itself, never "xcorp.example". The most specific wins:
 * a name's suffixes are looked up from the name itself towards the root, each in an
 * open-addressed table with its full name compared (no false match). Built once, read by
 * every thread. Pure: no uv.h.
 */
#ifndef RRCACHE_ROUTE_H
#define RRCACHE_ROUTE_H

#include "rrcache/defs.h"

struct rrc_route;

/* An empty table, or NULL when out of memory. */
struct rrc_route *rrc_route_create(void);
void rrc_route_destroy(struct rrc_route *r);

/* Adds name (len bytes of lowercased wire form, the root alone allowed) with value. Returns 0,
 * -EEXIST when the name is in the table already (its value unchanged), -EINVAL for a name
 * that does not walk, or -ENOMEM. */
int rrc_route_add(struct rrc_route *r, const uint8_t *name, size_t len, uint16_t value);

/* The value of the longest name in the table that name (lowercased wire form) falls under, or
 * -1 when none; *depth (if not NULL) gets how many of name's labels lie below that one. r may
 * be NULL (an empty table). */
int rrc_route_find(const struct rrc_route *r, const uint8_t *name, size_t len, unsigned *depth);

/* Names in the table. */
size_t rrc_route_count(const struct rrc_route *r);

#endif
