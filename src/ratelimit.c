/*
 * ratelimit: per-prefix token buckets in a fixed table. See include/rrcache/ratelimit.h.
 *
 * A slot: the last update (bits 63..32, in 4 ms ticks: wraps after 198 days) and the tokens
 * (31..0, in 1/256ths); 0 is a slot never used (a full bucket).
 */
#include "rrcache/ratelimit.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct rrc_ratelimit {
	_Atomic uint64_t *slots;
	uint64_t mask;
	uint64_t key[2];
	uint32_t qps, full; /* full: burst in 1/256ths */
	uint8_t v4_prefix, v6_prefix;
};

#define TICK_MS 4
#define MASK32 0xFFFFFFFFull

struct rrc_ratelimit *rrc_ratelimit_create(const struct rrc_ratelimit_conf *conf)
{
	if (!conf->qps)
		return NULL;
	struct rrc_ratelimit *rl = calloc(1, sizeof(*rl));
	if (!rl)
		return NULL;
	uint64_t n = 64;
	while (n < conf->table_size && n < (1ull << 26))
		n <<= 1;
	rl->slots = calloc(n, sizeof(*rl->slots));
	if (!rl->slots || getrandom(rl->key, sizeof(rl->key), 0) != (ssize_t)sizeof(rl->key)) {
		free(rl->slots);
		free(rl);
		return NULL;
	}
	rl->mask = n - 1;
	rl->qps = conf->qps;
	uint32_t burst = conf->burst ? conf->burst : conf->qps;
	rl->full = RRC_MIN(burst, 1u << 23) * 256;
	rl->v4_prefix = (uint8_t)RRC_MIN(conf->v4_prefix, 32u);
	rl->v6_prefix = (uint8_t)RRC_MIN(conf->v6_prefix, 128u);
	return rl;
}

void rrc_ratelimit_destroy(struct rrc_ratelimit *rl)
{
	if (!rl)
		return;
	free((void *)rl->slots);
	free(rl);
}

size_t rrc_ratelimit_bytes(const struct rrc_ratelimit *rl)
{
	return rl ? sizeof(*rl) + (size_t)(rl->mask + 1) * sizeof(*rl->slots) : 0;
}

/* The keyed hash of sa's prefix (the family in it too). */
static uint64_t prefix_hash(const struct rrc_ratelimit *rl, const struct sockaddr *sa)
{
	uint8_t k[17] = {0};
	const uint8_t *a;
	unsigned bits;
	if (sa->sa_family == AF_INET) {
		a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
		bits = rl->v4_prefix;
		k[0] = 4;
	} else {
		a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		bits = rl->v6_prefix;
		k[0] = 6;
	}
	memcpy(k + 1, a, bits / 8);
	if (bits % 8)
		k[1 + bits / 8] = a[bits / 8] & (uint8_t)(0xFF00 >> (bits % 8));
	return rrc_hash64(rl->key, k, sizeof(k));
}

bool rrc_ratelimit_allow(struct rrc_ratelimit *rl, const struct sockaddr *sa, uint64_t now_ms)
{
	if (!rl || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return true;
	uint64_t h = prefix_hash(rl, sa);
	_Atomic uint64_t *slot = &rl->slots[h & rl->mask];
	uint64_t now = (now_ms / TICK_MS) & MASK32;
	uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
	for (;;) {
		uint64_t tokens = rl->full;
		if (old != 0) {
			uint64_t elapsed = (now - (old >> 32)) & MASK32;
			uint64_t refill = elapsed >= 1000000
						  ? rl->full
						  : elapsed * TICK_MS * rl->qps * 256 / 1000;
			tokens = RRC_MIN((old & MASK32) + refill, (uint64_t)rl->full);
		}
		bool allowed = tokens >= 256;
		if (allowed)
			tokens -= 256;
		uint64_t next = now << 32 | tokens;
		if (next == 0)
			next = 1; /* never the "unused" value */
		if (atomic_compare_exchange_weak_explicit(slot, &old, next, memory_order_relaxed,
							  memory_order_relaxed))
			return allowed;
	}
}
