/*
 * redis_tier: L2 in Redis. See include/rrcache/redis_tier.h.
 *
 * Requests: every command batch (a GET with its lock, or a SET) is one struct rrc_redis_req in
 * the tier's FIFO, in the order it was written; Redis answers in that order, so the head is
 * always the oldest and one timer armed for the first unexpired request serves every deadline.
 * A request is freed after hiredis has called back for each of its commands (with a reply, or
 * with NULL when the connection goes); its caller may be told earlier (deadline) and is never
 * told twice.
 *
 * Connections: "data" (per worker, commands) and, on worker 0, "sub" (SUBSCRIBE to flushes).
 * Each goes CLOSED -> CONNECTING -> READY, back to CLOSED on an error, and is reopened after a
 * backoff. The data connection also closes when its breaker opens.
 */
#include "rrcache/redis_tier.h"
#include "rrcache/cache.h"
#include "rrcache/l2value.h"
#include "rrcache/log.h"
#include "rrcache/msg.h"
#include "rrcache/redis_cluster.h"
#include "rrcache/redis_sentinel.h"
#include "rrcache/redis_uv.h"
#include "rrcache/env.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* Unparsed input a connection may hold: one value of the largest answer with its header and
 * key, and the RESP framing around it. Anything longer is no value of rrcache's. */
#define RRC_REDIS_MAX_INPUT (RRC_L2_HDR + RRC_WIRE_KEY_MAX + RRC_WIRE_MAX_MSG + 64)

enum conn_state { C_CLOSED, C_CONNECTING, C_READY };

struct conn {
	struct rrc_redis_tier *t;
	bool sub; /* the flush subscription */
	enum conn_state state;
	redisAsyncContext *ac;
	uv_timer_t timer; /* connect deadline, then reconnect backoff */
	uint32_t backoff_ms;
	unsigned setup_left; /* AUTH/SELECT/ROLE replies still to come */
	bool logged_down;    /* "unreachable" said once until it is up again */
	uint32_t gen;	     /* Sentinel: the master record's generation it was opened for */
	char host[RRC_REDIS_HOST_LEN]; /* where it went (Sentinel: the master then) */
	uint16_t port;
	uint32_t failures; /* consecutive errors or timeouts: the breaker's count */
	int node;	   /* Cluster: its node's index in the tier's table; -1 otherwise */
};

/* Cluster: a node the tier knows (a seed, or a master of the slot map), with its own
 * connection. Indexes are stable while it is known. */
struct node {
	struct rrc_redis_node addr;
	bool used;
	bool seed;
	bool mapped; /* serves slots in the map in force */
	struct conn c;
};

struct rrc_redis_req {
	struct rrc_redis_tier *t;
	struct rrc_redis_req *prev, *next; /* FIFO */
	struct conn *conn;		   /* the connection it was written on ... */
	redisAsyncContext *ac;		   /* ... and that connection's context then */
	uint8_t redirects;		   /* Cluster: MOVED/ASK followed */
	bool asking; /* Cluster: on the node an ASK named, so its lock goes with ASKING too */
	uint64_t deadline;
	unsigned cmds; /* callbacks still to come from hiredis */
	bool expired;  /* its deadline passed */
	bool told;     /* the caller got its result (or is gone) */
	bool lock;     /* a lock SET NX was sent after the GET missed */
	bool got_miss; /* GET found nothing usable; waiting for the lock's reply */
	bool refresh;  /* a prefetch's lock alone (rrc_redis_refresh_lock) */
	rrc_l2_cb cb;
	void *ctx;
	uint8_t *stale; /* expired answer kept until the lock's reply (malloc'd) */
	size_t stale_len;
	uint64_t ns; /* the upstream pool's part of the key (rrc_l2_key) */
	uint16_t keylen;
	uint8_t key[RRC_WIRE_KEY_MAX];
	uint8_t rklen;
	char rk[RRC_L2_KEY_MAX]; /* its Redis key, computed once (two keyed hashes) */
};

struct rrc_redis_tier {
	const struct rrc_env *env;
	/* The connection settings, copied: they take effect at a restart (a reload logs that
	 * they changed), so a reconnection after a reload still goes where the fleet's other
	 * instances of this start went. The TTL policy and serve-stale are read from env's
	 * configuration in force at each use. */
	struct rrc_redis_conf rc;
	struct rrc_l2_keys keys;
	struct conn data, sub;
	/* Sentinel: where the master is (shared), and on worker 0 the watcher that writes it. */
	struct rrc_redis_master *master;
	struct rrc_redis_sentinel *watch;
	struct rrc_redis_req *head, *tail;
	unsigned pending; /* commands written, not yet answered */
	/* Cluster: the nodes, each slot's node (an index of nodes, or RRC_REDIS_NO_NODE), and
	 * the reading of the map: one at a time, its own deadline, then a pause. */
	bool cluster;
	struct node nodes[RRC_REDIS_MAX_NODES];
	uint8_t slot[RRC_REDIS_SLOTS];
	bool have_map;
	redisAsyncContext *map_ac; /* the connection the map was asked on, while asked */
	bool map_shards;	   /* asked with CLUSTER SHARDS (else SLOTS) */
	bool map_wanted;	   /* read it again as soon as allowed */
	uint64_t map_last;	   /* when it was last asked (loop ms) */
	uv_timer_t map_timer;
	unsigned sub_next; /* the node the flush subscription tries next */
	uv_timer_t deadline;
	bool deadline_armed;
	unsigned closes; /* handles not yet closed */
	bool closing;
	uint8_t buf[RRC_WIRE_MAX_MSG + 2]; /* an answer being checked */
	uint8_t val[RRC_L2_HDR + RRC_WIRE_KEY_MAX + RRC_WIRE_MAX_MSG +
		    RRC_L2_SEAL]; /* a value being written */
	uint8_t cmd[RRC_L2_HDR + RRC_WIRE_KEY_MAX + RRC_WIRE_MAX_MSG + RRC_L2_KEY_MAX + 96];
};

static uint64_t wall_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* "connection" or "flush subscription", with the node's address in a cluster. */
static const char *conn_name(const struct conn *c, char *buf, size_t cap)
{
	const char *what = c->sub ? "flush subscription" : "connection";
	if (!c->t->cluster)
		return what;
	snprintf(buf, cap, "%s to %s:%u", what, c->host, c->port);
	return buf;
}

