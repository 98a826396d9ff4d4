/* Unit tests of the L1 cache: hits, full-key comparison, expiry, age, budget and eviction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rrcache/cache.h"

static void test_hit_miss_age(void **state)
{
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	assert_non_null(c);
	const uint8_t key[] = "\3www\7example\3com\0\0\1\0\1\4";
	const uint8_t ans[] = "answer bytes";
	uint8_t out[64];
	size_t len;
	uint32_t age;
	assert_int_equal(
		rrc_cache_lookup(c, key, sizeof(key), 1000, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_MISS);
	assert_int_equal(rrc_cache_insert(c, key, sizeof(key), ans, sizeof(ans), 300, 1000), 0);
	assert_int_equal(
		rrc_cache_lookup(c, key, sizeof(key), 3500, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_HIT);
	assert_int_equal(len, sizeof(ans));
	assert_memory_equal(out, ans, len);
	assert_int_equal(age, 2);
	/* Expired at 1000 + 300 s. */
	assert_int_equal(
		rrc_cache_lookup(c, key, sizeof(key), 301000, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_MISS);
	struct rrc_cache_stats st;
	rrc_cache_get_stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.expired, 1);
	rrc_cache_destroy(c);
}

static void test_full_key(void **state)
{
	/* C1: keys differing only in the flags octet are different entries. */
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	uint8_t k1[] = {1, 'a', 0, 0, 1, 0, 1, 0x04};
	uint8_t k2[] = {1, 'a', 0, 0, 1, 0, 1, 0x05};
	uint8_t out[16];
	size_t len;
	uint32_t age;
	rrc_cache_insert(c, k1, sizeof(k1), (const uint8_t *)"one", 3, 60, 0);
	assert_int_equal(rrc_cache_lookup(c, k2, sizeof(k2), 0, out, sizeof(out), &len, &age, NULL),
			 RRC_CACHE_MISS);
	rrc_cache_insert(c, k2, sizeof(k2), (const uint8_t *)"two", 3, 60, 0);
	assert_int_equal(rrc_cache_lookup(c, k1, sizeof(k1), 0, out, sizeof(out), &len, &age, NULL),
			 RRC_CACHE_HIT);
	assert_memory_equal(out, "one", 3);
	/* Replacing keeps one entry. */
	rrc_cache_insert(c, k1, sizeof(k1), (const uint8_t *)"uno", 3, 60, 0);
	struct rrc_cache_stats st;
	rrc_cache_get_stats(c, &st);
	assert_int_equal(st.entries, 2);
	assert_true(rrc_cache_remove(c, k1, sizeof(k1)));
	assert_false(rrc_cache_remove(c, k1, sizeof(k1)));
	rrc_cache_clear(c);
	rrc_cache_get_stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	rrc_cache_destroy(c);
}

static void test_too_big_prefix(void **state)
{
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	uint8_t k[] = {1, 'b', 0, 0, 16, 0, 1, 0};
	uint8_t ans[2000];
	for (size_t i = 0; i < sizeof(ans); i++)
		ans[i] = (uint8_t)i;
	rrc_cache_insert(c, k, sizeof(k), ans, sizeof(ans), 60, 0);
	uint8_t out[100];
	size_t len;
	uint32_t age;
	assert_int_equal(rrc_cache_lookup(c, k, sizeof(k), 0, out, sizeof(out), &len, &age, NULL),
			 RRC_CACHE_TOO_BIG);
	assert_int_equal(len, sizeof(ans));
	assert_memory_equal(out, ans, sizeof(out));
	rrc_cache_destroy(c);
}

