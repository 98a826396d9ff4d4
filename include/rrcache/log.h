/*
 * Logging: levels, groups, rate limiting, targets. One line per message, to stderr (default),
 * a file (reopened on request, for rotation), syslog(3) or the systemd journal (its native
 * protocol, with the priority and the group as fields); text or JSON lines for stderr and file.
 *
 * Repeats: an error or warning whose text was logged less than RRC_LOG_REPEAT_WINDOW seconds
 * ago is not written again but counted; rrc_log_flush_repeats() (the main loop calls it every
 * second, and at exit) writes the text once more with the count when its window ends.
 *
 * rrc_log() checks the level before evaluating its arguments, so debug lines cost one load
 * when disabled. Nothing per packet is logged above debug; debug lines about network input go
 * through rrc_log_limited(), which allows RRC_LOG_BURST lines per second per group.
 * Thread-safe: the level is an atomic, each line is written with one write(2).
 */
#ifndef RRCACHE_LOG_H
#define RRCACHE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

enum rrc_log_level { RRC_LOG_ERR = 0, RRC_LOG_WARN, RRC_LOG_INFO, RRC_LOG_DEBUG };
enum rrc_log_group {
	RRC_LG_MAIN = 0,
	RRC_LG_LISTEN,
	RRC_LG_UPSTREAM,
	RRC_LG_CACHE,
	RRC_LG_REDIS,
	RRC_LG_ACL,
	RRC_LG_HTTP,
	RRC_LG_CONFIG,
	RRC_LG_COUNT
};

/* Lines per second per group that rrc_log_limited() lets through: enough to see what a flood
 * is made of, too few for it to fill a disk (864,000 lines a day per group at most). */
#define RRC_LOG_BURST 10

/* Seconds during which the same error or warning text is counted instead of written. */
#define RRC_LOG_REPEAT_WINDOW 10

enum rrc_log_target {
	RRC_LOG_TO_STDERR = 0,
	RRC_LOG_TO_FILE,
	RRC_LOG_TO_SYSLOG,
	RRC_LOG_TO_JOURNAL
};
enum rrc_log_format { RRC_LOG_TEXT = 0, RRC_LOG_JSON };

extern atomic_int rrc_log_level_now;

void rrc_log_write(enum rrc_log_level lvl, enum rrc_log_group grp, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void rrc_log_write_limited(enum rrc_log_level lvl, enum rrc_log_group grp, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Returns 0 and sets *out for "error", "warning", "info", "debug"; -EINVAL otherwise. */
int rrc_log_level_parse(const char *s, enum rrc_log_level *out);
void rrc_log_set_level(enum rrc_log_level lvl);
/* "stderr", "file", "syslog", "journal" / "text", "json". 0 or -EINVAL. */
int rrc_log_target_parse(const char *s, enum rrc_log_target *out);
int rrc_log_format_parse(const char *s, enum rrc_log_format *out);

/*
 * Sends the lines from now on to target (file: the path, opened for appending and created
 * 0640), in format. Until it is called, lines go to stderr as text. Call once, before any
 * thread logs. Returns 0, or -1 with the reason in err (the target stays stderr).
 */
int rrc_log_open(enum rrc_log_target target, enum rrc_log_format format, const char *file,
		 char *err, size_t cap);
/* The file target opened again under its name (after a rotation); other targets: nothing.
 * Lines written meanwhile by other threads go to the old file or the new one, none is lost.
 * Returns 0, or -1 with the reason in err (the old file stays in use). */
int rrc_log_reopen(char *err, size_t cap);
/* Writes the count of each repeat whose window has ended (all: every count, at exit). */
void rrc_log_flush_repeats(bool all);
/* Back to stderr, the file or sockets closed (at exit). */
void rrc_log_close(void);

#define rrc_log(lvl, grp, ...)                                                                     \
	do {                                                                                       \
		if ((int)(lvl) <= atomic_load_explicit(&rrc_log_level_now, memory_order_relaxed))  \
			rrc_log_write((lvl), (grp), __VA_ARGS__);                                  \
	} while (0)

#define rrc_log_limited(lvl, grp, ...)                                                             \
	do {                                                                                       \
		if ((int)(lvl) <= atomic_load_explicit(&rrc_log_level_now, memory_order_relaxed))  \
			rrc_log_write_limited((lvl), (grp), __VA_ARGS__);                          \
	} while (0)

#endif
