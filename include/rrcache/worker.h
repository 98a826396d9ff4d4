/*
 * worker: one thread with its own uv loop, running its own listening sockets (SO_REUSEPORT),
 * queries, upstream sockets and Redis connection, with its own counters and top-K. Nothing of
 * a worker is touched by another thread except through this header: the configuration handed
 * over through an async wake-up, the stop request, and the counters and published top-K that
 * readers take (see each function).
 *
 * The worker wires its modules (docs/architecture.md): it creates the upstreams, the Redis
 * tier, the queries and the listeners with one struct rrc_env, hands the listeners the query
 * handler, and on a stop polls rrc_queries_inflight() and rrc_listeners_open() until both are
 * zero (or the grace runs out) before it closes them in order.
 */
#ifndef RRCACHE_WORKER_H
#define RRCACHE_WORKER_H

#include "rrcache/cfg_ref.h"
#include "rrcache/stats.h"

/* Grace for in-flight queries at shutdown: the default client budget (upstream.client_timeout,
 * 2 s), so that a query in flight gets its own answer rather than a SERVFAIL. */
#define RRC_SHUTDOWN_GRACE_MS 2000

struct rrc_cache;
struct rrc_conn_limit;
struct rrc_dnstap;
struct rrc_worker;

/* What a worker shares with the others, owned by the server; each must outlive the worker. */
struct rrc_worker_shared {
	struct rrc_cache *cache;
	struct rrc_conn_limit *tcp_limit;
	struct rrc_dnstap *dnstap;	       /* NULL when the query log is off */
	struct rrc_dynblock *dynblock;	       /* the dynamic blocks */
	struct rrc_redis_master *redis_master; /* Redis Sentinel's master; NULL without it */
};

/*
 * Creates worker index with configuration cfg (the worker takes this reference) and binds its
 * listening sockets. Returns NULL with the reason in err; cfg is released then too.
 */
struct rrc_worker *rrc_worker_create(unsigned index, struct rrc_cfg_ref *cfg,
				     const struct rrc_worker_shared *shared, char err[RRC_ERR_LEN]);
/* Starts the worker's thread. Returns 0 or a libuv error. */
int rrc_worker_start(struct rrc_worker *w);
/* Hands the worker a new configuration (it takes the reference) and wakes it to adopt it;
 * a configuration handed over earlier and not yet adopted is dropped. Any thread. */
void rrc_worker_set_config(struct rrc_worker *w, struct rrc_cfg_ref *cfg);
/* The generation (struct rrc_cfg_ref) of the configuration the worker runs with. Any thread. */
unsigned rrc_worker_generation(const struct rrc_worker *w);
/* Asks the worker to stop (any thread) and joins it: it stops reading, lets its queries
 * finish for at most RRC_SHUTDOWN_GRACE_MS, and closes everything. */
void rrc_worker_stop_join(struct rrc_worker *w);
/* Frees a worker that was stopped, or never started. */
void rrc_worker_destroy(struct rrc_worker *w);
/* The worker's counters: written by its thread without synchronisation while it runs (a
 * reader may see a counter one increment behind, never a torn one on a 64-bit machine). */
const struct rrc_worker_stats *rrc_worker_stats(const struct rrc_worker *w);
/* Merges the worker's last published top-K window of cat (the last minute or hour) into
 * into. Any thread. */
void rrc_worker_top(struct rrc_worker *w, enum rrc_top_cat cat, bool hour, struct rrc_topk *into);
/* Asks the worker to start its top-K afresh (done at its next second). Any thread. */
void rrc_worker_top_reset(struct rrc_worker *w);

#endif