static void conn_open(struct conn *c);
static void conn_drop(struct conn *c, const char *why);

/* ---- requests ---- */

static void fifo_remove(struct rrc_redis_tier *t, struct rrc_redis_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		t->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		t->tail = r->prev;
	r->prev = r->next = NULL;
}

static void maybe_free_tier(struct rrc_redis_tier *t)
{
	if (t->closing && t->closes == 0 && t->head == NULL)
		free(t);
}

static void tell(struct rrc_redis_req *r, const struct rrc_l2_result *res)
{
	if (r->told)
		return;
	r->told = true;
	rrc_l2_cb cb = r->cb;
	r->cb = NULL;
	if (cb)
		cb(r->ctx, res);
}

static void tell_outcome(struct rrc_redis_req *r, enum rrc_l2_outcome o)
{
	struct rrc_l2_result res = {.outcome = o, .stale = r->stale, .stale_len = r->stale_len};
	tell(r, &res);
}

static void arm_deadline(struct rrc_redis_tier *t);

/* One of r's commands was answered (or dropped). */
static void req_done_one(struct rrc_redis_req *r)
{
	struct rrc_redis_tier *t = r->t;
	RRC_REQUIRE(r->cmds > 0 && t->pending > 0);
	r->cmds--;
	t->pending--;
	if (r->cmds > 0)
		return;
	bool was_head = t->head == r;
	fifo_remove(t, r);
	free(r->stale);
	free(r);
	if (was_head)
		arm_deadline(t);
	maybe_free_tier(t);
}

/* Enough errors or timeouts in a row on c open its breaker. */
static void check_breaker(struct conn *c, bool timeout)
{
	struct rrc_redis_tier *t = c->t;
	if (c->failures >= t->rc.max_failures && c->state == C_READY && !t->closing) {
		t->env->st->redis_breaker_opens++;
		char why[96];
		snprintf(why, sizeof(why), "%u %s in a row: circuit open", c->failures,
			 timeout ? "timeouts" : "failures");
		conn_drop(c, why);
	}
}

/* An error on connection c. */
static void failure(struct conn *c)
{
	c->t->env->st->redis_errors++;
	c->failures++;
	check_breaker(c, false);
}

static void success(struct conn *c)
{
	c->failures = 0;
	c->backoff_ms = 0;
}

static void on_deadline(uv_timer_t *h)
{
	struct rrc_redis_tier *t = h->data;
	uint64_t now = uv_now(t->env->loop);
	t->deadline_armed = false;
	for (struct rrc_redis_req *r = t->head; r && r->deadline <= now; r = r->next) {
		if (r->expired)
			continue;
		r->expired = true;
		t->env->st->redis_timeouts++;
		if (r->conn->ac == r->ac)
			r->conn->failures++;
		/* The query goes upstream now; the late reply will be dropped. */
		tell_outcome(r, RRC_L2_SKIP);
	}
	/* After the walk: opening a breaker frees requests. */
	check_breaker(&t->data, true);
	for (unsigned i = 0; t->cluster && i < RRC_REDIS_MAX_NODES; i++) {
		if (t->nodes[i].used)
			check_breaker(&t->nodes[i].c, true);
	}
	arm_deadline(t);
}

static void arm_deadline(struct rrc_redis_tier *t)
{
	if (t->closing)
		return;
	struct rrc_redis_req *r = t->head;
	while (r && r->expired)
		r = r->next;
	if (!r) {
		if (t->deadline_armed)
			uv_timer_stop(&t->deadline);
		t->deadline_armed = false;
		return;
	}
	uint64_t now = uv_now(t->env->loop);
	uv_timer_start(&t->deadline, on_deadline, r->deadline > now ? r->deadline - now : 0, 0);
	t->deadline_armed = true;
}

static void follow_master(struct rrc_redis_tier *t);

/* The connection a Redis key goes to: the one data connection, or with Cluster its slot's
 * node's (NULL while the slot has none). */
static struct conn *conn_of_key(struct rrc_redis_tier *t, const char *k, size_t klen)
{
	if (!t->cluster)
		return &t->data;
	uint8_t n = t->slot[rrc_redis_key_slot(k, klen)];
	return n == RRC_REDIS_NO_NODE ? NULL : &t->nodes[n].c;
}

static struct rrc_redis_req *req_new(struct rrc_redis_tier *t, struct conn *c, unsigned cmds)
{
	/* After a failover: one relaxed load per request notices the master moved. */
	if (t->master && !t->closing && rrc_redis_master_generation(t->master) != t->data.gen)
		follow_master(t);
	if (t->closing || !c || c->state != C_READY) {
		t->env->st->redis_skipped++;
		return NULL;
	}
	if (t->pending + cmds > t->rc.max_pending) {
		t->env->st->redis_skipped++;
		return NULL;
	}
	struct rrc_redis_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->t = t;
	r->conn = c;
	r->ac = c->ac;
	r->deadline = uv_now(t->env->loop) + t->rc.timeout_ms;
	r->prev = t->tail;
	if (t->tail)
		t->tail->next = r;
	else
		t->head = r;
	t->tail = r;
	if (!t->deadline_armed)
		arm_deadline(t);
	return r;
}

/* Counts a command written for r (hiredis owes one callback for it). */
static bool sent(struct rrc_redis_req *r, int rc)
{
	if (rc != REDIS_OK)
		return false;
	r->cmds++;
	r->t->pending++;
	return true;
}

/* Drops a request that got no command out. */
static void req_abandon(struct rrc_redis_req *r)
{
	struct rrc_redis_tier *t = r->t;
	fifo_remove(t, r);
	free(r->stale);
	free(r);
	arm_deadline(t);
}

/* ---- GET ---- */

