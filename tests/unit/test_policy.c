/*
 * policy: every list format, the precedence rules, loading with unreadable lines, and the
 * matcher's size at a million names.
 */
#include "rrcache/policy.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static const uint64_t ALL = ~(uint64_t)0;

/* "www.example.com" -> lowercased wire form. */
static size_t wire(const char *text, uint8_t *out)
{
	size_t o = 0, lab = 0;
	out[o++] = 0;
	for (const char *p = text; *p; p++) {
		if (*p == '.') {
			lab = o;
			out[o++] = 0;
		} else {
			out[lab]++;
			out[o++] = (uint8_t)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		}
	}
	out[o++] = 0;
	return o;
}

static enum rrc_policy_verdict check(const struct rrc_policy *p, const char *name, uint64_t lists,
				     unsigned *list)
{
	uint8_t w[RRC_WIRE_MAX_NAME];
	size_t n = wire(name, w);
	unsigned dummy;
	return rrc_policy_check(p, w, n, lists, list ? list : &dummy);
}

static char *write_tmp(const char *text)
{
	char *path = strdup("/tmp/rrc-test-policy-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static enum rrc_policy_line parse(const char *line, struct rrc_policy_rule *r, size_t *n)
{
	const char *why;
	return rrc_policy_parse_line(line, strlen(line), r, 4, n, &why);
}

static void test_parse_formats(void **state)
{
	struct rrc_policy_rule r[4];
	size_t n;
	const char *why;
	uint8_t w[RRC_WIRE_MAX_NAME];
	/* hosts lines: every name after the address, exactly; the machine's own names skipped */
	assert_int_equal(parse("0.0.0.0 Ads.Example.com tracker.example.net\n", r, &n),
			 RRC_PL_RULE);
	assert_int_equal(n, 2);
	assert_int_equal(r[0].kind, RRC_PK_EXACT);
	assert_memory_equal(r[0].name, w, wire("ads.example.com", w));
	assert_memory_equal(r[1].name, w, wire("tracker.example.net", w));
	assert_int_equal(parse("127.0.0.1 localhost", r, &n), RRC_PL_NONE);
	assert_int_equal(parse(":: ads6.example.com # a note", r, &n), RRC_PL_RULE);
	assert_int_equal(n, 1);
	assert_int_equal(parse("::1\tip6-localhost ip6-loopback", r, &n), RRC_PL_NONE);
	/* plain names: the name and below; a trailing dot is allowed */
	assert_int_equal(parse("  malware.example.org.  ", r, &n), RRC_PL_RULE);
	assert_int_equal(r[0].kind, RRC_PK_SUBTREE);
	assert_false(r[0].allow);
	/* adblock */
	assert_int_equal(parse("||doubleclick.net^", r, &n), RRC_PL_RULE);
	assert_int_equal(r[0].kind, RRC_PK_SUBTREE);
	assert_int_equal(parse("||doubleclick.net^$important", r, &n), RRC_PL_RULE);
	assert_int_equal(parse("@@||good.doubleclick.net^", r, &n), RRC_PL_RULE);
	assert_true(r[0].allow);
	/* wildcard */
	assert_int_equal(parse("*.example.info", r, &n), RRC_PL_RULE);
	assert_int_equal(r[0].kind, RRC_PK_BELOW);
	assert_memory_equal(r[0].name, w, wire("example.info", w));
	/* comments and blanks */
	assert_int_equal(parse("# hosts", r, &n), RRC_PL_NONE);
	assert_int_equal(parse("! adblock", r, &n), RRC_PL_NONE);
	assert_int_equal(parse("[Adblock Plus 2.0]", r, &n), RRC_PL_NONE);
	assert_int_equal(parse("   \r\n", r, &n), RRC_PL_NONE);
	/* unreadable, each with its reason */
	const char *bad[] = {
		"/ads[0-9]+\\.example\\.com/",
		"||example.com^$third-party",
		"||example.com",
		"@@example.com",
		"two words",
		"bad_name!.com",
		"a..b",
		"0.0.0.0 exa mple!",
		"x.",
		".",
		"*.",
		"toolonglabel-toolonglabel-toolonglabel-toolonglabel-toolonglabel-x.com"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum rrc_policy_line l =
			rrc_policy_parse_line(bad[i], strlen(bad[i]), r, 4, &n, &why);
		if (strcmp(bad[i], "x.") == 0) {
			assert_int_equal(l, RRC_PL_RULE); /* "x" is a name */
			continue;
		}
		if (l != RRC_PL_BAD)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(why);
	}
	/* a hosts line with more names than room: refused, not cut */
	assert_int_equal(rrc_policy_parse_line("0.0.0.0 a.b c.d e.f", 19, r, 2, &n, &why),
			 RRC_PL_BAD);
}

static void test_matching_and_precedence(void **state)
{
	char *block1 = write_tmp("# a blocklist of every kind\n"
				 "0.0.0.0 exact.example.com\n"
				 "tree.example.com\n"
				 "||adblock.example.net^\n"
				 "*.below.example.org\n"
				 "@@||ok.adblock.example.net^\n"
				 "deep.allowed.example.com\n"
				 "this line is bad\n");
	char *block2 = write_tmp("kids.example\n");
	char *allow = write_tmp("allowed.example.com\n");
	const char *blocks[] = {block1, block2}, *allows[] = {allow};
	char report[512], err[RRC_ERR_LEN];
	struct rrc_policy *p = rrc_policy_load(blocks, 2, allows, 1, report, sizeof(report), err);
	if (!p)
		fail_msg("%s", err);
	assert_non_null(strstr(report, ":8: more than one word"));
	const struct rrc_policy_list_info *li;
	assert_int_equal(rrc_policy_lists(p, &li), 3);
	assert_int_equal(li[0].rules, 6);
	assert_int_equal(li[0].bad, 1);
	assert_true(li[2].allow);
	unsigned list;
	/* exact: the name only */
	assert_int_equal(check(p, "exact.example.com", ALL, &list), RRC_PV_BLOCK);
	assert_int_equal(list, 0);
	assert_int_equal(check(p, "EXACT.Example.COM", ALL, NULL), RRC_PV_BLOCK);
	assert_int_equal(check(p, "sub.exact.example.com", ALL, NULL), RRC_PV_PASS);
	assert_int_equal(check(p, "example.com", ALL, NULL), RRC_PV_PASS);
	/* subtree: the name and below */
	assert_int_equal(check(p, "tree.example.com", ALL, NULL), RRC_PV_BLOCK);
	assert_int_equal(check(p, "a.b.tree.example.com", ALL, NULL), RRC_PV_BLOCK);
	assert_int_equal(check(p, "nottree.example.com", ALL, NULL), RRC_PV_PASS);
	assert_int_equal(check(p, "adblock.example.net", ALL, NULL), RRC_PV_BLOCK);
	/* below only */
	assert_int_equal(check(p, "below.example.org", ALL, NULL), RRC_PV_PASS);
	assert_int_equal(check(p, "x.below.example.org", ALL, NULL), RRC_PV_BLOCK);
	/* an exception in a blocklist, more specific than its block: allowed, and below it */
	assert_int_equal(check(p, "ok.adblock.example.net", ALL, &list), RRC_PV_ALLOW);
	assert_int_equal(list, 0);
	assert_int_equal(check(p, "x.ok.adblock.example.net", ALL, NULL), RRC_PV_ALLOW);
	assert_int_equal(check(p, "bad.adblock.example.net", ALL, NULL), RRC_PV_BLOCK);
	/* the allowlist allows its name and below... */
	assert_int_equal(check(p, "allowed.example.com", ALL, &list), RRC_PV_ALLOW);
	assert_int_equal(list, 2);
	assert_int_equal(check(p, "www.allowed.example.com", ALL, NULL), RRC_PV_ALLOW);
	/* ...but a more specific block below it wins */
	assert_int_equal(check(p, "deep.allowed.example.com", ALL, NULL), RRC_PV_BLOCK);
	assert_int_equal(check(p, "x.deep.allowed.example.com", ALL, NULL), RRC_PV_BLOCK);
	/* lists not selected do not count */
	assert_int_equal(check(p, "kids.example", ALL, &list), RRC_PV_BLOCK);
	assert_int_equal(list, 1);
	assert_int_equal(check(p, "kids.example", ALL & ~(uint64_t)2, NULL), RRC_PV_PASS);
	assert_int_equal(check(p, "tree.example.com", 2, NULL), RRC_PV_PASS);
	rrc_policy_put(p);

	/* Allow before deny at the same name: the allowlist has the very name blocked. */
	char *both = write_tmp("same.example\n");
	const char *b2[] = {both}, *a2[] = {both};
	p = rrc_policy_load(b2, 1, a2, 1, NULL, 0, err);
	assert_non_null(p);
	assert_int_equal(check(p, "same.example", ALL, &list), RRC_PV_ALLOW);
	assert_int_equal(list, 1);
	assert_int_equal(check(p, "same.example", 1, NULL), RRC_PV_BLOCK);
	rrc_policy_put(p);
	/* A file that cannot be read fails the load. */
	const char *missing[] = {"/nonexistent/list.txt"};
	assert_null(rrc_policy_load(missing, 1, NULL, 0, NULL, 0, err));
	assert_non_null(strstr(err, "cannot read /nonexistent/list.txt"));
	/* No matcher: everything passes. */
	assert_int_equal(check(NULL, "tree.example.com", ALL, NULL), RRC_PV_PASS);
	for (char **f = (char *[]){block1, block2, allow, both}; *f != both; f++) {
		unlink(*f);
		free(*f);
	}
	unlink(both);
	free(both);
}

/* A million names: the table takes about 10.7 bytes per rule (the bench measures the load
 * time and the process's RSS); every name is found, names not listed are not. */
static void test_a_million_names(void **state)
{
	char *path = strdup("/tmp/rrc-test-policy-big-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	for (unsigned i = 0; i < 1000000; i++)
		fprintf(f, "%s%u.tracker%u.example\n", i % 3 == 0 ? "0.0.0.0 host" : "name", i,
			i % 997);
	fclose(f);
	const char *lists[] = {path};
	char err[RRC_ERR_LEN];
	struct rrc_policy *p = rrc_policy_load(lists, 1, NULL, 0, NULL, 0, err);
	if (!p)
		fail_msg("%s", err);
	assert_int_equal(rrc_policy_rules(p), 1000000);
	size_t bytes = rrc_policy_bytes(p);
	print_message("1,000,000 names: %zu bytes, %.1f per name\n", bytes, bytes / 1e6);
	assert_true(bytes <= 40u * 1000000);
	char name[64];
	for (unsigned i = 0; i < 1000000; i += 7) {
		snprintf(name, sizeof(name), "%s%u.tracker%u.example", i % 3 == 0 ? "host" : "name",
			 i, i % 997);
		assert_int_equal(check(p, name, ALL, NULL), RRC_PV_BLOCK);
		snprintf(name, sizeof(name), "other%u.tracker%u.example", i, i % 997);
		assert_int_equal(check(p, name, ALL, NULL), RRC_PV_PASS);
	}
	rrc_policy_put(p);
	unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_formats),
		cmocka_unit_test(test_matching_and_precedence),
		cmocka_unit_test(test_a_million_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