static void test_budget(void **state)
{
	/* The byte budget holds however many names are inserted; old entries are evicted. */
	const uint64_t budget = 256 * 1024;
	struct rrc_cache *c = rrc_cache_create(budget);
	uint8_t ans[100] = {0};
	for (unsigned i = 0; i < 100000; i++) {
		char k[32];
		int n = snprintf(k, sizeof(k), "name-%u", i);
		assert_int_equal(
			rrc_cache_insert(c, (uint8_t *)k, (size_t)n, ans, sizeof(ans), 3600, 0), 0);
	}
	struct rrc_cache_stats st;
	rrc_cache_get_stats(c, &st);
	assert_true(st.bytes <= budget);
	assert_true(st.entries > 500);
	assert_int_equal(st.inserted, 100000);
	assert_int_equal(st.evicted, 100000 - st.entries);
	/* The newest name is still there, the oldest is gone. */
	uint8_t out[128];
	size_t len;
	uint32_t age;
	assert_int_equal(rrc_cache_lookup(c, (const uint8_t *)"name-99999", 10, 0, out, sizeof(out),
					  &len, &age, NULL),
			 RRC_CACHE_HIT);
	assert_int_equal(rrc_cache_lookup(c, (const uint8_t *)"name-0", 6, 0, out, sizeof(out),
					  &len, &age, NULL),
			 RRC_CACHE_MISS);
	/* Shrinking the budget applies on the next inserts. */
	rrc_cache_set_budget(c, budget / 4);
	for (unsigned i = 0; i < 10000; i++) {
		char k[32];
		int n = snprintf(k, sizeof(k), "again-%u", i);
		rrc_cache_insert(c, (uint8_t *)k, (size_t)n, ans, sizeof(ans), 3600, 0);
	}
	rrc_cache_get_stats(c, &st);
	assert_true(st.bytes <= budget / 4 + budget / RRC_CACHE_SHARDS);
	rrc_cache_destroy(c);
}

static void test_lru(void **state)
{
	/* A name that keeps getting hits survives a flood of new names. */
	struct rrc_cache *c = rrc_cache_create(64 * 1024);
	uint8_t ans[50] = {0}, out[64];
	size_t len;
	uint32_t age;
	rrc_cache_insert(c, (const uint8_t *)"hot", 3, ans, sizeof(ans), 3600, 0);
	for (unsigned i = 0; i < 20000; i++) {
		char k[32];
		int n = snprintf(k, sizeof(k), "cold-%u", i);
		rrc_cache_insert(c, (uint8_t *)k, (size_t)n, ans, sizeof(ans), 3600, 0);
		assert_int_equal(rrc_cache_lookup(c, (const uint8_t *)"hot", 3, 0, out, sizeof(out),
						  &len, &age, NULL),
				 RRC_CACHE_HIT);
	}
	rrc_cache_destroy(c);
}

