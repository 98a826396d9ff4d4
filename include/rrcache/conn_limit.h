/*
 * conn_limit: the count of open TCP connections, in all and per client address, shared by
 * every worker (RFC 7766 §6.2.2: a server should limit both). A worker asks before it keeps
 * a new connection and gives the place back when the connection closes.
 *
 * One mutex guards a small hash table of the clients that hold connections; it is taken once
 * per connection opened or closed, never per query. Pure: no uv.h.
 */
#ifndef RRCACHE_CONN_LIMIT_H
#define RRCACHE_CONN_LIMIT_H

#include "rrcache/defs.h"

#include <sys/socket.h>

struct rrc_conn_limit;

/* Returns an empty table, or NULL when out of memory. */
struct rrc_conn_limit *rrc_conn_limit_create(void);
void rrc_conn_limit_destroy(struct rrc_conn_limit *l);

/* Admits a connection from addr when fewer than max_total are open in all and fewer than
 * max_per_client from addr. Returns true and counts it; rrc_conn_limit_release undoes it.
 * Any thread. */
bool rrc_conn_limit_take(struct rrc_conn_limit *l, const struct sockaddr *addr, unsigned max_total,
			 unsigned max_per_client);
void rrc_conn_limit_release(struct rrc_conn_limit *l, const struct sockaddr *addr);

#endif
