/*
 * cachefile: saved and loaded back with the TTLs aged by the time in between; expired entries
 * skipped; a truncated, damaged, foreign or other-version file refused whole; entries sealed
 * by another fleet refused one by one; a missing file, an unwritable place.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "corpus.h"
#include "rrcache/cachefile.h"

static const uint8_t name[] = {3,   'w', 'w', 'w', 7,	'e', 'x', 'a', 'm',
			       'p', 'l', 'e', 3,   'c', 'o', 'm', 0};
static const struct rrc_wire_ttl_policy pol = {
	.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
static const uint64_t W = 1700000000000ull; /* the wall clock at mono 0 */

static size_t make_key(uint8_t *key, uint8_t flags)
{
	memcpy(key, name, sizeof(name));
	rrc_put16(key + sizeof(name), 1);
	rrc_put16(key + sizeof(name) + 2, 1);
	key[sizeof(name) + 4] = flags;
	return sizeof(name) + 5;
}

/* A cache of 8 entries (one answer under 8 keys that differ in their flags octet). */
static struct rrc_cache *filled(uint32_t *ttl)
{
	struct rrc_cache *c = rrc_cache_create(1 << 20);
	uint8_t ans[512];
	struct rrc_wire_reply r;
	size_t n = corpus_load("reply_a", ans, sizeof(ans));
	assert_int_equal(rrc_wire_check_reply(ans, n, &r), 0);
	uint32_t life;
	size_t s = rrc_wire_make_stored(ans, n, &r, &pol, &life);
	*ttl = rrc_get32(ans + s - 10);
	for (uint8_t f = 0; f < 8; f++) {
		uint8_t key[RRC_WIRE_KEY_MAX];
		size_t kl = make_key(key, f);
		assert_int_equal(rrc_cache_insert(c, key, kl, ans, s, life, 1000), 0);
	}
	return c;
}

static char *tmp_path(void)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/rrc-test-cachefile-%ld", (long)getpid());
	return path;
}

static void test_roundtrip(void **state)
{
	struct rrc_l2_keys keys;
	rrc_l2_derive_keys("fleet", &keys);
	uint32_t ttl;
	struct rrc_cache *a = filled(&ttl);
	char err[RRC_ERR_LEN];
	const char *path = tmp_path();
	assert_int_equal(rrc_cachefile_save(a, path, &keys, 2000, W + 2000, err), 8);
	/* Nothing left beside it. */
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	assert_int_not_equal(access(tmp, F_OK), 0);

	struct rrc_cache *b = rrc_cache_create(1 << 20);
	struct rrc_cachefile_stats st;
	/* A new process: its own clock, 4 s later on the wall. */
	assert_int_equal(rrc_cachefile_load(b, path, &keys, &pol, 77000, W + 5000, &st, err), 0);
	assert_int_equal(st.loaded, 8);
	assert_int_equal(st.expired + st.refused, 0);
	for (uint8_t f = 0; f < 8; f++) {
		uint8_t key[RRC_WIRE_KEY_MAX], out[512];
		size_t kl = make_key(key, f), len;
		uint32_t age;
		assert_int_equal(
			rrc_cache_lookup(b, key, kl, 77000, out, sizeof(out), &len, &age, NULL),
			RRC_CACHE_HIT);
		assert_int_equal(rrc_get32(out + len - 10), ttl - 4); /* aged by 4 s */
	}
	rrc_cache_destroy(b);
	/* Loaded after every entry's expiry: nothing. */
	b = rrc_cache_create(1 << 20);
	assert_int_equal(
		rrc_cachefile_load(b, path, &keys, &pol, 0, W + 1000 + ttl * 1000ull + 1, &st, err),
		0);
	assert_int_equal(st.loaded, 0);
	assert_int_equal(st.expired, 8);
	rrc_cache_destroy(b);
	/* Another fleet's secret: every entry's seal is wrong. */
	struct rrc_l2_keys other;
	rrc_l2_derive_keys("other", &other);
	b = rrc_cache_create(1 << 20);
	assert_int_equal(rrc_cachefile_load(b, path, &other, &pol, 0, W + 5000, &st, err), 0);
	assert_int_equal(st.loaded, 0);
	assert_int_equal(st.refused, 8);
	rrc_cache_destroy(b);
	rrc_cache_destroy(a);
	unlink(path);
}

/* Enough entries for the load to go in parts on several threads (RRC_CACHEFILE_PART_MIN per
 * part, one part per CPU): all of them loaded, counted once, each found; an expired half is
 * counted in every part. */