static void test_stale_window(void **state)
{
	/* RFC 8767: with a stale window, an expired entry is reported STALE (a miss, with its
	 * data) until the window closes, then removed. */
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	rrc_cache_set_stale(c, 10);
	const uint8_t k[] = {1, 's', 0, 0, 1, 0, 1, 0};
	uint8_t out[16];
	size_t len;
	uint32_t age;
	rrc_cache_insert(c, k, sizeof(k), (const uint8_t *)"old", 3, 5, 0);
	assert_int_equal(
		rrc_cache_lookup(c, k, sizeof(k), 4999, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_HIT);
	memset(out, 0, sizeof(out));
	assert_int_equal(
		rrc_cache_lookup(c, k, sizeof(k), 5000, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_STALE);
	assert_memory_equal(out, "old", 3);
	assert_int_equal(age, 5);
	assert_int_equal(
		rrc_cache_lookup(c, k, sizeof(k), 14999, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_STALE);
	assert_int_equal(
		rrc_cache_lookup(c, k, sizeof(k), 15000, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_MISS);
	struct rrc_cache_stats st;
	rrc_cache_get_stats(c, &st);
	assert_int_equal(st.stale, 2);
	assert_int_equal(st.entries, 0);
	/* Without a window, expiry is the end. */
	rrc_cache_set_stale(c, 0);
	rrc_cache_insert(c, k, sizeof(k), (const uint8_t *)"new", 3, 5, 0);
	assert_int_equal(
		rrc_cache_lookup(c, k, sizeof(k), 5000, out, sizeof(out), &len, &age, NULL),
		RRC_CACHE_MISS);
	rrc_cache_destroy(c);
}

static void test_remove_name(void **state)
{
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	/* www.example.com A, AAAA, A with other flags; www.example.co (a prefix of the name) and
	 * example.com (a suffix) stay. */
	const uint8_t www[] = "\3www\7example\3com";
	uint8_t keys[5][32];
	size_t lens[5];
	const uint16_t types[] = {1, 28, 1};
	for (int i = 0; i < 3; i++) {
		memcpy(keys[i], www, sizeof(www));
		keys[i][sizeof(www)] = 0;
		keys[i][sizeof(www) + 1] = (uint8_t)types[i];
		keys[i][sizeof(www) + 2] = 0;
		keys[i][sizeof(www) + 3] = 1;
		keys[i][sizeof(www) + 4] = (uint8_t)i;
		lens[i] = sizeof(www) + 5;
	}
	memcpy(keys[3], "\3www\7example\2co\0\0\1\0\1\0", 21);
	lens[3] = 21;
	memcpy(keys[4], "\7example\3com\0\0\1\0\1\0", 18);
	lens[4] = 18;
	for (int i = 0; i < 5; i++)
		rrc_cache_insert(c, keys[i], lens[i], (const uint8_t *)"ans", 3, 60, 0);
	assert_int_equal(rrc_cache_remove_name(c, www, sizeof(www)), 3);
	uint8_t out[16];
	size_t len;
	uint32_t age;
	for (int i = 0; i < 5; i++)
		assert_int_equal(rrc_cache_lookup(c, keys[i], lens[i], 1000, out, sizeof(out), &len,
						  &age, NULL),
				 i < 3 ? RRC_CACHE_MISS : RRC_CACHE_HIT);
	rrc_cache_destroy(c);
}

static void test_siphash_vector(void **state)
{
	/* Keyed: another key gives another hash for the same data. */
	uint8_t k1[16] = {0}, k2[16] = {1};
	const uint8_t d[] = "example";
	assert_true(rrc_cache_siphash(k1, d, 7) != rrc_cache_siphash(k2, d, 7));
	assert_true(rrc_cache_siphash(k1, d, 7) == rrc_cache_siphash(k1, d, 7));
	assert_true(rrc_cache_siphash(k1, d, 7) != rrc_cache_siphash(k1, d, 6));
}

/* Prefetch: the lookup that finds an entry popular (3 hits in its life) within the last tenth
 * of its lifetime is told to refresh it, once; a new answer starts afresh; off, never. */
static void test_prefetch(void **state)
{
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	rrc_cache_set_prefetch(c, 3);
	const uint8_t key[] = "\3pop\7example\0\0\1\0\1\4";
	const uint8_t ans[] = "answer";
	uint8_t out[64];
	size_t len;
	uint32_t age;
	bool refresh = true;
	assert_int_equal(rrc_cache_insert(c, key, sizeof(key), ans, sizeof(ans), 100, 0), 0);
	for (uint64_t t = 1000; t <= 2000; t += 1000) {
		assert_int_equal(rrc_cache_lookup(c, key, sizeof(key), t, out, sizeof(out), &len,
						  &age, &refresh),
				 RRC_CACHE_HIT);
		assert_false(refresh);
	}
	/* 89.9 s: not yet the last tenth. */
	rrc_cache_lookup(c, key, sizeof(key), 89900, out, sizeof(out), &len, &age, &refresh);
	assert_false(refresh);
	/* 90 s: the last tenth, popular (the 4th hit): this lookup refreshes, the next not. */
	assert_int_equal(rrc_cache_lookup(c, key, sizeof(key), 90000, out, sizeof(out), &len, &age,
					  &refresh),
			 RRC_CACHE_HIT);
	assert_true(refresh);
	rrc_cache_lookup(c, key, sizeof(key), 95000, out, sizeof(out), &len, &age, &refresh);
	assert_false(refresh);
	/* The refreshed answer is a new entry: unpopular until asked again. */
	assert_int_equal(rrc_cache_insert(c, key, sizeof(key), ans, sizeof(ans), 100, 96000), 0);
	rrc_cache_lookup(c, key, sizeof(key), 187000, out, sizeof(out), &len, &age, &refresh);
	assert_false(refresh);
	/* A caller that cannot refresh (NULL) does not use the entry's one refresh up. */
	rrc_cache_lookup(c, key, sizeof(key), 187000, out, sizeof(out), &len, &age, NULL);
	rrc_cache_lookup(c, key, sizeof(key), 188000, out, sizeof(out), &len, &age, &refresh);
	assert_true(refresh);
	/* Off: never. */
	rrc_cache_set_prefetch(c, 0);
	assert_int_equal(rrc_cache_insert(c, key, sizeof(key), ans, sizeof(ans), 100, 200000), 0);
	for (uint64_t t = 200000; t < 300000; t += 5000) {
		rrc_cache_lookup(c, key, sizeof(key), t, out, sizeof(out), &len, &age, &refresh);
		assert_false(refresh);
	}
	rrc_cache_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hit_miss_age),
		cmocka_unit_test(test_full_key),
		cmocka_unit_test(test_prefetch),
		cmocka_unit_test(test_remove_name),
		cmocka_unit_test(test_too_big_prefix),
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_lru),
		cmocka_unit_test(test_siphash_vector),
		cmocka_unit_test(test_stale_window),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
