/*
 * redis_master: the shared record (the generation moves only when the address changes, a
 * doubt is taken once), the sentinel's address (numeric only) and the "+switch-master"
 * message (ours only, every malformed form refused).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rrcache/redis_master.h"

static void test_record(void **state)
{
	struct rrc_redis_master *m = rrc_redis_master_new();
	assert_non_null(m);
	char host[RRC_REDIS_HOST_LEN];
	uint16_t port = 1;
	assert_int_equal(rrc_redis_master_get(m, host, &port), 0);
	assert_string_equal(host, "");
	assert_int_equal(port, 0);
	assert_true(rrc_redis_master_set(m, "127.0.0.1", 6379));
	assert_int_equal(rrc_redis_master_generation(m), 1);
	assert_false(rrc_redis_master_set(m, "127.0.0.1", 6379)); /* the same: no change */
	assert_int_equal(rrc_redis_master_generation(m), 1);
	assert_true(rrc_redis_master_set(m, "127.0.0.1", 6380)); /* another port */
	assert_true(rrc_redis_master_set(m, "::1", 6380));	 /* another host */
	assert_int_equal(rrc_redis_master_get(m, host, &port), 3);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 6380);
	assert_false(rrc_redis_master_take_doubt(m));
	rrc_redis_master_doubt(m);
	rrc_redis_master_doubt(m);
	assert_true(rrc_redis_master_take_doubt(m));
	assert_false(rrc_redis_master_take_doubt(m));
	rrc_redis_master_free(m);
}

static int addr(const char *h, const char *p, char out[RRC_REDIS_HOST_LEN], uint16_t *port)
{
	return rrc_redis_master_parse_addr(h, strlen(h), p, strlen(p), out, port);
}

static void test_addresses(void **state)
{
	char out[RRC_REDIS_HOST_LEN];
	uint16_t port = 0;
	assert_int_equal(addr("10.0.0.5", "6379", out, &port), 0);
	assert_string_equal(out, "10.0.0.5");
	assert_int_equal(port, 6379);
	assert_int_equal(addr("2001:db8::7", "65535", out, &port), 0);
	assert_string_equal(out, "2001:db8::7");
	assert_int_equal(port, 65535);
	static const char *const bad[][2] = {
		{"redis-0.redis", "6379"}, /* a name: not resolved on a loop */
		{"", "6379"},
		{"10.0.0.5", ""},
		{"10.0.0.5", "0"},
		{"10.0.0.5", "65536"},
		{"10.0.0.5", "63 79"},
		{"10.0.0.5", "-1"},
		{"10.0.0.5 ", "6379"},
		{"10.0.0.256", "6379"},
		{"10.0.0.5", "123456"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (addr(bad[i][0], bad[i][1], out, &port) == 0)
			fail_msg("accepted %s %s", bad[i][0], bad[i][1]);
	}
	/* Not NUL-terminated: only the given length counts. */
	assert_int_equal(rrc_redis_master_parse_addr("10.0.0.9xyz", 8, "6380xyz", 4, out, &port),
			 0);
	assert_string_equal(out, "10.0.0.9");
	assert_int_equal(port, 6380);
	char longhost[100];
	memset(longhost, '1', sizeof(longhost));
	assert_int_equal(
		rrc_redis_master_parse_addr(longhost, sizeof(longhost), "1", 1, out, &port), -1);
}

static int sw(const char *msg, char out[RRC_REDIS_HOST_LEN], uint16_t *port)
{
	return rrc_redis_master_parse_switch(msg, strlen(msg), "fleet", out, port);
}

static void test_switch_messages(void **state)
{
	char out[RRC_REDIS_HOST_LEN];
	uint16_t port = 0;
	assert_int_equal(sw("fleet 127.0.0.1 6379 127.0.0.1 6380", out, &port), 0);
	assert_string_equal(out, "127.0.0.1");
	assert_int_equal(port, 6380);
	assert_int_equal(sw("fleet ::1 6379 2001:db8::2 7000", out, &port), 0);
	assert_string_equal(out, "2001:db8::2");
	static const char *const bad[] = {
		"other 127.0.0.1 6379 127.0.0.1 6380",	     /* another master */
		"fleetx 127.0.0.1 6379 127.0.0.1 6380",	     /* a name that begins like ours */
		"flee 127.0.0.1 6379 127.0.0.1 6380",	     /* one that ours begins like */
		"fleet 127.0.0.1 6379 127.0.0.1",	     /* four words */
		"fleet 127.0.0.1 6379 127.0.0.1 6380 extra", /* six */
		"fleet 127.0.0.1 6379 127.0.0.1 6380 ",	     /* a trailing space */
		"fleet  127.0.0.1 6379 127.0.0.1 6380",	     /* an empty word */
		"fleet 127.0.0.1 6379 host.example 6380",    /* a name */
		"fleet 127.0.0.1 6379 127.0.0.1 0",	     /* port 0 */
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (sw(bad[i], out, &port) == 0)
			fail_msg("accepted '%s'", bad[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_switch_messages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
