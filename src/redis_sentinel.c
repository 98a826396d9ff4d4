/*
 * redis_sentinel: the master's address from Redis Sentinel. See
 * include/rrcache/redis_sentinel.h.
 *
 * One connection at a time: CLOSED -> ASKING (connected or connecting; AUTH and the question
 * written at once, one deadline for all) -> SUBSCRIBED (waiting for "+switch-master"), back to
 * CLOSED on any failure, and on to the next sentinel.
 */
#include "rrcache/redis_sentinel.h"
#include "rrcache/env.h"
#include "rrcache/log.h"
#include "rrcache/redis_uv.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a sentinel may send on this connection: an address, or a switch message. */
#define SENTINEL_MAX_INPUT 4096
/* How often a worker's doubt about the address is looked at. */
#define DOUBT_POLL_MS 1000

enum state { S_CLOSED, S_ASKING, S_SUBSCRIBED };

struct rrc_redis_sentinel {
	const struct rrc_env *env;
	struct rrc_redis_conf rc;
	struct rrc_redis_master *m;
	rrc_redis_sentinel_moved_fn moved;
	void *ctx;
	redisAsyncContext *ac;
	enum state state;
	unsigned at;	     /* the sentinel asked now */
	unsigned round_from; /* where the current round of attempts began */
	uint32_t backoff_ms;
	bool known;	  /* an address was recorded */
	bool logged_down; /* the failure of this round was said */
	bool closing;
	unsigned closes;
	uv_timer_t timer; /* the deadline of the question, then the wait before the next try */
	uv_timer_t poll;  /* the workers' doubts */
};

static void open_next(struct rrc_redis_sentinel *s);

static const struct rrc_redis_addr *current(const struct rrc_redis_sentinel *s)
{
	return &s->rc.sentinels[s->at];
}

/* Records an address; says so and tells the owner when the master moved. */
static void record(struct rrc_redis_sentinel *s, const char *host, uint16_t port)
{
	char old[RRC_REDIS_HOST_LEN];
	uint16_t old_port;
	rrc_redis_master_get(s->m, old, &old_port);
	if (!rrc_redis_master_set(s->m, host, port))
		return;
	const struct rrc_redis_addr *a = current(s);
	if (s->known) {
		s->env->st->redis_master_changes++;
		rrc_log(RRC_LOG_WARN, RRC_LG_REDIS,
			"Redis Sentinel: master \"%s\" moved from %s:%u to %s:%u (sentinel %s:%u)",
			s->rc.master_name, old, old_port, host, port, a->host, a->port);
	} else {
		rrc_log(RRC_LOG_INFO, RRC_LG_REDIS,
			"Redis Sentinel: master \"%s\" is at %s:%u (sentinel %s:%u)",
			s->rc.master_name, host, port, a->host, a->port);
	}
	s->known = true;
	if (s->moved)
		s->moved(s->ctx);
}

static void on_timer(uv_timer_t *h);

/* Ends the connection to this sentinel and goes on to the next: at once within a round, after
 * the backoff once every sentinel failed in a row. */
static void drop(struct rrc_redis_sentinel *s, const char *why)
{
	redisAsyncContext *ac = s->ac;
	const struct rrc_redis_addr *a = current(s);
	s->ac = NULL;
	if (s->state == S_SUBSCRIBED)
		s->env->st->redis_sentinel_up = 0;
	s->state = S_CLOSED;
	uv_timer_stop(&s->timer);
	if (!s->closing) {
		rrc_log(s->logged_down ? RRC_LOG_DEBUG : RRC_LOG_WARN, RRC_LG_REDIS,
			"Redis Sentinel %s:%u: %s; asking the next", a->host, a->port, why);
		s->at = (s->at + 1) % s->rc.n_sentinels;
		uint32_t wait = 0;
		if (s->at == s->round_from) {
			s->logged_down = true;
			s->backoff_ms = s->backoff_ms
						? RRC_MIN(s->backoff_ms * 2, s->rc.backoff_max_ms)
						: s->rc.backoff_min_ms;
			wait = s->backoff_ms;
		}
		uv_timer_start(&s->timer, on_timer, wait, 0);
	}
	if (ac)
		redisAsyncFree(ac); /* deferred by hiredis inside its callbacks */
}

/* Whether a reply of the live connection ac is to be looked at. */
static bool live(struct rrc_redis_sentinel *s, const redisAsyncContext *ac)
{
	return !s->closing && ac == s->ac && ac != NULL;
}

