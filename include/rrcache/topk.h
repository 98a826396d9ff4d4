/*
 * topk: the most frequent keys (names, clients) with bounded memory, by the space-saving
 * algorithm (Metwally, Agrawal, El Abbadi, "Efficient computation of frequent and top-k
 * elements in data streams", 2005): at most RRC_TOPK_CAP keys are kept; a new key replaces the
 * smallest, inheriting its count as its error bound; merging summaries adds counts and errors.
 * Sliding windows of summaries give the last minute and the last hour.
 * Pure: no I/O, no locks; one struct rrc_top belongs to one worker thread.
 */
#ifndef RRCACHE_TOPK_H
#define RRCACHE_TOPK_H

#include "rrcache/defs.h"

/* Entries one summary keeps. Space-saving's bound (Metwally et al. 2005, Theorem 1): every key
 * seen more than N / RRC_TOPK_CAP times in N counted queries is kept, and no count is over by
 * more than N / RRC_TOPK_CAP; 32 lists every name above 3 % of the traffic, and keeps a
 * worker's 48 summaries (4 categories x 12 windows) under half a MiB. */
#define RRC_TOPK_CAP 32
/* stats.top_k's limit: fewer than the summary keeps, so the last row shown is not the one
 * whose count is the least certain. */
#define RRC_TOPK_MAX_SHOWN 25
/* A key: a name in wire form (RFC 1035 §2.3.4: at most 255 octets), or an address. */
#define RRC_TOPK_KEY 255
/* Open-addressing slots: four per entry, so linear probing stays at about one probe (load
 * factor 1/4; Knuth, TAOCP vol. 3 §6.4). A power of two. */
#define RRC_TOPK_SLOTS 128

struct rrc_topk_entry {
	uint64_t count;
	uint64_t error; /* count may overstate the truth by at most this */
	uint32_t hash;
	uint8_t len;
	uint8_t key[RRC_TOPK_KEY];
};

struct rrc_topk {
	unsigned n;
	struct rrc_topk_entry e[RRC_TOPK_CAP];
	int16_t slot[RRC_TOPK_SLOTS]; /* open addressing on hash: entry index, -1 empty */
};

void rrc_topk_init(struct rrc_topk *t);
/* Counts one occurrence of key (len <= RRC_TOPK_KEY bytes). */
void rrc_topk_add(struct rrc_topk *t, const uint8_t *key, size_t len, uint64_t inc);
/* Adds every entry of from into into (counts and errors). */
void rrc_topk_merge(struct rrc_topk *into, const struct rrc_topk *from);
/* Fills out with pointers to the k largest entries, largest first. Returns how many. */
size_t rrc_topk_top(const struct rrc_topk *t, const struct rrc_topk_entry **out, size_t k);

/* Sliding windows of top-K: the last minute (6 x 10 s) and the last hour (6 x 10 min), for
 * each category. A worker adds to the current 10 s summary; rrc_top_tick() (every 10 s) folds
 * it into the current 10 min summary and rotates. */
enum rrc_top_cat {
	RRC_TOP_NAMES,
	RRC_TOP_CLIENTS,
	RRC_TOP_NXDOMAIN,
	RRC_TOP_SERVFAIL,
	RRC_TOP_BLOCKED, /* names answered as blocked by a domain list (policy) */
	RRC_TOP_CATS
};
/* Each window is RRC_TOP_SUBS sub-summaries, so it slides in steps of a sixth: 10 s for the
 * minute, 10 min for the hour (the periods the dashboard shows). */
#define RRC_TOP_SUBS 6
#define RRC_TOP_TICK_MS 10000

struct rrc_top {
	struct rrc_topk minute[RRC_TOP_CATS][RRC_TOP_SUBS];
	struct rrc_topk hour[RRC_TOP_CATS][RRC_TOP_SUBS];
	unsigned cur_minute, cur_hour, ticks;
	uint32_t sample; /* 1 in sample queries is counted, weighing sample (1: every query) */
	uint32_t rnd;	 /* xorshift state for the sampling */
};

/* sample: a power of two; 1 counts every query. */
void rrc_top_init(struct rrc_top *t, uint32_t sample, uint32_t seed);

/* True for the queries the top-K counts: a random 1 in sample, so that the cost of keeping
 * the summaries (a hash and, for a key not yet kept, a scan for the smallest) is paid by few
 * queries, and a periodic pattern of names cannot hide from it. */
static inline bool rrc_top_sampled(struct rrc_top *t)
{
	if (t->sample <= 1)
		return true;
	uint32_t x = t->rnd;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	t->rnd = x;
	return (x & (t->sample - 1)) == 0;
}

/* Counts key in category cat, with the sampling's weight. Call after rrc_top_sampled(). */
static inline void rrc_top_add(struct rrc_top *t, enum rrc_top_cat cat, const uint8_t *key,
			       size_t len)
{
	rrc_topk_add(&t->minute[cat][t->cur_minute], key, len, t->sample ? t->sample : 1);
}
void rrc_top_tick(struct rrc_top *t);
/* Merges category cat over the last minute (hour false) or hour into out. */
void rrc_top_window(const struct rrc_top *t, enum rrc_top_cat cat, bool hour, struct rrc_topk *out);
const char *rrc_top_cat_name(enum rrc_top_cat cat);

#endif
