/*
 * listener, alone on a real loop with a query handler of the test's and clients on loopback
 * driven by the same loop: UDP answers now and later (through the client handle), TCP
 * pipelining answered out of order (RFC 7766 §6.2.1.1), a connection that cannot be given
 * memory refused without stopping the listener (it used to stop accepting for good), and a
 * stop that closes connections once their answers are out.
 *
 * Memory failures are injected with the linker: calloc calls from rrcache's code go through
 * __wrap_calloc (-Wl,--wrap=calloc for this executable only).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loop_env.h"
#include "rrcache/conn_limit.h"
#include "rrcache/listener.h"

/* ---- allocation failures ---- */

void *__real_calloc(size_t n, size_t m);
void *__wrap_calloc(size_t n, size_t m);
static int fail_callocs; /* the next this many calls fail */

void *__wrap_calloc(size_t n, size_t m)
{
	if (fail_callocs > 0) {
		fail_callocs--;
		return NULL;
	}
	return __real_calloc(n, m);
}

/* ---- the query handler: names starting "later" are held and answered 20 ms later ---- */

struct held {
	uv_timer_t timer;
	struct rrc_client client;
	size_t len;
	uint8_t answer[512];
};

struct handler {
	unsigned calls;
	uv_loop_t *loop;
};

static void on_held_closed(uv_handle_t *h)
{
	free(h);
}

static void on_later(uv_timer_t *t)
{
	struct held *h = (struct held *)t;
	h->client.ops->send(&h->client, h->answer, h->len);
	h->client.ops->release(&h->client);
	uv_close((uv_handle_t *)t, on_held_closed);
}

static size_t handle(void *ctx, const struct rrc_client *c, const uint8_t *msg, size_t len,
		     uint8_t *out, size_t cap)
{
	struct handler *hd = ctx;
	hd->calls++;
	if (len > 13 && memcmp(msg + 13, "later", 5) == 0) {
		struct held *h = calloc(1, sizeof(*h));
		h->client = *c;
		h->client.ops->hold(&h->client);
		h->len = test_answer(msg, len, 0, h->answer);
		uv_timer_init(hd->loop, &h->timer);
		uv_timer_start(&h->timer, on_later, 20, 0);
		return 0;
	}
	return test_answer(msg, len, 0, out);
}

/* ---- fixture ---- */

struct fixture {
	struct test_env t;
	struct handler hd;
	struct rrc_conn_limit *limit;
	struct rrc_listeners *l;
	struct sockaddr_in addr;
};

static void setup(struct fixture *x)
{
	memset(x, 0, sizeof(*x));
	test_env_init(&x->t, 1 << 20, 10000);
	test_env_config(&x->t, test_config(&(uint16_t){53}, 1));
	x->addr = test_cfg(&x->t)->listen[0].sin;
	x->hd.loop = &x->t.loop;
	x->limit = rrc_conn_limit_create();
	char err[RRC_ERR_LEN];
	x->l = rrc_listeners_create(&x->t.env, x->limit, handle, &x->hd, err);
	assert_non_null(x->l);
	assert_int_equal(rrc_listeners_start(x->l), 0);
}

static void teardown(struct fixture *x)
{
	rrc_listeners_close(x->l);
	test_env_close(&x->t);
	rrc_conn_limit_destroy(x->limit);
}

/* ---- a UDP client ---- */

struct uclient {
	uv_udp_t h;
	unsigned got;
	uint16_t ids[8];
};

static void on_u_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	static char buf[2048];
	*b = uv_buf_init(buf, sizeof(buf));
}

static void on_u_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *a,
		      unsigned f)
{
	struct uclient *u = h->data;
	if (n >= 12 && u->got < 8)
		u->ids[u->got++] = rrc_get16((const uint8_t *)b->base);
}

static bool two_answers(void *arg)
{
	return ((struct uclient *)arg)->got >= 2;
}

static void test_udp_answers_now_and_later(void **state)
{
	struct fixture x;
	setup(&x);
	struct uclient u = {0};
	uv_udp_init(&x.t.loop, &u.h);
	u.h.data = &u;
	uv_udp_recv_start(&u.h, on_u_alloc, on_u_recv);
	uint8_t q[512];
	const char *names[] = {"later.example", "now.example"};
	for (int i = 0; i < 2; i++) {
		size_t n = test_query(names[i], (uint16_t)(100 + i), q);
		uv_buf_t b = uv_buf_init((char *)q, (unsigned)n);
		assert_int_equal(uv_udp_try_send(&u.h, &b, 1, (struct sockaddr *)&x.addr), (int)n);
	}
	test_run_until(&x.t, two_answers, &u);
	/* The held one comes second, with its own ID. */
	assert_int_equal(u.ids[0], 101);
	assert_int_equal(u.ids[1], 100);
	assert_int_equal(x.t.st.latency.count, 2);
	uv_close((uv_handle_t *)&u.h, NULL);
	teardown(&x);
}

/* ---- a TCP client ---- */

struct tclient {
	uv_tcp_t h;
	uv_connect_t cr;
	uv_write_t wr;
	uint8_t out[1024];
	size_t outlen;
	uint8_t in[4096];
	size_t inlen;
	bool eof;
};

static void on_t_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
	struct tclient *c = h->data;
	*b = uv_buf_init((char *)c->in + c->inlen, (unsigned)(sizeof(c->in) - c->inlen));
}

