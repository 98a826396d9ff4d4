/*
 * doh: an nghttp2 client session talks to the server session through memory. GET and POST
 * requests reach the query callback with their DNS message; answers come back with status
 * 200, the content type, the length and max-age from the smallest TTL; every malformed
 * request gets its HTTP status; base64url decoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "rrcache/doh.h"
#include "rrcache/wire.h"

/* "www.example. A" with ID 0 and RD. */
static const uint8_t query[] = {0,   0, 1,   0,	  0,   1,   0,	 0,   0,   0, 0, 0, 3, 'w', 'w',
				'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 1, 0, 1};

struct response {
	int32_t stream;
	char status[4];
	char type[64];
	char cache[32];
	uint8_t body[512];
	size_t len;
	bool done;
};

struct world {
	struct rrc_doh *server;
	nghttp2_session *client;
	struct rrc_doh_refusals refused;
	int32_t last_stream; /* of the last query the server handed out */
	uint8_t last_msg[512];
	size_t last_len;
	unsigned queries;
	bool answer_now;
	struct response resp[8];
	unsigned n_resp;
	unsigned writes; /* calls of to_client */
};

static struct response *resp_of(struct world *w, int32_t stream)
{
	for (unsigned i = 0; i < w->n_resp; i++)
		if (w->resp[i].stream == stream)
			return &w->resp[i];
	struct response *r = &w->resp[w->n_resp++];
	memset(r, 0, sizeof(*r));
	r->stream = stream;
	return r;
}

static void on_query(void *ctx, int32_t stream, const uint8_t *msg, size_t len)
{
	struct world *w = ctx;
	w->queries++;
	w->last_stream = stream;
	memcpy(w->last_msg, msg, len);
	w->last_len = len;
	if (w->answer_now) {
		/* An answer: the query with QR and one A record of TTL 60 pointing at it. */
		uint8_t a[128];
		memcpy(a, msg, len);
		rrc_put16(a + 2, RRC_F_QR | RRC_F_RD | RRC_F_RA);
		rrc_put16(a + 6, 1);
		static const uint8_t rr[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1};
		memcpy(a + len, rr, sizeof(rr));
		assert_int_equal(rrc_doh_answer(w->server, stream, a, len + sizeof(rr)), 0);
	}
}

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		       const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct response *r = resp_of(user, f->hd.stream_id);
	char *to = nlen == 7 && !memcmp(name, ":status", 7)	      ? r->status
		   : nlen == 12 && !memcmp(name, "content-type", 12)  ? r->type
		   : nlen == 13 && !memcmp(name, "cache-control", 13) ? r->cache
								      : NULL;
	if (to) {
		size_t cap = to == r->status ? sizeof(r->status) : 32;
		snprintf(to, cap, "%.*s", (int)vlen, (const char *)value);
	}
	return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
		     size_t len, void *user)
{
	struct response *r = resp_of(user, sid);
	assert_true(r->len + len <= sizeof(r->body));
	memcpy(r->body + r->len, data, len);
	r->len += len;
	return 0;
}

static int c_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user)
{
	resp_of(user, sid)->done = true;
	return 0;
}

