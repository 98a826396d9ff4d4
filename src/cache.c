/*
 * cache: sharded hash table with LRU eviction under a byte budget. See include/rrcache/cache.h.
 *
 * Each shard: open hashing with chains, a bucket array that doubles when the load passes 1,
 * an intrusive LRU list (head = most recent). An entry is one allocation: the header followed
 * by the key and the answer bytes.
 */
#include "rrcache/cache.h"
#include "rrcache/wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* glibc malloc rounds to 16 bytes and keeps an 8-byte size word; charge that too. */
#define ENTRY_OVERHEAD 16
/* Buckets a shard starts with; it doubles them when its entries outnumber them (load factor
 * at most 1), so an empty cache costs 64 shards x 64 x 8 bytes = 32 KiB. */
#define INITIAL_BUCKETS 64

struct entry {
	struct entry *hnext;
	struct entry *prev, *next; /* LRU */
	uint64_t hash;
	uint64_t stored_ms;
	uint64_t expire_ms; /* fresh until */
	uint64_t evict_ms;  /* may be served stale until (== expire_ms when stale is off) */
	uint16_t keylen;
	uint16_t len;
	uint16_t hits;	 /* lookups that found it fresh (saturates) */
	bool refreshing; /* a lookup was told to refresh it (prefetch) */
	uint8_t data[];	 /* key, then answer */
};

struct shard {
	pthread_mutex_t lock;
	struct entry **buckets;
	size_t nbuckets; /* power of two */
	size_t count;
	uint64_t bytes;
	struct entry *head, *tail;
	uint64_t hits, misses, expired, inserted, evicted, stale;
	char pad[64];
};

struct rrc_cache {
	uint8_t sipkey[16];
	_Atomic uint64_t shard_budget;
	_Atomic uint64_t stale_ms;	/* how long past expiry entries are kept for serve-stale */
	_Atomic uint32_t prefetch_hits; /* prefetch: hits before a late one refreshes (0: off) */
	struct shard shards[RRC_CACHE_SHARDS];
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = ROTL(v1, 13);                                                                 \
		v1 ^= v0;                                                                          \
		v0 = ROTL(v0, 32);                                                                 \
		v2 += v3;                                                                          \
		v3 = ROTL(v3, 16);                                                                 \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = ROTL(v3, 21);                                                                 \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = ROTL(v1, 17);                                                                 \
		v1 ^= v2;                                                                          \
		v2 = ROTL(v2, 32);                                                                 \
	} while (0)

static uint64_t load64le(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v)); /* one load; the compiler drops the copy */
	return le64toh(v);
}

uint64_t rrc_cache_siphash(const uint8_t k[16], const uint8_t *data, size_t len)
{
	uint64_t k0 = load64le(k), k1 = load64le(k + 8);
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t m = load64le(data + i);
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	uint64_t b = (uint64_t)len << 56;
	for (size_t j = 0; i + j < len; j++)
		b |= (uint64_t)data[i + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t entry_cost(size_t keylen, size_t len)
{
	return sizeof(struct entry) + keylen + len + ENTRY_OVERHEAD + sizeof(struct entry *);
}

struct rrc_cache *rrc_cache_create(uint64_t budget)
{
	struct rrc_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (getrandom(c->sipkey, sizeof(c->sipkey), 0) != (ssize_t)sizeof(c->sipkey)) {
		free(c);
		return NULL;
	}
	c->shard_budget = budget / RRC_CACHE_SHARDS;
	for (unsigned i = 0; i < RRC_CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];
		pthread_mutex_init(&s->lock, NULL);
		s->buckets = calloc(INITIAL_BUCKETS, sizeof(*s->buckets));
		if (!s->buckets) {
			for (unsigned j = 0; j < i; j++) {
				free(c->shards[j].buckets);
				pthread_mutex_destroy(&c->shards[j].lock);
			}
			pthread_mutex_destroy(&s->lock);
			free(c);
			return NULL;
		}
		s->nbuckets = INITIAL_BUCKETS;
	}
	return c;
}

static void shard_clear(struct shard *s)
{
	struct entry *e = s->head;
	while (e) {
		struct entry *n = e->next;
		free(e);
		e = n;
	}
	memset(s->buckets, 0, s->nbuckets * sizeof(*s->buckets));
	s->head = s->tail = NULL;
	s->count = 0;
	s->bytes = 0;
}

void rrc_cache_destroy(struct rrc_cache *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < RRC_CACHE_SHARDS; i++) {
		shard_clear(&c->shards[i]);
		free(c->shards[i].buckets);
		pthread_mutex_destroy(&c->shards[i].lock);
	}
	free(c);
}

void rrc_cache_set_budget(struct rrc_cache *c, uint64_t budget)
{
	c->shard_budget = budget / RRC_CACHE_SHARDS;
}

