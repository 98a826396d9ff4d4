/*
 * redis_admin: the fleet flush with hiredis's blocking API. See include/rrcache/redis_admin.h.
 *
 * A flush: ask the sentinels where the master is (with Sentinel), connect
 * (redis.connect_timeout), AUTH and SELECT as the tier does, SCAN MATCH the
 * keys of the name (their name hash, l2value.h) or of the prefix, UNLINK each page in one
 * command, then PUBLISH on key_prefix + "flush". Every command's timeout is what is left of
 * the deadline. An interrupt (the admin being destroyed) shuts the socket down, so the command
 * in progress returns at once.
 */
#include "rrcache/redis_admin.h"
#include "rrcache/l2value.h"
#include "rrcache/log.h"
#include "rrcache/redis_cluster.h"
#include "rrcache/redis_sentinel.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* Keys asked of one SCAN step (Redis's COUNT hint) and so deleted by one UNLINK. */
#define SCAN_COUNT 1000

/* What an interrupt needs to reach a flush in progress. */
struct interrupt {
	pthread_mutex_t lock;
	redisContext *c; /* the flush's connection while it runs */
	bool stop;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Escapes the glob characters of s for SCAN MATCH. */
static size_t glob_escape(const char *s, char *out, size_t cap)
{
	size_t n = 0;
	for (; *s && n + 3 < cap; s++) {
		if (strchr("*?[]\\", *s))
			out[n++] = '\\';
		out[n++] = *s;
	}
	out[n] = '\0';
	return n;
}

/* Gives the next command what is left of the deadline; false once it has passed. */
static bool time_left(redisContext *c, uint64_t deadline)
{
	uint64_t now = mono_ms();
	if (now >= deadline)
		return false;
	uint64_t left = deadline - now;
	struct timeval tv = {.tv_sec = (time_t)(left / 1000),
			     .tv_usec = (suseconds_t)(left % 1000) * 1000};
	return redisSetTimeout(c, tv) == REDIS_OK;
}

/* One command's reply, or NULL with the reason in err. */
static redisReply *command(redisContext *c, uint64_t deadline, char *err, int argc,
			   const char **argv, const size_t *lens)
{
	if (!time_left(c, deadline)) {
		snprintf(err, RRC_ERR_LEN, "Redis flush: took longer than %d s",
			 RRC_REDIS_FLUSH_DEADLINE_MS / 1000);
		return NULL;
	}
	redisReply *rep = redisCommandArgv(c, argc, argv, lens);
	if (!rep) {
		snprintf(err, RRC_ERR_LEN, "Redis: %s", c->err ? c->errstr : "no reply");
		return NULL;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, RRC_ERR_LEN, "Redis: %.200s", rep->str);
		freeReplyObject(rep);
		return NULL;
	}
	return rep;
}

/* AUTH and SELECT as the tier does. 0, or -1 with err set. */
static int setup(redisContext *c, const struct rrc_redis_conf *rc, uint64_t deadline, char *err)
{
	redisReply *rep;
	if (rc->password[0]) {
		const char *argv[3] = {"AUTH", rc->user, rc->password};
		size_t lens[3] = {4, strlen(rc->user), strlen(rc->password)};
		bool user = rc->user[0] != '\0';
		if (!user) {
			argv[1] = rc->password;
			lens[1] = lens[2];
		}
		if (!(rep = command(c, deadline, err, user ? 3 : 2, argv, lens)))
			return -1;
		freeReplyObject(rep);
	}
	if (rc->db) {
		char db[16];
		snprintf(db, sizeof(db), "%u", (unsigned)rc->db);
		const char *argv[2] = {"SELECT", db};
		size_t lens[2] = {6, strlen(db)};
		if (!(rep = command(c, deadline, err, 2, argv, lens)))
			return -1;
		freeReplyObject(rep);
	}
	return 0;
}

/* UNLINK of a page's keys: one command for them all, or with a cluster one each (keys of
 * other slots cannot share a command), written together and answered together. Returns the
 * keys deleted, or -1 with err set. */
