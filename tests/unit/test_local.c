/*
 * local: records of every common type, CNAMEs followed inside the data, NODATA with an SOA,
 * hosts files (A, AAAA, PTR, qualified names, lines skipped), the empty zones of RFC 6303
 * (NXDOMAIN, NODATA above data, a pool claiming a name), parse errors, a buffer too small.
 * Answers are read back with ldns.
 */
#include "rrcache/local.h"
#include "rrcache/msg.h"
#include "rrcache/wire.h"

#include <errno.h>
#include <ldns/ldns.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

struct answer {
	ldns_pkt *pkt;
	enum rrc_local_source src;
	size_t len;
};

/* The local answer to name/type, parsed (pkt NULL when not local). */
static struct answer ask(const struct rrc_local *l, const char *name, uint16_t type,
			 const struct rrc_route *pools)
{
	uint8_t q[256], out[4096];
	size_t qlen;
	assert_int_equal(rrc_msg_name_from_text(name, q, &qlen), 0);
	struct answer a = {0};
	a.len = rrc_local_answer(l, q, qlen, type, 1, pools, out, sizeof(out), &a.src);
	if (a.len)
		assert_int_equal(ldns_wire2pkt(&a.pkt, out, a.len), LDNS_STATUS_OK);
	return a;
}

static void done(struct answer *a)
{
	ldns_pkt_free(a->pkt);
}

/* The answer section as text, records separated by '|', without TTLs' tabs. */
static char *answer_text(const ldns_pkt *p, char *buf, size_t cap)
{
	buf[0] = '\0';
	ldns_rr_list *an = ldns_pkt_answer(p);
	for (size_t i = 0; i < ldns_rr_list_rr_count(an); i++) {
		char *s = ldns_rr2str(ldns_rr_list_rr(an, i));
		for (char *t = s; *t; t++)
			if (*t == '\t' || *t == '\n')
				*t = *t == '\t' ? ' ' : '\0';
		snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? "|" : "", s);
		free(s);
	}
	return buf;
}

static struct rrc_local *with_records(const char *const *records, size_t n)
{
	struct rrc_local *l = rrc_local_create(60);
	char err[RRC_ERR_LEN];
	for (size_t i = 0; i < n; i++) {
		int rc = rrc_local_add_record(l, records[i], err);
		if (rc)
			fail_msg("%s: %s", records[i], err);
	}
	return l;
}

