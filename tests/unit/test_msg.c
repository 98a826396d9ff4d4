/* Unit tests of msg: the DNSSEC records a client without DO must not get (RFC 4035 §3.2.1),
 * counted by wire's check, taken out by msg, and refused in a value read back (l2value). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ldns/ldns.h>

#include "rrcache/l2value.h"
#include "rrcache/msg.h"
#include "rrcache/wire.h"

static const char *const signed_answer[] = {
	"an www.example.test. 300 IN A 192.0.2.1",
	"an www.example.test. 300 IN RRSIG A 13 3 300 20370101000000 20200101000000 4711 "
	"example.test. dGVzdA==",
	"ns example.test. 300 IN NS ns.example.test.",
	"ns example.test. 300 IN RRSIG NS 13 2 300 20370101000000 20200101000000 4711 "
	"example.test. dGVzdA==",
	"ns example.test. 300 IN NSEC ns.example.test. NS SOA RRSIG NSEC DNSKEY",
	"ns example.test. 300 IN NSEC3 1 0 0 - 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR NS SOA RRSIG",
	"ar ns.example.test. 300 IN A 192.0.2.53",
	NULL,
};

/* A reply to NAME TYPE with the records of lines ("an ", "ns " or "ar " and the record),
 * with an OPT when edns. Returns its length in out. */
static size_t build(const char *name, ldns_rr_type type, const char *const *lines, bool edns,
		    uint8_t *out, size_t cap)
{
	ldns_pkt *p = NULL;
	assert_int_equal(ldns_pkt_query_new_frm_str(&p, name, type, LDNS_RR_CLASS_IN, LDNS_RD),
			 LDNS_STATUS_OK);
	ldns_pkt_set_qr(p, true);
	ldns_pkt_set_id(p, 4711);
	for (size_t i = 0; lines[i]; i++) {
		ldns_rr *rr = NULL;
		assert_int_equal(ldns_rr_new_frm_str(&rr, lines[i] + 3, 0, NULL, NULL),
				 LDNS_STATUS_OK);
		ldns_pkt_section s = lines[i][0] == 'a' && lines[i][1] == 'n' ? LDNS_SECTION_ANSWER
				     : lines[i][0] == 'n' ? LDNS_SECTION_AUTHORITY
							  : LDNS_SECTION_ADDITIONAL;
		assert_true(ldns_pkt_push_rr(p, s, rr));
	}
	if (edns)
		ldns_pkt_set_edns_udp_size(p, 1232);
	uint8_t *wire = NULL;
	size_t n = 0;
	assert_int_equal(ldns_pkt2wire(&wire, p, &n), LDNS_STATUS_OK);
	assert_true(n <= cap);
	memcpy(out, wire, n);
	free(wire);
	ldns_pkt_free(p);
	return n;
}

/* The records of a section of a message, as ldns prints them, one per line. */
static char *section_text(const uint8_t *pkt, size_t len, ldns_pkt_section s)
{
	ldns_pkt *p = NULL;
	assert_int_equal(ldns_wire2pkt(&p, pkt, len), LDNS_STATUS_OK);
	ldns_rr_list *l = ldns_pkt_get_section_clone(p, s);
	char *text = ldns_rr_list2str(l);
	ldns_rr_list_deep_free(l);
	ldns_pkt_free(p);
	return text;
}

