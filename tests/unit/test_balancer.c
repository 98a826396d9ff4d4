/* Unit tests of the balancer policies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rrcache/balancer.h"

static void test_round_robin(void **state)
{
	struct rrc_balancer_server s[3] = {{.up = true}, {.up = true}, {.up = true}};
	unsigned cur = 0, counts[3] = {0};
	for (int i = 0; i < 300; i++)
		counts[rrc_balancer_pick(RRC_POLICY_ROUND_ROBIN, &cur, s, 3, 0)]++;
	assert_int_equal(counts[0], 100);
	assert_int_equal(counts[1], 100);
	assert_int_equal(counts[2], 100);
	/* Down servers are skipped; the rest share evenly. */
	s[1].up = false;
	memset(counts, 0, sizeof(counts));
	for (int i = 0; i < 300; i++)
		counts[rrc_balancer_pick(RRC_POLICY_ROUND_ROBIN, &cur, s, 3, 0)]++;
	assert_int_equal(counts[1], 0);
	assert_int_equal(counts[0], 150);
	/* Excluded (already tried) servers are skipped; none left: -1. */
	assert_int_equal(rrc_balancer_pick(RRC_POLICY_ROUND_ROBIN, &cur, s, 3, 1 | 4), -1);
	assert_int_equal(rrc_balancer_pick(RRC_POLICY_ROUND_ROBIN, &cur, s, 3, 1), 2);
	s[0].up = s[2].up = false;
	assert_int_equal(rrc_balancer_pick(RRC_POLICY_ROUND_ROBIN, &cur, s, 3, 0), -1);
	assert_int_equal(rrc_balancer_pick(RRC_POLICY_ROUND_ROBIN, &cur, s, 0, 0), -1);
}

static void test_first_available(void **state)
{
	struct rrc_balancer_server s[3] = {{.up = false}, {.up = true}, {.up = true}};
	unsigned cur = 0;
	for (int i = 0; i < 5; i++)
		assert_int_equal(rrc_balancer_pick(RRC_POLICY_FIRST_AVAILABLE, &cur, s, 3, 0), 1);
	assert_int_equal(rrc_balancer_pick(RRC_POLICY_FIRST_AVAILABLE, &cur, s, 3, 2), 2);
}

static void test_least_outstanding(void **state)
{
	struct rrc_balancer_server s[3] = {{.up = true, .outstanding = 5},
					   {.up = true, .outstanding = 2},
					   {.up = true, .outstanding = 9}};
	unsigned cur = 0;
	assert_int_equal(rrc_balancer_pick(RRC_POLICY_LEAST_OUTSTANDING, &cur, s, 3, 0), 1);
	assert_int_equal(rrc_balancer_pick(RRC_POLICY_LEAST_OUTSTANDING, &cur, s, 3, 2), 0);
}

static void test_weighted(void **state)
{
	struct rrc_balancer_server s[2] = {{.up = true, .weight = 3}, {.up = true, .weight = 1}};
	unsigned cur = 0, counts[2] = {0};
	for (int i = 0; i < 400; i++)
		counts[rrc_balancer_pick(RRC_POLICY_WEIGHTED, &cur, s, 2, 0)]++;
	assert_int_equal(counts[0], 300);
	assert_int_equal(counts[1], 100);
}

static void test_parse(void **state)
{
	enum rrc_balance p;
	assert_int_equal(rrc_balancer_policy_parse("round-robin", &p), 0);
	assert_int_equal(p, RRC_POLICY_ROUND_ROBIN);
	assert_int_equal(rrc_balancer_policy_parse("weighted", &p), 0);
	assert_int_equal(p, RRC_POLICY_WEIGHTED);
	assert_int_not_equal(rrc_balancer_policy_parse("random", &p), 0);
	assert_string_equal(rrc_balancer_policy_name(RRC_POLICY_LEAST_OUTSTANDING),
			    "least-outstanding");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_robin),
		cmocka_unit_test(test_first_available),
		cmocka_unit_test(test_least_outstanding),
		cmocka_unit_test(test_weighted),
		cmocka_unit_test(test_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
