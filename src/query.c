/*
 * query: one client query from arrival to answer. See include/rrcache/query.h.
 *
 * Hit path (no allocation, no ldns): wire check -> ACL -> key -> L1 copy -> patch -> return.
 * Miss path: coalesce on the key, else a struct rrc_query with a budget (client_timeout).
 * With Redis, L2 is asked first (its own deadline, redis_tier.h); a hit is answered, a lookup
 * another instance is resolving (fleet coalescing) is repeated after 5, 10, 20... ms up to
 * redis.fleet_wait, and anything else goes upstream at once. Upstream: a retry every upstream
 * timeout; every retry goes to another server while earlier attempts stay open, and the first
 * valid reply wins (U6). A cacheable answer goes to L1 and to Redis.
 *
 * Deadlines: a query's budget and its retry (or its next Redis look) are not libuv timers but
 * entries in the worker's deadline lists, one list per kind, each kept in order of due time.
 * Budgets and retries all have the same length, so a new one goes at the tail in one step (a
 * reload that shortens them walks back a little); one uv_timer_t fires for the earliest head.
 * A libuv timer per deadline cost a heap insertion and removal each, and two handles to close
 * per miss (about 1,500 instructions of a miss, callgrind). An ended query is freed just before
 * the loop next waits, so that no callback still running can meet it freed.
 *
 * Every answer given, now or later, is accounted here (account_answer): its rcode, the top-K
 * of NXDOMAIN and SERVFAIL names, and the query log's CLIENT_RESPONSE. The transport counts
 * what concerns it: queries it could not read, answers it could not send, latency.
 */
#include "rrcache/query.h"
#include "rrcache/cache.h"
#include "rrcache/dnstap.h"
#include "rrcache/dynblock.h"
#include "rrcache/env.h"
#include "rrcache/log.h"
#include "rrcache/msg.h"
#include "rrcache/pool.h"
#include "rrcache/redis_tier.h"
#include "rrcache/upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* A deadline in one of the worker's lists (loop time, milliseconds). */
struct deadlines {
	struct deadline *head, *tail;
};

struct deadline {
	struct deadline *prev, *next;
	uint64_t due;
	struct deadlines *in; /* the list it is queued in, NULL when none */
};

/* One client waiting for an answer: a held copy of its client and what its answer needs. */
struct waiter {
	struct waiter *next;
	struct rrc_client client;
	uint16_t id, flags;
	bool has_edns, edns_do;
	uint16_t limit;
	uint16_t qname_len;
	uint8_t qname[RRC_WIRE_MAX_NAME];
};

struct rrc_queries {
	const struct rrc_env *env;
	uint32_t slip_count; /* limited queries since the last one slipped (TC=1) */
	struct rrc_upstreams *ups;
	struct rrc_redis_tier *redis; /* NULL without Redis */
	/* In-flight queries by cache key (coalescing, RFC 5452 §5). */
	struct rrc_query **inflight;
	unsigned n_inflight;
	unsigned n_waiters; /* in all the queries in flight */
	uint8_t hash_key[16];
	/* Deadlines of the queries in flight, and the one timer for the earliest. */
	struct deadlines budgets, retries, polls;
	uv_timer_t tick;
	uint64_t tick_due; /* when tick fires, 0 when stopped */
	/* Ended queries, freed before the loop next waits. */
	struct rrc_query *ended;
	uv_prepare_t reaper;
	unsigned closes;
	bool closing;
	/* Recycled miss-path objects (see pool.h). */
	struct rrc_pool pool_query;
	struct rrc_pool pool_waiter;
	uint8_t ans[RRC_WIRE_MAX_MSG + 2]; /* answers to waiting clients being built */
};

struct rrc_query {
	struct rrc_queries *qs;
	struct rrc_query *hnext;
	uint64_t hash;
	bool in_table;
	bool done;
	bool no_cache;
	bool prefetch;		/* started by a late hit, without a client (cache.prefetch) */
	struct deadline budget; /* in budgets: the client's budget */
	struct deadline retry;	/* in retries or polls: the next attempt, or the next L2 look */
	struct waiter *waiters;
	unsigned n_waiters;
	struct rrc_attempt *att[RRC_QUERY_MAX_ATTEMPTS];
	unsigned n_att;
	unsigned live; /* attempts that may still deliver */
	struct rrc_attempt *last;
	uint64_t tried;
	struct rrc_redis_req *l2; /* the Redis lookup in flight, or NULL */
	uint64_t l2_since;	  /* when the first lookup went out */
	uint32_t l2_poll_ms;	  /* next wait while another instance resolves it */
	uint16_t qtype, qclass;
	uint8_t pool; /* the upstream pool its name is forwarded to (upstream.pools) */
	uint64_t ns;  /* that pool's part of the Redis key */
	uint16_t keylen;
	uint8_t key[RRC_WIRE_KEY_MAX];
	uint8_t *stale; /* an expired answer to fall back on (RFC 8767), or NULL */
	size_t stale_len;
	size_t upq_len; /* fills upq exactly: the object is sizeof(struct rrc_query) + upq_len */
	uint8_t upq[];
};

/* RFC 8767 §4: the TTL of an answer served stale. */
#define RRC_STALE_TTL 30
/* First wait before looking again at a key another instance of the fleet is resolving: about
 * one upstream round trip on a LAN; it doubles each time up to redis.fleet_wait. */
#define RRC_L2_POLL_FIRST_MS 5

static void waiter_client(const struct waiter *wt, struct rrc_wire_client *c)
{
	c->id = wt->id;
	c->flags = wt->flags;
	c->qname = wt->qname;
	c->qname_len = wt->qname_len;
	c->has_edns = wt->has_edns;
	c->edns_do = wt->edns_do;
	c->limit = wt->limit;
}

/* Logs a client's query (CLIENT_QUERY) or its answer (CLIENT_RESPONSE, stamped now) when the
 * query log wants it. */
static inline void tap_client(const struct rrc_env *env, enum rrc_dnstap_type type,
			      const struct rrc_client *c, const uint8_t *wire, size_t len)
{
	if (!rrc_tap_wants(env->tap, type))
		return;
	struct rrc_dnstap_msg m = {.type = type,
				   .tcp = c->tcp,
				   .tls = c->tls,
				   .doh = c->doh,
				   .query_addr = &c->peer.sa,
				   .response_addr = c->local_addr,
				   .query_time_us = rrc_tap_wall_us(env->tap, c->start_us),
				   .wire = wire,
				   .len = len};
	if (type == RRC_DT_CLIENT_RESPONSE)
		m.response_time_us = rrc_tap_wall_us(env->tap, uv_hrtime() / 1000);
	rrc_tap_log(env->tap, &m);
}

/* Counts an event of the client's prefix for the dynamic blocks (not for a network spared by
 * ratelimit.exempt), and logs a block it starts. */