static void on_switch(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rrc_redis_sentinel *s = priv;
	const redisReply *r = reply;
	if (!live(s, ac) || !r)
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		drop(s, "unexpected reply to SUBSCRIBE");
		return;
	}
	if (strcmp(r->element[0]->str, "subscribe") == 0) {
		s->state = S_SUBSCRIBED;
		uv_timer_stop(&s->timer);
		s->env->st->redis_sentinel_up = 1;
		s->backoff_ms = 0;
		s->round_from = s->at;
		s->logged_down = false;
		return;
	}
	if (strcmp(r->element[0]->str, "message") != 0 || r->element[2]->type != REDIS_REPLY_STRING)
		return;
	char host[RRC_REDIS_HOST_LEN];
	uint16_t port;
	if (rrc_redis_master_parse_switch(r->element[2]->str, (size_t)r->element[2]->len,
					  s->rc.master_name, host, &port) == 0)
		record(s, host, port);
}

static void on_addr(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rrc_redis_sentinel *s = priv;
	const redisReply *r = reply;
	if (!live(s, ac))
		return;
	if (!r) {
		drop(s, "no reply");
		return;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		char why[160];
		snprintf(why, sizeof(why), "%.120s", r->str);
		drop(s, why);
		return;
	}
	if (r->type == REDIS_REPLY_NIL) {
		char why[160];
		snprintf(why, sizeof(why), "does not know a master called \"%.80s\"",
			 s->rc.master_name);
		drop(s, why);
		return;
	}
	char host[RRC_REDIS_HOST_LEN];
	uint16_t port;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    rrc_redis_master_parse_addr(r->element[0]->str, (size_t)r->element[0]->len,
					r->element[1]->str, (size_t)r->element[1]->len, host,
					&port) != 0) {
		drop(s, "the master's address is not a numeric address and port");
		return;
	}
	record(s, host, port);
	if (!live(s, ac))
		return;
	if (redisAsyncCommand(ac, on_switch, s, "SUBSCRIBE +switch-master") != REDIS_OK)
		drop(s, "cannot subscribe");
}

static void on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rrc_redis_sentinel *s = priv;
	const redisReply *r = reply;
	if (!live(s, ac))
		return;
	if (!r || r->type == REDIS_REPLY_ERROR) {
		char why[160];
		snprintf(why, sizeof(why), "AUTH refused: %.100s", r ? r->str : "no reply");
		drop(s, why);
	}
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rrc_redis_sentinel *s = ac->data;
	if (!s || !live(s, ac) || status == REDIS_OK)
		return;
	char why[128];
	snprintf(why, sizeof(why), "connect: %.100s", ac->errstr);
	s->ac = NULL; /* hiredis frees it after a failed connect */
	drop(s, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rrc_redis_sentinel *s = ac->data;
	if (!s || !live(s, ac))
		return;
	char why[128];
	const char *refused = rrc_redis_uv_refused(ac);
	snprintf(why, sizeof(why), "%.100s",
		 refused	      ? refused
		 : status == REDIS_OK ? "closed"
				      : ac->errstr);
	s->ac = NULL; /* hiredis frees it after this returns */
	drop(s, why);
}

static void open_next(struct rrc_redis_sentinel *s)
{
	const struct rrc_redis_addr *a = current(s);
	char why[128];
	redisAsyncContext *ac = rrc_redis_uv_connect(s->env->loop, a->host, a->port, NULL,
						     SENTINEL_MAX_INPUT, why, sizeof(why));
	if (!ac) {
		drop(s, why);
		return;
	}
	ac->data = s;
	s->ac = ac;
	s->state = S_ASKING;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* Written now, sent once connected; one deadline for the connection and the answer. */
	const struct rrc_redis_conf *rc = &s->rc;
	if (rc->sentinel_password[0])
		redisAsyncCommand(ac, on_auth, s, "AUTH %b", rc->sentinel_password,
				  strlen(rc->sentinel_password));
	if (redisAsyncCommand(ac, on_addr, s, "SENTINEL get-master-addr-by-name %b",
			      rc->master_name, strlen(rc->master_name)) != REDIS_OK) {
		drop(s, "cannot send the question");
		return;
	}
	uv_timer_start(&s->timer, on_timer, rc->connect_timeout_ms, 0);
}

static void on_timer(uv_timer_t *h)
{
	struct rrc_redis_sentinel *s = h->data;
	if (s->state == S_ASKING)
		drop(s, "no answer in time");
	else if (s->state == S_CLOSED)
		open_next(s);
}

