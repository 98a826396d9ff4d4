/*
 * query: the life of one client query (docs/architecture.md, "a query's path"): checks, ACL,
 * L1 cache, coalescing of identical questions in flight, the Redis tier, upstream attempts with
 * retry and budget, caching of the answer, and answering every waiting client. It also accounts
 * for every answer it gives (rcode, the top-K of failing names, the query log).
 *
 * A worker has one struct rrc_queries: its in-flight table, the pools its misses recycle and
 * the buffer answers are built in. The transports reach it through rrc_query_handle (an
 * rrc_client_query_fn, wired by the worker) and answer the clients it holds through their
 * struct rrc_client.
 *
 * Ownership: a query in flight (a miss) is owned by the in-flight table and freed, once it has
 * ended, before the loop next waits; it owns its waiters (each a held copy of a client, released
 * when it is answered) and cancels its upstream attempts and Redis lookup when it ends.
 */
#ifndef RRCACHE_QUERY_H
#define RRCACHE_QUERY_H

#include "rrcache/client.h"

/* Attempts one query may make (UDP retries and TCP fallbacks), whatever the budget: with the
 * default budget of 2 s and an upstream timeout of 1 s a query makes 2 or 3; 8 covers a short
 * upstream.timeout (250 ms) and a TC=1 fallback on each, and bounds what one query can cost. */
#define RRC_QUERY_MAX_ATTEMPTS 8
/* Buckets of a worker's in-flight table: upstream.max_inflight is 10,000 by default, so
 * chains stay under one on average, and short up to ~4x this many queries. A power of two. */
#define RRC_INFLIGHT_BUCKETS 16384

struct rrc_env;
struct rrc_queries;
struct rrc_upstreams;
struct rrc_redis_tier;

/* Creates a worker's query state. ups is required; redis may be NULL (no L2). Both must outlive
 * every query (the worker closes them after rrc_queries_abort_all). NULL when out of memory. */
struct rrc_queries *rrc_queries_create(const struct rrc_env *env, struct rrc_upstreams *ups,
				       struct rrc_redis_tier *redis);

/*
 * The transports' handler (rrc_client_query_fn; ctx is the struct rrc_queries): handles one
 * query of len bytes from c. When the answer is known now (cache hit, error, refusal) it is
 * written into out (cap bytes) and its length returned. Returns 0 when there is nothing to
 * send now: dropped, or waiting for an upstream (the answer then goes out through c's ops).
 * Never allocates on a cache hit.
 */
size_t rrc_query_handle(void *ctx, const struct rrc_client *c, const uint8_t *msg, size_t len,
			uint8_t *out, size_t cap);

/* Queries in flight (misses not yet answered). */
unsigned rrc_queries_inflight(const struct rrc_queries *qs);

/* Ends every query in flight with SERVFAIL, or its stale answer (shutdown grace expired). */
void rrc_queries_abort_all(struct rrc_queries *qs);

/* Closes the query state's handles (after rrc_queries_abort_all). */
void rrc_queries_close(struct rrc_queries *qs);

/* Frees the query state; call once the loop has run after rrc_queries_close. */
void rrc_queries_destroy(struct rrc_queries *qs);

#endif
