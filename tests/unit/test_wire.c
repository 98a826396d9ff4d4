/* Unit tests of wire: every packet of the CONFORMANCE corpus, keys, edits, synthesized replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "corpus.h"

#include "rrcache/wire.h"

struct expect {
	const char *file;
	enum rrc_wire_verdict verdict;
	enum rrc_wire_reason reason;
};

static const struct expect query_cases[] = {
	{"runt_0", RRC_WIRE_DROP, RRC_WR_RUNT},
	{"runt_1", RRC_WIRE_DROP, RRC_WR_RUNT},
	{"runt_11", RRC_WIRE_DROP, RRC_WR_RUNT},
	{"good_query", RRC_WIRE_OK, RRC_WR_NONE},
	{"good_query_edns", RRC_WIRE_OK, RRC_WR_NONE},
	{"qr_set", RRC_WIRE_DROP, RRC_WR_QR},
	{"tc_set", RRC_WIRE_DROP, RRC_WR_TC},
	{"qdcount_0", RRC_WIRE_FORMERR, RRC_WR_QDCOUNT},
	{"qdcount_2", RRC_WIRE_FORMERR, RRC_WR_QDCOUNT},
	{"opcode_5", RRC_WIRE_NOTIMP, RRC_WR_OPCODE},
	{"z_flag", RRC_WIRE_OK, RRC_WR_NONE},
	{"self_pointer", RRC_WIRE_FORMERR, RRC_WR_NAME},
	{"pointer_loop", RRC_WIRE_FORMERR, RRC_WR_NAME},
	{"pointer_loop_in_answer", RRC_WIRE_FORMERR, RRC_WR_TRUNCATED},
	{"long_chain_in_query", RRC_WIRE_FORMERR, RRC_WR_SECTIONS},
	{"answer_in_query", RRC_WIRE_FORMERR, RRC_WR_SECTIONS},
	{"pointer_chains_query", RRC_WIRE_FORMERR, RRC_WR_SECTIONS},
	{"forward_pointer", RRC_WIRE_FORMERR, RRC_WR_NAME},
	{"label_64", RRC_WIRE_FORMERR, RRC_WR_NAME},
	{"name_256", RRC_WIRE_FORMERR, RRC_WR_NAME},
	{"label_type_40", RRC_WIRE_FORMERR, RRC_WR_NAME},
	{"label_type_80", RRC_WIRE_FORMERR, RRC_WR_NAME},
	{"rdlength_past_end", RRC_WIRE_FORMERR, RRC_WR_TRUNCATED},
	{"ancount_65535", RRC_WIRE_FORMERR, RRC_WR_SECTIONS},
	{"two_opt", RRC_WIRE_FORMERR, RRC_WR_OPT},
	{"opt_owner_a", RRC_WIRE_FORMERR, RRC_WR_OPT},
	{"opt_in_answer", RRC_WIRE_FORMERR, RRC_WR_OPT},
	{"edns_option_past_rdlength", RRC_WIRE_FORMERR, RRC_WR_OPT},
	{"three_tsig", RRC_WIRE_FORMERR, RRC_WR_SECTIONS},
	{"empty_chain_option", RRC_WIRE_OK, RRC_WR_NONE},
	{"trailing_bytes", RRC_WIRE_FORMERR, RRC_WR_TRAILING},
	{"edns_version_1", RRC_WIRE_BADVERS, RRC_WR_EDNS_VERSION},
	{"ecs_query", RRC_WIRE_OK, RRC_WR_NONE},
	{"unknown_type", RRC_WIRE_OK, RRC_WR_NONE},
	{"reply_a", RRC_WIRE_DROP, RRC_WR_QR},
	{"reply_header_only", RRC_WIRE_DROP, RRC_WR_QR},
};

static void test_corpus_queries(void **state)
{
	uint8_t buf[4096];
	for (size_t i = 0; i < sizeof(query_cases) / sizeof(query_cases[0]); i++) {
		const struct expect *e = &query_cases[i];
		size_t n = corpus_load(e->file, buf, sizeof(buf));
		struct rrc_wire_query q;
		enum rrc_wire_reason reason;
		enum rrc_wire_verdict v = rrc_wire_check_query(buf, n, &q, &reason);
		if (v != e->verdict || reason != e->reason)
			fail_msg("%s: verdict %d reason %s, expected %d %s", e->file, v,
				 rrc_wire_reason_name(reason), e->verdict,
				 rrc_wire_reason_name(e->reason));
	}
}

static void test_query_fields(void **state)
{
	uint8_t buf[512];
	size_t n = corpus_load("good_query_edns", buf, sizeof(buf));
	struct rrc_wire_query q;
	enum rrc_wire_reason r;
	assert_int_equal(rrc_wire_check_query(buf, n, &q, &r), RRC_WIRE_OK);
	assert_int_equal(q.id, 0x1234);
	assert_int_equal(q.qname_len, 17);
	assert_int_equal(q.qtype, 1);
	assert_int_equal(q.qclass, 1);
	assert_true(q.has_edns);
	assert_true(q.edns_do);
	assert_false(q.has_ecs);
	assert_int_equal(q.edns_size, 1232);
	assert_int_equal(rrc_wire_udp_limit(&q), 1232);

	n = corpus_load("ecs_query", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_query(buf, n, &q, &r), RRC_WIRE_OK);
	assert_true(q.has_ecs);

	n = corpus_load("good_query", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_query(buf, n, &q, &r), RRC_WIRE_OK);
	assert_false(q.has_edns);
	assert_int_equal(rrc_wire_udp_limit(&q), 512);
}

static void test_udp_limit(void **state)
{
	struct rrc_wire_query q = {.has_edns = true, .edns_size = 100};
	assert_int_equal(rrc_wire_udp_limit(&q), 512); /* R13 */
	q.edns_size = 4096;
	assert_int_equal(rrc_wire_udp_limit(&q), 1232); /* R14 */
	q.edns_size = 800;
	assert_int_equal(rrc_wire_udp_limit(&q), 800);
}

