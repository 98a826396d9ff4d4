/*
 * server: workers, shared cache, configuration swap. See include/rrcache/server.h.
 */
#include "rrcache/server.h"
#include "rrcache/conn_limit.h"
#include "rrcache/dnstap.h"
#include "rrcache/log.h"
#include "rrcache/redis_master.h"
#include "rrcache/worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

/* How long a reload waits for each worker to adopt the new configuration: a worker does it at
 * its next loop iteration, which a busy loop reaches within a batch (a few milliseconds). */
#define RRC_RELOAD_WAIT_MS 2000

struct rrc_server {
	struct rrc_cache *cache;
	struct rrc_dynblock *dynblock;
	struct rrc_redis_master *redis_master; /* with Redis Sentinel */
	struct rrc_conn_limit *tcp_limit;
	struct rrc_dnstap *tap; /* the query log, or NULL */
	pthread_mutex_t cfg_lock;
	struct rrc_cfg_ref *cur;
	unsigned generation;
	struct rrc_redis_conf redis; /* as the workers' tiers run with it */
	struct rrc_worker **workers;
	unsigned n_workers;
	atomic_bool running; /* read by the HTTP thread */
};

struct rrc_cfg_ref *rrc_server_cfg_get(struct rrc_server *s)
{
	pthread_mutex_lock(&s->cfg_lock);
	struct rrc_cfg_ref *r = rrc_cfg_ref_hold(s->cur);
	pthread_mutex_unlock(&s->cfg_lock);
	return r;
}

struct rrc_cache *rrc_server_cache(struct rrc_server *s)
{
	return s->cache;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

long rrc_server_save_cache(struct rrc_server *s, char err[RRC_ERR_LEN])
{
	struct rrc_cfg_ref *ref = rrc_server_cfg_get(s);
	const struct rrc_config *cfg = ref->cfg;
	long n = -EINVAL;
	if (!cfg->cache_save_file[0]) {
		snprintf(err, RRC_ERR_LEN, "cache.save_file is not set");
	} else {
		/* Sealed with the fleet's keys, as values in Redis are. */
		struct rrc_l2_keys keys;
		rrc_l2_derive_keys(cfg->redis.key_secret, &keys);
		n = rrc_cachefile_save(s->cache, cfg->cache_save_file, &keys, uv_hrtime() / 1000000,
				       wall_ms(), err);
	}
	rrc_cfg_ref_put(ref);
	return n;
}

int rrc_server_load_cache(struct rrc_server *s, struct rrc_cachefile_stats *st,
			  char err[RRC_ERR_LEN])
{
	const struct rrc_config *cfg = s->cur->cfg;
	if (!cfg->cache_save_file[0]) {
		snprintf(err, RRC_ERR_LEN, "cache.save_file is not set");
		return -EINVAL;
	}
	struct rrc_l2_keys keys;
	rrc_l2_derive_keys(cfg->redis.key_secret, &keys);
	struct rrc_wire_ttl_policy pol = {.min_ttl = cfg->min_ttl,
					  .max_ttl = cfg->max_ttl,
					  .max_negative_ttl = cfg->max_negative_ttl};
	return rrc_cachefile_load(s->cache, cfg->cache_save_file, &keys, &pol,
				  uv_hrtime() / 1000000, wall_ms(), st, err);
}

struct rrc_dynblock *rrc_server_dynblock(struct rrc_server *s)
{
	return s->dynblock;
}

void rrc_server_reopen_files(struct rrc_server *s)
{
	rrc_dnstap_reopen(s->tap);
}

const struct rrc_redis_conf *rrc_server_redis(const struct rrc_server *s)
{
	return s->redis.enabled ? &s->redis : NULL;
}

struct rrc_server *rrc_server_create(struct rrc_config *cfg, char err[RRC_ERR_LEN])
{
	struct rrc_server *s = calloc(1, sizeof(*s));
	if (!s) {
		rrc_config_free(cfg);
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&s->cfg_lock, NULL);
	s->cur = rrc_cfg_ref_new(cfg, 0);
	if (!s->cur) {
		rrc_config_free(cfg);
		snprintf(err, RRC_ERR_LEN, "out of memory");
		goto fail;
	}
	s->cache = rrc_cache_create(cfg->cache_size);
	s->dynblock = rrc_dynblock_create(cfg->dynblock.watched, cfg->dynblock.max_blocks);
	s->tcp_limit = rrc_conn_limit_create();
	s->workers = calloc(cfg->workers, sizeof(*s->workers));
	if (!s->cache || !s->dynblock || !s->tcp_limit || !s->workers) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		goto fail;
	}
	rrc_cache_set_stale(s->cache, cfg->serve_stale ? cfg->max_stale : 0);
	rrc_cache_set_prefetch(s->cache, cfg->prefetch ? cfg->prefetch_min_hits : 0);
	s->redis = cfg->redis;
	if (cfg->redis.n_sentinels && !(s->redis_master = rrc_redis_master_new())) {
		snprintf(err, RRC_ERR_LEN, "out of memory");
		goto fail;
	}
	if (cfg->dnstap.enabled) {
		s->tap = rrc_dnstap_start(cfg, cfg->workers, err);
		if (!s->tap)
			goto fail;
	}
	struct rrc_worker_shared shared = {.cache = s->cache,
					   .tcp_limit = s->tcp_limit,
					   .dnstap = s->tap,
					   .dynblock = s->dynblock,
					   .redis_master = s->redis_master};
	for (unsigned i = 0; i < cfg->workers; i++) {
		s->workers[i] = rrc_worker_create(i, rrc_server_cfg_get(s), &shared, err);
		if (!s->workers[i])
			goto fail;
		s->n_workers++;
	}
	return s;
fail:
	rrc_server_destroy(s);
	return NULL;
}

