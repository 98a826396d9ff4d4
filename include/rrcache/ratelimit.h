/*
 * ratelimit: queries per second per client prefix, in a table of fixed size shared by every
 * worker (ratelimit.* settings).
 *
 * A client address is cut to its prefix (/24 for IPv4, /56 for IPv6 by default) and hashed,
 * under a random key, to one slot of the table: a token bucket (qps tokens a second, at most
 * burst) with its last update, packed in one 64-bit word updated with compare-and-swap. Two
 * busy prefixes that hash to one slot are limited together, which errs on the strict side and
 * is rare with a table larger than the number of busy prefixes; a quiet prefix's slot fills up
 * again and costs nothing. The table never grows: a million spoofed sources cost what one
 * does. Pure: no uv.h.
 */
#ifndef RRCACHE_RATELIMIT_H
#define RRCACHE_RATELIMIT_H

#include "rrcache/defs.h"

#include <sys/socket.h>

struct rrc_ratelimit;

struct rrc_ratelimit_conf {
	uint32_t qps;	     /* 0: off */
	uint32_t burst;	     /* tokens a quiet prefix has saved up (0: qps), at most 2^24 */
	uint32_t v4_prefix;  /* bits kept of an IPv4 address */
	uint32_t v6_prefix;  /* and of an IPv6 one */
	uint32_t table_size; /* slots, rounded up to a power of two */
};

/* A table for conf (NULL when conf->qps is 0, or out of memory: check conf->qps). */
struct rrc_ratelimit *rrc_ratelimit_create(const struct rrc_ratelimit_conf *conf);
void rrc_ratelimit_destroy(struct rrc_ratelimit *rl);

/* True when a query from sa at now_ms (any monotonic clock in milliseconds) is within its
 * prefix's limit (a token taken). Any thread. */
bool rrc_ratelimit_allow(struct rrc_ratelimit *rl, const struct sockaddr *sa, uint64_t now_ms);

/* Bytes the table takes. */
size_t rrc_ratelimit_bytes(const struct rrc_ratelimit *rl);

#endif
