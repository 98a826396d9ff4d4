/*
 * redis_tier: the L2 cache in Redis, shared by a fleet of instances, one connection per worker.
 *
 * Never on the critical path longer than redis.timeout: every command has a deadline (one
 * timer per worker, armed for the oldest command; replies come in order), the loop never waits
 * for Redis (hiredis async through redis_uv), and when the connection is not ready, when
 * redis.max_pending commands are in flight, or while the circuit breaker is open, a lookup
 * is skipped at once (RRC_L2_SKIP) and the query goes upstream.
 *
 * Breaker: redis.max_failures consecutive errors or timeouts close the connection; it is
 * opened again after a backoff that doubles from redis.backoff_min up to redis.backoff_max.
 * Changes of state are logged once each and counted.
 *
 * Fleet coalescing (redis.fleet_coalescing): a lookup sends GET; when it misses, a short lock
 * follows (SET lock NX PX fleet_wait), within the same deadline. The instance that gets the
 * lock asks the upstream; the others are told RRC_L2_LOCKED and ask again after a short wait,
 * up to fleet_wait in all. Hits cost one command and leave no lock to expire.
 *
 * Flush: worker 0 of each instance subscribes to key_prefix + "flush"; a message "*" empties
 * the L1 cache, any other message is a lowercased name in wire form whose L1 entries go.
 * redis_admin.h deletes the keys in Redis and publishes those messages.
 *
 * Settings: the connection (redis.url and the rest of redis.*) is read once, at creation, and
 * changes at a restart; the TTL bounds and serve-stale that decide what a value from Redis may
 * become are read from the configuration in force at each lookup, so a reload applies to them.
 */
#ifndef RRCACHE_REDIS_TIER_H
#define RRCACHE_REDIS_TIER_H

#include "rrcache/config.h"
#include "rrcache/wire.h"

struct rrc_env;
struct rrc_redis_tier;
struct rrc_redis_req;

enum rrc_l2_outcome {
	RRC_L2_HIT,    /* answer is a checked stored answer, lifetime seconds left */
	RRC_L2_MISS,   /* not there (and this instance holds the lock): ask the upstream */
	RRC_L2_LOCKED, /* not there, another instance is asking: look again shortly */
	RRC_L2_SKIP,   /* error, timeout, breaker open, too many pending: ask the upstream */
};

struct rrc_l2_result {
	enum rrc_l2_outcome outcome;
	uint8_t *answer; /* HIT: valid during the call only */
	size_t len;
	uint32_t lifetime;
	/* MISS/LOCKED/SKIP: an expired answer still inside the stale window (serve-stale), for
	 * the query to fall back on; NULL when none. Valid during the call only. */
	const uint8_t *stale;
	size_t stale_len;
};

typedef void (*rrc_l2_cb)(void *ctx, const struct rrc_l2_result *r);

/* Creates a worker's tier from env's configuration and starts connecting; worker 0's also
 * listens for fleet flushes (which empty env's cache). NULL when Redis is not configured or out
 * of memory. */
struct rrc_redis_tier *rrc_redis_tier_create(const struct rrc_env *env);

/* Cancels every request (their callbacks are not called) and frees the tier once its handles
 * are closed. */
void rrc_redis_tier_close(struct rrc_redis_tier *t);

/*
 * Looks key up. Returns a request whose callback comes exactly once (unless cancelled), or NULL
 * when the lookup is skipped (counted; the caller goes upstream at once).
 */
struct rrc_redis_req *rrc_redis_get(struct rrc_redis_tier *t, const uint8_t *key, size_t keylen,
				    uint64_t ns, rrc_l2_cb cb, void *ctx);

/*
 * A prefetch's turn for the whole fleet: takes the key's fleet-coalescing lock (SET NX) without
 * looking the value up (it is the old one). The callback's outcome is RRC_L2_MISS when the lock
 * is this instance's (refresh from the upstream), RRC_L2_LOCKED when another instance holds it
 * (it refreshes), RRC_L2_SKIP on an error. NULL when it cannot be asked (no Redis, fleet
 * coalescing off, busy): refresh alone.
 */
struct rrc_redis_req *rrc_redis_refresh_lock(struct rrc_redis_tier *t, const uint8_t *key,
					     size_t keylen, uint64_t ns, rrc_l2_cb cb, void *ctx);

/* The caller is gone: its callback will not be called. */
void rrc_redis_cancel(struct rrc_redis_req *r);

/* Stores a stored-form answer that L1 took with lifetime seconds; Redis keeps it lifetime +
 * stale_window seconds. Fire and forget (skipped when the tier is not usable). ns: the
 * upstream pool's (rrc_l2_key), for get and set alike. */
void rrc_redis_set(struct rrc_redis_tier *t, const uint8_t *key, size_t keylen, uint64_t ns,
		   const uint8_t *answer, size_t len, uint32_t lifetime, uint32_t stale_window);

/* 0 closed (breaker open or not connected yet), 1 ready. */
int rrc_redis_state(const struct rrc_redis_tier *t);

#endif
