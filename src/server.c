/*
 * server: workers, shared cache, configuration swap, TCP admission. See
 * include/rrcache/server.h.
 */
#include "rrcache/server.h"
#include "rrcache/dnstap.h"
#include "rrcache/log.h"
#include "rrcache/worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Buckets of the per-client TCP connection table. */
#define TCP_CLIENT_BUCKETS 1024

struct tcp_client {
	struct tcp_client *next;
	uint8_t addr[16];
	unsigned count;
};

struct rrc_server {
	struct rrc_cache *cache;
	pthread_mutex_t cfg_lock;
	struct rrc_cfg_ref *cur;
	unsigned generation;
	struct rrc_worker **workers;
	unsigned n_workers;
	atomic_bool running;	/* read by the HTTP thread */
	struct rrc_dnstap *tap; /* the query log, or NULL */

	pthread_mutex_t tcp_lock;
	unsigned tcp_total;
	struct tcp_client *tcp_clients[TCP_CLIENT_BUCKETS];
};

static struct rrc_cfg_ref *ref_new(struct rrc_config *cfg, unsigned generation)
{
	struct rrc_cfg_ref *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->acl = rrc_acl_create(cfg->acl_rules, cfg->n_acl_rules);
	if (!r->acl) {
		free(r);
		return NULL;
	}
	r->cfg = cfg;
	r->generation = generation;
	atomic_init(&r->refs, 1);
	return r;
}

void rrc_cfg_ref_put(struct rrc_cfg_ref *ref)
{
	if (atomic_fetch_sub(&ref->refs, 1) != 1)
		return;
	rrc_acl_destroy(ref->acl);
	rrc_config_free(ref->cfg);
	free(ref);
}

struct rrc_cfg_ref *rrc_server_cfg_get(struct rrc_server *s)
{
	pthread_mutex_lock(&s->cfg_lock);
	struct rrc_cfg_ref *r = s->cur;
	atomic_fetch_add(&r->refs, 1);
	pthread_mutex_unlock(&s->cfg_lock);
	return r;
}

struct rrc_cache *rrc_server_cache(struct rrc_server *s)
{
	return s->cache;
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
	pthread_mutex_init(&s->tcp_lock, NULL);
	s->cur = ref_new(cfg, 0);
	s->cache = rrc_cache_create(cfg->cache_size);
	if (s->cache)
		rrc_cache_set_stale(s->cache, cfg->serve_stale ? cfg->max_stale : 0);
	s->workers = calloc(cfg->workers, sizeof(*s->workers));
	if (!s->cur || !s->cache || !s->workers) {
		if (!s->cur)
			rrc_config_free(cfg);
		snprintf(err, RRC_ERR_LEN, "out of memory");
		goto fail;
	}
	if (cfg->dnstap.enabled) {
		s->tap = rrc_dnstap_start(cfg, cfg->workers, err);
		if (!s->tap)
			goto fail;
	}
	for (unsigned i = 0; i < cfg->workers; i++) {
		s->workers[i] = rrc_worker_create(s, i, rrc_server_cfg_get(s), err);
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
	if (!listen_same)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"listen addresses changed: they take effect at the next restart");
	if (cfg->workers != old->workers)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"workers changed: it takes effect at the next restart");
	if (cfg->stats.enabled != old->stats.enabled ||
	    !rrc_addr_equal(&cfg->stats.listen, &old->stats.listen) ||
	    strcmp(cfg->stats.token, old->stats.token) != 0 ||
	    cfg->stats.n_allow != old->stats.n_allow)
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"stats settings changed: they take effect at the next restart");
	if (!redis_same(&cfg->redis, &old->redis))
		rrc_log(RRC_LOG_WARN, RRC_LG_CONFIG,
			"redis settings changed: they take effect at the next restart");
	struct rrc_cfg_ref *r = ref_new(cfg, s->generation + 1);
	if (!r) {
		rrc_config_free(cfg);
		return -ENOMEM;
	}
	rrc_cache_set_budget(s->cache, cfg->cache_size);
	rrc_cache_set_stale(s->cache, cfg->serve_stale ? cfg->max_stale : 0);
	rrc_log_set_level(cfg->log_level);
	pthread_mutex_lock(&s->cfg_lock);
	struct rrc_cfg_ref *prev = s->cur;
	s->cur = r;
	s->generation++;
	pthread_mutex_unlock(&s->cfg_lock);
	rrc_cfg_ref_put(prev);
	for (unsigned i = 0; i < s->n_workers; i++)
		rrc_worker_notify(s->workers[i]);
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
	if (s->cur)
		rrc_cfg_ref_put(s->cur);
	rrc_cache_destroy(s->cache);
	for (unsigned b = 0; b < TCP_CLIENT_BUCKETS; b++) {
		struct tcp_client *c = s->tcp_clients[b];
		while (c) {
			struct tcp_client *n = c->next;
			free(c);
			c = n;
		}
	}
	pthread_mutex_destroy(&s->cfg_lock);
	pthread_mutex_destroy(&s->tcp_lock);
	free(s);
}

