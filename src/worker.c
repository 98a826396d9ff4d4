/*
 * worker: a thread running one uv loop. See include/rrcache/worker.h.
 *
 * Stop sequence (in the worker's thread, after rrc_worker_stop_join sets stopping and wakes
 * it): stop reading new queries; when no query is in flight, or after RRC_SHUTDOWN_GRACE_MS,
 * answer what remains with SERVFAIL and close every handle; uv_run then returns and the loop
 * must close cleanly.
 */
#include "rrcache/worker.h"
#include "rrcache/listener.h"
#include "rrcache/log.h"
#include "rrcache/dnstap.h"
#include "rrcache/query.h"
#include "rrcache/redis_tier.h"
#include "rrcache/upstream.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void finish_now(struct rrc_worker *w);

static void adopt_config(struct rrc_worker *w)
{
	struct rrc_cfg_ref *cur = rrc_server_cfg_get(w->server);
	if (cur == w->cfg) {
		rrc_cfg_ref_put(cur);
		return;
	}
	if (rrc_upstreams_reconfigure(w->ups, cur->cfg) != 0) {
		rrc_log(RRC_LOG_ERR, RRC_LG_CONFIG,
			"worker %u: out of memory adopting the new "
			"configuration; keeping the old one",
			w->index);
		rrc_cfg_ref_put(cur);
		return;
	}
	rrc_cfg_ref_put(w->cfg);
	w->cfg = cur;
}

/* Once a second: publish this worker's top-K windows for readers (the HTTP thread), and every
 * RRC_TOP_TICK_MS move the windows on. Off the query path; the lock is held while the windows
 * are merged into the published copy (a few tens of microseconds), contended only by a scrape. */
static void on_stats_timer(uv_timer_t *t)
{
	struct rrc_worker *w = t->data;
	if (atomic_exchange(&w->top_reset, false))
		rrc_top_init(&w->top, w->top.sample, w->top.rnd);
	if (++w->stats_ticks % (RRC_TOP_TICK_MS / 1000) == 0)
		rrc_top_tick(&w->top);
	pthread_mutex_lock(&w->top_lock);
	for (unsigned c = 0; c < RRC_TOP_CATS; c++) {
		rrc_top_window(&w->top, c, false, &w->top_pub[c][0]);
		rrc_top_window(&w->top, c, true, &w->top_pub[c][1]);
	}
	pthread_mutex_unlock(&w->top_lock);
}

void rrc_worker_top(struct rrc_worker *w, enum rrc_top_cat cat, bool hour, struct rrc_topk *into)
{
	pthread_mutex_lock(&w->top_lock);
	rrc_topk_merge(into, &w->top_pub[cat][hour ? 1 : 0]);
	pthread_mutex_unlock(&w->top_lock);
}

static void on_grace(uv_timer_t *t)
{
	struct rrc_worker *w = t->data;
	finish_now(w);
}

static void on_async(uv_async_t *a)
{
	struct rrc_worker *w = a->data;
	if (w->stopping) {
		if (w->stop_begun)
			return;
		w->stop_begun = true;
		rrc_listener_stop_accepting(w);
		uv_timer_start(&w->grace, on_grace, RRC_SHUTDOWN_GRACE_MS, 0);
		rrc_worker_check_done(w);
		return;
	}
	adopt_config(w);
}

static void on_closed_noop(uv_handle_t *h)
{
	(void)h;
}

static void finish_now(struct rrc_worker *w)
{
	if (uv_is_closing((uv_handle_t *)&w->async))
		return;
	rrc_query_abort_all(w);
	rrc_listener_close_all(w);
	if (w->ups) {
		rrc_upstreams_close(w->ups);
		w->ups = NULL;
	}
	if (w->redis) {
		rrc_redis_tier_close(w->redis);
		w->redis = NULL;
	}
	uv_close((uv_handle_t *)&w->grace, on_closed_noop);
	uv_close((uv_handle_t *)&w->stats_timer, on_closed_noop);
	uv_close((uv_handle_t *)&w->async, on_closed_noop);
}

void rrc_worker_tap(struct rrc_worker *w, const struct rrc_dnstap_msg *m)
{
	if (!rrc_dnstap_wants(w->tap, m->type))
		return;
	if (rrc_dnstap_log(w->tap, w->index, m))
		w->st.dnstap_sent++;
	else
		w->st.dnstap_dropped++;
}

