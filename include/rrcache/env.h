/*
 * env: what the modules of one worker share, handed to each when it is created, the way libuv
 * hands a loop to every handle: the loop, the configuration in force, the shared L1 cache and
 * dynamic blocks, the worker's counters and top-K, and its query log.
 *
 * The worker owns the struct and everything it points at; a module keeps the pointer and reads
 * through it at each use, so that a reload (the worker swaps cfg between two callbacks) applies
 * to it without a copy to refresh. Only the worker's thread touches an env. Modules write the
 * counters, the top-K and the query log; nothing else in it.
 */
#ifndef RRCACHE_ENV_H
#define RRCACHE_ENV_H

#include "rrcache/cfg_ref.h"
#include "rrcache/stats.h"

#include <uv.h>

struct rrc_cache;
struct rrc_dynblock;
struct rrc_redis_master;
struct rrc_tap;

struct rrc_env {
	uv_loop_t *loop;
	unsigned worker;	       /* the worker's index, for log lines */
	struct rrc_cfg_ref *cfg;       /* the configuration in force; read it at each use */
	struct rrc_cache *cache;       /* L1, shared by the workers */
	struct rrc_dynblock *dynblock; /* the dynamic blocks, shared by the workers */
	/* Redis Sentinel: where the master is, shared by the workers; NULL without Sentinel. */
	struct rrc_redis_master *redis_master;
	struct rrc_worker_stats *st;
	struct rrc_top *top;
	struct rrc_tap *tap; /* the query log, NULL when it is off */
};

/* The configuration in force. */
static inline const struct rrc_config *rrc_env_cfg(const struct rrc_env *env)
{
	return env->cfg->cfg;
}

#endif
