/*
 * balancer: which upstream gets the next query. Pure: the caller keeps the servers' state and
 * passes it in; the module keeps only the round-robin cursor the caller owns.
 *
 * Servers that are down, or already tried by this query (the exclude mask), are skipped.
 * At most RRC_BALANCER_MAX servers (the mask is 64 bits).
 */
#ifndef RRCACHE_BALANCER_H
#define RRCACHE_BALANCER_H

#include "rrcache/defs.h"

/* Servers one pool may have: the servers a query has tried are one 64-bit mask. */
#define RRC_BALANCER_MAX 64

enum rrc_balance {
	RRC_POLICY_ROUND_ROBIN = 0,   /* default: rotate over the servers that are up */
	RRC_POLICY_FIRST_AVAILABLE,   /* the first server in configured order that is up */
	RRC_POLICY_LEAST_OUTSTANDING, /* fewest queries in flight, ties to configured order */
	RRC_POLICY_WEIGHTED,	      /* smooth weighted round-robin over the servers that are up */
};

struct rrc_balancer_server {
	bool up;
	uint32_t outstanding;
	uint32_t weight; /* >= 1, used by RRC_POLICY_WEIGHTED */
	int64_t current; /* weighted round-robin state, owned by the balancer */
};

/* Returns 0 and sets *p for "round-robin", "first-available", "least-outstanding", "weighted". */
int rrc_balancer_policy_parse(const char *s, enum rrc_balance *p);
const char *rrc_balancer_policy_name(enum rrc_balance p);

/*
 * Picks a server among s[0..n) that is up and whose bit is clear in exclude. cursor is the
 * caller's round-robin state. Returns the index, or -1 when none is eligible.
 */
int rrc_balancer_pick(enum rrc_balance p, unsigned *cursor, struct rrc_balancer_server *s,
		      unsigned n, uint64_t exclude);

#endif
