/*
 * Logging: one write(2) (or datagram) per line so lines from several workers never
 * interleave. Rate limiting keeps a per-group window of one second; suppressed lines are
 * counted and the count is reported with the next line that gets through. Repeated errors and
 * warnings are counted per text (see log.h).
 */
#include "rrcache/log.h"
#include "rrcache/defs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

atomic_int rrc_log_level_now = RRC_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};
static const char *const group_names[RRC_LG_COUNT] = {"main",  "listen", "upstream", "cache",
						      "redis", "acl",	 "http",     "config"};
static const char *const target_names[] = {"stderr", "file", "syslog", "journal"};
static const char *const format_names[] = {"text", "json"};
static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

static const char journal_path[] = "/run/systemd/journal/socket";

/* Where lines go. Set by rrc_log_open before any other thread runs; a reopen only replaces
 * what fd refers to (dup2), so writers never see a half-changed state. */
static struct {
	enum rrc_log_target target;
	enum rrc_log_format format;
	int fd; /* stderr or the file */
	char path[256];
	int journal; /* a datagram socket to journal_path */
} sink = {.fd = STDERR_FILENO, .journal = -1};

static struct {
	atomic_long window; /* second of the current window */
	atomic_int used;
	atomic_int suppressed;
} limits[RRC_LG_COUNT];

/* Repeated errors and warnings (see log.h): the texts seen in the last window. */
#define REPEAT_SLOTS 32
#define REPEAT_TEXT 256
static struct repeat {
	bool used;
	uint8_t lvl, grp;
	uint32_t count; /* suppressed since shown */
	long shown;	/* monotonic second it was last written */
	uint64_t hash;
	char text[REPEAT_TEXT];
} repeats[REPEAT_SLOTS];
static pthread_mutex_t repeats_lock = PTHREAD_MUTEX_INITIALIZER;

static long now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (long)ts.tv_sec;
}

static size_t json_escape(char *dst, size_t cap, const char *s)
{
	size_t n = 0;
	for (; *s && n + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			dst[n++] = '\\';
			dst[n++] = (char)ch;
		} else if (ch < 0x20 || ch >= 0x7f) {
			n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", ch);
		} else {
			dst[n++] = (char)ch;
		}
	}
	dst[n] = '\0';
	return n;
}

static void send_journal(enum rrc_log_level lvl, enum rrc_log_group grp, const char *msg,
			 const char *suffix)
{
	char head[96];
	int hn = snprintf(
		head, sizeof(head),
		"PRIORITY=%d\nSYSLOG_IDENTIFIER=rrcache\nSYSLOG_PID=%ld\nRRCACHE_GROUP=%s\n",
		syslog_prio[lvl], (long)getpid(), group_names[grp]);
	struct iovec iov[5] = {
		{head, (size_t)hn},	    {(void *)"MESSAGE=", 8},
		{(void *)msg, strlen(msg)}, {(void *)suffix, strlen(suffix)},
		{(void *)"\n", 1},
	};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, journal_path, sizeof(journal_path));
	struct msghdr mh = {
		.msg_name = &sa, .msg_namelen = sizeof(sa), .msg_iov = iov, .msg_iovlen = 5};
	if (sendmsg(sink.journal, &mh, MSG_NOSIGNAL) < 0) {
		/* journald away or its queue full: the line goes to stderr rather than nowhere. */
		char line[1200];
		int n = snprintf(line, sizeof(line), "%s [%s] %s%s\n", level_names[lvl],
				 group_names[grp], msg, suffix);
		ssize_t w = write(STDERR_FILENO, line, RRC_MIN((size_t)n, sizeof(line) - 1));
		(void)w;
	}
}

/* One line, whatever the target. suffix: "" or a note on what was not written. */
static void emit(enum rrc_log_level lvl, enum rrc_log_group grp, const char *msg,
		 const char *suffix)
{
	if (sink.target == RRC_LOG_TO_SYSLOG) {
		syslog(syslog_prio[lvl], "%s [%s] %s%s", level_names[lvl], group_names[grp], msg,
		       suffix);
		return;
	}
	if (sink.target == RRC_LOG_TO_JOURNAL) {
		send_journal(lvl, grp, msg, suffix);
		return;
	}
	char line[2048], ts_text[64];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(ts_text, sizeof(ts_text), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 ts.tv_nsec / 1000000);
	size_t len;
	if (sink.format == RRC_LOG_JSON) {
		len = (size_t)snprintf(
			line, sizeof(line),
			"{\"time\":\"%s\",\"level\":\"%s\",\"group\":\"%s\",\"message\":\"",
			ts_text, level_names[lvl], group_names[grp]);
		len += json_escape(line + len, sizeof(line) - len - 64, msg);
		len += json_escape(line + len, sizeof(line) - len - 8, suffix);
		len += (size_t)snprintf(line + len, sizeof(line) - len, "\"}");
	} else {
		int n = snprintf(line, sizeof(line) - 1, "%s %s [%s] %s%s", ts_text,
				 level_names[lvl], group_names[grp], msg, suffix);
		len = RRC_MIN((size_t)(n < 0 ? 0 : n), sizeof(line) - 2);
	}
	line[len++] = '\n';
	ssize_t w = write(sink.fd, line, len);
	(void)w;
}

static uint64_t text_hash(enum rrc_log_group grp, const char *s)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)grp;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* The text of r once more, with how often it repeated since it was shown. */
static void emit_repeats(const struct repeat *r, long now)
{
	char note[64];
	snprintf(note, sizeof(note), " (%u more times in %ld s)", r->count, now - r->shown);
	emit((enum rrc_log_level)r->lvl, (enum rrc_log_group)r->grp, r->text, note);
}