uint64_t rrc_worker_wall_us(const struct rrc_worker *w, uint64_t mono_us)
{
	return (uint64_t)((int64_t)mono_us + w->wall_offset_us);
}

void rrc_worker_check_done(struct rrc_worker *w)
{
	if (w->stopping && w->stop_begun && w->n_inflight == 0 && w->conns == NULL)
		finish_now(w);
}

static void worker_main(void *arg)
{
	struct rrc_worker *w = arg;
	int rc = uv_run(&w->loop, UV_RUN_DEFAULT);
	(void)rc;
}

struct rrc_worker *rrc_worker_create(struct rrc_server *s, unsigned index, struct rrc_cfg_ref *cfg,
				     char err[RRC_ERR_LEN])
{
	struct rrc_worker *w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return NULL;
	}
	w->index = index;
	w->server = s;
	w->cache = rrc_server_cache(s);
	w->cfg = cfg;
	w->inflight_buckets = RRC_INFLIGHT_BUCKETS;
	rrc_query_init_pools(w);
	rrc_upstream_init_pool(w);
	w->inflight = calloc(w->inflight_buckets, sizeof(*w->inflight));
	if (getrandom(w->hash_key, sizeof(w->hash_key), 0) != (ssize_t)sizeof(w->hash_key) ||
	    !w->inflight || uv_loop_init(&w->loop) != 0) {
		snprintf(err, RRC_ERR_LEN, "cannot set up worker %u", index);
		free(w->inflight);
		free(w);
		return NULL;
	}
	uv_async_init(&w->loop, &w->async, on_async);
	w->async.data = w;
	uv_timer_init(&w->loop, &w->grace);
	w->grace.data = w;
	w->tap = rrc_server_dnstap(s);
	{
		struct timespec rt;
		clock_gettime(CLOCK_REALTIME, &rt);
		w->wall_offset_us = (int64_t)rt.tv_sec * 1000000 + rt.tv_nsec / 1000 -
				    (int64_t)(uv_hrtime() / 1000);
	}
	rrc_top_init(&w->top, cfg->cfg->stats.top_sample, (uint32_t)(uintptr_t)w ^ index);
	for (unsigned c = 0; c < RRC_TOP_CATS; c++) {
		rrc_topk_init(&w->top_pub[c][0]);
		rrc_topk_init(&w->top_pub[c][1]);
	}
	pthread_mutex_init(&w->top_lock, NULL);
	uv_timer_init(&w->loop, &w->stats_timer);
	w->stats_timer.data = w;
	uv_timer_start(&w->stats_timer, on_stats_timer, 1000, 1000);
	w->ups = rrc_upstreams_create(w, cfg->cfg);
	if (!w->ups) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		goto fail;
	}
	if (rrc_listener_open(w, cfg->cfg, err) != 0)
		goto fail;
	if (cfg->cfg->redis.enabled) {
		w->redis = rrc_redis_tier_create(w, cfg->cfg);
		if (!w->redis) {
			snprintf(err, RRC_ERR_LEN, "out of memory");
			goto fail;
		}
	}
	return w;
fail:
	rrc_worker_destroy(w);
	return NULL;
}

int rrc_worker_start(struct rrc_worker *w)
{
	int rc = rrc_listener_start(w);
	if (rc)
		return rc;
	return uv_thread_create(&w->thread, worker_main, w);
}

void rrc_worker_notify(struct rrc_worker *w)
{
	uv_async_send(&w->async);
}

void rrc_worker_stop_join(struct rrc_worker *w)
{
	w->stopping = true;
	uv_async_send(&w->async);
	uv_thread_join(&w->thread);
	w->thread = 0;
}

void rrc_worker_destroy(struct rrc_worker *w)
{
	if (!w)
		return;
	if (!uv_is_closing((uv_handle_t *)&w->async)) {
		/* Never started (or a failed start): close everything here. */
		finish_now(w);
	}
	uv_run(&w->loop, UV_RUN_DEFAULT);
	int rc = uv_loop_close(&w->loop);
	RRC_FAILS(rc == 0);
	if (w->cfg)
		rrc_cfg_ref_put(w->cfg);
	rrc_pool_drain(&w->pool_query);
	rrc_pool_drain(&w->pool_waiter);
	rrc_pool_drain(&w->pool_attempt);
	pthread_mutex_destroy(&w->top_lock);
	free(w->udp);
	free(w->tcp);
	free(w->inflight);
	free(w);
}
