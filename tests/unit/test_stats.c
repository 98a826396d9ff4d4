/* Unit tests of stats: histograms, label sets, space-saving top-K and its windows, escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rrcache/stats.h"

static void test_hist(void **state)
{
	struct rrc_hist h = {0}, g = {0};
	assert_true(rrc_hist_quantile(&h, 0.5) == 0);
	for (int i = 0; i < 90; i++)
		rrc_hist_add(&h, 50); /* first bucket (<= 100 us) */
	for (int i = 0; i < 10; i++)
		rrc_hist_add(&h, 20000); /* (10 ms, 25 ms] */
	rrc_hist_add(&h, 10000000);	 /* +Inf */
	assert_int_equal(h.count, 101);
	assert_int_equal(h.bucket[0], 90);
	assert_int_equal(h.bucket[7], 10);
	assert_int_equal(h.bucket[RRC_HIST_BOUNDS], 1);
	assert_int_equal(h.sum_us, 90 * 50 + 10 * 20000 + 10000000);
	assert_true(rrc_hist_quantile(&h, 0.5) <= 100);
	double p95 = rrc_hist_quantile(&h, 0.95);
	assert_true(p95 > 10000 && p95 <= 25000);
	assert_true(rrc_hist_quantile(&h, 1.0) == rrc_hist_bounds_us[RRC_HIST_BOUNDS - 1]);
	rrc_hist_merge(&g, &h);
	rrc_hist_merge(&g, &h);
	assert_int_equal(g.count, 202);
	assert_int_equal(g.bucket[7], 20);
	/* Bounds strictly increase. */
	for (int i = 1; i < RRC_HIST_BOUNDS; i++)
		assert_true(rrc_hist_bounds_us[i] > rrc_hist_bounds_us[i - 1]);
}

static void test_label_sets(void **state)
{
	assert_int_equal(rrc_stats_qtype_slot(1), RRC_QT_A);
	assert_string_equal(rrc_stats_qtype_name(rrc_stats_qtype_slot(28)), "AAAA");
	assert_string_equal(rrc_stats_qtype_name(rrc_stats_qtype_slot(65)), "HTTPS");
	assert_int_equal(rrc_stats_qtype_slot(99), RRC_QT_OTHER);
	assert_int_equal(rrc_stats_qtype_slot(65535), RRC_QT_OTHER);
	assert_string_equal(rrc_stats_qtype_name(RRC_QT_OTHER), "other");
	assert_string_equal(rrc_stats_rcode_name(rrc_stats_rcode_slot(3)), "NXDOMAIN");
	assert_string_equal(rrc_stats_rcode_name(rrc_stats_rcode_slot(16)), "BADVERS");
	assert_int_equal(rrc_stats_rcode_slot(17), RRC_RC_OTHER);
	/* Every name is distinct: labels never collide. */
	for (unsigned i = 0; i < RRC_QT_COUNT; i++)
		for (unsigned j = i + 1; j < RRC_QT_COUNT; j++)
			assert_string_not_equal(rrc_stats_qtype_name(i), rrc_stats_qtype_name(j));
}

static void test_topk(void **state)
{
	static struct rrc_topk t;
	rrc_topk_init(&t);
	/* Three heavy keys among 5,000 distinct light ones: the heavy ones come out on top, their
	 * counts never below the truth and count - error never above it. */
	uint64_t truth[3] = {0};
	srand(1);
	for (int i = 0; i < 20000; i++) {
		char k[16];
		int r = rand() % 100;
		if (r < 30) {
			rrc_topk_add(&t, (const uint8_t *)"heavy-a", 7, 1);
			truth[0]++;
		} else if (r < 45) {
			rrc_topk_add(&t, (const uint8_t *)"heavy-b", 7, 1);
			truth[1]++;
		} else if (r < 52) {
			rrc_topk_add(&t, (const uint8_t *)"heavy-c", 7, 1);
			truth[2]++;
		} else {
			int n = snprintf(k, sizeof(k), "light%d", rand() % 5000);
			rrc_topk_add(&t, (const uint8_t *)k, (size_t)n, 1);
		}
	}
	assert_true(t.n <= RRC_TOPK_CAP);
	const struct rrc_topk_entry *top[3];
	assert_int_equal(rrc_topk_top(&t, top, 3), 3);
	const char *want[3] = {"heavy-a", "heavy-b", "heavy-c"};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(top[i]->len, 7);
		assert_memory_equal(top[i]->key, want[i], 7);
		assert_true(top[i]->count >= truth[i]);
		assert_true(top[i]->count - top[i]->error <= truth[i]);
	}
	/* The sum of counts is the number of additions (space-saving keeps it). */
	uint64_t sum = 0;
	for (unsigned i = 0; i < t.n; i++)
		sum += t.e[i].count;
	assert_int_equal(sum, 20000);
	/* Keys longer than RRC_TOPK_KEY are cut, not overflowed. */
	uint8_t big[400];
	memset(big, 'x', sizeof(big));
	rrc_topk_add(&t, big, sizeof(big), 1);
	/* Merge: counts add. */
	static struct rrc_topk m;
	rrc_topk_init(&m);
	rrc_topk_merge(&m, &t);
	rrc_topk_merge(&m, &t);
	assert_int_equal(rrc_topk_top(&m, top, 1), 1);
	assert_memory_equal(top[0]->key, "heavy-a", 7);
	assert_true(top[0]->count >= 2 * truth[0]);
}