static void client_addr(const struct sockaddr *sa, uint8_t out[16])
{
	memset(out, 0, 16);
	if (sa->sa_family == AF_INET)
		memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

static unsigned client_bucket(const uint8_t a[16])
{
	uint32_t h = 2166136261u; /* FNV-1a: the table only spreads counts, it is not exposed */
	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 16777619u;
	return h % TCP_CLIENT_BUCKETS;
}

bool rrc_server_tcp_admit(struct rrc_server *s, const struct sockaddr *addr, unsigned max_total,
			  unsigned max_per_client)
{
	uint8_t a[16];
	client_addr(addr, a);
	unsigned b = client_bucket(a);
	bool ok = false;
	pthread_mutex_lock(&s->tcp_lock);
	struct tcp_client *c = s->tcp_clients[b];
	while (c && memcmp(c->addr, a, 16) != 0)
		c = c->next;
	if (s->tcp_total >= max_total || (c && c->count >= max_per_client))
		goto out;
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			goto out;
		memcpy(c->addr, a, 16);
		c->next = s->tcp_clients[b];
		s->tcp_clients[b] = c;
	}
	c->count++;
	s->tcp_total++;
	ok = true;
out:
	pthread_mutex_unlock(&s->tcp_lock);
	return ok;
}

void rrc_server_tcp_release(struct rrc_server *s, const struct sockaddr *addr)
{
	uint8_t a[16];
	client_addr(addr, a);
	unsigned b = client_bucket(a);
	pthread_mutex_lock(&s->tcp_lock);
	struct tcp_client **pp = &s->tcp_clients[b];
	while (*pp && memcmp((*pp)->addr, a, 16) != 0)
		pp = &(*pp)->next;
	if (*pp) {
		s->tcp_total--;
		if (--(*pp)->count == 0) {
			struct tcp_client *c = *pp;
			*pp = c->next;
			free(c);
		}
	}
	pthread_mutex_unlock(&s->tcp_lock);
}

void rrc_server_sum_stats(struct rrc_server *s, struct rrc_worker_stats *out)
{
	memset(out, 0, sizeof(*out));
	uint64_t *o = (uint64_t *)out;
	for (unsigned i = 0; i < s->n_workers; i++) {
		const uint64_t *in = (const uint64_t *)&s->workers[i]->st;
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
		atomic_store(&s->workers[i]->top_reset, true);
}

struct rrc_dnstap *rrc_server_dnstap(struct rrc_server *s)
{
	return s->tap;
}

bool rrc_server_running(const struct rrc_server *s)
{
	return s->running;
}

bool rrc_server_config_redis(const struct rrc_server *s)
{
	return s->cur->cfg->redis.enabled;
}

unsigned rrc_server_worker_count(const struct rrc_server *s)
{
	return s->n_workers;
}

const struct rrc_worker_stats *rrc_server_worker_stats(const struct rrc_server *s, unsigned i)
{
	return i < s->n_workers ? &s->workers[i]->st : NULL;
}
