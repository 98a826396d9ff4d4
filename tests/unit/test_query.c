/*
 * query, alone on a real loop with upstreams against fake servers on loopback and clients
 * whose transport is this test (struct rrc_client ops that record what they are given):
 * a miss then a hit, coalescing of identical questions (U3), the budget ending in SERVFAIL
 * (U6), a silent server replaced while its attempt stays open and the first valid reply wins,
 * the TCP fallback after TC=1 (U4), the in-flight limit, an answer the cache cannot take
 * (counted), and shutdown's abort. Every held client is released exactly once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loop_env.h"
#include "rrcache/query.h"
#include "rrcache/upstream.h"

/* ---- a transport of the test's ---- */

struct fake_client {
	unsigned holds, sends, releases;
	size_t len;
	uint8_t last[2048];
};

static void fc_hold(struct rrc_client *c)
{
	((struct fake_client *)c->conn)->holds++;
}

static void fc_send(struct rrc_client *c, const uint8_t *msg, size_t len)
{
	struct fake_client *fc = c->conn;
	assert_true(len <= sizeof(fc->last));
	assert_int_equal(fc->releases, fc->holds - 1); /* sent while held */
	fc->sends++;
	fc->len = len;
	memcpy(fc->last, msg, len);
}

static void fc_release(struct rrc_client *c)
{
	((struct fake_client *)c->conn)->releases++;
}

static const struct rrc_client_ops fc_ops = {
	.hold = fc_hold, .send = fc_send, .release = fc_release};

static struct rrc_client client_of(struct fake_client *fc)
{
	struct rrc_client c = {.ops = &fc_ops, .conn = fc, .start_us = uv_hrtime() / 1000};
	c.peer.sin.sin_family = AF_INET;
	c.peer.sin.sin_port = htons(40000);
	c.peer.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c.peer.len = sizeof(c.peer.sin);
	return c;
}

static bool answered(void *arg)
{
	return ((struct fake_client *)arg)->sends > 0;
}

/* ---- set-up ---- */

struct fixture {
	struct test_env t;
	struct fake_dns f[2];
	unsigned n_fakes;
	struct rrc_upstreams *ups;
	struct rrc_queries *qs;
};

/* n fakes in the given modes; adjust(cfg) may change the configuration before use. */
static void setup(struct fixture *x, unsigned n, const enum fake_mode *modes, uint64_t cache,
		  void (*adjust)(struct rrc_config *))
{
	memset(x, 0, sizeof(*x));
	test_env_init(&x->t, cache, 10000);
	uint16_t ports[2];
	for (unsigned i = 0; i < n; i++) {
		fake_start(&x->f[i], &x->t.loop, modes[i]);
		ports[i] = x->f[i].port;
	}
	x->n_fakes = n;
	struct rrc_config *cfg = test_config(ports, n);
	cfg->balance = RRC_POLICY_FIRST_AVAILABLE; /* the first server first: deterministic */
	if (adjust)
		adjust(cfg);
	test_env_config(&x->t, cfg);
	char err[RRC_ERR_LEN];
	x->ups = rrc_upstreams_create(&x->t.env, err);
	assert_non_null(x->ups);
	x->qs = rrc_queries_create(&x->t.env, x->ups, NULL);
	assert_non_null(x->qs);
}

static void teardown(struct fixture *x)
{
	assert_int_equal(rrc_queries_inflight(x->qs), 0);
	rrc_queries_abort_all(x->qs);
	rrc_queries_close(x->qs);
	rrc_upstreams_close(x->ups);
	for (unsigned i = 0; i < x->n_fakes; i++)
		fake_stop(&x->f[i]);
	test_env_close(&x->t);
	rrc_queries_destroy(x->qs);
}

/* Hands a query for name with id from fc; returns what is answered now (0: later). */
static size_t ask(struct fixture *x, struct fake_client *fc, const char *name, uint16_t id,
		  uint8_t *out, size_t cap)
{
	uint8_t q[512];
	size_t qlen = test_query(name, id, q);
	struct rrc_client c = client_of(fc);
	return rrc_query_handle(x->qs, &c, q, qlen, out, cap);
}

static unsigned rcode_of(const uint8_t *m)
{
	return m[3] & 0x0F;
}

/* ---- tests ---- */

static void test_miss_then_hit(void **state)
{
	struct fixture x;
	setup(&x, 1, (enum fake_mode[]){FAKE_ANSWER}, 1 << 20, NULL);
	struct fake_client a = {0}, b = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &a, "www.example.com", 0x1111, out, sizeof(out)), 0);
	assert_int_equal(rrc_queries_inflight(x.qs), 1);
	test_run_until(&x.t, answered, &a);
	assert_int_equal(rrc_get16(a.last), 0x1111);
	assert_int_equal(rcode_of(a.last), RRC_RCODE_NOERROR);
	assert_int_equal(rrc_get16(a.last + 6), 1);
	assert_true(a.holds == 1 && a.releases == 1 && a.sends == 1);
	assert_int_equal(rrc_queries_inflight(x.qs), 0);
	/* Now a hit: answered at once, with this client's ID, nothing held. */
	size_t n = ask(&x, &b, "WWW.example.com", 0x2222, out, sizeof(out));
	assert_true(n > 12);
	assert_int_equal(rrc_get16(out), 0x2222);
	assert_memory_equal(out + 13, "WWW", 3); /* the client's own case (C6) */
	assert_int_equal(b.holds, 0);
	assert_int_equal(x.t.st.cache_hits, 1);
	assert_int_equal(x.t.st.cache_misses, 1);
	assert_int_equal(x.t.st.rcode[RRC_RC_NOERROR], 2); /* both answers accounted */
	assert_int_equal(x.f[0].udp_queries, 1);
	teardown(&x);
}