static void test_key(void **state)
{
	/* C1, C6: case folded, flags in the key. */
	uint8_t a[] = {0x12, 0x34, 0x01, 0x00, 0,   1,	 0,   0,   0,	0, 0, 0, 3, 'W', 'w',
		       'W',  7,	   'E',	 'x',  'A', 'm', 'p', 'l', 'E', 0, 0, 1, 0, 1};
	uint8_t b[sizeof(a)];
	memcpy(b, a, sizeof(a));
	for (size_t i = 13; i < 24; i++)
		if (b[i] >= 'A' && b[i] <= 'Z')
			b[i] += 32;
	struct rrc_wire_query qa, qb;
	enum rrc_wire_reason r;
	assert_int_equal(rrc_wire_check_query(a, sizeof(a), &qa, &r), RRC_WIRE_OK);
	assert_int_equal(rrc_wire_check_query(b, sizeof(b), &qb, &r), RRC_WIRE_OK);
	uint8_t ka[RRC_WIRE_KEY_MAX], kb[RRC_WIRE_KEY_MAX];
	size_t la = rrc_wire_key(a, &qa, ka), lb = rrc_wire_key(b, &qb, kb);
	assert_int_equal(la, lb);
	assert_memory_equal(ka, kb, la);
	assert_int_equal(ka[la - 1], RRC_KEY_RD);
	/* CD changes the key. */
	b[3] |= 0x10;
	assert_int_equal(rrc_wire_check_query(b, sizeof(b), &qb, &r), RRC_WIRE_OK);
	lb = rrc_wire_key(b, &qb, kb);
	assert_int_equal(kb[lb - 1], RRC_KEY_RD | RRC_KEY_CD);
}

