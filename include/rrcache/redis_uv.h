/*
 * redis_uv: drives a hiredis (0.14) asynchronous context from a libuv loop.
 *
 * Unlike the adapter shipped with hiredis, a poll error is not dropped: it is handed to hiredis
 * as a read, which finds the socket's error and disconnects, so the context's callbacks run and
 * nothing waits forever. Timers are not hiredis's business here: redis_tier keeps its own.
 */
#ifndef RRCACHE_REDIS_UV_H
#define RRCACHE_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* Attaches ac to loop. Returns 0, or a negative errno (ac is then left unattached). The
 * adapter's memory is released when hiredis frees the context (its cleanup hook). */
int rrc_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