static void on_poll(uv_timer_t *h)
{
	struct rrc_redis_sentinel *s = h->data;
	if (rrc_redis_master_take_doubt(s->m) && s->state == S_SUBSCRIBED) {
		/* Asked again, of another sentinel: this one may be the one behind. */
		drop(s, "a worker found no master at the address given");
	}
}

struct rrc_redis_sentinel *rrc_redis_sentinel_start(const struct rrc_env *env,
						    struct rrc_redis_master *m,
						    rrc_redis_sentinel_moved_fn moved, void *ctx)
{
	const struct rrc_config *cfg = rrc_env_cfg(env);
	if (!cfg->redis.n_sentinels)
		return NULL;
	struct rrc_redis_sentinel *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->env = env;
	s->rc = cfg->redis;
	s->m = m;
	s->moved = moved;
	s->ctx = ctx;
	uv_timer_init(env->loop, &s->timer);
	uv_timer_init(env->loop, &s->poll);
	s->timer.data = s->poll.data = s;
	s->closes = 2;
	uv_timer_start(&s->poll, on_poll, DOUBT_POLL_MS, DOUBT_POLL_MS);
	open_next(s);
	return s;
}

static void on_closed(uv_handle_t *h)
{
	struct rrc_redis_sentinel *s = h->data;
	if (--s->closes == 0)
		free(s);
}

void rrc_redis_sentinel_close(struct rrc_redis_sentinel *s)
{
	if (!s)
		return;
	s->closing = true;
	redisAsyncContext *ac = s->ac;
	s->ac = NULL;
	s->state = S_CLOSED;
	if (ac)
		redisAsyncFree(ac);
	uv_close((uv_handle_t *)&s->timer, on_closed);
	uv_close((uv_handle_t *)&s->poll, on_closed);
}

/* ---- blocking, for the fleet flush ---- */

/* One sentinel's answer: 0 with the address, or -1 with the reason in why. */
static int ask_one(const struct rrc_redis_conf *rc, const struct rrc_redis_addr *a,
		   char host[RRC_REDIS_HOST_LEN], uint16_t *port, char *why, size_t cap)
{
	struct timeval tv = {.tv_sec = rc->connect_timeout_ms / 1000,
			     .tv_usec = (rc->connect_timeout_ms % 1000) * 1000};
	redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
	if (!c || c->err) {
		snprintf(why, cap, "%s", c ? c->errstr : "out of memory");
		redisFree(c);
		return -1;
	}
	redisSetTimeout(c, tv);
	int rc_ = -1;
	redisReply *r = NULL;
	if (rc->sentinel_password[0]) {
		const char *argv[2] = {"AUTH", rc->sentinel_password};
		size_t lens[2] = {4, strlen(rc->sentinel_password)};
		r = redisCommandArgv(c, 2, argv, lens);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			snprintf(why, cap, "AUTH refused: %.100s", r ? r->str : c->errstr);
			goto out;
		}
		freeReplyObject(r);
	}
	const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", rc->master_name};
	size_t lens[3] = {8, 23, strlen(rc->master_name)};
	r = redisCommandArgv(c, 3, argv, lens);
	if (!r) {
		snprintf(why, cap, "%s", c->errstr);
	} else if (r->type == REDIS_REPLY_NIL) {
		snprintf(why, cap, "no master called \"%.80s\"", rc->master_name);
	} else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		   r->element[0]->type != REDIS_REPLY_STRING ||
		   r->element[1]->type != REDIS_REPLY_STRING ||
		   rrc_redis_master_parse_addr(r->element[0]->str, (size_t)r->element[0]->len,
					       r->element[1]->str, (size_t)r->element[1]->len, host,
					       port) != 0) {
		snprintf(why, cap, "%.100s",
			 r->type == REDIS_REPLY_ERROR ? r->str : "not a numeric address and port");
	} else {
		rc_ = 0;
	}
out:
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return rc_;
}

int rrc_redis_sentinel_ask(const struct rrc_redis_conf *rc, char host[RRC_REDIS_HOST_LEN],
			   uint16_t *port, char err[RRC_ERR_LEN])
{
	size_t n = (size_t)snprintf(err, RRC_ERR_LEN,
				    "no sentinel says where master \"%.64s\" is:", rc->master_name);
	for (unsigned i = 0; i < rc->n_sentinels; i++) {
		char why[160];
		if (ask_one(rc, &rc->sentinels[i], host, port, why, sizeof(why)) == 0)
			return 0;
		if (n < RRC_ERR_LEN)
			n += (size_t)snprintf(err + n, RRC_ERR_LEN - n, " %s:%u: %s;",
					      rc->sentinels[i].host, rc->sentinels[i].port, why);
	}
	return -1;
}
