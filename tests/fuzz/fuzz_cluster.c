/*
 * libFuzzer target for what a Redis Cluster node may send about the cluster: the input is
 * fed as RESP to a reader with a cluster connection's bounds (redis_uv), and each reply read
 * as a slot map both ways (CLUSTER
 * SHARDS, CLUSTER SLOTS); the input is also read as a MOVED/ASK error and a "+switch-master"
 * message, and its first bytes as a key's slot.
 * Invariants: a map read has at most RRC_REDIS_MAX_NODES nodes, every slot names one of them
 * or none, every node's address is numeric with a port; a redirect's slot is below 16,384.
 */
#include "rrcache/redis_cluster.h"
#include "rrcache/redis_uv.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_map(const struct rrc_redis_slot_map *m)
{
	if (m->n_nodes > RRC_REDIS_MAX_NODES)
		abort();
	for (unsigned s = 0; s < RRC_REDIS_SLOTS; s++) {
		if (m->slot[s] != RRC_REDIS_NO_NODE && m->slot[s] >= m->n_nodes)
			abort();
	}
	for (unsigned i = 0; i < m->n_nodes; i++) {
		unsigned char bin[16];
		if (m->nodes[i].port == 0 || (inet_pton(AF_INET, m->nodes[i].host, bin) != 1 &&
					      inet_pton(AF_INET6, m->nodes[i].host, bin) != 1))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rrc_redis_slot_map m;
	char why[160];
	redisReader *rd =
		rrc_redis_uv_reader(RRC_REDIS_CLUSTER_MAX_ELEMENTS, RRC_REDIS_CLUSTER_MAX_TOTAL);
	if (!rd)
		return 0;
	if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
		for (int i = 0; i < 4; i++) {
			void *reply = NULL;
			if (redisReaderGetReply(rd, &reply) != REDIS_OK || !reply)
				break;
			for (int shards = 0; shards < 2; shards++) {
				if (rrc_redis_cluster_read_map(reply, shards, &m, why,
							       sizeof(why)) == 0)
					check_map(&m);
			}
			freeReplyObject(reply);
		}
	}
	rrc_redis_uv_reader_free(rd);
	uint16_t slot;
	struct rrc_redis_node to;
	if (rrc_redis_parse_redirect((const char *)data, size, &slot, &to) != RRC_REDIRECT_NONE &&
	    (slot >= RRC_REDIS_SLOTS || to.port == 0))
		abort();
	char host[RRC_REDIS_HOST_LEN];
	uint16_t port;
	if (rrc_redis_master_parse_switch((const char *)data, size, "m", host, &port) == 0 &&
	    port == 0)
		abort();
	if (rrc_redis_key_slot((const char *)data, size) >= RRC_REDIS_SLOTS)
		abort();
	return 0;
}
