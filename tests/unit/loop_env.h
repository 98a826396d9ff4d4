/*
 * Test helper for the loop-level unit tests (libuv's manner): a worker's environment without
 * its thread, driven by a real uv_loop_t, and fake DNS servers on loopback driven by the same
 * loop. Every test ends with test_env_close(), which runs the loop until every handle has
 * closed and checks uv_loop_close() == 0.
 */
#ifndef RRCACHE_TEST_LOOP_ENV_H
#define RRCACHE_TEST_LOOP_ENV_H

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rrcache/cache.h"
#include "rrcache/env.h"

/* ---- the environment ---- */

struct test_env {
	uv_loop_t loop;
	struct rrc_worker_stats st;
	struct rrc_top top;
	struct rrc_env env;
	uv_timer_t limit; /* fails the test when the loop runs too long */
};

static void on_test_limit(uv_timer_t *t)
{
	fail_msg("the loop ran past the test's time limit");
}

/* A free loopback port (bound, read back, released: good enough on a test machine). */
static inline uint16_t test_free_port(int type)
{
	int fd = socket(AF_INET, type, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0)
		fail_msg("no free port");
	close(fd);
	return ntohs(a.sin_port);
}

/* A configuration for upstreams "127.0.0.1:PORT" (n of them), listening on a free port. */
static inline struct rrc_config *test_config(const uint16_t *ports, unsigned n)
{
	static char ups[RRC_MAX_UPSTREAMS][32];
	static char listen[32];
	struct rrc_config_overrides ov = {.n_listen = 1, .n_upstream = n};
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", test_free_port(SOCK_DGRAM));
	ov.listen[0] = listen;
	for (unsigned i = 0; i < n; i++) {
		snprintf(ups[i], sizeof(ups[i]), "127.0.0.1:%u", ports[i]);
		ov.upstream[i] = ups[i];
	}
	char err[RRC_ERR_LEN];
	struct rrc_config *cfg = rrc_config_build(NULL, &ov, err);
	if (!cfg)
		fail_msg("config: %s", err);
	return cfg;
}

/* Sets up t's loop, counters and a cache of cache_bytes; the loop fails the test after
 * limit_ms. The configuration follows with test_env_config(), before any module is made. */
static inline void test_env_init(struct test_env *t, uint64_t cache_bytes, uint64_t limit_ms)
{
	memset(t, 0, sizeof(*t));
	assert_int_equal(uv_loop_init(&t->loop), 0);
	rrc_top_init(&t->top, 1, 1);
	t->env = (struct rrc_env){.loop = &t->loop,
				  .worker = 1, /* not 0: no Redis flush subscription */
				  .cache = rrc_cache_create(cache_bytes),
				  .st = &t->st,
				  .top = &t->top};
	assert_non_null(t->env.cache);
	uv_timer_init(&t->loop, &t->limit);
	uv_timer_start(&t->limit, on_test_limit, limit_ms, 0);
	uv_unref((uv_handle_t *)&t->limit);
}

/* Gives t the configuration cfg (taken). */
static inline void test_env_config(struct test_env *t, struct rrc_config *cfg)
{
	t->env.cfg = rrc_cfg_ref_new(cfg, 0);
	assert_non_null(t->env.cfg);
}

/* The configuration of t, to adjust before the modules read it. */
static inline struct rrc_config *test_cfg(struct test_env *t)
{
	return t->env.cfg->cfg;
}

/* Runs the loop until pred(arg) holds (checked after each iteration). */
static inline void test_run_until(struct test_env *t, bool (*pred)(void *), void *arg)
{
	while (!pred(arg)) {
		if (uv_run(&t->loop, UV_RUN_ONCE) == 0 && !pred(arg))
			fail_msg("the loop has nothing left to do and the condition does not hold");
	}
}

/* Runs the loop for about ms milliseconds. */
static void on_test_pause(uv_timer_t *h)
{
	*(bool *)h->data = true;
}
static inline bool test_flag(void *arg)
{
	return *(bool *)arg;
}
static inline void test_run_for(struct test_env *t, uint64_t ms)
{
	bool done = false;
	uv_timer_t *h = malloc(sizeof(*h));
	uv_timer_init(&t->loop, h);
	h->data = &done;
	uv_timer_start(h, on_test_pause, ms, 0);
	test_run_until(t, test_flag, &done);
	uv_close((uv_handle_t *)h, (uv_close_cb)free);
}

/* Closes what is left, runs the loop until every handle is closed and checks that the loop
 * closes cleanly; frees the cache and the configuration. */
static inline void test_env_close(struct test_env *t)
{
	uv_close((uv_handle_t *)&t->limit, NULL);
	assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	rrc_cache_destroy(t->env.cache);
	rrc_cfg_ref_put(t->env.cfg);
}

