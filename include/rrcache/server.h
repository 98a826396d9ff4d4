/*
 * server: owns the workers, the shared L1 cache and the current configuration; wires the
 * modules together and stops them in order.
 *
 * Configuration swap: the server holds the current struct rrc_cfg_ref; each worker holds a
 * reference to the one it uses. A reload publishes a new ref and wakes every worker, which
 * adopts it and drops its reference to the old one; the last reference frees it. Listen
 * addresses and the worker count are fixed at start (a change needs a restart and is logged).
 */
#ifndef RRCACHE_SERVER_H
#define RRCACHE_SERVER_H

#include "rrcache/acl.h"
#include "rrcache/cache.h"
#include "rrcache/config.h"

#include <stdatomic.h>

/* A configuration and what is compiled from it, shared read-only by the workers. */
struct rrc_cfg_ref {
	struct rrc_config *cfg;
	struct rrc_acl *acl;
	atomic_int refs;
	unsigned generation;
};

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
 * TTL bounds, cache budget and log level take effect; the cache keeps its entries.
 * Returns 0, or -ENOMEM (the old configuration keeps running).
 */
int rrc_server_reload(struct rrc_server *s, struct rrc_config *cfg);

/* Stops accepting, lets in-flight queries finish (at most RRC_SHUTDOWN_GRACE_MS), joins the
 * workers. */
void rrc_server_stop(struct rrc_server *s);

struct rrc_worker_stats;
struct rrc_topk;
/* Sums the workers' counters into *out. Exact only after rrc_server_stop (workers write them
 * without synchronisation while they run). */
void rrc_server_sum_stats(struct rrc_server *s, struct rrc_worker_stats *out);
/* Number of workers, and worker i's own counters (same caveat). */
unsigned rrc_server_worker_count(const struct rrc_server *s);
/* True when the running configuration has a Redis tier. */
bool rrc_server_config_redis(const struct rrc_server *s);
const struct rrc_worker_stats *rrc_server_worker_stats(const struct rrc_server *s, unsigned i);
/* Merges every worker's last published top-K window of category cat into into (any thread). */
void rrc_server_top(struct rrc_server *s, unsigned cat, bool hour, struct rrc_topk *into);
/* Asks every worker to start its top-K afresh (any thread; done at their next second). */
void rrc_server_top_reset(struct rrc_server *s);
/* The query log, or NULL. */
struct rrc_dnstap *rrc_server_dnstap(struct rrc_server *s);
/* True while the workers run (listening). */
bool rrc_server_running(const struct rrc_server *s);

/* Frees everything; call after rrc_server_stop (or instead of start). */
void rrc_server_destroy(struct rrc_server *s);

/* Takes a reference to the current configuration; release with rrc_cfg_ref_put. */
struct rrc_cfg_ref *rrc_server_cfg_get(struct rrc_server *s);
void rrc_cfg_ref_put(struct rrc_cfg_ref *ref);

struct rrc_cache *rrc_server_cache(struct rrc_server *s);

/*
 * TCP connection accounting shared by all workers (RFC 7766 §6.2.2 limits): admits a new
 * connection from addr when both the total and the per-client count are below the limits.
 * Returns true and counts it; rrc_server_tcp_release undoes it.
 */
bool rrc_server_tcp_admit(struct rrc_server *s, const struct sockaddr *addr, unsigned max_total,
			  unsigned max_per_client);
void rrc_server_tcp_release(struct rrc_server *s, const struct sockaddr *addr);

#endif