static void test_synth(void **state)
{
	uint8_t buf[512], out[600];
	struct rrc_wire_query q;
	enum rrc_wire_reason r;

	/* R4: QDCOUNT=2 -> FORMERR, header only, same ID. */
	size_t n = corpus_load("qdcount_2", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_query(buf, n, &q, &r), RRC_WIRE_FORMERR);
	size_t m = rrc_wire_synth(buf, &q, RRC_RCODE_FORMERR, false, out, sizeof(out));
	assert_int_equal(m, 12);
	assert_int_equal(rrc_get16(out), 0x1234);
	assert_int_equal(rrc_get16(out + 2) & 0x800F, 0x8001);
	assert_int_equal(rrc_get16(out + 4), 0);

	/* R9: BADVERS = 16: header rcode 0, OPT extended rcode 1, version 0. */
	n = corpus_load("edns_version_1", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_query(buf, n, &q, &r), RRC_WIRE_BADVERS);
	m = rrc_wire_synth(buf, &q, RRC_RCODE_BADVERS, false, out, sizeof(out));
	assert_int_equal(m, 12 + 21 + 11);
	assert_int_equal(rrc_get16(out + 2) & 0x0F, 0);
	assert_int_equal(rrc_get16(out + 6), 0);
	assert_int_equal(rrc_get16(out + 10), 1);
	const uint8_t *opt = out + 12 + 21;
	assert_int_equal(opt[0], 0);
	assert_int_equal(rrc_get16(opt + 1), RRC_TYPE_OPT);
	assert_int_equal(rrc_get16(opt + 3), RRC_WIRE_EDNS_SIZE);
	assert_int_equal(opt[5], 1); /* extended rcode */
	assert_int_equal(opt[6], 0); /* version */

	/* R6: NOTIMP keeps the opcode, echoes the question, AA=0, no records. */
	n = corpus_load("opcode_5", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_query(buf, n, &q, &r), RRC_WIRE_NOTIMP);
	m = rrc_wire_synth(buf, &q, RRC_RCODE_NOTIMP, false, out, sizeof(out));
	assert_int_equal(m, n);
	assert_int_equal((rrc_get16(out + 2) >> 11) & 0xF, 5);
	assert_int_equal(rrc_get16(out + 2) & RRC_F_AA, 0);
	assert_int_equal(rrc_get16(out + 2) & 0xF, RRC_RCODE_NOTIMP);

	/* R7: Z in the query is not copied. */
	n = corpus_load("z_flag", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_query(buf, n, &q, &r), RRC_WIRE_OK);
	m = rrc_wire_synth(buf, &q, RRC_RCODE_SERVFAIL, false, out, sizeof(out));
	assert_int_equal(rrc_get16(out + 2) & RRC_F_Z, 0);
}

/* Loads corpus reply name into buf, checks it and turns it into its stored form under pol.
 * Returns the lifetime; *len (if given) gets the loaded length. */
static uint32_t stored_life(const char *name, const struct rrc_wire_ttl_policy *pol, uint8_t *buf,
			    size_t cap, size_t *len)
{
	struct rrc_wire_reply r;
	uint32_t life;
	size_t n = corpus_load(name, buf, cap);
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	rrc_wire_make_stored(buf, n, &r, pol, &life);
	if (len)
		*len = n;
	return life;
}

/* A reply for a.test A with n answers (TTLs 100 + i, the first 3 with the top bit set when
 * top), an NS with an SOA in AUTHORITY when neg, then an OPT and one more record after it. */
