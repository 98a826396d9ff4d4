/*
 * worker: a thread running one uv loop. See include/rrcache/worker.h.
 *
 * Wiring: upstreams and the Redis tier first (they need only the env), then the queries (which
 * use both), then the listeners (which hand every message to rrc_query_handle).
 *
 * Stop sequence (in the worker's thread, after rrc_worker_stop_join sets stopping and wakes
 * it): the listeners stop reading new queries; a check handle, run after every poll phase,
 * looks at rrc_queries_inflight() and rrc_listeners_open(); when both are zero, or after
 * RRC_SHUTDOWN_GRACE_MS, what remains is answered with SERVFAIL (or a stale answer) and every
 * module is closed in the reverse order of creation; uv_run then returns and the loop must
 * close cleanly.
 */
#include "rrcache/worker.h"
#include "rrcache/dnstap.h"
#include "rrcache/env.h"
#include "rrcache/listener.h"
#include "rrcache/log.h"
#include "rrcache/query.h"
#include "rrcache/redis_tier.h"
#include "rrcache/upstream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rrc_worker {
	unsigned index;
	uv_loop_t loop;
	uv_thread_t thread;
	bool thread_started;
	uv_async_t async; /* a new configuration, or the stop request */
	uv_timer_t grace; /* the end of a stop's grace */
	uv_check_t drain; /* during a stop: are the queries and connections done? */
	uv_timer_t stats_timer;
	bool finished; /* every handle was asked to close */

	struct rrc_env env; /* what the modules share; env.cfg is the configuration in force */
	struct rrc_tap tap;
	struct rrc_worker_stats st;
	struct rrc_top top; /* top-K, this worker's own */
	unsigned stats_ticks;
	_Atomic(struct rrc_cfg_ref *) next_cfg;	  /* handed over, not yet adopted */
	atomic_uint generation;			  /* of the configuration in force */
	atomic_bool top_reset;			  /* set by any thread: start the top-K afresh */
	pthread_mutex_t top_lock;		  /* guards top_pub */
	struct rrc_topk top_pub[RRC_TOP_CATS][2]; /* last minute, last hour: for readers */

	struct rrc_upstreams *ups;
	struct rrc_redis_tier *redis; /* NULL without Redis */
	struct rrc_queries *queries;
	struct rrc_listeners *listeners;

	atomic_bool stopping; /* set by the server's thread */
	bool stop_begun;
};

static void finish_now(struct rrc_worker *w);

static void adopt_config(struct rrc_worker *w)
{
	struct rrc_cfg_ref *next = atomic_exchange(&w->next_cfg, NULL);
	if (!next)
		return;
	struct rrc_cfg_ref *prev = w->env.cfg;
	w->env.cfg = next;
	if (rrc_upstreams_reconfigure(w->ups) != 0) {
		rrc_log(RRC_LOG_ERR, RRC_LG_CONFIG,
			"worker %u: out of memory adopting the new configuration; keeping the "
			"old one",
			w->index);
		w->env.cfg = prev;
		rrc_cfg_ref_put(next);
		return;
	}
	atomic_store(&w->generation, next->generation);
	rrc_cfg_ref_put(prev);
}

unsigned rrc_worker_generation(const struct rrc_worker *w)
{
	return atomic_load(&w->generation);
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

void rrc_worker_top_reset(struct rrc_worker *w)
{
	atomic_store(&w->top_reset, true);
}

const struct rrc_worker_stats *rrc_worker_stats(const struct rrc_worker *w)
{
	return &w->st;
}

static bool drained(const struct rrc_worker *w)
{
	return (!w->queries || rrc_queries_inflight(w->queries) == 0) &&
	       (!w->listeners || rrc_listeners_open(w->listeners) == 0);
}

static void on_drain_check(uv_check_t *h)
{
	struct rrc_worker *w = h->data;
	if (drained(w))
		finish_now(w);
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
		rrc_listeners_stop_accepting(w->listeners);
		if (drained(w)) {
			finish_now(w);
			return;
		}
		uv_timer_start(&w->grace, on_grace, RRC_SHUTDOWN_GRACE_MS, 0);
		uv_check_start(&w->drain, on_drain_check);
		return;
	}
	adopt_config(w);
}

/* Ends what is left and closes every handle, the modules in the reverse order of their
 * creation (the listeners after the queries, whose last answers they send). */
