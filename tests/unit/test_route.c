/*
 * route: the longest domain a name falls under, by whole labels; duplicates refused.
 */
#include "rrcache/msg.h"
#include "rrcache/route.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static int add(struct rrc_route *r, const char *text, uint16_t v)
{
	uint8_t w[256];
	size_t len;
	assert_int_equal(rrc_msg_name_from_text(text, w, &len), 0);
	return rrc_route_add(r, w, len, v);
}

static int find(const struct rrc_route *r, const char *text, unsigned *depth)
{
	uint8_t w[256];
	size_t len;
	assert_int_equal(rrc_msg_name_from_text(text, w, &len), 0);
	return rrc_route_find(r, w, len, depth);
}

static void test_longest_by_labels(void **state)
{
	struct rrc_route *r = rrc_route_create();
	assert_non_null(r);
	assert_int_equal(find(r, "a.corp.example", NULL), -1);
	assert_int_equal(add(r, "corp.example", 1), 0);
	assert_int_equal(add(r, "b.corp.example", 2), 0);
	assert_int_equal(add(r, "10.in-addr.arpa", 3), 0);
	assert_int_equal(add(r, "CORP.example.", 4), -EEXIST); /* the same name, any case */
	unsigned depth = 99;
	assert_int_equal(find(r, "corp.example", &depth), 1);
	assert_int_equal(depth, 0);
	assert_int_equal(find(r, "x.y.corp.example", &depth), 1);
	assert_int_equal(depth, 2);
	assert_int_equal(find(r, "b.corp.example", NULL), 2);
	assert_int_equal(find(r, "c.b.corp.example", NULL), 2);
	assert_int_equal(find(r, "xcorp.example", NULL), -1); /* whole labels only */
	assert_int_equal(find(r, "example", NULL), -1);
	assert_int_equal(find(r, "5.1.10.in-addr.arpa", NULL), 3);
	assert_int_equal(find(r, "5.1.11.in-addr.arpa", NULL), -1);
	assert_int_equal(rrc_route_count(r), 3);
	/* The root covers everything not covered by something longer. */
	assert_int_equal(add(r, ".", 7), 0);
	assert_int_equal(find(r, "www.example.org", NULL), 7);
	assert_int_equal(find(r, "x.corp.example", NULL), 1);
	/* A name that does not walk is refused. */
	const uint8_t bad[] = {3, 'a', 'b'};
	assert_int_equal(rrc_route_add(r, bad, sizeof(bad), 1), -EINVAL);
	rrc_route_destroy(r);
	assert_int_equal(rrc_route_find(NULL, (const uint8_t *)"", 1, NULL), -1);
}

/* Many names: the table grows and every one is found. */
static void test_many(void **state)
{
	struct rrc_route *r = rrc_route_create();
	char name[64];
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "d%d.example", i);
		assert_int_equal(add(r, name, (uint16_t)(i % 16)), 0);
	}
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "host.d%d.example", i);
		assert_int_equal(find(r, name, NULL), i % 16);
	}
	/* Past 16 top-level labels the filter lets every name through: all still found. */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "x.tld%dlonger", i);
		assert_int_equal(add(r, name, (uint16_t)i), 0);
	}
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "a.x.tld%dlonger", i);
		assert_int_equal(find(r, name, NULL), i);
	}
	assert_int_equal(find(r, "x.tld1longer2", NULL), -1);
	rrc_route_destroy(r);
	/* Labels alike in their first 8 bytes are told apart by the lookup itself. */
	r = rrc_route_create();
	assert_int_equal(add(r, "a.internal1", 1), 0);
	assert_int_equal(find(r, "a.internal2", NULL), -1);
	assert_int_equal(find(r, "b.a.internal1", NULL), 1);
	rrc_route_destroy(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_longest_by_labels),
		cmocka_unit_test(test_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