static long unlink_page(redisContext *c, const redisReply *page, bool one_by_one, uint64_t deadline,
			char *err)
{
	size_t n = 0;
	const char **kv = malloc((page->elements + 1) * sizeof(*kv));
	size_t *kl = malloc((page->elements + 1) * sizeof(*kl));
	if (!kv || !kl) {
		free(kv);
		free(kl);
		snprintf(err, RRC_ERR_LEN, "out of memory");
		return -1;
	}
	kv[n] = "UNLINK";
	kl[n++] = 6;
	for (size_t i = 0; i < page->elements; i++) {
		if (page->element[i]->type != REDIS_REPLY_STRING)
			continue;
		kv[n] = page->element[i]->str;
		kl[n++] = (size_t)page->element[i]->len;
	}
	long deleted = 0;
	if (n > 1 && !one_by_one) {
		redisReply *d = command(c, deadline, err, (int)n, kv, kl);
		if (!d)
			deleted = -1;
		else if (d->type == REDIS_REPLY_INTEGER)
			deleted = (long)d->integer;
		if (d)
			freeReplyObject(d);
	} else if (n > 1) {
		for (size_t i = 1; i < n; i++) {
			const char *argv[2] = {"UNLINK", kv[i]};
			size_t lens[2] = {6, kl[i]};
			redisAppendCommandArgv(c, 2, argv, lens);
		}
		for (size_t i = 1; i < n && deleted >= 0; i++) {
			redisReply *d = NULL;
			if (!time_left(c, deadline) || redisGetReply(c, (void **)&d) != REDIS_OK ||
			    !d) {
				snprintf(err, RRC_ERR_LEN, "Redis: %s",
					 c->err ? c->errstr : "no reply");
				deleted = -1;
			} else if (d->type == REDIS_REPLY_INTEGER) {
				deleted += (long)d->integer;
			}
			if (d)
				freeReplyObject(d);
		}
	}
	free(kv);
	free(kl);
	return deleted;
}

/* SCAN MATCH pattern over the whole keyspace of c, each page unlinked. Returns the keys
 * deleted, or -1 with err set. */
static long scan_unlink(redisContext *c, const char *pattern, size_t plen, bool one_by_one,
			uint64_t deadline, char *err)
{
	long deleted = 0;
	char cursor[32] = "0";
	char count[8];
	snprintf(count, sizeof(count), "%d", SCAN_COUNT);
	do {
		const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", count};
		size_t lens[6] = {4, strlen(cursor), 5, plen, 5, strlen(count)};
		redisReply *rep = command(c, deadline, err, 6, argv, lens);
		if (!rep)
			return -1;
		if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
		    rep->element[0]->type != REDIS_REPLY_STRING ||
		    rep->element[1]->type != REDIS_REPLY_ARRAY) {
			snprintf(err, RRC_ERR_LEN, "Redis: unexpected reply to SCAN");
			freeReplyObject(rep);
			return -1;
		}
		snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
		long d = unlink_page(c, rep->element[1], one_by_one, deadline, err);
		freeReplyObject(rep);
		if (d < 0)
			return -1;
		deleted += d;
	} while (strcmp(cursor, "0") != 0);
	return deleted;
}

/* The flush message every instance's worker 0 listens for (in a cluster, a PUBLISH on one
 * node reaches the subscribers of every node). 0, or -1 with err set. */
static int publish(redisContext *c, const struct rrc_redis_conf *rc, const uint8_t *name,
		   size_t len, uint64_t deadline, char *err)
{
	char ch[80];
	int chlen = snprintf(ch, sizeof(ch), "%sflush", rc->key_prefix);
	const char *argv[3] = {"PUBLISH", ch, name ? (const char *)name : "*"};
	size_t lens[3] = {7, (size_t)chlen, name ? len : 1};
	redisReply *rep = command(c, deadline, err, 3, argv, lens);
	if (!rep)
		return -1;
	freeReplyObject(rep);
	return 0;
}

/* The keys of the name (or every key under the prefix) as a SCAN pattern. */
static size_t flush_pattern(const struct rrc_redis_conf *rc, const uint8_t *name, size_t len,
			    char *pattern, size_t cap)
{
	size_t plen = glob_escape(rc->key_prefix, pattern, cap);
	if (name) {
		struct rrc_l2_keys keys;
		char hash[17];
		rrc_l2_derive_keys(rc->key_secret, &keys);
		rrc_l2_name_hash(&keys, name, len, hash);
		/* With a cluster the hashes are a hash tag (l2value.h). */
		plen += (size_t)snprintf(pattern + plen, cap - plen, "%s%s:*",
					 rc->cluster ? "\\{" : "", hash);
	} else {
		pattern[plen++] = '*';
		pattern[plen] = '\0';
	}
	return plen;
}