static void watch(const struct rrc_env *env, const struct sockaddr *peer,
		  enum rrc_dynblock_reason kind)
{
	const struct rrc_cfg_ref *ref = env->cfg;
	if (ref->ratelimit_exempt && rrc_acl_allows(ref->ratelimit_exempt, peer))
		return;
	struct rrc_dynblock_entry e;
	if (!rrc_dynblock_count(env->dynblock, &ref->dynblock, peer, kind, uv_now(env->loop), &e))
		return;
	char text[RRC_DYNBLOCK_TEXT];
	rrc_dynblock_prefix_text(&e, text, sizeof(text));
	rrc_log(RRC_LOG_WARN, RRC_LG_ACL,
		"dynamic block of %s for %u s: %u %s a second over the last %u s", text,
		ref->dynblock.duration_ms / 1000, e.rate,
		kind == RRC_DB_NXDOMAIN ? "NXDOMAIN answers" : "queries past the cache",
		ref->dynblock.window_ms / 1000);
}

/* Accounts for an answer about to leave (not its latency, which the transport measures): its
 * rcode; for NXDOMAIN and SERVFAIL, its name in the top-K; an NXDOMAIN not of rrcache's own
 * making (own: a domain list's) for the dynamic blocks; and the query log's CLIENT_RESPONSE
 * when dnstap is on. */
static void account_answer(struct rrc_queries *qs, const struct rrc_client *c, const uint8_t *ans,
			   size_t len, bool own)
{
	const struct rrc_env *env = qs->env;
	if (len < RRC_WIRE_HDR)
		return;
	tap_client(env, RRC_DT_CLIENT_RESPONSE, c, ans, len);
	unsigned rcode = ans[3] & 0x0F;
	/* rrcache's own OPT, when there is one, is the last 11 bytes: its TTL's first byte holds
	 * the upper bits of the rcode (BADVERS = 16, RFC 6891 §6.1.3). */
	if (rrc_get16(ans + 10) > 0 && len >= RRC_WIRE_HDR + RRC_WIRE_OPT_LEN &&
	    ans[len - RRC_WIRE_OPT_LEN] == 0 && rrc_get16(ans + len - RRC_WIRE_OPT_LEN + 1) == 41)
		rcode |= (unsigned)ans[len - RRC_WIRE_OPT_LEN + 5] << 4;
	env->st->rcode[rrc_stats_rcode_slot(rcode)]++;
	if (rcode == RRC_RCODE_NXDOMAIN && !own && env->cfg->dynblock.nxdomain_rate)
		watch(env, &c->peer.sa, RRC_DB_NXDOMAIN);
	if ((rcode != RRC_RCODE_NXDOMAIN && rcode != RRC_RCODE_SERVFAIL) || len <= RRC_WIRE_HDR ||
	    !rrc_top_sampled(env->top))
		return;
	/* The name of the answer's question, lowercased (rrcache wrote it, but it is walked with
	 * the same bounds as any name). */
	uint8_t name[RRC_WIRE_MAX_NAME];
	size_t end, nlen;
	if (rrc_wire_name(ans, len, RRC_WIRE_HDR, &end, &nlen, name) != 0)
		return;
	rrc_top_add(env->top, rcode == RRC_RCODE_NXDOMAIN ? RRC_TOP_NXDOMAIN : RRC_TOP_SERVFAIL,
		    name, nlen);
}

/* Gives a waiting client its answer (len 0: none could be made; own: see account_answer) and
 * lets go of it. */
static void answer_waiter(struct rrc_queries *qs, struct waiter *wt, const uint8_t *buf, size_t len,
			  bool own)
{
	if (len) {
		account_answer(qs, &wt->client, buf, len, own);
		wt->client.ops->send(&wt->client, buf, len);
	}
	wt->client.ops->release(&wt->client);
}

/* Stores an answer in L1; a failure costs the next asker a miss, so it is counted. */
static void cache_store(struct rrc_queries *qs, const uint8_t *key, size_t keylen,
			const uint8_t *answer, size_t len, uint32_t lifetime)
{
	const struct rrc_env *env = qs->env;
	int rc =
		rrc_cache_insert(env->cache, key, keylen, answer, len, lifetime, uv_now(env->loop));
	if (rc != 0) {
		env->st->cache_insert_failures++;
		rrc_log_limited(RRC_LOG_DEBUG, RRC_LG_CACHE, "answer of %zu bytes not cached: %s",
				len, rc == -E2BIG ? "larger than a cache shard" : "out of memory");
	}
}

static void dl_remove(struct deadline *d)
{
	struct deadlines *l = d->in;
	if (!l)
		return;
	if (d->prev)
		d->prev->next = d->next;
	else
		l->head = d->next;
	if (d->next)
		d->next->prev = d->prev;
	else
		l->tail = d->prev;
	d->prev = d->next = NULL;
	d->in = NULL;
}

static void on_tick(uv_timer_t *t);

/* Queues d in l (out of any other list) due at due (loop ms), from the tail: one step when
 * deadlines come in order. */
static void dl_add(struct rrc_queries *qs, struct deadlines *l, struct deadline *d, uint64_t due)
{
	dl_remove(d);
	d->due = due;
	struct deadline *after = l->tail;
	while (after && after->due > due)
		after = after->prev;
	d->prev = after;
	d->next = after ? after->next : l->head;
	if (d->next)
		d->next->prev = d;
	else
		l->tail = d;
	if (after)
		after->next = d;
	else
		l->head = d;
	d->in = l;
	if (!qs->tick_due || due < qs->tick_due) {
		uint64_t now = uv_now(qs->env->loop);
		qs->tick_due = due;
		uv_timer_start(&qs->tick, on_tick, due > now ? due - now : 0, 0);
	}
}

static struct rrc_query *of_budget(struct deadline *d)
{
	return (struct rrc_query *)((char *)d - offsetof(struct rrc_query, budget));
}

static struct rrc_query *of_retry(struct deadline *d)
{
	return (struct rrc_query *)((char *)d - offsetof(struct rrc_query, retry));
}

static void free_ended(struct rrc_queries *qs)
{
	while (qs->ended) {
		struct rrc_query *q = qs->ended;
		qs->ended = q->hnext;
		rrc_pool_put(&qs->pool_query, q, sizeof(*q) + q->upq_len);
	}
}

static void on_reap(uv_prepare_t *h)
{
	free_ended(h->data);
	uv_prepare_stop(h);
}

static void table_remove(struct rrc_queries *qs, struct rrc_query *q)
{
	if (!q->in_table)
		return;
	struct rrc_query **pp = &qs->inflight[q->hash & (RRC_INFLIGHT_BUCKETS - 1)];
	while (*pp && *pp != q)
		pp = &(*pp)->hnext;
	RRC_REQUIRE(*pp == q);
	*pp = q->hnext;
	q->in_table = false;
}