static void finish_now(struct rrc_worker *w)
{
	if (w->finished)
		return;
	w->finished = true;
	if (w->queries) {
		rrc_queries_abort_all(w->queries);
		rrc_queries_close(w->queries);
	}
	rrc_listeners_close(w->listeners);
	w->listeners = NULL;
	if (w->redis) {
		rrc_redis_tier_close(w->redis);
		w->redis = NULL;
	}
	if (w->ups) {
		rrc_upstreams_close(w->ups);
		w->ups = NULL;
	}
	uv_close((uv_handle_t *)&w->grace, NULL);
	uv_close((uv_handle_t *)&w->drain, NULL);
	uv_close((uv_handle_t *)&w->stats_timer, NULL);
	uv_close((uv_handle_t *)&w->async, NULL);
}

static void worker_main(void *arg)
{
	struct rrc_worker *w = arg;
	uv_run(&w->loop, UV_RUN_DEFAULT);
}

struct rrc_worker *rrc_worker_create(unsigned index, struct rrc_cfg_ref *cfg,
				     const struct rrc_worker_shared *shared, char err[RRC_ERR_LEN])
{
	struct rrc_worker *w = calloc(1, sizeof(*w));
	if (!w || uv_loop_init(&w->loop) != 0) {
		snprintf(err, RRC_ERR_LEN, "cannot set up worker %u: out of memory", index);
		free(w);
		rrc_cfg_ref_put(cfg);
		return NULL;
	}
	w->index = index;
	w->env = (struct rrc_env){.loop = &w->loop,
				  .worker = index,
				  .cfg = cfg,
				  .cache = shared->cache,
				  .dynblock = shared->dynblock,
				  .redis_master = shared->redis_master,
				  .st = &w->st,
				  .top = &w->top,
				  .tap = shared->dnstap ? &w->tap : NULL};
	if (shared->dnstap)
		rrc_tap_init(&w->tap, shared->dnstap, index, &w->st);
	atomic_init(&w->next_cfg, NULL);
	atomic_init(&w->generation, cfg->generation);
	uv_async_init(&w->loop, &w->async, on_async);
	w->async.data = w;
	uv_timer_init(&w->loop, &w->grace);
	w->grace.data = w;
	uv_check_init(&w->loop, &w->drain);
	w->drain.data = w;
	rrc_top_init(&w->top, cfg->cfg->stats.top_sample, (uint32_t)(uintptr_t)w ^ index);
	for (unsigned c = 0; c < RRC_TOP_CATS; c++) {
		rrc_topk_init(&w->top_pub[c][0]);
		rrc_topk_init(&w->top_pub[c][1]);
	}
	pthread_mutex_init(&w->top_lock, NULL);
	uv_timer_init(&w->loop, &w->stats_timer);
	w->stats_timer.data = w;
	uv_timer_start(&w->stats_timer, on_stats_timer, 1000, 1000);

	w->ups = rrc_upstreams_create(&w->env, err);
	if (!w->ups)
		goto fail;
	if (cfg->cfg->redis.enabled) {
		w->redis = rrc_redis_tier_create(&w->env);
		if (!w->redis) {
			snprintf(err, RRC_ERR_LEN, "worker %u: out of memory", index);
			goto fail;
		}
	}
	w->queries = rrc_queries_create(&w->env, w->ups, w->redis);
	if (!w->queries) {
		snprintf(err, RRC_ERR_LEN, "worker %u: out of memory", index);
		goto fail;
	}
	w->listeners =
		rrc_listeners_create(&w->env, shared->tcp_limit, rrc_query_handle, w->queries, err);
	if (!w->listeners)
		goto fail;
	return w;
fail:
	rrc_worker_destroy(w);
	return NULL;
}

int rrc_worker_start(struct rrc_worker *w)
{
	int rc = rrc_listeners_start(w->listeners);
	if (rc)
		return rc;
	rc = uv_thread_create(&w->thread, worker_main, w);
	w->thread_started = rc == 0;
	return rc;
}

void rrc_worker_set_config(struct rrc_worker *w, struct rrc_cfg_ref *cfg)
{
	struct rrc_cfg_ref *unadopted = atomic_exchange(&w->next_cfg, cfg);
	if (unadopted)
		rrc_cfg_ref_put(unadopted);
	uv_async_send(&w->async);
}

void rrc_worker_stop_join(struct rrc_worker *w)
{
	if (!w->thread_started)
		return;
	w->stopping = true;
	uv_async_send(&w->async);
	uv_thread_join(&w->thread);
	w->thread_started = false;
}

void rrc_worker_destroy(struct rrc_worker *w)
{
	if (!w)
		return;
	/* Never started, or a failed start: close everything here. */
	finish_now(w);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	int rc = uv_loop_close(&w->loop);
	RRC_FAILS(rc == 0);
	rrc_queries_destroy(w->queries); /* its handles closed in the run above */
	rrc_cfg_ref_put(atomic_exchange(&w->next_cfg, NULL));
	rrc_cfg_ref_put(w->env.cfg);
	pthread_mutex_destroy(&w->top_lock);
	free(w);
}
