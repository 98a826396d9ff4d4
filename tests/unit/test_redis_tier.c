/*
 * redis_tier, alone on a real loop against a fake Redis (RESP over loopback TCP, driven by
 * the same loop): a hit, a miss that takes the fleet lock and one that finds it taken, the
 * deadline of a lookup Redis does not answer, a reply that comes after its deadline (dropped,
 * told to nobody), and the breaker opening after redis.max_failures timeouts and closing once
 * Redis answers again. Every callback is counted; the loop closes cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <cmocka.h>

#include "loop_env.h"
#include "rrcache/l2value.h"
#include "rrcache/redis_tier.h"

/* ---- a fake Redis ---- */

enum redis_mode {
	R_NIL,	  /* GET: nil; SET NX (the lock): OK; SET: OK */
	R_LOCKED, /* GET: nil; SET NX: nil (another instance holds the lock) */
	R_VALUE,  /* GET: the value given */
	R_SILENT, /* nothing */
	R_LATE,	  /* GET: nil, after delay_ms */
};

struct fake_redis {
	enum redis_mode mode;
	unsigned delay_ms;
	uint16_t port;
	uv_tcp_t server;
	uv_loop_t *loop;
	unsigned commands, gets, connections;
	size_t vlen;
	uint8_t value[2048];
};

struct rconn {
	uv_tcp_t h;
	struct fake_redis *r;
	size_t len;
	uint8_t buf[8192];
};

struct late_write {
	uv_timer_t t;
	struct rconn *c;
	const char *text;
};

static void on_rwritten(uv_write_t *w, int status)
{
	free(w);
}

static void rsend(struct rconn *c, const void *data, size_t len)
{
	if (uv_is_closing((uv_handle_t *)&c->h))
		return;
	uv_write_t *w = malloc(sizeof(*w) + len);
	memcpy(w + 1, data, len);
	uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)len);
	uv_write(w, (uv_stream_t *)&c->h, &b, 1, on_rwritten);
}

static void on_late_closed(uv_handle_t *h)
{
	free(h);
}

static void on_late(uv_timer_t *t)
{
	struct late_write *l = (struct late_write *)t;
	rsend(l->c, l->text, strlen(l->text));
	uv_close((uv_handle_t *)t, on_late_closed);
}

/* One RESP command (an array of bulk strings) at the start of c's buffer: its arguments.
 * Returns its length in bytes, 0 when incomplete. */
static size_t parse_command(const uint8_t *p, size_t len, const uint8_t **argv, size_t *argl,
			    int *argc)
{
	const uint8_t *end = p + len, *q = p;
	if (len < 4 || *q != '*')
		return 0;
	int n = (int)strtol((const char *)q + 1, NULL, 10);
	q = memchr(q, '\n', (size_t)(end - q));
	if (!q++)
		return 0;
	for (int i = 0; i < n; i++) {
		if (q >= end || *q != '$')
			return 0;
		size_t l = (size_t)strtol((const char *)q + 1, NULL, 10);
		q = memchr(q, '\n', (size_t)(end - q));
		if (!q++ || q + l + 2 > end)
			return 0;
		if (i < 8) {
			argv[i] = q;
			argl[i] = l;
		}
		q += l + 2;
	}
	*argc = n;
	return (size_t)(q - p);
}

static void answer(struct rconn *c, const uint8_t **argv, const size_t *argl, int argc)
{
	struct fake_redis *r = c->r;
	r->commands++;
	bool get = argl[0] == 3 && memcmp(argv[0], "GET", 3) == 0;
	bool nx = false;
	for (int i = 1; i < argc && i < 8; i++)
		nx |= argl[i] == 2 && memcmp(argv[i], "NX", 2) == 0;
	if (get)
		r->gets++;
	switch (r->mode) {
	case R_SILENT:
		return;
	case R_LATE: {
		struct late_write *l = calloc(1, sizeof(*l));
		l->c = c;
		l->text = get ? "$-1\r\n" : "+OK\r\n";
		uv_timer_init(r->loop, &l->t);
		uv_timer_start(&l->t, on_late, r->delay_ms, 0);
		return;
	}
	case R_VALUE:
		if (get) {
			char head[32];
			int n = snprintf(head, sizeof(head), "$%zu\r\n", r->vlen);
			rsend(c, head, (size_t)n);
			rsend(c, r->value, r->vlen);
			rsend(c, "\r\n", 2);
			return;
		}
		rsend(c, "+OK\r\n", 5);
		return;
	case R_NIL:
	case R_LOCKED:
		if (get || (nx && r->mode == R_LOCKED))
			rsend(c, "$-1\r\n", 5);
		else
			rsend(c, "+OK\r\n", 5);
		return;
	}
}