/* Ends the query: no more answers can reach it; it is freed before the loop next waits. */
static void query_end(struct rrc_query *q)
{
	struct rrc_queries *qs = q->qs;
	q->done = true;
	table_remove(qs, q);
	qs->n_inflight--;
	if (q->l2) {
		rrc_redis_cancel(q->l2);
		q->l2 = NULL;
	}
	for (unsigned i = 0; i < q->n_att; i++)
		rrc_upstream_cancel(q->att[i]);
	q->n_att = 0;
	struct waiter *wt = q->waiters;
	while (wt) {
		struct waiter *next = wt->next;
		rrc_pool_put(&qs->pool_waiter, wt, sizeof(*wt));
		wt = next;
	}
	q->waiters = NULL;
	qs->n_waiters -= q->n_waiters;
	q->n_waiters = 0;
	free(q->stale);
	q->stale = NULL;
	dl_remove(&q->budget);
	dl_remove(&q->retry);
	q->hnext = qs->ended;
	qs->ended = q;
	if (!qs->closing)
		uv_prepare_start(&qs->reaper, on_reap);
}

/* Turns a stored answer copied into buf (len bytes) into client c's stale answer, in place:
 * every TTL 30. Returns its length, 0 if it cannot be made. */
static size_t stale_finish(uint8_t *buf, size_t len, size_t cap, const struct rrc_wire_client *c)
{
	if (len > cap || rrc_wire_set_ttls(buf, len, RRC_STALE_TTL) != 0)
		return 0;
	return rrc_wire_finish(buf, len, cap, 0, c);
}

/* Remembers that the upstreams failed this question (RFC 2308 §7.1): a SERVFAIL stored under
 * its key for cache.servfail_ttl seconds, so that a client repeating it is answered at once
 * and the upstreams are not asked again meanwhile. Per instance: never shared through Redis. */
static void remember_failure(struct rrc_query *q)
{
	const struct rrc_config *cfg = rrc_env_cfg(q->qs->env);
	if (q->no_cache || cfg->servfail_ttl == 0 || q->keylen <= RRC_WIRE_KEY_TAIL)
		return;
	uint8_t buf[RRC_WIRE_HDR + RRC_WIRE_KEY_MAX];
	size_t n = rrc_wire_build_query(buf, sizeof(buf), 0, q->key, q->keylen - RRC_WIRE_KEY_TAIL,
					q->qtype, q->qclass, 0, false, false);
	if (n == 0)
		return;
	rrc_put16(buf + 2, RRC_F_QR | RRC_F_RA | RRC_RCODE_SERVFAIL);
	cache_store(q->qs, q->key, q->keylen, buf, n, cfg->servfail_ttl);
}

/* Answers every waiter with the stale answer when there is one (RFC 8767: the refresh
 * failed), else with rcode (SERVFAIL), and ends the query. remember: the upstreams were asked
 * and failed (not a shutdown, not "all down"): remember it for the name. */
static void query_fail(struct rrc_query *q, unsigned rcode, bool remember)
{
	struct rrc_queries *qs = q->qs;
	/* A failed prefetch alone leaves the answer it was refreshing in place. */
	if (remember && !q->stale && !(q->prefetch && !q->waiters))
		remember_failure(q);
	struct rrc_worker_stats *st = qs->env->st;
	for (struct waiter *wt = q->waiters; wt; wt = wt->next) {
		struct rrc_wire_client c;
		waiter_client(wt, &c);
		size_t n = 0;
		if (q->stale) {
			memcpy(qs->ans, q->stale, q->stale_len);
			n = stale_finish(qs->ans, q->stale_len, sizeof(qs->ans), &c);
		}
		if (n) {
			st->stale_served++;
		} else {
			n = rrc_wire_synth_client(&c, q->qtype, q->qclass, rcode, qs->ans,
						  sizeof(qs->ans));
			st->servfail++;
		}
		answer_waiter(qs, wt, qs->ans, n, false);
	}
	query_end(q);
}

/* Gives the query a copy of a stale answer, if it has none yet. */
static void keep_stale(struct rrc_query *q, const uint8_t *stale, size_t len)
{
	if (!stale || q->stale)
		return;
	q->stale = malloc(len);
	if (q->stale) {
		memcpy(q->stale, stale, len);
		q->stale_len = len;
	}
}

static void on_attempt_reply(void *ctx, struct rrc_attempt *a, uint8_t *pkt, size_t len,
			     const struct rrc_wire_reply *r);

/* What a blocked name is answered (policy.block_response). */
static size_t blocked_answer(const struct rrc_policy_conf *pc, const uint8_t *pkt,
			     const struct rrc_wire_query *wq, uint8_t *out, size_t cap)
{
	static const uint8_t any4[4], any6[16];
	switch (pc->response) {
	case RRC_BLOCK_REFUSED:
		return rrc_wire_synth(pkt, wq, RRC_RCODE_REFUSED, false, out, cap);
	case RRC_BLOCK_NULL:
		if (wq->qtype == RRC_TYPE_A && wq->qclass == 1)
			return rrc_wire_synth_answer(pkt, wq, RRC_RCODE_NOERROR, RRC_TYPE_A, any4,
						     4, false, pc->block_ttl, out, cap);
		if (wq->qtype == RRC_TYPE_AAAA && wq->qclass == 1)
			return rrc_wire_synth_answer(pkt, wq, RRC_RCODE_NOERROR, RRC_TYPE_AAAA,
						     any6, 16, false, pc->block_ttl, out, cap);
		return rrc_wire_synth_answer(pkt, wq, RRC_RCODE_NOERROR, 0, NULL, 0, true,
					     pc->block_ttl, out, cap);
	case RRC_BLOCK_NODATA:
		return rrc_wire_synth_answer(pkt, wq, RRC_RCODE_NOERROR, 0, NULL, 0, true,
					     pc->block_ttl, out, cap);
	case RRC_BLOCK_NXDOMAIN:
	default:
		return rrc_wire_synth_answer(pkt, wq, RRC_RCODE_NXDOMAIN, 0, NULL, 0, true,
					     pc->block_ttl, out, cap);
	}
}

/* Counts a blocked answer by list, by the client's group (rrc_policy_conf_group: -1 is the
 * default group), and its name (lowercased wire form) in the top-K. */
static void count_blocked(const struct rrc_env *env, unsigned list, int group, const uint8_t *name,
			  size_t name_len)
{
	env->st->policy_blocked[list]++;
	env->st->policy_blocked_group[1 + group]++;
	if (rrc_top_sampled(env->top))
		rrc_top_add(env->top, RRC_TOP_BLOCKED, name, name_len);
}

/* CNAME cloaking: a blocked name behind a CNAME of an answer. */
struct cname_check {
	const struct rrc_policy *matcher;
	uint64_t mask;
	unsigned list;
};

