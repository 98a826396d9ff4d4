/*
 * route: names and the longest one a name falls under. See include/rrcache/route.h.
 */
#include "rrcache/route.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	uint64_t hash; /* 0: empty */
	uint8_t *name;
	uint8_t len;
	uint16_t value;
};

struct rrc_route {
	struct entry *slots;
	size_t mask, n;
};

static const uint64_t route_key[2] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull};

static uint64_t name_hash(const uint8_t *name, size_t len)
{
	uint64_t h = rrc_hash64(route_key, name, len);
	return h ? h : 1;
}

struct rrc_route *rrc_route_create(void)
{
	struct rrc_route *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->slots = calloc(16, sizeof(*r->slots));
	if (!r->slots) {
		free(r);
		return NULL;
	}
	r->mask = 15;
	return r;
}

void rrc_route_destroy(struct rrc_route *r)
{
	if (!r)
		return;
	for (size_t i = 0; i <= r->mask; i++)
		free(r->slots[i].name);
	free(r->slots);
	free(r);
}

size_t rrc_route_count(const struct rrc_route *r)
{
	return r ? r->n : 0;
}

static struct entry *lookup(const struct rrc_route *r, uint64_t h, const uint8_t *name, size_t len)
{
	for (size_t i = h & r->mask;; i = (i + 1) & r->mask) {
		struct entry *e = &r->slots[i];
		if (!e->hash || (e->hash == h && e->len == len && memcmp(e->name, name, len) == 0))
			return e;
	}
}

static int grow(struct rrc_route *r)
{
	size_t cap = (r->mask + 1) * 2;
	struct entry *old = r->slots;
	size_t old_cap = r->mask + 1;
	r->slots = calloc(cap, sizeof(*r->slots));
	if (!r->slots) {
		r->slots = old;
		return -ENOMEM;
	}
	r->mask = cap - 1;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].hash)
			*lookup(r, old[i].hash, old[i].name, old[i].len) = old[i];
	free(old);
	return 0;
}

/* The number of labels of a wire name, or -1 when it does not walk to the root in len. */
static int labels(const uint8_t *name, size_t len)
{
	int n = 0;
	for (size_t i = 0; i < len; i += 1 + (size_t)name[i], n++) {
		if (name[i] == 0)
			return i + 1 == len ? n : -1;
		if (name[i] > 63)
			return -1;
	}
	return -1;
}

int rrc_route_add(struct rrc_route *r, const uint8_t *name, size_t len, uint16_t value)
{
	if (len == 0 || len > 255 || labels(name, len) < 0)
		return -EINVAL;
	if ((r->n + 1) * 2 > r->mask + 1 && grow(r) != 0)
		return -ENOMEM;
	uint64_t h = name_hash(name, len);
	struct entry *e = lookup(r, h, name, len);
	if (e->hash)
		return -EEXIST;
	uint8_t *copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, name, len);
	*e = (struct entry){.hash = h, .name = copy, .len = (uint8_t)len, .value = value};
	r->n++;
	return 0;
}

int rrc_route_find(const struct rrc_route *r, const uint8_t *name, size_t len, unsigned *depth)
{
	if (!r || !r->n)
		return -1;
	unsigned below = 0;
	for (size_t i = 0; i < len; i += 1 + (size_t)name[i], below++) {
		const struct entry *e = lookup(r, name_hash(name + i, len - i), name + i, len - i);
		if (e->hash) {
			if (depth)
				*depth = below;
			return e->value;
		}
		if (name[i] == 0 || name[i] > 63)
			break;
	}
	return -1;
}