static void test_counted_and_removed(void **state)
{
	uint8_t buf[1024];
	struct rrc_wire_reply r;
	size_t n =
		build("www.example.test.", LDNS_RR_TYPE_A, signed_answer, true, buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	assert_int_equal(r.n_dnssec, 4);
	size_t s = rrc_msg_strip_dnssec(buf, n);
	assert_true(s > 0 && s < n);
	assert_int_equal(rrc_wire_check_reply(buf, s, &r), 0);
	assert_int_equal(r.n_dnssec, 0);
	assert_int_equal(r.ancount, 1);
	assert_int_equal(r.nscount, 1);
	assert_int_equal(r.arcount, 2); /* the glue and the OPT */
	assert_int_not_equal(r.opt_off, 0);
	assert_int_equal(rrc_get16(buf), 4711);
	assert_int_equal(rrc_msg_check_reply(buf, s), 0);
	/* What stays is what was there, record for record. */
	char *an = section_text(buf, s, LDNS_SECTION_ANSWER);
	char *ns = section_text(buf, s, LDNS_SECTION_AUTHORITY);
	char *ar = section_text(buf, s, LDNS_SECTION_ADDITIONAL);
	assert_string_equal(an, "www.example.test.\t300\tIN\tA\t192.0.2.1\n");
	assert_string_equal(ns, "example.test.\t300\tIN\tNS\tns.example.test.\n");
	assert_string_equal(ar, "ns.example.test.\t300\tIN\tA\t192.0.2.53\n");
	free(an);
	free(ns);
	free(ar);
	/* The stored form of the result is an answer like any other. */
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	uint32_t life = 0;
	assert_true(rrc_wire_make_stored(buf, s, &r, &pol, &life) > 0);
	assert_int_equal(life, 300);
}

/* A question for the type itself, or ANY, asks for it in the answer section; never
 * elsewhere. Nothing to remove: 0, the caller keeps the reply as it is. */
static void test_asked_types_kept(void **state)
{
	uint8_t buf[1024];
	struct rrc_wire_reply r;
	static const char *const rrsig_answer[] = {
		"an www.example.test. 300 IN RRSIG A 13 3 300 20370101000000 20200101000000 4711 "
		"example.test. dGVzdA==",
		NULL,
	};
	size_t n = build("www.example.test.", LDNS_RR_TYPE_RRSIG, rrsig_answer, false, buf,
			 sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	assert_int_equal(r.n_dnssec, 0);
	assert_int_equal(rrc_msg_strip_dnssec(buf, n), 0);

	n = build("www.example.test.", LDNS_RR_TYPE_ANY, signed_answer, false, buf, sizeof(buf));
	assert_int_equal(rrc_wire_check_reply(buf, n, &r), 0);
	assert_int_equal(r.n_dnssec, 3); /* the answer's RRSIG stays */
	size_t s = rrc_msg_strip_dnssec(buf, n);
	assert_int_equal(rrc_wire_check_reply(buf, s, &r), 0);
	assert_int_equal(r.ancount, 2);
	assert_int_equal(r.nscount, 1);

	/* NSEC asked: the NSEC in AUTHORITY is still not the answer. */
	assert_true(rrc_wire_dnssec_unasked(RRC_TYPE_NSEC, 1, RRC_TYPE_NSEC));
	assert_false(rrc_wire_dnssec_unasked(RRC_TYPE_NSEC, 0, RRC_TYPE_NSEC));
	assert_true(rrc_wire_dnssec_unasked(RRC_TYPE_NSEC3, 0, RRC_TYPE_A));
	assert_false(rrc_wire_dnssec_unasked(48 /* DNSKEY */, 0, RRC_TYPE_A));
	assert_false(rrc_wire_dnssec_unasked(43 /* DS */, 1, RRC_TYPE_A));

	/* Garbage is not rewritten. */
	memset(buf, 0xff, 64);
	assert_int_equal(rrc_msg_strip_dnssec(buf, 64), 0);
	assert_int_equal(rrc_msg_strip_dnssec(buf, 5), 0);
}

/* A value from Redis or the cache file: DNSSEC records under a key without DO are refused
 * (no instance writes them), the same value under a DO key is accepted. */
static void test_value_with_dnssec_records(void **state)
{
	uint8_t buf[1024], copy[1024];
	struct rrc_wire_ttl_policy pol = {.min_ttl = 0, .max_ttl = 86400, .max_negative_ttl = 3600};
	size_t n =
		build("www.example.test.", LDNS_RR_TYPE_A, signed_answer, false, buf, sizeof(buf));
	uint8_t key[RRC_WIRE_KEY_MAX];
	size_t qlen;
	assert_int_equal(rrc_msg_name_from_text("www.example.test", key, &qlen), 0);
	rrc_put16(key + qlen, RRC_TYPE_A);
	rrc_put16(key + qlen + 2, 1);
	uint32_t life;
	for (int f = 0; f < 16; f++) {
		key[qlen + 4] = (uint8_t)f;
		memcpy(copy, buf, n);
		size_t s = rrc_l2_accept(copy, n, key, qlen + 5, 0, 300, &pol, &life);
		if (f & RRC_KEY_DO)
			assert_int_equal(s, n);
		else
			assert_int_equal(s, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counted_and_removed),
		cmocka_unit_test(test_asked_types_kept),
		cmocka_unit_test(test_value_with_dnssec_records),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
