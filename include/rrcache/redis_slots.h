/*
 * redis_slots: what Redis Cluster's key distribution takes, without any I/O.
 *
 * A key belongs to one of 16,384 slots: CRC16 (XMODEM) of the key, or of its hash tag (the
 * bytes between the first '{' and the next '}', when not empty). A slot map says which
 * master serves each slot; a node is a numeric address and port. A command sent to the wrong
 * node is answered "MOVED slot host:port" (the slot has moved: update the map) or "ASK slot
 * host:port" (it is moving: ask there once, after ASKING, without changing the map).
 */
#ifndef RRCACHE_REDIS_SLOTS_H
#define RRCACHE_REDIS_SLOTS_H

#include "rrcache/defs.h"
#include "rrcache/redis_master.h"

#define RRC_REDIS_SLOTS 16384
/* Masters a map may name; a cluster with more is read up to this many (the rest's slots
 * unknown: their keys skip Redis). */
#define RRC_REDIS_MAX_NODES 64
#define RRC_REDIS_NO_NODE 0xff
/* Redirects one command follows (MOVED then ASK during a migration). */
#define RRC_REDIS_MAX_REDIRECTS 2
/* The slot map is read again at most this often (after a MOVED, a node lost). */
#define RRC_REDIS_MAP_INTERVAL_MS 500

struct rrc_redis_node {
	char host[RRC_REDIS_HOST_LEN];
	uint16_t port;
};

struct rrc_redis_slot_map {
	struct rrc_redis_node nodes[RRC_REDIS_MAX_NODES];
	unsigned n_nodes;
	uint8_t slot[RRC_REDIS_SLOTS]; /* index into nodes, or RRC_REDIS_NO_NODE */
};

/* The slot of a key (hash tags honoured). */
uint16_t rrc_redis_key_slot(const char *key, size_t len);

/* An empty map: no node, every slot unknown. */
void rrc_redis_slot_map_clear(struct rrc_redis_slot_map *m);

/* The index of host:port in m, added when new; -1 when m is full. */
int rrc_redis_slot_map_node(struct rrc_redis_slot_map *m, const char *host, uint16_t port);

/* Gives slots first..last to node (an index of m). -1 when the range or node is invalid. */
int rrc_redis_slot_map_assign(struct rrc_redis_slot_map *m, unsigned first, unsigned last,
			      unsigned node);

/* Slots with a node. */
unsigned rrc_redis_slot_map_covered(const struct rrc_redis_slot_map *m);

enum rrc_redis_redirect { RRC_REDIRECT_NONE, RRC_REDIRECT_MOVED, RRC_REDIRECT_ASK };

/* Reads an error reply (len bytes, no NUL needed): MOVED or ASK with the slot and the
 * numeric address, or RRC_REDIRECT_NONE (another error, or a malformed redirect). */
enum rrc_redis_redirect rrc_redis_parse_redirect(const char *err, size_t len, uint16_t *slot,
						 struct rrc_redis_node *to);

#endif