int rrc_server_start(struct rrc_server *s)
{
	for (unsigned i = 0; i < s->n_workers; i++) {
		int rc = rrc_worker_start(s->workers[i]);
		if (rc) {
			rrc_log(RRC_LOG_ERR, RRC_LG_MAIN, "cannot start worker %u: %s", i,
				uv_strerror(rc));
			for (unsigned j = 0; j < i; j++)
				rrc_worker_stop_join(s->workers[j]);
			return rc;
		}
	}
	s->running = true;
	return 0;
}

static bool redis_same(const struct rrc_redis_conf *a, const struct rrc_redis_conf *b)
{
	return a->enabled == b->enabled && a->unix_socket == b->unix_socket &&
	       !strcmp(a->host, b->host) && a->port == b->port && !strcmp(a->path, b->path) &&
	       a->db == b->db && !strcmp(a->user, b->user) && !strcmp(a->password, b->password) &&
	       a->timeout_ms == b->timeout_ms && a->connect_timeout_ms == b->connect_timeout_ms &&
	       a->max_pending == b->max_pending && a->max_failures == b->max_failures &&
	       a->backoff_min_ms == b->backoff_min_ms && a->backoff_max_ms == b->backoff_max_ms &&
	       a->fleet_coalescing == b->fleet_coalescing && a->fleet_wait_ms == b->fleet_wait_ms &&
	       !strcmp(a->key_prefix, b->key_prefix) && !strcmp(a->key_secret, b->key_secret);
}

