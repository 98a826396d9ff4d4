/*
 * redis_cluster: Redis Cluster's slot map read from a node's reply (hiredis objects), for the
 * tier (on its loop) and the fleet flush (blocking) alike. Masters only: rrcache reads and
 * writes on masters.
 */
#ifndef RRCACHE_REDIS_CLUSTER_H
#define RRCACHE_REDIS_CLUSTER_H

#include <hiredis/hiredis.h>

#include "rrcache/redis_slots.h"

/* Elements and total elements a map's reply may have (CLUSTER SLOTS after resharding lists
 * up to 16,384 ranges of a dozen elements each). */
#define RRC_REDIS_CLUSTER_MAX_ELEMENTS 65536
#define RRC_REDIS_CLUSTER_MAX_TOTAL 400000
/* Its bytes at most. */
#define RRC_REDIS_CLUSTER_MAX_INPUT (8u << 20)

/*
 * Fills m (cleared first) from the reply to CLUSTER SHARDS (Redis 7) when shards, or to
 * CLUSTER SLOTS (Redis 6). 0, or -1 with the reason in why (then m is not to be used): not
 * such a reply, a master whose address is not numeric, more masters than
 * RRC_REDIS_MAX_NODES.
 */
int rrc_redis_cluster_read_map(const redisReply *r, bool shards, struct rrc_redis_slot_map *m,
			       char *why, size_t cap);

#endif
