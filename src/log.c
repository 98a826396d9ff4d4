/*
 * Logging to stderr, one write(2) per line so lines from several workers never interleave.
 * Rate limiting keeps a per-group window of one second; suppressed lines are counted and the
 * count is reported with the next line that gets through.
 */
#include "rrcache/log.h"
#include "rrcache/defs.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

atomic_int rrc_log_level_now = RRC_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};
static const char *const group_names[RRC_LG_COUNT] = {"main",  "listen", "upstream", "cache",
						      "redis", "acl",	 "http",     "config"};

static struct {
	atomic_long window; /* second of the current window */
	atomic_int used;
	atomic_int suppressed;
} limits[RRC_LG_COUNT];

static void vwrite_line(enum rrc_log_level lvl, enum rrc_log_group grp, int suppressed,
			const char *fmt, va_list ap)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, level_names[lvl], group_names[grp]);
	if (n < 0)
		return;
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m < 0)
		m = 0;
	size_t len = RRC_MIN((size_t)n + (size_t)m, sizeof(line) - 40);
	if (suppressed > 0)
		len += (size_t)snprintf(line + len, sizeof(line) - len, " (%d similar suppressed)",
					suppressed);
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

void rrc_log_write(enum rrc_log_level lvl, enum rrc_log_group grp, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwrite_line(lvl, grp, 0, fmt, ap);
	va_end(ap);
}

void rrc_log_write_limited(enum rrc_log_level lvl, enum rrc_log_group grp, const char *fmt, ...)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	long now = (long)ts.tv_sec;
	int suppressed = 0;
	if (atomic_exchange(&limits[grp].window, now) != now) {
		atomic_store(&limits[grp].used, 0);
		suppressed = atomic_exchange(&limits[grp].suppressed, 0);
	}
	if (atomic_fetch_add(&limits[grp].used, 1) >= RRC_LOG_BURST) {
		atomic_fetch_add(&limits[grp].suppressed, 1);
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vwrite_line(lvl, grp, suppressed, fmt, ap);
	va_end(ap);
}

int rrc_log_level_parse(const char *s, enum rrc_log_level *out)
{
	for (size_t i = 0; i < RRC_ARRAY_SIZE(level_names); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum rrc_log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warn") == 0) {
		*out = RRC_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

void rrc_log_set_level(enum rrc_log_level lvl)
{
	atomic_store(&rrc_log_level_now, (int)lvl);
}

void rrc_require_failed(const char *expr, const char *file, int line)
{
	rrc_log_write(RRC_LOG_ERR, RRC_LG_MAIN, "requirement failed: %s at %s:%d", expr, file,
		      line);
	abort();
}

bool rrc_fails_report(const char *expr, const char *file, int line)
{
	rrc_log_write(RRC_LOG_ERR, RRC_LG_MAIN, "assertion failed: %s at %s:%d", expr, file, line);
#ifdef RRC_DEBUG_ASSERT
	abort();
#endif
	return true;
}