static void on_t_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct tclient *c = s->data;
	if (n < 0) {
		c->eof = true;
		uv_read_stop(s);
		return;
	}
	c->inlen += (size_t)n;
}

static void on_t_written(uv_write_t *w, int status)
{
}

static void on_t_connected(uv_connect_t *cr, int status)
{
	struct tclient *c = cr->data;
	if (status < 0) {
		c->eof = true;
		return;
	}
	uv_read_start((uv_stream_t *)&c->h, on_t_alloc, on_t_read);
	if (c->outlen) {
		uv_buf_t b = uv_buf_init((char *)c->out, (unsigned)c->outlen);
		uv_write(&c->wr, (uv_stream_t *)&c->h, &b, 1, on_t_written);
	}
}

/* Connects c and sends the framed queries for names (IDs 1, 2, ...). */
static void tconnect(struct fixture *x, struct tclient *c, const char *const *names, int n)
{
	memset(c, 0, sizeof(*c));
	for (int i = 0; i < n; i++) {
		size_t len = test_query(names[i], (uint16_t)(i + 1), c->out + c->outlen + 2);
		rrc_put16(c->out + c->outlen, (uint16_t)len);
		c->outlen += 2 + len;
	}
	uv_tcp_init(&x->t.loop, &c->h);
	c->h.data = c;
	c->cr.data = c;
	assert_int_equal(uv_tcp_connect(&c->cr, &c->h, (struct sockaddr *)&x->addr, on_t_connected),
			 0);
}

/* The IDs of the complete framed messages c received. */
static int tanswers(const struct tclient *c, uint16_t *ids, int cap)
{
	int n = 0;
	for (size_t o = 0; o + 2 <= c->inlen && n < cap;) {
		size_t len = rrc_get16(c->in + o);
		if (o + 2 + len > c->inlen)
			break;
		ids[n++] = rrc_get16(c->in + o + 2);
		o += 2 + len;
	}
	return n;
}

static bool t_two(void *arg)
{
	uint16_t ids[4];
	return tanswers(arg, ids, 4) >= 2;
}

static bool t_one(void *arg)
{
	uint16_t ids[4];
	return tanswers(arg, ids, 4) >= 1;
}

static bool t_eof(void *arg)
{
	return ((struct tclient *)arg)->eof;
}

/* RFC 7766 §6.2.1.1: pipelined queries are answered as they complete, out of order. */
static void test_tcp_pipelined_out_of_order(void **state)
{
	struct fixture x;
	setup(&x);
	struct tclient c;
	tconnect(&x, &c, (const char *const[]){"later.example", "now.example"}, 2);
	test_run_until(&x.t, t_two, &c);
	uint16_t ids[4];
	assert_int_equal(tanswers(&c, ids, 4), 2);
	assert_int_equal(ids[0], 2);
	assert_int_equal(ids[1], 1);
	assert_int_equal(rrc_listeners_open(x.l), 1);
	assert_int_equal(x.t.st.tcp_accepted, 1);
	assert_int_equal(x.t.st.tcp_open, 1);
	uv_close((uv_handle_t *)&c.h, NULL);
	teardown(&x);
	assert_int_equal(x.t.st.tcp_open, 0);
}

/* A connection that cannot be given memory is refused (accepted and closed) and the listener
 * keeps accepting: the next client is served. */
static void test_accept_without_memory_keeps_listening(void **state)
{
	struct fixture x;
	setup(&x);
	struct tclient a, b;
	fail_callocs = 1; /* the connection's own struct */
	tconnect(&x, &a, (const char *const[]){"now.example"}, 1);
	test_run_until(&x.t, t_eof, &a);
	assert_int_equal(fail_callocs, 0);
	assert_int_equal(a.inlen, 0);
	assert_int_equal(x.t.st.tcp_refused_limit, 1);
	tconnect(&x, &b, (const char *const[]){"now.example"}, 1);
	test_run_until(&x.t, t_one, &b);
	assert_int_equal(x.t.st.tcp_accepted, 1);
	uv_close((uv_handle_t *)&a.h, NULL);
	uv_close((uv_handle_t *)&b.h, NULL);
	teardown(&x);
}

static bool none_open(void *arg)
{
	return rrc_listeners_open(arg) == 0;
}

/* A stop closes the listening socket; an open connection closes once its held query is
 * answered, and the answer still reaches the client. */
static void test_stop_lets_answers_out(void **state)
{
	struct fixture x;
	setup(&x);
	struct tclient c, late;
	tconnect(&x, &c, (const char *const[]){"later.example"}, 1);
	while (x.hd.calls == 0)
		uv_run(&x.t.loop, UV_RUN_ONCE);
	rrc_listeners_stop_accepting(x.l);
	assert_int_equal(rrc_listeners_open(x.l), 1); /* its answer is pending */
	test_run_until(&x.t, none_open, x.l);
	uint16_t ids[2];
	assert_int_equal(tanswers(&c, ids, 2), 1);
	/* No new connection is taken. */
	tconnect(&x, &late, (const char *const[]){"now.example"}, 1);
	test_run_until(&x.t, t_eof, &late);
	assert_int_equal(late.inlen, 0);
	uv_close((uv_handle_t *)&c.h, NULL);
	uv_close((uv_handle_t *)&late.h, NULL);
	teardown(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_udp_answers_now_and_later),
		cmocka_unit_test(test_tcp_pipelined_out_of_order),
		cmocka_unit_test(test_accept_without_memory_keeps_listening),
		cmocka_unit_test(test_stop_lets_answers_out),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