/* Checks a value for r's key. Fills res for a hit; keeps a stale candidate in r. */
static bool check_value(struct rrc_redis_req *r, const redisReply *rep, struct rrc_l2_result *res)
{
	struct rrc_redis_tier *t = r->t;
	const struct rrc_env *env = t->env;
	const struct rrc_config *cfg = rrc_env_cfg(env);
	/* The TTL bounds and serve-stale in force now (a reload changes them). */
	struct rrc_wire_ttl_policy pol = {.min_ttl = cfg->min_ttl,
					  .max_ttl = cfg->max_ttl,
					  .max_negative_ttl = cfg->max_negative_ttl};
	if (rep->type != REDIS_REPLY_STRING)
		return false;
	struct rrc_l2_value v;
	enum rrc_l2_verdict vd = rrc_l2_decode((const uint8_t *)rep->str, (size_t)rep->len,
					       &t->keys, r->key, r->keylen, wall_ms(), &v);
	if (vd == RRC_L2_MALFORMED || vd == RRC_L2_OTHER_KEY || v.alen > RRC_WIRE_MAX_MSG) {
		/* Counted, answered from upstream, and overwritten by the next fill. */
		env->st->redis_bad_values++;
		rrc_log_limited(RRC_LOG_DEBUG, RRC_LG_REDIS,
				"worker %u: refused a Redis value (%s)", env->worker,
				vd == RRC_L2_OTHER_KEY ? "another question" : "malformed");
		return false;
	}
	memcpy(t->buf, v.answer, v.alen);
	if (vd == RRC_L2_EXPIRED) {
		env->st->redis_expired++;
		uint32_t life;
		if (!cfg->serve_stale || v.expired_ms > (uint64_t)cfg->max_stale * 1000 || r->stale)
			return false;
		/* Checked the same way (as if fresh) before it may be served stale. */
		size_t n = rrc_l2_accept(t->buf, v.alen, r->key, r->keylen, 0, UINT32_MAX, &pol,
					 &life);
		if (n && (v.sealed || rrc_msg_check_reply(t->buf, n) == 0) &&
		    (r->stale = malloc(n))) {
			memcpy(r->stale, t->buf, n);
			r->stale_len = n;
		}
		return false;
	}
	uint32_t life = 0;
	uint32_t remaining = (uint32_t)RRC_MIN(v.remaining_ms / 1000, (uint64_t)UINT32_MAX);
	size_t n = rrc_l2_accept(t->buf, v.alen, r->key, r->keylen, v.age, remaining, &pol, &life);
	/* A sealed value was parsed by ldns in the instance that wrote it (l2value.h). */
	if (n == 0 || (!v.sealed && rrc_msg_check_reply(t->buf, n) != 0)) {
		if (n != 0 || remaining > 0)
			env->st->redis_bad_values++;
		return false;
	}
	/* AD from another instance is kept only where upstream AD is trusted (trust_ad). */
	if (!cfg->trust_ad)
		rrc_put16(t->buf + 2, rrc_get16(t->buf + 2) & (uint16_t)~RRC_F_AD);
	res->outcome = RRC_L2_HIT;
	res->answer = t->buf;
	res->len = n;
	res->lifetime = life;
	return true;
}

enum cmd_kind { CMD_GET, CMD_LOCK, CMD_SET };

static bool send_get(struct rrc_redis_req *r);
static bool send_lock(struct rrc_redis_req *r);
static int node_index(struct rrc_redis_tier *t, const struct rrc_redis_node *addr);
static void map_refresh_soon(struct rrc_redis_tier *t);

static void on_asking(redisAsyncContext *ac, void *reply, void *priv)
{
	(void)ac;
	(void)reply;
	req_done_one(priv);
}

/* Cluster: sends r's command again on c (after ASKING for an ASK). */
static bool resend(struct rrc_redis_req *r, struct conn *c, enum cmd_kind kind, bool asking)
{
	r->conn = c;
	r->ac = c->ac;
	r->redirects++;
	r->asking = asking;
	if (asking && kind == CMD_GET && !sent(r, redisAsyncCommand(c->ac, on_asking, r, "ASKING")))
		return false;
	return kind == CMD_GET ? send_get(r) : send_lock(r);
}

/* Cluster: an error reply that is a redirect (MOVED: the map is updated and read again soon;
 * ASK: not) or a cluster state (TRYAGAIN, CLUSTERDOWN: a miss, no failure). True when it was
 * one of those and r was dealt with: sent again, or told. */
static bool cluster_error(struct rrc_redis_req *r, const redisReply *rep, enum cmd_kind kind)
{
	struct rrc_redis_tier *t = r->t;
	uint16_t slot;
	struct rrc_redis_node to;
	enum rrc_redis_redirect rd = rrc_redis_parse_redirect(rep->str, rep->len, &slot, &to);
	if (rd == RRC_REDIRECT_NONE) {
		if (strncmp(rep->str, "TRYAGAIN", 8) != 0 &&
		    strncmp(rep->str, "CLUSTERDOWN", 11) != 0)
			return false;
		t->env->st->redis_cluster_unavailable++;
		if (!r->expired && kind != CMD_SET)
			tell_outcome(r, RRC_L2_MISS);
		return true;
	}
	if (rd == RRC_REDIRECT_MOVED)
		t->env->st->redis_moved++;
	else
		t->env->st->redis_ask++;
	success(r->conn); /* the node answered */
	int n = node_index(t, &to);
	if (rd == RRC_REDIRECT_MOVED) {
		if (n >= 0) {
			t->slot[slot] = (uint8_t)n;
			t->nodes[n].mapped = true;
		}
		map_refresh_soon(t);
	}
	struct conn *c = n >= 0 ? &t->nodes[n].c : NULL;
	if (!r->expired && !r->told && kind != CMD_SET && r->redirects < RRC_REDIS_MAX_REDIRECTS &&
	    c && c->state == C_READY && resend(r, c, kind, rd == RRC_REDIRECT_ASK))
		return true;
	if (!r->expired)
		tell_outcome(r, RRC_L2_SKIP);
	return true;
}

/* Judges a reply to one of r's commands: false for an error or a connection gone (counted
 * when it is the connection r was written on, still open; r's caller told to skip Redis),
 * or a cluster's redirect (r sent again or told). */
static bool reply_ok(struct rrc_redis_req *r, redisAsyncContext *ac, const redisReply *rep,
		     bool *current, enum cmd_kind kind)
{
	struct rrc_redis_tier *t = r->t;
	*current = !t->closing && ac == r->ac && ac == r->conn->ac;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		if (rep && *current && t->cluster && cluster_error(r, rep, kind))
			return false;
		if (rep && *current) {
			rrc_log_limited(RRC_LOG_WARN, RRC_LG_REDIS, "worker %u: Redis: %.*s",
					t->env->worker, (int)RRC_MIN(rep->len, 200), rep->str);
			failure(r->conn);
		}
		if (!r->expired)
			tell_outcome(r, RRC_L2_SKIP);
		return false;
	}
	if (*current)
		success(r->conn);
	return true;
}

