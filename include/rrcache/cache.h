/*
 * cache: the L1 answer cache, shared by all workers.
 *
 * A sharded hash table: the key's keyed hash (SipHash-1-3 with a random key, so clients cannot
 * aim collisions at one bucket) picks a shard, each with its own mutex, LRU list and share of
 * the byte budget. The full key is compared on every lookup (C1); a hash alone never matches.
 * Entries own their bytes; a lookup copies the answer out under the shard lock.
 * Memory: every entry is charged its header, key, answer and allocator overhead against the
 * budget; inserting beyond the budget evicts least-recently-used entries of that shard first.
 * No uv.h, no ldns: the caller passes the time.
 */
#ifndef RRCACHE_CACHE_H
#define RRCACHE_CACHE_H

#include "rrcache/defs.h"

/* Shards: enough that two to a few dozen workers rarely meet on one lock. */
#define RRC_CACHE_SHARDS 64

struct rrc_cache;

struct rrc_cache_stats {
	uint64_t entries;
	uint64_t bytes;
	uint64_t budget;
	uint64_t hits;
	uint64_t misses;
	uint64_t expired;
	uint64_t inserted;
	uint64_t evicted;
	uint64_t stale;
};

/* Returns a cache of budget bytes, or NULL when out of memory. Free with rrc_cache_destroy. */
struct rrc_cache *rrc_cache_create(uint64_t budget);
void rrc_cache_destroy(struct rrc_cache *c);

/* Changes the byte budget (reload); evicts at the next insert into each shard. */
void rrc_cache_set_budget(struct rrc_cache *c, uint64_t budget);

enum rrc_cache_result { RRC_CACHE_MISS = 0, RRC_CACHE_HIT, RRC_CACHE_TOO_BIG, RRC_CACHE_STALE };

/* Keeps entries this many seconds past their expiry for serve-stale (RFC 8767); 0 = off.
 * Applies to entries inserted from now on. */
void rrc_cache_set_stale(struct rrc_cache *c, uint32_t seconds);

/*
 * Looks the key up at time now_ms. On a hit, copies the stored answer into out (cap bytes),
 * sets *len and *age (whole seconds since it was stored) and returns RRC_CACHE_HIT. When the
 * answer is larger than cap, returns RRC_CACHE_TOO_BIG with *len set to its full length and its
 * first cap bytes (header and question, all a TC=1 reply needs) copied.
 * An expired entry still within the stale window is copied the same way (min(len, cap) bytes)
 * and reported as RRC_CACHE_STALE, which counts as a miss: the caller refreshes it and may
 * serve the copy if the refresh fails. Entries past the window are removed (misses).
 * Never allocates.
 */
enum rrc_cache_result rrc_cache_lookup(struct rrc_cache *c, const uint8_t *key, size_t keylen,
				       uint64_t now_ms, uint8_t *out, size_t cap, size_t *len,
				       uint32_t *age, bool *refresh);

/* Prefetch: a fresh entry found at least min_hits times in its life (this lookup counted) and
 * found again within the last tenth of its original lifetime sets *refresh of that one lookup
 * (refresh not NULL): the caller refreshes it in the background while it answers. Once per
 * stored answer; a new answer stored for the key starts afresh. 0 turns it off. */
void rrc_cache_set_prefetch(struct rrc_cache *c, uint32_t min_hits);

/*
 * Stores a copy of answer (the stored form from rrc_wire_make_stored) for lifetime seconds,
 * replacing any entry of the same key. Returns 0, -ENOMEM, or -E2BIG when the entry alone is
 * larger than a shard's budget.
 */
int rrc_cache_insert(struct rrc_cache *c, const uint8_t *key, size_t keylen, const uint8_t *answer,
		     size_t len, uint32_t lifetime, uint64_t now_ms);

/* Makes room in the hash tables for this many entries in all (a load of many at once grows
 * them once instead of doubling them again and again). */
void rrc_cache_reserve(struct rrc_cache *c, size_t entries);

/* Removes the key's entry if present; returns true if there was one. */
bool rrc_cache_remove(struct rrc_cache *c, const uint8_t *key, size_t keylen);

/* Removes every entry. */
void rrc_cache_clear(struct rrc_cache *c);

/* Removes every entry of one name (lowercased wire form: keys of any type, class and flags).
 * Walks the whole cache (an admin action). Returns how many went. */
size_t rrc_cache_remove_name(struct rrc_cache *c, const uint8_t *name, size_t len);

/* An entry as rrc_cache_foreach gives it: stored_ms and expire_ms on the cache's clock. */
typedef void (*rrc_cache_entry_fn)(void *ctx, const uint8_t *key, size_t keylen,
				   const uint8_t *answer, size_t len, uint64_t stored_ms,
				   uint64_t expire_ms);

/* Calls fn for every entry still fresh at now_ms, shard by shard under the shard's lock (fn
 * must be quick and must not call the cache). Returns how many it was given. */
size_t rrc_cache_foreach(struct rrc_cache *c, uint64_t now_ms, rrc_cache_entry_fn fn, void *ctx);

/* Sums the shards' counters (takes each lock in turn). */
void rrc_cache_get_stats(struct rrc_cache *c, struct rrc_cache_stats *st);

/* SipHash-1-3 of data under a 16-byte key; exposed for tests and for other keyed tables. */
uint64_t rrc_cache_siphash(const uint8_t k[16], const uint8_t *data, size_t len);

#endif