static bool cname_is_blocked(void *ctx, const uint8_t *name, size_t name_len)
{
	struct cname_check *cc = ctx;
	return rrc_policy_check(cc->matcher, name, name_len, cc->mask, &cc->list) == RRC_PV_BLOCK;
}

/* True when answer (len bytes) leads through a CNAME to a blocked name; *list says which. */
static bool answer_cname_blocked(const struct rrc_policy_conf *pc, uint64_t mask,
				 const uint8_t *answer, size_t len, unsigned *list)
{
	if (len < RRC_WIRE_HDR || rrc_get16(answer + 6) == 0)
		return false;
	struct cname_check cc = {.matcher = pc->matcher, .mask = mask};
	if (!rrc_wire_any_cname(answer, len, cname_is_blocked, &cc))
		return false;
	*list = cc.list;
	return true;
}

/* The answer to a blocked name for a waiting client (its CNAME target was blocked): its
 * question rebuilt from what the waiter kept. The length, 0 if none could be made. */
static size_t blocked_for_waiter(const struct rrc_query *q, const struct waiter *wt,
				 const struct rrc_policy_conf *pc, uint8_t *out, size_t cap)
{
	struct rrc_wire_client c;
	waiter_client(wt, &c);
	uint8_t qpkt[RRC_WIRE_HDR + RRC_WIRE_MAX_NAME + 4 + RRC_WIRE_OPT_LEN];
	size_t qn = rrc_wire_synth_client(&c, q->qtype, q->qclass, 0, qpkt, sizeof(qpkt));
	struct rrc_wire_query wq;
	enum rrc_wire_reason why;
	if (!qn)
		return 0;
	rrc_put16(qpkt + 2, rrc_get16(qpkt + 2) & (uint16_t)~RRC_F_QR);
	if (rrc_wire_check_query(qpkt, qn, &wq, &why) != RRC_WIRE_OK)
		return 0;
	return blocked_answer(pc, qpkt, &wq, out, cap);
}

static bool cname_any(void *ctx, const uint8_t *name, size_t name_len)
{
	return true;
}

/* Answers every waiter from a stored answer (slen bytes) and ends the query. */
static void answer_waiters(struct rrc_query *q, const uint8_t *stored, size_t slen)
{
	struct rrc_queries *qs = q->qs;
	struct rrc_worker_stats *st = qs->env->st;
	const struct rrc_policy_conf *pc = &rrc_env_cfg(qs->env)->policy;
	/* CNAME cloaking, per client (each has its group's lists); only when the answer has a
	 * CNAME at all. */
	bool cnames = pc->matcher && slen >= RRC_WIRE_HDR && rrc_get16(stored + 6) > 0 &&
		      rrc_wire_any_cname(stored, slen, cname_any, NULL);
	for (struct waiter *wt = q->waiters; wt; wt = wt->next) {
		struct rrc_wire_client c;
		waiter_client(wt, &c);
		unsigned list;
		int group = cnames ? rrc_policy_conf_group(pc, &wt->client.peer.sa) : -1;
		uint64_t mask = rrc_policy_conf_mask(pc, group);
		if (cnames &&
		    rrc_policy_check(pc->matcher, q->key, wt->qname_len, mask, &list) ==
			    RRC_PV_PASS &&
		    answer_cname_blocked(pc, mask, stored, slen, &list)) {
			count_blocked(qs->env, list, group, q->key, wt->qname_len);
			st->answered++;
			answer_waiter(qs, wt, qs->ans,
				      blocked_for_waiter(q, wt, pc, qs->ans, sizeof(qs->ans)),
				      true);
			continue;
		}
		memcpy(qs->ans, stored, slen);
		size_t n = rrc_wire_finish(qs->ans, slen, sizeof(qs->ans), 0, &c);
		if (n && (rrc_get16(qs->ans + 2) & RRC_F_TC))
			st->truncated++;
		if ((rrc_get16(qs->ans + 2) & 0x0F) == RRC_RCODE_SERVFAIL)
			st->servfail++;
		st->answered++;
		answer_waiter(qs, wt, qs->ans, n, false);
	}
	query_end(q);
}

static bool start_attempt(struct rrc_query *q, int idx, bool tcp)
{
	if (q->n_att >= RRC_QUERY_MAX_ATTEMPTS)
		return false;
	struct rrc_attempt *a =
		rrc_upstream_send(q->qs->ups, idx, tcp, q->upq, q->upq_len, on_attempt_reply, q);
	if (!a)
		return false;
	q->att[q->n_att++] = a;
	q->live++;
	q->last = a;
	/* The next retry is an upstream timeout after the last attempt left. */
	struct rrc_queries *qs = q->qs;
	if (q->retry.in == &qs->retries)
		dl_add(qs, &qs->retries, &q->retry,
		       uv_now(qs->env->loop) + rrc_env_cfg(qs->env)->upstream_timeout_ms);
	return true;
}

/* Sends to the next server: one not tried yet if any is up, else any that is up. */
static void next_attempt(struct rrc_query *q)
{
	struct rrc_upstreams *u = q->qs->ups;
	unsigned n = rrc_upstreams_count(u);
	for (unsigned tries = 0; tries <= n; tries++) {
		int idx = rrc_upstreams_pick(u, q->pool, q->tried);
		if (idx < 0)
			idx = rrc_upstreams_pick(u, q->pool, 0);
		if (idx < 0)
			break;
		q->tried |= 1ull << idx;
		if (start_attempt(q, idx, false))
			return;
	}
	/* Nothing could be sent. If nothing else is in the air either, fail now rather than
	 * letting the client wait for the budget (all upstreams down). */
	if (q->live == 0)
		query_fail(q, RRC_RCODE_SERVFAIL, q->n_att > 0);
}

static void on_retry(struct rrc_query *q)
{
	if (q->done)
		return;
	if (q->last)
		rrc_upstream_attempt_timeout(q->last);
	if (q->n_att < RRC_QUERY_MAX_ATTEMPTS)
		next_attempt(q);
}

static void go_upstream(struct rrc_query *q)
{
	struct rrc_queries *qs = q->qs;
	dl_add(qs, &qs->retries, &q->retry,
	       uv_now(qs->env->loop) + rrc_env_cfg(qs->env)->upstream_timeout_ms);
	next_attempt(q);
}

static void on_l2(void *ctx, const struct rrc_l2_result *r);

/* Asks Redis. Returns false when the lookup was skipped (go upstream). */
static bool ask_l2(struct rrc_query *q)
{
	q->l2 = rrc_redis_get(q->qs->redis, q->key, q->keylen, q->ns, on_l2, q);
	return q->l2 != NULL;
}

static void on_l2_poll(struct rrc_query *q)
{
	if (q->done)
		return;
	if (!ask_l2(q))
		go_upstream(q);
}

