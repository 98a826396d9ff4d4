/*
 * redis_cluster: the slot map from CLUSTER SHARDS or CLUSTER SLOTS. See
 * include/rrcache/redis_cluster.h.
 */
#include "rrcache/redis_cluster.h"

#include <stdio.h>
#include <string.h>

static bool is_str(const redisReply *r)
{
	return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool str_is(const redisReply *r, const char *s)
{
	return is_str(r) && (size_t)r->len == strlen(s) && memcmp(r->str, s, (size_t)r->len) == 0;
}

/* The node index of ip:port (ip a string, port an integer) in m. */
static int node_of(struct rrc_redis_slot_map *m, const redisReply *ip, long long port, char *why,
		   size_t cap)
{
	char digits[8];
	struct rrc_redis_node n;
	if (!is_str(ip) || port <= 0 || port > 65535) {
		snprintf(why, cap, "a master without an address");
		return -1;
	}
	int dl = snprintf(digits, sizeof(digits), "%lld", port);
	if (rrc_redis_master_parse_addr(ip->str, (size_t)ip->len, digits, (size_t)dl, n.host,
					&n.port) != 0) {
		snprintf(why, cap, "a master whose address '%.60s' is not numeric", ip->str);
		return -1;
	}
	int i = rrc_redis_slot_map_node(m, n.host, n.port);
	if (i < 0)
		snprintf(why, cap, "more than %d masters", RRC_REDIS_MAX_NODES);
	return i;
}

/* One shard of CLUSTER SHARDS: ["slots", [first, last, ...], "nodes", [[key, value, ...]]]. */
static int read_shard(const redisReply *sh, struct rrc_redis_slot_map *m, char *why, size_t cap)
{
	const redisReply *slots = NULL, *nodes = NULL;
	if (sh->type != REDIS_REPLY_ARRAY || sh->elements % 2) {
		snprintf(why, cap, "a shard that is not a map");
		return -1;
	}
	for (size_t i = 0; i + 1 < sh->elements; i += 2) {
		if (str_is(sh->element[i], "slots"))
			slots = sh->element[i + 1];
		else if (str_is(sh->element[i], "nodes"))
			nodes = sh->element[i + 1];
	}
	if (!slots || !nodes || slots->type != REDIS_REPLY_ARRAY || slots->elements % 2 ||
	    nodes->type != REDIS_REPLY_ARRAY) {
		snprintf(why, cap, "a shard without slots or nodes");
		return -1;
	}
	if (slots->elements == 0)
		return 0; /* a shard with no slot (a new master, or one being emptied) */
	const redisReply *ip = NULL;
	long long port = 0;
	bool found = false;
	for (size_t k = 0; k < nodes->elements && !found; k++) {
		const redisReply *nd = nodes->element[k];
		if (nd->type != REDIS_REPLY_ARRAY || nd->elements % 2)
			continue;
		const redisReply *nip = NULL;
		long long nport = 0;
		bool master = false, failed = false;
		for (size_t i = 0; i + 1 < nd->elements; i += 2) {
			const redisReply *key = nd->element[i], *val = nd->element[i + 1];
			if (str_is(key, "ip"))
				nip = val;
			else if (str_is(key, "port") && val->type == REDIS_REPLY_INTEGER)
				nport = val->integer;
			else if (str_is(key, "role"))
				master = str_is(val, "master");
			else if (str_is(key, "health"))
				failed = str_is(val, "failed");
		}
		if (master && !failed) {
			ip = nip;
			port = nport;
			found = true;
		}
	}
	if (!found)
		return 0; /* no master up for these slots now: their keys skip Redis */
	int node = node_of(m, ip, port, why, cap);
	if (node < 0)
		return -1;
	for (size_t i = 0; i < slots->elements; i += 2) {
		const redisReply *a = slots->element[i], *b = slots->element[i + 1];
		if (a->type != REDIS_REPLY_INTEGER || b->type != REDIS_REPLY_INTEGER ||
		    a->integer < 0 || b->integer < 0 ||
		    rrc_redis_slot_map_assign(m, (unsigned)a->integer, (unsigned)b->integer,
					      (unsigned)node) != 0) {
			snprintf(why, cap, "a bad slot range");
			return -1;
		}
	}
	return 0;
}

/* One range of CLUSTER SLOTS: [first, last, [ip, port, id, ...], replicas...]. */
static int read_range(const redisReply *rg, struct rrc_redis_slot_map *m, char *why, size_t cap)
{
	if (rg->type != REDIS_REPLY_ARRAY || rg->elements < 3 ||
	    rg->element[0]->type != REDIS_REPLY_INTEGER ||
	    rg->element[1]->type != REDIS_REPLY_INTEGER ||
	    rg->element[2]->type != REDIS_REPLY_ARRAY || rg->element[2]->elements < 2 ||
	    rg->element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
		snprintf(why, cap, "a slot range that is not [first, last, [ip, port]]");
		return -1;
	}
	const redisReply *master = rg->element[2];
	int node = node_of(m, master->element[0], master->element[1]->integer, why, cap);
	if (node < 0)
		return -1;
	long long a = rg->element[0]->integer, b = rg->element[1]->integer;
	if (a < 0 || b < 0 ||
	    rrc_redis_slot_map_assign(m, (unsigned)a, (unsigned)b, (unsigned)node) != 0) {
		snprintf(why, cap, "a bad slot range");
		return -1;
	}
	return 0;
}

int rrc_redis_cluster_read_map(const redisReply *r, bool shards, struct rrc_redis_slot_map *m,
			       char *why, size_t cap)
{
	rrc_redis_slot_map_clear(m);
	if (!r || r->type != REDIS_REPLY_ARRAY) {
		snprintf(why, cap, "%.100s",
			 r && r->type == REDIS_REPLY_ERROR ? r->str : "not a slot map");
		return -1;
	}
	for (size_t i = 0; i < r->elements; i++) {
		int rc = shards ? read_shard(r->element[i], m, why, cap)
				: read_range(r->element[i], m, why, cap);
		if (rc != 0)
			return -1;
	}
	return 0;
}