/* ---- DNS messages ---- */

/* The end of the question of a message (uncompressed QNAME, as rrcache sends them). */
static inline size_t test_question_end(const uint8_t *m, size_t len)
{
	size_t o = 12;
	while (o < len && m[o] != 0)
		o += 1 + m[o];
	return o + 5;
}

/* A reply to query q: its header and question, QR and RA set, one A record (192.0.2.7, TTL
 * 300), no OPT. flags_or is or'ed into the flags (e.g. TC). Returns the length. */
static inline size_t test_answer(const uint8_t *q, size_t qlen, uint16_t flags_or, uint8_t *out)
{
	size_t qe = test_question_end(q, qlen);
	memcpy(out, q, qe);
	rrc_put16(out + 2, rrc_get16(q + 2) | RRC_F_QR | RRC_F_RA | flags_or);
	rrc_put16(out + 6, (flags_or & RRC_F_TC) ? 0 : 1);
	rrc_put16(out + 8, 0);
	rrc_put16(out + 10, 0);
	if (flags_or & RRC_F_TC)
		return qe;
	static const uint8_t rr[] = {0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x01, 0x2C, 0, 4, 192, 0, 2, 7};
	memcpy(out + qe, rr, sizeof(rr));
	return qe + sizeof(rr);
}

/* A name in wire form (text, e.g. "www.example.com"). Returns its length. */
static inline size_t test_wire_name(const char *name, uint8_t *out)
{
	size_t o = 0;
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		out[o++] = (uint8_t)l;
		memcpy(out + o, p, l);
		o += l;
		p += l + (dot ? 1 : 0);
	}
	out[o++] = 0;
	return o;
}

/* A client query for name (text, e.g. "www.example.com") of type A with EDNS. */
static inline size_t test_query(const char *name, uint16_t id, uint8_t *out)
{
	memset(out, 0, 12);
	rrc_put16(out, id);
	rrc_put16(out + 2, RRC_F_RD);
	rrc_put16(out + 4, 1);
	rrc_put16(out + 10, 1);
	size_t o = 12 + test_wire_name(name, out + 12);
	rrc_put16(out + o, 1); /* A */
	rrc_put16(out + o + 2, 1);
	o += 4;
	static const uint8_t opt[] = {0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0};
	memcpy(out + o, opt, sizeof(opt));
	return o + sizeof(opt);
}

/* ---- a fake DNS server on 127.0.0.1, UDP and TCP on one port ---- */

enum fake_mode {
	FAKE_ANSWER,   /* answers every query */
	FAKE_SILENT,   /* answers nothing */
	FAKE_WRONG_ID, /* first a reply with another ID, then the right one */
	FAKE_TC,       /* answers UDP with TC=1 (and TCP fully) */
	FAKE_LATE,     /* answers after delay_ms */
};

struct fake_dns {
	enum fake_mode mode;
	unsigned delay_ms;
	uint16_t port;
	unsigned udp_queries, tcp_queries;
	/* A name (wire form) this server never answers, whatever its mode; empty: none. */
	uint8_t silent_name[64];
	size_t silent_len;
	uv_udp_t udp;
	uv_tcp_t tcp;
	uv_loop_t *loop;
	unsigned open; /* handles of the fake, its connections and timers, not yet closed */
};

struct fake_late {
	uv_timer_t timer;
	struct fake_dns *f;
	struct sockaddr_storage to;
	size_t len;
	uint8_t msg[512];
};

struct fake_conn {
	uv_tcp_t h;
	struct fake_dns *f;
	size_t len;
	uint8_t buf[1024];
};

static void fake_closed_free(uv_handle_t *h)
{
	struct fake_dns *f = h->data;
	f->open--;
	free(h);
}

static void fake_closed(uv_handle_t *h)
{
	struct fake_dns *f = h->data;
	f->open--;
}

static void fake_udp_send(struct fake_dns *f, const uint8_t *msg, size_t len,
			  const struct sockaddr *to)
{
	uv_buf_t b = uv_buf_init((char *)msg, (unsigned)len);
	assert_true(uv_udp_try_send(&f->udp, &b, 1, to) == (int)len);
}

static void on_fake_late(uv_timer_t *t)
{
	struct fake_late *l = (struct fake_late *)t;
	fake_udp_send(l->f, l->msg, l->len, (struct sockaddr *)&l->to);
	uv_close((uv_handle_t *)t, fake_closed_free);
}

static void fake_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char buf[65536];
	b->base = buf;
	b->len = sizeof(buf);
}