int rrc_server_reload(struct rrc_server *s, struct rrc_config *cfg)
{
	const struct rrc_config *old = s->cur->cfg;
	bool listen_same = cfg->n_listen == old->n_listen;
	for (unsigned i = 0; listen_same && i < cfg->n_listen; i++)
		listen_same = rrc_addr_equal(&cfg->listen[i], &old->listen[i]);
	listen_same = listen_same && cfg->n_listen_tls == old->n_listen_tls;
	for (unsigned i = 0; listen_same && i < cfg->n_listen_tls; i++)
		listen_same = rrc_addr_equal(&cfg->listen_tls[i], &old->listen_tls[i]);
	listen_same = listen_same && cfg->n_listen_https == old->n_listen_https;
	for (unsigned i = 0; listen_same && i < cfg->n_listen_https; i++)
		listen_same = rrc_addr_equal(&cfg->listen_https[i], &old->listen_https[i]);
	if (!listen_same)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"listen addresses changed: they take effect at the next restart");
	if (cfg->workers != old->workers)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"workers changed: it takes effect at the next restart");
	if (cfg->stats.enabled != old->stats.enabled ||
	    !rrc_addr_equal(&cfg->stats.listen, &old->stats.listen) ||
	    cfg->stats.max_connections != old->stats.max_connections)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"stats.listen or stats.max_connections changed: they take effect at the "
			"next restart");
	if (cfg->dynblock.watched != old->dynblock.watched ||
	    cfg->dynblock.max_blocks != old->dynblock.max_blocks)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"dynblock.watched or dynblock.max_blocks changed: they take effect at the "
			"next restart");
	if (!redis_same(&cfg->redis, &s->redis))
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"redis settings changed: they take effect at the next restart");
	if (cfg->dnstap.enabled != old->dnstap.enabled ||
	    strcmp(cfg->dnstap.file, old->dnstap.file) != 0 ||
	    strcmp(cfg->dnstap.socket, old->dnstap.socket) != 0)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"dnstap settings changed: they take effect at the next restart");
	struct rrc_cfg_ref *r = rrc_cfg_ref_new(cfg, s->generation + 1);
	if (!r) {
		rrc_config_free(cfg);
		return -ENOMEM;
	}
	rrc_cache_set_budget(s->cache, cfg->cache_size);
	rrc_cache_set_stale(s->cache, cfg->serve_stale ? cfg->max_stale : 0);
	rrc_cache_set_prefetch(s->cache, cfg->prefetch ? cfg->prefetch_min_hits : 0);
	rrc_log_set_level(cfg->log_level);
	pthread_mutex_lock(&s->cfg_lock);
	struct rrc_cfg_ref *prev = s->cur;
	s->cur = r;
	s->generation++;
	pthread_mutex_unlock(&s->cfg_lock);
	rrc_cfg_ref_put(prev);
	for (unsigned i = 0; i < s->n_workers; i++)
		rrc_worker_set_config(s->workers[i], rrc_cfg_ref_hold(r));
	/* Returns once every worker runs with it, so that "reloaded" means in force. A worker
	 * adopts it between two callbacks, within milliseconds; one that cannot (out of
	 * memory) keeps the old one and says so. */
	for (unsigned i = 0; s->running && i < s->n_workers; i++) {
		for (unsigned ms = 0; rrc_worker_generation(s->workers[i]) != r->generation &&
				      ms < RRC_RELOAD_WAIT_MS;
		     ms++) {
			struct timespec ts = {.tv_nsec = 1000000};
			nanosleep(&ts, NULL);
		}
		if (rrc_worker_generation(s->workers[i]) != r->generation)
			rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
				"worker %u has not adopted the new configuration yet", i);
	}
	return 0;
}

void rrc_server_stop(struct rrc_server *s)
{
	if (!s->running)
		return;
	for (unsigned i = 0; i < s->n_workers; i++)
		rrc_worker_stop_join(s->workers[i]);
	s->running = false;
}

void rrc_server_destroy(struct rrc_server *s)
{
	if (!s)
		return;
	rrc_server_stop(s);
	for (unsigned i = 0; i < s->n_workers; i++)
		rrc_worker_destroy(s->workers[i]);
	free(s->workers);
	rrc_dnstap_stop(s->tap); /* after the workers: nothing is logged any more */
	rrc_cfg_ref_put(s->cur);
	rrc_cache_destroy(s->cache);
	rrc_dynblock_destroy(s->dynblock);
	rrc_redis_master_free(s->redis_master);
	rrc_conn_limit_destroy(s->tcp_limit);
	pthread_mutex_destroy(&s->cfg_lock);
	free(s);
}

void rrc_server_sum_stats(struct rrc_server *s, struct rrc_worker_stats *out)
{
	memset(out, 0, sizeof(*out));
	uint64_t *o = (uint64_t *)out;
	for (unsigned i = 0; i < s->n_workers; i++) {
		const uint64_t *in = (const uint64_t *)rrc_worker_stats(s->workers[i]);
		for (size_t k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
			o[k] += in[k];
	}
}

void rrc_server_top(struct rrc_server *s, unsigned cat, bool hour, struct rrc_topk *into)
{
	for (unsigned i = 0; i < s->n_workers; i++)
		rrc_worker_top(s->workers[i], (enum rrc_top_cat)cat, hour, into);
}

void rrc_server_top_reset(struct rrc_server *s)
{
	for (unsigned i = 0; i < s->n_workers; i++)
		rrc_worker_top_reset(s->workers[i]);
}

bool rrc_server_running(const struct rrc_server *s)
{
	return s->running;
}

unsigned rrc_server_worker_count(const struct rrc_server *s)
{
	return s->n_workers;
}

const struct rrc_worker_stats *rrc_server_worker_stats(const struct rrc_server *s, unsigned i)
{
	return i < s->n_workers ? rrc_worker_stats(s->workers[i]) : NULL;
}
