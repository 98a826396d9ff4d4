/*
 * redis_admin: the fleet flush. Deletes from Redis the keys of one name (every type and flag)
 * or every key under redis.key_prefix, then publishes the message that worker 0 of every
 * instance sharing that Redis listens for (redis_tier.h), which drops the name, or everything,
 * from its L1.
 *
 * It uses hiredis's blocking API with a deadline of RRC_REDIS_FLUSH_DEADLINE_MS for the whole
 * flush: called directly by the command line (`rrcache --flush`), and run on a thread of its
 * own for the statistics endpoint (struct rrc_redis_admin), so that the HTTP thread never
 * waits on Redis and a stop interrupts a flush at once.
 */
#ifndef RRCACHE_REDIS_ADMIN_H
#define RRCACHE_REDIS_ADMIN_H

#include "rrcache/config.h"

/* The whole flush, connection included: SCAN walks 1,000 keys per round trip and each page is
 * deleted with one UNLINK, so this covers millions of keys on a loopback or LAN Redis; a
 * slower one ends with an error and the flush can be asked again (what is gone stays gone). */
#define RRC_REDIS_FLUSH_DEADLINE_MS 30000

/*
 * Flushes name (lowercased wire form; NULL: everything under the key prefix) from the Redis of
 * rc, and tells every instance. Returns the number of keys deleted, or -1 with the reason in
 * err (never the password). Blocks for at most RRC_REDIS_FLUSH_DEADLINE_MS.
 */
long rrc_redis_admin_flush(const struct rrc_redis_conf *rc, const uint8_t *name, size_t len,
			   char err[RRC_ERR_LEN]);

/* One flush at a time on a thread of its own, for callers that must not block. */
struct rrc_redis_admin;

/* Called once per flush, on the admin's thread: keys deleted, or -1 and the reason. */
typedef void (*rrc_redis_admin_cb)(void *ctx, long deleted, const char *err);

/* An admin for the Redis of rc (copied). NULL when out of memory. */
struct rrc_redis_admin *rrc_redis_admin_create(const struct rrc_redis_conf *rc);
/*
 * Starts flushing name (as rrc_redis_admin_flush) on the admin's thread; cb follows, once.
 * Returns 0, -EBUSY while another flush runs, or -EAGAIN when no thread can be started (cb is
 * not called then).
 */
int rrc_redis_admin_start(struct rrc_redis_admin *a, const uint8_t *name, size_t len,
			  rrc_redis_admin_cb cb, void *ctx);
/* Interrupts a flush in progress (its callback comes, with an error), waits for the thread,
 * and frees the admin. */
void rrc_redis_admin_destroy(struct rrc_redis_admin *a);

#endif