static void on_get(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rrc_redis_req *r = priv;
	struct rrc_redis_tier *t = r->t;
	bool current;
	if (reply_ok(r, ac, reply, &current, CMD_GET) && !r->expired && !r->told) {
		struct rrc_l2_result res = {0};
		if (check_value(r, reply, &res)) {
			t->env->st->redis_hits++;
			tell(r, &res);
		} else {
			t->env->st->redis_misses++;
			r->got_miss = true;
			/* Only a miss takes the fleet lock: hits cost one command and leave no key
			 * behind to expire. */
			if (!t->rc.fleet_coalescing || !current || !send_lock(r))
				tell_outcome(r, RRC_L2_MISS);
		}
	}
	req_done_one(r);
}

static void on_lock(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rrc_redis_req *r = priv;
	const redisReply *rep = reply;
	bool current;
	if (reply_ok(r, ac, rep, &current, CMD_LOCK) && !r->expired && r->got_miss) {
		/* OK: ours, ask the upstream. Nil: another instance holds it. */
		if (rep->type == REDIS_REPLY_NIL && !r->refresh)
			r->t->env->st->redis_fleet_waits++;
		tell_outcome(r, rep->type == REDIS_REPLY_NIL ? RRC_L2_LOCKED : RRC_L2_MISS);
	}
	req_done_one(r);
}

/* Commands on the query path are written in RESP here and handed over formatted: hiredis's
 * printf-like formatting cost about 5,900 instructions per GET (callgrind), more than the
 * rest of an L2 hit's own work. */
static size_t resp_uint(uint8_t *out, unsigned long long v)
{
	uint8_t tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (uint8_t)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* Formats a command of argc arguments into the tier's buffer and sends it on r's
 * connection. */
static int send_argv(struct rrc_redis_req *r, redisCallbackFn *fn, unsigned argc,
		     const void *const *argv, const size_t *lens)
{
	struct rrc_redis_tier *t = r->t;
	uint8_t *o = t->cmd;
	size_t p = 0;
	o[p++] = '*';
	p += resp_uint(o + p, argc);
	o[p++] = '\r';
	o[p++] = '\n';
	for (unsigned i = 0; i < argc; i++) {
		if (p + lens[i] + 32 > sizeof(t->cmd))
			return REDIS_ERR;
		o[p++] = '$';
		p += resp_uint(o + p, lens[i]);
		o[p++] = '\r';
		o[p++] = '\n';
		memcpy(o + p, argv[i], lens[i]);
		p += lens[i];
		o[p++] = '\r';
		o[p++] = '\n';
	}
	return redisAsyncFormattedCommand(r->conn->ac, fn, r, (const char *)o, p);
}

/* The key flags of this tier's keys. */
static unsigned key_flags(const struct rrc_redis_tier *t, bool lock)
{
	return (lock ? RRC_L2_KEY_LOCK : 0) | (t->cluster ? RRC_L2_KEY_TAG : 0);
}

static bool send_get(struct rrc_redis_req *r)
{
	const void *argv[] = {"GET", r->rk};
	const size_t lens[] = {3, r->rklen};
	return sent(r, send_argv(r, on_get, 2, argv, lens));
}

/* After a miss: SET lock NX, within the request's deadline. False if it cannot be sent. */
static bool send_lock(struct rrc_redis_req *r)
{
	struct rrc_redis_tier *t = r->t;
	if (t->pending + 1 > t->rc.max_pending)
		return false;
	/* The lock's key is the value's with "lock:" after the prefix (rrc_l2_key). */
	char k[RRC_L2_KEY_MAX];
	size_t plen = strnlen(t->rc.key_prefix, 63);
	memcpy(k, r->rk, plen);
	memcpy(k + plen, "lock:", 5);
	memcpy(k + plen + 5, r->rk + plen, (size_t)r->rklen - plen);
	size_t klen = (size_t)r->rklen + 5;
	uint8_t px[20];
	size_t pxl = resp_uint(px, t->rc.fleet_wait_ms);
	/* ASK holds for one command: the lock on the node asked goes after its own ASKING. */
	if (r->asking && !sent(r, redisAsyncCommand(r->conn->ac, on_asking, r, "ASKING")))
		return false;
	const void *argv[] = {"SET", k, "1", "NX", "PX", px};
	const size_t lens[] = {3, klen, 1, 2, 2, pxl};
	if (!sent(r, send_argv(r, on_lock, 6, argv, lens)))
		return false;
	r->lock = true;
	return true;
}

/* A request about key (of pool ns) whose result goes to cb, on the connection of its Redis
 * key (with or without lock: the same slot), or NULL when it cannot be asked (counted by
 * req_new). */
static struct rrc_redis_req *key_req(struct rrc_redis_tier *t, const uint8_t *key, size_t keylen,
				     uint64_t ns, rrc_l2_cb cb, void *ctx)
{
	if (!t || keylen > RRC_WIRE_KEY_MAX)
		return NULL;
	char k[RRC_L2_KEY_MAX];
	size_t klen =
		rrc_l2_key(&t->keys, t->rc.key_prefix, key, keylen, ns, key_flags(t, false), k);
	struct rrc_redis_req *r = req_new(t, conn_of_key(t, k, klen), 1);
	if (!r)
		return NULL;
	memcpy(r->rk, k, klen + 1);
	r->rklen = (uint8_t)klen;
	r->cb = cb;
	r->ctx = ctx;
	r->keylen = (uint16_t)keylen;
	memcpy(r->key, key, keylen);
	r->ns = ns;
	return r;
}

struct rrc_redis_req *rrc_redis_get(struct rrc_redis_tier *t, const uint8_t *key, size_t keylen,
				    uint64_t ns, rrc_l2_cb cb, void *ctx)
{
	struct rrc_redis_req *r = key_req(t, key, keylen, ns, cb, ctx);
	if (!r)
		return NULL;
	if (!send_get(r)) {
		req_abandon(r);
		t->env->st->redis_errors++;
		return NULL;
	}
	return r;
}

struct rrc_redis_req *rrc_redis_refresh_lock(struct rrc_redis_tier *t, const uint8_t *key,
					     size_t keylen, uint64_t ns, rrc_l2_cb cb, void *ctx)
{
	if (!t || !t->rc.fleet_coalescing)
		return NULL;
	struct rrc_redis_req *r = key_req(t, key, keylen, ns, cb, ctx);
	if (!r)
		return NULL;
	r->got_miss = true; /* no GET: the lock's reply decides */
	r->refresh = true;
	if (!send_lock(r)) {
		req_abandon(r);
		t->env->st->redis_errors++;
		return NULL;
	}
	return r;
}

void rrc_redis_cancel(struct rrc_redis_req *r)
{
	r->cb = NULL;
	r->ctx = NULL;
	r->told = true;
}

/* ---- SET ---- */

static void on_set(redisAsyncContext *ac, void *reply, void *priv)
{
	bool current;
	reply_ok(priv, ac, reply, &current, CMD_SET);
	req_done_one(priv);
}

void rrc_redis_set(struct rrc_redis_tier *t, const uint8_t *key, size_t keylen, uint64_t ns,
		   const uint8_t *answer, size_t len, uint32_t lifetime, uint32_t stale_window)
{
	if (!t || lifetime == 0)
		return;
	char k[RRC_L2_KEY_MAX];
	size_t klen =
		rrc_l2_key(&t->keys, t->rc.key_prefix, key, keylen, ns, key_flags(t, false), k);
	struct rrc_redis_req *r = req_new(t, conn_of_key(t, k, klen), 1);
	if (!r)
		return;
	r->told = true;
	size_t vlen = rrc_l2_encode(t->val, sizeof(t->val), &t->keys, key, keylen, answer, len,
				    wall_ms(), lifetime);
	uint8_t px[20];
	size_t pxl = resp_uint(px, ((unsigned long long)lifetime + stale_window) * 1000);
	const void *argv[] = {"SET", k, t->val, "PX", px};
	const size_t lens[] = {3, klen, vlen, 2, pxl};
	if (vlen == 0 || !sent(r, send_argv(r, on_set, 5, argv, lens))) {
		req_abandon(r);
		if (vlen)
			t->env->st->redis_errors++;
		return;
	}
	t->env->st->redis_sets++;
}

/* ---- flush messages ---- */

static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
	struct conn *c = priv;
	struct rrc_redis_tier *t = c->t;
	redisReply *rep = reply;
	if (!rep || t->closing || ac != c->ac || rep->type != REDIS_REPLY_ARRAY ||
	    rep->elements != 3 || rep->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(rep->element[0]->str, "subscribe") == 0) {
		rrc_log(RRC_LOG_INFO, RRC_LG_REDIS, "Redis: listening for fleet flushes");
		return;
	}
	if (strcmp(rep->element[0]->str, "message") != 0 ||
	    rep->element[2]->type != REDIS_REPLY_STRING)
		return;
	const redisReply *m = rep->element[2];
	struct rrc_cache *cache = t->env->cache;
	if (m->len == 1 && m->str[0] == '*') {
		rrc_cache_clear(cache);
		rrc_log(RRC_LOG_INFO, RRC_LG_REDIS, "fleet flush: L1 emptied");
		return;
	}
	/* A name in wire form, lowercased by the sender; walked with the usual bounds and
	 * lowercased again all the same. */
	uint8_t name[RRC_WIRE_MAX_NAME];
	size_t end, nlen;
	if (rrc_wire_name((const uint8_t *)m->str, m->len, 0, &end, &nlen, name) != 0 ||
	    end != m->len)
		return;
	size_t n = rrc_cache_remove_name(cache, name, nlen);
	rrc_log(RRC_LOG_INFO, RRC_LG_REDIS, "fleet flush of one name: %zu L1 entries removed", n);
}

