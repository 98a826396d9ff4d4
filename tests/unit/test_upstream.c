/*
 * upstream, alone on a real loop against fake servers on loopback: an attempt answered over
 * UDP and over TCP, a reply with another ID ignored (U1), a refused port as a failure,
 * timeouts marking a server down and probes bringing it back, and a shortage of descriptors
 * reported as such. Every test counts its callbacks and ends with every handle closed and
 * uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "loop_env.h"
#include "rrcache/upstream.h"

struct outcome {
	unsigned calls;
	bool ok;
	uint16_t id;
	struct rrc_attempt *a;
};

static void on_reply(void *ctx, struct rrc_attempt *a, uint8_t *pkt, size_t len,
		     const struct rrc_wire_reply *r)
{
	struct outcome *o = ctx;
	o->calls++;
	o->ok = pkt != NULL;
	o->a = a;
	if (pkt) {
		o->id = rrc_get16(pkt);
		assert_int_equal(r->qtype, 1);
		assert_int_equal(r->ancount, 1);
	}
}

static bool called(void *arg)
{
	return ((struct outcome *)arg)->calls > 0;
}

/* A set of one upstream, the fake f (started in mode), on t. */
static struct rrc_upstreams *setup(struct test_env *t, struct fake_dns *f, enum fake_mode mode)
{
	test_env_init(t, 1 << 20, 10000);
	fake_start(f, &t->loop, mode);
	test_env_config(t, test_config(&f->port, 1));
	char err[RRC_ERR_LEN];
	struct rrc_upstreams *u = rrc_upstreams_create(&t->env, err);
	assert_non_null(u);
	return u;
}

static void teardown(struct test_env *t, struct fake_dns *f, struct rrc_upstreams *u)
{
	rrc_upstreams_close(u);
	fake_stop(f);
	test_env_close(t);
	assert_int_equal(f->open, 0);
}

/* Sends one attempt, waits for its outcome, cancels it, and checks nothing else comes. */
static void attempt(struct test_env *t, struct rrc_upstreams *u, bool tcp, struct outcome *o)
{
	uint8_t q[512];
	size_t qlen = test_query("www.example.com", 0, q);
	struct rrc_attempt *a = rrc_upstream_send(u, 0, tcp, q, qlen, on_reply, o);
	assert_non_null(a);
	test_run_until(t, called, o);
	assert_ptr_equal(o->a, a);
	rrc_upstream_cancel(a);
	test_run_for(t, 30);
	assert_int_equal(o->calls, 1);
}

static void test_udp_attempt_answered(void **state)
{
	struct test_env t;
	struct fake_dns f;
	struct outcome o = {0};
	struct rrc_upstreams *u = setup(&t, &f, FAKE_ANSWER);
	attempt(&t, u, false, &o);
	assert_true(o.ok);
	assert_int_equal(f.udp_queries, 1);
	assert_int_equal(t.st.upstream_queries, 1);
	assert_int_equal(t.st.up[0].queries, 1);
	assert_int_equal(t.st.up[0].rtt.count, 1);
	assert_int_equal(t.st.up[0].outstanding, 0);
	assert_int_equal(t.st.unwanted_replies, 0);
	teardown(&t, &f, u);
}

static void test_tcp_attempt_answered(void **state)
{
	struct test_env t;
	struct fake_dns f;
	struct outcome o = {0};
	struct rrc_upstreams *u = setup(&t, &f, FAKE_ANSWER);
	attempt(&t, u, true, &o);
	assert_true(o.ok);
	assert_int_equal(f.tcp_queries, 1);
	assert_int_equal(f.udp_queries, 0);
	assert_int_equal(t.st.upstream_tcp, 1);
	teardown(&t, &f, u);
}

/* U1: a datagram with another ID is counted and ignored; the real reply still wins. */
static void test_reply_with_another_id_is_ignored(void **state)
{
	struct test_env t;
	struct fake_dns f;
	struct outcome o = {0};
	struct rrc_upstreams *u = setup(&t, &f, FAKE_WRONG_ID);
	attempt(&t, u, false, &o);
	assert_true(o.ok);
	assert_int_equal(t.st.unwanted_replies, 1);
	teardown(&t, &f, u);
}

