/* Unit tests of l2value: Redis keys, the value format, and the checks on values read back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "corpus.h"
#include "rrcache/l2value.h"

static const uint8_t name[] = {3,   'w', 'w', 'w', 7,	'e', 'x', 'a', 'm',
			       'p', 'l', 'e', 3,   'c', 'o', 'm', 0};

/* The L1 key of "www.example.com A IN" with a flags octet f. */
static size_t make_key(uint8_t *key, uint16_t type, uint8_t f)
{
	memcpy(key, name, sizeof(name));
	rrc_put16(key + sizeof(name), type);
	rrc_put16(key + sizeof(name) + 2, 1);
	key[sizeof(name) + 4] = f;
	return sizeof(name) + 5;
}

/* reply_a in stored form; its TTL is at the end (last record, 4 bytes of RDATA). */
static size_t stored_answer(uint8_t *buf, size_t cap, uint32_t *life)
{
	struct rrc_wire_reply r;
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	size_t n = corpus_load("reply_a", buf, cap);
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	size_t s = rrc_wire_make_stored(buf, n, &r, &pol, life);
	assert_true(s > 0 && *life > 0);
	return s;
}

static void test_keys(void **state)
{
	struct rrc_l2_keys k1, k2;
	rrc_l2_derive_keys("fleet secret", &k1);
	rrc_l2_derive_keys("other secret", &k2);
	uint8_t ka[RRC_WIRE_KEY_MAX], kaaaa[RRC_WIRE_KEY_MAX];
	size_t la = make_key(ka, 1, 0), laaaa = make_key(kaaaa, 28, 0);
	char a[RRC_L2_KEY_MAX], a2[RRC_L2_KEY_MAX], aaaa[RRC_L2_KEY_MAX], lock[RRC_L2_KEY_MAX];
	char other[RRC_L2_KEY_MAX];
	size_t n = rrc_l2_key(&k1, "p:", ka, la, 0, false, a);
	assert_int_equal(n, 2 + 16 + 1 + 16);
	assert_int_equal(strlen(a), n);
	assert_memory_equal(a, "p:", 2);
	assert_int_equal(a[18], ':');
	for (size_t i = 2; i < n; i++)
		assert_true(i == 18 || strchr("0123456789abcdef", a[i]));
	/* Deterministic across instances of the fleet (same secret). */
	rrc_l2_key(&k1, "p:", ka, la, 0, false, a2);
	assert_string_equal(a, a2);
	/* Same name, other type: same name part (a flush of the name finds both), other key. */
	rrc_l2_key(&k1, "p:", kaaaa, laaaa, 0, false, aaaa);
	assert_memory_equal(a, aaaa, 18);
	assert_string_not_equal(a, aaaa);
	char nh[17];
	rrc_l2_name_hash(&k1, name, sizeof(name), nh);
	assert_memory_equal(a + 2, nh, 16);
	/* The lock of a key, and another fleet's key. */
	rrc_l2_key(&k1, "p:", ka, la, 0, true, lock);
	assert_memory_equal(lock, "p:lock:", 7);
	assert_string_equal(lock + 7, a + 2);
	rrc_l2_key(&k2, "p:", ka, la, 0, false, other);
	assert_string_not_equal(a, other);
	/* Another upstream pool: the same name part, another key; its lock follows. */
	char pooled[RRC_L2_KEY_MAX], pooled_lock[RRC_L2_KEY_MAX];
	rrc_l2_key(&k1, "p:", ka, la, 0x1234, false, pooled);
	assert_memory_equal(a, pooled, 19);
	assert_string_not_equal(a, pooled);
	rrc_l2_key(&k1, "p:", ka, la, 0x1234, true, pooled_lock);
	assert_string_equal(pooled_lock + 7, pooled + 2);
}

/* Keys of a fleet without key_secret: seals are written but prove nothing. */
static struct rrc_l2_keys open_keys(void)
{
	struct rrc_l2_keys k;
	rrc_l2_derive_keys("", &k);
	assert_false(k.sealed);
	return k;
}