static int to_client(void *ctx, const uint8_t *data, size_t len)
{
	struct world *w = ctx;
	w->writes++;
	return nghttp2_session_mem_recv(w->client, data, len) == (ssize_t)len ? 0 : -1;
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(struct world *w)
{
	for (int i = 0; i < 10; i++) {
		const uint8_t *data;
		ssize_t n;
		bool moved = false;
		while ((n = nghttp2_session_mem_send(w->client, &data)) > 0) {
			assert_int_equal(rrc_doh_feed(w->server, data, (size_t)n), 0);
			moved = true;
		}
		uint8_t scratch[512];
		assert_int_equal(rrc_doh_flush(w->server, scratch, sizeof(scratch), to_client, w),
				 0);
		if (!moved && !nghttp2_session_want_write(w->client))
			break;
	}
}

static void world_init(struct world *w)
{
	memset(w, 0, sizeof(*w));
	w->server = rrc_doh_new(on_query, w, &w->refused);
	assert_non_null(w->server);
	nghttp2_session_callbacks *cb;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
	assert_int_equal(nghttp2_session_client_new(&w->client, cb, w), 0);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(w->client, NGHTTP2_FLAG_NONE, NULL, 0);
}

static void world_free(struct world *w)
{
	nghttp2_session_del(w->client);
	rrc_doh_free(w->server);
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

static const uint8_t *post_body;
static size_t post_len, post_off;

static ssize_t read_post(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *user)
{
	size_t n = post_len - post_off < len ? post_len - post_off : len;
	memcpy(buf, post_body + post_off, n);
	post_off += n;
	if (post_off == post_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static int32_t request(struct world *w, const char *method, const char *path, const char *type,
		       const uint8_t *body, size_t len)
{
	nghttp2_nv nv[5] = {NV(":method", method), NV(":scheme", "https"),
			    NV(":authority", "dot.test"), NV(":path", path)};
	size_t n = 4;
	if (type)
		nv[n++] = (nghttp2_nv)NV("content-type", type);
	post_body = body;
	post_len = len;
	post_off = 0;
	nghttp2_data_provider prd = {.read_callback = read_post};
	int32_t sid = nghttp2_submit_request(w->client, NULL, nv, n, body ? &prd : NULL, NULL);
	assert_true(sid > 0);
	pump(w);
	return sid;
}

static void test_get_and_post_answered(void **state)
{
	struct world w;
	world_init(&w);
	w.answer_now = true;
	/* base64url of the query, no padding. */
	char path[128] = "/dns-query?ct&dns=";
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t p = strlen(path);
	for (size_t i = 0; i < sizeof(query); i += 3) {
		uint32_t v = (uint32_t)query[i] << 16 |
			     (i + 1 < sizeof(query) ? (uint32_t)query[i + 1] << 8 : 0) |
			     (i + 2 < sizeof(query) ? query[i + 2] : 0);
		size_t chars = i + 2 < sizeof(query) ? 4 : i + 1 < sizeof(query) ? 3 : 2;
		for (size_t k = 0; k < chars; k++)
			path[p++] = b64[(v >> (18 - 6 * k)) & 63];
	}
	path[p] = 0;
	int32_t get = request(&w, "GET", path, NULL, NULL, 0);
	assert_int_equal(w.queries, 1);
	assert_int_equal(w.last_stream, get);
	assert_int_equal(w.last_len, sizeof(query));
	assert_memory_equal(w.last_msg, query, sizeof(query));
	struct response *r = resp_of(&w, get);
	assert_true(r->done);
	assert_string_equal(r->status, "200");
	assert_string_equal(r->type, "application/dns-message");
	assert_string_equal(r->cache, "max-age=60");
	assert_int_equal(r->len, sizeof(query) + 16);

	int32_t post =
		request(&w, "POST", "/dns-query", "application/dns-message", query, sizeof(query));
	assert_int_equal(w.queries, 2);
	assert_int_equal(w.last_stream, post);
	assert_string_equal(resp_of(&w, post)->status, "200");
	world_free(&w);
}

static void test_later_answer_and_reset_stream(void **state)
{
	struct world w;
	world_init(&w);
	int32_t sid =
		request(&w, "POST", "/dns-query", "application/dns-message", query, sizeof(query));
	assert_int_equal(w.queries, 1);
	assert_false(resp_of(&w, sid)->done);
	/* Answered later, as a miss is. */
	uint8_t a[sizeof(query)];
	memcpy(a, query, sizeof(query));
	rrc_put16(a + 2, RRC_F_QR | RRC_F_RD | RRC_F_RA | RRC_RCODE_NXDOMAIN);
	assert_int_equal(rrc_doh_answer(w.server, sid, a, sizeof(a)), 0);
	assert_int_equal(rrc_doh_answer(w.server, sid, a, sizeof(a)), -1); /* once */
	pump(&w);
	assert_string_equal(resp_of(&w, sid)->status, "200");
	assert_string_equal(resp_of(&w, sid)->cache, "max-age=0"); /* no record: no freshness */
	/* The client resets a stream before its answer: the answer finds it gone. */
	sid = request(&w, "POST", "/dns-query", "application/dns-message", query, sizeof(query));
	nghttp2_submit_rst_stream(w.client, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
	pump(&w);
	assert_int_equal(rrc_doh_answer(w.server, sid, a, sizeof(a)), -1);
	world_free(&w);
}

/* Answers given together leave in one write (one TLS record), as many as the scratch space
 * holds; with scratch smaller than a frame, each frame goes alone and nothing is lost. */
static void test_answers_gathered(void **state)
{
	for (int tiny = 0; tiny < 2; tiny++) {
		struct world w;
		world_init(&w);
		int32_t sid[3];
		for (int i = 0; i < 3; i++)
			sid[i] = request(&w, "POST", "/dns-query", "application/dns-message", query,
					 sizeof(query));
		assert_int_equal(w.queries, 3);
		uint8_t a[sizeof(query)];
		memcpy(a, query, sizeof(query));
		rrc_put16(a + 2, RRC_F_QR | RRC_F_RD | RRC_F_RA);
		for (int i = 0; i < 3; i++)
			assert_int_equal(rrc_doh_answer(w.server, sid[i], a, sizeof(a)), 0);
		uint8_t scratch[512];
		w.writes = 0;
		assert_int_equal(
			rrc_doh_flush(w.server, scratch, tiny ? 8 : sizeof(scratch), to_client, &w),
			0);
		if (tiny)
			assert_true(w.writes >= 6); /* a HEADERS and a DATA frame each */
		else
			assert_int_equal(w.writes, 1);
		for (int i = 0; i < 3; i++) {
			assert_true(resp_of(&w, sid[i])->done);
			assert_string_equal(resp_of(&w, sid[i])->status, "200");
			assert_int_equal(resp_of(&w, sid[i])->len, sizeof(query));
		}
		world_free(&w);
	}
}

static void test_refused_requests(void **state)
{
	struct world w;
	world_init(&w);
	struct {
		const char *method, *path, *type;
		size_t len;
		const char *status;
	} cases[] = {
		{"GET", "/other?dns=AAAB", NULL, 0, "404"},
		{"GET", "/dns-query-more?dns=AAAB", NULL, 0, "404"},
		{"PUT", "/dns-query", "application/dns-message", sizeof(query), "405"},
		{"POST", "/dns-query", "text/plain", sizeof(query), "415"},
		{"POST", "/dns-query", "application/dns-message", 5,
		 "400"},			       /* shorter than a header */
		{"GET", "/dns-query", NULL, 0, "400"}, /* no dns= */
		{"GET", "/dns-query?dns=not*base64", NULL, 0, "400"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int32_t sid = request(&w, cases[i].method, cases[i].path, cases[i].type,
				      cases[i].len ? query : NULL, cases[i].len);
		assert_string_equal(resp_of(&w, sid)->status, cases[i].status);
		w.n_resp = 0;
	}
	/* A body over 65,535 bytes. */
	static uint8_t big[70000];
	int32_t sid =
		request(&w, "POST", "/dns-query", "application/dns-message", big, sizeof(big));
	pump(&w);
	assert_string_equal(resp_of(&w, sid)->status, "413");
	assert_int_equal(w.queries, 0);
	assert_int_equal(w.refused.not_found, 2);
	assert_int_equal(w.refused.bad_method, 1);
	assert_int_equal(w.refused.bad_type, 1);
	assert_int_equal(w.refused.bad_request, 3);
	assert_int_equal(w.refused.too_large, 1);
	world_free(&w);
}

static void test_garbage_and_base64url(void **state)
{
	struct rrc_doh_refusals refused = {0};
	struct rrc_doh *d = rrc_doh_new(on_query, NULL, &refused);
	assert_int_equal(rrc_doh_feed(d, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18), -1);
	assert_true(rrc_doh_done(d));
	rrc_doh_free(d);

	uint8_t out[8];
	assert_int_equal(rrc_doh_base64url_decode("AAEC", 4, out, sizeof(out)), 3);
	assert_int_equal(out[2], 2);
	assert_int_equal(rrc_doh_base64url_decode("_-8", 3, out, sizeof(out)), 2);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(rrc_doh_base64url_decode("AAE=", 4, out, sizeof(out)), 2);
	assert_int_equal(rrc_doh_base64url_decode("A+/=", 4, out, sizeof(out)), -1);
	assert_int_equal(rrc_doh_base64url_decode("AAF", 3, out, sizeof(out)),
			 -1); /* not canonical */
	assert_int_equal(rrc_doh_base64url_decode("A", 1, out, sizeof(out)), -1);
	assert_int_equal(rrc_doh_base64url_decode("AAAAAAAAAAAAAAAA", 16, out, sizeof(out)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_and_post_answered),
		cmocka_unit_test(test_later_answer_and_reset_stream),
		cmocka_unit_test(test_answers_gathered),
		cmocka_unit_test(test_refused_requests),
		cmocka_unit_test(test_garbage_and_base64url),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
