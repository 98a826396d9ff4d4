/*
 * query: one client query from arrival to answer. See include/rrcache/query.h.
 *
 * Hit path (no allocation, no ldns): wire check -> ACL -> key -> L1 copy -> patch -> return.
 * Miss path: coalesce on the key, else a struct rrc_query with a budget timer (client_timeout).
 * With Redis, L2 is asked first (its own deadline, redis_tier.h); a hit is answered, a lookup
 * another instance is resolving (fleet coalescing) is repeated after 5, 10, 20... ms up to
 * redis.fleet_wait, and anything else goes upstream at once. Upstream: a retry timer
 * (upstream timeout); every retry goes to another server while earlier attempts stay open,
 * and the first valid reply wins (U6). A cacheable answer goes to L1 and to Redis.
 */
#include "rrcache/query.h"
#include "rrcache/dnstap.h"
#include "rrcache/listener.h"
#include "rrcache/log.h"
#include "rrcache/msg.h"
#include "rrcache/redis_tier.h"
#include "rrcache/upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct rrc_query {
	struct rrc_worker *w;
	struct rrc_query *hnext;
	uint64_t hash;
	bool in_table;
	bool done;
	bool no_cache;
	unsigned closes;
	uv_timer_t budget;
	uv_timer_t retry;
	struct rrc_waiter *waiters;
	struct rrc_attempt *att[RRC_QUERY_MAX_ATTEMPTS];
	unsigned n_att;
	unsigned live; /* attempts that may still deliver */
	struct rrc_attempt *last;
	uint64_t tried;
	struct rrc_redis_req *l2; /* the Redis lookup in flight, or NULL */
	uint64_t l2_since;	  /* when the first lookup went out */
	uint32_t l2_poll_ms;	  /* next wait while another instance resolves it */
	uint16_t qtype, qclass;
	uint16_t keylen;
	uint8_t key[RRC_WIRE_KEY_MAX];
	uint8_t *stale; /* an expired answer to fall back on (RFC 8767), or NULL */
	size_t stale_len;
	size_t upq_len; /* fills upq exactly: the object is sizeof(struct rrc_query) + upq_len */
	uint8_t upq[];
};

/* RFC 8767 §4: the TTL of an answer served stale. */
#define RRC_STALE_TTL 30
/* First wait before looking again at a key another instance of the fleet is resolving. */
#define RRC_L2_POLL_FIRST_MS 5

static void waiter_client(const struct rrc_waiter *wt, struct rrc_wire_client *c)
{
	c->id = wt->id;
	c->flags = wt->flags;
	c->qname = wt->qname;
	c->qname_len = wt->qname_len;
	c->has_edns = wt->has_edns;
	c->edns_do = wt->edns_do;
	c->limit = wt->limit;
}

static void on_query_closed(uv_handle_t *h)
{
	struct rrc_query *q = h->data;
	if (--q->closes > 0)
		return;
	struct rrc_worker *w = q->w;
	rrc_pool_put(&w->pool_query, q, sizeof(*q) + q->upq_len);
	rrc_worker_check_done(w);
}

static void table_remove(struct rrc_worker *w, struct rrc_query *q)
{
	if (!q->in_table)
		return;
	struct rrc_query **pp = &w->inflight[q->hash & (w->inflight_buckets - 1)];
	while (*pp && *pp != q)
		pp = &(*pp)->hnext;
	RRC_REQUIRE(*pp == q);
	*pp = q->hnext;
	q->in_table = false;
}

/* Ends the query: no more answers can reach it; frees it once its timers are closed. */
static void query_end(struct rrc_query *q)
{
	struct rrc_worker *w = q->w;
	q->done = true;
	table_remove(w, q);
	w->n_inflight--;
	if (q->l2) {
		rrc_redis_cancel(q->l2);
		q->l2 = NULL;
	}
	for (unsigned i = 0; i < q->n_att; i++)
		rrc_upstream_cancel(q->att[i]);
	q->n_att = 0;
	struct rrc_waiter *wt = q->waiters;
	while (wt) {
		struct rrc_waiter *next = wt->next;
		rrc_pool_put(&w->pool_waiter, wt, sizeof(*wt));
		wt = next;
	}
	q->waiters = NULL;
	free(q->stale);
	q->stale = NULL;
	q->closes = 2;
	uv_close((uv_handle_t *)&q->budget, on_query_closed);
	uv_close((uv_handle_t *)&q->retry, on_query_closed);
}

/* Turns a stored answer copied into buf (len bytes) into client c's stale answer, in place:
 * every TTL 30. Returns its length, 0 if it cannot be made. */