static void test_roundtrip_and_aging(void **state)
{
	struct rrc_l2_keys k = open_keys();
	uint8_t ans[512], val[1024], buf[1024];
	uint32_t life;
	size_t alen = stored_answer(ans, sizeof(ans), &life);
	uint32_t ttl = rrc_get32(ans + alen - 10);
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t klen = make_key(key, 1, 0x01);
	uint64_t t0 = 1700000000000ull;
	size_t vlen = rrc_l2_encode(val, sizeof(val), &k, key, klen, ans, alen, t0, 300);
	assert_int_equal(vlen, RRC_L2_HDR + klen + alen + RRC_L2_SEAL);
	assert_int_equal(rrc_l2_encode(val, vlen - 1, &k, key, klen, ans, alen, t0, 300), 0);

	struct rrc_l2_value v;
	assert_int_equal(rrc_l2_decode(val, vlen, &k, key, klen, t0 + 10500, &v), RRC_L2_FRESH);
	assert_int_equal(v.age, 10);
	assert_int_equal(v.remaining_ms, 289500);
	assert_int_equal(v.alen, alen);
	memcpy(buf, v.answer, v.alen);
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	uint32_t left;
	size_t n = rrc_l2_accept(buf, v.alen, key, klen, v.age, 289, &pol, &left);
	assert_int_equal(n, alen);
	/* TTLs aged by the time spent in Redis; the lifetime is capped by the value's expiry. */
	assert_int_equal(rrc_get32(buf + n - 10), ttl - 10);
	assert_int_equal(left, ttl - 10 < 289 ? ttl - 10 : 289);

	/* Past its expiry: a stale candidate, with how long ago it expired. */
	assert_int_equal(rrc_l2_decode(val, vlen, &k, key, klen, t0 + 301000, &v), RRC_L2_EXPIRED);
	assert_int_equal(v.expired_ms, 1000);
	assert_int_equal(v.remaining_ms, 0);
	/* Another question's value (here: the same name with other flags). */
	uint8_t key2[RRC_WIRE_KEY_MAX];
	size_t klen2 = make_key(key2, 1, 0x03);
	assert_int_equal(rrc_l2_decode(val, vlen, &k, key2, klen2, t0, &v), RRC_L2_OTHER_KEY);
}

static void test_malformed_values(void **state)
{
	struct rrc_l2_keys k = open_keys();
	uint8_t ans[512], val[1024], bad[1024];
	uint32_t life;
	size_t alen = stored_answer(ans, sizeof(ans), &life);
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t klen = make_key(key, 1, 0);
	uint64_t t0 = 1700000000000ull;
	size_t vlen = rrc_l2_encode(val, sizeof(val), &k, key, klen, ans, alen, t0, 300);
	struct rrc_l2_value v;
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};

	/* Every truncation is refused by the header check or by the answer's check. */
	for (size_t n = 0; n < vlen; n++) {
		enum rrc_l2_verdict vd = rrc_l2_decode(val, n, &k, key, klen, t0, &v);
		if (vd == RRC_L2_FRESH) {
			uint32_t left;
			memcpy(bad, v.answer, v.alen);
			assert_int_equal(rrc_l2_accept(bad, v.alen, key, klen, 0, 300, &pol, &left),
					 0);
		} else {
			assert_int_equal(vd, RRC_L2_MALFORMED);
		}
	}
	struct {
		size_t off;
		uint8_t byte;
	} flips[] = {{0, 'X'},	{4, 1},	    {4, 3},	{5, 1},
		     {6, 0xFF}, {16, 0x10}, {20, 0x7F}, {8, 0x7F}};
	for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
		memcpy(bad, val, vlen);
		bad[flips[i].off] = flips[i].byte;
		assert_int_equal(rrc_l2_decode(bad, vlen, &k, key, klen, t0, &v), RRC_L2_MALFORMED);
	}
	/* Random bytes never pass. */
	srand(7);
	for (int i = 0; i < 2000; i++) {
		size_t n = (size_t)(rand() % 200);
		for (size_t j = 0; j < n; j++)
			bad[j] = (uint8_t)rand();
		if (i % 2) /* with a valid header, so the answer checks are reached */
			memcpy(bad, val, RRC_L2_HDR + klen < n ? RRC_L2_HDR + klen : n);
		enum rrc_l2_verdict vd = rrc_l2_decode(bad, n, &k, key, klen, t0, &v);
		if (vd == RRC_L2_FRESH) {
			uint32_t left;
			uint8_t copy[256];
			memcpy(copy, v.answer, v.alen);
			size_t s = rrc_l2_accept(copy, v.alen, key, klen, 0, 300, &pol, &left);
			if (s)
				assert_true(left > 0 && left <= 300);
		}
	}
}