/* For an error or warning: -1 when it repeats a text shown in its window (counted), else
 * the count suppressed before it (to be written with it). */
static int repeat_check(enum rrc_log_level lvl, enum rrc_log_group grp, const char *msg)
{
	long now = now_sec();
	uint64_t h = text_hash(grp, msg);
	struct repeat evicted = {.used = false};
	int pending = 0;
	pthread_mutex_lock(&repeats_lock);
	struct repeat *r = NULL, *victim = NULL;
	for (unsigned i = 0; i < REPEAT_SLOTS; i++) {
		struct repeat *e = &repeats[i];
		if (e->used && e->hash == h && e->grp == grp &&
		    strncmp(e->text, msg, REPEAT_TEXT - 1) == 0) {
			r = e;
			break;
		}
		if (!victim || !e->used || (victim->used && e->shown < victim->shown))
			victim = e;
	}
	if (r && now - r->shown < RRC_LOG_REPEAT_WINDOW) {
		r->count++;
		pthread_mutex_unlock(&repeats_lock);
		return -1;
	}
	if (r) {
		pending = (int)r->count;
	} else {
		r = victim;
		if (r->used && r->count > 0)
			evicted = *r;
		r->used = true;
		r->hash = h;
		r->lvl = (uint8_t)lvl;
		r->grp = (uint8_t)grp;
		snprintf(r->text, REPEAT_TEXT, "%s", msg);
	}
	r->count = 0;
	r->shown = now;
	pthread_mutex_unlock(&repeats_lock);
	if (evicted.used)
		emit_repeats(&evicted, now);
	return pending;
}

void rrc_log_flush_repeats(bool all)
{
	long now = now_sec();
	struct repeat due[REPEAT_SLOTS];
	unsigned n = 0;
	pthread_mutex_lock(&repeats_lock);
	for (unsigned i = 0; i < REPEAT_SLOTS; i++) {
		struct repeat *e = &repeats[i];
		if (!e->used || (!all && now - e->shown < RRC_LOG_REPEAT_WINDOW))
			continue;
		if (e->count > 0) {
			due[n++] = *e;
			e->count = 0;
			e->shown = now; /* a new window: what still repeats is counted again */
		} else {
			e->used = false;
		}
	}
	pthread_mutex_unlock(&repeats_lock);
	for (unsigned i = 0; i < n; i++)
		emit_repeats(&due[i], now);
}

static void vwrite_line(enum rrc_log_level lvl, enum rrc_log_group grp, int suppressed,
			const char *fmt, va_list ap)
{
	char msg[1024];
	int m = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (m < 0)
		msg[0] = '\0';
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	if (lvl <= RRC_LOG_WARN) {
		int pending = repeat_check(lvl, grp, msg);
		if (pending < 0)
			return;
		suppressed += pending;
	}
	char suffix[48] = "";
	if (suppressed > 0)
		snprintf(suffix, sizeof(suffix), " (%d similar suppressed)", suppressed);
	emit(lvl, grp, msg, suffix);
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
	long now = now_sec();
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

static int parse_name(const char *s, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

int rrc_log_target_parse(const char *s, enum rrc_log_target *o)
{
	int i = parse_name(s, target_names, RRC_ARRAY_SIZE(target_names));
	if (i < 0)
		return -EINVAL;
	*o = (enum rrc_log_target)i;
	return 0;
}

int rrc_log_format_parse(const char *s, enum rrc_log_format *o)
{
	int i = parse_name(s, format_names, RRC_ARRAY_SIZE(format_names));
	if (i < 0)
		return -EINVAL;
	*o = (enum rrc_log_format)i;
	return 0;
}

static int open_file(const char *path, char *err, size_t cap)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		snprintf(err, cap, "log.file: cannot open %.200s: %s", path, strerror(errno));
	return fd;
}

int rrc_log_open(enum rrc_log_target target, enum rrc_log_format format, const char *file,
		 char *err, size_t cap)
{
	sink.format = format;
	if (target == RRC_LOG_TO_FILE) {
		int fd = open_file(file, err, cap);
		if (fd < 0)
			return -1;
		snprintf(sink.path, sizeof(sink.path), "%s", file);
		sink.fd = fd;
	} else if (target == RRC_LOG_TO_SYSLOG) {
		openlog("rrcache", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	} else if (target == RRC_LOG_TO_JOURNAL) {
		int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || access(journal_path, W_OK) != 0) {
			snprintf(err, cap, "log.target: journal: cannot reach %s: %s", journal_path,
				 strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		sink.journal = fd;
	}
	sink.target = target;
	return 0;
}

int rrc_log_reopen(char *err, size_t cap)
{
	if (sink.target != RRC_LOG_TO_FILE)
		return 0;
	int fd = open_file(sink.path, err, cap);
	if (fd < 0)
		return -1;
	/* dup2 replaces what sink.fd refers to in one step: a concurrent write goes whole to the
	 * old file or the new one. */
	int rc = dup2(fd, sink.fd) < 0 ? -1 : 0;
	if (rc)
		snprintf(err, cap, "log.file: cannot reopen %.200s: %s", sink.path,
			 strerror(errno));
	close(fd);
	return rc;
}

void rrc_log_close(void)
{
	rrc_log_flush_repeats(true);
	if (sink.target == RRC_LOG_TO_SYSLOG)
		closelog();
	if (sink.journal >= 0)
		close(sink.journal);
	if (sink.fd != STDERR_FILENO)
		close(sink.fd);
	sink.target = RRC_LOG_TO_STDERR;
	sink.fd = STDERR_FILENO;
	sink.journal = -1;
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
