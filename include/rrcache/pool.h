/*
 * pool: a free list of fixed-size objects, for one thread.
 *
 * The miss path's short-lived objects (queries, waiters, upstream attempts) are recycled here
 * instead of going back to malloc: they then stop interleaving with the long-lived cache
 * entries on the heap (which left holes that kept RSS above the cache budget), and a miss costs
 * fewer allocator calls. At most `keep` free objects are kept; the rest are freed.
 * Pure: no uv.h. Not thread-safe: one pool per worker.
 */
#ifndef RRCACHE_POOL_H
#define RRCACHE_POOL_H

#include "rrcache/defs.h"

/* Free objects each pool keeps: enough for a burst of misses, bounded (about 1 MiB a pool). */
#define RRC_POOL_KEEP 1024
/* Messages up to this size are carried in pooled objects; larger ones are allocated alone.
 * 512 is the classic UDP limit (RFC 1035 §4.2.1): every query rrcache sends upstream without
 * ECS fits (a name of at most 255 octets, 4 of type and class, 11 of OPT, 12 of header). */
#define RRC_POOL_MSG 512

struct rrc_pool {
	void *free_list;
	size_t size; /* size of a recycled object, >= sizeof(void *) */
	unsigned n_free;
	unsigned keep;
};

void rrc_pool_init(struct rrc_pool *p, size_t size, unsigned keep);
/* Returns a zeroed object of size bytes, or NULL when out of memory: a recycled one when size
 * fits p->size, else a fresh allocation. */
void *rrc_pool_get(struct rrc_pool *p, size_t size);
/* Gives back an object from rrc_pool_get, with the size it was asked for. */
void rrc_pool_put(struct rrc_pool *p, void *obj, size_t size);
/* Frees every kept object. */
void rrc_pool_drain(struct rrc_pool *p);

#endif
