/*
 * route: names and the longest one a name falls under. See include/rrcache/route.h.
 */
#include "rrcache/route.h"

#include <errno.h>
#include <stdint.h>
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
	struct rrc_tlds tlds;
	uint64_t depths; /* bit n: some name has n labels (63: 63 or more) */
};

void rrc_tlds_add(struct rrc_tlds *t, const uint8_t *name, size_t len, bool exact)
{
	size_t last = SIZE_MAX;
	unsigned labels = 0;
	for (size_t i = 0; i < len && name[i] && name[i] < 64; i += 1 + (size_t)name[i]) {
		last = i;
		labels++;
	}
	if (last == SIZE_MAX) {
		t->all = true; /* the root: every name is under it */
		return;
	}
	if (exact && labels == 1) {
		t->single = true;
		return;
	}
	for (unsigned i = 0; i < t->n; i++)
		if (!memcmp(t->label[i], name + last, 1 + (size_t)name[last]))
			return;
	if (t->n >= RRC_TLDS_MAX)
		t->all = true;
	else
		memcpy(t->label[t->n++], name + last, 1 + (size_t)name[last]);
}

bool rrc_tlds_may_have(const struct rrc_tlds *t, const uint8_t *name, size_t len)
{
	if (t->all)
		return true;
	if (len < 3 || name[len - 1] != 0)
		return false;
	if (t->single && (size_t)name[0] + 2 == len)
		return true;
	/* Compared from the end: a length byte that happens to sit there inside a longer label
	 * only lets the name through to the lookup. */
	for (unsigned i = 0; i < t->n; i++) {
		size_t l = t->label[i][0];
		if (len < l + 2 || name[len - 2 - l] != l)
			continue;
		const uint8_t *a = name + len - 1 - l, *b = t->label[i] + 1;
		size_t k = 0;
		while (k < l && a[k] == b[k]) /* a call to memcmp costs more than these few bytes */
			k++;
		if (k == l)
			return true;
	}
	return false;
}

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
	rrc_tlds_add(&r->tlds, name, len, false);
	r->depths |= 1ull << RRC_MIN(labels(name, len), 63);
	return 0;
}

int rrc_route_find(const struct rrc_route *r, const uint8_t *name, size_t len, unsigned *depth)
{
	if (!r || !r->n || !rrc_tlds_may_have(&r->tlds, name, len))
		return -1;
	/* Only the suffixes with as many labels as some name of the table are looked up. */
	int n = labels(name, len);
	if (n < 0)
		return -1;
	unsigned below = 0;
	for (size_t i = 0; i < len; i += 1 + (size_t)name[i], below++) {
		int left = n - (int)below;
		if (r->depths >> RRC_MIN(left, 63) & 1) {
			const struct entry *e =
				lookup(r, name_hash(name + i, len - i), name + i, len - i);
			if (e->hash) {
				if (depth)
					*depth = below;
				return e->value;
			}
		}
		if (name[i] == 0)
			break;
	}
	return -1;
}