void rrc_cache_set_stale(struct rrc_cache *c, uint32_t seconds)
{
	c->stale_ms = (uint64_t)seconds * 1000;
}

static void lru_unlink(struct shard *s, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		s->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		s->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_front(struct shard *s, struct entry *e)
{
	e->prev = NULL;
	e->next = s->head;
	if (s->head)
		s->head->prev = e;
	s->head = e;
	if (!s->tail)
		s->tail = e;
}

static struct entry **find_slot(struct shard *s, uint64_t hash, const uint8_t *key, size_t keylen)
{
	struct entry **pp = &s->buckets[(hash >> 6) & (s->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->hnext) {
		struct entry *e = *pp;
		if (e->hash == hash && e->keylen == keylen && memcmp(e->data, key, keylen) == 0)
			return pp;
	}
	return pp;
}

/* Unlinks *pp (from its chain and the LRU list) and frees it. */
static void remove_at(struct shard *s, struct entry **pp)
{
	struct entry *e = *pp;
	*pp = e->hnext;
	lru_unlink(s, e);
	s->count--;
	s->bytes -= entry_cost(e->keylen, e->len);
	free(e);
}

static void remove_entry(struct shard *s, struct entry *e)
{
	struct entry **pp = find_slot(s, e->hash, e->data, e->keylen);
	RRC_REQUIRE(*pp == e);
	remove_at(s, pp);
}

static inline struct shard *pick(struct rrc_cache *c, uint64_t hash)
{
	return &c->shards[hash & (RRC_CACHE_SHARDS - 1)];
}

size_t rrc_cache_foreach(struct rrc_cache *c, uint64_t now_ms, rrc_cache_entry_fn fn, void *ctx)
{
	size_t n = 0;
	for (size_t i = 0; i < RRC_CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];
		pthread_mutex_lock(&s->lock);
		for (struct entry *e = s->head; e; e = e->next) {
			if (now_ms >= e->expire_ms)
				continue;
			fn(ctx, e->data, e->keylen, e->data + e->keylen, e->len, e->stored_ms,
			   e->expire_ms);
			n++;
		}
		pthread_mutex_unlock(&s->lock);
	}
	return n;
}

void rrc_cache_set_prefetch(struct rrc_cache *c, uint32_t min_hits)
{
	atomic_store(&c->prefetch_hits, min_hits);
}

enum rrc_cache_result rrc_cache_lookup(struct rrc_cache *c, const uint8_t *key, size_t keylen,
				       uint64_t now_ms, uint8_t *out, size_t cap, size_t *len,
				       uint32_t *age, bool *refresh)
{
	uint32_t prefetch = atomic_load_explicit(&c->prefetch_hits, memory_order_relaxed);
	if (refresh)
		*refresh = false;
	uint64_t hash = rrc_cache_siphash(c->sipkey, key, keylen);
	struct shard *s = pick(c, hash);
	enum rrc_cache_result res = RRC_CACHE_MISS;
	pthread_mutex_lock(&s->lock);
	struct entry **pp = find_slot(s, hash, key, keylen);
	struct entry *e = *pp;
	if (!e) {
		s->misses++;
	} else if (now_ms >= e->evict_ms) {
		s->expired++;
		s->misses++;
		remove_at(s, pp);
	} else if (now_ms >= e->expire_ms) {
		/* RFC 8767: expired, but kept for the case the refresh fails. */
		*len = e->len;
		*age = (uint32_t)((now_ms - RRC_MIN(now_ms, e->stored_ms)) / 1000);
		memcpy(out, e->data + e->keylen, RRC_MIN((size_t)e->len, cap));
		s->stale++;
		s->misses++;
		res = RRC_CACHE_STALE;
	} else {
		*len = e->len;
		*age = (uint32_t)((now_ms - RRC_MIN(now_ms, e->stored_ms)) / 1000);
		/* Too big: still copy the prefix (header and question), which is all a
		 * truncated reply needs. */
		memcpy(out, e->data + e->keylen, RRC_MIN((size_t)e->len, cap));
		res = e->len > cap ? RRC_CACHE_TOO_BIG : RRC_CACHE_HIT;
		s->hits++;
		if (e->hits < UINT16_MAX)
			e->hits++;
		/* Prefetch (Unbound's rule): an entry asked often enough during its life, asked
		 * again within the last tenth of its original TTL, is refreshed once, by this
		 * caller, while it still answers. */
		if (prefetch && refresh && !e->refreshing && e->hits >= prefetch &&
		    (e->expire_ms - now_ms) * 10 <= e->expire_ms - e->stored_ms) {
			e->refreshing = true;
			*refresh = true;
		}
		if (s->head != e) {
			lru_unlink(s, e);
			lru_push_front(s, e);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return res;
}

/* Rehashes the shard into n buckets (a power of two larger than now). */
static void grow_to(struct shard *s, size_t n)
{
	struct entry **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* chains just get longer */
	for (size_t i = 0; i < s->nbuckets; i++) {
		struct entry *e = s->buckets[i];
		while (e) {
			struct entry *next = e->hnext;
			size_t b = (e->hash >> 6) & (n - 1);
			e->hnext = nb[b];
			nb[b] = e;
			e = next;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

static void maybe_grow(struct shard *s)
{
	if (s->count >= s->nbuckets)
		grow_to(s, s->nbuckets * 2);
}

void rrc_cache_reserve(struct rrc_cache *c, size_t entries)
{
	size_t per = entries / RRC_CACHE_SHARDS + 1;
	for (size_t i = 0; i < RRC_CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];
		pthread_mutex_lock(&s->lock);
		size_t n = s->nbuckets;
		while (n < per && n < ((size_t)1 << 26))
			n *= 2;
		if (n > s->nbuckets)
			grow_to(s, n);
		pthread_mutex_unlock(&s->lock);
	}
}

int rrc_cache_insert(struct rrc_cache *c, const uint8_t *key, size_t keylen, const uint8_t *answer,
		     size_t len, uint32_t lifetime, uint64_t now_ms)
{
	if (keylen > UINT16_MAX || len > UINT16_MAX || lifetime == 0)
		return -EINVAL;
	uint64_t cost = entry_cost(keylen, len);
	uint64_t budget = c->shard_budget;
	if (cost > budget)
		return -E2BIG;
	struct entry *e = malloc(sizeof(*e) + keylen + len);
	if (!e)
		return -ENOMEM;
	uint64_t hash = rrc_cache_siphash(c->sipkey, key, keylen);
	e->hash = hash;
	e->stored_ms = now_ms;
	e->expire_ms = now_ms + (uint64_t)lifetime * 1000;
	e->evict_ms = e->expire_ms + c->stale_ms;
	e->keylen = (uint16_t)keylen;
	e->len = (uint16_t)len;
	e->hits = 0;
	e->refreshing = false;
	memcpy(e->data, key, keylen);
	memcpy(e->data + keylen, answer, len);

	struct shard *s = pick(c, hash);
	pthread_mutex_lock(&s->lock);
	struct entry **pp = find_slot(s, hash, key, keylen);
	if (*pp)
		remove_at(s, pp);
	while (s->tail && s->bytes + cost > budget) {
		remove_entry(s, s->tail);
		s->evicted++;
	}
	maybe_grow(s);
	pp = &s->buckets[(hash >> 6) & (s->nbuckets - 1)];
	e->hnext = *pp;
	*pp = e;
	lru_push_front(s, e);
	s->count++;
	s->bytes += cost;
	s->inserted++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

bool rrc_cache_remove(struct rrc_cache *c, const uint8_t *key, size_t keylen)
{
	uint64_t hash = rrc_cache_siphash(c->sipkey, key, keylen);
	struct shard *s = pick(c, hash);
	pthread_mutex_lock(&s->lock);
	struct entry **pp = find_slot(s, hash, key, keylen);
	bool found = *pp != NULL;
	if (found)
		remove_at(s, pp);
	pthread_mutex_unlock(&s->lock);
	return found;
}

size_t rrc_cache_remove_name(struct rrc_cache *c, const uint8_t *name, size_t len)
{
	size_t removed = 0;
	for (unsigned i = 0; i < RRC_CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];
		pthread_mutex_lock(&s->lock);
		struct entry *e = s->head;
		while (e) {
			struct entry *next = e->next;
			/* A key is the name, then its tail: type, class and a flags octet. */
			if (e->keylen == len + RRC_WIRE_KEY_TAIL &&
			    memcmp(e->data, name, len) == 0) {
				remove_entry(s, e);
				removed++;
			}
			e = next;
		}
		pthread_mutex_unlock(&s->lock);
	}
	return removed;
}

void rrc_cache_clear(struct rrc_cache *c)
{
	for (unsigned i = 0; i < RRC_CACHE_SHARDS; i++) {
		pthread_mutex_lock(&c->shards[i].lock);
		shard_clear(&c->shards[i]);
		pthread_mutex_unlock(&c->shards[i].lock);
	}
}

void rrc_cache_get_stats(struct rrc_cache *c, struct rrc_cache_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->budget = c->shard_budget * RRC_CACHE_SHARDS;
	for (unsigned i = 0; i < RRC_CACHE_SHARDS; i++) {
		struct shard *s = &c->shards[i];
		pthread_mutex_lock(&s->lock);
		st->entries += s->count;
		st->bytes += s->bytes;
		st->hits += s->hits;
		st->misses += s->misses;
		st->expired += s->expired;
		st->inserted += s->inserted;
		st->evicted += s->evicted;
		st->stale += s->stale;
		pthread_mutex_unlock(&s->lock);
	}
}
