/*
 * The cache-hit path allocates nothing: 100,000 hits through rrc_query_handle() (wire check,
 * ACL, key, L1 copy, patch) with every allocator call in the process counted.
 *
 * Counting: in the plain build this executable interposes malloc/calloc/realloc/free and
 * forwards to glibc; under AddressSanitizer (which owns the allocator) it installs the
 * sanitizer's allocation hooks instead.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "corpus.h"

#include "rrcache/cache.h"
#include "rrcache/env.h"
#include "rrcache/listener.h"
#include "rrcache/query.h"
#include "rrcache/upstream.h"

static atomic_long allocations;
static atomic_bool counting;

#if defined(__SANITIZE_ADDRESS__)
/* From the sanitizer runtime's allocator interface (the header ships with clang only). */
int __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
					      void (*f)(const volatile void *));
static void on_malloc(const volatile void *p, size_t n)
{
	if (atomic_load(&counting))
		atomic_fetch_add(&allocations, 1);
}
static void on_free(const volatile void *p)
{
}
static void install_counter(void)
{
	__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}
#else
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
void *malloc(size_t n);
void *calloc(size_t n, size_t m);
void *realloc(void *p, size_t n);
void free(void *p);
void *malloc(size_t n)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add(&allocations, 1);
	return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add(&allocations, 1);
	return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add(&allocations, 1);
	return __libc_realloc(p, n);
}
void free(void *p)
{
	__libc_free(p);
}
static void install_counter(void)
{
}
#endif

static void test_hits_allocate_nothing(void **state)
{
	install_counter();
	char err[RRC_ERR_LEN];
	struct rrc_config_overrides ov = {.upstream = {"192.0.2.1"},
					  .n_upstream = 1,
					  .listen = {"127.0.0.1:5300"},
					  .n_listen = 1};
	struct rrc_config *cfg = rrc_config_build(NULL, &ov, err);
	assert_non_null(cfg);
	struct rrc_cfg_ref *ref = rrc_cfg_ref_new(cfg, 0);
	assert_non_null(ref);

	/* A worker's environment, as the worker makes it, without its thread. */
	static uv_loop_t loop;
	static struct rrc_worker_stats st;
	static struct rrc_top top;
	assert_int_equal(uv_loop_init(&loop), 0);
	rrc_top_init(&top, cfg->stats.top_sample, 1);
	struct rrc_env env = {.loop = &loop,
			      .cfg = ref,
			      .cache = rrc_cache_create(1 << 20),
			      .st = &st,
			      .top = &top};
	assert_non_null(env.cache);
	struct rrc_upstreams *ups = rrc_upstreams_create(&env, err);
	assert_non_null(ups);
	struct rrc_queries *qs = rrc_queries_create(&env, ups, NULL);
	assert_non_null(qs);

	/* The answer for www.example.com A, stored under the key of the query. */
	uint8_t query[512], reply[512];
	size_t qlen = corpus_load("good_query", query, sizeof(query));
	size_t rlen = corpus_load("reply_a", reply, sizeof(reply));
	struct rrc_wire_query wq;
	enum rrc_wire_reason reason;
	assert_int_equal(rrc_wire_check_query(query, qlen, &wq, &reason), RRC_WIRE_OK);
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t klen = rrc_wire_key(query, &wq, key);
	struct rrc_wire_reply wr;
	assert_int_equal(rrc_wire_check_reply(reply, rlen, &wr), 0);
	struct rrc_wire_ttl_policy pol = {.max_ttl = 86400, .max_negative_ttl = 3600};
	uint32_t life;
	size_t slen = rrc_wire_make_stored(reply, rlen, &wr, &pol, &life);
	assert_int_equal(rrc_cache_insert(env.cache, key, klen, reply, slen, life, uv_now(&loop)),
			 0);

	/* A UDP client as the listener hands it over (a hit never uses its ops). */
	struct rrc_client client = {.tcp = false};
	client.peer.sin.sin_family = AF_INET;
	client.peer.sin.sin_port = htons(40000);
	inet_pton(AF_INET, "127.0.0.1", &client.peer.sin.sin_addr);
	client.peer.len = sizeof(client.peer.sin);
	static uint8_t out[RRC_UDP_SEND_MAX];

	/* The counter itself works: one allocation is seen as one. */
	atomic_store(&allocations, 0);
	atomic_store(&counting, true);
	void *volatile probe = malloc(24);
	atomic_store(&counting, false);
	assert_int_equal(atomic_load(&allocations), 1);
	free(probe);

	atomic_store(&allocations, 0);
	atomic_store(&counting, true);
	size_t total = 0;
	for (unsigned i = 0; i < 100000; i++) {
		rrc_put16(query, (uint16_t)i); /* a new ID each time */
		size_t n = rrc_query_handle(qs, &client, query, qlen, out, sizeof(out));
		if (n != slen || rrc_get16(out) != (uint16_t)i)
			break;
		total += n;
	}
	atomic_store(&counting, false);
	long counted = atomic_load(&allocations);

	assert_int_equal(total, 100000 * slen);
	assert_int_equal(st.cache_hits, 100000);
	assert_int_equal(st.upstream_queries, 0);
	assert_int_equal(st.rcode[RRC_RC_NOERROR], 100000);
	assert_int_equal(counted, 0);
	printf("100000 cache hits: %ld allocator calls\n", counted);

	rrc_queries_close(qs);
	rrc_upstreams_close(ups);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	rrc_queries_destroy(qs);
	rrc_cache_destroy(env.cache);
	rrc_cfg_ref_put(ref);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hits_allocate_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
