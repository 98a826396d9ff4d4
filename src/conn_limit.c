/*
 * conn_limit: TCP connections in all and per client. See include/rrcache/conn_limit.h.
 */
#include "rrcache/conn_limit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Buckets of the per-client table: chains stay short up to a few thousand clients holding
 * connections at once (tcp.max_connections is 1,024 by default). */
#define CLIENT_BUCKETS 1024

struct client {
	struct client *next;
	uint8_t addr[16]; /* IPv4 as ::a.b.c.d's last four octets */
	unsigned count;
};

struct rrc_conn_limit {
	pthread_mutex_t lock;
	unsigned total;
	struct client *buckets[CLIENT_BUCKETS];
};

struct rrc_conn_limit *rrc_conn_limit_create(void)
{
	struct rrc_conn_limit *l = calloc(1, sizeof(*l));
	if (l)
		pthread_mutex_init(&l->lock, NULL);
	return l;
}

void rrc_conn_limit_destroy(struct rrc_conn_limit *l)
{
	if (!l)
		return;
	for (unsigned b = 0; b < CLIENT_BUCKETS; b++) {
		struct client *c = l->buckets[b];
		while (c) {
			struct client *n = c->next;
			free(c);
			c = n;
		}
	}
	pthread_mutex_destroy(&l->lock);
	free(l);
}

static void client_addr(const struct sockaddr *sa, uint8_t out[16])
{
	memset(out, 0, 16);
	if (sa->sa_family == AF_INET)
		memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

static unsigned client_bucket(const uint8_t a[16])
{
	uint32_t h = 2166136261u; /* FNV-1a: the table only spreads counts, it is not exposed */
	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 16777619u;
	return h % CLIENT_BUCKETS;
}

bool rrc_conn_limit_take(struct rrc_conn_limit *l, const struct sockaddr *addr, unsigned max_total,
			 unsigned max_per_client)
{
	uint8_t a[16];
	client_addr(addr, a);
	unsigned b = client_bucket(a);
	bool ok = false;
	pthread_mutex_lock(&l->lock);
	struct client *c = l->buckets[b];
	while (c && memcmp(c->addr, a, 16) != 0)
		c = c->next;
	if (l->total >= max_total || (c && c->count >= max_per_client))
		goto out;
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			goto out;
		memcpy(c->addr, a, 16);
		c->next = l->buckets[b];
		l->buckets[b] = c;
	}
	c->count++;
	l->total++;
	ok = true;
out:
	pthread_mutex_unlock(&l->lock);
	return ok;
}

void rrc_conn_limit_release(struct rrc_conn_limit *l, const struct sockaddr *addr)
{
	uint8_t a[16];
	client_addr(addr, a);
	unsigned b = client_bucket(a);
	pthread_mutex_lock(&l->lock);
	struct client **pp = &l->buckets[b];
	while (*pp && memcmp((*pp)->addr, a, 16) != 0)
		pp = &(*pp)->next;
	if (*pp) {
		l->total--;
		if (--(*pp)->count == 0) {
			struct client *c = *pp;
			*pp = c->next;
			free(c);
		}
	}
	pthread_mutex_unlock(&l->lock);
}