/* Connects to host:port for the flush (the interrupt may close it); NULL with err set. */
static redisContext *connect_node(const struct rrc_redis_conf *rc, const char *host, uint16_t port,
				  struct interrupt *intr, char *err)
{
	struct timeval tv = {.tv_sec = rc->connect_timeout_ms / 1000,
			     .tv_usec = (rc->connect_timeout_ms % 1000) * 1000};
	redisContext *c = rc->unix_socket ? redisConnectUnixWithTimeout(rc->path, tv)
					  : redisConnectWithTimeout(host, port, tv);
	if (!c || c->err) {
		snprintf(err, RRC_ERR_LEN, "cannot connect to Redis %s:%u: %s",
			 rc->unix_socket ? rc->path : host, port, c ? c->errstr : "out of memory");
		redisFree(c);
		return NULL;
	}
	bool stopped = false;
	if (intr) {
		pthread_mutex_lock(&intr->lock);
		stopped = intr->stop;
		intr->c = c;
		pthread_mutex_unlock(&intr->lock);
	}
	if (stopped) {
		snprintf(err, RRC_ERR_LEN, "Redis flush: interrupted (stopping)");
		redisFree(c);
		return NULL;
	}
	return c;
}

static void disconnect_node(redisContext *c, struct interrupt *intr)
{
	if (intr) {
		pthread_mutex_lock(&intr->lock);
		intr->c = NULL;
		pthread_mutex_unlock(&intr->lock);
	}
	redisFree(c);
}

/* A cluster's slot map from its seeds, in turn. 0, or -1 with err set. */
static int cluster_map(const struct rrc_redis_conf *rc, struct rrc_redis_slot_map *m,
		       struct interrupt *intr, uint64_t deadline, char *err)
{
	for (unsigned i = 0; i < rc->n_seeds; i++) {
		redisContext *c = connect_node(rc, rc->seeds[i].host, rc->seeds[i].port, intr, err);
		if (!c)
			continue;
		int ok = -1;
		if (setup(c, rc, deadline, err) == 0) {
			for (int shards = 1; shards >= 0 && ok != 0; shards--) {
				const char *argv[2] = {"CLUSTER", shards ? "SHARDS" : "SLOTS"};
				size_t lens[2] = {7, shards ? 6u : 5u};
				if (!time_left(c, deadline))
					break;
				redisReply *r = redisCommandArgv(c, 2, argv, lens);
				char why[160];
				if (r &&
				    rrc_redis_cluster_read_map(r, shards, m, why, sizeof(why)) == 0)
					ok = 0;
				else
					snprintf(err, RRC_ERR_LEN,
						 "Redis Cluster map from %s:%u: %s",
						 rc->seeds[i].host, rc->seeds[i].port,
						 r ? why : c->errstr);
				if (r)
					freeReplyObject(r);
			}
		}
		disconnect_node(c, intr);
		if (ok == 0)
			return 0;
	}
	return -1;
}