static void test_records(void **state)
{
	static const char *const recs[] = {
		"printer.lan. 300 IN A 192.168.1.20",
		"printer.lan. AAAA fd00::20",
		"Www.Lan CNAME printer.lan.",
		"alias.lan. CNAME www.lan.",
		"out.lan. CNAME elsewhere.example.",
		"txt.lan. TXT \"hello world\"",
		"lan. MX 10 mail.lan.",
		"_sip._udp.lan. SRV 0 5 5060 printer.lan.",
		"20.1.168.192.in-addr.arpa. PTR printer.lan.",
	};
	struct rrc_local *l = with_records(recs, RRC_ARRAY_SIZE(recs));
	assert_int_equal(rrc_local_records(l), RRC_ARRAY_SIZE(recs));
	char t[1024];

	struct answer a = ask(l, "PRINTER.lan", RRC_TYPE_A, NULL);
	assert_non_null(a.pkt);
	assert_int_equal(a.src, RRC_LOCAL_RECORDS);
	assert_true(ldns_pkt_aa(a.pkt) && ldns_pkt_qr(a.pkt));
	assert_int_equal(ldns_pkt_get_rcode(a.pkt), LDNS_RCODE_NOERROR);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)), "printer.lan. 300 IN A 192.168.1.20");
	done(&a);
	a = ask(l, "printer.lan", RRC_TYPE_AAAA, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)), "printer.lan. 60 IN AAAA fd00::20");
	done(&a);
	/* Two CNAMEs followed to the address. */
	a = ask(l, "alias.lan", RRC_TYPE_A, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)),
			    "alias.lan. 60 IN CNAME www.lan.|www.lan. 60 IN CNAME printer.lan.|"
			    "printer.lan. 300 IN A 192.168.1.20");
	done(&a);
	/* The CNAME itself when asked; one leading out of the data stops there. */
	a = ask(l, "www.lan", 5, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)), "www.lan. 60 IN CNAME printer.lan.");
	done(&a);
	a = ask(l, "out.lan", RRC_TYPE_A, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)),
			    "out.lan. 60 IN CNAME elsewhere.example.");
	done(&a);
	a = ask(l, "txt.lan", 16, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)), "txt.lan. 60 IN TXT \"hello world\"");
	done(&a);
	a = ask(l, "lan", 15, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)), "lan. 60 IN MX 10 mail.lan.");
	done(&a);
	a = ask(l, "_sip._udp.lan", 33, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)),
			    "_sip._udp.lan. 60 IN SRV 0 5 5060 printer.lan.");
	done(&a);
	/* NODATA: the name has data, not of this type: an SOA owned by it, TTL 60. */
	a = ask(l, "txt.lan", RRC_TYPE_A, NULL);
	assert_int_equal(ldns_pkt_get_rcode(a.pkt), LDNS_RCODE_NOERROR);
	assert_int_equal(ldns_pkt_ancount(a.pkt), 0);
	assert_int_equal(ldns_pkt_nscount(a.pkt), 1);
	ldns_rr *soa = ldns_rr_list_rr(ldns_pkt_authority(a.pkt), 0);
	assert_int_equal(ldns_rr_get_type(soa), LDNS_RR_TYPE_SOA);
	assert_int_equal(ldns_rr_ttl(soa), 60);
	done(&a);
	/* ANY: every RRset of the name. */
	a = ask(l, "printer.lan", RRC_TYPE_ANY, NULL);
	assert_int_equal(ldns_pkt_ancount(a.pkt), 2);
	done(&a);
	/* Not local: forwarded. Names above local data are not answered outside an empty
	 * zone (the upstream may have them). */
	a = ask(l, "other.lan", RRC_TYPE_A, NULL);
	assert_null(a.pkt);
	a = ask(l, "udp.lan", RRC_TYPE_A, NULL);
	assert_null(a.pkt);
	/* Class CH is never local. */
	uint8_t q[64], out[512];
	size_t qlen;
	enum rrc_local_source src;
	rrc_msg_name_from_text("printer.lan", q, &qlen);
	assert_int_equal(rrc_local_answer(l, q, qlen, RRC_TYPE_A, 3, NULL, out, sizeof(out), &src),
			 0);
	/* Too small a buffer: no answer rather than half of one. */
	assert_int_equal(rrc_local_answer(l, q, qlen, RRC_TYPE_ANY, 1, NULL, out, 40, &src), 0);
	rrc_local_destroy(l);
}

static void test_record_errors(void **state)
{
	struct rrc_local *l = rrc_local_create(60);
	char err[RRC_ERR_LEN];
	assert_int_equal(rrc_local_add_record(l, "printer.lan. A 300.1.1.1", err), -EINVAL);
	assert_true(err[0]);
	assert_int_equal(rrc_local_add_record(l, "printer.lan. BOGUS 1", err), -EINVAL);
	assert_int_equal(rrc_local_add_record(l, "printer.lan. CH A 192.0.2.1", err), -EINVAL);
	assert_int_equal(rrc_local_add_record(l, "lan. SOA a. b. 1 2 3 4 5", err), -EINVAL);
	assert_int_equal(rrc_local_add_record(l, "", err), -EINVAL);
	assert_int_equal(rrc_local_records(l), 0);
	rrc_local_destroy(l);
}

static void test_hosts_file(void **state)
{
	char path[] = "/tmp/rrc-test-hosts-XXXXXX";
	int fd = mkstemp(path);
	const char text[] = "# a hosts file\n"
			    "127.0.0.1 localhost\n"
			    "192.168.1.20  nas nas-alias   # the NAS\n"
			    "192.168.1.21\tprinter.office.lan\n"
			    "fd00::21 printer.office.lan\n"
			    "0.0.0.0 ads.example\n"
			    "not-an-address name\n"
			    "192.168.1.22 bad/name\n"
			    "192.168.1.20 nas\n";
	assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);
	struct rrc_local *l = rrc_local_create(120);
	char err[RRC_ERR_LEN], t[1024];
	unsigned skipped = 0;
	int n = rrc_local_add_hosts(l, path, "lan", &skipped, err);
	unlink(path);
	/* localhost, nas, nas-alias bare and qualified; printer.office.lan twice (A, AAAA). */
	assert_int_equal(n, 2 + 2 + 2 + 1 + 1 + 2);
	assert_int_equal(skipped, 2);
	struct answer a = ask(l, "nas", RRC_TYPE_A, NULL);
	assert_int_equal(a.src, RRC_LOCAL_HOSTS);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)), "nas. 120 IN A 192.168.1.20");
	done(&a);
	a = ask(l, "nas-alias.lan", RRC_TYPE_A, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)),
			    "nas-alias.lan. 120 IN A 192.168.1.20");
	done(&a);
	a = ask(l, "printer.office.lan", RRC_TYPE_AAAA, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)),
			    "printer.office.lan. 120 IN AAAA fd00::21");
	done(&a);
	/* PTR: the line's first name, qualified. */
	a = ask(l, "20.1.168.192.in-addr.arpa", 12, NULL);
	assert_string_equal(answer_text(a.pkt, t, sizeof(t)),
			    "20.1.168.192.in-addr.arpa. 120 IN PTR nas.lan.");
	done(&a);
	a = ask(l, "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", 12,
		NULL);
	assert_string_equal(
		answer_text(a.pkt, t, sizeof(t)),
		"1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. "
		"120 IN PTR printer.office.lan.");
	done(&a);
	a = ask(l, "ads.example", RRC_TYPE_A, NULL);
	assert_null(a.pkt);
	assert_int_equal(rrc_local_add_hosts(l, "/nonexistent/hosts", "", &skipped, err), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/hosts"));
	rrc_local_destroy(l);
}

