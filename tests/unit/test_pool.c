/* Unit tests of the object pool: reuse, zeroing, the keep bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rrcache/pool.h"

static void test_reuse_and_zero(void **state)
{
	struct rrc_pool p;
	rrc_pool_init(&p, 100, 4);
	uint8_t *a = rrc_pool_get(&p, p.size);
	assert_non_null(a);
	memset(a, 0xAB, 100);
	rrc_pool_put(&p, a, 100);
	assert_int_equal(p.n_free, 1);
	uint8_t *b = rrc_pool_get(&p, p.size);
	assert_ptr_equal(a, b); /* recycled */
	for (int i = 0; i < 100; i++)
		assert_int_equal(b[i], 0); /* and zeroed */
	assert_int_equal(p.n_free, 0);
	rrc_pool_put(&p, b, 100);
	rrc_pool_put(&p, NULL, 100);
	assert_int_equal(p.n_free, 1);
	rrc_pool_drain(&p);
	assert_int_equal(p.n_free, 0);
	assert_null(p.free_list);
}

static void test_keep_bound(void **state)
{
	struct rrc_pool p;
	rrc_pool_init(&p, 1, 3); /* smaller than a pointer: rounded up */
	assert_true(p.size >= sizeof(void *));
	void *objs[10];
	for (int i = 0; i < 10; i++)
		objs[i] = rrc_pool_get(&p, p.size);
	for (int i = 0; i < 10; i++)
		rrc_pool_put(&p, objs[i], p.size);
	assert_int_equal(p.n_free, 3); /* the other 7 went back to malloc */
	for (int i = 0; i < 3; i++) {
		objs[i] = rrc_pool_get(&p, p.size);
		assert_non_null(objs[i]);
	}
	assert_int_equal(p.n_free, 0);
	assert_null(p.free_list);
	for (int i = 0; i < 3; i++)
		free(objs[i]);
}

static void test_larger_objects_bypass(void **state)
{
	/* Objects larger than the pool's size come from malloc and go back to it. */
	struct rrc_pool p;
	rrc_pool_init(&p, 64, 4);
	uint8_t *big = rrc_pool_get(&p, 1000);
	assert_non_null(big);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(big[i], 0);
	memset(big, 0xCD, 1000);
	rrc_pool_put(&p, big, 1000);
	assert_int_equal(p.n_free, 0);
	/* A smaller request is served by a recycled object of the pool's size. */
	void *small = rrc_pool_get(&p, 10);
	rrc_pool_put(&p, small, 10);
	assert_int_equal(p.n_free, 1);
	rrc_pool_drain(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reuse_and_zero),
		cmocka_unit_test(test_keep_bound),
		cmocka_unit_test(test_larger_objects_bypass),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