static long flush(const struct rrc_redis_conf *rc, const uint8_t *name, size_t len,
		  struct interrupt *intr, char *err)
{
	uint64_t deadline = mono_ms() + RRC_REDIS_FLUSH_DEADLINE_MS;
	char pattern[RRC_L2_KEY_MAX * 2 + 8];
	size_t plen = flush_pattern(rc, name, len, pattern, sizeof(pattern));
	long n = -1;
	if (rc->cluster) {
		/* SCAN on every master, one UNLINK per key; the message once. */
		struct rrc_redis_slot_map *m = malloc(sizeof(*m));
		if (!m) {
			snprintf(err, RRC_ERR_LEN, "out of memory");
			return -1;
		}
		if (cluster_map(rc, m, intr, deadline, err) == 0) {
			n = 0;
			for (unsigned i = 0; i < m->n_nodes && n >= 0; i++) {
				redisContext *c = connect_node(rc, m->nodes[i].host,
							       m->nodes[i].port, intr, err);
				long d = -1;
				if (c && setup(c, rc, deadline, err) == 0)
					d = scan_unlink(c, pattern, plen, true, deadline, err);
				if (c && d >= 0 && i + 1 == m->n_nodes &&
				    publish(c, rc, name, len, deadline, err) != 0)
					d = -1;
				if (c)
					disconnect_node(c, intr);
				n = d < 0 ? -1 : n + d;
			}
		}
		free(m);
	} else {
		char host[RRC_REDIS_HOST_LEN];
		uint16_t port = rc->port;
		snprintf(host, sizeof(host), "%s", rc->host);
		/* With Sentinel: the master the sentinels name now. */
		if (rc->n_sentinels && rrc_redis_sentinel_ask(rc, host, &port, err) != 0)
			return -1;
		redisContext *c = connect_node(rc, host, port, intr, err);
		if (!c)
			return -1;
		if (setup(c, rc, deadline, err) == 0 &&
		    (n = scan_unlink(c, pattern, plen, false, deadline, err)) >= 0 &&
		    publish(c, rc, name, len, deadline, err) != 0)
			n = -1;
		disconnect_node(c, intr);
	}
	if (n < 0 && intr) {
		pthread_mutex_lock(&intr->lock);
		if (intr->stop)
			snprintf(err, RRC_ERR_LEN, "Redis flush: interrupted (stopping)");
		pthread_mutex_unlock(&intr->lock);
	}
	return n;
}

long rrc_redis_admin_flush(const struct rrc_redis_conf *rc, const uint8_t *name, size_t len,
			   char err[RRC_ERR_LEN])
{
	return flush(rc, name, len, NULL, err);
}

/* ---- on a thread of its own ---- */

struct rrc_redis_admin {
	struct rrc_redis_conf rc;
	struct interrupt intr;
	pthread_t thread;
	bool started; /* a thread was started and not yet joined */
	bool running; /* its flush has not called back yet (guarded by intr.lock) */
	rrc_redis_admin_cb cb;
	void *ctx;
	size_t len;
	bool all;
	uint8_t name[RRC_WIRE_MAX_NAME];
};

struct rrc_redis_admin *rrc_redis_admin_create(const struct rrc_redis_conf *rc)
{
	struct rrc_redis_admin *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->rc = *rc;
	pthread_mutex_init(&a->intr.lock, NULL);
	return a;
}

static void *admin_main(void *arg)
{
	struct rrc_redis_admin *a = arg;
	char err[RRC_ERR_LEN] = "";
	long n = flush(&a->rc, a->all ? NULL : a->name, a->len, &a->intr, err);
	if (n < 0)
		rrc_log(RRC_LOG_WARN, RRC_LG_REDIS, "fleet flush: %s", err);
	a->cb(a->ctx, n, n < 0 ? err : NULL);
	pthread_mutex_lock(&a->intr.lock);
	a->running = false;
	pthread_mutex_unlock(&a->intr.lock);
	return NULL;
}

int rrc_redis_admin_start(struct rrc_redis_admin *a, const uint8_t *name, size_t len,
			  rrc_redis_admin_cb cb, void *ctx)
{
	if (len > sizeof(a->name))
		return -EINVAL;
	pthread_mutex_lock(&a->intr.lock);
	bool busy = a->running;
	pthread_mutex_unlock(&a->intr.lock);
	if (busy)
		return -EBUSY;
	if (a->started) {
		/* The last flush has called back; its thread is ending, if not gone. */
		pthread_join(a->thread, NULL);
		a->started = false;
	}
	a->cb = cb;
	a->ctx = ctx;
	a->all = name == NULL;
	a->len = name ? len : 0;
	if (name)
		memcpy(a->name, name, len);
	a->running = true;
	if (pthread_create(&a->thread, NULL, admin_main, a) != 0) {
		a->running = false;
		return -EAGAIN;
	}
	a->started = true;
	return 0;
}

void rrc_redis_admin_destroy(struct rrc_redis_admin *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->intr.lock);
	a->intr.stop = true;
	if (a->intr.c)
		shutdown(a->intr.c->fd, SHUT_RDWR); /* the blocked command returns at once */
	pthread_mutex_unlock(&a->intr.lock);
	if (a->started)
		pthread_join(a->thread, NULL);
	pthread_mutex_destroy(&a->intr.lock);
	free(a);
}
