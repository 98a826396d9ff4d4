/*
 * http: the statistics endpoint, on libmicrohttpd's own thread (stats.listen, default
 * 127.0.0.1:9153; --metrics).
 *
 *   GET  /metrics               Prometheus text format 0.0.4
 *   GET  /api/v1/stats          counters, cache, latency percentiles (JSON)
 *   GET  /api/v1/upstreams      per upstream: health, queries, timeouts, errors, RTT (JSON)
 *   GET  /api/v1/top?window=1m|1h   the top-K tables (JSON)
 *   POST /api/v1/cache/flush    name=NAME or nothing (all): L1, and with Redis the fleet
 *   POST /api/v1/top/reset      start the top-K afresh
 *   GET  /healthz               the process runs
 *   GET  /readyz                listening and at least one upstream up (else 503)
 *
 * Clients outside stats.allow are refused at accept; writes need "Authorization: Bearer
 * <stats.token>" (with no token configured, writes are refused). Bounded: stats.max_connections,
 * 8 per client, 10 s idle, 16 KiB of request memory, 4 KiB of POST body. The token, the ACL
 * and top_k are read from the configuration in force at each request (a reload applies them).
 * A scrape reads the workers' counters without stopping them (see stats.h). A fleet flush runs
 * on redis_admin's thread while its connection waits suspended, one at a time (503 meanwhile).
 */
#ifndef RRCACHE_HTTP_H
#define RRCACHE_HTTP_H

#include "rrcache/config.h"

struct rrc_server;
struct rrc_http;

/* Starts listening. Returns NULL with the reason in err. */
struct rrc_http *rrc_http_start(struct rrc_server *s, const struct rrc_config *cfg,
				char err[RRC_ERR_LEN]);
void rrc_http_stop(struct rrc_http *h);

#endif
