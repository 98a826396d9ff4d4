/*
 * server: owns the workers, the shared L1 cache, the TCP connection limit, the query log and
 * the configuration in force; wires them together and stops them in order.
 *
 * Configuration swap: the server holds the current struct rrc_cfg_ref; each worker holds a
 * reference to the one it uses. A reload publishes a new ref and hands one reference to every
 * worker, which adopts it between two callbacks and drops its reference to the old one; the
 * last reference frees it. Listen addresses, the worker count, the statistics endpoint's
 * address and redis.* are fixed at start (a change needs a restart and is logged).
 */
#ifndef RRCACHE_SERVER_H
#define RRCACHE_SERVER_H

#include "rrcache/cache.h"
#include "rrcache/cachefile.h"
#include "rrcache/cfg_ref.h"
#include "rrcache/dynblock.h"
#include "rrcache/stats.h"

struct rrc_server;

/*
 * Creates the server for cfg (ownership passes to the server, also on failure): the cache and
 * one worker per cfg->workers, each with its listening sockets bound. Returns NULL and writes
 * the reason into err when a socket cannot be bound.
 */
struct rrc_server *rrc_server_create(struct rrc_config *cfg, char err[RRC_ERR_LEN]);

/* Starts the worker threads. Returns 0 or a negative errno. */
int rrc_server_start(struct rrc_server *s);

/*
 * Adopts a new configuration (ownership passes to the server): upstreams, ACL, timeouts,
 * TTL bounds, serve-stale, cache budget, log level and the statistics endpoint's token, ACL
 * and top-K size take effect; the cache keeps its entries. Returns once every running worker
 * has adopted it (each within RRC_RELOAD_WAIT_MS; one that has not is logged).
 * Returns 0, or -ENOMEM (the old configuration keeps running).
 */
int rrc_server_reload(struct rrc_server *s, struct rrc_config *cfg);

/* Stops accepting, lets in-flight queries finish (at most RRC_SHUTDOWN_GRACE_MS), joins the
 * workers. */
void rrc_server_stop(struct rrc_server *s);

/* Frees everything; call after rrc_server_stop (or instead of start). */
void rrc_server_destroy(struct rrc_server *s);

/* Takes a reference to the configuration in force; release with rrc_cfg_ref_put. Any thread. */
struct rrc_cfg_ref *rrc_server_cfg_get(struct rrc_server *s);

struct rrc_cache *rrc_server_cache(struct rrc_server *s);
/* Writes the L1 cache to cache.save_file (any thread; the workers may run). Returns the
 * entries written, or a negative errno with err set (-EINVAL: no file configured). */
long rrc_server_save_cache(struct rrc_server *s, char err[RRC_ERR_LEN]);
/* Reads cache.save_file into the L1 cache (before the workers start). Returns 0 with *st,
 * or a negative errno with err set (-ENOENT: no file yet). */
int rrc_server_load_cache(struct rrc_server *s, struct rrc_cachefile_stats *st,
			  char err[RRC_ERR_LEN]);

/* The dynamic blocks (the tables live as long as the server; a reload keeps them). */
struct rrc_dynblock *rrc_server_dynblock(struct rrc_server *s);

/* The Redis settings the workers run with (fixed at start), or NULL without Redis. */
const struct rrc_redis_conf *rrc_server_redis(const struct rrc_server *s);
/* The query log's file moves to a new file under its name (rotation; see dnstap.h). */
void rrc_server_reopen_files(struct rrc_server *s);

/* Sums the workers' counters into *out (see rrc_worker_stats for what a running worker's
 * counters are worth). */
void rrc_server_sum_stats(struct rrc_server *s, struct rrc_worker_stats *out);
/* Number of workers, and worker i's own counters (same caveat). */
unsigned rrc_server_worker_count(const struct rrc_server *s);
const struct rrc_worker_stats *rrc_server_worker_stats(const struct rrc_server *s, unsigned i);
/* Merges every worker's last published top-K window of category cat into into (any thread). */
void rrc_server_top(struct rrc_server *s, unsigned cat, bool hour, struct rrc_topk *into);
/* Asks every worker to start its top-K afresh (any thread; done at their next second). */
void rrc_server_top_reset(struct rrc_server *s);
/* True while the workers run (listening). Any thread. */
bool rrc_server_running(const struct rrc_server *s);

#endif