static size_t big_reply(uint8_t *b, unsigned n, bool top)
{
	static const uint8_t q[] = {1, 'a', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
	memset(b, 0, RRC_WIRE_HDR);
	rrc_put16(b + 2, RRC_F_QR | RRC_F_RD | RRC_F_RA);
	rrc_put16(b + 4, 1);
	rrc_put16(b + 6, (uint16_t)n);
	rrc_put16(b + 10, 3);
	size_t len = RRC_WIRE_HDR;
	memcpy(b + len, q, sizeof(q));
	len += sizeof(q);
	for (unsigned i = 0; i < n; i++) {
		b[len++] = 0xC0; /* pointer to the question name */
		b[len++] = RRC_WIRE_HDR;
		rrc_put16(b + len, 1);
		rrc_put16(b + len + 2, 1);
		rrc_put32(b + len + 4, (top && i < 3) ? 0x80000000u : 100 + i);
		rrc_put16(b + len + 8, 4);
		len += 10;
		rrc_put32(b + len, 0xC0000200u + i);
		len += 4;
	}
	/* ADDITIONAL: an A record, the OPT, an A record after it. */
	for (int k = 0; k < 3; k++) {
		if (k == 1) {
			b[len++] = 0;
			rrc_put16(b + len, RRC_TYPE_OPT);
			rrc_put16(b + len + 2, 1232);
			rrc_put32(b + len + 4, 0);
			rrc_put16(b + len + 8, 0);
			len += 10;
			continue;
		}
		b[len++] = 0xC0;
		b[len++] = RRC_WIRE_HDR;
		rrc_put16(b + len, 1);
		rrc_put16(b + len + 2, 1);
		rrc_put32(b + len + 4, 50);
		rrc_put16(b + len + 8, 4);
		len += 10;
		rrc_put32(b + len, 0x7F000001u);
		len += 4;
	}
	return len;
}

/* The stored form is the same whether the record offsets the check kept are used (up to
 * RRC_WIRE_REPLY_TTLS records) or the records are walked again (more than that), and it passes
 * a new check; aging a checked reply updates it as a new check would. */
static void test_stored_form_without_walking_again(void **state)
{
	static const unsigned sizes[] = {5, RRC_WIRE_REPLY_TTLS - 1, RRC_WIRE_REPLY_TTLS,
					 RRC_WIRE_REPLY_TTLS + 7};
	struct rrc_wire_ttl_policy pol = {.min_ttl = 10, .max_ttl = 120, .max_negative_ttl = 3600};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		for (int top = 0; top < 2; top++) {
			uint8_t b[4096];
			struct rrc_wire_reply r, again;
			size_t n = big_reply(b, sizes[k], top);
			assert_int_equal(rrc_wire_check_reply(b, n, &r), 0);
			assert_int_equal(r.n_rr, sizes[k] + 2);
			assert_int_equal(r.ar_before_opt, 1);
			uint32_t life;
			size_t s = rrc_wire_make_stored(b, n, &r, &pol, &life);
			assert_int_equal(s, r.opt_off);
			assert_int_equal(rrc_get16(b + 10), 1);
			assert_int_equal(life, top ? 0 : 50); /* the additional A */
			assert_int_equal(rrc_wire_check_reply(b, s, &again), 0);
			assert_int_equal(again.opt_off, 0);
			/* Every answer's TTL clamped: 10..120. */
			size_t off = RRC_WIRE_HDR + 12;
			for (unsigned i = 0; i < sizes[k]; i++, off += 16) {
				uint32_t want = (top && i < 3) ? 10 : RRC_MIN(100 + i, 120);
				assert_int_equal(rrc_get32(b + off + 6), want);
			}
			assert_int_equal(rrc_get32(b + off + 6), 50);
			/* Aged by 30 s: as a new check finds it. */
			rrc_wire_reply_age(b, s, &again, 30);
			struct rrc_wire_reply fresh;
			assert_int_equal(rrc_wire_check_reply(b, s, &fresh), 0);
			assert_int_equal(again.min_ttl, fresh.min_ttl);
			assert_int_equal(again.soa_ttl, fresh.soa_ttl);
			assert_int_equal(rrc_get32(b + RRC_WIRE_HDR + 12 + 6), top ? 0 : 70);
		}
	}
}