static void on_r_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	struct rconn *c = (struct rconn *)h;
	*b = uv_buf_init((char *)c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_rconn_closed(uv_handle_t *h)
{
	free(h);
}

static void on_r_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct rconn *c = (struct rconn *)s;
	if (n < 0) {
		uv_close((uv_handle_t *)s, on_rconn_closed);
		return;
	}
	c->len += (size_t)n;
	for (;;) {
		const uint8_t *argv[8];
		size_t argl[8];
		int argc = 0;
		size_t used = parse_command(c->buf, c->len, argv, argl, &argc);
		if (!used)
			break;
		answer(c, argv, argl, argc);
		memmove(c->buf, c->buf + used, c->len - used);
		c->len -= used;
	}
}

static void on_r_connection(uv_stream_t *server, int status)
{
	struct fake_redis *r = server->data;
	struct rconn *c = calloc(1, sizeof(*c));
	c->r = r;
	uv_tcp_init(r->loop, &c->h);
	assert_int_equal(uv_accept(server, (uv_stream_t *)&c->h), 0);
	r->connections++;
	uv_read_start((uv_stream_t *)&c->h, on_r_alloc, on_r_read);
}

static void redis_start(struct fake_redis *r, uv_loop_t *loop, enum redis_mode mode)
{
	memset(r, 0, sizeof(*r));
	r->mode = mode;
	r->loop = loop;
	r->port = test_free_port(SOCK_STREAM);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(r->port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	uv_tcp_init(loop, &r->server);
	r->server.data = r;
	assert_int_equal(uv_tcp_bind(&r->server, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&r->server, 8, on_r_connection), 0);
}

/* ---- fixture ---- */

struct fixture {
	struct test_env t;
	struct fake_redis r;
	struct rrc_redis_tier *tier;
	/* The key of the query for www.example.com A, and its answer in stored form. */
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t klen;
	uint8_t stored[512];
	size_t slen;
	uint32_t life;
};

struct result {
	unsigned calls;
	enum rrc_l2_outcome outcome;
	size_t len;
	uint32_t lifetime;
};

static void on_result(void *ctx, const struct rrc_l2_result *r)
{
	struct result *res = ctx;
	res->calls++;
	res->outcome = r->outcome;
	res->len = r->len;
	res->lifetime = r->lifetime;
}

static bool got(void *arg)
{
	return ((struct result *)arg)->calls > 0;
}

static bool ready(void *arg)
{
	return rrc_redis_state(arg) == 1;
}

/* The key of the query for www.example.com A, and its stored answer. */
static size_t key_and_answer(uint8_t *key, uint8_t *stored, size_t *slen, uint32_t *life)
{
	uint8_t q[512], a[512];
	size_t qlen = test_query("www.example.com", 1, q);
	struct rrc_wire_query wq;
	enum rrc_wire_reason why;
	assert_int_equal(rrc_wire_check_query(q, qlen, &wq, &why), RRC_WIRE_OK);
	size_t klen = rrc_wire_key(q, &wq, key);
	size_t alen = test_answer(q, qlen, 0, a);
	struct rrc_wire_reply r;
	assert_int_equal(rrc_wire_check_reply(a, alen, &r), 0);
	struct rrc_wire_ttl_policy pol = {.max_ttl = 86400, .max_negative_ttl = 3600};
	*slen = rrc_wire_make_stored(a, alen, &r, &pol, life);
	assert_true(*slen > 0);
	memcpy(stored, a, *slen);
	return klen;
}

static void setup(struct fixture *x, enum redis_mode mode, uint32_t max_failures)
{
	test_env_init(&x->t, 1 << 20, 10000);
	redis_start(&x->r, &x->t.loop, mode);
	struct rrc_config *cfg = test_config(&(uint16_t){53}, 1);
	char err[RRC_ERR_LEN], url[64];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%u", x->r.port);
	assert_int_equal(rrc_config_parse_redis_url(url, &cfg->redis, err), 0);
	cfg->redis.timeout_ms = 30;
	cfg->redis.max_failures = max_failures;
	cfg->redis.backoff_min_ms = 50;
	cfg->redis.backoff_max_ms = 50;
	test_env_config(&x->t, cfg);
	x->tier = rrc_redis_tier_create(&x->t.env);
	assert_non_null(x->tier);
	test_run_until(&x->t, ready, x->tier);
	x->klen = key_and_answer(x->key, x->stored, &x->slen, &x->life);
}

static void teardown(struct fixture *x)
{
	rrc_redis_tier_close(x->tier);
	uv_close((uv_handle_t *)&x->r.server, NULL);
	test_env_close(&x->t);
}

static uint64_t wall_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* ---- tests ---- */

static void test_hit(void **state)
{
	struct fixture x;
	setup(&x, R_VALUE, 5);
	struct rrc_l2_keys keys;
	rrc_l2_derive_keys(test_cfg(&x.t)->redis.key_secret, &keys);
	x.r.vlen = rrc_l2_encode(x.r.value, sizeof(x.r.value), &keys, x.key, x.klen, x.stored,
				 x.slen, wall_ms(), x.life);
	struct result res = {0};
	assert_non_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &res));
	test_run_until(&x.t, got, &res);
	assert_int_equal(res.outcome, RRC_L2_HIT);
	assert_int_equal(res.len, x.slen);
	assert_true(res.lifetime > 290 && res.lifetime <= 300);
	assert_int_equal(x.t.st.redis_hits, 1);
	assert_int_equal(x.r.commands, 1); /* a hit takes no lock */
	teardown(&x);
}

