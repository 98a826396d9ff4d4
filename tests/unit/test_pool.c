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
	uint8_t *a = rrc_pool_get(&p);
	assert_non_null(a);
	memset(a, 0xAB, 100);
	rrc_pool_put(&p, a);
	assert_int_equal(p.n_free, 1);
	uint8_t *b = rrc_pool_get(&p);
	assert_ptr_equal(a, b); /* recycled */
	for (int i = 0; i < 100; i++)
		assert_int_equal(b[i], 0); /* and zeroed */
	assert_int_equal(p.n_free, 0);
	rrc_pool_put(&p, b);
	rrc_pool_put(&p, NULL);
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
		objs[i] = rrc_pool_get(&p);
	for (int i = 0; i < 10; i++)
		rrc_pool_put(&p, objs[i]);
	assert_int_equal(p.n_free, 3); /* the other 7 went back to malloc */
	for (int i = 0; i < 3; i++) {
		objs[i] = rrc_pool_get(&p);
		assert_non_null(objs[i]);
	}
	assert_int_equal(p.n_free, 0);
	assert_null(p.free_list);
	for (int i = 0; i < 3; i++)
		free(objs[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reuse_and_zero),
		cmocka_unit_test(test_keep_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