static size_t stale_finish(uint8_t *buf, size_t len, size_t cap, const struct rrc_wire_client *c)
{
	if (len > cap || rrc_wire_set_ttls(buf, len, RRC_STALE_TTL) != 0)
		return 0;
	return rrc_wire_finish(buf, len, cap, 0, c);
}

/* Answers every waiter with the stale answer when there is one (RFC 8767: the refresh
 * failed), else with rcode (SERVFAIL), and ends the query. */
static void query_fail(struct rrc_query *q, unsigned rcode)
{
	struct rrc_worker *w = q->w;
	for (struct rrc_waiter *wt = q->waiters; wt; wt = wt->next) {
		struct rrc_wire_client c;
		waiter_client(wt, &c);
		size_t n = 0;
		if (q->stale) {
			memcpy(w->big, q->stale, q->stale_len);
			n = stale_finish(w->big, q->stale_len, sizeof(w->big), &c);
		}
		if (n) {
			w->st.stale_served++;
		} else {
			n = rrc_wire_synth_client(&c, q->qtype, q->qclass, rcode, w->big,
						  sizeof(w->big));
			w->st.servfail++;
		}
		rrc_listener_answer(w, wt, w->big, n);
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

/* Answers every waiter from a stored answer (slen bytes) and ends the query. */
static void answer_waiters(struct rrc_query *q, const uint8_t *stored, size_t slen)
{
	struct rrc_worker *w = q->w;
	for (struct rrc_waiter *wt = q->waiters; wt; wt = wt->next) {
		struct rrc_wire_client c;
		waiter_client(wt, &c);
		memcpy(w->big, stored, slen);
		size_t n = rrc_wire_finish(w->big, slen, sizeof(w->big), 0, &c);
		if (n && (rrc_get16(w->big + 2) & RRC_F_TC))
			w->st.truncated++;
		if ((rrc_get16(w->big + 2) & 0x0F) == RRC_RCODE_SERVFAIL)
			w->st.servfail++;
		w->st.answered++;
		rrc_listener_answer(w, wt, w->big, n);
	}
	query_end(q);
}

static bool start_attempt(struct rrc_query *q, int idx, bool tcp)
{
	struct rrc_worker *w = q->w;
	if (q->n_att >= RRC_QUERY_MAX_ATTEMPTS)
		return false;
	struct rrc_attempt *a =
		rrc_upstream_send(w->ups, idx, tcp, q->upq, q->upq_len, on_attempt_reply, q);
	if (!a)
		return false;
	q->att[q->n_att++] = a;
	q->live++;
	q->last = a;
	uv_timer_again(&q->retry);
	return true;
}

/* Sends to the next server: one not tried yet if any is up, else any that is up. */
static void next_attempt(struct rrc_query *q)
{
	struct rrc_upstreams *u = q->w->ups;
	unsigned n = rrc_upstreams_count(u);
	for (unsigned tries = 0; tries <= n; tries++) {
		int idx = rrc_upstreams_pick(u, q->tried);
		if (idx < 0)
			idx = rrc_upstreams_pick(u, 0);
		if (idx < 0)
			break;
		q->tried |= 1ull << idx;
		if (start_attempt(q, idx, false))
			return;
	}
	/* Nothing could be sent. If nothing else is in the air either, fail now rather than
	 * letting the client wait for the budget (all upstreams down). */
	if (q->live == 0)
		query_fail(q, RRC_RCODE_SERVFAIL);
}

static void on_retry(uv_timer_t *t)
{
	struct rrc_query *q = t->data;
	if (q->done)
		return;
	if (q->last)
		rrc_upstream_attempt_timeout(q->last);
	if (q->n_att < RRC_QUERY_MAX_ATTEMPTS)
		next_attempt(q);
}

static void go_upstream(struct rrc_query *q)
{
	const struct rrc_config *cfg = q->w->cfg->cfg;
	uv_timer_start(&q->retry, on_retry, cfg->upstream_timeout_ms, cfg->upstream_timeout_ms);
	next_attempt(q);
}

static void on_l2(void *ctx, const struct rrc_l2_result *r);

/* Asks Redis. Returns false when the lookup was skipped (go upstream). */
static bool ask_l2(struct rrc_query *q)
{
	q->l2 = rrc_redis_get(q->w->redis, q->key, q->keylen, on_l2, q);
	return q->l2 != NULL;
}

static void on_l2_poll(uv_timer_t *t)
{
	struct rrc_query *q = t->data;
	if (q->done)
		return;
	if (!ask_l2(q))
		go_upstream(q);
}

static void on_l2(void *ctx, const struct rrc_l2_result *r)
{
	struct rrc_query *q = ctx;
	struct rrc_worker *w = q->w;
	const struct rrc_config *cfg = w->cfg->cfg;
	q->l2 = NULL;
	if (q->done)
		return;
	if (r->stale)
		keep_stale(q, r->stale, r->stale_len);
	if (r->outcome == RRC_L2_HIT) {
		/* Checked like an upstream reply by the tier; its TTLs already aged. */
		rrc_cache_insert(w->cache, q->key, q->keylen, r->answer, r->len, r->lifetime,
				 uv_now(&w->loop));
		answer_waiters(q, r->answer, r->len);
		return;
	}
	if (r->outcome == RRC_L2_LOCKED) {
		/* Another instance is asking the upstream: its answer should appear shortly. */
		uint64_t waited = uv_now(&w->loop) - q->l2_since;
		uint32_t next = q->l2_poll_ms ? q->l2_poll_ms : RRC_L2_POLL_FIRST_MS;
		if (waited + next <= cfg->redis.fleet_wait_ms) {
			q->l2_poll_ms = next * 2;
			uv_timer_start(&q->retry, on_l2_poll, next, 0);
			return;
		}
	}
	go_upstream(q);
}

static void on_budget(uv_timer_t *t)
{
	struct rrc_query *q = t->data;
	if (q->done)
		return;
	if (q->last)
		rrc_upstream_attempt_timeout(q->last);
	query_fail(q, RRC_RCODE_SERVFAIL);
}

static void on_attempt_reply(void *ctx, struct rrc_attempt *a, uint8_t *pkt, size_t len,
			     const struct rrc_wire_reply *r)
{
	struct rrc_query *q = ctx;
	struct rrc_worker *w = q->w;
	const struct rrc_config *cfg = w->cfg->cfg;
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
		w->st.malformed_replies++;
		if (a == q->last || q->live == 0)
			next_attempt(q);
		return;
	}
	struct rrc_wire_ttl_policy pol = {.min_ttl = cfg->min_ttl,
					  .max_ttl = cfg->max_ttl,
					  .max_negative_ttl = cfg->max_negative_ttl};
	uint32_t lifetime = 0;
	size_t slen = rrc_wire_make_stored(pkt, len, r, &pol, &lifetime);
	if (slen == 0) {
		w->st.malformed_replies++;
		if (q->live == 0)
			next_attempt(q);
		return;
	}
	if (lifetime > 0 && !q->no_cache) {
		rrc_cache_insert(w->cache, q->key, q->keylen, pkt, slen, lifetime,
				 uv_now(&w->loop));
		rrc_redis_set(w->redis, q->key, q->keylen, pkt, slen, lifetime,
			      cfg->serve_stale ? cfg->max_stale : 0);
	}
	answer_waiters(q, pkt, slen);
}

static struct rrc_query *table_find(struct rrc_worker *w, uint64_t hash, const uint8_t *key,
				    size_t keylen)
{
	for (struct rrc_query *q = w->inflight[hash & (w->inflight_buckets - 1)]; q; q = q->hnext) {
		if (q->hash == hash && !q->no_cache && q->keylen == keylen &&
		    memcmp(q->key, key, keylen) == 0)
			return q;
	}
	return NULL;
}

static struct rrc_waiter *waiter_new(struct rrc_worker *w, const struct rrc_query_src *src,
				     const uint8_t *pkt, const struct rrc_wire_query *wq,
				     uint16_t limit)
{
	struct rrc_waiter *wt = rrc_pool_get(&w->pool_waiter, sizeof(*wt));
	if (!wt)
		return NULL;
	wt->next = NULL;
	wt->tcp = src->tcp;
	wt->ul = src->ul;
	wt->conn = src->conn;
	wt->peer_len = src->peer_len;
	memcpy(&wt->peer, src->peer, RRC_MIN((size_t)src->peer_len, sizeof(wt->peer)));
	if (src->local)
		wt->local = *src->local;
	else
		wt->local.family = 0;
	wt->start_us = w->batch_start_us;
	wt->id = wq->id;
	wt->flags = wq->flags;
	wt->has_edns = wq->has_edns;
	wt->edns_do = wq->edns_do;
	wt->limit = limit;
	wt->qname_len = wq->qname_len;
	memcpy(wt->qname, pkt + RRC_WIRE_HDR, wq->qname_len);
	if (wt->tcp) {
		wt->conn->refs++;
		wt->conn->pending++;
	}
	return wt;
}

enum miss_result { MISS_LATER, MISS_SERVFAIL, MISS_STALE };

/* The miss path: joins a query in flight or starts one (MISS_LATER: the client is answered
 * later). MISS_STALE: answer the stale copy now; MISS_SERVFAIL: answer SERVFAIL now. */
static enum miss_result start_miss(struct rrc_worker *w, const struct rrc_query_src *src,
				   const uint8_t *pkt, size_t len, const struct rrc_wire_query *wq,
				   const uint8_t *key, size_t keylen, uint16_t limit,
				   const uint8_t *stale, size_t stale_len)
{
	enum miss_result fail = stale ? MISS_STALE : MISS_SERVFAIL;
	const struct rrc_config *cfg = w->cfg->cfg;
	uint64_t hash = rrc_cache_siphash(w->hash_key, key, keylen);
	bool coalesce = !wq->has_ecs;
	if (coalesce) {
		struct rrc_query *q = table_find(w, hash, key, keylen);
		if (q) {
			/* RFC 5452 §5: one upstream query for identical questions in flight. */
			struct rrc_waiter *wt = waiter_new(w, src, pkt, wq, limit);
			if (!wt)
				return fail;
			wt->next = q->waiters;
			q->waiters = wt;
			keep_stale(q, stale, stale_len);
			w->st.coalesced++;
			return MISS_LATER;
		}
	}
	if (w->n_inflight >= cfg->max_inflight) {
		w->st.inflight_limit++;
		return fail;
	}
	if (!rrc_upstreams_any_up(w->ups) && !rrc_redis_state(w->redis))
		return fail; /* every upstream is down and no L2: answer at once */

	/* ECS queries go upstream as the client sent them (only the ID changes) and their
	 * answers are not cached (DESIGN); everything else is rebuilt from the key. */
	size_t cap =
		wq->has_ecs ? len : (size_t)RRC_WIRE_HDR + wq->qname_len + 4 + RRC_WIRE_OPT_LEN;
	struct rrc_query *q = rrc_pool_get(&w->pool_query, sizeof(*q) + cap);
	if (!q)
		return fail;
	if (wq->has_ecs) {
		memcpy(q->upq, pkt, len);
		q->upq_len = len;
		q->no_cache = true;
	} else {
		/* Always with EDNS (1232) upstream, so fewer answers need the TCP fallback;
		 * whether the client had EDNS still splits the key (C1) and decides the OPT
		 * and size limit of its answer. */
		q->upq_len = rrc_wire_build_query(q->upq, cap, 0, key, wq->qname_len, wq->qtype,
						  wq->qclass, wq->flags, true, wq->edns_do);
		RRC_REQUIRE(q->upq_len == cap); /* the size rrc_pool_put is given */
	}
	struct rrc_waiter *wt = waiter_new(w, src, pkt, wq, limit);
	if (!wt) {
		rrc_pool_put(&w->pool_query, q, sizeof(*q) + cap);
		return fail;
	}
	q->w = w;
	q->hash = hash;
	q->keylen = (uint16_t)keylen;
	memcpy(q->key, key, keylen);
	q->qtype = wq->qtype;
	q->qclass = wq->qclass;
	q->waiters = wt;
	uv_timer_init(&w->loop, &q->budget);
	uv_timer_init(&w->loop, &q->retry);
	q->budget.data = q;
	q->retry.data = q;
	uv_timer_start(&q->budget, on_budget, cfg->client_timeout_ms, 0);
	/* ECS queries are in the table too (so shutdown finds them); lookups skip them. */
	size_t b = hash & (w->inflight_buckets - 1);
	q->hnext = w->inflight[b];
	w->inflight[b] = q;
	q->in_table = true;
	w->n_inflight++;
	keep_stale(q, stale, stale_len);
	q->l2_since = uv_now(&w->loop);
	if (q->no_cache || !ask_l2(q))
		go_upstream(q);
	return MISS_LATER;
}

/* The client's address (family, then the address bytes) in the top-K. */
static void count_client(struct rrc_worker *w, const struct sockaddr *peer)
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
	rrc_top_add(&w->top, RRC_TOP_CLIENTS, k, n);
}

