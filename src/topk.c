/*
 * topk: space-saving summaries and their windows. See include/rrcache/topk.h.
 */
#include "rrcache/topk.h"

#include <stdlib.h>
#include <string.h>

static uint32_t key_hash(const uint8_t *key, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a: the summary is bounded whatever the keys */
	for (size_t i = 0; i < len; i++)
		h = (h ^ key[i]) * 16777619u;
	return h;
}

void rrc_topk_init(struct rrc_topk *t)
{
	t->n = 0;
	for (unsigned i = 0; i < RRC_TOPK_SLOTS; i++)
		t->slot[i] = -1;
}

static int find(const struct rrc_topk *t, uint32_t h, const uint8_t *key, size_t len,
		unsigned *free_slot)
{
	unsigned s = h & (RRC_TOPK_SLOTS - 1);
	for (unsigned probe = 0; probe < RRC_TOPK_SLOTS;
	     probe++, s = (s + 1) & (RRC_TOPK_SLOTS - 1)) {
		int idx = t->slot[s];
		if (idx < 0) {
			*free_slot = s;
			return -1;
		}
		const struct rrc_topk_entry *e = &t->e[idx];
		if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
			return idx;
	}
	*free_slot = RRC_TOPK_SLOTS;
	return -1;
}

/* Removes entry idx's slot and re-inserts the run that follows it (linear probing). */
static void unslot(struct rrc_topk *t, int idx)
{
	unsigned s = t->e[idx].hash & (RRC_TOPK_SLOTS - 1);
	while (t->slot[s] != idx)
		s = (s + 1) & (RRC_TOPK_SLOTS - 1);
	t->slot[s] = -1;
	for (unsigned n = (s + 1) & (RRC_TOPK_SLOTS - 1); t->slot[n] >= 0;
	     n = (n + 1) & (RRC_TOPK_SLOTS - 1)) {
		int moved = t->slot[n];
		t->slot[n] = -1;
		unsigned d = t->e[moved].hash & (RRC_TOPK_SLOTS - 1);
		while (t->slot[d] >= 0)
			d = (d + 1) & (RRC_TOPK_SLOTS - 1);
		t->slot[d] = (int16_t)moved;
	}
}

static void add_counted(struct rrc_topk *t, const uint8_t *key, size_t len, uint64_t inc,
			uint64_t err)
{
	if (len > RRC_TOPK_KEY)
		len = RRC_TOPK_KEY;
	uint32_t h = key_hash(key, len);
	unsigned fs;
	int idx = find(t, h, key, len, &fs);
	if (idx >= 0) {
		t->e[idx].count += inc;
		t->e[idx].error += err;
		return;
	}
	struct rrc_topk_entry *e;
	if (t->n < RRC_TOPK_CAP) {
		idx = (int)t->n++;
		e = &t->e[idx];
		e->count = inc;
		e->error = err;
	} else {
		/* Space-saving: the smallest entry makes room and lends its count as the error. */
		idx = 0;
		for (unsigned i = 1; i < t->n; i++) {
			if (t->e[i].count < t->e[idx].count)
				idx = (int)i;
		}
		e = &t->e[idx];
		unslot(t, idx);
		uint64_t min = e->count;
		e->count = min + inc;
		e->error = min + err;
		find(t, h, key, len, &fs); /* the slot may have moved */
	}
	e->hash = h;
	e->len = (uint8_t)len;
	memcpy(e->key, key, len);
	t->slot[fs] = (int16_t)idx;
}

void rrc_topk_add(struct rrc_topk *t, const uint8_t *key, size_t len, uint64_t inc)
{
	add_counted(t, key, len, inc, 0);
}

void rrc_topk_merge(struct rrc_topk *into, const struct rrc_topk *from)
{
	for (unsigned i = 0; i < from->n; i++) {
		const struct rrc_topk_entry *e = &from->e[i];
		add_counted(into, e->key, e->len, e->count, e->error);
	}
}

static int by_count(const void *a, const void *b)
{
	const struct rrc_topk_entry *x = *(const struct rrc_topk_entry *const *)a;
	const struct rrc_topk_entry *y = *(const struct rrc_topk_entry *const *)b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->key, y->key, x->len); /* a stable order for equal counts */
}

size_t rrc_topk_top(const struct rrc_topk *t, const struct rrc_topk_entry **out, size_t k)
{
	const struct rrc_topk_entry *all[RRC_TOPK_CAP];
	for (unsigned i = 0; i < t->n; i++)
		all[i] = &t->e[i];
	qsort(all, t->n, sizeof(all[0]), by_count);
	size_t n = t->n < k ? t->n : k;
	memcpy(out, all, n * sizeof(out[0]));
	return n;
}

/* ---- sliding windows ---- */

void rrc_top_init(struct rrc_top *t, uint32_t sample, uint32_t seed)
{
	t->sample = sample ? sample : 1;
	t->rnd = seed ? seed : 0x9E3779B9u;
	for (unsigned c = 0; c < RRC_TOP_CATS; c++) {
		for (unsigned i = 0; i < RRC_TOP_SUBS; i++) {
			rrc_topk_init(&t->minute[c][i]);
			rrc_topk_init(&t->hour[c][i]);
		}
	}
	t->cur_minute = t->cur_hour = t->ticks = 0;
}

void rrc_top_tick(struct rrc_top *t)
{
	unsigned m = t->cur_minute;
	for (unsigned c = 0; c < RRC_TOP_CATS; c++)
		rrc_topk_merge(&t->hour[c][t->cur_hour], &t->minute[c][m]);
	t->cur_minute = (m + 1) % RRC_TOP_SUBS;
	for (unsigned c = 0; c < RRC_TOP_CATS; c++)
		rrc_topk_init(&t->minute[c][t->cur_minute]);
	/* Ten minutes = RRC_TOP_SUBS ticks of the minute window times 10. */
	if (++t->ticks % (RRC_TOP_SUBS * 10) == 0) {
		t->cur_hour = (t->cur_hour + 1) % RRC_TOP_SUBS;
		for (unsigned c = 0; c < RRC_TOP_CATS; c++)
			rrc_topk_init(&t->hour[c][t->cur_hour]);
	}
}

void rrc_top_window(const struct rrc_top *t, enum rrc_top_cat cat, bool hour, struct rrc_topk *out)
{
	rrc_topk_init(out);
	for (unsigned i = 0; i < RRC_TOP_SUBS; i++)
		rrc_topk_merge(out, hour ? &t->hour[cat][i] : &t->minute[cat][i]);
	/* The hour also holds what the current 10 s have seen so far. */
	if (hour)
		rrc_topk_merge(out, &t->minute[cat][t->cur_minute]);
}

const char *rrc_top_cat_name(enum rrc_top_cat cat)
{
	static const char *const names[RRC_TOP_CATS] = {"names", "clients", "nxdomain", "servfail",
							"blocked"};
	return names[cat];
}