/* ---- connections ---- */

static void on_conn_timer(uv_timer_t *h);
static void map_request(struct rrc_redis_tier *t);

/* The gauge of this worker: its data connection ready; with Cluster, a map covering every
 * slot and every node of it ready. */
static void update_up(struct rrc_redis_tier *t)
{
	bool up = t->data.state == C_READY;
	if (t->cluster) {
		up = t->have_map;
		for (unsigned s = 0; up && s < RRC_REDIS_SLOTS; s++)
			up = t->slot[s] != RRC_REDIS_NO_NODE &&
			     t->nodes[t->slot[s]].c.state == C_READY;
	}
	t->env->st->redis_up = up;
}

static void schedule_reopen(struct conn *c)
{
	struct rrc_redis_tier *t = c->t;
	if (t->closing)
		return;
	c->backoff_ms = c->backoff_ms ? RRC_MIN(c->backoff_ms * 2, t->rc.backoff_max_ms)
				      : t->rc.backoff_min_ms;
	uv_timer_start(&c->timer, on_conn_timer, c->backoff_ms, 0);
}

/* Closes the connection (every pending command is called back with NULL) and schedules the
 * next attempt. */
static void conn_drop(struct conn *c, const char *why)
{
	struct rrc_redis_tier *t = c->t;
	redisAsyncContext *ac = c->ac;
	bool was_ready = c->state == C_READY;
	c->ac = NULL;
	c->state = C_CLOSED;
	if (!c->sub)
		update_up(t);
	uv_timer_stop(&c->timer);
	if (!t->closing) {
		char name[128];
		if (was_ready || !c->logged_down)
			rrc_log(RRC_LOG_WARN, RRC_LG_REDIS,
				"worker %u: Redis %s down (%s); retrying with backoff",
				t->env->worker, conn_name(c, name, sizeof(name)), why);
		c->logged_down = true;
		schedule_reopen(c);
		/* A node gone may be a failover under way: the map is read again. */
		if (t->cluster && !c->sub)
			map_refresh_soon(t);
	}
	if (ac)
		redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
}