/* Nothing listens on the port: the ICMP error fails the attempt at once (U5). */
static void test_refused_port_fails_the_attempt(void **state)
{
	struct test_env t;
	struct fake_dns f;
	struct outcome o = {0};
	struct rrc_upstreams *u = setup(&t, &f, FAKE_ANSWER);
	/* Reconfigure to a port where nothing listens (the fake's port plus one is taken by
	 * nothing we know of; a free port read back is safer). */
	test_cfg(&t)->upstreams[0].addr.sin.sin_port = htons(test_free_port(SOCK_DGRAM));
	assert_int_equal(rrc_upstreams_reconfigure(u), 0);
	attempt(&t, u, false, &o);
	assert_false(o.ok);
	assert_int_equal(t.st.upstream_errors, 1);
	assert_int_equal(t.st.up[0].errors, 1);
	teardown(&t, &f, u);
}

struct many {
	unsigned calls, ok;
};

static void on_many(void *ctx, struct rrc_attempt *a, uint8_t *pkt, size_t len,
		    const struct rrc_wire_reply *r)
{
	struct many *m = ctx;
	m->calls++;
	m->ok += pkt != NULL;
	rrc_upstream_cancel(a);
}

static bool all_called(void *arg)
{
	return ((struct many *)arg)->calls == 40;
}

/* 40 attempts share the pool's sockets; the refusal (ICMP port unreachable) that one socket
 * reports fails every attempt on it, each exactly once, and no socket is left open. */
static void test_refused_port_fails_every_attempt_on_the_socket(void **state)
{
	struct test_env t;
	struct fake_dns f;
	struct many m = {0};
	struct rrc_upstreams *u = setup(&t, &f, FAKE_ANSWER);
	test_cfg(&t)->upstreams[0].addr.sin.sin_port = htons(test_free_port(SOCK_DGRAM));
	test_cfg(&t)->max_failures = 1000; /* no probe */
	assert_int_equal(rrc_upstreams_reconfigure(u), 0);
	uint8_t q[512];
	size_t qlen = test_query("www.example.com", 0, q);
	for (int i = 0; i < 40; i++)
		assert_non_null(rrc_upstream_send(u, 0, false, q, qlen, on_many, &m));
	assert_true(t.st.upstream_sockets <= 8);
	test_run_until(&t, all_called, &m);
	test_run_for(&t, 30);
	assert_int_equal(m.calls, 40);
	assert_int_equal(m.ok, 0);
	assert_int_equal(t.st.upstream_errors, 40);
	assert_int_equal(t.st.upstream_sockets, 0);
	teardown(&t, &f, u);
}

static bool answered_40(void *arg)
{
	return ((struct many *)arg)->ok == 40;
}

/* Pooled: 40 attempts answered through at most upstream.sockets sockets, all still open for
 * more; strict (socket_reuse 1): one socket per attempt, each closed with its answer. */
static void test_sockets_are_pooled_or_strict(void **state)
{
	for (int strict = 0; strict < 2; strict++) {
		struct test_env t;
		struct fake_dns f;
		struct many m = {0};
		struct rrc_upstreams *u = setup(&t, &f, FAKE_ANSWER);
		test_cfg(&t)->upstream_sockets = 4;
		test_cfg(&t)->socket_reuse = strict ? 1 : 256;
		uint8_t q[512];
		size_t qlen = test_query("www.example.com", 0, q);
		for (int i = 0; i < 40; i++)
			assert_non_null(rrc_upstream_send(u, 0, false, q, qlen, on_many, &m));
		test_run_until(&t, answered_40, &m);
		assert_int_equal(f.udp_queries, 40);
		assert_int_equal(t.st.upstream_sockets_opened, strict ? 40 : 4);
		assert_int_equal(t.st.upstream_sockets, strict ? 0 : 4);
		assert_int_equal(t.st.unwanted_replies, 0);
		teardown(&t, &f, u);
		assert_int_equal(t.st.upstream_sockets, 0);
	}
}

static bool all_down(void *arg)
{
	return !rrc_upstreams_any_up(arg, 0);
}

static bool any_up(void *arg)
{
	return rrc_upstreams_any_up(arg, 0);
}

