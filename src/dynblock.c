/*
 * dynblock: dynamic blocks of client prefixes. See include/rrcache/dynblock.h.
 */
#include "rrcache/dynblock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define WAYS 8 /* entries in a set of watched prefixes, and slots in a bucket of blocks */

/* A watched prefix: its counts in the current window (from start) and in the one before,
 * per kind of event. */
struct watch {
	uint64_t key;  /* 0: empty */
	uint64_t born; /* when it took the entry */
	uint64_t start;
	uint32_t cur[2], prev[2];
};

struct set {
	_Atomic uint32_t lock; /* a spin lock: held for a few dozen instructions */
	struct watch e[WAYS];
};

/* A mutex cost about 170 instructions a lock and unlock here (callgrind), more than the work
 * it guards; a holder preempted is waited for with sched_yield. */
static void set_lock(struct set *s)
{
	for (unsigned spins = 1; atomic_exchange_explicit(&s->lock, 1, memory_order_acquire) != 0;
	     spins++) {
		while (atomic_load_explicit(&s->lock, memory_order_relaxed) != 0) {
			if (spins++ % 64 == 0)
				sched_yield();
#if defined(__x86_64__) || defined(__i386__)
			else
				__builtin_ia32_pause();
#endif
		}
	}
}

static void set_unlock(struct set *s)
{
	atomic_store_explicit(&s->lock, 0, memory_order_release);
}

/* What a block is, written and read under the mutex. */
struct info {
	uint8_t family, bits;
	uint8_t addr[16];
	enum rrc_dynblock_reason reason;
	uint32_t rate;
	uint64_t since;
};

struct rrc_dynblock {
	uint64_t hkey[2];
	struct set *sets;
	uint32_t set_mask;
	uint32_t max_blocks;
	uint32_t bucket_mask;
	/* Blocks: slot i of bucket b is b * WAYS + i in each array. */
	_Atomic uint64_t *key;	 /* 0: never used */
	_Atomic uint64_t *until; /* 0: removed; <= now: ended */
	_Atomic uint64_t *hits;
	struct info *info;
	_Atomic uint64_t latest;  /* the latest end of any block (0: none) */
	_Atomic uint64_t lens[4]; /* bit n of lens[0]: some IPv4 block is /n; of lens[1..3]: IPv6 */
	pthread_mutex_t lock;	  /* adding, removing, listing */
	struct rrc_dynblock_totals totals;
};

static size_t slots(const struct rrc_dynblock *db)
{
	return ((size_t)db->bucket_mask + 1) * WAYS;
}

static uint32_t pow2_at_least(uint32_t n)
{
	uint32_t p = 1;
	while (p < n && p < (1u << 24))
		p <<= 1;
	return p;
}

struct rrc_dynblock *rrc_dynblock_create(uint32_t watched, uint32_t max_blocks)
{
	struct rrc_dynblock *db = calloc(1, sizeof(*db));
	if (!db)
		return NULL;
	uint32_t n_sets = pow2_at_least((watched + WAYS - 1) / WAYS);
	/* Twice as many slots as blocks: a bucket is rarely full. */
	uint32_t n_buckets = pow2_at_least((2 * RRC_MAX(max_blocks, 1u) + WAYS - 1) / WAYS);
	db->set_mask = n_sets - 1;
	db->bucket_mask = n_buckets - 1;
	db->max_blocks = RRC_MAX(max_blocks, 1u);
	db->sets = calloc(n_sets, sizeof(*db->sets));
	size_t n = slots(db);
	db->key = calloc(n, sizeof(*db->key));
	db->until = calloc(n, sizeof(*db->until));
	db->hits = calloc(n, sizeof(*db->hits));
	db->info = calloc(n, sizeof(*db->info));
	if (!db->sets || !db->key || !db->until || !db->hits || !db->info ||
	    getrandom(db->hkey, sizeof(db->hkey), 0) != (ssize_t)sizeof(db->hkey)) {
		free(db->sets);
		db->sets = NULL;
		rrc_dynblock_destroy(db);
		return NULL;
	}
	pthread_mutex_init(&db->lock, NULL);
	return db;
}