static bool both_answered(void *arg)
{
	struct fake_client *c = arg;
	return c[0].sends && c[1].sends;
}

/* U3: identical questions in flight make one upstream query; each asker gets its own ID. */
static void test_coalescing(void **state)
{
	struct fixture x;
	setup(&x, 1, (enum fake_mode[]){FAKE_LATE}, 1 << 20, NULL);
	x.f[0].delay_ms = 50;
	struct fake_client c[2] = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &c[0], "same.example", 1, out, sizeof(out)), 0);
	assert_int_equal(ask(&x, &c[1], "same.example", 2, out, sizeof(out)), 0);
	assert_int_equal(rrc_queries_inflight(x.qs), 1);
	test_run_until(&x.t, both_answered, c);
	assert_int_equal(x.f[0].udp_queries, 1);
	assert_int_equal(x.t.st.coalesced, 1);
	assert_int_equal(rrc_get16(c[0].last), 1);
	assert_int_equal(rrc_get16(c[1].last), 2);
	for (int i = 0; i < 2; i++)
		assert_true(c[i].holds == 1 && c[i].releases == 1 && c[i].sends == 1);
	teardown(&x);
}

static void short_budget(struct rrc_config *cfg)
{
	cfg->upstream_timeout_ms = 100;
	cfg->client_timeout_ms = 350;
	cfg->max_failures = 100; /* keep both servers up */
}

/* U6: silence everywhere ends in SERVFAIL when the budget runs out; meanwhile every retry
 * went to another server. */
static void test_budget_ends_in_servfail(void **state)
{
	struct fixture x;
	setup(&x, 2, (enum fake_mode[]){FAKE_SILENT, FAKE_SILENT}, 1 << 20, short_budget);
	struct fake_client c = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &c, "silent.example", 7, out, sizeof(out)), 0);
	test_run_until(&x.t, answered, &c);
	assert_int_equal(rcode_of(c.last), RRC_RCODE_SERVFAIL);
	assert_int_equal(rrc_get16(c.last), 7);
	assert_true(x.f[0].udp_queries >= 1 && x.f[1].udp_queries >= 1);
	assert_true(x.t.st.upstream_timeouts >= 2);
	assert_int_equal(x.t.st.servfail, 1);
	assert_int_equal(x.t.st.rcode[RRC_RC_SERVFAIL], 1);
	assert_true(c.holds == 1 && c.releases == 1);
	/* The failure is remembered for the name (cache.servfail_ttl, RFC 2308 §7.1): asked
	 * again, it is answered at once, from the cache, and nobody upstream is asked. */
	unsigned asked = x.f[0].udp_queries + x.f[1].udp_queries;
	struct fake_client again = {0};
	size_t n = ask(&x, &again, "SILENT.example", 8, out, sizeof(out));
	assert_true(n > 12);
	assert_int_equal(rcode_of(out), RRC_RCODE_SERVFAIL);
	assert_int_equal(rrc_get16(out), 8);
	assert_memory_equal(out + 13, "SILENT", 6);
	assert_int_equal(again.holds, 0);
	test_run_for(&x.t, 20);
	assert_int_equal(x.f[0].udp_queries + x.f[1].udp_queries, asked);
	/* Another name is asked as usual. */
	assert_int_equal(ask(&x, &again, "other.example", 9, out, sizeof(out)), 0);
	test_run_until(&x.t, answered, &again);
	teardown(&x);
}

/* U6: a slow first server is replaced after upstream.timeout, its attempt stays open, and the
 * first valid reply (the second server's) wins; the first's late reply changes nothing. */
static void test_retry_first_valid_reply_wins(void **state)
{
	struct fixture x;
	setup(&x, 2, (enum fake_mode[]){FAKE_LATE, FAKE_ANSWER}, 1 << 20, short_budget);
	x.f[0].delay_ms = 200;
	struct fake_client c = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &c, "slow.example", 9, out, sizeof(out)), 0);
	test_run_until(&x.t, answered, &c);
	assert_int_equal(rcode_of(c.last), RRC_RCODE_NOERROR);
	assert_int_equal(x.f[0].udp_queries, 1);
	assert_int_equal(x.f[1].udp_queries, 1);
	assert_int_equal(x.t.st.up[0].timeouts, 1);
	test_run_for(&x.t, 250); /* the late reply comes and goes */
	assert_int_equal(c.sends, 1);
	assert_true(c.holds == 1 && c.releases == 1);
	teardown(&x);
}