static void on_l2(void *ctx, const struct rrc_l2_result *r)
{
	struct rrc_query *q = ctx;
	const struct rrc_env *env = q->qs->env;
	const struct rrc_config *cfg = rrc_env_cfg(env);
	q->l2 = NULL;
	if (q->done)
		return;
	if (r->stale)
		keep_stale(q, r->stale, r->stale_len);
	if (r->outcome == RRC_L2_HIT) {
		/* Checked like an upstream reply by the tier; its TTLs already aged. */
		cache_store(q->qs, q->key, q->keylen, r->answer, r->len, r->lifetime);
		answer_waiters(q, r->answer, r->len);
		return;
	}
	if (r->outcome == RRC_L2_LOCKED && q->prefetch && !q->waiters) {
		/* Another instance of the fleet refreshes it and writes it back. */
		q->qs->env->st->prefetch_fleet_skipped++;
		query_end(q);
		return;
	}
	if (r->outcome == RRC_L2_LOCKED) {
		/* Another instance is asking the upstream: its answer should appear shortly. */
		uint64_t waited = uv_now(env->loop) - q->l2_since;
		uint32_t next = q->l2_poll_ms ? q->l2_poll_ms : RRC_L2_POLL_FIRST_MS;
		if (waited + next <= cfg->redis.fleet_wait_ms) {
			q->l2_poll_ms = next * 2;
			dl_add(q->qs, &q->qs->polls, &q->retry, uv_now(env->loop) + next);
			return;
		}
	}
	go_upstream(q);
}

static void on_budget(struct rrc_query *q)
{
	if (q->done)
		return;
	if (q->last)
		rrc_upstream_attempt_timeout(q->last);
	query_fail(q, RRC_RCODE_SERVFAIL, q->n_att > 0);
}

/* Fires for the earliest deadline: every one due is handled, budgets first (a query out of
 * budget fails even when its retry is due too), then retries (periodic: the next is due a
 * timeout later, unless an attempt sent meanwhile set it), then Redis looks. */
static void on_tick(uv_timer_t *t)
{
	struct rrc_queries *qs = t->data;
	uint64_t now = uv_now(qs->env->loop);
	uint32_t every = rrc_env_cfg(qs->env)->upstream_timeout_ms;
	struct deadline *d;
	qs->tick_due = 0;
	while ((d = qs->budgets.head) && d->due <= now) {
		dl_remove(d);
		on_budget(of_budget(d));
	}
	while ((d = qs->retries.head) && d->due <= now) {
		dl_add(qs, &qs->retries, d, now + every);
		on_retry(of_retry(d));
	}
	while ((d = qs->polls.head) && d->due <= now) {
		dl_remove(d);
		on_l2_poll(of_retry(d));
	}
	uint64_t next = 0;
	const struct deadlines *lists[] = {&qs->budgets, &qs->retries, &qs->polls};
	for (size_t i = 0; i < 3; i++) {
		if (lists[i]->head && (!next || lists[i]->head->due < next))
			next = lists[i]->head->due;
	}
	if (next && next != qs->tick_due) {
		qs->tick_due = next;
		uv_timer_start(&qs->tick, on_tick, next > now ? next - now : 0, 0);
	} else if (!next && qs->tick_due) {
		qs->tick_due = 0;
		uv_timer_stop(&qs->tick);
	}
}

static void on_attempt_reply(void *ctx, struct rrc_attempt *a, uint8_t *pkt, size_t len,
			     const struct rrc_wire_reply *r)
{
	struct rrc_query *q = ctx;
	struct rrc_queries *qs = q->qs;
	const struct rrc_config *cfg = rrc_env_cfg(qs->env);
	if (q->done)
		return;
	q->live--;
	if (!pkt) {
		/* This server failed outright (U5): go on to another at once. */
		if (a == q->last || q->live == 0)
			next_attempt(q);
		return;
	}
	if (r->flags & RRC_F_TC) {
		/* RFC 2181 §9, RFC 7766 §5: a truncated answer is never used; ask over TCP. */
		int idx = rrc_upstream_attempt_server(a);
		if (rrc_upstream_attempt_tcp(a) || idx < 0 || !start_attempt(q, idx, true))
			next_attempt(q);
		return;
	}
	if (rrc_msg_check_reply(pkt, len) != 0) {
		qs->env->st->malformed_replies++;
		if (a == q->last || q->live == 0)
			next_attempt(q);
		return;
	}
	/* RFC 4035 §3.2.1: a client without DO gets no DNSSEC records it did not ask for. The
	 * query went upstream without DO, so only a careless upstream sends them; they are
	 * taken out before the answer is stored. */
	struct rrc_wire_reply stripped;
	if (r->n_dnssec && !(q->key[q->keylen - 1] & RRC_KEY_DO)) {
		len = rrc_msg_strip_dnssec(pkt, len);
		if (len == 0 || rrc_wire_check_reply(pkt, len, &stripped) != 0) {
			qs->env->st->malformed_replies++;
			if (a == q->last || q->live == 0)
				next_attempt(q);
			return;
		}
		r = &stripped;
		rrc_log_limited(RRC_LOG_INFO, RRC_LG_UPSTREAM,
				"an upstream sent DNSSEC records to a query without DO; removed");
	}
	struct rrc_wire_ttl_policy pol = {.min_ttl = cfg->min_ttl,
					  .max_ttl = cfg->max_ttl,
					  .max_negative_ttl = cfg->max_negative_ttl};
	uint32_t lifetime = 0;
	size_t slen = rrc_wire_make_stored(pkt, len, r, &pol, &lifetime);
	/* RFC 4035 §4.6: an AD bit from an upstream reached over an unauthenticated path means
	 * nothing unless the operator trusts it (upstream.trust_ad). */
	if (slen && !cfg->trust_ad)
		rrc_put16(pkt + 2, rrc_get16(pkt + 2) & (uint16_t)~RRC_F_AD);
	if (slen == 0) {
		qs->env->st->malformed_replies++;
		if (q->live == 0)
			next_attempt(q);
		return;
	}
	if (lifetime > 0 && !q->no_cache) {
		cache_store(qs, q->key, q->keylen, pkt, slen, lifetime);
		rrc_redis_set(qs->redis, q->key, q->keylen, q->ns, pkt, slen, lifetime,
			      cfg->serve_stale ? cfg->max_stale : 0);
	}
	answer_waiters(q, pkt, slen);
}

static struct rrc_query *table_find(struct rrc_queries *qs, uint64_t hash, const uint8_t *key,
				    size_t keylen)
{
	for (struct rrc_query *q = qs->inflight[hash & (RRC_INFLIGHT_BUCKETS - 1)]; q;
	     q = q->hnext) {
		if (q->hash == hash && !q->no_cache && q->keylen == keylen &&
		    memcmp(q->key, key, keylen) == 0)
			return q;
	}
	return NULL;
}

