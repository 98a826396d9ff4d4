/*
 * upstream: the upstream servers of one worker, their health, and the attempts (one query sent
 * to one server over UDP or TCP).
 *
 * Every attempt gets a random ID from a CSPRNG. Over UDP it leaves on one of the server's
 * pooled connected sockets, each bound to a random source port (CONFORMANCE U2, RFC 5452
 * §9.2), with an ID no other attempt in flight on that socket has; it is queued and sent
 * before the loop next waits, so a failure to send reaches the callback, not the caller. A
 * datagram whose address, port, ID or question differs from what was sent is counted as
 * unwanted and ignored; the attempt keeps waiting (RFC 5452 §9.1). Over TCP (after TC=1) the
 * message is framed per RFC 1035 §4.2.2.
 *
 * Health: max_failures consecutive failures (timeouts reported by the query, errors and
 * malformed replies seen here) mark a server down; down servers get a ". NS" probe every
 * probe_interval and are up again after probe_successes good probes in a row.
 *
 * Ownership: an attempt is owned by this module and freed once cancelled (a TCP attempt in its
 * handle's close callback, a UDP attempt at once; a UDP attempt cancelled before it left is
 * never sent). The caller's ctx is non-owning and is cleared by rrc_upstream_cancel(); after
 * cancel, the callback is never called.
 */
#ifndef RRCACHE_UPSTREAM_H
#define RRCACHE_UPSTREAM_H

#include "rrcache/config.h"
#include "rrcache/wire.h"

struct rrc_env;
struct rrc_upstreams;
struct rrc_attempt;

/*
 * Called once per attempt: with a reply that matched address, port, ID and question (pkt is
 * mutable and valid only during the call; r describes it), or with pkt NULL when the attempt
 * failed (socket error, refused, malformed reply carrying our ID, TCP closed early).
 */
typedef void (*rrc_attempt_cb)(void *ctx, struct rrc_attempt *a, uint8_t *pkt, size_t len,
			       const struct rrc_wire_reply *r);

/* Creates the upstream set of a worker from its configuration in force; counts into env's
 * counters and logs to its query log. Returns NULL with the reason in err. */
struct rrc_upstreams *rrc_upstreams_create(const struct rrc_env *env, char err[RRC_ERR_LEN]);

/* Adopts the server list of env's configuration in force (call after the worker swapped it);
 * servers with the same address keep their health and counters. Returns 0, or -ENOMEM with
 * nothing changed. */
int rrc_upstreams_reconfigure(struct rrc_upstreams *u);

/* Cancels every attempt and probe and frees the set once all handles are closed. */
void rrc_upstreams_close(struct rrc_upstreams *u);

/* Picks a server of pool (an index into the configuration's pools) that is up and not in
 * exclude (bit i = server i, counted over every pool). Returns -1 if none. */
int rrc_upstreams_pick(struct rrc_upstreams *u, unsigned pool, uint64_t exclude);

/* True when at least one server of pool is up. */
bool rrc_upstreams_any_up(const struct rrc_upstreams *u, unsigned pool);

/* Number of configured servers. */
unsigned rrc_upstreams_count(const struct rrc_upstreams *u);

/*
 * Sends query (len bytes, an ID in its first two bytes that will be replaced) to server idx.
 * Returns the attempt, or NULL when no socket could be set up (counted as a failure, or as a
 * local error when this machine lacked the resource).
 */
struct rrc_attempt *rrc_upstream_send(struct rrc_upstreams *u, int idx, bool tcp,
				      const uint8_t *query, size_t len, rrc_attempt_cb cb,
				      void *ctx);

/* Detaches the caller and closes the attempt. */
void rrc_upstream_cancel(struct rrc_attempt *a);

/* The index of the attempt's server at the time of the call, or -1 if it was removed. */
int rrc_upstream_attempt_server(const struct rrc_attempt *a);
bool rrc_upstream_attempt_tcp(const struct rrc_attempt *a);

/* Reports that an attempt got no answer in time (a health failure for its server). */
void rrc_upstream_attempt_timeout(struct rrc_attempt *a);

#endif