static void test_reply_and_store(void **state)
{
	uint8_t buf[512];
	struct rrc_wire_reply r;
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	uint32_t life;

	size_t n = corpus_load("reply_with_opt", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	assert_int_not_equal(r.opt_off, 0);
	size_t s = rrc_wire_make_stored(buf, n, &r, &pol, &life);
	assert_int_equal(s, n - 11); /* U8: the upstream's OPT is gone */
	assert_int_equal(rrc_get16(buf + 10), 0);
	assert_int_equal(life, 300);

	/* C2: a TTL with the top bit set counts as 0: never cached. */
	n = corpus_load("reply_ttl_top_bit", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	assert_int_equal(r.min_ttl, 0);
	rrc_wire_make_stored(buf, n, &r, &pol, &life);
	assert_int_equal(life, 0);

	/* C4: NXDOMAIN cached for min(SOA TTL, MINIMUM) = 60, SOA TTL rewritten. */
	n = corpus_load("reply_nxdomain_soa", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	assert_true(r.has_soa);
	assert_int_equal(r.soa_minimum, 60);
	s = rrc_wire_make_stored(buf, n, &r, &pol, &life);
	assert_int_equal(life, 60);
	pol.max_negative_ttl = 10;
	assert_int_equal(stored_life("reply_nxdomain_soa", &pol, buf, sizeof(buf), NULL), 10);

	/* min_ttl raises a negative TTL too (found by the fuzzer); SOA MINIMUM 0 is never
	 * cached whatever min_ttl says (RFC 2308 §5). */
	pol.min_ttl = 30;
	pol.max_negative_ttl = 3600;
	assert_int_equal(stored_life("reply_nxdomain_soa", &pol, buf, sizeof(buf), NULL), 60);
	assert_int_equal(stored_life("reply_nxdomain_soa_minimum_1", &pol, buf, sizeof(buf), NULL),
			 30);
	n = corpus_load("reply_nxdomain_soa", buf, sizeof(buf));
	rrc_put32(buf + n - 4, 0); /* MINIMUM 0 */
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	rrc_wire_make_stored(buf, n, &r, &pol, &life);
	assert_int_equal(life, 0);
	pol.min_ttl = 0;

	/* Found by the fuzzer: a name whose labels, reached through a pointer, run on past the
	 * pointer; a pointer into the header; a name read through a TTL that gets rewritten. */
	n = corpus_load("reply_pointer_overlaps_own_record", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), -1);
	n = corpus_load("reply_pointer_into_header", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), -1);
	/* A name that reads an earlier record's TTL bytes is refused outright (TTLs are
	 * rewritten on every hit and for serve-stale). */
	n = corpus_load("reply_name_through_ttl_stale", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), -1);
	n = corpus_load("reply_name_through_rewritten_ttl", buf, sizeof(buf));
	if (rrc_wire_check_reply(buf, n, &r) == 0) {
		uint8_t copy[512];
		memcpy(copy, buf, n);
		size_t sl = rrc_wire_make_stored(copy, n, &r, &pol, &life);
		struct rrc_wire_reply r3;
		assert_true(sl == 0 || rrc_wire_check_reply(copy, sl, &r3) == 0);
	}

	/* RFC 9267: a reply of 127-hop pointer chains runs out of its step budget. */
	uint8_t big[4096];
	n = corpus_load("pointer_chains_reply", big, sizeof(big));
	assert_int_equal(rrc_wire_check_reply(big, n, &r), -1);

	/* U5: header-only and non-replies are malformed. */
	n = corpus_load("reply_header_only", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), -1);
	n = corpus_load("good_query", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), -1);
	/* R15 on replies: pointer games are malformed. */
	const char *bad[] = {"pointer_loop", "self_pointer",  "forward_pointer",   "label_64",
			     "name_256",     "label_type_40", "rdlength_past_end", "ancount_65535"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = corpus_load(bad[i], buf, sizeof(buf));
		buf[2] |= 0x80;
		if (rrc_wire_check_reply(buf, n, &r) != -1)
			fail_msg("%s accepted as a reply", bad[i]);
	}
}