/* A miss takes the fleet lock (MISS: ask the upstream); a lock held elsewhere is LOCKED. */
static void test_miss_takes_the_lock(void **state)
{
	enum redis_mode modes[] = {R_NIL, R_LOCKED};
	enum rrc_l2_outcome want[] = {RRC_L2_MISS, RRC_L2_LOCKED};
	for (int i = 0; i < 2; i++) {
		struct fixture x;
		setup(&x, modes[i], 5);
		struct result res = {0};
		assert_non_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &res));
		test_run_until(&x.t, got, &res);
		assert_int_equal(res.outcome, want[i]);
		assert_int_equal(x.r.commands, 2);
		assert_int_equal(x.t.st.redis_misses, 1);
		assert_int_equal(x.t.st.redis_fleet_waits, i);
		teardown(&x);
	}
}

/* Redis does not answer: the lookup is given up at its deadline (SKIP), once. */
static void test_deadline(void **state)
{
	struct fixture x;
	setup(&x, R_SILENT, 5);
	struct result res = {0};
	assert_non_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &res));
	test_run_until(&x.t, got, &res);
	assert_int_equal(res.outcome, RRC_L2_SKIP);
	assert_int_equal(x.t.st.redis_timeouts, 1);
	test_run_for(&x.t, 50);
	assert_int_equal(res.calls, 1);
	assert_int_equal(rrc_redis_state(x.tier), 1); /* one timeout does not open the breaker */
	teardown(&x);
}

/* A reply after the deadline is taken off the connection and told to nobody. */
static void test_late_reply(void **state)
{
	struct fixture x;
	setup(&x, R_LATE, 5);
	x.r.delay_ms = 100;
	struct result res = {0};
	assert_non_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &res));
	test_run_until(&x.t, got, &res);
	assert_int_equal(res.outcome, RRC_L2_SKIP);
	test_run_for(&x.t, 200); /* the reply arrives */
	assert_int_equal(res.calls, 1);
	assert_int_equal(x.t.st.redis_misses, 0);
	/* The connection is still in step: the next lookup gets its own reply. */
	x.r.mode = R_NIL;
	struct result next = {0};
	assert_non_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &next));
	test_run_until(&x.t, got, &next);
	assert_int_equal(next.outcome, RRC_L2_MISS);
	teardown(&x);
}

/* max_failures timeouts in a row open the breaker: lookups are skipped at once; after the
 * backoff the tier connects again and, Redis answering, is used again. */
static void test_breaker(void **state)
{
	struct fixture x;
	setup(&x, R_SILENT, 2);
	for (int i = 0; i < 2; i++) {
		struct result res = {0};
		assert_non_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &res));
		test_run_until(&x.t, got, &res);
		assert_int_equal(res.outcome, RRC_L2_SKIP);
	}
	assert_int_equal(x.t.st.redis_breaker_opens, 1);
	assert_int_equal(rrc_redis_state(x.tier), 0);
	uint64_t skipped = x.t.st.redis_skipped;
	struct result res = {0};
	assert_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &res));
	assert_int_equal(x.t.st.redis_skipped, skipped + 1);
	x.r.mode = R_NIL;
	test_run_until(&x.t, ready, x.tier);
	assert_int_equal(x.r.connections, 2);
	assert_non_null(rrc_redis_get(x.tier, x.key, x.klen, 0, on_result, &res));
	test_run_until(&x.t, got, &res);
	assert_int_equal(res.outcome, RRC_L2_MISS);
	teardown(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hit),	 cmocka_unit_test(test_miss_takes_the_lock),
		cmocka_unit_test(test_deadline), cmocka_unit_test(test_late_reply),
		cmocka_unit_test(test_breaker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
