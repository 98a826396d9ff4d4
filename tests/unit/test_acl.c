/* Unit tests of the client ACL: parsing, longest prefix, defaults, IPv4-mapped addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "sockaddr_text.h"
#include <netinet/in.h>

#include "rrcache/acl.h"

static bool allows(const struct rrc_acl *acl, const char *ip)
{
	struct sockaddr_storage ss = sockaddr_of(ip);
	return rrc_acl_allows(acl, (struct sockaddr *)&ss);
}

/* One rule's network, whatever its action (the policy's client groups use it). */
static void test_rule_matches(void **state)
{
	struct rrc_acl_rule r;
	assert_int_equal(rrc_acl_rule_parse("192.0.2.0/25", false, &r), 0);
	const char *in[] = {"192.0.2.1", "192.0.2.127", "::ffff:192.0.2.5"};
	const char *out[] = {"192.0.2.128", "192.0.3.1", "2001:db8::1"};
	for (size_t i = 0; i < 3; i++) {
		struct sockaddr_storage a = sockaddr_of(in[i]), b = sockaddr_of(out[i]);
		assert_true(rrc_acl_rule_matches(&r, (struct sockaddr *)&a));
		assert_false(rrc_acl_rule_matches(&r, (struct sockaddr *)&b));
	}
}

static void test_parse(void **state)
{
	struct rrc_acl_rule r;
	assert_int_equal(rrc_acl_rule_parse("10.0.0.0/8", true, &r), 0);
	assert_int_equal(r.prefix, 8);
	assert_int_equal(rrc_acl_rule_parse("192.0.2.1", true, &r), 0);
	assert_int_equal(r.prefix, 32);
	assert_int_equal(rrc_acl_rule_parse("fe80::/10", true, &r), 0);
	assert_int_equal(r.family, AF_INET6);
	assert_int_not_equal(rrc_acl_rule_parse("10.0.0.1/8", true, &r), 0); /* host bits */
	assert_int_not_equal(rrc_acl_rule_parse("10.0.0.0/33", true, &r), 0);
	assert_int_not_equal(rrc_acl_rule_parse("10.0.0.0/", true, &r), 0);
	assert_int_not_equal(rrc_acl_rule_parse("example.com", true, &r), 0);
	assert_int_not_equal(rrc_acl_rule_parse("::/129", true, &r), 0);
}

static void test_defaults(void **state)
{
	struct rrc_acl_rule rules[16];
	size_t n = rrc_acl_default_rules(rules, 16);
	assert_int_equal(n, 9);
	struct rrc_acl *acl = rrc_acl_create(rules, n);
	assert_true(allows(acl, "127.0.0.1"));
	assert_true(allows(acl, "10.1.2.3"));
	assert_true(allows(acl, "172.31.255.255"));
	assert_false(allows(acl, "172.32.0.1"));
	assert_true(allows(acl, "192.168.1.1"));
	assert_true(allows(acl, "100.64.0.1"));
	assert_true(allows(acl, "169.254.1.1"));
	assert_true(allows(acl, "::1"));
	assert_true(allows(acl, "fd00::1"));
	assert_true(allows(acl, "fe80::1"));
	assert_false(allows(acl, "8.8.8.8"));
	assert_false(allows(acl, "2001:db8::1"));
	assert_true(allows(acl, "::ffff:127.0.0.1"));
	assert_false(allows(acl, "::ffff:8.8.8.8"));
	rrc_acl_destroy(acl);
}

static void test_longest_prefix(void **state)
{
	struct rrc_acl_rule rules[3];
	rrc_acl_rule_parse("10.0.0.0/8", true, &rules[0]);
	rrc_acl_rule_parse("10.1.0.0/16", false, &rules[1]);
	rrc_acl_rule_parse("10.1.2.0/24", true, &rules[2]);
	struct rrc_acl *acl = rrc_acl_create(rules, 3);
	assert_true(allows(acl, "10.2.0.1"));
	assert_false(allows(acl, "10.1.3.1"));
	assert_true(allows(acl, "10.1.2.9"));
	assert_false(allows(acl, "11.0.0.1"));
	rrc_acl_destroy(acl);
	/* No rules: everything is denied. */
	acl = rrc_acl_create(NULL, 0);
	assert_false(allows(acl, "127.0.0.1"));
	rrc_acl_destroy(acl);
}

/* Allow and deny of the same prefix: deny wins, whichever was written first. */
static void test_equal_prefix_deny_wins(void **state)
{
	struct rrc_acl_rule r[2];
	assert_int_equal(rrc_acl_rule_parse("127.0.0.5/32", true, &r[0]), 0);
	assert_int_equal(rrc_acl_rule_parse("127.0.0.5/32", false, &r[1]), 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.5", &sin.sin_addr);
	for (int order = 0; order < 2; order++) {
		struct rrc_acl_rule rules[2] = {r[order], r[1 - order]};
		struct rrc_acl *acl = rrc_acl_create(rules, 2);
		assert_non_null(acl);
		assert_false(rrc_acl_allows(acl, (struct sockaddr *)&sin));
		rrc_acl_destroy(acl);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_equal_prefix_deny_wins), cmocka_unit_test(test_parse),
		cmocka_unit_test(test_rule_matches),	       cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_longest_prefix),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
