/*
 * redis_slots: Redis Cluster's slots, maps and redirects. See include/rrcache/redis_slots.h.
 */
#include "rrcache/redis_slots.h"

#include <pthread.h>
#include <string.h>

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the one Redis Cluster specifies, with a
 * table built once. */
static uint16_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (unsigned i = 0; i < 256; i++) {
		uint16_t c = (uint16_t)(i << 8);
		for (int b = 0; b < 8; b++)
			c = (uint16_t)(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
		crc_table[i] = c;
	}
}

static uint16_t crc16(const char *p, size_t len)
{
	uint16_t c = 0;
	for (size_t i = 0; i < len; i++)
		c = (uint16_t)((c << 8) ^ crc_table[((c >> 8) ^ (uint8_t)p[i]) & 0xff]);
	return c;
}

uint16_t rrc_redis_key_slot(const char *key, size_t len)
{
	pthread_once(&crc_once, crc_init);
	const char *open = memchr(key, '{', len);
	if (open) {
		size_t rest = len - (size_t)(open - key) - 1;
		const char *close = memchr(open + 1, '}', rest);
		if (close && close > open + 1)
			return crc16(open + 1, (size_t)(close - open - 1)) & (RRC_REDIS_SLOTS - 1);
	}
	return crc16(key, len) & (RRC_REDIS_SLOTS - 1);
}

void rrc_redis_slot_map_clear(struct rrc_redis_slot_map *m)
{
	m->n_nodes = 0;
	memset(m->slot, RRC_REDIS_NO_NODE, sizeof(m->slot));
}

int rrc_redis_slot_map_node(struct rrc_redis_slot_map *m, const char *host, uint16_t port)
{
	for (unsigned i = 0; i < m->n_nodes; i++) {
		if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
			return (int)i;
	}
	if (m->n_nodes >= RRC_REDIS_MAX_NODES || strlen(host) >= RRC_REDIS_HOST_LEN)
		return -1;
	struct rrc_redis_node *n = &m->nodes[m->n_nodes];
	memcpy(n->host, host, strlen(host) + 1);
	n->port = port;
	return (int)m->n_nodes++;
}

int rrc_redis_slot_map_assign(struct rrc_redis_slot_map *m, unsigned first, unsigned last,
			      unsigned node)
{
	if (first > last || last >= RRC_REDIS_SLOTS || node >= m->n_nodes)
		return -1;
	memset(m->slot + first, (int)node, last - first + 1);
	return 0;
}

unsigned rrc_redis_slot_map_covered(const struct rrc_redis_slot_map *m)
{
	unsigned n = 0;
	for (unsigned i = 0; i < RRC_REDIS_SLOTS; i++)
		n += m->slot[i] != RRC_REDIS_NO_NODE;
	return n;
}

enum rrc_redis_redirect rrc_redis_parse_redirect(const char *err, size_t len, uint16_t *slot,
						 struct rrc_redis_node *to)
{
	enum rrc_redis_redirect kind;
	size_t at;
	if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
		kind = RRC_REDIRECT_MOVED;
		at = 6;
	} else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
		kind = RRC_REDIRECT_ASK;
		at = 4;
	} else {
		return RRC_REDIRECT_NONE;
	}
	unsigned long s = 0;
	size_t digits = 0;
	while (at < len && err[at] >= '0' && err[at] <= '9' && digits < 6) {
		s = s * 10 + (unsigned long)(err[at++] - '0');
		digits++;
	}
	if (!digits || s >= RRC_REDIS_SLOTS || at >= len || err[at++] != ' ')
		return RRC_REDIRECT_NONE;
	/* host:port, the port after the last colon (an IPv6 host has colons of its own). */
	const char *addr = err + at;
	size_t alen = len - at;
	const char *colon = NULL;
	for (size_t i = 0; i < alen; i++) {
		if (addr[i] == ':')
			colon = addr + i;
	}
	if (!colon)
		return RRC_REDIRECT_NONE;
	size_t hlen = (size_t)(colon - addr);
	if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
		addr++;
		hlen -= 2;
	}
	size_t plen = (size_t)(err + len - (colon + 1));
	if (rrc_redis_master_parse_addr(addr, hlen, colon + 1, plen, to->host, &to->port) != 0)
		return RRC_REDIRECT_NONE;
	*slot = (uint16_t)s;
	return kind;
}