static void test_empty_zones(void **state)
{
	static const char *const recs[] = {"20.1.168.192.in-addr.arpa. PTR printer.lan."};
	struct rrc_local *l = with_records(recs, 1);
	assert_int_equal(rrc_local_add_empty_zones(l), 0);
	/* NXDOMAIN with the zone's SOA (RFC 6303 §3). */
	struct answer a = ask(l, "7.0.0.10.in-addr.arpa", 12, NULL);
	assert_int_equal(a.src, RRC_LOCAL_EMPTY_ZONE);
	assert_int_equal(ldns_pkt_get_rcode(a.pkt), LDNS_RCODE_NXDOMAIN);
	assert_true(ldns_pkt_aa(a.pkt));
	ldns_rr *soa = ldns_rr_list_rr(ldns_pkt_authority(a.pkt), 0);
	char *owner = ldns_rdf2str(ldns_rr_owner(soa));
	assert_string_equal(owner, "10.in-addr.arpa.");
	free(owner);
	assert_int_equal(ldns_rr_ttl(soa), 10800);
	done(&a);
	for (const char *const *n =
		     (const char *const[]){"1.0.16.172.in-addr.arpa", "1.0.31.172.in-addr.arpa",
					   "9.9.100.100.in-addr.arpa", "1.0.0.127.in-addr.arpa",
					   "5.5.254.169.in-addr.arpa", "x.home.arpa", "home.arpa",
					   "a.b.c.d.f.ip6.arpa", "8.e.f.ip6.arpa", NULL};
	     *n; n++) {
		a = ask(l, *n, 12, NULL);
		if (!a.pkt)
			fail_msg("%s: not answered", *n);
		done(&a);
	}
	/* Public ranges are forwarded. */
	for (const char *const *n =
		     (const char *const[]){"1.0.32.172.in-addr.arpa", "8.8.8.8.in-addr.arpa",
					   "1.0.0.2.ip6.arpa", "arpa", NULL};
	     *n; n++) {
		a = ask(l, *n, 12, NULL);
		assert_null(a.pkt);
	}
	/* Local data inside a zone is answered; a name above it is NODATA, not NXDOMAIN. */
	a = ask(l, "20.1.168.192.in-addr.arpa", 12, NULL);
	assert_int_equal(ldns_pkt_ancount(a.pkt), 1);
	done(&a);
	a = ask(l, "1.168.192.in-addr.arpa", 12, NULL);
	assert_int_equal(ldns_pkt_get_rcode(a.pkt), LDNS_RCODE_NOERROR);
	assert_int_equal(ldns_pkt_ancount(a.pkt), 0);
	done(&a);
	/* A pool that claims a name takes it from the empty zone (not from local data). */
	struct rrc_route *pools = rrc_route_create();
	uint8_t w[64];
	size_t wl;
	rrc_msg_name_from_text("10.in-addr.arpa", w, &wl);
	assert_int_equal(rrc_route_add(pools, w, wl, 1), 0);
	a = ask(l, "7.0.0.10.in-addr.arpa", 12, pools);
	assert_null(a.pkt);
	rrc_msg_name_from_text("168.192.in-addr.arpa", w, &wl);
	assert_int_equal(rrc_route_add(pools, w, wl, 2), 0);
	a = ask(l, "20.1.168.192.in-addr.arpa", 12, pools);
	assert_non_null(a.pkt);
	done(&a);
	rrc_route_destroy(pools);
	rrc_local_destroy(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_record_errors),
		cmocka_unit_test(test_hosts_file),
		cmocka_unit_test(test_empty_zones),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
