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

/*
 * The top-level labels of a set of names ("lan", "arpa", "example"), a filter in front of
 * the lookups: most names asked end in a label none of the set has, which one walk of the
 * name's labels and a few compares tell. Names of one label ("nas" from a hosts file) are
 * kept as a flag: any one-label name then passes. More than RRC_TLDS_MAX labels, or the root
 * itself in the set, and every name passes.
 */
#define RRC_TLDS_MAX 16
struct rrc_tlds {
	unsigned n;
	bool all, single;
	uint8_t label[RRC_TLDS_MAX][64]; /* length, then the label's bytes */
};

/* Adds name's top-level label to t (name: lowercased wire form). exact: the set holds names
 * themselves, so a one-label name only sets the one-label flag; otherwise the set holds
 * domains, under which every name ends in that label. */
void rrc_tlds_add(struct rrc_tlds *t, const uint8_t *name, size_t len, bool exact);
/* False when name surely ends in no label of t (true may be wrong: a filter). */
bool rrc_tlds_may_have(const struct rrc_tlds *t, const uint8_t *name, size_t len);

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