static struct rrc_config *probing_config(const uint16_t *port)
{
	struct rrc_config *cfg = test_config(port, 1);
	cfg->max_failures = 3;
	cfg->probe_interval_ms = 50;
	cfg->probe_successes = 2;
	cfg->upstream_timeout_ms = 100; /* a probe's patience */
	return cfg;
}

/* Times out one attempt for name: a failure as the query would report it. */
static void time_out(struct test_env *t, struct rrc_upstreams *u, const char *name,
		     struct outcome *o)
{
	uint8_t q[512];
	size_t qlen = test_query(name, 0, q);
	struct rrc_attempt *a = rrc_upstream_send(u, 0, false, q, qlen, on_reply, o);
	assert_non_null(a);
	/* Queries leave when the loop next turns. */
	uv_run(&t->loop, UV_RUN_NOWAIT);
	rrc_upstream_attempt_timeout(a);
	rrc_upstream_attempt_timeout(a); /* judged once */
	rrc_upstream_cancel(a);
}

/* max_failures timeouts in a row, with no answer in between, make the server suspect; its
 * probe (". NS") gets no answer either, and only then is it down. Probes bring it back after
 * probe_successes good answers, and are not counted as client queries. */
static void test_timeouts_mark_down_and_probes_bring_back(void **state)
{
	struct test_env t;
	struct fake_dns f;
	test_env_init(&t, 1 << 20, 10000);
	fake_start(&f, &t.loop, FAKE_SILENT);
	test_env_config(&t, probing_config(&f.port));
	char err[RRC_ERR_LEN];
	struct rrc_upstreams *u = rrc_upstreams_create(&t.env, err);
	assert_non_null(u);
	struct outcome o = {0};
	for (int i = 0; i < 3; i++) {
		assert_true(rrc_upstreams_any_up(u, 0));
		time_out(&t, u, "www.example.com", &o);
	}
	/* Suspect, not down: its probe decides. */
	assert_true(rrc_upstreams_any_up(u, 0));
	test_run_until(&t, all_down, u);
	assert_true(f.udp_queries >= 4);
	assert_int_equal(rrc_upstreams_pick(u, 0, 0), -1);
	assert_int_equal(t.st.upstream_timeouts, 3);
	assert_int_equal(t.st.up[0].timeouts, 3);
	assert_int_equal(t.st.up[0].up, 0);
	/* Silent probes keep it down. */
	test_run_for(&t, 200);
	assert_true(all_down(u));
	unsigned probes = f.udp_queries - 3;
	assert_true(probes >= 2);
	/* It answers again: two good probes and it is up. */
	f.mode = FAKE_ANSWER;
	test_run_until(&t, any_up, u);
	assert_int_equal(rrc_upstreams_pick(u, 0, 0), 0);
	assert_int_equal(t.st.up[0].up, 1);
	assert_int_equal(t.st.upstream_queries, 3); /* probes are not client queries */
	assert_int_equal(o.calls, 0);
	teardown(&t, &f, u);
}

/* A set of one upstream, the fake f, which answers every name but black.hole, with probes
 * judged after 100 ms. */
static struct rrc_upstreams *setup_black_hole(struct test_env *t, struct fake_dns *f)
{
	test_env_init(t, 1 << 20, 10000);
	fake_start(f, &t->loop, FAKE_ANSWER);
	f->silent_len = test_wire_name("black.hole", f->silent_name);
	test_env_config(t, probing_config(&f->port));
	char err[RRC_ERR_LEN];
	struct rrc_upstreams *u = rrc_upstreams_create(&t->env, err);
	assert_non_null(u);
	return u;
}

/* A server that answers other names is alive: the timeouts of one name do not count against
 * it, however many (a client repeating an unresolvable name used to take a server down). */
static void test_failures_of_one_name_do_not_count(void **state)
{
	struct test_env t;
	struct fake_dns f;
	struct rrc_upstreams *u = setup_black_hole(&t, &f);
	/* The attempts for black.hole leave, then another name is answered, then they fail. */
	uint8_t q[512];
	size_t qlen = test_query("black.hole", 0, q);
	struct outcome lost = {0};
	struct rrc_attempt *pending[10];
	for (int i = 0; i < 10; i++)
		pending[i] = rrc_upstream_send(u, 0, false, q, qlen, on_reply, &lost);
	struct outcome o = {0};
	attempt(&t, u, false, &o);
	assert_true(o.ok);
	for (int i = 0; i < 10; i++) {
		rrc_upstream_attempt_timeout(pending[i]);
		rrc_upstream_cancel(pending[i]);
	}
	assert_int_equal(t.st.upstream_timeouts, 10);
	test_run_for(&t, 300);
	assert_true(rrc_upstreams_any_up(u, 0));
	assert_int_equal(f.udp_queries, 11); /* no probe was needed */
	teardown(&t, &f, u);
}

