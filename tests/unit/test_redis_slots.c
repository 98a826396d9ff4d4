/*
 * redis_slots and redis_cluster: key slots (the cluster specification's CRC16 and hash-tag
 * examples), MOVED/ASK errors, and slot maps read from CLUSTER SHARDS and CLUSTER SLOTS
 * replies (fed to hiredis's reader as RESP).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rrcache/redis_cluster.h"
#include "rrcache/redis_slots.h"

static uint16_t slot(const char *k)
{
	return rrc_redis_key_slot(k, strlen(k));
}

static void test_key_slots(void **state)
{
	/* CRC16("123456789") is 0x31C3 (the specification's check value). */
	assert_int_equal(slot("123456789"), 0x31C3 & 16383);
	assert_int_equal(slot("foo"), 12182);
	assert_int_equal(slot("bar"), 5061);
	/* Hash tags: the first {...} that is not empty. */
	assert_int_equal(slot("{user1000}.following"), slot("{user1000}.followers"));
	assert_int_equal(slot("{user1000}.following"), slot("user1000"));
	assert_int_equal(slot("foo{}{bar}"), rrc_redis_key_slot("foo{}{bar}", 10)); /* whole */
	assert_int_not_equal(slot("foo{}{bar}"), slot("bar"));
	assert_int_equal(slot("foo{{bar}}zap"), slot("{bar"));
	assert_int_equal(slot("foo{bar}{zap}"), slot("bar"));
	assert_int_equal(slot("no{close"), rrc_redis_key_slot("no{close", 8));
	/* rrcache's keys: a value and its lock share the tag. */
	assert_int_equal(slot("rrc:{0123456789abcdef:fedcba9876543210}"),
			 slot("rrc:lock:{0123456789abcdef:fedcba9876543210}"));
}

static void test_redirects(void **state)
{
	uint16_t s = 0;
	struct rrc_redis_node to;
	const char *moved = "MOVED 3999 127.0.0.1:6381";
	assert_int_equal(rrc_redis_parse_redirect(moved, strlen(moved), &s, &to),
			 RRC_REDIRECT_MOVED);
	assert_int_equal(s, 3999);
	assert_string_equal(to.host, "127.0.0.1");
	assert_int_equal(to.port, 6381);
	const char *ask = "ASK 16383 [2001:db8::5]:7000";
	assert_int_equal(rrc_redis_parse_redirect(ask, strlen(ask), &s, &to), RRC_REDIRECT_ASK);
	assert_int_equal(s, 16383);
	assert_string_equal(to.host, "2001:db8::5");
	assert_int_equal(to.port, 7000);
	const char *v6 = "MOVED 1 ::1:7001";
	assert_int_equal(rrc_redis_parse_redirect(v6, strlen(v6), &s, &to), RRC_REDIRECT_MOVED);
	assert_string_equal(to.host, "::1");
	static const char *const bad[] = {
		"MOVED 16384 127.0.0.1:6381",
		"MOVED x 127.0.0.1:6381",
		"MOVED 1 127.0.0.1",
		"MOVED 1 host.example:6381",
		"MOVED 1 127.0.0.1:0",
		"ASK 1",
		"ERR wrong type",
		"MOVED  1 127.0.0.1:1",
		"MOVED 1234567 1.2.3.4:5",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (rrc_redis_parse_redirect(bad[i], strlen(bad[i]), &s, &to) != RRC_REDIRECT_NONE)
			fail_msg("accepted '%s'", bad[i]);
	}
}

/* The reply hiredis's reader makes of resp. */
static redisReply *parse(const char *resp)
{
	redisReader *rd = redisReaderCreate();
	assert_int_equal(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
	void *reply = NULL;
	assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK);
	assert_non_null(reply);
	redisReaderFree(rd);
	return reply;
}

static void test_maps(void **state)
{
	static struct rrc_redis_slot_map m;
	char why[160];
	/* CLUSTER SHARDS: two shards, the second's master is failed and its replica promoted;
	 * a third shard without slots. */
	const char *shards =
		"*3\r\n"
		"*4\r\n$5\r\nslots\r\n*4\r\n:0\r\n:8000\r\n:10000\r\n:10000\r\n$5\r\nnodes\r\n*"
		"1\r\n"
		"*8\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n:7000\r\n$4\r\nrole\r\n"
		"$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
		"*4\r\n$5\r\nslots\r\n*4\r\n:8001\r\n:9999\r\n:10001\r\n:16383\r\n$5\r\nnodes\r\n*"
		"2\r\n"
		"*8\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n:7001\r\n$4\r\nrole\r\n"
		"$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nfailed\r\n"
		"*8\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n:7004\r\n$4\r\nrole\r\n"
		"$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
		"*4\r\n$5\r\nslots\r\n*0\r\n$5\r\nnodes\r\n*0\r\n";
	redisReply *r = parse(shards);
	if (rrc_redis_cluster_read_map(r, true, &m, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	freeReplyObject(r);
	assert_int_equal(m.n_nodes, 2);
	assert_int_equal(m.nodes[1].port, 7004);
	assert_int_equal(m.slot[0], 0);
	assert_int_equal(m.slot[8000], 0);
	assert_int_equal(m.slot[8001], 1);
	assert_int_equal(m.slot[10000], 0);
	assert_int_equal(m.slot[16383], 1);
	assert_int_equal(rrc_redis_slot_map_covered(&m), 16384);

	/* CLUSTER SLOTS (Redis 6): [first, last, [ip, port, id], replica...]. */
	const char *slots =
		"*2\r\n"
		"*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
		"*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n"
		"*3\r\n:5461\r\n:10922\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n";
	r = parse(slots);
	if (rrc_redis_cluster_read_map(r, false, &m, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	freeReplyObject(r);
	assert_int_equal(m.n_nodes, 2);
	assert_int_equal(m.slot[5460], 0);
	assert_int_equal(m.slot[5461], 1);
	assert_int_equal(m.slot[10923], RRC_REDIS_NO_NODE);
	assert_int_equal(rrc_redis_slot_map_covered(&m), 10923);

	/* Refused: an error, a name for an address, a range beyond the slots. */
	static const char *const bad[] = {
		"-ERR unknown subcommand\r\n",
		"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$9\r\nredis-0.x\r\n:7000\r\n",
		"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n",
		"*1\r\n*3\r\n:9\r\n:5\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n",
		"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$9\r\n127.0.0.1\r\n:0\r\n",
		":1\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = parse(bad[i]);
		if (rrc_redis_cluster_read_map(r, false, &m, why, sizeof(why)) == 0)
			fail_msg("accepted %s", bad[i]);
		freeReplyObject(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_slots),
		cmocka_unit_test(test_redirects),
		cmocka_unit_test(test_maps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