static void became_ready(struct conn *c)
{
	struct rrc_redis_tier *t = c->t;
	c->state = C_READY;
	uv_timer_stop(&c->timer);
	if (!c->sub) {
		c->failures = 0;
		update_up(t);
	}
	char name[128];
	rrc_log(c->logged_down ? RRC_LOG_WARN : RRC_LOG_INFO, RRC_LG_REDIS,
		"worker %u: Redis %s ready%s", t->env->worker, conn_name(c, name, sizeof(name)),
		c->logged_down ? " again" : "");
	c->logged_down = false;
	if (t->cluster && !c->sub && (!t->have_map || t->map_wanted))
		map_request(t);
	if (c->sub) {
		char ch[80];
		int n = snprintf(ch, sizeof(ch), "%sflush", t->rc.key_prefix);
		if (redisAsyncCommand(c->ac, on_message, c, "SUBSCRIBE %b", ch, (size_t)n) !=
		    REDIS_OK)
			conn_drop(c, "cannot subscribe");
	}
}

static void on_setup(redisAsyncContext *ac, void *reply, void *priv)
{
	struct conn *c = priv;
	redisReply *rep = reply;
	if (c->t->closing || ac != c->ac)
		return;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		char why[160];
		snprintf(why, sizeof(why), "set-up refused: %.*s",
			 rep ? (int)RRC_MIN(rep->len, 100) : 4, rep ? rep->str : "gone");
		conn_drop(c, why);
		return;
	}
	if (--c->setup_left == 0 && c->state == C_CONNECTING)
		became_ready(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct conn *c = ac->data;
	if (!c || c->t->closing || ac != c->ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context itself after a failed connect. */
		char why[128];
		snprintf(why, sizeof(why), "connect: %.100s", ac->errstr);
		c->ac = NULL;
		conn_drop(c, why);
		return;
	}
	if (c->setup_left == 0)
		became_ready(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct conn *c = ac->data;
	if (!c || c->t->closing || ac != c->ac)
		return;
	/* hiredis frees the context after this returns. */
	char why[128];
	const char *refused = rrc_redis_uv_refused(ac);
	if (refused) {
		/* Not Redis as rrcache speaks to it: counted, dropped, tried again after the
		 * backoff like any failure. */
		c->t->env->st->redis_protocol_errors++;
		snprintf(why, sizeof(why), "protocol error: %.100s", refused);
	} else {
		snprintf(why, sizeof(why), "%.100s", status == REDIS_OK ? "closed" : ac->errstr);
	}
	c->ac = NULL;
	conn_drop(c, why);
}

static void on_conn_timer(uv_timer_t *h)
{
	struct conn *c = h->data;
	if (c->state == C_CONNECTING)
		conn_drop(c, "connect timed out");
	else if (c->state == C_CLOSED)
		conn_open(c);
}

/* Sentinel: a connection's set-up ends with ROLE, so that an address the sentinels gave while
 * a failover is under way (a replica now) is not written to. */
static void on_role(redisAsyncContext *ac, void *reply, void *priv)
{
	struct conn *c = priv;
	const redisReply *rep = reply;
	if (c->t->closing || ac != c->ac)
		return;
	const char *role = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
					   rep->element[0]->type == REDIS_REPLY_STRING
				   ? rep->element[0]->str
				   : NULL;
	if (!role || strcmp(role, "master") != 0) {
		char why[160];
		snprintf(why, sizeof(why), "%s:%u is not the master (ROLE: %.40s)", c->host,
			 c->port,
			 role					 ? role
			 : rep && rep->type == REDIS_REPLY_ERROR ? rep->str
								 : "?");
		/* Said each time: the connection's own line is said once until it is up. */
		rrc_log_limited(RRC_LOG_WARN, RRC_LG_REDIS, "worker %u: Redis: %s",
				c->t->env->worker, why);
		rrc_redis_master_doubt(c->t->master);
		conn_drop(c, why);
		return;
	}
	if (--c->setup_left == 0 && c->state == C_CONNECTING)
		became_ready(c);
}

static void conn_open(struct conn *c)
{
	struct rrc_redis_tier *t = c->t;
	const struct rrc_redis_conf *rc = &t->rc;
	if (c->node >= 0) {
		memcpy(c->host, t->nodes[c->node].addr.host, sizeof(c->host));
		c->port = t->nodes[c->node].addr.port;
	} else if (t->cluster) {
		/* The flush subscription: on any node (a cluster passes every PUBLISH to every
		 * node), the next known one at each attempt. */
		int n = -1;
		for (unsigned i = 0; i < RRC_REDIS_MAX_NODES && n < 0; i++) {
			unsigned k = (t->sub_next + i) % RRC_REDIS_MAX_NODES;
			if (t->nodes[k].used)
				n = (int)k;
		}
		if (n < 0) {
			c->state = C_CLOSED;
			schedule_reopen(c);
			return;
		}
		t->sub_next = (unsigned)n + 1;
		memcpy(c->host, t->nodes[n].addr.host, sizeof(c->host));
		c->port = t->nodes[n].addr.port;
	} else if (t->master) {
		c->gen = rrc_redis_master_get(t->master, c->host, &c->port);
		if (!c->host[0]) {
			/* Not known yet (the watcher is asking): tried again after the backoff,
			 * or at once when the watcher knows. */
			c->state = C_CLOSED;
			schedule_reopen(c);
			return;
		}
	} else if (!rc->unix_socket) {
		memcpy(c->host, rc->host, sizeof(c->host));
		c->port = rc->port;
	}
	char why[128];
	redisAsyncContext *ac = rrc_redis_uv_connect(t->env->loop, c->host, c->port,
						     rc->unix_socket ? rc->path : NULL,
						     RRC_REDIS_MAX_INPUT, why, sizeof(why));
	if (!ac) {
		conn_drop(c, why);
		return;
	}
	if (t->cluster) /* the slot map may be read on it */
		rrc_redis_uv_limits(ac, RRC_REDIS_CLUSTER_MAX_INPUT, RRC_REDIS_CLUSTER_MAX_ELEMENTS,
				    RRC_REDIS_CLUSTER_MAX_TOTAL);
	else if (t->master) /* ROLE of a master lists its replicas, one array each */
		rrc_redis_uv_limits(ac, RRC_REDIS_MAX_INPUT, RRC_REDIS_ROLE_MAX_REPLICAS,
				    4 * RRC_REDIS_ROLE_MAX_REPLICAS + 8);
	ac->data = c;
	c->ac = ac;
	c->state = C_CONNECTING;
	c->setup_left = 0;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* Written at once, sent when the connection is up. The password never goes to a log. */
	if (rc->password[0]) {
		int r = rc->user[0] ? redisAsyncCommand(ac, on_setup, c, "AUTH %b %b", rc->user,
							strlen(rc->user), rc->password,
							strlen(rc->password))
				    : redisAsyncCommand(ac, on_setup, c, "AUTH %b", rc->password,
							strlen(rc->password));
		c->setup_left += r == REDIS_OK;
	}
	if (rc->db && !c->sub) {
		c->setup_left += redisAsyncCommand(ac, on_setup, c, "SELECT %u",
						   (unsigned)rc->db) == REDIS_OK;
	}
	if (t->master)
		c->setup_left += redisAsyncCommand(ac, on_role, c, "ROLE") == REDIS_OK;
	uv_timer_start(&c->timer, on_conn_timer, rc->connect_timeout_ms, 0);
}

/* Ends c's connection quietly, with no reopening: its commands in flight are called back
 * with NULL (their queries go upstream). */
static void conn_end(struct conn *c)
{
	redisAsyncContext *ac = c->ac;
	c->ac = NULL;
	c->state = C_CLOSED;
	uv_timer_stop(&c->timer);
	if (ac)
		redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
}

/* Sentinel: the master moved; c goes there now, whatever it was doing. */
static void conn_follow(struct conn *c)
{
	struct rrc_redis_tier *t = c->t;
	if (!t)
		return; /* the flush subscription of a worker other than 0 */
	if (c->state == C_READY && !c->sub)
		t->env->st->redis_up = 0;
	conn_end(c);
	c->backoff_ms = 0;
	conn_open(c);
}

static void follow_master(struct rrc_redis_tier *t)
{
	char host[RRC_REDIS_HOST_LEN];
	uint16_t port;
	rrc_redis_master_get(t->master, host, &port);
	rrc_log(RRC_LOG_INFO, RRC_LG_REDIS, "worker %u: Redis master is %s:%u; connecting there",
		t->env->worker, host, port);
	conn_follow(&t->data);
	conn_follow(&t->sub);
}

static void on_master_moved(void *ctx)
{
	struct rrc_redis_tier *t = ctx;
	if (!t->closing && rrc_redis_master_generation(t->master) != t->data.gen)
		follow_master(t);
}

/* ---- Cluster: nodes and the slot map ---- */

static void conn_init(struct rrc_redis_tier *t, struct conn *c, bool sub);

/* The index of the node at addr, added (and connected to) when new; -1 when the table is
 * full. */
static int node_index(struct rrc_redis_tier *t, const struct rrc_redis_node *addr)
{
	int free_at = -1;
	for (unsigned i = 0; i < RRC_REDIS_MAX_NODES; i++) {
		struct node *n = &t->nodes[i];
		if (!n->used) {
			if (free_at < 0)
				free_at = (int)i;
		} else if (n->addr.port == addr->port && strcmp(n->addr.host, addr->host) == 0) {
			return (int)i;
		}
	}
	if (free_at < 0 || t->closing)
		return -1;
	struct node *n = &t->nodes[free_at];
	n->addr = *addr;
	n->used = true;
	n->mapped = false;
	n->seed = false;
	if (!n->c.t) /* its timer is set up once, kept while the tier lives */
		conn_init(t, &n->c, false);
	n->c.node = free_at;
	n->c.backoff_ms = 0;
	n->c.failures = 0;
	n->c.logged_down = false;
	conn_open(&n->c);
	return free_at;
}

/* A node no longer in the map (and no seed): its connection ends, its requests go
 * upstream. */
static void node_forget(struct rrc_redis_tier *t, unsigned i)
{
	struct node *n = &t->nodes[i];
	n->used = n->mapped = false;
	rrc_log(RRC_LOG_INFO, RRC_LG_REDIS, "worker %u: Redis Cluster: %s:%u left the slot map",
		t->env->worker, n->addr.host, n->addr.port);
	conn_end(&n->c);
}

/* A map read from a node becomes the tier's: its masters get (or keep) their connections,
 * the nodes it no longer names are forgotten (seeds stay, to read the map from). */
static void map_apply(struct rrc_redis_tier *t, const struct rrc_redis_slot_map *m)
{
	uint8_t stable[RRC_REDIS_MAX_NODES];
	bool was[RRC_REDIS_MAX_NODES];
	for (unsigned i = 0; i < RRC_REDIS_MAX_NODES; i++) {
		was[i] = t->nodes[i].used && t->nodes[i].mapped;
		t->nodes[i].mapped = false;
	}
	for (unsigned i = 0; i < m->n_nodes; i++) {
		int n = node_index(t, &m->nodes[i]);
		stable[i] = n < 0 ? RRC_REDIS_NO_NODE : (uint8_t)n;
		if (n >= 0)
			t->nodes[n].mapped = true;
	}
	for (unsigned s = 0; s < RRC_REDIS_SLOTS; s++)
		t->slot[s] =
			m->slot[s] == RRC_REDIS_NO_NODE ? RRC_REDIS_NO_NODE : stable[m->slot[s]];
	for (unsigned i = 0; i < RRC_REDIS_MAX_NODES; i++) {
		if (t->nodes[i].used && !t->nodes[i].mapped && !t->nodes[i].seed)
			node_forget(t, i);
	}
	bool first = !t->have_map;
	for (unsigned i = 0; i < RRC_REDIS_MAX_NODES && !first; i++) {
		if (t->nodes[i].used && t->nodes[i].mapped && !was[i])
			rrc_log(RRC_LOG_INFO, RRC_LG_REDIS,
				"worker %u: Redis Cluster: %s:%u serves slots now", t->env->worker,
				t->nodes[i].addr.host, t->nodes[i].addr.port);
	}
	t->have_map = true;
	t->env->st->redis_cluster_maps++;
	if (first)
		rrc_log(RRC_LOG_INFO, RRC_LG_REDIS,
			"worker %u: Redis Cluster: %u masters serve %u of %d slots", t->env->worker,
			m->n_nodes, rrc_redis_slot_map_covered(m), RRC_REDIS_SLOTS);
	update_up(t);
}

static void on_map(redisAsyncContext *ac, void *reply, void *priv);
static void on_map_timer(uv_timer_t *h);

/* Asks for the map (CLUSTER SHARDS, or SLOTS) on the first node whose connection is ready. */
static bool map_ask(struct rrc_redis_tier *t, bool shards)
{
	const char *cmd = shards ? "CLUSTER SHARDS" : "CLUSTER SLOTS";
	for (unsigned i = 0; i < RRC_REDIS_MAX_NODES; i++) {
		struct conn *c = &t->nodes[i].c;
		if (!t->nodes[i].used || c->state != C_READY)
			continue;
		if (redisAsyncCommand(c->ac, on_map, t, cmd) != REDIS_OK)
			continue;
		t->map_ac = c->ac;
		t->map_shards = shards;
		t->map_last = uv_now(t->env->loop);
		uv_timer_start(&t->map_timer, on_map_timer, t->rc.connect_timeout_ms, 0);
		return true;
	}
	return false;
}

static void map_request(struct rrc_redis_tier *t)
{
	t->map_wanted = true;
	if (t->closing || t->map_ac)
		return;
	if (map_ask(t, true))
		t->map_wanted = false;
	/* else: asked when a node's connection is ready. */
}

static void on_map(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rrc_redis_tier *t = priv;
	const redisReply *r = reply;
	if (t->closing || ac != t->map_ac)
		return;
	t->map_ac = NULL;
	uv_timer_stop(&t->map_timer);
	if (r && r->type == REDIS_REPLY_ERROR && t->map_shards) {
		/* Redis 6 has no CLUSTER SHARDS. */
		if (map_ask(t, false))
			return;
	}
	struct rrc_redis_slot_map *m = malloc(sizeof(*m));
	char why[160] = "out of memory";
	if (m && rrc_redis_cluster_read_map(r, t->map_shards, m, why, sizeof(why)) == 0) {
		map_apply(t, m);
	} else {
		rrc_log_limited(RRC_LOG_WARN, RRC_LG_REDIS,
				"worker %u: Redis Cluster: cannot read the slot map: %s",
				t->env->worker, r ? why : "connection gone");
		map_refresh_soon(t);
	}
	free(m);
}

static void on_map_timer(uv_timer_t *h)
{
	struct rrc_redis_tier *t = h->data;
	if (t->map_ac) {
		/* No answer in time: asked again, perhaps of another node. */
		t->map_ac = NULL;
		rrc_log_limited(RRC_LOG_WARN, RRC_LG_REDIS,
				"worker %u: Redis Cluster: the slot map did not come in time",
				t->env->worker);
		map_refresh_soon(t);
		return;
	}
	if (t->map_wanted)
		map_request(t);
}

/* Reads the map again, at most every RRC_REDIS_MAP_INTERVAL_MS: after a MOVED, a node lost. */
static void map_refresh_soon(struct rrc_redis_tier *t)
{
	if (t->closing)
		return;
	t->map_wanted = true;
	if (t->map_ac)
		return;
	uint64_t now = uv_now(t->env->loop);
	uint64_t at = t->map_last + RRC_REDIS_MAP_INTERVAL_MS;
	uv_timer_start(&t->map_timer, on_map_timer, at > now ? at - now : 0, 0);
}

static void on_deadline_closed(uv_handle_t *h)
{
	struct rrc_redis_tier *t = h->data;
	t->closes--;
	maybe_free_tier(t);
}

static void on_conn_timer_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->t->closes--;
	maybe_free_tier(c->t);
}