/* With a key_secret, a value sealed by the fleet decodes as sealed; one byte changed anywhere,
 * or a value sealed under another secret, is refused. Without one, the seal is not checked. */
static void test_seal(void **state)
{
	struct rrc_l2_keys fleet, other, open = open_keys();
	rrc_l2_derive_keys("fleet secret", &fleet);
	rrc_l2_derive_keys("other secret", &other);
	assert_true(fleet.sealed);
	uint8_t ans[512], val[1024], bad[1024];
	uint32_t life;
	size_t alen = stored_answer(ans, sizeof(ans), &life);
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t klen = make_key(key, 1, 0);
	uint64_t t0 = 1700000000000ull;
	size_t vlen = rrc_l2_encode(val, sizeof(val), &fleet, key, klen, ans, alen, t0, 300);
	struct rrc_l2_value v;
	assert_int_equal(rrc_l2_decode(val, vlen, &fleet, key, klen, t0, &v), RRC_L2_FRESH);
	assert_true(v.sealed);
	assert_int_equal(rrc_l2_decode(val, vlen, &other, key, klen, t0, &v), RRC_L2_MALFORMED);
	assert_int_equal(rrc_l2_decode(val, vlen, &open, key, klen, t0, &v), RRC_L2_FRESH);
	assert_false(v.sealed);
	for (size_t i = 0; i < vlen; i++) {
		memcpy(bad, val, vlen);
		bad[i] ^= 0x20;
		assert_int_equal(rrc_l2_decode(bad, vlen, &fleet, key, klen, t0, &v),
				 RRC_L2_MALFORMED);
	}
	/* An unsealed fleet's value is refused by a sealed one. */
	vlen = rrc_l2_encode(val, sizeof(val), &open, key, klen, ans, alen, t0, 300);
	assert_int_equal(rrc_l2_decode(val, vlen, &fleet, key, klen, t0, &v), RRC_L2_MALFORMED);
}

static void test_accept_refuses(void **state)
{
	uint8_t ans[512], buf[512];
	uint32_t life, left;
	size_t alen = stored_answer(ans, sizeof(ans), &life);
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t klen = make_key(key, 1, 0);
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};

	memcpy(buf, ans, alen);
	assert_int_equal(rrc_l2_accept(buf, alen, key, klen, 0, 300, &pol, &left), alen);
	/* For another type. */
	uint8_t kaaaa[RRC_WIRE_KEY_MAX];
	size_t laaaa = make_key(kaaaa, 28, 0);
	memcpy(buf, ans, alen);
	assert_int_equal(rrc_l2_accept(buf, alen, kaaaa, laaaa, 0, 300, &pol, &left), 0);
	/* For another name of the same length. */
	uint8_t kother[RRC_WIRE_KEY_MAX];
	size_t lother = make_key(kother, 1, 0);
	kother[1] = 'x';
	memcpy(buf, ans, alen);
	assert_int_equal(rrc_l2_accept(buf, alen, kother, lother, 0, 300, &pol, &left), 0);
	/* Truncated (TC=1) or not a response. */
	memcpy(buf, ans, alen);
	buf[2] |= 0x02;
	assert_int_equal(rrc_l2_accept(buf, alen, key, klen, 0, 300, &pol, &left), 0);
	memcpy(buf, ans, alen);
	buf[2] &= 0x7F;
	assert_int_equal(rrc_l2_accept(buf, alen, key, klen, 0, 300, &pol, &left), 0);
	/* A pointer loop in the answer. */
	memcpy(buf, ans, alen);
	size_t q_end = 12 + sizeof(name) + 4;
	rrc_put16(buf + q_end, (uint16_t)(0xC000 | q_end));
	assert_int_equal(rrc_l2_accept(buf, alen, key, klen, 0, 300, &pol, &left), 0);
	/* Aged past its TTLs, or no time left: nothing to store. */
	memcpy(buf, ans, alen);
	assert_int_equal(rrc_l2_accept(buf, alen, key, klen, 1000000, 300, &pol, &left), 0);
	memcpy(buf, ans, alen);
	assert_int_equal(rrc_l2_accept(buf, alen, key, klen, 0, 0, &pol, &left), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_roundtrip_and_aging),
		cmocka_unit_test(test_malformed_values),
		cmocka_unit_test(test_seal),
		cmocka_unit_test(test_accept_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
