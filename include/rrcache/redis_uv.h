/*
 * redis_uv: drives a hiredis (0.14) asynchronous context from a libuv loop.
 *
 * Unlike the adapter shipped with hiredis, a poll error is not dropped: it is handed to hiredis
 * as a read, which finds the socket's error and disconnects, so the context's callbacks run and
 * nothing waits forever. Timers are not hiredis's business here: redis_tier keeps its own.
 *
 * No byte from the server may abort the process or take unbounded memory. hiredis 0.14 aborts
 * (an assertion) on a reply nobody asked for, and buffers a reply of any size before it parses
 * it. So the adapter builds the reply objects itself and refuses, as a protocol error that
 * ends the connection: a reply when no command waits for one (a greeting, one reply too many)
 * on a connection that is not subscribed; an array of more than RRC_REDIS_MAX_ELEMENTS; and
 * input held unparsed beyond max_input bytes (a reply larger than any the caller can use).
 * The connection is then freed, hiredis calls every pending command back with NULL and the
 * disconnect callback with an error, and rrc_redis_uv_refused() says why.
 */
#ifndef RRCACHE_REDIS_UV_H
#define RRCACHE_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* Elements a reply array may have: rrcache's commands get plain values, and a subscription's
 * messages are arrays of three. */
#define RRC_REDIS_MAX_ELEMENTS 16
/* Elements of one reply, nested arrays' included. */
#define RRC_REDIS_MAX_TOTAL 1024
/* Replicas a master's ROLE may list on a Sentinel connection (its array is longer than
 * RRC_REDIS_MAX_ELEMENTS allows a plain one). */
#define RRC_REDIS_ROLE_MAX_REPLICAS 1024

/* Attaches ac to loop; a reply still incomplete with more than max_input bytes received is
 * refused. Returns 0, or a negative errno (ac is then left unattached). The adapter's memory
 * is released when hiredis frees the context (its cleanup hook). */
int rrc_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop, size_t max_input);

/* Starts a connection to host:port (or the unix socket path, when not NULL) attached to loop;
 * NULL with the reason in why. */
redisAsyncContext *rrc_redis_uv_connect(uv_loop_t *loop, const char *host, uint16_t port,
					const char *path, size_t max_input, char *why, size_t cap);

/* Other bounds for ac's replies (a cluster's slot map is larger than any value). */
void rrc_redis_uv_limits(redisAsyncContext *ac, size_t max_input, size_t max_elements,
			 size_t max_total);

/* A reader (no connection) that builds replies with the same checks, for tests and fuzzing;
 * freed with rrc_redis_uv_reader_free(). NULL when out of memory. */
redisReader *rrc_redis_uv_reader(size_t max_elements, size_t max_total);
void rrc_redis_uv_reader_free(redisReader *r);

/* Why the adapter refused what the server of ac sent, or NULL when it did not. Valid until
 * the disconnect callback of ac returns. */
const char *rrc_redis_uv_refused(const redisAsyncContext *ac);

#endif