void rrc_dynblock_destroy(struct rrc_dynblock *db)
{
	if (!db)
		return;
	if (db->sets)
		pthread_mutex_destroy(&db->lock);
	free(db->sets);
	free((void *)db->key);
	free((void *)db->until);
	free((void *)db->hits);
	free(db->info);
	free(db);
}

size_t rrc_dynblock_bytes(const struct rrc_dynblock *db)
{
	size_t n = slots(db);
	return sizeof(*db) + ((size_t)db->set_mask + 1) * sizeof(struct set) +
	       n * (3 * sizeof(uint64_t) + sizeof(struct info));
}

const char *rrc_dynblock_reason_name(enum rrc_dynblock_reason r)
{
	static const char *const names[RRC_DB_REASONS] = {"nxdomain", "miss", "manual"};
	return (unsigned)r < RRC_DB_REASONS ? names[r] : "?";
}

void rrc_dynblock_prefix_text(const struct rrc_dynblock_entry *e, char *out, size_t cap)
{
	char a[INET6_ADDRSTRLEN];
	if (!inet_ntop(e->family, e->addr, a, sizeof(a)))
		snprintf(a, sizeof(a), "?");
	snprintf(out, cap, "%s/%u", a, e->bits);
}

/* The family and address bytes of sa (an IPv4-mapped IPv6 address as IPv4); false for
 * anything else. */
