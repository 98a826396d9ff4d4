/* Unit tests of dnstap's protobuf encoding, decoded back field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "rrcache/dnstap.h"

struct field {
	unsigned num, wt;
	uint64_t v;	  /* varint or fixed32 */
	const uint8_t *p; /* length-delimited */
	size_t len;
};

static uint64_t varint(const uint8_t **p, const uint8_t *end)
{
	uint64_t v = 0;
	for (int shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;
		v |= (uint64_t)(b & 0x7F) << shift;
		if (!(b & 0x80))
			return v;
	}
	fail_msg("bad varint");
	return 0;
}

/* Fields of one message, in order; returns how many. */
static size_t parse(const uint8_t *p, size_t len, struct field *out, size_t cap)
{
	const uint8_t *end = p + len;
	size_t n = 0;
	while (p < end && n < cap) {
		uint64_t key = varint(&p, end);
		struct field *f = &out[n++];
		f->num = (unsigned)(key >> 3);
		f->wt = (unsigned)(key & 7);
		if (f->wt == 0) {
			f->v = varint(&p, end);
		} else if (f->wt == 5) {
			assert_true(p + 4 <= end);
			f->v = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
			       (uint64_t)p[3] << 24;
			p += 4;
		} else if (f->wt == 2) {
			f->len = varint(&p, end);
			assert_true(p + f->len <= end);
			f->p = p;
			p += f->len;
		} else {
			fail_msg("wire type %u", f->wt);
		}
	}
	assert_true(p == end);
	return n;
}

static const struct field *get(const struct field *f, size_t n, unsigned num)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].num == num)
			return &f[i];
	return NULL;
}

static void test_encode(void **state)
{
	struct sockaddr_in client = {.sin_family = AF_INET, .sin_port = htons(40000)};
	inet_pton(AF_INET, "192.0.2.1", &client.sin_addr);
	struct sockaddr_in6 us = {.sin6_family = AF_INET6, .sin6_port = htons(53)};
	inet_pton(AF_INET6, "2001:db8::53", &us.sin6_addr);
	uint8_t wire[300];
	memset(wire, 0xAB, sizeof(wire)); /* long enough for a 2-byte length */
	struct rrc_dnstap_msg m = {.type = RRC_DT_CLIENT_RESPONSE,
				   .tcp = true,
				   .query_addr = (struct sockaddr *)&client,
				   .response_addr = (struct sockaddr *)&us,
				   .query_time_us = 1700000000123456ull,
				   .response_time_us = 1700000000123999ull,
				   .wire = wire,
				   .len = sizeof(wire)};
	uint8_t out[1024];
	size_t n = rrc_dnstap_encode("node-1", &m, out, sizeof(out));
	assert_true(n > sizeof(wire));
	struct field top[8], msg[20];
	size_t nt = parse(out, n, top, 8);
	assert_int_equal(nt, 4);
	assert_memory_equal(get(top, nt, 1)->p, "node-1", 6);
	assert_int_equal(get(top, nt, 15)->v, 1); /* MESSAGE */
	const struct field *mf = get(top, nt, 14);
	size_t nm = parse(mf->p, mf->len, msg, 20);
	assert_int_equal(get(msg, nm, 1)->v, 6); /* CLIENT_RESPONSE */
	assert_int_equal(get(msg, nm, 2)->v, 1); /* INET: the query side's family */
	assert_int_equal(get(msg, nm, 3)->v, 2); /* TCP */
	assert_int_equal(get(msg, nm, 4)->len, 4);
	assert_int_equal(get(msg, nm, 5)->len, 16);
	assert_int_equal(get(msg, nm, 6)->v, 40000);
	assert_int_equal(get(msg, nm, 7)->v, 53);
	assert_int_equal(get(msg, nm, 8)->v, 1700000000);
	assert_int_equal(get(msg, nm, 9)->v, 123456000);
	assert_int_equal(get(msg, nm, 12)->v, 1700000000);
	assert_int_equal(get(msg, nm, 13)->v, 123999000);
	assert_null(get(msg, nm, 10)); /* a response carries response_message only */
	assert_int_equal(get(msg, nm, 14)->len, sizeof(wire));
	assert_memory_equal(get(msg, nm, 14)->p, wire, sizeof(wire));
	/* Too small a buffer: 0, never an overflow. */
	for (size_t cap = 0; cap < n; cap += 7)
		assert_int_equal(rrc_dnstap_encode("node-1", &m, out, cap), 0);
	/* A query without addresses. */
	struct rrc_dnstap_msg q = {.type = RRC_DT_FORWARDER_QUERY, .wire = wire, .len = 12};
	n = rrc_dnstap_encode("", &q, out, sizeof(out));
	nt = parse(out, n, top, 8);
	mf = get(top, nt, 14);
	nm = parse(mf->p, mf->len, msg, 20);
	assert_int_equal(get(msg, nm, 1)->v, 7);
	assert_int_equal(get(msg, nm, 10)->len, 12);
	assert_null(get(msg, nm, 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_encode)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
