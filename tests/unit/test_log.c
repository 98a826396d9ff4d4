/*
 * log: targets, formats, reopening, and the counting of repeated errors and warnings.
 */
#include "rrcache/log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char path[64];

static char *slurp(const char *p)
{
	FILE *f = fopen(p, "r");
	if (!f)
		return strdup("");
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strdup(buf);
}

static unsigned count(const char *hay, const char *needle)
{
	unsigned n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

static int setup(void **state)
{
	snprintf(path, sizeof(path), "/tmp/rrc-test-log-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	rrc_log_close();
	unlink(path);
	char rotated[80];
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	unlink(rotated);
	return 0;
}

static void test_parse(void **state)
{
	enum rrc_log_target t;
	enum rrc_log_format f;
	assert_int_equal(rrc_log_target_parse("journal", &t), 0);
	assert_int_equal(t, RRC_LOG_TO_JOURNAL);
	assert_int_equal(rrc_log_target_parse("syslog", &t), 0);
	assert_int_equal(t, RRC_LOG_TO_SYSLOG);
	assert_int_not_equal(rrc_log_target_parse("printer", &t), 0);
	assert_int_equal(rrc_log_format_parse("json", &f), 0);
	assert_int_equal(f, RRC_LOG_JSON);
	assert_int_not_equal(rrc_log_format_parse("xml", &f), 0);
}

/* The same warning many times: written once, then once more with the count when the window
 * ends; other texts and info lines are not held back. */
static void test_repeats_counted(void **state)
{
	char err[256];
	assert_int_equal(rrc_log_open(RRC_LOG_TO_FILE, RRC_LOG_TEXT, path, err, sizeof(err)), 0);
	for (int i = 0; i < 50; i++)
		rrc_log_write(RRC_LOG_WARN, RRC_LG_UPSTREAM,
			      "cannot query 192.0.2.1:53: network is unreachable");
	rrc_log_write(RRC_LOG_WARN, RRC_LG_UPSTREAM, "cannot query 192.0.2.2:53: refused");
	rrc_log_write(RRC_LOG_INFO, RRC_LG_MAIN, "configuration reloaded");
	rrc_log_write(RRC_LOG_INFO, RRC_LG_MAIN, "configuration reloaded");
	/* The same text in another group is another message. */
	rrc_log_write(RRC_LOG_WARN, RRC_LG_REDIS,
		      "cannot query 192.0.2.1:53: network is unreachable");
	char *text = slurp(path);
	assert_int_equal(
		count(text, "[upstream] cannot query 192.0.2.1:53: network is unreachable"), 1);
	assert_int_equal(count(text, "[redis] cannot query 192.0.2.1:53"), 1);
	assert_int_equal(count(text, "192.0.2.2:53: refused"), 1);
	assert_int_equal(count(text, "configuration reloaded"), 2);
	assert_int_equal(count(text, "more times"), 0);
	free(text);
	/* Windows not over yet: nothing. At exit (all): the count, with the text. */
	rrc_log_flush_repeats(false);
	text = slurp(path);
	assert_int_equal(count(text, "more times"), 0);
	free(text);
	rrc_log_flush_repeats(true);
	text = slurp(path);
	/* The span is counted in whole seconds of the clock: 0, or 1 when the writes and
	 * the flush straddle a second's boundary (seen under the sanitizer build). */
	const char *note =
		strstr(text, "warning [upstream] cannot query 192.0.2.1:53: network is unreachable "
			     "(49 more times in ");
	assert_non_null(note);
	note = strstr(note, " in ") + 4;
	assert_true(strncmp(note, "0 s)", 4) == 0 || strncmp(note, "1 s)", 4) == 0);
	assert_int_equal(count(text, "more times"), 1);
	free(text);
	/* A repeat after the count was written starts a new window: counted, not written. */
	rrc_log_write(RRC_LOG_WARN, RRC_LG_UPSTREAM,
		      "cannot query 192.0.2.1:53: network is unreachable");
	text = slurp(path);
	assert_int_equal(count(text, "[upstream] cannot query 192.0.2.1:53"), 2);
	free(text);
}

/* More distinct repeating texts than the table holds: an evicted text's count is written
 * when it leaves, none is lost. */
static void test_repeats_evicted(void **state)
{
	char err[256];
	assert_int_equal(rrc_log_open(RRC_LOG_TO_FILE, RRC_LOG_TEXT, path, err, sizeof(err)), 0);
	unsigned total_written = 0;
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 40; i++)
			rrc_log_write(RRC_LOG_ERR, RRC_LG_CACHE, "problem %d", i);
	rrc_log_flush_repeats(true);
	char *text = slurp(path);
	/* Each of the 40 texts: written, and its second time either counted (and the count
	 * written) or written again after its slot was taken. */
	for (int i = 0; i < 40; i++) {
		char line[64];
		snprintf(line, sizeof(line), "[cache] problem %d", i);
		char with_end[70];
		snprintf(with_end, sizeof(with_end), "%s\n", line);
		char counted[80];
		snprintf(counted, sizeof(counted), "%s (1 more times", line);
		unsigned shown = count(text, with_end), summed = count(text, counted);
		assert_true(shown + summed == 2);
		total_written += shown;
	}
	assert_true(total_written >= 40);
	free(text);
}

/* JSON lines: one object per line, the message escaped. */
static void test_json_lines(void **state)
{
	char err[256];
	assert_int_equal(rrc_log_open(RRC_LOG_TO_FILE, RRC_LOG_JSON, path, err, sizeof(err)), 0);
	rrc_log_write(RRC_LOG_INFO, RRC_LG_HTTP, "a \"quoted\" name\\with\ttab\nand newline \x01");
	char *text = slurp(path);
	assert_non_null(strstr(text, "\"level\":\"info\",\"group\":\"http\",\"message\":\"a "
				     "\\\"quoted\\\" name\\\\with\\u0009tab and newline "
				     "\\u0001\"}\n"));
	assert_true(strncmp(text, "{\"time\":\"", 9) == 0);
	assert_int_equal(count(text, "\n"), 1);
	free(text);
}

/* Rotation: after the file is moved away, a reopen makes a new file under the name. */
static void test_reopen(void **state)
{
	char err[256], rotated[80];
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	assert_int_equal(rrc_log_open(RRC_LOG_TO_FILE, RRC_LOG_TEXT, path, err, sizeof(err)), 0);
	rrc_log_write(RRC_LOG_INFO, RRC_LG_MAIN, "before rotation");
	assert_int_equal(rename(path, rotated), 0);
	rrc_log_write(RRC_LOG_INFO, RRC_LG_MAIN, "still to the old file");
	assert_int_equal(rrc_log_reopen(err, sizeof(err)), 0);
	rrc_log_write(RRC_LOG_INFO, RRC_LG_MAIN, "after rotation");
	char *old = slurp(rotated), *now = slurp(path);
	assert_non_null(strstr(old, "before rotation"));
	assert_non_null(strstr(old, "still to the old file"));
	assert_null(strstr(old, "after rotation"));
	assert_non_null(strstr(now, "after rotation"));
	assert_null(strstr(now, "before rotation"));
	free(old);
	free(now);
	/* A file that cannot be opened: refused with the reason, the target stays stderr. */
	rrc_log_close();
	assert_int_not_equal(rrc_log_open(RRC_LOG_TO_FILE, RRC_LOG_TEXT, "/nonexistent/dir/x.log",
					  err, sizeof(err)),
			     0);
	assert_non_null(strstr(err, "cannot open /nonexistent/dir/x.log"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test_setup_teardown(test_repeats_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_repeats_evicted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
