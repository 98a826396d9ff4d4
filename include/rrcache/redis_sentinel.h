/*
 * redis_sentinel: asks Redis Sentinel where the master is, and follows its failovers.
 *
 * The watcher runs on one loop (worker 0's). It connects to the sentinels of
 * redis.sentinels in turn, asks SENTINEL get-master-addr-by-name for redis.master_name,
 * records the answer in the shared record (redis_master.h), then SUBSCRIBEs on the same
 * connection to "+switch-master", which every sentinel publishes when a failover ends: each
 * message about our master moves the record at once. When the connection fails (the
 * sentinel died, timed out, or said something rrcache does not take) the next sentinel is
 * asked, at once; after a whole round without an answer, after the tier's backoff. When a
 * worker finds no master at the recorded address (ROLE), the watcher asks again, at most once
 * a second. Every command has a deadline of redis.connect_timeout.
 *
 * The blocking rrc_redis_sentinel_ask() is for the fleet flush (redis_admin.h), which has
 * no loop.
 */
#ifndef RRCACHE_REDIS_SENTINEL_H
#define RRCACHE_REDIS_SENTINEL_H

#include "rrcache/config.h"
#include "rrcache/redis_master.h"

struct rrc_env;
struct rrc_redis_sentinel;

/* Called on the watcher's loop each time the master moved (its address is in the record). */
typedef void (*rrc_redis_sentinel_moved_fn)(void *ctx);

/* Starts watching for the sentinels of env's redis configuration (copied), writing m.
 * moved (may be NULL) follows each change. NULL when out of memory. */
struct rrc_redis_sentinel *rrc_redis_sentinel_start(const struct rrc_env *env,
						    struct rrc_redis_master *m,
						    rrc_redis_sentinel_moved_fn moved, void *ctx);

/* Stops and frees the watcher once its handles are closed. */
void rrc_redis_sentinel_close(struct rrc_redis_sentinel *s);

/*
 * Asks the sentinels of rc, in turn, where the master is (blocking; each sentinel
 * redis.connect_timeout at most). 0 with the address, or -1 with the reasons in err.
 */
int rrc_redis_sentinel_ask(const struct rrc_redis_conf *rc, char host[RRC_REDIS_HOST_LEN],
			   uint16_t *port, char err[RRC_ERR_LEN]);

#endif