static void test_ttl_clamp(void **state)
{
	uint8_t buf[512];
	size_t n;
	struct rrc_wire_ttl_policy pol = {
		.min_ttl = 600, .max_ttl = 86400, .max_negative_ttl = 3600};
	assert_int_equal(stored_life("reply_a", &pol, buf, sizeof(buf), NULL), 600);
	pol.min_ttl = 0;
	pol.max_ttl = 100;
	assert_int_equal(stored_life("reply_a", &pol, buf, sizeof(buf), &n), 100);
	assert_int_equal(rrc_get32(buf + n - 10), 100);
}

static void test_finish(void **state)
{
	uint8_t buf[600];
	struct rrc_wire_reply r;
	uint32_t life;
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	size_t n = corpus_load("reply_a", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	size_t s = rrc_wire_make_stored(buf, n, &r, &pol, &life);

	/* C6: the client's case; C2: TTL aged; R12: no OPT without one in the query. */
	const uint8_t qname[] = {3,   'W', 'W', 'W', 7,	  'e', 'X', 'a', 'm',
				 'p', 'l', 'e', 3,   'C', 'O', 'M', 0};
	struct rrc_wire_client c = {.id = 0xBEEF,
				    .flags = RRC_F_RD,
				    .qname = qname,
				    .qname_len = sizeof(qname),
				    .has_edns = false,
				    .limit = 512};
	uint8_t out[600];
	memcpy(out, buf, s);
	size_t m = rrc_wire_finish(out, s, sizeof(out), 100, &c);
	assert_int_equal(m, s);
	assert_int_equal(rrc_get16(out), 0xBEEF);
	assert_memory_equal(out + 12, qname, sizeof(qname));
	assert_int_equal(rrc_get32(out + m - 10), 200);
	assert_int_equal(rrc_get16(out + 10), 0);

	/* An age beyond the TTL floors at 0. */
	memcpy(out, buf, s);
	rrc_wire_finish(out, s, sizeof(out), 1000, &c);
	assert_int_equal(rrc_get32(out + s - 10), 0);

	/* With EDNS and DO: our OPT with DO. */
	c.has_edns = true;
	c.edns_do = true;
	c.limit = 1232;
	memcpy(out, buf, s);
	m = rrc_wire_finish(out, s, sizeof(out), 0, &c);
	assert_int_equal(m, s + 11);
	assert_int_equal(rrc_get16(out + 10), 1);
	assert_int_equal(rrc_get16(out + m - 4) & 0x8000, 0x8000);

	/* R14: too big for the limit -> header + question + OPT, TC=1. */
	c.limit = (uint16_t)(s + 5);
	memcpy(out, buf, s);
	m = rrc_wire_finish(out, s, sizeof(out), 0, &c);
	assert_int_equal(m, 12 + 17 + 4 + 11);
	assert_int_equal(rrc_get16(out + 2) & RRC_F_TC, RRC_F_TC);
	assert_int_equal(rrc_get16(out + 6), 0);
	assert_int_equal(rrc_get16(out + 10), 1);
}

static void test_set_ttls(void **state)
{
	uint8_t buf[512];
	struct rrc_wire_reply r;
	uint32_t life;
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	size_t n = corpus_load("reply_nxdomain_soa", buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	size_t s = rrc_wire_make_stored(buf, n, &r, &pol, &life);
	assert_int_equal(rrc_wire_set_ttls(buf, s, 30), 0);
	assert_int_equal(rrc_wire_check_reply(buf, s, &r), 0);
	assert_int_equal(r.soa_ttl, 30);
	assert_int_equal(r.min_ttl, 30);
	assert_int_equal(rrc_wire_set_ttls(buf, 5, 30), -1);
}

static void test_name_bounds(void **state)
{
	/* 127 labels of 1 octet = 255 octets: the longest legal name. */
	uint8_t p[300] = {0};
	size_t o = 0;
	for (int i = 0; i < 127; i++) {
		p[o++] = 1;
		p[o++] = 'a';
	}
	p[o++] = 0;
	size_t end, len;
	assert_int_equal(rrc_wire_name(p, o, 0, &end, &len, NULL), 0);
	assert_int_equal(len, 255);
	/* One more label: 257 > 255. */
	memmove(p + 2, p, o);
	p[0] = 1;
	p[1] = 'b';
	assert_int_equal(rrc_wire_name(p, o + 2, 0, &end, &len, NULL), -1);
	/* A pointer chain that goes strictly back is fine, lowercased on output. Names start
	 * after a 12-byte header, as in a message. */
	uint8_t q[] = {0, 0,   0, 0, 0,	  0,	0,  0, 0,   0,	  0, 0,
		       1, 'A', 0, 1, 'B', 0xC0, 12, 1, 'C', 0xC0, 15};
	uint8_t out[RRC_WIRE_MAX_NAME];
	assert_int_equal(rrc_wire_name(q, sizeof(q), 19, &end, &len, out), 0);
	assert_int_equal(end, sizeof(q));
	assert_int_equal(len, 7);
	assert_memory_equal(out, "\1c\1b\1a\0", 7);
	/* A chain whose second pointer goes back up past the first target is rejected:
	 * 17 'B' -> ptr 12 'A' -> ptr 17 (not below 12): a loop. */
	uint8_t loop[] = {0, 0, 0,   0,	   0,  0, 0, 0,	  0,	0, 0,
			  0, 1, 'A', 0xC0, 17, 0, 1, 'B', 0xC0, 12};
	assert_int_equal(rrc_wire_name(loop, sizeof(loop), 17, &end, &len, NULL), -1);
	/* A pointer into the header is rejected. */
	uint8_t hdrptr[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'A', 0xC0, 2};
	assert_int_equal(rrc_wire_name(hdrptr, sizeof(hdrptr), 12, &end, &len, NULL), -1);
}

static void test_build_query(void **state)
{
	uint8_t out[300];
	const uint8_t name[] = {3, 'w', 'w', 'w', 0};
	size_t n = rrc_wire_build_query(out, sizeof(out), 77, name, sizeof(name), 28, 1,
					RRC_F_RD | RRC_F_CD | RRC_F_AA, true, true);
	struct rrc_wire_query q;
	enum rrc_wire_reason r;
	assert_int_equal(rrc_wire_check_query(out, n, &q, &r), RRC_WIRE_OK);
	assert_int_equal(q.id, 77);
	assert_int_equal(q.flags, RRC_F_RD | RRC_F_CD);
	assert_true(q.has_edns && q.edns_do);
	assert_int_equal(q.qtype, 28);
	/* AD asks for AD in the answer (RFC 6840 §5.7); QR, AA, TC, RA and Z never go out. */
	n = rrc_wire_build_query(out, sizeof(out), 78, name, sizeof(name), 1, 1, 0xffff, false,
				 false);
	assert_int_equal(rrc_wire_check_query(out, n, &q, &r), RRC_WIRE_OK);
	assert_int_equal(q.flags, RRC_F_RD | RRC_F_CD | RRC_F_AD);
	assert_int_equal(
		rrc_wire_build_query(out, 10, 1, name, sizeof(name), 1, 1, 0, false, false), 0);
}

/* RFC 8467 / RFC 7828: a query padded to 128 octets with a keepalive option before the
 * padding; a message that does not end with an empty OPT goes as it is; the keepalive of a
 * reply read back. */
static void test_pad_and_keepalive(void **state)
{
	uint8_t out[600];
	const uint8_t name[] = {3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
	size_t n = rrc_wire_build_query(out, sizeof(out), 9, name, sizeof(name), 1, 1, RRC_F_RD,
					true, false);
	size_t p = rrc_wire_pad_query(out, n, sizeof(out), RRC_PAD_QUERY_BLOCK, true);
	assert_int_equal(p, 128);
	struct rrc_wire_query q;
	enum rrc_wire_reason why;
	assert_int_equal(rrc_wire_check_query(out, p, &q, &why), RRC_WIRE_OK);
	assert_true(q.has_edns);
	assert_int_equal(rrc_get16(out + n), RRC_EDNS_OPT_KEEPALIVE);
	assert_int_equal(rrc_get16(out + n + 4), RRC_EDNS_OPT_PADDING);
	assert_int_equal(rrc_get16(out + n - 2), p - n);
	/* Without keepalive; a block of 468 (RFC 8467's for answers). */
	n = rrc_wire_build_query(out, sizeof(out), 9, name, sizeof(name), 1, 1, 0, true, true);
	assert_int_equal(rrc_wire_pad_query(out, n, sizeof(out), 468, false), 468);
	/* Too small a buffer: 0. No OPT at the end: unchanged. */
	n = rrc_wire_build_query(out, sizeof(out), 9, name, sizeof(name), 1, 1, 0, true, false);
	assert_int_equal(rrc_wire_pad_query(out, n, 100, 128, true), 0);
	n = rrc_wire_build_query(out, sizeof(out), 9, name, sizeof(name), 1, 1, 0, false, false);
	assert_int_equal(rrc_wire_pad_query(out, n, sizeof(out), 128, true), n);

	/* A reply whose OPT has a padding option, then keepalive 1234 (123.4 s). */
	n = rrc_wire_build_query(out, sizeof(out), 9, name, sizeof(name), 1, 1, 0, true, false);
	rrc_put16(out + 2, RRC_F_QR);
	static const uint8_t opts[] = {0, 12, 0, 2, 0, 0, 0, 11, 0, 2, 0x04, 0xd2};
	memcpy(out + n, opts, sizeof(opts));
	rrc_put16(out + n - 2, sizeof(opts));
	struct rrc_wire_reply r;
	assert_int_equal(rrc_wire_check_reply(out, n + sizeof(opts), &r), 0);
	assert_int_equal(rrc_wire_keepalive(out, &r), 1234);
	rrc_put16(out + n + 8, 3); /* a keepalive of the wrong length: none */
	assert_int_equal(rrc_wire_keepalive(out, &r), -1);
	n = rrc_wire_build_query(out, sizeof(out), 9, name, sizeof(name), 1, 1, 0, false, false);
	rrc_put16(out + 2, RRC_F_QR);
	assert_int_equal(rrc_wire_check_reply(out, n, &r), 0);
	assert_int_equal(rrc_wire_keepalive(out, &r), -1);
}

/* A reply carrying a TSIG is refused: rrcache signs nothing, and ldns 1.8.3 leaks on
 * malformed TSIG records (found by fuzz_reply; the input is in corpus_reply). */
static void test_reply_with_tsig_refused(void **state)
{
	uint8_t pkt[600];
	size_t len = corpus_load("reply_a", pkt, sizeof(pkt) - 11);
	struct rrc_wire_reply r;
	assert_int_equal(rrc_wire_check_reply(pkt, len, &r), 0);
	static const uint8_t tsig[] = {0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 0};
	memcpy(pkt + len, tsig, sizeof(tsig));
	rrc_put16(pkt + 10, (uint16_t)(rrc_get16(pkt + 10) + 1));
	assert_int_equal(rrc_wire_check_reply(pkt, len + sizeof(tsig), &r), -1);
	uint8_t leak[256];
	size_t n = corpus_load_from(RRC_CORPUS_DIR "/../corpus_reply/reply_two_tsig_ldns_leak",
				    leak, sizeof(leak));
	assert_int_equal(rrc_wire_check_reply(leak, n, &r), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_corpus_queries),
		cmocka_unit_test(test_query_fields),
		cmocka_unit_test(test_udp_limit),
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_synth),
		cmocka_unit_test(test_reply_and_store),
		cmocka_unit_test(test_stored_form_without_walking_again),
		cmocka_unit_test(test_reply_with_tsig_refused),
		cmocka_unit_test(test_ttl_clamp),
		cmocka_unit_test(test_finish),
		cmocka_unit_test(test_name_bounds),
		cmocka_unit_test(test_set_ttls),
		cmocka_unit_test(test_build_query),
		cmocka_unit_test(test_pad_and_keepalive),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