static void on_fake_udp(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
			unsigned flags)
{
	struct fake_dns *f = h->data;
	if (n < 12 || !from)
		return;
	f->udp_queries++;
	uint8_t out[512];
	const uint8_t *q = (const uint8_t *)b->base;
	if (f->silent_len && (size_t)n >= 12 + f->silent_len &&
	    memcmp(q + 12, f->silent_name, f->silent_len) == 0)
		return;
	switch (f->mode) {
	case FAKE_SILENT:
		return;
	case FAKE_ANSWER:
		fake_udp_send(f, out, test_answer(q, (size_t)n, 0, out), from);
		return;
	case FAKE_TC:
		fake_udp_send(f, out, test_answer(q, (size_t)n, RRC_F_TC, out), from);
		return;
	case FAKE_WRONG_ID: {
		size_t len = test_answer(q, (size_t)n, 0, out);
		rrc_put16(out, (uint16_t)(rrc_get16(q) + 1));
		fake_udp_send(f, out, len, from);
		rrc_put16(out, rrc_get16(q));
		fake_udp_send(f, out, len, from);
		return;
	}
	case FAKE_LATE: {
		struct fake_late *l = calloc(1, sizeof(*l));
		l->f = f;
		l->len = test_answer(q, (size_t)n, 0, l->msg);
		memcpy(&l->to, from, sizeof(struct sockaddr_in));
		uv_timer_init(f->loop, &l->timer);
		l->timer.data = f;
		f->open++;
		uv_timer_start(&l->timer, on_fake_late, f->delay_ms, 0);
		return;
	}
	}
}

static void on_fake_written(uv_write_t *w, int status)
{
	free(w);
}

static void on_fake_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct fake_conn *c = (struct fake_conn *)s;
	if (n < 0) {
		uv_close((uv_handle_t *)s, fake_closed_free);
		return;
	}
	if (c->len + (size_t)n > sizeof(c->buf))
		fail_msg("fake TCP: message too long");
	memcpy(c->buf + c->len, b->base, (size_t)n);
	c->len += (size_t)n;
	while (c->len >= 2 && c->len >= 2 + (size_t)rrc_get16(c->buf)) {
		size_t mlen = rrc_get16(c->buf);
		c->f->tcp_queries++;
		if (c->f->mode != FAKE_SILENT) {
			uv_write_t *w = malloc(sizeof(*w) + 514);
			uint8_t *out = (uint8_t *)(w + 1);
			size_t len = test_answer(c->buf + 2, mlen, 0, out + 2);
			rrc_put16(out, (uint16_t)len);
			uv_buf_t ob = uv_buf_init((char *)out, (unsigned)len + 2);
			uv_write(w, s, &ob, 1, on_fake_written);
		}
		memmove(c->buf, c->buf + 2 + mlen, c->len - 2 - mlen);
		c->len -= 2 + mlen;
	}
}

static void on_fake_connection(uv_stream_t *server, int status)
{
	struct fake_dns *f = server->data;
	struct fake_conn *c = calloc(1, sizeof(*c));
	c->f = f;
	uv_tcp_init(f->loop, &c->h);
	c->h.data = f;
	f->open++;
	assert_int_equal(uv_accept(server, (uv_stream_t *)&c->h), 0);
	uv_read_start((uv_stream_t *)&c->h, fake_alloc, on_fake_tcp_read);
}

/* Starts a fake server in mode on a free port of 127.0.0.1 (UDP and TCP). */
static inline void fake_start(struct fake_dns *f, uv_loop_t *loop, enum fake_mode mode)
{
	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->loop = loop;
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int tries = 0;; tries++) {
		f->port = test_free_port(SOCK_STREAM);
		a.sin_port = htons(f->port);
		uv_udp_init(loop, &f->udp);
		uv_tcp_init(loop, &f->tcp);
		if (uv_udp_bind(&f->udp, (struct sockaddr *)&a, 0) == 0 &&
		    uv_tcp_bind(&f->tcp, (struct sockaddr *)&a, 0) == 0 &&
		    uv_listen((uv_stream_t *)&f->tcp, 16, on_fake_connection) == 0)
			break;
		uv_close((uv_handle_t *)&f->udp, NULL);
		uv_close((uv_handle_t *)&f->tcp, NULL);
		if (tries > 10)
			fail_msg("fake server: no port");
	}
	f->udp.data = f;
	f->tcp.data = f;
	f->open = 2;
	uv_udp_recv_start(&f->udp, fake_alloc, on_fake_udp);
}

/* Closes the fake's listening handles (its connections close when their peers do). */
static inline void fake_stop(struct fake_dns *f)
{
	uv_close((uv_handle_t *)&f->udp, fake_closed);
	uv_close((uv_handle_t *)&f->tcp, fake_closed);
}

#endif
