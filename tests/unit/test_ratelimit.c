/*
 * ratelimit: token buckets per prefix, refill, prefixes apart, fixed memory.
 */
#include "rrcache/ratelimit.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sockaddr_text.h"

static unsigned allowed(struct rrc_ratelimit *rl, const char *a, unsigned n, uint64_t now)
{
	struct sockaddr_storage ss = sockaddr_of(a);
	unsigned ok = 0;
	for (unsigned i = 0; i < n; i++)
		ok += rrc_ratelimit_allow(rl, (struct sockaddr *)&ss, now);
	return ok;
}

static void test_buckets(void **state)
{
	struct rrc_ratelimit_conf conf = {
		.qps = 10, .burst = 20, .v4_prefix = 24, .v6_prefix = 56, .table_size = 4096};
	struct rrc_ratelimit *rl = rrc_ratelimit_create(&conf);
	assert_non_null(rl);
	uint64_t t = 1000000;
	/* The burst, then nothing at the same instant. */
	assert_int_equal(allowed(rl, "192.0.2.1", 50, t), 20);
	/* The same /24 shares the bucket; another /24 has its own. */
	assert_int_equal(allowed(rl, "192.0.2.99", 5, t), 0);
	assert_int_equal(allowed(rl, "192.0.3.1", 5, t), 5);
	/* Refill: 10 a second. */
	assert_int_equal(allowed(rl, "192.0.2.1", 50, t + 1000), 10);
	assert_int_equal(allowed(rl, "192.0.2.1", 50, t + 1500), 5);
	/* A long quiet time fills up to the burst, not beyond. */
	assert_int_equal(allowed(rl, "192.0.2.1", 50, t + 3600000), 20);
	/* IPv6: a /56 is one client. */
	assert_int_equal(allowed(rl, "2001:db8:0:1::1", 30, t), 20);
	assert_int_equal(allowed(rl, "2001:db8:0:ff::2", 5, t), 0);  /* the same /56 */
	assert_int_equal(allowed(rl, "2001:db8:0:100::1", 5, t), 5); /* the next one */
	rrc_ratelimit_destroy(rl);
	/* qps 0 is off: no table. */
	conf.qps = 0;
	assert_null(rrc_ratelimit_create(&conf));
}

/* A hundred thousand sources (/24s apart, as a spoofed flood) at one instant: the table does
 * not grow, nearly every new source gets its first query through, and a busy one stays
 * limited meanwhile. */
static void test_memory_flat(void **state)
{
	struct rrc_ratelimit_conf conf = {
		.qps = 5, .v4_prefix = 24, .v6_prefix = 56, .table_size = 65536};
	struct rrc_ratelimit *rl = rrc_ratelimit_create(&conf);
	size_t bytes = rrc_ratelimit_bytes(rl);
	assert_true(bytes <= 65536 * 8 + 256);
	uint64_t t = 5000;
	assert_int_equal(allowed(rl, "198.51.100.7", 100, t), 5);
	unsigned first = 0;
	char a[32];
	for (unsigned i = 0; i < 100000; i++) {
		snprintf(a, sizeof(a), "%u.%u.%u.1", 10 + (i >> 16), i >> 8 & 255, i & 255);
		first += allowed(rl, a, 1, t);
	}
	assert_int_equal(rrc_ratelimit_bytes(rl), bytes);
	/* Sources that share a slot share its bucket: at one instant, a slot that six or more of
	 * the 100,000 hash to (about 0.4 % of 65,536 slots) turns its sixth away. */
	print_message("first queries through: %u of 100000\n", first);
	assert_true(first >= 99000);
	assert_int_equal(allowed(rl, "198.51.100.7", 100, t), 0);
	rrc_ratelimit_destroy(rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_memory_flat),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