size_t rrc_query_handle(struct rrc_worker *w, const struct rrc_query_src *src, const uint8_t *pkt,
			size_t len, uint8_t *out, size_t cap)
{
	const struct rrc_cfg_ref *ref = w->cfg;
	struct rrc_wire_query wq;
	enum rrc_wire_reason reason;

	if (src->tcp)
		w->st.queries_tcp++;
	else
		w->st.queries_udp++;

	enum rrc_wire_verdict v = rrc_wire_check_query(pkt, len, &wq, &reason);
	if (!rrc_acl_allows(ref->acl, src->peer)) {
		/* A denied client learns nothing by default, not even that its packet was bad. */
		if (ref->cfg->acl_action == RRC_ACL_DROP || v == RRC_WIRE_DROP) {
			w->st.acl_dropped++;
			return 0;
		}
		w->st.acl_refused++;
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_REFUSED, false, out, cap);
	}
	if (w->tap) {
		struct rrc_dnstap_msg m = {.type = RRC_DT_CLIENT_QUERY,
					   .tcp = src->tcp,
					   .query_addr = src->peer,
					   .response_addr = src->ul ? &src->ul->addr.sa : NULL,
					   .query_time_us =
						   rrc_worker_wall_us(w, w->batch_start_us),
					   .wire = pkt,
					   .len = len};
		rrc_worker_tap(w, &m);
	}
	switch (v) {
	case RRC_WIRE_OK:
		break;
	case RRC_WIRE_DROP:
		w->st.malformed[reason]++;
		rrc_log_limited(RRC_LOG_DEBUG, RRC_LG_LISTEN, "dropped query: %s",
				rrc_wire_reason_name(reason));
		return 0;
	case RRC_WIRE_FORMERR:
		w->st.malformed[reason]++;
		w->st.formerr++;
		/* R4: header only when the question itself is the problem. */
		if (reason == RRC_WR_QDCOUNT || reason == RRC_WR_NAME)
			wq.question_ok = false;
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_FORMERR, false, out, cap);
	case RRC_WIRE_NOTIMP:
		w->st.notimp++;
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_NOTIMP, false, out, cap);
	case RRC_WIRE_BADVERS:
		w->st.badvers++;
		/* RFC 6891 §6.1.3: BADVERS, no records, our OPT of version 0. */
		return rrc_wire_synth(pkt, &wq, RRC_RCODE_BADVERS, false, out, cap);
	}

	uint16_t limit = src->tcp ? RRC_WIRE_MAX_MSG : rrc_wire_udp_limit(&wq);
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t keylen = rrc_wire_key(pkt, &wq, key);
	/* Statistics: the type, and the name (the key starts with it, lowercased) and the client
	 * in the top-K. */
	w->st.qtype[rrc_stats_qtype_slot(wq.qtype)]++;
	if (rrc_top_sampled(&w->top)) {
		rrc_top_add(&w->top, RRC_TOP_NAMES, key, wq.qname_len);
		count_client(w, src->peer);
	}
	struct rrc_wire_client c;
	rrc_wire_client_from_query(&c, pkt, &wq, limit);

	size_t stale_len = 0;
	if (!wq.has_ecs) {
		size_t alen;
		uint32_t age;
		enum rrc_cache_result res = rrc_cache_lookup(
			w->cache, key, keylen, uv_now(&w->loop), out, cap, &alen, &age);
		if (res == RRC_CACHE_HIT || res == RRC_CACHE_TOO_BIG) {
			w->st.cache_hits++;
			size_t n = rrc_wire_finish(out, alen, cap, age, &c);
			if (n && (rrc_get16(out + 2) & RRC_F_TC))
				w->st.truncated++;
			w->st.answered++;
			return n;
		}
		if (res == RRC_CACHE_STALE && alen <= cap)
			stale_len = alen; /* the stale copy is in out */
	}
	w->st.cache_misses++;
	enum miss_result mr = start_miss(w, src, pkt, len, &wq, key, keylen, limit,
					 stale_len ? out : NULL, stale_len);
	if (mr == MISS_LATER)
		return 0;
	if (mr == MISS_STALE) {
		/* The stale copy the lookup left in out is still there: finish it in place. */
		size_t n = stale_finish(out, stale_len, cap, &c);
		if (n) {
			w->st.stale_served++;
			return n;
		}
	}
	w->st.servfail++;
	return rrc_wire_synth(pkt, &wq, RRC_RCODE_SERVFAIL, false, out, cap);
}

void rrc_query_abort_all(struct rrc_worker *w)
{
	for (size_t b = 0; b < w->inflight_buckets; b++) {
		while (w->inflight[b])
			query_fail(w->inflight[b], RRC_RCODE_SERVFAIL);
	}
}

void rrc_query_init_pools(struct rrc_worker *w)
{
	rrc_pool_init(&w->pool_query, sizeof(struct rrc_query) + RRC_POOL_MSG, RRC_POOL_KEEP);
	rrc_pool_init(&w->pool_waiter, sizeof(struct rrc_waiter), RRC_POOL_KEEP);
}
