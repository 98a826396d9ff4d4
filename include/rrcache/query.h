/*
 * query: the life of one client query (DESIGN "data flow"): checks, ACL, L1 cache, coalescing
 * of identical questions in flight, upstream attempts with retry and budget, caching of the
 * answer and answering every waiting client.
 *
 * Ownership: a struct rrc_query (a miss in flight) is owned by its worker's in-flight table
 * and freed when its two timers have closed; it owns its waiters and cancels its attempts
 * before it goes.
 */
#ifndef RRCACHE_QUERY_H
#define RRCACHE_QUERY_H

#include "rrcache/worker.h"

/* Attempts one query may make (UDP retries and TCP fallbacks), whatever the budget. */
#define RRC_QUERY_MAX_ATTEMPTS 8
/* Buckets of a worker's in-flight table (chains stay short up to ~4x this many queries). */
#define RRC_INFLIGHT_BUCKETS 16384

/* Where a query came from; filled by the listener, copied only on a miss. */
struct rrc_query_src {
	bool tcp;
	struct rrc_udp_listener *ul;
	const struct sockaddr *peer;
	socklen_t peer_len;
	const struct rrc_pktinfo *local;
	struct rrc_tcp_conn *conn;
};

/*
 * Handles one query of len bytes. When the answer is known now (cache hit, error, refusal) it
 * is written into out (cap bytes) and its length returned. Returns 0 when there is nothing to
 * send now: dropped, or waiting for an upstream (the answer then goes out through
 * rrc_listener_answer). Never allocates on a cache hit.
 */
size_t rrc_query_handle(struct rrc_worker *w, const struct rrc_query_src *src, const uint8_t *pkt,
			size_t len, uint8_t *out, size_t cap);

/* Sets up the worker's query and waiter pools. */
void rrc_query_init_pools(struct rrc_worker *w);

/* Ends every query in flight with SERVFAIL (shutdown grace expired). */
void rrc_query_abort_all(struct rrc_worker *w);

#endif