/* Failures in a row with no answer between make it suspect; a probe that is answered keeps
 * it up (a name nobody answers, asked often, can no longer take a server down). */
static void test_suspect_server_answering_its_probe_stays_up(void **state)
{
	struct test_env t;
	struct fake_dns f;
	struct rrc_upstreams *u = setup_black_hole(&t, &f);
	struct outcome o = {0};
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 3; i++)
			time_out(&t, u, "black.hole", &o);
		test_run_for(&t, 150); /* the probe is answered */
		assert_true(rrc_upstreams_any_up(u, 0));
	}
	assert_int_equal(f.udp_queries, 9 + 3); /* three probes, one a round */
	assert_int_equal(t.st.upstream_queries, 9);
	assert_int_equal(o.calls, 0);
	teardown(&t, &f, u);
}

/* A reload keeps a server's health and counters when its address stays. */
static void test_reconfigure_keeps_counters(void **state)
{
	struct test_env t;
	struct fake_dns f, g;
	test_env_init(&t, 1 << 20, 10000);
	fake_start(&f, &t.loop, FAKE_ANSWER);
	fake_start(&g, &t.loop, FAKE_ANSWER);
	test_env_config(&t, test_config(&f.port, 1));
	char err[RRC_ERR_LEN];
	struct rrc_upstreams *u = rrc_upstreams_create(&t.env, err);
	assert_non_null(u);
	struct outcome o = {0};
	attempt(&t, u, false, &o);
	assert_int_equal(t.st.up[0].queries, 1);
	/* The worker swaps the configuration, then tells the set: g first, f second. */
	struct rrc_cfg_ref *old = t.env.cfg;
	uint16_t ports[2] = {g.port, f.port};
	test_env_config(&t, test_config(ports, 2));
	assert_int_equal(rrc_upstreams_reconfigure(u), 0);
	rrc_cfg_ref_put(old);
	assert_int_equal(rrc_upstreams_count(u), 2);
	assert_int_equal(t.st.up[0].queries, 0);
	assert_int_equal(t.st.up[1].queries, 1);
	rrc_upstreams_close(u);
	fake_stop(&g);
	fake_stop(&f);
	test_env_close(&t);
}

/* Out of descriptors, the set cannot watch its sockets: the reason says so (it used to be
 * reported as a lack of memory). */
static void test_descriptor_shortage_is_reported(void **state)
{
	struct test_env t;
	test_env_init(&t, 1 << 20, 10000);
	test_env_config(&t, test_config(&(uint16_t){5300}, 1));
	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	/* No descriptor above the ones open now. */
	int probe = dup(0);
	assert_true(probe >= 0);
	close(probe);
	low = old;
	low.rlim_cur = (rlim_t)probe;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	char err[RRC_ERR_LEN] = "";
	struct rrc_upstreams *u = rrc_upstreams_create(&t.env, err);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_null(u);
	assert_non_null(strstr(err, "too many open files"));
	test_env_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_udp_attempt_answered),
		cmocka_unit_test(test_tcp_attempt_answered),
		cmocka_unit_test(test_reply_with_another_id_is_ignored),
		cmocka_unit_test(test_refused_port_fails_the_attempt),
		cmocka_unit_test(test_refused_port_fails_every_attempt_on_the_socket),
		cmocka_unit_test(test_sockets_are_pooled_or_strict),
		cmocka_unit_test(test_timeouts_mark_down_and_probes_bring_back),
		cmocka_unit_test(test_failures_of_one_name_do_not_count),
		cmocka_unit_test(test_suspect_server_answering_its_probe_stays_up),
		cmocka_unit_test(test_reconfigure_keeps_counters),
		cmocka_unit_test(test_descriptor_shortage_is_reported),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