/* U4: a TC=1 reply is never the answer; the question is asked again over TCP. */
static void test_truncated_reply_falls_back_to_tcp(void **state)
{
	struct fixture x;
	setup(&x, 1, (enum fake_mode[]){FAKE_TC}, 1 << 20, NULL);
	struct fake_client c = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &c, "big.example", 3, out, sizeof(out)), 0);
	test_run_until(&x.t, answered, &c);
	assert_int_equal(rcode_of(c.last), RRC_RCODE_NOERROR);
	assert_int_equal(rrc_get16(c.last + 2) & RRC_F_TC, 0);
	assert_int_equal(rrc_get16(c.last + 6), 1);
	assert_int_equal(x.f[0].udp_queries, 1);
	assert_int_equal(x.f[0].tcp_queries, 1);
	assert_int_equal(x.t.st.upstream_tcp, 1);
	teardown(&x);
}

static void two_waiters(struct rrc_config *cfg)
{
	cfg->max_waiters_per_query = 2;
}

/* upstream.max_waiters_per_query: a third client for one question in flight is answered
 * SERVFAIL at once (counted); the first two get the answer. */
static void test_waiters_are_bounded(void **state)
{
	struct fixture x;
	setup(&x, 1, (enum fake_mode[]){FAKE_LATE}, 1 << 20, two_waiters);
	x.f[0].delay_ms = 30;
	struct fake_client c[3] = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &c[0], "popular.example", 1, out, sizeof(out)), 0);
	assert_int_equal(ask(&x, &c[1], "popular.example", 2, out, sizeof(out)), 0);
	size_t n = ask(&x, &c[2], "popular.example", 3, out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal(rcode_of(out), RRC_RCODE_SERVFAIL);
	assert_int_equal(x.t.st.waiters_refused, 1);
	assert_int_equal(c[2].holds, 0);
	test_run_until(&x.t, both_answered, c);
	assert_int_equal(rcode_of(c[0].last), RRC_RCODE_NOERROR);
	assert_int_equal(x.f[0].udp_queries, 1);
	teardown(&x);
}

static void one_in_flight(struct rrc_config *cfg)
{
	cfg->max_inflight = 1;
}

/* upstream.max_inflight: a miss beyond it is answered SERVFAIL at once, and counted. */
static void test_inflight_limit(void **state)
{
	struct fixture x;
	setup(&x, 1, (enum fake_mode[]){FAKE_LATE}, 1 << 20, one_in_flight);
	x.f[0].delay_ms = 30;
	struct fake_client a = {0}, b = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &a, "one.example", 1, out, sizeof(out)), 0);
	size_t n = ask(&x, &b, "two.example", 2, out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal(rcode_of(out), RRC_RCODE_SERVFAIL);
	assert_int_equal(x.t.st.inflight_limit, 1);
	assert_int_equal(b.holds, 0);
	test_run_until(&x.t, answered, &a);
	teardown(&x);
}

/* An answer L1 cannot take (larger than a shard's budget) is still given, and counted. */
static void test_cache_insert_failure_is_counted(void **state)
{
	struct fixture x;
	setup(&x, 1, (enum fake_mode[]){FAKE_ANSWER}, 1024, NULL); /* 16 bytes a shard */
	for (int i = 0; i < 2; i++) {
		struct fake_client c = {0};
		uint8_t out[1232];
		assert_int_equal(ask(&x, &c, "nocache.example", 5, out, sizeof(out)), 0);
		test_run_until(&x.t, answered, &c);
		assert_int_equal(rcode_of(c.last), RRC_RCODE_NOERROR);
	}
	assert_int_equal(x.t.st.cache_insert_failures, 2);
	assert_int_equal(x.f[0].udp_queries, 2);
	teardown(&x);
}

/* Shutdown: every query in flight is answered SERVFAIL and its clients released. */
static void test_abort_all(void **state)
{
	struct fixture x;
	setup(&x, 1, (enum fake_mode[]){FAKE_SILENT}, 1 << 20, NULL);
	struct fake_client c[2] = {0};
	uint8_t out[1232];
	assert_int_equal(ask(&x, &c[0], "a.example", 1, out, sizeof(out)), 0);
	assert_int_equal(ask(&x, &c[1], "b.example", 2, out, sizeof(out)), 0);
	assert_int_equal(rrc_queries_inflight(x.qs), 2);
	rrc_queries_abort_all(x.qs);
	assert_int_equal(rrc_queries_inflight(x.qs), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rcode_of(c[i].last), RRC_RCODE_SERVFAIL);
		assert_true(c[i].holds == 1 && c[i].sends == 1 && c[i].releases == 1);
	}
	teardown(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_miss_then_hit),
		cmocka_unit_test(test_coalescing),
		cmocka_unit_test(test_budget_ends_in_servfail),
		cmocka_unit_test(test_retry_first_valid_reply_wins),
		cmocka_unit_test(test_truncated_reply_falls_back_to_tcp),
		cmocka_unit_test(test_inflight_limit),
		cmocka_unit_test(test_waiters_are_bounded),
		cmocka_unit_test(test_cache_insert_failure_is_counted),
		cmocka_unit_test(test_abort_all),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