static void test_windows(void **state)
{
	static struct rrc_top t;
	static struct rrc_topk w;
	rrc_top_init(&t, 1, 0);
	assert_true(rrc_top_sampled(&t));
	rrc_top_add(&t, RRC_TOP_NAMES, (const uint8_t *)"old", 3);
	for (int i = 0; i < RRC_TOP_SUBS; i++)
		rrc_top_tick(&t); /* a minute later: "old" has left the minute window */
	rrc_top_add(&t, RRC_TOP_NAMES, (const uint8_t *)"new", 3);
	rrc_top_window(&t, RRC_TOP_NAMES, false, &w);
	assert_int_equal(w.n, 1);
	assert_memory_equal(w.e[0].key, "new", 3);
	rrc_top_window(&t, RRC_TOP_NAMES, true, &w);
	assert_int_equal(w.n, 2); /* the hour still has both */
	rrc_top_window(&t, RRC_TOP_CLIENTS, true, &w);
	assert_int_equal(w.n, 0);
	for (int i = 0; i < 6 * 6 * 10 + 1; i++)
		rrc_top_tick(&t); /* an hour and more */
	rrc_top_window(&t, RRC_TOP_NAMES, true, &w);
	assert_int_equal(w.n, 0);

	/* Sampled 1 in 8: about an eighth of the queries counted, each weighing 8. */
	rrc_top_init(&t, 8, 12345);
	unsigned taken = 0;
	for (int i = 0; i < 80000; i++) {
		if (rrc_top_sampled(&t)) {
			rrc_top_add(&t, RRC_TOP_NAMES, (const uint8_t *)"x", 1);
			taken++;
		}
	}
	assert_true(taken > 9000 && taken < 11000);
	rrc_top_window(&t, RRC_TOP_NAMES, false, &w);
	assert_int_equal(w.e[0].count, 8 * taken);
}

static void test_escaping(void **state)
{
	char out[512];
	struct rrc_buf b = {.p = out, .cap = sizeof(out)};
	const uint8_t nasty[] = "a\"b\\c\nd\x01</script>\xff\xc3\xa9";
	rrc_buf_prom_label(&b, nasty, sizeof(nasty) - 1);
	rrc_buf_put(&b, "", 0);
	out[b.len] = '\0';
	assert_string_equal(out, "a\\\"b\\\\c\\nd\x01</script>\xEF\xBF\xBD\xc3\xa9");

	b.len = 0;
	rrc_buf_json_string(&b, nasty, sizeof(nasty) - 1);
	out[b.len] = '\0';
	assert_string_equal(out, "\"a\\\"b\\\\c\\u000ad\\u0001<\\/script>\xEF\xBF\xBD\xc3\xa9\"");

	/* Overflow is remembered, never written past cap. */
	char small[8];
	struct rrc_buf s = {.p = small, .cap = sizeof(small)};
	rrc_buf_json_string(&s, (const uint8_t *)"0123456789", 10);
	assert_true(s.overflow);
	assert_true(s.len <= sizeof(small));

	/* Names: special characters and bytes outside printable ASCII as RFC 4343 escapes. */
	const uint8_t name[] = "\x05"
			       "a.b c"
			       "\x03"
			       "\x00\"\xff"
			       "\x00";
	rrc_buf_name_text(name, sizeof(name) - 1, out, sizeof(out));
	assert_string_equal(out, "a\\.b\\032c.\\000\\\"\\255.");
	const uint8_t root[] = {0};
	rrc_buf_name_text(root, 1, out, sizeof(out));
	assert_string_equal(out, ".");
	/* 255 octets of \DDD escapes need 4 x 250 bytes: cut at cap, always terminated. */
	uint8_t longname[255];
	for (int i = 0; i < 4; i++) {
		longname[i * 63] = 62;
		memset(longname + i * 63 + 1, 0x01, 62);
	}
	longname[252] = 1;
	longname[253] = 0x01;
	longname[254] = 0;
	char shortout[64];
	size_t n = rrc_buf_name_text(longname, sizeof(longname), shortout, sizeof(shortout));
	assert_true(n < sizeof(shortout));
	assert_int_equal(strlen(shortout), n);
	char big[1100];
	n = rrc_buf_name_text(longname, sizeof(longname), big, sizeof(big));
	assert_int_equal(n, 4 * 62 * 4 + 4 + 4 + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist),	 cmocka_unit_test(test_label_sets),
		cmocka_unit_test(test_topk),	 cmocka_unit_test(test_windows),
		cmocka_unit_test(test_escaping),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