static bool address_of(const struct sockaddr *sa, uint8_t *family, uint8_t addr[16])
{
	if (sa->sa_family == AF_INET) {
		*family = AF_INET;
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
	if (memcmp(a, mapped, 12) == 0) {
		*family = AF_INET;
		memcpy(addr, a + 12, 4);
	} else {
		*family = AF_INET6;
		memcpy(addr, a, 16);
	}
	return true;
}

/* The keyed hash of a prefix (never 0): its family, length and network bytes. */
static uint64_t prefix_hash(const struct rrc_dynblock *db, uint8_t family, const uint8_t *addr,
			    unsigned bits)
{
	uint8_t k[18] = {family == AF_INET ? 4 : 6, (uint8_t)bits};
	memcpy(k + 2, addr, bits / 8);
	if (bits % 8)
		k[2 + bits / 8] = addr[bits / 8] & (uint8_t)(0xFF00 >> (bits % 8));
	uint64_t h = rrc_hash64(db->hkey, k, sizeof(k));
	return h ? h : 1;
}

/* ---- watched prefixes ---- */

/* Moves w's windows up to now (a clock a little behind another thread's stays in the current
 * window). */
static void roll(struct watch *w, uint64_t now, uint64_t win)
{
	if (now < w->start + win)
		return;
	uint64_t n = (now - w->start) / win;
	for (int k = 0; k < 2; k++) {
		w->prev[k] = n == 1 ? w->cur[k] : 0;
		w->cur[k] = 0;
	}
	w->start += n * win;
}

/* Events of kind k over the last window: the current one's, and the previous one's share
 * still inside it. */
static uint64_t estimate(const struct watch *w, int k, uint64_t now, uint64_t win)
{
	uint64_t into = now > w->start ? now - w->start : 0;
	return w->cur[k] + (uint64_t)w->prev[k] * (win - RRC_MIN(into, win)) / win;
}

bool rrc_dynblock_count(struct rrc_dynblock *db, const struct rrc_dynblock_conf *conf,
			const struct sockaddr *sa, enum rrc_dynblock_reason kind, uint64_t now_ms,
			struct rrc_dynblock_entry *started)
{
	uint32_t rate = kind == RRC_DB_NXDOMAIN ? conf->nxdomain_rate
			: kind == RRC_DB_MISS	? conf->miss_rate
						: 0;
	uint8_t family, addr[16];
	if (!db || !rate || !address_of(sa, &family, addr))
		return false;
	unsigned bits =
		family == AF_INET ? RRC_MIN(conf->v4_prefix, 32u) : RRC_MIN(conf->v6_prefix, 128u);
	uint64_t win = RRC_MAX(conf->window_ms, 1u);
	uint64_t h = prefix_hash(db, family, addr, bits);
	struct set *s = &db->sets[(h >> 32) & db->set_mask];
	int k = kind == RRC_DB_NXDOMAIN ? 0 : 1;

	set_lock(s);
	struct watch *w = NULL;
	for (int i = 0; i < WAYS && !w; i++)
		if (s->e[i].key == h)
			w = &s->e[i];
	if (!w) {
		/* A new prefix takes an empty entry, or the quietest one's, the youngest of equals:
		 * one-off sources then replace each other while an older prefix builds up. */
		uint64_t low_est = UINT64_MAX;
		for (int i = 0; i < WAYS && low_est; i++) {
			struct watch *e = &s->e[i];
			uint64_t est = 0;
			if (e->key) {
				roll(e, now_ms, win);
				est = estimate(e, 0, now_ms, win) + estimate(e, 1, now_ms, win);
			}
			if (est < low_est || (est == low_est && e->born > w->born)) {
				w = e;
				low_est = est;
			}
		}
		*w = (struct watch){.key = h, .born = now_ms, .start = now_ms};
	}
	roll(w, now_ms, win);
	w->cur[k]++;
	uint64_t est = estimate(w, k, now_ms, win);
	bool over = est * 1000 >= (uint64_t)rate * win;
	if (over)
		*w = (struct watch){.key = h, .born = w->born, .start = now_ms}; /* afresh */
	set_unlock(s);
	if (!over)
		return false;

	uint32_t seen = (uint32_t)RRC_MIN(est * 1000 / win, (uint64_t)UINT32_MAX);
	if (rrc_dynblock_add(db, family, addr, bits, kind, seen, now_ms, conf->duration_ms) != 1)
		return false; /* refused, or one in force extended (events of queries in flight) */
	if (started) {
		*started = (struct rrc_dynblock_entry){.family = family,
						       .bits = (uint8_t)bits,
						       .reason = kind,
						       .rate = seen,
						       .since_ms = now_ms,
						       .until_ms = now_ms + conf->duration_ms};
		memcpy(started->addr, addr, 16);
		for (unsigned i = bits; i < 128; i++)
			started->addr[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
	}
	return true;
}

/* ---- blocks ---- */

static _Atomic uint64_t *lens_word(struct rrc_dynblock *db, uint8_t family, unsigned bits)
{
	return family == AF_INET ? &db->lens[0] : &db->lens[1 + bits / 64];
}

bool rrc_dynblock_blocked(struct rrc_dynblock *db, const struct sockaddr *sa, uint64_t now_ms)
{
	if (!db || now_ms >= atomic_load_explicit(&db->latest, memory_order_acquire))
		return false;
	uint8_t family, addr[16];
	if (!address_of(sa, &family, addr))
		return false;
	unsigned max = family == AF_INET ? 32 : 128;
	for (unsigned bits = 0; bits <= max; bits++) {
		uint64_t word =
			atomic_load_explicit(lens_word(db, family, bits), memory_order_acquire);
		if (!(word >> (bits % 64) & 1)) {
			if (!(word >> (bits % 64)))
				bits |= 63; /* no longer length in this word */
			continue;
		}
		uint64_t h = prefix_hash(db, family, addr, bits);
		size_t b = (size_t)(h & db->bucket_mask) * WAYS;
		for (size_t i = b; i < b + WAYS; i++) {
			if (atomic_load_explicit(&db->key[i], memory_order_acquire) != h)
				continue;
			uint64_t until = atomic_load_explicit(&db->until[i], memory_order_acquire);
			/* The key again: a slot taken over meanwhile had its end cleared first. */
			if (until > now_ms &&
			    atomic_load_explicit(&db->key[i], memory_order_acquire) == h) {
				atomic_fetch_add_explicit(&db->hits[i], 1, memory_order_relaxed);
				return true;
			}
		}
	}
	return false;
}

/* Under the mutex: the lengths and the latest end from the blocks in force. */
static void recompute(struct rrc_dynblock *db, uint64_t now_ms)
{
	uint64_t lens[4] = {0}, latest = 0;
	for (size_t i = 0; i < slots(db); i++) {
		uint64_t until = atomic_load_explicit(&db->until[i], memory_order_relaxed);
		if (until <= now_ms)
			continue;
		const struct info *in = &db->info[i];
		unsigned w = in->family == AF_INET ? 0 : 1 + in->bits / 64;
		lens[w] |= 1ull << (in->bits % 64);
		latest = RRC_MAX(latest, until);
	}
	for (int w = 0; w < 4; w++)
		atomic_store_explicit(&db->lens[w], lens[w], memory_order_release);
	atomic_store_explicit(&db->latest, latest, memory_order_release);
}

/* Under the mutex: the blocks in force. */
static size_t in_force(const struct rrc_dynblock *db, uint64_t now_ms)
{
	size_t n = 0;
	for (size_t i = 0; i < slots(db); i++)
		n += atomic_load_explicit(&db->until[i], memory_order_relaxed) > now_ms;
	return n;
}

/* The slot of exactly that prefix's block (in force or not), or -1. */
static ssize_t find(const struct rrc_dynblock *db, uint64_t h)
{
	size_t b = (size_t)(h & db->bucket_mask) * WAYS;
	for (size_t i = b; i < b + WAYS; i++)
		if (atomic_load_explicit(&db->key[i], memory_order_relaxed) == h)
			return (ssize_t)i;
	return -1;
}

static bool prefix_ok(uint8_t family, unsigned bits)
{
	return (family == AF_INET && bits <= 32) || (family == AF_INET6 && bits <= 128);
}

int rrc_dynblock_add(struct rrc_dynblock *db, uint8_t family, const uint8_t *addr, unsigned bits,
		     enum rrc_dynblock_reason reason, uint32_t rate, uint64_t now_ms,
		     uint64_t duration_ms)
{
	if (!prefix_ok(family, bits) || (unsigned)reason >= RRC_DB_REASONS || !duration_ms)
		return -EINVAL;
	struct info in = {.family = family,
			  .bits = (uint8_t)bits,
			  .reason = reason,
			  .rate = rate,
			  .since = now_ms};
	memcpy(in.addr, addr, family == AF_INET ? 4 : 16);
	for (unsigned i = bits; i < 128; i++)
		in.addr[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
	uint64_t h = prefix_hash(db, family, in.addr, bits);
	uint64_t until = now_ms + duration_ms;

	pthread_mutex_lock(&db->lock);
	ssize_t i = find(db, h);
	int started = 0;
	if (i >= 0 && atomic_load_explicit(&db->until[i], memory_order_relaxed) > now_ms) {
		/* In force: it lasts the longer of the two. */
		if (until > atomic_load_explicit(&db->until[i], memory_order_relaxed))
			atomic_store_explicit(&db->until[i], until, memory_order_release);
	} else {
		if (i < 0) {
			if (in_force(db, now_ms) >= db->max_blocks) {
				db->totals.refused++;
				pthread_mutex_unlock(&db->lock);
				return -ENOSPC;
			}
			size_t b = (size_t)(h & db->bucket_mask) * WAYS;
			for (size_t j = b; j < b + WAYS && i < 0; j++)
				if (atomic_load_explicit(&db->until[j], memory_order_relaxed) <=
				    now_ms)
					i = (ssize_t)j;
			if (i < 0) {
				db->totals.refused++;
				pthread_mutex_unlock(&db->lock);
				return -ENOSPC;
			}
			/* Taken over: its end cleared before its key changes (the readers'
			 * order). */
			atomic_store_explicit(&db->until[i], 0, memory_order_release);
			atomic_store_explicit(&db->key[i], h, memory_order_release);
		} else if (in_force(db, now_ms) >= db->max_blocks) {
			db->totals.refused++;
			pthread_mutex_unlock(&db->lock);
			return -ENOSPC;
		}
		db->info[i] = in;
		atomic_store_explicit(&db->hits[i], 0, memory_order_relaxed);
		atomic_store_explicit(&db->until[i], until, memory_order_release);
		db->totals.started[reason]++;
		started = 1;
	}
	atomic_fetch_or_explicit(lens_word(db, family, bits), 1ull << (bits % 64),
				 memory_order_release);
	if (until > atomic_load_explicit(&db->latest, memory_order_relaxed))
		atomic_store_explicit(&db->latest, until, memory_order_release);
	pthread_mutex_unlock(&db->lock);
	return started;
}

int rrc_dynblock_remove(struct rrc_dynblock *db, uint8_t family, const uint8_t *addr, unsigned bits,
			uint64_t now_ms)
{
	if (!prefix_ok(family, bits))
		return 0;
	uint8_t a[16] = {0};
	memcpy(a, addr, family == AF_INET ? 4 : 16);
	for (unsigned i = bits; i < 128; i++)
		a[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
	uint64_t h = prefix_hash(db, family, a, bits);
	pthread_mutex_lock(&db->lock);
	ssize_t i = find(db, h);
	int found = i >= 0 && atomic_load_explicit(&db->until[i], memory_order_relaxed) > now_ms;
	if (found) {
		atomic_store_explicit(&db->until[i], 0, memory_order_release);
		db->totals.removed++;
		recompute(db, now_ms);
	}
	pthread_mutex_unlock(&db->lock);
	return found;
}

unsigned rrc_dynblock_clear(struct rrc_dynblock *db, uint64_t now_ms)
{
	pthread_mutex_lock(&db->lock);
	unsigned n = (unsigned)in_force(db, now_ms);
	for (size_t i = 0; i < slots(db); i++)
		atomic_store_explicit(&db->until[i], 0, memory_order_release);
	db->totals.removed += n;
	recompute(db, now_ms);
	pthread_mutex_unlock(&db->lock);
	return n;
}

size_t rrc_dynblock_list(struct rrc_dynblock *db, uint64_t now_ms, struct rrc_dynblock_entry *out,
			 size_t cap)
{
	size_t n = 0;
	pthread_mutex_lock(&db->lock);
	for (size_t i = 0; i < slots(db); i++) {
		uint64_t until = atomic_load_explicit(&db->until[i], memory_order_relaxed);
		if (until <= now_ms)
			continue;
		if (out && n < cap) {
			const struct info *in = &db->info[i];
			struct rrc_dynblock_entry *e = &out[n];
			*e = (struct rrc_dynblock_entry){
				.family = in->family,
				.bits = in->bits,
				.reason = in->reason,
				.rate = in->rate,
				.since_ms = in->since,
				.until_ms = until,
				.queries =
					atomic_load_explicit(&db->hits[i], memory_order_relaxed)};
			memcpy(e->addr, in->addr, 16);
		}
		n++;
	}
	/* Ended blocks stop costing the queries a lookup. */
	recompute(db, now_ms);
	pthread_mutex_unlock(&db->lock);
	return n;
}

void rrc_dynblock_totals(struct rrc_dynblock *db, struct rrc_dynblock_totals *out)
{
	pthread_mutex_lock(&db->lock);
	*out = db->totals;
	pthread_mutex_unlock(&db->lock);
}