static void test_load_in_parts(void **state)
{
	enum { N = 3 * RRC_CACHEFILE_PART_MIN + 7 };
	struct rrc_l2_keys keys;
	rrc_l2_derive_keys("", &keys);
	struct rrc_cache *a = rrc_cache_create(1ull << 30);
	uint8_t ans[512];
	struct rrc_wire_reply r;
	size_t n = corpus_load("reply_a", ans, sizeof(ans));
	assert_int_equal(rrc_wire_check_reply(ans, n, &r), 0);
	uint32_t life;
	size_t s = rrc_wire_make_stored(ans, n, &r, &pol, &life);
	/* Each entry its own name n<i>.example.com, its answer reply_a's with that name as
	 * the question. */
	for (unsigned i = 0; i < N; i++) {
		uint8_t key[RRC_WIRE_KEY_MAX], a2[512];
		char label[16];
		int ll = snprintf(label, sizeof(label), "n%u", i);
		size_t kl = 0;
		key[kl++] = (uint8_t)ll;
		memcpy(key + kl, label, (size_t)ll);
		kl += (size_t)ll;
		memcpy(key + kl, name + 4, sizeof(name) - 4); /* .example.com. */
		kl += sizeof(name) - 4;
		size_t qlen = kl;
		rrc_put16(key + kl, 1);
		rrc_put16(key + kl + 2, 1);
		key[kl + 4] = 0;
		kl += 5;
		/* The stored answer with this name as its question (answers point back to it). */
		memcpy(a2, ans, RRC_WIRE_HDR);
		memcpy(a2 + RRC_WIRE_HDR, key, qlen);
		memcpy(a2 + RRC_WIRE_HDR + qlen, ans + RRC_WIRE_HDR + sizeof(name),
		       s - RRC_WIRE_HDR - sizeof(name));
		size_t al = s - sizeof(name) + qlen;
		/* Half of them live 1 s only. */
		assert_int_equal(rrc_cache_insert(a, key, kl, a2, al, i % 2 ? 1 : life, 1000), 0);
	}
	char err[RRC_ERR_LEN];
	const char *path = tmp_path();
	assert_int_equal(rrc_cachefile_save(a, path, &keys, 1500, W + 1500, err), N);
	struct rrc_cache *b = rrc_cache_create(1ull << 30);
	struct rrc_cachefile_stats st;
	assert_int_equal(rrc_cachefile_load(b, path, &keys, &pol, 0, W + 3000, &st, err), 0);
	assert_int_equal(st.loaded, (N + 1) / 2);
	assert_int_equal(st.expired, N / 2);
	assert_int_equal(st.refused, 0);
	struct rrc_cache_stats cs;
	rrc_cache_get_stats(b, &cs);
	assert_int_equal(cs.entries, (N + 1) / 2);
	rrc_cache_destroy(b);
	rrc_cache_destroy(a);
	unlink(path);
}

static uint8_t *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static uint8_t buf[1 << 16];
	*len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	return buf;
}

static void test_refused_whole(void **state)
{
	struct rrc_l2_keys keys;
	rrc_l2_derive_keys("", &keys);
	uint32_t ttl;
	struct rrc_cache *a = filled(&ttl);
	char err[RRC_ERR_LEN];
	const char *path = tmp_path();
	assert_int_equal(rrc_cachefile_save(a, path, &keys, 2000, W + 2000, err), 8);
	size_t len;
	uint8_t *buf = read_all(path, &len);
	struct rrc_cache *b = rrc_cache_create(1 << 20);
	struct rrc_cachefile_stats st;
	/* Unsealed (no key_secret): ldns parses each one, and they pass. */
	assert_int_equal(rrc_cachefile_load_buf(b, buf, len, &keys, &pol, 0, W + 3000, &st, err),
			 0);
	assert_int_equal(st.loaded, 8);
	/* Truncated anywhere, one byte changed anywhere: refused whole. */
	for (size_t cut = 0; cut < len; cut += 7) {
		assert_int_equal(
			rrc_cachefile_load_buf(b, buf, cut, &keys, &pol, 0, W + 3000, &st, err),
			-EINVAL);
		assert_int_equal(st.loaded, 0);
	}
	for (size_t i = 0; i < len; i += 5) {
		if (i == 4)
			continue; /* the version: below */
		buf[i] ^= 0x20;
		assert_int_equal(
			rrc_cachefile_load_buf(b, buf, len, &keys, &pol, 0, W + 3000, &st, err),
			-EINVAL);
		buf[i] ^= 0x20;
	}
	buf[4] = 2;
	assert_int_equal(rrc_cachefile_load_buf(b, buf, len, &keys, &pol, 0, W + 3000, &st, err),
			 -EINVAL);
	assert_non_null(strstr(err, "version 2"));
	assert_int_equal(rrc_cachefile_load(b, "/nonexistent/cache", &keys, &pol, 0, W, &st, err),
			 -ENOENT);
	assert_true(rrc_cachefile_save(a, "/nonexistent/dir/cache", &keys, 2000, W, err) < 0);
	assert_non_null(strstr(err, "/nonexistent/dir/cache"));
	rrc_cache_destroy(a);
	rrc_cache_destroy(b);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_load_in_parts),
		cmocka_unit_test(test_refused_whole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