static void conn_init(struct rrc_redis_tier *t, struct conn *c, bool sub)
{
	c->t = t;
	c->sub = sub;
	c->node = -1;
	uv_timer_init(t->env->loop, &c->timer);
	c->timer.data = c;
	t->closes++;
}

struct rrc_redis_tier *rrc_redis_tier_create(const struct rrc_env *env)
{
	const struct rrc_config *cfg = rrc_env_cfg(env);
	if (!cfg->redis.enabled)
		return NULL;
	struct rrc_redis_tier *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->env = env;
	t->rc = cfg->redis;
	t->master = cfg->redis.n_sentinels ? env->redis_master : NULL;
	rrc_l2_derive_keys(cfg->redis.key_secret, &t->keys);
	uv_timer_init(env->loop, &t->deadline);
	t->deadline.data = t;
	t->closes++;
	conn_init(t, &t->data, false);
	if (cfg->redis.cluster) {
		/* The seeds are asked for the slot map; the data connection stays unused. */
		t->cluster = true;
		memset(t->slot, RRC_REDIS_NO_NODE, sizeof(t->slot));
		uv_timer_init(env->loop, &t->map_timer);
		t->map_timer.data = t;
		t->closes++;
		for (unsigned i = 0; i < cfg->redis.n_seeds; i++) {
			struct rrc_redis_node a;
			snprintf(a.host, sizeof(a.host), "%s", cfg->redis.seeds[i].host);
			a.port = cfg->redis.seeds[i].port;
			int n = node_index(t, &a);
			if (n >= 0)
				t->nodes[n].seed = true;
		}
	} else {
		conn_open(&t->data);
	}
	if (env->worker == 0) {
		conn_init(t, &t->sub, true);
		conn_open(&t->sub);
		if (t->master)
			t->watch = rrc_redis_sentinel_start(env, t->master, on_master_moved, t);
	}
	return t;
}

/* At the tier's close: c ends and its timer closes (when conn_init set it up). */
static void conn_close(struct conn *c)
{
	if (!c->t)
		return;
	conn_end(c);
	uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
}

void rrc_redis_tier_close(struct rrc_redis_tier *t)
{
	if (!t)
		return;
	/* Callers are gone (their queries ended first): nobody is told anything now. */
	for (struct rrc_redis_req *r = t->head; r; r = r->next)
		rrc_redis_cancel(r);
	t->closing = true;
	rrc_redis_sentinel_close(t->watch);
	t->watch = NULL;
	conn_close(&t->data);
	conn_close(&t->sub);
	for (unsigned i = 0; i < RRC_REDIS_MAX_NODES; i++)
		conn_close(&t->nodes[i].c);
	if (t->cluster)
		uv_close((uv_handle_t *)&t->map_timer, on_deadline_closed);
	uv_close((uv_handle_t *)&t->deadline, on_deadline_closed);
}

int rrc_redis_state(const struct rrc_redis_tier *t)
{
	return t && t->env->st->redis_up;
}