static struct waiter *waiter_new(struct rrc_queries *qs, const struct rrc_client *c,
				 const uint8_t *pkt, const struct rrc_wire_query *wq,
				 uint16_t limit)
{
	struct waiter *wt = rrc_pool_get(&qs->pool_waiter, sizeof(*wt));
	if (!wt)
		return NULL;
	wt->next = NULL;
	wt->client = *c;
	wt->id = wq->id;
	wt->flags = wq->flags;
	wt->has_edns = wq->has_edns;
	wt->edns_do = wq->edns_do;
	wt->limit = limit;
	wt->qname_len = wq->qname_len;
	memcpy(wt->qname, pkt + RRC_WIRE_HDR, wq->qname_len);
	wt->client.ops->hold(&wt->client);
	return wt;
}

/* A query in flight for key, without waiters: its upstream query built, its budget running,
 * in the in-flight table. NULL when out of memory. */
static struct rrc_query *query_new(struct rrc_queries *qs, const uint8_t *pkt, size_t len,
				   const struct rrc_wire_query *wq, const uint8_t *key,
				   size_t keylen, uint64_t hash, unsigned pool)
{
	const struct rrc_env *env = qs->env;
	const struct rrc_config *cfg = rrc_env_cfg(env);
	/* ECS queries go upstream as the client sent them (only the ID changes) and their
	 * answers are not cached (DESIGN); everything else is rebuilt from the key. */
	size_t cap =
		wq->has_ecs ? len : (size_t)RRC_WIRE_HDR + wq->qname_len + 4 + RRC_WIRE_OPT_LEN;
	struct rrc_query *q = rrc_pool_get(&qs->pool_query, sizeof(*q) + cap);
	if (!q)
		return NULL;
	if (wq->has_ecs) {
		memcpy(q->upq, pkt, len);
		q->upq_len = len;
		q->no_cache = true;
	} else {
		/* Always with EDNS (1232) upstream, so fewer answers need the TCP fallback;
		 * whether the client had EDNS still splits the key (C1) and decides the OPT
		 * and size limit of its answer. AD is asked for (RFC 6840 §5.7) when the
		 * upstreams' AD is trusted, whatever this client set: the answer is stored for
		 * every client of the key, and rrc_wire_finish gives AD only to those that
		 * asked with DO or AD (§5.8). */
		uint16_t flags = (uint16_t)((wq->flags & (RRC_F_RD | RRC_F_CD)) |
					    (cfg->trust_ad ? RRC_F_AD : 0));
		q->upq_len = rrc_wire_build_query(q->upq, cap, 0, key, wq->qname_len, wq->qtype,
						  wq->qclass, flags, true, wq->edns_do);
		RRC_REQUIRE(q->upq_len == cap); /* the size rrc_pool_put is given */
	}
	q->qs = qs;
	q->hash = hash;
	q->keylen = (uint16_t)keylen;
	memcpy(q->key, key, keylen);
	q->qtype = wq->qtype;
	q->qclass = wq->qclass;
	q->pool = (uint8_t)pool;
	q->ns = cfg->pools[pool].ns;
	dl_add(qs, &qs->budgets, &q->budget, uv_now(env->loop) + cfg->client_timeout_ms);
	/* ECS queries are in the table too (so shutdown finds them); lookups skip them. */
	size_t b = hash & (RRC_INFLIGHT_BUCKETS - 1);
	q->hnext = qs->inflight[b];
	qs->inflight[b] = q;
	q->in_table = true;
	qs->n_inflight++;
	q->l2_since = uv_now(env->loop);
	return q;
}

enum miss_result { MISS_LATER, MISS_SERVFAIL, MISS_STALE };

/* The miss path: joins a query in flight or starts one (MISS_LATER: the client is answered
 * later). MISS_STALE: answer the stale copy now; MISS_SERVFAIL: answer SERVFAIL now. */
static enum miss_result start_miss(struct rrc_queries *qs, const struct rrc_client *c,
				   const uint8_t *pkt, size_t len, const struct rrc_wire_query *wq,
				   const uint8_t *key, size_t keylen, uint16_t limit,
				   const uint8_t *stale, size_t stale_len)
{
	const struct rrc_env *env = qs->env;
	enum miss_result fail = stale ? MISS_STALE : MISS_SERVFAIL;
	const struct rrc_config *cfg = rrc_env_cfg(env);
	uint64_t hash = rrc_cache_siphash(qs->hash_key, key, keylen);
	bool coalesce = !wq->has_ecs;
	if (coalesce) {
		struct rrc_query *q = table_find(qs, hash, key, keylen);
		if (q) {
			/* RFC 5452 §5: one upstream query for identical questions in flight. Those
			 * waiting on it are bounded, also in all: a client repeating one question
			 * that does not resolve must not grow memory. */
			if (q->n_waiters >= cfg->max_waiters_per_query ||
			    qs->n_waiters >= cfg->max_waiters) {
				env->st->waiters_refused++;
				return fail;
			}
			struct waiter *wt = waiter_new(qs, c, pkt, wq, limit);
			if (!wt)
				return fail;
			wt->next = q->waiters;
			q->waiters = wt;
			q->n_waiters++;
			qs->n_waiters++;
			keep_stale(q, stale, stale_len);
			env->st->coalesced++;
			return MISS_LATER;
		}
	}
	if (qs->n_inflight >= cfg->max_inflight) {
		env->st->inflight_limit++;
		return fail;
	}
	if (qs->n_waiters >= cfg->max_waiters) {
		env->st->waiters_refused++;
		return fail;
	}
	/* The name's pool (upstream.pools): chosen here, on the miss path only. */
	unsigned pool = rrc_config_pool_of(cfg, key, wq->qname_len);
	if (!rrc_upstreams_any_up(qs->ups, pool) && !rrc_redis_state(qs->redis))
		return fail; /* the pool's upstreams are all down and no L2: answer at once */

	struct waiter *wt = waiter_new(qs, c, pkt, wq, limit);
	if (!wt)
		return fail;
	struct rrc_query *q = query_new(qs, pkt, len, wq, key, keylen, hash, pool);
	if (!q) {
		wt->client.ops->release(&wt->client);
		rrc_pool_put(&qs->pool_waiter, wt, sizeof(*wt));
		return fail;
	}
	q->waiters = wt;
	q->n_waiters = 1;
	qs->n_waiters++;
	keep_stale(q, stale, stale_len);
	if (q->no_cache || !ask_l2(q))
		go_upstream(q);
	return MISS_LATER;
}

/* Prefetch: a hit late in its entry's life refreshes it with a query no client waits on
 * (clients that miss it meanwhile join). With Redis, one instance of the fleet does it:
 * the one that takes the key's lock (on_l2 ends the others'). */
