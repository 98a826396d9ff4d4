/*
 * redis_master: the master's address shared by the workers. See
 * include/rrcache/redis_master.h.
 *
 * The address is read under a mutex (at a connection's opening: rare); the generation and the
 * doubt are atomics, read at every request without the lock.
 */
#include "rrcache/redis_master.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

struct rrc_redis_master {
	pthread_mutex_t lock;
	char host[RRC_REDIS_HOST_LEN];
	uint16_t port;
	_Atomic uint32_t generation;
	atomic_bool doubt;
};

struct rrc_redis_master *rrc_redis_master_new(void)
{
	struct rrc_redis_master *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	atomic_init(&m->generation, 0);
	atomic_init(&m->doubt, false);
	return m;
}

void rrc_redis_master_free(struct rrc_redis_master *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

bool rrc_redis_master_set(struct rrc_redis_master *m, const char *host, uint16_t port)
{
	pthread_mutex_lock(&m->lock);
	bool changed = port != m->port || strcmp(host, m->host) != 0;
	if (changed) {
		snprintf(m->host, sizeof(m->host), "%s", host);
		m->port = port;
		/* Under the lock: a reader that sees the new generation reads the new address. */
		atomic_fetch_add_explicit(&m->generation, 1, memory_order_release);
	}
	pthread_mutex_unlock(&m->lock);
	return changed;
}

uint32_t rrc_redis_master_get(struct rrc_redis_master *m, char host[RRC_REDIS_HOST_LEN],
			      uint16_t *port)
{
	pthread_mutex_lock(&m->lock);
	memcpy(host, m->host, RRC_REDIS_HOST_LEN);
	*port = m->port;
	uint32_t g = atomic_load_explicit(&m->generation, memory_order_relaxed);
	pthread_mutex_unlock(&m->lock);
	return g;
}

uint32_t rrc_redis_master_generation(struct rrc_redis_master *m)
{
	return atomic_load_explicit(&m->generation, memory_order_relaxed);
}

void rrc_redis_master_doubt(struct rrc_redis_master *m)
{
	atomic_store_explicit(&m->doubt, true, memory_order_relaxed);
}

bool rrc_redis_master_take_doubt(struct rrc_redis_master *m)
{
	return atomic_exchange_explicit(&m->doubt, false, memory_order_relaxed);
}

int rrc_redis_master_parse_addr(const char *host, size_t hlen, const char *port, size_t plen,
				char out[RRC_REDIS_HOST_LEN], uint16_t *out_port)
{
	if (hlen == 0 || hlen >= RRC_REDIS_HOST_LEN || plen == 0 || plen > 5)
		return -1;
	char h[RRC_REDIS_HOST_LEN];
	memcpy(h, host, hlen);
	h[hlen] = '\0';
	unsigned char bin[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, h, bin) != 1 && inet_pton(AF_INET6, h, bin) != 1)
		return -1;
	unsigned long p = 0;
	for (size_t i = 0; i < plen; i++) {
		if (port[i] < '0' || port[i] > '9')
			return -1;
		p = p * 10 + (unsigned long)(port[i] - '0');
	}
	if (p == 0 || p > 65535)
		return -1;
	memcpy(out, h, hlen + 1);
	*out_port = (uint16_t)p;
	return 0;
}

/* The next word of msg[*at..len) (separated by single spaces); false when none is left. */
static bool word(const char *msg, size_t len, size_t *at, const char **w, size_t *wlen)
{
	if (*at >= len)
		return false;
	size_t i = *at;
	while (i < len && msg[i] != ' ')
		i++;
	*w = msg + *at;
	*wlen = i - *at;
	*at = i < len ? i + 1 : len;
	return *wlen > 0;
}

int rrc_redis_master_parse_switch(const char *msg, size_t len, const char *name,
				  char out[RRC_REDIS_HOST_LEN], uint16_t *out_port)
{
	const char *w[5];
	size_t wl[5], at = 0;
	if (len == 0 || msg[len - 1] == ' ')
		return -1;
	for (int i = 0; i < 5; i++) {
		if (!word(msg, len, &at, &w[i], &wl[i]))
			return -1;
	}
	if (at != len || wl[0] != strlen(name) || memcmp(w[0], name, wl[0]) != 0)
		return -1;
	return rrc_redis_master_parse_addr(w[3], wl[3], w[4], wl[4], out, out_port);
}
