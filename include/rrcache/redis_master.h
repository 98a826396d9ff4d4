/*
 * redis_master: where the Redis master is, when Redis Sentinel decides it.
 *
 * One record per server, shared by the workers. Worker 0's sentinel watcher
 * (redis_sentinel.h) writes the address the sentinels give; each worker's Redis tier reads it
 * when it opens a connection, and compares the record's generation with its connection's at
 * every request (one relaxed atomic load), so after a failover every worker moves its
 * connection at its next request, without a message between threads. A tier that reaches the
 * address and finds no master there (ROLE says replica: a failover under way, or a sentinel
 * behind) raises a doubt, and the watcher asks the sentinels again.
 *
 * Also the parsing of what sentinels say (pure functions).
 */
#ifndef RRCACHE_REDIS_MASTER_H
#define RRCACHE_REDIS_MASTER_H

#include "rrcache/defs.h"

/* A numeric IPv4 or IPv6 address with its terminating NUL. */
#define RRC_REDIS_HOST_LEN 64

struct rrc_redis_master;

/* An empty record (no address known, generation 0). NULL when out of memory. */
struct rrc_redis_master *rrc_redis_master_new(void);
void rrc_redis_master_free(struct rrc_redis_master *m);

/* Records host:port; the generation goes up when it differs from the one known. True then. */
bool rrc_redis_master_set(struct rrc_redis_master *m, const char *host, uint16_t port);

/* Copies the address (host "" while none is known) and returns the generation it has. */
uint32_t rrc_redis_master_get(struct rrc_redis_master *m, char host[RRC_REDIS_HOST_LEN],
			      uint16_t *port);

/* The generation now: 0 while no address is known; any thread. */
uint32_t rrc_redis_master_generation(struct rrc_redis_master *m);

/* The address did not lead to a master: the sentinels are to be asked again. Any thread. */
void rrc_redis_master_doubt(struct rrc_redis_master *m);

/* True once per doubt raised since the last call (the watcher's poll). */
bool rrc_redis_master_take_doubt(struct rrc_redis_master *m);

/*
 * An address as a sentinel gives it (two strings, host and port, not NUL-terminated): 0 with
 * the host copied into out and the port, or -1 when the host is not a numeric IPv4 or IPv6
 * address (rrcache does not resolve names on its loops) or the port not 1..65535.
 */
int rrc_redis_master_parse_addr(const char *host, size_t hlen, const char *port, size_t plen,
				char out[RRC_REDIS_HOST_LEN], uint16_t *out_port);

/*
 * A "+switch-master" message, "NAME OLD-IP OLD-PORT NEW-IP NEW-PORT": 0 with the new address
 * when it is about the master called name, -1 otherwise (another master, malformed).
 */
int rrc_redis_master_parse_switch(const char *msg, size_t len, const char *name,
				  char out[RRC_REDIS_HOST_LEN], uint16_t *out_port);

#endif