static void prefetch(struct rrc_queries *qs, const uint8_t *pkt, size_t len,
		     const struct rrc_wire_query *wq, const uint8_t *key, size_t keylen)
{
	const struct rrc_config *cfg = rrc_env_cfg(qs->env);
	uint64_t hash = rrc_cache_siphash(qs->hash_key, key, keylen);
	if (wq->has_ecs || table_find(qs, hash, key, keylen) || qs->n_inflight >= cfg->max_inflight)
		return;
	unsigned pool = rrc_config_pool_of(cfg, key, wq->qname_len);
	if (!rrc_upstreams_any_up(qs->ups, pool))
		return;
	struct rrc_query *q = query_new(qs, pkt, len, wq, key, keylen, hash, pool);
	if (!q)
		return;
	q->prefetch = true;
	qs->env->st->prefetches++;
	q->l2 = rrc_redis_refresh_lock(qs->redis, q->key, q->keylen, q->ns, on_l2, q);
	if (!q->l2)
		go_upstream(q);
}

/* The client's address (family, then the address bytes) in the top-K. */
static void count_client(struct rrc_top *top, const struct sockaddr *peer)
{
	uint8_t k[17];
	size_t n;
	if (peer->sa_family == AF_INET) {
		k[0] = 4;
		memcpy(k + 1, &((const struct sockaddr_in *)peer)->sin_addr, 4);
		n = 5;
	} else if (peer->sa_family == AF_INET6) {
		k[0] = 6;
		memcpy(k + 1, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
		n = 17;
	} else {
		return;
	}
	rrc_top_add(top, RRC_TOP_CLIENTS, k, n);
}

/* What a query from a blocked prefix gets (dynblock.action); -1: it goes on (tc over TCP). */
static ssize_t dynblocked(const struct rrc_env *env, const struct rrc_client *c, const uint8_t *pkt,
			  enum rrc_wire_verdict v, const struct rrc_wire_query *wq, uint8_t *out,
			  size_t cap)
{
	enum rrc_dynblock_action a = env->cfg->cfg->dynblock.action;
	if (a == RRC_DB_TC && c->tcp)
		return -1; /* truncation sent it here: a client that can come over TCP is real */
	env->st->dynblock_queries[a]++;
	if (a == RRC_DB_DROP || v == RRC_WIRE_DROP || (a == RRC_DB_TC && v != RRC_WIRE_OK))
		return 0;
	if (a == RRC_DB_TC)
		return (ssize_t)rrc_wire_synth(pkt, wq, RRC_RCODE_NOERROR, true, out, cap);
	return (ssize_t)rrc_wire_synth(pkt, wq, RRC_RCODE_REFUSED, false, out, cap);
}

/* rrc_query_handle without the accounting of the answer; *own: the answer is a domain list's
 * (see account_answer). */
static size_t handle(struct rrc_queries *qs, const struct rrc_client *c, const uint8_t *pkt,
		     size_t len, uint8_t *out, size_t cap, bool *own)
{
	const struct rrc_env *env = qs->env;
	const struct rrc_cfg_ref *ref = env->cfg;
	struct rrc_worker_stats *st = env->st;
	struct rrc_wire_query wq;
	enum rrc_wire_reason reason;

	if (c->doh)
		st->queries_doh++;
	else if (c->tls)
		st->queries_dot++;
	else if (c->tcp)
		st->queries_tcp++;
	else
		st->queries_udp++;

	enum rrc_wire_verdict v = rrc_wire_check_query(pkt, len, &wq, &reason);
	if (!rrc_acl_allows(ref->acl, &c->peer.sa)) {
		/* A denied client learns nothing by default, not even that its packet was bad. */
		if (ref->cfg->acl_action == RRC_ACL_DROP || v == RRC_WIRE_DROP) {
			st->acl_dropped++;
			return 0;
		}
		st->acl_refused++;
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_REFUSED, false, out, cap);
	}
	tap_client(env, RRC_DT_CLIENT_QUERY, c, pkt, len);
	/* Dynamic blocks: a prefix blocked for its rate of NXDOMAIN answers or misses, or by
	 * hand. One atomic load while none is in force. */
	if (rrc_dynblock_blocked(env->dynblock, &c->peer.sa, uv_now(env->loop))) {
		ssize_t n = dynblocked(env, c, pkt, v, &wq, out, cap);
		if (n >= 0)
			return (size_t)n;
	}
	/* Rate limiting (UDP; cache hits cost too): over the limit, one query in slip is told to
	 * come back over TCP (RFC 7766: a real client does, a spoofed one cannot), the rest get
	 * nothing. */
	if (ref->ratelimit && !c->tcp &&
	    !(ref->ratelimit_exempt && rrc_acl_allows(ref->ratelimit_exempt, &c->peer.sa)) &&
	    !rrc_ratelimit_allow(ref->ratelimit, &c->peer.sa, uv_now(env->loop))) {
		uint32_t slip = ref->cfg->ratelimit.slip;
		if (slip && v == RRC_WIRE_OK && ++qs->slip_count >= slip) {
			qs->slip_count = 0;
			st->ratelimit_slipped++;
			return rrc_wire_synth(pkt, &wq, RRC_RCODE_NOERROR, true, out, cap);
		}
		st->ratelimit_dropped++;
		return 0;
	}
	switch (v) {
	case RRC_WIRE_OK:
		break;
	case RRC_WIRE_DROP:
		st->malformed[reason]++;
		rrc_log_limited(RRC_LOG_DEBUG, RRC_LG_LISTEN, "dropped query: %s",
				rrc_wire_reason_name(reason));
		return 0;
	case RRC_WIRE_FORMERR:
		st->malformed[reason]++;
		st->formerr++;
		/* R4: header only when the question itself is the problem. */
		if (reason == RRC_WR_QDCOUNT || reason == RRC_WR_NAME)
			wq.question_ok = false;
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_FORMERR, false, out, cap);
	case RRC_WIRE_NOTIMP:
		st->notimp++;
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_NOTIMP, false, out, cap);
	case RRC_WIRE_BADVERS:
		st->badvers++;
		/* RFC 6891 §6.1.3: BADVERS, no records, our OPT of version 0. */
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_BADVERS, false, out, cap);
	}

	uint16_t limit = c->tcp ? RRC_WIRE_MAX_MSG : rrc_wire_udp_limit(&wq);
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t keylen = rrc_wire_key(pkt, &wq, key);
	/* Statistics: the type, and the name (the key starts with it, lowercased) and the client
	 * in the top-K. */
	st->qtype[rrc_stats_qtype_slot(wq.qtype)]++;
	if (rrc_top_sampled(env->top)) {
		rrc_top_add(env->top, RRC_TOP_NAMES, key, wq.qname_len);
		count_client(env->top, &c->peer.sa);
	}
	/* Domain lists: after the ACL, before the cache (a blocked name costs no lookup). */
	const struct rrc_policy_conf *pc = &ref->cfg->policy;
	enum rrc_policy_verdict pv = RRC_PV_PASS;
	unsigned list;
	uint64_t mask = 0;
	int group = -1;
	if (pc->matcher) {
		group = rrc_policy_conf_group(pc, &c->peer.sa);
		mask = rrc_policy_conf_mask(pc, group);
		pv = rrc_policy_check(pc->matcher, key, wq.qname_len, mask, &list);
		if (pv == RRC_PV_BLOCK) {
			count_blocked(env, list, group, key, wq.qname_len);
			*own = true;
			return blocked_answer(pc, pkt, &wq, out, cap);
		}
		if (pv == RRC_PV_ALLOW)
			st->policy_allowed[list]++;
	}
	/* RFC 8482: ANY over UDP is a cheap amplifier; answer it small (or send it to TCP). */
	if (wq.qtype == RRC_TYPE_ANY && !c->tcp && pc->any_udp != RRC_ANY_FORWARD) {
		st->any_udp++;
		if (pc->any_udp == RRC_ANY_TC)
			return rrc_wire_synth(pkt, &wq, RRC_RCODE_NOERROR, true, out, cap);
		static const uint8_t hinfo[] = {7, 'R', 'F', 'C', '8', '4', '8', '2', 0};
		return rrc_wire_synth_answer(pkt, &wq, RRC_RCODE_NOERROR, RRC_TYPE_HINFO, hinfo,
					     sizeof(hinfo), false, RRC_ANY_HINFO_TTL, out, cap);
	}
	struct rrc_wire_client wc;
	rrc_wire_client_from_query(&wc, pkt, &wq, limit);

	/* Local data (local.*): answered like a cache hit, never forwarded nor cached. */
	const struct rrc_config *cfg = ref->cfg;
	if (cfg->local.data) {
		enum rrc_local_source src;
		size_t n = rrc_local_answer(cfg->local.data, key, wq.qname_len, wq.qtype, wq.qclass,
					    cfg->route, out, cap, &src);
		if (n) {
			st->local_answers[src]++;
			n = rrc_wire_finish(out, n, cap, 0, &wc);
			if (n && (rrc_get16(out + 2) & RRC_F_TC))
				st->truncated++;
			st->answered++;
			return n;
		}
	}

	size_t stale_len = 0;
	if (!wq.has_ecs) {
		size_t alen;
		uint32_t age;
		bool refresh;
		enum rrc_cache_result res =
			rrc_cache_lookup(env->cache, key, keylen, uv_now(env->loop), out, cap,
					 &alen, &age, &refresh);
		if (refresh)
			prefetch(qs, pkt, len, &wq, key, keylen);
		if (res == RRC_CACHE_HIT || res == RRC_CACHE_TOO_BIG) {
			st->cache_hits++;
			/* A name that is not allowed outright is blocked behind a CNAME too. */
			if (pc->matcher && pv == RRC_PV_PASS && res == RRC_CACHE_HIT &&
			    answer_cname_blocked(pc, mask, out, alen, &list)) {
				count_blocked(env, list, group, key, wq.qname_len);
				*own = true;
				return blocked_answer(pc, pkt, &wq, out, cap);
			}
			size_t n = rrc_wire_finish(out, alen, cap, age, &wc);
			if (n && (rrc_get16(out + 2) & RRC_F_TC))
				st->truncated++;
			st->answered++;
			return n;
		}
		if (res == RRC_CACHE_STALE && alen <= cap)
			stale_len = alen; /* the stale copy is in out */
	}
	st->cache_misses++;
	if (ref->dynblock.miss_rate)
		watch(env, &c->peer.sa, RRC_DB_MISS);
	enum miss_result mr = start_miss(qs, c, pkt, len, &wq, key, keylen, limit,
					 stale_len ? out : NULL, stale_len);
	if (mr == MISS_LATER)
		return 0;
	if (mr == MISS_STALE) {
		/* The stale copy the lookup left in out is still there: finish it in place. */
		size_t n = stale_finish(out, stale_len, cap, &wc);
		if (n) {
			st->stale_served++;
			return n;
		}
	}
	st->servfail++;
	return rrc_wire_synth(pkt, &wq, RRC_RCODE_SERVFAIL, false, out, cap);
}

size_t rrc_query_handle(void *ctx, const struct rrc_client *c, const uint8_t *msg, size_t len,
			uint8_t *out, size_t cap)
{
	struct rrc_queries *qs = ctx;
	bool own = false;
	size_t n = handle(qs, c, msg, len, out, cap, &own);
	if (n)
		account_answer(qs, c, out, n, own);
	return n;
}

struct rrc_queries *rrc_queries_create(const struct rrc_env *env, struct rrc_upstreams *ups,
				       struct rrc_redis_tier *redis)
{
	struct rrc_queries *qs = calloc(1, sizeof(*qs));
	if (!qs)
		return NULL;
	qs->env = env;
	qs->ups = ups;
	qs->redis = redis;
	qs->inflight = calloc(RRC_INFLIGHT_BUCKETS, sizeof(*qs->inflight));
	/* The table's hash key: clients must not be able to aim collisions at one chain. */
	if (!qs->inflight ||
	    getrandom(qs->hash_key, sizeof(qs->hash_key), 0) != (ssize_t)sizeof(qs->hash_key)) {
		free(qs->inflight);
		free(qs);
		return NULL;
	}
	rrc_pool_init(&qs->pool_query, sizeof(struct rrc_query) + RRC_POOL_MSG, RRC_POOL_KEEP);
	rrc_pool_init(&qs->pool_waiter, sizeof(struct waiter), RRC_POOL_KEEP);
	uv_timer_init(env->loop, &qs->tick);
	qs->tick.data = qs;
	uv_prepare_init(env->loop, &qs->reaper);
	qs->reaper.data = qs;
	return qs;
}

static void on_handle_closed(uv_handle_t *h)
{
	struct rrc_queries *qs = h->data;
	qs->closes--;
}

void rrc_queries_close(struct rrc_queries *qs)
{
	if (!qs || qs->closing)
		return;
	qs->closing = true;
	qs->closes = 2;
	uv_close((uv_handle_t *)&qs->tick, on_handle_closed);
	uv_close((uv_handle_t *)&qs->reaper, on_handle_closed);
}

unsigned rrc_queries_inflight(const struct rrc_queries *qs)
{
	return qs->n_inflight;
}

void rrc_queries_abort_all(struct rrc_queries *qs)
{
	for (size_t b = 0; b < RRC_INFLIGHT_BUCKETS; b++) {
		while (qs->inflight[b])
			query_fail(qs->inflight[b], RRC_RCODE_SERVFAIL, false);
	}
}

void rrc_queries_destroy(struct rrc_queries *qs)
{
	if (!qs)
		return;
	RRC_FAILS(qs->n_inflight == 0 && qs->closing && qs->closes == 0);
	free_ended(qs);
	rrc_pool_drain(&qs->pool_query);
	rrc_pool_drain(&qs->pool_waiter);
	free(qs->inflight);
	free(qs);
}
